/*
 * bench/flags_eval.c - in-process flag evaluation cost (issue 5, part 2 of
 * bench/flags.sh; docs/benchmarks.md "Feature flags").
 *
 * One flag with three rules and a fallthrough split, the same toggle that
 * bench/unleash/toggle.json gives unleash-client:
 *   rules: internal (email ends_with "@novacron.io") -> serve on
 *          premium  (plan in [gold, platinum])       -> rollout {on: 50}
 *          beta     (beta eq "true")                 -> serve on
 *   rollout: {on: 25}, sticky targetingKey
 * evaluated over 1024 JSON contexts of five attributes with varied targeting
 * keys where no rule matches, so every rule is tried and the split decides
 * (the most expensive path without lists).  Each call does what the OFREP
 * handler does per request after parsing the body: flag_json_ctx_init over
 * the context object, then flag_eval.  A second figure adds flagset_find
 * (the key lookup).  Each figure is the median of RUNS timed loops.
 *
 *   flags_eval [--iterations N] [--runs R]
 * Prints "flag_eval NS ns/call" and "flagset_find+flag_eval NS ns/call".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "config/config.h"
#include "flags/flag.h"

#define NCTX     1024
#define MAX_RUNS 15

static const char segments_json[] =
    "{\"internal\": {\"match\": [{\"attr\": \"email\", \"op\": \"ends_with\","
    "                            \"values\": [\"@novacron.io\"]}]},"
    " \"premium\": {\"match\": [{\"attr\": \"plan\", \"op\": \"in\","
    "                           \"values\": [\"gold\", \"platinum\"]}]},"
    " \"beta\": {\"match\": [{\"attr\": \"beta\", \"op\": \"eq\", \"values\": [\"true\"]}]}}";

static const char flag_json[] = "{\"rules\": [{\"segment\": \"internal\", \"serve\": \"on\"},"
                                "           {\"segment\": \"premium\", \"rollout\": {\"on\": 50}},"
                                "           {\"segment\": \"beta\", \"serve\": \"on\"}],"
                                " \"rollout\": {\"on\": 25}}";

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static int parse_count(const char *s, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 1 || v > max)
		return -1;
	*out = v;
	return 0;
}

/* A volatile sink so the compiler keeps every evaluation. */
static volatile unsigned sink;

/* One timed loop of n evaluations; returns ns per call and counts "on" results. */
static double timed_loop(const struct flagset *set, const struct flag *f, json_t *const *ctxs,
                         long n, int with_find, long *on)
{
	static const char key[] = "bench_flag";
	struct flag_json_ctx c;
	struct flag_result r;
	double t0, t1;
	long i, hits = 0;

	t0 = now_ns();
	for (i = 0; i < n; i++) {
		const struct flag *ff = with_find ? flagset_find(set, key, sizeof(key) - 1) : f;

		flag_json_ctx_init(&c, ctxs[i & (NCTX - 1)]);
		flag_eval(ff, flag_ctx_json_attr, &c, &r);
		hits += r.value_json_len == 4; /* "true" */
	}
	t1 = now_ns();
	sink += (unsigned)hits;
	*on = hits;
	return (t1 - t0) / (double)n;
}

static double median_of(const struct flagset *set, const struct flag *f, json_t *const *ctxs,
                        long n, long runs, int with_find, double *on_share)
{
	double v[MAX_RUNS];
	long r, on = 0;

	timed_loop(set, f, ctxs, n / 4 + 1, with_find, &on); /* warm-up */
	for (r = 0; r < runs; r++)
		v[r] = timed_loop(set, f, ctxs, n, with_find, &on);
	*on_share = 100.0 * (double)on / (double)n;
	qsort(v, (size_t)runs, sizeof(v[0]), cmp_double);
	return v[runs / 2];
}

