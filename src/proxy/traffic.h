/*
 * traffic.h - the runtime traffic state of the services (SPEC 4, 7): each
 * service's canary and weight (and the stable version a completed rollout
 * left), its runtime mirror and its runtime faults, and the routing table
 * built from them and the configuration.
 *
 * Persisted as store documents, one per service and kind:
 *   "traffic" {stable, canary, weight_thousandths, weight}
 *   "mirror"  {version, percent_thousandths, percent}
 *   "faults"  {VERSION: {delay: {ms, percent_thousandths},
 *                        abort: {status, percent_thousandths}}, ...}
 *
 * Every change takes the one state path (state/state.h): validate (the new
 * table is built first, so a change that cannot route is refused and
 * nothing is written) -> state_commit() of the document and its audit event
 * in one transaction -> this module's subscriber applies it.  Changes
 * committed by another node arrive at the same subscriber and are applied
 * the same way.
 *
 * Cost of a change: the documents are kept parsed in memory (hashed by
 * service), and the new table is derived from the published one
 * (proxy_table_derive): one service is rebuilt, every other service, the
 * routes and their lookup are shared by reference.
 *
 * Threading: control thread only (the state layer's thread).  Workers see
 * the tables through proxy_publish().
 *
 * Errors: 0, or ERR_NOTFOUND (no such service in the configuration),
 * ERR_INVALID (the change cannot be routed: unknown version), the state
 * layer's ERR_STORE / ERR_UNAVAILABLE / ERR_CONFLICT, -ENOMEM.  A message
 * for humans is kept: traffic_errmsg().
 */
#ifndef PROXY_TRAFFIC_H
#define PROXY_TRAFFIC_H

#include <stddef.h>
#include <stdint.h>

struct state;
struct proxy;
struct proxy_table;
struct config_ref;
struct config_fault;
struct metrics_registry;

struct traffic;

/*
 * A traffic module over st, publishing to proxy and creating metrics series
 * in metrics (all borrowed; they must outlive it).  Subscribes to the
 * "traffic", "mirror" and "faults" kinds of st.  NULL when out of memory.
 */
struct traffic *traffic_new(struct state *st, struct proxy *proxy,
                            struct metrics_registry *metrics);

/* Unsubscribes and frees t (the published table stays with the proxy).  NULL is a no-op. */
void traffic_free(struct traffic *t);

/*
 * Reads the persisted documents (startup), then builds and publishes the
 * table for cref (traffic_build + traffic_use).  0, or an error with a
 * message in err.
 */
int traffic_load(struct traffic *t, struct config_ref *cref, char *err, size_t errlen);

/*
 * A table for cref (a reload's new configuration) and the traffic state,
 * not published: the caller decides with traffic_use() or drops it.
 * Documents of services cref lacks are kept but ignored.  NULL with a
 * message in err (unknown canary version, unresolvable endpoint).
 */
struct proxy_table *traffic_build(struct traffic *t, struct config_ref *cref, char *err,
                                  size_t errlen);

/*
 * Makes cref the configuration of later changes (a reference is taken) and
 * publishes table (stolen; built by traffic_build for cref).  When changes
 * were applied since that build (a rollout resumed in between), a fresh
 * table is built and published instead.
 */
void traffic_use(struct traffic *t, struct config_ref *cref, struct proxy_table *table);

/*
 * Sets service's canary (NULL: none) and its weight (thousandths); the
 * stable version stays.  Audited as "service.traffic" by actor.
 */
int traffic_set_weight(struct traffic *t, const char *service, const char *canary, uint32_t weight,
                       const char *actor);

/*
 * A rollout's preview step (blue-green): canary becomes service's canary at
 * weight 0 without draining, so only the service's overrides reach it.
 * The next traffic_set_weight() ends it.  Audited as "service.traffic".
 */
int traffic_set_preview(struct traffic *t, const char *service, const char *canary,
                        const char *actor);

/*
 * Makes version service's stable version and removes the canary (a
 * completed rollout).  Audited as "service.promoted".
 */
/*
 * traffic_set_weight() on this node's proxy only, without a commit: the
 * rollback a fleet leader takes while the store is away (docs/fleet.md).
 * The next committed or applied document of the service replaces it.
 * 0, ERR_NOTFOUND, ERR_INVALID, -ENOMEM.
 */
int traffic_set_weight_local(struct traffic *t, const char *service, const char *canary,
                             uint32_t weight);

int traffic_set_stable(struct traffic *t, const char *service, const char *version,
                       const char *actor);

/*
 * Sets service's runtime mirror to {version, percent} (thousandths);
 * version NULL or percent 0 removes it (the configuration's applies
 * again).  Audited as "service.mirror".
 */
int traffic_set_mirror(struct traffic *t, const char *service, const char *version,
                       uint32_t percent, const char *actor);

/*
 * Sets (f) or clears (f NULL) the runtime faults of service's version;
 * they replace the configuration's for that version.  f is copied.
 * Audited as "service.faults".
 */
int traffic_set_fault(struct traffic *t, const char *service, const char *version,
                      const struct config_fault *f, const char *actor);

/*
 * Replaces the endpoints of service that active health checks hold out of
 * the pick (proxy/health.h) with down[0..n) (copied; n 0: none) and
 * publishes the table derived with them.  Runtime only: not a document, not
 * audited, kept across reloads (an endpoint the new configuration lacks is
 * ignored).  0, -ENOMEM, ERR_INVALID (the table could not be built; the
 * list is kept for the next build).
 */
struct proxy_down;
int traffic_set_down(struct traffic *t, const char *service, const struct proxy_down *down,
                     size_t n);

/*
 * Service's stable version as routed now, or NULL (no such service).  The
 * string belongs to the running configuration (valid until the next
 * traffic_use).
 */
const char *traffic_stable_of(struct traffic *t, const char *service);

/*
 * Requests in flight to (service, version): 0 when never routed to, -1 when
 * not counted (series over the proxy's bound).
 */
long traffic_inflight(struct traffic *t, const char *service, const char *version);

/*
 * Waits (yielding the CPU) until every worker routes with the last table
 * this module published.  0 or -ETIMEDOUT.
 */
int traffic_wait_applied(struct traffic *t, uint64_t timeout_us);

/* The snapshot revision of the last table published (proxy_applied() takes it). */
uint64_t traffic_published_rev(const struct traffic *t);

/* Copies the message of the last failed change into buf (NUL-terminated); returns buf. */
const char *traffic_errmsg(const struct traffic *t, char *buf, size_t len);

#endif
