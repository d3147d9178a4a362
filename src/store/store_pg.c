/*
 * store_pg.c - the PostgreSQL backend: one libpq connection per handle,
 * used from one thread (see store.h), synchronous_commit on, named prepared
 * statements re-prepared after every reconnect.
 *
 * Losing the server is a state, not a crash: the connection is dropped,
 * calls answer STORE_ERR_UNAVAILABLE at once, and a later call reconnects -
 * the first attempt right away, then at most one attempt per backoff period
 * (100 ms doubling to 5 s).  A reconnect is driven without blocking for more
 * than PG_CONNECT_SLICE_MS per call; keepalives and tcp_user_timeout make a
 * dead server show up within seconds on a connection that was idle.
 *
 * The URL (and the password) is never written into a message.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "core/loop.h"
#include "core/str.h"
#include "store/store_backend.h"
#include "store/store_pg.h"

#define PG_BACKOFF_MIN_MS     100
#define PG_BACKOFF_MAX_MS     5000
#define PG_CONNECT_SLICE_MS   250  /* longest a call waits on a reconnect */
#define PG_CONNECT_TIMEOUT_MS 5000 /* an attempt older than this has failed */
#define PG_EACH_BATCH         500  /* rows per round trip when streaming events */
#define PG_PASSWORD_MAX       1024
#define PG_MIGRATION_LOCK     "7305551701" /* pg_advisory_xact_lock key: migrations */

struct migration {
	int version;
	const char *name;
	const char *sql;
};

/*
 * Migrations: append only, the same versions as SQLite's.  Text columns are
 * COLLATE "C" so names sort by bytes as in SQLite; bodies and details are
 * `json`, which validates and keeps the text byte for byte.
 */
static const struct migration migrations[] = {
    {1, "events",
     "CREATE TABLE events ("
     "  id BIGSERIAL PRIMARY KEY,"
     "  ts_ms BIGINT NOT NULL,"
     "  actor TEXT COLLATE \"C\" NOT NULL,"
     "  kind TEXT COLLATE \"C\" NOT NULL,"
     "  subject TEXT COLLATE \"C\" NOT NULL DEFAULT '',"
     "  details JSON NOT NULL DEFAULT '{}'"
     ");"
     "CREATE INDEX events_subject ON events (subject, id);"
     "CREATE FUNCTION canaryd_events_append_only() RETURNS trigger LANGUAGE plpgsql AS"
     "  $$ BEGIN RAISE EXCEPTION 'events are append-only'; END $$;"
     "CREATE TRIGGER events_no_update BEFORE UPDATE ON events"
     "  FOR EACH ROW EXECUTE FUNCTION canaryd_events_append_only();"
     "CREATE TRIGGER events_no_delete BEFORE DELETE ON events"
     "  FOR EACH ROW EXECUTE FUNCTION canaryd_events_append_only();"
     "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events"
     "  FOR EACH STATEMENT EXECUTE FUNCTION canaryd_events_append_only();"},
    {2, "docs and revision",
     "CREATE TABLE docs ("
     "  kind TEXT COLLATE \"C\" NOT NULL,"
     "  name TEXT COLLATE \"C\" NOT NULL,"
     "  body JSON NOT NULL,"
     "  rev BIGINT NOT NULL,"
     "  updated_ms BIGINT NOT NULL,"
     "  PRIMARY KEY (kind, name)"
     ");"
     "CREATE TABLE revision ("
     "  id INTEGER PRIMARY KEY CHECK (id = 1),"
     "  value BIGINT NOT NULL"
     ");"
     "INSERT INTO revision (id, value) VALUES (1, 0);"
     "CREATE FUNCTION canaryd_revision_monotonic() RETURNS trigger LANGUAGE plpgsql AS"
     "  $$ BEGIN"
     "    IF TG_OP = 'DELETE' THEN RAISE EXCEPTION 'the revision row is permanent'; END IF;"
     "    IF NEW.value < OLD.value THEN RAISE EXCEPTION 'the revision never decreases'; END IF;"
     "    RETURN NEW;"
     "  END $$;"
     "CREATE TRIGGER revision_monotonic BEFORE UPDATE OR DELETE ON revision"
     "  FOR EACH ROW EXECUTE FUNCTION canaryd_revision_monotonic();"},
    {3, "event compaction and indexes",
     /* Retention may delete per-interval evidence; the audit log stays append-only. */
     "DROP TRIGGER events_no_delete ON events;"
     "CREATE TRIGGER events_no_delete BEFORE DELETE ON events"
     "  FOR EACH ROW WHEN (OLD.kind NOT IN ('rollout.interval', 'verdict'))"
     "  EXECUTE FUNCTION canaryd_events_append_only();"
     "CREATE INDEX events_subject_kind ON events (subject, kind, id);"
     "CREATE INDEX events_kind ON events (kind, id);"},
};

#define MIGRATION_COUNT ((int)(sizeof(migrations) / sizeof(migrations[0])))

_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == STORE_SCHEMA_VERSION,
               "STORE_SCHEMA_VERSION must equal the number of postgres migrations");

enum stmt_id {
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
	ST_EVQ, /* ST_EVQ + shape (EVQ_* bits): the event queries */
};

#define EVQ_SUBJECT 1
#define EVQ_KIND    2
#define EVQ_DESC    4
#define EVQ__COUNT  8
#define ST__COUNT   (ST_EVQ + EVQ__COUNT)

struct stmt_def {
	const char *sql;
	int nparams;
};

