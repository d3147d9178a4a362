/*
 * fleet.c - `canaryctl fleet`: the nodes of a fleet (GET /v1/fleet,
 * docs/fleet.md) - id, address, role, term, applied revision, last seen - as
 * a table, JSON or YAML.  A single node on SQLite says so.
 */
#include <stdio.h>
#include <string.h>

#include "canaryctl/ctl.h"

#define FLEET_USAGE "fleet"

static long long num(const json_t *o, const char *k)
{
	return (long long)json_integer_value(json_object_get(o, k));
}

static const char *str(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "-";
}

static void print_fleet(const json_t *doc)
{
	const json_t *nodes = json_object_get(doc, "nodes"), *n;
	size_t i;

	if (strcmp(str(doc, "mode"), "fleet") != 0) {
		printf("single node (not in fleet mode: the store is not PostgreSQL)\n");
		return;
	}
	printf("this node %s, term %lld, leader %s\n", str(doc, "self"), num(doc, "term"),
	       str(doc, "holder"));
	printf("%-28s %-24s %-9s %6s %10s %-24s %s\n", "ID", "ADDRESS", "ROLE", "TERM", "APPLIED",
	       "LAST SEEN", "ALIVE");
	json_array_foreach(nodes, i, n)
	{
		printf("%-28s %-24s %-9s %6lld %10lld %-24s %s\n", str(n, "id"), str(n, "address"),
		       str(n, "role"), num(n, "term"), num(n, "applied_revision"),
		       str(n, "last_seen"),
		       json_is_true(json_object_get(n, "alive")) ? "yes" : "no");
	}
}

int ctl_fleet(const struct ctl *ctl_in, int argc, char **argv)
{
	struct ctl ctl = *ctl_in;
	json_t *doc = NULL;
	int rc;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			printf("usage: canaryctl %s\n", FLEET_USAGE);
			return CTL_OK;
		} else if (strcmp(a, "-o") == 0 && i + 1 < argc) {
			if (ctl_set_output(&ctl, argv[++i]) != 0)
				return ctl_usage_arg(FLEET_USAGE,
				                     "-o takes table, json or yaml, not", argv[i]);
		} else {
			return ctl_usage_arg(FLEET_USAGE, "unexpected argument", a);
		}
	}
	rc = ctl_call(&ctl, "GET", "/v1/fleet", NULL, &doc);
	if (rc != CTL_OK)
		return rc;
	if (ctl.json)
		ctl_print(&ctl, doc);
	else
		print_fleet(doc);
	json_decref(doc);
	return CTL_OK;
}
