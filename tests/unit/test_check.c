/* Threshold checks: every bound, min_samples, a check with a test (the
 * statistics themselves are in test_judge.c), sources not wired, latency
 * units, the verdict's JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "analysis/check.h"

static void cohort(struct metrics_cohort_snapshot *s, uint64_t req, uint64_t err, uint64_t lat_us)
{
	memset(s, 0, sizeof(*s));
	s->requests = req;
	s->errors = err;
	s->by_class[5] = err;
	s->by_class[2] = req - err;
	s->hist.counts[hist_index(lat_us)] = req;
	s->hist.n = req;
	s->hist.sum_us = req * lat_us;
}

static struct config_check base_check(enum config_metric m)
{
	struct config_check c;

	memset(&c, 0, sizeof(c));
	c.name = "k";
	c.source = CONFIG_SOURCE_METRIC;
	c.metric = m;
	c.min_samples = 200;
	return c;
}

static void test_max_fails_with_reason(void **state)
{
	struct config_check c = base_check(CONFIG_METRIC_ERROR_RATE);
	struct metrics_cohort_snapshot a, b;
	struct check_verdict v;

	(void)state;
	c.max = (struct config_bound){true, 0.03};
	cohort(&a, 1000, 52, 1000);
	cohort(&b, 1000, 10, 1000);
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_FAIL);
	assert_int_equal(v.bound, CHECK_BOUND_MAX);
	assert_true(fabs(v.canary - 0.052) < 1e-9);
	assert_true(fabs(v.baseline - 0.010) < 1e-9);
	assert_string_equal(v.reason, "error_rate 0.052 on the canary is above max 0.03 (baseline "
	                              "0.01; 1000 vs 1000 requests)");
	cohort(&a, 1000, 20, 1000);
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_PASS);
	assert_int_equal(v.bound, CHECK_BOUND_NONE);
	assert_non_null(strstr(v.reason, "within bounds"));
}

static void test_min_samples_inconclusive_never_pass(void **state)
{
	struct config_check c = base_check(CONFIG_METRIC_ERROR_RATE);
	struct metrics_cohort_snapshot a, b;
	struct check_verdict v;

	(void)state;
	c.max = (struct config_bound){true, 0.03};
	cohort(&a, 199, 0, 1000);
	cohort(&b, 5000, 0, 1000);
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_INCONCLUSIVE);
	assert_non_null(strstr(v.reason, "min_samples is 200"));
	/* Even a terrible canary is inconclusive below min_samples. */
	cohort(&a, 100, 100, 1000);
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_INCONCLUSIVE);
	/* Relative bounds need the baseline's samples too. */
	c.max_ratio = (struct config_bound){true, 2};
	cohort(&a, 1000, 0, 1000);
	cohort(&b, 150, 0, 1000);
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_INCONCLUSIVE);
	c.min_samples = 100;
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_PASS);
	cohort(&a, 0, 0, 0);
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_INCONCLUSIVE);
}

static void test_relative_bounds(void **state)
{
	struct config_check c = base_check(CONFIG_METRIC_LATENCY_P99);
	struct metrics_cohort_snapshot a, b;
	struct check_verdict v;

	(void)state;
	c.max_ratio = (struct config_bound){true, 2.0};
	cohort(&a, 1000, 0, 300000); /* 300 ms */
	cohort(&b, 1000, 0, 100000); /* 100 ms */
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_FAIL);
	assert_int_equal(v.bound, CHECK_BOUND_MAX_RATIO);
	assert_true(v.canary > 280 && v.canary < 320); /* milliseconds */
	assert_true(v.observed > 2.5);
	assert_non_null(strstr(v.reason, "ratio"));

	c = base_check(CONFIG_METRIC_ERROR_RATE);
	c.max_increase = (struct config_bound){true, 0.01};
	cohort(&a, 1000, 30, 1000);
	cohort(&b, 1000, 10, 1000);
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_FAIL);
	assert_int_equal(v.bound, CHECK_BOUND_MAX_INCREASE);
	assert_true(fabs(v.observed - 0.02) < 1e-9);

	c = base_check(CONFIG_METRIC_SUCCESS_RATE);
	c.max_decrease = (struct config_bound){true, 0.01};
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_FAIL);
	assert_int_equal(v.bound, CHECK_BOUND_MAX_DECREASE);

	c = base_check(CONFIG_METRIC_REQUEST_RATE);
	c.min = (struct config_bound){true, 50};
	cohort(&a, 1000, 0, 1000); /* 100 req/s over 10 s */
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_PASS);
	assert_true(fabs(v.canary - 100) < 1e-9);
	c.min.value = 150;
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_FAIL);
	assert_int_equal(v.bound, CHECK_BOUND_MIN);
	assert_non_null(strstr(v.reason, "below min"));

	/* Baseline 0 and canary > 0: the ratio is infinite. */
	c = base_check(CONFIG_METRIC_ERROR_RATE);
	c.min_ratio = (struct config_bound){true, 0.5};
	cohort(&a, 1000, 1, 1000);
	cohort(&b, 1000, 0, 1000);
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_PASS);
	c.max_ratio = (struct config_bound){true, 2.0};
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_FAIL);
	assert_int_equal(v.bound, CHECK_BOUND_MAX_RATIO);
	assert_true(isinf(v.observed) && v.observed > 0);
}

