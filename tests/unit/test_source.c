/* Unit tests for src/analysis/source: Prometheus answers (vector, scalar,
 * empty, several series, status error, NaN, matrix), RFC 6901 JSON pointers
 * with ~0/~1 escapes, exec output, templating of every kind, URL encoding,
 * job results to readings, and judging two readings against the bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "analysis/source.h"
#include "core/jobs.h"

static int prom(const char *body, double *v, char *err)
{
	err[0] = '\0';
	return source_parse_prometheus(body, strlen(body), v, err, 256);
}

static void test_prometheus_vector_and_scalar(void **state)
{
	char err[256];
	double v = 0;

	assert_int_equal(prom("{\"status\":\"success\",\"data\":{\"resultType\":\"vector\","
	                      "\"result\":[{\"metric\":{\"version\":\"v2\"},"
	                      "\"value\":[1700000000.5,\"0.0125\"]}]}}",
	                      &v, err),
	                 0);
	assert_true(fabs(v - 0.0125) < 1e-12);
	assert_int_equal(prom("{\"status\":\"success\",\"data\":{\"resultType\":\"scalar\","
	                      "\"result\":[1700000000,\"42\"]}}",
	                      &v, err),
	                 0);
	assert_true(v == 42.0);
}

static void test_prometheus_errors(void **state)
{
	char err[256];
	double v;

	assert_int_equal(prom("{\"status\":\"success\",\"data\":{\"resultType\":\"vector\","
	                      "\"result\":[]}}",
	                      &v, err),
	                 -1);
	assert_non_null(strstr(err, "the query returned no series"));

	assert_int_equal(prom("{\"status\":\"success\",\"data\":{\"resultType\":\"vector\","
	                      "\"result\":[{\"metric\":{},\"value\":[1,\"1\"]},"
	                      "{\"metric\":{},\"value\":[1,\"2\"]}]}}",
	                      &v, err),
	                 -1);
	assert_string_equal(err, "the query returned 2 series; it must return one (aggregate it, "
	                         "e.g. with sum() or avg())");

	assert_int_equal(prom("{\"status\":\"success\",\"data\":{\"resultType\":\"vector\","
	                      "\"result\":[{\"metric\":{},\"value\":[1,\"NaN\"]}]}}",
	                      &v, err),
	                 -1);
	assert_non_null(strstr(err, "the query's value is NaN"));

	assert_int_equal(prom("{\"status\":\"success\",\"data\":{\"resultType\":\"scalar\","
	                      "\"result\":[1,\"+Inf\"]}}",
	                      &v, err),
	                 -1);
	assert_string_equal(err, "the query's value \"+Inf\" is not a finite number");

	assert_int_equal(prom("{\"status\":\"error\",\"errorType\":\"bad_data\","
	                      "\"error\":\"1:5: parse error: unexpected \\\"}\\\"\"}",
	                      &v, err),
	                 -1);
	assert_string_equal(err, "Prometheus answered status error: bad_data: 1:5: parse error: "
	                         "unexpected \"}\"");

	assert_int_equal(prom("{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\","
	                      "\"result\":[]}}",
	                      &v, err),
	                 -1);
	assert_non_null(strstr(err, "the query returned a matrix"));

	assert_int_equal(prom("<html>502 Bad Gateway</html>", &v, err), -1);
	assert_non_null(strstr(err, "not JSON"));
	assert_int_equal(prom("{\"status\":\"success\"}", &v, err), -1);
	assert_string_equal(err, "Prometheus answered without data.resultType and data.result");
	assert_int_equal(prom("{\"status\":\"success\",\"data\":{\"resultType\":\"scalar\","
	                      "\"result\":[1,2]}}",
	                      &v, err),
	                 -1);
	assert_non_null(strstr(err, "not [time, \"value\"]"));
}

static int ptr(const char *body, const char *p, double *v, char *err)
{
	err[0] = '\0';
	return source_parse_json_pointer(body, strlen(body), p, v, err, 256);
}

static void test_json_pointer(void **state)
{
	const char *doc = "{\"a\":{\"b\":[10,20,{\"c\":3.5}]},\"x/y\":7,\"m~n\":8,\"\":9,"
	                  "\"s\":\"1\",\"t\":true,\"n\":null}";
	char err[256];
	double v = 0;

	assert_int_equal(ptr(doc, "/a/b/1", &v, err), 0);
	assert_true(v == 20);
	assert_int_equal(ptr(doc, "/a/b/2/c", &v, err), 0);
	assert_true(v == 3.5);
	assert_int_equal(ptr(doc, "/x~1y", &v, err), 0); /* ~1 is '/' */
	assert_true(v == 7);
	assert_int_equal(ptr(doc, "/m~0n", &v, err), 0); /* ~0 is '~' */
	assert_true(v == 8);
	assert_int_equal(ptr(doc, "/", &v, err), 0); /* the empty key */
	assert_true(v == 9);
	assert_int_equal(ptr("0.75", "", &v, err), 0); /* the whole document */
	assert_true(v == 0.75);
	assert_int_equal(ptr(" 12 ", NULL, &v, err), 0);
	assert_true(v == 12);

	assert_int_equal(ptr(doc, "/a/b/3", &v, err), -1);
	assert_string_equal(err, "nothing in the body at \"/a/b/3\" (JSON pointer /a/b/3)");
	assert_int_equal(ptr(doc, "/a/b/01", &v, err), -1); /* no leading zeros */
	assert_int_equal(ptr(doc, "/a/b/-", &v, err), -1);
	assert_int_equal(ptr(doc, "/a/missing/x", &v, err), -1);
	assert_string_equal(err,
	                    "nothing in the body at \"/a/missing\" (JSON pointer /a/missing/x)");
	assert_int_equal(ptr(doc, "/x~2y", &v, err), -1);
	assert_string_equal(err, "the JSON pointer has a bad token \"x~2y\"");
	assert_int_equal(ptr(doc, "/s", &v, err), -1);
	assert_string_equal(err, "the value at JSON pointer \"/s\" is a string, not a number");
	assert_int_equal(ptr(doc, "/t", &v, err), -1);
	assert_string_equal(err, "the value at JSON pointer \"/t\" is true, not a number");
	assert_int_equal(ptr(doc, "/n", &v, err), -1);
	assert_string_equal(err, "the value at JSON pointer \"/n\" is null, not a number");
	assert_int_equal(ptr(doc, "/a", &v, err), -1);
	assert_string_equal(err, "the value at JSON pointer \"/a\" is an object, not a number");
	assert_int_equal(ptr(doc, "a", &v, err), -1);
	assert_int_equal(ptr("{oops", "", &v, err), -1);
	assert_non_null(strstr(err, "the body is not JSON (line 1"));
}

