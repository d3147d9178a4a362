/*
 * counters.h - fleet-wide judging (SPEC 9, docs/fleet.md "Fleet-wide
 * judging"): every node flushes the cumulative per-cohort counters and
 * latency histogram of each (service, version, cohort) series it has into
 * PostgreSQL; the leader merges every node's rows into one fleet-wide
 * cumulative reading per series, which the rollout engine's read_cohort
 * returns unchanged in shape (the engine keeps taking its own deltas).
 *
 * Tables (created here, idempotent):
 *   fleet_counters (node_id, service, version, cohort, start_id, data, ts)
 *       one row per node x series x cohort: the latest cumulative values,
 *       upserted; start_id is the node process's random start id, so a
 *       restarted node is seen as a reset even when its counters already
 *       passed the old values;
 *   fleet_flushes (node_id, start_id, flushed_at): the node's last flush.
 *
 * Merge (the leader, after every flush period): for each (node, series) the
 * delta since that node's previous row (a new start_id or a counter that
 * went backwards is a restart: the new value is the delta) is added to a
 * running total per series (counts add, histograms add bucket-wise).  The
 * first row seen of a node counts whole, so the totals are the sum of the
 * nodes' cumulative counters.  Memory is bounded: at most
 * FLEET_COUNTERS_MAX_SERIES series and FLEET_COUNTERS_MAX_ENTRIES
 * (node, series) pairs; rows past the caps are ignored and counted.
 *
 * Completeness: the merge also reads the node registry (fleet_nodes, kept
 * by fleet/fleet.c).  fleet_counters_missing() lists the live nodes (seen
 * within the lease) whose last flush happened before a given instant: an
 * interval starting then is incomplete.  Flush times are read as ages on
 * the database's clock and placed on this node's wall clock at the read,
 * so node clocks need not agree.
 *
 * Threading: control thread only; the data plane is never touched (the
 * flush reads metrics_read() snapshots like /metrics does).  Queries run on
 * the module's own libpq connection, bounded by statement_timeout.
 *
 * Errors: 0 or a negative ERR_* (core/err.h) / errno.
 */
#ifndef FLEET_COUNTERS_H
#define FLEET_COUNTERS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/bucket.h"
#include "metrics/stats.h"

struct loop;

#define FLEET_COUNTERS_FLUSH_MS    1000 /* default flush (and merge) period */
#define FLEET_COUNTERS_MAX_SERIES  1024 /* fleet-wide (service, version, cohort) series */
#define FLEET_COUNTERS_MAX_ENTRIES 4096 /* (node, series) pairs the leader remembers */
#define FLEET_COUNTERS_MAX_NODES   256  /* nodes tracked for completeness */
#define FLEET_COUNTERS_DATA_MAX    8192 /* the encoded counters of one row, bytes */

struct fleet_counters_config {
	const char *url;     /* the store's postgres:// URL */
	const char *node_id; /* this node's id (the fleet's) */
	int64_t flush_ms;    /* 0: FLEET_COUNTERS_FLUSH_MS; at least 50 */
	int64_t lease_ms;    /* a node seen within this is live; 0: 3000 */
	/* Optional: 1 while this node leads (then the timer also merges). */
	int (*is_leader)(void *arg);
	void *arg;
};

struct fleet_counters;

/*
 * Connects to cfg->url, creates the tables, picks a random start id and,
 * when loop is not NULL, arms the flush timer (flush, then merge when
 * is_leader says so).  cfg->url NULL: no database at all (the pure parts,
 * for tests; flush and merge then answer ERR_UNAVAILABLE).  reg is borrowed (NULL: nothing to flush).  NULL with
 * a message in err on failure.
 */
struct fleet_counters *fleet_counters_new(struct loop *loop, struct metrics_registry *reg,
                                          const struct fleet_counters_config *cfg, char *err,
                                          size_t errlen);
/* Stops the timer, closes the connection, frees.  NULL is a no-op. */
void fleet_counters_free(struct fleet_counters *fc);

/*
 * Upserts this node's changed series and its fleet_flushes row in one
 * transaction.  0, or ERR_UNAVAILABLE (the next flush retries everything
 * not written).
 */
int fleet_counters_flush(struct fleet_counters *fc);

/*
 * Reads every node's rows and the node registry and merges them into the
 * running totals (see above).  0 or ERR_UNAVAILABLE (totals unchanged).
 */
int fleet_counters_merge(struct fleet_counters *fc);

/*
 * The fleet-wide cumulative counters of (service, version, cohort) as of
 * the last merge; zeros when no node reported the series.  0 or -EINVAL.
 */
int fleet_counters_read(const struct fleet_counters *fc, const char *service, const char *version,
                        enum cohort cohort, struct metrics_cohort_snapshot *out);

/* This process's start id (the flush rows carry it; a restart changes it). */
uint64_t fleet_counters_start_id(const struct fleet_counters *fc);

/*
 * While the store is away (the leader in rollback-only mode, docs/fleet.md):
 * the fleet-wide total of the last merge plus what this node served since
 * the merge last saw its row (local: this node's CUMULATIVE counters now,
 * from metrics_read()).  Still cumulative and never lower than the last
 * merged value, so the engine's interval deltas stay right across the
 * outage, and a failing canary on this node's traffic is seen and rolled
 * back.  0 or -EINVAL.
 */
int fleet_counters_read_degraded(const struct fleet_counters *fc, const char *service,
                                 const char *version, enum cohort cohort,
                                 const struct metrics_cohort_snapshot *local,
                                 struct metrics_cohort_snapshot *out);

/*
 * A new JSON array of the ids of the nodes that were live at the last merge
 * and whose last flush was before since_ms (wall-clock ms), sorted; an
 * empty array when none.  NULL on -ENOMEM.
 */
json_t *fleet_counters_missing(const struct fleet_counters *fc, int64_t since_ms);

/* --- pure parts, exposed for tests ---------------------------------------------- */

/*
 * Adds one row of node (start_id) for (service, version, cohort) with the
 * cumulative values cur to the running totals.  0, -ENOSPC (a cap), -ENOMEM.
 */
int fleet_counters_ingest(struct fleet_counters *fc, const char *node, uint64_t start_id,
                          const char *service, const char *version, enum cohort cohort,
                          const struct metrics_cohort_snapshot *cur);
/*
 * Records node's liveness and the wall-clock time of its last flush
 * (INT64_MIN: never flushed) as of a merge.  0, -ENOSPC, -ENOMEM.
 */
int fleet_counters_note_node(struct fleet_counters *fc, const char *node, int alive,
                             int64_t flushed_wall_ms);
/* Forgets the node notes (a merge starts with a fresh registry). */
void fleet_counters_clear_nodes(struct fleet_counters *fc);

/*
 * The text form of a snapshot stored in fleet_counters.data: decimal
 * fields, the histogram as sparse "index:count" pairs.  encode: 0 or
 * -ENOBUFS; decode: 0 or -EINVAL (the row is then ignored).
 */
int fleet_counters_encode(const struct metrics_cohort_snapshot *s, char *out, size_t len);
int fleet_counters_decode(const char *text, struct metrics_cohort_snapshot *out);

/* Rows ignored by the last merges (bad data, caps), for tests and logs. */
uint64_t fleet_counters_dropped(const struct fleet_counters *fc);

#endif
