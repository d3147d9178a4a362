/*
 * retention.h - compaction of the per-interval evidence events (issue 13
 * section 3, docs/evidence.md "Retention").
 *
 * The audit log (every event kind but the two below) is kept forever.
 * "rollout.interval" events and "verdict" events keep full resolution for
 * conf->full_resolution_ms; older ones are downsampled: each run of them of
 * one subject (and one step) within one summary bucket of
 * conf->summary_interval_ms is replaced, in one store transaction, by one
 * summary event ("rollout.interval.summary" / "verdict.summary", same
 * subject, actor "canaryd") carrying their counts, sums, minima and maxima
 * and the first/last ids and times it replaced.  Summaries are never
 * compacted again.
 *
 * Threading: control thread only (it uses the store handle).  Each call
 * does a bounded amount of work, so a periodic timer can call it without
 * stalling the loop.  It keeps no state between calls: what is left to do
 * is found again from the store (old compactable events are exactly the
 * ones not compacted yet).
 */
#ifndef ROLLOUT_RETENTION_H
#define ROLLOUT_RETENTION_H

#include <stddef.h>
#include <stdint.h>

struct store;

/* config key `events:` (docs/config.md) */
struct retention_conf {
	int64_t full_resolution_ms;  /* keep full resolution this long (> 0; default 7 days) */
	int64_t summary_interval_ms; /* one summary per subject per this long (> 0; default 1 h) */
};

#define RETENTION_FULL_RESOLUTION_DEFAULT_MS  (7LL * 24 * 3600 * 1000)
#define RETENTION_SUMMARY_INTERVAL_DEFAULT_MS (3600LL * 1000)
/* a sensible per-call bound for the periodic timer */
#define RETENTION_BATCH_DEFAULT 2000

/* The kinds written in place of the compacted ones. */
#define RETENTION_INTERVAL_SUMMARY "rollout.interval.summary"
#define RETENTION_VERDICT_SUMMARY  "verdict.summary"

/* What one call did (all counts of this call). */
struct retention_stats {
	size_t scanned;   /* compactable events read */
	size_t replaced;  /* events deleted (each is in exactly one summary) */
	size_t summaries; /* summary events written */
};

/* Fills c with the defaults above. */
void retention_conf_default(struct retention_conf *c);

/*
 * Compacts events older than now_ms - c->full_resolution_ms, rounded down
 * to a whole summary bucket (so a bucket is only compacted once it is
 * entirely old), reading at most max_events compactable events (0: the
 * default batch).  Each summary and the delete of what it replaces commit
 * together; a failure leaves that group as it was.  Must not be called
 * inside an open store transaction.  stats may be NULL.
 * Returns 1 when there is more to do (call again soon), 0 when everything
 * old enough is compacted, or a negative store/errno code (-EINVAL for a
 * bad conf, STORE_ERR_TXN inside a transaction).
 */
int retention_compact(struct store *st, int64_t now_ms, const struct retention_conf *c,
                      size_t max_events, struct retention_stats *stats);

#endif