static const struct stmt_def stmt_defs[ST_EVQ] = {
    [ST_SCHEMA_VERSION] = {"SELECT COALESCE(MAX(version), 0) FROM schema_migrations", 0},
    /* The revision row lock orders appends with every other writer, so ids
     * become visible in id order and `since` paging never skips one. */
    [ST_EVENT_INSERT] = {"WITH l AS (SELECT value FROM revision WHERE id = 1 FOR UPDATE)"
                         " INSERT INTO events (ts_ms, actor, kind, subject, details)"
                         " SELECT $1::bigint, $2, $3, $4, $5::json FROM l RETURNING id",
                         5},
    [ST_EVENTS_DELETE] = {"DELETE FROM events WHERE kind = $1 AND subject = $2"
                          " AND id BETWEEN $3::bigint AND $4::bigint",
                          4},
    [ST_DOC_REV] = {"SELECT rev FROM docs WHERE kind = $1 AND name = $2", 2},
    [ST_DOC_GET] = {"SELECT body, rev FROM docs WHERE kind = $1 AND name = $2", 2},
    [ST_DOC_UPSERT] = {"INSERT INTO docs (kind, name, body, rev, updated_ms)"
                       " VALUES ($1, $2, $3::json, $4::bigint, $5::bigint)"
                       " ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body,"
                       " rev = excluded.rev, updated_ms = excluded.updated_ms",
                       5},
    [ST_DOC_DELETE] = {"DELETE FROM docs WHERE kind = $1 AND name = $2", 2},
    [ST_DOC_LIST] = {"SELECT name, body, rev FROM docs WHERE kind = $1 ORDER BY name", 1},
    [ST_REV_BUMP] = {"UPDATE revision SET value = value + 1 WHERE id = 1 RETURNING value", 0},
    [ST_REV_GET] = {"SELECT value FROM revision WHERE id = 1", 0},
};

struct pg_store {
	struct store base; /* first: store.c sees only this */
	PGconn *conn;      /* NULL while away */
	char *url;         /* the URL without password_file=; secret, never shown */
	char *password;    /* from password_file, or NULL */
	uint32_t prepared; /* bit per stmt_id prepared on conn */
	int available;
	int connecting;           /* conn is an asynchronous connect in progress */
	int txn_broken;           /* the connection died inside the caller's transaction */
	int backoff_ms;           /* the next wait after a failed attempt */
	uint64_t next_attempt_ms; /* clock_mono_ms(): no attempt before */
	uint64_t attempt_started_ms;
	unsigned reconnects; /* attempts started, for store_pg_reconnects() */
};

_Static_assert(ST__COUNT <= 32, "prepared is a 32-bit mask");

static const struct store_ops pg_ops;

static struct pg_store *to_pg(struct store *st)
{
	return (struct pg_store *)st;
}

