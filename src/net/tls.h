/*
 * tls.h - TLS with OpenSSL 3 behind the transport interface (transport.h):
 * server contexts for listeners and the admin listener (SNI picks the
 * certificate), client contexts for versions whose endpoints speak TLS, and
 * the non-blocking TLS transport.  See docs/tls.md.
 *
 * Building.  tls_set_new() builds every context one configuration needs on
 * the control thread: it reads the certificate and key files (blocking file
 * I/O, never on a worker), checks each key matches its certificate and loads
 * the CA bundles, and reports what is wrong as config errors naming the
 * file, line and key path (listeners[0].tls.certs[1].key).  A set is
 * immutable once built; the configuration reference (proxy/table.h
 * config_ref) owns it, so the tables built from one configuration share its
 * contexts, and a reload (SIGHUP) builds a new set that new connections pick
 * up with the new table.
 *
 * Lifetimes.  A connection never depends on the set it came from: its SSL
 * holds a reference on its SSL_CTX, and a server connection holds one on its
 * struct tls_server (SNI choice), so freeing a set while connections made
 * from it are open (handshaking or not) is safe.
 *
 * Threads.  tls_server_accept() and tls_client_connect() run on any thread
 * (workers, the control thread's admin listener); a transport is used by one
 * thread.  Session-ticket keys are process-wide, rotated every hour by the
 * first handshake that sees the current key expire (no lock: a three-slot
 * ring and an atomic generation); tickets under the previous key still
 * decrypt (and are renewed).
 */
#ifndef NET_TLS_H
#define NET_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "net/transport.h"

struct tls_set;
struct tls_server;
struct tls_client;

/*
 * Builds the contexts of cfg: one server per listener with `tls:`, one for
 * `admin.tls`, one client per version with `tls:`.  Errors are appended to
 * errs under cfg->file (file:line: path: message); returns NULL when there
 * was any, or on ENOMEM (reported too).  A configuration without any `tls:`
 * gives an empty set (not NULL).  Control thread only.
 */
struct tls_set *tls_set_new(const struct config *cfg, struct config_errors *errs);
/* Frees the set; open connections keep what they use.  NULL is accepted. */
void tls_set_free(struct tls_set *set);

/* The server of listener `name`, NULL when it has no `tls:` (or set is NULL). */
struct tls_server *tls_set_listener(const struct tls_set *set, const char *name);
/* The admin listener's server, NULL when plain. */
struct tls_server *tls_set_admin(const struct tls_set *set);
/* The client of version `version` of service `service`, NULL when plain. */
struct tls_client *tls_set_upstream(const struct tls_set *set, const char *service,
                                    const char *version);
/* How many contexts the set holds (servers + clients), for the --check summary. */
size_t tls_set_count(const struct tls_set *set);

/*
 * A number naming c for the process's life (never reused, unlike an
 * address after a reload); 0 for NULL (plain).  An idle upstream connection
 * may serve a request only when its id equals the version's: the same
 * endpoint under other `tls:` settings (or after a reload changed them)
 * must not reuse a connection verified under different ones.
 */
uint64_t tls_client_id(const struct tls_client *c);

/* Shared ownership of a server beyond its set (the admin listener keeps one). */
struct tls_server *tls_server_ref(struct tls_server *s);
void tls_server_unref(struct tls_server *s);

/*
 * Makes *t a server-side TLS transport over fd (an accepted, non-blocking
 * socket): the handshake is driven by t->ops->handshake.  Returns 0, or
 * -ENOMEM (nothing allocated; the caller closes fd).
 */
int tls_server_accept(struct tls_server *s, int fd, struct transport *t);

/*
 * Makes *t a client-side TLS transport over fd (a socket connecting or
 * connected to the endpoint `endpoint`, "host:port" or "[v6]:port" as
 * configured): the server name sent and verified is the version's `sni`,
 * else the endpoint's host when it is a name; with `verify` an IP host is
 * checked against the certificate's IP addresses.  Returns 0, or -ENOMEM
 * (nothing allocated; the caller closes fd).
 */
int tls_client_connect(struct tls_client *c, const char *endpoint, int fd, struct transport *t);

/*
 * tls_client_id() of the client context a client-side TLS transport was made
 * with; 0 for a plain or a server-side transport.
 */
uint64_t tls_transport_client_id(const struct transport *t);

/* 1 when t is a TLS transport (its ops are this module's). */
int tls_transport_is_tls(const struct transport *t);

/*
 * The server name the client asked for (SNI) and the ALPN protocol chosen,
 * once the handshake is done; NULL when none.  Valid while t is.
 */
const char *tls_transport_sni(const struct transport *t);

#endif
