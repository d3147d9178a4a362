/*
 * validate.c - the model of post-rollout validation windows (see
 * validate.h): sizing, the schedule, trend points, the persisted form in
 * the rollout document, and the window report as JSON and Markdown.  Pure:
 * no engine state, no I/O; rollout/validate_engine.c drives it.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "rollout/validate.h"

#define REPORT_MD_CAP (1u << 20) /* a report is a few KB; a cap all the same */

static const char *const state_names[] = {"pending", "running",      "passed",
                                          "failed",  "inconclusive", "skipped"};

const char *validate_state_name(enum validate_state s)
{
	return (size_t)s < sizeof(state_names) / sizeof(state_names[0]) ? state_names[s]
	                                                                : "unknown";
}

static int state_of(const char *s)
{
	for (size_t i = 0; s && i < sizeof(state_names) / sizeof(state_names[0]); i++)
		if (strcmp(s, state_names[i]) == 0)
			return (int)i;
	return -1;
}

/* ---- sizing ---- */

int validate_init(struct validate_run *v, const struct config_rollout *cfg)
{
	size_t nt = cfg->ntargets ? cfg->ntargets : 1, nw = cfg->nvalidate;

	memset(v, 0, sizeof(*v));
	v->cfg = cfg;
	v->ntargets = cfg->ntargets;
	v->reverted_by = -1;
	if (!nw)
		return 0; /* nothing to validate: nothing allocated */
	v->old_stable = calloc(nt, sizeof(*v->old_stable));
	v->new_stable = calloc(nt, sizeof(*v->new_stable));
	v->have_baseline = calloc(nt, sizeof(*v->have_baseline));
	v->baseline = calloc(nt, sizeof(*v->baseline));
	v->have_prev = calloc(nt, sizeof(*v->have_prev));
	v->prev = calloc(nt, sizeof(*v->prev));
	v->w = calloc(nw, sizeof(*v->w));
	if (!v->old_stable || !v->new_stable || !v->have_baseline || !v->baseline ||
	    !v->have_prev || !v->prev || !v->w)
		goto out_nomem;
	for (size_t i = 0; i < nw; i++) {
		size_t nc = cfg->validate[i].nchecks;

		v->w[i].checks = calloc(nc ? nc : 1, sizeof(*v->w[i].checks));
		v->w[i].cum = calloc(nt, sizeof(*v->w[i].cum));
		if (!v->w[i].checks || !v->w[i].cum)
			goto out_nomem;
	}
	validate_reset(v);
	return 0;
out_nomem:
	validate_release(v);
	return -ENOMEM;
}

void validate_release(struct validate_run *v)
{
	if (!v->cfg)
		return;
	for (size_t t = 0; t < v->ntargets; t++) {
		if (v->old_stable)
			free(v->old_stable[t]);
		if (v->new_stable)
			free(v->new_stable[t]);
	}
	for (size_t i = 0; v->w && i < v->cfg->nvalidate; i++) {
		free(v->w[i].checks);
		free(v->w[i].cum);
	}
	free(v->old_stable);
	free(v->new_stable);
	free(v->have_baseline);
	free(v->baseline);
	free(v->have_prev);
	free(v->prev);
	free(v->w);
	memset(v, 0, sizeof(*v));
}

void validate_reset(struct validate_run *v)
{
	const struct config_rollout *cfg = v->cfg;

	if (!cfg || !v->w)
		return;
	v->begun = false;
	v->completed_ms = 0;
	v->reverted_by = -1;
	for (size_t t = 0; t < v->ntargets; t++) {
		free(v->old_stable[t]);
		free(v->new_stable[t]);
		v->old_stable[t] = v->new_stable[t] = NULL;
		v->have_baseline[t] = v->have_prev[t] = false;
		memset(&v->baseline[t], 0, sizeof(v->baseline[t]));
	}
	for (size_t i = 0; i < cfg->nvalidate; i++) {
		struct validate_window *w = &v->w[i];
		struct validate_check *keep = w->checks;
		struct metrics_cohort_snapshot *cum = w->cum;

		memset(w, 0, sizeof(*w));
		w->checks = keep;
		w->cum = cum;
		memset(cum, 0, (v->ntargets ? v->ntargets : 1) * sizeof(*cum));
		for (size_t k = 0; k < cfg->validate[i].nchecks; k++) {
			memset(&keep[k], 0, sizeof(keep[k]));
			keep[k].check = cfg->validate[i].checks[k];
			keep[k].stride = 1;
		}
	}
}

