/*
 * config_flag.c - segments and feature flags, from YAML or from a JSON body
 * (the admin API's PUT /v1/feature-flags/{key}): one parser for both.
 */
#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

/* --- segments ----------------------------------------------------------------- */

static const char *const op_names[] = {
    [CONFIG_OP_EQ] = "eq",
    [CONFIG_OP_NEQ] = "neq",
    [CONFIG_OP_IN] = "in",
    [CONFIG_OP_NOT_IN] = "not_in",
    [CONFIG_OP_STARTS_WITH] = "starts_with",
    [CONFIG_OP_ENDS_WITH] = "ends_with",
    [CONFIG_OP_CONTAINS] = "contains",
    [CONFIG_OP_MATCHES] = "matches",
    [CONFIG_OP_LT] = "lt",
    [CONFIG_OP_LTE] = "lte",
    [CONFIG_OP_GT] = "gt",
    [CONFIG_OP_GTE] = "gte",
    [CONFIG_OP_SEMVER_LT] = "semver_lt",
    [CONFIG_OP_SEMVER_EQ] = "semver_eq",
    [CONFIG_OP_SEMVER_GT] = "semver_gt",
    [CONFIG_OP_BEFORE] = "before",
    [CONFIG_OP_AFTER] = "after",
};
#define NOPS (sizeof(op_names) / sizeof(op_names[0]))

/* A condition whose op did not parse: its values are not checked further. */
#define OP_INVALID ((enum config_op)NOPS)

static bool cond_op(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_condition *cd = obj;
	const char *t = get_text(c, n, path);

	if (!t)
		return false;
	for (size_t i = 0; i < NOPS; i++) {
		if (strcmp(t, op_names[i]) == 0) {
			cd->op = (enum config_op)i;
			return true;
		}
	}
	cerr(c, n->line, path,
	     "unknown op \"%.40s\" (eq, neq, in, not_in, starts_with, ends_with, contains, "
	     "matches, lt, lte, gt, gte, semver_lt, semver_eq, semver_gt, before, after)",
	     t);
	return false;
}

static const struct field cond_fields[] = {
    FLD_REQ("attr", FK_NAME, struct config_condition, attr),
    FLD_FN_REQ("op", cond_op),
    FLD_REQ("values", FK_STRLIST, struct config_condition, values),
};

static bool is_number(const char *s)
{
	char *end;
	double d;

	if (!*s)
		return false;
	errno = 0;
	d = strtod(s, &end);
	return *end == '\0' && isfinite(d) && !strpbrk(s, "xXnN");
}

/* Each value must make sense for the op. */
static void check_values(struct cctx *c, const struct config_condition *cd, const struct cnode *vn,
                         const char *path)
{
	char sub[PATH_MAX_LEN];

	if (cd->values.n == 0) {
		cerr(c, vn->line, path, "at least one value is required");
		return;
	}
	for (size_t i = 0; i < cd->values.n; i++) {
		const char *v = cd->values.v[i];
		int line = vn->type == CN_SEQ ? vn->items[i]->line : vn->line;
		int64_t ts;

		if (!v)
			continue; /* not a string: get_strlist() reported it */
		if (vn->type == CN_SEQ)
			path_idx(sub, path, i);
		else
			snprintf(sub, sizeof(sub), "%s", path);
		switch (cd->op) {
		case CONFIG_OP_LT:
		case CONFIG_OP_LTE:
		case CONFIG_OP_GT:
		case CONFIG_OP_GTE:
			if (!is_number(v))
				cerr(c, line, sub, "op %s needs a number, got \"%.60s\"",
				     op_names[cd->op], v);
			break;
		case CONFIG_OP_SEMVER_LT:
		case CONFIG_OP_SEMVER_EQ:
		case CONFIG_OP_SEMVER_GT:
			if (!config_valid_semver(v))
				cerr(c, line, sub, "op %s needs a semantic version, got \"%.60s\"",
				     op_names[cd->op], v);
			break;
		case CONFIG_OP_BEFORE:
		case CONFIG_OP_AFTER:
			if (config_parse_rfc3339(v, &ts) != 0)
				cerr(c, line, sub, "op %s needs an RFC 3339 time, got \"%.60s\"",
				     op_names[cd->op], v);
			break;
		case CONFIG_OP_MATCHES: {
			regex_t re;
			int rc = regcomp(&re, v, REG_EXTENDED | REG_NOSUB);

			if (rc != 0) {
				char why[128];

				regerror(rc, &re, why, sizeof(why));
				cerr(c, line, sub, "invalid regular expression: %s", why);
			} else {
				regfree(&re);
			}
			break;
		}
		default:
			break;
		}
	}
}

