/* Flag evaluation (src/flags/flag.c, docs/flags.md): every reason and error,
 * include/exclude precedence, JSON variant values, SPEC 2 bucketing against
 * docs/bucketing.md, split distributions, monotonic raises, segment operators,
 * JSON contexts, allocation-free and thread-safe evaluation. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "bucket_vectors.h"
#include "config/config.h"
#include "core/bucket.h"
#include "flags/flag.h"

/* ------------------------------------------------------------------------ */
/* Counting allocations (not under ASan or TSan, which own malloc)                   */

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define FLAG_TEST_SANITIZER 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FLAG_TEST_SANITIZER 1
#endif

#if !defined(FLAG_TEST_SANITIZER) && defined(__GLIBC__)
#define COUNT_ALLOCS 1
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
/*
 * volatile: the compiler assumes malloc leaves the program's own variables
 * alone, so without it -O2 folds the counter to 0 around every call.
 */
static __thread volatile int counting;
static __thread volatile size_t nallocs;

void *malloc(size_t n)
{
	nallocs += counting;
	return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
	nallocs += counting;
	return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
	nallocs += counting;
	return __libc_realloc(p, n);
}
#endif

/* ------------------------------------------------------------------------ */
/* Fixtures                                                                   */

static const char fixture_yaml[] =
    "segments:\n"
    "  internal: {match: [{attr: email, op: ends_with, values: [\"@novacron.io\"]}]}\n"
    "  premium: {match: [{attr: plan, op: in, values: [gold, platinum]}]}\n"
    "  adults:\n"
    "    match:\n"
    "      - {attr: age, op: gte, values: [\"18\"]}\n"
    "      - {attr: country, op: not_in, values: [XX]}\n"
    "  beta: {match: [{attr: beta, op: eq, values: [\"true\"]}]}\n"
    "  newapp: {match: [{attr: appVersion, op: semver_gt, values: [\"2.3.0\"]}]}\n"
    "  early: {match: [{attr: signup, op: before, values: [\"2024-01-01T00:00:00Z\"]}]}\n"
    "  hv: {match: [{attr: host, op: matches, values: [\"^hv-(eu|us)-[0-9]+$\"]}]}\n"
    "  cheap: {match: [{attr: price, op: lt, values: [\"3\"]}]}\n"
    "flags:\n"
    "  dwcp_v3_hde:\n"
    "    description: DWCP v3 hierarchical delta encoding\n"
    "    enabled: true\n"
    "    sticky: nodeId\n"
    "    rules:\n"
    "      - segment: internal\n"
    "        serve: on\n"
    "      - segment: premium\n"
    "        rollout: {on: 10}\n"
    "    rollout: {on: 10}\n"
    "    exclude: [node-123, node-456]\n"
    "    include: [node-7]\n"
    "  static_flag: {}\n"
    "  killed:\n"
    "    enabled: false\n"
    "    rollout: {on: 100}\n"
    "    include: [u1]\n"
    "  rules_only:\n"
    "    rules:\n"
    "      - {segment: beta, serve: on}\n"
    "  lists_only:\n"
    "    include: [u1]\n"
    "  solo:\n"
    "    variants: {off: false}\n"
    "    include: [x]\n"
    "  colors:\n"
    "    variants:\n"
    "      off: none\n"
    "      red: \"#f00\"\n"
    "      green: 42\n"
    "      blue: {rgb: [0, 0, 255], name: blue}\n"
    "      grey: 0.1\n"
    "    rules:\n"
    "      - {segment: beta, serve: grey}\n"
    "    rollout: {blue: 10, red: 20, green: 30}\n" /* laid out in variant order */
    "    include: [vip]\n"
    "  full: {rollout: {on: 100}}\n"
    "  zero: {rollout: {on: 0}}\n"
    "  ops:\n"
    "    variants: {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, off: 0}\n"
    "    rules:\n"
    "      - {segment: adults, serve: a}\n"
    "      - {segment: newapp, serve: b}\n"
    "      - {segment: early, serve: c}\n"
    "      - {segment: hv, serve: d}\n"
    "      - {segment: cheap, serve: e}\n"
    "      - {segment: beta, serve: f}\n"
    "      - {segment: internal, serve: g}\n";

struct fixture {
	struct config *cfg;
	struct flagset *set;
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	struct config_errors errs = {0};
	char err[256];

	if (!fx)
		return -1;
	fx->cfg = config_load_string("flags.yaml", fixture_yaml, strlen(fixture_yaml), &errs);
	if (!fx->cfg) {
		config_errors_print(&errs, stderr);
		config_errors_release(&errs);
		free(fx);
		return -1;
	}
	config_errors_release(&errs);
	fx->set = flagset_build(fx->cfg->flags, fx->cfg->nflags, fx->cfg->segments,
	                        fx->cfg->nsegments, err, sizeof(err));
	if (!fx->set) {
		fprintf(stderr, "flagset_build: %s\n", err);
		config_free(fx->cfg);
		free(fx);
		return -1;
	}
	/* the set owns copies: nothing may point into the config any more */
	config_free(fx->cfg);
	fx->cfg = NULL;
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	flagset_free(fx->set);
	free(fx);
	return 0;
}

/* Evaluates flag `key` for the JSON context text ctxjson (NULL: no context). */
static int eval_json(const struct flagset *set, const char *key, const char *ctxjson,
                     struct flag_result *r)
{
	json_t *obj = NULL;
	struct flag_json_ctx c;
	int rc;

	if (ctxjson) {
		json_error_t je;

		obj = json_loads(ctxjson, 0, &je);
		if (!obj)
			fail_msg("bad test JSON %s: %s", ctxjson, je.text);
	}
	assert_int_equal(flag_json_ctx_init(&c, obj), 0);
	rc = flag_eval(flagset_find(set, key, strlen(key)), flag_ctx_json_attr, &c, r);
	json_decref(obj); /* the result borrows from the set, not the context */
	return rc;
}

static struct flag_result ev(const struct flagset *set, const char *key, const char *ctxjson)
{
	struct flag_result r;

	eval_json(set, key, ctxjson, &r);
	return r;
}

static void assert_served(struct flag_result r, const char *variant, enum flag_reason reason)
{
	if (!r.variant || strcmp(r.variant, variant) != 0 || r.reason != reason)
		fail_msg("got %s/%s, want %s/%s", r.variant ? r.variant : "(null)",
		         flag_reason_name(r.reason), variant, flag_reason_name(reason));
	if (reason != FLAG_REASON_ERROR)
		assert_int_equal(r.error, FLAG_ERROR_NONE);
}

/* A key whose bucket under salt is inside [lo, hi). */
static void key_in_range(const char *salt, const char *prefix, uint32_t lo, uint32_t hi, char *out,
                         size_t n)
{
	for (int i = 0; i < 1000000; i++) {
		int len = snprintf(out, n, "%s%d", prefix, i);
		uint32_t b = bucket_of(salt, strlen(salt), out, (size_t)len);

		if (b >= lo && b < hi)
			return;
	}
	fail_msg("no key in [%u, %u)", lo, hi);
}

