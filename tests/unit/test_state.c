/*
 * test_state.c - the state path: documents and events commit together or
 * not at all, subscribers hear exactly what committed, fences refuse.
 * Runs on an in-memory SQLite store.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/err.h"
#include "state/state.h"
#include "store/store.h"

struct seen {
	int n;
	char kind[32], name[64], json[256];
	int64_t rev;
	enum state_origin origin;
	void *prepared;
	int deleted;
};

static void on_update(void *arg, const struct state_update *u)
{
	struct seen *s = arg;

	s->n++;
	snprintf(s->kind, sizeof(s->kind), "%s", u->kind);
	snprintf(s->name, sizeof(s->name), "%s", u->name);
	snprintf(s->json, sizeof(s->json), "%s", u->json ? u->json : "");
	s->deleted = !u->json;
	s->rev = u->rev;
	s->origin = u->origin;
	s->prepared = u->prepared;
}

struct fx {
	struct store *st;
	struct state *s;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256];

	f->st = store_open("sqlite::memory:", err, sizeof(err));
	assert_non_null(f->st);
	f->s = state_new(f->st);
	assert_non_null(f->s);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	state_free(f->s);
	store_close(f->st);
	free(f);
	return 0;
}

static int count_events(struct store *st, const char *kind)
{
	json_t *a = NULL;
	size_t i;
	json_t *v;
	int n = 0;

	assert_int_equal(store_events_list(st, 0, 1000, NULL, &a), 0);
	json_array_foreach(a, i, v)
	{
		if (!kind || !strcmp(json_string_value(json_object_get(v, "kind")), kind))
			n++;
	}
	json_decref(a);
	return n;
}

/* A document and its event land together; the subscriber of its kind hears it. */
static void test_commit_publishes_to_kind(void **state)
{
	struct fx *f = *state;
	struct seen flag = {0}, svc = {0};
	int marker;
	int64_t rev = 0, evid = 0;
	char *text = NULL;

	assert_int_equal(state_subscribe(f->s, "flag", on_update, &flag), 0);
	assert_int_equal(state_subscribe(f->s, "service", on_update, &svc), 0);
	assert_int_equal(state_subscribe(f->s, "flag", on_update, &flag), -EEXIST);
	struct state_doc d = {"flag", "checkout", "{\"on\":true}", STORE_REV_ANY, &marker};
	struct state_event e = {"ops", "flag.updated", "flag/checkout", "{\"a\":1}", &evid};
	assert_int_equal(state_commit(f->s, &d, 1, &e, 1, &rev), 0);
	assert_true(rev > 0);
	assert_true(evid > 0);
	assert_int_equal(state_revision(f->s), rev);
	assert_int_equal(flag.n, 1);
	assert_int_equal(svc.n, 0);
	assert_string_equal(flag.name, "checkout");
	assert_string_equal(flag.json, "{\"on\":true}");
	assert_int_equal(flag.rev, rev);
	assert_int_equal(flag.origin, STATE_LOCAL);
	assert_ptr_equal(flag.prepared, &marker);
	assert_int_equal(store_doc_get(f->st, "flag", "checkout", &text, NULL), 0);
	assert_string_equal(text, "{\"on\":true}");
	free(text);
	assert_int_equal(count_events(f->st, "flag.updated"), 1);

	/* delete */
	d.json = NULL;
	assert_int_equal(state_commit(f->s, &d, 1, &e, 1, NULL), 0);
	assert_int_equal(flag.n, 2);
	assert_true(flag.deleted);
	assert_int_equal(store_doc_get(f->st, "flag", "checkout", NULL, NULL), STORE_ERR_NOTFOUND);

	assert_int_equal(state_unsubscribe(f->s, "flag", on_update, &flag), 0);
	assert_int_equal(state_unsubscribe(f->s, "flag", on_update, &flag), -ENOENT);
}

