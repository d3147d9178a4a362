/* The rollout engine with a fake backend and a fake clock: transitions,
 * every control in every state, promotion, rollback, `for`, review,
 * approvals, per-target rollback, time gates, crash safety. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/source.h"
#include "api/api.h"
#include "api/rollouts.h"
#include "config/config.h"
#include "core/err.h"
#include "core/buf.h"
#include "core/jobs.h"
#include "rollout/engine.h"
#include "state/state.h"
#include "store/store.h"

#define T0 INT64_C(1714557600000) /* 2024-05-01T10:00:00Z, a Wednesday */

/* --- fake backend ------------------------------------------------------------------- */

struct series {
	char svc[16], ver[16];
	int cohort;
	struct metrics_cohort_snapshot s;
};

struct call {
	char svc[16];
	uint32_t w;
};

static struct fake {
	int64_t now;
	int previews; /* set_preview calls */
	struct call calls[512];
	int ncalls;
	bool lose;    /* accept set_weight but drop it: a crash before it took effect */
	int fail_set; /* set_weight returns this when non-zero */
	struct series series[16];
	int nseries;
	uint64_t split[2];    /* service web's split count: canary (v2), baseline (v1) */
	uint32_t flag_weight; /* the flag seam: the last weight set */
	int flag_restored;    /* ... and how often a flag was put back */
} F;

static int fake_set(void *ctx, const char *svc, const char *canary, uint32_t w, const char *actor)
{
	(void)ctx, (void)canary, (void)actor;
	if (F.fail_set)
		return F.fail_set;
	if (F.lose || F.ncalls == 512)
		return 0;
	snprintf(F.calls[F.ncalls].svc, sizeof(F.calls[0].svc), "%s", svc);
	F.calls[F.ncalls++].w = w;
	return 0;
}

static int fake_preview(void *ctx, const char *svc, const char *canary, const char *actor)
{
	(void)ctx, (void)svc, (void)canary, (void)actor;
	F.previews++;
	return 0;
}

static struct series *series(const char *svc, const char *ver, int cohort)
{
	for (int i = 0; i < F.nseries; i++)
		if (!strcmp(F.series[i].svc, svc) && !strcmp(F.series[i].ver, ver) &&
		    F.series[i].cohort == cohort)
			return &F.series[i];
	assert_true(F.nseries < 16);
	snprintf(F.series[F.nseries].svc, sizeof(F.series[0].svc), "%s", svc);
	snprintf(F.series[F.nseries].ver, sizeof(F.series[0].ver), "%s", ver);
	F.series[F.nseries].cohort = cohort;
	return &F.series[F.nseries++];
}

static int fake_read(void *ctx, const char *svc, const char *ver, enum cohort c,
                     struct metrics_cohort_snapshot *out)
{
	(void)ctx;
	*out = series(svc, ver, c)->s;
	return 0;
}

/* The split guard's counts (service web only): requests, exact. */
static void fake_split_reset(void *ctx, const char *svc, const char *ver)
{
	(void)ctx;
	if (!strcmp(svc, "web"))
		F.split[!strcmp(ver, "v2") ? 0 : 1] = 0;
}

static int fake_split_read(void *ctx, const char *svc, const char *ver, enum cohort c,
                           struct metrics_split_snapshot *out)
{
	(void)ctx, (void)ver;
	out->requests = !strcmp(svc, "web") ? F.split[c == COHORT_CANARY ? 0 : 1] : 0;
	out->keys = (double)out->requests;
	return 0;
}

static int64_t fake_now(void *ctx)
{
	(void)ctx;
	return F.now;
}

/* Adds req requests with err errors (10 ms each) to a cohort. */
static void add(const char *svc, const char *ver, int cohort, uint64_t req, uint64_t err)
{
	struct metrics_cohort_snapshot *s = &series(svc, ver, cohort)->s;

	s->requests += req;
	s->errors += err;
	s->by_class[5] += err;
	s->by_class[2] += req - err;
	s->hist.counts[hist_index(10000)] += req;
	s->hist.n += req;
	s->hist.sum_us += req * 10000;
}

/* Service "web" has v1 (stable) and v2; "api" a1/a2; "pay" p1/p2. */
static void traffic(const char *svc, uint64_t creq, uint64_t cerr, uint64_t breq, uint64_t berr)
{
	char stable[4] = {svc[0], '1', 0}, canary[4] = {svc[0], '2', 0};

	if (!strcmp(svc, "web"))
		stable[0] = canary[0] = 'v';
	add(svc, canary, COHORT_CANARY, creq, cerr);
	add(svc, stable, COHORT_BASELINE, breq, berr);
}

/* --- fixtures ----------------------------------------------------------------------- */

static const char *common =
    "admin:\n"
    "  tokens:\n"
    "    - {name: ops, secret: s1, scopes: [admin]}\n"
    "    - {name: alice, secret: s2, scopes: [approve]}\n"
    "    - {name: bob, secret: s3, scopes: [approve]}\n"
    "    - {name: carol, secret: s4, scopes: [approve]}\n"
    "    - {name: mallory, secret: s5, scopes: [approve]}\n"
    "services:\n"
    "  web: {versions: {v1: {endpoints: [127.0.0.1:7001]}, v2: {endpoints: [127.0.0.1:7002]}}, "
    "stable: v1}\n"
    "  api: {versions: {a1: {endpoints: [127.0.0.1:7003]}, a2: {endpoints: [127.0.0.1:7004]}}, "
    "stable: a1}\n"
    "  pay: {versions: {p1: {endpoints: [127.0.0.1:7005]}, p2: {endpoints: [127.0.0.1:7006]}}, "
    "stable: p1, overrides: [{match: {header: {x-canary: always}}, cohort: canary}]}\n"
    "rollouts:\n";

struct env {
	struct config *cfg;
	struct store *st;
	struct state *state;
	struct rollout_engine *e;
	struct rollout_backend be;
};

static void env_open(struct env *v, const char *rollouts)
{
	struct config_errors errs;
	char yaml[8192];
	int n;

	memset(&F, 0, sizeof(F));
	F.now = T0;
	memset(v, 0, sizeof(*v));
	n = snprintf(yaml, sizeof(yaml), "%s%s", common, rollouts);
	assert_true(n > 0 && (size_t)n < sizeof(yaml));
	config_errors_init(&errs);
	v->cfg = config_load_string("t.yaml", yaml, (size_t)n, &errs);
	if (!v->cfg)
		config_errors_print(&errs, stderr);
	assert_non_null(v->cfg);
	config_errors_release(&errs);
	v->st = store_open("sqlite::memory:", NULL, 0);
	assert_non_null(v->st);
	v->state = state_new(v->st);
	assert_non_null(v->state);
	v->be = (struct rollout_backend){.set_weight = fake_set,
	                                 .set_preview = fake_preview,
	                                 .read_cohort = fake_read,
	                                 .now_ms = fake_now,
	                                 .state = v->state};
	v->e = rollout_engine_new(v->cfg, &v->be);
	assert_non_null(v->e);
	assert_int_equal(rollout_engine_load(v->e, F.now), 0);
}

/* Drops the engine and loads a new one from the same store: a restart. */
static void env_restart(struct env *v)
{
	rollout_engine_free(v->e);
	v->e = rollout_engine_new(v->cfg, &v->be);
	assert_non_null(v->e);
	assert_int_equal(rollout_engine_load(v->e, F.now), 0);
}

static void env_close(struct env *v)
{
	rollout_engine_free(v->e);
	state_free(v->state);
	store_close(v->st);
	config_free(v->cfg);
}

static int ctl(struct env *v, const char *name, enum rollout_control c, const char *actor)
{
	char msg[256];

	return rollout_engine_control(v->e, name, c, actor, F.now, msg, sizeof(msg));
}

/* Advances the clock by seconds, one second per tick, with traffic on svc. */
static void drive(struct env *v, int seconds, const char *svc, uint64_t creq, uint64_t cerr)
{
	for (int i = 0; i < seconds; i++) {
		if (svc)
			traffic(svc, creq, cerr, creq, creq / 200);
		F.now += 1000;
		rollout_engine_tick(v->e, F.now);
	}
}

/* Number of events of kind for rollout name; *last gets a copy of the last one. */
static int events(struct env *v, const char *name, const char *kind, json_t **last)
{
	char subject[128];
	json_t *arr, *x;
	size_t i;
	int n = 0;

	snprintf(subject, sizeof(subject), "rollout/%s", name);
	assert_int_equal(store_events_list(v->st, 0, 1000, subject, &arr), 0);
	if (last)
		*last = NULL;
	json_array_foreach(arr, i, x)
	{
		if (strcmp(json_string_value(json_object_get(x, "kind")), kind) != 0)
			continue;
		n++;
		if (last) {
			json_decref(*last);
			*last = json_deep_copy(json_object_get(x, "details"));
		}
	}
	json_decref(arr);
	return n;
}

static uint32_t last_weight(const char *svc)
{
	for (int i = F.ncalls - 1; i >= 0; i--)
		if (!strcmp(F.calls[i].svc, svc))
			return F.calls[i].w;
	return UINT32_MAX;
}

static const char *healthy_yaml = "  web-v2:\n"
                                  "    target: {service: web, canary: v2}\n"
                                  "    steps:\n"
                                  "      - weight: 1\n"
                                  "      - analysis: {for: 5m}\n"
                                  "      - {weight: 5, for: 20s}\n"
                                  "      - {weight: 25, for: 20s}\n"
                                  "      - {weight: 50, for: 20s}\n"
                                  "      - weight: 100\n"
                                  "    analysis:\n"
                                  "      interval: 10s\n"
                                  "      checks:\n"
                                  "        - {name: errors, metric: error_rate, max: 0.03}\n";

/* --- tests -------------------------------------------------------------------------- */

/* Every traffic step's rollout.step.passed carries a conclusive pass of check `check`. */
static void assert_steps_passed_with_evidence(struct env *v, const char *name, const char *check,
                                              int want)
{
	char subject[128];
	json_t *arr, *x;
	size_t i;
	int n = 0;

	snprintf(subject, sizeof(subject), "rollout/%s", name);
	assert_int_equal(store_events_list(v->st, 0, 1000, subject, &arr), 0);
	json_array_foreach(arr, i, x)
	{
		json_t *d = json_object_get(x, "details"), *evd = json_object_get(d, "evidence");
		json_t *c = json_object_get(json_object_get(evd, "checks"), check);

		if (strcmp(json_string_value(json_object_get(x, "kind")), "rollout.step.passed") ||
		    strcmp(json_string_value(json_object_get(d, "kind")), "set"))
			continue;
		n++;
		assert_true(json_is_true(json_object_get(evd, "required")));
		assert_true(json_is_true(json_object_get(evd, "ready")));
		assert_true(json_is_true(json_object_get(c, "passed")));
		assert_string_equal(json_string_value(json_object_get(c, "outcome")), "pass");
		assert_true(json_integer_value(json_object_get(c, "canary_requests")) >=
		            json_integer_value(json_object_get(c, "min_samples")));
		assert_true(json_integer_value(
		                json_object_get(json_object_get(evd, "intervals"), "passed")) >= 1);
		assert_int_equal(json_integer_value(
		                     json_object_get(json_object_get(evd, "intervals"), "failed")),
		                 0);
	}
	json_decref(arr);
	assert_int_equal(n, want);
}

static void test_healthy_promotion(void **state)
{
	struct env v;
	const uint32_t want[] = {1000, 5000, 25000, 50000, 100000};
	json_t *d;

	(void)state;
	env_open(&v, healthy_yaml);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_IDLE);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	/* a weight step with checks does not pass at once, even without `for` */
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 0);
	assert_string_equal(rollout_engine_owner(v.e, "web"), "web-v2");
	drive(&v, 9, "web", 100, 0);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 0);
	drive(&v, 1, "web", 100, 0); /* the first interval: 1000 requests pass max 0.03 */
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 1);
	drive(&v, 190, "web", 100, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_COMPLETED);
	assert_int_equal(F.ncalls, 5);
	for (int i = 0; i < 5; i++)
		assert_int_equal(F.calls[i].w, want[i]);
	assert_null(rollout_engine_owner(v.e, "web"));
	assert_int_equal(events(&v, "web-v2", "rollout.step", NULL), 6);
	assert_int_equal(events(&v, "web-v2", "rollout.completed", NULL), 1);
	assert_true(events(&v, "web-v2", "verdict", &d) >= 2);
	assert_string_equal(json_string_value(json_object_get(d, "outcome")), "pass");
	json_decref(d);
	assert_steps_passed_with_evidence(&v, "web-v2", "errors", 5);
	env_close(&v);
}

static const char *evidence_yaml = "  web-v2:\n"
                                   "    target: {service: web, canary: v2}\n"
                                   "    steps: [{weight: 1, for: 1m}, {weight: 100}]\n"
                                   "    analysis:\n"
                                   "      interval: 10s\n"
                                   "      checks: [{name: errors, metric: error_rate, max: "
                                   "0.03}]\n";

static void test_no_traffic_never_promotes(void **state)
{
	struct env v;
	json_t *d;

	(void)state;
	env_open(&v, evidence_yaml);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	drive(&v, 60, NULL, 0, 0); /* for elapsed, no evidence: it keeps running */
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 0);
	d = rollout_engine_json(v.e, "web-v2");
	assert_non_null(
	    strstr(json_string_value(json_object_get(json_object_get(d, "step"), "waiting_for")),
	           "waiting for evidence: errors 0/200 canary requests; max_wait in 3m"));
	json_decref(d);
	drive(&v, 179, NULL, 0, 0); /* max_wait = 4 x for = 4m */
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	drive(&v, 1, NULL, 0, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PAUSED);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 0);
	assert_int_equal(last_weight("web"), 1000);
	assert_int_equal(events(&v, "web-v2", "rollout.paused", &d), 1);
	assert_string_equal(
	    json_string_value(json_object_get(d, "reason")),
	    "not enough evidence: check errors has 0 of 200 requests on the canary");
	assert_string_equal(json_string_value(json_object_get(d, "cause")), "evidence");
	json_decref(d);
	assert_int_equal(events(&v, "web-v2", "rollout.step.passed", NULL), 0);
	/* resume waits again (max_wait restarts); load then earns the pass */
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_RESUME, "ops"), 0);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 0);
	drive(&v, 239, NULL, 0, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	drive(&v, 1, NULL, 0, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PAUSED);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_RESUME, "ops"), 0);
	drive(&v, 10, "web", 100, 0);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 1);
	assert_int_equal(events(&v, "web-v2", "rollout.step.passed", &d), 1);
	assert_string_equal(json_string_value(json_object_get(d, "how")), "done");
	json_decref(d);
	env_close(&v);

	/* promote force-passes the gate, audited */
	env_open(&v, evidence_yaml);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	drive(&v, 240, NULL, 0, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PAUSED);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_PROMOTE, "ops"), 0);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 1);
	assert_int_equal(events(&v, "web-v2", "rollout.promoted", NULL), 1);
	assert_int_equal(events(&v, "web-v2", "rollout.step.passed", &d), 1);
	assert_string_equal(json_string_value(json_object_get(d, "how")), "promoted");
	assert_false(json_is_true(json_object_get(json_object_get(d, "evidence"), "ready")));
	json_decref(d);
	env_close(&v);
}

