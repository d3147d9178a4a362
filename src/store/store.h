/*
 * store.h - persisted state: the append-only event log and versioned documents.
 *
 * One interface, several backends chosen by URL: "sqlite:PATH" (embedded, the
 * default; "sqlite::memory:" for tests) and, later, "postgres://..." for fleet
 * mode (SPEC section 9).  Callers never see the backend; see docs/store.md.
 *
 * What lives here:
 *   - events: the audit log and evidence trail.  Append-only; ids strictly
 *     increase; never updated or deleted (the schema refuses it).
 *   - docs: JSON documents keyed by (kind, name) - flags, services' runtime
 *     weights, rollouts' state.  Every put or delete bumps one global
 *     revision (the config revision, SSE `id:`), and the document records
 *     the revision of its last write, so compare-and-set is by revision.
 *
 * Threading: a store handle belongs to one thread (the control thread) and
 * must only be used from it; it does no locking of its own.  Other processes
 * may open the same SQLite file; writers wait up to STORE_BUSY_TIMEOUT_MS.
 *
 * Errors: functions return 0 (or a count/version >= 0) on success and a
 * negative errno or STORE_ERR_* on failure.  store_errmsg() copies a human
 * description of the last failure into a caller's buffer.
 *
 * Atomicity: every call is atomic on its own (all rows it touches, or none).
 * Several calls become one atomic change between store_begin() and
 * store_commit().  A call that fails inside such a transaction undoes only
 * its own writes; the caller then decides to commit the rest or roll back.
 */
#ifndef STORE_STORE_H
#define STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Store-specific errors; all other failures are negative errno values. */
enum store_err {
	STORE_ERR_NOTFOUND = -10001, /* no such document */
	STORE_ERR_CONFLICT = -10002, /* expected revision does not match */
	STORE_ERR_JSON = -10003,     /* details/document text is not valid JSON */
	STORE_ERR_TXN = -10004,      /* begin twice, commit/rollback without begin */
	STORE_ERR_SCHEMA = -10005,   /* database newer than this binary, or migration failed */
	STORE_ERR_BACKEND = -10006,  /* the database reported an error (see store_errmsg) */
	STORE_ERR_UNAVAILABLE = -10007, /* the database cannot be reached now; nothing was written */
};

/* Schema version the backends of this binary migrate databases to. */
#define STORE_SCHEMA_VERSION 2

/* expect_rev values for store_doc_put() / store_doc_delete(). */
#define STORE_REV_ANY    (-1) /* no check */
#define STORE_REV_ABSENT 0    /* put only if the document does not exist yet */

/* Limits; crossing one is -EINVAL (names) or -E2BIG (JSON text). */
#define STORE_NAME_MAX             255               /* actor, kind, subject, doc kind/name bytes */
#define STORE_DETAILS_MAX          (64 * 1024)       /* event details JSON bytes */
#define STORE_DOC_MAX              (4 * 1024 * 1024) /* document JSON bytes */
#define STORE_EVENTS_LIMIT_DEFAULT 100
#define STORE_EVENTS_LIMIT_MAX     1000
#define STORE_BUSY_TIMEOUT_MS      5000

struct store;

/*
 * Opens the store named by url and brings its schema up to
 * STORE_SCHEMA_VERSION, one migration per transaction.
 *   "sqlite:PATH"      file database (created if missing), WAL, synchronous=FULL
 *   "sqlite::memory:"  private in-memory database (tests)
 *   "postgres://..."   not built yet: fails with a message saying so
 * Returns a handle the caller owns (store_close()), or NULL with a message in
 * err (may be NULL; always NUL-terminated when errlen > 0).  Fails when the
 * database records a schema version newer than STORE_SCHEMA_VERSION.
 * The URL is never echoed into err for postgres (it may carry a password).
 */
struct store *store_open(const char *url, char *err, size_t errlen);

/* Closes st and frees it; an open transaction is rolled back.  NULL is a no-op. */
void store_close(struct store *st);

/* Backend name ("sqlite"), static storage; for /v1/health/detailed. */
const char *store_backend_name(const struct store *st);

/*
 * Copies the description of st's last failed call into buf (NUL-terminated,
 * truncated to len) and returns buf.  Empty if nothing has failed yet.
 */
const char *store_errmsg(const struct store *st, char *buf, size_t len);

/* Static English text for a return code (0, STORE_ERR_*, negative errno). */
const char *store_strerror(int err);

