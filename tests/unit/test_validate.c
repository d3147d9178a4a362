/* Post-rollout validation windows (rollout/validate.h, issue 16): the
 * `validate:` key and its errors, the schedule from persisted times, trend
 * points, the document round trip, the report, and the engine driving the
 * windows with a fake backend and a fake clock: pass in order, resume after
 * a restart, a failure that notifies, a failure that reverts to the old
 * stable with the canary request sample. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "rollout/engine.h"
#include "rollout/validate.h"
#include "state/state.h"
#include "store/store.h"

#define T0 INT64_C(1714557600000) /* 2024-05-01T10:00:00Z */

static const char *common =
    "admin:\n"
    "  tokens: [{name: ops, secret: s1, scopes: [admin]}]\n"
    "services:\n"
    "  web: {versions: {v1: {endpoints: [127.0.0.1:7001]}, v2: {endpoints: [127.0.0.1:7002]}}, "
    "stable: v1}\n"
    "rollouts:\n"
    "  web-v2:\n"
    "    target: {service: web, canary: v2}\n"
    "    steps: [{weight: 50}, {weight: 100}]\n"
    "    analysis: {interval: 10s, checks: [{name: errors, metric: error_rate, max_increase: "
    "0.05, min_samples: 50";

/* An exec check (it cannot judge a stable) for the config tests; the engine's have none. */
static const char *with_exec = ", {name: hook, exec: [true], max: 1, require_evidence: false}";
static const char *extra = "";
static const char *errors_opts = ""; /* more keys of check errors */

static struct config *load(const char *validate, struct config_errors *errs)
{
	char yaml[4096], head[2048];
	int n;

	snprintf(head, sizeof(head), "%s%s}%s]}\n", common, errors_opts, extra);
	n = snprintf(yaml, sizeof(yaml), "%s    validate:\n%s", head, validate);

	assert_true(n > 0 && (size_t)n < sizeof(yaml));
	config_errors_init(errs);
	return config_load_string("t.yaml", yaml, (size_t)n, errs);
}

/* Every error line of loading validate contains want (one per entry, in order). */
static void expect_errors(const char *validate, const char *const *want, size_t n)
{
	struct config_errors errs;
	struct config *cfg = load(validate, &errs);
	char line[1024];

	assert_null(cfg);
	if (config_errors_count(&errs) != n)
		config_errors_print(&errs, stderr);
	assert_int_equal(config_errors_count(&errs), n);
	for (size_t i = 0; i < n; i++) {
		config_error_format(config_errors_get(&errs, i), line, sizeof(line));
		if (!strstr(line, want[i]))
			fail_msg("error %zu: \"%s\" lacks \"%s\"", i, line, want[i]);
	}
	config_errors_release(&errs);
}

static void test_config(void **state)
{
	struct config_errors errs;
	struct config *cfg;
	const struct config_rollout *r;

	(void)state;
	extra = with_exec;
	cfg = load(
	    "      - {name: day-1, for: 24h}\n"
	    "      - {name: week-1, after: 24h, for: 7d, on_fail: rollback}\n"
	    "      - {name: month-1, after: 8d, for: 30d, checks: [errors], on_fail: notify}\n",
	    &errs);
	if (!cfg)
		config_errors_print(&errs, stderr);
	assert_non_null(cfg);
	config_errors_release(&errs);
	r = &cfg->rollouts[0];
	assert_int_equal(r->nvalidate, 3);
	assert_string_equal(r->validate[1].name, "week-1");
	assert_int_equal(r->validate[1].after_ms, 24 * 3600000ULL);
	assert_int_equal(r->validate[1].for_ms, 7 * 86400000ULL);
	assert_int_equal(r->validate[0].on_fail, CONFIG_VALIDATE_NOTIFY); /* the default */
	assert_int_equal(r->validate[1].on_fail, CONFIG_VALIDATE_ROLLBACK);
	/* by default the checks that can judge a stable: the exec check cannot */
	assert_int_equal(r->validate[0].nchecks, 1);
	assert_int_equal(r->validate[0].checks[0], 0);
	config_free(cfg);

	expect_errors("      - {name: day-1, for: 24h}\n"
	              "      - {name: week-1, after: 24h, for: 7d}\n"
	              "      - {name: month-1, after: 7d, for: 30d}\n",
	              (const char *const[]){"rollouts.web-v2.validate[2].after: window \"month-1\" "
	                                    "would start at 7d, before validate[1] (\"week-1\") "
	                                    "ends at 8d"},
	              1);
	expect_errors(
	    "      - {name: a, for: 0s}\n"
	    "      - {name: b, after: -1h, for: 1h}\n",
	    (const char *const[]){"validate[0].for: must be more than 0", "validate[1].after:"}, 2);
	expect_errors("      - {name: a, for: 5s}\n",
	              (const char *const[]){"validate[0].for: must be at least analysis.interval"},
	              1);
	expect_errors("      - {name: a, for: 1h, checks: [nope, hook]}\n"
	              "      - {name: a, after: 1h, for: 1h, on_fail: pause}\n",
	              (const char *const[]){"validate[0].checks[0]: check \"nope\" is not defined",
	                                    "validate[0].checks[1]: check \"hook\" cannot judge",
	                                    "validate[1].on_fail: expected rollback or notify",
	                                    "validate[1].name: duplicate window name \"a\""},
	              4);
	expect_errors("      - {for: 1h, extra: 1}\n",
	              (const char *const[]){"validate[0].extra", "validate[0]"}, 2);
	extra = "";
}

