/*
 * client.c - one upstream HTTP/1.1 connection.  See client.h.
 */
#include "http/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "http/sock.h"

#define CL_IN_CAP     (64 * 1024)
#define CL_READ_CHUNK (16 * 1024 - 1) /* + buf's hidden NUL = one 16 KiB block */

enum { ST_CONNECTING = 0, ST_IDLE, ST_BUSY };

struct http_client {
	struct loop *loop;
	struct http_client_config cfg;
	const struct http_client_ops *ops;
	void *data;
	struct loop_io io;
	struct loop_timer timer;
	struct loop_defer defer;
	int fd;
	int state;
	struct http_parser parser;
	struct buf in, out;
	char host[64]; /* "ip:port" for the Host header */

	int req_started, req_ended, req_chunked, req_close;
	int64_t req_left;
	int resp_headers_seen;
	int read_paused;
	int can_read;
	int closed, close_err;
	int running, rerun;
};

static void cl_drive(struct http_client *c);

static void cl_kick(struct http_client *c)
{
	if (c->running) {
		c->rerun = 1;
		return;
	}
	c->running = 1;
	do {
		c->rerun = 0;
		cl_drive(c);
	} while (c->rerun && !c->closed);
	c->running = 0;
}

static void cl_free_cb(struct loop *loop, struct loop_defer *d)
{
	struct http_client *c = d->data;

	if (c->ops->on_close)
		c->ops->on_close(c, c->close_err, c->data);
	http_parser_release(&c->parser);
	buf_release(&c->in);
	buf_release(&c->out);
	free(c);
}

static void cl_close(struct http_client *c, int err)
{
	if (c->closed)
		return;
	c->closed = 1;
	c->close_err = err;
	if (c->fd >= 0) {
		loop_io_del(c->loop, &c->io);
		close(c->fd);
		c->fd = -1;
	}
	loop_timer_stop(c->loop, &c->timer);
	loop_defer(c->loop, &c->defer, cl_free_cb, c);
}

void http_client_close(struct http_client *c)
{
	cl_close(c, HTTP_CLIENT_OK);
}

static void cl_timer_cb(struct loop *loop, struct loop_timer *t)
{
	cl_close(t->data, -ETIMEDOUT);
}

/* --- output ---------------------------------------------------------- */

/* Sends or queues iov (queued only while connecting).  Closes on failure. */
static int cl_sendv(struct http_client *c, struct iovec *iov, int n)
{
	int rc;

	if (c->closed)
		return -EPIPE;
	rc = sock_sendv(c->state != ST_CONNECTING ? c->fd : -1, &c->out, iov, n);
	if (rc != 0)
		cl_close(c, rc == -ENOBUFS ? -ENOBUFS : -ECONNRESET);
	return rc;
}

static int cl_send(struct http_client *c, const void *p, size_t len)
{
	struct iovec iov = {(void *)p, len};

	return cl_sendv(c, &iov, 1);
}

/* --- parser callbacks -------------------------------------------------- */

static int interim(const struct http_msg *m)
{
	return m->status >= 100 && m->status < 200;
}

static int cp_on_headers(struct http_parser *p, struct http_msg *msg, void *data)
{
	struct http_client *c = data;

	if (interim(msg))
		return 0;
	c->resp_headers_seen = 1;
	loop_timer_start(c->loop, &c->timer, c->cfg.response_timeout_ms);
	if (c->ops->on_response)
		c->ops->on_response(c, msg, c->data);
	return c->closed ? 400 : 0;
}

static int cp_on_body(struct http_parser *p, const char *at, size_t len, void *data)
{
	struct http_client *c = data;
	int rc = 0;

	if (c->ops->on_body)
		rc = c->ops->on_body(c, at, len, c->data);
	if (c->closed)
		return 400;
	if (rc == 1) {
		c->read_paused = 1;
		return HTTP_PARSER_PAUSE;
	}
	return 0;
}

static const struct http_parser_cbs cl_parser_cbs = {
    .on_headers = cp_on_headers,
    .on_body = cp_on_body,
};

