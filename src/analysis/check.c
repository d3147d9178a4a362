/*
 * check.c - threshold checks for one interval (see check.h, docs/rollout.md).
 */
#include "analysis/check.h"
#include "analysis/judge.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

const char *check_outcome_name(enum check_outcome o)
{
	switch (o) {
	case CHECK_PASS:
		return "pass";
	case CHECK_FAIL:
		return "fail";
	case CHECK_INCONCLUSIVE:
		return "inconclusive";
	case CHECK_ERROR:
		return "error";
	}
	return "error";
}

const char *check_bound_name(enum check_bound b)
{
	static const char *const names[] = {"none",      "min",          "max",         "min_ratio",
	                                    "max_ratio", "max_increase", "max_decrease"};

	if ((size_t)b >= sizeof(names) / sizeof(names[0]))
		return "none";
	return names[b];
}

double check_metric_value(enum config_metric m, const struct metrics_cohort_snapshot *s,
                          uint64_t interval_ms)
{
	if (!s || s->requests == 0)
		return NAN;
	switch (m) {
	case CONFIG_METRIC_REQUEST_RATE:
		return metrics_request_rate(s, (double)interval_ms / 1000.0);
	case CONFIG_METRIC_ERROR_RATE:
	case CONFIG_METRIC_SHADOW_MISMATCH_RATE: /* the engine passes the mirror's comparisons */
	case CONFIG_METRIC_SHADOW_ERROR_RATE:    /* as cohorts: errors = mismatches / failures */
		return metrics_error_rate(s);
	case CONFIG_METRIC_SUCCESS_RATE:
		return metrics_success_rate(s);
	case CONFIG_METRIC_LATENCY_P50:
		return metrics_latency_quantile_us(s, 0.50) / 1000.0;
	case CONFIG_METRIC_LATENCY_P90:
		return metrics_latency_quantile_us(s, 0.90) / 1000.0;
	case CONFIG_METRIC_LATENCY_P95:
		return metrics_latency_quantile_us(s, 0.95) / 1000.0;
	case CONFIG_METRIC_LATENCY_P99:
	case CONFIG_METRIC_SHADOW_LATENCY_P99: /* shadow (canary) vs primary (baseline) */
		return metrics_latency_quantile_us(s, 0.99) / 1000.0;
	case CONFIG_METRIC_LATENCY_MEAN:
		return metrics_latency_mean_us(s) / 1000.0;
	default:
		return NAN;
	}
}

/* The metric a test judges: a count check's (query/http/exec) is its error rate. */
static enum config_metric judged_metric(const struct config_check *c)
{
	return c->source == CONFIG_SOURCE_METRIC ? c->metric : CONFIG_METRIC_ERROR_RATE;
}

/* What a test's reasons call the judged value: the metric, or "exec error rate". */
static const char *judged_name(const struct config_check *c, const char *metric)
{
	switch (c->source) {
	case CONFIG_SOURCE_QUERY:
		return "query error rate";
	case CONFIG_SOURCE_HTTP:
		return "http error rate";
	case CONFIG_SOURCE_EXEC:
		return "exec error rate";
	default:
		return metric;
	}
}

bool check_has_relative_bounds(const struct config_check *c)
{
	return c->min_ratio.set || c->max_ratio.set || c->max_increase.set || c->max_decrease.set;
}

static const char *source_name(const struct config_check *c)
{
	switch (c->source) {
	case CONFIG_SOURCE_METRIC: {
		const char *n = config_metric_name(c->metric);
		return n ? n : "metric";
	}
	case CONFIG_SOURCE_QUERY:
		return "query";
	case CONFIG_SOURCE_HTTP:
		return "http";
	case CONFIG_SOURCE_EXEC:
		return "exec";
	}
	return "metric";
}

/* skip: bounds a test replaces (they are judged by the test, not per interval) */
static bool violated_except(const struct config_check *c, struct check_verdict *v, unsigned skip)
{
	double ratio, diff = v->canary - v->baseline;

	if (v->baseline == 0)
		ratio = v->canary == 0 ? 1.0 : INFINITY;
	else
		ratio = v->canary / v->baseline;

#define TRY(field, kind, val, bad)                                     \
	do {                                                           \
		if (c->field.set && !(skip & 1u << (kind)) && (bad)) { \
			v->bound = (kind);                             \
			v->bound_value = c->field.value;               \
			v->observed = (val);                           \
			return true;                                   \
		}                                                      \
	} while (0)

	TRY(min, CHECK_BOUND_MIN, v->canary, v->canary < c->min.value);
	TRY(max, CHECK_BOUND_MAX, v->canary, v->canary > c->max.value);
	if (!isnan(v->baseline)) {
		TRY(min_ratio, CHECK_BOUND_MIN_RATIO, ratio, ratio < c->min_ratio.value);
		TRY(max_ratio, CHECK_BOUND_MAX_RATIO, ratio, ratio > c->max_ratio.value);
		TRY(max_increase, CHECK_BOUND_MAX_INCREASE, diff, diff > c->max_increase.value);
		TRY(max_decrease, CHECK_BOUND_MAX_DECREASE, diff, -diff > c->max_decrease.value);
	}
#undef TRY
	return false;
}

