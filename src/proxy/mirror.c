#include "proxy/mirror.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/stats.h"

/* One worker's counters of one slot: a single writer. */
struct mslot_w {
	_Atomic uint64_t results[MIRROR_RESULTS];
	_Atomic uint64_t sent;
	_Atomic uint64_t faults[MIRROR_FAULT_KINDS];
	_Atomic uint64_t hp[HIST_BUCKETS], hs[HIST_BUCKETS];
	_Atomic uint64_t sum_p, sum_s;
};

struct mslot {
	char *service;
	struct mslot_w *w; /* [nworkers] */
	pthread_mutex_t ring_lock;
	struct mirror_mismatch ring[MIRROR_RING];
	unsigned ring_next, ring_n;
};

struct mirror_stats {
	unsigned nworkers;
	pthread_mutex_t lock; /* slot creation */
	_Atomic(struct mslot *) slots[MIRROR_MAX_SERVICES];
	atomic_uint nslots;
};

static const char *const result_names[MIRROR_RESULTS] = {
    "matched", "status_mismatch", "body_mismatch", "shadow_error", "dropped", "too_large", "method",
};

static const char *const fault_names[MIRROR_FAULT_KINDS] = {"abort", "delay", "delay_over_cap"};

const char *mirror_result_name(enum mirror_result r)
{
	return (unsigned)r < MIRROR_RESULTS ? result_names[r] : "unknown";
}

struct mirror_stats *mirror_stats_new(unsigned nworkers)
{
	struct mirror_stats *ms = calloc(1, sizeof(*ms));

	if (!ms)
		return NULL;
	ms->nworkers = nworkers ? nworkers : 1;
	pthread_mutex_init(&ms->lock, NULL);
	return ms;
}

void mirror_stats_free(struct mirror_stats *ms)
{
	if (!ms)
		return;
	for (unsigned i = 0; i < atomic_load(&ms->nslots); i++) {
		struct mslot *s = atomic_load(&ms->slots[i]);

		pthread_mutex_destroy(&s->ring_lock);
		free(s->service);
		free(s->w);
		free(s);
	}
	pthread_mutex_destroy(&ms->lock);
	free(ms);
}

int mirror_stats_find(const struct mirror_stats *ms, const char *service)
{
	unsigned n;

	if (!ms || !service)
		return -ENOENT;
	n = atomic_load_explicit(&ms->nslots, memory_order_acquire);
	for (unsigned i = 0; i < n; i++) {
		struct mslot *s = atomic_load_explicit(&ms->slots[i], memory_order_acquire);

		if (s && strcmp(s->service, service) == 0)
			return (int)i;
	}
	return -ENOENT;
}

int mirror_stats_slot(struct mirror_stats *ms, const char *service)
{
	struct mslot *s;
	unsigned n;
	int id;

	if (!ms || !service || !*service)
		return -EINVAL;
	pthread_mutex_lock(&ms->lock);
	id = mirror_stats_find(ms, service);
	if (id >= 0)
		goto out;
	n = atomic_load(&ms->nslots);
	if (n >= MIRROR_MAX_SERVICES) {
		id = -ENOSPC;
		goto out;
	}
	s = calloc(1, sizeof(*s));
	if (s) {
		s->service = strdup(service);
		s->w = calloc(ms->nworkers, sizeof(*s->w));
	}
	if (!s || !s->service || !s->w) {
		if (s) {
			free(s->service);
			free(s->w);
		}
		free(s);
		id = -ENOMEM;
		goto out;
	}
	pthread_mutex_init(&s->ring_lock, NULL);
	atomic_store_explicit(&ms->slots[n], s, memory_order_release);
	atomic_store_explicit(&ms->nslots, n + 1, memory_order_release);
	id = (int)n;
out:
	pthread_mutex_unlock(&ms->lock);
	return id;
}

static struct mslot *slot_get(const struct mirror_stats *ms, int slot)
{
	if (!ms || slot < 0 ||
	    (unsigned)slot >= atomic_load_explicit(&ms->nslots, memory_order_acquire))
		return NULL;
	return atomic_load_explicit(&((struct mirror_stats *)ms)->slots[slot],
	                            memory_order_acquire);
}

/* Single-writer increment: a relaxed load and store, no lock prefix. */
static inline void inc(_Atomic uint64_t *x, uint64_t d)
{
	atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + d,
	                      memory_order_relaxed);
}

static inline uint64_t ld(const _Atomic uint64_t *x)
{
	return atomic_load_explicit((_Atomic uint64_t *)x, memory_order_relaxed);
}

static struct mslot_w *wslot(struct mirror_stats *ms, int slot, unsigned w)
{
	struct mslot *s = slot_get(ms, slot);

