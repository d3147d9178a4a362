/* test_mirror.c - the shadow-traffic bookkeeping (src/proxy/mirror.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/mirror.h"

static void test_classify(void **state)
{
	(void)state;
	assert_int_equal(mirror_classify(200, 204, 0, 0, 1, 2), MIRROR_MATCHED);
	assert_int_equal(mirror_classify(200, 500, 0, 0, 1, 1), MIRROR_STATUS_MISMATCH);
	assert_int_equal(mirror_classify(404, 200, 0, 0, 1, 1), MIRROR_STATUS_MISMATCH);
	assert_int_equal(mirror_classify(200, 200, 0, 1, 1, 2), MIRROR_BODY_MISMATCH);
	assert_int_equal(mirror_classify(200, 200, 0, 1, 7, 7), MIRROR_MATCHED);
	assert_int_equal(mirror_classify(200, 200, 1, 0, 1, 1), MIRROR_SHADOW_ERROR);
	assert_int_equal(mirror_classify(200, 0, 0, 0, 1, 1), MIRROR_SHADOW_ERROR);
	/* the status class decides before the body */
	assert_int_equal(mirror_classify(200, 503, 0, 1, 1, 2), MIRROR_STATUS_MISMATCH);
}

static void test_hash_is_incremental(void **state)
{
	uint64_t a = mirror_hash(MIRROR_HASH_INIT, "hello world", 11);
	uint64_t b = mirror_hash(mirror_hash(MIRROR_HASH_INIT, "hello ", 6), "world", 5);

	(void)state;
	assert_true(a == b);
	assert_true(a != mirror_hash(MIRROR_HASH_INIT, "hello worle", 11));
	/* FNV-1a 64 of "a" */
	assert_true(mirror_hash(MIRROR_HASH_INIT, "a", 1) == 0xaf63dc4c8601ec8cULL);
}

static struct mirror_mismatch mk(enum mirror_result r, const char *path, int ps, int ss)
{
	struct mirror_mismatch m;

	memset(&m, 0, sizeof(m));
	m.result = r;
	m.time_ms = 1000;
	snprintf(m.method, sizeof(m.method), "GET");
	snprintf(m.path, sizeof(m.path), "%s", path);
	m.primary_status = ps;
	m.shadow_status = ss;
	m.primary_us = 1000;
	m.shadow_us = 301000;
	return m;
}

static void test_counters_ring_and_read(void **state)
{
	struct mirror_stats *ms = mirror_stats_new(2);
	struct mirror_snapshot snap;
	struct mirror_mismatch out[MIRROR_RING + 5];
	int a, b;

	(void)state;
	a = mirror_stats_slot(ms, "web");
	b = mirror_stats_slot(ms, "api");
	assert_int_equal(a, 0);
	assert_int_equal(b, 1);
	assert_int_equal(mirror_stats_slot(ms, "web"), 0); /* idempotent */
	assert_int_equal(mirror_stats_find(ms, "api"), 1);
	assert_int_equal(mirror_stats_find(ms, "nope"), -ENOENT);
	assert_int_equal(mirror_stats_read(ms, 7, &snap), -ENOENT);

	for (int i = 0; i < 3; i++)
		mirror_stats_sent(ms, a, (unsigned)i % 2);
	mirror_stats_count(ms, a, 0, MIRROR_DROPPED);
	mirror_stats_count(ms, a, 1, MIRROR_METHOD);
	mirror_stats_fault(ms, a, 1, MIRROR_FAULT_ABORT);
	{
		struct mirror_mismatch m = mk(MIRROR_MATCHED, "/ok", 200, 200);

		mirror_stats_compared(ms, a, 0, &m);
		m = mk(MIRROR_STATUS_MISMATCH, "/bad", 200, 500);
		mirror_stats_compared(ms, a, 1, &m);
		m = mk(MIRROR_SHADOW_ERROR, "/err", 200, 0);
		mirror_stats_compared(ms, a, 0, &m);
	}
	/* out of range: ignored, no crash */
	mirror_stats_sent(ms, 42, 0);
	mirror_stats_sent(ms, a, 9);

	assert_int_equal(mirror_stats_read(ms, a, &snap), 0);
	assert_int_equal(snap.mirrored, 3);
	assert_int_equal(snap.matched, 1);
	assert_int_equal(snap.status_mismatch, 1);
	assert_int_equal(snap.shadow_error, 1);
	assert_int_equal(snap.dropped, 1);
	assert_int_equal(snap.method, 1);
	assert_int_equal(snap.faults[MIRROR_FAULT_ABORT], 1);
	assert_int_equal(snap.primary.n, 3);
	assert_int_equal(snap.shadow.n, 2); /* no latency for a shadow that failed */
	assert_int_equal(snap.shadow.sum_us, 602000);
	assert_true(hist_quantile(&snap.shadow, 0.5) > 290000);

	/* the ring keeps the mismatches only, newest first */
	assert_int_equal(mirror_stats_mismatches(ms, a, out, MIRROR_RING), 2);
	assert_string_equal(out[0].path, "/err");
	assert_string_equal(out[1].path, "/bad");
	assert_int_equal(out[1].shadow_status, 500);
	/* bounded: the oldest fall out */
	for (int i = 0; i < MIRROR_RING + 5; i++) {
		char p[32];
		struct mirror_mismatch m;

		snprintf(p, sizeof(p), "/p%d", i);
		m = mk(MIRROR_BODY_MISMATCH, p, 200, 200);
		mirror_stats_compared(ms, b, 0, &m);
	}
	assert_int_equal(mirror_stats_mismatches(ms, b, out, MIRROR_RING + 5), MIRROR_RING);
	assert_string_equal(out[0].path, "/p54");
	assert_string_equal(out[MIRROR_RING - 1].path, "/p5");
	mirror_stats_free(ms);
}

