/*
 * config_errors.c - the list of "file:line: path: message" errors.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

void config_errors_init(struct config_errors *errs)
{
	memset(errs, 0, sizeof(*errs));
}

void config_errors_release(struct config_errors *errs)
{
	for (size_t i = 0; i < errs->n; i++) {
		free(errs->v[i].file);
		free(errs->v[i].path);
		free(errs->v[i].message);
	}
	free(errs->v);
	config_errors_init(errs);
}

size_t config_errors_count(const struct config_errors *errs)
{
	return errs->n + errs->dropped;
}

const struct config_error *config_errors_get(const struct config_errors *errs, size_t i)
{
	return i < errs->n ? &errs->v[i] : NULL;
}

static char *dup_or_empty(const char *s)
{
	return strdup(s ? s : "");
}

int config_errors_add(struct config_errors *errs, const char *file, int line, const char *path,
                      const char *fmt, ...)
{
	struct config_error e = {0};
	va_list ap;
	char msg[1024];

	if (errs->n >= CONFIG_ERRORS_MAX)
		goto out_drop;
	if (errs->n == errs->cap) {
		size_t cap = errs->cap ? errs->cap * 2 : 16;
		struct config_error *v = realloc(errs->v, cap * sizeof(*v));

		if (!v)
			goto out_drop;
		errs->v = v;
		errs->cap = cap;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	e.file = dup_or_empty(file);
	e.path = dup_or_empty(path);
	e.message = strdup(msg);
	e.line = line;
	if (!e.file || !e.path || !e.message)
		goto out_free;
	errs->v[errs->n++] = e;
	return 0;

out_free:
	free(e.file);
	free(e.path);
	free(e.message);
out_drop:
	errs->dropped++;
	return -ENOMEM;
}

int config_error_format(const struct config_error *e, char *buf, size_t n)
{
	char line[24] = "";

	if (e->line > 0)
		snprintf(line, sizeof(line), ":%d", e->line);
	return snprintf(buf, n, "%s%s: %s%s%s", e->file, line, e->path, *e->path ? ": " : "",
	                e->message);
}

void config_errors_print(const struct config_errors *errs, FILE *fp)
{
	char line[2048];

	for (size_t i = 0; i < errs->n; i++) {
		config_error_format(&errs->v[i], line, sizeof(line));
		fprintf(fp, "%s\n", line);
	}
	if (errs->dropped)
		fprintf(fp, "... and %zu more errors\n", errs->dropped);
}