static bool segment_match(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_segment *seg = obj;
	char sub[PATH_MAX_LEN], vp[PATH_MAX_LEN];

	if (!want_seq(c, n, path))
		return false;
	if (n->n == 0) {
		cerr(c, n->line, path, "at least one condition is required");
		return false;
	}
	seg->conds = cfg_arena_alloc(c->out, n->n * sizeof(*seg->conds));
	if (!seg->conds)
		return false;
	seg->nconds = n->n;
	for (size_t i = 0; i < n->n; i++) {
		struct config_condition *cd = &seg->conds[i];
		const struct cnode *cn = n->items[i];
		uint64_t seen;

		cd->op = OP_INVALID;
		cd->line = cn->line;
		path_idx(sub, path, i);
		if (!walk_map(c, cn, sub, cond_fields, NFIELDS(cond_fields), cd, &seen))
			continue;
		if (cd->op != OP_INVALID && (seen & 4)) {
			path_key(vp, sub, "values");
			check_values(c, cd, cn->items[map_find(cn, "values")], vp);
		}
	}
	return true;
}

static const struct field segment_fields[] = {
    FLD_FN_REQ("match", segment_match),
};

bool parse_segment(struct cctx *c, const char *name, const struct cnode *n, const char *path,
                   struct config_segment *seg)
{
	seg->name = cfg_arena_strdup(c->out, name);
	seg->line = n->line;
	return walk_map(c, n, path, segment_fields, NFIELDS(segment_fields), seg, NULL);
}

/* --- flags -------------------------------------------------------------------------- */

static bool flag_variants(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_flag *f = obj;
	char sub[PATH_MAX_LEN];
	size_t cnt = walk_named(c, n, path);

	if (n->type != CN_MAP)
		return false;
	if (cnt == 0) {
		cerr(c, n->line, path, "at least one variant is required");
		return false;
	}
	f->variants = cfg_arena_alloc(c->out, cnt * sizeof(*f->variants));
	if (!f->variants)
		return false;
	f->nvariants = cnt;
	for (size_t i = 0; i < cnt; i++) {
		struct config_variant *v = &f->variants[i];

		path_key(sub, path, n->keys[i]->text);
		v->name = cfg_arena_strdup(c->out, n->keys[i]->text);
		v->line = n->items[i]->line;
		v->value = cfg_arena_keep_json(c->out, cnode_to_json(c, n->items[i], sub));
	}
	return true;
}

/* {variant: percent, ...}; the variants are checked once they are all known. */
static bool parse_split(struct cctx *c, const struct cnode *n, const char *path,
                        struct config_split *s)
{
	char sub[PATH_MAX_LEN];
	size_t cnt = walk_named(c, n, path);
	uint64_t total = 0;

	if (n->type != CN_MAP)
		return false;
	s->line = n->line;
	s->v = cfg_arena_alloc(c->out, (cnt ? cnt : 1) * sizeof(*s->v));
	if (!s->v)
		return false;
	s->n = cnt;
	for (size_t i = 0; i < cnt; i++) {
		path_key(sub, path, n->keys[i]->text);
		s->v[i].variant = cfg_arena_strdup(c->out, n->keys[i]->text);
		s->v[i].line = n->keys[i]->line;
		if (get_percent(c, n->items[i], sub, &s->v[i].percent))
			total += s->v[i].percent;
	}
	if (total > 100000) {
		cerr(c, n->line, path, "percentages add up to %llu.%03llu, more than 100",
		     (unsigned long long)(total / 1000), (unsigned long long)(total % 1000));
		return false;
	}
	s->total = (uint32_t)total;
	return true;
}

static bool flag_rollout(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	return parse_split(c, n, path, &((struct config_flag *)obj)->rollout);
}

static bool rule_segment(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_flag_rule *r = obj;

	if (!get_name(c, n, path, &r->segment))
		return false;
	if (c->cfg) {
		r->seg = config_segment_find(c->cfg, r->segment);
		if (!r->seg) {
			cerr(c, n->line, path, "segment \"%s\" is not defined", r->segment);
			return false;
		}
	}
	return true;
}

static bool rule_rollout(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	return parse_split(c, n, path, &((struct config_flag_rule *)obj)->rollout);
}

static const struct field rule_fields[] = {
    FLD_FN_REQ("segment", rule_segment),
    FLD("serve", FK_NAME, struct config_flag_rule, serve),
    FLD_FN("rollout", rule_rollout),
};

