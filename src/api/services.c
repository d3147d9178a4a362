#include "api/services.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/loop.h"
#include "metrics/stats.h"
#include "proxy/health.h"
#include "proxy/mirror.h"
#include "proxy/proxy.h"
#include "proxy/traffic.h"
#include "rollout/engine.h"

static json_t *percent_json(uint32_t thousandths)
{
	return json_real((double)thousandths / 1000.0);
}

static json_t *cohort_json(const struct metrics_cohort_snapshot *s)
{
	json_t *o = json_pack("{s:I, s:I, s:f, s:f}", "requests", (json_int_t)s->requests, "errors",
	                      (json_int_t)s->errors, "error_rate", metrics_error_rate(s),
	                      "success_rate", metrics_success_rate(s));

	if (s->hist.n) {
		json_object_set_new(o, "latency_p50_ms",
		                    json_real(metrics_latency_quantile_us(s, 0.50) / 1000.0));
		json_object_set_new(o, "latency_p99_ms",
		                    json_real(metrics_latency_quantile_us(s, 0.99) / 1000.0));
		json_object_set_new(o, "latency_mean_ms",
		                    json_real(metrics_latency_mean_us(s) / 1000.0));
	}
	return o;
}

/* The mirror in effect for svc: {version, percent, source, methods, body_cap, compare_body}. */
static json_t *mirror_json(const struct proxy_service *svc)
{
	const struct proxy_mirror *m = &svc->mirror;
	json_t *methods = json_array();

	for (size_t i = 0; m->methods && i < m->methods->n; i++)
		json_array_append_new(methods, json_string(m->methods->v[i]));
	return json_pack("{s:o, s:o, s:s, s:o, s:I, s:b}", "version",
	                 m->version >= 0 ? json_string(svc->versions[m->version].name)
	                                 : json_null(),
	                 "percent", percent_json(m->version >= 0 ? m->percent : 0), "source",
	                 m->version < 0 ? "none"
	                 : m->runtime   ? "runtime"
	                                : "config",
	                 "methods", methods, "body_cap", (json_int_t)m->body_cap, "compare_body",
	                 m->compare_body);
}

/* A version's faults, or null. */
static json_t *fault_json(const struct proxy_fault *f)
{
	json_t *o;

	if (!f->delay_percent && !f->abort_percent)
		return json_null();
	o = json_pack("{s:s}", "source", f->runtime ? "runtime" : "config");
	if (f->delay_percent)
		json_object_set_new(o, "delay",
		                    json_pack("{s:I, s:o}", "ms", (json_int_t)f->delay_ms,
		                              "percent", percent_json(f->delay_percent)));
	if (f->abort_percent)
		json_object_set_new(o, "abort",
		                    json_pack("{s:I, s:o}", "status", (json_int_t)f->abort_status,
		                              "percent", percent_json(f->abort_percent)));
	return o;
}

/*
 * An endpoint's active health check (proxy/health.h): {state, in_pick,
 * kept, last_probe, last_status, last_latency_ms, since, passes, fails,
 * reason}; state "unknown" with a reason when the version has no check.
 * in_pick is the routing table's (picked), which the check decides.
 */
static json_t *check_json(const struct health *h, const char *svc, const char *version,
                          const char *endpoint, bool picked)
{
	struct health_view v;
	char at[40], since[40];
	int checked = health_view(h, svc, version, endpoint, &v) == 0;

	if (v.last_probe_ms)
		api_format_time((uint64_t)v.last_probe_ms, at, sizeof(at));
	if (v.since_ms)
		api_format_time((uint64_t)v.since_ms, since, sizeof(since));
	return json_pack("{s:s, s:b, s:b, s:b, s:s?, s:o, s:o, s:s?, s:I, s:I, s:s}", "state",
	                 health_state_name(v.state), "checked", checked, "in_pick", picked, "kept",
	                 v.kept, "last_probe", v.last_probe_ms ? at : NULL, "last_status",
	                 v.last_status ? json_integer(v.last_status) : json_null(),
	                 "last_latency_ms",
	                 v.last_probe_ms ? json_integer(v.last_latency_ms) : json_null(), "since",
	                 v.since_ms ? since : NULL, "passes", (json_int_t)v.passes, "fails",
	                 (json_int_t)v.fails, "reason", v.reason);
}

