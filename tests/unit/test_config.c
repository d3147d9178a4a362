/*
 * test_config.c - the config module: the SPEC example loads with the right
 * values and defaults; bad configs give exactly the expected error lines;
 * the scalar validators' edge cases; the JSON flag validator.
 *
 * Runs with the repository root as the working directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "config/config.h"

#define DATA "tests/unit/data/config/"

static void set_test_env(void)
{
	setenv("CANARYD_TEST_ADMIN_TOKEN", "admin-secret", 1);
	setenv("CANARYD_TEST_PREFIX", "pre", 1);
	setenv("CANARYD_ADMIN_TOKEN", "qs-admin", 1);
	setenv("CANARYD_READ_TOKEN", "qs-read", 1);
}

/* Loads yaml as "bad.yaml" and checks the formatted errors are exactly `want` (NULL-ended). */
static void expect_errors(const char *yaml, const char *const *want)
{
	struct config_errors errs = {0};
	struct config *cfg = config_load_string("bad.yaml", yaml, strlen(yaml), &errs);
	size_t n = 0;
	char line[2048];

	while (want[n])
		n++;
	if (config_errors_count(&errs) != n) {
		config_errors_print(&errs, stderr);
		fail_msg("expected %zu errors, got %zu", n, config_errors_count(&errs));
	}
	for (size_t i = 0; i < n; i++) {
		config_error_format(config_errors_get(&errs, i), line, sizeof(line));
		if (strcmp(line, want[i]) != 0)
			config_errors_print(&errs, stderr);
		assert_string_equal(line, want[i]);
	}
	if (n)
		assert_null(cfg);
	else
		assert_non_null(cfg);
	config_free(cfg);
	config_errors_release(&errs);
}

#define EXPECT(yaml, ...)                                        \
	do {                                                     \
		const char *const want_[] = {__VA_ARGS__, NULL}; \
		expect_errors(yaml, want_);                      \
	} while (0)

static struct config *load_ok(const char *path)
{
	struct config_errors errs = {0};
	struct config *cfg = config_load_file(path, &errs);

	if (!cfg)
		config_errors_print(&errs, stderr);
	assert_non_null(cfg);
	assert_int_equal(config_errors_count(&errs), 0);
	config_errors_release(&errs);
	return cfg;
}

/* --- the full example ---------------------------------------------------------------- */

static void test_full_example(void **state)
{
	struct config *cfg;
	const struct config_service *s;
	const struct config_flag *f;
	const struct config_rollout *r;
	const struct config_token *t;
	char buf[256];

	(void)state;
	set_test_env();
	cfg = load_ok(DATA "full.yaml");

	assert_string_equal(cfg->admin.listen.host, "127.0.0.1");
	assert_int_equal(cfg->admin.listen.port, 9901);
	assert_int_equal(cfg->admin.ntokens, 4);
	t = config_token_find(cfg, "ops");
	assert_non_null(t);
	assert_string_equal(t->secret, "admin-secret");
	assert_int_equal(t->scopes, CONFIG_SCOPE_ADMIN);
	t = config_token_find(cfg, "vp-eng");
	assert_string_equal(t->secret, "vp-eng-secret"); /* file, newline trimmed */
	assert_int_equal(t->scopes, CONFIG_SCOPE_READ | CONFIG_SCOPE_APPROVE);
	assert_int_equal(t->line, 8);
	assert_string_equal(config_token_find(cfg, "infra-director")->secret, "pre-infra");
	assert_false(cfg->admin.public_read);
	assert_true(cfg->admin.evaluate_public);
	assert_int_equal(cfg->store.kind, CONFIG_STORE_SQLITE);
	assert_string_equal(cfg->store.path, "canaryd.db");
	assert_int_equal(cfg->workers, 0);
	assert_string_equal(cfg->metrics.prometheus, "http://127.0.0.1:9090");

	assert_int_equal(cfg->nlisteners, 1);
	assert_string_equal(cfg->listeners[0].name, "public");
	assert_string_equal(cfg->listeners[0].listen.host, "0.0.0.0");
	assert_int_equal(cfg->listeners[0].nroutes, 2);
	assert_string_equal(cfg->listeners[0].routes[0].host, "api.example.com");
	assert_string_equal(cfg->listeners[0].routes[0].path_prefix, "/");
	assert_null(cfg->listeners[0].routes[1].host);
	assert_string_equal(cfg->listeners[0].routes[1].path_prefix, "/");
	assert_ptr_equal(cfg->listeners[0].routes[0].svc, config_service_find(cfg, "dwcp-manager"));

	s = config_service_find(cfg, "dwcp-manager");
	assert_non_null(s);
	assert_int_equal(s->line, 36);
	assert_int_equal(s->nversions, 2);
	assert_int_equal(s->versions[0].nendpoints, 2);
	assert_string_equal(s->versions[0].endpoints[1].host, "10.0.0.2");
	assert_int_equal(s->versions[0].endpoints[1].port, 7000);
	assert_string_equal(s->versions[1].endpoints[0].host, "::1");
	assert_int_equal(s->versions[1].endpoints[0].family, AF_INET6);
	assert_string_equal(s->stable, "v1");
	assert_int_equal(s->sticky.kind, CONFIG_KEY_HEADER);
	assert_string_equal(s->sticky.name, "x-user-id"); /* lower-cased */
	assert_int_equal(s->ncontext, 2);
	assert_int_equal(s->context[1].src.kind, CONFIG_KEY_COOKIE);
	assert_string_equal(s->context[1].src.name, "plan");
	assert_int_equal(s->noverrides, 3);
	assert_int_equal(s->overrides[0].match, CONFIG_MATCH_HEADER);
	assert_string_equal(s->overrides[0].name, "x-canary");
	assert_string_equal(s->overrides[0].value, "always");
	assert_int_equal(s->overrides[0].action, CONFIG_OVERRIDE_CANARY);
	assert_ptr_equal(s->overrides[1].segment, config_segment_find(cfg, "internal"));
	assert_int_equal(s->overrides[2].action, CONFIG_OVERRIDE_VERSION);
	assert_string_equal(s->overrides[2].version, "v1");
	assert_int_equal(s->timeouts.connect_ms, 2000);
	assert_int_equal(s->timeouts.idle_ms, 60000);
	assert_int_equal(s->outlier.consecutive_5xx, 5);
	assert_int_equal(s->outlier.base_ejection_ms, 30000);
	assert_int_equal(s->outlier.max_ejected_percent, 50000);
	assert_true(s->mirror.enabled);
	assert_null(s->mirror.version);
	assert_int_equal(s->mirror.percent, 12500);
	assert_int_equal(s->mirror.body_cap, 128 * 1024);
	assert_true(s->mirror.compare_body);
	assert_int_equal(s->mirror.methods.n, 3);
	assert_string_equal(s->mirror.methods.v[0], "GET");
	assert_true(s->versions[1].fault.has_delay);
	assert_int_equal(s->versions[1].fault.delay_ms, 200);
	assert_int_equal(s->versions[1].fault.delay_percent, 10000);
	assert_int_equal(s->versions[1].fault.abort_status, 503);
	assert_int_equal(s->versions[1].fault.abort_percent, 500);
	assert_false(s->versions[0].fault.has_delay);
	assert_int_equal(s->drain_ms, 30000);
	assert_int_equal(s->max_header_bytes, 32768);

	assert_int_equal(cfg->nsegments, 3);
	assert_int_equal(cfg->segments[0].conds[0].op, CONFIG_OP_ENDS_WITH);
	assert_string_equal(cfg->segments[0].conds[0].values.v[0], "@novacron.io");
	assert_int_equal(cfg->segments[2].conds[1].op, CONFIG_OP_GTE);
	assert_string_equal(cfg->segments[2].conds[1].values.v[0], "18");

	f = config_flag_find(cfg, "dwcp_v3_hde");
	assert_non_null(f);
	assert_string_equal(f->description, "DWCP v3 hierarchical delta encoding");
	assert_true(f->enabled);
	assert_int_equal(f->nvariants, 2);
	assert_true(json_is_true(config_variant_find(f, "on")->value));
	assert_true(json_is_false(config_variant_find(f, "off")->value));
	assert_string_equal(f->off_variant, "off");
	assert_int_equal(f->off_index, 1);
	assert_string_equal(f->sticky, "nodeId");
	assert_int_equal(f->nrules, 2);
	assert_string_equal(f->rules[0].serve, "on");
	assert_int_equal(f->rules[0].serve_index, 0);
	assert_ptr_equal(f->rules[1].seg, config_segment_find(cfg, "premium"));
	assert_int_equal(f->rules[1].rollout.n, 1);
	assert_int_equal(f->rules[1].rollout.v[0].percent, 10000);
	assert_int_equal(f->rollout.total, 10000);
	assert_int_equal(f->exclude.n, 2);
	assert_string_equal(f->exclude.v[1], "node-456");
	assert_string_equal(f->include.v[0], "node-7");
	/* defaults */
	f = config_flag_find(cfg, "plain");
	assert_true(f->enabled);
	assert_string_equal(f->sticky, "targetingKey");
	assert_string_equal(f->description, "");
	assert_int_equal(f->nvariants, 2);
	assert_string_equal(f->off_variant, "off");

	r = config_rollout_find(cfg, "dwcp-manager-v3");
	assert_non_null(r);
	assert_int_equal(r->ntargets, 2);
	assert_int_equal(r->targets[0].kind, CONFIG_TARGET_SERVICE);
	assert_ptr_equal(r->targets[0].svc, s);
	assert_string_equal(r->targets[0].canary, "v3");
	assert_int_equal(r->targets[1].kind, CONFIG_TARGET_FLAG);
	assert_ptr_equal(r->targets[1].flg, config_flag_find(cfg, "dwcp_v3_hde"));
	assert_int_equal(r->nsteps, 7);
	assert_int_equal(r->steps[0].kind, CONFIG_STEP_SHADOW);
	assert_int_equal(r->steps[0].shadow_percent, 100000);
	assert_int_equal(r->steps[0].for_ms, 7ull * 86400000);
	assert_int_equal(r->steps[1].kind, CONFIG_STEP_SET);
	assert_int_equal(r->steps[1].nsets, 2);
	assert_int_equal(r->steps[1].sets[1].index, 1);
	assert_int_equal(r->steps[1].sets[1].percent, 5000);
	assert_int_equal(r->steps[2].kind, CONFIG_STEP_APPROVAL);
	assert_int_equal(r->steps[2].approvers.n, 3);
	assert_int_equal(r->steps[3].not_before.kind, CONFIG_NOT_BEFORE_TIME_OF_DAY);
	assert_int_equal(r->steps[3].not_before.minute_of_day, 360);
	assert_true(r->steps[3].window.set);
	assert_int_equal(r->steps[3].window.days, 0x1f);
	assert_int_equal(r->steps[3].window.end_min, 18 * 60);
	assert_int_equal(r->steps[4].kind, CONFIG_STEP_ANALYSIS);
	assert_int_equal(r->steps[4].analysis_for_ms, 30 * 60000);
	assert_int_equal(r->steps[5].kind, CONFIG_STEP_PAUSE);
	assert_int_equal(r->steps[5].pause_ms, 0);
	assert_int_equal(r->steps[6].sets[0].percent, 100000);
	assert_int_equal(r->analysis.interval_ms, 60000);
	assert_int_equal(r->analysis.nchecks, 5);
	assert_int_equal(r->analysis.checks[0].metric, CONFIG_METRIC_ERROR_RATE);
	assert_true(r->analysis.checks[0].max.set);
	assert_true(r->analysis.checks[0].max.value == 0.03);
	assert_false(r->analysis.checks[0].min.set);
	assert_int_equal(r->analysis.checks[0].min_samples, 200);
	assert_int_equal(r->analysis.checks[0].for_ms, 300000);
	assert_int_equal(r->analysis.checks[2].test.method, CONFIG_TEST_SEQUENTIAL);
	assert_true(r->analysis.checks[2].test.confidence == 0.99);
	assert_true(r->analysis.checks[2].test.max_increase.value == 0.005);
	assert_int_equal(r->analysis.checks[3].on_fail, CONFIG_ON_FAIL_PAUSE);
	assert_int_equal(r->analysis.checks[3].review_ms, 15 * 60000);
	assert_int_equal(r->analysis.checks[4].source, CONFIG_SOURCE_QUERY);
	assert_string_equal(r->analysis.checks[4].query,
	                    "avg(dwcp_compression_accuracy{version=\"{{version}}\"})");
	assert_string_equal(r->analysis.checks[4].target, "manager");
	assert_int_equal(r->analysis.checks[4].target_index, 0);
	assert_int_equal(r->rollback.drain_ms, 30000);
	assert_int_equal(r->rollback.nhooks, 2);
	assert_int_equal(r->rollback.hooks[0].kind, CONFIG_HOOK_EXEC);
	assert_string_equal(r->rollback.hooks[0].argv.v[1], "{{target}}");
	assert_int_equal(r->rollback.hooks[1].kind, CONFIG_HOOK_WEBHOOK);
	assert_int_equal(r->rollback.hooks[1].timeout_ms, 60000);
	assert_int_equal(r->rollback.verify_ms, 60000);
	assert_int_equal(r->bake_ms, 30 * 60000);
	assert_int_equal(r->nnotify, 1);
	assert_int_equal(r->notify[0].events, CONFIG_EVENT_STEP | CONFIG_EVENT_PAUSED |
	                                          CONFIG_EVENT_APPROVAL_NEEDED |
	                                          CONFIG_EVENT_ROLLBACK | CONFIG_EVENT_COMPLETED);

	config_summary(cfg, buf, sizeof(buf));
	assert_string_equal(buf, DATA "full.yaml: ok: 1 listener, 1 service, 3 segments, 2 flags, "
	                              "1 rollout");
	assert_non_null(strstr(cfg->source, "dwcp-manager-v3"));
	config_free(cfg);
}

