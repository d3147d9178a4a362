/*
 * judge.c - confidence sequence for two proportions, group-sequential
 * boundaries, the counting-process test, Mann-Whitney U on histograms (see
 * judge.h and docs/judge.md for the maths).
 */
#include "analysis/judge.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
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

double judge_seq_tau(double margin, double alpha)
{
	double e = fabs(margin), x = 10.0;

	if (isnan(e) || e < 0.01)
		e = 0.01;
	if (!(alpha > 0 && alpha < 1))
		alpha = 0.05;
	for (int i = 0; i < 50; i++) /* a contraction: converges in a few steps */
		x = 2.0 * log(1.0 / alpha) + log1p(x);
	return e * sqrt(x / (1.0 + x));
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
	alpha = 1.0 - confidence;
	if (!(tau > 0) || !isfinite(tau))
		tau = judge_seq_tau(margin, alpha);
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

/* ------------------------------------------------------------------------ */
/* Group-sequential boundaries                                                */

const char *judge_spending_name(enum judge_spending f)
{
	return f == JUDGE_SPEND_POCOCK ? "pocock" : "obrien-fleming";
}

double judge_spend(enum judge_spending f, double alpha, double t)
{
	if (!(t > 0))
		return 0.0;
	if (t >= 1.0)
		return alpha;
	if (f == JUDGE_SPEND_POCOCK)
		return alpha * log1p((M_E - 1.0) * t);
	return 2.0 * judge_norm_sf(judge_norm_isf(alpha / 2.0) / sqrt(t));
}

static double norm_pdf(double z)
{
	return exp(-0.5 * z * z) / sqrt(2.0 * M_PI);
}

/*
 * The density of the score W_i (variance I_i = t_i n, so that an average
 * increment has variance 1) on the continuation region, sampled at
 * lo + j h, j = 0..m (m even, Simpson's rule), hi = lo + m h the boundary.
 */
struct gs_grid {
	double lo, h;
	unsigned m;
	double *f;
};

#define GS_STEP  0.125 /* grid spacing, in standard deviations of an increment */
#define GS_RANGE 7.5   /* the grid reaches this many standard deviations below 0 (P < 1e-13) */

static double simpson_w(unsigned j, unsigned m, double h)
{
	if (j == 0 || j == m)
		return h / 3.0;
	return (j & 1) ? 4.0 * h / 3.0 : 2.0 * h / 3.0;
}

/* P(W_prev continues and W_prev + N(0, s2) >= c) */
static double gs_cross(const struct gs_grid *g, double s, double c)
{
	double p = 0, a = (c - 12.0 * s - g->lo) / g->h;
	unsigned j0 = a <= 0 ? 0 : a >= (double)g->m ? g->m : (unsigned)a;

	/* points more than 12 s below c cannot reach it (P < 1e-32) */
	for (unsigned j = j0; j <= g->m; j++)
		p += simpson_w(j, g->m, g->h) * g->f[j] *
		     judge_norm_sf((c - (g->lo + j * g->h)) / s);
	return p;
}

int judge_gs_bounds(enum judge_spending f, double alpha, const double *t, unsigned n, double *b)
{
	struct gs_grid g = {0}, ng = {0};
	double prev_t = 0, prev_i = 0, spent = 0;
	int rc = 0;

	if (!t || !b || n == 0 || n > JUDGE_GS_MAX_ANALYSES || !(alpha > 0 && alpha < 1))
		return -EINVAL;
	for (unsigned i = 0; i < n; i++)
		if (!(t[i] > prev_t) || t[i] > 1.0 + 1e-12)
			return -EINVAL;
		else
			prev_t = t[i];
	prev_t = 0;
	for (unsigned i = 0; i < n; i++) {
		double info = t[i] * n, s = sqrt(info - prev_i), target, c, lo, hi, top;
		double want = judge_spend(f, alpha, t[i]);

		target = want - spent;
		/* The boundary on the score scale: P(cross at i) = target, by bisection. */
		if (!(target > 1e-15)) {
			c = INFINITY;
		} else if (i == 0) {
			c = judge_norm_isf(target) * s;
		} else {
			lo = -GS_RANGE * sqrt(info);
			hi = 40.0 * sqrt(info);
			if (gs_cross(&g, s, lo) <
			    target) { /* cannot spend it all: spend what is there */
				c = lo;
			} else {
				for (int it = 0; it < 100 && hi - lo > 1e-7 * fmax(1.0, fabs(hi));
				     it++) {
					double mid = 0.5 * (lo + hi);

					if (gs_cross(&g, s, mid) > target)
						lo = mid;
					else
						hi = mid;
				}
				c = 0.5 * (lo + hi);
			}
		}
		b[i] = isinf(c) ? INFINITY : c / sqrt(info);
		spent += i == 0 ? (isinf(c) ? 0.0 : judge_norm_sf(c / s))
		                : (isinf(c) ? 0.0 : gs_cross(&g, s, c));
		if (i + 1 == n)
			break;
		/* The new continuation density on [-R sqrt(I), min(c, R' sqrt(I))]. */
		ng.lo = -GS_RANGE * sqrt(info);
		top = fmin(isinf(c) ? INFINITY : c, GS_RANGE * sqrt(info) + 1.0);
		if (!(top > ng.lo)) {
			top = ng.lo + 1.0;
		}
		{
			double hs = GS_STEP * fmin(1.0, s);
			unsigned m = (unsigned)ceil((top - ng.lo) / hs);

			if (m < 2)
				m = 2;
			if (m & 1)
				m++;
			ng.m = m;
			ng.h = (top - ng.lo) / m;
			free(ng.f);
			ng.f = malloc((m + 1) * sizeof(double));
			if (!ng.f) {
				rc = -ENOMEM;
				goto out_free;
			}
		}
		for (unsigned j = 0; j <= ng.m; j++) {
			double w = ng.lo + j * ng.h;

			if (i == 0) {
				ng.f[j] = norm_pdf(w / s) / s;
			} else {
				double acc = 0;
				/* only grid points within 8.5 s of w matter (the rest < 1e-16) */
				double a = (w - 8.5 * s - g.lo) / g.h,
				       z = (w + 8.5 * s - g.lo) / g.h;
				unsigned j0 = a <= 0 ? 0 : (unsigned)a, j1;

				j1 = z >= (double)g.m ? g.m : (unsigned)z;
				for (unsigned k = j0; k <= j1 && k <= g.m; k++)
					acc += simpson_w(k, g.m, g.h) * g.f[k] *
					       norm_pdf((w - (g.lo + k * g.h)) / s) / s;
				ng.f[j] = acc;
			}
		}
		{
			struct gs_grid tmp = g;

			g = ng;
			ng = tmp;
		}
		prev_i = info;
		prev_t = t[i];
	}
out_free:
	free(g.f);
	free(ng.f);
	return rc;
}

/* The memo of designs: (f, alpha, K) -> the boundaries of its analyses. */
#define GS_MEMO 16
struct gs_design {
	bool used;
	enum judge_spending f;
	double alpha;
	uint32_t K, n;
	uint64_t stamp;
	double b[JUDGE_GS_MAX_ANALYSES];
};

static pthread_mutex_t gs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct gs_design gs_memo[GS_MEMO];
static uint64_t gs_clock;

/* The look of analysis j (1-based) of n over K looks. */
static uint32_t gs_analysis_look(uint32_t j, uint32_t n, uint32_t K)
{
	if (n >= K)
		return j;
	return (uint32_t)llround((double)j * (double)K / (double)n);
}

int judge_gs_look(enum judge_spending f, double alpha, uint32_t k, uint32_t K,
                  struct judge_gs_look *out)
{
	struct gs_design *d = NULL, *victim = &gs_memo[0];
	uint32_t n, j;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	out->bound = INFINITY;
	if (K == 0 || k == 0 || !(alpha > 0 && alpha < 1))
		return -EINVAL;
	n = K < JUDGE_GS_MAX_ANALYSES ? K : JUDGE_GS_MAX_ANALYSES;
	out->analyses = n;
	if (k > K) {
		out->index = n;
		out->fraction = 1.0;
		out->spent = alpha;
		return 0;
	}
	/* analyses at or before look k: the largest j with look(j) <= k */
	j = n >= K ? k : (uint32_t)floor((double)k * n / K + 1e-9);
	while (j < n && gs_analysis_look(j + 1, n, K) <= k)
		j++;
	while (j > 0 && gs_analysis_look(j, n, K) > k)
		j--;
	out->index = j;
	out->analysis = j > 0 && gs_analysis_look(j, n, K) == k;
	out->next = j < n ? gs_analysis_look(j + 1, n, K) : 0;
	out->fraction = (double)k / (double)K;
	out->spent = j ? judge_spend(f, alpha, (double)gs_analysis_look(j, n, K) / K) : 0.0;
	if (!out->analysis)
		return 0;
	out->alpha =
	    out->spent -
	    (j > 1 ? judge_spend(f, alpha, (double)gs_analysis_look(j - 1, n, K) / K) : 0.0);

	pthread_mutex_lock(&gs_lock);
	for (unsigned i = 0; i < GS_MEMO; i++) {
		struct gs_design *x = &gs_memo[i];

		if (x->used && x->f == f && x->alpha == alpha && x->K == K) {
			d = x;
			break;
		}
		if (!x->used || (victim->used && x->stamp < victim->stamp))
			victim = x;
	}
	if (!d) {
		double t[JUDGE_GS_MAX_ANALYSES];

		d = victim;
		for (uint32_t i = 1; i <= n; i++)
			t[i - 1] = (double)gs_analysis_look(i, n, K) / K;
		d->used = false;
		rc = judge_gs_bounds(f, alpha, t, n, d->b);
		if (rc == 0) {
			d->used = true;
			d->f = f;
			d->alpha = alpha;
			d->K = K;
			d->n = n;
		}
	}
	if (rc == 0) {
		d->stamp = ++gs_clock;
		out->bound = d->b[j - 1];
	}
	pthread_mutex_unlock(&gs_lock);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* The counting-process test                                                   */

/* The continued fraction of I_x(a, b) (modified Lentz), for x < (a+1)/(a+b+2). */
static double ibeta_cf(double x, double a, double b)
{
	const double tiny = 1e-300;
	double c = 1.0, d = 1.0 - (a + b) * x / (a + 1.0), h;

	if (fabs(d) < tiny)
		d = tiny;
	d = 1.0 / d;
	h = d;
	for (int m = 1; m <= 100000; m++) {
		double m2 = 2.0 * m, aa, del;

		aa = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2));
		d = 1.0 + aa * d;
		d = fabs(d) < tiny ? tiny : d;
		c = 1.0 + aa / c;
		c = fabs(c) < tiny ? tiny : c;
		d = 1.0 / d;
		h *= d * c;
		aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0));
		d = 1.0 + aa * d;
		d = fabs(d) < tiny ? tiny : d;
		c = 1.0 + aa / c;
		c = fabs(c) < tiny ? tiny : c;
		d = 1.0 / d;
		del = d * c;
		h *= del;
		if (fabs(del - 1.0) < 1e-15)
			break;
	}
	return h;
}

