/*
 * server.h - HTTP/1.1 server connections on a struct loop.
 *
 * One struct http_server per loop (worker thread) accepts on one or more
 * listening sockets and runs each connection as a small state machine:
 *
 *   HEADERS --(header section parsed: on_headers)--> BODY
 *   BODY    --(message complete: on_request)-------> RESPONDING
 *   RESPONDING --(response finished)--> next pipelined request or close
 *
 * Requests on one connection are handled strictly in order: the next one is
 * not parsed before the response to the current one is finished (it may
 * still be flushing).  Every buffer is bounded (input, header section, body
 * when buffered, queued output, SSE backlog); parse errors are answered with
 * their status, a JSON body and Connection: close.  See docs/http.md.
 *
 * Ownership: the server owns its connections.  A struct http_conn pointer is
 * valid from on_headers until on_close has returned; after a connection is
 * closed (by the peer, an error or a timeout) calls on it fail with -EPIPE
 * until on_close runs at the end of the loop turn, then it is freed.
 * Nothing here is thread-safe: use a server from its loop's thread only.
 */
#ifndef HTTP_SERVER_H
#define HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "core/loop.h"
#include "core/str.h"
#include "http/parser.h"

struct http_server;
struct http_conn;
struct tls_server;

struct http_server_config {
	size_t max_header_bytes;    /* 431 beyond; 0: 32768 */
	size_t max_headers;         /* 431 beyond; 0: 100 */
	uint32_t header_timeout_ms; /* first byte to end of headers -> 408; 0: 10000 */
	uint32_t idle_timeout_ms;   /* keep-alive idle, and body inactivity -> 408; 0: 60000 */
	size_t max_body_bytes;      /* default cap of a buffered body -> 413; 0: 1 MiB */
	size_t max_output_bytes;    /* cap on queued output per connection; 0: 8 MiB */
	size_t output_high_water;   /* stop reading above this much queued; 0: 256 KiB */
	size_t sse_backlog_bytes;   /* SSE: drop the subscriber above this; 0: 1 MiB */
	uint32_t max_conns;         /* 0: unlimited; beyond: accepted and closed */
	int send_date;              /* add a Date header */
};

/*
 * The handler.  Every callback gets the handler's data.  on_request is
 * required; the others are optional.
 */
struct http_handler {
	/*
	 * The header section of a request is parsed.  The default is to buffer
	 * the body up to max_body_bytes and then call on_request; here the
	 * handler may call http_conn_buffer_body() (another cap) or
	 * http_conn_stream_body() (on_body gets the chunks), or respond at once
	 * (the rest of the body is then read and dropped, and on_request is
	 * not called for this request).
	 */
	void (*on_headers)(struct http_conn *c, const struct http_msg *req, void *data);
	/*
	 * Streaming mode: a piece of decoded body (valid during the call).
	 * Return 0, or 1 to stop reading until http_conn_resume_read().
	 */
	int (*on_body)(struct http_conn *c, const char *p, size_t len, void *data);
	/*
	 * The request is complete.  body is the buffered body (empty in streaming
	 * mode); it and req stay valid until the response is finished.  The
	 * handler responds now or later (any time before the connection closes).
	 */
	void (*on_request)(struct http_conn *c, const struct http_msg *req, struct str body,
	                   void *data);
	/*
	 * The connection is going away; drop every reference to c.  Runs at the
	 * end of the loop turn in which it closed, exactly once.
	 */
	void (*on_close)(struct http_conn *c, void *data);
	void *data;
};

/*
 * Opens a listening TCP socket on "host:port" ("0.0.0.0:8080", "[::1]:80",
 * ":8080" or "*:8080" for any address; port 0 picks one), non-blocking,
 * close-on-exec, SO_REUSEADDR, and SO_REUSEPORT when reuseport is set.
 * Returns the fd or a negative errno (-EINVAL for a malformed address).
 */
int http_listen(const char *addr, int reuseport);
/* The local port of a bound socket, or a negative errno. */
int http_local_port(int fd);

/*
 * Creates a server on loop.  cfg may be NULL (defaults); h is copied.
 * Returns NULL on ENOMEM.
 */
struct http_server *http_server_new(struct loop *loop, const struct http_server_config *cfg,
                                    const struct http_handler *h);
/*
 * Starts accepting on fd (from http_listen); the server steals fd and closes
 * it on shutdown/free.  Returns 0 or a negative errno.
 */
int http_server_add_listener(struct http_server *s, int fd);
/*
 * Connections accepted from now on speak TLS with tls (net/tls.h; NULL:
 * plain HTTP); open ones keep theirs.  Takes a reference and drops the
 * previous one.  The handshake is non-blocking and bounded by
 * header_timeout_ms like the header section.
 */