static void test_quickstart_example(void **state)
{
	struct config *cfg;
	const struct config_rollout *r;

	(void)state;
	set_test_env();
	cfg = load_ok("examples/quickstart/canaryd.yaml");
	assert_string_equal(config_token_find(cfg, "ops")->secret, "qs-admin");
	assert_int_equal(config_token_find(cfg, "viewer")->scopes, CONFIG_SCOPE_READ);
	assert_string_equal(cfg->store.path, "canaryd-quickstart.db");
	assert_int_equal(cfg->workers, 1);
	assert_int_equal(cfg->listeners[0].listen.port, 8080);
	assert_true(config_service_find(cfg, "demo")->expose_cohort);
	assert_non_null(config_flag_find(cfg, "new_checkout"));
	r = config_rollout_find(cfg, "demo-v2");
	assert_non_null(r);
	assert_int_equal(r->ntargets, 1);
	assert_string_equal(r->targets[0].name, "demo");
	assert_int_equal(r->nsteps, 4);
	assert_int_equal(r->steps[0].sets[0].percent, 10000);
	assert_int_equal(r->analysis.nchecks, 2);
	config_free(cfg);
}

static void test_defaults(void **state)
{
	const char *yaml = "services:\n"
	                   "  web:\n"
	                   "    versions: {v1: {endpoints: [localhost:80]}}\n"
	                   "    stable: v1\n";
	struct config_errors errs = {0};
	struct config *cfg = config_load_string("d.yaml", yaml, strlen(yaml), &errs);
	const struct config_service *s;
	char buf[256];

	(void)state;
	assert_non_null(cfg);
	assert_string_equal(cfg->admin.listen.host, "127.0.0.1");
	assert_int_equal(cfg->admin.listen.port, 9901);
	assert_int_equal(cfg->admin.ntokens, 0);
	assert_string_equal(cfg->store.url, "sqlite:canaryd.db");
	assert_int_equal(cfg->workers, 0);
	assert_null(cfg->metrics.prometheus);
	s = &cfg->services[0];
	assert_int_equal(s->line, 2);
	assert_int_equal(s->sticky.kind, CONFIG_KEY_NONE);
	assert_false(s->expose_cohort);
	assert_false(s->mirror.enabled);
	assert_int_equal(s->timeouts.connect_ms, 2000);
	assert_int_equal(s->timeouts.header_ms, 10000);
	assert_int_equal(s->timeouts.response_ms, 30000);
	assert_int_equal(s->timeouts.idle_ms, 60000);
	assert_int_equal(s->outlier.consecutive_5xx, 5);
	assert_int_equal(s->drain_ms, 30000);
	assert_int_equal(s->max_header_bytes, 32768);
	assert_int_equal(s->versions[0].endpoints[0].family, AF_UNSPEC);
	config_summary(cfg, buf, sizeof(buf));
	assert_string_equal(buf,
	                    "d.yaml: ok: 0 listeners, 1 service, 0 segments, 0 flags, 0 rollouts");
	config_free(cfg);
	config_errors_release(&errs);
}

/* --- bad configs: exact messages ---------------------------------------------------------- */

static const char svc_web[] = "services:\n"
                              "  web:\n"
                              "    versions:\n"
                              "      v1: {endpoints: [10.0.0.1:80]}\n"
                              "      v2: {endpoints: [10.0.0.2:80]}\n"
                              "    stable: v1\n";

static void test_undefined_version(void **state)
{
	(void)state;
	EXPECT("services:\n"
	       "  web:\n"
	       "    versions:\n"
	       "      v1:\n"
	       "        endpoints: [10.0.0.1:80]\n"
	       "    sticky: none\n"
	       "    stable: v9\n",
	       "bad.yaml:7: services.web.stable: version \"v9\" is not defined in service \"web\" "
	       "(defined: v1)");
}

static void test_unknown_keys_types_duplicates(void **state)
{
	(void)state;
	EXPECT("admin:\n"
	       "  listen: 127.0.0.1:9901\n"
	       "  listen: 127.0.0.1:9902\n"
	       "  publik_read: true\n"
	       "  public_read: yes\n"
	       "  tokens: {name: x}\n"
	       "workers: many\n"
	       "metrics: http://x\n"
	       "colour: blue\n",
	       "bad.yaml:3: admin.listen: duplicate key (first defined on line 2)",
	       "bad.yaml:4: admin.publik_read: unknown key (did you mean `public_read`?)",
	       "bad.yaml:5: admin.public_read: expected true or false, got \"yes\"",
	       "bad.yaml:6: admin.tokens: expected a sequence, got a mapping",
	       "bad.yaml:7: workers: expected an integer, got \"many\"",
	       "bad.yaml:8: metrics: expected a mapping, got a scalar",
	       "bad.yaml:9: colour: unknown key");
}

static void test_step_weight_range(void **state)
{
	char yaml[1024];

	(void)state;
	snprintf(yaml, sizeof(yaml),
	         "%srollouts:\n"
	         "  web:\n"
	         "    target: {service: web, canary: v2}\n"
	         "    steps:\n"
	         "      - weight: 10\n"
	         "      - weight: 50.5\n"
	         "      - weight: 0.0005\n"
	         "      - weight: 101\n"
	         "      - weight: ten\n"
	         "      - weight: \"5\"\n",
	         svc_web);
	EXPECT(yaml,
	       "bad.yaml:13: rollouts.web.steps[2].weight: at most 3 decimals are allowed (0.001% "
	       "steps)",
	       "bad.yaml:14: rollouts.web.steps[3].weight: must be between 0 and 100",
	       "bad.yaml:15: rollouts.web.steps[4].weight: expected a percentage, got \"ten\"",
	       "bad.yaml:16: rollouts.web.steps[5].weight: expected a percentage, got the string "
	       "\"5\"");
}

static void test_addresses_and_endpoints(void **state)
{
	(void)state;
	EXPECT("services:\n"
	       "  dwcp-manager:\n"
	       "    versions:\n"
	       "      v1: {endpoints: [10.0.0.1:7000, 10.0.0.1:70000, \"::1:80\", \"[::1]:80\"]}\n"
	       "      v2: {endpoints: []}\n"
	       "      v3: {endpoints: [bad_host-:1, 999.0.0.1:5, \"[zz]:1\", nohost]}\n"
	       "      v4: {}\n"
	       "    stable: v1\n",
	       "bad.yaml:4: services.dwcp-manager.versions.v1.endpoints[1]: invalid address "
	       "\"10.0.0.1:70000\": port must be between 1 and 65535",
	       "bad.yaml:4: services.dwcp-manager.versions.v1.endpoints[2]: invalid address "
	       "\"::1:80\": IPv6 addresses must be written in brackets: [::1]:port",
	       "bad.yaml:5: services.dwcp-manager.versions.v2.endpoints: at least one endpoint is "
	       "required",
	       "bad.yaml:6: services.dwcp-manager.versions.v3.endpoints[0]: invalid address "
	       "\"bad_host-:1\": invalid host name",
	       "bad.yaml:6: services.dwcp-manager.versions.v3.endpoints[1]: invalid address "
	       "\"999.0.0.1:5\": invalid IPv4 address",
	       "bad.yaml:6: services.dwcp-manager.versions.v3.endpoints[2]: invalid address "
	       "\"[zz]:1\": invalid IPv6 address",
	       "bad.yaml:6: services.dwcp-manager.versions.v3.endpoints[3]: invalid address "
	       "\"nohost\": expected host:port",
	       "bad.yaml:7: services.dwcp-manager.versions.v4: missing required key \"endpoints\"");
}

static void test_service_policy_errors(void **state)
{
	(void)state;
	EXPECT(
	    "segments:\n"
	    "  internal: {match: [{attr: email, op: ends_with, values: [\"@x.io\"]}]}\n"
	    "services:\n"
	    "  web:\n"
	    "    versions: {v1: {endpoints: [a:1]}, v2: {endpoints: [b:1]}}\n"
	    "    stable: v1\n"
	    "    sticky: header\n"
	    "    context: {email: header:x-email, plan: body:plan}\n"
	    "    overrides:\n"
	    "      - match: {segment: external}\n"
	    "        cohort: canary\n"
	    "      - match: {header: {x-a: b}}\n"
	    "        cohort: blue\n"
	    "      - match: {segment: internal}\n"
	    "        version: v3\n"
	    "      - match: {segment: internal}\n"
	    "    timeouts: {connect: 2 s, idle: 0}\n"
	    "    outlier: {consecutive_5xx: -1, max_ejected_percent: 100.5}\n"
	    "    mirror: {version: v5, methods: [get], body_cap: 1TiB}\n"
	    "    faults: {v2: {abort: {status: 600}}, v7: {delay: {ms: 10}}}\n"
	    "    drain: forever\n"
	    "    max_header_bytes: 10\n",
	    "bad.yaml:7: services.web.sticky: expected header:NAME, cookie:NAME, ip or none, got "
	    "\"header\"",
	    "bad.yaml:8: services.web.context.plan: expected header:NAME, cookie:NAME, "
	    "query:NAME or ip, got \"body:plan\"",
	    "bad.yaml:10: services.web.overrides[0].match.segment: segment \"external\" is not "
	    "defined",
	    "bad.yaml:13: services.web.overrides[1].cohort: expected canary or stable, got "
	    "\"blue\"",
	    "bad.yaml:15: services.web.overrides[2].version: version \"v3\" is not defined in "
	    "service \"web\" (defined: v1, v2)",
	    "bad.yaml:16: services.web.overrides[3]: missing required key \"cohort\" (or "
	    "\"version\")",
	    "bad.yaml:17: services.web.timeouts.connect: expected a duration like 250ms, 30s, "
	    "5m, 24h or 14d, got \"2 s\"",
	    "bad.yaml:17: services.web.timeouts.idle: must be greater than 0",
	    "bad.yaml:18: services.web.outlier.consecutive_5xx: must be an integer between 0 and "
	    "1000000",
	    "bad.yaml:18: services.web.outlier.max_ejected_percent: must be between 0 and 100",
	    "bad.yaml:19: services.web.mirror.methods[0]: expected an upper-case HTTP method like "
	    "GET, got \"get\"",
	    "bad.yaml:19: services.web.mirror.body_cap: expected a size like 65536, 64KiB or "
	    "1MiB, got \"1TiB\"",
	    "bad.yaml:19: services.web.mirror.version: version \"v5\" is not defined in service "
	    "\"web\" (defined: v1, v2)",
	    "bad.yaml:20: services.web.faults.v2.abort.status: must be between 100 and 599",
	    "bad.yaml:20: services.web.faults.v7: version \"v7\" is not defined in service \"web\" "
	    "(defined: v1, v2)",
	    "bad.yaml:21: services.web.drain: expected a duration like 250ms, 30s, 5m, 24h or "
	    "14d, got \"forever\"",
	    "bad.yaml:22: services.web.max_header_bytes: must be between 1024 and 1048576 bytes");
}

