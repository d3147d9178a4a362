/* Active health checks (proxy/health.h): the counting state machine, the
 * expect range, the `health:` key's defaults and errors, never taking out
 * the last endpoint of a version, the reason of an all-down version, the
 * routing table's pick without the endpoints held out, and reloads keeping
 * the counts of endpoints still configured. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "proxy/health.h"
#include "proxy/registry.h"
#include "proxy/table.h"

static const char *yaml =
    "admin: {listen: 127.0.0.1:9901}\n"
    "listeners:\n"
    "  - {name: pub, listen: 127.0.0.1:8080, routes: [{match: {path_prefix: /}, service: "
    "web}]}\n"
    "services:\n"
    "  web:\n"
    "    versions:\n"
    "      v1: {endpoints: [127.0.0.1:7001]}\n"
    "      v2:\n"
    "        endpoints: [127.0.0.1:7002, 127.0.0.1:7003]\n"
    "        health: {path: /ready, interval: 200ms, timeout: 100ms, healthy: 2, unhealthy: "
    "3, expect: 200-204}\n"
    "    stable: v1\n";

static struct config *load(const char *text)
{
	struct config_errors errs;
	struct config *cfg;

	config_errors_init(&errs);
	cfg = config_load_string("t.yaml", text, strlen(text), &errs);
	if (!cfg)
		config_errors_print(&errs, stderr);
	config_errors_release(&errs);
	assert_non_null(cfg);
	return cfg;
}

/* The formatted errors of loading text, joined by newlines. */
static void errors_of(const char *text, char *out, size_t len)
{
	struct config_errors errs;
	struct config *cfg;
	size_t off = 0;

	config_errors_init(&errs);
	cfg = config_load_string("t.yaml", text, strlen(text), &errs);
	assert_null(cfg);
	out[0] = '\0';
	for (size_t i = 0; i < config_errors_count(&errs) && off < len; i++) {
		char line[512];

		config_error_format(config_errors_get(&errs, i), line, sizeof(line));
		off += (size_t)snprintf(out + off, len - off, "%s\n", line);
	}
	config_errors_release(&errs);
}

/* yaml with the v2 health line replaced by `health: VALUE`. */
static void with_health(const char *value, char *out, size_t len)
{
	const char *at = strstr(yaml, "        health:");
	const char *end = strchr(at, '\n');

	snprintf(out, len, "%.*s        health: %s%s", (int)(at - yaml), yaml, value, end);
}

static const struct config_health hc3 = {
    .enabled = true, .healthy = 2, .unhealthy = 3, .expect_lo = 200, .expect_hi = 399};

static void test_counts_state_machine(void **state)
{
	struct health_counts c = {0};

	(void)state;
	/* unknown: one pass makes it up (it was never out) */
	assert_true(health_counts_note(&c, &hc3, true));
	assert_int_equal(c.state, HEALTH_UP);
	/* up -> down takes `unhealthy` failures in a row; a pass restarts the count */
	assert_false(health_counts_note(&c, &hc3, false));
	assert_false(health_counts_note(&c, &hc3, false));
	assert_false(health_counts_note(&c, &hc3, true));
	assert_false(health_counts_note(&c, &hc3, false));
	assert_false(health_counts_note(&c, &hc3, false));
	assert_int_equal(c.state, HEALTH_UP);
	assert_true(health_counts_note(&c, &hc3, false));
	assert_int_equal(c.state, HEALTH_DOWN);
	/* down -> up takes `healthy` passes in a row; a failure restarts the count */
	assert_false(health_counts_note(&c, &hc3, true));
	assert_false(health_counts_note(&c, &hc3, false));
	assert_false(health_counts_note(&c, &hc3, true));
	assert_int_equal(c.state, HEALTH_DOWN);
	assert_true(health_counts_note(&c, &hc3, true));
	assert_int_equal(c.state, HEALTH_UP);
	/* unknown -> down without ever passing */
	c = (struct health_counts){0};
	assert_false(health_counts_note(&c, &hc3, false));
	assert_false(health_counts_note(&c, &hc3, false));
	assert_true(health_counts_note(&c, &hc3, false));
	assert_int_equal(c.state, HEALTH_DOWN);
}

static void test_expect_range(void **state)
{
	struct config_health one = hc3;

	(void)state;
	assert_true(health_status_ok(&hc3, 200));
	assert_true(health_status_ok(&hc3, 399));
	assert_false(health_status_ok(&hc3, 400));
	assert_false(health_status_ok(&hc3, 199));
	assert_false(health_status_ok(&hc3, 0)); /* no answer */
	one.expect_lo = one.expect_hi = 204;
	assert_true(health_status_ok(&one, 204));
	assert_false(health_status_ok(&one, 200));
}

