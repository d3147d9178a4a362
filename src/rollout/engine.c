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

#include "analysis/check.h"
#include "analysis/source.h"
#include "analysis/srm.h"
#include "config/config.h"
#include "core/buf.h"
#include "core/jobs.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/str.h"
#include "metrics/hll.h"
#include "proxy/mirror.h"
#include "rollout/evidence.h"
#include "store/store.h"

#define DOC_KIND      "rollout"
#define ENGINE_ACTOR  "canaryd"
#define MAX_APPROVERS 64
#define DAY_MS        INT64_C(86400000)
#define MIN_MS        INT64_C(60000)
#define MAX_TARGETS   64 /* targets a rollback pipeline tracks in its mask */
#define APPLY_WAIT_US 100000

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

/* Counters for /metrics: since the process started (kept across reloads). */
struct run_counters {
	uint64_t rollbacks[5]; /* by enum rb_class */
	int64_t last_ttd_ms;   /* 0: no check-driven rollback yet */
	int64_t last_ttm_us;   /* 0: no rollback yet */
};

enum rb_class { RB_CHECK, RB_REVIEW, RB_ABORT, RB_EMERGENCY, RB_BAKE };
static const char *const rb_class_names[] = {"check", "review", "abort", "emergency", "bake"};

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
	int review_target; /* on review expiry: -1 all targets, else one */
	int64_t next_interval_ms;
	int64_t started_ms, ended_ms, decision_ms;
	uint32_t generation; /* 1 after start, +1 per retry */
	bool mitigated;      /* the rollback's zero weights were applied */
	bool analysis_passed;
	int64_t bake_until_ms;    /* > 0: every step done, baking until then */
	bool finalized;           /* completed and the canaries made stable */
	int64_t evidence_from_ms; /* max_wait counts from here (step begin, resume) */
	uint32_t step_iv[3];      /* this step's intervals: passed, inconclusive, failed */
	struct post post;
	struct run_counters ctr;
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

static const char *const post_stage_names[] = {"none",   "drain",    "hooks",
                                               "verify", "evidence", "done"};

static json_t *post_doc(const struct post *p)
{
	return json_pack("{s:s, s:I, s:I, s:I, s:I, s:b, s:I, s:I, s:I, s:I, s:I, s:b, s:s, "
	                 "s:s, s:s, s:I}",
	                 "stage", post_stage_names[p->stage], "stage_started",
	                 (json_int_t)p->stage_started_ms, "mask", (json_int_t)p->mask, "pending",
	                 (json_int_t)p->pending, "hook", (json_int_t)p->hook, "hook_started",
	                 p->hook_started, "hooks_ok", (json_int_t)p->hooks_ok, "hooks_failed",
	                 (json_int_t)p->hooks_failed, "verify_next", (json_int_t)p->verify_next_ms,
	                 "verify_intervals", (json_int_t)p->verify_intervals, "verify_passes",
	                 (json_int_t)p->verify_passes, "verify_failed", p->verify_failed,
	                 "verify_reason", p->verify_reason, "reason", p->reason, "evidence",
	                 p->evidence, "decision", (json_int_t)p->decision_ms);
}

static void post_parse(struct post *p, const json_t *o)
{
	const char *s = json_string_value(json_object_get(o, "stage"));

	memset(p, 0, sizeof(*p));
	for (size_t i = 0; s && i < sizeof(post_stage_names) / sizeof(post_stage_names[0]); i++)
		if (strcmp(s, post_stage_names[i]) == 0)
			p->stage = (enum post_stage)i;
	p->stage_started_ms = (int64_t)json_integer_value(json_object_get(o, "stage_started"));
	p->mask = (uint64_t)json_integer_value(json_object_get(o, "mask"));
	p->pending = (uint64_t)json_integer_value(json_object_get(o, "pending"));
	p->hook = (size_t)json_integer_value(json_object_get(o, "hook"));
	p->hook_started = json_is_true(json_object_get(o, "hook_started"));
	p->hooks_ok = (uint32_t)json_integer_value(json_object_get(o, "hooks_ok"));
	p->hooks_failed = (uint32_t)json_integer_value(json_object_get(o, "hooks_failed"));
	p->verify_next_ms = (int64_t)json_integer_value(json_object_get(o, "verify_next"));
	p->verify_intervals = (uint32_t)json_integer_value(json_object_get(o, "verify_intervals"));
	p->verify_passes = (uint32_t)json_integer_value(json_object_get(o, "verify_passes"));
	p->verify_failed = json_is_true(json_object_get(o, "verify_failed"));
	s = json_string_value(json_object_get(o, "verify_reason"));
	snprintf(p->verify_reason, sizeof(p->verify_reason), "%s", s ? s : "");
	s = json_string_value(json_object_get(o, "reason"));
	snprintf(p->reason, sizeof(p->reason), "%s", s ? s : "");
	s = json_string_value(json_object_get(o, "evidence"));
	snprintf(p->evidence, sizeof(p->evidence), "%s", s ? s : "");
	p->decision_ms = (int64_t)json_integer_value(json_object_get(o, "decision"));
}

