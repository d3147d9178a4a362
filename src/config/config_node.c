/*
 * config_node.c - the document tree under the schema: built from libfyaml's
 * event stream (which gives every node its line) or from jansson values,
 * read through typed accessors that report "expected X, got Y" errors, and
 * walked by one table-driven mapping checker.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libfyaml.h>

#include "config/config_internal.h"
#include "core/str.h"

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

/* --- YAML -> tree ------------------------------------------------------------------ */

struct anchor {
	const char *name;
	struct cnode *node;
};

/* Collections nest at most this deep (canaryd's own schema needs ~8); deeper
 * input would recurse without bound (found by fuzz_config_yaml). */
#define YAML_MAX_DEPTH 64

struct ybuild {
	struct cctx *c;
	struct fy_parser *fyp;
	int last_line;
	unsigned depth; /* collections open around the current node */
	bool failed;
	struct anchor *anchors;
	size_t nanchors, capanchors;
};

static struct cnode *node_new(struct cctx *c, enum cnode_type t, int line)
{
	struct cnode *n = cfg_arena_alloc(c->tmp, sizeof(*n));

	if (n) {
		n->type = t;
		n->line = line;
		n->text = "";
	}
	return n;
}

static int event_line(struct ybuild *b, struct fy_event *ev)
{
	const struct fy_mark *m = fy_event_start_mark(ev);

	if (m)
		b->last_line = m->line + 1;
	return b->last_line;
}

/* Turns the "<source>:L:C: error: message" lines of libfyaml's diagnostics into errors. */
static void diag_output(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
	struct ybuild *b = user;
	const char *tag = ": error: ";
	char text[512];
	const char *e, *p;
	int line = 0;
	size_t ml;

	(void)diag;
	if (len >= sizeof(text))
		len = sizeof(text) - 1;
	memcpy(text, buf, len);
	text[len] = '\0';
	e = strstr(text, tag);
	if (!e)
		return;
	/* back over ":C" then ":L" */
	p = e;
	while (p > text && isdigit((unsigned char)p[-1]))
		p--;
	if (p > text && p[-1] == ':') {
		const char *q = p - 1;

		while (q > text && isdigit((unsigned char)q[-1]))
			q--;
		/* a line past INT_MAX / 10 is no line we read (found by fuzz_config_yaml) */
		for (; q < p - 1 && line < INT_MAX / 10; q++)
			line = line * 10 + (*q - '0');
		if (q < p - 1)
			line = 0;
	}
	e += strlen(tag);
	ml = strcspn(e, "\n");
	b->failed = true;
	cerr(b->c, line, "", "syntax error: %.*s", (int)ml, e);
}

static struct cnode *anchor_find(struct ybuild *b, struct fy_token *t)
{
	size_t len;
	const char *name = fy_token_get_text(t, &len);

	for (size_t i = b->nanchors; i > 0; i--) {
		const char *an = b->anchors[i - 1].name;

		if (strlen(an) == len && memcmp(an, name, len) == 0)
			return b->anchors[i - 1].node;
	}
	return NULL;
}

/* Records an anchor; a later definition of the same name shadows it. */
static void anchor_add(struct ybuild *b, const char *name, struct cnode *n)
{
	if (!name || !n)
		return;
	if (b->nanchors == b->capanchors) {
		size_t cap = b->capanchors ? b->capanchors * 2 : 8;
		struct anchor *v = realloc(b->anchors, cap * sizeof(*v));

		if (!v)
			return;
		b->anchors = v;
		b->capanchors = cap;
	}
	b->anchors[b->nanchors].name = name;
	b->anchors[b->nanchors++].node = n;
}

static bool plain_null(const char *t, size_t len)
{
	return len == 0 || (len == 1 && t[0] == '~') ||
	       (len == 4 && (memcmp(t, "null", 4) == 0 || memcmp(t, "Null", 4) == 0 ||
	                     memcmp(t, "NULL", 4) == 0));
}

static struct cnode *yb_node(struct ybuild *b, struct fy_event *ev);

/* Reads children until the matching end event; pairs for a mapping. */
static struct cnode *yb_collection(struct ybuild *b, struct cnode *n, enum fy_event_type end)
{
	struct cnode **items = NULL, **keys = NULL;
	size_t cnt = 0, cap = 0;
	bool map = n->type == CN_MAP;