/* ---- schedule ---- */

size_t validate_current(const struct validate_run *v)
{
	size_t i;

	for (i = 0; v->w && i < v->cfg->nvalidate; i++)
		if (v->w[i].state == VALIDATE_PENDING || v->w[i].state == VALIDATE_RUNNING)
			break;
	return v->w ? i : 0;
}

void validate_span(const struct validate_run *v, size_t i, validate_dur_fn dur, const void *arg,
                   int64_t *start_ms, int64_t *end_ms)
{
	const struct config_validate_window *cw = &v->cfg->validate[i];
	uint64_t after = dur ? dur(arg, cw->after_ms) : cw->after_ms;
	uint64_t len = dur ? dur(arg, cw->for_ms) : cw->for_ms;

	*start_ms = v->completed_ms + (int64_t)after;
	*end_ms = *start_ms + (int64_t)len;
}

bool validate_holds(const struct validate_run *v)
{
	if (!v->begun || v->reverted_by >= 0)
		return false;
	for (size_t i = validate_current(v); v->w && i < v->cfg->nvalidate; i++)
		if (v->cfg->validate[i].on_fail == CONFIG_VALIDATE_ROLLBACK)
			return true;
	return false;
}

/* ---- trend points ---- */

static void point_merge(struct validate_point *a, const struct validate_point *b)
{
	uint64_t n = a->requests + b->requests;

	if (isnan(a->value))
		a->value = b->value;
	else if (!isnan(b->value))
		a->value = n ? (a->value * (double)a->requests + b->value * (double)b->requests) /
		                   (double)n
		             : (a->value + b->value) / 2;
	a->requests = n;
	a->end_ms = b->end_ms;
	a->intervals += b->intervals;
}

void validate_point_add(struct validate_check *c, int64_t end_ms, double value, uint64_t requests)
{
	struct validate_point p = {end_ms, value, requests, 1};

	if (!c->stride)
		c->stride = 1;
	if (c->npts && c->pts[c->npts - 1].intervals < c->stride) {
		point_merge(&c->pts[c->npts - 1], &p);
		return;
	}
	if (c->npts == VALIDATE_POINTS) { /* full: halve the resolution */
		for (size_t i = 0; i < VALIDATE_POINTS / 2; i++) {
			c->pts[i] = c->pts[2 * i];
			point_merge(&c->pts[i], &c->pts[2 * i + 1]);
		}
		c->npts = VALIDATE_POINTS / 2;
		c->stride *= 2;
	}
	c->pts[c->npts++] = p;
}

/* ---- snapshots ---- */

json_t *validate_snapshot_json(const struct metrics_cohort_snapshot *s)
{
	json_t *cls = json_array(), *up = json_array(), *b = json_array();

	for (size_t i = 0; i < METRICS_CLASSES; i++)
		json_array_append_new(cls, json_integer((json_int_t)s->by_class[i]));
	for (size_t i = 0; i < METRICS_ERR_COUNT; i++)
		json_array_append_new(up, json_integer((json_int_t)s->upstream[i]));
	for (size_t i = 0; i < HIST_BUCKETS; i++)
		if (s->hist.counts[i])
			json_array_append_new(
			    b, json_pack("[I, I]", (json_int_t)i, (json_int_t)s->hist.counts[i]));
	return json_pack("{s:I, s:I, s:I, s:o, s:o, s:{s:I, s:I, s:o}}", "requests",
	                 (json_int_t)s->requests, "errors", (json_int_t)s->errors, "proxy_errors",
	                 (json_int_t)s->proxy_errors, "by_class", cls, "upstream", up, "hist", "n",
	                 (json_int_t)s->hist.n, "sum_us", (json_int_t)s->hist.sum_us, "b", b);
}

