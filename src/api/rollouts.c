/*
 * rollouts.c - the rollout endpoints (see rollouts.h).  Thin: parse, call
 * the engine (call->api->rollouts), map its ERR_* code to the SPEC 7 error
 * body with api_reply_err().
 */
#include "api/rollouts.h"

#include <stdio.h>
#include <string.h>

#include "rollout/engine.h"
#include "state/state.h"
#include "store/store.h"

static void name_of(const struct api_call *call, char *buf, size_t len)
{
	snprintf(buf, len, "%.*s", (int)call->params[0].len, call->params[0].p);
}

static void h_list(struct api_call *call)
{
	api_reply_json(
	    call, 200,
	    json_pack("{s:o}", "rollouts", rollout_engine_list_json(call->api->rollouts)));
}

static void h_get(struct api_call *call)
{
	char name[STORE_NAME_MAX + 1];
	json_t *o;

	name_of(call, name, sizeof(name));
	o = rollout_engine_json(call->api->rollouts, name);
	if (!o) {
		api_reply_error(call, 404, "not_found", NULL, "no rollout named \"%s\"", name);
		return;
	}
	api_reply_json(call, 200, o);
}

static void h_evidence(struct api_call *call)
{
	char name[STORE_NAME_MAX + 1];
	json_t *o;

	name_of(call, name, sizeof(name));
	if (rollout_engine_state(call->api->rollouts, name) < 0) {
		api_reply_error(call, 404, "not_found", NULL, "no rollout named \"%s\"", name);
		return;
	}
	o = rollout_engine_evidence(call->api->rollouts, name,
	                            rollout_engine_now(call->api->rollouts));
	if (!o) {
		api_reply_error(call, 500, "internal", NULL,
		                "the evidence of %s could not be read from the store", name);
		return;
	}
	api_reply_json(call, 200, o);
}

/*
 * GET /v1/rollouts/{name}/validation (validate, issue 16): the windows with
 * their state, times, per-check summary and report; ?format=md answers the
 * reports' Markdown (text/markdown), ?window=NAME only that window's.
 */
static void h_validation(struct api_call *call)
{
	char name[STORE_NAME_MAX + 1], win[STORE_NAME_MAX + 1] = "";
	struct str fmt = str_query_param(call->req->query, "format");
	struct str w = str_query_param(call->req->query, "window");
	bool md = fmt.len == 2 && memcmp(fmt.p, "md", 2) == 0, found = false;
	json_t *o, *wins, *x;
	size_t i;

	name_of(call, name, sizeof(name));
	if (fmt.len && !md && !(fmt.len == 4 && memcmp(fmt.p, "json", 4) == 0)) {
		api_reply_error(call, 400, "invalid", "format", "format must be json or md");
		return;
	}
	if (w.len)
		snprintf(win, sizeof(win), "%.*s", (int)w.len, w.p);
	o = rollout_engine_validation(call->api->rollouts, name);
	if (!o) {
		api_reply_error(call, 404, "not_found", NULL, "no rollout named \"%s\"", name);
		return;
	}
	wins = json_object_get(o, "windows");
	if (*win) {
		json_array_foreach(wins, i, x)
		{
			if (strcmp(json_string_value(json_object_get(x, "name")), win) == 0)
				found = true;
		}
		if (!found) {
			json_decref(o);
			api_reply_error(call, 404, "not_found", "window",
			                "rollout %s has no validation window \"%s\"", name, win);
			return;
		}
	}
	if (!md) {
		api_reply_json(call, 200, o);
		return;
	}
	call->resp->status = 200;
	call->resp->content_type = "text/markdown; charset=utf-8";
	buf_reset(&call->resp->body);
	json_array_foreach(wins, i, x)
	{
		const char *text = json_string_value(json_object_get(x, "report_md"));

		if (*win && strcmp(json_string_value(json_object_get(x, "name")), win) != 0)
			continue;
		if (text)
			buf_printf(&call->resp->body, "%s\n", text);
		else
			buf_printf(&call->resp->body,
			           "# Validation window `%s` of rollout `%s`: %s\n\n",
			           json_string_value(json_object_get(x, "name")), name,
			           json_string_value(json_object_get(x, "state")));
	}
	json_decref(o);
}

