/*
 * rounds.c - what the rollout engine learns from metrics (docs/judge.md,
 * docs/rollout.md "Evidence"): the cumulative readings each analysis
 * interval takes its deltas from, one interval's verdicts and decisions
 * (rollout_evaluate()), the rounds of query/http/exec source checks run as
 * jobs and judged when they answer (rollout_sources_tick()), the shadow
 * steps' mirror comparisons, the evidence a traffic step accumulates, and
 * the sample-ratio mismatch guard (analysis/srm.h).
 *
 * Decisions taken here (pause, rollback) go through the state machine
 * (rollout_pause(), rollout_rollback()); verdicts are committed with them.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/source.h"
#include "analysis/srm.h"
#include "core/bucket.h"
#include "core/jobs.h"
#include "core/loop.h"
#include "metrics/hll.h"
#include "rollout/engine_internal.h"

/*
 * Takes the cumulative readings that the next interval's deltas start from;
 * at a run's start also the baseline that bake compares against.
 */
void rollout_prime(struct rollout_engine *e, struct run *r, bool run_start)
{
	for (size_t t = 0; t < r->cfg->ntargets; t++) {
		const struct config_target *tg = run_target(r, t);
		struct target_run *tr = &r->targets[t];

		tr->rd.have_prev = false;
		tr->rd.have_cum0 = false;
		if (tg->kind != CONFIG_TARGET_SERVICE || !tg->svc)
			continue;
		if (e->be.read_cohort(e->be.ctx, tg->service, tg->canary, COHORT_CANARY,
		                      &tr->rd.prev_canary) == 0 &&
		    e->be.read_cohort(e->be.ctx, tg->service, rollout_stable_version(e, tg),
		                      run_baseline_cohort(r, t), &tr->rd.prev_baseline) == 0) {
			tr->rd.have_prev = true;
			if (run_start) {
				tr->rd.cum0_canary = tr->rd.prev_canary;
				tr->rd.cum0_baseline = tr->rd.prev_baseline;
				tr->rd.have_cum0 = true;
			}
		}
	}
}

static bool srm_wired(const struct rollout_engine *e)
{
	return e->be.split_reset && e->be.read_split;
}

/* Target t's split count starts again, at its current weight. */
void rollout_srm_restart(struct rollout_engine *e, struct run *r, size_t t)
{
	const struct config_target *tg = run_target(r, t);

	if (!srm_wired(e) || !run_live_service(r, t))
		return;
	e->be.split_reset(e->be.ctx, tg->service, tg->canary);
	e->be.split_reset(e->be.ctx, tg->service, rollout_stable_version(e, tg));
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
		const struct config_target *tg = run_target(r, t);
		struct target_run *tr = &r->targets[t];
		struct metrics_split_snapshot c, b;
		struct srm_verdict v;
		bool sticky;
		json_t *d, *o;

		if (!run_live_service(r, t) || tr->weight == 0 || tr->weight >= BUCKET_COUNT)
			continue;
		if (!tr->srm_weight) { /* a new engine (restart, reload): count from here */
			tr->srm_weight = tr->weight;
		} else if (tr->srm_weight != tr->weight) { /* moved outside a step */
			rollout_srm_restart(e, r, t);
			continue;
		}
		if (e->be.read_split(e->be.ctx, tg->service, tg->canary, COHORT_CANARY, &c) ||
		    e->be.read_split(e->be.ctx, tg->service, rollout_stable_version(e, tg),
		                     COHORT_BASELINE, &b))
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
			json_array_append_new(evs, rollout_event("rollout.srm", json_incref(x)));
			*detail = json_pack("{s:s, s:o}", "check", "sample_ratio", "srm", x);
			rollout_srm_restart(e, r, t);
		}
		json_decref(d);
	}
	return hit;
}

#define MAX_WAIT_FACTOR     4             /* max_wait defaults to 4 x the step's for */
#define MAX_WAIT_DEFAULT_MS (60 * MIN_MS) /* ... or 1h when the step has no for */