static void quiet_notices(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

/* libpq's message text on one line (its line breaks and tabs become spaces). */
static void one_line(char *buf)
{
	size_t i, o = 0;

	for (i = 0; buf[i]; i++) {
		char ch = buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t' ? ' ' : buf[i];

		if (ch == ' ' && (o == 0 || buf[o - 1] == ' '))
			continue;
		buf[o++] = ch;
	}
	while (o > 0 && buf[o - 1] == ' ')
		o--;
	buf[o] = '\0';
}

/* libpq's message for the connection, on one line, into buf. */
static const char *conn_msg(PGconn *conn, char *buf, size_t len)
{
	snprintf(buf, len, "%s", conn ? PQerrorMessage(conn) : "out of memory");
	one_line(buf);
	return buf;
}

/* --- URL and password ------------------------------------------------------------- */

/* Decodes %XX escapes of s[0..n) into out (NUL-terminated); -EINVAL when malformed. */
static int pct_decode(const char *s, size_t n, char *out, size_t outlen)
{
	size_t i, o = 0;

	for (i = 0; i < n; i++) {
		int c = (unsigned char)s[i];

		if (c == '%') {
			char hex[3];
			char *end;

			if (i + 2 >= n)
				return -EINVAL;
			hex[0] = s[i + 1];
			hex[1] = s[i + 2];
			hex[2] = '\0';
			c = (int)strtol(hex, &end, 16);
			if (*end || c == 0)
				return -EINVAL;
			i += 2;
		}
		if (o + 1 >= outlen)
			return -EINVAL;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return 0;
}

/*
 * Splits url into a libpq URL without the password_file parameter (*conn_url,
 * malloc'd) and that parameter's decoded value (*pw_file, malloc'd, NULL if
 * absent).  -ENOMEM or -EINVAL (message in err).
 */
static int split_url(const char *url, char **conn_url, char **pw_file, char *err, size_t errlen)
{
	const char *q = strchr(url, '?'), *p, *amp;
	size_t len = strlen(url), n;
	char *out;
	int first = 1;

	*conn_url = NULL;
	*pw_file = NULL;
	out = malloc(len + 1); /* the result is never longer than url */
	if (!out)
		return -ENOMEM;
	if (!q) {
		memcpy(out, url, len + 1);
		*conn_url = out;
		return 0;
	}
	n = (size_t)(q - url);
	memcpy(out, url, n);
	for (p = q + 1; *p; p = amp + 1) {
		size_t plen;

		amp = strchr(p, '&');
		plen = amp ? (size_t)(amp - p) : strlen(p);
		if (plen > 14 && strncmp(p, "password_file=", 14) == 0) {
			char path[1024];

			if (*pw_file || pct_decode(p + 14, plen - 14, path, sizeof(path)) ||
			    !path[0]) {
				store_put_err(
				    err, errlen,
				    "store: postgres URL: password_file= is repeated, empty "
				    "or not a valid percent-encoded path");
				goto out_inval;
			}
			*pw_file = str_dup(str_make(path, strlen(path)));
			if (!*pw_file)
				goto out_nomem;
		} else if (plen > 0) {
			out[n++] = first ? '?' : '&';
			memcpy(out + n, p, plen);
			n += plen;
			first = 0;
		}
		if (!amp)
			break;
	}
	out[n] = '\0';
	*conn_url = out;
	return 0;
out_nomem:
	free(out);
	return -ENOMEM;
out_inval:
	free(out);
	free(*pw_file);
	*pw_file = NULL;
	return -EINVAL;
}

/* The first line of path (trailing CR/LF trimmed) into *out (malloc'd). */
static int read_password(const char *path, char **out, char *err, size_t errlen)
{
	char buf[PG_PASSWORD_MAX + 2];
	FILE *fp;
	size_t n;

	*out = NULL;
	fp = fopen(path, "re");
	if (!fp) {
		int e = errno;

		store_put_err(err, errlen, "store: postgres: password_file %s: %s", path,
		              strerror(e));
		return -e;
	}
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (strlen(buf) > PG_PASSWORD_MAX || !buf[0]) {
		store_put_err(err, errlen,
		              "store: postgres: password_file %s is empty or longer "
		              "than %d bytes",
		              path, PG_PASSWORD_MAX);
		return -EINVAL;
	}
	*out = str_dup(str_make(buf, strlen(buf)));
	explicit_bzero(buf, sizeof(buf));
	return *out ? 0 : -ENOMEM;
}

/* 1 if msg contains the password of url's userinfo (user:PASSWORD@host). */
static int shows_password(const char *url, const char *msg)
{
	const char *start = strstr(url, "://"), *at, *colon;
	char pw[PG_PASSWORD_MAX + 1];
	size_t n;

	if (!start)
		return 0;
	start += 3;
	at = strchr(start, '@');
	if (!at)
		return 0;
	colon = memchr(start, ':', (size_t)(at - start));
	if (!colon || at - colon - 1 <= 0)
		return 0;
	n = (size_t)(at - colon - 1);
	if (n > PG_PASSWORD_MAX)
		return 1;
	memcpy(pw, colon + 1, n);
	pw[n] = '\0';
	n = strstr(msg, pw) != NULL;
	explicit_bzero(pw, sizeof(pw));
	return (int)n;
}

/* Checks that libpq can parse conn_url; its message, minus anything secret, into err. */
static int parse_check(const char *conn_url, char *err, size_t errlen)
{
	PQconninfoOption *opts;
	char *msg = NULL;

	opts = PQconninfoParse(conn_url, &msg);
	if (!opts) {
		char m[256];

		snprintf(m, sizeof(m), "%s", msg ? msg : "out of memory");
		m[strcspn(m, "\r\n")] = '\0';
		if (shows_password(conn_url, m))
			snprintf(m, sizeof(m), "malformed URL");
		store_put_err(err, errlen, "store: postgres URL cannot be parsed: %s", m);
		PQfreemem(msg);
		return -EINVAL;
	}
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		const char *v = o->val;

		if (strcmp(o->keyword, "port") != 0 || !v)
			continue;
		/* libpq checks ports only when connecting; --check should see a typo now. */
		while (*v) {
			char *end;
			long port = strtol(v, &end, 10);

			if (end == v || port < 1 || port > 65535 || (*end && *end != ',')) {
				store_put_err(err, errlen,
				              "store: postgres URL cannot be parsed: invalid port");
				PQconninfoFree(opts);
				return -EINVAL;
			}
			v = *end ? end + 1 : end;
		}
	}
	PQconninfoFree(opts);
	return 0;
}

int store_pg_url_check(const char *url, char *err, size_t errlen)
{
	char *conn_url = NULL, *pw_file = NULL, *pw = NULL;
	int rc;

	rc = split_url(url, &conn_url, &pw_file, err, errlen);
	if (rc)
		return rc == -ENOMEM ? rc : -EINVAL;
	rc = parse_check(conn_url, err, errlen);
	if (rc == 0 && pw_file)
		rc = read_password(pw_file, &pw, err, errlen) ? -EINVAL : 0;
	if (pw) {
		explicit_bzero(pw, strlen(pw));
		free(pw);
	}
	free(conn_url);
	free(pw_file);
	return rc;
}

/* --- connection ------------------------------------------------------------------- */

/*
 * Our defaults first, then the URL (expanded: its parameters override the
 * defaults), then the password from password_file (overrides the URL's).
 */
static PGconn *connect_start(struct pg_store *s, int async)
{
	const char *keys[16], *vals[16];
	int n = 0;

#define KV(k, v) (keys[n] = (k), vals[n] = (v), n++)
	KV("connect_timeout", "5");
	KV("keepalives", "1");
	KV("keepalives_idle", "5");
	KV("keepalives_interval", "2");
	KV("keepalives_count", "2");
	KV("tcp_user_timeout", "5000");
	KV("application_name", "canaryd");
	KV("client_encoding", "UTF8");
	KV("dbname", s->url);
	if (s->password)
		KV("password", s->password);
	KV(NULL, NULL);
#undef KV
	return async ? PQconnectStartParams(keys, vals, 1) : PQconnectdbParams(keys, vals, 1);
}

/* Settings of every session: durable commits, bounded lock waits. */
static int session_setup(struct pg_store *s)
{
	PGresult *res;
	char m[256];
	int ok;

	PQsetNoticeProcessor(s->conn, quiet_notices, NULL);
	res = PQexec(s->conn, "SET synchronous_commit = on; SET lock_timeout = 5000;"
	                      " SET idle_in_transaction_session_timeout = 0");
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	PQclear(res);
	if (!ok) {
		store_set_error(&s->base, "store: postgres: session setup: %s",
		                conn_msg(s->conn, m, sizeof(m)));
		return STORE_ERR_BACKEND;
	}
	s->prepared = 0;
	return 0;
}

/* The server went away: drop the connection and remember to reconnect. */
static void conn_lost(struct pg_store *s)
{
	if (s->conn)
		PQfinish(s->conn);
	s->conn = NULL;
	s->connecting = 0;
	s->prepared = 0;
	s->available = 0;
	if (s->base.in_txn)
		s->txn_broken = 1;
	/* The first attempt is on the next call; waits start after it fails. */
	s->next_attempt_ms = 0;
	s->backoff_ms = PG_BACKOFF_MIN_MS;
}

static void attempt_failed(struct pg_store *s)
{
	if (s->conn)
		PQfinish(s->conn);
	s->conn = NULL;
	s->connecting = 0;
	s->available = 0;
	s->next_attempt_ms = clock_mono_ms() + (uint64_t)s->backoff_ms;
	s->backoff_ms =
	    s->backoff_ms * 2 > PG_BACKOFF_MAX_MS ? PG_BACKOFF_MAX_MS : s->backoff_ms * 2;
}

static int unavailable(struct pg_store *s, const char *why)
{
	store_set_error(&s->base, "store: postgres: unavailable: %s", why);
	return STORE_ERR_UNAVAILABLE;
}

/* Drives an asynchronous connect for at most PG_CONNECT_SLICE_MS. */
static int connect_drive(struct pg_store *s)
{
	uint64_t deadline = clock_mono_ms() + PG_CONNECT_SLICE_MS;
	PostgresPollingStatusType ps = PGRES_POLLING_WRITING;
	char m[sizeof(s->base.errmsg)];

	for (;;) {
		struct pollfd pfd;
		uint64_t now = clock_mono_ms();
		int fd = PQsocket(s->conn);

		if (now - s->attempt_started_ms > PG_CONNECT_TIMEOUT_MS) {
			attempt_failed(s);
			return unavailable(s, "reconnect timed out");
		}
		if (now >= deadline)
			return unavailable(s, "reconnecting");
		if (fd < 0) {
			conn_msg(s->conn, m, sizeof(m));
			attempt_failed(s);
			return unavailable(s, m);
		}
		pfd.fd = fd;
		pfd.events = ps == PGRES_POLLING_READING ? POLLIN : POLLOUT;
		pfd.revents = 0;
		if (poll(&pfd, 1, (int)(deadline - now)) == 0)
			continue;
		ps = PQconnectPoll(s->conn);
		if (ps == PGRES_POLLING_FAILED) {
			conn_msg(s->conn, m, sizeof(m));
			attempt_failed(s);
			return unavailable(s, m);
		}
		if (ps == PGRES_POLLING_OK)
			break;
	}
	s->connecting = 0;
	if (session_setup(s)) {
		snprintf(m, sizeof(m), "%s", s->base.errmsg);
		attempt_failed(s);
		return unavailable(s, m);
	}
	s->available = 1;
	s->backoff_ms = PG_BACKOFF_MIN_MS;
	return 0;
}

/* Every op starts here: a live connection, or STORE_ERR_UNAVAILABLE at once. */
static int conn_ready(struct pg_store *s)
{
	if (s->base.in_txn && s->txn_broken)
		return unavailable(s, "the connection was lost inside this transaction; roll back");
	if (s->conn && !s->connecting) {
		if (PQstatus(s->conn) == CONNECTION_OK)
			return 0;
		conn_lost(s);
		if (s->base.in_txn)
			return unavailable(s, "connection lost inside this transaction; roll back");
	}
	if (!s->conn) {
		if (clock_mono_ms() < s->next_attempt_ms)
			return unavailable(s, "waiting to reconnect");
		s->reconnects++;
		s->conn = connect_start(s, 1);
		if (!s->conn || PQstatus(s->conn) == CONNECTION_BAD) {
			char m[256];

			conn_msg(s->conn, m, sizeof(m));
			attempt_failed(s);
			return unavailable(s, m);
		}
		s->connecting = 1;
		s->attempt_started_ms = clock_mono_ms();
	}
	return connect_drive(s);
}

/* --- running statements ----------------------------------------------------------- */

/* Maps a failed result to our codes and sets the message. */
static int pg_fail(struct pg_store *s, PGresult *res, const char *what)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorMessage(res) : NULL;
	char m[256];

	if (!s->conn || PQstatus(s->conn) == CONNECTION_BAD ||
	    (state && strncmp(state, "08", 2) == 0) || (state && strncmp(state, "57P", 3) == 0)) {
		conn_msg(s->conn, m, sizeof(m));
		conn_lost(s);
		store_set_error(&s->base, "store: postgres: unavailable: %s: %s", what, m);
		return STORE_ERR_UNAVAILABLE;
	}
	snprintf(m, sizeof(m), "%s", msg && *msg ? msg : PQerrorMessage(s->conn));
	one_line(m);
	store_set_error(&s->base, "store: postgres: %s: %s", what, m);
	if (!state)
		return STORE_ERR_BACKEND;
	if (!strcmp(state, "40001") || !strcmp(state, "40P01") || !strcmp(state, "55P03") ||
	    !strcmp(state, "57014"))
		return -EBUSY;
	if (!strcmp(state, "53100"))
		return -ENOSPC;
	if (!strcmp(state, "53200"))
		return -ENOMEM;
	return STORE_ERR_BACKEND;
}

