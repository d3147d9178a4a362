/* Unit tests for the buffer pool (core/buf.h): a pooled buffer takes a
 * block on first use and gives it back on release, so a steady stream of
 * requests allocates nothing; the pool keeps at most BUF_POOL_MAX blocks;
 * a buffer that outgrows a block leaves the pool; caps still hold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

static void test_steady_state_allocates_nothing(void **state)
{
	struct buf_pool bp;
	struct buf in, out;

	memset(&bp, 0, sizeof(bp));
	buf_init_pooled(&in, 1u << 20, &bp);
	buf_init_pooled(&out, 1u << 20, &bp);
	for (int i = 0; i < 1000; i++) {
		char *p = buf_reserve(&in, 16384);

		assert_non_null(p);
		memcpy(p, "GET / HTTP/1.1\r\n\r\n", 18);
		buf_commit(&in, 18);
		assert_int_equal(buf_append_lit(&out, "HTTP/1.1 200 OK\r\n\r\n"), 0);
		assert_memory_equal(buf_head(&in), "GET / HTTP/1.1\r\n\r\n", 18);
		buf_release(&in);
		buf_release(&out);
		assert_null(in.data);
	}
	assert_int_equal(bp.taken, 2000);
	assert_int_equal(bp.made, 2); /* the first request's two blocks, reused since */
	assert_int_equal(bp.n, 2);
	buf_pool_release(&bp);
	assert_int_equal(bp.n, 0);
}

static void test_pool_keeps_at_most_max(void **state)
{
	enum { N = BUF_POOL_MAX + 10 };
	struct buf_pool bp;
	struct buf *b = calloc(N, sizeof(*b));

	assert_non_null(b);
	memset(&bp, 0, sizeof(bp));
	for (int i = 0; i < N; i++) {
		buf_init_pooled(&b[i], 1u << 20, &bp);
		assert_int_equal(buf_append_lit(&b[i], "x"), 0);
	}
	assert_int_equal(bp.made, N);
	for (int i = 0; i < N; i++)
		buf_release(&b[i]); /* the last 10 go back to free() */
	assert_int_equal(bp.n, BUF_POOL_MAX);
	buf_pool_release(&bp);
	free(b);
}

static void test_outgrown_buffer_leaves_pool(void **state)
{
	struct buf_pool bp;
	struct buf b;
	char *big = malloc(BUF_POOL_BLOCK * 2);

	assert_non_null(big);
	memset(big, 'a', BUF_POOL_BLOCK * 2);
	memset(&bp, 0, sizeof(bp));
	buf_init_pooled(&b, 1u << 20, &bp);
	assert_int_equal(buf_append(&b, big, 100), 0);
	assert_int_equal(b.size, BUF_POOL_BLOCK);
	/* past the block: grown with realloc, bytes kept */
	assert_int_equal(buf_append(&b, big, BUF_POOL_BLOCK), 0);
	assert_true(b.size > BUF_POOL_BLOCK);
	assert_int_equal(buf_used(&b), 100 + BUF_POOL_BLOCK);
	buf_release(&b); /* freed, not pooled */
	assert_int_equal(bp.n, 0);
	/* a first append bigger than a block never takes one */
	assert_int_equal(buf_append(&b, big, BUF_POOL_BLOCK * 2), 0);
	assert_int_equal(bp.taken, 1);
	buf_release(&b);
	buf_pool_release(&bp);
	free(big);
}

static void test_cap_still_holds(void **state)
{
	struct buf_pool bp;
	struct buf b;

	memset(&bp, 0, sizeof(bp));
	buf_init_pooled(&b, 10, &bp);
	assert_int_equal(buf_append(&b, "0123456789", 10), 0);
	assert_int_equal(buf_append(&b, "x", 1), -ENOBUFS);
	assert_int_equal(buf_used(&b), 10);
	buf_consume(&b, 10);
	assert_int_equal(buf_append(&b, "abc", 3), 0);
	assert_memory_equal(buf_head(&b), "abc", 3);
	assert_null(buf_reserve(&b, 11));
	buf_release(&b);
	assert_int_equal(bp.n, 1);
	buf_pool_release(&bp);
}

/* A NULL pool is plain malloc (buf_init). */
static void test_no_pool(void **state)
{
	struct buf b;

	buf_init_pooled(&b, 100, NULL);
	assert_int_equal(buf_append_lit(&b, "hello"), 0);
	assert_true(b.size < BUF_POOL_BLOCK);
	assert_string_equal(buf_cstr(&b), "hello");
	buf_release(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_steady_state_allocates_nothing),
	    cmocka_unit_test(test_pool_keeps_at_most_max),
	    cmocka_unit_test(test_outgrown_buffer_leaves_pool),
	    cmocka_unit_test(test_cap_still_holds),
	    cmocka_unit_test(test_no_pool),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
