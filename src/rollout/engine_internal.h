/*
 * engine_internal.h - what the files of the rollout engine share (see
 * engine.h for the public surface, docs/rollout.md "Files" for the map):
 *
 *   engine.c    the state machine: steps, gates, controls, load and tick
 *   doc.c       the rollout documents: encode, parse, persist through the
 *               state layer, reload one rollout from its document
 *   rounds.c    metric rounds: readings, analysis intervals, query/http/exec
 *               source rounds, step evidence, the sample-ratio guard
 *   rollback.c  the rollback pipeline: weights to 0, drain, hooks, verify,
 *               evidence bundle
 *   actions.c   every call that changes the outside world (weights, stable
 *               versions, mirrors, flags, notifications)
 *   output.c    JSON views, Prometheus families, the evidence bundle
 *
 * Not a public header: only src/rollout/ engine files include it.
 * Threading: everything runs on the control thread, like engine.h.
 */
#ifndef ROLLOUT_ENGINE_INTERNAL_H
#define ROLLOUT_ENGINE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "analysis/check.h"
#include "analysis/source.h"
#include "config/config.h"
#include "metrics/stats.h"
#include "proxy/mirror.h"
#include "rollout/engine.h"
#include "rollout/validate.h"

#define DOC_KIND      "rollout"
#define ENGINE_ACTOR  "canaryd"
#define MAX_APPROVERS 64
#define DAY_MS        INT64_C(86400000)
#define MIN_MS        INT64_C(60000)
#define MAX_TARGETS   64 /* targets a rollback pipeline tracks in its mask */
#define APPLY_WAIT_US 100000

struct src_round; /* rounds.c */

/* The rollback pipeline after the weights went to 0 (SPEC 6). */
enum post_stage {
	POST_NONE,
	POST_DRAIN,    /* in-flight canary requests may finish */
	POST_HOOKS,    /* exec / webhook hooks, one at a time, per rolled-back target */
	POST_VERIFY,   /* stable must pass the checks for rollback.verify */
	POST_EVIDENCE, /* the bundle is written */
	POST_DONE,
};

struct post {
	enum post_stage stage;
	int64_t stage_started_ms;
	uint64_t mask;    /* targets this pipeline covers */
	uint64_t pending; /* targets rolled back while it ran: the next pipeline */
	size_t hook;      /* position in hooks x targets (hook-major) */
	bool hook_started;
	uint64_t job;        /* the running hook's job id; not persisted */
	long drain_at_start; /* canary requests in flight at the drain's first reading
	                      * (-1: unknown); not persisted */
	bool drain_read;     /* drain_at_start was taken */
	uint32_t hooks_ok, hooks_failed;
	int64_t verify_next_ms;
	uint32_t verify_intervals, verify_passes;
	bool verify_failed;
	char verify_reason[CHECK_REASON_MAX];
	char reason[256];
	char evidence[512];
	int64_t decision_ms;
};

/* Why a rollback happened, for canaryd_rollbacks_total and the event. */
enum rb_class {
	RB_CHECK,
	RB_REVIEW,
	RB_ABORT,
	RB_EMERGENCY,
	RB_BAKE,
	RB_PARTIAL,
	RB_VALIDATION, /* validate_engine.c: a window with on_fail: rollback failed */
	RB_COUNT
};

/* Every target, as a mask of rollout_rollback() and review_targets. */
#define ALL_TARGETS (~UINT64_C(0))

/* Counters for /metrics: since the process started (kept across reloads). */
struct run_counters {
	uint64_t rollbacks[RB_COUNT]; /* by enum rb_class */
	int64_t last_ttd_ms;          /* 0: no check-driven rollback yet */
	int64_t last_ttm_us;          /* 0: no rollback yet */
};

enum phase {
	PHASE_WAITING, /* gates (not_before, window) not yet passed; action not applied */
	PHASE_RUNNING, /* action applied; holding until the step is done */
};

