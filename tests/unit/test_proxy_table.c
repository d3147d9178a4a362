/* Routing table: route matching (longest prefix, host patterns), the split
 * decision (vectors of docs/bucketing.md), overrides, draining, cookies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "bucket_vectors.h"
#include "config/config.h"
#include "http/parser.h"
#include "proxy/registry.h"
#include "proxy/table.h"

static const char *yaml =
    "admin: {listen: 127.0.0.1:9901}\n"
    "listeners:\n"
    "  - name: pub\n"
    "    listen: 127.0.0.1:8080\n"
    "    routes:\n"
    "      - {match: {path_prefix: /}, service: web}\n"
    "      - {match: {path_prefix: /api/}, service: dwcp-manager}\n"
    "      - {match: {host: admin.example.com, path_prefix: /api/}, service: web}\n"
    "      - {match: {host: '*.example.org', path_prefix: /x}, service: web}\n"
    "services:\n"
    "  web:\n"
    "    versions: {v1: {endpoints: [127.0.0.1:7001]}, v2: {endpoints: "
    "[127.0.0.1:7002]}}\n"
    "    stable: v1\n"
    "    sticky: cookie:cid\n"
    "  dwcp-manager:\n"
    "    versions: {v1: {endpoints: [127.0.0.1:7003]}, v3: {endpoints: "
    "[127.0.0.1:7004]}}\n"
    "    stable: v1\n"
    "    sticky: header:x-user-id\n"
    "    context: {email: header:x-user-email}\n"
    "    overrides:\n"
    "      - {match: {header: {x-canary: always}}, cohort: canary}\n"
    "      - {match: {cookie: {force: stable}}, cohort: stable}\n"
    "      - {match: {segment: internal}, cohort: canary}\n"
    "segments:\n"
    "  internal: {match: [{attr: email, op: ends_with, values: ['@novacron.io']}]}\n";

struct fixture {
	struct config_ref *cref;
	struct proxy_registry *reg;
	struct proxy_table *t;
};

static struct proxy_table *build(struct fixture *f, const char *canary, uint32_t weight)
{
	struct proxy_traffic tr = {.service = "dwcp-manager", .canary = canary, .weight = weight};
	char err[256] = "";
	struct proxy_table *t =
	    proxy_table_build(f->cref, &tr, 1, f->reg, NULL, NULL, err, sizeof(err));

	if (!t)
		fail_msg("build: %s", err);
	return t;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct config_errors errs;
	struct config *cfg;

	config_errors_init(&errs);
	cfg = config_load_string("t.yaml", yaml, strlen(yaml), &errs);
	if (!cfg) {
		config_errors_print(&errs, stderr);
		return -1;
	}
	config_errors_release(&errs);
	f->cref = config_ref_new(cfg);
	f->reg = proxy_registry_new();
	f->t = build(f, "v3", 5000);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	snap_obj_unref(&f->t->obj);
	snap_obj_unref(&f->cref->obj);
	proxy_registry_free(f->reg);
	free(f);
	return 0;
}

/* Parses a raw request into msg (the parser must outlive msg's use). */
static struct http_msg *parse(struct http_parser *p, const char *raw)
{
	size_t used;

	http_parser_init(p, HTTP_PARSE_REQUEST, NULL, NULL, NULL);
	assert_int_equal(http_parser_feed(p, raw, strlen(raw), &used), HTTP_PARSE_DONE);
	return http_parser_msg(p);
}

static void test_route_longest_prefix_and_hosts(void **state)
{
	struct fixture *f = *state;
	const struct proxy_listener *l = &f->t->listeners[0];

	assert_string_equal(proxy_route_match(l, STR_LIT("a.com"), STR_LIT("/"))->name, "web");
	assert_string_equal(proxy_route_match(l, STR_LIT("a.com"), STR_LIT("/api/x"))->name,
	                    "dwcp-manager");
	/* a host-specific route wins over "any host" at the same prefix length */
	assert_string_equal(
	    proxy_route_match(l, STR_LIT("Admin.Example.com:8080"), STR_LIT("/api/x"))->name,
	    "web");
	assert_string_equal(proxy_route_match(l, STR_LIT("a.example.org"), STR_LIT("/x"))->name,
	                    "web");
	/* "/api" is not under "/api/" */
	assert_string_equal(proxy_route_match(l, STR_LIT("a.com"), STR_LIT("/api"))->name, "web");
}

static void test_split_matches_docs_vectors(void **state)
{
	struct fixture *f = *state;
	struct bucket_vector v[64];
	int n = bucket_vectors_load("docs/bucketing.md", v, 64), checked = 0;
	const struct proxy_service *svc = proxy_table_service(f->t, "dwcp-manager");

	assert_true(n >= 20);
	for (int i = 0; i < n; i++) {
		char raw[512];
		struct http_parser p;
		struct proxy_decision d;

		if (strcmp(v[i].salt, "dwcp-manager") != 0)
			continue;
		snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\nx-user-id: %s\r\n\r\n",
		         v[i].key);
		proxy_decide(svc, parse(&p, raw), STR_LIT("127.0.0.1"), 0, &d);
		assert_int_equal(d.bucket, v[i].bucket);
		assert_int_equal(d.cohort, bucket_cohort(v[i].bucket, 5000));
		assert_string_equal(svc->versions[d.version].name,
		                    d.cohort == COHORT_CANARY ? "v3" : "v1");
		http_parser_release(&p);
		checked++;
	}
	assert_true(checked >= 4);
}

