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
 * `pass`.
 *
 * A check with a `test:` is judged by its statistical test (analysis/judge.h,
 * docs/judge.md) on CUMULATIVE cohorts (struct check_cumulative):
 *  - sequential (error_rate, success_rate): a confidence sequence for the
 *    canary's error rate minus the baseline's; the margin d is
 *    test.max_increase, else the check's max_increase (error_rate) or
 *    max_decrease (success_rate), else 0.  Fail when the lower bound of the
 *    increase is above d, pass when its upper bound is below d.
 *  - mann-whitney (latency_*): Mann-Whitney U of the canary's whole latency
 *    histogram against the baseline's scaled by r = test.max_ratio, else the
 *    check's max_ratio, else 1; the error spent at look k is
 *    alpha / (k (k + 1)).  Fail when the canary is significantly slower than
 *    r x baseline, pass when it is significantly faster than r x baseline.
 *  - With a known horizon (cum->horizon looks), both tests are
 *    group-sequential: 80-90% of the error is spent over the horizon's
 *    looks by test.spending (Lan-DeMets O'Brien-Fleming or Pocock type),
 *    10% by an anytime part (the confidence sequence; Mann-Whitney:
 *    alpha / (k (k + 1))) that also covers looks past the horizon.
 *  - error_rate with `max` (success_rate with `min`): 10% of the error
 *    tests the canary's own rate against that bound (an anytime-valid
 *    Beta-mixture e-value on its counts); significant beyond it fails.
 *  - min_samples applies to the cumulative counts; below it: inconclusive.
 *  - The relative bounds the test replaces are not checked per interval; the
 *    others (min, max, and the other ratio/difference bounds) are checked on
 *    the interval's values and, when violated, turn a pass into
 *    inconclusive (a check fails only on a significant result).
 *  - Otherwise: inconclusive, with how many more requests per cohort a
 *    decision needs at the current rates.
 *
 * Checks with query/http/exec sources are judged by analysis/source.h on
 * the values their jobs return; here they give `error` -- except count
 * checks (config_check_counts(): a source with a test), whose error and
 * request counts source_evaluate_counts() passes here as cohorts (requests
 * and errors only) to be judged as error_rate.  The shadow_*
 * metrics are judged on cohorts the engine builds from the mirror's
 * comparisons (shadow as canary, primary as baseline).
 *
 * Pure functions on caller-owned values; any thread.
 */
#ifndef ANALYSIS_CHECK_H
#define ANALYSIS_CHECK_H

#include <stdbool.h>
#include <stddef.h>
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

#define CHECK_REASON_MAX 400

/* What a check's statistical test computed (all zero / NAN when none ran). */
struct check_test_result {
	bool applied; /* the test ran (enough cumulative samples) */
	enum config_test_method method;
	double confidence;
	double alpha;   /* error spent at this look (mann-whitney: spent) */
	uint32_t looks; /* looks since the cumulative counts began (>= 1) */
	uint64_t canary_requests, baseline_requests; /* cumulative */
	uint64_t canary_errors, baseline_errors;     /* cumulative (sequential) */
	double canary_value, baseline_value; /* cumulative: the metric's rate, or median ms */
	double margin;          /* sequential: d, in the metric's terms; mann-whitney: r */
	double statistic;       /* sequential: z = (increase - d) / se; mann-whitney: U */
	double p_value;         /* sequential: always-valid p at this look; mann-whitney: one-sided
	                     p that the canary is slower than r x baseline */
	double p_within;        /* mann-whitney: one-sided p that it is faster than r x baseline */
	double lower, upper;    /* sequential: confidence sequence of canary - baseline in the
	                        metric's terms; NAN for mann-whitney */
	double estimate;        /* sequential: canary - baseline; mann-whitney: shift ratio */
	double cles;            /* mann-whitney: P(canary > baseline) + ties / 2 */
	double shift_ms;        /* mann-whitney: Hodges-Lehmann shift, ms */
	double more_per_cohort; /* inconclusive: extra requests per cohort needed; INFINITY
	                           when it cannot be told; 0 when decided */
	/* How the error was spent (docs/judge.md, "Known and open horizons"). */
	bool group_sequential; /* the step's horizon is known: a group-sequential test */
	uint32_t spending;     /* enum judge_spending (group-sequential) */
	uint32_t horizon;      /* looks in the step's horizon; 0 = open */
	bool analysis;         /* group-sequential: this look is one of its analyses */
	double alpha_spent;    /* error spent so far over the looks, every part counted */
	double z;              /* the standardised statistic ((increase - d) / se; MW: z slower) */
	double z_bound;        /* group-sequential: the boundary z must reach at this look */
	double boundary;       /* sequential, group-sequential: the increase that fails at
	                           this look (d + z_bound se), in the metric's terms */
	/* The absolute bound (`max` on error_rate, `min` on success_rate) tested on the
	 * canary alone with part of the error; NAN when the check has none. */
	double abs_bound; /* the bound, in the metric's terms */
	double abs_log_e; /* log e-value against "the canary is within it" */
	double abs_alpha; /* the error it may spend */
	/* The anytime part with margin 0: the counting-process test (judge_count()). */
	bool counting;
	double log_e, log_e_within; /* its log e-values (beyond / within); NAN without */
};

