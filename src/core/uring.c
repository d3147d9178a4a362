/*
 * uring.c - the io_uring byte-stream engine (uring.h), on the raw syscalls.
 *
 * user_data of a request is its connection's address with the request kind
 * in the low 4 bits (connections are malloc'd, 16-byte aligned); 0 marks a
 * cancel, whose own completion is ignored.  A connection counts one
 * reference for its owner and one per request in flight, and is freed when
 * the owner closed it and the last completion came.
 */
#include "core/uring.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define UR_SQ_ENTRIES 1024u
#define UR_CQ_ENTRIES 8192u
#define UR_SBUF_CACHE 64
#define UR_BGID       0
#define UR_PRIVATE    ((int)URING_RBUFS) /* rbid: the connection's pbuf */

enum ur_kind { UR_CANCEL = 0, UR_RECV = 1, UR_SEND = 2, UR_POLL = 3, UR_WATCH = 4 };
#define UR_KIND_MASK 0xfULL

struct uring_conn {
	struct uring *r;
	int fd;
	int refs; /* the owner's (until close) + one per request in flight */
	uring_wake_fn wake;
	void *arg;
	unsigned bound : 1, recv_armed : 1, poll_armed : 1, send_armed : 1, starved : 1, reof : 1,
	    wblocked : 1, closing : 1, orderly : 1, cancel_sent : 1, own_fd : 1, precv : 1;
	int rerr, serr;
	/* the completed receive being read: provided buffer rbid (UR_PRIVATE:
	 * pbuf), [roff, rlen) */
	int rbid;
	/*
	 * A private receive buffer, used when the shared ones ran out (ENOBUFS):
	 * connections whose owners stopped reading may hold every shared buffer,
	 * and one that must receive to make progress (an upstream's early
	 * answer) must not wait for them.  One per connection at most, freed
	 * when read; so the memory stays bounded by the connections, as the
	 * kernel's socket buffers are.
	 */
	char *pbuf;
	uint32_t roff, rlen;
	/* output: [shead, stail) of sbuf, a send for it queued or in flight */
	char *sbuf;
	uint32_t shead, stail;
	struct io_uring_sqe *send_sqe; /* the send, while not yet submitted */
	uint64_t send_gen;
	unsigned send_idx;                /* its SQ position */
	uint64_t sq_gen;                  /* submit generation of its last fd-using request */
	uint64_t linger_until;            /* orderly close with output: cancel after this */
	struct uring_conn *snext;         /* starved list */
	struct uring_conn *znext, *zprev; /* closed, waiting for completions */
};

struct uring {
	int fd;
	void *ctx;
	/* submission queue */
	unsigned *sq_khead, *sq_ktail, *sq_karray, *sq_kflags;
	unsigned sq_mask, sq_entries, sq_tail;
	struct io_uring_sqe *sqes;
	uint64_t submit_gen; /* counts submissions: a request queued in this
	                        generation has not reached the kernel yet */
	/* completion queue */
	unsigned *cq_khead, *cq_ktail, cq_mask;
	struct io_uring_cqe *cqes;
	void *rings;
	size_t rings_sz, sqes_sz;
	/* provided receive buffers */
	struct io_uring_buf_ring *br;
	size_t br_sz;
	char *rbufs;
	uint16_t br_tail;
	struct uring_conn *starved_head, *starved_tail;
	/* open connections by fd (for the loop to find them) */
	struct uring_conn **byfd;
	int nbyfd;
	struct uring_conn *zombies;
	unsigned nlinger;
	char *sbuf_cache[UR_SBUF_CACHE];
	int nsbuf_cache;
	int watch_armed;
};

static __thread struct uring *tl_ring;

static int sys_setup(unsigned entries, struct io_uring_params *p)
{
	return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags, void *arg,
                     size_t argsz)
{
	return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, arg, argsz);
}

static int sys_register(int fd, unsigned op, void *arg, unsigned n)
{
	return (int)syscall(__NR_io_uring_register, fd, op, arg, n);
}

struct uring *uring_current(void)
{
	return tl_ring;
}

static unsigned sq_unsubmitted(const struct uring *r)
{
	return r->sq_tail - __atomic_load_n(r->sq_khead, __ATOMIC_ACQUIRE);
}

