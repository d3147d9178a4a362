/*
 * flags.c - the feature-flag endpoints, OFREP and the flag stream (see
 * flags.h, docs/api.md, docs/flags.md).
 *
 * State.  `conf` holds the configuration's flags and segments, `over` the
 * flags written through the API (store documents, sorted by key).  Both keep
 * each flag as its normalised JSON definition plus the struct config_flag
 * parsed back from that JSON, so what the server compiles is exactly what
 * the stream sends to client libraries.  The effective list is conf's flags
 * in config order (each replaced by its API version if there is one), then
 * the API-only flags by key.
 *
 * A change: validate (config_flag_from_json, the YAML rules) -> compile the
 * candidate set -> persist the document and its audit event in one
 * transaction -> publish the snapshot -> push the change to subscribers ->
 * reply.  A failure before the commit changes nothing.
 */
#include "api/flags.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bucket.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/str.h"
#include "http/server.h"
#include "rollout/engine.h"
#include "store/store.h"

#define DOC_KIND     "flag"
#define DIGEST_KIND  "flagconfig"
#define DIGEST_NAME  "digest"
#define RING_CAP     1024  /* recent changes kept for Last-Event-ID resumes */
#define COUNTERS_MAX 4096  /* (flag, variant) evaluation counters */
#define NODE_MAX     256   /* bytes of one node id in an exclusion */
#define HEARTBEAT_MS 15000 /* default; $CANARYD_SSE_HEARTBEAT_MS */
#define SEED_STICKY  "nodeId"
#define NO_SLOT      UINT32_MAX
#define NERRORS      (FLAG_ERROR_GENERAL + 1)
#define KEY_BUF      (STORE_NAME_MAX + 1)

/* One flag definition: normalised JSON (with "key") and its parsed form. */
struct fentry {
	char *key;
	json_t *def;
	struct config_flag *cf;
};

struct flist {
	struct fentry **v;
	size_t n;
};

/* What comes from one configuration. */
struct conf_state {
	struct flist flags;
	struct config_segment **segs; /* owned (config_segment_from_json) */
	struct config_segment *segv;  /* shallow copies, contiguous (flagset_build) */
	size_t nsegs;
	json_t *segs_json;
	char digest[40];
};

struct ring_entry {
	uint64_t rev;
	char *data;
};

struct sub {
	struct api_stream hooks; /* first: admin.c gives it back */
	struct api_flags *fl;
	struct http_conn *conn;
	struct sub *prev, *next;
	int resume_ok;
	uint64_t last_id;
};

struct eval_counter {
	char *flag, *variant;
	atomic_uint_fast64_t n;
};

struct api_flags {
	struct api *api;
	struct store *store;
	struct loop *loop;
	struct conf_state conf;
	struct flist over;
	struct snapshot snap;
	struct api_flags_snap *cur; /* the control thread's reference to the published set */
	uint64_t revision;
	struct ring_entry ring[RING_CAP];
	size_t ring_head, ring_n;
	uint64_t ring_base; /* resumable: Last-Event-ID in [ring_base, revision] */
	struct sub *subs;
	size_t nsubs;
	uint64_t dropped;
	uint64_t heartbeat_ms;
	struct loop_timer hb;
	struct eval_counter *ctr;
	size_t nctr;
	atomic_uint_fast64_t ctr_overflow;
	atomic_uint_fast64_t errors[NERRORS];
};

/* ------------------------------------------------------------------------ */
/* Definitions                                                                */

static void reply_nomem(struct api_call *call)
{
	api_reply_error(call, 500, "internal", NULL, "out of memory");
}

/* api_reply_json with flag_json_text()'s reals (obj stolen). */
static void reply_json(struct api_call *call, int status, json_t *obj)
{
	char *s = obj ? flag_json_text(obj) : NULL;

	json_decref(obj);
	if (!s) {
		reply_nomem(call);
		return;
	}
	call->resp->status = status;
	call->resp->content_type = "application/json";
	buf_reset(&call->resp->body);
	if (buf_append_str(&call->resp->body, s) || buf_append(&call->resp->body, "\n", 1))
		api_reply_error(call, 500, "internal", NULL, "response too large");
	free(s);
}

static void fentry_free(struct fentry *e)
{
	if (!e)
		return;
	free(e->key);
	json_decref(e->def);
	config_flag_free(e->cf);
	free(e);
}

static void flist_release(struct flist *l)
{
	for (size_t i = 0; i < l->n; i++)
		fentry_free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static long flist_find(const struct flist *l, const char *key)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i]->key, key) == 0)
			return (long)i;
	return -1;
}

/* The definition without "key": what config_flag_from_json accepts.  New reference. */
static json_t *def_body(const json_t *def)
{
	json_t *d = json_copy((json_t *)def);

	if (d)
		json_object_del(d, "key");
	return d;
}

/* A config with only segments, so config_flag_from_json resolves rule segments. */
static void fake_config(struct config *fake, const struct conf_state *cs)
{
	memset(fake, 0, sizeof(*fake));
	fake->segments = cs->segv;
	fake->nsegments = cs->nsegs;
}

/*
 * Parses def (without "key") as flag key under cs's segments; on success a
 * new entry whose def is the normalised definition.  NULL with errs filled
 * (or errs empty on ENOMEM).
 */
static struct fentry *fentry_parse(const char *source, const char *key, const json_t *def,
                                   const struct conf_state *cs, struct config_errors *errs)
{
	struct config fake;
	struct fentry *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	fake_config(&fake, cs);
	e->cf = config_flag_from_json(source, key, def, &fake, errs);
	if (!e->cf)
		goto out_free;
	e->key = strdup(key);
	e->def = flag_config_to_json(e->cf);
	if (!e->key || !e->def)
		goto out_free;
	return e;
out_free:
	fentry_free(e);
	return NULL;
}

/* "path: message" of the first error, for logs and reload messages. */
static void first_error(const struct config_errors *errs, char *out, size_t len)
{
	const struct config_error *e = config_errors_get(errs, 0);

	if (!e)
		snprintf(out, len, "out of memory");
	else
		snprintf(out, len, "%s%s%s", e->path, e->path[0] ? ": " : "", e->message);
}

