/*
 * flag.c - compiles config flags into an immutable flagset and evaluates
 * them (docs/flags.md).  Everything that can be decided ahead of time is
 * decided in flagset_build(), so flag_eval() is a few comparisons, the
 * segment matches and at most one SPEC 2 bucket.
 */
#include "flags/flag.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/bucket.h"

/* Open-addressing hash set of strings: flag keys, exclude/include lists. */
struct strset {
	uint32_t n;
	uint32_t mask;   /* slots - 1; no slots when n == 0 */
	uint32_t *slots; /* index into keys + 1; 0 = empty */
	const struct str *keys;
};

/* Buckets [upto[i-1], upto[i]) get variant[i]; buckets past the last get off. */
struct flag_split {
	uint32_t n;
	const uint32_t *upto;
	const uint32_t *variant;
	int32_t uniform; /* the variant of every bucket (so no key is needed), or -1 */
};

struct flag_rule {
	const struct segment *seg;
	int32_t serve; /* variant index, or -1 for the split */
	struct flag_split split;
};

struct flag_variant {
	const char *name;
	json_t *value; /* owned: a deep copy, never touched after the build */
	const char *json;
	size_t json_len;
};

struct flag {
	const char *key;
	size_t keylen;
	const char *sticky;
	const char *msg_key_missing;
	bool enabled;
	bool has_rollout;
	bool is_static; /* no rules, rollout or lists: the off variant is all it can give */
	bool has_lists;
	uint32_t off;
	uint32_t on; /* what `include` serves: the first non-off variant, else off */
	struct flag_variant *variants;
	uint32_t nvariants;
	struct flag_rule *rules;
	uint32_t nrules;
	struct flag_split rollout;
	struct strset lists; /* exclude entries, then include entries */
	uint32_t nexclude;   /* lists index < nexclude: excluded */
};

struct flagset {
	struct arena arena;
	struct flag *flags;
	size_t nflags;
	struct strset index;
	struct segment *segs;
	size_t nsegs;         /* compiled ones (to release) */
	struct strset segidx; /* segment name -> segs[] */
};

/* ------------------------------------------------------------------------ */
/* Hash sets                                                                  */

static inline uint32_t str_hash(const char *p, size_t len)
{
	return murmur3_x86_32(p, len, 0x9e3779b9u);
}

static int strset_find(const struct strset *s, const char *p, size_t len)
{
	uint32_t i;

	if (s->n == 0)
		return -1;
	i = str_hash(p, len) & s->mask;
	for (;;) {
		uint32_t v = s->slots[i];
		const struct str *k;

		if (v == 0)
			return -1;
		k = &s->keys[v - 1];
		if (k->len == len && (len == 0 || memcmp(k->p, p, len) == 0))
			return (int)(v - 1);
		i = (i + 1) & s->mask;
	}
}

/*
 * Indexes keys[0..*n), which must outlive the set.  With dedupe, repeated keys
 * are dropped (keys is compacted and *n updated); without, a repeat stops the
 * build and returns 1 with its index in *dup (the set is then unusable).
 * Returns 0, 1 or -ENOMEM.
 */
