/*
 * uring.h - an io_uring byte-stream engine behind the loop (core/loop.h):
 * batched recv/send for plain TCP connections, raw syscalls (no liburing).
 *
 * One ring per loop, created and used only on the loop's thread
 * (IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN): loop_uring_enable() makes it,
 * and the loop then waits in io_uring_enter instead of epoll_wait (its epoll
 * fd is watched through a one-shot poll on the ring), so a turn costs one
 * syscall that submits every queued send/recv and reaps every completion.
 *
 * A connection (struct uring_conn) is a socket served by the ring:
 *  - receive: one recv at a time, into a buffer the kernel picks from a
 *    provided-buffer ring shared by the ring's connections (idle connections
 *    hold no buffer); uring_conn_read() copies out of the completed buffer,
 *    and re-arms the recv only once the buffer is consumed, so an owner that
 *    stops reading leaves the rest in the kernel (TCP backpressure).  When
 *    the shared buffers run out (owners that stopped reading hold them all)
 *    a connection receives into a private buffer of its own, freed once
 *    read: nobody waits for another connection's reader.
 *  - send: uring_conn_writev() copies into the connection's send buffer
 *    (URING_SEND_CAP bytes; past it: EAGAIN) and queues one send; the
 *    completion frees room and wakes the owner's write side if it was told
 *    EAGAIN.
 *  - events reach the owner through wake(ctx, arg, URING_EV_*), with the
 *    meaning of the loop's edge-triggered events: READ when a recv completed
 *    (data, EOF or error), WRITE once connected (the first one, as epoll's
 *    first EPOLLOUT edge) and when send room came back.
 *  - closing: uring_conn_close() drops the owner's reference; in-flight
 *    operations keep the connection (and their buffers) alive until their
 *    completions arrive.  Operations still queued are submitted before it
 *    returns, so the owner may close(fd) right after.  An orderly close lets
 *    queued output go out first (bounded by URING_LINGER_MS); an abortive one
 *    cancels everything.
 * Memory: the buffer ring (URING_RBUFS x URING_RBUF_SIZE) per ring, plus a
 * send buffer per connection with unsent output (released when it empties)
 * and a private receive buffer per connection holding unread input while
 * the shared ones are out.
 */
#ifndef CORE_URING_H
#define CORE_URING_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct uring;
struct uring_conn;

/* events given to a connection's wake function (the loop's LOOP_* values) */
#define URING_EV_READ  0x1u
#define URING_EV_WRITE 0x2u
#define URING_EV_ERROR 0x4u
#define URING_EV_RDHUP 0x8u

#define URING_SEND_CAP  (64u << 10) /* pending output per connection */
#define URING_RBUF_SIZE (16u << 10) /* one provided receive buffer */
#define URING_RBUFS     256u        /* receive buffers per ring (power of 2) */
#define URING_LINGER_MS 10000u      /* an orderly close waits this long for output */

typedef void (*uring_wake_fn)(void *ctx, void *arg, uint32_t events);

/*
 * Creates a ring for the calling thread, which must be the only one to use
 * it.  ctx is passed to every wake function.  On failure returns NULL and
 * writes why (a human sentence) to why.
 */
struct uring *uring_new(void *ctx, char *why, size_t whylen);
/* Frees the ring and every connection still waiting for completions. */
void uring_free(struct uring *r);
/* 0 when io_uring with the features used here works in this process, else
 * -errno with the reason in why (makes and frees a small ring). */
int uring_probe(char *why, size_t whylen);
/* The ring of the calling thread (made by uring_new on it), or NULL. */
struct uring *uring_current(void);

/*
 * Submits what is queued and waits up to timeout_ms (-1: no limit, 0: do
 * not wait) for a completion; nothing is dispatched.  Returns 0 or -errno.
 */
int uring_wait(struct uring *r, int timeout_ms, uint64_t now_ms);
/*
 * Dispatches every completion: wake functions run from here.  Returns 1
 * when the watched fd (uring_watch) became readable, else 0.
 */
int uring_dispatch(struct uring *r, uint64_t now_ms);
/* Arms a one-shot readability watch on fd (the loop's epoll fd). */
void uring_watch(struct uring *r, int fd);
/* 1 when there is work queued that the next uring_wait must submit. */
int uring_pending(const struct uring *r);

/*
 * Makes fd (a connected or connecting non-blocking stream socket) a ring
 * connection.  Nothing is queued until uring_conn_bind().  Returns NULL on
 * ENOMEM.  The fd stays owned by the caller.
 */
struct uring_conn *uring_conn_new(struct uring *r, int fd);
/* The unbound-or-bound open connection made for fd, or NULL. */
struct uring_conn *uring_conn_of_fd(struct uring *r, int fd);
/*
 * Starts serving the connection: events go to wake(ctx, arg, ev) from now
 * on.  The first WRITE comes once the socket is writable (connected).
 */
void uring_conn_bind(struct uring_conn *c, uring_wake_fn wake, void *arg);
/* No more events for the connection (its owner unregistered it). */
void uring_conn_unbind(struct uring_conn *c);

/*
 * Reads up to len bytes already received: > 0 the count (short: nothing
 * more at the moment; a READ event will come when there is), 0 at EOF, -1
 * with errno (EAGAIN: a READ event will come; or the socket's error).
 */
ssize_t uring_conn_read(struct uring_conn *c, void *buf, size_t len);
/*
 * Takes up to URING_SEND_CAP pending bytes from iov[0..n) into the send
 * buffer and queues their send: the count taken, or -1 with errno (EAGAIN:
 * full, a WRITE event will come; or the error a previous send met).
 */
ssize_t uring_conn_writev(struct uring_conn *c, const struct iovec *iov, int n);
/* Marks the coming close orderly: queued output is still sent. */
void uring_conn_shutdown(struct uring_conn *c);
/* Drops the owner's reference (see the header comment).  c is gone for the
 * caller; fd may be closed after this returns. */
void uring_conn_close(struct uring_conn *c);

#endif
