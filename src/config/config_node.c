/*
 * config_node.c - the document tree under the schema: built from jansson
 * values here or from YAML in config_yaml.c, read through typed accessors
 * that report "expected X, got Y" errors, and walked by one table-driven
 * mapping checker.  Nothing here needs libfyaml: libcanary links this file
 * (the flag and segment JSON validators) without the YAML loader.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

/* --- arena ------------------------------------------------------------------ */

#define ARENA_CHUNK (16 * 1024)

/* The bump allocator, set up on first use so that a zeroed cfg_arena is valid. */
static struct arena *mem(struct cfg_arena *a)
{
	if (!a->mem.block_size)
		arena_init(&a->mem, ARENA_CHUNK);
	return &a->mem;
}

void *cfg_arena_alloc(struct cfg_arena *a, size_t n)
{
	return arena_alloc(mem(a), n);
}

char *cfg_arena_strndup(struct cfg_arena *a, const char *s, size_t n)
{
	return arena_strndup(mem(a), s, n);
}

char *cfg_arena_strdup(struct cfg_arena *a, const char *s)
{
	return cfg_arena_strndup(a, s, strlen(s));
}

json_t *cfg_arena_keep_json(struct cfg_arena *a, json_t *v)
{
	if (!v)
		return NULL;
	if (a->njson == a->capjson) {
		size_t cap = a->capjson ? a->capjson * 2 : 16;
		json_t **nv = realloc(a->json, cap * sizeof(*nv));

		if (!nv) {
			json_decref(v);
			return NULL;
		}
		a->json = nv;
		a->capjson = cap;
	}
	a->json[a->njson++] = v;
	return v;
}

void cfg_arena_release(struct cfg_arena *a)
{
	arena_release(&a->mem);
	for (size_t i = 0; i < a->njson; i++)
		json_decref(a->json[i]);
	free(a->json);
	memset(a, 0, sizeof(*a));
}

/* --- errors and paths ----------------------------------------------------------- */

void cerr(struct cctx *c, int line, const char *path, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	config_errors_add(c->errs, c->file, line, path, "%s", msg);
}

void path_key(char *sub, const char *path, const char *key)
{
	if (*path)
		snprintf(sub, PATH_MAX_LEN, "%s.%s", path, key);
	else
		snprintf(sub, PATH_MAX_LEN, "%s", key);
}

void path_idx(char *sub, const char *path, size_t i)
{
	snprintf(sub, PATH_MAX_LEN, "%s[%zu]", path, i);
}

/* --- tree ------------------------------------------------------------------------- */

struct cnode *cnode_new(struct cctx *c, enum cnode_type t, int line)
{
	struct cnode *n = cfg_arena_alloc(c->tmp, sizeof(*n));

	if (n) {
		n->type = t;
		n->line = line;
		n->text = "";
	}
	return n;
}

/* --- JSON <-> tree ------------------------------------------------------------------ */

static struct cnode *json_scalar(struct cctx *c, const char *text, bool quoted)
{
	struct cnode *n = cnode_new(c, CN_SCALAR, 0);

	if (!n)
		return NULL;
	n->quoted = quoted;
	n->json = true;
	n->text = cfg_arena_strdup(c->tmp, text);
	n->len = strlen(text);
	return n->text ? n : NULL;
}

struct cnode *cnode_from_json(struct cctx *c, const json_t *v)
{
	struct cnode *n = NULL;
	char num[64];

	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		const char *key;
		json_t *val;
		size_t i = 0, cnt = json_object_size(v);

