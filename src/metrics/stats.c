#include "metrics/stats.h"

#include "metrics/hll.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WORKERS 4096u
#define MAX_SERIES  (1u << 20)
#define CACHE_LINE  64

/*
 * One (series, worker, cohort) slot.  Single writer: its worker.  Aligned
 * to a cache line so two workers never write the same line.
 */
struct slot {
	alignas(CACHE_LINE) _Atomic uint64_t requests;
	_Atomic uint64_t by_class[METRICS_CLASSES];
	_Atomic uint64_t errors;
	_Atomic uint64_t proxy_errors;
	_Atomic uint64_t upstream[METRICS_ERR_COUNT];
	_Atomic uint64_t sum_us;
	_Atomic uint64_t hist[HIST_BUCKETS];
};

/*
 * The split's units of one (series, worker, cohort in {canary, baseline})
 * since the series' generation `gen` began.  Single writer: its worker.
 */
struct split_slot {
	alignas(CACHE_LINE) _Atomic uint32_t gen;
	_Atomic uint64_t requests;
	struct hll keys;
};

#define SPLIT_COHORTS 2 /* canary, baseline */

struct series {
	char *service;
	char *version;
	void *raw;                  /* allocation behind slots (slots is aligned inside) */
	struct slot *slots;         /* [worker * COHORT_COUNT + cohort] */
	_Atomic uint32_t split_gen; /* bumped by metrics_split_reset() */
	void *split_raw;            /* allocation behind split (aligned inside) */
	struct split_slot *split;   /* [worker * SPLIT_COHORTS + split_index()] */
};

struct metrics_registry {
	unsigned nworkers;
	unsigned max_series;
	_Atomic unsigned nseries; /* published count; series[0..nseries) are set */
	pthread_mutex_t lock;     /* serialises creation only */
	/* fixed at max_series so it never moves under a reader; entries are
	 * published with a release store and read with acquire */
	_Atomic(struct series *) series[];
};

static const char *const err_names[METRICS_ERR_COUNT] = {
    [METRICS_ERR_NONE] = "none",
    [METRICS_ERR_CONNECT_REFUSED] = "connect_refused",
    [METRICS_ERR_CONNECT_TIMEOUT] = "connect_timeout",
    [METRICS_ERR_RESET] = "reset",
    [METRICS_ERR_RESPONSE_TIMEOUT] = "response_timeout",
    [METRICS_ERR_BAD_RESPONSE] = "bad_response",
    [METRICS_ERR_NO_ENDPOINT] = "no_endpoint",
};

const char *metrics_err_name(enum metrics_err kind)
{
	if ((unsigned)kind >= METRICS_ERR_COUNT)
		return "unknown";
	return err_names[kind];
}

struct metrics_registry *metrics_registry_new(unsigned nworkers, unsigned max_series)
{
	struct metrics_registry *reg;

	if (nworkers == 0 || nworkers > MAX_WORKERS || max_series == 0 || max_series > MAX_SERIES)
		return NULL;
	reg = calloc(1, sizeof(*reg) + (size_t)max_series * sizeof(reg->series[0]));
	if (!reg)
		return NULL;
	reg->nworkers = nworkers;
	reg->max_series = max_series;
	atomic_init(&reg->nseries, 0);
	for (unsigned i = 0; i < max_series; i++)
		atomic_init(&reg->series[i], NULL);
	if (pthread_mutex_init(&reg->lock, NULL) != 0) {
		free(reg);
		return NULL;
	}
	return reg;
}

static void series_free(struct series *s)
{
	if (!s)
		return;
	free(s->service);
	free(s->version);
	free(s->raw);
	free(s->split_raw);
	free(s);
}

void metrics_registry_free(struct metrics_registry *reg)
{
	unsigned n;

	if (!reg)
		return;
	n = atomic_load_explicit(&reg->nseries, memory_order_acquire);
	for (unsigned i = 0; i < n; i++)
		series_free(atomic_load_explicit(&reg->series[i], memory_order_relaxed));
	pthread_mutex_destroy(&reg->lock);
	free(reg);
}

static int name_ok(const char *s)
{
	return s && s[0] && strnlen(s, METRICS_NAME_MAX + 1) <= METRICS_NAME_MAX;
}

/* Caller holds reg->lock (or is the only thread creating series). */
static int find_locked(struct metrics_registry *reg, const char *service, const char *version)
{
	unsigned n = atomic_load_explicit(&reg->nseries, memory_order_relaxed);

	for (unsigned i = 0; i < n; i++) {
		struct series *s = atomic_load_explicit(&reg->series[i], memory_order_relaxed);

		if (strcmp(s->service, service) == 0 && strcmp(s->version, version) == 0)
			return (int)i;
	}
	return -ENOENT;
}

