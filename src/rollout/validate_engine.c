/*
 * validate_engine.c - the rollout engine's side of post-rollout validation
 * (validate.h, docs/rollout.md "Post-rollout validation"): at completion
 * the pre-rollout baseline and the versions are recorded in the run's
 * document; every tick of a completed rollout moves its current window on
 * (pending -> running -> passed | failed | inconclusive), judging the new
 * stable every analysis interval against that baseline; each window's end
 * commits its report event (then the evidence bundle is rewritten), and a
 * failure with on_fail: rollback reverts the rollout to the old stable
 * through the rollback pipeline (class "validation").
 *
 * Crash safety: the schedule counts from the persisted completion time and
 * each window's counts, trend and verdicts are in the document; only the
 * last cumulative reading is not, so the first interval after a restart
 * re-primes it.  Calls go to rollback.c, doc.c and actions.c (and the model
 * in validate.c); nothing calls back here but engine.c and the API.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rollout/engine_internal.h"

static uint64_t run_dur(const void *arg, uint64_t ms)
{
	return rollout_dur(arg, ms);
}

static void cohort_sum(struct metrics_cohort_snapshot *a, const struct metrics_cohort_snapshot *b)
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

/* Every request version served (stable, canary and baseline cohorts), cumulative. */
static int read_version(struct rollout_engine *e, const struct config_target *tg,
                        const char *version, struct metrics_cohort_snapshot *out)
{
	static const enum cohort cohorts[] = {COHORT_STABLE, COHORT_CANARY, COHORT_BASELINE};

	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < sizeof(cohorts) / sizeof(cohorts[0]); i++) {
		struct metrics_cohort_snapshot s;

		if (e->be.read_cohort(e->be.ctx, tg->service, version, cohorts[i], &s))
			return -1;
		cohort_sum(out, &s);
	}
	return 0;
}

void rollout_validate_begin(struct rollout_engine *e, struct run *r, int64_t now, json_t *evs)
{
	struct validate_run *v = &r->val;
	json_t *wins, *targets;
	bool any = false;

	if (!r->cfg->nvalidate || !v->w)
		return;
	validate_reset(v);
	targets = json_object();
	for (size_t t = 0; t < r->cfg->ntargets; t++) {
		const struct config_target *tg = run_target(r, t);
		struct target_run *tr = &r->targets[t];
		struct metrics_cohort_snapshot b;

		if (!run_live_service(r, t) || tr->weight < 100000)
			continue;
		v->new_stable[t] = strdup(tg->canary);
		v->old_stable[t] = strdup(rollout_stable_version(e, tg));
		if (!v->new_stable[t] || !v->old_stable[t])
			continue;
		any = true;
		/* bake's historical baseline: the old stable's slice over the whole run */
		if (tr->rd.have_cum0 && e->be.read_cohort(e->be.ctx, tg->service, v->old_stable[t],
		                                          COHORT_BASELINE, &b) == 0) {
			metrics_snapshot_delta(&tr->rd.cum0_baseline, &b, &v->baseline[t]);
			v->have_baseline[t] = true;
		}
		json_object_set_new(
		    targets, tg->name,
		    json_pack("{s:s, s:s, s:I}", "new_stable", v->new_stable[t], "old_stable",
		              v->old_stable[t], "baseline_requests",
		              (json_int_t)(v->have_baseline[t] ? v->baseline[t].requests : 0)));
	}
	if (!any) {
		validate_reset(v);
		json_decref(targets);
		return;
	}
	v->begun = true;
	v->completed_ms = now;
	wins = json_array();
	for (size_t i = 0; i < r->cfg->nvalidate; i++) {
		int64_t start, end;

		validate_span(v, i, run_dur, r, &start, &end);
		json_array_append_new(
		    wins,
		    json_pack("{s:s, s:I, s:I, s:s}", "name", r->cfg->validate[i].name, "starts_ms",
		              (json_int_t)start, "ends_ms", (json_int_t)end, "on_fail",
		              r->cfg->validate[i].on_fail == CONFIG_VALIDATE_ROLLBACK ? "rollback"
		                                                                      : "notify"));
	}
	json_array_append_new(
	    evs, rollout_event("rollout.validation.scheduled",
	                       json_pack("{s:o, s:o}", "windows", wins, "targets", targets)));
}

/* Takes the readings the window's next interval counts from. */
static void prime(struct rollout_engine *e, struct run *r)
{
	struct validate_run *v = &r->val;

	for (size_t t = 0; t < r->cfg->ntargets; t++)
		v->have_prev[t] =
		    v->new_stable[t] &&
		    read_version(e, run_target(r, t), v->new_stable[t], &v->prev[t]) == 0;
}