static void test_load_stops_mid_step(void **state)
{
	struct env v;
	json_t *d;

	(void)state;
	env_open(&v, evidence_yaml);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	drive(&v, 15, "web", 10, 0); /* 150 requests, then nothing */
	drive(&v, 224, NULL, 0, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 0);
	drive(&v, 1, NULL, 0, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PAUSED);
	assert_int_equal(events(&v, "web-v2", "rollout.paused", &d), 1);
	/* the counts are the step's sum, not the last interval's */
	assert_string_equal(json_string_value(json_object_get(d, "reason")),
	                    "not enough evidence: check errors has 150 of 200 requests on the "
	                    "canary");
	json_decref(d);
	env_close(&v);
}

/* A canary answering 20% errors at 1% with little traffic: never promoted. */
static void test_bad_canary_low_traffic_never_promoted(void **state)
{
	struct env v;
	json_t *d;

	(void)state;
	env_open(&v, "  web-v2:\n"
	             "    target: {service: web, canary: v2}\n"
	             "    steps: [{weight: 1, for: 30s}, {weight: 100}]\n"
	             "    analysis:\n"
	             "      interval: 10s\n"
	             "      checks: [{name: errors, metric: error_rate, max: 0.03, on_fail: "
	             "pause, review: 10m}]\n");
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	for (int i = 0; i < 200; i++) {
		/* 5 canary requests per 10 s interval, one in five an error */
		if (i % 2 == 0)
			traffic("web", 1, i % 10 == 0, 50, 0);
		F.now += 1000;
		rollout_engine_tick(v.e, F.now);
		assert_int_equal(rollout_engine_step(v.e, "web-v2"), 0);
		assert_int_equal(last_weight("web"), 1000);
	}
	/* 100 canary requests in 200 s: inconclusive all along, so it paused at max_wait */
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PAUSED);
	assert_int_equal(events(&v, "web-v2", "rollout.step.passed", NULL), 0);
	assert_int_equal(events(&v, "web-v2", "rollout.paused", &d), 1);
	assert_string_equal(
	    json_string_value(json_object_get(d, "reason")),
	    "not enough evidence: check errors has 60 of 200 requests on the canary");
	/* the waiting check's review applies: nobody resumes -> rollback */
	assert_int_equal(json_integer_value(json_object_get(d, "review_deadline")),
	                 T0 + 120000 + 600000);
	json_decref(d);
	env_close(&v);
}

static void test_require_evidence_false(void **state)
{
	struct env v;
	json_t *d;

	(void)state;
	/* on the step: it passes when its time is up, as before */
	env_open(&v, "  web-v2:\n"
	             "    target: {service: web, canary: v2}\n"
	             "    steps: [{weight: 1, for: 30s, require_evidence: false}, {weight: 100}]\n"
	             "    analysis:\n"
	             "      interval: 10s\n"
	             "      checks: [{name: errors, metric: error_rate, max: 0.03}]\n");
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	drive(&v, 29, NULL, 0, 0);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 0);
	drive(&v, 1, NULL, 0, 0);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 1);
	assert_int_equal(events(&v, "web-v2", "rollout.step.passed", &d), 1);
	assert_false(json_is_true(json_object_get(json_object_get(d, "evidence"), "required")));
	json_decref(d);
	/* the next step requires evidence again */
	drive(&v, 60, NULL, 0, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 1);
	env_close(&v);

	/* on the check: no step waits for it */
	env_open(&v, "  web-v2:\n"
	             "    target: {service: web, canary: v2}\n"
	             "    steps: [{weight: 1, for: 30s}, {weight: 100}]\n"
	             "    analysis:\n"
	             "      interval: 10s\n"
	             "      checks: [{name: errors, metric: error_rate, max: 0.03, "
	             "require_evidence: false}]\n");
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	drive(&v, 30, NULL, 0, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_COMPLETED);
	env_close(&v);
}

/*
 * A sample-ratio mismatch makes the step's comparison invalid: the evidence
 * gathered before it (even a pass in the same interval) does not survive, so
 * a resume waits for a pass on fresh data instead of promoting at once.
 */
static void test_srm_resume_needs_fresh_evidence(void **state)
{
	struct env v;

	(void)state;
	env_open(&v, "  web-v2:\n"
	             "    target: {service: web, canary: v2}\n"
	             "    steps: [{weight: 10, for: 30s}, {weight: 100}]\n"
	             "    analysis:\n"
	             "      interval: 10s\n"
	             "      checks: [{name: errors, metric: error_rate, max: 0.03}]\n");
	v.be.split_reset = fake_split_reset;
	v.be.read_split = fake_split_read;
	env_restart(&v);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	for (int i = 0; i < 10; i++) { /* healthy, but the canary gets 3 units for 2 */
		F.split[0] += 150, F.split[1] += 100;
		drive(&v, 1, "web", 100, 0);
	}
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PAUSED);
	assert_int_equal(events(&v, "web-v2", "rollout.srm", NULL), 1);
	drive(&v, 30, NULL, 0, 0); /* the step's for runs out while paused */
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_RESUME, "ops"), 0);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 0);
	assert_int_equal(events(&v, "web-v2", "rollout.step.passed", NULL), 0);
	for (int i = 0; i < 10; i++) { /* equal slices again: a fresh pass */
		F.split[0] += 100, F.split[1] += 100;
		drive(&v, 1, "web", 100, 0);
	}
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 1);
	assert_int_equal(events(&v, "web-v2", "rollout.srm", NULL), 1);
	assert_steps_passed_with_evidence(&v, "web-v2", "errors", 1);
	env_close(&v);
}

/*
 * A run persisted before evidence gating has no evidence_from: after the
 * upgrade its max_wait counts from the step's start, it does not pause the
 * moment the step's for ends.
 */
static void test_old_document_counts_max_wait_from_the_step(void **state)
{
	struct env v;
	json_t *doc;
	char *text;

	(void)state;
	env_open(&v, evidence_yaml);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	drive(&v, 30, NULL, 0, 0);
	assert_int_equal(store_doc_get(v.st, "rollout", "web-v2", &text, NULL), 0);
	doc = json_loads(text, 0, NULL);
	free(text);
	assert_non_null(doc);
	assert_int_equal(json_object_del(doc, "evidence_from"), 0);
	text = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	assert_int_equal(store_doc_put(v.st, "rollout", "web-v2", text, STORE_REV_ANY, NULL), 0);
	free(text);
	env_restart(&v);
	drive(&v, 60, NULL, 0, 0); /* for has ended; max_wait (4m) has not */
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	drive(&v, 150, NULL, 0, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PAUSED);
	env_close(&v);
}

/* The step's request counts survive a restart: what came after adds to them. */
static void test_step_counts_survive_a_restart(void **state)
{
	struct env v;
	json_t *d, *c, *t;

	(void)state;
	env_open(&v, evidence_yaml);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	drive(&v, 20, "web", 10, 0); /* 200 canary requests: evidence earned */
	env_restart(&v);
	drive(&v, 20, "web", 10, 0); /* 200 more, counted from the reading at load */
	d = rollout_engine_json(v.e, "web-v2");
	c = json_object_get(
	    json_object_get(json_object_get(json_object_get(d, "step"), "evidence"), "checks"),
	    "errors");
	t = json_object_get(
	    json_object_get(json_object_get(json_object_get(d, "step"), "evidence"), "targets"),
	    "web");
	assert_true(json_is_true(json_object_get(c, "passed")));
	assert_int_equal(json_integer_value(json_object_get(c, "canary_requests")), 200);
	assert_int_equal(json_integer_value(json_object_get(t, "canary_requests")), 400);
	json_decref(d);
	env_close(&v);
}

static void test_bad_canary_rolls_back(void **state)
{
	struct env v;
	json_t *d;

	(void)state;
	env_open(&v, healthy_yaml);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	drive(&v, 9, "web", 100, 5);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	drive(&v, 1, "web", 100, 5); /* first interval ends: 5% > 3% */
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_ROLLED_BACK);
	assert_int_equal(last_weight("web"), 0);
	assert_int_equal(events(&v, "web-v2", "rollout.rollback", &d), 1);
	assert_non_null(strstr(json_string_value(json_object_get(d, "reason")),
	                       "error_rate 0.05 on the canary is above max 0.03"));
	assert_int_equal(json_integer_value(json_object_get(d, "decision_ms")), T0 + 10000);
	assert_int_equal(json_integer_value(json_object_get(d, "time_to_detect_ms")), 10000);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(d, "verdict"), "outcome")), "fail");
	json_decref(d);
	assert_int_equal(events(&v, "web-v2", "rollout.mitigated", NULL), 1);
	assert_null(rollout_engine_owner(v.e, "web"));
	/* Nothing moves after a rollback. */
	drive(&v, 60, "web", 100, 0);
	assert_int_equal(last_weight("web"), 0);
	env_close(&v);
}

static void test_min_samples_never_pass(void **state)
{
	struct env v;
	json_t *d;

	(void)state;
	env_open(&v, "  web-v2:\n"
	             "    target: {service: web, canary: v2}\n"
	             "    steps: [{weight: 1}, {analysis: {for: 1m}}, {weight: 100}]\n"
	             "    analysis:\n"
	             "      interval: 10s\n"
	             "      checks: [{name: errors, metric: error_rate, max: 0.03}]\n");
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	/* the weight step accumulates: 4 intervals of 50 requests make its 200 */
	drive(&v, 39, "web", 5, 0);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 0);
	drive(&v, 1, "web", 5, 0);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 1);
	drive(&v, 59, "web", 5, 0); /* 50 requests per interval < 200 */
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 1);
	assert_true(events(&v, "web-v2", "verdict", &d) >= 4);
	assert_string_equal(json_string_value(json_object_get(d, "outcome")), "inconclusive");
	json_decref(d);
	drive(&v, 2, "web", 5, 0); /* `for` ends inconclusive: pause */
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PAUSED);
	assert_int_equal(last_weight("web"), 1000);
	/* Resume restarts the hold; with traffic it now passes. */
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_RESUME, "ops"), 0);
	drive(&v, 30, "web", 100, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_COMPLETED);
	env_close(&v);
}

/* One interval of 10 s with a failing (5%) or passing canary. */
static void interval(struct env *v, bool fail)
{
	drive(v, 10, "web", 100, fail ? 5 : 0);
}

static void test_for_is_consecutive(void **state)
{
	struct env v;
	json_t *d;

	(void)state;
	env_open(&v, "  web-v2:\n"
	             "    target: {service: web, canary: v2}\n"
	             "    steps: [{weight: 10}, {pause: {}}]\n"
	             "    analysis:\n"
	             "      interval: 10s\n"
	             "      checks: [{name: errors, metric: error_rate, max: 0.03, for: 30s}]\n");
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	interval(&v, true);
	interval(&v, true);
	interval(&v, false); /* resets */
	interval(&v, true);
	interval(&v, true);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	interval(&v, true); /* third consecutive: 30 s */
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_ROLLED_BACK);
	assert_int_equal(events(&v, "web-v2", "rollout.rollback", &d), 1);
	/* Detect measured from the start of the first failing interval of the streak. */
	assert_int_equal(json_integer_value(json_object_get(d, "time_to_detect_ms")), 30000);
	json_decref(d);
	env_close(&v);
}

static void test_pause_review_rolls_back(void **state)
{
	struct env v;
	json_t *d;

	(void)state;
	env_open(&v, "  web-v2:\n"
	             "    target: {service: web, canary: v2}\n"
	             "    steps: [{weight: 10}, {pause: {}}]\n"
	             "    analysis:\n"
	             "      interval: 10s\n"
	             "      checks: [{name: errors, metric: error_rate, max: 0.03, on_fail: pause, "
	             "review: 1m}]\n");
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	interval(&v, true);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PAUSED);
	assert_int_equal(events(&v, "web-v2", "rollout.paused", NULL), 1);
	assert_int_equal(last_weight("web"), 10000);
	drive(&v, 59, "web", 100, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PAUSED);
	drive(&v, 1, "web", 100, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_ROLLED_BACK);
	assert_int_equal(last_weight("web"), 0);
	assert_int_equal(events(&v, "web-v2", "rollout.rollback", &d), 1);
	assert_non_null(strstr(json_string_value(json_object_get(d, "reason")), "review window"));
	json_decref(d);
	env_close(&v);

	/* A resume within the review window cancels it. */
	env_open(&v, "  web-v2:\n"
	             "    target: {service: web, canary: v2}\n"
	             "    steps: [{weight: 10}, {pause: {}}]\n"
	             "    analysis:\n"
	             "      interval: 10s\n"
	             "      checks: [{name: errors, metric: error_rate, max: 0.03, on_fail: pause, "
	             "review: 1m}]\n");
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	interval(&v, true);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PAUSED);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_RESUME, "ops"), 0);
	drive(&v, 120, "web", 100, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	env_close(&v);
}