static struct series *series_new(unsigned nworkers, const char *service, const char *version)
{
	struct series *s = calloc(1, sizeof(*s));
	size_t nslots = (size_t)nworkers * COHORT_COUNT;
	uintptr_t p;

	if (!s)
		return NULL;
	s->service = strdup(service);
	s->version = strdup(version);
	/* calloc, not aligned_alloc + memset: large zeroed allocations come
	 * from fresh mmap pages, so slots of cohorts never used (shadow on a
	 * service that is never mirrored...) cost no resident memory */
	s->raw = calloc(1, nslots * sizeof(struct slot) + CACHE_LINE);
	/* zeroed sketches at generation 0, the series' first */
	s->split_raw =
	    calloc(1, (size_t)nworkers * SPLIT_COHORTS * sizeof(struct split_slot) + CACHE_LINE);
	if (!s->service || !s->version || !s->raw || !s->split_raw) {
		series_free(s);
		return NULL;
	}
	p = ((uintptr_t)s->raw + CACHE_LINE - 1) & ~(uintptr_t)(CACHE_LINE - 1);
	s->slots = (struct slot *)p;
	p = ((uintptr_t)s->split_raw + CACHE_LINE - 1) & ~(uintptr_t)(CACHE_LINE - 1);
	s->split = (struct split_slot *)p;
	return s;
}

int metrics_series_id(struct metrics_registry *reg, const char *service, const char *version)
{
	struct series *s;
	unsigned n;
	int id;

	if (!reg || !name_ok(service) || !name_ok(version))
		return -EINVAL;
	pthread_mutex_lock(&reg->lock);
	id = find_locked(reg, service, version);
	if (id >= 0)
		goto out_unlock;
	n = atomic_load_explicit(&reg->nseries, memory_order_relaxed);
	if (n >= reg->max_series) {
		id = -ENOSPC;
		goto out_unlock;
	}
	s = series_new(reg->nworkers, service, version);
	if (!s) {
		id = -ENOMEM;
		goto out_unlock;
	}
	/* zeroed slots and names are visible before the pointer */
	atomic_store_explicit(&reg->series[n], s, memory_order_release);
	atomic_store_explicit(&reg->nseries, n + 1, memory_order_release);
	id = (int)n;
out_unlock:
	pthread_mutex_unlock(&reg->lock);
	return id;
}

int metrics_series_find(struct metrics_registry *reg, const char *service, const char *version)
{
	int id;

	if (!reg || !service || !version)
		return -ENOENT;
	pthread_mutex_lock(&reg->lock);
	id = find_locked(reg, service, version);
	pthread_mutex_unlock(&reg->lock);
	return id;
}

unsigned metrics_series_count(const struct metrics_registry *reg)
{
	return atomic_load_explicit(&reg->nseries, memory_order_acquire);
}

static struct series *series_get(const struct metrics_registry *reg, int series)
{
	if (series < 0 || (unsigned)series >= reg->max_series)
		return NULL;
	return atomic_load_explicit(&reg->series[series], memory_order_acquire);
}

int metrics_series_name(const struct metrics_registry *reg, int series, const char **service,
                        const char **version)
{
	struct series *s = series_get(reg, series);

	if (!s)
		return -ENOENT;
	if (service)
		*service = s->service;
	if (version)
		*version = s->version;
	return 0;
}

/* Single-writer increment: a relaxed load and store, no lock prefix. */
static inline void bump(_Atomic uint64_t *x, uint64_t d)
{
	atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + d,
	                      memory_order_relaxed);
}

void metrics_record(struct metrics_registry *reg, unsigned worker, int series, enum cohort cohort,
                    int status, uint64_t latency_us, enum metrics_err kind)
{
	struct series *s;
	struct slot *sl;
	unsigned cls = status >= 100 && status <= 599 ? (unsigned)status / 100 : 0;

	if (worker >= reg->nworkers || (unsigned)cohort >= COHORT_COUNT)
		return;
	s = series_get(reg, series);
	if (!s)
		return;
	sl = &s->slots[(size_t)worker * COHORT_COUNT + cohort];

	/* requests first, then a release fence: a reader that sees any of the
	 * later counts also sees this request (metrics_read's acquire fence),
	 * so a snapshot never has more errors than requests.  On x86 the fence
	 * is only a compiler barrier. */
	bump(&sl->requests, 1);
	atomic_thread_fence(memory_order_release);
	bump(&sl->by_class[cls], 1);
	if (cls == 5 || kind != METRICS_ERR_NONE)
		bump(&sl->errors, 1);
	if (kind != METRICS_ERR_NONE) {
		bump(&sl->proxy_errors, 1);
		if ((unsigned)kind < METRICS_ERR_COUNT)
			bump(&sl->upstream[kind], 1);
	}
	bump(&sl->sum_us, latency_us);
	bump(&sl->hist[hist_index(latency_us)], 1);
}