/* ------------------------------------------------------------------------ */
/* Hand-built flags (no YAML): vectors, lookups, build errors                 */

struct handflag {
	struct config_variant vars[2];
	struct config_split_entry entry;
	struct config_flag f;
};

/* {on: true, off: false}, fallthrough rollout {on: pct}, sticky targetingKey. */
static void handflag_init(struct handflag *h, const char *name, uint32_t pct)
{
	memset(h, 0, sizeof(*h));
	h->vars[0] = (struct config_variant){"on", json_true(), 0};
	h->vars[1] = (struct config_variant){"off", json_false(), 0};
	h->entry = (struct config_split_entry){"on", 0, pct, 0};
	h->f.name = name;
	h->f.description = "";
	h->f.enabled = true;
	h->f.variants = h->vars;
	h->f.nvariants = 2;
	h->f.off_variant = "off";
	h->f.off_index = 1;
	h->f.sticky = "targetingKey";
	h->f.rollout = (struct config_split){&h->entry, 1, pct, 0};
}

/* ------------------------------------------------------------------------ */
/* Reasons                                                                    */

static void test_reason_static(void **state)
{
	struct fixture *fx = *state;
	struct flag_result r = ev(fx->set, "static_flag", "{\"targetingKey\": \"u\"}");

	assert_served(r, "off", FLAG_REASON_STATIC);
	assert_true(json_is_false(r.value));
	assert_string_equal(r.value_json, "false");
	assert_int_equal(r.value_json_len, 5);
	assert_int_equal(r.rule, -1);
	assert_int_equal(r.bucket, FLAG_NO_BUCKET);
	assert_null(r.message);
	/* no context at all, and a NULL attribute function */
	assert_served(ev(fx->set, "static_flag", NULL), "off", FLAG_REASON_STATIC);
	assert_int_equal(flag_eval(flagset_find(fx->set, "static_flag", 11), NULL, NULL, &r), 0);
	assert_served(r, "off", FLAG_REASON_STATIC);
}

static void test_reason_default(void **state)
{
	struct fixture *fx = *state;

	/* has targeting, nothing applied, no fallthrough rollout */
	assert_served(ev(fx->set, "rules_only", "{\"beta\": false}"), "off", FLAG_REASON_DEFAULT);
	assert_served(ev(fx->set, "rules_only", "{}"), "off", FLAG_REASON_DEFAULT);
	assert_served(ev(fx->set, "lists_only", "{\"targetingKey\": \"u2\"}"), "off",
	              FLAG_REASON_DEFAULT);
	/* no key needed when no split has to be computed */
	assert_served(ev(fx->set, "lists_only", "{}"), "off", FLAG_REASON_DEFAULT);
}

static void test_reason_disabled(void **state)
{
	struct fixture *fx = *state;
	struct flag_result r;

	assert_int_equal(eval_json(fx->set, "killed", "{\"targetingKey\": \"u9\"}", &r), 0);
	assert_served(r, "off", FLAG_REASON_DISABLED);
	/* the kill switch beats include and a 100% rollout, and needs no key */
	assert_served(ev(fx->set, "killed", "{\"targetingKey\": \"u1\"}"), "off",
	              FLAG_REASON_DISABLED);
	assert_served(ev(fx->set, "killed", "{}"), "off", FLAG_REASON_DISABLED);
}

static void test_reason_targeting_match(void **state)
{
	struct fixture *fx = *state;
	struct flag_result r;

	r = ev(fx->set, "rules_only", "{\"beta\": true}");
	assert_served(r, "on", FLAG_REASON_TARGETING_MATCH);
	assert_true(json_is_true(r.value));
	assert_int_equal(r.rule, 0);
	/* a serve rule needs no sticky value */
	r = ev(fx->set, "dwcp_v3_hde", "{\"email\": \"ops@novacron.io\"}");
	assert_served(r, "on", FLAG_REASON_TARGETING_MATCH);
	assert_int_equal(r.rule, 0);
	assert_int_equal(r.bucket, FLAG_NO_BUCKET);
}

static void test_reason_split(void **state)
{
	struct fixture *fx = *state;
	const char *salt = "dwcp_v3_hde";
	char in[32], out[32], ctx[128];
	struct flag_result r;

	/* fallthrough rollout {on: 10}: buckets [0, 10000) */
	key_in_range(salt, "hv-", 0, 10000, in, sizeof(in));
	key_in_range(salt, "hv-", 10000, BUCKET_COUNT, out, sizeof(out));
	snprintf(ctx, sizeof(ctx), "{\"nodeId\": \"%s\"}", in);
	r = ev(fx->set, salt, ctx);
	assert_served(r, "on", FLAG_REASON_SPLIT);
	assert_int_equal(r.bucket, bucket_of(salt, strlen(salt), in, strlen(in)));
	assert_int_equal(r.rule, -1);
	snprintf(ctx, sizeof(ctx), "{\"nodeId\": \"%s\"}", out);
	r = ev(fx->set, salt, ctx);
	assert_served(r, "off", FLAG_REASON_SPLIT); /* the remainder is the split's too */
	assert_true(r.bucket >= 10000 && r.bucket < BUCKET_COUNT);
	/* a rule's rollout: premium gets its own 10% */
	snprintf(ctx, sizeof(ctx), "{\"nodeId\": \"%s\", \"plan\": \"gold\"}", in);
	r = ev(fx->set, salt, ctx);
	assert_served(r, "on", FLAG_REASON_SPLIT);
	assert_int_equal(r.rule, 1);
	snprintf(ctx, sizeof(ctx), "{\"nodeId\": \"%s\", \"plan\": \"platinum\"}", out);
	r = ev(fx->set, salt, ctx);
	assert_served(r, "off", FLAG_REASON_SPLIT);
	assert_int_equal(r.rule, 1);
}