static uint64_t ju64(const json_t *o, const char *key)
{
	json_int_t v = json_integer_value(json_object_get(o, key));

	return v > 0 ? (uint64_t)v : 0;
}

int validate_snapshot_parse(const json_t *o, struct metrics_cohort_snapshot *out)
{
	const json_t *h = json_object_get(o, "hist"), *x;
	size_t i;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(o) || !json_is_object(h))
		return -EINVAL;
	out->requests = ju64(o, "requests");
	out->errors = ju64(o, "errors");
	out->proxy_errors = ju64(o, "proxy_errors");
	json_array_foreach(json_object_get(o, "by_class"), i, x) if (i < METRICS_CLASSES)
	    out->by_class[i] = (uint64_t)json_integer_value(x);
	json_array_foreach(json_object_get(o, "upstream"), i, x) if (i < METRICS_ERR_COUNT)
	    out->upstream[i] = (uint64_t)json_integer_value(x);
	out->hist.n = ju64(h, "n");
	out->hist.sum_us = ju64(h, "sum_us");
	json_array_foreach(json_object_get(h, "b"), i, x)
	{
		json_int_t idx = json_integer_value(json_array_get(x, 0));

		if (idx < 0 || idx >= HIST_BUCKETS)
			return -EINVAL;
		out->hist.counts[idx] = (uint64_t)json_integer_value(json_array_get(x, 1));
	}
	return 0;
}

/* ---- verdicts in the document ---- */

