/*
 * mirror.h - shadow traffic bookkeeping: per-service mirror counters, the
 * primary's and the shadow's latency histograms, the ring of the last
 * mismatches, and the response diff (SPEC 4 "Mirror", docs/proxy.md).
 *
 * The worker side of mirroring (copying the request, the shadow's own
 * upstream connection, the bounded queue) lives in mirror_worker.c; this module only
 * holds what is shared with the control thread:
 *
 *  - a registry of per-service slots, created by the control thread when a
 *    routing table gives a service a mirror (mirror_stats_slot()); a slot
 *    is never freed while the proxy lives, so counters are cumulative since
 *    start and survive reloads;
 *  - per (slot, worker) counters and histograms written by that worker only
 *    with relaxed load+store (no locked instruction, no allocation), summed
 *    by readers (mirror_stats_read());
 *  - per slot a ring of the last MIRROR_RING mismatches, written by workers
 *    with a try-lock (a worker never waits: when the lock is busy the entry
 *    is skipped, the counters still count it) and read under the lock.
 */
#ifndef PROXY_MIRROR_H
#define PROXY_MIRROR_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "metrics/hist.h"

struct proxy;

#define MIRROR_RING         50  /* last mismatches kept per service */
#define MIRROR_MAX_SERVICES 256 /* slots per proxy */
#define MIRROR_PATH_MAX     128 /* path bytes kept in a mismatch record */

/*
 * Result of one mirrored request (the `result` label of
 * canaryd_mirror_total).  The first five are SPEC 8's; too_large and
 * method count requests that were sampled but not mirrored.
 */
enum mirror_result {
	MIRROR_MATCHED = 0,     /* same status class (and body hash if compared) */
	MIRROR_STATUS_MISMATCH, /* status classes differ */
	MIRROR_BODY_MISMATCH,   /* same class, body hashes differ (compare_body) */
	MIRROR_SHADOW_ERROR,    /* the shadow refused, reset, timed out, or sent garbage */
	MIRROR_DROPPED,         /* the worker's mirror queue was full */
	MIRROR_TOO_LARGE,       /* request body over body_cap: not mirrored */
	MIRROR_METHOD,          /* method not in mirror.methods: not mirrored */
	MIRROR_RESULTS,
};

/* "matched", "status_mismatch", ... ; "unknown" out of range.  Static. */
const char *mirror_result_name(enum mirror_result r);

/* Fault injection outcomes per service (canaryd_faults_total{service,kind}). */
enum mirror_fault_kind {
	MIRROR_FAULT_ABORT = 0,     /* answered with the abort status */
	MIRROR_FAULT_DELAY,         /* held on a timer before forwarding */
	MIRROR_FAULT_DELAY_OVERCAP, /* delay drawn, but the worker's cap was reached */
	MIRROR_FAULT_KINDS,
};

/*
 * Cumulative totals of one service since the proxy started, summed over the
 * workers.  mirrored counts the copies accepted for the shadow (queued or sent); every one ends in exactly
 * one of matched / status_mismatch / body_mismatch / shadow_error once both
 * sides answered (a client that left before its primary answered is not
 * compared).  primary and shadow hold the latencies (us) of the compared
 * requests.
 */
struct mirror_snapshot {
	uint64_t mirrored, matched, status_mismatch, body_mismatch, shadow_error, dropped;
	uint64_t too_large, method;
	uint64_t faults[MIRROR_FAULT_KINDS];
	struct hist primary, shadow;
};

/* One entry of the mismatch ring. */
struct mirror_mismatch {
	int64_t time_ms; /* wall clock, when the comparison was made */
	enum mirror_result result;
	char method[16];
	char path[MIRROR_PATH_MAX]; /* truncated, NUL-terminated */
	int primary_status;
	int shadow_status; /* 0: no response (shadow_error) */
	uint64_t primary_us, shadow_us;
};

struct mirror_stats;

/* Creates the registry for nworkers workers.  NULL when out of memory. */
struct mirror_stats *mirror_stats_new(unsigned nworkers);
/* Frees it (no worker may record any more).  NULL is accepted. */
void mirror_stats_free(struct mirror_stats *ms);

/*
 * The slot of service, created (zeroed) on first use; the name is copied.
 * Returns >= 0, or -ENOSPC / -ENOMEM / -EINVAL.  Control thread only.
 */
int mirror_stats_slot(struct mirror_stats *ms, const char *service);
/* The slot of an existing service, or -ENOENT.  Any thread. */
int mirror_stats_find(const struct mirror_stats *ms, const char *service);

/*
 * Worker-side recorders: worker w only, for its own index; slot from a
 * routing table.  Never block, never allocate.  Out-of-range slot or worker:
 * ignored.
 */
void mirror_stats_count(struct mirror_stats *ms, int slot, unsigned w, enum mirror_result r);
void mirror_stats_sent(struct mirror_stats *ms, int slot, unsigned w);
void mirror_stats_fault(struct mirror_stats *ms, int slot, unsigned w, enum mirror_fault_kind k);
/* Records a compared pair: its result, both latencies, and (for anything
 * but matched) a ring entry. */
void mirror_stats_compared(struct mirror_stats *ms, int slot, unsigned w,
                           const struct mirror_mismatch *m);

/* Fills *out with the slot's totals.  Returns 0 or -ENOENT.  Any thread. */
int mirror_stats_read(const struct mirror_stats *ms, int slot, struct mirror_snapshot *out);

/*
 * Copies the slot's last mismatches into out[0..max), newest first.
 * Returns how many were copied (0 for an unknown slot).  Any non-worker
 * thread (takes the ring's lock).
 */
size_t mirror_stats_mismatches(struct mirror_stats *ms, int slot, struct mirror_mismatch *out,
                               size_t max);

/*
 * Appends, for every slot that saw anything:
 *   canaryd_mirror_total{service,result}                counter
 *   canaryd_mirror_duration_seconds{service,side}       histogram (side: primary|shadow)
 *   canaryd_faults_total{service,kind}                  counter (kind: abort|delay|delay_over_cap)
 * Returns 0 or the buf error.  Any non-worker thread.
 */
int mirror_stats_write_prometheus(const struct mirror_stats *ms, struct buf *out);

/*
 * The diff of one mirrored request (pure): shadow_failed means the shadow
 * gave no usable response.  compare_body: also compare the bounded body
 * hashes ph (primary) and sh (shadow).
 */
enum mirror_result mirror_classify(int primary_status, int shadow_status, int shadow_failed,
                                   int compare_body, uint64_t ph, uint64_t sh);

/* FNV-1a 64 over p[0..len), continuing from h (start with MIRROR_HASH_INIT). */
#define MIRROR_HASH_INIT 0xcbf29ce484222325ULL
uint64_t mirror_hash(uint64_t h, const void *p, size_t len);

/*
 * The rollout engine's view (SPEC 6 `shadow` step, judge metrics
 * shadow_*): the cumulative totals of service since start.  Returns 0, or
 * -ENOENT when the service has never had a mirror (then *out is zeroed).
 * Any non-worker thread.
 */
int proxy_mirror_read(struct proxy *p, const char *service, struct mirror_snapshot *out);

/* Same, plus up to max last mismatches (newest first) in mm; *nmm their count. */
int proxy_mirror_read_full(struct proxy *p, const char *service, struct mirror_snapshot *out,
                           struct mirror_mismatch *mm, size_t max, size_t *nmm);

/* Appends the mirror and fault families of p (see above). */
int proxy_mirror_write_prometheus(struct proxy *p, struct buf *out);

#endif
