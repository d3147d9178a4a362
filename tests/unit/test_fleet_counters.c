/*
 * test_fleet_counters.c - fleet-wide judging (fleet/counters.h): the text
 * form of a row, the merge (counts and histograms add, restarts are resets,
 * bounded state) and missing-node detection always; with
 * CANARYD_TEST_PG_URL (ctest's unit/test_fleet_counters_pg runs it under
 * tests/pg/pg-run) also the flush and merge through a real PostgreSQL.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "core/loop.h"
#include "fleet/counters.h"
#include "metrics/stats.h"
#include "store/store_pg.h"

static const char *pg_url;

static struct fleet_counters *pure_new(const char *node)
{
	char err[256];
	struct fleet_counters *fc = fleet_counters_new(
	    NULL, NULL, &(struct fleet_counters_config){.node_id = node}, err, sizeof(err));

	assert_non_null(fc);
	return fc;
}

/* A cumulative snapshot of n requests of latency lat_us, e of them 5xx. */
static void snap_of(struct metrics_cohort_snapshot *s, uint64_t n, uint64_t e, uint64_t lat_us)
{
	memset(s, 0, sizeof(*s));
	for (uint64_t i = 0; i < n; i++) {
		s->requests++;
		s->by_class[i < e ? 5 : 2]++;
		hist_add(&s->hist, lat_us);
	}
	s->errors = e;
}

