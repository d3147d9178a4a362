/*
 * test_store.c - the store: migrations, events, documents, transactions,
 * retention's primitives, and (postgres) availability.
 *
 * The generic tests run on both backends.  SQLite file databases live in a
 * fresh mkdtemp() directory per test, removed after.  The postgres pass runs
 * with CANARYD_TEST_PG_URL naming a server (tests/pg/pg-run starts one) and
 * gets a fresh database per test (CREATE DATABASE, dropped after).  Run as
 * `test_store --postgres` (what ctest's unit/test_store_pg does) the pass is
 * required: without a server it fails instead of skipping.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include "store/store.h"
#include "store/store_pg.h"
#include "store/store_sqlite.h"

struct fixture {
	char dir[64];
	char path[128];
	char url[512];
	char pgdb[64]; /* postgres: this test's database */
	struct store *st;
};

/* Set by main() for the postgres pass: the server's URL (its "postgres" database). */
static const char *pg_admin_url;
static int pg_dbs;

static void pg_quiet(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

/* A raw libpq connection to url, as another process (or an operator) would have. */
static PGconn *pg_raw(const char *url)
{
	PGconn *c = PQconnectdb(url);

	if (PQstatus(c) != CONNECTION_OK)
		fail_msg("connect: %s", PQerrorMessage(c));
	PQsetNoticeProcessor(c, pg_quiet, NULL);
	return c;
}

/* Runs sql; 0 on success, else -1 with libpq's message in the last error. */
static int pg_try(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

	PQclear(r);
	return ok ? 0 : -1;
}

static void pg_exec(PGconn *c, const char *sql)
{
	if (pg_try(c, sql))
		fail_msg("%s: %s", sql, PQerrorMessage(c));
}

static int64_t pg_int(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	int64_t v;

	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
		fail_msg("%s: %s", sql, PQerrorMessage(c));
	v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return v;
}

/* The admin URL with its database replaced by db. */
static void pg_url_for(const char *db, char *out, size_t len)
{
	const char *slash = strrchr(pg_admin_url, '/');

	assert_non_null(slash);
	snprintf(out, len, "%.*s/%s", (int)(slash - pg_admin_url), pg_admin_url, db);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/canaryd-store-XXXXXX");
	if (!mkdtemp(f->dir)) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof(f->path), "%s/canaryd.db", f->dir);
	if (pg_admin_url) {
		PGconn *c = pg_raw(pg_admin_url);
		char sql[128];

		snprintf(f->pgdb, sizeof(f->pgdb), "canaryd_ut_%d_%d", (int)getpid(), ++pg_dbs);
		snprintf(sql, sizeof(sql), "CREATE DATABASE %s", f->pgdb);
		pg_exec(c, sql);
		PQfinish(c);
		pg_url_for(f->pgdb, f->url, sizeof(f->url));
	} else {
		snprintf(f->url, sizeof(f->url), "sqlite:%s", f->path);
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
	struct fixture *f = *state;
	char p[160];
	size_t i;

	store_close(f->st);
	if (f->pgdb[0]) {
		PGconn *c = pg_raw(pg_admin_url);
		char sql[128];

		snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", f->pgdb);
		pg_exec(c, sql);
		PQfinish(c);
	}
	for (i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", f->path, suffixes[i]);
		unlink(p);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

static struct store *open_ok(const char *url)
{
	char err[256] = "";
	struct store *st = store_open(url, err, sizeof(err));

	if (!st)
		fail_msg("store_open(%s): %s", url, err);
	return st;
}

/* A second, raw connection to the file, as another process would have. */
static sqlite3 *raw_open(const struct fixture *f)
{
	sqlite3 *db = NULL;

	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 1000);
	return db;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg ? msg : "?");
}

static int64_t raw_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *q = NULL;
	int64_t v;

	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(q), SQLITE_ROW);
	v = sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	return v;
}

static int64_t fixed_clock(void *arg)
{
	return *(int64_t *)arg;
}

static size_t event_count(struct store *st, const char *subject)
{
	json_t *arr = NULL;
	size_t n;

	assert_int_equal(store_events_list(st, 0, STORE_EVENTS_LIMIT_MAX, subject, &arr), 0);
	n = json_array_size(arr);
	json_decref(arr);
	return n;
}

static int64_t revision(struct store *st)
{
	int64_t rev = -1;

	assert_int_equal(store_revision(st, &rev), 0);
	return rev;
}

/* --- open, migrations, URLs -------------------------------------------------------- */

static void test_fresh_file_db_is_migrated(void **state)
{
	struct fixture *f = *state;
	char mode[16] = "";
	sqlite3 *db;

	f->st = open_ok(f->url);
	assert_string_equal(store_backend_name(f->st), "sqlite");
	assert_int_equal(store_schema_version(f->st), STORE_SCHEMA_VERSION);
	assert_int_equal(revision(f->st), 0);

	/* Durability settings on the store's own connection. */
	db = store_sqlite_db(f->st);
	assert_non_null(db);
	assert_int_equal(raw_int(db, "PRAGMA synchronous"), 2); /* FULL */
	assert_int_equal(raw_int(db, "PRAGMA busy_timeout"), STORE_BUSY_TIMEOUT_MS);

	db = raw_open(f);
	assert_int_equal(raw_int(db, "SELECT COUNT(*) FROM schema_migrations"),
	                 STORE_SCHEMA_VERSION);
	assert_int_equal(raw_int(db, "SELECT MAX(version) FROM schema_migrations"),
	                 STORE_SCHEMA_VERSION);
	assert_true(raw_int(db, "SELECT MIN(applied_at) FROM schema_migrations") > 1600000000000LL);
	{
		sqlite3_stmt *q = NULL;

		assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL),
		                 SQLITE_OK);
		assert_int_equal(sqlite3_step(q), SQLITE_ROW);
		snprintf(mode, sizeof(mode), "%s", (const char *)sqlite3_column_text(q, 0));
		sqlite3_finalize(q);
	}
	assert_string_equal(mode, "wal");
	sqlite3_close(db);
}

static void test_reopen_is_idempotent(void **state)
{
	struct fixture *f = *state;
	char *body = NULL;
	int64_t id = 0, rev = 0;
	sqlite3 *db;

	f->st = open_ok(f->url);
	assert_int_equal(
	    store_event_append(f->st, "ops", "config.loaded", "canaryd.yaml", NULL, &id), 0);
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{\"on\":true}", STORE_REV_ABSENT, &rev),
	                 0);
	store_close(f->st);
	f->st = NULL;

	f->st = open_ok(f->url);
	store_close(f->st);
	f->st = open_ok(f->url);
	assert_int_equal(store_schema_version(f->st), STORE_SCHEMA_VERSION);
	assert_int_equal(event_count(f->st, NULL), 1);
	assert_int_equal(store_doc_get(f->st, "flag", "x", &body, &rev), 0);
	assert_string_equal(body, "{\"on\":true}");
	assert_int_equal(rev, 1);
	assert_int_equal(revision(f->st), 1);
	free(body);

	if (pg_admin_url) {
		PGconn *c = pg_raw(f->url);

		assert_int_equal(pg_int(c, "SELECT COUNT(*) FROM schema_migrations"),
		                 STORE_SCHEMA_VERSION);
		PQfinish(c);
		return;
	}
	db = raw_open(f);
	assert_int_equal(raw_int(db, "SELECT COUNT(*) FROM schema_migrations"),
	                 STORE_SCHEMA_VERSION);
	sqlite3_close(db);
}

static void test_older_db_gets_missing_migrations(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";
	json_t *arr = NULL;
	int64_t rev = 0;
	sqlite3 *db;

	/* A database left by a binary that knew only version 1, with one event in it. */
	db = raw_open(f);
	assert_int_equal(store_sqlite_migrate(db, 1, err, sizeof(err)), 0);
	raw_exec(db, "INSERT INTO events (ts_ms, actor, kind, subject, details)"
	             " VALUES (1000, 'ops', 'config.loaded', 'a.yaml', '{\"rev\":1}')");
	assert_int_equal(raw_int(db, "SELECT MAX(version) FROM schema_migrations"), 1);
	sqlite3_close(db);

	f->st = open_ok(f->url);
	assert_int_equal(store_schema_version(f->st), STORE_SCHEMA_VERSION);
	assert_int_equal(store_events_list(f->st, 0, 0, NULL, &arr), 0);
	assert_int_equal(json_array_size(arr), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "ts")),
	                    "1970-01-01T00:00:01.000Z");
	json_decref(arr);
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{}", STORE_REV_ANY, &rev), 0);
	assert_int_equal(rev, 1);
}

