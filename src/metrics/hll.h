/*
 * hll.h - a HyperLogLog sketch of distinct keys (docs/metrics.md).
 *
 * Counts how many distinct stickiness keys a cohort saw, in a fixed 4 KiB
 * (HLL_M one-byte registers, p = 12), never a growing set: the sample-ratio
 * mismatch guard (analysis/srm.h) compares these counts.  Relative standard
 * error HLL_REL_ERR (1.04 / sqrt(m) = 1.6%) at every cardinality, with Ertl's
 * improved estimator (no bias hump at the small-range switch, no empirical
 * tables).
 *
 * Input is the 32-bit bucketing hash (core/bucket.h).  Its high bits choose
 * the cohort, so every key of one cohort shares them: hll_add() remixes the
 * hash (a splitmix64 finalizer) before taking the register index and rank.
 *
 * Threads: registers are relaxed atomic bytes.  One thread may hll_add()
 * (single writer: no read-modify-write race) while any number of threads
 * hll_merge() or hll_estimate() the same sketch; a reader sees each register
 * at some value it held, so a concurrent estimate is between the counts
 * before and after the adds that raced with it.  hll_clear() is for the
 * writer (or before any thread sees the sketch).  No allocation anywhere.
 */
#ifndef METRICS_HLL_H
#define METRICS_HLL_H

#include <stdatomic.h>
#include <stdint.h>

#define HLL_P       12
#define HLL_M       (1u << HLL_P)
#define HLL_REL_ERR (1.04 / 64.0) /* 1.04 / sqrt(HLL_M) */

struct hll {
	_Atomic uint8_t reg[HLL_M];
};

/* Zeroes every register (an empty set). */
void hll_clear(struct hll *h);

/*
 * Adds the key whose bucketing hash is key_hash.  Adding the same hash again
 * changes nothing.  Single writer per sketch; never allocates, no locked
 * instruction: at most one relaxed byte load and one store.
 */
void hll_add(struct hll *h, uint32_t key_hash);

/* dst = dst U src (register-wise max).  dst has a single writer: the caller. */
void hll_merge(struct hll *dst, const struct hll *src);

/* The estimated number of distinct keys added (0 for an empty sketch). */
double hll_estimate(const struct hll *h);

#endif
