#include "proxy/registry.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct proxy_registry *proxy_registry_new(void)
{
	struct proxy_registry *reg = calloc(1, sizeof(*reg));

	if (!reg)
		return NULL;
	pthread_mutex_init(&reg->lock, NULL);
	return reg;
}

void proxy_registry_free(struct proxy_registry *reg)
{
	if (!reg)
		return;
	pthread_mutex_destroy(&reg->lock);
	free(reg);
}

int proxy_registry_endpoint(struct proxy_registry *reg, const struct config_addr *addr, char *err,
                            size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	char name[280], port[8];
	uint32_t n;
	int rc, id = -1;

	if (addr->family == AF_INET6)
		snprintf(name, sizeof(name), "[%s]:%u", addr->host, addr->port);
	else
		snprintf(name, sizeof(name), "%s:%u", addr->host, addr->port);
	pthread_mutex_lock(&reg->lock);
	n = atomic_load(&reg->n);
	for (uint32_t i = 0; i < n; i++) {
		if (strcmp(reg->eps[i].name, name) == 0) {
			id = (int)i;
			goto out;
		}
	}
	if (n == PROXY_MAX_ENDPOINTS) {
		snprintf(err, errlen, "too many endpoints (at most %d)", PROXY_MAX_ENDPOINTS);
		goto out;
	}
	snprintf(port, sizeof(port), "%u", addr->port);
	hints.ai_family = addr->family == AF_UNSPEC ? AF_INET : addr->family;
	rc = getaddrinfo(strcmp(addr->host, "localhost") == 0 ? "127.0.0.1" : addr->host, port,
	                 &hints, &res);
	if (rc != 0 || !res) {
		snprintf(err, errlen, "cannot resolve %s: %s", name, gai_strerror(rc));
		goto out;
	}
	memset(&reg->eps[n], 0, sizeof(reg->eps[n]));
	memcpy(reg->eps[n].name, name, strlen(name) + 1);
	memcpy(&reg->eps[n].sa, res->ai_addr, res->ai_addrlen);
	reg->eps[n].salen = res->ai_addrlen;
	freeaddrinfo(res);
	atomic_store_explicit(&reg->n, n + 1, memory_order_release);
	id = (int)n;
out:
	pthread_mutex_unlock(&reg->lock);
	return id;
}