static void test_admin_errors(void **state)
{
	(void)state;
	EXPECT(
	    "admin:\n"
	    "  listen: 127.0.0.1:0\n"
	    "  tokens:\n"
	    "    - name: ops\n"
	    "      secret: a\n"
	    "      scopes: [admin, root]\n"
	    "    - name: ops\n"
	    "      secret: b\n"
	    "      secret_file: /x\n"
	    "      scopes: [read]\n"
	    "    - name: bad name\n"
	    "      scopes: read\n"
	    "    - name: other\n"
	    "      secret: a\n"
	    "      secret_file: " DATA "does-not-exist.token\n"
	    "      scopes: []\n"
	    "store: mysql://db\n",
	    "bad.yaml:2: admin.listen: invalid address \"127.0.0.1:0\": port must be between 1 "
	    "and 65535",
	    "bad.yaml:6: admin.tokens[0].scopes[1]: unknown scope \"root\" (read, flags:write, "
	    "rollouts:write, approve, evaluate, admin)",
	    "bad.yaml:7: admin.tokens[1]: secret and secret_file are mutually exclusive",
	    "bad.yaml:7: admin.tokens[1].name: duplicate token name \"ops\" (also tokens[0])",
	    "bad.yaml:9: admin.tokens[1].secret_file: cannot read \"/x\": No such file or "
	    "directory",
	    "bad.yaml:11: admin.tokens[2].name: invalid name \"bad name\": use 1 to 64 of A-Z a-z "
	    "0-9 _ . -, not starting with \".\"",
	    "bad.yaml:11: admin.tokens[2]: missing required key \"secret\" (or \"secret_file\")",
	    "bad.yaml:13: admin.tokens[3]: secret and secret_file are mutually exclusive",
	    "bad.yaml:13: admin.tokens[3]: same secret as tokens[0] (\"ops\")",
	    "bad.yaml:15: admin.tokens[3].secret_file: cannot read "
	    "\"" DATA "does-not-exist.token\": No such file or directory",
	    "bad.yaml:16: admin.tokens[3].scopes: at least one scope is required",
	    "bad.yaml:17: store: expected sqlite:PATH or postgres://..., got \"mysql://db\"");
}

static void test_listener_errors(void **state)
{
	char yaml[1024];

	(void)state;
	snprintf(yaml, sizeof(yaml),
	         "%slisteners:\n"
	         "  - name: public\n"
	         "    listen: 127.0.0.1:9901\n"
	         "    routes:\n"
	         "      - match: {host: \"a b\", path_prefix: api}\n"
	         "        service: nope\n"
	         "  - name: public\n"
	         "    listen: 0.0.0.0:80\n"
	         "    routes: []\n"
	         "  - listen: 0.0.0.0:80\n"
	         "    routes: [{service: web, match: {host: \"*.example.com\"}}]\n",
	         svc_web);
	EXPECT(yaml, "bad.yaml:9: listeners[0].listen: address already used by admin.listen",
	       "bad.yaml:11: listeners[0].routes[0].match.host: invalid host \"a b\"",
	       "bad.yaml:11: listeners[0].routes[0].match.path_prefix: must start with \"/\"",
	       "bad.yaml:12: listeners[0].routes[0].service: service \"nope\" is not defined",
	       "bad.yaml:13: listeners[1].name: duplicate listener name \"public\" (also "
	       "listeners[0])",
	       "bad.yaml:15: listeners[1].routes: at least one route is required",
	       "bad.yaml:16: listeners[2]: missing required key \"name\"",
	       "bad.yaml:16: listeners[2].listen: address already used by listeners[1]");
}

static void test_segment_errors(void **state)
{
	(void)state;
	EXPECT("segments:\n"
	       "  s:\n"
	       "    match:\n"
	       "      - {attr: age, op: lt, values: [abc]}\n"
	       "      - {attr: r, op: matches, values: [\"a(\"]}\n"
	       "      - {attr: t, op: before, values: [yesterday, \"2024-01-01T00:00:00Z\"]}\n"
	       "      - {attr: v, op: semver_gt, values: \"1.2\"}\n"
	       "      - {attr: x, op: like, values: [a]}\n"
	       "      - {attr: y, op: eq, values: []}\n"
	       "      - {attr: z, op: in}\n"
	       "  empty: {match: []}\n",
	       "bad.yaml:4: segments.s.match[0].values[0]: op lt needs a number, got \"abc\"",
	       "bad.yaml:5: segments.s.match[1].values[0]: invalid regular expression: Unmatched ( "
	       "or \\(",
	       "bad.yaml:6: segments.s.match[2].values[0]: op before needs an RFC 3339 time, got "
	       "\"yesterday\"",
	       "bad.yaml:7: segments.s.match[3].values: op semver_gt needs a semantic version, got "
	       "\"1.2\"",
	       "bad.yaml:8: segments.s.match[4].op: unknown op \"like\" (eq, neq, in, not_in, "
	       "starts_with, ends_with, contains, matches, lt, lte, gt, gte, semver_lt, semver_eq, "
	       "semver_gt, before, after)",
	       "bad.yaml:9: segments.s.match[5].values: at least one value is required",
	       "bad.yaml:10: segments.s.match[6]: missing required key \"values\"",
	       "bad.yaml:11: segments.empty.match: at least one condition is required");
}

static void test_flag_errors(void **state)
{
	(void)state;
	EXPECT(
	    "segments:\n"
	    "  beta: {match: [{attr: beta, op: eq, values: [\"true\"]}]}\n"
	    "flags:\n"
	    "  f1:\n"
	    "    variants: {a: 1, b: [1, 2], c: {x: null}}\n"
	    "    rules:\n"
	    "      - segment: nope\n"
	    "        serve: z\n"
	    "      - segment: beta\n"
	    "        rollout: {a: 60, b: 50}\n"
	    "      - segment: beta\n"
	    "      - segment: beta\n"
	    "        serve: a\n"
	    "        rollout: {a: 1}\n"
	    "    rollout: {a: 0.0001, q: 5}\n"
	    "    exclude: [n1]\n"
	    "    include: [n1]\n"
	    "    enabled: 1\n"
	    "  f2:\n"
	    "    variants: {on: 1, off: 0}\n"
	    "    off_variant: none\n"
	    "  \"bad name!\": {}\n"
	    "  f3:\n"
	    "    variants: {}\n",
	    "bad.yaml:4: flags.f1: missing required key \"off_variant\" (there is no \"off\" "
	    "variant)",
	    "bad.yaml:7: flags.f1.rules[0].segment: segment \"nope\" is not defined",
	    "bad.yaml:8: flags.f1.rules[0].serve: variant \"z\" is not defined",
	    "bad.yaml:10: flags.f1.rules[1].rollout: percentages add up to 110.000, more than "
	    "100",
	    "bad.yaml:11: flags.f1.rules[2]: missing required key \"serve\" (or \"rollout\")",
	    "bad.yaml:12: flags.f1.rules[3]: serve and rollout are mutually exclusive",
	    "bad.yaml:15: flags.f1.rollout.a: at most 3 decimals are allowed (0.001% steps)",
	    "bad.yaml:15: flags.f1.rollout.q: variant \"q\" is not defined",
	    "bad.yaml:17: flags.f1.include[0]: \"n1\" is also excluded",
	    "bad.yaml:18: flags.f1.enabled: expected true or false, got \"1\"",
	    "bad.yaml:21: flags.f2.off_variant: variant \"none\" is not defined",
	    "bad.yaml:22: flags.bad name!: invalid name \"bad name!\": use 1 to 64 of A-Z a-z 0-9 "
	    "_ . -, not starting with \".\"",
	    "bad.yaml:24: flags.f3.variants: at least one variant is required");
}

static void test_rollout_errors(void **state)
{
	char yaml[4096];

	(void)state;
	snprintf(yaml, sizeof(yaml),
	         "admin:\n"
	         "  tokens:\n"
	         "    - {name: ops, secret: s1, scopes: [admin]}\n"
	         "    - {name: viewer, secret: s2, scopes: [read]}\n"
	         "%s" /* lines 5-10 */
	         "flags:\n"
	         "  f: {}\n"
	         "rollouts:\n"
	         "  r1:\n"
	         "    targets:\n"
	         "      t1: {service: web, canary: v2}\n"
	         "      t2: {flag: nope}\n"
	         "      t3: {service: web}\n"
	         "      t4: {service: web, canary: v1}\n"
	         "      t5: {service: gone, canary: v2}\n"
	         "      t6: {flag: f, service: web}\n"
	         "    steps:\n"
	         "      - weight: 10\n"
	         "      - set: {t9: 5, t1: 5}\n"
	         "      - {}\n"
	         "      - {pause: 5m, shadow: 10}\n"
	         "      - approval: {required: [ops, ghost, viewer]}\n"
	         "      - pause: {}\n"
	         "        for: 5m\n"
	         "        not_before: 6am\n"
	         "        window: Funday 06:00-18:00Z\n"
	         "      - pause: soon\n"
	         "      - analysis: {}\n"
	         "        window: Sat-Sun 22:00-02:00Z\n"
	         "        not_before: 2024-05-01T06:00:00+02:00\n",
	         svc_web);
	EXPECT(
	    yaml, "bad.yaml:17: rollouts.r1.targets.t2.flag: flag \"nope\" is not defined",
	    "bad.yaml:18: rollouts.r1.targets.t3: missing required key \"canary\" (a target is "
	    "{service, canary} or {flag})",
	    "bad.yaml:19: rollouts.r1.targets.t4.canary: \"v1\" is the stable version of service "
	    "\"web\"",
	    "bad.yaml:20: rollouts.r1.targets.t5.service: service \"gone\" is not defined",
	    "bad.yaml:21: rollouts.r1.targets.t6: a target is either {service, canary} or {flag}",
	    "bad.yaml:23: rollouts.r1.steps[0].weight: weight needs a single target; with 6 "
	    "targets use set: {TARGET: PERCENT}",
	    "bad.yaml:24: rollouts.r1.steps[1].set.t9: target \"t9\" is not defined",
	    "bad.yaml:25: rollouts.r1.steps[2]: expected one of set, weight, shadow, pause, "
	    "analysis, approval or preview",
	    "bad.yaml:26: rollouts.r1.steps[3]: only one of set, weight, shadow, pause, analysis, "
	    "approval or preview per step",
	    "bad.yaml:27: rollouts.r1.steps[4].approval.required[1]: token \"ghost\" is not "
	    "defined in admin.tokens",
	    "bad.yaml:27: rollouts.r1.steps[4].approval.required[2]: token \"viewer\" cannot "
	    "approve (needs the approve scope)",
	    "bad.yaml:29: rollouts.r1.steps[5].for: only set, weight, shadow and preview steps "
	    "take "
	    "\"for\" (use pause: DURATION)",
	    "bad.yaml:30: rollouts.r1.steps[5].not_before: expected \"HH:MMZ\" or an RFC 3339 "
	    "time, got \"6am\"",
	    "bad.yaml:31: rollouts.r1.steps[5].window: expected a window like \"Mon-Fri "
	    "06:00-18:00Z\", got \"Funday 06:00-18:00Z\"",
	    "bad.yaml:32: rollouts.r1.steps[6].pause: expected a duration like 250ms, 30s, 5m, "
	    "24h or 14d, got \"soon\"",
	    "bad.yaml:33: rollouts.r1.steps[7].analysis: an analysis step needs analysis.checks");
}

