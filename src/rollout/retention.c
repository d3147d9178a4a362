/*
 * retention.c - compaction of old "rollout.interval" and "verdict" events
 * into per-bucket summaries (see retention.h, docs/evidence.md).
 *
 * One call: for each compactable kind, stream its events oldest first
 * (the store's (kind, id) index) until the first one that is not old
 * enough or the budget is spent, folding each run of one subject and step
 * within one bucket into an aggregate; then write every finished run as
 * one summary and delete what it replaces, one transaction per summary.
 * The store forbids writes during a walk, so writing waits for its end.
 */
#include "rollout/retention.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "store/store.h"

#define OPEN_MAX 256 /* subjects with a run in progress during one walk */
#define NO_STEP  INT64_MIN

static const char *const COHORTS[] = {"canary", "baseline"};
static const char *const FIELDS[] = {"requests", "errors", "error_rate",
                                     "p50_ms",   "p99_ms", "mean_ms"};
#define NFIELDS (sizeof(FIELDS) / sizeof(FIELDS[0]))

/* One run of events of one subject in one bucket (and step). */
struct group {
	char subject[STORE_NAME_MAX + 1];
	int64_t bucket, step;
	int64_t first_id, last_id, first_ts, last_ts;
	size_t n;
	json_t *agg; /* the summary's details being built */
};

struct walk {
	const char *kind;
	int64_t cutoff, bucket_ms;
	struct group *open[OPEN_MAX];
	size_t nopen;
	struct group **done;
	size_t ndone, capdone;
	size_t scanned, budget;
	bool limited;     /* the budget is spent: there may be more */
	bool reached_new; /* met an event too young: nothing older is left */
	bool full;        /* OPEN_MAX subjects at once: stopped early */
	int err;
};

void retention_conf_default(struct retention_conf *c)
{
	c->full_resolution_ms = RETENTION_FULL_RESOLUTION_DEFAULT_MS;
	c->summary_interval_ms = RETENTION_SUMMARY_INTERVAL_DEFAULT_MS;
}

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;

	return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* An integral field, or NO_STEP when absent or not integral. */
static int64_t get_int(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);

	if (json_is_integer(v))
		return (int64_t)json_integer_value(v);
	return NO_STEP;
}

/* The object under key in o, created empty when absent; NULL when out of memory. */
static json_t *child(json_t *o, const char *key)
{
	json_t *c = json_object_get(o, key);

	if (json_is_object(c))
		return c;
	c = json_object();
	if (!c || json_object_set_new(o, key, c))
		return NULL;
	return c;
}

/* Sets o[key] = v (stolen); -ENOMEM on failure. */
static int set(json_t *o, const char *key, json_t *v)
{
	return !v || json_object_set_new(o, key, v) ? -ENOMEM : 0;
}

/*
 * Folds number v into the statistics object o[key] = {n, sum, min, max}.
 * Integers stay integers (sums of counts are exact); a real makes the sum
 * real.  Anything but a finite number is skipped.
 */
static int stat_add(json_t *o, const char *key, const json_t *v)
{
	json_t *s;
	const json_t *sum, *mn, *mx;
	double d;
	int rc = 0;

	if (!json_is_number(v) || !isfinite(json_number_value(v)))
		return 0;
	d = json_number_value(v);
	s = child(o, key);
	if (!s)
		return -ENOMEM;
	sum = json_object_get(s, "sum");
	mn = json_object_get(s, "min");
	mx = json_object_get(s, "max");
	rc |= set(s, "n", json_integer(json_integer_value(json_object_get(s, "n")) + 1));
	if (!sum)
		rc |= set(s, "sum", json_deep_copy(v));
	else if (json_is_integer(sum) && json_is_integer(v))
		rc |= set(s, "sum", json_integer(json_integer_value(sum) + json_integer_value(v)));
	else
		rc |= set(s, "sum", json_real(json_number_value(sum) + d));
	if (!mn || d < json_number_value(mn))
		rc |= set(s, "min", json_deep_copy(v));
	if (!mx || d > json_number_value(mx))
		rc |= set(s, "max", json_deep_copy(v));
	return rc;
}