static bool flag_rules(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_flag *f = obj;
	char sub[PATH_MAX_LEN];

	if (!want_seq(c, n, path))
		return false;
	f->rules = cfg_arena_alloc(c->out, (n->n ? n->n : 1) * sizeof(*f->rules));
	if (!f->rules)
		return false;
	f->nrules = n->n;
	for (size_t i = 0; i < n->n; i++) {
		struct config_flag_rule *r = &f->rules[i];
		uint64_t seen;

		r->line = n->items[i]->line;
		path_idx(sub, path, i);
		if (!walk_map(c, n->items[i], sub, rule_fields, NFIELDS(rule_fields), r, &seen))
			continue;
		if ((seen & 6) == 6)
			cerr(c, r->line, sub, "serve and rollout are mutually exclusive");
		else if (!(seen & 6))
			cerr(c, r->line, sub, "missing required key \"serve\" (or \"rollout\")");
	}
	return true;
}

static const struct field flag_fields[] = {
    FLD("description", FK_STR, struct config_flag, description),
    FLD("enabled", FK_BOOL, struct config_flag, enabled),
    FLD_FN("variants", flag_variants),
    FLD("off_variant", FK_NAME, struct config_flag, off_variant),
    FLD("sticky", FK_NAME, struct config_flag, sticky),
    FLD_FN("rules", flag_rules),
    FLD_FN("rollout", flag_rollout),
    FLD("exclude", FK_STRLIST, struct config_flag, exclude),
    FLD("include", FK_STRLIST, struct config_flag, include),
};

static bool variant_index(const struct config_flag *f, const char *name, size_t *idx)
{
	for (size_t i = 0; name && i < f->nvariants; i++) {
		if (strcmp(f->variants[i].name, name) == 0) {
			*idx = i;
			return true;
		}
	}
	return false;
}

static void check_split(struct cctx *c, const struct config_flag *f, struct config_split *s,
                        const char *path)
{
	char sub[PATH_MAX_LEN];

	for (size_t i = 0; i < s->n; i++) {
		if (!variant_index(f, s->v[i].variant, &s->v[i].index)) {
			path_key(sub, path, s->v[i].variant);
			cerr(c, s->v[i].line, sub, "variant \"%s\" is not defined",
			     s->v[i].variant);
		}
	}
}

static void check_node_lists(struct cctx *c, const struct config_flag *f, const struct cnode *n,
                             const char *path)
{
	char sub[PATH_MAX_LEN];
	long ii = map_find(n, "include");

	for (size_t i = 0; i < f->include.n; i++) {
		for (size_t j = 0; j < f->exclude.n; j++) {
			/* an entry of the wrong type was reported and left NULL */
			if (!f->include.v[i] || !f->exclude.v[j] ||
			    strcmp(f->include.v[i], f->exclude.v[j]) != 0)
				continue;
			const struct cnode *in = n->items[ii];

			path_key(sub, path, "include");
			if (in->type == CN_SEQ) {
				char ip[PATH_MAX_LEN];

				path_idx(ip, sub, i);
				cerr(c, in->items[i]->line, ip, "\"%s\" is also excluded",
				     f->include.v[i]);
			} else {
				cerr(c, in->line, sub, "\"%s\" is also excluded", f->include.v[i]);
			}
		}
	}
}

bool parse_flag(struct cctx *c, const char *name, const struct cnode *n, const char *path,
                struct config_flag *f)
{
	char sub[PATH_MAX_LEN], rp[PATH_MAX_LEN];
	size_t before = config_errors_count(c->errs);

