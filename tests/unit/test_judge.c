/* The judge's statistics (analysis/judge.h) against scipy reference values
 * (tests/unit/judge_vectors.h, written by scripts/gen-judge-vectors), edge
 * cases, and the checks' `test:` wiring in check.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "analysis/check.h"
#include "analysis/judge.h"
#include "judge_vectors.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void close_rel(double got, double want, double rel, double abs_tol)
{
	if (!(fabs(got - want) <= fmax(abs_tol, rel * fabs(want))))
		fail_msg("got %.17g, want %.17g", got, want);
}

static void test_norm(void **state)
{
	(void)state;
	for (size_t i = 0; i < N(norm_vectors); i++) {
		close_rel(judge_norm_sf(norm_vectors[i].z), norm_vectors[i].sf, 1e-12, 1e-300);
		if (norm_vectors[i].sf > 1e-290 && norm_vectors[i].sf < 1 - 1e-15)
			close_rel(judge_norm_isf(norm_vectors[i].sf), norm_vectors[i].z, 1e-9,
			          1e-9);
	}
	assert_true(judge_norm_sf(NAN) == 1.0);
	assert_true(judge_norm_sf(INFINITY) == 0.0);
	assert_false(isnan(judge_norm_isf(0)));
	assert_false(isnan(judge_norm_isf(1)));
}

static void test_sequential_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < N(seq_vectors); i++) {
		const struct seq_vector *x = &seq_vectors[i];
		struct judge_seq s;

		judge_sequential(x->ec, x->nc, x->eb, x->nb, x->margin, x->confidence, 0, &s);
		close_rel(s.lower, x->lower, 1e-7, 1e-10);
		close_rel(s.upper, x->upper, 1e-7, 1e-10);
		close_rel(s.log_lr, x->log_lr, 1e-6, 1e-8);
		assert_int_equal((int)s.decision, x->decision);
		/* The decision is the likelihood ratio crossing 1/alpha at the margin. */
		if (x->decision)
			assert_true(s.log_lr >= log(1 / (1 - x->confidence)) - 1e-9);
		else
			assert_true(s.more_per_cohort > 0);
	}
}

static void test_sequential_edges(void **state)
{
	struct judge_seq s;

	(void)state;
	/* Zero counts: no data, trivial bounds, no NaN. */
	judge_sequential(0, 0, 0, 0, 0.01, 0.99, 0, &s);
	assert_int_equal(s.decision, JUDGE_UNDECIDED);
	assert_true(s.lower == -1 && s.upper == 1);
	assert_false(isnan(s.diff) || isnan(s.p_value) || isnan(s.z) || isnan(s.log_lr));
	/* One cohort empty. */
	judge_sequential(50, 1000, 0, 0, 0.01, 0.99, 0, &s);
	assert_int_equal(s.decision, JUDGE_UNDECIDED);
	assert_true(isinf(s.more_per_cohort));
	/* All errors against none: fails, bounds clamped into [-1, 1]. */
	judge_sequential(500, 500, 0, 500, 0.05, 0.99, 0, &s);
	assert_int_equal(s.decision, JUDGE_BEYOND);
	assert_true(s.upper <= 1 && s.lower > 0.9);
	/* Identical cohorts with zero errors: never a fail; with a margin and
	 * enough data, a pass; with little data, undecided. */
	judge_sequential(0, 200, 0, 200, 0.01, 0.99, 0, &s);
	assert_int_equal(s.decision, JUDGE_UNDECIDED);
	assert_true(s.more_per_cohort > 0 && isfinite(s.more_per_cohort));
	judge_sequential(0, 20000, 0, 20000, 0.01, 0.99, 0, &s);
	assert_int_equal(s.decision, JUDGE_WITHIN);
	/* Margin 0 with identical rates: the estimate sits on it forever. */
	judge_sequential(100, 10000, 100, 10000, 0, 0.99, 0, &s);
	assert_int_equal(s.decision, JUDGE_UNDECIDED);
	assert_true(isinf(s.more_per_cohort));
	/* Errors above requests are capped. */
	judge_sequential(900, 100, 0, 100, 0.0, 0.99, 0, &s);
	assert_true(s.p_canary == 1.0);
	/* Huge counts: no overflow, a very narrow sequence. */
	judge_sequential(UINT64_MAX / 100, UINT64_MAX, UINT64_MAX / 100, UINT64_MAX, 0.001, 0.99, 0,
	                 &s);
	assert_false(isnan(s.lower) || isnan(s.upper) || isnan(s.log_lr));
	assert_true(s.upper - s.lower < 1e-6);
	assert_int_equal(s.decision, JUDGE_WITHIN);
	judge_sequential(UINT64_MAX / 50, UINT64_MAX, UINT64_MAX / 100, UINT64_MAX, 0.001, 0.99, 0,
	                 &s);
	assert_int_equal(s.decision, JUDGE_BEYOND);
	/* Bad parameters are clamped, not NaN. */
	judge_sequential(10, 1000, 10, 1000, NAN, NAN, NAN, &s);
	assert_false(isnan(s.lower) || isnan(s.upper) || isnan(s.margin) || isnan(s.tau));
	/* The half-width shrinks with the variance and grows with confidence. */
	assert_true(judge_seq_half_width(1e-6, 0.01, 0.01) <
	            judge_seq_half_width(1e-5, 0.01, 0.01));
	assert_true(judge_seq_half_width(1e-6, 0.01, 0.001) >
	            judge_seq_half_width(1e-6, 0.01, 0.01));
	assert_true(judge_seq_half_width(0, 0.01, 0.01) == 0);
}