static void conf_release(struct conf_state *cs)
{
	flist_release(&cs->flags);
	for (size_t i = 0; i < cs->nsegs; i++)
		config_segment_free(cs->segs[i]);
	free(cs->segs);
	free(cs->segv);
	json_decref(cs->segs_json);
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
 * back (what a client library will see).  0, or -1 with a message in err.
 */
static int conf_prepare(struct conf_state *cs, const struct config *cfg, char *err, size_t errlen)
{
	struct config_errors errs;
	json_t *all = NULL, *flags = NULL;
	char *text = NULL;
	int rc = -1;

	memset(cs, 0, sizeof(*cs));
	config_errors_init(&errs);
	cs->segs = calloc(cfg->nsegments + 1, sizeof(*cs->segs));
	cs->segv = calloc(cfg->nsegments + 1, sizeof(*cs->segv));
	cs->flags.v = calloc(cfg->nflags + 1, sizeof(*cs->flags.v));
	cs->segs_json = json_array();
	flags = json_array();
	if (!cs->segs || !cs->segv || !cs->flags.v || !cs->segs_json || !flags)
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
			goto out;
		}
		cs->segv[i] = *cs->segs[i];
		cs->nsegs++;
		json_array_append_new(cs->segs_json, j);
	}
	for (size_t i = 0; i < cfg->nflags; i++) {
		json_t *j = flag_config_to_json(&cfg->flags[i]), *body;
		char msg[512];

		if (!j)
			goto out_nomem;
		body = def_body(j);
		json_decref(j);
		cs->flags.v[i] =
		    body ? fentry_parse("config", cfg->flags[i].name, body, cs, &errs) : NULL;
		json_decref(body);
		if (!cs->flags.v[i]) {
			first_error(&errs, msg, sizeof(msg));
			snprintf(err, errlen, "flags.%s: %s", cfg->flags[i].name, msg);
			goto out;
		}
		cs->flags.n++;
		json_array_append(flags, cs->flags.v[i]->def);
	}
	all = json_pack("{s:O, s:O}", "flags", flags, "segments", cs->segs_json);
	text = all ? json_dumps(all, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	if (!text)
		goto out_nomem;
	digest_of(text, cs->digest, sizeof(cs->digest));
	rc = 0;
	goto out;
out_nomem:
	snprintf(err, errlen, "out of memory");
out:
	free(text);
	json_decref(all);
	json_decref(flags);
	config_errors_release(&errs);
	if (rc)
		conf_release(cs);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* Snapshots                                                                  */

static void snap_destroy(struct snap_obj *o)
{
	struct api_flags_snap *s = (struct api_flags_snap *)o;

	flagset_free(s->set);
	json_decref(s->defs);
	json_decref(s->segments);
	free(s->source);
	free(s->slot_base);
	free(s->slots);
	free(s->ruleset_text);
	free(s);
}

/* The counter slot of (flag, variant), created on first use; NO_SLOT when full. */
static uint32_t counter_slot(struct api_flags *fl, const char *flag, const char *variant)
{
	struct eval_counter *c;

	for (size_t i = 0; i < fl->nctr; i++)
		if (strcmp(fl->ctr[i].flag, flag) == 0 && strcmp(fl->ctr[i].variant, variant) == 0)
			return (uint32_t)i;
	if (fl->nctr == COUNTERS_MAX)
		return NO_SLOT;
	c = &fl->ctr[fl->nctr];
	c->flag = strdup(flag);
	c->variant = strdup(variant);
	if (!c->flag || !c->variant) {
		free(c->flag);
		free(c->variant);
		c->flag = c->variant = NULL;
		return NO_SLOT;
	}
	atomic_init(&c->n, 0);
	return (uint32_t)fl->nctr++;
}

/*
 * The effective list for conf overlaid by over: conf's flags in order (each
 * replaced by over's version), then over's other flags.  *src gets "config"
 * or "api" per entry.  Arrays are new (the entries borrowed); -ENOMEM.
 */
static int effective(const struct conf_state *conf, const struct flist *over,
                     const struct fentry ***out, const char ***src, size_t *n)
{
	size_t cap = conf->flags.n + over->n + 1, k = 0;
	const struct fentry **v = calloc(cap, sizeof(*v));
	const char **s = calloc(cap, sizeof(*s));

	if (!v || !s) {
		free(v);
		free(s);
		return -ENOMEM;
	}
	for (size_t i = 0; i < conf->flags.n; i++) {
		long j = flist_find(over, conf->flags.v[i]->key);

		v[k] = j >= 0 ? over->v[j] : conf->flags.v[i];
		s[k++] = j >= 0 ? "api" : "config";
	}
	for (size_t i = 0; i < over->n; i++) {
		if (flist_find(&conf->flags, over->v[i]->key) >= 0)
			continue;
		v[k] = over->v[i];
		s[k++] = "api";
	}
	*out = v;
	*src = s;
	*n = k;
	return 0;
}

/* Compiles conf + over into a new snapshot (one reference).  NULL + err. */
static struct api_flags_snap *snap_build(struct api_flags *fl, const struct conf_state *conf,
                                         const struct flist *over, char *err, size_t errlen)
{
	struct api_flags_snap *s = calloc(1, sizeof(*s));
	const struct fentry **ents = NULL;
	struct config_flag *cfs = NULL;
	size_t n = 0, nslots = 0;

	if (!s || effective(conf, over, &ents, &s->source, &n) != 0)
		goto out_nomem;
	snap_obj_init(&s->obj, snap_destroy);
	cfs = calloc(n + 1, sizeof(*cfs));
	s->defs = json_array();
	s->segments = json_incref(conf->segs_json);
	if (!cfs || !s->defs)
		goto out_nomem;
	for (size_t i = 0; i < n; i++) {
		cfs[i] = *ents[i]->cf;
		if (json_array_append(s->defs, ents[i]->def) != 0)
			goto out_nomem;
	}
	s->set = flagset_build(cfs, n, conf->segv, conf->nsegs, err, errlen);
	if (!s->set)
		goto out_free;
	s->slot_base = calloc(n + 1, sizeof(*s->slot_base));
	for (size_t i = 0; i < n; i++)
		nslots += flag_variant_count(flagset_at(s->set, i));
	s->slots = calloc(nslots + 1, sizeof(*s->slots));
	if (!s->slot_base || !s->slots)
		goto out_nomem;
	nslots = 0;
	for (size_t i = 0; i < n; i++) {
		const struct flag *f = flagset_at(s->set, i);

		s->slot_base[i] = (uint32_t)nslots;
		for (size_t v = 0; v < flag_variant_count(f); v++)
			s->slots[nslots++] = counter_slot(fl, flag_key(f), flag_variant_name(f, v));
	}
	free(ents);
	free(cfs);
	return s;
out_nomem:
	snprintf(err, errlen, "out of memory");
out_free:
	free(ents);
	free(cfs);
	if (s && s->obj.destroy) {
		snap_obj_unref(&s->obj);
	} else if (s) {
		free(s->source);
		free(s);
	}
	return NULL;
}

/* Publishes s (stealing the caller's reference) at revision rev. */
static void snap_publish(struct api_flags *fl, struct api_flags_snap *s, uint64_t rev)
{
	s->revision = rev;
	fl->revision = rev;
	snap_obj_unref(fl->cur ? &fl->cur->obj : NULL);
	fl->cur = s;
	snapshot_publish(&fl->snap, snap_obj_ref(&s->obj));
}

/* The effective definition of key in the published set, or NULL (borrowed). */
static json_t *current_def(const struct api_flags *fl, const char *key, const char **source)
{
	const struct flag *f = flagset_find(fl->cur->set, key, strlen(key));
	size_t i;

	if (!f)
		return NULL;
	i = flagset_index(fl->cur->set, f);
	if (source)
		*source = fl->cur->source[i];
	return json_array_get(fl->cur->defs, i);
}

/* ------------------------------------------------------------------------ */
/* The stream                                                                 */

static const char *ruleset_text(struct api_flags_snap *s)
{
	if (!s->ruleset_text) {
		json_t *o = json_pack("{s:I, s:O, s:O}", "revision", (json_int_t)s->revision,
		                      "flags", s->defs, "segments", s->segments);

		s->ruleset_text = o ? flag_json_text(o) : NULL;
		json_decref(o);
	}
	return s->ruleset_text;
}

static void sub_send(struct api_flags *fl, struct sub *s, uint64_t rev, const char *event,
                     const char *data)
{
	char id[24];
	int rc;

	if (!data)
		return;
	snprintf(id, sizeof(id), "%llu", (unsigned long long)rev);
	rc = http_conn_sse_send(s->conn, str_c(id), str_c(event), str_c(data));
	if (rc == -ENOBUFS)
		fl->dropped++; /* the server closed it: a slow subscriber reconnects */
}

static void sub_start(struct api_stream *st, struct http_conn *conn)
{
	struct sub *s = (struct sub *)st;
	struct api_flags *fl = s->fl;

	s->conn = conn;
	s->next = fl->subs;
	if (fl->subs)
		fl->subs->prev = s;
	fl->subs = s;
	fl->nsubs++;
	if (http_conn_start_sse(conn, NULL, 0) != 0)
		return; /* closed: sub_closed follows */
	if (s->resume_ok && s->last_id >= fl->ring_base && s->last_id <= fl->revision) {
		for (size_t i = 0; i < fl->ring_n; i++) {
			const struct ring_entry *e = &fl->ring[(fl->ring_head + i) % RING_CAP];

			if (e->rev > s->last_id)
				sub_send(fl, s, e->rev, "change", e->data);
		}
		return;
	}
	sub_send(fl, s, fl->revision, "ruleset", ruleset_text(fl->cur));
}

static void sub_closed(struct api_stream *st)
{
	struct sub *s = (struct sub *)st;
	struct api_flags *fl = s->fl;

	if (fl && s->conn) {
		if (s->prev)
			s->prev->next = s->next;
		else
			fl->subs = s->next;
		if (s->next)
			s->next->prev = s->prev;
		fl->nsubs--;
	}
	free(s);
}

static void broadcast(struct api_flags *fl, uint64_t rev, const char *event, const char *data)
{
	for (struct sub *s = fl->subs; s; s = s->next)
		sub_send(fl, s, rev, event, data);
}

static void ring_clear(struct api_flags *fl, uint64_t base)
{
	for (size_t i = 0; i < fl->ring_n; i++)
		free(fl->ring[(fl->ring_head + i) % RING_CAP].data);
	fl->ring_head = fl->ring_n = 0;
	fl->ring_base = base;
}

/* Records the change of key at rev (def NULL: the flag is gone) and pushes it. */
static void stream_change(struct api_flags *fl, uint64_t rev, const char *key, json_t *def)
{
	json_t *o = json_pack("{s:I, s:s, s:O}", "revision", (json_int_t)rev, "key", key, "flag",
	                      def ? def : json_null());
	char *text = o ? flag_json_text(o) : NULL;
	struct ring_entry *e;

	json_decref(o);
	if (!text) {
		/* cannot describe it: make every resume start from a full ruleset */
		ring_clear(fl, rev);
		return;
	}
	if (fl->ring_n == RING_CAP) {
		e = &fl->ring[fl->ring_head];
		fl->ring_base = e->rev;
		free(e->data);
		fl->ring_head = (fl->ring_head + 1) % RING_CAP;
		fl->ring_n--;
	}
	e = &fl->ring[(fl->ring_head + fl->ring_n) % RING_CAP];
	e->rev = rev;
	e->data = text;
	fl->ring_n++;
	broadcast(fl, rev, "change", text);
}

static void heartbeat(struct loop *loop, struct loop_timer *t)
{
	struct api_flags *fl = t->data;

	for (struct sub *s = fl->subs; s; s = s->next)
		if (http_conn_sse_comment(s->conn, STR_LIT("hb")) == -ENOBUFS)
			fl->dropped++;
	loop_timer_start(loop, t, fl->heartbeat_ms);
}

static void h_stream(struct api_call *call)
{
	struct api_flags *fl = call->api->flags;
	struct sub *s = calloc(1, sizeof(*s));
	struct str id = str_trim(call->req->last_event_id);
	unsigned long long last;

	if (!s) {
		reply_nomem(call);
		return;
	}
	s->hooks.start = sub_start;
	s->hooks.closed = sub_closed;
	s->fl = fl;
	if (id.len && str_to_u64(id, &last) == 0) {
		s->resume_ok = 1;
		s->last_id = last;
	}
	call->resp->status = 200;
	call->resp->stream = &s->hooks;
}

/* ------------------------------------------------------------------------ */
/* Changes                                                                    */

/* Copies the path parameter into buf; 0, or -1 when it does not fit. */
static int param(const struct api_call *call, int i, char *buf, size_t len)
{
	struct str p = call->params[i];

	if (p.len >= len)
		return -1;
	memcpy(buf, p.p, p.len);
	buf[p.len] = '\0';
	return 0;
}

/* Percent-decodes p into buf; 0, or -1 (too long, bad escape, NUL). */
static int pct_decode(struct str p, char *buf, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; i < p.len; i++) {
		char c = p.p[i];

		if (c == '%') {
			int hi, lo;

			if (i + 2 >= p.len)
				return -1;
			hi = str_hexval((unsigned char)p.p[i + 1]);
			lo = str_hexval((unsigned char)p.p[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			c = (char)(hi * 16 + lo);
			i += 2;
		}
		if (c == '\0' || o + 1 >= len)
			return -1;
		buf[o++] = c;
	}
	buf[o] = '\0';
	return 0;
}

static void reply_errors(struct api_call *call, const struct config_errors *errs)
{
	const struct config_error *e = config_errors_get(errs, 0);

	if (!e) {
		reply_nomem(call);
		return;
	}
	api_reply_error(call, 422, "invalid", e->path[0] ? e->path : NULL, "%s%s%s", e->path,
	                e->path[0] ? ": " : "", e->message);
}

/* Sum of the fallthrough rollout's shares that are not the off variant (thousandths). */
static uint32_t def_percentage(const json_t *def)
{
	const char *off = json_string_value(json_object_get(def, "off_variant"));
	const char *k;
	json_t *v;
	uint32_t total = 0, t;

	json_object_foreach((json_t *)json_object_get(def, "rollout"), k, v)
	{
		if ((!off || strcmp(k, off) != 0) && json_is_number(v) &&
		    config_percent_from_double(json_number_value(v), &t) == 0)
			total += t;
	}
	return total;
}

/* The API's view of a flag: its definition, plus "feature", "percentage", "source". */
static json_t *flag_view(const json_t *def, const char *source)
{
	json_t *o = json_deep_copy(def);

	if (!o)
		return NULL;
	json_object_set_new(o, "feature", json_incref(json_object_get(def, "key")));
	json_object_set_new(o, "percentage", flag_percent_json(def_percentage(def)));
	json_object_set_new(o, "source", json_string(source));
	return o;
}

static void reply_flag(struct api_call *call, int status, const char *key)
{
	const char *source = "api";
	json_t *def = current_def(call->api->flags, key, &source);
	json_t *o = def ? flag_view(def, source) : NULL;

	if (!o) {
		reply_nomem(call);
		return;
	}
	json_object_set_new(o, "revision", json_integer((json_int_t)call->api->flags->revision));
	reply_json(call, status, o);
}

/*
 * Persists the new API definition of key (ne; NULL: drop the API's
 * document) with its audit event in one transaction.  *rev gets the new
 * revision.  0, or a store error.
 */
static int persist(struct api_flags *fl, const char *actor, const char *kind, const char *key,
                   const struct fentry *ne, json_t *before, json_t *after, json_t *extra,
                   int64_t *rev)
{
	char subject[KEY_BUF + 8];
	json_t *details = extra ? json_deep_copy(extra) : json_object();
	char *doc = NULL, *dt = NULL;
	int rc;

	snprintf(subject, sizeof(subject), "flag/%s", key);
	if (!details)
		return -ENOMEM;
	json_object_set(details, "before", before ? before : json_null());
	json_object_set(details, "after", after ? after : json_null());
	dt = flag_json_text(details);
	if (ne)
		doc = flag_json_text(ne->def);
	if (!dt || (ne && !doc)) {
		rc = -ENOMEM;
		goto out;
	}
	rc = store_begin(fl->store);
	if (rc)
		goto out;
	if (ne)
		rc = store_doc_put(fl->store, DOC_KIND, key, doc, STORE_REV_ANY, rev);
	else
		rc = store_doc_delete(fl->store, DOC_KIND, key, STORE_REV_ANY, rev);
	if (!rc) {
		rc = store_event_append(fl->store, actor, kind, subject, dt, NULL);
		if (rc == -E2BIG) {
			/* definitions too large for an event: record that they changed */
			json_object_set_new(details, "before", json_null());
			json_object_set_new(details, "after", json_null());
			json_object_set_new(details, "truncated", json_true());
			free(dt);
			dt = json_dumps(details, JSON_COMPACT);
			rc = dt ? store_event_append(fl->store, actor, kind, subject, dt, NULL)
			        : -ENOMEM;
		}
	}
	if (!rc)
		rc = store_commit(fl->store);
	else
		store_rollback(fl->store);
out:
	free(doc);
	free(dt);
	json_decref(details);
	return rc;
}

/*
 * Commits a change of key: body is the new definition without "key" (NULL:
 * remove the API's version), kind the audit event kind, extra more event
 * details (may be NULL).  Persists it with its audit event, then publishes
 * the new set and streams the change.  Returns 0 committed, 1 nothing
 * changes (no write, no event), 422 with errs (or err) filled, 500 with err
 * (store), or -ENOMEM.
 */
static int commit_change(struct api_flags *fl, const char *actor, const char *key,
                         const json_t *body, const char *kind, json_t *extra,
                         struct config_errors *errs, char *err, size_t errlen)
{
	struct fentry *ne = NULL;
	struct flist cand = {NULL, 0};
	struct api_flags_snap *snap = NULL;
	json_t *before = current_def(fl, key, NULL), *after;
	long at = flist_find(&fl->over, key);
	int64_t rev = 0;
	int rc;

	err[0] = '\0';
	json_incref(before);
	if (body) {
		ne = fentry_parse("request", key, body, &fl->conf, errs);
		if (!ne) {
			rc = errs->n ? 422 : -ENOMEM;
			goto out;
		}
		if (before && json_equal(before, ne->def)) {
			rc = 1;
			goto out;
		}
	} else if (at < 0) {
		rc = 1; /* no API version to drop */
		goto out;
	}
	/* the candidate overlay: over with key replaced, added (sorted) or removed */
	cand.v = calloc(fl->over.n + 2, sizeof(*cand.v));
	if (!cand.v) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0, inserted = 0; i <= fl->over.n; i++) {
		if (ne && !inserted && (i == fl->over.n || strcmp(fl->over.v[i]->key, key) >= 0)) {
			cand.v[cand.n++] = ne;
			inserted = 1;
		}
		if (i < fl->over.n && (long)i != at)
			cand.v[cand.n++] = fl->over.v[i];
	}
	snap = snap_build(fl, &fl->conf, &cand, err, errlen);
	if (!snap) {
		rc = 422;
		goto out;
	}
	if (ne) {
		after = ne->def;
	} else {
		long c = flist_find(&fl->conf.flags, key); /* dropping the API's version */

		after = c >= 0 ? fl->conf.flags.v[c]->def : NULL;
	}
	rc = persist(fl, actor, kind, key, ne, before, after, extra, &rev);
	if (rc) {
		snprintf(err, errlen, "cannot persist the change: %s", store_strerror(rc));
		rc = 500;
		goto out;
	}
	/* committed: the new state becomes the running one */
	if (at >= 0)
		fentry_free(fl->over.v[at]);
	free(fl->over.v);
	fl->over = cand;
	cand.v = NULL;
	ne = NULL;
	snap_publish(fl, snap, (uint64_t)rev);
	snap = NULL;
	stream_change(fl, (uint64_t)rev, key, after);
	log_info("flag changed", "flag", key, "kind", kind, "actor", actor, NULL);
out:
	if (snap)
		snap_obj_unref(&snap->obj);
	free(cand.v);
	fentry_free(ne);
	json_decref(before);
	return rc;
}

/*
 * Applies a change of key (see commit_change) for an API call and replies:
 * status_ok with the flag's view (or a deletion body), 200 without writing
 * when nothing changes, 409 when a rollout drives the flag, 422, 500.
 */
static void apply_change(struct api_call *call, const char *key, const json_t *body,
                         const char *kind, json_t *extra, int status_ok)
{
	struct api_flags *fl = call->api->flags;
	const char *owner =
	    call->api->rollouts ? rollout_engine_flag_owner(call->api->rollouts, key) : NULL;
	struct config_errors errs;
	char err[512];
	int rc;

	/* node exclusions stay possible while a rollout drives the flag */
	if (owner && strcmp(kind, "flag.excluded") != 0 && strcmp(kind, "flag.unexcluded") != 0) {
		api_reply_error(call, 409, "conflict", NULL,
		                "flag %s is driven by rollout %s; control the rollout instead "
		                "(POST /v1/rollouts/%s/abort, or /v1/rollback)",
		                key, owner, owner);
		return;
	}
	config_errors_init(&errs);
	rc = commit_change(fl, call->actor, key, body, kind, extra, &errs, err, sizeof(err));
	if (rc == 0 && !current_def(fl, key, NULL))
		reply_json(call, status_ok,
		           json_pack("{s:s, s:b, s:I}", "key", key, "deleted", 1, "revision",
		                     (json_int_t)fl->revision));
	else if (rc == 0)
		reply_flag(call, status_ok, key);
	else if (rc == 1)
		reply_flag(call, 200, key);
	else if (rc == 422 && errs.n)
		reply_errors(call, &errs);
	else if (rc == 422)
		api_reply_error(call, 422, "invalid", NULL, "%s", err);
	else if (rc == 500)
		api_reply_error(call, 500, "store_error", NULL, "%s", err);
	else
		reply_nomem(call);
	config_errors_release(&errs);
}

/* ------------------------------------------------------------------------ */
/* Handlers                                                                   */

static void h_list(struct api_call *call)
{
	struct api_flags *fl = call->api->flags;
	json_t *arr = json_array();
	size_t i;
	json_t *def;

	json_array_foreach(fl->cur->defs, i, def)
	{
		json_array_append_new(arr, flag_view(def, fl->cur->source[i]));
	}
	reply_json(call, 200,
	           json_pack("{s:I, s:o}", "revision", (json_int_t)fl->revision, "flags", arr));
}

static void reply_no_flag(struct api_call *call, struct str key)
{
	api_reply_error(call, 404, "not_found", NULL, "no flag named \"%.*s\"",
	                (int)(key.len > 100 ? 100 : key.len), key.p);
}

/* A flag key that can be written: a config name, not the "stream" route. */
static int writable_key(const char *key)
{
	return config_valid_name(key) && strcmp(key, "stream") != 0;
}

/* A "percentage" member into *t (thousandths); 0, or -1 after replying 422. */
static int percentage_of(struct api_call *call, const json_t *v, uint32_t *t)
{
	if (json_is_number(v) && config_percent_from_double(json_number_value(v), t) == 0)
		return 0;
	api_reply_error(call, 422, "invalid", "percentage",
	                "percentage must be a number between 0 and 100 with at most 3 decimals");
	return -1;
}

static int key_param(struct api_call *call, char *key, size_t len)
{
	if (param(call, 0, key, len) != 0 || !current_def(call->api->flags, key, NULL)) {
		reply_no_flag(call, call->params[0]);
		return -1;
	}
	return 0;
}

static void h_get(struct api_call *call)
{
	char key[KEY_BUF];

	if (key_param(call, key, sizeof(key)) == 0)
		reply_flag(call, 200, key);
}

/*
 * A full definition from a request body: drops the read-only fields of the
 * API's view ("key"/"feature" must name key, "source" and "revision" are
 * ignored, "percentage" must agree with "rollout" once parsed).  Returns
 * the body to parse (new reference) or NULL after replying.
 */
static json_t *full_body(struct api_call *call, const json_t *in, const char *key,
                         json_t **percentage)
{
	static const char *const names[] = {"key", "feature"};
	json_t *b;

	for (size_t i = 0; i < 2; i++) {
		json_t *v = json_object_get(in, names[i]);

		if (v && (!json_is_string(v) || strcmp(json_string_value(v), key) != 0)) {
			api_reply_error(call, 422, "invalid", names[i], "%s must be \"%s\"",
			                names[i], key);
			return NULL;
		}
	}
	b = json_copy((json_t *)in);
	if (!b) {
		reply_nomem(call);
		return NULL;
	}
	*percentage = json_incref(json_object_get(b, "percentage"));
	json_object_del(b, "key");
	json_object_del(b, "feature");
	json_object_del(b, "source");
	json_object_del(b, "revision");
	json_object_del(b, "percentage");
	return b;
}

/* Checks a read-only "percentage" against the definition; 0, or -1 after replying. */
static int check_percentage(struct api_call *call, struct api_flags *fl, const char *key,
                            const json_t *body, const json_t *pct)
{
	struct config_errors errs;
	struct fentry *e;
	uint32_t want;
	int rc = 0;

	if (!pct)
		return 0;
	if (percentage_of(call, pct, &want) != 0)
		return -1;
	config_errors_init(&errs);
	e = fentry_parse("request", key, body, &fl->conf, &errs);
	if (e && def_percentage(e->def) != want) {
		api_reply_error(
		    call, 422, "invalid", "percentage",
		    "percentage is derived from rollout (it would be %g); change rollout "
		    "or use POST /v1/feature-flags {\"feature\",\"percentage\"}",
		    def_percentage(e->def) / 1000.0);
		rc = -1;
	}
	fentry_free(e);
	config_errors_release(&errs);
	return rc; /* an invalid body is reported by apply_change */
}

static void put_full(struct api_call *call, const char *key, const json_t *in)
{
	struct api_flags *fl = call->api->flags;
	json_t *pct = NULL, *body;
	int exists = current_def(fl, key, NULL) != NULL;

	if (!writable_key(key)) {
		api_reply_error(call, 422, "invalid", "key",
		                "invalid flag key \"%.70s\": " CONFIG_NAME_RULE " (not \"stream\")",
		                key);
		return;
	}
	body = full_body(call, in, key, &pct);
	if (!body)
		return;
	if (check_percentage(call, fl, key, body, pct) == 0)
		apply_change(call, key, body, exists ? "flag.updated" : "flag.created", NULL,
		             exists ? 200 : 201);
	json_decref(pct);
	json_decref(body);
}

static void h_put(struct api_call *call)
{
	char key[KEY_BUF];
	json_t *in;

	if (param(call, 0, key, sizeof(key)) != 0) {
		api_reply_error(call, 422, "invalid", "key", "the flag key is too long");
		return;
	}
	in = api_body_json(call);
	if (!in)
		return;
	put_full(call, key, in);
	json_decref(in);
}

/* The first variant that is not off_variant (what a seed percentage exposes). */
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

/* POST {"feature","percentage","enabled"[,"sticky"]}: the seed's upsert. */
static void post_seed(struct api_call *call, const json_t *in)
{
	struct api_flags *fl = call->api->flags;
	json_t *jf = json_object_get(in, "feature"), *jp = json_object_get(in, "percentage");
	json_t *je = json_object_get(in, "enabled"), *js = json_object_get(in, "sticky");
	json_t *cur, *body = NULL;
	const char *key, *on;
	uint32_t pct = 0;

	if (!json_is_string(jf) || !writable_key(json_string_value(jf))) {
		api_reply_error(call, 422, "invalid", "feature",
		                "feature must be a flag key: " CONFIG_NAME_RULE
		                " (not \"stream\")");
		return;
	}
	key = json_string_value(jf);
	if (jp && percentage_of(call, jp, &pct) != 0)
		return;
	if (je && !json_is_boolean(je)) {
		api_reply_error(call, 422, "invalid", "enabled", "enabled must be true or false");
		return;
	}
	if (js && !json_is_string(js)) {
		api_reply_error(call, 422, "invalid", "sticky",
		                "sticky must be a context attribute name");
		return;
	}
	cur = current_def(fl, key, NULL);
	body = cur ? def_body(cur) : json_pack("{s:s}", "sticky", SEED_STICKY);
	if (!body) {
		reply_nomem(call);
		return;
	}
	if (je)
		json_object_set(body, "enabled", je);
	if (js)
		json_object_set(body, "sticky", js);
	if (jp) {
		const char *off =
		    cur ? json_string_value(json_object_get(cur, "off_variant")) : "off";
		const char *k;
		json_t *v;

		on = cur ? on_variant(cur) : "on";
		if (!on) {
			api_reply_error(call, 422, "invalid", "percentage",
			                "flag %s has no variant besides its off_variant", key);
			goto out;
		}
		json_object_foreach(json_object_get(body, "rollout"), k, v)
		{
			if (strcmp(k, on) != 0 && (!off || strcmp(k, off) != 0) &&
			    json_number_value(v) > 0) {
				api_reply_error(
				    call, 422, "invalid", "percentage",
				    "flag %s splits its rollout between several variants; "
				    "change it with PUT /v1/feature-flags/%s",
				    key, key);
				goto out;
			}
		}
		json_object_set_new(body, "rollout",
		                    json_pack("{s:o}", on, flag_percent_json(pct)));
	}
	apply_change(call, key, body, cur ? "flag.updated" : "flag.created", NULL, cur ? 200 : 201);
out:
	json_decref(body);
}

static void h_post(struct api_call *call)
{
	static const char *const seed_keys[] = {"feature", "percentage", "enabled", "sticky"};
	json_t *in = api_body_json(call), *v;
	const char *k;
	int seed = 1;

	if (!in)
		return;
	json_object_foreach(in, k, v)
	{
		int known = 0;

		for (size_t i = 0; i < sizeof(seed_keys) / sizeof(seed_keys[0]); i++)
			known |= strcmp(k, seed_keys[i]) == 0;
		seed &= known;
	}
	if (seed && !json_object_get(in, "key")) {
		post_seed(call, in);
	} else {
		json_t *jk = json_object_get(in, "key");

		if (!jk)
			jk = json_object_get(in, "feature");
		if (!json_is_string(jk))
			api_reply_error(call, 422, "invalid", "key",
			                "a full definition needs \"key\": the flag key");
		else
			put_full(call, json_string_value(jk), in);
	}
	json_decref(in);
}

static void h_delete(struct api_call *call)
{
	struct api_flags *fl = call->api->flags;
	char key[KEY_BUF];

	if (key_param(call, key, sizeof(key)) != 0)
		return;
	if (flist_find(&fl->over, key) < 0) {
		api_reply_error(call, 409, "conflict", NULL,
		                "flag %s is defined in the configuration file and has no API "
		                "changes; remove it there (or disable it: enabled false)",
		                key);
		return;
	}
	apply_change(call, key, NULL, "flag.deleted", NULL, 200);
}

static int array_has(const json_t *a, const char *s)
{
	for (size_t i = 0; i < json_array_size(a); i++)
		if (strcmp(json_string_value(json_array_get(a, i)) ?: "", s) == 0)
			return 1;
	return 0;
}

/* Removes the string s from the JSON array a; 1 if it was there. */
static int array_remove(json_t *a, const char *s)
{
	int found = 0;

	for (size_t i = json_array_size(a); i-- > 0;) {
		if (strcmp(json_string_value(json_array_get(a, i)) ?: "", s) == 0) {
			json_array_remove(a, i);
			found = 1;
		}
	}
	return found;
}

static void h_exclude(struct api_call *call)
{
	static const char *const keys[] = {"feature", "nodes"};
	struct api_flags *fl = call->api->flags;
	json_t *in = api_body_json(call), *jf, *jn, *v, *cur, *body = NULL, *ex, *inc, *extra;
	size_t i;

	if (!in)
		return;
	if (api_only_keys(call, in, "", keys, 2) != 0)
		goto out;
	jf = json_object_get(in, "feature");
	jn = json_object_get(in, "nodes");
	if (!json_is_string(jf)) {
		api_reply_error(call, 422, "invalid", "feature", "feature must be a flag key");
		goto out;
	}
	if (!json_is_array(jn) || json_array_size(jn) == 0) {
		api_reply_error(call, 422, "invalid", "nodes",
		                "nodes must be a non-empty array of node ids");
		goto out;
	}
	json_array_foreach(jn, i, v)
	{
		char field[32];

		if (!json_is_string(v) || json_string_length(v) == 0 ||
		    json_string_length(v) > NODE_MAX ||
		    strlen(json_string_value(v)) != json_string_length(v)) {
			snprintf(field, sizeof(field), "nodes[%zu]", i);
			api_reply_error(call, 422, "invalid", field,
			                "a node id must be a non-empty string of at most %d bytes",
			                NODE_MAX);
			goto out;
		}
	}
	cur = current_def(fl, json_string_value(jf), NULL);
	if (!cur) {
		reply_no_flag(call, str_c(json_string_value(jf)));
		goto out;
	}
	body = def_body(cur);
	ex = body ? json_deep_copy(json_object_get(body, "exclude")) : NULL;
	inc = body ? json_deep_copy(json_object_get(body, "include")) : NULL;
	if (!ex || !inc) {
		json_decref(ex);
		json_decref(inc);
		reply_nomem(call);
		goto out;
	}
	json_array_foreach(jn, i, v)
	{
		/* an exclusion is a safety tool: it also takes the node off `include` */
		array_remove(inc, json_string_value(v));
		if (!array_has(ex, json_string_value(v)))
			json_array_append(ex, v);
	}
	json_object_set_new(body, "exclude", ex);
	json_object_set_new(body, "include", inc);
	extra = json_pack("{s:O}", "nodes", jn);
	apply_change(call, json_string_value(jf), body, "flag.excluded", extra, 200);
	json_decref(extra);
out:
	json_decref(body);
	json_decref(in);
}

static void h_unexclude(struct api_call *call)
{
	struct api_flags *fl = call->api->flags;
	char key[KEY_BUF], node[NODE_MAX + 1];
	json_t *body, *ex, *extra;

	if (key_param(call, key, sizeof(key)) != 0)
		return;
	if (pct_decode(call->params[1], node, sizeof(node)) != 0) {
		api_reply_error(call, 404, "not_found", NULL, "node %.*s is not excluded from %s",
		                (int)(call->params[1].len > 100 ? 100 : call->params[1].len),
		                call->params[1].p, key);
		return;
	}
	body = def_body(current_def(fl, key, NULL));
	ex = body ? json_deep_copy(json_object_get(body, "exclude")) : NULL;
	if (!ex) {
		json_decref(body);
		reply_nomem(call);
		return;
	}
	if (!array_remove(ex, node)) {
		api_reply_error(call, 404, "not_found", NULL, "node %s is not excluded from %s",
		                node, key);
		json_decref(ex);
		json_decref(body);
		return;
	}
	json_object_set_new(body, "exclude", ex);
	extra = json_pack("{s:[s]}", "nodes", node);
	apply_change(call, key, body, "flag.unexcluded", extra, 200);
	json_decref(extra);
	json_decref(body);
}

/* ------------------------------------------------------------------------ */
/* OFREP                                                                      */

/*
 * Appends s as a JSON string.  s may be request bytes (a path's key) that
 * are not UTF-8: each byte outside a well-formed sequence becomes U+FFFD, so
 * the body is always valid JSON.
 */
static void json_str(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";

	buf_append(b, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x80) {
			size_t u = str_utf8_len((const unsigned char *)s + i, n - i);

			if (u) {
				buf_append(b, &s[i], u);
				i += u - 1;
			} else {
				buf_append(b, "\\ufffd", 6);
			}
		} else if (c == '"' || c == '\\') {
			char e[2] = {'\\', (char)c};

			buf_append(b, e, 2);
		} else if (c < 0x20) {
			char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

			buf_append(b, e, 6);
		} else {
			buf_append(b, &s[i], 1);
		}
	}
	buf_append(b, "\"", 1);
}