/* ---- the model ---- */

static uint64_t halve(const void *arg, uint64_t ms)
{
	(void)arg;
	return ms / 2;
}

static void test_schedule_and_points(void **state)
{
	struct config_errors errs;
	struct config *cfg = load("      - {name: w1, for: 1h}\n"
	                          "      - {name: w2, after: 2h, for: 30m, on_fail: rollback}\n",
	                          &errs);
	struct validate_run v;
	struct validate_check *c;
	int64_t s, e;

	(void)state;
	assert_non_null(cfg);
	config_errors_release(&errs);
	assert_int_equal(validate_init(&v, &cfg->rollouts[0]), 0);
	assert_false(validate_holds(&v)); /* not begun */
	v.begun = true;
	v.completed_ms = T0;
	assert_int_equal(validate_current(&v), 0);
	validate_span(&v, 1, NULL, NULL, &s, &e);
	assert_int_equal(s, T0 + 2 * 3600000);
	assert_int_equal(e, T0 + 2 * 3600000 + 1800000);
	validate_span(&v, 1, halve, NULL, &s, &e); /* a rehearsal at speed 2 */
	assert_int_equal(s, T0 + 3600000);
	assert_int_equal(e, T0 + 3600000 + 900000);
	assert_true(validate_holds(&v)); /* w2 rolls back and has not run */
	v.w[0].state = VALIDATE_PASSED;
	assert_int_equal(validate_current(&v), 1);
	v.w[1].state = VALIDATE_FAILED;
	assert_int_equal(validate_current(&v), 2);
	assert_false(validate_holds(&v));

	/* 61 intervals: the trend keeps VALIDATE_POINTS, merging neighbours in pairs */
	c = &v.w[0].checks[0];
	for (int i = 0; i < VALIDATE_POINTS; i++)
		validate_point_add(c, T0 + i, i % 2 ? 0.2 : 0.1, i % 2 ? 300 : 100);
	assert_int_equal(c->npts, VALIDATE_POINTS);
	validate_point_add(c, T0 + 100, NAN, 0);
	assert_int_equal(c->npts, VALIDATE_POINTS / 2 + 1);
	assert_int_equal(c->stride, 2);
	assert_int_equal(c->pts[0].requests, 400);
	assert_int_equal(c->pts[0].intervals, 2);
	assert_true(fabs(c->pts[0].value - (0.1 * 100 + 0.2 * 300) / 400) < 1e-12);
	assert_int_equal(c->pts[0].end_ms, T0 + 1);
	validate_point_add(c, T0 + 101, 0.5, 10); /* joins the half-full last point */
	assert_int_equal(c->npts, VALIDATE_POINTS / 2 + 1);
	assert_true(fabs(c->pts[VALIDATE_POINTS / 2].value - 0.5) < 1e-12);
	assert_int_equal(c->pts[VALIDATE_POINTS / 2].intervals, 2);
	validate_release(&v);
	config_free(cfg);
}