/* Anytime validity, checked by simulation: an A/A comparison looked at
 * every interval for 100 intervals must cross rarely (<= alpha plus noise). */
static uint64_t rng_state = 88172645463325252ull;

static double uniform(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (double)(rng_state >> 11) / 9007199254740992.0;
}

static uint64_t binomial_small(uint64_t n, double p)
{
	uint64_t k = 0;

	for (uint64_t i = 0; i < n; i++)
		k += uniform() < p;
	return k;
}

static void test_sequential_anytime_aa(void **state)
{
	int crossed = 0, runs = 400;

	(void)state;
	for (int r = 0; r < runs; r++) {
		uint64_t ec = 0, nc = 0, eb = 0, nb = 0;

		for (int t = 0; t < 100; t++) {
			struct judge_seq s;

			ec += binomial_small(100, 0.02);
			eb += binomial_small(100, 0.02);
			nc += 100;
			nb += 100;
			judge_sequential(ec, nc, eb, nb, 0.0, 0.95, 0.005, &s);
			if (s.decision == JUDGE_BEYOND) {
				crossed++;
				break;
			}
		}
	}
	/* alpha = 0.05 on one side (the two-sided sequence spends at most that) */
	assert_true(crossed <= runs * 0.05 + 3 * sqrt(runs * 0.05));
}

static void fill(struct hist *h, unsigned n, const unsigned *idx, const uint64_t *cnt)
{
	hist_init(h);
	for (unsigned i = 0; i < n; i++) {
		h->counts[idx[i]] += cnt[i];
		h->n += cnt[i];
	}
}

static void test_mann_whitney_vectors(void **state)
{
	static struct hist a, b;

	(void)state;
	for (size_t i = 0; i < N(mw_vectors); i++) {
		const struct mw_vector *x = &mw_vectors[i];
		struct judge_mw m;

		fill(&a, x->nc, x->ci, x->cn);
		fill(&b, x->nb, x->bi, x->bn);
		assert_int_equal(judge_mann_whitney(&a, &b, x->scale, &m), 0);
		close_rel(m.u, x->u, 1e-12, 1e-9);
		close_rel(m.p_greater, x->p_greater, 1e-9, 1e-15);
		close_rel(m.p_less, x->p_less, 1e-9, 1e-15);
		close_rel(m.cles, x->cles, 1e-12, 1e-12);
		close_rel(m.shift_us, x->shift_us, 1e-12, 1e-9);
		close_rel(m.median_canary_us, x->med_c_us, 1e-12, 1e-9);
		close_rel(m.median_baseline_us, x->med_b_us, 1e-12, 1e-9);
	}
}

