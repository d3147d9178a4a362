/*
 * traffic.c - the services' runtime traffic documents and the routing
 * table built from them (traffic.h).
 *
 * Invariants: entries hold the parsed form of every persisted "traffic",
 * "mirror" and "faults" document, applied by on_update() only; t->table is
 * the table last published, built from t->cref and the entries.
 */
#include "proxy/traffic.h"

#include <errno.h>
#include <jansson.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/err.h"
#include "core/log.h"
#include "core/loop.h"
#include "metrics/stats.h"
#include "proxy/proxy.h"
#include "proxy/table.h"
#include "state/state.h"
#include "store/store.h"

static const char *const kinds[] = {"traffic", "mirror", "faults"};

/* The parsed documents of one service (any may be absent). */
struct entry {
	char *service;
	char *stable; /* "traffic": NULL, the config's */
	char *canary;
	uint32_t weight;
	int preview;    /* "traffic": weight 0 without draining (traffic_set_preview) */
	int mirror_set; /* a "mirror" document exists */
	char *mirror_version;
	uint32_t mirror_percent;
	struct proxy_fault_set *faults; /* "faults": [nfaults], versions owned */
	size_t nfaults;
	struct proxy_down *down; /* health checks' (not a document): [ndown], strings owned */
	size_t ndown;
};

/* What a local commit hands its own subscriber: the new entry and table. */
struct prepared {
	struct entry next;         /* moved into the entry when applied */
	struct proxy_table *table; /* published when applied (then NULL) */
	const char *kind;
};

struct traffic {
	struct state *state;
	struct proxy *proxy;
	struct metrics_registry *metrics;
	struct config_ref *cref;   /* the running configuration (a reference) */
	struct proxy_table *table; /* last published (a reference) */
	uint64_t published_rev;
	uint64_t applied;     /* changes applied by on_update() so far */
	uint64_t built_mark;  /* applied when traffic_build() last ran */
	struct entry **slots; /* open addressing by service name */
	size_t nslots, nentries;
	char errmsg[512];
};

/* ---- entries ---- */

static uint64_t name_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

static void faults_free(struct proxy_fault_set *fs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free((char *)fs[i].version);
	free(fs);
}

static void down_free(struct proxy_down *d, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free((char *)d[i].version);
		free((char *)d[i].endpoint);
	}
	free(d);
}

/* A deep copy of d[0..n), or NULL (n == 0, or out of memory: *nomem set). */
static struct proxy_down *down_dup(const struct proxy_down *d, size_t n, int *nomem)
{
	struct proxy_down *out = n ? calloc(n, sizeof(*out)) : NULL;

	*nomem = n && !out;
	for (size_t i = 0; out && i < n; i++) {
		out[i].version = strdup(d[i].version);
		out[i].endpoint = strdup(d[i].endpoint);
		if (!out[i].version || !out[i].endpoint) {
			down_free(out, i + 1);
			*nomem = 1;
			return NULL;
		}
	}
	return out;
}

static void entry_release(struct entry *e)
{
	free(e->service);
	free(e->stable);
	free(e->canary);
	free(e->mirror_version);
	faults_free(e->faults, e->nfaults);
	down_free(e->down, e->ndown);
	memset(e, 0, sizeof(*e));
}

static struct entry *entry_find(const struct traffic *t, const char *service)
{
	size_t i;

	if (!t->nslots)
		return NULL;
	for (i = name_hash(service) & (t->nslots - 1); t->slots[i]; i = (i + 1) & (t->nslots - 1))
		if (strcmp(t->slots[i]->service, service) == 0)
			return t->slots[i];
	return NULL;
}

static void slot_put(struct entry **slots, size_t nslots, struct entry *e)
{
	size_t i = name_hash(e->service) & (nslots - 1);

	while (slots[i])
		i = (i + 1) & (nslots - 1);
	slots[i] = e;
}

/* The entry of service, added empty when absent; NULL when out of memory. */
static struct entry *entry_get(struct traffic *t, const char *service)
{
	struct entry *e = entry_find(t, service);

