/*
 * engine.c - the rollout state machine (see engine.h and docs/rollout.md):
 * names, time gates, steps (begin, hold, pass), pause, completion and
 * bake, the controls, load and tick.  The documents it commits live in
 * doc.c, the metric rounds that feed it in rounds.c, the rollback pipeline
 * in rollback.c, its calls on the outside world in actions.c and its views
 * in output.c (engine_internal.h is the map).
 *
 * Every transition follows the same order: change the in-memory run,
 * commit its document and events (rollout_persist()), and only then apply
 * the action (a weight, a mirror, a flag).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/err.h"
#include "core/log.h"
#include "core/loop.h"
#include "rollout/engine_internal.h"
#include "state/state.h"
#include "store/store.h"

static void set_msg(char *msg, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Formats a human message for the caller of a control (msg may be NULL). */
static void set_msg(char *msg, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!msg || len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, len, fmt, ap);
	va_end(ap);
}

/* ---- time gates (not_before, window) ---- */

/* Monday = 0 .. Sunday = 6; 1970-01-01 was a Thursday. */
static int weekday(int64_t ms)
{
	int64_t days = ms >= 0 ? ms / DAY_MS : (ms - DAY_MS + 1) / DAY_MS;

	return (int)(((days + 3) % 7 + 7) % 7);
}

static bool in_window(const struct config_window *w, int64_t ms)
{
	int64_t day_start = ms - ((ms % DAY_MS) + DAY_MS) % DAY_MS;
	int m = (int)((ms - day_start) / MIN_MS);
	int d = weekday(ms), prev = (d + 6) % 7;

	if (!w->set)
		return true;
	if (w->start_min == w->end_min)
		return (w->days >> d) & 1;
	if (w->start_min < w->end_min)
		return ((w->days >> d) & 1) && m >= w->start_min && m < w->end_min;
	return (((w->days >> d) & 1) && m >= w->start_min) ||
	       (((w->days >> prev) & 1) && m < w->end_min);
}

int64_t rollout_gate_time(const struct config_not_before *nb, const struct config_window *w,
                          int64_t waiting_since_ms, int64_t from_ms)
{
	int64_t t = from_ms;

	if (nb->kind == CONFIG_NOT_BEFORE_TIME_OF_DAY) {
		int64_t day = waiting_since_ms - ((waiting_since_ms % DAY_MS) + DAY_MS) % DAY_MS;
		int64_t at = day + (int64_t)nb->minute_of_day * MIN_MS;

		if (at < waiting_since_ms)
			at += DAY_MS;
		if (at > t)
			t = at;
	} else if (nb->kind == CONFIG_NOT_BEFORE_INSTANT) {
		if (nb->epoch_s * 1000 > t)
			t = nb->epoch_s * 1000;
	}
	if (!w->set || in_window(w, t))
		return t;
	if ((w->days & 0x7f) == 0)
		return INT64_MAX;
	/* The next whole minute inside the window; at most 8 days away. */
	t = t - ((t % MIN_MS) + MIN_MS) % MIN_MS + MIN_MS;
	for (int i = 0; i < 8 * 1440; i++, t += MIN_MS)
		if (in_window(w, t))
			return t;
	return INT64_MAX;
}

/* ---- steps: begin, apply, pass, complete ---- */

/* Applies the current (SET) step's weights after they were persisted. */
static int apply_step(struct rollout_engine *e, struct run *r, const char *actor, int64_t now)
{
	const struct config_step *st = &r->cfg->steps[r->step];
	char why[256];

	for (size_t i = 0; i < st->nsets; i++) {
		size_t t = st->sets[i].index;
		int rc;

		if (r->targets[t].rolled_back)
			continue;
		rc = rollout_act_weight(e, r, t, actor);
		if (rc) {
			snprintf(why, sizeof(why), "setting %s to %.3f%% failed (error %d)",
			         run_target(r, t)->name, st->sets[i].percent / 1000.0, rc);
			rollout_pause(e, r, ENGINE_ACTOR, now, why, 0, ALL_TARGETS, NULL);
			return rc;
		}
		rollout_srm_restart(e, r, t); /* the step's slices start now */
	}
	return 0;
}

/* Starts the current shadow step's mirrors (persisted by the caller). */
static int apply_shadow(struct rollout_engine *e, struct run *r, const char *actor, int64_t now)
{
	for (size_t t = 0; t < r->cfg->ntargets; t++) {
		const struct config_target *tg = run_target(r, t);
		char why[256];
		int rc;

		if (!r->targets[t].shadow || !rollout_shadow_wired(e))
			continue;
		rc = rollout_act_shadow(e, r, t, actor);
		if (rc) {
			snprintf(why, sizeof(why), "mirroring %.3f%% of %s to %s failed",
			         r->targets[t].shadow / 1000.0, tg->service, tg->canary);
			rollout_pause(e, r, ENGINE_ACTOR, now, why, 0, ALL_TARGETS, NULL);
			return rc;
		}
	}
	return 0;
}

/* Starts the current preview step's routing (persisted by the caller). */
static int apply_preview(struct rollout_engine *e, struct run *r, const char *actor, int64_t now)
{
	for (size_t t = 0; t < r->cfg->ntargets; t++) {
		char why[256];
		int rc;

		if (!r->targets[t].preview)
			continue;
		rc = rollout_act_weight(e, r, t, actor);
		if (rc) {
			snprintf(why, sizeof(why), "starting the preview of %s failed (error %d)",
			         run_target(r, t)->name, rc);
			rollout_pause(e, r, ENGINE_ACTOR, now, why, 0, ALL_TARGETS, NULL);
			return rc;
		}
	}
	return 0;
}