static void test_uniform_splits_need_no_key(void **state)
{
	struct fixture *fx = *state;
	struct flag_result r;

	/* every bucket gives the same variant: nothing is random, so no error */
	r = ev(fx->set, "full", "{}");
	assert_served(r, "on", FLAG_REASON_SPLIT);
	assert_int_equal(r.bucket, FLAG_NO_BUCKET);
	assert_served(ev(fx->set, "zero", "{}"), "off", FLAG_REASON_SPLIT);
	assert_served(ev(fx->set, "full", "{\"targetingKey\": \"k\"}"), "on", FLAG_REASON_SPLIT);
	assert_served(ev(fx->set, "zero", "{\"targetingKey\": \"k\"}"), "off", FLAG_REASON_SPLIT);
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                     */

static void test_error_targeting_key_missing(void **state)
{
	struct fixture *fx = *state;
	static const char *const ctxs[] = {
	    "{}",
	    "{\"targetingKey\": \"node-1\"}", /* the flag buckets by nodeId */
	    "{\"nodeId\": \"\"}",             /* empty is no key */
	    "{\"nodeId\": null}",
	    "{\"nodeId\": [\"node-1\"]}",
	    NULL,
	};

	for (size_t i = 0; i < sizeof(ctxs) / sizeof(ctxs[0]); i++) {
		struct flag_result r;

		assert_int_equal(eval_json(fx->set, "dwcp_v3_hde", ctxs[i], &r), -1);
		assert_served(r, "off", FLAG_REASON_ERROR);
		assert_int_equal(r.error, FLAG_ERROR_TARGETING_KEY_MISSING);
		assert_true(json_is_false(r.value)); /* the off variant is what to serve */
		assert_string_equal(r.value_json, "false");
		assert_non_null(r.message);
		assert_non_null(strstr(r.message, "\"nodeId\""));
		assert_int_equal(r.rule, -1);
		assert_int_equal(r.bucket, FLAG_NO_BUCKET);
	}
	/* inside a rule's rollout: the rule is named */
	{
		struct flag_result r = ev(fx->set, "dwcp_v3_hde", "{\"plan\": \"gold\"}");

		assert_int_equal(r.reason, FLAG_REASON_ERROR);
		assert_int_equal(r.error, FLAG_ERROR_TARGETING_KEY_MISSING);
		assert_int_equal(r.rule, 1);
	}
}

static void test_error_flag_not_found(void **state)
{
	struct fixture *fx = *state;
	struct flag_result r;

	assert_null(flagset_find(fx->set, "nope", 4));
	assert_null(flagset_find(fx->set, "", 0));
	assert_null(flagset_find(NULL, "nope", 4));
	assert_int_equal(eval_json(fx->set, "nope", "{\"targetingKey\": \"k\"}", &r), -1);
	assert_int_equal(r.reason, FLAG_REASON_ERROR);
	assert_int_equal(r.error, FLAG_ERROR_FLAG_NOT_FOUND);
	assert_null(r.variant);
	assert_null(r.value);
	assert_null(r.value_json);
	assert_string_equal(r.message, "flag not found");
}

static void test_names(void **state)
{
	assert_string_equal(flag_reason_name(FLAG_REASON_STATIC), "STATIC");
	assert_string_equal(flag_reason_name(FLAG_REASON_TARGETING_MATCH), "TARGETING_MATCH");
	assert_string_equal(flag_reason_name(FLAG_REASON_SPLIT), "SPLIT");
	assert_string_equal(flag_reason_name(FLAG_REASON_DISABLED), "DISABLED");
	assert_string_equal(flag_reason_name(FLAG_REASON_DEFAULT), "DEFAULT");
	assert_string_equal(flag_reason_name(FLAG_REASON_ERROR), "ERROR");
	assert_string_equal(flag_reason_name((enum flag_reason)99), "UNKNOWN");
	assert_null(flag_error_name(FLAG_ERROR_NONE));
	assert_string_equal(flag_error_name(FLAG_ERROR_TARGETING_KEY_MISSING),
	                    "TARGETING_KEY_MISSING");
	assert_string_equal(flag_error_name(FLAG_ERROR_FLAG_NOT_FOUND), "FLAG_NOT_FOUND");
	assert_string_equal(flag_error_name(FLAG_ERROR_INVALID_CONTEXT), "INVALID_CONTEXT");
	assert_string_equal(flag_error_name(FLAG_ERROR_PARSE_ERROR), "PARSE_ERROR");
	assert_string_equal(flag_error_name(FLAG_ERROR_GENERAL), "GENERAL");
	assert_string_equal(flag_error_name((enum flag_error)99), "GENERAL");
}

/* ------------------------------------------------------------------------ */
/* Include / exclude                                                          */

static void test_exclude_include(void **state)
{
	struct fixture *fx = *state;
	const char *f = "dwcp_v3_hde";
	struct flag_result r;
	char in[32], ctx[160];

	/* excluded nodes get off, before any rule (even the internal serve rule) */
	assert_served(ev(fx->set, f, "{\"nodeId\": \"node-123\"}"), "off",
	              FLAG_REASON_TARGETING_MATCH);
	assert_served(ev(fx->set, f, "{\"nodeId\": \"node-456\", \"email\": \"a@novacron.io\"}"),
	              "off", FLAG_REASON_TARGETING_MATCH);
	/* node-7's bucket (19190, docs/bucketing.md) is outside 10%, include wins */
	r = ev(fx->set, f, "{\"nodeId\": \"node-7\"}");
	assert_served(r, "on", FLAG_REASON_TARGETING_MATCH);
	assert_int_equal(r.rule, -1);
	/* an exclusion is for that unit only: other nodes still split */
	key_in_range(f, "node-", 0, 10000, in, sizeof(in));
	snprintf(ctx, sizeof(ctx), "{\"nodeId\": \"%s\"}", in);
	assert_served(ev(fx->set, f, ctx), "on", FLAG_REASON_SPLIT);
	/* the lists match the sticky attribute (nodeId), not targetingKey */
	snprintf(ctx, sizeof(ctx), "{\"targetingKey\": \"node-123\", \"nodeId\": \"%s\"}", in);
	assert_served(ev(fx->set, f, ctx), "on", FLAG_REASON_SPLIT);
	snprintf(ctx, sizeof(ctx), "{\"targetingKey\": \"%s\", \"nodeId\": \"node-123\"}", in);
	assert_served(ev(fx->set, f, ctx), "off", FLAG_REASON_TARGETING_MATCH);
	/* byte-exact: no prefix or case folding */
	assert_served(ev(fx->set, f, "{\"nodeId\": \"NODE-123\", \"email\": \"a@novacron.io\"}"),
	              "on", FLAG_REASON_TARGETING_MATCH);
	assert_int_equal(
	    ev(fx->set, f, "{\"nodeId\": \"NODE-123\", \"email\": \"a@novacron.io\"}").rule, 0);
	/* include serves the first non-off variant: `off` is listed first in colors */
	assert_served(ev(fx->set, "colors", "{\"targetingKey\": \"vip\"}"), "red",
	              FLAG_REASON_TARGETING_MATCH);
	/* a flag with only its off variant: include can only give off */
	assert_served(ev(fx->set, "solo", "{\"targetingKey\": \"x\"}"), "off",
	              FLAG_REASON_TARGETING_MATCH);
	assert_served(ev(fx->set, "lists_only", "{\"targetingKey\": \"u1\"}"), "on",
	              FLAG_REASON_TARGETING_MATCH);
}

/* The config refuses a unit in both lists; the evaluator still lets exclude win. */
static void test_exclude_beats_include(void **state)
{
	struct handflag h;
	const char *both[] = {"n1", "n2", "n1"};
	struct flagset *set;
	struct flag_result r;
	char err[128];
	json_t *ctx;
	struct flag_json_ctx c;

	handflag_init(&h, "both", 100000);
	h.f.exclude = (struct config_strlist){both, 1};
	h.f.include = (struct config_strlist){both, 3}; /* with a repeat */
	set = flagset_build(&h.f, 1, NULL, 0, err, sizeof(err));
	assert_non_null(set);
	ctx = json_pack("{s:s}", "targetingKey", "n1");
	flag_json_ctx_init(&c, ctx);
	flag_eval(flagset_find(set, "both", 4), flag_ctx_json_attr, &c, &r);
	assert_served(r, "off", FLAG_REASON_TARGETING_MATCH);
	json_decref(ctx);
	ctx = json_pack("{s:s}", "targetingKey", "n2");
	flag_json_ctx_init(&c, ctx);
	flag_eval(flagset_find(set, "both", 4), flag_ctx_json_attr, &c, &r);
	assert_served(r, "on", FLAG_REASON_TARGETING_MATCH);
	json_decref(ctx);
	flagset_free(set);
}

/* ------------------------------------------------------------------------ */
/* Variant values                                                             */

static void test_variant_values(void **state)
{
	struct fixture *fx = *state;
	const char *want[] = {"off", "red", "green", "blue"};
	struct flag_result got[4] = {0};
	json_t *blue;
	struct flag_result r;

	for (int i = 0, found = 0; found < 4 && i < 100000; i++) {
		char ctx[64];

		snprintf(ctx, sizeof(ctx), "{\"targetingKey\": \"k%d\"}", i);
		r = ev(fx->set, "colors", ctx);
		for (int j = 0; j < 4; j++) {
			if (!got[j].variant && strcmp(r.variant, want[j]) == 0) {
				got[j] = r;
				found++;
			}
		}
	}
	for (int j = 0; j < 4; j++)
		assert_non_null(got[j].variant);
	assert_true(json_is_string(got[0].value));
	assert_string_equal(json_string_value(got[0].value), "none");
	assert_string_equal(got[0].value_json, "\"none\"");
	assert_string_equal(json_string_value(got[1].value), "#f00");
	assert_string_equal(got[1].value_json, "\"#f00\"");
	assert_true(json_is_integer(got[2].value));
	assert_int_equal(json_integer_value(got[2].value), 42);
	assert_string_equal(got[2].value_json, "42");
	blue = json_loads("{\"rgb\": [0, 0, 255], \"name\": \"blue\"}", 0, NULL);
	assert_true(json_equal(blue, (json_t *)got[3].value));
	assert_string_equal(got[3].value_json, "{\"rgb\":[0,0,255],\"name\":\"blue\"}");
	assert_int_equal(got[3].value_json_len, strlen(got[3].value_json));
	json_decref(blue);
	/* a real, written the short way */
	r = ev(fx->set, "colors", "{\"beta\": true}");
	assert_served(r, "grey", FLAG_REASON_TARGETING_MATCH);
	assert_true(json_is_real(r.value));
	assert_true(json_real_value(r.value) == 0.1);
	assert_string_equal(r.value_json, "0.1");
}

static void test_value_json_precision(void **state)
{
	struct config_variant vars[2] = {{"on", json_real(1.0 / 3.0), 0},
	                                 {"off", json_pack("[f, f]", 0.1, 1e300), 0}};
	struct config_flag f = {.name = "p",
	                        .enabled = true,
	                        .variants = vars,
	                        .nvariants = 2,
	                        .off_variant = "off",
	                        .sticky = "targetingKey"};
	struct config_flag_rule rule = {.segment = "all", .serve = "on"};
	struct config_condition cond = {.attr = "x", .op = CONFIG_OP_NEQ};
	const char *vals[] = {"never"};
	struct config_segment seg = {.name = "all", .conds = &cond, .nconds = 1};
	struct flagset *set;
	struct flag_result r;
	char err[128];
	json_t *back;
	struct flag_json_ctx c;
	json_t *ctx = json_pack("{s:s}", "x", "y");

	cond.values = (struct config_strlist){vals, 1};
	f.rules = &rule;
	f.nrules = 1;
	set = flagset_build(&f, 1, &seg, 1, err, sizeof(err));
	json_decref(vars[0].value); /* the set keeps its own copies */
	json_decref(vars[1].value);
	assert_non_null(set);
	flag_json_ctx_init(&c, ctx);
	flag_eval(flagset_find(set, "p", 1), flag_ctx_json_attr, &c, &r);
	assert_served(r, "on", FLAG_REASON_TARGETING_MATCH);
	/* 1/3 needs 17 digits to read back exactly */
	back = json_loads(r.value_json, JSON_DECODE_ANY, NULL);
	assert_true(json_real_value(back) == 1.0 / 3.0);
	json_decref(back);
	flag_eval(flagset_find(set, "p", 1), NULL, NULL, &r);
	assert_served(r, "off", FLAG_REASON_DEFAULT);
	assert_string_equal(r.value_json, "[0.1,1e300]");
	json_decref(ctx);
	flagset_free(set);
}

/* ------------------------------------------------------------------------ */
/* Bucketing                                                                  */

static void test_docs_vectors(void **state)
{
	struct bucket_vector v[64];
	int n = bucket_vectors_load("docs/bucketing.md", v, 64);

	assert_true(n >= 20);
	for (int i = 0; i < n; i++) {
		struct handflag at, above;
		struct flagset *s_at, *s_above;
		struct flag_result r;
		struct flag_json_ctx c;
		char err[128];
		json_t *ctx = json_pack("{s:s}", "targetingKey", v[i].key);

		assert_non_null(ctx);
		/* rollout exactly up to the vector's bucket: excluded; one more: included */
		handflag_init(&at, v[i].salt, v[i].bucket);
		handflag_init(&above, v[i].salt, v[i].bucket + 1);
		s_at = flagset_build(&at.f, 1, NULL, 0, err, sizeof(err));
		s_above = flagset_build(&above.f, 1, NULL, 0, err, sizeof(err));
		assert_non_null(s_at);
		assert_non_null(s_above);
		flag_json_ctx_init(&c, ctx);
		if (v[i].key[0] == '\0') {
			/* an empty key is no key: never bucketed (the proxy agrees) */
			assert_int_equal(
			    flag_eval(flagset_at(s_above, 0), flag_ctx_json_attr, &c, &r), -1);
			assert_int_equal(r.error, FLAG_ERROR_TARGETING_KEY_MISSING);
		} else {
			assert_int_equal(
			    flag_eval(flagset_at(s_above, 0), flag_ctx_json_attr, &c, &r), 0);
			assert_served(r, "on", FLAG_REASON_SPLIT);
			if (v[i].bucket + 1 <
			    BUCKET_COUNT) /* else a 100% split: no bucket needed */
				assert_int_equal(r.bucket, v[i].bucket);
			assert_int_equal(flag_eval(flagset_at(s_at, 0), flag_ctx_json_attr, &c, &r),
			                 0);
			assert_served(r, "off", FLAG_REASON_SPLIT);
			if (v[i].bucket > 0) /* else a 0% split: no bucket needed */
				assert_int_equal(r.bucket, v[i].bucket);
		}
		flagset_free(s_at);
		flagset_free(s_above);
		json_decref(ctx);
	}
}

static void test_split_distribution(void **state)
{
	struct fixture *fx = *state;
	const struct flag *f = flagset_find(fx->set, "colors", 6);
	const char *names[] = {"red", "green", "blue", "off"};
	const long want[] = {20000, 30000, 10000, 40000};
	long count[4] = {0};

	for (int i = 0; i < 100000; i++) {
		char key[32];
		int kl = snprintf(key, sizeof(key), "user-%d", i);
		json_t *ctx = json_pack("{s:s}", "targetingKey", key);
		struct flag_json_ctx c;
		struct flag_result r;
		uint32_t b = bucket_of("colors", 6, key, (size_t)kl);
		const char *layout;

		flag_json_ctx_init(&c, ctx);
		assert_int_equal(flag_eval(f, flag_ctx_json_attr, &c, &r), 0);
		assert_int_equal(r.reason, FLAG_REASON_SPLIT);
		assert_int_equal(r.bucket, b);
		/* cumulative in the order the flag lists its variants: red, green, blue */
		layout = b < 20000 ? "red" : b < 50000 ? "green" : b < 60000 ? "blue" : "off";
		assert_string_equal(r.variant, layout);
		for (int j = 0; j < 4; j++)
			count[j] += strcmp(r.variant, names[j]) == 0;
		json_decref(ctx);
	}
	for (int j = 0; j < 4; j++) {
		/* binomial sd <= 160 here: 1000 is more than six of them */
		if (labs(count[j] - want[j]) > 1000)
			fail_msg("%s: %ld of 100000, want about %ld", names[j], count[j], want[j]);
	}
}

/* Exposed units at each percentage, by bucketing through the evaluator. */
static void exposed(uint32_t pct, const char *name, unsigned char *on, int nkeys)
{
	struct handflag h;
	struct flagset *set;
	char err[128];

	handflag_init(&h, name, pct);
	set = flagset_build(&h.f, 1, NULL, 0, err, sizeof(err));
	assert_non_null(set);
	for (int i = 0; i < nkeys; i++) {
		char key[32];
		json_t *ctx;
		struct flag_json_ctx c;
		struct flag_result r;

		snprintf(key, sizeof(key), "node-%05d", i);
		ctx = json_pack("{s:s}", "targetingKey", key);
		flag_json_ctx_init(&c, ctx);
		assert_int_equal(flag_eval(flagset_at(set, 0), flag_ctx_json_attr, &c, &r), 0);
		on[i] = strcmp(r.variant, "on") == 0;
		json_decref(ctx);
	}
	flagset_free(set);
}

static void test_raise_keeps_exposed_units(void **state)
{
	static unsigned char at10[10000], at25[10000], at12345[10000], at50[10000];
	int n10 = 0, n25 = 0, n12 = 0;

	exposed(10000, "dwcp_v3_hde", at10, 10000);
	exposed(12345, "dwcp_v3_hde", at12345, 10000);
	exposed(25000, "dwcp_v3_hde", at25, 10000);
	exposed(50000, "dwcp_v3_hde", at50, 10000);
	for (int i = 0; i < 10000; i++) {
		/* 10% is a subset of 12.345%, of 25%, of 50% */
		if (at10[i] && !at12345[i])
			fail_msg("node-%05d on at 10%% but not at 12.345%%", i);
		if (at12345[i] && !at25[i])
			fail_msg("node-%05d on at 12.345%% but not at 25%%", i);
		if (at25[i] && !at50[i])
			fail_msg("node-%05d on at 25%% but not at 50%%", i);
		n10 += at10[i];
		n12 += at12345[i];
		n25 += at25[i];
	}
	/* sanity: the sets are of about the right size (sd about 30 and 43) */
	assert_in_range(n10, 850, 1150);
	assert_in_range(n12, 1050, 1420);
	assert_in_range(n25, 2300, 2700);
}

/* An explicit share for the off variant is the remainder: same layout as leaving it out. */
static void test_explicit_off_share(void **state)
{
	struct config_variant vars[2] = {{"off", json_false(), 0}, {"on", json_true(), 0}};
	struct config_split_entry e2[2] = {{"off", 0, 70000, 0}, {"on", 1, 30000, 0}};
	struct config_split_entry e1[1] = {{"on", 1, 30000, 0}};
	struct config_flag f[2] = {
	    {.name = "a", .enabled = true, .variants = vars, .nvariants = 2, .off_variant = "off"},
	    {.name = "b", .enabled = true, .variants = vars, .nvariants = 2, .off_variant = "off"},
	};
	struct flagset *set;
	char err[128];

	f[0].rollout = (struct config_split){e2, 2, 100000, 0};
	f[1].rollout = (struct config_split){e1, 1, 30000, 0};
	set = flagset_build(f, 2, NULL, 0, err, sizeof(err));
	assert_non_null(set);
	for (int i = 0; i < 2000; i++) {
		char key[32];
		struct flag_result ra, rb;
		uint32_t b;
		int kl = snprintf(key, sizeof(key), "k%d", i);
		json_t *ctx = json_pack("{s:s}", "targetingKey", key);
		struct flag_json_ctx c;

		flag_json_ctx_init(&c, ctx);
		flag_eval(flagset_find(set, "a", 1), flag_ctx_json_attr, &c, &ra);
		flag_eval(flagset_find(set, "b", 1), flag_ctx_json_attr, &c, &rb);
		/* the salts differ, so compare each with its own layout */
		b = bucket_of("a", 1, key, (size_t)kl);
		assert_string_equal(ra.variant, b < 30000 ? "on" : "off");
		b = bucket_of("b", 1, key, (size_t)kl);
		assert_string_equal(rb.variant, b < 30000 ? "on" : "off");
		json_decref(ctx);
	}
	flagset_free(set);
}

/* ------------------------------------------------------------------------ */
/* Segment rules                                                              */

static void test_segment_operators(void **state)
{
	struct fixture *fx = *state;
	static const struct {
		const char *ctx;
		const char *variant;
		int rule;
	} cases[] = {
	    /* gte over a JSON integer, a string number; not_in */
	    {"{\"age\": 42, \"country\": \"FR\"}", "a", 0},
	    {"{\"age\": \"18\", \"country\": \"FR\"}", "a", 0},
	    {"{\"age\": 17.5, \"country\": \"FR\"}", "off", -1},
	    {"{\"age\": 18.5, \"country\": \"XX\"}", "off", -1},
	    {"{\"age\": 42}", "off", -1}, /* not_in fails on a missing attribute */
	    {"{\"age\": null, \"country\": \"FR\"}", "off", -1},
	    {"{\"age\": [42], \"country\": \"FR\"}", "off", -1},
	    /* semver_gt */
	    {"{\"appVersion\": \"2.10.0\"}", "b", 1},
	    {"{\"appVersion\": \"v2.4.0-rc1\"}", "b", 1},
	    {"{\"appVersion\": \"2.3.0\"}", "off", -1},
	    /* before (RFC 3339 with offsets) */
	    {"{\"signup\": \"2023-06-01T00:00:00Z\"}", "c", 2},
	    {"{\"signup\": \"2024-01-01T01:00:00+02:00\"}", "c", 2},
	    {"{\"signup\": \"2024-06-01T00:00:00Z\"}", "off", -1},
	    /* to the millisecond */
	    {"{\"signup\": \"2023-12-31T23:59:59.999Z\"}", "c", 2},
	    {"{\"signup\": \"2024-01-01T00:00:00.001Z\"}", "off", -1},
	    /* matches (POSIX ERE) */
	    {"{\"host\": \"hv-eu-12\"}", "d", 3},
	    {"{\"host\": \"hv-asia-1\"}", "off", -1},
	    /* lt over reals */
	    {"{\"price\": 2.5}", "e", 4},
	    {"{\"price\": 2.999}", "e", 4},
	    {"{\"price\": 3}", "off", -1},
	    {"{\"price\": -1e300}", "e", 4},
	    /* eq over a JSON boolean and its string */
	    {"{\"beta\": true}", "f", 5},
	    {"{\"beta\": \"true\"}", "f", 5},
	    {"{\"beta\": 1}", "off", -1},
	    {"{\"beta\": false}", "off", -1},
	    /* ends_with */
	    {"{\"email\": \"x@novacron.io\"}", "g", 6},
	    {"{\"email\": \"x@novacron.io.evil\"}", "off", -1},
	    /* rule order: the first match decides */
	    {"{\"age\": 42, \"country\": \"FR\", \"beta\": true}", "a", 0},
	    {"{\"beta\": true, \"email\": \"x@novacron.io\"}", "f", 5},
	    {"{\"host\": \"hv-us-1\", \"price\": 1}", "d", 3},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct flag_result r = ev(fx->set, "ops", cases[i].ctx);

		if (strcmp(r.variant, cases[i].variant) != 0 || r.rule != cases[i].rule)
			fail_msg("%s: got %s (rule %d), want %s (rule %d)", cases[i].ctx, r.variant,
			         r.rule, cases[i].variant, cases[i].rule);
		assert_int_equal(r.reason, cases[i].rule >= 0 ? FLAG_REASON_TARGETING_MATCH
		                                              : FLAG_REASON_DEFAULT);
	}
}

/* ------------------------------------------------------------------------ */
/* JSON contexts                                                              */

static void test_json_ctx_values(void **state)
{
	json_t *obj = json_loads("{\"s\": \"a\\u0000b\", \"i\": -7, \"big\": 9007199254740993,"
	                         " \"r\": 0.1, \"third\": 0.3333333333333333, \"e\": 1e100,"
	                         " \"whole\": 3.0, \"t\": true, \"f\": false, \"n\": null,"
	                         " \"a\": [1], \"o\": {\"x\": 1}}",
	                         JSON_ALLOW_NUL, NULL);
	static const struct {
		const char *attr;
		const char *want; /* NULL: absent */
		size_t len;
	} cases[] = {
	    {"s", "a\0b", 3},
	    {"i", "-7", 2},
	    {"big", "9007199254740993", 16},
	    {"r", "0.1", 3},
	    {"third", "0.3333333333333333", 18},
	    {"e", "1e+100", 6},
	    {"whole", "3", 1},
	    {"t", "true", 4},
	    {"f", "false", 5},
	    {"n", NULL, 0},
	    {"a", NULL, 0},
	    {"o", NULL, 0},
	    {"missing", NULL, 0},
	};
	struct flag_json_ctx c;

	assert_non_null(obj);
	assert_int_equal(flag_json_ctx_init(&c, obj), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct str v = STR_NULL;
		int found = flag_ctx_json_attr(&c, cases[i].attr, &v);

		if (!cases[i].want) {
			assert_int_equal(found, 0);
			continue;
		}
		assert_int_equal(found, 1);
		if (v.len != cases[i].len || memcmp(v.p, cases[i].want, v.len) != 0)
			fail_msg("%s: got \"%.*s\"", cases[i].attr, (int)v.len, v.p);
	}
	json_decref(obj);
}

static void test_json_ctx_scratch_ring(void **state)
{
	json_t *obj =
	    json_pack("{s:i, s:i, s:i, s:i, s:f}", "a", 1, "b", 22, "c", 333, "d", 4444, "e", 5.5);
	struct flag_json_ctx c;
	struct str v[FLAG_JSON_SCRATCH + 1];
	const char *want[] = {"1", "22", "333", "4444", "5.5"};

	assert_int_equal(FLAG_JSON_SCRATCH, 4);
	flag_json_ctx_init(&c, obj);
	for (int i = 0; i < 4; i++)
		assert_int_equal(flag_ctx_json_attr(&c, (const char[]){(char)('a' + i), 0}, &v[i]),
		                 1);
	/* a number stays valid for FLAG_JSON_SCRATCH - 1 further lookups */
	for (int i = 0; i < 4; i++)
		assert_true(str_eq_c(v[i], want[i]));
	/* a fifth number reuses the oldest slot; the three after it are intact */
	assert_int_equal(flag_ctx_json_attr(&c, "e", &v[4]), 1);
	assert_true(str_eq_c(v[4], want[4]));
	for (int i = 1; i < 4; i++)
		assert_true(str_eq_c(v[i], want[i]));
	json_decref(obj);
}

static void test_json_ctx_invalid(void **state)
{
	struct flag_json_ctx c;
	json_t *arr = json_pack("[s]", "targetingKey");
	struct str v;

	assert_int_equal(flag_json_ctx_init(&c, arr), -1); /* OFREP: INVALID_CONTEXT */
	assert_int_equal(flag_ctx_json_attr(&c, "targetingKey", &v), 0);
	assert_int_equal(flag_json_ctx_init(&c, NULL), 0); /* no context: empty */
	assert_int_equal(flag_ctx_json_attr(&c, "targetingKey", &v), 0);
	json_decref(arr);
}

/* A numeric sticky value buckets like its decimal text. */
static void test_numeric_sticky_value(void **state)
{
	struct handflag h;
	struct flagset *set;
	char err[128];
	json_t *num = json_pack("{s:i}", "targetingKey", 123456);
	json_t *txt = json_pack("{s:s}", "targetingKey", "123456");
	struct flag_json_ctx c;
	struct flag_result a, b;

	handflag_init(&h, "n", 50000);
	set = flagset_build(&h.f, 1, NULL, 0, err, sizeof(err));
	assert_non_null(set);
	flag_json_ctx_init(&c, num);
	assert_int_equal(flag_eval(flagset_at(set, 0), flag_ctx_json_attr, &c, &a), 0);
	flag_json_ctx_init(&c, txt);
	assert_int_equal(flag_eval(flagset_at(set, 0), flag_ctx_json_attr, &c, &b), 0);
	assert_int_equal(a.bucket, b.bucket);
	assert_int_equal(a.bucket, bucket_of("n", 1, "123456", 6));
	assert_string_equal(a.variant, b.variant);
	json_decref(num);
	json_decref(txt);
	flagset_free(set);
}

/* ------------------------------------------------------------------------ */
/* Building                                                                   */

static void test_find_many(void **state)
{
	enum { N = 300 };
	static struct handflag h[N];
	static char names[N][16];
	static struct config_flag flags[N];
	struct flagset *set;
	char err[128];

	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "flag-%d", i);
		handflag_init(&h[i], names[i], (uint32_t)i * 300);
		flags[i] = h[i].f;
		flags[i].rollout.v = &h[i].entry;
	}
	set = flagset_build(flags, N, NULL, 0, err, sizeof(err));
	assert_non_null(set);
	assert_int_equal(flagset_count(set), N);
	for (int i = 0; i < N; i++) {
		char buf[32];
		int len = snprintf(buf, sizeof(buf), "%sXYZ", names[i]);
		const struct flag *f = flagset_find(set, buf, (size_t)len - 3);

		assert_non_null(f);
		assert_ptr_equal(f, flagset_at(set, (size_t)i));
		assert_string_equal(flag_key(f), names[i]);
		assert_null(flagset_find(set, buf, (size_t)len)); /* "flag-iXYZ" */
	}
	assert_null(flagset_find(set, "flag-300", 8));
	assert_null(flagset_find(set, "flag-", 5));
	assert_null(flagset_at(set, N));
	flagset_free(set);

	/* an empty set */
	set = flagset_build(NULL, 0, NULL, 0, err, sizeof(err));
	assert_non_null(set);
	assert_int_equal(flagset_count(set), 0);
	assert_null(flagset_find(set, "x", 1));
	flagset_free(set);
	flagset_free(NULL);
}