/* The bound evaluation source checks share: order, NAN and zero baselines. */
static void test_bounds_on_plain_values(void **state)
{
	struct config_check c = base_check(CONFIG_METRIC_ERROR_RATE);
	struct check_verdict v;

	(void)state;
	assert_false(check_has_relative_bounds(&c));
	c.max = (struct config_bound){true, 10};
	assert_false(check_has_relative_bounds(&c));
	c.max_decrease = (struct config_bound){true, 1};
	assert_true(check_has_relative_bounds(&c));

	/* min and max come first: 12 breaks max before max_decrease is looked at */
	memset(&v, 0, sizeof(v));
	v.canary = 12;
	v.baseline = 20;
	assert_true(check_bounds_violated(&c, &v));
	assert_int_equal(v.bound, CHECK_BOUND_MAX);
	assert_true(v.bound_value == 10 && v.observed == 12);
	/* max_decrease: observed is canary - baseline */
	v.canary = 5;
	assert_true(check_bounds_violated(&c, &v));
	assert_int_equal(v.bound, CHECK_BOUND_MAX_DECREASE);
	assert_true(v.bound_value == 1 && v.observed == -15);
	/* a NAN baseline skips every relative bound */
	v.bound = CHECK_BOUND_NONE;
	v.baseline = NAN;
	assert_false(check_bounds_violated(&c, &v));
	assert_int_equal(v.bound, CHECK_BOUND_NONE);

	/* min_ratio over a zero baseline: 0/0 is 1, x/0 is infinite */
	c = base_check(CONFIG_METRIC_ERROR_RATE);
	c.min_ratio = (struct config_bound){true, 1.5};
	v.canary = 0;
	v.baseline = 0;
	assert_true(check_bounds_violated(&c, &v));
	assert_int_equal(v.bound, CHECK_BOUND_MIN_RATIO);
	assert_true(v.observed == 1.0);
	v.canary = 3;
	assert_false(check_bounds_violated(&c, &v));
	v.baseline = 2;
	assert_false(check_bounds_violated(&c, &v));
	v.baseline = 2.5;
	assert_true(check_bounds_violated(&c, &v));
	assert_true(fabs(v.observed - 1.2) < 1e-12);
}

static void test_test_applied_and_sources(void **state)
{
	struct config_check c = base_check(CONFIG_METRIC_ERROR_RATE);
	struct metrics_cohort_snapshot a, b;
	struct check_verdict v;
	json_t *j;

	(void)state;
	c.max = (struct config_bound){true, 0.03};
	c.test.method = CONFIG_TEST_SEQUENTIAL;
	c.test.confidence = 0.99;
	cohort(&a, 1000, 50, 1000);
	cohort(&b, 1000, 10, 1000);
	/* The test decides: 5% vs 1% over 1000 requests is a significant increase. */
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_FAIL);
	assert_true(v.test.applied);
	assert_int_equal(v.bound, CHECK_BOUND_MAX_INCREASE);
	assert_non_null(strstr(v.reason, "with 99% confidence"));

	j = check_verdict_json(&v);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "outcome")), "fail");
	assert_string_equal(json_string_value(json_object_get(j, "bound")), "max_increase");
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(j, "canary"), "requests")), 1000);
	assert_null(json_object_get(j, "test_not_applied")); /* the dead field is gone */
	assert_true(json_is_object(json_object_get(j, "test")));
	json_decref(j);

	/* A bound violated without significance never fails. */
	cohort(&a, 1000, 35, 1000);
	cohort(&b, 1000, 30, 1000);
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_INCONCLUSIVE);

	/* No test: "test" is null. */
	c.test.method = CONFIG_TEST_NONE;
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_FAIL);
	j = check_verdict_json(&v);
	assert_true(json_is_null(json_object_get(j, "test")));
	json_decref(j);

	c.source = CONFIG_SOURCE_QUERY;
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_ERROR);
	assert_non_null(strstr(v.reason, "judged on their source's values"));
	j = check_verdict_json(&v);
	assert_true(json_is_null(json_object_get(json_object_get(j, "canary"), "value")));
	json_decref(j);

	/*
	 * Shadow metrics: the engine passes the mirror's comparisons as cohorts
	 * (shadow = canary with its mismatches as errors, primary = baseline).
	 */
	c.source = CONFIG_SOURCE_METRIC;
	c.metric = CONFIG_METRIC_SHADOW_MISMATCH_RATE;
	c.max = (struct config_bound){true, 0.05};
	c.max_increase = (struct config_bound){false, 0};
	cohort(&a, 1000, 200, 1000); /* 20% mismatches */
	cohort(&b, 1000, 0, 1000);
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_FAIL);
	assert_string_equal(v.metric, "shadow_mismatch_rate");
	assert_true(fabs(v.canary - 0.2) < 1e-9);
	cohort(&a, 1000, 10, 1000); /* 1% */
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_PASS);
	c.metric = CONFIG_METRIC_SHADOW_LATENCY_P99;
	assert_true(check_metric_value(c.metric, &a, 10000) > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_max_fails_with_reason),
	    cmocka_unit_test(test_min_samples_inconclusive_never_pass),
	    cmocka_unit_test(test_relative_bounds),
	    cmocka_unit_test(test_bounds_on_plain_values),
	    cmocka_unit_test(test_test_applied_and_sources),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