static void test_encode_decode_round_trip(void **state)
{
	struct metrics_cohort_snapshot a, b;
	char text[FLEET_COUNTERS_DATA_MAX];

	(void)state;
	snap_of(&a, 10, 3, 1500);
	a.proxy_errors = 1;
	a.upstream[METRICS_ERR_RESET] = 1;
	hist_add(&a.hist, 250000);
	hist_add(&a.hist, 7);
	a.requests += 2;
	assert_int_equal(fleet_counters_encode(&a, text, sizeof(text)), 0);
	assert_int_equal(fleet_counters_decode(text, &b), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	/* torn or hostile rows are refused, never half-read */
	assert_int_equal(fleet_counters_decode("", &b), -EINVAL);
	assert_int_equal(fleet_counters_decode("1 2 3", &b), -EINVAL);
	text[strlen(text) - 1] = 'x';
	assert_int_equal(fleet_counters_decode(text, &b), -EINVAL);
	assert_int_equal(b.requests, 0);
	assert_int_equal(fleet_counters_decode("1 0 0 0 0 1 0 0 0 0 0 0 0 0 0 0 1 5 999:1", &b),
	                 -EINVAL);
	assert_int_equal(fleet_counters_decode("1 0 0 0 0 1 0 0 0 0 0 0 0 0 0 0 1 5 5:2", &b),
	                 -EINVAL);
	assert_int_equal(fleet_counters_decode("1 0 0 0 0 1 0 0 0 0 0 0 0 0 0 0 1 5 5:1", &b), 0);
	assert_int_equal(b.hist.counts[5], 1);
	assert_int_equal(fleet_counters_encode(&a, text, 8), -ENOBUFS);
}

static void test_merge_adds_nodes_and_histograms(void **state)
{
	struct fleet_counters *fc = pure_new("node-a");
	struct metrics_cohort_snapshot a, b, out;

	(void)state;
	snap_of(&a, 10, 1, 1000);
	snap_of(&b, 5, 2, 90000);
	assert_int_equal(fleet_counters_ingest(fc, "node-a", 1, "web", "v2", COHORT_CANARY, &a), 0);
	assert_int_equal(fleet_counters_ingest(fc, "node-b", 2, "web", "v2", COHORT_CANARY, &b), 0);
	assert_int_equal(fleet_counters_read(fc, "web", "v2", COHORT_CANARY, &out), 0);
	assert_int_equal(out.requests, 15);
	assert_int_equal(out.errors, 3);
	assert_int_equal(out.by_class[5], 3);
	assert_int_equal(out.hist.n, 15);
	assert_int_equal(out.hist.counts[hist_index(1000)], 10);
	assert_int_equal(out.hist.counts[hist_index(90000)], 5);
	assert_int_equal(out.hist.sum_us, 10 * 1000 + 5 * 90000);
	/* another cohort and another version are other series */
	assert_int_equal(fleet_counters_read(fc, "web", "v2", COHORT_BASELINE, &out), 0);
	assert_int_equal(out.requests, 0);
	assert_int_equal(fleet_counters_read(fc, "web", "v1", COHORT_CANARY, &out), 0);
	assert_int_equal(out.requests, 0);
	/* a node's next cumulative row adds only its delta; an unchanged row adds nothing */
	snap_of(&a, 14, 1, 1000);
	assert_int_equal(fleet_counters_ingest(fc, "node-a", 1, "web", "v2", COHORT_CANARY, &a), 0);
	assert_int_equal(fleet_counters_ingest(fc, "node-b", 2, "web", "v2", COHORT_CANARY, &b), 0);
	assert_int_equal(fleet_counters_read(fc, "web", "v2", COHORT_CANARY, &out), 0);
	assert_int_equal(out.requests, 19);
	assert_int_equal(out.hist.counts[hist_index(1000)], 14);
	assert_int_equal(out.hist.n, 19);
	fleet_counters_free(fc);
}

static void test_restart_is_a_reset(void **state)
{
	struct fleet_counters *fc = pure_new("node-a");
	struct metrics_cohort_snapshot a, out;

	(void)state;
	snap_of(&a, 100, 0, 500);
	fleet_counters_ingest(fc, "node-b", 7, "web", "v2", COHORT_CANARY, &a);
	/* restarted (a new start id) and already past its old count: all of it is new */
	snap_of(&a, 120, 0, 500);
	fleet_counters_ingest(fc, "node-b", 8, "web", "v2", COHORT_CANARY, &a);
	fleet_counters_read(fc, "web", "v2", COHORT_CANARY, &out);
	assert_int_equal(out.requests, 220);
	/* the same start id but a counter went backwards: also a restart */
	snap_of(&a, 30, 0, 500);
	fleet_counters_ingest(fc, "node-b", 8, "web", "v2", COHORT_CANARY, &a);
	fleet_counters_read(fc, "web", "v2", COHORT_CANARY, &out);
	assert_int_equal(out.requests, 250);
	assert_int_equal(out.hist.n, 250);
	snap_of(&a, 35, 0, 500);
	fleet_counters_ingest(fc, "node-b", 8, "web", "v2", COHORT_CANARY, &a);
	fleet_counters_read(fc, "web", "v2", COHORT_CANARY, &out);
	assert_int_equal(out.requests, 255);
	fleet_counters_free(fc);
}

/*
 * The store away: the last merge's total plus this node's own traffic since
 * the merge last saw its row, so a canary failing on this node's traffic is
 * still judged (docs/fleet.md, rollback while PostgreSQL is down).
 */
static void test_degraded_read_adds_own_traffic(void **state)
{
	struct fleet_counters *fc = pure_new("node-a");
	struct metrics_cohort_snapshot a, b, local, out;
	uint64_t me;

	(void)state;
	/* pure_new's start id is random: learn it through a degraded read of nothing */
	snap_of(&b, 50, 5, 500);
	fleet_counters_ingest(fc, "node-b", 2, "web", "v2", COHORT_CANARY, &b);
	snap_of(&local, 40, 4, 500);
	assert_int_equal(fleet_counters_read_degraded(fc, "web", "v2", COHORT_CANARY, &local, &out),
	                 0);
	/* no row of ours merged yet: all of our 40 count */
	assert_int_equal(out.requests, 90);
	assert_int_equal(out.errors, 9);
	me = fleet_counters_start_id(fc);
	snap_of(&a, 40, 4, 500);
	fleet_counters_ingest(fc, "node-a", me, "web", "v2", COHORT_CANARY, &a);
	fleet_counters_read(fc, "web", "v2", COHORT_CANARY, &out);
	assert_int_equal(out.requests, 90);
	/* the store goes away; we serve 30 more, 20 of them errors */
	snap_of(&local, 70, 24, 500);
	assert_int_equal(fleet_counters_read_degraded(fc, "web", "v2", COHORT_CANARY, &local, &out),
	                 0);
	assert_int_equal(out.requests, 120);
	assert_int_equal(out.errors, 29);
	assert_int_equal(out.hist.n, 120);
	/* the merged total itself is untouched */
	fleet_counters_read(fc, "web", "v2", COHORT_CANARY, &out);
	assert_int_equal(out.requests, 90);
	assert_int_equal(fleet_counters_read_degraded(fc, "web", "v2", COHORT_CANARY, NULL, &out),
	                 -EINVAL);
	fleet_counters_free(fc);
}

static void test_state_is_bounded(void **state)
{
	struct fleet_counters *fc = pure_new("node-a");
	struct metrics_cohort_snapshot a, out;
	char ver[32];
	int refused = 0;

	(void)state;
	snap_of(&a, 1, 0, 10);
	for (int i = 0; i < FLEET_COUNTERS_MAX_SERIES + 5; i++) {
		snprintf(ver, sizeof(ver), "v%d", i);
		if (fleet_counters_ingest(fc, "node-a", 1, "web", ver, COHORT_CANARY, &a) ==
		    -ENOSPC)
			refused++;
	}
	assert_int_equal(refused, 5);
	assert_int_equal(fleet_counters_dropped(fc), 5);
	assert_int_equal(fleet_counters_read(fc, "web", "v0", COHORT_CANARY, &out), 0);
	assert_int_equal(out.requests, 1);
	fleet_counters_free(fc);
}

static void test_missing_nodes_are_live_and_late(void **state)
{
	struct fleet_counters *fc = pure_new("node-a");
	json_t *m;

	(void)state;
	m = fleet_counters_missing(fc, 1000);
	assert_int_equal(json_array_size(m), 0);
	json_decref(m);
	fleet_counters_note_node(fc, "node-c", 1, 900);       /* live, flushed before */
	fleet_counters_note_node(fc, "node-a", 1, 1500);      /* live, flushed since */
	fleet_counters_note_node(fc, "node-d", 0, 100);       /* gone: not waited for */
	fleet_counters_note_node(fc, "node-b", 1, INT64_MIN); /* live, never flushed */
	m = fleet_counters_missing(fc, 1000);
	assert_int_equal(json_array_size(m), 2);
	assert_string_equal(json_string_value(json_array_get(m, 0)), "node-b");
	assert_string_equal(json_string_value(json_array_get(m, 1)), "node-c");
	json_decref(m);
	m = fleet_counters_missing(fc, 900);
	assert_int_equal(json_array_size(m), 1);
	json_decref(m);
	fleet_counters_clear_nodes(fc);
	m = fleet_counters_missing(fc, 1000);
	assert_int_equal(json_array_size(m), 0);
	json_decref(m);
	fleet_counters_free(fc);
}

/* --- against PostgreSQL ------------------------------------------------------------ */

static PGconn *admin_conn(void)
{
	char err[256];
	PGconn *pg = (PGconn *)store_pg_connect(pg_url, err, sizeof(err));

	if (!pg)
		fail_msg("connect: %s", err);
	return pg;
}

static void sql(PGconn *pg, const char *q)
{
	PGresult *res = PQexec(pg, q);
	ExecStatusType st = PQresultStatus(res);

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
		fail_msg("%s: %s", q, PQresultErrorMessage(res));
	PQclear(res);
}

/* The node registry as fleet/fleet.c keeps it (same definition). */
static int pg_setup(void **state)
{
	PGconn *pg = admin_conn();

	sql(pg, "DROP TABLE IF EXISTS fleet_counters, fleet_flushes;"
	        "CREATE TABLE IF NOT EXISTS fleet_nodes (id TEXT COLLATE \"C\" PRIMARY KEY,"
	        " address TEXT NOT NULL, role TEXT NOT NULL, term BIGINT NOT NULL,"
	        " applied_rev BIGINT NOT NULL, last_seen TIMESTAMPTZ NOT NULL);"
	        "DELETE FROM fleet_nodes");
	*state = pg;
	return 0;
}

static int pg_teardown(void **state)
{
	PQfinish(*state);
	return 0;
}

static void seen(PGconn *pg, const char *node, const char *ago)
{
	char q[512];

	snprintf(
	    q, sizeof(q),
	    "INSERT INTO fleet_nodes VALUES ('%s', '', 'follower', 1, 0, now() - interval '%s')"
	    " ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen",
	    node, ago);
	sql(pg, q);
}

struct pg_node {
	struct metrics_registry *reg;
	struct fleet_counters *fc;
	int web2;
};

static void node_up(struct pg_node *n, const char *id)
{
	char err[256];

	n->reg = metrics_registry_new(2, 16);
	assert_non_null(n->reg);
	n->web2 = metrics_series_id(n->reg, "web", "v2");
	assert_true(n->web2 >= 0);
	n->fc = fleet_counters_new(
	    NULL, n->reg,
	    &(struct fleet_counters_config){.url = pg_url, .node_id = id, .lease_ms = 3000}, err,
	    sizeof(err));
	if (!n->fc)
		fail_msg("fleet_counters_new: %s", err);
}

static void node_down(struct pg_node *n)
{
	fleet_counters_free(n->fc);
	metrics_registry_free(n->reg);
}

static void record(struct pg_node *n, enum cohort c, int count, int status, uint64_t lat)
{
	for (int i = 0; i < count; i++)
		metrics_record(n->reg, (unsigned)(i % 2), n->web2, c, status, lat,
		               METRICS_ERR_NONE);
}

static void test_pg_flush_merge_restart_and_missing(void **state)
{
	PGconn *pg = *state;
	struct pg_node a, b, b2, c;
	struct metrics_cohort_snapshot out;
	json_t *m;
	int64_t t0;

	node_up(&a, "node-a");
	node_up(&b, "node-b");
	seen(pg, "node-a", "0 s");
	seen(pg, "node-b", "0 s");
	seen(pg, "node-c", "0 s");  /* live but never flushes */
	seen(pg, "node-d", "60 s"); /* gone */
	record(&a, COHORT_CANARY, 30, 200, 1000);
	record(&a, COHORT_CANARY, 3, 503, 1000);
	record(&b, COHORT_CANARY, 20, 200, 80000);
	record(&b, COHORT_BASELINE, 40, 200, 1000);
	t0 = (int64_t)clock_wall_ms() - 5; /* the "interval" starts before these flushes */
	assert_int_equal(fleet_counters_flush(a.fc), 0);
	assert_int_equal(fleet_counters_flush(b.fc), 0);
	assert_int_equal(fleet_counters_merge(a.fc), 0);
	assert_int_equal(fleet_counters_read(a.fc, "web", "v2", COHORT_CANARY, &out), 0);
	assert_int_equal(out.requests, 53);
	assert_int_equal(out.errors, 3);
	assert_int_equal(out.hist.counts[hist_index(1000)], 33);
	assert_int_equal(out.hist.counts[hist_index(80000)], 20);
	assert_int_equal(fleet_counters_read(a.fc, "web", "v2", COHORT_BASELINE, &out), 0);
	assert_int_equal(out.requests, 40);
	m = fleet_counters_missing(a.fc, t0);
	assert_int_equal(json_array_size(m), 1);
	assert_string_equal(json_string_value(json_array_get(m, 0)), "node-c");
	json_decref(m);
	/* a second merge of unchanged rows adds nothing */
	assert_int_equal(fleet_counters_merge(a.fc), 0);
	fleet_counters_read(a.fc, "web", "v2", COHORT_CANARY, &out);
	assert_int_equal(out.requests, 53);
	/* node-b restarts: fewer requests than before, a new start id; its new ones add */
	node_down(&b);
	node_up(&b2, "node-b");
	record(&b2, COHORT_CANARY, 7, 200, 1000);
	assert_int_equal(fleet_counters_flush(b2.fc), 0);
	assert_int_equal(fleet_counters_merge(a.fc), 0);
	fleet_counters_read(a.fc, "web", "v2", COHORT_CANARY, &out);
	assert_int_equal(out.requests, 60);
	/* node-c's first flush: no longer missing, and its counts join */
	node_up(&c, "node-c");
	record(&c, COHORT_CANARY, 5, 500, 1000);
	assert_int_equal(fleet_counters_flush(c.fc), 0);
	assert_int_equal(fleet_counters_merge(a.fc), 0);
	fleet_counters_read(a.fc, "web", "v2", COHORT_CANARY, &out);
	assert_int_equal(out.requests, 65);
	assert_int_equal(out.errors, 8);
	m = fleet_counters_missing(a.fc, t0);
	assert_int_equal(json_array_size(m), 0);
	json_decref(m);
	/* a later interval: every live node is late until it flushes again */
	m = fleet_counters_missing(a.fc, (int64_t)clock_wall_ms() + 1000);
	assert_int_equal(json_array_size(m), 3);
	json_decref(m);
	node_down(&a);
	node_down(&b2);
	node_down(&c);
}

int main(void)
{
	const struct CMUnitTest pure[] = {
	    cmocka_unit_test(test_encode_decode_round_trip),
	    cmocka_unit_test(test_merge_adds_nodes_and_histograms),
	    cmocka_unit_test(test_restart_is_a_reset),
	    cmocka_unit_test(test_degraded_read_adds_own_traffic),
	    cmocka_unit_test(test_state_is_bounded),
	    cmocka_unit_test(test_missing_nodes_are_live_and_late),
	};
	const struct CMUnitTest pgt[] = {
	    cmocka_unit_test_setup_teardown(test_pg_flush_merge_restart_and_missing, pg_setup,
	                                    pg_teardown),
	};
	int rc = cmocka_run_group_tests_name("fleet_counters", pure, NULL, NULL);

	pg_url = getenv("CANARYD_TEST_PG_URL");
	if (pg_url && *pg_url)
		rc |= cmocka_run_group_tests_name("fleet_counters_pg", pgt, NULL, NULL);
	return rc;
}