static void test_config_defaults_and_values(void **state)
{
	char text[2048];
	struct config *cfg = load(yaml);
	const struct config_health *h = &cfg->services[0].versions[1].health;

	(void)state;
	assert_false(cfg->services[0].versions[0].health.enabled);
	assert_true(h->enabled);
	assert_string_equal(h->path, "/ready");
	assert_int_equal(h->interval_ms, 200);
	assert_int_equal(h->timeout_ms, 100);
	assert_int_equal(h->expect_lo, 200);
	assert_int_equal(h->expect_hi, 204);
	config_free(cfg);
	with_health("{}", text, sizeof(text));
	cfg = load(text);
	h = &cfg->services[0].versions[1].health;
	assert_true(h->enabled);
	assert_string_equal(h->path, "/healthz");
	assert_int_equal(h->interval_ms, 5000);
	assert_int_equal(h->timeout_ms, 1000);
	assert_int_equal(h->healthy, 2);
	assert_int_equal(h->unhealthy, 3);
	assert_int_equal(h->expect_lo, 200);
	assert_int_equal(h->expect_hi, 399);
	config_free(cfg);
	with_health("{expect: 503}", text, sizeof(text));
	cfg = load(text);
	assert_int_equal(cfg->services[0].versions[1].health.expect_lo, 503);
	assert_int_equal(cfg->services[0].versions[1].health.expect_hi, 503);
	config_free(cfg);
}

static void test_config_errors_name_the_key(void **state)
{
	static const struct {
		const char *value, *want;
	} cases[] = {
	    {"{interval: 1s, timeout: 1s}",
	     "t.yaml:10: services.web.versions.v2.health.timeout: must be above 0 and below the "
	     "interval (1000ms)\n"},
	    {"{interval: 1s, timeout: 2s}",
	     "t.yaml:10: services.web.versions.v2.health.timeout: must be above 0 and below the "
	     "interval (1000ms)\n"},
	    {"{healthy: 0}", "services.web.versions.v2.health.healthy: "},
	    {"{unhealthy: 0}", "services.web.versions.v2.health.unhealthy: "},
	    {"{expect: 399-200}", "services.web.versions.v2.health.expect: expected a status"},
	    {"{expect: 200-700}", "services.web.versions.v2.health.expect: expected a status"},
	    {"{expect: ok}", "services.web.versions.v2.health.expect: expected a status"},
	    {"{path: healthz}", "services.web.versions.v2.health.path: expected a path"},
	    {"{color: red}", "services.web.versions.v2.health.color"},
	};
	char text[2048], out[4096];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		with_health(cases[i].value, text, sizeof(text));
		errors_of(text, out, sizeof(out));
		if (!strstr(out, cases[i].want))
			fail_msg("health: %s\nwant: %s\ngot: %s", cases[i].value, cases[i].want,
			         out);
	}
}

static void test_never_the_last_endpoint(void **state)
{
	struct config *cfg = load(yaml);
	struct health *h = health_new(NULL, NULL, 0);
	struct health_view a, b;
	char reason[512];
	int64_t since = 0;

	(void)state;
	assert_int_equal(health_configure(h, cfg), 0);
	assert_int_equal(health_view(h, "web", "v2", "127.0.0.1:7002", &a), 0);
	assert_int_equal(a.state, HEALTH_UNKNOWN);
	assert_true(a.in_pick);
	assert_int_equal(health_view(h, "web", "v1", "127.0.0.1:7001", &a), -ENOENT);
	assert_string_equal(a.reason, "no health check configured");
	/* 7002 fails 3 times: down, out of the pick (7003 remains) */
	for (int i = 0; i < 3; i++)
		assert_int_equal(
		    health_note_probe(h, "web", "v2", "127.0.0.1:7002", 503, 3, NULL, 1000 + i), 0);
	health_view(h, "web", "v2", "127.0.0.1:7002", &a);
	assert_int_equal(a.state, HEALTH_DOWN);
	assert_false(a.in_pick);
	assert_false(a.kept);
	assert_int_equal(a.last_status, 503);
	assert_non_null(strstr(a.reason, "status 503 (expected 200-204)"));
	assert_false(health_version_down(h, "web", "v2", reason, sizeof(reason), &since));
	/* 7003 times out 3 times: down too, but the last in the pick: kept */
	for (int i = 0; i < 3; i++)
		health_note_probe(h, "web", "v2", "127.0.0.1:7003", 0, 100,
		                  "no answer within 100ms", 2000 + i);
	health_view(h, "web", "v2", "127.0.0.1:7003", &b);
	assert_int_equal(b.state, HEALTH_DOWN);
	assert_true(b.in_pick);
	assert_true(b.kept);
	assert_non_null(strstr(b.reason, "the last endpoint of its version"));
	assert_true(health_version_down(h, "web", "v2", reason, sizeof(reason), &since));
	assert_int_equal(since, 2002);
	assert_non_null(strstr(reason, "every endpoint of web v2 fails its health checks"));
	assert_non_null(strstr(reason, "127.0.0.1:7002 down since"));
	assert_non_null(strstr(reason, "127.0.0.1:7003 down since"));
	assert_non_null(strstr(reason, "no answer within 100ms"));
	/* 7002 passes twice: up and back in; then the failing 7003 leaves the pick */
	health_note_probe(h, "web", "v2", "127.0.0.1:7002", 200, 1, NULL, 3000);
	health_view(h, "web", "v2", "127.0.0.1:7002", &a);
	assert_int_equal(a.state, HEALTH_DOWN);
	assert_false(a.in_pick);
	health_note_probe(h, "web", "v2", "127.0.0.1:7002", 204, 1, NULL, 3001);
	health_view(h, "web", "v2", "127.0.0.1:7002", &a);
	health_view(h, "web", "v2", "127.0.0.1:7003", &b);
	assert_int_equal(a.state, HEALTH_UP);
	assert_true(a.in_pick);
	assert_int_equal(a.since_ms, 3001);
	assert_false(b.in_pick);
	assert_false(b.kept);
	assert_false(health_version_down(h, "web", "v2", NULL, 0, NULL));
	health_free(h);
	config_free(cfg);
}