static void test_exec_output(void **state)
{
	char err[256];
	double v = 0;

	assert_int_equal(source_parse_number("0.997\n", &v, err, sizeof(err)), 0);
	assert_true(v == 0.997);
	assert_int_equal(source_parse_number("  -3e2 \r\n", &v, err, sizeof(err)), 0);
	assert_true(v == -300);
	assert_int_equal(source_parse_number("", &v, err, sizeof(err)), -1);
	assert_string_equal(err, "the command printed nothing on stdout; it must print one number");
	assert_int_equal(source_parse_number(" \n", &v, err, sizeof(err)), -1);
	assert_int_equal(source_parse_number("1 2\n", &v, err, sizeof(err)), -1);
	assert_string_equal(err, "the command printed \"1 2\"; it must print one finite number");
	assert_int_equal(source_parse_number("ok\n", &v, err, sizeof(err)), -1);
	assert_int_equal(source_parse_number("nan", &v, err, sizeof(err)), -1);
	assert_int_equal(source_parse_number("inf", &v, err, sizeof(err)), -1);
}

static void test_urlencode_and_duration(void **state)
{
	char out[64], small[6];

	assert_int_equal(source_urlencode("sum(x{v=\"a b\"})/1~_.-", out, sizeof(out)), 0);
	assert_string_equal(out, "sum%28x%7Bv%3D%22a%20b%22%7D%29%2F1~_.-");
	assert_int_equal(source_urlencode("\xc3\xa9&+", out, sizeof(out)), 0);
	assert_string_equal(out, "%C3%A9%26%2B");
	assert_int_equal(source_urlencode("abc{", small, sizeof(small)), -ENOSPC);
	assert_string_equal(small, "abc");

	source_duration(60000, out, sizeof(out));
	assert_string_equal(out, "60s");
	source_duration(1500, out, sizeof(out));
	assert_string_equal(out, "1500ms");
	source_duration(1000, out, sizeof(out));
	assert_string_equal(out, "1s");
}

static const char *exec_argv[] = {"/usr/bin/probe", "--version={{version}}", "{{service}}",
                                  "{{interval}}", "{{unknown}}"};

static struct config_check mk(enum config_source_kind k)
{
	struct config_check c;