/* Begins step r->step: persist, then apply.  Gates were checked by the caller. */
static int begin_step(struct rollout_engine *e, struct run *r, const char *actor, int64_t now)
{
	const struct config_rollout *ro = r->cfg;
	const struct config_step *st = &ro->steps[r->step];
	json_t *evs = json_array(), *d, *weights = json_object(), *skipped = json_array();
	int rc;

	r->phase = PHASE_RUNNING;
	r->step_started_ms = now;
	r->approvals = 0;
	r->analysis_passed = false;
	/* a preview ends when a set step moves its targets (the baseline cohort changes) */
	for (size_t i = 0; st->kind == CONFIG_STEP_SET && i < st->nsets; i++)
		if (r->targets[st->sets[i].index].preview) {
			r->targets[st->sets[i].index].preview = false;
			r->targets[st->sets[i].index].rd.have_prev = false;
		}
	if (st->kind == CONFIG_STEP_PREVIEW) {
		for (size_t t = 0; t < ro->ntargets; t++) {
			const char *why = NULL;

			if (run_target(r, t)->kind != CONFIG_TARGET_SERVICE)
				why = "a flag target has no override traffic";
			else if (r->targets[t].rolled_back)
				why = "the target was rolled back";
			else if (!rollout_preview_wired(e))
				why = "this engine has no traffic backend";
			if (why) {
				json_array_append_new(skipped, json_pack("{s:s, s:s}", "target",
				                                         run_target(r, t)->name,
				                                         "why", why));
				continue;
			}
			if (!r->targets[t].preview)
				r->targets[t].rd.have_prev =
				    false; /* baseline: the stable cohort now */
			r->targets[t].preview = true;
			r->targets[t].weight = 0;
			r->targets[t].touched = true;
			json_object_set_new(weights, run_target(r, t)->name,
			                    json_string("preview"));
		}
	}
	if (st->kind == CONFIG_STEP_SET || st->kind == CONFIG_STEP_SHADOW ||
	    st->kind == CONFIG_STEP_PREVIEW)
		rollout_evidence_reset(e, r, now);
	if (st->kind == CONFIG_STEP_SET) {
		for (size_t i = 0; i < st->nsets; i++) {
			size_t t = st->sets[i].index;

			if (run_target(r, t)->kind == CONFIG_TARGET_FLAG &&
			    !rollout_flags_wired(e)) {
				json_array_append_new(
				    skipped,
				    json_pack("{s:s, s:s}", "target", run_target(r, t)->name, "why",
				              "this engine has no flags backend"));
				continue;
			}
			if (r->targets[t].rolled_back) {
				json_array_append_new(skipped,
				                      json_pack("{s:s, s:s}", "target",
				                                run_target(r, t)->name, "why",
				                                "the target was rolled back"));
				continue;
			}
			if (!rollout_act_save_flag(e, r, t)) {
				json_array_append_new(
				    skipped,
				    json_pack(
				        "{s:s, s:s}", "target", run_target(r, t)->name, "why",
				        "the flag does not exist (deleted through the API?)"));
				continue;
			}
			r->targets[t].weight = st->sets[i].percent;
			r->targets[t].touched = true;
			json_object_set_new(weights, run_target(r, t)->name,
			                    json_real(st->sets[i].percent / 1000.0));
		}
	} else if (st->kind == CONFIG_STEP_SHADOW) {
		for (size_t t = 0; t < ro->ntargets; t++) {
			const char *why = NULL;

			if (run_target(r, t)->kind != CONFIG_TARGET_SERVICE)
				why = "a flag target has no traffic to mirror";
			else if (r->targets[t].rolled_back)
				why = "the target was rolled back";
			else if (!rollout_shadow_wired(e))
				why = "this engine has no mirror backend";
			if (why) {
				json_array_append_new(skipped, json_pack("{s:s, s:s}", "target",
				                                         run_target(r, t)->name,
				                                         "why", why));
				continue;
			}
			r->targets[t].shadow = st->shadow_percent;
			r->targets[t].rd.have_prev_sh = r->targets[t].rd.have_cum0_sh = false;
			json_object_set_new(
			    weights, run_target(r, t)->name,
			    json_pack("{s:f}", "shadow", st->shadow_percent / 1000.0));
		}
	}
	d = json_pack("{s:I, s:I, s:s, s:o, s:o, s:I}", "step", (json_int_t)r->step, "of",
	              (json_int_t)ro->nsteps, "kind", rollout_step_kind_name(st->kind), "weights",
	              weights, "skipped", skipped, "at_ms", (json_int_t)now);
	json_array_append_new(evs, rollout_event("rollout.step", d));
	if (st->kind == CONFIG_STEP_APPROVAL) {
		json_t *req = json_array();

		for (size_t i = 0; i < st->approvers.n; i++)
			json_array_append_new(req, json_string(st->approvers.v[i]));
		json_array_append_new(
		    evs, rollout_event("rollout.approval_needed",
		                       json_pack("{s:I, s:o}", "step", (json_int_t)r->step,
		                                 "required", req)));
	}
	rc = rollout_persist(e, r, actor, evs);
	if (rc)
		return rc;
	if (st->kind == CONFIG_STEP_SET)
		return apply_step(e, r, actor, now);
	if (st->kind == CONFIG_STEP_SHADOW)
		return apply_shadow(e, r, actor, now);
	if (st->kind == CONFIG_STEP_PREVIEW)
		return apply_preview(e, r, actor, now);
	return 0;
}

/* Every step is done: the canaries at 100% become stable (see finalize()). */
static int complete(struct rollout_engine *e, struct run *r, const char *actor, int64_t now,
                    json_t *evs)
{
	json_t *stable = json_object(),
	       *bake_ev = run_baking(r) ? rollout_evidence_json(r) : json_null();

	r->state = ROLLOUT_COMPLETED;
	r->step = r->cfg->nsteps;
	r->phase = PHASE_WAITING;
	r->ended_ms = now;
	r->bake_until_ms = 0;
	r->finalized = false;
	for (size_t t = 0; t < r->cfg->ntargets; t++)
		if (run_live_service(r, t) && r->targets[t].weight >= 100000)
			json_object_set_new(stable, run_target(r, t)->service,
			                    json_string(run_target(r, t)->canary));
	if (!evs)
		evs = json_array();
	json_array_append_new(
	    evs, rollout_event("rollout.completed",
	                       json_pack("{s:I, s:o, s:I, s:o}", "duration_ms",
	                                 (json_int_t)(now - r->started_ms), "stable", stable,
	                                 "bake_ms", (json_int_t)rollout_dur(r, r->cfg->bake_ms),
	                                 "bake_evidence", bake_ev)));
	rollout_validate_begin(e, r, now, evs); /* validate_engine.c: the windows start counting */
	return rollout_persist(e, r, actor, evs);
}

