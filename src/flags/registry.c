/*
 * registry.c - the feature-flag state: configuration and API flags, the
 * published snapshots and the evaluation counters (see registry.h).
 *
 * An item is one compiled flag: its normalised definition, a one-flag
 * flagset built with only the segments its rules name (the parsed
 * config_flag is dropped once compiled), its rendered JSON text and its
 * counters.  Items are refcounted and immutable.  A snapshot is a table of
 * refcounted blocks of item references plus a key index in refcounted hash
 * parts (struct flags_snap below), so a change builds one item and copies
 * two small pointer tables, one block and one index part: nothing else is
 * parsed, compiled, rendered or copied again.
 */
#include "flags/registry.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bucket.h"
#include "core/err.h"
#include "core/log.h"
#include "state/state.h"
#include "store/store.h"

#define DOC_KIND    "flag"
#define DIGEST_KIND "flagconfig"
#define DIGEST_NAME "digest"
#define NERRORS     (FLAG_ERROR_GENERAL + 1)
#define KEY_BUF     (STORE_NAME_MAX + 1)

/* One (flag, variant) evaluation counter; lives as long as the module. */
struct eval_counter {
	char *flag, *variant;
	uint32_t hash;
	struct eval_counter *next; /* hash chain */
	atomic_uint_fast64_t n;
};

struct flags_item {
	atomic_uint refs;
	char *key;
	size_t keylen;
	uint32_t hash;
	const char *source;        /* "config" or "api" */
	size_t conf_pos;           /* a configuration flag: its position in config order */
	json_t *def;               /* normalised, with "key" */
	struct config_flag *cf;    /* only while compiling: the flagset copies what it needs */
	struct flagset *set;       /* this flag alone */
	char *text;                /* flag_json_text(def) */
	struct eval_counter **ctr; /* per variant of the compiled flag; NULL entries possible */
};

/* An open-addressing index of items by key (linear probing, no tombstones). */
struct kmap {
	struct flags_item **slots;
	uint32_t mask; /* capacity - 1; no slots when capacity is 0 */
	uint32_t n;
};

/* What comes from one configuration. */
struct conf_state {
	struct flags_item **flags; /* config order */
	size_t nflags;
	struct kmap idx;
	struct config_segment **segs; /* owned (config_segment_from_json) */
	struct config_segment *segv;  /* shallow copies, contiguous */
	size_t nsegs;
	char *segs_text;
	char digest[40];
};

/*
 * A snapshot shares its pieces with the snapshots derived from it: the
 * effective list is a table of refcounted blocks of item references, the
 * key index IDX_PARTS refcounted hash tables chosen by the key's hash.  A
 * change copies the two pointer tables, one block and one index part.
 */
#define BLK_FILL  64  /* items per block when a list is built whole */
#define BLK_MAX   128 /* a block that grows past this is split */
#define IDX_PARTS 64

struct blk {
	atomic_uint refs;
	uint32_t n;
	struct flags_item *v[]; /* one reference each */
};

struct idx_part {
	atomic_uint refs;
	struct kmap map; /* borrowed item pointers */
};

struct flags_snap {
	struct snap_obj obj;
	uint64_t revision;
	size_t n;
	size_t nconf; /* positions [0, nconf) are the configuration's keys */
	struct blk **blks;
	size_t *start; /* start[b]: the position of blks[b]->v[0] */
	size_t nblks;
	struct idx_part *parts[IDX_PARTS];
	char *segs_text;
};

struct flags {
	struct state *state;
	struct store *store;
	struct conf_state conf;
	struct kmap over; /* the API's versions, by key (one reference each) */
	struct snapshot snap;
	struct flags_snap *cur;
	uint64_t revision;
	const struct flags_listener *lops;
	void *larg;
	struct eval_counter **ctab; /* counter hash buckets */
	size_t ctab_cap;
	struct eval_counter **cv; /* counters in creation order (Prometheus) */
	size_t ncv, capcv;
	atomic_uint_fast64_t errors[NERRORS];
};

static inline uint32_t key_hash(const char *p, size_t len)
{
	return murmur3_x86_32(p, len, 0x9e3779b9u);
}

/* ------------------------------------------------------------------------ */
/* Items                                                                      */

static struct flags_item *flags_item_ref(struct flags_item *it)
{
	if (it)
		atomic_fetch_add_explicit(&it->refs, 1, memory_order_relaxed);
	return it;
}

static void item_unref(struct flags_item *it)
{
	if (!it || atomic_fetch_sub_explicit(&it->refs, 1, memory_order_acq_rel) != 1)
		return;
	free(it->key);
	json_decref(it->def);
	config_flag_free(it->cf);
	flagset_free(it->set);
	free(it->text);
	free(it->ctr);
	free(it);
}

/* ------------------------------------------------------------------------ */
/* The key index                                                              */

static void kmap_release(struct kmap *m)
{
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

static long kmap_slot(const struct kmap *m, const char *key, size_t len, uint32_t h)
{
	uint32_t i;

	if (!m->slots)
		return -1;
	for (i = h & m->mask;; i = (i + 1) & m->mask) {
		const struct flags_item *it = m->slots[i];

		if (!it)
			return -1;
		if (it->hash == h && it->keylen == len && memcmp(it->key, key, len) == 0)
			return (long)i;
	}
}

static struct flags_item *kmap_get(const struct kmap *m, const char *key)
{
	size_t len = strlen(key);
	long i = kmap_slot(m, key, len, key_hash(key, len));

	return i < 0 ? NULL : m->slots[i];
}

static void kmap_place(struct kmap *m, struct flags_item *it)
{
	uint32_t i = it->hash & m->mask;

	while (m->slots[i])
		i = (i + 1) & m->mask;
	m->slots[i] = it;
}

/* Room for want entries at a load of at most 1/2.  0 or -ENOMEM. */
static int kmap_reserve(struct kmap *m, size_t want)
{
	size_t cap = m->mask + (m->slots ? 1 : 0);
	struct kmap g = {NULL, 0, m->n};

	if (want * 2 <= cap)
		return 0;
	for (cap = cap ? cap : 16; cap < want * 2;)
		cap *= 2;
	if (cap > UINT32_MAX / 2)
		return -ENOMEM;
	g.slots = calloc(cap, sizeof(*g.slots));
	if (!g.slots)
		return -ENOMEM;
	g.mask = (uint32_t)cap - 1;
	for (size_t i = 0; m->slots && i <= m->mask; i++)
		if (m->slots[i])
			kmap_place(&g, m->slots[i]);
	free(m->slots);
	*m = g;
	return 0;
}

/* Puts it under its key, replacing (and returning) the item there.  -ENOMEM leaves m. */
static int kmap_put(struct kmap *m, struct flags_item *it, struct flags_item **old)
{
	long i = kmap_slot(m, it->key, it->keylen, it->hash);

	*old = NULL;
	if (i >= 0) {
		*old = m->slots[i];
		m->slots[i] = it;
		return 0;
	}
	if (kmap_reserve(m, (size_t)m->n + 1) != 0)
		return -ENOMEM;
	kmap_place(m, it);
	m->n++;
	return 0;
}

/* Removes key and returns its item (NULL when absent); backward-shift deletion. */
static struct flags_item *kmap_del(struct kmap *m, const char *key)
{
	size_t len = strlen(key);
	long at = kmap_slot(m, key, len, key_hash(key, len));
	struct flags_item *it;
	uint32_t i, j;

	if (at < 0)
		return NULL;
	it = m->slots[at];
	m->slots[at] = NULL;
	m->n--;
	for (i = (uint32_t)at, j = (i + 1) & m->mask; m->slots[j]; j = (j + 1) & m->mask) {
		uint32_t home = m->slots[j]->hash & m->mask;

		/* move j back to the hole when its home is not in (i, j] */
		if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
			m->slots[i] = m->slots[j];
			m->slots[j] = NULL;
			i = j;
		}
	}
	return it;
}

