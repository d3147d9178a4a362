/* The judge's statistics (analysis/judge.h) against scipy reference values
 * (tests/unit/judge_vectors.h, written by scripts/gen-judge-vectors), edge
 * cases, and the checks' `test:` wiring in check.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
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

/* ---- issue 18: group-sequential boundaries, the counting test, the wiring ---- */

static void test_spending_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < N(spend_vectors); i++) {
		const struct spend_vector *x = &spend_vectors[i];

		close_rel(judge_spend((enum judge_spending)x->f, x->alpha, x->t), x->spent, 1e-9,
		          1e-15);
	}
	/* 0 before the first look, alpha at (and past) the horizon, increasing */
	for (int f = 0; f < 2; f++) {
		double prev = 0;

		assert_true(judge_spend((enum judge_spending)f, 0.01, 0) == 0);
		assert_true(judge_spend((enum judge_spending)f, 0.01, 1.5) == 0.01);
		for (int k = 1; k <= 100; k++) {
			double a = judge_spend((enum judge_spending)f, 0.01, k / 100.0);

			assert_true(a > prev);
			prev = a;
		}
	}
	/* O'Brien-Fleming keeps its error for the end; Pocock spends early. */
	assert_true(judge_spend(JUDGE_SPEND_OBRIEN_FLEMING, 0.01, 0.2) <
	            judge_spend(JUDGE_SPEND_POCOCK, 0.01, 0.2) / 100);
}

static void test_gs_bounds_vectors(void **state)
{
	/* Published one-sided 0.025 Lan-DeMets boundaries, five equally spaced
	 * looks (Jennison and Turnbull 2000, table 7.6; R gsDesign/ldbounds) */
	static const double t5[5] = {0.2, 0.4, 0.6, 0.8, 1.0};
	static const double obf5[5] = {4.8769, 3.3569, 2.6803, 2.2898, 2.0310};
	static const double poc5[5] = {2.4380, 2.4268, 2.4101, 2.3966, 2.3859};
	double b[5];

	(void)state;
	for (size_t i = 0; i < N(gs_vectors); i++) {
		const struct gs_vector *x = &gs_vectors[i];

		assert_int_equal(
		    judge_gs_bounds((enum judge_spending)x->f, x->alpha, x->t, x->n, b), 0);
		for (unsigned j = 0; j < x->n; j++)
			close_rel(b[j], x->b[j], 0, 5e-4);
	}
	assert_int_equal(judge_gs_bounds(JUDGE_SPEND_OBRIEN_FLEMING, 0.025, t5, 5, b), 0);
	for (int j = 0; j < 5; j++)
		close_rel(b[j], obf5[j], 0, 2e-4);
	assert_int_equal(judge_gs_bounds(JUDGE_SPEND_POCOCK, 0.025, t5, 5, b), 0);
	for (int j = 0; j < 5; j++)
		close_rel(b[j], poc5[j], 0, 2e-4);
	/* One look is the fixed-sample test. */
	assert_int_equal(judge_gs_bounds(JUDGE_SPEND_POCOCK, 0.01, t5 + 4, 1, b), 0);
	close_rel(b[0], judge_norm_isf(0.01), 0, 1e-9);
	/* Bad input. */
	assert_int_equal(judge_gs_bounds(JUDGE_SPEND_POCOCK, 0, t5, 5, b), -EINVAL);
	assert_int_equal(judge_gs_bounds(JUDGE_SPEND_POCOCK, 0.01, t5, 0, b), -EINVAL);
	{
		static const double bad[2] = {0.5, 0.5};

		assert_int_equal(judge_gs_bounds(JUDGE_SPEND_POCOCK, 0.01, bad, 2, b), -EINVAL);
	}
}