bool check_bounds_violated(const struct config_check *c, struct check_verdict *v)
{
	return violated_except(c, v, 0);
}

static enum check_outcome test_evaluate(const struct config_check *c,
                                        const struct metrics_cohort_snapshot *canary,
                                        const struct metrics_cohort_snapshot *baseline,
                                        const struct check_cumulative *cum, uint64_t interval_ms,
                                        struct check_verdict *v);

enum check_outcome check_evaluate(const struct config_check *c,
                                  const struct metrics_cohort_snapshot *canary,
                                  const struct metrics_cohort_snapshot *baseline,
                                  uint64_t interval_ms, struct check_verdict *out)
{
	return check_evaluate_cumulative(c, canary, baseline, NULL, interval_ms, out);
}

enum check_outcome check_evaluate_cumulative(const struct config_check *c,
                                             const struct metrics_cohort_snapshot *canary,
                                             const struct metrics_cohort_snapshot *baseline,
                                             const struct check_cumulative *cum,
                                             uint64_t interval_ms, struct check_verdict *out)
{
	struct check_verdict *v = out;
	const char *m;
	bool need_baseline;

	memset(v, 0, sizeof(*v));
	v->check = c->name;
	v->metric = m = source_name(c);
	v->canary = v->baseline = v->bound_value = v->observed = NAN;
	v->min_samples = c->min_samples;
	v->interval_ms = interval_ms;
	v->canary_requests = canary ? canary->requests : 0;
	v->baseline_requests = baseline ? baseline->requests : 0;

	if (c->source != CONFIG_SOURCE_METRIC && !config_check_counts(c)) {
		v->outcome = CHECK_ERROR;
		snprintf(v->reason, sizeof(v->reason),
		         "%s checks are judged on their source's values (analysis/source.h), not "
		         "here, so check %s cannot be evaluated",
		         m, c->name);
		return v->outcome;
	}
	if (c->test.method != CONFIG_TEST_NONE)
		return test_evaluate(c, canary, baseline, cum, interval_ms, v);
	need_baseline = check_has_relative_bounds(c);
	if (v->canary_requests < c->min_samples ||
	    (need_baseline && v->baseline_requests < c->min_samples)) {
		v->outcome = CHECK_INCONCLUSIVE;
		snprintf(v->reason, sizeof(v->reason),
		         "too few requests for %s: %llu on the canary and %llu on the "
		         "baseline, min_samples is %u",
		         m, (unsigned long long)v->canary_requests,
		         (unsigned long long)v->baseline_requests, c->min_samples);
		return v->outcome;
	}
	v->canary = check_metric_value(c->metric, canary, interval_ms);
	v->baseline = check_metric_value(c->metric, baseline, interval_ms);
	if (isnan(v->canary) || (need_baseline && isnan(v->baseline))) {
		v->outcome = CHECK_ERROR;
		snprintf(v->reason, sizeof(v->reason), "%s could not be computed", m);
		return v->outcome;
	}

	if (!check_bounds_violated(c, v)) {
		v->outcome = CHECK_PASS;
		snprintf(v->reason, sizeof(v->reason),
		         "%s %.4g on the canary is within bounds (baseline %.4g; %llu vs %llu "
		         "requests)",
		         m, v->canary, v->baseline, (unsigned long long)v->canary_requests,
		         (unsigned long long)v->baseline_requests);
		return v->outcome;
	}

	v->outcome = CHECK_FAIL;
	switch (v->bound) {
	case CHECK_BOUND_MIN:
	case CHECK_BOUND_MAX:
		snprintf(v->reason, sizeof(v->reason),
		         "%s %.4g on the canary is %s %s %.4g (baseline %.4g; %llu vs %llu "
		         "requests)",
		         m, v->canary, v->bound == CHECK_BOUND_MIN ? "below" : "above",
		         check_bound_name(v->bound), v->bound_value, v->baseline,
		         (unsigned long long)v->canary_requests,
		         (unsigned long long)v->baseline_requests);
		break;
	case CHECK_BOUND_MIN_RATIO:
	case CHECK_BOUND_MAX_RATIO:
		snprintf(v->reason, sizeof(v->reason),
		         "%s canary/baseline ratio %.4g is %s %s %.4g (canary %.4g, baseline "
		         "%.4g; %llu vs %llu requests)",
		         m, v->observed, v->bound == CHECK_BOUND_MIN_RATIO ? "below" : "above",
		         check_bound_name(v->bound), v->bound_value, v->canary, v->baseline,
		         (unsigned long long)v->canary_requests,
		         (unsigned long long)v->baseline_requests);
		break;
	default:
		snprintf(v->reason, sizeof(v->reason),
		         "%s %s of %.4g from the baseline is above %s %.4g (canary %.4g, "
		         "baseline %.4g; %llu vs %llu requests)",
		         m, v->bound == CHECK_BOUND_MAX_INCREASE ? "increase" : "decrease",
		         v->bound == CHECK_BOUND_MAX_INCREASE ? v->observed : -v->observed,
		         check_bound_name(v->bound), v->bound_value, v->canary, v->baseline,
		         (unsigned long long)v->canary_requests,
		         (unsigned long long)v->baseline_requests);
		break;
	}
	return v->outcome;
}