static void test_reload_keeps_counts_of_endpoints_kept(void **state)
{
	struct config *cfg = load(yaml), *cfg2;
	struct health *h = health_new(NULL, NULL, 0);
	struct health_view v;
	char text[2048];

	(void)state;
	assert_int_equal(health_configure(h, cfg), 0);
	for (int i = 0; i < 3; i++)
		health_note_probe(h, "web", "v2", "127.0.0.1:7002", 500, 1, NULL, 1000);
	assert_int_equal(health_configure(h, cfg), 0);
	health_view(h, "web", "v2", "127.0.0.1:7002", &v);
	assert_int_equal(v.state, HEALTH_DOWN);
	assert_false(v.in_pick);
	/* the check removed: the endpoint is not checked any more */
	snprintf(text, sizeof(text), "%.*s    stable: v1\n",
	         (int)(strstr(yaml, "        health:") - yaml), yaml);
	cfg2 = load(text);
	assert_int_equal(health_configure(h, cfg2), 0);
	assert_int_equal(health_view(h, "web", "v2", "127.0.0.1:7002", &v), -ENOENT);
	assert_true(v.in_pick);
	health_free(h);
	config_free(cfg2);
	config_free(cfg);
}

static void test_table_leaves_down_endpoints_out_of_the_pick(void **state)
{
	struct config_ref *cref = config_ref_new(load(yaml));
	struct proxy_registry *reg = proxy_registry_new();
	struct proxy_down one[] = {{"v2", "127.0.0.1:7002"}};
	struct proxy_down both[] = {{"v2", "127.0.0.1:7002"}, {"v2", "127.0.0.1:7003"}};
	struct proxy_traffic tr = {.service = "web", .down = one, .ndown = 1};
	char err[256];
	struct proxy_table *t = proxy_table_build(cref, &tr, 1, reg, NULL, NULL, err, sizeof(err));
	const struct proxy_version *v;

	(void)state;
	assert_non_null(t);
	v = &t->services[0].versions[1];
	assert_int_equal(v->nall, 2);
	assert_int_equal(v->neps, 1);
	assert_string_equal(proxy_registry_get(reg, v->eps[0])->name, "127.0.0.1:7003");
	assert_string_equal(proxy_registry_get(reg, v->eps[1])->name, "127.0.0.1:7002");
	snap_obj_unref(&t->obj);
	/* every endpoint listed: the version keeps them all in the pick */
	tr.down = both;
	tr.ndown = 2;
	t = proxy_table_build(cref, &tr, 1, reg, NULL, NULL, err, sizeof(err));
	assert_non_null(t);
	v = &t->services[0].versions[1];
	assert_int_equal(v->neps, 2);
	assert_int_equal(v->nall, 2);
	snap_obj_unref(&t->obj);
	proxy_registry_free(reg);
	snap_obj_unref(&cref->obj);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_counts_state_machine),
	    cmocka_unit_test(test_expect_range),
	    cmocka_unit_test(test_config_defaults_and_values),
	    cmocka_unit_test(test_config_errors_name_the_key),
	    cmocka_unit_test(test_never_the_last_endpoint),
	    cmocka_unit_test(test_reload_keeps_counts_of_endpoints_kept),
	    cmocka_unit_test(test_table_leaves_down_endpoints_out_of_the_pick),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
