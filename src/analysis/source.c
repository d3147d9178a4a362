/*
 * source.c - query, http and exec metric sources (see source.h and
 * docs/judge.md "Sources").
 */
#include "analysis/source.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/jobs.h"
#include "core/str.h"

static void say(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!err || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

static const char *kind_name(enum config_source_kind k)
{
	switch (k) {
	case CONFIG_SOURCE_QUERY:
		return "query";
	case CONFIG_SOURCE_HTTP:
		return "http";
	case CONFIG_SOURCE_EXEC:
		return "exec";
	default:
		return "metric";
	}
}

static bool mentions_cohort(const char *s)
{
	return s &&
	       (strstr(s, "{{cohort}}") || strstr(s, "{{version}}") || strstr(s, "{{variant}}"));
}

bool source_per_cohort(const struct config_check *c)
{
	switch (c->source) {
	case CONFIG_SOURCE_QUERY:
		return true;
	case CONFIG_SOURCE_HTTP:
		return mentions_cohort(c->http_url);
	case CONFIG_SOURCE_EXEC:
		for (size_t i = 0; i < c->exec.n; i++)
			if (mentions_cohort(c->exec.v[i]))
				return true;
		return false;
	default:
		return false;
	}
}

int source_urlencode(const char *in, char *out, size_t outlen)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	if (!outlen)
		return -ENOSPC;
	for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
		bool plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		             (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' ||
		             *p == '~';
		size_t need = plain ? 1 : 3;

		if (o + need >= outlen) {
			out[o] = '\0';
			return -ENOSPC;
		}
		if (plain) {
			out[o++] = (char)*p;
		} else {
			out[o++] = '%';
			out[o++] = hex[*p >> 4];
			out[o++] = hex[*p & 15];
		}
	}
	out[o] = '\0';
	return 0;
}

void source_duration(uint64_t ms, char *out, size_t outlen)
{
	if (ms % 1000 == 0)
		snprintf(out, outlen, "%llus", (unsigned long long)(ms / 1000));
	else
		snprintf(out, outlen, "%llums", (unsigned long long)ms);
}

/* The template's name/value pairs (NULL-ended) from v. */
static void template_vars(const struct source_vars *v, const char *interval, const char *vars[14])
{
	const char *pairs[] = {"cohort",   v->cohort ? v->cohort : "",
	                       "version",  v->version ? v->version : "",
	                       "variant",  v->variant ? v->variant : "",
	                       "service",  v->service ? v->service : "",
	                       "target",   v->target ? v->target : "",
	                       "interval", interval,
	                       NULL,       NULL};

	memcpy(vars, pairs, sizeof(pairs));
}

/* PromQL q templated with vars into out->text, and the instant-query URL into out->url. */
static int build_query(const char *q, const char *prometheus, const char *const *vars,
                       struct source_request *out, char *err, size_t errlen)
{
	char enc[SOURCE_TEXT_MAX * 3];
	size_t bl;

	if (!prometheus || !*prometheus) {
		say(err, errlen, "query checks need metrics.prometheus");
		return -1;
	}
	if (str_template(q, vars, out->text, sizeof(out->text))) {
		say(err, errlen, "the expanded query is longer than %d bytes", SOURCE_TEXT_MAX - 1);
		return -1;
	}
	source_urlencode(out->text, enc, sizeof(enc)); /* cannot overflow: 3x */
	bl = strlen(prometheus);
	while (bl > 0 && prometheus[bl - 1] == '/')
		bl--;
	if ((size_t)snprintf(out->url, sizeof(out->url), "%.*s/api/v1/query?query=%s", (int)bl,
	                     prometheus, enc) >= sizeof(out->url)) {
		say(err, errlen, "the query URL is longer than %zu bytes", sizeof(out->url) - 1);
		return -1;
	}
	return 0;
}

