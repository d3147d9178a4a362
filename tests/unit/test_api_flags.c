/*
 * test_api_flags.c - the flag API module's pure pieces (src/api/flags.c,
 * with flags/registry.c and flags/stream.c included to reach their statics): definitions as JSON and back
 * (flag_config_to_json, config_segment_from_json), derived percentages,
 * If-None-Match matching, percent-decoding, reals in replies, and the OFREP
 * handlers through api_handle() with an in-memory store: success, each error
 * code (GENERAL by taking the published state away) and its counter, bulk
 * ETag / 304, a change through the API with its audit event, and exclusions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/api/flags.c"
#include "../../src/flags/registry.c"
#include "../../src/flags/stream.c"

/* The module behind the API object (its internals, for assertions). */
#define REG(f) ((f)->fl->fl)

static const char yaml[] =
    "admin:\n"
    "  tokens:\n"
    "    - {name: ops, secret: s3cret, scopes: [admin]}\n"
    "    - {name: viewer, secret: r34d, scopes: [read]}\n"
    "store: \"sqlite::memory:\"\n"
    "segments:\n"
    "  internal: {match: [{attr: email, op: ends_with, values: [\"@x.io\"]}]}\n"
    "  v2: {match: [{attr: app, op: semver_gt, values: [\"2.0.0\"]}, "
    "{attr: n, op: gte, values: [\"3\"]}]}\n"
    "flags:\n"
    "  f1:\n"
    "    description: one\n"
    "    sticky: nodeId\n"
    "    variants: {blue: {\"hex\": \"#00f\"}, red: 0.1, off: null}\n"
    "    rules:\n"
    "      - {segment: internal, serve: red}\n"
    "      - {segment: v2, rollout: {blue: 12.345, red: 5}}\n"
    "    rollout: {blue: 10, off: 90}\n"
    "    exclude: [n-1]\n"
    "    include: [n-2]\n"
    "  f2: {}\n";

struct fx {
	struct config *cfg;
	struct store *st;
	struct loop *loop;
	struct api api;
	struct auth_token tokens[2];
	struct api_flags *fl;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct config_errors errs;
	char err[512];

	config_errors_init(&errs);
	f->cfg = config_load_string("t.yaml", yaml, sizeof(yaml) - 1, &errs);
	config_errors_print(&errs, stderr);
	config_errors_release(&errs);
	assert_non_null(f->cfg);
	f->st = store_open("sqlite::memory:", err, sizeof(err));
	assert_non_null(f->st);
	f->loop = loop_new();
	api_init(&f->api);
	f->api.store = f->st;
	f->tokens[0] = (struct auth_token){"ops", "s3cret", SCOPE_ADMIN};
	f->tokens[1] = (struct auth_token){"viewer", "r34d", SCOPE_READ};
	f->api.tokens = f->tokens;
	f->api.ntokens = 2;
	f->fl = api_flags_init(&f->api, f->loop, f->cfg, err, sizeof(err));
	if (!f->fl)
		fprintf(stderr, "%s\n", err);
	assert_non_null(f->fl);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	api_flags_free(f->fl);
	loop_free(f->loop);
	store_close(f->st);
	config_free(f->cfg);
	free(f);
	return 0;
}

/* One request; returns the status, the parsed body in *out (may be NULL). */
static int call(struct fx *f, const char *method, const char *path, const char *body,
                const char *inm, json_t **out, char *etag)
{
	struct api_request req = {
	    .method = str_c(method),
	    .path = str_c(path),
	    .authorization = STR_LIT("Bearer s3cret"),
	    .if_none_match = inm ? str_c(inm) : STR_NULL,
	    .body = body ? str_c(body) : STR_NULL,
	};
	struct api_response resp;
	int status;

	api_response_init(&resp);
	api_handle(&f->api, &req, &resp);
	status = resp.status;
	if (out)
		*out = buf_used(&resp.body)
		           ? json_loadb(buf_head(&resp.body), buf_used(&resp.body), 0, NULL)
		           : NULL;
	if (etag)
		snprintf(etag, 80, "%s", resp.etag);
	api_response_release(&resp);
	return status;
}