		n = cnode_new(c, CN_MAP, 0);
		if (!n)
			return NULL;
		n->json = true;
		n->items = cfg_arena_alloc(c->tmp, (cnt ? cnt : 1) * sizeof(*n->items));
		n->keys = cfg_arena_alloc(c->tmp, (cnt ? cnt : 1) * sizeof(*n->keys));
		if (!n->items || !n->keys)
			return NULL;
		json_object_foreach((json_t *)v, key, val)
		{
			n->keys[i] = json_scalar(c, key, true);
			n->items[i] = cnode_from_json(c, val);
			if (!n->keys[i] || !n->items[i])
				return NULL;
			i++;
		}
		n->n = i;
		return n;
	}
	case JSON_ARRAY: {
		size_t cnt = json_array_size(v);

		n = cnode_new(c, CN_SEQ, 0);
		if (!n)
			return NULL;
		n->json = true;
		n->items = cfg_arena_alloc(c->tmp, (cnt ? cnt : 1) * sizeof(*n->items));
		if (!n->items)
			return NULL;
		for (size_t i = 0; i < cnt; i++) {
			n->items[i] = cnode_from_json(c, json_array_get(v, i));
			if (!n->items[i])
				return NULL;
		}
		n->n = cnt;
		return n;
	}
	case JSON_STRING:
		return json_scalar(c, json_string_value(v), true);
	case JSON_INTEGER:
		snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return json_scalar(c, num, false);
	case JSON_REAL: {
		double d = json_real_value(v);

		/* the shortest text that reads back as the same double: 0.1 stays "0.1" */
		for (int prec = 1; prec <= 17; prec++) {
			snprintf(num, sizeof(num), "%.*g", prec, d);
			if (strtod(num, NULL) == d)
				break;
		}
		return json_scalar(c, num, false);
	}
	case JSON_TRUE:
		return json_scalar(c, "true", false);
	case JSON_FALSE:
		return json_scalar(c, "false", false);
	case JSON_NULL:
		n = cnode_new(c, CN_NULL, 0);
		if (n) {
			n->text = "null";
			n->json = true;
		}
		return n;
	}
	return NULL;
}

/* YAML 1.2 core schema numbers: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static bool yaml_number(const char *s)
{
	bool mant = false;

	if (*s == '-' || *s == '+')
		s++;
	while (isdigit((unsigned char)*s))
		s++, mant = true;
	if (*s == '.') {
		s++;
		while (isdigit((unsigned char)*s))
			s++, mant = true;
	}
	if (!mant)
		return false;
	if (*s == 'e' || *s == 'E') {
		s++;
		if (*s == '-' || *s == '+')
			s++;
		if (!isdigit((unsigned char)*s))
			return false;
		while (isdigit((unsigned char)*s))
			s++;
	}
	return *s == '\0';
}

static bool yaml_bool(const char *s, bool *out)
{
	if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) {
		*out = true;
		return true;
	}
	if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) {
		*out = false;
		return true;
	}
	return false;
}

#define CNODE_JSON_MAX 100000

static const char *scalar_text(struct cctx *c, const struct cnode *n, const char *path,
                               const char *what);

json_t *cnode_to_json(struct cctx *c, const struct cnode *n, const char *path)
{
	char sub[PATH_MAX_LEN];
	json_t *v;
	bool b;

	if (++c->json_nodes > CNODE_JSON_MAX) {
		if (c->json_nodes == CNODE_JSON_MAX + 1)
			cerr(c, n->line, path, "value too large (more than %d nodes)",
			     CNODE_JSON_MAX);
		return NULL;
	}
	switch (n->type) {
	case CN_NULL:
		return json_null();
	case CN_SCALAR: {
		const char *t = scalar_text(c, n, path, "a value");

		if (!t)
			return NULL;
		if (n->quoted)
			return json_string(t);
		if (yaml_bool(t, &b))
			return json_boolean(b);
		if (yaml_number(t)) {
			char *end;
			long long ll;

			errno = 0;
			ll = strtoll(t, &end, 10);
			if (*end == '\0' && errno == 0)
				return json_integer(ll);
			double d = strtod(t, &end);

			if (*end == '\0' && isfinite(d))
				return json_real(d);
		}
		return json_string(t);
	}
	case CN_SEQ:
		v = json_array();
		for (size_t i = 0; v && i < n->n; i++) {
			json_t *item;

			path_idx(sub, path, i);
			item = cnode_to_json(c, n->items[i], sub);
			if (!item || json_array_append_new(v, item) != 0) {
				json_decref(v);
				return NULL;
			}
		}
		return v;
	case CN_MAP:
		v = json_object();
		for (size_t i = 0; v && i < n->n; i++) {
			json_t *item;

			path_key(sub, path, n->keys[i]->text);
			if (json_object_get(v, n->keys[i]->text)) {
				cerr(c, n->keys[i]->line, sub, "duplicate key");
				json_decref(v);
				return NULL;
			}
			item = cnode_to_json(c, n->items[i], sub);
			if (!item || json_object_set_new(v, n->keys[i]->text, item) != 0) {
				json_decref(v);
				return NULL;
			}
		}
		return v;
	}
	return NULL;
}

/* --- accessors ----------------------------------------------------------------------- */

