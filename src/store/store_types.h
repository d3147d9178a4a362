/*
 * store_types.h - the types and constants of the store interface (store.h),
 * apart so that the backends (store_backend.h) can use them without
 * depending on store.c: the call graph stays store.c -> backends.
 * Callers include store.h, which includes this.
 */
#ifndef STORE_STORE_TYPES_H
#define STORE_STORE_TYPES_H

#include <stddef.h>
#include <stdint.h>

/* Store-specific errors; all other failures are negative errno values. */
enum store_err {
	STORE_ERR_NOTFOUND = -10001, /* no such document */
	STORE_ERR_CONFLICT = -10002, /* expected revision does not match */
	STORE_ERR_JSON = -10003,     /* details/document text is not valid JSON */
	STORE_ERR_TXN = -10004,      /* begin twice, commit/rollback without begin */
	STORE_ERR_SCHEMA = -10005,   /* database newer than this binary, or migration failed */
	STORE_ERR_BACKEND = -10006,  /* the database reported an error (see store_errmsg) */
	STORE_ERR_UNAVAILABLE =
	    -10007, /* the database cannot be reached now; nothing was written */
};

/* Schema version the backends of this binary migrate databases to. */
#define STORE_SCHEMA_VERSION 3

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
 * A filtered, bounded walk over the events (retention, evidence, /analysis).
 * Zero-initialise and set what you need.
 */
struct store_events_query {
	int64_t since_id;  /* ids > since_id (0: from the start) */
	int64_t before_id; /* ids < before_id (0: no upper bound) */
	int limit; /* as store_events_list; ignored by store_events_each (no limit when <= 0) */
	const char *subject; /* exact, NULL: any */
	const char *kind;    /* exact kind, NULL: any */
	int descending;      /* newest first */
};

/*
 * Called once per document; the strings are valid only during the call.
 * Return 0 to go on, anything else to stop (store_doc_list() returns it).
 * The callback may read documents but must not call store_doc_list() or
 * any function that writes (those return -EBUSY).
 */
typedef int (*store_doc_cb)(void *arg, const char *name, const char *json, int64_t rev);

/* store_events_each()'s callback; see store.h. */
typedef int (*store_event_cb)(void *arg, int64_t id, int64_t ts_ms, const char *actor,
                              const char *kind, const char *subject, const char *details_json);

#endif