	memset(&c, 0, sizeof(c));
	c.name = "quality";
	c.source = k;
	c.timeout_ms = 5000;
	c.query = "avg(demo_quality{version=\"{{version}}\",cohort=\"{{cohort}}\"}[{{interval}}])";
	c.http_url = "http://127.0.0.1:9/q?v={{variant}}&t={{target}}";
	c.http_pointer = "/value";
	c.exec.v = exec_argv;
	c.exec.n = 5;
	return c;
}

static const struct source_vars vars = {.cohort = "canary",
                                        .version = "v2",
                                        .variant = "v2",
                                        .service = "web",
                                        .target = "web",
                                        .interval_ms = 60000};

static void test_request_build(void **state)
{
	struct config_check q = mk(CONFIG_SOURCE_QUERY), h = mk(CONFIG_SOURCE_HTTP),
	                    x = mk(CONFIG_SOURCE_EXEC);
	static struct source_request r;
	char err[256];

	assert_int_equal(source_request_build(&q, "http://127.0.0.1:9090/", &vars, &r, err, 256),
	                 0);
	assert_int_equal(r.kind, CONFIG_SOURCE_QUERY);
	assert_int_equal(r.timeout_ms, 5000);
	assert_string_equal(r.text, "avg(demo_quality{version=\"v2\",cohort=\"canary\"}[60s])");
	assert_string_equal(r.url,
	                    "http://127.0.0.1:9090/api/v1/query?query="
	                    "avg%28demo_quality%7Bversion%3D%22v2%22%2Ccohort%3D%22canary%22%"
	                    "7D%5B60s%5D%29");
	assert_int_equal(source_request_build(&q, NULL, &vars, &r, err, 256), -1);
	assert_string_equal(err, "query checks need metrics.prometheus");

	assert_int_equal(source_request_build(&h, NULL, &vars, &r, err, 256), 0);
	assert_string_equal(r.url, "http://127.0.0.1:9/q?v=v2&t=web");
	assert_string_equal(r.text, r.url);

	assert_int_equal(source_request_build(&x, NULL, &vars, &r, err, 256), 0);
	assert_string_equal(r.argv[0], "/usr/bin/probe");
	assert_string_equal(r.argv[1], "--version=v2");
	assert_string_equal(r.argv[2], "web");
	assert_string_equal(r.argv[3], "60s");
	assert_string_equal(r.argv[4], "{{unknown}}"); /* kept as written */
	assert_null(r.argv[5]);
	assert_string_equal(r.text, "/usr/bin/probe --version=v2 web 60s {{unknown}}");

	/* too long */
	{
		static char big[SOURCE_TEXT_MAX + 10];

		memset(big, 'a', sizeof(big) - 1);
		q.query = big;
		assert_int_equal(source_request_build(&q, "http://p", &vars, &r, err, 256), -1);
		assert_string_equal(err, "the expanded query is longer than 2047 bytes");
	}
}

static void test_per_cohort(void **state)
{
	struct config_check q = mk(CONFIG_SOURCE_QUERY), h = mk(CONFIG_SOURCE_HTTP),
	                    x = mk(CONFIG_SOURCE_EXEC);
	static const char *plain[] = {"/bin/echo", "1"};

	assert_true(source_per_cohort(&q));
	assert_true(source_per_cohort(&h)); /* {{variant}} */
	assert_true(source_per_cohort(&x)); /* {{version}} */
	h.http_url = "http://127.0.0.1:9/q?t={{target}}";
	assert_false(source_per_cohort(&h));
	x.exec.v = plain;
	x.exec.n = 2;
	assert_false(source_per_cohort(&x));
	q.query = "up"; /* a query always runs for both cohorts */
	assert_true(source_per_cohort(&q));
}

