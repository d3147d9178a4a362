/*
 * bench/client_eval.c - libcanary's in-process evaluation cost (issue 5;
 * bench/flags.sh reports it beside bench_flags_eval and unleash-client).
 *
 * The fixture of bench/flags_eval.c, through the client library's public
 * API: one flag with three rules and a fallthrough split
 *   rules: internal (email ends_with "@novacron.io") -> serve on
 *          premium  (plan in [gold, platinum])       -> rollout {on: 50}
 *          beta     (beta eq "true")                 -> serve on
 *   rollout: {on: 25}, sticky targetingKey
 * evaluated with canary_eval_bool() over 1024 contexts of five attributes
 * (struct canary_context, strings) with varied targeting keys where no rule
 * matches, so every rule is tried and the split decides.  No server: the
 * ruleset is given to the client as its cache file (the same JSON the
 * stream sends), so the call measured is exactly what an application makes:
 * snapshot acquire, key lookup, evaluation, typed value.  Each figure is the
 * median of RUNS timed loops; the last line is the headline (flags.sh).
 *
 *   client_eval [--iterations N] [--runs R]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "canary/canary.h"

#define NCTX     1024
#define MAX_RUNS 15
#define FLAG_KEY "bench_flag"

static const char ruleset[] =
    "{\"revision\":1,\"segments\":["
    "{\"name\":\"internal\",\"match\":[{\"attr\":\"email\",\"op\":\"ends_with\","
    "\"values\":[\"@novacron.io\"]}]},"
    "{\"name\":\"premium\",\"match\":[{\"attr\":\"plan\",\"op\":\"in\","
    "\"values\":[\"gold\",\"platinum\"]}]},"
    "{\"name\":\"beta\",\"match\":[{\"attr\":\"beta\",\"op\":\"eq\",\"values\":[\"true\"]}]}],"
    "\"flags\":[{\"key\":\"" FLAG_KEY "\","
    "\"rules\":[{\"segment\":\"internal\",\"serve\":\"on\"},"
    "{\"segment\":\"premium\",\"rollout\":{\"on\":50}},"
    "{\"segment\":\"beta\",\"serve\":\"on\"}],"
    "\"rollout\":{\"on\":25}}]}";

struct ctxs {
	char tk[NCTX][32], email[NCTX][48];
	struct canary_attr attrs[NCTX][4];
	struct canary_context ctx[NCTX];
};

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double timed_loop(struct canary_client *c, const struct ctxs *x, long n, long *on)
{
	double t0 = now_ns();
	long k = 0;

	for (long i = 0; i < n; i++)
		k += canary_eval_bool(c, FLAG_KEY, &x->ctx[i & (NCTX - 1)], 0, NULL);
	*on = k;
	return (now_ns() - t0) / (double)n;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int parse_count(const char *s, long max, long *out)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (end == s || *end || v < 1 || v > max)
		return -1;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	static struct ctxs x;
	char path[] = "/tmp/canary-bench-XXXXXX";
	struct canary_options o = {0};
	struct canary_client *c = NULL;
	struct canary_result r;
	long iterations = 5000000, runs = 5, on = 0;
	double v[MAX_RUNS], share;
	int fd, rc = 1;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc) {
			if (parse_count(argv[++i], 1000000000L, &iterations) == -1)
				goto usage;
		} else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
			if (parse_count(argv[++i], MAX_RUNS, &runs) == -1)
				goto usage;
		} else {
			goto usage;
		}
	}
	fd = mkstemp(path);
	if (fd == -1 || write(fd, ruleset, sizeof(ruleset) - 1) != (ssize_t)(sizeof(ruleset) - 1)) {
		perror("client_eval: cache file");
		return 1;
	}
	close(fd);
	o.base_url = "http://127.0.0.1:9"; /* never started: no server involved */
	o.cache_path = path;
	c = canary_client_new(&o);
	if (!c) {
		perror("client_eval: canary_client_new");
		goto out;
	}
	for (int i = 0; i < NCTX; i++) {
		snprintf(x.tk[i], sizeof(x.tk[i]), "user-%d", i * 7919);
		snprintf(x.email[i], sizeof(x.email[i]), "user-%d@example.com", i);
		x.attrs[i][0] = (struct canary_attr){"email", x.email[i]};
		x.attrs[i][1] = (struct canary_attr){"plan", "free"};
		x.attrs[i][2] = (struct canary_attr){"beta", "false"};
		x.attrs[i][3] = (struct canary_attr){"country", "DE"};
		x.ctx[i] = (struct canary_context){x.tk[i], x.attrs[i], 4};
	}
	/* the fixture must take the path described above: no rule, a split */
	canary_eval_bool(c, FLAG_KEY, &x.ctx[0], 0, &r);
	if (r.reason != CANARY_REASON_SPLIT) {
		fprintf(stderr, "client_eval: fixture evaluated to %s, expected SPLIT\n",
		        canary_reason_name(r.reason));
		goto out;
	}
	timed_loop(c, &x, iterations / 4 + 1, &on); /* warm-up */
	for (long i = 0; i < runs; i++)
		v[i] = timed_loop(c, &x, iterations, &on);
	qsort(v, (size_t)runs, sizeof(v[0]), cmp_double);
	share = 100.0 * (double)on / (double)iterations;
	if (share < 15 || share > 35) {
		fprintf(stderr, "client_eval: %.1f%% on, expected about 25%%\n", share);
		goto out;
	}
	printf("fixture: 3 rules, no rule matches, 25%% split (%.1f%% on), %ld x %ld calls\n",
	       share, runs, iterations);
	printf("canary_eval_bool %.1f ns/call (median of %ld; min %.1f, max %.1f)\n", v[runs / 2],
	       runs, v[0], v[runs - 1]);
	rc = 0;
out:
	canary_client_free(c);
	unlink(path);
	return rc;
usage:
	fprintf(stderr, "usage: client_eval [--iterations N] [--runs R]\n");
	return 2;
}