struct check_run {
	uint32_t fails;        /* consecutive failing intervals */
	int64_t first_fail_ms; /* end of the first failing interval of the streak */
	bool have_verdict;
	struct check_verdict last;
	uint64_t verdicts[4]; /* by outcome, for /metrics */
	/* query/http/exec checks (not persisted): */
	struct src_round *src; /* the round whose jobs are running, or NULL */
	uint32_t src_errors;   /* consecutive `error` verdicts */
	int64_t src_end_ms;    /* interval end of the last round judged */
	/*
	 * Count checks (config_check_counts()): each target's counts over the
	 * judged rounds whose interval began at or after src_cum_from_ms (the
	 * current traffic step's or bake's start; 0: the run's, or the
	 * process's after a restart), reset with the step's evidence like the
	 * built-in metrics' step counts; carried over on a reload.
	 */
	int64_t src_cum_from_ms;
	struct source_counts src_cum[MAX_TARGETS];
	/*
	 * Count checks' historical baseline: each target's baseline counts
	 * added over the run's rounds below 100% (never reset by a step; lost
	 * on a restart, as the built-ins' cum0).  At 100% and in bake the
	 * baseline cohort gets no traffic, so the step's canary counts are
	 * judged against these, as the built-in metrics judge theirs.
	 */
	struct source_counts src_hist[MAX_TARGETS];
	/*
	 * Evidence in the current traffic step or bake (docs/rollout.md,
	 * Evidence); reset when such a step begins.  ev_pass: a conclusive
	 * pass on the step's accumulated data (a source: on a round of the
	 * step) and no failing verdict since.  ev: the last such judgement
	 * (not persisted); ev_canary/ev_baseline its sample counts.
	 */
	bool ev_pass, have_ev;
	struct check_verdict ev;
	uint64_t ev_canary, ev_baseline;
	uint32_t step_iv[4]; /* this step's interval verdicts by outcome */
};

/*
 * What the engine knows of a target's metrics but does not persist: lost on
 * a restart (the first interval then re-primes), carried over on a reload
 * (rollout_engine_adopt()).
 */
struct readings {
	bool have_prev; /* prev_*: the last cumulative reading */
	struct metrics_cohort_snapshot prev_canary, prev_baseline;
	/*
	 * cum0_*: the readings at the run's start (or the first after a
	 * restart).  Statistical tests judge the counts since then
	 * (docs/judge.md), and bake compares the canary with the baseline
	 * accumulated since then (the historical baseline).
	 */
	bool have_cum0;
	struct metrics_cohort_snapshot cum0_canary, cum0_baseline;
	bool have_prev_stable; /* verify: the stable version's last reading */
	struct metrics_cohort_snapshot prev_stable;
	/* shadow steps: the mirror's last and first cumulative comparison counters */
	bool have_prev_sh, have_cum0_sh;
	uint32_t sh_looks;
	struct mirror_snapshot prev_sh, cum0_sh;
	/*
	 * step0_*: the readings when the current traffic step (or bake) began,
	 * or the first after a restart: tests and evidence judge the counts
	 * since then.
	 */
	bool have_step0;
	uint32_t step_looks; /* intervals evaluated since step0 */
	/* the step's requests counted before step0 (persisted, from before a restart) */
	uint64_t step_canary0, step_baseline0;
	struct metrics_cohort_snapshot step0_canary, step0_baseline;
};

struct target_run {
	uint32_t weight;  /* desired canary weight, thousandths */
	bool touched;     /* this run has set the weight (re-applied on load) */
	bool rolled_back; /* weight forced to 0; later steps skip it */
	json_t *saved;    /* flag target: its state before the run (flag_save) */
	uint32_t shadow;  /* mirror percent a shadow step set and has not stopped yet */
	bool preview;     /* a preview step runs it: weight 0, override traffic only */
	uint64_t step_canary, step_baseline; /* requests accumulated in this step */
	struct readings rd;
	/* the split guard's count began at this weight; 0: none yet (not persisted) */
	uint32_t srm_weight;
};

