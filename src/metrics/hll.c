#include "metrics/hll.h"

#include <math.h>

/* Rank bits after the index: register values are 0..HLL_Q + 1. */
#define HLL_Q (64 - HLL_P)
#define LN2   0.693147180559945309417

void hll_clear(struct hll *h)
{
	for (unsigned i = 0; i < HLL_M; i++)
		atomic_store_explicit(&h->reg[i], 0, memory_order_relaxed);
}

/*
 * splitmix64's finalizer: every output bit depends on every input bit, so
 * keys that share the hash's high bits (one cohort's bucket range) still
 * spread over all registers and ranks.
 */
static uint64_t remix(uint32_t h)
{
	uint64_t z = (uint64_t)h + UINT64_C(0x9e3779b97f4a7c15);

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

void hll_add(struct hll *h, uint32_t key_hash)
{
	uint64_t x = remix(key_hash);
	unsigned idx = (unsigned)(x >> HLL_Q);
	uint64_t w = x << HLL_P;
	uint8_t rank = w ? (uint8_t)(__builtin_clzll(w) + 1) : HLL_Q + 1;

	/* single writer: a plain load/compare/store cannot lose a larger rank */
	if (atomic_load_explicit(&h->reg[idx], memory_order_relaxed) < rank)
		atomic_store_explicit(&h->reg[idx], rank, memory_order_relaxed);
}

void hll_merge(struct hll *dst, const struct hll *src)
{
	for (unsigned i = 0; i < HLL_M; i++) {
		uint8_t s =
		    atomic_load_explicit((_Atomic uint8_t *)&src->reg[i], memory_order_relaxed);

		if (atomic_load_explicit(&dst->reg[i], memory_order_relaxed) < s)
			atomic_store_explicit(&dst->reg[i], s, memory_order_relaxed);
	}
}

/* Ertl (2017), "New cardinality estimation algorithms for HyperLogLog
 * sketches", arXiv:1702.01284: sigma() and tau() of the improved estimator. */
static double hll_sigma(double x)
{
	double y = 1.0, z = x, prev;

	if (x >= 1.0)
		return INFINITY;
	do {
		x *= x;
		prev = z;
		z += x * y;
		y += y;
	} while (z != prev);
	return z;
}

static double hll_tau(double x)
{
	double y = 1.0, z = 1.0 - x, prev;

	if (x <= 0.0 || x >= 1.0)
		return 0.0;
	do {
		x = sqrt(x);
		prev = z;
		y *= 0.5;
		z -= (1.0 - x) * (1.0 - x) * y;
	} while (z != prev);
	return z / 3.0;
}

double hll_estimate(const struct hll *h)
{
	unsigned c[HLL_Q + 2] = {0};
	double m = HLL_M, z;

	for (unsigned i = 0; i < HLL_M; i++) {
		uint8_t v =
		    atomic_load_explicit((_Atomic uint8_t *)&h->reg[i], memory_order_relaxed);

		c[v <= HLL_Q + 1 ? v : HLL_Q + 1]++;
	}
	if (c[0] == HLL_M)
		return 0.0;
	z = m * hll_tau(1.0 - c[HLL_Q + 1] / m);
	for (int k = HLL_Q; k >= 1; k--)
		z = 0.5 * (z + c[k]);
	z += m * hll_sigma(c[0] / m);
	return m * m / (2.0 * LN2 * z);
}
