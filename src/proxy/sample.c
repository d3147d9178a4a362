/*
 * sample.c - per worker rings of the last requests each version served
 * (sample.h).
 *
 * Writer (the worker): seq becomes odd, the entry is stored, seq becomes
 * even again (release).  Reader: seq before (acquire), copy, seq after;
 * an odd or changed seq means the slot was being written: skipped.
 */
#include "proxy/sample.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct sample_slot {
	_Atomic uint32_t seq; /* odd while being written; 0: never written */
	uint64_t n;           /* the record's number in its ring (orders equal times) */
	struct proxy_sample e;
};

/* A copied entry with its ring number, for sorting. */
struct sample_copy {
	uint64_t n;
	struct proxy_sample e;
};

struct sample_ring {
	_Atomic uint64_t n; /* records so far; the newest is slot (n - 1) % RING */
	struct sample_slot slot[PROXY_SAMPLE_RING];
};

struct sample_store {
	unsigned nworkers;
	_Atomic(struct sample_ring *) *rings; /* [nworkers * PROXY_MAX_SERIES] */
};

struct sample_store *sample_store_new(unsigned nworkers)
{
	struct sample_store *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->nworkers = nworkers;
	s->rings = calloc((size_t)nworkers * PROXY_MAX_SERIES, sizeof(*s->rings));
	if (!s->rings) {
		free(s);
		return NULL;
	}
	return s;
}

void sample_store_free(struct sample_store *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < (size_t)s->nworkers * PROXY_MAX_SERIES; i++)
		free(atomic_load_explicit(&s->rings[i], memory_order_relaxed));
	free(s->rings);
	free(s);
}

void sample_record(struct sample_store *s, unsigned w, int series, const struct proxy_sample *e)
{
	_Atomic(struct sample_ring *) *at;
	struct sample_ring *r;
	struct sample_slot *sl;
	uint64_t n;
	uint32_t seq;

	if (!s || w >= s->nworkers || series < 0 || series >= PROXY_MAX_SERIES)
		return;
	at = &s->rings[(size_t)w * PROXY_MAX_SERIES + (size_t)series];
	r = atomic_load_explicit(at, memory_order_relaxed);
	if (!r) {
		r = calloc(1, sizeof(*r));
		if (!r)
			return;
		atomic_store_explicit(at, r, memory_order_release);
	}
	n = atomic_load_explicit(&r->n, memory_order_relaxed);
	sl = &r->slot[n % PROXY_SAMPLE_RING];
	seq = atomic_load_explicit(&sl->seq, memory_order_relaxed);
	atomic_store_explicit(&sl->seq, seq + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	sl->n = n;
	sl->e = *e;
	atomic_store_explicit(&sl->seq, seq + 2, memory_order_release);
	atomic_store_explicit(&r->n, n + 1, memory_order_release);
}

/* Newest first: later completion; at the same time, the later record. */
static int sample_cmp_newest(const void *a, const void *b)
{
	const struct sample_copy *x = a, *y = b;

	if (x->e.time_us != y->e.time_us)
		return x->e.time_us < y->e.time_us ? 1 : -1;
	if (x->n != y->n)
		return x->n < y->n ? 1 : -1;
	return 0;
}

int sample_read(struct sample_store *s, int series, struct proxy_sample *out, int max)
{
	struct sample_copy *all;
	size_t n = 0;
	int ret;

	if (series < 0 || series >= PROXY_MAX_SERIES)
		return -ERANGE;
	if (max <= 0)
		return 0;
	all = malloc(sizeof(*all) * PROXY_SAMPLE_RING * s->nworkers);
	if (!all)
		return -ENOMEM;
	for (unsigned w = 0; w < s->nworkers; w++) {
		struct sample_ring *r = atomic_load_explicit(
		    &s->rings[(size_t)w * PROXY_MAX_SERIES + (size_t)series], memory_order_acquire);
		uint64_t count;

		if (!r)
			continue;
		count = atomic_load_explicit(&r->n, memory_order_acquire);
		if (count > PROXY_SAMPLE_RING)
			count = PROXY_SAMPLE_RING;
		for (uint64_t i = 0; i < PROXY_SAMPLE_RING && i < count; i++) {
			struct sample_slot *sl = &r->slot[i];
			uint32_t before = atomic_load_explicit(&sl->seq, memory_order_acquire);

			if (before == 0 || (before & 1))
				continue;
			all[n].n = sl->n;
			all[n].e = sl->e;
			atomic_thread_fence(memory_order_acquire);
			if (atomic_load_explicit(&sl->seq, memory_order_relaxed) != before)
				continue; /* rewritten while copied */
			n++;
		}
	}
	qsort(all, n, sizeof(*all), sample_cmp_newest);
	ret = n < (size_t)max ? (int)n : max;
	for (int i = 0; i < ret; i++)
		out[i] = all[i].e;
	free(all);
	return ret;
}
