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
 * pipelining are supported; request bodies with a Content-Length are read
 * and discarded.  This is a test tool: its parsing is lenient.
 *
 * Misbehaving on request (the hostile-upstream tests): a request header
 *   X-Upstream-Misbehave: MODE N      MODE = reset | close | silent
 * makes the answer send its head (with the full Content-Length) and only the
 * first N body bytes, then: reset = close with a TCP RST (SO_LINGER 0),
 * close = close with a FIN in the same turn (the FIN usually arrives with the
 * data), silent = send nothing more and keep the connection open (the request
 * stays in in_flight until the peer closes).  A malformed value is ignored.
 *
 * Control endpoints (answered at once: no latency, no injected error, not
 * counted as requests; other paths under /_upstream/ get 404):
 *   GET  /_upstream/stats   {"name","requests","errors","first_request_ms",
 *                           "last_request_ms","in_flight","error_rate",
 *                           "latency_ms","error_status"}
 *        requests: normal requests received; errors: error answers sent;
 *        first/last_request_ms: CLOCK_REALTIME ms when the first/last normal
 *        request's header section was read (0: none yet); in_flight: normal
 *        requests received and not answered yet (delayed by --latency-ms).
 *   POST /_upstream/reset   zeroes requests, errors, first/last_request_ms
 *                           (in_flight is a gauge and stays); answers stats.
 *   POST /_upstream/config?error_rate=R&latency_ms=MS&error_status=CODE&quality=Q
 *                          &health_status=CODE
 *        changes any of these at runtime (all or none: a bad value is a 400);
 *        answers stats.
 *   GET  /healthz           the health check path (canaryd's `health:`): answered
 *                           at once with health_status (default 200), not
 *                           counted; "health_probes" in stats counts them.
 *   POST /_upstream/hold     from now on, normal requests are held unanswered
 *                           (counted in in_flight and in "held") until ...
 *   POST /_upstream/release  answers every held request at once and stops
 *                           holding; both answer stats.  For tests that need a
 *                           request in flight for as long as they say.
 *   GET  /metrics           Prometheus text format (a custom metric source for
 *                           `query:` checks), every series labelled
 *                           version="NAME":
 *                           demo_requests_total, demo_errors_total (counters,
 *                           as in stats) and demo_quality (a gauge, 1 unless
 *                           set with quality=Q, any finite number).
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

#include <jansson.h>

enum misbehave { MIS_NONE = 0, MIS_RESET, MIS_CLOSE, MIS_SILENT };

#include "core/buf.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/str.h"

struct opts {
	const char *listen;
	const char *name;
	double error_rate;
	unsigned latency_ms;
	unsigned error_status;
	unsigned long long seed;
	double quality;
	unsigned health_status; /* GET /healthz answers this */
};

static struct opts opt = {"127.0.0.1:7001", "v1", 0.0, 0, 500, 1, 1.0, 200};
static unsigned long long rng_state;
static int holding; /* POST /_upstream/hold until POST /_upstream/release */

/* What GET /_upstream/stats reports. */
static struct {
	unsigned long long requests, errors, in_flight;
	unsigned long long first_request_ms, last_request_ms;
	unsigned long long held; /* requests held by /_upstream/hold now */
} stats;

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
	int held;    /* waiting for POST /_upstream/release (no timer) */
	int close_after;
	int reset_after;    /* close with an RST once the output is written */
	enum misbehave mis; /* X-Upstream-Misbehave of the current request */
	unsigned long long mis_bytes;
	size_t body_left;
	char path[256];
	int status;
	struct conn *prev, *next; /* every open connection, freed at exit */
};

static struct conn *conns;

static void conn_free(struct loop *loop, struct loop_defer *d)
{
	struct conn *c = d->data;

	if (c->prev)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
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
	if (c->waiting) /* a delayed request that will never be answered */
		stats.in_flight--;
	if (c->held)
		stats.held--;
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
	if (c->reset_after) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};

		setsockopt(c->io.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	if (c->close_after)
		conn_close(loop, c);
}