static void test_future_schema_is_refused(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";
	char sql[160];
	sqlite3 *db;

	f->st = open_ok(f->url);
	store_close(f->st);
	f->st = NULL;

	db = raw_open(f);
	snprintf(sql, sizeof(sql),
	         "INSERT INTO schema_migrations (version, name, applied_at)"
	         " VALUES (%d, 'from the future', 0)",
	         STORE_SCHEMA_VERSION + 1);
	raw_exec(db, sql);
	sqlite3_close(db);

	assert_null(store_open(f->url, err, sizeof(err)));
	assert_non_null(strstr(err, "newer than this canaryd"));
	/* Refusing must not have touched it. */
	db = raw_open(f);
	assert_int_equal(raw_int(db, "SELECT MAX(version) FROM schema_migrations"),
	                 STORE_SCHEMA_VERSION + 1);
	sqlite3_close(db);

	/* A binary that knows less also refuses the current schema. */
	db = raw_open(f);
	assert_int_equal(store_sqlite_migrate(db, 1, err, sizeof(err)), STORE_ERR_SCHEMA);
	sqlite3_close(db);
}

static void test_url_schemes(void **state)
{
	struct fixture *f = *state;
	char err[256];
	char tiny[8];
	FILE *fp;
	struct store *st;

	err[0] = '\0';
	assert_null(store_open("mysql://db/x", err, sizeof(err)));
	assert_non_null(strstr(err, "unknown URL scheme 'mysql'"));
	assert_int_equal(store_url_check("mysql://db/x", err, sizeof(err)), -ENOTSUP);
	assert_non_null(strstr(err, "cannot open 'mysql:'"));

	/* postgres: nothing listens on port 1; the password is never shown. */
	err[0] = '\0';
	assert_null(store_open("postgres://canary:s3cret@127.0.0.1:1/canary", err, sizeof(err)));
	assert_non_null(strstr(err, "cannot connect"));
	assert_null(strstr(err, "s3cret"));
	err[0] = '\0';
	assert_null(store_open("postgresql://canary:s3cret@127.0.0.1:1/canary?nonsense=1", err,
	                       sizeof(err)));
	assert_non_null(strstr(err, "cannot be parsed"));
	assert_null(strstr(err, "s3cret"));

	/* --check: parse without connecting. */
	assert_int_equal(store_url_check("sqlite:canaryd.db", err, sizeof(err)), 0);
	assert_int_equal(store_url_check("sqlite:", err, sizeof(err)), -EINVAL);
	assert_int_equal(
	    store_url_check("postgres://canary:s3cret@db.example:5432/canary?sslmode=require", err,
	                    sizeof(err)),
	    0);
	assert_int_equal(
	    store_url_check("postgres://canary:s3cret@db.example/canary?bogus=1", err, sizeof(err)),
	    -EINVAL);
	assert_non_null(strstr(err, "cannot be parsed"));
	assert_null(strstr(err, "s3cret"));
	assert_int_equal(store_url_check("postgres://canary:s3cret@db.example:notaport/canary", err,
	                                 sizeof(err)),
	                 -EINVAL);
	assert_null(strstr(err, "s3cret"));
	assert_int_equal(store_url_check("postgres://db.example/canary?password_file=%2Fnonexistent"
	                                 "%2Fpw",
	                                 err, sizeof(err)),
	                 -EINVAL);
	assert_non_null(strstr(err, "/nonexistent/pw"));
	assert_int_equal(
	    store_url_check("postgres://db.example/canary?password_file=", err, sizeof(err)),
	    -EINVAL);

	err[0] = '\0';
	assert_null(store_open("sqlite:", err, sizeof(err)));
	assert_non_null(strstr(err, "needs a path"));
	err[0] = '\0';
	assert_null(store_open("canaryd.db", err, sizeof(err)));
	assert_non_null(strstr(err, "no scheme"));
	err[0] = '\0';
	assert_null(store_open(NULL, err, sizeof(err)));
	assert_true(err[0] != '\0');

	/* Messages are truncated to the caller's buffer; a NULL buffer is fine. */
	assert_null(store_open("bogus:x", tiny, sizeof(tiny)));
	assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
	assert_null(store_open("bogus:x", NULL, 0));

	/* A file that is not a database. */
	fp = fopen(f->path, "w");
	assert_non_null(fp);
	fputs("this is not an sqlite database, not at all, really not.\n", fp);
	fclose(fp);
	err[0] = '\0';
	assert_null(store_open(f->url, err, sizeof(err)));
	assert_non_null(strstr(err, "not a database"));

	st = open_ok("sqlite::memory:");
	assert_int_equal(store_schema_version(st), STORE_SCHEMA_VERSION);
	store_close(st);
	store_close(NULL);
}

/* --- events ------------------------------------------------------------------------ */

static void test_events_append_and_list(void **state)
{
	struct fixture *f = *state;
	int64_t now = 1714566896789LL; /* 2024-05-01T12:34:56.789Z */
	int64_t ids[5];
	json_t *arr = NULL, *ev, *d;
	const char *details =
	    "{\"weight\": 25, \"why\": \"step 2 \\u00e9 \\ud83d\\ude80\", \"checks\": [1, "
	    "{\"p\": 0.001}], \"ok\": true, \"none\": null}";
	int i;

	f->st = open_ok(f->url);
	store_set_clock(f->st, fixed_clock, &now);
	for (i = 0; i < 5; i++) {
		assert_int_equal(store_event_append(f->st, i % 2 ? "ops" : "canaryd",
		                                    i == 2 ? "rollout.step" : "flag.updated",
		                                    i % 2 ? "flag/a" : "rollout/web",
		                                    i == 2 ? details : NULL, &ids[i]),
		                 0);
		if (i > 0)
			assert_true(ids[i] > ids[i - 1]);
		now += 1001;
	}

	assert_int_equal(store_events_list(f->st, 0, 0, NULL, &arr), 0);
	assert_int_equal(json_array_size(arr), 5);
	for (i = 0; i < 5; i++)
		assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, i), "id")),
		                 ids[i]);
	ev = json_array_get(arr, 0);
	assert_string_equal(json_string_value(json_object_get(ev, "ts")),
	                    "2024-05-01T12:34:56.789Z");
	assert_string_equal(json_string_value(json_object_get(ev, "actor")), "canaryd");
	assert_string_equal(json_string_value(json_object_get(ev, "kind")), "flag.updated");
	assert_string_equal(json_string_value(json_object_get(ev, "subject")), "rollout/web");
	assert_true(json_is_object(json_object_get(ev, "details")));
	assert_int_equal(json_object_size(json_object_get(ev, "details")), 0);
	assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 1), "ts")),
	                    "2024-05-01T12:34:57.790Z");

	/* Details round-trip as the same JSON value. */
	ev = json_array_get(arr, 2);
	d = json_loads(details, 0, NULL);
	assert_non_null(d);
	assert_true(json_equal(d, json_object_get(ev, "details")));
	json_decref(d);
	json_decref(arr);

	/* since is exclusive; limit cuts from the oldest. */
	assert_int_equal(store_events_list(f->st, ids[1], 0, NULL, &arr), 0);
	assert_int_equal(json_array_size(arr), 3);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, 0), "id")), ids[2]);
	json_decref(arr);
	assert_int_equal(store_events_list(f->st, ids[0], 2, NULL, &arr), 0);
	assert_int_equal(json_array_size(arr), 2);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, 1), "id")), ids[2]);
	json_decref(arr);
	assert_int_equal(store_events_list(f->st, ids[4], 0, NULL, &arr), 0);
	assert_int_equal(json_array_size(arr), 0);
	json_decref(arr);

	/* Subject filter, with paging. */
	assert_int_equal(store_events_list(f->st, 0, 0, "flag/a", &arr), 0);
	assert_int_equal(json_array_size(arr), 2);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, 0), "id")), ids[1]);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, 1), "id")), ids[3]);
	json_decref(arr);
	assert_int_equal(store_events_list(f->st, ids[1], 1, "rollout/web", &arr), 0);
	assert_int_equal(json_array_size(arr), 1);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, 0), "id")), ids[2]);
	json_decref(arr);
	assert_int_equal(event_count(f->st, "nobody"), 0);
}

