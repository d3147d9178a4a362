#include "proxy/table.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "net/tls.h"
#include "proxy/mirror.h"
#include "proxy/registry.h"

/* mirror.methods when the config has no mirror: the idempotent ones */
static const char *const default_methods_v[] = {"GET", "HEAD", "OPTIONS"};
static const struct config_strlist default_methods = {(const char **)default_methods_v, 3};

/* Per-service memory, shared by the tables that did not rebuild the service. */
struct svc_mem {
	struct snap_obj obj;
	struct arena arena;
	struct segment **segments; /* compiled for overrides */
	size_t nsegments;
};

/*
 * One host group of a listener: the routes naming one exact host, one
 * "*.suffix" pattern, or any host.  lens are the group's distinct prefix
 * lengths, longest first.
 */
struct route_group {
	const char *key; /* exact host, or ".suffix" for a wildcard; NULL: any host */
	size_t keylen;
	int wildcard;
	uint32_t *lens;
	uint32_t nlens;
};

/* A slot of the prefix hash: (group, prefix) -> the first route with both. */
struct prefix_slot {
	uint32_t used, group, rank;
	const char *prefix;
	size_t len;
};

struct proxy_route_index {
	struct route_group *groups;
	uint32_t ngroups;
	int any_group; /* -1: no route for any host */
	int has_wildcard;
	uint32_t *group_slots; /* group index + 1; 0 free */
	uint32_t group_mask;
	struct prefix_slot *prefix_slots;
	uint32_t prefix_mask;
};

/* The configuration-only part of a table (struct proxy_table.shape). */
struct table_shape {
	struct snap_obj obj;
	struct arena arena;
	uint32_t *svc_slots; /* service index + 1; 0 free */
	uint32_t svc_mask;
	struct proxy_route **routes;     /* per listener, match order */
	struct proxy_route_index *index; /* per listener */
};

/* FNV-1a over s[0..len), lower-cased when fold; seeded so groups differ. */
static uint64_t hash_bytes(uint64_t seed, const char *s, size_t len, int fold)
{
	uint64_t h = 1469598103934665603ull ^ (seed * 0x9e3779b97f4a7c15ull);

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)(fold ? tolower((unsigned char)s[i]) : s[i]);
		h *= 1099511628211ull;
	}
	return h;
}

/* The smallest power of two >= 2n (at least 8), as a mask. */
static uint32_t slots_mask(size_t n)
{
	uint32_t size = 8;

	while (size < 2 * n)
		size <<= 1;
	return size - 1;
}

static void fault_from_config(struct proxy_fault *pf, const struct config_fault *cf)
{
	memset(pf, 0, sizeof(*pf));
	if (cf->has_delay) {
		pf->delay_ms = cf->delay_ms;
		pf->delay_percent = cf->delay_percent;
	}
	if (cf->has_abort) {
		pf->abort_status = cf->abort_status;
		pf->abort_percent = cf->abort_percent;
	}
}

/*
 * The service's mirror: the runtime one when set, else the config's.  The
 * config's version NULL means "the canary", so there is no mirror without
 * one.  A version the config lacks, or the one requests already go to as
 * stable, means no mirror.
 */
static void build_mirror(struct proxy_service *ps, const struct config_service *cs,
                         const struct proxy_traffic *tr)
{
	struct proxy_mirror *m = &ps->mirror;
	const char *version = cs->mirror.version;

	m->version = -1;
	m->percent = cs->mirror.enabled ? cs->mirror.percent : 0;
	m->methods =
	    cs->mirror.enabled && cs->mirror.methods.n ? &cs->mirror.methods : &default_methods;
	m->body_cap = cs->mirror.enabled ? cs->mirror.body_cap : 64u << 10;
	m->compare_body = cs->mirror.enabled && cs->mirror.compare_body;
	if (tr && tr->mirror_set) {
		m->runtime = 1;
		version = tr->mirror_version;
		m->percent = tr->mirror_percent;
		if (!version)
			return;
	} else if (!cs->mirror.enabled) {
		return;
	}
	if (version)
		m->version = proxy_service_version(ps, version);
	else
		m->version = ps->canary;
	if (m->version == ps->stable || m->percent == 0)
		m->version = -1;
}

static void config_ref_destroy(struct snap_obj *o)
{
	struct config_ref *r = (struct config_ref *)o;

	tls_set_free(r->tls); /* first: it names things inside cfg */
	config_free(r->cfg);
	free(r);
}