/*
 * Every step is done: bake first when the rollout has `bake` (the old
 * stable stays warm, the checks keep running, a failure reverts at once),
 * else complete.
 */
static int steps_done(struct rollout_engine *e, struct run *r, const char *actor, int64_t now,
                      json_t *evs)
{
	bool any = false;

	for (size_t t = 0; t < r->cfg->ntargets; t++)
		any = any || (run_live_service(r, t) && r->targets[t].weight > 0);
	if (!r->cfg->bake_ms || !any || r->bake_until_ms) /* promote --full ends a bake */
		return complete(e, r, actor, now, evs);
	r->step = r->cfg->nsteps;
	r->phase = PHASE_WAITING;
	r->bake_until_ms = now + (int64_t)rollout_dur(r, r->cfg->bake_ms);
	rollout_evidence_reset(e, r, now);
	if (!evs)
		evs = json_array();
	json_array_append_new(
	    evs,
	    rollout_event("rollout.baking", json_pack("{s:I, s:I}", "bake_ms",
	                                              (json_int_t)rollout_dur(r, r->cfg->bake_ms),
	                                              "until", (json_int_t)r->bake_until_ms)));
	return rollout_persist(e, r, actor, evs);
}

/*
 * After completion: each canary at 100% becomes its service's stable
 * version.  Idempotent; retried by the tick until it works (also after a
 * restart), so a crash between "completed" and this step is healed.
 */
static void finalize(struct rollout_engine *e, struct run *r)
{
	bool ok = true;

	for (size_t t = 0; t < r->cfg->ntargets; t++) {
		if (!run_live_service(r, t) || r->targets[t].weight < 100000)
			continue;
		if (rollout_act_stable(e, r, t, ENGINE_ACTOR))
			ok = false;
	}
	if (!ok)
		return;
	r->finalized = true;
	rollout_persist(e, r, ENGINE_ACTOR, NULL);
}

/* Marks the current step passed and moves to the next (or completes). */
static int pass_step(struct rollout_engine *e, struct run *r, const char *actor, int64_t now,
                     const char *how)
{
	json_t *evs = json_array();
	size_t done = r->step;

	if (r->cfg->steps[done].kind == CONFIG_STEP_SHADOW)
		rollout_act_stop_shadow(e, r, ~UINT64_C(0), actor);
	json_array_append_new(
	    evs,
	    rollout_event("rollout.step.passed",
	                  json_pack("{s:I, s:s, s:s, s:o}", "step", (json_int_t)done, "kind",
	                            rollout_step_kind_name(r->cfg->steps[done].kind), "how", how,
	                            "evidence",
	                            run_traffic_step(r) ? rollout_evidence_json(r) : json_null())));
	r->step++;
	r->phase = PHASE_WAITING;
	r->waiting_since_ms = now;
	r->approvals = 0;
	r->analysis_passed = false;
	if (r->step >= r->cfg->nsteps)
		return steps_done(e, r, actor, now, evs);
	return rollout_persist(e, r, actor, evs);
}

/*
 * The evidence gate of a traffic step whose time is up (or a bake that
 * ended): true when it may pass.  Otherwise it keeps running, and once
 * max_wait has run out it pauses (and notifies) with the reason, following
 * the first waiting check's review when it has one.
 */
static bool evidence_gate(struct rollout_engine *e, struct run *r, int64_t now)
{
	char list[400], why[256];
	uint64_t review = 0;
	uint64_t review_target = ALL_TARGETS;

	if (!rollout_evidence_missing(r, false, list, sizeof(list), &review, &review_target))
		return true;
	if (now - r->evidence_from_ms < (int64_t)rollout_max_wait_ms(r))
		return false;
	snprintf(why, sizeof(why), "not enough evidence: %.234s", list); /* pause_reason's size */
	rollout_pause(
	    e, r, ENGINE_ACTOR, now, why, review, review_target,
	    json_pack("{s:s, s:o}", "cause", "evidence", "evidence", rollout_evidence_json(r)));
	return false;
}

static bool step_done(const struct run *r, const struct config_step *st, int64_t now)
{
	int64_t held = now - r->step_started_ms;

	switch (st->kind) {
	case CONFIG_STEP_SET:
	case CONFIG_STEP_SHADOW:
	case CONFIG_STEP_PREVIEW:
		return held >= (int64_t)rollout_dur(r, st->for_ms);
	case CONFIG_STEP_PAUSE:
		return st->pause_ms && held >= (int64_t)rollout_dur(r, st->pause_ms);
	case CONFIG_STEP_ANALYSIS:
		return r->analysis_passed;
	case CONFIG_STEP_APPROVAL:
		for (size_t i = 0; i < st->approvers.n && i < MAX_APPROVERS; i++)
			if (!(r->approvals >> i & 1))
				return false;
		return true;
	}
	return false;
}

