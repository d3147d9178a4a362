/*
 * transport_pick.h - the two places the proxy chooses a connection's
 * transport (src/net/transport.h): when a client connection is accepted on
 * a listener, and when an upstream connection is connected to an endpoint
 * of a version.  Today both give plain TCP; TLS plugs in here.
 *
 * Worker threads only.  The table the listener or version belongs to is
 * held by the caller for the duration of the call.  On success *t is
 * initialised over fd and the caller drives t->ops->handshake before any
 * read or write; on failure nothing was allocated and the caller closes fd.
 */
#ifndef PROXY_TRANSPORT_PICK_H
#define PROXY_TRANSPORT_PICK_H

#include "net/transport.h"
#include "proxy/registry.h"
#include "proxy/table.h"

/*
 * The transport of a client connection accepted on l (NULL: the listener
 * left the table; the connection will only be answered with 503).
 * Returns 0 or a negative errno.
 */
int proxy_transport_accept(const struct proxy_listener *l, int fd, struct transport *t);

/*
 * The transport of a new upstream connection to endpoint e of version v
 * (a primary's version, or a mirror's shadow version).  Returns 0 or a
 * negative errno.
 */
int proxy_transport_upstream(const struct proxy_version *v, const struct proxy_endpoint *e, int fd,
                             struct transport *t);

/*
 * 1 when an idle pooled connection with transport t may carry a request of
 * version v (same kind of transport, e.g. after a reload turned the
 * version's tls on or off for the same endpoint address); 0: close it.
 */
int proxy_transport_reusable(const struct proxy_version *v, const struct transport *t);

#endif
