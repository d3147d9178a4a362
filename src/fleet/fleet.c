/*
 * fleet.c - leader lease, fencing, change propagation and the node registry
 * on PostgreSQL.  See fleet.h and docs/fleet.md.
 */
#include "fleet/fleet.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <libpq-fe.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "core/loop.h"
#include "state/state.h"
#include "store/store.h"
#include "store/store_pg.h"

#define LOCK_KEY        "1667329633" /* pg_advisory_lock key of the leader ("cana") */
#define SCHEMA_LOCK_KEY "7305551702" /* pg_advisory_xact_lock key: the fleet schema */
#define CHANNEL         "canaryd"
#define FEED_BATCH      500
#define LOCAL_REVS_MAX  65536 /* local commits not yet passed by the feed */
#define BACKOFF_MIN_MS  250
#define BACKOFF_MAX_MS  2000
#define PRUNE_MS        60000   /* the leader prunes the feed this often */
#define HELD_MAX        1000000 /* documents remembered for a resync's deletes */

#define STR_(x) #x
#define XSTR(x) STR_(x)

/* The document kinds with subscribers: their local commits are announced. */
static const char *const doc_kinds[] = {"traffic", "mirror",     "faults",
                                        "flag",    "flagconfig", "rollout"};

/*
 * The fleet schema, created by whichever node starts first (under a
 * transaction advisory lock; every statement is idempotent).  The trigger
 * on the store's `docs` table records every write in `changes` in the same
 * transaction, and marks a transaction that writes a rollout document or a
 * rollout event as a decision, which canaryd_fence() then checks.
 */
static const char schema_sql[] =
    "SELECT pg_advisory_xact_lock(" SCHEMA_LOCK_KEY ");"
    "CREATE TABLE IF NOT EXISTS fleet_lease ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  term BIGINT NOT NULL,"
    "  holder TEXT COLLATE \"C\" NOT NULL DEFAULT '',"
    "  holder_pid INTEGER NOT NULL DEFAULT 0,"
    "  expires_at TIMESTAMPTZ NOT NULL DEFAULT now());"
    "INSERT INTO fleet_lease (id, term) VALUES (1, 0) ON CONFLICT DO NOTHING;"
    "CREATE TABLE IF NOT EXISTS fleet_nodes ("
    "  id TEXT COLLATE \"C\" PRIMARY KEY,"
    "  address TEXT NOT NULL,"
    "  role TEXT NOT NULL,"
    "  term BIGINT NOT NULL,"
    "  applied_rev BIGINT NOT NULL,"
    "  last_seen TIMESTAMPTZ NOT NULL);"
    "CREATE TABLE IF NOT EXISTS changes ("
    "  rev BIGINT PRIMARY KEY,"
    "  kind TEXT COLLATE \"C\" NOT NULL,"
    "  name TEXT COLLATE \"C\" NOT NULL,"
    "  at TIMESTAMPTZ NOT NULL DEFAULT now());"
    "CREATE INDEX IF NOT EXISTS changes_at ON changes (at);"
    "CREATE TABLE IF NOT EXISTS fleet_feed ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  pruned_upto BIGINT NOT NULL DEFAULT 0);"
    "INSERT INTO fleet_feed (id) VALUES (1) ON CONFLICT DO NOTHING;"
    "CREATE OR REPLACE FUNCTION canaryd_doc_changed() RETURNS trigger LANGUAGE plpgsql AS $$"
    " DECLARE r BIGINT; k TEXT; n TEXT;"
    " BEGIN"
    "  IF TG_OP = 'DELETE' THEN"
    "   k := OLD.kind; n := OLD.name; SELECT value INTO r FROM revision WHERE id = 1;"
    "  ELSE k := NEW.kind; n := NEW.name; r := NEW.rev; END IF;"
    "  INSERT INTO changes (rev, kind, name) VALUES (r, k, n)"
    "   ON CONFLICT (rev) DO UPDATE SET kind = excluded.kind, name = excluded.name;"
    "  IF k = 'rollout' THEN PERFORM set_config('canaryd.decision', '1', true); END IF;"
    "  RETURN NULL;"
    " END $$;"
    "CREATE OR REPLACE FUNCTION canaryd_event_decision() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN PERFORM set_config('canaryd.decision', '1', true); RETURN NULL; END $$;"
    "CREATE OR REPLACE FUNCTION canaryd_fence(t BIGINT) RETURNS BOOLEAN LANGUAGE plpgsql AS $$"
    " DECLARE cur BIGINT;"
    " BEGIN"
    "  IF coalesce(current_setting('canaryd.decision', true), '') <> '1' THEN RETURN true; END IF;"
    "  SELECT term INTO cur FROM fleet_lease WHERE id = 1 FOR SHARE;"
    "  RETURN cur IS NULL OR cur = t;"
    " END $$;"
    "DO $$ BEGIN"
    "  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'docs_changes'"
    "                 AND tgrelid = 'docs'::regclass) THEN"
    "   CREATE TRIGGER docs_changes AFTER INSERT OR UPDATE OR DELETE ON docs"
    "    FOR EACH ROW EXECUTE FUNCTION canaryd_doc_changed();"
    "  END IF;"
    "  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'events_decision'"
    "                 AND tgrelid = 'events'::regclass) THEN"
    "   CREATE TRIGGER events_decision AFTER INSERT ON events FOR EACH ROW"
    "    WHEN (NEW.kind LIKE 'rollout.%' OR NEW.kind = 'verdict')"
    "    EXECUTE FUNCTION canaryd_event_decision();"
    "  END IF;"
    " END $$;";

struct conn {
	PGconn *pg;
	struct loop_io io;
	int registered;    /* io is in the loop (listen connection only) */
	int sending;       /* an asynchronous NOTIFY awaits its result */
	int backoff_ms;    /* the next wait after a failed attempt */
	uint64_t next_try; /* loop_now_ms(): no attempt before */
	const char *what;  /* "lock" or "listen", for logs */
};

struct fleet {
	struct loop *loop;
	struct state *state;
	struct fleet_hooks hooks;
	char *url;
	char id[FLEET_ID_MAX + 1];
	char address[FLEET_ID_MAX + 1];
	int64_t lease_ms;
	struct conn lk, ls;

