/*
 * test_auth.c - bearer tokens (src/api/auth.c): scopes, and that secrets are
 * compared in constant time.
 *
 * Constant time is checked by structure, not by timing: the bytes after the
 * first difference are put in a page that cannot be read, and a SIGSEGV
 * handler counts the reads that reach it (and makes the page readable so the
 * read completes).  A comparison that stops at the first differing byte, or at
 * the first matching token, never touches that page; one that walks every byte
 * of both strings and every token always does.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/auth.h"

static char *area;  /* two pages: readable, then the guard page */
static size_t page; /* the page size */
static volatile sig_atomic_t guard_reads;

static void on_segv(int sig, siginfo_t *si, void *uctx)
{
	char *a = si->si_addr;

	(void)uctx;
	if (a >= area + page && a < area + 2 * page) {
		guard_reads++;
		mprotect(area + page, page, PROT_READ); /* the read is retried and completes */
		return;
	}
	signal(sig, SIG_DFL); /* a real fault: crash on the retry */
}

static int setup(void **state)
{
	(void)state;
	page = (size_t)sysconf(_SC_PAGESIZE);
	area = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return area == MAP_FAILED ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	munmap(area, 2 * page);
	return 0;
}

/* cmocka sets its own SIGSEGV handler around each test: each test sets ours. */
static void guard_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGSEGV, &sa, NULL), 0);
}

/*
 * Writes s (len bytes, plus a NUL) so that its first `readable` bytes end the
 * readable page and the rest starts the guard page; returns where it starts.
 */
static char *place(const char *s, size_t len, size_t readable)
{
	char *p = area + page - readable;

	assert_int_equal(mprotect(area + page, page, PROT_READ | PROT_WRITE), 0);
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

static void guard_on(void)
{
	guard_install();
	guard_reads = 0;
	assert_int_equal(mprotect(area + page, page, PROT_NONE), 0);
}

static void test_equal_results(void **state)
{
	(void)state;
	assert_true(auth_ct_equal(STR_LIT("s3cret"), STR_LIT("s3cret")));
	assert_false(auth_ct_equal(STR_LIT("s3cret"), STR_LIT("s3creT")));
	assert_false(auth_ct_equal(STR_LIT("s3cret"), STR_LIT("s3cre")));
	assert_false(auth_ct_equal(STR_LIT("s3cre"), STR_LIT("s3cret")));
	assert_false(auth_ct_equal(STR_LIT(""), STR_LIT("x")));
	assert_true(auth_ct_equal(STR_LIT(""), STR_LIT("")));
	/* a NUL inside is a byte like any other */
	assert_false(auth_ct_equal(str_make("ab\0c", 4), str_make("ab\0d", 4)));
}

/* A difference at any position: the bytes after it are still read, on both sides. */
static void test_no_early_exit_on_a_difference(void **state)
{
	static const char secret[] = "0123456789abcdefghijklmnopqrstuv"; /* 32 bytes */
	char guess[sizeof(secret)];

	(void)state;
	for (size_t diff = 0; diff < 16; diff++) {
		char *p;

		memcpy(guess, secret, sizeof(secret));
		guess[diff] ^= 0x55;
		/* the presented token's bytes from 16 on are behind the guard */
		p = place(guess, 32, 16);
		guard_on();
		assert_false(auth_ct_equal(str_make(p, 32), str_make(secret, 32)));
		assert_true(guard_reads > 0);
		/* and the same for the configured secret's side */
		p = place(secret, 32, 16);
		guard_on();
		assert_false(auth_ct_equal(str_make(guess, 32), str_make(p, 32)));
		assert_true(guard_reads > 0);
	}
}

/* A length difference is not a shortcut: the longer string is walked to its end. */
static void test_no_early_exit_on_a_length_difference(void **state)
{
	static const char secret[] = "0123456789abcdefghijklmnopqrstuv";
	char *p;

	(void)state;
	p = place(secret, 32, 8);
	guard_on();
	assert_false(auth_ct_equal(STR_LIT("x"), str_make(p, 32)));
	assert_true(guard_reads > 0);
	guard_on();
	assert_false(auth_ct_equal(str_make(p, 32), STR_LIT("0123")));
	assert_true(guard_reads > 0);
}

/* auth_check compares the presented token with every secret, also after a match. */
static void test_every_token_is_compared(void **state)
{
	struct auth_token tokens[3] = {
	    {"ops", "ops-secret-0123456789", SCOPE_ADMIN},
	    {"viewer", NULL, SCOPE_READ},
	    {"flagger", "flags-secret-0123456789", SCOPE_FLAGS_WRITE},
	};
	const struct auth_token *who;

	(void)state;
	tokens[1].secret = place("viewer-secret-0123456789", 24, 4);
	guard_on();
	assert_int_equal(
	    auth_check(tokens, 3, STR_LIT("Bearer ops-secret-0123456789"), SCOPE_READ, &who),
	    AUTH_OK);
	assert_ptr_equal(who, &tokens[0]);
	assert_true(guard_reads > 0); /* the second secret was read to its end */

	/* the results themselves */
	assert_int_equal(auth_check(tokens, 3, STR_LIT("Bearer viewer-secret-0123456789"),
	                            SCOPE_FLAGS_WRITE, &who),
	                 AUTH_FORBIDDEN);
	assert_ptr_equal(who, &tokens[1]);
	assert_int_equal(auth_check(tokens, 3, STR_LIT("Bearer flags-secret-0123456789"),
	                            SCOPE_FLAGS_WRITE, &who),
	                 AUTH_OK);
	assert_int_equal(auth_check(tokens, 3, STR_LIT("Bearer flags-secret-012345678"), 0, &who),
	                 AUTH_INVALID);
	assert_null(who);
	assert_int_equal(auth_check(tokens, 3, STR_LIT("Basic b3BzOnNlY3JldA=="), 0, &who),
	                 AUTH_MISSING);
	assert_int_equal(auth_check(tokens, 3, STR_LIT("Bearer    "), 0, &who), AUTH_MISSING);
}

static void test_scope_names(void **state)
{
	(void)state;
	assert_int_equal(auth_scope_parse("flags:write"), SCOPE_FLAGS_WRITE);
	assert_int_equal(auth_scope_parse("admin"), SCOPE_ADMIN);
	assert_int_equal(auth_scope_parse("root"), 0);
	assert_string_equal(auth_scope_name(SCOPE_APPROVE), "approve");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_equal_results),
	    cmocka_unit_test(test_no_early_exit_on_a_difference),
	    cmocka_unit_test(test_no_early_exit_on_a_length_difference),
	    cmocka_unit_test(test_every_token_is_compared),
	    cmocka_unit_test(test_scope_names),
	};

	return cmocka_run_group_tests_name("auth", tests, setup, teardown);
}
