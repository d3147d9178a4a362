/*
 * doc.c - the rollout documents (see engine_internal.h): a run encoded as
 * the JSON document of kind "rollout" named after the rollout, parsed back
 * at load and after a failed write, committed with its events through the
 * state layer (rollout_persist()), and reloaded when another node commits
 * it (rollout_engine_reload() in engine.c, the hook fleet mode uses).
 *
 * Every transition follows the same order: change the in-memory run,
 * commit its document and events in one state_commit(), and only then
 * apply the action.  When the commit fails, the run is restored from its
 * last committed document (run_restore()), so memory never runs ahead of
 * the store.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "rollout/engine_internal.h"
#include "state/state.h"
#include "store/store.h"

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

const char *rollout_step_kind_name(enum config_step_kind k)
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
	case CONFIG_STEP_PREVIEW:
		return "preview";
	}
	return "unknown";
}

/*
 * What every event of r carries (docs/rollout.md "Events"): the name of the
 * step it is about (details.step, when that step has a name) and, in a
 * rehearsal, details.rehearsal: SPEED.
 */
static void event_decorate(const struct run *r, json_t *details)
{
	json_t *st = json_object_get(details, "step");

	if (!json_is_object(details))
		return;
	if (json_is_integer(st) && json_integer_value(st) >= 0 &&
	    (size_t)json_integer_value(st) < r->cfg->nsteps &&
	    r->cfg->steps[json_integer_value(st)].name && !json_object_get(details, "step_name"))
		json_object_set_new(details, "step_name",
		                    json_string(r->cfg->steps[json_integer_value(st)].name));
	if (r->rehearse > 0)
		json_object_set_new(details, "rehearsal", json_real(r->rehearse));
}

static int state_from_name(const char *s)
{
	for (int i = ROLLOUT_IDLE; i <= ROLLOUT_FAILED; i++)
		if (strcmp(s, rollout_state_name((enum rollout_state)i)) == 0)
			return i;
	return -1;
}

static const char *const post_stage_names[] = {"none",   "drain",    "hooks",
                                               "verify", "evidence", "done"};

const char *rollout_post_stage_name(enum post_stage s)
{
	return (size_t)s < sizeof(post_stage_names) / sizeof(post_stage_names[0])
	           ? post_stage_names[s]
	           : "unknown";
}

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
		    json_pack(
		        "{s:s, s:I, s:b, s:b, s:O*, s:I, s:I, s:I, s:b}", "name",
		        ro->targets[i].name, "weight", (json_int_t)r->targets[i].weight, "touched",
		        r->targets[i].touched, "rolled_back", r->targets[i].rolled_back, "saved",
		        r->targets[i].saved, "shadow", (json_int_t)r->targets[i].shadow,
		        "step_canary", (json_int_t)r->targets[i].step_canary, "step_baseline",
		        (json_int_t)r->targets[i].step_baseline, "preview", r->targets[i].preview));
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
	    "{s:s, s:I, s:s, s:I, s:I, s:o, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
	    "s:I, s:b, s:o, s:o, s:I, s:b, s:o, s:I, s:[I, I, I], s:f, s:I}",
	    "state", rollout_state_name(r->state), "step", (json_int_t)r->step, "phase",
	    r->phase == PHASE_WAITING ? "waiting" : "running", "waiting_since",
	    (json_int_t)r->waiting_since_ms, "step_started", (json_int_t)r->step_started_ms,
	    "approvals", appr, "pause_reason", r->pause_reason, "paused_at",
	    (json_int_t)r->paused_at_ms, "review_deadline", (json_int_t)r->review_deadline_ms,
	    "review_targets", (json_int_t)r->review_targets, "next_interval",
	    (json_int_t)r->next_interval_ms, "started", (json_int_t)r->started_ms, "ended",
	    (json_int_t)r->ended_ms, "decision", (json_int_t)r->decision_ms, "generation",
	    (json_int_t)r->generation, "mitigated", r->mitigated, "targets", targets, "checks",
	    checks, "bake_until", (json_int_t)r->bake_until_ms, "finalized", r->finalized, "post",
	    post_doc(&r->post), "evidence_from", (json_int_t)r->evidence_from_ms, "step_intervals",
	    (json_int_t)r->step_iv[0], (json_int_t)r->step_iv[1], (json_int_t)r->step_iv[2],
	    "rehearse", r->rehearse, "upcoming_sent", (json_int_t)r->upcoming_sent);
}