/*
 * The "endpoints" component of /v1/health/detailed: counts by state and
 * every checked endpoint of every service in the published table.
 */
static json_t *endpoints_health(void *ctx)
{
	const struct services_backend *be = ctx;
	struct proxy_table *t = proxy_table_get(be->proxy);
	struct proxy_registry *reg = proxy_registry(be->proxy);
	json_t *list = json_array();
	size_t up, down, unknown;

	health_counts_by_state(be->health, &up, &down, &unknown);
	for (uint32_t s = 0; t && s < t->nservices; s++) {
		const struct proxy_service *svc = &t->services[s];

		for (uint32_t v = 0; v < svc->nversions; v++) {
			const struct proxy_version *pv = &svc->versions[v];

			for (uint32_t e = 0; e < (pv->nall ? pv->nall : pv->neps); e++) {
				const char *name = proxy_registry_get(reg, pv->eps[e])->name;
				json_t *c =
				    check_json(be->health, svc->name, pv->name, name, e < pv->neps);

				json_object_set_new(c, "service", json_string(svc->name));
				json_object_set_new(c, "version", json_string(pv->name));
				json_object_set_new(c, "endpoint", json_string(name));
				json_array_append_new(list, c);
			}
		}
	}
	if (t)
		snap_obj_unref(&t->obj);
	return json_pack("{s:s, s:I, s:I, s:I, s:o}", "status", down ? "degraded" : "ok", "up",
	                 (json_int_t)up, "down", (json_int_t)down, "unknown", (json_int_t)unknown,
	                 "endpoints", list);
}

/* The rollout that owns svc (manual changes would fight it), or NULL. */
static const char *owner_of(const struct api *api, const char *service)
{
	return api->rollouts ? rollout_engine_owner(api->rollouts, service) : NULL;
}

static json_t *service_json(const struct api *api, const struct proxy_service *svc)
{
	const struct services_backend *backend = api->services;
	struct proxy_registry *reg = proxy_registry(backend->proxy);
	json_t *versions = json_array(), *cohorts = json_object();
	uint64_t now = clock_mono_ms();
	const char *sticky_kind[] = {"none", "header", "cookie", "ip", "query"};
	const char *owner = owner_of(api, svc->name);
	json_t *o;

	for (uint32_t v = 0; v < svc->nversions; v++) {
		const struct proxy_version *pv = &svc->versions[v];
		json_t *eps = json_array();
		const char *role = (int)v == svc->stable   ? "stable"
		                   : (int)v == svc->canary ? "canary"
		                                           : "idle";

		for (uint32_t e = 0; e < (pv->nall ? pv->nall : pv->neps); e++) {
			struct proxy_endpoint *ep = proxy_registry_get(reg, pv->eps[e]);
			int ejected = atomic_load(&ep->ejected_until_ms) > now;

			json_array_append_new(
			    eps, json_pack("{s:s, s:s, s:I, s:I, s:o}", "address", ep->name,
			                   "health", ejected ? "ejected" : "ok", "requests",
			                   (json_int_t)atomic_load(&ep->requests), "failures",
			                   (json_int_t)atomic_load(&ep->failures), "check",
			                   check_json(backend->health, svc->name, pv->name,
			                              ep->name, e < pv->neps)));
		}
		json_array_append_new(versions,
		                      json_pack("{s:s, s:s, s:b, s:o, s:o}", "name", pv->name,
		                                "role", role, "draining", pv->draining, "endpoints",
		                                eps, "faults", fault_json(&pv->fault)));
		if (backend->metrics && pv->series >= 0) {
			for (int c = 0; c < COHORT_COUNT; c++) {
				struct metrics_cohort_snapshot s;
				char key[96];

				if (metrics_read(backend->metrics, pv->series, (enum cohort)c,
				                 &s) ||
				    s.requests == 0)
					continue;
				snprintf(key, sizeof(key), "%s/%s", pv->name,
				         cohort_name((enum cohort)c));
				json_object_set_new(cohorts, key, cohort_json(&s));
			}
		}
	}
	o = json_pack("{s:s, s:s, s:o, s:o, s:s, s:o, s:o}", "name", svc->name, "stable",
	              svc->versions[svc->stable].name, "canary",
	              svc->canary >= 0 ? json_string(svc->versions[svc->canary].name) : json_null(),
	              "weight", percent_json(svc->canary >= 0 ? svc->weight : 0), "sticky",
	              sticky_kind[svc->sticky.kind], "versions", versions, "cohorts", cohorts);
	if (svc->sticky.name)
		json_object_set_new(o, "sticky_key", json_string(svc->sticky.name));
	json_object_set_new(o, "owner", owner ? json_string(owner) : json_null());
	json_object_set_new(o, "mirror", mirror_json(svc));
	return o;
}