static int kmap_clone(struct kmap *dst, const struct kmap *src)
{
	*dst = *src;
	if (!src->slots)
		return 0;
	dst->slots = malloc(((size_t)src->mask + 1) * sizeof(*dst->slots));
	if (!dst->slots)
		return -ENOMEM;
	memcpy(dst->slots, src->slots, ((size_t)src->mask + 1) * sizeof(*dst->slots));
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Counters: a chained hash by (flag, variant), no ceiling                    */

static uint32_t counter_hash(const char *flag, const char *variant)
{
	return murmur3_x86_32(variant, strlen(variant), key_hash(flag, strlen(flag)));
}

static int counters_grow(struct flags *fl)
{
	size_t cap = fl->ctab_cap ? fl->ctab_cap * 2 : 1024;
	struct eval_counter **t = calloc(cap, sizeof(*t));

	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < fl->ncv; i++) {
		struct eval_counter *c = fl->cv[i];

		c->next = t[c->hash & (cap - 1)];
		t[c->hash & (cap - 1)] = c;
	}
	free(fl->ctab);
	fl->ctab = t;
	fl->ctab_cap = cap;
	return 0;
}

/* The counter of (flag, variant), created on first use; NULL on ENOMEM. */
static struct eval_counter *counter_of(struct flags *fl, const char *flag, const char *variant)
{
	uint32_t h = counter_hash(flag, variant);
	struct eval_counter *c;

	for (c = fl->ctab ? fl->ctab[h & (fl->ctab_cap - 1)] : NULL; c; c = c->next)
		if (c->hash == h && strcmp(c->flag, flag) == 0 && strcmp(c->variant, variant) == 0)
			return c;
	if (fl->ncv == fl->capcv) {
		size_t cap = fl->capcv ? fl->capcv * 2 : 256;
		struct eval_counter **v = realloc(fl->cv, cap * sizeof(*v));

		if (!v)
			return NULL;
		fl->cv = v;
		fl->capcv = cap;
	}
	if (fl->ncv >= fl->ctab_cap && counters_grow(fl) != 0)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->flag = strdup(flag);
	c->variant = strdup(variant);
	if (!c->flag || !c->variant) {
		free(c->flag);
		free(c->variant);
		free(c);
		return NULL;
	}
	c->hash = h;
	atomic_init(&c->n, 0);
	c->next = fl->ctab[h & (fl->ctab_cap - 1)];
	fl->ctab[h & (fl->ctab_cap - 1)] = c;
	fl->cv[fl->ncv++] = c;
	return c;
}

/* ------------------------------------------------------------------------ */
/* Definitions                                                                */

/* The definition without "key": what config_flag_from_json accepts.  New reference. */
static json_t *def_body(const json_t *def)
{
	json_t *d = json_copy((json_t *)def);

	if (d)
		json_object_del(d, "key");
	return d;
}

/* "path: message" of the first error, for logs and messages. */
static void first_error(const struct config_errors *errs, char *out, size_t len)
{
	const struct config_error *e = config_errors_get(errs, 0);

	if (!e)
		snprintf(out, len, "out of memory");
	else
		snprintf(out, len, "%s%s%s", e->path, e->path[0] ? ": " : "", e->message);
}

static const struct config_segment *seg_find(const struct conf_state *cs, const char *name)
{
	for (size_t i = 0; name && i < cs->nsegs; i++)
		if (strcmp(cs->segv[i].name, name) == 0)
			return &cs->segv[i];
	return NULL;
}

/*
 * Compiles cf alone with only the segments its rules name.  0, or
 * ERR_INVALID with msg, or -ENOMEM.
 */
static int item_compile(struct flags_item *it, const struct conf_state *cs, char *msg,
                        size_t msglen)
{
	struct config_segment *segs = calloc(it->cf->nrules + 1, sizeof(*segs));
	size_t nsegs = 0;
	char err[256];

	if (!segs)
		return -ENOMEM;
	for (size_t r = 0; r < it->cf->nrules; r++) {
		const struct config_segment *s = seg_find(cs, it->cf->rules[r].segment);
		size_t k;

		for (k = 0; s && k < nsegs; k++)
			if (strcmp(segs[k].name, s->name) == 0)
				break;
		if (s && k == nsegs)
			segs[nsegs++] = *s;
	}
	it->set = flagset_build(it->cf, 1, segs, nsegs, err, sizeof(err));
	free(segs);
	if (!it->set) {
		snprintf(msg, msglen, "%s", err);
		return strcmp(err, "out of memory") == 0 ? -ENOMEM : ERR_INVALID;
	}
	return 0;
}

/*
 * Parses body (without "key") as flag key under cs's segments and compiles
 * it into a new item (one reference).  ERR_INVALID with errs filled (or msg
 * when it does not compile), or -ENOMEM.
 */
/* A stored document: its text and that text parsed. */
struct text_hint {
	const char *text;
	json_t *json;
};

