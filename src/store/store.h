/*
 * store.h - persisted state: the append-only event log and versioned documents.
 *
 * One interface, several backends chosen by URL: "sqlite:PATH" (embedded, the
 * default; "sqlite::memory:" for tests) and "postgres://..." (libpq; fleet
 * mode, SPEC section 9).  Callers never see the backend; see docs/store.md.
 *
 * What lives here:
 *   - events: the audit log and evidence trail.  Append-only; ids strictly
 *     increase; never updated.  Only the per-interval evidence kinds
 *     ("rollout.interval", "verdict") may be deleted, by retention's
 *     compaction (store_events_delete); the schema refuses everything else.
 *   - docs: JSON documents keyed by (kind, name) - flags, services' runtime
 *     weights, rollouts' state.  Every put or delete bumps one global
 *     revision (the config revision, SSE `id:`), and the document records
 *     the revision of its last write, so compare-and-set is by revision.
 *
 * Threading: a store handle belongs to one thread (the control thread) and
 * must only be used from it; it does no locking of its own.  Other processes
 * may open the same SQLite file; writers wait up to STORE_BUSY_TIMEOUT_MS.
 *
 * Availability: a postgres store may lose its server.  Calls then fail fast
 * with STORE_ERR_UNAVAILABLE (nothing was written) and the handle reconnects
 * by itself, at most one attempt per backoff period (100 ms doubling to 5 s),
 * on a later call; store_available() says which state it is in.
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

#include "store/store_types.h"

/*
 * Opens the store named by url and brings its schema up to
 * STORE_SCHEMA_VERSION, one migration per transaction.
 *   "sqlite:PATH"      file database (created if missing), WAL, synchronous=FULL
 *   "sqlite::memory:"  private in-memory database (tests)
 *   "postgres://..." / "postgresql://..."  a libpq URL (docs/store.md: the
 *                      password from the URL or a password_file= parameter)
 * Returns a handle the caller owns (store_close()), or NULL with a message in
 * err (may be NULL; always NUL-terminated when errlen > 0).  Fails when the
 * database records a schema version newer than STORE_SCHEMA_VERSION.
 * The URL is never echoed into err for postgres (it may carry a password).
 * A postgres server that cannot be reached at open is an error too (start
 * order matters only once: later outages are STORE_ERR_UNAVAILABLE).
 */
struct store *store_open(const char *url, char *err, size_t errlen);

/* Closes st and frees it; an open transaction is rolled back.  NULL is a no-op. */
void store_close(struct store *st);

/* Backend name ("sqlite", "postgres"), static storage; for /v1/health/detailed. */
const char *store_backend_name(const struct store *st);

/*
 * 1 when the last call reached the database (or none failed for lack of
 * it), 0 while it is away (calls return STORE_ERR_UNAVAILABLE).  Does no
 * I/O: cheap enough for every health request.  Always 1 for sqlite.
 */
int store_available(const struct store *st);

/*
 * Checks, without connecting, that this binary can open url: a known scheme
 * whose backend is built in and, for postgres, a URL libpq can parse (with
 * password_file= readable).  0, or -EINVAL / -ENOTSUP with a message in err
 * that never shows a password.  For canaryd --check.
 */
int store_url_check(const char *url, char *err, size_t errlen);

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
 * Like store_events_list() with every filter of q: since_id < id < before_id
 * (before_id 0: unbounded), subject and kind exact when not NULL, oldest or
 * (descending) newest first, at most q->limit (<= 0: the default, clamped to
 * STORE_EVENTS_LIMIT_MAX).  *out is a new JSON array in the same shape.
 */
int store_events_query(struct store *st, const struct store_events_query *q, json_t **out);

/*
 * Streams rows (no array in memory) to cb (store_types.h); same row shape as
 * store_backend.h's store_event_row; cb returns non-zero to stop (store_events_each returns
 * that value).  Strings are valid only during the call.  q->limit <= 0: no
 * limit.  The callback may read documents but must not write, list
 * documents or query events (-EBUSY), as in store_doc_list().
 */
int store_events_each(struct store *st, const struct store_events_query *q, store_event_cb cb,
                      void *arg);

/*
 * Compaction: deletes events of exactly `kind` and `subject` with
 * from_id <= id <= to_id.  Only the compactable kinds "rollout.interval" and
 * "verdict" may be deleted (any other kind: -EPERM); the audit log is never
 * touched.  Returns the number deleted (>= 0) or an error.  Atomic like
 * every write; inside store_begin() it joins the caller's transaction, so a
 * summary event and the delete of what it summarises can commit together.
 */
int store_events_delete(struct store *st, const char *kind, const char *subject, int64_t from_id,
                        int64_t to_id);

/* 1 if events of kind may be deleted by store_events_delete(), else 0. */
int store_event_kind_compactable(const char *kind);

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
 * Calls cb (store_doc_cb, store_types.h: the strings are valid only during
 * the call; it may read documents but not write or list) for every document
 * of kind in name order.  0, cb's stop value, or an error.
 */
int store_doc_list(struct store *st, const char *kind, store_doc_cb cb, void *arg);

/*
 * The global revision: 0 on a new database, +1 for every document put or
 * delete, never decreasing.  Written to *rev_out.
 */
int store_revision(struct store *st, int64_t *rev_out);

/*
 * Fleet fencing (fleet/fleet.h): inside the caller's open transaction, asks
 * the database whether it may commit a decision under leader term `term`.
 * postgres: runs the fleet schema's canaryd_fence(term), which reads the
 * lease row's term FOR SHARE when the transaction wrote a rollout document
 * or event; 0 to commit, STORE_ERR_CONFLICT when the term moved on.
 * sqlite (one node, no fleet): always 0.  STORE_ERR_TXN outside a transaction.
 */
int store_fence_term(struct store *st, int64_t term);

#endif