static void fill_snapshot(struct metrics_cohort_snapshot *s, uint64_t req, uint64_t err,
                          uint64_t us)
{
	memset(s, 0, sizeof(*s));
	s->requests = req;
	s->errors = err;
	s->by_class[5] = err;
	s->by_class[2] = req - err;
	s->hist.counts[hist_index(us)] = req;
	s->hist.n = req;
	s->hist.sum_us = req * us;
}

static void test_doc_round_trip_and_report(void **state)
{
	struct config_errors errs;
	struct config *cfg = load("      - {name: w1, for: 1h, on_fail: rollback}\n"
	                          "      - {name: w2, after: 2h, for: 30m}\n",
	                          &errs);
	struct validate_run v, back;
	struct validate_check *c;
	json_t *doc, *doc2, *rep;
	char *a, *b, *md;

	(void)state;
	assert_non_null(cfg);
	config_errors_release(&errs);
	assert_int_equal(validate_init(&v, &cfg->rollouts[0]), 0);
	assert_int_equal(validate_init(&back, &cfg->rollouts[0]), 0);
	assert_null(validate_doc(&v)); /* not begun: nothing in the document */
	v.begun = true;
	v.completed_ms = T0;
	v.old_stable[0] = strdup("v1");
	v.new_stable[0] = strdup("v2");
	v.have_baseline[0] = true;
	fill_snapshot(&v.baseline[0], 2000, 10, 12000);
	v.w[0].state = VALIDATE_FAILED;
	v.w[0].started_ms = T0 + 5;
	v.w[0].ended_ms = T0 + 120000;
	v.w[0].looks = 3;
	snprintf(v.w[0].reason, sizeof(v.w[0].reason), "check errors failed: too | many");
	fill_snapshot(&v.w[0].cum[0], 900, 300, 20000);
	c = &v.w[0].checks[0];
	c->iv[CHECK_PASS] = 2;
	c->iv[CHECK_FAIL] = 1;
	c->fails = 1;
	c->first_fail_ms = T0 + 120000;
	c->failed = true;
	c->have_last = true;
	c->last = (struct check_verdict){.outcome = CHECK_FAIL,
	                                 .canary = 0.5,
	                                 .baseline = 0.005,
	                                 .observed = 0.495,
	                                 .canary_requests = 300,
	                                 .baseline_requests = 2000};
	snprintf(c->last.reason, sizeof(c->last.reason), "error_rate rose by 0.495");
	validate_point_add(c, T0 + 40000, 0.0, 300);
	validate_point_add(c, T0 + 80000, 0.0, 300);
	validate_point_add(c, T0 + 120000, 0.5, 300);
	v.w[1].state = VALIDATE_SKIPPED;
	v.reverted_by = 0;

	/* the document round trip keeps everything the engine resumes from */
	doc = validate_doc(&v);
	assert_non_null(doc);
	validate_parse(&back, doc);
	doc2 = validate_doc(&back);
	a = json_dumps(doc, JSON_SORT_KEYS | JSON_COMPACT);
	b = json_dumps(doc2, JSON_SORT_KEYS | JSON_COMPACT);
	assert_string_equal(a, b);
	assert_true(back.begun);
	assert_int_equal(back.reverted_by, 0);
	assert_string_equal(back.old_stable[0], "v1");
	assert_int_equal(back.w[0].cum[0].hist.counts[hist_index(20000)], 900);
	assert_int_equal(back.w[0].checks[0].npts, 3);
	assert_int_equal(back.w[1].state, VALIDATE_SKIPPED);
	free(a);
	free(b);
	json_decref(doc2);
	/* a malformed part leaves the run not begun, never a crash */
	json_object_set_new(doc, "begun", json_string("yes"));
	validate_parse(&back, doc);
	assert_false(back.begun);
	json_decref(doc);

	/* the report: numbers of both versions, per check, per interval, the chart */
	rep = validate_report_json(&v, 0, 40000);
	assert_string_equal(json_string_value(json_object_get(rep, "state")), "failed");
	md = validate_report_md("web-v2", rep);
	assert_non_null(md);
	assert_non_null(strstr(md, "# Validation window `w1` of rollout `web-v2`: failed"));
	assert_non_null(strstr(md, "on_fail: rollback"));
	assert_non_null(strstr(md, "**failed**: check errors failed: too \\| many"));
	/* new stable v2: 900 requests, 33.333% errors; pre-rollout v1: 2000, 0.500% */
	assert_non_null(strstr(md, "| web | v2 | 900 | 33.333% |"));
	assert_non_null(strstr(md, " v1 | 2000 | 0.500% |"));
	assert_non_null(strstr(md, "| errors | error_rate | **fail** | 50.000% | 0.500% | 300 / "
	                           "2000 | 2 / 1 / 0 / 0 | error_rate rose by 0.495 |"));
	assert_non_null(strstr(md, "[validation-w1-errors.svg](validation-w1-errors.svg)"));
	assert_non_null(strstr(md, "| 2024-05-01 10:02:00.000 UTC | 50.000% | 300 | 1 |"));
	free(md);
	json_decref(rep);
	validate_release(&v);
	validate_release(&back);
	config_free(cfg);
}