	return s && w < ms->nworkers ? &s->w[w] : NULL;
}

void mirror_stats_count(struct mirror_stats *ms, int slot, unsigned w, enum mirror_result r)
{
	struct mslot_w *sw = wslot(ms, slot, w);

	if (sw && (unsigned)r < MIRROR_RESULTS)
		inc(&sw->results[r], 1);
}

void mirror_stats_sent(struct mirror_stats *ms, int slot, unsigned w)
{
	struct mslot_w *sw = wslot(ms, slot, w);

	if (sw)
		inc(&sw->sent, 1);
}

void mirror_stats_fault(struct mirror_stats *ms, int slot, unsigned w, enum mirror_fault_kind k)
{
	struct mslot_w *sw = wslot(ms, slot, w);

	if (sw && (unsigned)k < MIRROR_FAULT_KINDS)
		inc(&sw->faults[k], 1);
}

void mirror_stats_compared(struct mirror_stats *ms, int slot, unsigned w,
                           const struct mirror_mismatch *m)
{
	struct mslot *s = slot_get(ms, slot);
	struct mslot_w *sw;

	if (!s || w >= ms->nworkers || (unsigned)m->result >= MIRROR_RESULTS)
		return;
	sw = &s->w[w];
	inc(&sw->results[m->result], 1);
	inc(&sw->hp[hist_index(m->primary_us)], 1);
	inc(&sw->sum_p, m->primary_us);
	if (m->result != MIRROR_SHADOW_ERROR) {
		inc(&sw->hs[hist_index(m->shadow_us)], 1);
		inc(&sw->sum_s, m->shadow_us);
	}
	if (m->result == MIRROR_MATCHED)
		return;
	/* a worker never waits: a busy ring (a reader copying it) skips the entry */
	if (pthread_mutex_trylock(&s->ring_lock) != 0)
		return;
	s->ring[s->ring_next] = *m;
	s->ring_next = (s->ring_next + 1) % MIRROR_RING;
	if (s->ring_n < MIRROR_RING)
		s->ring_n++;
	pthread_mutex_unlock(&s->ring_lock);
}

int mirror_stats_read(const struct mirror_stats *ms, int slot, struct mirror_snapshot *out)
{
	struct mslot *s = slot_get(ms, slot);

	memset(out, 0, sizeof(*out));
	if (!s)
		return -ENOENT;
	for (unsigned w = 0; w < ms->nworkers; w++) {
		const struct mslot_w *sw = &s->w[w];

		out->mirrored += ld(&sw->sent);
		out->matched += ld(&sw->results[MIRROR_MATCHED]);
		out->status_mismatch += ld(&sw->results[MIRROR_STATUS_MISMATCH]);
		out->body_mismatch += ld(&sw->results[MIRROR_BODY_MISMATCH]);
		out->shadow_error += ld(&sw->results[MIRROR_SHADOW_ERROR]);
		out->dropped += ld(&sw->results[MIRROR_DROPPED]);
		out->too_large += ld(&sw->results[MIRROR_TOO_LARGE]);
		out->method += ld(&sw->results[MIRROR_METHOD]);
		for (unsigned k = 0; k < MIRROR_FAULT_KINDS; k++)
			out->faults[k] += ld(&sw->faults[k]);
		for (unsigned b = 0; b < HIST_BUCKETS; b++) {
			uint64_t p = ld(&sw->hp[b]), h = ld(&sw->hs[b]);

			out->primary.counts[b] += p;
			out->primary.n += p;
			out->shadow.counts[b] += h;
			out->shadow.n += h;
		}
		out->primary.sum_us += ld(&sw->sum_p);
		out->shadow.sum_us += ld(&sw->sum_s);
	}
	return 0;
}

size_t mirror_stats_mismatches(struct mirror_stats *ms, int slot, struct mirror_mismatch *out,
                               size_t max)
{
	struct mslot *s = slot_get(ms, slot);
	size_t n = 0;

	if (!s)
		return 0;
	pthread_mutex_lock(&s->ring_lock);
	for (unsigned i = 0; i < s->ring_n && n < max; i++)
		out[n++] = s->ring[(s->ring_next + MIRROR_RING - 1 - i) % MIRROR_RING];
	pthread_mutex_unlock(&s->ring_lock);
	return n;
}

enum mirror_result mirror_classify(int primary_status, int shadow_status, int shadow_failed,
                                   int compare_body, uint64_t ph, uint64_t sh)
{
	if (shadow_failed || shadow_status < 100 || shadow_status > 599)
		return MIRROR_SHADOW_ERROR;
	if (primary_status / 100 != shadow_status / 100)
		return MIRROR_STATUS_MISMATCH;
	if (compare_body && ph != sh)
		return MIRROR_BODY_MISMATCH;
	return MIRROR_MATCHED;
}

