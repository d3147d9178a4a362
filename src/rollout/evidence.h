/*
 * evidence.h - the evidence bundle of a rollout (SPEC 6): everything needed
 * to explain what happened, in one JSON document and as a directory.
 *
 * The bundle is built from what the store already holds - the rollout's
 * events (subject "rollout/NAME", including "verdict" and
 * "rollout.interval" events and the summaries retention writes in place of
 * old ones) - plus the config text and the live view, so it can be rebuilt
 * at any time, also after a restart.  Its size is bounded whatever the
 * number of events.
 *
 * Bundle JSON:
 *   {"rollout": NAME, "generated_ms": T, "state": ..., "live": {...},
 *    "counts": {...}, "events": [...], "verdicts": [...], "series": [...],
 *    "files": {"summary.md": "...", "config.yaml": "...", "events.json": "...",
 *              "verdicts.json": "...", "series.json": "...",
 *              "error_rate.svg": "...", "latency_p99.svg": "..."}}
 * "files" holds the directory form: file name -> content.
 */
#ifndef ROLLOUT_EVIDENCE_H
#define ROLLOUT_EVIDENCE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct store;

/*
 * Builds the bundle of rollout `name` from the store, streaming the events
 * of subject "rollout/NAME" (store_events_each; never all of them in
 * memory): the audit events whole, the "rollout.interval" and "verdict"
 * events (and their retention summaries) downsampled to a bounded number
 * (docs/evidence.md "Bounded size"), the failing streak before each of the
 * last rollbacks at full resolution.  live: the engine's live view
 * (borrowed, may be NULL); config_text: the YAML as loaded (may be NULL).
 * Only the latest run (the last "rollout.started" or "rollout.retry"
 * onwards) goes into the summary and charts.  Control thread (the store's).
 * On success *out is a new object the caller owns and 0 is returned; else
 * *out is NULL and the return is -EINVAL (name too long), -ENOMEM or a
 * store error.
 */
int evidence_build_store(const char *name, struct store *st, const json_t *live,
                         const char *config_text, int64_t now_ms, json_t **out);

/*
 * The same from a list: events is every event of subject "rollout/NAME" in
 * order, in store_events_list()'s shape (borrowed; copied, not kept), read
 * with the same bounds.  For tests and tools.  Returns a new object, or
 * NULL when out of memory.
 */
json_t *evidence_build(const char *name, const json_t *events, const json_t *live,
                       const char *config_text, int64_t now_ms);

/*
 * Writes bundle["files"] into dir (created with mode 0700 if missing, its
 * parent must exist; an existing dir loses its group and other permission
 * bits): each file written with mode 0600 to a temporary name, fsynced and
 * renamed, so a reader never sees half a file.  File names with '/' or
 * starting with '.' are refused.  Returns 0, or -1 with a message in err.
 */
int evidence_write_dir(const json_t *bundle, const char *dir, char *err, size_t errlen);

#endif