/* A response is complete: report it, then idle or close. */
static void cl_response_done(struct http_client *c)
{
	struct http_msg *m = http_parser_msg(&c->parser);
	int keep = m->keep_alive && !c->req_close && c->req_ended;

	if (interim(m)) {
		http_parser_next(&c->parser);
		return;
	}
	loop_timer_stop(c->loop, &c->timer);
	if (keep) {
		c->state = ST_IDLE;
		c->req_started = c->req_ended = 0;
	}
	if (c->ops->on_complete)
		c->ops->on_complete(c, m, c->data);
	if (c->closed)
		return;
	if (!keep) {
		cl_close(c, HTTP_CLIENT_OK);
		return;
	}
	/* unless on_complete already sent the next request (which reset it) */
	if (http_parser_is_done(&c->parser))
		http_parser_next(&c->parser);
}

/* --- reading --------------------------------------------------------- */

static void cl_read_eof(struct http_client *c)
{
	int rc;

	if (c->state != ST_BUSY) {
		cl_close(c, HTTP_CLIENT_OK);
		return;
	}
	rc = http_parser_finish(&c->parser);
	if (rc == HTTP_PARSE_DONE) {
		c->req_close = 1;
		cl_response_done(c);
		cl_close(c, HTTP_CLIENT_OK);
		return;
	}
	cl_close(c, -ECONNRESET);
}

static int cl_parse(struct http_client *c)
{
	size_t used = 0;
	int rc;

	if (buf_used(&c->in) == 0 && c->state != ST_BUSY)
		return 0;
	if (c->state != ST_BUSY) { /* bytes nobody asked for */
		cl_close(c, -EPROTO);
		return 0;
	}
	rc = http_parser_feed(&c->parser, c->in.data ? buf_head(&c->in) : "", buf_used(&c->in),
	                      &used);
	buf_consume(&c->in, used);
	if (c->closed)
		return 0;
	switch (rc) {
	case HTTP_PARSE_ERROR:
		cl_close(c, -EPROTO);
		return 0;
	case HTTP_PARSE_DONE:
		cl_response_done(c);
		return 1;
	case HTTP_PARSE_PAUSED:
		return used > 0;
	default:
		return 0;
	}
}

static void cl_drive(struct http_client *c)
{
	for (;;) {
		ssize_t n;

		if (c->closed || c->state == ST_CONNECTING)
			return;
		if (sock_flush(c->fd, &c->out) != 0) {
			cl_close(c, -ECONNRESET);
			return;
		}
		if (c->read_paused)
			return;
		if (cl_parse(c))
			continue;
		if (c->closed || !c->can_read)
			return;
		n = sock_read(c->fd, &c->in, CL_READ_CHUNK);
		if (n > 0) {
			if (c->resp_headers_seen)
				loop_timer_start(c->loop, &c->timer, c->cfg.response_timeout_ms);
			continue;
		}
		if (n == 0) {
			cl_read_eof(c);
			return;
		}
		if (n == -EAGAIN)
			c->can_read = 0;
		else if (n == -ENOMEM)
			cl_close(c, -ENOMEM);
		else if (n != -ENOBUFS) /* full: wait for the parser to make room */
			cl_close(c, -ECONNRESET);
		return;
	}
}

static void cl_io(struct loop *loop, struct loop_io *io, uint32_t events)
{
	struct http_client *c = io->data;

	if (c->state == ST_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);

		if (!(events & (LOOP_WRITE | LOOP_ERROR)))
			return;
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
			err = errno;
		if (err != 0) {
			cl_close(c, -err);
			return;
		}
		c->state = c->req_started ? ST_BUSY : ST_IDLE;
		if (c->state == ST_IDLE)
			loop_timer_stop(loop, &c->timer);
		else
			loop_timer_start(loop, &c->timer, c->cfg.response_timeout_ms);
		if (c->ops->on_connect)
			c->ops->on_connect(c, c->data);
		if (c->closed)
			return;
	}
	if (events & (LOOP_READ | LOOP_ERROR))
		c->can_read = 1;
	cl_kick(c);
}

/* --- setup ------------------------------------------------------------ */

static int parse_numeric(const char *hp, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[64];
	struct str ps;
	unsigned long long port;

	if (!hp || sock_split_hostport(hp, host, sizeof(host), &ps) != 0 || host[0] == 0)
		return -EINVAL;
	if (str_to_u64(ps, &port) != 0 || port == 0 || port > 65535)
		return -EINVAL;
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		((struct sockaddr_in *)ss)->sin_family = AF_INET;
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
		*len = sizeof(struct sockaddr_in);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		((struct sockaddr_in6 *)ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
		*len = sizeof(struct sockaddr_in6);
		return 0;
	}
	return -EINVAL;
}

