/* Unit tests for the loop's lazy timers (core/loop.h): a timer moved later
 * fires at its new deadline, not the old one; moved earlier it fires early;
 * stopped after a move it never fires; and a random mix of starts, moves
 * and stops over many timers keeps every rule.  Ordering and lower bounds
 * only (a timer can never fire before its deadline): no upper time bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/loop.h"

struct rec {
	struct loop_timer t;
	int tag;
	int fired;
	uint64_t fired_at; /* the loop's clock when it fired */
	uint64_t deadline; /* the last deadline it was given */
	int stopped;       /* the last operation on it was a stop */
	int *seq, *nseq;
};

static void rec_cb(struct loop *loop, struct loop_timer *t)
{
	struct rec *r = t->data;

	r->fired++;
	r->fired_at = loop_now_ms(loop);
	if (r->seq)
		r->seq[(*r->nseq)++] = r->tag;
}

static void rec_init(struct rec *r, int tag, int *seq, int *nseq)
{
	memset(r, 0, sizeof(*r));
	r->tag = tag;
	r->seq = seq;
	r->nseq = nseq;
	loop_timer_init(&r->t, rec_cb, r);
}

static void rec_start(struct loop *loop, struct rec *r, uint64_t after)
{
	loop_timer_start(loop, &r->t, after);
	r->deadline = loop_now_ms(loop) + after;
}

/* Runs the loop until *n reaches want or 5 s pass (a bound, not an assertion). */
static void run_until(struct loop *loop, const int *n, int want)
{
	uint64_t end = clock_mono_ms() + 5000;

	while (*n < want && clock_mono_ms() < end)
		loop_run_once(loop, 50);
}

static void test_moved_later_fires_at_new_time(void **state)
{
	struct loop *loop = loop_new();
	int seq[4], n = 0;
	struct rec a, b;
	uint32_t idx;

	assert_non_null(loop);
	rec_init(&a, 1, seq, &n);
	rec_init(&b, 2, seq, &n);
	rec_start(loop, &a, 10);
	rec_start(loop, &b, 40);
	idx = a.t.heap_idx;
	rec_start(loop, &a, 80); /* later: its heap entry stays where it was */
	assert_int_equal(a.t.heap_idx, idx);
	assert_true(loop_timer_armed(&a.t));
	run_until(loop, &n, 2);
	assert_int_equal(n, 2);
	assert_int_equal(seq[0], 2); /* b (40) before a (moved to 80) */
	assert_int_equal(seq[1], 1);
	assert_int_equal(a.fired, 1);
	assert_true(a.fired_at >= a.deadline); /* not at the old 10 ms */
	assert_false(loop_timer_armed(&a.t));
	loop_free(loop);
}

static void test_moved_earlier_fires_early(void **state)
{
	struct loop *loop = loop_new();
	int seq[4], n = 0;
	struct rec a, b;

	assert_non_null(loop);
	rec_init(&a, 1, seq, &n);
	rec_init(&b, 2, seq, &n);
	rec_start(loop, &a, 600000); /* ten minutes */
	rec_start(loop, &b, 60);
	rec_start(loop, &a, 10); /* earlier: fires before b */
	run_until(loop, &n, 2);
	assert_int_equal(n, 2);
	assert_int_equal(seq[0], 1);
	assert_int_equal(seq[1], 2);
	assert_true(a.fired_at >= a.deadline);
	loop_free(loop);
}

