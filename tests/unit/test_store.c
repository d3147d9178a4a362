/*
 * test_store.c - the store: migrations, events, documents, transactions.
 * File databases live in a fresh mkdtemp() directory per test, removed after.
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
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sqlite3.h>

#include "store/store.h"
#include "store/store_sqlite.h"

struct fixture {
	char dir[64];
	char path[128];
	char url[160];
	struct store *st;
};

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
	snprintf(f->url, sizeof(f->url), "sqlite:%s", f->path);
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

	err[0] = '\0';
	assert_null(store_open("postgres://canary:s3cret@db.example/canary", err, sizeof(err)));
	assert_non_null(strstr(err, "postgres backend not built yet"));
	assert_null(strstr(err, "s3cret"));
	err[0] = '\0';
	assert_null(store_open("postgresql://db/canary", err, sizeof(err)));
	assert_non_null(strstr(err, "postgres backend not built yet"));

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

	f->st = open_ok("sqlite::memory:");
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
	if (l->st)
		l->nested_rc = store_doc_put(l->st, "flag", "zz", "{}", STORE_REV_ANY, NULL);
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
	{
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

	f->st = open_ok("sqlite::memory:");
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_fresh_file_db_is_migrated),
	    T(test_reopen_is_idempotent),
	    T(test_older_db_gets_missing_migrations),
	    T(test_future_schema_is_refused),
	    T(test_url_schemes),
	    T(test_events_append_and_list),
	    T(test_events_limit_is_bounded),
	    T(test_event_validation),
	    T(test_events_are_append_only),
	    T(test_doc_put_get_conflict),
	    T(test_doc_delete_and_list),
	    T(test_rollback_leaves_nothing),
	    T(test_failure_midway_leaves_nothing),
	    T(test_transaction_misuse),
	    T(test_second_writer_waits_for_the_lock),
	    T(test_strerror),
	};

	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