struct http_client *http_client_connect(struct loop *loop, const char *hostport,
                                        const struct http_client_config *cfg,
                                        const struct http_client_ops *ops, void *data)
{
	struct sockaddr_storage ss;
	socklen_t len;

	if (parse_numeric(hostport, &ss, &len) != 0) {
		errno = EINVAL;
		return NULL;
	}
	return http_client_connect_sa(loop, (struct sockaddr *)&ss, len, cfg, ops, data);
}

static void format_host(struct http_client *c, const struct sockaddr *sa)
{
	char ip[INET6_ADDRSTRLEN];
	int port = sock_addr_port(sa);

	sock_addr_ip(sa, ip, sizeof(ip));
	if (port >= 0)
		snprintf(c->host, sizeof(c->host), sa->sa_family == AF_INET6 ? "[%s]:%d" : "%s:%d",
		         ip, port);
}

struct http_client *http_client_connect_sa(struct loop *loop, const struct sockaddr *sa,
                                           socklen_t salen, const struct http_client_config *cfg,
                                           const struct http_client_ops *ops, void *data)
{
	struct http_client *c = calloc(1, sizeof(*c));
	struct http_limits lim;
	int err;

	if (!c) {
		errno = ENOMEM;
		return NULL;
	}
	c->loop = loop;
	if (cfg)
		c->cfg = *cfg;
	if (!c->cfg.connect_timeout_ms)
		c->cfg.connect_timeout_ms = 2000;
	if (!c->cfg.response_timeout_ms)
		c->cfg.response_timeout_ms = 30000;
	if (!c->cfg.max_output_bytes)
		c->cfg.max_output_bytes = 8u << 20;
	c->ops = ops;
	c->data = data;
	lim.max_header_bytes = c->cfg.max_header_bytes;
	lim.max_headers = c->cfg.max_headers;
	http_parser_init(&c->parser, HTTP_PARSE_RESPONSE, &lim, &cl_parser_cbs, c);
	buf_init(&c->in, CL_IN_CAP);
	buf_init(&c->out, c->cfg.max_output_bytes);
	loop_timer_init(&c->timer, cl_timer_cb, c);
	format_host(c, sa);
	c->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd == -1)
		goto out_free;
	sock_nodelay(c->fd);
	if (connect(c->fd, sa, salen) == -1 && errno != EINPROGRESS)
		goto out_close_fd;
	err = loop_io_add(loop, &c->io, c->fd, cl_io, c);
	if (err != 0) {
		errno = -err;
		goto out_close_fd;
	}
	c->state = ST_CONNECTING;
	loop_timer_start(loop, &c->timer, c->cfg.connect_timeout_ms);
	return c;

out_close_fd:
	err = errno;
	close(c->fd);
	errno = err;
out_free:
	err = errno;
	http_parser_release(&c->parser);
	free(c);
	errno = err;
	return NULL;
}

void http_client_set_data(struct http_client *c, void *data)
{
	c->data = data;
}

/* --- requests --------------------------------------------------------- */

static int skip_header(struct str name)
{
	return str_caseeq_c(name, "content-length") || str_caseeq_c(name, "transfer-encoding");
}

static int method_wants_length(struct str m)
{
	return str_eq_c(m, "POST") || str_eq_c(m, "PUT") || str_eq_c(m, "PATCH");
}

/*
 * Serializes the request head into b.  clen: a Content-Length >= 0, or
 * HTTP_FRAMING_CHUNKED / HTTP_FRAMING_NONE.
 */
static int build_request(struct http_client *c, struct buf *b, struct str method, struct str target,
                         const struct http_header *hdrs, size_t nhdrs, int64_t clen)
{
	int has_host = 0, rc = 0;
	size_t i;

	rc |= buf_append(b, method.p, method.len);
	rc |= buf_append(b, " ", 1);
	rc |= buf_append(b, target.p, target.len);
	rc |= buf_append_str(b, " HTTP/1.1\r\n");
	for (i = 0; i < nhdrs; i++) {
		if (skip_header(hdrs[i].name))
			continue;
		if (str_caseeq_c(hdrs[i].name, "host"))
			has_host = 1;
		if (str_caseeq_c(hdrs[i].name, "connection") &&
		    http_token_list_has(hdrs[i].value, STR_LIT("close")))
			c->req_close = 1;
		rc |= http_head_add(b, hdrs[i].name, hdrs[i].value);
	}
	if (!has_host)
		rc |= http_head_add(b, STR_LIT("Host"), str_c(c->host));
	rc |= http_head_framing(b, clen);
	rc |= buf_append_lit(b, "\r\n");
	return rc ? -ENOBUFS : 0;
}