int source_request_build_requests(const struct config_check *c, const char *prometheus,
                                  const struct source_vars *v, struct source_request *out,
                                  char *err, size_t errlen)
{
	char interval[32];
	const char *vars[14];

	memset(out, 0, sizeof(*out));
	out->kind = c->source;
	out->timeout_ms = c->timeout_ms;
	source_duration(v->interval_ms, interval, sizeof(interval));
	template_vars(v, interval, vars);
	if (c->source != CONFIG_SOURCE_QUERY || !c->requests_query) {
		say(err, errlen, "check %s has no requests query", c->name);
		return -1;
	}
	return build_query(c->requests_query, prometheus, vars, out, err, errlen);
}

int source_request_build(const struct config_check *c, const char *prometheus,
                         const struct source_vars *v, struct source_request *out, char *err,
                         size_t errlen)
{
	char interval[32];
	const char *vars[14];
	size_t used = 0, tl = 0;

	memset(out, 0, sizeof(*out));
	out->kind = c->source;
	out->timeout_ms = c->timeout_ms;
	source_duration(v->interval_ms, interval, sizeof(interval));
	template_vars(v, interval, vars);
	switch (c->source) {
	case CONFIG_SOURCE_QUERY:
		return build_query(c->query, prometheus, vars, out, err, errlen);
	case CONFIG_SOURCE_HTTP:
		if (str_template(c->http_url, vars, out->url, SOURCE_TEXT_MAX)) {
			say(err, errlen, "the expanded URL is longer than %d bytes",
			    SOURCE_TEXT_MAX - 1);
			return -1;
		}
		/* the text shows in verdicts: never with the URL's password */
		config_url_redact(out->url, out->text, sizeof(out->text));
		return 0;
	case CONFIG_SOURCE_EXEC:
		if (c->exec.n > SOURCE_ARGV_MAX) {
			say(err, errlen, "the command has more than %d arguments", SOURCE_ARGV_MAX);
			return -1;
		}
		for (size_t i = 0; i < c->exec.n; i++) {
			char *arg = out->pool + used;
			size_t n;

			if (used >= sizeof(out->pool) ||
			    str_template(c->exec.v[i], vars, arg, sizeof(out->pool) - used)) {
				say(err, errlen, "the expanded command is longer than %d bytes",
				    SOURCE_TEXT_MAX - 1);
				return -1;
			}
			n = strlen(arg);
			out->argv[i] = arg;
			used += n + 1;
			/* the shown command line: arguments joined by spaces (cut if long) */
			if (tl + n + 2 < sizeof(out->text)) {
				if (i)
					out->text[tl++] = ' ';
				memcpy(out->text + tl, arg, n + 1);
				tl += n;
			}
		}
		out->argv[c->exec.n] = NULL;
		return 0;
	default:
		say(err, errlen, "check %s has no query, http or exec source", c->name);
		return -1;
	}
}

/* ------------------------------------------------------------------------ */
/* Parsing results                                                            */

int source_parse_number(const char *text, double *out, char *err, size_t errlen)
{
	const char *p = text ? text : "", *e;

	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	e = p + strlen(p);
	while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		e--;
	if (e == p) {
		say(err, errlen, "the command printed nothing on stdout; it must print one number");
		return -1;
	}
	if (str_to_double(str_make(p, (size_t)(e - p)), out)) {
		say(err, errlen, "the command printed \"%.*s\"; it must print one finite number",
		    (int)(e - p > 60 ? 60 : e - p), p);
		return -1;
	}
	return 0;
}

/* A Prometheus sample value: a JSON string like "0.25", "NaN", "+Inf". */
static int sample_value(const json_t *pair, double *out, char *err, size_t errlen)
{
	const char *s = json_string_value(json_array_get(pair, 1));

	if (!json_is_array(pair) || json_array_size(pair) != 2 || !s) {
		say(err, errlen, "Prometheus answered a sample that is not [time, \"value\"]");
		return -1;
	}
	if (strcmp(s, "NaN") == 0) {
		say(err, errlen, "the query's value is NaN (e.g. a division by zero: no traffic)");
		return -1;
	}
	if (str_to_double(str_c(s), out)) {
		say(err, errlen, "the query's value \"%.40s\" is not a finite number", s);
		return -1;
	}
	return 0;
}

