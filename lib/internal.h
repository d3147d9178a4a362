/*
 * internal.h - what lib/client.c (the stream thread, lifecycle, status) and
 * lib/eval.c (the evaluation functions) share.  Not installed.
 */
#ifndef LIB_INTERNAL_H
#define LIB_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "canary/canary.h"
#include "core/snapshot.h"
#include "flags/flag.h"
#include "ruleset.h"
#include "sse.h"

/* One published ruleset: immutable, refcounted, swapped whole (core/snapshot.h). */
struct csnap {
	struct snap_obj obj; /* first */
	struct flagset *set;
	uint64_t revision; /* the server's revision (obj.revision is the publish count) */
};

struct canary_client {
	uint64_t id; /* process-unique: names the client in evaluating threads' caches */
	struct snapshot snap;

	/* options, copied */
	char *base_url, *stream_url, *auth_header, *cache_path;
	canary_change_fn on_change;
	void *user;
	unsigned backoff_min_ms, backoff_max_ms, connect_timeout_ms, idle_timeout_ms;
	size_t max_event_bytes;

	/* the stream thread */
	pthread_t thread;
	int started;
	atomic_int stopping;
	void *multi;       /* CURLM *, created with the client so stop can wake it */
	struct ruleset rs; /* the stream thread's state (canary_client_new's before start) */
	struct sse_parser sse;
	int cache_unannounced; /* a cached ruleset was loaded: tell on_change at start */
	int no_resume;         /* next connection asks for a full ruleset */
	uint64_t rng;          /* backoff jitter */

	/* status, under lock */
	pthread_mutex_t lock;
	struct canary_status st;
};

/* Publishes set (stolen) at the server's revision rev; NULL set is ignored. */
int client_publish(struct canary_client *c, struct flagset *set, uint64_t rev);

#endif