struct run {
	const struct config_rollout *cfg;
	enum rollout_state state;
	size_t step;
	enum phase phase;
	int64_t waiting_since_ms, step_started_ms;
	uint64_t approvals; /* bit i: approvers.v[i] of the current step approved */
	char pause_reason[256];
	int64_t paused_at_ms, review_deadline_ms;
	uint64_t review_targets; /* on review expiry: roll back these (bit t; ALL_TARGETS) */
	int64_t next_interval_ms;
	int64_t started_ms, ended_ms, decision_ms;
	uint32_t generation; /* 1 after start, +1 per retry */
	/*
	 * > 0: this run is a rehearsal (`start --rehearse SPEED`) and every
	 * duration of the plan is divided by it (rollout_dur()); 0: real time.
	 * Persisted; set by start, kept by retry.
	 */
	double rehearse;
	/* step index + 1 whose `upcoming` notice was sent (0: none); persisted */
	size_t upcoming_sent;
	bool mitigated; /* the rollback's zero weights were applied */
	bool analysis_passed;
	int64_t bake_until_ms;    /* > 0: every step done, baking until then */
	bool finalized;           /* completed and the canaries made stable */
	int64_t evidence_from_ms; /* max_wait counts from here (step begin, resume) */
	uint32_t step_iv[3];      /* this step's intervals: passed, inconclusive, failed */
	struct post post;
	struct run_counters ctr;
	struct target_run *targets;
	struct check_run *checks;
	struct validate_run val; /* post-rollout validation windows (validate_engine.c) */
	/*
	 * The text of the run's last committed (or loaded) document, owned;
	 * NULL before any.  A failed commit restores the run from it, without
	 * reading the store (which may be the thing that is away).
	 */
	char *committed;
	/*
	 * A rollback decided while the store was away (docs/fleet.md): its
	 * events (a JSON array, owned; NULL: none), committed with the run's
	 * document by the next rollout_persist() that succeeds.  committed
	 * holds the rolled-back document meanwhile.
	 */
	json_t *pending;
	bool reload_wanted; /* the pending decision was refused: reload from the store next tick */
	int64_t pending_try_ms; /* the last attempt to commit it (one a second) */
};

struct rollout_engine {
	const struct config *cfg;
	struct rollout_backend be;
	struct run *runs;
	size_t nruns;
	bool subscribed; /* to kind "rollout" of be.state (rollout_doc_changed()) */
};

/* ---- small predicates on a run ---- */

static inline const struct config_target *run_target(const struct run *r, size_t t)
{
	return &r->cfg->targets[t];
}

static inline bool run_active(const struct run *r)
{
	return r->state == ROLLOUT_PROGRESSING || r->state == ROLLOUT_PAUSED;
}

/* Every step is done and the run is baking until bake_until_ms. */
static inline bool run_baking(const struct run *r)
{
	return r->bake_until_ms > 0 && r->step >= r->cfg->nsteps;
}

/* The current step moves traffic (set/weight, shadow) or the run is baking. */
static inline bool run_traffic_step(const struct run *r)
{
	enum config_step_kind k;

	if (run_baking(r))
		return true;
	if (r->step >= r->cfg->nsteps)
		return false;
	k = r->cfg->steps[r->step].kind;
	return k == CONFIG_STEP_SET || k == CONFIG_STEP_SHADOW || k == CONFIG_STEP_PREVIEW;
}

/*
 * THE way the engine (and validate.c) turns a duration of the plan into the
 * duration this run uses: ms itself, or ms / SPEED in a rehearsal (never 0
 * for a non-zero ms).  Every `for`, max_wait, interval, review, bake,
 * verify, drain and gate offset goes through it; nothing else special-cases
 * rehearsals.
 */
static inline uint64_t rollout_dur(const struct run *r, uint64_t ms)
{
	double d;

	if (!r || !(r->rehearse > 0) || ms == 0)
		return ms;
	d = (double)ms / r->rehearse;
	if (d < 1.0)
		return 1;
	if (d >= 18446744073709549568.0)
		return UINT64_MAX;
	return (uint64_t)d;
}

/*
 * When step st of r may begin, at or after from (rollout_gate_time()).  In
 * a rehearsal the gates are judged on the plan's clock, which runs SPEED
 * times faster from the start: an offset from the start in plan time is
 * divided by SPEED.  INT64_MAX: never.
 */
static inline int64_t run_gate_time_since(const struct run *r, const struct config_step *st,
                                          int64_t waiting_since, int64_t from)
{
	int64_t t0 = r->started_ms, g;
	double sp = r->rehearse;

	if (!(sp > 0))
		return rollout_gate_time(&st->not_before, &st->window, waiting_since, from);
	g = rollout_gate_time(&st->not_before, &st->window,
	                      t0 + (int64_t)((double)(waiting_since - t0) * sp),
	                      t0 + (int64_t)((double)(from - t0) * sp));
	if (g == INT64_MAX)
		return g;
	return t0 + (int64_t)((double)(g - t0) / sp);
}

