/*
 * services.h - the service endpoints of the admin API (SPEC 7):
 *   GET /v1/services, GET /v1/services/{name}, PUT /v1/services/{name}/traffic,
 *   GET /v1/services/{name}/shadow, PUT|DELETE /v1/services/{name}/mirror,
 *   PUT|DELETE /v1/services/{name}/faults/{version}
 *
 * Handlers only: parse, authorise, validate, call the traffic module
 * (proxy/traffic.h), reply.  Reads come from the published routing table
 * and the metrics; the rollout owning a service comes from api->rollouts.
 * Runs on the control thread.
 */
#ifndef API_SERVICES_H
#define API_SERVICES_H

#include "api/api.h"

struct proxy;
struct metrics_registry;
struct traffic;
struct health;

/* What the handlers use (all borrowed; they must outlive api). */
struct services_backend {
	struct traffic *traffic;          /* changes */
	struct proxy *proxy;              /* the published table, mirror counters */
	struct metrics_registry *metrics; /* cohort figures; may be NULL */
	struct health *health;            /* endpoints' health checks; may be NULL */
};

/* Registers the routes; be must outlive api. */
int api_services_init(struct api *api, struct services_backend *be);

#endif
