/*
 * headers.h - the header rules of a proxy hop (RFC 9110 7.6.1, RFC 9112
 * 3.2.2): which headers are hop-by-hop, the Connection header's tokens, and
 * the request line and end-to-end headers a forwarded message carries.
 *
 * Pure functions over a parsed message (http/parser.h); any thread.  The
 * appenders write into a capped struct buf and return 0 or the first
 * buf_append error, after which the buffer holds a partial head the caller
 * must not send.
 */
#ifndef HTTP_HEADERS_H
#define HTTP_HEADERS_H

#include <stddef.h>

#include "core/buf.h"
#include "core/str.h"
#include "http/parser.h"

/*
 * 1 for the headers that never cross a hop: Connection, Keep-Alive,
 * Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade,
 * Proxy-Authenticate, Proxy-Authorization (case-insensitive).
 */
int headers_is_hop_by_hop(struct str name);

/* 1 when one of m's Connection headers names `name` (then it is hop-by-hop too). */
int headers_in_connection_tokens(const struct http_msg *m, struct str name);

/*
 * Appends m's end-to-end headers as "Name: value\r\n" lines: not the
 * hop-by-hop ones, not those a Connection header names, not those listed
 * in skip[0..nskip) (lower-case names, nskip <= HEADERS_MAX_SKIP, else
 * -EINVAL), and not Host when m's target was in absolute form
 * (headers_request_line() wrote the authority instead).
 */
#define HEADERS_MAX_SKIP 16
int headers_forward(struct buf *o, const struct http_msg *m, const char *const *skip, size_t nskip);

/*
 * Appends the request line an upstream gets, always origin-form
 * "METHOD target HTTP/1.1\r\n".  An absolute-form target is cut to its path
 * and query and its authority becomes a "Host:" line right after.
 */
int headers_request_line(struct buf *o, const struct http_msg *m);

#endif
