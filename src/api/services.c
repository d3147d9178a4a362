#include "api/services.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/loop.h"
#include "metrics/stats.h"
#include "proxy/proxy.h"

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

static json_t *service_json(const struct services_backend *backend, const struct proxy_service *svc)
{
	struct proxy_registry *reg = proxy_registry(backend->proxy);
	json_t *versions = json_array(), *cohorts = json_object();
	uint64_t now = clock_mono_ms();
	const char *sticky_kind[] = {"none", "header", "cookie", "ip", "query"};
	const char *owner = backend->owner ? backend->owner(backend->ctx, svc->name) : NULL;
	json_t *o;

	for (uint32_t v = 0; v < svc->nversions; v++) {
		const struct proxy_version *pv = &svc->versions[v];
		json_t *eps = json_array();
		const char *role = (int)v == svc->stable   ? "stable"
		                   : (int)v == svc->canary ? "canary"
		                                           : "idle";

		for (uint32_t e = 0; e < pv->neps; e++) {
			struct proxy_endpoint *ep = proxy_registry_get(reg, pv->eps[e]);
			int ejected = atomic_load(&ep->ejected_until_ms) > now;

			json_array_append_new(
			    eps, json_pack("{s:s, s:s, s:I, s:I}", "address", ep->name, "health",
			                   ejected ? "ejected" : "ok", "requests",
			                   (json_int_t)atomic_load(&ep->requests), "failures",
			                   (json_int_t)atomic_load(&ep->failures)));
		}
		json_array_append_new(versions,
		                      json_pack("{s:s, s:s, s:b, s:o}", "name", pv->name, "role",
		                                role, "draining", pv->draining, "endpoints", eps));
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
	return o;
}

static void h_list(struct api_call *call)
{
	struct services_backend *backend = call->api->services;

	struct proxy_table *t = proxy_table_get(backend->proxy);
	json_t *arr = json_array();

	for (uint32_t i = 0; t && i < t->nservices; i++)
		json_array_append_new(arr, service_json(backend, &t->services[i]));
	if (t)
		snap_obj_unref(&t->obj);
	api_reply_json(call, 200, json_pack("{s:o}", "services", arr));
}

static struct proxy_service *find(struct proxy_table *t, struct str name)
{
	for (uint32_t i = 0; t && i < t->nservices; i++)
		if (str_eq_c(name, t->services[i].name))
			return &t->services[i];
	return NULL;
}

static void h_get(struct api_call *call)
{
	struct services_backend *backend = call->api->services;

	struct proxy_table *t = proxy_table_get(backend->proxy);
	struct proxy_service *svc = find(t, call->params[0]);

	if (!svc)
		api_reply_error(call, 404, "not_found", NULL, "no service named \"%.*s\"",
		                (int)call->params[0].len, call->params[0].p);
	else
		api_reply_json(call, 200, service_json(backend, svc));
	if (t)
		snap_obj_unref(&t->obj);
}

static void h_traffic(struct api_call *call)
{
	struct services_backend *backend = call->api->services;

	struct proxy_table *t = proxy_table_get(backend->proxy);
	struct proxy_service *svc = find(t, call->params[0]);
	json_t *body = NULL, *jc, *jw;
	const char *canary = NULL, *owner, *key;
	uint32_t weight = 0;
	char err[512];
	json_t *v;
	int rc;

	if (!svc) {
		api_reply_error(call, 404, "not_found", NULL, "no service named \"%.*s\"",
		                (int)call->params[0].len, call->params[0].p);
		goto out;
	}
	body = api_body_json(call);
	if (!body)
		goto out;
	json_object_foreach(body, key, v)
	{
		if (strcmp(key, "canary") != 0 && strcmp(key, "weight") != 0) {
			api_reply_error(call, 422, "invalid", key, "unknown field \"%s\"", key);
			goto out;
		}
	}
	jc = json_object_get(body, "canary");
	jw = json_object_get(body, "weight");
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
	if (!jw || !json_is_number(jw) ||
	    config_percent_from_double(json_number_value(jw), &weight) != 0) {
		api_reply_error(call, 422, "invalid", "weight",
		                "weight must be a number between 0 and 100 with at most 3 "
		                "decimals");
		goto out;
	}
	if (!canary && weight > 0) {
		api_reply_error(call, 422, "invalid", "canary",
		                "a canary version is needed for a weight above 0");
		goto out;
	}
	owner = backend->owner ? backend->owner(backend->ctx, svc->name) : NULL;
	if (owner) {
		api_reply_error(call, 409, "conflict", NULL,
		                "service %s is owned by rollout %s; use the rollout's controls",
		                svc->name, owner);
		goto out;
	}
	rc = backend->set_traffic(backend->ctx, svc->name, canary, weight, call->actor, err,
	                          sizeof(err));
	if (rc) {
		api_reply_error(call, rc, rc == 409 ? "conflict" : "invalid", NULL, "%s", err);
		goto out;
	}
	if (t)
		snap_obj_unref(&t->obj);
	t = proxy_table_get(backend->proxy);
	svc = find(t, call->params[0]);
	api_reply_json(call, 200, svc ? service_json(backend, svc) : json_object());
out:
	json_decref(body);
	if (t)
		snap_obj_unref(&t->obj);
}

static const struct api_route routes[] = {
    {"GET", "/v1/services", SCOPE_READ, h_list},
    {"GET", "/v1/services/{name}", SCOPE_READ, h_get},
    {"PUT", "/v1/services/{name}/traffic", SCOPE_ROLLOUTS_WRITE, h_traffic},
};

int api_services_init(struct api *api, struct services_backend *be)
{
	api->services = be;
	return api_add_routes(api, routes, sizeof(routes) / sizeof(routes[0]));
}