/* Adds one interval event's details d to the aggregate. */
static int fold_interval(json_t *agg, const json_t *d)
{
	int64_t end = get_int(d, "interval_end_ms"), len = get_int(d, "interval_ms");
	int64_t lo = get_int(agg, "interval_start_ms"), hi = get_int(agg, "interval_end_ms");
	json_t *targets = child(agg, "targets");
	const char *tname;
	json_t *tv;
	int rc = 0;

	if (!targets)
		return -ENOMEM;
	if (end != NO_STEP) {
		int64_t start = len != NO_STEP ? end - len : end;

		if (lo == NO_STEP || start < lo)
			rc |= set(agg, "interval_start_ms", json_integer(start));
		if (hi == NO_STEP || end > hi)
			rc |= set(agg, "interval_end_ms", json_integer(end));
	}
	if (json_is_true(json_object_get(d, "bake")))
		rc |= set(agg, "bake", json_true());
	json_object_foreach((json_t *)json_object_get(d, "targets"), tname, tv)
	{
		json_t *t = child(targets, tname), *stats;
		const json_t *w = json_object_get(tv, "weight");

		if (!t || !(stats = child(t, "stats")))
			return -ENOMEM;
		rc |= set(t, "intervals",
		          json_integer(json_integer_value(json_object_get(t, "intervals")) + 1));
		if (json_is_number(w))
			rc |= set(t, "weight", json_deep_copy(w));
		if (json_is_true(json_object_get(tv, "historical_baseline")))
			rc |= set(t, "historical_baseline", json_true());
		for (size_t c = 0; c < 2; c++) {
			const json_t *co = json_object_get(tv, COHORTS[c]);
			json_t *sc = child(stats, COHORTS[c]);

			if (!sc)
				return -ENOMEM;
			for (size_t f = 0; f < NFIELDS; f++)
				rc |= stat_add(sc, FIELDS[f], json_object_get(co, FIELDS[f]));
		}
	}
	return rc;
}

/* Adds one verdict's details d to the aggregate. */
static int fold_verdict(json_t *agg, const json_t *d)
{
	const char *name = json_string_value(json_object_get(d, "check"));
	const char *outcome = json_string_value(json_object_get(d, "outcome"));
	int64_t end = get_int(d, "interval_end_ms"), cf = get_int(d, "consecutive_failures");
	json_t *checks = child(agg, "checks"), *c, *outs;
	int rc = 0;

	if (!checks || !(c = child(checks, name ? name : "?")) || !(outs = child(c, "outcomes")))
		return -ENOMEM;
	if (end != NO_STEP) {
		if (get_int(agg, "first_interval_end_ms") == NO_STEP)
			rc |= set(agg, "first_interval_end_ms", json_integer(end));
		rc |= set(agg, "interval_end_ms", json_integer(end));
	}
	rc |= set(c, "count", json_integer(json_integer_value(json_object_get(c, "count")) + 1));
	if (!outcome)
		outcome = "other";
	rc |= set(outs, outcome,
	          json_integer(json_integer_value(json_object_get(outs, outcome)) + 1));
	if (json_is_string(json_object_get(d, "metric")))
		rc |= set(c, "metric", json_deep_copy(json_object_get(d, "metric")));
	if (json_is_string(json_object_get(d, "target")))
		rc |= set(c, "target", json_deep_copy(json_object_get(d, "target")));
	if (cf != NO_STEP && cf > get_int(c, "max_consecutive_failures"))
		rc |= set(c, "max_consecutive_failures", json_integer(cf));
	rc |= stat_add(c, "observed", json_object_get(d, "observed"));
	rc |= stat_add(c, "canary_requests",
	               json_object_get(json_object_get(d, "canary"), "requests"));
	rc |= stat_add(c, "baseline_requests",
	               json_object_get(json_object_get(d, "baseline"), "requests"));
	return rc;
}

/*
 * The flat per-cohort values the evidence charts draw, from the stats:
 * counts summed, the error rate of the sums, latencies at their maximum
 * (so a spike survives the downsampling).
 */
