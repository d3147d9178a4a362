#include "core/loop.h"

#include "core/uring.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 256

struct post_item {
	struct post_item *next;
	loop_post_fn fn;
	void *arg;
};

struct loop {
	int epfd;
	int stop;
	atomic_int stop_req;
	uint64_t now_ms;
	uint64_t wall_ms;

	struct loop_timer **heap;
	uint32_t heap_len, heap_cap;

	struct loop_defer *defer_head, *defer_tail;

	/* cross-thread queue, woken by an eventfd */
	struct loop_io wake_io;
	pthread_mutex_t post_lock;
	struct post_item *post_head, *post_tail;

	void (*prepare)(struct loop *loop, void *data);
	void *prepare_data;

	struct loop_io sig_io;
	loop_signal_cb sig_cb;
	void *sig_data;

	/* io_uring mode (loop_uring_enable): the turn waits in the ring */
	struct uring *ring;
	int ep_more; /* the last epoll_wait was full: read the epoll set again */
};

uint64_t clock_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t clock_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t clock_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void loop_update_time(struct loop *loop)
{
	loop->now_ms = clock_mono_ms();
	loop->wall_ms = clock_wall_ms();
}

uint64_t loop_now_ms(const struct loop *loop)
{
	return loop->now_ms;
}

uint64_t loop_wall_ms(const struct loop *loop)
{
	return loop->wall_ms;
}

static void loop_run_posted(struct loop *loop)
{
	struct post_item *it, *next;

	pthread_mutex_lock(&loop->post_lock);
	it = loop->post_head;
	loop->post_head = loop->post_tail = NULL;
	pthread_mutex_unlock(&loop->post_lock);
	for (; it; it = next) {
		next = it->next;
		it->fn(loop, it->arg);
		free(it);
	}
}

static void wake_cb(struct loop *loop, struct loop_io *io, uint32_t events)
{
	uint64_t v;

	while (read(io->fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
		;
	loop_run_posted(loop);
}

struct loop *loop_new(void)
{
	struct loop *loop = calloc(1, sizeof(*loop));
	int efd;

	if (!loop)
		return NULL;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd == -1)
		goto out_free;
	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (efd == -1)
		goto out_close_ep;
	pthread_mutex_init(&loop->post_lock, NULL);
	atomic_init(&loop->stop_req, 0);
	loop->sig_io.fd = -1;
	loop_update_time(loop);
	if (loop_io_add(loop, &loop->wake_io, efd, wake_cb, NULL) != 0)
		goto out_close_efd;
	return loop;

out_close_efd:
	close(efd);
	pthread_mutex_destroy(&loop->post_lock);
out_close_ep:
	close(loop->epfd);
out_free:
	free(loop);
	return NULL;
}

void loop_free(struct loop *loop)
{
	struct post_item *it, *next;

	if (!loop)
		return;
	for (it = loop->post_head; it; it = next) {
		next = it->next;
		free(it);
	}
	close(loop->wake_io.fd);
	if (loop->sig_io.fd != -1)
		close(loop->sig_io.fd);
	close(loop->epfd);
	uring_free(loop->ring);
	pthread_mutex_destroy(&loop->post_lock);
	free(loop->heap);
	free(loop);
}

/* A ring connection's event, delivered as epoll's would be. */
static void loop_uring_wake(void *ctx, void *arg, uint32_t events)
{
	struct loop_io *io = arg;

	if (io->cb)
		io->cb(ctx, io, events);
}

int loop_uring_enable(struct loop *loop, char *why, size_t whylen)
{
	_Static_assert(URING_EV_READ == LOOP_READ && URING_EV_WRITE == LOOP_WRITE &&
	                   URING_EV_ERROR == LOOP_ERROR && URING_EV_RDHUP == LOOP_RDHUP,
	               "ring events are loop events");
	if (loop->ring)
		return 0;
	loop->ring = uring_new(loop, why, whylen);
	return loop->ring ? 0 : -ENOTSUP;
}

int loop_uring_enabled(const struct loop *loop)
{
	return loop->ring != NULL;
}

int loop_io_add(struct loop *loop, struct loop_io *io, int fd, loop_io_cb cb, void *data)
{
	struct epoll_event ev = {0};

	io->fd = fd;
	io->cb = cb;
	io->data = data;
	io->uc = loop->ring ? uring_conn_of_fd(loop->ring, fd) : NULL;
	if (io->uc) {
		uring_conn_bind(io->uc, loop_uring_wake, io);
		return 0;
	}
	ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
	ev.data.ptr = io;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) == -1)
		return -errno;
	return 0;
}

void loop_io_del(struct loop *loop, struct loop_io *io)
{
	if (io->fd < 0)
		return;
	if (io->uc) {
		uring_conn_unbind(io->uc);
		io->uc = NULL;
		io->cb = NULL;
		return;
	}
	epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
	/* events for io already fetched in this turn are skipped by cb == NULL */
	io->cb = NULL;
}

