/*
 * rollback.c - the rollback pipeline (SPEC 6, docs/rollout.md "Rollback"):
 * the decision is committed with the verdicts that made it, the weights go
 * to 0 at once and the workers confirm them (time to mitigate); then, one
 * stage per tick: drain the canary's requests in flight, run the hooks
 * (exec / webhook, one at a time per rolled-back target), verify the stable
 * version against the checks, write the evidence bundle.  Each stage is
 * persisted in the run's document, so a restart resumes the pipeline where
 * it was (a hook seen started but not ended is reported, never re-run).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/jobs.h"
#include "core/loop.h"
#include "core/str.h"
#include "rollout/engine_internal.h"

static const char *const rb_class_names[] = {"check", "review",  "abort",     "emergency",
                                             "bake",  "partial", "validation"};

const char *rollout_rb_class_name(enum rb_class c)
{
	return (size_t)c < sizeof(rb_class_names) / sizeof(rb_class_names[0]) ? rb_class_names[c]
	                                                                      : "unknown";
}

int rollout_pause(struct rollout_engine *e, struct run *r, const char *actor, int64_t now,
                  const char *reason, uint64_t review_ms, uint64_t review_targets, json_t *extra)
{
	json_t *d;

	r->state = ROLLOUT_PAUSED;
	r->paused_at_ms = now;
	snprintf(r->pause_reason, sizeof(r->pause_reason), "%s", reason);
	r->review_deadline_ms = review_ms ? now + (int64_t)rollout_dur(r, review_ms) : 0;
	r->review_targets = review_targets;
	d = json_pack("{s:s, s:I, s:I}", "reason", reason, "step", (json_int_t)r->step,
	              "review_deadline", (json_int_t)r->review_deadline_ms);
	if (extra)
		json_object_update(d, extra);
	json_decref(extra);
	return rollout_persist(e, r, actor, rollout_event_list("rollout.paused", d));
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

/* Time to detect: from the start of the first failing interval to the decision. */
static void detect_fields(struct run *r, json_t *d, const struct check_verdict *v,
                          int64_t first_fail_ms, int64_t now)
{
	if (first_fail_ms) {
		int64_t start =
		    first_fail_ms - (int64_t)rollout_dur(r, r->cfg->analysis.interval_ms);

		json_object_set_new(d, "first_failing_interval_start_ms", json_integer(start));
		json_object_set_new(d, "time_to_detect_ms", json_integer(now - start));
		r->ctr.last_ttd_ms = now - start;
	}
	if (v)
		json_object_set_new(d, "verdict", check_verdict_json(v));
}

/* Records time to mitigate (the workers route with the new weights) and commits it. */
static int mitigated(struct rollout_engine *e, struct run *r, const char *actor, int64_t now,
                     bool deferred, int applied, uint64_t t0_us, uint64_t t_persisted,
                     uint64_t t_set, uint64_t t1)
{
	int rc;

	r->ctr.last_ttm_us = (int64_t)(t1 - t0_us);
	rc = (deferred ? rollout_persist_or_defer : rollout_persist)(
	    e, r, actor,
	    rollout_event_list(
	        "rollout.mitigated",
	        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "decision_ms", (json_int_t)now,
	                  "applied_ms", (json_int_t)(now + (int64_t)(t1 - t0_us) / 1000),
	                  "time_to_mitigate_us", (json_int_t)(t1 - t0_us), "persist_us",
	                  (json_int_t)(t_persisted - t0_us), "publish_us",
	                  (json_int_t)(t_set - t_persisted), "workers_us", (json_int_t)(t1 - t_set),
	                  "all_workers_confirmed", applied == 0)));
	return rc == 1 ? 0 : rc;
}

/*
 * Rolls back the targets in `only` (bit t; ~0: every target): persist (with pre_events,
 * stolen, e.g. the verdicts that decided it), then weights to 0 at once,
 * then waits for every worker to route with them: that is time to mitigate,
 * measured from t0_us (the monotonic time of the decision; 0 = now).  The
 * rest of the pipeline (drain, hooks, verify, evidence) runs from the tick.
 * v / first_fail_ms describe the deciding verdict (NULL / 0 for manual).
 */
