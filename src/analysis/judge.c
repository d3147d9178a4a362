/*
 * judge.c - confidence sequence for two proportions, Mann-Whitney U on
 * histograms (see judge.h and docs/judge.md for the maths).
 */
#include "analysis/judge.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

double judge_norm_sf(double z)
{
	if (isnan(z))
		return 1.0;
	return 0.5 * erfc(z / M_SQRT2);
}

double judge_norm_isf(double p)
{
	double lo = -40.0, hi = 40.0;

	if (!(p > 1e-300))
		p = 1e-300;
	if (p > 1.0 - 1e-16)
		p = 1.0 - 1e-16;
	/* sf is decreasing: keep sf(lo) >= p >= sf(hi). */
	for (int i = 0; i < 100 && hi - lo > 1e-12; i++) {
		double mid = 0.5 * (lo + hi);

		if (judge_norm_sf(mid) > p)
			lo = mid;
		else
			hi = mid;
	}
	return 0.5 * (lo + hi);
}

double judge_alpha_spent(double alpha, uint32_t k)
{
	double kk = k < 1 ? 1.0 : (double)k;

	return alpha / (kk * (kk + 1.0));
}

/* ------------------------------------------------------------------------ */
/* Sequential: the normal-mixture confidence sequence                         */

double judge_seq_tau(double margin)
{
	double m = fabs(margin);

	return isnan(m) || m < 0.01 ? 0.01 : m;
}

double judge_seq_half_width(double v, double tau, double alpha)
{
	double t2 = tau * tau;

	if (!(v > 0))
		return 0.0;
	if (isinf(v))
		return INFINITY;
	return sqrt(v * (v + t2) / t2 * (2.0 * log(1.0 / alpha) + log1p(t2 / v)));
}

/* Agresti-Caffo: one success and one failure added, for the variance only,
 * so that 0 of n or n of n does not claim a zero variance. */
static double smoothed_var(uint64_t e, uint64_t n)
{
	double p = ((double)e + 1.0) / ((double)n + 2.0);

	return p * (1.0 - p) / (double)n;
}

void judge_sequential(uint64_t ec, uint64_t nc, uint64_t eb, uint64_t nb, double margin,
                      double confidence, double tau, struct judge_seq *out)
{
	struct judge_seq *s = out;
	double alpha, v, hw, g;

	memset(s, 0, sizeof(*s));
	if (isnan(confidence) || confidence < 0.5)
		confidence = 0.5;
	if (confidence > 0.999999)
		confidence = 0.999999;
	if (!isfinite(margin))
		margin = 0.0;
	if (!(tau > 0) || !isfinite(tau))
		tau = judge_seq_tau(margin);
	alpha = 1.0 - confidence;
	if (ec > nc)
		ec = nc;
	if (eb > nb)
		eb = nb;
	s->margin = margin;
	s->tau = tau;
	s->p_canary = nc ? (double)ec / (double)nc : 0.0;
	s->p_baseline = nb ? (double)eb / (double)nb : 0.0;
	s->diff = s->p_canary - s->p_baseline;
	s->lower = -1.0;
	s->upper = 1.0;
	s->p_value = 1.0;
	s->more_per_cohort = INFINITY;
	s->decision = JUDGE_UNDECIDED;
	if (nc == 0 || nb == 0) {
		s->diff = 0.0;
		s->se = INFINITY;
		return;
	}
	v = smoothed_var(ec, nc) + smoothed_var(eb, nb);
	s->se = sqrt(v);
	hw = judge_seq_half_width(v, tau, alpha);
	s->lower = fmax(-1.0, s->diff - hw);
	s->upper = fmin(1.0, s->diff + hw);
	s->z = (s->diff - margin) / s->se;
	s->log_lr = 0.5 * log(v / (v + tau * tau)) + tau * tau * (s->diff - margin) *
	                                                 (s->diff - margin) /
	                                                 (2.0 * v * (v + tau * tau));
	s->p_value = fmin(1.0, exp(-s->log_lr));
	if (s->lower > margin)
		s->decision = JUDGE_BEYOND;
	else if (s->upper < margin)
		s->decision = JUDGE_WITHIN;
	if (s->decision != JUDGE_UNDECIDED) {
		s->more_per_cohort = 0.0;
		return;
	}

	/* Both cohorts grow by a factor k at the current rates: v becomes v / k.
	 * The smallest k whose half-width is below the distance to the margin. */
	g = fabs(s->diff - margin);
	if (g > 0 && judge_seq_half_width(v / 1e12, tau, alpha) < g) {
		double lo = 0.0, hi = log(1e12); /* log k */

		for (int i = 0; i < 80; i++) {
			double mid = 0.5 * (lo + hi);

			if (judge_seq_half_width(v / exp(mid), tau, alpha) < g)
				hi = mid;
			else
				lo = mid;
		}
		s->more_per_cohort = ceil((exp(hi) - 1.0) * (double)(nc > nb ? nc : nb));
	}
}

/* ------------------------------------------------------------------------ */
/* Mann-Whitney U on histograms                                                */

double judge_bucket_mid(unsigned i)
{
	if (i >= HIST_BUCKETS)
		i = HIST_BUCKETS - 1;
	return ((double)hist_bucket_lower(i) + (double)hist_bucket_upper(i)) / 2.0;
}