static void expect_build_error(const struct config_flag *flags, size_t nflags,
                               const struct config_segment *segs, size_t nsegs, const char *want)
{
	char err[256];
	struct flagset *set = flagset_build(flags, nflags, segs, nsegs, err, sizeof(err));

	if (set) {
		flagset_free(set);
		fail_msg("built; want \"%s\"", want);
	}
	if (strcmp(err, want) != 0)
		fail_msg("error \"%s\", want \"%s\"", err, want);
}

static void test_build_errors(void **state)
{
	const char *beta_vals[] = {"true"}, *bad_re[] = {"(unclosed"};
	struct config_condition beta_cond = {"beta", CONFIG_OP_EQ, {beta_vals, 1}, 0};
	struct config_condition re_cond = {"host", CONFIG_OP_MATCHES, {bad_re, 1}, 0};
	struct config_segment segs[2] = {{"beta", &beta_cond, 1, 0}, {"beta", &beta_cond, 1, 0}};
	struct config_segment bad_seg = {"hosts", &re_cond, 1, 0};
	struct config_flag_rule rule = {.segment = "nope", .serve = "on"};
	struct config_split_entry over[2] = {{"on", 0, 60000, 0}, {"on", 0, 50000, 0}};
	struct config_split_entry ghost = {"ghost", 0, 1000, 0};
	struct handflag h, h2;

	handflag_init(&h, "f", 1000);
	h.f.rules = &rule;
	h.f.nrules = 1;
	expect_build_error(&h.f, 1, segs, 1,
	                   "flag \"f\": rules[0]: segment \"nope\" is not defined");
	rule.segment = "beta";
	rule.serve = "maybe";
	expect_build_error(&h.f, 1, segs, 1,
	                   "flag \"f\": rules[0]: variant \"maybe\" is not defined");
	rule.serve = NULL;
	rule.rollout = (struct config_split){&ghost, 1, 1000, 0};
	expect_build_error(&h.f, 1, segs, 1,
	                   "flag \"f\": rules[0]: variant \"ghost\" is not defined");
	rule.rollout = (struct config_split){over, 2, 110000, 0};
	expect_build_error(&h.f, 1, segs, 1,
	                   "flag \"f\": rules[0]: percentages add up to more than 100");
	h.f.nrules = 0;
	h.f.rollout = (struct config_split){&ghost, 1, 1000, 0};
	expect_build_error(&h.f, 1, NULL, 0,
	                   "flag \"f\": rollout: variant \"ghost\" is not defined");

	handflag_init(&h, "f", 1000);
	h.f.off_variant = "none";
	expect_build_error(&h.f, 1, NULL, 0, "flag \"f\": off_variant \"none\" is not defined");
	h.f.nvariants = 0;
	expect_build_error(&h.f, 1, NULL, 0, "flag \"f\": at least one variant is required");

	handflag_init(&h, "f", 1000);
	handflag_init(&h2, "f", 2000);
	{
		struct config_flag two[2] = {h.f, h2.f};

		two[0].rollout.v = &h.entry;
		two[1].rollout.v = &h2.entry;
		expect_build_error(two, 2, NULL, 0, "flag \"f\" is defined twice");
	}
	expect_build_error(&h.f, 1, segs, 2, "segment \"beta\" is defined twice");
	expect_build_error(&h.f, 1, &bad_seg, 1, "segment hosts: invalid regex");
}

