/*
 * notify.h - a rollout's notifications (SPEC 6 "notify"): engine events
 * turned into Slack-compatible webhook posts to the targets the rollout's
 * configuration lists for that event.
 *
 * Delivery is fire-and-check: notify_event() submits the post to the job
 * runner (core/jobs.h) and returns; notify_poll() (each engine tick)
 * collects the results, and a post that failed is logged and audited as a
 * "notify.failed" event (through the state layer) with the URL redacted.
 * At most NOTIFY_MAX_PENDING posts are watched; past that they are sent
 * but not checked.
 *
 * Threading: control thread only.
 */
#ifndef ROLLOUT_NOTIFY_H
#define ROLLOUT_NOTIFY_H

#include <jansson.h>
#include <stddef.h>

struct config;
struct jobs;
struct state;

#define NOTIFY_MAX_PENDING 256

struct notify;

/*
 * A notifier sending through jobs and auditing failures through st (both
 * borrowed; they must outlive it; st may be NULL: failures are only
 * logged).  NULL when out of memory.
 */
struct notify *notify_new(struct jobs *jobs, struct state *st);

/* Frees n; posts in flight are detached from the job runner.  NULL is a no-op. */
void notify_free(struct notify *n);

/* The configuration whose rollouts' notify targets apply (borrowed; set again on reload). */
void notify_set_config(struct notify *n, const struct config *cfg);

/*
 * An engine event (kind such as "rollout.step", rollout's name, details as
 * the event records them; borrowed): posted to each of the rollout's
 * targets that subscribed to its event class.  Nothing when none did.
 */
void notify_event(struct notify *n, const char *kind, const char *rollout, const json_t *details);

/* Collects finished posts; logs and audits the failed ones. */
void notify_poll(struct notify *n);

/* The CONFIG_EVENT_* bits an engine event kind belongs to; 0 for none. */
unsigned notify_event_of(const char *kind, const json_t *details);

/* The one line for humans (Slack's "text") of an engine event, into out[len]. */
void notify_text(const char *kind, const char *rollout, const json_t *details, char *out,
                 size_t len);

#endif
