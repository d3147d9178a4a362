/*
 * fleet.h - fleet mode (SPEC 9, docs/fleet.md): several canaryd nodes on one
 * PostgreSQL database.  Every node serves traffic and flags; one leader
 * (a session advisory lock plus a lease row with a rising term) runs the
 * rollout engine.  Changes committed by any node reach every other node
 * through a changes feed (a `changes` table filled by a trigger in the same
 * transaction as every document write) announced by NOTIFY `rev,term`, and
 * are applied through state_apply(), the same path as local changes.
 *
 * The module owns two libpq connections of its own, never the store's:
 *   - the lock connection: the advisory lock, the lease row (acquire, renew,
 *     take over a lapsed holder), the node registry;
 *   - the listen connection: LISTEN canaryd (its socket is registered in
 *     the control loop), NOTIFY after a local commit (PQsendQuery, not
 *     waited for), and the reads of the changes feed.
 * A slow poll (FLEET_POLL_MS) catches missed notifications; after either
 * connection is lost the node reconnects with backoff and catches up from
 * its last applied revision.  When the feed was pruned past that revision
 * (fleet_feed.pruned_upto), the node resyncs from the documents instead:
 * every newer document applied, every document it holds that is gone
 * applied as a delete, then the feed goes on.
 *
 * Fencing: fleet_new() sets the state layer's fence.  Inside every
 * transaction that writes a "rollout" document or a rollout.* / verdict
 * event (a trigger marks it as a decision), the fence compares the lease
 * row's term (read FOR SHARE) with this node's term and refuses the commit
 * (ERR_CONFLICT) when they differ: a node that lost leadership cannot
 * commit a stale decision, and rollout controls answer 409 on followers.
 *
 * Threading: control thread only.  Queries on the module's connections
 * are short and bounded by statement_timeout (the lease); nothing waits
 * for the network longer than the store itself does.
 *
 * Errors: 0 or a negative ERR_* (core/err.h) / errno.
 */
#ifndef FLEET_FLEET_H
#define FLEET_FLEET_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct buf;
struct loop;
struct state;

#define FLEET_LEASE_DEFAULT_MS 3000
#define FLEET_POLL_MS          5000 /* the feed is read at least this often */
#define FLEET_NODE_MS          1000 /* the node registry row is refreshed this often */
#define FLEET_TRY_MS           250  /* a follower tries the lock this often */
#define FLEET_ID_MAX           200

struct fleet_config {
	const char *url;     /* the store's postgres:// URL (the same database) */
	const char *node_id; /* unique per node, at most FLEET_ID_MAX bytes */
	const char *address; /* the node's admin address, shown in /v1/fleet */
	int64_t lease_ms;    /* 0: FLEET_LEASE_DEFAULT_MS; at least 300 */
	int64_t start_rev;   /* the store revision read before the modules loaded their
	                        documents: the feed is applied from there */
};

/*
 * Leadership changes, called on the control thread from the module's timer
 * (never from inside a state publish).  leader() runs after this node took
 * the lock and bumped the term, and after the changes feed was caught up:
 * the place to reload every rollout from its document.  follower() runs
 * when it stopped being leader (lost the lock, lease lapsed, term moved on).
 */
struct fleet_hooks {
	void (*leader)(void *arg, int64_t term);
	void (*follower)(void *arg, int64_t term);
	void *arg;
};

struct fleet;

/*
 * Connects to cfg->url twice, creates the fleet schema (idempotent), sets
 * state's fence, subscribes to state's document kinds (to announce local
 * commits), registers the listen socket in loop and arms the timers.  It
 * tries the lock once at once, and when this node was the last holder (a
 * restart) waits up to the lease for its old session to go away, so a lone
 * node leads from its first tick.  loop, state and hooks are borrowed and
 * must outlive the fleet.  NULL with a message in err on failure.
 */
struct fleet *fleet_new(struct loop *loop, struct state *state, const struct fleet_config *cfg,
                        const struct fleet_hooks *hooks, char *err, size_t errlen);

/* Steps down (releases the lock by closing), unregisters, frees.  NULL is a no-op. */
void fleet_free(struct fleet *f);

/*
 * 1 while this node leads: it holds the lock and renewed the lease less
 * than a lease ago (checked against the clock now, so a paused process
 * stops leading the moment it resumes).  Steps down when the lease lapsed.
 */
int fleet_is_leader(struct fleet *f);

/*
 * 1 while this node, which led, has lost the store (its lock connection,
 * or its lease ran out unrenewed) and has not seen another node lead since:
 * it keeps judging in a rollback-only mode (docs/fleet.md).  Its decisions
 * cannot commit (the fence refuses them without the term), except that a
 * rollback is applied to this node's proxy at once and persisted when this
 * node leads again.  Ends when it leads again, or when the store answers
 * and another session holds the lock: then every document is applied
 * again, which undoes the local-only change and drops the pending decision.
 */
int fleet_rollback_only(struct fleet *f);

/* This node's term while leader, else the highest term seen (0: none yet). */
int64_t fleet_term(const struct fleet *f);

/* The last revision of the changes feed this node applied (or committed). */
int64_t fleet_applied_revision(const struct fleet *f);

/* Reads the changes feed now and applies what is new.  0 or ERR_UNAVAILABLE. */
int fleet_catch_up(struct fleet *f);

/*
 * The node registry as a new JSON object {"self", "leader", "term", "nodes":
 * [{id, address, role, term, applied_revision, last_seen, age_ms, alive}]}.
 * NULL with *err set (ERR_UNAVAILABLE, -ENOMEM) on failure.
 */
json_t *fleet_nodes_json(struct fleet *f, int *err);

/* This node's section of /v1/health/detailed (new reference). */
json_t *fleet_health_json(struct fleet *f);

/*
 * Appends canaryd_fleet_leader, canaryd_fleet_term, canaryd_applied_revision,
 * canaryd_fleet_lag_revisions, canaryd_fleet_changes_applied_total and
 * canaryd_fleet_leader_changes_total.  0 or -ENOBUFS.
 */
int fleet_write_prometheus(const struct fleet *f, struct buf *out);

/*
 * Pure helpers (exposed for tests).
 * fleet_parse_notify: "REV,TERM" (decimal, non-negative) -> 0, else -EINVAL.
 */
int fleet_parse_notify(const char *payload, int64_t *rev, int64_t *term);

/*
 * 1 when a leader whose last renewal was sent at renewed_ms (monotonic) must
 * stop acting at now_ms: the lease minus a margin (a tenth) has passed.
 */
int fleet_lease_lapsed(uint64_t renewed_ms, uint64_t now_ms, int64_t lease_ms);

#endif