static double lbeta(double a, double b)
{
	return lgamma(a) + lgamma(b) - lgamma(a + b);
}

/* log I_x(a, b) for x strictly inside (0, 1), accurate in the far tail. */
static double log_ibeta_lower(double x, double a, double b)
{
	if (x < (a + 1.0) / (a + b + 2.0))
		return a * log(x) + b * log1p(-x) - lbeta(a, b) + log(ibeta_cf(x, a, b) / a);
	/* I_x(a, b) = 1 - I_{1-x}(b, a) */
	return log1p(
	    -exp((b * log1p(-x) + a * log(x) - lbeta(a, b)) + log(ibeta_cf(1.0 - x, b, a) / b)));
}

double judge_ibeta(double x, double a, double b)
{
	if (!(x > 0))
		return 0.0;
	if (x >= 1)
		return 1.0;
	return exp(log_ibeta_lower(x, a, b));
}

double judge_beta_log_e(uint64_t x, uint64_t n, double theta0, double kappa, bool above)
{
	double a = kappa * theta0, b = kappa * (1.0 - theta0), xs, ys, num, den;

	if (x > n)
		x = n;
	xs = (double)x;
	ys = (double)(n - x);
	/* the prior and posterior masses on the alternative's side of theta0 */
	if (above) {
		num = log_ibeta_lower(1.0 - theta0, b + ys, a + xs); /* P(theta > theta0) */
		den = log_ibeta_lower(1.0 - theta0, b, a);
	} else {
		num = log_ibeta_lower(theta0, a + xs, b + ys);
		den = log_ibeta_lower(theta0, a, b);
	}
	return lbeta(a + xs, b + ys) - lbeta(a, b) + num - den - xs * log(theta0) -
	       ys * log1p(-theta0);
}

