#include "api/api.h"

#include "core/err.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/loop.h"
#include "rollout/engine.h"
#include "state/state.h"
#include "store/store.h"

static const struct api_route builtin_routes[];
static const size_t builtin_nroutes;

void api_response_init(struct api_response *resp)
{
	resp->status = 500;
	resp->content_type = "application/json";
	resp->etag[0] = '\0';
	resp->cache_control = NULL;
	resp->stream = NULL;
	buf_init(&resp->body, 64u << 20);
}

void api_response_release(struct api_response *resp)
{
	buf_release(&resp->body);
}

void api_init(struct api *api)
{
	memset(api, 0, sizeof(*api));
	api->start_wall_ms = clock_wall_ms();
	api_add_routes(api, builtin_routes, builtin_nroutes);
}

int api_add_health(struct api *api, const char *name, api_health_fn fn, void *ctx)
{
	if (api->nhealth == API_MAX_HEALTH)
		return -ENOSPC;
	api->health[api->nhealth++] = (struct api_health_hook){name, fn, ctx};
	return 0;
}

int api_add_routes(struct api *api, const struct api_route *routes, size_t n)
{
	if (api->ntables == sizeof(api->routes) / sizeof(api->routes[0]))
		return -ENOSPC;
	api->routes[api->ntables] = routes;
	api->nroutes[api->ntables] = n;
	api->ntables++;
	return 0;
}

void api_format_time(uint64_t wall_ms, char *out, size_t outlen)
{
	time_t secs = (time_t)(wall_ms / 1000);
	struct tm tm;

	gmtime_r(&secs, &tm);
	snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", (tm.tm_year + 1900) % 10000,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         (unsigned)(wall_ms % 1000));
}

void api_reply_json(struct api_call *call, int status, json_t *obj)
{
	char *s;

	call->resp->status = status;
	call->resp->content_type = "application/json";
	buf_reset(&call->resp->body);
	s = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(obj);
	if (!s || buf_append_str(&call->resp->body, s) || buf_append(&call->resp->body, "\n", 1)) {
		call->resp->status = 500;
		buf_reset(&call->resp->body);
		buf_append_str(
		    &call->resp->body,
		    "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}\n");
	}
	free(s);
}

int api_err_status(int err, const char **code)
{
	const char *c = "internal";
	int status = 500;

	switch (err) {
	case ERR_NOTFOUND:
		status = 404, c = "not_found";
		break;
	case ERR_STATE:
	case ERR_CONFLICT:
		status = 409, c = "conflict";
		break;
	case ERR_INVALID:
	case -EINVAL:
		status = 422, c = "invalid";
		break;
	case ERR_FORBIDDEN:
		status = 403, c = "forbidden";
		break;
	case ERR_UNAVAILABLE:
		status = 503, c = "store_unavailable";
		break;
	case ERR_STORE:
		status = 500, c = "store_error";
		break;
	}
	if (code)
		*code = c;
	return status;
}

void api_reply_err(struct api_call *call, int err, const char *field, const char *msg)
{
	const char *code;
	int status = api_err_status(err, &code);

	api_reply_error(call, status, code, field, "%s", msg && *msg ? msg : err_str(err));
}

void api_reply_error(struct api_call *call, int status, const char *code, const char *field,
                     const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	json_t *err;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	err = json_pack("{s:s, s:s}", "code", code, "message", msg);
	if (field)
		json_object_set_new(err, "field", json_string(field));
	api_reply_json(call, status, json_pack("{s:o}", "error", err));
}

