/*
 * registry.h - the feature-flag state (SPEC 7, issue 5 and 13; docs/flags.md):
 * the configuration's flags overlaid by the flags written through the API,
 * the immutable snapshots readers evaluate, and the evaluation counters.
 *
 * The running state is the configuration's flags (in config order, each
 * replaced by its API version when there is one) then the API-only flags by
 * key.  API versions are store documents (kind "flag", one per key, the
 * normalised definition with "key") and win over the configuration, also
 * after a restart.
 *
 * The one state path (state/state.h): a change is validated and compiled
 * here, then state_commit() writes the document and its audit event in one
 * transaction, then this module's "flag" subscriber applies it: it derives
 * the new snapshot from the old one (the unchanged compiled flags are
 * shared by reference, only the changed one is new), publishes it and tells
 * the listener (the SSE stream).  A change committed by another node
 * arrives at the same subscriber without a prepared entry and is parsed and
 * applied the same way.
 *
 * Threads: everything here runs on the control thread, except reading a
 * published struct flags_snap and its items (flags_snap_*(), flags_item_*()),
 * which any thread may do after snapshot_acquire(flags_snapshot(fl), ...).
 *
 * Errors: 0, or ERR_INVALID (validation: details in the caller's
 * config_errors or message buffer), ERR_NOTFOUND, ERR_NOCHANGE (nothing to
 * write: the state already is as asked), ERR_UNAVAILABLE / ERR_STORE /
 * ERR_CONFLICT (state_commit: nothing was written), -ENOMEM.
 */
#ifndef FLAGS_REGISTRY_H
#define FLAGS_REGISTRY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/buf.h"
#include "core/snapshot.h"
#include "flags/flag.h"

struct state;
struct flags;
struct flags_snap;
struct flags_item;

/* ---- the module ---- */

/*
 * Loads the flag state from cfg and the store behind state (documents of
 * kind "flag"), publishes the first snapshot and subscribes to "flag"
 * changes on state (borrowed; must outlive the module).  cfg is only read.
 * Returns the module, or NULL with a message in err (a stored flag that no
 * longer validates against cfg, a store error, ENOMEM).
 */
struct flags *flags_new(struct state *state, const struct config *cfg, char *err, size_t errlen);

/* Unsubscribes and frees the module; snapshots still held stay valid.  NULL is a no-op. */
void flags_free(struct flags *fl);

/*
 * What the stream (or any other local consumer) is told after a change is
 * applied: changed() for one flag (def: its effective definition now,
 * borrowed, NULL when it is gone), reset() when every flag may differ (a
 * configuration reload).  Both run on the control thread after the new
 * snapshot is published.
 */
struct flags_listener {
	void (*changed)(void *arg, uint64_t rev, const char *key, const json_t *def);
	void (*reset)(void *arg, uint64_t rev);
};

/* Sets the one listener (ops borrowed; NULL: none). */
void flags_set_listener(struct flags *fl, const struct flags_listener *ops, void *arg);

/* The published snapshot, for readers on other threads. */
struct snapshot *flags_snapshot(struct flags *fl);

/* The control thread's reference to the published snapshot (borrowed). */
const struct flags_snap *flags_current(const struct flags *fl);

/* The revision of the last applied change (the store's revision then). */
uint64_t flags_revision(const struct flags *fl);

/*
 * The effective definition of key (normalised JSON with "key"; borrowed
 * from the current snapshot), or NULL.  *source (may be NULL) gets
 * "config" or "api".
 */
const json_t *flags_def(const struct flags *fl, const char *key, const char **source);

/* Whether key has an API version (a store document). */
int flags_has_api(const struct flags *fl, const char *key);

/*
 * Validates body (a definition without "key") as flag key under the
 * running segments; on success *def_out gets the normalised definition
 * (new reference).  ERR_INVALID with errs filled, or -ENOMEM.
 */
int flags_validate(const struct flags *fl, const char *key, const json_t *body,
                   struct config_errors *errs, json_t **def_out);