	f->name = cfg_arena_strdup(c->out, name);
	f->line = n->line;
	f->enabled = true;
	f->description = "";
	f->sticky = "targetingKey";
	if (!walk_map(c, n, path, flag_fields, NFIELDS(flag_fields), f, NULL))
		return false;
	if (!f->variants && map_find(n, "variants") < 0) {
		f->variants = cfg_arena_alloc(c->out, 2 * sizeof(*f->variants));
		if (!f->variants)
			return false;
		f->variants[0] =
		    (struct config_variant){"on", cfg_arena_keep_json(c->out, json_true()), 0};
		f->variants[1] =
		    (struct config_variant){"off", cfg_arena_keep_json(c->out, json_false()), 0};
		f->nvariants = 2;
	}
	if (f->variants) {
		path_key(sub, path, "off_variant");
		if (!f->off_variant && variant_index(f, "off", &f->off_index))
			f->off_variant = "off";
		else if (!f->off_variant)
			cerr(c, n->line, path,
			     "missing required key \"off_variant\" (there is no \"off\" variant)");
		else if (!variant_index(f, f->off_variant, &f->off_index))
			cerr(c, key_line(n, "off_variant"), sub, "variant \"%s\" is not defined",
			     f->off_variant);
		for (size_t i = 0; i < f->nrules; i++) {
			struct config_flag_rule *r = &f->rules[i];
			const struct cnode *rn = n->items[map_find(n, "rules")];

			path_key(sub, path, "rules");
			path_idx(rp, sub, i);
			if (r->serve && !variant_index(f, r->serve, &r->serve_index)) {
				path_key(sub, rp, "serve");
				cerr(c, key_line(rn->items[i], "serve"), sub,
				     "variant \"%s\" is not defined", r->serve);
			}
			path_key(sub, rp, "rollout");
			check_split(c, f, &r->rollout, sub);
		}
		path_key(sub, path, "rollout");
		check_split(c, f, &f->rollout, sub);
	}
	check_node_lists(c, f, n, path);
	return config_errors_count(c->errs) == before;
}

/* --- the API's entry point ------------------------------------------------------------- */

struct config_flag *config_flag_from_json(const char *source, const char *name, const json_t *def,
                                          const struct config *cfg, struct config_errors *errs)
{
	struct cfg_arena tmp = {0};
	struct cfg_arena *own = calloc(1, sizeof(*own));
	struct cctx c = {.errs = errs,
	                 .file = source,
	                 .tmp = &tmp,
	                 .out = own,
	                 .cfg = (struct config *)cfg,
	                 .nerr_start = config_errors_count(errs)};
	struct config_flag *f = NULL;
	const struct cnode *n;

	if (!own)
		goto out_nomem;
	f = cfg_arena_alloc(own, sizeof(*f));
	if (!f)
		goto out_nomem;
	f->own = own;
	if (!config_valid_name(name)) {
		cerr(&c, 0, "name", "invalid name \"%.70s\": use 1 to 64 of A-Z a-z 0-9 _ . -",
		     name ? name : "");
		goto out_fail;
	}
	n = cnode_from_json(&c, def);
	if (!n)
		goto out_nomem;
	parse_flag(&c, name, n, "", f);
	if (cctx_failed(&c))
		goto out_fail;
	cfg_arena_release(&tmp);
	return f;

out_nomem:
	cerr(&c, 0, "", "out of memory");
out_fail:
	cfg_arena_release(&tmp);
	if (own) {
		cfg_arena_release(own);
		free(own);
	}
	return NULL;
}

void config_flag_free(struct config_flag *flag)
{
	struct cfg_arena *own;

	if (!flag || !flag->own)
		return;
	own = flag->own;
	cfg_arena_release(own);
	free(own);
}

/* --- segments from JSON (the flag stream, the client library) ------------------------- */

/* The segment and the arena that owns it, freed together. */
struct json_segment {
	struct config_segment seg;
	struct cfg_arena own;
};

struct config_segment *config_segment_from_json(const char *source, const char *name,
                                                const json_t *def, struct config_errors *errs)
{
	struct cfg_arena tmp = {0};
	struct json_segment *js = calloc(1, sizeof(*js));
	struct cctx c = {.errs = errs,
	                 .file = source,
	                 .tmp = &tmp,
	                 .out = js ? &js->own : NULL,
	                 .nerr_start = config_errors_count(errs)};
	const struct cnode *n;

	if (!js)
		goto out_nomem;
	if (!config_valid_name(name)) {
		cerr(&c, 0, "name", "invalid name \"%.70s\": use 1 to 64 of A-Z a-z 0-9 _ . -",
		     name ? name : "");
		goto out_fail;
	}
	n = cnode_from_json(&c, def);
	if (!n)
		goto out_nomem;
	if (!want_map(&c, n, ""))
		goto out_fail;
	parse_segment(&c, name, n, "", &js->seg);
	if (cctx_failed(&c))
		goto out_fail;
	cfg_arena_release(&tmp);
	return &js->seg;

out_nomem:
	cerr(&c, 0, "", "out of memory");
out_fail:
	cfg_arena_release(&tmp);
	if (js) {
		cfg_arena_release(&js->own);
		free(js);
	}
	return NULL;
}

void config_segment_free(struct config_segment *seg)
{
	struct json_segment *js = (struct json_segment *)seg;

	if (!seg)
		return;
	cfg_arena_release(&js->own);
	free(js);
}

const char *config_op_name(enum config_op op)
{
	return (unsigned)op < NOPS ? op_names[op] : NULL;
}
