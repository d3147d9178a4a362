/*
 * bench/judge.c - the judge benchmark of issue 6 (docs/judge.md).
 *
 * A simulator draws, per analysis interval, the canary and baseline cohorts'
 * request counts, error counts and latency histograms for a scenario, and
 * three judges look at the same data every interval:
 *   ours      - check_evaluate_cumulative() with two checks: error_rate with
 *               `test: {method: sequential, confidence: 0.99}` (margin 0) and
 *               latency_p99 with `test: {method: mann-whitney, confidence:
 *               0.99, max_ratio: 1.05}`, min_samples 200, on the counts since
 *               the start (what the engine passes);
 *   threshold - Flagger-like: absolute bounds on the canary alone per interval
 *               (error rate <= 2%, p99 <= 500 ms), no data counts as a
 *               failure, failures counted cumulatively, rollback at 5;
 *   kayenta   - NetflixACAJudge-like: per-interval series (error rate, p99) of
 *               canary and baseline since the start, Mann-Whitney two-sided at
 *               98% (alpha 0.02), effect size = ratio of the series' means with
 *               a 25% tolerance, metric High when significant and beyond the
 *               tolerance, score = passing metrics / metrics * 100, rollback
 *               when the score is below the marginal 75 (pass 95); needs 3
 *               points per series before it classifies.
 * Each judge rolls back at its first failing look.  Output: false-rollback
 * rate on healthy canaries, detection power and median time to detect per
 * regression, and the ratios against the goals.
 *
 *   judge [--seeds N] [--intervals N] [--quick] [--no-methods]
 *
 * Deterministic: every (scenario, seed) has its own RNG stream.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/check.h"
#include "analysis/judge.h"

#define INTERVAL_S   60
#define BASE_ERR     0.01
#define LAT_MED_US   100000.0 /* 100 ms */
#define LAT_SIGMA    0.5
#define MAX_INTERVAL 120

enum pattern { STEADY, BURSTY, DIURNAL };
static const char *const pattern_names[] = {"steady", "bursty", "diurnal"};

/* The statistical methods compared on the same streams (issue 18). */
enum { M_MIXTURE, M_COUNT, M_OBF_MIX, M_POC_MIX, M_OBF_CNT, M_POC_CNT, NMETH };
static const char *const meth_names[] = {"mixture",     "counting",     "obf+mixture",
                                         "pocock+mix.", "obf+counting", "pocock+count"};

struct scenario {
	char name[96];
	enum pattern pattern;
	double rps, share;        /* total traffic, canary share (fraction) */
	double base_err;          /* the baseline's error rate */
	double err_add;           /* canary error rate - baseline's, absolute */
	double err_mul;           /* canary error rate / baseline's (before err_add) */
	double lat_mul;           /* canary latency multiplier */
	bool healthy, literature; /* the literature's grid (issue 18) */
	/* results */
	double fr[3];  /* rolled back (healthy: false rollback) share */
	double ttd[3]; /* median time to detect, minutes (NAN: none) */
	double n_at;   /* ours: median canary requests (per cohort) at the rollback */
	double meth_fr[NMETH], meth_ttd[NMETH];
	/* the references over their parameter grids, for calibration */
	double thr_fr[MAX_INTERVAL + 1], thr_ttd[MAX_INTERVAL + 1];
	double kay_fr[16], kay_ttd[16];
};

enum { J_OURS, J_THRESHOLD, J_KAYENTA, NJUDGES };
static const char *const judge_names[] = {"ours", "threshold", "kayenta"};

/* ---- RNG: xoshiro256** seeded by splitmix64 ---- */
struct rng {
	uint64_t s[4];
};

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t next(struct rng *r)
{
	uint64_t *s = r->s, res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return res;
}

static double unif(struct rng *r)
{
	return ((double)(next(r) >> 11) + 0.5) / 9007199254740992.0;
}

static double gauss(struct rng *r)
{
	return sqrt(-2.0 * log(unif(r))) * cos(2.0 * M_PI * unif(r));
}

static uint64_t poisson(struct rng *r, double lam)
{
	if (lam <= 0)
		return 0;
	if (lam < 30) {
		double l = exp(-lam), p = 1.0;
		uint64_t k = 0;

		do {
			k++;
			p *= unif(r);
		} while (p > l);
		return k - 1;
	}
	{
		double x = floor(lam + sqrt(lam) * gauss(r) + 0.5);

		return x < 0 ? 0 : (uint64_t)x;
	}
}