/* The admin API's path: a flag from JSON without a config, segments resolved by name. */
static void test_flag_from_json(void **state)
{
	static const char yaml[] = "segments:\n"
	                           "  beta: {match: [{attr: beta, op: eq, values: [\"true\"]}]}\n";
	struct config_errors errs = {0};
	struct config *cfg = config_load_string("s.yaml", yaml, strlen(yaml), &errs);
	json_t *def = json_loads("{\"sticky\": \"nodeId\", \"rules\": [{\"segment\": \"beta\", "
	                         "\"serve\": \"on\"}], \"rollout\": {\"on\": 12.5}, "
	                         "\"exclude\": [\"node-123\"]}",
	                         0, NULL);
	struct config_flag *cf;
	struct flagset *set;
	char err[128], in[32], ctx[64];

	assert_non_null(cfg);
	assert_non_null(def);
	cf = config_flag_from_json("request", "dwcp_v3_hde", def, NULL, &errs);
	if (!cf)
		config_errors_print(&errs, stderr);
	assert_non_null(cf);
	set = flagset_build(cf, 1, cfg->segments, cfg->nsegments, err, sizeof(err));
	if (!set)
		fail_msg("%s", err);
	config_flag_free(cf);
	config_free(cfg);
	json_decref(def);
	config_errors_release(&errs);

	assert_served(ev(set, "dwcp_v3_hde", "{\"beta\": \"true\"}"), "on",
	              FLAG_REASON_TARGETING_MATCH);
	assert_served(ev(set, "dwcp_v3_hde", "{\"nodeId\": \"node-123\", \"beta\": \"true\"}"),
	              "off", FLAG_REASON_TARGETING_MATCH);
	key_in_range("dwcp_v3_hde", "n", 12499, 12500, in, sizeof(in));
	snprintf(ctx, sizeof(ctx), "{\"nodeId\": \"%s\"}", in);
	assert_served(ev(set, "dwcp_v3_hde", ctx), "on", FLAG_REASON_SPLIT);
	key_in_range("dwcp_v3_hde", "n", 12500, 12501, in, sizeof(in));
	snprintf(ctx, sizeof(ctx), "{\"nodeId\": \"%s\"}", in);
	assert_served(ev(set, "dwcp_v3_hde", ctx), "off", FLAG_REASON_SPLIT);
	flagset_free(set);
}

