/*
 * registry.h - the proxy's endpoints, for its whole life.
 *
 * An endpoint (an upstream address) gets a small integer id the first time a
 * table names it; the id never changes, so workers index their connection
 * pools by it and the outlier state survives reloads.  Outlier state is
 * shared by all workers (atomics), so ejection sees the whole traffic.
 */
#ifndef PROXY_REGISTRY_H
#define PROXY_REGISTRY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/config.h"

#define PROXY_MAX_ENDPOINTS 1024

struct proxy_endpoint {
	char name[280]; /* "host:port" as configured */
	struct sockaddr_storage sa;
	socklen_t salen;
	atomic_uint consecutive_fail;      /* 5xx and gateway errors in a row */
	_Atomic uint64_t ejected_until_ms; /* monotonic; 0: not ejected */
	atomic_uint ejections;             /* times ejected so far (for base x n) */
	_Atomic uint64_t requests;
	_Atomic uint64_t failures;
};

struct mirror_stats;

struct proxy_registry {
	struct proxy_endpoint eps[PROXY_MAX_ENDPOINTS];
	/* mirror/fault statistics (proxy/mirror.h), set by proxy_new(); NULL
	 * for a registry used without a proxy (nothing recorded) */
	struct mirror_stats *mirror;
	atomic_uint n;
	pthread_mutex_t lock; /* control thread only, around creation */
};

struct proxy_registry *proxy_registry_new(void);
void proxy_registry_free(struct proxy_registry *reg);

/*
 * The id of addr, resolving and registering it on first use (may block on
 * DNS: control thread only).  Returns the id, or -1 with a message in err.
 */
int proxy_registry_endpoint(struct proxy_registry *reg, const struct config_addr *addr, char *err,
                            size_t errlen);

static inline struct proxy_endpoint *proxy_registry_get(struct proxy_registry *reg, uint32_t id)
{
	return &reg->eps[id];
}

static inline uint32_t proxy_registry_count(struct proxy_registry *reg)
{
	return atomic_load_explicit(&reg->n, memory_order_acquire);
}

#endif