	int leader;
	int64_t term;      /* while leader: this node's term */
	int64_t seen_term; /* the highest term seen (lease row, notifications) */
	char holder[FLEET_ID_MAX + 1];
	uint64_t renewed_ms; /* clock_mono_ms() when the last good renewal was sent */
	/*
	 * The term this node led when it lost the store (its connection, or the
	 * lease ran out unrenewed); 0 otherwise.  While set and not leading, the
	 * node judges rollback-only (fleet_rollback_only()).
	 */
	int64_t lost_term;

	int64_t applied; /* the feed is applied up to here */
	int64_t latest;  /* the highest revision known to exist */
	int64_t *local;  /* revisions this node committed, above applied, ascending */
	size_t nlocal, caplocal;
	/*
	 * The documents this node holds, as sorted "kind\x01name" keys (every
	 * published change keeps it current): a resync deletes those the store
	 * no longer has.
	 */
	char **held;
	size_t nheld, capheld;
	uint64_t resyncs;

	int64_t notify_rev;             /* the highest local revision not yet announced */
	struct loop_timer notify_timer; /* armed at 0 ms: runs after this turn (cancellable) */
	int feed_wanted;

	struct loop_timer lease_timer, poll_timer, node_timer;
	uint64_t last_prune_ms;
	uint64_t changes_applied, leader_changes, notifications;
	int subscribed;
};

/* --- pure helpers ------------------------------------------------------------------ */

