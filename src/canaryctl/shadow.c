/*
 * shadow.c - `canaryctl shadow SERVICE`: the shadow-traffic comparison of a
 * service (GET /v1/services/{name}/shadow, docs/api.md): the mirror in
 * effect, counts, rates, primary vs shadow latency, the last mismatches.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "canaryctl/ctl.h"
#include "config/config.h"

#define SHADOW_USAGE "shadow SERVICE"

static long long num(const json_t *o, const char *k)
{
	return (long long)json_integer_value(json_object_get(o, k));
}

/* A number with a unit, or "-" when absent/null. */
static void fmt(const json_t *v, const char *unit, double scale, char *out, size_t len)
{
	if (json_is_number(v))
		snprintf(out, len, "%.3g%s", json_number_value(v) * scale, unit);
	else
		snprintf(out, len, "-");
}

static void print_shadow(const json_t *doc)
{
	const json_t *m = json_object_get(doc, "mirror"), *c = json_object_get(doc, "counts");
	const json_t *r = json_object_get(doc, "rates"), *l = json_object_get(doc, "latency");
	const json_t *mm = json_object_get(doc, "mismatches"), *x;
	char a[32], b[32], e[32];
	size_t i;

	fmt(json_object_get(m, "percent"), "%", 1, a, sizeof(a));
	printf("service     %s\n", json_string_value(json_object_get(doc, "service")) ?: "?");
	printf("mirror      %s %s (%s)\n", json_string_value(json_object_get(m, "version")) ?: "-",
	       a, json_string_value(json_object_get(m, "source")) ?: "?");
	printf("counts      mirrored %lld  compared %lld  matched %lld\n", num(c, "mirrored"),
	       num(c, "compared"), num(c, "matched"));
	printf("            status_mismatch %lld  body_mismatch %lld  shadow_error %lld\n",
	       num(c, "status_mismatch"), num(c, "body_mismatch"), num(c, "shadow_error"));
	printf("            dropped %lld  too_large %lld  method %lld\n", num(c, "dropped"),
	       num(c, "too_large"), num(c, "method"));
	fmt(json_object_get(r, "mismatch_rate"), "%", 100, a, sizeof(a));
	fmt(json_object_get(r, "shadow_error_rate"), "%", 100, b, sizeof(b));
	fmt(json_object_get(r, "drop_rate"), "%", 100, e, sizeof(e));
	printf("rates       mismatch %s  shadow_error %s  dropped %s\n", a, b, e);
	printf("latency     %-8s %10s %10s %10s\n", "", "p50", "p99", "mean");
	for (int s = 0; s < 2; s++) {
		const json_t *side = json_object_get(l, s ? "shadow" : "primary");
		char p50[32], p99[32], mean[32];

		fmt(json_object_get(side, "p50_ms"), "ms", 1, p50, sizeof(p50));
		fmt(json_object_get(side, "p99_ms"), "ms", 1, p99, sizeof(p99));
		fmt(json_object_get(side, "mean_ms"), "ms", 1, mean, sizeof(mean));
		printf("            %-8s %10s %10s %10s\n", s ? "shadow" : "primary", p50, p99,
		       mean);
	}
	fmt(json_object_get(l, "p99_ratio"), "x", 1, a, sizeof(a));
	printf("            p99 shadow/primary %s\n", a);
	printf("mismatches  %zu\n", json_array_size(mm));
	if (json_array_size(mm))
		printf("  %-20s %-16s %-7s %-30s %7s %7s %9s %9s\n", "TIME", "RESULT", "METHOD",
		       "PATH", "PRIMARY", "SHADOW", "P_MS", "S_MS");
	json_array_foreach(mm, i, x)
	{
		time_t t = (time_t)(num(x, "time_ms") / 1000);
		struct tm tm;
		char ts[32], ss[16], pms[32], sms[32];

		gmtime_r(&t, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
		if (json_is_integer(json_object_get(x, "shadow_status")))
			snprintf(ss, sizeof(ss), "%lld", num(x, "shadow_status"));
		else
			snprintf(ss, sizeof(ss), "-");
		fmt(json_object_get(x, "primary_ms"), "", 1, pms, sizeof(pms));
		fmt(json_object_get(x, "shadow_ms"), "", 1, sms, sizeof(sms));
		printf("  %-20s %-16s %-7s %-30s %7lld %7s %9s %9s\n", ts,
		       json_string_value(json_object_get(x, "result")) ?: "?",
		       json_string_value(json_object_get(x, "method")) ?: "?",
		       json_string_value(json_object_get(x, "path")) ?: "?",
		       num(x, "primary_status"), ss, pms, sms);
	}
}

int ctl_shadow(const struct ctl *ctl_in, int argc, char **argv)
{
	struct ctl ctl = *ctl_in;
	const char *name = NULL;
	char path[256];
	json_t *doc = NULL;
	int rc;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			printf("usage: canaryctl %s\n", SHADOW_USAGE);
			return CTL_OK;
		} else if (strcmp(a, "-o") == 0 && i + 1 < argc) {
			if (ctl_set_output(&ctl, argv[++i]) != 0)
				return ctl_usage_arg(SHADOW_USAGE,
				                     "-o takes table, json or yaml, not", argv[i]);
		} else if (a[0] == '-') {
			return ctl_usage_arg(SHADOW_USAGE, "unknown option or missing argument", a);
		} else if (!name) {
			name = a;
		} else {
			return ctl_usage_arg(SHADOW_USAGE, "unexpected argument", a);
		}
	}
	if (!name)
		return ctl_usage_arg(SHADOW_USAGE, "missing the SERVICE", NULL);
	if (!config_valid_name(name))
		return ctl_usage_arg(SHADOW_USAGE,
		                     "not a service name ([A-Za-z0-9_.-]{1,64}):", name);
	snprintf(path, sizeof(path), "/v1/services/%s/shadow", name);
	rc = ctl_call(&ctl, "GET", path, NULL, &doc);
	if (rc != CTL_OK)
		return rc;
	if (ctl.json)
		ctl_print(&ctl, doc);
	else
		print_shadow(doc);
	json_decref(doc);
	return CTL_OK;
}