/* Binomial: exact inversion for small means, normal approximation else. */
static uint64_t binomial(struct rng *r, uint64_t n, double p)
{
	double mean, x;

	if (n == 0 || p <= 0)
		return 0;
	if (p >= 1)
		return n;
	if (p > 0.5)
		return n - binomial(r, n, 1.0 - p);
	mean = (double)n * p;
	if (mean < 25) {
		double q = 1.0 - p, f = pow(q, (double)n), u = unif(r), cum = f;
		uint64_t k = 0;

		while (u > cum && k < n) {
			f *= (double)(n - k) / (double)(k + 1) * p / q;
			k++;
			cum += f;
			if (f < 1e-300 && cum < u) /* numeric tail: stop */
				break;
		}
		return k;
	}
	x = floor(mean + sqrt(mean * (1.0 - p)) * gauss(r) + 0.5);
	if (x < 0)
		x = 0;
	if (x > (double)n)
		x = (double)n;
	return (uint64_t)x;
}

/* ---- latency: bucket probabilities of a log-normal, multinomial draws ---- */
struct latdist {
	unsigned lo, hi; /* bucket range with mass */
	double p[HIST_BUCKETS];
};

static void latdist_init(struct latdist *d, double median_us, double sigma)
{
	double mu = log(median_us);

	d->lo = HIST_BUCKETS;
	d->hi = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		double a = (double)hist_bucket_lower(i), b = (double)hist_bucket_upper(i) + 1.0;
		double pa = a <= 0 ? 0 : 0.5 * erfc(-(log(a) - mu) / (sigma * M_SQRT2));
		double pb = 0.5 * erfc(-(log(b) - mu) / (sigma * M_SQRT2));

		d->p[i] = pb - pa;
		if (d->p[i] > 1e-12) {
			if (i < d->lo)
				d->lo = i;
			d->hi = i;
		} else {
			d->p[i] = 0;
		}
	}
}

static void draw_hist(struct rng *r, const struct latdist *d, uint64_t n, struct hist *h)
{
	double rest = 1.0;

	hist_init(h);
	h->n = n; /* every draw lands in a bucket */
	for (unsigned i = d->lo; i <= d->hi && n > 0; i++) {
		uint64_t k;

		if (d->p[i] <= 0)
			continue;
		k = rest <= d->p[i] ? n : binomial(r, n, d->p[i] / rest);
		h->counts[i] += k;
		n -= k;
		rest -= d->p[i];
	}
	if (n) /* rounding residue: the last bucket with mass */
		h->counts[d->hi] += n;
}

static double p99_ms(const struct hist *h)
{
	int b = hist_quantile_bucket(h, 0.99);

	return b < 0 ? NAN : judge_bucket_mid((unsigned)b) / 1000.0;
}

/* ---- the Kayenta-like classifier: MW two-sided on series, mean ratio ---- */
static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* two-sided asymptotic MW p-value with continuity and tie correction */
static double mw_series_p(const double *x, int n1, const double *y, int n2)
{
	double all[2 * MAX_INTERVAL], u = 0, ties = 0, n = n1 + n2, mu, var, z;
	int m = 0;

	for (int i = 0; i < n1; i++)
		for (int j = 0; j < n2; j++)
			u += x[i] > y[j] ? 1.0 : x[i] == y[j] ? 0.5 : 0.0;
	for (int i = 0; i < n1; i++)
		all[m++] = x[i];
	for (int j = 0; j < n2; j++)
		all[m++] = y[j];
	qsort(all, (size_t)m, sizeof(double), cmp_double);
	for (int i = 0; i < m;) {
		int k = i;

		while (k < m && all[k] == all[i])
			k++;
		ties += (double)(k - i) * (k - i) * (k - i) - (k - i);
		i = k;
	}
	mu = n1 * n2 / 2.0;
	var = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)));
	if (var <= 0)
		return 1.0;
	z = (fabs(u - mu) - 0.5) / sqrt(var);
	return fmin(1.0, 2.0 * judge_norm_sf(z));
}

/* The p-value at which the metric turns High: its two-sided MW p when the
 * mean ratio is beyond the 25% tolerance, else 1 (never High). */
static double kayenta_metric(const double *c, const double *b, int n)
{
	double mc = 0, mb = 0, ratio;

	for (int i = 0; i < n; i++) {
		mc += c[i];
		mb += b[i];
	}
	ratio = mb > 0 ? mc / mb : (mc > 0 ? INFINITY : 1.0);
	if (!(ratio > 1.25))
		return 1.0;
	return mw_series_p(c, n, b, n);
}

