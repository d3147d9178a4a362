/*
 * store_pg.h - the PostgreSQL backend (libpq).  Reached through
 * store_open("postgres://..."); the extra entry points are for store.c and
 * the unit tests.  See docs/store.md for URL forms and password handling.
 */
#ifndef STORE_STORE_PG_H
#define STORE_STORE_PG_H

#include <stddef.h>

#include "store/store_types.h"

/*
 * Connects to the database named by url (postgres:// or postgresql://, a
 * libpq URI; an optional password_file=PATH query parameter names a file
 * whose first line is the password), sets synchronous_commit on, and
 * migrates it to STORE_SCHEMA_VERSION.  Returns a handle the caller owns
 * (store_close()) or NULL with a message in err that never shows the URL's
 * password.
 */
struct store *store_pg_open(const char *url, char *err, size_t errlen);

/* store_pg_open() migrating only up to version target (tests build an old database). */
struct store *store_pg_open_at(const char *url, int target, char *err, size_t errlen);

/*
 * Parses url as store_pg_open() would (PQconninfoParse, password_file
 * readable) without connecting.  0, or -EINVAL with a message in err.
 */
int store_pg_url_check(const char *url, char *err, size_t errlen);

/*
 * Applies the migrations the database lacks up to target (<=
 * STORE_SCHEMA_VERSION), each in its own transaction under an advisory lock.
 * st must be a postgres store.  0 or STORE_ERR_SCHEMA (a newer database, or
 * a failed step) with the message in store_errmsg().  Tests use it.
 */
int store_pg_migrate(struct store *st, int target);

/*
 * Reconnect attempts st has started since it was opened (diagnostics and
 * tests: at most one per backoff period).  0 for a store that is not postgres.
 */
unsigned store_pg_reconnects(const struct store *st);

/*
 * A new libpq connection (libpq's PGconn, struct pg_conn) to url's database
 * with the store's defaults (keepalives, tcp_user_timeout, password_file),
 * for fleet mode's own connections (fleet/fleet.c).  Blocking connect.  The
 * caller owns it (PQfinish).  NULL with a message in err that never shows
 * the password.
 */
struct pg_conn;
struct pg_conn *store_pg_connect(const char *url, char *err, size_t errlen);

#endif
