/* Unit tests for src/http/headers.c and the header lookups of parser.h: the
 * hop-by-hop set in any letter case (compared by length first), names of
 * the same lengths that are not hop-by-hop, the skip list, Connection
 * tokens, and http_msg_header() folding ASCII case only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "core/buf.h"
#include "core/str.h"
#include "http/headers.h"
#include "http/parser.h"

static void test_hop_by_hop_any_case(void **state)
{
	static const char *const hop[] = {"Connection",
	                                  "KEEP-ALIVE",
	                                  "proxy-connection",
	                                  "Te",
	                                  "TRAILER",
	                                  "Transfer-Encoding",
	                                  "upgrade",
	                                  "Proxy-Authenticate",
	                                  "proxy-AUTHORIZATION"};
	/* the same lengths (2, 7, 10, 16-19), not hop-by-hop */
	static const char *const e2e[] = {"tx",
	                                  "trailed",
	                                  "connectiom",
	                                  "keep_alive",
	                                  "proxy-connectio_",
	                                  "transfer-encodinh",
	                                  "proxy-authenticat3",
	                                  "x-proxy-authorizat",
	                                  "proxy-authorization-",
	                                  "",
	                                  "Content-Length"};

	for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
		assert_true(headers_is_hop_by_hop(str_c(hop[i])));
	for (size_t i = 0; i < sizeof(e2e) / sizeof(e2e[0]); i++)
		assert_false(headers_is_hop_by_hop(str_c(e2e[i])));
}

static void test_name_eq_folds_ascii_only(void **state)
{
	assert_true(http_name_eq_lit(STR_LIT("X-Request-ID"), "x-request-id"));
	assert_false(http_name_eq_lit(STR_LIT("x-request-i"), "x-request-id"));
	/* '[' is 'A' - 1 + 27: no bit-trick folding that maps it to '{' */
	assert_false(http_name_eq_lit(STR_LIT("a["), "a{"));
	assert_false(http_name_eq_lit(STR_LIT("A_"), "a\x7f"));
}

struct seen {
	struct buf fwd;
	const struct str *xrid, *long_name;
	int n;
};

static void visit(void *ud, const struct http_msg *m, const char *body, size_t len)
{
	static const char *const skip[] = {"x-forwarded-for", "expect"};
	struct seen *s = ud;

	s->n++;
	s->xrid = http_msg_header(m, "X-REQUEST-id");
	s->long_name = http_msg_header(
	    m, "a-header-name-that-is-longer-than-sixty-four-bytes-to-take-the-slow-path");
	assert_non_null(s->xrid);
	assert_true(str_eq(*s->xrid, STR_LIT("r1")));
	assert_non_null(s->long_name);
	assert_true(str_eq(*s->long_name, STR_LIT("v")));
	assert_null(http_msg_header(m, "x-request-i"));
	assert_int_equal(headers_forward(&s->fwd, m, skip, 2), 0);
	{
		const char *many[HEADERS_MAX_SKIP + 1];
		struct buf b;

		for (size_t i = 0; i < HEADERS_MAX_SKIP + 1; i++)
			many[i] = "x";
		buf_init(&b, 1024);
		assert_int_equal(headers_forward(&b, m, many, HEADERS_MAX_SKIP + 1), -EINVAL);
		buf_release(&b);
	}
}

static void test_forward_and_lookup(void **state)
{
	const char req[] =
	    "GET /x HTTP/1.1\r\nHost: a\r\nX-Request-Id: r1\r\nConnection: keep-alive, X-Hop\r\n"
	    "X-Hop: h\r\nX-Forwarded-For: 1.2.3.4\r\nTE: trailers\r\nX-Kept: k\r\n"
	    "A-Header-Name-That-Is-Longer-Than-Sixty-Four-Bytes-To-Take-The-Slow-Path: v\r\n\r\n";
	struct seen s;
	const char *out;

	memset(&s, 0, sizeof(s));
	buf_init(&s.fwd, 4096);
	assert_int_equal(http_parse_buffer(HTTP_PARSE_REQUEST, NULL, req, sizeof(req) - 1, 0, 0,
	                                   visit, &s, NULL),
	                 0);
	assert_int_equal(s.n, 1);
	out = buf_cstr(&s.fwd);
	assert_non_null(strstr(out, "Host: a\r\n"));
	assert_non_null(strstr(out, "X-Request-Id: r1\r\n"));
	assert_non_null(strstr(out, "X-Kept: k\r\n"));
	assert_null(strstr(out, "Connection"));
	assert_null(strstr(out, "X-Hop")); /* named by Connection */
	assert_null(strstr(out, "X-Forwarded-For"));
	assert_null(strstr(out, "TE:"));
	buf_release(&s.fwd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hop_by_hop_any_case),
	    cmocka_unit_test(test_name_eq_folds_ascii_only),
	    cmocka_unit_test(test_forward_and_lookup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
