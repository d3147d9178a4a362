/*
 * health.h - active health checks of the versions' endpoints (SPEC 3
 * `health:`, docs/proxy.md "Active health checks").
 *
 * Every endpoint of a version with `health:` is probed with a GET of its
 * path every interval, run as a job of a pool this module owns (core/jobs.h),
 * so a probe never blocks the control loop and never runs on a worker.  A
 * status within `expect` answered within `timeout` passes; anything else
 * (another status, a timeout, a refused connection) fails.
 *
 * Counting, per endpoint of a version:
 *   unknown --pass--> up             (an unknown endpoint is in the pick)
 *   unknown/up --`unhealthy` failures in a row--> down
 *   down --`healthy` passes in a row--> up
 * A down endpoint leaves the pick: the module gives the traffic module the
 * list (traffic_set_down()), which derives a routing table whose version
 * lists it after the picked endpoints (proxy/table.h), so workers need no
 * per-request check.  The last endpoint of a version in the pick never
 * leaves it: it stays in, and its view says so ("kept").
 *
 * Reloads (health_configure()) keep the counts of endpoints still configured
 * with a check, drop the others (their jobs detached) and re-apply the
 * lists.  Threading: control thread only (the loop's).
 */
#ifndef PROXY_HEALTH_H
#define PROXY_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

struct loop;
struct traffic;
struct buf;

enum health_state {
	HEALTH_UNKNOWN, /* no verdict yet (or no check configured) */
	HEALTH_UP,
	HEALTH_DOWN,
};

/* "unknown", "up", "down". */
const char *health_state_name(enum health_state s);

/* The counts of one endpoint: a plain value, judged by health_counts_note(). */
struct health_counts {
	enum health_state state;
	uint32_t passes, fails; /* in a row */
};

/*
 * Notes one probe (pass or fail) against hc's thresholds.  Returns true
 * when c->state changed.
 */
bool health_counts_note(struct health_counts *c, const struct config_health *hc, bool pass);

/* status is within hc's expect range (0, no answer, never is). */
bool health_status_ok(const struct config_health *hc, int status);

/* What the API and the metrics show of one endpoint. */
struct health_view {
	enum health_state state;
	bool in_pick;            /* requests may go to it */
	bool kept;               /* down, but the last of its version in the pick */
	int64_t last_probe_ms;   /* wall clock of the last answer; 0: none yet */
	int last_status;         /* HTTP status of the last probe; 0: none */
	int64_t last_latency_ms; /* duration of the last probe */
	int64_t since_ms;        /* wall clock of the last state change; 0: none */
	uint32_t passes, fails;  /* in a row */
	char reason[320];        /* one sentence: why the state is what it is */
};

struct health;

/*
 * A module that probes from its own job pool of threads threads (created
 * with the first endpoint to check) and applies the endpoints it finds down
 * through traffic (borrowed), its ticks run by loop (borrowed).  loop or
 * traffic NULL (unit tests): no timer / nothing applied; threads 0: no pool
 * (probes are fed with health_note_probe()).  NULL when out of memory.
 */
struct health *health_new(struct loop *loop, struct traffic *traffic, unsigned threads);

/*
 * Stops the timer, abandons the probes in flight and joins the pool's
 * threads (no job is left running).  NULL is a no-op.
 */
void health_free(struct health *h);

/*
 * Follows cfg (borrowed for the call only: everything is copied): the
 * endpoints of every version with `health:`.  Counts of endpoints kept are
 * kept; new endpoints are probed at once.  Applies the resulting lists.
 * 0 or -ENOMEM (the previous set stays).
 */
int health_configure(struct health *h, const struct config *cfg);

/*
 * Notes a probe's outcome on endpoint (service, version, endpoint) as the
 * pool's answer would (status 0: no answer, err says why), then applies
 * the lists if they changed.  For tests and for the tick.  0, or -ENOENT
 * (not checked).
 */
int health_note_probe(struct health *h, const char *service, const char *version,
                      const char *endpoint, int status, int64_t latency_ms, const char *err,
                      int64_t wall_ms);

/*
 * The view of endpoint (service, version, endpoint): 0, or -ENOENT when
 * it has no check (out is then filled as unknown with a reason saying so).
 */
int health_view(const struct health *h, const char *service, const char *version,
                const char *endpoint, struct health_view *out);

/*
 * True when (service, version) has health checks and every one of its
 * endpoints is down: reason says which, since when (the built-in `health`
 * check of a rollout, rollout/engine.h); *since_ms (may be NULL) is the
 * wall clock at which the last of them went down.
 */
bool health_version_down(const struct health *h, const char *service, const char *version,
                         char *reason, size_t len, int64_t *since_ms);

/* The checked endpoints' counts by state, for /v1/health/detailed. */
void health_counts_by_state(const struct health *h, size_t *up, size_t *down, size_t *unknown);

/*
 * Appends canaryd_endpoint_up{service,version,endpoint} (1 in the pick and
 * not down, else 0) for every checked endpoint, Prometheus text.
 */
void health_write_prometheus(const struct health *h, struct buf *out);

#endif