struct config_ref *config_ref_new(struct config *cfg)
{
	struct config_ref *r = calloc(1, sizeof(*r));

	if (!r) {
		config_free(cfg);
		return NULL;
	}
	snap_obj_init(&r->obj, config_ref_destroy);
	r->cfg = cfg;
	return r;
}

static void svc_mem_destroy(struct snap_obj *o)
{
	struct svc_mem *m = (struct svc_mem *)o;

	for (size_t i = 0; i < m->nsegments; i++)
		segment_release(m->segments[i]);
	arena_release(&m->arena);
	free(m);
}

static void shape_destroy(struct snap_obj *o)
{
	struct table_shape *s = (struct table_shape *)o;

	arena_release(&s->arena);
	free(s);
}

static void table_destroy(struct snap_obj *o)
{
	struct proxy_table *t = (struct proxy_table *)o;

	for (uint32_t i = 0; t->services && i < t->nservices; i++)
		if (t->services[i].mem)
			snap_obj_unref(t->services[i].mem);
	if (t->shape)
		snap_obj_unref(t->shape);
	snap_obj_unref(t->cfg_ref);
	arena_release(&t->arena);
	free(t);
}

/* Route order; svc_index holds the configuration index while sorting (stable). */
struct route_sort {
	struct proxy_route r;
	size_t order;
};

static int route_cmp(const void *a, const void *b)
{
	const struct route_sort *x = a, *y = b;

	/* longest prefix first; among equals, a specific host before "any"; then config order */
	if (x->r.prefix_len != y->r.prefix_len)
		return x->r.prefix_len > y->r.prefix_len ? -1 : 1;
	if ((x->r.host == NULL) != (y->r.host == NULL))
		return (x->r.host == NULL) - (y->r.host == NULL);
	return x->order < y->order ? -1 : x->order > y->order;
}

/* Compiles (once per service build) the segment an override names. */
static struct segment *svc_segment(struct svc_mem *m, const struct config_segment *cs, char *err,
                                   size_t errlen)
{
	struct segment **grown, *s;

	for (size_t i = 0; i < m->nsegments; i++)
		if (m->segments[i]->name == cs->name)
			return m->segments[i];
	grown = arena_alloc(&m->arena, (m->nsegments + 1) * sizeof(*grown));
	s = arena_alloc(&m->arena, sizeof(*s));
	if (!grown || !s)
		return NULL;
	if (m->nsegments)
		memcpy(grown, m->segments, m->nsegments * sizeof(*grown));
	if (segment_compile(s, cs, err, errlen) != 0)
		return NULL;
	grown[m->nsegments++] = s;
	m->segments = grown;
	return s;
}

/*
 * Moves the endpoints of pv that tr lists as down (health checks) behind
 * the ones picked, keeping the configuration's order within each part, and
 * sets neps to the count picked; never 0: with every endpoint down all
 * stay in (the health module keeps one up, this is the backstop).
 */
static void hold_out_down(struct arena *a, struct proxy_version *pv, const char *version,
                          const struct proxy_traffic *tr, struct proxy_registry *reg)
{
	uint32_t up = 0, *held, nheld = 0;

	if (!tr || !tr->ndown)
		return;
	held = arena_alloc(a, (pv->nall + 1) * sizeof(*held));
	if (!held)
		return; /* out of memory: every endpoint stays picked */
	for (uint32_t e = 0; e < pv->nall; e++) {
		const char *name = proxy_registry_get(reg, pv->eps[e])->name;
		int down = 0;

		for (size_t k = 0; k < tr->ndown && !down; k++)
			down = strcmp(tr->down[k].version, version) == 0 &&
			       strcmp(tr->down[k].endpoint, name) == 0;
		if (down)
			held[nheld++] = pv->eps[e];
		else
			pv->eps[up++] = pv->eps[e];
	}
	if (up == 0)
		return; /* all down: nothing was moved, all stay picked */
	memcpy(pv->eps + up, held, nheld * sizeof(*held));
	pv->neps = up;
}

