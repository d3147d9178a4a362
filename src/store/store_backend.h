/*
 * store_backend.h - the contract between store.c and a backend (sqlite,
 * postgres).  Not for callers outside src/store/ and its tests.
 * store.c calls the backends' open functions and their ops; backends call
 * only the helpers below (store_backend.c), never back into store.c.
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

#include "store/store_types.h"

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
	/*
	 * Rows matching q (checked by store.c: since_id >= 0, before_id >= 0),
	 * in id order or reversed, at most limit (<= 0: all), one cb call each;
	 * cb's non-zero return stops the walk and is returned.  q->limit is
	 * not used (limit is).
	 */
	int (*events_query)(struct store *st, const struct store_events_query *q, int limit,
	                    store_event_row_cb cb, void *arg);
	/* Deletes events of kind and subject with from_id <= id <= to_id; count in *n. */
	int (*events_delete)(struct store *st, const char *kind, const char *subject,
	                     int64_t from_id, int64_t to_id, int64_t *n);
	/* 1 or 0 as store_available(); NULL means always available. */
	int (*available)(const struct store *st);
	int (*doc_put)(struct store *st, int64_t ts_ms, const char *kind, const char *name,
	               const char *json, size_t json_len, int64_t expect_rev, int64_t *new_rev);
	int (*doc_get)(struct store *st, const char *kind, const char *name, char **json_out,
	               int64_t *rev_out);
	int (*doc_delete)(struct store *st, const char *kind, const char *name, int64_t expect_rev,
	                  int64_t *new_rev);
	int (*doc_list)(struct store *st, const char *kind, store_doc_cb cb, void *arg);
	int (*revision)(struct store *st, int64_t *rev_out);
	/* store_fence_term() inside the open transaction; NULL: always 0 (one node). */
	int (*fence_term)(struct store *st, int64_t term);
};

struct store {
	const struct store_ops *ops;
	int in_txn;         /* between store_begin() and commit/rollback */
	int txn_lost;       /* the database ended the transaction behind our back */
	int iterating;      /* inside store_doc_list()'s or store_events_each()'s callback */
	int walking_events; /* inside store_events_each()'s callback */
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