static void test_read_result(void **state)
{
	struct config_check q = mk(CONFIG_SOURCE_QUERY), h = mk(CONFIG_SOURCE_HTTP),
	                    x = mk(CONFIG_SOURCE_EXEC);
	struct job_result res;
	struct source_reading r;
	char body[] = "{\"value\": 0.5}";
	char prom_err[] =
	    "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":\"bad query\"}";

	memset(&res, 0, sizeof(res));
	res.status = JOB_OK;
	res.http_status = 200;
	res.duration_ms = 12;
	res.body = body;
	res.body_len = strlen(body);
	source_read_result(&h, &res, &r);
	assert_true(r.ok);
	assert_true(r.value == 0.5);
	assert_int_equal(r.duration_ms, 12);

	res.status = JOB_FAILED;
	res.http_status = 400;
	res.body = prom_err;
	res.body_len = strlen(prom_err);
	snprintf(res.error, sizeof(res.error), "answered 400");
	source_read_result(&q, &res, &r);
	assert_false(r.ok);
	assert_string_equal(r.error,
	                    "HTTP 400: Prometheus answered status error: bad_data: bad query");

	res.status = JOB_ERROR;
	res.http_status = 0;
	res.body = NULL;
	res.body_len = 0;
	snprintf(res.error, sizeof(res.error), "could not get: Couldn't connect to server");
	source_read_result(&q, &res, &r);
	assert_false(r.ok);
	assert_string_equal(r.error, "the GET error: could not get: Couldn't connect to server");

	res.status = JOB_FAILED;
	snprintf(res.error, sizeof(res.error), "exited with status 1");
	source_read_result(&x, &res, &r);
	assert_string_equal(r.error, "the command failed: exited with status 1");

	res.status = JOB_OK;
	snprintf(res.output, sizeof(res.output), "0.25\n");
	source_read_result(&x, &res, &r);
	assert_true(r.ok);
	assert_true(r.value == 0.25);
}

static struct source_reading ok(double v)
{
	struct source_reading r;

	memset(&r, 0, sizeof(r));
	r.ok = true;
	r.value = v;
	return r;
}

static void test_evaluate_bounds(void **state)
{
	struct config_check c = mk(CONFIG_SOURCE_QUERY);
	struct source_reading a = ok(0.99), b = ok(0.999), bad;
	struct check_verdict v;

	c.min.set = true;
	c.min.value = 0.995;
	assert_int_equal(source_evaluate(&c, &a, &b, 60000, &v), CHECK_FAIL);
	assert_int_equal(v.bound, CHECK_BOUND_MIN);
	assert_true(v.canary == 0.99 && v.baseline == 0.999);
	assert_string_equal(v.metric, "query");
	assert_string_equal(v.reason,
	                    "query value 0.99 on the canary is below min 0.995 (baseline 0.999)");
	a = ok(0.998);
	assert_int_equal(source_evaluate(&c, &a, &b, 60000, &v), CHECK_PASS);

	/* ratio and difference bounds */
	memset(&c.min, 0, sizeof(c.min));
	c.max_ratio.set = true;
	c.max_ratio.value = 1.5;
	a = ok(2.0);
	b = ok(1.0);
	assert_int_equal(source_evaluate(&c, &a, &b, 60000, &v), CHECK_FAIL);
	assert_int_equal(v.bound, CHECK_BOUND_MAX_RATIO);
	assert_true(v.observed == 2.0);
	c.max_ratio.set = false;
	c.max_increase.set = true;
	c.max_increase.value = 0.5;
	assert_int_equal(source_evaluate(&c, &a, &b, 60000, &v), CHECK_FAIL);
	assert_int_equal(v.bound, CHECK_BOUND_MAX_INCREASE);
	assert_true(v.observed == 1.0);
	/* min_ratio and max_decrease, with the reasons they give */
	c.max_increase.set = false;
	c.min_ratio.set = true;
	c.min_ratio.value = 0.5;
	a = ok(1.0);
	b = ok(4.0);
	assert_int_equal(source_evaluate(&c, &a, &b, 60000, &v), CHECK_FAIL);
	assert_int_equal(v.bound, CHECK_BOUND_MIN_RATIO);
	assert_true(v.observed == 0.25);
	assert_string_equal(v.reason, "query canary/baseline ratio 0.25 is below min_ratio 0.5 "
	                              "(canary 1, baseline 4)");
	c.min_ratio.set = false;
	c.max_decrease.set = true;
	c.max_decrease.value = 2;
	assert_int_equal(source_evaluate(&c, &a, &b, 60000, &v), CHECK_FAIL);
	assert_int_equal(v.bound, CHECK_BOUND_MAX_DECREASE);
	assert_true(v.observed == -3.0);
	assert_string_equal(v.reason, "query decrease of 3 from the baseline is above max_decrease "
	                              "2 (canary 1, baseline 4)");
	c.max_decrease.set = false;
	c.max_increase.set = true;
	b = ok(0);
	a = ok(0);
	assert_int_equal(source_evaluate(&c, &a, &b, 60000, &v), CHECK_PASS);

	/* errors: never pass, never fail */
	memset(&bad, 0, sizeof(bad));
	snprintf(bad.error, sizeof(bad.error), "the query returned no series");
	assert_int_equal(source_evaluate(&c, &bad, &b, 60000, &v), CHECK_ERROR);
	assert_string_equal(v.reason,
	                    "the query source failed for the canary: the query returned no series");
	assert_int_equal(source_evaluate(&c, &a, &bad, 60000, &v), CHECK_ERROR);
	assert_string_equal(
	    v.reason, "the query source failed for the baseline: the query returned no series");
	/* a relative bound with a source that runs once */
	c.source = CONFIG_SOURCE_EXEC;
	assert_int_equal(source_evaluate(&c, &a, NULL, 60000, &v), CHECK_ERROR);
	assert_non_null(strstr(v.reason, "mention {{cohort}}, {{version}} or {{variant}}"));
	/* min/max only: once is enough */
	c.max_increase.set = false;
	c.max.set = true;
	c.max.value = 1;
	assert_int_equal(source_evaluate(&c, &a, NULL, 60000, &v), CHECK_PASS);
	assert_true(isnan(v.baseline));
	assert_string_equal(v.reason, "exec value 0 on the canary is within bounds");
}

