/*
 * judge.h - the statistics behind a check's `test:` (SPEC 5, docs/judge.md).
 *
 * Two tests, both pure functions on caller-owned numbers:
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
 * Neither produces NaN: empty inputs give the trivial answer (bounds [-1, 1],
 * p-values 1, effect sizes 0 or 0.5) with the counts saying why.
 * Any thread; no global state.
 */
#ifndef ANALYSIS_JUDGE_H
#define ANALYSIS_JUDGE_H

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
 * The mixing standard deviation judge_sequential() uses for a margin:
 * max(|margin|, 0.01).  The mixture is tuned to differences of about the
 * size of the margin; it must not depend on the data (validity).
 */
double judge_seq_tau(double margin);

/*
 * The confidence sequence for p_c - p_b at one look: ec errors of nc canary
 * requests, eb of nb baseline requests (errors are capped at requests),
 * margin d (the tolerated increase; any finite number), confidence in (0, 1)
 * (out of range is clamped to [0.5, 0.999999]), tau > 0 the mixing standard
 * deviation (<= 0 or NaN: judge_seq_tau(margin)).
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

/* The upper-tail probability of the standard normal, P(Z > z).  Never NaN. */
double judge_norm_sf(double z);

/* Its inverse: z with P(Z > z) = p, p clamped to [1e-300, 1 - 1e-16]; by
 * bisection on judge_norm_sf (to 1e-12 absolute). */
double judge_norm_isf(double p);

#endif