void judge_count(uint64_t xc, uint64_t nc, uint64_t xb, uint64_t nb, double ratio0, double alpha,
                 double kappa, struct judge_count *out)
{
	struct judge_count *k = out;
	double lim;

	memset(k, 0, sizeof(*k));
	if (!(ratio0 > 0) || !isfinite(ratio0))
		ratio0 = 1.0;
	if (!(kappa > 0) || !isfinite(kappa))
		kappa = JUDGE_COUNT_KAPPA;
	if (!(alpha > 0 && alpha < 1))
		alpha = 0.05;
	if (xc > nc)
		xc = nc;
	if (xb > nb)
		xb = nb;
	k->decision = JUDGE_UNDECIDED;
	k->ratio_hat = 1.0;
	if (nc == 0 || nb == 0) {
		k->share = nc ? 1.0 : 0.0;
		k->theta0 = k->theta_hat = k->share;
		return;
	}
	k->share = (double)nc / ((double)nc + (double)nb);
	k->theta0 = k->share * ratio0 / (k->share * ratio0 + 1.0 - k->share);
	k->theta_hat = xc + xb ? (double)xc / ((double)xc + (double)xb) : k->share;
	if (xb)
		k->ratio_hat = ((double)xc / (double)nc) / ((double)xb / (double)nb);
	else if (xc)
		k->ratio_hat = INFINITY;
	if (xc + xb == 0)
		return;
	k->log_e_beyond = judge_beta_log_e(xc, xc + xb, k->theta0, kappa, true);
	k->log_e_within = judge_beta_log_e(xc, xc + xb, k->theta0, kappa, false);
	lim = log(1.0 / alpha);
	if (k->log_e_beyond >= lim)
		k->decision = JUDGE_BEYOND;
	else if (k->log_e_within >= lim)
		k->decision = JUDGE_WITHIN;
}