/* Fills ps (zeroed by the caller) from cs and tr, in fresh shared memory of its own. */
static int build_service(struct proxy_service *ps, const struct config_service *cs,
                         const struct proxy_traffic *tr, struct proxy_registry *reg,
                         int (*series_fn)(void *ctx, const char *svc, const char *version),
                         void *series_ctx, char *err, size_t errlen)
{
	struct svc_mem *m = calloc(1, sizeof(*m));

	if (!m)
		goto nomem;
	snap_obj_init(&m->obj, svc_mem_destroy);
	arena_init(&m->arena, 1024);
	ps->mem = &m->obj; /* released with the table, also on failure */
	ps->name = cs->name;
	ps->name_len = strlen(cs->name);
	ps->nversions = (uint32_t)cs->nversions;
	ps->versions = arena_alloc(&m->arena, (cs->nversions + 1) * sizeof(*ps->versions));
	if (!ps->versions)
		goto nomem;
	ps->stable = -1;
	ps->canary = -1;
	for (size_t v = 0; v < cs->nversions; v++) {
		const struct config_version *cv = &cs->versions[v];
		struct proxy_version *pv = &ps->versions[v];

		pv->name = cv->name;
		pv->neps = (uint32_t)cv->nendpoints;
		pv->eps = arena_alloc(&m->arena, (cv->nendpoints + 1) * sizeof(*pv->eps));
		if (!pv->eps)
			goto nomem;
		for (size_t e = 0; e < cv->nendpoints; e++) {
			int id = proxy_registry_endpoint(reg, &cv->endpoints[e], err, errlen);

			if (id < 0)
				return -1;
			pv->eps[e] = (uint32_t)id;
		}
		pv->nall = pv->neps;
		hold_out_down(&m->arena, pv, cv->name, tr, reg);
		pv->series = series_fn ? series_fn(series_ctx, cs->name, cv->name) : -1;
		fault_from_config(&pv->fault, &cv->fault);
		for (size_t k = 0; tr && k < tr->nfaults; k++)
			if (strcmp(tr->faults[k].version, cv->name) == 0) {
				fault_from_config(&pv->fault, &tr->faults[k].fault);
				pv->fault.runtime = 1;
			}
		if (strcmp(cv->name, cs->stable) == 0)
			ps->stable = (int)v;
	}
	/* A completed rollout's version; one the config no longer has is ignored. */
	if (tr && tr->stable && proxy_service_version(ps, tr->stable) >= 0)
		ps->stable = proxy_service_version(ps, tr->stable);
	if (tr && tr->canary) {
		ps->canary = proxy_service_version(ps, tr->canary);
		if (ps->canary < 0) {
			snprintf(err, errlen, "service %s: canary version \"%s\" is not defined",
			         cs->name, tr->canary);
			return -1;
		}
		if (ps->canary == ps->stable) {
			ps->canary = -1; /* a version cannot be its own canary */
		} else {
			ps->weight = tr->weight > BUCKET_COUNT ? BUCKET_COUNT : tr->weight;
			/* a preview (blue-green) keeps the canary for its overrides */
			ps->versions[ps->canary].draining = ps->weight == 0 && !tr->preview;
		}
	}
	ps->sticky = cs->sticky;
	ps->expose_cohort = cs->expose_cohort;
	ps->context = cs->context;
	ps->ncontext = cs->ncontext;
	ps->timeouts = cs->timeouts;
	ps->outlier = cs->outlier;
	ps->drain_ms = cs->drain_ms;
	ps->max_header_bytes = cs->max_header_bytes;
	build_mirror(ps, cs, tr);
	ps->stats_slot = reg->mirror ? mirror_stats_slot(reg->mirror, cs->name) : -1;
	if (ps->stats_slot < 0)
		ps->stats_slot = -1;
	ps->noverrides = (uint32_t)cs->noverrides;
	ps->overrides = arena_alloc(&m->arena, (cs->noverrides + 1) * sizeof(*ps->overrides));
	if (!ps->overrides)
		goto nomem;
	for (size_t i = 0; i < cs->noverrides; i++) {
		const struct config_override *co = &cs->overrides[i];
		struct proxy_override *po = &ps->overrides[i];

		po->match = co->match;
		po->name = co->name;
		po->value = co->value;
		po->action = co->action;
		po->version = co->version ? proxy_service_version(ps, co->version) : -1;
		if (co->match == CONFIG_MATCH_SEGMENT) {
			po->segment = svc_segment(m, co->segment, err, errlen);
			if (!po->segment)
				return -1;
		}
	}
	return 0;
nomem:
	snprintf(err, errlen, "out of memory");
	return -1;
}