static void conn_respond(struct conn *c)
{
	char body[512];
	int blen;

	if (c->mis != MIS_SILENT) /* a silent answer stays in flight until the close */
		stats.in_flight--;
	if (c->status != 200)
		stats.errors++;
	if (c->status == 200)
		blen = snprintf(body, sizeof(body), "{\"version\":\"%s\",\"path\":\"%s\"}\n",
		                opt.name, c->path);
	else
		blen =
		    snprintf(body, sizeof(body), "{\"version\":\"%s\",\"error\":true}\n", opt.name);
	if (blen < 0 || (size_t)blen >= sizeof(body))
		blen = 0;
	buf_printf(&c->out,
	           "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
	           "X-Upstream-Version: %s\r\nContent-Length: %d\r\n%s\r\n",
	           c->status, c->status == 200 ? "OK" : "Error", opt.name, blen,
	           c->close_after ? "Connection: close\r\n" : "");
	if (c->mis == MIS_NONE) {
		buf_append(&c->out, body, (size_t)blen);
		return;
	}
	/* the head promised blen bytes: send only the first mis_bytes */
	buf_append(&c->out, body, c->mis_bytes < (size_t)blen ? c->mis_bytes : (size_t)blen);
	if (c->mis == MIS_SILENT) {
		c->waiting = 1; /* nothing more on this connection */
		return;
	}
	c->close_after = 1;
	c->reset_after = c->mis == MIS_RESET;
}

/* Parses "MODE N" of X-Upstream-Misbehave; MIS_NONE when malformed. */
static enum misbehave parse_misbehave(struct str v, unsigned long long *bytes)
{
	static const char *const modes[] = {"reset", "close", "silent"};
	const char *sp = memchr(v.p, ' ', v.len);

	if (!sp || str_to_u64(str_make(sp + 1, v.len - (size_t)(sp - v.p) - 1), bytes) != 0)
		return MIS_NONE;
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		if (str_eq_c(str_make(v.p, (size_t)(sp - v.p)), modes[i]))
			return (enum misbehave)(i + 1);
	return MIS_NONE;
}

/* Answers a control request with a JSON body (or a plain error). */
static void control_respond(struct conn *c, int status, const char *body)
{
	buf_printf(&c->out,
	           "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
	           "Cache-Control: no-store\r\nX-Upstream-Version: %s\r\n"
	           "Content-Length: %zu\r\n%s\r\n%s",
	           status, status == 200 ? "OK" : "Error", opt.name, strlen(body),
	           c->close_after ? "Connection: close\r\n" : "", body);
}

/* GET /healthz: the status set with health_status=CODE, at once. */
static unsigned long long health_probes;
static void control_health(struct conn *c)
{
	health_probes++;
	control_respond(c, (int)opt.health_status,
	                opt.health_status < 400 ? "{\"healthy\":true}" : "{\"healthy\":false}");
}

static void control_stats(struct conn *c)
{
	json_t *o = json_object();
	char *s;

	json_object_set_new(o, "name", json_string(opt.name));
	json_object_set_new(o, "requests", json_integer((json_int_t)stats.requests));
	json_object_set_new(o, "errors", json_integer((json_int_t)stats.errors));
	json_object_set_new(o, "first_request_ms",
	                    json_integer((json_int_t)stats.first_request_ms));
	json_object_set_new(o, "last_request_ms", json_integer((json_int_t)stats.last_request_ms));
	json_object_set_new(o, "in_flight", json_integer((json_int_t)stats.in_flight));
	json_object_set_new(o, "held", json_integer((json_int_t)stats.held));
	json_object_set_new(o, "error_rate", json_real(opt.error_rate));
	json_object_set_new(o, "latency_ms", json_integer(opt.latency_ms));
	json_object_set_new(o, "error_status", json_integer(opt.error_status));
	json_object_set_new(o, "quality", json_real(opt.quality));
	json_object_set_new(o, "health_status", json_integer(opt.health_status));
	json_object_set_new(o, "health_probes", json_integer((json_int_t)health_probes));
	s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12));
	json_decref(o);
	control_respond(c, s ? 200 : 500, s ? s : "{\"error\":\"out of memory\"}");
	free(s);
}

