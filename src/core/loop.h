/*
 * loop.h - one epoll event loop per thread.
 *
 * Borrowed shape: Redis ae.c (size), libuv (handle rules).  Properties:
 *  - fds are registered once, edge-triggered, for both directions; a handler
 *    must read/write until EAGAIN.  Interest never changes afterwards, so a
 *    keep-alive request costs no epoll_ctl.
 *  - timers live in a binary min-heap keyed by absolute milliseconds.
 *  - the clock is read once per turn: loop_now_ms() is that cached value.
 *  - loop_defer() runs a callback at the end of the current turn, after every
 *    I/O and timer callback: this is where connections are freed, so no
 *    callback of the same turn ever sees freed memory (STYLE.md 9).
 *  - loop_post() queues a function from any thread and wakes the loop through
 *    an eventfd; the function runs on the loop's thread in its next turn.
 *  - SIGINT/SIGTERM/SIGHUP can be taken by one loop through a signalfd.
 *  - loop_uring_enable() makes the turn wait in io_uring (core/uring.h):
 *    ring connections' sends/receives are batched into that one syscall.
 * Nothing here allocates per event.
 */
#ifndef CORE_LOOP_H
#define CORE_LOOP_H

#include <stddef.h>
#include <stdint.h>

struct loop;
struct loop_io;
struct loop_timer;
struct loop_defer;
struct uring_conn;

/* events passed to an io callback */
#define LOOP_READ  0x1u
#define LOOP_WRITE 0x2u
#define LOOP_ERROR 0x4u /* EPOLLERR or EPOLLHUP; read until EAGAIN/0 to learn more */
#define LOOP_RDHUP 0x8u /* EPOLLRDHUP: the peer sent FIN (with LOOP_READ); read until 0 */

typedef void (*loop_io_cb)(struct loop *loop, struct loop_io *io, uint32_t events);
typedef void (*loop_timer_cb)(struct loop *loop, struct loop_timer *t);
typedef void (*loop_defer_cb)(struct loop *loop, struct loop_defer *d);
typedef void (*loop_post_fn)(struct loop *loop, void *arg);
typedef void (*loop_signal_cb)(struct loop *loop, int signo, void *data);

/* Embedded in the owner's struct; the owner keeps it alive while registered. */
struct loop_io {
	int fd;
	loop_io_cb cb;
	void *data;
	struct uring_conn *uc; /* set by loop_io_add when the loop's ring serves fd */
};

/*
 * Timers are lazy (as HAProxy's and nginx's): re-arming an armed timer to a
 * later deadline only moves when_ms and leaves its heap entry where it is;
 * when that entry comes up, the timer is re-keyed to when_ms instead of
 * firing.  Per-request timeouts pushed forward on every request cost no
 * heap work.  Re-arming earlier, and stopping, update the heap at once.
 */
struct loop_timer {
	uint64_t when_ms;  /* absolute deadline, in the loop's clock */
	uint64_t key_ms;   /* its heap entry's key: <= when_ms while armed */
	uint32_t heap_idx; /* UINT32_MAX when not armed */
	loop_timer_cb cb;
	void *data;
};

struct loop_defer {
	struct loop_defer *next;
	loop_defer_cb cb;
	void *data;
	int queued;
};

/* Creates a loop.  Returns NULL with errno set on failure. */
struct loop *loop_new(void);
/* Frees the loop.  Every io must have been removed and every timer stopped. */
void loop_free(struct loop *loop);

/* Runs until loop_stop().  Returns 0, or a negative errno when epoll fails. */
int loop_run(struct loop *loop);
/* Runs one turn, waiting at most timeout_ms (-1: until an event or timer). */
int loop_run_once(struct loop *loop, int timeout_ms);
/* Makes loop_run() return at the end of the current turn.  Thread-safe. */
void loop_stop(struct loop *loop);

/* The cached monotonic clock of this turn, in milliseconds. */
uint64_t loop_now_ms(const struct loop *loop);
/* The cached wall clock of this turn, in milliseconds since the epoch. */
uint64_t loop_wall_ms(const struct loop *loop);
/* Re-reads the clock (rarely needed: e.g. to measure a long callback). */
void loop_update_time(struct loop *loop);

/*
 * Registers fd for LOOP_READ|LOOP_WRITE, edge-triggered.  io must stay valid
 * until loop_io_del().  fd should be non-blocking.  Returns 0 or -errno.
 * When the loop runs on io_uring and fd is a ring connection (made with
 * uring_conn_new() on this loop's thread, e.g. by transport_uring_init), the
 * ring serves it instead of epoll, with the same event meanings.
 */
int loop_io_add(struct loop *loop, struct loop_io *io, int fd, loop_io_cb cb, void *data);
/* Unregisters io; safe to call from its own callback.  Does not close fd. */
void loop_io_del(struct loop *loop, struct loop_io *io);

/*
 * Makes the loop wait in io_uring_enter (core/uring.h) instead of
 * epoll_wait: one syscall per turn submits the ring's queued sends and
 * receives and reaps their completions; the epoll set (listeners, eventfds,
 * TLS connections) keeps working through a poll on its fd.  Call on the
 * thread that runs the loop, before it serves ring connections.  Returns 0,
 * or -errno with the reason in why (the loop stays on epoll).
 */
int loop_uring_enable(struct loop *loop, char *why, size_t whylen);
/* 1 when loop_uring_enable() succeeded on this loop. */
int loop_uring_enabled(const struct loop *loop);

/* Initialises an unarmed timer. */
void loop_timer_init(struct loop_timer *t, loop_timer_cb cb, void *data);
/*
 * Arms (or re-arms) t to fire after_ms from this turn's clock: it fires at
 * that time, not at any earlier deadline it had.  O(1) when t is armed and
 * the new deadline is not earlier.
 */
void loop_timer_start(struct loop *loop, struct loop_timer *t, uint64_t after_ms);
/* Disarms t; no-op if it is not armed. */
void loop_timer_stop(struct loop *loop, struct loop_timer *t);
static inline int loop_timer_armed(const struct loop_timer *t)
{
	return t->heap_idx != UINT32_MAX;
}

/* Queues d to run at the end of this turn (once, even if queued twice). */
void loop_defer(struct loop *loop, struct loop_defer *d, loop_defer_cb cb, void *data);

/*
 * Queues fn(loop, arg) to run on loop's thread in its next turn.  Callable
 * from any thread.  Returns 0 or -ENOMEM.
 */
int loop_post(struct loop *loop, loop_post_fn fn, void *arg);

/*
 * Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (call it in main
 * before starting any thread so every thread inherits the mask) and delivers
 * them to cb on this loop through a signalfd.  Returns 0 or -errno.
 */
int loop_signals(struct loop *loop, loop_signal_cb cb, void *data);

/*
 * Sets a callback run at the start of every turn, right after the clock is
 * read and before any I/O or timer callback: workers take the current
 * configuration snapshot there.  NULL clears it.
 */
void loop_set_prepare(struct loop *loop, void (*fn)(struct loop *loop, void *data), void *data);

/* Monotonic and wall clocks, read now (not cached). */
uint64_t clock_mono_ms(void);
uint64_t clock_mono_us(void);
uint64_t clock_wall_ms(void);

#endif