/* A conflicting revision writes nothing: no document, no event, nobody told. */
static void test_conflict_writes_nothing(void **state)
{
	struct fx *f = *state;
	struct seen seen = {0};
	char msg[256];

	assert_int_equal(state_subscribe(f->s, "service", on_update, &seen), 0);
	struct state_doc docs[2] = {
	    {"service", "a", "{\"w\":1}", STORE_REV_ANY, NULL},
	    {"service", "b", "{\"w\":2}", 12345, NULL}, /* wrong expected revision */
	};
	struct state_event e = {"ops", "service.updated", "service/a", NULL, NULL};
	assert_int_equal(state_commit(f->s, docs, 2, &e, 1, NULL), ERR_CONFLICT);
	assert_int_equal(seen.n, 0);
	assert_int_equal(store_doc_get(f->st, "service", "a", NULL, NULL), STORE_ERR_NOTFOUND);
	assert_int_equal(count_events(f->st, NULL), 0);
	state_errmsg(f->s, msg, sizeof(msg));
	assert_non_null(strstr(msg, "service/b"));

	/* a bad event (details not an object) undoes the documents before it */
	docs[1].expect_rev = STORE_REV_ANY;
	e.details = "[1]";
	assert_int_equal(state_commit(f->s, docs, 2, &e, 1, NULL), -EINVAL);
	assert_int_equal(seen.n, 0);
	assert_int_equal(store_doc_get(f->st, "service", "a", NULL, NULL), STORE_ERR_NOTFOUND);
}

static int fence_says;
static int fence(void *arg, struct store *st)
{
	(void)arg;
	(void)st;
	return fence_says;
}

/* The fence runs inside the transaction: a refusal rolls everything back. */
static void test_fence_refuses(void **state)
{
	struct fx *f = *state;
	struct seen seen = {0};

	assert_int_equal(state_subscribe(f->s, "rollout", on_update, &seen), 0);
	state_set_fence(f->s, fence, NULL);
	fence_says = ERR_CONFLICT;
	struct state_doc d = {"rollout", "r", "{\"step\":2}", STORE_REV_ANY, NULL};
	struct state_event e = {"canaryd", "rollout.step", "rollout/r", NULL, NULL};
	assert_int_equal(state_commit(f->s, &d, 1, &e, 1, NULL), ERR_CONFLICT);
	assert_int_equal(state_event(f->s, &e), ERR_CONFLICT);
	assert_int_equal(seen.n, 0);
	assert_int_equal(count_events(f->st, NULL), 0);
	assert_int_equal(store_doc_get(f->st, "rollout", "r", NULL, NULL), STORE_ERR_NOTFOUND);
	fence_says = 0;
	assert_int_equal(state_commit(f->s, &d, 1, &e, 1, NULL), 0);
	assert_int_equal(seen.n, 1);
	assert_int_equal(state_event(f->s, &e), 0);
	assert_int_equal(count_events(f->st, "rollout.step"), 2);
}

static struct state *nested_s;
static int nested_rc = 1;
static void nested(void *arg, const struct state_update *u)
{
	struct state_event e = {"x", "y.z", NULL, NULL, NULL};

	(void)arg;
	(void)u;
	nested_rc = state_event(nested_s, &e);
}

/* Remote changes reach the same subscribers, marked remote; no nested commits. */
static void test_apply_remote_and_no_nesting(void **state)
{
	struct fx *f = *state;
	struct seen seen = {0};

	assert_int_equal(state_subscribe(f->s, "faults", on_update, &seen), 0);
	struct state_update u = {"faults", "svc", "{\"x\":1}", 77, STATE_LOCAL, (void *)1};
	assert_int_equal(state_apply(f->s, &u), 0);
	assert_int_equal(seen.n, 1);
	assert_int_equal(seen.origin, STATE_REMOTE);
	assert_null(seen.prepared);
	assert_int_equal(seen.rev, 77);
	assert_int_equal(state_revision(f->s), 77);

	nested_s = f->s;
	assert_int_equal(state_subscribe(f->s, "mirror", nested, NULL), 0);
	struct state_doc d = {"mirror", "svc", "{}", STORE_REV_ANY, NULL};
	assert_int_equal(state_commit(f->s, &d, 1, NULL, 0, NULL), 0);
	assert_int_equal(nested_rc, -EBUSY);
	assert_int_equal(state_commit(f->s, NULL, 0, NULL, 0, NULL), -EINVAL);
}

static void test_err_mapping(void **state)
{
	(void)state;
	assert_int_equal(state_err_of_store(STORE_ERR_UNAVAILABLE), ERR_UNAVAILABLE);
	assert_int_equal(state_err_of_store(STORE_ERR_CONFLICT), ERR_CONFLICT);
	assert_int_equal(state_err_of_store(STORE_ERR_BACKEND), ERR_STORE);
	assert_int_equal(state_err_of_store(-ENOMEM), -ENOMEM);
	assert_string_equal(err_str(ERR_UNAVAILABLE), "store unavailable");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_commit_publishes_to_kind, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_conflict_writes_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fence_refuses, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_apply_remote_and_no_nesting, setup, teardown),
	    cmocka_unit_test(test_err_mapping),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