static void test_definition_round_trip(void **state)
{
	struct fx *f = *state;
	const struct config_flag *cf = config_flag_find(f->cfg, "f1");
	json_t *j = flag_config_to_json(cf), *body, *j2;
	struct config_errors errs;
	struct config_flag *back;
	struct config fake;
	char *s;

	assert_non_null(j);
	s = flag_json_text(j);
	assert_string_equal(
	    s, "{\"key\":\"f1\",\"description\":\"one\",\"enabled\":true,"
	       "\"variants\":{\"blue\":{\"hex\":\"#00f\"},\"red\":0.1,\"off\":null},"
	       "\"off_variant\":\"off\",\"sticky\":\"nodeId\","
	       "\"rules\":[{\"segment\":\"internal\",\"serve\":\"red\"},"
	       "{\"segment\":\"v2\",\"rollout\":{\"blue\":12.345,\"red\":5}}],"
	       "\"rollout\":{\"blue\":10,\"off\":90},\"exclude\":[\"n-1\"],\"include\":[\"n-2\"]}");
	free(s);
	config_errors_init(&errs);
	memset(&fake, 0, sizeof(fake));
	fake.segments = REG(f)->conf.segv;
	fake.nsegments = REG(f)->conf.nsegs;
	body = def_body(j);
	back = config_flag_from_json("t", "f1", body, &fake, &errs);
	assert_non_null(back);
	j2 = flag_config_to_json(back);
	assert_true(json_equal(j, j2));
	assert_int_equal(def_percentage(j), 10000);
	json_decref(j2);
	json_decref(body);
	config_flag_free(back);
	config_errors_release(&errs);
	json_decref(j);
}

static void test_segment_round_trip(void **state)
{
	struct fx *f = *state;
	json_t *j = flag_segment_to_json(config_segment_find(f->cfg, "v2")), *body, *j2;
	struct config_errors errs;
	struct config_segment *seg;

	config_errors_init(&errs);
	body = json_copy(j);
	json_object_del(body, "name");
	seg = config_segment_from_json("t", "v2", body, &errs);
	assert_non_null(seg);
	assert_int_equal(seg->nconds, 2);
	j2 = flag_segment_to_json(seg);
	assert_true(json_equal(j, j2));
	config_segment_free(seg);
	json_decref(j2);
	/* invalid: the error names the field */
	json_decref(body);
	body =
	    json_pack("{s:[{s:s, s:s, s:[s]}]}", "match", "attr", "a", "op", "lt", "values", "x");
	assert_null(config_segment_from_json("t", "s", body, &errs));
	assert_string_equal(config_errors_get(&errs, 0)->path, "match[0].values[0]");
	json_decref(body);
	json_decref(j);
	config_errors_release(&errs);
}

static void test_etag_and_decoding(void **state)
{
	char out[16];

	(void)state;
	assert_true(etag_matches(STR_LIT("\"1-ab\""), "\"1-ab\""));
	assert_true(etag_matches(STR_LIT("\"x\", W/\"1-ab\""), "\"1-ab\""));
	assert_true(etag_matches(STR_LIT("*"), "\"1-ab\""));
	assert_false(etag_matches(STR_LIT("\"1-ac\""), "\"1-ab\""));
	assert_false(etag_matches(STR_LIT(""), "\"1-ab\""));
	assert_int_equal(pct_decode(STR_LIT("node%2D1"), out, sizeof(out)), 0);
	assert_string_equal(out, "node-1");
	assert_int_equal(pct_decode(STR_LIT("a%2"), out, sizeof(out)), -1);
	assert_int_equal(pct_decode(STR_LIT("a%00"), out, sizeof(out)), -1);
	assert_int_equal(pct_decode(STR_LIT("0123456789abcdefg"), out, sizeof(out)), -1);
}

/* Evaluations counted so far, over every (flag, variant). */
static uint64_t counted(const struct fx *f)
{
	uint64_t n = 0;

	for (size_t i = 0; i < REG(f)->ncv; i++)
		n += atomic_load(&REG(f)->cv[i]->n);
	return n;
}