static void test_approvals(void **state)
{
	struct env v;

	(void)state;
	env_open(&v, "  web-v2:\n"
	             "    target: {service: web, canary: v2}\n"
	             "    steps:\n"
	             "      - weight: 1\n"
	             "      - approval: {required: [alice, bob, carol]}\n"
	             "      - weight: 100\n");
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_APPROVE, "alice"), ERR_STATE); /* idle */
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 1);
	assert_int_equal(events(&v, "web-v2", "rollout.approval_needed", NULL), 1);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_APPROVE, "mallory"), ERR_FORBIDDEN);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_APPROVE, "alice"), 0);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_APPROVE, "alice"), 0); /* idempotent */
	assert_int_equal(events(&v, "web-v2", "rollout.approved", NULL), 1);
	drive(&v, 5, NULL, 0, 0);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 1);
	env_restart(&v); /* approvals survive a restart */
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_APPROVE, "bob"), 0);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 1);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_APPROVE, "carol"), 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_COMPLETED);
	assert_int_equal(events(&v, "web-v2", "rollout.approved", NULL), 3);
	assert_int_equal(last_weight("web"), 100000);
	env_close(&v);
}

static void test_per_target_rollback(void **state)
{
	struct env v;

	(void)state;
	env_open(&v,
	         "  two:\n"
	         "    targets:\n"
	         "      t-web: {service: web, canary: v2}\n"
	         "      t-api: {service: api, canary: a2}\n"
	         "    steps:\n"
	         "      - set: {t-web: 10, t-api: 10}\n"
	         "      - pause: {}\n"
	         "      - set: {t-web: 100, t-api: 100}\n"
	         "    analysis:\n"
	         "      interval: 10s\n"
	         "      checks:\n"
	         "        - {name: api-errors, metric: error_rate, max: 0.03, target: t-api}\n");
	assert_int_equal(ctl(&v, "two", ROLLOUT_START, "ops"), 0);
	assert_int_equal(last_weight("web"), 10000);
	assert_int_equal(last_weight("api"), 10000);
	for (int i = 0; i < 10; i++) {
		traffic("web", 100, 0, 100, 0);
		traffic("api", 100, 10, 100, 0);
		F.now += 1000;
		rollout_engine_tick(v.e, F.now);
	}
	assert_int_equal(last_weight("api"), 0);
	assert_int_equal(last_weight("web"), 10000);
	assert_int_equal(rollout_engine_state(v.e, "two"), ROLLOUT_PROGRESSING);
	assert_string_equal(rollout_engine_owner(v.e, "web"), "two");
	assert_null(rollout_engine_owner(v.e, "api"));
	assert_int_equal(ctl(&v, "two", ROLLOUT_PROMOTE, "ops"), 0);
	assert_int_equal(rollout_engine_state(v.e, "two"), ROLLOUT_COMPLETED);
	assert_int_equal(last_weight("web"), 100000);
	assert_int_equal(last_weight("api"), 0); /* a rolled-back target stays at 0 */
	env_close(&v);
}

static int64_t at(const char *rfc3339)
{
	int64_t s;

	assert_int_equal(config_parse_rfc3339(rfc3339, &s), 0);
	return s * 1000;
}

static void test_gate_arithmetic(void **state)
{
	struct config_not_before nb = {0};
	struct config_window w = {0};
	int64_t wed10 = at("2024-05-01T10:00:00Z");

	(void)state;
	assert_int_equal(rollout_gate_time(&nb, &w, wed10, wed10), wed10);
	nb.kind = CONFIG_NOT_BEFORE_TIME_OF_DAY;
	assert_int_equal(config_parse_time_of_day("06:00Z", &nb.minute_of_day), 0);
	assert_int_equal(rollout_gate_time(&nb, &w, wed10, wed10), at("2024-05-02T06:00:00Z"));
	assert_int_equal(config_parse_time_of_day("12:30Z", &nb.minute_of_day), 0);
	assert_int_equal(rollout_gate_time(&nb, &w, wed10, wed10), at("2024-05-01T12:30:00Z"));
	/* "the next such time" is fixed when the step starts waiting. */
	assert_int_equal(rollout_gate_time(&nb, &w, wed10, at("2024-05-01T13:00:00Z")),
	                 at("2024-05-01T13:00:00Z"));
	nb.kind = CONFIG_NOT_BEFORE_INSTANT;
	nb.epoch_s = at("2024-06-01T00:00:00Z") / 1000;
	assert_int_equal(rollout_gate_time(&nb, &w, wed10, wed10), at("2024-06-01T00:00:00Z"));
	nb.kind = CONFIG_NOT_BEFORE_NONE;

	assert_int_equal(config_parse_window("Mon-Fri 06:00-18:00Z", &w), 0);
	assert_int_equal(rollout_gate_time(&nb, &w, wed10, wed10), wed10);
	assert_int_equal(rollout_gate_time(&nb, &w, 0, at("2024-05-01T18:00:00Z")),
	                 at("2024-05-02T06:00:00Z"));
	assert_int_equal(rollout_gate_time(&nb, &w, 0, at("2024-05-04T10:00:00Z")), /* Sat */
	                 at("2024-05-06T06:00:00Z"));
	assert_int_equal(config_parse_window("Sat,Sun 22:00-02:00Z", &w), 0);
	assert_int_equal(rollout_gate_time(&nb, &w, 0, at("2024-05-06T01:00:00Z")), /* Mon 01h */
	                 at("2024-05-06T01:00:00Z"));
	assert_int_equal(rollout_gate_time(&nb, &w, 0, at("2024-05-06T02:00:00Z")),
	                 at("2024-05-11T22:00:00Z"));
	assert_int_equal(rollout_gate_time(&nb, &w, 0, at("2024-05-03T23:00:00Z")), /* Fri */
	                 at("2024-05-04T22:00:00Z"));
	/* not_before and window together: after 06:00 and inside the window. */
	nb.kind = CONFIG_NOT_BEFORE_TIME_OF_DAY;
	nb.minute_of_day = 6 * 60;
	assert_int_equal(rollout_gate_time(&nb, &w, wed10, wed10), at("2024-05-04T22:00:00Z"));
}

static void test_not_before_step(void **state)
{
	struct env v;

	(void)state;
	env_open(&v, "  web-v2:\n"
	             "    target: {service: web, canary: v2}\n"
	             "    steps:\n"
	             "      - weight: 1\n"
	             "      - {weight: 5, not_before: \"12:00Z\"}\n"
	             "      - {weight: 50, window: \"Mon-Fri 13:00-14:00Z\"}\n"
	             "      - {pause: {}}\n");
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	assert_int_equal(last_weight("web"), 1000);
	F.now = at("2024-05-01T11:59:59Z");
	rollout_engine_tick(v.e, F.now);
	assert_int_equal(last_weight("web"), 1000);
	F.now = at("2024-05-01T12:00:00Z");
	rollout_engine_tick(v.e, F.now);
	assert_int_equal(last_weight("web"), 5000);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 2);
	rollout_engine_tick(v.e, at("2024-05-01T12:59:00Z"));
	assert_int_equal(last_weight("web"), 5000);
	/* promote lifts a gate */
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_PROMOTE, "ops"), 0);
	assert_int_equal(last_weight("web"), 50000);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 3);
	env_close(&v);
}

static const char *ctl_yaml = "  r:\n"
                              "    target: {service: web, canary: v2}\n"
                              "    steps: [{weight: 1, for: 1m}, {pause: {}}, {weight: 100}]\n";

/* Puts a fresh env's rollout "r" into state s. */
static void reach(struct env *v, enum rollout_state s)
{
	switch (s) {
	case ROLLOUT_IDLE:
		break;
	case ROLLOUT_PROGRESSING:
		assert_int_equal(ctl(v, "r", ROLLOUT_START, "ops"), 0);
		break;
	case ROLLOUT_PAUSED:
		assert_int_equal(ctl(v, "r", ROLLOUT_START, "ops"), 0);
		assert_int_equal(ctl(v, "r", ROLLOUT_PAUSE, "ops"), 0);
		break;
	case ROLLOUT_COMPLETED:
		assert_int_equal(ctl(v, "r", ROLLOUT_START, "ops"), 0);
		assert_int_equal(ctl(v, "r", ROLLOUT_PROMOTE_FULL, "ops"), 0);
		break;
	case ROLLOUT_ROLLED_BACK:
		assert_int_equal(ctl(v, "r", ROLLOUT_START, "ops"), 0);
		assert_int_equal(ctl(v, "r", ROLLOUT_ABORT, "ops"), 0);
		break;
	case ROLLOUT_FAILED:
		assert_int_equal(ctl(v, "r", ROLLOUT_START, "ops"), 0);
		F.fail_set = -5;
		assert_int_equal(ctl(v, "r", ROLLOUT_ABORT, "ops"), 0);
		F.fail_set = 0;
		break;
	}
	assert_int_equal(rollout_engine_state(v->e, "r"), s);
}

static void test_control_table(void **state)
{
	/* rows: states; columns: start promote full pause resume abort retry approve */
	enum { OK = 0, ST = ERR_STATE };
	static const int want[6][8] = {
	    /* idle */ {OK, ST, ST, ST, ST, ST, ST, ST},
	    /* progressing */ {ST, OK, OK, OK, ST, OK, ST, ST},
	    /* paused */ {ST, OK, OK, ST, OK, OK, ST, ST},
	    /* completed */ {ST, ST, ST, ST, ST, ST, ST, ST},
	    /* rolled_back */ {ST, ST, ST, ST, ST, ST, OK, ST},
	    /* failed */ {ST, ST, ST, ST, ST, ST, OK, ST},
	};
	static const enum rollout_state after[6][8] = {
	    {ROLLOUT_PROGRESSING, 0, 0, 0, 0, 0, 0, 0},
	    {0, ROLLOUT_PROGRESSING, ROLLOUT_COMPLETED, ROLLOUT_PAUSED, 0, ROLLOUT_ROLLED_BACK, 0,
	     0},
	    {0, ROLLOUT_PROGRESSING, ROLLOUT_COMPLETED, 0, ROLLOUT_PROGRESSING, ROLLOUT_ROLLED_BACK,
	     0, 0},
	    {0},
	    {0, 0, 0, 0, 0, 0, ROLLOUT_PROGRESSING, 0},
	    {0, 0, 0, 0, 0, 0, ROLLOUT_PROGRESSING, 0},
	};

	(void)state;
	for (int s = ROLLOUT_IDLE; s <= ROLLOUT_FAILED; s++) {
		for (int c = ROLLOUT_START; c <= ROLLOUT_APPROVE; c++) {
			struct env v;
			int code;

			env_open(&v, ctl_yaml);
			reach(&v, (enum rollout_state)s);
			code = ctl(&v, "r", (enum rollout_control)c, "ops");
			if (code != want[s][c])
				fail_msg("%s in %s: %d, want %d", rollout_control_name(c),
				         rollout_state_name(s), code, want[s][c]);
			assert_int_equal(rollout_engine_state(v.e, "r"),
			                 code == OK ? (int)after[s][c] : s);
			env_close(&v);
		}
	}
	{
		struct env v;

		env_open(&v, ctl_yaml);
		assert_int_equal(ctl(&v, "nope", ROLLOUT_START, "ops"), ERR_NOTFOUND);
		/* retry starts again from step 0 */
		reach(&v, ROLLOUT_ROLLED_BACK);
		F.ncalls = 0;
		assert_int_equal(ctl(&v, "r", ROLLOUT_RETRY, "ops"), 0);
		assert_int_equal(rollout_engine_step(v.e, "r"), 0);
		assert_int_equal(last_weight("web"), 1000);
		assert_int_equal(events(&v, "r", "rollout.retry", NULL), 1);
		env_close(&v);
	}
}

static void test_emergency_rollback_all(void **state)
{
	struct env v;

	(void)state;
	env_open(&v, "  a:\n"
	             "    target: {service: web, canary: v2}\n"
	             "    steps: [{weight: 10}, {pause: {}}]\n"
	             "  b:\n"
	             "    target: {service: api, canary: a2}\n"
	             "    steps: [{weight: 20}, {pause: {}}]\n"
	             "  c:\n"
	             "    target: {service: pay, canary: p2}\n"
	             "    steps: [{weight: 20}]\n");
	assert_int_equal(ctl(&v, "a", ROLLOUT_START, "ops"), 0);
	assert_int_equal(ctl(&v, "b", ROLLOUT_START, "ops"), 0);
	assert_int_equal(rollout_engine_rollback_all(v.e, "ops", F.now), 2);
	assert_int_equal(rollout_engine_state(v.e, "a"), ROLLOUT_ROLLED_BACK);
	assert_int_equal(rollout_engine_state(v.e, "b"), ROLLOUT_ROLLED_BACK);
	assert_int_equal(rollout_engine_state(v.e, "c"), ROLLOUT_IDLE);
	assert_int_equal(last_weight("web"), 0);
	assert_int_equal(last_weight("api"), 0);
	env_close(&v);
}

static const char *crash_yaml = "  web-v2:\n"
                                "    target: {service: web, canary: v2}\n"
                                "    steps:\n"
                                "      - {weight: 1, for: 20s}\n"
                                "      - {weight: 5, for: 20s}\n"
                                "      - pause: 30s\n"
                                "      - {weight: 25, for: 20s}\n"
                                "      - approval: {required: [alice]}\n"
                                "      - weight: 100\n"
                                "    analysis:\n"
                                "      interval: 10s\n"
                                "      checks: [{name: errors, metric: error_rate, max: 0.03, "
                                "for: 20s, min_samples: 50}]\n";

/* Runs the crash_yaml rollout to the end, restarting after every tick when asked. */
static void crash_run(bool restart, int *steps, int *nsteps, uint32_t *weights, int *nweights)
{
	struct env v;
	char subject[] = "rollout/web-v2";
	json_t *arr, *x;
	size_t i;

	env_open(&v, crash_yaml);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	for (int s = 0; s < 400 && rollout_engine_state(v.e, "web-v2") == ROLLOUT_PROGRESSING;
	     s++) {
		traffic("web", 100, 0, 100, 0);
		F.now += 1000;
		rollout_engine_tick(v.e, F.now);
		if (rollout_engine_step(v.e, "web-v2") == 4 && s % 7 == 0)
			ctl(&v, "web-v2", ROLLOUT_APPROVE, "alice");
		if (restart)
			env_restart(&v);
	}
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_COMPLETED);
	assert_int_equal(store_events_list(v.st, 0, 1000, subject, &arr), 0);
	*nsteps = 0;
	json_array_foreach(arr, i, x)
	{
		if (!strcmp(json_string_value(json_object_get(x, "kind")), "rollout.step"))
			steps[(*nsteps)++] = (int)json_integer_value(
			    json_object_get(json_object_get(x, "details"), "step"));
	}
	json_decref(arr);
	/* Distinct consecutive weights: re-applies after a restart repeat the same value. */
	*nweights = 0;
	for (int c = 0; c < F.ncalls; c++)
		if (*nweights == 0 || weights[*nweights - 1] != F.calls[c].w)
			weights[(*nweights)++] = F.calls[c].w;
	env_close(&v);
}