/* ------------------------------------------------------------------------ */
/* Statistical tests (docs/judge.md)                                          */

static double margin_of(const struct config_check *c)
{
	if (c->test.max_increase.set)
		return c->test.max_increase.value;
	if (judged_metric(c) == CONFIG_METRIC_SUCCESS_RATE)
		return c->max_decrease.set ? c->max_decrease.value : 0.0;
	return c->max_increase.set ? c->max_increase.value : 0.0;
}

static double ratio_of(const struct config_check *c)
{
	if (c->test.max_ratio.set && c->test.max_ratio.value > 0)
		return c->test.max_ratio.value;
	if (c->max_ratio.set && c->max_ratio.value > 0)
		return c->max_ratio.value;
	return 1.0;
}

/* "about 1234 more requests per cohort" or "an unknown number of..." */
static void more_text(char *buf, size_t cap, double more)
{
	if (isfinite(more) && more > 0)
		snprintf(buf, cap,
		         "about %.0f more requests per cohort are needed at the current rates",
		         more);
	else
		snprintf(buf, cap,
		         "no amount of data decides it at the current rates (the estimate sits on "
		         "the margin)");
}

/*
 * Absolute/other bounds on the interval's values, except those the test
 * replaces.  The violated bound is recorded in *w (a copy of v), not in v.
 */
static bool other_bound_violated(const struct config_check *c, const struct check_verdict *v,
                                 unsigned skip, struct check_verdict *w)
{
	*w = *v;
	if (isnan(v->canary))
		return false;
	return violated_except(c, w, skip);
}

/* The share of a test's error spent by its parts (docs/judge.md). */
#define ANYTIME_SHARE  0.1 /* the anytime part, with a known horizon */
#define ABSOLUTE_SHARE 0.1 /* the absolute bound's own test */

/* The absolute bound a sequential check also tests: `max` on error_rate, `min`
 * on success_rate (as an error rate: 1 - min); NAN when none. */
static double absolute_error_bound(const struct config_check *c)
{
	if (judged_metric(c) == CONFIG_METRIC_SUCCESS_RATE)
		return c->min.set && c->min.value > 0 && c->min.value < 1 ? 1.0 - c->min.value
		                                                          : NAN;
	if (judged_metric(c) == CONFIG_METRIC_ERROR_RATE)
		return c->max.set && c->max.value > 0 && c->max.value < 1 ? c->max.value : NAN;
	return NAN;
}

/* "look 7 of 30, O'Brien-Fleming spending, 0.0012 of 0.01 spent" or "look 7, anytime-valid" */
static void design_text(char *buf, size_t cap, const struct check_test_result *t)
{
	if (t->group_sequential)
		snprintf(buf, cap, "look %u of %u, %s spending, %.2g of %.2g spent", t->looks,
		         t->horizon,
		         t->spending == JUDGE_SPEND_POCOCK ? "Pocock" : "O'Brien-Fleming",
		         t->alpha_spent, 1.0 - t->confidence);
	else
		snprintf(buf, cap, "look %u, anytime-valid", t->looks);
}

