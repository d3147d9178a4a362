/*
 * store_sqlite.c - the embedded backend: one SQLite connection in WAL mode
 * with synchronous=FULL, so a committed change survives power loss, and a
 * cache of prepared statements.  Used from one thread (see store.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>

#include "core/loop.h"
#include "core/str.h"
#include "store/store_backend.h"
#include "store/store_sqlite.h"

/*
 * Migrations: append only.  A released step is never edited; a change is a
 * new step.  migrations[i] takes the database from version i to i + 1 and
 * runs in one transaction together with its schema_migrations row.
 */
struct migration {
	int version;
	const char *name;
	const char *sql;
};

static const struct migration migrations[] = {
    {1, "events",
     "CREATE TABLE events ("
     "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
     "  ts_ms INTEGER NOT NULL,"
     "  actor TEXT NOT NULL,"
     "  kind TEXT NOT NULL,"
     "  subject TEXT NOT NULL DEFAULT '',"
     "  details TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details))"
     ");"
     "CREATE INDEX events_subject ON events (subject, id);"
     "CREATE TRIGGER events_no_update BEFORE UPDATE ON events"
     "  BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;"
     "CREATE TRIGGER events_no_delete BEFORE DELETE ON events"
     "  BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;"},
    {2, "docs and revision",
     "CREATE TABLE docs ("
     "  kind TEXT NOT NULL,"
     "  name TEXT NOT NULL,"
     "  body TEXT NOT NULL CHECK (json_valid(body)),"
     "  rev INTEGER NOT NULL,"
     "  updated_ms INTEGER NOT NULL,"
     "  PRIMARY KEY (kind, name)"
     ") WITHOUT ROWID;"
     "CREATE TABLE revision ("
     "  id INTEGER PRIMARY KEY CHECK (id = 1),"
     "  value INTEGER NOT NULL"
     ");"
     "INSERT INTO revision (id, value) VALUES (1, 0);"
     "CREATE TRIGGER revision_monotonic BEFORE UPDATE ON revision"
     "  WHEN NEW.value < OLD.value"
     "  BEGIN SELECT RAISE(ABORT, 'the revision never decreases'); END;"
     "CREATE TRIGGER revision_no_delete BEFORE DELETE ON revision"
     "  BEGIN SELECT RAISE(ABORT, 'the revision row is permanent'); END;"},
    {3, "event compaction and indexes",
     /* Retention may delete per-interval evidence; the audit log stays append-only. */
     "DROP TRIGGER events_no_delete;"
     "CREATE TRIGGER events_no_delete BEFORE DELETE ON events"
     "  WHEN OLD.kind NOT IN ('rollout.interval', 'verdict')"
     "  BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;"
     "CREATE INDEX events_subject_kind ON events (subject, kind, id);"
     "CREATE INDEX events_kind ON events (kind, id);"},
};

#define MIGRATION_COUNT ((int)(sizeof(migrations) / sizeof(migrations[0])))

_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == STORE_SCHEMA_VERSION,
               "STORE_SCHEMA_VERSION must equal the number of sqlite migrations");

enum stmt_id {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_SAVEPOINT,
	ST_RELEASE,
	ST_ROLLBACK_TO,
	ST_SCHEMA_VERSION,
	ST_EVENT_INSERT,
	ST_EVENTS_DELETE,
	ST_DOC_REV,
	ST_DOC_GET,
	ST_DOC_UPSERT,
	ST_DOC_DELETE,
	ST_DOC_LIST,
	ST_REV_BUMP,
	ST_REV_GET,
	ST__COUNT
};

/*
 * Event queries: one cached statement per shape (subject? kind? newest
 * first?), so each uses its index instead of "?3 IS NULL OR ..." scans.
 */
#define EVQ_SUBJECT 1
#define EVQ_KIND    2
#define EVQ_DESC    4
#define EVQ__COUNT  8

