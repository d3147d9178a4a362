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
 * The flag state is the configuration's flags overlaid by the flags written
 * through the API, which are persisted as store documents (kind "flag", one
 * per key, the full definition) and win over the configuration, also after a
 * restart.  Its revision is the store's global revision at the last change.
 * Every change is validated, persisted together with its audit event in one
 * store transaction, then compiled into an immutable flagset published
 * through a snapshot (core/snapshot.h), then pushed to stream subscribers,
 * and only then acknowledged.
 *
 * Everything here runs on the control thread (the admin loop), except
 * reading a published struct api_flags_snap, which any thread may do.
 */
#ifndef API_FLAGS_H
#define API_FLAGS_H

#include <stddef.h>
#include <stdint.h>

#include "api/api.h"
#include "config/config.h"
#include "core/buf.h"
#include "core/snapshot.h"
#include "flags/flag.h"

struct loop;
struct api_flags;

/*
 * One published flag state.  Immutable once published; take it with
 * snapshot_acquire(api_flags_snapshot(fl), &held) and read set (flagset_find,
 * flag_eval) without locks.
 */
struct api_flags_snap {
	struct snap_obj obj;
	struct flagset *set;
	uint64_t revision; /* the store revision of the last flag change */
	/* private: the definitions (JSON, with "key"), per-flag source, counters */
	json_t *defs;
	json_t *segments;
	const char **source; /* "config" or "api" per flag */
	uint32_t *slot_base; /* per flag: first counter slot of its variants */
	uint32_t *slots;
	char *ruleset_text; /* the stream's ruleset event, rendered on first use */
};

/*
 * Loads the flag state from cfg and the store (api->store, which must be
 * set), publishes the first flagset and registers the routes on api.  loop
 * is the admin's loop (stream heartbeats: every $CANARYD_SSE_HEARTBEAT_MS,
 * default 15000).  The configuration is only read: nothing keeps pointers
 * into it.  Returns the module (free with api_flags_free), or NULL with a
 * message in err (a stored flag that no longer validates against cfg, e.g.
 * it names a segment cfg does not define; a store error; ENOMEM).
 */
struct api_flags *api_flags_init(struct api *api, struct loop *loop, const struct config *cfg,
                                 char *err, size_t errlen);

/*
 * Whether the flag state would build with cfg (a reload candidate): the
 * config's flags and segments, overlaid by the stored flags.  0, or -1 with
 * a message in err.  Changes nothing.
 */
int api_flags_check(struct api_flags *fl, const struct config *cfg, char *err, size_t errlen);

/*
 * Switches to cfg's flags and segments (after a successful reload; call
 * api_flags_check first).  When they differ from the running ones, the change
 * is recorded (a "flags.config_changed" event by actor, bumping the
 * revision) and every stream subscriber gets a new full ruleset.  0, or -1
 * with a message in err (the running state is kept).
 */
int api_flags_reload(struct api_flags *fl, const struct config *cfg, const char *actor, char *err,
                     size_t errlen);

/* The published state, for readers on other threads. */
struct snapshot *api_flags_snapshot(struct api_flags *fl);

/*
 * Appends canaryd_flag_evaluations_total{flag,variant},
 * canaryd_flag_evaluation_errors_total{code}, canaryd_flags_revision,
 * canaryd_stream_subscribers and canaryd_stream_dropped_total.
 */
void api_flags_write_prometheus(struct api_flags *fl, struct buf *out);

/*
 * The flags component of GET /v1/health/detailed: status, flag count,
 * revision, stream subscribers and dropped subscribers.  New reference.
 */
json_t *api_flags_health(struct api_flags *fl);

/*
 * For the rollout engine (flag targets).  These change flags directly, on
 * the control thread, with the same persistence, audit event and stream
 * change as the API, but without the API's rollout-ownership check.
 *
 * api_flags_save: the flag's state before a rollout, to restore it exactly:
 * {"api": DEF} (the API's version of the flag) or {"api": null} (only the
 * configuration file's).  New reference; NULL when there is no such flag.
 *
 * api_flags_set_percent: sets the fallthrough rollout to `percent`
 * (thousandths) of the flag's first non-off variant and the rest to the off
 * variant, as POST /v1/feature-flags {"feature","percentage"} does; rules,
 * include/exclude and enabled are kept.
 *
 * api_flags_restore: puts back what api_flags_save returned.
 *
 * Both return 0 (also when nothing changes) or -1 with a message in err.
 */
json_t *api_flags_save(struct api_flags *fl, const char *key);
int api_flags_set_percent(struct api_flags *fl, const char *key, uint32_t percent,
                          const char *actor, char *err, size_t errlen);
int api_flags_restore(struct api_flags *fl, const char *key, const json_t *saved, const char *actor,
                      char *err, size_t errlen);

/*
 * Frees the module.  Call after the admin listener is freed (its stream
 * connections are closed then); a subscriber still open is detached.  NULL
 * is a no-op.
 */
void api_flags_free(struct api_flags *fl);

#endif