static json_t *num_or_null(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

static double num_of(const json_t *v)
{
	return json_is_number(v) ? json_number_value(v) : NAN;
}

static json_t *verdict_doc(const struct check_verdict *x)
{
	return json_pack("{s:s, s:o, s:o, s:o, s:I, s:I, s:s}", "outcome",
	                 check_outcome_name(x->outcome), "value", num_or_null(x->canary),
	                 "baseline", num_or_null(x->baseline), "observed", num_or_null(x->observed),
	                 "canary_requests", (json_int_t)x->canary_requests, "baseline_requests",
	                 (json_int_t)x->baseline_requests, "reason", x->reason);
}

static bool verdict_parse(const json_t *o, const struct config_check *c, struct check_verdict *x)
{
	const char *s = json_string_value(json_object_get(o, "outcome"));

	memset(x, 0, sizeof(*x));
	if (!s)
		return false;
	for (int k = CHECK_PASS; k <= CHECK_ERROR; k++)
		if (strcmp(s, check_outcome_name((enum check_outcome)k)) == 0)
			x->outcome = (enum check_outcome)k;
	x->check = c->name;
	x->metric = config_metric_name(c->metric);
	x->min_samples = c->min_samples;
	x->canary = num_of(json_object_get(o, "value"));
	x->baseline = num_of(json_object_get(o, "baseline"));
	x->observed = num_of(json_object_get(o, "observed"));
	x->bound_value = NAN;
	x->canary_requests = ju64(o, "canary_requests");
	x->baseline_requests = ju64(o, "baseline_requests");
	s = json_string_value(json_object_get(o, "reason"));
	snprintf(x->reason, sizeof(x->reason), "%s", s ? s : "");
	return true;
}

static json_t *points_json(const struct validate_check *c)
{
	json_t *a = json_array();

	for (size_t i = 0; i < c->npts; i++)
		json_array_append_new(a, json_pack("[I, o, I, I]", (json_int_t)c->pts[i].end_ms,
		                                   num_or_null(c->pts[i].value),
		                                   (json_int_t)c->pts[i].requests,
		                                   (json_int_t)c->pts[i].intervals));
	return a;
}

json_t *validate_doc(const struct validate_run *v)
{
	const struct config_rollout *cfg = v->cfg;
	json_t *targets, *windows, *o;

	if (!v->begun || !v->w)
		return NULL;
	targets = json_array();
	windows = json_array();
	for (size_t t = 0; t < v->ntargets; t++)
		json_array_append_new(
		    targets,
		    json_pack("{s:s, s:s?, s:s?, s:o}", "name", cfg->targets[t].name, "old_stable",
		              v->old_stable[t], "new_stable", v->new_stable[t], "baseline",
		              v->have_baseline[t] ? validate_snapshot_json(&v->baseline[t])
		                                  : json_null()));
	for (size_t i = 0; i < cfg->nvalidate; i++) {
		const struct validate_window *w = &v->w[i];
		json_t *checks = json_array(), *cum = json_array();

		for (size_t t = 0; t < v->ntargets; t++)
			json_array_append_new(cum, w->state == VALIDATE_PENDING
			                               ? json_null()
			                               : validate_snapshot_json(&w->cum[t]));
		for (size_t k = 0; k < cfg->validate[i].nchecks; k++) {
			const struct validate_check *c = &w->checks[k];

			json_array_append_new(
			    checks,
			    json_pack("{s:s, s:[I, I, I, I], s:I, s:I, s:b, s:o, s:o, s:I, s:o}",
			              "name", cfg->analysis.checks[c->check].name, "iv",
			              (json_int_t)c->iv[0], (json_int_t)c->iv[1],
			              (json_int_t)c->iv[2], (json_int_t)c->iv[3], "fails",
			              (json_int_t)c->fails, "first_fail",
			              (json_int_t)c->first_fail_ms, "failed", c->failed, "final",
			              c->have_final ? verdict_doc(&c->final) : json_null(), "last",
			              c->have_last ? verdict_doc(&c->last) : json_null(), "stride",
			              (json_int_t)c->stride, "points", points_json(c)));
		}
		json_array_append_new(windows, json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:o, s:o}",
		                                         "name", cfg->validate[i].name, "state",
		                                         validate_state_name(w->state), "started",
		                                         (json_int_t)w->started_ms, "ended",
		                                         (json_int_t)w->ended_ms, "looks",
		                                         (json_int_t)w->looks, "reason", w->reason,
		                                         "cum", cum, "checks", checks));
	}
	o = json_pack("{s:b, s:I, s:i, s:o, s:o}", "begun", 1, "completed",
	              (json_int_t)v->completed_ms, "reverted_by", v->reverted_by, "targets",
	              targets, "windows", windows);
	return o;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void check_parse(const struct config_rollout *cfg, struct validate_check *c, const json_t *o)
{
	const struct config_check *cc = &cfg->analysis.checks[c->check];
	const json_t *x;
	size_t i;

	for (i = 0; i < 4; i++)
		c->iv[i] =
		    (uint32_t)json_integer_value(json_array_get(json_object_get(o, "iv"), i));
	c->fails = (uint32_t)ju64(o, "fails");
	c->first_fail_ms = (int64_t)json_integer_value(json_object_get(o, "first_fail"));
	c->failed = json_is_true(json_object_get(o, "failed"));
	c->have_final = verdict_parse(json_object_get(o, "final"), cc, &c->final);
	c->have_last = verdict_parse(json_object_get(o, "last"), cc, &c->last);
	c->stride = (uint32_t)ju64(o, "stride");
	if (!c->stride)
		c->stride = 1;
	c->npts = 0;
	json_array_foreach(json_object_get(o, "points"), i, x)
	{
		if (c->npts >= VALIDATE_POINTS)
			break;
		c->pts[c->npts++] = (struct validate_point){
		    (int64_t)json_integer_value(json_array_get(x, 0)), num_of(json_array_get(x, 1)),
		    (uint64_t)json_integer_value(json_array_get(x, 2)),
		    (uint32_t)json_integer_value(json_array_get(x, 3))};
	}
}

