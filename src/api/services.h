/*
 * services.h - the service endpoints of the admin API (SPEC 7):
 *   GET /v1/services, GET /v1/services/{name}, PUT /v1/services/{name}/traffic,
 *   GET /v1/services/{name}/shadow, PUT|DELETE /v1/services/{name}/mirror,
 *   PUT|DELETE /v1/services/{name}/faults/{version}
 *
 * The daemon supplies the backend: where to read the live table and metrics,
 * and how to apply a traffic change (persist, rebuild the table, publish,
 * record the event).
 */
#ifndef API_SERVICES_H
#define API_SERVICES_H

#include <stddef.h>
#include <stdint.h>

#include "api/api.h"

struct proxy;
struct metrics_registry;
struct config_fault;

struct services_backend {
	struct proxy *proxy;
	struct metrics_registry *metrics;
	/*
	 * Sets service's canary version (NULL: none) and weight (thousandths).
	 * Returns 0, or an HTTP status (409, 422, 500) with a message in err.
	 */
	int (*set_traffic)(void *ctx, const char *service, const char *canary, uint32_t weight,
	                   const char *actor, char *err, size_t errlen);
	/*
	 * Sets service's runtime mirror (version NULL or percent 0: removes it,
	 * the config's applies).  Persisted and audited.  0 or an HTTP status.
	 */
	int (*set_mirror)(void *ctx, const char *service, const char *version, uint32_t percent,
	                  const char *actor, char *err, size_t errlen);
	/*
	 * Sets (f) or clears (f NULL) the runtime faults of service's version
	 * (they replace the config's for that version).  Persisted and audited.
	 */
	int (*set_fault)(void *ctx, const char *service, const char *version,
	                 const struct config_fault *f, const char *actor, char *err, size_t errlen);
	/* The rollout that owns service, or NULL (manual changes are then 409). */
	const char *(*owner)(void *ctx, const char *service);
	void *ctx;
};

/* Registers the routes; be must outlive api. */
int api_services_init(struct api *api, struct services_backend *be);

#endif
