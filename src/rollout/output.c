/*
 * output.c - what the rollout engine shows: the live JSON view of a run
 * (GET /v1/rollouts/{name}), with why a step is still waiting; the
 * Prometheus families of /metrics; the evidence bundle built from the
 * rollout's events (rollout/evidence.h).  Read-only: nothing here changes
 * a run.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "rollout/engine_internal.h"
#include "rollout/evidence.h"
#include "state/state.h"
#include "store/store.h"

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

	if (!run_active(r) || !run_traffic_step(r) || (!run_baking(r) && r->phase != PHASE_RUNNING))
		return json_null();
	hold_end = run_baking(r) ? r->bake_until_ms
	                         : r->step_started_ms +
	                               (int64_t)rollout_dur(r, r->cfg->steps[r->step].for_ms);
	missing = rollout_evidence_missing(r, true, list, sizeof(list), NULL, NULL) > 0;
	if (now < hold_end) {
		wait_text(hold_end - now, left, sizeof(left));
		snprintf(text, sizeof(text), "waiting for the %s to end (%s left)%s%s",
		         run_baking(r) ? "bake" : "step's for", left,
		         missing ? " and for evidence: " : "", missing ? list : "");
		return json_string(text);
	}
	if (!missing)
		return json_null();
	wait_text(r->evidence_from_ms + (int64_t)rollout_max_wait_ms(r) - now, left, sizeof(left));
	if (r->state == ROLLOUT_PAUSED)
		snprintf(text, sizeof(text), "waiting for evidence: %s", list);
	else
		snprintf(text, sizeof(text), "waiting for evidence: %s; max_wait in %s", list,
		         left);
	return json_string(text);
}

/*
 * The rollout's plan, one entry per step: its kind, what it sets (target ->
 * percent, or the shadow percent), its holds and gates, its approvers, and
 * where the run is ("done", "current", "pending").
 */
static json_t *plan_json(const struct run *r)
{
	const struct config_rollout *ro = r->cfg;
	json_t *plan = json_array();

	for (size_t i = 0; plan && i < ro->nsteps; i++) {
		const struct config_step *st = &ro->steps[i];
		json_t *x = json_pack("{s:I, s:s, s:s}", "index", (json_int_t)i, "kind",
		                      rollout_step_kind_name(st->kind), "status",
		                      i < r->step    ? "done"
		                      : i == r->step ? "current"
		                                     : "pending");

		if (!x)
			continue;
		if (st->name)
			json_object_set_new(x, "name", json_string(st->name));
		if (st->kind == CONFIG_STEP_SET) {
			json_t *w = json_object();

			for (size_t k = 0; k < st->nsets; k++)
				json_object_set_new(w, st->sets[k].target,
				                    json_real(st->sets[k].percent / 1000.0));
			json_object_set_new(x, "weights", w);
		} else if (st->kind == CONFIG_STEP_SHADOW) {
			json_object_set_new(x, "shadow_percent",
			                    json_real(st->shadow_percent / 1000.0));
		} else if (st->kind == CONFIG_STEP_APPROVAL) {
			json_t *a = json_array();

			for (size_t k = 0; k < st->approvers.n; k++)
				json_array_append_new(a, json_string(st->approvers.v[k]));
			json_object_set_new(x, "approvers", a);
		} else if (st->kind == CONFIG_STEP_PAUSE && st->pause_ms) {
			json_object_set_new(x, "pause_ms", json_integer((json_int_t)st->pause_ms));
		} else if (st->kind == CONFIG_STEP_ANALYSIS && st->analysis_for_ms) {
			json_object_set_new(x, "analysis_for_ms",
			                    json_integer((json_int_t)st->analysis_for_ms));
		}
		if (st->for_ms)
			json_object_set_new(x, "for_ms", json_integer((json_int_t)st->for_ms));
		if (st->not_before.kind != CONFIG_NOT_BEFORE_NONE || st->window.set)
			json_object_set_new(x, "gated", json_true());
		json_array_append_new(plan, x);
	}
	return plan;
}

