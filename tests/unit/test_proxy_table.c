/* Routing table: route matching (longest prefix, host patterns; the hashed
 * lookup against the documented linear order with many routes), deriving a
 * table from another (one service rebuilt, the rest shared), the split
 * decision (vectors of docs/bucketing.md), overrides, draining, cookies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

/* ---- many routes: the hashed lookup against the documented order ---- */

#define NSVC 1000

/* The matching rule of table.h, literally: the first route in l->routes' order. */
static struct proxy_service *linear_match(const struct proxy_listener *l, const char *host_in,
                                          const char *path)
{
	char host[256];
	size_t hl;

	snprintf(host, sizeof(host), "%s", host_in);
	if (host[0] != '[' && strchr(host, ':'))
		*strchr(host, ':') = '\0';
	else if (host[0] == '[' && strchr(host, ']'))
		strchr(host, ']')[1] = '\0';
	hl = strlen(host);
	for (uint32_t i = 0; i < l->nroutes; i++) {
		const struct proxy_route *r = &l->routes[i];
		int host_ok;

		if (strlen(path) < r->prefix_len ||
		    memcmp(path, r->path_prefix, r->prefix_len) != 0)
			continue;
		if (!r->host)
			host_ok = 1;
		else if (r->host[0] == '*' && r->host[1] == '.')
			host_ok = hl > strlen(r->host + 1) &&
			          strcasecmp(host + hl - strlen(r->host + 1), r->host + 1) == 0;
		else
			host_ok = strcasecmp(host, r->host) == 0;
		if (host_ok)
			return &l->services[r->svc_index];
	}
	return NULL;
}

/* NSVC services s0..; one host route each, some /api/ routes, wildcards, any-host routes. */
static struct config_ref *many_routes_config(void)
{
	size_t cap = 400 * NSVC, off = 0;
	char *y = malloc(cap);
	struct config_errors errs;
	struct config *cfg;

#define EMIT(...) off += (size_t)snprintf(y + off, cap - off, __VA_ARGS__)
	EMIT("admin: {listen: 127.0.0.1:9901}\nlisteners:\n  - name: pub\n"
	     "    listen: 127.0.0.1:8080\n    routes:\n");
	/* the catch-alls first in the file: the order must come from the prefixes */
	EMIT("      - {match: {path_prefix: /}, service: s3}\n");
	EMIT("      - {match: {host: '*.example.com', path_prefix: /w/}, service: s1}\n");
	EMIT("      - {match: {host: '*.a.example.com', path_prefix: /}, service: s2}\n");
	for (int i = 0; i < NSVC; i++) {
		EMIT("      - {match: {host: h%d.example.com, path_prefix: /}, service: s%d}\n", i,
		     i);
		if (i % 7 == 0)
			EMIT(
			    "      - {match: {host: h%d.example.com, path_prefix: /api/}, service: "
			    "s%d}\n",
			    i, (i + 1) % NSVC);
	}
	EMIT("      - {match: {path_prefix: /api/}, service: s4}\n");
	EMIT("      - {match: {path_prefix: /api/v2/}, service: s5}\n");
	/* same prefix length as the wildcard's /w/ above: configuration order decides */
	EMIT("      - {match: {host: h9.example.com, path_prefix: /w/}, service: s6}\n");
	/* shadowed by h10's earlier route; a host in other case joins h20's group */
	EMIT("      - {match: {host: h10.example.com, path_prefix: /}, service: s7}\n");
	EMIT("      - {match: {host: H20.Example.com, path_prefix: /api/}, service: s9}\n");
	EMIT("services:\n");
	for (int i = 0; i < NSVC; i++)
		EMIT("  s%d: {versions: {v1: {endpoints: [127.0.0.1:7001]}, v2: {endpoints: "
		     "[127.0.0.1:7002]}}, stable: v1}\n",
		     i);
#undef EMIT
	assert_true(off < cap);
	config_errors_init(&errs);
	cfg = config_load_string("many.yaml", y, off, &errs);
	if (!cfg || config_errors_count(&errs))
		config_errors_print(&errs, stderr);
	assert_non_null(cfg);
	assert_int_equal(config_errors_count(&errs), 0);
	config_errors_release(&errs);
	free(y);
	return config_ref_new(cfg);
}

