/*
 * client.h - one upstream HTTP/1.1 connection on a struct loop.
 *
 * Non-blocking from the first call: connect, send a request (serialized
 * here, body with Content-Length or chunked), parse the response with
 * parser.c (status, headers, streamed body) and, when both sides agree on
 * keep-alive, go idle for the next request.  One request at a time, no
 * pipelining.  No DNS: addresses are numeric (workers never block).
 * Used by tools (tools/loadgen.c).  The proxy does NOT build on it: its
 * data plane has its own upstream connection (src/proxy/upstream.h:
 * per-worker pools, transports, owner ops) and shares only the parser
 * (http/parser.h) with this file.
 *
 * Lifecycle: http_client_connect*() returns a client that is connecting;
 * requests may be queued at once.  The client lives until it closes (error,
 * timeout, peer close, non-keep-alive response, or http_client_close());
 * ops->on_close then runs exactly once at the end of that loop turn and the
 * client is freed right after it.  Between the close and on_close calls fail
 * with -EPIPE.
 */
#ifndef HTTP_CLIENT_H
#define HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/loop.h"
#include "core/str.h"
#include "http/parser.h"

struct http_client;

struct http_client_config {
	uint32_t connect_timeout_ms; /* 0: 2000 */
	uint32_t
	    response_timeout_ms; /* request start to response header, and body inactivity; 0: 30000 */
	size_t max_header_bytes; /* response header section cap; 0: 32768 */
	size_t max_headers;      /* 0: 100 */
	size_t max_output_bytes; /* queued request bytes; 0: 8 MiB */
};

/* Close reasons passed to on_close. */
#define HTTP_CLIENT_OK 0 /* orderly: idle peer close, Connection: close, http_client_close() */
/* otherwise a negative errno: -ECONNREFUSED / -EHOSTUNREACH ... (connect),
 * -ETIMEDOUT (connect or response timeout), -ECONNRESET (reset, or closed
 * before the response was complete), -EPROTO (malformed response),
 * -ENOBUFS (output cap), -ENOMEM. */

struct http_client_ops {
	/* Connected.  Optional. */
	void (*on_connect)(struct http_client *c, void *data);
	/* The response header section (1xx interim responses are skipped). */
	void (*on_response)(struct http_client *c, const struct http_msg *resp, void *data);
	/*
	 * A piece of decoded response body, valid during the call.  Return 0,
	 * or 1 to stop reading until http_client_resume_read().  Optional.
	 */
	int (*on_body)(struct http_client *c, const char *p, size_t len, void *data);
	/*
	 * The response is complete.  Afterwards the client is idle and
	 * reusable (http_client_reusable()) or closing.  Optional.
	 */
	void (*on_complete)(struct http_client *c, const struct http_msg *resp, void *data);
	/* The connection closed with err (above); c is freed after this returns. */
	void (*on_close)(struct http_client *c, int err, void *data);
};

/*
 * Starts a non-blocking connect to a numeric "ip:port" / "[ipv6]:port".
 * cfg may be NULL; ops must outlive the client.  Returns NULL with errno set
 * (EINVAL for a malformed or non-numeric address).
 */
struct http_client *http_client_connect(struct loop *loop, const char *hostport,
                                        const struct http_client_config *cfg,
                                        const struct http_client_ops *ops, void *data);
/* Same with a socket address. */
struct http_client *http_client_connect_sa(struct loop *loop, const struct sockaddr *sa,
                                           socklen_t salen, const struct http_client_config *cfg,
                                           const struct http_client_ops *ops, void *data);

/* Rebinds the callbacks' data (a pool handing the connection to a new owner). */
void http_client_set_data(struct http_client *c, void *data);

/*
 * Sends a whole request.  Headers are the caller's; Content-Length,
 * Transfer-Encoding are computed here (entries in hdrs are ignored), and a
 * Host header is added from the connect address when hdrs has none.  A
 * body of len bytes is sent with Content-Length (omitted when len is 0
 * for methods other than POST, PUT and PATCH).  Returns 0, -EBUSY when a
 * request is in progress, -EPIPE when closed, -ENOBUFS past the cap.
 */
int http_client_request(struct http_client *c, struct str method, struct str target,
                        const struct http_header *hdrs, size_t nhdrs, const void *body, size_t len);
/*
 * Starts a streamed request: content_length >= 0 announces that many body
 * bytes, -1 sends a chunked body.  Continue with http_client_write() and
 * http_client_request_end().  Same returns.
 */
int http_client_request_start(struct http_client *c, struct str method, struct str target,
                              const struct http_header *hdrs, size_t nhdrs, int64_t content_length);
/* Body bytes of a started request.  -EINVAL beyond the announced length. */
int http_client_write(struct http_client *c, const void *p, size_t len);
/* Ends the request body (the last chunk when chunked). */
int http_client_request_end(struct http_client *c);

/* Resumes reading after on_body returned 1. */
void http_client_resume_read(struct http_client *c);
/* 1 when connected, idle and keep-alive: a new request may be sent. */
int http_client_reusable(const struct http_client *c);
/* 1 while connecting. */
int http_client_connecting(const struct http_client *c);
/* Closes now (orderly, err 0); on_close follows at the end of the turn. */
void http_client_close(struct http_client *c);

#endif
