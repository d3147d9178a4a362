/*
 * test_flags_registry.c - the flag state module (src/flags/registry.c) on
 * the state path with an in-memory store: a change derives the next
 * snapshot sharing every unchanged compiled flag, keys keep their places
 * (config order, then API-only by key), counters exist past the old 4,096
 * (flag, variant) ceiling, a change committed elsewhere (state_apply, no
 * prepared entry) is parsed and applied like a local one, and the module's
 * errors are err.h codes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config/config.h"
#include "core/buf.h"
#include "core/err.h"
#include "flags/registry.h"
#include "state/state.h"
#include "store/store.h"

static const char yaml[] = "admin:\n"
                           "  tokens:\n"
                           "    - {name: ops, secret: s3cret, scopes: [admin]}\n"
                           "store: \"sqlite::memory:\"\n"
                           "segments:\n"
                           "  beta: {match: [{attr: plan, op: in, values: [beta]}]}\n"
                           "flags:\n"
                           "  c2: {variants: {on: true, off: false}, rollout: {on: 5}}\n"
                           "  c1: {}\n";

#define BODY                                                                 \
	"{\"variants\":{\"on\":true,\"off\":false},\"rollout\":{\"on\":%d}," \
	"\"rules\":[{\"segment\":\"beta\",\"serve\":\"on\"},"                \
	"{\"segment\":\"beta\",\"rollout\":{\"on\":10}}]}"

struct fx {
	struct config *cfg;
	struct store *st;
	struct state *state;
	struct flags *fl;
	int changed, resets;
	char last_key[64];
};

static void on_changed(void *arg, uint64_t rev, const char *key, const json_t *def)
{
	struct fx *f = arg;

	(void)rev;
	(void)def;
	f->changed++;
	snprintf(f->last_key, sizeof(f->last_key), "%s", key);
}

static void on_reset(void *arg, uint64_t rev)
{
	struct fx *f = arg;

	(void)rev;
	f->resets++;
}

static const struct flags_listener listener = {on_changed, on_reset};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct config_errors errs;
	char err[512];

	config_errors_init(&errs);
	f->cfg = config_load_string("t.yaml", yaml, sizeof(yaml) - 1, &errs);
	config_errors_print(&errs, stderr);
	config_errors_release(&errs);
	assert_non_null(f->cfg);
	f->st = store_open("sqlite::memory:", err, sizeof(err));
	assert_non_null(f->st);
	f->state = state_new(f->st);
	assert_non_null(f->state);
	f->fl = flags_new(f->state, f->cfg, err, sizeof(err));
	if (!f->fl)
		fprintf(stderr, "%s\n", err);
	assert_non_null(f->fl);
	flags_set_listener(f->fl, &listener, f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	flags_free(f->fl);
	state_free(f->state);
	store_close(f->st);
	config_free(f->cfg);
	free(f);
	return 0;
}

/* flags_put of BODY with rollout pct; returns its code. */
static int put(struct fx *f, const char *key, int pct)
{
	char text[512], msg[256];
	json_t *body;
	int rc;

	snprintf(text, sizeof(text), BODY, pct);
	body = json_loads(text, 0, NULL);
	assert_non_null(body);
	rc = flags_put(f->fl, key, body, "ops", "flag.updated", NULL, NULL, msg, sizeof(msg));
	json_decref(body);
	return rc;
}

static int drop(struct fx *f, const char *key)
{
	char msg[256];

	return flags_put(f->fl, key, NULL, "ops", "flag.deleted", NULL, NULL, msg, sizeof(msg));
}

/* The keys of the current snapshot, comma-joined. */
static const char *keys(struct fx *f)
{
	static char out[256];
	const struct flags_snap *s = flags_current(f->fl);
	size_t o = 0;

	out[0] = '\0';
	for (size_t i = 0; i < flags_snap_count(s); i++) {
		const json_t *d = flags_item_def(flags_snap_at(s, i));

		o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%s", i ? "," : "",
		                      json_string_value(json_object_get(d, "key")));
	}
	return out;
}