/* The check judges the mirror's comparisons (a shadow step), not the cohorts. */
static bool shadow_metric(const struct config_check *c)
{
	return c->source == CONFIG_SOURCE_METRIC &&
	       (c->metric == CONFIG_METRIC_SHADOW_MISMATCH_RATE ||
	        c->metric == CONFIG_METRIC_SHADOW_ERROR_RATE ||
	        c->metric == CONFIG_METRIC_SHADOW_LATENCY_P99);
}

/* Verdicts now count as the current step's evidence. */
static bool gathering(const struct run *r)
{
	return run_active(r) && run_traffic_step(r) && (run_baking(r) || r->phase == PHASE_RUNNING);
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
	bool shadow_step = !run_baking(r) && r->step < r->cfg->nsteps &&
	                   r->cfg->steps[r->step].kind == CONFIG_STEP_SHADOW;

	if (c->time_only)
		return false;
	for (size_t t = 0; t < r->cfg->ntargets; t++) {
		const struct config_target *tg = &r->cfg->targets[t];
		const struct target_run *tr = &r->targets[t];

		if (!config_check_covers(c, t) || tr->rolled_back)
			continue;
		if (shadow_metric(c)) {
			if (shadow_step && tr->shadow)
				return true;
			continue;
		}
		if (!run_canary_live(r, t))
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
	if (!run_traffic_step(r) || r->cfg->analysis.nchecks == 0)
		return false;
	return run_baking(r) || !r->cfg->steps[r->step].time_only;
}

/*
 * judge (issue 18): the looks the current step can take, for a
 * group-sequential test (docs/judge.md): a traffic step's max_wait (a
 * step that does not wait for evidence: its `for`), an analysis step's or
 * a timed pause's `for`, over the interval; 0 = open (bake, `pause: {}`,
 * approval, shadow): the test stays anytime-valid.
 */
static uint32_t step_horizon(const struct run *r, uint64_t interval)
{
	const struct config_step *st;
	uint64_t span = 0, k;

	if (run_baking(r) || r->step >= r->cfg->nsteps || interval == 0)
		return 0;
	st = &r->cfg->steps[r->step];
	switch (st->kind) {
	case CONFIG_STEP_SET:
	case CONFIG_STEP_PREVIEW:
		span = st->time_only ? rollout_dur(r, st->for_ms) : rollout_max_wait_ms(r);
		break;
	case CONFIG_STEP_ANALYSIS:
		span = rollout_dur(r, st->analysis_for_ms);
		break;
	case CONFIG_STEP_PAUSE:
		span = rollout_dur(r, st->pause_ms);
		break;
	default:
		break;
	}
	k = (span + interval - 1) / interval;
	return k > UINT32_MAX ? UINT32_MAX : (uint32_t)k;
}

uint64_t rollout_max_wait_ms(const struct run *r)
{
	const struct config_rollout *ro = r->cfg;
	uint64_t hold;

	if (!run_baking(r) && r->step < ro->nsteps && ro->steps[r->step].max_wait_ms)
		return rollout_dur(r, ro->steps[r->step].max_wait_ms);
	if (ro->analysis.max_wait_ms)
		return rollout_dur(r, ro->analysis.max_wait_ms);
	hold = run_baking(r) ? ro->bake_ms : r->step < ro->nsteps ? ro->steps[r->step].for_ms : 0;
	return rollout_dur(r, hold ? MAX_WAIT_FACTOR * hold : MAX_WAIT_DEFAULT_MS);
}

/*
 * How many applicable checks still lack evidence; their shortfalls go to
 * out ("; " or ", " between them), and the first one's review (on_fail:
 * pause with review) to *review_ms / *review_targets when given.
 */
size_t rollout_evidence_missing(const struct run *r, bool brief, char *out, size_t len,
                                uint64_t *review_ms, uint64_t *review_targets)
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
			*review_targets = check_targets(c);
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

void rollout_src_adopt(struct run *r, size_t k, const struct run *o, size_t u)
{
	struct check_run *cr = &r->checks[k];
	const struct check_run *oc = &o->checks[u];

	cr->src_cum_from_ms = oc->src_cum_from_ms;
	for (size_t t = 0; t < r->cfg->ntargets && t < MAX_TARGETS; t++) {
		const struct config_target *tg = run_target(r, t);

		for (size_t w = 0; w < o->cfg->ntargets && w < MAX_TARGETS; w++) {
			const struct config_target *og = run_target(o, w);

			if (strcmp(tg->name, og->name) == 0 && tg->kind == og->kind &&
			    !(tg->canary && og->canary && strcmp(tg->canary, og->canary) != 0)) {
				cr->src_cum[t] = oc->src_cum[w];
				cr->src_hist[t] = oc->src_hist[w];
			}
		}
	}
}

/* Restarts the evidence of a traffic step (or the bake) that begins at now. */
void rollout_evidence_reset(struct rollout_engine *e, struct run *r, int64_t now)
{
	r->evidence_from_ms = now;
	memset(r->step_iv, 0, sizeof(r->step_iv));
	for (size_t k = 0; k < r->cfg->analysis.nchecks; k++) {
		struct check_run *cr = &r->checks[k];

		cr->ev_pass = cr->have_ev = false;
		cr->ev_canary = cr->ev_baseline = 0;
		memset(cr->step_iv, 0, sizeof(cr->step_iv));
		/* count checks: the step's counts start again, as the built-ins' step0 */
		cr->src_cum_from_ms = now;
		memset(cr->src_cum, 0, sizeof(cr->src_cum));
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
		    e->be.read_cohort(e->be.ctx, tg->service, rollout_stable_version(e, tg),
		                      run_baseline_cohort(r, t), &tr->rd.step0_baseline) == 0)
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
json_t *rollout_evidence_json(const struct run *r)
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
	                 (json_int_t)rollout_max_wait_ms(r));
}

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

