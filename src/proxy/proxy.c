/*
 * proxy.c - worker threads, client and upstream connection state machines.
 *
 * One exchange at a time per client connection (pipelined requests wait in
 * the input buffer).  Per request, in the common keep-alive case, the worker
 * makes four syscalls: read the request, write it upstream, read the
 * response, write it to the client.  Sockets are registered once,
 * edge-triggered; a short read means the socket is drained (no EAGAIN read)
 * unless the peer's FIN was signalled (LOOP_RDHUP): then reading goes on to
 * the 0-byte read, since a FIN that arrives with the last data gives no
 * later edge.
 */
#include "proxy/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/snapshot.h"
#include "http/parser.h"
#include "http/server.h"
#include "metrics/stats.h"
#include "proxy/mirror.h"

#define READ_CHUNK      16384
#define CONN_BUF_CAP    (1u << 20)   /* input/output cap per connection */
#define HIGH_WATER      (256u << 10) /* stop reading the other side above this */
#define MAX_IDLE_PER_EP 128
#define MAX_LISTENERS   32
#define HEAD_CAP        (64u << 10) /* a forwarded request head (primary or shadow) */

/* Per worker bounds of shadow traffic and faults (docs/proxy.md). */
#define MIRROR_MAX_PENDING  256  /* mirrored requests alive (building, queued, in flight) */
#define MIRROR_MAX_INFLIGHT 64   /* shadow requests on the wire at once */
#define MIRROR_KEEP_BUF     4096 /* request buffers larger than this are not kept for reuse */
#define MAX_DELAYED         1024 /* requests held by a delay fault at once */

struct worker;
struct cconn;
struct mreq;

struct uconn {
	struct loop_io io;
	struct loop_defer d;
	struct loop_timer timer;
	struct worker *w;
	uint32_t ep;
	struct cconn *client; /* NULL while idle in the pool */
	struct buf in, out;
	struct http_parser parser;
	struct uconn *pool_next, *pool_prev;
	int connecting;
	int closed;
	int reused;    /* served a request before this one */
	int got_bytes; /* any response byte for the current request */
	int paused;    /* response parsing paused: client output full */
	int in_pool;
	int read_blocked;       /* stopped reading with data possibly left in the socket */
	int rdhup;              /* the upstream sent FIN or failed: read until EOF/error */
	struct loop_defer kick; /* resumes reading at the end of the turn (no recursion) */
};

struct wlistener {
	struct loop_io io;
	struct worker *w;
	char addr[300];
	int tindex; /* index in the worker's current table; -1: removed */
	int fd;
};

enum cstate { C_IDLE, C_BODY, C_WAIT };
enum resp_framing { RF_LENGTH, RF_CHUNKED, RF_EOF, RF_NONE };

struct exchange {
	struct proxy_table *table; /* reference held for the request's life */
	const struct proxy_service *svc;
	struct proxy_decision dec;
	uint32_t ep;
	struct uconn *up;
	uint64_t start_us;
	int status;
	int local; /* answered by the proxy itself (no upstream) */
	int local_status;
	enum metrics_err local_kind;
	int req_chunked;
	int req_has_body;
	int req_done;
	int resp_started;
	int head; /* HEAD request: the response has no body */
	enum resp_framing rf;
	int retried;
	int fault;            /* answered by an abort fault */
	int delayed;          /* held by a delay fault: head_copy also collects the body */
	struct mreq *mreq;    /* the shadow copy of this request, or NULL */
	int inflight_series;  /* counted in the worker's in-flight slots ... */
	int inflight;         /* ... while this is set (routing decision to finish) */
	struct buf head_copy; /* the request head, for one retry on a stale pooled conn */
};

struct cconn {
	struct loop_io io;
	struct loop_defer d;
	struct loop_timer timer;
	struct worker *w;
	struct wlistener *wl;
	struct buf in, out;
	struct http_parser parser;
	char peer[INET6_ADDRSTRLEN];
	size_t peer_len;
	enum cstate state;
	struct exchange ex;
	int closed;
	int close_after; /* close once the output is flushed */
	int paused;      /* request parsing paused: upstream output full */
	int version10;
	int read_blocked;        /* stopped reading with data possibly left in the socket */
	int aborting;            /* the upstream failed mid-response: reset, do not flush */
	struct loop_defer kick;  /* resumes reading at the end of the turn (no recursion) */
	struct loop_timer delay; /* a delay fault */
	struct cconn *next, *prev;
};

/* A connection to a shadow endpoint: the response is read and discarded. */
struct mconn {
	struct loop_io io;
	struct loop_defer d;
	struct loop_timer timer;
	struct worker *w;
	uint32_t ep;
	struct mreq *r; /* NULL while idle in the pool */
	struct buf in, out;
	struct http_parser parser;
	struct mconn *pool_next, *pool_prev;
	uint64_t idle_ms;
	int connecting;
	int closed;
	int in_pool;
	int reused;
	int got_bytes;
};

enum mstate { M_BUILDING, M_QUEUED, M_INFLIGHT, M_SHADOW_DONE };

/* One mirrored request: the copy, then the two sides' results. */
struct mreq {
	struct mreq *next, *prev; /* the worker's live list */
	struct mreq *qnext;       /* the worker's queue, or its free list */
	struct worker *w;
	enum mstate state;
	int slot;
	uint32_t ep;
	uint64_t connect_ms, response_ms, idle_ms;
	uint64_t body_cap;
	int compare_body;
	int head_req;
	int has_body; /* sent with a Content-Length (the body was read whole) */
	int retried;
	int primary_done, primary_gone;
	int shadow_failed;
	int primary_status, shadow_status;
	uint64_t primary_us, shadow_us, shadow_start_us;
	uint64_t ph, sh, ph_n, sh_n; /* bounded body hashes */
	struct mconn *conn;
	char method[16];
	char path[MIRROR_PATH_MAX];
	struct buf head, body; /* last: kept (with their storage) on the free list */
};

struct pool {
	struct uconn *head;
	unsigned n;
};

struct worker {
	struct proxy *p;
	unsigned id;
	pthread_t th;
	struct loop *loop;
	struct proxy_table *table;
	struct wlistener ls[MAX_LISTENERS];
	unsigned nls;
	struct pool pools[PROXY_MAX_ENDPOINTS];
	struct mconn *mpools[PROXY_MAX_ENDPOINTS]; /* idle shadow connections */
	unsigned mpool_n[PROXY_MAX_ENDPOINTS];
	struct mreq *mlive;             /* every mirrored request alive */
	struct mreq *mq_head, *mq_tail; /* waiting for an in-flight slot */
	struct mreq *mfree;             /* reusable */
	unsigned nmfree, m_pending, m_inflight;
	unsigned ndelayed;
	uint32_t rr;
	uint64_t rng;
	struct cconn *conns;
	atomic_uint nconns;
	_Atomic uint64_t applied_rev;
	atomic_int bound; /* listeners bound on the first table */
	int stopping;
	struct loop_timer drain_timer; /* bounds requests in flight on draining versions */
	_Atomic int32_t *inflight;     /* [PROXY_MAX_SERIES]: this worker writes, others read */
	char bind_err[256];
};

struct proxy {
	struct snapshot snap;
	struct proxy_registry *reg;
	struct metrics_registry *metrics;
	unsigned nworkers;
	struct worker *workers;
	uint64_t seed;
	struct mirror_stats *mstats;
	_Atomic int32_t *inflight; /* nworkers x PROXY_MAX_SERIES, one region per worker */
	int started;
};

static void client_process(struct cconn *c);
static void client_flush(struct cconn *c);
static void client_close(struct cconn *c);
static void client_abort(struct cconn *c);
static void up_process(struct uconn *u);
static void up_flush(struct uconn *u);
static void up_close(struct uconn *u);
static void exchange_fail(struct cconn *c, int status, enum metrics_err kind);
static void client_kick(struct cconn *c);
static void up_kick(struct uconn *u);
static void mirror_primary_done(struct mreq *r, int status, uint64_t latency_us, int gone);