void http_server_set_tls(struct http_server *s, struct tls_server *tls);
/* Open connections. */
size_t http_server_conn_count(const struct http_server *s);
/*
 * Graceful shutdown: stops accepting, closes idle connections, lets the
 * requests in progress finish (their responses say Connection: close) and
 * calls done(s, data) from the loop once no connection remains (maybe at
 * the end of this turn).  done may free the server.
 */
void http_server_shutdown(struct http_server *s, void (*done)(struct http_server *s, void *data),
                          void *data);
/*
 * Closes every connection and listener at once and frees the server.  Call
 * outside the server's callbacks (e.g. after loop_run returned); on_close is
 * called for each open connection.
 */
void http_server_free(struct http_server *s);

/* --- during a request ------------------------------------------------ */

/* Buffer this request's body up to cap bytes (413 beyond).  In on_headers. */
void http_conn_buffer_body(struct http_conn *c, size_t cap);
/* Deliver this request's body to on_body instead of buffering.  In on_headers. */
void http_conn_stream_body(struct http_conn *c);
/* Resume reading after on_body returned 1. */
void http_conn_resume_read(struct http_conn *c);
/* The request being handled, or NULL. */
const struct http_msg *http_conn_request(struct http_conn *c);
/* Per-connection slot for the handler. */
void http_conn_set_udata(struct http_conn *c, void *udata);
void *http_conn_udata(const struct http_conn *c);
/* The peer's address as text ("127.0.0.1" / "::1"), for X-Forwarded-For. */
struct str http_conn_peer(const struct http_conn *c);
/* 1 once the connection closed (calls then fail with -EPIPE). */
int http_conn_closed(const struct http_conn *c);

/* --- responses ------------------------------------------------------- *
 * Header arrays are the caller's; Content-Length, Transfer-Encoding and
 * Connection entries in them are ignored (the server frames the message).
 * All return 0, -EPIPE when the connection is closed, -EALREADY when a
 * response was already started, -EINVAL when none was started (write/end),
 * or -ENOBUFS when the output cap was hit (the connection is then closed).
 */

/* A whole response with Content-Length.  HEAD requests get no body. */
int http_conn_respond(struct http_conn *c, int status, const struct http_header *hdrs, size_t nhdrs,
                      const void *body, size_t len);
/* A JSON error: {"error":{"code":"<code>","message":"<message>"}}; code NULL:
 * derived from status.  message is JSON-escaped. */
int http_conn_respond_error(struct http_conn *c, int status, const char *code, const char *message);
/*
 * Starts a streamed response.  content_length >= 0: exactly that many
 * bytes follow through http_conn_write(); -1: chunked (HTTP/1.1 peers) or
 * close-delimited (HTTP/1.0 peers).
 */
int http_conn_start(struct http_conn *c, int status, const struct http_header *hdrs, size_t nhdrs,
                    int64_t content_length);
/* http_conn_start(c, status, hdrs, nhdrs, -1). */
int http_conn_start_chunked(struct http_conn *c, int status, const struct http_header *hdrs,
                            size_t nhdrs);
/* Body bytes of a started response (one chunk in chunked mode; len 0 is a no-op). */
int http_conn_write(struct http_conn *c, const void *p, size_t len);
/* Same as http_conn_write (chunked framing alias). */
int http_conn_write_chunk(struct http_conn *c, const void *p, size_t len);
/*
 * Finishes the response (the last chunk in chunked mode).  A Content-Length
 * response that got fewer bytes than announced closes the connection.
 */
int http_conn_end(struct http_conn *c);

/*
 * Server-Sent Events: 200, Content-Type: text/event-stream, Cache-Control:
 * no-cache, chunked; the connection stays until either side closes it.
 */
int http_conn_start_sse(struct http_conn *c, const struct http_header *hdrs, size_t nhdrs);
/*
 * Sends one event: "id: <id>", "event: <event>" (each skipped when empty)
 * and one "data: " line per line of data, then a blank line.  Returns
 * -ENOBUFS and closes the connection when the backlog exceeds
 * sse_backlog_bytes (a slow subscriber), -EPIPE once closed.
 */
int http_conn_sse_send(struct http_conn *c, struct str id, struct str event, struct str data);
/* Sends a comment line ": <text>" (heartbeat: ": hb").  Same returns. */
int http_conn_sse_comment(struct http_conn *c, struct str text);
/* Bytes queued and not yet written. */
size_t http_conn_backlog(const struct http_conn *c);

/* Closes the connection now (output queued is dropped). */
void http_conn_close(struct http_conn *c);

#endif