static void h_list(struct api_call *call)
{
	struct services_backend *backend = call->api->services;

	struct proxy_table *t = proxy_table_get(backend->proxy);
	json_t *arr = json_array();

	for (uint32_t i = 0; t && i < t->nservices; i++)
		json_array_append_new(arr, service_json(call->api, &t->services[i]));
	if (t)
		snap_obj_unref(&t->obj);
	api_reply_json(call, 200, json_pack("{s:o}", "services", arr));
}

static struct proxy_service *find(struct proxy_table *t, struct str name)
{
	char buf[256], *z = buf;
	struct proxy_service *svc;

	/* a decoded NUL would cut the name short: no service has one */
	if (!t || !name.p || memchr(name.p, '\0', name.len))
		return NULL;
	if (name.len >= sizeof(buf) && !(z = malloc(name.len + 1)))
		return NULL;
	memcpy(z, name.p, name.len);
	z[name.len] = '\0';
	svc = proxy_table_service(t, z);
	if (z != buf)
		free(z);
	return svc;
}

/* Replies to a failed traffic change with the module's code and message. */
static void reply_failed(struct api_call *call, int rc)
{
	char msg[512];

	traffic_errmsg(call->api->services->traffic, msg, sizeof(msg));
	api_reply_err(call, rc, NULL, msg[0] ? msg : NULL);
}

static void svc_not_found(struct api_call *call)
{
	api_reply_error(call, 404, "not_found", NULL, "no service named \"%.*s\"",
	                (int)call->params[0].len, call->params[0].p);
}

/* 1 after replying 409 when a rollout owns svc (manual changes would fight it), else 0. */
static int owned(struct api_call *call, const struct proxy_service *svc)
{
	const char *owner = owner_of(call->api, svc->name);

	if (!owner)
		return 0;
	api_reply_error(call, 409, "conflict", NULL,
	                "service %s is owned by rollout %s; use the rollout's controls", svc->name,
	                owner);
	return 1;
}

/* body[key] as a percentage in thousandths: 0 ok, -1 after replying 422 naming field. */
static int body_percent(struct api_call *call, json_t *obj, const char *key, const char *field,
                        uint32_t *out)
{
	json_t *v = json_object_get(obj, key);

	if (!v || !json_is_number(v) ||
	    config_percent_from_double(json_number_value(v), out) != 0) {
		api_reply_error(call, 422, "invalid", field,
		                "%s must be a number between 0 and 100 with at most 3 decimals",
		                field);
		return -1;
	}
	return 0;
}