/* Moves a progressing rollout as far as its steps allow at now. */
static void advance(struct rollout_engine *e, struct run *r, const char *actor, int64_t now)
{
	/* Each turn changes the step or the phase; bounded by twice the steps. */
	for (size_t guard = 0; guard < 2 * r->cfg->nsteps + 2; guard++) {
		const struct config_step *st;

		if (r->state != ROLLOUT_PROGRESSING)
			return;
		if (r->step >= r->cfg->nsteps) {
			if (!r->bake_until_ms)
				steps_done(e, r, actor, now, NULL);
			else if (now >= r->bake_until_ms && evidence_gate(e, r, now))
				complete(e, r, actor, now, NULL);
			return;
		}
		st = &r->cfg->steps[r->step];
		if (r->phase == PHASE_WAITING) {
			if (run_gate_time(r, st, now) > now)
				return;
			if (begin_step(e, r, actor, now))
				return;
			continue;
		}
		if (st->kind == CONFIG_STEP_ANALYSIS && !r->analysis_passed &&
		    st->analysis_for_ms &&
		    now - r->step_started_ms >= (int64_t)rollout_dur(r, st->analysis_for_ms)) {
			char why[128];

			snprintf(why, sizeof(why),
			         "analysis step %zu ended inconclusive after %" PRIu64 " ms",
			         r->step, rollout_dur(r, st->analysis_for_ms));
			rollout_pause(e, r, ENGINE_ACTOR, now, why, 0, ALL_TARGETS, NULL);
			return;
		}
		if (!step_done(r, st, now) || !evidence_gate(e, r, now))
			return;
		if (pass_step(e, r, actor, now, "done"))
			return;
	}
}

/* ---- advance notice: the `upcoming` event ---- */

/* The largest `notice` of r's notify entries that want `upcoming` (0: none). */
static uint64_t notice_ms(const struct run *r)
{
	uint64_t n = 0;

	for (size_t i = 0; i < r->cfg->nnotify; i++)
		if ((r->cfg->notify[i].events & CONFIG_EVENT_UPCOMING) &&
		    r->cfg->notify[i].notice_ms > n)
			n = r->cfg->notify[i].notice_ms;
	return n;
}

static bool step_gated(const struct config_step *st)
{
	return st->not_before.kind != CONFIG_NOT_BEFORE_NONE || st->window.set;
}

/*
 * The step that opens next at a time known now, and when (docs/rollout.md
 * "Advance notice"): the step r waits at, behind a not_before or window;
 * or, while a traffic step with `for` runs, the step after it when that is
 * an approval gate (reachable when the for ends, at the earliest) or a
 * gated step (its gate counted from then).  False when none is known.
 */
static bool next_opening(const struct run *r, int64_t now, size_t *step, int64_t *at)
{
	const struct config_rollout *ro = r->cfg;
	const struct config_step *st, *nx;
	int64_t end;

	if (r->step >= ro->nsteps)
		return false;
	st = &ro->steps[r->step];
	if (r->phase == PHASE_WAITING) {
		if (!step_gated(st))
			return false;
		*step = r->step;
		*at = run_gate_time(r, st, now);
		return *at != INT64_MAX;
	}
	if (r->step + 1 >= ro->nsteps || !st->for_ms ||
	    (st->kind != CONFIG_STEP_SET && st->kind != CONFIG_STEP_SHADOW &&
	     st->kind != CONFIG_STEP_PREVIEW))
		return false;
	nx = &ro->steps[r->step + 1];
	end = r->step_started_ms + (int64_t)rollout_dur(r, st->for_ms);
	*step = r->step + 1;
	if (step_gated(nx))
		*at = run_gate_time_since(r, nx, end, end);
	else if (nx->kind == CONFIG_STEP_APPROVAL)
		*at = end;
	else
		return false;
	return *at != INT64_MAX;
}

/* "2026-12-04T06:00:00Z" */
static void iso_time(int64_t ms, char *out, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, len, "%" PRId64, ms);
}

/*
 * Sends the `upcoming` event once per step (persisted with the document,
 * so also once across restarts) when the next opening is within notice.
 */
static void upcoming_tick(struct rollout_engine *e, struct run *r, int64_t now)
{
	uint64_t notice = notice_ms(r);
	const struct config_step *nx;
	char when[40], in[32];
	size_t s;
	int64_t at;
	json_t *d;

	if (!notice || r->state != ROLLOUT_PROGRESSING || !next_opening(r, now, &s, &at) ||
	    r->upcoming_sent >= s + 1 || at <= now || now < at - (int64_t)rollout_dur(r, notice))
		return;
	nx = &r->cfg->steps[s];
	iso_time(at, when, sizeof(when));
	if (at - now >= 3600000)
		snprintf(in, sizeof(in), "%" PRId64 "h%02" PRId64 "m", (at - now) / 3600000,
		         (at - now) / 60000 % 60);
	else
		snprintf(in, sizeof(in), "%" PRId64 "m%02" PRId64 "s", (at - now) / 60000,
		         (at - now) / 1000 % 60);
	r->upcoming_sent = s + 1;
	d = json_pack("{s:I, s:s, s:s, s:I, s:s, s:s, s:I}", "step", (json_int_t)s, "kind",
	              rollout_step_kind_name(nx->kind), "what",
	              nx->kind == CONFIG_STEP_APPROVAL ? "approval gate"
	              : step_gated(nx)                 ? "scheduled step"
	                                               : "step",
	              "opens_at_ms", (json_int_t)at, "opens_at", when, "in", in, "notice_ms",
	              (json_int_t)rollout_dur(r, notice));
	if (nx->kind == CONFIG_STEP_APPROVAL) {
		json_t *req = json_array();

		for (size_t i = 0; i < nx->approvers.n; i++)
			json_array_append_new(req, json_string(nx->approvers.v[i]));
		json_object_set_new(d, "required", req);
	}
	rollout_persist(e, r, ENGINE_ACTOR, rollout_event_list("rollout.upcoming", d));
}

/* ---- the engine: new, load, tick ---- */

