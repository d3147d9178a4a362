/*
 * bucket.h - SPEC 2 bucketing, the one implementation used by the proxy, the
 * flag evaluator and the client library (docs/bucketing.md).
 *
 *   b = (murmur3_x86_32(salt ":" key, seed 0) * 100000) >> 32,  b in [0, 100000)
 *
 * One bucket is 0.001%.  Percentages are integer thousandths of a percent
 * (0..100000), so a weight w selects buckets [0, w).  No floats anywhere.
 */
#ifndef CORE_BUCKET_H
#define CORE_BUCKET_H

#include <stddef.h>
#include <stdint.h>

#define BUCKET_COUNT 100000u

/* MurmurHash3 x86_32 of data[0..len) with seed. */
uint32_t murmur3_x86_32(const void *data, size_t len, uint32_t seed);

/* The bucket of key under salt: hashes salt ":" key without allocating. */
uint32_t bucket_of(const char *salt, size_t salt_len, const char *key, size_t key_len);

/*
 * The 32-bit hash behind bucket_of(): murmur3_x86_32(salt ":" key, 0), for
 * callers that need a key's identity beyond its bucket (the split guard's
 * distinct-key sketch, metrics/hll.h).  bucket_of() is
 * bucket_from_hash(bucket_hash(...)).
 */
uint32_t bucket_hash(const char *salt, size_t salt_len, const char *key, size_t key_len);

static inline uint32_t bucket_from_hash(uint32_t h)
{
	return (uint32_t)(((uint64_t)h * BUCKET_COUNT) >> 32);
}

enum cohort {
	COHORT_STABLE = 0,
	COHORT_CANARY = 1,
	COHORT_BASELINE = 2,
	COHORT_SHADOW = 3,
	COHORT_COUNT = 4,
};

/* "stable", "canary", "baseline", "shadow". */
const char *cohort_name(enum cohort c);

/*
 * The cohort of bucket b for a canary weight w (thousandths of a percent):
 * canary [0, w), baseline [w, w + min(w, 100000 - w)), stable the rest.
 * Raising w keeps every canary bucket on the canary.
 */
static inline enum cohort bucket_cohort(uint32_t b, uint32_t w)
{
	uint32_t base = w < BUCKET_COUNT - w ? w : BUCKET_COUNT - w;

	if (b < w)
		return COHORT_CANARY;
	if (b < w + base)
		return COHORT_BASELINE;
	return COHORT_STABLE;
}

#endif