int source_parse_prometheus(const char *body, size_t len, double *out, char *err, size_t errlen)
{
	json_error_t je;
	json_t *doc = json_loadb(body ? body : "", len, 0, &je), *data, *result;
	const char *status, *type;
	int rc = -1;

	if (!doc) {
		say(err, errlen, "Prometheus answered something that is not JSON (line %d: %s)",
		    je.line, je.text);
		return -1;
	}
	status = json_string_value(json_object_get(doc, "status"));
	if (!status || strcmp(status, "success") != 0) {
		const char *et = json_string_value(json_object_get(doc, "errorType"));
		const char *msg = json_string_value(json_object_get(doc, "error"));

		say(err, errlen, "Prometheus answered status %s: %s%s%.160s",
		    status ? status : "(none)", et ? et : "", et ? ": " : "",
		    msg ? msg : "no error message");
		goto out;
	}
	data = json_object_get(doc, "data");
	type = json_string_value(json_object_get(data, "resultType"));
	result = json_object_get(data, "result");
	if (!type || !result) {
		say(err, errlen, "Prometheus answered without data.resultType and data.result");
		goto out;
	}
	if (strcmp(type, "scalar") == 0) {
		rc = sample_value(result, out, err, errlen);
	} else if (strcmp(type, "vector") == 0) {
		size_t n = json_array_size(result);

		if (n == 0)
			say(err, errlen,
			    "the query returned no series (an empty vector: no data for this "
			    "cohort yet, or a label that matches nothing)");
		else if (n > 1)
			say(err, errlen,
			    "the query returned %zu series; it must return one (aggregate it, e.g. "
			    "with sum() or avg())",
			    n);
		else
			rc = sample_value(json_object_get(json_array_get(result, 0), "value"), out,
			                  err, errlen);
	} else {
		say(err, errlen,
		    "the query returned a %.20s; it must return an instant vector of one series "
		    "or a scalar",
		    type);
	}
out:
	json_decref(doc);
	return rc;
}

/* Decodes one reference token (~0, ~1) of len bytes into tok. */
static int pointer_token(const char *p, size_t len, char *tok, size_t toklen)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		char ch = p[i];

		if (ch == '~') {
			if (i + 1 >= len || (p[i + 1] != '0' && p[i + 1] != '1'))
				return -1;
			ch = p[++i] == '0' ? '~' : '/';
		}
		if (o + 1 >= toklen)
			return -1;
		tok[o++] = ch;
	}
	tok[o] = '\0';
	return 0;
}

/* The value at pointer ptr in doc (borrowed), or NULL with a sentence in err. */
static json_t *pointer_resolve(json_t *doc, const char *ptr, char *err, size_t errlen)
{
	const char *p = ptr ? ptr : "";
	json_t *cur = doc;
	char tok[256];

	if (*p && *p != '/') {
		say(err, errlen, "the JSON pointer \"%.60s\" does not start with \"/\"", p);
		return NULL;
	}
	while (*p == '/') {
		const char *start = ++p, *end = strchr(start, '/');
		size_t tl = end ? (size_t)(end - start) : strlen(start);

		p = start + tl;
		if (pointer_token(start, tl, tok, sizeof(tok))) {
			say(err, errlen, "the JSON pointer has a bad token \"%.*s\"",
			    (int)(tl > 60 ? 60 : tl), start);
			return NULL;
		}
		if (json_is_object(cur)) {
			cur = json_object_get(cur, tok);
		} else if (json_is_array(cur)) {
			unsigned long long i;

			if (str_to_u64(str_c(tok), &i) || (tok[0] == '0' && tok[1]) ||
			    i >= json_array_size(cur))
				cur = NULL;
			else
				cur = json_array_get(cur, (size_t)i);
		} else {
			cur = NULL;
		}
		if (!cur) {
			say(err, errlen, "nothing in the body at \"%.*s\" (JSON pointer %.60s)",
			    (int)(p - ptr > 80 ? 80 : p - ptr), ptr, ptr);
			return NULL;
		}
	}
	return cur;
}

static const char *json_type_name(const json_t *j)
{
	static const char *const names[] = {"an object", "an array", "a string", "a number",
	                                    "a number",  "true",     "false",    "null"};

	return j ? names[json_typeof(j)] : "missing";
}