static void test_stop_after_move_never_fires(void **state)
{
	struct loop *loop = loop_new();
	int seq[4], n = 0;
	struct rec a, b, c;

	assert_non_null(loop);
	rec_init(&a, 1, seq, &n);
	rec_init(&b, 2, seq, &n);
	rec_init(&c, 3, seq, &n);
	rec_start(loop, &a, 5);
	rec_start(loop, &a, 30);     /* moved later ... */
	loop_timer_stop(loop, &a.t); /* ... then stopped */
	rec_start(loop, &c, 200);
	rec_start(loop, &c, 5);      /* moved earlier ... */
	loop_timer_stop(loop, &c.t); /* ... then stopped */
	assert_false(loop_timer_armed(&a.t));
	assert_false(loop_timer_armed(&c.t));
	rec_start(loop, &b, 80);
	run_until(loop, &n, 1);
	assert_int_equal(b.fired, 1);
	assert_int_equal(a.fired, 0);
	assert_int_equal(c.fired, 0);
	/* re-armed after the stop, it fires again (its entry was really gone) */
	rec_start(loop, &a, 1);
	run_until(loop, &n, 2);
	assert_int_equal(a.fired, 1);
	assert_int_equal(n, 2);
	loop_free(loop);
}

/* A timer's callback re-arms it later (a periodic timer): it fires once per period. */
static void rearm_cb(struct loop *loop, struct loop_timer *t)
{
	struct rec *r = t->data;

	r->fired++;
	r->fired_at = loop_now_ms(loop);
	if (r->fired < 3) {
		loop_timer_start(loop, t, 5);
		r->deadline = loop_now_ms(loop) + 5;
	}
}

static void test_rearm_from_callback(void **state)
{
	struct loop *loop = loop_new();
	struct rec r;
	uint64_t end = clock_mono_ms() + 5000;

	assert_non_null(loop);
	memset(&r, 0, sizeof(r));
	loop_timer_init(&r.t, rearm_cb, &r);
	loop_timer_start(loop, &r.t, 5);
	while (r.fired < 3 && clock_mono_ms() < end)
		loop_run_once(loop, 50);
	assert_int_equal(r.fired, 3);
	assert_false(loop_timer_armed(&r.t));
	loop_free(loop);
}

/*
 * Many timers, random starts (earlier and later), moves and stops: each
 * armed timer fires exactly once, never before its last deadline; a stopped
 * one never fires; fires come in deadline order within a turn's reach.
 */
static void test_random_moves_keep_rules(void **state)
{
	enum { N = 300 };
	struct loop *loop = loop_new();
	struct rec *r = calloc(N, sizeof(*r));
	int n = 0, armed = 0;
	uint64_t rng = 12345;

	assert_non_null(loop);
	assert_non_null(r);
	for (int i = 0; i < N; i++)
		rec_init(&r[i], i, NULL, &n);
	for (int step = 0; step < 3000; step++) {
		int i;

		rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
		i = (int)((rng >> 33) % N);
		r[i].stopped = (rng >> 20) % 5 == 0;
		if (r[i].stopped)
			loop_timer_stop(loop, &r[i].t);
		else
			rec_start(loop, &r[i], 20 + (rng >> 40) % 60);
	}
	for (int i = 0; i < N; i++)
		armed += loop_timer_armed(&r[i].t);
	{
		uint64_t end = clock_mono_ms() + 5000;
		int fired = 0;

		while (fired < armed && clock_mono_ms() < end) {
			loop_run_once(loop, 50);
			fired = 0;
			for (int i = 0; i < N; i++)
				fired += r[i].fired;
		}
	}
	for (int i = 0; i < N; i++) {
		if (r[i].stopped || !r[i].deadline) {
			assert_int_equal(r[i].fired, 0);
		} else {
			assert_int_equal(r[i].fired, 1);
			assert_true(r[i].fired_at >= r[i].deadline);
		}
		assert_false(loop_timer_armed(&r[i].t));
	}
	{
		int fired = 0;

		for (int i = 0; i < N; i++)
			fired += r[i].fired;
		assert_int_equal(fired, armed);
	}
	free(r);
	loop_free(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_moved_later_fires_at_new_time),
	    cmocka_unit_test(test_moved_earlier_fires_early),
	    cmocka_unit_test(test_stop_after_move_never_fires),
	    cmocka_unit_test(test_rearm_from_callback),
	    cmocka_unit_test(test_random_moves_keep_rules),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