int uring_pending(const struct uring *r)
{
	return sq_unsubmitted(r) > 0;
}

/* Hands the queued requests to the kernel now (no waiting). */
static void submit_now(struct uring *r)
{
	unsigned n = sq_unsubmitted(r);

	while (n) {
		int rc = sys_enter(r->fd, n, 0, 0, NULL, 0);

		if (rc == -1 && errno == EINTR)
			continue;
		if (rc == -1) {
			/* EBUSY/EAGAIN: completions must be reaped first; the next
			 * uring_wait submits what is left */
			break;
		}
		n = sq_unsubmitted(r);
		if (rc == 0)
			break;
	}
	/* a new generation only once everything queued reached the kernel:
	 * until then a closing connection's requests may still name its fd */
	if (!n)
		r->submit_gen++;
}

/* A zeroed SQE at the tail (submits first when the queue is full). */
static struct io_uring_sqe *sqe_get(struct uring *r, unsigned need)
{
	struct io_uring_sqe *sqe;

	if (sq_unsubmitted(r) + need > r->sq_entries)
		submit_now(r);
	sqe = &r->sqes[r->sq_tail & r->sq_mask];
	memset(sqe, 0, sizeof(*sqe));
	r->sq_tail++;
	__atomic_store_n(r->sq_ktail, r->sq_tail, __ATOMIC_RELEASE);
	return sqe;
}

static uint64_t ud_of(struct uring_conn *c, enum ur_kind k)
{
	return (uint64_t)(uintptr_t)c | (uint64_t)k;
}

/* ---- provided buffers ---- */

static void rbuf_give(struct uring *r, int bid)
{
	struct io_uring_buf *b = &r->br->bufs[r->br_tail & (URING_RBUFS - 1)];

	b->addr = (uint64_t)(uintptr_t)(r->rbufs + (size_t)bid * URING_RBUF_SIZE);
	b->len = URING_RBUF_SIZE;
	b->bid = (uint16_t)bid;
	r->br_tail++;
	__atomic_store_n(&r->br->tail, r->br_tail, __ATOMIC_RELEASE);
}

static void arm_recv(struct uring_conn *c);

static void rbuf_return(struct uring *r, int bid)
{
	struct uring_conn *c = r->starved_head;

	rbuf_give(r, bid);
	if (c) {
		r->starved_head = c->snext;
		if (!r->starved_head)
			r->starved_tail = NULL;
		c->snext = NULL;
		c->starved = 0;
		arm_recv(c);
	}
}

static void starve(struct uring_conn *c)
{
	struct uring *r = c->r;

	if (c->starved)
		return;
	c->starved = 1;
	c->snext = NULL;
	if (r->starved_tail)
		r->starved_tail->snext = c;
	else
		r->starved_head = c;
	r->starved_tail = c;
}

static void unstarve(struct uring_conn *c)
{
	struct uring *r = c->r;
	struct uring_conn **pp, *prev = NULL;

	if (!c->starved)
		return;
	for (pp = &r->starved_head; *pp; prev = *pp, pp = &(*pp)->snext) {
		if (*pp == c) {
			*pp = c->snext;
			if (r->starved_tail == c)
				r->starved_tail = prev;
			break;
		}
	}
	c->starved = 0;
	c->snext = NULL;
}

/* The bytes of receive buffer bid of c. */
static char *rbuf_at(const struct uring_conn *c, int bid)
{
	return bid == UR_PRIVATE ? c->pbuf : c->r->rbufs + (size_t)bid * URING_RBUF_SIZE;
}

/* Gives c's receive buffer bid back: to the shared ring, or frees pbuf. */
static void rbuf_release(struct uring_conn *c, int bid)
{
	if (bid == UR_PRIVATE) {
		free(c->pbuf);
		c->pbuf = NULL;
	} else {
		rbuf_return(c->r, bid);
	}
}

/* ---- send buffers ---- */

static char *sbuf_get(struct uring *r)
{
	if (r->nsbuf_cache)
		return r->sbuf_cache[--r->nsbuf_cache];
	return malloc(URING_SEND_CAP);
}

static void sbuf_put(struct uring *r, char *b)
{
	if (!b)
		return;
	if (r->nsbuf_cache < UR_SBUF_CACHE)
		r->sbuf_cache[r->nsbuf_cache++] = b;
	else
		free(b);
}