static void test_json(void **state)
{
	struct config_check c = mk(CONFIG_SOURCE_QUERY);
	static struct source_request rc, rb;
	struct source_reading a = ok(0.5), b;
	json_t *o;
	char err[256];

	memset(&b, 0, sizeof(b));
	b.duration_ms = 3;
	snprintf(b.error, sizeof(b.error), "boom");
	assert_int_equal(source_request_build(&c, "http://p", &vars, &rc, err, 256), 0);
	assert_int_equal(source_request_build(&c, "http://p", &vars, &rb, err, 256), 0);
	o = source_json(&c, &rc, &a, &rb, &b);
	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "kind")), "query");
	assert_true(json_is_true(json_object_get(o, "per_cohort")));
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(o, "canary"), "request")), rc.text);
	assert_true(json_real_value(json_object_get(json_object_get(o, "canary"), "value")) == 0.5);
	assert_true(json_is_null(json_object_get(json_object_get(o, "baseline"), "value")));
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(o, "baseline"), "error")), "boom");
	json_decref(o);
	o = source_json(&c, &rc, &a, NULL, NULL);
	assert_true(json_is_null(json_object_get(o, "baseline")));
	assert_true(json_is_false(json_object_get(o, "per_cohort")));
	json_decref(o);
}

/* --- count checks (issue 18): test: on a source that gives counts ------------------ */

static void test_count_shapes(void **state)
{
	char err[256];
	double e = -1, n = -1;
	uint64_t ue, un;

	(void)state;
	/* exec: "ERRORS REQUESTS" */
	assert_int_equal(source_parse_counts(" 3\t1200\n", &e, &n, err, sizeof(err)), 0);
	assert_true(e == 3 && n == 1200);
	assert_int_equal(source_parse_counts("2.5 10", &e, &n, err, sizeof(err)), 0);
	assert_true(e == 2.5 && n == 10);
	assert_int_equal(source_parse_counts("3", &e, &n, err, sizeof(err)), -1);
	assert_string_equal(err, "the command printed \"3\"; a test needs two numbers, errors "
	                         "then requests (\"3 1200\")");
	assert_int_equal(source_parse_counts("3 4 5", &e, &n, err, sizeof(err)), -1);
	assert_int_equal(source_parse_counts("3 x", &e, &n, err, sizeof(err)), -1);
	assert_int_equal(source_parse_counts("\"3\" 4", &e, &n, err, sizeof(err)), -1);
	assert_int_equal(source_parse_counts("", &e, &n, err, sizeof(err)), -1);

	/* http: {"errors": N, "requests": M} at the pointer; never a string for a number */
	{
		const char *b = "{\"x\":{\"errors\":3,\"requests\":1e3}}";

		assert_int_equal(
		    source_parse_counts_json(b, strlen(b), "/x", &e, &n, err, sizeof(err)), 0);
	}
	assert_true(e == 3 && n == 1000);
	{
		const char *b = "{\"errors\":\"3\",\"requests\":10}";

		assert_int_equal(
		    source_parse_counts_json(b, strlen(b), "", &e, &n, err, sizeof(err)), -1);
		assert_string_equal(err,
		                    "\"errors\" at JSON pointer \"\" is a string, not a number (a "
		                    "test needs {\"errors\": N, \"requests\": M})");
		b = "{\"errors\":3}";
		assert_int_equal(
		    source_parse_counts_json(b, strlen(b), "", &e, &n, err, sizeof(err)), -1);
		assert_non_null(strstr(err, "\"requests\" at JSON pointer \"\" is missing"));
		b = "{\"v\":[1,2]}";
		assert_int_equal(
		    source_parse_counts_json(b, strlen(b), "/v", &e, &n, err, sizeof(err)), -1);
		assert_string_equal(err,
		                    "the value at JSON pointer \"/v\" is an array; a test needs "
		                    "an object {\"errors\": N, \"requests\": M}");
	}

	/* values: finite, >= 0, errors <= requests once rounded (increase() extrapolates) */
	assert_int_equal(source_counts_valid(2.4, 9.6, &ue, &un, err, sizeof(err)), 0);
	assert_true(ue == 2 && un == 10);
	assert_int_equal(source_counts_valid(10.4, 10.2, &ue, &un, err, sizeof(err)), 0);
	assert_true(ue == 10 && un == 10);
	assert_int_equal(source_counts_valid(11, 10, NULL, NULL, err, sizeof(err)), -1);
	assert_string_equal(err, "more errors than requests (errors 11, requests 10)");
	assert_int_equal(source_counts_valid(-1, 10, NULL, NULL, err, sizeof(err)), -1);
	assert_string_equal(err, "a count is negative (errors -1, requests 10)");
	assert_int_equal(source_counts_valid(NAN, 10, NULL, NULL, err, sizeof(err)), -1);
	assert_int_equal(source_counts_valid(1, INFINITY, NULL, NULL, err, sizeof(err)), -1);
	assert_int_equal(source_counts_valid(1, 1e17, NULL, NULL, err, sizeof(err)), -1);
}

