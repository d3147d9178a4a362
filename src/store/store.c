/*
 * store.c - backend-neutral half of the store: URL dispatch, argument and
 * JSON checks, transaction/iteration rules, the clock, and the event JSON.
 * Calls down into the backends (store_sqlite.c, store_pg.c); they call only
 * store_backend.c, never back into this file.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/loop.h"
#include "store/store.h"
#include "store/store_backend.h"
#include "store/store_pg.h"
#include "store/store_sqlite.h"

static int starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

struct store *store_open(const char *url, char *err, size_t errlen)
{
	const char *colon;

	store_put_err(err, errlen, "%s", "");
	if (!url || !*url) {
		store_put_err(err, errlen, "store: empty URL (expected sqlite:PATH)");
		return NULL;
	}
	if (starts_with(url, "sqlite:")) {
		const char *path = url + strlen("sqlite:");

		if (!*path) {
			store_put_err(err, errlen,
			              "store: 'sqlite:' needs a path (sqlite:canaryd.db or "
			              "sqlite::memory:)");
			return NULL;
		}
		return store_sqlite_open(path, err, errlen);
	}
	if (starts_with(url, "postgres://") || starts_with(url, "postgresql://"))
		return store_pg_open(url, err, errlen); /* never echoes the URL */
	colon = strchr(url, ':');
	if (colon && colon != url && colon - url <= 32)
		store_put_err(err, errlen,
		              "store: unknown URL scheme '%.*s' (expected sqlite:PATH or "
		              "postgres://...)",
		              (int)(colon - url), url);
	else
		store_put_err(err, errlen,
		              "store: URL has no scheme (expected sqlite:PATH or postgres://...)");
	return NULL;
}

void store_close(struct store *st)
{
	if (!st)
		return;
	st->ops->close(st);
}

const char *store_backend_name(const struct store *st)
{
	return st->ops->name;
}

int store_available(const struct store *st)
{
	return st->ops->available ? st->ops->available(st) : 1;
}

int store_url_check(const char *url, char *err, size_t errlen)
{
	const char *colon;

	store_put_err(err, errlen, "%s", "");
	if (!url || !*url) {
		store_put_err(err, errlen, "store: empty URL (expected sqlite:PATH)");
		return -EINVAL;
	}
	if (starts_with(url, "sqlite:")) {
		if (!url[strlen("sqlite:")]) {
			store_put_err(err, errlen, "store: 'sqlite:' needs a path");
			return -EINVAL;
		}
		return 0;
	}
	if (starts_with(url, "postgres://") || starts_with(url, "postgresql://"))
		return store_pg_url_check(url, err, errlen);
	colon = strchr(url, ':');
	if (colon && colon != url && colon - url <= 32)
		store_put_err(err, errlen,
		              "store: this canaryd cannot open '%.*s:' URLs (expected sqlite:PATH "
		              "or postgres://...)",
		              (int)(colon - url), url);
	else
		store_put_err(err, errlen,
		              "store: URL has no scheme (expected sqlite:PATH or postgres://...)");
	return -ENOTSUP;
}

const char *store_errmsg(const struct store *st, char *buf, size_t len)
{
	if (len == 0)
		return buf;
	snprintf(buf, len, "%s", st->errmsg);
	return buf;
}

const char *store_strerror(int err)
{
	switch (err) {
	case 0:
		return "ok";
	case STORE_ERR_NOTFOUND:
		return "not found";
	case STORE_ERR_CONFLICT:
		return "revision conflict";
	case STORE_ERR_JSON:
		return "invalid JSON";
	case STORE_ERR_TXN:
		return "transaction misuse";
	case STORE_ERR_SCHEMA:
		return "schema version mismatch";
	case STORE_ERR_BACKEND:
		return "database error";
	case STORE_ERR_UNAVAILABLE:
		return "store unavailable";
	default:
		break;
	}
	if (err < 0 && err > -4096)
		return strerror(-err);
	return "unknown error";
}

void store_set_clock(struct store *st, int64_t (*now_ms)(void *arg), void *arg)
{
	st->now_ms = now_ms;
	st->now_arg = now_ms ? arg : NULL;
}

/* The injected clock, else the wall clock (st->now_ms NULL). */
static int64_t store_now(struct store *st)
{
	return st->now_ms ? st->now_ms(st->now_arg) : (int64_t)clock_wall_ms();
}

