/* The evidence bundle from synthetic event lists: the summary of a rollback
 * (reason, TTD, TTM, the deciding verdict, hooks, placeholders), the SVG
 * charts (shape, gaps, markers, escaping, xmllint when present), the latest
 * run only after a retry, tolerance of odd events, and writing the
 * directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <malloc.h>
#include <sys/time.h>

#include "config/config.h"
#include "rollout/evidence.h"
#include "rollout/retention.h"
#include "store/store.h"

#define T0  INT64_C(1714557600000) /* 2024-05-01T10:00:00Z */
#define SEC INT64_C(1000)

#define XMLLINT "/usr/bin/xmllint"

/* --- building events the way store_events_list returns them ------------------------- */

static json_t *events_new(void)
{
	json_t *a = json_array();

	assert_non_null(a);
	return a;
}

static void ts_of(int64_t ms, char *b, size_t n)
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	char date[32];

	gmtime_r(&secs, &tm);
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(b, n, "%s.%03dZ", date, (int)(ms % 1000));
}

/* The ms of a ts written by ts_of(). */
static int64_t parse_ts_for_test(const char *s)
{
	struct tm tm;
	int ms = 0;

	memset(&tm, 0, sizeof(tm));
	assert_non_null(s);
	assert_int_equal(sscanf(s, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
	                        &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms),
	                 7);
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm) * 1000 + ms;
}

/* Appends {"id","ts","actor","kind","subject","details"}; details is stolen. */
static void add(json_t *evs, int64_t ms, const char *kind, json_t *details)
{
	char ts[40];
	json_t *e;

	ts_of(ms, ts, sizeof(ts));
	e = json_pack("{s:I, s:s, s:s, s:s, s:s, s:o}", "id", (json_int_t)json_array_size(evs) + 1,
	              "ts", ts, "actor", "canaryd", "kind", kind, "subject", "rollout/web",
	              "details", details ? details : json_object());
	assert_non_null(e);
	assert_int_equal(json_array_append_new(evs, e), 0);
}

static json_t *num(double v)
{
	return v < 0 ? json_null() : json_real(v);
}

/* One cohort of a rollout.interval; rate/p99 < 0 mean null (no requests). */
static json_t *cohort(int64_t req, int64_t err, double rate, double p99)
{
	return json_pack("{s:I, s:I, s:o, s:o, s:o, s:o}", "requests", (json_int_t)req, "errors",
	                 (json_int_t)err, "error_rate", num(rate), "p50_ms",
	                 num(p99 < 0 ? -1 : p99 / 4), "p99_ms", num(p99), "mean_ms",
	                 num(p99 < 0 ? -1 : p99 / 3));
}

static void interval(json_t *evs, int64_t end, int step, const char *target, double weight,
                     json_t *canary, json_t *baseline)
{
	json_t *t = json_pack("{s:{s:f, s:o, s:o}}", target, "weight", weight, "canary", canary,
	                      "baseline", baseline);

	assert_non_null(t);
	add(evs, end, "rollout.interval",
	    json_pack("{s:I, s:I, s:i, s:o}", "interval_end_ms", (json_int_t)end, "interval_ms",
	              (json_int_t)60000, "step", step, "targets", t));
}

static json_t *verdict_json(const char *outcome, double cv, int64_t creq, double bv, int64_t breq,
                            const char *bound, double bound_value, double observed,
                            const char *reason)
{
	return json_pack("{s:s, s:s, s:s, s:{s:o, s:I}, s:{s:o, s:I}, s:i, s:I, s:s, s:o, s:o, "
	                 "s:s}",
	                 "check", "error-rate", "metric", "error_rate", "outcome", outcome,
	                 "canary", "value", num(cv), "requests", (json_int_t)creq, "baseline",
	                 "value", num(bv), "requests", (json_int_t)breq, "min_samples", 200,
	                 "interval_ms", (json_int_t)60000, "bound", bound, "bound_value",
	                 bound_value < 0 ? json_null() : json_real(bound_value), "observed",
	                 observed < 0 ? json_null() : json_real(observed), "reason", reason);
}

static void verdict(json_t *evs, int64_t end, int step, const char *outcome, double cv,
                    int64_t creq, double bv, int64_t breq, int fails)
{
	json_t *d = verdict_json(outcome, cv, creq, bv, breq, "none", -1, -1, "some sentence");

	json_object_set_new(d, "target", json_string("web"));
	json_object_set_new(d, "step", json_integer(step));
	json_object_set_new(d, "interval_end_ms", json_integer(end));
	json_object_set_new(d, "consecutive_failures", json_integer(fails));
	add(evs, end, "verdict", d);
}

static void step(json_t *evs, int64_t ms, int idx, int of, const char *target, double weight)
{
	add(evs, ms, "rollout.step",
	    json_pack("{s:i, s:i, s:s, s:{s:f}, s:[]}", "step", idx, "of", of, "kind", "set",
	              "weights", target, weight, "skipped"));
}

#define REASON "canary error_rate 0.0800 is 8.00x the baseline's 0.0100, above max_ratio 2"

/*
 * A rollout that rolls back: steps 1% and 5%, five intervals with the
 * canary's error rate rising (one interval without canary requests),
 * verdicts, a rollback with TTD, mitigated with TTM in µs, a hook, verify.
 */
static json_t *rollback_scenario(void)
{
	json_t *evs = events_new();

	add(evs, T0, "rollout.started", json_pack("{s:i, s:i}", "generation", 1, "steps", 4));
	step(evs, T0, 0, 4, "web", 1.0);
	interval(evs, T0 + 60 * SEC, 0, "web", 1.0, cohort(1000, 5, 0.005, 80),
	         cohort(99000, 495, 0.005, 75));
	verdict(evs, T0 + 60 * SEC, 0, "pass", 0.005, 1000, 0.005, 99000, 0);
	interval(evs, T0 + 120 * SEC, 0, "web", 1.0, cohort(1000, 6, 0.006, 85),
	         cohort(99000, 495, 0.005, 75));
	verdict(evs, T0 + 120 * SEC, 0, "pass", 0.006, 1000, 0.005, 99000, 0);
	add(evs, T0 + 120 * SEC, "rollout.step.passed",
	    json_pack("{s:i, s:s, s:s}", "step", 0, "kind", "set", "how", "held"));
	step(evs, T0 + 120 * SEC, 1, 4, "web", 5.0);
	interval(evs, T0 + 180 * SEC, 1, "web", 5.0, cohort(0, 0, -1, -1),
	         cohort(95000, 950, 0.01, 76));
	verdict(evs, T0 + 180 * SEC, 1, "inconclusive", -1, 0, 0.01, 95000, 0);
	interval(evs, T0 + 240 * SEC, 1, "web", 5.0, cohort(1100, 33, 0.03, 120),
	         cohort(24000, 240, 0.01, 76));
	verdict(evs, T0 + 240 * SEC, 1, "fail", 0.03, 1100, 0.01, 24000, 1);
	interval(evs, T0 + 300 * SEC, 1, "web", 5.0, cohort(1200, 96, 0.08, 200),
	         cohort(24000, 240, 0.01, 78));
	verdict(evs, T0 + 300 * SEC, 1, "fail", 0.08, 1200, 0.01, 24000, 2);
	add(evs, T0 + 300 * SEC, "rollout.rollback",
	    json_pack("{s:s, s:s, s:[s], s:b, s:i, s:I, s:I, s:I, s:o, s:i, s:I}", "reason", REASON,
	              "class", "check", "targets", "web", "all", 1, "step", 1, "decision_ms",
	              (json_int_t)(T0 + 300 * SEC), "first_failing_interval_start_ms",
	              (json_int_t)(T0 + 180 * SEC), "time_to_detect_ms", (json_int_t)120000,
	              "verdict",
	              verdict_json("fail", 0.08, 1200, 0.01, 24000, "max_ratio", 2.0, 8.0, REASON),
	              "hooks", 2, "drain_ms", (json_int_t)30000));
	add(evs, T0 + 300 * SEC, "rollout.mitigated",
	    json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "decision_ms",
	              (json_int_t)(T0 + 300 * SEC), "applied_ms", (json_int_t)(T0 + 300 * SEC),
	              "time_to_mitigate_us", (json_int_t)12345, "persist_us", (json_int_t)2100,
	              "publish_us", (json_int_t)245, "workers_us", (json_int_t)10000,
	              "all_workers_confirmed", 1));
	add(evs, T0 + 301 * SEC, "rollout.drained",
	    json_pack("{s:i, s:i, s:b, s:i}", "duration_ms", 800, "limit_ms", 30000,
	              "in_flight_known", 1, "in_flight_left", 0));
	add(evs, T0 + 301 * SEC, "rollout.hook.started",
	    json_pack("{s:i, s:s, s:s}", "index", 0, "kind", "exec", "target", "web"));
	add(evs, T0 + 302 * SEC, "rollout.hook",
	    json_pack("{s:i, s:s, s:s, s:s, s:i, s:i, s:s}", "index", 0, "kind", "exec", "target",
	              "web", "status", "ok", "duration_ms", 850, "exit_code", 0, "output",
	              "purged | cache <ok>"));
	/* the second hook was started and never reported (a crash, say) */
	add(evs, T0 + 302 * SEC, "rollout.hook.started",
	    json_pack("{s:i, s:s, s:s}", "index", 1, "kind", "webhook", "target", "web"));
	add(evs, T0 + 307 * SEC, "rollout.verified",
	    json_pack("{s:s, s:b, s:s, s:i, s:i}", "result", "passed", "passed", 1, "reason",
	              "baseline healthy", "duration_ms", 5000, "intervals", 5));
	add(evs, T0 + 307 * SEC, "rollout.evidence",
	    json_pack("{s:s}", "path", "/var/lib/canaryd/evidence/web-1"));
	add(evs, T0 + 307 * SEC, "rollout.rollback.finished",
	    json_pack("{s:s, s:i, s:i, s:s, s:i}", "reason", REASON, "hooks_ok", 1, "hooks_failed",
	              0, "verify", "passed", "duration_ms", 7000));
	return evs;
}