static void test_crash_safety(void **state)
{
	int sa[32], sb[32], na, nb, nwa, nwb;
	uint32_t wa[64], wb[64];
	struct env v;

	(void)state;
	crash_run(false, sa, &na, wa, &nwa);
	crash_run(true, sb, &nb, wb, &nwb);
	assert_int_equal(na, 6);
	assert_int_equal(nb, na);
	for (int i = 0; i < na; i++) {
		assert_int_equal(sa[i], i); /* no step skipped or repeated */
		assert_int_equal(sb[i], i);
	}
	assert_int_equal(nwa, 4);
	assert_int_equal(nwb, nwa);
	for (int i = 0; i < nwa; i++)
		assert_int_equal(wb[i], wa[i]);

	/* A crash after the step was persisted but before its weight took effect. */
	env_open(&v, crash_yaml);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	drive(&v, 19, "web", 100, 0);
	F.lose = true;
	drive(&v, 1, "web", 100, 0); /* step 1 (5%) persisted, set_weight lost */
	F.lose = false;
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 1);
	assert_int_equal(last_weight("web"), 1000);
	env_restart(&v);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 1);
	assert_int_equal(last_weight("web"), 5000); /* re-applied on load */
	assert_int_equal(events(&v, "web-v2", "rollout.step", NULL), 2);
	/* Timers continue from persisted times: 20 s hold from the step start. */
	drive(&v, 19, "web", 100, 0);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 1);
	drive(&v, 1, "web", 100, 0);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 2);
	env_close(&v);
}

static void test_owner_conflict_and_view(void **state)
{
	struct env v;
	json_t *j;

	(void)state;
	env_open(&v, healthy_yaml);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	j = rollout_engine_json(v.e, "web-v2");
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "state")), "progressing");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "step"), "of")), 6);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "step"), "kind")),
	                    "set");
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(j, "step"), "waiting_for")),
	    "waiting for evidence: errors no data yet; max_wait in 1h0m");
	assert_true(json_is_true(
	    json_object_get(json_object_get(json_object_get(j, "step"), "evidence"), "required")));
	json_decref(j);
	assert_null(rollout_engine_json(v.e, "nope"));
	j = rollout_engine_list_json(v.e);
	assert_int_equal(json_array_size(j), 1);
	json_decref(j);
	env_close(&v);
}

static int call(struct api *api, const char *method, const char *path, const char *token,
                const char *body, json_t **out)
{
	struct api_request req;
	struct api_response resp;
	char auth[64];
	int status;

	memset(&req, 0, sizeof(req));
	snprintf(auth, sizeof(auth), "Bearer %s", token);
	req.method = str_c(method);
	req.path = str_c(path);
	req.authorization = str_c(auth);
	req.body = str_c(body ? body : "");
	api_response_init(&resp);
	api_handle(api, &req, &resp);
	status = resp.status;
	if (out)
		*out = json_loadb(resp.body.data, resp.body.len, 0, NULL);
	api_response_release(&resp);
	return status;
}

static void test_api(void **state)
{
	static const struct auth_token tokens[] = {
	    {"ops", "s1", SCOPE_ADMIN},
	    {"alice", "s2", SCOPE_APPROVE},
	    {"viewer", "s6", SCOPE_READ},
	};
	struct api api;
	struct env v;
	json_t *j;

	(void)state;
	env_open(&v, "  web-v2:\n"
	             "    target: {service: web, canary: v2}\n"
	             "    steps:\n"
	             "      - weight: 1\n"
	             "      - approval: {required: [alice]}\n"
	             "      - weight: 50\n"
	             "      - pause: {}\n"
	             "      - weight: 100\n"
	             "    analysis:\n"
	             "      interval: 10s\n"
	             "      checks: [{name: errors, metric: error_rate, max: 0.03}]\n");
	api_init(&api);
	api.store = v.st;
	api.tokens = tokens;
	api.ntokens = 3;
	assert_int_equal(api_rollouts_init(&api, v.e), 0);

	assert_int_equal(call(&api, "GET", "/v1/rollouts", "s6", NULL, &j), 200);
	assert_int_equal(json_array_size(json_object_get(j, "rollouts")), 1);
	json_decref(j);
	assert_int_equal(call(&api, "GET", "/v1/rollouts/nope", "s6", NULL, NULL), 404);
	assert_int_equal(call(&api, "POST", "/v1/rollouts/web-v2/start", "s6", NULL, NULL), 403);
	assert_int_equal(call(&api, "POST", "/v1/rollouts/web-v2/start", "s1", NULL, &j), 200);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(j, "rollout"), "state")),
	    "progressing");
	json_decref(j);
	drive(&v, 10, "web", 100, 0); /* step 0's evidence; then the approval */
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 1);
	assert_int_equal(call(&api, "POST", "/v1/rollouts/web-v2/start", "s1", NULL, &j), 409);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
	                    "conflict");
	json_decref(j);
	/* alice has approve but not rollouts:write */
	assert_int_equal(call(&api, "POST", "/v1/rollouts/web-v2/pause", "s2", NULL, NULL), 403);
	assert_int_equal(call(&api, "POST", "/v1/rollouts/web-v2/approve", "s1", NULL, NULL), 403);
	assert_int_equal(call(&api, "POST", "/v1/rollouts/web-v2/approve", "s2", "", NULL), 200);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 2); /* weight 50 waits for evidence */
	drive(&v, 10, "web", 100, 0);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 3);
	assert_int_equal(call(&api, "POST", "/v1/rollouts/web-v2/promote", "s1", "{\"x\":1}", NULL),
	                 422);
	assert_int_equal(
	    call(&api, "POST", "/v1/rollouts/web-v2/promote", "s1", "{\"full\":true}", NULL), 200);
	assert_int_equal(last_weight("web"), 100000);
	assert_int_equal(call(&api, "GET", "/v1/rollouts/web-v2", "s6", NULL, &j), 200);
	assert_string_equal(json_string_value(json_object_get(j, "state")), "completed");
	json_decref(j);
	assert_int_equal(call(&api, "GET", "/v1/rollouts/web-v2/events", "s6", NULL, &j), 200);
	assert_true(json_array_size(json_object_get(j, "events")) >= 5);
	json_decref(j);
	assert_int_equal(call(&api, "GET", "/v1/rollouts/web-v2/analysis", "s6", NULL, &j), 200);
	assert_non_null(json_object_get(j, "verdicts"));
	assert_int_equal(json_array_size(json_object_get(j, "checks")), 1);
	json_decref(j);
	assert_int_equal(call(&api, "POST", "/v1/rollouts/web-v2/retry", "s1", NULL, NULL), 409);
	assert_int_equal(call(&api, "POST", "/v1/rollback", "s1", NULL, &j), 200);
	assert_int_equal(json_integer_value(json_object_get(j, "rolled_back")), 0);
	json_decref(j);
	env_close(&v);
}

/* --- hooks, pipeline, bake ---------------------------------------------------------- */

static struct hooks_fake {
	int started, polls;
	char argv0[8][128];
	char body[512];
	int pending; /* polls answered "running" before the result */
	enum job_status status;
	int stable_calls;
	char stable[16];
} H;

static uint64_t fake_hook_start(void *ctx, const struct config_hook *h, const char *const *argv,
                                const char *body)
{
	(void)ctx;
	if (argv)
		snprintf(H.argv0[H.started % 8], sizeof(H.argv0[0]), "%s %s", argv[0],
		         argv[1] ? argv[1] : "");
	else
		snprintf(H.body, sizeof(H.body), "%s", body);
	(void)h;
	return (uint64_t)++H.started;
}

static int fake_hook_poll(void *ctx, uint64_t id, struct job_result *out)
{
	(void)ctx, (void)id;
	H.polls++;
	if (H.pending > 0) {
		H.pending--;
		return 1;
	}
	memset(out, 0, sizeof(*out));
	out->status = H.status;
	out->exit_code = H.status == JOB_OK ? 0 : 2;
	snprintf(out->output, sizeof(out->output), "done\n");
	return 0;
}

static int fake_set_stable(void *ctx, const char *svc, const char *ver, const char *actor)
{
	(void)ctx, (void)actor;
	H.stable_calls++;
	snprintf(H.stable, sizeof(H.stable), "%s/%s", svc, ver);
	return 0;
}

static const char *pipeline_yaml = "  web-v2:\n"
                                   "    target: {service: web, canary: v2}\n"
                                   "    steps: [{weight: 10}, {pause: {}}]\n"
                                   "    analysis: {interval: 10s, checks: [{name: errors, "
                                   "metric: error_rate, max: 0.5, min_samples: 10}]}\n"
                                   "    rollback:\n"
                                   "      drain: 5s\n"
                                   "      hooks:\n"
                                   "        - exec: [undeploy, \"{{target}}\", \"{{canary}}\"]\n"
                                   "        - webhook: http://127.0.0.1:9/hook\n"
                                   "      verify: 20s\n";

static void test_rollback_pipeline(void **state)
{
	struct env v;
	json_t *d;

	(void)state;
	memset(&H, 0, sizeof(H));
	env_open(&v, pipeline_yaml);
	v.be.hook_start = fake_hook_start;
	v.be.hook_poll = fake_hook_poll;
	env_restart(&v);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	H.pending = 3;
	H.status = JOB_OK;
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_ABORT, "ops"), 0);
	assert_int_equal(last_weight("web"), 0);
	assert_int_equal(events(&v, "web-v2", "rollout.mitigated", &d), 1);
	assert_true(json_integer_value(json_object_get(d, "time_to_mitigate_us")) > 0);
	json_decref(d);
	/* drain holds the hooks back for its full 5 s (in-flight counts unknown) */
	drive(&v, 4, NULL, 0, 0);
	assert_int_equal(H.started, 0);
	drive(&v, 2, NULL, 0, 0);
	assert_int_equal(events(&v, "web-v2", "rollout.drained", NULL), 1);
	drive(&v, 1, NULL, 0, 0);
	assert_int_equal(H.started, 1);
	assert_string_equal(H.argv0[0], "undeploy web");
	drive(&v, 6, NULL, 0, 0);
	assert_int_equal(H.started, 2); /* one at a time, after the first ended */
	assert_non_null(strstr(H.body, "\"target\":\"web\""));
	assert_non_null(strstr(H.body, "aborted by ops"));
	assert_int_equal(events(&v, "web-v2", "rollout.hook", &d), 2);
	assert_string_equal(json_string_value(json_object_get(d, "status")), "ok");
	json_decref(d);
	/* verify: the stable's absolute numbers over 20 s, then evidence + finished */
	for (int i = 0; i < 25; i++) {
		add("web", "v1", COHORT_STABLE, 100, 0);
		drive(&v, 1, NULL, 0, 0);
	}
	assert_int_equal(events(&v, "web-v2", "rollout.verified", &d), 1);
	assert_string_equal(json_string_value(json_object_get(d, "result")), "passed");
	json_decref(d);
	assert_int_equal(events(&v, "web-v2", "rollout.rollback.finished", &d), 1);
	assert_int_equal(json_integer_value(json_object_get(d, "hooks_ok")), 2);
	json_decref(d);
	/* no evidence backend here: reported, not silently skipped */
	assert_int_equal(events(&v, "web-v2", "rollout.evidence", &d), 1);
	assert_non_null(json_object_get(d, "error"));
	json_decref(d);
	env_close(&v);
}

static void test_hook_interrupted_by_restart(void **state)
{
	struct env v;
	json_t *d;

	(void)state;
	memset(&H, 0, sizeof(H));
	env_open(&v, pipeline_yaml);
	v.be.hook_start = fake_hook_start;
	v.be.hook_poll = fake_hook_poll;
	env_restart(&v);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	H.pending = 1000; /* the first hook never ends before the crash */
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_ABORT, "ops"), 0);
	drive(&v, 8, NULL, 0, 0);
	assert_int_equal(H.started, 1);
	env_restart(&v); /* the job is lost with the process */
	H.pending = 0;
	drive(&v, 3, NULL, 0, 0);
	assert_int_equal(events(&v, "web-v2", "rollout.hook", &d), 2);
	json_decref(d);
	assert_int_equal(events(&v, "web-v2", "rollout.hook.started", NULL), 2);
	{
		char subject[] = "rollout/web-v2";
		json_t *arr, *x;
		size_t i;
		int interrupted = 0;

		assert_int_equal(store_events_list(v.st, 0, 1000, subject, &arr), 0);
		json_array_foreach(arr, i, x)
		{
			const char *st = json_string_value(
			    json_object_get(json_object_get(x, "details"), "status"));

			if (st && !strcmp(st, "interrupted"))
				interrupted++;
		}
		json_decref(arr);
		assert_int_equal(interrupted, 1);
	}
	assert_int_equal(H.started, 2); /* the interrupted hook is not run again */
	env_close(&v);
}