json_t *api_body_json(struct api_call *call)
{
	char field[256], num[64];
	json_error_t jerr;
	json_t *obj;

	if (call->req->body.len == 0) {
		api_reply_error(call, 400, "bad_request", NULL,
		                "request body must be a JSON object");
		return NULL;
	}
	obj = json_loadb(call->req->body.p, call->req->body.len, JSON_REJECT_DUPLICATES, &jerr);
	if (!obj) {
		api_reply_error(call, 400, "bad_json", NULL,
		                "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
		                jerr.text);
		return NULL;
	}
	if (!json_is_object(obj)) {
		json_decref(obj);
		api_reply_error(call, 400, "bad_request", NULL,
		                "request body must be a JSON object");
		return NULL;
	}
	if (api_json_numbers_check(call->req->body.p, call->req->body.len, field, sizeof(field),
	                           num, sizeof(num)) != 0) {
		json_decref(obj);
		api_reply_error(call, 422, "invalid", field, "%s: the number %s is out of range",
		                field, num);
		return NULL;
	}
	return obj;
}

/* --- numbers a double cannot hold ------------------------------------------------ */

#define NUMSCAN_DEPTH 32 /* path kept this deep; deeper values are named by their prefix */

struct numscan_frame {
	bool object, want_key;
	size_t index;
	char key[96];
};

/* Skips a JSON string starting at p[i] == '"'; returns the index past its closing quote. */
static size_t skip_string(const char *p, size_t len, size_t i, char *key, size_t keylen)
{
	size_t k = 0;

	for (i++; i < len && p[i] != '"'; i++) {
		if (p[i] == '\\' && i + 1 < len)
			i++;
		if (key && k + 1 < keylen)
			key[k++] = p[i];
	}
	if (key && keylen)
		key[k] = '\0';
	return i + 1;
}

static void numscan_path(const struct numscan_frame *st, size_t depth, char *field, size_t flen)
{
	size_t o = 0;

	if (flen)
		field[0] = '\0';
	for (size_t d = 0; d < depth && d < NUMSCAN_DEPTH && o + 1 < flen; d++) {
		int n = st[d].object
		            ? snprintf(field + o, flen - o, "%s%s", o ? "." : "", st[d].key)
		            : snprintf(field + o, flen - o, "[%zu]", st[d].index);

		if (n < 0)
			break;
		o += (size_t)n;
		if (o >= flen)
			break;
	}
}

/* True when the number's text reads back as a normal double (or is exactly 0). */
static bool number_fits(const char *t)
{
	bool nonzero = false;
	double d;

	for (const char *q = t; *q && *q != 'e' && *q != 'E'; q++)
		if (*q >= '1' && *q <= '9')
			nonzero = true;
	errno = 0;
	d = strtod(t, NULL);
	if (errno == ERANGE || !isfinite(d))
		return false;
	return nonzero ? isnormal(d) : d == 0;
}

int api_json_numbers_check(const char *p, size_t len, char *field, size_t flen, char *num,
                           size_t numlen)
{
	struct numscan_frame st[NUMSCAN_DEPTH];
	size_t depth = 0, i = 0;

	while (i < len) {
		char ch = p[i];
		struct numscan_frame *top = depth && depth <= NUMSCAN_DEPTH ? &st[depth - 1] : NULL;

		if (ch == '{' || ch == '[') {
			if (depth < NUMSCAN_DEPTH)
				st[depth] = (struct numscan_frame){.object = ch == '{',
				                                   .want_key = ch == '{'};
			depth++;
			i++;
		} else if (ch == '}' || ch == ']') {
			depth -= depth > 0;
			i++;
		} else if (ch == ',') {
			if (top && top->object)
				top->want_key = true;
			else if (top)
				top->index++;
			i++;
		} else if (ch == '"') {
			bool key = top && top->object && top->want_key;

			i = skip_string(p, len, i, key ? top->key : NULL, sizeof(top->key));
			if (key)
				top->want_key = false;
		} else if (ch == '-' || (ch >= '0' && ch <= '9')) {
			char t[512];
			size_t n = 0, tl;

			/* the body carries its length: no NUL to stop at */
			while (i + n < len && memchr("+-.0123456789eE", p[i + n], 15))
				n++;
			tl = n < sizeof(t) ? n : sizeof(t) - 1;
			memcpy(t, p + i, tl);
			t[tl] = '\0';
			/* longer than t: what the cut reads is not the number (1e-000...400) */
			if (n >= sizeof(t) || !number_fits(t)) {
				numscan_path(st, depth, field, flen);
				snprintf(num, numlen, "%s", t);
				return -1;
			}
			i += n;
		} else {
			i++; /* whitespace, ':', true, false, null */
		}
	}
	return 0;
}