struct rollout_engine *rollout_engine_new(const struct config *cfg,
                                          const struct rollout_backend *be)
{
	struct rollout_engine *e;

	if (!cfg || !be || !(be->traffic || be->set_weight) || !be->read_cohort || !be->state)
		return NULL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->cfg = cfg;
	e->be = *be;
	e->nruns = cfg->nrollouts;
	e->runs = calloc(e->nruns ? e->nruns : 1, sizeof(*e->runs));
	if (!e->runs)
		goto out_free;
	for (size_t i = 0; i < e->nruns; i++) {
		struct run *r = &e->runs[i];

		r->cfg = &cfg->rollouts[i];
		r->targets = calloc(r->cfg->ntargets ? r->cfg->ntargets : 1, sizeof(*r->targets));
		r->checks = calloc(r->cfg->analysis.nchecks ? r->cfg->analysis.nchecks : 1,
		                   sizeof(*r->checks));
		if (!r->targets || !r->checks)
			goto out_free;
		if (validate_init(&r->val, r->cfg)) /* validate_engine.c */
			goto out_free;
		rollout_run_reset(r);
	}
	if (state_subscribe(e->be.state, DOC_KIND, rollout_doc_changed, e))
		goto out_free;
	e->subscribed = true;
	return e;
out_free:
	rollout_engine_free(e);
	return NULL;
}

void rollout_engine_free(struct rollout_engine *e)
{
	if (!e)
		return;
	if (e->subscribed)
		state_unsubscribe(e->be.state, DOC_KIND, rollout_doc_changed, e);
	for (size_t i = 0; e->runs && i < e->nruns; i++) {
		for (size_t t = 0; e->runs[i].targets && t < e->runs[i].cfg->ntargets; t++)
			json_decref(e->runs[i].targets[t].saved);
		for (size_t k = 0; e->runs[i].checks && k < e->runs[i].cfg->analysis.nchecks; k++)
			rollout_src_drop(e, &e->runs[i].checks[k]);
		free(e->runs[i].targets);
		free(e->runs[i].checks);
		validate_release(&e->runs[i].val);
		free(e->runs[i].committed);
		json_decref(e->runs[i].pending);
	}
	free(e->runs);
	free(e);
}

int rollout_engine_load(struct rollout_engine *e, int64_t now_ms)
{
	int rc = rollout_docs_load(e);

	for (size_t i = 0; i < e->nruns; i++) {
		struct run *r = &e->runs[i];
		bool reapply = run_active(r) || (r->state == ROLLOUT_ROLLED_BACK && !r->mitigated);

		for (size_t t = 0; reapply && t < r->cfg->ntargets; t++) {
			if (!r->targets[t].touched)
				continue;
			if (rollout_act_weight(e, r, t, ENGINE_ACTOR))
				log_warn("re-applying a rollout weight failed", "rollout",
				         r->cfg->name, "target", r->cfg->targets[t].name, NULL);
		}
		if (run_active(r) && r->step < r->cfg->nsteps && r->phase == PHASE_RUNNING &&
		    r->cfg->steps[r->step].kind == CONFIG_STEP_SHADOW) {
			apply_shadow(e, r, ENGINE_ACTOR, now_ms);
		} else {
			bool had = false;

			for (size_t t = 0; t < r->cfg->ntargets; t++)
				had = had || r->targets[t].shadow;
			if (had) { /* a crash before a stopped mirror was persisted */
				rollout_act_stop_shadow(e, r, ~UINT64_C(0), ENGINE_ACTOR);
				rollout_persist(e, r, ENGINE_ACTOR, NULL);
			}
		}
		if (r->state == ROLLOUT_ROLLED_BACK && !r->mitigated) {
			r->mitigated = true;
			rollout_persist(
			    e, r, ENGINE_ACTOR,
			    rollout_event_list("rollout.mitigated",
			                       json_pack("{s:I, s:I, s:b}", "decision_ms",
			                                 (json_int_t)r->decision_ms, "applied_ms",
			                                 (json_int_t)now_ms, "after_restart", 1)));
		}
		if (run_active(r))
			rollout_prime(e, r, false);
	}
	return rc;
}

void rollout_engine_tick(struct rollout_engine *e, int64_t now_ms)
{
	for (size_t i = 0; i < e->nruns; i++) {
		struct run *r = &e->runs[i];
		uint64_t interval = rollout_dur(r, r->cfg->analysis.interval_ms);

		if (r->post.stage != POST_NONE && r->post.stage != POST_DONE)
			rollout_post_step(e, r, now_ms);
		if (r->reload_wanted) {
			r->reload_wanted = false;
			rollout_engine_reload(e, r->cfg->name, NULL);
			r = &e->runs[i];
		}
		if (r->state == ROLLOUT_COMPLETED && !r->finalized)
			finalize(e, r);
		rollout_validate_tick(e, r, now_ms); /* validate_engine.c: post-rollout windows */
		if (!run_active(r))
			continue;
		if (r->state == ROLLOUT_PAUSED && r->review_deadline_ms &&
		    now_ms >= r->review_deadline_ms) {
			char why[400];

			snprintf(why, sizeof(why),
			         "nobody resumed or promoted within the review window (paused: %s)",
			         r->pause_reason);
			rollout_rollback(e, r, r->review_targets, ENGINE_ACTOR, now_ms, why, NULL,
			                 0, RB_REVIEW, NULL, 0);
			if (r->state == ROLLOUT_PAUSED) {
				r->review_deadline_ms = 0;
				rollout_persist(e, r, ENGINE_ACTOR, NULL);
			}
			continue;
		}
		rollout_sources_tick(e, r, now_ms);
		rollout_health_tick(e, r, now_ms);
		if (!run_active(r))
			continue;
		if (interval && now_ms >= r->next_interval_ms) {
			r->next_interval_ms += (int64_t)interval;
			if (r->next_interval_ms <= now_ms)
				r->next_interval_ms = now_ms + (int64_t)interval;
			rollout_evaluate(e, r, now_ms);
		}
		if (r->state == ROLLOUT_PROGRESSING)
			advance(e, r, ENGINE_ACTOR, now_ms);
		upcoming_tick(e, r, now_ms);
	}
}

/* ---- controls ---- */