static int parse_i64(const char *s, size_t n, int64_t *out)
{
	int64_t v = 0;

	if (n == 0 || n > 18)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

int fleet_parse_notify(const char *payload, int64_t *rev, int64_t *term)
{
	const char *comma;

	if (!payload)
		return -EINVAL;
	comma = strchr(payload, ',');
	if (!comma)
		return -EINVAL;
	if (parse_i64(payload, (size_t)(comma - payload), rev) ||
	    parse_i64(comma + 1, strlen(comma + 1), term))
		return -EINVAL;
	return 0;
}

int fleet_lease_lapsed(uint64_t renewed_ms, uint64_t now_ms, int64_t lease_ms)
{
	uint64_t usable = (uint64_t)(lease_ms - lease_ms / 10);

	return now_ms < renewed_ms ? 0 : now_ms - renewed_ms >= usable;
}

/* Adds rev to the ascending set of local revisions (drops the oldest past the cap). */
static void local_add(struct fleet *f, int64_t rev)
{
	if (rev <= f->applied || (f->nlocal && f->local[f->nlocal - 1] >= rev))
		return;
	if (f->nlocal == LOCAL_REVS_MAX) {
		memmove(f->local, f->local + 1, (f->nlocal - 1) * sizeof(*f->local));
		f->nlocal--;
	}
	if (f->nlocal == f->caplocal) {
		size_t cap = f->caplocal ? f->caplocal * 2 : 64;
		int64_t *v = realloc(f->local, cap * sizeof(*v));

		if (!v)
			return; /* the change comes back through the feed: applied twice, harmless */
		f->local = v;
		f->caplocal = cap;
	}
	f->local[f->nlocal++] = rev;
}

/* 1 if rev was committed by this node; forgets every local revision <= rev. */
static int local_take(struct fleet *f, int64_t rev)
{
	size_t i = 0;
	int found = 0;

	while (i < f->nlocal && f->local[i] <= rev) {
		if (f->local[i] == rev)
			found = 1;
		i++;
	}
	if (i) {
		memmove(f->local, f->local + i, (f->nlocal - i) * sizeof(*f->local));
		f->nlocal -= i;
	}
	return found;
}

/* --- the documents held ------------------------------------------------------------ */

/* Position of kind/name in the sorted held keys; *found says whether it is there. */
static size_t held_find(const struct fleet *f, const char *kind, const char *name, int *found)
{
	size_t lo = 0, hi = f->nheld, kl = strlen(kind);

	*found = 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const char *k = f->held[mid];
		int c = strncmp(k, kind, kl);

		if (c == 0)
			c = (unsigned char)k[kl] - 1; /* the separator */
		if (c == 0)
			c = strcmp(k + kl + 1, name);
		if (c == 0) {
			*found = 1;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Records that this node holds kind/name (present) or no longer does. */
static void held_set(struct fleet *f, const char *kind, const char *name, int present)
{
	int found;
	size_t at = held_find(f, kind, name, &found);
	size_t kl = strlen(kind), nl = strlen(name);
	char *key;

	if (!present) {
		if (found) {
			free(f->held[at]);
			memmove(f->held + at, f->held + at + 1,
			        (f->nheld - at - 1) * sizeof(char *));
			f->nheld--;
		}
		return;
	}
	if (found || f->nheld == HELD_MAX)
		return; /* past the cap a resync may miss a delete: logged there */
	if (f->nheld == f->capheld) {
		size_t cap = f->capheld ? f->capheld * 2 : 64;
		char **v = realloc(f->held, cap * sizeof(*v));

		if (!v)
			return;
		f->held = v;
		f->capheld = cap;
	}
	key = malloc(kl + nl + 2);
	if (!key)
		return;
	memcpy(key, kind, kl);
	key[kl] = '\x01';
	memcpy(key + kl + 1, name, nl + 1);
	memmove(f->held + at + 1, f->held + at, (f->nheld - at) * sizeof(char *));
	f->held[at] = key;
	f->nheld++;
}

static void held_free(struct fleet *f)
{
	for (size_t i = 0; i < f->nheld; i++)
		free(f->held[i]);
	free(f->held);
	f->held = NULL;
	f->nheld = f->capheld = 0;
}

/* --- connections ------------------------------------------------------------------- */

static void conn_msg(PGconn *pg, char *buf, size_t len)
{
	size_t i;

	snprintf(buf, len, "%s", pg ? PQerrorMessage(pg) : "out of memory");
	for (i = 0; buf[i]; i++)
		if (buf[i] == '\n' || buf[i] == '\r')
			buf[i] = ' ';
}

static void on_listen_io(struct loop *loop, struct loop_io *io, uint32_t events);

static void conn_close(struct fleet *f, struct conn *c)
{
	if (c->registered) {
		loop_io_del(f->loop, &c->io);
		c->registered = 0;
	}
	if (c->pg)
		PQfinish(c->pg);
	c->pg = NULL;
	c->sending = 0;
}

/* The connection died: close it and wait before the next attempt. */
static void conn_lost(struct fleet *f, struct conn *c)
{
	char m[256];

	if (!c->pg)
		return;
	conn_msg(c->pg, m, sizeof(m));
	log_warn("fleet: lost a database connection", "connection", c->what, "error", m, NULL);
	conn_close(f, c);
	c->next_try = clock_mono_ms() + (uint64_t)c->backoff_ms;
}

/* Runs sql (no parameters); 0 or -EIO (the connection is dropped when it is bad). */
static int exec_cmd(struct fleet *f, struct conn *c, const char *sql)
{
	PGresult *res = PQexec(c->pg, sql);
	ExecStatusType st = PQresultStatus(res);
	int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -EIO;

	if (rc) {
		char m[256];

		conn_msg(c->pg, m, sizeof(m));
		log_warn("fleet: query failed", "connection", c->what, "error", m, NULL);
	}
	PQclear(res);
	if (rc && PQstatus(c->pg) != CONNECTION_OK)
		conn_lost(f, c);
	return rc;
}

/*
 * Runs a query with text params and returns its result (tuples or command),
 * or NULL (logged; the connection dropped when it is bad).
 */
static PGresult *query(struct fleet *f, struct conn *c, const char *sql, int n,
                       const char *const *params)
{
	PGresult *res;
	ExecStatusType st;

	if (!c->pg)
		return NULL;
	res = PQexecParams(c->pg, sql, n, NULL, params, NULL, NULL, 0);
	st = PQresultStatus(res);
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
		return res;
	{
		char m[256];

		conn_msg(c->pg, m, sizeof(m));
		log_warn("fleet: query failed", "connection", c->what, "error", m, NULL);
	}
	PQclear(res);
	if (PQstatus(c->pg) != CONNECTION_OK)
		conn_lost(f, c);
	return NULL;
}

/* Waits for the result of an asynchronous NOTIFY so the connection is free. */
static void conn_settle(struct fleet *f, struct conn *c)
{
	PGresult *res;

	if (!c->pg || !c->sending)
		return;
	while ((res = PQgetResult(c->pg)) != NULL)
		PQclear(res);
	c->sending = 0;
	if (PQstatus(c->pg) != CONNECTION_OK)
		conn_lost(f, c);
}

/*
 * Server-side settings that bound how long a dead or partitioned peer can
 * hold the lock: keepalives, tcp_user_timeout and (PG 14+)
 * client_connection_check_interval, all about the lease; statement_timeout
 * bounds every query of ours.
 */
static int conn_setup(struct fleet *f, struct conn *c)
{
	char sql[512];
	int64_t l = f->lease_ms;

	snprintf(sql, sizeof(sql),
	         "SET statement_timeout = %" PRId64 "; SET lock_timeout = %" PRId64 ";"
	         " SET tcp_keepalives_idle = 1; SET tcp_keepalives_interval = 1;"
	         " SET tcp_keepalives_count = 2; SET tcp_user_timeout = %" PRId64 ";"
	         " SET synchronous_commit = on",
	         l, l, l);
	if (exec_cmd(f, c, sql))
		return -EIO;
	if (PQserverVersion(c->pg) >= 140000) {
		snprintf(sql, sizeof(sql), "SET client_connection_check_interval = %" PRId64,
		         l / 3 > 0 ? l / 3 : 1);
		if (exec_cmd(f, c, sql))
			return -EIO;
	}
	return 0;
}

/* Connects c when it is down and its backoff allows; 0 when connected. */
static int conn_ensure(struct fleet *f, struct conn *c, char *err, size_t errlen)
{
	char m[256];

	if (c->pg && PQstatus(c->pg) == CONNECTION_OK)
		return 0;
	if (c->pg)
		conn_lost(f, c);
	if (clock_mono_ms() < c->next_try)
		return ERR_UNAVAILABLE;
	c->pg = (PGconn *)store_pg_connect(f->url, m, sizeof(m));
	if (!c->pg) {
		if (err)
			snprintf(err, errlen, "fleet: %s connection: %s", c->what, m);
		c->next_try = clock_mono_ms() + (uint64_t)c->backoff_ms;
		c->backoff_ms =
		    c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
		return ERR_UNAVAILABLE;
	}
	if (conn_setup(f, c)) {
		if (err)
			snprintf(err, errlen, "fleet: %s connection: session setup failed",
			         c->what);
		conn_close(f, c);
		c->next_try = clock_mono_ms() + (uint64_t)c->backoff_ms;
		return ERR_UNAVAILABLE;
	}
	c->backoff_ms = BACKOFF_MIN_MS;
	return 0;
}

/* The listen connection: connected, LISTENing and registered in the loop. */
static int listen_ensure(struct fleet *f, char *err, size_t errlen)
{
	int fresh = !f->ls.pg || PQstatus(f->ls.pg) != CONNECTION_OK;
	int rc = conn_ensure(f, &f->ls, err, errlen);

	if (rc)
		return rc;
	if (!fresh && f->ls.registered)
		return 0;
	if (exec_cmd(f, &f->ls, "LISTEN " CHANNEL))
		return ERR_UNAVAILABLE;
	if (PQsetnonblocking(f->ls.pg, 0) != 0 ||
	    loop_io_add(f->loop, &f->ls.io, PQsocket(f->ls.pg), on_listen_io, f) != 0) {
		conn_close(f, &f->ls);
		return ERR_UNAVAILABLE;
	}
	f->ls.registered = 1;
	f->feed_wanted = 1; /* whatever happened while we were away */
	return 0;
}

/* --- the changes feed -------------------------------------------------------------- */

/*
 * Applies one batch of the feed; *n rows read.  0, ERR_UNAVAILABLE, or 1
 * when the feed no longer reaches back to this node's revision (pruned
 * past it: resync from the documents).  The prune watermark and the rows
 * are read in one statement, so in one snapshot.
 */
static int feed_batch(struct fleet *f, int *n)
{
	char since[24];
	const char *p[1] = {since};
	PGresult *res;
	int rows;

	snprintf(since, sizeof(since), "%" PRId64, f->applied);
	res = query(f, &f->ls,
	            "SELECT w.pruned_upto, c.rev, c.kind, c.name, c.body, c.doc_rev"
	            " FROM fleet_feed w LEFT JOIN LATERAL ("
	            "  SELECT c.rev, c.kind, c.name, d.body, d.rev AS doc_rev FROM changes c"
	            "  LEFT JOIN docs d ON d.kind = c.kind AND d.name = c.name"
	            "  WHERE c.rev > $1::bigint ORDER BY c.rev LIMIT " XSTR(
	                FEED_BATCH) ") c ON true"
	                            " WHERE w.id = 1 ORDER BY c.rev",
	            1, p);
	if (!res)
		return ERR_UNAVAILABLE;
	rows = PQntuples(res);
	*n = 0;
	if (rows >= 1 && strtoll(PQgetvalue(res, 0, 0), NULL, 10) > f->applied) {
		PQclear(res);
		return 1;
	}
	for (int i = 0; i < rows; i++) {
		int64_t rev;
		int deleted = PQgetisnull(res, i, 5);
		int64_t doc_rev;

		if (PQgetisnull(res, i, 1))
			continue; /* the watermark's row alone: nothing new */
		(*n)++;
		rev = strtoll(PQgetvalue(res, i, 1), NULL, 10);
		doc_rev = deleted ? 0 : strtoll(PQgetvalue(res, i, 5), NULL, 10);
		f->applied = rev;
		if (rev > f->latest)
			f->latest = rev;
		if (local_take(f, rev))
			continue; /* committed here: published already */
		if (!deleted && doc_rev != rev)
			continue; /* a later change carries this document */
		state_apply(f->state,
		            &(struct state_update){.kind = PQgetvalue(res, i, 2),
		                                   .name = PQgetvalue(res, i, 3),
		                                   .json = deleted ? NULL : PQgetvalue(res, i, 4),
		                                   .rev = rev,
		                                   .origin = STATE_REMOTE});
		f->changes_applied++;
	}
	PQclear(res);
	return 0;
}

/*
 * The feed was pruned past this node's revision (it was away longer than
 * the feed keeps): applies every document of every kind newer than what it
 * has, and deletes those it holds that the store no longer has; then the
 * feed continues from the store's revision read in the same snapshot.
 * 0 or ERR_UNAVAILABLE (nothing changed then).
 */
static int resync(struct fleet *f, int everything)
{
	PGresult *res;
	char *seen = NULL, **gone = NULL, applied[24], rev[24];
	size_t ngone = 0;
	int64_t top, from = everything ? 0 : f->applied;
	int rows, rc = 0;

	res =
	    query(f, &f->ls,
	          "SELECT (SELECT value FROM revision WHERE id = 1), d.kind, d.name, d.body, d.rev"
	          " FROM (SELECT 1) one LEFT JOIN docs d ON d.kind IN ('traffic', 'mirror',"
	          " 'faults', 'flag', 'flagconfig', 'rollout')",
	          0, NULL);
	if (!res)
		return ERR_UNAVAILABLE;
	rows = PQntuples(res);
	top = rows ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : f->applied;
	snprintf(applied, sizeof(applied), "%" PRId64, from);
	snprintf(rev, sizeof(rev), "%" PRId64, top);
	log_warn(everything ? "fleet: applying every document again"
	                    : "fleet: the changes feed no longer reaches back to this node's "
	                      "revision; resyncing from the documents",
	         "applied", applied, "revision", rev, NULL);
	if (f->nheld == HELD_MAX)
		log_warn("fleet: too many documents to remember; a resync may miss deletes", NULL);
	/* first the held keys the store no longer has (publishing changes held) */
	seen = calloc(f->nheld ? f->nheld : 1, 1);
	if (!seen) {
		PQclear(res);
		return -ENOMEM;
	}
	for (int i = 0; i < rows; i++) {
		int found;
		size_t at;

		if (PQgetisnull(res, i, 1))
			continue;
		at = held_find(f, PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), &found);
		if (found)
			seen[at] = 1;
	}
	for (size_t i = 0; i < f->nheld; i++)
		ngone += !seen[i];
	if (ngone) {
		gone = calloc(ngone, sizeof(*gone));
		if (!gone) {
			rc = -ENOMEM;
			goto out;
		}
		for (size_t i = 0, k = 0; i < f->nheld; i++)
			if (!seen[i] && !(gone[k++] = strdup(f->held[i]))) {
				rc = -ENOMEM;
				goto out;
			}
	}
	/* every document newer than this node's revision (or not held) */
	for (int i = 0; i < rows; i++) {
		const char *kind = PQgetvalue(res, i, 1), *name = PQgetvalue(res, i, 2);
		int64_t drev;
		int found;

		if (PQgetisnull(res, i, 1))
			continue;
		drev = strtoll(PQgetvalue(res, i, 4), NULL, 10);
		held_find(f, kind, name, &found);
		if (found && drev <= from)
			continue; /* this node applied this very write already */
		state_apply(f->state, &(struct state_update){.kind = kind,
		                                             .name = name,
		                                             .json = PQgetvalue(res, i, 3),
		                                             .rev = drev,
		                                             .origin = STATE_REMOTE});
		f->changes_applied++;
	}
	/* held but gone from the store: deleted while this node was away */
	for (size_t k = 0; k < ngone; k++) {
		char *sep = strchr(gone[k], '\x01');

		if (!sep)
			continue;
		*sep = '\0';
		state_apply(f->state, &(struct state_update){.kind = gone[k],
		                                             .name = sep + 1,
		                                             .json = NULL,
		                                             .rev = top,
		                                             .origin = STATE_REMOTE});
		held_set(f, gone[k], sep + 1, 0); /* in case no subscriber took it */
		f->changes_applied++;
	}
	if (top > f->applied)
		f->applied = top;
	if (top > f->latest)
		f->latest = top;
	local_take(f, f->applied);
	f->resyncs++;
out:
	for (size_t k = 0; gone && k < ngone; k++)
		free(gone[k]);
	free(gone);
	free(seen);
	PQclear(res);
	return rc;
}

static void take_notifies(struct fleet *f);

int fleet_catch_up(struct fleet *f)
{
	int rc = 0;

	if (listen_ensure(f, NULL, 0))
		return ERR_UNAVAILABLE;
	conn_settle(f, &f->ls);
	/* a notification read by the feed's own queries asks for another pass */
	for (int pass = 0; pass < 4 && rc == 0; pass++) {
		int n = FEED_BATCH;

		f->feed_wanted = 0;
		while (n == FEED_BATCH && rc == 0) {
			rc = feed_batch(f, &n);
			if (rc == 1) { /* pruned past this node: from the documents, then on */
				rc = resync(f, 0);
				n = FEED_BATCH;
			}
		}
		take_notifies(f);
		if (!f->feed_wanted)
			break;
	}
	if (rc)
		f->feed_wanted = 1;
	return rc;
}

/* Handles the notifications libpq has read (by a query's reads too). */
static void take_notifies(struct fleet *f)
{
	PGnotify *nt;

	while (f->ls.pg && (nt = PQnotifies(f->ls.pg)) != NULL) {
		int64_t rev, term;

		if (nt->be_pid != PQbackendPID(f->ls.pg) &&
		    fleet_parse_notify(nt->extra, &rev, &term) == 0) {
			f->notifications++;
			if (rev > f->latest)
				f->latest = rev;
			if (term > f->seen_term)
				f->seen_term = term;
			if (rev > f->applied)
				f->feed_wanted = 1;
		}
		PQfreemem(nt);
	}
}

/* Reads what arrived on the listen connection (edge-triggered: until the socket is empty). */
static void listen_drain(struct fleet *f)
{
	char b;

	for (;;) {
		if (!PQconsumeInput(f->ls.pg)) {
			conn_lost(f, &f->ls);
			f->feed_wanted = 1;
			return;
		}
		if (f->ls.sending && !PQisBusy(f->ls.pg)) {
			PGresult *res;

			while (!PQisBusy(f->ls.pg) && (res = PQgetResult(f->ls.pg)) != NULL)
				PQclear(res);
			if (!PQisBusy(f->ls.pg))
				f->ls.sending = 0;
		}
		take_notifies(f);
		if (recv(PQsocket(f->ls.pg), &b, 1, MSG_PEEK | MSG_DONTWAIT) <= 0)
			break;
	}
}

static void on_listen_io(struct loop *loop, struct loop_io *io, uint32_t events)
{
	struct fleet *f = io->data;

	(void)events;
	if (!f->ls.pg)
		return;
	listen_drain(f);
	if (f->feed_wanted && f->ls.pg && !f->ls.sending)
		fleet_catch_up(f);
	if (!f->ls.pg) /* lost: reconnect and catch up soon, not at the slow poll */
		loop_timer_start(loop, &f->poll_timer, (uint64_t)f->ls.backoff_ms);
}

/* After the loop turn of a local commit: one NOTIFY for everything it committed. */
static void notify_send(struct loop *loop, struct loop_timer *t)
{
	struct fleet *f = t->data;
	char payload[64];
	const char *p[1] = {payload};

	(void)loop;
	if (!f->notify_rev || listen_ensure(f, NULL, 0))
		return; /* the others' slow poll finds the change */
	conn_settle(f, &f->ls);
	if (!f->ls.pg)
		return;
	snprintf(payload, sizeof(payload), "%" PRId64 ",%" PRId64, f->notify_rev,
	         f->leader ? f->term : f->seen_term);
	if (PQsendQueryParams(f->ls.pg, "SELECT pg_notify('" CHANNEL "', $1)", 1, NULL, p, NULL,
	                      NULL, 0) == 1) {
		f->ls.sending = 1;
		PQflush(f->ls.pg);
	}
	f->notify_rev = 0;
}

/* Subscriber of every document kind: a local commit is remembered and announced. */
static void on_local_change(void *arg, const struct state_update *u)
{
	struct fleet *f = arg;

	held_set(f, u->kind, u->name, u->json != NULL);
	if (u->origin != STATE_LOCAL)
		return;
	local_add(f, u->rev);
	if (u->rev > f->latest)
		f->latest = u->rev;
	if (u->rev > f->notify_rev)
		f->notify_rev = u->rev;
	if (!loop_timer_armed(&f->notify_timer))
		loop_timer_start(f->loop, &f->notify_timer, 0);
}

static void on_poll(struct loop *loop, struct loop_timer *t)
{
	struct fleet *f = t->data;

	if (fleet_catch_up(f) == 0 && f->ls.pg) {
		PGresult *res =
		    query(f, &f->ls, "SELECT value FROM revision WHERE id = 1", 0, NULL);

		if (res && PQntuples(res) == 1) {
			int64_t v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);

			if (v > f->latest)
				f->latest = v;
		}
		PQclear(res);
	}
	loop_timer_start(loop, t, f->ls.pg ? FLEET_POLL_MS : (uint64_t)f->ls.backoff_ms);
}

/* --- leadership -------------------------------------------------------------------- */

static void step_down(struct fleet *f, const char *why, int store_lost)
{
	char t[24];

	if (!f->leader)
		return;
	f->leader = 0;
	f->lost_term = store_lost ? f->term : 0;
	f->leader_changes++;
	snprintf(t, sizeof(t), "%" PRId64, f->term);
	log_warn("fleet: no longer the leader", "term", t, "reason", why, NULL);
	/* the session may still hold the lock: close it so another node can lead */
	conn_close(f, &f->lk);
	f->lk.next_try = clock_mono_ms() + BACKOFF_MIN_MS;
	if (f->hooks.follower)
		f->hooks.follower(f->hooks.arg, f->term);
}

/* Takes the lock if it is free; on success bumps the term and leads. */
static int try_acquire(struct fleet *f)
{
	char lease[24];
	const char *p[2] = {f->id, lease};
	PGresult *res;
	uint64_t sent;
	int got;

	res = query(f, &f->lk, "SELECT pg_try_advisory_lock(" LOCK_KEY ")", 0, NULL);
	if (!res)
		return ERR_UNAVAILABLE;
	got = PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
	PQclear(res);
	if (!got)
		return 0;
	snprintf(lease, sizeof(lease), "%" PRId64, f->lease_ms);
	sent = clock_mono_ms();
	res = query(f, &f->lk,
	            "UPDATE fleet_lease SET term = term + 1, holder = $1,"
	            " holder_pid = pg_backend_pid(),"
	            " expires_at = now() + $2::bigint * interval '1 millisecond'"
	            " WHERE id = 1 RETURNING term",
	            2, p);
	if (!res || PQntuples(res) != 1) {
		PQclear(res);
		/* holding the lock without a term is useless: let another node try */
		conn_close(f, &f->lk);
		return ERR_UNAVAILABLE;
	}
	f->term = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	f->seen_term = f->term;
	f->renewed_ms = sent;
	f->leader = 1;
	f->lost_term = 0; /* leading again: a pending rollback commits under the new term */
	f->leader_changes++;
	snprintf(f->holder, sizeof(f->holder), "%s", f->id);
	{
		char t[24];

		snprintf(t, sizeof(t), "%" PRId64, f->term);
		log_info("fleet: leading", "term", t, "node", f->id, NULL);
	}
	/* the engine reloads from documents: make them current first */
	fleet_catch_up(f);
	if (f->hooks.leader)
		f->hooks.leader(f->hooks.arg, f->term);
	/* announce the new term (the revision is what this node has applied) */
	f->notify_rev = f->applied > 0 ? f->applied : 1;
	if (!loop_timer_armed(&f->notify_timer))
		loop_timer_start(f->loop, &f->notify_timer, 0);
	return 1;
}

static void renew(struct fleet *f)
{
	char lease[24], term[24];
	const char *p[2] = {lease, term};
	uint64_t sent = clock_mono_ms();
	PGresult *res;

	snprintf(lease, sizeof(lease), "%" PRId64, f->lease_ms);
	snprintf(term, sizeof(term), "%" PRId64, f->term);
	res = query(
	    f, &f->lk,
	    "UPDATE fleet_lease SET expires_at = now() + $1::bigint * interval '1 millisecond'"
	    " WHERE id = 1 AND term = $2::bigint RETURNING term",
	    2, p);
	if (!res) {
		if (!f->lk.pg)
			step_down(f, "lost the lock's connection", 1);
		return;
	}
	if (PQntuples(res) != 1) {
		PQclear(res);
		step_down(f, "the term moved on", 0);
		return;
	}
	PQclear(res);
	f->renewed_ms = sent;
}

/*
 * Not leading: reads the lease; when it lapsed while its holder's session
 * still holds the lock (a paused or partitioned leader), ends that session
 * so the lock is free at the next try.  Returns 1 when it ended one.
 */
static int check_holder(struct fleet *f)
{
	PGresult *res;
	int ended = 0;

	res = query(f, &f->lk,
	            "SELECT l.term, l.holder, l.expires_at < now(),"
	            " (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = 0"
	            "  AND objid = " LOCK_KEY " AND objsubid = 1 AND granted LIMIT 1)"
	            " FROM fleet_lease l WHERE l.id = 1",
	            0, NULL);
	if (!res)
		return 0;
	if (PQntuples(res) == 1) {
		int64_t t = strtoll(PQgetvalue(res, 0, 0), NULL, 10);

		if (t > f->seen_term)
			f->seen_term = t;
		snprintf(f->holder, sizeof(f->holder), "%s", PQgetvalue(res, 0, 1));
		if (PQgetvalue(res, 0, 2)[0] == 't' && !PQgetisnull(res, 0, 3)) {
			const char *p[1] = {PQgetvalue(res, 0, 3)};
			PGresult *r2;

			log_warn(
			    "fleet: the leader's lease lapsed while it holds the lock; ending its "
			    "session",
			    "holder", f->holder, "pid", p[0], NULL);
			r2 = query(f, &f->lk, "SELECT pg_terminate_backend($1::integer)", 1, p);
			PQclear(r2);
			/*
			 * Its store connection may sit in an open transaction holding the
			 * lease row FOR SHARE (paused between the fence and COMMIT): the
			 * term bump would wait for it.  End canaryd transactions idle for
			 * longer than the lease.
			 */
			{
				char lease[24];
				const char *q[1] = {lease};

				snprintf(lease, sizeof(lease), "%" PRId64, f->lease_ms);
				r2 = query(
				    f, &f->lk,
				    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
				    " WHERE datname = current_database()"
				    " AND pid <> pg_backend_pid() AND application_name = 'canaryd'"
				    " AND state LIKE 'idle in transaction%' AND state_change <"
				    " now() - $1::bigint * interval '1 millisecond'",
				    1, q);
				PQclear(r2);
			}
			ended = 1;
		}
	}
	PQclear(res);
	return ended;
}

static void on_lease(struct loop *loop, struct loop_timer *t)
{
	struct fleet *f = t->data;
	uint64_t next = FLEET_TRY_MS;

	if (f->leader && fleet_lease_lapsed(f->renewed_ms, clock_mono_ms(), f->lease_ms))
		step_down(f, "the lease lapsed before it could be renewed", 1);
	if (conn_ensure(f, &f->lk, NULL, 0) == 0) {
		if (f->leader) {
			renew(f);
			next = (uint64_t)f->lease_ms / 3;
		} else if (try_acquire(f) == 1) {
			next = (uint64_t)f->lease_ms / 3;
		} else if (f->lk.pg && f->lost_term) {
			/* another session holds the lock: the store is back and it leads */
			if (resync(f, 1) == 0) {
				log_warn(
				    "fleet: the store is back and another node leads; what this "
				    "node applied locally is undone",
				    NULL);
				f->lost_term = 0;
			}
		} else if (f->lk.pg && check_holder(f)) {
			next = 50; /* its session is ending: try again soon */
		}
	}
	if (f->leader && next > (uint64_t)f->lease_ms / 3)
		next = (uint64_t)f->lease_ms / 3;
	loop_timer_start(loop, t, next);
}

/* --- node registry ----------------------------------------------------------------- */

static void on_node(struct loop *loop, struct loop_timer *t)
{
	struct fleet *f = t->data;
	char term[24], applied[24];
	const char *p[5] = {f->id, f->address, NULL, term, applied};

	if (f->lk.pg) {
		PGresult *res;

		p[2] = fleet_is_leader(f) ? "leader" : "follower";
		snprintf(term, sizeof(term), "%" PRId64, fleet_term(f));
		snprintf(applied, sizeof(applied), "%" PRId64, fleet_applied_revision(f));
		res = query(
		    f, &f->lk,
		    "INSERT INTO fleet_nodes (id, address, role, term, applied_rev, last_seen)"
		    " VALUES ($1, $2, $3, $4::bigint, $5::bigint, now())"
		    " ON CONFLICT (id) DO UPDATE SET address = excluded.address,"
		    " role = excluded.role, term = excluded.term,"
		    " applied_rev = excluded.applied_rev, last_seen = excluded.last_seen",
		    5, p);
		PQclear(res);
		if (f->leader && f->lk.pg && clock_mono_ms() - f->last_prune_ms >= PRUNE_MS) {
			/* a node whose revision is pruned resyncs from the documents */
			PQclear(
			    query(f, &f->lk,
			          "WITH gone AS (DELETE FROM changes WHERE at < now() - interval"
			          " '1 hour' RETURNING rev) UPDATE fleet_feed SET pruned_upto ="
			          " greatest(pruned_upto, (SELECT max(rev) FROM gone))"
			          " WHERE id = 1 AND EXISTS (SELECT 1 FROM gone)",
			          0, NULL));
			f->last_prune_ms = clock_mono_ms();
		}
	}
	loop_timer_start(loop, t, FLEET_NODE_MS);
}

/* --- fence ------------------------------------------------------------------------- */

static int fence(void *arg, struct store *st)
{
	struct fleet *f = arg;
	int rc = store_fence_term(st, f->leader ? f->term : -1);

	return rc ? state_err_of_store(rc) : 0;
}

/* --- lifecycle --------------------------------------------------------------------- */

static int create_schema(struct fleet *f, char *err, size_t errlen)
{
	PGresult *res;
	int ok;

	if (exec_cmd(f, &f->lk, "BEGIN"))
		goto out_fail;
	res = PQexec(f->lk.pg, schema_sql);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
	PQclear(res);
	if (!ok) {
		char m[256];

		conn_msg(f->lk.pg, m, sizeof(m));
		snprintf(err, errlen, "fleet: cannot create the fleet schema: %s", m);
		exec_cmd(f, &f->lk, "ROLLBACK");
		return -EIO;
	}
	if (exec_cmd(f, &f->lk, "COMMIT"))
		goto out_fail;
	return 0;
out_fail:
	snprintf(err, errlen, "fleet: cannot create the fleet schema");
	return -EIO;
}

/* The documents the modules loaded at start (the feed keeps the set current after). */
static int held_load(struct fleet *f, char *err, size_t errlen)
{
	PGresult *res = query(f, &f->lk,
	                      "SELECT kind, name FROM docs WHERE kind IN ('traffic', 'mirror',"
	                      " 'faults', 'flag', 'flagconfig', 'rollout')",
	                      0, NULL);

	if (!res) {
		snprintf(err, errlen, "fleet: cannot read the documents");
		return ERR_UNAVAILABLE;
	}
	for (int i = 0; i < PQntuples(res); i++)
		held_set(f, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), 1);
	PQclear(res);
	return 0;
}