static const char *const stmt_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT store_op",
    [ST_RELEASE] = "RELEASE store_op",
    [ST_ROLLBACK_TO] = "ROLLBACK TO store_op",
    [ST_SCHEMA_VERSION] = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
    [ST_EVENT_INSERT] = "INSERT INTO events (ts_ms, actor, kind, subject, details)"
                        " VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_EVENTS_DELETE] = "DELETE FROM events WHERE kind = ?1 AND subject = ?2"
                         " AND id BETWEEN ?3 AND ?4",
    [ST_DOC_REV] = "SELECT rev FROM docs WHERE kind = ?1 AND name = ?2",
    [ST_DOC_GET] = "SELECT body, rev FROM docs WHERE kind = ?1 AND name = ?2",
    [ST_DOC_UPSERT] = "INSERT INTO docs (kind, name, body, rev, updated_ms)"
                      " VALUES (?1, ?2, ?3, ?4, ?5)"
                      " ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body,"
                      " rev = excluded.rev, updated_ms = excluded.updated_ms",
    [ST_DOC_DELETE] = "DELETE FROM docs WHERE kind = ?1 AND name = ?2",
    [ST_DOC_LIST] = "SELECT name, body, rev FROM docs WHERE kind = ?1 ORDER BY name",
    [ST_REV_BUMP] = "UPDATE revision SET value = value + 1 WHERE id = 1 RETURNING value",
    [ST_REV_GET] = "SELECT value FROM revision WHERE id = 1",
};

struct sqlite_store {
	struct store base; /* first: store.c sees only this */
	sqlite3 *db;
	sqlite3_stmt *stmts[ST__COUNT];
	sqlite3_stmt *evq[EVQ__COUNT];
};

static const struct store_ops sqlite_ops;

static struct sqlite_store *to_sqlite(struct store *st)
{
	return (struct sqlite_store *)st;
}

/* Maps an SQLite result code to our errors; the message is set by the caller. */
static int map_rc(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_FULL:
		return -ENOSPC;
	default:
		return STORE_ERR_BACKEND;
	}
}

static int db_fail(struct sqlite_store *s, int rc, const char *what)
{
	store_set_error(&s->base, "store: sqlite: %s: %s", what, sqlite3_errmsg(s->db));
	return map_rc(rc);
}

/* The cached statement for id, prepared on first use; NULL with the error set. */
static sqlite3_stmt *stmt_get(struct sqlite_store *s, enum stmt_id id)
{
	int rc;

	if (s->stmts[id])
		return s->stmts[id];
	rc = sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &s->stmts[id],
	                        NULL);
	if (rc != SQLITE_OK) {
		db_fail(s, rc, stmt_sql[id]);
		s->stmts[id] = NULL;
		return NULL;
	}
	return s->stmts[id];
}

/* Runs a statement that returns no rows (transaction control). */
static int stmt_exec(struct sqlite_store *s, enum stmt_id id)
{
	sqlite3_stmt *q;
	int rc;

	q = stmt_get(s, id);
	if (!q)
		return STORE_ERR_BACKEND;
	rc = sqlite3_step(q);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		rc = db_fail(s, rc, stmt_sql[id]);
		sqlite3_reset(q);
		return rc;
	}
	sqlite3_reset(q);
	return 0;
}

/* Undo steps must not overwrite the message of the failure that caused them. */
static void stmt_exec_quiet(struct sqlite_store *s, enum stmt_id id)
{
	sqlite3_stmt *q;

	q = stmt_get(s, id);
	if (!q)
		return;
	sqlite3_step(q);
	sqlite3_reset(q);
}

static int bind_text(sqlite3_stmt *q, int idx, const char *text)
{
	return sqlite3_bind_text(q, idx, text, -1, SQLITE_STATIC);
}

/*
 * Every writing op is atomic by itself: its own transaction, or a savepoint
 * inside the caller's so that a failure leaves the caller's earlier writes.
 */
static int op_begin(struct sqlite_store *s)
{
	return stmt_exec(s, s->base.in_txn ? ST_SAVEPOINT : ST_BEGIN);
}

static int op_end(struct sqlite_store *s, int rc)
{
	if (rc == 0) {
		rc = stmt_exec(s, s->base.in_txn ? ST_RELEASE : ST_COMMIT);
		if (rc == 0)
			return 0;
	}
	if (sqlite3_get_autocommit(s->db)) {
		/* SQLite already rolled the whole transaction back (I/O error, full disk). */
		if (s->base.in_txn)
			s->base.txn_lost = 1;
		return rc;
	}
	if (s->base.in_txn) {
		stmt_exec_quiet(s, ST_ROLLBACK_TO);
		stmt_exec_quiet(s, ST_RELEASE);
	} else {
		stmt_exec_quiet(s, ST_ROLLBACK);
	}
	return rc;
}

