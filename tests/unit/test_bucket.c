/* SPEC 2 bucketing: murmur3 reference vectors, docs/bucketing.md vectors,
 * cohort ranges and monotonicity when the weight rises. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bucket_vectors.h"
#include "core/bucket.h"

static void test_murmur3_published_vectors(void **state)
{
	assert_int_equal(murmur3_x86_32("", 0, 0), 0);
	assert_int_equal(murmur3_x86_32("", 0, 1), 0x514E28B7u);
	assert_int_equal(murmur3_x86_32("test", 4, 0), 0xba6bd213u);
	assert_int_equal(murmur3_x86_32("Hello, world!", 13, 0), 0xc0363e43u);
	assert_int_equal(murmur3_x86_32("The quick brown fox jumps over the lazy dog", 43, 0),
	                 0x2e4ff723u);
}

static void test_docs_vectors(void **state)
{
	struct bucket_vector v[64];
	int n = bucket_vectors_load("docs/bucketing.md", v, 64);

	assert_true(n >= 20);
	for (int i = 0; i < n; i++) {
		char joined[512];
		int jl = snprintf(joined, sizeof(joined), "%s:%s", v[i].salt, v[i].key);

		assert_int_equal(murmur3_x86_32(joined, (size_t)jl, 0), v[i].hash);
		/* the streaming salt:key path equals hashing the joined string */
		assert_int_equal(
		    bucket_of(v[i].salt, strlen(v[i].salt), v[i].key, strlen(v[i].key)),
		    v[i].bucket);
	}
}

static void test_cohort_ranges(void **state)
{
	/* w = 5%: canary [0,5000), baseline [5000,10000), stable the rest */
	assert_int_equal(bucket_cohort(0, 5000), COHORT_CANARY);
	assert_int_equal(bucket_cohort(4999, 5000), COHORT_CANARY);
	assert_int_equal(bucket_cohort(5000, 5000), COHORT_BASELINE);
	assert_int_equal(bucket_cohort(9999, 5000), COHORT_BASELINE);
	assert_int_equal(bucket_cohort(10000, 5000), COHORT_STABLE);
	/* w = 70%: baseline is capped by what is left: [70000, 100000) */
	assert_int_equal(bucket_cohort(69999, 70000), COHORT_CANARY);
	assert_int_equal(bucket_cohort(99999, 70000), COHORT_BASELINE);
	/* w = 0: nobody on the canary or baseline; w = 100%: everybody canary */
	assert_int_equal(bucket_cohort(0, 0), COHORT_STABLE);
	assert_int_equal(bucket_cohort(99999, 100000), COHORT_CANARY);
}

static void test_raising_weight_keeps_canary_units(void **state)
{
	char key[32];

	for (int i = 0; i < 5000; i++) {
		int kl = snprintf(key, sizeof(key), "user-%d", i);
		uint32_t b = bucket_of("svc", 3, key, (size_t)kl);
		int was_canary = 0;

		assert_true(b < BUCKET_COUNT);
		for (uint32_t w = 0; w <= 100000; w += 2500) {
			int c = bucket_cohort(b, w) == COHORT_CANARY;

			assert_false(was_canary && !c);
			/* the canary is exactly the buckets [0, w) */
			assert_int_equal(c, b < w);
			was_canary = c;
		}
		assert_true(was_canary); /* at 100% every unit is on the canary */
	}
}

static void test_distribution_is_uniform(void **state)
{
	char key[32];
	int canary = 0, baseline = 0;
	const int n = 100000;

	for (int i = 0; i < n; i++) {
		int kl = snprintf(key, sizeof(key), "k%d", i);

		switch (bucket_cohort(bucket_of("web", 3, key, (size_t)kl), 10000)) {
		case COHORT_CANARY:
			canary++;
			break;
		case COHORT_BASELINE:
			baseline++;
			break;
		default:
			break;
		}
	}
	/* 10% of 100000 = 10000, sd ~ 95: +-5 sd */
	assert_in_range(canary, 9525, 10475);
	assert_in_range(baseline, 9525, 10475);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_murmur3_published_vectors),
	    cmocka_unit_test(test_docs_vectors),
	    cmocka_unit_test(test_cohort_ranges),
	    cmocka_unit_test(test_raising_weight_keeps_canary_units),
	    cmocka_unit_test(test_distribution_is_uniform),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