static uint64_t rng_next(struct worker *w)
{
	/* splitmix64: cheap, good enough for keys and ids, reproducible by seed */
	uint64_t z = (w->rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/*
 * Requests in flight per metrics series, per worker: single writer (this
 * worker), so a relaxed load and store, no locked instruction; the control
 * thread sums the workers (proxy_inflight).  Counted from the routing
 * decision to the end of the exchange (finished, failed or the client gone).
 */
static void inflight_begin(struct cconn *c, int series)
{
	_Atomic int32_t *slot;

	if (series < 0 || series >= PROXY_MAX_SERIES || c->ex.inflight)
		return;
	slot = &c->w->inflight[series];
	atomic_store_explicit(slot, atomic_load_explicit(slot, memory_order_relaxed) + 1,
	                      memory_order_relaxed);
	c->ex.inflight_series = series;
	c->ex.inflight = 1;
}

static void inflight_end(struct cconn *c)
{
	_Atomic int32_t *slot;

	if (!c->ex.inflight)
		return;
	slot = &c->w->inflight[c->ex.inflight_series];
	atomic_store_explicit(slot, atomic_load_explicit(slot, memory_order_relaxed) - 1,
	                      memory_order_relaxed);
	c->ex.inflight = 0;
}

/* ---- small helpers ---- */

static int is_hop_by_hop(struct str name)
{
	static const char *const hop[] = {"connection",
	                                  "keep-alive",
	                                  "proxy-connection",
	                                  "te",
	                                  "trailer",
	                                  "transfer-encoding",
	                                  "upgrade",
	                                  "proxy-authenticate",
	                                  "proxy-authorization"};

	for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
		if (str_caseeq_c(name, hop[i]))
			return 1;
	return 0;
}

/* A header named in the Connection header's tokens is hop-by-hop too. */
static int in_connection_tokens(const struct http_msg *m, struct str name)
{
	for (size_t i = 0; i < m->nheaders; i++)
		if (str_caseeq_c(m->headers[i].name, "connection") &&
		    http_token_list_has(m->headers[i].value, name))
			return 1;
	return 0;
}

/*
 * Appends m's end-to-end headers to o as "Name: value" lines: not the
 * hop-by-hop ones, not those a Connection header names, not those listed in
 * skip (lower-case names).  0, or the first append error (o then holds a
 * partial head the caller must not send).
 */
static int headers_forward(struct buf *o, const struct http_msg *m, const char *const *skip,
                           size_t nskip)
{
	int conn = http_msg_header(m, "connection") != NULL, rc = 0;

	for (size_t i = 0; i < m->nheaders && !rc; i++) {
		const struct http_header *h = &m->headers[i];
		size_t k = 0;

		while (k < nskip && !str_caseeq_c(h->name, skip[k]))
			k++;
		if (k < nskip || is_hop_by_hop(h->name) ||
		    (conn && in_connection_tokens(m, h->name)) ||
		    (m->absolute_form && str_caseeq_c(h->name, "host")))
			continue;
		if (!(rc = buf_append(o, h->name.p, h->name.len)) &&
		    !(rc = buf_append_lit(o, ": ")) &&
		    !(rc = buf_append(o, h->value.p, h->value.len)))
			rc = buf_append_lit(o, "\r\n");
	}
	return rc;
}

/*
 * Appends the request line the upstream gets: always origin-form.  An
 * absolute-form target (RFC 9112 3.2.2) is cut to its path and query and its
 * authority becomes the Host line (headers_forward skips the client's Host
 * then).  0, or the first append error.
 */
static int request_line(struct buf *o, const struct http_msg *m)
{
	int rc = buf_append(o, m->method.p, m->method.len);

	if (!rc)
		rc = buf_append_lit(o, " ");
	if (!m->absolute_form) {
		if (!rc)
			rc = buf_append(o, m->target.p, m->target.len);
		return rc ? rc : buf_append_lit(o, " HTTP/1.1\r\n");
	}
	if (!rc)
		rc = buf_append(o, m->path.p, m->path.len);
	if (!rc && m->query.len && !(rc = buf_append_lit(o, "?")))
		rc = buf_append(o, m->query.p, m->query.len);
	if (!rc)
		rc = buf_append_lit(o, " HTTP/1.1\r\nHost: ");
	if (!rc)
		rc = buf_append(o, m->host.p, m->host.len);
	return rc ? rc : buf_append_lit(o, "\r\n");
}

/* ---- upstream connections ---- */

static void up_free(struct loop *loop, struct loop_defer *d)
{
	struct uconn *u = d->data;

	close(u->io.fd);
	buf_release(&u->in);
	buf_release(&u->out);
	http_parser_release(&u->parser);
	free(u);
}

static void pool_remove(struct worker *w, struct uconn *u)
{
	struct pool *pl = &w->pools[u->ep];

	if (!u->in_pool)
		return;
	if (u->pool_prev)
		u->pool_prev->pool_next = u->pool_next;
	else
		pl->head = u->pool_next;
	if (u->pool_next)
		u->pool_next->pool_prev = u->pool_prev;
	u->pool_next = u->pool_prev = NULL;
	u->in_pool = 0;
	pl->n--;
}

static void up_close(struct uconn *u)
{
	if (u->closed)
		return;
	u->closed = 1;
	pool_remove(u->w, u);
	loop_timer_stop(u->w->loop, &u->timer);
	loop_io_del(u->w->loop, &u->io);
	loop_defer(u->w->loop, &u->d, up_free, u);
}

static void up_release_to_pool(struct uconn *u)
{
	struct worker *w = u->w;
	struct pool *pl = &w->pools[u->ep];
	const struct proxy_service *svc = u->client ? u->client->ex.svc : NULL;
	uint64_t idle = svc ? svc->timeouts.idle_ms : 60000;

	u->client = NULL;
	if (pl->n >= MAX_IDLE_PER_EP || w->stopping || buf_used(&u->in)) {
		up_close(u);
		return;
	}
	http_parser_next(&u->parser);
	http_parser_shrink(&u->parser);
	buf_release(&u->in);
	buf_release(&u->out);
	u->reused = 1;
	u->in_pool = 1;
	u->pool_prev = NULL;
	u->pool_next = pl->head;
	if (pl->head)
		pl->head->pool_prev = u;
	pl->head = u;
	pl->n++;
	loop_timer_start(w->loop, &u->timer, idle);
}

static void pool_close_all(struct worker *w, uint32_t ep)
{
	while (w->pools[ep].head)
		up_close(w->pools[ep].head);
}

/* Response parser callbacks: they write the client's output. */
static int up_on_headers(struct http_parser *p, struct http_msg *m, void *data)
{
	static const char *const resp_skip[] = {"content-length"};
	struct uconn *u = data;
	struct cconn *c = u->client;
	struct exchange *ex;
	struct buf *o;
	const struct str *cl;

	if (!c)
		return 502;
	ex = &c->ex;
	if (m->status < 200)
		return 0; /* interim response: dropped, the final one follows */
	/* from here the response timeout bounds the wait between body reads */
	loop_timer_start(u->w->loop, &u->timer, ex->svc->timeouts.response_ms);
	ex->status = m->status;
	ex->resp_started = 1;
	o = &c->out;
	buf_append_lit(o, "HTTP/1.1 ");
	buf_append_u64(o, (unsigned)m->status);
	buf_append_lit(o, " ");
	buf_append(o, m->reason.p, m->reason.len);
	buf_append_lit(o, "\r\n");
	headers_forward(o, m, resp_skip, sizeof(resp_skip) / sizeof(resp_skip[0]));
	if (m->no_body || ex->head) {
		ex->rf = RF_NONE;
		cl = http_msg_header(m, "content-length");
		if (cl && ex->head) {
			buf_append_lit(o, "Content-Length: ");
			buf_append(o, cl->p, cl->len);
			buf_append_lit(o, "\r\n");
		}
	} else if (m->has_content_length) {
		ex->rf = RF_LENGTH;
		buf_append_lit(o, "Content-Length: ");
		buf_append_u64(o, (unsigned long long)m->content_length);
		buf_append_lit(o, "\r\n");
	} else if (!c->version10) {
		ex->rf = RF_CHUNKED;
		buf_append_lit(o, "Transfer-Encoding: chunked\r\n");
	} else {
		ex->rf = RF_EOF;
		c->close_after = 1;
	}
	if (ex->svc->expose_cohort) {
		buf_append_lit(o, "X-Canary-Cohort: ");
		buf_append_str(o, cohort_name(ex->dec.cohort));
		buf_append_lit(o, "\r\n");
	}
	if (ex->dec.set_cookie)
		buf_printf(o, "Set-Cookie: %s=%s; Path=/; HttpOnly\r\n", ex->svc->sticky.name,
		           ex->dec.cookie_key);
	/* answered before the request body ended: the rest of the body has
	 * nowhere to go, so the connection ends with this response */
	if (!ex->req_done)
		c->close_after = 1;
	if (c->close_after || c->w->stopping)
		buf_append_lit(o, "Connection: close\r\n");
	else if (c->version10)
		buf_append_lit(o, "Connection: keep-alive\r\n");
	buf_append_lit(o, "\r\n");
	return 0;
}

static int up_on_body(struct http_parser *p, const char *at, size_t len, void *data)
{
	struct uconn *u = data;
	struct cconn *c = u->client;
	int rc = 0;

	if (!c || c->ex.rf == RF_NONE)
		return 0;
	if (c->ex.mreq && c->ex.mreq->compare_body && c->ex.mreq->ph_n < c->ex.mreq->body_cap) {
		struct mreq *r = c->ex.mreq;
		size_t n = len < r->body_cap - r->ph_n ? len : (size_t)(r->body_cap - r->ph_n);

		r->ph = mirror_hash(r->ph, at, n);
		r->ph_n += n;
	}
	if (c->ex.rf == RF_CHUNKED) {
		rc = buf_append_hex(&c->out, len);
		if (!rc)
			rc = buf_append_lit(&c->out, "\r\n");
	}
	if (!rc)
		rc = buf_append(&c->out, at, len);
	if (!rc && c->ex.rf == RF_CHUNKED)
		rc = buf_append_lit(&c->out, "\r\n");
	if (rc)
		return 502;
	return buf_used(&c->out) > HIGH_WATER ? HTTP_PARSER_PAUSE : 0;
}

static void outlier_note(struct worker *w, const struct exchange *ex, int failed)
{
	struct proxy_endpoint *e = proxy_registry_get(w->p->reg, ex->ep);
	const struct config_outlier *oc = &ex->svc->outlier;
	const struct proxy_version *v = &ex->svc->versions[ex->dec.version];
	unsigned n;

	atomic_fetch_add_explicit(&e->requests, 1, memory_order_relaxed);
	if (!failed) {
		if (atomic_load_explicit(&e->consecutive_fail, memory_order_relaxed))
			atomic_store_explicit(&e->consecutive_fail, 0, memory_order_relaxed);
		return;
	}
	atomic_fetch_add_explicit(&e->failures, 1, memory_order_relaxed);
	n = atomic_fetch_add_explicit(&e->consecutive_fail, 1, memory_order_relaxed) + 1;
	if (oc->consecutive_5xx == 0 || n < oc->consecutive_5xx || v->neps < 2)
		return;
	{
		/* never eject past the cap, never the last endpoint standing */
		uint64_t now = loop_now_ms(w->loop);
		uint32_t ejected = 0, max;

		for (uint32_t i = 0; i < v->neps; i++)
			if (atomic_load(
			        &proxy_registry_get(w->p->reg, v->eps[i])->ejected_until_ms) > now)
				ejected++;
		max = (uint32_t)(((uint64_t)v->neps * oc->max_ejected_percent) / 100000);
		if (ejected + 1 > max || ejected + 1 >= v->neps)
			return;
		n = atomic_fetch_add(&e->ejections, 1) + 1;
		atomic_store(&e->ejected_until_ms, now + oc->base_ejection_ms * n);
		atomic_store(&e->consecutive_fail, 0);
		log_warn("endpoint ejected", "endpoint", e->name, "service", ex->svc->name, NULL);
	}
}

/* Back to a fresh exchange (the table reference dropped, head_copy empty
 * with its cap restored) for the connection's next request. */
static void exchange_reset(struct cconn *c)
{
	struct exchange *ex = &c->ex;

	inflight_end(c);
	snap_obj_unref(ex->table ? &ex->table->obj : NULL);
	buf_release(&ex->head_copy);
	memset(ex, 0, sizeof(*ex));
	buf_init(&ex->head_copy, HEAD_CAP);
	c->state = C_IDLE;
}

/* The exchange is over (response fully queued or failed): account and reset. */
static void exchange_finish(struct cconn *c, enum metrics_err kind)
{
	struct worker *w = c->w;
	struct exchange *ex = &c->ex;
	int status = ex->local ? ex->local_status : ex->status;

	if (ex->svc) {
		uint64_t lat = clock_mono_us() - ex->start_us;

		if (w->p->metrics) {
			int series = ex->svc->versions[ex->dec.version].series;

			metrics_record(w->p->metrics, w->id, series, ex->dec.cohort, status, lat,
			               kind);
			/* the split guard counts only what the bucket split placed */
			if (ex->dec.bucket != UINT32_MAX)
				metrics_split_record(w->p->metrics, w->id, series, ex->dec.cohort,
				                     ex->dec.key_hash);
		}
		if (!ex->fault && (!ex->local || kind != METRICS_ERR_NO_ENDPOINT))
			outlier_note(w, ex, status >= 500 || kind != METRICS_ERR_NONE);
		if (ex->mreq)
			mirror_primary_done(ex->mreq, status, lat, 0);
		ex->mreq = NULL;
	}
	if (ex->delayed) {
		loop_timer_stop(w->loop, &c->delay);
		w->ndelayed--;
	}
	exchange_reset(c);
	if (c->aborting) {
		client_abort(c);
		return;
	}
	if (c->close_after || w->stopping) {
		c->close_after = 1;
		client_flush(c);
		return;
	}
	http_parser_next(&c->parser);
	loop_timer_start(w->loop, &c->timer, w->table ? w->table->idle_timeout_ms : 60000);
	client_flush(c);
	if (c->closed)
		return;
	if (c->read_blocked)
		client_kick(c);
	else
		client_process(c);
}

static int up_on_complete(struct http_parser *p, struct http_msg *m, void *data)
{
	struct uconn *u = data;
	struct cconn *c = u->client;

	if (!c)
		return 0;
	if (m->status < 200 && m->status != 101)
		return 0;
	if (c->ex.rf == RF_CHUNKED)
		buf_append_lit(&c->out, "0\r\n\r\n");
	return 0;
}

static const struct http_parser_cbs up_cbs = {up_on_headers, up_on_body, up_on_complete};

static void up_response_timeout(struct loop *loop, struct loop_timer *t)
{
	struct uconn *u = t->data;
	struct cconn *c = u->client;

	if (!c) {
		up_close(u);
		return;
	}
	if (u->paused) {
		/* not reading because the client is slow: not the upstream's fault */
		loop_timer_start(loop, t, c->ex.svc->timeouts.response_ms);
		return;
	}
	exchange_fail(c, 504,
	              u->connecting ? METRICS_ERR_CONNECT_TIMEOUT : METRICS_ERR_RESPONSE_TIMEOUT);
}

/* The upstream side failed before or during the response. */
static void up_failed(struct uconn *u, enum metrics_err kind)
{
	struct cconn *c = u->client;

	if (!c) {
		up_close(u);
		return;
	}
	exchange_fail(c, 502, kind);
}

/*
 * 1 if the version this exchange went to is draining in the worker's current
 * table: its connection must not go back to the pool.  Only looked up when
 * the table changed while the request was in flight.
 */
static int version_draining(const struct cconn *c)
{
	const struct exchange *ex = &c->ex;
	const struct proxy_service *svc;
	int v;

	if (ex->table == c->w->table)
		return ex->svc->versions[ex->dec.version].draining;
	svc = c->w->table ? proxy_table_service(c->w->table, ex->svc->name) : NULL;
	if (!svc)
		return 1; /* the service is gone */
	v = proxy_service_version(svc, ex->svc->versions[ex->dec.version].name);
	return v < 0 || svc->versions[v].draining;
}

static void up_process(struct uconn *u)
{
	/* the first feed may be empty: a response whose last body bytes came
	 * before a pause completes only on the parser's next run */
	for (int first = 1; !u->closed && u->client && !u->paused && (first || buf_used(&u->in));
	     first = 0) {
		struct cconn *c = u->client;
		size_t used = 0;
		int rc = http_parser_feed(&u->parser, buf_used(&u->in) ? buf_head(&u->in) : "",
		                          buf_used(&u->in), &used);

		buf_consume(&u->in, used);
		if (rc == HTTP_PARSE_AGAIN)
			break;
		if (rc == HTTP_PARSE_PAUSED) {
			u->paused = 1;
			break;
		}
		if (rc == HTTP_PARSE_ERROR) {
			up_failed(u, METRICS_ERR_BAD_RESPONSE);
			return;
		}
		/* DONE */
		if (http_parser_msg(&u->parser)->status < 200 &&
		    http_parser_msg(&u->parser)->status != 101) {
			http_parser_next(&u->parser);
			continue;
		}
		{
			int keep = http_parser_msg(&u->parser)->keep_alive && c->ex.req_done &&
			           !version_draining(c);

			c->ex.up = NULL;
			/* answered before the request body ended: the rest of the body
			 * has nowhere to go, so this connection ends with the response */
			if (!c->ex.req_done)
				c->close_after = 1;
			if (keep)
				up_release_to_pool(u);
			else
				up_close(u);
			exchange_finish(c, METRICS_ERR_NONE);
		}
		return;
	}
	if (u->client && !u->closed)
		client_flush(u->client);
}

/* Response body activity restarts the response timeout (once per read turn). */
static void up_body_activity(struct uconn *u)
{
	if (u->client && u->client->ex.resp_started)
		loop_timer_start(u->w->loop, &u->timer, u->client->ex.svc->timeouts.response_ms);
}

static void up_read(struct uconn *u)
{
	int got = 0; /* bytes arrived this turn: one timer restart, not one per read */

	for (;;) {
		char *p;
		ssize_t n;

		if (u->paused || buf_used(&u->in) > HIGH_WATER) {
			/* the client is slower: leave the rest in the kernel (TCP backpressure) */
			u->read_blocked = 1;
			break;
		}
		p = buf_reserve(&u->in, READ_CHUNK);

		if (!p) {
			up_failed(u, METRICS_ERR_BAD_RESPONSE);
			return;
		}
		n = read(u->io.fd, p, READ_CHUNK);
		if (n > 0) {
			buf_commit(&u->in, (size_t)n);
			u->got_bytes = 1;
			got = 1;
			if ((size_t)n < READ_CHUNK && !u->rdhup)
				break; /* drained: no EAGAIN round trip */
			continue;
		}
		if (n == -1 && errno == EAGAIN)
			break;
		if (n == -1 && errno == EINTR)
			continue;
		/* EOF or error */
		if (got)
			up_body_activity(u);
		if (u->client) {
			int saved = errno;

			up_process(u);
			if (u->closed || !u->client)
				return;
			/* the client is behind (paused, or resumed with a kick
			 * queued): the rest is parsed once it catches up, and this
			 * EOF (or error) is read again then */
			if (u->paused || buf_used(&u->in))
				return;
			if (n == 0 && http_parser_finish(&u->parser) == HTTP_PARSE_DONE) {
				struct cconn *c = u->client;

				c->ex.up = NULL;
				up_close(u);
				exchange_finish(c, METRICS_ERR_NONE);
				return;
			}
			up_failed(u, n == 0 || saved == ECONNRESET || u->got_bytes
			                 ? METRICS_ERR_RESET
			                 : METRICS_ERR_CONNECT_REFUSED);
		} else {
			up_close(u);
		}
		return;
	}
	if (got)
		up_body_activity(u);
	up_process(u);
	if (!u->closed && u->read_blocked && !u->paused && buf_used(&u->in) <= HIGH_WATER)
		up_kick(u);
}

static void up_flush(struct uconn *u)
{
	struct cconn *c = u->client;

	while (buf_used(&u->out)) {
		ssize_t n = write(u->io.fd, buf_head(&u->out), buf_used(&u->out));

		if (n == -1) {
			if (errno == EAGAIN)
				return;
			if (errno == EINTR)
				continue;
			up_failed(u,
			          u->connecting ? METRICS_ERR_CONNECT_REFUSED : METRICS_ERR_RESET);
			return;
		}
		u->connecting = 0;
		buf_consume(&u->out, (size_t)n);
		/* an upload in progress is activity: the response timeout counts
		 * from the last body bytes sent, not from the request head */
		if (c && c->ex.req_has_body && !c->ex.resp_started)
			loop_timer_start(u->w->loop, &u->timer, c->ex.svc->timeouts.response_ms);
	}
	/* the upstream took everything: the client may send more body */
	if (c && c->paused) {
		c->paused = 0;
		http_parser_resume(&c->parser);
		client_kick(c);
	}
}

static void up_cb(struct loop *loop, struct loop_io *io, uint32_t ev)
{
	struct uconn *u = io->data;

	if (ev & (LOOP_RDHUP | LOOP_ERROR))
		u->rdhup = 1; /* no later edge will come: read on to the EOF */
	if (u->connecting && (ev & (LOOP_WRITE | LOOP_ERROR))) {
		int err = 0;
		socklen_t l = sizeof(err);

		getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err) {
			up_failed(u, err == ETIMEDOUT ? METRICS_ERR_CONNECT_TIMEOUT
			                              : METRICS_ERR_CONNECT_REFUSED);
			return;
		}
		u->connecting = 0;
		if (u->client) {
			const struct proxy_service *svc = u->client->ex.svc;

			loop_timer_start(loop, &u->timer, svc->timeouts.response_ms);
		}
	}
	if ((ev & LOOP_WRITE) && !u->closed)
		up_flush(u);
	if ((ev & LOOP_READ) && !u->closed)
		up_read(u);
}

/* A non-blocking TCP connect to e (TCP_NODELAY): the fd, or -1 with *err. */
static int connect_nb(const struct proxy_endpoint *e, int *err)
{
	int fd = socket(e->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	if (fd == -1) {
		*err = errno;
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&e->sa, e->salen) == -1 && errno != EINPROGRESS) {
		*err = errno;
		close(fd);
		return -1;
	}
	return fd;
}

static struct uconn *up_connect(struct worker *w, uint32_t ep, int *err)
{
	struct proxy_endpoint *e = proxy_registry_get(w->p->reg, ep);
	struct uconn *u;
	int fd;

	fd = connect_nb(e, err);
	if (fd == -1)
		return NULL;
	u = calloc(1, sizeof(*u));
	if (!u) {
		*err = ENOMEM;
		close(fd);
		return NULL;
	}
	u->w = w;
	u->ep = ep;
	u->connecting = 1;
	buf_init(&u->in, CONN_BUF_CAP);
	buf_init(&u->out, CONN_BUF_CAP);
	http_parser_init(&u->parser, HTTP_PARSE_RESPONSE, NULL, &up_cbs, u);
	loop_timer_init(&u->timer, up_response_timeout, u);
	if (loop_io_add(w->loop, &u->io, fd, up_cb, u) != 0) {
		*err = errno;
		close(fd);
		http_parser_release(&u->parser);
		free(u);
		return NULL;
	}
	return u;
}

/* An idle pooled connection to ep, or a new one. */
static struct uconn *up_get(struct worker *w, uint32_t ep, int *err)
{
	struct pool *pl = &w->pools[ep];
	struct uconn *u = pl->head;

	if (u) {
		pool_remove(w, u);
		loop_timer_stop(w->loop, &u->timer);
		u->got_bytes = 0;
		u->paused = 0;
		return u;
	}
	return up_connect(w, ep, err);
}

/* ---- shadow (mirror) requests: fire-and-forget on their own connections ---- */

static void mreq_shadow_done(struct mreq *r, int failed);
static int mreq_send(struct mreq *r);

static void mconn_free(struct loop *loop, struct loop_defer *d)
{
	struct mconn *m = d->data;

	close(m->io.fd);
	buf_release(&m->in);
	buf_release(&m->out);
	http_parser_release(&m->parser);
	free(m);
}

static void mpool_remove(struct mconn *m)
{
	struct worker *w = m->w;

	if (!m->in_pool)
		return;
	if (m->pool_prev)
		m->pool_prev->pool_next = m->pool_next;
	else
		w->mpools[m->ep] = m->pool_next;
	if (m->pool_next)
		m->pool_next->pool_prev = m->pool_prev;
	m->pool_next = m->pool_prev = NULL;
	m->in_pool = 0;
	w->mpool_n[m->ep]--;
}

static void mconn_close(struct mconn *m)
{
	if (m->closed)
		return;
	m->closed = 1;
	mpool_remove(m);
	loop_timer_stop(m->w->loop, &m->timer);
	loop_io_del(m->w->loop, &m->io);
	loop_defer(m->w->loop, &m->d, mconn_free, m);
}

static void mconn_release(struct mconn *m)
{
	struct worker *w = m->w;

	m->r = NULL;
	if (w->mpool_n[m->ep] >= MAX_IDLE_PER_EP || w->stopping || buf_used(&m->in)) {
		mconn_close(m);
		return;
	}
	http_parser_next(&m->parser);
	http_parser_shrink(&m->parser);
	buf_release(&m->in);
	buf_release(&m->out);
	m->reused = 1;
	m->in_pool = 1;
	m->pool_prev = NULL;
	m->pool_next = w->mpools[m->ep];
	if (m->pool_next)
		m->pool_next->pool_prev = m;
	w->mpools[m->ep] = m;
	w->mpool_n[m->ep]++;
	loop_timer_start(w->loop, &m->timer, m->idle_ms);
}

/* The shadow failed: retry once on a new connection when a pooled one had
 * been closed by the upstream, else it is a shadow_error. */
static void mconn_fail(struct mconn *m)
{
	struct mreq *r = m->r;
	int stale = m->reused && !m->got_bytes;

	m->r = NULL;
	mconn_close(m);
	if (!r)
		return;
	r->conn = NULL;
	if (stale && !r->retried) {
		r->retried = 1;
		if (mreq_send(r) == 0)
			return;
	}
	mreq_shadow_done(r, 1);
}

static int m_on_headers(struct http_parser *p, struct http_msg *msg, void *data)
{
	struct mconn *m = data;

	if (!m->r)
		return 502;
	if (msg->status >= 200)
		m->r->shadow_status = msg->status;
	return 0;
}

static int m_on_body(struct http_parser *p, const char *at, size_t len, void *data)
{
	struct mconn *m = data;
	struct mreq *r = m->r;

	if (r && r->compare_body && r->sh_n < r->body_cap) {
		size_t n = len < r->body_cap - r->sh_n ? len : (size_t)(r->body_cap - r->sh_n);

		r->sh = mirror_hash(r->sh, at, n);
		r->sh_n += n;
	}
	return 0;
}

static const struct http_parser_cbs m_cbs = {m_on_headers, m_on_body, NULL};

static void mconn_process(struct mconn *m)
{
	while (!m->closed && m->r && buf_used(&m->in)) {
		size_t used = 0;
		int rc = http_parser_feed(&m->parser, buf_head(&m->in), buf_used(&m->in), &used);
		struct mreq *r;
		int keep;

		buf_consume(&m->in, used);
		if (rc == HTTP_PARSE_AGAIN || rc == HTTP_PARSE_PAUSED)
			break;
		if (rc == HTTP_PARSE_ERROR) {
			mconn_fail(m);
			return;
		}
		if (http_parser_msg(&m->parser)->status < 200) {
			http_parser_next(&m->parser);
			continue;
		}
		keep = http_parser_msg(&m->parser)->keep_alive;
		r = m->r;
		r->conn = NULL;
		if (keep)
			mconn_release(m);
		else
			mconn_close(m);
		mreq_shadow_done(r, 0);
		return;
	}
}

static void mconn_read(struct mconn *m)
{
	for (;;) {
		char *p = buf_reserve(&m->in, READ_CHUNK);
		ssize_t n;

		if (!p) {
			mconn_fail(m);
			return;
		}
		n = read(m->io.fd, p, READ_CHUNK);
		if (n > 0) {
			buf_commit(&m->in, (size_t)n);
			m->got_bytes = 1;
			mconn_process(m); /* the body is hashed and dropped as it comes */
			if (m->closed || !m->r)
				return;
			if ((size_t)n < READ_CHUNK)
				return;
			continue;
		}
		if (n == -1 && errno == EAGAIN)
			return;
		if (n == -1 && errno == EINTR)
			continue;
		if (!m->r) {
			mconn_close(m);
			return;
		}
		if (n == 0 && http_parser_finish(&m->parser) == HTTP_PARSE_DONE) {
			struct mreq *r = m->r;

			m->r = NULL;
			r->conn = NULL;
			mconn_close(m);
			mreq_shadow_done(r, 0);
			return;
		}
		mconn_fail(m);
		return;
	}
}

static void mconn_flush(struct mconn *m)
{
	while (buf_used(&m->out)) {
		ssize_t n = write(m->io.fd, buf_head(&m->out), buf_used(&m->out));

		if (n == -1) {
			if (errno == EAGAIN)
				return;
			if (errno == EINTR)
				continue;
			mconn_fail(m);
			return;
		}
		m->connecting = 0;
		buf_consume(&m->out, (size_t)n);
	}
}

static void mconn_cb(struct loop *loop, struct loop_io *io, uint32_t ev)
{
	struct mconn *m = io->data;

	if (m->connecting && (ev & (LOOP_WRITE | LOOP_ERROR))) {
		int err = 0;
		socklen_t l = sizeof(err);

		getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err) {
			mconn_fail(m);
			return;
		}
		m->connecting = 0;
		if (m->r)
			loop_timer_start(loop, &m->timer, m->r->response_ms);
	}
	if ((ev & LOOP_WRITE) && !m->closed)
		mconn_flush(m);
	if ((ev & LOOP_READ) && !m->closed)
		mconn_read(m);
}