/*
 * Replaces the clock that stamps events and documents (ms since the Unix
 * epoch, UTC).  now_ms NULL restores the wall clock.  For deterministic tests.
 */
void store_set_clock(struct store *st, int64_t (*now_ms)(void *arg), void *arg);

/*
 * Explicit transaction: store_begin() takes the write lock, store_commit()
 * makes every change since durable at once, store_rollback() drops them.
 * No nesting: store_begin() while one is open returns STORE_ERR_TXN, as do
 * commit/rollback without one.  A failed commit rolls back; either way the
 * transaction is over when store_commit() returns.  If the database aborted
 * the transaction on its own (I/O error), later calls return STORE_ERR_TXN
 * until store_rollback().
 */
int store_begin(struct store *st);
int store_commit(struct store *st);
int store_rollback(struct store *st);

/* 1 while an explicit transaction is open, else 0. */
int store_in_transaction(const struct store *st);

/* Schema version recorded in the database (>= 0), or a negative error. */
int store_schema_version(struct store *st);

/*
 * Appends one event stamped with the store clock and returns its id in
 * *id_out (may be NULL).  actor (token name, or "canaryd" for the daemon's
 * own decisions) and kind (dotted, e.g. "config.reloaded") are required and
 * non-empty; subject may be NULL (stored as "").  details_json must be a JSON
 * object (NULL means "{}"); it is stored compacted.  Nothing is copied past
 * the call.  -EINVAL on a bad name, -E2BIG over STORE_DETAILS_MAX,
 * STORE_ERR_JSON when details_json is not a JSON object.
 */
int store_event_append(struct store *st, const char *actor, const char *kind, const char *subject,
                       const char *details_json, int64_t *id_out);

/*
 * Lists events with id > since_id in id order, at most limit of them
 * (limit <= 0 means STORE_EVENTS_LIMIT_DEFAULT; larger than
 * STORE_EVENTS_LIMIT_MAX is clamped), only those whose subject equals
 * subject when it is not NULL.  Page by passing the last id seen.
 * On success *out is a new JSON array the caller owns (json_decref) of
 *   {"id": 7, "ts": "2024-05-01T12:34:56.789Z", "actor": "ops",
 *    "kind": "flag.updated", "subject": "flag/x", "details": {...}}
 */
int store_events_list(struct store *st, int64_t since_id, int limit, const char *subject,
                      json_t **out);

/*
 * Writes document (kind, name) with body json_text (any JSON value; kept
 * byte for byte).  expect_rev: STORE_REV_ANY, STORE_REV_ABSENT (create
 * only), or the revision the caller read; otherwise STORE_ERR_CONFLICT and
 * nothing changes.  On success bumps the global revision and stores it as
 * the document's revision, returned in *new_rev (may be NULL).
 * -EINVAL on a bad kind/name, -E2BIG over STORE_DOC_MAX, STORE_ERR_JSON.
 */
int store_doc_put(struct store *st, const char *kind, const char *name, const char *json_text,
                  int64_t expect_rev, int64_t *new_rev);

/*
 * Reads document (kind, name).  *json_out (may be NULL) receives a malloc'd
 * NUL-terminated copy of the body the caller frees; *rev_out (may be NULL)
 * its revision.  STORE_ERR_NOTFOUND when absent (outputs untouched).
 */
int store_doc_get(struct store *st, const char *kind, const char *name, char **json_out,
                  int64_t *rev_out);

/*
 * Deletes document (kind, name) if its revision matches expect_rev
 * (STORE_REV_ANY: no check) and bumps the global revision, returned in
 * *new_rev (may be NULL).  STORE_ERR_NOTFOUND when absent,
 * STORE_ERR_CONFLICT on a revision mismatch.
 */
int store_doc_delete(struct store *st, const char *kind, const char *name, int64_t expect_rev,
                     int64_t *new_rev);

/*
 * Called once per document; the strings are valid only during the call.
 * Return 0 to go on, anything else to stop (store_doc_list() returns it).
 * The callback may read documents but must not call store_doc_list() or
 * any function that writes (those return -EBUSY).
 */
typedef int (*store_doc_cb)(void *arg, const char *name, const char *json, int64_t rev);

/* Calls cb for every document of kind in name order.  0, cb's stop value, or an error. */
int store_doc_list(struct store *st, const char *kind, store_doc_cb cb, void *arg);

/*
 * The global revision: 0 on a new database, +1 for every document put or
 * delete, never decreasing.  Written to *rev_out.
 */
int store_revision(struct store *st, int64_t *rev_out);

#endif