static void test_events_limit_is_bounded(void **state)
{
	struct fixture *f = *state;
	json_t *arr = NULL;
	int i;

	f->st = open_ok(f->url);
	assert_int_equal(store_begin(f->st), 0);
	for (i = 0; i < STORE_EVENTS_LIMIT_MAX + 5; i++)
		assert_int_equal(store_event_append(f->st, "ops", "k", "s", NULL, NULL), 0);
	assert_int_equal(store_commit(f->st), 0);
	assert_int_equal(store_events_list(f->st, 0, 0, NULL, &arr), 0);
	assert_int_equal(json_array_size(arr), STORE_EVENTS_LIMIT_DEFAULT);
	json_decref(arr);
	assert_int_equal(store_events_list(f->st, 0, 1000000, NULL, &arr), 0);
	assert_int_equal(json_array_size(arr), STORE_EVENTS_LIMIT_MAX);
	json_decref(arr);
}

static void test_event_validation(void **state)
{
	struct fixture *f = *state;
	char msg[256];
	char *big;
	int64_t id = 42;

	f->st = open_ok(f->url);
	assert_int_equal(store_event_append(f->st, "ops", "k", "s", "{\"a\":", &id),
	                 STORE_ERR_JSON);
	assert_non_null(strstr(store_errmsg(f->st, msg, sizeof(msg)), "invalid JSON"));
	assert_int_equal(id, 42);
	assert_int_equal(store_event_append(f->st, "ops", "k", "s", "[1,2]", NULL), STORE_ERR_JSON);
	assert_int_equal(store_event_append(f->st, "ops", "k", "s", "{\"a\":1,\"a\":2}", NULL),
	                 STORE_ERR_JSON);
	assert_int_equal(store_event_append(f->st, NULL, "k", "s", NULL, NULL), -EINVAL);
	assert_int_equal(store_event_append(f->st, "ops", "", "s", NULL, NULL), -EINVAL);

	big = malloc(STORE_DETAILS_MAX + 16);
	assert_non_null(big);
	memset(big, ' ', STORE_DETAILS_MAX + 15);
	big[0] = '{';
	big[STORE_DETAILS_MAX + 13] = '}';
	big[STORE_DETAILS_MAX + 15] = '\0';
	assert_int_equal(store_event_append(f->st, "ops", "k", "s", big, NULL), -E2BIG);
	free(big);

	/* NULL subject is stored as "". */
	assert_int_equal(store_event_append(f->st, "ops", "k", NULL, NULL, &id), 0);
	assert_int_equal(event_count(f->st, NULL), 1);
	assert_int_equal(event_count(f->st, ""), 1);
	assert_string_equal(store_errmsg(f->st, msg, sizeof(msg)), "");
}

static void test_events_are_append_only(void **state)
{
	struct fixture *f = *state;
	sqlite3 *db;

	f->st = open_ok(f->url);
	assert_int_equal(store_event_append(f->st, "ops", "k", "s", NULL, NULL), 0);
	db = raw_open(f);
	assert_int_not_equal(
	    sqlite3_exec(db, "UPDATE events SET actor = 'mallory'", NULL, NULL, NULL), SQLITE_OK);
	assert_non_null(strstr(sqlite3_errmsg(db), "append-only"));
	assert_int_not_equal(sqlite3_exec(db, "DELETE FROM events", NULL, NULL, NULL), SQLITE_OK);
	assert_int_not_equal(sqlite3_exec(db, "UPDATE revision SET value = -1", NULL, NULL, NULL),
	                     SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(event_count(f->st, NULL), 1);
}

/* --- documents --------------------------------------------------------------------- */

static void test_doc_put_get_conflict(void **state)
{
	struct fixture *f = *state;
	char *body = NULL;
	int64_t rev = 0;
	char msg[256];

	f->st = open_ok(f->url);
	assert_int_equal(store_doc_get(f->st, "flag", "x", &body, &rev), STORE_ERR_NOTFOUND);
	assert_null(body);

	assert_int_equal(store_doc_put(f->st, "flag", "x", "{\"pct\": 5}", STORE_REV_ABSENT, &rev),
	                 0);
	assert_int_equal(rev, 1);
	assert_int_equal(store_doc_get(f->st, "flag", "x", &body, &rev), 0);
	assert_string_equal(body, "{\"pct\": 5}"); /* byte for byte */
	assert_int_equal(rev, 1);
	free(body);
	body = NULL;

	/* Compare-and-set on the revision that was read. */
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{\"pct\": 25}", 1, &rev), 0);
	assert_int_equal(rev, 2);
	rev = 99;
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{\"pct\": 50}", 1, &rev),
	                 STORE_ERR_CONFLICT);
	assert_int_equal(rev, 99);
	assert_non_null(strstr(store_errmsg(f->st, msg, sizeof(msg)), "current is 2"));
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{}", STORE_REV_ABSENT, NULL),
	                 STORE_ERR_CONFLICT);
	assert_int_equal(store_doc_put(f->st, "flag", "y", "{}", 7, NULL), STORE_ERR_CONFLICT);
	assert_int_equal(store_doc_get(f->st, "flag", "x", &body, &rev), 0);
	assert_string_equal(body, "{\"pct\": 25}");
	assert_int_equal(rev, 2);
	free(body);
	assert_int_equal(revision(f->st), 2);

	/* Any revision; any JSON value; the same name in another kind is another doc. */
	assert_int_equal(store_doc_put(f->st, "flag", "x", "[1,2,3]", STORE_REV_ANY, &rev), 0);
	assert_int_equal(rev, 3);
	assert_int_equal(store_doc_put(f->st, "service", "x", "42", STORE_REV_ABSENT, &rev), 0);
	assert_int_equal(rev, 4);
	assert_int_equal(store_doc_get(f->st, "flag", "x", NULL, &rev), 0);
	assert_int_equal(rev, 3);

	/* Rejected input changes nothing. */
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{nope", STORE_REV_ANY, NULL),
	                 STORE_ERR_JSON);
	assert_int_equal(store_doc_put(f->st, "flag", "x", NULL, STORE_REV_ANY, NULL), -EINVAL);
	assert_int_equal(store_doc_put(f->st, "", "x", "{}", STORE_REV_ANY, NULL), -EINVAL);
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{}", -2, NULL), -EINVAL);
	assert_int_equal(revision(f->st), 4);
}

struct listed {
	int n;
	int stop_after;
	char names[8][16];
	int64_t revs[8];
	struct store *st;
	int nested_rc;
	int events_rc; /* reading events from the callback */
};

static int collect(void *arg, const char *name, const char *json, int64_t rev)
{
	struct listed *l = arg;

	(void)json;
	if (l->n < 8) {
		snprintf(l->names[l->n], sizeof(l->names[0]), "%s", name);
		l->revs[l->n] = rev;
	}
	l->n++;
	if (l->st) {
		json_t *arr = NULL;

		l->nested_rc = store_doc_put(l->st, "flag", "zz", "{}", STORE_REV_ANY, NULL);
		l->events_rc = store_events_list(l->st, 0, 10, NULL, &arr);
		json_decref(arr);
	}
	return l->stop_after && l->n == l->stop_after ? 7 : 0;
}

