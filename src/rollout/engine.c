/*
 * engine.c - the rollout state machine (see engine.h and docs/rollout.md).
 *
 * Every transition follows the same order: change the in-memory run, write
 * its document and events in one store transaction (persist()), and only
 * then apply the action (set_weight).  When the write fails, the run is
 * restored from its last committed document (restore()), so memory never
 * runs ahead of the store.
 */
#include "rollout/engine.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "analysis/check.h"
#include "config/config.h"
#include "core/log.h"
#include "store/store.h"

#define DOC_KIND      "rollout"
#define ENGINE_ACTOR  "canaryd"
#define MAX_APPROVERS 64
#define DAY_MS        INT64_C(86400000)
#define MIN_MS        INT64_C(60000)

enum phase {
	PHASE_WAITING, /* gates (not_before, window) not yet passed; action not applied */
	PHASE_RUNNING, /* action applied; holding until the step is done */
};

struct check_run {
	uint32_t fails;        /* consecutive failing intervals */
	int64_t first_fail_ms; /* end of the first failing interval of the streak */
	bool have_verdict;
	struct check_verdict last;
};

struct target_run {
	uint32_t weight;  /* desired canary weight, thousandths */
	bool touched;     /* this run has set the weight (re-applied on load) */
	bool rolled_back; /* weight forced to 0; later steps skip it */
	bool have_prev;   /* prev_* hold a cumulative reading */
	struct metrics_cohort_snapshot prev_canary, prev_baseline;
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
	int review_target; /* on review expiry: -1 all targets, else one */
	int64_t next_interval_ms;
	int64_t started_ms, ended_ms, decision_ms;
	uint32_t generation; /* 1 after start, +1 per retry */
	bool mitigated;      /* the rollback's zero weights were applied */
	bool analysis_passed;
	struct target_run *targets;
	struct check_run *checks;
};

struct rollout_engine {
	const struct config *cfg;
	struct rollout_backend be;
	struct run *runs;
	size_t nruns;
};

/* ------------------------------------------------------------------------ */
/* Names                                                                     */

