/*
 * judge.h - the statistics behind a check's `test:` (SPEC 5, docs/judge.md).
 *
 * The tests, pure functions on caller-owned numbers (the group-sequential
 * designs are memoised, see judge_gs_look()):
 *
 *  - judge_sequential(): a confidence sequence for the difference of two
 *    proportions (canary rate - baseline rate) on raw counts, valid under
 *    continuous monitoring: the normal-mixture boundary (Robbins 1970) in
 *    the form of Johari, Pekelis and Walsh's mSPRT for two proportions, with
 *    a plug-in variance from Agresti-Caffo smoothed rates (an asymptotic
 *    confidence sequence in the sense of Waudby-Smith et al. 2024).  Call it
 *    every interval on the CUMULATIVE counts since the sequence began; the
 *    probability that the bounds ever exclude the true difference is about
 *    1 - confidence, however often it is looked at.
 *
 *  - judge_mann_whitney(): the Mann-Whitney U test on two latency
 *    histograms (bucket midpoints, average ranks for ties, tie-corrected
 *    variance, normal approximation with continuity correction; scipy's
 *    `mannwhitneyu(..., method="asymptotic")`), against the baseline scaled
 *    by a tolerated ratio, plus effect sizes of the unscaled comparison:
 *    CLES and the Hodges-Lehmann shift.
 *
 *  - judge_gs_bounds() / judge_gs_look(): Lan-DeMets alpha-spending
 *    boundaries (O'Brien-Fleming and Pocock types) for a step whose number
 *    of looks is known: more power than the confidence sequence there.
 *
 *  - judge_count(): Lindon and Malek's anytime-valid test for two counting
 *    processes, on the error and request counts alone.
 *
 * None produces NaN: empty inputs give the trivial answer (bounds [-1, 1],
 * p-values 1, effect sizes 0 or 0.5) with the counts saying why.
 * Any thread; no global state.
 */
#ifndef ANALYSIS_JUDGE_H
#define ANALYSIS_JUDGE_H

#include <stdbool.h>
#include <stdint.h>

#include "metrics/hist.h"

/* One side's decision of a test. */
enum judge_decision {
	JUDGE_UNDECIDED = 0,
	JUDGE_WITHIN = -1, /* confidently within the margin: may pass */
	JUDGE_BEYOND = 1,  /* confidently beyond the margin: fails */
};

struct judge_seq {
	double p_canary, p_baseline; /* observed rates; 0 for an empty cohort */
	double diff;                 /* p_canary - p_baseline */
	double se;                   /* plug-in standard error of diff (smoothed rates) */
	double lower, upper;         /* the confidence sequence at this look, within [-1, 1] */
	double margin;               /* the tolerated increase d */
	double z;                    /* (diff - margin) / se */
	double
	    log_lr; /* log mixture likelihood ratio against diff = margin (>= 0 side: evidence) */
	double p_value;               /* always-valid p-value at this look, min(1, 1 / LR) */
	double tau;                   /* mixing standard deviation used */
	double more_per_cohort;       /* undecided: extra requests per cohort needed at the current
	                           rates for a decision; 0 when decided; INFINITY when the
	                           estimate sits on the margin */
	enum judge_decision decision; /* BEYOND: lower > margin; WITHIN: upper < margin */
};

/*
 * The mixing standard deviation judge_sequential() uses for a margin and
 * an error alpha: the one that makes the sequence narrowest when the
 * estimate is one effect e = max(|margin|, 0.01) away from the margin
 * (a canary that doubles the tolerated increase fails soonest, one with
 * no increase passes soonest):  tau = e sqrt(x / (1 + x)), x the root of
 * x = 2 log(1/alpha) + log(1 + x) (the half-width is minimal at
 * v = tau^2 / x).  It must not depend on the data (validity).  alpha
 * outside (0, 1) is taken as 0.05.
 */
double judge_seq_tau(double margin, double alpha);

/*
 * The confidence sequence for p_c - p_b at one look: ec errors of nc canary
 * requests, eb of nb baseline requests (errors are capped at requests),
 * margin d (the tolerated increase; any finite number), confidence in (0, 1)
 * (out of range is clamped to [0.5, 0.999999]), tau > 0 the mixing standard
 * deviation (<= 0 or NaN: judge_seq_tau(margin, 1 - confidence)).
 * decision: BEYOND when lower > d, WITHIN when upper < d, else UNDECIDED.
 * An empty cohort gives bounds [-1, 1] and UNDECIDED.  Counts up to
 * UINT64_MAX are fine (computed in double).  Fills *out completely.
 */