/* Common entry checks; every public call starts with a clean message. */
static int enter(struct store *st, int writes)
{
	st->errmsg[0] = '\0';
	if (st->iterating && writes) {
		store_set_error(st, "store: write or list from inside a store_doc_list callback");
		return -EBUSY;
	}
	if (st->in_txn && st->txn_lost) {
		store_set_error(st,
		                "store: the transaction was aborted by the database; roll back");
		return STORE_ERR_TXN;
	}
	return 0;
}

static int check_name(struct store *st, const char *what, const char *s, int may_be_empty)
{
	size_t n;

	if (!s) {
		store_set_error(st, "store: %s is NULL", what);
		return -EINVAL;
	}
	n = strlen(s);
	if (n == 0 && !may_be_empty) {
		store_set_error(st, "store: %s is empty", what);
		return -EINVAL;
	}
	if (n > STORE_NAME_MAX) {
		store_set_error(st, "store: %s is longer than %d bytes", what, STORE_NAME_MAX);
		return -EINVAL;
	}
	return 0;
}

int store_begin(struct store *st)
{
	int rc;

	rc = enter(st, 1);
	if (rc)
		return rc;
	if (st->in_txn) {
		store_set_error(st, "store: store_begin while a transaction is open");
		return STORE_ERR_TXN;
	}
	rc = st->ops->begin(st);
	if (rc == 0) {
		st->in_txn = 1;
		st->txn_lost = 0;
	}
	return rc;
}

/* Entry checks of commit and rollback (verb names the call in the message). */
static int txn_end_check(struct store *st, const char *verb)
{
	st->errmsg[0] = '\0';
	if (st->iterating) {
		store_set_error(st, "store: %s from inside a store_doc_list callback", verb);
		return -EBUSY;
	}
	if (!st->in_txn) {
		store_set_error(st, "store: store_%s without store_begin", verb);
		return STORE_ERR_TXN;
	}
	return 0;
}

int store_commit(struct store *st)
{
	int rc;

	rc = txn_end_check(st, "commit");
	if (rc)
		return rc;
	if (st->txn_lost) {
		store_set_error(st, "store: the transaction was aborted by the database; "
		                    "nothing was committed");
		rc = STORE_ERR_TXN;
	} else {
		rc = st->ops->commit(st);
	}
	st->in_txn = 0;
	st->txn_lost = 0;
	return rc;
}

int store_rollback(struct store *st)
{
	int rc;

	rc = txn_end_check(st, "rollback");
	if (rc)
		return rc;
	if (!st->txn_lost)
		rc = st->ops->rollback(st);
	st->in_txn = 0;
	st->txn_lost = 0;
	return rc;
}

int store_in_transaction(const struct store *st)
{
	return st->in_txn;
}

int store_schema_version(struct store *st)
{
	int rc;

	rc = enter(st, 0);
	if (rc)
		return rc;
	return st->ops->schema_version(st);
}

/* Parses text as JSON; object_only demands an object.  *out is a new reference. */
static int parse_json(struct store *st, const char *what, const char *text, int object_only,
                      json_t **out)
{
	json_error_t jerr;
	json_t *j;

	j = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
	if (!j) {
		store_set_error(st, "store: %s: invalid JSON at line %d column %d: %s", what,
		                jerr.line, jerr.column, jerr.text);
		return STORE_ERR_JSON;
	}
	if (object_only && !json_is_object(j)) {
		store_set_error(st, "store: %s must be a JSON object", what);
		json_decref(j);
		return STORE_ERR_JSON;
	}
	*out = j;
	return 0;
}

int store_event_append(struct store *st, const char *actor, const char *kind, const char *subject,
                       const char *details_json, int64_t *id_out)
{
	json_t *details = NULL;
	char *compact = NULL;
	int rc;

	rc = enter(st, 1);
	if (rc)
		return rc;
	if (!subject)
		subject = "";
	if (!details_json)
		details_json = "{}";
	rc = check_name(st, "event actor", actor, 0);
	if (rc)
		return rc;
	rc = check_name(st, "event kind", kind, 0);
	if (rc)
		return rc;
	rc = check_name(st, "event subject", subject, 1);
	if (rc)
		return rc;
	if (strlen(details_json) > STORE_DETAILS_MAX) {
		store_set_error(st, "store: event details longer than %d bytes", STORE_DETAILS_MAX);
		return -E2BIG;
	}
	rc = parse_json(st, "event details", details_json, 1, &details);
	if (rc)
		return rc;
	compact = json_dumps(details, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!compact) {
		rc = -ENOMEM;
		goto out_decref;
	}
	rc = st->ops->event_append(st, store_now(st), actor, kind, subject, compact, id_out);
	free(compact);
out_decref:
	json_decref(details);
	return rc;
}