/* The other active rollout owning one of r's service targets, or NULL. */
static const char *conflict(const struct rollout_engine *e, const struct run *r)
{
	for (size_t t = 0; t < r->cfg->ntargets; t++) {
		const struct config_target *tg = run_target(r, t);
		const char *o;

		if (tg->kind == CONFIG_TARGET_FLAG)
			o = rollout_engine_flag_owner(e, tg->flag);
		else
			o = rollout_engine_owner(e, tg->service);
		if (o && strcmp(o, r->cfg->name) != 0)
			return o;
	}
	return NULL;
}

/* Starts a run (a start, or a retry keeping the run's rehearsal speed: rehearse < 0). */
static int begin_run(struct rollout_engine *e, struct run *r, const char *actor, int64_t now,
                     const char *kind, double rehearse)
{
	uint32_t gen = r->generation;
	double speed = rehearse < 0 ? r->rehearse : rehearse;
	json_t *d;
	int rc;

	rollout_run_reset(r);
	r->state = ROLLOUT_PROGRESSING;
	r->generation = gen + 1;
	r->rehearse = speed > 0 ? speed : 0;
	r->started_ms = now;
	r->waiting_since_ms = now;
	r->next_interval_ms = now + (int64_t)rollout_dur(r, r->cfg->analysis.interval_ms);
	d = json_pack("{s:I, s:I}", "generation", (json_int_t)r->generation, "steps",
	              (json_int_t)r->cfg->nsteps);
	rc = rollout_persist(e, r, actor, rollout_event_list(kind, d));
	if (rc)
		return rc;
	rollout_prime(e, r, true);
	advance(e, r, actor, now);
	return 0;
}

/*
 * A failed control's code: the store being away stays ERR_UNAVAILABLE;
 * anything else that kept the change from being made (the store refused,
 * or applying the step failed and paused the rollout) is ERR_STORE.
 */
static int store_err(int rc)
{
	/* ERR_CONFLICT: fenced (fleet mode): this node does not hold the leader's term */
	return rc == ERR_UNAVAILABLE || rc == ERR_CONFLICT ? rc : ERR_STORE;
}

static int control(struct rollout_engine *e, const char *name, enum rollout_control c,
                   const char *actor, int64_t now_ms, double rehearse, char *msg, size_t msglen);

int rollout_engine_control(struct rollout_engine *e, const char *name, enum rollout_control c,
                           const char *actor, int64_t now_ms, char *msg, size_t msglen)
{
	return control(e, name, c, actor, now_ms, c == ROLLOUT_RETRY ? -1 : 0, msg, msglen);
}

int rollout_engine_start(struct rollout_engine *e, const char *name, double rehearse,
                         const char *actor, int64_t now_ms, char *msg, size_t msglen)
{
	if (!(rehearse >= 0) || rehearse > ROLLOUT_REHEARSE_MAX) {
		set_msg(msg, msglen, "rehearse: must be a positive number up to %g",
		        (double)ROLLOUT_REHEARSE_MAX);
		return -EINVAL;
	}
	return control(e, name, ROLLOUT_START, actor, now_ms, rehearse, msg, msglen);
}