/*
 * The one write: body is the new API definition of key without "key"
 * (NULL: drop the API's version), kind the audit event kind ("flag.updated"
 * ...), extra more event details (may be NULL; merged with "before" and
 * "after").  Validates, commits document and event through the state
 * layer, and returns once the new snapshot is published and the listener
 * told.  0, ERR_NOCHANGE (no write, no event), ERR_INVALID (errs filled, or
 * msg when the flag does not compile), store errors with msg filled, or
 * -ENOMEM.  errs may be NULL (the first error then goes to msg).
 */
int flags_put(struct flags *fl, const char *key, const json_t *body, const char *actor,
              const char *kind, const json_t *extra, struct config_errors *errs, char *msg,
              size_t msglen);

/*
 * For the rollout engine (flag targets): the same path as flags_put, without
 * the API's rollout-ownership check.
 *
 * flags_save: the flag's state before a rollout, to restore it exactly:
 * {"api": DEF} (the API's version) or {"api": null} (only the
 * configuration's).  New reference; NULL when there is no such flag.
 *
 * flags_set_percent: sets the fallthrough rollout to `percent` (thousandths)
 * of the flag's first non-off variant and the rest to the off variant;
 * rules, include/exclude and enabled are kept.
 *
 * flags_restore: puts back what flags_save returned.
 *
 * Both return 0 (also when nothing changes), ERR_NOTFOUND, ERR_INVALID or a
 * store error, with a message in msg.
 */
json_t *flags_save(struct flags *fl, const char *key);
int flags_set_percent(struct flags *fl, const char *key, uint32_t percent, const char *actor,
                      char *msg, size_t msglen);
int flags_restore(struct flags *fl, const char *key, const json_t *saved, const char *actor,
                  char *msg, size_t msglen);

/*
 * Whether the state would build with cfg (a reload candidate): cfg's flags
 * and segments overlaid by the stored flags.  0, or ERR_INVALID / -ENOMEM
 * with a message in err.  Changes nothing.
 */
int flags_check(struct flags *fl, const struct config *cfg, char *err, size_t errlen);

/*
 * Switches to cfg's flags and segments (after flags_check).  When they
 * differ from the running ones the change is committed (a
 * "flags.config_changed" event by actor, bumping the revision) and the
 * listener's reset() runs.  0, or an error with a message in err (the
 * running state is kept).
 */
int flags_reload(struct flags *fl, const struct config *cfg, const char *actor, char *err,
                 size_t errlen);

/* Counts a failed evaluation by its OpenFeature error code (any thread). */
void flags_count_error(struct flags *fl, enum flag_error e);

/*
 * Appends canaryd_flag_evaluations_total{flag,variant},
 * canaryd_flag_evaluation_errors_total{code} and canaryd_flags_revision.
 */
void flags_write_prometheus(struct flags *fl, struct buf *out);

/* Number of flags in the running state. */
size_t flags_count(const struct flags *fl);

/* ---- a published snapshot (immutable; any thread) ---- */

uint64_t flags_snap_revision(const struct flags_snap *s);
size_t flags_snap_count(const struct flags_snap *s);
/* The position of key (a hash lookup), or -1. */
/* The flag named key (a hash lookup), or NULL.  Valid while s is held. */
const struct flags_item *flags_snap_get(const struct flags_snap *s, const char *key, size_t keylen);
/* The flag at position i of the effective order, or NULL past the end. */
const struct flags_item *flags_snap_at(const struct flags_snap *s, size_t i);
/* flag_json_text() of the segments array this snapshot was built with. */
const char *flags_snap_segments_text(const struct flags_snap *s);

/* One flag of a snapshot: its compiled form (for flag_eval; NULL for NULL). */
const struct flag *flags_item_flag(const struct flags_item *it);
/* Its normalised definition (borrowed) and its source ("config"/"api"). */
const json_t *flags_item_def(const struct flags_item *it);
const char *flags_item_source(const struct flags_item *it);
/* flag_json_text() of the definition, rendered once when it was built. */
const char *flags_item_text(const struct flags_item *it);
/* Counts a delivered evaluation of it (r from flag_eval on flags_item_flag(it)). */
void flags_item_count(const struct flags_item *it, const struct flag_result *r);

/* Snapshot references, for a reader that keeps one across calls (the stream). */
const struct flags_snap *flags_snap_ref(const struct flags_snap *s);
void flags_snap_unref(const struct flags_snap *s);

#endif