static const char *count_argv[] = {"probe", "{{cohort}}"};

static struct config_check mk_counts(enum config_source_kind k)
{
	struct config_check c = mk(k);

	c.exec.v = count_argv;
	c.exec.n = 2;
	c.http_pointer = "";
	c.requests_query = "sum(increase(reqs{version=\"{{version}}\"}[{{interval}}]))";
	c.test.method = CONFIG_TEST_SEQUENTIAL;
	c.test.confidence = 0.95;
	c.min_samples = 200;
	return c;
}

static void test_count_readings(void **state)
{
	struct config_check h = mk_counts(CONFIG_SOURCE_HTTP), x = mk_counts(CONFIG_SOURCE_EXEC),
	                    q = mk_counts(CONFIG_SOURCE_QUERY);
	static struct source_request r;
	struct job_result res;
	struct source_reading rd, re, rn;
	char body[] = "{\"errors\": 4, \"requests\": 250}", err[256];
	json_t *o;

	(void)state;
	assert_true(config_check_counts(&x));
	/* the requests query is templated like the query */
	assert_int_equal(source_request_build_requests(&q, "http://p/", &vars, &r, err, 256), 0);
	assert_string_equal(r.text, "sum(increase(reqs{version=\"v2\"}[60s]))");
	assert_string_equal(r.url, "http://p/api/v1/query?query=sum%28increase%28reqs%7Bversion%3D"
	                           "%22v2%22%7D%5B60s%5D%29%29");
	assert_int_equal(source_request_build_requests(&x, "http://p/", &vars, &r, err, 256), -1);

	memset(&res, 0, sizeof(res));
	res.status = JOB_OK;
	res.http_status = 200;
	res.body = body;
	res.body_len = strlen(body);
	source_read_result(&h, &res, &rd);
	assert_true(rd.ok && rd.counts && rd.value == 4 && rd.requests == 250);
	res.body = NULL;
	res.body_len = 0;
	snprintf(res.output, sizeof(res.output), "7 5\n");
	source_read_result(&x, &res, &rd);
	assert_false(rd.ok);
	assert_string_equal(rd.error, "more errors than requests (errors 7, requests 5)");
	snprintf(res.output, sizeof(res.output), "5 7\n");
	source_read_result(&x, &res, &rd);
	assert_true(rd.ok && rd.counts && rd.value == 5 && rd.requests == 7);
	o = source_json(&x, &r, &rd, &r, &rd);
	assert_true(json_real_value(json_object_get(json_object_get(o, "canary"), "errors")) == 5);
	assert_true(json_real_value(json_object_get(json_object_get(o, "canary"), "requests")) ==
	            7);
	assert_true(fabs(json_real_value(json_object_get(json_object_get(o, "canary"), "value")) -
	                 5.0 / 7) < 1e-12);
	json_decref(o);

	/* a query count check: one number per job, merged per cohort */
	memset(&re, 0, sizeof(re));
	memset(&rn, 0, sizeof(rn));
	re.ok = rn.ok = true;
	re.value = 12.4; /* increase() extrapolates */
	rn.value = 1000.2;
	re.duration_ms = 3;
	rn.duration_ms = 9;
	source_reading_counts(&re, &rn, &rd);
	assert_true(rd.ok && rd.counts && rd.value == 12.4 && rd.requests == 1000.2);
	assert_int_equal(rd.duration_ms, 9);
	rn.ok = false;
	snprintf(rn.error, sizeof(rn.error), "the query returned no series");
	source_reading_counts(&re, &rn, &rd);
	assert_false(rd.ok);
	assert_string_equal(rd.error, "the requests query: the query returned no series");
	rn.ok = true;
	rn.value = 5;
	source_reading_counts(&re, &rn, &rd);
	assert_false(rd.ok);
	assert_string_equal(rd.error, "more errors than requests (errors 12.4, requests 5)");
}

