/*
 * sock.h - socket and wire plumbing shared by server.c and client.c.
 *
 * Internal to src/http: non-blocking sends that queue what the socket does
 * not take into a bounded output buffer, bounded reads, "host:port"
 * splitting, address text, and the HTTP/1.1 framing both directions write
 * (header lines, Content-Length / chunked, chunk heads).  Nothing here
 * touches the event loop or closes anything: errors go back to the caller,
 * which owns the connection and decides how to close it.
 */
#ifndef HTTP_SOCK_H
#define HTTP_SOCK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "core/buf.h"
#include "core/str.h"

/* Framing arguments of http_head_framing() besides a Content-Length >= 0. */
#define HTTP_FRAMING_CHUNKED (-1) /* Transfer-Encoding: chunked */
#define HTTP_FRAMING_NONE    (-2) /* no framing header (no body, or close-delimited) */

/* Writes out's bytes to fd until EAGAIN.  Returns 0, or -EPIPE when the socket failed. */
int sock_flush(int fd, struct buf *out);

/*
 * Sends iov[0..n): straight to fd when out holds nothing queued (fd < 0:
 * never, e.g. while connecting), then appends what was not sent to out.
 * iov is modified.  Returns 0, -EPIPE when the socket failed, or -ENOBUFS
 * when out's cap was hit (some bytes may have been queued).
 */
int sock_sendv(int fd, struct buf *out, struct iovec *iov, int n);

/*
 * Reads once from fd into in, at most chunk bytes.  Returns the count, 0 at
 * EOF, -EAGAIN when nothing is there, -ENOBUFS when in is full (parse some
 * first), -ENOMEM, or another negative errno when the socket failed.
 */
ssize_t sock_read(int fd, struct buf *in, size_t chunk);

/* Sets TCP_NODELAY; best effort (a failure only costs latency). */
void sock_nodelay(int fd);

/*
 * Splits "host:port" or "[v6]:port": copies host (without brackets, maybe
 * empty) NUL-terminated into host[hcap] and points *port at the text after
 * the colon (the tail of addr, maybe empty).  -EINVAL when there is no
 * colon, the brackets are unbalanced or host does not fit.
 */
int sock_split_hostport(const char *addr, char *host, size_t hcap, struct str *port);

/* The port of an AF_INET / AF_INET6 address, or -EAFNOSUPPORT. */
int sock_addr_port(const struct sockaddr *sa);
/* Writes sa's IP as text into ip[cap] (INET6_ADDRSTRLEN fits all); "" for other families. */
void sock_addr_ip(const struct sockaddr *sa, char *ip, size_t cap);

/*
 * A per-thread scratch buffer (emptied, capped at 64 MiB) for serializing a
 * message head or an SSE event without allocating per message.  Valid
 * until the next http_scratch() call on this thread: hand its bytes to
 * sock_sendv() before calling anything that may run a callback.
 */
struct buf *http_scratch(void);

/* Appends the header line "name: value\r\n".  Same returns as buf_append. */
int http_head_add(struct buf *b, struct str name, struct str value);
/*
 * Appends "Content-Length: clen\r\n" for clen >= 0, "Transfer-Encoding:
 * chunked\r\n" for HTTP_FRAMING_CHUNKED, nothing for HTTP_FRAMING_NONE.
 */
int http_head_framing(struct buf *b, int64_t clen);

/*
 * Fills iov[0..3) with one chunk of len > 0 bytes at p: its hex size line
 * (written into hex), the bytes, CRLF.  Returns 3, the iov count.
 */
int http_chunk_iov(struct iovec iov[3], char hex[20], const void *p, size_t len);

#endif