static void test_mann_whitney_edges(void **state)
{
	static struct hist a, b;
	struct judge_mw m;

	(void)state;
	hist_init(&a);
	hist_init(&b);
	/* Both empty, one empty: trivial answers, no NaN. */
	assert_int_equal(judge_mann_whitney(&a, &b, 1.0, &m), 0);
	assert_true(m.p_greater == 1 && m.p_less == 1 && m.cles == 0.5 && m.shift_us == 0);
	hist_add(&a, 1000);
	assert_int_equal(judge_mann_whitney(&a, &b, 1.0, &m), 0);
	assert_true(m.p_greater == 1 && m.ratio == 1);
	/* All equal: variance 0, p 1, CLES 0.5. */
	hist_add(&b, 1000);
	assert_int_equal(judge_mann_whitney(&a, &b, 1.0, &m), 0);
	assert_true(m.p_greater == 1 && m.p_less == 1 && m.cles == 0.5);
	assert_false(isnan(m.z_greater));
	/* Identical large cohorts. */
	hist_init(&a);
	for (unsigned i = 40; i < 200; i++)
		a.counts[i] = 1000 + i;
	b = a;
	assert_int_equal(judge_mann_whitney(&a, &b, 1.0, &m), 0);
	close_rel(m.cles, 0.5, 1e-12, 1e-12);
	assert_true(m.shift_us == 0);
	assert_true(m.p_greater > 0.4 && m.p_less > 0.4);
	/* Huge counts: no overflow or NaN; scaled baseline makes it "within". */
	hist_init(&a);
	hist_init(&b);
	a.counts[100] = b.counts[100] = UINT64_MAX / 4;
	a.counts[101] = b.counts[99] = UINT64_MAX / 4;
	assert_int_equal(judge_mann_whitney(&a, &b, 1.0, &m), 0);
	assert_false(isnan(m.p_greater) || isnan(m.p_less) || isnan(m.cles) || isnan(m.sd_u));
	assert_true(m.p_greater < 1e-12);
	assert_int_equal(judge_mann_whitney(&a, &b, 2.0, &m), 0);
	assert_true(m.p_less < 1e-12);
	/* Bad scale is 1. */
	assert_int_equal(judge_mann_whitney(&a, &b, NAN, &m), 0);
	assert_true(m.scale == 1.0);
	/* Spending sums to at most alpha. */
	{
		double sum = 0;

		for (uint32_t k = 1; k < 100000; k++)
			sum += judge_alpha_spent(0.01, k);
		assert_true(sum <= 0.01);
		assert_true(judge_alpha_spent(0.01, 0) == judge_alpha_spent(0.01, 1));
	}
}

/* ---- check.c wiring ---- */

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

/* req requests with latencies spread log-normally-ish around lat_us */
static void spread(struct metrics_cohort_snapshot *s, uint64_t req, uint64_t lat_us)
{
	unsigned c = hist_index(lat_us);

	cohort(s, req, 0, lat_us);
	memset(s->hist.counts, 0, sizeof(s->hist.counts));
	for (int d = -8; d <= 8; d++)
		s->hist.counts[c + d] = req / 17;
	s->hist.counts[c] += req - 17 * (req / 17);
}

static struct config_check seq_check(double d)
{
	struct config_check c;