void judge_sequential(uint64_t ec, uint64_t nc, uint64_t eb, uint64_t nb, double margin,
                      double confidence, double tau, struct judge_seq *out);

/*
 * The half-width of the normal-mixture confidence sequence for an estimate
 * of variance v > 0, mixing standard deviation tau > 0, error alpha in
 * (0, 1):  sqrt(v (v + tau^2) / tau^2 * (2 log(1/alpha) + log((v + tau^2) / v))).
 * Exposed for the tests and the benchmark.
 */
double judge_seq_half_width(double v, double tau, double alpha);

struct judge_mw {
	uint64_t n_canary, n_baseline;
	double scale;        /* the baseline's values were multiplied by this */
	double u;            /* U of the canary against the scaled baseline */
	double mean_u, sd_u; /* its null mean and tie-corrected standard deviation */
	double z_greater;    /* (u - mean - 0.5) / sd; 0 when sd is 0 */
	double p_greater;    /* one-sided: canary larger than scale * baseline */
	double p_less;       /* one-sided: canary smaller than scale * baseline */
	double cles;         /* unscaled: P(canary > baseline) + P(equal) / 2 */
	double shift_us;     /* unscaled Hodges-Lehmann shift: weighted median of
	                           canary - baseline over bucket midpoints */
	double median_canary_us, median_baseline_us; /* bucket midpoints */
	double ratio; /* (median_baseline + shift) / median_baseline; 1 if 0 */
};

/* Bucket i's midpoint in microseconds, (lower + upper) / 2.  i < HIST_BUCKETS. */
double judge_bucket_mid(unsigned i);

/*
 * Mann-Whitney U of canary against baseline with every baseline value
 * multiplied by scale (> 0; 1 is the plain test; NaN or <= 0 is taken as 1).
 * Values are the bucket midpoints (judge_bucket_mid).  Returns 0, or
 * -ENOMEM (the Hodges-Lehmann pairs are allocated: at most one per pair of
 * non-empty buckets).  Either histogram may be empty: p-values 1, cles 0.5,
 * shift 0.  Fills *out completely on 0.
 */
int judge_mann_whitney(const struct hist *canary, const struct hist *baseline, double scale,
                       struct judge_mw *out);

/*
 * The error a test may spend at its k-th look (k >= 1) so that the sum over
 * every look stays <= alpha: alpha / (k (k + 1)).  Mann-Whitney is a
 * fixed-sample test; the engine re-runs it every interval on growing data,
 * and this spending keeps the chance of any false decision <= alpha
 * (union bound).
 */
double judge_alpha_spent(double alpha, uint32_t k);

/* ------------------------------------------------------------------------ */
/* Group-sequential boundaries (a known number of looks)                     */

/* The shape of a Lan-DeMets alpha-spending function. */
enum judge_spending {
	JUDGE_SPEND_OBRIEN_FLEMING = 0, /* spends little early, most near the horizon */
	JUDGE_SPEND_POCOCK = 1,         /* spends about evenly over the looks */
};

/* "obrien-fleming" / "pocock".  Static strings. */
const char *judge_spending_name(enum judge_spending f);

/*
 * The one-sided error spent by information fraction t (clamped to [0, 1])
 * of a test of level alpha in (0, 1) (Lan and DeMets 1983):
 *   O'Brien-Fleming type  2 - 2 Phi(z_{alpha/2} / sqrt(t))
 *   Pocock type           alpha log(1 + (e - 1) t)
 * Both are 0 at t = 0 and alpha at t = 1.
 */
double judge_spend(enum judge_spending f, double alpha, double t);

/*
 * The one-sided boundaries of a group-sequential test of level alpha with
 * n analyses at increasing information fractions t[0..n-1] in (0, 1]: b[i]
 * such that, for a standardised statistic with the canonical joint
 * distribution (Z_i Z_j correlated sqrt(t_i / t_j)),
 *   P0(Z_1 < b_1, ..., Z_{i-1} < b_{i-1}, Z_i >= b_i) = spend(t_i) - spend(t_{i-1}).
 * The boundary is non-binding: nothing stops below it.  An analysis that
 * spends nothing gets INFINITY.  Recursive numerical integration
 * (Armitage, McPherson and Rowe 1969; Jennison and Turnbull 2000, ch. 19):
 * Simpson's rule on the score scale, a few 1e-5 of absolute error in b.
 * n <= JUDGE_GS_MAX_ANALYSES.  Returns 0, -EINVAL or -ENOMEM.
 */