/* query, http and exec sources (docs/judge.md "Sources")                    */

#define SOURCE_ERRORS_PAUSE 3    /* consecutive `error` verdicts of one check that pause */
#define SOURCE_GRACE_MS     2000 /* time a source job may wait in the queue past its timeout */

/*
 * One round of a source check: the jobs of the interval ending at end_ms,
 * two per target (canary, baseline) or one (canary) when the source does
 * not depend on the cohort; a query count check runs two per cohort (its
 * query: errors; its requests query).  Started by rollout_evaluate(), collected by
 * rollout_sources_tick() on later ticks, judged when every job answered, at its
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
	uint32_t horizon; /* count checks: the step's looks (step_horizon()) */
	size_t step;
	bool bake, per_cohort;
	size_t ntargets; /* the rollout's targets, at most MAX_TARGETS */
	/* [target * SRC_SLOTS + cohort * 2 + part]: cohort 0 canary, 1 baseline; part 1 only
	 * for a query count check's requests query */
	struct src_slot slots[];
};

#define SRC_SLOTS 4

static struct src_slot *src_slot(struct src_round *rd, size_t t, int cohort, int part)
{
	return &rd->slots[t * SRC_SLOTS + (size_t)cohort * 2 + (size_t)part];
}

void rollout_src_drop(struct rollout_engine *e, struct check_run *cr)
{
	struct src_round *rd = cr->src;

	if (!rd)
		return;
	for (size_t i = 0; i < SRC_SLOTS * rd->ntargets; i++)
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
	const struct config_target *tg = run_target(r, t);

	memset(v, 0, sizeof(*v));
	v->cohort = baseline ? "baseline" : "canary";
	v->target = tg->name;
	v->interval_ms = rollout_dur(r, r->cfg->analysis.interval_ms);
	if (tg->kind == CONFIG_TARGET_FLAG) {
		v->service = tg->flag;
		v->version = v->variant = flag_cohort_variant(tg->flg, baseline);
	} else {
		v->service = tg->service;
		v->version = v->variant = baseline ? rollout_stable_version(e, tg) : tg->canary;
	}
}

/* A query count check: two queries per cohort (errors, requests). */
static bool query_counts(const struct config_check *c)
{
	return config_check_counts(c) && c->source == CONFIG_SOURCE_QUERY;
}