static const char *type_name(const struct cnode *n)
{
	switch (n->type) {
	case CN_NULL:
		return "nothing";
	case CN_SEQ:
		return "a sequence";
	case CN_MAP:
		return "a mapping";
	case CN_SCALAR:
		break;
	}
	if (n->json && !n->quoted)
		return strcmp(n->text, "true") == 0 || strcmp(n->text, "false") == 0 ? "the boolean"
		                                                                     : "the number";
	return n->quoted ? "a string" : "a scalar";
}

static void err_expected(struct cctx *c, const struct cnode *n, const char *path, const char *what,
                         const char *text)
{
	if (n->type == CN_SCALAR && n->json && !n->quoted)
		cerr(c, n->line, path, "expected %s, got %s %.60s", what, type_name(n), n->text);
	else if (n->type == CN_SCALAR && text)
		cerr(c, n->line, path, "expected %s, got %s\"%.60s%s\"", what,
		     n->quoted ? "the string " : "", text, strlen(text) > 60 ? "..." : "");
	else
		cerr(c, n->line, path, "expected %s, got %s", what, type_name(n));
}

bool want_map(struct cctx *c, const struct cnode *n, const char *path)
{
	if (n->type == CN_MAP)
		return true;
	err_expected(c, n, path, "a mapping", NULL);
	return false;
}

bool want_seq(struct cctx *c, const struct cnode *n, const char *path)
{
	if (n->type == CN_SEQ)
		return true;
	err_expected(c, n, path, "a sequence", NULL);
	return false;
}

static bool env_name_char(char ch, bool first)
{
	return ch == '_' || isalpha((unsigned char)ch) || (!first && isdigit((unsigned char)ch));
}

/* Expands ${VAR} and ${VAR:-default}; "$${" is a literal "${". */
static const char *expand_env(struct cctx *c, const struct cnode *n, const char *path)
{
	const char *s = n->text;
	char *out, *o;
	size_t cap;
	bool ok = true;

	if (!strstr(s, "${"))
		return s;
	cap = n->len + 1;
	for (const char *p = s; (p = strstr(p, "${")); p += 2) {
		const char *end = strchr(p, '}');
		const char *val;
		char name[128];
		size_t nl = end ? (size_t)(end - p - 2) : 0;

		if (!end || nl >= sizeof(name))
			continue;
		memcpy(name, p + 2, nl);
		name[nl] = '\0';
		name[strcspn(name, ":")] = '\0';
		val = getenv(name);
		cap += (val ? strlen(val) : 0) + nl;
	}
	out = cfg_arena_alloc(c->tmp, cap);
	if (!out)
		return NULL;
	o = out;
	while (*s) {
		const char *end, *val, *def = NULL;
		char name[128];
		size_t nl, dl = 0;

		if (s[0] == '$' && s[1] == '$' && s[2] == '{') {
			*o++ = '$';
			*o++ = '{';
			s += 3;
			continue;
		}
		if (!(s[0] == '$' && s[1] == '{')) {
			*o++ = *s++;
			continue;
		}
		end = strchr(s + 2, '}');
		if (!end) {
			/* the text itself may be a secret: the path says where */
			cerr(c, n->line, path, "unterminated ${");
			return NULL;
		}
		nl = 0;
		while (env_name_char(s[2 + nl], nl == 0))
			nl++;
		if (s[2 + nl] == ':' && s[3 + nl] == '-') {
			def = s + 4 + nl;
			dl = (size_t)(end - def);
		} else if (s + 2 + nl != end) {
			nl = 0;
		}
		if (nl == 0 || nl >= sizeof(name)) {
			cerr(c, n->line, path, "invalid environment variable reference \"%.*s\"",
			     (int)(end - s + 1), s);
			ok = false;
			s = end + 1;
			continue;
		}
		memcpy(name, s + 2, nl);
		name[nl] = '\0';
		val = getenv(name);
		if (val && !*val && def)
			val = NULL;
		if (val) {
			size_t vl = strlen(val);

			memcpy(o, val, vl);
			o += vl;
		} else if (def) {
			memcpy(o, def, dl);
			o += dl;
		} else {
			cerr(c, n->line, path, "environment variable %s is not set", name);
			ok = false;
		}
		s = end + 1;
	}
	*o = '\0';
	return ok ? out : NULL;
}