static void test_bake_revert_and_finalize(void **state)
{
	const char *yaml = "  web-v2:\n"
	                   "    target: {service: web, canary: v2}\n"
	                   "    steps: [{weight: 50}, {weight: 100}]\n"
	                   "    bake: 30s\n"
	                   "    analysis: {interval: 10s, checks: [{name: errors, metric: "
	                   "error_rate, max_increase: 0.05, min_samples: 50}]}\n";
	struct env v;
	json_t *d;

	(void)state;
	/* a bake that passes: the canary becomes stable after 30 s */
	memset(&H, 0, sizeof(H));
	env_open(&v, yaml);
	v.be.set_stable = fake_set_stable;
	env_restart(&v);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	/* weight steps with checks do not pass at once: each needs its evidence */
	assert_int_equal(last_weight("web"), 50000);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 0);
	drive(&v, 10, "web", 100, 0);
	assert_int_equal(last_weight("web"), 100000);
	drive(&v, 10, "web", 100, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	d = rollout_engine_json(v.e, "web-v2");
	assert_string_equal(json_string_value(json_object_get(json_object_get(d, "step"), "kind")),
	                    "bake");
	json_decref(d);
	assert_steps_passed_with_evidence(&v, "web-v2", "errors", 2);
	drive(&v, 20, "web", 100, 0);
	env_restart(&v); /* the bake timer continues from the persisted time */
	assert_int_equal(H.stable_calls, 0);
	drive(&v, 12, "web", 100, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_COMPLETED);
	assert_int_equal(events(&v, "web-v2", "rollout.completed", &d), 1);
	assert_true(json_is_true(json_object_get(
	    json_object_get(json_object_get(json_object_get(d, "bake_evidence"), "checks"),
	                    "errors"),
	    "passed")));
	json_decref(d);
	assert_int_equal(H.stable_calls, 1);
	assert_string_equal(H.stable, "web/v2");
	env_restart(&v);
	drive(&v, 2, NULL, 0, 0);
	assert_int_equal(H.stable_calls, 1); /* finalized once, not again after a restart */
	env_close(&v);

	/* a failure during bake reverts at once */
	memset(&H, 0, sizeof(H));
	env_open(&v, yaml);
	v.be.set_stable = fake_set_stable;
	env_restart(&v);
	drive(&v, 1, "web", 200, 0); /* some baseline history before the start */
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	drive(&v, 20, "web", 200, 0);
	d = rollout_engine_json(v.e, "web-v2"); /* both weight steps passed: baking */
	assert_true(json_is_object(json_object_get(d, "bake")));
	json_decref(d);
	for (int i = 0; i < 15 && rollout_engine_state(v.e, "web-v2") == ROLLOUT_PROGRESSING; i++) {
		add("web", "v2", COHORT_CANARY, 100, 30);
		F.now += 1000;
		rollout_engine_tick(v.e, F.now);
	}
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_ROLLED_BACK);
	assert_int_equal(last_weight("web"), 0);
	assert_int_equal(events(&v, "web-v2", "rollout.rollback", &d), 1);
	assert_string_equal(json_string_value(json_object_get(d, "class")), "bake");
	assert_non_null(strstr(json_string_value(json_object_get(d, "reason")), "during bake"));
	json_decref(d);
	assert_int_equal(H.stable_calls, 0);
	env_close(&v);
}

static void test_metrics_families(void **state)
{
	struct env v;
	struct buf b;

	(void)state;
	env_open(&v, healthy_yaml);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	drive(&v, 30, "web", 100, 0);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_ABORT, "ops"), 0);
	buf_init(&b, 1 << 20);
	assert_int_equal(rollout_engine_write_prometheus(v.e, &b), 0);
	buf_append(&b, "", 1);
	assert_non_null(strstr(
	    (char *)b.data, "canaryd_rollout_state{rollout=\"web-v2\",state=\"rolled_back\"} 1"));
	assert_non_null(strstr((char *)b.data,
	                       "canaryd_rollbacks_total{rollout=\"web-v2\",reason=\"abort\"} 1"));
	assert_non_null(strstr((char *)b.data, "canaryd_check_verdict_total{rollout=\"web-v2\","
	                                       "check=\"errors\",verdict=\"pass\"} 3"));
	assert_non_null(
	    strstr((char *)b.data, "canaryd_time_to_mitigate_seconds{rollout=\"web-v2\"}"));
	buf_release(&b);
	env_close(&v);
}

/* --- query/http/exec sources through a fake job runner ------------------------------ */

static struct sources_fake {
	int started, polls, forgotten;
	char text[16][256]; /* each request's shown text (query / URL / command line) */
	char url[16][512];
	int pending; /* polls answered "running" before any result */
	bool never;  /* never answer */
	enum job_status status;
	double canary, baseline; /* the values answered for each cohort */
	/* count checks: canary/baseline are the errors, these the requests; a query whose
	 * text holds "reqs" answers the requests */
	bool counts;
	double canary_req, baseline_req;
	uint64_t ids[16];
} S;

static uint64_t fake_source_start(void *ctx, const struct source_request *req)
{
	int i = S.started % 16;

	(void)ctx;
	snprintf(S.text[i], sizeof(S.text[0]), "%.200s", req->text);
	snprintf(S.url[i], sizeof(S.url[0]), "%.400s", req->url);
	S.ids[i] = (uint64_t)(S.started + 100);
	S.started++;
	return S.ids[i];
}

static int fake_source_poll(void *ctx, uint64_t id, struct job_result *out)
{
	const char *text = S.text[(id - 100) % 16];
	bool canary = strstr(text, "canary") != NULL;
	double v = canary ? S.canary : S.baseline;
	double n = canary ? S.canary_req : S.baseline_req;
	char body[256];

	(void)ctx;
	S.polls++;
	if (S.never)
		return 1;
	if (S.pending > 0) {
		S.pending--;
		return 1;
	}
	memset(out, 0, sizeof(*out));
	out->status = S.status;
	out->duration_ms = 7;
	if (S.status != JOB_OK) {
		out->exit_code = 1;
		snprintf(out->error, sizeof(out->error), "exited with status 1");
		return 0;
	}
	out->http_status = 200;
	if (S.counts && strstr(text, "reqs"))
		v = n;
	if (S.counts)
		snprintf(out->output, sizeof(out->output), "%g %g\n", v, n); /* exec: stdout */
	else
		snprintf(out->output, sizeof(out->output), "%g\n", v); /* exec: stdout */
	snprintf(body, sizeof(body),
	         "{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":"
	         "[{\"metric\":{},\"value\":[1,\"%g\"]}]}}",
	         v);
	out->body = strdup(body); /* the engine releases it */
	out->body_len = strlen(body);
	return 0;
}

static void fake_source_forget(void *ctx, uint64_t id)
{
	(void)ctx, (void)id;
	S.forgotten++;
}

static void env_sources(struct env *v, const char *yaml)
{
	memset(&S, 0, sizeof(S));
	S.status = JOB_OK;
	S.canary = S.baseline = 1.0;
	env_open(v, yaml);
	v->be.source_start = fake_source_start;
	v->be.source_poll = fake_source_poll;
	v->be.source_forget = fake_source_forget;
	env_restart(v);
}

static const char *query_yaml =
    "  web-v2:\n"
    "    target: {service: web, canary: v2}\n"
    "    steps: [{weight: 10}, {pause: {}}]\n"
    "    analysis: {interval: 10s, checks: [{name: quality, query: "
    "'q{version=\"{{version}}\",cohort=\"{{cohort}}\"}', min: 0.9, max_decrease: 0.2, "
    "timeout: 2s}]}\n"
    "metrics: {prometheus: \"http://prom.test:9090\"}\n";

static void test_source_query_async(void **state)
{
	struct env v;
	json_t *d, *src;

	(void)state;
	env_sources(&v, query_yaml);
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	S.pending = 4;
	drive(&v, 10, NULL, 0, 0); /* the interval boundary: both cohorts' queries start */
	assert_int_equal(S.started, 2);
	assert_string_equal(S.text[0], "q{version=\"v2\",cohort=\"canary\"}");
	assert_string_equal(S.text[1], "q{version=\"v1\",cohort=\"baseline\"}");
	assert_string_equal(S.url[0], "http://prom.test:9090/api/v1/query?query="
	                              "q%7Bversion%3D%22v2%22%2Ccohort%3D%22canary%22%7D");
	/* nothing blocks: no verdict until the jobs answered on later ticks */
	assert_int_equal(events(&v, "web-v2", "verdict", NULL), 0);
	drive(&v, 3, NULL, 0, 0);
	assert_int_equal(events(&v, "web-v2", "verdict", &d), 1);
	assert_string_equal(json_string_value(json_object_get(d, "outcome")), "pass");
	assert_string_equal(json_string_value(json_object_get(d, "metric")), "query");
	src = json_object_get(d, "source");
	assert_true(json_is_true(json_object_get(src, "per_cohort")));
	assert_true(json_real_value(json_object_get(json_object_get(src, "canary"), "value")) ==
	            1.0);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(src, "baseline"), "request")),
	    "q{version=\"v1\",cohort=\"baseline\"}");
	assert_int_equal(json_integer_value(json_object_get(d, "interval_end_ms")), T0 + 10000);
	json_decref(d);
	assert_int_equal(S.forgotten, 0);
	/* a passing round of the step's own interval is its evidence: on to the pause */
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 1);
	/* the canary's value drops below min and 0.2 under the baseline: rollback */
	S.canary = 0.5;
	drive(&v, 10, NULL, 0, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_ROLLED_BACK);
	assert_int_equal(last_weight("web"), 0);
	assert_int_equal(events(&v, "web-v2", "rollout.rollback", &d), 1);
	assert_non_null(strstr(json_string_value(json_object_get(d, "reason")),
	                       "query value 0.5 on the canary is below min 0.9"));
	json_decref(d);
	env_close(&v);
}

static const char *exec_yaml = "  web-v2:\n"
                               "    target: {service: web, canary: v2}\n"
                               "    steps: [{weight: 10}, {pause: {}}]\n"
                               "    analysis: {interval: 10s, checks: [{name: probe, exec: "
                               "[probe, \"{{target}}\"], max: 5, timeout: 2s}]}\n";

static void test_source_errors_pause(void **state)
{
	struct env v;
	json_t *d;

	(void)state;
	env_sources(&v, exec_yaml);
	S.status = JOB_FAILED;
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	drive(&v, 11, NULL, 0, 0);
	assert_int_equal(S.started, 1); /* no cohort variable: runs once */
	assert_string_equal(S.text[0], "probe web");
	assert_int_equal(events(&v, "web-v2", "verdict", &d), 1);
	assert_string_equal(json_string_value(json_object_get(d, "outcome")), "error");
	assert_string_equal(json_string_value(json_object_get(d, "reason")),
	                    "the exec source failed for the canary: the command failed: exited "
	                    "with status 1");
	json_decref(d);
	drive(&v, 10, NULL, 0, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	drive(&v, 10, NULL, 0, 0); /* the third error in a row pauses */
	assert_int_equal(events(&v, "web-v2", "verdict", &d), 3);
	assert_int_equal(json_integer_value(json_object_get(d, "consecutive_errors")), 3);
	json_decref(d);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PAUSED);
	assert_int_equal(events(&v, "web-v2", "rollout.paused", &d), 1);
	assert_non_null(strstr(json_string_value(json_object_get(d, "reason")),
	                       "check probe: 3 consecutive source errors"));
	json_decref(d);
	assert_int_equal(events(&v, "web-v2", "rollout.rollback", NULL), 0);
	/* a working source passes again after the resume */
	S.status = JOB_OK;
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_RESUME, "ops"), 0);
	drive(&v, 10, NULL, 0, 0);
	assert_int_equal(events(&v, "web-v2", "verdict", &d), 4);
	assert_string_equal(json_string_value(json_object_get(d, "outcome")), "pass");
	assert_int_equal(json_integer_value(json_object_get(d, "consecutive_errors")), 0);
	json_decref(d);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	env_close(&v);
}

static void test_source_timeout_is_an_error(void **state)
{
	struct env v;
	json_t *d;

	(void)state;
	env_sources(&v, query_yaml);
	S.never = true;
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	drive(&v, 13, NULL, 0, 0);
	assert_int_equal(events(&v, "web-v2", "verdict", NULL), 0);
	drive(&v, 2, NULL, 0, 0); /* timeout 2 s + the queueing allowance */
	assert_int_equal(events(&v, "web-v2", "verdict", &d), 1);
	assert_string_equal(json_string_value(json_object_get(d, "outcome")), "error");
	assert_non_null(strstr(json_string_value(json_object_get(d, "reason")),
	                       "no answer within 4000 ms (timeout 2000 ms"));
	json_decref(d);
	assert_int_equal(S.forgotten, 2); /* nobody polls those jobs again */
	env_close(&v);
}

/* --- count checks (issue 18): test: on a source that gives counts ------------------ */

/* The last verdict's test object's canary requests (-1: none). */
static json_int_t test_requests(json_t *d)
{
	json_t *t = json_object_get(json_object_get(d, "test"), "canary");

	return t ? json_integer_value(json_object_get(t, "requests")) : -1;
}

static const char *query_counts_yaml =
    "  web-v2:\n"
    "    target: {service: web, canary: v2}\n"
    "    steps: [{weight: 10, for: 30s}, {weight: 50, for: 200s}, {pause: {}}]\n"
    "    analysis: {interval: 10s, checks: [{name: errs, query: "
    "'errs{cohort=\"{{cohort}}\",v=\"{{version}}\"}', requests: "
    "'reqs{cohort=\"{{cohort}}\",i=\"{{interval}}\"}', test: {method: sequential, "
    "max_increase: 0.01}, timeout: 2s}]}\n"
    "metrics: {prometheus: \"http://prom.test:9090\"}\n";