int api_only_keys(struct api_call *call, const json_t *obj, const char *prefix,
                  const char *const *allowed, size_t n)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)obj, key, v)
	{
		size_t i;
		char field[128];
		const char *name = key;

		for (i = 0; i < n && strcmp(key, allowed[i]) != 0; i++)
			;
		if (i < n)
			continue;
		if (prefix[0]) {
			snprintf(field, sizeof(field), "%s%s", prefix, key);
			name = field;
		}
		api_reply_error(call, 422, "invalid", name, "unknown field \"%s\"", name);
		return -1;
	}
	return 0;
}

/* Matches path against pattern; captures {x} segments.  1 on match. */
static int route_match(const char *pattern, struct str path, struct api_call *call)
{
	const char *pp = pattern;
	size_t i = 0;

	call->nparams = 0;
	while (*pp && i <= path.len) {
		if (*pp == '{') {
			size_t start = i;

			while (*pp && *pp != '}')
				pp++;
			if (*pp)
				pp++;
			while (i < path.len && path.p[i] != '/')
				i++;
			if (i == start || call->nparams == API_MAX_PARAMS)
				return 0;
			call->params[call->nparams++] = str_make(path.p + start, i - start);
			continue;
		}
		if (i == path.len || path.p[i] != *pp)
			return 0;
		pp++;
		i++;
	}
	return *pp == '\0' && i == path.len;
}

static int is_read_method(struct str m)
{
	return str_eq_c(m, "GET") || str_eq_c(m, "HEAD");
}

void api_handle(struct api *api, const struct api_request *req, struct api_response *resp)
{
	struct api_call call = {.api = api, .req = req, .resp = resp, .actor = "anonymous"};
	const struct api_route *found = NULL;
	int path_matched = 0;
	struct str method = req->method;

	if (str_eq_c(method, "HEAD"))
		method = STR_LIT("GET");
	for (size_t t = 0; t < api->ntables && !found; t++) {
		for (size_t i = 0; i < api->nroutes[t]; i++) {
			const struct api_route *r = &api->routes[t][i];

			if (!route_match(r->pattern, req->path, &call))
				continue;
			path_matched = 1;
			if (str_eq_c(method, r->method)) {
				found = r;
				break;
			}
		}
	}
	if (!found) {
		if (path_matched)
			api_reply_error(&call, 405, "method_not_allowed", NULL,
			                "method %.*s is not allowed on %.*s", (int)req->method.len,
			                req->method.p, (int)req->path.len, req->path.p);
		else
			api_reply_error(&call, 404, "not_found", NULL, "no such endpoint: %.*s",
			                (int)req->path.len, req->path.p);
		goto out;
	}
	if (found->scope) {
		const struct auth_token *who = NULL;
		int public_ok = (found->scope == SCOPE_READ && api->public_read &&
		                 is_read_method(req->method)) ||
		                (found->scope == SCOPE_EVALUATE && api->evaluate_public);
		enum auth_result ar = AUTH_OK;

		if (!public_ok || req->authorization.len) {
			ar = auth_check(api->tokens, api->ntokens, req->authorization, found->scope,
			                &who);
			if (public_ok && ar != AUTH_OK && ar != AUTH_FORBIDDEN)
				ar = AUTH_OK; /* a bad token on a public read is ignored */
		}
		switch (ar) {
		case AUTH_OK:
			break;
		case AUTH_MISSING:
			api_reply_error(&call, 401, "unauthorized", NULL,
			                "missing bearer token (Authorization: Bearer <token>)");
			goto out;
		case AUTH_INVALID:
			api_reply_error(&call, 401, "unauthorized", NULL, "invalid token");
			goto out;
		case AUTH_FORBIDDEN:
			api_reply_error(&call, 403, "forbidden", NULL,
			                "token \"%s\" lacks the scope \"%s\"", who->name,
			                auth_scope_name(found->scope));
			goto out;
		}
		if (who)
			call.actor = who->name;
	}
	found->fn(&call);
out:
	if (resp->status >= 100 && resp->status < 600)
		api->requests_by_class[resp->status / 100]++;
}