/* Reads one integer from a single-row query whose parameters are bound. */
static int query_int(struct sqlite_store *s, sqlite3_stmt *q, const char *what, int64_t *out)
{
	int rc;

	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(q, 0);
		rc = 0;
	} else if (rc == SQLITE_DONE) {
		rc = STORE_ERR_NOTFOUND;
	} else {
		rc = db_fail(s, rc, what);
	}
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	return rc;
}

/* Steps a bound statement that returns no rows, then resets it for the next use. */
static int step_done(struct sqlite_store *s, sqlite3_stmt *q, const char *what)
{
	int rc;

	rc = sqlite3_step(q);
	rc = rc == SQLITE_DONE ? 0 : db_fail(s, rc, what);
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	return rc;
}

static int sqlite_begin(struct store *st)
{
	return stmt_exec(to_sqlite(st), ST_BEGIN);
}

static int sqlite_commit(struct store *st)
{
	struct sqlite_store *s = to_sqlite(st);
	int rc;

	rc = stmt_exec(s, ST_COMMIT);
	if (rc && !sqlite3_get_autocommit(s->db))
		stmt_exec_quiet(s, ST_ROLLBACK);
	return rc;
}

static int sqlite_rollback(struct store *st)
{
	struct sqlite_store *s = to_sqlite(st);

	if (sqlite3_get_autocommit(s->db))
		return 0;
	return stmt_exec(s, ST_ROLLBACK);
}

static int sqlite_schema_version(struct store *st)
{
	struct sqlite_store *s = to_sqlite(st);
	sqlite3_stmt *q;
	int64_t v = 0;
	int rc;

	q = stmt_get(s, ST_SCHEMA_VERSION);
	if (!q)
		return STORE_ERR_BACKEND;
	rc = query_int(s, q, "schema version", &v);
	if (rc)
		return rc == STORE_ERR_NOTFOUND ? 0 : rc;
	return (int)v;
}

static int sqlite_event_append(struct store *st, int64_t ts_ms, const char *actor, const char *kind,
                               const char *subject, const char *details, int64_t *id_out)
{
	struct sqlite_store *s = to_sqlite(st);
	sqlite3_stmt *q;
	int rc;

	rc = op_begin(s);
	if (rc)
		return rc;
	q = stmt_get(s, ST_EVENT_INSERT);
	if (!q) {
		rc = STORE_ERR_BACKEND;
		goto out_end;
	}
	sqlite3_bind_int64(q, 1, ts_ms);
	bind_text(q, 2, actor);
	bind_text(q, 3, kind);
	bind_text(q, 4, subject);
	bind_text(q, 5, details);
	rc = step_done(s, q, "append event");
	if (rc == 0 && id_out)
		*id_out = sqlite3_last_insert_rowid(s->db);
out_end:
	return op_end(s, rc);
}

static const char *col_text(sqlite3_stmt *q, int col)
{
	const unsigned char *t = sqlite3_column_text(q, col);

	return t ? (const char *)t : "";
}

/* The cached statement for an event query shape (EVQ_* bits). */
static sqlite3_stmt *evq_get(struct sqlite_store *s, int shape)
{
	char sql[320];
	int rc;

	if (s->evq[shape])
		return s->evq[shape];
	/* ?1 since, ?2 before, ?3 limit (-1: none), ?4 subject, ?5 kind */
	snprintf(sql, sizeof(sql),
	         "SELECT id, ts_ms, actor, kind, subject, details FROM events"
	         " WHERE id > ?1 AND id < ?2%s%s ORDER BY id%s LIMIT ?3",
	         shape & EVQ_SUBJECT ? " AND subject = ?4" : "",
	         shape & EVQ_KIND ? " AND kind = ?5" : "", shape & EVQ_DESC ? " DESC" : "");
	rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->evq[shape], NULL);
	if (rc != SQLITE_OK) {
		db_fail(s, rc, "prepare event query");
		s->evq[shape] = NULL;
	}
	return s->evq[shape];
}

