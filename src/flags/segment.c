#include "flags/segment.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct segment_cond {
	const char *attr;
	enum config_op op;
	struct str *values; /* borrowed bytes, lengths taken once at compile time */
	size_t nvalues;
	double num;   /* numeric ops */
	int64_t t_ms; /* before / after */
	regex_t re;   /* matches */
	int has_re;
};

/*
 * RFC 3339 -> ms since the epoch; -1 on error.  The config's parser, so a
 * time the validator accepted compiles, and a context's value reads alike.
 */
static int parse_rfc3339(struct str s, int64_t *ms)
{
	char buf[64];

	if (s.len == 0 || s.len >= sizeof(buf))
		return -1;
	memcpy(buf, s.p, s.len);
	buf[s.len] = '\0';
	return config_parse_rfc3339_ms(buf, ms);
}

int segment_semver_cmp(struct str a, struct str b)
{
	size_t i = 0, j = 0;

	if (a.len && (a.p[0] == 'v' || a.p[0] == 'V'))
		i = 1;
	if (b.len && (b.p[0] == 'v' || b.p[0] == 'V'))
		j = 1;
	for (int part = 0; part < 3; part++) {
		unsigned long long x = 0, y = 0;

		while (i < a.len && a.p[i] >= '0' && a.p[i] <= '9')
			x = x * 10 + (unsigned)(a.p[i++] - '0');
		while (j < b.len && b.p[j] >= '0' && b.p[j] <= '9')
			y = y * 10 + (unsigned)(b.p[j++] - '0');
		if (x != y)
			return x < y ? -1 : 1;
		if (i < a.len && a.p[i] == '.')
			i++;
		if (j < b.len && b.p[j] == '.')
			j++;
	}
	/* a pre-release ("-rc1") sorts before the release */
	{
		int apre = i < a.len && a.p[i] == '-', bpre = j < b.len && b.p[j] == '-';

		if (apre != bpre)
			return apre ? -1 : 1;
		if (apre) {
			struct str ra = str_make(a.p + i, a.len - i),
			           rb = str_make(b.p + j, b.len - j);
			size_t n = ra.len < rb.len ? ra.len : rb.len;
			int c = memcmp(ra.p, rb.p, n);

			if (c)
				return c < 0 ? -1 : 1;
			return ra.len == rb.len ? 0 : (ra.len < rb.len ? -1 : 1);
		}
	}
	return 0;
}

int segment_compile(struct segment *seg, const struct config_segment *cs, char *err, size_t errlen)
{
	seg->name = cs->name;
	seg->nconds = cs->nconds;
	seg->conds = calloc(cs->nconds ? cs->nconds : 1, sizeof(*seg->conds));
	if (!seg->conds) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < cs->nconds; i++) {
		const struct config_condition *cc = &cs->conds[i];
		struct segment_cond *c = &seg->conds[i];
		struct str v0;

		c->attr = cc->attr;
		c->op = cc->op;
		c->values = calloc(cc->values.n ? cc->values.n : 1, sizeof(*c->values));
		if (!c->values) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		c->nvalues = cc->values.n;
		for (size_t k = 0; k < cc->values.n; k++)
			c->values[k] = str_c(cc->values.v[k]);
		v0 = c->nvalues ? c->values[0] : STR_NULL;
		switch (cc->op) {
		case CONFIG_OP_MATCHES:
			if (regcomp(&c->re, cc->values.v[0], REG_EXTENDED | REG_NOSUB) != 0) {
				snprintf(err, errlen, "segment %s: invalid regex", cs->name);
				goto fail;
			}
			c->has_re = 1;
			break;
		case CONFIG_OP_LT:
		case CONFIG_OP_LTE:
		case CONFIG_OP_GT:
		case CONFIG_OP_GTE:
			if (str_to_double(v0, &c->num)) {
				snprintf(err, errlen, "segment %s: not a number", cs->name);
				goto fail;
			}
			break;
		case CONFIG_OP_BEFORE:
		case CONFIG_OP_AFTER:
			if (parse_rfc3339(v0, &c->t_ms)) {
				snprintf(err, errlen, "segment %s: not an RFC 3339 time", cs->name);
				goto fail;
			}
			break;
		default:
			break;
		}
	}
	return 0;