static void test_doc_delete_and_list(void **state)
{
	struct fixture *f = *state;
	struct listed l;
	int64_t rev = 0;
	char *body = NULL;

	f->st = open_ok(f->url);
	assert_int_equal(store_doc_put(f->st, "flag", "c", "{}", STORE_REV_ANY, NULL), 0);
	assert_int_equal(store_doc_put(f->st, "flag", "a", "{}", STORE_REV_ANY, NULL), 0);
	assert_int_equal(store_doc_put(f->st, "service", "web", "{}", STORE_REV_ANY, NULL), 0);
	assert_int_equal(store_doc_put(f->st, "flag", "b", "{}", STORE_REV_ANY, NULL), 0);

	memset(&l, 0, sizeof(l));
	assert_int_equal(store_doc_list(f->st, "flag", collect, &l), 0);
	assert_int_equal(l.n, 3);
	assert_string_equal(l.names[0], "a");
	assert_string_equal(l.names[1], "b");
	assert_string_equal(l.names[2], "c");
	assert_int_equal(l.revs[0], 2);
	assert_int_equal(l.revs[1], 4);
	assert_int_equal(l.revs[2], 1);

	memset(&l, 0, sizeof(l));
	l.stop_after = 2;
	assert_int_equal(store_doc_list(f->st, "flag", collect, &l), 7);
	assert_int_equal(l.n, 2);

	/* Writing from inside the callback is refused, and the list is unaffected. */
	memset(&l, 0, sizeof(l));
	l.st = f->st;
	assert_int_equal(store_doc_list(f->st, "flag", collect, &l), 0);
	assert_int_equal(l.n, 3);
	assert_int_equal(l.nested_rc, -EBUSY);
	assert_int_equal(l.events_rc, 0);

	memset(&l, 0, sizeof(l));
	assert_int_equal(store_doc_list(f->st, "nothing", collect, &l), 0);
	assert_int_equal(l.n, 0);

	/* Delete: conflict-checked, bumps the revision, then gone. */
	assert_int_equal(store_doc_delete(f->st, "flag", "b", 3, NULL), STORE_ERR_CONFLICT);
	assert_int_equal(revision(f->st), 4);
	assert_int_equal(store_doc_delete(f->st, "flag", "b", 4, &rev), 0);
	assert_int_equal(rev, 5);
	assert_int_equal(revision(f->st), 5);
	assert_int_equal(store_doc_get(f->st, "flag", "b", &body, NULL), STORE_ERR_NOTFOUND);
	assert_int_equal(store_doc_delete(f->st, "flag", "b", STORE_REV_ANY, NULL),
	                 STORE_ERR_NOTFOUND);
	assert_int_equal(revision(f->st), 5);
	memset(&l, 0, sizeof(l));
	assert_int_equal(store_doc_list(f->st, "flag", collect, &l), 0);
	assert_int_equal(l.n, 2);

	/* Recreating starts from the global revision, never from 1 again. */
	assert_int_equal(store_doc_put(f->st, "flag", "b", "{}", STORE_REV_ABSENT, &rev), 0);
	assert_int_equal(rev, 6);
}

/* --- transactions ------------------------------------------------------------------ */

static void test_rollback_leaves_nothing(void **state)
{
	struct fixture *f = *state;
	int64_t rev = 0, id = 0;
	char *body = NULL;

	f->st = open_ok(f->url);
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_in_transaction(f->st), 1);
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{\"pct\":5}", STORE_REV_ABSENT, &rev),
	                 0);
	assert_int_equal(
	    store_event_append(f->st, "ops", "flag.updated", "flag/x", "{\"rev\":1}", &id), 0);
	/* Visible inside the transaction... */
	assert_int_equal(store_doc_get(f->st, "flag", "x", NULL, NULL), 0);
	assert_int_equal(store_rollback(f->st), 0);
	assert_int_equal(store_in_transaction(f->st), 0);
	/* ...and gone after the rollback. */
	assert_int_equal(store_doc_get(f->st, "flag", "x", &body, NULL), STORE_ERR_NOTFOUND);
	assert_int_equal(event_count(f->st, NULL), 0);
	assert_int_equal(revision(f->st), 0);

	/* The same pair committed is there, also for another connection after reopen. */
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{\"pct\":5}", STORE_REV_ABSENT, &rev),
	                 0);
	assert_int_equal(store_event_append(f->st, "ops", "flag.updated", "flag/x", NULL, &id), 0);
	assert_int_equal(store_commit(f->st), 0);
	store_close(f->st);
	f->st = open_ok(f->url);
	assert_int_equal(store_doc_get(f->st, "flag", "x", NULL, &rev), 0);
	assert_int_equal(rev, 1);
	assert_int_equal(event_count(f->st, "flag/x"), 1);

	/* Closing with a transaction open rolls it back. */
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_doc_put(f->st, "flag", "y", "{}", STORE_REV_ANY, NULL), 0);
	store_close(f->st);
	f->st = open_ok(f->url);
	assert_int_equal(store_doc_get(f->st, "flag", "y", NULL, NULL), STORE_ERR_NOTFOUND);
	assert_int_equal(revision(f->st), 1);
}

static void test_failure_midway_leaves_nothing(void **state)
{
	struct fixture *f = *state;
	char msg[256];

	f->st = open_ok(f->url);
	/* The caller's change: doc + event; the event is invalid, the caller rolls back. */
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{}", STORE_REV_ABSENT, NULL), 0);
	assert_int_equal(store_event_append(f->st, "ops", "flag.updated", "flag/x", "{bad", NULL),
	                 STORE_ERR_JSON);
	assert_int_equal(store_in_transaction(f->st), 1);
	assert_int_equal(store_rollback(f->st), 0);
	assert_int_equal(store_doc_get(f->st, "flag", "x", NULL, NULL), STORE_ERR_NOTFOUND);
	assert_int_equal(event_count(f->st, NULL), 0);
	assert_int_equal(revision(f->st), 0);

	/* A conflict after a successful write in the same transaction, rolled back. */
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_event_append(f->st, "ops", "flag.updated", "flag/x", NULL, NULL), 0);
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{}", 3, NULL), STORE_ERR_CONFLICT);
	assert_int_equal(store_rollback(f->st), 0);
	assert_int_equal(event_count(f->st, NULL), 0);
	assert_int_equal(revision(f->st), 0);

	/*
	 * A database error in the middle of one doc_put: the revision is bumped,
	 * then the row insert fails.  The op must undo its own bump.
	 */
	if (pg_admin_url) {
		PGconn *c = pg_raw(f->url);

		pg_exec(c, "CREATE FUNCTION inject() RETURNS trigger LANGUAGE plpgsql AS"
		           " $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;"
		           "CREATE TRIGGER inject_doc BEFORE INSERT ON docs FOR EACH ROW"
		           " WHEN (NEW.name = 'boom') EXECUTE FUNCTION inject();"
		           "CREATE TRIGGER inject_event BEFORE INSERT ON events FOR EACH ROW"
		           " WHEN (NEW.kind = 'boom') EXECUTE FUNCTION inject();");
		PQfinish(c);
	} else {
		sqlite3 *db = raw_open(f);

		raw_exec(db, "CREATE TRIGGER inject_doc BEFORE INSERT ON docs"
		             " WHEN NEW.name = 'boom'"
		             " BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
		             "CREATE TRIGGER inject_event BEFORE INSERT ON events"
		             " WHEN NEW.kind = 'boom'"
		             " BEGIN SELECT RAISE(ABORT, 'injected failure'); END;");
		sqlite3_close(db);
	}
	assert_int_equal(store_doc_put(f->st, "flag", "boom", "{}", STORE_REV_ANY, NULL),
	                 STORE_ERR_BACKEND);
	assert_non_null(strstr(store_errmsg(f->st, msg, sizeof(msg)), "injected failure"));
	assert_int_equal(revision(f->st), 0);
	assert_int_equal(store_doc_get(f->st, "flag", "boom", NULL, NULL), STORE_ERR_NOTFOUND);

	/* Inside a transaction: the failed op is undone, the caller rolls back the rest. */
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_doc_put(f->st, "flag", "a", "{}", STORE_REV_ANY, NULL), 0);
	assert_int_equal(store_event_append(f->st, "ops", "flag.updated", "flag/a", NULL, NULL), 0);
	assert_int_equal(store_event_append(f->st, "ops", "boom", "flag/a", NULL, NULL),
	                 STORE_ERR_BACKEND);
	assert_int_equal(store_rollback(f->st), 0);
	assert_int_equal(store_doc_get(f->st, "flag", "a", NULL, NULL), STORE_ERR_NOTFOUND);
	assert_int_equal(event_count(f->st, NULL), 0);
	assert_int_equal(revision(f->st), 0);

	/* ...or commits the part that worked: only the failed op is missing. */
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_doc_put(f->st, "flag", "a", "{}", STORE_REV_ANY, NULL), 0);
	assert_int_equal(store_doc_put(f->st, "flag", "boom", "{}", STORE_REV_ANY, NULL),
	                 STORE_ERR_BACKEND);
	assert_int_equal(store_commit(f->st), 0);
	assert_int_equal(store_doc_get(f->st, "flag", "a", NULL, NULL), 0);
	assert_int_equal(store_doc_get(f->st, "flag", "boom", NULL, NULL), STORE_ERR_NOTFOUND);
	assert_int_equal(revision(f->st), 1);
}