static void h_get(struct api_call *call)
{
	struct services_backend *backend = call->api->services;

	struct proxy_table *t = proxy_table_get(backend->proxy);
	struct proxy_service *svc = find(t, call->params[0]);

	if (!svc)
		svc_not_found(call);
	else
		api_reply_json(call, 200, service_json(call->api, svc));
	if (t)
		snap_obj_unref(&t->obj);
}

static void h_traffic(struct api_call *call)
{
	static const char *const keys[] = {"canary", "weight"};
	struct services_backend *backend = call->api->services;
	struct proxy_table *t = proxy_table_get(backend->proxy);
	struct proxy_service *svc = find(t, call->params[0]);
	json_t *body = NULL, *jc;
	const char *canary = NULL;
	uint32_t weight = 0;
	int rc;

	if (!svc) {
		svc_not_found(call);
		goto out;
	}
	body = api_body_json(call);
	if (!body || api_only_keys(call, body, "", keys, 2) != 0)
		goto out;
	jc = json_object_get(body, "canary");
	if (jc && !json_is_null(jc)) {
		if (!json_is_string(jc)) {
			api_reply_error(call, 422, "invalid", "canary", "canary must be a string");
			goto out;
		}
		canary = json_string_value(jc);
		if (proxy_service_version(svc, canary) < 0) {
			api_reply_error(call, 422, "invalid", "canary",
			                "version \"%s\" is not defined for service %s", canary,
			                svc->name);
			goto out;
		}
		if (proxy_service_version(svc, canary) == svc->stable) {
			api_reply_error(call, 422, "invalid", "canary",
			                "\"%s\" is the stable version", canary);
			goto out;
		}
	} else if (!jc && svc->canary >= 0) {
		canary = svc->versions[svc->canary].name; /* keep the current canary */
	}
	if (body_percent(call, body, "weight", "weight", &weight) != 0)
		goto out;
	if (!canary && weight > 0) {
		api_reply_error(call, 422, "invalid", "canary",
		                "a canary version is needed for a weight above 0");
		goto out;
	}
	if (owned(call, svc))
		goto out;
	rc = traffic_set_weight(backend->traffic, svc->name, canary, weight, call->actor);
	if (rc) {
		reply_failed(call, rc);
		goto out;
	}
	if (t)
		snap_obj_unref(&t->obj);
	t = proxy_table_get(backend->proxy);
	svc = find(t, call->params[0]);
	api_reply_json(call, 200, svc ? service_json(call->api, svc) : json_object());
out:
	json_decref(body);
	if (t)
		snap_obj_unref(&t->obj);
}

/* A fraction, or null when there is nothing to divide. */
static json_t *ratio_json(uint64_t num, uint64_t den)
{
	return den ? json_real((double)num / (double)den) : json_null();
}

static json_t *side_json(const struct hist *h)
{
	if (!h->n)
		return json_pack("{s:I}", "count", (json_int_t)0);
	return json_pack("{s:I, s:f, s:f, s:f}", "count", (json_int_t)h->n, "p50_ms",
	                 hist_quantile(h, 0.50) / 1000.0, "p99_ms", hist_quantile(h, 0.99) / 1000.0,
	                 "mean_ms", hist_mean(h) / 1000.0);
}

