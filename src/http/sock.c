/*
 * sock.c - socket and wire plumbing shared by server.c and client.c.  See sock.h.
 */
#include "http/sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int sock_flush(int fd, struct buf *out)
{
	while (buf_used(out) > 0) {
		ssize_t w = send(fd, buf_head(out), buf_used(out), MSG_NOSIGNAL);

		if (w == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -EPIPE;
		}
		buf_consume(out, (size_t)w);
	}
	return 0;
}

int sock_sendv(int fd, struct buf *out, struct iovec *iov, int n)
{
	int i = 0;

	if (fd >= 0 && buf_used(out) == 0) {
		struct msghdr mh;
		ssize_t w;

		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = iov;
		mh.msg_iovlen = (size_t)n;
		do {
			w = sendmsg(fd, &mh, MSG_NOSIGNAL);
		} while (w == -1 && errno == EINTR);
		if (w == -1) {
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -EPIPE;
			w = 0;
		}
		while (i < n && (size_t)w >= iov[i].iov_len) {
			w -= (ssize_t)iov[i].iov_len;
			i++;
		}
		if (i < n) {
			iov[i].iov_base = (char *)iov[i].iov_base + w;
			iov[i].iov_len -= (size_t)w;
		}
	}
	for (; i < n; i++)
		if (buf_append(out, iov[i].iov_base, iov[i].iov_len) != 0)
			return -ENOBUFS;
	return 0;
}

ssize_t sock_read(int fd, struct buf *in, size_t chunk)
{
	size_t space = in->cap - buf_used(in);
	char *dst;
	ssize_t n;

	if (space == 0)
		return -ENOBUFS;
	if (space > chunk)
		space = chunk;
	dst = buf_reserve(in, space);
	if (!dst)
		return -ENOMEM;
	do {
		n = read(fd, dst, space);
	} while (n == -1 && errno == EINTR);
	if (n > 0)
		buf_commit(in, (size_t)n);
	if (n >= 0)
		return n;
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return -EAGAIN;
	return -errno;
}

void sock_nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int sock_split_hostport(const char *addr, char *host, size_t hcap, struct str *port)
{
	const char *colon, *h = addr, *hend;
	size_t hl;

	if (addr[0] == '[') {
		hend = strchr(addr, ']');
		if (!hend || hend[1] != ':')
			return -EINVAL;
		h = addr + 1;
		colon = hend + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon)
			return -EINVAL;
		hend = colon;
	}
	hl = (size_t)(hend - h);
	if (hl >= hcap)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = 0;
	*port = str_c(colon + 1);
	return 0;
}

int sock_addr_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return -EAFNOSUPPORT;
}

void sock_addr_ip(const struct sockaddr *sa, char *ip, size_t cap)
{
	ip[0] = 0;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip, (socklen_t)cap);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, ip,
		          (socklen_t)cap);
}

struct buf *http_scratch(void)
{
	static __thread struct buf b;
	static __thread int init;

	if (!init) {
		buf_init(&b, 64u << 20);
		init = 1;
	}
	buf_reset(&b);
	return &b;
}

int http_head_add(struct buf *b, struct str name, struct str value)
{
	int rc = 0;

	rc |= buf_append(b, name.p, name.len);
	rc |= buf_append_lit(b, ": ");
	rc |= buf_append(b, value.p, value.len);
	rc |= buf_append_lit(b, "\r\n");
	return rc ? -ENOBUFS : 0;
}

int http_head_framing(struct buf *b, int64_t clen)
{
	int rc = 0;

	if (clen >= 0) {
		rc |= buf_append_lit(b, "Content-Length: ");
		rc |= buf_append_u64(b, (unsigned long long)clen);
		rc |= buf_append_lit(b, "\r\n");
	} else if (clen == HTTP_FRAMING_CHUNKED) {
		rc |= buf_append_lit(b, "Transfer-Encoding: chunked\r\n");
	}
	return rc ? -ENOBUFS : 0;
}

int http_chunk_iov(struct iovec iov[3], char hex[20], const void *p, size_t len)
{
	int n = snprintf(hex, 20, "%zx\r\n", len);

	iov[0] = (struct iovec){hex, (size_t)n};
	iov[1] = (struct iovec){(void *)p, len};
	iov[2] = (struct iovec){"\r\n", 2};
	return 3;
}