static const char *file(const json_t *bundle, const char *name)
{
	const char *s = json_string_value(json_object_get(json_object_get(bundle, "files"), name));

	assert_non_null(s);
	return s;
}

static void contains(const char *hay, const char *needle)
{
	if (!strstr(hay, needle)) {
		print_error("missing: %s\n--- in ---\n%s\n", needle, hay);
		fail();
	}
}

static void lacks(const char *hay, const char *needle)
{
	if (strstr(hay, needle)) {
		print_error("unexpected: %s\n--- in ---\n%s\n", needle, hay);
		fail();
	}
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && !strcmp(s + a - b, suffix);
}

static void svg_shape(const char *svg)
{
	assert_true(!strncmp(svg, "<svg", 4));
	assert_true(ends_with(svg, "</svg>\n"));
	assert_int_equal(count(svg, "<svg"), 1);
	assert_int_equal(count(svg, "</svg>"), 1);
}

/* Runs xmllint on text when it is installed; a skipped check passes. */
static void xml_parses(const char *text)
{
	char path[] = "/tmp/evidence-svg-XXXXXX", cmd[128];
	FILE *f;
	int fd;

	if (access(XMLLINT, X_OK) != 0)
		return;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	snprintf(cmd, sizeof(cmd), XMLLINT " --noout %s", path);
	assert_int_equal(system(cmd), 0);
	unlink(path);
}

/* --- tests --------------------------------------------------------------------------- */

static void test_rollback_summary(void **state)
{
	json_t *evs = rollback_scenario(), *b;
	const char *md;

	(void)state;
	b = evidence_build("web", evs, NULL, "rollouts: []\n", T0 + 400 * SEC);
	assert_non_null(b);
	md = file(b, "summary.md");

	contains(md, "# Rollout web: rolled back\n");
	contains(md, "## What happened\n\nRollout `web` (run 1) started at 2024-05-01 "
	             "10:00:00.000 UTC by canaryd and ended at 2024-05-01 10:05:00.000 UTC: "
	             "**rolled back** after 5m 00s (300000 ms).");
	contains(md, "It reached step 2 of 4 (last weight 5%).");
	/* the timeline: steps, rollback, mitigated, hook, verify; no verdicts or intervals */
	contains(md, "| time (UTC) | event | detail |\n|---|---|---|\n");
	contains(md, "| 2024-05-01 10:00:00.000 | rollout.step | step 1 of 4 (set): 1% |\n");
	contains(md, "| 2024-05-01 10:02:00.000 | rollout.step | step 2 of 4 (set): 5% |\n");
	contains(md, "| 2024-05-01 10:05:00.000 | rollout.rollback | " REASON " (check); targets "
	             "web |\n");
	contains(md, "| 2024-05-01 10:05:00.000 | rollout.mitigated | traffic off the canary "
	             "(12.3 ms after the decision) |\n");
	contains(md, "| 2024-05-01 10:05:01.000 | rollout.drained | drained in 800 ms (limit "
	             "30000 ms) |\n");
	contains(md, "| 2024-05-01 10:05:01.000 | rollout.hook.started | hook #0 exec on web "
	             "started |\n");
	contains(md, "| 2024-05-01 10:05:02.000 | rollout.hook | hook #0 exec on web: ok in 850 "
	             "ms, exit 0 |\n");
	contains(md, "| rollout.verified | passed in 5000 ms (5 intervals): baseline healthy |");
	contains(md, "| rollout.evidence | bundle written to /var/lib/canaryd/evidence/web-1 |");
	contains(md, "| rollout.rollback.finished | rollback finished 7.0 s after the decision; "
	             "hooks 1 ok, 0 failed; verify passed |");
	lacks(md, "| verdict |");
	lacks(md, "rollout.interval");
	lacks(md, "rollout.step.passed");

	/* the rollback: reason, deciding verdict, TTD, TTM, hooks */
	contains(md, "## Rollback\n\n**Reason:** " REASON "\n\n");
	contains(md, "Decided at 2024-05-01 10:05:00.000 UTC by canaryd (check) during step 2; "
	             "targets web.\n");
	contains(md, "**Deciding verdict:** check `error-rate` on `error_rate` (target `web`): "
	             "fail, 2 consecutive failing intervals.");
	contains(md, "| cohort | value | requests |\n|---|---|---|\n"
	             "| canary | 0.0800 | 1200 |\n| baseline | 0.0100 | 24000 |\n");
	contains(md, "Bound `max_ratio` = 2, observed 8 (min_samples 200, interval 60000 ms).");
	contains(md, "- **Time to detect:** 120000 ms (2m 00s), from the start of the first "
	             "failing interval (2024-05-01 10:03:00.000 UTC) to the decision.\n");
	contains(md, "- **Time to mitigate:** 12.3 ms, from the decision until no worker routes "
	             "new requests to the canary (persist 2.1 ms, publish 0.2 ms, workers 10.0 "
	             "ms).\n");
	contains(md, "- **Drain:** 800 ms (limit 30000 ms); 0 requests still in flight.\n");
	contains(md, "- **Verify:** passed in 5000 ms: baseline healthy.\n");
	contains(md, "- **Finished:** 7.0 s after the decision.\n");
	/* hook results (the output escaped), and a hook that started but never reported */
	contains(md, "**Hooks:**\n\n| # | kind | status | duration | result |\n"
	             "|---|---|---|---|---|\n"
	             "| 0 | exec on web | ok | 850 ms | exit 0; output: purged \\| cache "
	             "&lt;ok&gt; |\n"
	             "| 1 | webhook on web | started, no result | — | — |\n\n");

	/* verdict counts per check */
	contains(md, "| check | pass | fail | inconclusive | error |\n|---|---|---|---|---|\n"
	             "| error-rate | 2 | 2 | 1 | 0 |\n");
	contains(md, "## Impact\n\n_to be filled_\n\n## Root cause\n\n_to be filled_\n\n"
	             "## Action items\n\n_to be filled_\n");
	contains(md, "![canary vs baseline error rate](error_rate.svg)");

	/* the other members */
	assert_string_equal(json_string_value(json_object_get(b, "rollout")), "web");
	assert_string_equal(json_string_value(json_object_get(b, "state")), "rolled_back");
	assert_int_equal(json_integer_value(json_object_get(b, "generated_ms")), T0 + 400 * SEC);
	assert_true(json_is_null(json_object_get(b, "live")));
	assert_true(json_equal(json_object_get(b, "events"), evs));
	assert_int_equal(json_array_size(json_object_get(b, "verdicts")), 5);
	assert_string_equal(file(b, "config.yaml"), "rollouts: []\n");
	json_decref(b);
	json_decref(evs);
}

