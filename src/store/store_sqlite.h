/*
 * store_sqlite.h - the embedded SQLite backend.  Reached through
 * store_open("sqlite:PATH"); the extra entry points are for store.c and the
 * unit tests.
 */
#ifndef STORE_STORE_SQLITE_H
#define STORE_STORE_SQLITE_H

#include <stddef.h>

#include <sqlite3.h>

#include "store/store_types.h"

/*
 * Opens (creating if missing) the SQLite database at path (":memory:" for a
 * private in-memory one), sets WAL, synchronous=FULL and the busy timeout,
 * and migrates it to STORE_SCHEMA_VERSION.  Returns a handle owned by the
 * caller (store_close()) or NULL with a message in err.
 */
struct store *store_sqlite_open(const char *path, char *err, size_t errlen);

/*
 * Applies the migrations db lacks, up to and including version target
 * (<= STORE_SCHEMA_VERSION), each in its own transaction, recording each in
 * schema_migrations.  0, or STORE_ERR_SCHEMA with a message in err when the
 * database is newer than target or a step fails.  Tests use it to build an
 * old database.
 */
int store_sqlite_migrate(sqlite3 *db, int target, char *err, size_t errlen);

/* The connection behind an sqlite store (tests, diagnostics); st must be sqlite. */
sqlite3 *store_sqlite_db(struct store *st);

#endif