/* ---- one run ---- */
/* Kayenta's alpha grid for calibration; [0] is its default (98%). */
static const double kay_alpha[] = {0.02, 0.01, 0.005, 0.002, 0.001, 5e-4, 2e-4, 1e-4, 1e-5};
#define NALPHA        (int)(sizeof(kay_alpha) / sizeof(kay_alpha[0]))
#define THRESHOLD_DEF 5 /* Flagger's usual `threshold: 5` */

struct run_result {
	int detect[NJUDGES];         /* interval index (1-based) of the rollback, 0 none */
	int n_at;                    /* ours: canary requests at the rollback */
	int meth[NMETH];             /* the methods' rollbacks */
	int thr_k[MAX_INTERVAL + 1]; /* threshold: when the k-th failure happened */
	int kay[NALPHA];             /* kayenta: first High at each alpha */
};

static void add_snap(struct metrics_cohort_snapshot *cum, const struct metrics_cohort_snapshot *d)
{
	cum->requests += d->requests;
	cum->errors += d->errors;
	hist_merge(&cum->hist, &d->hist);
}

static bool with_methods = true; /* --no-methods: the main table only (half the CPU) */

#define ALPHA    0.005 /* per check: two checks keep a healthy canary's rollbacks <= 1% */
#define SPENDING CONFIG_SPEND_OBRIEN_FLEMING

/*
 * The methods side by side on the cumulative counts of look t: each is a
 * whole judge (errors and latency at ALPHA each), rolling back at its first
 * failing look.  The splits are check.c's: with a horizon 90% of the error
 * goes to the group-sequential part and 10% to the anytime part.
 */
static void methods(struct run_result *out, const struct metrics_cohort_snapshot *cc,
                    const struct metrics_cohort_snapshot *cb, int t, int intervals)
{
	struct judge_seq sfull, stail;
	struct judge_count kfull, ktail;
	struct judge_gs_look go, gp;
	struct judge_mw w;
	bool e[NMETH], l[NMETH], any = false;
	double tail = 0.1 * ALPHA;

	for (int m = 0; m < NMETH; m++)
		any = any || !out->meth[m];
	if (!any || cc->requests < 200 || cb->requests < 200)
		return; /* min_samples, as ours */
	judge_sequential(cc->errors, cc->requests, cb->errors, cb->requests, 0, 1 - ALPHA, 0,
	                 &sfull);
	judge_sequential(cc->errors, cc->requests, cb->errors, cb->requests, 0, 1 - tail, 0,
	                 &stail);
	judge_count(cc->errors, cc->requests, cb->errors, cb->requests, 1.0, ALPHA, 0, &kfull);
	judge_count(cc->errors, cc->requests, cb->errors, cb->requests, 1.0, tail, 0, &ktail);
	judge_gs_look(JUDGE_SPEND_OBRIEN_FLEMING, ALPHA - tail, (uint32_t)t, (uint32_t)intervals,
	              &go);
	judge_gs_look(JUDGE_SPEND_POCOCK, ALPHA - tail, (uint32_t)t, (uint32_t)intervals, &gp);
	if (judge_mann_whitney(&cc->hist, &cb->hist, 1.05, &w))
		abort();
	e[M_MIXTURE] = sfull.decision == JUDGE_BEYOND;
	e[M_COUNT] = kfull.decision == JUDGE_BEYOND;
	e[M_OBF_MIX] = stail.decision == JUDGE_BEYOND || (go.analysis && sfull.z >= go.bound);
	e[M_POC_MIX] = stail.decision == JUDGE_BEYOND || (gp.analysis && sfull.z >= gp.bound);
	e[M_OBF_CNT] = ktail.decision == JUDGE_BEYOND || (go.analysis && sfull.z >= go.bound);
	e[M_POC_CNT] = ktail.decision == JUDGE_BEYOND || (gp.analysis && sfull.z >= gp.bound);
	l[M_MIXTURE] = l[M_COUNT] = w.p_greater < judge_alpha_spent(ALPHA, (uint32_t)t);
	l[M_OBF_MIX] = l[M_OBF_CNT] = w.p_greater < judge_alpha_spent(tail, (uint32_t)t) ||
	                              (go.analysis && w.sd_u > 0 && w.z_greater >= go.bound);
	l[M_POC_MIX] = l[M_POC_CNT] = w.p_greater < judge_alpha_spent(tail, (uint32_t)t) ||
	                              (gp.analysis && w.sd_u > 0 && w.z_greater >= gp.bound);
	for (int m = 0; m < NMETH; m++)
		if (!out->meth[m] && (e[m] || l[m]))
			out->meth[m] = t;
}

