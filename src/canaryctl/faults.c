/*
 * faults.c - `canaryctl faults set SERVICE VERSION [--abort STATUS:PCT]
 * [--delay DURATION:PCT]` and `canaryctl faults clear SERVICE VERSION`:
 * PUT / DELETE /v1/services/{name}/faults/{version} (docs/api.md).
 * e.g. `--abort 503:5 --delay 200ms:10`: 5% answered 503, 10% held 200 ms.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "canaryctl/ctl.h"
#include "config/config.h"

#define FAULTS_USAGE                                                                       \
	"faults set SERVICE VERSION [--abort STATUS:PERCENT] [--delay DURATION:PERCENT]\n" \
	"  faults clear SERVICE VERSION"

/* "X:PCT" -> the part before ':' in head (NUL-terminated) and the percentage. */
static int split_pct(const char *s, char *head, size_t len, double *pct)
{
	const char *c = strrchr(s, ':');
	uint32_t t;
	char *end;

	if (!c || c == s || (size_t)(c - s) >= len)
		return -1;
	memcpy(head, s, (size_t)(c - s));
	head[c - s] = '\0';
	*pct = strtod(c + 1, &end);
	if (end == c + 1 || *end || config_percent_from_double(*pct, &t) != 0)
		return -1;
	return 0;
}

/* "200ms", "2s", "1m" or a bare number of ms -> ms; -1 when malformed. */
static long long duration_ms(const char *s)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || v < 0)
		return -1;
	if (!*end || strcmp(end, "ms") == 0)
		return (long long)v;
	if (strcmp(end, "s") == 0)
		return (long long)(v * 1000);
	if (strcmp(end, "m") == 0)
		return (long long)(v * 60000);
	return -1;
}

/* ctl_usage_arg(FAULTS_USAGE, ) for `faults set` once its body exists (freed here). */
static int set_error(json_t *body, const char *what, const char *arg)
{
	json_decref(body);
	return ctl_usage_arg(FAULTS_USAGE, what, arg);
}

static void print_faults(const json_t *doc)
{
	const json_t *f = json_object_get(doc, "faults");
	const json_t *d = json_object_get(f, "delay"), *a = json_object_get(f, "abort");

	printf("service     %s\n", json_string_value(json_object_get(doc, "service")) ?: "?");
	printf("version     %s\n", json_string_value(json_object_get(doc, "version")) ?: "?");
	if (!json_is_object(f)) {
		printf("faults      none\n");
		return;
	}
	printf("source      %s\n", json_string_value(json_object_get(f, "source")) ?: "?");
	if (d)
		printf("delay       %lldms on %.6g%%\n",
		       (long long)json_integer_value(json_object_get(d, "ms")),
		       json_number_value(json_object_get(d, "percent")));
	if (a)
		printf("abort       %lld on %.6g%%\n",
		       (long long)json_integer_value(json_object_get(a, "status")),
		       json_number_value(json_object_get(a, "percent")));
}

int ctl_faults(const struct ctl *ctl_in, int argc, char **argv)
{
	struct ctl ctl = *ctl_in;
	const char *sub, *svc = NULL, *ver = NULL, *abort_s = NULL, *delay_s = NULL;
	json_t *doc = NULL, *body = NULL;
	char path[320];
	int rc;

	if (argc < 2)
		return ctl_usage_arg(FAULTS_USAGE, "missing what to do", NULL);
	sub = argv[1];
	if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0) {
		printf("usage: canaryctl %s\n", FAULTS_USAGE);
		return CTL_OK;
	}
	if (strcmp(sub, "set") != 0 && strcmp(sub, "clear") != 0)
		return ctl_usage_arg(FAULTS_USAGE, "unknown faults command", sub);
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "-o") == 0 && i + 1 < argc) {
			if (ctl_set_output(&ctl, argv[++i]) != 0)
				return ctl_usage_arg(FAULTS_USAGE,
				                     "-o takes table, json or yaml, not", argv[i]);
		} else if (strcmp(a, "--abort") == 0 && i + 1 < argc) {
			abort_s = argv[++i];
		} else if (strncmp(a, "--abort=", 8) == 0) {
			abort_s = a + 8;
		} else if (strcmp(a, "--delay") == 0 && i + 1 < argc) {
			delay_s = argv[++i];
		} else if (strncmp(a, "--delay=", 8) == 0) {
			delay_s = a + 8;
		} else if (a[0] == '-') {
			return ctl_usage_arg(FAULTS_USAGE, "unknown option or missing argument", a);
		} else if (!svc) {
			svc = a;
		} else if (!ver) {
			ver = a;
		} else {
			return ctl_usage_arg(FAULTS_USAGE, "unexpected argument", a);
		}
	}
	if (!svc || !ver)
		return ctl_usage_arg(FAULTS_USAGE, "missing SERVICE and VERSION", NULL);
	if (!config_valid_name(svc))
		return ctl_usage_arg(FAULTS_USAGE,
		                     "not a service name ([A-Za-z0-9_.-]{1,64}):", svc);
	if (!config_valid_name(ver))
		return ctl_usage_arg(FAULTS_USAGE,
		                     "not a version name ([A-Za-z0-9_.-]{1,64}):", ver);
	snprintf(path, sizeof(path), "/v1/services/%s/faults/%s", svc, ver);
	if (strcmp(sub, "clear") == 0) {
		if (abort_s || delay_s)
			return ctl_usage_arg(FAULTS_USAGE, "faults clear takes no --abort/--delay",
			                     NULL);
		rc = ctl_call(&ctl, "DELETE", path, NULL, &doc);
	} else {
		char head[64];
		double pct;

		if (!abort_s && !delay_s)
			return ctl_usage_arg(FAULTS_USAGE,
			                     "faults set needs --abort and/or --delay", NULL);
		body = json_object();
		if (abort_s) {
			char *end;
			long st;

			if (split_pct(abort_s, head, sizeof(head), &pct) != 0)
				return set_error(body,
				                 "--abort takes STATUS:PERCENT (e.g. 503:5), not",
				                 abort_s);
			st = strtol(head, &end, 10);
			if (*end || st < 100 || st > 599)
				return set_error(body, "--abort STATUS must be 100..599, not",
				                 head);
			json_object_set_new(
			    body, "abort",
			    json_pack("{s:i, s:f}", "status", (int)st, "percent", pct));
		}
		if (delay_s) {
			long long ms;

			if (split_pct(delay_s, head, sizeof(head), &pct) != 0)
				return set_error(
				    body, "--delay takes DURATION:PERCENT (e.g. 200ms:10), not",
				    delay_s);
			ms = duration_ms(head);
			if (ms < 0 || ms > 3600000)
				return set_error(
				    body, "--delay DURATION must be like 200ms or 2s, not", head);
			json_object_set_new(
			    body, "delay",
			    json_pack("{s:I, s:f}", "ms", (json_int_t)ms, "percent", pct));
		}
		rc = ctl_call(&ctl, "PUT", path, body, &doc);
		json_decref(body);
	}
	if (rc != CTL_OK)
		return rc;
	if (ctl.json)
		ctl_print(&ctl, doc);
	else
		print_faults(doc);
	json_decref(doc);
	return CTL_OK;
}
