/*
 * store_backend.c - helpers every backend and store.c share (messages).
 * Kept apart from store.c so the call graph is one way:
 * store.c -> store_sqlite.c / store_pg.c -> store_backend.c.
 */
#include <stdarg.h>
#include <stdio.h>

#include "store/store_backend.h"

void store_put_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

void store_set_error(struct store *st, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(st->errmsg, sizeof(st->errmsg), fmt, ap);
	va_end(ap);
}