struct dists {
	struct latdist base, canary, base_burst, canary_burst;
};

static void run_one(const struct scenario *sc, const struct dists *ld, uint64_t seed, int intervals,
                    struct run_result *out)
{
	static _Thread_local struct metrics_cohort_snapshot dc, db, cc, cb;
	struct config_check err, lat;
	struct rng r;
	int fails = 0;
	double kc_err[MAX_INTERVAL], kb_err[MAX_INTERVAL], kc_lat[MAX_INTERVAL],
	    kb_lat[MAX_INTERVAL];
	int kn = 0;

	memset(out, 0, sizeof(*out));
	memset(&cc, 0, sizeof(cc));
	memset(&cb, 0, sizeof(cb));
	rng_seed(&r, seed);
	memset(&err, 0, sizeof(err));
	err.name = "errors";
	err.source = CONFIG_SOURCE_METRIC;
	err.metric = CONFIG_METRIC_ERROR_RATE;
	err.min_samples = 200;
	err.test.method = CONFIG_TEST_SEQUENTIAL;
	err.test.confidence = 1.0 - ALPHA;
	err.test.spending = SPENDING;
	lat = err;
	lat.name = "latency";
	lat.metric = CONFIG_METRIC_LATENCY_P99;
	lat.test.method = CONFIG_TEST_MANN_WHITNEY;
	lat.test.max_ratio = (struct config_bound){true, 1.05};

	for (int t = 1; t <= intervals; t++) {
		double vol = 1.0, pb = sc->base_err, lam;
		bool burst = false;

		if (sc->pattern == DIURNAL) {
			/* a compressed day over the run: traffic and errors swing together */
			double ph = sin(2.0 * M_PI * (double)t / (double)intervals);

			vol = 1.0 + 0.6 * ph;
			pb = sc->base_err * (1.0 + 0.5 * ph);
		} else if (sc->pattern == BURSTY) {
			burst = unif(&r) < 0.1; /* a shared incident: both cohorts see it */
			if (burst)
				pb = sc->base_err * 5;
		}
		lam = sc->rps * sc->share * vol * INTERVAL_S;
		memset(&dc, 0, sizeof(dc));
		memset(&db, 0, sizeof(db));
		dc.requests = poisson(&r, lam);
		db.requests = poisson(&r, lam);
		dc.errors = binomial(&r, dc.requests, fmin(1.0, pb * sc->err_mul + sc->err_add));
		db.errors = binomial(&r, db.requests, pb);
		draw_hist(&r, burst ? &ld->canary_burst : &ld->canary, dc.requests, &dc.hist);
		draw_hist(&r, burst ? &ld->base_burst : &ld->base, db.requests, &db.hist);
		add_snap(&cc, &dc);
		add_snap(&cb, &db);

		if (!out->detect[J_OURS]) {
			struct check_cumulative cum = {&cc, &cb, (uint32_t)t, (uint32_t)intervals};
			struct check_verdict v;

			if (check_evaluate_cumulative(&err, &dc, &db, &cum, INTERVAL_S * 1000,
			                              &v) == CHECK_FAIL ||
			    check_evaluate_cumulative(&lat, &dc, &db, &cum, INTERVAL_S * 1000,
			                              &v) == CHECK_FAIL) {
				out->detect[J_OURS] = t;
				out->n_at = (int)cc.requests;
			}
		}
		if (with_methods)
			methods(out, &cc, &cb, t, intervals);
		{
			bool bad;

			if (dc.requests == 0)
				bad = true; /* Flagger: no values found is a failed check */
			else
				bad = (double)dc.errors / (double)dc.requests > 0.02 ||
				      p99_ms(&dc.hist) > 500.0;
			if (bad) {
				out->thr_k[++fails] = t;
				if (fails == THRESHOLD_DEF)
					out->detect[J_THRESHOLD] = t;
			}
		}
		if (dc.requests && db.requests) {
			kc_err[kn] = (double)dc.errors / (double)dc.requests;
			kb_err[kn] = (double)db.errors / (double)db.requests;
			kc_lat[kn] = p99_ms(&dc.hist);
			kb_lat[kn] = p99_ms(&db.hist);
			kn++;
		}
		if (kn >= 3 && !out->kay[NALPHA - 1]) {
			double pe = kayenta_metric(kc_err, kb_err, kn);
			double pl = kayenta_metric(kc_lat, kb_lat, kn);

			for (int a = 0; a < NALPHA; a++) {
				int high = (pe < kay_alpha[a]) + (pl < kay_alpha[a]);
				double score = 100.0 * (2 - high) / 2.0; /* pass 95, marginal 75 */

				if (!out->kay[a] && score < 75.0)
					out->kay[a] = t;
			}
			out->detect[J_KAYENTA] = out->kay[0];
		}
	}
}

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