static void ofrep_count(struct api_flags *fl, const struct api_flags_snap *s, const struct flag *f,
                        const struct flag_result *r)
{
	size_t i = flagset_index(s->set, f);
	uint32_t slot = NO_SLOT;

	for (size_t v = 0; v < flag_variant_count(f); v++)
		if (flag_variant_name(f, v) == r->variant)
			slot = s->slots[s->slot_base[i] + v];
	if (slot == NO_SLOT)
		atomic_fetch_add_explicit(&fl->ctr_overflow, 1, memory_order_relaxed);
	else
		atomic_fetch_add_explicit(&fl->ctr[slot].n, 1, memory_order_relaxed);
}

/* {"key", "value", "reason", "variant"} or {"key", "errorCode", "errorDetails"}. */
static void ofrep_result(struct buf *b, const char *key, size_t keylen, const struct flag_result *r)
{
	buf_append_str(b, "{\"key\":");
	json_str(b, key, keylen);
	if (r->error != FLAG_ERROR_NONE) {
		buf_append_str(b, ",\"errorCode\":\"");
		buf_append_str(b, flag_error_name(r->error));
		buf_append_str(b, "\",\"errorDetails\":");
		json_str(b, r->message ? r->message : "", r->message ? strlen(r->message) : 0);
		buf_append_str(b, "}");
		return;
	}
	buf_append_str(b, ",\"value\":");
	buf_append(b, r->value_json, r->value_json_len);
	buf_append_str(b, ",\"reason\":\"");
	buf_append_str(b, flag_reason_name(r->reason));
	buf_append_str(b, "\",\"variant\":");
	json_str(b, r->variant, strlen(r->variant));
	buf_append_str(b, "}");
}