static void test_ofrep_codes(void **state)
{
	struct fx *f = *state;
	struct flags_snap *saved;
	json_t *o;

	assert_int_equal(call(f, "POST", "/ofrep/v1/evaluate/flags/f1",
	                      "{\"context\":{\"email\":\"a@x.io\"}}", NULL, &o, NULL),
	                 200);
	assert_string_equal(json_string_value(json_object_get(o, "variant")), "red");
	assert_true(json_real_value(json_object_get(o, "value")) == 0.1);
	json_decref(o);
	assert_int_equal(call(f, "POST", "/ofrep/v1/evaluate/flags/zz", "{}", NULL, &o, NULL), 404);
	assert_string_equal(json_string_value(json_object_get(o, "errorCode")), "FLAG_NOT_FOUND");
	json_decref(o);
	assert_int_equal(call(f, "POST", "/ofrep/v1/evaluate/flags/f1", "{}", NULL, &o, NULL), 400);
	assert_string_equal(json_string_value(json_object_get(o, "errorCode")),
	                    "TARGETING_KEY_MISSING");
	json_decref(o);
	assert_int_equal(
	    call(f, "POST", "/ofrep/v1/evaluate/flags/f1", "{\"context\":1}", NULL, &o, NULL), 400);
	assert_string_equal(json_string_value(json_object_get(o, "errorCode")), "INVALID_CONTEXT");
	json_decref(o);
	assert_int_equal(call(f, "POST", "/ofrep/v1/evaluate/flags/f1", "{", NULL, &o, NULL), 400);
	assert_string_equal(json_string_value(json_object_get(o, "errorCode")), "PARSE_ERROR");
	json_decref(o);
	/* GENERAL: an internal failure, simulated by taking the published state away */
	saved = REG(f)->cur;
	REG(f)->cur = NULL;
	assert_int_equal(call(f, "POST", "/ofrep/v1/evaluate/flags/f1", "{}", NULL, &o, NULL), 500);
	assert_string_equal(json_string_value(json_object_get(o, "errorCode")), "GENERAL");
	assert_non_null(json_string_value(json_object_get(o, "errorDetails")));
	json_decref(o);
	assert_int_equal(call(f, "POST", "/ofrep/v1/evaluate/flags", "{}", NULL, &o, NULL), 500);
	assert_string_equal(json_string_value(json_object_get(o, "errorCode")), "GENERAL");
	json_decref(o);
	REG(f)->cur = saved;
	/* each error counted once under its own code; only the success is a variant count */
	assert_int_equal(atomic_load(&REG(f)->errors[FLAG_ERROR_GENERAL]), 2);
	assert_int_equal(atomic_load(&REG(f)->errors[FLAG_ERROR_FLAG_NOT_FOUND]), 1);
	assert_int_equal(atomic_load(&REG(f)->errors[FLAG_ERROR_TARGETING_KEY_MISSING]), 1);
	assert_int_equal(atomic_load(&REG(f)->errors[FLAG_ERROR_INVALID_CONTEXT]), 1);
	assert_int_equal(atomic_load(&REG(f)->errors[FLAG_ERROR_PARSE_ERROR]), 1);
	assert_int_equal(counted(f), 1);
}

/* POST /v1/feature-flags/exclude: unknown fields are refused, an exclusion leaves include. */
static void test_exclude(void **state)
{
	struct fx *f = *state;
	uint64_t rev0 = REG(f)->revision;
	json_t *o, *ex;

	assert_int_equal(call(f, "POST", "/v1/feature-flags/exclude",
	                      "{\"feature\":\"f1\",\"nodes\":[\"n-2\"],\"bogus\":1}", NULL, &o,
	                      NULL),
	                 422);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(o, "error"), "field")), "bogus");
	json_decref(o);
	assert_int_equal(REG(f)->revision, rev0); /* refused: nothing written */
	assert_int_equal(call(f, "POST", "/v1/feature-flags/exclude",
	                      "{\"feature\":\"f1\",\"nodes\":[\"n-2\"]}", NULL, &o, NULL),
	                 200);
	ex = json_object_get(o, "exclude");
	assert_int_equal(json_array_size(ex), 2);
	assert_string_equal(json_string_value(json_array_get(ex, 0)), "n-1");
	assert_string_equal(json_string_value(json_array_get(ex, 1)), "n-2");
	assert_int_equal(json_array_size(json_object_get(o, "include")), 0);
	json_decref(o);
	assert_true(REG(f)->revision > rev0);
}