static void mconn_timeout(struct loop *loop, struct loop_timer *t)
{
	struct mconn *m = t->data;

	if (!m->r) {
		mconn_close(m); /* idle in the pool */
		return;
	}
	m->got_bytes = 1; /* a timeout is not a stale connection: no retry */
	mconn_fail(m);
}

static struct mconn *mconn_get(struct worker *w, uint32_t ep)
{
	struct proxy_endpoint *e = proxy_registry_get(w->p->reg, ep);
	struct mconn *m = w->mpools[ep];
	int fd, err;

	if (m) {
		mpool_remove(m);
		loop_timer_stop(w->loop, &m->timer);
		m->got_bytes = 0;
		return m;
	}
	fd = connect_nb(e, &err);
	if (fd == -1)
		return NULL;
	m = calloc(1, sizeof(*m));
	if (!m) {
		close(fd);
		return NULL;
	}
	m->w = w;
	m->ep = ep;
	m->connecting = 1;
	buf_init(&m->in, CONN_BUF_CAP);
	buf_init(&m->out, CONN_BUF_CAP);
	http_parser_init(&m->parser, HTTP_PARSE_RESPONSE, NULL, &m_cbs, m);
	loop_timer_init(&m->timer, mconn_timeout, m);
	if (loop_io_add(w->loop, &m->io, fd, mconn_cb, m) != 0) {
		close(fd);
		http_parser_release(&m->parser);
		free(m);
		return NULL;
	}
	return m;
}