static void test_source_query_counts(void **state)
{
	struct env v;
	json_t *d, *src, *t;
	json_int_t before;
	int n;

	(void)state;
	env_sources(&v, query_counts_yaml);
	S.counts = true;
	S.canary = S.baseline = 10; /* 1% errors in both cohorts */
	S.canary_req = S.baseline_req = 1000;
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	drive(&v, 11, NULL, 0, 0);
	/* two queries per cohort: its errors and its requests */
	assert_int_equal(S.started, 4);
	assert_string_equal(S.text[0], "errs{cohort=\"canary\",v=\"v2\"}");
	assert_string_equal(S.text[1], "reqs{cohort=\"canary\",i=\"10s\"}");
	assert_string_equal(S.text[2], "errs{cohort=\"baseline\",v=\"v1\"}");
	assert_string_equal(S.text[3], "reqs{cohort=\"baseline\",i=\"10s\"}");
	assert_int_equal(events(&v, "web-v2", "verdict", &d), 1);
	assert_string_equal(json_string_value(json_object_get(d, "metric")), "query");
	src = json_object_get(d, "source");
	assert_true(json_real_value(json_object_get(json_object_get(src, "canary"), "errors")) ==
	            10);
	assert_true(
	    json_real_value(json_object_get(json_object_get(src, "baseline"), "requests")) == 1000);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(src, "canary"), "requests_request")),
	    "reqs{cohort=\"canary\",i=\"10s\"}");
	/* the counts accumulate over the step's rounds: the test's looks and sample size */
	t = json_object_get(d, "test");
	assert_int_equal(test_requests(d), 1000);
	assert_int_equal(json_integer_value(json_object_get(t, "looks")), 1);
	assert_int_equal(json_integer_value(json_object_get(t, "horizon")), 12); /* 4 x 30s */
	json_decref(d);
	drive(&v, 10, NULL, 0, 0);
	assert_int_equal(events(&v, "web-v2", "verdict", &d), 2);
	assert_int_equal(test_requests(d), 2000);
	assert_int_equal(json_integer_value(json_object_get(
	                     json_object_get(json_object_get(d, "test"), "baseline"), "errors")),
	                 20);
	json_decref(d);
	/* a healthy canary passes the test: the step advances on that evidence */
	for (n = 0; n < 30 && rollout_engine_step(v.e, "web-v2") == 0; n++)
		drive(&v, 1, NULL, 0, 0);
	assert_int_equal(rollout_engine_step(v.e, "web-v2"), 1);
	assert_int_equal(events(&v, "web-v2", "verdict", &d), 3);
	assert_string_equal(json_string_value(json_object_get(d, "outcome")), "pass");
	before = test_requests(d);
	assert_int_equal(before, 3000);
	json_decref(d);
	/* the next traffic step starts its counts over */
	drive(&v, 30, NULL, 0, 0);
	n = events(&v, "web-v2", "verdict", &d);
	assert_int_equal(json_integer_value(json_object_get(d, "step")), 1);
	assert_true(test_requests(d) < 3000);
	json_decref(d);
	/* the canary gets worse (4% vs 1%): the test rolls it back, with its numbers */
	S.canary = 40;
	drive(&v, 60, NULL, 0, 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_ROLLED_BACK);
	assert_int_equal(events(&v, "web-v2", "rollout.rollback", &d), 1);
	assert_non_null(
	    strstr(json_string_value(json_object_get(d, "reason")), "query error rate"));
	t = json_object_get(json_object_get(json_object_get(d, "verdict"), "test"), "canary");
	assert_non_null(t);
	assert_true(json_integer_value(json_object_get(t, "errors")) >= 40);
	assert_string_equal(json_string_value(json_object_get(
	                        json_object_get(json_object_get(d, "verdict"), "test"), "method")),
	                    "sequential");
	json_decref(d);
	(void)n;
	env_close(&v);
}

static const char *counts_full_yaml =
    "  web-v2:\n"
    "    target: {service: web, canary: v2}\n"
    "    steps: [{weight: 50, for: 30s}, {weight: 100, for: 30s}, {pause: {}}]\n"
    "    analysis: {interval: 10s, checks: [{name: errs, query: "
    "'errs{cohort=\"{{cohort}}\"}', requests: 'reqs{cohort=\"{{cohort}}\"}', "
    "test: {method: sequential, max_increase: 0.01}, timeout: 2s}]}\n"
    "metrics: {prometheus: \"http://prom.test:9090\"}\n";

/*
 * At 100% the stable version gets no traffic: a count check judges the
 * step's canary counts against the baseline counts of the run's earlier
 * steps (as the built-ins do), so a healthy canary advances and a bad one
 * is rolled back, instead of waiting for baseline requests that never come.
 */
static void test_source_counts_at_100_use_the_run_baseline(void **state)
{
	for (int bad = 0; bad < 2; bad++) {
		struct env v;
		json_t *d, *t;
		int n;

		(void)state;
		env_sources(&v, counts_full_yaml);
		S.counts = true;
		S.canary = S.baseline = 10; /* 1% errors in both cohorts */
		S.canary_req = S.baseline_req = 1000;
		assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
		for (n = 0; n < 120 && rollout_engine_step(v.e, "web-v2") == 0; n++)
			drive(&v, 1, NULL, 0, 0);
		assert_int_equal(rollout_engine_step(v.e, "web-v2"), 1);
		/* 100%: the baseline cohort answers nothing any more */
		S.baseline = 0;
		S.baseline_req = 0;
		if (bad)
			S.canary = 60; /* 6% against the run's 1% */
		for (n = 0; n < 200 && rollout_engine_step(v.e, "web-v2") == 1 &&
		            rollout_engine_state(v.e, "web-v2") != ROLLOUT_ROLLED_BACK;
		     n++)
			drive(&v, 1, NULL, 0, 0);
		if (!bad) {
			assert_int_equal(rollout_engine_step(v.e, "web-v2"), 2);
			assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
			n = events(&v, "web-v2", "verdict", &d);
			assert_true(n > 0);
			assert_string_equal(json_string_value(json_object_get(d, "outcome")),
			                    "pass");
		} else {
			assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_ROLLED_BACK);
			assert_int_equal(events(&v, "web-v2", "rollout.rollback", &d), 1);
			json_t *ev = d;

			d = json_incref(json_object_get(ev, "verdict"));
			json_decref(ev);
		}
		/* judged against the earlier step's baseline counts, not the empty interval */
		t = json_object_get(json_object_get(d, "test"), "baseline");
		assert_non_null(t);
		assert_true(json_integer_value(json_object_get(t, "requests")) >= 3000);
		json_decref(d);
		env_close(&v);
	}
}

/* Flag targets: a rollout's flag seam that accepts everything. */
static json_t *fake_flag_save(void *ctx, const char *flag)
{
	(void)ctx, (void)flag;
	return json_object();
}

static int fake_flag_set(void *ctx, const char *flag, uint32_t weight, const char *actor)
{
	(void)ctx, (void)flag, (void)actor;
	F.flag_weight = weight;
	return 0;
}

static int fake_flag_restore(void *ctx, const char *flag, const json_t *saved, const char *actor)
{
	(void)ctx, (void)flag, (void)saved, (void)actor;
	F.flag_restored++;
	return 0;
}

static const char *flag_counts_yaml =
    "  beta-on:\n"
    "    target: {flag: beta}\n"
    "    steps: [{weight: 10, for: 20s}, {pause: {}}]\n"
    "    analysis: {interval: 10s, checks: [{name: variant-errors, exec: "
    "[probe, \"{{cohort}}\", \"{{variant}}\"], test: {method: sequential}, min_samples: 100, "
    "timeout: 2s}]}\n"
    "flags:\n"
    "  beta: {rollout: {\"on\": 1}}\n";

static void test_source_flag_variant_counts(void **state)
{
	struct env v;
	json_t *d, *t;
	int n;

	(void)state;
	memset(&S, 0, sizeof(S));
	env_open(&v, flag_counts_yaml);
	S.status = JOB_OK;
	S.counts = true;
	v.be.source_start = fake_source_start;
	v.be.source_poll = fake_source_poll;
	v.be.source_forget = fake_source_forget;
	v.be.flag_save = fake_flag_save;
	v.be.flag_set = fake_flag_set;
	v.be.flag_restore = fake_flag_restore;
	env_restart(&v);
	S.canary = 2; /* the "on" variant: 2 errors in 200 per interval */
	S.baseline = 2;
	S.canary_req = S.baseline_req = 200;
	assert_int_equal(ctl(&v, "beta-on", ROLLOUT_START, "ops"), 0);
	assert_int_equal(F.flag_weight, 10000);
	drive(&v, 11, NULL, 0, 0);
	/* the variants are the cohorts: one command each, "ERRORS REQUESTS" */
	assert_int_equal(S.started, 2);
	assert_string_equal(S.text[0], "probe canary on");
	assert_string_equal(S.text[1], "probe baseline off");
	assert_int_equal(events(&v, "beta-on", "verdict", &d), 1);
	assert_string_equal(json_string_value(json_object_get(d, "metric")), "exec");
	assert_string_equal(json_string_value(json_object_get(d, "target")), "beta");
	assert_int_equal(test_requests(d), 200);
	json_decref(d);
	/* the "on" variant errs 5x as often: the counting test fails it, the flag goes back */
	S.canary = 10;
	for (n = 0; n < 120 && rollout_engine_state(v.e, "beta-on") != ROLLOUT_ROLLED_BACK; n++)
		drive(&v, 1, NULL, 0, 0);
	assert_int_equal(rollout_engine_state(v.e, "beta-on"), ROLLOUT_ROLLED_BACK);
	assert_int_equal(F.flag_restored, 1);
	assert_int_equal(events(&v, "beta-on", "rollout.rollback", &d), 1);
	t = json_object_get(json_object_get(d, "verdict"), "test");
	assert_true(json_is_true(json_object_get(t, "applied")));
	assert_string_equal(json_string_value(json_object_get(t, "anytime")), "counting-process");
	assert_true(json_integer_value(json_object_get(json_object_get(t, "canary"), "errors")) >
	            json_integer_value(json_object_get(json_object_get(t, "baseline"), "errors")));
	assert_non_null(strstr(json_string_value(json_object_get(d, "reason")), "exec error rate"));
	json_decref(d);
	env_close(&v);
}

/* The state layer's fence answers this: a store that is away, or refuses. */
static int fence_rc;

static int fence(void *arg, struct store *st)
{
	(void)arg, (void)st;
	return fence_rc;
}

/*
 * rollout_engine_control's codes (engine.h): a target owned by another
 * rollout, or a commit the fence refused, is ERR_CONFLICT; a write the
 * store could not take is ERR_UNAVAILABLE (store away) or ERR_STORE
 * (refused); nothing changes and no weight is applied; the API answers 409
 * conflict / 503 store_unavailable / 500 store_error.
 */
static void test_control_error_codes(void **state)
{
	static const struct auth_token tokens[] = {{"ops", "s1", SCOPE_ADMIN}};
	struct api api;
	struct env v;
	char msg[256];
	json_t *j;

	(void)state;
	env_open(&v, "  web-v2:\n"
	             "    target: {service: web, canary: v2}\n"
	             "    steps: [{weight: 5, for: 1h}, {weight: 100}]\n"
	             "  web-again:\n"
	             "    target: {service: web, canary: v2}\n"
	             "    steps: [{weight: 10}]\n");
	api_init(&api);
	api.store = v.st;
	api.tokens = tokens;
	api.ntokens = 1;
	assert_int_equal(api_rollouts_init(&api, v.e), 0);

	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	assert_int_equal(
	    rollout_engine_control(v.e, "web-again", ROLLOUT_START, "ops", F.now, msg, sizeof(msg)),
	    ERR_CONFLICT);
	assert_non_null(strstr(msg, "owned by active rollout web-v2"));
	assert_int_equal(call(&api, "POST", "/v1/rollouts/web-again/start", "s1", NULL, &j), 409);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
	                    "conflict");
	json_decref(j);

	/*
	 * The store is away: nothing is written, the run stays as it was.  It
	 * is restored from the last committed text kept in memory, not read
	 * back from the store (here its copy is gone, as reads fail too when a
	 * database is away).
	 */
	assert_int_equal(store_doc_delete(v.st, "rollout", "web-v2", STORE_REV_ANY, NULL), 0);
	state_set_fence(v.state, fence, NULL);
	fence_rc = ERR_UNAVAILABLE;
	assert_int_equal(
	    rollout_engine_control(v.e, "web-v2", ROLLOUT_PAUSE, "ops", F.now, msg, sizeof(msg)),
	    ERR_UNAVAILABLE);
	assert_non_null(strstr(msg, "the store refused the change"));
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	assert_int_equal(call(&api, "POST", "/v1/rollouts/web-v2/pause", "s1", NULL, &j), 503);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
	                    "store_unavailable");
	json_decref(j);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);

	/* a fenced commit (fleet mode: this node lost the leader's term) */
	fence_rc = ERR_CONFLICT;
	assert_int_equal(
	    rollout_engine_control(v.e, "web-v2", ROLLOUT_ABORT, "ops", F.now, msg, sizeof(msg)),
	    ERR_CONFLICT);
	assert_non_null(strstr(msg, "not the fleet leader"));
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);

	/* the store refuses the write */
	fence_rc = ERR_STORE;
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_ABORT, "ops"), ERR_STORE);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	assert_int_equal(call(&api, "POST", "/v1/rollouts/web-v2/abort", "s1", NULL, &j), 500);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
	                    "store_error");
	json_decref(j);
	assert_int_equal(last_weight("web"), 5000); /* the abort's 0% was never applied */

	/* a start that cannot be written applies nothing */
	fence_rc = 0;
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_ABORT, "ops"), 0);
	assert_int_equal(last_weight("web"), 0);
	fence_rc = ERR_UNAVAILABLE;
	F.ncalls = 0;
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_RETRY, "ops"), ERR_UNAVAILABLE);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_ROLLED_BACK);
	assert_int_equal(F.ncalls, 0);
	state_set_fence(v.state, NULL, NULL);
	fence_rc = 0;
	env_close(&v);
}

/*
 * Fleet mode's hook: a "rollout" document committed by another node
 * (state_apply(), origin remote) reloads that run, without applying any
 * action; the engine's own commits do not reload it.
 */
static void test_remote_reload(void **state)
{
	struct env v;
	char *text = NULL, *changed;
	int64_t rev = 0;
	json_t *doc, *view;
	int ncalls;

	(void)state;
	env_open(&v, "  web-v2:\n"
	             "    target: {service: web, canary: v2}\n"
	             "    steps: [{weight: 5, for: 1h}, {weight: 50}]\n");
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	ncalls = F.ncalls;

	/* another node pauses it: its document and revision arrive */
	assert_int_equal(store_doc_get(v.st, "rollout", "web-v2", &text, NULL), 0);
	doc = json_loads(text, 0, NULL);
	assert_non_null(doc);
	json_object_set_new(doc, "state", json_string("paused"));
	json_object_set_new(doc, "pause_reason", json_string("paused on node b"));
	changed = json_dumps(doc, JSON_COMPACT);
	assert_int_equal(store_doc_put(v.st, "rollout", "web-v2", changed, STORE_REV_ANY, &rev), 0);
	assert_int_equal(state_apply(v.state, &(struct state_update){.kind = "rollout",
	                                                             .name = "web-v2",
	                                                             .json = changed,
	                                                             .rev = rev,
	                                                             .origin = STATE_REMOTE}),
	                 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PAUSED);
	view = rollout_engine_json(v.e, "web-v2");
	assert_string_equal(json_string_value(json_object_get(view, "pause_reason")),
	                    "paused on node b");
	json_decref(view);
	assert_int_equal(F.ncalls, ncalls); /* the other node applied its actions */

	/* this engine's own commits come back as local updates: no reload */
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_RESUME, "ops"), 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);

	/* reload from the store; an unknown rollout; a remote delete makes it idle */
	assert_int_equal(rollout_engine_reload(v.e, "web-v2", NULL), 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	assert_int_equal(rollout_engine_reload(v.e, "nope", NULL), ERR_NOTFOUND);
	assert_int_equal(rollout_engine_reload(v.e, "web-v2", "{not json"), -EINVAL);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_IDLE);
	assert_int_equal(state_apply(v.state, &(struct state_update){.kind = "rollout",
	                                                             .name = "web-v2",
	                                                             .json = text,
	                                                             .rev = rev + 1,
	                                                             .origin = STATE_REMOTE}),
	                 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_PROGRESSING);
	assert_int_equal(state_apply(v.state, &(struct state_update){.kind = "rollout",
	                                                             .name = "web-v2",
	                                                             .json = NULL,
	                                                             .rev = rev + 2,
	                                                             .origin = STATE_REMOTE}),
	                 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_IDLE);
	free(changed);
	free(text);
	json_decref(doc);
	env_close(&v);
}