static int item_parse(struct flags *fl, const char *source, const char *key, const json_t *body,
                      const struct conf_state *cs, struct config_errors *errs, char *msg,
                      size_t msglen, const struct text_hint *text_hint, struct flags_item **out)
{
	struct config fake;
	struct flags_item *it = calloc(1, sizeof(*it));
	const struct flag *f;
	int rc = -ENOMEM;

	*out = NULL;
	if (!it)
		return -ENOMEM;
	atomic_init(&it->refs, 1);
	it->source = strcmp(source, "config") == 0 ? "config" : "api";
	memset(&fake, 0, sizeof(fake));
	fake.segments = cs->segv;
	fake.nsegments = cs->nsegs;
	it->cf = config_flag_from_json(source, key, body, &fake, errs);
	if (!it->cf) {
		rc = errs->n ? ERR_INVALID : -ENOMEM;
		if (rc == ERR_INVALID)
			first_error(errs, msg, msglen);
		goto out_free;
	}
	it->key = strdup(key);
	it->def = flag_config_to_json(it->cf);
	if (!it->key || !it->def)
		goto out_free;
	it->keylen = strlen(key);
	it->hash = key_hash(key, it->keylen);
	rc = item_compile(it, cs, msg, msglen);
	if (rc)
		goto out_free;
	/* the parsed form holds a whole config arena block: not kept per flag */
	config_flag_free(it->cf);
	it->cf = NULL;
	rc = -ENOMEM;
	/* a stored document is already the text of its definition: not rendered again */
	if (text_hint && json_equal(text_hint->json, it->def))
		it->text = strdup(text_hint->text);
	else
		it->text = flag_json_text(it->def);
	f = flagset_at(it->set, 0);
	it->ctr = calloc(flag_variant_count(f) + 1, sizeof(*it->ctr));
	if (!it->text || !it->ctr)
		goto out_free;
	if (fl)
		for (size_t v = 0; v < flag_variant_count(f); v++)
			it->ctr[v] = counter_of(fl, key, flag_variant_name(f, v));
	*out = it;
	return 0;
out_free:
	item_unref(it);
	return rc;
}

/* A stored document (with "key") as an item of source "api". */
static int item_from_doc(struct flags *fl, const char *key, const char *json,
                         const struct conf_state *cs, char *msg, size_t msglen,
                         struct flags_item **out)
{
	struct config_errors errs;
	json_t *def = json_loads(json, 0, NULL), *body = def ? def_body(def) : NULL;
	int rc;

	config_errors_init(&errs);
	if (!body) {
		snprintf(msg, msglen, "the stored document is not a JSON object");
		rc = ERR_INVALID;
	} else {
		rc = item_parse(fl, "store", key, body, cs, &errs, msg, msglen,
		                &(struct text_hint){json, def}, out);
	}
	json_decref(def);
	json_decref(body);
	config_errors_release(&errs);
	return rc;
}

static void conf_release(struct conf_state *cs)
{
	for (size_t i = 0; i < cs->nflags; i++)
		item_unref(cs->flags[i]);
	free(cs->flags);
	kmap_release(&cs->idx);
	for (size_t i = 0; i < cs->nsegs; i++)
		config_segment_free(cs->segs[i]);
	free(cs->segs);
	free(cs->segv);
	free(cs->segs_text);
	memset(cs, 0, sizeof(*cs));
}

/* 64 bits of murmur3 over text, in hex: detects a changed config flag set. */
static void digest_of(const char *text, char *out, size_t len)
{
	size_t n = strlen(text);

	snprintf(out, len, "%08x%08x", murmur3_x86_32(text, n, 0x2545f491u),
	         murmur3_x86_32(text, n, 0x9e3779b9u));
}

/*
 * The configuration's segments and flags, each through its JSON form and
 * back (what a client library will see).  fl (may be NULL: a check) gets
 * the counters.  0, or an error with a message in err.
 */