static struct source_reading counts(double e, double n)
{
	struct source_reading r = ok(e);

	r.counts = true;
	r.requests = n;
	return r;
}

/* The built-in error_rate check's verdict on the same cumulative counts. */
static void builtin_verdict(const struct config_check *src, const struct source_counts *acc,
                            uint32_t horizon, struct check_verdict *out)
{
	static struct metrics_cohort_snapshot kc, kb;
	struct config_check b = *src;
	struct check_cumulative cum = {&kc, &kb, acc->looks, horizon};

	b.source = CONFIG_SOURCE_METRIC;
	b.metric = CONFIG_METRIC_ERROR_RATE;
	memset(&kc, 0, sizeof(kc));
	memset(&kb, 0, sizeof(kb));
	kc.requests = acc->canary_requests;
	kc.errors = acc->canary_errors;
	kb.requests = acc->baseline_requests;
	kb.errors = acc->baseline_errors;
	check_evaluate_cumulative(&b, &kc, &kb, &cum, 10000, out);
}

static bool same(double x, double y)
{
	return x == y || (isnan(x) && isnan(y));
}

static void assert_same_test(const struct check_verdict *a, const struct check_verdict *b)
{
	assert_int_equal(a->outcome, b->outcome);
	assert_true(a->test.applied == b->test.applied);
	assert_int_equal(a->test.looks, b->test.looks);
	assert_int_equal(a->test.horizon, b->test.horizon);
	assert_true(a->test.group_sequential == b->test.group_sequential);
	assert_true(a->test.canary_requests == b->test.canary_requests);
	assert_true(a->test.baseline_errors == b->test.baseline_errors);
	assert_true(same(a->test.alpha_spent, b->test.alpha_spent));
	assert_true(same(a->test.z, b->test.z));
	assert_true(same(a->test.z_bound, b->test.z_bound));
	assert_true(same(a->test.lower, b->test.lower) && same(a->test.upper, b->test.upper));
	assert_true(same(a->test.log_e, b->test.log_e));
	assert_true(same(a->test.more_per_cohort, b->test.more_per_cohort));
}