/*
 * docs/fleet.md, the store away: a failing check's rollback is applied to
 * the proxy at once and kept pending; nothing else is decided (a promote
 * answers ERR_UNAVAILABLE); when the store returns the rollback's document
 * and events are committed and the weights go through the state path.
 */
static void test_rollback_while_the_store_is_away(void **state)
{
	char *text = NULL;
	struct env v;

	(void)state;
	env_open(&v, "  web-v2:\n"
	             "    target: {service: web, canary: v2}\n"
	             "    steps: [{weight: 10, for: 1h}, {weight: 100}]\n"
	             "    analysis:\n"
	             "      interval: 10s\n"
	             "      checks:\n"
	             "        - {name: errors, metric: error_rate, max: 0.03}\n");
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_START, "ops"), 0);
	assert_int_equal(last_weight("web"), 10000);
	state_set_fence(v.state, fence, NULL);
	fence_rc = ERR_UNAVAILABLE;
	/* a promote cannot be persisted: not taken */
	assert_int_equal(ctl(&v, "web-v2", ROLLOUT_PROMOTE, "ops"), ERR_UNAVAILABLE);
	assert_int_equal(last_weight("web"), 10000);
	/* a failing canary: rolled back here at once */
	for (int i = 0; i < 30 && last_weight("web") != 0; i++) {
		traffic("web", 100, 20, 100, 0);
		F.now += 1000;
		rollout_engine_tick(v.e, F.now);
	}
	assert_int_equal(last_weight("web"), 0);
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_ROLLED_BACK);
	/* ... but nothing is in the store yet, and more ticks change nothing */
	for (int i = 0; i < 5; i++) {
		F.now += 1000;
		rollout_engine_tick(v.e, F.now);
	}
	assert_int_equal(events(&v, "web-v2", "rollout.rollback", NULL), 0);
	assert_int_equal(store_doc_get(v.st, "rollout", "web-v2", &text, NULL), 0);
	assert_non_null(strstr(text, "\"state\":\"progressing\""));
	free(text);
	text = NULL;
	assert_int_equal(rollout_engine_state(v.e, "web-v2"), ROLLOUT_ROLLED_BACK);
	/* the store returns: the pending decision is committed, events and all */
	fence_rc = 0;
	F.ncalls = 0;
	F.now += 1000;
	rollout_engine_tick(v.e, F.now);
	assert_int_equal(events(&v, "web-v2", "rollout.rollback", NULL), 1);
	assert_int_equal(events(&v, "web-v2", "rollout.mitigated", NULL), 1);
	assert_int_equal(store_doc_get(v.st, "rollout", "web-v2", &text, NULL), 0);
	assert_non_null(strstr(text, "\"state\":\"rolled_back\""));
	free(text);
	assert_true(F.ncalls >= 1); /* the zero weight again, through the state path */
	assert_int_equal(last_weight("web"), 0);
	/* committed once: later ticks add nothing */
	F.now += 1000;
	rollout_engine_tick(v.e, F.now);
	assert_int_equal(events(&v, "web-v2", "rollout.rollback", NULL), 1);
	state_set_fence(v.state, NULL, NULL);
	env_close(&v);
}

/* --- issue 16: the customer's plan ------------------------------------------------- */

static const char *plan_yaml =
    "  plan:\n"
    "    targets:\n"
    "      t-web: {service: web, canary: v2}\n"
    "      t-api: {service: api, canary: a2}\n"
    "      t-pay: {service: pay, canary: p2}\n"
    "    steps:\n"
    "      - {name: dark, set: {t-web: 0, t-api: 0, t-pay: 0}}\n"
    "      - {name: p10, set: {t-web: 10, t-api: 10, t-pay: 10}, for: 20s}\n"
    "      - {name: p50, set: {t-web: 50, t-api: 50, t-pay: 50}, for: 20s}\n"
    "      - pause: {}\n"
    "      - set: {t-web: 100, t-api: 100, t-pay: 100}\n"
    "    analysis:\n"
    "      interval: 10s\n"
    "      checks:\n"
    "        - {name: integration, metric: error_rate, max: 0.03, target: [t-api, t-pay],\n"
    "           on_fail: ";

static void plan_open(struct env *v, const char *on_fail)
{
	char y[2048];

	snprintf(y, sizeof(y), "%s%s}\n", plan_yaml, on_fail);
	env_open(v, y);
}

/* Ticks one second with traffic on all three services; api's canary errs at err/100. */
static void plan_drive(struct env *v, int seconds, uint64_t api_err)
{
	for (int i = 0; i < seconds; i++) {
		traffic("web", 100, 0, 100, 0);
		traffic("api", 100, api_err, 100, 0);
		traffic("pay", 100, 0, 100, 0);
		F.now += 1000;
		rollout_engine_tick(v->e, F.now);
	}
}

/* Named steps: in rollout.step events, the live view and the plan. */
static void test_named_steps(void **state)
{
	struct env v;
	json_t *d, *j;

	(void)state;
	plan_open(&v, "rollback");
	assert_int_equal(ctl(&v, "plan", ROLLOUT_START, "ops"), 0);
	assert_int_equal(events(&v, "plan", "rollout.step", &d), 2);
	assert_string_equal(json_string_value(json_object_get(d, "step_name")), "p10");
	json_decref(d);
	j = rollout_engine_json(v.e, "plan");
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "step"), "name")),
	                    "p10");
	assert_string_equal(json_string_value(json_object_get(
	                        json_array_get(json_object_get(j, "plan"), 2), "name")),
	                    "p50");
	assert_null(json_object_get(json_array_get(json_object_get(j, "plan"), 3), "name"));
	assert_true(json_is_null(json_object_get(j, "rehearsal")));
	json_decref(j);
	plan_drive(&v, 25, 0);
	assert_int_equal(rollout_engine_step(v.e, "plan"), 2);
	assert_int_equal(events(&v, "plan", "rollout.step.passed", &d), 2);
	assert_string_equal(json_string_value(json_object_get(d, "step_name")), "p10");
	json_decref(d);
	assert_int_equal(events(&v, "plan", "rollout.step", &d), 3);
	assert_string_equal(json_string_value(json_object_get(d, "step_name")), "p50");
	json_decref(d);
	env_close(&v);
}

/* target: [t-api, t-pay]: a failure rolls back both; t-web keeps its weight. */
static void test_target_set_rollback(void **state)
{
	struct env v;
	json_t *d;

	(void)state;
	plan_open(&v, "rollback");
	assert_int_equal(ctl(&v, "plan", ROLLOUT_START, "ops"), 0);
	/* web is not in the check's set: its errors are not the check's */
	for (int i = 0; i < 10; i++) {
		traffic("web", 100, 10, 100, 0);
		traffic("api", 100, 0, 100, 0);
		traffic("pay", 100, 0, 100, 0);
		F.now += 1000;
		rollout_engine_tick(v.e, F.now);
	}
	assert_int_equal(events(&v, "plan", "rollout.rollback", NULL), 0);
	assert_int_equal(last_weight("api"), 10000);
	for (int i = 0; i < 10 && last_weight("api") != 0; i++)
		plan_drive(&v, 1, 10); /* api's canary: 10% errors */
	assert_int_equal(last_weight("api"), 0);
	assert_int_equal(last_weight("pay"), 0);
	/* web goes on with the plan (p10's for ended in the same tick: p50) */
	assert_true(last_weight("web") >= 10000);
	assert_int_equal(rollout_engine_state(v.e, "plan"), ROLLOUT_PROGRESSING);
	assert_string_equal(rollout_engine_owner(v.e, "web"), "plan");
	assert_null(rollout_engine_owner(v.e, "pay"));
	assert_int_equal(events(&v, "plan", "rollout.rollback", &d), 1);
	assert_int_equal(json_array_size(json_object_get(d, "targets")), 2);
	assert_string_equal(json_string_value(json_array_get(json_object_get(d, "targets"), 0)),
	                    "t-api");
	assert_string_equal(json_string_value(json_array_get(json_object_get(d, "targets"), 1)),
	                    "t-pay");
	json_decref(d);
	env_close(&v);
}

/*
 * on_fail: {rollback_to: previous} at p50: t-api and t-pay back to p10's
 * 10%, t-web stays at 50%, paused at step p10 with the full pipeline; a
 * restart re-applies those weights; resume goes on from p10.
 */
static void test_partial_rollback_previous(void **state)
{
	struct env v;
	json_t *d, *j;
	struct buf b;

	(void)state;
	plan_open(&v, "{rollback_to: previous}");
	assert_int_equal(ctl(&v, "plan", ROLLOUT_START, "ops"), 0);
	plan_drive(&v, 25, 0);
	assert_int_equal(rollout_engine_step(v.e, "plan"), 2);
	assert_int_equal(last_weight("api"), 50000);
	plan_drive(&v, 10, 10);
	assert_int_equal(rollout_engine_state(v.e, "plan"), ROLLOUT_PAUSED);
	assert_int_equal(rollout_engine_step(v.e, "plan"), 1);
	assert_int_equal(last_weight("api"), 10000);
	assert_int_equal(last_weight("pay"), 10000);
	assert_int_equal(last_weight("web"), 50000);
	assert_int_equal(events(&v, "plan", "rollout.rollback", &d), 1);
	assert_true(json_is_true(json_object_get(d, "partial")));
	assert_string_equal(json_string_value(json_object_get(d, "rollback_to")), "p10");
	assert_string_equal(json_string_value(json_object_get(d, "class")), "partial");
	assert_true(json_number_value(json_object_get(json_object_get(d, "weights"), "t-api")) ==
	            10.0);
	assert_null(json_object_get(json_object_get(d, "weights"), "t-web"));
	assert_true(json_integer_value(json_object_get(d, "time_to_detect_ms")) > 0);
	json_decref(d);
	assert_int_equal(events(&v, "plan", "rollout.mitigated", NULL), 1);
	buf_init(&b, 1 << 20);
	assert_int_equal(rollout_engine_write_prometheus(v.e, &b), 0);
	buf_append(&b, "", 1);
	assert_non_null(strstr((char *)b.data,
	                       "canaryd_rollbacks_total{rollout=\"plan\",reason=\"partial\"} 1"));
	buf_release(&b);
	/* a restart mid-pipeline: the partial weights are applied again, still paused */
	F.ncalls = 0;
	env_restart(&v);
	assert_int_equal(rollout_engine_state(v.e, "plan"), ROLLOUT_PAUSED);
	assert_int_equal(rollout_engine_step(v.e, "plan"), 1);
	assert_int_equal(last_weight("api"), 10000);
	assert_int_equal(last_weight("web"), 50000);
	plan_drive(&v, 40, 0); /* drain (30 s) and the rest of the pipeline, healthy */
	assert_int_equal(events(&v, "plan", "rollout.rollback.finished", NULL), 1);
	j = rollout_engine_json(v.e, "plan");
	assert_false(json_is_true(
	    json_object_get(json_array_get(json_object_get(j, "targets"), 1), "rolled_back")));
	json_decref(j);
	/* resumed: p10 passes on fresh evidence, then p50 raises every target again */
	assert_int_equal(ctl(&v, "plan", ROLLOUT_RESUME, "ops"), 0);
	plan_drive(&v, 10, 0);
	assert_int_equal(rollout_engine_step(v.e, "plan"), 2);
	assert_int_equal(last_weight("api"), 50000);
	assert_int_equal(last_weight("pay"), 50000);
	assert_int_equal(rollout_engine_state(v.e, "plan"), ROLLOUT_PROGRESSING);
	env_close(&v);
}

/*
 * After a partial rollback the check judges the new weights afresh: the
 * interval in progress only primes the readings, so one more failing
 * interval of old data does not step back again; a failure on the new
 * weights does (here: p20 -> dark, every target of the set at 0).
 */
static void test_partial_rollback_judges_afresh(void **state)
{
	struct env v;

	(void)state;
	plan_open(&v, "{rollback_to: previous}");
	assert_int_equal(ctl(&v, "plan", ROLLOUT_START, "ops"), 0);
	plan_drive(&v, 25, 0);
	assert_int_equal(rollout_engine_step(v.e, "plan"), 2);
	for (int i = 0; i < 20 && rollout_engine_state(v.e, "plan") == ROLLOUT_PROGRESSING; i++)
		plan_drive(&v, 1, 10);
	assert_int_equal(rollout_engine_state(v.e, "plan"), ROLLOUT_PAUSED);
	assert_int_equal(rollout_engine_step(v.e, "plan"), 1);
	plan_drive(&v, 10, 10); /* the interval in progress: primes only */
	assert_int_equal(rollout_engine_step(v.e, "plan"), 1);
	assert_int_equal(events(&v, "plan", "rollout.rollback", NULL), 1);
	plan_drive(&v, 10, 10); /* still failing at p10: back to dark */
	assert_int_equal(events(&v, "plan", "rollout.rollback", NULL), 2);
	assert_int_equal(rollout_engine_step(v.e, "plan"), 0);
	assert_int_equal(last_weight("api"), 0);
	assert_int_equal(last_weight("web"), 50000);
	env_close(&v);
}