/*
 * Parses an OFREP request body into *body (the context is its "context",
 * may be absent).  0, or the error (PARSE_ERROR / INVALID_CONTEXT) with a
 * message in why.
 */
static enum flag_error ofrep_parse(const struct api_call *call, json_t **body,
                                   struct flag_json_ctx *jc, char *why, size_t len)
{
	char field[256], num[64];
	json_error_t jerr;
	json_t *ctx = NULL, *tk;

	*body = NULL;
	flag_json_ctx_init(jc, NULL);
	if (str_trim(call->req->body).len == 0)
		return FLAG_ERROR_NONE; /* no body: the empty context */
	*body = json_loadb(call->req->body.p, call->req->body.len, JSON_REJECT_DUPLICATES, &jerr);
	if (!*body) {
		snprintf(why, len, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
		         jerr.text);
		return FLAG_ERROR_PARSE_ERROR;
	}
	if (!json_is_object(*body)) {
		snprintf(why, len, "the request body must be a JSON object {\"context\": {...}}");
		return FLAG_ERROR_PARSE_ERROR;
	}
	if (api_json_numbers_check(call->req->body.p, call->req->body.len, field, sizeof(field),
	                           num, sizeof(num)) != 0) {
		snprintf(why, len, "%.120s: the number %.60s is out of range", field, num);
		return FLAG_ERROR_INVALID_CONTEXT;
	}
	ctx = json_object_get(*body, "context");
	if (ctx && json_is_null(ctx))
		ctx = NULL;
	if (flag_json_ctx_init(jc, ctx) != 0) {
		snprintf(why, len, "context must be a JSON object");
		return FLAG_ERROR_INVALID_CONTEXT;
	}
	tk = ctx ? json_object_get(ctx, "targetingKey") : NULL;
	if (tk && !json_is_string(tk) && !json_is_null(tk)) {
		snprintf(why, len, "context.targetingKey must be a string");
		return FLAG_ERROR_INVALID_CONTEXT;
	}
	return FLAG_ERROR_NONE;
}