/* ---- the engine, with a fake backend ---- */

struct series {
	char ver[8];
	int cohort;
	struct metrics_cohort_snapshot s;
};

static struct fake {
	int64_t now;
	struct series series[8];
	int nseries;
	uint32_t weight;
	char stable[8];
	int stable_calls, sample_calls;
	json_t *notified; /* kinds */
} F;

static struct metrics_cohort_snapshot *series(const char *ver, int cohort)
{
	for (int i = 0; i < F.nseries; i++)
		if (!strcmp(F.series[i].ver, ver) && F.series[i].cohort == cohort)
			return &F.series[i].s;
	assert_true(F.nseries < 8);
	snprintf(F.series[F.nseries].ver, sizeof(F.series[0].ver), "%s", ver);
	F.series[F.nseries].cohort = cohort;
	return &F.series[F.nseries++].s;
}

static void add(const char *ver, int cohort, uint64_t req, uint64_t err)
{
	struct metrics_cohort_snapshot *s = series(ver, cohort);

	s->requests += req;
	s->errors += err;
	s->hist.counts[hist_index(10000)] += req;
	s->hist.n += req;
	s->hist.sum_us += req * 10000;
}

static int fake_set(void *ctx, const char *svc, const char *canary, uint32_t w, const char *actor)
{
	(void)ctx, (void)svc, (void)canary, (void)actor;
	F.weight = w;
	return 0;
}

static int fake_set_stable(void *ctx, const char *svc, const char *ver, const char *actor)
{
	(void)ctx, (void)svc, (void)actor;
	F.stable_calls++;
	snprintf(F.stable, sizeof(F.stable), "%s", ver);
	return 0;
}

static const char *fake_stable_of(void *ctx, const char *svc)
{
	(void)ctx, (void)svc;
	return F.stable[0] ? F.stable : NULL;
}

static int fake_read(void *ctx, const char *svc, const char *ver, enum cohort c,
                     struct metrics_cohort_snapshot *out)
{
	(void)ctx, (void)svc;
	*out = *series(ver, c);
	return 0;
}

static int64_t fake_now(void *ctx)
{
	(void)ctx;
	return F.now;
}

static void fake_notify(void *ctx, const char *kind, const char *rollout, const json_t *d)
{
	(void)ctx, (void)rollout, (void)d;
	json_array_append_new(F.notified, json_string(kind));
}

static json_t *fake_samples(void *ctx, const char *svc, const char *ver, int max)
{
	(void)ctx;
	F.sample_calls++;
	assert_string_equal(svc, "web");
	assert_true(max > 0);
	return json_pack("[{s:s, s:s, s:s, s:i, s:f, s:I}]", "request_id", "req-1", "method", "GET",
	                 "path", "/x", "status", 500, "latency_ms", 1.5, "time_ms",
	                 (json_int_t)F.now);
	(void)ver;
}

struct env {
	struct config *cfg;
	struct store *st;
	struct state *state;
	struct rollout_engine *e;
	struct rollout_backend be;
};