static json_t *load_body(const char *body, size_t len, char *err, size_t errlen)
{
	json_error_t je;
	json_t *doc = json_loadb(body ? body : "", len, JSON_DECODE_ANY, &je);

	if (!doc)
		say(err, errlen, "the body is not JSON (line %d column %d: %s)", je.line, je.column,
		    je.text);
	return doc;
}

int source_parse_json_pointer(const char *body, size_t len, const char *ptr, double *out, char *err,
                              size_t errlen)
{
	json_t *doc = load_body(body, len, err, errlen), *cur;
	int rc = -1;

	if (!doc)
		return -1;
	cur = pointer_resolve(doc, ptr, err, errlen);
	if (!cur)
		goto out;
	if (!json_is_number(cur)) {
		say(err, errlen, "the value at JSON pointer \"%.60s\" is %s, not a number",
		    ptr ? ptr : "", json_type_name(cur));
		goto out;
	}
	*out = json_number_value(cur);
	rc = 0;
out:
	json_decref(doc);
	return rc;
}

int source_parse_counts_json(const char *body, size_t len, const char *ptr, double *errors,
                             double *requests, char *err, size_t errlen)
{
	json_t *doc = load_body(body, len, err, errlen), *cur, *e, *n;
	int rc = -1;

	if (!doc)
		return -1;
	cur = pointer_resolve(doc, ptr, err, errlen);
	if (!cur)
		goto out;
	if (!json_is_object(cur)) {
		say(err, errlen,
		    "the value at JSON pointer \"%.60s\" is %s; a test needs an object "
		    "{\"errors\": N, \"requests\": M}",
		    ptr ? ptr : "", json_type_name(cur));
		goto out;
	}
	e = json_object_get(cur, "errors");
	n = json_object_get(cur, "requests");
	if (!json_is_number(e) || !json_is_number(n)) {
		bool bad_e = !json_is_number(e);

		say(err, errlen,
		    "\"%s\" at JSON pointer \"%.60s\" is %s, not a number (a test needs "
		    "{\"errors\": N, \"requests\": M})",
		    bad_e ? "errors" : "requests", ptr ? ptr : "", json_type_name(bad_e ? e : n));
		goto out;
	}
	*errors = json_number_value(e);
	*requests = json_number_value(n);
	rc = 0;
out:
	json_decref(doc);
	return rc;
}

int source_parse_counts(const char *text, double *errors, double *requests, char *err,
                        size_t errlen)
{
	const char *p = text ? text : "", *e, *mid;
	size_t n;

	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	e = p + strlen(p);
	while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		e--;
	n = (size_t)(e - p);
	mid = p;
	while (mid < e && *mid != ' ' && *mid != '\t')
		mid++;
	if (n == 0 || mid == e || str_to_double(str_make(p, (size_t)(mid - p)), errors)) {
		say(err, errlen,
		    "the command printed \"%.*s\"; a test needs two numbers, errors then requests "
		    "(\"3 1200\")",
		    (int)(n > 60 ? 60 : n), p);
		return -1;
	}
	while (mid < e && (*mid == ' ' || *mid == '\t'))
		mid++;
	if (str_to_double(str_make(mid, (size_t)(e - mid)), requests)) {
		say(err, errlen,
		    "the command printed \"%.*s\"; a test needs two numbers, errors then requests "
		    "(\"3 1200\")",
		    (int)(n > 60 ? 60 : n), p);
		return -1;
	}
	return 0;
}

/* Counts above this are not exact in a double (2^53). */
#define COUNT_MAX 9007199254740992.0