/* Index of service name in shape, or -1. */
static int shape_service(const struct table_shape *s, const struct config *cfg, const char *name)
{
	size_t len = strlen(name);
	uint32_t i = (uint32_t)hash_bytes(0, name, len, 0) & s->svc_mask;

	for (; s->svc_slots[i]; i = (i + 1) & s->svc_mask) {
		const char *n = cfg->services[s->svc_slots[i] - 1].name;

		if (strcmp(n, name) == 0)
			return (int)s->svc_slots[i] - 1;
	}
	return -1;
}

static uint64_t group_hash(int wildcard, const char *key, size_t len)
{
	return hash_bytes(wildcard ? 2 : 1, key, len, 1);
}

/* The group of (wildcard, key) in x, or -1. */
static int group_find(const struct proxy_route_index *x, int wildcard, const char *key, size_t len)
{
	uint32_t i = (uint32_t)group_hash(wildcard, key, len) & x->group_mask;

	for (; x->group_slots[i]; i = (i + 1) & x->group_mask) {
		const struct route_group *g = &x->groups[x->group_slots[i] - 1];

		if (g->wildcard == wildcard && g->keylen == len &&
		    strncasecmp(g->key, key, len) == 0)
			return (int)x->group_slots[i] - 1;
	}
	return -1;
}

/* The rank of the first route of group g whose prefix starts path; UINT32_MAX: none. */
static uint32_t group_best(const struct proxy_route_index *x, uint32_t g, struct str path)
{
	const struct route_group *grp = &x->groups[g];

	for (uint32_t k = 0; k < grp->nlens; k++) {
		size_t len = grp->lens[k];
		uint32_t i;

		if (len > path.len)
			continue;
		i = (uint32_t)hash_bytes(g + 16, path.p, len, 0) & x->prefix_mask;
		for (; x->prefix_slots[i].used; i = (i + 1) & x->prefix_mask) {
			const struct prefix_slot *ps = &x->prefix_slots[i];

			if (ps->group == g && ps->len == len &&
			    (len == 0 || memcmp(ps->prefix, path.p, len) == 0))
				return ps->rank; /* lengths go down: the first hit ranks first */
		}
	}
	return UINT32_MAX;
}

/*
 * Builds x over routes[0..n) (in match order): groups by host, and the
 * first route of each (group, prefix).
 */
static int index_build(struct arena *a, struct proxy_route_index *x,
                       const struct proxy_route *routes, uint32_t n)
{
	uint32_t *group_of = calloc(n + 1, sizeof(*group_of));
	int rc = -ENOMEM;

	x->any_group = -1;
	x->groups = arena_alloc(a, (n + 1) * sizeof(*x->groups));
	x->group_mask = slots_mask(n);
	x->group_slots = arena_alloc(a, (x->group_mask + 1) * sizeof(*x->group_slots));
	x->prefix_mask = slots_mask(n);
	x->prefix_slots = arena_alloc(a, (x->prefix_mask + 1) * sizeof(*x->prefix_slots));
	if (!group_of || !x->groups || !x->group_slots || !x->prefix_slots)
		goto out;
	for (uint32_t r = 0; r < n; r++) {
		const char *host = routes[r].host;
		int wildcard = host && host[0] == '*' && host[1] == '.';
		const char *key = host ? host + (wildcard ? 1 : 0) : NULL;
		size_t keylen = key ? strlen(key) : 0;
		int g = key ? group_find(x, wildcard, key, keylen) : x->any_group;

		if (g < 0) {
			g = (int)x->ngroups++;
			x->groups[g].key = key;
			x->groups[g].keylen = keylen;
			x->groups[g].wildcard = wildcard;
			if (key) {
				uint32_t i =
				    (uint32_t)group_hash(wildcard, key, keylen) & x->group_mask;

				while (x->group_slots[i])
					i = (i + 1) & x->group_mask;
				x->group_slots[i] = (uint32_t)g + 1;
			} else {
				x->any_group = g;
			}
			x->has_wildcard |= wildcard;
		}
		group_of[r] = (uint32_t)g;
	}
	/* each group's distinct lengths, longest first (routes come longest first) */
	for (uint32_t g = 0; g < x->ngroups; g++) {
		uint32_t cnt = 0;

		for (uint32_t r = 0; r < n; r++)
			if (group_of[r] == g)
				cnt++;
		x->groups[g].lens = arena_alloc(a, (cnt + 1) * sizeof(uint32_t));
		if (!x->groups[g].lens)
			goto out;
	}
	for (uint32_t r = 0; r < n; r++) {
		struct route_group *grp = &x->groups[group_of[r]];
		size_t len = routes[r].prefix_len;
		uint32_t i = (uint32_t)hash_bytes(group_of[r] + 16, routes[r].path_prefix, len, 0) &
		             x->prefix_mask;
		int seen = 0;

		if (!grp->nlens || grp->lens[grp->nlens - 1] != len)
			grp->lens[grp->nlens++] = (uint32_t)len;
		for (; x->prefix_slots[i].used; i = (i + 1) & x->prefix_mask) {
			const struct prefix_slot *ps = &x->prefix_slots[i];

			if (ps->group == group_of[r] && ps->len == len &&
			    (len == 0 || memcmp(ps->prefix, routes[r].path_prefix, len) == 0)) {
				seen = 1; /* an earlier route shadows this one */
				break;
			}
		}
		if (seen)
			continue;
		x->prefix_slots[i] = (struct prefix_slot){.used = 1,
		                                          .group = group_of[r],
		                                          .rank = r,
		                                          .prefix = routes[r].path_prefix,
		                                          .len = len};
	}
	rc = 0;
out:
	free(group_of);
	return rc;
}

