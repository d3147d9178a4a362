/*
 * demo-upstream - a small HTTP/1.1 upstream for the demo, the e2e tests and
 * the benchmarks.  Answers every request with its version name, with a
 * configurable error rate and added latency (deterministic under --seed).
 *
 *   demo-upstream --listen 127.0.0.1:7001 --name v1 [--error-rate 0.05]
 *                 [--latency-ms 20] [--error-status 500] [--seed N]
 *
 * Response: 200 {"version":"v1","path":"/x"} with X-Upstream-Version: v1,
 * or the error status with {"version":"v1","error":true}.  Keep-alive and
 * pipelining are supported; request bodies (Content-Length or chunked) are
 * read and discarded.  This is a test tool: its parsing is lenient.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/loop.h"

struct opts {
	const char *listen;
	const char *name;
	double error_rate;
	unsigned latency_ms;
	unsigned error_status;
	unsigned long long seed;
};

static struct opts opt = {"127.0.0.1:7001", "v1", 0.0, 0, 500, 1};
static unsigned long long rng_state;

/* xorshift64*: deterministic for a given --seed */
static double rng_next(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (double)((rng_state * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

struct conn {
	struct loop_io io;
	struct loop_defer d;
	struct loop_timer delay;
	struct buf in, out;
	int closed;
	int waiting; /* a delayed response is pending; do not parse further */
	int close_after;
	size_t body_left;
	char path[256];
	int status;
};

static void conn_free(struct loop *loop, struct loop_defer *d)
{
	struct conn *c = d->data;

	close(c->io.fd);
	buf_release(&c->in);
	buf_release(&c->out);
	free(c);
}

static void conn_close(struct loop *loop, struct conn *c)
{
	if (c->closed)
		return;
	c->closed = 1;
	loop_timer_stop(loop, &c->delay);
	loop_io_del(loop, &c->io);
	loop_defer(loop, &c->d, conn_free, c);
}

static void conn_flush(struct loop *loop, struct conn *c)
{
	while (buf_used(&c->out)) {
		ssize_t n = write(c->io.fd, buf_head(&c->out), buf_used(&c->out));

		if (n == -1) {
			if (errno == EAGAIN)
				return;
			conn_close(loop, c);
			return;
		}
		buf_consume(&c->out, (size_t)n);
	}
	if (c->close_after)
		conn_close(loop, c);
}

static void conn_respond(struct conn *c)
{
	char body[512];
	int blen;

	if (c->status == 200)
		blen = snprintf(body, sizeof(body), "{\"version\":\"%s\",\"path\":\"%s\"}\n",
		                opt.name, c->path);
	else
		blen =
		    snprintf(body, sizeof(body), "{\"version\":\"%s\",\"error\":true}\n", opt.name);
	buf_printf(&c->out,
	           "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
	           "X-Upstream-Version: %s\r\nContent-Length: %d\r\n%s\r\n%s",
	           c->status, c->status == 200 ? "OK" : "Error", opt.name, blen,
	           c->close_after ? "Connection: close\r\n" : "", body);
}

static void conn_parse(struct loop *loop, struct conn *c);

static void delay_cb(struct loop *loop, struct loop_timer *t)
{
	struct conn *c = t->data;

	c->waiting = 0;
	conn_respond(c);
	conn_flush(loop, c);
	if (!c->closed)
		conn_parse(loop, c);
}

/* Finds a header value in the header block [p, p+n); returns its length or -1. */
static int find_header(const char *p, size_t n, const char *name, const char **val)
{
	size_t nl = strlen(name);
	const char *end = p + n, *line = p;

	while (line < end) {
		const char *eol = memchr(line, '\n', (size_t)(end - line));

		if (!eol)
			break;
		if ((size_t)(eol - line) > nl + 1 && strncasecmp(line, name, nl) == 0 &&
		    line[nl] == ':') {
			const char *v = line + nl + 1;

			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			*val = v;
			return (int)(eol - v - (eol[-1] == '\r'));
		}
		line = eol + 1;
	}
	return -1;
}

static void conn_parse(struct loop *loop, struct conn *c)
{
	while (!c->waiting && !c->closed) {
		const char *head = buf_head(&c->in), *eoh, *v, *sp;
		size_t used = buf_used(&c->in), hlen;
		int vl;

		if (c->body_left) {
			size_t take = used < c->body_left ? used : c->body_left;

			buf_consume(&c->in, take);
			c->body_left -= take;
			if (c->body_left)
				return;
			continue;
		}
		eoh = memmem(head, used, "\r\n\r\n", 4);
		if (!eoh)
			return;
		hlen = (size_t)(eoh - head) + 4;
		sp = memchr(head, ' ', hlen);
		if (sp) {
			const char *sp2 = memchr(sp + 1, ' ', hlen - (size_t)(sp + 1 - head));
			size_t pl = sp2 ? (size_t)(sp2 - sp - 1) : 0;

			if (pl >= sizeof(c->path))
				pl = sizeof(c->path) - 1;
			for (size_t i = 0; i < pl; i++)
				c->path[i] =
				    (sp[1 + i] == '"' || sp[1 + i] == '\\') ? '_' : sp[1 + i];
			c->path[pl] = '\0';
		}
		vl = find_header(head, hlen, "content-length", &v);
		c->body_left = vl > 0 ? strtoull(v, NULL, 10) : 0;
		vl = find_header(head, hlen, "connection", &v);
		c->close_after = vl == 5 && strncasecmp(v, "close", 5) == 0;
		buf_consume(&c->in, hlen);
		c->status = (opt.error_rate > 0 && rng_next() < opt.error_rate)
		                ? (int)opt.error_status
		                : 200;
		if (opt.latency_ms) {
			c->waiting = 1;
			loop_timer_start(loop, &c->delay, opt.latency_ms);
			return;
		}
		conn_respond(c);
	}
}

static void conn_cb(struct loop *loop, struct loop_io *io, uint32_t ev)
{
	struct conn *c = io->data;

	if (ev & LOOP_READ) {
		for (;;) {
			char *p = buf_reserve(&c->in, 16384);
			ssize_t n;

			if (!p) {
				conn_close(loop, c);
				return;
			}
			n = read(io->fd, p, 16384);
			if (n > 0) {
				buf_commit(&c->in, (size_t)n);
				continue;
			}
			if (n == 0 || errno != EAGAIN) {
				conn_close(loop, c);
				return;
			}
			break;
		}
		conn_parse(loop, c);
	}
	conn_flush(loop, c);
}

static void accept_cb(struct loop *loop, struct loop_io *io, uint32_t ev)
{
	for (;;) {
		int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1;
		struct conn *c;

		if (fd == -1)
			return;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		buf_init(&c->in, 1 << 20);
		buf_init(&c->out, 1 << 20);
		loop_timer_init(&c->delay, delay_cb, c);
		if (loop_io_add(loop, &c->io, fd, conn_cb, c) != 0) {
			close(fd);
			free(c);
		}
	}
}

static void on_signal(struct loop *loop, int signo, void *data)
{
	loop_stop(loop);
}

static int listen_on(const char *addr)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	char host[64];
	const char *colon = strrchr(addr, ':');
	unsigned long port;
	char *end;
	int fd, one = 1;

	if (!colon || (size_t)(colon - addr) >= sizeof(host))
		return -1;
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	port = strtoul(colon + 1, &end, 10);
	if (*end || port > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return -1;
	sa.sin_port = htons((uint16_t)port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 || listen(fd, 1024) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

static void usage(FILE *f)
{
	fputs("usage: demo-upstream [--listen ADDR] [--name NAME] [--error-rate R]\n"
	      "                     [--error-status CODE] [--latency-ms MS] [--seed N]\n",
	      f);
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
	    {"listen", required_argument, NULL, 'l'},
	    {"name", required_argument, NULL, 'n'},
	    {"error-rate", required_argument, NULL, 'e'},
	    {"error-status", required_argument, NULL, 's'},
	    {"latency-ms", required_argument, NULL, 'L'},
	    {"seed", required_argument, NULL, 'S'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct loop *loop;
	struct loop_io lio;
	int c, fd;
	char *end;

	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		switch (c) {
		case 'l':
			opt.listen = optarg;
			break;
		case 'n':
			opt.name = optarg;
			break;
		case 'e':
			opt.error_rate = strtod(optarg, &end);
			if (*end || opt.error_rate < 0 || opt.error_rate > 1) {
				fputs("demo-upstream: --error-rate must be in [0,1]\n", stderr);
				return 2;
			}
			break;
		case 's':
			opt.error_status = (unsigned)strtoul(optarg, &end, 10);
			if (*end || opt.error_status < 100 || opt.error_status > 599) {
				fputs("demo-upstream: --error-status must be 100..599\n", stderr);
				return 2;
			}
			break;
		case 'L':
			opt.latency_ms = (unsigned)strtoul(optarg, &end, 10);
			if (*end) {
				fputs("demo-upstream: --latency-ms must be a number\n", stderr);
				return 2;
			}
			break;
		case 'S':
			opt.seed = strtoull(optarg, &end, 10);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	rng_state = opt.seed ? opt.seed : 1;
	loop = loop_new();
	if (!loop || loop_signals(loop, on_signal, NULL) != 0)
		return 1;
	fd = listen_on(opt.listen);
	if (fd < 0) {
		fprintf(stderr, "demo-upstream: cannot listen on %s: %s\n", opt.listen,
		        strerror(errno));
		return 1;
	}
	loop_io_add(loop, &lio, fd, accept_cb, NULL);
	log_info("demo-upstream listening", "addr", opt.listen, "version", opt.name, NULL);
	loop_run(loop);
	return 0;
}