/* ---- timer heap ---- */

static void heap_swap(struct loop *loop, uint32_t a, uint32_t b)
{
	struct loop_timer *t = loop->heap[a];

	loop->heap[a] = loop->heap[b];
	loop->heap[b] = t;
	loop->heap[a]->heap_idx = a;
	loop->heap[b]->heap_idx = b;
}

static void heap_up(struct loop *loop, uint32_t i)
{
	while (i > 0) {
		uint32_t p = (i - 1) / 2;

		if (loop->heap[p]->key_ms <= loop->heap[i]->key_ms)
			break;
		heap_swap(loop, p, i);
		i = p;
	}
}

static void heap_down(struct loop *loop, uint32_t i)
{
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < loop->heap_len && loop->heap[l]->key_ms < loop->heap[m]->key_ms)
			m = l;
		if (r < loop->heap_len && loop->heap[r]->key_ms < loop->heap[m]->key_ms)
			m = r;
		if (m == i)
			break;
		heap_swap(loop, i, m);
		i = m;
	}
}

void loop_timer_init(struct loop_timer *t, loop_timer_cb cb, void *data)
{
	t->when_ms = t->key_ms = 0;
	t->heap_idx = UINT32_MAX;
	t->cb = cb;
	t->data = data;
}

void loop_timer_stop(struct loop *loop, struct loop_timer *t)
{
	uint32_t i = t->heap_idx;

	if (i == UINT32_MAX)
		return;
	t->heap_idx = UINT32_MAX;
	loop->heap_len--;
	if (i == loop->heap_len)
		return;
	loop->heap[i] = loop->heap[loop->heap_len];
	loop->heap[i]->heap_idx = i;
	heap_up(loop, i);
	heap_down(loop, loop->heap[i]->heap_idx);
}

void loop_timer_start(struct loop *loop, struct loop_timer *t, uint64_t after_ms)
{
	uint64_t when = loop->now_ms + after_ms;

	if (t->heap_idx != UINT32_MAX) {
		t->when_ms = when;
		if (when >= t->key_ms)
			return; /* later: the entry is re-keyed when it comes up */
		t->key_ms = when;
		heap_up(loop, t->heap_idx);
		return;
	}
	if (loop->heap_len == loop->heap_cap) {
		uint32_t ncap = loop->heap_cap ? loop->heap_cap * 2 : 64;
		struct loop_timer **h = realloc(loop->heap, ncap * sizeof(*h));

		/* out of memory for a timer is not recoverable for its owner */
		if (!h)
			abort();
		loop->heap = h;
		loop->heap_cap = ncap;
	}
	t->when_ms = t->key_ms = when;
	t->heap_idx = loop->heap_len;
	loop->heap[loop->heap_len++] = t;
	heap_up(loop, t->heap_idx);
}

static void loop_run_timers(struct loop *loop)
{
	while (loop->heap_len > 0 && loop->heap[0]->key_ms <= loop->now_ms) {
		struct loop_timer *t = loop->heap[0];

		if (t->key_ms < t->when_ms) {
			/* moved later while armed: to its real place (timers that
			 * are due still fire in deadline order) */
			t->key_ms = t->when_ms;
			heap_down(loop, 0);
			continue;
		}
		loop_timer_stop(loop, t);
		t->cb(loop, t);
	}
}

static int loop_next_timeout(struct loop *loop, int timeout_ms)
{
	uint64_t d;

	if (loop->defer_head || loop->stop)
		return 0;
	if (loop->heap_len == 0)
		return timeout_ms;
	/* the first key may belong to a timer moved later: waking early for
	 * it only re-keys it */
	if (loop->heap[0]->key_ms <= loop->now_ms)
		return 0;
	d = loop->heap[0]->key_ms - loop->now_ms;
	if (timeout_ms >= 0 && d > (uint64_t)timeout_ms)
		return timeout_ms;
	return d > 3600000 ? 3600000 : (int)d;
}

/* ---- deferred work ---- */

void loop_defer(struct loop *loop, struct loop_defer *d, loop_defer_cb cb, void *data)
{
	if (d->queued)
		return;
	d->queued = 1;
	d->cb = cb;
	d->data = data;
	d->next = NULL;
	if (loop->defer_tail)
		loop->defer_tail->next = d;
	else
		loop->defer_head = d;
	loop->defer_tail = d;
}

static void loop_run_deferred(struct loop *loop)
{
	/* callbacks may defer more work; it runs in this same drain */
	while (loop->defer_head) {
		struct loop_defer *d = loop->defer_head;

		loop->defer_head = d->next;
		if (!loop->defer_head)
			loop->defer_tail = NULL;
		d->queued = 0;
		d->next = NULL;
		d->cb(loop, d);
	}
}