/*
 * The lookups a table needs that depend on cfg only: service names and
 * every listener's routes.  NULL with a message in err.
 */
static struct table_shape *shape_build(const struct config *cfg, char *err, size_t errlen)
{
	struct table_shape *s = calloc(1, sizeof(*s));
	struct route_sort *sorted = NULL;

	if (!s)
		goto nomem;
	snap_obj_init(&s->obj, shape_destroy);
	arena_init(&s->arena, 16384);
	s->svc_mask = slots_mask(cfg->nservices);
	s->svc_slots = arena_alloc(&s->arena, (s->svc_mask + 1) * sizeof(*s->svc_slots));
	s->routes = arena_alloc(&s->arena, (cfg->nlisteners + 1) * sizeof(*s->routes));
	s->index = arena_alloc(&s->arena, (cfg->nlisteners + 1) * sizeof(*s->index));
	if (!s->svc_slots || !s->routes || !s->index)
		goto nomem;
	for (size_t i = 0; i < cfg->nservices; i++) {
		const char *name = cfg->services[i].name;
		uint32_t k = (uint32_t)hash_bytes(0, name, strlen(name), 0) & s->svc_mask;

		while (s->svc_slots[k])
			k = (k + 1) & s->svc_mask;
		s->svc_slots[k] = (uint32_t)i + 1;
	}
	for (size_t l = 0; l < cfg->nlisteners; l++) {
		const struct config_listener *cl = &cfg->listeners[l];

		free(sorted);
		sorted = calloc(cl->nroutes + 1, sizeof(*sorted));
		s->routes[l] = arena_alloc(&s->arena, (cl->nroutes + 1) * sizeof(**s->routes));
		if (!sorted || !s->routes[l])
			goto nomem;
		for (size_t r = 0; r < cl->nroutes; r++) {
			int si = shape_service(s, cfg, cl->routes[r].service);

			if (si < 0) {
				snprintf(err, errlen, "route to unknown service %s",
				         cl->routes[r].service);
				goto fail;
			}
			sorted[r].order = r;
			sorted[r].r.host = cl->routes[r].host;
			sorted[r].r.path_prefix = cl->routes[r].path_prefix;
			sorted[r].r.prefix_len = strlen(cl->routes[r].path_prefix);
			sorted[r].r.svc_index = (uint32_t)si;
		}
		qsort(sorted, cl->nroutes, sizeof(*sorted), route_cmp);
		for (size_t r = 0; r < cl->nroutes; r++)
			s->routes[l][r] = sorted[r].r;
		if (index_build(&s->arena, &s->index[l], s->routes[l], (uint32_t)cl->nroutes) != 0)
			goto nomem;
	}
	free(sorted);
	return s;
nomem:
	snprintf(err, errlen, "out of memory");
fail:
	free(sorted);
	if (s)
		snap_obj_unref(&s->obj);
	return NULL;
}

/* The versions' upstream TLS clients, from the configuration's set. */
static void service_tls(struct proxy_service *ps, const struct config_ref *cref)
{
	for (uint32_t v = 0; v < ps->nversions; v++)
		ps->versions[v].tls = tls_set_upstream(cref->tls, ps->name, ps->versions[v].name);
}