int source_counts_valid(double errors, double requests, uint64_t *e, uint64_t *n, char *err,
                        size_t errlen)
{
	double re, rn;

	if (!isfinite(errors) || !isfinite(requests)) {
		say(err, errlen, "the counts are not finite numbers (errors %g, requests %g)",
		    errors, requests);
		return -1;
	}
	if (errors < 0 || requests < 0) {
		say(err, errlen, "a count is negative (errors %.6g, requests %.6g)", errors,
		    requests);
		return -1;
	}
	if (errors > COUNT_MAX || requests > COUNT_MAX) {
		say(err, errlen, "a count is above 2^53 (errors %.6g, requests %.6g)", errors,
		    requests);
		return -1;
	}
	re = round(errors);
	rn = round(requests);
	if (re > rn) {
		say(err, errlen, "more errors than requests (errors %.6g, requests %.6g)", errors,
		    requests);
		return -1;
	}
	if (e)
		*e = (uint64_t)re;
	if (n)
		*n = (uint64_t)rn;
	return 0;
}

void source_reading_counts(const struct source_reading *errors,
                           const struct source_reading *requests, struct source_reading *out)
{
	struct source_reading r;
	char why[SOURCE_ERROR_MAX];

	memset(&r, 0, sizeof(r));
	r.value = r.requests = NAN;
	r.duration_ms = errors->duration_ms > requests->duration_ms ? errors->duration_ms
	                                                            : requests->duration_ms;
	if (!errors->ok) {
		say(r.error, sizeof(r.error), "the errors query: %s", errors->error);
	} else if (!requests->ok) {
		say(r.error, sizeof(r.error), "the requests query: %s", requests->error);
	} else if (source_counts_valid(errors->value, requests->value, NULL, NULL, why,
	                               sizeof(why))) {
		memcpy(r.error, why, sizeof(r.error));
	} else {
		r.ok = r.counts = true;
		r.value = errors->value;
		r.requests = requests->value;
	}
	*out = r;
}

void source_read_result(const struct config_check *c, const struct job_result *res,
                        struct source_reading *out)
{
	const char *body = res->body ? res->body : res->output;
	size_t blen = res->body ? res->body_len : strlen(res->output);
	char why[SOURCE_ERROR_MAX];
	double v = NAN;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	out->duration_ms = res->duration_ms;
	out->value = out->requests = NAN;
	switch (res->status) {
	case JOB_OK:
		break;
	case JOB_FAILED:
		/* Prometheus explains a 4xx/5xx in its JSON body: use that */
		if (c->source == CONFIG_SOURCE_QUERY && res->http_status &&
		    source_parse_prometheus(body, blen, &v, why, sizeof(why)) &&
		    strncmp(why, "Prometheus answered status ", 27) == 0) {
			say(out->error, sizeof(out->error), "HTTP %d: %s", res->http_status, why);
			return;
		}
		/* fall through */
	default:
		say(out->error, sizeof(out->error), "%s %s: %s",
		    c->source == CONFIG_SOURCE_EXEC ? "the command" : "the GET",
		    job_status_name(res->status), res->error[0] ? res->error : "no detail");
		return;
	}
	if (config_check_counts(c) && c->source != CONFIG_SOURCE_QUERY) {
		/* http / exec count checks: both counts in one answer */
		double n = NAN;

		rc = c->source == CONFIG_SOURCE_HTTP
		         ? source_parse_counts_json(body, blen, c->http_pointer, &v, &n, why,
		                                    sizeof(why))
		         : source_parse_counts(res->output, &v, &n, why, sizeof(why));
		if (!rc)
			rc = source_counts_valid(v, n, NULL, NULL, why, sizeof(why));
		if (rc) {
			memcpy(out->error, why, sizeof(out->error));
			return;
		}
		out->ok = out->counts = true;
		out->value = v;
		out->requests = n;
		return;
	}
	switch (c->source) {
	case CONFIG_SOURCE_QUERY:
		rc = source_parse_prometheus(body, blen, &v, why, sizeof(why));
		break;
	case CONFIG_SOURCE_HTTP:
		rc = source_parse_json_pointer(body, blen, c->http_pointer, &v, why, sizeof(why));
		break;
	case CONFIG_SOURCE_EXEC:
		rc = source_parse_number(res->output, &v, why, sizeof(why));
		break;
	default:
		say(why, sizeof(why), "not a query, http or exec check");
		break;
	}
	if (rc) {
		memcpy(out->error, why, sizeof(out->error));
		return;
	}
	if (!isfinite(v)) {
		say(out->error, sizeof(out->error), "the value is not a finite number");
		return;
	}
	out->ok = true;
	out->value = v;
}