static void test_verdicts_and_series(void **state)
{
	json_t *evs = rollback_scenario(), *b, *v, *s, *row, *parsed;

	(void)state;
	b = evidence_build("web", evs, NULL, NULL, T0);
	assert_non_null(b);
	v = json_object_get(b, "verdicts");
	assert_int_equal(json_array_size(v), 5);
	row = json_array_get(v, 4);
	assert_string_equal(json_string_value(json_object_get(row, "outcome")), "fail");
	assert_int_equal(json_integer_value(json_object_get(row, "id")), 14);
	assert_string_equal(json_string_value(json_object_get(row, "ts")),
	                    "2024-05-01T10:05:00.000Z");
	assert_int_equal(json_integer_value(json_object_get(row, "run")), 1);
	assert_int_equal(json_integer_value(json_object_get(row, "consecutive_failures")), 2);

	s = json_object_get(b, "series");
	assert_int_equal(json_array_size(s), 5);
	row = json_array_get(s, 2);
	assert_string_equal(json_string_value(json_object_get(row, "target")), "web");
	assert_int_equal(json_integer_value(json_object_get(row, "interval_start_ms")),
	                 T0 + 120 * SEC);
	assert_int_equal(json_integer_value(json_object_get(row, "interval_end_ms")),
	                 T0 + 180 * SEC);
	assert_int_equal(json_integer_value(json_object_get(row, "offset_ms")), 180 * SEC);
	assert_int_equal(json_integer_value(json_object_get(row, "step")), 1);
	assert_true(json_real_value(json_object_get(row, "weight")) == 5.0);
	assert_int_equal(json_integer_value(json_object_get(row, "canary_requests")), 0);
	assert_true(json_is_null(json_object_get(row, "canary_error_rate")));
	assert_true(json_is_null(json_object_get(row, "canary_p99_ms")));
	assert_true(json_real_value(json_object_get(row, "baseline_error_rate")) == 0.01);
	assert_int_equal(json_integer_value(json_object_get(row, "baseline_requests")), 95000);

	/* the JSON files are pretty, end in a newline and parse back to the members */
	assert_string_equal(file(b, "config.yaml"), "# config not available\n");
	assert_true(ends_with(file(b, "events.json"), "]\n"));
	assert_non_null(strstr(file(b, "events.json"), "\n  {\n    \"id\": 1,"));
	parsed = json_loads(file(b, "events.json"), 0, NULL);
	assert_true(json_equal(parsed, evs));
	json_decref(parsed);
	parsed = json_loads(file(b, "series.json"), 0, NULL);
	assert_true(json_equal(parsed, s));
	json_decref(parsed);
	parsed = json_loads(file(b, "verdicts.json"), 0, NULL);
	assert_true(json_equal(parsed, v));
	json_decref(parsed);
	json_decref(b);
	json_decref(evs);
}

static void test_charts(void **state)
{
	json_t *evs = rollback_scenario(), *b;
	const char *er, *p99;

	(void)state;
	b = evidence_build("web", evs, NULL, NULL, T0);
	assert_non_null(b);
	er = file(b, "error_rate.svg");
	p99 = file(b, "latency_p99.svg");
	svg_shape(er);
	svg_shape(p99);
	contains(er, "xmlns=\"http://www.w3.org/2000/svg\"");
	contains(er, ">web: error rate, canary vs baseline (target web)</text>");
	contains(p99, ">web: p99 latency, canary vs baseline (target web)</text>");

	/* the canary has no value at 180 s: two canary lines, one baseline line */
	assert_int_equal(count(er, "<polyline class=\"canary\""), 2);
	assert_int_equal(count(er, "<polyline class=\"baseline\""), 1);
	/* x: 60 s of 300 s over 610 px from 70; y: 0.5 % of 8 % over 300 px up from 350 */
	contains(er, "points=\"192.00,331.25 314.00,327.50\"");
	contains(er, "points=\"558.00,237.50 680.00,50.00\"");
	/* axes: y ticks 0..8 step 2 (percent), x ticks every 50 s */
	contains(er, ">8</text>");
	contains(er, ">error rate (%)</text>");
	contains(er, ">time since the start (s)</text>");
	contains(er, "text-anchor=\"middle\">250</text>");
	contains(p99, ">p99 latency (ms)</text>");
	contains(p99, ">200</text>");

	/* step boundaries with their weights, the rollback decision, the legend */
	assert_int_equal(count(er, "<line class=\"step\""), 2);
	contains(er, ">1%</text>");
	contains(er, ">5%</text>");
	contains(er, "<line class=\"step\" x1=\"314.00\" y1=\"50.00\" x2=\"314.00\"");
	assert_int_equal(count(er, "<line class=\"rollback\""), 1);
	contains(er, "<line class=\"rollback\" x1=\"680.00\"");
	contains(er, ">rollback</text>");
	contains(er, ">canary</text>");
	contains(er, ">baseline</text>");
	contains(er, ">step (weight)</text>");
	contains(er, ">rollback decision</text>");
	lacks(er, "no data");
	lacks(er, "nan");
	xml_parses(er);
	xml_parses(p99);

	/* deterministic: the same events give the same bytes */
	{
		json_t *again = evidence_build("web", evs, NULL, NULL, T0);

		assert_string_equal(file(again, "error_rate.svg"), er);
		assert_string_equal(file(again, "summary.md"), file(b, "summary.md"));
		json_decref(again);
	}
	json_decref(b);
	json_decref(evs);
}

static void test_escaping(void **state)
{
	json_t *evs = events_new(), *b;
	const char *er, *md;

	(void)state;
	add(evs, T0, "rollout.started", NULL);
	step(evs, T0, 0, 2, "t<&>\"'", 2.5);
	interval(evs, T0 + 60 * SEC, 0, "t<&>\"'", 2.5, cohort(500, 1, 0.002, 50),
	         cohort(500, 1, 0.002, 50));
	add(evs, T0 + 90 * SEC, "rollout.rollback",
	    json_pack("{s:s, s:I}", "reason", "manual | <b>abort</b> & `x`", "decision_ms",
	              (json_int_t)(T0 + 90 * SEC)));
	b = evidence_build("a<b>&\"c'", evs, NULL, NULL, T0);
	assert_non_null(b);
	er = file(b, "error_rate.svg");
	svg_shape(er);
	contains(er, ">a&lt;b&gt;&amp;&quot;c&apos;: error rate, canary vs baseline (target "
	             "t&lt;&amp;&gt;&quot;&apos;)</text>");
	contains(er, "data-target=\"t&lt;&amp;&gt;&quot;&apos;\"");
	contains(er, ">2.5%</text>");
	lacks(er, "t<&");
	lacks(er, "a<b");
	/* one interval: a point, not a line */
	assert_int_equal(count(er, "<circle class=\"canary\""), 1);
	assert_int_equal(count(er, "<polyline"), 0);
	xml_parses(er);

	md = file(b, "summary.md");
	contains(md, "# Rollout a&lt;b&gt;&amp;\"c': rolled back\n");
	contains(md, "**Reason:** manual \\| &lt;b&gt;abort&lt;/b&gt; &amp; 'x'\n");
	contains(md, "No deciding verdict");
	contains(md, "- **Time to detect:** n/a");
	contains(md, "- **Time to mitigate:** not recorded");
	contains(md, "No rollback hooks.");
	json_decref(b);
	json_decref(evs);
}

