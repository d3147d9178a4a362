/* Retention (issue 13 section 3): old interval events and verdicts become
 * per-bucket summaries carrying the exact sums of what they replaced; the
 * audit log and recent events are untouched; a second run changes nothing;
 * bounded calls make progress; the figures of one day of a rollout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "rollout/retention.h"
#include "store/store.h"

#define T0   INT64_C(1714557600000) /* 2024-05-01T10:00:00Z, a whole hour */
#define SEC  INT64_C(1000)
#define MIN  (60 * SEC)
#define HOUR (60 * MIN)
#define DAY  (24 * HOUR)

static int64_t clock_now;

static int64_t fake_clock(void *arg)
{
	(void)arg;
	return clock_now;
}

static struct store *open_mem(void)
{
	char err[256];
	struct store *st = store_open("sqlite::memory:", err, sizeof(err));

	assert_non_null(st);
	store_set_clock(st, fake_clock, NULL);
	return st;
}

static void append(struct store *st, int64_t at, const char *kind, const char *subject,
                   const char *details)
{
	clock_now = at;
	assert_int_equal(store_event_append(st, "canaryd", kind, subject, details, NULL), 0);
}

/* One interval (requests/errors given, p99 given) and one verdict per check. */
static void interval(struct store *st, int64_t at, const char *subject, int step, int req, int errs,
                     double p99, int nchecks)
{
	char d[1024];

	snprintf(d, sizeof(d),
	         "{\"interval_end_ms\":%lld,\"interval_ms\":60000,\"step\":%d,\"bake\":false,"
	         "\"targets\":{\"web\":{\"weight\":5.0,\"canary\":{\"requests\":%d,"
	         "\"errors\":%d,\"error_rate\":%.6f,\"p50_ms\":3.5,\"p99_ms\":%.3f,"
	         "\"mean_ms\":4.25},\"baseline\":{\"requests\":%d,\"errors\":0,"
	         "\"error_rate\":0,\"p50_ms\":3.0,\"p99_ms\":9.0,\"mean_ms\":4.0},"
	         "\"historical_baseline\":false}},\"shadow\":{}}",
	         (long long)at, step, req, errs, req ? (double)errs / req : 0.0, p99, req * 19);
	append(st, at, "rollout.interval", subject, d);
	for (int c = 0; c < nchecks; c++) {
		snprintf(d, sizeof(d),
		         "{\"check\":\"check-%d\",\"metric\":\"error_rate\",\"outcome\":\"%s\","
		         "\"canary\":{\"value\":0.01,\"requests\":%d},\"baseline\":{\"value\":0,"
		         "\"requests\":%d},\"min_samples\":100,\"interval_ms\":60000,"
		         "\"bound\":\"max\",\"bound_value\":0.05,\"observed\":%d,\"test\":null,"
		         "\"reason\":\"error_rate 0.0100 is within the bound 0.0500 (max) of "
		         "check-%d\",\"target\":\"web\",\"step\":%d,\"interval_end_ms\":%lld,"
		         "\"consecutive_failures\":0,\"bake\":false}",
		         c, errs > 5 ? "fail" : "pass", req, req * 19, errs, c, step,
		         (long long)at);
		append(st, at, "verdict", subject, d);
	}
}

struct tally {
	size_t n, bytes;
	size_t by_kind[6];
};

static const char *const KINDS[] = {
    "rollout.interval",        "verdict",      RETENTION_INTERVAL_SUMMARY,
    RETENTION_VERDICT_SUMMARY, "rollout.step", "other"};

static int count_row(void *arg, int64_t id, int64_t ts_ms, const char *actor, const char *kind,
                     const char *subject, const char *details)
{
	struct tally *t = arg;
	size_t k;

	(void)id;
	(void)ts_ms;
	for (k = 0; k < 5 && strcmp(KINDS[k], kind); k++)
		;
	t->by_kind[k]++;
	t->n++;
	/* what a row costs on disk, roughly: its text plus id and time */
	t->bytes += strlen(actor) + strlen(kind) + strlen(subject) + strlen(details) + 16;
	return 0;
}

static struct tally tally_of(struct store *st)
{
	struct store_events_query q = {0};
	struct tally t = {0};

	assert_int_equal(store_events_each(st, &q, count_row, &t), 0);
	return t;
}