static void env_open(struct env *v, const char *validate)
{
	struct config_errors errs;

	json_decref(F.notified);
	memset(&F, 0, sizeof(F));
	F.notified = json_array();
	F.now = T0;
	memset(v, 0, sizeof(*v));
	v->cfg = load(validate, &errs);
	if (!v->cfg)
		config_errors_print(&errs, stderr);
	assert_non_null(v->cfg);
	config_errors_release(&errs);
	v->st = store_open("sqlite::memory:", NULL, 0);
	assert_non_null(v->st);
	v->state = state_new(v->st);
	assert_non_null(v->state);
	v->be = (struct rollout_backend){.set_weight = fake_set,
	                                 .set_stable = fake_set_stable,
	                                 .stable_of = fake_stable_of,
	                                 .read_cohort = fake_read,
	                                 .now_ms = fake_now,
	                                 .notify = fake_notify,
	                                 .samples = fake_samples,
	                                 .state = v->state};
	v->e = rollout_engine_new(v->cfg, &v->be);
	assert_non_null(v->e);
	assert_int_equal(rollout_engine_load(v->e, F.now), 0);
}

static void env_restart(struct env *v)
{
	rollout_engine_free(v->e);
	v->e = rollout_engine_new(v->cfg, &v->be);
	assert_non_null(v->e);
	assert_int_equal(rollout_engine_load(v->e, F.now), 0);
}

static void env_close(struct env *v)
{
	rollout_engine_free(v->e);
	state_free(v->state);
	store_close(v->st);
	config_free(v->cfg);
	json_decref(F.notified);
	F.notified = NULL;
}

/*
 * seconds of one tick a second: before completion the canary v2 and the
 * baseline v1 each get req requests a second (v2 with cerr errors); after
 * it, v2 (then stable) gets them.
 */
static void drive(struct env *v, int seconds, uint64_t req, uint64_t cerr)
{
	for (int i = 0; i < seconds; i++) {
		if (rollout_engine_state(v->e, "web-v2") == ROLLOUT_COMPLETED) {
			add(F.stable[0] ? F.stable : "v1", COHORT_STABLE, req, cerr);
		} else {
			add("v2", COHORT_CANARY, req, cerr);
			add("v1", COHORT_BASELINE, req, req / 200);
		}
		F.now += 1000;
		rollout_engine_tick(v->e, F.now);
	}
}

static json_t *win(struct env *v, size_t i)
{
	json_t *o = rollout_engine_validation(v->e, "web-v2"), *w;

	assert_non_null(o);
	w = json_incref(json_array_get(json_object_get(o, "windows"), i));
	json_decref(o);
	assert_non_null(w);
	return w;
}

static const char *wstate(struct env *v, size_t i)
{
	static char s[32];
	json_t *w = win(v, i);

	snprintf(s, sizeof(s), "%s", json_string_value(json_object_get(w, "state")));
	json_decref(w);
	return s;
}

static int64_t wint(struct env *v, size_t i, const char *key)
{
	json_t *w = win(v, i);
	int64_t x = (int64_t)json_integer_value(json_object_get(w, key));

	json_decref(w);
	return x;
}

static int count_events(struct env *v, const char *kind, json_t **last)
{
	json_t *arr, *x;
	size_t i;
	int n = 0;

	assert_int_equal(store_events_list(v->st, 0, 1000, "rollout/web-v2", &arr), 0);
	if (last)
		*last = NULL;
	json_array_foreach(arr, i, x)
	{
		if (strcmp(json_string_value(json_object_get(x, "kind")), kind) != 0)
			continue;
		n++;
		if (last) {
			json_decref(*last);
			*last = json_deep_copy(json_object_get(x, "details"));
		}
	}
	json_decref(arr);
	return n;
}

/* Start and drive the rollout to its completion (both steps need evidence). */
static void complete(struct env *v)
{
	char msg[256];

	assert_int_equal(
	    rollout_engine_control(v->e, "web-v2", ROLLOUT_START, "ops", F.now, msg, sizeof(msg)),
	    0);
	for (int i = 0; i < 120 && rollout_engine_state(v->e, "web-v2") != ROLLOUT_COMPLETED; i++)
		drive(v, 1, 100, 0);
	assert_int_equal(rollout_engine_state(v->e, "web-v2"), ROLLOUT_COMPLETED);
	drive(v, 1, 100, 0); /* finalized: v2 is the stable */
	assert_string_equal(F.stable, "v2");
}