static void h_shadow(struct api_call *call)
{
	struct services_backend *backend = call->api->services;
	struct proxy_table *t = proxy_table_get(backend->proxy);
	struct proxy_service *svc = find(t, call->params[0]);
	struct mirror_snapshot *snap = NULL;
	struct mirror_mismatch *mm = NULL;
	size_t nmm = 0;
	uint64_t compared;
	json_t *o, *list;

	if (!svc) {
		svc_not_found(call);
		goto out;
	}
	snap = malloc(sizeof(*snap));
	mm = calloc(MIRROR_RING, sizeof(*mm));
	if (!snap || !mm) {
		api_reply_error(call, 500, "internal", NULL, "out of memory");
		goto out;
	}
	proxy_mirror_read_full(backend->proxy, svc->name, snap, mm, MIRROR_RING, &nmm);
	compared = snap->matched + snap->status_mismatch + snap->body_mismatch + snap->shadow_error;
	list = json_array();
	for (size_t i = 0; i < nmm; i++)
		json_array_append_new(
		    list,
		    json_pack("{s:I, s:s, s:s, s:s, s:i, s:o, s:f, s:o}", "time_ms",
		              (json_int_t)mm[i].time_ms, "result", mirror_result_name(mm[i].result),
		              "method", mm[i].method, "path", mm[i].path, "primary_status",
		              mm[i].primary_status, "shadow_status",
		              mm[i].shadow_status ? json_integer(mm[i].shadow_status) : json_null(),
		              "primary_ms", mm[i].primary_us / 1000.0, "shadow_ms",
		              mm[i].shadow_status ? json_real(mm[i].shadow_us / 1000.0)
		                                  : json_null()));
	o = json_pack(
	    "{s:s, s:o, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}, "
	    "s:{s:o, s:o, s:o, s:o, s:o}, s:{s:o, s:o, s:o}, s:o}",
	    "service", svc->name, "mirror", mirror_json(svc), "counts", "mirrored",
	    (json_int_t)snap->mirrored, "compared", (json_int_t)compared, "matched",
	    (json_int_t)snap->matched, "status_mismatch", (json_int_t)snap->status_mismatch,
	    "body_mismatch", (json_int_t)snap->body_mismatch, "shadow_error",
	    (json_int_t)snap->shadow_error, "dropped", (json_int_t)snap->dropped, "too_large",
	    (json_int_t)snap->too_large, "method", (json_int_t)snap->method, "rates",
	    "mismatch_rate",
	    ratio_json(snap->status_mismatch + snap->body_mismatch + snap->shadow_error, compared),
	    "status_mismatch_rate", ratio_json(snap->status_mismatch, compared),
	    "body_mismatch_rate", ratio_json(snap->body_mismatch, compared), "shadow_error_rate",
	    ratio_json(snap->shadow_error, compared), "drop_rate",
	    ratio_json(snap->dropped, snap->mirrored + snap->dropped), "latency", "primary",
	    side_json(&snap->primary), "shadow", side_json(&snap->shadow), "p99_ratio",
	    snap->primary.n && snap->shadow.n && hist_quantile(&snap->primary, 0.99)
	        ? json_real((double)hist_quantile(&snap->shadow, 0.99) /
	                    (double)hist_quantile(&snap->primary, 0.99))
	        : json_null(),
	    "mismatches", list);
	api_reply_json(call, 200, o);
out:
	free(snap);
	free(mm);
	if (t)
		snap_obj_unref(&t->obj);
}

/* An integer member in [lo, hi] into *out; 0, or -1 after replying 422 naming field. */
static int int_member(struct api_call *call, const json_t *obj, const char *key, const char *field,
                      json_int_t lo, json_int_t hi, uint32_t *out)
{
	const json_t *x = json_object_get(obj, key);

	if (!json_is_integer(x) || json_integer_value(x) < lo || json_integer_value(x) > hi) {
		api_reply_error(call, 422, "invalid", field,
		                "%s must be an integer from %lld to %lld", field, (long long)lo,
		                (long long)hi);
		return -1;
	}
	*out = (uint32_t)json_integer_value(x);
	return 0;
}