static const char *scalar_text(struct cctx *c, const struct cnode *n, const char *path,
                               const char *what)
{
	if (n->type != CN_SCALAR) {
		err_expected(c, n, path, what, NULL);
		return NULL;
	}
	return c->expand_env ? expand_env(c, n, path) : n->text;
}

/* A string: from JSON only a JSON string (5 or true is never coerced to "5"). */
static const char *string_text(struct cctx *c, const struct cnode *n, const char *path,
                               const char *what)
{
	if (n->type == CN_SCALAR && n->json && !n->quoted) {
		err_expected(c, n, path, what, n->text);
		return NULL;
	}
	return scalar_text(c, n, path, what);
}

const char *get_text(struct cctx *c, const struct cnode *n, const char *path)
{
	return string_text(c, n, path, "a string");
}

bool get_str(struct cctx *c, const struct cnode *n, const char *path, const char **out)
{
	const char *t = get_text(c, n, path);

	if (!t)
		return false;
	*out = cfg_arena_strdup(c->out, t);
	return *out != NULL;
}

bool get_name(struct cctx *c, const struct cnode *n, const char *path, const char **out)
{
	const char *t = string_text(c, n, path, "a name");

	if (!t)
		return false;
	if (!config_valid_name(t)) {
		cerr(c, n->line, path, "invalid name \"%.70s\": " CONFIG_NAME_RULE, t);
		return false;
	}
	*out = cfg_arena_strdup(c->out, t);
	return *out != NULL;
}

/* Numbers and booleans must be plain scalars: a quoted "5" is a string. */
static const char *plain_text(struct cctx *c, const struct cnode *n, const char *path,
                              const char *what)
{
	const char *t = scalar_text(c, n, path, what);

	if (t && n->quoted) {
		err_expected(c, n, path, what, t);
		return NULL;
	}
	return t;
}

bool get_bool(struct cctx *c, const struct cnode *n, const char *path, bool *out)
{
	const char *t = plain_text(c, n, path, "true or false");

	if (!t)
		return false;
	if (!yaml_bool(t, out)) {
		err_expected(c, n, path, "true or false", t);
		return false;
	}
	return true;
}

bool get_u32(struct cctx *c, const struct cnode *n, const char *path, uint32_t min, uint32_t max,
             uint32_t *out)
{
	const char *t = plain_text(c, n, path, "an integer");
	char *end;
	unsigned long long v;

	if (!t)
		return false;
	errno = 0;
	v = strtoull(t, &end, 10);
	if (!isdigit((unsigned char)*t) || *end || errno) {
		if (yaml_number(t))
			cerr(c, n->line, path, "must be an integer between %u and %u", min, max);
		else
			err_expected(c, n, path, "an integer", t);
		return false;
	}
	if (v < min || v > max) {
		cerr(c, n->line, path, "must be between %u and %u", min, max);
		return false;
	}
	*out = (uint32_t)v;
	return true;
}

bool get_double(struct cctx *c, const struct cnode *n, const char *path, double *out)
{
	const char *t = plain_text(c, n, path, "a number");
	char *end;
	double d;

	if (!t)
		return false;
	d = strtod(t, &end);
	if (!yaml_number(t) || *end || !isfinite(d)) {
		err_expected(c, n, path, "a number", t);
		return false;
	}
	*out = d;
	return true;
}

bool get_duration(struct cctx *c, const struct cnode *n, const char *path, uint64_t *out)
{
	const char *t = string_text(c, n, path, "a duration");

	if (!t)
		return false;
	if (config_parse_duration(t, out) != 0) {
		err_expected(c, n, path, "a duration like 250ms, 30s, 5m, 24h or 14d", t);
		return false;
	}
	return true;
}

bool get_percent(struct cctx *c, const struct cnode *n, const char *path, uint32_t *out)
{
	const char *t = plain_text(c, n, path, "a percentage");
	double d;
	char *end;

	if (!t)
		return false;
	if (config_parse_percent(t, out) == 0)
		return true;
	d = strtod(t, &end);
	if (!yaml_number(t) || *end)
		err_expected(c, n, path, "a percentage", t);
	else if (d < 0 || d > 100)
		cerr(c, n->line, path, "must be between 0 and 100");
	else
		cerr(c, n->line, path, "at most 3 decimals are allowed (0.001%% steps)");
	return false;
}

