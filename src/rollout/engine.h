/*
 * engine.h - the rollout engine (SPEC 6): the state machine that moves the
 * config's rollouts through their steps, runs their threshold checks every
 * analysis interval, and rolls back.  docs/rollout.md is the design note.
 *
 *   idle -> progressing <-> paused -> completed | rolled_back | failed
 *
 * Threading: everything here runs on the control thread.  Nothing blocks:
 * rollout_engine_tick() is called by a timer (every ~100 ms) and only reads
 * snapshots, commits through the state layer and calls the traffic and
 * flags modules, which do not block either (they publish snapshots).
 *
 * Time: every now_ms is wall-clock UTC milliseconds since the epoch (the
 * persisted timers, `not_before` and `window` need wall time).
 *
 * Persistence: each rollout's runtime state is a store document of kind
 * "rollout" named after the rollout.  Every transition commits the document
 * and its events with one state_commit() (state/state.h), so in one store
 * transaction, BEFORE its action (a weight change) is applied; actions are
 * idempotent, so rollout_engine_load() after a crash
 * re-applies the persisted weights and continues without skipping or
 * repeating a step.  Events have subject "rollout/NAME"; verdicts are events
 * of kind "verdict" with the same subject.
 *
 * Errors: functions return 0 or a negative ERR_* (core/err.h) / errno;
 * only src/api/ turns them into HTTP statuses.
 */
#ifndef ROLLOUT_ENGINE_H
#define ROLLOUT_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/bucket.h"
#include "metrics/stats.h"

struct buf;
struct config;
struct config_hook;
struct job_result;
struct mirror_snapshot;
struct source_request;
struct state;
struct store;

enum rollout_state {
	ROLLOUT_IDLE,
	ROLLOUT_PROGRESSING,
	ROLLOUT_PAUSED,
	ROLLOUT_COMPLETED,
	ROLLOUT_ROLLED_BACK,
	ROLLOUT_FAILED,
};

enum rollout_control {
	ROLLOUT_START,
	ROLLOUT_PROMOTE,
	ROLLOUT_PROMOTE_FULL,
	ROLLOUT_PAUSE,
	ROLLOUT_RESUME,
	ROLLOUT_ABORT,
	ROLLOUT_RETRY,
	ROLLOUT_APPROVE,
};

/*
 * Everything external.  Required: state, read_cohort, and traffic (or its
 * test seam set_weight).
 *
 * The engine changes the world by calling the owning modules directly
 * (rollout/actions.c): traffic (weights, stable versions, shadow mirrors,
 * in-flight counts, table confirmation), flags (flag targets) and notifier
 * (webhooks).  The callbacks marked "seam" below do the same for a backend
 * without that module (the unit tests' fakes); a module pointer, when set,
 * wins over its seam callbacks.  The other callbacks are readings and job
 * runners.
 */
struct traffic;
struct flags;
struct notify;