/* Was this node the last holder?  Then its old session is on its way out: wait for it. */
static void first_acquire(struct fleet *f)
{
	uint64_t deadline = clock_mono_ms() + (uint64_t)f->lease_ms;
	int was_me = 0;
	PGresult *res =
	    query(f, &f->lk, "SELECT holder, term FROM fleet_lease WHERE id = 1", 0, NULL);

	if (res && PQntuples(res) == 1) {
		was_me = strcmp(PQgetvalue(res, 0, 0), f->id) == 0;
		f->seen_term = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
		snprintf(f->holder, sizeof(f->holder), "%s", PQgetvalue(res, 0, 0));
	}
	PQclear(res);
	while (f->lk.pg && try_acquire(f) == 0 && was_me && clock_mono_ms() < deadline) {
		struct timespec ts = {0, 50 * 1000000L};

		nanosleep(&ts, NULL);
	}
}

struct fleet *fleet_new(struct loop *loop, struct state *state, const struct fleet_config *cfg,
                        const struct fleet_hooks *hooks, char *err, size_t errlen)
{
	struct fleet *f;

	if (!cfg || !cfg->url || !cfg->node_id || !*cfg->node_id ||
	    strlen(cfg->node_id) > FLEET_ID_MAX) {
		snprintf(err, errlen, "fleet: a node id of 1 to %d bytes is required",
		         FLEET_ID_MAX);
		return NULL;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		snprintf(err, errlen, "fleet: out of memory");
		return NULL;
	}
	f->loop = loop;
	f->state = state;
	if (hooks)
		f->hooks = *hooks;
	f->url = strdup(cfg->url);
	snprintf(f->id, sizeof(f->id), "%s", cfg->node_id);
	snprintf(f->address, sizeof(f->address), "%s", cfg->address ? cfg->address : "");
	f->lease_ms = cfg->lease_ms > 0 ? cfg->lease_ms : FLEET_LEASE_DEFAULT_MS;
	if (f->lease_ms < 300)
		f->lease_ms = 300;
	f->lk.what = "lock";
	f->ls.what = "listen";
	f->lk.backoff_ms = f->ls.backoff_ms = BACKOFF_MIN_MS;
	loop_timer_init(&f->lease_timer, on_lease, f);
	loop_timer_init(&f->poll_timer, on_poll, f);
	loop_timer_init(&f->node_timer, on_node, f);
	loop_timer_init(&f->notify_timer, notify_send, f);
	if (!f->url) {
		snprintf(err, errlen, "fleet: out of memory");
		goto out_free;
	}
	/* everything up to here is already loaded by the modules: the feed starts here */
	f->applied = cfg->start_rev > 0 ? cfg->start_rev : 0;
	f->latest = f->applied;
	if (conn_ensure(f, &f->lk, err, errlen) || create_schema(f, err, errlen) ||
	    listen_ensure(f, err, errlen))
		goto out_free;
	for (size_t i = 0; i < sizeof(doc_kinds) / sizeof(doc_kinds[0]); i++)
		if (state_subscribe(state, doc_kinds[i], on_local_change, f) != 0) {
			snprintf(err, errlen, "fleet: out of memory");
			goto out_free;
		}
	f->subscribed = 1;
	if (held_load(f, err, errlen))
		goto out_free;
	state_set_fence(state, fence, f);
	first_acquire(f);
	loop_timer_start(loop, &f->lease_timer,
	                 f->leader ? (uint64_t)f->lease_ms / 3 : (uint64_t)FLEET_TRY_MS);
	loop_timer_start(loop, &f->poll_timer, FLEET_POLL_MS);
	loop_timer_start(loop, &f->node_timer, 0);
	return f;
out_free:
	fleet_free(f);
	return NULL;
}