static void ofrep_reply(struct api_call *call, int status)
{
	call->resp->status = status;
	call->resp->content_type = "application/json";
	buf_append(&call->resp->body, "\n", 1);
}

/*
 * The start of both OFREP handlers: parses the body into *body and jc and
 * takes the published set (the control thread's reference) into *snap.  0,
 * or -1 after replying with the counted error ({"key", ...} when key is not
 * NULL: the single evaluation).
 */
static int ofrep_begin(struct api_call *call, const struct str *key, json_t **body,
                       struct flag_json_ctx *jc, struct api_flags_snap **snap)
{
	struct api_flags *fl = call->api->flags;
	struct buf *b = &call->resp->body;
	enum flag_error pe;
	char why[256];

	buf_reset(b);
	*snap = fl->cur;
	pe = ofrep_parse(call, body, jc, why, sizeof(why));
	if (pe == FLAG_ERROR_NONE && *snap && (*snap)->set)
		return 0;
	if (pe == FLAG_ERROR_NONE) {
		pe = FLAG_ERROR_GENERAL;
		snprintf(why, sizeof(why), "no flag state is loaded");
	}
	json_decref(*body);
	*body = NULL;
	atomic_fetch_add_explicit(&fl->errors[pe], 1, memory_order_relaxed);
	buf_append_str(b, "{");
	if (key) {
		buf_append_str(b, "\"key\":");
		json_str(b, key->p, key->len);
		buf_append_str(b, ",");
	}
	buf_printf(b, "\"errorCode\":\"%s\",\"errorDetails\":", flag_error_name(pe));
	json_str(b, why, strlen(why));
	buf_append_str(b, "}");
	ofrep_reply(call, pe == FLAG_ERROR_GENERAL ? 500 : 400);
	return -1;
}

