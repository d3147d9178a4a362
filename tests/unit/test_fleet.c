/*
 * test_fleet.c - fleet mode: the pure parts (NOTIFY payloads, the lease
 * clock, the set of local revisions) always; with CANARYD_TEST_PG_URL (ctest's
 * unit/test_fleet_pg runs it under tests/pg/pg-run) also leadership, fencing,
 * the changes feed and a takeover against a real PostgreSQL.
 * Includes fleet.c to reach its statics (STYLE.md 13).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/fleet/fleet.c"

/* --- pure -------------------------------------------------------------------------- */

static void test_parse_notify(void **state)
{
	int64_t rev = -1, term = -1;

	(void)state;
	assert_int_equal(fleet_parse_notify("42,7", &rev, &term), 0);
	assert_int_equal(rev, 42);
	assert_int_equal(term, 7);
	assert_int_equal(fleet_parse_notify("0,0", &rev, &term), 0);
	assert_int_equal(fleet_parse_notify("", &rev, &term), -EINVAL);
	assert_int_equal(fleet_parse_notify("42", &rev, &term), -EINVAL);
	assert_int_equal(fleet_parse_notify(",7", &rev, &term), -EINVAL);
	assert_int_equal(fleet_parse_notify("42,", &rev, &term), -EINVAL);
	assert_int_equal(fleet_parse_notify("-1,7", &rev, &term), -EINVAL);
	assert_int_equal(fleet_parse_notify("4 2,7", &rev, &term), -EINVAL);
	assert_int_equal(fleet_parse_notify("1,2,3", &rev, &term), -EINVAL);
	assert_int_equal(fleet_parse_notify("1234567890123456789,1", &rev, &term), -EINVAL);
	assert_int_equal(fleet_parse_notify(NULL, &rev, &term), -EINVAL);
}

static void test_lease_lapses_before_the_database_expires_it(void **state)
{
	(void)state;
	/* 3 s lease: usable for 2.7 s after the renewal was sent */
	assert_false(fleet_lease_lapsed(1000, 1000, 3000));
	assert_false(fleet_lease_lapsed(1000, 3699, 3000));
	assert_true(fleet_lease_lapsed(1000, 3700, 3000));
	assert_true(fleet_lease_lapsed(1000, 100000, 3000)); /* a paused process resumes */
	assert_false(fleet_lease_lapsed(5000, 1000, 3000));  /* renewed "after" now: not lapsed */
}

static void test_local_revisions(void **state)
{
	struct fleet f = {0};

	(void)state;
	f.applied = 10;
	local_add(&f, 9); /* already passed by the feed: not kept */
	local_add(&f, 12);
	local_add(&f, 12); /* twice: once */
	local_add(&f, 15);
	assert_int_equal(f.nlocal, 2);
	assert_false(local_take(&f, 11));
	assert_int_equal(f.nlocal, 2);
	assert_true(local_take(&f, 12));
	assert_int_equal(f.nlocal, 1);
	assert_false(local_take(&f, 14));
	assert_true(local_take(&f, 15));
	assert_int_equal(f.nlocal, 0);
	/* bounded: the oldest go first */
	for (int64_t r = 100; r < 100 + LOCAL_REVS_MAX + 5; r++)
		local_add(&f, r);
	assert_int_equal(f.nlocal, LOCAL_REVS_MAX);
	assert_int_equal(f.local[0], 105);
	free(f.local);
}

/* --- against PostgreSQL ------------------------------------------------------------ */

static const char *pg_url;

struct node {
	struct store *st;
	struct state *state;
	struct fleet *fleet;
	int remote_flags, remote_deletes, leads;
	char last_json[256];
};

struct pgfix {
	char db[64];
	char url[512];
	struct loop *loop;
	struct node a, b;
};

