/*
 * flags.h - feature flags in the admin API (SPEC 7, issue 5; docs/api.md,
 * docs/flags.md):
 *
 *   GET    /v1/feature-flags                      every flag with its rollout
 *   GET    /v1/feature-flags/{key}                one flag
 *   POST   /v1/feature-flags                      seed-compatible upsert
 *                                                 {"feature","percentage","enabled"},
 *                                                 or a full definition with "key"
 *   PUT    /v1/feature-flags/{key}                create or replace (full definition)
 *   DELETE /v1/feature-flags/{key}                delete (an API flag) or drop the
 *                                                 API's changes (a config flag)
 *   POST   /v1/feature-flags/exclude              {"feature","nodes":[...]}
 *   DELETE /v1/feature-flags/{key}/exclude/{node}
 *   GET    /v1/feature-flags/stream               Server-Sent Events
 *   POST   /ofrep/v1/evaluate/flags/{key}         OFREP single evaluation
 *   POST   /ofrep/v1/evaluate/flags               OFREP bulk evaluation (ETag / 304)
 *
 * This file is the HTTP edge only: parse, authorise (scopes, and the
 * rollout-ownership check), validate the request's shape, call the flags
 * module (flags/registry.h: the state, its snapshots and counters, every
 * change through the state layer) or the stream (flags/stream.h), reply.
 * Module errors become statuses through api_reply_err()/api_err_status().
 *
 * Everything here runs on the control thread (the admin loop).
 */
#ifndef API_FLAGS_H
#define API_FLAGS_H

#include <stddef.h>
#include <stdint.h>

#include "api/api.h"
#include "config/config.h"
#include "core/buf.h"

struct loop;
struct state;
struct flags;
struct flags_stream;
struct api_flags;

/*
 * Registers the routes and the "flags" health section on api for the
 * module fl and its stream st (both borrowed; they must outlive the
 * returned object and api's use of it).  NULL on ENOMEM or too many route
 * tables.  Free with api_flags_free (which frees neither fl nor st).
 */
struct api_flags *api_flags_register(struct api *api, struct flags *fl, struct flags_stream *st);

/*
 * The whole flag feature for a daemon or a test in one call: a state layer
 * over api->store when state is NULL (owned then), the flags module loaded
 * from cfg and the store, its stream on loop, and the routes.  Returns the
 * object (api_flags_free frees all it made), or NULL with a message in err.
 */
struct api_flags *api_flags_new(struct api *api, struct state *state, struct loop *loop,
                                const struct config *cfg, char *err, size_t errlen);

/* api_flags_new(api, NULL, loop, cfg, err, errlen): the previous entry point. */
struct api_flags *api_flags_init(struct api *api, struct loop *loop, const struct config *cfg,
                                 char *err, size_t errlen);

/* The flags module behind af (for the rollout engine's flag targets). */
struct flags *api_flags_module(struct api_flags *af);

/*
 * Appends the module's metrics (flags_write_prometheus) and the stream's:
 * canaryd_stream_subscribers and canaryd_stream_dropped_total.
 */
void api_flags_write_prometheus(struct api_flags *af, struct buf *out);

/*
 * For a config reload by main: flags_check and flags_reload of the module
 * behind af, 0 or -1 with a message in err.  (The rollout engine calls the
 * module, flags/registry.h, directly for flag targets.)
 */
int api_flags_check(struct api_flags *af, const struct config *cfg, char *err, size_t errlen);
int api_flags_reload(struct api_flags *af, const struct config *cfg, const char *actor, char *err,
                     size_t errlen);

/*
 * Frees af and what api_flags_new made.  Call after the admin listener is
 * freed (its stream connections are closed then).  NULL is a no-op.
 */
void api_flags_free(struct api_flags *af);

#endif