/* GET /metrics: the counters and the quality gauge in Prometheus text format. */
static void control_metrics(struct conn *c)
{
	char body[1024];
	int n = snprintf(body, sizeof(body),
	                 "# TYPE demo_requests_total counter\n"
	                 "demo_requests_total{version=\"%s\"} %llu\n"
	                 "# TYPE demo_errors_total counter\n"
	                 "demo_errors_total{version=\"%s\"} %llu\n"
	                 "# TYPE demo_quality gauge\n"
	                 "demo_quality{version=\"%s\"} %.17g\n",
	                 opt.name, stats.requests, opt.name, stats.errors, opt.name, opt.quality);

	if (n < 0 || (size_t)n >= sizeof(body)) {
		control_respond(c, 500, "{\"error\":\"the name is too long\"}");
		return;
	}
	buf_printf(&c->out,
	           "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
	           "Cache-Control: no-store\r\nX-Upstream-Version: %s\r\n"
	           "Content-Length: %d\r\n%s\r\n%s",
	           opt.name, n, c->close_after ? "Connection: close\r\n" : "", body);
}

/* POST /_upstream/config?error_rate=R&latency_ms=MS&error_status=CODE&quality=Q */
static void control_config(struct conn *c, struct str query)
{
	double rate = opt.error_rate, quality = opt.quality;
	unsigned long long latency = opt.latency_ms, status = opt.error_status;
	unsigned long long hstatus = opt.health_status;
	size_t i = 0;
	int any = 0;

	while (i < query.len) {
		size_t j = i, eq;
		struct str name, val;

		while (j < query.len && query.p[j] != '&')
			j++;
		for (eq = i; eq < j && query.p[eq] != '='; eq++)
			;
		name = str_make(query.p + i, eq - i);
		val = eq < j ? str_make(query.p + eq + 1, j - eq - 1) : STR_NULL;
		i = j + 1;
		if (name.len == 0)
			continue;
		if (str_eq_c(name, "error_rate")) {
			if (str_to_double(val, &rate) != 0 || rate < 0 || rate > 1)
				goto out_bad;
		} else if (str_eq_c(name, "latency_ms")) {
			if (str_to_u64(val, &latency) != 0 || latency > 3600000)
				goto out_bad;
		} else if (str_eq_c(name, "error_status")) {
			if (str_to_u64(val, &status) != 0 || status < 100 || status > 599)
				goto out_bad;
		} else if (str_eq_c(name, "quality")) {
			if (str_to_double(val, &quality) != 0)
				goto out_bad;
		} else if (str_eq_c(name, "health_status")) {
			if (str_to_u64(val, &hstatus) != 0 || hstatus < 100 || hstatus > 599)
				goto out_bad;
		} else {
			goto out_bad;
		}
		any = 1;
	}
	if (!any)
		goto out_bad;
	opt.error_rate = rate;
	opt.latency_ms = (unsigned)latency;
	opt.error_status = (unsigned)status;
	opt.quality = quality;
	opt.health_status = (unsigned)hstatus;
	control_stats(c);
	return;

out_bad:
	control_respond(c, 400,
	                "{\"error\":\"want error_rate=0..1, latency_ms=0..3600000, "
	                "error_status=100..599, health_status=100..599 and/or quality=NUMBER\"}");
}

static void conn_parse(struct loop *loop, struct conn *c);

/* POST /_upstream/release: answers every held request, stops holding. */
static void release_held(struct loop *loop)
{
	holding = 0;
	/* closing is deferred (conn_free), so the list stays whole while we walk it */
	for (struct conn *h = conns; h; h = h->next) {
		if (!h->held || h->closed)
			continue;
		h->held = 0;
		h->waiting = 0;
		stats.held--;
		conn_respond(h);
		conn_flush(loop, h);
		if (!h->closed)
			conn_parse(loop, h);
	}
}