/* The 422's field, or "" (the caller frees o). */
static const char *err_field(const json_t *o)
{
	const char *fld = json_string_value(json_object_get(json_object_get(o, "error"), "field"));

	return fld ? fld : "";
}

/* Wrong types are 422s naming the field, never coerced; odd numbers and names are refused. */
static void test_strict_bodies(void **state)
{
	static const struct {
		const char *method, *path, *body, *field;
	} bad[] = {
	    {"PUT", "/v1/feature-flags/f3",
	     "{\"variants\": {\"off\": 1}, \"exclude\": [1, 2.5, true]}", "exclude[0]"},
	    {"PUT", "/v1/feature-flags/f3", "{\"variants\": {\"off\": 1}, \"description\": 5}",
	     "description"},
	    {"PUT", "/v1/feature-flags/f3", "{\"variants\": {\"off\": 1}, \"sticky\": false}",
	     "sticky"},
	    {"PUT", "/v1/feature-flags/f3",
	     "{\"variants\": {\"on\": 1, \"off\": 0}, \"rollout\": {\"on\": 1e-400}}",
	     "rollout.on"},
	    {"PUT", "/v1/feature-flags/f3",
	     "{\"variants\": {\"on\": 1, \"off\": 0}, \"rollout\": {\"on\": 1e-10}}", "rollout.on"},
	    {"POST", "/v1/feature-flags", "{\"feature\": \"f3\", \"percentage\": 1e-400}",
	     "percentage"},
	    {"POST", "/v1/feature-flags", "{\"feature\": \"f3\", \"percentage\": \"5\"}",
	     "percentage"},
	    {"POST", "/v1/feature-flags", "{\"feature\": \"..\", \"percentage\": 5}", "feature"},
	    {"PUT", "/v1/feature-flags/..", "{\"variants\": {\"off\": 1}}", "key"},
	    {"PUT", "/v1/feature-flags/%2e", "{\"variants\": {\"off\": 1}}", "key"},
	    {"PUT", "/v1/feature-flags/f3", "{\"variants\": {\"off\": [1, {\"x\": 1e-320}]}}",
	     "variants.off[1].x"},
	};
	struct fx *f = *state;
	uint64_t rev0 = REG(f)->revision;
	json_t *o;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int st = call(f, bad[i].method, bad[i].path, bad[i].body, NULL, &o, NULL);

		if (st != 422 || strcmp(err_field(o), bad[i].field) != 0)
			fail_msg("%s %s %s: %d %s", bad[i].method, bad[i].path, bad[i].body, st,
			         o ? json_dumps(o, 0) : "");
		json_decref(o);
	}
	assert_int_equal(REG(f)->revision, rev0); /* nothing was written */
	assert_null(flags_def(REG(f), "f3", NULL));
	assert_null(flags_def(REG(f), "..", NULL));
	/* the same bodies with the right types pass */
	assert_int_equal(call(f, "POST", "/v1/feature-flags",
	                      "{\"feature\": \"f3\", \"percentage\": 0.001}", NULL, NULL, NULL),
	                 201);
	assert_int_equal(call(f, "PUT", "/v1/feature-flags/f4",
	                      "{\"variants\": {\"off\": 1}, \"description\": \"5\","
	                      " \"exclude\": [\"1\", \"2.5\", \"true\"]}",
	                      NULL, NULL, NULL),
	                 201);
}