/* A time the config validator accepts compiles, and contexts read times the same way. */
static void test_times_compile_as_validated(void **state)
{
	static const char yaml[] =
	    "segments:\n"
	    "  early: {match: [{attr: t, op: before, values: [\"2024-01-01 00:00:00.5z\"]}]}\n"
	    "flags:\n"
	    "  f: {rules: [{segment: early, serve: on}]}\n";
	static const struct {
		const char *ctx;
		const char *variant;
	} cases[] = {
	    {"{\"t\": \"2024-01-01T00:00:00.499Z\"}", "on"},
	    {"{\"t\": \"2024-01-01t00:00:00.5z\"}", "off"},
	    {"{\"t\": \"2023-12-31T23:00:00-01:00\"}", "on"},
	    {"{\"t\": \"2023-12-31 23:59:59Z\"}", "on"},
	    /* not RFC 3339: no match */
	    {"{\"t\": \"2023-1-1T00:00:00Z\"}", "off"},
	    {"{\"t\": \"2023-12-31T23:59:59\"}", "off"},
	    {"{\"t\": \"2023-12-31T23:59:59.Z\"}", "off"},
	    {"{\"t\": \"2023-02-30T00:00:00Z\"}", "off"},
	};
	struct config_errors errs = {0};
	struct config *cfg = config_load_string("t.yaml", yaml, strlen(yaml), &errs);
	struct flagset *set;
	char err[128];

	if (!cfg)
		config_errors_print(&errs, stderr);
	assert_non_null(cfg);
	set =
	    flagset_build(cfg->flags, cfg->nflags, cfg->segments, cfg->nsegments, err, sizeof(err));
	if (!set)
		fail_msg("%s", err);
	config_free(cfg);
	config_errors_release(&errs);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct flag_result r = ev(set, "f", cases[i].ctx);

		if (strcmp(r.variant, cases[i].variant) != 0)
			fail_msg("%s: got %s, want %s", cases[i].ctx, r.variant, cases[i].variant);
	}
	flagset_free(set);
}