/* run_gate_time_since() for the step r is waiting at (since r->waiting_since_ms). */
static inline int64_t run_gate_time(const struct run *r, const struct config_step *st, int64_t from)
{
	return run_gate_time_since(r, st, r->waiting_since_ms, from);
}

/*
 * The cohort target t's baseline is read from: the baseline slice, or in a
 * preview (weight 0: no slice) the stable cohort of the stable version.
 */
static inline enum cohort run_baseline_cohort(const struct run *r, size_t t)
{
	return r->targets[t].preview ? COHORT_STABLE : COHORT_BASELINE;
}

/* Target t has canary traffic to judge: a weight, or a preview's override traffic. */
static inline bool run_canary_live(const struct run *r, size_t t)
{
	return r->targets[t].touched && (r->targets[t].weight > 0 || r->targets[t].preview);
}

/* The targets check c covers, as a mask (ALL_TARGETS when it names none). */
static inline uint64_t check_targets(const struct config_check *c)
{
	return c->target_mask ? c->target_mask : ALL_TARGETS;
}

/* Target t is a service with a known config that has not been rolled back. */
static inline bool run_live_service(const struct run *r, size_t t)
{
	return run_target(r, t)->kind == CONFIG_TARGET_SERVICE && run_target(r, t)->svc &&
	       !r->targets[t].rolled_back;
}

/* The run of rollout name, or NULL. */
static inline struct run *rollout_find(const struct rollout_engine *e, const char *name)
{
	for (size_t i = 0; name && i < e->nruns; i++)
		if (strcmp(e->runs[i].cfg->name, name) == 0)
			return &e->runs[i];
	return NULL;
}

/*
 * Calls go one way only, so there is no cycle between the files
 * (scripts/check-cycles):
 *
 *   output.c -> engine.c -> rounds.c -> rollback.c -> doc.c -> actions.c
 *
 * (output.c uses only engine.c's public rollout_engine_now()).  A file may
 * call the files to its right, never those to its left.  validate_engine.c
 * sits beside rounds.c (engine.c -> validate_engine.c -> rollback.c, doc.c,
 * actions.c); validate.c, its model, calls none of them.
 */

/* ---- engine.c: the state machine (nothing here is called by the other files) ---- */

/*
 * The state layer's subscriber for kind "rollout" (arg: the engine):
 * reloads a rollout another node committed; ignores this engine's own.
 */
struct state_update;
void rollout_doc_changed(void *arg, const struct state_update *u);

/* ---- doc.c: the rollout documents and their vocabulary ---- */

/* "set", "shadow", "pause", "analysis", "approval". */
const char *rollout_step_kind_name(enum config_step_kind k);

/* Fills r from its document text.  Returns 0 or -EINVAL (r is then idle). */
int rollout_run_parse(struct run *r, const char *text);

/* Resets r to a fresh idle run (keeps metric readings and verdicts). */
void rollout_run_reset(struct run *r);

/* {"kind": kind, "details": details (stolen; NULL: {})}, an entry of an event list. */
json_t *rollout_event(const char *kind, json_t *details);

/* A new event list holding rollout_event(kind, details). */
json_t *rollout_event_list(const char *kind, json_t *details);

/*
 * Commits r's document and events (a JSON array of rollout_event(),
 * stolen; may be NULL) in one state_commit(), then notifies.  On failure
 * r is restored from its last committed document and the state layer's
 * error returned (ERR_STORE, ERR_UNAVAILABLE, ...): the caller must not
 * apply its action.
 */
int rollout_persist(struct rollout_engine *e, struct run *r, const char *actor, json_t *events);

/*
 * rollout_persist() for a rollback: when the store is away (ERR_UNAVAILABLE)
 * the run keeps its new state, its document becomes the one a later
 * failure restores, and the events join r->pending; returns 1 then (the
 * caller applies the rollback locally), else what rollout_persist() does.
 */
int rollout_persist_or_defer(struct rollout_engine *e, struct run *r, const char *actor,
                             json_t *events);

/*
 * Commits r's pending rollback (document and every deferred event) when
 * the store takes it: 0 (or nothing pending), ERR_UNAVAILABLE (kept for the
 * next try), or ERR_CONFLICT: this node no longer holds the leader's term,
 * the decision is dropped and the run reloaded from the store (the leader
 * judges again).
 */