bool get_addr(struct cctx *c, const struct cnode *n, const char *path, struct config_addr *out)
{
	const char *t = string_text(c, n, path, "an address host:port");
	const char *why;

	if (!t)
		return false;
	if (config_parse_addr(t, out, &why) != 0) {
		cerr(c, n->line, path, "invalid address \"%.100s\": %s", t, why);
		return false;
	}
	return true;
}

bool get_url(struct cctx *c, const struct cnode *n, const char *path, const char **out)
{
	const char *t = string_text(c, n, path, "a URL");
	char shown[512];

	if (!t)
		return false;
	/* a URL may carry a password: messages and snapshots show it redacted */
	config_url_redact(t, shown, sizeof(shown));
	if (!config_valid_url(t)) {
		err_expected(c, n, path, "an http:// or https:// URL", shown);
		return false;
	}
	cnode_redact_url(c, n, t);
	*out = cfg_arena_strdup(c->out, t);
	return *out != NULL;
}

bool get_strlist(struct cctx *c, const struct cnode *n, const char *path, bool names,
                 struct config_strlist *out)
{
	char sub[PATH_MAX_LEN];
	bool ok = true;

	if (n->type == CN_SCALAR) {
		out->v = cfg_arena_alloc(c->out, sizeof(*out->v));
		if (!out->v)
			return false;
		out->n = 1;
		return names ? get_name(c, n, path, &out->v[0]) : get_str(c, n, path, &out->v[0]);
	}
	if (!want_seq(c, n, path))
		return false;
	out->v = cfg_arena_alloc(c->out, (n->n ? n->n : 1) * sizeof(*out->v));
	if (!out->v)
		return false;
	out->n = n->n;
	for (size_t i = 0; i < n->n; i++) {
		path_idx(sub, path, i);
		if (names)
			ok &= get_name(c, n->items[i], sub, &out->v[i]);
		else
			ok &= get_str(c, n->items[i], sub, &out->v[i]);
	}
	return ok;
}

/* --- walkers ------------------------------------------------------------------------------- */

bool field_later(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	(void)c, (void)n, (void)path, (void)obj;
	return true;
}

long map_find(const struct cnode *n, const char *key)
{
	if (n->type != CN_MAP)
		return -1;
	for (size_t i = 0; i < n->n; i++)
		if (strcmp(n->keys[i]->text, key) == 0)
			return (long)i;
	return -1;
}

int key_line(const struct cnode *n, const char *key)
{
	long i = map_find(n, key);

	return i < 0 ? n->line : n->items[i]->line;
}

/*
 * The keys of one mapping seen so far, so a duplicate is found in O(1) and a
 * mapping of k keys is checked in O(k) (20,000 flags are one mapping): an
 * open-addressing table of key indices, each the key's first occurrence.
 * Small mappings (nearly all) use the inline slots; a larger table is
 * malloc'ed, and when that fails the check falls back to scanning the
 * earlier keys -- slower, same answers.
 */
#define KEYSET_INLINE 64

struct keyset {
	const struct cnode *map;
	uint32_t *slot; /* key index + 1; 0 is empty.  NULL: scan instead */
	size_t mask;
	uint32_t inline_slot[KEYSET_INLINE];
};

static void keyset_init(struct keyset *ks, const struct cnode *map)
{
	size_t cap = KEYSET_INLINE;

	ks->map = map;
	while (cap < 2 * map->n && cap <= SIZE_MAX / 4)
		cap *= 2;
	if (cap == KEYSET_INLINE)
		ks->slot = ks->inline_slot;
	else if (map->n < UINT32_MAX / 2)
		ks->slot = malloc(cap * sizeof(*ks->slot));
	else
		ks->slot = NULL;
	if (ks->slot)
		memset(ks->slot, 0, cap * sizeof(*ks->slot));
	ks->mask = cap - 1;
}

static void keyset_release(struct keyset *ks)
{
	if (ks->slot != ks->inline_slot)
		free(ks->slot);
	ks->slot = NULL;
}