static int nseeds = 1000, nintervals = 30;
static struct scenario *scs;
static size_t nscs;
static atomic_size_t next_sc;

/* Share of seeds detected and the median detection time (minutes) of one column. */
static void summarize(int *t, int n, double *fr, double *ttd)
{
	int k = 0;

	for (int i = 0; i < n; i++)
		if (t[i])
			t[k++] = t[i];
	*fr = (double)k / n;
	if (!k) {
		*ttd = NAN;
		return;
	}
	qsort(t, (size_t)k, sizeof(int), cmp_int);
	*ttd = (double)t[(k - 1) / 2] * INTERVAL_S / 60.0;
}

static void run_scenario(struct scenario *sc, size_t idx)
{
	int ncol = NJUDGES + nintervals + NALPHA + NMETH + 1, *col;
	int *ns = NULL, nn = 0;
	struct dists *ld = malloc(sizeof(*ld));

	col = calloc((size_t)ncol * (size_t)nseeds, sizeof(int));
	if (!ld || !col)
		abort();
	latdist_init(&ld->base, LAT_MED_US, LAT_SIGMA);
	latdist_init(&ld->canary, LAT_MED_US * sc->lat_mul, LAT_SIGMA);
	latdist_init(&ld->base_burst, LAT_MED_US * 1.5, LAT_SIGMA);
	latdist_init(&ld->canary_burst, LAT_MED_US * 1.5 * sc->lat_mul, LAT_SIGMA);
	for (int s = 0; s < nseeds; s++) {
		struct run_result rr;

		run_one(sc, ld, (uint64_t)idx * 1000003u + (uint64_t)s * 7919u + 1, nintervals,
		        &rr);
		for (int j = 0; j < NJUDGES; j++)
			col[j * nseeds + s] = rr.detect[j];
		for (int k = 1; k <= nintervals; k++)
			col[(NJUDGES + k - 1) * nseeds + s] = rr.thr_k[k];
		for (int a = 0; a < NALPHA; a++)
			col[(NJUDGES + nintervals + a) * nseeds + s] = rr.kay[a];
		for (int m = 0; m < NMETH; m++)
			col[(NJUDGES + nintervals + NALPHA + m) * nseeds + s] = rr.meth[m];
		if (rr.detect[J_OURS])
			col[(NJUDGES + nintervals + NALPHA + NMETH) * nseeds + nn++] = rr.n_at;
	}
	ns = col + (NJUDGES + nintervals + NALPHA + NMETH) * nseeds;
	if (nn) {
		qsort(ns, (size_t)nn, sizeof(int), cmp_int);
		sc->n_at = ns[(nn - 1) / 2];
	} else {
		sc->n_at = NAN;
	}
	for (int m = 0; m < NMETH; m++)
		summarize(col + (NJUDGES + nintervals + NALPHA + m) * nseeds, nseeds,
		          &sc->meth_fr[m], &sc->meth_ttd[m]);
	for (int j = 0; j < NJUDGES; j++)
		summarize(col + j * nseeds, nseeds, &sc->fr[j], &sc->ttd[j]);
	for (int k = 1; k <= nintervals; k++)
		summarize(col + (NJUDGES + k - 1) * nseeds, nseeds, &sc->thr_fr[k],
		          &sc->thr_ttd[k]);
	for (int a = 0; a < NALPHA; a++)
		summarize(col + (NJUDGES + nintervals + a) * nseeds, nseeds, &sc->kay_fr[a],
		          &sc->kay_ttd[a]);
	free(col);
	free(ld);
}

static void *worker(void *arg)
{
	size_t i;

	(void)arg;
	while ((i = atomic_fetch_add(&next_sc, 1)) < nscs)
		run_scenario(&scs[i], i);
	return NULL;
}

static void add(enum pattern p, double rps, double share, double base_err, double err_add,
                double err_mul, double lat_mul, bool literature, const char *what)
{
	struct scenario *s = &scs[nscs++];

	memset(s, 0, sizeof(*s));
	s->pattern = p;
	s->rps = rps;
	s->share = share;
	s->base_err = base_err;
	s->err_add = err_add;
	s->err_mul = err_mul;
	s->lat_mul = lat_mul;
	s->literature = literature;
	s->healthy = err_add == 0 && err_mul == 1.0 && lat_mul == 1.0;
	snprintf(s->name, sizeof(s->name), "%s %s", what, pattern_names[p]);
}

