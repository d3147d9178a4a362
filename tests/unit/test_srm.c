/* The sample-ratio mismatch test (analysis/srm.h): exact vectors, the
 * expected share above 50%, no baseline, the minimum, the sketch's variance,
 * and balanced vs skewed key populations counted through real sketches. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "analysis/srm.h"
#include "core/bucket.h"
#include "metrics/hll.h"

#define NEAR(a, b, tol) assert_true(fabs((a) - (b)) <= (tol))

/* Vectors computed independently (Python: z = (a - qN) / sqrt(Nq(1-q) + ...),
 * p = erfc(|z| / sqrt 2)). */
static void test_exact_vectors_at_equal_slices(void **state)
{
	struct srm_verdict v;

	(void)state;
	srm_test(550, 450, 5000, 0.0, "web", "requests", &v);
	assert_true(v.judged);
	assert_false(v.mismatch); /* p = 0.0016: unlikely, but inside 99.9% */
	NEAR(v.expected_share, 0.5, 1e-12);
	NEAR(v.observed_share, 0.55, 1e-12);
	NEAR(v.z, 3.1622776601683795, 1e-9);
	NEAR(v.p, 0.0015654022580025488, 1e-12);

	srm_test(560, 440, 5000, 0.0, "web", "requests", &v);
	assert_true(v.judged);
	assert_true(v.mismatch);
	NEAR(v.z, 3.794733192202055, 1e-9);
	NEAR(v.p, 0.0001478023103344545, 1e-12);
	assert_string_equal(v.reason, "sample ratio mismatch on web: 560 canary vs 440 baseline "
	                              "requests where the split expects 50.0% on the canary "
	                              "(observed 56.0%, p = 0.00015), so the comparison is "
	                              "invalid");

	/* symmetric: too few on the canary trips it too */
	srm_test(440, 560, 5000, 0.0, "web", "requests", &v);
	assert_true(v.mismatch);
	NEAR(v.z, -3.794733192202055, 1e-9);
}

/* Above 50% the baseline is the remaining 100 - w, so the expected canary
 * share is w / 100, not 1/2. */
static void test_expected_share_above_half(void **state)
{
	struct srm_verdict v;

	(void)state;
	srm_test(800, 200, 80000, 0.0, "web", "requests", &v);
	assert_true(v.judged);
	assert_false(v.mismatch);
	NEAR(v.expected_share, 0.8, 1e-12);
	NEAR(v.z, 0.0, 1e-12);
	NEAR(v.p, 1.0, 1e-12);

	srm_test(830, 170, 80000, 0.0, "web", "requests", &v);
	assert_false(v.mismatch);
	NEAR(v.z, 2.3717082451262845, 1e-9);

	/* 1:1 looks "equal" but is a gross mismatch at 80% */
	srm_test(500, 500, 80000, 0.0, "web", "requests", &v);
	assert_true(v.mismatch);
	NEAR(v.z, -23.717082451262847, 1e-9);

	/* exactly 50%: baseline [50000, 100000) */
	srm_test(500, 500, 50000, 0.0, "web", "requests", &v);
	NEAR(v.expected_share, 0.5, 1e-12);
	assert_false(v.mismatch);
}

static void test_no_verdict_without_baseline_or_units(void **state)
{
	struct srm_verdict v;

	(void)state;
	srm_test(5000, 0, 100000, 0.0, "web", "requests", &v);
	assert_false(v.judged);
	assert_false(v.mismatch);
	assert_true(isnan(v.expected_share));
	srm_test(0, 0, 0, 0.0, "web", "requests", &v);
	assert_false(v.judged);
	assert_true(isnan(v.observed_share));

	/* 99 units, all on the canary: not enough to judge */
	srm_test(99, 0, 5000, 0.0, "web", "keys", &v);
	assert_false(v.judged);
	assert_false(v.mismatch);
	assert_string_equal(v.reason, "web: 99 canary and 0 baseline keys, fewer than the 100 a "
	                              "sample-ratio test needs");
	srm_test(100, 0, 5000, 0.0, "web", "keys", &v);
	assert_true(v.judged);
	assert_true(v.mismatch);

	/* NAN and negative counts are 0 */
	srm_test(NAN, -5, 5000, 0.0, "web", "keys", &v);
	assert_false(v.judged);
	NEAR(v.canary, 0.0, 0.0);
	NEAR(v.baseline, 0.0, 0.0);
}

/* A 3% gap in 20,000 keys is significant for exact counts but within what a
 * 1.6% sketch error explains; a 10% gap is not. */
static void test_sketch_variance_widens_the_bound(void **state)
{
	struct srm_verdict v;

	(void)state;
	srm_test(10300, 9700, 50000, 0.0, "web", "keys", &v);
	assert_true(v.mismatch);
	NEAR(v.z, 4.242640687119285, 1e-9);

	srm_test(10300, 9700, 50000, 0.01625, "web", "keys", &v);
	assert_false(v.mismatch);
	NEAR(v.z, 2.2228316596968134, 1e-9);

	srm_test(10500, 9500, 50000, 0.01625, "web", "keys", &v);
	assert_true(v.mismatch);
	NEAR(v.z, 3.702573010750047, 1e-9);
}

/*
 * Distinct keys bucketed by the real split at weight w into two sketches,
 * every `drop`-th baseline key left out (0: none).  Returns the verdict.
 */
static void split_population(uint32_t w, unsigned nkeys, unsigned drop, struct srm_verdict *v)
{
	static struct hll canary, baseline;
	char key[32];

	hll_clear(&canary);
	hll_clear(&baseline);
	for (unsigned i = 0; i < nkeys; i++) {
		int n = snprintf(key, sizeof(key), "user-%u", i);
		uint32_t h = bucket_hash("web", 3, key, (size_t)n);

		switch (bucket_cohort(bucket_from_hash(h), w)) {
		case COHORT_CANARY:
			hll_add(&canary, h);
			break;
		case COHORT_BASELINE:
			if (!drop || i % drop)
				hll_add(&baseline, h);
			break;
		default:
			break;
		}
	}
	srm_test(hll_estimate(&canary), hll_estimate(&baseline), w, HLL_REL_ERR, "web", "keys", v);
}

static void test_real_sketches_balanced_and_skewed(void **state)
{
	static const uint32_t weights[] = {1000, 5000, 25000, 50000, 75000, 95000};
	struct srm_verdict v;

	(void)state;
	for (size_t i = 0; i < sizeof(weights) / sizeof(weights[0]); i++) {
		split_population(weights[i], 200000, 0, &v);
		assert_true(v.judged);
		if (v.mismatch)
			fail_msg("balanced split at %u tripped: %s", weights[i], v.reason);
		/* a fifth of the baseline's keys never counted: caught */
		split_population(weights[i], 200000, 5, &v);
		if (!v.mismatch)
			fail_msg("skewed split at %u not caught: %s", weights[i], v.reason);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_exact_vectors_at_equal_slices),
	    cmocka_unit_test(test_expected_share_above_half),
	    cmocka_unit_test(test_no_verdict_without_baseline_or_units),
	    cmocka_unit_test(test_sketch_variance_widens_the_bound),
	    cmocka_unit_test(test_real_sketches_balanced_and_skewed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
