/*
 * store_backend.h - the contract between store.c and a backend (sqlite,
 * later postgres).  Not for callers outside src/store/ and its tests.
 *
 * store.c checks arguments, validates and compacts JSON, enforces the
 * transaction and iteration rules, stamps times and builds the JSON the
 * API wants; a backend only runs SQL.  A backend embeds struct store as its
 * first member and allocates it in its open function.
 *
 * Every op that writes must be atomic on its own: outside an explicit
 * transaction it runs in one; inside one it undoes its own writes on
 * failure (a savepoint) and leaves the transaction open.
 */
#ifndef STORE_STORE_BACKEND_H
#define STORE_STORE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* One event row as a backend hands it to store.c; strings valid during the call. */
struct store_event_row {
	int64_t id;
	int64_t ts_ms;
	const char *actor;
	const char *kind;
	const char *subject;
	const char *details; /* JSON object text */
};

typedef int (*store_event_row_cb)(void *arg, const struct store_event_row *row);

struct store_ops {
	const char *name;
	/* Frees everything, including st; rolls back an open transaction. */
	void (*close)(struct store *st);
	int (*begin)(struct store *st);
	/* Commits; on failure rolls back.  The transaction is over either way. */
	int (*commit)(struct store *st);
	int (*rollback)(struct store *st);
	int (*schema_version)(struct store *st);
	int (*event_append)(struct store *st, int64_t ts_ms, const char *actor, const char *kind,
	                    const char *subject, const char *details, int64_t *id_out);
	/* Rows with id > since_id (subject NULL: any), id order, at most limit. */
	int (*events_list)(struct store *st, int64_t since_id, int limit, const char *subject,
	                   store_event_row_cb cb, void *arg);
	int (*doc_put)(struct store *st, int64_t ts_ms, const char *kind, const char *name,
	               const char *json, size_t json_len, int64_t expect_rev, int64_t *new_rev);
	int (*doc_get)(struct store *st, const char *kind, const char *name, char **json_out,
	               int64_t *rev_out);
	int (*doc_delete)(struct store *st, const char *kind, const char *name, int64_t expect_rev,
	                  int64_t *new_rev);
	int (*doc_list)(struct store *st, const char *kind, store_doc_cb cb, void *arg);
	int (*revision)(struct store *st, int64_t *rev_out);
};

struct store {
	const struct store_ops *ops;
	int in_txn;    /* between store_begin() and commit/rollback */
	int txn_lost;  /* the database ended the transaction behind our back */
	int iterating; /* inside store_doc_list()'s callback */
	int64_t (*now_ms)(void *arg);
	void *now_arg;
	char errmsg[512];
};

/* Sets st->errmsg (printf-style); backends and store.c use it for every failure. */
void store_set_error(struct store *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Copies a message into a caller's (err, errlen) buffer; err may be NULL. */
void store_put_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