static void test_transaction_misuse(void **state)
{
	struct fixture *f = *state;

	f->st = open_ok(f->url);
	assert_int_equal(store_commit(f->st), STORE_ERR_TXN);
	assert_int_equal(store_rollback(f->st), STORE_ERR_TXN);
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_begin(f->st), STORE_ERR_TXN);
	assert_int_equal(store_in_transaction(f->st), 1);
	assert_int_equal(store_commit(f->st), 0);
	assert_int_equal(store_commit(f->st), STORE_ERR_TXN);
}

/* A write on its own handle and thread, as a second process would make it. */
struct writer {
	struct store *st;
	int rc;
	int64_t rev;
	atomic_int done;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;

	w->rc = store_doc_put(w->st, "flag", "c", "{}", STORE_REV_ANY, &w->rev);
	atomic_store(&w->done, 1);
	return NULL;
}

/*
 * A default VFS that is the platform's, except that its xSleep (what SQLite's
 * busy timeout calls between attempts on a lock it could not take) first
 * writes one byte to a pipe: the test sees "this handle is waiting for a lock"
 * as an event, instead of guessing from a sleep.
 */
static sqlite3_vfs wait_vfs, *plain_vfs;
static int wait_pipe[2] = {-1, -1};
static atomic_int wait_armed;

static int wait_vfs_sleep(sqlite3_vfs *vfs, int us)
{
	(void)vfs;
	if (atomic_exchange(&wait_armed, 0))
		(void)!write(wait_pipe[1], "w", 1);
	return plain_vfs->xSleep(plain_vfs, us);
}

static struct store *open_waiting(const char *url)
{
	struct store *st;

	plain_vfs = sqlite3_vfs_find(NULL);
	assert_non_null(plain_vfs);
	wait_vfs = *plain_vfs;
	wait_vfs.zName = "canaryd-test-wait";
	wait_vfs.xSleep = wait_vfs_sleep;
	wait_vfs.pNext = NULL;
	assert_int_equal(sqlite3_vfs_register(&wait_vfs, 1), SQLITE_OK);
	st = open_ok(url); /* opened with the default VFS: this one */
	assert_int_equal(sqlite3_vfs_register(plain_vfs, 1), SQLITE_OK);
	return st;
}

static void test_second_writer_waits_for_the_lock(void **state)
{
	struct fixture *f = *state;
	struct writer w = {0};
	struct store *other;
	struct pollfd pfd;
	pthread_t tid;
	int64_t rev = 0;
	char byte;

	/* Two handles on one file (two processes): writes serialise, revisions stay unique. */
	assert_int_equal(pipe(wait_pipe), 0);
	f->st = open_ok(f->url);
	other = open_waiting(f->url);
	assert_int_equal(store_doc_put(f->st, "flag", "a", "{}", STORE_REV_ANY, &rev), 0);
	assert_int_equal(rev, 1);
	assert_int_equal(store_doc_put(other, "flag", "b", "{}", STORE_REV_ANY, &rev), 0);
	assert_int_equal(rev, 2);
	assert_int_equal(store_doc_put(f->st, "flag", "b", "{}", 2, &rev), 0);
	assert_int_equal(rev, 3);
	assert_int_equal(revision(other), 3);

	/* While one handle holds the write lock, the other's write waits for it (the
	 * busy timeout: its VFS reports the wait), then goes through after the commit
	 * with the next revision. */
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_doc_put(f->st, "flag", "held", "{}", STORE_REV_ANY, &rev), 0);
	assert_int_equal(rev, 4);
	w.st = other;
	atomic_store(&wait_armed, 1);
	assert_int_equal(pthread_create(&tid, NULL, writer_main, &w), 0);
	pfd = (struct pollfd){wait_pipe[0], POLLIN, 0};
	if (poll(&pfd, 1, 10000) != 1) {
		assert_int_equal(store_commit(f->st), 0);
		pthread_join(tid, NULL);
		fail_msg("the second writer never waited for the lock (rc %d, done %d)", w.rc,
		         atomic_load(&w.done));
	}
	assert_int_equal(read(wait_pipe[0], &byte, 1), 1);
	assert_int_equal(atomic_load(&w.done), 0); /* it is waiting: the lock is still held */
	assert_int_equal(store_commit(f->st), 0);
	assert_int_equal(pthread_join(tid, NULL), 0);
	assert_int_equal(w.rc, 0);
	assert_int_equal(w.rev, 5);
	assert_int_equal(revision(f->st), 5);
	store_close(other);
	sqlite3_vfs_unregister(&wait_vfs);
	close(wait_pipe[0]);
	close(wait_pipe[1]);
}

/* --- retention primitives: query, each, delete ---------------------------------- */

/* 12 events: for i in 0..11, subject rollout/a (even) or rollout/b (odd), kind by i % 3. */
static const char *const fill_kinds[3] = {"rollout.interval", "verdict", "rollout.step"};

static void fill_events(struct store *st, int64_t ids[12])
{
	int i;

	assert_int_equal(store_begin(st), 0);
	for (i = 0; i < 12; i++)
		assert_int_equal(store_event_append(st, "canaryd", fill_kinds[i % 3],
		                                    i % 2 ? "rollout/b" : "rollout/a", NULL,
		                                    &ids[i]),
		                 0);
	assert_int_equal(store_commit(st), 0);
}

static int64_t id_at(json_t *arr, size_t i)
{
	return json_integer_value(json_object_get(json_array_get(arr, i), "id"));
}

static void test_events_query_filters(void **state)
{
	struct fixture *f = *state;
	struct store_events_query q;
	int64_t ids[12];
	json_t *arr = NULL;

	f->st = open_ok(f->url);
	fill_events(f->st, ids);

	/* Subject + kind, newest first, limited: the latest verdicts of rollout/b. */
	q = (struct store_events_query){
	    .subject = "rollout/b", .kind = "verdict", .limit = 1, .descending = 1};
	assert_int_equal(store_events_query(f->st, &q, &arr), 0);
	assert_int_equal(json_array_size(arr), 1);
	assert_int_equal(id_at(arr, 0), ids[7]); /* i = 1, 7 are odd with i % 3 == 1 */
	assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "kind")),
	                    "verdict");
	json_decref(arr);
	q.limit = 0;
	assert_int_equal(store_events_query(f->st, &q, &arr), 0);
	assert_int_equal(json_array_size(arr), 2);
	assert_int_equal(id_at(arr, 0), ids[7]);
	assert_int_equal(id_at(arr, 1), ids[1]);
	json_decref(arr);

	/* Kind only, oldest first, inside (since, before). */
	q = (struct store_events_query){
	    .kind = "rollout.interval", .since_id = ids[0], .before_id = ids[9]};
	assert_int_equal(store_events_query(f->st, &q, &arr), 0);
	assert_int_equal(json_array_size(arr), 2);
	assert_int_equal(id_at(arr, 0), ids[3]);
	assert_int_equal(id_at(arr, 1), ids[6]);
	json_decref(arr);

	/* No filter, descending, before_id: paging back from the newest. */
	q = (struct store_events_query){.descending = 1, .before_id = ids[11], .limit = 3};
	assert_int_equal(store_events_query(f->st, &q, &arr), 0);
	assert_int_equal(json_array_size(arr), 3);
	assert_int_equal(id_at(arr, 0), ids[10]);
	assert_int_equal(id_at(arr, 2), ids[8]);
	json_decref(arr);

	/* Subject only equals store_events_list with a subject. */
	q = (struct store_events_query){.subject = "rollout/a"};
	assert_int_equal(store_events_query(f->st, &q, &arr), 0);
	assert_int_equal(json_array_size(arr), 6);
	assert_int_equal(id_at(arr, 5), ids[10]);
	json_decref(arr);
	q = (struct store_events_query){.kind = "nothing"};
	assert_int_equal(store_events_query(f->st, &q, &arr), 0);
	assert_int_equal(json_array_size(arr), 0);
	json_decref(arr);

	/* Bad input. */
	q = (struct store_events_query){.since_id = -1};
	assert_int_equal(store_events_query(f->st, &q, &arr), -EINVAL);
	q = (struct store_events_query){.kind = ""};
	assert_int_equal(store_events_query(f->st, &q, &arr), -EINVAL);
	assert_int_equal(store_events_query(f->st, NULL, &arr), -EINVAL);
}