static void test_latest_run_only(void **state)
{
	json_t *evs = events_new(), *b, *v, *s, *live;
	const char *md, *er;

	(void)state;
	add(evs, T0, "rollout.started", json_pack("{s:i}", "generation", 1));
	step(evs, T0, 0, 2, "web", 1.0);
	interval(evs, T0 + 60 * SEC, 0, "web", 1.0, cohort(1000, 500, 0.5, 900),
	         cohort(1000, 1, 0.001, 50));
	verdict(evs, T0 + 60 * SEC, 0, "fail", 0.5, 1000, 0.001, 1000, 1);
	add(evs, T0 + 60 * SEC, "rollout.rollback",
	    json_pack("{s:s, s:I, s:I}", "reason", "first run broke", "decision_ms",
	              (json_int_t)(T0 + 60 * SEC), "time_to_detect_ms", (json_int_t)60000));
	add(evs, T0 + 61 * SEC, "rollout.mitigated",
	    json_pack("{s:I, s:I}", "decision_ms", (json_int_t)(T0 + 60 * SEC), "applied_ms",
	              (json_int_t)(T0 + 61 * SEC)));

	add(evs, T0 + 3600 * SEC, "rollout.retry", json_pack("{s:i}", "generation", 2));
	step(evs, T0 + 3600 * SEC, 0, 2, "web", 1.0);
	interval(evs, T0 + 3660 * SEC, 0, "web", 1.0, cohort(1000, 1, 0.001, 60),
	         cohort(1000, 1, 0.001, 50));
	verdict(evs, T0 + 3660 * SEC, 0, "pass", 0.001, 1000, 0.001, 1000, 0);
	step(evs, T0 + 3660 * SEC, 1, 2, "web", 100.0);
	add(evs, T0 + 3720 * SEC, "rollout.completed",
	    json_pack("{s:I}", "duration_ms", (json_int_t)(120 * SEC)));

	live = json_pack("{s:s}", "state", "completed");
	b = evidence_build("web", evs, live, NULL, T0 + 7200 * SEC);
	assert_non_null(b);
	md = file(b, "summary.md");
	contains(md, "# Rollout web: completed\n");
	contains(md, "(run 2) started at 2024-05-01 11:00:00.000 UTC");
	contains(md, "ended at 2024-05-01 11:02:00.000 UTC: **completed** after 2m 00s");
	contains(md, "Earlier runs (1) are only in events.json.");
	contains(md, "| rollout.completed | after 2m 00s |");
	contains(md, "| error-rate | 1 | 0 | 0 | 0 |\n");
	lacks(md, "first run broke");
	lacks(md, "## Rollback");
	lacks(md, "2024-05-01 10:00:00.000");

	/* events, verdicts and series keep every run, tagged with its number */
	assert_int_equal(json_array_size(json_object_get(b, "events")), json_array_size(evs));
	v = json_object_get(b, "verdicts");
	assert_int_equal(json_array_size(v), 2);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(v, 0), "run")), 1);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(v, 1), "run")), 2);
	s = json_object_get(b, "series");
	assert_int_equal(json_array_size(s), 2);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(s, 1), "offset_ms")),
	                 60 * SEC);

	/* the chart: the second run only (a single point at 60 s), no rollback marker */
	er = file(b, "error_rate.svg");
	svg_shape(er);
	lacks(er, "class=\"rollback\"");
	lacks(er, ">rollback decision</text>");
	contains(er, ">100%</text>");
	assert_int_equal(count(er, "<circle class=\"canary\""), 1);
	assert_true(json_equal(json_object_get(b, "live"), live));
	assert_string_equal(json_string_value(json_object_get(b, "state")), "completed");
	json_decref(live);
	json_decref(b);
	json_decref(evs);
}

static void test_no_data_and_no_events(void **state)
{
	json_t *evs = events_new(), *b, *o;

	(void)state;
	add(evs, T0, "rollout.started", NULL);
	step(evs, T0, 0, 3, "web", 1.0);
	b = evidence_build("web", evs, NULL, NULL, T0 + 30 * SEC);
	assert_non_null(b);
	svg_shape(file(b, "error_rate.svg"));
	contains(file(b, "error_rate.svg"), ">no data</text>");
	contains(file(b, "latency_p99.svg"), ">no data</text>");
	xml_parses(file(b, "latency_p99.svg"));
	contains(file(b, "summary.md"), "# Rollout web: in progress\n");
	contains(file(b, "summary.md"), "has not ended: **in progress** as of 2024-05-01 "
	                                "10:00:30.000 UTC, 30.0 s after the start.");
	contains(file(b, "summary.md"), "_No verdicts in this run._");
	assert_string_equal(json_string_value(json_object_get(b, "state")), "progressing");
	json_decref(b);

	/* no events at all, events not an array, no name */
	b = evidence_build(NULL, NULL, NULL, NULL, 0);
	assert_non_null(b);
	assert_string_equal(json_string_value(json_object_get(b, "state")), "idle");
	contains(file(b, "summary.md"), "The rollout has no recorded run.");
	contains(file(b, "error_rate.svg"), "no data");
	assert_string_equal(file(b, "events.json"), "[]\n");
	json_decref(b);
	o = json_object();
	b = evidence_build("x", o, NULL, NULL, 0);
	assert_non_null(b);
	assert_int_equal(json_array_size(json_object_get(b, "events")), 0);
	json_decref(b);
	json_decref(o);
	json_decref(evs);
}

static void test_odd_fields(void **state)
{
	json_t *evs = events_new(), *b, *e, *live;
	char *big;
	const char *md;

	(void)state;
	json_array_append_new(evs, json_integer(5));
	json_array_append_new(evs, json_pack("{s:s}", "kind", "rollout.started"));
	json_array_append_new(evs, json_pack("{s:s, s:s, s:s}", "kind", "rollout.step", "ts",
	                                     "garbage", "details", "not an object"));
	json_array_append_new(evs,
	                      json_pack("{s:i, s:s, s:s, s:{s:s, s:s, s:i}}", "id", 3, "ts",
	                                "2024-05-01T10:00:01Z", "kind", "rollout.step", "details",
	                                "weights", "lots", "kind", "set", "step", 1));
	add(evs, T0 + 2 * SEC, "rollout.step",
	    json_pack("{s:s, s:{s:s, s:f}}", "step", "two", "weights", "a", "x", "b", 3.0));
	add(evs, T0 + 3 * SEC, "rollout.interval", json_pack("{s:[i]}", "targets", 1));
	add(evs, T0 + 4 * SEC, "rollout.interval",
	    json_pack("{s:s, s:{s:s, s:{s:s}}}", "interval_end_ms", "soon", "targets", "web",
	              "weird", "canary", "error_rate", "high"));
	add(evs, T0 + 5 * SEC, "rollout.interval",
	    json_pack("{s:I, s:{s:{s:{s:s}, s:[]}}}", "interval_end_ms", (json_int_t)(T0 + 5 * SEC),
	              "targets", "web", "canary", "error_rate", "high", "baseline"));
	add(evs, T0 + 6 * SEC, "verdict",
	    json_pack("{s:{s:s}, s:i, s:b}", "canary", "value", "x", "outcome", 3, "check", 0));
	add(evs, T0 + 7 * SEC, "verdict", NULL);
	add(evs, T0 + 8 * SEC, "rollout.paused", json_pack("{s:i}", "review_deadline", -5));
	add(evs, T0 + 9 * SEC, "rollout.weird", json_pack("{s:s}", "a", "b|c"));
	add(evs, T0 + 10 * SEC, "rollout.hook",
	    json_pack("{s:s, s:i, s:s}", "index", "first", "status", 7, "exit_code", "zero"));
	e = json_pack("{s:s, s:s, s:s}", "kind", "rollout.rollback", "ts", "2024-13-45T99:00:00Z",
	              "details", "nope");
	json_array_append_new(evs, e);
	add(evs, T0 + 12 * SEC, "rollout.rollback",
	    json_pack("{s:s, s:i, s:s, s:{s:s}, s:i, s:s}", "reason", "odd", "targets", 3, "hooks",
	              "none", "verdict", "canary", "n", "time_to_detect_ms", -1, "all", "yes"));
	add(evs, T0 + 13 * SEC, "rollout.mitigated",
	    json_pack("{s:s, s:f}", "decision_ms", "then", "time_to_mitigate_us", 1.5e300));
	add(evs, T0 + 14 * SEC, "rollout.verified", json_pack("{s:s}", "passed", "maybe"));
	add(evs, T0 + 15 * SEC, "rollout.approved", NULL);
	add(evs, T0 + 16 * SEC, "rollout.baking", json_pack("{s:s}", "bake_ms", "long"));
	/* a long multi-byte hook output is cut on a character boundary */
	big = malloc(30001);
	assert_non_null(big);
	for (int i = 0; i < 10000; i++)
		memcpy(big + 3 * i, "\xE2\x82\xAC", 3); /* € */
	big[30000] = '\0';
	add(evs, T0 + 17 * SEC, "rollout.hook",
	    json_pack("{s:i, s:s, s:s, s:s}", "index", 1, "kind", "webhook", "status", "failed",
	              "output", big));
	json_array_append_new(evs, json_pack("{s:i}", "kind", 12));
	json_array_append_new(evs, json_null());

	live = json_pack("{s:i}", "state", 3);
	b = evidence_build("web", evs, live, NULL, T0);
	assert_non_null(b);
	md = file(b, "summary.md");
	contains(md, "| rollout.weird | {\"a\":\"b\\|c\"} |");
	contains(md, "(no kind)");
	contains(md, "## Rollback 1 of 2");
	contains(md, "## Rollback 2 of 2");
	contains(md, "**Reason:** odd");
	contains(md, "\xE2\x82\xAC\xE2\x80\xA6"); /* … after the last whole € */
	contains(md, "## Action items\n\n_to be filled_\n");
	svg_shape(file(b, "error_rate.svg"));
	svg_shape(file(b, "latency_p99.svg"));
	xml_parses(file(b, "error_rate.svg"));
	assert_int_equal(json_array_size(json_object_get(b, "events")), json_array_size(evs));
	assert_int_equal(json_array_size(json_object_get(b, "verdicts")), 2);
	/* live with a non-string state: the state comes from the events */
	assert_string_equal(json_string_value(json_object_get(b, "state")), "rolled_back");
	free(big);
	json_decref(live);
	json_decref(b);
	json_decref(evs);
}

