/* Data-plane metrics: histogram layout and quantile error bound, merge and
 * delta, the series registry, concurrent single-writer slots, Prometheus
 * text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "metrics/hist.h"
#include "metrics/stats.h"

/* --- histogram ---------------------------------------------------------------------- */

static void test_hist_small_values_exact(void **state)
{
	for (uint64_t v = 0; v < 32; v++) {
		assert_int_equal(hist_index(v), v);
		assert_int_equal(hist_bucket_lower((unsigned)v), v);
		assert_int_equal(hist_bucket_upper((unsigned)v), v);
	}
	assert_int_equal(hist_index(32), 32);
	assert_int_equal(hist_bucket_lower(32), 32);
	assert_int_equal(hist_bucket_upper(32), 33);
	assert_int_equal(hist_index(33), 32);
	assert_int_equal(hist_index(34), 33);
}

static void test_hist_layout_contiguous_and_narrow(void **state)
{
	assert_int_equal(HIST_BUCKETS, 464);
	assert_int_equal(hist_bucket_lower(0), 0);
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		uint64_t lo = hist_bucket_lower(i), hi = hist_bucket_upper(i);
		uint64_t width = hi - lo + 1;

		assert_true(lo <= hi);
		assert_int_equal(hist_index(lo), i);
		assert_int_equal(hist_index(hi), i);
		if (i + 1 < HIST_BUCKETS)
			assert_int_equal(hist_bucket_lower(i + 1), hi + 1);
		/* relative width <= 1/16 everywhere past the exact range */
		if (i >= 16)
			assert_true(width * 16 <= lo);
		else
			assert_int_equal(width, 1);
	}
	assert_int_equal(hist_bucket_upper(HIST_BUCKETS - 1), HIST_MAX);
	assert_true(HIST_MAX >= UINT64_C(4294967295));
	/* above the range: clamped into the last bucket */
	assert_int_equal(hist_index(HIST_MAX + 1), HIST_BUCKETS - 1);
	assert_int_equal(hist_index(UINT64_MAX), HIST_BUCKETS - 1);
}