/* FNV-1a over the key text up to its NUL (keys compare with strcmp). */
static size_t key_hash(const char *s)
{
	uint64_t h = 14695981039346656037ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return (size_t)(h ^ (h >> 32));
}

/*
 * Adds key i (keys are added in order); returns the index of an earlier key
 * with the same text, or -1 when i is its first occurrence.
 */
static long keyset_add(struct keyset *ks, size_t i)
{
	const struct cnode *n = ks->map;
	const char *key = n->keys[i]->text;
	size_t h;

	if (!ks->slot) {
		for (size_t j = 0; j < i; j++)
			if (strcmp(n->keys[j]->text, key) == 0)
				return (long)j;
		return -1;
	}
	for (h = key_hash(key) & ks->mask; ks->slot[h]; h = (h + 1) & ks->mask) {
		size_t j = ks->slot[h] - 1;

		if (strcmp(n->keys[j]->text, key) == 0)
			return (long)j;
	}
	ks->slot[h] = (uint32_t)(i + 1);
	return -1;
}

/* Reports key i when an earlier key of the mapping has its text; true when i is a duplicate. */
/* Levenshtein distance of a and b, both at most CLOSE_MAX bytes. */
#define CLOSE_MAX 64
static size_t edit_distance(const char *a, size_t la, const char *b, size_t lb)
{
	size_t row[CLOSE_MAX + 1];

	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);

			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* The allowed key nearest to key when at most 2 edits away (first of a tie), else NULL. */
static const char *closest_key(const char *key, const struct field *fields, size_t nfields)
{
	size_t lk = strlen(key), best = 3;
	const char *near = NULL;

	if (lk > CLOSE_MAX)
		return NULL;
	for (size_t f = 0; f < nfields; f++) {
		size_t lf = strlen(fields[f].key), d;

		if (lf > CLOSE_MAX)
			continue;
		d = edit_distance(key, lk, fields[f].key, lf);
		/* a one-letter key is 1-2 edits from every short key: no guess */
		if (d < best && d < lk) {
			best = d;
			near = fields[f].key;
		}
	}
	return near;
}

static bool dup_key(struct cctx *c, struct keyset *ks, size_t i, const char *sub)
{
	const struct cnode *n = ks->map;
	long j = keyset_add(ks, i);

	if (j < 0)
		return false;
	cerr(c, n->keys[i]->line, sub, "duplicate key (first defined on line %d)",
	     n->keys[j]->line);
	return true;
}

static bool store_field(struct cctx *c, const struct field *f, const struct cnode *v,
                        const char *path, void *obj)
{
	void *p = (char *)obj + f->off;

	switch (f->kind) {
	case FK_STR:
		return get_str(c, v, path, p);
	case FK_NAME:
		return get_name(c, v, path, p);
	case FK_BOOL:
		return get_bool(c, v, path, p);
	case FK_U32:
		return get_u32(c, v, path, (uint32_t)f->min, (uint32_t)f->max, p);
	case FK_NUM: {
		struct config_bound *b = p;

		b->set = get_double(c, v, path, &b->value);
		return b->set;
	}
	case FK_DOUBLE:
		return get_double(c, v, path, p);
	case FK_DURATION:
		return get_duration(c, v, path, p);
	case FK_PERCENT:
		return get_percent(c, v, path, p);
	case FK_SIZE:
	case FK_SIZE32: {
		const char *t = string_text(c, v, path, "a size");
		uint64_t bytes;

		if (!t)
			return false;
		if (config_parse_size(t, &bytes) != 0) {
			err_expected(c, v, path, "a size like 65536, 64KiB or 1MiB", t);
			return false;
		}
		if (bytes < f->min || bytes > f->max) {
			cerr(c, v->line, path, "must be between %llu and %llu bytes",
			     (unsigned long long)f->min, (unsigned long long)f->max);
			return false;
		}
		if (f->kind == FK_SIZE32)
			*(uint32_t *)p = (uint32_t)bytes;
		else
			*(uint64_t *)p = bytes;
		return true;
	}
	case FK_ADDR:
		return get_addr(c, v, path, p);
	case FK_URL:
		return get_url(c, v, path, p);
	case FK_STRLIST:
		return get_strlist(c, v, path, false, p);
	case FK_NAMELIST:
		return get_strlist(c, v, path, true, p);
	case FK_CUSTOM:
		return f->fn(c, v, path, obj);
	}
	return false;
}

