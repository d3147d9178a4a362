/*
 * rollouts.h - the rollout endpoints of the admin API (SPEC 7):
 *   GET  /v1/rollouts                         every rollout's live view
 *   GET  /v1/rollouts/{name}                  definition summary and live state
 *   POST /v1/rollouts/{name}/start|promote|pause|resume|abort|retry
 *                                             controls (scope rollouts:write);
 *                                             promote takes {"full": true}
 *   POST /v1/rollouts/{name}/approve          scope approve; the token's name
 *                                             is the approving identity
 *   POST /v1/rollback                         emergency rollback of every active rollout
 *   GET  /v1/rollouts/{name}/analysis         verdict events, newest first
 *                                             (?before=ID&since=ID&limit=N), and
 *                                             the latest verdict per check
 *   GET  /v1/rollouts/{name}/events           the rollout's events (?since=ID)
 *
 * Runs on the control thread, like the engine it drives.
 */
#ifndef API_ROLLOUTS_H
#define API_ROLLOUTS_H

#include "api/api.h"

struct rollout_engine;

/*
 * Registers the routes.  engine is borrowed and must outlive api (a config
 * reload that replaces the engine calls this again with the new one).
 * Returns 0 or -ENOSPC (api's route tables are full).
 */
int api_rollouts_init(struct api *api, struct rollout_engine *engine);

/* Points the already registered routes at another engine (config reload). */
void api_rollouts_set_engine(struct api *api, struct rollout_engine *engine);

#endif
