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
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