int main(int argc, char **argv)
{
	struct config_segment *segs[3] = {0}, seg_vals[3];
	static const char *const seg_names[3] = {"internal", "premium", "beta"};
	struct config_errors errs;
	struct config_flag *cf = NULL;
	struct flagset *set = NULL;
	const struct flag *f;
	json_t *segdoc = NULL, *flagdoc = NULL, *ctxs[NCTX] = {0};
	json_error_t jerr;
	long iterations = 5000000, runs = 5;
	double ns_eval, ns_find, share_eval, share_find;
	char err[256];
	int i, rc = 1;

	for (i = 1; i < argc; i++) {
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

	config_errors_init(&errs);
	segdoc = json_loads(segments_json, 0, &jerr);
	flagdoc = json_loads(flag_json, 0, &jerr);
	if (!segdoc || !flagdoc) {
		fprintf(stderr, "flags_eval: fixture JSON: %s\n", jerr.text);
		goto out;
	}
	for (i = 0; i < 3; i++) {
		segs[i] = config_segment_from_json("bench", seg_names[i],
		                                   json_object_get(segdoc, seg_names[i]), &errs);
		if (!segs[i])
			goto out_config;
		seg_vals[i] = *segs[i];
	}
	cf = config_flag_from_json("bench", "bench_flag", flagdoc, NULL, &errs);
	if (!cf)
		goto out_config;
	set = flagset_build(cf, 1, seg_vals, 3, err, sizeof(err));
	if (!set) {
		fprintf(stderr, "flags_eval: flagset_build: %s\n", err);
		goto out;
	}
	f = flagset_find(set, "bench_flag", 10);

	for (i = 0; i < NCTX; i++) {
		char tk[32], email[48];

		snprintf(tk, sizeof(tk), "user-%d", i * 7919);
		snprintf(email, sizeof(email), "user-%d@example.com", i);
		ctxs[i] = json_pack("{s:s, s:s, s:s, s:s, s:s}", "targetingKey", tk, "email", email,
		                    "plan", "free", "beta", "false", "country", "DE");
		if (!ctxs[i]) {
			fprintf(stderr, "flags_eval: out of memory\n");
			goto out;
		}
	}

	/* the fixture must take the path described above: no rule, a split */
	{
		struct flag_json_ctx c;
		struct flag_result r;

		flag_json_ctx_init(&c, ctxs[0]);
		if (flag_eval(f, flag_ctx_json_attr, &c, &r) != 0 ||
		    r.reason != FLAG_REASON_SPLIT || r.rule != -1) {
			fprintf(stderr,
			        "flags_eval: fixture evaluated to %s (rule %d), expected SPLIT\n",
			        flag_reason_name(r.reason), r.rule);
			goto out;
		}
	}

	ns_eval = median_of(set, f, ctxs, iterations, runs, 0, &share_eval);
	ns_find = median_of(set, f, ctxs, iterations, runs, 1, &share_find);
	if (share_eval < 15 || share_eval > 35 || share_find != share_eval) {
		fprintf(stderr, "flags_eval: %.1f%% on, expected about 25%%\n", share_eval);
		goto out;
	}
	printf("flag_eval %.1f ns/call (%.1f%% on, %ld calls, median of %ld)\n", ns_eval,
	       share_eval, iterations, runs);
	printf("flagset_find+flag_eval %.1f ns/call\n", ns_find);
	rc = 0;
	goto out;

out_config:
	for (size_t k = 0; k < config_errors_count(&errs); k++) {
		const struct config_error *e = config_errors_get(&errs, k);

		if (e)
			fprintf(stderr, "flags_eval: %s: %s\n", e->path, e->message);
	}
out:
	for (i = 0; i < NCTX; i++)
		json_decref(ctxs[i]);
	flagset_free(set);
	config_flag_free(cf);
	for (i = 0; i < 3; i++)
		config_segment_free(segs[i]);
	json_decref(segdoc);
	json_decref(flagdoc);
	config_errors_release(&errs);
	return rc;

usage:
	fprintf(stderr, "usage: flags_eval [--iterations N] [--runs R (1..%d)]\n", MAX_RUNS);
	return 2;
}