static enum check_outcome sequential(const struct config_check *c,
                                     const struct check_cumulative *cum, struct check_verdict *v)
{
	struct check_test_result *t = &v->test;
	const struct metrics_cohort_snapshot *a = cum->canary, *b = cum->baseline;
	bool success = judged_metric(c) == CONFIG_METRIC_SUCCESS_RATE;
	double d = margin_of(c), sign = success ? -1.0 : 1.0, lo, hi;
	double alpha = 1.0 - c->test.confidence, a_abs = 0, a_any = alpha, a_gs = 0;
	double abs_err = absolute_error_bound(c);
	const char *m = judged_name(c, v->metric), *word = success ? "decrease" : "increase";
	unsigned skip = success ? 1u << CHECK_BOUND_MAX_DECREASE : 1u << CHECK_BOUND_MAX_INCREASE;
	enum judge_decision dec, any_dec;
	bool gs_beyond = false, gs_within = false, abs_beyond = false;
	struct judge_seq s;
	struct judge_gs_look gl;
	struct check_verdict w;
	char more[100], how[100];

	if (!isnan(abs_err)) {
		a_abs = ABSOLUTE_SHARE * alpha;
		a_any -= a_abs;
	}
	if (cum->horizon) {
		a_gs = a_any - ANYTIME_SHARE * alpha;
		a_any = ANYTIME_SHARE * alpha;
	}
	judge_sequential(a->errors, a->requests, b->errors, b->requests, d, 1.0 - a_any, 0, &s);
	any_dec = s.decision;
	t->counting = d == 0; /* "no worse than the baseline": the exact counting test */
	t->log_e = t->log_e_within = NAN;
	if (t->counting) {
		struct judge_count k;

		judge_count(a->errors, a->requests, b->errors, b->requests, 1.0, a_any, 0, &k);
		t->log_e = k.log_e_beyond;
		t->log_e_within = k.log_e_within;
		any_dec = k.decision;
	}
	t->alpha = a_any;
	t->alpha_spent = a_any + a_abs;
	t->horizon = cum->horizon;
	t->spending = (uint32_t)c->test.spending;
	t->z = s.z;
	t->z_bound = t->boundary = NAN;
	t->abs_bound = t->abs_log_e = t->abs_alpha = NAN;
	if (cum->horizon && judge_gs_look((enum judge_spending)c->test.spending, a_gs, t->looks,
	                                  cum->horizon, &gl) == 0) {
		t->group_sequential = true;
		t->analysis = gl.analysis;
		t->alpha_spent += gl.spent;
		if (gl.analysis) {
			t->alpha = gl.alpha; /* the group-sequential part's, at this look */
			t->z_bound = gl.bound;
			t->boundary = sign * (d + gl.bound * s.se);
			gs_beyond = isfinite(s.se) && s.z >= gl.bound;
			gs_within = isfinite(s.se) && -s.z >= gl.bound;
			if (isfinite(s.se) && isfinite(gl.bound)) {
				/* the repeated confidence interval diff +- b se (Jennison and
				 * Turnbull ch. 9) and the anytime sequence both cover: report
				 * their intersection (its error is at most the sum) */
				s.lower = fmax(s.lower, s.diff - gl.bound * s.se);
				s.upper = fmin(s.upper, s.diff + gl.bound * s.se);
			}
		}
	}
	if (!isnan(abs_err)) {
		uint64_t x = a->errors < a->requests ? a->errors : a->requests;

		t->abs_bound = success ? 1.0 - abs_err : abs_err;
		t->abs_alpha = a_abs;
		t->abs_log_e =
		    a->requests ? judge_beta_log_e(x, a->requests, abs_err, JUDGE_COUNT_KAPPA, true)
		                : 0.0;
		abs_beyond = t->abs_log_e >= log(1.0 / a_abs);
	}
	dec = any_dec;
	if (gs_beyond)
		dec = JUDGE_BEYOND;
	else if (gs_within && dec == JUDGE_UNDECIDED)
		dec = JUDGE_WITHIN;
	t->canary_errors = a->errors < a->requests ? a->errors : a->requests;
	t->baseline_errors = b->errors < b->requests ? b->errors : b->requests;
	t->canary_value = success ? 1.0 - s.p_canary : s.p_canary;
	t->baseline_value = success ? 1.0 - s.p_baseline : s.p_baseline;
	/* In the metric's own terms: canary - baseline (success: -(error increase)). */
	t->margin = d;
	t->statistic = s.z;
	t->p_value = s.p_value;
	t->p_within = NAN;
	t->estimate = sign * s.diff;
	lo = success ? -s.upper : s.lower;
	hi = success ? -s.lower : s.upper;
	t->lower = lo;
	t->upper = hi;
	t->cles = t->shift_ms = NAN;
	t->more_per_cohort = dec == JUDGE_UNDECIDED ? s.more_per_cohort : 0.0;
	if (dec == JUDGE_UNDECIDED && t->group_sequential && isfinite(s.z) && fabs(s.z) > 0.01) {
		/* z grows like sqrt(n): what the design's last boundary needs */
		struct judge_gs_look last;

		if (judge_gs_look((enum judge_spending)c->test.spending, a_gs, cum->horizon,
		                  cum->horizon, &last) == 0 &&
		    isfinite(last.bound)) {
			double k = last.bound * last.bound / (s.z * s.z), need;

			need = k > 1 ? ceil((k - 1.0) * (double)(a->requests > b->requests
			                                             ? a->requests
			                                             : b->requests))
			             : 0.0;
			if (need > 0 &&
			    (!isfinite(t->more_per_cohort) || need < t->more_per_cohort))
				t->more_per_cohort = need;
		}
	}
	v->bound = success ? CHECK_BOUND_MAX_DECREASE : CHECK_BOUND_MAX_INCREASE;
	v->bound_value = d;
	v->observed = t->estimate;
	design_text(how, sizeof(how), t);

	if (dec == JUDGE_BEYOND) {
		v->outcome = CHECK_FAIL;
		if (gs_beyond && any_dec != JUDGE_BEYOND)
			snprintf(
			    v->reason, sizeof(v->reason),
			    "%s %s of %.4g on the canary is above %s %.4g with %g%% confidence: "
			    "z = %.3g reached the boundary %.3g (an %s above %.4g fails at this "
			    "look; %s; %.4g vs %.4g over %llu vs %llu requests per cohort since "
			    "the step began)",
			    m, word, s.diff, check_bound_name(v->bound), d,
			    100 * c->test.confidence, s.z, t->z_bound, word, fabs(t->boundary), how,
			    t->canary_value, t->baseline_value,
			    (unsigned long long)t->canary_requests,
			    (unsigned long long)t->baseline_requests);
		else if (t->counting)
			snprintf(
			    v->reason, sizeof(v->reason),
			    "%s on the canary is above the baseline's with %g%% confidence: %llu "
			    "vs %llu errors where equal rates expect a %.3g share on the canary "
			    "(counting-process e-value %.3g >= 1/%.3g; %s; %.4g vs %.4g over %llu "
			    "vs "
			    "%llu requests per cohort since the step began)",
			    m, 100 * c->test.confidence, (unsigned long long)t->canary_errors,
			    (unsigned long long)t->baseline_errors,
			    (double)t->canary_requests /
			        ((double)t->canary_requests + (double)t->baseline_requests),
			    exp(fmin(700.0, t->log_e)), a_any, how, t->canary_value,
			    t->baseline_value, (unsigned long long)t->canary_requests,
			    (unsigned long long)t->baseline_requests);
		else
			snprintf(
			    v->reason, sizeof(v->reason),
			    "%s %s of %.4g on the canary is above %s %.4g with %g%% confidence "
			    "(the %s is at least %.4g; %s; %.4g vs %.4g over %llu vs %llu requests "
			    "per cohort since the step began)",
			    m, word, s.diff, check_bound_name(v->bound), d,
			    100 * c->test.confidence, word, s.lower, how, t->canary_value,
			    t->baseline_value, (unsigned long long)t->canary_requests,
			    (unsigned long long)t->baseline_requests);
		return v->outcome;
	}
	if (abs_beyond) {
		v->outcome = CHECK_FAIL;
		v->bound = success ? CHECK_BOUND_MIN : CHECK_BOUND_MAX;
		v->bound_value = t->abs_bound;
		v->observed = t->canary_value;
		snprintf(
		    v->reason, sizeof(v->reason),
		    "%s on the canary is %s %s %.4g with %g%% confidence on its own counts "
		    "(%llu errors in %llu requests since the step began, %.4g; e-value %.3g >= "
		    "1/%.3g; %s)",
		    m, success ? "below" : "above", success ? "min" : "max", t->abs_bound,
		    100 * c->test.confidence, (unsigned long long)t->canary_errors,
		    (unsigned long long)t->canary_requests, t->canary_value,
		    exp(fmin(700.0, t->abs_log_e)), a_abs, how);
		return v->outcome;
	}
	if (dec == JUDGE_WITHIN && !other_bound_violated(c, v, skip, &w)) {
		v->outcome = CHECK_PASS;
		v->bound = CHECK_BOUND_NONE;
		snprintf(v->reason, sizeof(v->reason),
		         "%s %s on the canary is within %s %.4g with %g%% confidence (%s; %.4g vs "
		         "%.4g over %llu vs %llu requests per cohort since the step began)",
		         m, word, success ? "max_decrease" : "max_increase", d,
		         100 * c->test.confidence, how, t->canary_value, t->baseline_value,
		         (unsigned long long)t->canary_requests,
		         (unsigned long long)t->baseline_requests);
		return v->outcome;
	}
	v->outcome = CHECK_INCONCLUSIVE;
	v->bound = CHECK_BOUND_NONE;
	if (dec == JUDGE_WITHIN) {
		snprintf(v->reason, sizeof(v->reason),
		         "%s is within %.4g of the baseline with %g%% confidence, but %s %.4g is "
		         "violated in this interval (%.4g), so the check cannot pass",
		         m, d, 100 * c->test.confidence, check_bound_name(w.bound), w.bound_value,
		         w.observed);
		return v->outcome;
	}
	more_text(more, sizeof(more), t->more_per_cohort);
	snprintf(v->reason, sizeof(v->reason),
	         "%s %s of %.4g (%.4g vs %.4g over %llu vs %llu requests per cohort) is not yet "
	         "told apart from %.4g at %g%% confidence (%s; z = %.3g); %s",
	         m, word, s.diff, t->canary_value, t->baseline_value,
	         (unsigned long long)t->canary_requests, (unsigned long long)t->baseline_requests,
	         d, 100 * c->test.confidence, how, s.z, more);
	return v->outcome;
}