const char *rollout_state_name(enum rollout_state s)
{
	static const char *const names[] = {"idle",      "progressing", "paused",
	                                    "completed", "rolled_back", "failed"};

	return (size_t)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

const char *rollout_control_name(enum rollout_control c)
{
	static const char *const names[] = {"start",  "promote", "promote_full", "pause",
	                                    "resume", "abort",   "retry",        "approve"};

	return (size_t)c < sizeof(names) / sizeof(names[0]) ? names[c] : "unknown";
}

static const char *step_kind_name(enum config_step_kind k)
{
	switch (k) {
	case CONFIG_STEP_SET:
		return "set";
	case CONFIG_STEP_SHADOW:
		return "shadow";
	case CONFIG_STEP_PAUSE:
		return "pause";
	case CONFIG_STEP_ANALYSIS:
		return "analysis";
	case CONFIG_STEP_APPROVAL:
		return "approval";
	}
	return "unknown";
}

static int state_from_name(const char *s)
{
	for (int i = ROLLOUT_IDLE; i <= ROLLOUT_FAILED; i++)
		if (strcmp(s, rollout_state_name((enum rollout_state)i)) == 0)
			return i;
	return -1;
}

static bool active(const struct run *r)
{
	return r->state == ROLLOUT_PROGRESSING || r->state == ROLLOUT_PAUSED;
}

static void say(char *msg, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *msg, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!msg || len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, len, fmt, ap);
	va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* Time gates                                                                */

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

/* ------------------------------------------------------------------------ */
/* Documents                                                                 */

static json_t *run_doc(const struct run *r)
{
	const struct config_rollout *ro = r->cfg;
	json_t *targets = json_array(), *checks = json_array(), *appr = json_array();

	for (size_t i = 0; i < ro->ntargets; i++)
		json_array_append_new(targets,
		                      json_pack("{s:s, s:I, s:b, s:b}", "name", ro->targets[i].name,
		                                "weight", (json_int_t)r->targets[i].weight,
		                                "touched", r->targets[i].touched, "rolled_back",
		                                r->targets[i].rolled_back));
	for (size_t i = 0; i < ro->analysis.nchecks; i++)
		json_array_append_new(
		    checks, json_pack("{s:s, s:I, s:I}", "name", ro->analysis.checks[i].name,
		                      "fails", (json_int_t)r->checks[i].fails, "first_fail",
		                      (json_int_t)r->checks[i].first_fail_ms));
	if (r->step < ro->nsteps && ro->steps[r->step].kind == CONFIG_STEP_APPROVAL) {
		const struct config_strlist *a = &ro->steps[r->step].approvers;

		for (size_t i = 0; i < a->n && i < MAX_APPROVERS; i++)
			if (r->approvals >> i & 1)
				json_array_append_new(appr, json_string(a->v[i]));
	}
	return json_pack(
	    "{s:s, s:I, s:s, s:I, s:I, s:o, s:s, s:I, s:I, s:i, s:I, s:I, s:I, s:I, "
	    "s:I, s:b, s:o, s:o}",
	    "state", rollout_state_name(r->state), "step", (json_int_t)r->step, "phase",
	    r->phase == PHASE_WAITING ? "waiting" : "running", "waiting_since",
	    (json_int_t)r->waiting_since_ms, "step_started", (json_int_t)r->step_started_ms,
	    "approvals", appr, "pause_reason", r->pause_reason, "paused_at",
	    (json_int_t)r->paused_at_ms, "review_deadline", (json_int_t)r->review_deadline_ms,
	    "review_target", r->review_target, "next_interval", (json_int_t)r->next_interval_ms,
	    "started", (json_int_t)r->started_ms, "ended", (json_int_t)r->ended_ms, "decision",
	    (json_int_t)r->decision_ms, "generation", (json_int_t)r->generation, "mitigated",
	    r->mitigated, "targets", targets, "checks", checks);
}

static int64_t jint(const json_t *o, const char *key)
{
	return (int64_t)json_integer_value(json_object_get(o, key));
}

/* Resets r to a fresh idle run (keeps metric readings and verdicts). */
static void run_reset(struct run *r)
{
	r->state = ROLLOUT_IDLE;
	r->step = 0;
	r->phase = PHASE_WAITING;
	r->waiting_since_ms = r->step_started_ms = 0;
	r->approvals = 0;
	r->pause_reason[0] = '\0';
	r->paused_at_ms = r->review_deadline_ms = 0;
	r->review_target = -1;
	r->next_interval_ms = r->started_ms = r->ended_ms = r->decision_ms = 0;
	r->mitigated = false;
	r->analysis_passed = false;
	for (size_t i = 0; i < r->cfg->ntargets; i++) {
		r->targets[i].weight = 0;
		r->targets[i].touched = r->targets[i].rolled_back = false;
	}
	for (size_t i = 0; i < r->cfg->analysis.nchecks; i++) {
		r->checks[i].fails = 0;
		r->checks[i].first_fail_ms = 0;
	}
}

/* Fills r from its document text.  Returns 0 or -EINVAL (r is then idle). */
static int run_parse(struct run *r, const char *text)
{
	const struct config_rollout *ro = r->cfg;
	json_t *o = json_loads(text, 0, NULL), *v;
	const char *s;
	size_t i;
	int st;

	run_reset(r);
	if (!json_is_object(o))
		goto bad;
	s = json_string_value(json_object_get(o, "state"));
	st = s ? state_from_name(s) : -1;
	if (st < 0)
		goto bad;
	r->state = (enum rollout_state)st;
	r->step = (size_t)jint(o, "step");
	if (r->step > ro->nsteps)
		goto bad;
	s = json_string_value(json_object_get(o, "phase"));
	r->phase = s && strcmp(s, "running") == 0 ? PHASE_RUNNING : PHASE_WAITING;
	r->waiting_since_ms = jint(o, "waiting_since");
	r->step_started_ms = jint(o, "step_started");
	s = json_string_value(json_object_get(o, "pause_reason"));
	snprintf(r->pause_reason, sizeof(r->pause_reason), "%s", s ? s : "");
	r->paused_at_ms = jint(o, "paused_at");
	r->review_deadline_ms = jint(o, "review_deadline");
	r->review_target = (int)jint(o, "review_target");
	if (r->review_target < -1 || r->review_target >= (int)ro->ntargets)
		r->review_target = -1;
	r->next_interval_ms = jint(o, "next_interval");
	r->started_ms = jint(o, "started");
	r->ended_ms = jint(o, "ended");
	r->decision_ms = jint(o, "decision");
	r->generation = (uint32_t)jint(o, "generation");
	r->mitigated = json_is_true(json_object_get(o, "mitigated"));
	json_array_foreach(json_object_get(o, "targets"), i, v)
	{
		s = json_string_value(json_object_get(v, "name"));
		for (size_t t = 0; s && t < ro->ntargets; t++) {
			if (strcmp(s, ro->targets[t].name) != 0)
				continue;
			r->targets[t].weight = (uint32_t)jint(v, "weight");
			r->targets[t].touched = json_is_true(json_object_get(v, "touched"));
			r->targets[t].rolled_back = json_is_true(json_object_get(v, "rolled_back"));
		}
	}
	json_array_foreach(json_object_get(o, "checks"), i, v)
	{
		s = json_string_value(json_object_get(v, "name"));
		for (size_t k = 0; s && k < ro->analysis.nchecks; k++) {
			if (strcmp(s, ro->analysis.checks[k].name) != 0)
				continue;
			r->checks[k].fails = (uint32_t)jint(v, "fails");
			r->checks[k].first_fail_ms = jint(v, "first_fail");
		}
	}
	if (r->step < ro->nsteps && ro->steps[r->step].kind == CONFIG_STEP_APPROVAL) {
		const struct config_strlist *a = &ro->steps[r->step].approvers;

		json_array_foreach(json_object_get(o, "approvals"), i, v)
		{
			s = json_string_value(v);
			for (size_t k = 0; s && k < a->n && k < MAX_APPROVERS; k++)
				if (strcmp(s, a->v[k]) == 0)
					r->approvals |= UINT64_C(1) << k;
		}
	}
	json_decref(o);
	return 0;
bad:
	json_decref(o);
	run_reset(r);
	return -EINVAL;
}

/* Puts r back to its last committed document (after a failed write). */
static void restore(struct rollout_engine *e, struct run *r)
{
	char *text = NULL;

	if (store_doc_get(e->be.store, DOC_KIND, r->cfg->name, &text, NULL) == 0)
		run_parse(r, text);
	else
		run_reset(r);
	free(text);
}

/* {"kind": kind, "details": details(stolen)} for persist(). */
static json_t *ev(const char *kind, json_t *details)
{
	return json_pack("{s:s, s:o}", "kind", kind, "details", details ? details : json_object());
}

/*
 * Writes r's document and the events (a JSON array of ev(), stolen; may be
 * NULL) in one transaction, then notifies.  On failure restores r from the
 * store and returns the error: the caller must not apply its action.
 */
static int persist(struct rollout_engine *e, struct run *r, const char *actor, json_t *events)
{
	struct store *st = e->be.store;
	char subject[STORE_NAME_MAX + 1];
	char *doc = NULL;
	json_t *x;
	size_t i;
	int rc;

	snprintf(subject, sizeof(subject), "rollout/%s", r->cfg->name);
	x = run_doc(r);
	doc = x ? json_dumps(x, JSON_COMPACT) : NULL;
	json_decref(x);
	if (!doc) {
		rc = -ENOMEM;
		goto out_restore;
	}
	rc = store_begin(st);
	if (rc)
		goto out_restore;
	rc = store_doc_put(st, DOC_KIND, r->cfg->name, doc, STORE_REV_ANY, NULL);
	json_array_foreach(events, i, x)
	{
		char *details;

		if (rc)
			break;
		details = json_dumps(json_object_get(x, "details"), JSON_COMPACT);
		rc = details ? store_event_append(st, actor,
		                                  json_string_value(json_object_get(x, "kind")),
		                                  subject, details, NULL)
		             : -ENOMEM;
		free(details);
	}
	if (rc) {
		store_rollback(st);
		goto out_restore;
	}
	rc = store_commit(st);
	if (rc)
		goto out_restore;
	if (e->be.notify)
		json_array_foreach(events, i, x)
		    e->be.notify(e->be.ctx, json_string_value(json_object_get(x, "kind")),
		                 r->cfg->name, json_object_get(x, "details"));
	free(doc);
	json_decref(events);
	return 0;

out_restore:
	log_warn("rollout store write failed", "rollout", r->cfg->name, "error", store_strerror(rc),
	         NULL);
	free(doc);
	json_decref(events);
	restore(e, r);
	return rc;
}

static json_t *one(const char *kind, json_t *details)
{
	json_t *a = json_array();

	json_array_append_new(a, ev(kind, details));
	return a;
}

/* ------------------------------------------------------------------------ */
/* Actions                                                                   */

static const struct config_target *target(const struct run *r, size_t t)
{
	return &r->cfg->targets[t];
}

/* Applies target t's desired weight.  Returns 0 or the backend's error. */
static int apply_weight(struct rollout_engine *e, struct run *r, size_t t, const char *actor)
{
	const struct config_target *tg = target(r, t);

	if (tg->kind != CONFIG_TARGET_SERVICE)
		return 0;
	return e->be.set_weight(e->be.ctx, tg->service, tg->canary, r->targets[t].weight, actor);
}

/* Takes the cumulative readings that the next interval's deltas start from. */
static void prime(struct rollout_engine *e, struct run *r)
{
	for (size_t t = 0; t < r->cfg->ntargets; t++) {
		const struct config_target *tg = target(r, t);
		struct target_run *tr = &r->targets[t];

		tr->have_prev = false;
		if (tg->kind != CONFIG_TARGET_SERVICE || !tg->svc)
			continue;
		if (e->be.read_cohort(e->be.ctx, tg->service, tg->canary, COHORT_CANARY,
		                      &tr->prev_canary) == 0 &&
		    e->be.read_cohort(e->be.ctx, tg->service, tg->svc->stable, COHORT_BASELINE,
		                      &tr->prev_baseline) == 0)
			tr->have_prev = true;
	}
}

static int do_pause(struct rollout_engine *e, struct run *r, const char *actor, int64_t now,
                    const char *reason, uint64_t review_ms, int review_target, json_t *extra)
{
	json_t *d;

	r->state = ROLLOUT_PAUSED;
	r->paused_at_ms = now;
	snprintf(r->pause_reason, sizeof(r->pause_reason), "%s", reason);
	r->review_deadline_ms = review_ms ? now + (int64_t)review_ms : 0;
	r->review_target = review_target;
	d = json_pack("{s:s, s:I, s:I}", "reason", reason, "step", (json_int_t)r->step,
	              "review_deadline", (json_int_t)r->review_deadline_ms);
	if (extra)
		json_object_update(d, extra);
	json_decref(extra);
	return persist(e, r, actor, one("rollout.paused", d));
}

/*
 * Rolls back target `only` (-1: every target): persist, then weights to 0.
 * v / first_fail_ms describe the deciding verdict (NULL / 0 for manual).
 */
static int do_rollback(struct rollout_engine *e, struct run *r, int only, const char *actor,
                       int64_t now, const char *reason, const struct check_verdict *v,
                       int64_t first_fail_ms)
{
	const struct config_rollout *ro = r->cfg;
	json_t *names = json_array(), *hooks = json_array(), *d;
	bool all = true, failed = false;
	char why[256] = "";
	int rc;

	for (size_t t = 0; t < ro->ntargets; t++) {
		if (only < 0 || (size_t)only == t) {
			r->targets[t].rolled_back = true;
			r->targets[t].weight = 0;
			r->targets[t].touched = true;
			json_array_append_new(names, json_string(ro->targets[t].name));
		}
		all = all && r->targets[t].rolled_back;
	}
	r->decision_ms = now;
	if (all) {
		r->state = ROLLOUT_ROLLED_BACK;
		r->ended_ms = now;
		r->mitigated = false;
		r->review_deadline_ms = 0;
	}
	for (size_t h = 0; h < ro->rollback.nhooks; h++)
		json_array_append_new(
		    hooks,
		    json_pack("{s:I, s:s, s:s, s:s}", "index", (json_int_t)h, "kind",
		              ro->rollback.hooks[h].kind == CONFIG_HOOK_EXEC ? "exec" : "webhook",
		              "status", "not_run", "why",
		              "rollback hooks are not implemented yet"));
	d = json_pack("{s:s, s:o, s:b, s:I, s:I, s:o, s:I}", "reason", reason, "targets", names,
	              "all", all, "step", (json_int_t)r->step, "decision_ms", (json_int_t)now,
	              "hooks", hooks, "drain_ms", (json_int_t)ro->rollback.drain_ms);
	if (first_fail_ms) {
		int64_t start = first_fail_ms - (int64_t)ro->analysis.interval_ms;

		json_object_set_new(d, "first_failing_interval_start_ms", json_integer(start));
		json_object_set_new(d, "time_to_detect_ms", json_integer(now - start));
	}
	if (v)
		json_object_set_new(d, "verdict", check_verdict_json(v));
	rc = persist(e, r, actor, one("rollout.rollback", d));
	if (rc)
		return rc;

	for (size_t t = 0; t < ro->ntargets; t++) {
		if (only >= 0 && (size_t)only != t)
			continue;
		rc = apply_weight(e, r, t, actor);
		if (rc) {
			failed = true;
			snprintf(why, sizeof(why), "could not set %s to 0%%: error %d",
			         ro->targets[t].name, rc);
		}
	}
	if (failed) {
		r->state = ROLLOUT_FAILED;
		r->ended_ms = now;
		return persist(e, r, actor,
		               one("rollout.failed", json_pack("{s:s}", "reason", why)));
	}
	if (all) {
		r->mitigated = true;
		return persist(
		    e, r, actor,
		    one("rollout.mitigated", json_pack("{s:I, s:I}", "decision_ms", (json_int_t)now,
		                                       "applied_ms", (json_int_t)now)));
	}
	return 0;
}

/* Applies the current (SET) step's weights after they were persisted. */
static int apply_step(struct rollout_engine *e, struct run *r, const char *actor, int64_t now)
{
	const struct config_step *st = &r->cfg->steps[r->step];
	char why[256];

	for (size_t i = 0; i < st->nsets; i++) {
		size_t t = st->sets[i].index;
		int rc;

		if (target(r, t)->kind != CONFIG_TARGET_SERVICE || r->targets[t].rolled_back)
			continue;
		rc = apply_weight(e, r, t, actor);
		if (rc) {
			snprintf(why, sizeof(why), "setting %s to %.3f%% failed (error %d)",
			         target(r, t)->name, st->sets[i].percent / 1000.0, rc);
			do_pause(e, r, ENGINE_ACTOR, now, why, 0, -1, NULL);
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
	if (st->kind == CONFIG_STEP_SET) {
		for (size_t i = 0; i < st->nsets; i++) {
			size_t t = st->sets[i].index;

			if (target(r, t)->kind != CONFIG_TARGET_SERVICE) {
				json_array_append_new(
				    skipped, json_pack("{s:s, s:s}", "target", target(r, t)->name,
				                       "why", "flag targets are not wired yet"));
				continue;
			}
			if (r->targets[t].rolled_back) {
				json_array_append_new(
				    skipped, json_pack("{s:s, s:s}", "target", target(r, t)->name,
				                       "why", "the target was rolled back"));
				continue;
			}
			r->targets[t].weight = st->sets[i].percent;
			r->targets[t].touched = true;
			json_object_set_new(weights, target(r, t)->name,
			                    json_real(st->sets[i].percent / 1000.0));
		}
	} else if (st->kind == CONFIG_STEP_SHADOW) {
		json_array_append_new(skipped, json_pack("{s:s, s:s}", "target", "*", "why",
		                                         "shadow steps are not wired yet"));
	}
	d = json_pack("{s:I, s:I, s:s, s:o, s:o}", "step", (json_int_t)r->step, "of",
	              (json_int_t)ro->nsteps, "kind", step_kind_name(st->kind), "weights", weights,
	              "skipped", skipped);
	json_array_append_new(evs, ev("rollout.step", d));
	if (st->kind == CONFIG_STEP_APPROVAL) {
		json_t *req = json_array();

		for (size_t i = 0; i < st->approvers.n; i++)
			json_array_append_new(req, json_string(st->approvers.v[i]));
		json_array_append_new(
		    evs, ev("rollout.approval_needed",
		            json_pack("{s:I, s:o}", "step", (json_int_t)r->step, "required", req)));
	}
	rc = persist(e, r, actor, evs);
	if (rc)
		return rc;
	if (st->kind == CONFIG_STEP_SET)
		return apply_step(e, r, actor, now);
	return 0;
}

static int complete(struct rollout_engine *e, struct run *r, const char *actor, int64_t now,
                    json_t *evs)
{
	r->state = ROLLOUT_COMPLETED;
	r->step = r->cfg->nsteps;
	r->phase = PHASE_WAITING;
	r->ended_ms = now;
	if (!evs)
		evs = json_array();
	json_array_append_new(
	    evs,
	    ev("rollout.completed",
	       json_pack("{s:I, s:s}", "duration_ms", (json_int_t)(now - r->started_ms), "note",
	                 "the canary is not made the stable version and bake is not run yet")));
	return persist(e, r, actor, evs);
}

/* Marks the current step passed and moves to the next (or completes). */
static int pass_step(struct rollout_engine *e, struct run *r, const char *actor, int64_t now,
                     const char *how)
{
	json_t *evs = json_array();
	size_t done = r->step;

	json_array_append_new(evs,
	                      ev("rollout.step.passed",
	                         json_pack("{s:I, s:s, s:s}", "step", (json_int_t)done, "kind",
	                                   step_kind_name(r->cfg->steps[done].kind), "how", how)));
	r->step++;
	r->phase = PHASE_WAITING;
	r->waiting_since_ms = now;
	r->approvals = 0;
	r->analysis_passed = false;
	if (r->step >= r->cfg->nsteps)
		return complete(e, r, actor, now, evs);
	return persist(e, r, actor, evs);
}

static bool step_done(const struct run *r, const struct config_step *st, int64_t now)
{
	int64_t held = now - r->step_started_ms;

	switch (st->kind) {
	case CONFIG_STEP_SET:
	case CONFIG_STEP_SHADOW:
		return held >= (int64_t)st->for_ms;
	case CONFIG_STEP_PAUSE:
		return st->pause_ms && held >= (int64_t)st->pause_ms;
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
			complete(e, r, actor, now, NULL);
			return;
		}
		st = &r->cfg->steps[r->step];
		if (r->phase == PHASE_WAITING) {
			if (rollout_gate_time(&st->not_before, &st->window, r->waiting_since_ms,
			                      now) > now)
				return;
			if (begin_step(e, r, actor, now))
				return;
			continue;
		}
		if (st->kind == CONFIG_STEP_ANALYSIS && !r->analysis_passed &&
		    st->analysis_for_ms &&
		    now - r->step_started_ms >= (int64_t)st->analysis_for_ms) {
			char why[128];

			snprintf(why, sizeof(why),
			         "analysis step %zu ended inconclusive after %" PRIu64 " ms",
			         r->step, st->analysis_for_ms);
			do_pause(e, r, ENGINE_ACTOR, now, why, 0, -1, NULL);
			return;
		}
		if (!step_done(r, st, now))
			return;
		if (pass_step(e, r, actor, now, "done"))
			return;
	}
}

/* ------------------------------------------------------------------------ */
/* Analysis                                                                  */

static int rank(enum check_outcome o)
{
	switch (o) {
	case CHECK_FAIL:
		return 3;
	case CHECK_ERROR:
		return 2;
	case CHECK_INCONCLUSIVE:
		return 1;
	default:
		return 0;
	}
}

/* One analysis interval ending at now: verdicts, counters, decisions. */
static void evaluate(struct rollout_engine *e, struct run *r, int64_t now)
{
	const struct config_rollout *ro = r->cfg;
	uint64_t interval = ro->analysis.interval_ms;
	struct metrics_cohort_snapshot *dc = NULL, *db = NULL;
	bool *have = NULL, all_pass = true, any = false;
	json_t *evs = json_array();
	int act = -1;

	dc = calloc(ro->ntargets, sizeof(*dc));
	db = calloc(ro->ntargets, sizeof(*db));
	have = calloc(ro->ntargets, sizeof(*have));
	if (!dc || !db || !have)
		goto out;
	for (size_t t = 0; t < ro->ntargets; t++) {
		const struct config_target *tg = target(r, t);
		struct target_run *tr = &r->targets[t];
		struct metrics_cohort_snapshot c, b;

		if (tg->kind != CONFIG_TARGET_SERVICE || !tg->svc || tr->rolled_back)
			continue;
		if (e->be.read_cohort(e->be.ctx, tg->service, tg->canary, COHORT_CANARY, &c) ||
		    e->be.read_cohort(e->be.ctx, tg->service, tg->svc->stable, COHORT_BASELINE,
		                      &b)) {
			tr->have_prev = false;
			continue;
		}
		if (tr->have_prev && tr->touched && tr->weight > 0) {
			metrics_snapshot_delta(&tr->prev_canary, &c, &dc[t]);
			metrics_snapshot_delta(&tr->prev_baseline, &b, &db[t]);
			have[t] = true;
		}
		tr->prev_canary = c;
		tr->prev_baseline = b;
		tr->have_prev = true;
	}

	for (size_t k = 0; k < ro->analysis.nchecks; k++) {
		const struct config_check *c = &ro->analysis.checks[k];
		struct check_run *cr = &r->checks[k];
		struct check_verdict best, cur;
		int best_t = -1;

		for (size_t t = 0; t < ro->ntargets; t++) {
			if (!have[t] || (c->target && c->target_index != t))
				continue;
			check_evaluate(c, &dc[t], &db[t], interval, &cur);
			if (best_t < 0 || rank(cur.outcome) > rank(best.outcome)) {
				best = cur;
				best_t = (int)t;
			}
		}
		if (best_t < 0) {
			all_pass = false; /* no data: an analysis step cannot pass */
			continue;
		}
		any = true;
		cr->last = best;
		cr->have_verdict = true;
		if (best.outcome == CHECK_FAIL) {
			if (cr->fails++ == 0)
				cr->first_fail_ms = now;
		} else {
			cr->fails = 0;
			cr->first_fail_ms = 0;
		}
		if (best.outcome != CHECK_PASS)
			all_pass = false;
		{
			json_t *d = check_verdict_json(&best);

			json_object_set_new(d, "target", json_string(ro->targets[best_t].name));
			json_object_set_new(d, "step", json_integer((json_int_t)r->step));
			json_object_set_new(d, "interval_end_ms", json_integer(now));
			json_object_set_new(d, "consecutive_failures", json_integer(cr->fails));
			json_array_append_new(evs, ev("verdict", d));
		}
		if (act < 0 && best.outcome == CHECK_FAIL &&
		    (uint64_t)cr->fails * interval >= c->for_ms)
			act = (int)k;
	}
	if (!any)
		goto out;
	if (all_pass && r->state == ROLLOUT_PROGRESSING && r->step < ro->nsteps &&
	    r->phase == PHASE_RUNNING && ro->steps[r->step].kind == CONFIG_STEP_ANALYSIS &&
	    now - (int64_t)interval >= r->step_started_ms)
		r->analysis_passed = true;
	if (persist(e, r, ENGINE_ACTOR, evs)) {
		evs = NULL;
		goto out;
	}
	evs = NULL;
	if (act >= 0) {
		const struct config_check *c = &ro->analysis.checks[act];
		struct check_run *cr = &r->checks[act];
		int only = c->target ? (int)c->target_index : -1;

		if (c->on_fail == CONFIG_ON_FAIL_ROLLBACK) {
			do_rollback(e, r, only, ENGINE_ACTOR, now, cr->last.reason, &cr->last,
			            cr->first_fail_ms);
		} else if (r->state == ROLLOUT_PROGRESSING) {
			json_t *x = json_pack("{s:s, s:o}", "check", c->name, "verdict",
			                      check_verdict_json(&cr->last));

			do_pause(e, r, ENGINE_ACTOR, now, cr->last.reason, c->review_ms, only, x);
		}
	}
out:
	json_decref(evs);
	free(dc);
	free(db);
	free(have);
}

/* ------------------------------------------------------------------------ */
/* Engine                                                                    */

struct rollout_engine *rollout_engine_new(const struct config *cfg,
                                          const struct rollout_backend *be)
{
	struct rollout_engine *e;

	if (!cfg || !be || !be->set_weight || !be->read_cohort || !be->store)
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
		run_reset(r);
	}
	return e;
out_free:
	rollout_engine_free(e);
	return NULL;
}

void rollout_engine_free(struct rollout_engine *e)
{
	if (!e)
		return;
	for (size_t i = 0; e->runs && i < e->nruns; i++) {
		free(e->runs[i].targets);
		free(e->runs[i].checks);
	}
	free(e->runs);
	free(e);
}

static struct run *find(const struct rollout_engine *e, const char *name)
{
	for (size_t i = 0; name && i < e->nruns; i++)
		if (strcmp(e->runs[i].cfg->name, name) == 0)
			return &e->runs[i];
	return NULL;
}

struct load_ctx {
	struct rollout_engine *e;
	int64_t now;
};

static int load_one(void *arg, const char *name, const char *json, int64_t rev)
{
	struct load_ctx *lc = arg;
	struct run *r = find(lc->e, name);

	(void)rev;
	if (!r)
		return 0;
	if (run_parse(r, json))
		log_warn("unreadable rollout document; treated as idle", "rollout", name, NULL);
	return 0;
}

int rollout_engine_load(struct rollout_engine *e, int64_t now_ms)
{
	struct load_ctx lc = {e, now_ms};
	int rc = store_doc_list(e->be.store, DOC_KIND, load_one, &lc);

	for (size_t i = 0; i < e->nruns; i++) {
		struct run *r = &e->runs[i];
		bool reapply = active(r) || (r->state == ROLLOUT_ROLLED_BACK && !r->mitigated);

		for (size_t t = 0; reapply && t < r->cfg->ntargets; t++) {
			if (!r->targets[t].touched)
				continue;
			if (apply_weight(e, r, t, ENGINE_ACTOR))
				log_warn("re-applying a rollout weight failed", "rollout",
				         r->cfg->name, "target", r->cfg->targets[t].name, NULL);
		}
		if (r->state == ROLLOUT_ROLLED_BACK && !r->mitigated) {
			r->mitigated = true;
			persist(e, r, ENGINE_ACTOR,
			        one("rollout.mitigated",
			            json_pack("{s:I, s:I, s:b}", "decision_ms",
			                      (json_int_t)r->decision_ms, "applied_ms",
			                      (json_int_t)now_ms, "after_restart", 1)));
		}
		if (active(r))
			prime(e, r);
	}
	return rc;
}

void rollout_engine_tick(struct rollout_engine *e, int64_t now_ms)
{
	for (size_t i = 0; i < e->nruns; i++) {
		struct run *r = &e->runs[i];
		uint64_t interval = r->cfg->analysis.interval_ms;

		if (!active(r))
			continue;
		if (r->state == ROLLOUT_PAUSED && r->review_deadline_ms &&
		    now_ms >= r->review_deadline_ms) {
			char why[400];

			snprintf(why, sizeof(why),
			         "nobody resumed or promoted within the review window (paused: %s)",
			         r->pause_reason);
			do_rollback(e, r, r->review_target, ENGINE_ACTOR, now_ms, why, NULL, 0);
			if (r->review_target >= 0 && r->state == ROLLOUT_PAUSED) {
				r->review_deadline_ms = 0;
				persist(e, r, ENGINE_ACTOR, NULL);
			}
			continue;
		}
		if (r->cfg->analysis.nchecks && interval && now_ms >= r->next_interval_ms) {
			r->next_interval_ms += (int64_t)interval;
			if (r->next_interval_ms <= now_ms)
				r->next_interval_ms = now_ms + (int64_t)interval;
			evaluate(e, r, now_ms);
		}
		if (r->state == ROLLOUT_PROGRESSING)
			advance(e, r, ENGINE_ACTOR, now_ms);
	}
}

/* The other active rollout owning one of r's service targets, or NULL. */
static const char *conflict(const struct rollout_engine *e, const struct run *r)
{
	for (size_t t = 0; t < r->cfg->ntargets; t++) {
		const struct config_target *tg = target(r, t);
		const char *o;

		if (tg->kind != CONFIG_TARGET_SERVICE)
			continue;
		o = rollout_engine_owner(e, tg->service);
		if (o && strcmp(o, r->cfg->name) != 0)
			return o;
	}
	return NULL;
}

static int begin_run(struct rollout_engine *e, struct run *r, const char *actor, int64_t now,
                     const char *kind)
{
	uint32_t gen = r->generation;

	run_reset(r);
	r->state = ROLLOUT_PROGRESSING;
	r->generation = gen + 1;
	r->started_ms = now;
	r->waiting_since_ms = now;
	r->next_interval_ms = now + (int64_t)r->cfg->analysis.interval_ms;
	if (persist(e, r, actor,
	            one(kind, json_pack("{s:I, s:I}", "generation", (json_int_t)r->generation,
	                                "steps", (json_int_t)r->cfg->nsteps))))
		return 500;
	prime(e, r);
	advance(e, r, actor, now);
	return 200;
}

int rollout_engine_control(struct rollout_engine *e, const char *name, enum rollout_control c,
                           const char *actor, int64_t now_ms, char *msg, size_t msglen)
{
	struct run *r = find(e, name);
	const struct config_step *st;
	const char *other;
	int rc;

	if (!r) {
		say(msg, msglen, "no rollout named \"%s\"", name ? name : "");
		return 404;
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
			say(msg, msglen, "a target of %s is owned by active rollout %s", name,
			    other);
			return 409;
		}
		rc = begin_run(e, r, actor, now_ms,
		               c == ROLLOUT_START ? "rollout.started" : "rollout.retry");
		say(msg, msglen, rc == 200 ? "%s: %s" : "%s: could not %s (store error)", name,
		    rc == 200 ? rollout_state_name(r->state) : rollout_control_name(c));
		return rc;
	}
	case ROLLOUT_PROMOTE:
		if (!active(r) || !st)
			goto wrong_state;
		r->state = ROLLOUT_PROGRESSING;
		r->review_deadline_ms = 0;
		r->pause_reason[0] = '\0';
		if (r->phase == PHASE_WAITING) {
			/* Promote lifts the step's gates: begin it now. */
			if (persist(e, r, actor,
			            one("rollout.promoted",
			                json_pack("{s:I, s:s}", "step", (json_int_t)r->step, "what",
			                          "gates lifted"))))
				goto store_error;
			if (begin_step(e, r, actor, now_ms))
				goto store_error;
		} else {
			if (persist(e, r, actor,
			            one("rollout.promoted",
			                json_pack("{s:I, s:s}", "step", (json_int_t)r->step, "what",
			                          "step finished"))))
				goto store_error;
			if (pass_step(e, r, actor, now_ms, "promoted"))
				goto store_error;
		}
		advance(e, r, actor, now_ms);
		say(msg, msglen, "%s: %s at step %zu of %zu", name, rollout_state_name(r->state),
		    r->step, r->cfg->nsteps);
		return 200;
	case ROLLOUT_PROMOTE_FULL: {
		json_t *evs;

		if (!active(r))
			goto wrong_state;
		evs = json_array();
		for (size_t t = 0; t < r->cfg->ntargets; t++) {
			if (target(r, t)->kind != CONFIG_TARGET_SERVICE ||
			    r->targets[t].rolled_back)
				continue;
			r->targets[t].weight = 100000;
			r->targets[t].touched = true;
		}
		json_array_append_new(
		    evs, ev("rollout.promoted", json_pack("{s:I, s:s}", "step", (json_int_t)r->step,
		                                          "what", "full: every target to 100%")));
		if (complete(e, r, actor, now_ms, evs))
			goto store_error;
		for (size_t t = 0; t < r->cfg->ntargets; t++)
			if (!r->targets[t].rolled_back && apply_weight(e, r, t, actor))
				log_warn("setting a target to 100% failed", "rollout", name,
				         "target", r->cfg->targets[t].name, NULL);
		say(msg, msglen, "%s: completed (promoted to 100%%)", name);
		return 200;
	}
	case ROLLOUT_PAUSE: {
		char why[128];

		if (r->state != ROLLOUT_PROGRESSING)
			goto wrong_state;
		snprintf(why, sizeof(why), "paused by %s", actor);
		if (do_pause(e, r, actor, now_ms, why, 0, -1, NULL))
			goto store_error;
		say(msg, msglen, "%s: paused", name);
		return 200;
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
		if (persist(
		        e, r, actor,
		        one("rollout.resumed", json_pack("{s:I}", "step", (json_int_t)r->step))))
			goto store_error;
		advance(e, r, actor, now_ms);
		say(msg, msglen, "%s: %s", name, rollout_state_name(r->state));
		return 200;
	case ROLLOUT_ABORT: {
		char why[128];

		if (!active(r))
			goto wrong_state;
		snprintf(why, sizeof(why), "aborted by %s", actor);
		if (do_rollback(e, r, -1, actor, now_ms, why, NULL, 0) &&
		    r->state != ROLLOUT_FAILED)
			goto store_error;
		say(msg, msglen, "%s: %s", name, rollout_state_name(r->state));
		return 200;
	}
	case ROLLOUT_APPROVE: {
		size_t k;
		bool all = true;

		if (!active(r) || !st || st->kind != CONFIG_STEP_APPROVAL ||
		    r->phase != PHASE_RUNNING)
			goto wrong_state;
		for (k = 0; k < st->approvers.n; k++)
			if (strcmp(st->approvers.v[k], actor) == 0)
				break;
		if (k == st->approvers.n || k >= MAX_APPROVERS) {
			say(msg, msglen, "%s is not one of the approvers of step %zu of %s", actor,
			    r->step, name);
			return 403;
		}
		if (r->approvals >> k & 1) {
			say(msg, msglen, "%s: %s already approved step %zu", name, actor, r->step);
			return 200;
		}
		r->approvals |= UINT64_C(1) << k;
		for (size_t i = 0; i < st->approvers.n; i++)
			all = all && (r->approvals >> i & 1);
		if (persist(e, r, actor,
		            one("rollout.approved",
		                json_pack("{s:I, s:s, s:b}", "step", (json_int_t)r->step, "by",
		                          actor, "complete", all))))
			goto store_error;
		if (r->state == ROLLOUT_PROGRESSING)
			advance(e, r, actor, now_ms);
		say(msg, msglen, "%s: approved by %s%s", name, actor,
		    all ? "; every approver has approved" : "");
		return 200;
	}
	}
	say(msg, msglen, "unknown control");
	return 400;

wrong_state:
	say(msg, msglen, "cannot %s %s: it is %s", rollout_control_name(c), name,
	    rollout_state_name(r->state));
	return 409;
store_error:
	say(msg, msglen, "%s: the store refused the change", name);
	return 500;
}

