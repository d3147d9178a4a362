/*
 * source.h - metric sources beyond the proxy (SPEC 5, docs/judge.md
 * "Sources"): `query:` (a Prometheus instant query), `http:` (GET, a number
 * at a JSON pointer) and `exec:` (a command that prints a number).
 *
 * This module is pure: it turns a check and one cohort's template
 * variables into a request (struct source_request) that the caller hands to
 * a job runner (core/jobs.h: a GET for query/http, a command for exec), then
 * turns the job's result into a number or a one-sentence error, and finally
 * judges the two cohorts' numbers against the check's bounds into a verdict
 * shaped like the built-in metrics' (analysis/check.h).
 *
 * Templating ({{name}} replaced, an unknown name kept as written):
 *   {{cohort}}   "canary" or "baseline"
 *   {{version}}  service targets: the cohort's version; flag targets: its variant
 *   {{variant}}  flag targets: the cohort's variant; service targets: the version
 *   {{service}}  service targets: the service; flag targets: the flag's name
 *   {{target}}   the target's name in the rollout
 *   {{interval}} the analysis interval as a Prometheus duration ("60s", "1500ms")
 * A query is templated, then URL-encoded into
 * {prometheus}/api/v1/query?query=...; an http URL is templated as is; every
 * exec argument is templated.
 *
 * Count checks (config_check_counts(): a source with a `test:`, issue 18)
 * give two numbers per cohort per interval, its errors and its requests:
 *   query:  `query` gives the errors and the check's `requests:` query the
 *           requests (two jobs per cohort, source_request_build_requests());
 *   http:   the JSON at `pointer` is {"errors": E, "requests": N};
 *   exec:   stdout is "E N" (two numbers, whitespace between).
 * Finite, >= 0, rounded to the nearest integer (increase() extrapolates),
 * errors <= requests after rounding; anything else is an error reading.
 * source_evaluate_counts() adds a round's counts to the step's
 * (struct source_counts) and judges them with the check's test, as the
 * built-in error_rate (analysis/check.h).
 *
 * Any thread; no allocation except the JSON that source_json() returns.
 */
#ifndef ANALYSIS_SOURCE_H
#define ANALYSIS_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "analysis/check.h"
#include "config/config.h"

struct job_result;

#define SOURCE_TEXT_MAX  2048 /* an expanded query, URL or command line */
#define SOURCE_URL_MAX   (SOURCE_TEXT_MAX * 3 + 512)
#define SOURCE_ARGV_MAX  64
#define SOURCE_ERROR_MAX 256

/* One cohort's values for the templates (NULL members expand to ""). */
struct source_vars {
	const char *cohort;
	const char *version;
	const char *variant;
	const char *service;
	const char *target;
	uint64_t interval_ms;
};

/* What to run for one cohort.  A plain value (about 14 KiB). */
struct source_request {
	enum config_source_kind kind; /* QUERY, HTTP or EXEC */
	uint64_t timeout_ms;
	/* what the verdict shows: the expanded query, the URL, or the command line */
	char text[SOURCE_TEXT_MAX];
	char url[SOURCE_URL_MAX];              /* QUERY, HTTP: the URL to GET */
	const char *argv[SOURCE_ARGV_MAX + 1]; /* EXEC: NULL-terminated, into pool */
	char pool[SOURCE_TEXT_MAX];
};

/* One cohort's outcome. */
struct source_reading {
	bool ok;             /* value is set; else error says why */
	bool counts;         /* a count check's reading: value = errors, requests set */
	double value;        /* finite when ok */
	double requests;     /* counts: the cohort's requests over the interval */
	int64_t duration_ms; /* how long the job ran (0 when it never ran) */
	char error[SOURCE_ERROR_MAX];
};

/*
 * True when c runs once per cohort: always for query checks; for http and
 * exec checks when their URL or an argument mentions {{cohort}},
 * {{version}} or {{variant}}.  Otherwise they run once, for the canary, and
 * only their min/max bounds can be judged.
 */
bool source_per_cohort(const struct config_check *c);

/*
 * Builds c's request for one cohort into *out.  prometheus is the config's
 * metrics.prometheus base URL (query checks only; a trailing '/' is fine).
 * Returns 0, or -1 with a sentence in err (an expansion too long, too many
 * arguments, no Prometheus URL).  c must be a query, http or exec check.
 */
int source_request_build(const struct config_check *c, const char *prometheus,
                         const struct source_vars *v, struct source_request *out, char *err,
                         size_t errlen);

/*
 * A query count check's second request for one cohort: its `requests:`
 * query, templated and encoded like the check's query.  Returns 0, or -1
 * with a sentence in err.  c must be a query check with requests_query.
 */
int source_request_build_requests(const struct config_check *c, const char *prometheus,
                                  const struct source_vars *v, struct source_request *out,
                                  char *err, size_t errlen);

/*
 * Reads the number out of a finished job: for query checks a Prometheus
 * /api/v1/query answer (source_parse_prometheus), for http checks the
 * number at c->http_pointer in the JSON body, for exec checks the
 * command's stdout (source_parse_number).  Count checks: http and exec
 * jobs give both counts (source_parse_counts_json / source_parse_counts,
 * then source_counts_valid()); a query job gives one count (errors or
 * requests), merged by source_reading_counts().  A job that failed, timed out or
 * answered a non-2xx status is an error naming that (a Prometheus error
 * body's message is used when there is one).  Fills *out completely.
 */
void source_read_result(const struct config_check *c, const struct job_result *res,
                        struct source_reading *out);