static int begin_request(struct http_client *c, struct str method, struct str target,
                         const struct http_header *hdrs, size_t nhdrs, int64_t clen,
                         struct buf *head)
{
	if (c->closed)
		return -EPIPE;
	if (c->req_started || c->state == ST_BUSY)
		return -EBUSY;
	if (method.len == 0 || target.len == 0)
		return -EINVAL;
	c->req_close = 0;
	if (build_request(c, head, method, target, hdrs, nhdrs, clen) != 0 ||
	    buf_used(head) > c->cfg.max_output_bytes)
		return -ENOBUFS;
	if (http_parser_is_done(&c->parser))
		http_parser_next(&c->parser);
	if (str_eq_c(method, "HEAD"))
		http_parser_expect_no_body(&c->parser);
	c->req_started = 1;
	c->req_ended = 0;
	c->req_chunked = clen == HTTP_FRAMING_CHUNKED;
	c->req_left = clen >= 0 ? clen : -1;
	c->resp_headers_seen = 0;
	if (c->state == ST_IDLE) {
		c->state = ST_BUSY;
		loop_timer_start(c->loop, &c->timer, c->cfg.response_timeout_ms);
	}
	return 0;
}

int http_client_request(struct http_client *c, struct str method, struct str target,
                        const struct http_header *hdrs, size_t nhdrs, const void *body, size_t len)
{
	int64_t clen = len > 0 || method_wants_length(method) ? (int64_t)len : HTTP_FRAMING_NONE;
	struct buf *head = http_scratch();
	struct iovec iov[2];
	int rc;

	rc = begin_request(c, method, target, hdrs, nhdrs, clen, head);
	if (rc == 0) {
		iov[0] = (struct iovec){buf_head(head), buf_used(head)};
		iov[1] = (struct iovec){(void *)body, len};
		c->req_ended = 1;
		c->req_left = 0;
		rc = cl_sendv(c, iov, len ? 2 : 1);
	}
	if (rc == 0 && !c->closed)
		cl_kick(c); /* the response may already be buffered (never for a new request) */
	return rc;
}

int http_client_request_start(struct http_client *c, struct str method, struct str target,
                              const struct http_header *hdrs, size_t nhdrs, int64_t content_length)
{
	struct buf *head = http_scratch();
	int rc;

	rc = begin_request(c, method, target, hdrs, nhdrs,
	                   content_length < 0 ? HTTP_FRAMING_CHUNKED : content_length, head);
	if (rc == 0)
		rc = cl_send(c, buf_head(head), buf_used(head));
	return rc;
}

int http_client_write(struct http_client *c, const void *p, size_t len)
{
	if (c->closed)
		return -EPIPE;
	if (!c->req_started || c->req_ended)
		return -EINVAL;
	if (len == 0)
		return 0;
	if (c->req_chunked) {
		char hex[20];
		struct iovec iov[3];

		return cl_sendv(c, iov, http_chunk_iov(iov, hex, p, len));
	}
	if ((uint64_t)len > (uint64_t)c->req_left)
		return -EINVAL;
	c->req_left -= (int64_t)len;
	return cl_send(c, p, len);
}

int http_client_request_end(struct http_client *c)
{
	int rc = 0;

	if (c->closed)
		return -EPIPE;
	if (!c->req_started || c->req_ended)
		return -EINVAL;
	if (c->req_chunked)
		rc = cl_send(c, "0\r\n\r\n", 5);
	else if (c->req_left > 0)
		rc = -EINVAL; /* fewer bytes than announced */
	if (rc != 0)
		return rc;
	c->req_ended = 1;
	return 0;
}

void http_client_resume_read(struct http_client *c)
{
	if (c->closed || !c->read_paused)
		return;
	c->read_paused = 0;
	http_parser_resume(&c->parser);
	cl_kick(c);
}

int http_client_reusable(const struct http_client *c)
{
	return !c->closed && c->state == ST_IDLE && !c->req_started && buf_used(&c->in) == 0;
}

int http_client_connecting(const struct http_client *c)
{
	return !c->closed && c->state == ST_CONNECTING;
}