static const char *stmt_name(int id, char *buf, size_t len)
{
	snprintf(buf, len, "canaryd_%d", id);
	return buf;
}

/* The SQL of an event query shape, built into buf. */
static const char *evq_sql(int shape, char *buf, size_t len)
{
	/* $1 since, $2 before, $3 limit (NULL: all), $4 subject, $5 kind */
	snprintf(buf, len,
	         "SELECT id, ts_ms, actor, kind, subject, details FROM events"
	         " WHERE id > $1::bigint AND id < $2::bigint%s%s ORDER BY id%s LIMIT $3::bigint",
	         shape & EVQ_SUBJECT ? " AND subject = $4" : " AND $4::text IS NULL",
	         shape & EVQ_KIND ? " AND kind = $5" : " AND $5::text IS NULL",
	         shape & EVQ_DESC ? " DESC" : "");
	return buf;
}

/*
 * Runs statement id with text params; prepares it on this connection first.
 * want: PGRES_TUPLES_OK or PGRES_COMMAND_OK.  The result (caller PQclear()s)
 * or NULL with *rc set.
 */
static PGresult *run(struct pg_store *s, int id, const char *const *params, int nparams,
                     ExecStatusType want, const char *what, int *rc)
{
	char name[32], sql[400];
	PGresult *res;

	stmt_name(id, name, sizeof(name));
	if (!(s->prepared & (1u << id))) {
		const char *text =
		    id >= ST_EVQ ? evq_sql(id - ST_EVQ, sql, sizeof(sql)) : stmt_defs[id].sql;

		res =
		    PQprepare(s->conn, name, text, id >= ST_EVQ ? 5 : stmt_defs[id].nparams, NULL);
		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			*rc = pg_fail(s, res, what);
			PQclear(res);
			return NULL;
		}
		PQclear(res);
		s->prepared |= 1u << id;
	}
	res = PQexecPrepared(s->conn, name, nparams, params, NULL, NULL, 0);
	if (PQresultStatus(res) != want) {
		*rc = pg_fail(s, res, what);
		PQclear(res);
		return NULL;
	}
	*rc = 0;
	return res;
}