bool walk_map(struct cctx *c, const struct cnode *n, const char *path, const struct field *fields,
              size_t nfields, void *obj, uint64_t *seen)
{
	char sub[PATH_MAX_LEN];
	uint64_t mask = 0;
	struct keyset ks;

	if (seen)
		*seen = 0;
	if (!want_map(c, n, path))
		return false;
	keyset_init(&ks, n);
	for (size_t i = 0; i < n->n; i++) {
		const char *key = n->keys[i]->text;
		size_t f;

		path_key(sub, path, key);
		if (dup_key(c, &ks, i, sub))
			continue;
		for (f = 0; f < nfields; f++)
			if (strcmp(fields[f].key, key) == 0)
				break;
		if (f == nfields) {
			const char *near = closest_key(key, fields, nfields);

			if (near)
				cerr(c, n->keys[i]->line, sub, "unknown key (did you mean `%s`?)",
				     near);
			else
				cerr(c, n->keys[i]->line, sub, "unknown key");
			continue;
		}
		mask |= (uint64_t)1 << f;
		store_field(c, &fields[f], n->items[i], sub, obj);
	}
	keyset_release(&ks);
	for (size_t f = 0; f < nfields; f++)
		if (fields[f].required && !(mask & ((uint64_t)1 << f)))
			cerr(c, n->line, path, "missing required key \"%s\"", fields[f].key);
	if (seen)
		*seen = mask;
	return true;
}

size_t walk_named(struct cctx *c, const struct cnode *n, const char *path)
{
	char sub[PATH_MAX_LEN];
	struct keyset ks;

	if (!want_map(c, n, path))
		return 0;
	keyset_init(&ks, n);
	for (size_t i = 0; i < n->n; i++) {
		path_key(sub, path, n->keys[i]->text);
		if (dup_key(c, &ks, i, sub))
			continue;
		if (!config_valid_name(n->keys[i]->text))
			cerr(c, n->keys[i]->line, sub, "invalid name \"%.70s\": " CONFIG_NAME_RULE,
			     n->keys[i]->text);
	}
	keyset_release(&ks);
	return n->n;
}

/* --- redaction of config snapshots ----------------------------------------------------- */

static void redact_add(struct cctx *c, const struct cnode *n, const char *with, const char *secret)
{
	struct cfg_redaction *r;

	if (n && (n->json || n->type != CN_SCALAR || n->end <= n->start))
		return;
	if (!n && !secret)
		return;
	if (c->nredact == c->capredact) {
		size_t cap = c->capredact ? c->capredact * 2 : 8;

		r = cfg_arena_alloc(c->tmp, cap * sizeof(*r));
		if (!r)
			return; /* out of memory: cnode_redacted_source fails too */
		if (c->nredact)
			memcpy(r, c->redact, c->nredact * sizeof(*r));
		c->redact = r;
		c->capredact = cap;
	}
	r = &c->redact[c->nredact++];
	r->start = n ? n->start : 0;
	r->end = n ? n->end : 0;
	r->style = n ? n->style : CNODE_PLAIN;
	r->with = n ? with : NULL; /* no node: only hidden wherever it appears */
	r->secret = secret;
}

void cnode_redact_secret(struct cctx *c, const struct cnode *n, const char *secret)
{
	redact_add(c, n, "\"<redacted>\"", secret ? cfg_arena_strdup(c->tmp, secret) : NULL);
}

/* The password part of a URL's userinfo (or the whole userinfo), or NULL. */
static char *url_password(struct cctx *c, const char *url)
{
	const char *sep = strstr(url, "://"), *auth, *at = NULL, *colon;
	size_t alen;

	if (!sep)
		return NULL;
	auth = sep + 3;
	alen = strcspn(auth, "/?#");
	for (size_t i = alen; i > 0 && !at; i--)
		if (auth[i - 1] == '@')
			at = auth + i - 1;
	if (!at)
		return NULL;
	colon = memchr(auth, ':', (size_t)(at - auth));
	if (colon)
		auth = colon + 1;
	return cfg_arena_strndup(c->tmp, auth, (size_t)(at - auth));
}

