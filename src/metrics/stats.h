/*
 * stats.h - per-cohort request metrics of the data plane (docs/metrics.md).
 *
 * A registry holds series keyed by (service, version).  Each series owns one
 * slot per (worker, cohort) with request, status-class and upstream-error
 * counters and a latency histogram (metrics/hist.h).  A slot is written only
 * by its worker thread, with plain relaxed atomic stores (no locked
 * instructions, no allocation, no lock): metrics_record().  The control
 * thread sums the workers' slots into a cumulative snapshot (metrics_read())
 * and takes per-interval deltas of consecutive snapshots
 * (metrics_snapshot_delta()), which is what the judge consumes; /metrics is
 * rendered from the same snapshots (metrics_write_prometheus()).
 *
 * Threads:
 *  - metrics_registry_new/free: control thread, free only after every worker
 *    stopped recording.
 *  - metrics_series_id/find: control threads (serialised by an internal
 *    mutex), never on the request path; safe while workers record.
 *  - metrics_record: worker w only, for its own w; lock-free and wait-free.
 *  - metrics_read, metrics_series_count/name, metrics_write_prometheus: any
 *    non-worker thread, concurrently with recording workers.
 *  - metrics_split_record: worker w only, like metrics_record;
 *    metrics_split_reset/read: the control thread.
 *  - snapshot helpers: pure functions on caller-owned values.
 */
#ifndef METRICS_STATS_H
#define METRICS_STATS_H

#include <stdint.h>

#include "core/bucket.h"
#include "core/buf.h"
#include "core/str.h"
#include "metrics/hist.h"

/* Why the proxy, not the upstream, produced (or cut short) a response. */
enum metrics_err {
	METRICS_ERR_NONE = 0,         /* the upstream answered: a normal record */
	METRICS_ERR_CONNECT_REFUSED,  /* connect() refused -> 502 */
	METRICS_ERR_CONNECT_TIMEOUT,  /* connect timeout -> 504 */
	METRICS_ERR_RESET,            /* connection reset/closed mid-exchange -> 502 */
	METRICS_ERR_RESPONSE_TIMEOUT, /* header/response timeout -> 504 */
	METRICS_ERR_BAD_RESPONSE,     /* unparsable upstream response -> 502 */
	METRICS_ERR_NO_ENDPOINT,      /* no usable endpoint (all ejected/draining) -> 503 */
	METRICS_ERR_COUNT,
};

/* Status classes: [0] = anything outside 100..599 (e.g. 0: no response
 * sent), [1]..[5] = 1xx..5xx. */
#define METRICS_CLASSES 6

/* Bounds: series names longer than this are refused with -EINVAL. */
#define METRICS_NAME_MAX 255

struct metrics_registry;

/* One cohort of one series, summed over workers.  A plain value. */
struct metrics_cohort_snapshot {
	uint64_t requests;
	uint64_t by_class[METRICS_CLASSES];
	uint64_t errors;       /* 5xx responses or proxy errors (each request once) */
	uint64_t proxy_errors; /* records with kind != METRICS_ERR_NONE */
	uint64_t upstream[METRICS_ERR_COUNT]; /* by kind; [METRICS_ERR_NONE] is 0 */
	struct hist hist;                     /* latency in us; hist.sum_us = exact sum */
};

/* "connect_refused", "connect_timeout", "reset", "response_timeout",
 * "bad_response", "no_endpoint"; "none" for METRICS_ERR_NONE; "unknown"
 * out of range.  Static strings. */
const char *metrics_err_name(enum metrics_err kind);

/*
 * Creates a registry for nworkers worker threads (workers numbered
 * 0..nworkers-1) and at most max_series series.  Allocates only the series
 * pointer table (max_series pointers); each series' slots are allocated when
 * it is created.  Returns NULL when nworkers or max_series is 0, too large, or
 * out of memory.  The caller owns it: metrics_registry_free().
 */