/* RFC 3339 UTC with milliseconds: 2024-05-01T12:34:56.789Z */
static void format_ts(int64_t ms, char *buf, size_t len)
{
	time_t secs;
	struct tm tm;
	int64_t frac;
	char date[32];

	frac = ms % 1000;
	secs = (time_t)(ms / 1000);
	if (frac < 0) {
		frac += 1000;
		secs -= 1;
	}
	if (!gmtime_r(&secs, &tm) || strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
		snprintf(buf, len, "1970-01-01T00:00:00.000Z");
		return;
	}
	snprintf(buf, len, "%s.%03dZ", date, (int)frac);
}

struct list_ctx {
	struct store *st;
	json_t *arr;
};

static int append_event_json(void *arg, const struct store_event_row *row)
{
	struct list_ctx *ctx = arg;
	json_t *details = NULL, *obj;
	char ts[40];
	int rc;

	rc = parse_json(ctx->st, "stored event details", row->details, 1, &details);
	if (rc)
		return STORE_ERR_BACKEND;
	format_ts(row->ts_ms, ts, sizeof(ts));
	/* "o" steals details, also when json_pack fails. */
	obj = json_pack("{s:I, s:s, s:s, s:s, s:s, s:o}", "id", (json_int_t)row->id, "ts", ts,
	                "actor", row->actor, "kind", row->kind, "subject", row->subject, "details",
	                details);
	if (!obj || json_array_append_new(ctx->arr, obj) != 0) {
		store_set_error(ctx->st, "store: out of memory building the event list");
		return -ENOMEM;
	}
	return 0;
}

/* Checks q's names and ids; 0 or -EINVAL with the message set. */
static int check_query(struct store *st, const struct store_events_query *q)
{
	int rc;

	if (!q) {
		store_set_error(st, "store: events query is NULL");
		return -EINVAL;
	}
	if (q->since_id < 0 || q->before_id < 0) {
		store_set_error(st, "store: events query: negative id bound");
		return -EINVAL;
	}
	if (q->subject) {
		rc = check_name(st, "event subject", q->subject, 1);
		if (rc)
			return rc;
	}
	if (q->kind) {
		rc = check_name(st, "event kind", q->kind, 0);
		if (rc)
			return rc;
	}
	return 0;
}

int store_events_query(struct store *st, const struct store_events_query *q, json_t **out)
{
	struct list_ctx ctx = {.st = st};
	int rc, limit;

	rc = enter(st, 0);
	if (rc)
		return rc;
	if (st->walking_events) {
		/* SQLite's walk may be stepping the statement this query would reset. */
		store_set_error(st, "store: events query from inside a store_events_each callback");
		return -EBUSY;
	}
	rc = check_query(st, q);
	if (rc)
		return rc;
	limit = q->limit;
	if (limit <= 0)
		limit = STORE_EVENTS_LIMIT_DEFAULT;
	if (limit > STORE_EVENTS_LIMIT_MAX)
		limit = STORE_EVENTS_LIMIT_MAX;
	ctx.arr = json_array();
	if (!ctx.arr)
		return -ENOMEM;
	rc = st->ops->events_query(st, q, limit, append_event_json, &ctx);
	if (rc)
		goto out_decref;
	*out = ctx.arr;
	return 0;
out_decref:
	json_decref(ctx.arr);
	return rc;
}

int store_events_list(struct store *st, int64_t since_id, int limit, const char *subject,
                      json_t **out)
{
	struct store_events_query q = {
	    .since_id = since_id < 0 ? 0 : since_id, .limit = limit, .subject = subject};

	return store_events_query(st, &q, out);
}

struct each_ctx {
	store_event_cb cb;
	void *arg;
};

static int each_row(void *arg, const struct store_event_row *row)
{
	struct each_ctx *ctx = arg;

	return ctx->cb(ctx->arg, row->id, row->ts_ms, row->actor, row->kind, row->subject,
	               row->details);
}

int store_events_each(struct store *st, const struct store_events_query *q, store_event_cb cb,
                      void *arg)
{
	struct each_ctx ctx = {cb, arg};
	int rc;

	rc = enter(st, 1);
	if (rc)
		return rc;
	rc = check_query(st, q);
	if (rc)
		return rc;
	if (!cb) {
		store_set_error(st, "store: store_events_each without a callback");
		return -EINVAL;
	}
	st->iterating = 1;
	st->walking_events = 1;
	rc = st->ops->events_query(st, q, 0, each_row, &ctx);
	st->iterating = 0;
	st->walking_events = 0;
	return rc;
}

int store_event_kind_compactable(const char *kind)
{
	return kind && (strcmp(kind, "rollout.interval") == 0 || strcmp(kind, "verdict") == 0);
}