int rollout_engine_rollback_all(struct rollout_engine *e, const char *actor, int64_t now_ms)
{
	char why[128];
	int n = 0;

	snprintf(why, sizeof(why), "emergency rollback by %s", actor ? actor : "anonymous");
	for (size_t i = 0; i < e->nruns; i++) {
		if (!active(&e->runs[i]))
			continue;
		do_rollback(e, &e->runs[i], -1, actor ? actor : "anonymous", now_ms, why, NULL, 0);
		n++;
	}
	return n;
}

const char *rollout_engine_owner(const struct rollout_engine *e, const char *service)
{
	for (size_t i = 0; e && service && i < e->nruns; i++) {
		const struct run *r = &e->runs[i];

		if (!active(r))
			continue;
		for (size_t t = 0; t < r->cfg->ntargets; t++)
			if (target(r, t)->kind == CONFIG_TARGET_SERVICE &&
			    !r->targets[t].rolled_back &&
			    strcmp(target(r, t)->service, service) == 0)
				return r->cfg->name;
	}
	return NULL;
}

int rollout_engine_state(const struct rollout_engine *e, const char *name)
{
	const struct run *r = find(e, name);

	return r ? (int)r->state : -1;
}

int rollout_engine_step(const struct rollout_engine *e, const char *name)
{
	const struct run *r = find(e, name);

	return r ? (int)r->step : -1;
}