static void ttd_str(char *buf, size_t cap, double t)
{
	if (isnan(t))
		snprintf(buf, cap, "-");
	else
		snprintf(buf, cap, "%.0f", t);
}

static const struct scenario *healthy_of(const struct scenario *r)
{
	for (size_t i = 0; i < nscs; i++)
		if (scs[i].healthy && scs[i].pattern == r->pattern && scs[i].rps == r->rps &&
		    scs[i].share == r->share && scs[i].base_err == r->base_err)
			return &scs[i];
	return NULL;
}

/*
 * The references at an equal false-rollback rate: per (baseline, rps,
 * share), the threshold judge's failure count and Kayenta's alpha are set to
 * the least conservative grid values whose healthy false-rollback rate is
 * <= 1% (the rate ours guarantees), then applied to the regressions.
 */
static void calibrated(void)
{
	double pow_sum[NJUDGES] = {0}, ratio_sum = 0, slow_sum = 0;
	int n = 0, ge[2] = {0, 0}, nratio = 0, nslow = 0;
	char a[16], b[16], c[16];

	printf("\nreferences calibrated to a healthy false-rollback rate <= 1%% in the same "
	       "baseline/rps/share (threshold: failures to roll back; kayenta: alpha)\n\n");
	printf("%-38s | %-14s | %-18s | %-20s\n", "scenario", judge_names[0], "threshold (k)",
	       "kayenta (alpha)");
	for (size_t i = 0; i < nscs; i++) {
		const struct scenario *r = &scs[i], *h = healthy_of(r);
		int k = 0, al = -1;
		double pw[NJUDGES], tt[NJUDGES];

		if (r->healthy || !h)
			continue;
		for (int x = 1; x <= nintervals && !k; x++)
			if (h->thr_fr[x] <= 0.01)
				k = x;
		for (int x = 0; x < NALPHA && al < 0; x++)
			if (h->kay_fr[x] <= 0.01)
				al = x;
		pw[0] = r->fr[0];
		tt[0] = r->ttd[0];
		pw[1] = k ? r->thr_fr[k] : 0;
		tt[1] = k ? r->thr_ttd[k] : NAN;
		pw[2] = al >= 0 ? r->kay_fr[al] : 0;
		tt[2] = al >= 0 ? r->kay_ttd[al] : NAN;
		ttd_str(a, sizeof(a), tt[0]);
		ttd_str(b, sizeof(b), tt[1]);
		ttd_str(c, sizeof(c), tt[2]);
		printf("%-38s | %5.1f%% %4s m  | %5.1f%% %4s m (%2d) | %5.1f%% %4s m (%.0e)\n",
		       r->name, 100 * pw[0], a, 100 * pw[1], b, k, 100 * pw[2], c,
		       al >= 0 ? kay_alpha[al] : 0.0);
		n++;
		for (int j = 0; j < NJUDGES; j++)
			pow_sum[j] += pw[j];
		ge[0] += pw[0] >= pw[1];
		ge[1] += pw[0] >= pw[2];
		if (pw[0] >= 0.5 && pw[1] >= 0.5) {
			ratio_sum += tt[0] / tt[1];
			nratio++;
			if (tt[1] >
			    INTERVAL_S / 60.0) { /* the threshold needs more than one look */
				slow_sum += tt[0] / tt[1];
				nslow++;
			}
		}
	}
	if (!n)
		return;
	printf("\nat equal false-rollback rate (<= 1%%): mean power ours %.1f%%, threshold %.1f%%, "
	       "kayenta %.1f%%; ours >= threshold in %d, >= kayenta in %d of %d (goal: all)\n",
	       100 * pow_sum[0] / n, 100 * pow_sum[1] / n, 100 * pow_sum[2] / n, ge[0], ge[1], n);
	if (nratio)
		printf("median time to detect, ours / calibrated threshold, mean over the %d "
		       "regressions both detect >= 50%%: %.2f (goal: <= 0.5)\n",
		       nratio, ratio_sum / nratio);
	if (nslow)
		printf("... over the %d of them where the calibrated threshold judge needs more "
		       "than one look (at one look no judge can be faster): %.2f\n",
		       nslow, slow_sum / nslow);
}

