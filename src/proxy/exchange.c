/*
 * exchange.c - client connections and their exchange: read and route a
 * request, forward it on an upstream connection (upstream.h, this file is
 * its "client" owner), stream the response back, account it (metrics,
 * outliers, in-flight counts, the request sample), then the next request.
 *
 * One exchange at a time per client connection (pipelined requests wait in
 * the input buffer).  Per request, in the common keep-alive case, the worker
 * makes four syscalls: read the request, write it upstream, read the
 * response, write it to the client.  Sockets are registered once,
 * edge-triggered; a short read means the socket is drained.  Worker thread
 * only.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "http/headers.h"
#include "http/server.h"
#include "metrics/stats.h"
#include "net/transport.h"
#include "proxy/proxy_internal.h"
#include "proxy/transport_pick.h"

enum cstate { C_IDLE, C_BODY, C_WAIT };
enum resp_framing { RF_LENGTH, RF_CHUNKED, RF_EOF, RF_NONE };

struct exchange {
	struct proxy_table *table; /* reference held for the request's life */
	const struct proxy_service *svc;
	struct proxy_decision dec;
	uint32_t ep;
	struct upconn *up;
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
	/* for the request sample (proxy_samples) */
	char method[16];
	char path[PROXY_SAMPLE_PATH];
	char rid[64];
};

struct cconn {
	struct loop_io io;
	struct loop_defer d;
	/*
	 * The header / idle timeout.  During an exchange it is parked instead
	 * of stopped: it stays in the loop's heap (a fire is ignored), so the
	 * next request's re-arm to a later deadline costs no heap work.
	 */
	struct loop_timer timer;
	int timer_parked;
	struct worker *w;
	struct wlistener *wl;
	struct buf in, out;
	struct http_parser parser;
	char peer[INET6_ADDRSTRLEN];
	size_t peer_len;
	enum cstate state;
	struct exchange ex;
	/*
	 * The shadow copy of a request whose primary answered before its body
	 * was read: the body is still read (and copied) before the connection
	 * closes, so the shadow gets the whole request.
	 */
	struct mreq *linger; /* NULL once sent, or dropped over the body cap */
	int lingering;       /* reading the rest of such a body: close at its end */
	int ending;          /* nothing more is read: close once the output is flushed */
	int closed;
	int close_after; /* close once the output is flushed */
	int paused;      /* request parsing paused: upstream output full */
	int version10;
	int read_blocked;        /* stopped reading with data possibly left in the socket */
	int aborting;            /* the upstream failed mid-response: reset, do not flush */
	struct loop_defer kick;  /* resumes reading at the end of the turn (no recursion) */
	struct loop_defer flush; /* writes the output at the end of the turn */
	struct loop_timer delay; /* a delay fault */
	struct cconn *next, *prev;
	struct transport t;
	int hs_done;     /* the transport's handshake is over: reads and writes allowed */
	int rd_wait_out; /* the last read wants LOOP_WRITE (TLS) */
	int wr_wait_in;  /* the last write wants LOOP_READ (TLS) */
};

static void client_process(struct cconn *c);
static void client_flush(struct cconn *c);
static void client_flush_later(struct cconn *c);
static void client_close(struct cconn *c);
static void client_abort(struct cconn *c);
static void client_kick(struct cconn *c);
static void exchange_fail(struct cconn *c, int status, enum metrics_err kind);
static int exchange_send(struct cconn *c);

/* (Re-)arms the header / idle timeout. */
static void client_timer_start(struct cconn *c, uint64_t ms)
{
	c->timer_parked = 0;
	loop_timer_start(c->w->loop, &c->timer, ms);
}

static void client_timer_stop(struct cconn *c)
{
	c->timer_parked = 0;
	loop_timer_stop(c->w->loop, &c->timer);
}

/* Stops the header / idle timeout for an exchange, as far as anyone can
 * tell: a fire while parked does nothing. */