static int rank(enum check_outcome o)
{
	return o == CHECK_FAIL ? 3 : o == CHECK_ERROR ? 2 : o == CHECK_INCONCLUSIVE ? 1 : 0;
}

/*
 * Check k of window w on each judged target (canary = the new stable's
 * snapshot s[t], baseline = the pre-rollout one): the worst verdict in
 * *out.  False when no target could be judged.
 */
static bool judge(struct run *r, const struct validate_window *w, size_t k,
                  const struct metrics_cohort_snapshot *s, const bool *have, uint64_t span_ms,
                  struct check_verdict *out)
{
	const struct validate_run *v = &r->val;
	const struct config_check *cc = &r->cfg->analysis.checks[w->checks[k].check];
	static const struct metrics_cohort_snapshot empty;
	bool any = false;

	for (size_t t = 0; t < r->cfg->ntargets; t++) {
		const struct metrics_cohort_snapshot *b =
		    v->have_baseline[t] ? &v->baseline[t] : &empty;
		struct check_cumulative cum = {&w->cum[t], b, w->looks ? w->looks : 1, 0};
		struct check_verdict x;

		if (!have[t] || !config_check_covers(cc, t))
			continue;
		check_evaluate_cumulative(cc, &s[t], b, &cum, span_ms, &x);
		if (!any || rank(x.outcome) > rank(out->outcome))
			*out = x;
		any = true;
	}
	return any;
}

/* One interval of window i ending at now.  The index of a check that failed the window, or -1. */
static int interval(struct rollout_engine *e, struct run *r, size_t i, int64_t now, uint64_t iv_ms)
{
	struct validate_run *v = &r->val;
	struct validate_window *w = &v->w[i];
	const struct config_validate_window *cw = &r->cfg->validate[i];
	struct metrics_cohort_snapshot *d =
	    calloc(r->cfg->ntargets ? r->cfg->ntargets : 1, sizeof(*d));
	bool *have = calloc(r->cfg->ntargets ? r->cfg->ntargets : 1, sizeof(*have)), any = false;
	int failed = -1;

	if (!d || !have)
		goto out;
	for (size_t t = 0; t < r->cfg->ntargets; t++) {
		struct metrics_cohort_snapshot cur;

		if (!v->new_stable[t])
			continue;
		if (read_version(e, run_target(r, t), v->new_stable[t], &cur)) {
			v->have_prev[t] = false;
			continue;
		}
		if (!v->have_prev[t]) { /* after a restart: this reading only primes */
			v->prev[t] = cur;
			v->have_prev[t] = true;
			continue;
		}
		metrics_snapshot_delta(&v->prev[t], &cur, &d[t]);
		v->prev[t] = cur;
		cohort_sum(&w->cum[t], &d[t]);
		have[t] = any = true;
	}
	if (!any)
		goto out;
	w->looks++;
	for (size_t k = 0; k < cw->nchecks; k++) {
		struct validate_check *c = &w->checks[k];
		const struct config_check *cc = &r->cfg->analysis.checks[c->check];
		struct check_verdict x;

		if (!judge(r, w, k, d, have, iv_ms, &x))
			continue;
		c->last = x;
		c->have_last = true;
		if ((unsigned)x.outcome < 4)
			c->iv[x.outcome]++;
		if (x.outcome == CHECK_FAIL) {
			if (c->fails++ == 0)
				c->first_fail_ms = now;
		} else {
			c->fails = 0;
			c->first_fail_ms = 0;
		}
		validate_point_add(c, now, x.canary, x.canary_requests);
		if (x.outcome == CHECK_FAIL && !c->failed &&
		    (uint64_t)c->fails * iv_ms >= rollout_dur(r, cc->for_ms)) {
			c->failed = true;
			if (failed < 0)
				failed = (int)k;
		}
	}
out:
	free(d);
	free(have);
	return failed;
}

/*
 * Ends window i at now (failed_k: the check whose streak failed it, or -1):
 * the verdicts on the window's whole data, the result, the report event;
 * then a revert (on_fail: rollback) or the evidence bundle.
 */