static enum check_outcome mann_whitney(const struct config_check *c,
                                       const struct check_cumulative *cum, struct check_verdict *v)
{
	struct check_test_result *t = &v->test;
	double r = ratio_of(c), alpha = 1.0 - c->test.confidence, zc, zo, zl, a_tail = alpha;
	const char *m = v->metric;
	bool beyond, within;
	struct judge_mw w;
	struct judge_gs_look gl;
	struct check_verdict x;
	char more[100], how[100];

	if (judge_mann_whitney(&cum->canary->hist, &cum->baseline->hist, r, &w)) {
		v->outcome = CHECK_ERROR;
		snprintf(v->reason, sizeof(v->reason),
		         "out of memory while running the Mann-Whitney test for %s", m);
		return v->outcome;
	}
	t->horizon = cum->horizon;
	t->spending = (uint32_t)c->test.spending;
	t->z_bound = t->boundary = NAN;
	t->abs_bound = t->abs_log_e = t->abs_alpha = NAN;
	if (cum->horizon)
		a_tail = ANYTIME_SHARE * alpha;
	/* the anytime part: alpha / (k (k + 1)) at look k, all of it without a horizon */
	t->alpha = judge_alpha_spent(a_tail, t->looks);
	t->alpha_spent = a_tail * (1.0 - 1.0 / (t->looks + 1.0));
	t->z = w.z_greater;
	zl = w.sd_u > 0 ? (w.n_canary * (double)w.n_baseline - w.u - w.mean_u - 0.5) / w.sd_u : 0.0;
	beyond = w.p_greater < t->alpha;
	within = w.p_less < t->alpha;
	if (cum->horizon && judge_gs_look((enum judge_spending)c->test.spending, alpha - a_tail,
	                                  t->looks, cum->horizon, &gl) == 0) {
		t->group_sequential = true;
		t->analysis = gl.analysis;
		t->alpha_spent += gl.spent;
		if (gl.analysis) {
			t->alpha = gl.alpha;
			t->z_bound = gl.bound;
			beyond = beyond || (w.sd_u > 0 && w.z_greater >= gl.bound);
			within = within || (w.sd_u > 0 && zl >= gl.bound);
		}
	}
	t->canary_value = w.median_canary_us / 1000.0;
	t->baseline_value = w.median_baseline_us / 1000.0;
	t->margin = r;
	t->statistic = w.u;
	t->p_value = w.p_greater;
	t->p_within = w.p_less;
	t->lower = t->upper = NAN;
	t->estimate = w.ratio;
	t->cles = w.cles;
	t->shift_ms = w.shift_us / 1000.0;
	t->more_per_cohort = 0;
	v->bound = CHECK_BOUND_MAX_RATIO;
	v->bound_value = r;
	v->observed = w.ratio;
	design_text(how, sizeof(how), t);

	if (beyond) {
		v->outcome = CHECK_FAIL;
		snprintf(
		    v->reason, sizeof(v->reason),
		    "latency on the canary is slower than %.4gx the baseline (Mann-Whitney "
		    "p=%.3g, z = %.3g, at %g%% confidence; %s): median %.4g vs %.4g ms, shift "
		    "%+.4g ms (ratio %.4g), CLES %.3f, over %llu vs %llu requests per cohort since "
		    "the step began",
		    r, w.p_greater, w.z_greater, 100 * c->test.confidence, how, t->canary_value,
		    t->baseline_value, t->shift_ms, w.ratio, w.cles,
		    (unsigned long long)t->canary_requests,
		    (unsigned long long)t->baseline_requests);
		return v->outcome;
	}
	if (within && !other_bound_violated(c, v, 1u << CHECK_BOUND_MAX_RATIO, &x)) {
		v->outcome = CHECK_PASS;
		v->bound = CHECK_BOUND_NONE;
		snprintf(
		    v->reason, sizeof(v->reason),
		    "latency on the canary is within %.4gx the baseline (Mann-Whitney p=%.3g at "
		    "%g%% confidence; %s): median %.4g vs %.4g ms, shift %+.4g ms, CLES %.3f, "
		    "over %llu vs %llu requests per cohort since the step began",
		    r, w.p_less, 100 * c->test.confidence, how, t->canary_value, t->baseline_value,
		    t->shift_ms, w.cles, (unsigned long long)t->canary_requests,
		    (unsigned long long)t->baseline_requests);
		return v->outcome;
	}
	v->outcome = CHECK_INCONCLUSIVE;
	v->bound = CHECK_BOUND_NONE;
	if (within) {
		snprintf(
		    v->reason, sizeof(v->reason),
		    "latency on the canary is within %.4gx the baseline with %g%% confidence, but "
		    "%s %.4g is violated in this interval (%.4g), so the check cannot pass",
		    r, 100 * c->test.confidence, check_bound_name(x.bound), x.bound_value,
		    x.observed);
		return v->outcome;
	}
	/* z grows like sqrt(n): the factor on n that brings the nearer side to its critical value. */
	zc = t->group_sequential && isfinite(t->z_bound) ? t->z_bound : judge_norm_isf(t->alpha);
	zo =
	    fmax(judge_norm_isf(fmax(w.p_greater, 1e-300)), judge_norm_isf(fmax(w.p_less, 1e-300)));
	t->more_per_cohort =
	    zo > 0.01 ? ceil((zc * zc / (zo * zo) - 1.0) *
	                     (double)(w.n_canary > w.n_baseline ? w.n_canary : w.n_baseline))
	              : INFINITY;
	if (t->more_per_cohort < 0)
		t->more_per_cohort = 0;
	more_text(more, sizeof(more), t->more_per_cohort);
	snprintf(
	    v->reason, sizeof(v->reason),
	    "latency on the canary (median %.4g vs %.4g ms, shift %+.4g ms, CLES %.3f, %llu vs "
	    "%llu requests per cohort) is not yet told apart from %.4gx the baseline "
	    "(Mann-Whitney p=%.3g slower, %.3g faster; %.70s); %.80s",
	    t->canary_value, t->baseline_value, t->shift_ms, w.cles,
	    (unsigned long long)t->canary_requests, (unsigned long long)t->baseline_requests, r,
	    w.p_greater, w.p_less, how, more);
	return v->outcome;
}