static int strset_build(struct strset *s, struct arena *a, struct str *keys, size_t *n, bool dedupe,
                        size_t *dup)
{
	uint32_t cap = 4;
	size_t m = 0;

	memset(s, 0, sizeof(*s));
	if (*n == 0)
		return 0;
	if (*n > UINT32_MAX / 4)
		return -ENOMEM;
	while (cap < 2 * *n)
		cap *= 2;
	s->slots = arena_alloc(a, cap * sizeof(*s->slots));
	if (!s->slots)
		return -ENOMEM;
	s->mask = cap - 1;
	s->keys = keys;
	for (size_t j = 0; j < *n; j++) {
		uint32_t i;

		if (strset_find(s, keys[j].p, keys[j].len) >= 0) {
			if (dedupe)
				continue;
			*dup = j;
			return 1;
		}
		keys[m] = keys[j];
		i = str_hash(keys[m].p, keys[m].len) & s->mask;
		while (s->slots[i])
			i = (i + 1) & s->mask;
		s->slots[i] = (uint32_t)m + 1;
		s->n++;
		m++;
	}
	*n = m;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Building                                                                   */

/* A copy of a config segment whose strings live in the set's arena. */
static int copy_segment(struct arena *a, struct config_segment *dst,
                        const struct config_segment *src)
{
	dst->name = arena_strdup(a, src->name ? src->name : "");
	dst->nconds = src->nconds;
	dst->conds = arena_alloc(a, (src->nconds ? src->nconds : 1) * sizeof(*dst->conds));
	if (!dst->name || !dst->conds)
		return -ENOMEM;
	for (size_t i = 0; i < src->nconds; i++) {
		const struct config_condition *sc = &src->conds[i];
		struct config_condition *dc = &dst->conds[i];

		dc->op = sc->op;
		dc->line = sc->line;
		dc->attr = arena_strdup(a, sc->attr ? sc->attr : "");
		dc->values.n = sc->values.n;
		dc->values.v = arena_alloc(a, (sc->values.n ? sc->values.n : 1) * sizeof(char *));
		if (!dc->attr || !dc->values.v)
			return -ENOMEM;
		for (size_t j = 0; j < sc->values.n; j++) {
			dc->values.v[j] = arena_strdup(a, sc->values.v[j] ? sc->values.v[j] : "");
			if (!dc->values.v[j])
				return -ENOMEM;
		}
	}
	return 0;
}

static int build_segments(struct flagset *set, const struct config_segment *segs, size_t nsegs,
                          char *err, size_t errlen)
{
	struct str *names;
	size_t dup, n;
	int rc;

	set->segs = arena_alloc(&set->arena, (nsegs ? nsegs : 1) * sizeof(*set->segs));
	names = arena_alloc(&set->arena, (nsegs ? nsegs : 1) * sizeof(*names));
	if (!set->segs || !names)
		goto out_nomem;
	for (size_t i = 0; i < nsegs; i++) {
		struct config_segment *copy = arena_alloc(&set->arena, sizeof(*copy));

		if (!copy || copy_segment(&set->arena, copy, &segs[i]) != 0)
			goto out_nomem;
		if (segment_compile(&set->segs[i], copy, err, errlen) != 0)
			return -1;
		set->nsegs++;
		names[i] = str_c(copy->name);
	}
	n = nsegs;
	rc = strset_build(&set->segidx, &set->arena, names, &n, false, &dup);
	if (rc < 0)
		goto out_nomem;
	if (rc > 0) {
		snprintf(err, errlen, "segment \"%s\" is defined twice", names[dup].p);
		return -1;
	}
	return 0;
out_nomem:
	snprintf(err, errlen, "out of memory");
	return -1;
}

static int variant_find(const struct config_flag *cf, const char *name)
{
	for (size_t i = 0; name && i < cf->nvariants; i++)
		if (cf->variants[i].name && strcmp(cf->variants[i].name, name) == 0)
			return (int)i;
	return -1;
}

char *flag_json_text(const json_t *v)
{
	const size_t base = JSON_ENCODE_ANY | JSON_COMPACT;
	char *s = json_dumps(v, base | JSON_REAL_PRECISION(15));
	json_t *back = s ? json_loads(s, JSON_DECODE_ANY, NULL) : NULL;

	if (s && (!back || !json_equal(back, (json_t *)v))) {
		free(s);
		s = json_dumps(v, base);
	}
	json_decref(back);
	return s;
}

/* The value's flag_json_text(), copied into the set's arena. */
static int render_value(struct arena *a, const json_t *v, const char **out, size_t *len)
{
	char *s = flag_json_text(v);

	if (!s)
		return -ENOMEM;
	*len = strlen(s);
	*out = arena_strndup(a, s, *len);
	free(s);
	return *out ? 0 : -ENOMEM;
}

static int build_variants(struct flagset *set, struct flag *f, const struct config_flag *cf,
                          char *err, size_t errlen)
{
	int off;

	if (cf->nvariants == 0 || cf->nvariants > INT32_MAX) {
		snprintf(err, errlen, "flag \"%s\": at least one variant is required", f->key);
		return -1;
	}
	f->variants = arena_alloc(&set->arena, cf->nvariants * sizeof(*f->variants));
	if (!f->variants)
		goto out_nomem;
	for (size_t i = 0; i < cf->nvariants; i++) {
		const struct config_variant *cv = &cf->variants[i];
		struct flag_variant *fv = &f->variants[i];

		fv->name = arena_strdup(&set->arena, cv->name ? cv->name : "");
		fv->value = cv->value ? json_deep_copy(cv->value) : json_null();
		if (!fv->name || !fv->value)
			goto out_nomem;
		f->nvariants++; /* from here on flagset_free releases the value */
		if (render_value(&set->arena, fv->value, &fv->json, &fv->json_len) != 0)
			goto out_nomem;
	}
	off = variant_find(cf, cf->off_variant);
	if (off < 0) {
		snprintf(err, errlen, "flag \"%s\": off_variant \"%s\" is not defined", f->key,
		         cf->off_variant ? cf->off_variant : "");
		return -1;
	}
	f->off = (uint32_t)off;
	f->on = f->off;
	for (uint32_t i = 0; i < f->nvariants; i++) {
		if (i != f->off) {
			f->on = i;
			break;
		}
	}
	return 0;
out_nomem:
	snprintf(err, errlen, "out of memory");
	return -1;
}

/*
 * Lays a split out as cumulative thresholds in the order the flag lists its
 * variants, skipping the off variant (an explicit off share is the same as
 * the remainder), so the exposed buckets are always [0, sum of the others).
 */
static int build_split(struct flagset *set, const struct flag *f, const struct config_flag *cf,
                       const struct config_split *cs, const char *where, struct flag_split *out,
                       char *err, size_t errlen)
{
	uint64_t *share = calloc(f->nvariants, sizeof(*share));
	uint32_t *upto = NULL, *var = NULL;
	uint64_t total = 0, cum = 0;
	uint32_t n = 0;
	int rc = -1;

	if (!share)
		goto out_nomem;
	for (size_t i = 0; i < cs->n; i++) {
		int v = variant_find(cf, cs->v[i].variant);

		if (v < 0) {
			snprintf(err, errlen, "flag \"%s\": %s: variant \"%s\" is not defined",
			         f->key, where, cs->v[i].variant ? cs->v[i].variant : "");
			goto out_free;
		}
		share[v] += cs->v[i].percent;
		total += cs->v[i].percent;
	}
	if (total > BUCKET_COUNT) {
		snprintf(err, errlen, "flag \"%s\": %s: percentages add up to more than 100",
		         f->key, where);
		goto out_free;
	}
	for (uint32_t i = 0; i < f->nvariants; i++)
		n += i != f->off && share[i] > 0;
	upto = arena_alloc(&set->arena, (n ? n : 1) * sizeof(*upto));
	var = arena_alloc(&set->arena, (n ? n : 1) * sizeof(*var));
	if (!upto || !var)
		goto out_nomem;
	n = 0;
	for (uint32_t i = 0; i < f->nvariants; i++) {
		if (i == f->off || share[i] == 0)
			continue;
		cum += share[i];
		upto[n] = (uint32_t)cum;
		var[n] = i;
		n++;
	}
	out->n = n;
	out->upto = upto;
	out->variant = var;
	if (n == 0)
		out->uniform = (int32_t)f->off;
	else if (n == 1 && upto[0] == BUCKET_COUNT)
		out->uniform = (int32_t)var[0];
	else
		out->uniform = -1;
	rc = 0;
	goto out_free;
out_nomem:
	snprintf(err, errlen, "out of memory");
out_free:
	free(share);
	return rc;
}

/*
 * Both lists in one set, so a lookup is one hash and one probe: the unique
 * exclude entries first (indices below nexclude), then the include entries
 * that are not excluded, so exclude wins when a unit is in both.  Repeated
 * entries are harmless: one copy is kept.
 */
static int build_lists(struct flagset *set, struct flag *f, const struct config_strlist *ex,
                       const struct config_strlist *in, char *err, size_t errlen)
{
	struct strset tmp;
	struct str *keys;
	size_t n = ex->n + in->n, nex = ex->n, dup;

	memset(&f->lists, 0, sizeof(f->lists));
	if (n == 0)
		return 0;
	keys = arena_alloc(&set->arena, n * sizeof(*keys));
	if (!keys)
		goto out_nomem;
	for (size_t i = 0; i < n; i++) {
		const char *s = i < ex->n ? ex->v[i] : in->v[i - ex->n];

		keys[i] = str_c(arena_strdup(&set->arena, s ? s : ""));
		if (!keys[i].p)
			goto out_nomem;
	}
	if (strset_build(&tmp, &set->arena, keys, &nex, true, &dup) != 0)
		goto out_nomem;
	if (nex < ex->n)
		memmove(keys + nex, keys + ex->n, in->n * sizeof(*keys));
	n = nex + in->n;
	if (strset_build(&f->lists, &set->arena, keys, &n, true, &dup) != 0)
		goto out_nomem;
	f->nexclude = (uint32_t)nex;
	return 0;
out_nomem:
	snprintf(err, errlen, "out of memory");
	return -1;
}

static int build_flag(struct flagset *set, struct flag *f, const struct config_flag *cf, char *err,
                      size_t errlen)
{
	static const char key_missing[] =
	    "targeting key missing: the context has no \"%s\" to bucket by";
	char where[48], *msg;
	const char *sticky = cf->sticky && *cf->sticky ? cf->sticky : "targetingKey";
	int n;

	f->key = arena_strdup(&set->arena, cf->name ? cf->name : "");
	f->sticky = arena_strdup(&set->arena, sticky);
	if (!f->key || !f->sticky)
		goto out_nomem;
	f->keylen = strlen(f->key);
	f->enabled = cf->enabled;
	n = snprintf(NULL, 0, key_missing, sticky);
	msg = arena_alloc(&set->arena, (size_t)n + 1);
	if (!msg)
		goto out_nomem;
	snprintf(msg, (size_t)n + 1, key_missing, sticky);
	f->msg_key_missing = msg;
	if (build_variants(set, f, cf, err, errlen) != 0)
		return -1;
	if (cf->nrules > INT32_MAX) {
		snprintf(err, errlen, "flag \"%s\": too many rules", f->key);
		return -1;
	}
	f->rules = arena_alloc(&set->arena, (cf->nrules ? cf->nrules : 1) * sizeof(*f->rules));
	if (!f->rules)
		goto out_nomem;
	f->nrules = (uint32_t)cf->nrules;
	for (size_t i = 0; i < cf->nrules; i++) {
		const struct config_flag_rule *cr = &cf->rules[i];
		struct flag_rule *r = &f->rules[i];
		const char *segname = cr->segment ? cr->segment : "";
		int s = strset_find(&set->segidx, segname, strlen(segname));

		snprintf(where, sizeof(where), "rules[%zu]", i);
		if (s < 0) {
			snprintf(err, errlen, "flag \"%s\": %s: segment \"%s\" is not defined",
			         f->key, where, segname);
			return -1;
		}
		r->seg = &set->segs[s];
		r->serve = -1;
		if (cr->serve) {
			r->serve = variant_find(cf, cr->serve);
			if (r->serve < 0) {
				snprintf(err, errlen,
				         "flag \"%s\": %s: variant \"%s\" is not defined", f->key,
				         where, cr->serve);
				return -1;
			}
		} else if (build_split(set, f, cf, &cr->rollout, where, &r->split, err, errlen) !=
		           0) {
			return -1;
		}
	}
	f->has_rollout = cf->rollout.n > 0;
	if (build_split(set, f, cf, &cf->rollout, "rollout", &f->rollout, err, errlen) != 0)
		return -1;
	if (build_lists(set, f, &cf->exclude, &cf->include, err, errlen) != 0)
		return -1;
	f->has_lists = f->lists.n > 0;
	f->is_static = f->nrules == 0 && !f->has_rollout && !f->has_lists;
	return 0;
out_nomem:
	snprintf(err, errlen, "out of memory");
	return -1;
}

struct flagset *flagset_build(const struct config_flag *flags, size_t nflags,
                              const struct config_segment *segs, size_t nsegs, char *err,
                              size_t errlen)
{
	struct flagset *set = calloc(1, sizeof(*set));
	struct str *keys;
	size_t dup, n;
	int rc;

	if (errlen)
		err[0] = '\0';
	if (!set) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	/* small blocks for a one-flag set (flags/registry.c compiles each flag alone) */
	arena_init(&set->arena, nflags > 1 ? 16384 : 2048);
	if (build_segments(set, segs, nsegs, err, errlen) != 0)
		goto out_free;
	set->flags = arena_alloc(&set->arena, (nflags ? nflags : 1) * sizeof(*set->flags));
	keys = arena_alloc(&set->arena, (nflags ? nflags : 1) * sizeof(*keys));
	if (!set->flags || !keys)
		goto out_nomem;
	for (size_t i = 0; i < nflags; i++) {
		set->nflags++; /* counted first, so flagset_free sees its variants */
		if (build_flag(set, &set->flags[i], &flags[i], err, errlen) != 0)
			goto out_free;
		keys[i] = str_make(set->flags[i].key, set->flags[i].keylen);
	}
	n = nflags;
	rc = strset_build(&set->index, &set->arena, keys, &n, false, &dup);
	if (rc < 0)
		goto out_nomem;
	if (rc > 0) {
		snprintf(err, errlen, "flag \"%s\" is defined twice", keys[dup].p);
		goto out_free;
	}
	return set;
out_nomem:
	snprintf(err, errlen, "out of memory");
out_free:
	flagset_free(set);
	return NULL;
}

void flagset_free(struct flagset *set)
{
	if (!set)
		return;
	for (size_t i = 0; i < set->nflags; i++)
		for (uint32_t j = 0; j < set->flags[i].nvariants; j++)
			json_decref(set->flags[i].variants[j].value);
	for (size_t i = 0; i < set->nsegs; i++)
		segment_release(&set->segs[i]);
	arena_release(&set->arena);
	free(set);
}

const struct flag *flagset_find(const struct flagset *set, const char *key, size_t keylen)
{
	int i;

	if (!set || (!key && keylen))
		return NULL;
	i = strset_find(&set->index, key, keylen);
	return i < 0 ? NULL : &set->flags[i];
}

size_t flagset_count(const struct flagset *set)
{
	return set ? set->nflags : 0;
}

const struct flag *flagset_at(const struct flagset *set, size_t i)
{
	return set && i < set->nflags ? &set->flags[i] : NULL;
}

const char *flag_key(const struct flag *f)
{
	return f->key;
}

size_t flagset_index(const struct flagset *set, const struct flag *f)
{
	return (size_t)(f - set->flags);
}

size_t flag_variant_count(const struct flag *f)
{
	return f->nvariants;
}

const char *flag_variant_name(const struct flag *f, size_t i)
{
	return i < f->nvariants ? f->variants[i].name : NULL;
}

/* ------------------------------------------------------------------------ */
/* Definitions as JSON                                                        */

json_t *flag_percent_json(uint32_t thousandths)
{
	if (thousandths % 1000 == 0)
		return json_integer((json_int_t)(thousandths / 1000));
	return json_real((double)thousandths / 1000.0);
}

static json_t *strlist_json(const struct config_strlist *l)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < l->n; i++)
		if (json_array_append_new(a, json_string(l->v[i] ? l->v[i] : "")) != 0) {
			json_decref(a);
			return NULL;
		}
	return a;
}