static void test_multi_target(void **state)
{
	static const char *const names[] = {"web", "api", "img", "auth", "search"};
	json_t *evs = events_new(), *b, *targets, *weights;
	const char *er;

	(void)state;
	add(evs, T0, "rollout.started", NULL);
	weights = json_pack("{s:f, s:f}", "web", 5.0, "api", 10.0);
	add(evs, T0, "rollout.step",
	    json_pack("{s:i, s:i, s:s, s:o}", "step", 0, "of", 1, "kind", "set", "weights",
	              weights));
	for (int i = 1; i <= 3; i++) {
		targets = json_object();
		for (int t = 0; t < (i == 3 ? 5 : 2); t++)
			json_object_set_new(targets, names[t],
			                    json_pack("{s:f, s:o, s:o}", "weight", 5.0, "canary",
			                              cohort(100, t, t / 100.0, 10 * (t + 1)),
			                              "baseline", cohort(100, 0, 0, 10)));
		add(evs, T0 + i * 60 * SEC, "rollout.interval",
		    json_pack("{s:I, s:I, s:o}", "interval_end_ms", (json_int_t)(T0 + i * 60 * SEC),
		              "interval_ms", (json_int_t)60000, "targets", targets));
	}
	b = evidence_build("multi", evs, NULL, NULL, T0);
	assert_non_null(b);
	er = file(b, "error_rate.svg");
	svg_shape(er);
	/* five targets seen, four drawn, and the title says so */
	contains(er, "(first 4 of 5 targets: web, api, img, auth)</text>");
	lacks(er, "data-target=\"search\"");
	assert_int_equal(count(er, "<polyline class=\"canary\" data-target=\"web\""), 1);
	assert_int_equal(count(er, "<polyline class=\"canary\" data-target=\"api\""), 1);
	/* img and auth appear in the last interval only: a point each */
	assert_int_equal(count(er, "<circle class=\"canary\" data-target=\"img\""), 1);
	contains(er, ">web canary</text>");
	contains(er, ">api baseline</text>");
	/* different weights per target: the step label names them */
	contains(er, ">web 5%, api 10%</text>");
	xml_parses(er);
	contains(file(b, "summary.md"), "| rollout.step | step 1 of 1 (set): web 5%, api 10% |");
	assert_int_equal(json_array_size(json_object_get(b, "series")), 2 + 2 + 5);
	json_decref(b);
	json_decref(evs);
}

/* Events of the first engine version: hooks listed in the rollback, no drained event. */
static void test_legacy_rollback(void **state)
{
	json_t *evs = events_new(), *b;
	const char *md;

	(void)state;
	add(evs, T0, "rollout.started", NULL);
	add(evs, T0 + 10 * SEC, "rollout.rollback",
	    json_pack("{s:s, s:[s], s:b, s:I, s:[{s:i, s:s, s:s, s:s}], s:I}", "reason",
	              "target api rolled back", "targets", "api", "all", 0, "decision_ms",
	              (json_int_t)(T0 + 10 * SEC), "hooks", "index", 0, "kind", "exec", "status",
	              "not_run", "why", "no hook runner was configured", "drain_ms",
	              (json_int_t)30000));
	add(evs, T0 + 20 * SEC, "rollout.rollback",
	    json_pack("{s:s, s:[s], s:b, s:I, s:i}", "reason", "aborted", "targets", "web", "all",
	              1, "decision_ms", (json_int_t)(T0 + 20 * SEC), "hooks", 2));
	add(evs, T0 + 20 * SEC, "rollout.mitigated",
	    json_pack("{s:I, s:I, s:b}", "decision_ms", (json_int_t)(T0 + 20 * SEC), "applied_ms",
	              (json_int_t)(T0 + 20 * SEC + 2), "after_restart", 1));
	b = evidence_build("web", evs, NULL, NULL, T0);
	assert_non_null(b);
	md = file(b, "summary.md");
	contains(md, "ended at 2024-05-01 10:00:20.000 UTC: **rolled back** after 20.0 s");
	contains(md, "## Rollback 1 of 2\n\n**Reason:** target api rolled back\n");
	contains(md, "targets api (the others keep running).\n");
	contains(md, "| 0 | exec | not_run | — | no hook runner was configured |\n");
	contains(md, "- **Drain:** limit 30000 ms (no rollout.drained event).\n");
	contains(md, "- **Time to mitigate:** not recorded (no rollout.mitigated event).\n");
	contains(md, "## Rollback 2 of 2\n\n**Reason:** aborted\n");
	contains(md, "- **Time to mitigate:** 2 ms, from the decision until the routing change "
	             "was published (workers not measured); applied after a restart.\n");
	contains(md, "**Hooks:**\n\n2 configured; no results recorded.\n");
	json_decref(b);
	json_decref(evs);
}

/*
 * The store stamps events with its own clock; the engine's times (decision,
 * interval ends) may come from another (a fake one in tests).  Moving every
 * stamp by a constant changes neither the summary nor the charts.
 */
static void test_store_clock_skew(void **state)
{
	json_t *evs = rollback_scenario(), *moved = json_deep_copy(evs), *a, *b, *x;
	size_t i;

	(void)state;
	json_array_foreach(moved, i, x)
	{
		char ts[40];

		ts_of(parse_ts_for_test(json_string_value(json_object_get(x, "ts"))) +
		          INT64_C(86400000) * 400,
		      ts, sizeof(ts));
		json_object_set_new(x, "ts", json_string(ts));
	}
	a = evidence_build("web", evs, NULL, NULL, T0);
	b = evidence_build("web", moved, NULL, NULL, T0);
	assert_non_null(a);
	assert_non_null(b);
	lacks(file(b, "error_rate.svg"), "no data");
	assert_string_equal(file(a, "error_rate.svg"), file(b, "error_rate.svg"));
	assert_string_equal(file(a, "latency_p99.svg"), file(b, "latency_p99.svg"));
	assert_string_equal(file(a, "summary.md"), file(b, "summary.md"));
	assert_true(json_equal(
	    json_object_get(json_array_get(json_object_get(a, "series"), 0), "offset_ms"),
	    json_object_get(json_array_get(json_object_get(b, "series"), 0), "offset_ms")));
	json_decref(a);
	json_decref(b);
	json_decref(moved);
	json_decref(evs);
}