static inline uint64_t ld(const _Atomic uint64_t *x)
{
	return atomic_load_explicit((_Atomic uint64_t *)x, memory_order_relaxed);
}

/* out += slot; requests read last, after an acquire fence (see record). */
static void slot_add(const struct slot *sl, struct metrics_cohort_snapshot *out)
{
	for (unsigned c = 0; c < METRICS_CLASSES; c++)
		out->by_class[c] += ld(&sl->by_class[c]);
	out->errors += ld(&sl->errors);
	out->proxy_errors += ld(&sl->proxy_errors);
	for (unsigned k = 1; k < METRICS_ERR_COUNT; k++)
		out->upstream[k] += ld(&sl->upstream[k]);
	out->hist.sum_us += ld(&sl->sum_us);
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		uint64_t c = ld(&sl->hist[i]);

		out->hist.counts[i] += c;
		out->hist.n += c;
	}
	atomic_thread_fence(memory_order_acquire);
	out->requests += ld(&sl->requests);
}

int metrics_read(const struct metrics_registry *reg, int series, enum cohort cohort,
                 struct metrics_cohort_snapshot *out)
{
	struct series *s;

	if ((unsigned)cohort >= COHORT_COUNT)
		return -EINVAL;
	s = series_get(reg, series);
	if (!s)
		return -ENOENT;
	memset(out, 0, sizeof(*out));
	for (unsigned w = 0; w < reg->nworkers; w++)
		slot_add(&s->slots[(size_t)w * COHORT_COUNT + cohort], out);
	return 0;
}

/* The split slot index of cohort, or -1 when the split guard ignores it. */
static int split_index(enum cohort cohort)
{
	return cohort == COHORT_CANARY ? 0 : cohort == COHORT_BASELINE ? 1 : -1;
}

void metrics_split_record(struct metrics_registry *reg, unsigned worker, int series,
                          enum cohort cohort, uint32_t key_hash)
{
	int k = split_index(cohort);
	struct split_slot *sl;
	struct series *s;
	uint32_t gen;

	if (worker >= reg->nworkers || k < 0)
		return;
	s = series_get(reg, series);
	if (!s)
		return;
	sl = &s->split[(size_t)worker * SPLIT_COHORTS + (size_t)k];
	gen = atomic_load_explicit(&s->split_gen, memory_order_relaxed);
	if (atomic_load_explicit(&sl->gen, memory_order_relaxed) != gen) {
		/* a reset happened: clear, then publish the generation (release),
		 * so a reader that accepts the slot never sees the old registers */
		hll_clear(&sl->keys);
		atomic_store_explicit(&sl->requests, 0, memory_order_relaxed);
		atomic_store_explicit(&sl->gen, gen, memory_order_release);
	}
	bump(&sl->requests, 1);
	hll_add(&sl->keys, key_hash);
}

void metrics_split_reset(struct metrics_registry *reg, int series)
{
	struct series *s = series_get(reg, series);

	if (s)
		atomic_fetch_add_explicit(&s->split_gen, 1, memory_order_relaxed);
}

int metrics_split_read(const struct metrics_registry *reg, int series, enum cohort cohort,
                       struct metrics_split_snapshot *out)
{
	int k = split_index(cohort);
	struct series *s;
	struct hll merged;
	uint32_t gen;

	if (k < 0)
		return -EINVAL;
	s = series_get(reg, series);
	if (!s)
		return -ENOENT;
	hll_clear(&merged);
	out->requests = 0;
	gen = atomic_load_explicit(&s->split_gen, memory_order_relaxed);
	for (unsigned w = 0; w < reg->nworkers; w++) {
		const struct split_slot *sl = &s->split[(size_t)w * SPLIT_COHORTS + (size_t)k];

		/* a slot of an older generation holds the previous count: skip */
		if (atomic_load_explicit((_Atomic uint32_t *)&sl->gen, memory_order_acquire) != gen)
			continue;
		out->requests += ld(&sl->requests);
		hll_merge(&merged, &sl->keys);
	}
	out->keys = hll_estimate(&merged);
	return 0;
}