struct metrics_registry *metrics_registry_new(unsigned nworkers, unsigned max_series);
/* Frees reg and every series.  No thread may use reg afterwards (stop the
 * workers first).  NULL is accepted. */
void metrics_registry_free(struct metrics_registry *reg);

/*
 * The id of series (service, version), created with zeroed counters on first
 * use.  Idempotent: the same names always give the same id; ids are dense
 * (0, 1, 2, ...) and never reused while reg lives, so a config reload that
 * asks again keeps the counters.  The names are copied.
 * Returns the id (>= 0), -EINVAL (NULL/empty name, longer than
 * METRICS_NAME_MAX), -ENOSPC (max_series reached), -ENOMEM.
 * Control threads only: allocates and takes a mutex; O(series) lookup.
 */
int metrics_series_id(struct metrics_registry *reg, const char *service, const char *version);
/* The id of an existing series, or -ENOENT.  Never creates.  Same threads. */
int metrics_series_find(struct metrics_registry *reg, const char *service, const char *version);
/* Number of series created so far; ids are 0..count-1.  Any thread. */
unsigned metrics_series_count(const struct metrics_registry *reg);
/*
 * The names of series id in *service and *version (either may be NULL).
 * The strings belong to reg and stay valid and unchanged until
 * metrics_registry_free().  Returns 0 or -ENOENT.  Any thread.
 */
int metrics_series_name(const struct metrics_registry *reg, int series, const char **service,
                        const char **version);

/*
 * Records one proxied request on worker's slot of (series, cohort): status is
 * the HTTP status sent to the client (0 if none was), latency_us the time
 * from request received to response complete, kind METRICS_ERR_NONE for a
 * response from the upstream, or why the proxy produced/cut short the
 * response itself (a proxy error: counted in errors, proxy_errors and
 * upstream[kind] whatever the status).
 * Worker thread `worker` only, for its own index (a slot has a single
 * writer); never blocks, never allocates, no locked instructions.  Records
 * with an out-of-range worker, cohort or series id are dropped silently.
 */
void metrics_record(struct metrics_registry *reg, unsigned worker, int series, enum cohort cohort,
                    int status, uint64_t latency_us, enum metrics_err kind);

/*
 * Fills *out with the cumulative totals of (series, cohort) since the series
 * was created, summed over all workers.  Reads race with writers by design:
 * each counter is exact and monotone, and within one snapshot requests >=
 * every other count (errors, by_class sum, hist.n); counters may miss the
 * records completed while the read ran, which the next read includes.
 * Returns 0, -ENOENT (unknown series) or -EINVAL (bad cohort).  Any
 * non-worker thread; O(nworkers * HIST_BUCKETS).
 */
int metrics_read(const struct metrics_registry *reg, int series, enum cohort cohort,
                 struct metrics_cohort_snapshot *out);

/*
 * out = b - a for two cumulative snapshots of the same (series, cohort), a
 * taken before b: the interval's counts and histogram.  Every counter
 * saturates at 0, errors and proxy_errors are capped at requests (a read
 * can tear by the records in flight, see metrics_read).  out may alias a
 * or b.  Pure.
 */
void metrics_snapshot_delta(const struct metrics_cohort_snapshot *a,
                            const struct metrics_cohort_snapshot *b,
                            struct metrics_cohort_snapshot *out);

/*
 * Derived numbers (SPEC 5) of a snapshot or delta.  Each returns NAN when
 * the snapshot holds no requests (no data is not 0%: check requests /
 * min_samples first).  Pure.
 *  - error_rate: errors / requests (5xx and proxy errors).
 *  - success_rate: 1 - error_rate (non-5xx, non-proxy-error share; 4xx are
 *    successes of the service, as in Flagger's request-success-rate).
 *  - request_rate: requests / seconds (NAN also when seconds <= 0).
 *  - latency_quantile_us: the q-quantile (q in [0, 1], 0.99 = p99) from the
 *    histogram, a bucket midpoint within 3.125% of the exact value (hist.h).
 *  - latency_mean_us: exact mean, hist.sum_us / hist.n.
 */