/* The methods side by side (issue 18): worst healthy rate, power, time to detect. */
static void methods_table(void)
{
	double worst[NMETH] = {0}, pw[NMETH] = {0}, ttd_sum[NMETH] = {0};
	int n = 0, nt = 0;
	char a[16];

	printf("\nthe methods on the same streams (errors and latency at %g each; "
	       "gs: 90%% group-sequential over the %d looks + 10%% anytime)\n\n",
	       ALPHA, nintervals);
	printf("%-38s", "scenario");
	for (int m = 0; m < NMETH; m++)
		printf(" | %-12s", meth_names[m]);
	printf("\n");
	for (size_t i = 0; i < nscs; i++) {
		const struct scenario *r = &scs[i];
		bool all = true;

		printf("%-38s", r->name);
		for (int m = 0; m < NMETH; m++) {
			ttd_str(a, sizeof(a), r->meth_ttd[m]);
			if (r->healthy)
				printf(" | FR %5.1f%%   ", 100 * r->meth_fr[m]);
			else
				printf(" | %5.1f%% %3s m", 100 * r->meth_fr[m], a);
			if (r->healthy)
				worst[m] = fmax(worst[m], r->meth_fr[m]);
			else
				pw[m] += r->meth_fr[m];
			all = all && !isnan(r->meth_ttd[m]) && r->meth_fr[m] >= 0.5;
		}
		printf("\n");
		if (!r->healthy)
			n++;
		if (!r->healthy && all) {
			for (int m = 0; m < NMETH; m++)
				ttd_sum[m] += r->meth_ttd[m];
			nt++;
		}
	}
	printf("\n%-38s", "worst healthy FR / mean power / ttd");
	for (int m = 0; m < NMETH; m++)
		printf(" | %4.2f%% %4.1f%% %4.1f", 100 * worst[m], n ? 100 * pw[m] / n : 0.0,
		       nt ? ttd_sum[m] / nt : 0.0);
	printf("\n(ttd: mean of the median minutes over the %d regressions every method detects "
	       ">= 50%%)\n",
	       nt);
}