/* A table without services yet, holding cref and shape (a reference each). */
static struct proxy_table *table_new(struct config_ref *cref, struct snap_obj *shape)
{
	struct proxy_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	snap_obj_init(&t->obj, table_destroy);
	arena_init(&t->arena, 16384);
	t->cfg_ref = snap_obj_ref(&cref->obj);
	t->shape = snap_obj_ref(shape);
	return t;
}

/* The table's listeners over its services and the shape's routes. */
static int table_listeners(struct proxy_table *t, const struct config *cfg)
{
	const struct table_shape *s = (const struct table_shape *)t->shape;

	t->nlisteners = (uint32_t)cfg->nlisteners;
	t->listeners = arena_alloc(&t->arena, (cfg->nlisteners + 1) * sizeof(*t->listeners));
	if (!t->listeners)
		return -ENOMEM;
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *cl = &cfg->listeners[i];
		struct proxy_listener *pl = &t->listeners[i];
		char addr[300];

		if (cl->listen.family == AF_INET6)
			snprintf(addr, sizeof(addr), "[%s]:%u", cl->listen.host, cl->listen.port);
		else
			snprintf(addr, sizeof(addr), "%s:%u", cl->listen.host, cl->listen.port);
		pl->name = cl->name;
		pl->addr = arena_strdup(&t->arena, addr);
		if (!pl->addr)
			return -ENOMEM;
		pl->nroutes = (uint32_t)cl->nroutes;
		pl->routes = s->routes[i];
		pl->index = &s->index[i];
		pl->services = t->services;
		pl->tls = tls_set_listener(((struct config_ref *)t->cfg_ref)->tls, cl->name);
	}
	return 0;
}

struct proxy_table *proxy_table_build(struct config_ref *cref, const struct proxy_traffic *traffic,
                                      size_t ntraffic, struct proxy_registry *reg,
                                      int (*series_fn)(void *ctx, const char *svc,
                                                       const char *version),
                                      void *series_ctx, char *err, size_t errlen)
{
	const struct config *cfg = cref->cfg;
	struct table_shape *shape = shape_build(cfg, err, errlen);
	const struct proxy_traffic **tr_of = NULL;
	struct proxy_table *t = NULL;

	if (!shape)
		return NULL;
	t = table_new(cref, &shape->obj);
	snap_obj_unref(&shape->obj); /* the table holds it */
	tr_of = calloc(cfg->nservices + 1, sizeof(*tr_of));
	if (!t || !tr_of)
		goto nomem;
	for (size_t k = 0; k < ntraffic; k++) {
		int si = shape_service(shape, cfg, traffic[k].service);

		if (si >= 0)
			tr_of[si] = &traffic[k]; /* the last entry of a service counts */
	}
	t->header_timeout_ms = 10000;
	t->idle_timeout_ms = 60000;
	t->max_header_bytes = HTTP_DEFAULT_MAX_HEADER_BYTES;
	t->services = arena_alloc(&t->arena, (cfg->nservices + 1) * sizeof(*t->services));
	if (!t->services)
		goto nomem;
	t->nservices = (uint32_t)cfg->nservices;
	for (size_t i = 0; i < cfg->nservices; i++) {
		t->services[i].index = (int)i;
		if (build_service(&t->services[i], &cfg->services[i], tr_of[i], reg, series_fn,
		                  series_ctx, err, errlen) != 0)
			goto fail;
		service_tls(&t->services[i], cref);
		/* listener-wide parsing limits: the most permissive service's */
		if (i == 0 || cfg->services[i].max_header_bytes > t->max_header_bytes)
			t->max_header_bytes = cfg->services[i].max_header_bytes;
		if (i == 0 || cfg->services[i].timeouts.header_ms > t->header_timeout_ms)
			t->header_timeout_ms = cfg->services[i].timeouts.header_ms;
		if (i == 0 || cfg->services[i].timeouts.idle_ms > t->idle_timeout_ms)
			t->idle_timeout_ms = cfg->services[i].timeouts.idle_ms;
	}
	if (table_listeners(t, cfg) != 0)
		goto nomem;
	free(tr_of);
	return t;
nomem:
	snprintf(err, errlen, "out of memory");
fail:
	free(tr_of);
	if (t)
		snap_obj_unref(&t->obj);
	return NULL;
}