static uint64_t sub_sat(uint64_t a, uint64_t b)
{
	return a > b ? a - b : 0;
}

void metrics_snapshot_delta(const struct metrics_cohort_snapshot *a,
                            const struct metrics_cohort_snapshot *b,
                            struct metrics_cohort_snapshot *out)
{
	out->requests = sub_sat(b->requests, a->requests);
	for (unsigned c = 0; c < METRICS_CLASSES; c++)
		out->by_class[c] = sub_sat(b->by_class[c], a->by_class[c]);
	out->errors = sub_sat(b->errors, a->errors);
	out->proxy_errors = sub_sat(b->proxy_errors, a->proxy_errors);
	for (unsigned k = 0; k < METRICS_ERR_COUNT; k++)
		out->upstream[k] = sub_sat(b->upstream[k], a->upstream[k]);
	if (out->errors > out->requests)
		out->errors = out->requests;
	if (out->proxy_errors > out->requests)
		out->proxy_errors = out->requests;
	hist_delta(&out->hist, &a->hist, &b->hist);
}

double metrics_error_rate(const struct metrics_cohort_snapshot *s)
{
	if (s->requests == 0)
		return NAN;
	return (double)s->errors / (double)s->requests;
}

double metrics_success_rate(const struct metrics_cohort_snapshot *s)
{
	if (s->requests == 0)
		return NAN;
	return (double)(s->requests - s->errors) / (double)s->requests;
}

double metrics_request_rate(const struct metrics_cohort_snapshot *s, double seconds)
{
	if (s->requests == 0 || !(seconds > 0.0))
		return NAN;
	return (double)s->requests / seconds;
}

double metrics_latency_quantile_us(const struct metrics_cohort_snapshot *s, double q)
{
	if (s->requests == 0 || s->hist.n == 0)
		return NAN;
	return (double)hist_quantile(&s->hist, q);
}

double metrics_latency_mean_us(const struct metrics_cohort_snapshot *s)
{
	if (s->requests == 0)
		return NAN;
	return hist_mean(&s->hist);
}

/* --- Prometheus text format 0.0.4 ---------------------------------------------------- */

/* Prometheus `le` bounds in microseconds, and as printed. */
static const struct {
	uint64_t us;
	const char *text;
} le_bounds[] = {
    {500, "0.0005"},  {1000, "0.001"},  {2500, "0.0025"}, {5000, "0.005"},  {10000, "0.01"},
    {25000, "0.025"}, {50000, "0.05"},  {100000, "0.1"},  {250000, "0.25"}, {500000, "0.5"},
    {1000000, "1"},   {2500000, "2.5"}, {5000000, "5"},   {10000000, "10"},
};

static const char *const class_codes[METRICS_CLASSES] = {"other", "1xx", "2xx",
                                                         "3xx",   "4xx", "5xx"};

int metrics_prom_label(struct buf *out, const char *s)
{
	const char *run = s;
	int rc;

	for (; *s; s++) {
		const char *esc = *s == '\\'   ? "\\\\"
		                  : *s == '"'  ? "\\\""
		                  : *s == '\n' ? "\\n"
		                               : NULL;

		if (!esc)
			continue;
		if ((rc = buf_append(out, run, (size_t)(s - run))) ||
		    (rc = buf_append_str(out, esc)))
			return rc;
		run = s + 1;
	}
	return buf_append(out, run, (size_t)(s - run));
}

/* `name{service="..",version=".."` (no closing brace); cohort if >= 0. */
static int put_series(struct buf *out, const char *name, const struct series *s, int cohort)
{
	int rc;

	if ((rc = buf_append_str(out, name)) || (rc = buf_append_str(out, "{service=\"")) ||
	    (rc = metrics_prom_label(out, s->service)) ||
	    (rc = buf_append_str(out, "\",version=\"")) ||
	    (rc = metrics_prom_label(out, s->version)) || (rc = buf_append_str(out, "\"")))
		return rc;
	if (cohort >= 0)
		rc = buf_printf(out, ",cohort=\"%s\"", cohort_name((enum cohort)cohort));
	return rc;
}

static int put_requests(struct buf *out, const struct series *s, int c,
                        const struct metrics_cohort_snapshot *snap)
{
	int rc = 0;

	for (unsigned k = 0; k < METRICS_CLASSES && !rc; k++) {
		if (k != 2 && snap->by_class[k] == 0)
			continue;
		if (!(rc = put_series(out, "canaryd_requests_total", s, c)))
			rc = buf_printf(out, ",code=\"%s\"} %" PRIu64 "\n", class_codes[k],
			                snap->by_class[k]);
	}
	return rc;
}