/* A change shares every other compiled flag and keeps every key in its place. */
static void test_derive_shares_unchanged(void **state)
{
	struct fx *f = *state;
	const struct flags_snap *s1, *s2;
	const struct flags_item *c1_conf;

	assert_string_equal(keys(f), "c2,c1");
	assert_int_equal(put(f, "a3", 1), 0);
	assert_int_equal(put(f, "a1", 1), 0);
	assert_int_equal(put(f, "a2", 1), 0);
	assert_string_equal(keys(f), "c2,c1,a1,a2,a3");
	assert_int_equal(f->changed, 3);
	assert_string_equal(f->last_key, "a2");

	s1 = flags_snap_ref(flags_current(f->fl));
	assert_int_equal(put(f, "a2", 7), 0);
	s2 = flags_current(f->fl);
	assert_true(s1 != s2);
	assert_int_equal(flags_snap_count(s2), 5);
	for (size_t i = 0; i < 5; i++) {
		if (i == 3)
			assert_ptr_not_equal(flags_snap_at(s1, i), flags_snap_at(s2, i));
		else
			assert_ptr_equal(flags_snap_at(s1, i), flags_snap_at(s2, i));
	}
	/* the old snapshot is untouched (readers may still hold it) */
	assert_int_equal(
	    json_integer_value(json_object_get(
	        json_object_get(flags_item_def(flags_snap_at(s1, 3)), "rollout"), "on")),
	    1);
	assert_ptr_equal(flags_snap_get(s2, "a2", 2), flags_snap_at(s2, 3));
	assert_null(flags_snap_get(s2, "a", 1));
	flags_snap_unref(s1);

	/* an insert goes to its key's place, a delete closes the gap */
	assert_int_equal(put(f, "a0", 1), 0);
	assert_string_equal(keys(f), "c2,c1,a0,a1,a2,a3");
	assert_int_equal(drop(f, "a2"), 0);
	assert_string_equal(keys(f), "c2,c1,a0,a1,a3");
	assert_null(flags_def(f->fl, "a2", NULL));
	assert_int_equal(drop(f, "a2"), ERR_NOCHANGE);

	/* a config flag's API version takes its place; dropping it brings the config back */
	c1_conf = flags_snap_at(flags_current(f->fl), 1);
	assert_int_equal(put(f, "c1", 3), 0);
	assert_string_equal(keys(f), "c2,c1,a0,a1,a3");
	assert_string_equal(flags_item_source(flags_snap_at(flags_current(f->fl), 1)), "api");
	assert_int_equal(drop(f, "c1"), 0);
	assert_ptr_equal(flags_snap_at(flags_current(f->fl), 1), c1_conf);
	assert_string_equal(flags_item_source(c1_conf), "config");
	assert_int_equal(drop(f, "c1"), ERR_NOCHANGE); /* no API version left to drop */
	assert_ptr_equal(flags_snap_get(flags_current(f->fl), "c1", 2), c1_conf);
}

/* Every (flag, variant) gets a counter: 2,100 flags x 2 variants is past the old 4,096. */
static void test_counters_without_ceiling(void **state)
{
	struct fx *f = *state;
	const struct flags_snap *s;
	const struct flags_item *it;
	struct flag_result r;
	struct flag_json_ctx jc;
	json_t *ctx = json_pack("{s:s}", "targetingKey", "user-1");
	struct buf out;
	char key[32], line[128];

	for (int i = 0; i < 2100; i++) {
		snprintf(key, sizeof(key), "k%04d", i);
		assert_int_equal(put(f, key, 50), 0);
	}
	s = flags_current(f->fl);
	assert_int_equal(flags_snap_count(s), 2102);
	it = flags_snap_get(s, "k2099", 5);
	assert_non_null(it);
	assert_int_equal(flag_json_ctx_init(&jc, ctx), 0);
	assert_int_equal(flag_eval(flags_item_flag(it), flag_ctx_json_attr, &jc, &r), 0);
	flags_item_count(it, &r);
	buf_init(&out, 1u << 24);
	flags_write_prometheus(f->fl, &out);
	snprintf(line, sizeof(line),
	         "canaryd_flag_evaluations_total{flag=\"k2099\",variant=\"%s\"} 1\n", r.variant);
	assert_non_null(strstr(buf_cstr(&out), line));
	buf_release(&out);
	json_decref(ctx);
}

/*
 * Many inserts in scrambled order and deletes (blocks split and empty):
 * the list stays config order then keys sorted, every key is found, and an
 * old snapshot still lists what it listed.
 */
/* Config keys first, then API keys strictly ascending, each found by the index. */
static void assert_ordered(const struct flags_snap *s)
{
	char prev[32] = "";

	for (size_t i = 2; i < flags_snap_count(s); i++) {
		const struct flags_item *it = flags_snap_at(s, i);
		const char *k = json_string_value(json_object_get(flags_item_def(it), "key"));

		assert_true(strcmp(prev, k) < 0);
		assert_ptr_equal(flags_snap_get(s, k, strlen(k)), it);
		snprintf(prev, sizeof(prev), "%s", k);
	}
}