static void control(struct api_call *call, enum rollout_control c)
{
	char name[STORE_NAME_MAX + 1], msg[512];
	json_t *body = NULL, *full, *rh;
	double rehearse = 0;
	int rc;

	name_of(call, name, sizeof(name));
	if (call->req->body.len) {
		static const char *const keys[] = {"full"}; /* promote only */
		static const char *const start_keys[] = {"rehearse"};

		body = api_body_json(call);
		if (!body)
			return;
		if (c == ROLLOUT_START
		        ? api_only_keys(call, body, "", start_keys, 1) != 0
		        : api_only_keys(call, body, "", keys, c == ROLLOUT_PROMOTE ? 1 : 0) != 0)
			goto out;
		/* start {"rehearse": SPEED}: a positive number, never a string */
		rh = json_object_get(body, "rehearse");
		if (rh && (!json_is_number(rh) || !(json_number_value(rh) > 0) ||
		           json_number_value(rh) > ROLLOUT_REHEARSE_MAX)) {
			api_reply_error(call, 422, "invalid", "rehearse",
			                "rehearse must be a positive number (the speed: every "
			                "duration of the plan is divided by it) up to %g",
			                (double)ROLLOUT_REHEARSE_MAX);
			goto out;
		}
		if (rh)
			rehearse = json_number_value(rh);
		full = json_object_get(body, "full");
		if (full && !json_is_boolean(full)) {
			api_reply_error(call, 422, "invalid", "full", "full must be a boolean");
			goto out;
		}
		if (json_is_true(full))
			c = ROLLOUT_PROMOTE_FULL;
	}
	if (c == ROLLOUT_START)
		rc =
		    rollout_engine_start(call->api->rollouts, name, rehearse, call->actor,
		                         rollout_engine_now(call->api->rollouts), msg, sizeof(msg));
	else
		rc = rollout_engine_control(call->api->rollouts, name, c, call->actor,
		                            rollout_engine_now(call->api->rollouts), msg,
		                            sizeof(msg));
	if (rc) {
		api_reply_err(call, rc, NULL, msg);
		goto out;
	}
	api_reply_json(call, 200,
	               json_pack("{s:s, s:o}", "message", msg, "rollout",
	                         rollout_engine_json(call->api->rollouts, name)));
out:
	json_decref(body);
}

static void h_start(struct api_call *call)
{
	control(call, ROLLOUT_START);
}

static void h_promote(struct api_call *call)
{
	control(call, ROLLOUT_PROMOTE);
}

static void h_pause(struct api_call *call)
{
	control(call, ROLLOUT_PAUSE);
}

static void h_resume(struct api_call *call)
{
	control(call, ROLLOUT_RESUME);
}

static void h_abort(struct api_call *call)
{
	control(call, ROLLOUT_ABORT);
}

static void h_retry(struct api_call *call)
{
	control(call, ROLLOUT_RETRY);
}

static void h_approve(struct api_call *call)
{
	control(call, ROLLOUT_APPROVE);
}

static void h_rollback_all(struct api_call *call)
{
	int n = rollout_engine_rollback_all(call->api->rollouts, call->actor,
	                                    rollout_engine_now(call->api->rollouts));

	api_reply_json(call, 200,
	               json_pack("{s:i, s:o}", "rolled_back", n, "rollouts",
	                         rollout_engine_list_json(call->api->rollouts)));
}

/* The rollout's events with id > ?since, only kind `only` when not NULL. */
static void events(struct api_call *call, const char *only)
{
	struct str since_s = str_query_param(call->req->query, "since");
	unsigned long long since = 0;
	char name[STORE_NAME_MAX + 1], subject[STORE_NAME_MAX + 16];
	json_t *arr = NULL, *out, *x, *view;
	size_t i;
	int rc;

	name_of(call, name, sizeof(name));
	view = rollout_engine_json(call->api->rollouts, name);
	if (!view) {
		api_reply_error(call, 404, "not_found", NULL, "no rollout named \"%s\"", name);
		return;
	}
	if (since_s.p && str_to_u64(since_s, &since) != 0) {
		api_reply_error(call, 400, "bad_request", "since",
		                "since must be a non-negative event id");
		json_decref(view);
		return;
	}
	snprintf(subject, sizeof(subject), "rollout/%s", name);
	rc = store_events_list(rollout_engine_store(call->api->rollouts), (int64_t)since,
	                       STORE_EVENTS_LIMIT_MAX, subject, &arr);
	if (rc) {
		api_reply_err(call, state_err_of_store(rc), NULL, store_strerror(rc));
		json_decref(view);
		return;
	}
	out = json_array();
	json_array_foreach(arr, i, x)
	{
		if (!only || strcmp(json_string_value(json_object_get(x, "kind")), only) == 0)
			json_array_append(out, x);
	}
	x = json_array_size(arr)
	        ? json_object_get(json_array_get(arr, json_array_size(arr) - 1), "id")
	        : NULL;
	if (only)
		api_reply_json(call, 200,
		               json_pack("{s:s, s:O, s:o, s:I}", "rollout", name, "checks",
		                         json_object_get(view, "checks"), "verdicts", out, "next",
		                         x ? json_integer_value(x) : (json_int_t)since));
	else
		api_reply_json(call, 200,
		               json_pack("{s:s, s:o, s:I}", "rollout", name, "events", out, "next",
		                         x ? json_integer_value(x) : (json_int_t)since));
	json_decref(arr);
	json_decref(view);
}