/* --- bundles streamed from a store --------------------------------------------------- */

static int64_t st_now;

static int64_t st_clock(void *arg)
{
	(void)arg;
	return st_now;
}

static struct store *mem_store(void)
{
	char err[256];
	struct store *st = store_open("sqlite::memory:", err, sizeof(err));

	assert_non_null(st);
	store_set_clock(st, st_clock, NULL);
	return st;
}

/* Appends an event stamped ms to subject rollout/web; details is stolen. */
static void st_add(struct store *st, int64_t ms, const char *kind, json_t *details)
{
	char *text = json_dumps(details, JSON_COMPACT);

	assert_non_null(text);
	st_now = ms;
	assert_int_equal(store_event_append(st, "canaryd", kind, "rollout/web", text, NULL), 0);
	free(text);
	json_decref(details);
}

/* Copies a list made by the helpers above into st, each event at its own ts. */
static void st_copy(struct store *st, const json_t *evs)
{
	size_t i;
	json_t *e;

	json_array_foreach((json_t *)evs, i, e)
	{
		st_add(st, parse_ts_for_test(json_string_value(json_object_get(e, "ts"))),
		       json_string_value(json_object_get(e, "kind")),
		       json_incref(json_object_get(e, "details")));
	}
}

/* The same events give the same bundle from a list and from the store. */
static void test_store_and_list_agree(void **state)
{
	json_t *evs = rollback_scenario(), *a, *b;
	struct store *st = mem_store();
	const char *name;
	json_t *v;

	(void)state;
	st_copy(st, evs);
	a = evidence_build("web", evs, NULL, NULL, T0 + 400 * SEC);
	assert_int_equal(evidence_build_store("web", st, NULL, NULL, T0 + 400 * SEC, &b), 0);
	assert_non_null(a);
	assert_non_null(b);
	json_object_foreach(json_object_get(a, "files"), name, v)
	{
		assert_string_equal(json_string_value(v), file(b, name));
	}
	assert_true(json_equal(json_object_get(a, "counts"), json_object_get(b, "counts")));
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(b, "counts"), "events")),
	    json_array_size(evs));
	json_decref(a);
	json_decref(b);
	json_decref(evs);
	assert_int_equal(evidence_build_store("x", NULL, NULL, NULL, 0, &b), -EINVAL);
	assert_null(b);
	store_close(st);
}

/* jansson's live bytes, to show the build's memory does not grow with the events */
static size_t js_live, js_peak;

static void *js_malloc(size_t n)
{
	void *p = malloc(n);

	if (p) {
		js_live += malloc_usable_size(p);
		if (js_live > js_peak)
			js_peak = js_live;
	}
	return p;
}

static void js_free(void *p)
{
	if (p)
		js_live -= malloc_usable_size(p) < js_live ? malloc_usable_size(p) : js_live;
	free(p);
}

static int count_bytes(const char *buffer, size_t size, void *data)
{
	(void)buffer;
	*(size_t *)data += size;
	return 0;
}

static double mono_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

#define NINT   100000
#define SPIKE  50000
#define STREAK 10 /* failing intervals before the rollback, the last ones */

static bool has_row(const json_t *series, int64_t end, double p99)
{
	size_t i;
	json_t *row;

	json_array_foreach((json_t *)series, i, row)
	{
		if (json_integer_value(json_object_get(row, "interval_end_ms")) == end &&
		    (p99 < 0 || json_real_value(json_object_get(row, "canary_p99_ms")) == p99))
			return true;
	}
	return false;
}

/*
 * 100,000 one-second intervals (a verdict every 10th, and for each of the
 * failing streak): the bundle has a bounded number of points, keeps the
 * spike and the whole failing streak, counts every verdict, and the
 * build's live JSON memory stays far below the events' size.
 */
static void test_store_bundle_is_bounded(void **state)
{
	struct store *st = mem_store();
	int64_t t0 = T0 + 10 * SEC, end = 0, ff = t0 + (NINT - STREAK) * SEC;
	json_t *b, *series, *verdicts;
	size_t bytes = 0, streak = 0;
	long fails = 0, passes = 0;
	double t;
	char row[200];

	(void)state;
	st_add(st, T0, "rollout.started", json_pack("{s:i, s:i}", "generation", 1, "steps", 2));
	st_add(st, T0, "rollout.step",
	       json_pack("{s:i, s:i, s:s, s:{s:f}}", "step", 0, "of", 2, "kind", "set", "weights",
	                 "web", 5.0));
	assert_int_equal(store_begin(st), 0);
	for (int i = 0; i < NINT; i++) {
		bool failing = i >= NINT - STREAK;
		double p99 = i == SPIKE ? 4321.0 : 80.0 + i % 7;

		end = t0 + i * SEC;
		st_add(st, end, "rollout.interval",
		       json_pack("{s:I, s:I, s:i, s:{s:{s:f, s:o, s:o}}}", "interval_end_ms",
		                 (json_int_t)end, "interval_ms", (json_int_t)SEC, "step", 0,
		                 "targets", "web", "weight", 5.0, "canary",
		                 cohort(100, failing ? 40 : 1, failing ? 0.4 : 0.01, p99),
		                 "baseline", cohort(1900, 19, 0.01, 80)));
		if (failing || i % 10 == 0) {
			json_t *v = verdict_json(failing ? "fail" : "pass", failing ? 0.4 : 0.01,
			                         100, 0.01, 1900, "max", 0.05, failing ? 0.4 : 0.01,
			                         failing ? "too many errors" : "fine");

			json_object_set_new(v, "interval_end_ms", json_integer(end));
			json_object_set_new(v, "step", json_integer(0));
			json_object_set_new(v, "consecutive_failures",
			                    json_integer(failing ? i - (NINT - STREAK) + 1 : 0));
			st_add(st, end, "verdict", v);
			if (failing)
				fails++;
			else
				passes++;
		}
		if (i % 10000 == 9999) {
			assert_int_equal(store_commit(st), 0);
			assert_int_equal(store_begin(st), 0);
		}
	}
	assert_int_equal(store_commit(st), 0);
	st_add(st, end, "rollout.rollback",
	       json_pack("{s:s, s:s, s:[s], s:b, s:i, s:I, s:I, s:I, s:o}", "reason",
	                 "too many errors", "class", "check", "targets", "web", "all", 1, "step", 0,
	                 "decision_ms", (json_int_t)end, "first_failing_interval_start_ms",
	                 (json_int_t)(ff - SEC), "time_to_detect_ms", (json_int_t)(end - ff + SEC),
	                 "verdict",
	                 verdict_json("fail", 0.4, 100, 0.01, 1900, "max", 0.05, 0.4,
	                              "too many errors")));

	json_set_alloc_funcs(js_malloc, js_free);
	js_live = js_peak = 0;
	t = mono_s();
	assert_int_equal(evidence_build_store("web", st, NULL, NULL, end + SEC, &b), 0);
	t = mono_s() - t;
	assert_non_null(b);
	json_dump_callback(b, count_bytes, &bytes, JSON_COMPACT);
	print_message("evidence of %d intervals + %ld verdicts: %.2f s, bundle %zu bytes, "
	              "peak live JSON %zu bytes\n",
	              NINT, fails + passes, t, bytes, js_peak);

	series = json_object_get(b, "series");
	verdicts = json_object_get(b, "verdicts");
	/* bounded: at most 500 points per series (one target here) */
	assert_true(json_array_size(series) <= 500);
	assert_true(json_array_size(series) >= 100);
	assert_true(json_array_size(verdicts) <= 500);
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(b, "counts"), "intervals")), NINT);
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(b, "counts"), "events")),
	    3 + NINT + fails + passes);
	/* the first, the last, the spike and every failing interval are there */
	assert_true(has_row(series, t0, -1));
	assert_true(has_row(series, end, -1));
	assert_true(has_row(series, t0 + SPIKE * SEC, 4321.0));
	for (int i = NINT - STREAK; i < NINT; i++)
		streak += has_row(series, t0 + i * SEC, -1);
	assert_int_equal(streak, STREAK);
	/* verdict counts are over every verdict, not the kept ones */
	snprintf(row, sizeof(row), "| error-rate | %ld | %ld | 0 | 0 |", passes, fails);
	contains(file(b, "summary.md"), row);
	contains(file(b, "summary.md"), "10 consecutive failing intervals");
	contains(file(b, "summary.md"), "downsampled");
	/* size: the bundle stays small (the events are ~50 MB as JSON) */
	assert_true(bytes < 2 * 1024 * 1024);
	assert_true(js_peak < 16 * 1024 * 1024);
	json_decref(b);
	json_set_alloc_funcs(malloc, free);
	store_close(st);
}