static json_t *split_json(const struct config_split *s)
{
	json_t *o = json_object();

	for (size_t i = 0; o && i < s->n; i++)
		if (json_object_set_new(o, s->v[i].variant ? s->v[i].variant : "",
		                        flag_percent_json(s->v[i].percent)) != 0) {
			json_decref(o);
			return NULL;
		}
	return o;
}

json_t *flag_config_to_json(const struct config_flag *cf)
{
	json_t *o = json_object(), *variants = json_object(), *rules = json_array();
	int bad = !o || !variants || !rules;

	for (size_t i = 0; !bad && i < cf->nvariants; i++)
		bad |= json_object_set(variants, cf->variants[i].name ? cf->variants[i].name : "",
		                       cf->variants[i].value ? cf->variants[i].value
		                                             : json_null()) != 0;
	for (size_t i = 0; !bad && i < cf->nrules; i++) {
		const struct config_flag_rule *r = &cf->rules[i];
		json_t *rule = json_pack("{s:s}", "segment", r->segment ? r->segment : "");

		if (rule && r->serve)
			bad |= json_object_set_new(rule, "serve", json_string(r->serve)) != 0;
		else if (rule)
			bad |= json_object_set_new(rule, "rollout", split_json(&r->rollout)) != 0;
		bad |= json_array_append_new(rules, rule) != 0;
	}
	if (bad)
		goto out_fail;
	bad |= json_object_set_new(o, "key", json_string(cf->name ? cf->name : "")) != 0;
	bad |= json_object_set_new(o, "description",
	                           json_string(cf->description ? cf->description : "")) != 0;
	bad |= json_object_set_new(o, "enabled", json_boolean(cf->enabled)) != 0;
	bad |= json_object_set(o, "variants", variants) != 0;
	bad |= json_object_set_new(o, "off_variant",
	                           json_string(cf->off_variant ? cf->off_variant : "")) != 0;
	bad |= json_object_set_new(
	           o, "sticky",
	           json_string(cf->sticky && *cf->sticky ? cf->sticky : "targetingKey")) != 0;
	bad |= json_object_set(o, "rules", rules) != 0;
	bad |= json_object_set_new(o, "rollout", split_json(&cf->rollout)) != 0;
	bad |= json_object_set_new(o, "exclude", strlist_json(&cf->exclude)) != 0;
	bad |= json_object_set_new(o, "include", strlist_json(&cf->include)) != 0;
	if (bad)
		goto out_fail;
	json_decref(variants);
	json_decref(rules);
	return o;
out_fail:
	json_decref(o);
	json_decref(variants);
	json_decref(rules);
	return NULL;
}