	if (e)
		return e;
	if (2 * (t->nentries + 1) > t->nslots) {
		size_t n = t->nslots ? 2 * t->nslots : 64;
		struct entry **grown = calloc(n, sizeof(*grown));

		if (!grown)
			return NULL;
		for (size_t i = 0; i < t->nslots; i++)
			if (t->slots[i])
				slot_put(grown, n, t->slots[i]);
		free(t->slots);
		t->slots = grown;
		t->nslots = n;
	}
	e = calloc(1, sizeof(*e));
	if (!e || !(e->service = strdup(service))) {
		free(e);
		return NULL;
	}
	slot_put(t->slots, t->nslots, e);
	t->nentries++;
	return e;
}

/* The table's view of e (borrowed; valid while e is unchanged). */
static struct proxy_traffic entry_view(const struct entry *e)
{
	return (struct proxy_traffic){.service = e->service,
	                              .stable = e->stable,
	                              .canary = e->canary,
	                              .weight = e->weight,
	                              .preview = e->preview,
	                              .mirror_set = e->mirror_set,
	                              .mirror_version = e->mirror_version,
	                              .mirror_percent = e->mirror_percent,
	                              .faults = e->faults,
	                              .nfaults = e->nfaults,
	                              .down = e->down,
	                              .ndown = e->ndown};
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* A deep copy of e's fields into out (zeroed); -ENOMEM. */
static int entry_copy(struct entry *out, const struct entry *e)
{
	memset(out, 0, sizeof(*out));
	out->service = strdup(e->service);
	out->stable = dup_or_null(e->stable);
	out->canary = dup_or_null(e->canary);
	out->weight = e->weight;
	out->preview = e->preview;
	out->mirror_set = e->mirror_set;
	out->mirror_version = dup_or_null(e->mirror_version);
	out->mirror_percent = e->mirror_percent;
	if (e->nfaults) {
		out->faults = calloc(e->nfaults, sizeof(*out->faults));
		if (!out->faults)
			goto nomem;
		for (size_t i = 0; i < e->nfaults; i++) {
			out->faults[i] = e->faults[i];
			out->faults[i].version = strdup(e->faults[i].version);
			out->nfaults = i + 1;
			if (!out->faults[i].version)
				goto nomem;
		}
	}
	if (!out->service || (e->stable && !out->stable) || (e->canary && !out->canary) ||
	    (e->mirror_version && !out->mirror_version))
		goto nomem;
	{
		int nomem;

		out->down = down_dup(e->down, e->ndown, &nomem);
		if (nomem)
			goto nomem;
		out->ndown = e->ndown;
	}
	return 0;
nomem:
	entry_release(out);
	return -ENOMEM;
}

/* ---- documents <-> entries ---- */

/* The JSON form of a fault, as persisted. */
static json_t *fault_json(const struct config_fault *f)
{
	json_t *o = json_object();

	if (f->has_delay)
		json_object_set_new(o, "delay",
		                    json_pack("{s:I, s:I}", "ms", (json_int_t)f->delay_ms,
		                              "percent_thousandths", (json_int_t)f->delay_percent));
	if (f->has_abort)
		json_object_set_new(o, "abort",
		                    json_pack("{s:I, s:I}", "status", (json_int_t)f->abort_status,
		                              "percent_thousandths", (json_int_t)f->abort_percent));
	return o;
}

static void fault_from_json(json_t *o, struct config_fault *f)
{
	json_t *d = json_object_get(o, "delay"), *a = json_object_get(o, "abort");

	memset(f, 0, sizeof(*f));
	if (json_is_object(d)) {
		f->has_delay = true;
		f->delay_ms = (uint32_t)json_integer_value(json_object_get(d, "ms"));
		f->delay_percent =
		    (uint32_t)json_integer_value(json_object_get(d, "percent_thousandths"));
	}
	if (json_is_object(a)) {
		f->has_abort = true;
		f->abort_status = (uint32_t)json_integer_value(json_object_get(a, "status"));
		f->abort_percent =
		    (uint32_t)json_integer_value(json_object_get(a, "percent_thousandths"));
	}
}

static char *string_member(json_t *doc, const char *key)
{
	json_t *v = json_object_get(doc, key);

	return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

static uint32_t int_member(json_t *doc, const char *key)
{
	json_t *v = json_object_get(doc, key);

	return json_is_integer(v) ? (uint32_t)json_integer_value(v) : 0;
}

/*
 * Replaces e's fields of kind with document text (NULL: deleted).  A
 * document that does not parse counts as absent, as at load.  -ENOMEM.
 */
static int entry_apply(struct entry *e, const char *kind, const char *text)
{
	json_t *doc = text ? json_loads(text, 0, NULL) : NULL, *v;
	int rc = 0;

	if (strcmp(kind, "traffic") == 0) {
		free(e->stable);
		free(e->canary);
		e->stable = doc ? string_member(doc, "stable") : NULL;
		e->canary = doc ? string_member(doc, "canary") : NULL;
		e->weight = doc ? int_member(doc, "weight_thousandths") : 0;
		e->preview = doc && json_is_true(json_object_get(doc, "preview"));
	} else if (strcmp(kind, "mirror") == 0) {
		free(e->mirror_version);
		e->mirror_set = doc != NULL;
		e->mirror_version = doc ? string_member(doc, "version") : NULL;
		e->mirror_percent = doc ? int_member(doc, "percent_thousandths") : 0;
	} else if (strcmp(kind, "faults") == 0) {
		struct proxy_fault_set *fs = NULL;
		const char *ver;
		size_t n = 0;

		if (json_is_object(doc) && json_object_size(doc)) {
			fs = calloc(json_object_size(doc), sizeof(*fs));
			if (!fs) {
				rc = -ENOMEM;
				goto out;
			}
			json_object_foreach(doc, ver, v)
			{
				fs[n].version = strdup(ver);
				if (!fs[n].version)
					break;
				fault_from_json(v, &fs[n].fault);
				n++;
			}
		}
		faults_free(e->faults, e->nfaults);
		e->faults = fs;
		e->nfaults = n;
	}
out:
	json_decref(doc);
	return rc;
}

/* The "faults" document text of e; NULL for none (*nomem set when that is a failure). */
static char *faults_text(const struct entry *e, int *nomem)
{
	json_t *doc;
	char *text;

	*nomem = 0;
	if (!e->nfaults)
		return NULL;
	doc = json_object();
	for (size_t i = 0; doc && i < e->nfaults; i++)
		json_object_set_new(doc, e->faults[i].version, fault_json(&e->faults[i].fault));
	text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	*nomem = !text;
	return text;
}

/* ---- tables ---- */

static int series_for(void *ctx, const char *svc, const char *version)
{
	return ctx ? metrics_series_id(ctx, svc, version) : -1;
}

static void publish(struct traffic *t, struct proxy_table *table)
{
	if (t->table)
		snap_obj_unref(&t->table->obj);
	t->table = table;
	t->published_rev = proxy_publish(t->proxy, (struct proxy_table *)snap_obj_ref(&table->obj));
}

/* The published table with e's service rebuilt from e; NULL + t->errmsg. */
static struct proxy_table *derive(struct traffic *t, const struct entry *e)
{
	struct proxy_traffic tr = entry_view(e);

	if (!t->table) {
		snprintf(t->errmsg, sizeof(t->errmsg), "no routing table yet");
		return NULL;
	}
	return proxy_table_derive(t->table, &tr, proxy_registry(t->proxy), series_for, t->metrics,
	                          t->errmsg, sizeof(t->errmsg));
}

/*
 * The subscriber: applies a committed document (local or remote) to the
 * entries and publishes the table it gives.  Cannot fail the change (it is
 * durable); a table that cannot be built is logged and the old one kept.
 */
static void on_update(void *arg, const struct state_update *u)
{
	struct traffic *t = arg;
	struct prepared *p = u->prepared;
	struct entry *e = entry_get(t, u->name);
	struct proxy_table *table;

	if (!e) {
		log_error("out of memory applying a traffic change", "service", u->name, NULL);
		return;
	}
	t->applied++;
	if (p && p->table && strcmp(p->kind, u->kind) == 0) {
		char *name = e->service;

		e->service = NULL;
		entry_release(e);
		*e = p->next;
		free(e->service);
		e->service = name;
		memset(&p->next, 0, sizeof(p->next));
		publish(t, p->table);
		p->table = NULL;
		return;
	}
	if (entry_apply(e, u->kind, u->json) != 0) {
		log_error("out of memory applying a traffic change", "service", u->name, NULL);
		return;
	}
	if (!t->table || !proxy_table_service(t->table, u->name))
		return; /* a service the configuration lacks: kept, not routed */
	table = derive(t, e);
	if (!table) {
		log_error("cannot apply a traffic change", "service", u->name, "error", t->errmsg,
		          NULL);
		return;
	}
	publish(t, table);
}

/* ---- lifecycle ---- */

struct traffic *traffic_new(struct state *st, struct proxy *proxy, struct metrics_registry *metrics)
{
	struct traffic *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->state = st;
	t->proxy = proxy;
	t->metrics = metrics;
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (state_subscribe(st, kinds[i], on_update, t) != 0) {
			traffic_free(t);
			return NULL;
		}
	return t;
}

void traffic_free(struct traffic *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		state_unsubscribe(t->state, kinds[i], on_update, t);
	for (size_t i = 0; i < t->nslots; i++)
		if (t->slots[i]) {
			entry_release(t->slots[i]);
			free(t->slots[i]);
		}
	free(t->slots);
	if (t->table)
		snap_obj_unref(&t->table->obj);
	if (t->cref)
		snap_obj_unref(&t->cref->obj);
	free(t);
}

struct load_ctx {
	struct traffic *t;
	const char *kind;
};

static int load_one(void *arg, const char *name, const char *json, int64_t rev)
{
	struct load_ctx *lc = arg;
	struct entry *e = entry_get(lc->t, name);

	if (!e)
		return -ENOMEM;
	return entry_apply(e, lc->kind, json);
}

int traffic_load(struct traffic *t, struct config_ref *cref, char *err, size_t errlen)
{
	struct proxy_table *table;

	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		struct load_ctx lc = {t, kinds[i]};

		if (store_doc_list(state_store(t->state), kinds[i], load_one, &lc) != 0) {
			snprintf(err, errlen, "cannot read the traffic state from the store");
			return ERR_STORE;
		}
	}
	table = traffic_build(t, cref, err, errlen);
	if (!table)
		return ERR_INVALID;
	traffic_use(t, cref, table);
	return 0;
}

struct proxy_table *traffic_build(struct traffic *t, struct config_ref *cref, char *err,
                                  size_t errlen)
{
	struct proxy_traffic *all = calloc(t->nentries + 1, sizeof(*all));
	struct proxy_table *table;
	size_t n = 0;

	if (!all) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	t->built_mark = t->applied;
	for (size_t i = 0; i < t->nslots; i++)
		if (t->slots[i])
			all[n++] = entry_view(t->slots[i]);
	table = proxy_table_build(cref, all, n, proxy_registry(t->proxy), series_for, t->metrics,
	                          err, errlen);
	free(all);
	return table;
}

void traffic_use(struct traffic *t, struct config_ref *cref, struct proxy_table *table)
{
	char err[256];

	/* changes applied since table was built (a resumed rollout's) must not be lost */
	if (t->applied != t->built_mark) {
		struct proxy_table *fresh = traffic_build(t, cref, err, sizeof(err));

		if (fresh) {
			snap_obj_unref(&table->obj);
			table = fresh;
		} else {
			log_error("cannot rebuild the routing table", "error", err, NULL);
		}
	}
	snap_obj_ref(&cref->obj);
	if (t->cref)
		snap_obj_unref(&t->cref->obj);
	t->cref = cref;
	publish(t, table);
}

/* ---- changes ---- */

/*
 * Commits (kind, service) = text (NULL: deletes it) with its event, handing
 * the subscriber next and the table built from it (both consumed).
 */
static int commit(struct traffic *t, const char *kind, const char *service, const char *text,
                  struct entry *next, const char *actor, const char *event, json_t *details)
{
	struct prepared p = {.next = *next, .kind = kind};
	char *dt = details ? json_dumps(details, JSON_COMPACT) : NULL;
	int rc;

