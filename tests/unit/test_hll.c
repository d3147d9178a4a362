/* The distinct-key sketch (metrics/hll.h) and the split counts built on it
 * (metrics_split_* in metrics/stats.h): accuracy from 1 to 1M keys, keys of
 * one cohort only, duplicates, merge, and the per-series generation reset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/bucket.h"
#include "metrics/hll.h"
#include "metrics/stats.h"

static struct hll h1, h2, h3; /* 4 KiB each: static, not on the stack */

static uint32_t key_hash(const char *salt, unsigned i)
{
	char key[32];
	int n = snprintf(key, sizeof(key), "user-%u", i);

	return bucket_hash(salt, strlen(salt), key, (size_t)n);
}

/* |estimate - n| within k standard errors (HLL_REL_ERR * n), and at least
 * 0.5 for tiny n where the estimate is nearly exact. */
static void assert_close(double est, double n, double k)
{
	double tol = k * HLL_REL_ERR * n;

	if (tol < 0.5)
		tol = 0.5;
	if (fabs(est - n) > tol)
		fail_msg("estimate %.1f for %.0f distinct keys (tolerance %.1f)", est, n, tol);
}

static void test_empty_and_tiny(void **state)
{
	(void)state;
	hll_clear(&h1);
	assert_true(hll_estimate(&h1) == 0.0);
	hll_add(&h1, key_hash("web", 1));
	assert_close(hll_estimate(&h1), 1, 0);
	for (unsigned i = 2; i <= 10; i++)
		hll_add(&h1, key_hash("web", i));
	assert_close(hll_estimate(&h1), 10, 0);
	hll_clear(&h1);
	assert_true(hll_estimate(&h1) == 0.0);
}

/* 1k, 100k and 1M distinct keys, each added three times: within 3 standard
 * errors (4.9%); the inputs are fixed, so the result is deterministic. */
static void test_accuracy_and_duplicates(void **state)
{
	static const unsigned ns[] = {1000, 5000, 10000, 100000, 1000000};

	(void)state;
	for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
		hll_clear(&h1);
		for (unsigned rep = 0; rep < 3; rep++)
			for (unsigned i = 0; i < ns[k]; i++)
				hll_add(&h1, key_hash("web", i));
		assert_close(hll_estimate(&h1), ns[k], 3.0);
	}
}

/* Every key of one cohort shares the hash's high bits (bucket < w): the
 * sketch must still spread them over all registers. */
static void test_one_cohort_keys(void **state)
{
	unsigned n = 0;

	(void)state;
	hll_clear(&h1);
	for (unsigned i = 0; n < 50000; i++) {
		uint32_t h = key_hash("checkout", i);

		if (bucket_cohort(bucket_from_hash(h), 1000) != COHORT_CANARY)
			continue; /* keep the 1% canary's keys only */
		hll_add(&h1, h);
		n++;
	}
	assert_close(hll_estimate(&h1), n, 3.0);
}

static void test_merge_is_union(void **state)
{
	(void)state;
	hll_clear(&h1);
	hll_clear(&h2);
	hll_clear(&h3);
	for (unsigned i = 0; i < 60000; i++) {
		uint32_t h = key_hash("web", i);

		if (i < 40000)
			hll_add(&h1, h);
		if (i >= 20000)
			hll_add(&h2, h);
		hll_add(&h3, h);
	}
	hll_merge(&h1, &h2);
	/* the merged registers are exactly those of the union's sketch */
	for (unsigned r = 0; r < HLL_M; r++)
		assert_int_equal(atomic_load(&h1.reg[r]), atomic_load(&h3.reg[r]));
	assert_close(hll_estimate(&h1), 60000, 3.0);
}

/* --- split counts: workers, cohorts, generations ----------------------------------- */