void validate_parse(struct validate_run *v, const json_t *doc)
{
	const struct config_rollout *cfg = v->cfg;
	const json_t *x;
	size_t i;

	validate_reset(v);
	if (!v->w || !json_is_object(doc) || !json_is_true(json_object_get(doc, "begun")))
		return;
	v->begun = true;
	v->completed_ms = (int64_t)json_integer_value(json_object_get(doc, "completed"));
	x = json_object_get(doc, "reverted_by");
	v->reverted_by = json_is_integer(x) ? (int)json_integer_value(x) : -1;
	if (v->reverted_by >= (int)cfg->nvalidate || v->reverted_by < -1)
		v->reverted_by = -1;
	json_array_foreach(json_object_get(doc, "targets"), i, x)
	{
		const char *name = json_string_value(json_object_get(x, "name"));

		for (size_t t = 0; name && t < v->ntargets; t++) {
			if (strcmp(name, cfg->targets[t].name) != 0)
				continue;
			free(v->old_stable[t]);
			free(v->new_stable[t]);
			v->old_stable[t] =
			    dup_or_null(json_string_value(json_object_get(x, "old_stable")));
			v->new_stable[t] =
			    dup_or_null(json_string_value(json_object_get(x, "new_stable")));
			v->have_baseline[t] =
			    validate_snapshot_parse(json_object_get(x, "baseline"),
			                            &v->baseline[t]) == 0;
		}
	}
	/* windows by name: a reload may have changed the list */
	json_array_foreach(json_object_get(doc, "windows"), i, x)
	{
		const char *name = json_string_value(json_object_get(x, "name")), *s;
		const json_t *y;
		size_t k;

		for (size_t j = 0; name && j < cfg->nvalidate; j++) {
			struct validate_window *w = &v->w[j];
			int st;

			if (strcmp(name, cfg->validate[j].name) != 0)
				continue;
			st = state_of(json_string_value(json_object_get(x, "state")));
			w->state = st < 0 ? VALIDATE_PENDING : (enum validate_state)st;
			w->started_ms = (int64_t)json_integer_value(json_object_get(x, "started"));
			w->ended_ms = (int64_t)json_integer_value(json_object_get(x, "ended"));
			w->looks = (uint32_t)ju64(x, "looks");
			s = json_string_value(json_object_get(x, "reason"));
			snprintf(w->reason, sizeof(w->reason), "%s", s ? s : "");
			json_array_foreach(json_object_get(x, "cum"), k,
			                   y) if (k < v->ntargets && !json_is_null(y))
			    validate_snapshot_parse(y, &w->cum[k]);
			json_array_foreach(json_object_get(x, "checks"), k, y)
			{
				const char *cn = json_string_value(json_object_get(y, "name"));

				for (size_t m = 0; cn && m < cfg->validate[j].nchecks; m++)
					if (strcmp(cn,
					           cfg->analysis.checks[w->checks[m].check].name) ==
					    0)
						check_parse(cfg, &w->checks[m], y);
			}
		}
	}
}

/* ---- the report ---- */

static json_t *cohort_summary(const struct metrics_cohort_snapshot *s)
{
	return json_pack("{s:I, s:I, s:o, s:o, s:o}", "requests", (json_int_t)s->requests, "errors",
	                 (json_int_t)s->errors, "error_rate", num_or_null(metrics_error_rate(s)),
	                 "p50_ms", num_or_null(metrics_latency_quantile_us(s, 0.50) / 1000.0),
	                 "p99_ms", num_or_null(metrics_latency_quantile_us(s, 0.99) / 1000.0));
}