static void test_many_routes_match_as_the_linear_order(void **state)
{
	struct config_ref *cref = many_routes_config();
	struct proxy_registry *reg = proxy_registry_new();
	char err[256] = "", host[64];
	struct proxy_table *t = proxy_table_build(cref, NULL, 0, reg, NULL, NULL, err, sizeof(err));
	static const char *const paths[] = {"/",   "/api", "/api/", "/api/x", "/api/v2/y",
	                                    "/w/", "/w",   "/zzz",  "",       "/api/v2"};
	static const char *const hosts[] = {"a.example.com",
	                                    "x.a.example.com",
	                                    "b.h3.example.com",
	                                    "other.org",
	                                    "",
	                                    "H14.EXAMPLE.com:8080",
	                                    "[::1]:80",
	                                    ".example.com",
	                                    "example.com",
	                                    "h9.example.com",
	                                    "H9.example.COM",
	                                    "x.h9.example.com"};
	const struct proxy_listener *l;
	size_t checked = 0;

	(void)state;
	if (!t)
		fail_msg("build: %s", err);
	l = &t->listeners[0];
	for (int i = 0; i < NSVC + 3; i++) {
		snprintf(host, sizeof(host), "h%d.example.com", i);
		for (size_t p = 0; p < sizeof(paths) / sizeof(paths[0]); p++) {
			struct proxy_service *want = linear_match(l, host, paths[p]);
			struct proxy_service *got = proxy_route_match(
			    l, str_make(host, strlen(host)), str_make(paths[p], strlen(paths[p])));

			if (want != got)
				fail_msg("%s %s: want %s, got %s", host, paths[p],
				         want ? want->name : "none", got ? got->name : "none");
			checked++;
		}
	}
	for (size_t h = 0; h < sizeof(hosts) / sizeof(hosts[0]); h++)
		for (size_t p = 0; p < sizeof(paths) / sizeof(paths[0]); p++) {
			struct proxy_service *want = linear_match(l, hosts[h], paths[p]);
			struct proxy_service *got =
			    proxy_route_match(l, str_make(hosts[h], strlen(hosts[h])),
			                      str_make(paths[p], strlen(paths[p])));

			if (want != got)
				fail_msg("%s %s: want %s, got %s", hosts[h], paths[p],
				         want ? want->name : "none", got ? got->name : "none");
			checked++;
		}
	assert_true(checked > 10000);
	/* the documented rules, spelled out */
	assert_string_equal(proxy_route_match(l, STR_LIT("h999.example.com"), STR_LIT("/x"))->name,
	                    "s999");
	assert_string_equal(
	    proxy_route_match(l, STR_LIT("h0.example.com"), STR_LIT("/api/v2/x"))->name, "s5");
	assert_string_equal(
	    proxy_route_match(l, STR_LIT("h7.example.com"), STR_LIT("/api/x"))->name, "s8");
	assert_string_equal(
	    proxy_route_match(l, STR_LIT("h8.example.com"), STR_LIT("/api/x"))->name, "s4");
	assert_string_equal(proxy_route_match(l, STR_LIT("h9.example.com"), STR_LIT("/w/x"))->name,
	                    "s1");
	assert_string_equal(proxy_route_match(l, STR_LIT("q.a.example.com"), STR_LIT("/"))->name,
	                    "s2");
	assert_string_equal(proxy_route_match(l, STR_LIT("h10.example.com"), STR_LIT("/"))->name,
	                    "s10");
	assert_string_equal(
	    proxy_route_match(l, STR_LIT("h20.example.com"), STR_LIT("/api/x"))->name, "s9");
	assert_string_equal(proxy_route_match(l, STR_LIT("a.example.com"), STR_LIT("/"))->name,
	                    "s3");
	assert_string_equal(proxy_route_match(l, STR_LIT("nowhere"), STR_LIT("/"))->name, "s3");
	assert_null(proxy_route_match(l, STR_LIT("nowhere"), STR_LIT("x")));
	assert_ptr_equal(proxy_table_service(t, "s777"), &t->services[777]);
	assert_null(proxy_table_service(t, "s1000"));
	snap_obj_unref(&t->obj);
	snap_obj_unref(&cref->obj);
	proxy_registry_free(reg);
}

static void test_derive_rebuilds_one_service_and_shares_the_rest(void **state)
{
	struct config_ref *cref = many_routes_config();
	struct proxy_registry *reg = proxy_registry_new();
	struct proxy_traffic tr = {.service = "s500", .canary = "v2", .weight = 25000};
	struct proxy_traffic bad = {.service = "s500", .canary = "v9", .weight = 1};
	struct proxy_traffic none = {.service = "nope"};
	char err[256] = "";
	struct proxy_table *t1 =
	    proxy_table_build(cref, NULL, 0, reg, NULL, NULL, err, sizeof(err));
	struct proxy_table *t2;

	(void)state;
	snap_obj_unref(&cref->obj); /* the tables hold it */
	assert_non_null(t1);
	t2 = proxy_table_derive(t1, &tr, reg, NULL, NULL, err, sizeof(err));
	assert_non_null(t2);
	assert_int_equal(t2->nservices, NSVC);
	for (uint32_t i = 0; i < NSVC; i++) {
		assert_int_equal(t2->services[i].index, (int)i);
		if (i == 500)
			assert_ptr_not_equal(t2->services[i].mem, t1->services[i].mem);
		else
			assert_ptr_equal(t2->services[i].mem, t1->services[i].mem);
	}
	assert_int_equal(t1->services[500].canary, -1);
	assert_int_equal(t2->services[500].canary, 1);
	assert_int_equal(t2->services[500].weight, 25000);
	/* routes resolve into the new table's services */
	assert_ptr_equal(
	    proxy_route_match(&t2->listeners[0], STR_LIT("h500.example.com"), STR_LIT("/")),
	    &t2->services[500]);
	assert_ptr_equal(
	    proxy_route_match(&t1->listeners[0], STR_LIT("h500.example.com"), STR_LIT("/")),
	    &t1->services[500]);
	assert_null(proxy_table_derive(t2, &bad, reg, NULL, NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "v9"));
	assert_null(proxy_table_derive(t2, &none, reg, NULL, NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "nope"));
	/* the old table goes first; the new one keeps what it shares */
	snap_obj_unref(&t1->obj);
	assert_string_equal(t2->services[499].versions[0].name, "v1");
	assert_string_equal(
	    proxy_route_match(&t2->listeners[0], STR_LIT("h499.example.com"), STR_LIT("/"))->name,
	    "s499");
	snap_obj_unref(&t2->obj);
	proxy_registry_free(reg);
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
	    cmocka_unit_test(test_many_routes_match_as_the_linear_order),
	    cmocka_unit_test(test_derive_rebuilds_one_service_and_shares_the_rest),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
