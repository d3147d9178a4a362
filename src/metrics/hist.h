/*
 * hist.h - log-linear latency histogram over uint64 microseconds
 * (docs/metrics.md).
 *
 * Layout: values 0..15 each have their own bucket; above that every power of
 * two [2^e, 2^(e+1)) is split into 16 equal sub-buckets, so a bucket's width
 * is at most 1/16 (6.25%) of its lower bound.  With s = max(0, msb(v) - 4):
 *
 *     index(v) = 16 * s + (v >> s)
 *     lower(i) = (16 + i % 16) << (i / 16 - 1)   for i >= 32, else i
 *     width(i) = 1 << (i / 16 - 1)               for i >= 32, else 1
 *
 * The tracked range is [0, 2^32) us (about 71 minutes); larger values are
 * clamped into the last bucket (its sum stays exact).  Indexing is pure
 * integer arithmetic, so histograms built on different threads or nodes
 * have identical buckets and merge by adding counts.
 *
 * struct hist is a plain value (no atomics): build it, copy it, merge it and
 * subtract it on one thread.  The per-worker concurrent counters live in
 * stats.c; they are read into a struct hist.
 */
#ifndef METRICS_HIST_H
#define METRICS_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 4                                    /* 16 sub-buckets per octave */
#define HIST_SUB      (1u << HIST_SUB_BITS)                /* 16 */
#define HIST_MAX_BITS 32                                   /* tracked range [0, 2^32) us */
#define HIST_MAX      ((UINT64_C(1) << HIST_MAX_BITS) - 1) /* largest tracked value */
#define HIST_BUCKETS  (HIST_SUB * (HIST_MAX_BITS - HIST_SUB_BITS + 1)) /* 464 */

struct hist {
	uint64_t counts[HIST_BUCKETS];
	uint64_t n;      /* sum of counts */
	uint64_t sum_us; /* exact sum of the recorded values (not clamped) */
};

/*
 * The bucket index of v, in [0, HIST_BUCKETS).  Values above HIST_MAX go to
 * the last bucket.  Pure, no branches on the data path beyond the clamp;
 * any thread.
 */
static inline unsigned hist_index(uint64_t v)
{
	unsigned msb, s;

	if (v < HIST_SUB)
		return (unsigned)v;
	if (v > HIST_MAX)
		v = HIST_MAX;
	msb = 63u - (unsigned)__builtin_clzll(v);
	s = msb - HIST_SUB_BITS;
	return HIST_SUB * s + (unsigned)(v >> s);
}

/* Smallest value of bucket i (i < HIST_BUCKETS).  Pure; any thread. */
uint64_t hist_bucket_lower(unsigned i);
/*
 * Largest value of bucket i, inclusive (i < HIST_BUCKETS).  The last bucket
 * nominally ends at HIST_MAX but also holds every clamped larger value.
 * Pure; any thread.
 */
uint64_t hist_bucket_upper(unsigned i);

/* Empties h. */
void hist_init(struct hist *h);
/* Records one value v (microseconds) in h. */
void hist_add(struct hist *h, uint64_t v);
/* dst += src (bucket-wise counts, n and sum).  dst may not alias src. */
void hist_merge(struct hist *dst, const struct hist *src);
/*
 * out = cur - prev: the values recorded between two cumulative histograms of
 * the same source.  Each field saturates at 0 (a prev newer than cur is a
 * caller bug, not a crash).  out may alias prev or cur.
 */
void hist_delta(struct hist *out, const struct hist *prev, const struct hist *cur);

/*
 * The bucket holding the q-quantile (q a fraction in [0, 1], clamped; 0.99
 * for p99) by nearest rank: the bucket of the ceil(q * n)-th smallest value
 * (at least the 1st).  Returns -1 when h is empty.
 */
int hist_quantile_bucket(const struct hist *h, double q);
/*
 * The q-quantile's representative value: the midpoint of its bucket,
 * lower + (width - 1) / 2.  The true nearest-rank quantile v lies in the same
 * bucket, so |result - v| <= width / 2 <= v / 32 (3.125%), and it is exact
 * below 32 us.  Returns 0 when h is empty (check h->n).
 */
uint64_t hist_quantile(const struct hist *h, double q);
/* Exact mean of the recorded values (sum_us / n), or NAN when h is empty. */
double hist_mean(const struct hist *h);
/*
 * Number of values in buckets whose upper bound is <= v: a lower bound on
 * the count of values <= v, short by at most the one bucket straddling v
 * (values in (v - v/16, v]).  Used for Prometheus `le` buckets.
 */
uint64_t hist_count_le(const struct hist *h, uint64_t v);

#endif