/* Issue 16: named steps, check target sets, rollback_to, upcoming/notice, preview. */
static void test_plan_key_errors(void **state)
{
	char yaml[4096];

	(void)state;
	snprintf(
	    yaml, sizeof(yaml),
	    "admin:\n"
	    "  tokens:\n"
	    "    - {name: ops, secret: s1, scopes: [admin]}\n"
	    "    - {name: viewer, secret: s2, scopes: [read]}\n"
	    "%s" /* lines 5-10 */
	    "rollouts:\n"
	    "  r:\n"
	    "    targets:\n"
	    "      a: {service: web, canary: v2}\n"
	    "    steps:\n"
	    "      - {name: p5, set: {a: 5}}\n"
	    "      - {name: p5, set: {a: 25}}\n"
	    "      - {name: previous, pause: {}}\n"
	    "      - {name: last, preview: {}}\n"
	    "    analysis:\n"
	    "      checks:\n"
	    "        - {name: c0, metric: error_rate, max: 0.1, target: [a, b]}\n"
	    "        - {name: c1, metric: error_rate, max: 0.1, on_fail: {rollback_to: nope}}\n"
	    "        - {name: c2, metric: error_rate, max: 0.1, on_fail: {rollback_to: last}}\n"
	    "        - {name: c3, metric: error_rate, max: 0.1, on_fail: {rollback_to: previous}}\n"
	    "        - {name: c4, metric: error_rate, max: 0.1, on_fail: {go: p5}}\n"
	    "        - {name: c5, metric: error_rate, max: 0.1, target: [a, a]}\n"
	    "    notify:\n"
	    "      - {webhook: http://h/x, events: [upcoming]}\n"
	    "      - {webhook: http://h/x, events: [step], notice: 48h}\n"
	    "      - {webhook: http://h/x, events: [upcoming], notice: 48h}\n",
	    svc_web);
	EXPECT(yaml,
	       "bad.yaml:17: rollouts.r.steps[1].name: duplicate step name \"p5\" (also steps[0])",
	       "bad.yaml:18: rollouts.r.steps[2].name: \"previous\" is reserved (on_fail: "
	       "{rollback_to: previous})",
	       "bad.yaml:19: rollouts.r.steps[3].preview: a preview step needs an override routing "
	       "to the canary, and service \"web\" (target \"a\") has none "
	       "(services.web.overrides: [{match: ..., cohort: canary}])",
	       "bad.yaml:22: rollouts.r.analysis.checks[0].target[1]: target \"b\" is not defined",
	       "bad.yaml:23: rollouts.r.analysis.checks[1].on_fail.rollback_to: no step is named "
	       "\"nope\" (name a step with name: or use previous)",
	       "bad.yaml:24: rollouts.r.analysis.checks[2].on_fail.rollback_to: step \"last\" "
	       "(steps[3]) is not before any step where check c2 can act: "
	       "rollback_to must point backwards",
	       "bad.yaml:25: rollouts.r.analysis.checks[3].on_fail.rollback_to: previous: there is "
	       "no traffic step before steps[0], the first step where check c3 can act",
	       "bad.yaml:26: rollouts.r.analysis.checks[4].on_fail.go: unknown key",
	       "bad.yaml:26: rollouts.r.analysis.checks[4].on_fail: missing required key "
	       "\"rollback_to\"",
	       "bad.yaml:27: rollouts.r.analysis.checks[5].target[1]: target \"a\" is listed twice",
	       "bad.yaml:29: rollouts.r.notify[0].events: upcoming needs notice: (how long "
	       "before, e.g. notice: 48h)",
	       "bad.yaml:30: rollouts.r.notify[1].notice: notice is for the upcoming event: add "
	       "upcoming to events");
}

/* The keys of the customer's plan, parsed into the model the engine reads. */
static void test_plan_keys(void **state)
{
	char yaml[4096];
	struct config_errors errs = {0};
	struct config *cfg;
	const struct config_rollout *r;

	(void)state;
	snprintf(yaml, sizeof(yaml),
	         "admin:\n"
	         "  tokens: [{name: ops, secret: s1, scopes: [admin]}]\n"
	         "services:\n"
	         "  web:\n"
	         "    versions: {v1: {endpoints: [127.0.0.1:1]}, v2: {endpoints: [127.0.0.1:2]}}\n"
	         "    stable: v1\n"
	         "    overrides: [{match: {header: {x-canary: always}}, cohort: canary}]\n"
	         "  api:\n"
	         "    versions: {a1: {endpoints: [127.0.0.1:3]}, a2: {endpoints: [127.0.0.1:4]}}\n"
	         "    stable: a1\n"
	         "    overrides: [{match: {header: {x-canary: always}}, version: a2}]\n"
	         "rollouts:\n"
	         "  r:\n"
	         "    targets:\n"
	         "      w: {service: web, canary: v2}\n"
	         "      a: {service: api, canary: a2}\n"
	         "    steps:\n"
	         "      - {name: warm, set: {w: 0, a: 0}}\n"
	         "      - {name: blue, preview: {}, for: 1m}\n"
	         "      - {name: p5, set: {w: 5, a: 5}}\n"
	         "      - {name: p50, set: {w: 50, a: 50}}\n"
	         "    analysis:\n"
	         "      checks:\n"
	         "        - {name: c0, metric: error_rate, max: 0.1, target: [a, w]}\n"
	         "        - {name: c1, metric: error_rate, max: 0.1, target: a,\n"
	         "           on_fail: {rollback_to: previous}}\n"
	         "    notify: [{webhook: http://h/x, events: [upcoming, step], notice: 48h}]\n");
	cfg = config_load_string("ok.yaml", yaml, strlen(yaml), &errs);
	if (!cfg)
		config_errors_print(&errs, stderr);
	assert_non_null(cfg);
	r = &cfg->rollouts[0];
	assert_int_equal(r->steps[1].kind, CONFIG_STEP_PREVIEW);
	assert_int_equal(r->steps[1].for_ms, 60000);
	assert_string_equal(r->steps[1].name, "blue");
	assert_string_equal(r->steps[3].name, "p50");
	assert_int_equal(r->analysis.checks[0].target_mask, 3);
	assert_true(config_check_covers(&r->analysis.checks[0], 1));
	assert_int_equal(r->analysis.checks[1].target_mask, 2);
	assert_false(config_check_covers(&r->analysis.checks[1], 0));
	assert_int_equal(r->analysis.checks[1].target_index, 1);
	assert_int_equal(r->analysis.checks[1].on_fail, CONFIG_ON_FAIL_ROLLBACK_TO);
	assert_true(r->analysis.checks[1].rollback_previous);
	assert_int_equal(r->notify[0].notice_ms, 48 * 3600 * 1000);
	assert_true(r->notify[0].events & CONFIG_EVENT_UPCOMING);
	assert_true(r->notify[0].events & CONFIG_EVENT_STEP);
	config_free(cfg);
	config_errors_release(&errs);
}

/* judge (issue 18): test.spending, the group-sequential test's spending shape */
static void test_check_test_spending(void **state)
{
	char yaml[2048];
	struct config_errors errs = {0};
	struct config *cfg;
	const struct config_rollout *r;

	(void)state;
	snprintf(yaml, sizeof(yaml),
	         "%s" /* lines 1-6 */
	         "rollouts:\n"
	         "  r:\n"
	         "    target: {service: web, canary: v2}\n"
	         "    steps: [{weight: 10}]\n"
	         "    analysis:\n"
	         "      checks:\n"
	         "        - {name: a, metric: error_rate, test: {method: sequential}}\n"
	         "        - name: b\n"
	         "          metric: latency_p99\n"
	         "          test: {method: mann-whitney, spending: pocock}\n",
	         svc_web);
	cfg = config_load_string("ok.yaml", yaml, strlen(yaml), &errs);
	if (!cfg)
		config_errors_print(&errs, stderr);
	assert_non_null(cfg);
	r = config_rollout_find(cfg, "r");
	assert_int_equal(r->analysis.checks[0].test.spending, CONFIG_SPEND_OBRIEN_FLEMING);
	assert_int_equal(r->analysis.checks[1].test.spending, CONFIG_SPEND_POCOCK);
	config_free(cfg);
	config_errors_release(&errs);

	snprintf(yaml, sizeof(yaml),
	         "%s"
	         "rollouts:\n"
	         "  r:\n"
	         "    target: {service: web, canary: v2}\n"
	         "    steps: [{weight: 10}]\n"
	         "    analysis:\n"
	         "      checks:\n"
	         "        - name: a\n"
	         "          metric: error_rate\n"
	         "          test: {method: sequential, spending: linear}\n",
	         svc_web);
	EXPECT(yaml, "bad.yaml:15: rollouts.r.analysis.checks[0].test.spending: expected "
	             "obrien-fleming or pocock, got \"linear\"");
}

/* issue 18: test: on query/http/exec sources that give counts (docs/judge.md "Sources") */
static void test_count_checks(void **state)
{
	char yaml[4096];
	struct config_errors errs = {0};
	struct config *cfg;
	const struct config_rollout *r;

	(void)state;
	snprintf(yaml, sizeof(yaml),
	         "%s"
	         "metrics: {prometheus: \"http://p:9090\"}\n"
	         "rollouts:\n"
	         "  r:\n"
	         "    target: {service: web, canary: v2}\n"
	         "    steps: [{weight: 10}]\n"
	         "    analysis:\n"
	         "      checks:\n"
	         "        - name: q\n"
	         "          query: 'sum(increase(errs{v=\"{{version}}\"}[{{interval}}]))'\n"
	         "          requests: 'sum(increase(reqs{v=\"{{version}}\"}[{{interval}}]))'\n"
	         "          test: {method: sequential, confidence: 0.99}\n"
	         "        - name: h\n"
	         "          http: {url: \"http://h/c?cohort={{cohort}}\", pointer: /counts}\n"
	         "          test: {method: sequential}\n"
	         "          max: 0.05\n"
	         "          max_increase: 0.01\n"
	         "        - name: x\n"
	         "          exec: [probe, \"{{variant}}\"]\n"
	         "          test: {method: sequential, max_increase: 0.01}\n",
	         svc_web);
	cfg = config_load_string("ok.yaml", yaml, strlen(yaml), &errs);
	if (!cfg)
		config_errors_print(&errs, stderr);
	assert_non_null(cfg);
	r = config_rollout_find(cfg, "r");
	assert_string_equal(r->analysis.checks[0].requests_query,
	                    "sum(increase(reqs{v=\"{{version}}\"}[{{interval}}]))");
	for (size_t i = 0; i < 3; i++)
		assert_true(config_check_counts(&r->analysis.checks[i]));
	assert_int_equal(r->analysis.checks[1].min_samples, 200);
	config_free(cfg);
	config_errors_release(&errs);

	snprintf(yaml, sizeof(yaml),
	         "%s" /* lines 1-6 */
	         "metrics: {prometheus: \"http://p:9090\"}\n"
	         "rollouts:\n"
	         "  r:\n"
	         "    target: {service: web, canary: v2}\n"
	         "    steps: [{weight: 10}]\n"
	         "    analysis:\n"
	         "      checks:\n"
	         "        - name: a\n"
	         "          query: 'sum(errs{v=\"{{version}}\"})'\n"
	         "          test: {method: sequential}\n"
	         "        - name: b\n"
	         "          query: x\n"
	         "          requests: y\n"
	         "          max: 0.1\n"
	         "        - name: c\n"
	         "          exec: [probe, \"{{cohort}}\"]\n"
	         "          requests: y\n"
	         "          test: {method: mann-whitney}\n"
	         "          min_ratio: 0.5\n"
	         "        - name: d\n"
	         "          http: {url: \"http://h/x\"}\n"
	         "          test: {method: sequential}\n"
	         "          max_decrease: 0.1\n",
	         svc_web);
	EXPECT(
	    yaml,
	    "bad.yaml:16: rollouts.r.analysis.checks[0].requests: a test on a query check needs "
	    "requests: a second query giving the cohort's requests over the interval (query "
	    "then gives its errors)",
	    "bad.yaml:19: rollouts.r.analysis.checks[1].requests: requests is a count check's "
	    "second query: it needs a test (test: {method: sequential})",
	    "bad.yaml:23: rollouts.r.analysis.checks[2].requests: requests goes with query "
	    "(http and exec checks give both counts in one answer)",
	    "bad.yaml:24: rollouts.r.analysis.checks[2].test.method: mann-whitney compares "
	    "latency histograms, which a query, http or exec source does not give: a test on a "
	    "source is sequential, on its error and request counts",
	    "bad.yaml:25: rollouts.r.analysis.checks[2].min_ratio: a test on a query, http or "
	    "exec check judges the error rate errors/requests: only max (an absolute bound on "
	    "it) and max_increase (the test's margin) apply",
	    "bad.yaml:28: rollouts.r.analysis.checks[3].test: a test compares the cohorts' "
	    "counts: mention {{cohort}}, {{version}} or {{variant}} in the URL so that it runs "
	    "once per cohort",
	    "bad.yaml:29: rollouts.r.analysis.checks[3].max_decrease: a test on a query, http or "
	    "exec check judges the error rate errors/requests: only max (an absolute bound on "
	    "it) and max_increase (the test's margin) apply");
}

