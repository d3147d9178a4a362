/*
 * proxy_internal.h - the types the proxy's worker-side files share, and
 * what each of them offers the others.  Internal to src/proxy.
 *
 *   worker.c         worker threads, listeners, table apply, the proxy_* API
 *   exchange.c       client connections and their exchange (request in,
 *                    response out), faults, the request sample
 *   upstream.c       the one upstream connection type (upstream.h)
 *   mirror_worker.c  the worker side of mirroring: the request copy, its
 *                    queue, the shadow's exchange and the comparison
 *
 * Calls go worker -> exchange -> mirror_worker -> upstream, never back: the
 * upstream reports to its owner through struct upconn_ops.
 *
 * Threads: a struct worker and everything hanging off it belong to its
 * thread, except the fields marked atomic (read by the control thread).
 */
#ifndef PROXY_INTERNAL_H
#define PROXY_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "core/loop.h"
#include "core/snapshot.h"
#include "core/str.h"
#include "http/parser.h"
#include "proxy/mirror.h"
#include "proxy/proxy.h"
#include "proxy/sample.h"
#include "proxy/upstream.h"

#define PROXY_READ_CHUNK   16384
#define PROXY_CONN_BUF_CAP (1u << 20)   /* client input/output cap */
#define PROXY_HIGH_WATER   (256u << 10) /* stop reading the other side above this */
#define PROXY_HEAD_CAP     (64u << 10)  /* a forwarded request head (primary or shadow) */
#define MAX_LISTENERS      32
#define MAX_DELAYED        1024 /* requests held by a delay fault at once, per worker */

/* Per worker bounds of shadow traffic (docs/proxy.md). */
#define MIRROR_MAX_PENDING  256  /* mirrored requests alive (building, queued, in flight) */
#define MIRROR_MAX_INFLIGHT 64   /* shadow requests on the wire at once */
#define MIRROR_KEEP_BUF     4096 /* request buffers larger than this are not kept for reuse */

struct worker;
struct cconn;
struct mreq;

struct wlistener {
	struct loop_io io;
	struct worker *w;
	char addr[300];
	int tindex; /* index in the worker's current table; -1: removed */
	int fd;
};

/* A worker's mirrored requests (mirror_worker.c). */
struct mirror_worker {
	struct mreq *live;            /* every mirrored request alive */
	struct mreq *q_head, *q_tail; /* waiting for an in-flight slot */
	struct mreq *free;            /* reusable */
	unsigned nfree, pending, inflight;
	struct loop_defer pump; /* starts queued copies at the end of the turn */
};

struct worker {
	struct proxy *p;
	unsigned id;
	pthread_t th;
	struct loop *loop;
	struct proxy_table *table;
	struct wlistener ls[MAX_LISTENERS];
	unsigned nls;
	struct upstream up;   /* pools, endpoint choice */
	struct buf_pool bufs; /* connection buffer storage (client and upstream) */
	struct mirror_worker mw;
	unsigned ndelayed;
	uint64_t rng;
	struct cconn *conns;
	atomic_uint nconns;
	_Atomic uint64_t applied_rev;
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
	struct sample_store *samples;
	_Atomic int32_t *inflight; /* nworkers x PROXY_MAX_SERIES, one region per worker */
	int started;
	enum proxy_io io; /* asked for (proxy_set_io) */
	int use_uring;    /* decided by proxy_start: workers enable their ring */
};

/* The worker's generator (splitmix64): keys, ids, sampling; reproducible by seed. */
static inline uint64_t worker_rng(struct worker *w)
{
	uint64_t z = (w->rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* ---- exchange.c: client connections ---- */

/* Takes the accepted fd (steals it: closed on failure) as a client of wl. */
void client_accept(struct worker *w, struct wlistener *wl, int fd,
                   const struct sockaddr_storage *ss);
/* Stop: idle keep-alive clients close now, busy ones after their response. */
void clients_begin_stop(struct worker *w);
/* Closes every client connection (stop deadline, worker end). */
void clients_close_all(struct worker *w);
/* The drain deadline passed: requests still in flight on draining versions are cut. */
void clients_drain_deadline(struct worker *w);

/* ---- mirror_worker.c: the worker side of mirroring ---- */

/*
 * Samples the request m (routed to version `primary` of svc in table t) for
 * svc's mirror and, when taken, starts its copy: the head as the shadow
 * gets it (peer: the client's address; rid: the X-Request-Id line the
 * primary got, if the proxy added one).  Returns the copy (building: the
 * body follows through mirror_copy_body()) or NULL (not sampled, or counted
 * as method / too_large / dropped).
 */
struct mreq *mirror_begin(struct worker *w, struct proxy_table *t, const struct proxy_service *svc,
                          int primary, const struct http_msg *m, int head_req, int has_body,
                          struct str peer, struct str rid);
/* 1 while r is still collecting its request body. */
int mirror_building(const struct mreq *r);
/*
 * Appends request body bytes to r's copy.  Over the mirror's body_cap the
 * request is not mirrored (counted too_large): r is freed and *rp cleared.
 */
void mirror_copy_body(struct mreq **rp, const char *p, size_t len);
/* The request was read completely: queue r's copy for the shadow. */
void mirror_dispatch(struct mreq *r);
/* Hashes a piece of the primary's response body (when bodies are compared). */
void mirror_primary_body(struct mreq *r, const char *p, size_t len);
/*
 * The primary is over: status and latency, or gone (the client left: no
 * comparison).  Returns 1 when r is still building (the primary answered
 * before the request body was read): the caller keeps feeding the body
 * with mirror_copy_body() and ends it with mirror_dispatch() or
 * mirror_primary_done(r, 0, 0, 1); 0 when r is no longer the caller's.
 */
int mirror_primary_done(struct mreq *r, int status, uint64_t latency_us, int gone);
/* Frees every mirrored request (worker end; the pools are closed by the caller). */
void mirror_shutdown(struct worker *w);

#endif