json_t *validate_report_json(const struct validate_run *v, size_t i, int64_t interval_ms)
{
	const struct config_rollout *cfg = v->cfg;
	const struct config_validate_window *cw;
	const struct validate_window *w;
	json_t *targets, *checks;

	if (!v->w || i >= cfg->nvalidate)
		return NULL;
	cw = &cfg->validate[i];
	w = &v->w[i];
	targets = json_object();
	checks = json_array();
	for (size_t t = 0; t < v->ntargets; t++) {
		if (!v->new_stable[t])
			continue;
		json_object_set_new(
		    targets, cfg->targets[t].name,
		    json_pack("{s:s?, s:s, s:o, s:o}", "old_stable", v->old_stable[t], "new_stable",
		              v->new_stable[t], "stable", cohort_summary(&w->cum[t]), "baseline",
		              v->have_baseline[t] ? cohort_summary(&v->baseline[t]) : json_null()));
	}
	for (size_t k = 0; k < cw->nchecks; k++) {
		const struct validate_check *c = &w->checks[k];
		const struct config_check *cc = &cfg->analysis.checks[c->check];
		const struct check_verdict *x = c->have_final  ? &c->final
		                                : c->have_last ? &c->last
		                                               : NULL;
		json_t *pts = json_array();

		for (size_t p = 0; p < c->npts; p++)
			json_array_append_new(pts,
			                      json_pack("{s:I, s:o, s:I, s:I}", "end_ms",
			                                (json_int_t)c->pts[p].end_ms, "value",
			                                num_or_null(c->pts[p].value), "requests",
			                                (json_int_t)c->pts[p].requests, "intervals",
			                                (json_int_t)c->pts[p].intervals));
		json_array_append_new(
		    checks,
		    json_pack("{s:s, s:s, s:o, s:s, s:b, s:b, s:o, s:o, s:o, s:I, s:I, s:s, "
		              "s:{s:I, s:I, s:I, s:I}, s:o}",
		              "name", cc->name, "metric", config_metric_name(cc->metric), "target",
		              cc->target ? json_string(cc->target) : json_null(), "outcome",
		              c->failed ? "fail"
		              : x       ? check_outcome_name(x->outcome)
		                        : "inconclusive",
		              "final", c->have_final, "failed_streak", c->failed, "value",
		              num_or_null(x ? x->canary : NAN), "baseline",
		              num_or_null(x ? x->baseline : NAN), "observed",
		              num_or_null(x ? x->observed : NAN), "canary_requests",
		              (json_int_t)(x ? x->canary_requests : 0), "baseline_requests",
		              (json_int_t)(x ? x->baseline_requests : 0), "reason",
		              c->failed && c->have_last ? c->last.reason
		              : x                       ? x->reason
		                                        : "no interval judged yet",
		              "intervals", "pass", (json_int_t)c->iv[CHECK_PASS], "fail",
		              (json_int_t)c->iv[CHECK_FAIL], "inconclusive",
		              (json_int_t)c->iv[CHECK_INCONCLUSIVE], "error",
		              (json_int_t)c->iv[CHECK_ERROR], "points", pts));
	}
	return json_pack("{s:s, s:I, s:I, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:o, s:o}",
	                 "window", cw->name, "index", (json_int_t)i, "of",
	                 (json_int_t)cfg->nvalidate, "state", validate_state_name(w->state),
	                 "on_fail", cw->on_fail == CONFIG_VALIDATE_ROLLBACK ? "rollback" : "notify",
	                 "after_ms", (json_int_t)cw->after_ms, "for_ms", (json_int_t)cw->for_ms,
	                 "started_ms", (json_int_t)w->started_ms, "ended_ms",
	                 (json_int_t)w->ended_ms, "interval_ms", (json_int_t)interval_ms, "looks",
	                 (json_int_t)w->looks, "reason", w->reason, "targets", targets, "checks",
	                 checks);
}

void validate_chart_name(const char *window, const char *check, char *out, size_t len)
{
	snprintf(out, len, "validation-%s-%s.svg", window ? window : "", check ? check : "");
}

/* Text from the report, escaped for a Markdown table cell and cut at max bytes. */
static void md_text(struct buf *b, const char *s, size_t max)
{
	size_t n = 0;

	for (; s && *s && n < max; s++, n++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '|')
			buf_append_lit(b, "\\|");
		else if (ch == '\n' || ch == '\r')
			buf_append_lit(b, " ");
		else if (ch == '<')
			buf_append_lit(b, "&lt;");
		else if (ch == '>')
			buf_append_lit(b, "&gt;");
		else if (ch == '&')
			buf_append_lit(b, "&amp;");
		else if (ch == '`')
			buf_append_lit(b, "\\`");
		else if (ch < 0x20)
			buf_append_lit(b, "?");
		else
			buf_append(b, s, 1);
	}
	if (s && *s)
		buf_append_lit(b, "…");
}