static void test_check_errors(void **state)
{
	char yaml[4096];

	(void)state;
	snprintf(yaml, sizeof(yaml),
	         "%s" /* lines 1-6 */
	         "rollouts:\n"
	         "  r:\n"
	         "    target: {service: web, canary: v2}\n"
	         "    steps: [{weight: 10}, {analysis: {for: 1h}}]\n"
	         "    analysis:\n"
	         "      interval: 10ms\n"
	         "      checks:\n"
	         "        - name: c1\n"
	         "          metric: error_rat\n"
	         "        - name: c1\n"
	         "          query: up\n"
	         "          http: {url: ftp://x}\n"
	         "          max: 1\n"
	         "          min: 2\n"
	         "          review: 5m\n"
	         "          target: t7\n"
	         "        - name: c3\n"
	         "          metric: latency_p99\n"
	         "          test: {method: sequential, confidence: 1.5}\n"
	         "          on_fail: panic\n"
	         "        - name: c4\n"
	         "          exec: [/bin/probe, --x]\n"
	         "          timeout: 5s\n"
	         "          max: 1\n"
	         "          min_samples: -5\n"
	         "        - name: c5\n"
	         "          metric: error_rate\n"
	         "          test: {method: mann-whitney}\n"
	         "    rollback:\n"
	         "      hooks:\n"
	         "        - {exec: [], webhook: \"https://x\"}\n"
	         "        - {timeout: 5s}\n"
	         "    notify:\n"
	         "      - webhook: hooks\n"
	         "        events: [step, boom]\n"
	         "    bake: 1y\n",
	         svc_web);
	EXPECT(
	    yaml, "bad.yaml:12: rollouts.r.analysis.interval: must be at least 1s",
	    "bad.yaml:14: rollouts.r.analysis.checks[0]: a check needs a bound (min, max, "
	    "min_ratio, max_ratio, max_increase, max_decrease) or a test",
	    "bad.yaml:15: rollouts.r.analysis.checks[0].metric: unknown metric \"error_rat\" "
	    "(request_rate, error_rate, success_rate, latency_p50, latency_p90, latency_p95, "
	    "latency_p99, latency_mean, shadow_mismatch_rate, shadow_error_rate, "
	    "shadow_latency_p99)",
	    "bad.yaml:16: rollouts.r.analysis.checks[1]: only one of metric, query, http or exec "
	    "per check",
	    "bad.yaml:16: rollouts.r.analysis.checks[1].name: duplicate check name \"c1\" (also "
	    "checks[0])",
	    "bad.yaml:17: rollouts.r.analysis.checks[1].query: query checks need "
	    "metrics.prometheus",
	    "bad.yaml:18: rollouts.r.analysis.checks[1].http.url: expected an http:// or https:// "
	    "URL, got \"ftp://x\"",
	    "bad.yaml:20: rollouts.r.analysis.checks[1]: min is greater than max",
	    "bad.yaml:21: rollouts.r.analysis.checks[1].review: review needs on_fail: pause",
	    "bad.yaml:22: rollouts.r.analysis.checks[1].target: target \"t7\" is not defined",
	    "bad.yaml:25: rollouts.r.analysis.checks[2].test.confidence: must be between 0 and 1 "
	    "(exclusive), like 0.99",
	    "bad.yaml:25: rollouts.r.analysis.checks[2].test.method: sequential tests compare "
	    "rates: use error_rate, success_rate or a shadow rate",
	    "bad.yaml:26: rollouts.r.analysis.checks[2].on_fail: expected rollback, pause or "
	    "{rollback_to: previous | STEP_NAME}, got \"panic\"",
	    "bad.yaml:31: rollouts.r.analysis.checks[3].min_samples: must be an integer between 0 "
	    "and 1000000000",
	    "bad.yaml:34: rollouts.r.analysis.checks[4].test.method: mann-whitney compares "
	    "latency histograms: use a latency metric",
	    "bad.yaml:37: rollouts.r.rollback.hooks[0].exec: expected a command: [program, "
	    "args...]",
	    "bad.yaml:37: rollouts.r.rollback.hooks[0]: exec and webhook are mutually exclusive",
	    "bad.yaml:38: rollouts.r.rollback.hooks[1]: missing required key \"exec\" (or "
	    "\"webhook\")",
	    "bad.yaml:40: rollouts.r.notify[0].webhook: expected an http:// or https:// URL, got "
	    "\"hooks\"",
	    "bad.yaml:41: rollouts.r.notify[0].events[1]: unknown event \"boom\" (started, step, "
	    "paused, resumed, approval_needed, approved, verdict, rollback, completed, failed, "
	    "aborted, upcoming, validation_passed, validation_failed)",
	    "bad.yaml:42: rollouts.r.bake: expected a duration like 250ms, 30s, 5m, 24h or 14d, "
	    "got \"1y\"");
}

static void test_target_owned_twice(void **state)
{
	char yaml[2048];

	(void)state;
	snprintf(yaml, sizeof(yaml),
	         "%s"
	         "flags:\n"
	         "  f: {}\n"
	         "rollouts:\n"
	         "  a:\n"
	         "    targets: {w: {service: web, canary: v2}, fl: {flag: f}}\n"
	         "    steps: [{set: {w: 5}}]\n"
	         "  b:\n"
	         "    target: {service: web, canary: v2}\n"
	         "    steps: [{weight: 5}]\n"
	         "  c:\n"
	         "    targets:\n"
	         "      x: {flag: f}\n"
	         "      y: {flag: f}\n"
	         "    steps: [{set: {x: 5}}]\n",
	         svc_web);
	/*
	 * Several rollouts may name one service or flag (v2 today, v3 next
	 * week); only one may run at a time, which the engine enforces (409).
	 * Inside one rollout a target is named once.
	 */
	EXPECT(yaml, "bad.yaml:19: rollouts.c.targets.y: flag \"f\" is already target \"x\"");
}

static void test_syntax_errors(void **state)
{
	(void)state;
	EXPECT("admin:\n  listen: [127.0.0.1:1\nworkers: 1\n",
	       "bad.yaml:4: syntax error at column 1: flow sequence without a closing bracket");
	EXPECT("a: 1\n  b: 2\n",
	       "bad.yaml:1: syntax error at column 4: invalid multiline plain key; check the "
	       "indentation: keys of one mapping start in the same column, indent with spaces, not "
	       "tabs");
	EXPECT("", "bad.yaml: the configuration is empty");
	EXPECT("- 1\n", "bad.yaml:1: expected a mapping, got a sequence");
	EXPECT("workers: 1\n---\nworkers: 2\n", "bad.yaml:2: only one YAML document is allowed");
	EXPECT("workers: *nope\n", "bad.yaml:1: unknown alias *nope");
	/* not UTF-8: refused before libfyaml, whose directive scanner looped
	 * forever on this input (found by fuzz_config_yaml) */
	EXPECT("a: &p _1, 2]\n%{v: *x, off: false\xff\xff\xff}\n",
	       "bad.yaml:2: not UTF-8: byte 0xFF at column 20");
	EXPECT("workers: 1\n# caf\xc3\xa9 ok\nadmin: {listen: \xc0\xaf}\n",
	       "bad.yaml:3: not UTF-8: byte 0xC0 at column 17");
	EXPECT("a: \xed\xa0\x80\n", "bad.yaml:1: not UTF-8: byte 0xED at column 4");
	{
		/* deeper than the loader recurses (found by fuzz_config_yaml) */
		char deep[256];
		size_t n = 0;

		n += (size_t)snprintf(deep, sizeof(deep), "a: ");
		for (int i = 0; i < 70; i++)
			deep[n++] = '[';
		for (int i = 0; i < 70; i++)
			deep[n++] = ']';
		deep[n++] = '\n';
		deep[n] = '\0';
		EXPECT(deep, "bad.yaml:1: collections nested deeper than 64 levels");
	}
}

static void test_anchors_and_aliases(void **state)
{
	const char *yaml = "services:\n"
	                   "  a:\n"
	                   "    versions: &vs {v1: {endpoints: [h:1]}, v2: {endpoints: [h:2]}}\n"
	                   "    stable: &st v1\n"
	                   "  b:\n"
	                   "    versions: *vs\n"
	                   "    stable: *st\n";
	struct config_errors errs = {0};
	struct config *cfg = config_load_string("a.yaml", yaml, strlen(yaml), &errs);

	(void)state;
	assert_non_null(cfg);
	assert_int_equal(config_service_find(cfg, "b")->nversions, 2);
	assert_string_equal(config_service_find(cfg, "b")->stable, "v1");
	config_free(cfg);
	config_errors_release(&errs);

	/* a billion-laughs variant is refused, not expanded */
	EXPECT(
	    "flags:\n"
	    "  f:\n"
	    "    variants:\n"
	    "      on: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
	    "      off: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
	    "      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
	    "      d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
	    "      e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n",
	    "bad.yaml:4: flags.f.variants.e[7][8][8][9]: value too large (more than 100000 nodes)");
}

static void test_multiple_errors_all_reported(void **state)
{
	(void)state;
	EXPECT("store: nope\n"
	       "workers: 0\n"
	       "services:\n"
	       "  web:\n"
	       "    stable: v1\n"
	       "    versions: {v1: {endpoints: [x]}}\n"
	       "  web:\n"
	       "    bogus: 1\n",
	       "bad.yaml:1: store: expected sqlite:PATH or postgres://..., got \"nope\"",
	       "bad.yaml:2: workers: must be between 1 and 256",
	       "bad.yaml:6: services.web.versions.v1.endpoints[0]: invalid address \"x\": expected "
	       "host:port",
	       "bad.yaml:7: services.web: duplicate key (first defined on line 4)",
	       "bad.yaml:7: services.web: missing required key \"versions\"",
	       "bad.yaml:7: services.web: missing required key \"stable\"",
	       "bad.yaml:8: services.web.bogus: unknown key");
}

/* --- ${ENV} and secret_file --------------------------------------------------------------- */

static void test_env_expansion(void **state)
{
	const char *yaml = "admin:\n"
	                   "  listen: ${CFGT_HOST}:${CFGT_PORT}\n"
	                   "  tokens:\n"
	                   "    - name: ops\n"
	                   "      secret: \"pre-${CFGT_SECRET}-post $${LITERAL}\"\n"
	                   "      scopes: [admin]\n"
	                   "store: ${CFGT_UNSET:-sqlite:fallback.db}\n"
	                   "workers: ${CFGT_WORKERS}\n";
	struct config_errors errs = {0};
	struct config *cfg;

	(void)state;
	setenv("CFGT_HOST", "127.0.0.2", 1);
	setenv("CFGT_PORT", "9999", 1);
	setenv("CFGT_SECRET", "s3cr3t", 1);
	setenv("CFGT_WORKERS", "4", 1);
	unsetenv("CFGT_UNSET");
	cfg = config_load_string("e.yaml", yaml, strlen(yaml), &errs);
	if (!cfg)
		config_errors_print(&errs, stderr);
	assert_non_null(cfg);
	assert_string_equal(cfg->admin.listen.host, "127.0.0.2");
	assert_int_equal(cfg->admin.listen.port, 9999);
	assert_string_equal(cfg->admin.tokens[0].secret, "pre-s3cr3t-post ${LITERAL}");
	assert_string_equal(cfg->store.path, "fallback.db");
	assert_int_equal(cfg->workers, 4);
	config_free(cfg);
	config_errors_release(&errs);

	unsetenv("CFGT_MISSING");
	EXPECT("admin:\n"
	       "  tokens:\n"
	       "    - name: ops\n"
	       "      secret: ${CFGT_MISSING}\n"
	       "      scopes: [admin]\n"
	       "store: \"${CFGT_HOST\"\n"
	       "workers: ${1BAD}\n",
	       "bad.yaml:4: admin.tokens[0].secret: environment variable CFGT_MISSING is not set",
	       "bad.yaml:6: store: unterminated ${",
	       "bad.yaml:7: workers: invalid environment variable reference \"${1BAD}\"");
}