int main(int argc, char **argv)
{
	static const double rpss[] = {50, 5000}, shares[] = {0.01, 0.05, 0.25};
	struct {
		const char *what;
		double err, lat;
	} regs[] = {
	    {"healthy", 0, 1.0},      {"err +0.5pp", 0.005, 1.0}, {"err +2pp", 0.02, 1.0},
	    {"err +10pp", 0.10, 1.0}, {"lat +10%", 0, 1.10},      {"lat +50%", 0, 1.5},
	    {"lat x2", 0, 2.0},
	};
	pthread_t th[2];
	double worst_fr[NJUDGES] = {0}, pow_sum[NJUDGES] = {0};
	double ttd_ratio_sum = 0;
	int nreg = 0, nttd = 0, pow_ge[2] = {0, 0};
	char a[16], b[16], c[16];

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seeds") && i + 1 < argc)
			nseeds = (int)strtol(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--intervals") && i + 1 < argc)
			nintervals = (int)strtol(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--quick"))
			nseeds = 200;
		else if (!strcmp(argv[i], "--no-methods"))
			with_methods = false;
		else {
			fprintf(
			    stderr,
			    "usage: judge [--seeds N] [--intervals N] [--quick] [--no-methods]\n");
			return 2;
		}
	}
	if (nseeds < 1 || nintervals < 3 || nintervals > MAX_INTERVAL) {
		fprintf(stderr, "judge: bad --seeds or --intervals\n");
		return 2;
	}
	scs = calloc(160, sizeof(*scs));
	if (!scs)
		return 1;
	for (size_t g = 0; g < sizeof(regs) / sizeof(regs[0]); g++)
		for (int p = STEADY; p <= DIURNAL; p++) {
			/* every regression on steady traffic; healthy, +2pp and +50% also on the
			 * bursty and diurnal baselines */
			if (p != STEADY && !(regs[g].err == 0 && regs[g].lat == 1.0) &&
			    regs[g].err != 0.02 && regs[g].lat != 1.5)
				continue;
			for (size_t i = 0; i < 2; i++)
				for (size_t k = 0; k < 3; k++) {
					char what[48];

					snprintf(what, sizeof(what), "%s %g/s %g%%", regs[g].what,
					         rpss[i], shares[k] * 100);
					add((enum pattern)p, rpss[i], shares[k], BASE_ERR,
					    regs[g].err, 1.0, regs[g].lat, false, what);
				}
		}
	/* the literature's grid (issue 18): per-cohort traffic, steady */
	for (size_t i = 0; i < 3; i++)
		for (size_t bi = 0; bi < 2; bi++) {
			static const double per[] = {10, 100, 1000}, base[] = {0.001, 0.01};
			static const double muls[] = {1.0, 1.25, 1.5, 2.0};
			char what[64];

			for (size_t m = 0; m < 4; m++) {
				if (muls[m] == 1.0)
					snprintf(what, sizeof(what), "A/A %g/s/cohort %g%%", per[i],
					         base[bi] * 100);
				else
					snprintf(what, sizeof(what), "err x%g %g/s/cohort %g%%",
					         muls[m], per[i], base[bi] * 100);
				add(STEADY, per[i], 1.0, base[bi], 0, muls[m], 1.0, true, what);
			}
			for (size_t m = 0; m < 2 && bi == 1; m++) {
				snprintf(what, sizeof(what), "p99 +%d%% %g/s/cohort", m ? 25 : 10,
				         per[i]);
				add(STEADY, per[i], 1.0, base[bi], 0, 1.0, m ? 1.25 : 1.10, true,
				    what);
			}
		}
	pthread_create(&th[0], NULL, worker, NULL);
	pthread_create(&th[1], NULL, worker, NULL);
	pthread_join(th[0], NULL);
	pthread_join(th[1], NULL);

	printf("judge benchmark: %d seeds per scenario, %d looks of %d s (the step's horizon), "
	       "baseline error %.0f%% (the literature's grid: as named), latency log-normal median "
	       "%.0f ms sigma %.1f; ours: %s spending, %g per check\n",
	       nseeds, nintervals, INTERVAL_S, BASE_ERR * 100, LAT_MED_US / 1000, LAT_SIGMA,
	       judge_spending_name((enum judge_spending)SPENDING), ALPHA);
	printf("healthy: false-rollback rate; regressions: detection power, median time to "
	       "detect (min), ours' median canary requests at the rollback (n)\n\n");
	printf("%-38s | %-24s | %-14s | %-14s\n", "scenario (rps, canary share, baseline)",
	       judge_names[0], judge_names[1], judge_names[2]);
	printf("%.38s-+-%.24s-+-%.14s-+-%.14s\n", "----------------------------------------",
	       "--------------------------", "----------------", "----------------");
	for (size_t i = 0; i < nscs; i++) {
		struct scenario *s = &scs[i];

		if (s->healthy) {
			printf("%-38s | FR %5.1f%%                | FR %5.1f%%      | FR %5.1f%%\n",
			       s->name, 100 * s->fr[0], 100 * s->fr[1], 100 * s->fr[2]);
			for (int j = 0; j < NJUDGES; j++)
				worst_fr[j] = fmax(worst_fr[j], s->fr[j]);
			continue;
		}
		ttd_str(a, sizeof(a), s->ttd[0]);
		ttd_str(b, sizeof(b), s->ttd[1]);
		ttd_str(c, sizeof(c), s->ttd[2]);
		printf("%-38s | %5.1f%% %4s m n=%-8.0f | %5.1f%% %4s m  | %5.1f%% %4s m\n", s->name,
		       100 * s->fr[0], a, s->n_at, 100 * s->fr[1], b, 100 * s->fr[2], c);
		nreg++;
		for (int j = 0; j < NJUDGES; j++)
			pow_sum[j] += s->fr[j];
		pow_ge[0] += s->fr[0] >= s->fr[1];
		pow_ge[1] += s->fr[0] >= s->fr[2];
		if (s->fr[0] >= 0.5 && s->fr[1] >= 0.5) {
			ttd_ratio_sum += s->ttd[0] / s->ttd[1];
			nttd++;
		}
	}
	printf("\nworst false-rollback rate on healthy canaries: ours %.2f%%, threshold %.2f%%, "
	       "kayenta %.2f%% (goal: ours <= 1%%)\n",
	       100 * worst_fr[0], 100 * worst_fr[1], 100 * worst_fr[2]);
	printf("mean detection power over %d regressions: ours %.1f%%, threshold %.1f%%, "
	       "kayenta %.1f%%; ours >= threshold in %d, >= kayenta in %d of %d\n",
	       nreg, 100 * pow_sum[0] / nreg, 100 * pow_sum[1] / nreg, 100 * pow_sum[2] / nreg,
	       pow_ge[0], pow_ge[1], nreg);
	if (nttd)
		printf("median time to detect, ours / threshold, mean over the %d regressions both "
		       "detect >= 50%%: %.2f (goal: <= 0.5)\n",
		       nttd, ttd_ratio_sum / nttd);
	calibrated();
	if (with_methods)
		methods_table();
	free(scs);
	return 0;
}
