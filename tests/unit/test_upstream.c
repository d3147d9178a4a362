/* The upstream connection machine (proxy/upstream.h) driven by both kinds of
 * owner through its ops table, against loopback upstreams this test plays by
 * hand: an exchange-like owner (collects the response, retries a stale
 * pooled connection once, as exchange.c does) and a mirror-like owner (only
 * hashes the body, as mirror_worker.c does).  Keep-alive reuse, stale pooled
 * connection retry, reset mid-head and mid-body, response and idle timeouts,
 * the pool limit, connect refused, and a paused owner.  Every wait is
 * bounded (run_until). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "core/uring.h"
#include "proxy/mirror.h"
#include "proxy/upstream.h"

/* ---- an owner that records what the upconn reported ---- */

struct owner {
	struct upstream *us;
	const struct proxy_version *v;
	uint32_t ep;
	int hashing; /* mirror-like: hash the body, keep nothing */
	int retry;   /* exchange-like: retry once on a stale connection */
	int pause_body;
	struct upconn *u;
	int status;
	char body[4096];
	size_t nbody;
	uint64_t hash;
	int done, keep_alive, failed, stale, retried;
	enum metrics_err kind;
	const char *request;
};

static const struct upconn_ops owner_ops;

static int owner_send(struct owner *o)
{
	int err = 0;
	struct upconn_req rq = {.connect_ms = 2000, .response_ms = 2000, .idle_ms = 5000};

	o->u = upconn_get(o->us, o->v, o->ep, &owner_ops, o, &err);
	if (!o->u)
		return -err;
	buf_append(upconn_out(o->u), o->request, strlen(o->request));
	upconn_start(o->u, &rq);
	return 0;
}

static int on_head(struct upconn *u, const struct http_msg *m, void *data)
{
	struct owner *o = data;

	o->status = m->status;
	return 0;
}

static int on_body(struct upconn *u, const char *p, size_t len, void *data)
{
	struct owner *o = data;

	if (o->hashing) {
		o->hash = mirror_hash(o->hash, p, len);
		o->nbody += len;
		return 0;
	}
	if (o->nbody + len <= sizeof(o->body))
		memcpy(o->body + o->nbody, p, len);
	o->nbody += len;
	return o->pause_body ? HTTP_PARSER_PAUSE : 0;
}

static void on_done(struct upconn *u, int keep_alive, void *data)
{
	struct owner *o = data;

	o->done = 1;
	o->keep_alive = keep_alive;
	o->u = NULL;
	upconn_release(u, keep_alive);
}

static void on_fail(struct upconn *u, enum metrics_err kind, int stale, void *data)
{
	struct owner *o = data;

	o->u = NULL;
	o->kind = kind;
	o->stale = stale;
	if (stale && o->retry && !o->retried) {
		o->retried = 1;
		if (owner_send(o) == 0)
			return;
	}
	o->failed = 1;
}

static const struct upconn_ops owner_ops = {
    .head = on_head, .body = on_body, .done = on_done, .fail = on_fail};

/* ---- the fixture: a loop, a registry with one loopback endpoint ---- */

struct fx {
	struct loop *loop;
	struct proxy_registry *reg;
	struct upstream *us;
	struct proxy_version v;
	uint32_t ep;
	int lfd; /* the upstream's listening socket (this test plays the upstream) */
};

static int listen_any(uint16_t *port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd == -1 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 || listen(fd, 16) == -1)
		return -1;
	getsockname(fd, (struct sockaddr *)&sa, &sl);
	*port = ntohs(sa.sin_port);
	return fd;
}