static void md_time(struct buf *b, int64_t ms)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	char s[40];

	if (ms <= 0 || !gmtime_r(&t, &tm)) {
		buf_append_lit(b, "n/a");
		return;
	}
	strftime(s, sizeof(s), "%Y-%m-%d %H:%M:%S", &tm);
	buf_printf(b, "%s.%03d UTC", s, (int)(ms % 1000));
}

static void md_dur(struct buf *b, int64_t ms)
{
	if (ms < 0)
		ms = 0;
	if (ms < 10000)
		buf_printf(b, "%.1f s", (double)ms / 1000.0);
	else if (ms < 3 * 3600000LL)
		buf_printf(b, "%.1f min", (double)ms / 60000.0);
	else
		buf_printf(b, "%.1f h", (double)ms / 3600000.0);
}

/* A value as the report shows it: rates in percent, latencies in ms. */
static void md_value(struct buf *b, const char *metric, const json_t *v)
{
	double x;

	if (!json_is_number(v)) {
		buf_append_lit(b, "n/a");
		return;
	}
	x = json_number_value(v);
	if (metric && (strcmp(metric, "error_rate") == 0 || strcmp(metric, "success_rate") == 0))
		buf_printf(b, "%.3f%%", x * 100.0);
	else if (metric && strncmp(metric, "latency_", 8) == 0)
		buf_printf(b, "%.2f ms", x);
	else
		buf_printf(b, "%.4g", x);
}