static void test_gs_look(void **state)
{
	struct judge_gs_look l, m;
	double b[JUDGE_GS_MAX_ANALYSES], t[JUDGE_GS_MAX_ANALYSES];

	(void)state;
	/* every look of a short horizon is an analysis, with the design's boundary */
	for (unsigned k = 1; k <= 30; k++)
		t[k - 1] = k / 30.0;
	assert_int_equal(judge_gs_bounds(JUDGE_SPEND_OBRIEN_FLEMING, 0.009, t, 30, b), 0);
	for (uint32_t k = 1; k <= 30; k++) {
		assert_int_equal(judge_gs_look(JUDGE_SPEND_OBRIEN_FLEMING, 0.009, k, 30, &l), 0);
		assert_true(l.analysis);
		assert_int_equal(l.index, k);
		if (isinf(b[k - 1])) /* nothing to spend this early */
			assert_true(isinf(l.bound));
		else
			close_rel(l.bound, b[k - 1], 0, 1e-12);
		close_rel(l.spent, judge_spend(JUDGE_SPEND_OBRIEN_FLEMING, 0.009, k / 30.0), 1e-12,
		          0);
	}
	/* past the horizon: nothing left to spend */
	assert_int_equal(judge_gs_look(JUDGE_SPEND_OBRIEN_FLEMING, 0.009, 31, 30, &l), 0);
	assert_false(l.analysis);
	assert_true(isinf(l.bound) && l.spent == 0.009);
	/* a long horizon: 256 evenly spread analyses, the looks between wait */
	assert_int_equal(judge_gs_look(JUDGE_SPEND_POCOCK, 0.009, 300, 1000, &l), 0);
	assert_int_equal(l.analyses, JUDGE_GS_MAX_ANALYSES);
	assert_false(l.analysis);
	assert_true(isinf(l.bound));
	assert_int_equal(judge_gs_look(JUDGE_SPEND_POCOCK, 0.009, l.next, 1000, &m), 0);
	assert_true(m.analysis && isfinite(m.bound) && m.index == l.index + 1);
	assert_int_equal(judge_gs_look(JUDGE_SPEND_POCOCK, 0.009, 1000, 1000, &m), 0);
	assert_true(m.analysis && m.index == JUDGE_GS_MAX_ANALYSES && m.next == 0);
	close_rel(m.spent, 0.009, 1e-12, 0);
	assert_int_equal(judge_gs_look(JUDGE_SPEND_POCOCK, 0.009, 1, 0, &m), -EINVAL);
}

/* The design's error over repeated looks, by simulation: standard normal
 * increments, the z statistic at each of K looks against judge_gs_look(). */
static double gaussian(void)
{
	return sqrt(-2.0 * log(uniform() + 1e-300)) * cos(2.0 * M_PI * uniform());
}

static void test_gs_type1_simulated(void **state)
{
	(void)state;
	for (int f = 0; f < 2; f++) {
		for (int K = 10; K <= 300; K += 290) { /* every look; and 256 of 300 analyses */
			int crossed = 0, runs = K == 10 ? 20000 : 4000;

			for (int r = 0; r < runs; r++) {
				double w = 0;

				for (int k = 1; k <= K; k++) {
					struct judge_gs_look l;

					w += gaussian();
					assert_int_equal(judge_gs_look((enum judge_spending)f, 0.05,
					                               (uint32_t)k, (uint32_t)K,
					                               &l),
					                 0);
					if (l.analysis && w / sqrt(k) >= l.bound) {
						crossed++;
						break;
					}
				}
			}
			/* 0.05 within 3.5 standard errors (and not far below: the design spends it) */
			if (fabs(crossed - runs * 0.05) > 3.5 * sqrt(runs * 0.05 * 0.95))
				fail_msg("spending %d over %d looks: %d of %d crossed", f, K,
				         crossed, runs);
		}
	}
}

