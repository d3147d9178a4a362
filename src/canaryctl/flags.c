/*
 * flags.c - canaryctl's flag verbs (SPEC 8): flags list | get NAME |
 * set NAME [--percentage P] [--enabled[=true|false]] [--create] | exclude
 * NAME --nodes a,b | kill NAME | history NAME.  They speak the admin API's
 * flag endpoints (docs/api.md): `set` and `kill` are the seed-compatible
 * POST /v1/feature-flags, `exclude` is POST /v1/feature-flags/exclude,
 * `history` reads the flag's flag.* events from GET /v1/events.  `set` on a
 * flag that does not exist fails unless --create: a typo during an incident
 * must not create a new flag.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "canaryctl/ctl.h"
#include "config/config.h"
#include "flags/flag.h"

#define FLAGS_USAGE                                                               \
	"flags list\n  flags get NAME\n  flags set NAME [--percentage P] "        \
	"[--enabled[=true|false]] [--create]\n  flags exclude NAME --nodes a,b\n" \
	"  flags kill NAME\n  flags history NAME"
#define PATH_CAP 256

/* A percentage as the API returns it (number), "-" otherwise. */
static void fmt_pct(const json_t *v, char *out, size_t len)
{
	if (json_is_number(v))
		snprintf(out, len, "%.6g%%", json_number_value(v));
	else
		snprintf(out, len, "-");
}

static void print_list_row(const json_t *f)
{
	char pct[32];
	const json_t *ex = json_object_get(f, "exclude");

	fmt_pct(json_object_get(f, "percentage"), pct, sizeof(pct));
	printf("%-32s %-8s %-9s %-14s %-7s %zu\n",
	       json_string_value(json_object_get(f, "key")) ?: "?",
	       json_is_false(json_object_get(f, "enabled")) ? "off" : "on", pct,
	       json_string_value(json_object_get(f, "sticky")) ?: "-",
	       json_string_value(json_object_get(f, "source")) ?: "-", json_array_size(ex));
}

static void print_flag(const json_t *f)
{
	char pct[32];
	const json_t *a;
	size_t i;
	json_t *v;

	fmt_pct(json_object_get(f, "percentage"), pct, sizeof(pct));
	printf("flag        %s\n", json_string_value(json_object_get(f, "key")) ?: "?");
	printf("enabled     %s\n", json_is_false(json_object_get(f, "enabled")) ? "false" : "true");
	printf("percentage  %s\n", pct);
	printf("sticky      %s\n", json_string_value(json_object_get(f, "sticky")) ?: "-");
	printf("source      %s\n", json_string_value(json_object_get(f, "source")) ?: "-");
	printf("revision    %lld\n", (long long)json_integer_value(json_object_get(f, "revision")));
	printf("rules       %zu\n", json_array_size(json_object_get(f, "rules")));
	for (int l = 0; l < 2; l++) {
		a = json_object_get(f, l ? "include" : "exclude");
		printf("%-12s", l ? "include" : "exclude");
		if (json_array_size(a) == 0)
			printf("-");
		json_array_foreach(a, i, v)
		{
			printf("%s%s", i ? "," : "", json_string_value(v) ?: "?");
		}
		printf("\n");
	}
}

static int show(const struct ctl *ctl, json_t *doc, int list)
{
	if (ctl->json) {
		ctl_print(ctl, doc);
	} else if (list) {
		size_t i;
		json_t *f;

		printf("%-32s %-8s %-9s %-14s %-7s %s\n", "FLAG", "ENABLED", "PERCENT", "STICKY",
		       "SOURCE", "EXCLUDED");
		json_array_foreach(json_object_get(doc, "flags"), i, f)
		{
			print_list_row(f);
		}
	} else {
		print_flag(doc);
	}
	json_decref(doc);
	return CTL_OK;
}

/* Splits "a,b,c" into a JSON array (empty items skipped). */
static json_t *split_nodes(const char *s)
{
	json_t *a = json_array();

	while (a && *s) {
		const char *c = strchr(s, ',');
		size_t n = c ? (size_t)(c - s) : strlen(s);

		if (n)
			json_array_append_new(a, json_stringn(s, n));
		s += n + (c ? 1 : 0);
	}
	return a;
}

struct hist {
	const char *name;
	json_t *all; /* -o json/yaml: the events, else NULL (printed as they come) */
	size_t n;
};