struct rollout_backend {
	/*
	 * Required: the state layer every document and event is committed
	 * through (borrowed; reads use state_store()).  The engine subscribes
	 * to kind "rollout" to follow changes committed by other nodes.
	 */
	struct state *state;
	/* The services' traffic (proxy/traffic.h); borrowed.  NULL: the seam callbacks. */
	struct traffic *traffic;
	/* The feature flags (flags/registry.h), for flag targets; borrowed.  NULL: seam. */
	struct flags *flags;
	/* The rollouts' webhooks (rollout/notify.h); borrowed.  NULL: seam, or none. */
	struct notify *notifier;
	/*
	 * Seam for traffic_set_weight(): sets service's canary version to
	 * canary with weight (thousandths of a percent, 0..100000) and
	 * publishes the routing table.  Must be idempotent: the engine
	 * re-applies weights after a restart.  Returns 0 or a negative error.
	 */
	int (*set_weight)(void *ctx, const char *service, const char *canary, uint32_t weight,
	                  const char *actor);
	/*
	 * Seam for traffic_set_preview() (a preview step, blue-green): canary
	 * at weight 0 reached by the service's overrides only; the next
	 * set_weight ends it.  Optional: without traffic or it, preview steps
	 * are skipped.  0 or a negative error.
	 */
	int (*set_preview)(void *ctx, const char *service, const char *canary, const char *actor);
	/*
	 * Fills *out with the CUMULATIVE counters of (service, version, cohort);
	 * the engine takes per-interval deltas itself.  Returns 0 or a
	 * negative error (the interval is then skipped for that target).
	 */
	int (*read_cohort)(void *ctx, const char *service, const char *version, enum cohort cohort,
	                   struct metrics_cohort_snapshot *out);
	/*
	 * Optional (fleet mode, fleet/counters.h): a new JSON array of the live
	 * nodes whose counters read_cohort does not hold since since_ms (wall
	 * ms), the start of the interval being judged; NULL or empty: complete.
	 * A non-empty list marks the interval incomplete (docs/fleet.md).
	 */
	json_t *(*missing_nodes)(void *ctx, int64_t since_ms);
	/*
	 * Seam for notify_event(): called after an event was committed (kind
	 * "rollout.step", "rollout.rollback", "verdict", ...).  details is only
	 * borrowed.
	 */
	void (*notify)(void *ctx, const char *kind, const char *rollout, const json_t *details);
	/* Optional: the wall clock for API-driven controls; NULL = CLOCK_REALTIME. */
	int64_t (*now_ms)(void *ctx);
	/*
	 * Seam for traffic_wait_applied(): waits (at most timeout_us) until
	 * every data-plane worker routes with the last table set_weight
	 * published.  Returns 0, or
	 * -ETIMEDOUT.  Time to mitigate is measured up to its return.
	 */
	int (*wait_applied)(void *ctx, uint64_t timeout_us);
	/*
	 * Seam for traffic_stable_of(): the service's current stable version
	 * (it changes when a rollout completes); NULL or absent = the config's.
	 */
	const char *(*stable_of)(void *ctx, const char *service);
	/*
	 * Seam for traffic_set_stable(): makes version the service's stable
	 * version with no canary (completion, after bake).  Idempotent.  0 or
	 * a negative error.
	 */
	int (*set_stable)(void *ctx, const char *service, const char *version, const char *actor);
	/* Seam for traffic_inflight(): requests in flight to (service, version), or -1. */
	long (*inflight)(void *ctx, const char *service, const char *version);
	/*
	 * Optional: starts rollback hook h with argv (exec, templated) or body
	 * (webhook JSON); returns a job id > 0, or 0 when it could not be
	 * queued.  hook_poll as jobs_poll: 0 done (*out filled), 1 running,
	 * negative unknown.  Without them hooks are reported as not run.
	 */
	uint64_t (*hook_start)(void *ctx, const struct config_hook *h, const char *const *argv,
	                       const char *body);
	int (*hook_poll)(void *ctx, uint64_t id, struct job_result *out);
	/*
	 * Optional: runs one cohort's request of a query, http or exec check
	 * (analysis/source.h) as a job: a GET of req->url, or req->argv with
	 * only stdout captured, within req->timeout_ms; returns a job id > 0,
	 * or 0 when it could not be queued.  source_poll as jobs_poll (the
	 * engine releases a GET's body); source_forget drops a job whose result
	 * nobody will poll.  Without source_start and source_poll such checks
	 * give `error` verdicts.
	 */
	uint64_t (*source_start)(void *ctx, const struct source_request *req);
	int (*source_poll)(void *ctx, uint64_t id, struct job_result *out);
	void (*source_forget)(void *ctx, uint64_t id);
	/*
	 * Optional: writes the evidence bundle of rollout name (generation gen)
	 * and puts its directory in path.  0 or a negative error.
	 */
	int (*evidence)(void *ctx, const char *name, uint32_t gen, char *path, size_t pathlen);
	/*
	 * Optional (validate, issue 16): the last requests version of service
	 * served, newest first, at most max, as a new JSON array of
	 * {request_id, method, path, status, latency_ms, time_ms}
	 * (proxy_samples()); NULL or empty: none.  Put into the evidence at a
	 * rollback (event rollout.canary_requests).
	 */
	json_t *(*samples)(void *ctx, const char *service, const char *version, int max);
	/*
	 * Seam for flags_save / flags_set_percent / flags_restore (flag
	 * targets): flag_save returns the flag's state before the
	 * rollout (a new reference, opaque to the engine, persisted in the
	 * rollout's document; NULL when there is no such flag), flag_set sets
	 * the flag's fallthrough percentage (thousandths), flag_restore puts a
	 * saved state back (rollback).  0 or a negative error.  Without them
	 * flag targets are skipped with an event.
	 */
	json_t *(*flag_save)(void *ctx, const char *flag);
	int (*flag_set)(void *ctx, const char *flag, uint32_t weight, const char *actor);
	int (*flag_restore)(void *ctx, const char *flag, const json_t *saved, const char *actor);
	/*
	 * Shadow steps: set_shadow (seam for traffic_set_mirror()) mirrors percent (thousandths; 0
	 * stops the rollout's mirror) of service's traffic to version and
	 * publishes the table; read_shadow fills the service's CUMULATIVE mirror
	 * comparison counters (proxy/mirror.h; -ENOENT = nothing mirrored yet).
	 * 0 or a negative error.  Without traffic or set_shadow, shadow steps
	 * are skipped.
	 */
	int (*set_shadow)(void *ctx, const char *service, const char *version, uint32_t percent,
	                  const char *actor);
	int (*read_shadow)(void *ctx, const char *service, struct mirror_snapshot *out);
	/*
	 * Optional (the sample-ratio mismatch guard, analysis/srm.h):
	 * split_reset starts a new count of the units the bucket split placed
	 * in (service, version) (metrics_split_reset()); read_split fills the
	 * count of cohort (canary or baseline) since then
	 * (metrics_split_read(); an unknown series is an empty count).  The
	 * engine resets when a traffic step applies its weights, when it finds
	 * a target's weight changed since its count began, and after a
	 * mismatch.  0 or a negative error.  Without them there is no guard.
	 */
	void (*split_reset)(void *ctx, const char *service, const char *version);
	int (*read_split)(void *ctx, const char *service, const char *version, enum cohort cohort,
	                  struct metrics_split_snapshot *out);
	/*
	 * Optional (the built-in `health` check, proxy/health.h): true when
	 * (service, version) has active health checks and every one of its
	 * endpoints is down; reason (one sentence: which endpoints, since
	 * when) and *since_ms (wall ms the last went down) are filled then.
	 * A live canary it holds for is rolled back, as a failing check with
	 * on_fail rollback.  Without it there is no such check.
	 */
	bool (*endpoints_down)(void *ctx, const char *service, const char *version, char *reason,
	                       size_t len, int64_t *since_ms);
	void *ctx;
};