void fleet_free(struct fleet *f)
{
	if (!f)
		return;
	loop_timer_stop(f->loop, &f->lease_timer);
	loop_timer_stop(f->loop, &f->poll_timer);
	loop_timer_stop(f->loop, &f->node_timer);
	if (f->subscribed) {
		for (size_t i = 0; i < sizeof(doc_kinds) / sizeof(doc_kinds[0]); i++)
			state_unsubscribe(f->state, doc_kinds[i], on_local_change, f);
		state_set_fence(f->state, NULL, NULL);
	}
	if (loop_timer_armed(&f->notify_timer)) {
		loop_timer_stop(f->loop, &f->notify_timer);
		notify_send(f->loop, &f->notify_timer); /* the last commit's announcement */
	}
	conn_settle(f, &f->ls);
	conn_close(f, &f->ls);
	conn_close(f, &f->lk); /* releases the lock: another node leads at its next try */
	free(f->local);
	held_free(f);
	free(f->url);
	free(f);
}

/* --- views ------------------------------------------------------------------------- */

int fleet_rollback_only(struct fleet *f)
{
	return !fleet_is_leader(f) && f->lost_term != 0;
}

int fleet_is_leader(struct fleet *f)
{
	if (f->leader && fleet_lease_lapsed(f->renewed_ms, clock_mono_ms(), f->lease_ms))
		step_down(f, "the lease lapsed before it could be renewed", 1);
	return f->leader;
}