static double count_sum(const struct hist *h)
{
	double n = 0;

	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		n += (double)h->counts[i];
	return n;
}

static double median_mid(const struct hist *h, double n)
{
	double rank = ceil(0.5 * n), seen = 0;

	if (n <= 0)
		return 0.0;
	if (rank < 1)
		rank = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += (double)h->counts[i];
		if (seen >= rank)
			return judge_bucket_mid(i);
	}
	return 0.0;
}

/*
 * U of a against b scaled: sum over a's values of (count of b below + half
 * the count of b equal), by a merge of the two sorted bucket lists.  Also
 * the tie term sum(t^3 - t) over the distinct values.
 */
static void u_stat(const struct hist *a, const struct hist *b, double scale, double *u,
                   double *ties)
{
	unsigned i = 0, j = 0;
	double below = 0;

	*u = 0;
	*ties = 0;
	while (i < HIST_BUCKETS || j < HIST_BUCKETS) {
		double va, vb, ca = 0, cb = 0, x, t;

		while (i < HIST_BUCKETS && a->counts[i] == 0)
			i++;
		while (j < HIST_BUCKETS && b->counts[j] == 0)
			j++;
		if (i >= HIST_BUCKETS && j >= HIST_BUCKETS)
			break;
		va = i < HIST_BUCKETS ? judge_bucket_mid(i) : INFINITY;
		vb = j < HIST_BUCKETS ? judge_bucket_mid(j) * scale : INFINITY;
		x = va < vb ? va : vb;
		if (va == x)
			ca = (double)a->counts[i++];
		if (vb == x)
			cb = (double)b->counts[j++];
		*u += ca * (below + 0.5 * cb);
		below += cb;
		t = ca + cb;
		*ties += t * t * t - t;
	}
}

struct pair {
	double d, w;
};

static int pair_cmp(const void *x, const void *y)
{
	const struct pair *p = x, *q = y;

	return (p->d > q->d) - (p->d < q->d);
}

/* Weighted median of canary - baseline over bucket midpoints: the smallest
 * difference whose cumulative weight reaches half the total. */
static int hodges_lehmann(const struct hist *a, const struct hist *b, double *out)
{
	unsigned na = 0, nb = 0, ia[HIST_BUCKETS], ib[HIST_BUCKETS];
	struct pair *p;
	size_t n = 0;
	double total = 0, seen = 0;

	*out = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		if (a->counts[i])
			ia[na++] = i;
		if (b->counts[i])
			ib[nb++] = i;
	}
	if (!na || !nb)
		return 0;
	p = malloc((size_t)na * nb * sizeof(*p));
	if (!p)
		return -ENOMEM;
	for (unsigned i = 0; i < na; i++)
		for (unsigned j = 0; j < nb; j++) {
			p[n].d = judge_bucket_mid(ia[i]) - judge_bucket_mid(ib[j]);
			p[n].w = (double)a->counts[ia[i]] * (double)b->counts[ib[j]];
			total += p[n++].w;
		}
	qsort(p, n, sizeof(*p), pair_cmp);
	for (size_t k = 0; k < n; k++) {
		seen += p[k].w;
		if (seen >= 0.5 * total) {
			*out = p[k].d;
			break;
		}
	}
	free(p);
	return 0;
}

int judge_mann_whitney(const struct hist *canary, const struct hist *baseline, double scale,
                       struct judge_mw *out)
{
	struct judge_mw *m = out;
	double n1, n2, n, u, ties, u0, t0;
	int rc;

	memset(m, 0, sizeof(*m));
	if (!(scale > 0) || !isfinite(scale))
		scale = 1.0;
	n1 = count_sum(canary);
	n2 = count_sum(baseline);
	n = n1 + n2;
	m->n_canary = (uint64_t)n1;
	m->n_baseline = (uint64_t)n2;
	m->scale = scale;
	m->p_greater = m->p_less = 1.0;
	m->cles = 0.5;
	m->ratio = 1.0;
	m->median_canary_us = median_mid(canary, n1);
	m->median_baseline_us = median_mid(baseline, n2);
	if (n1 == 0 || n2 == 0)
		return 0;
	rc = hodges_lehmann(canary, baseline, &m->shift_us);
	if (rc)
		return rc;
	if (m->median_baseline_us > 0)
		m->ratio = (m->median_baseline_us + m->shift_us) / m->median_baseline_us;

	u_stat(canary, baseline, 1.0, &u0, &t0);
	m->cles = u0 / (n1 * n2);
	if (scale == 1.0) {
		u = u0;
		ties = t0;
	} else {
		u_stat(canary, baseline, scale, &u, &ties);
	}
	m->u = u;
	m->mean_u = n1 * n2 / 2.0;
	if (n >= 2) {
		double var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));

		m->sd_u = var > 0 ? sqrt(var) : 0.0;
	}
	if (m->sd_u > 0) {
		m->z_greater = (u - m->mean_u - 0.5) / m->sd_u;
		m->p_greater = judge_norm_sf(m->z_greater);
		m->p_less = judge_norm_sf((n1 * n2 - u - m->mean_u - 0.5) / m->sd_u);
	}
	return 0;
}
