#include "proxy/table.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/mirror.h"
#include "proxy/registry.h"

/* mirror.methods when the config has no mirror: the idempotent ones */
static const char *const default_methods_v[] = {"GET", "HEAD", "OPTIONS"};
static const struct config_strlist default_methods = {(const char **)default_methods_v, 3};

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

static void table_destroy(struct snap_obj *o)
{
	struct proxy_table *t = (struct proxy_table *)o;

	for (size_t i = 0; i < t->nsegments; i++)
		segment_release(t->segments[i]);
	snap_obj_unref(t->cfg_ref);
	arena_release(&t->arena);
	free(t);
}

static int route_cmp(const void *a, const void *b)
{
	const struct proxy_route *x = a, *y = b;

	/* longest prefix first; among equals, a specific host before "any" */
	if (x->prefix_len != y->prefix_len)
		return x->prefix_len > y->prefix_len ? -1 : 1;
	return (x->host == NULL) - (y->host == NULL);
}

/* Compiles (once per table) the segment an override names. */
static struct segment *table_segment(struct proxy_table *t, const struct config_segment *cs,
                                     char *err, size_t errlen)
{
	struct segment **grown, *s;

	for (size_t i = 0; i < t->nsegments; i++)
		if (t->segments[i]->name == cs->name)
			return t->segments[i];
	grown = arena_alloc(&t->arena, (t->nsegments + 1) * sizeof(*grown));
	s = arena_alloc(&t->arena, sizeof(*s));
	if (!grown || !s)
		return NULL;
	if (t->nsegments)
		memcpy(grown, t->segments, t->nsegments * sizeof(*grown));
	if (segment_compile(s, cs, err, errlen) != 0)
		return NULL;
	grown[t->nsegments++] = s;
	t->segments = grown;
	return s;
}

static int build_service(struct proxy_table *t, struct proxy_service *ps,
                         const struct config_service *cs, const struct proxy_traffic *tr,
                         struct proxy_registry *reg,
                         int (*series_fn)(void *ctx, const char *svc, const char *version),
                         void *series_ctx, char *err, size_t errlen)
{
	ps->name = cs->name;
	ps->name_len = strlen(cs->name);
	ps->nversions = (uint32_t)cs->nversions;
	ps->versions = arena_alloc(&t->arena, cs->nversions * sizeof(*ps->versions));
	if (!ps->versions)
		goto nomem;
	ps->stable = -1;
	ps->canary = -1;
	for (size_t v = 0; v < cs->nversions; v++) {
		const struct config_version *cv = &cs->versions[v];
		struct proxy_version *pv = &ps->versions[v];

		pv->name = cv->name;
		pv->neps = (uint32_t)cv->nendpoints;
		pv->eps = arena_alloc(&t->arena, cv->nendpoints * sizeof(*pv->eps));
		if (!pv->eps)
			goto nomem;
		for (size_t e = 0; e < cv->nendpoints; e++) {
			int id = proxy_registry_endpoint(reg, &cv->endpoints[e], err, errlen);

			if (id < 0)
				return -1;
			pv->eps[e] = (uint32_t)id;
		}
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
			ps->versions[ps->canary].draining = ps->weight == 0;
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
	ps->overrides = arena_alloc(&t->arena, (cs->noverrides + 1) * sizeof(*ps->overrides));
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
			po->segment = table_segment(t, co->segment, err, errlen);
			if (!po->segment)
				return -1;
		}
	}
	return 0;
nomem:
	snprintf(err, errlen, "out of memory");
	return -1;
}