static int sqlite_events_query(struct store *st, const struct store_events_query *eq, int limit,
                               store_event_row_cb cb, void *arg)
{
	struct sqlite_store *s = to_sqlite(st);
	struct store_event_row row;
	sqlite3_stmt *q;
	int rc, shape;

	shape = (eq->subject ? EVQ_SUBJECT : 0) | (eq->kind ? EVQ_KIND : 0) |
	        (eq->descending ? EVQ_DESC : 0);
	q = evq_get(s, shape);
	if (!q)
		return STORE_ERR_BACKEND;
	sqlite3_bind_int64(q, 1, eq->since_id);
	sqlite3_bind_int64(q, 2, eq->before_id > 0 ? eq->before_id : INT64_MAX);
	sqlite3_bind_int(q, 3, limit > 0 ? limit : -1);
	if (eq->subject)
		bind_text(q, 4, eq->subject);
	if (eq->kind)
		bind_text(q, 5, eq->kind);
	for (;;) {
		rc = sqlite3_step(q);
		if (rc == SQLITE_DONE) {
			rc = 0;
			break;
		}
		if (rc != SQLITE_ROW) {
			rc = db_fail(s, rc, "list events");
			break;
		}
		row.id = sqlite3_column_int64(q, 0);
		row.ts_ms = sqlite3_column_int64(q, 1);
		row.actor = col_text(q, 2);
		row.kind = col_text(q, 3);
		row.subject = col_text(q, 4);
		row.details = col_text(q, 5);
		rc = cb(arg, &row);
		if (rc)
			break;
	}
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	return rc;
}

static int sqlite_events_delete(struct store *st, const char *kind, const char *subject,
                                int64_t from_id, int64_t to_id, int64_t *n)
{
	struct sqlite_store *s = to_sqlite(st);
	sqlite3_stmt *q;
	int rc;

	rc = op_begin(s);
	if (rc)
		return rc;
	q = stmt_get(s, ST_EVENTS_DELETE);
	if (!q) {
		rc = STORE_ERR_BACKEND;
		goto out_end;
	}
	bind_text(q, 1, kind);
	bind_text(q, 2, subject);
	sqlite3_bind_int64(q, 3, from_id);
	sqlite3_bind_int64(q, 4, to_id);
	rc = step_done(s, q, "delete events");
	if (rc == 0)
		*n = sqlite3_changes64(s->db);
out_end:
	return op_end(s, rc);
}

/* Current revision of (kind, name), 0 when absent. */
static int doc_rev(struct sqlite_store *s, const char *kind, const char *name, int64_t *rev)
{
	sqlite3_stmt *q;
	int rc;

	q = stmt_get(s, ST_DOC_REV);
	if (!q)
		return STORE_ERR_BACKEND;
	bind_text(q, 1, kind);
	bind_text(q, 2, name);
	rc = query_int(s, q, "read document revision", rev);
	if (rc == STORE_ERR_NOTFOUND) {
		*rev = 0;
		rc = 0;
	}
	return rc;
}

static int rev_bump(struct sqlite_store *s, int64_t *rev)
{
	sqlite3_stmt *q;
	int rc;

	q = stmt_get(s, ST_REV_BUMP);
	if (!q)
		return STORE_ERR_BACKEND;
	rc = query_int(s, q, "bump revision", rev);
	if (rc == STORE_ERR_NOTFOUND) {
		store_set_error(&s->base, "store: sqlite: the revision row is missing");
		rc = STORE_ERR_BACKEND;
	}
	return rc;
}

static int conflict(struct sqlite_store *s, const char *kind, const char *name, int64_t expect,
                    int64_t cur)
{
	if (cur == 0)
		store_set_error(&s->base,
		                "store: document %s/%s: expected revision %lld, but it does not "
		                "exist",
		                kind, name, (long long)expect);
	else
		store_set_error(&s->base,
		                "store: document %s/%s: expected revision %lld, current is %lld",
		                kind, name, (long long)expect, (long long)cur);
	return STORE_ERR_CONFLICT;
}

/*
 * The checks every document write makes inside its op: (kind, name) must
 * exist when must_exist, be at expect_rev unless STORE_REV_ANY; then the
 * global revision is bumped and the new value returned in *rev.
 */