static void test_hist_every_value_in_its_bucket(void **state)
{
	uint64_t x = 88172645463325252ull;

	/* powers of two and their neighbours, then xorshift values at all scales */
	for (unsigned b = 1; b < 32; b++) {
		uint64_t p = UINT64_C(1) << b;
		uint64_t vs[3] = {p - 1, p, p + 1};

		for (int k = 0; k < 3; k++) {
			unsigned i = hist_index(vs[k]);

			assert_true(hist_bucket_lower(i) <= vs[k] && vs[k] <= hist_bucket_upper(i));
		}
	}
	for (int n = 0; n < 200000; n++) {
		uint64_t v;
		unsigned i;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		v = x >> (x % 33 + 31); /* 0 .. 2^33 */
		i = hist_index(v);
		if (v > HIST_MAX) {
			assert_int_equal(i, HIST_BUCKETS - 1);
			continue;
		}
		assert_true(hist_bucket_lower(i) <= v && v <= hist_bucket_upper(i));
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* hist_quantile vs the exact nearest-rank quantile of the sorted values */
static void check_quantiles(uint64_t *v, size_t n)
{
	static const double qs[] = {0.0, 0.001, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0};
	struct hist h;

	hist_init(&h);
	for (size_t i = 0; i < n; i++)
		hist_add(&h, v[i]);
	qsort(v, n, sizeof(v[0]), cmp_u64);
	assert_int_equal(h.n, n);
	for (size_t k = 0; k < sizeof(qs) / sizeof(qs[0]); k++) {
		size_t rank = (size_t)ceil(qs[k] * (double)n);
		uint64_t exact = v[(rank ? rank : 1) - 1];
		uint64_t got = hist_quantile(&h, qs[k]);
		int b = hist_quantile_bucket(&h, qs[k]);
		uint64_t diff = got > exact ? got - exact : exact - got;

		assert_true(b >= 0);
		assert_true(hist_bucket_lower((unsigned)b) <= exact);
		assert_true(exact <= hist_bucket_upper((unsigned)b));
		/* documented bound: half a bucket, <= 1/32 of the value */
		assert_true(diff * 32 <= exact);
	}
}

static void test_hist_quantiles_uniform(void **state)
{
	size_t n = 100000;
	uint64_t *v = malloc(n * sizeof(*v));

	assert_non_null(v);
	for (size_t i = 0; i < n; i++)
		v[i] = i + 1;
	check_quantiles(v, n);
	free(v);
}

static void test_hist_quantiles_lognormal_and_bimodal(void **state)
{
	size_t n = 200000;
	uint64_t *v = malloc(n * sizeof(*v));
	uint64_t x = 0x9E3779B97F4A7C15ull;

	assert_non_null(v);
	for (size_t i = 0; i < n; i++) {
		double u1, u2, z;

		x = x * 6364136223846793005ull + 1442695040888963407ull;
		u1 = ((double)(x >> 11) + 1.0) / 9007199254740993.0;
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		u2 = (double)(x >> 11) / 9007199254740992.0;
		z = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
		/* log-normal around 2 ms; 5% of a slow mode around 250 ms */
		v[i] = (uint64_t)(exp(log(2000.0) + 0.6 * z) * (i % 20 == 0 ? 125.0 : 1.0));
	}
	check_quantiles(v, n);
	free(v);
}

static void test_hist_empty_and_mean(void **state)
{
	struct hist h;

	hist_init(&h);
	assert_int_equal(hist_quantile_bucket(&h, 0.5), -1);
	assert_int_equal(hist_quantile(&h, 0.5), 0);
	assert_true(isnan(hist_mean(&h)));
	hist_add(&h, 1000);
	hist_add(&h, 3001);
	hist_add(&h, UINT64_C(10000000000)); /* clamped bucket, exact sum */
	assert_int_equal(h.n, 3);
	assert_int_equal(h.sum_us, UINT64_C(10000004001));
	assert_true(fabs(hist_mean(&h) - 10000004001.0 / 3.0) < 1e-3);
	assert_int_equal(h.counts[HIST_BUCKETS - 1], 1);
	/* out-of-range q is clamped */
	assert_int_equal(hist_quantile(&h, -1.0), hist_quantile(&h, 0.0));
	assert_int_equal(hist_quantile(&h, 2.0), hist_quantile(&h, 1.0));
}

static void test_hist_merge_and_delta(void **state)
{
	struct hist a, b, all, prev, cur, d;

	hist_init(&a);
	hist_init(&b);
	hist_init(&all);
	for (uint64_t v = 0; v < 50000; v += 7) {
		hist_add(v % 2 ? &a : &b, v * 13);
		hist_add(&all, v * 13);
	}
	hist_merge(&a, &b);
	assert_memory_equal(&a, &all, sizeof(a));

	/* cumulative prev, cur = prev + interval; cur - prev = interval */
	hist_init(&prev);
	for (uint64_t v = 1; v < 1000; v++)
		hist_add(&prev, v * v);
	cur = prev;
	hist_init(&b);
	for (uint64_t v = 5; v < 800; v += 3) {
		hist_add(&cur, v * 101);
		hist_add(&b, v * 101);
	}
	hist_delta(&d, &prev, &cur);
	assert_memory_equal(&d, &b, sizeof(d));
	/* aliasing the output with an input */
	hist_delta(&cur, &prev, &cur);
	assert_memory_equal(&cur, &b, sizeof(cur));
	/* a reversed pair saturates at zero instead of wrapping */
	hist_delta(&d, &all, &prev);
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		assert_true(d.counts[i] <= prev.counts[i]);
}

static void test_hist_count_le(void **state)
{
	struct hist h;

	hist_init(&h);
	hist_add(&h, 300);  /* [288, 303] */
	hist_add(&h, 500);  /* [496, 511]: straddles 500, counted in the next le */
	hist_add(&h, 1000); /* [992, 1023] */
	hist_add(&h, 2000); /* [1984, 2047] */
	assert_int_equal(hist_count_le(&h, 499), 1);
	assert_int_equal(hist_count_le(&h, 500), 1);
	assert_int_equal(hist_count_le(&h, 511), 2);
	assert_int_equal(hist_count_le(&h, 1000), 2);
	assert_int_equal(hist_count_le(&h, 2500), 4);
	assert_int_equal(hist_count_le(&h, 0), 0);
}

/* --- registry and recording ---------------------------------------------------------- */

static void test_registry_ids(void **state)
{
	struct metrics_registry *reg = metrics_registry_new(2, 3);
	const char *svc, *ver;
	char longname[METRICS_NAME_MAX + 2];

	assert_null(metrics_registry_new(0, 3));
	assert_null(metrics_registry_new(2, 0));
	assert_non_null(reg);
	assert_int_equal(metrics_series_count(reg), 0);
	assert_int_equal(metrics_series_id(reg, "web", "v1"), 0);
	assert_int_equal(metrics_series_id(reg, "web", "v2"), 1);
	assert_int_equal(metrics_series_id(reg, "web", "v1"), 0);
	assert_int_equal(metrics_series_id(reg, "api", "v1"), 2);
	assert_int_equal(metrics_series_count(reg), 3);
	assert_int_equal(metrics_series_id(reg, "api", "v2"), -ENOSPC);
	/* existing names still resolve once full */
	assert_int_equal(metrics_series_id(reg, "web", "v2"), 1);
	assert_int_equal(metrics_series_find(reg, "api", "v1"), 2);
	assert_int_equal(metrics_series_find(reg, "api", "v2"), -ENOENT);
	assert_int_equal(metrics_series_count(reg), 3);

	assert_int_equal(metrics_series_name(reg, 1, &svc, &ver), 0);
	assert_string_equal(svc, "web");
	assert_string_equal(ver, "v2");
	assert_int_equal(metrics_series_name(reg, 3, &svc, &ver), -ENOENT);
	assert_int_equal(metrics_series_name(reg, -1, NULL, NULL), -ENOENT);

	assert_int_equal(metrics_series_id(reg, "", "v1"), -EINVAL);
	assert_int_equal(metrics_series_id(reg, "web", NULL), -EINVAL);
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(metrics_series_id(reg, longname, "v1"), -EINVAL);
	metrics_registry_free(reg);
	metrics_registry_free(NULL);
}

static void test_record_and_read(void **state)
{
	struct metrics_registry *reg = metrics_registry_new(2, 8);
	struct metrics_cohort_snapshot s;
	int id = metrics_series_id(reg, "web", "v2");

	metrics_record(reg, 0, id, COHORT_CANARY, 200, 1000, METRICS_ERR_NONE);
	metrics_record(reg, 1, id, COHORT_CANARY, 201, 3000, METRICS_ERR_NONE);
	metrics_record(reg, 1, id, COHORT_CANARY, 404, 500, METRICS_ERR_NONE);
	metrics_record(reg, 0, id, COHORT_CANARY, 500, 800, METRICS_ERR_NONE);
	metrics_record(reg, 0, id, COHORT_CANARY, 502, 40, METRICS_ERR_CONNECT_REFUSED);
	metrics_record(reg, 1, id, COHORT_CANARY, 504, 2000000, METRICS_ERR_RESPONSE_TIMEOUT);
	/* cut short after a 200 was sent: a proxy error, counted once */
	metrics_record(reg, 1, id, COHORT_CANARY, 200, 9000, METRICS_ERR_RESET);
	metrics_record(reg, 0, id, COHORT_CANARY, 0, 10, METRICS_ERR_NONE);
	metrics_record(reg, 0, id, COHORT_BASELINE, 200, 1000, METRICS_ERR_NONE);
	/* out of range: dropped, no crash */
	metrics_record(reg, 2, id, COHORT_CANARY, 200, 1, METRICS_ERR_NONE);
	metrics_record(reg, 0, 7, COHORT_CANARY, 200, 1, METRICS_ERR_NONE);
	metrics_record(reg, 0, 8, COHORT_CANARY, 200, 1, METRICS_ERR_NONE);
	metrics_record(reg, 0, -1, COHORT_CANARY, 200, 1, METRICS_ERR_NONE);
	metrics_record(reg, 0, id, COHORT_COUNT, 200, 1, METRICS_ERR_NONE);

	assert_int_equal(metrics_read(reg, id, COHORT_CANARY, &s), 0);
	assert_int_equal(s.requests, 8);
	assert_int_equal(s.by_class[0], 1);
	assert_int_equal(s.by_class[2], 3);
	assert_int_equal(s.by_class[4], 1);
	assert_int_equal(s.by_class[5], 3);
	assert_int_equal(s.errors, 4);
	assert_int_equal(s.proxy_errors, 3);
	assert_int_equal(s.upstream[METRICS_ERR_NONE], 0);
	assert_int_equal(s.upstream[METRICS_ERR_CONNECT_REFUSED], 1);
	assert_int_equal(s.upstream[METRICS_ERR_RESPONSE_TIMEOUT], 1);
	assert_int_equal(s.upstream[METRICS_ERR_RESET], 1);
	assert_int_equal(s.hist.n, 8);
	assert_int_equal(s.hist.sum_us, 1000 + 3000 + 500 + 800 + 40 + 2000000 + 9000 + 10);
	assert_true(fabs(metrics_error_rate(&s) - 0.5) < 1e-12);
	assert_true(fabs(metrics_success_rate(&s) - 0.5) < 1e-12);
	assert_true(fabs(metrics_request_rate(&s, 4.0) - 2.0) < 1e-12);
	assert_true(fabs(metrics_latency_mean_us(&s) - 2014350.0 / 8.0) < 1e-6);
	/* 4th of 8 is 800, in [800, 831]: the midpoint */
	assert_true(metrics_latency_quantile_us(&s, 0.5) == 815.0);
	assert_true(metrics_latency_quantile_us(&s, 1.0) >= 2000000 * (1 - 1.0 / 32));

	assert_int_equal(metrics_read(reg, id, COHORT_BASELINE, &s), 0);
	assert_int_equal(s.requests, 1);
	assert_int_equal(metrics_read(reg, id, COHORT_STABLE, &s), 0);
	assert_int_equal(s.requests, 0);
	assert_true(isnan(metrics_error_rate(&s)));
	assert_true(isnan(metrics_success_rate(&s)));
	assert_true(isnan(metrics_request_rate(&s, 1.0)));
	assert_true(isnan(metrics_latency_quantile_us(&s, 0.99)));
	assert_true(isnan(metrics_latency_mean_us(&s)));
	assert_int_equal(metrics_read(reg, 5, COHORT_CANARY, &s), -ENOENT);
	assert_int_equal(metrics_read(reg, id, COHORT_COUNT, &s), -EINVAL);

	assert_string_equal(metrics_err_name(METRICS_ERR_CONNECT_TIMEOUT), "connect_timeout");
	assert_string_equal(metrics_err_name(METRICS_ERR_BAD_RESPONSE), "bad_response");
	assert_string_equal(metrics_err_name(METRICS_ERR_COUNT), "unknown");
	metrics_registry_free(reg);
}

static void test_snapshot_delta_interval(void **state)
{
	struct metrics_registry *reg = metrics_registry_new(1, 4);
	struct metrics_cohort_snapshot a, b, d;
	int id = metrics_series_id(reg, "web", "v1");

	for (int i = 0; i < 300; i++)
		metrics_record(reg, 0, id, COHORT_STABLE, 200, 100, METRICS_ERR_NONE);
	metrics_read(reg, id, COHORT_STABLE, &a);
	/* the interval: 200 requests, 10 errors, all at 5 ms */
	for (int i = 0; i < 200; i++)
		metrics_record(reg, 0, id, COHORT_STABLE, i < 10 ? 503 : 200, 5000,
		               i < 10 ? METRICS_ERR_NO_ENDPOINT : METRICS_ERR_NONE);
	metrics_read(reg, id, COHORT_STABLE, &b);
	metrics_snapshot_delta(&a, &b, &d);
	assert_int_equal(d.requests, 200);
	assert_int_equal(d.by_class[2], 190);
	assert_int_equal(d.by_class[5], 10);
	assert_int_equal(d.errors, 10);
	assert_int_equal(d.proxy_errors, 10);
	assert_int_equal(d.upstream[METRICS_ERR_NO_ENDPOINT], 10);
	assert_int_equal(d.hist.n, 200);
	assert_int_equal(d.hist.counts[hist_index(5000)], 200);
	assert_int_equal(d.hist.counts[hist_index(100)], 0);
	assert_true(fabs(metrics_error_rate(&d) - 0.05) < 1e-12);
	assert_true(fabs(metrics_latency_mean_us(&d) - 5000.0) < 1e-9);
	/* every quantile of the interval is the 5 ms bucket, not the older 100 us */
	assert_true(fabs(metrics_latency_quantile_us(&d, 0.01) - 5000.0) <= 5000.0 / 32);
	/* cumulative a + delta == b */
	assert_int_equal(a.requests + d.requests, b.requests);
	/* aliasing and a reversed pair (saturates, errors capped by requests) */
	metrics_snapshot_delta(&a, &b, &b);
	assert_memory_equal(&b, &d, sizeof(d));
	metrics_read(reg, id, COHORT_STABLE, &b);
	metrics_snapshot_delta(&b, &a, &d);
	assert_int_equal(d.requests, 0);
	assert_int_equal(d.errors, 0);
	assert_int_equal(d.hist.n, 0);
	metrics_registry_free(reg);
}

/* --- concurrency --------------------------------------------------------------------- */

#define RECORDS 1000000u

struct writer {
	struct metrics_registry *reg;
	unsigned worker;
	int series;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;

	for (unsigned i = 0; i < RECORDS; i++) {
		int err = i % 10 == 0;

		metrics_record(w->reg, w->worker, w->series, COHORT_CANARY, err ? 503 : 200,
		               i % 5000 + w->worker,
		               i % 20 == 0 ? METRICS_ERR_CONNECT_REFUSED : METRICS_ERR_NONE);
	}
	return NULL;
}

static void test_two_writers_one_reader(void **state)
{
	struct metrics_registry *reg = metrics_registry_new(2, 16);
	struct writer w[2];
	pthread_t t[2];
	struct metrics_cohort_snapshot s, prev;
	uint64_t sum = 0, reads = 0;
	int id = metrics_series_id(reg, "svc", "v9");

	memset(&prev, 0, sizeof(prev));
	for (unsigned i = 0; i < 2; i++) {
		w[i] = (struct writer){reg, i, id};
		assert_int_equal(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
	}
	/* read while they write: monotone, never more errors than requests */
	do {
		uint64_t classes = 0;

		assert_int_equal(metrics_read(reg, id, COHORT_CANARY, &s), 0);
		for (int c = 0; c < METRICS_CLASSES; c++)
			classes += s.by_class[c];
		assert_true(s.requests >= prev.requests);
		assert_true(s.errors >= prev.errors);
		assert_true(s.hist.n >= prev.hist.n);
		assert_true(s.errors <= s.requests);
		assert_true(s.proxy_errors <= s.errors);
		assert_true(classes <= s.requests);
		assert_true(s.hist.n <= s.requests);
		prev = s;
		reads++;
	} while (s.requests < 2 * RECORDS);
	for (unsigned i = 0; i < 2; i++)
		pthread_join(t[i], NULL);

	for (unsigned i = 0; i < RECORDS; i++)
		sum += 2 * (i % 5000) + 1; /* worker 0 adds 0, worker 1 adds 1 */
	assert_int_equal(metrics_read(reg, id, COHORT_CANARY, &s), 0);
	assert_int_equal(s.requests, 2 * RECORDS);
	assert_int_equal(s.by_class[2], 2 * (RECORDS - RECORDS / 10));
	assert_int_equal(s.by_class[5], 2 * RECORDS / 10);
	assert_int_equal(s.errors, 2 * RECORDS / 10);
	assert_int_equal(s.proxy_errors, 2 * RECORDS / 20);
	assert_int_equal(s.upstream[METRICS_ERR_CONNECT_REFUSED], 2 * RECORDS / 20);
	assert_int_equal(s.hist.n, 2 * RECORDS);
	assert_int_equal(s.hist.sum_us, sum);
	assert_int_equal(s.hist.counts[0], RECORDS / 5000);     /* only worker 0 writes 0 */
	assert_int_equal(s.hist.counts[1], 2 * RECORDS / 5000); /* w0's 1 and w1's 0 + 1 */
	assert_true(reads > 0);
	metrics_registry_free(reg);
}

/* --- Prometheus text ----------------------------------------------------------------- */

/* A sample line: name{label="value",...} number -- strict enough to catch
 * unescaped quotes and missing values. */
static int parse_sample(const char *p, const char *end, char *name, size_t namelen)
{
	const char *n0 = p;
	char num[64];
	char *numend;

	if (p == end || !(p[0] == '_' || p[0] == ':' || ((p[0] | 32) >= 'a' && (p[0] | 32) <= 'z')))
		return -1;
	while (p < end && (*p == '_' || *p == ':' || (*p >= '0' && *p <= '9') ||
	                   ((*p | 32) >= 'a' && (*p | 32) <= 'z')))
		p++;
	if ((size_t)(p - n0) >= namelen)
		return -1;
	memcpy(name, n0, (size_t)(p - n0));
	name[p - n0] = '\0';
	if (p < end && *p == '{') {
		p++;
		for (;;) {
			const char *l0 = p;

			while (p < end && (*p == '_' || (*p >= '0' && *p <= '9') ||
			                   ((*p | 32) >= 'a' && (*p | 32) <= 'z')))
				p++;
			if (p == l0 || p + 1 >= end || p[0] != '=' || p[1] != '"')
				return -1;
			for (p += 2; p < end && *p != '"'; p++) {
				if (*p == '\\') {
					if (p + 1 >= end || !strchr("\\\"n", p[1]))
						return -1;
					p++;
				}
			}
			if (p >= end)
				return -1;
			p++;
			if (p < end && *p == ',') {
				p++;
				continue;
			}
			if (p < end && *p == '}') {
				p++;
				break;
			}
			return -1;
		}
	}
	if (p >= end || *p != ' ' || (size_t)(end - p - 1) >= sizeof(num) || end - p - 1 == 0)
		return -1;
	memcpy(num, p + 1, (size_t)(end - p - 1));
	num[end - p - 1] = '\0';
	(void)strtod(num, &numend);
	return *numend == '\0' ? 0 : -1;
}

/* Every line is a HELP/TYPE comment or a sample; a family's samples are
 * contiguous and follow its TYPE.  Returns the number of samples. */
static int check_exposition(const char *text)
{
	char typed[8][96], cur[96] = "";
	int ntyped = 0, samples = 0;

	for (const char *p = text; *p;) {
		const char *e = strchr(p, '\n');
		char name[96];

		assert_non_null(e);
		if (strncmp(p, "# HELP ", 7) == 0) {
			/* fine */
		} else if (strncmp(p, "# TYPE ", 7) == 0) {
			const char *sp = memchr(p + 7, ' ', (size_t)(e - p - 7));

			assert_non_null(sp);
			assert_true(ntyped < 8);
			memcpy(typed[ntyped], p + 7, (size_t)(sp - p - 7));
			typed[ntyped][sp - p - 7] = '\0';
			for (int i = 0; i < ntyped; i++)
				assert_string_not_equal(typed[i], typed[ntyped]);
			memcpy(cur, typed[ntyped], sizeof(cur));
			ntyped++;
		} else {
			assert_int_equal(parse_sample(p, e, name, sizeof(name)), 0);
			/* belongs to the family whose TYPE came last */
			assert_true(ntyped > 0);
			assert_int_equal(strncmp(name, cur, strlen(cur)), 0);
			samples++;
		}
		p = e + 1;
	}
	return samples;
}

static int has_line(const char *text, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return 1;
	return 0;
}

static void test_prometheus_scenario(void **state)
{
	struct metrics_registry *reg = metrics_registry_new(2, 8);
	struct buf b;
	const char *t;
	int v1 = metrics_series_id(reg, "web", "v1");
	int v2 = metrics_series_id(reg, "web", "v2");
	static const char *const expect[] = {
	    "# TYPE canaryd_requests_total counter",
	    "canaryd_requests_total{service=\"web\",version=\"v1\",cohort=\"stable\",code=\"2xx\"} "
	    "3",
	    "canaryd_requests_total{service=\"web\",version=\"v1\",cohort=\"stable\",code=\"4xx\"} "
	    "1",
	    "canaryd_requests_total{service=\"web\",version=\"v1\",cohort=\"baseline\",code="
	    "\"2xx\"} "
	    "1",
	    "canaryd_requests_total{service=\"web\",version=\"v2\",cohort=\"canary\",code=\"2xx\"} "
	    "1",
	    "canaryd_requests_total{service=\"web\",version=\"v2\",cohort=\"canary\",code=\"5xx\"} "
	    "2",
	    "# TYPE canaryd_request_duration_seconds histogram",
	    "canaryd_request_duration_seconds_bucket{service=\"web\",version=\"v1\",cohort="
	    "\"stable\","
	    "le=\"0.0005\"} 3",
	    "canaryd_request_duration_seconds_bucket{service=\"web\",version=\"v1\",cohort="
	    "\"stable\","
	    "le=\"0.001\"} 3",
	    "canaryd_request_duration_seconds_bucket{service=\"web\",version=\"v1\",cohort="
	    "\"stable\","
	    "le=\"0.0025\"} 4",
	    "canaryd_request_duration_seconds_bucket{service=\"web\",version=\"v1\",cohort="
	    "\"stable\","
	    "le=\"+Inf\"} 4",
	    "canaryd_request_duration_seconds_sum{service=\"web\",version=\"v1\",cohort=\"stable\"}"
	    " "
	    "0.002900",
	    "canaryd_request_duration_seconds_count{service=\"web\",version=\"v1\",cohort="
	    "\"stable\"} "
	    "4",
	    "canaryd_request_duration_seconds_bucket{service=\"web\",version=\"v1\",cohort="
	    "\"baseline\",le=\"0.0005\"} 0",
	    "canaryd_request_duration_seconds_bucket{service=\"web\",version=\"v1\",cohort="
	    "\"baseline\",le=\"0.001\"} 1",
	    /* 1000 us sits in [992, 1023]: counted from le 0.0025 (documented) */
	    "canaryd_request_duration_seconds_bucket{service=\"web\",version=\"v2\",cohort="
	    "\"canary\","
	    "le=\"0.001\"} 0",
	    "canaryd_request_duration_seconds_bucket{service=\"web\",version=\"v2\",cohort="
	    "\"canary\","
	    "le=\"0.0025\"} 1",
	    "canaryd_request_duration_seconds_bucket{service=\"web\",version=\"v2\",cohort="
	    "\"canary\","
	    "le=\"0.05\"} 2",
	    "canaryd_request_duration_seconds_bucket{service=\"web\",version=\"v2\",cohort="
	    "\"canary\","
	    "le=\"5\"} 2",
	    "canaryd_request_duration_seconds_bucket{service=\"web\",version=\"v2\",cohort="
	    "\"canary\","
	    "le=\"10\"} 3",
	    "canaryd_request_duration_seconds_bucket{service=\"web\",version=\"v2\",cohort="
	    "\"canary\","
	    "le=\"+Inf\"} 3",
	    "canaryd_request_duration_seconds_sum{service=\"web\",version=\"v2\",cohort=\"canary\"}"
	    " "
	    "5.031000",
	    "canaryd_request_duration_seconds_count{service=\"web\",version=\"v2\",cohort="
	    "\"canary\"} "
	    "3",
	    "# TYPE canaryd_upstream_errors_total counter",
	    "canaryd_upstream_errors_total{service=\"web\",version=\"v2\",kind=\"reset\"} 1",
	    "canaryd_upstream_errors_total{service=\"web\",version=\"v2\",kind=\"response_"
	    "timeout\"} "
	    "1",
	};

	for (int i = 0; i < 3; i++)
		metrics_record(reg, 0, v1, COHORT_STABLE, 200, 300, METRICS_ERR_NONE);
	metrics_record(reg, 0, v1, COHORT_STABLE, 404, 2000, METRICS_ERR_NONE);
	metrics_record(reg, 1, v1, COHORT_BASELINE, 200, 700, METRICS_ERR_NONE);
	metrics_record(reg, 1, v2, COHORT_CANARY, 200, 1000, METRICS_ERR_NONE);
	metrics_record(reg, 0, v2, COHORT_CANARY, 502, 30000, METRICS_ERR_RESET);
	metrics_record(reg, 1, v2, COHORT_CANARY, 504, 5000000, METRICS_ERR_RESPONSE_TIMEOUT);

	buf_init(&b, 1 << 20);
	assert_int_equal(metrics_write_prometheus(reg, &b), 0);
	t = buf_cstr(&b);
	for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
		if (!has_line(t, expect[i]))
			fail_msg("missing line: %s\n--- output:\n%s", expect[i], t);
	}
	/* 5 request lines + 3 cohorts x (15 buckets + sum + count) + 2 upstream */
	assert_int_equal(check_exposition(t), 5 + 3 * 17 + 2);
	/* cohorts that saw nothing are not written */
	assert_null(strstr(t, "version=\"v1\",cohort=\"canary\""));
	assert_null(strstr(t, "cohort=\"shadow\""));
	assert_null(strstr(t, "code=\"3xx\""));
	buf_release(&b);
	metrics_registry_free(reg);
}

static void test_prometheus_escaping_and_cap(void **state)
{
	struct metrics_registry *reg = metrics_registry_new(1, 4);
	struct buf b;
	int id = metrics_series_id(reg, "we\"b\\x", "v\n1");

	metrics_record(reg, 0, id, COHORT_SHADOW, 200, 10, METRICS_ERR_NONE);
	buf_init(&b, 1 << 20);
	assert_int_equal(metrics_write_prometheus(reg, &b), 0);
	assert_true(has_line(buf_cstr(&b), "canaryd_requests_total{service=\"we\\\"b\\\\x\","
	                                   "version=\"v\\n1\",cohort=\"shadow\",code=\"2xx\"} 1"));
	assert_int_equal(check_exposition(buf_cstr(&b)), 1 + 17);
	buf_release(&b);

	/* an empty registry still writes HELP/TYPE and parses */
	metrics_registry_free(reg);
	reg = metrics_registry_new(1, 4);
	buf_init(&b, 1 << 20);
	assert_int_equal(metrics_write_prometheus(reg, &b), 0);
	assert_int_equal(check_exposition(buf_cstr(&b)), 0);
	assert_non_null(strstr(buf_cstr(&b), "# TYPE canaryd_request_duration_seconds histogram"));
	buf_release(&b);

	/* past the caller's cap: an error, not a crash */
	id = metrics_series_id(reg, "web", "v1");
	metrics_record(reg, 0, id, COHORT_STABLE, 200, 10, METRICS_ERR_NONE);
	buf_init(&b, 200);
	assert_int_equal(metrics_write_prometheus(reg, &b), -ENOBUFS);
	buf_release(&b);
	metrics_registry_free(reg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hist_small_values_exact),
	    cmocka_unit_test(test_hist_layout_contiguous_and_narrow),
	    cmocka_unit_test(test_hist_every_value_in_its_bucket),
	    cmocka_unit_test(test_hist_quantiles_uniform),
	    cmocka_unit_test(test_hist_quantiles_lognormal_and_bimodal),
	    cmocka_unit_test(test_hist_empty_and_mean),
	    cmocka_unit_test(test_hist_merge_and_delta),
	    cmocka_unit_test(test_hist_count_le),
	    cmocka_unit_test(test_registry_ids),
	    cmocka_unit_test(test_record_and_read),
	    cmocka_unit_test(test_snapshot_delta_interval),
	    cmocka_unit_test(test_two_writers_one_reader),
	    cmocka_unit_test(test_prometheus_scenario),
	    cmocka_unit_test(test_prometheus_escaping_and_cap),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