json_t *flag_segment_to_json(const struct config_segment *cs)
{
	json_t *match = json_array();
	int bad = !match;

	for (size_t i = 0; !bad && i < cs->nconds; i++) {
		const struct config_condition *cd = &cs->conds[i];
		const char *op = config_op_name(cd->op);

		bad |=
		    json_array_append_new(
		        match, json_pack("{s:s, s:s, s:o}", "attr", cd->attr ? cd->attr : "", "op",
		                         op ? op : "", "values", strlist_json(&cd->values))) != 0;
	}
	if (bad) {
		json_decref(match);
		return NULL;
	}
	return json_pack("{s:s, s:o}", "name", cs->name ? cs->name : "", "match", match);
}

/* ------------------------------------------------------------------------ */
/* Evaluation                                                                 */

static int no_attr(void *ctx, const char *attr, struct str *val)
{
	return 0;
}

static inline int serve(const struct flag *f, uint32_t v, enum flag_reason reason, int rule,
                        struct flag_result *out)
{
	const struct flag_variant *fv = &f->variants[v];

	out->variant = fv->name;
	out->value = fv->value;
	out->value_json = fv->json;
	out->value_json_len = fv->json_len;
	out->reason = reason;
	out->error = FLAG_ERROR_NONE;
	out->message = NULL;
	out->rule = rule;
	out->bucket = FLAG_NO_BUCKET;
	return 0;
}