int64_t rollout_engine_now(const struct rollout_engine *e)
{
	struct timespec ts;

	if (e->be.now_ms)
		return e->be.now_ms(e->be.ctx);
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct store *rollout_engine_store(const struct rollout_engine *e)
{
	return e->be.store;
}

static json_t *ms_or_null(int64_t ms)
{
	return ms ? json_integer(ms) : json_null();
}

static json_t *run_json(const struct run *r)
{
	const struct config_rollout *ro = r->cfg;
	const struct config_step *st = r->step < ro->nsteps ? &ro->steps[r->step] : NULL;
	json_t *o, *targets = json_array(), *checks = json_array(), *step;

	for (size_t t = 0; t < ro->ntargets; t++) {
		const struct config_target *tg = target(r, t);
		json_t *x = json_pack("{s:s, s:s, s:f, s:b}", "name", tg->name, "kind",
		                      tg->kind == CONFIG_TARGET_SERVICE ? "service" : "flag",
		                      "weight", r->targets[t].weight / 1000.0, "rolled_back",
		                      r->targets[t].rolled_back);

		if (tg->kind == CONFIG_TARGET_SERVICE) {
			json_object_set_new(x, "service", json_string(tg->service));
			json_object_set_new(x, "canary", json_string(tg->canary));
		} else {
			json_object_set_new(x, "flag", json_string(tg->flag));
		}
		json_array_append_new(targets, x);
	}
	for (size_t k = 0; k < ro->analysis.nchecks; k++) {
		const struct config_check *c = &ro->analysis.checks[k];
		const char *m = config_metric_name(c->metric);

		json_array_append_new(
		    checks,
		    json_pack("{s:s, s:s, s:s, s:I, s:I, s:o}", "name", c->name, "metric",
		              c->source == CONFIG_SOURCE_METRIC && m ? m : "external", "on_fail",
		              c->on_fail == CONFIG_ON_FAIL_PAUSE ? "pause" : "rollback",
		              "consecutive_failures", (json_int_t)r->checks[k].fails, "for_ms",
		              (json_int_t)c->for_ms, "last_verdict",
		              r->checks[k].have_verdict ? check_verdict_json(&r->checks[k].last)
		                                        : json_null()));
	}
	step = json_pack("{s:I, s:I, s:s, s:s, s:o}", "index", (json_int_t)r->step, "of",
	                 (json_int_t)ro->nsteps, "kind", st ? step_kind_name(st->kind) : "none",
	                 "phase", r->phase == PHASE_WAITING ? "waiting" : "running", "started_at",
	                 ms_or_null(r->phase == PHASE_RUNNING ? r->step_started_ms : 0));
	if (st && r->phase == PHASE_WAITING && active(r)) {
		int64_t g = rollout_gate_time(&st->not_before, &st->window, r->waiting_since_ms,
		                              r->waiting_since_ms);

		json_object_set_new(step, "gate_at",
		                    g == INT64_MAX ? json_null() : json_integer(g));
	}
	if (st && st->kind == CONFIG_STEP_APPROVAL) {
		json_t *req = json_array(), *got = json_array();

		for (size_t i = 0; i < st->approvers.n; i++) {
			json_array_append_new(req, json_string(st->approvers.v[i]));
			if (i < MAX_APPROVERS && (r->approvals >> i & 1))
				json_array_append_new(got, json_string(st->approvers.v[i]));
		}
		json_object_set_new(step, "approvals",
		                    json_pack("{s:o, s:o}", "required", req, "approved", got));
	}
	o = json_pack("{s:s, s:s, s:I, s:o, s:o, s:o, s:I, s:o, s:o, s:o, s:o}", "name", ro->name,
	              "state", rollout_state_name(r->state), "generation",
	              (json_int_t)r->generation, "step", step, "targets", targets, "checks", checks,
	              "interval_ms", (json_int_t)ro->analysis.interval_ms, "started_at",
	              ms_or_null(r->started_ms), "ended_at", ms_or_null(r->ended_ms), "decision_at",
	              ms_or_null(r->decision_ms), "review_deadline",
	              ms_or_null(r->review_deadline_ms));
	json_object_set_new(o, "pause_reason",
	                    r->state == ROLLOUT_PAUSED ? json_string(r->pause_reason)
	                                               : json_null());
	return o;
}

json_t *rollout_engine_json(const struct rollout_engine *e, const char *name)
{
	const struct run *r = find(e, name);

	return r ? run_json(r) : NULL;
}

json_t *rollout_engine_list_json(const struct rollout_engine *e)
{
	json_t *a = json_array();

	for (size_t i = 0; i < e->nruns; i++)
		json_array_append_new(a, run_json(&e->runs[i]));
	return a;
}