/* ------------------------------------------------------------------------ */
/* Judging                                                                    */

enum check_outcome source_evaluate(const struct config_check *c,
                                   const struct source_reading *canary,
                                   const struct source_reading *baseline, uint64_t interval_ms,
                                   struct check_verdict *out)
{
	struct check_verdict *v = out;
	const char *m = kind_name(c->source);
	char base[48];

	memset(v, 0, sizeof(*v));
	v->check = c->name;
	v->metric = m;
	v->interval_ms = interval_ms;
	v->canary = canary && canary->ok ? canary->value : NAN;
	v->baseline = baseline && baseline->ok ? baseline->value : NAN;
	v->bound_value = v->observed = NAN;
	v->test.p_value = v->test.p_within = v->test.lower = v->test.upper = NAN;
	v->outcome = CHECK_ERROR;

	if (!canary || !canary->ok) {
		snprintf(v->reason, sizeof(v->reason), "the %s source failed for the canary: %s", m,
		         canary ? canary->error : "it did not run");
		return v->outcome;
	}
	if (check_has_relative_bounds(c) && !baseline) {
		snprintf(v->reason, sizeof(v->reason),
		         "check %s has a bound relative to the baseline, but its %s source runs "
		         "once: mention {{cohort}}, {{version}} or {{variant}} in it",
		         c->name, m);
		return v->outcome;
	}
	if (check_has_relative_bounds(c) && !baseline->ok) {
		snprintf(v->reason, sizeof(v->reason), "the %s source failed for the baseline: %s",
		         m, baseline->error);
		return v->outcome;
	}
	if (!check_bounds_violated(c, v)) {
		v->outcome = CHECK_PASS;
		if (isnan(v->baseline))
			snprintf(v->reason, sizeof(v->reason),
			         "%s value %.6g on the canary is within bounds", m, v->canary);
		else
			snprintf(v->reason, sizeof(v->reason),
			         "%s value %.6g on the canary is within bounds (baseline %.6g)", m,
			         v->canary, v->baseline);
		return v->outcome;
	}
	v->outcome = CHECK_FAIL;
	switch (v->bound) {
	case CHECK_BOUND_MIN:
	case CHECK_BOUND_MAX:
		if (isnan(v->baseline))
			base[0] = '\0';
		else
			snprintf(base, sizeof(base), " (baseline %.6g)", v->baseline);
		snprintf(v->reason, sizeof(v->reason),
		         "%s value %.6g on the canary is %s %s %.6g%s", m, v->canary,
		         v->bound == CHECK_BOUND_MIN ? "below" : "above",
		         check_bound_name(v->bound), v->bound_value, base);
		break;
	case CHECK_BOUND_MIN_RATIO:
	case CHECK_BOUND_MAX_RATIO:
		snprintf(v->reason, sizeof(v->reason),
		         "%s canary/baseline ratio %.4g is %s %s %.4g (canary %.6g, baseline %.6g)",
		         m, v->observed, v->bound == CHECK_BOUND_MIN_RATIO ? "below" : "above",
		         check_bound_name(v->bound), v->bound_value, v->canary, v->baseline);
		break;
	default:
		snprintf(v->reason, sizeof(v->reason),
		         "%s %s of %.6g from the baseline is above %s %.6g (canary %.6g, baseline "
		         "%.6g)",
		         m, v->bound == CHECK_BOUND_MAX_INCREASE ? "increase" : "decrease",
		         v->bound == CHECK_BOUND_MAX_INCREASE ? v->observed : -v->observed,
		         check_bound_name(v->bound), v->bound_value, v->canary, v->baseline);
		break;
	}
	return v->outcome;
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

enum check_outcome source_evaluate_counts(const struct config_check *c,
                                          const struct source_reading *canary,
                                          const struct source_reading *baseline,
                                          struct source_counts *acc, bool add, uint32_t horizon,
                                          uint64_t interval_ms, struct check_verdict *out)
{
	/* the round's and the step's counts as cohorts (requests and errors only) */
	struct metrics_cohort_snapshot ic, ib, kc, kb;
	struct check_cumulative cum = {&kc, &kb, 0, horizon};
	const char *m = kind_name(c->source);
	uint64_t ec, nc, eb, nb;
	char why[SOURCE_ERROR_MAX];

	memset(out, 0, sizeof(*out));
	out->check = c->name;
	out->metric = m;
	out->interval_ms = interval_ms;
	out->min_samples = c->min_samples;
	out->canary = out->baseline = out->bound_value = out->observed = NAN;
	out->test.p_value = out->test.p_within = out->test.lower = out->test.upper = NAN;
	out->outcome = CHECK_ERROR;
	if (!canary || !canary->ok || !canary->counts) {
		snprintf(out->reason, sizeof(out->reason),
		         "the %s source failed for the canary: %s", m,
		         !canary      ? "it did not run"
		         : canary->ok ? "it gave no counts"
		                      : canary->error);
		return out->outcome;
	}
	if (!baseline) {
		snprintf(out->reason, sizeof(out->reason),
		         "check %s has a test, but its %s source runs once: mention {{cohort}}, "
		         "{{version}} or {{variant}} in it",
		         c->name, m);
		return out->outcome;
	}
	if (!baseline->ok || !baseline->counts) {
		snprintf(out->reason, sizeof(out->reason),
		         "the %s source failed for the baseline: %s", m,
		         baseline->ok ? "it gave no counts" : baseline->error);
		return out->outcome;
	}
	if (source_counts_valid(canary->value, canary->requests, &ec, &nc, why, sizeof(why)) ||
	    source_counts_valid(baseline->value, baseline->requests, &eb, &nb, why, sizeof(why))) {
		snprintf(out->reason, sizeof(out->reason), "the %s source's counts are invalid: %s",
		         m, why);
		return out->outcome;
	}
	memset(&ic, 0, sizeof(ic));
	memset(&ib, 0, sizeof(ib));
	ic.requests = nc;
	ic.errors = ec;
	ib.requests = nb;
	ib.errors = eb;
	if (add) {
		acc->canary_errors = add_sat(acc->canary_errors, ec);
		acc->canary_requests = add_sat(acc->canary_requests, nc);
		acc->baseline_errors = add_sat(acc->baseline_errors, eb);
		acc->baseline_requests = add_sat(acc->baseline_requests, nb);
		if (acc->looks < UINT32_MAX)
			acc->looks++;
	}
	memset(&kc, 0, sizeof(kc));
	memset(&kb, 0, sizeof(kb));
	kc.requests = acc->canary_requests;
	kc.errors = acc->canary_errors;
	kb.requests = acc->baseline_requests;
	kb.errors = acc->baseline_errors;
	cum.looks = acc->looks;
	return check_evaluate_cumulative(c, &ic, &ib, &cum, interval_ms, out);
}

static json_t *reading_json(const struct source_request *req, const struct source_reading *r)
{
	json_t *o;

	if (!r->counts)
		return json_pack("{s:s, s:o, s:I, s:o}", "request", req ? req->text : "", "value",
		                 r->ok ? json_real(r->value) : json_null(), "duration_ms",
		                 (json_int_t)r->duration_ms, "error",
		                 r->ok ? json_null() : json_string(r->error));
	/* a count reading: the counts as the source gave them, value their ratio */
	o = json_pack("{s:s, s:o, s:o, s:o, s:I, s:n}", "request", req ? req->text : "", "value",
	              r->requests > 0 ? json_real(r->value / r->requests) : json_null(), "errors",
	              json_real(r->value), "requests", json_real(r->requests), "duration_ms",
	              (json_int_t)r->duration_ms, "error");
	return o;
}

json_t *source_json(const struct config_check *c, const struct source_request *canary_req,
                    const struct source_reading *canary, const struct source_request *baseline_req,
                    const struct source_reading *baseline)
{
	return json_pack("{s:s, s:b, s:o, s:o}", "kind", kind_name(c->source), "per_cohort",
	                 baseline != NULL, "canary", reading_json(canary_req, canary), "baseline",
	                 baseline ? reading_json(baseline_req, baseline) : json_null());
}