static enum check_outcome test_evaluate(const struct config_check *c,
                                        const struct metrics_cohort_snapshot *canary,
                                        const struct metrics_cohort_snapshot *baseline,
                                        const struct check_cumulative *cum, uint64_t interval_ms,
                                        struct check_verdict *v)
{
	struct check_cumulative own = {canary, baseline, 1, 1}; /* one look of one */
	struct check_test_result *t = &v->test;
	static const struct metrics_cohort_snapshot empty;

	if (!cum || !cum->canary || !cum->baseline)
		cum = &own;
	if (!own.canary)
		own.canary = &empty;
	if (!own.baseline)
		own.baseline = &empty;
	t->method = c->test.method;
	t->confidence = c->test.confidence;
	t->looks = cum->looks ? cum->looks : 1;
	t->canary_requests = cum->canary->requests;
	t->baseline_requests = cum->baseline->requests;
	t->canary_value = t->baseline_value = t->margin = t->statistic = NAN;
	t->p_value = t->p_within = t->lower = t->upper = t->estimate = NAN;
	t->cles = t->shift_ms = t->alpha = NAN;
	t->alpha_spent = t->z = t->z_bound = t->boundary = NAN;
	t->abs_bound = t->abs_log_e = t->abs_alpha = NAN;
	t->log_e = t->log_e_within = NAN;
	t->horizon = cum->horizon;
	t->spending = (uint32_t)c->test.spending;
	t->more_per_cohort = INFINITY;
	v->canary = check_metric_value(judged_metric(c), canary, interval_ms);
	v->baseline = check_metric_value(judged_metric(c), baseline, interval_ms);