/* A compacted rollout still shows its series, from the summaries. */
static void test_store_bundle_reads_summaries(void **state)
{
	struct store *st = mem_store();
	struct retention_conf c = {.full_resolution_ms = 3600 * SEC,
	                           .summary_interval_ms = 3600 * SEC};
	json_t *b, *series;
	const char *svg;
	size_t i, nsum = 0, covered = 0;
	json_t *row;

	(void)state;
	st_add(st, T0, "rollout.started", json_pack("{s:i, s:i}", "generation", 1, "steps", 1));
	for (int m = 0; m < 180; m++) {
		json_t *v = verdict_json(m == 100 ? "fail" : "pass", 0.01, 1000, 0.01, 19000, "max",
		                         0.05, 0.01, "fine");

		st_add(st, T0 + (m + 1) * 60 * SEC, "rollout.interval",
		       json_pack("{s:I, s:I, s:i, s:{s:{s:f, s:o, s:o}}}", "interval_end_ms",
		                 (json_int_t)(T0 + (m + 1) * 60 * SEC), "interval_ms",
		                 (json_int_t)(60 * SEC), "step", 0, "targets", "web", "weight", 5.0,
		                 "canary", cohort(1000, m == 100 ? 100 : 10, 0.01, 90), "baseline",
		                 cohort(19000, 190, 0.01, 80)));
		json_object_set_new(v, "interval_end_ms", json_integer(T0 + (m + 1) * 60 * SEC));
		st_add(st, T0 + (m + 1) * 60 * SEC, "verdict", v);
	}
	st_add(st, T0 + 181 * 60 * SEC, "rollout.completed", json_pack("{s:i}", "duration_ms", 1));
	st_now = T0 + 10 * 3600 * SEC;
	assert_int_equal(retention_compact(st, st_now, &c, 0, NULL), 0);

	assert_int_equal(evidence_build_store("web", st, NULL, NULL, st_now, &b), 0);
	series = json_object_get(b, "series");
	json_array_foreach(series, i, row)
	{
		int64_t n = json_integer_value(json_object_get(row, "intervals"));

		nsum += n > 1;
		covered += (size_t)n;
		assert_true(json_integer_value(json_object_get(row, "interval_end_ms")) >= T0);
	}
	/* hourly summaries stand for all 180: 59, 60, 60 and the last one's 1 */
	assert_int_equal(nsum, 3);
	assert_int_equal(covered, 180);
	json_array_foreach(json_object_get(b, "events"), i, row)
	{
		assert_string_not_equal(json_string_value(json_object_get(row, "kind")),
		                        "rollout.interval");
	}
	/* the spike of minute 100 survives as its summary's error rate */
	svg = file(b, "error_rate.svg");
	lacks(svg, "no data");
	contains(svg, "class=\"canary\"");
	contains(file(b, "summary.md"), "| error-rate | 179 | 1 | 0 | 0 |");
	assert_int_equal(json_array_size(series), 4);
	assert_int_equal(json_array_size(json_object_get(b, "verdicts")), 4);
	assert_true(json_is_true(
	    json_object_get(json_array_get(json_object_get(b, "verdicts"), 0), "summary")));
	json_decref(b);
	store_close(st);
}

/* --- evidence_write_dir -------------------------------------------------------------- */

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *p;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	p = malloc((size_t)n + 1);
	assert_non_null(p);
	assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
	p[n] = '\0';
	fclose(f);
	return p;
}

static void rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char p[512];

	if (!d)
		return;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
			unlink(p);
		}
	closedir(d);
	rmdir(dir);
}

/* One bundle whose files are replaced by {name: content}. */
static int write_files(const char *dir, json_t *files, char *err, size_t errlen)
{
	json_t *b = json_pack("{s:o}", "files", files);
	int rc = evidence_write_dir(b, dir, err, errlen);

	json_decref(b);
	return rc;
}

/* The config.yaml of a bundle is the loaded config's snapshot: no secret in it. */
static void test_config_without_secrets(void **state)
{
	const char *yaml = "admin:\n"
	                   "  tokens:\n"
	                   "    - {name: ops, secret: zz-evidence-secret, scopes: [admin]}\n"
	                   "store: postgres://canary:zz-store-pw@db/canary\n";
	struct config_errors errs = {0};
	struct config *cfg = config_load_string("c.yaml", yaml, strlen(yaml), &errs);
	json_t *evs = rollback_scenario(), *b;
	char *all;

	(void)state;
	assert_non_null(cfg);
	b = evidence_build("web", evs, NULL, cfg->source, T0);
	assert_non_null(b);
	all = json_dumps(b, 0);
	assert_non_null(all);
	assert_null(strstr(all, "zz-evidence-secret"));
	assert_null(strstr(all, "zz-store-pw"));
	contains(json_string_value(json_object_get(json_object_get(b, "files"), "config.yaml")),
	         "secret: \"<redacted>\"");
	free(all);
	json_decref(b);
	json_decref(evs);
	config_free(cfg);
	config_errors_release(&errs);
}

static void test_write_dir(void **state)
{
	char tmp[] = "/tmp/evidence-test-XXXXXX", dir[256], path[512], err[256];
	json_t *evs = rollback_scenario(), *b, *files, *v;
	const char *name;
	struct stat sb;
	DIR *d;
	struct dirent *de;
	size_t n = 0;

	(void)state;
	assert_non_null(mkdtemp(tmp));
	snprintf(dir, sizeof(dir), "%s/bundle", tmp);
	b = evidence_build("web", evs, NULL, "a: 1\n", T0);
	assert_non_null(b);
	files = json_object_get(b, "files");
	assert_int_equal(json_object_size(files), 7);

	/* twice: into a new directory, then over the existing files */
	for (int round = 0; round < 2; round++) {
		err[0] = 'x';
		assert_int_equal(evidence_write_dir(b, dir, err, sizeof(err)), 0);
		assert_int_equal(stat(dir, &sb), 0);
		assert_true(S_ISDIR(sb.st_mode));
		/* private: the bundle holds the config and every event */
		assert_int_equal(sb.st_mode & 0777, 0700);
		json_object_foreach(files, name, v)
		{
			char *got;

			snprintf(path, sizeof(path), "%s/%s", dir, name);
			assert_int_equal(stat(path, &sb), 0);
			assert_int_equal(sb.st_mode & 0777, 0600);
			got = read_all(path);
			assert_non_null(got);
			assert_string_equal(got, json_string_value(v));
			free(got);
		}
	}
	/* only the seven files: no temporaries left */
	d = opendir(dir);
	assert_non_null(d);
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		assert_true(de->d_name[0] != '.');
		assert_null(strstr(de->d_name, ".tmp"));
		n++;
	}
	closedir(d);
	assert_int_equal(n, 7);

	/* bad names are refused before anything is created */
	snprintf(path, sizeof(path), "%s/bad", tmp);
	assert_int_equal(
	    write_files(path, json_pack("{s:s, s:s}", "ok.md", "x", "a/b", "y"), err, sizeof(err)),
	    -1);
	contains(err, "a/b");
	assert_int_equal(write_files(path, json_pack("{s:s}", ".hidden", "x"), err, sizeof(err)),
	                 -1);
	contains(err, ".hidden");
	assert_int_equal(write_files(path, json_pack("{s:s}", "..", "x"), err, sizeof(err)), -1);
	assert_int_equal(write_files(path, json_pack("{s:s}", "", "x"), err, sizeof(err)), -1);
	assert_int_equal(write_files(path, json_pack("{s:i}", "n.txt", 1), err, sizeof(err)), -1);
	contains(err, "not a string");
	assert_int_equal(stat(path, &sb), -1);
	assert_int_equal(evidence_write_dir(evs, path, err, sizeof(err)), -1); /* no "files" */
	assert_int_equal(evidence_write_dir(b, path, NULL, 0), 0);             /* err optional */
	rm_dir(path);

	/* an existing open directory and file are made private */
	snprintf(path, sizeof(path), "%s/open", tmp);
	assert_int_equal(mkdir(path, 0755), 0);
	assert_int_equal(chmod(path, 0755), 0);
	{
		char f[600];
		FILE *fp;

		snprintf(f, sizeof(f), "%s/.summary.md.tmp", path);
		fp = fopen(f, "w");
		assert_non_null(fp);
		fclose(fp);
		assert_int_equal(chmod(f, 0644), 0);
		assert_int_equal(evidence_write_dir(b, path, err, sizeof(err)), 0);
		assert_int_equal(stat(path, &sb), 0);
		assert_int_equal(sb.st_mode & 0777, 0700);
		snprintf(f, sizeof(f), "%s/summary.md", path);
		assert_int_equal(stat(f, &sb), 0);
		assert_int_equal(sb.st_mode & 0777, 0600);
	}
	rm_dir(path);

	/* the parent must exist */
	snprintf(path, sizeof(path), "%s/no/such", tmp);
	assert_int_equal(evidence_write_dir(b, path, err, sizeof(err)), -1);
	contains(err, "mkdir");

	rm_dir(dir);
	assert_int_equal(rmdir(tmp), 0);
	json_decref(b);
	json_decref(evs);
}