/* Puts r on a shadow connection.  0, or -1 (no connection: r is untouched). */
static int mreq_send(struct mreq *r)
{
	struct worker *w = r->w;
	struct mconn *m = mconn_get(w, r->ep);
	int rc;

	if (!m)
		return -1;
	m->idle_ms = r->idle_ms;
	rc = buf_append(&m->out, buf_head(&r->head), buf_used(&r->head));
	if (!rc && r->has_body) {
		if (!(rc = buf_append_lit(&m->out, "Content-Length: ")) &&
		    !(rc = buf_append_u64(&m->out, buf_used(&r->body))))
			rc = buf_append_lit(&m->out, "\r\n");
	}
	if (!rc)
		rc = buf_append_lit(&m->out, "\r\n");
	if (!rc)
		rc = buf_append(&m->out, buf_head(&r->body), buf_used(&r->body));
	if (rc) {
		mconn_close(m);
		return -1;
	}
	m->r = r;
	r->conn = m;
	if (r->head_req)
		http_parser_expect_no_body(&m->parser);
	if (!m->connecting) {
		loop_timer_start(w->loop, &m->timer, r->response_ms);
		mconn_flush(m);
	} else {
		loop_timer_start(w->loop, &m->timer, r->connect_ms);
	}
	return 0;
}

static void mreq_free(struct mreq *r)
{
	struct worker *w = r->w;

	if (r->conn) {
		r->conn->r = NULL;
		mconn_close(r->conn);
		r->conn = NULL;
	}
	if (r->prev)
		r->prev->next = r->next;
	else
		w->mlive = r->next;
	if (r->next)
		r->next->prev = r->prev;
	w->m_pending--;
	if (w->nmfree >= MIRROR_MAX_PENDING) {
		buf_release(&r->head);
		buf_release(&r->body);
		free(r);
		return;
	}
	/* kept for the next mirrored request: no allocation in the steady state */
	if (r->head.size > MIRROR_KEEP_BUF)
		buf_release(&r->head);
	if (r->body.size > MIRROR_KEEP_BUF)
		buf_release(&r->body);
	buf_reset(&r->head);
	buf_reset(&r->body);
	r->qnext = w->mfree;
	w->mfree = r;
	w->nmfree++;
}

