/*
 * table.h - the proxy's routing table: an immutable snapshot built by the
 * control thread from the configuration plus the runtime traffic state
 * (canary version and weight per service), published to every worker.
 *
 * Workers read it without locks.  A request in flight keeps a reference to
 * the table it was routed with, so a weight change never moves it.
 * Endpoints are named by ids of the proxy's endpoint registry (stable for the
 * proxy's life), which index the workers' per-endpoint pools and the shared
 * outlier state.
 */
#ifndef PROXY_TABLE_H
#define PROXY_TABLE_H

#include <stdint.h>
#include <sys/socket.h>

#include "config/config.h"
#include "core/arena.h"
#include "core/bucket.h"
#include "core/snapshot.h"
#include "core/str.h"
#include "flags/segment.h"
#include "http/parser.h"

struct proxy_registry;
struct tls_set;
struct tls_server;
struct tls_client;

/* Faults injected on requests routed to a version (SPEC 4); percents in thousandths. */
struct proxy_fault {
	uint32_t delay_ms, delay_percent;     /* delay_percent 0: no delay */
	uint32_t abort_status, abort_percent; /* abort_percent 0: no abort */
	int runtime;                          /* set through the API (else from the config) */
};

struct proxy_version {
	const char *name;
	struct proxy_fault fault;
	/*
	 * Endpoint registry ids, all nall of the version's endpoints: the first
	 * neps (>= 1) are the ones requests pick; eps[neps..nall) are held out
	 * because active health checks found them down (proxy_traffic.down).
	 */
	uint32_t *eps;
	uint32_t neps;
	uint32_t nall;
	int series;   /* metrics series id of (service, version) */
	int draining; /* canary whose weight went to 0: no new requests at all */
	/* `tls:` (the config_ref's set, net/tls.h); NULL: plain */
	struct tls_client *tls;
};

struct proxy_override {
	enum config_override_match match;
	const char *name; /* header (lower-case) or cookie name */
	const char *value;
	struct segment *segment; /* compiled, owned by the table */
	enum config_override_action action;
	int version; /* CONFIG_OVERRIDE_VERSION: index; else -1 */
};

/*
 * The service's mirror (shadow traffic): copies of percent of the requests
 * whose method is listed go to version, unless the request itself went
 * there.  version -1: no mirroring.
 */
struct proxy_mirror {
	int version;
	uint32_t percent; /* thousandths */
	const struct config_strlist *methods;
	uint64_t body_cap;
	int compare_body;
	int runtime; /* set through the API or a rollout's shadow step */
};

struct proxy_service {
	const char *name;
	size_t name_len;
	struct proxy_version *versions;
	uint32_t nversions;
	int stable;      /* version index */
	int canary;      /* version index, -1 when none */
	uint32_t weight; /* canary weight, thousandths of a percent */
	struct config_keysrc sticky;
	int expose_cohort;
	struct proxy_override *overrides;
	uint32_t noverrides;
	const struct config_context_attr *context;
	size_t ncontext;
	struct config_timeouts timeouts;
	struct config_outlier outlier;
	uint64_t drain_ms;
	uint32_t max_header_bytes;
	struct proxy_mirror mirror;
	int stats_slot; /* mirror/fault statistics slot (mirror.h); -1: none */
	int index;      /* in the table */
	/*
	 * Holds versions, endpoints, overrides and compiled segments: shared by
	 * reference between the tables that did not rebuild this service
	 * (proxy_table_derive), released with the last of them.
	 */
	struct snap_obj *mem;
};

struct proxy_route {
	const char *host; /* NULL: any; "*.example.com": any subdomain */
	const char *path_prefix;
	size_t prefix_len;
	uint32_t svc_index; /* into the table's services */
};

/* The listener's route lookup (hash of hosts, prefixes per host); private to table.c. */
struct proxy_route_index;

struct proxy_listener {
	const char *name;
	const char *addr;                 /* "host:port" as http_listen() takes it */
	const struct proxy_route *routes; /* longest prefix first: the match order */
	uint32_t nroutes;
	const struct proxy_route_index *index; /* shared by tables of one configuration */
	struct proxy_service *services;        /* the table's, which routes index */
	struct tls_server *tls; /* `tls:` (the config_ref's set, net/tls.h); NULL: plain */
};

struct proxy_table {
	struct snap_obj obj; /* first: the snapshot's refcount */
	struct arena arena;
	struct proxy_listener *listeners;
	uint32_t nlisteners;
	struct proxy_service *services;
	uint32_t nservices;
	uint32_t max_header_bytes; /* largest of the services' (listener-wide parsing) */
	uint64_t header_timeout_ms;
	uint64_t idle_timeout_ms;
	struct snap_obj *cfg_ref; /* keeps the config the table points into alive */
	/*
	 * What depends on the configuration only (the service name index, the
	 * listeners' routes and their lookup): built by proxy_table_build,
	 * shared by every table derived from it.
	 */
	struct snap_obj *shape;
};