/* ---- requests ---- */

static void arm_recv(struct uring_conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->recv_armed || c->starved || c->reof || c->rerr || c->closing || c->rbid >= 0 ||
	    !c->bound)
		return;
	sqe = sqe_get(c->r, 1);
	sqe->opcode = IORING_OP_RECV;
	sqe->fd = c->fd;
	sqe->len = URING_RBUF_SIZE;
	sqe->flags = IOSQE_BUFFER_SELECT;
	sqe->buf_group = UR_BGID;
	sqe->user_data = ud_of(c, UR_RECV);
	c->recv_armed = 1;
	c->refs++;
	c->sq_gen = c->r->submit_gen;
}

/* A recv into a private buffer (the shared ones ran out); starves when
 * even that cannot be had, re-armed when a shared buffer comes back. */
static void arm_recv_private(struct uring_conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->recv_armed || c->starved || c->reof || c->rerr || c->closing || c->rbid >= 0 ||
	    !c->bound)
		return;
	if (!c->pbuf)
		c->pbuf = malloc(URING_RBUF_SIZE);
	if (!c->pbuf) {
		starve(c);
		return;
	}
	sqe = sqe_get(c->r, 1);
	sqe->opcode = IORING_OP_RECV;
	sqe->fd = c->fd;
	sqe->addr = (uint64_t)(uintptr_t)c->pbuf;
	sqe->len = URING_RBUF_SIZE;
	sqe->user_data = ud_of(c, UR_RECV);
	c->recv_armed = 1;
	c->precv = 1;
	c->refs++;
	c->sq_gen = c->r->submit_gen;
}

static void queue_send(struct uring_conn *c)
{
	struct io_uring_sqe *sqe = sqe_get(c->r, 1);

	sqe->opcode = IORING_OP_SEND;
	sqe->fd = c->fd;
	sqe->addr = (uint64_t)(uintptr_t)(c->sbuf + c->shead);
	sqe->len = c->stail - c->shead;
	sqe->msg_flags = MSG_NOSIGNAL;
	sqe->user_data = ud_of(c, UR_SEND);
	c->send_armed = 1;
	c->send_sqe = sqe;
	c->send_gen = c->r->submit_gen;
	c->send_idx = c->r->sq_tail - 1;
	c->refs++;
	c->sq_gen = c->r->submit_gen;
}

/* 1 while c's queued send has not reached the kernel (its SQE may change). */
static int send_unsubmitted(const struct uring_conn *c)
{
	const struct uring *r = c->r;

	return c->send_sqe && c->send_gen == r->submit_gen &&
	       (int)(c->send_idx - __atomic_load_n(r->sq_khead, __ATOMIC_ACQUIRE)) >= 0 &&
	       c->send_sqe->user_data == ud_of((struct uring_conn *)c, UR_SEND);
}

static void queue_cancel(struct uring_conn *c, enum ur_kind k)
{
	struct io_uring_sqe *sqe = sqe_get(c->r, 1);

	sqe->opcode = IORING_OP_ASYNC_CANCEL;
	sqe->fd = -1;
	sqe->addr = ud_of(c, k);
	sqe->user_data = 0;
}

/* ---- connections ---- */

struct uring_conn *uring_conn_new(struct uring *r, int fd)
{
	struct uring_conn *c;

