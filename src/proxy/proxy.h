/*
 * proxy.h - the data plane: N worker threads, each with its own loop, one
 * SO_REUSEPORT listener per configured listener, client connections and
 * keep-alive upstream pools (SPEC 4).
 *
 * The control thread builds routing tables (table.h) and publishes them with
 * proxy_publish(); each worker takes the new table at the start of its next
 * loop turn (the publish also wakes every worker, so an idle worker applies
 * it at once) and records the revision it applied, which is how the engine
 * measures time to mitigate.  Requests in flight keep the table they were
 * routed with.  Workers never block: no disk, no DNS, no store, no locks on
 * the request path.
 */
#ifndef PROXY_PROXY_H
#define PROXY_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/registry.h"
#include "proxy/table.h"

struct proxy;
struct metrics_registry;

#define PROXY_MAX_WORKERS 64
#define PROXY_MAX_SERIES  4096 /* metrics series ids counted in flight: 0..this-1 */

/*
 * Creates a proxy with nworkers threads (not started).  metrics may be NULL
 * (nothing recorded).  seed makes the random choices (sticky none, request
 * ids, cookie keys) reproducible; 0 picks one from the clock.
 */
struct proxy *proxy_new(unsigned nworkers, struct metrics_registry *metrics, uint64_t seed);

/* The workers' I/O path for plain TCP connections (config `io:`). */
enum proxy_io {
	PROXY_IO_EPOLL = 0, /* read/writev per call, epoll_wait per turn */
	PROXY_IO_AUTO,      /* io_uring when it works here, else epoll (one log line) */
	PROXY_IO_URING,     /* io_uring or proxy_start() fails */
};

/*
 * Chooses the I/O path before proxy_start().  The environment variable
 * CANARYD_IO (auto|epoll|uring), when set, overrides it (tests use it to
 * force a path).
 */
void proxy_set_io(struct proxy *p, enum proxy_io io);

/* The path the workers run on after proxy_start(): "epoll" or "uring". */
const char *proxy_io_name(const struct proxy *p);

/* The endpoint registry the tables of this proxy must be built with. */
struct proxy_registry *proxy_registry(struct proxy *p);

/*
 * Publishes t (steals the reference) and wakes every worker.  Returns the
 * revision; proxy_applied() tells when every worker routes with it.  Before
 * proxy_start() it just sets the first table.
 */
uint64_t proxy_publish(struct proxy *p, struct proxy_table *t);

/* 1 when every worker has applied revision rev (or a later one). */
int proxy_applied(struct proxy *p, uint64_t rev);

/* The currently published table with a new reference (caller unrefs), or NULL. */
struct proxy_table *proxy_table_get(struct proxy *p);

/*
 * Starts the workers; each binds the table's listeners with SO_REUSEPORT.
 * Returns 0, or -1 with a message in err (a listener could not be bound).
 */
int proxy_start(struct proxy *p, char *err, size_t errlen);

/* 1 if listener name is bound on every worker. */
int proxy_listener_up(struct proxy *p, const char *name);

/*
 * Graceful stop: stop accepting, let requests in flight finish for at most
 * deadline_ms, close everything, join the threads.  Blocks the caller.
 */
void proxy_stop(struct proxy *p, uint64_t deadline_ms);

/* Frees a stopped (or never started) proxy. */
void proxy_free(struct proxy *p);

/* Number of open client connections across workers (approximate). */
uint64_t proxy_client_conns(struct proxy *p);

/*
 * Requests in flight to metrics series `series` (a (service, version), see
 * metrics_series_id), summed over the workers: counted from the routing
 * decision until the response is complete, failed or the client is gone.
 * Each worker writes its own counters (no lock on the request path); the sum
 * may lag a request that is starting or ending while it is read.  A draining
 * version gets no new request, so its count only goes down.  Returns the
 * count, or -ERANGE for a series id outside 0..PROXY_MAX_SERIES-1.
 * Any thread.
 */
long proxy_inflight(struct proxy *p, int series);

#define PROXY_SAMPLE_RING 128 /* requests kept per (worker, version) */
#define PROXY_SAMPLE_PATH 128 /* path bytes kept, NUL included */

/*
 * One request a version served, as the canary request sample keeps it
 * (issue 16, the evidence of a decision): its X-Request-Id (the incoming
 * one or the proxy's, truncated; empty when the proxy answered before
 * forwarding), method, path (truncated; never the query, which may carry
 * secrets),
 * final status (the proxy's own for local answers: 502, 504, a fault's
 * abort status...), latency from
 * the request head to the end of the response, and the wall-clock time the
 * exchange ended.  Strings are NUL-terminated.
 */
struct proxy_sample {
	int64_t time_us; /* wall clock, microseconds since the epoch */
	uint64_t latency_us;
	int status;
	char method[16];
	char path[PROXY_SAMPLE_PATH];
	char request_id[64];
};

/*
 * The last requests version of service served, newest first, merged over
 * the workers (each keeps its own ring of PROXY_SAMPLE_RING per version,
 * written without locks; src/proxy/sample.h): copies up to max into out.
 * Returns the count (0 when the version served nothing yet), ERR_NOTFOUND
 * for a service or version the published table lacks, or -ENOMEM.  Any
 * thread but a worker.
 */
int proxy_samples(struct proxy *p, const char *service, const char *version,
                  struct proxy_sample *out, int max);

#endif