/* Runs a parameterless command (transaction control). */
static int command(struct pg_store *s, const char *sql)
{
	PGresult *res = PQexec(s->conn, sql);
	int rc = 0;

	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		rc = pg_fail(s, res, sql);
	PQclear(res);
	return rc;
}

/* Undo steps must not overwrite the message of the failure that caused them. */
static void command_quiet(struct pg_store *s, const char *sql)
{
	if (s->conn)
		PQclear(PQexec(s->conn, sql));
}

/* After a failed read inside the caller's transaction: PostgreSQL aborted it. */
static int read_end(struct pg_store *s, int rc)
{
	if (rc && s->base.in_txn && s->conn && PQtransactionStatus(s->conn) == PQTRANS_INERROR)
		s->base.txn_lost = 1;
	return rc;
}

/* Every writing op is atomic by itself: its own transaction, or a savepoint. */
static int op_begin(struct pg_store *s)
{
	int rc = conn_ready(s);

	if (rc)
		return rc;
	return command(s, s->base.in_txn ? "SAVEPOINT store_op" : "BEGIN");
}

static int op_end(struct pg_store *s, int rc)
{
	if (rc == 0) {
		rc = command(s, s->base.in_txn ? "RELEASE SAVEPOINT store_op" : "COMMIT");
		if (rc == 0)
			return 0;
	}
	if (!s->conn)
		return rc; /* lost: the server rolled back (conn_lost marked the txn) */
	if (s->base.in_txn) {
		command_quiet(s, "ROLLBACK TO SAVEPOINT store_op");
		command_quiet(s, "RELEASE SAVEPOINT store_op");
		if (PQtransactionStatus(s->conn) == PQTRANS_INERROR)
			s->base.txn_lost = 1;
	} else if (PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
		command_quiet(s, "ROLLBACK");
	}
	return rc;
}

static int64_t col_int(PGresult *res, int row, int col)
{
	return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* Reads one integer from a single-row statement; STORE_ERR_NOTFOUND on no row. */
static int query_int(struct pg_store *s, int id, const char *const *params, int nparams,
                     const char *what, int64_t *out)
{
	PGresult *res;
	int rc;

	res = run(s, id, params, nparams, PGRES_TUPLES_OK, what, &rc);
	if (!res)
		return rc;
	if (PQntuples(res) < 1)
		rc = STORE_ERR_NOTFOUND;
	else
		*out = col_int(res, 0, 0);
	PQclear(res);
	return rc;
}

/* --- ops -------------------------------------------------------------------------- */

static int pg_begin(struct store *st)
{
	struct pg_store *s = to_pg(st);
	int rc = conn_ready(s);

	if (rc)
		return rc;
	s->txn_broken = 0;
	return command(s, "BEGIN");
}

static int pg_commit(struct store *st)
{
	struct pg_store *s = to_pg(st);
	PGresult *res;
	int rc = 0;

	if (s->txn_broken || !s->conn) {
		s->txn_broken = 0;
		return unavailable(s, "the connection was lost inside the transaction; nothing "
		                      "was committed");
	}
	res = PQexec(s->conn, "COMMIT");
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		/* A commit whose answer was lost may or may not have happened. */
		rc = pg_fail(s, res, "COMMIT");
	} else if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
		store_set_error(st, "store: postgres: the transaction was aborted; nothing was "
		                    "committed");
		rc = STORE_ERR_TXN;
	}
	PQclear(res);
	s->txn_broken = 0;
	if (rc && s->conn && PQtransactionStatus(s->conn) != PQTRANS_IDLE)
		command_quiet(s, "ROLLBACK");
	return rc;
}

static int pg_rollback(struct store *st)
{
	struct pg_store *s = to_pg(st);

	if (s->txn_broken || !s->conn) {
		s->txn_broken = 0;
		return 0; /* the server already dropped it */
	}
	if (PQtransactionStatus(s->conn) == PQTRANS_IDLE)
		return 0;
	return command(s, "ROLLBACK");
}

static int pg_schema_version(struct store *st)
{
	struct pg_store *s = to_pg(st);
	int64_t v = 0;
	int rc = conn_ready(s);

	if (rc)
		return rc;
	rc = read_end(s, query_int(s, ST_SCHEMA_VERSION, NULL, 0, "schema version", &v));
	if (rc)
		return rc == STORE_ERR_NOTFOUND ? 0 : rc;
	return (int)v;
}