	if (fd < 0)
		return NULL;
	if (fd >= r->nbyfd) {
		int n = r->nbyfd ? r->nbyfd : 1024;
		struct uring_conn **t;

		while (n <= fd)
			n *= 2;
		t = realloc(r->byfd, (size_t)n * sizeof(*t));
		if (!t)
			return NULL;
		memset(t + r->nbyfd, 0, (size_t)(n - r->nbyfd) * sizeof(*t));
		r->byfd = t;
		r->nbyfd = n;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->r = r;
	c->fd = fd;
	c->refs = 1;
	c->rbid = -1;
	r->byfd[fd] = c;
	return c;
}

struct uring_conn *uring_conn_of_fd(struct uring *r, int fd)
{
	return fd >= 0 && fd < r->nbyfd ? r->byfd[fd] : NULL;
}

void uring_conn_bind(struct uring_conn *c, uring_wake_fn wake, void *arg)
{
	struct io_uring_sqe *sqe;

	c->wake = wake;
	c->arg = arg;
	if (c->bound || c->closing)
		return;
	c->bound = 1;
	/* writable (connected) first, then the first recv: linked, so a
	 * connecting socket is not read before it is up */
	sqe = sqe_get(c->r, 2);
	sqe->opcode = IORING_OP_POLL_ADD;
	sqe->fd = c->fd;
	sqe->poll32_events = POLLOUT | POLLERR | POLLHUP;
	sqe->flags = IOSQE_IO_LINK;
	sqe->user_data = ud_of(c, UR_POLL);
	c->poll_armed = 1;
	c->refs++;
	c->sq_gen = c->r->submit_gen;
	arm_recv(c);
}

void uring_conn_unbind(struct uring_conn *c)
{
	c->wake = NULL;
	c->arg = NULL;
}

ssize_t uring_conn_read(struct uring_conn *c, void *buf, size_t len)
{
	if (c->rbid >= 0) {
		size_t n = c->rlen - c->roff;

		if (n > len)
			n = len;
		memcpy(buf, rbuf_at(c, c->rbid) + c->roff, n);
		c->roff += (uint32_t)n;
		if (c->roff == c->rlen) {
			rbuf_release(c, c->rbid);
			c->rbid = -1;
			arm_recv(c);
		}
		return (ssize_t)n;
	}
	if (c->rerr) {
		errno = c->rerr;
		return -1;
	}
	if (c->reof)
		return 0;
	errno = EAGAIN;
	return -1;
}

ssize_t uring_conn_writev(struct uring_conn *c, const struct iovec *iov, int n)
{
	size_t room, took = 0;

	if (c->serr) {
		errno = c->serr;
		return -1;
	}
	if (!c->sbuf) {
		c->sbuf = sbuf_get(c->r);
		if (!c->sbuf) {
			errno = ENOMEM;
			return -1;
		}
	}
	if (!c->send_armed && c->shead) {
		memmove(c->sbuf, c->sbuf + c->shead, c->stail - c->shead);
		c->stail -= c->shead;
		c->shead = 0;
	}
	room = URING_SEND_CAP - c->stail;
	for (int i = 0; i < n && room; i++) {
		size_t k = iov[i].iov_len < room ? iov[i].iov_len : room;

		memcpy(c->sbuf + c->stail, iov[i].iov_base, k);
		c->stail += (uint32_t)k;
		room -= k;
		took += k;
	}
	if (!took) {
		for (int i = 0; i < n; i++)
			if (iov[i].iov_len) {
				c->wblocked = 1;
				errno = EAGAIN;
				return -1;
			}
		return 0;
	}
	if (!c->send_armed)
		queue_send(c);
	else if (send_unsubmitted(c))
		c->send_sqe->len = c->stail - c->shead; /* not submitted yet: it grows */
	return (ssize_t)took;
}

void uring_conn_shutdown(struct uring_conn *c)
{
	c->orderly = 1;
}

static void conn_maybe_free(struct uring_conn *c)
{
	struct uring *r = c->r;

	if (!c->closing || c->refs > 0)
		return;
	if (c->rbid >= 0)
		rbuf_release(c, c->rbid);
	free(c->pbuf); /* a private recv's buffer, its completion arrived */
	sbuf_put(r, c->sbuf);
	if (c->own_fd)
		close(c->fd);
	if (c->linger_until)
		r->nlinger--;
	if (c->zprev)
		c->zprev->znext = c->znext;
	else
		r->zombies = c->znext;
	if (c->znext)
		c->znext->zprev = c->zprev;
	free(c);
}

void uring_conn_close(struct uring_conn *c)
{
	struct uring *r = c->r;
	int flush = c->sq_gen == r->submit_gen && uring_pending(r);

	if (c->fd >= 0 && c->fd < r->nbyfd && r->byfd[c->fd] == c)
		r->byfd[c->fd] = NULL;
	c->wake = NULL;
	c->closing = 1;
	unstarve(c);
	if (c->rbid >= 0) {
		rbuf_release(c, c->rbid);
		c->rbid = -1;
	}
	if (c->poll_armed)
		queue_cancel(c, UR_POLL); /* its linked recv is cancelled with it */
	if (c->recv_armed)
		queue_cancel(c, UR_RECV);
	if (c->send_armed && !c->orderly) {
		queue_cancel(c, UR_SEND);
		c->cancel_sent = 1;
	} else if (c->send_armed) {
		/* the rest of the output may need more sends after the owner
		 * closed its fd: they go through a duplicate the zombie owns */
		int d = fcntl(c->fd, F_DUPFD_CLOEXEC, 0);

		if (d >= 0) {
			c->fd = d;
			c->own_fd = 1;
			c->linger_until = UINT64_MAX; /* set from the clock by uring_wait */
			r->nlinger++;
		} else {
			queue_cancel(c, UR_SEND);
			c->cancel_sent = 1;
		}
	}
	c->znext = r->zombies;
	c->zprev = NULL;
	if (r->zombies)
		r->zombies->zprev = c;
	r->zombies = c;
	c->refs--;
	/* requests naming the fd must reach the kernel before the fd is closed */
	if (flush)
		submit_now(r);
	conn_maybe_free(c);
}

/* Calls the owner with a reference held, so its close cannot free c here. */
static void deliver(struct uring_conn *c, uint32_t ev)
{
	if (!c->wake)
		return;
	c->refs++;
	c->wake(c->r->ctx, c->arg, ev);
	c->refs--;
	conn_maybe_free(c);
}

static void on_recv(struct uring_conn *c, int res, uint32_t flags)
{
	int bid = flags & IORING_CQE_F_BUFFER ? (int)(flags >> IORING_CQE_BUFFER_SHIFT) : -1;
	uint32_t ev = URING_EV_READ;

	if (c->precv) /* into c->pbuf */
		bid = UR_PRIVATE;
	c->precv = 0;
	c->recv_armed = 0;
	c->refs--;
	if (c->closing) {
		if (bid >= 0)
			rbuf_release(c, bid);
		conn_maybe_free(c);
		return;
	}
	if (res > 0 && bid >= 0) {
		c->rbid = bid;
		c->roff = 0;
		c->rlen = (uint32_t)res;
	} else {
		if (bid >= 0)
			rbuf_release(c, bid);
		if (res == -ENOBUFS) {
			arm_recv_private(c); /* or, out of memory, wait for a shared one */
			return;
		}
		if (res == -EINTR || res == -EAGAIN) {
			arm_recv(c);
			return;
		}
		if (res == 0) {
			c->reof = 1;
			ev |= URING_EV_RDHUP;
		} else {
			c->rerr = res < 0 ? -res : EIO;
			ev |= URING_EV_ERROR;
		}
	}
	deliver(c, ev);
}

static void on_send(struct uring_conn *c, int res)
{
	c->send_armed = 0;
	c->send_sqe = NULL;
	c->refs--;
	if (res < 0 && (res == -EINTR || res == -EAGAIN) && !c->cancel_sent) {
		queue_send(c);
		return;
	}
	if (res < 0) {
		c->serr = -res;
		c->shead = c->stail = 0;
		if (!c->closing)
			deliver(c, URING_EV_READ | URING_EV_WRITE | URING_EV_ERROR);
		else
			conn_maybe_free(c);
		return;
	}
	c->shead += (uint32_t)res;
	if (c->shead < c->stail) {
		queue_send(c);
	} else {
		c->shead = c->stail = 0;
		if (!c->closing) {
			/* idle: hold no send buffer */
			sbuf_put(c->r, c->sbuf);
			c->sbuf = NULL;
		}
	}
	if (c->closing) {
		conn_maybe_free(c);
		return;
	}
	if (c->wblocked && c->stail - c->shead < URING_SEND_CAP) {
		c->wblocked = 0;
		deliver(c, URING_EV_WRITE);
	}
}

static void on_poll(struct uring_conn *c, int res)
{
	uint32_t ev = URING_EV_WRITE;

	c->poll_armed = 0;
	c->refs--;
	if (c->closing) {
		conn_maybe_free(c);
		return;
	}
	if (res < 0 || (res & (POLLERR | POLLHUP)))
		ev |= URING_EV_ERROR | URING_EV_READ;
	deliver(c, ev);
}

/* ---- the ring ---- */

int uring_wait(struct uring *r, int timeout_ms, uint64_t now_ms)
{
	struct __kernel_timespec ts;
	struct io_uring_getevents_arg arg = {.sigmask_sz = _NSIG / 8};
	unsigned head, tail;
	int rc;

	if (r->nlinger) {
		/* orderly closes whose output is stuck (the peer stopped reading) */
		for (struct uring_conn *c = r->zombies; c; c = c->znext) {
			if (!c->linger_until || !c->send_armed || c->cancel_sent)
				continue;
			if (c->linger_until == UINT64_MAX) {
				c->linger_until = now_ms + URING_LINGER_MS;
			} else if (now_ms >= c->linger_until) {
				queue_cancel(c, UR_SEND);
				c->cancel_sent = 1;
			}
		}
		if (timeout_ms < 0 || timeout_ms > 1000)
			timeout_ms = 1000;
	}
	head = *r->cq_khead;
	tail = __atomic_load_n(r->cq_ktail, __ATOMIC_ACQUIRE);
	if (head != tail)
		timeout_ms = 0; /* completions wait already */
	if (timeout_ms > 0) {
		ts.tv_sec = timeout_ms / 1000;
		ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
		arg.ts = (uint64_t)(uintptr_t)&ts;
	}
	do
		rc = sys_enter(r->fd, sq_unsubmitted(r), timeout_ms ? 1 : 0,
		               IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg, sizeof(arg));
	while (rc == -1 && errno == EINTR && timeout_ms == 0);
	if (!uring_pending(r))
		r->submit_gen++;
	if (rc == -1 && errno != EINTR && errno != ETIME && errno != EBUSY && errno != EAGAIN)
		return -errno;
	return 0;
}

int uring_dispatch(struct uring *r, uint64_t now_ms)
{
	int fired = 0;

	for (;;) {
		unsigned head = *r->cq_khead;
		struct io_uring_cqe cqe;
		struct uring_conn *c;

		if (head == __atomic_load_n(r->cq_ktail, __ATOMIC_ACQUIRE))
			break;
		cqe = r->cqes[head & r->cq_mask];
		__atomic_store_n(r->cq_khead, head + 1, __ATOMIC_RELEASE);
		c = (struct uring_conn *)(uintptr_t)(cqe.user_data & ~UR_KIND_MASK);
		switch (cqe.user_data & UR_KIND_MASK) {
		case UR_RECV:
			on_recv(c, cqe.res, cqe.flags);
			break;
		case UR_SEND:
			on_send(c, cqe.res);
			break;
		case UR_POLL:
			on_poll(c, cqe.res);
			break;
		case UR_WATCH:
			r->watch_armed = 0;
			fired = 1;
			break;
		default:
			break; /* a cancel's own completion */
		}
	}
	(void)now_ms;
	return fired;
}

void uring_watch(struct uring *r, int fd)
{
	struct io_uring_sqe *sqe;

	if (r->watch_armed)
		return;
	sqe = sqe_get(r, 1);
	sqe->opcode = IORING_OP_POLL_ADD;
	sqe->fd = fd;
	sqe->poll32_events = POLLIN;
	sqe->user_data = (uint64_t)(uintptr_t)r | UR_WATCH;
	r->watch_armed = 1;
}

static void ring_unmap(struct uring *r)
{
	if (r->rings && r->rings != MAP_FAILED)
		munmap(r->rings, r->rings_sz);
	if (r->sqes && (void *)r->sqes != MAP_FAILED)
		munmap(r->sqes, r->sqes_sz);
	if (r->br && (void *)r->br != MAP_FAILED)
		munmap(r->br, r->br_sz);
	if (r->rbufs && (void *)r->rbufs != MAP_FAILED)
		munmap(r->rbufs, (size_t)URING_RBUFS * URING_RBUF_SIZE);
}

struct uring *uring_new(void *ctx, char *why, size_t whylen)
{
	struct io_uring_params p;
	struct io_uring_buf_reg reg;
	struct uring *r = calloc(1, sizeof(*r));
	size_t sq_sz, cq_sz;
	const unsigned need = IORING_FEAT_SINGLE_MMAP | IORING_FEAT_NODROP | IORING_FEAT_EXT_ARG;