/* The cumulative cohorts a test judges: since the rollout's run began. */
struct check_cumulative {
	const struct metrics_cohort_snapshot *canary, *baseline;
	uint32_t looks; /* intervals evaluated on them so far, this one included (>= 1) */
	/* the looks the step can take (its max_wait or `for` over the interval): a
	 * group-sequential test spends its error over them; 0 = open (a confidence
	 * sequence, any number of looks) */
	uint32_t horizon;
};

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
	struct check_test_result test; /* the check's `test:`, if any */
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

/* True when c has a bound relative to the baseline (min_ratio, max_ratio,
 * max_increase or max_decrease). */
bool check_has_relative_bounds(const struct config_check *c);

/*
 * Judges the values v->canary and v->baseline against c's bounds in the
 * order above; the relative ones only when v->baseline is not NAN (a ratio
 * over a zero baseline is 1 when the canary is 0 too, else infinite).  On
 * the first violated bound sets v->bound, v->bound_value and v->observed
 * (the value, ratio or difference compared) and returns true; false when
 * none is violated.  Shared by check_evaluate() and source_evaluate().
 */
bool check_bounds_violated(const struct config_check *c, struct check_verdict *v);

/*
 * Evaluates check c for one interval: canary and baseline are the two
 * cohorts' deltas over interval_ms.  Fills *out completely (out->check
 * points into c, which must outlive the verdict) and returns out->outcome.
 * Never fails: bad inputs give CHECK_ERROR with a reason.  A check with a
 * `test:` treats the interval as its whole sample (one look): use
 * check_evaluate_cumulative() when the check runs every interval.
 */
enum check_outcome check_evaluate(const struct config_check *c,
                                  const struct metrics_cohort_snapshot *canary,
                                  const struct metrics_cohort_snapshot *baseline,
                                  uint64_t interval_ms, struct check_verdict *out);

/*
 * The same, with cum the cohorts accumulated since the test's counts began
 * (NULL: the interval's deltas, one look).  Checks without a test ignore
 * cum.  cum's snapshots must cover at least the interval.
 */
enum check_outcome check_evaluate_cumulative(const struct config_check *c,
                                             const struct metrics_cohort_snapshot *canary,
                                             const struct metrics_cohort_snapshot *baseline,
                                             const struct check_cumulative *cum,
                                             uint64_t interval_ms, struct check_verdict *out);

/*
 * Why check c has no evidence yet, for a pause reason and the live view
 * (docs/rollout.md, Evidence).  v is the check's last judgement on the
 * step's accumulated data, or NULL when there is none yet.  brief: "errors
 * 37/200 canary requests"; else "check errors has 37 of 200 requests on
 * the canary".  Always NUL-terminates out (when len > 0).
 */
void check_evidence_shortfall(const struct config_check *c, const struct check_verdict *v,
                              bool brief, char *out, size_t len);

/*
 * The verdict as a new JSON object (caller owns it) with all its inputs:
 * {"check","metric","outcome","canary":{"value","requests"},
 *  "baseline":{"value","requests"},"min_samples","interval_ms","bound",
 *  "bound_value","observed","test","reason"}.  "test" is
 * null without a test, else {"method","applied","confidence","alpha","looks",
 * "canary":{"requests","errors","value"},"baseline":{...},"margin",
 * "statistic","p_value","p_within","lower","upper","estimate","cles",
 * "shift_ms","more_per_cohort","design","spending","horizon","analysis",
 * "alpha_spent","z","z_bound","boundary","absolute"}.  NAN and infinite
 * values are null.
 * NULL only when out of memory.
 */
json_t *check_verdict_json(const struct check_verdict *v);

#endif