struct walk {
	struct store *st;
	int n, stop_at;
	int64_t first, last, prev;
	int ordered; /* every id on the right side of the previous */
	int descending;
	int get_rc, put_rc, query_rc;
	json_t *nested;
	size_t details_len;
};

static int walk_row(void *arg, int64_t id, int64_t ts_ms, const char *actor, const char *kind,
                    const char *subject, const char *details)
{
	struct walk *w = arg;

	(void)ts_ms;
	assert_string_equal(actor, "canaryd");
	assert_string_equal(kind, "verdict");
	assert_string_equal(subject, "rollout/x");
	w->details_len += strlen(details);
	if (w->n == 0)
		w->first = id;
	else if (w->descending ? id >= w->prev : id <= w->prev)
		w->ordered = 0;
	w->prev = w->last = id;
	w->n++;
	if (w->n == 1 && w->st) {
		/* Reading documents from the callback works; writing is refused. */
		w->get_rc = store_doc_get(w->st, "flag", "x", NULL, NULL);
		w->put_rc = store_doc_put(w->st, "flag", "y", "{}", STORE_REV_ANY, NULL);
		w->query_rc = store_events_list(w->st, 0, 1, NULL, &w->nested);
	}
	return w->stop_at && w->n == w->stop_at ? 9 : 0;
}

static void test_events_each_streams_everything(void **state)
{
	struct fixture *f = *state;
	struct store_events_query q = {.subject = "rollout/x", .kind = "verdict"};
	struct walk w;
	int64_t first = 0, last = 0, id;
	int i, n = 2345; /* more than any one page of a backend */

	f->st = open_ok(f->url);
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{}", STORE_REV_ANY, NULL), 0);
	assert_int_equal(store_begin(f->st), 0);
	for (i = 0; i < n; i++) {
		assert_int_equal(store_event_append(f->st, "canaryd", "verdict", "rollout/x",
		                                    "{\"p\":0.5}", &id),
		                 0);
		assert_int_equal(store_event_append(f->st, "canaryd", "rollout.interval",
		                                    "rollout/x", NULL, NULL),
		                 0);
		if (i == 0)
			first = id;
		last = id;
	}
	assert_int_equal(store_commit(f->st), 0);

	memset(&w, 0, sizeof(w));
	w.ordered = 1;
	w.st = f->st;
	q.limit = 5; /* ignored by each */
	assert_int_equal(store_events_each(f->st, &q, walk_row, &w), 0);
	assert_int_equal(w.n, n);
	assert_true(w.ordered);
	assert_int_equal(w.first, first);
	assert_int_equal(w.last, last);
	assert_int_equal(w.details_len, (size_t)n * strlen("{\"p\":0.5}"));
	assert_int_equal(w.get_rc, 0);
	assert_int_equal(w.put_rc, -EBUSY);
	assert_int_equal(w.query_rc, -EBUSY);
	assert_null(w.nested);

	/* Newest first, stopped by the callback, which store_events_each returns. */
	memset(&w, 0, sizeof(w));
	w.ordered = 1;
	w.descending = 1;
	w.stop_at = 1500;
	q.descending = 1;
	assert_int_equal(store_events_each(f->st, &q, walk_row, &w), 9);
	assert_int_equal(w.n, 1500);
	assert_true(w.ordered);
	assert_int_equal(w.first, last);

	/* Bounds. */
	memset(&w, 0, sizeof(w));
	w.ordered = 1;
	q = (struct store_events_query){.kind = "verdict", .since_id = first, .before_id = last};
	assert_int_equal(store_events_each(f->st, &q, walk_row, &w), 0);
	assert_int_equal(w.n, n - 2);
	assert_int_equal(store_events_each(f->st, &q, NULL, NULL), -EINVAL);
}

static void test_events_delete_compacts_evidence_only(void **state)
{
	struct fixture *f = *state;
	struct store_events_query q = {0};
	int64_t ids[12];
	json_t *arr = NULL;
	char msg[256];

	f->st = open_ok(f->url);
	fill_events(f->st, ids);
	assert_int_equal(store_event_append(f->st, "ops", "config.loaded", "rollout/a", NULL, NULL),
	                 0);

	/* Audit kinds are never deleted. */
	assert_int_equal(store_events_delete(f->st, "rollout.step", "rollout/a", 0, INT64_MAX),
	                 -EPERM);
	assert_non_null(strstr(store_errmsg(f->st, msg, sizeof(msg)), "never deleted"));
	assert_int_equal(store_events_delete(f->st, "config.loaded", "rollout/a", 0, INT64_MAX),
	                 -EPERM);
	assert_int_equal(event_count(f->st, NULL), 13);

	/* Exactly kind + subject + inclusive range. rollout/a intervals: i = 0, 6. */
	assert_int_equal(
	    store_events_delete(f->st, "rollout.interval", "rollout/a", ids[0] + 1, ids[6]), 1);
	assert_int_equal(
	    store_events_delete(f->st, "rollout.interval", "rollout/a", ids[0], ids[0]), 1);
	assert_int_equal(store_events_delete(f->st, "rollout.interval", "rollout/a", 0, INT64_MAX),
	                 0);
	/* rollout/a verdicts: i = 4, 10. */
	assert_int_equal(store_events_delete(f->st, "verdict", "rollout/a", 0, INT64_MAX), 2);
	assert_int_equal(store_events_delete(f->st, "verdict", "rollout/a", 5, 4), 0);
	assert_int_equal(event_count(f->st, NULL), 9);
	assert_int_equal(event_count(f->st, "rollout/b"), 6);
	q.subject = "rollout/a";
	assert_int_equal(store_events_query(f->st, &q, &arr), 0);
	assert_int_equal(json_array_size(arr), 3); /* two rollout.step + config.loaded */
	json_decref(arr);

	/* Inside a transaction, a rollback brings them back. */
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_events_delete(f->st, "verdict", "rollout/b", 0, INT64_MAX), 2);
	assert_int_equal(event_count(f->st, "rollout/b"), 4);
	assert_int_equal(store_rollback(f->st), 0);
	assert_int_equal(event_count(f->st, "rollout/b"), 6);

	/* Deleting does not change the revision or reuse ids. */
	assert_int_equal(revision(f->st), 0);
	{
		int64_t id = 0;

		assert_int_equal(store_event_append(f->st, "ops", "k", "s", NULL, &id), 0);
		assert_true(id > ids[11] + 1);
	}
	assert_int_equal(store_events_delete(f->st, NULL, "s", 0, 1), -EINVAL);
	assert_int_equal(store_events_delete(f->st, "verdict", "s", -1, 1), -EINVAL);
}

/* Raw SQL from another session: the schema itself keeps the audit log. */
static void test_schema_refuses_audit_deletes(void **state)
{
	struct fixture *f = *state;

	f->st = open_ok(f->url);
	assert_int_equal(store_event_append(f->st, "ops", "rollout.step", "r", NULL, NULL), 0);
	assert_int_equal(store_event_append(f->st, "ops", "verdict", "r", NULL, NULL), 0);
	if (pg_admin_url) {
		PGconn *c = pg_raw(f->url);

		assert_int_not_equal(pg_try(c, "UPDATE events SET actor = 'mallory'"), 0);
		assert_non_null(strstr(PQerrorMessage(c), "append-only"));
		assert_int_not_equal(pg_try(c, "DELETE FROM events WHERE kind = 'rollout.step'"),
		                     0);
		assert_int_not_equal(pg_try(c, "TRUNCATE events"), 0);
		assert_int_not_equal(pg_try(c, "UPDATE revision SET value = -1"), 0);
		assert_int_not_equal(pg_try(c, "DELETE FROM revision"), 0);
		assert_int_equal(pg_try(c, "DELETE FROM events WHERE kind = 'verdict'"), 0);
		PQfinish(c);
	} else {
		sqlite3 *db = raw_open(f);

		assert_int_not_equal(sqlite3_exec(db,
		                                  "DELETE FROM events WHERE kind = 'rollout.step'",
		                                  NULL, NULL, NULL),
		                     SQLITE_OK);
		assert_non_null(strstr(sqlite3_errmsg(db), "append-only"));
		assert_int_equal(
		    sqlite3_exec(db, "DELETE FROM events WHERE kind = 'verdict'", NULL, NULL, NULL),
		    SQLITE_OK);
		sqlite3_close(db);
	}
	assert_int_equal(event_count(f->st, NULL), 1);
}