static int doc_next_rev(struct sqlite_store *s, const char *kind, const char *name,
                        int64_t expect_rev, int must_exist, int64_t *rev)
{
	int64_t cur;
	int rc;

	rc = doc_rev(s, kind, name, &cur);
	if (rc)
		return rc;
	if (must_exist && cur == 0) {
		store_set_error(&s->base, "store: document %s/%s not found", kind, name);
		return STORE_ERR_NOTFOUND;
	}
	if (expect_rev != STORE_REV_ANY && expect_rev != cur)
		return conflict(s, kind, name, expect_rev, cur);
	return rev_bump(s, rev);
}

static int sqlite_doc_put(struct store *st, int64_t ts_ms, const char *kind, const char *name,
                          const char *json, size_t json_len, int64_t expect_rev, int64_t *new_rev)
{
	struct sqlite_store *s = to_sqlite(st);
	int64_t rev;
	sqlite3_stmt *q;
	int rc;

	rc = op_begin(s);
	if (rc)
		return rc;
	rc = doc_next_rev(s, kind, name, expect_rev, 0, &rev);
	if (rc)
		goto out_end;
	q = stmt_get(s, ST_DOC_UPSERT);
	if (!q) {
		rc = STORE_ERR_BACKEND;
		goto out_end;
	}
	bind_text(q, 1, kind);
	bind_text(q, 2, name);
	sqlite3_bind_text64(q, 3, json, json_len, SQLITE_STATIC, SQLITE_UTF8);
	sqlite3_bind_int64(q, 4, rev);
	sqlite3_bind_int64(q, 5, ts_ms);
	rc = step_done(s, q, "write document");
	if (rc == 0 && new_rev)
		*new_rev = rev;
out_end:
	return op_end(s, rc);
}

static int sqlite_doc_get(struct store *st, const char *kind, const char *name, char **json_out,
                          int64_t *rev_out)
{
	struct sqlite_store *s = to_sqlite(st);
	sqlite3_stmt *q;
	const char *body;
	char *copy;
	int rc;

	q = stmt_get(s, ST_DOC_GET);
	if (!q)
		return STORE_ERR_BACKEND;
	bind_text(q, 1, kind);
	bind_text(q, 2, name);
	rc = sqlite3_step(q);
	if (rc == SQLITE_DONE) {
		store_set_error(st, "store: document %s/%s not found", kind, name);
		rc = STORE_ERR_NOTFOUND;
		goto out_reset;
	}
	if (rc != SQLITE_ROW) {
		rc = db_fail(s, rc, "read document");
		goto out_reset;
	}
	rc = 0;
	if (json_out) {
		/* text before bytes: the length is of the UTF-8 form just fetched */
		body = (const char *)sqlite3_column_text(q, 0);
		copy = str_dup(str_make(body, (size_t)sqlite3_column_bytes(q, 0)));
		if (!copy) {
			rc = -ENOMEM;
			goto out_reset;
		}
		*json_out = copy;
	}
	if (rev_out)
		*rev_out = sqlite3_column_int64(q, 1);
out_reset:
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	return rc;
}

static int sqlite_doc_delete(struct store *st, const char *kind, const char *name,
                             int64_t expect_rev, int64_t *new_rev)
{
	struct sqlite_store *s = to_sqlite(st);
	int64_t rev;
	sqlite3_stmt *q;
	int rc;

	rc = op_begin(s);
	if (rc)
		return rc;
	rc = doc_next_rev(s, kind, name, expect_rev, 1, &rev);
	if (rc)
		goto out_end;
	q = stmt_get(s, ST_DOC_DELETE);
	if (!q) {
		rc = STORE_ERR_BACKEND;
		goto out_end;
	}
	bind_text(q, 1, kind);
	bind_text(q, 2, name);
	rc = step_done(s, q, "delete document");
	if (rc == 0 && new_rev)
		*new_rev = rev;
out_end:
	return op_end(s, rc);
}