struct proxy_table *proxy_table_build(struct config_ref *cref, const struct proxy_traffic *traffic,
                                      size_t ntraffic, struct proxy_registry *reg,
                                      int (*series_fn)(void *ctx, const char *svc,
                                                       const char *version),
                                      void *series_ctx, char *err, size_t errlen)
{
	const struct config *cfg = cref->cfg;
	struct proxy_table *t = calloc(1, sizeof(*t));

	if (!t) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	snap_obj_init(&t->obj, table_destroy);
	arena_init(&t->arena, 16384);
	t->cfg_ref = snap_obj_ref(&cref->obj);
	t->header_timeout_ms = 10000;
	t->idle_timeout_ms = 60000;
	t->max_header_bytes = HTTP_DEFAULT_MAX_HEADER_BYTES;
	t->nservices = (uint32_t)cfg->nservices;
	t->services = arena_alloc(&t->arena, (cfg->nservices + 1) * sizeof(*t->services));
	if (!t->services)
		goto nomem;
	for (size_t i = 0; i < cfg->nservices; i++) {
		const struct proxy_traffic *tr = NULL;

		for (size_t k = 0; k < ntraffic; k++)
			if (strcmp(traffic[k].service, cfg->services[i].name) == 0)
				tr = &traffic[k];
		t->services[i].index = (int)i;
		if (build_service(t, &t->services[i], &cfg->services[i], tr, reg, series_fn,
		                  series_ctx, err, errlen) != 0)
			goto fail;
		/* listener-wide parsing limits: the most permissive service's */
		if (i == 0 || cfg->services[i].max_header_bytes > t->max_header_bytes)
			t->max_header_bytes = cfg->services[i].max_header_bytes;
		if (i == 0 || cfg->services[i].timeouts.header_ms > t->header_timeout_ms)
			t->header_timeout_ms = cfg->services[i].timeouts.header_ms;
		if (i == 0 || cfg->services[i].timeouts.idle_ms > t->idle_timeout_ms)
			t->idle_timeout_ms = cfg->services[i].timeouts.idle_ms;
	}
	t->nlisteners = (uint32_t)cfg->nlisteners;
	t->listeners = arena_alloc(&t->arena, (cfg->nlisteners + 1) * sizeof(*t->listeners));
	if (!t->listeners)
		goto nomem;
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
		pl->nroutes = (uint32_t)cl->nroutes;
		pl->routes = arena_alloc(&t->arena, (cl->nroutes + 1) * sizeof(*pl->routes));
		if (!pl->addr || !pl->routes)
			goto nomem;
		for (size_t r = 0; r < cl->nroutes; r++) {
			pl->routes[r].host = cl->routes[r].host;
			pl->routes[r].path_prefix = cl->routes[r].path_prefix;
			pl->routes[r].prefix_len = strlen(cl->routes[r].path_prefix);
			pl->routes[r].svc = proxy_table_service(t, cl->routes[r].service);
			if (!pl->routes[r].svc) {
				snprintf(err, errlen, "route to unknown service %s",
				         cl->routes[r].service);
				goto fail;
			}
		}
		qsort(pl->routes, pl->nroutes, sizeof(*pl->routes), route_cmp);
	}
	return t;
nomem:
	snprintf(err, errlen, "out of memory");
fail:
	snap_obj_unref(&t->obj);
	return NULL;
}

struct proxy_service *proxy_table_service(const struct proxy_table *t, const char *name)
{
	for (uint32_t i = 0; i < t->nservices; i++)
		if (strcmp(t->services[i].name, name) == 0)
			return &t->services[i];
	return NULL;
}

int proxy_service_version(const struct proxy_service *svc, const char *name)
{
	for (uint32_t i = 0; i < svc->nversions; i++)
		if (strcmp(svc->versions[i].name, name) == 0)
			return (int)i;
	return -1;
}

static int host_match(const char *pattern, struct str host)
{
	size_t pl;

	if (!pattern)
		return 1;
	if (pattern[0] == '*' && pattern[1] == '.') {
		pl = strlen(pattern + 1); /* ".example.com" */
		return host.len > pl && strncasecmp(host.p + host.len - pl, pattern + 1, pl) == 0;
	}
	return str_caseeq_c(host, pattern);
}

struct proxy_service *proxy_route_match(const struct proxy_listener *l, struct str host,
                                        struct str path)
{
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
	for (uint32_t i = 0; i < l->nroutes; i++) {
		const struct proxy_route *r = &l->routes[i];

		if (path.len >= r->prefix_len &&
		    memcmp(path.p, r->path_prefix, r->prefix_len) == 0 && host_match(r->host, host))
			return r->svc;
	}
	return NULL;
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