static void test_many_changes_keep_order(void **state)
{
	struct fx *f = *state;
	const struct flags_snap *s, *early = NULL;
	char key[32];
	size_t n;

	for (unsigned i = 0; i < 700; i++) {
		snprintf(key, sizeof(key), "m%04u", (i * 389u) % 700u); /* 389 is prime to 700 */
		assert_int_equal(put(f, key, 1), 0);
		if (i == 350)
			early = flags_snap_ref(flags_current(f->fl));
	}
	assert_int_equal(flags_snap_count(flags_current(f->fl)), 702);
	assert_ordered(flags_current(f->fl));
	for (unsigned i = 0; i < 700; i += 3) {
		snprintf(key, sizeof(key), "m%04u", i);
		assert_int_equal(drop(f, key), 0);
	}
	s = flags_current(f->fl);
	n = flags_snap_count(s);
	assert_int_equal(n, 2 + 700 - 234);
	assert_ordered(s);
	for (unsigned i = 0; i < 700; i++) {
		snprintf(key, sizeof(key), "m%04u", i);
		if (i % 3 == 0)
			assert_null(flags_snap_get(s, key, strlen(key)));
		else
			assert_non_null(flags_snap_get(s, key, strlen(key)));
	}
	assert_int_equal(flags_snap_count(early), 2 + 351);
	flags_snap_unref(early);
}

/* A change from another node (no prepared entry) is parsed and applied the same way. */
static void test_remote_change(void **state)
{
	struct fx *f = *state;
	const char *src = NULL;
	uint64_t rev = flags_revision(f->fl) + 10;
	struct state_update u = {.kind = "flag",
	                         .name = "r1",
	                         .json = "{\"key\":\"r1\",\"variants\":{\"on\":true,\"off\":false},"
	                                 "\"rollout\":{\"on\":25}}",
	                         .rev = (int64_t)rev,
	                         .origin = STATE_REMOTE};

	assert_int_equal(state_apply(f->state, &u), 0);
	assert_non_null(flags_def(f->fl, "r1", &src));
	assert_string_equal(src, "api");
	assert_int_equal(flags_revision(f->fl), rev);
	assert_string_equal(f->last_key, "r1");
	assert_true(flags_has_api(f->fl, "r1"));
	/* one that does not validate here is refused: the running state is kept */
	u.json = "{\"key\":\"r1\",\"rules\":[{\"segment\":\"nope\",\"serve\":\"on\"}]}";
	u.rev = (int64_t)rev + 1;
	assert_int_equal(state_apply(f->state, &u), 0);
	assert_non_null(flags_def(f->fl, "r1", NULL));
	assert_int_equal(flags_revision(f->fl), rev);
	/* a remote delete */
	u.json = NULL;
	u.rev = (int64_t)rev + 2;
	assert_int_equal(state_apply(f->state, &u), 0);
	assert_null(flags_def(f->fl, "r1", NULL));
	assert_int_equal(flags_revision(f->fl), rev + 2);
}

/* Codes, not statuses; a refused change writes nothing. */
static void test_errors(void **state)
{
	struct fx *f = *state;
	uint64_t rev = flags_revision(f->fl);
	json_t *bad = json_pack("{s:{s:b}, s:s}", "variants", "on", 1, "off_variant", "zz");
	struct config_errors errs;
	char msg[256];

	assert_int_equal(flags_set_percent(f->fl, "nope", 1000, "ops", msg, sizeof(msg)),
	                 ERR_NOTFOUND);
	config_errors_init(&errs);
	assert_int_equal(
	    flags_put(f->fl, "x", bad, "ops", "flag.created", NULL, &errs, msg, sizeof(msg)),
	    ERR_INVALID);
	assert_true(errs.n > 0);
	config_errors_release(&errs);
	json_decref(bad);
	assert_int_equal(flags_revision(f->fl), rev);
	assert_int_equal(put(f, "x", 5), 0);
	assert_int_equal(put(f, "x", 5), ERR_NOCHANGE);
	assert_int_equal(flags_set_percent(f->fl, "x", 6000, "ops", msg, sizeof(msg)), 0);
	assert_int_equal(flags_set_percent(f->fl, "x", 6000, "ops", msg, sizeof(msg)), 0);
	assert_int_equal(f->changed, 2); /* the repeats changed nothing */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_derive_shares_unchanged, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_counters_without_ceiling, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_many_changes_keep_order, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_remote_change, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