static void decide(const struct proxy_service *svc, const char *raw, struct proxy_decision *d)
{
	struct http_parser p;

	proxy_decide(svc, parse(&p, raw), STR_LIT("10.0.0.1"), 42, d);
	http_parser_release(&p);
}

static void test_overrides_in_order(void **state)
{
	struct fixture *f = *state;
	const struct proxy_service *svc = proxy_table_service(f->t, "dwcp-manager");
	struct proxy_decision d;

	/* user-1 is in bucket 98849: stable at 5% without an override */
	decide(svc, "GET / HTTP/1.1\r\nHost: a\r\nx-user-id: user-1\r\n\r\n", &d);
	assert_int_equal(d.cohort, COHORT_STABLE);
	decide(svc, "GET / HTTP/1.1\r\nHost: a\r\nx-user-id: user-1\r\nX-Canary: always\r\n\r\n",
	       &d);
	assert_int_equal(d.cohort, COHORT_CANARY);
	assert_int_equal(d.bucket, UINT32_MAX);
	decide(svc,
	       "GET / HTTP/1.1\r\nHost: a\r\nx-user-id: user-1\r\nx-user-email: "
	       "ops@novacron.io\r\n\r\n",
	       &d);
	assert_int_equal(d.cohort, COHORT_CANARY);
	decide(svc,
	       "GET / HTTP/1.1\r\nHost: a\r\nx-user-id: user-1\r\nx-user-email: "
	       "ops@novacron.io.evil\r\n\r\n",
	       &d);
	assert_int_equal(d.cohort, COHORT_STABLE);
	/* user-2 (bucket 557) is on the canary, but the cookie override comes first */
	decide(
	    svc,
	    "GET / HTTP/1.1\r\nHost: a\r\nx-user-id: user-2\r\nCookie: a=1; force=stable\r\n\r\n",
	    &d);
	assert_int_equal(d.cohort, COHORT_STABLE);
	decide(svc, "GET / HTTP/1.1\r\nHost: a\r\nx-user-id: user-2\r\n\r\n", &d);
	assert_int_equal(d.cohort, COHORT_CANARY);
}

static void test_weight_zero_drains_even_overrides(void **state)
{
	struct fixture *f = *state;
	struct proxy_table *t = build(f, "v3", 0);
	const struct proxy_service *svc = proxy_table_service(t, "dwcp-manager");
	struct proxy_decision d;

	assert_true(svc->versions[svc->canary].draining);
	decide(svc, "GET / HTTP/1.1\r\nHost: a\r\nx-user-id: user-2\r\nX-Canary: always\r\n\r\n",
	       &d);
	assert_string_equal(svc->versions[d.version].name, "v1");
	decide(svc, "GET / HTTP/1.1\r\nHost: a\r\nx-user-id: user-2\r\n\r\n", &d);
	assert_string_equal(svc->versions[d.version].name, "v1");
	snap_obj_unref(&t->obj);
}

static void test_cookie_sticky_sets_cookie_when_absent(void **state)
{
	struct fixture *f = *state;
	const struct proxy_service *web = proxy_table_service(f->t, "web");
	struct proxy_decision d, d2;
	char raw[256];

	decide(web, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", &d);
	assert_true(d.set_cookie);
	assert_true(strlen(d.cookie_key) == 16);
	/* the client that sends it back gets the same bucket and no new cookie */
	snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\nCookie: cid=%s\r\n\r\n",
	         d.cookie_key);
	decide(web, raw, &d2);
	assert_false(d2.set_cookie);
	assert_int_equal(d2.bucket, d.bucket);
	/* no Cookie header at all: absent, not empty */
	assert_null(proxy_cookie(&(struct http_msg){0}, "cid").p);
}

static void test_unknown_canary_version_is_an_error(void **state)
{
	struct fixture *f = *state;
	struct proxy_traffic tr = {.service = "dwcp-manager", .canary = "v9", .weight = 1000};
	char err[256] = "";

	assert_null(proxy_table_build(f->cref, &tr, 1, f->reg, NULL, NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "v9"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_route_longest_prefix_and_hosts),
	    cmocka_unit_test(test_split_matches_docs_vectors),
	    cmocka_unit_test(test_overrides_in_order),
	    cmocka_unit_test(test_weight_zero_drains_even_overrides),
	    cmocka_unit_test(test_cookie_sticky_sets_cookie_when_absent),
	    cmocka_unit_test(test_unknown_canary_version_is_an_error),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