	if (t->canary_requests < c->min_samples || t->baseline_requests < c->min_samples) {
		uint64_t have = t->canary_requests < t->baseline_requests ? t->canary_requests
		                                                          : t->baseline_requests;

		v->outcome = CHECK_INCONCLUSIVE;
		t->more_per_cohort = (double)(c->min_samples - have);
		snprintf(
		    v->reason, sizeof(v->reason),
		    "too few requests for the %s test on %s: %llu on the canary and %llu on the "
		    "baseline since the step began, min_samples is %u (%llu more per cohort "
		    "needed)",
		    c->test.method == CONFIG_TEST_SEQUENTIAL ? "sequential" : "mann-whitney",
		    judged_name(c, v->metric), (unsigned long long)t->canary_requests,
		    (unsigned long long)t->baseline_requests, c->min_samples,
		    (unsigned long long)(c->min_samples - have));
		return v->outcome;
	}
	t->applied = true;
	if (c->test.method == CONFIG_TEST_SEQUENTIAL)
		return sequential(c, cum, v);
	return mann_whitney(c, cum, v);
}

static json_t *check_verdict_json_base(const struct check_verdict *v);

static json_t *num(double d)
{
	return isnan(d) || isinf(d) ? json_null() : json_real(d);
}

static json_t *test_json(const struct check_verdict *v)
{
	const struct check_test_result *t = &v->test;
	bool seq = t->method == CONFIG_TEST_SEQUENTIAL;

	if (t->method == CONFIG_TEST_NONE)
		return json_null();
	return json_pack(
	    "{s:s, s:b, s:o, s:o, s:I, s:{s:I, s:o, s:o}, s:{s:I, s:o, s:o}, s:o, s:o, s:o, s:o, "
	    "s:o, s:o, s:o, s:o, s:o, s:o}",
	    "method", seq ? "sequential" : "mann-whitney", "applied", (int)t->applied, "confidence",
	    num(t->confidence), "alpha", num(t->alpha), "looks", (json_int_t)t->looks, "canary",
	    "requests", (json_int_t)t->canary_requests, "errors",
	    seq ? json_integer((json_int_t)t->canary_errors) : json_null(), "value",
	    num(t->canary_value), "baseline", "requests", (json_int_t)t->baseline_requests,
	    "errors", seq ? json_integer((json_int_t)t->baseline_errors) : json_null(), "value",
	    num(t->baseline_value), "margin", num(t->margin), "statistic", num(t->statistic),
	    "p_value", num(t->p_value), "p_within", num(t->p_within), "lower", num(t->lower),
	    "upper", num(t->upper), "estimate", num(t->estimate), "cles", num(t->cles), "shift_ms",
	    num(t->shift_ms), "more_per_cohort", num(t->more_per_cohort));
}