static void client_timer_park(struct cconn *c)
{
	c->timer_parked = 1;
}

static int client_timer_armed(const struct cconn *c)
{
	return loop_timer_armed(&c->timer) && !c->timer_parked;
}

/* Copies s into dst[cap] NUL-terminated, cut at cap - 1 bytes. */
static void str_copy_trunc(char *dst, size_t cap, struct str s)
{
	size_t n = s.len < cap - 1 ? s.len : cap - 1;

	if (n)
		memcpy(dst, s.p, n);
	dst[n] = '\0';
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

/* Records the finished exchange in its version's request sample. */
static void sample_note(struct worker *w, const struct exchange *ex, int series, int status,
                        uint64_t lat)
{
	struct proxy_sample e;
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts); /* vDSO: no syscall */
	e.time_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
	e.latency_us = lat;
	e.status = status;
	memcpy(e.method, ex->method, sizeof(e.method));
	memcpy(e.path, ex->path, sizeof(e.path));
	memcpy(e.request_id, ex->rid, sizeof(e.request_id));
	sample_record(w->p->samples, w->id, series, &e);
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

/* ---- the upstream connection's owner: the response goes to the client ---- */

static int resp_head(struct upconn *u, const struct http_msg *m, void *owner)
{
	static const char *const resp_skip[] = {"content-length"};
	struct cconn *c = owner;
	struct exchange *ex = &c->ex;
	struct buf *o = &c->out;
	const struct str *cl;

	ex->status = m->status;
	ex->resp_started = 1;
	buf_append_lit(o, "HTTP/1.1 ");
	buf_append_u64(o, (unsigned)m->status);
	buf_append_lit(o, " ");
	buf_append(o, m->reason.p, m->reason.len);
	buf_append_lit(o, "\r\n");
	headers_forward(o, m, resp_skip, sizeof(resp_skip) / sizeof(resp_skip[0]));
	if (m->no_body || ex->head) {
		ex->rf = RF_NONE;
		/* a HEAD's length, and an empty body's "Content-Length: 0" (without
		 * it an HTTP/1.1 client would read until the connection closes) */
		cl = http_msg_header(m, "content-length");
		if (cl && (ex->head || (m->has_content_length && m->status != 204))) {
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

static int resp_body(struct upconn *u, const char *at, size_t len, void *owner)
{
	struct cconn *c = owner;
	int rc = 0;

	if (c->ex.rf == RF_NONE)
		return 0;
	if (c->ex.mreq)
		mirror_primary_body(c->ex.mreq, at, len);
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
	return buf_used(&c->out) > PROXY_HIGH_WATER ? HTTP_PARSER_PAUSE : 0;
}

/* The exchange is over (response fully queued or failed): account and reset. */
static void exchange_finish(struct cconn *c, enum metrics_err kind);

static void resp_done(struct upconn *u, int keep_alive, void *owner)
{
	struct cconn *c = owner;
	int keep = keep_alive && c->ex.req_done && !version_draining(c);

	if (c->ex.rf == RF_CHUNKED)
		buf_append_lit(&c->out, "0\r\n\r\n");
	c->ex.up = NULL;
	/* answered before the request body ended: the rest of the body has
	 * nowhere to go, so this connection ends with the response */
	if (!c->ex.req_done)
		c->close_after = 1;
	upconn_release(u, keep);
	exchange_finish(c, METRICS_ERR_NONE);
}

static int exchange_retry(struct cconn *c)
{
	c->ex.retried = 1;
	return exchange_send(c);
}

static void resp_fail(struct upconn *u, enum metrics_err kind, int stale, void *owner)
{
	struct cconn *c = owner;
	struct exchange *ex = &c->ex;

	ex->up = NULL;
	/* a pooled connection the upstream had closed: retry once on a new one
	 * (not with a body: part of it may be gone with the connection) */
	if (stale && !ex->req_has_body && !ex->retried && exchange_retry(c) == 0)
		return;
	exchange_fail(
	    c,
	    kind == METRICS_ERR_CONNECT_TIMEOUT || kind == METRICS_ERR_RESPONSE_TIMEOUT ? 504 : 502,
	    kind);
}

static void resp_parsed(struct upconn *u, void *owner)
{
	client_flush_later(owner);
}

/* The upstream took everything: the client may send more body. */
static void req_drained(struct upconn *u, void *owner)
{
	struct cconn *c = owner;

	if (c->paused) {
		c->paused = 0;
		http_parser_resume(&c->parser);
		client_kick(c);
	}
}

static const struct upconn_ops exchange_ops = {
    .head = resp_head,
    .body = resp_body,
    .done = resp_done,
    .fail = resp_fail,
    .parsed = resp_parsed,
    .drained = req_drained,
};

/* ---- the exchange ---- */

/* Back to a fresh exchange (the table reference dropped, head_copy empty
 * with its cap restored) for the connection's next request. */
static void exchange_reset(struct cconn *c)
{
	struct exchange *ex = &c->ex;

	inflight_end(c);
	snap_obj_unref(ex->table ? &ex->table->obj : NULL);
	buf_release(&ex->head_copy); /* back to the worker's pool */
	memset(ex, 0, sizeof(*ex));
	buf_init_pooled(&ex->head_copy, PROXY_HEAD_CAP, &c->w->bufs);
	c->state = C_IDLE;
}

static void exchange_finish(struct cconn *c, enum metrics_err kind)
{
	struct worker *w = c->w;
	struct exchange *ex = &c->ex;
	int status = ex->local ? ex->local_status : ex->status;

	if (ex->svc) {
		uint64_t lat = clock_mono_us() - ex->start_us;
		const struct proxy_version *v = &ex->svc->versions[ex->dec.version];

		if (w->p->metrics) {
			metrics_record(w->p->metrics, w->id, v->series, ex->dec.cohort, status, lat,
			               kind);
			/* the split guard counts only what the bucket split placed */
			if (ex->dec.bucket != UINT32_MAX)
				metrics_split_record(w->p->metrics, w->id, v->series,
				                     ex->dec.cohort, ex->dec.key_hash);
		}
		sample_note(w, ex, v->series, status, lat);
		if (!ex->fault && (!ex->local || kind != METRICS_ERR_NO_ENDPOINT))
			upstream_outlier_note(&w->up, ex->svc, v, ex->ep,
			                      status >= 500 || kind != METRICS_ERR_NONE);
		/* a copy still building (answered before the body was read) is
		 * completed while the rest of the body is read */
		if (ex->mreq && mirror_primary_done(ex->mreq, status, lat, 0)) {
			if (ex->req_done) {
				mirror_dispatch(ex->mreq); /* the body just ended */
			} else if (c->aborting) {
				mirror_primary_done(ex->mreq, 0, 0, 1);
			} else {
				c->linger = ex->mreq;
				c->lingering = 1;
			}
		}
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
	if (c->lingering) {
		/* keep reading the request body into the copy; the connection
		 * closes when it is complete (close_after), or at the header
		 * timeout */
		c->close_after = 1;
		client_timer_start(c, w->table ? w->table->header_timeout_ms : 10000);
		if (c->paused) {
			c->paused = 0;
			http_parser_resume(&c->parser);
		}
		client_flush(c);
		client_kick(c);
		return;
	}
	if (c->close_after || w->stopping) {
		c->close_after = 1;
		client_flush(c);
		return;
	}
	http_parser_next(&c->parser);
	client_timer_start(c, w->table ? w->table->idle_timeout_ms : 60000);
	client_flush_later(c);
	if (c->read_blocked)
		client_kick(c);
	else
		client_process(c);
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

/* The upstream failed: answer with status if nothing was sent yet. */
static void exchange_fail(struct cconn *c, int status, enum metrics_err kind)
{
	struct exchange *ex = &c->ex;

	if (ex->up) {
		upconn_close(ex->up);
		ex->up = NULL;
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

/* Puts the request head (and what body was held) on an upstream connection. */
static int exchange_send(struct cconn *c)
{
	struct exchange *ex = &c->ex;
	int err = 0;
	struct upconn *u = upconn_get(&c->w->up, &ex->svc->versions[ex->dec.version], ex->ep,
	                              &exchange_ops, c, &err);
	struct upconn_req rq = {.connect_ms = ex->svc->timeouts.connect_ms,
	                        .response_ms = ex->svc->timeouts.response_ms,
	                        .idle_ms = ex->svc->timeouts.idle_ms,
	                        .head_req = ex->head,
	                        .upload = ex->req_has_body};

	if (!u)
		return -err;
	ex->up = u;
	if (buf_append(upconn_out(u), buf_head(&ex->head_copy), buf_used(&ex->head_copy)))
		return -ENOBUFS;
	upconn_start(u, &rq); /* a failure comes back through resp_fail */
	return 0;
}

/* The upstream could not be had for a request still being read: 502 once it is. */
static void exchange_unsent(struct cconn *c)
{
	struct exchange *ex = &c->ex;

	if (ex->up) {
		upconn_close(ex->up);
		ex->up = NULL;
	}
	ex->local = 1;
	ex->local_status = 502;
	ex->local_kind = METRICS_ERR_CONNECT_REFUSED;
}

/* ---- the request: parser callbacks ---- */

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

	client_timer_park(c);
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
	proxy_decide(ex->svc, m, str_make(c->peer, c->peer_len), worker_rng(w), &ex->dec);
	str_copy_trunc(ex->method, sizeof(ex->method), m->method);
	str_copy_trunc(ex->path, sizeof(ex->path), m->path);
	v = &ex->svc->versions[ex->dec.version];
	inflight_begin(c, v->series);
	/* faults (SPEC 4): drawn from the worker's seeded generator */
	if (v->fault.abort_percent && worker_rng(w) % BUCKET_COUNT < v->fault.abort_percent) {
		ex->local = 1;
		ex->fault = 1;
		ex->local_status = (int)v->fault.abort_status;
		mirror_stats_fault(w->p->mstats, ex->svc->stats_slot, w->id, MIRROR_FAULT_ABORT);
		return 0;
	}
	if (v->fault.delay_percent && worker_rng(w) % BUCKET_COUNT < v->fault.delay_percent) {
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
	ex->ep = upstream_pick(&w->up, v);

	/* the request head, for the upstream (kept for one retry) */
	o = &ex->head_copy;
	xff = http_msg_header(m, "x-forwarded-for");
	rid = http_msg_header(m, "x-request-id");
	if (headers_request_line(o, m) ||
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
	if (rid) {
		str_copy_trunc(ex->rid, sizeof(ex->rid), *rid);
	} else {
		/* 32 hex digits; the top bit set keeps both halves 16 digits wide */
		buf_append_lit(o, "X-Request-Id: ");
		buf_append_hex(o, worker_rng(w) | (1ULL << 63));
		buf_append_hex(o, worker_rng(w) | (1ULL << 63));
		if (buf_used(o) > rid_off + 14)
			str_copy_trunc(
			    ex->rid, sizeof(ex->rid),
			    str_make(buf_head(o) + rid_off + 14, buf_used(o) - rid_off - 14));
		buf_append_lit(o, "\r\n");
	}
	rc = buf_append_lit(o, "\r\n");
	if (rc)
		return 431;
	if (ex->svc->mirror.version >= 0)
		ex->mreq = mirror_begin(w, ex->table, ex->svc, ex->dec.version, m, ex->head,
		                        ex->req_has_body, str_make(c->peer, c->peer_len),
		                        str_make(buf_head(o) + rid_off, buf_used(o) - rid_off - 2));
	if (ex->delayed) {
		/* held on a timer; the body collects in head_copy meanwhile */
		o->cap = PROXY_CONN_BUF_CAP;
		loop_timer_start(w->loop, &c->delay, v->fault.delay_ms);
		return 0;
	}
	if (exchange_send(c) != 0)
		exchange_unsent(c);
	return 0;
}

static int client_on_body(struct http_parser *p, const char *at, size_t len, void *data)
{
	struct cconn *c = data;
	struct upconn *u = c->ex.up;
	struct buf *o;
	int rc = 0;

	if (c->ex.mreq)
		mirror_copy_body(&c->ex.mreq, at, len);
	if (c->lingering) {
		mirror_copy_body(&c->linger, at, len);
		return 0; /* the primary is over: only the copy takes it */
	}
	if (c->ex.local || (!u && !c->ex.delayed))
		return 0; /* answered locally: the body is read and dropped */
	o = u ? upconn_out(u) : &c->ex.head_copy;
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
		if (buf_used(o) > PROXY_HIGH_WATER) {
			c->paused = 1;
			return HTTP_PARSER_PAUSE;
		}
		return 0;
	}
	if (upconn_flush(u) != 0)
		return 0; /* failed: the exchange is over, the rest of the body is dropped */
	if (upconn_pending(u) > PROXY_HIGH_WATER) {
		c->paused = 1;
		return HTTP_PARSER_PAUSE;
	}
	return 0;
}

static int client_on_complete(struct http_parser *p, struct http_msg *m, void *data)
{
	struct cconn *c = data;
	struct upconn *u = c->ex.up;

	if (c->lingering) {
		struct mreq *r = c->linger;

		/* the copy of a request whose primary answered early is whole */
		c->linger = NULL;
		if (r)
			mirror_dispatch(r);
		return 0;
	}
	c->ex.req_done = 1;
	c->state = C_WAIT;
	if (u && c->ex.req_chunked) {
		buf_append_lit(upconn_out(u), "0\r\n\r\n");
		upconn_flush(u);
	} else if (!u && c->ex.delayed && c->ex.req_chunked) {
		buf_append_lit(&c->ex.head_copy, "0\r\n\r\n");
	}
	if (c->ex.mreq && mirror_building(c->ex.mreq))
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
		exchange_unsent(c);
	}
	if (c->paused) {
		c->paused = 0;
		http_parser_resume(&c->parser);
		client_kick(c);
	}
}

/* ---- the client connection ---- */

static void client_free(struct loop *loop, struct loop_defer *d)
{
	struct cconn *c = d->data;

	transport_release(&c->t, !c->aborting);
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
		upconn_close(c->ex.up);
		c->ex.up = NULL;
	}
	if (c->ex.mreq)
		mirror_primary_done(c->ex.mreq, 0, 0, 1);
	c->ex.mreq = NULL;
	if (c->linger)
		mirror_primary_done(c->linger, 0, 0, 1); /* its body never completed */
	c->linger = NULL;
	if (c->ex.delayed) {
		loop_timer_stop(w->loop, &c->delay);
		w->ndelayed--;
		c->ex.delayed = 0;
	}
	if (c->ex.table)
		snap_obj_unref(&c->ex.table->obj);
	c->ex.table = NULL;
	client_timer_stop(c);
	loop_timer_stop(w->loop, &c->delay);
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
	c->aborting = 1; /* no orderly transport shutdown either */
	setsockopt(c->io.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	client_close(c);
}

static void client_flush(struct cconn *c)
{
	if (!c->hs_done)
		return; /* nothing may be written before the handshake */
	while (buf_used(&c->out)) {
		ssize_t n = transport_write(&c->t, buf_head(&c->out), buf_used(&c->out));

		if (n == -1) {
			if (errno == EAGAIN) {
				c->wr_wait_in = c->t.want == EPOLLIN;
				return;
			}
			if (errno == EINTR)
				continue;
			client_close(c);
			return;
		}
		c->wr_wait_in = 0;
		buf_consume(&c->out, (size_t)n);
	}
	if ((c->state == C_IDLE && c->close_after && !c->lingering) || c->ending) {
		client_close(c);
		return;
	}
	if (c->state == C_IDLE && !buf_used(&c->in)) {
		/* idle keep-alive connection: hold no buffers */
		buf_release(&c->out);
		buf_release(&c->in);
	}
	if (c->ex.up && upconn_paused(c->ex.up))
		upconn_resume(c->ex.up);
}

static void client_flush_cb(struct loop *loop, struct loop_defer *d)
{
	struct cconn *c = d->data;

	if (!c->closed)
		client_flush(c);
}

/*
 * Writes the output at the end of this turn, with the turn's other
 * responses: the client is woken once for many of them.  Queued before any
 * close of c, so it runs before c is freed (deferred steps run in order).
 */
static void client_flush_later(struct cconn *c)
{
	if (!c->closed)
		loop_defer(c->w->loop, &c->flush, client_flush_cb, c);
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

static void client_process(struct cconn *c)
{
	while (!c->closed && !c->paused && c->state != C_WAIT && buf_used(&c->in)) {
		size_t used = 0;
		int rc, was_idle = c->state == C_IDLE;

		rc = http_parser_feed(&c->parser, buf_head(&c->in), buf_used(&c->in), &used);
		buf_consume(&c->in, used);
		if (was_idle && used && c->state == C_IDLE && !client_timer_armed(c))
			client_timer_start(c, c->w->table ? c->w->table->header_timeout_ms : 10000);
		if (rc == HTTP_PARSE_AGAIN)
			break;
		if (rc == HTTP_PARSE_PAUSED)
			break;
		if (c->lingering) {
			/* the rest of a body whose exchange is over: complete (the
			 * copy left) or broken, the connection ends here */
			c->lingering = 0;
			if (c->linger)
				mirror_primary_done(c->linger, 0, 0, 1);
			c->linger = NULL;
			c->ending = 1;
			c->state = C_WAIT;
			client_flush(c);
			return;
		}
		if (rc == HTTP_PARSE_ERROR) {
			int st = http_parser_status(&c->parser);

			c->close_after = 1;
			if (c->state == C_IDLE || !c->ex.resp_started) {
				if (c->ex.up) {
					upconn_close(c->ex.up);
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
	client_flush_later(c);
}

static void client_header_timeout(struct loop *loop, struct loop_timer *t)
{
	struct cconn *c = t->data;

	if (c->timer_parked) {
		c->timer_parked = 0; /* stopped for an exchange: a fire means nothing */
		return;
	}
	if (c->state != C_IDLE)
		return;
	if (c->lingering || !c->hs_done ||
	    (!http_parser_in_message(&c->parser) && !buf_used(&c->in))) {
		client_close(c); /* idle keep-alive timeout, or a body that never ended */
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

	if (!c->hs_done) {
		/* the transport's handshake, on either event (TLS reads and writes) */
		if (c->t.ops->handshake(&c->t) == -1) {
			if (errno != EAGAIN)
				client_close(c);
			return;
		}
		c->hs_done = 1;
		ev |= LOOP_READ | LOOP_WRITE; /* data may have come with the handshake */
	}
	if ((ev & LOOP_WRITE) || (c->wr_wait_in && (ev & LOOP_READ))) {
		client_flush(c);
		if (c->closed)
			return;
	}
	if (!(ev & LOOP_READ) && !(c->rd_wait_out && (ev & LOOP_WRITE)))
		return;
	for (;;) {
		char *p;
		ssize_t n;

		if (buf_used(&c->in) > PROXY_HIGH_WATER) {
			/* backlog (body paused, or pipelined): read again once it is processed */
			c->read_blocked = 1;
			break;
		}
		p = buf_reserve(&c->in, PROXY_READ_CHUNK);
		if (!p) {
			client_close(c);
			return;
		}
		n = transport_read(&c->t, p, PROXY_READ_CHUNK);
		if (n > 0) {
			c->rd_wait_out = 0;
			buf_commit(&c->in, (size_t)n);
			if ((size_t)n < PROXY_READ_CHUNK)
				break;
			continue;
		}
		if (n == -1 && errno == EAGAIN) {
			c->rd_wait_out = c->t.want == EPOLLOUT;
			break;
		}
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
	    buf_used(&c->in) <= PROXY_HIGH_WATER)
		client_kick(c);
}

void client_accept(struct worker *w, struct wlistener *wl, int fd,
                   const struct sockaddr_storage *ss)
{
	struct cconn *c = calloc(1, sizeof(*c));
	struct http_limits lim = {.max_header_bytes = w->table ? w->table->max_header_bytes : 0};
	int hs;

	if (!c)
		goto out_close_fd;
	c->w = w;
	c->wl = wl;
	if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, c->peer,
		          sizeof(c->peer));
	else
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, c->peer,
		          sizeof(c->peer));
	c->peer_len = strlen(c->peer);
	if (proxy_transport_accept(w->table && wl->tindex >= 0 ? &w->table->listeners[wl->tindex]
	                                                       : NULL,
	                           fd, &c->t) != 0)
		goto out_free;
	/* storage from the worker's pool: an idle connection holds none, and a
	 * request takes and gives back blocks without malloc/free */
	buf_init_pooled(&c->in, PROXY_CONN_BUF_CAP, &w->bufs);
	buf_init_pooled(&c->out, PROXY_CONN_BUF_CAP, &w->bufs);
	buf_init_pooled(&c->ex.head_copy, PROXY_HEAD_CAP, &w->bufs);
	http_parser_init(&c->parser, HTTP_PARSE_REQUEST, &lim, &client_cbs, c);
	loop_timer_init(&c->timer, client_header_timeout, c);
	loop_timer_init(&c->delay, client_delay_done, c);
	hs = c->t.ops->handshake(&c->t);
	/*
	 * A TLS handshake that ended here may have read the request too (into
	 * the SSL's read-ahead buffer: no EPOLLIN edge will tell): left to
	 * client_cb, which reads after a handshake; the first event comes at
	 * once (the socket is writable).
	 */
	c->hs_done = hs == 0 && c->t.ops == &transport_plain_ops;
	if ((hs == -1 && errno != EAGAIN) || loop_io_add(w->loop, &c->io, fd, client_cb, c) != 0) {
		http_parser_release(&c->parser);
		transport_release(&c->t, 0);
		goto out_free;
	}
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	atomic_fetch_add(&w->nconns, 1);
	/* bounds the handshake and the first request's head too */
	client_timer_start(c, w->table ? w->table->header_timeout_ms : 10000);
	return;

out_free:
	free(c);
out_close_fd:
	close(fd);
}

void clients_begin_stop(struct worker *w)
{
	struct cconn *c, *next;

	for (c = w->conns; c; c = next) {
		next = c->next;
		/* idle keep-alive connections go now; busy ones after their response */
		if (c->state == C_IDLE && !c->lingering && !http_parser_in_message(&c->parser) &&
		    !buf_used(&c->out))
			client_close(c);
		else
			c->close_after = 1;
	}
}

void clients_close_all(struct worker *w)
{
	while (w->conns)
		client_close(w->conns);
}

void clients_drain_deadline(struct worker *w)
{
	struct cconn *c, *next;

	for (c = w->conns; c; c = next) {
		next = c->next;
		if (c->ex.up && c->ex.svc && version_draining(c)) {
			log_warn("drain deadline: request cut", "service", c->ex.svc->name, NULL);
			exchange_fail(c, 502, METRICS_ERR_RESET);
		}
	}
}