	memset(next, 0, sizeof(*next));
	p.table = derive(t, &p.next);
	if (!p.table) {
		rc = ERR_INVALID;
		goto out;
	}
	if (details && !dt) {
		rc = -ENOMEM;
		goto out;
	}
	rc = state_commit(
	    t->state,
	    &(struct state_doc){.kind = kind,
	                        .name = service,
	                        .json = text,
	                        .expect_rev = STORE_REV_ANY,
	                        .prepared = &p},
	    1,
	    &(struct state_event){.actor = actor, .kind = event, .subject = service, .details = dt},
	    1, NULL);
	if (rc) {
		char m[400];

		snprintf(t->errmsg, sizeof(t->errmsg), "cannot persist the change: %s",
		         state_errmsg(t->state, m, sizeof(m)));
	}
out:
	if (p.table) /* refused, or nothing was published (deleting what was absent) */
		snap_obj_unref(&p.table->obj);
	entry_release(&p.next);
	free(dt);
	json_decref(details);
	return rc;
}

/*
 * The service's current entry copied into next (an empty one when it has
 * no documents yet), with its table service in *ps.  ERR_NOTFOUND when the
 * configuration has no such service.
 */
static int begin(struct traffic *t, const char *service, struct entry *next,
                 const struct proxy_service **ps)
{
	const struct entry *e = entry_find(t, service);

	t->errmsg[0] = '\0';
	*ps = t->table ? proxy_table_service(t->table, service) : NULL;
	if (!*ps) {
		snprintf(t->errmsg, sizeof(t->errmsg), "no service named \"%s\"", service);
		return ERR_NOTFOUND;
	}
	if (e)
		return entry_copy(next, e);
	memset(next, 0, sizeof(*next));
	next->service = strdup(service);
	return next->service ? 0 : -ENOMEM;
}

static const char *version_name(const struct proxy_service *ps, int v)
{
	return v >= 0 ? ps->versions[v].name : NULL;
}

/* stable NULL: keep the current one; event names the change. */
static int set_traffic(struct traffic *t, const char *service, const char *stable,
                       const char *canary, uint32_t weight, int preview, const char *actor,
                       const char *event)
{
	const struct proxy_service *before;
	const struct config_service *cs;
	const char *before_stable, *recorded;
	struct entry next;
	json_t *doc, *details;
	char *text;
	int rc = begin(t, service, &next, &before);

	if (rc)
		return rc;
	cs = &t->cref->cfg->services[before->index];
	before_stable = version_name(before, before->stable);
	if (!stable)
		stable = before_stable;
	/* only a stable other than the config's is recorded (a completed rollout) */
	recorded = stable && strcmp(stable, cs->stable) != 0 ? stable : NULL;
	free(next.stable);
	free(next.canary);
	next.stable = dup_or_null(recorded);
	next.canary = dup_or_null(canary);
	next.weight = weight;
	next.preview = preview;
	doc = json_pack("{s:o, s:o, s:I, s:f}", "stable",
	                recorded ? json_string(recorded) : json_null(), "canary",
	                canary ? json_string(canary) : json_null(), "weight_thousandths",
	                (json_int_t)weight, "weight", weight / 1000.0);
	if (doc && preview)
		json_object_set_new(doc, "preview", json_true());
	text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	details = json_pack("{s:o, s:o, s:f, s:f, s:o, s:o}", "canary",
	                    canary ? json_string(canary) : json_null(), "before_canary",
	                    before->canary >= 0 ? json_string(version_name(before, before->canary))
	                                        : json_null(),
	                    "weight", weight / 1000.0, "before_weight",
	                    before->canary >= 0 ? before->weight / 1000.0 : 0.0, "stable",
	                    stable ? json_string(stable) : json_null(), "before_stable",
	                    before_stable ? json_string(before_stable) : json_null());
	if (!text || (recorded && !next.stable) || (canary && !next.canary)) {
		entry_release(&next);
		json_decref(details);
		free(text);
		return -ENOMEM;
	}
	rc = commit(t, "traffic", service, text, &next, actor, event, details);
	free(text);
	if (!rc)
		log_info("traffic changed", "service", service, "canary", canary ? canary : "",
		         "stable", stable ? stable : "", "actor", actor, NULL);
	return rc;
}

int traffic_set_weight(struct traffic *t, const char *service, const char *canary, uint32_t weight,
                       const char *actor)
{
	return set_traffic(t, service, NULL, canary, weight, 0, actor, "service.traffic");
}

int traffic_set_preview(struct traffic *t, const char *service, const char *canary,
                        const char *actor)
{
	return set_traffic(t, service, NULL, canary, 0, 1, actor, "service.traffic");
}

int traffic_set_weight_local(struct traffic *t, const char *service, const char *canary,
                             uint32_t weight)
{
	const struct proxy_service *ps;
	struct proxy_table *table;
	struct entry next, *e;
	char *name;
	int rc = begin(t, service, &next, &ps);

	if (rc)
		return rc;
	free(next.canary);
	next.canary = dup_or_null(canary);
	next.weight = weight;
	next.preview = 0;
	if (canary && !next.canary) {
		entry_release(&next);
		return -ENOMEM;
	}
	table = derive(t, &next);
	e = table ? entry_get(t, service) : NULL;
	if (!e) {
		if (table)
			snap_obj_unref(&table->obj);
		entry_release(&next);
		return table ? -ENOMEM : ERR_INVALID;
	}
	name = e->service;
	e->service = NULL;
	entry_release(e);
	*e = next;
	free(e->service);
	e->service = name;
	publish(t, table);
	log_warn("traffic changed on this node only (the store is away)", "service", service,
	         "canary", canary ? canary : "", NULL);
	return 0;
}

int traffic_set_stable(struct traffic *t, const char *service, const char *version,
                       const char *actor)
{
	return set_traffic(t, service, version, NULL, 0, 0, actor, "service.promoted");
}

int traffic_set_mirror(struct traffic *t, const char *service, const char *version,
                       uint32_t percent, const char *actor)
{
	const struct proxy_service *ps;
	struct entry next;
	json_t *doc = NULL;
	char *text = NULL;
	int set = version && percent;
	int rc = begin(t, service, &next, &ps);

	if (rc)
		return rc;
	free(next.mirror_version);
	next.mirror_set = set;
	next.mirror_version = set ? strdup(version) : NULL;
	next.mirror_percent = set ? percent : 0;
	if (set) {
		doc = json_pack("{s:s, s:I, s:f}", "version", version, "percent_thousandths",
		                (json_int_t)percent, "percent", percent / 1000.0);
		text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
		json_decref(doc);
		if (!text || !next.mirror_version) {
			free(text);
			entry_release(&next);
			return -ENOMEM;
		}
	}
	rc = commit(t, "mirror", service, text, &next, actor, "service.mirror",
	            json_pack("{s:o, s:f}", "version", set ? json_string(version) : json_null(),
	                      "percent", set ? percent / 1000.0 : 0.0));
	free(text);
	if (!rc)
		log_info("mirror changed", "service", service, "version", set ? version : "",
		         "actor", actor, NULL);
	return rc;
}

int traffic_set_fault(struct traffic *t, const char *service, const char *version,
                      const struct config_fault *f, const char *actor)
{
	const struct proxy_service *ps;
	struct entry next;
	struct proxy_fault_set *grown;
	size_t k;
	char *text;
	int nomem, rc = begin(t, service, &next, &ps);

	if (rc)
		return rc;
	for (k = 0; k < next.nfaults; k++)
		if (strcmp(next.faults[k].version, version) == 0)
			break;
	if (k == next.nfaults && f) {
		grown = realloc(next.faults, (next.nfaults + 1) * sizeof(*grown));
		if (!grown)
			goto nomem;
		next.faults = grown;
		memset(&next.faults[k], 0, sizeof(next.faults[k]));
		next.faults[k].version = strdup(version);
		if (!next.faults[k].version)
			goto nomem;
		next.nfaults++;
	}
	if (f) {
		next.faults[k].fault = *f;
	} else if (k < next.nfaults) {
		free((char *)next.faults[k].version);
		memmove(&next.faults[k], &next.faults[k + 1],
		        (next.nfaults - k - 1) * sizeof(next.faults[0]));
		next.nfaults--;
	}
	text = faults_text(&next, &nomem);
	if (nomem)
		goto nomem;
	rc = commit(
	    t, "faults", service, text, &next, actor, "service.faults",
	    json_pack("{s:s, s:o}", "version", version, "fault", f ? fault_json(f) : json_null()));
	free(text);
	if (!rc)
		log_info(f ? "fault set" : "fault cleared", "service", service, "version", version,
		         "actor", actor, NULL);
	return rc;
nomem:
	entry_release(&next);
	return -ENOMEM;
}

int traffic_set_down(struct traffic *t, const char *service, const struct proxy_down *down,
                     size_t n)
{
	struct entry *e = entry_get(t, service);
	struct proxy_down *copy;
	struct proxy_table *table;
	int nomem;

	if (!e)
		return -ENOMEM;
	copy = down_dup(down, n, &nomem);
	if (nomem)
		return -ENOMEM;
	down_free(e->down, e->ndown);
	e->down = copy;
	e->ndown = n;
	if (!t->table || !proxy_table_service(t->table, service))
		return 0; /* kept for the next build */
	table = derive(t, e);
	if (!table) {
		log_error("cannot apply the health checks' endpoints", "service", service, "error",
		          t->errmsg, NULL);
		return ERR_INVALID;
	}
	publish(t, table);
	return 0;
}

/* ---- reads ---- */

const char *traffic_stable_of(struct traffic *t, const char *service)
{
	const struct proxy_service *ps = t->table ? proxy_table_service(t->table, service) : NULL;
	const struct config_service *cs;

	if (!ps || ps->stable < 0)
		return NULL;
	/* the name is returned from the running config, which outlives the table */
	cs = &t->cref->cfg->services[ps->index];
	for (size_t v = 0; v < cs->nversions; v++)
		if (strcmp(cs->versions[v].name, ps->versions[ps->stable].name) == 0)
			return cs->versions[v].name;
	return NULL;
}

long traffic_inflight(struct traffic *t, const char *service, const char *version)
{
	int series = t->metrics ? metrics_series_find(t->metrics, service, version) : -1;
	long n;

	if (series < 0)
		return 0; /* never routed to: nothing in flight */
	n = proxy_inflight(t->proxy, series);
	return n < 0 ? -1 : n; /* -1: not counted (series id over the proxy's bound) */
}

int traffic_wait_applied(struct traffic *t, uint64_t timeout_us)
{
	uint64_t until = clock_mono_us() + timeout_us;

	while (!proxy_applied(t->proxy, t->published_rev)) {
		if (clock_mono_us() >= until)
			return -ETIMEDOUT;
		sched_yield();
	}
	return 0;
}

uint64_t traffic_published_rev(const struct traffic *t)
{
	return t->published_rev;
}

const char *traffic_errmsg(const struct traffic *t, char *buf, size_t len)
{
	if (len)
		snprintf(buf, len, "%s", t->errmsg);
	return buf;
}