/* Every event as JSON, for before/after comparisons. */
static json_t *all_events(struct store *st)
{
	json_t *all = json_array();
	int64_t since = 0;

	for (;;) {
		json_t *page = NULL, *x;
		size_t i;

		assert_int_equal(store_events_list(st, since, STORE_EVENTS_LIMIT_MAX, NULL, &page),
		                 0);
		json_array_foreach(page, i, x)
		{
			since = json_integer_value(json_object_get(x, "id"));
			json_array_append(all, x);
		}
		i = json_array_size(page);
		json_decref(page);
		if (i < STORE_EVENTS_LIMIT_MAX)
			return all;
	}
}

static json_t *of_kind(const json_t *all, const char *kind)
{
	json_t *out = json_array(), *x;
	size_t i;

	json_array_foreach((json_t *)all, i, x)
	{
		if (!strcmp(json_string_value(json_object_get(x, "kind")), kind))
			json_array_append(out, x);
	}
	return out;
}

static int64_t jget(const json_t *o, const char *path)
{
	char key[64];
	const char *dot;

	while ((dot = strchr(path, '.'))) {
		snprintf(key, sizeof(key), "%.*s", (int)(dot - path), path);
		o = json_object_get(o, key);
		path = dot + 1;
	}
	assert_true(json_is_integer(json_object_get(o, path)));
	return json_integer_value(json_object_get(o, path));
}

static double jreal(const json_t *o, const char *a, const char *b, const char *c, const char *d)
{
	const json_t *v = json_object_get(json_object_get(json_object_get(o, a), b), c);

	v = d ? json_object_get(v, d) : v;
	assert_true(json_is_number(v));
	return json_number_value(v);
}