static int flatten_interval(json_t *agg)
{
	const char *tname;
	json_t *t;
	int rc = 0;

	json_object_foreach(json_object_get(agg, "targets"), tname, t)
	{
		const json_t *stats = json_object_get(t, "stats");

		for (size_t c = 0; c < 2; c++) {
			const json_t *sc = json_object_get(stats, COHORTS[c]);
			const json_t *req = json_object_get(json_object_get(sc, "requests"), "sum");
			const json_t *err = json_object_get(json_object_get(sc, "errors"), "sum");
			json_t *flat = json_object();

			if (!flat || set(t, COHORTS[c], flat))
				return -ENOMEM;
			if (req)
				rc |= set(flat, "requests", json_deep_copy(req));
			if (err)
				rc |= set(flat, "errors", json_deep_copy(err));
			if (req && err && json_number_value(req) > 0)
				rc |=
				    set(flat, "error_rate",
				        json_real(json_number_value(err) / json_number_value(req)));
			else if (json_object_get(json_object_get(sc, "error_rate"), "max"))
				rc |= set(flat, "error_rate",
				          json_deep_copy(json_object_get(
				              json_object_get(sc, "error_rate"), "max")));
			for (size_t f = 3; f < NFIELDS; f++) {
				const json_t *mx =
				    json_object_get(json_object_get(sc, FIELDS[f]), "max");

				rc |= set(flat, FIELDS[f], mx ? json_deep_copy(mx) : json_null());
			}
			if (!json_object_get(flat, "error_rate"))
				rc |= set(flat, "error_rate", json_null());
		}
	}
	return rc;
}

static void group_free(struct group *g)
{
	if (!g)
		return;
	json_decref(g->agg);
	free(g);
}

static int close_group(struct walk *w, size_t i)
{
	struct group *g = w->open[i];

	if (w->ndone == w->capdone) {
		size_t ncap = w->capdone ? w->capdone * 2 : 16;
		struct group **p = realloc(w->done, ncap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		w->done = p;
		w->capdone = ncap;
	}
	w->done[w->ndone++] = g;
	w->open[i] = w->open[--w->nopen];
	return 0;
}

static int on_row(void *arg, int64_t id, int64_t ts_ms, const char *actor, const char *kind,
                  const char *subject, const char *details_json)
{
	struct walk *w = arg;
	json_t *d;
	struct group *g = NULL;
	int64_t bucket, step;
	size_t i;
	int rc;

	(void)actor;
	(void)kind;
	if (ts_ms >= w->cutoff) {
		w->reached_new = true;
		return 1;
	}
	if (w->scanned >= w->budget) {
		w->limited = true;
		return 1;
	}
	d = json_loads(details_json ? details_json : "{}", 0, NULL);
	if (!json_is_object(d)) {
		json_decref(d);
		d = json_object();
		if (!d) {
			w->err = -ENOMEM;
			return 1;
		}
	}
	bucket = floor_div(ts_ms, w->bucket_ms);
	step = get_int(d, "step");
	for (i = 0; i < w->nopen; i++)
		if (!strcmp(w->open[i]->subject, subject ? subject : ""))
			break;
	if (i < w->nopen) {
		g = w->open[i];
		if (g->bucket != bucket || g->step != step) {
			rc = close_group(w, i);
			if (rc)
				goto fail;
			g = NULL;
		}
	}
	if (!g) {
		if (w->nopen == OPEN_MAX) {
			w->full = true;
			json_decref(d);
			return 1;
		}
		g = calloc(1, sizeof(*g));
		if (!g || !(g->agg = json_object())) {
			free(g);
			rc = -ENOMEM;
			goto fail;
		}
		snprintf(g->subject, sizeof(g->subject), "%s", subject ? subject : "");
		g->bucket = bucket;
		g->step = step;
		g->first_id = id;
		g->first_ts = ts_ms;
		w->open[w->nopen++] = g;
	}
	g->last_id = id;
	g->last_ts = ts_ms;
	g->n++;
	w->scanned++;
	rc = !strcmp(w->kind, "verdict") ? fold_verdict(g->agg, d) : fold_interval(g->agg, d);
	if (rc)
		goto fail;
	json_decref(d);
	return 0;
fail:
	json_decref(d);
	w->err = rc;
	return 1;
}

/* The summary event's details text of g (malloc'd), or NULL when out of memory. */
static char *summary_text(const struct walk *w, struct group *g)
{
	json_t *agg = g->agg;
	int rc = 0;

	rc |= set(agg, "replaces",
	          json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "kind", w->kind, "count",
	                    (json_int_t)g->n, "first_id", (json_int_t)g->first_id, "last_id",
	                    (json_int_t)g->last_id, "first_ts_ms", (json_int_t)g->first_ts,
	                    "last_ts_ms", (json_int_t)g->last_ts));
	rc |= set(agg, "bucket_start_ms", json_integer(g->bucket * w->bucket_ms));
	rc |= set(agg, "bucket_ms", json_integer(w->bucket_ms));
	rc |= set(agg, "step", g->step == NO_STEP ? json_null() : json_integer(g->step));
	if (strcmp(w->kind, "verdict")) {
		int64_t lo = get_int(agg, "interval_start_ms"),
		        hi = get_int(agg, "interval_end_ms");

		if (lo != NO_STEP && hi != NO_STEP)
			rc |= set(agg, "interval_ms", json_integer(hi - lo));
		if (!json_object_get(agg, "bake"))
			rc |= set(agg, "bake", json_false());
		rc |= flatten_interval(agg);
	}
	if (rc)
		return NULL;
	return json_dumps(agg, JSON_COMPACT);
}