/* A query parameter as an id/count; 0 when absent; -1 (after a 400) when malformed. */
static int query_u64(struct api_call *call, const char *name, unsigned long long max,
                     unsigned long long *out)
{
	struct str s = str_query_param(call->req->query, name);

	if (!s.p)
		return 0;
	if (str_to_u64(s, out) != 0 || *out > max || (max != INT64_MAX && *out == 0)) {
		if (max == INT64_MAX)
			api_reply_error(call, 400, "bad_request", name,
			                "%s must be a non-negative event id", name);
		else
			api_reply_error(call, 400, "bad_request", name,
			                "%s must be an integer between 1 and %llu", name, max);
		return -1;
	}
	return 0;
}

/*
 * The rollout's verdicts, newest first: at most ?limit (default 100, up to
 * 1000), older than ?before and newer than ?since when given.  "before"
 * in the answer pages back (null when there is nothing older), "next" is
 * the newest id seen (poll with ?since=next).  Old verdicts that retention
 * compacted are in the evidence bundle, not here.
 */
static void h_analysis(struct api_call *call)
{
	unsigned long long since = 0, before = 0, limit = STORE_EVENTS_LIMIT_DEFAULT;
	char name[STORE_NAME_MAX + 1], subject[STORE_NAME_MAX + 16];
	struct store_events_query q = {.kind = "verdict", .descending = 1};
	json_t *arr = NULL, *view, *first, *last;
	int rc;

	name_of(call, name, sizeof(name));
	view = rollout_engine_json(call->api->rollouts, name);
	if (!view) {
		api_reply_error(call, 404, "not_found", NULL, "no rollout named \"%s\"", name);
		return;
	}
	if (query_u64(call, "since", INT64_MAX, &since) ||
	    query_u64(call, "before", INT64_MAX, &before) ||
	    query_u64(call, "limit", STORE_EVENTS_LIMIT_MAX, &limit))
		goto out;
	snprintf(subject, sizeof(subject), "rollout/%s", name);
	q.since_id = (int64_t)since;
	q.before_id = (int64_t)before;
	q.limit = (int)limit;
	q.subject = subject;
	rc = store_events_query(rollout_engine_store(call->api->rollouts), &q, &arr);
	if (rc) {
		api_reply_err(call, state_err_of_store(rc), NULL, store_strerror(rc));
		goto out;
	}
	first = json_object_get(json_array_get(arr, 0), "id");
	last = json_object_get(json_array_get(arr, json_array_size(arr) - 1), "id");
	api_reply_json(
	    call, 200,
	    json_pack(
	        "{s:s, s:O, s:o, s:I, s:o}", "rollout", name, "checks",
	        json_object_get(view, "checks"), "verdicts", arr, "next",
	        first && (json_int_t)since < json_integer_value(first) ? json_integer_value(first)
	                                                               : (json_int_t)since,
	        "before", last && json_array_size(arr) == limit ? json_incref(last) : json_null()));
out:
	json_decref(view);
}

static void h_events(struct api_call *call)
{
	events(call, NULL);
}

static const struct api_route routes[] = {
    {"GET", "/v1/rollouts", SCOPE_READ, h_list},
    {"GET", "/v1/rollouts/{name}", SCOPE_READ, h_get},
    {"GET", "/v1/rollouts/{name}/analysis", SCOPE_READ, h_analysis},
    {"GET", "/v1/rollouts/{name}/events", SCOPE_READ, h_events},
    {"GET", "/v1/rollouts/{name}/evidence", SCOPE_READ, h_evidence},
    {"GET", "/v1/rollouts/{name}/validation", SCOPE_READ, h_validation}, /* validate */
    {"POST", "/v1/rollouts/{name}/start", SCOPE_ROLLOUTS_WRITE, h_start},
    {"POST", "/v1/rollouts/{name}/promote", SCOPE_ROLLOUTS_WRITE, h_promote},
    {"POST", "/v1/rollouts/{name}/pause", SCOPE_ROLLOUTS_WRITE, h_pause},
    {"POST", "/v1/rollouts/{name}/resume", SCOPE_ROLLOUTS_WRITE, h_resume},
    {"POST", "/v1/rollouts/{name}/abort", SCOPE_ROLLOUTS_WRITE, h_abort},
    {"POST", "/v1/rollouts/{name}/retry", SCOPE_ROLLOUTS_WRITE, h_retry},
    {"POST", "/v1/rollouts/{name}/approve", SCOPE_APPROVE, h_approve},
    {"POST", "/v1/rollback", SCOPE_ROLLOUTS_WRITE, h_rollback_all},
};

int api_rollouts_init(struct api *api, struct rollout_engine *e)
{
	api->rollouts = e;
	return api_add_routes(api, routes, sizeof(routes) / sizeof(routes[0]));
}

void api_rollouts_set_engine(struct api *api, struct rollout_engine *e)
{
	api->rollouts = e;
}
