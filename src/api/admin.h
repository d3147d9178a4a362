/*
 * admin.h - the admin listener: the HTTP server core in front of api_handle().
 * Runs on the control thread's loop.
 */
#ifndef API_ADMIN_H
#define API_ADMIN_H

#include "api/api.h"

struct loop;
struct tls_server;
struct admin;

/*
 * Listens on addr ("host:port") and serves api.  Request bodies are buffered
 * up to 1 MiB (413 beyond).  tls (net/tls.h; NULL: plain HTTP) is the
 * server of `admin.tls`: a reference is taken.  Returns NULL with a message
 * in err.
 */
struct admin *admin_start(struct loop *loop, const char *addr, struct api *api,
                          struct tls_server *tls, char *err, size_t errlen);

/*
 * New connections use tls from now on (a reload's certificates; NULL:
 * plain); open ones keep theirs.  A reference is taken, the old one dropped.
 */
void admin_set_tls(struct admin *a, struct tls_server *tls);

/* Stops accepting; in-flight requests finish.  done() is called once none remain. */
void admin_shutdown(struct admin *a, void (*done)(void *arg), void *arg);

/* Frees the listener (after shutdown completed). */
void admin_free(struct admin *a);

#endif
