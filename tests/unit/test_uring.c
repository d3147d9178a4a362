/* The io_uring byte-stream engine (core/uring.h) over TCP loopback pairs,
 * driven without a loop: data both ways and the first WRITE event, EOF, a
 * reset, a peer that stops reading (the send cap, EAGAIN, then the WRITE
 * that resumes it, bytes intact), an abortive close with sends in flight
 * (cancelled, memory freed), an orderly close with output still queued (all
 * of it delivered before the EOF), and a close before anything was
 * submitted.  The .c is included to see the ring's zombie list.  Every wait
 * is bounded (pump_until). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../../src/core/uring.c"

struct owner {
	uint32_t events; /* every event seen, or-ed */
	int nwrite, nread;
};

static void owner_wake(void *ctx, void *arg, uint32_t ev)
{
	struct owner *o = arg;

	o->events |= ev;
	if (ev & URING_EV_WRITE)
		o->nwrite++;
	if (ev & URING_EV_READ)
		o->nread++;
}

struct fx {
	struct uring *r;
	int a, b; /* a: served by the ring, b: the peer, blocking */
	struct uring_conn *c;
	struct owner o;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A connected TCP loopback pair: *a non-blocking, *b blocking. */
static void tcp_pair(int *a, int *b)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	assert_true(l >= 0);
	assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(l, 4), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &sl), 0);
	*b = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(*b, (struct sockaddr *)&sa, sizeof(sa)), 0);
	*a = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	assert_true(*a >= 0);
	setsockopt(*a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	close(l);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char why[160];

	if (!f)
		return -1;
	f->r = uring_new(NULL, why, sizeof(why));
	if (!f->r) {
		fprintf(stderr, "io_uring unavailable: %s\n", why);
		return -1;
	}
	tcp_pair(&f->a, &f->b);
	f->c = uring_conn_new(f->r, f->a);
	assert_non_null(f->c);
	assert_ptr_equal(uring_conn_of_fd(f->r, f->a), f->c);
	uring_conn_bind(f->c, owner_wake, &f->o);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	if (f->c)
		uring_conn_close(f->c);
	if (f->a >= 0)
		close(f->a);
	if (f->b >= 0)
		close(f->b);
	uring_free(f->r);
	free(f);
	return 0;
}

/* One turn: submit, wait up to 10 ms, dispatch. */
static void pump(struct fx *f)
{
	assert_int_equal(uring_wait(f->r, 10, now_ms()), 0);
	uring_dispatch(f->r, now_ms());
}

/* Turns until the owner saw one of the events in mask, at most 5 s. */
static void pump_until(struct fx *f, uint32_t mask)
{
	uint64_t until = now_ms() + 5000;

	while (!(f->o.events & mask) && now_ms() < until)
		pump(f);
	assert_true(f->o.events & mask);
}

/* Turns until the ring holds no closed connection, at most 5 s. */
static void pump_until_no_zombies(struct fx *f)
{
	uint64_t until = now_ms() + 5000;

	while (f->r->zombies && now_ms() < until)
		pump(f);
	assert_null(f->r->zombies);
}