/* A runtime fault of one version; replaces the config's faults for it. */
struct proxy_fault_set {
	const char *version;
	struct config_fault fault;
};

/* An endpoint active health checks found down (proxy/health.h): out of the pick. */
struct proxy_down {
	const char *version;
	const char *endpoint; /* "host:port" as the registry names it */
};

/* Runtime traffic state of one service (persisted by the daemon). */
struct proxy_traffic {
	const char *service;
	const char *stable; /* NULL: the config's; set when a rollout completed */
	const char *canary; /* NULL: no canary */
	uint32_t weight;    /* thousandths */
	int preview;        /* weight 0 without draining: only overrides reach the canary */
	/* runtime mirror: when mirror_set, {mirror_version, mirror_percent}
	 * replace the config's version and percent (methods, body_cap and
	 * compare_body stay the config's, or the defaults) */
	int mirror_set;
	const char *mirror_version;
	uint32_t mirror_percent;
	const struct proxy_fault_set *faults; /* runtime faults, [nfaults] */
	size_t nfaults;
	/* endpoints held out of the pick (not persisted: each node probes its
	 * own); a version keeps at least one endpoint whatever this says */
	const struct proxy_down *down;
	size_t ndown;
};

/*
 * A refcounted holder of a struct config, so tables built from it can point
 * into it and outlive a reload.  Steals cfg.
 */
struct config_ref {
	struct snap_obj obj;
	struct config *cfg;
	/* cfg's TLS contexts (net/tls.h tls_set_new), freed with the ref; NULL: none */
	struct tls_set *tls;
};
struct config_ref *config_ref_new(struct config *cfg);

/*
 * Builds a table from cfg (a reference is taken) and traffic[0..n).  Endpoint
 * addresses are resolved here (may block on DNS: control thread only) and
 * registered in reg; metrics series are created through series_fn.
 * Returns NULL with a message in err (unknown canary version, unresolvable
 * endpoint, registry full).
 */
struct proxy_table *proxy_table_build(struct config_ref *cfg, const struct proxy_traffic *traffic,
                                      size_t n, struct proxy_registry *reg,
                                      int (*series_fn)(void *ctx, const char *svc,
                                                       const char *version),
                                      void *series_ctx, char *err, size_t errlen);

/*
 * A new table equal to old except for the service tr->service, rebuilt from
 * old's configuration and tr (NULL fields as in proxy_table_build).  The
 * other services' data, the routes and their lookup are shared with old by
 * reference, so the cost is one service's build plus a copy of the
 * services array.  Control thread only.  NULL with a message in err (no
 * such service in the configuration, unknown canary version, out of memory).
 */
struct proxy_table *proxy_table_derive(const struct proxy_table *old,
                                       const struct proxy_traffic *tr, struct proxy_registry *reg,
                                       int (*series_fn)(void *ctx, const char *svc,
                                                        const char *version),
                                       void *series_ctx, char *err, size_t errlen);

/* The service named name, or NULL (a hash lookup). */
struct proxy_service *proxy_table_service(const struct proxy_table *t, const char *name);
/* Index of version name in svc, or -1. */
int proxy_service_version(const struct proxy_service *svc, const char *name);

/*
 * Route match on listener l: host (without port, case-insensitive) and path.
 * Returns the service of the first route in l->routes' order that matches
 * (longest path prefix; at equal length a route naming a host before one
 * for any host; then configuration order), or NULL (404).  The cost does
 * not grow with the number of routes: one hash probe per host group (the
 * exact host, each "*." suffix of it that has routes, any host) and per
 * distinct prefix length in that group.
 */
struct proxy_service *proxy_route_match(const struct proxy_listener *l, struct str host,
                                        struct str path);

/* The routing decision for one request. */
struct proxy_decision {
	int version; /* index into svc->versions */
	enum cohort cohort;
	uint32_t bucket;     /* UINT32_MAX when an override decided */
	uint32_t key_hash;   /* bucket_hash() of the key the split used; 0 with an override */
	int set_cookie;      /* sticky cookie was absent: send Set-Cookie */
	char cookie_key[24]; /* the key generated for it */
};

/*
 * Decides version and cohort: overrides, then the sticky key's bucket
 * against the cumulative ranges.  peer is the client IP as text; rnd is a
 * random 64-bit value used when there is no key (sticky none, missing
 * header).  Pure: no I/O, no allocation.
 */
void proxy_decide(const struct proxy_service *svc, const struct http_msg *req, struct str peer,
                  uint64_t rnd, struct proxy_decision *out);

/* Value of cookie name in the request's Cookie headers; STR_NULL if absent. */
struct str proxy_cookie(const struct http_msg *req, const char *name);

#endif