	if (!r) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	r->ctx = ctx;
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
	          IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
	p.cq_entries = UR_CQ_ENTRIES;
	r->fd = sys_setup(UR_SQ_ENTRIES, &p);
	if (r->fd == -1) {
		snprintf(why, whylen, "io_uring_setup: %s", strerror(errno));
		goto out_free;
	}
	if ((p.features & need) != need) {
		snprintf(why, whylen,
		         "io_uring lacks single mmap, nodrop or ext_arg (kernel too old)");
		goto out_close;
	}
	sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	r->rings_sz = sq_sz > cq_sz ? sq_sz : cq_sz;
	r->rings = mmap(NULL, r->rings_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
	                IORING_OFF_SQ_RING);
	r->sqes_sz = p.sq_entries * sizeof(struct io_uring_sqe);
	r->sqes = mmap(NULL, r->sqes_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
	               IORING_OFF_SQES);
	if (r->rings == MAP_FAILED || (void *)r->sqes == MAP_FAILED) {
		snprintf(why, whylen, "io_uring mmap: %s", strerror(errno));
		goto out_unmap;
	}
	r->sq_khead = (unsigned *)((char *)r->rings + p.sq_off.head);
	r->sq_ktail = (unsigned *)((char *)r->rings + p.sq_off.tail);
	r->sq_kflags = (unsigned *)((char *)r->rings + p.sq_off.flags);
	r->sq_karray = (unsigned *)((char *)r->rings + p.sq_off.array);
	r->sq_mask = *(unsigned *)((char *)r->rings + p.sq_off.ring_mask);
	r->sq_entries = p.sq_entries;
	r->sq_tail = *r->sq_ktail;
	for (unsigned i = 0; i < p.sq_entries; i++)
		r->sq_karray[i] = i;
	r->cq_khead = (unsigned *)((char *)r->rings + p.cq_off.head);
	r->cq_ktail = (unsigned *)((char *)r->rings + p.cq_off.tail);
	r->cq_mask = *(unsigned *)((char *)r->rings + p.cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)((char *)r->rings + p.cq_off.cqes);