double metrics_error_rate(const struct metrics_cohort_snapshot *s);
double metrics_success_rate(const struct metrics_cohort_snapshot *s);
double metrics_request_rate(const struct metrics_cohort_snapshot *s, double seconds);
double metrics_latency_quantile_us(const struct metrics_cohort_snapshot *s, double q);
double metrics_latency_mean_us(const struct metrics_cohort_snapshot *s);

/*
 * Appends the SPEC 8 data-plane families in Prometheus text format 0.0.4,
 * each with HELP and TYPE lines:
 *   canaryd_requests_total{service,version,cohort,code}      counter
 *   canaryd_request_duration_seconds{service,version,cohort} histogram
 *   canaryd_upstream_errors_total{service,version,kind}      counter
 * Only (series, cohort) pairs that saw a request are written; for those,
 * code="2xx" always and other classes ("1xx".."5xx", "other") when non-zero;
 * upstream kinds only when non-zero.  Returns 0, or the buf error (-ENOBUFS
 * past out's cap, -ENOMEM) with out holding a truncated text.
 * Any non-worker thread.
 */
int metrics_write_prometheus(const struct metrics_registry *reg, struct buf *out);

/*
 * Units placed by the bucket split (the sample-ratio mismatch guard,
 * analysis/srm.h).  Each series also keeps, per worker, for the canary and
 * baseline cohorts only, the requests the split placed (overrides excluded)
 * and a HyperLogLog sketch of their distinct stickiness keys
 * (metrics/hll.h), counted since the series' last metrics_split_reset().
 * A reset bumps the series' generation; a worker whose slot holds an older
 * generation clears it before its next record, and readers skip slots of an
 * older generation, so a reset never waits for or locks out a worker.
 */
struct metrics_split_snapshot {
	uint64_t requests; /* exact */
	double keys;       /* estimated distinct keys, relative error HLL_REL_ERR */
};

/*
 * Records one request that the bucket split (not an override) placed in
 * cohort, with key_hash = bucket_hash() of its stickiness key (a random key
 * when it had none).  Cohorts other than canary and baseline are ignored.
 * Worker thread `worker` only; never blocks, never allocates, no locked
 * instruction (the first record after a reset clears the slot's 4 KiB
 * sketch).  Out-of-range worker or series: dropped.
 */
void metrics_split_record(struct metrics_registry *reg, unsigned worker, int series,
                          enum cohort cohort, uint32_t key_hash);

/*
 * Starts a new count for series (both cohorts): what was recorded before is
 * no longer read.  Unknown series: no-op.  Control thread (the one that
 * calls metrics_split_read()).
 */
void metrics_split_reset(struct metrics_registry *reg, int series);

/*
 * Fills *out with the split's units in (series, cohort) since the last
 * reset, merged over workers.  A record racing with the read may or may not
 * be included.  Returns 0, -ENOENT (unknown series) or -EINVAL (cohort other
 * than canary or baseline).  Control thread; O(nworkers * HLL_M), 4 KiB of
 * stack.
 */
int metrics_split_read(const struct metrics_registry *reg, int series, enum cohort cohort,
                       struct metrics_split_snapshot *out);

/* Prometheus text pieces shared with the mirror families (proxy/mirror.c). */

/* Appends s as a label value, with \, " and newline escaped.  0 or the buf error. */
int metrics_prom_label(struct buf *out, const char *s);

/*
 * Appends one histogram series: name_bucket{labels,le="..."} for each of the
 * fixed bounds (0.0005 s .. 10 s) and +Inf, name_sum{labels} in seconds and
 * name_count{labels}.  labels: the label pairs, already escaped, without the
 * braces (not NUL-terminated).  0, or the buf error with out truncated.
 */
int metrics_prom_hist(struct buf *out, const char *name, struct str labels, const struct hist *h);

#endif