/* The unit's sticky value; an empty one is no value (it would put every
 * keyless caller in the same bucket). */
static inline int sticky_value(const struct flag *f, segment_attr_fn attr, void *ctx,
                               struct str *key)
{
	return attr(ctx, f->sticky, key) && key->len > 0;
}

static int eval_split(const struct flag *f, const struct flag_split *s, int rule,
                      segment_attr_fn attr, void *ctx, struct flag_result *out)
{
	struct str key;
	uint32_t b, v = f->off;

	if (s->uniform >= 0)
		return serve(f, (uint32_t)s->uniform, FLAG_REASON_SPLIT, rule, out);
	if (!sticky_value(f, attr, ctx, &key)) {
		serve(f, f->off, FLAG_REASON_ERROR, rule, out);
		out->error = FLAG_ERROR_TARGETING_KEY_MISSING;
		out->message = f->msg_key_missing;
		return -1;
	}
	b = bucket_of(f->key, f->keylen, key.p, key.len);
	for (uint32_t i = 0; i < s->n; i++) {
		if (b < s->upto[i]) {
			v = s->variant[i];
			break;
		}
	}
	serve(f, v, FLAG_REASON_SPLIT, rule, out);
	out->bucket = b;
	return 0;
}

int flag_eval(const struct flag *f, segment_attr_fn attr, void *ctx, struct flag_result *out)
{
	struct str key;

	if (!f) {
		*out = (struct flag_result){.reason = FLAG_REASON_ERROR,
		                            .error = FLAG_ERROR_FLAG_NOT_FOUND,
		                            .message = "flag not found",
		                            .rule = -1,
		                            .bucket = FLAG_NO_BUCKET};
		return -1;
	}
	if (!attr)
		attr = no_attr;
	if (!f->enabled)
		return serve(f, f->off, FLAG_REASON_DISABLED, -1, out);
	/* the value is used here and dropped: attr's values need not outlive the next call */
	if (f->has_lists && sticky_value(f, attr, ctx, &key)) {
		int i = strset_find(&f->lists, key.p, key.len);

		if (i >= 0)
			return serve(f, (uint32_t)i < f->nexclude ? f->off : f->on,
			             FLAG_REASON_TARGETING_MATCH, -1, out);
	}
	for (uint32_t i = 0; i < f->nrules; i++) {
		const struct flag_rule *r = &f->rules[i];

		if (!segment_match(r->seg, attr, ctx))
			continue;
		if (r->serve >= 0)
			return serve(f, (uint32_t)r->serve, FLAG_REASON_TARGETING_MATCH, (int)i,
			             out);
		return eval_split(f, &r->split, (int)i, attr, ctx, out);
	}
	if (f->has_rollout)
		return eval_split(f, &f->rollout, -1, attr, ctx, out);
	return serve(f, f->off, f->is_static ? FLAG_REASON_STATIC : FLAG_REASON_DEFAULT, -1, out);
}