static void test_secret_file(void **state)
{
	const char *yaml = "admin:\n"
	                   "  tokens:\n"
	                   "    - name: vp\n"
	                   "      secret_file: " DATA "vp-eng.token\n"
	                   "      scopes: approve\n";
	struct config_errors errs = {0};
	struct config *cfg = config_load_string("s.yaml", yaml, strlen(yaml), &errs);

	(void)state;
	assert_non_null(cfg);
	assert_string_equal(cfg->admin.tokens[0].secret, "vp-eng-secret");
	assert_string_equal(cfg->admin.tokens[0].secret_file, DATA "vp-eng.token");
	assert_int_equal(cfg->admin.tokens[0].scopes, CONFIG_SCOPE_APPROVE);
	config_free(cfg);
	config_errors_release(&errs);

	EXPECT("admin:\n"
	       "  tokens:\n"
	       "    - name: vp\n"
	       "      secret_file: /nonexistent/vp.token\n"
	       "      scopes: approve\n",
	       "bad.yaml:4: admin.tokens[0].secret_file: cannot read \"/nonexistent/vp.token\": No "
	       "such file or directory");
	EXPECT("admin:\n"
	       "  tokens:\n"
	       "    - name: vp\n"
	       "      secret_file: " DATA "empty.token\n"
	       "      scopes: approve\n",
	       "bad.yaml:4: admin.tokens[0]: the secret is empty");
}

static void test_load_file_errors(void **state)
{
	struct config_errors errs = {0};
	char line[512];

	(void)state;
	assert_null(config_load_file(DATA "no-such-file.yaml", &errs));
	assert_int_equal(config_errors_count(&errs), 1);
	config_error_format(config_errors_get(&errs, 0), line, sizeof(line));
	assert_string_equal(line, DATA "no-such-file.yaml: cannot open: No such file or directory");
	config_errors_release(&errs);

	assert_null(config_load_file(DATA "bad-stable.yaml", &errs));
	assert_int_equal(config_errors_count(&errs), 2);
	config_error_format(config_errors_get(&errs, 0), line, sizeof(line));
	assert_string_equal(
	    line, DATA "bad-stable.yaml:7: services.web.stable: version \"v9\" is not defined in "
	               "service \"web\" (defined: v1, v2)");
	config_error_format(config_errors_get(&errs, 1), line, sizeof(line));
	assert_string_equal(line, DATA "bad-stable.yaml:11: rollouts.web.steps[1].weight: must be "
	                               "between 0 and 100");
	config_errors_release(&errs);
}

/* --- scalar validators ------------------------------------------------------------------- */

static void test_parse_duration(void **state)
{
	uint64_t ms;

	(void)state;
	assert_int_equal(config_parse_duration("250ms", &ms), 0);
	assert_int_equal(ms, 250);
	assert_int_equal(config_parse_duration("30s", &ms), 0);
	assert_int_equal(ms, 30000);
	assert_int_equal(config_parse_duration("5m", &ms), 0);
	assert_int_equal(ms, 300000);
	assert_int_equal(config_parse_duration("24h", &ms), 0);
	assert_int_equal(ms, 86400000);
	assert_int_equal(config_parse_duration("14d", &ms), 0);
	assert_int_equal(ms, 14ull * 86400000);
	assert_int_equal(config_parse_duration("1h30m", &ms), 0);
	assert_int_equal(ms, 5400000);
	assert_int_equal(config_parse_duration("0", &ms), 0);
	assert_int_equal(ms, 0);
	assert_int_equal(config_parse_duration("0s", &ms), 0);
	assert_int_equal(config_parse_duration("", &ms), -1);
	assert_int_equal(config_parse_duration("5", &ms), -1);
	assert_int_equal(config_parse_duration("s", &ms), -1);
	assert_int_equal(config_parse_duration("1.5h", &ms), -1);
	assert_int_equal(config_parse_duration("-5s", &ms), -1);
	assert_int_equal(config_parse_duration("5 s", &ms), -1);
	assert_int_equal(config_parse_duration("5sec", &ms), -1);
	assert_int_equal(config_parse_duration("1y", &ms), -1);
	assert_int_equal(config_parse_duration("99999999999999999999s", &ms), -1);
	assert_int_equal(config_parse_duration("999999999999999999d", &ms), -1);
	assert_int_equal(config_parse_duration(NULL, &ms), -1);
}

static void test_parse_percent(void **state)
{
	uint32_t p;

	(void)state;
	assert_int_equal(config_parse_percent("0", &p), 0);
	assert_int_equal(p, 0);
	assert_int_equal(config_parse_percent("100", &p), 0);
	assert_int_equal(p, 100000);
	assert_int_equal(config_parse_percent("0.5", &p), 0);
	assert_int_equal(p, 500);
	assert_int_equal(config_parse_percent("12.345", &p), 0);
	assert_int_equal(p, 12345);
	assert_int_equal(config_parse_percent("0.001", &p), 0);
	assert_int_equal(p, 1);
	assert_int_equal(config_parse_percent("5%", &p), 0);
	assert_int_equal(p, 5000);
	assert_int_equal(config_parse_percent("100.000", &p), 0);
	assert_int_equal(config_parse_percent("100.001", &p), -1);
	assert_int_equal(config_parse_percent("12.3456", &p), -1);
	assert_int_equal(config_parse_percent("101", &p), -1);
	assert_int_equal(config_parse_percent("-1", &p), -1);
	assert_int_equal(config_parse_percent("1.", &p), -1);
	assert_int_equal(config_parse_percent(".5", &p), -1);
	assert_int_equal(config_parse_percent("1e2", &p), -1);
	assert_int_equal(config_parse_percent("", &p), -1);
	assert_int_equal(config_parse_percent("0100", &p), -1);

	assert_int_equal(config_percent_from_double(12.345, &p), 0);
	assert_int_equal(p, 12345);
	assert_int_equal(config_percent_from_double(0.1, &p), 0);
	assert_int_equal(p, 100);
	assert_int_equal(config_percent_from_double(100, &p), 0);
	assert_int_equal(p, 100000);
	assert_int_equal(config_percent_from_double(0.0005, &p), -1);
	assert_int_equal(config_percent_from_double(12.3456, &p), -1);
	assert_int_equal(config_percent_from_double(100.001, &p), -1);
	assert_int_equal(config_percent_from_double(-0.5, &p), -1);
	/* not exactly a 3-decimal number: tiny values never round to 0 */
	assert_int_equal(config_percent_from_double(1e-10, &p), -1);
	assert_int_equal(config_percent_from_double(4.9e-324, &p), -1);
	assert_int_equal(config_percent_from_double(0.1 + 1e-12, &p), -1);
	assert_int_equal(config_percent_from_double(0, &p), 0);
	assert_int_equal(p, 0);
}

static void test_parse_addr(void **state)
{
	struct config_addr a;
	const char *why;
	char buf[300];

	(void)state;
	assert_int_equal(config_parse_addr("127.0.0.1:9901", &a, &why), 0);
	assert_string_equal(a.host, "127.0.0.1");
	assert_int_equal(a.port, 9901);
	assert_int_equal(a.family, AF_INET);
	assert_int_equal(config_parse_addr("[::1]:80", &a, &why), 0);
	assert_string_equal(a.host, "::1");
	assert_int_equal(a.family, AF_INET6);
	config_addr_format(&a, buf, sizeof(buf));
	assert_string_equal(buf, "[::1]:80");
	assert_int_equal(config_parse_addr("localhost:1", &a, NULL), 0);
	assert_int_equal(a.family, AF_UNSPEC);
	assert_int_equal(config_parse_addr("api.example.com:65535", &a, NULL), 0);
	assert_int_equal(config_parse_addr("0.0.0.0:8080", &a, NULL), 0);
	assert_int_equal(config_parse_addr("host:0", &a, &why), -1);
	assert_string_equal(why, "port must be between 1 and 65535");
	assert_int_equal(config_parse_addr("host:65536", &a, NULL), -1);
	assert_int_equal(config_parse_addr("host:", &a, NULL), -1);
	assert_int_equal(config_parse_addr("host:8a", &a, NULL), -1);
	assert_int_equal(config_parse_addr(":80", &a, &why), -1);
	assert_string_equal(why, "missing host before the port");
	assert_int_equal(config_parse_addr("host", &a, NULL), -1);
	assert_int_equal(config_parse_addr("1.2.3:80", &a, &why), -1);
	assert_string_equal(why, "invalid IPv4 address");
	assert_int_equal(config_parse_addr("[::1]80", &a, NULL), -1);
	assert_int_equal(config_parse_addr("[1.2.3.4]:80", &a, NULL), -1);
	assert_int_equal(config_parse_addr("-bad.com:80", &a, NULL), -1);
	assert_int_equal(config_parse_addr("bad..com:80", &a, NULL), -1);
	assert_int_equal(config_parse_addr("a b:80", &a, NULL), -1);
	assert_int_equal(config_parse_addr("", &a, NULL), -1);
}

static void test_other_validators(void **state)
{
	uint64_t b;
	int64_t t;
	uint32_t m;
	struct config_window w;

	(void)state;
	assert_true(config_valid_name("dwcp-manager"));
	assert_true(config_valid_name("v1.2_x"));
	assert_true(
	    config_valid_name("a234567890123456789012345678901234567890123456789012345678901234"));
	assert_false(
	    config_valid_name("a2345678901234567890123456789012345678901234567890123456789012345"));
	assert_false(config_valid_name(""));
	assert_false(config_valid_name("a b"));
	assert_false(config_valid_name("a/b"));

	assert_int_equal(config_parse_size("64KiB", &b), 0);
	assert_int_equal(b, 65536);
	assert_int_equal(config_parse_size("1m", &b), 0);
	assert_int_equal(b, 1 << 20);
	assert_int_equal(config_parse_size("512", &b), 0);
	assert_int_equal(b, 512);
	assert_int_equal(config_parse_size("1TiB", &b), -1);
	assert_int_equal(config_parse_size("KiB", &b), -1);

	assert_int_equal(config_parse_rfc3339("1970-01-01T00:00:00Z", &t), 0);
	assert_int_equal(t, 0);
	assert_int_equal(config_parse_rfc3339("2024-05-01T06:00:00+02:00", &t), 0);
	assert_int_equal(t, 1714536000);
	assert_int_equal(config_parse_rfc3339("2024-02-29T23:59:59.123Z", &t), 0);
	assert_int_equal(t, 1709251199);
	assert_int_equal(config_parse_rfc3339("2023-02-29T00:00:00Z", &t), -1);
	assert_int_equal(config_parse_rfc3339("2024-05-01T06:00:00", &t), -1);
	assert_int_equal(config_parse_rfc3339("2024-05-01", &t), -1);
	assert_int_equal(config_parse_rfc3339("2024-13-01T00:00:00Z", &t), -1);
	/* milliseconds: fractions past the third digit dropped; seconds floor before 1970 */
	assert_int_equal(config_parse_rfc3339_ms("2024-02-29T23:59:59.123Z", &t), 0);
	assert_int_equal(t, 1709251199123LL);
	assert_int_equal(config_parse_rfc3339_ms("1970-01-01T00:00:00.5Z", &t), 0);
	assert_int_equal(t, 500);
	assert_int_equal(config_parse_rfc3339_ms("1970-01-01T00:00:00.0019z", &t), 0);
	assert_int_equal(t, 1);
	assert_int_equal(config_parse_rfc3339_ms("1969-12-31T23:59:59.250Z", &t), 0);
	assert_int_equal(t, -750);
	assert_int_equal(config_parse_rfc3339("1969-12-31T23:59:59.250Z", &t), 0);
	assert_int_equal(t, -1);
	assert_int_equal(config_parse_rfc3339_ms("1970-01-01T00:00:00.Z", &t), -1);

	assert_int_equal(config_parse_time_of_day("06:00Z", &m), 0);
	assert_int_equal(m, 360);
	assert_int_equal(config_parse_time_of_day("23:59Z", &m), 0);
	assert_int_equal(config_parse_time_of_day("24:00Z", &m), -1);
	assert_int_equal(config_parse_time_of_day("06:00", &m), -1);

	assert_int_equal(config_parse_window("Mon-Fri 06:00-18:00Z", &w), 0);
	assert_int_equal(w.days, 0x1f);
	assert_int_equal(w.start_min, 360);
	assert_int_equal(w.end_min, 1080);
	assert_int_equal(config_parse_window("Sat,Sun 22:00-02:00Z", &w), 0);
	assert_int_equal(w.days, 0x60);
	assert_int_equal(config_parse_window("Fri-Mon 00:00-01:00Z", &w), 0);
	assert_int_equal(w.days, 0x71);
	assert_int_equal(config_parse_window("06:00-18:00Z", &w), 0);
	assert_int_equal(w.days, 0x7f);
	assert_int_equal(config_parse_window("Mon-Fri 06:00-06:00Z", &w), -1);
	assert_int_equal(config_parse_window("Mo-Fr 06:00-18:00Z", &w), -1);
	assert_int_equal(config_parse_window("Mon-Fri 06:00-18:00", &w), -1);

	assert_true(config_valid_semver("1.2.3"));
	assert_true(config_valid_semver("v1.2.3-rc.1+build.5"));
	assert_false(config_valid_semver("1.2"));
	assert_false(config_valid_semver("01.2.3"));
	assert_false(config_valid_semver("1.2.3-"));

	assert_true(config_valid_url("http://127.0.0.1:9090"));
	assert_true(config_valid_url("https://hooks.example.com/x?y=1"));
	assert_false(config_valid_url("ftp://x"));
	assert_false(config_valid_url("http://"));
	assert_false(config_valid_url("http://a b"));

	assert_string_equal(config_metric_name(CONFIG_METRIC_LATENCY_P99), "latency_p99");
	assert_null(config_metric_name((enum config_metric)100));
}