	memset(&c, 0, sizeof(c));
	c.name = "errors";
	c.source = CONFIG_SOURCE_METRIC;
	c.metric = CONFIG_METRIC_ERROR_RATE;
	c.min_samples = 200;
	c.test.method = CONFIG_TEST_SEQUENTIAL;
	c.test.confidence = 0.99;
	c.test.max_increase = (struct config_bound){true, d};
	return c;
}

static void test_check_sequential(void **state)
{
	struct config_check c = seq_check(0.005);
	struct metrics_cohort_snapshot a, b, ca, cb;
	struct check_cumulative cum = {&ca, &cb, 7, 0};
	struct check_verdict v;
	json_t *j, *t;

	(void)state;
	/* The canary is 2 pp worse over 10000 requests: fail, numbers in the verdict. */
	cohort(&a, 1000, 30, 1000);
	cohort(&b, 1000, 10, 1000);
	cohort(&ca, 10000, 300, 1000);
	cohort(&cb, 10000, 100, 1000);
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &cum, 10000, &v), CHECK_FAIL);
	assert_true(v.test.applied);
	assert_int_equal(v.bound, CHECK_BOUND_MAX_INCREASE);
	assert_true(v.test.lower > 0.005 && v.test.lower < 0.02);
	close_rel(v.test.estimate, 0.02, 1e-12, 1e-12);
	assert_int_equal(v.test.canary_errors, 300);
	assert_non_null(strstr(v.reason, "above max_increase 0.005 with 99% confidence"));
	j = check_verdict_json(&v);
	t = json_object_get(j, "test");
	assert_string_equal(json_string_value(json_object_get(t, "method")), "sequential");
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(t, "canary"), "errors")), 300);
	assert_true(json_is_real(json_object_get(t, "lower")));
	assert_int_equal(json_integer_value(json_object_get(t, "looks")), 7);
	json_decref(j);

	/* Healthy with plenty of data: pass. */
	cohort(&ca, 40000, 400, 1000);
	cohort(&cb, 40000, 410, 1000);
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &cum, 10000, &v), CHECK_PASS);
	assert_non_null(strstr(v.reason, "within max_increase"));
	/* ... unless an absolute bound is violated in this interval. */
	c.max = (struct config_bound){true, 0.02};
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &cum, 10000, &v),
	                 CHECK_INCONCLUSIVE);
	assert_non_null(strstr(v.reason, "cannot pass"));
	c.max.set = false;

	/* Healthy at low traffic: inconclusive, with how much more is needed. */
	cohort(&ca, 400, 4, 1000);
	cohort(&cb, 400, 4, 1000);
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &cum, 10000, &v),
	                 CHECK_INCONCLUSIVE);
	assert_true(v.test.more_per_cohort > 0 && isfinite(v.test.more_per_cohort));
	assert_non_null(strstr(v.reason, "more requests per cohort"));
	/* Below min_samples cumulatively: inconclusive even if terrible. */
	cohort(&ca, 150, 150, 1000);
	cohort(&cb, 150, 0, 1000);
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &cum, 10000, &v),
	                 CHECK_INCONCLUSIVE);
	assert_false(v.test.applied);
	assert_non_null(strstr(v.reason, "min_samples is 200"));
	/* The interval alone may be small: the cumulative counts decide. */
	cohort(&a, 10, 1, 1000);
	cohort(&ca, 10000, 300, 1000);
	cohort(&cb, 10000, 100, 1000);
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &cum, 10000, &v), CHECK_FAIL);

	/* success_rate: the margin comes from max_decrease, reported in its terms. */
	c = seq_check(0);
	c.test.max_increase.set = false;
	c.metric = CONFIG_METRIC_SUCCESS_RATE;
	c.max_decrease = (struct config_bound){true, 0.005};
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &cum, 10000, &v), CHECK_FAIL);
	assert_int_equal(v.bound, CHECK_BOUND_MAX_DECREASE);
	close_rel(v.test.estimate, -0.02, 1e-12, 1e-12);
	assert_true(v.test.upper < -0.005);
	close_rel(v.test.canary_value, 0.97, 1e-12, 1e-12);

	/* Without cumulative snapshots the interval is the sample. */
	c = seq_check(0.005);
	cohort(&a, 10000, 300, 1000);
	cohort(&b, 10000, 100, 1000);
	assert_int_equal(check_evaluate(&c, &a, &b, 10000, &v), CHECK_FAIL);
	assert_int_equal(v.test.looks, 1);
	/* NULL cohorts are no data. */
	assert_int_equal(check_evaluate(&c, NULL, NULL, 10000, &v), CHECK_INCONCLUSIVE);
}

