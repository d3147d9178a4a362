/*
 * mirror_worker.c - the worker side of mirroring (SPEC 4 "Mirror",
 * docs/proxy.md): the copy of a sampled request (head rebuilt for the
 * shadow, body up to body_cap), the bounded queue of copies waiting for an
 * in-flight slot, the shadow's request on an upstream connection (owner
 * ops: the response is hashed, never forwarded), and the comparison once
 * both sides are over.  Counters and the mismatch ring live in mirror.c.
 *
 * A copy's life: building (the request body is still coming) -> queued ->
 * in flight -> shadow done; it is compared and freed when the primary is
 * done too (or freed uncompared when the client left).  Worker thread only.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "http/headers.h"
#include "proxy/proxy_internal.h"

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
	struct upconn *conn;
	struct proxy_table *table;       /* reference: keeps ver valid */
	const struct proxy_version *ver; /* the shadow version */
	char method[16];
	char path[MIRROR_PATH_MAX];
	struct buf head, body; /* last: kept (with their storage) on the free list */
};

static void mreq_shadow_done(struct mreq *r, int failed);
static int mreq_send(struct mreq *r);

static void mreq_free(struct mreq *r)
{
	struct mirror_worker *mw = &r->w->mw;

	if (r->conn) {
		upconn_close(r->conn);
		r->conn = NULL;
	}
	snap_obj_unref(r->table ? &r->table->obj : NULL);
	r->table = NULL;
	if (r->prev)
		r->prev->next = r->next;
	else
		mw->live = r->next;
	if (r->next)
		r->next->prev = r->prev;
	mw->pending--;
	if (mw->nfree >= MIRROR_MAX_PENDING) {
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
	r->qnext = mw->free;
	mw->free = r;
	mw->nfree++;
}

/* ---- the shadow's side of the upstream connection ---- */

static int shadow_head(struct upconn *u, const struct http_msg *m, void *owner)
{
	struct mreq *r = owner;

	r->shadow_status = m->status;
	return 0;
}

static int shadow_body(struct upconn *u, const char *p, size_t len, void *owner)
{
	struct mreq *r = owner;

	if (r->compare_body && r->sh_n < r->body_cap) {
		size_t n = len < r->body_cap - r->sh_n ? len : (size_t)(r->body_cap - r->sh_n);

		r->sh = mirror_hash(r->sh, p, n);
		r->sh_n += n;
	}
	return 0; /* hashed and dropped as it comes */
}

static void shadow_done(struct upconn *u, int keep_alive, void *owner)
{
	struct mreq *r = owner;

	r->conn = NULL;
	upconn_release(u, keep_alive);
	mreq_shadow_done(r, 0);
}

/* The shadow failed: retry once on a new connection when a pooled one had
 * been closed by the upstream, else it is a shadow_error. */
static void shadow_fail(struct upconn *u, enum metrics_err kind, int stale, void *owner)
{
	struct mreq *r = owner;

	r->conn = NULL;
	if (stale && !r->retried) {
		r->retried = 1;
		if (mreq_send(r) == 0)
			return;
	}
	mreq_shadow_done(r, 1);
}

static const struct upconn_ops shadow_ops = {
    .head = shadow_head,
    .body = shadow_body,
    .done = shadow_done,
    .fail = shadow_fail,
};

/*
 * Puts r on a shadow connection.  0 when r was handed to one (its outcome
 * then comes through shadow_ops, possibly before this returns), -1 when no
 * connection could be had (r is untouched).
 */
static int mreq_send(struct mreq *r)
{
	struct worker *w = r->w;
	int err = 0, rc;
	struct upconn *u = upconn_get(&w->up, r->ver, r->ep, &shadow_ops, r, &err);
	struct buf *o;
	struct upconn_req rq = {.connect_ms = r->connect_ms,
	                        .response_ms = r->response_ms,
	                        .idle_ms = r->idle_ms,
	                        .head_req = r->head_req};

	if (!u)
		return -1;
	o = upconn_out(u);
	rc = buf_append(o, buf_head(&r->head), buf_used(&r->head));
	if (!rc && r->has_body) {
		if (!(rc = buf_append_lit(o, "Content-Length: ")) &&
		    !(rc = buf_append_u64(o, buf_used(&r->body))))
			rc = buf_append_lit(o, "\r\n");
	}
	if (!rc)
		rc = buf_append_lit(o, "\r\n");
	if (!rc)
		rc = buf_append(o, buf_head(&r->body), buf_used(&r->body));
	if (rc) {
		upconn_close(u);
		return -1;
	}
	r->conn = u;
	upconn_start(u, &rq);
	return 0;
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
	struct mirror_worker *mw = &w->mw;

	while (mw->q_head && mw->inflight < MIRROR_MAX_INFLIGHT) {
		struct mreq *r = mw->q_head;

		mw->q_head = r->qnext;
		if (!mw->q_head)
			mw->q_tail = NULL;
		r->qnext = NULL;
		r->state = M_INFLIGHT;
		r->shadow_start_us = clock_mono_us();
		mw->inflight++;
		if (mreq_send(r) != 0) {
			mw->inflight--;
			r->state = M_SHADOW_DONE;
			r->shadow_failed = 1;
			mreq_maybe_finish(r);
		}
	}
}

static void pump_cb(struct loop *loop, struct loop_defer *d)
{
	mirror_pump(d->data);
}

/*
 * The shadow requests go out at the end of the loop turn, after every
 * client and primary of the turn: the writes to the shadow cluster (the
 * shadow upstream is woken once for many of them, not once per request)
 * and they never delay a primary's request or response.
 */
static void mirror_pump_later(struct worker *w)
{
	loop_defer(w->loop, &w->mw.pump, pump_cb, w);
}

static void mreq_shadow_done(struct mreq *r, int failed)
{
	struct worker *w = r->w;

	r->shadow_failed = failed || r->shadow_status == 0;
	r->shadow_us = clock_mono_us() - r->shadow_start_us;
	r->state = M_SHADOW_DONE;
	w->mw.inflight--;
	mreq_maybe_finish(r);
	mirror_pump_later(w);
}

void mirror_dispatch(struct mreq *r)
{
	struct worker *w = r->w;
	struct mirror_worker *mw = &w->mw;

	r->state = M_QUEUED;
	r->qnext = NULL;
	mirror_stats_sent(w->p->mstats, r->slot, w->id);
	if (mw->q_tail)
		mw->q_tail->qnext = r;
	else
		mw->q_head = r;
	mw->q_tail = r;
	mirror_pump_later(w);
}

int mirror_building(const struct mreq *r)
{
	return r->state == M_BUILDING;
}

void mirror_copy_body(struct mreq **rp, const char *p, size_t len)
{
	struct mreq *r = *rp;

	if (!r || r->state != M_BUILDING || buf_append(&r->body, p, len) == 0)
		return;
	/* over mirror.body_cap: this request is not mirrored */
	mirror_stats_count(r->w->p->mstats, r->slot, r->w->id, MIRROR_TOO_LARGE);
	mreq_free(r);
	*rp = NULL;
}

void mirror_primary_body(struct mreq *r, const char *p, size_t len)
{
	size_t n;

	if (!r->compare_body || r->ph_n >= r->body_cap)
		return;
	n = len < r->body_cap - r->ph_n ? len : (size_t)(r->body_cap - r->ph_n);
	r->ph = mirror_hash(r->ph, p, n);
	r->ph_n += n;
}

int mirror_primary_done(struct mreq *r, int status, uint64_t latency_us, int gone)
{
	if (r->state == M_BUILDING && gone) {
		/* abandoned before the request was read: nothing was sent */
		mreq_free(r);
		return 0;
	}
	r->primary_done = 1;
	r->primary_gone = gone;
	r->primary_status = status;
	r->primary_us = latency_us;
	if (r->state == M_BUILDING)
		return 1; /* answered before the body was read: the copy is completed first */
	mreq_maybe_finish(r);
	return 0;
}

static int method_listed(const struct config_strlist *l, struct str method)
{
	for (size_t i = 0; i < l->n; i++)
		if (str_eq_c(method, l->v[i]))
			return 1;
	return 0;
}

static void copy_trunc(char *dst, size_t cap, struct str s)
{
	size_t n = s.len < cap - 1 ? s.len : cap - 1;

	if (n)
		memcpy(dst, s.p, n);
	dst[n] = '\0';
}

/* A copy from the free list, or a new one; NULL when out of memory. */
static struct mreq *mreq_alloc(struct mirror_worker *mw, uint64_t body_cap)
{
	struct mreq *r = mw->free;

	if (r) {
		mw->free = r->qnext;
		mw->nfree--;
		return r;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	buf_init(&r->head, PROXY_HEAD_CAP);
	buf_init(&r->body, body_cap);
	return r;
}

struct mreq *mirror_begin(struct worker *w, struct proxy_table *t, const struct proxy_service *svc,
                          int primary, const struct http_msg *m, int head_req, int has_body,
                          struct str peer, struct str rid)
{
	/* the body goes de-chunked with its own Content-Length */
	static const char *const shadow_skip[] = {"x-forwarded-for", "x-forwarded-proto", "expect",
	                                          "content-length", "x-canary-shadow"};
	struct mirror_worker *mw = &w->mw;
	const struct proxy_mirror *mi = &svc->mirror;
	struct mirror_stats *ms = w->p->mstats;
	const struct proxy_version *v;
	struct mreq *r;
	struct buf *o;
	const struct str *xff;
	int rc;

	if (mi->version < 0 || mi->version == primary ||
	    worker_rng(w) % BUCKET_COUNT >= mi->percent)
		return NULL;
	if (!method_listed(mi->methods, m->method)) {
		mirror_stats_count(ms, svc->stats_slot, w->id, MIRROR_METHOD);
		return NULL;
	}
	if (m->has_content_length && m->content_length > mi->body_cap) {
		mirror_stats_count(ms, svc->stats_slot, w->id, MIRROR_TOO_LARGE);
		return NULL;
	}
	v = &svc->versions[mi->version];
	if (mw->pending >= MIRROR_MAX_PENDING || v->neps == 0) {
		mirror_stats_count(ms, svc->stats_slot, w->id, MIRROR_DROPPED);
		return NULL;
	}
	r = mreq_alloc(mw, mi->body_cap);
	if (!r) {
		mirror_stats_count(ms, svc->stats_slot, w->id, MIRROR_DROPPED);
		return NULL;
	}
	memset(r, 0, offsetof(struct mreq, head));
	r->head.cap = PROXY_HEAD_CAP;
	r->body.cap = mi->body_cap;
	r->w = w;
	r->state = M_BUILDING;
	r->slot = svc->stats_slot;
	r->ep = upstream_pick(&w->up, v);
	r->ver = v;
	r->connect_ms = svc->timeouts.connect_ms;
	r->response_ms = svc->timeouts.response_ms;
	r->idle_ms = svc->timeouts.idle_ms;
	r->body_cap = mi->body_cap;
	r->compare_body = mi->compare_body;
	r->head_req = head_req;
	r->has_body = has_body;
	r->ph = r->sh = MIRROR_HASH_INIT;
	copy_trunc(r->method, sizeof(r->method), m->method);
	copy_trunc(r->path, sizeof(r->path), m->path);

	o = &r->head;
	xff = http_msg_header(m, "x-forwarded-for");
	rc = headers_request_line(o, m);
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
	buf_append(o, peer.p, peer.len);
	buf_append_lit(o, "\r\nX-Forwarded-Proto: http\r\n");
	buf_append(o, rid.p, rid.len);
	if (buf_append_lit(o, "X-Canary-Shadow: 1\r\n") || rc) {
		/* the head did not fit its cap: not mirrored */
		mirror_stats_count(ms, svc->stats_slot, w->id, MIRROR_TOO_LARGE);
		buf_release(&r->head);
		buf_release(&r->body);
		free(r);
		return NULL;
	}
	r->table = (struct proxy_table *)snap_obj_ref(&t->obj);
	r->prev = NULL;
	r->next = mw->live;
	if (mw->live)
		mw->live->prev = r;
	mw->live = r;
	mw->pending++;
	return r;
}

void mirror_shutdown(struct worker *w)
{
	struct mirror_worker *mw = &w->mw;

	mw->q_head = mw->q_tail = NULL;
	while (mw->live)
		mreq_free(mw->live);
	while (mw->free) {
		struct mreq *r = mw->free;

		mw->free = r->qnext;
		buf_release(&r->head);
		buf_release(&r->body);
		free(r);
	}
	mw->nfree = 0;
}