int64_t fleet_term(const struct fleet *f)
{
	return f->leader ? f->term : f->seen_term;
}

int64_t fleet_applied_revision(const struct fleet *f)
{
	return f->applied > state_revision(f->state) ? f->applied : state_revision(f->state);
}

static int64_t lag(const struct fleet *f)
{
	int64_t a = fleet_applied_revision(f);

	return f->latest > a ? f->latest - a : 0;
}

json_t *fleet_nodes_json(struct fleet *f, int *err)
{
	json_t *o, *nodes;
	PGresult *res;

	if (conn_ensure(f, &f->lk, NULL, 0)) {
		*err = ERR_UNAVAILABLE;
		return NULL;
	}
	res = query(f, &f->lk,
	            "SELECT id, address, role, term, applied_rev,"
	            " to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
	            " (extract(epoch FROM now() - last_seen) * 1000)::bigint"
	            " FROM fleet_nodes ORDER BY id",
	            0, NULL);
	if (!res) {
		*err = ERR_UNAVAILABLE;
		return NULL;
	}
	nodes = json_array();
	o = json_pack("{s:s, s:b, s:I, s:s, s:o}", "self", f->id, "leader", fleet_is_leader(f),
	              "term", (json_int_t)fleet_term(f), "holder", f->holder, "nodes", nodes);
	if (!o) {
		PQclear(res);
		*err = -ENOMEM;
		return NULL;
	}
	for (int i = 0; i < PQntuples(res); i++) {
		int64_t age = strtoll(PQgetvalue(res, i, 6), NULL, 10);

		json_array_append_new(
		    nodes, json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:I, s:b}", "id",
		                     PQgetvalue(res, i, 0), "address", PQgetvalue(res, i, 1),
		                     "role", PQgetvalue(res, i, 2), "term",
		                     (json_int_t)strtoll(PQgetvalue(res, i, 3), NULL, 10),
		                     "applied_revision",
		                     (json_int_t)strtoll(PQgetvalue(res, i, 4), NULL, 10),
		                     "last_seen", PQgetvalue(res, i, 5), "age_ms", (json_int_t)age,
		                     "alive", age < 3 * f->lease_ms));
	}
	PQclear(res);
	return o;
}