int store_events_delete(struct store *st, const char *kind, const char *subject, int64_t from_id,
                        int64_t to_id)
{
	int64_t n = 0;
	int rc;

	rc = enter(st, 1);
	if (rc)
		return rc;
	rc = check_name(st, "event kind", kind, 0);
	if (rc)
		return rc;
	rc = check_name(st, "event subject", subject, 1);
	if (rc)
		return rc;
	if (!store_event_kind_compactable(kind)) {
		store_set_error(st,
		                "store: events of kind %s are never deleted (only rollout.interval "
		                "and verdict are compacted)",
		                kind);
		return -EPERM;
	}
	if (from_id < 0 || to_id < from_id) {
		if (from_id >= 0 && to_id >= 0)
			return 0; /* an empty range deletes nothing */
		store_set_error(st, "store: events delete: negative id bound");
		return -EINVAL;
	}
	rc = st->ops->events_delete(st, kind, subject, from_id, to_id, &n);
	if (rc)
		return rc;
	return n > INT32_MAX ? INT32_MAX : (int)n;
}

/* The (kind, name) key every document call takes. */
static int check_doc_key(struct store *st, const char *kind, const char *name)
{
	int rc;

	rc = check_name(st, "document kind", kind, 0);
	if (rc)
		return rc;
	return check_name(st, "document name", name, 0);
}

static int check_expect(struct store *st, int64_t expect_rev)
{
	if (expect_rev < STORE_REV_ANY) {
		store_set_error(st, "store: expected revision %lld is invalid",
		                (long long)expect_rev);
		return -EINVAL;
	}
	return 0;
}

int store_doc_put(struct store *st, const char *kind, const char *name, const char *json_text,
                  int64_t expect_rev, int64_t *new_rev)
{
	json_t *doc = NULL;
	size_t len;
	int rc;

	rc = enter(st, 1);
	if (rc)
		return rc;
	rc = check_doc_key(st, kind, name);
	if (rc)
		return rc;
	rc = check_expect(st, expect_rev);
	if (rc)
		return rc;
	if (!json_text) {
		store_set_error(st, "store: document %s/%s: body is NULL", kind, name);
		return -EINVAL;
	}
	len = strlen(json_text);
	if (len > STORE_DOC_MAX) {
		store_set_error(st, "store: document %s/%s longer than %d bytes", kind, name,
		                STORE_DOC_MAX);
		return -E2BIG;
	}
	rc = parse_json(st, "document", json_text, 0, &doc);
	if (rc)
		return rc;
	json_decref(doc);
	return st->ops->doc_put(st, store_now(st), kind, name, json_text, len, expect_rev, new_rev);
}

int store_doc_get(struct store *st, const char *kind, const char *name, char **json_out,
                  int64_t *rev_out)
{
	int rc;

	rc = enter(st, 0);
	if (rc)
		return rc;
	rc = check_doc_key(st, kind, name);
	if (rc)
		return rc;
	return st->ops->doc_get(st, kind, name, json_out, rev_out);
}

int store_doc_delete(struct store *st, const char *kind, const char *name, int64_t expect_rev,
                     int64_t *new_rev)
{
	int rc;

	rc = enter(st, 1);
	if (rc)
		return rc;
	rc = check_doc_key(st, kind, name);
	if (rc)
		return rc;
	rc = check_expect(st, expect_rev);
	if (rc)
		return rc;
	return st->ops->doc_delete(st, kind, name, expect_rev, new_rev);
}

int store_doc_list(struct store *st, const char *kind, store_doc_cb cb, void *arg)
{
	int rc;

	/* A nested list would reset the statement the outer one is stepping. */
	rc = enter(st, 1);
	if (rc)
		return rc;
	rc = check_name(st, "document kind", kind, 0);
	if (rc)
		return rc;
	if (!cb) {
		store_set_error(st, "store: store_doc_list without a callback");
		return -EINVAL;
	}
	st->iterating = 1;
	rc = st->ops->doc_list(st, kind, cb, arg);
	st->iterating = 0;
	return rc;
}

int store_fence_term(struct store *st, int64_t term)
{
	if (!st->in_txn) {
		store_set_error(st, "store: the fence is checked inside a transaction");
		return STORE_ERR_TXN;
	}
	return st->ops->fence_term ? st->ops->fence_term(st, term) : 0;
}

int store_revision(struct store *st, int64_t *rev_out)
{
	int rc;

	rc = enter(st, 0);
	if (rc)
		return rc;
	return st->ops->revision(st, rev_out);
}