/* Both sides are over: compare and count, then free r. */
static void mreq_maybe_finish(struct mreq *r)
{
	struct worker *w = r->w;
	struct mirror_mismatch mm;

	if (r->state != M_SHADOW_DONE || !r->primary_done)
		return;
	if (!r->primary_gone) {
		mm.result = mirror_classify(r->primary_status, r->shadow_status, r->shadow_failed,
		                            r->compare_body, r->ph, r->sh);
		mm.primary_status = r->primary_status;
		mm.shadow_status = r->shadow_failed ? 0 : r->shadow_status;
		mm.primary_us = r->primary_us;
		mm.shadow_us = r->shadow_us;
		if (mm.result != MIRROR_MATCHED) {
			mm.time_ms = (int64_t)loop_wall_ms(w->loop);
			memcpy(mm.method, r->method, sizeof(mm.method));
			memcpy(mm.path, r->path, sizeof(mm.path));
		}
		mirror_stats_compared(w->p->mstats, r->slot, w->id, &mm);
	}
	mreq_free(r);
}

/* Starts queued shadow requests while in-flight slots are free. */
static void mirror_pump(struct worker *w)
{
	while (w->mq_head && w->m_inflight < MIRROR_MAX_INFLIGHT) {
		struct mreq *r = w->mq_head;

		w->mq_head = r->qnext;
		if (!w->mq_head)
			w->mq_tail = NULL;
		r->qnext = NULL;
		r->state = M_INFLIGHT;
		r->shadow_start_us = clock_mono_us();
		w->m_inflight++;
		if (mreq_send(r) != 0) {
			w->m_inflight--;
			r->state = M_SHADOW_DONE;
			r->shadow_failed = 1;
			mreq_maybe_finish(r);
		}
	}
}

static void mreq_shadow_done(struct mreq *r, int failed)
{
	struct worker *w = r->w;

	r->shadow_failed = failed || r->shadow_status == 0;
	r->shadow_us = clock_mono_us() - r->shadow_start_us;
	r->state = M_SHADOW_DONE;
	w->m_inflight--;
	mreq_maybe_finish(r);
	mirror_pump(w);
}

/* The request was read completely: queue its copy for the shadow. */
static void mirror_dispatch(struct mreq *r)
{
	struct worker *w = r->w;

	r->state = M_QUEUED;
	r->qnext = NULL;
	mirror_stats_sent(w->p->mstats, r->slot, w->id);
	if (w->mq_tail)
		w->mq_tail->qnext = r;
	else
		w->mq_head = r;
	w->mq_tail = r;
	mirror_pump(w);
}

/* The primary is over (status 0 and gone: the client left). */
static void mirror_primary_done(struct mreq *r, int status, uint64_t latency_us, int gone)
{
	if (r->state == M_BUILDING) {
		/* answered (or abandoned) before the request was read: nothing was sent */
		mreq_free(r);
		return;
	}
	r->primary_done = 1;
	r->primary_gone = gone;
	r->primary_status = status;
	r->primary_us = latency_us;
	mreq_maybe_finish(r);
}

/* Closes every shadow connection and frees every mirrored request (worker end). */
static void mirror_shutdown(struct worker *w)
{
	w->mq_head = w->mq_tail = NULL;
	while (w->mlive)
		mreq_free(w->mlive);
	for (uint32_t e = 0; e < PROXY_MAX_ENDPOINTS; e++)
		while (w->mpools[e])
			mconn_close(w->mpools[e]);
	while (w->mfree) {
		struct mreq *r = w->mfree;

		w->mfree = r->qnext;
		buf_release(&r->head);
		buf_release(&r->body);
		free(r);
	}
	w->nmfree = 0;
}

/* ---- client connections ---- */

static void client_free(struct loop *loop, struct loop_defer *d)
{
	struct cconn *c = d->data;

	close(c->io.fd);
	buf_release(&c->in);
	buf_release(&c->out);
	buf_release(&c->ex.head_copy);
	http_parser_release(&c->parser);
	free(c);
}

static void client_close(struct cconn *c)
{
	struct worker *w = c->w;

	if (c->closed)
		return;
	c->closed = 1;
	inflight_end(c);
	if (c->ex.up) {
		/* the client left mid-exchange: the upstream conn cannot be reused */
		c->ex.up->client = NULL;
		up_close(c->ex.up);
		c->ex.up = NULL;
	}
	if (c->ex.mreq)
		mirror_primary_done(c->ex.mreq, 0, 0, 1);
	c->ex.mreq = NULL;
	if (c->ex.delayed) {
		loop_timer_stop(w->loop, &c->delay);
		w->ndelayed--;
		c->ex.delayed = 0;
	}
	if (c->ex.table)
		snap_obj_unref(&c->ex.table->obj);
	c->ex.table = NULL;
	loop_timer_stop(w->loop, &c->timer);
	loop_io_del(w->loop, &c->io);
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	atomic_fetch_sub(&w->nconns, 1);
	loop_defer(w->loop, &c->d, client_free, c);
	if (w->stopping && atomic_load(&w->nconns) == 0)
		loop_stop(w->loop);
}

/* Closes with a reset (SO_LINGER 0), dropping queued output: for a client
 * whose response was cut short, which a FIN could make look complete. */
static void client_abort(struct cconn *c)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};

	if (c->closed)
		return;
	setsockopt(c->io.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	client_close(c);
}

static void client_flush(struct cconn *c)
{
	while (buf_used(&c->out)) {
		ssize_t n = write(c->io.fd, buf_head(&c->out), buf_used(&c->out));

		if (n == -1) {
			if (errno == EAGAIN)
				return;
			if (errno == EINTR)
				continue;
			client_close(c);
			return;
		}
		buf_consume(&c->out, (size_t)n);
	}
	if (c->state == C_IDLE && c->close_after) {
		client_close(c);
		return;
	}
	if (c->state == C_IDLE && !buf_used(&c->in)) {
		/* idle keep-alive connection: hold no buffers */
		buf_release(&c->out);
		buf_release(&c->in);
	}
	if (c->ex.up && c->ex.up->paused) {
		struct uconn *u = c->ex.up;

		u->paused = 0;
		http_parser_resume(&u->parser);
		up_kick(u);
	}
}

/* A response made by the proxy (404, 502, 503, 504, parse errors). */
static void client_local_response(struct cconn *c, int status, const char *msg)
{
	char body[512];
	int n = snprintf(body, sizeof(body), "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}\n",
	                 http_status_code_name(status), msg);

	if (n < 0 || (size_t)n >= sizeof(body))
		n = 0;
	buf_printf(&c->out,
	           "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
	           "%s\r\n%.*s",
	           status, http_status_text(status), c->ex.head ? 0 : n,
	           c->close_after || c->w->stopping ? "Connection: close\r\n" : "",
	           c->ex.head ? 0 : n, body);
}

static const char *local_message(int status, enum metrics_err kind)
{
	switch (kind) {
	case METRICS_ERR_CONNECT_REFUSED:
		return "upstream refused the connection";
	case METRICS_ERR_CONNECT_TIMEOUT:
		return "upstream connect timed out";
	case METRICS_ERR_RESET:
		return "upstream closed the connection";
	case METRICS_ERR_RESPONSE_TIMEOUT:
		return "upstream response timed out";
	case METRICS_ERR_BAD_RESPONSE:
		return "upstream sent an invalid response";
	case METRICS_ERR_NO_ENDPOINT:
		return "no upstream endpoint available";
	default:
		break;
	}
	return status == 404 ? "no route for this host and path" : "proxy error";
}

static int exchange_retry(struct cconn *c);

/* The upstream failed: answer with status if nothing was sent yet. */
static void exchange_fail(struct cconn *c, int status, enum metrics_err kind)
{
	struct exchange *ex = &c->ex;
	struct uconn *u = ex->up;

	if (u) {
		int stale = u->reused && !u->got_bytes && !ex->req_has_body && !ex->retried &&
		            (kind == METRICS_ERR_RESET || kind == METRICS_ERR_CONNECT_REFUSED);

		u->client = NULL;
		up_close(u);
		ex->up = NULL;
		/* a pooled connection the upstream had closed: retry once on a new one */
		if (stale && exchange_retry(c) == 0)
			return;
	}
	if (ex->resp_started) {
		/* the client has part of a response and cannot get a clean one:
		 * counted as this version's upstream error, then the connection is
		 * reset at once (a FIN would end a close-delimited body cleanly) */
		log_info("upstream failed mid-response: client connection reset", "service",
		         ex->svc->name, "version", ex->svc->versions[ex->dec.version].name, "kind",
		         metrics_err_name(kind), NULL);
		ex->local = 1;
		ex->local_status = ex->status;
		c->close_after = 1;
		c->aborting = 1;
		exchange_finish(c, kind);
		return;
	}
	ex->local = 1;
	ex->local_status = status;
	if (!ex->req_done)
		c->close_after = 1; /* the rest of the request body is not read */
	client_local_response(c, status, local_message(status, kind));
	exchange_finish(c, kind);
}

static uint32_t pick_endpoint(struct worker *w, const struct proxy_version *v)
{
	uint64_t now = loop_now_ms(w->loop);
	uint32_t start = w->rr++;

	for (uint32_t i = 0; i < v->neps; i++) {
		uint32_t ep = v->eps[(start + i) % v->neps];

		if (atomic_load_explicit(&proxy_registry_get(w->p->reg, ep)->ejected_until_ms,
		                         memory_order_relaxed) <= now)
			return ep;
	}
	return v->eps[start % v->neps]; /* all ejected: never leave the version empty */
}

static int exchange_send(struct cconn *c)
{
	struct exchange *ex = &c->ex;
	int err = 0;
	struct uconn *u = up_get(c->w, ex->ep, &err);

	if (!u)
		return -err;
	u->client = c;
	ex->up = u;
	if (ex->head)
		http_parser_expect_no_body(&u->parser);
	if (buf_append(&u->out, buf_head(&ex->head_copy), buf_used(&ex->head_copy)))
		return -ENOBUFS;
	if (!u->connecting) {
		loop_timer_start(c->w->loop, &u->timer, ex->svc->timeouts.response_ms);
		up_flush(u);
	} else {
		loop_timer_start(c->w->loop, &u->timer, ex->svc->timeouts.connect_ms);
	}
	return 0;
}

static int exchange_retry(struct cconn *c)
{
	c->ex.retried = 1;
	return exchange_send(c);
}

static int method_listed(const struct config_strlist *l, struct str method)
{
	for (size_t i = 0; i < l->n; i++)
		if (str_eq_c(method, l->v[i]))
			return 1;
	return 0;
}

/*
 * Samples the request for the service's mirror and, when taken, starts its
 * copy: the head as the shadow will get it (rid: the X-Request-Id line the
 * primary got, if the proxy added one).  The body is copied as it comes
 * (client_on_body) and the copy leaves when the request is complete.
 */