static void finish(struct rollout_engine *e, struct run *r, size_t i, int64_t now, int failed_k,
                   uint64_t iv_ms)
{
	struct validate_run *v = &r->val;
	struct validate_window *w = &v->w[i];
	const struct config_validate_window *cw = &r->cfg->validate[i];
	bool *have = calloc(r->cfg->ntargets ? r->cfg->ntargets : 1, sizeof(*have));
	bool all_pass = cw->nchecks > 0, fail = failed_k >= 0;
	const struct check_verdict *decider = NULL;
	int64_t first_fail = 0;
	json_t *report, *evs;
	char kind[64];

	for (size_t t = 0; have && t < r->cfg->ntargets; t++)
		have[t] = v->new_stable[t] && w->looks > 0;
	for (size_t k = 0; k < cw->nchecks; k++) {
		struct validate_check *c = &w->checks[k];

		c->have_final = have && w->looks > 0 &&
		                judge(r, w, k, w->cum, have, (uint64_t)w->looks * iv_ms, &c->final);
		if (c->failed && !decider) {
			decider = &c->last;
			first_fail = c->first_fail_ms;
		}
		if (c->have_final && c->final.outcome == CHECK_FAIL) {
			fail = true;
			if (!decider)
				decider = &c->final;
		}
		all_pass =
		    all_pass && c->have_final && c->final.outcome == CHECK_PASS && !c->failed;
	}
	free(have);
	w->state = fail ? VALIDATE_FAILED : all_pass ? VALIDATE_PASSED : VALIDATE_INCONCLUSIVE;
	w->ended_ms = now;
	if (fail && decider)
		snprintf(w->reason, sizeof(w->reason), "check %s failed: %s", decider->check,
		         decider->reason);
	else if (all_pass)
		snprintf(w->reason, sizeof(w->reason),
		         "every check passed on the window's data (%u intervals)", w->looks);
	else {
		snprintf(w->reason, sizeof(w->reason), "%s",
		         w->looks
		             ? "not every check reached a conclusive pass"
		             : "no interval was judged (no traffic, or canaryd was not running)");
		for (size_t k = 0; k < cw->nchecks; k++)
			if (w->checks[k].have_final && w->checks[k].final.outcome != CHECK_PASS) {
				snprintf(w->reason, sizeof(w->reason), "check %s: %s",
				         w->checks[k].final.check, w->checks[k].final.reason);
				break;
			}
	}
	if (fail && cw->on_fail == CONFIG_VALIDATE_ROLLBACK) {
		v->reverted_by = (int)i;
		for (size_t j = i + 1; j < r->cfg->nvalidate; j++)
			v->w[j].state = VALIDATE_SKIPPED;
	}
	report = validate_report_json(v, i, (int64_t)iv_ms);
	snprintf(kind, sizeof(kind), "rollout.validation.%s", validate_state_name(w->state));
	evs = rollout_event_list(
	    kind,
	    json_pack("{s:s, s:I, s:s, s:s, s:s, s:o}", "window", cw->name, "index", (json_int_t)i,
	              "result", validate_state_name(w->state), "reason", w->reason, "on_fail",
	              cw->on_fail == CONFIG_VALIDATE_ROLLBACK ? "rollback" : "notify", "report",
	              report ? report : json_null()));
	if (v->reverted_by == (int)i) {
		char why[sizeof(w->reason) + 64];

		snprintf(why, sizeof(why), "validation window %s failed: %s", cw->name, w->reason);
		rollout_rollback(e, r, ALL_TARGETS, ENGINE_ACTOR, now, why, decider, first_fail,
		                 RB_VALIDATION, evs, 0);
		return;
	}
	if (rollout_persist(e, r, ENGINE_ACTOR, evs))
		return;
	if (e->be.evidence) { /* the bundle directory gets the window's report */
		char path[512];

		e->be.evidence(e->be.ctx, r->cfg->name, r->generation, path, sizeof(path));
	}
}