static void h_mirror_put(struct api_call *call)
{
	static const char *const keys[] = {"version", "percent"};
	struct services_backend *backend = call->api->services;
	struct proxy_table *t = proxy_table_get(backend->proxy);
	struct proxy_service *svc = find(t, call->params[0]);
	json_t *body = NULL, *jv;
	const char *version;
	uint32_t percent = 0;
	int rc, vi;

	if (!svc) {
		svc_not_found(call);
		goto out;
	}
	body = api_body_json(call);
	if (!body || api_only_keys(call, body, "", keys, 2) != 0)
		goto out;
	jv = json_object_get(body, "version");
	if (!json_is_string(jv)) {
		api_reply_error(call, 422, "invalid", "version", "version must be a string");
		goto out;
	}
	version = json_string_value(jv);
	vi = proxy_service_version(svc, version);
	if (vi < 0) {
		api_reply_error(call, 422, "invalid", "version",
		                "version \"%s\" is not defined for service %s", version, svc->name);
		goto out;
	}
	if (vi == svc->stable) {
		api_reply_error(call, 422, "invalid", "version",
		                "\"%s\" is the stable version: requests already go there", version);
		goto out;
	}
	if (body_percent(call, body, "percent", "percent", &percent) != 0)
		goto out;
	if (percent == 0) {
		api_reply_error(call, 422, "invalid", "percent",
		                "percent must be above 0 (DELETE removes the mirror)");
		goto out;
	}
	if (owned(call, svc))
		goto out;
	rc = traffic_set_mirror(backend->traffic, svc->name, version, percent, call->actor);
	if (rc) {
		reply_failed(call, rc);
		goto out;
	}
	snap_obj_unref(&t->obj);
	t = proxy_table_get(backend->proxy);
	svc = find(t, call->params[0]);
	api_reply_json(call, 200, svc ? mirror_json(svc) : json_object());
out:
	json_decref(body);
	if (t)
		snap_obj_unref(&t->obj);
}

static void h_mirror_delete(struct api_call *call)
{
	struct services_backend *backend = call->api->services;
	struct proxy_table *t = proxy_table_get(backend->proxy);
	struct proxy_service *svc = find(t, call->params[0]);
	int rc;

	if (!svc) {
		svc_not_found(call);
		goto out;
	}
	if (owned(call, svc))
		goto out;
	rc = traffic_set_mirror(backend->traffic, svc->name, NULL, 0, call->actor);
	if (rc) {
		reply_failed(call, rc);
		goto out;
	}
	snap_obj_unref(&t->obj);
	t = proxy_table_get(backend->proxy);
	svc = find(t, call->params[0]);
	api_reply_json(call, 200, svc ? mirror_json(svc) : json_object());
out:
	if (t)
		snap_obj_unref(&t->obj);
}

/* The {version} parameter as a version of svc: its index, or -1 after a 404. */
static int fault_version(struct api_call *call, const struct proxy_service *svc, char *name,
                         size_t len)
{
	int vi;

	snprintf(name, len, "%.*s", (int)call->params[1].len, call->params[1].p);
	vi = proxy_service_version(svc, name);
	if (vi < 0)
		api_reply_error(call, 404, "not_found", NULL, "service %s has no version \"%s\"",
		                svc->name, name);
	return vi;
}

/*
 * Replies 200 with version's faults as the table published by the change
 * shows them; *t (the table before it) is swapped for that table.
 */
static void reply_faults(struct api_call *call, struct proxy_table **t, const char *version)
{
	const struct proxy_service *svc;
	int vi;

	snap_obj_unref(&(*t)->obj);
	*t = proxy_table_get(call->api->services->proxy);
	svc = find(*t, call->params[0]);
	vi = svc ? proxy_service_version(svc, version) : -1;
	api_reply_json(call, 200,
	               json_pack("{s:s, s:s, s:o}", "service", svc ? svc->name : "", "version",
	                         version, "faults",
	                         vi >= 0 ? fault_json(&svc->versions[vi].fault) : json_null()));
}