/*
 * issue 16: the canary request sample of a rollback (canary-requests.json
 * and a table in the summary) and the reports of validation windows (one
 * Markdown file per window, one chart per check, a summary section).
 */
static void test_canary_requests_and_validation_reports(void **state)
{
	json_t *evs = rollback_scenario(), *b, *sample, *pts = json_array(), *rep;
	const char *md, *svg;

	(void)state;
	/* a validation window that passed after the completion, then the sample of a revert */
	for (int i = 1; i <= 3; i++)
		json_array_append_new(pts,
		                      json_pack("{s:I, s:f, s:i, s:i}", "end_ms",
		                                (json_int_t)(T0 + (300 + 10 * i) * SEC), "value",
		                                0.01 * i, "requests", 500, "intervals", 1));
	rep = json_pack("{s:s, s:i, s:i, s:s, s:s, s:I, s:I, s:I, s:I, s:i, s:i, s:s, s:{}, "
	                "s:[{s:s, s:s, s:n, s:s, s:f, s:f, s:f, s:i, s:i, s:s, "
	                "s:{s:i, s:i, s:i, s:i}, s:o}]}",
	                "window", "day-1", "index", 0, "of", 1, "state", "failed", "on_fail",
	                "rollback", "after_ms", (json_int_t)0, "for_ms", (json_int_t)60000,
	                "started_ms", (json_int_t)(T0 + 300 * SEC), "ended_ms",
	                (json_int_t)(T0 + 330 * SEC), "interval_ms", 10000, "looks", 3, "reason",
	                "check errors failed: error_rate 3%", "targets", "checks", "name", "errors",
	                "metric", "error_rate", "target", "outcome", "fail", "value", 0.03,
	                "baseline", 0.005, "observed", 0.025, "canary_requests", 500,
	                "baseline_requests", 24000, "reason", "error_rate 3% | high", "intervals",
	                "pass", 2, "fail", 1, "inconclusive", 0, "error", 0, "points", pts);
	assert_non_null(rep);
	add(evs, T0 + 330 * SEC, "rollout.validation.failed",
	    json_pack("{s:s, s:i, s:s, s:s, s:o}", "window", "day-1", "index", 0, "result",
	              "failed", "reason", "check errors failed: error_rate 3%", "report", rep));
	sample = json_pack("{s:I, s:{s:{s:s, s:s, s:[{s:s, s:s, s:s, s:i, s:f, s:I}, "
	                   "{s:s, s:s, s:s, s:i, s:f, s:I}]}}}",
	                   "decision_ms", (json_int_t)(T0 + 330 * SEC), "targets", "web", "service",
	                   "web", "version", "v2", "requests", "request_id", "e2e-42", "method",
	                   "GET", "path", "/item/42", "status", 500, "latency_ms", 12.5, "time_ms",
	                   (json_int_t)(T0 + 329 * SEC), "request_id", "e2e-41|x", "method", "POST",
	                   "path", "/cart", "status", 200, "latency_ms", 3.0, "time_ms",
	                   (json_int_t)(T0 + 328 * SEC));
	assert_non_null(sample);
	add(evs, T0 + 330 * SEC, "rollout.canary_requests", sample);
	b = evidence_build("web", evs, NULL, NULL, T0 + 400 * SEC);
	assert_non_null(b);

	contains(file(b, "canary-requests.json"), "\"request_id\": \"e2e-42\"");
	assert_int_equal(json_array_size(json_object_get(b, "canary_requests")), 1);
	md = file(b, "summary.md");
	contains(md, "## Canary requests around the decision");
	contains(md,
	         "| web | v2 | 2024-05-01 10:05:29.000 | e2e-42 | GET | /item/42 | 500 | 12.5 |");
	contains(md, "| e2e-41\\|x | POST | /cart | 200 | 3.0 |"); /* escaped for the table */
	contains(md, "the canary's last 2 request(s) kept (canary-requests.json)"); /* timeline */
	contains(md, "validation window day-1: failed: check errors failed: error_rate 3%");
	contains(md, "## Post-rollout validation");
	contains(
	    md,
	    "| day-1 | **failed** | 2024-05-01 10:05:00.000 | 2024-05-01 10:05:30.000 | "
	    "check errors failed: error_rate 3% | [validation-day-1.md](validation-day-1.md) |");
	md = file(b, "validation-day-1.md");
	contains(md, "# Validation window `day-1` of rollout `web`: failed");
	contains(md,
	         "| errors | error_rate | **fail** | 3.000% | 0.500% | 500 / 24000 | 2 / 1 / 0 / 0 "
	         "| error_rate 3% \\| high |");
	svg = file(b, "validation-day-1-errors.svg");
	svg_shape(svg);
	xml_parses(svg);
	contains(svg, "new stable vs pre-rollout baseline");
	contains(svg, "class=\"rollback\""); /* the window's failure */
	assert_int_equal(count(svg, "class=\"canary\""), 1);
	assert_string_equal(json_string_value(json_object_get(
	                        json_array_get(json_object_get(b, "validation"), 0), "window")),
	                    "day-1");
	json_decref(b);

	/* none of it in a bundle without those events */
	json_decref(evs);
	evs = rollback_scenario();
	b = evidence_build("web", evs, NULL, NULL, T0 + 400 * SEC);
	assert_null(json_object_get(json_object_get(b, "files"), "canary-requests.json"));
	lacks(file(b, "summary.md"), "## Canary requests");
	lacks(file(b, "summary.md"), "## Post-rollout validation");
	json_decref(b);
	json_decref(evs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rollback_summary),
	    cmocka_unit_test(test_canary_requests_and_validation_reports),
	    cmocka_unit_test(test_verdicts_and_series),
	    cmocka_unit_test(test_charts),
	    cmocka_unit_test(test_escaping),
	    cmocka_unit_test(test_latest_run_only),
	    cmocka_unit_test(test_no_data_and_no_events),
	    cmocka_unit_test(test_odd_fields),
	    cmocka_unit_test(test_multi_target),
	    cmocka_unit_test(test_legacy_rollback),
	    cmocka_unit_test(test_store_clock_skew),
	    cmocka_unit_test(test_write_dir),
	    cmocka_unit_test(test_config_without_secrets),
	    cmocka_unit_test(test_store_and_list_agree),
	    cmocka_unit_test(test_store_bundle_is_bounded),
	    cmocka_unit_test(test_store_bundle_reads_summaries),
	};

	umask(022);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