void rollout_validate_tick(struct rollout_engine *e, struct run *r, int64_t now)
{
	struct validate_run *v = &r->val;
	uint64_t iv_ms = rollout_dur(r, r->cfg->analysis.interval_ms);
	struct validate_window *w;
	int64_t start, end;
	size_t i;
	int failed;

	if (!v->begun || !v->w || r->state != ROLLOUT_COMPLETED || !r->finalized ||
	    v->reverted_by >= 0)
		return;
	i = validate_current(v);
	if (i >= r->cfg->nvalidate)
		return;
	w = &v->w[i];
	validate_span(v, i, run_dur, r, &start, &end);
	if (w->state == VALIDATE_PENDING) {
		if (now < start)
			return;
		w->state = VALIDATE_RUNNING;
		w->started_ms = now;
		w->next_ms = now + (int64_t)iv_ms;
		prime(e, r);
		if (rollout_persist(
		        e, r, ENGINE_ACTOR,
		        rollout_event_list(
		            "rollout.validation.started",
		            json_pack("{s:s, s:I, s:I, s:I, s:s}", "window",
		                      r->cfg->validate[i].name, "index", (json_int_t)i, "until_ms",
		                      (json_int_t)end, "interval_ms", (json_int_t)iv_ms, "on_fail",
		                      r->cfg->validate[i].on_fail == CONFIG_VALIDATE_ROLLBACK
		                          ? "rollback"
		                          : "notify"))))
			return;
		if (now < end)
			return;
	}
	if (!w->next_ms) { /* resumed after a restart: the window goes on from its persisted times */
		w->next_ms = now + (int64_t)iv_ms;
		prime(e, r);
		return;
	}
	failed = -1;
	if (now >= w->next_ms) {
		w->next_ms += (int64_t)iv_ms;
		if (w->next_ms <= now)
			w->next_ms = now + (int64_t)iv_ms;
		failed = interval(e, r, i, now, iv_ms);
		if (failed < 0 && now < end) {
			rollout_persist(e, r, ENGINE_ACTOR, NULL);
			return;
		}
	}
	if (failed >= 0 || now >= end)
		finish(e, r, i, now, failed, iv_ms);
}

json_t *rollout_engine_validation(const struct rollout_engine *e, const char *name)
{
	const struct run *r = rollout_find(e, name);
	const struct validate_run *v;
	json_t *wins, *o;
	uint64_t iv_ms;

	if (!r)
		return NULL;
	v = &r->val;
	iv_ms = rollout_dur(r, r->cfg->analysis.interval_ms);
	wins = json_array();
	for (size_t i = 0; i < r->cfg->nvalidate; i++) {
		const struct config_validate_window *cw = &r->cfg->validate[i];
		json_t *rep = v->w ? validate_report_json(v, i, (int64_t)iv_ms) : NULL;
		char *md = rep && v->begun ? validate_report_md(r->cfg->name, rep) : NULL;
		int64_t start = 0, end = 0;

		if (v->begun)
			validate_span(v, i, run_dur, r, &start, &end);
		json_array_append_new(
		    wins,
		    json_pack(
		        "{s:s, s:s, s:s, s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:o}", "name", cw->name,
		        "state", v->w ? validate_state_name(v->w[i].state) : "pending", "on_fail",
		        cw->on_fail == CONFIG_VALIDATE_ROLLBACK ? "rollback" : "notify", "after_ms",
		        (json_int_t)cw->after_ms, "for_ms", (json_int_t)cw->for_ms, "starts_ms",
		        v->begun ? json_integer(start) : json_null(), "ends_ms",
		        v->begun ? json_integer(end) : json_null(), "started_ms",
		        v->w && v->w[i].started_ms ? json_integer(v->w[i].started_ms) : json_null(),
		        "ended_ms",
		        v->w && v->w[i].ended_ms ? json_integer(v->w[i].ended_ms) : json_null(),
		        "report", rep && v->begun ? json_incref(rep) : json_null(), "report_md",
		        md ? json_string(md) : json_null()));
		json_decref(rep);
		free(md);
	}
	o = json_pack("{s:s, s:s, s:b, s:o, s:b, s:o, s:o}", "rollout", r->cfg->name, "state",
	              rollout_state_name(r->state), "begun", v->begun, "completed_ms",
	              v->begun ? json_integer(v->completed_ms) : json_null(), "holds_service",
	              validate_holds(v), "reverted_by",
	              v->begun && v->reverted_by >= 0
	                  ? json_string(r->cfg->validate[v->reverted_by].name)
	                  : json_null(),
	              "windows", wins);
	return o;
}

json_t *rollout_validate_view(const struct run *r)
{
	const struct validate_run *v = &r->val;
	json_t *a;

	if (!r->cfg->nvalidate)
		return NULL;
	a = json_array();
	for (size_t i = 0; i < r->cfg->nvalidate; i++) {
		int64_t start = 0, end = 0;

		if (v->begun)
			validate_span(v, i, run_dur, r, &start, &end);
		json_array_append_new(
		    a, json_pack(
		           "{s:s, s:s, s:s, s:o, s:o}", "name", r->cfg->validate[i].name, "state",
		           v->w ? validate_state_name(v->w[i].state) : "pending", "on_fail",
		           r->cfg->validate[i].on_fail == CONFIG_VALIDATE_ROLLBACK ? "rollback"
		                                                                   : "notify",
		           "starts_ms", v->begun ? json_integer(start) : json_null(), "ends_ms",
		           v->begun ? json_integer(end) : json_null()));
	}
	return a;
}