static void h_faults_put(struct api_call *call)
{
	static const char *const top[] = {"delay", "abort"};
	static const char *const dkeys[] = {"ms", "percent"};
	static const char *const akeys[] = {"status", "percent"};
	struct services_backend *backend = call->api->services;
	struct proxy_table *t = proxy_table_get(backend->proxy);
	struct proxy_service *svc = find(t, call->params[0]);
	struct config_fault f = {0};
	json_t *body = NULL, *jd, *ja;
	char version[128];
	int rc;

	if (!svc) {
		svc_not_found(call);
		goto out;
	}
	if (fault_version(call, svc, version, sizeof(version)) < 0)
		goto out;
	body = api_body_json(call);
	if (!body || api_only_keys(call, body, "", top, 2) != 0)
		goto out;
	jd = json_object_get(body, "delay");
	ja = json_object_get(body, "abort");
	if (!jd && !ja) {
		api_reply_error(call, 422, "invalid", "delay",
		                "give delay {ms, percent}, abort {status, percent}, or both");
		goto out;
	}
	if (jd) {
		if (!json_is_object(jd)) {
			api_reply_error(call, 422, "invalid", "delay",
			                "delay must be an object {ms, percent}");
			goto out;
		}
		if (api_only_keys(call, jd, "delay.", dkeys, 2) != 0 ||
		    int_member(call, jd, "ms", "delay.ms", 0, 3600000, &f.delay_ms) != 0)
			goto out;
		f.has_delay = true;
		if (body_percent(call, jd, "percent", "delay.percent", &f.delay_percent) != 0)
			goto out;
	}
	if (ja) {
		if (!json_is_object(ja)) {
			api_reply_error(call, 422, "invalid", "abort",
			                "abort must be an object {status, percent}");
			goto out;
		}
		if (api_only_keys(call, ja, "abort.", akeys, 2) != 0 ||
		    int_member(call, ja, "status", "abort.status", 100, 599, &f.abort_status) != 0)
			goto out;
		f.has_abort = true;
		if (body_percent(call, ja, "percent", "abort.percent", &f.abort_percent) != 0)
			goto out;
	}
	rc = traffic_set_fault(backend->traffic, svc->name, version, &f, call->actor);
	if (rc) {
		reply_failed(call, rc);
		goto out;
	}
	reply_faults(call, &t, version);
out:
	json_decref(body);
	if (t)
		snap_obj_unref(&t->obj);
}

static void h_faults_delete(struct api_call *call)
{
	struct services_backend *backend = call->api->services;
	struct proxy_table *t = proxy_table_get(backend->proxy);
	struct proxy_service *svc = find(t, call->params[0]);
	char version[128];
	int rc;

	if (!svc) {
		svc_not_found(call);
		goto out;
	}
	if (fault_version(call, svc, version, sizeof(version)) < 0)
		goto out;
	rc = traffic_set_fault(backend->traffic, svc->name, version, NULL, call->actor);
	if (rc) {
		reply_failed(call, rc);
		goto out;
	}
	reply_faults(call, &t, version);
out:
	if (t)
		snap_obj_unref(&t->obj);
}

static const struct api_route routes[] = {
    {"GET", "/v1/services", SCOPE_READ, h_list},
    {"GET", "/v1/services/{name}", SCOPE_READ, h_get},
    {"PUT", "/v1/services/{name}/traffic", SCOPE_ROLLOUTS_WRITE, h_traffic},
    {"GET", "/v1/services/{name}/shadow", SCOPE_READ, h_shadow},
    {"PUT", "/v1/services/{name}/mirror", SCOPE_ROLLOUTS_WRITE, h_mirror_put},
    {"DELETE", "/v1/services/{name}/mirror", SCOPE_ROLLOUTS_WRITE, h_mirror_delete},
    {"PUT", "/v1/services/{name}/faults/{version}", SCOPE_ROLLOUTS_WRITE, h_faults_put},
    {"DELETE", "/v1/services/{name}/faults/{version}", SCOPE_ROLLOUTS_WRITE, h_faults_delete},
};

int api_services_init(struct api *api, struct services_backend *be)
{
	api->services = be;
	if (be->health) {
		int rc = api_add_health(api, "endpoints", endpoints_health, be);

		if (rc)
			return rc;
	}
	return api_add_routes(api, routes, sizeof(routes) / sizeof(routes[0]));
}
