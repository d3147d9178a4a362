/*
 * api/fleet.c - GET /v1/fleet and the fleet health section.  See fleet.h.
 */
#include "api/fleet.h"

#include <jansson.h>

#include "api/api.h"
#include "api/auth.h"
#include "fleet/fleet.h"

static void get_fleet(struct api_call *call)
{
	struct fleet *f = call->api->fleet;
	json_t *o;
	int err = 0;

	if (!f) {
		api_reply_json(call, 200,
		               json_pack("{s:s, s:b, s:I, s:[]}", "mode", "single", "leader", 1,
		                         "term", (json_int_t)0, "nodes"));
		return;
	}
	o = fleet_nodes_json(f, &err);
	if (!o) {
		api_reply_err(call, err, NULL, "the fleet registry cannot be read");
		return;
	}
	json_object_set_new(o, "mode", json_string("fleet"));
	api_reply_json(call, 200, o);
}

static json_t *health(void *ctx)
{
	return fleet_health_json(ctx);
}

int api_fleet_init(struct api *api, struct fleet *fleet)
{
	static const struct api_route routes[] = {
	    {"GET", "/v1/fleet", SCOPE_READ, get_fleet},
	};
	int rc;

	api->fleet = fleet;
	rc = api_add_routes(api, routes, sizeof(routes) / sizeof(routes[0]));
	if (rc == 0 && fleet)
		rc = api_add_health(api, "fleet", health, fleet);
	return rc;
}