static int pg_event_append(struct store *st, int64_t ts_ms, const char *actor, const char *kind,
                           const char *subject, const char *details, int64_t *id_out)
{
	struct pg_store *s = to_pg(st);
	char ts[24];
	const char *p[5] = {ts, actor, kind, subject, details};
	int64_t id = 0;
	int rc;

	rc = op_begin(s);
	if (rc)
		return rc;
	snprintf(ts, sizeof(ts), "%lld", (long long)ts_ms);
	rc = query_int(s, ST_EVENT_INSERT, p, 5, "append event", &id);
	if (rc == STORE_ERR_NOTFOUND) {
		store_set_error(st, "store: postgres: the revision row is missing");
		rc = STORE_ERR_BACKEND;
	}
	if (rc == 0 && id_out)
		*id_out = id;
	return op_end(s, rc);
}

/* One page of an event query: rows to cb; *got rows, *last the last id. */
static int events_page(struct pg_store *s, const struct store_events_query *eq, int64_t since,
                       int64_t before, int limit, store_event_row_cb cb, void *arg, int *got,
                       int64_t *last)
{
	char since_s[24], before_s[24], limit_s[16];
	const char *p[5] = {since_s, before_s, limit > 0 ? limit_s : NULL, eq->subject, eq->kind};
	struct store_event_row row;
	PGresult *res;
	int shape, rc, i, n;

	shape = (eq->subject ? EVQ_SUBJECT : 0) | (eq->kind ? EVQ_KIND : 0) |
	        (eq->descending ? EVQ_DESC : 0);
	snprintf(since_s, sizeof(since_s), "%lld", (long long)since);
	snprintf(before_s, sizeof(before_s), "%lld", (long long)(before > 0 ? before : INT64_MAX));
	snprintf(limit_s, sizeof(limit_s), "%d", limit);
	res = run(s, ST_EVQ + shape, p, 5, PGRES_TUPLES_OK, "list events", &rc);
	if (!res)
		return rc;
	n = PQntuples(res);
	for (i = 0; i < n && rc == 0; i++) {
		row.id = col_int(res, i, 0);
		row.ts_ms = col_int(res, i, 1);
		row.actor = PQgetvalue(res, i, 2);
		row.kind = PQgetvalue(res, i, 3);
		row.subject = PQgetvalue(res, i, 4);
		row.details = PQgetvalue(res, i, 5);
		*last = row.id;
		rc = cb(arg, &row);
	}
	*got = n;
	PQclear(res);
	return rc;
}

/*
 * A bounded query is one page; an unbounded one (events_each) walks by keyset
 * in pages of PG_EACH_BATCH, so neither side holds more than a page and the
 * callback may read documents between rows.
 */
static int pg_events_query(struct store *st, const struct store_events_query *eq, int limit,
                           store_event_row_cb cb, void *arg)
{
	struct pg_store *s = to_pg(st);
	int64_t since = eq->since_id, before = eq->before_id, last = 0;
	int rc, got;

	rc = conn_ready(s);
	if (rc)
		return rc;
	if (limit > 0)
		return read_end(s, events_page(s, eq, since, before, limit, cb, arg, &got, &last));
	for (;;) {
		got = 0;
		rc = events_page(s, eq, since, before, PG_EACH_BATCH, cb, arg, &got, &last);
		if (rc || got < PG_EACH_BATCH)
			break;
		if (eq->descending)
			before = last;
		else
			since = last;
	}
	return read_end(s, rc);
}

static int pg_events_delete(struct store *st, const char *kind, const char *subject,
                            int64_t from_id, int64_t to_id, int64_t *n)
{
	struct pg_store *s = to_pg(st);
	char from_s[24], to_s[24];
	const char *p[4] = {kind, subject, from_s, to_s};
	PGresult *res;
	int rc;

	rc = op_begin(s);
	if (rc)
		return rc;
	snprintf(from_s, sizeof(from_s), "%lld", (long long)from_id);
	snprintf(to_s, sizeof(to_s), "%lld", (long long)to_id);
	res = run(s, ST_EVENTS_DELETE, p, 4, PGRES_COMMAND_OK, "delete events", &rc);
	if (res) {
		*n = strtoll(PQcmdTuples(res), NULL, 10);
		PQclear(res);
	}
	return op_end(s, rc);
}

static int conflict(struct pg_store *s, const char *kind, const char *name, int64_t expect,
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
 * Bumps the global revision first: its row lock orders every writer (other
 * handles, other nodes), so the document check below reads the state the
 * previous writer committed.  A failed check undoes the bump with the op.
 */
static int doc_next_rev(struct pg_store *s, const char *kind, const char *name, int64_t expect_rev,
                        int must_exist, int64_t *rev)
{
	const char *p[2] = {kind, name};
	int64_t cur = 0;
	int rc;

	rc = query_int(s, ST_REV_BUMP, NULL, 0, "bump revision", rev);
	if (rc == STORE_ERR_NOTFOUND) {
		store_set_error(&s->base, "store: postgres: the revision row is missing");
		return STORE_ERR_BACKEND;
	}
	if (rc)
		return rc;
	rc = query_int(s, ST_DOC_REV, p, 2, "read document revision", &cur);
	if (rc == STORE_ERR_NOTFOUND) {
		cur = 0;
		rc = 0;
	}
	if (rc)
		return rc;
	if (must_exist && cur == 0) {
		store_set_error(&s->base, "store: document %s/%s not found", kind, name);
		return STORE_ERR_NOTFOUND;
	}
	if (expect_rev != STORE_REV_ANY && expect_rev != cur)
		return conflict(s, kind, name, expect_rev, cur);
	return 0;
}

static int pg_doc_put(struct store *st, int64_t ts_ms, const char *kind, const char *name,
                      const char *json, size_t json_len, int64_t expect_rev, int64_t *new_rev)
{
	struct pg_store *s = to_pg(st);
	char rev_s[24], ts_s[24];
	const char *p[5] = {kind, name, json, rev_s, ts_s};
	PGresult *res;
	int64_t rev;
	int rc;

	(void)json_len; /* NUL-terminated: checked by store.c */
	rc = op_begin(s);
	if (rc)
		return rc;
	rc = doc_next_rev(s, kind, name, expect_rev, 0, &rev);
	if (rc)
		goto out_end;
	snprintf(rev_s, sizeof(rev_s), "%lld", (long long)rev);
	snprintf(ts_s, sizeof(ts_s), "%lld", (long long)ts_ms);
	res = run(s, ST_DOC_UPSERT, p, 5, PGRES_COMMAND_OK, "write document", &rc);
	PQclear(res);
	if (rc == 0 && new_rev)
		*new_rev = rev;
out_end:
	return op_end(s, rc);
}

static int pg_doc_get(struct store *st, const char *kind, const char *name, char **json_out,
                      int64_t *rev_out)
{
	struct pg_store *s = to_pg(st);
	const char *p[2] = {kind, name};
	PGresult *res;
	int rc;

	rc = conn_ready(s);
	if (rc)
		return rc;
	res = run(s, ST_DOC_GET, p, 2, PGRES_TUPLES_OK, "read document", &rc);
	if (!res)
		return read_end(s, rc);
	if (PQntuples(res) < 1) {
		store_set_error(st, "store: document %s/%s not found", kind, name);
		rc = STORE_ERR_NOTFOUND;
		goto out_clear;
	}
	if (json_out) {
		char *copy =
		    str_dup(str_make(PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0)));

		if (!copy) {
			rc = -ENOMEM;
			goto out_clear;
		}
		*json_out = copy;
	}
	if (rev_out)
		*rev_out = col_int(res, 0, 1);
out_clear:
	PQclear(res);
	return rc;
}