static json_t *run_json(const struct run *r, int64_t now)
{
	const struct config_rollout *ro = r->cfg;
	const struct config_step *st = r->step < ro->nsteps ? &ro->steps[r->step] : NULL;
	json_t *o, *targets = json_array(), *checks = json_array(), *step;

	for (size_t t = 0; t < ro->ntargets; t++) {
		const struct config_target *tg = run_target(r, t);
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
		json_t *x, *tl = json_array();

		for (size_t t = 0; c->target_mask && t < ro->ntargets; t++)
			if (config_check_covers(c, t))
				json_array_append_new(tl, json_string(ro->targets[t].name));
		x = json_pack("{s:s, s:s, s:s, s:I, s:I, s:o, s:o}", "name", c->name, "metric",
		              c->source == CONFIG_SOURCE_METRIC && m ? m : "external", "on_fail",
		              c->on_fail == CONFIG_ON_FAIL_PAUSE         ? "pause"
		              : c->on_fail == CONFIG_ON_FAIL_ROLLBACK_TO ? "rollback_to"
		                                                         : "rollback",
		              "consecutive_failures", (json_int_t)r->checks[k].fails, "for_ms",
		              (json_int_t)c->for_ms, "last_verdict",
		              r->checks[k].have_verdict ? check_verdict_json(&r->checks[k].last)
		                                        : json_null(),
		              "targets", c->target_mask ? tl : json_null());
		if (!c->target_mask)
			json_decref(tl);
		if (x && c->on_fail == CONFIG_ON_FAIL_ROLLBACK_TO)
			json_object_set_new(x, "rollback_to", json_string(c->rollback_to));
		json_array_append_new(checks, x);
	}
	step = json_pack("{s:I, s:I, s:s, s:s, s:o}", "index", (json_int_t)r->step, "of",
	                 (json_int_t)ro->nsteps, "kind",
	                 st              ? rollout_step_kind_name(st->kind)
	                 : run_baking(r) ? "bake"
	                                 : "none",
	                 "phase", r->phase == PHASE_WAITING ? "waiting" : "running", "started_at",
	                 ms_or_null(r->phase == PHASE_RUNNING ? r->step_started_ms : 0));
	if (st && st->name)
		json_object_set_new(step, "name", json_string(st->name));
	if (st && r->phase == PHASE_WAITING && run_active(r)) {
		int64_t g = run_gate_time(r, st, r->waiting_since_ms);

		json_object_set_new(step, "gate_at",
		                    g == INT64_MAX ? json_null() : json_integer(g));
	}
	if (run_traffic_step(r) && run_active(r)) {
		json_object_set_new(step, "waiting_for", waiting_json(r, now));
		json_object_set_new(step, "evidence", rollout_evidence_json(r));
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
	                    run_baking(r)
	                        ? json_pack("{s:I, s:I}", "until", (json_int_t)r->bake_until_ms,
	                                    "bake_ms", (json_int_t)rollout_dur(r, ro->bake_ms))
	                        : json_null());
	/* a rehearsal: every duration of the plan divided by this speed */
	json_object_set_new(o, "rehearsal", r->rehearse > 0 ? json_real(r->rehearse) : json_null());
	json_object_set_new(o, "plan", plan_json(r));
	if (r->state == ROLLOUT_COMPLETED)
		json_object_set_new(o, "finalized", json_boolean(r->finalized));
	if (r->cfg->nvalidate) /* validate_engine.c: the post-rollout windows */
		json_object_set_new(o, "validation", rollout_validate_view(r));
	if (r->post.stage != POST_NONE) {
		const struct post *p = &r->post;

		json_object_set_new(
		    o, "post",
		    json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:o}", "stage",
		              rollout_post_stage_name(p->stage), "reason", p->reason,
		              "stage_started", (json_int_t)p->stage_started_ms, "hooks_ok",
		              (json_int_t)p->hooks_ok, "hooks_failed", (json_int_t)p->hooks_failed,
		              "verify",
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
	const struct run *r = rollout_find(e, name);

	return r ? run_json(r, rollout_engine_now(e)) : NULL;
}

json_t *rollout_engine_list_json(const struct rollout_engine *e)
{
	json_t *a = json_array();

	for (size_t i = 0; i < e->nruns; i++)
		json_array_append_new(a, run_json(&e->runs[i], rollout_engine_now(e)));
	return a;
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
		for (size_t c = 0; c < RB_COUNT; c++)
			rc |= buf_printf(
			    out,
			    "canaryd_rollbacks_total{rollout=\"%s\",reason=\"%s\"} %" PRIu64 "\n",
			    e->runs[i].cfg->name, rollout_rb_class_name((enum rb_class)c),
			    e->runs[i].ctr.rollbacks[c]);
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
	const struct run *r = rollout_find(e, name);
	json_t *live, *bundle = NULL;

	if (!r)
		return NULL;
	/* streamed from the store with bounded series (docs/evidence.md) */
	live = run_json(r, now_ms);
	if (evidence_build_store(name, state_store(e->be.state), live, e->cfg->source, now_ms,
	                         &bundle))
		bundle = NULL;
	json_decref(live);
	return bundle;
}