/* A version-2 SQLite file refuses every delete; version 3 relaxes it for evidence only. */
static void test_sqlite_migration_3_relaxes_deletes(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";
	sqlite3 *db;

	db = raw_open(f);
	assert_int_equal(store_sqlite_migrate(db, 2, err, sizeof(err)), 0);
	raw_exec(db, "INSERT INTO events (ts_ms, actor, kind, subject, details)"
	             " VALUES (1000, 'canaryd', 'verdict', 'rollout/a', '{}')");
	assert_int_not_equal(sqlite3_exec(db, "DELETE FROM events", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	f->st = open_ok(f->url);
	assert_int_equal(store_schema_version(f->st), 3);
	assert_int_equal(store_events_delete(f->st, "verdict", "rollout/a", 0, INT64_MAX), 1);
	db = raw_open(f);
	assert_int_equal(raw_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index'"
	                             " AND name IN ('events_subject_kind', 'events_kind')"),
	                 2);
	sqlite3_close(db);
}

/* --- postgres only ---------------------------------------------------------------- */

static void test_pg_fresh_db_is_migrated(void **state)
{
	struct fixture *f = *state;
	PGconn *c;

	f->st = open_ok(f->url);
	assert_string_equal(store_backend_name(f->st), "postgres");
	assert_int_equal(store_available(f->st), 1);
	assert_int_equal(store_schema_version(f->st), STORE_SCHEMA_VERSION);
	assert_int_equal(revision(f->st), 0);
	c = pg_raw(f->url);
	assert_int_equal(pg_int(c, "SELECT COUNT(*) FROM schema_migrations"), STORE_SCHEMA_VERSION);
	assert_true(pg_int(c, "SELECT MIN(applied_at) FROM schema_migrations") > 1600000000000LL);
	assert_int_equal(pg_int(c, "SELECT COUNT(*) FROM pg_indexes WHERE indexname IN"
	                           " ('events_subject', 'events_subject_kind', 'events_kind')"),
	                 3);
	/* The store's session: durable commits (synchronous_commit on), our name. */
	assert_int_equal(pg_int(c, "SELECT COUNT(*) FROM pg_stat_activity"
	                           " WHERE application_name = 'canaryd'"
	                           " AND datname = current_database()"),
	                 1);
	PQfinish(c);
}

static void test_pg_older_db_gets_missing_migrations(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";
	struct store *old;
	PGconn *c;

	old = store_pg_open_at(f->url, 2, err, sizeof(err));
	if (!old)
		fail_msg("open at 2: %s", err);
	assert_int_equal(store_schema_version(old), 2);
	assert_int_equal(store_event_append(old, "canaryd", "verdict", "rollout/a", NULL, NULL), 0);
	assert_int_equal(store_doc_put(old, "flag", "x", "{}", STORE_REV_ANY, NULL), 0);
	store_close(old);
	c = pg_raw(f->url);
	assert_int_not_equal(pg_try(c, "DELETE FROM events"), 0); /* version 2: append-only */
	PQfinish(c);

	f->st = open_ok(f->url);
	assert_int_equal(store_schema_version(f->st), STORE_SCHEMA_VERSION);
	assert_int_equal(revision(f->st), 1);
	assert_int_equal(store_events_delete(f->st, "verdict", "rollout/a", 0, INT64_MAX), 1);
}

static void test_pg_future_schema_is_refused(void **state)
{
	struct fixture *f = *state;
	char err[256] = "", sql[160];
	PGconn *c;

	f->st = open_ok(f->url);
	store_close(f->st);
	f->st = NULL;
	c = pg_raw(f->url);
	snprintf(sql, sizeof(sql),
	         "INSERT INTO schema_migrations (version, name, applied_at)"
	         " VALUES (%d, 'from the future', 0)",
	         STORE_SCHEMA_VERSION + 1);
	pg_exec(c, sql);
	assert_null(store_open(f->url, err, sizeof(err)));
	assert_non_null(strstr(err, "newer than this canaryd"));
	assert_int_equal(pg_int(c, "SELECT MAX(version) FROM schema_migrations"),
	                 STORE_SCHEMA_VERSION + 1);
	PQfinish(c);
}

static void test_pg_password_file(void **state)
{
	struct fixture *f = *state;
	char url[600], bad[600], pwpath[160], err[512] = "";
	const char *at = strchr(strstr(f->url, "://") + 3, '@');
	const char *colon = strchr(strstr(f->url, "://") + 3, ':');
	char password[128];
	FILE *fp;

	/* postgres://user:PASSWORD@host:port/db -> postgres://user@host:port/db?password_file= */
	assert_non_null(at);
	assert_non_null(colon);
	snprintf(password, sizeof(password), "%.*s", (int)(at - colon - 1), colon + 1);
	snprintf(pwpath, sizeof(pwpath), "%s/pg password", f->dir);
	fp = fopen(pwpath, "w");
	assert_non_null(fp);
	fprintf(fp, "%s\n", password);
	fclose(fp);
	snprintf(url, sizeof(url), "%.*s%s?connect_timeout=5&password_file=%s/pg%%20password",
	         (int)(colon - f->url), f->url, at, f->dir);
	f->st = open_ok(url);
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{}", STORE_REV_ANY, NULL), 0);
	assert_int_equal(store_url_check(url, err, sizeof(err)), 0);

	/* Without it the server refuses us; a wrong one too, and neither is echoed. */
	snprintf(bad, sizeof(bad), "%.*s%s", (int)(colon - f->url), f->url, at);
	assert_null(store_open(bad, err, sizeof(err)));
	assert_non_null(strstr(err, "cannot connect"));
	fp = fopen(pwpath, "w");
	assert_non_null(fp);
	fputs("not-the-password\n", fp);
	fclose(fp);
	assert_null(store_open(url, err, sizeof(err)));
	assert_non_null(strstr(err, "password authentication failed"));
	assert_null(strstr(err, "not-the-password"));
	assert_null(strstr(err, password));
	unlink(pwpath);
}

/* Ends the store's server session (the one canaryd session on the test's database db). */
static void pg_kill_store_session(PGconn *c, const char *db)
{
	char sql[256];

	snprintf(sql, sizeof(sql),
	         "SELECT COUNT(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
	         " WHERE application_name = 'canaryd' AND datname = '%s'",
	         db);
	assert_int_equal(pg_int(c, sql), 1);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Retries store_revision until it answers 0 (bounded: 15 s). */
static int wait_available(struct store *st)
{
	int i, rc = STORE_ERR_UNAVAILABLE;

	for (i = 0; i < 300 && rc != 0; i++) {
		rc = store_revision(st, NULL);
		if (rc == STORE_ERR_UNAVAILABLE)
			poll(NULL, 0, 50);
	}
	return rc;
}

static void test_pg_unavailable_then_reconnects(void **state)
{
	struct fixture *f = *state;
	PGconn *c;
	char sql[160], msg[512];
	int64_t rev = 0;

	f->st = open_ok(f->url);
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{\"v\":1}", STORE_REV_ANY, &rev), 0);
	c = pg_raw(pg_admin_url);
	/* The server "goes away" for this database: no new sessions, ours is killed. */
	snprintf(sql, sizeof(sql), "ALTER DATABASE %s ALLOW_CONNECTIONS false", f->pgdb);
	pg_exec(c, sql);
	pg_kill_store_session(c, f->pgdb);
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{\"v\":2}", rev, NULL),
	                 STORE_ERR_UNAVAILABLE);
	assert_int_equal(store_available(f->st), 0);
	assert_non_null(strstr(store_errmsg(f->st, msg, sizeof(msg)), "unavailable"));
	assert_null(strstr(msg, "canaryd-test-pw"));
	/* Every call fails fast while it is away: reads and writes alike. */
	assert_int_equal(store_doc_get(f->st, "flag", "x", NULL, NULL), STORE_ERR_UNAVAILABLE);
	assert_int_equal(store_event_append(f->st, "ops", "k", "s", NULL, NULL),
	                 STORE_ERR_UNAVAILABLE);
	assert_int_equal(store_begin(f->st), STORE_ERR_UNAVAILABLE);
	assert_int_equal(store_in_transaction(f->st), 0);
	assert_int_equal(store_available(f->st), 0);
	assert_string_equal(store_strerror(STORE_ERR_UNAVAILABLE), "store unavailable");
	/*
	 * No reconnect storm: a burst of calls makes at most one attempt per
	 * backoff period (100 ms, doubling).  The bound is what the elapsed time
	 * allows, however slow the machine; without the backoff every call tries.
	 */
	{
		unsigned before = store_pg_reconnects(f->st), made;
		uint64_t t0 = mono_ms(), elapsed;
		int i;

		for (i = 0; i < 200; i++)
			assert_int_equal(store_revision(f->st, NULL), STORE_ERR_UNAVAILABLE);
		elapsed = mono_ms() - t0;
		made = store_pg_reconnects(f->st) - before;
		if (made > 1 + elapsed / 100)
			fail_msg("%u reconnect attempts in %llu ms", made,
			         (unsigned long long)elapsed);
	}

	/* Back: the handle reconnects on its own, and nothing was written meanwhile. */
	snprintf(sql, sizeof(sql), "ALTER DATABASE %s ALLOW_CONNECTIONS true", f->pgdb);
	pg_exec(c, sql);
	PQfinish(c);
	assert_int_equal(wait_available(f->st), 0);
	assert_int_equal(store_available(f->st), 1);
	assert_int_equal(revision(f->st), rev);
	assert_int_equal(event_count(f->st, NULL), 0);
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{\"v\":2}", rev, &rev), 0);
	assert_int_equal(rev, 2);
}