static void test_count_vectors(void **state)
{
	struct judge_count k;

	(void)state;
	for (size_t i = 0; i < N(ibeta_vectors); i++)
		close_rel(judge_ibeta(ibeta_vectors[i].x, ibeta_vectors[i].a, ibeta_vectors[i].b),
		          ibeta_vectors[i].i, 1e-9, 1e-14);
	for (size_t i = 0; i < N(beta_vectors); i++) {
		const struct beta_vector *x = &beta_vectors[i];

		close_rel(judge_beta_log_e(x->x, x->n, x->theta0, x->kappa, x->above), x->log_e,
		          1e-7, 1e-7);
	}
	/* 27 vs 9 errors on equal traffic: the canary's share of the errors is 0.75
	 * against 0.5; the e-value is the vectors' first. */
	judge_count(27, 900, 9, 900, 1.0, 0.01, 20, &k);
	close_rel(k.theta0, 0.5, 1e-12, 0);
	close_rel(k.theta_hat, 0.75, 1e-12, 0);
	close_rel(k.ratio_hat, 3.0, 1e-12, 0);
	close_rel(k.log_e_beyond, beta_vectors[0].log_e, 1e-7, 1e-7);
	assert_int_equal(k.decision, JUDGE_UNDECIDED); /* e^3.16 = 24 < 100 */
	judge_count(27, 900, 9, 900, 1.0, 0.05, 20, &k);
	assert_int_equal(k.decision, JUDGE_BEYOND); /* 24 >= 20 */
	/* a rate-ratio margin moves the null share: 1.5 x on equal traffic is 0.6 */
	judge_count(27, 900, 9, 900, 1.5, 0.05, 20, &k);
	close_rel(k.theta0, 0.6, 1e-12, 0);
	/* unequal exposure is accounted for: 3x the traffic, 3x the errors is equal */
	judge_count(30, 3000, 10, 1000, 1.0, 0.05, 20, &k);
	close_rel(k.theta0, 0.75, 1e-12, 0);
	assert_true(k.log_e_beyond < 0.5 && k.decision == JUDGE_UNDECIDED);
	/* no errors, an empty cohort: undecided, no NaN */
	judge_count(0, 1000, 0, 1000, 1.0, 0.05, 20, &k);
	assert_true(k.log_e_beyond == 0 && k.decision == JUDGE_UNDECIDED);
	judge_count(10, 0, 0, 1000, NAN, NAN, NAN, &k);
	assert_false(isnan(k.theta0) || isnan(k.log_e_beyond));
	/* a much better canary: within */
	judge_count(5, 100000, 200, 100000, 1.0, 0.01, 20, &k);
	assert_int_equal(k.decision, JUDGE_WITHIN);
}

/* The counting test's anytime validity by simulation: A/A Poisson-like
 * traffic at 1% errors, looked at after every interval. */
static void test_count_anytime_aa(void **state)
{
	int crossed = 0, runs = 400;

	(void)state;
	for (int r = 0; r < runs; r++) {
		uint64_t ec = 0, nc = 0, eb = 0, nb = 0;

		for (int t = 0; t < 60; t++) {
			struct judge_count k;

			ec += binomial_small(100, 0.01);
			eb += binomial_small(100, 0.01);
			nc += 100;
			nb += 100;
			judge_count(ec, nc, eb, nb, 1.0, 0.05, 0, &k);
			if (k.decision == JUDGE_BEYOND) {
				crossed++;
				break;
			}
		}
	}
	assert_true(crossed <= runs * 0.05 + 3 * sqrt(runs * 0.05));
}