/* Writes g's summary and deletes what it replaces, in one transaction. */
static int write_group(struct store *st, const struct walk *w, struct group *g,
                       struct retention_stats *stats)
{
	const char *skind =
	    !strcmp(w->kind, "verdict") ? RETENTION_VERDICT_SUMMARY : RETENTION_INTERVAL_SUMMARY;
	char *text = summary_text(w, g);
	int rc;

	if (!text)
		return -ENOMEM;
	rc = store_begin(st);
	if (rc)
		goto out_free;
	rc = store_event_append(st, "canaryd", skind, g->subject, text, NULL);
	if (rc)
		goto out_rollback;
	rc = store_events_delete(st, w->kind, g->subject, g->first_id, g->last_id);
	if (rc < 0)
		goto out_rollback;
	/* the run is contiguous in (kind, subject): anything else means it changed under us */
	if ((size_t)rc != g->n) {
		rc = -EAGAIN;
		goto out_rollback;
	}
	rc = store_commit(st);
	if (rc)
		goto out_free;
	stats->replaced += g->n;
	stats->summaries++;
	goto out_free;
out_rollback:
	store_rollback(st);
out_free:
	free(text);
	return rc;
}

/* One kind: walk, then write.  1 when more is left, 0 when done, or an error. */
static int compact_kind(struct store *st, const char *kind, int64_t cutoff, int64_t bucket_ms,
                        size_t budget, struct retention_stats *stats)
{
	struct walk w = {.kind = kind, .cutoff = cutoff, .bucket_ms = bucket_ms, .budget = budget};
	struct store_events_query q = {.kind = kind};
	bool more;
	int rc, wrc = 0;

	rc = store_events_each(st, &q, on_row, &w);
	if (rc < 0)
		goto out;
	if (w.err) {
		rc = w.err;
		goto out;
	}
	stats->scanned += w.scanned;
	more = w.full || w.limited;
	/*
	 * A run still open at the end of a cut-short walk may go on past it:
	 * leave it for the next call - unless nothing else finished, so each
	 * call makes progress even when one run is longer than the budget.
	 */
	if (!more || w.ndone == 0)
		while (w.nopen)
			if ((rc = close_group(&w, w.nopen - 1)))
				goto out;
	for (size_t i = 0; i < w.ndone; i++) {
		int r = write_group(st, &w, w.done[i], stats);

		if (r && !wrc)
			wrc = r;
	}
	rc = wrc ? wrc : more ? 1 : 0;
out:
	for (size_t i = 0; i < w.nopen; i++)
		group_free(w.open[i]);
	for (size_t i = 0; i < w.ndone; i++)
		group_free(w.done[i]);
	free(w.done);
	return rc;
}

int retention_compact(struct store *st, int64_t now_ms, const struct retention_conf *c,
                      size_t max_events, struct retention_stats *stats)
{
	static const char *const KINDS[] = {"rollout.interval", "verdict"};
	struct retention_stats local = {0};
	int64_t cutoff;
	int rc, more = 0;

	if (!stats)
		stats = &local;
	memset(stats, 0, sizeof(*stats));
	if (!st || !c || c->full_resolution_ms <= 0 || c->summary_interval_ms <= 0)
		return -EINVAL;
	if (store_in_transaction(st))
		return STORE_ERR_TXN;
	if (max_events == 0)
		max_events = RETENTION_BATCH_DEFAULT;
	if (max_events > INT32_MAX)
		max_events = INT32_MAX;
	cutoff = floor_div(now_ms - c->full_resolution_ms, c->summary_interval_ms) *
	         c->summary_interval_ms;
	for (size_t k = 0; k < 2; k++) {
		size_t budget = max_events > stats->scanned ? max_events - stats->scanned : 0;

		if (budget == 0) {
			more = 1;
			break;
		}
		rc = compact_kind(st, KINDS[k], cutoff, c->summary_interval_ms, budget, stats);
		if (rc < 0)
			return rc;
		more |= rc;
	}
	return more;
}
