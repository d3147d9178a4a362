/*
 * bench_route_match - in-process cost of the routing table at N services (one
 * host route each, s<i>.bench): proxy_route_match() for the first and the
 * last host route (rounds interleaved, best of ROUNDS), a whole table build,
 * and proxy_table_derive() (one service changed).  Run by
 * bench/scale-services.sh; free of the machine's network and load noise that
 * wrk's req/s carries.
 *
 *   bench_route_match [N]     (default 1000)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "proxy/registry.h"
#include "proxy/table.h"

#define ROUNDS  5
#define MATCHES 1000000

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ns per proxy_route_match() of host on l */
static double match_ns(const struct proxy_listener *l, const char *host)
{
	struct str h = str_make(host, strlen(host)), path = STR_LIT("/x");
	volatile uintptr_t sink = 0;
	double t0 = now_s();

	for (int i = 0; i < MATCHES; i++)
		sink += (uintptr_t)proxy_route_match(l, h, path);
	(void)sink;
	return (now_s() - t0) * 1e9 / MATCHES;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 1000;
	size_t cap = (size_t)n * 200 + 4096, off = 0;
	char *y = malloc(cap), err[256], last[64];
	struct config_errors errs;
	struct config *cfg;
	struct config_ref *cref;
	struct proxy_registry *reg = proxy_registry_new();
	struct proxy_table *t = NULL, *d;
	struct proxy_traffic tr = {.service = "s0", .canary = "v2", .weight = 1000};
	double first = 1e9, lastv = 1e9, build = 1e9, derive, t0;
	int rc = 1;

	if (!y || !reg || n < 1)
		return 1;
	off += (size_t)snprintf(y + off, cap - off,
	                        "admin: {listen: 127.0.0.1:9901}\nlisteners:\n  - name: pub\n"
	                        "    listen: 127.0.0.1:8080\n    routes:\n");
	for (int i = 0; i < n; i++)
		off += (size_t)snprintf(
		    y + off, cap - off,
		    "      - {match: {host: s%d.bench, path_prefix: /}, service: s%d}\n", i, i);
	off += (size_t)snprintf(y + off, cap - off, "services:\n");
	for (int i = 0; i < n; i++)
		off += (size_t)snprintf(y + off, cap - off,
		                        "  s%d: {versions: {v1: {endpoints: [127.0.0.1:7001]}, v2: "
		                        "{endpoints: [127.0.0.1:7002]}}, stable: v1}\n",
		                        i);
	config_errors_init(&errs);
	cfg = config_load_string("bench.yaml", y, off, &errs);
	if (!cfg) {
		config_errors_print(&errs, stderr);
		goto out;
	}
	cref = config_ref_new(cfg);
	for (int r = 0; r < ROUNDS; r++) {
		t0 = now_s();
		d = proxy_table_build(cref, NULL, 0, reg, NULL, NULL, err, sizeof(err));
		if (!d) {
			fprintf(stderr, "bench_route_match: %s\n", err);
			goto out_cref;
		}
		if (now_s() - t0 < build)
			build = now_s() - t0;
		if (t)
			snap_obj_unref(&t->obj);
		t = d;
	}
	snprintf(last, sizeof(last), "s%d.bench", n - 1);
	for (int r = 0; r < ROUNDS; r++) {
		double a = match_ns(&t->listeners[0], "s0.bench");
		double b = match_ns(&t->listeners[0], last);

		first = a < first ? a : first;
		lastv = b < lastv ? b : lastv;
	}
	t0 = now_s();
	for (int i = 0; i < 1000; i++) {
		d = proxy_table_derive(t, &tr, reg, NULL, NULL, err, sizeof(err));
		if (!d)
			goto out_table;
		snap_obj_unref(&d->obj);
	}
	derive = (now_s() - t0) * 1e3; /* ms per 1000 = us per one */
	printf("%d services: match first %.1f ns, last %.1f ns (last/first time %.2f); "
	       "whole build %.2f ms; derive (one service) %.1f us\n",
	       n, first, lastv, lastv / first, build * 1e3, derive);
	rc = 0;
out_table:
	snap_obj_unref(&t->obj);
out_cref:
	snap_obj_unref(&cref->obj);
out:
	config_errors_release(&errs);
	proxy_registry_free(reg);
	free(y);
	return rc;
}
