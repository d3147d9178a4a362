/*
 * check.c - threshold checks for one interval (see check.h, docs/rollout.md).
 */
#include "analysis/check.h"

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
		return metrics_latency_quantile_us(s, 0.99) / 1000.0;
	case CONFIG_METRIC_LATENCY_MEAN:
		return metrics_latency_mean_us(s) / 1000.0;
	default:
		return NAN;
	}
}

static bool relative_bounds(const struct config_check *c)
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

static const char *test_name(enum config_test_method m)
{
	return m == CONFIG_TEST_SEQUENTIAL ? "sequential" : "mann-whitney";
}

/* Appends the "test not applied" clause when the check has a test. */
static void finish_reason(const struct config_check *c, struct check_verdict *v, size_t len)
{
	if (c->test.method == CONFIG_TEST_NONE || len >= sizeof(v->reason))
		return;
	v->test_not_applied = true;
	snprintf(v->reason + len, sizeof(v->reason) - len,
	         " (the %s test is not applied yet: bounds only)", test_name(c->test.method));
}

static bool violated(const struct config_check *c, struct check_verdict *v)
{
	double ratio, diff = v->canary - v->baseline;

	if (v->baseline == 0)
		ratio = v->canary == 0 ? 1.0 : INFINITY;
	else
		ratio = v->canary / v->baseline;

#define TRY(field, kind, val, bad)                       \
	do {                                             \
		if (c->field.set && (bad)) {             \
			v->bound = (kind);               \
			v->bound_value = c->field.value; \
			v->observed = (val);             \
			return true;                     \
		}                                        \
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

enum check_outcome check_evaluate(const struct config_check *c,
                                  const struct metrics_cohort_snapshot *canary,
                                  const struct metrics_cohort_snapshot *baseline,
                                  uint64_t interval_ms, struct check_verdict *out)
{
	struct check_verdict *v = out;
	const char *m;
	int n = 0;
	bool need_baseline;

	memset(v, 0, sizeof(*v));
	v->check = c->name;
	v->metric = m = source_name(c);
	v->canary = v->baseline = v->bound_value = v->observed = NAN;
	v->min_samples = c->min_samples;
	v->interval_ms = interval_ms;
	v->canary_requests = canary ? canary->requests : 0;
	v->baseline_requests = baseline ? baseline->requests : 0;

	if (c->source != CONFIG_SOURCE_METRIC || c->metric >= CONFIG_METRIC_SHADOW_MISMATCH_RATE) {
		v->outcome = CHECK_ERROR;
		snprintf(v->reason, sizeof(v->reason),
		         "%s checks are not wired yet, so check %s cannot be evaluated", m,
		         c->name);
		return v->outcome;
	}
	need_baseline = relative_bounds(c);
	if (v->canary_requests < c->min_samples ||
	    (need_baseline && v->baseline_requests < c->min_samples)) {
		v->outcome = CHECK_INCONCLUSIVE;
		n = snprintf(v->reason, sizeof(v->reason),
		             "too few requests for %s: %llu on the canary and %llu on the "
		             "baseline, min_samples is %u",
		             m, (unsigned long long)v->canary_requests,
		             (unsigned long long)v->baseline_requests, c->min_samples);
		finish_reason(c, v, n > 0 ? (size_t)n : 0);
		return v->outcome;
	}
	v->canary = check_metric_value(c->metric, canary, interval_ms);
	v->baseline = check_metric_value(c->metric, baseline, interval_ms);
	if (isnan(v->canary) || (need_baseline && isnan(v->baseline))) {
		v->outcome = CHECK_ERROR;
		n = snprintf(v->reason, sizeof(v->reason), "%s could not be computed", m);
		finish_reason(c, v, n > 0 ? (size_t)n : 0);
		return v->outcome;
	}

	if (!violated(c, v)) {
		v->outcome = CHECK_PASS;
		n = snprintf(v->reason, sizeof(v->reason),
		             "%s %.4g on the canary is within bounds (baseline %.4g; %llu vs %llu "
		             "requests)",
		             m, v->canary, v->baseline, (unsigned long long)v->canary_requests,
		             (unsigned long long)v->baseline_requests);
		finish_reason(c, v, n > 0 ? (size_t)n : 0);
		return v->outcome;
	}

	v->outcome = CHECK_FAIL;
	switch (v->bound) {
	case CHECK_BOUND_MIN:
	case CHECK_BOUND_MAX:
		n = snprintf(v->reason, sizeof(v->reason),
		             "%s %.4g on the canary is %s %s %.4g (baseline %.4g; %llu vs %llu "
		             "requests)",
		             m, v->canary, v->bound == CHECK_BOUND_MIN ? "below" : "above",
		             check_bound_name(v->bound), v->bound_value, v->baseline,
		             (unsigned long long)v->canary_requests,
		             (unsigned long long)v->baseline_requests);
		break;
	case CHECK_BOUND_MIN_RATIO:
	case CHECK_BOUND_MAX_RATIO:
		n = snprintf(v->reason, sizeof(v->reason),
		             "%s canary/baseline ratio %.4g is %s %s %.4g (canary %.4g, baseline "
		             "%.4g; %llu vs %llu requests)",
		             m, v->observed, v->bound == CHECK_BOUND_MIN_RATIO ? "below" : "above",
		             check_bound_name(v->bound), v->bound_value, v->canary, v->baseline,
		             (unsigned long long)v->canary_requests,
		             (unsigned long long)v->baseline_requests);
		break;
	default:
		n = snprintf(v->reason, sizeof(v->reason),
		             "%s %s of %.4g from the baseline is above %s %.4g (canary %.4g, "
		             "baseline %.4g; %llu vs %llu requests)",
		             m, v->bound == CHECK_BOUND_MAX_INCREASE ? "increase" : "decrease",
		             v->bound == CHECK_BOUND_MAX_INCREASE ? v->observed : -v->observed,
		             check_bound_name(v->bound), v->bound_value, v->canary, v->baseline,
		             (unsigned long long)v->canary_requests,
		             (unsigned long long)v->baseline_requests);
		break;
	}
	finish_reason(c, v, n > 0 ? (size_t)n : 0);
	return v->outcome;
}

static json_t *num(double d)
{
	return isnan(d) || isinf(d) ? json_null() : json_real(d);
}

json_t *check_verdict_json(const struct check_verdict *v)
{
	return json_pack("{s:s, s:s, s:s, s:{s:o, s:I}, s:{s:o, s:I}, s:I, s:I, s:s, s:o, s:o, "
	                 "s:b, s:s}",
	                 "check", v->check ? v->check : "", "metric", v->metric ? v->metric : "",
	                 "outcome", check_outcome_name(v->outcome), "canary", "value",
	                 num(v->canary), "requests", (json_int_t)v->canary_requests, "baseline",
	                 "value", num(v->baseline), "requests", (json_int_t)v->baseline_requests,
	                 "min_samples", (json_int_t)v->min_samples, "interval_ms",
	                 (json_int_t)v->interval_ms, "bound", check_bound_name(v->bound),
	                 "bound_value", num(v->bound_value), "observed", num(v->observed),
	                 "test_not_applied", (int)v->test_not_applied, "reason", v->reason);
}