static int conf_prepare(struct flags *fl, struct conf_state *cs, const struct config *cfg,
                        char *err, size_t errlen)
{
	struct config_errors errs;
	json_t *segs_json = NULL, *all = NULL, *flags = NULL;
	char *text = NULL;
	int rc = -ENOMEM;

	memset(cs, 0, sizeof(*cs));
	config_errors_init(&errs);
	cs->segs = calloc(cfg->nsegments + 1, sizeof(*cs->segs));
	cs->segv = calloc(cfg->nsegments + 1, sizeof(*cs->segv));
	cs->flags = calloc(cfg->nflags + 1, sizeof(*cs->flags));
	segs_json = json_array();
	flags = json_array();
	if (!cs->segs || !cs->segv || !cs->flags || !segs_json || !flags ||
	    kmap_reserve(&cs->idx, cfg->nflags) != 0)
		goto out_nomem;
	for (size_t i = 0; i < cfg->nsegments; i++) {
		json_t *j = flag_segment_to_json(&cfg->segments[i]), *body;

		if (!j)
			goto out_nomem;
		body = json_copy(j);
		if (body)
			json_object_del(body, "name");
		cs->segs[i] =
		    body ? config_segment_from_json("config", cfg->segments[i].name, body, &errs)
		         : NULL;
		json_decref(body);
		if (!cs->segs[i]) {
			json_decref(j);
			first_error(&errs, err, errlen);
			rc = ERR_INVALID;
			goto out;
		}
		cs->segv[i] = *cs->segs[i];
		cs->nsegs++;
		json_array_append_new(segs_json, j);
	}
	for (size_t i = 0; i < cfg->nflags; i++) {
		json_t *j = flag_config_to_json(&cfg->flags[i]), *body;
		struct flags_item *old;
		char msg[512];

		if (!j)
			goto out_nomem;
		body = def_body(j);
		json_decref(j);
		if (!body)
			goto out_nomem;
		rc = item_parse(fl, "config", cfg->flags[i].name, body, cs, &errs, msg, sizeof(msg),
		                NULL, &cs->flags[i]);
		json_decref(body);
		if (rc) {
			snprintf(err, errlen, "flags.%s: %s", cfg->flags[i].name,
			         rc == -ENOMEM ? "out of memory" : msg);
			goto out;
		}
		cs->flags[i]->conf_pos = i;
		cs->nflags++;
		kmap_put(&cs->idx, cs->flags[i], &old); /* reserved: cannot fail */
		if (old) {
			snprintf(err, errlen, "flag \"%s\" is defined twice", cfg->flags[i].name);
			rc = ERR_INVALID;
			goto out;
		}
		json_array_append(flags, cs->flags[i]->def);
	}
	rc = -ENOMEM;
	cs->segs_text = flag_json_text(segs_json);
	all = json_pack("{s:O, s:O}", "flags", flags, "segments", segs_json);
	text = all ? json_dumps(all, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	if (!text || !cs->segs_text)
		goto out_nomem;
	digest_of(text, cs->digest, sizeof(cs->digest));
	rc = 0;
	goto out;
out_nomem:
	rc = -ENOMEM;
	snprintf(err, errlen, "out of memory");
out:
	free(text);
	json_decref(all);
	json_decref(flags);
	json_decref(segs_json);
	config_errors_release(&errs);
	if (rc)
		conf_release(cs);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* Snapshots                                                                  */

static unsigned part_of(uint32_t hash)
{
	return hash >> 26; /* the top 6 bits: IDX_PARTS parts */
}

static struct blk *blk_new(size_t n)
{
	struct blk *b = malloc(sizeof(*b) + (n ? n : 1) * sizeof(b->v[0]));

	if (!b)
		return NULL;
	atomic_init(&b->refs, 1);
	b->n = (uint32_t)n;
	return b;
}

static void blk_unref(struct blk *b)
{
	if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (uint32_t i = 0; i < b->n; i++)
		item_unref(b->v[i]);
	free(b);
}

static void part_unref(struct idx_part *p)
{
	if (!p || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
		return;
	kmap_release(&p->map);
	free(p);
}

static void snap_destroy(struct snap_obj *o)
{
	struct flags_snap *s = (struct flags_snap *)o;

	for (size_t b = 0; b < s->nblks; b++)
		blk_unref(s->blks[b]);
	for (size_t i = 0; i < IDX_PARTS; i++)
		part_unref(s->parts[i]);
	free(s->blks);
	free(s->start);
	free(s->segs_text);
	free(s);
}

static struct flags_snap *snap_alloc(size_t nblks, const char *segs_text)
{
	struct flags_snap *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	snap_obj_init(&s->obj, snap_destroy);
	s->blks = calloc(nblks + 1, sizeof(*s->blks));
	s->start = calloc(nblks + 1, sizeof(*s->start));
	s->segs_text = strdup(segs_text ? segs_text : "[]");
	if (!s->blks || !s->start || !s->segs_text) {
		snap_obj_unref(&s->obj);
		return NULL;
	}
	return s;
}

/* Recomputes start[] and n from the blocks. */
static void snap_count(struct flags_snap *s)
{
	size_t n = 0;

	for (size_t b = 0; b < s->nblks; b++) {
		s->start[b] = n;
		n += s->blks[b]->n;
	}
	s->n = n;
}

/* The block holding position i < n (binary search over start[]). */
static size_t blk_of(const struct flags_snap *s, size_t i)
{
	size_t lo = 0, hi = s->nblks;

	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->start[mid] <= i)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

static struct flags_item *snap_item(const struct flags_snap *s, size_t i)
{
	size_t b = blk_of(s, i);

	return s->blks[b]->v[i - s->start[b]];
}

static struct flags_item *snap_lookup(const struct flags_snap *s, const char *key, size_t len)
{
	uint32_t h = key_hash(key, len);
	const struct idx_part *p = s->parts[part_of(h)];
	long slot = p ? kmap_slot(&p->map, key, len, h) : -1;

	return slot < 0 ? NULL : p->map.slots[slot];
}

static int key_cmp(const void *a, const void *b)
{
	return strcmp((*(struct flags_item *const *)a)->key, (*(struct flags_item *const *)b)->key);
}

/*
 * The whole effective list for conf overlaid by over (start, reload): conf's
 * flags in order (each replaced by over's version), then over's others by
 * key.  Hash lookups both ways; compiles nothing.  NULL on ENOMEM.
 */
static struct flags_snap *snap_full(const struct conf_state *conf, const struct kmap *over)
{
	size_t cap = conf->nflags + over->n, k = 0, tail;
	struct flags_item **v = calloc(cap + 1, sizeof(*v));
	struct flags_snap *s = v ? snap_alloc(cap / BLK_FILL + 1, conf->segs_text) : NULL;

	if (!s)
		goto out_nomem;
	for (size_t i = 0; i < conf->nflags; i++) {
		struct flags_item *o = kmap_get(over, conf->flags[i]->key);

		v[k++] = o ? o : conf->flags[i];
	}
	s->nconf = k;
	tail = k;
	for (size_t i = 0; over->slots && i <= over->mask; i++) {
		struct flags_item *o = over->slots[i];

		if (o && !kmap_get(&conf->idx, o->key))
			v[k++] = o;
	}
	qsort(v + tail, k - tail, sizeof(*v), key_cmp);
	for (size_t i = 0; i < k; i += BLK_FILL) {
		size_t m = k - i < BLK_FILL ? k - i : BLK_FILL;
		struct blk *b = blk_new(m);

		if (!b)
			goto out_nomem;
		for (size_t j = 0; j < m; j++)
			b->v[j] = flags_item_ref(v[i + j]);
		s->blks[s->nblks++] = b;
	}
	snap_count(s);
	for (size_t i = 0; i < IDX_PARTS; i++) {
		s->parts[i] = calloc(1, sizeof(*s->parts[i]));
		if (!s->parts[i])
			goto out_nomem;
		atomic_init(&s->parts[i]->refs, 1);
	}
	for (size_t i = 0; i < k; i++) {
		struct kmap *m = &s->parts[part_of(v[i]->hash)]->map;
		struct flags_item *old;

		if (kmap_put(m, v[i], &old) != 0)
			goto out_nomem;
	}
	free(v);
	return s;
out_nomem:
	free(v);
	if (s)
		snap_obj_unref(&s->obj);
	return NULL;
}

/* The first position in the API-only tail of s whose key is not below key. */
static size_t tail_pos(const struct flags_snap *s, const char *key)
{
	size_t lo = s->nconf, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(snap_item(s, mid)->key, key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * The snapshot after key's effective item became it (NULL: key is gone),
 * derived from old: the block table and the index's part table are copied
 * and every block and part shared, except the one block and the one part
 * that hold key, which are copied with it replaced, inserted (an API-only
 * key, in key order) or removed.  A configuration key keeps its config
 * position.  NULL on ENOMEM (or an inconsistent old snapshot, which a full
 * rebuild then replaces).
 */
static struct flags_snap *snap_derive(const struct flags_snap *old, const struct conf_state *conf,
                                      const char *key, struct flags_item *it)
{
	size_t len = strlen(key), pos, bi, off;
	uint32_t h = key_hash(key, len);
	struct flags_item *prev = snap_lookup(old, key, len), *gone;
	struct flags_item *ci = kmap_get(&conf->idx, key);
	struct flags_snap *s = snap_alloc(old->nblks + 2, old->segs_text);
	const struct blk *ob;
	struct blk *nb = NULL, *nb2 = NULL;
	struct idx_part *np = NULL;
	unsigned pi = part_of(h);
	size_t m;

	if (!s)
		return NULL;
	s->nconf = old->nconf;
	pos = ci ? ci->conf_pos : tail_pos(old, key);
	if ((prev && (pos >= old->n || snap_item(old, pos) != prev)) || (ci && !prev) ||
	    (ci && !it))
		goto out_nomem; /* not where it must be: rebuild */
	if (!prev && !it)
		goto out_nomem; /* nothing to change: callers never ask */
	/* the one block: the one holding pos (an append goes to the last block) */
	if (old->nblks == 0) {
		bi = 0;
		ob = NULL;
	} else {
		bi = pos < old->n ? blk_of(old, pos) : old->nblks - 1;
		ob = old->blks[bi];
	}
	off = ob ? pos - old->start[bi] : 0;
	m = (ob ? ob->n : 0) + (prev ? 0 : 1) - (prev && !it ? 1 : 0);
	nb = blk_new(m);
	if (!nb)
		goto out_nomem;
	{
		size_t k = 0;

		for (size_t j = 0; ob && j < off; j++)
			nb->v[k++] = ob->v[j];
		if (it)
			nb->v[k++] = it;
		for (size_t j = off + (prev ? 1 : 0); ob && j < ob->n; j++)
			nb->v[k++] = ob->v[j];
		for (size_t j = 0; j < k; j++)
			flags_item_ref(nb->v[j]);
	}
	if (m > BLK_MAX) {
		/* split in two halves */
		nb2 = blk_new(m - m / 2);
		if (!nb2)
			goto out_nomem;
		memcpy(nb2->v, nb->v + m / 2, (m - m / 2) * sizeof(nb->v[0]));
		nb->n = (uint32_t)(m / 2);
	}
	/* the block table: shared blocks, the new one(s) at bi */
	for (size_t b = 0; b < old->nblks; b++) {
		if (b == bi) {
			if (nb->n)
				s->blks[s->nblks++] = nb;
			else
				blk_unref(nb); /* emptied: dropped */
			nb = NULL;
			if (nb2)
				s->blks[s->nblks++] = nb2;
			nb2 = NULL;
			continue;
		}
		atomic_fetch_add_explicit(&old->blks[b]->refs, 1, memory_order_relaxed);
		s->blks[s->nblks++] = old->blks[b];
	}
	if (nb) /* the first block of an empty list */
		s->blks[s->nblks++] = nb;
	nb = NULL;
	snap_count(s);
	/* the index: shared parts, the one holding key copied */
	np = calloc(1, sizeof(*np));
	if (!np || kmap_clone(&np->map, &old->parts[pi]->map) != 0)
		goto out_nomem;
	atomic_init(&np->refs, 1);
	if (it) {
		if (kmap_put(&np->map, it, &gone) != 0)
			goto out_nomem;
	} else {
		kmap_del(&np->map, key);
	}
	for (unsigned i = 0; i < IDX_PARTS; i++) {
		if (i == pi)
			continue;
		atomic_fetch_add_explicit(&old->parts[i]->refs, 1, memory_order_relaxed);
		s->parts[i] = old->parts[i];
	}
	s->parts[pi] = np;
	return s;
out_nomem:
	blk_unref(nb);
	blk_unref(nb2);
	if (np) {
		kmap_release(&np->map);
		free(np);
	}
	snap_obj_unref(&s->obj);
	return NULL;
}

/* Publishes s (stealing the caller's reference) at revision rev. */
static void snap_publish(struct flags *fl, struct flags_snap *s, uint64_t rev)
{
	s->revision = rev;
	fl->revision = rev;
	snap_obj_unref(fl->cur ? &fl->cur->obj : NULL);
	fl->cur = s;
	snapshot_publish(&fl->snap, snap_obj_ref(&s->obj));
}

uint64_t flags_snap_revision(const struct flags_snap *s)
{
	return s->revision;
}

size_t flags_snap_count(const struct flags_snap *s)
{
	return s ? s->n : 0;
}

const struct flags_item *flags_snap_get(const struct flags_snap *s, const char *key, size_t keylen)
{
	if (!s || (!key && keylen))
		return NULL;
	return snap_lookup(s, key ? key : "", keylen);
}

const struct flags_item *flags_snap_at(const struct flags_snap *s, size_t i)
{
	return s && i < s->n ? snap_item(s, i) : NULL;
}

const struct flag *flags_item_flag(const struct flags_item *it)
{
	return it ? flagset_at(it->set, 0) : NULL;
}

const json_t *flags_item_def(const struct flags_item *it)
{
	return it->def;
}

const char *flags_item_source(const struct flags_item *it)
{
	return it->source;
}

const char *flags_item_text(const struct flags_item *it)
{
	return it->text;
}

const char *flags_snap_segments_text(const struct flags_snap *s)
{
	return s->segs_text;
}

void flags_item_count(const struct flags_item *it, const struct flag_result *r)
{
	const struct flag *f = flagset_at(it->set, 0);

	for (size_t v = 0; v < flag_variant_count(f); v++)
		if (flag_variant_name(f, v) == r->variant && it->ctr[v])
			atomic_fetch_add_explicit(&it->ctr[v]->n, 1, memory_order_relaxed);
}

const struct flags_snap *flags_snap_ref(const struct flags_snap *s)
{
	snap_obj_ref((struct snap_obj *)&s->obj);
	return s;
}

void flags_snap_unref(const struct flags_snap *s)
{
	snap_obj_unref(s ? (struct snap_obj *)&s->obj : NULL);
}

/* ------------------------------------------------------------------------ */
/* Reads                                                                      */

struct snapshot *flags_snapshot(struct flags *fl)
{
	return &fl->snap;
}

const struct flags_snap *flags_current(const struct flags *fl)
{
	return fl->cur;
}

uint64_t flags_revision(const struct flags *fl)
{
	return fl->revision;
}

size_t flags_count(const struct flags *fl)
{
	return fl->cur ? fl->cur->n : 0;
}

const json_t *flags_def(const struct flags *fl, const char *key, const char **source)
{
	const struct flags_item *it = fl->cur ? snap_lookup(fl->cur, key, strlen(key)) : NULL;

	if (!it)
		return NULL;
	if (source)
		*source = it->source;
	return it->def;
}

int flags_has_api(const struct flags *fl, const char *key)
{
	return kmap_get(&fl->over, key) != NULL;
}

void flags_set_listener(struct flags *fl, const struct flags_listener *ops, void *arg)
{
	fl->lops = ops;
	fl->larg = arg;
}

int flags_validate(const struct flags *fl, const char *key, const json_t *body,
                   struct config_errors *errs, json_t **def_out)
{
	struct flags_item *it;
	char msg[256];
	int rc =
	    item_parse(NULL, "request", key, body, &fl->conf, errs, msg, sizeof(msg), NULL, &it);

	*def_out = rc ? NULL : json_incref(it->def);
	item_unref(it);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* Changes                                                                    */

/*
 * Applies key's new API version (it, borrowed; NULL: the API version is
 * gone) at rev: the overlay, a derived snapshot, the listener.  Runs in the
 * "flag" subscriber, so it may not fail: on ENOMEM the whole snapshot is
 * rebuilt instead, and failing that the old one stays (logged).
 */
static void apply(struct flags *fl, const char *key, struct flags_item *it, uint64_t rev)
{
	struct flags_item *old = NULL, *eff = it ? it : kmap_get(&fl->conf.idx, key);
	struct flags_snap *s;

	if (it) {
		if (kmap_put(&fl->over, flags_item_ref(it), &old) != 0) {
			item_unref(it);
			log_error("flag change not applied: out of memory", "flag", key, NULL);
			return;
		}
	} else {
		old = kmap_del(&fl->over, key);
	}
	item_unref(old);
	s = snap_derive(fl->cur, &fl->conf, key, eff);
	if (!s)
		s = snap_full(&fl->conf, &fl->over);
	if (!s) {
		log_error("flag change not published: out of memory", "flag", key, NULL);
		return;
	}
	snap_publish(fl, s, rev);
	if (fl->lops && fl->lops->changed)
		fl->lops->changed(fl->larg, rev, key, eff ? eff->def : NULL);
}

/* The "flag" subscriber: local commits hand their item, remote ones are parsed. */
static void on_flag_doc(void *arg, const struct state_update *u)
{
	struct flags *fl = arg;
	struct flags_item *it = u->prepared;
	char msg[512];

	if (it || !u->json) {
		apply(fl, u->name, it, (uint64_t)u->rev);
		return;
	}
	if (item_from_doc(fl, u->name, u->json, &fl->conf, msg, sizeof(msg), &it) != 0) {
		log_error("a flag committed elsewhere is not valid here; keeping the old one",
		          "flag", u->name, "error", msg, NULL);
		return;
	}
	apply(fl, u->name, it, (uint64_t)u->rev);
	item_unref(it);
}

/* Commits doc (NULL: delete) of key with its event; retries with a short event on E2BIG. */
static int commit(struct flags *fl, const char *actor, const char *kind, const char *key,
                  struct flags_item *it, const json_t *before, const json_t *after,
                  const json_t *extra, char *msg, size_t msglen)
{
	char subject[KEY_BUF + 8], *dt = NULL;
	json_t *details = extra ? json_deep_copy(extra) : json_object();
	struct state_doc doc = {.kind = DOC_KIND,
	                        .name = key,
	                        .json = it ? it->text : NULL,
	                        .expect_rev = STORE_REV_ANY,
	                        .prepared = it};
	struct state_event ev = {.actor = actor, .kind = kind, .subject = subject};
	int rc;

	snprintf(subject, sizeof(subject), "flag/%s", key);
	if (!details)
		return -ENOMEM;
	json_object_set(details, "before", before ? (json_t *)before : json_null());
	json_object_set(details, "after", after ? (json_t *)after : json_null());
	dt = flag_json_text(details);
	if (!dt) {
		rc = -ENOMEM;
		goto out;
	}
	ev.details = dt;
	rc = state_commit(fl->state, &doc, 1, &ev, 1, NULL);
	if (rc == -E2BIG) {
		/* definitions too large for an event: record that they changed */
		json_object_set_new(details, "before", json_null());
		json_object_set_new(details, "after", json_null());
		json_object_set_new(details, "truncated", json_true());
		free(dt);
		dt = json_dumps(details, JSON_COMPACT);
		ev.details = dt;
		rc = dt ? state_commit(fl->state, &doc, 1, &ev, 1, NULL) : -ENOMEM;
	}
	if (rc && rc != -ENOMEM) {
		char why[400];

		snprintf(msg, msglen, "cannot persist the change: %s",
		         state_errmsg(fl->state, why, sizeof(why)));
	}
out:
	free(dt);
	json_decref(details);
	return rc;
}

int flags_put(struct flags *fl, const char *key, const json_t *body, const char *actor,
              const char *kind, const json_t *extra, struct config_errors *errs, char *msg,
              size_t msglen)
{
	struct config_errors own;
	struct flags_item *it = NULL, *conf_it;
	const json_t *before = flags_def(fl, key, NULL), *after;
	json_t *before_ref = json_incref((json_t *)before);
	int rc;

	if (msglen)
		msg[0] = '\0';
	config_errors_init(&own);
	if (body) {
		rc = item_parse(fl, "request", key, body, &fl->conf, errs ? errs : &own, msg,
		                msglen, NULL, &it);
		if (rc)
			goto out;
		if (before && json_equal((json_t *)before, it->def)) {
			rc = ERR_NOCHANGE;
			goto out;
		}
		after = it->def;
	} else {
		if (!flags_has_api(fl, key)) {
			rc = ERR_NOCHANGE; /* no API version to drop */
			goto out;
		}
		conf_it = kmap_get(&fl->conf.idx, key);
		after = conf_it ? conf_it->def : NULL;
	}
	rc = commit(fl, actor, kind, key, it, before_ref, after, extra, msg, msglen);
	if (rc == 0)
		log_info("flag changed", "flag", key, "kind", kind, "actor", actor, NULL);
out:
	item_unref(it);
	json_decref(before_ref);
	config_errors_release(&own);
	return rc;
}

/* The first variant that is not off_variant (what a percentage exposes). */
static const char *on_variant(const json_t *def)
{
	const char *off = json_string_value(json_object_get(def, "off_variant"));
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)json_object_get(def, "variants"), k, v)
	{
		if (!off || strcmp(k, off) != 0)
			return k;
	}
	return NULL;
}

json_t *flags_save(struct flags *fl, const char *key)
{
	struct flags_item *o;

	if (!fl || !flags_def(fl, key, NULL))
		return NULL;
	o = kmap_get(&fl->over, key);
	return json_pack("{s:O?}", "api", o ? o->def : NULL);
}

int flags_set_percent(struct flags *fl, const char *key, uint32_t percent, const char *actor,
                      char *msg, size_t msglen)
{
	const json_t *cur = fl ? flags_def(fl, key, NULL) : NULL;
	json_t *body, *split, *extra;
	const char *on;
	int rc;

	if (!cur) {
		snprintf(msg, msglen, "no flag named %s", key);
		return ERR_NOTFOUND;
	}
	on = on_variant(cur);
	if (!on) {
		snprintf(msg, msglen, "flag %s has no variant besides its off_variant", key);
		return ERR_INVALID;
	}
	body = def_body(cur);
	split = json_pack("{s:o}", on, flag_percent_json(percent));
	extra = json_pack("{s:o}", "percentage", flag_percent_json(percent));
	if (!body || !split || !extra) {
		json_decref(body);
		json_decref(split);
		json_decref(extra);
		snprintf(msg, msglen, "out of memory");
		return -ENOMEM;
	}
	json_object_set_new(body, "rollout", split);
	rc = flags_put(fl, key, body, actor, "flag.updated", extra, NULL, msg, msglen);
	json_decref(extra);
	json_decref(body);
	return rc == ERR_NOCHANGE ? 0 : rc;
}

int flags_restore(struct flags *fl, const char *key, const json_t *saved, const char *actor,
                  char *msg, size_t msglen)
{
	const json_t *def = json_object_get(saved, "api");
	json_t *body = json_is_object(def) ? def_body(def) : NULL;
	int rc;

	if (!fl || !json_is_object(saved) || (json_is_object(def) && !body)) {
		json_decref(body);
		snprintf(msg, msglen, "nothing to restore flag %s from", key);
		return ERR_INVALID;
	}
	rc = flags_put(fl, key, body, actor, "flag.restored", NULL, NULL, msg, msglen);
	json_decref(body);
	return rc == ERR_NOCHANGE ? 0 : rc;
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                  */

struct load_ctx {
	struct flags *fl;
	const struct conf_state *cs;
	struct kmap *over;
	char *err;
	size_t errlen;
	int rc;
};

static int load_doc(void *arg, const char *name, const char *json, int64_t rev)
{
	struct load_ctx *lc = arg;
	struct flags_item *it, *old;
	char msg[512];

	lc->rc = item_from_doc(lc->fl, name, json, lc->cs, msg, sizeof(msg), &it);
	if (lc->rc) {
		snprintf(lc->err, lc->errlen,
		         "flag %s (set through the API, stored at revision %lld) is not valid with "
		         "this configuration: %s",
		         name, (long long)rev, lc->rc == -ENOMEM ? "out of memory" : msg);
		return -1;
	}
	if (kmap_put(lc->over, it, &old) != 0) {
		item_unref(it);
		lc->rc = -ENOMEM;
		snprintf(lc->err, lc->errlen, "out of memory");
		return -1;
	}
	item_unref(old);
	return 0;
}

static void over_release(struct kmap *m)
{
	for (size_t i = 0; m->slots && i <= m->mask; i++)
		item_unref(m->slots[i]);
	kmap_release(m);
}

/*
 * Makes the store's digest of the config flag set conf's; when it differs,
 * commits it with an event through the state layer (*changed = 1).
 */
static int record_digest(struct flags *fl, const struct conf_state *conf, const char *actor,
                         int *changed)
{
	char *old = NULL, doc[96];
	int rc = store_doc_get(fl->store, DIGEST_KIND, DIGEST_NAME, &old, NULL);
	int same;

	*changed = 0;
	if (rc && rc != STORE_ERR_NOTFOUND)
		return state_err_of_store(rc);
	snprintf(doc, sizeof(doc), "{\"digest\":\"%s\"}", conf->digest);
	same = old && strcmp(old, doc) == 0;
	free(old);
	if (same)
		return 0;
	rc = state_commit(
	    fl->state,
	    &(struct state_doc){
	        .kind = DIGEST_KIND, .name = DIGEST_NAME, .json = doc, .expect_rev = STORE_REV_ANY},
	    1,
	    &(struct state_event){
	        .actor = actor, .kind = "flags.config_changed", .subject = "flags", .details = doc},
	    1, NULL);
	*changed = rc == 0;
	return rc;
}

static uint64_t store_rev(struct store *st)
{
	int64_t rev = 0;

	store_revision(st, &rev);
	return rev > 0 ? (uint64_t)rev : 0;
}

struct flags *flags_new(struct state *state, const struct config *cfg, char *err, size_t errlen)
{
	struct flags *fl = calloc(1, sizeof(*fl));
	struct load_ctx lc;
	struct flags_snap *s;
	int changed, rc;

	if (!fl) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	fl->state = state;
	fl->store = state_store(state);
	snapshot_init(&fl->snap);
	if (conf_prepare(fl, &fl->conf, cfg, err, errlen) != 0)
		goto out_free;
	lc = (struct load_ctx){fl, &fl->conf, &fl->over, err, errlen, 0};
	rc = store_doc_list(fl->store, DOC_KIND, load_doc, &lc);
	if (rc) {
		if (!lc.rc)
			snprintf(err, errlen, "cannot read the flags from the store: %s",
			         store_strerror(rc));
		goto out_free;
	}
	s = snap_full(&fl->conf, &fl->over);
	if (!s) {
		snprintf(err, errlen, "out of memory");
		goto out_free;
	}
	rc = record_digest(fl, &fl->conf, "canaryd", &changed);
	if (rc) {
		snap_obj_unref(&s->obj);
		snprintf(err, errlen, "cannot record the flag configuration: %s", err_str(rc));
		goto out_free;
	}
	snap_publish(fl, s, store_rev(fl->store));
	if (state_subscribe(state, DOC_KIND, on_flag_doc, fl) != 0) {
		snprintf(err, errlen, "cannot subscribe to flag changes");
		goto out_free;
	}
	return fl;
out_free:
	flags_free(fl);
	return NULL;
}

/* Every stored flag parsed again under cs (new segments).  0, or an error with err. */
static int over_reparse(struct flags *fl, const struct conf_state *cs, struct kmap *out, char *err,
                        size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (kmap_reserve(out, fl->over.n) != 0)
		goto out_nomem;
	for (size_t i = 0; fl->over.slots && i <= fl->over.mask; i++) {
		struct flags_item *o = fl->over.slots[i], *it, *old;
		json_t *body;
		struct config_errors errs;
		char msg[512];
		int rc;

		if (!o)
			continue;
		body = def_body(o->def);
		if (!body)
			goto out_nomem;
		config_errors_init(&errs);
		rc = item_parse(cs == &fl->conf ? fl : NULL, "store", o->key, body, cs, &errs, msg,
		                sizeof(msg), &(struct text_hint){o->text, o->def}, &it);
		config_errors_release(&errs);
		json_decref(body);
		if (rc) {
			snprintf(err, errlen,
			         "flag %s (set through the API) is not valid with the new "
			         "configuration: %s",
			         o->key, rc == -ENOMEM ? "out of memory" : msg);
			over_release(out);
			return rc;
		}
		kmap_put(out, it, &old); /* reserved */
	}
	return 0;
out_nomem:
	over_release(out);
	snprintf(err, errlen, "out of memory");
	return -ENOMEM;
}

int flags_check(struct flags *fl, const struct config *cfg, char *err, size_t errlen)
{
	struct conf_state cs;
	struct kmap over;
	int rc = conf_prepare(NULL, &cs, cfg, err, errlen);

	if (rc)
		return rc;
	rc = over_reparse(fl, &cs, &over, err, errlen);
	over_release(&over);
	conf_release(&cs);
	return rc;
}

/* Counters for every item of the new state (a check built them without). */
static void attach_counters(struct flags *fl, struct flags_item *it)
{
	const struct flag *f = flagset_at(it->set, 0);

	for (size_t v = 0; v < flag_variant_count(f); v++)
		if (!it->ctr[v])
			it->ctr[v] = counter_of(fl, it->key, flag_variant_name(f, v));
}

int flags_reload(struct flags *fl, const struct config *cfg, const char *actor, char *err,
                 size_t errlen)
{
	struct conf_state cs;
	struct kmap over;
	struct flags_snap *s;
	int changed = 0, rc;

	rc = conf_prepare(fl, &cs, cfg, err, errlen);
	if (rc)
		return rc;
	if (strcmp(cs.digest, fl->conf.digest) == 0) {
		conf_release(&cs); /* the same flags and segments: nothing to do */
		return 0;
	}
	rc = over_reparse(fl, &cs, &over, err, errlen);
	if (rc) {
		conf_release(&cs);
		return rc;
	}
	for (size_t i = 0; over.slots && i <= over.mask; i++)
		if (over.slots[i])
			attach_counters(fl, over.slots[i]);
	s = snap_full(&cs, &over);
	if (!s) {
		over_release(&over);
		conf_release(&cs);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	rc = record_digest(fl, &cs, actor, &changed);
	if (rc) {
		snap_obj_unref(&s->obj);
		over_release(&over);
		conf_release(&cs);
		snprintf(err, errlen, "cannot record the flag configuration: %s", err_str(rc));
		return rc;
	}
	conf_release(&fl->conf);
	fl->conf = cs;
	over_release(&fl->over);
	fl->over = over;
	snap_publish(fl, s, store_rev(fl->store));
	/* segments may have changed too: every consumer starts over */
	if (fl->lops && fl->lops->reset)
		fl->lops->reset(fl->larg, fl->revision);
	return 0;
}

void flags_count_error(struct flags *fl, enum flag_error e)
{
	if ((int)e >= 0 && (int)e < NERRORS)
		atomic_fetch_add_explicit(&fl->errors[e], 1, memory_order_relaxed);
}

/* A Prometheus label value: \ " and newline escaped. */
static void label(struct buf *out, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			buf_append(out, "\\", 1);
		if (*s == '\n')
			buf_append_str(out, "\\n");
		else
			buf_append(out, s, 1);
	}
}

void flags_write_prometheus(struct flags *fl, struct buf *out)
{
	if (!fl)
		return;
	buf_append_str(out, "# HELP canaryd_flag_evaluations_total Flag evaluations served, by "
	                    "variant.\n# TYPE canaryd_flag_evaluations_total counter\n");
	for (size_t i = 0; i < fl->ncv; i++) {
		buf_append_str(out, "canaryd_flag_evaluations_total{flag=\"");
		label(out, fl->cv[i]->flag);
		buf_append_str(out, "\",variant=\"");
		label(out, fl->cv[i]->variant);
		buf_printf(
		    out, "\"} %llu\n",
		    (unsigned long long)atomic_load_explicit(&fl->cv[i]->n, memory_order_relaxed));
	}
	buf_append_str(out, "# HELP canaryd_flag_evaluation_errors_total Flag evaluations that "
	                    "failed, by OpenFeature error code.\n"
	                    "# TYPE canaryd_flag_evaluation_errors_total counter\n");
	for (int e = FLAG_ERROR_TARGETING_KEY_MISSING; e < NERRORS; e++)
		buf_printf(
		    out, "canaryd_flag_evaluation_errors_total{code=\"%s\"} %llu\n",
		    flag_error_name((enum flag_error)e),
		    (unsigned long long)atomic_load_explicit(&fl->errors[e], memory_order_relaxed));
	buf_printf(out,
	           "# HELP canaryd_flags_revision Revision of the flag state (the stream's id).\n"
	           "# TYPE canaryd_flags_revision gauge\n"
	           "canaryd_flags_revision %llu\n",
	           (unsigned long long)fl->revision);
}

void flags_free(struct flags *fl)
{
	if (!fl)
		return;
	if (fl->state)
		state_unsubscribe(fl->state, DOC_KIND, on_flag_doc, fl);
	snap_obj_unref(fl->cur ? &fl->cur->obj : NULL);
	snapshot_release(&fl->snap);
	over_release(&fl->over);
	conf_release(&fl->conf);
	for (size_t i = 0; i < fl->ncv; i++) {
		free(fl->cv[i]->flag);
		free(fl->cv[i]->variant);
		free(fl->cv[i]);
	}
	free(fl->cv);
	free(fl->ctab);
	free(fl);
}