/* --- the API's JSON flag validator -------------------------------------------------------- */

static void test_flag_from_json(void **state)
{
	struct config_errors errs = {0};
	json_error_t jerr;
	json_t *def =
	    json_loads("{\"description\": \"d\", \"enabled\": false,"
	               " \"variants\": {\"red\": \"#f00\", \"blue\": {\"rgb\": [0, 0, 255]},"
	               " \"none\": null},"
	               " \"off_variant\": \"none\", \"rollout\": {\"red\": 12.5, \"blue\": 0.125},"
	               " \"exclude\": [\"n1\"]}",
	               0, &jerr);
	struct config_flag *f;

	(void)state;
	assert_non_null(def);
	f = config_flag_from_json("request", "colour", def, NULL, &errs);
	if (!f)
		config_errors_print(&errs, stderr);
	assert_non_null(f);
	assert_string_equal(f->name, "colour");
	assert_false(f->enabled);
	assert_int_equal(f->nvariants, 3);
	assert_string_equal(json_string_value(config_variant_find(f, "red")->value), "#f00");
	assert_int_equal(json_integer_value(json_array_get(
	                     json_object_get(config_variant_find(f, "blue")->value, "rgb"), 2)),
	                 255);
	assert_true(json_is_null(config_variant_find(f, "none")->value));
	assert_int_equal(f->off_index, 2);
	assert_int_equal(f->rollout.v[0].percent, 12500);
	assert_int_equal(f->rollout.v[1].percent, 125);
	assert_int_equal(f->rollout.total, 12625);
	config_flag_free(f);
	json_decref(def);

	def = json_loads("{\"variants\": {\"on\": true}, \"off_variant\": \"off\","
	                 " \"rollout\": {\"on\": 12.3456}, \"enabled\": \"yes\","
	                 " \"rules\": [{\"segment\": \"beta\", \"serve\": \"on\"}], \"colour\": 1,"
	                 " \"exclude\": \"n1\", \"include\": [7]}",
	                 0, &jerr);
	assert_non_null(def);
	{
		struct config *cfg;
		const char *yaml =
		    "segments:\n  alpha: {match: [{attr: a, op: eq, values: [x]}]}\n";

		cfg = config_load_string("ref.yaml", yaml, strlen(yaml), &errs);
		assert_non_null(cfg);
		f = config_flag_from_json("request", "f", def, cfg, &errs);
		assert_null(f);
		config_free(cfg);
	}
	{
		static const char *const want[] = {
		    "request: rollout.on: at most 3 decimals are allowed (0.001% steps)",
		    "request: enabled: expected true or false, got the string \"yes\"",
		    "request: rules[0].segment: segment \"beta\" is not defined",
		    "request: colour: unknown key",
		    "request: include[0]: expected a string, got the number 7",
		    "request: off_variant: variant \"off\" is not defined",
		};
		char line[512];

		if (config_errors_count(&errs) != 6)
			config_errors_print(&errs, stderr);
		assert_int_equal(config_errors_count(&errs), 6);
		for (size_t i = 0; i < 6; i++) {
			config_error_format(config_errors_get(&errs, i), line, sizeof(line));
			assert_string_equal(line, want[i]);
		}
	}
	config_errors_release(&errs);
	json_decref(def);

	def = json_loads("{}", 0, &jerr);
	assert_null(config_flag_from_json("request", "bad name", def, NULL, &errs));
	assert_int_equal(config_errors_count(&errs), 1);
	assert_string_equal(config_errors_get(&errs, 0)->path, "name");
	config_errors_release(&errs);
	json_decref(def);
}

/* --- secrets never reach a config snapshot or a message -------------------------------- */

static void assert_no_secret(const char *text, const char *secret)
{
	if (strstr(text, secret))
		fail_msg("\"%s\" found in:\n%s", secret, text);
}

static void test_snapshot_redaction(void **state)
{
	const char *yaml =
	    "# the old token was zz-inline-secret-1, do not reuse\n"
	    "admin:\n"
	    "  tokens:\n"
	    "    - name: ops\n"
	    "      secret: zz-inline-secret-1\n"
	    "      scopes: [admin]\n"
	    "    - {name: ci, secret: \"zz-quoted-secret-2\", scopes: [read]}\n"
	    "    - name: env\n"
	    "      secret: ${CANARYD_TEST_SECRET_ENV}\n"
	    "      scopes: [read]\n"
	    "    - name: vp\n"
	    "      secret_file: " DATA "vp-eng.token\n"
	    "      scopes: [approve]\n"
	    "store: 'postgres://canary:zz-store-pw@db.example.com/canary?sslmode=require'\n"
	    "metrics:\n"
	    "  prometheus: http://prom:zz-prom-pw@127.0.0.1:9090\n"
	    "services:\n"
	    "  web:\n"
	    "    versions:\n"
	    "      v1: {endpoints: [127.0.0.1:7001]}\n"
	    "      v2: {endpoints: [127.0.0.1:7002]}\n"
	    "    stable: v1\n"
	    "rollouts:\n"
	    "  web:\n"
	    "    targets: {web: {service: web, canary: v2}}\n"
	    "    steps:\n"
	    "      - weight: 10\n"
	    "    rollback:\n"
	    "      hooks:\n"
	    "        - webhook: https://hook:zz-hook-pw@hooks.example.com/rollback\n"
	    "    notify:\n"
	    "      - webhook: \"https://zz-notify-token@hooks.example.com/x?token=zz-query-tok\"\n";
	static const char *const secrets[] = {
	    "zz-inline-secret-1", "zz-quoted-secret-2", "zz-env-secret-3",
	    "vp-eng-secret",      "zz-store-pw",        "zz-prom-pw",
	    "zz-hook-pw",         "zz-notify-token",    "zz-query-tok",
	};
	struct config_errors errs = {0};
	struct config *cfg;

	(void)state;
	setenv("CANARYD_TEST_SECRET_ENV", "zz-env-secret-3", 1);
	cfg = config_load_string("s.yaml", yaml, strlen(yaml), &errs);
	if (!cfg)
		config_errors_print(&errs, stderr);
	assert_non_null(cfg);
	/* the model keeps the real values: only the snapshot is redacted */
	assert_string_equal(cfg->admin.tokens[0].secret, "zz-inline-secret-1");
	assert_string_equal(cfg->store.url,
	                    "postgres://canary:zz-store-pw@db.example.com/canary?sslmode=require");
	for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
		assert_no_secret(cfg->source, secrets[i]);
	assert_int_equal(strlen(cfg->source), cfg->source_len);
	assert_non_null(strstr(cfg->source, "# the old token was <redacted>, do not reuse\n"));
	assert_non_null(strstr(cfg->source, "      secret: \"<redacted>\"\n"));
	assert_non_null(strstr(cfg->source, "{name: ci, secret: \"<redacted>\", scopes: [read]}"));
	assert_non_null(strstr(cfg->source, "secret_file: " DATA "vp-eng.token\n"));
	assert_non_null(strstr(cfg->source, "store: \"postgres://canary:<redacted>@db.example.com/"
	                                    "canary?sslmode=require\"\n"));
	assert_non_null(
	    strstr(cfg->source, "prometheus: \"http://prom:<redacted>@127.0.0.1:9090\"\n"));
	assert_non_null(strstr(
	    cfg->source, "webhook: \"https://hook:<redacted>@hooks.example.com/rollback\"\n"));
	assert_non_null(strstr(cfg->source, "webhook: \"https://<redacted>@hooks.example.com/"
	                                    "x?token=<redacted>\"\n"));
	config_free(cfg);
	config_errors_release(&errs);
	unsetenv("CANARYD_TEST_SECRET_ENV");
}

/*
 * A URL redacted in the snapshot shows its text as written: a value that
 * came from ${ENV} (a webhook's secret path) is never expanded into it.
 */
static void test_snapshot_url_keeps_env_references(void **state)
{
	const char *yaml = "store: \"postgres://u:zz-pg-pw@${CANARYD_TEST_PG_HOST}/db\"\n"
	                   "services:\n"
	                   "  web:\n"
	                   "    versions:\n"
	                   "      v1: {endpoints: [127.0.0.1:7001]}\n"
	                   "      v2: {endpoints: [127.0.0.1:7002]}\n"
	                   "    stable: v1\n"
	                   "rollouts:\n"
	                   "  web:\n"
	                   "    targets: {web: {service: web, canary: v2}}\n"
	                   "    steps:\n"
	                   "      - weight: 10\n"
	                   "    notify:\n"
	                   "      - webhook: https://u:${CANARYD_TEST_HOOK_PW}@hooks.example.com/"
	                   "${CANARYD_TEST_HOOK_PATH}\n";
	struct config_errors errs = {0};
	struct config *cfg;

	(void)state;
	setenv("CANARYD_TEST_PG_HOST", "db.example.com", 1);
	setenv("CANARYD_TEST_HOOK_PW", "zz-hook-env-pw", 1);
	setenv("CANARYD_TEST_HOOK_PATH", "services/T0/zz-slack-path-secret", 1);
	cfg = config_load_string("s.yaml", yaml, strlen(yaml), &errs);
	if (!cfg)
		config_errors_print(&errs, stderr);
	assert_non_null(cfg);
	assert_string_equal(cfg->rollouts[0].notify[0].webhook,
	                    "https://u:zz-hook-env-pw@hooks.example.com/"
	                    "services/T0/zz-slack-path-secret");
	assert_no_secret(cfg->source, "zz-slack-path-secret");
	assert_no_secret(cfg->source, "zz-hook-env-pw");
	assert_no_secret(cfg->source, "zz-pg-pw");
	assert_non_null(strstr(cfg->source, "store: \"postgres://u:<redacted>@"
	                                    "${CANARYD_TEST_PG_HOST}/db\"\n"));
	assert_non_null(strstr(cfg->source, "webhook: \"https://u:<redacted>@hooks.example.com/"
	                                    "${CANARYD_TEST_HOOK_PATH}\"\n"));
	assert_int_equal(strlen(cfg->source), cfg->source_len);
	config_free(cfg);
	config_errors_release(&errs);
	unsetenv("CANARYD_TEST_PG_HOST");
	unsetenv("CANARYD_TEST_HOOK_PW");
	unsetenv("CANARYD_TEST_HOOK_PATH");
}

static void test_url_redact(void **state)
{
	char out[256];

	(void)state;
	assert_true(config_url_redact("postgres://u:pw@h:5432/db", out, sizeof(out)));
	assert_string_equal(out, "postgres://u:<redacted>@h:5432/db");
	assert_true(config_url_redact("https://tok@h/p?a=1&Password=x&b=2#f", out, sizeof(out)));
	assert_string_equal(out, "https://<redacted>@h/p?a=1&Password=<redacted>&b=2#f");
	assert_true(config_url_redact("https://h/p?api_token=x", out, sizeof(out)));
	assert_string_equal(out, "https://h/p?api_token=<redacted>");
	/* an '@' in the path is not userinfo */
	assert_false(config_url_redact("https://h/a@b?q=1", out, sizeof(out)));
	assert_string_equal(out, "https://h/a@b?q=1");
	assert_false(config_url_redact("sqlite:/var/lib/canaryd.db", out, sizeof(out)));
	assert_string_equal(out, "sqlite:/var/lib/canaryd.db");
	assert_true(config_url_redact("postgres://u:pw@h/db", out, 16));
	assert_string_equal(out, "postgres://u:<r");
}