static void test_check_group_sequential(void **state)
{
	struct config_check c = seq_check(0.005);
	struct metrics_cohort_snapshot a, b, ca, cb;
	struct check_cumulative open = {&ca, &cb, 30, 0}, known = {&ca, &cb, 30, 30};
	struct check_verdict v;
	json_t *j, *t;

	(void)state;
	/* At the horizon's last look, an increase of 0.0125 over 6000 requests per
	 * cohort: the anytime sequence cannot tell it from 0.005 yet, the
	 * group-sequential test can. */
	cohort(&a, 200, 6, 1000);
	cohort(&b, 200, 2, 1000);
	cohort(&ca, 6000, 180, 1000);
	cohort(&cb, 6000, 105, 1000);
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &open, 60000, &v),
	                 CHECK_INCONCLUSIVE);
	assert_false(v.test.group_sequential);
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &known, 60000, &v), CHECK_FAIL);
	assert_true(v.test.group_sequential && v.test.analysis);
	assert_int_equal(v.test.horizon, 30);
	assert_true(v.test.z >= v.test.z_bound && v.test.z_bound > 2 && v.test.z_bound < 3);
	close_rel(v.test.alpha_spent, 0.01, 1e-9, 0); /* all of it at the horizon */
	assert_true(v.test.lower > 0.005);            /* the repeated confidence interval */
	assert_true(v.test.boundary > 0.005 && v.test.boundary < v.test.estimate);
	assert_non_null(strstr(v.reason, "look 30 of 30, O'Brien-Fleming spending"));
	assert_non_null(strstr(v.reason, "6000 vs 6000 requests per cohort"));
	j = check_verdict_json(&v);
	t = json_object_get(j, "test");
	assert_string_equal(json_string_value(json_object_get(t, "design")), "group-sequential");
	assert_string_equal(json_string_value(json_object_get(t, "spending")), "obrien-fleming");
	assert_int_equal(json_integer_value(json_object_get(t, "horizon")), 30);
	assert_true(json_is_real(json_object_get(t, "z_bound")));
	assert_true(json_is_real(json_object_get(t, "alpha_spent")));
	assert_true(json_is_null(json_object_get(t, "absolute")));
	json_decref(j);
	/* A larger increase at look 3 of 30: O'Brien-Fleming's early boundary holds. */
	known.looks = 3;
	cohort(&ca, 6000, 200, 1000);
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &known, 60000, &v),
	                 CHECK_INCONCLUSIVE);
	assert_true(v.test.z_bound > 5 && v.test.alpha_spent < 0.002);
	/* Pocock spends early: the same look fails. */
	c.test.spending = CONFIG_SPEND_POCOCK;
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &known, 60000, &v), CHECK_FAIL);
	assert_non_null(strstr(v.reason, "Pocock"));
	/* With an absolute max the error is split three ways and still sums to alpha:
	 * 0.8 group-sequential, 0.1 anytime, 0.1 the absolute bound. */
	c.max = (struct config_bound){true, 0.5};
	known.looks = 30;
	check_evaluate_cumulative(&c, &a, &b, &known, 60000, &v);
	close_rel(v.test.abs_alpha, 0.001, 1e-12, 0);
	close_rel(v.test.alpha_spent, 0.01, 1e-9, 0);
	c.max.set = false;
	/* Past the horizon only the anytime part is left. */
	known.looks = 31;
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &known, 60000, &v),
	                 CHECK_INCONCLUSIVE);
	assert_false(v.test.analysis);
	/* The pass side: healthy with a horizon passes sooner than without. */
	c.test.spending = CONFIG_SPEND_OBRIEN_FLEMING;
	known.looks = open.looks = 30;
	cohort(&ca, 6000, 60, 1000);
	cohort(&cb, 6000, 62, 1000);
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &open, 60000, &v),
	                 CHECK_INCONCLUSIVE);
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &known, 60000, &v), CHECK_PASS);
	assert_true(v.test.upper < 0.005);
}