static void mirror_begin(struct cconn *c, const struct http_msg *m, struct str rid)
{
	/* the body goes de-chunked with its own Content-Length */
	static const char *const shadow_skip[] = {"x-forwarded-for", "x-forwarded-proto", "expect",
	                                          "content-length", "x-canary-shadow"};
	struct worker *w = c->w;
	struct exchange *ex = &c->ex;
	const struct proxy_service *svc = ex->svc;
	const struct proxy_mirror *mi = &svc->mirror;
	struct mirror_stats *ms = w->p->mstats;
	const struct proxy_version *v;
	struct mreq *r;
	struct buf *o;
	const struct str *xff;
	size_t n;
	int rc;

	if (mi->version < 0 || mi->version == ex->dec.version ||
	    rng_next(w) % BUCKET_COUNT >= mi->percent)
		return;
	if (!method_listed(mi->methods, m->method)) {
		mirror_stats_count(ms, svc->stats_slot, w->id, MIRROR_METHOD);
		return;
	}
	if (m->has_content_length && m->content_length > mi->body_cap) {
		mirror_stats_count(ms, svc->stats_slot, w->id, MIRROR_TOO_LARGE);
		return;
	}
	v = &svc->versions[mi->version];
	if (w->m_pending >= MIRROR_MAX_PENDING || v->neps == 0) {
		mirror_stats_count(ms, svc->stats_slot, w->id, MIRROR_DROPPED);
		return;
	}
	r = w->mfree;
	if (r) {
		w->mfree = r->qnext;
		w->nmfree--;
	} else {
		r = calloc(1, sizeof(*r));
		if (!r) {
			mirror_stats_count(ms, svc->stats_slot, w->id, MIRROR_DROPPED);
			return;
		}
		buf_init(&r->head, HEAD_CAP);
		buf_init(&r->body, mi->body_cap);
	}
	memset(r, 0, offsetof(struct mreq, head));
	r->head.cap = HEAD_CAP;
	r->body.cap = mi->body_cap;
	r->w = w;
	r->state = M_BUILDING;
	r->slot = svc->stats_slot;
	r->ep = pick_endpoint(w, v);
	r->connect_ms = svc->timeouts.connect_ms;
	r->response_ms = svc->timeouts.response_ms;
	r->idle_ms = svc->timeouts.idle_ms;
	r->body_cap = mi->body_cap;
	r->compare_body = mi->compare_body;
	r->head_req = ex->head;
	r->has_body = ex->req_has_body;
	r->ph = r->sh = MIRROR_HASH_INIT;
	n = m->method.len < sizeof(r->method) - 1 ? m->method.len : sizeof(r->method) - 1;
	memcpy(r->method, m->method.p, n);
	r->method[n] = '\0';
	n = m->path.len < sizeof(r->path) - 1 ? m->path.len : sizeof(r->path) - 1;
	memcpy(r->path, m->path.p, n);
	r->path[n] = '\0';

	o = &r->head;
	xff = http_msg_header(m, "x-forwarded-for");
	rc = request_line(o, m);
	if (!rc)
		rc = headers_forward(o, m, shadow_skip,
		                     sizeof(shadow_skip) / sizeof(shadow_skip[0]));
	if (m->version == 10 && !m->host.len)
		buf_printf(o, "Host: %s\r\n", proxy_registry_get(w->p->reg, r->ep)->name);
	buf_append_lit(o, "X-Forwarded-For: ");
	if (xff) {
		buf_append(o, xff->p, xff->len);
		buf_append_lit(o, ", ");
	}
	buf_append(o, c->peer, c->peer_len);
	buf_append_lit(o, "\r\nX-Forwarded-Proto: http\r\n");
	buf_append(o, rid.p, rid.len);
	if (buf_append_lit(o, "X-Canary-Shadow: 1\r\n") || rc) {
		/* the head did not fit its cap: not mirrored */
		mirror_stats_count(ms, svc->stats_slot, w->id, MIRROR_TOO_LARGE);
		buf_release(&r->head);
		buf_release(&r->body);
		free(r);
		return;
	}
	r->prev = NULL;
	r->next = w->mlive;
	if (w->mlive)
		w->mlive->prev = r;
	w->mlive = r;
	w->m_pending++;
	ex->mreq = r;
}

static void client_delay_done(struct loop *loop, struct loop_timer *t);