int metrics_prom_hist(struct buf *out, const char *name, struct str labels, const struct hist *h)
{
	const char *lp = labels.p ? labels.p : "";
	int ll = (int)labels.len, rc = 0;

	for (size_t b = 0; b <= sizeof(le_bounds) / sizeof(le_bounds[0]) && !rc; b++) {
		int last = b == sizeof(le_bounds) / sizeof(le_bounds[0]);

		rc = buf_printf(out, "%s_bucket{%.*s,le=\"%s\"} %" PRIu64 "\n", name, ll, lp,
		                last ? "+Inf" : le_bounds[b].text,
		                last ? h->n : hist_count_le(h, le_bounds[b].us));
	}
	if (rc || (rc = buf_printf(out, "%s_sum{%.*s} %" PRIu64 ".%06" PRIu64 "\n", name, ll, lp,
	                           h->sum_us / 1000000, h->sum_us % 1000000)))
		return rc;
	return buf_printf(out, "%s_count{%.*s} %" PRIu64 "\n", name, ll, lp, h->n);
}

static int put_duration(struct buf *out, const struct series *s, int c,
                        const struct metrics_cohort_snapshot *snap)
{
	struct buf lb;
	int rc;

	/* the series' labels once: put_series() with no name gives `{labels` */
	buf_init(&lb, out->cap);
	rc = put_series(&lb, "", s, c);
	if (!rc)
		rc = metrics_prom_hist(out, "canaryd_request_duration_seconds",
		                       str_make(buf_head(&lb) + 1, buf_used(&lb) - 1), &snap->hist);
	buf_release(&lb);
	return rc;
}

static int put_upstream(struct buf *out, const struct series *s,
                        const struct metrics_cohort_snapshot *snap)
{
	uint64_t by_kind[METRICS_ERR_COUNT] = {0};
	int rc = 0;

	for (int c = 0; c < COHORT_COUNT; c++)
		for (unsigned k = 1; k < METRICS_ERR_COUNT; k++)
			by_kind[k] += snap[c].upstream[k];
	for (unsigned k = 1; k < METRICS_ERR_COUNT && !rc; k++) {
		if (by_kind[k] == 0)
			continue;
		if (!(rc = put_series(out, "canaryd_upstream_errors_total", s, -1)))
			rc = buf_printf(out, ",kind=\"%s\"} %" PRIu64 "\n", err_names[k],
			                by_kind[k]);
	}
	return rc;
}

int metrics_write_prometheus(const struct metrics_registry *reg, struct buf *out)
{
	struct metrics_cohort_snapshot *snap;
	struct buf dur, up;
	unsigned n = metrics_series_count(reg);
	int rc;

	/* one read per (series, cohort) feeds all three families, so they agree;
	 * the families go to separate buffers because each must be contiguous */
	snap = malloc(COHORT_COUNT * sizeof(*snap));
	if (!snap)
		return -ENOMEM;
	buf_init(&dur, out->cap);
	buf_init(&up, out->cap);
	rc = buf_append_str(out, "# HELP canaryd_requests_total Proxied requests by status class.\n"
	                         "# TYPE canaryd_requests_total counter\n");
	if (!rc)
		rc = buf_append_str(
		    &dur, "# HELP canaryd_request_duration_seconds Proxied request latency, from "
		          "request received to response complete.\n"
		          "# TYPE canaryd_request_duration_seconds histogram\n");
	if (!rc)
		rc = buf_append_str(
		    &up, "# HELP canaryd_upstream_errors_total Responses produced by the "
		         "proxy because of an upstream failure, by kind.\n"
		         "# TYPE canaryd_upstream_errors_total counter\n");
	for (unsigned i = 0; i < n && !rc; i++) {
		struct series *s = series_get(reg, (int)i);

		for (int c = 0; c < COHORT_COUNT && !rc; c++) {
			metrics_read(reg, (int)i, (enum cohort)c, &snap[c]);
			if (snap[c].requests == 0)
				continue;
			if (!(rc = put_requests(out, s, c, &snap[c])))
				rc = put_duration(&dur, s, c, &snap[c]);
		}
		if (!rc)
			rc = put_upstream(&up, s, snap);
	}
	if (!rc)
		rc = buf_append(out, buf_head(&dur), buf_used(&dur));
	if (!rc)
		rc = buf_append(out, buf_head(&up), buf_used(&up));
	buf_release(&dur);
	buf_release(&up);
	free(snap);
	return rc;
}