static void test_prometheus(void **state)
{
	struct mirror_stats *ms = mirror_stats_new(1);
	struct mirror_mismatch m = mk(MIRROR_STATUS_MISMATCH, "/bad", 200, 500);
	struct buf out;
	const char *t;

	(void)state;
	buf_init(&out, 1 << 20);
	mirror_stats_slot(ms, "idle"); /* nothing recorded: left out */
	mirror_stats_slot(ms, "we\"b");
	mirror_stats_sent(ms, 1, 0);
	mirror_stats_compared(ms, 1, 0, &m);
	assert_int_equal(mirror_stats_write_prometheus(ms, &out), 0);
	t = buf_cstr(&out);
	assert_non_null(strstr(t, "# TYPE canaryd_mirror_total counter\n"));
	assert_non_null(
	    strstr(t, "canaryd_mirror_total{service=\"we\\\"b\",result=\"status_mismatch\"} 1\n"));
	assert_non_null(
	    strstr(t, "canaryd_mirror_total{service=\"we\\\"b\",result=\"matched\"} 0\n"));
	assert_non_null(strstr(t, "canaryd_mirror_duration_seconds_bucket{service=\"we\\\"b\",side="
	                          "\"shadow\",le=\"0.5\"} 1\n"));
	assert_non_null(strstr(t, "canaryd_mirror_duration_seconds_count{service=\"we\\\"b\",side="
	                          "\"primary\"} 1\n"));
	/* the whole series: the shadow's 301 ms is above 0.25, below 0.5, counted in +Inf */
	assert_non_null(strstr(t, "canaryd_mirror_duration_seconds_bucket{service=\"we\\\"b\",side="
	                          "\"shadow\",le=\"0.25\"} 0\n"));
	assert_non_null(strstr(t, "canaryd_mirror_duration_seconds_bucket{service=\"we\\\"b\",side="
	                          "\"shadow\",le=\"+Inf\"} 1\n"));
	assert_non_null(strstr(t, "canaryd_mirror_duration_seconds_sum{service=\"we\\\"b\",side="
	                          "\"shadow\"} 0.301000\n"));
	assert_non_null(strstr(t, "canaryd_mirror_duration_seconds_sum{service=\"we\\\"b\",side="
	                          "\"primary\"} 0.001000\n"));
	assert_non_null(strstr(t, "canaryd_faults_total{service=\"we\\\"b\",kind=\"abort\"} 0\n"));
	assert_null(strstr(t, "idle"));
	buf_release(&out);
	mirror_stats_free(ms);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_classify),
	    cmocka_unit_test(test_hash_is_incremental),
	    cmocka_unit_test(test_counters_ring_and_read),
	    cmocka_unit_test(test_prometheus),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