static void test_count_accumulation_and_test(void **state)
{
	struct config_check c = mk_counts(CONFIG_SOURCE_EXEC);
	struct source_counts acc = {0};
	struct source_reading a, b, bad;
	struct check_verdict v, w, failed;
	json_t *j;
	uint32_t k;

	(void)state;
	/* a canary with 4x the baseline's errors (4% vs 1%) fails on the accumulated counts,
	 * with the verdict numbers the built-in error_rate gives on the same counts */
	for (k = 1; k <= 10; k++) {
		a = counts(6, 150);
		b = counts(1.5, 150); /* fractional, as from increase(): rounded to 2 */
		source_evaluate_counts(&c, &a, &b, &acc, true, 10, 10000, &v);
		assert_int_equal(acc.looks, k);
		assert_true(acc.canary_requests == 150 * k && acc.canary_errors == 6 * k);
		assert_true(acc.baseline_requests == 150 * k && acc.baseline_errors == 2 * k);
		builtin_verdict(&c, &acc, 10, &w);
		assert_same_test(&v, &w);
		assert_string_equal(v.metric, "exec");
		assert_true(v.canary_requests == 150 && v.canary == 0.04); /* the round's own */
		if (v.outcome != CHECK_INCONCLUSIVE)
			break;
		if (k == 1)
			assert_non_null(strstr(v.reason, "too few requests for the sequential test "
			                                 "on exec error rate: 150 on the canary"));
	}
	assert_int_equal(v.outcome, CHECK_FAIL);
	failed = v;
	assert_true(k > 1 && k <= 10);
	assert_true(v.test.applied && v.test.counting && v.test.group_sequential);
	assert_int_equal(v.test.horizon, 10);
	assert_non_null(strstr(v.reason, "exec error rate"));
	j = check_verdict_json(&v);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(j, "test"), "design")),
	    "group-sequential");
	assert_int_equal(json_integer_value(json_object_get(
	                     json_object_get(json_object_get(j, "test"), "canary"), "requests")),
	                 150 * k);
	json_decref(j);

	/* a round that failed adds nothing */
	{
		struct source_counts before = acc;

		memset(&bad, 0, sizeof(bad));
		snprintf(bad.error, sizeof(bad.error), "the command failed: exited with status 1");
		assert_int_equal(source_evaluate_counts(&c, &bad, &b, &acc, true, 10, 10000, &v),
		                 CHECK_ERROR);
		assert_string_equal(v.reason, "the exec source failed for the canary: the command "
		                              "failed: exited with status 1");
		assert_int_equal(source_evaluate_counts(&c, &a, &bad, &acc, true, 10, 10000, &v),
		                 CHECK_ERROR);
		a = ok(3); /* a plain number is no count */
		assert_int_equal(source_evaluate_counts(&c, &a, &b, &acc, true, 10, 10000, &v),
		                 CHECK_ERROR);
		assert_int_equal(source_evaluate_counts(&c, &b, NULL, &acc, true, 10, 10000, &v),
		                 CHECK_ERROR);
		assert_memory_equal(&before, &acc, sizeof(acc));

		/* a round outside the counts' step adds nothing: the test repeats its last
		 * look (no new look, no new error spent) */
		a = counts(0, 150);
		b = counts(0, 150);
		assert_int_equal(source_evaluate_counts(&c, &a, &b, &acc, false, 10, 10000, &v),
		                 CHECK_FAIL);
		assert_memory_equal(&before, &acc, sizeof(acc));
		assert_same_test(&v, &failed);
		assert_true(v.canary == 0 && v.canary_requests == 150); /* the round's own */
		memset(&acc, 0, sizeof(acc));
		assert_int_equal(source_evaluate_counts(&c, &a, &b, &acc, false, 10, 10000, &v),
		                 CHECK_INCONCLUSIVE);
		assert_int_equal(acc.looks, 0);
		assert_non_null(strstr(v.reason, ": 0 on the canary and 0 on the baseline"));
	}

	/* a healthy canary within max_increase passes, never fails */
	memset(&acc, 0, sizeof(acc));
	c.max_increase.set = true;
	c.max_increase.value = 0.02;
	for (k = 1; k <= 10; k++) {
		a = counts(3, 300);
		b = counts(3, 300);
		source_evaluate_counts(&c, &a, &b, &acc, true, 10, 10000, &v);
		builtin_verdict(&c, &acc, 10, &w);
		assert_same_test(&v, &w);
		assert_int_not_equal(v.outcome, CHECK_FAIL);
		if (v.outcome == CHECK_PASS)
			break;
	}
	assert_int_equal(v.outcome, CHECK_PASS);
	assert_false(v.test.counting); /* margin > 0: the mixture */
	/* `max` is the absolute bound, tested on the canary's own counts */
	memset(&acc, 0, sizeof(acc));
	c.max.set = true;
	c.max.value = 0.02;
	for (k = 1; k <= 10; k++) {
		a = counts(30, 300);
		b = counts(30, 300); /* the baseline is as bad */
		source_evaluate_counts(&c, &a, &b, &acc, true, 10, 10000, &v);
		if (v.outcome != CHECK_INCONCLUSIVE)
			break;
	}
	assert_int_equal(v.outcome, CHECK_FAIL);
	assert_int_equal(v.bound, CHECK_BOUND_MAX);
	assert_true(v.test.abs_bound == 0.02);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_prometheus_vector_and_scalar),
	    cmocka_unit_test(test_prometheus_errors),
	    cmocka_unit_test(test_json_pointer),
	    cmocka_unit_test(test_exec_output),
	    cmocka_unit_test(test_urlencode_and_duration),
	    cmocka_unit_test(test_request_build),
	    cmocka_unit_test(test_per_cohort),
	    cmocka_unit_test(test_read_result),
	    cmocka_unit_test(test_evaluate_bounds),
	    cmocka_unit_test(test_json),
	    cmocka_unit_test(test_count_shapes),
	    cmocka_unit_test(test_count_readings),
	    cmocka_unit_test(test_count_accumulation_and_test),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
