/*
 * upstream.h - the one upstream connection type of a worker: connect
 * (through the transport the proxy picks), send a request, parse the
 * response and report it to the connection's owner through an ops table,
 * then go back to the worker's per-endpoint keep-alive pool; plus the
 * endpoint choice (round-robin over the endpoints not ejected) and the
 * outlier accounting that ejects them.
 *
 * Two owners use it: the client exchange (exchange.c), which streams the
 * response to its client, and the shadow of a mirrored request
 * (mirror_worker.c), which hashes and compares it.  This file never calls
 * back into either except through struct upconn_ops.
 *
 * Threads: everything runs on the worker whose loop the struct upstream
 * belongs to.  Lifetimes: an upconn has at most one owner; it is owned from
 * upconn_get() until the owner gives it back (upconn_release() from the
 * done callback, or upconn_close()), or until ops->fail, before which it
 * has already been detached and closed.  A closed upconn is freed at the
 * end of the loop turn (deferred close), so a callback never sees freed
 * memory.
 */
#ifndef PROXY_UPSTREAM_H
#define PROXY_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/loop.h"
#include "http/parser.h"
#include "metrics/stats.h"
#include "net/transport.h"
#include "proxy/registry.h"
#include "proxy/table.h"

#define UPSTREAM_READ_CHUNK      16384
#define UPSTREAM_BUF_CAP         (1u << 20)   /* input/output cap per connection */
#define UPSTREAM_HIGH_WATER      (256u << 10) /* stop reading above this */
#define UPSTREAM_MAX_IDLE_PER_EP 128

struct upconn;

/*
 * How an upconn reports to its owner.  `owner` is the pointer given to
 * upconn_get().  head, body and done run while the upconn parses input.
 */
struct upconn_ops {
	/*
	 * The final response head (1xx interim responses are skipped; 101
	 * counts as final).  Return 0, or non-zero to fail the exchange as a
	 * bad response.
	 */
	int (*head)(struct upconn *u, const struct http_msg *m, void *owner);
	/*
	 * A piece of decoded body, valid during the call.  Return 0,
	 * HTTP_PARSER_PAUSE to stop reading until upconn_resume(), or another
	 * non-zero value to fail the exchange as a bad response.
	 */
	int (*body)(struct upconn *u, const char *p, size_t len, void *owner);
	/*
	 * The response is complete; keep_alive: the upstream allows reuse.
	 * The owner must give u back with upconn_release() during this call,
	 * before anything that could ask for a connection to the same endpoint.
	 */
	void (*done)(struct upconn *u, int keep_alive, void *owner);
	/*
	 * The connection failed before the response was complete: u is already
	 * detached and closed (do not use it).  stale: u had been reused from
	 * the pool and got no response byte (the upstream had closed it while
	 * idle): the request may be retried on a new connection.
	 */
	void (*fail)(struct upconn *u, enum metrics_err kind, int stale, void *owner);
	/* Optional: input of one read turn was parsed (the owner may flush what head/body wrote). */
	void (*parsed)(struct upconn *u, void *owner);
	/* Optional: everything queued was written (the owner may send more body). */
	void (*drained)(struct upconn *u, void *owner);
};

/* The per-endpoint pools of idle connections, one per worker. */
struct upconn_pool {
	struct upconn *head;
	unsigned n;
};

/* A worker's upstream side (embedded in the worker). */
struct upstream {
	struct loop *loop;
	struct proxy_registry *reg;
	uint32_t rr;  /* round-robin position of upstream_pick() */
	int stopping; /* set when the worker stops: no connection goes back to a pool */
	unsigned max_idle_per_ep;
	struct buf_pool *bufs; /* buffer storage of the connections; NULL (the default): malloc */
	struct upconn_pool pools[PROXY_MAX_ENDPOINTS];
};

/* What upconn_start() needs to know about the request. */
struct upconn_req {
	uint64_t connect_ms;  /* connect (and handshake) timeout */
	uint64_t response_ms; /* request sent to response head, and between body reads */
	uint64_t idle_ms;     /* kept this long in the pool afterwards */
	int head_req;         /* HEAD: the response has no body */
	int upload; /* a request body follows: its progress restarts the response timeout */
};

/*
 * Sets up us for loop and reg (pools empty, buffers from malloc; the worker
 * points us->bufs at its buffer pool afterwards, which must outlive every
 * upconn of us).
 */
void upstream_init(struct upstream *us, struct loop *loop, struct proxy_registry *reg);

/*
 * An idle pooled connection to endpoint ep, or a new non-blocking connect
 * whose transport proxy_transport_upstream() picks for version v.  The
 * caller becomes the owner (ops, owner).  NULL with *err (a positive errno)
 * when no connection could be made.
 */
struct upconn *upconn_get(struct upstream *us, const struct proxy_version *v, uint32_t ep,
                          const struct upconn_ops *ops, void *owner, int *err);

/*
 * The output buffer: the owner appends the request head and body bytes
 * (capped at UPSTREAM_BUF_CAP), then calls upconn_flush().
 */
struct buf *upconn_out(struct upconn *u);

/*
 * Starts the request whose head is in upconn_out(u): arms the connect or
 * response timeout; what is queued is written at the end of the loop turn
 * (or by an earlier upconn_flush()).  A failure comes later through
 * ops->fail.  Returns 0.
 */
int upconn_start(struct upconn *u, const struct upconn_req *rq);

/*
 * Writes queued bytes (nothing while connecting).  Returns 0, or -1 when
 * the connection failed (ops->fail has run; u is gone).
 */
int upconn_flush(struct upconn *u);

/* Bytes queued for the upstream (backpressure on the owner's input). */
size_t upconn_pending(const struct upconn *u);

/* Resumes reading after ops->body returned HTTP_PARSER_PAUSE (at the end of the turn). */
void upconn_resume(struct upconn *u);

/* 1 while ops->body has paused reading. */
int upconn_paused(const struct upconn *u);

/*
 * Gives u back: reuse (and the pool has room, no unread bytes, the worker
 * is not stopping) puts it in its endpoint's pool for the idle time of its
 * request; otherwise it is closed.  The owner loses u either way.
 */
void upconn_release(struct upconn *u, int reuse);

/* Detaches the owner and closes u now (the client left, the request was cut). */
void upconn_close(struct upconn *u);

/* Closes the idle connections pooled for endpoint ep. */
void upstream_close_idle(struct upstream *us, uint32_t ep);
/* Closes every idle pooled connection. */
void upstream_close_all_idle(struct upstream *us);

/*
 * The endpoint of version v for the next request: round-robin from the
 * worker's position, skipping ejected endpoints; when all are ejected, one
 * of them anyway (never leave a version empty).  v->neps must be > 0.
 */
uint32_t upstream_pick(struct upstream *us, const struct proxy_version *v);

/*
 * Outlier accounting of one finished request to endpoint ep of version v of
 * svc (shared registry counters, relaxed atomics): failed counts towards
 * svc->outlier's consecutive-failure ejection, which never ejects past
 * max_ejected_percent nor the last endpoint standing.
 */
void upstream_outlier_note(struct upstream *us, const struct proxy_service *svc,
                           const struct proxy_version *v, uint32_t ep, int failed);

#endif
