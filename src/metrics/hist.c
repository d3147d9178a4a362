#include "metrics/hist.h"

#include <math.h>
#include <string.h>

/* Bucket i >= 2 * HIST_SUB covers [mant << s, (mant + 1) << s) with
 * s = i / 16 - 1 and mant = 16 + i % 16; below that buckets are 1 wide. */
static unsigned bucket_shift(unsigned i)
{
	return i < 2 * HIST_SUB ? 0 : i / HIST_SUB - 1;
}

uint64_t hist_bucket_lower(unsigned i)
{
	unsigned s = bucket_shift(i);

	return (uint64_t)(i - HIST_SUB * s) << s;
}

uint64_t hist_bucket_upper(unsigned i)
{
	return hist_bucket_lower(i) + (UINT64_C(1) << bucket_shift(i)) - 1;
}

void hist_init(struct hist *h)
{
	memset(h, 0, sizeof(*h));
}

void hist_add(struct hist *h, uint64_t v)
{
	h->counts[hist_index(v)]++;
	h->n++;
	h->sum_us += v;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		dst->counts[i] += src->counts[i];
	dst->n += src->n;
	dst->sum_us += src->sum_us;
}

static uint64_t sub_sat(uint64_t a, uint64_t b)
{
	return a > b ? a - b : 0;
}

void hist_delta(struct hist *out, const struct hist *prev, const struct hist *cur)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		out->counts[i] = sub_sat(cur->counts[i], prev->counts[i]);
		n += out->counts[i];
	}
	/* n from the buckets, so it always matches them even if saturated */
	out->n = n;
	out->sum_us = sub_sat(cur->sum_us, prev->sum_us);
}

int hist_quantile_bucket(const struct hist *h, double q)
{
	uint64_t rank, seen = 0;

	if (h->n == 0)
		return -1;
	if (!(q > 0.0)) /* also NaN */
		q = 0.0;
	if (q > 1.0)
		q = 1.0;
	rank = (uint64_t)ceil(q * (double)h->n);
	if (rank < 1)
		rank = 1;
	if (rank > h->n)
		rank = h->n;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->counts[i];
		if (seen >= rank)
			return (int)i;
	}
	/* n larger than the bucket total: only for a hand-built struct */
	for (unsigned i = HIST_BUCKETS; i-- > 0;)
		if (h->counts[i])
			return (int)i;
	return -1;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
	int i = hist_quantile_bucket(h, q);
	uint64_t lo, hi;

	if (i < 0)
		return 0;
	lo = hist_bucket_lower((unsigned)i);
	hi = hist_bucket_upper((unsigned)i);
	return lo + (hi - lo) / 2;
}

double hist_mean(const struct hist *h)
{
	if (h->n == 0)
		return NAN;
	return (double)h->sum_us / (double)h->n;
}

uint64_t hist_count_le(const struct hist *h, uint64_t v)
{
	uint64_t c = 0;

	for (unsigned i = 0; i < HIST_BUCKETS && hist_bucket_upper(i) <= v; i++)
		c += h->counts[i];
	return c;
}