static void test_windows_pass_in_order_and_resume(void **state)
{
	struct env v;
	json_t *d, *o;
	int64_t done, started;

	(void)state;
	env_open(&v, "      - {name: w1, for: 60s, on_fail: rollback}\n"
	             "      - {name: w2, after: 90s, for: 30s}\n");
	complete(&v);
	assert_int_equal(count_events(&v, "rollout.validation.scheduled", &d), 1);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(json_object_get(d, "targets"), "web"),
	                                      "old_stable")),
	    "v1");
	json_decref(d);
	o = rollout_engine_validation(v.e, "web-v2");
	done = (int64_t)json_integer_value(json_object_get(o, "completed_ms"));
	assert_true(json_is_true(json_object_get(o, "holds_service")));
	json_decref(o);
	/* the service is held while w1 (on_fail: rollback) is ahead */
	assert_string_equal(rollout_engine_owner(v.e, "web"), "web-v2");
	assert_string_equal(wstate(&v, 0), "running");
	started = wint(&v, 0, "started_ms");
	assert_true(started >= done && started <= done + 2000);
	drive(&v, 25, 100, 0);
	/* a crash mid-window: the window resumes from its persisted start */
	env_restart(&v);
	drive(&v, 12, 100, 0); /* re-primes, then judges again */
	assert_string_equal(wstate(&v, 0), "running");
	assert_int_equal(wint(&v, 0, "started_ms"), started);
	assert_int_equal(wint(&v, 0, "ends_ms"), done + 60000);
	drive(&v, 28, 100, 0);
	assert_string_equal(wstate(&v, 0), "passed");
	assert_int_equal(wint(&v, 0, "ended_ms"), done + 60000); /* at its scheduled end */
	assert_null(rollout_engine_owner(v.e, "web"));           /* no rollback window left */
	assert_string_equal(wstate(&v, 1), "pending");
	drive(&v, 30, 100, 0); /* w2 starts at completion + 90 s */
	assert_string_equal(wstate(&v, 1), "running");
	assert_int_equal(wint(&v, 1, "started_ms"), done + 90000);
	drive(&v, 31, 100, 0);
	assert_string_equal(wstate(&v, 1), "passed");
	assert_int_equal(count_events(&v, "rollout.validation.started", NULL), 2);
	assert_int_equal(count_events(&v, "rollout.validation.passed", &d), 2);
	assert_string_equal(json_string_value(json_object_get(d, "window")), "w2");
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(d, "report"), "state")), "passed");
	json_decref(d);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_COMPLETED);
	assert_int_equal(F.stable_calls, 1); /* never reverted */
	o = win(&v, 0);
	assert_non_null(strstr(json_string_value(json_object_get(o, "report_md")), "**passed**"));
	json_decref(o);
	env_close(&v);
}

static void test_failure_notifies_and_the_next_window_runs(void **state)
{
	struct env v;
	json_t *d;
	size_t i;
	bool seen = false;

	(void)state;
	env_open(&v, "      - {name: w1, for: 60s}\n"
	             "      - {name: w2, after: 60s, for: 30s}\n");
	complete(&v);
	assert_null(rollout_engine_owner(v.e, "web")); /* notify only: nothing held */
	drive(&v, 15, 100, 30);                        /* the new stable turns bad */
	assert_string_equal(wstate(&v, 0), "failed");
	assert_int_equal(count_events(&v, "rollout.validation.failed", &d), 1);
	assert_non_null(
	    strstr(json_string_value(json_object_get(d, "reason")), "check errors failed"));
	json_decref(d);
	json_array_foreach(F.notified, i, d) seen =
	    seen || !strcmp(json_string_value(d), "rollout.validation.failed");
	assert_true(seen);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_COMPLETED);
	assert_int_equal(F.stable_calls, 1);
	drive(&v, 50, 100, 0);
	assert_string_equal(wstate(&v, 1), "running");
	env_close(&v);
}