static void test_compaction_sums_audit_and_idempotence(void **state)
{
	struct store *st = open_mem();
	struct retention_conf c = {.full_resolution_ms = DAY, .summary_interval_ms = HOUR};
	struct retention_stats s;
	json_t *before, *after, *audit_before, *audit_after, *sums, *vsums, *left;
	long long req_sum = 0, err_sum = 0;
	double p99_max = 0;
	int64_t now = T0 + 3 * DAY;
	size_t i;
	json_t *x;

	(void)state;
	append(st, T0, "rollout.started", "rollout/web", "{\"generation\":1}");
	append(st, T0, "config.loaded", "canaryd.yaml", NULL);
	/* two hours of 1 m intervals at step 0, with a spike at 10:37 */
	for (int m = 0; m < 120; m++) {
		int req = 100 + m, errs = m % 7;
		double p99 = m == 37 ? 900.0 : 10.0 + m % 5;

		interval(st, T0 + m * MIN, "rollout/web", 0, req, errs, p99, 2);
		if (m < 60) {
			req_sum += req;
			err_sum += errs;
			p99_max = p99 > p99_max ? p99 : p99_max;
		}
		if (m == 90)
			append(st, T0 + m * MIN, "rollout.step", "rollout/web", "{\"step\":1}");
	}
	/* another rollout interleaved, and recent events (inside the window) */
	interval(st, T0 + 5 * MIN, "rollout/api", 0, 10, 0, 5.0, 1);
	interval(st, now - HOUR, "rollout/web", 1, 50, 1, 7.0, 2);
	append(st, now - 10, "flag.updated", "flag/x", "{\"before\":null,\"after\":{}}");

	before = all_events(st);
	audit_before = of_kind(before, "rollout.step");
	clock_now = now;
	assert_int_equal(retention_compact(st, now, &c, 0, &s), 0);
	assert_int_equal(s.scanned, 121 + 120 * 2 + 1);
	assert_int_equal(s.replaced, s.scanned);
	/* web: 2 buckets x (intervals, verdicts); api: 1 x 2 */
	assert_int_equal(s.summaries, 6);

	after = all_events(st);
	/* the audit log is untouched, event by event */
	audit_after = of_kind(after, "rollout.step");
	assert_true(json_equal(audit_before, audit_after));
	json_decref(audit_after);
	audit_after = of_kind(after, "rollout.started");
	assert_int_equal(json_array_size(audit_after), 1);
	json_decref(audit_after);
	audit_after = of_kind(after, "flag.updated");
	assert_int_equal(json_array_size(audit_after), 1);
	json_decref(audit_after);
	/* the recent interval and its verdicts keep full resolution */
	left = of_kind(after, "rollout.interval");
	assert_int_equal(json_array_size(left), 1);
	assert_int_equal(jget(json_array_get(left, 0), "details.interval_end_ms"), now - HOUR);
	json_decref(left);
	left = of_kind(after, "verdict");
	assert_int_equal(json_array_size(left), 2);
	json_decref(left);

	/* the first hour of web: exact sums of what it replaced */
	sums = of_kind(after, RETENTION_INTERVAL_SUMMARY);
	assert_int_equal(json_array_size(sums), 3);
	json_array_foreach(sums, i, x)
	{
		const json_t *d = json_object_get(x, "details");

		if (strcmp(json_string_value(json_object_get(x, "subject")), "rollout/web") ||
		    jget(d, "bucket_start_ms") != T0)
			continue;
		assert_int_equal(jget(d, "replaces.count"), 60);
		assert_int_equal(jget(d, "replaces.first_ts_ms"), T0);
		assert_int_equal(jget(d, "replaces.last_ts_ms"), T0 + 59 * MIN);
		assert_true(jget(d, "replaces.first_id") < jget(d, "replaces.last_id"));
		assert_int_equal(jget(d, "bucket_ms"), HOUR);
		assert_int_equal(jget(d, "interval_start_ms"), T0 - MIN);
		assert_int_equal(jget(d, "interval_end_ms"), T0 + 59 * MIN);
		assert_int_equal(jget(d, "targets.web.canary.requests"), req_sum);
		assert_int_equal(jget(d, "targets.web.canary.errors"), err_sum);
		assert_int_equal(jget(d, "targets.web.stats.canary.requests.sum"), req_sum);
		assert_int_equal(jget(d, "targets.web.stats.canary.requests.min"), 100);
		assert_int_equal(jget(d, "targets.web.stats.canary.requests.max"), 159);
		assert_int_equal(jget(d, "targets.web.stats.canary.requests.n"), 60);
		assert_int_equal(jget(d, "targets.web.baseline.requests"), req_sum * 19);
		assert_int_equal(jget(d, "targets.web.intervals"), 60);
		/* the spike survives: latency at its maximum */
		assert_true(jreal(d, "targets", "web", "canary", "p99_ms") == p99_max);
		assert_true(jreal(d, "targets", "web", "canary", "error_rate") ==
		            (double)err_sum / (double)req_sum);
	}
	json_decref(sums);
	vsums = of_kind(after, RETENTION_VERDICT_SUMMARY);
	assert_int_equal(json_array_size(vsums), 3);
	json_array_foreach(vsums, i, x)
	{
		const json_t *d = json_object_get(x, "details");

		if (strcmp(json_string_value(json_object_get(x, "subject")), "rollout/web") ||
		    jget(d, "bucket_start_ms") != T0)
			continue;
		assert_int_equal(jget(d, "replaces.count"), 120);
		assert_int_equal(jget(d, "checks.check-0.count"), 60);
		assert_int_equal(jget(d, "checks.check-1.observed.sum"), err_sum);
		assert_int_equal(jget(d, "checks.check-1.canary_requests.sum"), req_sum);
		/* m % 7 > 5 fails: m = 6, 13, ... 55 in the first hour */
		assert_int_equal(jget(d, "checks.check-0.outcomes.fail"), 8);
		assert_int_equal(jget(d, "checks.check-0.outcomes.pass"), 52);
	}
	json_decref(vsums);

	/* a second run changes nothing */
	assert_int_equal(retention_compact(st, now, &c, 0, &s), 0);
	assert_int_equal(s.replaced, 0);
	assert_int_equal(s.summaries, 0);
	audit_after = all_events(st);
	assert_true(json_equal(after, audit_after));
	json_decref(audit_after);

	json_decref(before);
	json_decref(after);
	json_decref(audit_before);
	store_close(st);
}