const char *flag_reason_name(enum flag_reason r)
{
	static const char *const names[] = {
	    [FLAG_REASON_STATIC] = "STATIC",   [FLAG_REASON_TARGETING_MATCH] = "TARGETING_MATCH",
	    [FLAG_REASON_SPLIT] = "SPLIT",     [FLAG_REASON_DISABLED] = "DISABLED",
	    [FLAG_REASON_DEFAULT] = "DEFAULT", [FLAG_REASON_ERROR] = "ERROR",
	};

	return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "UNKNOWN";
}

const char *flag_error_name(enum flag_error e)
{
	static const char *const names[] = {
	    [FLAG_ERROR_NONE] = NULL,
	    [FLAG_ERROR_TARGETING_KEY_MISSING] = "TARGETING_KEY_MISSING",
	    [FLAG_ERROR_FLAG_NOT_FOUND] = "FLAG_NOT_FOUND",
	    [FLAG_ERROR_INVALID_CONTEXT] = "INVALID_CONTEXT",
	    [FLAG_ERROR_PARSE_ERROR] = "PARSE_ERROR",
	    [FLAG_ERROR_GENERAL] = "GENERAL",
	};

	return (unsigned)e < sizeof(names) / sizeof(names[0]) ? names[e] : "GENERAL";
}