/* Starts check k's jobs for the interval ending at now (rollout_evaluate()). */
static void src_begin(struct rollout_engine *e, struct run *r, size_t k, int64_t now, bool bake)
{
	const struct config_check *c = &r->cfg->analysis.checks[k];
	struct check_run *cr = &r->checks[k];
	size_t n = r->cfg->ntargets < MAX_TARGETS ? r->cfg->ntargets : MAX_TARGETS, used = 0;
	struct src_round *rd;

	rollout_src_drop(
	    e, cr); /* rollout_sources_tick() judged the last round already; this never drops one */
	rd = calloc(1, sizeof(*rd) + SRC_SLOTS * n * sizeof(rd->slots[0]));
	if (!rd)
		return;
	rd->ntargets = n;
	rd->end_ms = now;
	rd->deadline_ms = now + (int64_t)c->timeout_ms + SOURCE_GRACE_MS;
	rd->generation = r->generation;
	rd->horizon = step_horizon(r, rollout_dur(r, r->cfg->analysis.interval_ms));
	rd->step = r->step;
	rd->bake = bake;
	rd->per_cohort = source_per_cohort(c);
	for (size_t t = 0; t < n; t++) {
		const struct config_target *tg = run_target(r, t);
		const struct target_run *tr = &r->targets[t];

		if (!config_check_covers(c, t) || tr->rolled_back || !run_canary_live(r, t) ||
		    (tg->kind == CONFIG_TARGET_SERVICE ? !tg->svc : !tg->flg))
			continue;
		used++;
		for (int i = 0; i < (rd->per_cohort ? 2 : 1) * (query_counts(c) ? 2 : 1); i++) {
			int co = query_counts(c) ? i / 2 : i, part = query_counts(c) ? i % 2 : 0;
			struct src_slot *sl = src_slot(rd, t, co, part);
			struct source_vars v;

			sl->used = true;
			src_vars(e, r, t, co, &v);
			if ((part ? source_request_build_requests : source_request_build)(
			        c, e->cfg->metrics.prometheus, &v, &sl->req, sl->rd.error,
			        sizeof(sl->rd.error)))
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
 * Check c failed long enough and its on_fail rolls back: its targets (or
 * all) to 0, or with {rollback_to} back to that step's weights and paused.
 * A rollback_to with no step to go back to (`previous` from the first
 * traffic step) rolls the targets back fully.  evs (stolen): the verdicts.
 */
static void check_rollback(struct rollout_engine *e, struct run *r, const struct config_check *c,
                           int64_t now, const char *why, const struct check_verdict *v,
                           int64_t first_fail_ms, bool bake, json_t *evs, uint64_t t0_us)
{
	size_t to = r->cfg->nsteps;

	if (c->on_fail == CONFIG_ON_FAIL_ROLLBACK_TO)
		to = rollout_rollback_step(r, c);
	if (to < r->cfg->nsteps) {
		if (rollout_rollback_to(e, r, check_targets(c), to, ENGINE_ACTOR, now, why, v,
		                        first_fail_ms, evs, t0_us) == 0)
			rollout_evidence_reset(e, r, now);
		return;
	}
	rollout_rollback(e, r, check_targets(c), ENGINE_ACTOR, now, why, v, first_fail_ms,
	                 bake ? RB_BAKE : RB_CHECK, evs, t0_us);
}

/*
 * A source round's verdict v as the step's evidence: a count check's
 * requests are those it has accumulated over the step (its test's), as
 * the built-in metrics' step verdicts count them.
 */
static const struct check_verdict *
src_evidence(const struct config_check *c, const struct check_verdict *v, struct check_verdict *buf)
{
	if (!config_check_counts(c) || v->test.method == CONFIG_TEST_NONE)
		return v;
	*buf = *v;
	buf->canary_requests = v->test.canary_requests;
	buf->baseline_requests = v->test.baseline_requests;
	return buf;
}

/* A query count check's requests queries beside its (errors) queries in the verdict. */
static void src_requests_json(json_t *src, struct src_round *rd, size_t t)
{
	for (int co = 0; co < 2; co++) {
		json_t *o = json_object_get(src, co ? "baseline" : "canary");

		if (json_is_object(o))
			json_object_set_new(o, "requests_request",
			                    json_string(src_slot(rd, t, co, 1)->req.text));
	}
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
	uint64_t interval = rollout_dur(r, ro->analysis.interval_ms);
	struct check_verdict best, cur, evv;
	json_t *d, *evs, *src = NULL;
	int best_t = -1;
	bool act, pause_err;
	uint64_t t0_us = clock_mono_us();

	for (size_t t = 0; t < rd->ntargets; t++) {
		struct src_slot *a = src_slot(rd, t, 0, 0), *b = src_slot(rd, t, 1, 0);
		struct source_reading ca, cb;

		if (!a->used)
			continue;
		for (int i = 0; i < SRC_SLOTS; i++) {
			struct src_slot *sl = src_slot(rd, t, i / 2, i % 2);

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
		if (query_counts(c)) { /* each cohort's errors and requests queries */
			source_reading_counts(&a->rd, &src_slot(rd, t, 0, 1)->rd, &ca);
			source_reading_counts(&b->rd, &src_slot(rd, t, 1, 1)->rd, &cb);
		} else {
			ca = a->rd;
			cb = b->rd;
		}
		if (config_check_counts(c)) {
			/*
			 * Added to the step's counts when its whole interval lies in the
			 * step (or bake) they count; a round that began before (the first
			 * after a step begins, or one judged after the step moved on)
			 * adds nothing and the test repeats its last look on them.
			 */
			bool in_step = rd->end_ms - (int64_t)interval >= cr->src_cum_from_ms;
			bool hist = rd->bake || r->targets[t].weight >= 100000;
			struct source_counts *acc = &cr->src_cum[t], *h = &cr->src_hist[t];
			struct source_counts before = *acc, judged = *acc;

			if (hist) { /* the step's canary against the run's baseline */
				judged.baseline_errors = h->baseline_errors;
				judged.baseline_requests = h->baseline_requests;
			}
			source_evaluate_counts(c, &ca, rd->per_cohort ? &cb : NULL, &judged,
			                       in_step, rd->horizon, interval, &cur);
			if (hist) {
				acc->canary_errors = judged.canary_errors;
				acc->canary_requests = judged.canary_requests;
				acc->looks = judged.looks;
			} else {
				*acc = judged;
				h->baseline_errors += acc->baseline_errors - before.baseline_errors;
				h->baseline_requests +=
				    acc->baseline_requests - before.baseline_requests;
			}
		} else {
			source_evaluate(c, &ca, rd->per_cohort ? &cb : NULL, interval, &cur);
		}
		if (best_t < 0 || rank(cur.outcome) > rank(best.outcome)) {
			best = cur;
			best_t = (int)t;
			json_decref(src);
			src = source_json(c, &a->req, &ca, rd->per_cohort ? &b->req : NULL,
			                  rd->per_cohort ? &cb : NULL);
			if (query_counts(c))
				src_requests_json(src, rd, t);
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
	if (rd->step == r->step && rd->bake == run_baking(r) &&
	    rd->end_ms - (int64_t)interval >=
	        (rd->bake ? r->bake_until_ms - (int64_t)rollout_dur(r, ro->bake_ms)
	                  : r->step_started_ms))
		evidence_note(r, k, &best, src_evidence(c, &best, &evv));
	d = check_verdict_json(&best);
	json_object_set_new(d, "target", json_string(ro->targets[best_t].name));
	json_object_set_new(d, "step", json_integer((json_int_t)rd->step));
	json_object_set_new(d, "interval_end_ms", json_integer(rd->end_ms));
	json_object_set_new(d, "consecutive_failures", json_integer(cr->fails));
	json_object_set_new(d, "consecutive_errors", json_integer(cr->src_errors));
	json_object_set_new(d, "bake", json_boolean(rd->bake));
	json_object_set_new(d, "source", src ? src : json_null());
	src = NULL;
	evs = rollout_event_list("verdict", d);
	act = best.outcome == CHECK_FAIL &&
	      (uint64_t)cr->fails * interval >= rollout_dur(r, c->for_ms);
	pause_err = best.outcome == CHECK_ERROR && cr->src_errors >= SOURCE_ERRORS_PAUSE;
	if (act && c->on_fail != CONFIG_ON_FAIL_PAUSE) {
		char why[CHECK_REASON_MAX + 32];

		snprintf(why, sizeof(why), "%s%s", rd->bake ? "during bake: " : "",
		         cr->last.reason);
		check_rollback(e, r, c, now, why, &cr->last, cr->first_fail_ms, rd->bake, evs,
		               t0_us);
		goto out;
	}
	if (pause_err)
		cr->src_errors = 0; /* a resume gets SOURCE_ERRORS_PAUSE more tries */
	if (rollout_persist(e, r, ENGINE_ACTOR, evs) || r->state != ROLLOUT_PROGRESSING)
		goto out;
	if (act) {
		json_t *x = json_pack("{s:s, s:o}", "check", c->name, "verdict",
		                      check_verdict_json(&cr->last));

		rollout_pause(e, r, ENGINE_ACTOR, now, cr->last.reason, c->review_ms,
		              check_targets(c), x);
	} else if (pause_err) {
		char why[CHECK_REASON_MAX + 96];
		json_t *x = json_pack("{s:s, s:o}", "check", c->name, "verdict",
		                      check_verdict_json(&cr->last));

		snprintf(why, sizeof(why), "check %s: %d consecutive source errors (last: %s)",
		         c->name, SOURCE_ERRORS_PAUSE, cr->last.reason);
		rollout_pause(e, r, ENGINE_ACTOR, now, why, 0, ALL_TARGETS, x);
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
void rollout_sources_tick(struct rollout_engine *e, struct run *r, int64_t now)
{
	const struct config_rollout *ro = r->cfg;

	for (size_t k = 0; k < ro->analysis.nchecks; k++) {
		const struct config_check *c = &ro->analysis.checks[k];
		struct check_run *cr = &r->checks[k];
		struct src_round *rd = cr->src;
		bool pending = false;

		if (!rd)
			continue;
		if (!run_active(r) || rd->generation != r->generation) {
			rollout_src_drop(e, cr);
			continue;
		}
		for (size_t i = 0; i < SRC_SLOTS * rd->ntargets; i++) {
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

void rollout_health_tick(struct rollout_engine *e, struct run *r, int64_t now)
{
	for (size_t t = 0; e->be.endpoints_down && run_active(r) && t < r->cfg->ntargets; t++) {
		const struct config_target *tg = run_target(r, t);
		struct check_verdict v = {.outcome = CHECK_FAIL,
		                          .check = "health",
		                          .metric = "health",
		                          .canary = NAN,
		                          .baseline = NAN,
		                          .bound_value = NAN,
		                          .observed = NAN};
		int64_t since = 0;
		json_t *d;

		if (!run_live_service(r, t) ||
		    !e->be.endpoints_down(e->be.ctx, tg->service, tg->canary, v.reason,
		                          sizeof(v.reason), &since))
			continue;
		d = check_verdict_json(&v);
		json_object_set_new(d, "target", json_string(tg->name));
		json_object_set_new(d, "step", json_integer((json_int_t)r->step));
		json_object_set_new(d, "builtin", json_true());
		json_object_set_new(d, "down_since_ms", json_integer(since));
		rollout_rollback(e, r, UINT64_C(1) << t, ENGINE_ACTOR, now, v.reason, &v, 0,
		                 RB_CHECK, rollout_event_list("verdict", d), 0);
	}
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
	const struct config_target *tg = run_target(r, t);
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

void rollout_evaluate(struct rollout_engine *e, struct run *r, int64_t now)
{
	const struct config_rollout *ro = r->cfg;
	uint64_t interval = rollout_dur(r, ro->analysis.interval_ms), t0_us;
	struct metrics_cohort_snapshot *dc = NULL, *db = NULL, *cc = NULL, *cb = NULL;
	struct mirror_snapshot *sd = NULL, *sc = NULL;
	bool *have = NULL, *have_sh = NULL, all_pass = true, any = false, any_fail = false;
	bool bake = run_baking(r);
	json_t *evs = json_array(), *per_target = json_object(), *shadow = json_object();
	int act = -1;
	json_t *srm_detail = NULL; /* the sample-ratio guard's mismatch, for the pause */
	char srm_why[SRM_REASON_MAX];
	int srm = -1;
	json_t *missing = NULL; /* fleet mode: live nodes not in these readings */
	bool incomplete = false;

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
			json_object_set_new(shadow, run_target(r, t)->name, shadow_json(&sd[t]));
		}
	for (size_t t = 0; t < ro->ntargets; t++) {
		const struct config_target *tg = run_target(r, t);
		struct target_run *tr = &r->targets[t];
		struct metrics_cohort_snapshot c, b;

		if (tg->kind != CONFIG_TARGET_SERVICE || !tg->svc || tr->rolled_back)
			continue;
		if (e->be.read_cohort(e->be.ctx, tg->service, tg->canary, COHORT_CANARY, &c) ||
		    e->be.read_cohort(e->be.ctx, tg->service, rollout_stable_version(e, tg),
		                      run_baseline_cohort(r, t), &b)) {
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
		if (tr->rd.have_prev && run_canary_live(r, t)) {
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
	/*
	 * Fleet mode (docs/fleet.md "Fleet-wide judging"): a live node that did
	 * not flush since the interval began makes it incomplete.  Its metric
	 * verdicts may still fail (a regression on the nodes that reported is
	 * real) but never count as a pass.
	 */
	if (e->be.missing_nodes && json_object_size(per_target)) {
		missing = e->be.missing_nodes(e->be.ctx, now - (int64_t)interval);
		incomplete = missing && json_array_size(missing) > 0;
	}
	t0_us = clock_mono_us();
	if (json_object_size(per_target) || json_object_size(shadow)) {
		json_t *ivd =
		    json_pack("{s:I, s:I, s:I, s:b, s:O, s:O}", "interval_end_ms", (json_int_t)now,
		              "interval_ms", (json_int_t)interval, "step", (json_int_t)r->step,
		              "bake", bake, "targets", per_target, "shadow", shadow);

		if (ivd && missing) {
			json_object_set_new(ivd, "incomplete", json_boolean(incomplete));
			json_object_set(ivd, "missing_nodes", missing);
		}
		json_array_append_new(evs, rollout_event("rollout.interval", ivd));
	}
	if (r->state == ROLLOUT_PROGRESSING)
		srm = srm_guard(e, r, now, per_target, evs, srm_why, sizeof(srm_why), &srm_detail);
	if (srm >= 0)
		all_pass = false; /* unequal slices: no comparison of them can pass */

	for (size_t k = 0; k < ro->analysis.nchecks; k++) {
		const struct config_check *c = &ro->analysis.checks[k];
		struct check_run *cr = &r->checks[k];
		struct check_verdict best, cur, evbest, evcur;
		int best_t = -1, ev_t = -1;
		bool inc = incomplete && !shadow_metric(c); /* the mirror's counts are local */

		if (c->source != CONFIG_SOURCE_METRIC) {
			/* judged when its jobs answer (rollout_sources_tick()): the last round counts */
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
				struct check_cumulative cum = {&kc, &kb, r->targets[t].rd.sh_looks,
				                               0}; /* judge: open horizon */

				if (!have_sh[t] || !config_check_covers(c, t))
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
			struct check_cumulative cum = {&cc[t], &cb[t], r->targets[t].rd.step_looks,
			                               step_horizon(r, interval)}; /* judge */

			if (!have[t] || !config_check_covers(c, t))
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
		} else if (!inc) { /* a pass on part of the fleet does not end a streak */
			cr->fails = 0;
			cr->first_fail_ms = 0;
		}
		if (best.outcome != CHECK_PASS || inc)
			all_pass = false;
		if (best.outcome == CHECK_FAIL)
			any_fail = true;
		if (srm < 0 && !inc) { /* unequal slices: nothing of this step counts (below) */
			evidence_note(r, k, &best, ev_t >= 0 ? &evbest : NULL);
		} else if (srm < 0) { /* incomplete: only a failure counts */
			struct check_verdict ivx = best;

			if (ivx.outcome == CHECK_PASS)
				ivx.outcome = CHECK_INCONCLUSIVE;
			evidence_note(r, k, &ivx,
			              ev_t >= 0 && evbest.outcome == CHECK_FAIL ? &evbest : NULL);
		}
		{
			json_t *d = check_verdict_json(&best);

			json_object_set_new(d, "target", json_string(ro->targets[best_t].name));
			json_object_set_new(d, "step", json_integer((json_int_t)r->step));
			json_object_set_new(d, "interval_end_ms", json_integer(now));
			json_object_set_new(d, "consecutive_failures", json_integer(cr->fails));
			json_object_set_new(d, "bake", json_boolean(bake));
			if (missing && !shadow_metric(c)) {
				json_object_set_new(d, "incomplete", json_boolean(inc));
				json_object_set(d, "missing_nodes", missing);
			}
			if (ev_t >= 0)
				json_object_set_new(
				    d, "step_evidence",
				    json_pack("{s:s, s:I, s:I, s:b, s:s}", "outcome",
				              check_outcome_name(evbest.outcome), "canary_requests",
				              (json_int_t)evbest.canary_requests,
				              "baseline_requests",
				              (json_int_t)evbest.baseline_requests, "passed",
				              cr->ev_pass, "reason", evbest.reason));
			json_array_append_new(evs, rollout_event("verdict", d));
		}
		if (act < 0 && best.outcome == CHECK_FAIL &&
		    (uint64_t)cr->fails * interval >= rollout_dur(r, c->for_ms))
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
		rollout_evidence_reset(e, r, now);
	if (any && all_pass && r->state == ROLLOUT_PROGRESSING && r->step < ro->nsteps &&
	    r->phase == PHASE_RUNNING && ro->steps[r->step].kind == CONFIG_STEP_ANALYSIS &&
	    now - (int64_t)interval >= r->step_started_ms)
		r->analysis_passed = true;
	if (act >= 0 && ro->analysis.checks[act].on_fail != CONFIG_ON_FAIL_PAUSE) {
		const struct config_check *c = &ro->analysis.checks[act];
		struct check_run *cr = &r->checks[act];
		char why[CHECK_REASON_MAX + 32];

		snprintf(why, sizeof(why), "%s%s", bake ? "during bake: " : "", cr->last.reason);
		check_rollback(e, r, c, now, why, &cr->last, cr->first_fail_ms, bake, evs, t0_us);
		evs = NULL;
		goto out;
	}
	/* validate (issue 16): a failing check that pauses keeps the canary's last requests */
	if (act >= 0 && r->state == ROLLOUT_PROGRESSING)
		rollout_act_samples(e, r, check_targets(&ro->analysis.checks[act]), now, evs);
	if (rollout_persist(e, r, ENGINE_ACTOR, evs)) {
		evs = NULL;
		goto out;
	}
	evs = NULL;
	if (act >= 0 && r->state == ROLLOUT_PROGRESSING) {
		const struct config_check *c = &ro->analysis.checks[act];
		struct check_run *cr = &r->checks[act];
		json_t *x = json_pack("{s:s, s:o}", "check", c->name, "verdict",
		                      check_verdict_json(&cr->last));

		rollout_pause(e, r, ENGINE_ACTOR, now, cr->last.reason, c->review_ms,
		              check_targets(c), x);
	}
	if (srm >= 0 && r->state == ROLLOUT_PROGRESSING) {
		rollout_pause(e, r, ENGINE_ACTOR, now, srm_why, 0, ALL_TARGETS, srm_detail);
		srm_detail = NULL;
	}
out:
	json_decref(missing);
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