/* "a -> b" for one field: compact JSON of each side, "-" when absent. */
static void print_change(const char *k, const json_t *b, const json_t *a)
{
	char *bs = b ? json_dumps(b, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	char *as = a ? json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

	printf("    %s: %s -> %s\n", k, bs ?: "-", as ?: "-");
	free(bs);
	free(as);
}

static int hist_one(json_t *ev, void *arg)
{
	struct hist *h = arg;
	const char *kind = json_string_value(json_object_get(ev, "kind")) ?: "";
	const char *subj = json_string_value(json_object_get(ev, "subject")) ?: "";
	json_t *det = json_object_get(ev, "details");
	json_t *before = json_object_get(det, "before"), *after = json_object_get(det, "after");
	const char *k;
	json_t *v;

	/* the API's flag events name "flag/NAME" */
	if (strncmp(kind, "flag.", 5) != 0 || strncmp(subj, "flag/", 5) != 0 ||
	    strcmp(subj + 5, h->name) != 0)
		return 0;
	h->n++;
	if (h->all) {
		json_array_append(h->all, ev);
		return 0;
	}
	printf("%lld  %s  %s  %s\n", (long long)json_integer_value(json_object_get(ev, "id")),
	       json_string_value(json_object_get(ev, "ts")) ?: "-",
	       json_string_value(json_object_get(ev, "actor")) ?: "-", kind);
	/* the fields that changed, before -> after */
	json_object_foreach(json_is_object(after) ? after : before, k, v)
	{
		json_t *o = json_object_get(json_is_object(after) ? before : after, k);

		if (!o || !json_equal(o, v))
			print_change(k, json_is_object(after) ? o : v,
			             json_is_object(after) ? v : o);
	}
	if (json_is_object(after) && json_is_object(before)) {
		json_object_foreach(before, k, v)
		{
			if (!json_object_get(after, k))
				print_change(k, v, NULL);
		}
	}
	return 0;
}

/* flags history NAME: the flag's change events with what each changed. */
static int history(const struct ctl *ctl, const char *name)
{
	struct hist h = {name, ctl->json ? json_array() : NULL, 0};
	int rc = ctl_events_each(ctl, 0, hist_one, &h, NULL);

	if (rc == CTL_OK && h.all) {
		json_t *doc = json_pack("{s:s, s:O}", "flag", name, "events", h.all);

		ctl_print(ctl, doc);
		json_decref(doc);
	} else if (rc == CTL_OK && h.n == 0) {
		fprintf(stderr, "canaryctl: no change events for flag \"%s\"\n", name);
	}
	json_decref(h.all);
	return rc;
}

int ctl_flags(const struct ctl *ctl_in, int argc, char **argv)
{
	struct ctl ctl = *ctl_in;
	const char *sub, *name = NULL, *pct = NULL, *nodes = NULL, *enabled = NULL;
	int create = 0;
	char path[PATH_CAP];
	json_t *doc = NULL, *body;
	int rc;

	if (argc < 2)
		return ctl_usage_arg(FLAGS_USAGE, "missing what to do", NULL);
	sub = argv[1];
	if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0) {
		printf("usage: canaryctl %s\n", FLAGS_USAGE);
		return CTL_OK;
	}
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "-o") == 0 && i + 1 < argc) {
			if (ctl_set_output(&ctl, argv[++i]) != 0)
				return ctl_usage_arg(FLAGS_USAGE,
				                     "-o takes table, json or yaml, not", argv[i]);
		} else if (strcmp(a, "--percentage") == 0 && i + 1 < argc) {
			pct = argv[++i];
		} else if (strncmp(a, "--percentage=", 13) == 0) {
			pct = a + 13;
		} else if (strcmp(a, "--nodes") == 0 && i + 1 < argc) {
			nodes = argv[++i];
		} else if (strncmp(a, "--nodes=", 8) == 0) {
			nodes = a + 8;
		} else if (strcmp(a, "--create") == 0) {
			create = 1;
		} else if (strcmp(a, "--enabled") == 0) {
			enabled = "true";
		} else if (strncmp(a, "--enabled=", 10) == 0) {
			enabled = a + 10;
			if (strcmp(enabled, "true") != 0 && strcmp(enabled, "false") != 0)
				return ctl_usage_arg(FLAGS_USAGE,
				                     "--enabled takes true or false, not", enabled);
		} else if (a[0] == '-') {
			return ctl_usage_arg(FLAGS_USAGE, "unknown option or missing argument", a);
		} else if (!name) {
			name = a;
		} else {
			return ctl_usage_arg(FLAGS_USAGE, "unexpected argument", a);
		}
	}
	if (strcmp(sub, "list") == 0) {
		if (name || pct || nodes || enabled)
			return ctl_usage_arg(FLAGS_USAGE, "flags list takes no arguments", NULL);
		rc = ctl_call(&ctl, "GET", "/v1/feature-flags", NULL, &doc);
		return rc == CTL_OK ? show(&ctl, doc, 1) : rc;
	}
	if (strcmp(sub, "get") != 0 && strcmp(sub, "set") != 0 && strcmp(sub, "exclude") != 0 &&
	    strcmp(sub, "kill") != 0 && strcmp(sub, "history") != 0)
		return ctl_usage_arg(FLAGS_USAGE, "unknown flags command", sub);
	if (!name)
		return ctl_usage_arg(FLAGS_USAGE, "missing the flag NAME", NULL);
	if (!config_valid_name(name))
		return ctl_usage_arg(FLAGS_USAGE, "not a flag name ([A-Za-z0-9_.-]{1,64}):", name);
	if ((pct || enabled) && strcmp(sub, "set") != 0)
		return ctl_usage_arg(FLAGS_USAGE, "--percentage and --enabled belong to flags set",
		                     NULL);
	if (nodes && strcmp(sub, "exclude") != 0)
		return ctl_usage_arg(FLAGS_USAGE, "--nodes belongs to flags exclude", NULL);
	if (create && strcmp(sub, "set") != 0)
		return ctl_usage_arg(FLAGS_USAGE, "--create belongs to flags set", NULL);
	if (strcmp(sub, "history") == 0)
		return history(&ctl, name);
	snprintf(path, sizeof(path), "/v1/feature-flags/%s", name);
	if (strcmp(sub, "get") == 0) {
		rc = ctl_call(&ctl, "GET", path, NULL, &doc);
		return rc == CTL_OK ? show(&ctl, doc, 0) : rc;
	}
	if (strcmp(sub, "set") == 0) {
		uint32_t t;
		char *end;
		double p = pct ? strtod(pct, &end) : 0;

		if (!pct && !enabled)
			return ctl_usage_arg(FLAGS_USAGE,
			                     "flags set needs --percentage and/or --enabled", NULL);
		if (pct && (end == pct || *end || config_percent_from_double(p, &t) != 0))
			return ctl_usage_arg(
			    FLAGS_USAGE, "--percentage takes 0..100 with at most 3 decimals, not",
			    pct);
		if (!create) {
			long st = 0;

			rc = ctl_call_ex(&ctl, "GET", path, NULL, 0, CTL_QUIET_NOTFOUND, &st, &doc);
			if (rc != CTL_OK && st == 404) {
				fprintf(
				    stderr,
				    "canaryctl: flag \"%s\" does not exist (see `canaryctl flags "
				    "list`; add --create to create it)\n",
				    name);
				return CTL_FAILED;
			}
			if (rc != CTL_OK)
				return rc;
			json_decref(doc);
			doc = NULL;
		}
		body = json_pack("{s:s}", "feature", name);
		if (pct)
			json_object_set_new(body, "percentage", flag_percent_json(t));
		if (enabled)
			json_object_set_new(body, "enabled",
			                    json_boolean(strcmp(enabled, "true") == 0));
		rc = ctl_call(&ctl, "POST", "/v1/feature-flags", body, &doc);
	} else if (strcmp(sub, "exclude") == 0) {
		json_t *arr;

		if (!nodes)
			return ctl_usage_arg(FLAGS_USAGE, "flags exclude needs --nodes a,b", NULL);
		arr = split_nodes(nodes);
		if (json_array_size(arr) == 0) {
			json_decref(arr);
			return ctl_usage_arg(FLAGS_USAGE, "--nodes names no node", NULL);
		}
		body = json_pack("{s:s, s:o}", "feature", name, "nodes", arr);
		rc = ctl_call(&ctl, "POST", "/v1/feature-flags/exclude", body, &doc);
	} else {
		/* kill: the flag must exist (the seed POST would create it) */
		rc = ctl_call(&ctl, "GET", path, NULL, &doc);
		if (rc != CTL_OK)
			return rc;
		json_decref(doc);
		doc = NULL;
		body = json_pack("{s:s, s:b}", "feature", name, "enabled", 0);
		rc = ctl_call(&ctl, "POST", "/v1/feature-flags", body, &doc);
	}
	json_decref(body);
	return rc == CTL_OK ? show(&ctl, doc, 0) : rc;
}