static int sqlite_doc_list(struct store *st, const char *kind, store_doc_cb cb, void *arg)
{
	struct sqlite_store *s = to_sqlite(st);
	sqlite3_stmt *q;
	int rc;

	q = stmt_get(s, ST_DOC_LIST);
	if (!q)
		return STORE_ERR_BACKEND;
	bind_text(q, 1, kind);
	for (;;) {
		rc = sqlite3_step(q);
		if (rc == SQLITE_DONE) {
			rc = 0;
			break;
		}
		if (rc != SQLITE_ROW) {
			rc = db_fail(s, rc, "list documents");
			break;
		}
		rc = cb(arg, col_text(q, 0), col_text(q, 1), sqlite3_column_int64(q, 2));
		if (rc)
			break;
	}
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	return rc;
}

static int sqlite_revision(struct store *st, int64_t *rev_out)
{
	struct sqlite_store *s = to_sqlite(st);
	sqlite3_stmt *q;
	int64_t v;
	int rc;

	q = stmt_get(s, ST_REV_GET);
	if (!q)
		return STORE_ERR_BACKEND;
	rc = query_int(s, q, "read revision", &v);
	if (rc == STORE_ERR_NOTFOUND) {
		store_set_error(st, "store: sqlite: the revision row is missing");
		rc = STORE_ERR_BACKEND;
	}
	if (rc == 0 && rev_out)
		*rev_out = v;
	return rc;
}

static void sqlite_close(struct store *st)
{
	struct sqlite_store *s = to_sqlite(st);
	int i;

	if (!sqlite3_get_autocommit(s->db))
		stmt_exec_quiet(s, ST_ROLLBACK);
	for (i = 0; i < ST__COUNT; i++)
		sqlite3_finalize(s->stmts[i]);
	for (i = 0; i < EVQ__COUNT; i++)
		sqlite3_finalize(s->evq[i]);
	sqlite3_close(s->db);
	free(s);
}

static const struct store_ops sqlite_ops = {
    .name = "sqlite",
    .close = sqlite_close,
    .begin = sqlite_begin,
    .commit = sqlite_commit,
    .rollback = sqlite_rollback,
    .schema_version = sqlite_schema_version,
    .event_append = sqlite_event_append,
    .events_query = sqlite_events_query,
    .events_delete = sqlite_events_delete,
    .doc_put = sqlite_doc_put,
    .doc_get = sqlite_doc_get,
    .doc_delete = sqlite_doc_delete,
    .doc_list = sqlite_doc_list,
    .revision = sqlite_revision,
};

/* sqlite3_exec with the message copied into (err, errlen). */
static int exec_sql(sqlite3 *db, const char *sql, const char *what, char *err, size_t errlen)
{
	char *msg = NULL;
	int rc;

	rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		store_put_err(err, errlen, "store: sqlite: %s: %s", what,
		              msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return map_rc(rc);
	}
	return 0;
}

static int read_version(sqlite3 *db, int *version, char *err, size_t errlen)
{
	sqlite3_stmt *q = NULL;
	int rc;

	rc = sqlite3_prepare_v2(db, stmt_sql[ST_SCHEMA_VERSION], -1, &q, NULL);
	if (rc != SQLITE_OK)
		goto out_fail;
	rc = sqlite3_step(q);
	if (rc != SQLITE_ROW)
		goto out_fail;
	*version = sqlite3_column_int(q, 0);
	sqlite3_finalize(q);
	return 0;
out_fail:
	store_put_err(err, errlen, "store: sqlite: read schema version: %s", sqlite3_errmsg(db));
	sqlite3_finalize(q);
	return map_rc(rc);
}

static int record_migration(sqlite3 *db, const struct migration *m, char *err, size_t errlen)
{
	sqlite3_stmt *q = NULL;
	int rc;

	rc = sqlite3_prepare_v2(db,
	                        "INSERT INTO schema_migrations (version, name, applied_at)"
	                        " VALUES (?1, ?2, ?3)",
	                        -1, &q, NULL);
	if (rc != SQLITE_OK)
		goto out_fail;
	sqlite3_bind_int(q, 1, m->version);
	sqlite3_bind_text(q, 2, m->name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 3, (int64_t)clock_wall_ms());
	rc = sqlite3_step(q);
	if (rc != SQLITE_DONE)
		goto out_fail;
	sqlite3_finalize(q);
	return 0;
out_fail:
	store_put_err(err, errlen, "store: sqlite: record migration %d: %s", m->version,
	              sqlite3_errmsg(db));
	sqlite3_finalize(q);
	return map_rc(rc);
}