struct proxy_table *proxy_table_derive(const struct proxy_table *old,
                                       const struct proxy_traffic *tr, struct proxy_registry *reg,
                                       int (*series_fn)(void *ctx, const char *svc,
                                                        const char *version),
                                       void *series_ctx, char *err, size_t errlen)
{
	struct config_ref *cref = (struct config_ref *)old->cfg_ref;
	const struct table_shape *shape = (const struct table_shape *)old->shape;
	int si = shape_service(shape, cref->cfg, tr->service);
	struct proxy_table *t;

	if (si < 0) {
		snprintf(err, errlen, "no service named %s", tr->service);
		return NULL;
	}
	t = table_new(cref, old->shape);
	if (!t)
		goto nomem;
	t->header_timeout_ms = old->header_timeout_ms;
	t->idle_timeout_ms = old->idle_timeout_ms;
	t->max_header_bytes = old->max_header_bytes;
	t->services = arena_alloc(&t->arena, (old->nservices + 1) * sizeof(*t->services));
	if (!t->services)
		goto nomem;
	memcpy(t->services, old->services, old->nservices * sizeof(*t->services));
	t->nservices = old->nservices;
	for (uint32_t i = 0; i < t->nservices; i++)
		if (i != (uint32_t)si)
			snap_obj_ref(t->services[i].mem);
	memset(&t->services[si], 0, sizeof(t->services[si]));
	t->services[si].index = si;
	if (build_service(&t->services[si], &cref->cfg->services[si], tr, reg, series_fn,
	                  series_ctx, err, errlen) != 0)
		goto fail;
	service_tls(&t->services[si], cref);
	if (table_listeners(t, cref->cfg) != 0)
		goto nomem;
	return t;
nomem:
	snprintf(err, errlen, "out of memory");
fail:
	if (t)
		snap_obj_unref(&t->obj);
	return NULL;
}

struct proxy_service *proxy_table_service(const struct proxy_table *t, const char *name)
{
	const struct config_ref *cref = (const struct config_ref *)t->cfg_ref;
	int si =
	    t->shape ? shape_service((const struct table_shape *)t->shape, cref->cfg, name) : -1;

	return si >= 0 && (uint32_t)si < t->nservices ? &t->services[si] : NULL;
}

int proxy_service_version(const struct proxy_service *svc, const char *name)
{
	for (uint32_t i = 0; i < svc->nversions; i++)
		if (strcmp(svc->versions[i].name, name) == 0)
			return (int)i;
	return -1;
}

struct proxy_service *proxy_route_match(const struct proxy_listener *l, struct str host,
                                        struct str path)
{
	const struct proxy_route_index *x = l->index;
	uint32_t best = UINT32_MAX, rank;
	int g;

	/* drop the port: "api.example.com:8080" -> "api.example.com" */
	if (host.len && host.p[0] != '[') {
		const char *colon = memchr(host.p, ':', host.len);

		if (colon)
			host.len = (size_t)(colon - host.p);
	} else if (host.len) {
		const char *rb = memchr(host.p, ']', host.len);

		if (rb)
			host.len = (size_t)(rb - host.p + 1);
	}
	if (!x || !l->nroutes)
		return NULL;
	if (host.p && (g = group_find(x, 0, host.p, host.len)) >= 0)
		best = group_best(x, (uint32_t)g, path);
	/* "*.example.com" matches any host that ends with ".example.com" and is longer */
	for (size_t i = 1; x->has_wildcard && host.p && i < host.len; i++) {
		if (host.p[i] != '.')
			continue;
		g = group_find(x, 1, host.p + i, host.len - i);
		if (g >= 0 && (rank = group_best(x, (uint32_t)g, path)) < best)
			best = rank;
	}
	if (x->any_group >= 0 && (rank = group_best(x, (uint32_t)x->any_group, path)) < best)
		best = rank;
	return best == UINT32_MAX ? NULL : &l->services[l->routes[best].svc_index];
}

struct str proxy_cookie(const struct http_msg *req, const char *name)
{
	size_t nl = strlen(name);

	for (size_t i = 0; i < req->nheaders; i++) {
		struct str v = req->headers[i].value;
		size_t p = 0;

		if (!str_caseeq_c(req->headers[i].name, "cookie"))
			continue;
		while (p < v.len) {
			size_t e = p, eq;

			while (e < v.len && v.p[e] != ';')
				e++;
			while (p < e && v.p[p] == ' ')
				p++;
			eq = p;
			while (eq < e && v.p[eq] != '=')
				eq++;
			if (eq < e && eq - p == nl && memcmp(v.p + p, name, nl) == 0) {
				struct str val = str_trim(str_make(v.p + eq + 1, e - eq - 1));

				if (val.len >= 2 && val.p[0] == '"' && val.p[val.len - 1] == '"')
					val = str_make(val.p + 1, val.len - 2);
				return val;
			}
			p = e + 1;
		}
	}
	return STR_NULL;
}

