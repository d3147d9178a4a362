/* Unit tests for src/core: loop timers, deferred close, cross-thread posts,
 * buffers with caps, strings, snapshots. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/loop.h"
#include "core/snapshot.h"
#include "core/str.h"

struct order {
	int seq[16];
	int n;
};

struct tagged_timer {
	struct loop_timer t;
	struct order *o;
	int tag;
};

static void tagged_cb(struct loop *loop, struct loop_timer *t)
{
	struct tagged_timer *tt = t->data;

	tt->o->seq[tt->o->n++] = tt->tag;
}

static void test_timers_fire_in_deadline_order(void **state)
{
	struct loop *loop = loop_new();
	struct order o = {{0}, 0};
	struct tagged_timer ts[5];
	const int after[5] = {40, 10, 30, 20, 50};
	uint64_t deadline;

	assert_non_null(loop);
	for (int i = 0; i < 5; i++) {
		ts[i].o = &o;
		ts[i].tag = after[i];
		loop_timer_init(&ts[i].t, tagged_cb, &ts[i]);
		loop_timer_start(loop, &ts[i].t, (uint64_t)after[i]);
	}
	/* stopping one removes it from the heap */
	loop_timer_stop(loop, &ts[2].t);
	assert_false(loop_timer_armed(&ts[2].t));
	deadline = clock_mono_ms() + 2000;
	while (o.n < 4 && clock_mono_ms() < deadline)
		loop_run_once(loop, 100);
	assert_int_equal(o.n, 4);
	assert_int_equal(o.seq[0], 10);
	assert_int_equal(o.seq[1], 20);
	assert_int_equal(o.seq[2], 40);
	assert_int_equal(o.seq[3], 50);
	loop_free(loop);
}

static void test_timer_restart_moves_deadline(void **state)
{
	struct loop *loop = loop_new();
	struct order o = {{0}, 0};
	struct tagged_timer a = {.o = &o, .tag = 1}, b = {.o = &o, .tag = 2};
	uint64_t deadline;

	loop_timer_init(&a.t, tagged_cb, &a);
	loop_timer_init(&b.t, tagged_cb, &b);
	loop_timer_start(loop, &a.t, 10);
	loop_timer_start(loop, &b.t, 30);
	loop_timer_start(loop, &a.t, 60); /* re-arm later than b */
	deadline = clock_mono_ms() + 2000;
	while (o.n < 2 && clock_mono_ms() < deadline)
		loop_run_once(loop, 100);
	assert_int_equal(o.n, 2);
	assert_int_equal(o.seq[0], 2);
	assert_int_equal(o.seq[1], 1);
	loop_free(loop);
}

/* A connection closed by one callback must stay valid memory for every
 * other callback of the same turn; it is freed only by the deferred step. */
struct fake_conn {
	struct loop_io io;
	struct loop_defer d;
	int *freed;
	int *calls_after_close;
	int closed;
};

static void fake_free(struct loop *loop, struct loop_defer *d)
{
	struct fake_conn *c = d->data;

	close(c->io.fd);
	*c->freed += 1;
	free(c);
}

static void fake_close(struct loop *loop, struct fake_conn *c)
{
	if (c->closed)
		return;
	c->closed = 1;
	loop_io_del(loop, &c->io);
	loop_defer(loop, &c->d, fake_free, c);
}

static void fake_io_cb(struct loop *loop, struct loop_io *io, uint32_t ev)
{
	struct fake_conn *c = io->data;
	char b[16];

	if (c->closed)
		*c->calls_after_close += 1;
	while (read(io->fd, b, sizeof(b)) > 0)
		;
	fake_close(loop, c);
}

static void test_deferred_close_runs_after_callbacks(void **state)
{
	struct loop *loop = loop_new();
	int sv[2], freed = 0, after = 0;
	struct fake_conn *c = calloc(1, sizeof(*c));

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	c->freed = &freed;
	c->calls_after_close = &after;
	assert_int_equal(loop_io_add(loop, &c->io, sv[0], fake_io_cb, c), 0);
	assert_int_equal(write(sv[1], "x", 1), 1);
	/* a second close in the same turn is a no-op, the free is queued once */
	for (int i = 0; i < 5 && !freed; i++)
		loop_run_once(loop, 200);
	assert_int_equal(freed, 1);
	assert_int_equal(after, 0);
	close(sv[1]);
	loop_free(loop);
}

static void post_fn(struct loop *loop, void *arg)
{
	int *v = arg;

	*v += 1;
	if (*v == 100)
		loop_stop(loop);
}

static void *poster(void *arg)
{
	void **a = arg;

	for (int i = 0; i < 100; i++)
		assert_int_equal(loop_post(a[0], post_fn, a[1]), 0);
	return NULL;
}

static void test_post_from_other_thread(void **state)
{
	struct loop *loop = loop_new();
	int v = 0;
	void *args[2] = {loop, &v};
	pthread_t th;

	assert_int_equal(pthread_create(&th, NULL, poster, args), 0);
	pthread_join(th, NULL);
	assert_int_equal(loop_run(loop), 0);
	assert_int_equal(v, 100);
	loop_free(loop);
}

static void test_stop_before_run_is_not_lost(void **state)
{
	struct loop *loop = loop_new();

	loop_stop(loop);
	assert_int_equal(loop_run(loop), 0); /* returns instead of blocking */
	loop_free(loop);
}