	/* the provided-buffer ring (kernel 5.19+) */
	r->br_sz = URING_RBUFS * sizeof(struct io_uring_buf);
	r->br = mmap(NULL, r->br_sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	r->rbufs = mmap(NULL, (size_t)URING_RBUFS * URING_RBUF_SIZE, PROT_READ | PROT_WRITE,
	                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if ((void *)r->br == MAP_FAILED || (void *)r->rbufs == MAP_FAILED) {
		snprintf(why, whylen, "receive buffers: %s", strerror(errno));
		goto out_unmap;
	}
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)r->br;
	reg.ring_entries = URING_RBUFS;
	reg.bgid = UR_BGID;
	if (sys_register(r->fd, IORING_REGISTER_PBUF_RING, &reg, 1) == -1) {
		snprintf(why, whylen, "io_uring provided buffer ring: %s", strerror(errno));
		goto out_unmap;
	}
	for (unsigned i = 0; i < URING_RBUFS; i++)
		rbuf_give(r, (int)i);
	tl_ring = r;
	return r;

out_unmap:
	ring_unmap(r);
out_close:
	close(r->fd);
out_free:
	free(r);
	return NULL;
}

void uring_free(struct uring *r)
{
	struct uring_conn *c, *next;

	if (!r)
		return;
	if (tl_ring == r)
		tl_ring = NULL;
	/* closing the ring ends every request still in flight */
	close(r->fd);
	for (c = r->zombies; c; c = next) {
		next = c->znext;
		if (c->own_fd)
			close(c->fd);
		free(c->sbuf);
		free(c->pbuf);
		free(c);
	}
	for (int i = 0; i < r->nsbuf_cache; i++)
		free(r->sbuf_cache[i]);
	ring_unmap(r);
	free(r->byfd);
	free(r);
}

int uring_probe(char *why, size_t whylen)
{
	struct uring *prev = tl_ring;
	struct uring *r = uring_new(NULL, why, whylen);

	int ok = r != NULL;

	uring_free(r);
	tl_ring = prev;
	return ok ? 0 : -ENOTSUP;
}