static uint32_t endpoint(struct proxy_registry *reg, uint16_t port)
{
	struct config_addr a = {.port = port, .family = AF_INET};
	char err[128];
	int id;

	snprintf(a.host, sizeof(a.host), "127.0.0.1");
	id = proxy_registry_endpoint(reg, &a, err, sizeof(err));
	assert_true(id >= 0);
	return (uint32_t)id;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	uint16_t port = 0;

	if (!f)
		return -1;
	f->loop = loop_new();
	f->reg = proxy_registry_new();
	f->us = calloc(1, sizeof(*f->us));
	f->lfd = listen_any(&port);
	if (!f->loop || !f->reg || !f->us || f->lfd < 0)
		return -1;
	if (getenv("CANARYD_IO") && strcmp(getenv("CANARYD_IO"), "uring") == 0) {
		/* the io_uring path (ctest unit/test_upstream_uring) */
		char why[160];

		if (loop_uring_enable(f->loop, why, sizeof(why)) != 0) {
			fprintf(stderr, "io_uring: %s\n", why);
			return -1;
		}
	}
	upstream_init(f->us, f->loop, f->reg);
	f->ep = endpoint(f->reg, port);
	f->v.name = "v1";
	f->v.eps = &f->ep;
	f->v.neps = 1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	upstream_close_all_idle(f->us);
	loop_run_once(f->loop, 0); /* the deferred frees */
	close(f->lfd);
	free(f->us);
	proxy_registry_free(f->reg);
	loop_free(f->loop);
	free(f);
	return 0;
}

/* Runs the loop until *flag is set, at most 5 s. */
static void run_until(struct fx *f, const int *flag)
{
	uint64_t until = clock_mono_ms() + 5000;

	while (!*flag && clock_mono_ms() < until)
		loop_run_once(f->loop, 10);
	assert_true(*flag);
}

/* Runs the loop for ms milliseconds. */
static void run_for(struct fx *f, uint64_t ms)
{
	uint64_t until = clock_mono_ms() + ms;

	while (clock_mono_ms() < until)
		loop_run_once(f->loop, 5);
}

/* Accepts the upstream side of a new connection, running the loop meanwhile. */
static int upstream_accept(struct fx *f)
{
	uint64_t until = clock_mono_ms() + 5000;

	while (clock_mono_ms() < until) {
		struct pollfd pf = {.fd = f->lfd, .events = POLLIN};

		loop_run_once(f->loop, 0);
		if (poll(&pf, 1, 10) == 1)
			return accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
	}
	fail_msg("no connection came");
	return -1;
}

/* 1 if a connection is waiting on the listener (nothing accepted). */
static int upstream_pending(struct fx *f)
{
	struct pollfd pf = {.fd = f->lfd, .events = POLLIN};

	return poll(&pf, 1, 0) == 1;
}

/* Reads one request head (up to the blank line) on the upstream side. */
static void upstream_read_head(struct fx *f, int fd, char *out, size_t cap)
{
	size_t n = 0;
	uint64_t until = clock_mono_ms() + 5000;

	out[0] = '\0';
	while (!strstr(out, "\r\n\r\n") && clock_mono_ms() < until && n + 1 < cap) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		ssize_t r;

		loop_run_once(f->loop, 0);
		if (poll(&pf, 1, 10) != 1)
			continue;
		r = read(fd, out + n, cap - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
		out[n] = '\0';
	}
	assert_non_null(strstr(out, "\r\n\r\n"));
}