static void test_failure_reverts_to_the_old_stable(void **state)
{
	struct env v;
	json_t *d, *o;

	(void)state;
	env_open(&v, "      - {name: day-1, for: 60s, on_fail: rollback}\n"
	             "      - {name: week-1, after: 60s, for: 60s, on_fail: rollback}\n");
	complete(&v);
	drive(&v, 15, 100, 30);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_ROLLED_BACK);
	assert_string_equal(F.stable, "v1"); /* the old stable, kept warm, is back */
	assert_int_equal(count_events(&v, "rollout.rollback", &d), 1);
	assert_string_equal(json_string_value(json_object_get(d, "class")), "validation");
	assert_non_null(strstr(json_string_value(json_object_get(d, "reason")),
	                       "validation window day-1 failed: check errors failed"));
	json_decref(d);
	/* the canary's last requests are in the evidence */
	assert_int_equal(count_events(&v, "rollout.canary_requests", &d), 1);
	assert_string_equal(
	    json_string_value(json_object_get(
	        json_array_get(
	            json_object_get(json_object_get(json_object_get(d, "targets"), "web"),
	                            "requests"),
	            0),
	        "request_id")),
	    "req-1");
	json_decref(d);
	o = rollout_engine_validation(v.e, "web-v2");
	assert_string_equal(json_string_value(json_object_get(o, "reverted_by")), "day-1");
	json_decref(o);
	assert_string_equal(wstate(&v, 0), "failed");
	assert_string_equal(wstate(&v, 1), "skipped");
	/* a restart re-applies the revert, not the new stable */
	env_restart(&v);
	drive(&v, 5, 100, 0);
	assert_string_equal(F.stable, "v1");
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_ROLLED_BACK);
	env_close(&v);
}

/* A rehearsal divides the windows like every other duration (rollout_dur()). */
static void test_rehearsal_divides_the_windows(void **state)
{
	struct env v;
	char msg[256];
	json_t *o;
	int64_t done;

	(void)state;
	env_open(&v, "      - {name: w1, for: 600s}\n"
	             "      - {name: w2, after: 1200s, for: 300s}\n");
	assert_int_equal(rollout_engine_start(v.e, "web-v2", 10.0, "ops", F.now, msg, sizeof(msg)),
	                 0);
	for (int i = 0; i < 120 && rollout_engine_state(v.e, "web-v2") != ROLLOUT_COMPLETED; i++)
		drive(&v, 1, 100, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_COMPLETED);
	o = rollout_engine_validation(v.e, "web-v2");
	done = (int64_t)json_integer_value(json_object_get(o, "completed_ms"));
	json_decref(o);
	assert_int_equal(wint(&v, 0, "ends_ms"), done + 60000);    /* 600 s / 10 */
	assert_int_equal(wint(&v, 1, "starts_ms"), done + 120000); /* 1200 s / 10 */
	assert_int_equal(wint(&v, 1, "ends_ms"), done + 150000);
	drive(&v, 61, 100, 0);
	assert_string_equal(wstate(&v, 0), "passed");
	drive(&v, 90, 100, 0);
	assert_string_equal(wstate(&v, 1), "passed");
	assert_int_equal(wint(&v, 1, "ended_ms"), done + 150000);
	env_close(&v);
}

/* A failing check that pauses (not a rollback) keeps the canary's last requests too. */
static void test_pause_keeps_the_canary_sample(void **state)
{
	struct env v;
	char msg[256];
	json_t *d;

	(void)state;
	errors_opts = ", on_fail: pause";
	env_open(&v, "      - {name: w1, for: 60s}\n");
	errors_opts = "";
	assert_int_equal(
	    rollout_engine_control(v.e, "web-v2", ROLLOUT_START, "ops", F.now, msg, sizeof(msg)),
	    0);
	for (int i = 0; i < 30 && rollout_engine_state(v.e, "web-v2") != ROLLOUT_PAUSED; i++)
		drive(&v, 1, 100, 30);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PAUSED);
	assert_int_equal(count_events(&v, "rollout.canary_requests", &d), 1);
	assert_int_equal(F.sample_calls, 1);
	assert_string_equal(json_string_value(json_object_get(
	                        json_object_get(json_object_get(d, "targets"), "web"), "version")),
	                    "v2");
	json_decref(d);
	assert_int_equal(count_events(&v, "rollout.rollback", NULL), 0);
	env_close(&v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_config),
	    cmocka_unit_test(test_schedule_and_points),
	    cmocka_unit_test(test_doc_round_trip_and_report),
	    cmocka_unit_test(test_windows_pass_in_order_and_resume),
	    cmocka_unit_test(test_failure_notifies_and_the_next_window_runs),
	    cmocka_unit_test(test_failure_reverts_to_the_old_stable),
	    cmocka_unit_test(test_rehearsal_divides_the_windows),
	    cmocka_unit_test(test_pause_keeps_the_canary_sample),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