/* ---- built-in routes ---- */

static void h_health(struct api_call *call)
{
	api_reply_json(call, 200, json_pack("{s:s}", "status", "ok"));
}

/* The rollouts component: each rollout's state and step, and how many are active. */
static json_t *rollouts_health(const struct rollout_engine *e)
{
	json_t *list = rollout_engine_list_json(e), *out = json_object(), *r, *brief = json_array();
	size_t i, nactive = 0;

	json_array_foreach(list, i, r)
	{
		const char *st = json_string_value(json_object_get(r, "state"));

		nactive += st && (!strcmp(st, "progressing") || !strcmp(st, "paused"));
		json_array_append_new(brief, json_pack("{s:O*, s:O*, s:O*}", "name",
		                                       json_object_get(r, "name"), "state",
		                                       json_object_get(r, "state"), "step",
		                                       json_object_get(r, "step")));
	}
	json_object_set_new(out, "status", json_string("ok"));
	json_object_set_new(out, "active", json_integer((json_int_t)nactive));
	json_object_set_new(out, "rollouts", brief);
	json_decref(list);
	return out;
}

static void h_health_detailed(struct api_call *call)
{
	struct api *api = call->api;
	json_t *listeners = json_array(), *store, *components;
	int all_ok = 1, ver, avail;
	char started[40], serr[256] = "";

	/* One round trip; for postgres it also drives a pending reconnect. */
	ver = api->store ? store_schema_version(api->store) : -1;
	avail = api->store ? store_available(api->store) : 0;
	if (ver < 0 && api->store)
		store_errmsg(api->store, serr, sizeof(serr)); /* never holds the URL */
	store = json_pack("{s:s, s:s, s:i, s:b, s:s?}", "status",
	                  ver >= 0 ? "ok" : (avail ? "error" : "unavailable"), "backend",
	                  api->store ? store_backend_name(api->store) : "none", "schema_version",
	                  ver, "available", avail, "error", ver < 0 ? serr : NULL);
	if (ver < 0)
		all_ok = 0;
	for (size_t i = 0; i < api->nlisteners; i++) {
		const struct api_listener_info *l = &api->listeners[i];
		int up = api->listener_up_fn ? api->listener_up_fn(api->listener_up_ctx, l->name)
		                             : l->up;

		json_array_append_new(listeners,
		                      json_pack("{s:s, s:s, s:s}", "name", l->name, "listen",
		                                l->addr, "status", up ? "ok" : "down"));
		if (!up)
			all_ok = 0;
	}
	components = json_pack("{s:o, s:o}", "store", store, "listeners", listeners);
	for (size_t i = 0; i < api->nhealth; i++)
		json_object_set_new(components, api->health[i].name,
		                    api->health[i].fn(api->health[i].ctx));
	if (api->rollouts)
		json_object_set_new(components, "rollouts", rollouts_health(api->rollouts));
	api_format_time(api->start_wall_ms, started, sizeof(started));
	api_reply_json(
	    call, 200,
	    json_pack("{s:s, s:s, s:s, s:I, s:s, s:o}", "status", all_ok ? "ok" : "degraded",
	              "version", CANARYD_VERSION, "started_at", started, "config_revision",
	              (json_int_t)api->config_revision, "config",
	              api->config_path ? api->config_path : "", "components", components));
}