uint64_t mirror_hash(uint64_t h, const void *p, size_t len)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < len; i++) {
		h ^= c[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* ---- Prometheus ---- */

/* Nothing recorded: the slot is left out of /metrics. */
static int snap_empty(const struct mirror_snapshot *s)
{
	uint64_t f = 0;

	for (unsigned k = 0; k < MIRROR_FAULT_KINDS; k++)
		f += s->faults[k];
	return !s->mirrored && !s->dropped && !s->too_large && !s->method && !f;
}

static int put_hist(struct buf *out, const char *service, const char *side, const struct hist *h)
{
	struct buf lb;
	int rc;

	buf_init(&lb, out->cap);
	if (!(rc = buf_append_lit(&lb, "service=\"")) && !(rc = metrics_prom_label(&lb, service)) &&
	    !(rc = buf_append_lit(&lb, "\",side=\"")) && !(rc = buf_append_str(&lb, side)) &&
	    !(rc = buf_append_lit(&lb, "\"")))
		rc = metrics_prom_hist(out, "canaryd_mirror_duration_seconds",
		                       str_make(buf_head(&lb), buf_used(&lb)), h);
	buf_release(&lb);
	return rc;
}

int mirror_stats_write_prometheus(const struct mirror_stats *ms, struct buf *out)
{
	unsigned n = ms ? atomic_load_explicit(&ms->nslots, memory_order_acquire) : 0;
	struct mirror_snapshot *snap;
	int rc = 0;

	if (!n)
		return 0;
	snap = malloc(sizeof(*snap));
	if (!snap)
		return -ENOMEM;
	rc = buf_append_str(out, "# HELP canaryd_mirror_total Mirrored (shadow) requests by "
	                         "comparison result.\n# TYPE canaryd_mirror_total counter\n");
	for (unsigned i = 0; i < n && !rc; i++) {
		struct mslot *s = slot_get(ms, (int)i);
		uint64_t v[MIRROR_RESULTS];

		mirror_stats_read(ms, (int)i, snap);
		if (snap_empty(snap))
			continue;
		v[MIRROR_MATCHED] = snap->matched;
		v[MIRROR_STATUS_MISMATCH] = snap->status_mismatch;
		v[MIRROR_BODY_MISMATCH] = snap->body_mismatch;
		v[MIRROR_SHADOW_ERROR] = snap->shadow_error;
		v[MIRROR_DROPPED] = snap->dropped;
		v[MIRROR_TOO_LARGE] = snap->too_large;
		v[MIRROR_METHOD] = snap->method;
		for (unsigned r = 0; r < MIRROR_RESULTS && !rc; r++) {
			if (!(rc = buf_append_str(out, "canaryd_mirror_total{service=\"")) &&
			    !(rc = metrics_prom_label(out, s->service)))
				rc = buf_printf(out, "\",result=\"%s\"} %" PRIu64 "\n",
				                result_names[r], v[r]);
		}
	}
	if (!rc)
		rc = buf_append_str(
		    out, "# HELP canaryd_mirror_duration_seconds Latency of the compared "
		         "requests, primary and shadow.\n"
		         "# TYPE canaryd_mirror_duration_seconds histogram\n");
	for (unsigned i = 0; i < n && !rc; i++) {
		struct mslot *s = slot_get(ms, (int)i);

		mirror_stats_read(ms, (int)i, snap);
		if (snap_empty(snap))
			continue;
		if (!(rc = put_hist(out, s->service, "primary", &snap->primary)))
			rc = put_hist(out, s->service, "shadow", &snap->shadow);
	}
	if (!rc)
		rc = buf_append_str(out, "# HELP canaryd_faults_total Injected faults by kind.\n"
		                         "# TYPE canaryd_faults_total counter\n");
	for (unsigned i = 0; i < n && !rc; i++) {
		struct mslot *s = slot_get(ms, (int)i);

		mirror_stats_read(ms, (int)i, snap);
		if (snap_empty(snap))
			continue;
		for (unsigned k = 0; k < MIRROR_FAULT_KINDS && !rc; k++) {
			if (!(rc = buf_append_str(out, "canaryd_faults_total{service=\"")) &&
			    !(rc = metrics_prom_label(out, s->service)))
				rc = buf_printf(out, "\",kind=\"%s\"} %" PRIu64 "\n",
				                fault_names[k], snap->faults[k]);
		}
	}
	free(snap);
	return rc;
}