static void h_ofrep_one(struct api_call *call)
{
	struct api_flags *fl = call->api->flags;
	struct api_flags_snap *s;
	struct buf *b = &call->resp->body;
	struct str key = call->params[0];
	struct flag_json_ctx jc;
	struct flag_result r;
	const struct flag *f;
	json_t *body = NULL;

	if (ofrep_begin(call, &key, &body, &jc, &s) != 0)
		return;
	f = flagset_find(s->set, key.p, key.len);
	flag_eval(f, flag_ctx_json_attr, &jc, &r);
	if (r.error != FLAG_ERROR_NONE) {
		atomic_fetch_add_explicit(&fl->errors[r.error], 1, memory_order_relaxed);
		if (r.error == FLAG_ERROR_FLAG_NOT_FOUND)
			r.message = "flag not found";
	} else {
		ofrep_count(fl, s, f, &r);
	}
	ofrep_result(b, key.p, key.len, &r);
	ofrep_reply(call, r.error == FLAG_ERROR_NONE             ? 200
	                  : r.error == FLAG_ERROR_FLAG_NOT_FOUND ? 404
	                                                         : 400);
	json_decref(body);
}

/* Whether an If-None-Match value lists etag (weak comparison, "*" matches). */
static int etag_matches(struct str inm, const char *etag)
{
	struct str want = str_c(etag);
	size_t i = 0;

	while (i < inm.len) {
		size_t j = i;
		struct str t;

		while (j < inm.len && inm.p[j] != ',')
			j++;
		t = str_trim(str_make(inm.p + i, j - i));
		if (t.len >= 2 && t.p[0] == 'W' && t.p[1] == '/')
			t = str_make(t.p + 2, t.len - 2);
		if (str_eq_c(t, "*") || str_eq(t, want))
			return 1;
		i = j + 1;
	}
	return 0;
}