int rollout_flush_pending(struct rollout_engine *e, struct run *r);

/* Parses text into r as rollout_run_parse() and keeps it as r's last committed document. */
int rollout_run_load(struct run *r, const char *text);

/* Reads every "rollout" document of a configured rollout into its run. */
int rollout_docs_load(struct rollout_engine *e);

/* "none", "drain", "hooks", "verify", "evidence", "done". */
const char *rollout_post_stage_name(enum post_stage s);

/* ---- rounds.c: metric rounds, evidence, sample-ratio guard ---- */

/*
 * Takes the cumulative readings that the next interval's deltas start from;
 * at a run's start (run_start) also the baseline bake compares against.
 */
void rollout_prime(struct rollout_engine *e, struct run *r, bool run_start);

/* One analysis interval ending at now: verdicts, decisions, their events. */
void rollout_evaluate(struct rollout_engine *e, struct run *r, int64_t now);

/* Collects r's source jobs without blocking and judges finished rounds. */
void rollout_sources_tick(struct rollout_engine *e, struct run *r, int64_t now);

/*
 * The built-in `health` check, every tick: a live service target whose
 * canary has every endpoint down by active health checks
 * (be.endpoints_down) gets a failing verdict and is rolled back.
 */
void rollout_health_tick(struct rollout_engine *e, struct run *r, int64_t now);

/* Forgets check cr's running source round (its jobs are dropped). */
void rollout_src_drop(struct rollout_engine *e, struct check_run *cr);

/*
 * A reload (rollout_engine_adopt()): check k of r takes the count-check
 * counts of check u of the old run o, target by target name (a target
 * whose canary changed starts over, as its readings do).
 */
void rollout_src_adopt(struct run *r, size_t k, const struct run *o, size_t u);

/* Target t's split count starts again, at its current weight. */
void rollout_srm_restart(struct rollout_engine *e, struct run *r, size_t t);

/* Restarts the evidence of a traffic step (or the bake) that begins at now. */
void rollout_evidence_reset(struct rollout_engine *e, struct run *r, int64_t now);

/* The current step's evidence as a new object (events, pause, live view). */
json_t *rollout_evidence_json(const struct run *r);

/*
 * How many applicable checks still lack evidence; their shortfalls go to
 * out, the first one's review to *review_ms / *review_target when given.
 */
size_t rollout_evidence_missing(const struct run *r, bool brief, char *out, size_t len,
                                uint64_t *review_ms, uint64_t *review_targets);

/* The current traffic step's (or bake's) max_wait. */
uint64_t rollout_max_wait_ms(const struct run *r);

/* ---- rollback.c: the reactions to a failed check: pause, the rollback pipeline ---- */

/*
 * Pauses r with reason (and a review deadline review_ms of the plan from
 * now when not 0 (rollout_dur()), rolling back review_targets on expiry).
 * extra (stolen, may be NULL) is merged into the rollout.paused event.
 * 0 or the persist error.
 */
int rollout_pause(struct rollout_engine *e, struct run *r, const char *actor, int64_t now,
                  const char *reason, uint64_t review_ms, uint64_t review_targets, json_t *extra);

/*
 * Rolls back the targets in `only` (bit t; ALL_TARGETS): persist with
 * pre_events (stolen, may be NULL), weights to 0, wait for the workers
 * (time to mitigate from t0_us, 0 = now).  v / first_fail_ms: the deciding
 * verdict (NULL / 0 for manual).  0 or the persist error.
 */
int rollout_rollback(struct rollout_engine *e, struct run *r, uint64_t only, const char *actor,
                     int64_t now, const char *reason, const struct check_verdict *v,
                     int64_t first_fail_ms, enum rb_class cls, json_t *pre_events, uint64_t t0_us);

/*
 * The step check c's on_fail {rollback_to} goes back to in r now: its
 * named step, or for `previous` the traffic step before the one whose
 * weights are in force.  r->cfg->nsteps when there is none.
 */
size_t rollout_rollback_step(const struct run *r, const struct config_check *c);

/*
 * The partial rollback (on_fail: {rollback_to}): the targets in `only`
 * that are not rolled back go to the weights they had at the end of step
 * `to`, the run goes back to that step (running) and pauses; persisted
 * with pre_events (stolen) first, then the weights are applied and time to
 * mitigate measured, and the pipeline (drain, hooks, verify, evidence)
 * follows as for a rollback.  The caller restarts the step's evidence.
 * 0 or the persist error.
 */