int loop_post(struct loop *loop, loop_post_fn fn, void *arg)
{
	struct post_item *it = malloc(sizeof(*it));
	uint64_t one = 1;

	if (!it)
		return -ENOMEM;
	it->fn = fn;
	it->arg = arg;
	it->next = NULL;
	pthread_mutex_lock(&loop->post_lock);
	if (loop->post_tail)
		loop->post_tail->next = it;
	else
		loop->post_head = it;
	loop->post_tail = it;
	pthread_mutex_unlock(&loop->post_lock);
	if (write(loop->wake_io.fd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		return -errno;
	return 0;
}

void loop_stop(struct loop *loop)
{
	uint64_t one = 1;

	atomic_store(&loop->stop_req, 1);
	if (write(loop->wake_io.fd, &one, sizeof(one)) == -1)
		return;
}

void loop_set_prepare(struct loop *loop, void (*fn)(struct loop *loop, void *data), void *data)
{
	loop->prepare = fn;
	loop->prepare_data = data;
}

/* ---- signals ---- */

static void sig_cb(struct loop *loop, struct loop_io *io, uint32_t events)
{
	struct signalfd_siginfo si;

	while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (loop->sig_cb)
			loop->sig_cb(loop, (int)si.ssi_signo, loop->sig_data);
	}
}

int loop_signals(struct loop *loop, loop_signal_cb cb, void *data)
{
	sigset_t set;
	int fd, rc;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
		return -EINVAL;
	fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd == -1)
		return -errno;
	loop->sig_cb = cb;
	loop->sig_data = data;
	rc = loop_io_add(loop, &loop->sig_io, fd, sig_cb, NULL);
	if (rc) {
		close(fd);
		loop->sig_io.fd = -1;
	}
	return rc;
}

/* ---- the turn ---- */

static void loop_dispatch_epoll(struct loop *loop, const struct epoll_event *evs, int n)
{
	for (int i = 0; i < n; i++) {
		struct loop_io *io = evs[i].data.ptr;
		uint32_t e = 0;

		if (evs[i].events & (EPOLLIN | EPOLLRDHUP))
			e |= LOOP_READ;
		if (evs[i].events & EPOLLRDHUP)
			e |= LOOP_RDHUP;
		if (evs[i].events & EPOLLOUT)
			e |= LOOP_WRITE;
		if (evs[i].events & (EPOLLERR | EPOLLHUP))
			e |= LOOP_ERROR | LOOP_READ;
		/* an io removed earlier in this turn has cb == NULL but is still
		 * valid memory: its owner frees it only in a deferred callback */
		if (io->cb)
			io->cb(loop, io, e);
	}
}

static void loop_end_turn(struct loop *loop)
{
	loop_run_timers(loop);
	loop_run_deferred(loop);
	if (atomic_exchange(&loop->stop_req, 0))
		loop->stop = 1;
}

/*
 * A turn on the ring: one io_uring_enter submits what the last turn queued
 * and waits; the epoll set is read only when the poll on its fd fired (or
 * the last read of it was full).
 */
static int loop_run_once_uring(struct loop *loop, int timeout_ms)
{
	struct epoll_event evs[LOOP_MAX_EVENTS];
	int rc, n;

	uring_watch(loop->ring, loop->epfd);
	rc = uring_wait(loop->ring, loop->ep_more ? 0 : timeout_ms, loop->now_ms);
	if (rc)
		return rc;
	loop_update_time(loop);
	if (loop->prepare)
		loop->prepare(loop, loop->prepare_data);
	if (uring_dispatch(loop->ring, loop->now_ms) || loop->ep_more) {
		n = epoll_wait(loop->epfd, evs, LOOP_MAX_EVENTS, 0);
		loop->ep_more = n == LOOP_MAX_EVENTS;
		if (n > 0)
			loop_dispatch_epoll(loop, evs, n);
	}
	loop_end_turn(loop);
	return 0;
}

int loop_run_once(struct loop *loop, int timeout_ms)
{
	struct epoll_event evs[LOOP_MAX_EVENTS];
	int n;

	if (loop->ring)
		return loop_run_once_uring(loop, loop_next_timeout(loop, timeout_ms));
	n = epoll_wait(loop->epfd, evs, LOOP_MAX_EVENTS, loop_next_timeout(loop, timeout_ms));
	if (n == -1 && errno != EINTR)
		return -errno;
	loop_update_time(loop);
	if (loop->prepare)
		loop->prepare(loop, loop->prepare_data);
	loop_dispatch_epoll(loop, evs, n);
	loop_end_turn(loop);
	return 0;
}

int loop_run(struct loop *loop)
{
	int rc;

	/* a loop_stop() that came before loop_run() still stops the first turn */
	loop->stop = 0;
	while (!loop->stop) {
		rc = loop_run_once(loop, -1);
		if (rc)
			return rc;
	}
	return 0;
}