	for (;;) {
		struct fy_event *ev = fy_parser_parse(b->fyp);
		struct cnode *k = NULL, *v;

		if (!ev)
			goto out_fail;
		if (ev->type == end) {
			fy_parser_event_free(b->fyp, ev);
			break;
		}
		if (map) {
			k = yb_node(b, ev);
			if (!k)
				goto out_fail;
			ev = fy_parser_parse(b->fyp);
			if (!ev)
				goto out_fail;
		}
		v = yb_node(b, ev);
		if (!v)
			goto out_fail;
		if (cnt == cap) {
			struct cnode **ni, **nk;

			cap = cap ? cap * 2 : 8;
			ni = realloc(items, cap * sizeof(*ni));
			if (ni)
				items = ni;
			nk = realloc(keys, cap * sizeof(*nk));
			if (nk)
				keys = nk;
			if (!ni || !nk)
				goto out_fail;
		}
		/* A block collection is reported at its key's line, not at its first child's. */
		if (k && (v->type == CN_MAP || v->type == CN_SEQ) && v->line > k->line)
			v->line = k->line;
		items[cnt] = v;
		keys[cnt] = k;
		cnt++;
	}
	n->n = cnt;
	n->items = cfg_arena_alloc(b->c->tmp, (cnt ? cnt : 1) * sizeof(*items));
	if (!n->items)
		goto out_fail;
	if (cnt)
		memcpy(n->items, items, cnt * sizeof(*items));
	if (map) {
		n->keys = cfg_arena_alloc(b->c->tmp, (cnt ? cnt : 1) * sizeof(*keys));
		if (!n->keys)
			goto out_fail;
		if (cnt)
			memcpy(n->keys, keys, cnt * sizeof(*keys));
		for (size_t i = 0; i < cnt; i++) {
			if (n->keys[i]->type != CN_SCALAR && n->keys[i]->type != CN_NULL) {
				cerr(b->c, n->keys[i]->line, "", "mapping keys must be scalars");
				b->failed = true;
			}
		}
	}
	free(items);
	free(keys);
	return n;

out_fail:
	free(items);
	free(keys);
	return NULL;
}

/* The scalar's byte span in the source, for redacting it from config snapshots. */
static void scalar_span(struct fy_token *tok, struct cnode *n)
{
	const struct fy_mark *a = fy_token_start_mark(tok), *z = fy_token_end_mark(tok);

	enum fy_scalar_style st = fy_token_scalar_style(tok);

	if (a && z && z->input_pos > a->input_pos) {
		n->start = a->input_pos;
		n->end = z->input_pos;
		n->style = st == FYSS_LITERAL || st == FYSS_FOLDED ? CNODE_BLOCK
		           : st == FYSS_PLAIN                      ? CNODE_PLAIN
		                                                   : CNODE_QUOTED;
	}
}

/* Builds the node that starts with ev (which it frees). */
static struct cnode *yb_node(struct ybuild *b, struct fy_event *ev)
{
	int line = event_line(b, ev);
	struct cnode *n = NULL;
	struct fy_token *anchor = NULL;
	char *anchor_name = NULL;
	size_t len;
	const char *t;

	switch (ev->type) {
	case FYET_SCALAR:
		anchor = ev->scalar.anchor;
		t = fy_token_get_text(ev->scalar.value, &len);
		if (!t)
			t = "", len = 0;
		n = node_new(b->c, CN_SCALAR, line);
		if (!n)
			break;
		n->quoted = fy_token_scalar_style(ev->scalar.value) != FYSS_PLAIN;
		if (!n->quoted && plain_null(t, len))
			n->type = CN_NULL;
		n->text = cfg_arena_strndup(b->c->tmp, t, len);
		n->len = len;
		scalar_span(ev->scalar.value, n);
		if (!n->text)
			n = NULL;
		break;
	case FYET_ALIAS:
		n = anchor_find(b, ev->alias.anchor);
		if (!n) {
			t = fy_token_get_text(ev->alias.anchor, &len);
			cerr(b->c, line, "", "unknown alias *%.*s", (int)len, t);
			b->failed = true;
			n = node_new(b->c, CN_NULL, line);
		}
		break;
	case FYET_SEQUENCE_START:
		anchor = ev->sequence_start.anchor;
		n = node_new(b->c, CN_SEQ, line);
		break;
	case FYET_MAPPING_START:
		anchor = ev->mapping_start.anchor;
		n = node_new(b->c, CN_MAP, line);
		break;
	default:
		break;
	}
	/* The anchor token belongs to the event: copy its name before freeing it. */
	if (anchor) {
		t = fy_token_get_text(anchor, &len);
		anchor_name = cfg_arena_strndup(b->c->tmp, t ? t : "", t ? len : 0);
	}
	if (n && (ev->type == FYET_SEQUENCE_START || ev->type == FYET_MAPPING_START)) {
		enum fy_event_type end =
		    ev->type == FYET_MAPPING_START ? FYET_MAPPING_END : FYET_SEQUENCE_END;

		fy_parser_event_free(b->fyp, ev);
		if (b->depth >= YAML_MAX_DEPTH) {
			cerr(b->c, line, "", "collections nested deeper than %d levels",
			     YAML_MAX_DEPTH);
			b->failed = true;
			return NULL;
		}
		/* registered after the children: an alias cannot refer to its own parent */
		b->depth++;
		n = yb_collection(b, n, end);
		b->depth--;
		anchor_add(b, anchor_name, n);
		return n;
	}
	anchor_add(b, anchor_name, n);
	fy_parser_event_free(b->fyp, ev);
	return n;
}