static long read_rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = 0, rss = 0;

	if (!f)
		return 0;
	if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
		rss = 0;
	fclose(f);
	return rss * sysconf(_SC_PAGESIZE);
}

static void h_metrics(struct api_call *call)
{
	struct api *api = call->api;
	struct buf *b = &call->resp->body;

	call->resp->status = 200;
	call->resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
	buf_reset(b);
	buf_printf(b,
	           "# HELP canaryd_build_info Build information.\n"
	           "# TYPE canaryd_build_info gauge\n"
	           "canaryd_build_info{version=\"%s\"} 1\n"
	           "# HELP canaryd_config_revision Revision of the running configuration.\n"
	           "# TYPE canaryd_config_revision gauge\n"
	           "canaryd_config_revision %llu\n"
	           "# HELP process_start_time_seconds Start time of the process since the epoch.\n"
	           "# TYPE process_start_time_seconds gauge\n"
	           "process_start_time_seconds %.3f\n"
	           "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
	           "# TYPE process_resident_memory_bytes gauge\n"
	           "process_resident_memory_bytes %ld\n"
	           "# HELP canaryd_admin_responses_total Admin API responses by status class.\n"
	           "# TYPE canaryd_admin_responses_total counter\n",
	           CANARYD_VERSION, (unsigned long long)api->config_revision,
	           (double)api->start_wall_ms / 1000.0, read_rss_bytes());
	for (int c = 1; c <= 5; c++)
		buf_printf(b, "canaryd_admin_responses_total{code=\"%dxx\"} %llu\n", c,
		           (unsigned long long)api->requests_by_class[c]);
	if (api->metrics_fn)
		api->metrics_fn(api->metrics_ctx, b);
}

static void h_events(struct api_call *call)
{
	struct str since_s = str_query_param(call->req->query, "since");
	struct str limit_s = str_query_param(call->req->query, "limit");
	unsigned long long since = 0, limit = STORE_EVENTS_LIMIT_DEFAULT;
	json_t *events = NULL;
	int rc;

	if (since_s.p && str_to_u64(since_s, &since) != 0) {
		api_reply_error(call, 400, "bad_request", "since",
		                "since must be a non-negative event id");
		return;
	}
	if (limit_s.p &&
	    (str_to_u64(limit_s, &limit) != 0 || limit == 0 || limit > STORE_EVENTS_LIMIT_MAX)) {
		api_reply_error(call, 400, "bad_request", "limit",
		                "limit must be an integer between 1 and %d",
		                STORE_EVENTS_LIMIT_MAX);
		return;
	}
	rc = store_events_list(call->api->store, (int64_t)since, (int)limit, NULL, &events);
	if (rc != 0) {
		api_reply_err(call, state_err_of_store(rc), NULL, store_strerror(rc));
		return;
	}
	api_reply_json(call, 200, json_pack("{s:o}", "events", events));
}

static void h_config_reload(struct api_call *call)
{
	struct api *api = call->api;
	char msg[4096] = "";

	if (!api->reload_fn) {
		api_reply_error(call, 501, "not_supported", NULL, "reload is not available");
		return;
	}
	if (api->reload_fn(api->reload_ctx, call->actor, msg, sizeof(msg)) != 0) {
		api_reply_error(call, 422, "invalid_config", NULL, "%s", msg);
		return;
	}
	api_reply_json(call, 200,
	               json_pack("{s:s, s:I}", "status", "reloaded", "config_revision",
	                         (json_int_t)api->config_revision));
}

static const struct api_route builtin_routes[] = {
    {"POST", "/v1/config/reload", SCOPE_ADMIN, h_config_reload},
    {"GET", "/v1/health", 0, h_health},
    {"GET", "/v1/health/detailed", SCOPE_READ, h_health_detailed},
    {"GET", "/metrics", SCOPE_READ, h_metrics},
    {"GET", "/v1/events", SCOPE_READ, h_events},
};
static const size_t builtin_nroutes = sizeof(builtin_routes) / sizeof(builtin_routes[0]);