static void test_check_counting_and_absolute(void **state)
{
	struct config_check c = seq_check(0);
	struct metrics_cohort_snapshot a, b, ca, cb;
	struct check_cumulative cum = {&ca, &cb, 5, 0};
	struct check_verdict v;
	json_t *j, *t;

	(void)state;
	c.test.max_increase.set = false;
	/* Margin 0: the anytime part is the counting-process test. */
	cohort(&a, 100, 5, 1000);
	cohort(&b, 100, 1, 1000);
	cohort(&ca, 900, 40, 1000);
	cohort(&cb, 900, 9, 1000);
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &cum, 60000, &v), CHECK_FAIL);
	assert_true(v.test.counting && v.test.log_e >= log(100));
	assert_non_null(strstr(v.reason, "40 vs 9 errors"));
	assert_non_null(strstr(v.reason, "counting-process e-value"));
	j = check_verdict_json(&v);
	t = json_object_get(j, "test");
	assert_string_equal(json_string_value(json_object_get(t, "anytime")), "counting-process");
	assert_true(json_is_real(json_object_get(t, "log_e")));
	json_decref(j);

	/* An absolute max with the test: a canary far above it fails on its own
	 * counts even though the baseline is as bad (no relative increase). */
	c = seq_check(0.005);
	c.max = (struct config_bound){true, 0.02};
	cohort(&ca, 400, 40, 1000);
	cohort(&cb, 400, 38, 1000);
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &cum, 60000, &v), CHECK_FAIL);
	assert_int_equal(v.bound, CHECK_BOUND_MAX);
	close_rel(v.bound_value, 0.02, 0, 0);
	close_rel(v.test.abs_alpha, 0.001, 1e-12, 0);
	assert_non_null(strstr(v.reason, "above max 0.02 with 99% confidence on its own counts"));
	j = check_verdict_json(&v);
	t = json_object_get(json_object_get(j, "test"), "absolute");
	assert_true(json_is_object(t));
	close_rel(json_real_value(json_object_get(t, "bound")), 0.02, 0, 0);
	json_decref(j);
	/* ... but a canary at 1% against max 2% gives the bound no evidence. */
	cohort(&ca, 4000, 40, 1000);
	cohort(&cb, 4000, 41, 1000);
	assert_int_not_equal(check_evaluate_cumulative(&c, &a, &b, &cum, 60000, &v), CHECK_FAIL);
	assert_true(v.test.abs_log_e < 0);
	/* success_rate: min is the absolute bound, as 1 - min on errors */
	c = seq_check(0);
	c.test.max_increase.set = false;
	c.metric = CONFIG_METRIC_SUCCESS_RATE;
	c.min = (struct config_bound){true, 0.98};
	cohort(&ca, 400, 40, 1000);
	cohort(&cb, 400, 38, 1000);
	assert_int_equal(check_evaluate_cumulative(&c, &a, &b, &cum, 60000, &v), CHECK_FAIL);
	assert_int_equal(v.bound, CHECK_BOUND_MIN);
	assert_non_null(strstr(v.reason, "below min 0.98"));
}

/* The absolute part does not raise false rollbacks: A/A at 1% with max 2%,
 * 0.99 confidence, 30 looks of a known horizon: crossings stay <= alpha. */
static void test_check_aa_with_max(void **state)
{
	struct config_check c = seq_check(0);
	static struct metrics_cohort_snapshot a, b, ca, cb;
	int crossed = 0, runs = 300;

	(void)state;
	c.test.max_increase.set = false;
	c.max = (struct config_bound){true, 0.02};
	for (int r = 0; r < runs; r++) {
		memset(&ca, 0, sizeof(ca));
		memset(&cb, 0, sizeof(cb));
		for (uint32_t k = 1; k <= 30; k++) {
			struct check_cumulative cum = {&ca, &cb, k, 30};
			struct check_verdict v;

			cohort(&a, 60, binomial_small(60, 0.01), 1000);
			cohort(&b, 60, binomial_small(60, 0.01), 1000);
			ca.requests += a.requests;
			ca.errors += a.errors;
			cb.requests += b.requests;
			cb.errors += b.errors;
			if (check_evaluate_cumulative(&c, &a, &b, &cum, 60000, &v) == CHECK_FAIL) {
				crossed++;
				break;
			}
		}
	}
	assert_true(crossed <= runs * 0.01 + 3 * sqrt(runs * 0.01));
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
	    cmocka_unit_test(test_spending_vectors),
	    cmocka_unit_test(test_gs_bounds_vectors),
	    cmocka_unit_test(test_gs_look),
	    cmocka_unit_test(test_gs_type1_simulated),
	    cmocka_unit_test(test_count_vectors),
	    cmocka_unit_test(test_count_anytime_aa),
	    cmocka_unit_test(test_check_group_sequential),
	    cmocka_unit_test(test_check_counting_and_absolute),
	    cmocka_unit_test(test_check_aa_with_max),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