static void test_split_counts_merge_workers(void **state)
{
	struct metrics_registry *reg = metrics_registry_new(3, 4);
	struct metrics_split_snapshot s;
	int id;

	(void)state;
	assert_non_null(reg);
	id = metrics_series_id(reg, "web", "v2");
	assert_true(id >= 0);
	/* 3 workers see overlapping key sets: 30,000 distinct keys */
	for (unsigned w = 0; w < 3; w++)
		for (unsigned i = w * 5000; i < w * 5000 + 20000; i++)
			metrics_split_record(reg, w, id, COHORT_CANARY, key_hash("web", i));
	metrics_split_record(reg, 0, id, COHORT_BASELINE, key_hash("web", 7));
	metrics_split_record(reg, 0, id, COHORT_STABLE, key_hash("web", 8)); /* ignored */
	metrics_split_record(reg, 9, id, COHORT_CANARY, key_hash("web", 9)); /* bad worker */
	assert_int_equal(metrics_split_read(reg, id, COHORT_CANARY, &s), 0);
	assert_int_equal(s.requests, 60000);
	assert_close(s.keys, 30000, 3.0);
	assert_int_equal(metrics_split_read(reg, id, COHORT_BASELINE, &s), 0);
	assert_int_equal(s.requests, 1);
	assert_close(s.keys, 1, 0);
	assert_int_equal(metrics_split_read(reg, id, COHORT_STABLE, &s), -EINVAL);
	assert_int_equal(metrics_split_read(reg, 3, COHORT_CANARY, &s), -ENOENT);
	metrics_registry_free(reg);
}

/* A reset hides every worker's older count at once; a worker clears its slot
 * only when it next records, and one that records nothing stays hidden. */
static void test_split_generation_reset(void **state)
{
	struct metrics_registry *reg = metrics_registry_new(2, 4);
	struct metrics_split_snapshot s;
	int id;

	(void)state;
	assert_non_null(reg);
	id = metrics_series_id(reg, "web", "v1");
	metrics_record(reg, 0, id, COHORT_BASELINE, 200, 1000, METRICS_ERR_NONE);
	for (unsigned i = 0; i < 1000; i++) {
		metrics_split_record(reg, 0, id, COHORT_BASELINE, key_hash("web", i));
		metrics_split_record(reg, 1, id, COHORT_BASELINE, key_hash("web", i + 1000));
	}
	metrics_split_read(reg, id, COHORT_BASELINE, &s);
	assert_int_equal(s.requests, 2000);
	assert_close(s.keys, 2000, 3.0);

	metrics_split_reset(reg, id);
	metrics_split_read(reg, id, COHORT_BASELINE, &s);
	assert_int_equal(s.requests, 0);
	assert_true(s.keys == 0.0);

	/* only worker 1 records in the new generation: its old keys are gone */
	for (unsigned i = 5000; i < 5300; i++)
		metrics_split_record(reg, 1, id, COHORT_BASELINE, key_hash("web", i));
	metrics_split_read(reg, id, COHORT_BASELINE, &s);
	assert_int_equal(s.requests, 300);
	assert_close(s.keys, 300, 3.0);

	/* two resets in a row, then worker 0 again */
	metrics_split_reset(reg, id);
	metrics_split_reset(reg, id);
	metrics_split_record(reg, 0, id, COHORT_BASELINE, key_hash("web", 1));
	metrics_split_read(reg, id, COHORT_BASELINE, &s);
	assert_int_equal(s.requests, 1);
	assert_close(s.keys, 1, 0);

	/* the request counters of metrics_record() are untouched by resets */
	{
		struct metrics_cohort_snapshot c;

		assert_int_equal(metrics_read(reg, id, COHORT_BASELINE, &c), 0);
		assert_int_equal(c.requests, 1);
	}
	metrics_registry_free(reg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_empty_and_tiny),
	    cmocka_unit_test(test_accuracy_and_duplicates),
	    cmocka_unit_test(test_one_cohort_keys),
	    cmocka_unit_test(test_merge_is_union),
	    cmocka_unit_test(test_split_counts_merge_workers),
	    cmocka_unit_test(test_split_generation_reset),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