static int control(struct rollout_engine *e, const char *name, enum rollout_control c,
                   const char *actor, int64_t now_ms, double rehearse, char *msg, size_t msglen)
{
	struct run *r = rollout_find(e, name);
	const struct config_step *st;
	const char *other;
	int rc;

	if (!r) {
		set_msg(msg, msglen, "no rollout named \"%s\"", name ? name : "");
		return ERR_NOTFOUND;
	}
	if (!actor || !*actor)
		actor = "anonymous";
	st = r->step < r->cfg->nsteps ? &r->cfg->steps[r->step] : NULL;

	switch (c) {
	case ROLLOUT_START:
	case ROLLOUT_RETRY: {
		bool ok = c == ROLLOUT_START
		              ? r->state == ROLLOUT_IDLE
		              : (r->state == ROLLOUT_ROLLED_BACK || r->state == ROLLOUT_FAILED);

		if (!ok)
			goto wrong_state;
		other = conflict(e, r);
		if (other) {
			set_msg(msg, msglen, "a target of %s is owned by active rollout %s", name,
			        other);
			return ERR_CONFLICT;
		}
		rc = begin_run(e, r, actor, now_ms,
		               c == ROLLOUT_START ? "rollout.started" : "rollout.retry", rehearse);
		if (rc) {
			set_msg(msg, msglen, "%s: could not %s (store error)", name,
			        rollout_control_name(c));
			return store_err(rc);
		}
		if (r->rehearse > 0)
			set_msg(msg, msglen, "%s: %s (REHEARSAL at %gx: every duration / %g)", name,
			        rollout_state_name(r->state), r->rehearse, r->rehearse);
		else
			set_msg(msg, msglen, "%s: %s", name, rollout_state_name(r->state));
		return 0;
	}
	case ROLLOUT_PROMOTE:
		if (run_active(r) && run_baking(r)) {
			rc = complete(
			    e, r, actor, now_ms,
			    rollout_event_list("rollout.promoted",
			                       json_pack("{s:I, s:s}", "step", (json_int_t)r->step,
			                                 "what", "bake ended early")));
			if (rc)
				goto store_error;
			set_msg(msg, msglen, "%s: completed (bake ended early)", name);
			return 0;
		}
		if (!run_active(r) || !st)
			goto wrong_state;
		r->state = ROLLOUT_PROGRESSING;
		r->review_deadline_ms = 0;
		r->pause_reason[0] = '\0';
		if (r->phase == PHASE_WAITING) {
			/* Promote lifts the step's gates: begin it now. */
			rc = rollout_persist(
			    e, r, actor,
			    rollout_event_list("rollout.promoted",
			                       json_pack("{s:I, s:s}", "step", (json_int_t)r->step,
			                                 "what", "gates lifted")));
			if (rc)
				goto store_error;
			rc = begin_step(e, r, actor, now_ms);
			if (rc)
				goto store_error;
		} else {
			rc = rollout_persist(
			    e, r, actor,
			    rollout_event_list("rollout.promoted",
			                       json_pack("{s:I, s:s}", "step", (json_int_t)r->step,
			                                 "what", "step finished")));
			if (rc)
				goto store_error;
			rc = pass_step(e, r, actor, now_ms, "promoted");
			if (rc)
				goto store_error;
		}
		advance(e, r, actor, now_ms);
		set_msg(msg, msglen, "%s: %s at step %zu of %zu", name,
		        rollout_state_name(r->state), r->step, r->cfg->nsteps);
		return 0;
	case ROLLOUT_PROMOTE_FULL: {
		json_t *evs;

		if (!run_active(r))
			goto wrong_state;
		evs = json_array();
		for (size_t t = 0; t < r->cfg->ntargets; t++) {
			if (r->targets[t].rolled_back ||
			    (run_target(r, t)->kind == CONFIG_TARGET_FLAG &&
			     (!rollout_flags_wired(e) || !rollout_act_save_flag(e, r, t))))
				continue;
			r->targets[t].weight = 100000;
			r->targets[t].touched = true;
		}
		json_array_append_new(
		    evs, rollout_event("rollout.promoted",
		                       json_pack("{s:I, s:s}", "step", (json_int_t)r->step, "what",
		                                 "full: every target to 100%")));
		rc = steps_done(e, r, actor, now_ms, evs);
		if (rc)
			goto store_error;
		for (size_t t = 0; t < r->cfg->ntargets; t++)
			if (!r->targets[t].rolled_back && rollout_act_weight(e, r, t, actor))
				log_warn("setting a target to 100% failed", "rollout", name,
				         "target", r->cfg->targets[t].name, NULL);
		set_msg(msg, msglen, "%s: %s (promoted to 100%%)", name,
		        run_baking(r) ? "baking" : rollout_state_name(r->state));
		return 0;
	}
	case ROLLOUT_PAUSE: {
		char why[128];

		if (r->state != ROLLOUT_PROGRESSING)
			goto wrong_state;
		snprintf(why, sizeof(why), "paused by %s", actor);
		rc = rollout_pause(e, r, actor, now_ms, why, 0, ALL_TARGETS, NULL);
		if (rc)
			goto store_error;
		set_msg(msg, msglen, "%s: paused", name);
		return 0;
	}
	case ROLLOUT_RESUME:
		if (r->state != ROLLOUT_PAUSED)
			goto wrong_state;
		r->state = ROLLOUT_PROGRESSING;
		r->review_deadline_ms = 0;
		r->pause_reason[0] = '\0';
		/* A fresh start for `for` streaks and for an analysis step's hold. */
		for (size_t k = 0; k < r->cfg->analysis.nchecks; k++)
			r->checks[k].fails = 0, r->checks[k].first_fail_ms = 0;
		if (st && st->kind == CONFIG_STEP_ANALYSIS && r->phase == PHASE_RUNNING)
			r->step_started_ms = now_ms;
		r->evidence_from_ms = now_ms; /* max_wait starts again; the evidence stays */
		rc = rollout_persist(
		    e, r, actor,
		    rollout_event_list("rollout.resumed",
		                       json_pack("{s:I}", "step", (json_int_t)r->step)));
		if (rc)
			goto store_error;
		advance(e, r, actor, now_ms);
		set_msg(msg, msglen, "%s: %s", name, rollout_state_name(r->state));
		return 0;
	case ROLLOUT_ABORT: {
		char why[128];

		if (!run_active(r))
			goto wrong_state;
		snprintf(why, sizeof(why), "aborted by %s", actor);
		rc = rollout_rollback(e, r, ALL_TARGETS, actor, now_ms, why, NULL, 0, RB_ABORT,
		                      NULL, 0);
		if (rc && r->state != ROLLOUT_FAILED)
			goto store_error;
		set_msg(msg, msglen, "%s: %s", name, rollout_state_name(r->state));
		return 0;
	}
	case ROLLOUT_APPROVE: {
		size_t k;
		bool all = true;

		if (!run_active(r) || !st || st->kind != CONFIG_STEP_APPROVAL ||
		    r->phase != PHASE_RUNNING)
			goto wrong_state;
		for (k = 0; k < st->approvers.n; k++)
			if (strcmp(st->approvers.v[k], actor) == 0)
				break;
		if (k == st->approvers.n || k >= MAX_APPROVERS) {
			set_msg(msg, msglen, "%s is not one of the approvers of step %zu of %s",
			        actor, r->step, name);
			return ERR_FORBIDDEN;
		}
		if (r->approvals >> k & 1) {
			set_msg(msg, msglen, "%s: %s already approved step %zu", name, actor,
			        r->step);
			return 0;
		}
		r->approvals |= UINT64_C(1) << k;
		for (size_t i = 0; i < st->approvers.n; i++)
			all = all && (r->approvals >> i & 1);
		rc = rollout_persist(
		    e, r, actor,
		    rollout_event_list("rollout.approved",
		                       json_pack("{s:I, s:s, s:b}", "step", (json_int_t)r->step,
		                                 "by", actor, "complete", all)));
		if (rc)
			goto store_error;
		if (r->state == ROLLOUT_PROGRESSING)
			advance(e, r, actor, now_ms);
		set_msg(msg, msglen, "%s: approved by %s%s", name, actor,
		        all ? "; every approver has approved" : "");
		return 0;
	}
	}
	set_msg(msg, msglen, "unknown control");
	return -EINVAL;

wrong_state:
	set_msg(msg, msglen, "cannot %s %s: it is %s", rollout_control_name(c), name,
	        rollout_state_name(r->state));
	return ERR_STATE;
store_error:
	if (rc == ERR_CONFLICT)
		set_msg(msg, msglen,
		        "%s: refused: this node is not the fleet leader (send rollout controls to "
		        "the leader: GET /v1/fleet)",
		        name);
	else
		set_msg(msg, msglen, "%s: the store refused the change", name);
	return store_err(rc);
}