int store_sqlite_migrate(sqlite3 *db, int target, char *err, size_t errlen)
{
	const struct migration *m;
	int version = 0, rc;

	if (target < 0 || target > MIGRATION_COUNT) {
		store_put_err(err, errlen, "store: no migration to version %d", target);
		return -EINVAL;
	}
	/* One transaction per step, re-reading the version: another process may migrate too. */
	for (;;) {
		rc = exec_sql(db, "BEGIN IMMEDIATE", "begin migration", err, errlen);
		if (rc)
			return rc;
		rc = exec_sql(db,
		              "CREATE TABLE IF NOT EXISTS schema_migrations ("
		              "  version INTEGER PRIMARY KEY,"
		              "  name TEXT NOT NULL,"
		              "  applied_at INTEGER NOT NULL)",
		              "create schema_migrations", err, errlen);
		if (rc)
			goto out_rollback;
		rc = read_version(db, &version, err, errlen);
		if (rc)
			goto out_rollback;
		if (version > target) {
			store_put_err(err, errlen,
			              "store: database schema version %d is newer than this "
			              "canaryd knows (%d); upgrade canaryd or use another "
			              "database",
			              version, target);
			rc = STORE_ERR_SCHEMA;
			goto out_rollback;
		}
		if (version == target)
			break;
		m = &migrations[version];
		rc = exec_sql(db, m->sql, m->name, err, errlen);
		if (rc == 0)
			rc = record_migration(db, m, err, errlen);
		if (rc) {
			char msg[400];

			snprintf(msg, sizeof(msg), "%s", err ? err : "");
			store_put_err(err, errlen, "store: migration %d (%s) failed: %s",
			              m->version, m->name, msg);
			rc = STORE_ERR_SCHEMA;
			goto out_rollback;
		}
		rc = exec_sql(db, "COMMIT", "commit migration", err, errlen);
		if (rc)
			goto out_rollback;
	}
	return exec_sql(db, "COMMIT", "commit migration check", err, errlen);
out_rollback:
	if (!sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}

/* Runs a PRAGMA that answers with one text row and returns a copy of the answer in buf. */
static int pragma_text(sqlite3 *db, const char *sql, char *buf, size_t len)
{
	sqlite3_stmt *q = NULL;
	int rc;

	rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		snprintf(buf, len, "%s", col_text(q, 0));
		rc = SQLITE_OK;
	}
	sqlite3_finalize(q);
	return rc;
}

struct store *store_sqlite_open(const char *path, char *err, size_t errlen)
{
	struct sqlite_store *s;
	char mode[16];
	int rc, memory;

	memory = strcmp(path, ":memory:") == 0;
	s = calloc(1, sizeof(*s));
	if (!s) {
		store_put_err(err, errlen, "store: out of memory");
		return NULL;
	}
	s->base.ops = &sqlite_ops;
	/* One thread per handle (store.h), so SQLite's own mutexes are not needed. */
	rc = sqlite3_open_v2(
	    path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		store_put_err(err, errlen, "store: sqlite:%s: %s", path,
		              s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
		goto out_close;
	}
	sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
	rc = pragma_text(s->db, "PRAGMA journal_mode = WAL", mode, sizeof(mode));
	if (rc != SQLITE_OK) {
		store_put_err(err, errlen, "store: sqlite:%s: %s", path, sqlite3_errmsg(s->db));
		goto out_close;
	}
	if (strcmp(mode, memory ? "memory" : "wal") != 0) {
		store_put_err(err, errlen, "store: sqlite:%s: cannot enable WAL (journal mode %s)",
		              path, mode);
		goto out_close;
	}
	if (exec_sql(s->db, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;", path, err,
	             errlen))
		goto out_close;
	if (store_sqlite_migrate(s->db, STORE_SCHEMA_VERSION, err, errlen))
		goto out_close;
	return &s->base;
out_close:
	sqlite3_close(s->db);
	free(s);
	return NULL;
}

sqlite3 *store_sqlite_db(struct store *st)
{
	if (!st || st->ops != &sqlite_ops)
		return NULL;
	return to_sqlite(st)->db;
}