static void test_data_both_ways(void **state)
{
	struct fx *f = *state;
	char buf[64];
	ssize_t n;

	pump_until(f, URING_EV_WRITE); /* connected: the first WRITE, as epoll's first edge */
	assert_int_equal(uring_conn_read(f->c, buf, sizeof(buf)), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(write(f->b, "hello", 5), 5);
	pump_until(f, URING_EV_READ);
	n = uring_conn_read(f->c, buf, 2);
	assert_int_equal(n, 2); /* a full read: the rest stays for the next call */
	n = uring_conn_read(f->c, buf + 2, sizeof(buf) - 2);
	assert_int_equal(n, 3);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(uring_conn_read(f->c, buf, sizeof(buf)), -1);
	assert_int_equal(errno, EAGAIN);

	{
		struct iovec iov[2] = {{.iov_base = "wor", .iov_len = 3},
		                       {.iov_base = "ld", .iov_len = 2}};

		assert_int_equal(uring_conn_writev(f->c, iov, 2), 5);
	}
	pump(f);
	assert_int_equal(read(f->b, buf, sizeof(buf)), 5);
	assert_memory_equal(buf, "world", 5);

	/* more data after the buffer was given back: a new READ */
	f->o.events = 0;
	assert_int_equal(write(f->b, "again", 5), 5);
	pump_until(f, URING_EV_READ);
	assert_int_equal(uring_conn_read(f->c, buf, sizeof(buf)), 5);
}

static void test_eof(void **state)
{
	struct fx *f = *state;
	char buf[16];

	assert_int_equal(write(f->b, "x", 1), 1);
	shutdown(f->b, SHUT_WR);
	pump_until(f, URING_EV_READ);
	assert_int_equal(uring_conn_read(f->c, buf, sizeof(buf)), 1);
	/* the EOF is reported once the data before it was read */
	pump_until(f, URING_EV_RDHUP);
	assert_int_equal(uring_conn_read(f->c, buf, sizeof(buf)), 0);
	assert_int_equal(uring_conn_read(f->c, buf, sizeof(buf)), 0); /* stays at EOF */
	/* half-closed: the other direction still works */
	assert_int_equal(uring_conn_writev(f->c, &(struct iovec){"ok", 2}, 1), 2);
	pump(f);
	assert_int_equal(read(f->b, buf, sizeof(buf)), 2);
}

static void test_reset(void **state)
{
	struct fx *f = *state;
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	char buf[16];
	ssize_t n;

	pump_until(f, URING_EV_WRITE);
	setsockopt(f->b, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(f->b);
	f->b = -1;
	pump_until(f, URING_EV_ERROR);
	n = uring_conn_read(f->c, buf, sizeof(buf));
	assert_int_equal(n, -1);
	assert_int_equal(errno, ECONNRESET);
	/* a send to the reset socket fails, and the failure reaches writev */
	{
		uint64_t until = now_ms() + 5000;

		int err = 0;

		n = 0;
		while (n != -1 && now_ms() < until) {
			n = uring_conn_writev(f->c, &(struct iovec){"zz", 2}, 1);
			err = errno;
			pump(f);
		}
		assert_int_equal(n, -1);
		assert_true(err == EPIPE || err == ECONNRESET);
	}
}

/* Fills the connection until writev says EAGAIN; returns the bytes taken.
 * Byte k of the stream is (k * 7) & 0xff. */
static size_t fill(struct fx *f, size_t *sent)
{
	char chunk[16384];
	uint64_t until = now_ms() + 5000;
	size_t took = 0;
	int small = 16384;

	/* small kernel buffers: the peer's window fills after a few chunks */
	setsockopt(f->a, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	setsockopt(f->b, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));

	for (;;) {
		ssize_t n;

		for (size_t i = 0; i < sizeof(chunk); i++)
			chunk[i] = (char)(((*sent + i) * 7) & 0xff);
		n = uring_conn_writev(f->c, &(struct iovec){chunk, sizeof(chunk)}, 1);
		if (n == -1) {
			assert_int_equal(errno, EAGAIN);
			return took;
		}
		*sent += (size_t)n;
		took += (size_t)n;
		pump(f); /* the sends go out until the kernel's buffers are full */
		assert_true(now_ms() < until);
	}
}

static void test_send_cap_then_resume(void **state)
{
	struct fx *f = *state;
	size_t sent = 0, got = 0;

	pump_until(f, URING_EV_WRITE);
	f->o.events = 0;
	fill(f, &sent);
	/* the cap holds: what is not in the kernel is at most URING_SEND_CAP */
	assert_true(f->c->stail - f->c->shead <= URING_SEND_CAP);
	assert_true(f->c->wblocked);
	assert_false(f->o.events & URING_EV_WRITE);
	/* the peer reads everything: room comes back, the owner hears WRITE */
	{
		uint64_t until = now_ms() + 5000;

		while (!(f->o.events & URING_EV_WRITE) && now_ms() < until) {
			char buf[65536];
			ssize_t n = recv(f->b, buf, sizeof(buf), MSG_DONTWAIT);

			if (n > 0) {
				for (ssize_t i = 0; i < n; i++)
					assert_int_equal((unsigned char)buf[i],
					                 ((got + (size_t)i) * 7) & 0xff);
				got += (size_t)n;
			}
			pump(f);
		}
	}
	assert_true(f->o.events & URING_EV_WRITE);
	/* and writing works again; every byte arrives, in order */
	fill(f, &sent);
	{
		uint64_t until = now_ms() + 5000;

		while (got < sent && now_ms() < until) {
			char buf[65536];
			ssize_t n = recv(f->b, buf, sizeof(buf), MSG_DONTWAIT);

			if (n > 0) {
				for (ssize_t i = 0; i < n; i++)
					assert_int_equal((unsigned char)buf[i],
					                 ((got + (size_t)i) * 7) & 0xff);
				got += (size_t)n;
			}
			pump(f);
		}
	}
	assert_int_equal(got, sent);
}

static void test_abort_close_cancels_sends(void **state)
{
	struct fx *f = *state;
	size_t sent = 0;

	pump_until(f, URING_EV_WRITE);
	fill(f, &sent);
	assert_true(f->c->send_armed); /* a send waits in the kernel for room */
	uring_conn_close(f->c);        /* abortive: no uring_conn_shutdown */
	f->c = NULL;
	assert_null(uring_conn_of_fd(f->r, f->a));
	close(f->a);
	f->a = -1;
	assert_non_null(f->r->zombies); /* kept until its completions come */
	pump_until_no_zombies(f);
}

static void test_orderly_close_delivers_output(void **state)
{
	struct fx *f = *state;
	size_t sent = 0, got = 0;
	char buf[16];

	pump_until(f, URING_EV_WRITE);
	fill(f, &sent);
	uring_conn_shutdown(f->c);
	uring_conn_close(f->c);
	f->c = NULL;
	close(f->a); /* the ring's in-flight send keeps the socket open */
	f->a = -1;
	{
		uint64_t until = now_ms() + 5000;

		while (got < sent && now_ms() < until) {
			char rb[65536];
			ssize_t n = recv(f->b, rb, sizeof(rb), MSG_DONTWAIT);

			if (n > 0) {
				for (ssize_t i = 0; i < n; i++)
					assert_int_equal((unsigned char)rb[i],
					                 ((got + (size_t)i) * 7) & 0xff);
				got += (size_t)n;
			}
			pump(f);
		}
	}
	assert_int_equal(got, sent);
	pump_until_no_zombies(f);
	/* then the FIN: the socket closed once the last send completed */
	assert_int_equal(read(f->b, buf, sizeof(buf)), 0);
}

/*
 * Every shared receive buffer held by connections whose owners stopped
 * reading (as when many uploads wait on slow upstreams): another connection
 * must still receive (a private buffer), never wait for them, and every
 * byte of the holders must still be there afterwards.
 */
static void test_receive_when_shared_buffers_run_out(void **state)
{
	enum { HOLD = URING_RBUFS + 4 };
	struct fx *f = *state;
	struct owner ho[HOLD];
	struct uring_conn *hc[HOLD];
	int ha[HOLD], hb[HOLD], held = 0;
	char buf[64];
	uint64_t until = now_ms() + 5000;

	memset(ho, 0, sizeof(ho));
	for (int i = 0; i < HOLD; i++) {
		tcp_pair(&ha[i], &hb[i]);
		hc[i] = uring_conn_new(f->r, ha[i]);
		assert_non_null(hc[i]);
		uring_conn_bind(hc[i], owner_wake, &ho[i]);
		assert_int_equal(write(hb[i], "held", 4), 4);
	}
	/* each completed receive holds its buffer: nobody reads them */
	while (now_ms() < until) {
		held = 0;
		pump(f);
		for (int i = 0; i < HOLD; i++)
			held += (ho[i].events & URING_EV_READ) != 0;
		if (held == HOLD)
			break;
	}
	assert_int_equal(held, HOLD); /* more than the shared buffers: some private */
	assert_int_equal(write(f->b, "through", 7), 7);
	pump_until(f, URING_EV_READ);
	assert_int_equal(uring_conn_read(f->c, buf, sizeof(buf)), 7);
	assert_memory_equal(buf, "through", 7);
	for (int i = 0; i < HOLD; i++) {
		assert_int_equal(uring_conn_read(hc[i], buf, sizeof(buf)), 4);
		assert_memory_equal(buf, "held", 4);
		uring_conn_close(hc[i]);
		close(ha[i]);
		close(hb[i]);
	}
	pump_until_no_zombies(f);
}

static void test_close_before_submit(void **state)
{
	struct fx *f = *state;
	char buf[8];
	int a2, b2;
	struct uring_conn *c2;

	/* queued (bind's poll and recv, and a send) but never submitted: close
	 * must hand them to the kernel before the fd goes away */
	tcp_pair(&a2, &b2);
	c2 = uring_conn_new(f->r, a2);
	assert_non_null(c2);
	uring_conn_bind(c2, owner_wake, &f->o);
	assert_int_equal(uring_conn_writev(c2, &(struct iovec){"bye", 3}, 1), 3);
	assert_true(uring_pending(f->r));
	uring_conn_shutdown(c2);
	uring_conn_close(c2);
	close(a2);
	pump_until_no_zombies(f);
	assert_int_equal(read(b2, buf, sizeof(buf)), 3);
	assert_memory_equal(buf, "bye", 3);
	assert_int_equal(read(b2, buf, sizeof(buf)), 0);
	close(b2);
}

int main(void)
{
	char why[160];
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_data_both_ways, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_eof, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_send_cap_then_resume, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_abort_close_cancels_sends, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_orderly_close_delivers_output, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_before_submit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_receive_when_shared_buffers_run_out, setup,
	                                    teardown),
	};

	/* a kernel or sandbox without io_uring: ctest reports a skip (77), not a pass */
	if (uring_probe(why, sizeof(why)) != 0) {
		fprintf(stderr, "test_uring skipped: io_uring unavailable here: %s\n", why);
		return 77;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