static json_int_t jint(const json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

static const char *jstr(const json_t *o, const char *k, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : dflt;
}

static void md_cohort(struct buf *b, const json_t *co)
{
	if (!json_is_object(co)) {
		buf_append_lit(b, "n/a | n/a | n/a |");
		return;
	}
	buf_printf(b, " %lld | ", (long long)jint(co, "requests"));
	md_value(b, "error_rate", json_object_get(co, "error_rate"));
	buf_append_lit(b, " | ");
	md_value(b, "latency_p99", json_object_get(co, "p99_ms"));
	buf_append_lit(b, " |");
}

char *validate_report_md(const char *rollout, const json_t *report)
{
	const char *window = jstr(report, "window", "?"), *state = jstr(report, "state", "?");
	const char *key, *reason = jstr(report, "reason", "");
	const json_t *checks = json_object_get(report, "checks"), *c, *tv;
	struct buf b;
	char *out = NULL;
	size_t i;

	buf_init(&b, REPORT_MD_CAP);
	buf_append_lit(&b, "# Validation window `");
	md_text(&b, window, 120);
	buf_append_lit(&b, "` of rollout `");
	md_text(&b, rollout, 120);
	buf_printf(&b, "`: %s\n\n", state);
	buf_append_lit(&b, "| | |\n|---|---|\n| Window | ");
	md_text(&b, window, 120);
	buf_printf(&b, " (%lld of %lld), after ", (long long)jint(report, "index") + 1,
	           (long long)jint(report, "of"));
	md_dur(&b, (int64_t)jint(report, "after_ms"));
	buf_append_lit(&b, " for ");
	md_dur(&b, (int64_t)jint(report, "for_ms"));
	buf_printf(&b, " from the completion; on_fail: %s |\n| Started | ",
	           jstr(report, "on_fail", "?"));
	md_time(&b, (int64_t)jint(report, "started_ms"));
	buf_append_lit(&b, " |\n| Ended | ");
	md_time(&b, (int64_t)jint(report, "ended_ms"));
	buf_printf(&b, " |\n| Intervals judged | %lld (every ", (long long)jint(report, "looks"));
	md_dur(&b, (int64_t)jint(report, "interval_ms"));
	buf_printf(&b, ") |\n| Result | **%s**", state);
	if (*reason) {
		buf_append_lit(&b, ": ");
		md_text(&b, reason, 400);
	}
	buf_append_lit(&b, " |\n\n## New stable vs pre-rollout baseline\n\n");
	buf_append_lit(&b,
	               "| target | new stable | requests | error rate | p99 | pre-rollout stable "
	               "| requests | error rate | p99 |\n|---|---|---|---|---|---|---|---|---|\n");
	json_object_foreach((json_t *)json_object_get(report, "targets"), key, tv)
	{
		buf_append_lit(&b, "| ");
		md_text(&b, key, 120);
		buf_append_lit(&b, " | ");
		md_text(&b, jstr(tv, "new_stable", "?"), 120);
		buf_append_lit(&b, " |");
		md_cohort(&b, json_object_get(tv, "stable"));
		buf_append_lit(&b, " ");
		md_text(&b, jstr(tv, "old_stable", "?"), 120);
		buf_append_lit(&b, " |");
		md_cohort(&b, json_object_get(tv, "baseline"));
		buf_append_lit(&b, "\n");
	}
	buf_append_lit(&b, "\n## Checks\n\n| check | metric | result | new stable | pre-rollout "
	                   "baseline | requests (new / baseline) | intervals pass / fail / "
	                   "inconclusive / error | reason |\n|---|---|---|---|---|---|---|---|\n");
	json_array_foreach(checks, i, c)
	{
		const char *metric = jstr(c, "metric", "?");
		const json_t *iv = json_object_get(c, "intervals");

		buf_append_lit(&b, "| ");
		md_text(&b, jstr(c, "name", "?"), 120);
		buf_printf(&b, " | %s | **%s** | ", metric, jstr(c, "outcome", "?"));
		md_value(&b, metric, json_object_get(c, "value"));
		buf_append_lit(&b, " | ");
		md_value(&b, metric, json_object_get(c, "baseline"));
		buf_printf(&b, " | %lld / %lld | %lld / %lld / %lld / %lld | ",
		           (long long)jint(c, "canary_requests"),
		           (long long)jint(c, "baseline_requests"), (long long)jint(iv, "pass"),
		           (long long)jint(iv, "fail"), (long long)jint(iv, "inconclusive"),
		           (long long)jint(iv, "error"));
		md_text(&b, jstr(c, "reason", ""), 400);
		buf_append_lit(&b, " |\n");
	}
	buf_append_lit(&b, "\n## Trend per interval\n");
	json_array_foreach(checks, i, c)
	{
		const char *metric = jstr(c, "metric", "?");
		char chart[256];
		const json_t *p;
		size_t j;

		validate_chart_name(window, jstr(c, "name", "?"), chart, sizeof(chart));
		buf_append_lit(&b, "\n### ");
		md_text(&b, jstr(c, "name", "?"), 120);
		buf_printf(&b, " (%s)\n\nChart: [", metric);
		md_text(&b, chart, 250);
		buf_append_lit(&b, "](");
		md_text(&b, chart, 250);
		buf_append_lit(&b, "). Pre-rollout baseline: ");
		md_value(&b, metric, json_object_get(c, "baseline"));
		buf_append_lit(&b, ".\n\n| interval end | new stable | requests | intervals |\n"
		                   "|---|---|---|---|\n");
		json_array_foreach(json_object_get(c, "points"), j, p)
		{
			buf_append_lit(&b, "| ");
			md_time(&b, (int64_t)jint(p, "end_ms"));
			buf_append_lit(&b, " | ");
			md_value(&b, metric, json_object_get(p, "value"));
			buf_printf(&b, " | %lld | %lld |\n", (long long)jint(p, "requests"),
			           (long long)jint(p, "intervals"));
		}
		if (!json_array_size(json_object_get(c, "points")))
			buf_append_lit(&b, "| no interval judged | | | |\n");
	}
	if (buf_append(&b, "", 1) == 0)
		out = strdup(buf_head(&b));
	buf_release(&b);
	return out;
}