/* rollback_to a named step before the check acts: weights back to it, paused there. */
static void test_partial_rollback_named(void **state)
{
	struct env v;

	(void)state;
	env_open(&v, "  named:\n"
	             "    targets:\n"
	             "      t-web: {service: web, canary: v2}\n"
	             "      t-api: {service: api, canary: a2}\n"
	             "    steps:\n"
	             "      - {name: web-first, set: {t-web: 20, t-api: 0}, for: 20s}\n"
	             "      - {name: both, set: {t-web: 40, t-api: 40}, for: 20s}\n"
	             "      - set: {t-web: 100, t-api: 100}\n"
	             "    analysis:\n"
	             "      interval: 10s\n"
	             "      checks:\n"
	             "        - {name: api, metric: error_rate, max: 0.03, target: t-api,\n"
	             "           on_fail: {rollback_to: web-first}}\n");
	assert_int_equal(ctl(&v, "named", ROLLOUT_START, "ops"), 0);
	for (int i = 0; i < 25; i++) {
		traffic("web", 100, 0, 100, 0);
		F.now += 1000;
		rollout_engine_tick(v.e, F.now);
	}
	assert_int_equal(rollout_engine_step(v.e, "named"), 1);
	for (int i = 0; i < 20 && rollout_engine_state(v.e, "named") == ROLLOUT_PROGRESSING; i++) {
		traffic("web", 100, 0, 100, 0);
		traffic("api", 100, 10, 100, 0);
		F.now += 1000;
		rollout_engine_tick(v.e, F.now);
	}
	assert_int_equal(rollout_engine_state(v.e, "named"), ROLLOUT_PAUSED);
	assert_int_equal(rollout_engine_step(v.e, "named"), 0);
	assert_int_equal(last_weight("api"), 0);
	assert_int_equal(last_weight("web"), 40000); /* not in the check's set */
	env_close(&v);
}

/*
 * rollback_to a named phase (seed: "cascading failures -> rollback to 75%"):
 * a failure after it goes back to it; a failure at it goes one traffic step
 * back, as previous.
 */
static void run_to_failure(struct env *v, const char *name, int healthy_ticks)
{
	for (int i = 0; i < healthy_ticks; i++) {
		traffic("web", 100, 0, 100, 0);
		F.now += 1000;
		rollout_engine_tick(v->e, F.now);
	}
	for (int i = 0; i < 20 && rollout_engine_state(v->e, name) == ROLLOUT_PROGRESSING; i++) {
		traffic("web", 100, 10, 100, 0);
		F.now += 1000;
		rollout_engine_tick(v->e, F.now);
	}
}

static void test_partial_rollback_named_phase(void **state)
{
	static const char *plan = "  ph:\n"
	                          "    target: {service: web, canary: v2}\n"
	                          "    steps:\n"
	                          "      - {name: p10, weight: 10, for: 20s}\n"
	                          "      - {name: p75, weight: 75, for: 20s}\n"
	                          "      - {name: p90, weight: 90, for: 20s}\n"
	                          "      - weight: 100\n"
	                          "    analysis:\n"
	                          "      interval: 10s\n"
	                          "      checks:\n"
	                          "        - {name: cascade, metric: error_rate, max: 0.03,\n"
	                          "           on_fail: {rollback_to: p75}}\n";
	struct env v;

	(void)state;
	/* failing at 90 %: back to the named 75 % phase, paused there */
	env_open(&v, plan);
	assert_int_equal(ctl(&v, "ph", ROLLOUT_START, "ops"), 0);
	run_to_failure(&v, "ph", 50);
	assert_int_equal(rollout_engine_step(v.e, "ph"), 1);
	assert_int_equal(rollout_engine_state(v.e, "ph"), ROLLOUT_PAUSED);
	assert_int_equal(last_weight("web"), 75000);
	env_close(&v);

	/* failing at 75 % itself: the named step is not behind, one step back */
	env_open(&v, plan);
	assert_int_equal(ctl(&v, "ph", ROLLOUT_START, "ops"), 0);
	run_to_failure(&v, "ph", 25);
	assert_int_equal(rollout_engine_step(v.e, "ph"), 0);
	assert_int_equal(rollout_engine_state(v.e, "ph"), ROLLOUT_PAUSED);
	assert_int_equal(last_weight("web"), 10000);
	env_close(&v);
}

/* --rehearse 600: a 1h step takes 6 s, a 10m interval 1 s, a 12:00Z gate 2h/600 after start. */
static void test_rehearsal(void **state)
{
	struct env v;
	char msg[256];
	json_t *d, *j;
	int64_t t0;

	(void)state;
	env_open(&v, "  rh:\n"
	             "    target: {service: web, canary: v2}\n"
	             "    steps:\n"
	             "      - {weight: 10, for: 1h}\n"
	             "      - {weight: 50, not_before: \"12:00Z\"}\n"
	             "      - weight: 100\n"
	             "    analysis:\n"
	             "      interval: 10m\n"
	             "      checks: [{name: errors, metric: error_rate, max: 0.03}]\n");
	assert_int_equal(rollout_engine_start(v.e, "rh", -1, "ops", F.now, msg, sizeof(msg)),
	                 -EINVAL);
	assert_int_equal(rollout_engine_state(v.e, "rh"), ROLLOUT_IDLE);
	t0 = F.now; /* 10:00Z */
	assert_int_equal(rollout_engine_start(v.e, "rh", 600, "ops", F.now, msg, sizeof(msg)), 0);
	assert_non_null(strstr(msg, "REHEARSAL"));
	drive(&v, 5, "web", 100, 0);
	assert_int_equal(rollout_engine_step(v.e, "rh"), 0);
	drive(&v, 2, "web", 100, 0); /* 6 s = 1h / 600, with a 1 s (10m / 600) interval */
	assert_int_equal(rollout_engine_step(v.e, "rh"), 1);
	j = rollout_engine_json(v.e, "rh");
	assert_true(json_number_value(json_object_get(j, "rehearsal")) == 600.0);
	/* the gate: 12:00Z is 2h after the start on the plan's clock = 12 s */
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "step"), "gate_at")),
	                 t0 + 12000);
	json_decref(j);
	while (F.now < t0 + 11000)
		drive(&v, 1, "web", 100, 0);
	assert_int_equal(events(&v, "rh", "rollout.step", NULL), 1);
	drive(&v, 2, "web", 100, 0);
	assert_int_equal(events(&v, "rh", "rollout.step", &d), 2);
	assert_true(json_number_value(json_object_get(d, "rehearsal")) == 600.0);
	json_decref(d);
	/* every event says so, and a restart keeps the speed */
	assert_int_equal(events(&v, "rh", "rollout.started", &d), 1);
	assert_true(json_number_value(json_object_get(d, "rehearsal")) == 600.0);
	json_decref(d);
	env_restart(&v);
	drive(&v, 8, "web", 100, 0);
	assert_int_equal(rollout_engine_state(v.e, "rh"), ROLLOUT_COMPLETED);
	assert_int_equal(events(&v, "rh", "rollout.completed", &d), 1);
	assert_true(json_number_value(json_object_get(d, "rehearsal")) == 600.0);
	json_decref(d);
	env_close(&v);
}

/*
 * preview: only override traffic reaches the canary (set_preview, no weight);
 * the checks judge it against the stable cohort and the step waits for that
 * evidence; then the cutover sets 100 % at once.  A failing preview rolls back.
 */
static void test_preview_step(void **state)
{
	struct env v;
	json_t *d;

	(void)state;
	env_open(&v, "  pv:\n"
	             "    target: {service: pay, canary: p2}\n"
	             "    steps:\n"
	             "      - {name: blue, preview: {}, for: 20s}\n"
	             "      - {name: cutover, weight: 100}\n"
	             "    analysis:\n"
	             "      interval: 10s\n"
	             "      checks:\n"
	             "        - {name: errors, metric: error_rate, max: 0.03}\n"
	             "        - {name: vs-stable, metric: error_rate, max_increase: 0.05}\n");
	assert_int_equal(ctl(&v, "pv", ROLLOUT_START, "ops"), 0);
	assert_int_equal(F.previews, 1);
	assert_int_equal(F.ncalls, 0); /* no weight: everyone else stays on p1 */
	assert_int_equal(events(&v, "pv", "rollout.step", &d), 1);
	assert_string_equal(json_string_value(json_object_get(d, "kind")), "preview");
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(d, "weights"), "pay")), "preview");
	json_decref(d);
	/* no override traffic yet: the preview has no evidence and does not pass */
	drive(&v, 30, NULL, 0, 0);
	assert_int_equal(rollout_engine_step(v.e, "pv"), 0);
	for (int i = 0; i < 20; i++) { /* override traffic (canary) vs the stable cohort */
		add("pay", "p2", COHORT_CANARY, 50, 0);
		add("pay", "p1", COHORT_STABLE, 500, 1);
		F.now += 1000;
		rollout_engine_tick(v.e, F.now);
	}
	assert_int_equal(rollout_engine_step(v.e, "pv"), 1);
	assert_int_equal(last_weight("pay"), 100000);
	env_close(&v);

	env_open(&v, "  pv:\n"
	             "    target: {service: pay, canary: p2}\n"
	             "    steps: [{preview: {}, for: 1h}, {weight: 100}]\n"
	             "    analysis:\n"
	             "      interval: 10s\n"
	             "      checks: [{name: errors, metric: error_rate, max: 0.03}]\n");
	assert_int_equal(ctl(&v, "pv", ROLLOUT_START, "ops"), 0);
	for (int i = 0; i < 20 && rollout_engine_state(v.e, "pv") == ROLLOUT_PROGRESSING; i++) {
		add("pay", "p2", COHORT_CANARY, 50, 10);
		add("pay", "p1", COHORT_STABLE, 500, 1);
		F.now += 1000;
		rollout_engine_tick(v.e, F.now);
	}
	assert_int_equal(rollout_engine_state(v.e, "pv"), ROLLOUT_ROLLED_BACK);
	assert_int_equal(last_weight("pay"), 0); /* a plain weight 0: the canary drains */
	env_close(&v);
}

/* notice: 48h before an approval gate reachable when a 72h step ends: once, across restarts. */
static void test_upcoming_notice(void **state)
{
	struct env v;
	json_t *d;

	(void)state;
	env_open(&v, "  up:\n"
	             "    target: {service: web, canary: v2}\n"
	             "    steps:\n"
	             "      - {name: p5, weight: 5, for: 72h, require_evidence: false}\n"
	             "      - {name: gate, approval: {required: [alice]}}\n"
	             "      - weight: 100\n"
	             "    notify: [{webhook: http://127.0.0.1:1/x, events: [upcoming], "
	             "notice: 48h}]\n");
	assert_int_equal(ctl(&v, "up", ROLLOUT_START, "ops"), 0);
	for (int h = 0; h < 23; h++) {
		F.now += 3600 * 1000;
		rollout_engine_tick(v.e, F.now);
	}
	assert_int_equal(events(&v, "up", "rollout.upcoming", NULL), 0);
	F.now += 3600 * 1000; /* 24h: the gate is 48h away */
	rollout_engine_tick(v.e, F.now);
	assert_int_equal(events(&v, "up", "rollout.upcoming", &d), 1);
	assert_int_equal(json_integer_value(json_object_get(d, "step")), 1);
	assert_string_equal(json_string_value(json_object_get(d, "step_name")), "gate");
	assert_string_equal(json_string_value(json_object_get(d, "what")), "approval gate");
	assert_int_equal(json_integer_value(json_object_get(d, "opens_at_ms")),
	                 T0 + 72 * 3600 * 1000);
	json_decref(d);
	env_restart(&v);
	for (int h = 0; h < 10; h++) {
		F.now += 3600 * 1000;
		rollout_engine_tick(v.e, F.now);
	}
	assert_int_equal(events(&v, "up", "rollout.upcoming", NULL), 1);
	env_close(&v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_healthy_promotion),
	    cmocka_unit_test(test_no_traffic_never_promotes),
	    cmocka_unit_test(test_load_stops_mid_step),
	    cmocka_unit_test(test_bad_canary_low_traffic_never_promoted),
	    cmocka_unit_test(test_require_evidence_false),
	    cmocka_unit_test(test_srm_resume_needs_fresh_evidence),
	    cmocka_unit_test(test_old_document_counts_max_wait_from_the_step),
	    cmocka_unit_test(test_step_counts_survive_a_restart),
	    cmocka_unit_test(test_bad_canary_rolls_back),
	    cmocka_unit_test(test_min_samples_never_pass),
	    cmocka_unit_test(test_for_is_consecutive),
	    cmocka_unit_test(test_pause_review_rolls_back),
	    cmocka_unit_test(test_approvals),
	    cmocka_unit_test(test_per_target_rollback),
	    cmocka_unit_test(test_gate_arithmetic),
	    cmocka_unit_test(test_not_before_step),
	    cmocka_unit_test(test_control_table),
	    cmocka_unit_test(test_emergency_rollback_all),
	    cmocka_unit_test(test_crash_safety),
	    cmocka_unit_test(test_owner_conflict_and_view),
	    cmocka_unit_test(test_api),
	    cmocka_unit_test(test_rollback_pipeline),
	    cmocka_unit_test(test_hook_interrupted_by_restart),
	    cmocka_unit_test(test_bake_revert_and_finalize),
	    cmocka_unit_test(test_metrics_families),
	    cmocka_unit_test(test_source_query_async),
	    cmocka_unit_test(test_source_errors_pause),
	    cmocka_unit_test(test_source_timeout_is_an_error),
	    cmocka_unit_test(test_source_query_counts),
	    cmocka_unit_test(test_source_flag_variant_counts),
	    cmocka_unit_test(test_source_counts_at_100_use_the_run_baseline),
	    cmocka_unit_test(test_control_error_codes),
	    cmocka_unit_test(test_rollback_while_the_store_is_away),
	    cmocka_unit_test(test_remote_reload),
	    cmocka_unit_test(test_named_steps),
	    cmocka_unit_test(test_target_set_rollback),
	    cmocka_unit_test(test_partial_rollback_previous),
	    cmocka_unit_test(test_partial_rollback_named),
	    cmocka_unit_test(test_partial_rollback_named_phase),
	    cmocka_unit_test(test_partial_rollback_judges_afresh),
	    cmocka_unit_test(test_rehearsal),
	    cmocka_unit_test(test_upcoming_notice),
	    cmocka_unit_test(test_preview_step),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