int rollout_engine_rollback_all(struct rollout_engine *e, const char *actor, int64_t now_ms)
{
	char why[128];
	int n = 0;

	snprintf(why, sizeof(why), "emergency rollback by %s", actor ? actor : "anonymous");
	for (size_t i = 0; i < e->nruns; i++) {
		if (!run_active(&e->runs[i]))
			continue;
		rollout_rollback(e, &e->runs[i], ALL_TARGETS, actor ? actor : "anonymous", now_ms,
		                 why, NULL, 0, RB_EMERGENCY, NULL, 0);
		n++;
	}
	return n;
}

/* ---- queries ---- */

/* The active rollout with a not rolled back target of kind driving name. */
static const char *owner(const struct rollout_engine *e, enum config_target_kind kind,
                         const char *name)
{
	for (size_t i = 0; e && name && i < e->nruns; i++) {
		const struct run *r = &e->runs[i];

		/* a validation window with on_fail: rollback keeps the services (validate.h) */
		if (!run_active(r) && !validate_holds(&r->val))
			continue;
		for (size_t t = 0; t < r->cfg->ntargets; t++) {
			const struct config_target *tg = run_target(r, t);

			if (tg->kind == kind && !r->targets[t].rolled_back &&
			    strcmp(kind == CONFIG_TARGET_FLAG ? tg->flag : tg->service, name) == 0)
				return r->cfg->name;
		}
	}
	return NULL;
}

const char *rollout_engine_owner(const struct rollout_engine *e, const char *service)
{
	return owner(e, CONFIG_TARGET_SERVICE, service);
}

const char *rollout_engine_flag_owner(const struct rollout_engine *e, const char *flag)
{
	return owner(e, CONFIG_TARGET_FLAG, flag);
}

int rollout_engine_state(const struct rollout_engine *e, const char *name)
{
	const struct run *r = rollout_find(e, name);

	return r ? (int)r->state : -1;
}

int rollout_engine_step(const struct rollout_engine *e, const char *name)
{
	const struct run *r = rollout_find(e, name);

	return r ? (int)r->step : -1;
}

int64_t rollout_engine_now(const struct rollout_engine *e)
{
	if (e->be.now_ms)
		return e->be.now_ms(e->be.ctx);
	return (int64_t)clock_wall_ms();
}

struct store *rollout_engine_store(const struct rollout_engine *e)
{
	return state_store(e->be.state);
}

/* ---- reloads: a new config (adopt), another node's commit (reload) ---- */

void rollout_engine_adopt(struct rollout_engine *e, const struct rollout_engine *old)
{
	for (size_t i = 0; old && i < e->nruns; i++) {
		struct run *r = &e->runs[i];
		const struct run *o = rollout_find(old, r->cfg->name);

		if (!o)
			continue;
		r->ctr = o->ctr;
		if (r->post.stage == POST_HOOKS && o->post.stage == POST_HOOKS &&
		    r->post.hook == o->post.hook && r->post.hook_started)
			r->post.job = o->post.job;
		for (size_t t = 0; t < r->cfg->ntargets; t++) {
			const struct config_target *tg = run_target(r, t);

			for (size_t u = 0; u < o->cfg->ntargets; u++) {
				const struct config_target *og = run_target(o, u);
				struct target_run *tr = &r->targets[t];
				const struct target_run *ot = &o->targets[u];

				if (strcmp(tg->name, og->name) != 0 || tg->kind != og->kind ||
				    (tg->canary && og->canary &&
				     strcmp(tg->canary, og->canary) != 0))
					continue;
				tr->rd = ot->rd;
			}
		}
		for (size_t k = 0; k < r->cfg->analysis.nchecks; k++)
			for (size_t u = 0; u < o->cfg->analysis.nchecks; u++)
				if (strcmp(r->cfg->analysis.checks[k].name,
				           o->cfg->analysis.checks[u].name) == 0) {
					memcpy(r->checks[k].verdicts, o->checks[u].verdicts,
					       sizeof(r->checks[k].verdicts));
					r->checks[k].have_verdict = o->checks[u].have_verdict;
					r->checks[k].last = o->checks[u].last;
					r->checks[k].last.check = r->cfg->analysis.checks[k].name;
					/* count checks' step counts */
					rollout_src_adopt(r, k, o, u);
				}
	}
}

int rollout_engine_reload(struct rollout_engine *e, const char *name, const char *json)
{
	struct run *r = rollout_find(e, name);
	char *text = NULL;
	int rc = 0;

	if (!r)
		return ERR_NOTFOUND;
	if (!json) {
		rc = store_doc_get(state_store(e->be.state), DOC_KIND, name, &text, NULL);
		if (rc == STORE_ERR_NOTFOUND) {
			rollout_run_reset(r);
			free(r->committed);
			r->committed = NULL;
			return 0;
		}
		if (rc)
			return state_err_of_store(rc);
		json = text;
	}
	rc = rollout_run_load(r, json);
	if (rc)
		log_warn("unreadable rollout document; treated as idle", "rollout", name, NULL);
	/* a round started for another generation or step is not judged: drop it */
	for (size_t k = 0; k < r->cfg->analysis.nchecks; k++)
		rollout_src_drop(e, &r->checks[k]);
	free(text);
	return rc;
}

void rollout_doc_changed(void *arg, const struct state_update *u)
{
	struct rollout_engine *e = arg;
	struct run *r;

	/* this engine's own commits: the run already is what it committed */
	if (u->origin != STATE_REMOTE)
		return;
	if (u->json) {
		rollout_engine_reload(e, u->name, u->json);
		return;
	}
	r = rollout_find(e, u->name);
	if (r) { /* deleted: as if never started */
		rollout_run_reset(r);
		free(r->committed);
		r->committed = NULL;
	}
}
