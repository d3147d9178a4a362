/*
 * sample.h - the canary request sample (issue 16): per worker and per
 * (service, version) metrics series, a ring of the last PROXY_SAMPLE_RING
 * requests that version served (request id, method, path, status, latency,
 * time), so the evidence of a decision can show the requests around it.
 *
 * Threads: each ring has one writer, the worker it belongs to
 * (sample_record(), no lock, no locked instruction; the ring is allocated on
 * that worker's first request to the series).  Readers on any other thread
 * (sample_read()) never block the writer: every slot carries a sequence
 * number (a seqlock per slot) and a slot being written, or rewritten while
 * it was copied, is skipped.  A ring is freed only with the store.
 *
 * Memory: sizeof(struct proxy_sample) * PROXY_SAMPLE_RING (~32 KiB) per
 * (worker, version) that served traffic, plus one pointer per (worker,
 * series) for the index.
 */
#ifndef PROXY_SAMPLE_H
#define PROXY_SAMPLE_H

#include <stddef.h>

#include "proxy/proxy.h"

struct sample_store;

/* A store for nworkers workers and series ids 0..PROXY_MAX_SERIES-1; NULL when out of memory. */
struct sample_store *sample_store_new(unsigned nworkers);
/* Frees it and every ring (no worker may record any more).  NULL is accepted. */
void sample_store_free(struct sample_store *s);

/*
 * Records one finished request of series on worker w: worker w only.
 * Out-of-range worker or series: ignored; the first record of a series
 * allocates its ring (when that fails the sample is dropped).
 */
void sample_record(struct sample_store *s, unsigned w, int series, const struct proxy_sample *e);

/*
 * Copies series' samples of every worker into out[0..max), newest first
 * (by completion time).  Returns the count (0 for a series never served,
 * -ERANGE for a series out of range, -ENOMEM).  Any thread but a worker.
 */
int sample_read(struct sample_store *s, int series, struct proxy_sample *out, int max);

#endif