#define JUDGE_GS_MAX_ANALYSES 256
int judge_gs_bounds(enum judge_spending f, double alpha, const double *t, unsigned n, double *b);

/* Where look k (1-based) of a design with a horizon of K looks stands. */
struct judge_gs_look {
	bool analysis;     /* the test may decide at this look */
	uint32_t index;    /* analyses at or before this look (1-based) */
	uint32_t analyses; /* analyses in the whole design */
	uint32_t next;     /* the next look that is an analysis (0: none left) */
	double fraction;   /* information fraction k / K (capped at 1) */
	double bound;      /* z boundary at this look; INFINITY when not an analysis */
	double spent;      /* error spent up to and including this look */
	double alpha;      /* error spent at this look (0 when not an analysis) */
};

/*
 * The design of a group-sequential test over a step of K looks (K >= 1),
 * looked at once per interval, level alpha in (0, 1): every look is an
 * analysis when K <= JUDGE_GS_MAX_ANALYSES; beyond that the analyses are
 * the JUDGE_GS_MAX_ANALYSES looks round(j K / JUDGE_GS_MAX_ANALYSES), evenly
 * spread (the boundaries are exact for the looks the test acts on).  Past
 * the horizon (k > K) nothing is left to spend: bound INFINITY, spent alpha.
 * Designs are computed once and kept in a small process-wide memo (a
 * mutex; bounded); any thread.  Returns 0, -EINVAL or -ENOMEM.
 */
int judge_gs_look(enum judge_spending f, double alpha, uint32_t k, uint32_t K,
                  struct judge_gs_look *out);

/* ------------------------------------------------------------------------ */
/* Counts: an anytime-valid test for two counting processes                  */

struct judge_count {
	double share;        /* the canary's share of the exposure, nc / (nc + nb) */
	double theta0;       /* null probability that an error is the canary's */
	double theta_hat;    /* observed: xc / (xc + xb); the share when there is none */
	double ratio_hat;    /* estimated rate ratio canary / baseline (INFINITY, or 1 at 0/0) */
	double log_e_beyond; /* log e-value against "canary rate <= ratio0 x baseline" */
	double log_e_within; /* log e-value against "canary rate >= ratio0 x baseline" */
	enum judge_decision decision; /* BEYOND / WITHIN when its e-value >= 1 / alpha */
};

/*
 * Lindon and Malek's anytime-valid test for two counting processes (arXiv
 * 2011.03567; Lindon, Sanden and Shirikian, KDD 2022) on the two counts
 * per cohort: xc errors of nc canary requests, xb of nb baseline requests.
 * Given the exposure share s = nc / (nc + nb), each error is the canary's
 * with probability theta = s r / (s r + 1 - s), r the rate ratio; under
 * r = ratio0 that is theta0.  The e-values are Beta mixtures of the
 * binomial likelihood ratio over theta > theta0 (beyond) and theta < theta0
 * (within), the prior Beta(kappa theta0, kappa (1 - theta0)) truncated to
 * each side: nonnegative supermartingales under their one-sided nulls, so
 * P(ever >= 1/alpha) <= alpha however often it is looked at, with no
 * normal approximation (exact at a handful of errors).  ratio0 > 0
 * (else 1), kappa > 0 (else JUDGE_COUNT_KAPPA), alpha in (0, 1).
 * No errors or an empty cohort: both log e-values 0, UNDECIDED.
 */
#define JUDGE_COUNT_KAPPA 20.0
void judge_count(uint64_t xc, uint64_t nc, uint64_t xb, uint64_t nb, double ratio0, double alpha,
                 double kappa, struct judge_count *out);

/*
 * The log e-value of x successes in n trials against H0: theta <= theta0
 * (above = true) or theta >= theta0 (above = false), with the Beta(kappa
 * theta0, kappa (1 - theta0)) prior truncated to the alternative's side.
 * theta0 in (0, 1), kappa > 0.  Exposed for the tests.
 */
double judge_beta_log_e(uint64_t x, uint64_t n, double theta0, double kappa, bool above);

/* The regularised incomplete beta function I_x(a, b), a, b > 0, x in [0, 1]. */
double judge_ibeta(double x, double a, double b);

/* The upper-tail probability of the standard normal, P(Z > z).  Never NaN. */
double judge_norm_sf(double z);

/* Its inverse: z with P(Z > z) = p, p clamped to [1e-300, 1 - 1e-16]; by
 * bisection on judge_norm_sf (to 1e-12 absolute). */
double judge_norm_isf(double p);

#endif