fail:
	segment_release(seg);
	return -1;
}

void segment_release(struct segment *seg)
{
	for (size_t i = 0; seg->conds && i < seg->nconds; i++) {
		if (seg->conds[i].has_re)
			regfree(&seg->conds[i].re);
		free(seg->conds[i].values);
	}
	free(seg->conds);
	seg->conds = NULL;
	seg->nconds = 0;
}

static int in_list(const struct segment_cond *c, struct str v)
{
	for (size_t i = 0; i < c->nvalues; i++)
		if (str_eq(v, c->values[i]))
			return 1;
	return 0;
}

static int cond_match(const struct segment_cond *c, struct str v)
{
	struct str v0 = c->nvalues ? c->values[0] : STR_NULL;
	double x;
	int64_t t;

	switch (c->op) {
	case CONFIG_OP_EQ:
	case CONFIG_OP_IN:
		return in_list(c, v);
	case CONFIG_OP_NEQ:
	case CONFIG_OP_NOT_IN:
		return !in_list(c, v);
	case CONFIG_OP_STARTS_WITH:
		for (size_t i = 0; i < c->nvalues; i++)
			if (str_has_prefix(v, c->values[i]))
				return 1;
		return 0;
	case CONFIG_OP_ENDS_WITH:
		for (size_t i = 0; i < c->nvalues; i++) {
			struct str s = c->values[i];

			if (v.len >= s.len && memcmp(v.p + v.len - s.len, s.p, s.len) == 0)
				return 1;
		}
		return 0;
	case CONFIG_OP_CONTAINS:
		for (size_t i = 0; i < c->nvalues; i++) {
			struct str s = c->values[i];

			if (s.len == 0 || memmem(v.p, v.len, s.p, s.len))
				return 1;
		}
		return 0;
	case CONFIG_OP_MATCHES: {
		/* REG_STARTEND (glibc, the BSDs): the value is matched in place,
		 * whatever its length, without a NUL or a copy */
		regmatch_t m = {.rm_so = 0, .rm_eo = (regoff_t)v.len};

		return regexec(&c->re, v.p ? v.p : "", 1, &m, REG_STARTEND) == 0;
	}
	case CONFIG_OP_LT:
		return str_to_double(v, &x) == 0 && x < c->num;
	case CONFIG_OP_LTE:
		return str_to_double(v, &x) == 0 && x <= c->num;
	case CONFIG_OP_GT:
		return str_to_double(v, &x) == 0 && x > c->num;
	case CONFIG_OP_GTE:
		return str_to_double(v, &x) == 0 && x >= c->num;
	case CONFIG_OP_SEMVER_LT:
		return segment_semver_cmp(v, v0) < 0;
	case CONFIG_OP_SEMVER_EQ:
		return segment_semver_cmp(v, v0) == 0;
	case CONFIG_OP_SEMVER_GT:
		return segment_semver_cmp(v, v0) > 0;
	case CONFIG_OP_BEFORE:
		return parse_rfc3339(v, &t) == 0 && t < c->t_ms;
	case CONFIG_OP_AFTER:
		return parse_rfc3339(v, &t) == 0 && t > c->t_ms;
	}
	return 0;
}

int segment_match(const struct segment *seg, segment_attr_fn attr, void *ctx)
{
	for (size_t i = 0; i < seg->nconds; i++) {
		struct str v;

		if (!attr(ctx, seg->conds[i].attr, &v))
			return 0;
		if (!cond_match(&seg->conds[i], v))
			return 0;
	}
	return 1;
}
