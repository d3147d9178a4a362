#include "core/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level = LOG_INFO;
static atomic_int log_level_inited;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (s && strcmp(s, level_names[i]) == 0)
			return i;
	return -1;
}

void log_set_level(enum log_level level)
{
	atomic_store(&log_level_inited, 1);
	atomic_store(&log_level, (int)level);
}

enum log_level log_get_level(void)
{
	if (!atomic_exchange(&log_level_inited, 1)) {
		int l = log_level_parse(getenv("CANARYD_LOG_LEVEL"));

		if (l >= 0)
			atomic_store(&log_level, l);
	}
	return (enum log_level)atomic_load(&log_level);
}

/* Appends s JSON-escaped to line[*n], never past cap (truncates quietly). */
static void put_escaped(char *line, size_t *n, size_t cap, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[6];
		size_t k = 0;

		if (c == '"' || c == '\\') {
			esc[k++] = '\\';
			esc[k++] = (char)c;
		} else if (c == '\n') {
			esc[k++] = '\\';
			esc[k++] = 'n';
		} else if (c < 0x20) {
			esc[0] = '\\';
			esc[1] = 'u';
			esc[2] = '0';
			esc[3] = '0';
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			k = 6;
		} else {
			esc[k++] = (char)c;
		}
		if (*n + k >= cap)
			return;
		memcpy(line + *n, esc, k);
		*n += k;
	}
}

static void put_raw(char *line, size_t *n, size_t cap, const char *s)
{
	size_t k = strlen(s);

	if (*n + k >= cap)
		return;
	memcpy(line + *n, s, k);
	*n += k;
}

void log_write(enum log_level level, const char *msg, ...)
{
	char line[4096], ts[64];
	size_t n = 0, cap = sizeof(line) - 2;
	struct timespec now;
	struct tm tm;
	va_list ap;
	const char *k;

	if ((int)level < (int)log_get_level())
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
	         (tm.tm_year + 1900) % 10000, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	         tm.tm_sec, (long)(now.tv_nsec / 1000000) % 1000);
	put_raw(line, &n, cap, "{\"ts\":\"");
	put_raw(line, &n, cap, ts);
	put_raw(line, &n, cap, "\",\"level\":\"");
	put_raw(line, &n, cap, level_names[level]);
	put_raw(line, &n, cap, "\",\"msg\":\"");
	put_escaped(line, &n, cap, msg);
	put_raw(line, &n, cap, "\"");
	va_start(ap, msg);
	while ((k = va_arg(ap, const char *)) != NULL) {
		const char *v = va_arg(ap, const char *);

		put_raw(line, &n, cap, ",\"");
		put_escaped(line, &n, cap, k);
		put_raw(line, &n, cap, "\":\"");
		put_escaped(line, &n, cap, v ? v : "");
		put_raw(line, &n, cap, "\"");
	}
	va_end(ap);
	line[n++] = '}';
	line[n++] = '\n';
	/* one write per line keeps lines whole across threads */
	if (write(STDERR_FILENO, line, n) == -1)
		return;
}