/* A request field named by a key source; STR_NULL when absent. */
static struct str keysrc_value(const struct config_keysrc *ks, const struct http_msg *req,
                               struct str peer)
{
	const struct str *h;

	switch (ks->kind) {
	case CONFIG_KEY_HEADER:
		h = http_msg_header(req, ks->name);
		return h ? *h : STR_NULL;
	case CONFIG_KEY_COOKIE:
		return proxy_cookie(req, ks->name);
	case CONFIG_KEY_IP:
		return peer;
	case CONFIG_KEY_QUERY:
		return str_query_param(req->query, ks->name);
	case CONFIG_KEY_NONE:
		break;
	}
	return STR_NULL;
}

struct req_ctx {
	const struct proxy_service *svc;
	const struct http_msg *req;
	struct str peer;
};

static int req_attr(void *ctx, const char *attr, struct str *val)
{
	struct req_ctx *rc = ctx;

	for (size_t i = 0; i < rc->svc->ncontext; i++) {
		if (strcmp(rc->svc->context[i].attr, attr) == 0) {
			*val = keysrc_value(&rc->svc->context[i].src, rc->req, rc->peer);
			return val->p != NULL;
		}
	}
	return 0;
}

static int override_matches(const struct proxy_service *svc, const struct proxy_override *o,
                            const struct http_msg *req, struct str peer)
{
	const struct str *h;
	struct str v;
	struct req_ctx ctx = {svc, req, peer};

	switch (o->match) {
	case CONFIG_MATCH_HEADER:
		h = http_msg_header(req, o->name);
		return h && str_eq_c(*h, o->value);
	case CONFIG_MATCH_COOKIE:
		v = proxy_cookie(req, o->name);
		return v.p && str_eq_c(v, o->value);
	case CONFIG_MATCH_SEGMENT:
		return segment_match(o->segment, req_attr, &ctx);
	}
	return 0;
}

static void decide_version(const struct proxy_service *svc, int version, struct proxy_decision *out)
{
	/* a draining canary takes no new request, not even by override */
	if (version < 0 || svc->versions[version].draining)
		version = svc->stable;
	out->version = version;
	out->cohort = version == svc->canary ? COHORT_CANARY : COHORT_STABLE;
}

void proxy_decide(const struct proxy_service *svc, const struct http_msg *req, struct str peer,
                  uint64_t rnd, struct proxy_decision *out)
{
	struct str key;
	int kl;

	out->bucket = UINT32_MAX;
	out->key_hash = 0;
	out->set_cookie = 0;
	out->cookie_key[0] = '\0';
	for (uint32_t i = 0; i < svc->noverrides; i++) {
		const struct proxy_override *o = &svc->overrides[i];

		if (!override_matches(svc, o, req, peer))
			continue;
		switch (o->action) {
		case CONFIG_OVERRIDE_CANARY:
			decide_version(svc, svc->canary, out);
			return;
		case CONFIG_OVERRIDE_STABLE:
			decide_version(svc, svc->stable, out);
			return;
		case CONFIG_OVERRIDE_VERSION:
			decide_version(svc, o->version, out);
			return;
		}
	}
	key =
	    svc->sticky.kind == CONFIG_KEY_NONE ? STR_NULL : keysrc_value(&svc->sticky, req, peer);
	if (!key.p || key.len == 0) {
		/* no key: a random one; a cookie-sticky client gets it as its cookie */
		kl = snprintf(out->cookie_key, sizeof(out->cookie_key), "%016llx",
		              (unsigned long long)rnd);
		key = str_make(out->cookie_key, (size_t)kl);
		out->set_cookie = svc->sticky.kind == CONFIG_KEY_COOKIE;
	}
	out->key_hash = bucket_hash(svc->name, svc->name_len, key.p, key.len);
	out->bucket = bucket_from_hash(out->key_hash);
	if (svc->canary < 0) {
		out->version = svc->stable;
		out->cohort = COHORT_STABLE;
		return;
	}
	out->cohort = bucket_cohort(out->bucket, svc->weight);
	out->version = out->cohort == COHORT_CANARY ? svc->canary : svc->stable;
}
