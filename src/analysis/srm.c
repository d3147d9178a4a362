#include "analysis/srm.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/bucket.h"

static double units(double x)
{
	return x > 0.0 ? x : 0.0; /* also NAN -> 0 */
}

void srm_test(double canary, double baseline, uint32_t weight, double rel_err, const char *target,
              const char *unit, struct srm_verdict *out)
{
	uint32_t base = weight < BUCKET_COUNT - weight ? weight : BUCKET_COUNT - weight;
	double a = units(canary), b = units(baseline), n = a + b, q, var;

	memset(out, 0, sizeof(*out));
	out->canary = a;
	out->baseline = b;
	out->p = 1.0;
	out->observed_share = n > 0.0 ? a / n : NAN;
	out->expected_share = NAN;
	if (weight == 0 || weight >= BUCKET_COUNT) {
		snprintf(out->reason, sizeof(out->reason),
		         "%s: no baseline at a weight of %.3f%%, no sample-ratio test", target,
		         weight / 1000.0);
		return;
	}
	q = (double)weight / (double)(weight + base);
	out->expected_share = q;
	if (n < SRM_MIN_UNITS) {
		snprintf(out->reason, sizeof(out->reason),
		         "%s: %.0f canary and %.0f baseline %s, fewer than the %.0f a "
		         "sample-ratio test needs",
		         target, a, b, unit, SRM_MIN_UNITS);
		return;
	}
	rel_err = units(rel_err);
	var =
	    n * q * (1.0 - q) + rel_err * rel_err * ((1.0 - q) * (1.0 - q) * a * a + q * q * b * b);
	out->judged = true;
	out->z = (a - q * n) / sqrt(var);
	out->p = erfc(fabs(out->z) / M_SQRT2);
	out->mismatch = fabs(out->z) > SRM_Z;
	snprintf(out->reason, sizeof(out->reason),
	         "%s %s: %.0f canary vs %.0f baseline %s where the split expects %.1f%% on the "
	         "canary (observed %.1f%%, p = %.2g)%s",
	         out->mismatch ? "sample ratio mismatch on" : "sample ratio ok on", target, a, b,
	         unit, q * 100.0, out->observed_share * 100.0, out->p,
	         out->mismatch ? ", so the comparison is invalid" : "");
}