struct cnode *cnode_from_yaml(struct cctx *c, const char *yaml, size_t len)
{
	struct ybuild b = {.c = c, .last_line = 1};
	struct fy_diag_cfg dc;
	struct fy_diag *diag;
	struct fy_parse_cfg pc = {0};
	struct fy_event *ev;
	struct cnode *root = NULL;
	int docs = 0;

	{
		/*
		 * YAML is Unicode text: refuse other bytes before libfyaml sees
		 * them (0.8's directive scanner loops forever on a `%` line with
		 * 0xFF bytes, found by fuzz_config_yaml).
		 */
		size_t bad = str_utf8_invalid(str_make(yaml, len));

		if (bad < len) {
			int line = 1;
			size_t col = 1;

			for (size_t i = 0; i < bad; i++) {
				col++;
				if (yaml[i] == '\n') {
					line++;
					col = 1;
				}
			}
			cerr(c, line, "", "not UTF-8: byte 0x%02X at column %zu",
			     (unsigned char)yaml[bad], col);
			return NULL;
		}
	}
	fy_diag_cfg_default(&dc);
	dc.fp = NULL;
	dc.output_fn = diag_output;
	dc.user = &b;
	dc.colorize = false;
	dc.level = FYET_ERROR;
	diag = fy_diag_create(&dc);
	if (!diag)
		goto out_nomem;
	pc.flags = FYPCF_QUIET | FYPCF_DEFAULT_VERSION_1_2 | FYPCF_JSON_NONE;
	pc.diag = diag;
	b.fyp = fy_parser_create(&pc);
	if (!b.fyp)
		goto out_diag;
	if (fy_parser_set_string(b.fyp, yaml, len) != 0)
		goto out_parser;
	while ((ev = fy_parser_parse(b.fyp)) != NULL) {
		int line = event_line(&b, ev);

		switch (ev->type) {
		case FYET_STREAM_START:
		case FYET_STREAM_END:
		case FYET_DOCUMENT_START:
		case FYET_DOCUMENT_END:
			if (ev->type == FYET_DOCUMENT_START && ++docs == 2) {
				cerr(c, line, "", "only one YAML document is allowed");
				b.failed = true;
			}
			fy_parser_event_free(b.fyp, ev);
			break;
		default: {
			struct cnode *n = yb_node(&b, ev);

			if (!n) {
				b.failed = true;
				goto out_stop;
			}
			if (!root)
				root = n;
			break;
		}
		}
	}
out_stop:
	if (fy_parser_get_stream_error(b.fyp) && !cctx_failed(c))
		cerr(c, b.last_line, "", "syntax error");
	if (fy_parser_get_stream_error(b.fyp))
		b.failed = true;
	if (!b.failed && !root) {
		cerr(c, 0, "", "the configuration is empty");
		b.failed = true;
	}
out_parser:
	fy_parser_destroy(b.fyp);
out_diag:
	fy_diag_destroy(diag);
	free(b.anchors);
	return b.failed ? NULL : root;

out_nomem:
	cerr(c, 0, "", "out of memory");
	return NULL;
}

/* --- JSON <-> tree ------------------------------------------------------------------ */

static struct cnode *json_scalar(struct cctx *c, const char *text, bool quoted)
{
	struct cnode *n = node_new(c, CN_SCALAR, 0);

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

		n = node_new(c, CN_MAP, 0);
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

		n = node_new(c, CN_SEQ, 0);
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
		n = node_new(c, CN_NULL, 0);
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

/* Reports a key seen earlier in the same mapping; true when i is a duplicate. */
static bool dup_key(struct cctx *c, const struct cnode *n, size_t i, const char *sub)
{
	for (size_t j = 0; j < i; j++) {
		if (strcmp(n->keys[j]->text, n->keys[i]->text) == 0) {
			cerr(c, n->keys[i]->line, sub, "duplicate key (first defined on line %d)",
			     n->keys[j]->line);
			return true;
		}
	}
	return false;
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

	if (seen)
		*seen = 0;
	if (!want_map(c, n, path))
		return false;
	for (size_t i = 0; i < n->n; i++) {
		const char *key = n->keys[i]->text;
		size_t f;

		path_key(sub, path, key);
		if (dup_key(c, n, i, sub))
			continue;
		for (f = 0; f < nfields; f++)
			if (strcmp(fields[f].key, key) == 0)
				break;
		if (f == nfields) {
			cerr(c, n->keys[i]->line, sub, "unknown key");
			continue;
		}
		mask |= (uint64_t)1 << f;
		store_field(c, &fields[f], n->items[i], sub, obj);
	}
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

	if (!want_map(c, n, path))
		return 0;
	for (size_t i = 0; i < n->n; i++) {
		path_key(sub, path, n->keys[i]->text);
		if (dup_key(c, n, i, sub))
			continue;
		if (!config_valid_name(n->keys[i]->text))
			cerr(c, n->keys[i]->line, sub, "invalid name \"%.70s\": " CONFIG_NAME_RULE,
			     n->keys[i]->text);
	}
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
