/*
 * api/ui.c - serves the embedded dashboard and GET /v1/whoami.  See ui.h.
 */
#include "api/ui.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "api/auth.h"
#include "core/buf.h"
#include "core/str.h"
#include "rollout/engine.h"
#include "store/store.h"

const struct ui_asset *ui_asset_find(const char *path, size_t len)
{
	for (size_t i = 0; i < ui_nassets; i++)
		if (strlen(ui_assets[i].path) == len && memcmp(ui_assets[i].path, path, len) == 0)
			return &ui_assets[i];
	return NULL;
}

/* If-None-Match holds etag (a list, or "*"). */
static int etag_matches(struct str inm, const char *etag)
{
	size_t n = strlen(etag);

	if (str_eq_c(str_trim(inm), "*"))
		return 1;
	for (size_t i = 0; i + n <= inm.len; i++)
		if (memcmp(inm.p + i, etag, n) == 0)
			return 1;
	return 0;
}

static void serve(struct api_call *call, const char *path, size_t len)
{
	const struct ui_asset *a = ui_asset_find(path, len);
	struct api_response *resp = call->resp;

	if (!a) {
		api_reply_error(call, 404, "not_found", NULL, "no such dashboard file: %.*s",
		                (int)call->req->path.len, call->req->path.p);
		return;
	}
	snprintf(resp->etag, sizeof(resp->etag), "%s", a->etag);
	resp->cache_control = "no-cache";
	resp->content_type = a->content_type;
	if (call->req->if_none_match.len && etag_matches(call->req->if_none_match, a->etag)) {
		resp->status = 304;
		return;
	}
	if (buf_append(&resp->body, a->data, a->len) != 0) {
		api_reply_err(call, -ENOMEM, NULL, NULL);
		return;
	}
	resp->status = 200;
}

static void h_index(struct api_call *call)
{
	serve(call, "index.html", strlen("index.html"));
}

static void h_asset(struct api_call *call)
{
	char path[160];
	struct str f = call->params[0];
	int n = snprintf(path, sizeof(path), "assets/%.*s", (int)f.len, f.p);

	if (n < 0 || (size_t)n >= sizeof(path)) {
		api_reply_error(call, 404, "not_found", NULL, "no such dashboard file");
		return;
	}
	serve(call, path, (size_t)n);
}

static void h_whoami(struct api_call *call)
{
	const struct auth_token *who = NULL;
	enum auth_result ar =
	    auth_check(call->api->tokens, call->api->ntokens, call->req->authorization, 0, &who);
	json_t *scopes;

	if (ar != AUTH_OK || !who) {
		api_reply_error(call, 401, "unauthorized", NULL,
		                ar == AUTH_MISSING
		                    ? "missing bearer token (Authorization: Bearer <token>)"
		                    : "invalid token");
		return;
	}
	scopes = json_array();
	for (unsigned bit = 1; bit <= SCOPE_ADMIN; bit <<= 1)
		if (who->scopes & bit)
			json_array_append_new(scopes, json_string(auth_scope_name(bit)));
	api_reply_json(call, 200, json_pack("{s:s, s:o}", "name", who->name, "scopes", scopes));
}

int api_ui_init(struct api *api)
{
	static const struct api_route routes[] = {
	    {"GET", "/ui", 0, h_index},
	    {"GET", "/ui/", 0, h_index},
	    {"GET", "/ui/assets/{file}", 0, h_asset},
	    {"GET", "/v1/whoami", 0, h_whoami},
	};

	return api_add_routes(api, routes, sizeof(routes) / sizeof(routes[0]));
}

/* 1 when the live view r waits for reason. */
static int waiting(const json_t *r, const char *reason)
{
	const char *state = json_string_value(json_object_get(r, "state"));
	const json_t *step = json_object_get(r, "step");
	const json_t *appr = json_object_get(step, "approvals");

	if (!state)
		return 0;
	if (strcmp(reason, "review") == 0)
		return strcmp(state, "paused") == 0 &&
		       json_is_integer(json_object_get(r, "review_deadline"));
	if (strcmp(state, "progressing") != 0)
		return 0;
	if (strcmp(reason, "approval") == 0)
		return appr && json_array_size(json_object_get(appr, "approved")) <
		                   json_array_size(json_object_get(appr, "required"));
	return json_is_string(json_object_get(step, "waiting_for"));
}

void api_ui_write_metrics(struct api *api, struct buf *out)
{
	static const char *const reasons[] = {"approval", "review", "evidence"};
	json_t *list = api->rollouts ? rollout_engine_list_json(api->rollouts) : NULL, *r;
	size_t i;

	buf_printf(out,
	           "# HELP canaryd_store_up 1 while the store answers, 0 while it is away.\n"
	           "# TYPE canaryd_store_up gauge\n"
	           "canaryd_store_up %d\n"
	           "# HELP canaryd_rollout_waiting 1 while the current step waits for the reason.\n"
	           "# TYPE canaryd_rollout_waiting gauge\n",
	           api->store && store_available(api->store) ? 1 : 0);
	json_array_foreach(list, i, r)
	{
		const char *name = json_string_value(json_object_get(r, "name"));

		for (size_t k = 0; name && k < sizeof(reasons) / sizeof(reasons[0]); k++)
			buf_printf(out,
			           "canaryd_rollout_waiting{rollout=\"%s\",reason=\"%s\"} %d\n",
			           name, reasons[k], waiting(r, reasons[k]));
	}
	json_decref(list);
}