static void h_ofrep_bulk(struct api_call *call)
{
	struct api_flags *fl = call->api->flags;
	struct api_flags_snap *s;
	struct buf *b = &call->resp->body;
	struct flag_json_ctx jc;
	json_t *body = NULL;
	size_t n;

	if (ofrep_begin(call, NULL, &body, &jc, &s) != 0)
		return;
	n = flagset_count(s->set);
	buf_append_str(b, "{\"flags\":[");
	for (size_t i = 0; i < n; i++) {
		const struct flag *f = flagset_at(s->set, i);
		struct flag_result r;

		flag_eval(f, flag_ctx_json_attr, &jc, &r);
		if (i)
			buf_append(b, ",", 1);
		ofrep_result(b, flag_key(f), strlen(flag_key(f)), &r);
	}
	buf_append_str(b, "]}");
	snprintf(call->resp->etag, sizeof(call->resp->etag), "\"%llu-%08x%08x\"",
	         (unsigned long long)s->revision, murmur3_x86_32(buf_head(b), buf_used(b), 1),
	         murmur3_x86_32(buf_head(b), buf_used(b), 0x85ebca6bu));
	if (call->req->if_none_match.len &&
	    etag_matches(call->req->if_none_match, call->resp->etag)) {
		buf_reset(b);
		call->resp->status = 304;
		call->resp->content_type = "application/json";
		goto out;
	}
	/* counted when the values are delivered (not on 304) */
	for (size_t i = 0; i < n; i++) {
		const struct flag *f = flagset_at(s->set, i);
		struct flag_result r;

		if (flag_eval(f, flag_ctx_json_attr, &jc, &r) == 0)
			ofrep_count(fl, s, f, &r);
		else
			atomic_fetch_add_explicit(&fl->errors[r.error], 1, memory_order_relaxed);
	}
	ofrep_reply(call, 200);
out:
	json_decref(body);
}

static const struct api_route routes[] = {
    {"GET", "/v1/feature-flags", SCOPE_READ, h_list},
    {"POST", "/v1/feature-flags", SCOPE_FLAGS_WRITE, h_post},
    {"GET", "/v1/feature-flags/stream", SCOPE_READ, h_stream},
    {"POST", "/v1/feature-flags/exclude", SCOPE_FLAGS_WRITE, h_exclude},
    {"GET", "/v1/feature-flags/{key}", SCOPE_READ, h_get},
    {"PUT", "/v1/feature-flags/{key}", SCOPE_FLAGS_WRITE, h_put},
    {"DELETE", "/v1/feature-flags/{key}", SCOPE_FLAGS_WRITE, h_delete},
    {"DELETE", "/v1/feature-flags/{key}/exclude/{node}", SCOPE_FLAGS_WRITE, h_unexclude},
    {"POST", "/ofrep/v1/evaluate/flags", SCOPE_EVALUATE, h_ofrep_bulk},
    {"POST", "/ofrep/v1/evaluate/flags/{key}", SCOPE_EVALUATE, h_ofrep_one},
};

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                  */

struct load_ctx {
	struct api_flags *fl;
	struct flist *over;
	char *err;
	size_t errlen;
};

static int load_doc(void *arg, const char *name, const char *json, int64_t rev)
{
	struct load_ctx *lc = arg;
	struct config_errors errs;
	json_t *def = json_loads(json, 0, NULL), *body = def ? def_body(def) : NULL;
	struct fentry *e = NULL, **grown;
	char msg[512];

	config_errors_init(&errs);
	if (body)
		e = fentry_parse("store", name, body, &lc->fl->conf, &errs);
	json_decref(def);
	json_decref(body);
	if (!e) {
		first_error(&errs, msg, sizeof(msg));
		snprintf(lc->err, lc->errlen,
		         "flag %s (set through the API, stored at revision %lld) is not valid with "
		         "this configuration: %s",
		         name, (long long)rev, msg);
		config_errors_release(&errs);
		return -1;
	}
	config_errors_release(&errs);
	grown = realloc(lc->over->v, (lc->over->n + 1) * sizeof(*grown));
	if (!grown) {
		fentry_free(e);
		snprintf(lc->err, lc->errlen, "out of memory");
		return -1;
	}
	lc->over->v = grown;
	lc->over->v[lc->over->n++] = e;
	return 0;
}

/*
 * Makes the store's digest of the config flag set conf's; when it differs,
 * writes it with an event, bumping the revision (*changed = 1).
 */
static int record_digest(struct api_flags *fl, const struct conf_state *conf, const char *actor,
                         int *changed)
{
	char *old = NULL, doc[96];
	int rc = store_doc_get(fl->store, DIGEST_KIND, DIGEST_NAME, &old, NULL);
	int same;

	*changed = 0;
	if (rc && rc != STORE_ERR_NOTFOUND)
		return rc;
	snprintf(doc, sizeof(doc), "{\"digest\":\"%s\"}", conf->digest);
	same = old && strcmp(old, doc) == 0;
	free(old);
	if (same)
		return 0;
	rc = store_begin(fl->store);
	if (!rc)
		rc = store_doc_put(fl->store, DIGEST_KIND, DIGEST_NAME, doc, STORE_REV_ANY, NULL);
	if (!rc)
		rc = store_event_append(fl->store, actor, "flags.config_changed", "flags", doc,
		                        NULL);
	if (!rc)
		rc = store_commit(fl->store);
	else
		store_rollback(fl->store);
	*changed = rc == 0;
	return rc;
}

static uint64_t store_rev(struct store *st)
{
	int64_t rev = 0;

	store_revision(st, &rev);
	return rev > 0 ? (uint64_t)rev : 0;
}

struct api_flags *api_flags_init(struct api *api, struct loop *loop, const struct config *cfg,
                                 char *err, size_t errlen)
{
	struct api_flags *fl = calloc(1, sizeof(*fl));
	struct load_ctx lc;
	struct api_flags_snap *s;
	const char *hb = getenv("CANARYD_SSE_HEARTBEAT_MS");
	unsigned long long hbv;
	int changed, rc;

	if (!fl) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	fl->api = api;
	fl->store = api->store;
	fl->loop = loop;
	snapshot_init(&fl->snap);
	fl->ctr = calloc(COUNTERS_MAX, sizeof(*fl->ctr));
	if (!fl->ctr) {
		snprintf(err, errlen, "out of memory");
		goto out_free;
	}
	fl->heartbeat_ms = HEARTBEAT_MS;
	if (hb && str_to_u64(str_c(hb), &hbv) == 0 && hbv > 0)
		fl->heartbeat_ms = hbv;
	if (conf_prepare(&fl->conf, cfg, err, errlen) != 0)
		goto out_free;
	lc = (struct load_ctx){fl, &fl->over, err, errlen};
	rc = store_doc_list(fl->store, DOC_KIND, load_doc, &lc);
	if (rc) {
		if (rc != -1)
			snprintf(err, errlen, "cannot read the flags from the store: %s",
			         store_strerror(rc));
		goto out_free;
	}
	s = snap_build(fl, &fl->conf, &fl->over, err, errlen);
	if (!s)
		goto out_free;
	rc = record_digest(fl, &fl->conf, "canaryd", &changed);
	if (rc) {
		snap_obj_unref(&s->obj);
		snprintf(err, errlen, "cannot record the flag configuration: %s",
		         store_strerror(rc));
		goto out_free;
	}
	snap_publish(fl, s, store_rev(fl->store));
	fl->ring_base = fl->revision;
	api->flags = fl;
	if (api_add_routes(api, routes, sizeof(routes) / sizeof(routes[0])) != 0) {
		snprintf(err, errlen, "too many route tables");
		api->flags = NULL;
		goto out_free;
	}
	loop_timer_init(&fl->hb, heartbeat, fl);
	loop_timer_start(loop, &fl->hb, fl->heartbeat_ms);
	return fl;
out_free:
	api_flags_free(fl);
	return NULL;
}