/* Body numbers a double cannot hold, with the field that holds them. */
static void test_numbers_check(void **state)
{
	static const struct {
		const char *json, *field, *num;
	} bad[] = {
	    {"{\"a\": 1e-400}", "a", "1e-400"},
	    {"{\"a\": {\"b\\\"c\": [0, -2.5e-310]}}", "a.b\"c[1]", "-2.5e-310"},
	    {"[1, [2, 3e-999]]", "[1][1]", "3e-999"},
	    {"{\"s\": \"1e-400\", \"t\": 0.0000000001e-320}", "t", "0.0000000001e-320"},
	};
	static const char *const good[] = {
	    "{\"a\": 0, \"b\": 0.0, \"c\": -0e-999, \"d\": 1e-300, \"e\": \"1e-400\"}",
	    "[12.345, 1e308, -7]",
	};
	char field[64], num[64];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(api_json_numbers_check(bad[i].json, strlen(bad[i].json), field,
		                                        sizeof(field), num, sizeof(num)),
		                 -1);
		assert_string_equal(field, bad[i].field);
		assert_string_equal(num, bad[i].num);
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_int_equal(api_json_numbers_check(good[i], strlen(good[i]), field,
		                                        sizeof(field), num, sizeof(num)),
		                 0);
	/* padded past any cut the scanner makes: 1e-400 and 1e-601 written long */
	{
		static const char *const heads[] = {"{\"a\": 1e-", "{\"a\": 0."};
		static const char *const tails[] = {"400}", "1}"};
		char body[1024];

		for (size_t i = 0; i < 2; i++) {
			size_t hl = strlen(heads[i]);

			memcpy(body, heads[i], hl);
			memset(body + hl, '0', 600);
			snprintf(body + hl + 600, sizeof(body) - hl - 600, "%s", tails[i]);
			assert_int_equal(api_json_numbers_check(body, strlen(body), field,
			                                        sizeof(field), num, sizeof(num)),
			                 -1);
			assert_string_equal(field, "a");
		}
	}
}

static void test_bulk_etag_and_change(void **state)
{
	struct fx *f = *state;
	char etag[80], etag2[80];
	json_t *o, *ev = NULL;
	int64_t rev0 = (int64_t)REG(f)->revision;

	assert_int_equal(call(f, "POST", "/ofrep/v1/evaluate/flags",
	                      "{\"context\":{\"nodeId\":\"n-2\",\"targetingKey\":\"k\"}}", NULL, &o,
	                      etag),
	                 200);
	assert_int_equal(json_array_size(json_object_get(o, "flags")), 2);
	json_decref(o);
	assert_int_equal(counted(f), 2); /* both flags delivered: both counted */
	assert_int_equal(call(f, "POST", "/ofrep/v1/evaluate/flags",
	                      "{\"context\":{\"nodeId\":\"n-2\",\"targetingKey\":\"k\"}}", etag, &o,
	                      NULL),
	                 304);
	assert_null(o);
	assert_int_equal(counted(f), 2); /* a 304 delivers no value: not counted */
	assert_int_equal(call(f, "POST", "/v1/feature-flags",
	                      "{\"feature\":\"f1\",\"percentage\":50,\"enabled\":false}", NULL, &o,
	                      NULL),
	                 200); /* the seed percentage goes to the first non-off variant */
	assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "rollout"), "blue")),
	                 50);
	assert_int_equal(json_object_size(json_object_get(o, "rollout")), 1);
	json_decref(o);
	assert_int_equal(call(f, "POST", "/v1/feature-flags",
	                      "{\"feature\":\"f2\",\"percentage\":50,\"enabled\":false}", NULL, &o,
	                      NULL),
	                 200);
	assert_int_equal(json_integer_value(json_object_get(o, "revision")),
	                 (json_int_t)REG(f)->revision);
	assert_true((int64_t)REG(f)->revision > rev0);
	json_decref(o);
	assert_int_equal(call(f, "POST", "/ofrep/v1/evaluate/flags",
	                      "{\"context\":{\"nodeId\":\"n-2\",\"targetingKey\":\"k\"}}", etag, &o,
	                      etag2),
	                 200);
	assert_string_not_equal(etag, etag2);
	json_decref(o);
	assert_int_equal(counted(f), 4);
	assert_int_equal(store_events_list(f->st, 0, 100, "flag/f2", &ev), 0);
	assert_int_equal(json_array_size(ev), 1);
	o = json_object_get(json_array_get(ev, 0), "details");
	assert_true(json_is_false(json_object_get(json_object_get(o, "after"), "enabled")));
	assert_true(json_is_true(json_object_get(json_object_get(o, "before"), "enabled")));
	json_decref(ev);
	assert_int_equal(f->fl->st->ring_n, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_definition_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_segment_round_trip, setup, teardown),
	    cmocka_unit_test(test_etag_and_decoding),
	    cmocka_unit_test_setup_teardown(test_ofrep_codes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bulk_etag_and_change, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_exclude, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_strict_bodies, setup, teardown),
	    cmocka_unit_test(test_numbers_check),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