static int pg_doc_delete(struct store *st, const char *kind, const char *name, int64_t expect_rev,
                         int64_t *new_rev)
{
	struct pg_store *s = to_pg(st);
	const char *p[2] = {kind, name};
	PGresult *res;
	int64_t rev;
	int rc;

	rc = op_begin(s);
	if (rc)
		return rc;
	rc = doc_next_rev(s, kind, name, expect_rev, 1, &rev);
	if (rc)
		goto out_end;
	res = run(s, ST_DOC_DELETE, p, 2, PGRES_COMMAND_OK, "delete document", &rc);
	PQclear(res);
	if (rc == 0 && new_rev)
		*new_rev = rev;
out_end:
	return op_end(s, rc);
}

/* The whole kind is fetched first, so the callback may read documents meanwhile. */
static int pg_doc_list(struct store *st, const char *kind, store_doc_cb cb, void *arg)
{
	struct pg_store *s = to_pg(st);
	const char *p[1] = {kind};
	PGresult *res;
	int rc, i, n;

	rc = conn_ready(s);
	if (rc)
		return rc;
	res = run(s, ST_DOC_LIST, p, 1, PGRES_TUPLES_OK, "list documents", &rc);
	if (!res)
		return read_end(s, rc);
	n = PQntuples(res);
	for (i = 0; i < n && rc == 0; i++)
		rc = cb(arg, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), col_int(res, i, 2));
	PQclear(res);
	return rc;
}

static int pg_revision(struct store *st, int64_t *rev_out)
{
	struct pg_store *s = to_pg(st);
	int64_t v = 0;
	int rc;

	rc = conn_ready(s);
	if (rc)
		return rc;
	rc = query_int(s, ST_REV_GET, NULL, 0, "read revision", &v);
	if (rc == STORE_ERR_NOTFOUND) {
		store_set_error(st, "store: postgres: the revision row is missing");
		rc = STORE_ERR_BACKEND;
	}
	if (rc == 0 && rev_out)
		*rev_out = v;
	return read_end(s, rc);
}

/* The fleet schema's check (fleet/fleet.c creates canaryd_fence()). */
static int pg_fence_term(struct store *st, int64_t term)
{
	struct pg_store *s = to_pg(st);
	char term_s[24];
	const char *p[1] = {term_s};
	PGresult *res;
	int rc = conn_ready(s);

	if (rc)
		return rc;
	snprintf(term_s, sizeof(term_s), "%lld", (long long)term);
	res = PQexecParams(s->conn, "SELECT canaryd_fence($1::bigint)", 1, NULL, p, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		rc = read_end(s, pg_fail(s, res, "fleet fence"));
	} else if (PQgetvalue(res, 0, 0)[0] != 't') {
		store_set_error(st, "store: fenced: the fleet's leader term is no longer %lld",
		                (long long)term);
		rc = STORE_ERR_CONFLICT;
	}
	PQclear(res);
	return rc;
}

static int pg_available(const struct store *st)
{
	return ((const struct pg_store *)st)->available;
}

static void pg_close(struct store *st)
{
	struct pg_store *s = to_pg(st);

	if (s->conn) {
		if (!s->connecting && PQtransactionStatus(s->conn) != PQTRANS_IDLE)
			command_quiet(s, "ROLLBACK");
		PQfinish(s->conn);
	}
	if (s->password) {
		explicit_bzero(s->password, strlen(s->password));
		free(s->password);
	}
	if (s->url) {
		explicit_bzero(s->url, strlen(s->url));
		free(s->url);
	}
	free(s);
}

static const struct store_ops pg_ops = {
    .name = "postgres",
    .close = pg_close,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .schema_version = pg_schema_version,
    .event_append = pg_event_append,
    .events_query = pg_events_query,
    .events_delete = pg_events_delete,
    .doc_put = pg_doc_put,
    .doc_get = pg_doc_get,
    .doc_delete = pg_doc_delete,
    .doc_list = pg_doc_list,
    .revision = pg_revision,
    .available = pg_available,
    .fence_term = pg_fence_term,
};

/* --- migrations and open ---------------------------------------------------------- */