int api_flags_check(struct api_flags *fl, const struct config *cfg, char *err, size_t errlen)
{
	struct conf_state cs;
	struct api_flags_snap *s;
	struct config_errors errs;
	int rc = -1;

	if (conf_prepare(&cs, cfg, err, errlen) != 0)
		return -1;
	config_errors_init(&errs);
	/* every stored flag must still validate (its rule segments exist) */
	for (size_t i = 0; i < fl->over.n; i++) {
		json_t *body = def_body(fl->over.v[i]->def);
		struct fentry *e =
		    body ? fentry_parse("store", fl->over.v[i]->key, body, &cs, &errs) : NULL;
		char msg[512];

		json_decref(body);
		if (!e) {
			first_error(&errs, msg, sizeof(msg));
			snprintf(err, errlen,
			         "flag %s (set through the API) is not valid with the new "
			         "configuration: %s",
			         fl->over.v[i]->key, msg);
			goto out;
		}
		fentry_free(e);
	}
	s = snap_build(fl, &cs, &fl->over, err, errlen);
	if (s) {
		snap_obj_unref(&s->obj);
		rc = 0;
	}
out:
	config_errors_release(&errs);
	conf_release(&cs);
	return rc;
}

int api_flags_reload(struct api_flags *fl, const struct config *cfg, const char *actor, char *err,
                     size_t errlen)
{
	struct conf_state cs;
	struct api_flags_snap *s;
	int changed = 0, rc;

	if (conf_prepare(&cs, cfg, err, errlen) != 0)
		return -1;
	if (strcmp(cs.digest, fl->conf.digest) == 0) {
		conf_release(&cs); /* the same flags and segments: nothing to do */
		return 0;
	}
	s = snap_build(fl, &cs, &fl->over, err, errlen);
	if (!s) {
		conf_release(&cs);
		return -1;
	}
	rc = record_digest(fl, &cs, actor, &changed);
	if (rc) {
		snap_obj_unref(&s->obj);
		conf_release(&cs);
		snprintf(err, errlen, "cannot record the flag configuration: %s",
		         store_strerror(rc));
		return -1;
	}
	conf_release(&fl->conf);
	fl->conf = cs;
	snap_publish(fl, s, store_rev(fl->store));
	/* segments may have changed too: every subscriber starts over from a full ruleset */
	ring_clear(fl, fl->revision);
	broadcast(fl, fl->revision, "ruleset", ruleset_text(fl->cur));
	return 0;
}

json_t *api_flags_health(struct api_flags *fl)
{
	return json_pack("{s:s, s:I, s:I, s:I, s:I}", "status", "ok", "flags",
	                 (json_int_t)json_array_size(fl->cur->defs), "revision",
	                 (json_int_t)fl->revision, "subscribers", (json_int_t)fl->nsubs,
	                 "dropped_subscribers", (json_int_t)fl->dropped);
}

json_t *api_flags_save(struct api_flags *fl, const char *key)
{
	long at;

	if (!fl || !current_def(fl, key, NULL))
		return NULL;
	at = flist_find(&fl->over, key);
	return json_pack("{s:O?}", "api", at >= 0 ? fl->over.v[at]->def : NULL);
}

/* commit_change's result as 0 / -1 with err filled. */
static int engine_result(int rc, const struct config_errors *errs, char *err, size_t errlen)
{
	if (rc == 0 || rc == 1)
		return 0;
	if (rc == 422 && errs->n)
		first_error(errs, err, errlen);
	else if (rc == -ENOMEM)
		snprintf(err, errlen, "out of memory");
	return -1;
}

int api_flags_set_percent(struct api_flags *fl, const char *key, uint32_t percent,
                          const char *actor, char *err, size_t errlen)
{
	json_t *cur = fl ? current_def(fl, key, NULL) : NULL, *body, *split, *extra;
	const char *on;
	struct config_errors errs;
	int rc;

	if (!cur) {
		snprintf(err, errlen, "no flag named %s", key);
		return -1;
	}
	on = on_variant(cur);
	if (!on) {
		snprintf(err, errlen, "flag %s has no variant besides its off_variant", key);
		return -1;
	}
	body = def_body(cur);
	split = json_pack("{s:o}", on, flag_percent_json(percent));
	extra = json_pack("{s:o}", "percentage", flag_percent_json(percent));
	if (!body || !split || !extra) {
		json_decref(body);
		json_decref(split);
		json_decref(extra);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	json_object_set_new(body, "rollout", split);
	config_errors_init(&errs);
	rc = commit_change(fl, actor, key, body, "flag.updated", extra, &errs, err, errlen);
	rc = engine_result(rc, &errs, err, errlen);
	config_errors_release(&errs);
	json_decref(extra);
	json_decref(body);
	return rc;
}

int api_flags_restore(struct api_flags *fl, const char *key, const json_t *saved, const char *actor,
                      char *err, size_t errlen)
{
	const json_t *def = json_object_get(saved, "api");
	json_t *body = json_is_object(def) ? def_body(def) : NULL;
	struct config_errors errs;
	int rc;

	if (!fl || !json_is_object(saved) || (json_is_object(def) && !body)) {
		json_decref(body);
		snprintf(err, errlen, "nothing to restore flag %s from", key);
		return -1;
	}
	config_errors_init(&errs);
	rc = commit_change(fl, actor, key, body, "flag.restored", NULL, &errs, err, errlen);
	rc = engine_result(rc, &errs, err, errlen);
	config_errors_release(&errs);
	json_decref(body);
	return rc;
}

struct snapshot *api_flags_snapshot(struct api_flags *fl)
{
	return &fl->snap;
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

void api_flags_write_prometheus(struct api_flags *fl, struct buf *out)
{
	if (!fl)
		return;
	buf_append_str(out, "# HELP canaryd_flag_evaluations_total Flag evaluations served, by "
	                    "variant.\n# TYPE canaryd_flag_evaluations_total counter\n");
	for (size_t i = 0; i < fl->nctr; i++) {
		buf_append_str(out, "canaryd_flag_evaluations_total{flag=\"");
		label(out, fl->ctr[i].flag);
		buf_append_str(out, "\",variant=\"");
		label(out, fl->ctr[i].variant);
		buf_printf(
		    out, "\"} %llu\n",
		    (unsigned long long)atomic_load_explicit(&fl->ctr[i].n, memory_order_relaxed));
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
	           "canaryd_flags_revision %llu\n"
	           "# HELP canaryd_stream_subscribers Open feature-flag stream connections.\n"
	           "# TYPE canaryd_stream_subscribers gauge\n"
	           "canaryd_stream_subscribers %zu\n"
	           "# HELP canaryd_stream_dropped_total Stream subscribers dropped for falling "
	           "behind.\n"
	           "# TYPE canaryd_stream_dropped_total counter\n"
	           "canaryd_stream_dropped_total %llu\n",
	           (unsigned long long)fl->revision, fl->nsubs, (unsigned long long)fl->dropped);
}

void api_flags_free(struct api_flags *fl)
{
	if (!fl)
		return;
	if (fl->loop && fl->hb.cb)
		loop_timer_stop(fl->loop, &fl->hb);
	for (struct sub *s = fl->subs; s; s = s->next)
		s->fl = NULL; /* still owned by its connection */
	ring_clear(fl, 0);
	snap_obj_unref(fl->cur ? &fl->cur->obj : NULL);
	snapshot_release(&fl->snap);
	flist_release(&fl->over);
	conf_release(&fl->conf);
	for (size_t i = 0; fl->ctr && i < fl->nctr; i++) {
		free(fl->ctr[i].flag);
		free(fl->ctr[i].variant);
	}
	free(fl->ctr);
	free(fl);
}