static void test_buf_cap_and_consume(void **state)
{
	struct buf b;

	buf_init(&b, 10);
	assert_int_equal(buf_append(&b, "hello", 5), 0);
	assert_int_equal(buf_append(&b, "world", 5), 0);
	assert_int_equal(buf_append(&b, "!", 1), -ENOBUFS);
	assert_int_equal(buf_used(&b), 10);
	buf_consume(&b, 5);
	assert_string_equal(buf_cstr(&b), "world");
	/* consumed space is reclaimed, the cap counts unread bytes only */
	assert_int_equal(buf_printf(&b, "%d", 12345), 0);
	assert_string_equal(buf_cstr(&b), "world12345");
	assert_int_equal(buf_printf(&b, "x"), -ENOBUFS);
	buf_release(&b);
}

static void test_str_helpers(void **state)
{
	unsigned long long v;

	assert_true(str_caseeq_c(STR_LIT("Content-Length"), "content-length"));
	assert_int_equal(str_to_u64(STR_LIT("18446744073709551615"), &v), 0);
	assert_true(v == 18446744073709551615ULL);
	assert_int_equal(str_to_u64(STR_LIT("18446744073709551616"), &v), -1);
	assert_int_equal(str_to_u64(STR_LIT("12a"), &v), -1);
	assert_int_equal(str_to_u64(STR_LIT(""), &v), -1);
	assert_true(str_eq_c(str_trim(STR_LIT(" \tabc \t")), "abc"));
}

static void test_str_to_double(void **state)
{
	char big[80];
	double d;

	assert_int_equal(str_to_double(STR_LIT("0.25"), &d), 0);
	assert_true(d == 0.25);
	assert_int_equal(str_to_double(STR_LIT("-1e3"), &d), 0);
	assert_true(d == -1000.0);
	/* only the given bytes count, not what follows them */
	assert_int_equal(str_to_double(str_make("12x", 2), &d), 0);
	assert_true(d == 12.0);
	assert_int_equal(str_to_double(STR_LIT("12x"), &d), -1);
	assert_int_equal(str_to_double(STR_LIT(""), &d), -1);
	assert_int_equal(str_to_double(STR_LIT("nan"), &d), -1);
	assert_int_equal(str_to_double(STR_LIT("inf"), &d), -1);
	assert_int_equal(str_to_double(STR_LIT("1e999"), &d), -1);
	memset(big, '1', sizeof(big));
	assert_int_equal(str_to_double(str_make(big, 63), &d), 0);
	assert_int_equal(str_to_double(str_make(big, 64), &d), -1);
}

static void test_str_template(void **state)
{
	const char *vars[] = {"target", "web", "canary", "v2", "reason", "a {{target}} b", NULL};
	char out[64];

	(void)state;
	assert_int_equal(str_template("undeploy {{target}} {{canary}}", vars, out, sizeof(out)), 0);
	assert_string_equal(out, "undeploy web v2");
	/* unknown names and lone braces are kept; values are not expanded again */
	assert_int_equal(str_template("{{nope}} {x} {{reason}}", vars, out, sizeof(out)), 0);
	assert_string_equal(out, "{{nope}} {x} a {{target}} b");
	assert_int_equal(str_template("{{target", vars, out, sizeof(out)), 0);
	assert_string_equal(out, "{{target");
	assert_int_equal(str_template("x{{canary}}{{canary}}", vars, out, 5), -ENOSPC);
	assert_string_equal(out, "xv2v");
	assert_int_equal(str_template("abc", NULL, out, 3), -ENOSPC);
	assert_string_equal(out, "ab");
}

struct tobj {
	struct snap_obj o;
	int *destroyed;
};

static void tobj_destroy(struct snap_obj *o)
{
	struct tobj *t = (struct tobj *)o;

	*t->destroyed += 1;
	free(t);
}

static void test_snapshot_swap_keeps_readers_reference(void **state)
{
	struct snapshot s;
	struct snap_obj *held = NULL;
	int d1 = 0, d2 = 0;
	struct tobj *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));

	a->destroyed = &d1;
	b->destroyed = &d2;
	snapshot_init(&s);
	snap_obj_init(&a->o, tobj_destroy);
	snap_obj_init(&b->o, tobj_destroy);
	assert_int_equal(snapshot_publish(&s, &a->o), 1);
	assert_int_equal(snapshot_acquire(&s, &held), 1);
	assert_ptr_equal(held, &a->o);
	assert_int_equal(snapshot_acquire(&s, &held), 0);
	assert_int_equal(snapshot_publish(&s, &b->o), 2);
	/* the reader still holds a: not destroyed until it moves on */
	assert_int_equal(d1, 0);
	assert_int_equal(snapshot_acquire(&s, &held), 1);
	assert_ptr_equal(held, &b->o);
	assert_int_equal(d1, 1);
	snap_obj_unref(held);
	snapshot_release(&s);
	assert_int_equal(d2, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_timers_fire_in_deadline_order),
	    cmocka_unit_test(test_timer_restart_moves_deadline),
	    cmocka_unit_test(test_deferred_close_runs_after_callbacks),
	    cmocka_unit_test(test_post_from_other_thread),
	    cmocka_unit_test(test_stop_before_run_is_not_lost),
	    cmocka_unit_test(test_buf_cap_and_consume),
	    cmocka_unit_test(test_str_helpers),
	    cmocka_unit_test(test_str_to_double),
	    cmocka_unit_test(test_str_template),
	    cmocka_unit_test(test_snapshot_swap_keeps_readers_reference),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