static void test_bounded_calls_make_progress(void **state)
{
	struct store *st = open_mem();
	struct retention_conf c = {.full_resolution_ms = HOUR, .summary_interval_ms = HOUR};
	struct retention_stats s;
	struct tally t;
	int rc, calls = 0;
	size_t replaced = 0, summaries = 0;

	(void)state;
	/* one long run (300 events in one bucket) and a budget of 50 per call */
	for (int i = 0; i < 300; i++)
		interval(st, T0 + i * 10 * SEC, "rollout/web", 0, 10, 0, 1.0, 0);
	do {
		rc = retention_compact(st, T0 + 5 * HOUR, &c, 50, &s);
		assert_true(rc >= 0);
		assert_true(s.scanned <= 50);
		replaced += s.replaced;
		summaries += s.summaries;
		assert_true(++calls < 100);
	} while (rc == 1);
	assert_int_equal(replaced, 300);
	t = tally_of(st);
	assert_int_equal(t.by_kind[0], 0);
	assert_int_equal(t.by_kind[2], summaries);
	/* never more summaries than calls: each call writes at most its partial run */
	assert_true(summaries <= (size_t)calls);

	assert_int_equal(retention_compact(st, T0, NULL, 0, NULL), -EINVAL);
	c.summary_interval_ms = 0;
	assert_int_equal(retention_compact(st, T0, &c, 0, NULL), -EINVAL);
	c.summary_interval_ms = HOUR;
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(retention_compact(st, T0, &c, 0, NULL), STORE_ERR_TXN);
	assert_int_equal(store_rollback(st), 0);
	store_close(st);
}

/* The figure of issue 13: one rollout at 1 m with 5 checks, one day, before and after. */
static void test_one_day_bytes(void **state)
{
	struct store *st = open_mem();
	struct retention_conf c;
	struct tally before, after;

	(void)state;
	retention_conf_default(&c);
	for (int m = 0; m < 24 * 60; m++)
		interval(st, T0 + m * MIN, "rollout/web", m / 240, 1000, m % 3, 12.5, 5);
	before = tally_of(st);
	assert_int_equal(before.n, 24 * 60 * 6);
	for (int calls = 0; retention_compact(st, T0 + 9 * DAY, &c, 0, NULL) == 1; calls++)
		assert_true(calls < 100); /* 8640 events at 2000 a call */
	after = tally_of(st);
	/* 24 hourly buckets of intervals and of verdicts */
	assert_int_equal(after.n, 48);
	assert_true(after.bytes * 20 < before.bytes);
	print_message("events of one day (1 m interval, 5 checks): %zu rows, %zu bytes before; "
	              "%zu rows, %zu bytes after compaction (%.1fx smaller)\n",
	              before.n, before.bytes, after.n, after.bytes,
	              (double)before.bytes / (double)after.bytes);
	store_close(st);
}

/* `events:` in the config: defaults, durations, and the checks on them. */
static void test_config_key(void **state)
{
	static const char *const bad[] = {
	    "events:\n  summary_interval: 0\n",
	    "events:\n  full_resolution: 30m\n  summary_interval: 1h\n",
	    "events:\n  keep: 7d\n",
	    "events: 7d\n",
	};
	struct config_errors errs = {0};
	struct config *cfg;
	const char *yaml = "events:\n  full_resolution: 2d\n  summary_interval: 30m\n";
	char line[512];

	(void)state;
	cfg = config_load_string("t.yaml", "workers: 1\n", 11, &errs);
	assert_non_null(cfg);
	assert_int_equal(cfg->events.full_resolution_ms, RETENTION_FULL_RESOLUTION_DEFAULT_MS);
	assert_int_equal(cfg->events.summary_interval_ms, RETENTION_SUMMARY_INTERVAL_DEFAULT_MS);
	config_free(cfg);
	cfg = config_load_string("t.yaml", yaml, strlen(yaml), &errs);
	assert_non_null(cfg);
	assert_int_equal(cfg->events.full_resolution_ms, 2 * DAY);
	assert_int_equal(cfg->events.summary_interval_ms, 30 * MIN);
	config_free(cfg);
	assert_int_equal(config_errors_count(&errs), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cfg = config_load_string("t.yaml", bad[i], strlen(bad[i]), &errs);
		assert_null(cfg);
		assert_true(config_errors_count(&errs) >= 1);
		config_error_format(config_errors_get(&errs, 0), line, sizeof(line));
		if (!strstr(line, "events"))
			fail_msg("%s: %s", bad[i], line);
		config_errors_release(&errs);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_compaction_sums_audit_and_idempotence),
	    cmocka_unit_test(test_bounded_calls_make_progress),
	    cmocka_unit_test(test_one_day_bytes),
	    cmocka_unit_test(test_config_key),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