/* Error messages show a URL without its password. */
static void test_url_errors_redacted(void **state)
{
	(void)state;
	EXPECT("store: mysql://u:zz-pw@db/x\n",
	       "bad.yaml:1: store: expected sqlite:PATH or postgres://..., got "
	       "\"mysql://u:<redacted>@db/x\"");
	EXPECT("metrics:\n  prometheus: ftp://u:zz-pw@prom\n",
	       "bad.yaml:2: metrics.prometheus: expected an http:// or https:// URL, got "
	       "\"ftp://u:<redacted>@prom\"");
	EXPECT("admin:\n  tokens:\n    - {name: a, secret: \"zz${oops\", scopes: [read]}\n",
	       "bad.yaml:3: admin.tokens[0].secret: unterminated ${");
}

/* Names never start with '.': "." and ".." would be path segments. */
static void test_name_rule(void **state)
{
	struct config_errors errs = {0};
	json_t *def = json_object();

	(void)state;
	assert_false(config_valid_name("."));
	assert_false(config_valid_name(".."));
	assert_false(config_valid_name(".hidden"));
	assert_true(config_valid_name("a.."));
	assert_true(config_valid_name("_x"));
	assert_true(config_valid_name("-x"));
	EXPECT("services:\n"
	       "  ..:\n"
	       "    versions: {v1: {endpoints: [127.0.0.1:7001]}}\n"
	       "    stable: v1\n",
	       "bad.yaml:2: services...: invalid name \"..\": use 1 to 64 of A-Z a-z 0-9 _ . -, "
	       "not starting with \".\"");
	assert_null(config_flag_from_json("request", "..", def, NULL, &errs));
	assert_int_equal(config_errors_count(&errs), 1);
	assert_string_equal(config_errors_get(&errs, 0)->path, "name");
	config_errors_release(&errs);
	json_decref(def);
}

/* A JSON value of the wrong type is an error naming the field, never coerced. */
static void test_json_strict_types(void **state)
{
	static const char *const want[] = {
	    "request: description: expected a string, got the number 5",
	    "request: enabled: expected true or false, got the number 1",
	    "request: exclude[0]: expected a string, got the number 1",
	    "request: exclude[1]: expected a string, got the number 2.5",
	    "request: exclude[2]: expected a string, got the boolean true",
	};
	struct config_errors errs = {0};
	json_t *def = json_loads("{\"description\": 5, \"enabled\": 1, \"variants\": {\"off\": 1},"
	                         " \"exclude\": [1, 2.5, true]}",
	                         0, NULL);
	char line[512];

	(void)state;
	assert_non_null(def);
	assert_null(config_flag_from_json("request", "f", def, NULL, &errs));
	if (config_errors_count(&errs) != 5)
		config_errors_print(&errs, stderr);
	assert_int_equal(config_errors_count(&errs), 5);
	for (size_t i = 0; i < 5; i++) {
		config_error_format(config_errors_get(&errs, i), line, sizeof(line));
		assert_string_equal(line, want[i]);
	}
	config_errors_release(&errs);
	json_decref(def);
	/* a condition value of the wrong type is an error, never a NULL the
	 * operator check reads (found by fuzz_flag_eval) */
	def = json_loads("{\"match\": [{\"attr\": \"n\", \"op\": \"gte\", \"values\": [true]}]}", 0,
	                 NULL);
	assert_non_null(def);
	config_errors_init(&errs);
	assert_null(config_segment_from_json("request", "s", def, &errs));
	assert_int_equal(config_errors_count(&errs), 1);
	config_error_format(config_errors_get(&errs, 0), line, sizeof(line));
	assert_string_equal(line,
	                    "request: match[0].values[0]: expected a string, got the boolean true");
	config_errors_release(&errs);
	json_decref(def);
}

static void test_evidence_warnings(void **state)
{
	static const char yaml[] =
	    "services:\n"
	    "  web:\n"
	    "    versions: {v1: {endpoints: [127.0.0.1:9]}, v2: {endpoints: "
	    "[127.0.0.1:9]}}\n"
	    "    stable: v1\n"
	    "rollouts:\n"
	    "  x:\n"
	    "    target: {service: web, canary: v2}\n"
	    "    steps:\n"
	    "      - {weight: 5, for: 10m}\n"
	    "      - {weight: 50, for: 10m, max_wait: 20m}\n"
	    "      - {weight: 100}\n"
	    "    analysis:\n"
	    "      max_wait: 5m\n"
	    "      checks: [{name: errors, metric: error_rate, max: 0.05}]\n";
	struct config_errors errs = {0}, warns = {0};
	struct config *cfg = config_load_string("w.yaml", yaml, strlen(yaml), &errs);
	char line[512];

	(void)state;
	assert_non_null(cfg);
	/* step 0 would pause when its for ends; step 1 has its own max_wait (the
	 * line is the analysis block's: the loaded model keeps no line per key) */
	assert_int_equal(config_evidence_warnings(cfg, &warns), 1);
	config_error_format(config_errors_get(&warns, 0), line, sizeof(line));
	assert_string_equal(line, "w.yaml:12: rollouts.x.analysis.max_wait: shorter than "
	                          "steps[0].for: that step pauses for evidence as soon as its "
	                          "for ends");
	config_errors_release(&warns);
	config_errors_release(&errs);
	config_free(cfg);
}

/* --- large mappings: duplicate keys are found in O(k) -------------------------------------- */

#define MANY_KEYS 20000

/*
 * "segments:" with MANY_KEYS segments s0..s<n-1>, one per line (s<i> is on
 * line i + 2); when dup_at > 0 the key at that index repeats dup_of's name
 * instead.  Returns a malloc'ed string.
 */
static char *many_segments(size_t dup_at, size_t dup_of)
{
	size_t cap = 64 + (size_t)MANY_KEYS * 64, len = 0;
	char *yaml = malloc(cap);

	assert_non_null(yaml);
	len += (size_t)snprintf(yaml + len, cap - len, "segments:\n");
	for (size_t i = 0; i < MANY_KEYS; i++) {
		size_t name = dup_at && i == dup_at ? dup_of : i;
		int w = snprintf(yaml + len, cap - len,
		                 "  s%zu: {match: [{attr: a, op: eq, values: [x]}]}\n", name);

		assert_true(w > 0 && (size_t)w < cap - len);
		len += (size_t)w;
	}
	return yaml;
}

static void test_many_keys(void **state)
{
	struct config_errors errs = {0};
	struct config *cfg;
	char *yaml;

	(void)state;
	/* no duplicates: every one of the 20,000 keys loads */
	yaml = many_segments(0, 0);
	cfg = config_load_string("many.yaml", yaml, strlen(yaml), &errs);
	if (!cfg)
		config_errors_print(&errs, stderr);
	assert_non_null(cfg);
	assert_int_equal(config_errors_count(&errs), 0);
	assert_int_equal(cfg->nsegments, MANY_KEYS);
	assert_non_null(config_segment_find(cfg, "s19999"));
	config_free(cfg);
	config_errors_release(&errs);
	free(yaml);

	/* one duplicate, far from its first occurrence: reported at the second's line */
	yaml = many_segments(15000, 7);
	EXPECT(yaml, "bad.yaml:15002: segments.s7: duplicate key (first defined on line 9)");
	free(yaml);

	/* a key three times: each repeat names the first occurrence, in order */
	EXPECT("segments:\n"
	       "  a: {match: [{attr: a, op: eq, values: [x]}]}\n"
	       "  b: {match: [{attr: a, op: eq, values: [x]}]}\n"
	       "  a: {match: [{attr: a, op: eq, values: [y]}]}\n"
	       "  a: {match: [{attr: a, op: eq, values: [z]}]}\n",
	       "bad.yaml:4: segments.a: duplicate key (first defined on line 2)",
	       "bad.yaml:5: segments.a: duplicate key (first defined on line 2)");
}

static void test_errors_list(void **state)
{
	struct config_errors errs;
	char line[64];

	(void)state;
	config_errors_init(&errs);
	for (int i = 0; i < CONFIG_ERRORS_MAX + 5; i++)
		config_errors_add(&errs, "f", i, "p", "m%d", i);
	assert_int_equal(config_errors_count(&errs), CONFIG_ERRORS_MAX + 5);
	assert_int_equal(errs.dropped, 5);
	config_error_format(config_errors_get(&errs, 0), line, sizeof(line));
	assert_string_equal(line, "f: p: m0");
	config_error_format(config_errors_get(&errs, 3), line, sizeof(line));
	assert_string_equal(line, "f:3: p: m3");
	assert_null(config_errors_get(&errs, CONFIG_ERRORS_MAX));
	config_errors_release(&errs);
	assert_int_equal(config_errors_count(&errs), 0);
}

/* --- errors that help the fix (issue 15) ------------------------------------------ */

static void test_errors_suggest_the_fix(void **state)
{
	(void)state;
	/* a misspelt key: the allowed key of that mapping within 2 edits */
	EXPECT("services:\n"
	       "  demo:\n"
	       "    versions:\n"
	       "      v1: {endpoints: [10.0.0.1:80]}\n"
	       "    stabel: v1\n"
	       "    stable: v1\n"
	       "    verisons: {}\n"
	       "    zzzzzz: 1\n",
	       "bad.yaml:5: services.demo.stabel: unknown key (did you mean `stable`?)",
	       "bad.yaml:7: services.demo.verisons: unknown key (did you mean `versions`?)",
	       "bad.yaml:8: services.demo.zzzzzz: unknown key");
	/* a dangling version reference names the versions that exist */
	EXPECT("services:\n"
	       "  demo:\n"
	       "    versions:\n"
	       "      v1: {endpoints: [10.0.0.1:80]}\n"
	       "      v2: {endpoints: [10.0.0.2:80]}\n"
	       "      v3: {endpoints: [10.0.0.3:80]}\n"
	       "    stable: v1\n"
	       "rollouts:\n"
	       "  r:\n"
	       "    target: {service: demo, canary: v4}\n"
	       "    steps: [{weight: 10}]\n",
	       "bad.yaml:10: rollouts.r.target.canary: version \"v4\" is not defined in service "
	       "\"demo\" (defined: v1, v2, v3)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_full_example),
	    cmocka_unit_test(test_quickstart_example),
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_undefined_version),
	    cmocka_unit_test(test_unknown_keys_types_duplicates),
	    cmocka_unit_test(test_step_weight_range),
	    cmocka_unit_test(test_addresses_and_endpoints),
	    cmocka_unit_test(test_service_policy_errors),
	    cmocka_unit_test(test_admin_errors),
	    cmocka_unit_test(test_listener_errors),
	    cmocka_unit_test(test_segment_errors),
	    cmocka_unit_test(test_flag_errors),
	    cmocka_unit_test(test_rollout_errors),
	    cmocka_unit_test(test_check_errors),
	    cmocka_unit_test(test_count_checks),
	    cmocka_unit_test(test_check_test_spending),
	    cmocka_unit_test(test_plan_key_errors),
	    cmocka_unit_test(test_plan_keys),
	    cmocka_unit_test(test_target_owned_twice),
	    cmocka_unit_test(test_syntax_errors),
	    cmocka_unit_test(test_anchors_and_aliases),
	    cmocka_unit_test(test_multiple_errors_all_reported),
	    cmocka_unit_test(test_env_expansion),
	    cmocka_unit_test(test_secret_file),
	    cmocka_unit_test(test_load_file_errors),
	    cmocka_unit_test(test_parse_duration),
	    cmocka_unit_test(test_parse_percent),
	    cmocka_unit_test(test_parse_addr),
	    cmocka_unit_test(test_other_validators),
	    cmocka_unit_test(test_flag_from_json),
	    cmocka_unit_test(test_evidence_warnings),
	    cmocka_unit_test(test_errors_list),
	    cmocka_unit_test(test_many_keys),
	    cmocka_unit_test(test_snapshot_redaction),
	    cmocka_unit_test(test_snapshot_url_keeps_env_references),
	    cmocka_unit_test(test_url_redact),
	    cmocka_unit_test(test_url_errors_redacted),
	    cmocka_unit_test(test_name_rule),
	    cmocka_unit_test(test_json_strict_types),
	    cmocka_unit_test(test_errors_suggest_the_fix),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
