#include "core/str.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

struct str str_trim(struct str s)
{
	while (s.len && (s.p[0] == ' ' || s.p[0] == '\t')) {
		s.p++;
		s.len--;
	}
	while (s.len && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t'))
		s.len--;
	return s;
}

int str_to_u64(struct str s, unsigned long long *out)
{
	unsigned long long v = 0;
	size_t i;

	if (s.len == 0)
		return -1;
	for (i = 0; i < s.len; i++) {
		unsigned d;

		if (s.p[i] < '0' || s.p[i] > '9')
			return -1;
		d = (unsigned)(s.p[i] - '0');
		if (v > (~0ULL - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int str_to_double(struct str s, double *out)
{
	char buf[64], *end;

	if (s.len == 0 || s.len >= sizeof(buf))
		return -1;
	memcpy(buf, s.p, s.len);
	buf[s.len] = '\0';
	errno = 0;
	*out = strtod(buf, &end);
	if (*end || errno || !isfinite(*out))
		return -1;
	return 0;
}

char *str_dup(struct str s)
{
	char *p = malloc(s.len + 1);

	if (!p)
		return NULL;
	if (s.len)
		memcpy(p, s.p, s.len);
	p[s.len] = '\0';
	return p;
}

struct str str_query_param(struct str q, const char *name)
{
	size_t nl = strlen(name), i = 0;

	while (i < q.len) {
		size_t j = i;

		while (j < q.len && q.p[j] != '&')
			j++;
		if (j - i > nl && memcmp(q.p + i, name, nl) == 0 && q.p[i + nl] == '=')
			return str_make(q.p + i + nl + 1, j - i - nl - 1);
		if (j - i == nl && memcmp(q.p + i, name, nl) == 0)
			return str_make(q.p + j, 0);
		i = j + 1;
	}
	return STR_NULL;
}

int str_template(const char *tmpl, const char *const *vars, char *out, size_t outlen)
{
	size_t o = 0;
	int rc = 0;

	if (!outlen)
		return -ENOSPC;
	for (const char *p = tmpl; *p;) {
		const char *val = NULL, *end;
		size_t n;

		if (p[0] == '{' && p[1] == '{' && (end = strstr(p + 2, "}}")) != NULL) {
			size_t klen = (size_t)(end - p - 2);

			for (size_t i = 0; vars && vars[i] && vars[i + 1]; i += 2)
				if (strlen(vars[i]) == klen && memcmp(vars[i], p + 2, klen) == 0)
					val = vars[i + 1];
			if (val) {
				n = strlen(val);
				if (o + n >= outlen) {
					n = outlen - 1 - o;
					rc = -ENOSPC;
				}
				memcpy(out + o, val, n);
				o += n;
				p = end + 2;
				if (rc)
					break;
				continue;
			}
		}
		if (o + 1 >= outlen) {
			rc = -ENOSPC;
			break;
		}
		out[o++] = *p++;
	}
	out[o] = '\0';
	return rc;
}

size_t str_utf8_len(const unsigned char *p, size_t n)
{
	size_t len;
	unsigned char lo = 0x80, hi = 0xBF;

	if (!n)
		return 0;
	if (p[0] < 0x80)
		return 1;
	len = p[0] >= 0xF0 ? 4 : p[0] >= 0xE0 ? 3 : 2;
	if (p[0] < 0xC2 || p[0] > 0xF4 || n < len)
		return 0;
	if (p[0] == 0xE0)
		lo = 0xA0;
	else if (p[0] == 0xED)
		hi = 0x9F;
	else if (p[0] == 0xF0)
		lo = 0x90;
	else if (p[0] == 0xF4)
		hi = 0x8F;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xBF)
			return 0;
	return len;
}

size_t str_utf8_invalid(struct str s)
{
	const unsigned char *p = (const unsigned char *)s.p;
	size_t i = 0;

	while (i < s.len) {
		size_t u = str_utf8_len(p + i, s.len - i);

		if (!u)
			return i;
		i += u;
	}
	return s.len;
}