json_t *fleet_health_json(struct fleet *f)
{
	int up = f->lk.pg && f->ls.pg;

	return json_pack(
	    "{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:b, s:I}", "status", up ? "ok" : "degraded",
	    "node", f->id, "role", fleet_is_leader(f) ? "leader" : "follower", "term",
	    (json_int_t)fleet_term(f), "applied_revision", (json_int_t)fleet_applied_revision(f),
	    "lag_revisions", (json_int_t)lag(f), "holder", f->holder, "listening", f->ls.registered,
	    "resyncs", (json_int_t)f->resyncs);
}

int fleet_write_prometheus(const struct fleet *f, struct buf *out)
{
	int rc = buf_printf(
	    out,
	    "# HELP canaryd_fleet_leader 1 while this node leads the fleet.\n"
	    "# TYPE canaryd_fleet_leader gauge\ncanaryd_fleet_leader %d\n"
	    "# HELP canaryd_fleet_term The leader's term (this node's while it leads).\n"
	    "# TYPE canaryd_fleet_term gauge\ncanaryd_fleet_term %" PRId64 "\n"
	    "# HELP canaryd_applied_revision The last store revision this node applied.\n"
	    "# TYPE canaryd_applied_revision gauge\ncanaryd_applied_revision %" PRId64 "\n"
	    "# HELP canaryd_fleet_lag_revisions Revisions known to exist and not yet applied "
	    "here.\n"
	    "# TYPE canaryd_fleet_lag_revisions gauge\ncanaryd_fleet_lag_revisions %" PRId64 "\n"
	    "# HELP canaryd_fleet_changes_applied_total Changes of other nodes applied here.\n"
	    "# TYPE canaryd_fleet_changes_applied_total counter\n"
	    "canaryd_fleet_changes_applied_total %" PRIu64 "\n"
	    "# HELP canaryd_fleet_leader_changes_total Times this node started or stopped "
	    "leading.\n"
	    "# TYPE canaryd_fleet_leader_changes_total counter\n"
	    "canaryd_fleet_leader_changes_total %" PRIu64 "\n",
	    f->leader && !fleet_lease_lapsed(f->renewed_ms, clock_mono_ms(), f->lease_ms),
	    fleet_term(f), fleet_applied_revision(f), lag(f), f->changes_applied,
	    f->leader_changes);

	return rc;
}