struct rollout_engine;

/*
 * Creates an engine for cfg's rollouts, all idle until rollout_engine_load()
 * finds their documents.  cfg and be are borrowed and must outlive the
 * engine (a config reload builds a new engine and loads it again).
 * Returns NULL when out of memory or be lacks a required member.
 */
struct rollout_engine *rollout_engine_new(const struct config *cfg,
                                          const struct rollout_backend *be);

/* Frees the engine (the store is untouched).  NULL is a no-op. */
void rollout_engine_free(struct rollout_engine *e);

/*
 * Reads every "rollout" document of a rollout in the config and resumes it:
 * state, step, timers, approvals and failure counters as persisted; the
 * persisted weights of active rollouts (and of a rollback whose weights
 * were not confirmed applied) are applied again.  Documents of rollouts no
 * longer in the config are ignored.  Returns 0, or a negative store error
 * (the rollouts read so far stay loaded).
 */
int rollout_engine_load(struct rollout_engine *e, int64_t now_ms);

/*
 * Advances every active rollout to now_ms: review deadlines, analysis
 * intervals (verdicts, `for`, on_fail), step gates and holds, completion.
 * Never blocks.  A failed store write leaves the rollout as it was; the
 * next tick tries again.
 */
void rollout_engine_tick(struct rollout_engine *e, int64_t now_ms);

/*
 * Applies a control to rollout `name` on behalf of actor (token name).
 * Returns 0 done, ERR_NOTFOUND no such rollout, ERR_STATE wrong state,
 * ERR_CONFLICT a target owned by another active rollout (start/retry) or a
 * commit the state layer's fence refused (fleet mode: not the leader),
 * ERR_FORBIDDEN approve by an identity the current approval step does not
 * list, ERR_UNAVAILABLE the store cannot be reached or ERR_STORE it refused
 * the write (nothing changed), -EINVAL an unknown control.  A human message
 * goes to msg (always NUL-terminated when msglen > 0), on success too.
 * Approving twice is 0 (idempotent).
 */
int rollout_engine_control(struct rollout_engine *e, const char *name, enum rollout_control c,
                           const char *actor, int64_t now_ms, char *msg, size_t msglen);

/* The largest rehearsal speed start accepts (a 30-day plan in ~26 s). */
#define ROLLOUT_REHEARSE_MAX 100000.0

/*
 * ROLLOUT_START with a rehearsal speed (`start --rehearse SPEED`): rehearse
 * 0 is a normal start; > 0 runs the plan with every duration (step for,
 * max_wait, the analysis interval, check for, review, bake, drain, verify,
 * validation windows, and not_before / window gates as offsets from the
 * start) divided by it, persisted with the run and kept by retry; every
 * event then carries details.rehearsal.  -EINVAL (msg says why) when
 * rehearse is negative, not a number or above ROLLOUT_REHEARSE_MAX; else
 * as rollout_engine_control().
 */
int rollout_engine_start(struct rollout_engine *e, const char *name, double rehearse,
                         const char *actor, int64_t now_ms, char *msg, size_t msglen);