static int64_t jint(const json_t *o, const char *key)
{
	return (int64_t)json_integer_value(json_object_get(o, key));
}

/* Resets r to a fresh idle run (keeps metric readings and verdicts). */
void rollout_run_reset(struct run *r)
{
	validate_reset(&r->val); /* validate_engine.c */
	r->state = ROLLOUT_IDLE;
	r->step = 0;
	r->phase = PHASE_WAITING;
	r->waiting_since_ms = r->step_started_ms = 0;
	r->approvals = 0;
	r->pause_reason[0] = '\0';
	r->paused_at_ms = r->review_deadline_ms = 0;
	r->review_targets = ALL_TARGETS;
	r->rehearse = 0;
	r->upcoming_sent = 0;
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
		r->targets[i].preview = false;
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

int rollout_run_parse(struct run *r, const char *text)
{
	const struct config_rollout *ro = r->cfg;
	json_t *o = json_loads(text, 0, NULL), *v;
	const char *s;
	size_t i;
	int st;

	rollout_run_reset(r);
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
	if (json_is_integer(json_object_get(o, "review_targets"))) {
		r->review_targets = (uint64_t)jint(o, "review_targets");
	} else { /* written before target sets: one index, or -1 for all */
		int64_t one = json_is_integer(json_object_get(o, "review_target"))
		                  ? jint(o, "review_target")
		                  : -1;

		r->review_targets = one < 0 || one >= (int64_t)ro->ntargets || one >= MAX_TARGETS
		                        ? ALL_TARGETS
		                        : UINT64_C(1) << one;
	}
	r->rehearse = json_number_value(json_object_get(o, "rehearse"));
	if (!(r->rehearse > 0))
		r->rehearse = 0;
	r->upcoming_sent = (size_t)jint(o, "upcoming_sent");
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
			r->targets[t].preview = json_is_true(json_object_get(v, "preview"));
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
	validate_parse(&r->val, json_object_get(o, "validation")); /* validate_engine.c */
	json_decref(o);
	return 0;
bad:
	json_decref(o);
	rollout_run_reset(r);
	return -EINVAL;
}

/* Puts r back to its last committed document (after a failed write). */
static void run_restore(struct run *r)
{
	if (r->committed)
		rollout_run_parse(r, r->committed);
	else
		rollout_run_reset(r);
}

int rollout_run_load(struct run *r, const char *text)
{
	char *copy = strdup(text);

	free(r->committed);
	r->committed = copy;     /* NULL when out of memory: a failed commit then idles the run */
	json_decref(r->pending); /* another node's document wins over a local decision */
	r->pending = NULL;
	return rollout_run_parse(r, text);
}

json_t *rollout_event(const char *kind, json_t *details)
{
	return json_pack("{s:s, s:o}", "kind", kind, "details", details ? details : json_object());
}

json_t *rollout_event_list(const char *kind, json_t *details)
{
	json_t *a = json_array();

	json_array_append_new(a, rollout_event(kind, details));
	return a;
}

/*
 * rollout_persist(), and with defer a rollback's: see engine_internal.h.
 * A pending rollback's events go first, in the same transaction.
 */
static int persist(struct rollout_engine *e, struct run *r, const char *actor, json_t *events,
                   bool defer)
{
	char subject[STORE_NAME_MAX + 1], errmsg[256];
	size_t nevs, i;
	struct state_event *evs = NULL;
	char **details = NULL;
	char *doc = NULL;
	json_t *x, *all = json_array();
	int rc = -ENOMEM;

	snprintf(subject, sizeof(subject), "rollout/%s", r->cfg->name);
	if (!all || (r->pending && json_array_extend(all, r->pending)) ||
	    (events && json_array_extend(all, events)))
		goto out_restore;
	nevs = json_array_size(all);
	x = run_doc(r);
	if (x && r->val.begun) /* validate_engine.c: the post-rollout windows */
		json_object_set_new(x, "validation", validate_doc(&r->val));
	doc = x ? json_dumps(x, JSON_COMPACT) : NULL;
	json_decref(x);
	evs = calloc(nevs ? nevs : 1, sizeof(*evs));
	details = calloc(nevs ? nevs : 1, sizeof(*details));
	if (!doc || !evs || !details)
		goto out_restore;
	json_array_foreach(all, i, x)
	{
		event_decorate(r, json_object_get(x, "details"));
		details[i] = json_dumps(json_object_get(x, "details"), JSON_COMPACT);
		if (!details[i])
			goto out_restore;
		evs[i] = (struct state_event){.actor = actor,
		                              .kind = json_string_value(json_object_get(x, "kind")),
		                              .subject = subject,
		                              .details = details[i]};
	}
	rc = state_commit(
	    e->be.state,
	    &(struct state_doc){
	        .kind = DOC_KIND, .name = r->cfg->name, .json = doc, .expect_rev = STORE_REV_ANY},
	    1, evs, nevs, NULL);
	if (rc)
		goto out_restore;
	if (r->pending)
		log_info("rollout: the rollback decided while the store was away is persisted",
		         "rollout", r->cfg->name, NULL);
	json_decref(r->pending);
	r->pending = NULL;
	free(r->committed);
	r->committed = doc;
	doc = NULL;
	json_array_foreach(all, i, x)
	    rollout_act_notify(e, json_string_value(json_object_get(x, "kind")), r->cfg->name,
	                       json_object_get(x, "details"));
	goto out;

out_restore:
	if (defer && rc == ERR_UNAVAILABLE && doc) {
		/* keep the decision: the run stays rolled back, its events wait */
		log_warn("rollout: the store is away; the rollback is applied here and persisted "
		         "when it returns",
		         "rollout", r->cfg->name, NULL);
		free(r->committed);
		r->committed = doc;
		doc = NULL;
		json_decref(r->pending);
		r->pending = json_incref(all);
		rc = 1;
		goto out;
	}
	log_warn("rollout store write failed", "rollout", r->cfg->name, "error", err_str(rc),
	         "detail", state_errmsg(e->be.state, errmsg, sizeof(errmsg)), NULL);
	run_restore(r);
out:
	for (i = 0; details && i < nevs; i++)
		free(details[i]);
	free(details);
	free(evs);
	free(doc);
	json_decref(all);
	json_decref(events);
	return rc;
}

int rollout_persist(struct rollout_engine *e, struct run *r, const char *actor, json_t *events)
{
	return persist(e, r, actor, events, false);
}

int rollout_persist_or_defer(struct rollout_engine *e, struct run *r, const char *actor,
                             json_t *events)
{
	return persist(e, r, actor, events, true);
}

int rollout_flush_pending(struct rollout_engine *e, struct run *r)
{
	int rc;

	if (!r->pending)
		return 0;
	rc = rollout_persist(e, r, ENGINE_ACTOR, NULL);
	if (rc == 0) {
		/* now through the state path: every node's proxy takes the zero weights */
		for (size_t t = 0; t < r->cfg->ntargets; t++)
			if (r->targets[t].rolled_back)
				rollout_act_weight(e, r, t, ENGINE_ACTOR);
		return 0;
	}
	if (rc == ERR_CONFLICT) {
		log_warn("rollout: another node leads now; the rollback decided while the store "
		         "was away is dropped (the leader judges again)",
		         "rollout", r->cfg->name, NULL);
		json_decref(r->pending);
		r->pending = NULL;
		r->reload_wanted = true; /* by the engine's tick: doc.c never calls up */
	}
	return rc;
}

static int load_doc(void *arg, const char *name, const char *json, int64_t rev)
{
	struct rollout_engine *e = arg;
	struct run *r = rollout_find(e, name);

	(void)rev;
	if (r && r->pending)
		return 0; /* a rollback decided while the store was away: kept, then persisted */
	if (r && rollout_run_load(r, json))
		log_warn("unreadable rollout document; treated as idle", "rollout", name, NULL);
	return 0;
}

int rollout_docs_load(struct rollout_engine *e)
{
	return store_doc_list(state_store(e->be.state), DOC_KIND, load_doc, e);
}
