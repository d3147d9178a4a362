/*
 * check.h - threshold checks (SPEC 5 without the statistical tests): one
 * check, one interval, one verdict.
 *
 * Inputs are two per-interval deltas (struct metrics_cohort_snapshot, see
 * metrics_snapshot_delta()): the canary cohort of the canary version and
 * the baseline cohort of the stable version, plus the interval length.
 * Latency metrics are in milliseconds (the unit the config's bounds are
 * written in); rates are fractions 0..1; request_rate is requests/second.
 *
 * Bounds are tried in a fixed order (min, max, min_ratio, max_ratio,
 * max_increase, max_decrease); the first violated one fails the check.
 * Fewer than min_samples requests in either cohort is `inconclusive`, never
 * `pass`.  A check with a `test:` is judged on its bounds alone and its
 * reason says that the statistical test is not applied yet.  Sources other
 * than the built-in metrics (query, http, exec) and the shadow metrics give
 * `error` with a reason saying they are not wired yet.
 *
 * Pure functions on caller-owned values; any thread.
 */
#ifndef ANALYSIS_CHECK_H
#define ANALYSIS_CHECK_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "config/config.h"
#include "metrics/stats.h"

enum check_outcome {
	CHECK_PASS,
	CHECK_FAIL,
	CHECK_INCONCLUSIVE,
	CHECK_ERROR,
};

enum check_bound {
	CHECK_BOUND_NONE,
	CHECK_BOUND_MIN,
	CHECK_BOUND_MAX,
	CHECK_BOUND_MIN_RATIO,
	CHECK_BOUND_MAX_RATIO,
	CHECK_BOUND_MAX_INCREASE,
	CHECK_BOUND_MAX_DECREASE,
};

#define CHECK_REASON_MAX 320

/* One verdict with every input that produced it.  A plain value. */
struct check_verdict {
	enum check_outcome outcome;
	const char *check;  /* the check's name; borrowed from the config */
	const char *metric; /* the metric's name ("error_rate"), or the source kind */
	double canary;      /* canary value; NAN when it has no requests */
	double baseline;    /* baseline value; NAN when it has no requests */
	uint64_t canary_requests, baseline_requests;
	uint32_t min_samples;
	uint64_t interval_ms;
	enum check_bound bound;        /* the violated bound (fail), else NONE */
	double bound_value;            /* its configured value */
	double observed;               /* what was compared: value, ratio or difference */
	bool test_not_applied;         /* the check has a `test:` that was not run */
	char reason[CHECK_REASON_MAX]; /* one sentence */
};

/* "pass", "fail", "inconclusive", "error".  Static strings. */
const char *check_outcome_name(enum check_outcome o);

/* "none", "min", "max", "min_ratio", "max_ratio", "max_increase", "max_decrease". */
const char *check_bound_name(enum check_bound b);

/*
 * The value of built-in metric m for one interval delta s of interval_ms:
 * error/success rate (fraction), request_rate (per second), latency in ms.
 * NAN when s has no requests or m is not a proxy metric (shadow_*).
 */
double check_metric_value(enum config_metric m, const struct metrics_cohort_snapshot *s,
                          uint64_t interval_ms);

/*
 * Evaluates check c for one interval: canary and baseline are the two
 * cohorts' deltas over interval_ms.  Fills *out completely (out->check
 * points into c, which must outlive the verdict) and returns out->outcome.
 * Never fails: bad inputs give CHECK_ERROR with a reason.
 */
enum check_outcome check_evaluate(const struct config_check *c,
                                  const struct metrics_cohort_snapshot *canary,
                                  const struct metrics_cohort_snapshot *baseline,
                                  uint64_t interval_ms, struct check_verdict *out);

/*
 * The verdict as a new JSON object (caller owns it) with all its inputs:
 * {"check","metric","outcome","canary":{"value","requests"},
 *  "baseline":{"value","requests"},"min_samples","interval_ms","bound",
 *  "bound_value","observed","test_not_applied","reason"}.  NAN values are null.
 * NULL only when out of memory.
 */
json_t *check_verdict_json(const struct check_verdict *v);

#endif