/* ------------------------------------------------------------------------ */
/* JSON contexts                                                              */

int flag_json_ctx_init(struct flag_json_ctx *c, const json_t *obj)
{
	c->next = 0;
	c->obj = obj && json_is_object(obj) ? obj : NULL;
	return obj && !c->obj ? -1 : 0;
}

/* The shortest %.Ng (N = 15..17) that reads back as d. */
static size_t render_real(char *buf, size_t n, double d)
{
	int len = 0;

	for (int prec = 15; prec <= 17; prec++) {
		len = snprintf(buf, n, "%.*g", prec, d);
		if (strtod(buf, NULL) == d)
			break;
	}
	return len > 0 ? (size_t)len : 0;
}

int flag_ctx_json_attr(void *ctx, const char *attr, struct str *val)
{
	struct flag_json_ctx *c = ctx;
	const json_t *v;
	char *buf;
	int len;

	if (!c->obj)
		return 0;
	v = json_object_get(c->obj, attr);
	if (!v)
		return 0;
	switch (json_typeof(v)) {
	case JSON_STRING:
		*val = str_make(json_string_value(v), json_string_length(v));
		return 1;
	case JSON_TRUE:
		*val = STR_LIT("true");
		return 1;
	case JSON_FALSE:
		*val = STR_LIT("false");
		return 1;
	case JSON_INTEGER:
		buf = c->scratch[c->next];
		c->next = (c->next + 1) % FLAG_JSON_SCRATCH;
		len = snprintf(buf, sizeof(c->scratch[0]), "%" JSON_INTEGER_FORMAT,
		               json_integer_value(v));
		*val = str_make(buf, len > 0 ? (size_t)len : 0);
		return 1;
	case JSON_REAL:
		buf = c->scratch[c->next];
		c->next = (c->next + 1) % FLAG_JSON_SCRATCH;
		*val = str_make(buf, render_real(buf, sizeof(c->scratch[0]), json_real_value(v)));
		return 1;
	default:
		return 0;
	}
}