void cnode_redact_url(struct cctx *c, const struct cnode *n, const char *url)
{
	char shown[4096], *q, *o;

	if (n->json)
		return;
	/*
	 * The span shows the text as written (n->text, before ${ENV}): an
	 * expansion may hold a secret config_url_redact cannot see (a webhook's
	 * path).  A password only the expansion holds is hidden below anyway.
	 */
	if (!config_url_redact(n->text, shown, sizeof(shown))) {
		redact_add(c, NULL, NULL, url_password(c, url));
		return;
	}
	/* as a YAML double-quoted scalar */
	q = cfg_arena_alloc(c->tmp, 2 * strlen(shown) + 3);
	if (!q)
		return;
	o = q;
	*o++ = '"';
	for (const char *p = shown; *p; p++) {
		if (*p == '"' || *p == '\\')
			*o++ = '\\';
		*o++ = *p;
	}
	*o++ = '"';
	*o = '\0';
	redact_add(c, n, q, url_password(c, url));
}

static int redaction_cmp(const void *a, const void *b)
{
	const struct cfg_redaction *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* Replaces every occurrence of secret in buf (of *len bytes, cap bytes) with "<redacted>". */
static char *hide_everywhere(char *buf, size_t *len, const char *secret)
{
	static const char hidden[] = "<redacted>";
	size_t sl = strlen(secret), hl = sizeof(hidden) - 1, o = 0, cnt = 0;
	char *out;

	for (const char *p = buf; (p = memmem(p, *len - (size_t)(p - buf), secret, sl)); p += sl)
		cnt++;
	if (cnt == 0)
		return buf;
	out = malloc(*len + cnt * hl + 1);
	if (!out) {
		free(buf);
		return NULL;
	}
	for (size_t i = 0; i < *len;) {
		if (i + sl <= *len && memcmp(buf + i, secret, sl) == 0) {
			memcpy(out + o, hidden, hl);
			o += hl;
			i += sl;
		} else {
			out[o++] = buf[i++];
		}
	}
	out[o] = '\0';
	free(buf);
	*len = o;
	return out;
}

char *cnode_redacted_source(struct cctx *c, const char *src, size_t len, size_t *outlen)
{
	size_t cap = len + 1, o = 0, at = 0;
	char *out;

	/* an alias repeats no text: spans are unique, but may come in any order */
	if (c->nredact) /* qsort(NULL, 0, ...) is undefined */
		qsort(c->redact, c->nredact, sizeof(*c->redact), redaction_cmp);
	for (size_t i = 0; i < c->nredact; i++)
		cap += c->redact[i].with
		           ? strlen(c->redact[i].with) + c->redact[i].end - c->redact[i].start + 1
		           : 0;
	out = malloc(cap);
	if (!out)
		return NULL;
	for (size_t i = 0; i < c->nredact; i++) {
		struct cfg_redaction r = c->redact[i];
		size_t wl, indent = 0, tail = 0;

		if (!r.with || r.start < at || r.end > len)
			continue; /* no span, or the same node reached twice (an alias) */
		wl = strlen(r.with);
		if (r.style == CNODE_QUOTED && r.start > 0 && r.end < len &&
		    (src[r.start - 1] == '"' || src[r.start - 1] == '\'') &&
		    src[r.end] == src[r.start - 1]) {
			r.start--; /* the span holds what is inside the quotes */
			r.end++;
		}
		memcpy(out + o, src + at, r.start - at);
		o += r.start - at;
		if (r.style == CNODE_BLOCK) {
			/* lines after a | or > header: one line at the same indentation */
			while (r.start + indent < r.end && src[r.start + indent] == ' ')
				indent++;
			while (tail < r.end - r.start && src[r.end - tail - 1] == ' ')
				tail++;
			memcpy(out + o, src + r.start, indent);
			o += indent;
			memcpy(out + o, r.with + 1, wl - 2); /* without its quotes */
			o += wl - 2;
			out[o++] = '\n';
			memcpy(out + o, src + r.end - tail, tail);
			o += tail;
		} else {
			memcpy(out + o, r.with, wl);
			o += wl;
		}
		at = r.end;
	}
	memcpy(out + o, src + at, len - at);
	o += len - at;
	out[o] = '\0';
	for (size_t i = 0; out && i < c->nredact; i++)
		if (c->redact[i].secret && strlen(c->redact[i].secret) >= 4)
			out = hide_everywhere(out, &o, c->redact[i].secret);
	if (out)
		*outlen = o;
	return out;
}