static int client_on_headers(struct http_parser *p, struct http_msg *m, void *data)
{
	/* replaced by the proxy's own (expect: answered here) */
	static const char *const req_skip[] = {"x-forwarded-for", "x-forwarded-proto", "expect"};
	struct cconn *c = data;
	struct worker *w = c->w;
	struct exchange *ex = &c->ex;
	const struct proxy_listener *pl;
	const struct proxy_version *v;
	struct buf *o;
	const struct str *xff, *rid;
	size_t rid_off;
	int rc;

	loop_timer_stop(w->loop, &c->timer);
	c->state = C_BODY;
	c->version10 = m->version == 10;
	if (!m->keep_alive)
		c->close_after = 1;
	ex->start_us = clock_mono_us();
	ex->head = m->method_id == HTTP_M_HEAD;
	ex->req_chunked = m->chunked;
	ex->req_has_body = m->chunked || (m->has_content_length && m->content_length > 0);
	if (http_msg_header_has_token(m, "expect", "100-continue"))
		buf_append_lit(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
	if (!w->table || c->wl->tindex < 0) {
		ex->local = 1;
		ex->local_status = 503;
		return 0;
	}
	ex->table = (struct proxy_table *)snap_obj_ref(&w->table->obj);
	pl = &w->table->listeners[c->wl->tindex];
	ex->svc = proxy_route_match(pl, m->host, m->path);
	if (!ex->svc) {
		ex->local = 1;
		ex->local_status = 404;
		return 0;
	}
	proxy_decide(ex->svc, m, str_make(c->peer, c->peer_len), rng_next(w), &ex->dec);
	v = &ex->svc->versions[ex->dec.version];
	inflight_begin(c, v->series);
	/* faults (SPEC 4): drawn from the worker's seeded generator */
	if (v->fault.abort_percent && rng_next(w) % BUCKET_COUNT < v->fault.abort_percent) {
		ex->local = 1;
		ex->fault = 1;
		ex->local_status = (int)v->fault.abort_status;
		mirror_stats_fault(w->p->mstats, ex->svc->stats_slot, w->id, MIRROR_FAULT_ABORT);
		return 0;
	}
	if (v->fault.delay_percent && rng_next(w) % BUCKET_COUNT < v->fault.delay_percent) {
		if (w->ndelayed < MAX_DELAYED) {
			ex->delayed = 1;
			w->ndelayed++;
			mirror_stats_fault(w->p->mstats, ex->svc->stats_slot, w->id,
			                   MIRROR_FAULT_DELAY);
		} else {
			mirror_stats_fault(w->p->mstats, ex->svc->stats_slot, w->id,
			                   MIRROR_FAULT_DELAY_OVERCAP);
		}
	}
	if (v->neps == 0) {
		ex->local = 1;
		ex->local_status = 503;
		ex->local_kind = METRICS_ERR_NO_ENDPOINT;
		return 0;
	}
	ex->ep = pick_endpoint(w, v);

	/* the request head, for the upstream (kept for one retry) */
	o = &ex->head_copy;
	xff = http_msg_header(m, "x-forwarded-for");
	rid = http_msg_header(m, "x-request-id");
	if (request_line(o, m) ||
	    headers_forward(o, m, req_skip, sizeof(req_skip) / sizeof(req_skip[0])))
		return 431;
	if (m->version == 10 && !m->host.len)
		buf_printf(o, "Host: %s\r\n", proxy_registry_get(w->p->reg, ex->ep)->name);
	if (m->chunked)
		buf_append_lit(o, "Transfer-Encoding: chunked\r\n");
	buf_append_lit(o, "X-Forwarded-For: ");
	if (xff) {
		buf_append(o, xff->p, xff->len);
		buf_append_lit(o, ", ");
	}
	buf_append(o, c->peer, c->peer_len);
	buf_append_lit(o, "\r\nX-Forwarded-Proto: http\r\n");
	rid_off = buf_used(o);
	if (!rid) {
		/* 32 hex digits; the top bit set keeps both halves 16 digits wide */
		buf_append_lit(o, "X-Request-Id: ");
		buf_append_hex(o, rng_next(w) | (1ULL << 63));
		buf_append_hex(o, rng_next(w) | (1ULL << 63));
		buf_append_lit(o, "\r\n");
	}
	rc = buf_append_lit(o, "\r\n");
	if (rc)
		return 431;
	if (ex->svc->mirror.version >= 0)
		mirror_begin(c, m, str_make(buf_head(o) + rid_off, buf_used(o) - rid_off - 2));
	if (ex->delayed) {
		/* held on a timer; the body collects in head_copy meanwhile */
		o->cap = CONN_BUF_CAP;
		loop_timer_start(w->loop, &c->delay, v->fault.delay_ms);
		return 0;
	}
	rc = exchange_send(c);
	if (rc) {
		enum metrics_err kind = METRICS_ERR_CONNECT_REFUSED;

		if (ex->up) {
			ex->up->client = NULL;
			up_close(ex->up);
			ex->up = NULL;
		}
		ex->local = 1;
		ex->local_status = 502;
		ex->local_kind = kind;
	}
	return 0;
}

static int client_on_body(struct http_parser *p, const char *at, size_t len, void *data)
{
	struct cconn *c = data;
	struct uconn *u = c->ex.up;
	struct buf *o;
	int rc = 0;

	if (c->ex.mreq && c->ex.mreq->state == M_BUILDING &&
	    buf_append(&c->ex.mreq->body, at, len) != 0) {
		/* over mirror.body_cap: this request is not mirrored */
		mirror_stats_count(c->w->p->mstats, c->ex.mreq->slot, c->w->id, MIRROR_TOO_LARGE);
		mreq_free(c->ex.mreq);
		c->ex.mreq = NULL;
	}
	if (c->ex.local || (!u && !c->ex.delayed))
		return 0; /* answered locally: the body is read and dropped */
	o = u ? &u->out : &c->ex.head_copy;
	if (c->ex.req_chunked) {
		rc = buf_append_hex(o, len);
		if (!rc)
			rc = buf_append_lit(o, "\r\n");
	}
	if (!rc)
		rc = buf_append(o, at, len);
	if (!rc && c->ex.req_chunked)
		rc = buf_append_lit(o, "\r\n");
	if (rc)
		return 413;
	if (!u) {
		/* delayed: hold the rest in the socket until the delay is over */
		if (buf_used(o) > HIGH_WATER) {
			c->paused = 1;
			return HTTP_PARSER_PAUSE;
		}
		return 0;
	}
	if (!u->connecting)
		up_flush(u);
	if (!u->closed && buf_used(&u->out) > HIGH_WATER) {
		c->paused = 1;
		return HTTP_PARSER_PAUSE;
	}
	return 0;
}

static int client_on_complete(struct http_parser *p, struct http_msg *m, void *data)
{
	struct cconn *c = data;
	struct uconn *u = c->ex.up;

	c->ex.req_done = 1;
	c->state = C_WAIT;
	if (u && c->ex.req_chunked) {
		buf_append_lit(&u->out, "0\r\n\r\n");
		if (!u->connecting)
			up_flush(u);
	} else if (!u && c->ex.delayed && c->ex.req_chunked) {
		buf_append_lit(&c->ex.head_copy, "0\r\n\r\n");
	}
	if (c->ex.mreq && c->ex.mreq->state == M_BUILDING)
		mirror_dispatch(c->ex.mreq);
	return 0;
}

static const struct http_parser_cbs client_cbs = {client_on_headers, client_on_body,
                                                  client_on_complete};

/* A delay fault is over: forward what was held (head and any body so far). */
static void client_delay_done(struct loop *loop, struct loop_timer *t)
{
	struct cconn *c = t->data;
	struct exchange *ex = &c->ex;

	if (c->closed || !ex->delayed)
		return;
	ex->delayed = 0;
	c->w->ndelayed--;
	if (exchange_send(c) != 0) {
		if (ex->req_done) {
			exchange_fail(c, 502, METRICS_ERR_CONNECT_REFUSED);
			return;
		}
		if (ex->up) {
			ex->up->client = NULL;
			up_close(ex->up);
			ex->up = NULL;
		}
		ex->local = 1;
		ex->local_status = 502;
		ex->local_kind = METRICS_ERR_CONNECT_REFUSED;
	}
	if (c->paused) {
		c->paused = 0;
		http_parser_resume(&c->parser);
		client_kick(c);
	}
}

static void client_cb(struct loop *loop, struct loop_io *io, uint32_t ev);

static void client_kick_cb(struct loop *loop, struct loop_defer *d)
{
	struct cconn *c = d->data;

	if (c->closed)
		return;
	c->read_blocked = 0;
	client_cb(loop, &c->io, LOOP_READ | LOOP_WRITE);
}

/* Re-reads the client socket at the end of this turn: edge-triggered sockets
 * give no new event for data that was already there when we stopped. */
static void client_kick(struct cconn *c)
{
	if (!c->closed)
		loop_defer(c->w->loop, &c->kick, client_kick_cb, c);
}

static void up_kick_cb(struct loop *loop, struct loop_defer *d)
{
	struct uconn *u = d->data;

	if (u->closed)
		return;
	u->read_blocked = 0;
	up_read(u);
}

static void up_kick(struct uconn *u)
{
	if (!u->closed)
		loop_defer(u->w->loop, &u->kick, up_kick_cb, u);
}

static void client_process(struct cconn *c)
{
	while (!c->closed && !c->paused && c->state != C_WAIT && buf_used(&c->in)) {
		size_t used = 0;
		int rc, was_idle = c->state == C_IDLE;

		rc = http_parser_feed(&c->parser, buf_head(&c->in), buf_used(&c->in), &used);
		buf_consume(&c->in, used);
		if (was_idle && used && c->state == C_IDLE && !loop_timer_armed(&c->timer))
			loop_timer_start(c->w->loop, &c->timer,
			                 c->w->table ? c->w->table->header_timeout_ms : 10000);
		if (rc == HTTP_PARSE_AGAIN)
			break;
		if (rc == HTTP_PARSE_PAUSED)
			break;
		if (rc == HTTP_PARSE_ERROR) {
			int st = http_parser_status(&c->parser);

			c->close_after = 1;
			if (c->state == C_IDLE || !c->ex.resp_started) {
				if (c->ex.up) {
					c->ex.up->client = NULL;
					up_close(c->ex.up);
					c->ex.up = NULL;
				}
				c->ex.local = 1;
				c->ex.local_status = st;
				client_local_response(c, st, http_parser_reason(&c->parser));
				if (c->ex.svc) {
					exchange_finish(c, METRICS_ERR_NONE);
				} else {
					c->state = C_IDLE;
					client_flush(c);
				}
			} else {
				client_close(c);
			}
			return;
		}
		/* DONE: the request is complete */
		c->state = C_WAIT;
		if (c->ex.local) {
			client_local_response(
			    c, c->ex.local_status,
			    c->ex.fault ? "fault injected (abort)"
			                : local_message(c->ex.local_status, c->ex.local_kind));
			if (c->ex.svc) {
				exchange_finish(c, c->ex.local_kind);
			} else {
				/* no service: nothing to account */
				exchange_reset(c);
				if (c->close_after) {
					client_flush(c);
					return;
				}
				http_parser_next(&c->parser);
				client_flush(c);
			}
			continue;
		}
		break;
	}
	if (!c->closed)
		client_flush(c);
}

static void client_header_timeout(struct loop *loop, struct loop_timer *t)
{
	struct cconn *c = t->data;

	if (c->state != C_IDLE)
		return;
	if (!http_parser_in_message(&c->parser) && !buf_used(&c->in)) {
		client_close(c); /* idle keep-alive timeout */
		return;
	}
	c->close_after = 1;
	client_local_response(c, 408, "request header timeout");
	client_flush(c);
	if (!c->closed)
		client_close(c);
}

static void client_cb(struct loop *loop, struct loop_io *io, uint32_t ev)
{
	struct cconn *c = io->data;

	if (ev & LOOP_WRITE) {
		client_flush(c);
		if (c->closed)
			return;
	}
	if (!(ev & LOOP_READ))
		return;
	for (;;) {
		char *p;
		ssize_t n;

		if (buf_used(&c->in) > HIGH_WATER) {
			/* backlog (body paused, or pipelined): read again once it is processed */
			c->read_blocked = 1;
			break;
		}
		p = buf_reserve(&c->in, READ_CHUNK);
		if (!p) {
			client_close(c);
			return;
		}
		n = read(io->fd, p, READ_CHUNK);
		if (n > 0) {
			buf_commit(&c->in, (size_t)n);
			if ((size_t)n < READ_CHUNK)
				break;
			continue;
		}
		if (n == -1 && errno == EAGAIN)
			break;
		if (n == -1 && errno == EINTR)
			continue;
		/* EOF or error: finish what is buffered if we can, else close */
		if (c->state == C_WAIT && n == 0) {
			c->close_after = 1;
			break;
		}
		client_close(c);
		return;
	}
	client_process(c);
	/* everything read was consumed: read what the socket still holds */
	if (!c->closed && c->read_blocked && !c->paused && c->state != C_WAIT &&
	    buf_used(&c->in) <= HIGH_WATER)
		client_kick(c);
}

static void accept_cb(struct loop *loop, struct loop_io *io, uint32_t ev)
{
	struct wlistener *wl = io->data;
	struct worker *w = wl->w;

	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(io->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		int one = 1;
		struct cconn *c;

		if (fd == -1)
			return;
		if (w->stopping) {
			close(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->w = w;
		c->wl = wl;
		if (ss.ss_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, c->peer,
			          sizeof(c->peer));
		else
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, c->peer,
			          sizeof(c->peer));
		c->peer_len = strlen(c->peer);
		buf_init(&c->in, CONN_BUF_CAP);
		buf_init(&c->out, CONN_BUF_CAP);
		buf_init(&c->ex.head_copy, HEAD_CAP);
		{
			struct http_limits lim = {.max_header_bytes =
			                              w->table ? w->table->max_header_bytes : 0};

			http_parser_init(&c->parser, HTTP_PARSE_REQUEST, &lim, &client_cbs, c);
		}
		loop_timer_init(&c->timer, client_header_timeout, c);
		loop_timer_init(&c->delay, client_delay_done, c);
		if (loop_io_add(loop, &c->io, fd, client_cb, c) != 0) {
			close(fd);
			http_parser_release(&c->parser);
			free(c);
			continue;
		}
		c->next = w->conns;
		if (w->conns)
			w->conns->prev = c;
		w->conns = c;
		atomic_fetch_add(&w->nconns, 1);
		loop_timer_start(loop, &c->timer, w->table ? w->table->header_timeout_ms : 10000);
	}
}

/* ---- workers ---- */

static void listener_close(struct worker *w, struct wlistener *wl)
{
	if (wl->fd < 0)
		return;
	loop_io_del(w->loop, &wl->io);
	close(wl->fd);
	wl->fd = -1;
	wl->tindex = -1;
}

/* Binds the table's listeners that this worker lacks, closes removed ones. */
static int listeners_reconcile(struct worker *w, const struct proxy_table *t)
{
	int failed = 0;

	for (unsigned i = 0; i < w->nls; i++)
		w->ls[i].tindex = -1;
	for (uint32_t k = 0; k < t->nlisteners; k++) {
		struct wlistener *wl = NULL;

		for (unsigned i = 0; i < w->nls; i++)
			if (w->ls[i].fd >= 0 && strcmp(w->ls[i].addr, t->listeners[k].addr) == 0)
				wl = &w->ls[i];
		if (!wl) {
			int fd;

			for (unsigned i = 0; i < w->nls && !wl; i++)
				if (w->ls[i].fd < 0)
					wl = &w->ls[i];
			if (!wl && w->nls < MAX_LISTENERS)
				wl = &w->ls[w->nls++];
			if (!wl) {
				failed = 1;
				continue;
			}
			fd = http_listen(t->listeners[k].addr, 1);
			if (fd < 0) {
				snprintf(w->bind_err, sizeof(w->bind_err),
				         "cannot listen on %s: %s", t->listeners[k].addr,
				         strerror(-fd));
				wl->fd = -1;
				failed = 1;
				continue;
			}
			wl->fd = fd;
			wl->w = w;
			snprintf(wl->addr, sizeof(wl->addr), "%s", t->listeners[k].addr);
			loop_io_add(w->loop, &wl->io, fd, accept_cb, wl);
		}
		wl->tindex = (int)k;
	}
	for (unsigned i = 0; i < w->nls; i++)
		if (w->ls[i].fd >= 0 && w->ls[i].tindex < 0)
			listener_close(w, &w->ls[i]);
	return failed ? -1 : 0;
}

/* The drain deadline passed: requests still in flight on draining versions are cut. */
static void drain_deadline(struct loop *loop, struct loop_timer *t)
{
	struct worker *w = t->data;
	struct cconn *c, *next;

	for (c = w->conns; c; c = next) {
		next = c->next;
		if (c->ex.up && c->ex.svc && version_draining(c)) {
			log_warn("drain deadline: request cut", "service", c->ex.svc->name, NULL);
			exchange_fail(c, 502, METRICS_ERR_RESET);
		}
	}
}

/*
 * A new table: close idle upstream connections of draining versions, and
 * bound the requests still in flight on them by the service's drain time.
 */
static void apply_table(struct worker *w, const struct proxy_table *t)
{
	uint64_t drain = UINT64_MAX;

	for (uint32_t s = 0; s < t->nservices; s++) {
		for (uint32_t v = 0; v < t->services[s].nversions; v++) {
			if (!t->services[s].versions[v].draining)
				continue;
			for (uint32_t e = 0; e < t->services[s].versions[v].neps; e++)
				pool_close_all(w, t->services[s].versions[v].eps[e]);
			if (t->services[s].drain_ms < drain)
				drain = t->services[s].drain_ms;
		}
	}
	if (drain != UINT64_MAX && !loop_timer_armed(&w->drain_timer))
		loop_timer_start(w->loop, &w->drain_timer, drain);
}

static void worker_prepare(struct loop *loop, void *data)
{
	struct worker *w = data;
	struct snap_obj *held = w->table ? &w->table->obj : NULL;

	if (snapshot_acquire(&w->p->snap, &held)) {
		w->table = (struct proxy_table *)held;
		if (w->table) {
			if (!w->stopping)
				listeners_reconcile(w, w->table);
			apply_table(w, w->table);
			atomic_store_explicit(&w->applied_rev, w->table->obj.revision,
			                      memory_order_release);
		}
	}
}

static void noop_post(struct loop *loop, void *arg)
{
}

/* The stop deadline passed (or nothing is left): close what remains, stop. */
static void stop_deadline_post(struct loop *loop, void *arg)
{
	struct worker *w = arg;

	while (w->conns)
		client_close(w->conns);
	loop_stop(loop);
}

static void worker_begin_stop(struct loop *loop, void *arg)
{
	struct worker *w = arg;
	struct cconn *c, *next;

	w->stopping = 1;
	for (unsigned i = 0; i < w->nls; i++)
		listener_close(w, &w->ls[i]);
	for (c = w->conns; c; c = next) {
		next = c->next;
		/* idle keep-alive connections go now; busy ones after their response */
		if (c->state == C_IDLE && !http_parser_in_message(&c->parser) && !buf_used(&c->out))
			client_close(c);
		else
			c->close_after = 1;
	}
	for (uint32_t e = 0; e < PROXY_MAX_ENDPOINTS; e++)
		if (w->pools[e].head)
			pool_close_all(w, e);
	if (atomic_load(&w->nconns) == 0)
		loop_stop(loop);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	char name[16];

	snprintf(name, sizeof(name), "canaryd-w%u", w->id);
	pthread_setname_np(pthread_self(), name);
	loop_run(w->loop);
	loop_timer_stop(w->loop, &w->drain_timer);
	/* whatever is left (deadline passed) is closed here */
	while (w->conns)
		client_close(w->conns);
	mirror_shutdown(w);
	for (uint32_t e = 0; e < PROXY_MAX_ENDPOINTS; e++)
		if (w->pools[e].head)
			pool_close_all(w, e);
	for (unsigned i = 0; i < w->nls; i++)
		listener_close(w, &w->ls[i]);
	loop_run_once(w->loop, 0); /* run the deferred frees */
	return NULL;
}

struct proxy *proxy_new(unsigned nworkers, struct metrics_registry *metrics, uint64_t seed)
{
	struct proxy *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	if (nworkers == 0)
		nworkers = 1;
	if (nworkers > PROXY_MAX_WORKERS)
		nworkers = PROXY_MAX_WORKERS;
	p->reg = proxy_registry_new();
	p->workers = calloc(nworkers, sizeof(*p->workers));
	p->mstats = mirror_stats_new(nworkers);
	p->inflight = calloc((size_t)nworkers * PROXY_MAX_SERIES, sizeof(*p->inflight));
	if (!p->reg || !p->workers || !p->mstats || !p->inflight) {
		mirror_stats_free(p->mstats);
		proxy_registry_free(p->reg);
		free(p->workers);
		free(p->inflight);
		free(p);
		return NULL;
	}
	for (unsigned i = 0; i < nworkers; i++)
		p->workers[i].inflight = p->inflight + (size_t)i * PROXY_MAX_SERIES;
	p->reg->mirror = p->mstats;
	snapshot_init(&p->snap);
	p->nworkers = nworkers;
	p->metrics = metrics;
	p->seed = seed ? seed : clock_wall_ms() ^ ((uint64_t)getpid() << 32);
	return p;
}

struct proxy_registry *proxy_registry(struct proxy *p)
{
	return p->reg;
}

uint64_t proxy_publish(struct proxy *p, struct proxy_table *t)
{
	uint64_t rev = snapshot_publish(&p->snap, &t->obj);

	if (p->started)
		for (unsigned i = 0; i < p->nworkers; i++)
			loop_post(p->workers[i].loop, noop_post, NULL);
	return rev;
}

int proxy_applied(struct proxy *p, uint64_t rev)
{
	for (unsigned i = 0; i < p->nworkers; i++)
		if (atomic_load_explicit(&p->workers[i].applied_rev, memory_order_acquire) < rev)
			return 0;
	return 1;
}

struct proxy_table *proxy_table_get(struct proxy *p)
{
	struct snap_obj *held = NULL;

	snapshot_acquire(&p->snap, &held);
	return (struct proxy_table *)held;
}

int proxy_start(struct proxy *p, char *err, size_t errlen)
{
	for (unsigned i = 0; i < p->nworkers; i++) {
		struct worker *w = &p->workers[i];

		w->p = p;
		w->id = i;
		w->rng = p->seed + i * 0x632be59bd9b4e019ULL;
		w->loop = loop_new();
		if (!w->loop) {
			snprintf(err, errlen, "cannot create worker loop");
			return -1;
		}
		loop_timer_init(&w->drain_timer, drain_deadline, w);
		loop_set_prepare(w->loop, worker_prepare, w);
		/* bind before the threads start so errors are reported now */
		worker_prepare(w->loop, w);
		if (w->bind_err[0]) {
			snprintf(err, errlen, "%s", w->bind_err);
			return -1;
		}
	}
	for (unsigned i = 0; i < p->nworkers; i++) {
		if (pthread_create(&p->workers[i].th, NULL, worker_main, &p->workers[i]) != 0) {
			snprintf(err, errlen, "cannot start worker thread");
			for (unsigned k = 0; k < i; k++) {
				loop_stop(p->workers[k].loop);
				pthread_join(p->workers[k].th, NULL);
			}
			return -1;
		}
	}
	p->started = 1;
	return 0;
}

int proxy_listener_up(struct proxy *p, const char *name)
{
	struct proxy_table *t = proxy_table_get(p);
	int up = 0;

	if (!t)
		return 0;
	for (uint32_t k = 0; k < t->nlisteners; k++) {
		if (strcmp(t->listeners[k].name, name) != 0)
			continue;
		up = p->started;
		for (unsigned i = 0; i < p->nworkers && up; i++) {
			int found = 0;

			for (unsigned j = 0; j < p->workers[i].nls; j++)
				if (p->workers[i].ls[j].fd >= 0 &&
				    strcmp(p->workers[i].ls[j].addr, t->listeners[k].addr) == 0)
					found = 1;
			up = found;
		}
	}
	snap_obj_unref(&t->obj);
	return up;
}

void proxy_stop(struct proxy *p, uint64_t deadline_ms)
{
	if (!p->started)
		return;
	for (unsigned i = 0; i < p->nworkers; i++)
		loop_post(p->workers[i].loop, worker_begin_stop, &p->workers[i]);
	/* wait for in-flight requests, up to the deadline, then force */
	{
		uint64_t until = clock_mono_ms() + deadline_ms;

		while (clock_mono_ms() < until && proxy_client_conns(p) > 0)
			usleep(5000);
	}
	for (unsigned i = 0; i < p->nworkers; i++) {
		loop_post(p->workers[i].loop, stop_deadline_post, &p->workers[i]);
		pthread_join(p->workers[i].th, NULL);
	}
	p->started = 0;
}

void proxy_free(struct proxy *p)
{
	if (!p)
		return;
	for (unsigned i = 0; i < p->nworkers; i++) {
		struct worker *w = &p->workers[i];

		if (w->table)
			snap_obj_unref(&w->table->obj);
		if (w->loop)
			loop_free(w->loop);
	}
	snapshot_release(&p->snap);
	proxy_registry_free(p->reg);
	mirror_stats_free(p->mstats);
	free(p->workers);
	free(p->inflight);
	free(p);
}

long proxy_inflight(struct proxy *p, int series)
{
	long n = 0;

	if (series < 0 || series >= PROXY_MAX_SERIES)
		return -ERANGE;
	for (unsigned i = 0; i < p->nworkers; i++)
		n += atomic_load_explicit(&p->workers[i].inflight[series], memory_order_relaxed);
	return n < 0 ? 0 : n;
}

uint64_t proxy_client_conns(struct proxy *p)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < p->nworkers; i++)
		n += atomic_load(&p->workers[i].nconns);
	return n;
}

int proxy_mirror_read_full(struct proxy *p, const char *service, struct mirror_snapshot *out,
                           struct mirror_mismatch *mm, size_t max, size_t *nmm)
{
	int slot = mirror_stats_find(p->mstats, service);

	if (nmm)
		*nmm = 0;
	if (slot < 0 || mirror_stats_read(p->mstats, slot, out) != 0) {
		memset(out, 0, sizeof(*out));
		return -ENOENT;
	}
	if (mm && nmm)
		*nmm = mirror_stats_mismatches(p->mstats, slot, mm, max);
	return 0;
}

int proxy_mirror_read(struct proxy *p, const char *service, struct mirror_snapshot *out)
{
	int rc = proxy_mirror_read_full(p, service, out, NULL, 0, NULL);

	if (rc == 0 && out->mirrored == 0 && out->dropped == 0 && out->too_large == 0 &&
	    out->method == 0) {
		memset(out, 0, sizeof(*out));
		return -ENOENT; /* the service never mirrored anything */
	}
	return rc;
}

int proxy_mirror_write_prometheus(struct proxy *p, struct buf *out)
{
	return mirror_stats_write_prometheus(p->mstats, out);
}