/*
 * A Prometheus instant-query answer (len bytes of JSON) to one number: the
 * result must be a scalar or a vector of exactly one sample whose value is
 * finite.  Returns 0, or -1 with a sentence in err (status error with its
 * errorType and message, empty vector, several series, NaN, a matrix...).
 */
int source_parse_prometheus(const char *body, size_t len, double *out, char *err, size_t errlen);

/*
 * The number at RFC 6901 pointer ptr ("" = the whole document; ~0 is '~'
 * and ~1 is '/') in the JSON text body.  The value must be a JSON number.
 * Returns 0, or -1 with a sentence in err.
 */
int source_parse_json_pointer(const char *body, size_t len, const char *ptr, double *out, char *err,
                              size_t errlen);

/*
 * A command's output to one number: surrounding whitespace ignored, the
 * rest must be exactly one finite number.  Returns 0, or -1 and err.
 */
int source_parse_number(const char *text, double *out, char *err, size_t errlen);

/*
 * A count check's http answer: the JSON at RFC 6901 pointer ptr must be an
 * object holding two JSON numbers, "errors" and "requests" (a string is
 * not a number).  Returns 0, or -1 with a sentence in err.
 */
int source_parse_counts_json(const char *body, size_t len, const char *ptr, double *errors,
                             double *requests, char *err, size_t errlen);

/*
 * A count check's command output: exactly two finite numbers, errors then
 * requests, separated by whitespace (surrounding whitespace ignored).
 * Returns 0, or -1 and err.
 */
int source_parse_counts(const char *text, double *errors, double *requests, char *err,
                        size_t errlen);

/*
 * Counts as a source gave them: both finite and >= 0 (at most 2^53), and
 * errors <= requests once both are rounded to the nearest integer.  On 0
 * the rounded counts go to *e and *n (either may be NULL); -1 and a
 * sentence in err otherwise.
 */
int source_counts_valid(double errors, double requests, uint64_t *e, uint64_t *n, char *err,
                        size_t errlen);

/*
 * A query count check's reading of one cohort from its two jobs' readings
 * (errors: the check's query; requests: its requests query): ok with
 * counts when both are and source_counts_valid() holds, else the first
 * error naming which query.  duration_ms: the longer of the two.
 */
void source_reading_counts(const struct source_reading *errors,
                           const struct source_reading *requests, struct source_reading *out);

/*
 * Percent-encodes in (RFC 3986: everything but ALPHA, DIGIT and -._~) into
 * out.  Returns 0, or -ENOSPC when out is too small (out is then
 * truncated, NUL-terminated).
 */
int source_urlencode(const char *in, char *out, size_t outlen);

/* ms as a Prometheus duration: "60s" when whole seconds, else "1500ms". */
void source_duration(uint64_t ms, char *out, size_t outlen);

/*
 * Judges one round of c: the canary's reading and the baseline's (NULL when
 * the source runs once, see source_per_cohort()) against c's bounds, in
 * check.h's order (min, max, min_ratio, max_ratio, max_increase,
 * max_decrease).  A reading that failed, or a relative bound without a
 * baseline, is CHECK_ERROR (never a pass or a fail).  Fills *out like
 * check_evaluate() (metric = "query", "http" or "exec"; request counts and
 * min_samples 0; no test) and returns out->outcome.
 */
enum check_outcome source_evaluate(const struct config_check *c,
                                   const struct source_reading *canary,
                                   const struct source_reading *baseline, uint64_t interval_ms,
                                   struct check_verdict *out);

/* A count check's counts of one target since its step began (see below). */
struct source_counts {
	uint64_t canary_errors, canary_requests;
	uint64_t baseline_errors, baseline_requests;
	uint32_t looks; /* rounds added: the test's looks */
};

/*
 * Judges one round of count check c (config_check_counts()) on one target:
 * the two cohorts' readings (baseline NULL only if the source runs once,
 * which the config refuses: an error verdict).  A reading that failed, or
 * is not a count reading, is CHECK_ERROR and adds nothing to *acc.
 * Otherwise, when add, the round's rounded counts are added to *acc
 * (saturating) and acc->looks counts it; then the check's test judges the
 * accumulated counts at look acc->looks with horizon (looks in the step;
 * 0 = open) through check_evaluate_cumulative(), exactly as the built-in
 * error_rate.  Without add (a round that does not belong to the counts'
 * step) *acc is left alone and the test repeats its last look on them (no
 * new look, no new error spent; with nothing yet: too few requests).
 * out->canary/baseline are the round's error rates, *_requests the
 * round's requests, out->test the test's numbers on the accumulated
 * counts.  Returns out->outcome.
 */
enum check_outcome source_evaluate_counts(const struct config_check *c,
                                          const struct source_reading *canary,
                                          const struct source_reading *baseline,
                                          struct source_counts *acc, bool add, uint32_t horizon,
                                          uint64_t interval_ms, struct check_verdict *out);

/*
 * The inputs of one round as a new JSON object (caller owns it):
 * {"kind","per_cohort","canary":{"request","value","duration_ms","error"},
 *  "baseline":{...} or null}.  request is the expanded query, URL or
 * command line.  A count reading also has "errors" and "requests" (as the
 * source gave them) and value = errors / requests.  NULL only when out of
 * memory.
 */
json_t *source_json(const struct config_check *c, const struct source_request *canary_req,
                    const struct source_reading *canary, const struct source_request *baseline_req,
                    const struct source_reading *baseline);

#endif
