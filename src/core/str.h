/*
 * str.h - length-carrying strings for the wire path (h2o's h2o_iovec_t).
 * Request data is never assumed to be NUL-terminated.
 */
#ifndef CORE_STR_H
#define CORE_STR_H

#include <stddef.h>
#include <string.h>
#include <strings.h>

struct str {
	const char *p;
	size_t len;
};

#define STR_LIT(s) ((struct str){(s), sizeof(s) - 1})
#define STR_NULL   ((struct str){NULL, 0})

static inline struct str str_make(const char *p, size_t len)
{
	return (struct str){p, len};
}

static inline struct str str_c(const char *s)
{
	return (struct str){s, s ? strlen(s) : 0};
}

static inline int str_eq(struct str a, struct str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* ASCII case-insensitive equality (header names). */
static inline int str_caseeq(struct str a, struct str b)
{
	return a.len == b.len && (a.len == 0 || strncasecmp(a.p, b.p, a.len) == 0);
}

static inline int str_eq_c(struct str a, const char *c)
{
	return str_eq(a, str_c(c));
}

static inline int str_caseeq_c(struct str a, const char *c)
{
	return str_caseeq(a, str_c(c));
}

static inline int str_has_prefix(struct str s, struct str prefix)
{
	return s.len >= prefix.len && memcmp(s.p, prefix.p, prefix.len) == 0;
}

/* The value of hex digit c (0-9, a-f, A-F), or -1. */
static inline int str_hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Trims optional whitespace (SP / HTAB) from both ends. */
struct str str_trim(struct str s);

/*
 * Parses an unsigned decimal integer spanning all of s (no sign, no spaces).
 * Returns 0 and stores it in *out, or -1 on empty input, a non-digit or overflow.
 */
int str_to_u64(struct str s, unsigned long long *out);

/*
 * Parses a finite number spanning all of s, as strtod() reads it (at most 63
 * bytes).  Returns 0 and stores it in *out, or -1 on empty input, trailing
 * junk, overflow, NaN or infinity.
 */
int str_to_double(struct str s, double *out);

/*
 * The value of query parameter name in q ("a=1&b=2", without '?'); not
 * percent-decoded.  A bare "name" gives an empty value; STR_NULL if absent.
 */
struct str str_query_param(struct str q, const char *name);

/*
 * Length of the well-formed UTF-8 sequence at p[0..n) (RFC 3629: no
 * overlongs, surrogates or code points past U+10FFFF): 1 for ASCII, 2..4,
 * or 0 when p does not start one (or n is 0).
 */
size_t str_utf8_len(const unsigned char *p, size_t n);

/* Offset of the first byte of s outside a well-formed UTF-8 sequence, or
 * s.len when all of s is UTF-8. */
size_t str_utf8_invalid(struct str s);

/* Copies s into a newly malloc'd NUL-terminated string; NULL on ENOMEM. */
char *str_dup(struct str s);

/*
 * Copies tmpl into out, replacing each {{name}} found in vars (NULL or
 * NULL-terminated name/value pairs) by its value, which is not expanded
 * again; an unknown {{name}} and lone braces are kept as written.  Returns
 * 0, or -ENOSPC when out is too small (out then holds a truncated,
 * NUL-terminated string).  Rollback hooks' argv and metric sources' queries,
 * URLs and commands are templated with it.
 */
int str_template(const char *tmpl, const char *const *vars, char *out, size_t outlen);

#endif