/* ------------------------------------------------------------------------ */
/* Allocation-free, thread-safe                                               */

static void test_eval_does_not_allocate(void **state)
{
#ifdef COUNT_ALLOCS
	struct fixture *fx = *state;
	static const char *const ctxs[] = {
	    "{\"nodeId\": \"node-123\"}",
	    "{\"nodeId\": \"node-7\"}",
	    "{\"nodeId\": \"n1\", \"email\": \"a@novacron.io\"}",
	    "{\"nodeId\": \"n1\", \"plan\": \"gold\"}",
	    "{\"nodeId\": \"n2\", \"age\": 44, \"price\": 2.5}",
	    "{\"targetingKey\": \"k\"}",
	    "{}",
	};
	const char *flags[] = {"dwcp_v3_hde", "colors",     "static_flag",
	                       "killed",      "rules_only", "nope"};

	/* the counter itself works, so a zero below means something */
	nallocs = 0;
	counting = 1;
	{
		void *volatile p = malloc(16); /* volatile: the pair cannot be elided */

		free(p);
	}
	counting = 0;
	assert_int_equal(nallocs, 1);

	for (size_t i = 0; i < sizeof(ctxs) / sizeof(ctxs[0]); i++) {
		json_t *obj = json_loads(ctxs[i], 0, NULL);
		struct flag_json_ctx c;

		flag_json_ctx_init(&c, obj);
		for (size_t j = 0; j < sizeof(flags) / sizeof(flags[0]); j++) {
			const struct flag *f = flagset_find(fx->set, flags[j], strlen(flags[j]));
			struct flag_result r;

			nallocs = 0;
			counting = 1;
			flag_eval(f, flag_ctx_json_attr, &c, &r);
			counting = 0;
			if (nallocs)
				fail_msg("%s with %s: %zu allocations", flags[j], ctxs[i], nallocs);
		}
		json_decref(obj);
	}
#else
	skip();
#endif
}