static json_t *run_doc(const struct run *r)
{
	const struct config_rollout *ro = r->cfg;
	json_t *targets = json_array(), *checks = json_array(), *appr = json_array();

	for (size_t i = 0; i < ro->ntargets; i++)
		json_array_append_new(
		    targets,
		    json_pack("{s:s, s:I, s:b, s:b, s:O*, s:I, s:I, s:I}", "name",
		              ro->targets[i].name, "weight", (json_int_t)r->targets[i].weight,
		              "touched", r->targets[i].touched, "rolled_back",
		              r->targets[i].rolled_back, "saved", r->targets[i].saved, "shadow",
		              (json_int_t)r->targets[i].shadow, "step_canary",
		              (json_int_t)r->targets[i].step_canary, "step_baseline",
		              (json_int_t)r->targets[i].step_baseline));
	for (size_t i = 0; i < ro->analysis.nchecks; i++) {
		const struct check_run *cr = &r->checks[i];

		json_array_append_new(
		    checks, json_pack("{s:s, s:I, s:I, s:b, s:I, s:I, s:[I, I, I, I]}", "name",
		                      ro->analysis.checks[i].name, "fails", (json_int_t)cr->fails,
		                      "first_fail", (json_int_t)cr->first_fail_ms, "ev_pass",
		                      cr->ev_pass, "ev_canary", (json_int_t)cr->ev_canary,
		                      "ev_baseline", (json_int_t)cr->ev_baseline, "step_iv",
		                      (json_int_t)cr->step_iv[0], (json_int_t)cr->step_iv[1],
		                      (json_int_t)cr->step_iv[2], (json_int_t)cr->step_iv[3]));
	}
	if (r->step < ro->nsteps && ro->steps[r->step].kind == CONFIG_STEP_APPROVAL) {
		const struct config_strlist *a = &ro->steps[r->step].approvers;

		for (size_t i = 0; i < a->n && i < MAX_APPROVERS; i++)
			if (r->approvals >> i & 1)
				json_array_append_new(appr, json_string(a->v[i]));
	}
	return json_pack(
	    "{s:s, s:I, s:s, s:I, s:I, s:o, s:s, s:I, s:I, s:i, s:I, s:I, s:I, s:I, "
	    "s:I, s:b, s:o, s:o, s:I, s:b, s:o, s:I, s:[I, I, I]}",
	    "state", rollout_state_name(r->state), "step", (json_int_t)r->step, "phase",
	    r->phase == PHASE_WAITING ? "waiting" : "running", "waiting_since",
	    (json_int_t)r->waiting_since_ms, "step_started", (json_int_t)r->step_started_ms,
	    "approvals", appr, "pause_reason", r->pause_reason, "paused_at",
	    (json_int_t)r->paused_at_ms, "review_deadline", (json_int_t)r->review_deadline_ms,
	    "review_target", r->review_target, "next_interval", (json_int_t)r->next_interval_ms,
	    "started", (json_int_t)r->started_ms, "ended", (json_int_t)r->ended_ms, "decision",
	    (json_int_t)r->decision_ms, "generation", (json_int_t)r->generation, "mitigated",
	    r->mitigated, "targets", targets, "checks", checks, "bake_until",
	    (json_int_t)r->bake_until_ms, "finalized", r->finalized, "post", post_doc(&r->post),
	    "evidence_from", (json_int_t)r->evidence_from_ms, "step_intervals",
	    (json_int_t)r->step_iv[0], (json_int_t)r->step_iv[1], (json_int_t)r->step_iv[2]);
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
	r->bake_until_ms = 0;
	r->finalized = false;
	r->evidence_from_ms = 0;
	memset(r->step_iv, 0, sizeof(r->step_iv));
	memset(&r->post, 0, sizeof(r->post));
	for (size_t i = 0; i < r->cfg->ntargets; i++) {
		r->targets[i].weight = 0;
		r->targets[i].step_canary = r->targets[i].step_baseline = 0;
		r->targets[i].touched = r->targets[i].rolled_back = false;
		json_decref(r->targets[i].saved);
		r->targets[i].saved = NULL;
	}
	for (size_t i = 0; i < r->cfg->analysis.nchecks; i++) {
		struct check_run *cr = &r->checks[i];

		cr->fails = 0;
		cr->first_fail_ms = 0;
		cr->ev_pass = cr->have_ev = false;
		cr->ev_canary = cr->ev_baseline = 0;
		memset(cr->step_iv, 0, sizeof(cr->step_iv));
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
	r->bake_until_ms = jint(o, "bake_until");
	r->finalized = json_is_true(json_object_get(o, "finalized"));
	r->evidence_from_ms = jint(o, "evidence_from");
	if (!r->evidence_from_ms) /* written before evidence gating: from the step's start */
		r->evidence_from_ms =
		    r->bake_until_ms ? r->bake_until_ms - (int64_t)ro->bake_ms : r->step_started_ms;
	for (i = 0; i < 3; i++)
		r->step_iv[i] = (uint32_t)json_integer_value(
		    json_array_get(json_object_get(o, "step_intervals"), i));
	post_parse(&r->post, json_object_get(o, "post"));
	json_array_foreach(json_object_get(o, "targets"), i, v)
	{
		s = json_string_value(json_object_get(v, "name"));
		for (size_t t = 0; s && t < ro->ntargets; t++) {
			if (strcmp(s, ro->targets[t].name) != 0)
				continue;
			r->targets[t].weight = (uint32_t)jint(v, "weight");
			r->targets[t].touched = json_is_true(json_object_get(v, "touched"));
			r->targets[t].rolled_back = json_is_true(json_object_get(v, "rolled_back"));
			/* a document naming a target twice: the last entry wins, no leak */
			json_decref(r->targets[t].saved);
			r->targets[t].saved = json_incref(json_object_get(v, "saved"));
			r->targets[t].shadow = (uint32_t)jint(v, "shadow");
			r->targets[t].step_canary = (uint64_t)jint(v, "step_canary");
			r->targets[t].step_baseline = (uint64_t)jint(v, "step_baseline");
		}
	}
	json_array_foreach(json_object_get(o, "checks"), i, v)
	{
		s = json_string_value(json_object_get(v, "name"));
		for (size_t k = 0; s && k < ro->analysis.nchecks; k++) {
			if (strcmp(s, ro->analysis.checks[k].name) != 0)
				continue;
			struct check_run *cr = &r->checks[k];

			cr->fails = (uint32_t)jint(v, "fails");
			cr->first_fail_ms = jint(v, "first_fail");
			cr->ev_pass = json_is_true(json_object_get(v, "ev_pass"));
			cr->ev_canary = (uint64_t)jint(v, "ev_canary");
			cr->ev_baseline = (uint64_t)jint(v, "ev_baseline");
			for (size_t j = 0; j < 4; j++)
				cr->step_iv[j] = (uint32_t)json_integer_value(
				    json_array_get(json_object_get(v, "step_iv"), j));
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

static int apply_shadow(struct rollout_engine *e, struct run *r, const char *actor, int64_t now);
static void stop_shadow(struct rollout_engine *e, struct run *r, uint64_t mask, const char *actor);
static void evidence_reset(struct rollout_engine *e, struct run *r, int64_t now);
static json_t *evidence_json(const struct run *r);
static bool traffic_step(const struct run *r);
static bool baking(const struct run *r);
static void srm_restart(struct rollout_engine *e, struct run *r, size_t t);

static const struct config_target *target(const struct run *r, size_t t)
{
	return &r->cfg->targets[t];
}

static bool flags_wired(const struct rollout_engine *e)
{
	return e->be.flag_save && e->be.flag_set && e->be.flag_restore;
}

/*
 * A flag target's state before the run is taken once, before the flag first
 * changes, and persisted with that change.  False when the flag is gone.
 */
static bool save_flag(struct rollout_engine *e, struct run *r, size_t t)
{
	if (target(r, t)->kind != CONFIG_TARGET_FLAG || r->targets[t].saved)
		return true;
	r->targets[t].saved = e->be.flag_save(e->be.ctx, target(r, t)->flag);
	return r->targets[t].saved != NULL;
}

/* Applies target t's desired weight.  Returns 0 or the backend's error. */
static int apply_weight(struct rollout_engine *e, struct run *r, size_t t, const char *actor)
{
	const struct config_target *tg = target(r, t);
	const struct target_run *tr = &r->targets[t];

	if (tg->kind == CONFIG_TARGET_FLAG) {
		if (!flags_wired(e))
			return 0;
		if (tr->rolled_back) /* put the flag back exactly as it was */
			return tr->saved ? e->be.flag_restore(e->be.ctx, tg->flag, tr->saved, actor)
			                 : 0;
		return e->be.flag_set(e->be.ctx, tg->flag, tr->weight, actor);
	}
	if (tg->kind != CONFIG_TARGET_SERVICE)
		return 0;
	return e->be.set_weight(e->be.ctx, tg->service, tg->canary, r->targets[t].weight, actor);
}

/* The service's current stable version (moves when a rollout completes). */
static const char *stable_version(const struct rollout_engine *e, const struct config_target *tg)
{
	const char *v = e->be.stable_of ? e->be.stable_of(e->be.ctx, tg->service) : NULL;

	return v ? v : tg->svc->stable;
}

/*
 * Takes the cumulative readings that the next interval's deltas start from;
 * at a run's start also the baseline that bake compares against.
 */
static void prime(struct rollout_engine *e, struct run *r, bool run_start)
{
	for (size_t t = 0; t < r->cfg->ntargets; t++) {
		const struct config_target *tg = target(r, t);
		struct target_run *tr = &r->targets[t];

		tr->rd.have_prev = false;
		tr->rd.have_cum0 = false;
		if (tg->kind != CONFIG_TARGET_SERVICE || !tg->svc)
			continue;
		if (e->be.read_cohort(e->be.ctx, tg->service, tg->canary, COHORT_CANARY,
		                      &tr->rd.prev_canary) == 0 &&
		    e->be.read_cohort(e->be.ctx, tg->service, stable_version(e, tg),
		                      COHORT_BASELINE, &tr->rd.prev_baseline) == 0) {
			tr->rd.have_prev = true;
			if (run_start) {
				tr->rd.cum0_canary = tr->rd.prev_canary;
				tr->rd.cum0_baseline = tr->rd.prev_baseline;
				tr->rd.have_cum0 = true;
			}
		}
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

/* Starts the rollback pipeline for the targets in mask (or queues them). */
static void post_begin(struct run *r, uint64_t mask, const char *reason, int64_t now)
{
	struct post *p = &r->post;

	if (p->stage != POST_NONE && p->stage != POST_DONE) {
		p->pending |= mask;
		return;
	}
	memset(p, 0, sizeof(*p));
	p->stage = POST_DRAIN;
	p->stage_started_ms = now;
	p->mask = mask;
	p->decision_ms = now;
	snprintf(p->reason, sizeof(p->reason), "%s", reason);
}

/*
 * Rolls back target `only` (-1: every target): persist (with pre_events,
 * stolen, e.g. the verdicts that decided it), then weights to 0 at once,
 * then waits for every worker to route with them: that is time to mitigate,
 * measured from t0_us (the monotonic time of the decision; 0 = now).  The
 * rest of the pipeline (drain, hooks, verify, evidence) runs from the tick.
 * v / first_fail_ms describe the deciding verdict (NULL / 0 for manual).
 */
static int do_rollback(struct rollout_engine *e, struct run *r, int only, const char *actor,
                       int64_t now, const char *reason, const struct check_verdict *v,
                       int64_t first_fail_ms, enum rb_class cls, json_t *pre_events, uint64_t t0_us)
{
	const struct config_rollout *ro = r->cfg;
	json_t *names = json_array(), *d, *evs = pre_events ? pre_events : json_array();
	bool all = true, failed = false;
	uint64_t mask = 0, t_persisted, t_set, t1_us;
	char why[256] = "";
	int rc, applied;

	if (!t0_us)
		t0_us = clock_mono_us();
	for (size_t t = 0; t < ro->ntargets; t++) {
		if (only < 0 || (size_t)only == t) {
			if (!r->targets[t].rolled_back && t < MAX_TARGETS)
				mask |= UINT64_C(1) << t;
			r->targets[t].rolled_back = true;
			r->targets[t].weight = 0;
			r->targets[t].touched = true;
			json_array_append_new(names, json_string(ro->targets[t].name));
		}
		all = all && r->targets[t].rolled_back;
	}
	r->decision_ms = now;
	r->bake_until_ms = 0;
	if (all) {
		r->state = ROLLOUT_ROLLED_BACK;
		r->ended_ms = now;
		r->mitigated = false;
		r->review_deadline_ms = 0;
	}
	post_begin(r, mask, reason, now);
	d = json_pack("{s:s, s:s, s:o, s:b, s:I, s:I, s:I, s:I}", "reason", reason, "class",
	              rb_class_names[cls], "targets", names, "all", all, "step",
	              (json_int_t)r->step, "decision_ms", (json_int_t)now, "drain_ms",
	              (json_int_t)ro->rollback.drain_ms, "hooks", (json_int_t)ro->rollback.nhooks);
	if (first_fail_ms) {
		int64_t start = first_fail_ms - (int64_t)ro->analysis.interval_ms;

		json_object_set_new(d, "first_failing_interval_start_ms", json_integer(start));
		json_object_set_new(d, "time_to_detect_ms", json_integer(now - start));
		r->ctr.last_ttd_ms = now - start;
	}
	if (v)
		json_object_set_new(d, "verdict", check_verdict_json(v));
	json_array_append_new(evs, ev("rollout.rollback", d));
	rc = persist(e, r, actor, evs);
	if (rc)
		return rc;
	r->ctr.rollbacks[cls]++;
	t_persisted = clock_mono_us();

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
	t_set = clock_mono_us();
	applied = e->be.wait_applied ? e->be.wait_applied(e->be.ctx, APPLY_WAIT_US) : 0;
	t1_us = clock_mono_us();
	stop_shadow(e, r, only < 0 ? ~UINT64_C(0) : UINT64_C(1) << only, actor);
	if (failed) {
		r->state = ROLLOUT_FAILED;
		r->ended_ms = now;
		return persist(e, r, actor,
		               one("rollout.failed", json_pack("{s:s}", "reason", why)));
	}
	{
		uint64_t t1 = t1_us;

		r->ctr.last_ttm_us = (int64_t)(t1 - t0_us);
		if (all)
			r->mitigated = true;
		return persist(e, r, actor,
		               one("rollout.mitigated",
		                   json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "decision_ms",
		                             (json_int_t)now, "applied_ms",
		                             (json_int_t)(now + (int64_t)(t1 - t0_us) / 1000),
		                             "time_to_mitigate_us", (json_int_t)(t1 - t0_us),
		                             "persist_us", (json_int_t)(t_persisted - t0_us),
		                             "publish_us", (json_int_t)(t_set - t_persisted),
		                             "workers_us", (json_int_t)(t1 - t_set),
		                             "all_workers_confirmed", applied == 0)));
	}
}

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
		rc = apply_weight(e, r, t, actor);
		if (rc) {
			snprintf(why, sizeof(why), "setting %s to %.3f%% failed (error %d)",
			         target(r, t)->name, st->sets[i].percent / 1000.0, rc);
			do_pause(e, r, ENGINE_ACTOR, now, why, 0, -1, NULL);
			return rc;
		}
		srm_restart(e, r, t); /* the step's slices start now */
	}
	return 0;
}

/* Starts the current shadow step's mirrors (persisted by the caller). */
static int apply_shadow(struct rollout_engine *e, struct run *r, const char *actor, int64_t now)
{
	for (size_t t = 0; t < r->cfg->ntargets; t++) {
		const struct config_target *tg = target(r, t);
		char why[256];

		if (!r->targets[t].shadow || !e->be.set_shadow)
			continue;
		if (e->be.set_shadow(e->be.ctx, tg->service, tg->canary, r->targets[t].shadow,
		                     actor)) {
			snprintf(why, sizeof(why), "mirroring %.3f%% of %s to %s failed",
			         r->targets[t].shadow / 1000.0, tg->service, tg->canary);
			do_pause(e, r, ENGINE_ACTOR, now, why, 0, -1, NULL);
			return -1;
		}
	}
	return 0;
}

/*
 * Stops the mirrors of the targets in mask that a shadow step started.  A
 * target's `shadow` is cleared only once its mirror is off, so after a
 * crash in between rollout_engine_load() stops it again.
 */
static void stop_shadow(struct rollout_engine *e, struct run *r, uint64_t mask, const char *actor)
{
	for (size_t t = 0; t < r->cfg->ntargets && t < MAX_TARGETS; t++) {
		const struct config_target *tg = target(r, t);

		if (!(mask >> t & 1) || !r->targets[t].shadow || !e->be.set_shadow)
			continue;
		if (e->be.set_shadow(e->be.ctx, tg->service, tg->canary, 0, actor) == 0)
			r->targets[t].shadow = 0;
		else
			log_warn("could not stop a shadow step's mirror", "rollout", r->cfg->name,
			         "service", tg->service, NULL);
	}
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
	if (st->kind == CONFIG_STEP_SET || st->kind == CONFIG_STEP_SHADOW)
		evidence_reset(e, r, now);
	if (st->kind == CONFIG_STEP_SET) {
		for (size_t i = 0; i < st->nsets; i++) {
			size_t t = st->sets[i].index;

			if (target(r, t)->kind == CONFIG_TARGET_FLAG && !flags_wired(e)) {
				json_array_append_new(
				    skipped, json_pack("{s:s, s:s}", "target", target(r, t)->name,
				                       "why", "this engine has no flags backend"));
				continue;
			}
			if (r->targets[t].rolled_back) {
				json_array_append_new(
				    skipped, json_pack("{s:s, s:s}", "target", target(r, t)->name,
				                       "why", "the target was rolled back"));
				continue;
			}
			if (!save_flag(e, r, t)) {
				json_array_append_new(
				    skipped,
				    json_pack(
				        "{s:s, s:s}", "target", target(r, t)->name, "why",
				        "the flag does not exist (deleted through the API?)"));
				continue;
			}
			r->targets[t].weight = st->sets[i].percent;
			r->targets[t].touched = true;
			json_object_set_new(weights, target(r, t)->name,
			                    json_real(st->sets[i].percent / 1000.0));
		}
	} else if (st->kind == CONFIG_STEP_SHADOW) {
		for (size_t t = 0; t < ro->ntargets; t++) {
			const char *why = NULL;

			if (target(r, t)->kind != CONFIG_TARGET_SERVICE)
				why = "a flag target has no traffic to mirror";
			else if (r->targets[t].rolled_back)
				why = "the target was rolled back";
			else if (!e->be.set_shadow)
				why = "this engine has no mirror backend";
			if (why) {
				json_array_append_new(skipped,
				                      json_pack("{s:s, s:s}", "target",
				                                target(r, t)->name, "why", why));
				continue;
			}
			r->targets[t].shadow = st->shadow_percent;
			r->targets[t].rd.have_prev_sh = r->targets[t].rd.have_cum0_sh = false;
			json_object_set_new(
			    weights, target(r, t)->name,
			    json_pack("{s:f}", "shadow", st->shadow_percent / 1000.0));
		}
	}
	d = json_pack("{s:I, s:I, s:s, s:o, s:o, s:I}", "step", (json_int_t)r->step, "of",
	              (json_int_t)ro->nsteps, "kind", step_kind_name(st->kind), "weights", weights,
	              "skipped", skipped, "at_ms", (json_int_t)now);
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
	if (st->kind == CONFIG_STEP_SHADOW)
		return apply_shadow(e, r, actor, now);
	return 0;
}

static bool live_service(const struct run *r, size_t t)
{
	return target(r, t)->kind == CONFIG_TARGET_SERVICE && target(r, t)->svc &&
	       !r->targets[t].rolled_back;
}

/* ------------------------------------------------------------------------ */
/* Sample-ratio mismatch guard (analysis/srm.h, docs/judge.md)               */

static bool srm_wired(const struct rollout_engine *e)
{
	return e->be.split_reset && e->be.read_split;
}

/* Target t's split count starts again, at its current weight. */
static void srm_restart(struct rollout_engine *e, struct run *r, size_t t)
{
	const struct config_target *tg = target(r, t);

	if (!srm_wired(e) || !live_service(r, t))
		return;
	e->be.split_reset(e->be.ctx, tg->service, tg->canary);
	e->be.split_reset(e->be.ctx, tg->service, stable_version(e, tg));
	r->targets[t].srm_weight = r->targets[t].weight;
}

static json_t *srm_json(const struct srm_verdict *v, bool sticky,
                        const struct metrics_split_snapshot *c,
                        const struct metrics_split_snapshot *b)
{
	return json_pack("{s:s, s:f, s:f, s:I, s:I, s:o, s:f, s:f, s:b, s:b, s:s}", "unit",
	                 sticky ? "keys" : "requests", "canary", v->canary, "baseline", v->baseline,
	                 "canary_requests", (json_int_t)c->requests, "baseline_requests",
	                 (json_int_t)b->requests, "expected_share",
	                 isnan(v->expected_share) ? json_null() : json_real(v->expected_share), "z",
	                 v->z, "p", v->p, "judged", v->judged, "mismatch", v->mismatch, "reason",
	                 v->reason);
}

/*
 * Judges every live service target's split count (units placed in the
 * canary and baseline since the count began at the weight in force).  Adds
 * the numbers to the target's object in per_target (the interval event)
 * when it has one.  On the first mismatch: a rollout.srm event in evs, the
 * reason in why, *detail (a new reference) for the pause event, and that
 * target's count restarted so a resume judges fresh units; returns the
 * target's index.  -1 when no target mismatches.
 */
static int srm_guard(struct rollout_engine *e, struct run *r, int64_t now, json_t *per_target,
                     json_t *evs, char *why, size_t whylen, json_t **detail)
{
	int hit = -1;

	for (size_t t = 0; srm_wired(e) && t < r->cfg->ntargets; t++) {
		const struct config_target *tg = target(r, t);
		struct target_run *tr = &r->targets[t];
		struct metrics_split_snapshot c, b;
		struct srm_verdict v;
		bool sticky;
		json_t *d, *o;

		if (!live_service(r, t) || tr->weight == 0 || tr->weight >= BUCKET_COUNT)
			continue;
		if (!tr->srm_weight) { /* a new engine (restart, reload): count from here */
			tr->srm_weight = tr->weight;
		} else if (tr->srm_weight != tr->weight) { /* moved outside a step */
			srm_restart(e, r, t);
			continue;
		}
		if (e->be.read_split(e->be.ctx, tg->service, tg->canary, COHORT_CANARY, &c) ||
		    e->be.read_split(e->be.ctx, tg->service, stable_version(e, tg), COHORT_BASELINE,
		                     &b))
			continue;
		sticky = tg->svc->sticky.kind != CONFIG_KEY_NONE;
		srm_test(sticky ? c.keys : (double)c.requests, sticky ? b.keys : (double)b.requests,
		         tr->weight, sticky ? HLL_REL_ERR : 0.0, tg->name,
		         sticky ? "keys" : "requests", &v);
		d = srm_json(&v, sticky, &c, &b);
		o = json_object_get(per_target, tg->name);
		if (o)
			json_object_set(o, "srm", d);
		if (v.mismatch && hit < 0) {
			json_t *x = json_deep_copy(d);

			hit = (int)t;
			snprintf(why, whylen, "%s", v.reason);
			json_object_set_new(x, "target", json_string(tg->name));
			json_object_set_new(x, "step", json_integer((json_int_t)r->step));
			json_object_set_new(x, "weight", json_real(tr->weight / 1000.0));
			json_object_set_new(x, "interval_end_ms", json_integer(now));
			json_array_append_new(evs, ev("rollout.srm", json_incref(x)));
			*detail = json_pack("{s:s, s:o}", "check", "sample_ratio", "srm", x);
			srm_restart(e, r, t);
		}
		json_decref(d);
	}
	return hit;
}

/* Every step is done: the canaries at 100% become stable (see finalize()). */
static int complete(struct rollout_engine *e, struct run *r, const char *actor, int64_t now,
                    json_t *evs)
{
	json_t *stable = json_object(), *bake_ev = baking(r) ? evidence_json(r) : json_null();

	r->state = ROLLOUT_COMPLETED;
	r->step = r->cfg->nsteps;
	r->phase = PHASE_WAITING;
	r->ended_ms = now;
	r->bake_until_ms = 0;
	r->finalized = false;
	for (size_t t = 0; t < r->cfg->ntargets; t++)
		if (live_service(r, t) && r->targets[t].weight >= 100000)
			json_object_set_new(stable, target(r, t)->service,
			                    json_string(target(r, t)->canary));
	if (!evs)
		evs = json_array();
	json_array_append_new(
	    evs, ev("rollout.completed",
	            json_pack("{s:I, s:o, s:I, s:o}", "duration_ms",
	                      (json_int_t)(now - r->started_ms), "stable", stable, "bake_ms",
	                      (json_int_t)r->cfg->bake_ms, "bake_evidence", bake_ev)));
	return persist(e, r, actor, evs);
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
		any = any || (live_service(r, t) && r->targets[t].weight > 0);
	if (!r->cfg->bake_ms || !any || r->bake_until_ms) /* promote --full ends a bake */
		return complete(e, r, actor, now, evs);
	r->step = r->cfg->nsteps;
	r->phase = PHASE_WAITING;
	r->bake_until_ms = now + (int64_t)r->cfg->bake_ms;
	evidence_reset(e, r, now);
	if (!evs)
		evs = json_array();
	json_array_append_new(
	    evs,
	    ev("rollout.baking", json_pack("{s:I, s:I}", "bake_ms", (json_int_t)r->cfg->bake_ms,
	                                   "until", (json_int_t)r->bake_until_ms)));
	return persist(e, r, actor, evs);
}

/*
 * After completion: each canary at 100% becomes its service's stable
 * version.  Idempotent; retried by the tick until it works (also after a
 * restart), so a crash between "completed" and this step is healed.
 */
static void finalize(struct rollout_engine *e, struct run *r)
{
	bool ok = true;

	for (size_t t = 0; e->be.set_stable && t < r->cfg->ntargets; t++) {
		if (!live_service(r, t) || r->targets[t].weight < 100000)
			continue;
		if (e->be.set_stable(e->be.ctx, target(r, t)->service, target(r, t)->canary,
		                     ENGINE_ACTOR))
			ok = false;
	}
	if (!ok)
		return;
	r->finalized = true;
	persist(e, r, ENGINE_ACTOR, NULL);
}

/* Marks the current step passed and moves to the next (or completes). */
static int pass_step(struct rollout_engine *e, struct run *r, const char *actor, int64_t now,
                     const char *how)
{
	json_t *evs = json_array();
	size_t done = r->step;

	if (r->cfg->steps[done].kind == CONFIG_STEP_SHADOW)
		stop_shadow(e, r, ~UINT64_C(0), actor);
	json_array_append_new(
	    evs, ev("rollout.step.passed",
	            json_pack("{s:I, s:s, s:s, s:o}", "step", (json_int_t)done, "kind",
	                      step_kind_name(r->cfg->steps[done].kind), "how", how, "evidence",
	                      traffic_step(r) ? evidence_json(r) : json_null())));
	r->step++;
	r->phase = PHASE_WAITING;
	r->waiting_since_ms = now;
	r->approvals = 0;
	r->analysis_passed = false;
	if (r->step >= r->cfg->nsteps)
		return steps_done(e, r, actor, now, evs);
	return persist(e, r, actor, evs);
}

/* ------------------------------------------------------------------------ */
/* Evidence (docs/rollout.md "Evidence")                                    */

#define MAX_WAIT_FACTOR     4             /* max_wait defaults to 4 x the step's for */
#define MAX_WAIT_DEFAULT_MS (60 * MIN_MS) /* ... or 1h when the step has no for */

static bool shadow_metric(const struct config_check *c);

/* The current step moves traffic (set/weight, shadow) or the run is baking. */
static bool traffic_step(const struct run *r)
{
	enum config_step_kind k;

	if (baking(r))
		return true;
	if (r->step >= r->cfg->nsteps)
		return false;
	k = r->cfg->steps[r->step].kind;
	return k == CONFIG_STEP_SET || k == CONFIG_STEP_SHADOW;
}

/* Verdicts now count as the current step's evidence. */
static bool gathering(const struct run *r)
{
	return active(r) && traffic_step(r) && (baking(r) || r->phase == PHASE_RUNNING);
}

/*
 * Check k must pass before the current step may: it can judge a live
 * target now (the shadow_* metrics: one being mirrored in a shadow step;
 * proxy metrics: a service target with canary traffic; sources: any target
 * with canary traffic) and has not opted out.
 */
static bool check_applies(const struct run *r, size_t k)
{
	const struct config_check *c = &r->cfg->analysis.checks[k];
	bool shadow_step = !baking(r) && r->step < r->cfg->nsteps &&
	                   r->cfg->steps[r->step].kind == CONFIG_STEP_SHADOW;

	if (c->time_only)
		return false;
	for (size_t t = 0; t < r->cfg->ntargets; t++) {
		const struct config_target *tg = &r->cfg->targets[t];
		const struct target_run *tr = &r->targets[t];

		if ((c->target && c->target_index != t) || tr->rolled_back)
			continue;
		if (shadow_metric(c)) {
			if (shadow_step && tr->shadow)
				return true;
			continue;
		}
		if (!tr->touched || tr->weight == 0)
			continue;
		if (tg->kind == CONFIG_TARGET_SERVICE
		        ? tg->svc != NULL
		        : c->source != CONFIG_SOURCE_METRIC && tg->flg)
			return true;
	}
	return false;
}

/* The current traffic step waits for evidence (it has not opted out). */
static bool evidence_required(const struct run *r)
{
	if (!traffic_step(r) || r->cfg->analysis.nchecks == 0)
		return false;
	return baking(r) || !r->cfg->steps[r->step].time_only;
}

static uint64_t max_wait_ms(const struct run *r)
{
	const struct config_rollout *ro = r->cfg;
	uint64_t hold;

	if (!baking(r) && r->step < ro->nsteps && ro->steps[r->step].max_wait_ms)
		return ro->steps[r->step].max_wait_ms;
	if (ro->analysis.max_wait_ms)
		return ro->analysis.max_wait_ms;
	hold = baking(r) ? ro->bake_ms : r->step < ro->nsteps ? ro->steps[r->step].for_ms : 0;
	return hold ? MAX_WAIT_FACTOR * hold : MAX_WAIT_DEFAULT_MS;
}

/*
 * How many applicable checks still lack evidence; their shortfalls go to
 * out ("; " or ", " between them), and the first one's review (on_fail:
 * pause with review) to *review_ms / *review_target when given.
 */
static size_t evidence_missing(const struct run *r, bool brief, char *out, size_t len,
                               uint64_t *review_ms, int *review_target)
{
	size_t n = 0, off = 0;

	if (len)
		out[0] = '\0';
	if (!evidence_required(r))
		return 0;
	for (size_t k = 0; k < r->cfg->analysis.nchecks; k++) {
		const struct config_check *c = &r->cfg->analysis.checks[k];
		const struct check_run *cr = &r->checks[k];
		char one_check[CHECK_REASON_MAX + 64];
		int w;

		if (cr->ev_pass || !check_applies(r, k))
			continue;
		if (n++ == 0 && review_ms && c->review_ms) {
			*review_ms = c->review_ms;
			*review_target = c->target ? (int)c->target_index : -1;
		}
		check_evidence_shortfall(c, cr->have_ev ? &cr->ev : NULL, brief, one_check,
		                         sizeof(one_check));
		if (off >= len)
			continue;
		w = snprintf(out + off, len - off, "%s%s", n > 1 ? (brief ? ", " : "; ") : "",
		             one_check);
		if (w > 0)
			off += (size_t)w;
	}
	return n;
}

/* Restarts the evidence of a traffic step (or the bake) that begins at now. */
static void evidence_reset(struct rollout_engine *e, struct run *r, int64_t now)
{
	r->evidence_from_ms = now;
	memset(r->step_iv, 0, sizeof(r->step_iv));
	for (size_t k = 0; k < r->cfg->analysis.nchecks; k++) {
		struct check_run *cr = &r->checks[k];

		cr->ev_pass = cr->have_ev = false;
		cr->ev_canary = cr->ev_baseline = 0;
		memset(cr->step_iv, 0, sizeof(cr->step_iv));
	}
	for (size_t t = 0; t < r->cfg->ntargets; t++) {
		const struct config_target *tg = &r->cfg->targets[t];
		struct target_run *tr = &r->targets[t];

		tr->step_canary = tr->step_baseline = 0;
		tr->rd.step_canary0 = tr->rd.step_baseline0 = 0;
		tr->rd.have_step0 = false;
		tr->rd.step_looks = 0;
		if (tg->kind != CONFIG_TARGET_SERVICE || !tg->svc)
			continue;
		/* the step's window starts now, not at the last interval boundary */
		if (e->be.read_cohort(e->be.ctx, tg->service, tg->canary, COHORT_CANARY,
		                      &tr->rd.step0_canary) == 0 &&
		    e->be.read_cohort(e->be.ctx, tg->service, stable_version(e, tg),
		                      COHORT_BASELINE, &tr->rd.step0_baseline) == 0)
			tr->rd.have_step0 = true;
	}
}

/*
 * Notes check k's verdicts of one interval (iv) and on the step's
 * accumulated data (evv; for a source the round's verdict) as evidence.
 */
static void evidence_note(struct run *r, size_t k, const struct check_verdict *iv,
                          const struct check_verdict *evv)
{
	struct check_run *cr = &r->checks[k];

	if (!gathering(r))
		return;
	if ((unsigned)iv->outcome < 4)
		cr->step_iv[iv->outcome]++;
	if (evv) {
		cr->ev = *evv;
		cr->have_ev = true;
	}
	if (iv->outcome == CHECK_FAIL || (evv && evv->outcome == CHECK_FAIL)) {
		cr->ev_pass = false;
	} else if (evv && evv->outcome == CHECK_PASS && cr->fails == 0) {
		cr->ev_pass = true;
		cr->ev_canary = evv->canary_requests;
		cr->ev_baseline = evv->baseline_requests;
	}
}

/*
 * The step's evidence for rollout.step.passed, the pause and the live view:
 * whether it is required and ready, the intervals that passed / were
 * inconclusive / failed, each check's evidence and the requests per target.
 */
static json_t *evidence_json(const struct run *r)
{
	json_t *checks = json_object(), *targets = json_object();
	bool required = evidence_required(r), ready = true;

	for (size_t k = 0; k < r->cfg->analysis.nchecks; k++) {
		const struct config_check *c = &r->cfg->analysis.checks[k];
		const struct check_run *cr = &r->checks[k];
		bool applies = required && check_applies(r, k);

		ready = ready && (!applies || cr->ev_pass);
		json_object_set_new(
		    checks, c->name,
		    json_pack("{s:b, s:b, s:o, s:I, s:I, s:I, s:{s:I, s:I, s:I, s:I}}", "applies",
		              applies, "passed", cr->ev_pass, "outcome",
		              cr->have_ev ? json_string(check_outcome_name(cr->ev.outcome))
		                          : json_null(),
		              "canary_requests",
		              (json_int_t)(cr->ev_pass || !cr->have_ev ? cr->ev_canary
		                                                       : cr->ev.canary_requests),
		              "baseline_requests",
		              (json_int_t)(cr->ev_pass || !cr->have_ev ? cr->ev_baseline
		                                                       : cr->ev.baseline_requests),
		              "min_samples", (json_int_t)c->min_samples, "intervals", "pass",
		              (json_int_t)cr->step_iv[CHECK_PASS], "inconclusive",
		              (json_int_t)cr->step_iv[CHECK_INCONCLUSIVE], "fail",
		              (json_int_t)cr->step_iv[CHECK_FAIL], "error",
		              (json_int_t)cr->step_iv[CHECK_ERROR]));
	}
	for (size_t t = 0; t < r->cfg->ntargets; t++)
		json_object_set_new(targets, r->cfg->targets[t].name,
		                    json_pack("{s:I, s:I}", "canary_requests",
		                              (json_int_t)r->targets[t].step_canary,
		                              "baseline_requests",
		                              (json_int_t)r->targets[t].step_baseline));
	return json_pack("{s:b, s:b, s:{s:I, s:I, s:I}, s:o, s:o, s:I, s:I}", "required", required,
	                 "ready", required && ready, "intervals", "passed",
	                 (json_int_t)r->step_iv[0], "inconclusive", (json_int_t)r->step_iv[1],
	                 "failed", (json_int_t)r->step_iv[2], "checks", checks, "targets", targets,
	                 "since_ms", (json_int_t)r->evidence_from_ms, "max_wait_ms",
	                 (json_int_t)max_wait_ms(r));
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
	int review_target = -1;

	if (!evidence_missing(r, false, list, sizeof(list), &review, &review_target))
		return true;
	if (now - r->evidence_from_ms < (int64_t)max_wait_ms(r))
		return false;
	snprintf(why, sizeof(why), "not enough evidence: %.234s", list); /* pause_reason's size */
	do_pause(e, r, ENGINE_ACTOR, now, why, review, review_target,
	         json_pack("{s:s, s:o}", "cause", "evidence", "evidence", evidence_json(r)));
	return false;
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
			if (!r->bake_until_ms)
				steps_done(e, r, actor, now, NULL);
			else if (now >= r->bake_until_ms && evidence_gate(e, r, now))
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
		if (!step_done(r, st, now) || !evidence_gate(e, r, now))
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

static json_t *num_or_null(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

/* One cohort's numbers of an interval, for the rollout.interval event. */
static json_t *cohort_json(const struct metrics_cohort_snapshot *s, uint64_t interval_ms)
{
	return json_pack(
	    "{s:I, s:I, s:o, s:o, s:o, s:o}", "requests", (json_int_t)s->requests, "errors",
	    (json_int_t)s->errors, "error_rate",
	    num_or_null(check_metric_value(CONFIG_METRIC_ERROR_RATE, s, interval_ms)), "p50_ms",
	    num_or_null(check_metric_value(CONFIG_METRIC_LATENCY_P50, s, interval_ms)), "p99_ms",
	    num_or_null(check_metric_value(CONFIG_METRIC_LATENCY_P99, s, interval_ms)), "mean_ms",
	    num_or_null(check_metric_value(CONFIG_METRIC_LATENCY_MEAN, s, interval_ms)));
}

static bool baking(const struct run *r)
{
	return r->bake_until_ms > 0 && r->step >= r->cfg->nsteps;
}

/* ------------------------------------------------------------------------ */
/* query, http and exec sources (docs/judge.md "Sources")                    */

#define SOURCE_ERRORS_PAUSE 3    /* consecutive `error` verdicts of one check that pause */
#define SOURCE_GRACE_MS     2000 /* time a source job may wait in the queue past its timeout */

/*
 * One round of a source check: the jobs of the interval ending at end_ms,
 * two per target (canary, baseline) or one (canary) when the source does
 * not depend on the cohort.  Started by evaluate(), collected by
 * source_tick() on later ticks, judged when every job answered, at its
 * deadline, or when the next interval begins, whichever comes first.
 */
struct src_slot {
	uint64_t job; /* running job; 0 when answered or never started */
	bool used;
	struct source_request req;
	struct source_reading rd;
};

struct src_round {
	int64_t end_ms, deadline_ms;
	uint32_t generation;
	size_t step;
	bool bake, per_cohort;
	size_t ntargets;         /* the rollout's targets, at most MAX_TARGETS */
	struct src_slot slots[]; /* [target * 2 + (0 canary | 1 baseline)] */
};

static void src_drop(struct rollout_engine *e, struct check_run *cr)
{
	struct src_round *rd = cr->src;

	if (!rd)
		return;
	for (size_t i = 0; i < 2 * rd->ntargets; i++)
		if (rd->slots[i].job && e->be.source_forget)
			e->be.source_forget(e->be.ctx, rd->slots[i].job);
	free(rd);
	cr->src = NULL;
}

/* A flag target's cohorts: its rollout variant (canary) and its off variant. */
static const char *flag_cohort_variant(const struct config_flag *f, int baseline)
{
	const char *off = f->off_variant ? f->off_variant : "off";

	if (baseline)
		return off;
	for (size_t i = 0; i < f->rollout.n; i++)
		if (strcmp(f->rollout.v[i].variant, off) != 0)
			return f->rollout.v[i].variant;
	return "on";
}

static void src_vars(const struct rollout_engine *e, const struct run *r, size_t t, int baseline,
                     struct source_vars *v)
{
	const struct config_target *tg = target(r, t);

	memset(v, 0, sizeof(*v));
	v->cohort = baseline ? "baseline" : "canary";
	v->target = tg->name;
	v->interval_ms = r->cfg->analysis.interval_ms;
	if (tg->kind == CONFIG_TARGET_FLAG) {
		v->service = tg->flag;
		v->version = v->variant = flag_cohort_variant(tg->flg, baseline);
	} else {
		v->service = tg->service;
		v->version = v->variant = baseline ? stable_version(e, tg) : tg->canary;
	}
}

/* Starts check k's jobs for the interval ending at now (evaluate()). */
static void src_begin(struct rollout_engine *e, struct run *r, size_t k, int64_t now, bool bake)
{
	const struct config_check *c = &r->cfg->analysis.checks[k];
	struct check_run *cr = &r->checks[k];
	size_t n = r->cfg->ntargets < MAX_TARGETS ? r->cfg->ntargets : MAX_TARGETS, used = 0;
	struct src_round *rd;

	src_drop(e, cr); /* source_tick() judged the last round already; this never drops one */
	rd = calloc(1, sizeof(*rd) + 2 * n * sizeof(rd->slots[0]));
	if (!rd)
		return;
	rd->ntargets = n;
	rd->end_ms = now;
	rd->deadline_ms = now + (int64_t)c->timeout_ms + SOURCE_GRACE_MS;
	rd->generation = r->generation;
	rd->step = r->step;
	rd->bake = bake;
	rd->per_cohort = source_per_cohort(c);
	for (size_t t = 0; t < n; t++) {
		const struct config_target *tg = target(r, t);
		const struct target_run *tr = &r->targets[t];

		if ((c->target && c->target_index != t) || tr->rolled_back || !tr->touched ||
		    tr->weight == 0 || (tg->kind == CONFIG_TARGET_SERVICE ? !tg->svc : !tg->flg))
			continue;
		used++;
		for (int co = 0; co < (rd->per_cohort ? 2 : 1); co++) {
			struct src_slot *sl = &rd->slots[t * 2 + (size_t)co];
			struct source_vars v;

			sl->used = true;
			src_vars(e, r, t, co, &v);
			if (source_request_build(c, e->cfg->metrics.prometheus, &v, &sl->req,
			                         sl->rd.error, sizeof(sl->rd.error)))
				continue;
			if (!e->be.source_start || !e->be.source_poll) {
				snprintf(sl->rd.error, sizeof(sl->rd.error),
				         "this process has no job runner for %s sources", c->name);
				continue;
			}
			sl->job = e->be.source_start(e->be.ctx, &sl->req);
			if (!sl->job)
				snprintf(sl->rd.error, sizeof(sl->rd.error),
				         "the job queue is full: the source did not run");
		}
	}
	if (!used) {
		free(rd);
		return;
	}
	cr->src = rd;
}

/*
 * Judges check k's round: the worst verdict over its targets, persisted with
 * the source's inputs; then for/on_fail like the built-in metrics, and
 * SOURCE_ERRORS_PAUSE consecutive errors pause the rollout.
 */
static void src_finish(struct rollout_engine *e, struct run *r, size_t k, int64_t now)
{
	const struct config_rollout *ro = r->cfg;
	const struct config_check *c = &ro->analysis.checks[k];
	struct check_run *cr = &r->checks[k];
	struct src_round *rd = cr->src;
	uint64_t interval = ro->analysis.interval_ms;
	struct check_verdict best, cur;
	json_t *d, *evs, *src = NULL;
	int best_t = -1;
	bool act, pause_err;
	uint64_t t0_us = clock_mono_us();

	for (size_t t = 0; t < rd->ntargets; t++) {
		struct src_slot *a = &rd->slots[t * 2], *b = &rd->slots[t * 2 + 1];

		if (!a->used)
			continue;
		for (int co = 0; co < 2; co++) {
			struct src_slot *sl = co ? b : a;

			if (!sl->job)
				continue;
			if (e->be.source_forget)
				e->be.source_forget(e->be.ctx, sl->job);
			sl->job = 0;
			snprintf(sl->rd.error, sizeof(sl->rd.error),
			         "no answer within %llu ms (timeout %llu ms; the job queue may be "
			         "busy)",
			         (unsigned long long)(now - rd->end_ms),
			         (unsigned long long)c->timeout_ms);
		}
		source_evaluate(c, &a->rd, rd->per_cohort ? &b->rd : NULL, interval, &cur);
		if (best_t < 0 || rank(cur.outcome) > rank(best.outcome)) {
			best = cur;
			best_t = (int)t;
			json_decref(src);
			src = source_json(c, &a->req, &a->rd, rd->per_cohort ? &b->req : NULL,
			                  rd->per_cohort ? &b->rd : NULL);
		}
	}
	cr->src = NULL;
	if (best_t < 0)
		goto out;
	cr->last = best;
	cr->have_verdict = true;
	cr->src_end_ms = rd->end_ms;
	if ((unsigned)best.outcome < 4)
		cr->verdicts[best.outcome]++;
	if (best.outcome == CHECK_FAIL) {
		if (cr->fails++ == 0)
			cr->first_fail_ms = rd->end_ms;
	} else {
		cr->fails = 0;
		cr->first_fail_ms = 0;
	}
	cr->src_errors = best.outcome == CHECK_ERROR ? cr->src_errors + 1 : 0;
	/* evidence: a round whose whole interval lies in this step (or bake) */
	if (rd->step == r->step && rd->bake == baking(r) &&
	    rd->end_ms - (int64_t)interval >=
	        (rd->bake ? r->bake_until_ms - (int64_t)ro->bake_ms : r->step_started_ms))
		evidence_note(r, k, &best, &best);
	d = check_verdict_json(&best);
	json_object_set_new(d, "target", json_string(ro->targets[best_t].name));
	json_object_set_new(d, "step", json_integer((json_int_t)rd->step));
	json_object_set_new(d, "interval_end_ms", json_integer(rd->end_ms));
	json_object_set_new(d, "consecutive_failures", json_integer(cr->fails));
	json_object_set_new(d, "consecutive_errors", json_integer(cr->src_errors));
	json_object_set_new(d, "bake", json_boolean(rd->bake));
	json_object_set_new(d, "source", src ? src : json_null());
	src = NULL;
	evs = one("verdict", d);
	act = best.outcome == CHECK_FAIL && (uint64_t)cr->fails * interval >= c->for_ms;
	pause_err = best.outcome == CHECK_ERROR && cr->src_errors >= SOURCE_ERRORS_PAUSE;
	if (act && c->on_fail == CONFIG_ON_FAIL_ROLLBACK) {
		int only = c->target ? (int)c->target_index : -1;
		char why[CHECK_REASON_MAX + 32];

		snprintf(why, sizeof(why), "%s%s", rd->bake ? "during bake: " : "",
		         cr->last.reason);
		do_rollback(e, r, only, ENGINE_ACTOR, now, why, &cr->last, cr->first_fail_ms,
		            rd->bake ? RB_BAKE : RB_CHECK, evs, t0_us);
		goto out;
	}
	if (pause_err)
		cr->src_errors = 0; /* a resume gets SOURCE_ERRORS_PAUSE more tries */
	if (persist(e, r, ENGINE_ACTOR, evs) || r->state != ROLLOUT_PROGRESSING)
		goto out;
	if (act) {
		json_t *x = json_pack("{s:s, s:o}", "check", c->name, "verdict",
		                      check_verdict_json(&cr->last));

		do_pause(e, r, ENGINE_ACTOR, now, cr->last.reason, c->review_ms,
		         c->target ? (int)c->target_index : -1, x);
	} else if (pause_err) {
		char why[CHECK_REASON_MAX + 96];
		json_t *x = json_pack("{s:s, s:o}", "check", c->name, "verdict",
		                      check_verdict_json(&cr->last));

		snprintf(why, sizeof(why), "check %s: %d consecutive source errors (last: %s)",
		         c->name, SOURCE_ERRORS_PAUSE, cr->last.reason);
		do_pause(e, r, ENGINE_ACTOR, now, why, 0, -1, x);
	}
out:
	json_decref(src);
	free(rd);
}

/*
 * Collects the answers of r's running source rounds without blocking and
 * judges the rounds that are complete, past their deadline, or due to be
 * replaced by the interval ending at the next boundary.
 */
static void source_tick(struct rollout_engine *e, struct run *r, int64_t now)
{
	const struct config_rollout *ro = r->cfg;

	for (size_t k = 0; k < ro->analysis.nchecks; k++) {
		const struct config_check *c = &ro->analysis.checks[k];
		struct check_run *cr = &r->checks[k];
		struct src_round *rd = cr->src;
		bool pending = false;

		if (!rd)
			continue;
		if (!active(r) || rd->generation != r->generation) {
			src_drop(e, cr);
			continue;
		}
		for (size_t i = 0; i < 2 * rd->ntargets; i++) {
			struct src_slot *sl = &rd->slots[i];
			struct job_result res;
			int rc;

			if (!sl->job)
				continue;
			memset(&res, 0, sizeof(res));
			rc = e->be.source_poll(e->be.ctx, sl->job, &res);
			if (rc == 1) {
				pending = true;
				continue;
			}
			sl->job = 0;
			if (rc == 0)
				source_read_result(c, &res, &sl->rd);
			else
				snprintf(sl->rd.error, sizeof(sl->rd.error),
				         "the job runner lost the source's job");
			job_result_release(&res);
		}
		if (pending && now < rd->deadline_ms &&
		    !(ro->analysis.interval_ms && now >= r->next_interval_ms))
			continue;
		src_finish(e, r, k, now);
	}
}

/*
 * One analysis interval ending at now: per-target numbers, verdicts,
 * counters, decisions.  While baking the canary (at 100%) is compared with
 * the baseline accumulated over the whole run (the historical baseline).
 * A rollback decision is persisted in the same transaction as the verdicts
 * that made it, so nothing stands between the verdict and the weights but
 * one commit.
 */
static bool shadow_metric(const struct config_check *c)
{
	return c->source == CONFIG_SOURCE_METRIC &&
	       (c->metric == CONFIG_METRIC_SHADOW_MISMATCH_RATE ||
	        c->metric == CONFIG_METRIC_SHADOW_ERROR_RATE ||
	        c->metric == CONFIG_METRIC_SHADOW_LATENCY_P99);
}

static void mirror_delta(const struct mirror_snapshot *prev, const struct mirror_snapshot *cur,
                         struct mirror_snapshot *out)
{
#define D(f) out->f = cur->f >= prev->f ? cur->f - prev->f : 0
	D(mirrored);
	D(matched);
	D(status_mismatch);
	D(body_mismatch);
	D(shadow_error);
	D(dropped);
	D(too_large);
	D(method);
#undef D
	hist_delta(&out->primary, &prev->primary, &cur->primary);
	hist_delta(&out->shadow, &prev->shadow, &cur->shadow);
}

/*
 * The shadow metrics as two cohorts (docs/rollout.md, Shadow steps): the
 * "canary" is the shadow and the "baseline" the primary, over the compared
 * requests.  Errors: mismatches (shadow_mismatch_rate) or requests the
 * shadow did not answer (shadow_error_rate); the primary has none.
 */
static void shadow_cohorts(enum config_metric m, const struct mirror_snapshot *d,
                           struct metrics_cohort_snapshot *canary,
                           struct metrics_cohort_snapshot *base)
{
	uint64_t compared = d->matched + d->status_mismatch + d->body_mismatch + d->shadow_error;

	memset(canary, 0, sizeof(*canary));
	memset(base, 0, sizeof(*base));
	canary->requests = base->requests = compared;
	canary->errors = m == CONFIG_METRIC_SHADOW_ERROR_RATE
	                     ? d->shadow_error
	                     : d->status_mismatch + d->body_mismatch + d->shadow_error;
	canary->hist = d->shadow;
	base->hist = d->primary;
}

static json_t *shadow_json(const struct mirror_snapshot *d)
{
	uint64_t compared = d->matched + d->status_mismatch + d->body_mismatch + d->shadow_error;

	return json_pack(
	    "{s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o}", "compared", (json_int_t)compared, "matched",
	    (json_int_t)d->matched, "status_mismatch", (json_int_t)d->status_mismatch,
	    "body_mismatch", (json_int_t)d->body_mismatch, "shadow_error",
	    (json_int_t)d->shadow_error, "dropped", (json_int_t)d->dropped, "primary_p99_ms",
	    num_or_null(d->primary.n ? hist_quantile(&d->primary, 0.99) / 1000.0 : NAN),
	    "shadow_p99_ms",
	    num_or_null(d->shadow.n ? hist_quantile(&d->shadow, 0.99) / 1000.0 : NAN));
}

/*
 * Target t's mirror comparisons over the last interval (*d) and since its
 * shadow step began (*cum).  False when the target is not shadowing or it
 * is the first reading (which only primes).
 */
static bool read_shadow_interval(struct rollout_engine *e, struct run *r, size_t t,
                                 struct mirror_snapshot *d, struct mirror_snapshot *cum)
{
	const struct config_target *tg = target(r, t);
	struct target_run *tr = &r->targets[t];
	struct mirror_snapshot cur;
	int rc;

	if (!tr->shadow || !e->be.read_shadow || tg->kind != CONFIG_TARGET_SERVICE)
		return false;
	rc = e->be.read_shadow(e->be.ctx, tg->service, &cur);
	if (rc && rc != -ENOENT)
		return false;
	if (!tr->rd.have_prev_sh) {
		tr->rd.prev_sh = tr->rd.cum0_sh = cur;
		tr->rd.have_prev_sh = tr->rd.have_cum0_sh = true;
		tr->rd.sh_looks = 0;
		return false;
	}
	mirror_delta(&tr->rd.prev_sh, &cur, d);
	mirror_delta(&tr->rd.cum0_sh, &cur, cum);
	tr->rd.prev_sh = cur;
	tr->rd.sh_looks++;
	return true;
}

static void evaluate(struct rollout_engine *e, struct run *r, int64_t now)
{
	const struct config_rollout *ro = r->cfg;
	uint64_t interval = ro->analysis.interval_ms, t0_us;
	struct metrics_cohort_snapshot *dc = NULL, *db = NULL, *cc = NULL, *cb = NULL;
	struct mirror_snapshot *sd = NULL, *sc = NULL;
	bool *have = NULL, *have_sh = NULL, all_pass = true, any = false, any_fail = false;
	bool bake = baking(r);
	json_t *evs = json_array(), *per_target = json_object(), *shadow = json_object();
	int act = -1;
	json_t *srm_detail = NULL; /* the sample-ratio guard's mismatch, for the pause */
	char srm_why[SRM_REASON_MAX];
	int srm = -1;

	dc = calloc(ro->ntargets, sizeof(*dc));
	db = calloc(ro->ntargets, sizeof(*db));
	have = calloc(ro->ntargets, sizeof(*have));
	cc = calloc(ro->ntargets, sizeof(*cc));
	cb = calloc(ro->ntargets, sizeof(*cb));
	sd = calloc(ro->ntargets, sizeof(*sd));
	sc = calloc(ro->ntargets, sizeof(*sc));
	have_sh = calloc(ro->ntargets, sizeof(*have_sh));
	if (!dc || !db || !have || !cc || !cb || !sd || !sc || !have_sh)
		goto out;
	for (size_t t = 0; t < ro->ntargets; t++)
		if (read_shadow_interval(e, r, t, &sd[t], &sc[t])) {
			have_sh[t] = true;
			json_object_set_new(shadow, target(r, t)->name, shadow_json(&sd[t]));
		}
	for (size_t t = 0; t < ro->ntargets; t++) {
		const struct config_target *tg = target(r, t);
		struct target_run *tr = &r->targets[t];
		struct metrics_cohort_snapshot c, b;

		if (tg->kind != CONFIG_TARGET_SERVICE || !tg->svc || tr->rolled_back)
			continue;
		if (e->be.read_cohort(e->be.ctx, tg->service, tg->canary, COHORT_CANARY, &c) ||
		    e->be.read_cohort(e->be.ctx, tg->service, stable_version(e, tg),
		                      COHORT_BASELINE, &b)) {
			tr->rd.have_prev = false;
			continue;
		}
		if (!tr->rd.have_cum0) { /* after a restart: count from here */
			tr->rd.cum0_canary = tr->rd.have_prev ? tr->rd.prev_canary : c;
			tr->rd.cum0_baseline = tr->rd.have_prev ? tr->rd.prev_baseline : b;
			tr->rd.have_cum0 = true;
		}
		if (!tr->rd.have_step0) { /* the same for the step's window */
			tr->rd.step0_canary = tr->rd.have_prev ? tr->rd.prev_canary : c;
			tr->rd.step0_baseline = tr->rd.have_prev ? tr->rd.prev_baseline : b;
			tr->rd.step_looks = 0;
			tr->rd.step_canary0 = tr->step_canary;
			tr->rd.step_baseline0 = tr->step_baseline;
			tr->rd.have_step0 = true;
		}
		if (tr->rd.have_prev && tr->touched && tr->weight > 0) {
			/*
			 * At 100% (and in bake) the baseline slice is empty (docs/bucketing.md):
			 * the canary is compared with the baseline accumulated over the run.
			 */
			bool hist = bake || tr->weight >= 100000;

			/* the step's accumulated counts */
			metrics_snapshot_delta(&tr->rd.step0_canary, &c, &cc[t]);
			metrics_snapshot_delta(
			    hist ? &tr->rd.cum0_baseline : &tr->rd.step0_baseline, &b, &cb[t]);
			tr->rd.step_looks++;
			if (gathering(r)) {
				tr->step_canary = tr->rd.step_canary0 + cc[t].requests;
				tr->step_baseline = tr->rd.step_baseline0 + cb[t].requests;
			}
			metrics_snapshot_delta(&tr->rd.prev_canary, &c, &dc[t]);
			if (hist)
				metrics_snapshot_delta(&tr->rd.cum0_baseline, &b, &db[t]);
			else
				metrics_snapshot_delta(&tr->rd.prev_baseline, &b, &db[t]);
			have[t] = true;
			json_object_set_new(
			    per_target, tg->name,
			    json_pack("{s:f, s:o, s:o, s:b}", "weight", tr->weight / 1000.0,
			              "canary", cohort_json(&dc[t], interval), "baseline",
			              cohort_json(&db[t], interval), "historical_baseline", hist));
		}
		tr->rd.prev_canary = c;
		tr->rd.prev_baseline = b;
		tr->rd.have_prev = true;
	}
	t0_us = clock_mono_us();
	if (json_object_size(per_target) || json_object_size(shadow))
		json_array_append_new(
		    evs, ev("rollout.interval",
		            json_pack("{s:I, s:I, s:I, s:b, s:O, s:O}", "interval_end_ms",
		                      (json_int_t)now, "interval_ms", (json_int_t)interval, "step",
		                      (json_int_t)r->step, "bake", bake, "targets", per_target,
		                      "shadow", shadow)));
	if (r->state == ROLLOUT_PROGRESSING)
		srm = srm_guard(e, r, now, per_target, evs, srm_why, sizeof(srm_why), &srm_detail);
	if (srm >= 0)
		all_pass = false; /* unequal slices: no comparison of them can pass */

	for (size_t k = 0; k < ro->analysis.nchecks; k++) {
		const struct config_check *c = &ro->analysis.checks[k];
		struct check_run *cr = &r->checks[k];
		struct check_verdict best, cur, evbest, evcur;
		int best_t = -1, ev_t = -1;

		if (c->source != CONFIG_SOURCE_METRIC) {
			/* judged when its jobs answer (source_tick()): the last round counts */
			if (cr->have_verdict && cr->src_end_ms > r->step_started_ms) {
				any = true;
				if (cr->last.outcome != CHECK_PASS)
					all_pass = false;
			} else {
				all_pass = false;
			}
			src_begin(e, r, k, now, bake);
			continue;
		}
		if (shadow_metric(c)) {
			/* judged on the mirror's comparisons, only while a shadow step runs */
			for (size_t t = 0; t < ro->ntargets; t++) {
				struct metrics_cohort_snapshot ic, ib, kc, kb;
				struct check_cumulative cum = {&kc, &kb, r->targets[t].rd.sh_looks};

				if (!have_sh[t] || (c->target && c->target_index != t))
					continue;
				shadow_cohorts(c->metric, &sd[t], &ic, &ib);
				shadow_cohorts(c->metric, &sc[t], &kc, &kb);
				check_evaluate_cumulative(c, &ic, &ib, &cum, interval, &cur);
				if (best_t < 0 || rank(cur.outcome) > rank(best.outcome)) {
					best = cur;
					best_t = (int)t;
				}
				check_evaluate_cumulative(c, &kc, &kb, &cum, cum.looks * interval,
				                          &evcur);
				if (ev_t < 0 || rank(evcur.outcome) > rank(evbest.outcome)) {
					evbest = evcur;
					ev_t = (int)t;
				}
			}
			if (best_t < 0)
				continue; /* no shadow step: not applicable */
		}
		for (size_t t = 0; t < ro->ntargets && !shadow_metric(c); t++) {
			struct check_cumulative cum = {&cc[t], &cb[t], r->targets[t].rd.step_looks};

			if (!have[t] || (c->target && c->target_index != t))
				continue;
			check_evaluate_cumulative(c, &dc[t], &db[t], &cum, interval, &cur);
			if (best_t < 0 || rank(cur.outcome) > rank(best.outcome)) {
				best = cur;
				best_t = (int)t;
			}
			/* evidence: the same check on everything the step accumulated */
			check_evaluate_cumulative(c, &cc[t], &cb[t], &cum, cum.looks * interval,
			                          &evcur);
			if (ev_t < 0 || rank(evcur.outcome) > rank(evbest.outcome)) {
				evbest = evcur;
				ev_t = (int)t;
			}
		}
		if (best_t < 0) {
			all_pass = false; /* no data: an analysis step cannot pass */
			continue;
		}
		any = true;
		cr->last = best;
		cr->have_verdict = true;
		if ((unsigned)best.outcome < 4)
			cr->verdicts[best.outcome]++;
		if (best.outcome == CHECK_FAIL) {
			if (cr->fails++ == 0)
				cr->first_fail_ms = now;
		} else {
			cr->fails = 0;
			cr->first_fail_ms = 0;
		}
		if (best.outcome != CHECK_PASS)
			all_pass = false;
		if (best.outcome == CHECK_FAIL)
			any_fail = true;
		if (srm < 0) /* unequal slices: nothing of this step counts (below) */
			evidence_note(r, k, &best, ev_t >= 0 ? &evbest : NULL);
		{
			json_t *d = check_verdict_json(&best);

			json_object_set_new(d, "target", json_string(ro->targets[best_t].name));
			json_object_set_new(d, "step", json_integer((json_int_t)r->step));
			json_object_set_new(d, "interval_end_ms", json_integer(now));
			json_object_set_new(d, "consecutive_failures", json_integer(cr->fails));
			json_object_set_new(d, "bake", json_boolean(bake));
			if (ev_t >= 0)
				json_object_set_new(
				    d, "step_evidence",
				    json_pack("{s:s, s:I, s:I, s:b, s:s}", "outcome",
				              check_outcome_name(evbest.outcome), "canary_requests",
				              (json_int_t)evbest.canary_requests,
				              "baseline_requests",
				              (json_int_t)evbest.baseline_requests, "passed",
				              cr->ev_pass, "reason", evbest.reason));
			json_array_append_new(evs, ev("verdict", d));
		}
		if (act < 0 && best.outcome == CHECK_FAIL &&
		    (uint64_t)cr->fails * interval >= c->for_ms)
			act = (int)k;
	}
	if (!any && !json_array_size(evs))
		goto out;
	if (any && gathering(r))
		r->step_iv[any_fail ? 2 : all_pass ? 0 : 1]++;
	/*
	 * A sample-ratio mismatch invalidates what the step accumulated (a pass
	 * earned on it included): the evidence starts again from here, so a
	 * resume waits for a pass on fresh data.
	 */
	if (srm >= 0 && gathering(r))
		evidence_reset(e, r, now);
	if (any && all_pass && r->state == ROLLOUT_PROGRESSING && r->step < ro->nsteps &&
	    r->phase == PHASE_RUNNING && ro->steps[r->step].kind == CONFIG_STEP_ANALYSIS &&
	    now - (int64_t)interval >= r->step_started_ms)
		r->analysis_passed = true;
	if (act >= 0 && ro->analysis.checks[act].on_fail == CONFIG_ON_FAIL_ROLLBACK) {
		const struct config_check *c = &ro->analysis.checks[act];
		struct check_run *cr = &r->checks[act];
		int only = c->target ? (int)c->target_index : -1;
		char why[CHECK_REASON_MAX + 32];

		snprintf(why, sizeof(why), "%s%s", bake ? "during bake: " : "", cr->last.reason);
		do_rollback(e, r, only, ENGINE_ACTOR, now, why, &cr->last, cr->first_fail_ms,
		            bake ? RB_BAKE : RB_CHECK, evs, t0_us);
		evs = NULL;
		goto out;
	}
	if (persist(e, r, ENGINE_ACTOR, evs)) {
		evs = NULL;
		goto out;
	}
	evs = NULL;
	if (act >= 0 && r->state == ROLLOUT_PROGRESSING) {
		const struct config_check *c = &ro->analysis.checks[act];
		struct check_run *cr = &r->checks[act];
		int only = c->target ? (int)c->target_index : -1;
		json_t *x = json_pack("{s:s, s:o}", "check", c->name, "verdict",
		                      check_verdict_json(&cr->last));

		do_pause(e, r, ENGINE_ACTOR, now, cr->last.reason, c->review_ms, only, x);
	}
	if (srm >= 0 && r->state == ROLLOUT_PROGRESSING) {
		do_pause(e, r, ENGINE_ACTOR, now, srm_why, 0, -1, srm_detail);
		srm_detail = NULL;
	}
out:
	json_decref(srm_detail);
	json_decref(evs);
	json_decref(per_target);
	json_decref(shadow);
	free(sd);
	free(sc);
	free(have_sh);
	free(dc);
	free(db);
	free(have);
	free(cc);
	free(cb);
}

/* ------------------------------------------------------------------------ */
/* Rollback pipeline: drain, hooks, verify, evidence                         */

static void post_set_stage(struct run *r, enum post_stage st, int64_t now)
{
	r->post.stage = st;
	r->post.stage_started_ms = now;
}

/* Hook position p.hook -> (hook index, target index); false when past the end. */
static bool hook_at(const struct run *r, size_t pos, size_t *h, size_t *t)
{
	size_t nt = r->cfg->ntargets;

	for (; pos < r->cfg->rollback.nhooks * nt; pos++) {
		if (pos % nt < MAX_TARGETS && (r->post.mask >> (pos % nt) & 1)) {
			*h = pos / nt;
			*t = pos % nt;
			return true;
		}
	}
	return false;
}

/* Starts the hook at r->post.hook: persisted as started first. */
static void hook_begin(struct rollout_engine *e, struct run *r, size_t h, size_t t, int64_t now)
{
	const struct config_hook *hk = &r->cfg->rollback.hooks[h];
	const struct config_target *tg = target(r, t);
	const char *svc = tg->kind == CONFIG_TARGET_SERVICE ? tg->service : "";
	const char *canary = tg->kind == CONFIG_TARGET_SERVICE ? tg->canary : "";
	const char *stable =
	    tg->kind == CONFIG_TARGET_SERVICE && tg->svc ? stable_version(e, tg) : "";
	const char *vars[] = {"rollout", r->cfg->name,
	                      "target",  tg->name,
	                      "service", svc,
	                      "canary",  canary,
	                      "stable",  stable,
	                      "reason",  r->post.reason,
	                      "flag",    tg->flag ? tg->flag : "",
	                      NULL};
	char **argv = NULL;
	char *body = NULL;
	json_t *b;

	r->post.hook_started = true;
	if (persist(e, r, ENGINE_ACTOR,
	            one("rollout.hook.started",
	                json_pack("{s:I, s:s, s:s}", "index", (json_int_t)h, "kind",
	                          hk->kind == CONFIG_HOOK_EXEC ? "exec" : "webhook", "target",
	                          tg->name))))
		return;
	if (!e->be.hook_start || !e->be.hook_poll) {
		r->post.job = 0; /* reported as not run by post_hooks */
		return;
	}
	if (hk->kind == CONFIG_HOOK_EXEC) {
		argv = calloc(hk->argv.n + 1, sizeof(*argv));
		for (size_t i = 0; argv && i < hk->argv.n; i++) {
			argv[i] = malloc(4096);
			if (argv[i])
				str_template(hk->argv.v[i], vars, argv[i], 4096);
			else
				goto out;
		}
		if (argv)
			r->post.job =
			    e->be.hook_start(e->be.ctx, hk, (const char *const *)argv, NULL);
	} else {
		b = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "rollout", r->cfg->name,
		              "target", tg->name, "service", svc, "canary", canary, "stable",
		              stable, "reason", r->post.reason, "decision_ms",
		              (json_int_t)r->post.decision_ms, "at", (json_int_t)now);
		body = b ? json_dumps(b, JSON_COMPACT) : NULL;
		json_decref(b);
		if (body)
			r->post.job = e->be.hook_start(e->be.ctx, hk, NULL, body);
	}
out:
	for (size_t i = 0; argv && i < hk->argv.n; i++)
		free(argv[i]);
	free(argv);
	free(body);
}

/* Records the end of the current hook and moves to the next position. */
static void hook_end(struct rollout_engine *e, struct run *r, size_t h, size_t t,
                     const char *status, json_t *extra)
{
	const struct config_hook *hk = &r->cfg->rollback.hooks[h];
	json_t *d = json_pack("{s:I, s:s, s:s, s:s}", "index", (json_int_t)h, "kind",
	                      hk->kind == CONFIG_HOOK_EXEC ? "exec" : "webhook", "target",
	                      target(r, t)->name, "status", status);

	if (extra)
		json_object_update(d, extra);
	json_decref(extra);
	if (strcmp(status, "ok") == 0)
		r->post.hooks_ok++;
	else
		r->post.hooks_failed++;
	r->post.hook_started = false;
	r->post.job = 0;
	r->post.hook++;
	persist(e, r, ENGINE_ACTOR, one("rollout.hook", d));
}

/* Adds b into a (counts and histogram). */
static void cohort_add(struct metrics_cohort_snapshot *a, const struct metrics_cohort_snapshot *b)
{
	a->requests += b->requests;
	a->errors += b->errors;
	a->proxy_errors += b->proxy_errors;
	for (size_t i = 0; i < METRICS_CLASSES; i++)
		a->by_class[i] += b->by_class[i];
	for (size_t i = 0; i < METRICS_ERR_COUNT; i++)
		a->upstream[i] += b->upstream[i];
	hist_merge(&a->hist, &b->hist);
}

/* The stable version's whole traffic (stable + baseline cohorts) of target t. */
static int read_stable(struct rollout_engine *e, struct run *r, size_t t,
                       struct metrics_cohort_snapshot *out)
{
	const struct config_target *tg = target(r, t);
	struct metrics_cohort_snapshot b;

	if (e->be.read_cohort(e->be.ctx, tg->service, stable_version(e, tg), COHORT_STABLE, out) ||
	    e->be.read_cohort(e->be.ctx, tg->service, stable_version(e, tg), COHORT_BASELINE, &b))
		return -1;
	cohort_add(out, &b);
	return 0;
}

static void post_hooks(struct rollout_engine *e, struct run *r, int64_t now)
{
	size_t h, t;
	struct job_result res;
	int rc;

	if (!hook_at(r, r->post.hook, &h, &t)) {
		post_set_stage(r, r->cfg->rollback.verify_ms ? POST_VERIFY : POST_EVIDENCE, now);
		r->post.verify_next_ms = now + (int64_t)r->cfg->analysis.interval_ms;
		for (size_t k = 0; k < r->cfg->ntargets && k < MAX_TARGETS; k++) {
			struct target_run *tr = &r->targets[k];

			tr->rd.have_prev_stable = (r->post.mask >> k & 1) &&
			                          target(r, k)->kind == CONFIG_TARGET_SERVICE &&
			                          target(r, k)->svc &&
			                          read_stable(e, r, k, &tr->rd.prev_stable) == 0;
		}
		persist(e, r, ENGINE_ACTOR, NULL);
		return;
	}
	/* skip positions whose target is not in the mask */
	r->post.hook = h * r->cfg->ntargets + t;
	if (!r->post.hook_started) {
		hook_begin(e, r, h, t, now);
		return;
	}
	if (!e->be.hook_start || !e->be.hook_poll) {
		hook_end(e, r, h, t, "not_run",
		         json_pack("{s:s}", "error", "this canaryd has no hook runner"));
		return;
	}
	if (!r->post.job) {
		/* started before a restart (or could not be queued): never re-run */
		hook_end(e, r, h, t, "interrupted",
		         json_pack("{s:s}", "error",
		                   "the hook was started but its end was not seen (canaryd "
		                   "restarted or the job queue was full); it may or may not "
		                   "have run to completion"));
		return;
	}
	rc = e->be.hook_poll(e->be.ctx, r->post.job, &res);
	if (rc == 1)
		return;
	if (rc < 0) {
		hook_end(e, r, h, t, "interrupted",
		         json_pack("{s:s}", "error", "the hook runner lost the job"));
		return;
	}
	for (char *c = res.output; *c; c++)
		if ((unsigned char)*c >= 0x80 || ((unsigned char)*c < 0x20 && *c != '\n'))
			*c = '?';
	for (char *c = res.error; *c; c++)
		if ((unsigned char)*c >= 0x80 || (unsigned char)*c < 0x20)
			*c = '?';
	{
		json_t *x = json_pack("{s:I, s:s}", "duration_ms", (json_int_t)res.duration_ms,
		                      "output", res.output);

		if (r->cfg->rollback.hooks[h].kind == CONFIG_HOOK_EXEC) {
			json_object_set_new(x, "exit_code", json_integer(res.exit_code));
			if (res.signal)
				json_object_set_new(x, "signal", json_integer(res.signal));
		} else {
			json_object_set_new(x, "http_status", json_integer(res.http_status));
		}
		if (res.error[0])
			json_object_set_new(x, "error", json_string(res.error));
		hook_end(e, r, h, t, job_status_name(res.status), x);
	}
}

/*
 * verify: every interval for rollback.verify, the checks are evaluated on
 * the stable version's traffic (compared with itself, so only absolute
 * bounds can fail).  Any failing interval fails verification; it passes
 * when at least one interval passed and none failed.
 */
static void post_verify(struct rollout_engine *e, struct run *r, int64_t now)
{
	const struct config_rollout *ro = r->cfg;
	uint64_t interval = ro->analysis.interval_ms;
	struct post *p = &r->post;

	bool evaluated = false;

	if (now >= p->verify_next_ms && interval) {
		bool passed = false, failed = false;

		evaluated = true;

		p->verify_next_ms = now + (int64_t)interval;
		for (size_t t = 0; t < ro->ntargets && t < MAX_TARGETS; t++) {
			struct target_run *tr = &r->targets[t];
			struct metrics_cohort_snapshot cur, d;

			if (!(p->mask >> t & 1) || target(r, t)->kind != CONFIG_TARGET_SERVICE ||
			    !target(r, t)->svc || read_stable(e, r, t, &cur))
				continue;
			if (!tr->rd.have_prev_stable) {
				tr->rd.prev_stable = cur;
				tr->rd.have_prev_stable = true;
				continue;
			}
			metrics_snapshot_delta(&tr->rd.prev_stable, &cur, &d);
			tr->rd.prev_stable = cur;
			for (size_t k = 0; k < ro->analysis.nchecks; k++) {
				const struct config_check *c = &ro->analysis.checks[k];
				struct check_verdict v;

				if (c->source != CONFIG_SOURCE_METRIC ||
				    (c->target && c->target_index != t))
					continue;
				check_evaluate(c, &d, &d, interval, &v);
				if (v.outcome == CHECK_FAIL && !failed) {
					failed = true;
					snprintf(p->verify_reason, sizeof(p->verify_reason),
					         "%.60s: %.250s", target(r, t)->name, v.reason);
				} else if (v.outcome == CHECK_PASS) {
					passed = true;
				}
			}
		}
		p->verify_intervals++;
		if (failed)
			p->verify_failed = true;
		else if (passed)
			p->verify_passes++;
	}
	if (!p->verify_failed && now - p->stage_started_ms < (int64_t)ro->rollback.verify_ms) {
		if (evaluated)
			persist(e, r, ENGINE_ACTOR, NULL);
		return;
	}
	{
		const char *result = p->verify_failed       ? "failed"
		                     : p->verify_passes > 0 ? "passed"
		                                            : "inconclusive";
		json_t *d;

		if (!p->verify_failed && !p->verify_passes)
			snprintf(
			    p->verify_reason, sizeof(p->verify_reason),
			    "the stable version had too little traffic to evaluate the checks");
		else if (!p->verify_failed)
			snprintf(p->verify_reason, sizeof(p->verify_reason),
			         "the stable version passed the checks in %u of %u intervals",
			         p->verify_passes, p->verify_intervals);
		d = json_pack("{s:s, s:b, s:s, s:I, s:I}", "result", result, "passed",
		              !p->verify_failed && p->verify_passes > 0, "reason", p->verify_reason,
		              "duration_ms", (json_int_t)(now - p->stage_started_ms), "intervals",
		              (json_int_t)p->verify_intervals);
		post_set_stage(r, POST_EVIDENCE, now);
		persist(e, r, ENGINE_ACTOR, one("rollout.verified", d));
	}
}

static void post_finish(struct rollout_engine *e, struct run *r, int64_t now)
{
	struct post *p = &r->post;
	json_t *evs = json_array();
	char path[512] = "";
	int rc = e->be.evidence
	             ? e->be.evidence(e->be.ctx, r->cfg->name, r->generation, path, sizeof(path))
	             : -ENOSYS;

	snprintf(p->evidence, sizeof(p->evidence), "%s", rc == 0 ? path : "");
	json_array_append_new(
	    evs, ev("rollout.evidence",
	            rc == 0 ? json_pack("{s:s}", "path", path)
	                    : json_pack("{s:s, s:i}", "error",
	                                "the evidence bundle could not be written", "code", rc)));
	json_array_append_new(evs,
	                      ev("rollout.rollback.finished",
	                         json_pack("{s:s, s:I, s:I, s:I, s:s, s:s, s:o, s:I}", "reason",
	                                   p->reason, "decision_ms", (json_int_t)p->decision_ms,
	                                   "hooks_ok", (json_int_t)p->hooks_ok, "hooks_failed",
	                                   (json_int_t)p->hooks_failed, "verify",
	                                   !r->cfg->rollback.verify_ms ? "none"
	                                   : p->verify_failed          ? "failed"
	                                   : p->verify_passes          ? "passed"
	                                                               : "inconclusive",
	                                   "verify_reason", p->verify_reason, "evidence",
	                                   rc == 0 ? json_string(path) : json_null(), "duration_ms",
	                                   (json_int_t)(now - p->decision_ms))));
	post_set_stage(r, POST_DONE, now);
	if (p->pending) {
		uint64_t next = p->pending;
		char reason[sizeof(p->reason)];

		snprintf(reason, sizeof(reason), "%s", p->reason);
		p->pending = 0;
		post_begin(r, next, reason, now);
	}
	persist(e, r, ENGINE_ACTOR, evs);
}

/* Moves the rollback pipeline on; called every tick while it runs. */
static void post_step(struct rollout_engine *e, struct run *r, int64_t now)
{
	struct post *p = &r->post;

	switch (p->stage) {
	case POST_DRAIN: {
		long left = 0;
		bool known = e->be.inflight != NULL;

		for (size_t t = 0; known && t < r->cfg->ntargets && t < MAX_TARGETS; t++) {
			long n;

			if (!(p->mask >> t & 1) || target(r, t)->kind != CONFIG_TARGET_SERVICE)
				continue;
			n = e->be.inflight(e->be.ctx, target(r, t)->service, target(r, t)->canary);
			if (n < 0)
				known = false;
			else
				left += n;
		}
		if (!p->drain_read) {
			p->drain_read = true;
			p->drain_at_start = known ? left : -1;
		}
		/* ends as soon as nothing is left in flight, else at the deadline */
		if ((!known || left > 0) &&
		    now - p->stage_started_ms < (int64_t)r->cfg->rollback.drain_ms)
			return;
		{
			json_t *d =
			    json_pack("{s:I, s:I, s:b, s:b}", "duration_ms",
			              (json_int_t)(now - p->stage_started_ms), "limit_ms",
			              (json_int_t)r->cfg->rollback.drain_ms, "in_flight_known",
			              known, "deadline_hit", !known || left > 0);

			if (known)
				json_object_set_new(d, "in_flight_left", json_integer(left));
			if (known && p->drain_at_start >= 0)
				json_object_set_new(d, "in_flight_at_start",
				                    json_integer(p->drain_at_start));
			post_set_stage(r, POST_HOOKS, now);
			p->hook = 0;
			p->hook_started = false;
			persist(e, r, ENGINE_ACTOR, one("rollout.drained", d));
		}
		return;
	}
	case POST_HOOKS:
		post_hooks(e, r, now);
		return;
	case POST_VERIFY:
		post_verify(e, r, now);
		return;
	case POST_EVIDENCE:
		post_finish(e, r, now);
		return;
	case POST_NONE:
	case POST_DONE:
		return;
	}
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
		for (size_t t = 0; e->runs[i].targets && t < e->runs[i].cfg->ntargets; t++)
			json_decref(e->runs[i].targets[t].saved);
		for (size_t k = 0; e->runs[i].checks && k < e->runs[i].cfg->analysis.nchecks; k++)
			src_drop(e, &e->runs[i].checks[k]);
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
		if (active(r) && r->step < r->cfg->nsteps && r->phase == PHASE_RUNNING &&
		    r->cfg->steps[r->step].kind == CONFIG_STEP_SHADOW) {
			apply_shadow(e, r, ENGINE_ACTOR, now_ms);
		} else {
			bool had = false;

			for (size_t t = 0; t < r->cfg->ntargets; t++)
				had = had || r->targets[t].shadow;
			if (had) { /* a crash before a stopped mirror was persisted */
				stop_shadow(e, r, ~UINT64_C(0), ENGINE_ACTOR);
				persist(e, r, ENGINE_ACTOR, NULL);
			}
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
			prime(e, r, false);
	}
	return rc;
}

void rollout_engine_tick(struct rollout_engine *e, int64_t now_ms)
{
	for (size_t i = 0; i < e->nruns; i++) {
		struct run *r = &e->runs[i];
		uint64_t interval = r->cfg->analysis.interval_ms;

		if (r->post.stage != POST_NONE && r->post.stage != POST_DONE)
			post_step(e, r, now_ms);
		if (r->state == ROLLOUT_COMPLETED && !r->finalized)
			finalize(e, r);
		if (!active(r))
			continue;
		if (r->state == ROLLOUT_PAUSED && r->review_deadline_ms &&
		    now_ms >= r->review_deadline_ms) {
			char why[400];

			snprintf(why, sizeof(why),
			         "nobody resumed or promoted within the review window (paused: %s)",
			         r->pause_reason);
			do_rollback(e, r, r->review_target, ENGINE_ACTOR, now_ms, why, NULL, 0,
			            RB_REVIEW, NULL, 0);
			if (r->review_target >= 0 && r->state == ROLLOUT_PAUSED) {
				r->review_deadline_ms = 0;
				persist(e, r, ENGINE_ACTOR, NULL);
			}
			continue;
		}
		source_tick(e, r, now_ms);
		if (!active(r))
			continue;
		if (interval && now_ms >= r->next_interval_ms) {
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

		if (tg->kind == CONFIG_TARGET_FLAG)
			o = rollout_engine_flag_owner(e, tg->flag);
		else
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
	prime(e, r, true);
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
		if (active(r) && baking(r)) {
			if (complete(e, r, actor, now_ms,
			             one("rollout.promoted",
			                 json_pack("{s:I, s:s}", "step", (json_int_t)r->step,
			                           "what", "bake ended early"))))
				goto store_error;
			say(msg, msglen, "%s: completed (bake ended early)", name);
			return 200;
		}
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
			if (r->targets[t].rolled_back ||
			    (target(r, t)->kind == CONFIG_TARGET_FLAG &&
			     (!flags_wired(e) || !save_flag(e, r, t))))
				continue;
			r->targets[t].weight = 100000;
			r->targets[t].touched = true;
		}
		json_array_append_new(
		    evs, ev("rollout.promoted", json_pack("{s:I, s:s}", "step", (json_int_t)r->step,
		                                          "what", "full: every target to 100%")));
		if (steps_done(e, r, actor, now_ms, evs))
			goto store_error;
		for (size_t t = 0; t < r->cfg->ntargets; t++)
			if (!r->targets[t].rolled_back && apply_weight(e, r, t, actor))
				log_warn("setting a target to 100% failed", "rollout", name,
				         "target", r->cfg->targets[t].name, NULL);
		say(msg, msglen, "%s: %s (promoted to 100%%)", name,
		    baking(r) ? "baking" : rollout_state_name(r->state));
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
		r->evidence_from_ms = now_ms; /* max_wait starts again; the evidence stays */
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
		if (do_rollback(e, r, -1, actor, now_ms, why, NULL, 0, RB_ABORT, NULL, 0) &&
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
		do_rollback(e, &e->runs[i], -1, actor ? actor : "anonymous", now_ms, why, NULL, 0,
		            RB_EMERGENCY, NULL, 0);
		n++;
	}
	return n;
}

/* The active rollout with a not rolled back target of kind driving name. */
static const char *owner(const struct rollout_engine *e, enum config_target_kind kind,
                         const char *name)
{
	for (size_t i = 0; e && name && i < e->nruns; i++) {
		const struct run *r = &e->runs[i];

		if (!active(r))
			continue;
		for (size_t t = 0; t < r->cfg->ntargets; t++) {
			const struct config_target *tg = target(r, t);

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
	if (e->be.now_ms)
		return e->be.now_ms(e->be.ctx);
	return (int64_t)clock_wall_ms();
}

struct store *rollout_engine_store(const struct rollout_engine *e)
{
	return e->be.store;
}

static json_t *ms_or_null(int64_t ms)
{
	return ms ? json_integer(ms) : json_null();
}

/* "3m", "1h5m", "under 1m": coarse, so the live view changes once a minute. */
static void wait_text(int64_t ms, char *out, size_t len)
{
	int64_t m = ms / MIN_MS;

	if (m < 1)
		snprintf(out, len, "under 1m");
	else if (m < 60)
		snprintf(out, len, "%" PRId64 "m", m);
	else
		snprintf(out, len, "%" PRId64 "h%" PRId64 "m", m / 60, m % 60);
}

/*
 * Why a running traffic step (or the bake) has not passed yet, for the live
 * view: "waiting for evidence: errors 37/200 canary requests; max_wait in
 * 3m".  NULL when it is not waiting on time or evidence.
 */
static json_t *waiting_json(const struct run *r, int64_t now)
{
	char list[400], left[32], text[512];
	int64_t hold_end;
	bool missing;

	if (!active(r) || !traffic_step(r) || (!baking(r) && r->phase != PHASE_RUNNING))
		return json_null();
	hold_end = baking(r) ? r->bake_until_ms
	                     : r->step_started_ms + (int64_t)r->cfg->steps[r->step].for_ms;
	missing = evidence_missing(r, true, list, sizeof(list), NULL, NULL) > 0;
	if (now < hold_end) {
		wait_text(hold_end - now, left, sizeof(left));
		snprintf(text, sizeof(text), "waiting for the %s to end (%s left)%s%s",
		         baking(r) ? "bake" : "step's for", left,
		         missing ? " and for evidence: " : "", missing ? list : "");
		return json_string(text);
	}
	if (!missing)
		return json_null();
	wait_text(r->evidence_from_ms + (int64_t)max_wait_ms(r) - now, left, sizeof(left));
	if (r->state == ROLLOUT_PAUSED)
		snprintf(text, sizeof(text), "waiting for evidence: %s", list);
	else
		snprintf(text, sizeof(text), "waiting for evidence: %s; max_wait in %s", list,
		         left);
	return json_string(text);
}

static json_t *run_json(const struct run *r, int64_t now)
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
	                 (json_int_t)ro->nsteps, "kind",
	                 st          ? step_kind_name(st->kind)
	                 : baking(r) ? "bake"
	                             : "none",
	                 "phase", r->phase == PHASE_WAITING ? "waiting" : "running", "started_at",
	                 ms_or_null(r->phase == PHASE_RUNNING ? r->step_started_ms : 0));
	if (st && r->phase == PHASE_WAITING && active(r)) {
		int64_t g = rollout_gate_time(&st->not_before, &st->window, r->waiting_since_ms,
		                              r->waiting_since_ms);

		json_object_set_new(step, "gate_at",
		                    g == INT64_MAX ? json_null() : json_integer(g));
	}
	if (traffic_step(r) && active(r)) {
		json_object_set_new(step, "waiting_for", waiting_json(r, now));
		json_object_set_new(step, "evidence", evidence_json(r));
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
	json_object_set_new(o, "bake",
	                    baking(r)
	                        ? json_pack("{s:I, s:I}", "until", (json_int_t)r->bake_until_ms,
	                                    "bake_ms", (json_int_t)ro->bake_ms)
	                        : json_null());
	if (r->state == ROLLOUT_COMPLETED)
		json_object_set_new(o, "finalized", json_boolean(r->finalized));
	if (r->post.stage != POST_NONE) {
		const struct post *p = &r->post;

		json_object_set_new(
		    o, "post",
		    json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:o}", "stage",
		              post_stage_names[p->stage], "reason", p->reason, "stage_started",
		              (json_int_t)p->stage_started_ms, "hooks_ok", (json_int_t)p->hooks_ok,
		              "hooks_failed", (json_int_t)p->hooks_failed, "verify",
		              !ro->rollback.verify_ms                      ? "none"
		              : p->verify_failed                           ? "failed"
		              : p->stage > POST_VERIFY && p->verify_passes ? "passed"
		              : p->stage > POST_VERIFY                     ? "inconclusive"
		                                                           : "pending",
		              "evidence", p->evidence[0] ? json_string(p->evidence) : json_null()));
	}
	if (r->ctr.last_ttd_ms > 0)
		json_object_set_new(o, "time_to_detect_ms", json_integer(r->ctr.last_ttd_ms));
	if (r->ctr.last_ttm_us > 0)
		json_object_set_new(o, "time_to_mitigate_us", json_integer(r->ctr.last_ttm_us));
	return o;
}

json_t *rollout_engine_json(const struct rollout_engine *e, const char *name)
{
	const struct run *r = find(e, name);

	return r ? run_json(r, rollout_engine_now(e)) : NULL;
}

json_t *rollout_engine_list_json(const struct rollout_engine *e)
{
	json_t *a = json_array();

	for (size_t i = 0; i < e->nruns; i++)
		json_array_append_new(a, run_json(&e->runs[i], rollout_engine_now(e)));
	return a;
}

/* ------------------------------------------------------------------------ */
/* Reloads and metrics                                                       */

void rollout_engine_adopt(struct rollout_engine *e, const struct rollout_engine *old)
{
	for (size_t i = 0; old && i < e->nruns; i++) {
		struct run *r = &e->runs[i];
		const struct run *o = find(old, r->cfg->name);

		if (!o)
			continue;
		r->ctr = o->ctr;
		if (r->post.stage == POST_HOOKS && o->post.stage == POST_HOOKS &&
		    r->post.hook == o->post.hook && r->post.hook_started)
			r->post.job = o->post.job;
		for (size_t t = 0; t < r->cfg->ntargets; t++) {
			const struct config_target *tg = target(r, t);

			for (size_t u = 0; u < o->cfg->ntargets; u++) {
				const struct config_target *og = target(o, u);
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
				}
	}
}

int rollout_engine_write_prometheus(const struct rollout_engine *e, struct buf *out)
{
	int rc = 0;

	rc |=
	    buf_append_lit(out, "# HELP canaryd_rollout_state 1 for the rollout's current state.\n"
	                        "# TYPE canaryd_rollout_state gauge\n");
	for (size_t i = 0; i < e->nruns; i++)
		for (int st = ROLLOUT_IDLE; st <= ROLLOUT_FAILED; st++)
			rc |= buf_printf(
			    out, "canaryd_rollout_state{rollout=\"%s\",state=\"%s\"} %d\n",
			    e->runs[i].cfg->name, rollout_state_name((enum rollout_state)st),
			    (int)e->runs[i].state == st);
	rc |= buf_append_lit(out, "# HELP canaryd_rollout_step Index of the current step.\n"
	                          "# TYPE canaryd_rollout_step gauge\n");
	for (size_t i = 0; i < e->nruns; i++)
		rc |= buf_printf(out, "canaryd_rollout_step{rollout=\"%s\"} %zu\n",
		                 e->runs[i].cfg->name, e->runs[i].step);
	rc |=
	    buf_append_lit(out, "# HELP canaryd_target_weight Canary weight of a target, percent.\n"
	                        "# TYPE canaryd_target_weight gauge\n");
	for (size_t i = 0; i < e->nruns; i++)
		for (size_t t = 0; t < e->runs[i].cfg->ntargets; t++)
			rc |= buf_printf(
			    out, "canaryd_target_weight{rollout=\"%s\",target=\"%s\"} %.3f\n",
			    e->runs[i].cfg->name, e->runs[i].cfg->targets[t].name,
			    e->runs[i].targets[t].weight / 1000.0);
	rc |= buf_append_lit(out, "# HELP canaryd_check_verdict_total Check verdicts by outcome.\n"
	                          "# TYPE canaryd_check_verdict_total counter\n");
	for (size_t i = 0; i < e->nruns; i++)
		for (size_t k = 0; k < e->runs[i].cfg->analysis.nchecks; k++)
			for (int o = CHECK_PASS; o <= CHECK_ERROR; o++)
				rc |= buf_printf(
				    out,
				    "canaryd_check_verdict_total{rollout=\"%s\",check=\"%s\","
				    "verdict=\"%s\"} %" PRIu64 "\n",
				    e->runs[i].cfg->name, e->runs[i].cfg->analysis.checks[k].name,
				    check_outcome_name((enum check_outcome)o),
				    e->runs[i].checks[k].verdicts[o]);
	rc |= buf_append_lit(out, "# HELP canaryd_rollbacks_total Rollbacks by reason.\n"
	                          "# TYPE canaryd_rollbacks_total counter\n");
	for (size_t i = 0; i < e->nruns; i++)
		for (size_t c = 0; c < sizeof(rb_class_names) / sizeof(rb_class_names[0]); c++)
			rc |= buf_printf(
			    out,
			    "canaryd_rollbacks_total{rollout=\"%s\",reason=\"%s\"} %" PRIu64 "\n",
			    e->runs[i].cfg->name, rb_class_names[c], e->runs[i].ctr.rollbacks[c]);
	rc |= buf_append_lit(out, "# HELP canaryd_time_to_detect_seconds Last rollback: start of "
	                          "the first failing interval to the decision.\n"
	                          "# TYPE canaryd_time_to_detect_seconds gauge\n");
	for (size_t i = 0; i < e->nruns; i++)
		if (e->runs[i].ctr.last_ttd_ms > 0)
			rc |=
			    buf_printf(out, "canaryd_time_to_detect_seconds{rollout=\"%s\"} %.3f\n",
			               e->runs[i].cfg->name, e->runs[i].ctr.last_ttd_ms / 1e3);
	rc |= buf_append_lit(out, "# HELP canaryd_time_to_mitigate_seconds Last rollback: the "
	                          "decision to every worker routing no new request to the canary.\n"
	                          "# TYPE canaryd_time_to_mitigate_seconds gauge\n");
	for (size_t i = 0; i < e->nruns; i++)
		if (e->runs[i].ctr.last_ttm_us > 0)
			rc |= buf_printf(out,
			                 "canaryd_time_to_mitigate_seconds{rollout=\"%s\"} %.6f\n",
			                 e->runs[i].cfg->name, e->runs[i].ctr.last_ttm_us / 1e6);
	return rc ? -ENOSPC : 0;
}

json_t *rollout_engine_evidence(const struct rollout_engine *e, const char *name, int64_t now_ms)
{
	const struct run *r = find(e, name);
	char subject[STORE_NAME_MAX + 1];
	json_t *all, *live, *bundle = NULL;
	int64_t since = 0;

	if (!r)
		return NULL;
	snprintf(subject, sizeof(subject), "rollout/%s", name);
	all = json_array();
	/* every event of the rollout, a page at a time */
	for (;;) {
		json_t *page = NULL, *x;
		size_t i;

		if (store_events_list(e->be.store, since, STORE_EVENTS_LIMIT_MAX, subject, &page)) {
			json_decref(all);
			return NULL;
		}
		json_array_foreach(page, i, x)
		{
			since = (int64_t)json_integer_value(json_object_get(x, "id"));
			json_array_append(all, x);
		}
		i = json_array_size(page);
		json_decref(page);
		if (i < STORE_EVENTS_LIMIT_MAX)
			break;
	}
	live = run_json(r, now_ms);
	bundle = evidence_build(name, all, live, e->cfg->source, now_ms);
	json_decref(live);
	json_decref(all);
	return bundle;
}