static void test_check_mann_whitney(void **state)
{
	struct config_check c;
	static struct metrics_cohort_snapshot a, b, ca, cb;
	struct check_cumulative cum = {&ca, &cb, 3, 0};
	struct check_verdict v;
	json_t *j, *t;

	(void)state;
	memset(&c, 0, sizeof(c));
	c.name = "latency";
	c.source = CONFIG_SOURCE_METRIC;
	c.metric = CONFIG_METRIC_LATENCY_P99;
	c.min_samples = 200;
	c.test.method = CONFIG_TEST_MANN_WHITNEY;
	c.test.confidence = 0.99;
	c.test.max_ratio = (struct config_bound){true, 1.1};
	spread(&a, 1000, 100000);
	spread(&b, 1000, 100000);
	/* Twice as slow: fail, with CLES and shift. */
	spread(&ca, 5000, 200000);
	spread(&cb, 5000, 100000);
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &cum, 10000, &v), CHECK_FAIL);
	assert_int_equal(v.bound, CHECK_BOUND_MAX_RATIO);
	assert_true(v.test.cles > 0.9);
	assert_true(v.test.shift_ms > 80 && v.test.shift_ms < 120);
	assert_true(v.test.estimate > 1.8 && v.test.estimate < 2.2);
	close_rel(v.test.alpha, 0.01 / 12, 1e-12, 0);
	assert_non_null(strstr(v.reason, "slower than 1.1x the baseline"));
	j = check_verdict_json(&v);
	t = json_object_get(j, "test");
	assert_string_equal(json_string_value(json_object_get(t, "method")), "mann-whitney");
	assert_true(json_is_null(json_object_get(t, "lower")));
	assert_true(json_is_real(json_object_get(t, "cles")));
	assert_true(json_is_null(json_object_get(json_object_get(t, "canary"), "errors")));
	json_decref(j);
	/* Same distribution: within 1.1x with enough data. */
	spread(&ca, 50000, 100000);
	spread(&cb, 50000, 100000);
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &cum, 10000, &v), CHECK_PASS);
	close_rel(v.test.cles, 0.5, 1e-9, 1e-9);
	/* Same, little data, a tight margin: inconclusive with an estimate. */
	c.test.max_ratio.value = 1.01;
	spread(&ca, 300, 100000);
	spread(&cb, 300, 100000);
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &cum, 10000, &v),
	                 CHECK_INCONCLUSIVE);
	assert_true(v.test.more_per_cohort > 0);
	assert_non_null(strstr(v.reason, "not yet told apart"));
	/* Without max_ratio the margin is 1 (the check's max_ratio if set). */
	c.test.max_ratio.set = false;
	c.max_ratio = (struct config_bound){true, 3.0};
	spread(&ca, 5000, 200000);
	spread(&cb, 5000, 100000);
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &cum, 10000, &v), CHECK_PASS);
	close_rel(v.test.margin, 3.0, 0, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_norm),
	    cmocka_unit_test(test_sequential_vectors),
	    cmocka_unit_test(test_sequential_edges),
	    cmocka_unit_test(test_sequential_anytime_aa),
	    cmocka_unit_test(test_mann_whitney_vectors),
	    cmocka_unit_test(test_mann_whitney_edges),
	    cmocka_unit_test(test_check_sequential),
	    cmocka_unit_test(test_check_mann_whitney),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
