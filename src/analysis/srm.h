/*
 * srm.h - the sample-ratio mismatch guard (issue 12, docs/judge.md "Sample
 * ratio mismatch").
 *
 * The bucket split gives the canary buckets [0, w) and the baseline
 * [w, w + min(w, 100000 - w)) (core/bucket.h), so over a step the canary's
 * expected share of canary + baseline units is q = w / (w + min(w, 100000 -
 * w)): 1/2 up to 50%, w / 100000 above.  When the observed counts are too
 * far from q for chance (two-sided, 99.9%: |z| > SRM_Z), the split is not
 * delivering the slices it claims (a client retrying on one version, a
 * cache or a redirect in front of one cohort, a bug in the split), and any
 * comparison of the two cohorts is invalid.
 *
 * The units are what the split randomises: distinct stickiness keys when the
 * split is sticky (estimated by a sketch, metrics/hll.h, whose error is added
 * to the variance so it alone never trips the guard), requests when it is
 * not.  Heavy users make request counts legitimately unequal under a sticky
 * split, which is why keys are counted there.
 *
 * Pure function on caller values; any thread.
 */
#ifndef ANALYSIS_SRM_H
#define ANALYSIS_SRM_H

#include <stdbool.h>
#include <stdint.h>

#define SRM_MIN_UNITS  100.0     /* canary + baseline units before a verdict */
#define SRM_Z          3.2905267 /* two-sided 99.9% normal quantile */
#define SRM_REASON_MAX 320

struct srm_verdict {
	bool judged;   /* a baseline exists and there were SRM_MIN_UNITS units */
	bool mismatch; /* judged and |z| > SRM_Z: the comparison is invalid */
	double canary; /* the units compared */
	double baseline;
	double expected_share;       /* q: the canary's expected share; NAN without a baseline */
	double observed_share;       /* canary / (canary + baseline); NAN with no units */
	double z;                    /* (canary - q N) / sd; 0 when not judged */
	double p;                    /* two-sided p-value; 1 when not judged */
	char reason[SRM_REASON_MAX]; /* one sentence with both counts */
};

/*
 * Tests the canary and baseline unit counts of one step against the split's
 * weight w (thousandths of a percent).  rel_err is the relative standard
 * error of each count: 0 for exact counts (requests), HLL_REL_ERR for
 * sketch estimates (keys); its variance, rel_err^2 ((1-q)^2 canary^2 +
 * q^2 baseline^2), is added to the binomial variance N q (1 - q).  target
 * and unit ("keys", "requests") name things in the reason.  No verdict
 * (judged = false) when w is 0 or >= 100000 (no baseline) or there are
 * fewer than SRM_MIN_UNITS units.  Negative or NAN counts count as 0.
 */
void srm_test(double canary, double baseline, uint32_t weight, double rel_err, const char *target,
              const char *unit, struct srm_verdict *out);

#endif