static void test_pg_lost_inside_a_transaction(void **state)
{
	struct fixture *f = *state;
	PGconn *c;

	f->st = open_ok(f->url);
	c = pg_raw(f->url);
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{}", STORE_REV_ANY, NULL), 0);
	pg_kill_store_session(c, f->pgdb);
	assert_int_equal(store_event_append(f->st, "ops", "flag.updated", "flag/x", NULL, NULL),
	                 STORE_ERR_UNAVAILABLE);
	/* The server rolled it back; later calls in it do not run on a new session. */
	assert_int_equal(store_doc_put(f->st, "flag", "y", "{}", STORE_REV_ANY, NULL),
	                 STORE_ERR_UNAVAILABLE);
	assert_int_equal(store_commit(f->st), STORE_ERR_UNAVAILABLE);
	assert_int_equal(store_in_transaction(f->st), 0);
	assert_int_equal(wait_available(f->st), 0);
	assert_int_equal(store_doc_get(f->st, "flag", "x", NULL, NULL), STORE_ERR_NOTFOUND);
	assert_int_equal(store_doc_get(f->st, "flag", "y", NULL, NULL), STORE_ERR_NOTFOUND);
	assert_int_equal(revision(f->st), 0);

	/* The same with a rollback: fine, and the handle works afterwards. */
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{}", STORE_REV_ANY, NULL), 0);
	pg_kill_store_session(c, f->pgdb);
	assert_int_equal(store_doc_put(f->st, "flag", "y", "{}", STORE_REV_ANY, NULL),
	                 STORE_ERR_UNAVAILABLE);
	assert_int_equal(store_rollback(f->st), 0);
	assert_int_equal(wait_available(f->st), 0);
	assert_int_equal(store_doc_put(f->st, "flag", "x", "{}", STORE_REV_ABSENT, NULL), 0);
	assert_int_equal(revision(f->st), 1);
	PQfinish(c);
}

/* Two handles (two canaryd processes on one database): one revision sequence, CAS holds. */
static void test_pg_two_handles_share_one_revision(void **state)
{
	struct fixture *f = *state;
	struct store *other;
	int64_t rev = 0, id1 = 0, id2 = 0;

	f->st = open_ok(f->url);
	other = open_ok(f->url);
	assert_int_equal(store_doc_put(f->st, "flag", "a", "{}", STORE_REV_ANY, &rev), 0);
	assert_int_equal(rev, 1);
	assert_int_equal(store_doc_put(other, "flag", "a", "{\"b\":1}", 1, &rev), 0);
	assert_int_equal(rev, 2);
	assert_int_equal(store_doc_put(f->st, "flag", "a", "{\"c\":1}", 1, NULL),
	                 STORE_ERR_CONFLICT);
	assert_int_equal(store_event_append(f->st, "ops", "k", "s", NULL, &id1), 0);
	assert_int_equal(store_event_append(other, "ops", "k", "s", NULL, &id2), 0);
	assert_true(id2 > id1);
	/* A transaction on one handle holds the revision lock; the other waits, then follows. */
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_doc_put(f->st, "flag", "b", "{}", STORE_REV_ANY, &rev), 0);
	assert_int_equal(rev, 3);
	assert_int_equal(store_commit(f->st), 0);
	assert_int_equal(revision(other), 3);
	store_close(other);
}

static void test_strerror(void **state)
{
	(void)state;
	assert_string_equal(store_strerror(0), "ok");
	assert_string_equal(store_strerror(STORE_ERR_NOTFOUND), "not found");
	assert_string_equal(store_strerror(STORE_ERR_CONFLICT), "revision conflict");
	assert_string_equal(store_strerror(STORE_ERR_JSON), "invalid JSON");
	assert_string_equal(store_strerror(STORE_ERR_TXN), "transaction misuse");
	assert_string_equal(store_strerror(STORE_ERR_SCHEMA), "schema version mismatch");
	assert_string_equal(store_strerror(STORE_ERR_BACKEND), "database error");
	assert_string_equal(store_strerror(-EINVAL), strerror(EINVAL));
	assert_string_equal(store_strerror(12345), "unknown error");
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

/* Every backend. */
#define GENERIC_TESTS                                                                             \
	T(test_reopen_is_idempotent), T(test_events_append_and_list),                             \
	    T(test_events_limit_is_bounded), T(test_event_validation),                            \
	    T(test_doc_put_get_conflict), T(test_doc_delete_and_list),                            \
	    T(test_rollback_leaves_nothing), T(test_failure_midway_leaves_nothing),               \
	    T(test_transaction_misuse), T(test_events_query_filters),                             \
	    T(test_events_each_streams_everything), T(test_events_delete_compacts_evidence_only), \
	    T(test_schema_refuses_audit_deletes)

/*
 * test_store             the sqlite pass (and the postgres pass too when
 *                        CANARYD_TEST_PG_URL is set)
 * test_store --postgres  only the postgres pass; fails without CANARYD_TEST_PG_URL
 */
int main(int argc, char **argv)
{
	const struct CMUnitTest sqlite_tests[] = {
	    T(test_fresh_file_db_is_migrated),
	    T(test_older_db_gets_missing_migrations),
	    T(test_future_schema_is_refused),
	    T(test_url_schemes),
	    T(test_events_are_append_only),
	    T(test_sqlite_migration_3_relaxes_deletes),
	    T(test_second_writer_waits_for_the_lock),
	    T(test_strerror),
	    GENERIC_TESTS,
	};
	const struct CMUnitTest pg_tests[] = {
	    T(test_pg_fresh_db_is_migrated),           T(test_pg_older_db_gets_missing_migrations),
	    T(test_pg_future_schema_is_refused),       T(test_pg_password_file),
	    T(test_pg_unavailable_then_reconnects),    T(test_pg_lost_inside_a_transaction),
	    T(test_pg_two_handles_share_one_revision), GENERIC_TESTS,
	};
	const char *url = getenv("CANARYD_TEST_PG_URL");
	int pg_only = argc > 1 && strcmp(argv[1], "--postgres") == 0;
	int rc = 0;

	if (url && !*url)
		url = NULL;
	if (pg_only && !url) {
		fprintf(stderr, "test_store --postgres: CANARYD_TEST_PG_URL is not set "
		                "(run it under tests/pg/pg-run)\n");
		return 1;
	}
	if (!pg_only)
		rc |= cmocka_run_group_tests_name("store/sqlite", sqlite_tests, NULL, NULL);
	if (url) {
		pg_admin_url = url;
		rc |= cmocka_run_group_tests_name("store/postgres", pg_tests, NULL, NULL);
	}
	return rc;
}