/* One step (or the final check) in its own transaction; *done when at target. */
static int migrate_step(struct pg_store *s, int target, int *done)
{
	const struct migration *m;
	char ver_s[16], at_s[24];
	const char *p[3];
	PGresult *res;
	int64_t version = 0;
	int rc;

	rc = command(s, "BEGIN");
	if (rc)
		return rc;
	res = PQexec(s->conn, "SELECT pg_advisory_xact_lock(" PG_MIGRATION_LOCK ");"
	                      "CREATE TABLE IF NOT EXISTS schema_migrations ("
	                      "  version INTEGER PRIMARY KEY,"
	                      "  name TEXT NOT NULL,"
	                      "  applied_at BIGINT NOT NULL)");
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		rc = pg_fail(s, res, "prepare migrations");
		PQclear(res);
		goto out_rollback;
	}
	PQclear(res);
	res = PQexec(s->conn, stmt_defs[ST_SCHEMA_VERSION].sql);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		rc = pg_fail(s, res, "read schema version");
		PQclear(res);
		goto out_rollback;
	}
	version = col_int(res, 0, 0);
	PQclear(res);
	if (version > target) {
		store_set_error(&s->base,
		                "store: database schema version %lld is newer than this canaryd "
		                "knows (%d); upgrade canaryd or use another database",
		                (long long)version, target);
		rc = STORE_ERR_SCHEMA;
		goto out_rollback;
	}
	if (version == target) {
		*done = 1;
		return command(s, "COMMIT");
	}
	m = &migrations[version];
	res = PQexec(s->conn, m->sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		pg_fail(s, res, m->name);
		PQclear(res);
		goto out_schema;
	}
	PQclear(res);
	snprintf(ver_s, sizeof(ver_s), "%d", m->version);
	snprintf(at_s, sizeof(at_s), "%llu", (unsigned long long)clock_wall_ms());
	p[0] = ver_s;
	p[1] = m->name;
	p[2] = at_s;
	res = PQexecParams(s->conn,
	                   "INSERT INTO schema_migrations (version, name, applied_at)"
	                   " VALUES ($1::integer, $2, $3::bigint)",
	                   3, NULL, p, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		pg_fail(s, res, "record migration");
		PQclear(res);
		goto out_schema;
	}
	PQclear(res);
	return command(s, "COMMIT");
out_schema : {
	char msg[sizeof(s->base.errmsg)];

	snprintf(msg, sizeof(msg), "%s", s->base.errmsg);
	store_set_error(&s->base, "store: migration %d (%s) failed: %s", m->version, m->name, msg);
	rc = STORE_ERR_SCHEMA;
}
out_rollback:
	command_quiet(s, "ROLLBACK");
	return rc;
}

unsigned store_pg_reconnects(const struct store *st)
{
	if (!st || st->ops != &pg_ops)
		return 0;
	return ((const struct pg_store *)st)->reconnects;
}

int store_pg_migrate(struct store *st, int target)
{
	struct pg_store *s;
	int rc, done = 0;

	if (!st || st->ops != &pg_ops)
		return -EINVAL;
	s = to_pg(st);
	if (target < 0 || target > MIGRATION_COUNT) {
		store_set_error(st, "store: no migration to version %d", target);
		return -EINVAL;
	}
	rc = conn_ready(s);
	while (rc == 0 && !done)
		rc = migrate_step(s, target, &done);
	return rc;
}

struct store *store_pg_open(const char *url, char *err, size_t errlen)
{
	return store_pg_open_at(url, STORE_SCHEMA_VERSION, err, errlen);
}

struct store *store_pg_open_at(const char *url, int target, char *err, size_t errlen)
{
	struct pg_store *s;
	char *pw_file = NULL;
	char m[256];

	s = calloc(1, sizeof(*s));
	if (!s) {
		store_put_err(err, errlen, "store: out of memory");
		return NULL;
	}
	s->base.ops = &pg_ops;
	s->backoff_ms = PG_BACKOFF_MIN_MS;
	if (split_url(url, &s->url, &pw_file, err, errlen))
		goto out_free;
	if (parse_check(s->url, err, errlen))
		goto out_free;
	if (pw_file && read_password(pw_file, &s->password, err, errlen))
		goto out_free;
	s->conn = connect_start(s, 0);
	if (!s->conn || PQstatus(s->conn) != CONNECTION_OK) {
		store_put_err(err, errlen, "store: postgres: cannot connect: %s",
		              conn_msg(s->conn, m, sizeof(m)));
		goto out_free;
	}
	if (session_setup(s)) {
		store_put_err(err, errlen, "%s", s->base.errmsg);
		goto out_free;
	}
	s->available = 1;
	if (store_pg_migrate(&s->base, target)) {
		store_put_err(err, errlen, "%s", s->base.errmsg);
		goto out_free;
	}
	s->base.errmsg[0] = '\0';
	free(pw_file);
	return &s->base;
out_free:
	free(pw_file);
	pg_close(&s->base);
	return NULL;
}

struct pg_conn *store_pg_connect(const char *url, char *err, size_t errlen)
{
	struct pg_store tmp = {0};
	char *pw_file = NULL;
	PGconn *c = NULL;
	char m[256];

	if (split_url(url, &tmp.url, &pw_file, err, errlen))
		return NULL;
	if (parse_check(tmp.url, err, errlen))
		goto out_free;
	if (pw_file && read_password(pw_file, &tmp.password, err, errlen))
		goto out_free;
	c = connect_start(&tmp, 0);
	if (!c || PQstatus(c) != CONNECTION_OK) {
		store_put_err(err, errlen, "cannot connect: %s", conn_msg(c, m, sizeof(m)));
		PQfinish(c);
		c = NULL;
		goto out_free;
	}
	PQsetNoticeProcessor(c, quiet_notices, NULL);
out_free:
	free(pw_file);
	if (tmp.password) {
		explicit_bzero(tmp.password, strlen(tmp.password));
		free(tmp.password);
	}
	if (tmp.url) {
		explicit_bzero(tmp.url, strlen(tmp.url));
		free(tmp.url);
	}
	return c;
}