int rollout_rollback_to(struct rollout_engine *e, struct run *r, uint64_t only, size_t to,
                        const char *actor, int64_t now, const char *reason,
                        const struct check_verdict *v, int64_t first_fail_ms, json_t *pre_events,
                        uint64_t t0_us);

/* Moves the rollback pipeline (drain, hooks, verify, evidence) on; every tick. */
void rollout_post_step(struct rollout_engine *e, struct run *r, int64_t now);

/* "check", "review", "abort", "emergency", "bake", "partial". */
const char *rollout_rb_class_name(enum rb_class c);

/* ---- validate_engine.c: post-rollout validation (validate.h); called by engine.c ---- */

/*
 * At completion (r about to be committed as completed, evs its events):
 * records each target at 100%: new and old stable and the old stable's
 * slice over the run (bake's historical baseline), schedules the windows
 * and appends rollout.validation.scheduled to evs.  No-op without validate:.
 */
void rollout_validate_begin(struct rollout_engine *e, struct run *r, int64_t now, json_t *evs);

/* Moves a completed rollout's current validation window on; every tick. */
void rollout_validate_tick(struct rollout_engine *e, struct run *r, int64_t now);

/* The windows for the live view: [{name, state, on_fail, starts_ms, ends_ms}]; NULL without validate:. */
json_t *rollout_validate_view(const struct run *r);

/* ---- actions.c: the outside world ---- */

/* Requests per target a decision's canary sample keeps (validate, issue 16). */
#define ROLLOUT_SAMPLE_MAX 50

/*
 * Appends rollout.canary_requests (the last requests each service target in
 * mask had its canary serve, newest first; backend samples) to evs when
 * there are any.  now: the decision's time.
 */
void rollout_act_samples(struct rollout_engine *e, const struct run *r, uint64_t mask, int64_t now,
                         json_t *evs);

/* Flag targets can be driven (the flags backend is wired). */
bool rollout_flags_wired(const struct rollout_engine *e);

/* Preview steps can route override traffic (traffic or its seam is wired). */
bool rollout_preview_wired(const struct rollout_engine *e);

/* Shadow steps can mirror (the mirror backend is wired). */
bool rollout_shadow_wired(const struct rollout_engine *e);

/*
 * Takes flag target t's state before the run once, before the flag first
 * changes.  False when the flag is gone.
 */
bool rollout_act_save_flag(struct rollout_engine *e, struct run *r, size_t t);

/* Applies target t's desired weight (or restores a rolled-back flag).  0 or an error. */
int rollout_act_weight(struct rollout_engine *e, struct run *r, size_t t, const char *actor);

/*
 * rollout_act_weight() on this node's proxy only, without a commit (a
 * rollback while the store is away: traffic_set_weight_local()).  Flag and
 * other targets wait for the store (0).
 */
int rollout_act_weight_local(struct rollout_engine *e, struct run *r, size_t t);

/* Mirrors target t's service to its canary at r->targets[t].shadow.  0 or an error. */
int rollout_act_shadow(struct rollout_engine *e, struct run *r, size_t t, const char *actor);

/* Stops the mirrors a shadow step started for the targets in mask. */
void rollout_act_stop_shadow(struct rollout_engine *e, struct run *r, uint64_t mask,
                             const char *actor);

/* Makes target t's canary its service's stable version.  0 (also when unwired) or an error. */
int rollout_act_stable(struct rollout_engine *e, struct run *r, size_t t, const char *actor);

/* Tells the notifier about a committed event of rollout name (details borrowed). */
void rollout_act_notify(struct rollout_engine *e, const char *kind, const char *name,
                        const json_t *details);

/* Waits until every worker routes with the last published table: 0 or -ETIMEDOUT. */
int rollout_act_wait_applied(struct rollout_engine *e, uint64_t timeout_us);

/* In-flight counts are known (the proxy is wired). */
bool rollout_inflight_wired(const struct rollout_engine *e);

/* Requests in flight to (service, version), or -1 when unknown. */
long rollout_inflight(struct rollout_engine *e, const char *service, const char *version);

/* The service's current stable version (moves when a rollout completes). */
const char *rollout_stable_version(const struct rollout_engine *e, const struct config_target *tg);

#endif