static void admin_sql(const char *sql)
{
	PGconn *c = PQconnectdb(pg_url);
	PGresult *r;

	assert_int_equal(PQstatus(c), CONNECTION_OK);
	r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
		fail_msg("%s: %s", sql, PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
}

static void db_sql(struct pgfix *fx, const char *sql)
{
	PGconn *c = PQconnectdb(fx->url);
	PGresult *r;

	assert_int_equal(PQstatus(c), CONNECTION_OK);
	r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
		fail_msg("%s: %s", sql, PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
}

static void on_flag(void *arg, const struct state_update *u)
{
	struct node *n = arg;

	if (u->origin != STATE_REMOTE)
		return;
	if (u->json) {
		n->remote_flags++;
		snprintf(n->last_json, sizeof(n->last_json), "%s", u->json);
	} else {
		n->remote_deletes++;
	}
}

static void on_lead(void *arg, int64_t term)
{
	struct node *n = arg;

	(void)term;
	n->leads++;
}

static void node_open(struct pgfix *fx, struct node *n, const char *id)
{
	char err[512];

	n->st = store_open(fx->url, err, sizeof(err));
	if (!n->st)
		fail_msg("store_open: %s", err);
	n->state = state_new(n->st);
	assert_non_null(n->state);
	assert_int_equal(state_subscribe(n->state, "flag", on_flag, n), 0);
	n->fleet = fleet_new(fx->loop, n->state,
	                     &(struct fleet_config){.url = fx->url,
	                                            .node_id = id,
	                                            .address = id,
	                                            .lease_ms = 1000,
	                                            .start_rev = state_revision(n->state)},
	                     &(struct fleet_hooks){.leader = on_lead, .arg = n}, err, sizeof(err));
	if (!n->fleet)
		fail_msg("fleet_new: %s", err);
}

static void node_close(struct node *n)
{
	fleet_free(n->fleet);
	n->fleet = NULL;
	state_free(n->state);
	store_close(n->st);
}

static int pg_setup(void **state)
{
	struct pgfix *fx = calloc(1, sizeof(*fx));
	const char *slash = strrchr(pg_url, '/');
	static unsigned serial;
	char sql[128];

	snprintf(fx->db, sizeof(fx->db), "fleet_unit_%d_%u", (int)getpid(), serial++);
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", fx->db);
	admin_sql(sql);
	snprintf(fx->url, sizeof(fx->url), "%.*s/%s", (int)(slash - pg_url), pg_url, fx->db);
	fx->loop = loop_new();
	assert_non_null(fx->loop);
	node_open(fx, &fx->a, "node-a");
	node_open(fx, &fx->b, "node-b");
	*state = fx;
	return 0;
}

static int pg_teardown(void **state)
{
	struct pgfix *fx = *state;
	char sql[128];

	node_close(&fx->a);
	node_close(&fx->b);
	loop_free(fx->loop);
	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", fx->db);
	admin_sql(sql);
	free(fx);
	return 0;
}

static int commit_doc(struct node *n, const char *kind, const char *name, const char *json)
{
	return state_commit(
	    n->state,
	    &(struct state_doc){
	        .kind = kind, .name = name, .json = json, .expect_rev = STORE_REV_ANY},
	    1, NULL, 0, NULL);
}

static int commit_event(struct node *n, const char *kind)
{
	return state_event(n->state, &(struct state_event){.actor = "canaryd", .kind = kind});
}

static void test_one_leader_and_the_first_term(void **state)
{
	struct pgfix *fx = *state;

	/* a started first and found the lock free; b found it held */
	assert_true(fleet_is_leader(fx->a.fleet));
	assert_false(fleet_is_leader(fx->b.fleet));
	assert_int_equal(fleet_term(fx->a.fleet), 1);
	assert_int_equal(fx->a.leads, 1);
	assert_int_equal(fx->b.leads, 0);
}

static void test_fence_refuses_decisions_of_an_old_term_only(void **state)
{
	struct pgfix *fx = *state;

	/* the leader decides; a follower's decision is refused; other writes pass */
	assert_int_equal(commit_doc(&fx->a, "rollout", "web", "{\"state\":\"progressing\"}"), 0);
	assert_int_equal(commit_doc(&fx->b, "rollout", "web", "{\"state\":\"paused\"}"),
	                 ERR_CONFLICT);
	assert_int_equal(commit_event(&fx->b, "rollout.step"), ERR_CONFLICT);
	assert_int_equal(commit_event(&fx->b, "verdict"), ERR_CONFLICT);
	assert_int_equal(commit_doc(&fx->b, "flag", "f", "{\"on\":true}"), 0);
	assert_int_equal(commit_event(&fx->b, "flag.updated"), 0);
	/* another node took over behind a's back (a paused leader): a is fenced at once */
	db_sql(fx, "UPDATE fleet_lease SET term = term + 1 WHERE id = 1");
	assert_int_equal(commit_doc(&fx->a, "rollout", "web", "{\"state\":\"completed\"}"),
	                 ERR_CONFLICT);
	assert_int_equal(commit_event(&fx->a, "rollout.step"), ERR_CONFLICT);
	assert_int_equal(commit_doc(&fx->a, "traffic", "web", "{\"weight\":5}"), 0);
	/* nothing of the refused decisions was written */
	{
		char *json = NULL;

		assert_int_equal(store_doc_get(fx->a.st, "rollout", "web", &json, NULL), 0);
		assert_string_equal(json, "{\"state\":\"progressing\"}");
		free(json);
	}
}

static void test_changes_feed_reaches_the_other_node_once(void **state)
{
	struct pgfix *fx = *state;

	assert_int_equal(commit_doc(&fx->a, "flag", "f1", "{\"v\":1}"), 0);
	assert_int_equal(commit_doc(&fx->a, "flag", "f1", "{\"v\":2}"), 0);
	assert_int_equal(commit_doc(&fx->a, "flag", "f2", "{\"v\":9}"), 0);
	assert_int_equal(fleet_catch_up(fx->b.fleet), 0);
	/* f1's first write is carried by its second: two documents, latest bodies */
	assert_int_equal(fx->b.remote_flags, 2);
	assert_int_equal(fleet_applied_revision(fx->b.fleet), state_revision(fx->a.state));
	/* a's own commits are not published to a again */
	assert_int_equal(fleet_catch_up(fx->a.fleet), 0);
	assert_int_equal(fx->a.remote_flags, 0);
	/* a delete travels as a NULL document */
	assert_int_equal(state_commit(fx->a.state,
	                              &(struct state_doc){.kind = "flag",
	                                                  .name = "f2",
	                                                  .json = NULL,
	                                                  .expect_rev = STORE_REV_ANY},
	                              1, NULL, 0, NULL),
	                 0);
	assert_int_equal(fleet_catch_up(fx->b.fleet), 0);
	assert_int_equal(fx->b.remote_deletes, 1);
	/* nothing new: nothing applied twice */
	assert_int_equal(fleet_catch_up(fx->b.fleet), 0);
	assert_int_equal(fx->b.remote_flags, 2);
	assert_int_equal(fx->b.remote_deletes, 1);
	/* b's change reaches a */
	assert_int_equal(commit_doc(&fx->b, "flag", "f3", "{\"from\":\"b\"}"), 0);
	assert_int_equal(fleet_catch_up(fx->a.fleet), 0);
	assert_int_equal(fx->a.remote_flags, 1);
	assert_string_equal(fx->a.last_json, "{\"from\":\"b\"}");
}

static void test_takeover_when_the_leader_goes(void **state)
{
	struct pgfix *fx = *state;

	node_close(&fx->a); /* its session ends: the lock is free */
	memset(&fx->a, 0, sizeof(fx->a));
	for (int i = 0; i < 40 && !fleet_is_leader(fx->b.fleet); i++) {
		struct timespec ts = {0, 50 * 1000000L};

		on_lease(fx->loop, &fx->b.fleet->lease_timer);
		nanosleep(&ts, NULL);
	}
	assert_true(fleet_is_leader(fx->b.fleet));
	assert_int_equal(fleet_term(fx->b.fleet), 2);
	assert_int_equal(fx->b.leads, 1);
	assert_int_equal(commit_doc(&fx->b, "rollout", "web", "{\"by\":\"b\"}"), 0);
	/* a comes back as a follower and is fenced */
	node_open(fx, &fx->a, "node-a");
	assert_false(fleet_is_leader(fx->a.fleet));
	assert_int_equal(commit_doc(&fx->a, "rollout", "web", "{\"by\":\"a\"}"), ERR_CONFLICT);
}

static void test_a_paused_leader_is_ended_and_replaced(void **state)
{
	struct pgfix *fx = *state;
	struct timespec ts = {0, 1100 * 1000000L};

	/* a leads and stops renewing (as if SIGSTOPped): its lease runs out */
	assert_true(fleet_is_leader(fx->a.fleet));
	nanosleep(&ts, NULL);
	for (int i = 0; i < 40 && !fleet_is_leader(fx->b.fleet); i++) {
		struct timespec w = {0, 50 * 1000000L};

		on_lease(fx->loop, &fx->b.fleet->lease_timer);
		nanosleep(&w, NULL);
	}
	assert_true(fleet_is_leader(fx->b.fleet));
	assert_int_equal(fleet_term(fx->b.fleet), 2);
	/* a "resumes": it knows at once that it no longer leads, and is fenced anyway */
	assert_false(fleet_is_leader(fx->a.fleet));
	fx->a.fleet->leader = 1; /* even if it believed it still led */
	assert_int_equal(commit_doc(&fx->a, "rollout", "web", "{\"stale\":true}"), ERR_CONFLICT);
	fx->a.fleet->leader = 0;
}

/*
 * A node away longer than the feed keeps (its rows pruned) resyncs from the
 * documents: newer bodies applied, a document deleted meanwhile deleted,
 * then the feed goes on from the store's revision.
 */
static void test_a_node_behind_a_pruned_feed_resyncs_from_the_documents(void **state)
{
	struct pgfix *fx = *state;
	int64_t rev0;

	assert_int_equal(commit_doc(&fx->a, "flag", "keep", "{\"v\":1}"), 0);
	assert_int_equal(commit_doc(&fx->a, "flag", "gone", "{\"v\":1}"), 0);
	assert_int_equal(commit_doc(&fx->a, "flag", "same", "{\"v\":1}"), 0);
	rev0 = state_revision(fx->a.state);
	/* b restarts: its modules loaded the documents at rev0 */
	node_close(&fx->b);
	memset(&fx->b, 0, sizeof(fx->b));
	node_open(fx, &fx->b, "node-b");
	fx->b.fleet->applied = rev0;
	/* while b is away: a change, a delete, a new document; then the feed is pruned */
	assert_int_equal(commit_doc(&fx->a, "flag", "keep", "{\"v\":2}"), 0);
	assert_int_equal(state_commit(fx->a.state,
	                              &(struct state_doc){.kind = "flag",
	                                                  .name = "gone",
	                                                  .json = NULL,
	                                                  .expect_rev = STORE_REV_ANY},
	                              1, NULL, 0, NULL),
	                 0);
	assert_int_equal(commit_doc(&fx->a, "flag", "new", "{\"v\":7}"), 0);
	assert_int_equal(fleet_catch_up(fx->a.fleet), 0); /* a keeps up with the feed */
	db_sql(fx, "UPDATE changes SET at = now() - interval '2 hours'");
	/* a leads; no loop runs here to renew its lease, so count it as just renewed */
	fx->a.fleet->renewed_ms = clock_mono_ms();
	assert_true(fleet_is_leader(fx->a.fleet));
	fx->a.fleet->last_prune_ms = 0;
	on_node(fx->loop, &fx->a.fleet->node_timer); /* the leader's prune */
	assert_int_equal(fleet_catch_up(fx->b.fleet), 0);
	assert_int_equal(fx->b.fleet->resyncs, 1);
	assert_int_equal(fx->b.remote_flags, 2); /* keep v2 and new; "same" not again */
	assert_int_equal(fx->b.remote_deletes, 1);
	assert_int_equal(fleet_applied_revision(fx->b.fleet), state_revision(fx->a.state));
	/* after it, the feed as usual: no second resync */
	assert_int_equal(commit_doc(&fx->a, "flag", "after", "{\"v\":3}"), 0);
	assert_int_equal(fleet_catch_up(fx->b.fleet), 0);
	assert_int_equal(fx->b.fleet->resyncs, 1);
	assert_int_equal(fx->b.remote_flags, 3);
	assert_string_equal(fx->b.last_json, "{\"v\":3}");
	/* a node that kept up is not resynced by a prune */
	assert_int_equal(fleet_catch_up(fx->a.fleet), 0);
	assert_int_equal(fx->a.fleet->resyncs, 0);
}

int main(void)
{
	const struct CMUnitTest pure[] = {
	    cmocka_unit_test(test_parse_notify),
	    cmocka_unit_test(test_lease_lapses_before_the_database_expires_it),
	    cmocka_unit_test(test_local_revisions),
	};
	const struct CMUnitTest pg[] = {
	    cmocka_unit_test_setup_teardown(test_one_leader_and_the_first_term, pg_setup,
	                                    pg_teardown),
	    cmocka_unit_test_setup_teardown(test_fence_refuses_decisions_of_an_old_term_only,
	                                    pg_setup, pg_teardown),
	    cmocka_unit_test_setup_teardown(test_changes_feed_reaches_the_other_node_once, pg_setup,
	                                    pg_teardown),
	    cmocka_unit_test_setup_teardown(test_takeover_when_the_leader_goes, pg_setup,
	                                    pg_teardown),
	    cmocka_unit_test_setup_teardown(test_a_paused_leader_is_ended_and_replaced, pg_setup,
	                                    pg_teardown),
	    cmocka_unit_test_setup_teardown(
	        test_a_node_behind_a_pruned_feed_resyncs_from_the_documents, pg_setup, pg_teardown),
	};
	int rc = cmocka_run_group_tests_name("fleet", pure, NULL, NULL);

	pg_url = getenv("CANARYD_TEST_PG_URL");
	if (pg_url && *pg_url)
		rc |= cmocka_run_group_tests_name("fleet_pg", pg, NULL, NULL);
	return rc;
}