int rollout_rollback(struct rollout_engine *e, struct run *r, uint64_t only, const char *actor,
                     int64_t now, const char *reason, const struct check_verdict *v,
                     int64_t first_fail_ms, enum rb_class cls, json_t *pre_events, uint64_t t0_us)
{
	const struct config_rollout *ro = r->cfg;
	json_t *names = json_array(), *d, *evs = pre_events ? pre_events : json_array();
	bool all = true, failed = false;
	uint64_t mask = 0, t_persisted, t_set, t1_us;
	char why[256] = "";
	int rc, applied;
	bool deferred;

	if (!t0_us)
		t0_us = clock_mono_us();
	for (size_t t = 0; t < ro->ntargets; t++) {
		if (only >> t & 1) {
			if (!r->targets[t].rolled_back && t < MAX_TARGETS)
				mask |= UINT64_C(1) << t;
			r->targets[t].rolled_back = true;
			r->targets[t].weight = 0;
			r->targets[t].touched = true;
			r->targets[t].preview = false; /* the canary drains */
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
	              rollout_rb_class_name(cls), "targets", names, "all", all, "step",
	              (json_int_t)r->step, "decision_ms", (json_int_t)now, "drain_ms",
	              (json_int_t)rollout_dur(r, ro->rollback.drain_ms), "hooks",
	              (json_int_t)ro->rollback.nhooks);
	detect_fields(r, d, v, first_fail_ms, now);
	/* validate (issue 16): the canary's last requests before the decision, for the evidence */
	rollout_act_samples(e, r, only, now, evs);
	json_array_append_new(evs, rollout_event("rollout.rollback", d));
	/*
	 * A failing check's rollback with the store away: the safe direction is
	 * taken here at once and persisted when the store returns (docs/fleet.md).
	 * Controls a person sends answer 503 instead.  A validation revert waits
	 * for the store: putting the old stable back is a committed traffic change.
	 */
	rc = cls == RB_CHECK || cls == RB_BAKE ? rollout_persist_or_defer(e, r, actor, evs)
	                                       : rollout_persist(e, r, actor, evs);
	if (rc < 0)
		return rc;
	deferred = rc == 1;
	r->ctr.rollbacks[cls]++;
	t_persisted = clock_mono_us();

	for (size_t t = 0; t < ro->ntargets; t++) {
		if (!(only >> t & 1))
			continue;
		rc = deferred ? rollout_act_weight_local(e, r, t)
		              : rollout_act_weight(e, r, t, actor);
		if (rc) {
			failed = true;
			snprintf(why, sizeof(why), "could not set %s to 0%%: error %d",
			         ro->targets[t].name, rc);
		}
	}
	t_set = clock_mono_us();
	applied = rollout_act_wait_applied(e, APPLY_WAIT_US);
	t1_us = clock_mono_us();
	if (!deferred) /* a mirror change waits for the store, like the flags */
		rollout_act_stop_shadow(e, r, only, actor);
	if (failed) {
		r->state = ROLLOUT_FAILED;
		r->ended_ms = now;
		return rollout_persist(
		    e, r, actor,
		    rollout_event_list("rollout.failed", json_pack("{s:s}", "reason", why)));
	}
	if (all)
		r->mitigated = true;
	return mitigated(e, r, actor, now, deferred, applied, t0_us, t_persisted, t_set, t1_us);
}

/*
 * The weight target t had at the end of step s: the last set step at or
 * before s that names it (0 when none does; a preview step runs at 0).
 */
static uint32_t weight_at_step(const struct config_rollout *ro, size_t s, size_t t)
{
	uint32_t w = 0;

	for (size_t i = 0; i <= s && i < ro->nsteps; i++) {
		const struct config_step *st = &ro->steps[i];

		for (size_t j = 0; st->kind == CONFIG_STEP_SET && j < st->nsets; j++)
			if (st->sets[j].index == t)
				w = st->sets[j].percent;
		if (st->kind == CONFIG_STEP_PREVIEW && ro->targets[t].kind == CONFIG_TARGET_SERVICE)
			w = 0;
	}
	return w;
}

static bool traffic_kind(enum config_step_kind k)
{
	return k == CONFIG_STEP_SET || k == CONFIG_STEP_SHADOW || k == CONFIG_STEP_PREVIEW;
}

size_t rollout_rollback_step(const struct run *r, const struct config_check *c)
{
	const struct config_rollout *ro = r->cfg;
	size_t cur, s;

	/* the traffic step whose weights are in force now ... */
	cur = r->step < ro->nsteps && r->phase == PHASE_RUNNING ? r->step + 1 : r->step;
	if (cur > ro->nsteps)
		cur = ro->nsteps;
	for (; cur > 0; cur--)
		if (traffic_kind(ro->steps[cur - 1].kind))
			break;
	if (cur == 0)
		return ro->nsteps;
	/* a named step behind it; a failure at or before that step goes back
	 * one traffic step instead, as `previous` would (docs/rollout.md) */
	if (!c->rollback_previous && c->rollback_step < cur - 1)
		return c->rollback_step;
	/* ... and the one before it */
	for (s = cur - 1; s > 0; s--)
		if (traffic_kind(ro->steps[s - 1].kind))
			return s - 1;
	return ro->nsteps;
}

int rollout_rollback_to(struct rollout_engine *e, struct run *r, uint64_t only, size_t to,
                        const char *actor, int64_t now, const char *reason,
                        const struct check_verdict *v, int64_t first_fail_ms, json_t *pre_events,
                        uint64_t t0_us)
{
	const struct config_rollout *ro = r->cfg;
	const struct config_step *st = &ro->steps[to];
	json_t *names = json_array(), *weights = json_object(), *d,
	       *evs = pre_events ? pre_events : json_array();
	uint64_t mask = 0, t_persisted, t_set, t1_us;
	char why[256] = "", stepname[96];
	bool failed = false, deferred;
	int rc, applied;

	if (to >= ro->nsteps)
		return -EINVAL;
	if (!t0_us)
		t0_us = clock_mono_us();
	if (st->name)
		snprintf(stepname, sizeof(stepname), "%s", st->name);
	else
		snprintf(stepname, sizeof(stepname), "steps[%zu]", to);
	for (size_t t = 0; t < ro->ntargets && t < MAX_TARGETS; t++) {
		struct target_run *tr = &r->targets[t];

		if (!(only >> t & 1) || tr->rolled_back)
			continue;
		if (run_target(r, t)->kind == CONFIG_TARGET_FLAG &&
		    (!rollout_flags_wired(e) || !tr->touched))
			continue;
		mask |= UINT64_C(1) << t;
		tr->weight = weight_at_step(ro, to, t);
		tr->touched = true;
		tr->shadow = 0;
		if (tr->preview != (st->kind == CONFIG_STEP_PREVIEW &&
		                    run_target(r, t)->kind == CONFIG_TARGET_SERVICE))
			tr->rd.have_prev = false; /* the baseline cohort changes */
		tr->preview = st->kind == CONFIG_STEP_PREVIEW &&
		              run_target(r, t)->kind == CONFIG_TARGET_SERVICE;
		json_array_append_new(names, json_string(run_target(r, t)->name));
		json_object_set_new(weights, run_target(r, t)->name,
		                    json_real(tr->weight / 1000.0));
	}
	/*
	 * The checks judge the new weights afresh: no streak carries over, and
	 * the interval in progress (requests from before the change) only primes
	 * the moved targets' readings.
	 */
	for (size_t k = 0; k < ro->analysis.nchecks; k++)
		r->checks[k].fails = 0, r->checks[k].first_fail_ms = 0;
	for (size_t t = 0; t < ro->ntargets && t < MAX_TARGETS; t++)
		if (mask >> t & 1)
			r->targets[t].rd.have_prev = false;
	r->step = to;
	r->phase = PHASE_RUNNING;
	r->step_started_ms = now;
	r->waiting_since_ms = now;
	r->approvals = 0;
	r->analysis_passed = false;
	r->bake_until_ms = 0;
	r->decision_ms = now;
	r->state = ROLLOUT_PAUSED;
	r->paused_at_ms = now;
	r->review_deadline_ms = 0;
	snprintf(r->pause_reason, sizeof(r->pause_reason), "rolled back to %.60s: %.170s", stepname,
	         reason);
	post_begin(r, mask, reason, now);
	d = json_pack("{s:s, s:s, s:o, s:b, s:b, s:s, s:I, s:o, s:I, s:I, s:I, s:I}", "reason",
	              reason, "class", rollout_rb_class_name(RB_PARTIAL), "targets", names, "all",
	              0, "partial", 1, "rollback_to", stepname, "rollback_to_step", (json_int_t)to,
	              "weights", weights, "step", (json_int_t)to, "decision_ms", (json_int_t)now,
	              "drain_ms", (json_int_t)rollout_dur(r, ro->rollback.drain_ms), "hooks",
	              (json_int_t)ro->rollback.nhooks);
	detect_fields(r, d, v, first_fail_ms, now);
	rollout_act_samples(e, r, only, now, evs); /* validate (issue 16): the evidence */
	json_array_append_new(evs, rollout_event("rollout.rollback", d));
	json_array_append_new(
	    evs, rollout_event("rollout.paused",
	                       json_pack("{s:s, s:I, s:I, s:s}", "reason", r->pause_reason, "step",
	                                 (json_int_t)to, "review_deadline", (json_int_t)0, "cause",
	                                 "partial_rollback")));
	rc = rollout_persist_or_defer(e, r, actor, evs);
	if (rc < 0)
		return rc;
	deferred = rc == 1;
	r->ctr.rollbacks[RB_PARTIAL]++;
	t_persisted = clock_mono_us();
	for (size_t t = 0; t < ro->ntargets && t < MAX_TARGETS; t++) {
		if (!(mask >> t & 1))
			continue;
		rc = deferred ? rollout_act_weight_local(e, r, t)
		              : rollout_act_weight(e, r, t, actor);
		if (rc) {
			failed = true;
			snprintf(why, sizeof(why), "could not set %s to %.3f%%: error %d",
			         ro->targets[t].name, r->targets[t].weight / 1000.0, rc);
		}
	}
	t_set = clock_mono_us();
	applied = rollout_act_wait_applied(e, APPLY_WAIT_US);
	t1_us = clock_mono_us();
	if (!deferred) {
		rollout_act_stop_shadow(e, r, mask, actor);
		/* back to a shadow step: its mirrors run again for the targets rolled back */
		for (size_t t = 0; st->kind == CONFIG_STEP_SHADOW && t < ro->ntargets; t++) {
			if (!(mask >> t & 1) || run_target(r, t)->kind != CONFIG_TARGET_SERVICE ||
			    !rollout_shadow_wired(e))
				continue;
			r->targets[t].shadow = st->shadow_percent;
			if (rollout_act_shadow(e, r, t, actor))
				r->targets[t].shadow = 0;
		}
	}
	if (failed) {
		r->state = ROLLOUT_FAILED;
		r->ended_ms = now;
		return rollout_persist(
		    e, r, actor,
		    rollout_event_list("rollout.failed", json_pack("{s:s}", "reason", why)));
	}
	return mitigated(e, r, actor, now, deferred, applied, t0_us, t_persisted, t_set, t1_us);
}

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
	const struct config_target *tg = run_target(r, t);
	const char *svc = tg->kind == CONFIG_TARGET_SERVICE ? tg->service : "";
	const char *canary = tg->kind == CONFIG_TARGET_SERVICE ? tg->canary : "";
	const char *stable =
	    tg->kind == CONFIG_TARGET_SERVICE && tg->svc ? rollout_stable_version(e, tg) : "";
	/* a partial rollback (rollback_to) leaves the canary a weight: hooks can tell */
	bool partial = !r->targets[t].rolled_back;
	char weight[32];
	const char *vars[] = {"rollout", r->cfg->name,
	                      "target",  tg->name,
	                      "service", svc,
	                      "canary",  canary,
	                      "stable",  stable,
	                      "reason",  r->post.reason,
	                      "flag",    tg->flag ? tg->flag : "",
	                      "partial", partial ? "true" : "false",
	                      "weight",  weight,
	                      NULL};
	char **argv = NULL;
	char *body = NULL;
	json_t *b;

	snprintf(weight, sizeof(weight), "%g", r->targets[t].weight / 1000.0);
	r->post.hook_started = true;
	if (rollout_persist(
	        e, r, ENGINE_ACTOR,
	        rollout_event_list("rollout.hook.started",
	                           json_pack("{s:I, s:s, s:s}", "index", (json_int_t)h, "kind",
	                                     hk->kind == CONFIG_HOOK_EXEC ? "exec" : "webhook",
	                                     "target", tg->name))))
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
		b = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:b, s:f}", "rollout",
		              r->cfg->name, "target", tg->name, "service", svc, "canary", canary,
		              "stable", stable, "reason", r->post.reason, "decision_ms",
		              (json_int_t)r->post.decision_ms, "at", (json_int_t)now, "partial",
		              partial, "weight", r->targets[t].weight / 1000.0);
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
	                      run_target(r, t)->name, "status", status);

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
	rollout_persist(e, r, ENGINE_ACTOR, rollout_event_list("rollout.hook", d));
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
	const struct config_target *tg = run_target(r, t);
	struct metrics_cohort_snapshot b;

	if (e->be.read_cohort(e->be.ctx, tg->service, rollout_stable_version(e, tg), COHORT_STABLE,
	                      out) ||
	    e->be.read_cohort(e->be.ctx, tg->service, rollout_stable_version(e, tg),
	                      COHORT_BASELINE, &b))
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
		r->post.verify_next_ms =
		    now + (int64_t)rollout_dur(r, r->cfg->analysis.interval_ms);
		for (size_t k = 0; k < r->cfg->ntargets && k < MAX_TARGETS; k++) {
			struct target_run *tr = &r->targets[k];

			tr->rd.have_prev_stable = (r->post.mask >> k & 1) &&
			                          run_target(r, k)->kind == CONFIG_TARGET_SERVICE &&
			                          run_target(r, k)->svc &&
			                          read_stable(e, r, k, &tr->rd.prev_stable) == 0;
		}
		rollout_persist(e, r, ENGINE_ACTOR, NULL);
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
	uint64_t interval = rollout_dur(r, ro->analysis.interval_ms);
	struct post *p = &r->post;

	bool evaluated = false;

	if (now >= p->verify_next_ms && interval) {
		bool passed = false, failed = false;

		evaluated = true;

		p->verify_next_ms = now + (int64_t)interval;
		for (size_t t = 0; t < ro->ntargets && t < MAX_TARGETS; t++) {
			struct target_run *tr = &r->targets[t];
			struct metrics_cohort_snapshot cur, d;

			if (!(p->mask >> t & 1) ||
			    run_target(r, t)->kind != CONFIG_TARGET_SERVICE ||
			    !run_target(r, t)->svc || read_stable(e, r, t, &cur))
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

				if (c->source != CONFIG_SOURCE_METRIC || !config_check_covers(c, t))
					continue;
				check_evaluate(c, &d, &d, interval, &v);
				if (v.outcome == CHECK_FAIL && !failed) {
					failed = true;
					snprintf(p->verify_reason, sizeof(p->verify_reason),
					         "%.60s: %.250s", run_target(r, t)->name, v.reason);
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
	if (!p->verify_failed &&
	    now - p->stage_started_ms < (int64_t)rollout_dur(r, ro->rollback.verify_ms)) {
		if (evaluated)
			rollout_persist(e, r, ENGINE_ACTOR, NULL);
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
		rollout_persist(e, r, ENGINE_ACTOR, rollout_event_list("rollout.verified", d));
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
	    evs, rollout_event("rollout.evidence",
	                       rc == 0 ? json_pack("{s:s}", "path", path)
	                               : json_pack("{s:s, s:i}", "error",
	                                           "the evidence bundle could not be written",
	                                           "code", rc)));
	json_array_append_new(
	    evs, rollout_event("rollout.rollback.finished",
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
	rollout_persist(e, r, ENGINE_ACTOR, evs);
}

/* Moves the rollback pipeline on; called every tick while it runs. */
void rollout_post_step(struct rollout_engine *e, struct run *r, int64_t now)
{
	struct post *p = &r->post;

	/* a rollback decided while the store was away: persisted before anything else */
	if (r->pending) {
		if (now - r->pending_try_ms < 1000)
			return;
		r->pending_try_ms = now;
		if (rollout_flush_pending(e, r))
			return;
	}
	switch (p->stage) {
	case POST_DRAIN: {
		long left = 0;
		bool known = rollout_inflight_wired(e);

		for (size_t t = 0; known && t < r->cfg->ntargets && t < MAX_TARGETS; t++) {
			long n;

			/* a partial rollback that leaves the canary some weight drains nothing */
			if (!(p->mask >> t & 1) ||
			    run_target(r, t)->kind != CONFIG_TARGET_SERVICE ||
			    r->targets[t].weight > 0)
				continue;
			n = rollout_inflight(e, run_target(r, t)->service,
			                     run_target(r, t)->canary);
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
		    now - p->stage_started_ms < (int64_t)rollout_dur(r, r->cfg->rollback.drain_ms))
			return;
		{
			json_t *d =
			    json_pack("{s:I, s:I, s:b, s:b}", "duration_ms",
			              (json_int_t)(now - p->stage_started_ms), "limit_ms",
			              (json_int_t)rollout_dur(r, r->cfg->rollback.drain_ms),
			              "in_flight_known", known, "deadline_hit", !known || left > 0);

			if (known)
				json_object_set_new(d, "in_flight_left", json_integer(left));
			if (known && p->drain_at_start >= 0)
				json_object_set_new(d, "in_flight_at_start",
				                    json_integer(p->drain_at_start));
			post_set_stage(r, POST_HOOKS, now);
			p->hook = 0;
			p->hook_started = false;
			rollout_persist(e, r, ENGINE_ACTOR,
			                rollout_event_list("rollout.drained", d));
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