/*
 * Rolls back every active (progressing or paused) rollout, for
 * POST /v1/rollback.  Returns how many were rolled back.
 */
int rollout_engine_rollback_all(struct rollout_engine *e, const char *actor, int64_t now_ms);

/*
 * The name of the active rollout owning service (a service target not yet
 * rolled back), or NULL.  The string lives as long as the config.
 */
const char *rollout_engine_owner(const struct rollout_engine *e, const char *service);

/* The same for a flag target: the active rollout driving flag, or NULL. */
const char *rollout_engine_flag_owner(const struct rollout_engine *e, const char *flag);

/* The state of rollout name, or -1 when the config has no such rollout. */
int rollout_engine_state(const struct rollout_engine *e, const char *name);

/* The current step index of rollout name (nsteps once completed), or -1. */
int rollout_engine_step(const struct rollout_engine *e, const char *name);

/* "idle", "progressing", "paused", "completed", "rolled_back", "failed". */
const char *rollout_state_name(enum rollout_state s);

/* "start", "promote", ...; for messages and events. */
const char *rollout_control_name(enum rollout_control c);

/*
 * Live view of one rollout as a new JSON object (caller owns it): name,
 * state, step {index, of, kind, phase, started_at}, targets with their
 * weights, approvals, pause reason, review deadline, last verdict per
 * check.  NULL when there is no such rollout.
 */
json_t *rollout_engine_json(const struct rollout_engine *e, const char *name);

/*
 * Takes over what the previous engine (same process, older config) knew
 * but did not persist: counters for /metrics, the last cumulative metric
 * readings and running hook jobs, matched by rollout, target and check
 * name.  Call after rollout_engine_load(); old is only read.
 */
void rollout_engine_adopt(struct rollout_engine *e, const struct rollout_engine *old);

/*
 * Appends the engine's Prometheus families: canaryd_rollout_state,
 * canaryd_rollout_step, canaryd_target_weight, canaryd_check_verdict_total,
 * canaryd_rollbacks_total, canaryd_time_to_detect_seconds,
 * canaryd_time_to_mitigate_seconds.  Returns 0 or -ENOSPC.
 */
int rollout_engine_write_prometheus(const struct rollout_engine *e, struct buf *out);

/*
 * The evidence bundle of rollout name (see rollout/evidence.h), built from
 * its events in the store, its live view and the config text.  New
 * object; NULL when there is no such rollout or the store cannot be read.
 */
json_t *rollout_engine_evidence(const struct rollout_engine *e, const char *name, int64_t now_ms);

/*
 * The post-rollout validation of rollout name (validate_engine.c, for GET
 * /v1/rollouts/{name}/validation) as a new object: rollout, state, begun,
 * completed_ms, holds_service, reverted_by, and windows [{name, state,
 * on_fail, after_ms, for_ms, starts_ms, ends_ms, started_ms, ended_ms,
 * report (validate_report_json()), report_md (its Markdown)}].  NULL when
 * there is no such rollout.
 */
json_t *rollout_engine_validation(const struct rollout_engine *e, const char *name);

/* Every rollout's live view, in config order, as a new JSON array. */
json_t *rollout_engine_list_json(const struct rollout_engine *e);

/* The wall clock the engine uses for API controls (backend now_ms or realtime). */
int64_t rollout_engine_now(const struct rollout_engine *e);

/* The store the engine's state layer writes to (for the API's event listings). */
struct store *rollout_engine_store(const struct rollout_engine *e);

/*
 * Reloads rollout name's run from its document text json (NULL: read it
 * from the store; a missing document makes it idle), as committed by
 * another fleet node: state, step, timers, approvals, counters.  Applies no
 * action (the node that committed it did); metric readings and counters of
 * this process are kept.  The engine calls it itself for remote updates of
 * kind "rollout" (state_apply()).  Returns 0, ERR_NOTFOUND when the config
 * has no such rollout, -EINVAL for an unreadable document (the run is then
 * idle), or a store error.
 */
int rollout_engine_reload(struct rollout_engine *e, const char *name, const char *json);

/*
 * The first UTC instant >= from_ms at which a step with these gates may
 * start: not_before (time of day: the next such time at or after
 * waiting_since_ms; instant: that time) and then the window (the next
 * minute inside it).  Pure; exposed for tests.  INT64_MAX when the window
 * has no day set.
 */
struct config_not_before;
struct config_window;
int64_t rollout_gate_time(const struct config_not_before *nb, const struct config_window *w,
                          int64_t waiting_since_ms, int64_t from_ms);

#endif
