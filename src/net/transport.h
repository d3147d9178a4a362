/*
 * transport.h - the byte stream under a proxied connection: plain TCP today,
 * TLS (src/net/tls.c) behind the same ops.
 *
 * Every read, write and close of a client or upstream connection in the
 * proxy goes through a struct transport.  All calls are non-blocking and
 * run on the worker that owns the connection (one thread per transport, no
 * locking).  The fd is registered edge-triggered for both directions
 * (LOOP_READ|LOOP_WRITE); a transport may need the *other* direction to make
 * progress (a TLS read that must send, a TLS write that must receive), so on
 * -1/EAGAIN it says in t->want which event it waits for (EPOLLIN or
 * EPOLLOUT), and the owner retries the blocked side when that event comes.
 * A plain transport only ever wants the direction of the call.
 *
 * Ownership: the owner creates the socket, picks the transport for it (the
 * proxy's two choosers: proxy_transport_accept / proxy_transport_upstream),
 * and when it closes: ops->shutdown (orderly close only), ops->free, then
 * close(fd).  The transport never closes the fd.
 */
#ifndef NET_TRANSPORT_H
#define NET_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct transport;

struct transport_ops {
	/*
	 * Reads up to len bytes: > 0 the count, 0 at EOF, -1 with errno
	 * (EAGAIN: wait for t->want).  A short read (0 < n < len) promises
	 * that nothing more was available at that moment, so an edge-triggered
	 * owner may stop reading there: an implementation that buffers (TLS)
	 * must keep going until len is filled or it needs the socket.
	 */
	ssize_t (*read)(struct transport *t, void *buf, size_t len);
	/* Writes iov[0..n): the count taken (may be short), or -1 with errno. */
	ssize_t (*writev)(struct transport *t, const struct iovec *iov, int n);
	/*
	 * Drives the handshake: 0 done (plain: at once), -1 + EAGAIN (wait for
	 * t->want), -1 + another errno: failed (close the connection).
	 * Reads and writes are only called once this returned 0.  Once it
	 * does, a server side reads without waiting for EPOLLIN: the
	 * handshake's last read may have taken the client's first bytes too
	 * (TLS read-ahead), and no edge announces bytes already off the socket.
	 */
	int (*handshake)(struct transport *t);
	/* Best-effort orderly end (TLS close_notify); never blocks. */
	void (*shutdown)(struct transport *t);
	/* Releases the implementation's state; the fd stays open. */
	void (*free)(struct transport *t);
};

struct transport {
	const struct transport_ops *ops;
	int fd;
	void *impl;    /* the implementation's state (NULL for plain) */
	uint32_t want; /* EPOLLIN or EPOLLOUT: what the last EAGAIN waits for */
};

/* Makes t a plain TCP transport over fd (no allocation, cannot fail). */
void transport_plain_init(struct transport *t, int fd);

/* The plain ops (for tests, and to tell a plain transport apart). */
extern const struct transport_ops transport_plain_ops;

/*
 * Makes t a plain TCP transport over fd served by the calling thread's
 * io_uring (core/uring.h: batched recv/send; the loop delivers its events
 * once the owner registers fd with loop_io_add).  Returns 0, -ENOTSUP when
 * the thread has no ring (use transport_plain_init), or -ENOMEM.
 */
int transport_uring_init(struct transport *t, int fd);

/* The io_uring plain ops (to tell such a transport apart). */
extern const struct transport_ops transport_uring_ops;

/* Convenience wrappers over t->ops. */
static inline ssize_t transport_read(struct transport *t, void *buf, size_t len)
{
	return t->ops->read(t, buf, len);
}

static inline ssize_t transport_writev(struct transport *t, const struct iovec *iov, int n)
{
	return t->ops->writev(t, iov, n);
}

/* Writes len bytes at p (one iovec).  Same returns as writev. */
ssize_t transport_write(struct transport *t, const void *p, size_t len);

/*
 * Ends t: ops->shutdown when orderly, then ops->free.  The owner closes the
 * fd afterwards.  A transport with no ops (never initialised) is ignored.
 */
void transport_release(struct transport *t, int orderly);

#endif