static void upstream_write(int fd, const char *s)
{
	assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

static void upstream_reset(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

static const char *GET_A = "GET /a HTTP/1.1\r\nHost: t\r\n\r\n";
static const char *RESP_OK = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

static void owner_init(struct owner *o, struct fx *f, const char *request)
{
	memset(o, 0, sizeof(*o));
	o->us = f->us;
	o->v = &f->v;
	o->ep = f->ep;
	o->request = request;
	o->hash = MIRROR_HASH_INIT;
}

/* ---- tests ---- */

static void test_keepalive_reuse_by_both_owners(void **state)
{
	struct fx *f = *state;
	struct owner ex, sh;
	char head[1024];
	int fd;
	struct upconn *first;

	/* the exchange-like owner: a response, then the connection is pooled */
	owner_init(&ex, f, GET_A);
	assert_int_equal(owner_send(&ex), 0);
	first = ex.u;
	fd = upstream_accept(f);
	upstream_read_head(f, fd, head, sizeof(head));
	assert_non_null(strstr(head, "GET /a HTTP/1.1"));
	upstream_write(fd, RESP_OK);
	run_until(f, &ex.done);
	assert_int_equal(ex.status, 200);
	assert_int_equal(ex.nbody, 5);
	assert_memory_equal(ex.body, "hello", 5);
	assert_true(ex.keep_alive);
	assert_int_equal(f->us->pools[f->ep].n, 1);

	/* the mirror-like owner gets the same connection: no new connect */
	owner_init(&sh, f, "GET /b HTTP/1.1\r\nHost: t\r\n\r\n");
	sh.hashing = 1;
	assert_int_equal(owner_send(&sh), 0);
	assert_ptr_equal(sh.u, first);
	assert_int_equal(f->us->pools[f->ep].n, 0);
	upstream_read_head(f, fd, head, sizeof(head));
	assert_non_null(strstr(head, "GET /b HTTP/1.1"));
	upstream_write(fd, RESP_OK);
	run_until(f, &sh.done);
	assert_int_equal(sh.status, 200);
	assert_int_equal(sh.nbody, 5);
	assert_true(sh.hash == mirror_hash(MIRROR_HASH_INIT, "hello", 5));
	assert_false(upstream_pending(f));
	assert_int_equal(f->us->pools[f->ep].n, 1);
	close(fd);
	run_for(f, 50); /* the pooled connection sees the EOF and closes */
	assert_int_equal(f->us->pools[f->ep].n, 0);
}

static void test_connection_close_is_not_pooled(void **state)
{
	struct fx *f = *state;
	struct owner o;
	char head[1024];
	int fd;

	owner_init(&o, f, GET_A);
	assert_int_equal(owner_send(&o), 0);
	fd = upstream_accept(f);
	upstream_read_head(f, fd, head, sizeof(head));
	upstream_write(fd, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
	run_until(f, &o.done);
	assert_false(o.keep_alive);
	assert_int_equal(f->us->pools[f->ep].n, 0);
	close(fd);
}

/* A pooled connection the upstream closed while idle: the request fails as
 * stale, and the exchange-like owner's retry on a new connection succeeds. */
static void test_stale_pooled_connection_retried(void **state)
{
	struct fx *f = *state;
	struct owner o;
	char head[1024];
	int fd, fd2;

	owner_init(&o, f, GET_A);
	assert_int_equal(owner_send(&o), 0);
	fd = upstream_accept(f);
	upstream_read_head(f, fd, head, sizeof(head));
	upstream_write(fd, RESP_OK);
	run_until(f, &o.done);
	assert_int_equal(f->us->pools[f->ep].n, 1);

	/* the upstream closes it; the pool has not seen the EOF yet */
	close(fd);
	owner_init(&o, f, GET_A);
	o.retry = 1;
	assert_int_equal(owner_send(&o), 0);
	fd2 = upstream_accept(f); /* the retry's new connection */
	upstream_read_head(f, fd2, head, sizeof(head));
	assert_true(o.stale);
	assert_true(o.retried);
	upstream_write(fd2, RESP_OK);
	run_until(f, &o.done);
	assert_false(o.failed);
	assert_int_equal(o.status, 200);
	close(fd2);
}

/* A stale connection reported to an owner that does not retry (the mirror
 * retries, an exchange with a body does not): one fail, stale set. */
static void test_stale_without_retry_fails(void **state)
{
	struct fx *f = *state;
	struct owner o;
	char head[1024];
	int fd;

	owner_init(&o, f, GET_A);
	assert_int_equal(owner_send(&o), 0);
	fd = upstream_accept(f);
	upstream_read_head(f, fd, head, sizeof(head));
	upstream_write(fd, RESP_OK);
	run_until(f, &o.done);
	close(fd);
	owner_init(&o, f, GET_A);
	assert_int_equal(owner_send(&o), 0);
	run_until(f, &o.failed);
	assert_true(o.stale);
	assert_int_equal(o.kind, METRICS_ERR_RESET);
}

static void test_reset_mid_head(void **state)
{
	struct fx *f = *state;
	struct owner o;
	char head[1024];
	int fd;

	owner_init(&o, f, GET_A);
	o.retry = 1;
	assert_int_equal(owner_send(&o), 0);
	fd = upstream_accept(f);
	upstream_read_head(f, fd, head, sizeof(head));
	upstream_write(fd, "HTTP/1.1 200 OK\r\nContent-");
	run_for(f, 30);
	upstream_reset(fd);
	run_until(f, &o.failed);
	assert_int_equal(o.kind, METRICS_ERR_RESET);
	assert_false(o.stale); /* bytes came: never retried */
	assert_false(o.retried);
	assert_int_equal(o.status, 0);
	assert_int_equal(f->us->pools[f->ep].n, 0);
}

static void test_reset_mid_body(void **state)
{
	struct fx *f = *state;
	struct owner o;
	char head[1024];
	int fd;

	owner_init(&o, f, GET_A);
	assert_int_equal(owner_send(&o), 0);
	fd = upstream_accept(f);
	upstream_read_head(f, fd, head, sizeof(head));
	upstream_write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
	run_for(f, 30);
	upstream_reset(fd);
	run_until(f, &o.failed);
	assert_int_equal(o.status, 200); /* the head was reported */
	assert_int_equal(o.nbody, 10);
	assert_int_equal(o.kind, METRICS_ERR_RESET);
	assert_false(o.done);
}

/* EOF (not a reset) before the announced length: a reset too, never "done". */
static void test_eof_mid_body_mirror_owner(void **state)
{
	struct fx *f = *state;
	struct owner o;
	char head[1024];
	int fd;

	owner_init(&o, f, GET_A);
	o.hashing = 1;
	assert_int_equal(owner_send(&o), 0);
	fd = upstream_accept(f);
	upstream_read_head(f, fd, head, sizeof(head));
	upstream_write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
	close(fd);
	run_until(f, &o.failed);
	assert_int_equal(o.kind, METRICS_ERR_RESET);
	assert_false(o.done);
}

/* A close-delimited body ends cleanly at EOF: done, not reusable. */
static void test_close_delimited_body(void **state)
{
	struct fx *f = *state;
	struct owner o;
	char head[1024];
	int fd;

	owner_init(&o, f, GET_A);
	assert_int_equal(owner_send(&o), 0);
	fd = upstream_accept(f);
	upstream_read_head(f, fd, head, sizeof(head));
	upstream_write(fd, "HTTP/1.1 200 OK\r\n\r\nuntil-eof");
	close(fd);
	run_until(f, &o.done);
	assert_false(o.keep_alive);
	assert_int_equal(o.nbody, 9);
	assert_memory_equal(o.body, "until-eof", 9);
}

static void test_response_timeout(void **state)
{
	struct fx *f = *state;
	struct owner o;
	char head[1024];
	int fd, err = 0;
	struct upconn_req rq = {.connect_ms = 2000, .response_ms = 100, .idle_ms = 5000};

	owner_init(&o, f, GET_A);
	o.u = upconn_get(f->us, &f->v, f->ep, &owner_ops, &o, &err);
	assert_non_null(o.u);
	buf_append(upconn_out(o.u), GET_A, strlen(GET_A));
	upconn_start(o.u, &rq);
	fd = upstream_accept(f);
	upstream_read_head(f, fd, head, sizeof(head));
	/* the upstream never answers */
	run_until(f, &o.failed);
	assert_int_equal(o.kind, METRICS_ERR_RESPONSE_TIMEOUT);
	assert_false(o.stale);
	close(fd);
}

/* A paused owner (its client is slow) is not a timeout: reading resumes when asked. */
static void test_paused_owner_not_timed_out(void **state)
{
	struct fx *f = *state;
	struct owner o;
	char head[1024];
	int fd, err = 0;
	struct upconn_req rq = {.connect_ms = 2000, .response_ms = 100, .idle_ms = 5000};

	owner_init(&o, f, GET_A);
	o.pause_body = 1;
	o.u = upconn_get(f->us, &f->v, f->ep, &owner_ops, &o, &err);
	assert_non_null(o.u);
	buf_append(upconn_out(o.u), GET_A, strlen(GET_A));
	upconn_start(o.u, &rq);
	fd = upstream_accept(f);
	upstream_read_head(f, fd, head, sizeof(head));
	upstream_write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel");
	run_for(f, 50);
	upstream_write(fd, "lo");
	run_for(f, 300); /* three response timeouts long */
	assert_false(o.failed);
	assert_false(o.done);
	assert_true(upconn_paused(o.u));
	assert_int_equal(o.nbody, 3);
	o.pause_body = 0;
	upconn_resume(o.u);
	run_until(f, &o.done);
	assert_int_equal(o.nbody, 5);
	assert_memory_equal(o.body, "hello", 5);
	close(fd);
}

static void test_idle_timeout_closes_pooled(void **state)
{
	struct fx *f = *state;
	struct owner o;
	char head[1024];
	int fd, err = 0;
	struct upconn_req rq = {.connect_ms = 2000, .response_ms = 2000, .idle_ms = 50};

	owner_init(&o, f, GET_A);
	o.u = upconn_get(f->us, &f->v, f->ep, &owner_ops, &o, &err);
	assert_non_null(o.u);
	buf_append(upconn_out(o.u), GET_A, strlen(GET_A));
	upconn_start(o.u, &rq);
	fd = upstream_accept(f);
	upstream_read_head(f, fd, head, sizeof(head));
	upstream_write(fd, RESP_OK);
	run_until(f, &o.done);
	assert_int_equal(f->us->pools[f->ep].n, 1);
	run_for(f, 300);
	assert_int_equal(f->us->pools[f->ep].n, 0);
	close(fd);
}

/* The pool keeps at most max_idle_per_ep connections per endpoint. */
static void test_pool_limit(void **state)
{
	struct fx *f = *state;
	struct owner a, b;
	char head[1024];
	int fa, fb;

	f->us->max_idle_per_ep = 1;
	owner_init(&a, f, GET_A);
	owner_init(&b, f, GET_A);
	assert_int_equal(owner_send(&a), 0);
	assert_int_equal(owner_send(&b), 0);
	assert_ptr_not_equal(a.u, b.u);
	fa = upstream_accept(f);
	fb = upstream_accept(f);
	upstream_read_head(f, fa, head, sizeof(head));
	upstream_read_head(f, fb, head, sizeof(head));
	upstream_write(fa, RESP_OK);
	upstream_write(fb, RESP_OK);
	run_until(f, &a.done);
	run_until(f, &b.done);
	assert_true(a.keep_alive && b.keep_alive);
	assert_int_equal(f->us->pools[f->ep].n, 1);
	close(fa);
	close(fb);
}

/* The stopping worker pools nothing. */
static void test_stopping_pools_nothing(void **state)
{
	struct fx *f = *state;
	struct owner o;
	char head[1024];
	int fd;

	owner_init(&o, f, GET_A);
	assert_int_equal(owner_send(&o), 0);
	fd = upstream_accept(f);
	upstream_read_head(f, fd, head, sizeof(head));
	f->us->stopping = 1;
	upstream_write(fd, RESP_OK);
	run_until(f, &o.done);
	assert_int_equal(f->us->pools[f->ep].n, 0);
	close(fd);
}

static void test_connect_refused(void **state)
{
	struct fx *f = *state;
	struct owner o;
	uint16_t port = 0;
	int lfd = listen_any(&port);
	uint32_t dead;
	struct proxy_version v = f->v;

	close(lfd); /* nothing listens on port now */
	dead = endpoint(f->reg, port);
	v.eps = &dead;
	owner_init(&o, f, GET_A);
	o.v = &v;
	o.ep = dead;
	o.retry = 1;
	if (owner_send(&o) != 0)
		return; /* refused at once by connect(): also a correct outcome */
	run_until(f, &o.failed);
	assert_int_equal(o.kind, METRICS_ERR_CONNECT_REFUSED);
	assert_false(o.stale); /* a new connection is never stale */
	assert_false(o.retried);
}

/* An interim 100 Continue is skipped; the owner sees the final head only. */
static void test_interim_response_skipped(void **state)
{
	struct fx *f = *state;
	struct owner o;
	char head[1024];
	int fd;

	owner_init(&o, f, GET_A);
	assert_int_equal(owner_send(&o), 0);
	fd = upstream_accept(f);
	upstream_read_head(f, fd, head, sizeof(head));
	upstream_write(
	    fd, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
	run_until(f, &o.done);
	assert_int_equal(o.status, 201);
	close(fd);
}

/* Garbage instead of a response: a bad response, never retried. */
static void test_bad_response(void **state)
{
	struct fx *f = *state;
	struct owner o;
	char head[1024];
	int fd;

	owner_init(&o, f, GET_A);
	o.retry = 1;
	assert_int_equal(owner_send(&o), 0);
	fd = upstream_accept(f);
	upstream_read_head(f, fd, head, sizeof(head));
	upstream_write(fd, "SSH-2.0-nope\r\n\r\n");
	run_until(f, &o.failed);
	assert_int_equal(o.kind, METRICS_ERR_BAD_RESPONSE);
	assert_false(o.retried);
	close(fd);
}

/* Endpoint choice skips ejected endpoints, and never leaves a version empty. */
static void test_pick_skips_ejected(void **state)
{
	struct fx *f = *state;
	uint16_t p2 = 0, p3 = 0;
	int l2 = listen_any(&p2), l3 = listen_any(&p3);
	uint32_t eps[3] = {f->ep, endpoint(f->reg, p2), endpoint(f->reg, p3)};
	struct proxy_version v = f->v;
	uint64_t now = loop_now_ms(f->loop);
	int seen[3] = {0, 0, 0};

	v.eps = eps;
	v.neps = 3;
	atomic_store(&proxy_registry_get(f->reg, eps[1])->ejected_until_ms, now + 60000);
	for (int i = 0; i < 30; i++) {
		uint32_t ep = upstream_pick(f->us, &v);

		for (int k = 0; k < 3; k++)
			seen[k] += ep == eps[k];
	}
	assert_int_equal(seen[1], 0);
	assert_true(seen[0] > 0 && seen[2] > 0);
	for (int k = 0; k < 3; k++)
		atomic_store(&proxy_registry_get(f->reg, eps[k])->ejected_until_ms, now + 60000);
	assert_true(upstream_pick(f->us, &v) < PROXY_MAX_ENDPOINTS);
	close(l2);
	close(l3);
}

int main(void)
{
	char why[160];
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_keepalive_reuse_by_both_owners, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_connection_close_is_not_pooled, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stale_pooled_connection_retried, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stale_without_retry_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reset_mid_head, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reset_mid_body, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_eof_mid_body_mirror_owner, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_delimited_body, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_response_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_paused_owner_not_timed_out, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_idle_timeout_closes_pooled, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pool_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stopping_pools_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_interim_response_skipped, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_response, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pick_skips_ejected, setup, teardown),
	};

	/* unit/test_upstream_uring where io_uring is unavailable: a skip (77) */
	if (getenv("CANARYD_IO") && strcmp(getenv("CANARYD_IO"), "uring") == 0 &&
	    uring_probe(why, sizeof(why)) != 0) {
		fprintf(stderr, "test_upstream (io_uring) skipped: %s\n", why);
		return 77;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