/* A request under /_upstream/: stats, reset, config, hold, release. */
static void control(struct loop *loop, struct conn *c, struct str method, struct str target)
{
	const char *q = memchr(target.p, '?', target.len);
	struct str path = q ? str_make(target.p, (size_t)(q - target.p)) : target;
	struct str query = q ? str_make(q + 1, target.len - path.len - 1) : STR_NULL;
	int get = str_eq_c(method, "GET"), post = str_eq_c(method, "POST");

	if (str_eq_c(path, "/_upstream/stats")) {
		if (!get)
			goto out_method;
		control_stats(c);
	} else if (str_eq_c(path, "/_upstream/reset")) {
		if (!post)
			goto out_method;
		stats.requests = stats.errors = 0;
		stats.first_request_ms = stats.last_request_ms = 0;
		control_stats(c);
	} else if (str_eq_c(path, "/_upstream/config")) {
		if (!post)
			goto out_method;
		control_config(c, query);
	} else if (str_eq_c(path, "/_upstream/hold") || str_eq_c(path, "/_upstream/release")) {
		if (!post)
			goto out_method;
		if (str_eq_c(path, "/_upstream/hold"))
			holding = 1;
		else
			release_held(loop);
		control_stats(c);
	} else {
		control_respond(c, 404, "{\"error\":\"not found\"}");
	}
	return;

out_method:
	control_respond(c, 405, "{\"error\":\"method not allowed\"}");
}

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
		struct str method = STR_NULL, target = STR_NULL;
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

			method = str_make(head, (size_t)(sp - head));
			target = str_make(sp + 1, pl);
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
		vl = find_header(head, hlen, "x-upstream-misbehave", &v);
		c->mis =
		    vl > 0 ? parse_misbehave(str_make(v, (size_t)vl), &c->mis_bytes) : MIS_NONE;
		if (str_has_prefix(target, STR_LIT("/_upstream/")) ||
		    (str_eq_c(method, "GET") &&
		     (str_eq_c(target, "/metrics") || str_eq_c(target, "/healthz")))) {
			if (str_eq_c(target, "/metrics"))
				control_metrics(c);
			else if (str_eq_c(target, "/healthz"))
				control_health(c);
			else
				/* before target's bytes are consumed */
				control(loop, c, method, target);
			buf_consume(&c->in, hlen);
			continue;
		}
		buf_consume(&c->in, hlen);
		stats.requests++;
		stats.in_flight++;
		stats.last_request_ms = clock_wall_ms();
		if (!stats.first_request_ms)
			stats.first_request_ms = stats.last_request_ms;
		c->status = (opt.error_rate > 0 && rng_next() < opt.error_rate)
		                ? (int)opt.error_status
		                : 200;
		if (holding) {
			c->waiting = c->held = 1;
			stats.held++;
			return;
		}
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
			continue;
		}
		c->next = conns;
		if (conns)
			conns->prev = c;
		conns = c;
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
	      "                     [--error-status CODE] [--latency-ms MS] [--seed N]\n"
	      "control: GET /_upstream/stats, POST /_upstream/reset,\n"
	      "         POST /_upstream/config?error_rate=R&latency_ms=MS&error_status=CODE&"
	      "quality=Q&health_status=CODE, POST /_upstream/hold, POST /_upstream/release,\n"
	      "         GET /healthz\n"
	      "metrics: GET /metrics (Prometheus text: demo_requests_total, demo_errors_total,\n"
	      "         demo_quality)\n"
	      "misbehave: request header X-Upstream-Misbehave: reset|close|silent N (head and\n"
	      "         N body bytes, then an RST, a FIN, or silence)\n",
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
	unsigned long long u;
	int c, fd;

	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		switch (c) {
		case 'l':
			opt.listen = optarg;
			break;
		case 'n':
			opt.name = optarg;
			break;
		case 'e':
			if (str_to_double(str_c(optarg), &opt.error_rate) != 0 ||
			    opt.error_rate < 0 || opt.error_rate > 1) {
				fputs("demo-upstream: --error-rate must be in [0,1]\n", stderr);
				return 2;
			}
			break;
		case 's':
			if (str_to_u64(str_c(optarg), &u) != 0 || u < 100 || u > 599) {
				fputs("demo-upstream: --error-status must be 100..599\n", stderr);
				return 2;
			}
			opt.error_status = (unsigned)u;
			break;
		case 'L':
			/* the bound POST /_upstream/config applies too */
			if (str_to_u64(str_c(optarg), &u) != 0 || u > 3600000) {
				fputs("demo-upstream: --latency-ms must be 0..3600000\n", stderr);
				return 2;
			}
			opt.latency_ms = (unsigned)u;
			break;
		case 'S':
			if (str_to_u64(str_c(optarg), &opt.seed) != 0) {
				fputs("demo-upstream: --seed must be a number\n", stderr);
				return 2;
			}
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
	/* free everything so that sanitizer builds exit cleanly */
	loop_io_del(loop, &lio);
	close(fd);
	for (struct conn *k = conns; k; k = k->next)
		conn_close(loop, k);
	loop_run_once(loop, 0); /* runs the deferred frees */
	loop_free(loop);
	return 0;
}
