/*
 * transport_pick.c - the proxy's transport choosers (transport_pick.h).
 */
#include "proxy/transport_pick.h"

#include "net/tls.h"

#include <errno.h>

/* Plain TCP: on the worker's io_uring when its loop runs on one (io:). */
static int plain_init(struct transport *t, int fd)
{
	int rc = transport_uring_init(t, fd);

	if (rc == -ENOTSUP) {
		transport_plain_init(t, fd);
		return 0;
	}
	return rc;
}

int proxy_transport_accept(const struct proxy_listener *l, int fd, struct transport *t)
{
	if (l && l->tls)
		return tls_server_accept(l->tls, fd, t);
	return plain_init(t, fd);
}

int proxy_transport_upstream(const struct proxy_version *v, const struct proxy_endpoint *e, int fd,
                             struct transport *t)
{
	if (v && v->tls)
		return tls_client_connect(v->tls, e->name, fd, t);
	return plain_init(t, fd);
}

int proxy_transport_reusable(const struct proxy_version *v, const struct transport *t)
{
	/* the same client context (trust, name, verify), not just TLS vs plain:
	 * ids are never reused, so a reload's new context does not match */
	return tls_transport_client_id(t) == tls_client_id(v ? v->tls : NULL);
}
