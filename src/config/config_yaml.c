/*
 * config_yaml.c - YAML text -> document tree (cnode_from_yaml), from
 * libfyaml's event stream, which gives every node its line.  The only file
 * of the module that needs libfyaml; only the loader (config.c) calls it.
 */
#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <libfyaml.h>

#include "config/config_internal.h"
#include "core/str.h"

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
	const char *e, *p, *hint;
	int line = 0, col = 0;
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
	for (const char *q = p; q < e && col < 100000; q++)
		col = col * 10 + (*q - '0');
	e += strlen(tag);
	ml = strcspn(e, "\n");
	b->failed = true;
	/* most YAML slips are a key indented one step too far or too little */
	hint = strstr(e, "indent") || strstr(e, "multiline") || strstr(e, "mapping") ||
	               strstr(e, "block") || strstr(e, "tab")
	           ? "; check the indentation: keys of one mapping start in the same column, "
	             "indent with spaces, not tabs"
	           : "";
	if (col > 0)
		cerr(b->c, line, "", "syntax error at column %d: %.*s%s", col, (int)ml, e, hint);
	else
		cerr(b->c, line, "", "syntax error: %.*s%s", (int)ml, e, hint);
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
		n = cnode_new(b->c, CN_SCALAR, line);
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
			n = cnode_new(b->c, CN_NULL, line);
		}
		break;
	case FYET_SEQUENCE_START:
		anchor = ev->sequence_start.anchor;
		n = cnode_new(b->c, CN_SEQ, line);
		break;
	case FYET_MAPPING_START:
		anchor = ev->mapping_start.anchor;
		n = cnode_new(b->c, CN_MAP, line);
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
