/*
 * api/fleet.h - GET /v1/fleet (SPEC 7) and the "fleet" section of
 * /v1/health/detailed: the fleet's nodes, roles, terms and applied
 * revisions (fleet/fleet.h).  Control thread only.
 */
#ifndef API_FLEET_H
#define API_FLEET_H

struct api;
struct fleet;

/*
 * Adds the route (and, with a fleet, the health section) to api.  fleet is
 * borrowed (NULL: a single node on SQLite; the route then answers with this
 * node alone).  Returns 0 or -ENOSPC.
 */
int api_fleet_init(struct api *api, struct fleet *fleet);

#endif