struct thread_arg {
	const struct flagset *set;
	const char *const *variants; /* expected, per key */
	int nkeys;
	int failed;
};

static void *eval_thread(void *p)
{
	struct thread_arg *a = p;

	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < a->nkeys; i++) {
			char key[32];
			struct flag_result r;
			json_t *obj;
			struct flag_json_ctx c;

			snprintf(key, sizeof(key), "t-%d", i);
			obj = json_pack("{s:s, s:s}", "targetingKey", key, "nodeId", key);
			flag_json_ctx_init(&c, obj);
			flag_eval(flagset_find(a->set, "colors", 6), flag_ctx_json_attr, &c, &r);
			a->failed |= r.variant != a->variants[2 * i];
			flag_eval(flagset_find(a->set, "dwcp_v3_hde", 11), flag_ctx_json_attr, &c,
			          &r);
			a->failed |= r.variant != a->variants[2 * i + 1];
			json_decref(obj);
		}
	}
	return NULL;
}

static void test_concurrent_eval(void **state)
{
	struct fixture *fx = *state;
	enum { KEYS = 5000, THREADS = 4 };
	static const char *want[2 * KEYS];
	struct thread_arg args[THREADS];
	pthread_t th[THREADS];

	for (int i = 0; i < KEYS; i++) {
		char ctx[96];

		snprintf(ctx, sizeof(ctx), "{\"targetingKey\": \"t-%d\", \"nodeId\": \"t-%d\"}", i,
		         i);
		want[2 * i] = ev(fx->set, "colors", ctx).variant;
		want[2 * i + 1] = ev(fx->set, "dwcp_v3_hde", ctx).variant;
	}
	for (int t = 0; t < THREADS; t++) {
		args[t] = (struct thread_arg){fx->set, want, KEYS, 0};
		assert_int_equal(pthread_create(&th[t], NULL, eval_thread, &args[t]), 0);
	}
	for (int t = 0; t < THREADS; t++) {
		pthread_join(th[t], NULL);
		assert_int_equal(args[t].failed, 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reason_static),
	    cmocka_unit_test(test_reason_default),
	    cmocka_unit_test(test_reason_disabled),
	    cmocka_unit_test(test_reason_targeting_match),
	    cmocka_unit_test(test_reason_split),
	    cmocka_unit_test(test_uniform_splits_need_no_key),
	    cmocka_unit_test(test_error_targeting_key_missing),
	    cmocka_unit_test(test_error_flag_not_found),
	    cmocka_unit_test(test_names),
	    cmocka_unit_test(test_exclude_include),
	    cmocka_unit_test(test_exclude_beats_include),
	    cmocka_unit_test(test_variant_values),
	    cmocka_unit_test(test_value_json_precision),
	    cmocka_unit_test(test_docs_vectors),
	    cmocka_unit_test(test_split_distribution),
	    cmocka_unit_test(test_raise_keeps_exposed_units),
	    cmocka_unit_test(test_explicit_off_share),
	    cmocka_unit_test(test_segment_operators),
	    cmocka_unit_test(test_json_ctx_values),
	    cmocka_unit_test(test_json_ctx_scratch_ring),
	    cmocka_unit_test(test_json_ctx_invalid),
	    cmocka_unit_test(test_numeric_sticky_value),
	    cmocka_unit_test(test_find_many),
	    cmocka_unit_test(test_build_errors),
	    cmocka_unit_test(test_flag_from_json),
	    cmocka_unit_test(test_times_compile_as_validated),
	    cmocka_unit_test(test_eval_does_not_allocate),
	    cmocka_unit_test(test_concurrent_eval),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