/* The test object's design and absolute-bound fields (issue 18). */
static void test_json_design(json_t *o, const struct check_test_result *t)
{
	if (!json_is_object(o))
		return;
	json_object_set_new(o, "design",
	                    json_string(t->group_sequential ? "group-sequential"
	                                : t->method == CONFIG_TEST_SEQUENTIAL
	                                    ? "confidence-sequence"
	                                    : "alpha-spending"));
	json_object_set_new(o, "spending",
	                    t->group_sequential
	                        ? json_string(judge_spending_name((enum judge_spending)t->spending))
	                        : json_null());
	json_object_set_new(o, "horizon",
	                    t->horizon ? json_integer((json_int_t)t->horizon) : json_null());
	json_object_set_new(o, "analysis", json_boolean(t->analysis));
	json_object_set_new(o, "alpha_spent", num(t->alpha_spent));
	json_object_set_new(o, "z", num(t->z));
	json_object_set_new(o, "z_bound", num(t->z_bound));
	json_object_set_new(o, "boundary", num(t->boundary));
	json_object_set_new(o, "anytime",
	                    json_string(t->method == CONFIG_TEST_MANN_WHITNEY ? "alpha-spending"
	                                : t->counting                         ? "counting-process"
	                                                                      : "mixture"));
	json_object_set_new(o, "log_e", num(t->log_e));
	json_object_set_new(o, "log_e_within", num(t->log_e_within));
	json_object_set_new(o, "absolute",
	                    isnan(t->abs_bound)
	                        ? json_null()
	                        : json_pack("{s:o, s:o, s:o}", "bound", num(t->abs_bound), "alpha",
	                                    num(t->abs_alpha), "log_e", num(t->abs_log_e)));
}

json_t *check_verdict_json(const struct check_verdict *v)
{
	json_t *j = check_verdict_json_base(v);

	if (j && v->test.method != CONFIG_TEST_NONE)
		test_json_design(json_object_get(j, "test"), &v->test);
	return j;
}

static json_t *check_verdict_json_base(const struct check_verdict *v)
{
	return json_pack("{s:s, s:s, s:s, s:{s:o, s:I}, s:{s:o, s:I}, s:I, s:I, s:s, s:o, s:o, "
	                 "s:o, s:s}",
	                 "check", v->check ? v->check : "", "metric", v->metric ? v->metric : "",
	                 "outcome", check_outcome_name(v->outcome), "canary", "value",
	                 num(v->canary), "requests", (json_int_t)v->canary_requests, "baseline",
	                 "value", num(v->baseline), "requests", (json_int_t)v->baseline_requests,
	                 "min_samples", (json_int_t)v->min_samples, "interval_ms",
	                 (json_int_t)v->interval_ms, "bound", check_bound_name(v->bound),
	                 "bound_value", num(v->bound_value), "observed", num(v->observed), "test",
	                 test_json(v), "reason", v->reason);
}

void check_evidence_shortfall(const struct config_check *c, const struct check_verdict *v,
                              bool brief, char *out, size_t len)
{
	bool baseline = c->test.method != CONFIG_TEST_NONE || check_has_relative_bounds(c);
	bool counted = c->source == CONFIG_SOURCE_METRIC || config_check_counts(c);

	if (!out || len == 0)
		return;
	if (!v) {
		snprintf(out, len,
		         brief ? "%s no data yet" : "check %s has no data from this step yet",
		         c->name);
		return;
	}
	switch (v->outcome) {
	case CHECK_INCONCLUSIVE:
		if (counted && v->canary_requests < c->min_samples) {
			snprintf(out, len,
			         brief ? "%s %llu/%u canary requests"
			               : "check %s has %llu of %u requests on the canary",
			         c->name, (unsigned long long)v->canary_requests, c->min_samples);
		} else if (counted && baseline && v->baseline_requests < c->min_samples) {
			snprintf(out, len,
			         brief ? "%s %llu/%u baseline requests"
			               : "check %s has %llu of %u requests on the baseline",
			         c->name, (unsigned long long)v->baseline_requests, c->min_samples);
		} else if (brief) {
			snprintf(out, len, "%s inconclusive on %llu/%llu requests", c->name,
			         (unsigned long long)v->canary_requests,
			         (unsigned long long)v->baseline_requests);
		} else {
			snprintf(out, len, "check %s is inconclusive: %s", c->name, v->reason);
		}
		return;
	case CHECK_PASS: /* passing now, but a failing interval since reset the evidence */
		snprintf(out, len,
		         brief ? "%s failed since its last pass"
		               : "check %s failed an interval after it passed; it must pass again",
		         c->name);
		return;
	case CHECK_FAIL:
		snprintf(out, len, brief ? "%s failing" : "check %s fails: %s", c->name, v->reason);
		return;
	case CHECK_ERROR:
		snprintf(out, len, brief ? "%s error" : "check %s gives errors: %s", c->name,
		         v->reason);
		return;
	}
	snprintf(out, len, "%s", c->name);
}
