/* Traffic module (proxy/traffic.h): a change goes through the state layer
 * (document + event in one transaction, then the subscriber publishes a
 * table derived from the last one); refused changes write nothing; remote
 * changes are applied like local ones; a restart reads the documents back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/err.h"
#include "metrics/stats.h"
#include "proxy/proxy.h"
#include "proxy/table.h"
#include "proxy/traffic.h"
#include "state/state.h"
#include "store/store.h"

static const char *yaml = "admin: {listen: 127.0.0.1:9901}\n"
                          "listeners:\n"
                          "  - name: pub\n"
                          "    listen: 127.0.0.1:18080\n"
                          "    routes:\n"
                          "      - {match: {path_prefix: /}, service: web}\n"
                          "      - {match: {path_prefix: /api/}, service: api}\n"
                          "services:\n"
                          "  web:\n"
                          "    versions: {v1: {endpoints: [127.0.0.1:7001]}, v2: {endpoints: "
                          "[127.0.0.1:7002]}}\n"
                          "    stable: v1\n"
                          "  api:\n"
                          "    versions: {v1: {endpoints: [127.0.0.1:7003]}, v3: {endpoints: "
                          "[127.0.0.1:7004]}}\n"
                          "    stable: v1\n";

struct fixture {
	struct store *st;
	struct state *state;
	struct metrics_registry *metrics;
	struct proxy *proxy;
	struct config_ref *cref;
	struct traffic *t;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct config_errors errs;
	struct config *cfg;
	char err[256];

	config_errors_init(&errs);
	cfg = config_load_string("t.yaml", yaml, strlen(yaml), &errs);
	config_errors_release(&errs);
	if (!f || !cfg)
		return -1;
	f->cref = config_ref_new(cfg);
	f->st = store_open("sqlite::memory:", err, sizeof(err));
	f->state = f->st ? state_new(f->st) : NULL;
	f->metrics = metrics_registry_new(1, 64);
	f->proxy = proxy_new(1, f->metrics, 1);
	f->t = f->state && f->proxy ? traffic_new(f->state, f->proxy, f->metrics) : NULL;
	if (!f->t || traffic_load(f->t, f->cref, err, sizeof(err)) != 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	traffic_free(f->t);
	proxy_free(f->proxy);
	metrics_registry_free(f->metrics);
	state_free(f->state);
	store_close(f->st);
	snap_obj_unref(&f->cref->obj);
	free(f);
	return 0;
}

/* The published table's service (the caller unrefs *t). */
static const struct proxy_service *published(struct fixture *f, const char *name,
                                             struct proxy_table **t)
{
	*t = proxy_table_get(f->proxy);
	assert_non_null(*t);
	return proxy_table_service(*t, name);
}

static char *doc(struct fixture *f, const char *kind, const char *name)
{
	char *text = NULL;

	if (store_doc_get(f->st, kind, name, &text, NULL) != 0)
		return NULL;
	return text;
}

static int count_event(void *arg, int64_t id, int64_t ts, const char *actor, const char *kind,
                       const char *subject, const char *details)
{
	(*(int *)arg)++;
	return 0;
}

static int events(struct fixture *f, const char *kind)
{
	struct store_events_query q = {.kind = kind};
	int n = 0;

	assert_int_equal(store_events_each(f->st, &q, count_event, &n), 0);
	return n;
}

static void test_weight_change_is_persisted_audited_and_published(void **state)
{
	struct fixture *f = *state;
	struct proxy_table *before, *after;
	const struct proxy_service *web0, *api0, *web, *api;
	char *text;

	api0 = published(f, "api", &before);
	web0 = proxy_table_service(before, "web");
	assert_int_equal(traffic_set_weight(f->t, "web", "v2", 25000, "alice"), 0);
	web = published(f, "web", &after);
	api = proxy_table_service(after, "api");
	assert_ptr_not_equal(after, before);
	assert_int_equal(web->canary, 1);
	assert_int_equal(web->weight, 25000);
	/* only the changed service was rebuilt; the other is shared */
	assert_ptr_not_equal(web->mem, web0->mem);
	assert_ptr_equal(api->mem, api0->mem);
	text = doc(f, "traffic", "web");
	assert_non_null(text);
	assert_non_null(strstr(text, "\"weight_thousandths\":25000"));
	assert_non_null(strstr(text, "\"canary\":\"v2\""));
	free(text);
	assert_int_equal(events(f, "service.traffic"), 1);
	assert_true(traffic_published_rev(f->t) > 0);
	snap_obj_unref(&before->obj);
	snap_obj_unref(&after->obj);
}

static void test_refused_changes_write_nothing(void **state)
{
	struct fixture *f = *state;
	struct proxy_table *before, *after;
	char msg[256];

	published(f, "web", &before);
	assert_int_equal(traffic_set_weight(f->t, "web", "v9", 1000, "alice"), ERR_INVALID);
	assert_non_null(strstr(traffic_errmsg(f->t, msg, sizeof(msg)), "v9"));
	assert_int_equal(traffic_set_weight(f->t, "nope", NULL, 0, "alice"), ERR_NOTFOUND);
	assert_int_equal(traffic_set_mirror(f->t, "nope", "v2", 1000, "alice"), ERR_NOTFOUND);
	assert_null(doc(f, "traffic", "web"));
	assert_int_equal(events(f, NULL), 0);
	published(f, "web", &after);
	assert_ptr_equal(after, before);
	snap_obj_unref(&before->obj);
	snap_obj_unref(&after->obj);
}

static void test_mirror_and_faults_set_and_clear(void **state)
{
	struct fixture *f = *state;
	struct config_fault fault = {
	    .has_abort = true, .abort_status = 503, .abort_percent = 50000};
	struct proxy_table *t;
	const struct proxy_service *svc;
	char *text;

	assert_int_equal(traffic_set_mirror(f->t, "api", "v3", 10000, "bob"), 0);
	assert_int_equal(traffic_set_fault(f->t, "api", "v1", &fault, "bob"), 0);
	svc = published(f, "api", &t);
	assert_int_equal(svc->mirror.version, 1);
	assert_int_equal(svc->mirror.percent, 10000);
	assert_int_equal(svc->mirror.runtime, 1);
	assert_int_equal(svc->versions[0].fault.abort_status, 503);
	assert_int_equal(svc->versions[0].fault.runtime, 1);
	snap_obj_unref(&t->obj);
	text = doc(f, "faults", "api");
	assert_non_null(text);
	assert_non_null(strstr(text, "\"v1\""));
	free(text);

	assert_int_equal(traffic_set_mirror(f->t, "api", NULL, 0, "bob"), 0);
	assert_int_equal(traffic_set_fault(f->t, "api", "v1", NULL, "bob"), 0);
	/* clearing what is not set is fine */
	assert_int_equal(traffic_set_fault(f->t, "api", "v3", NULL, "bob"), 0);
	svc = published(f, "api", &t);
	assert_int_equal(svc->mirror.version, -1);
	assert_int_equal(svc->versions[0].fault.abort_percent, 0);
	assert_int_equal(svc->versions[0].fault.runtime, 0);
	snap_obj_unref(&t->obj);
	assert_null(doc(f, "mirror", "api"));
	assert_null(doc(f, "faults", "api"));
	assert_int_equal(events(f, "service.mirror"), 2);
	assert_int_equal(events(f, "service.faults"), 3);
}

static void test_promotion_and_stable_of(void **state)
{
	struct fixture *f = *state;
	struct proxy_table *t;
	const struct proxy_service *svc;

	assert_string_equal(traffic_stable_of(f->t, "web"), "v1");
	assert_null(traffic_stable_of(f->t, "nope"));
	assert_int_equal(traffic_set_weight(f->t, "web", "v2", 50000, "canaryd"), 0);
	assert_int_equal(traffic_set_stable(f->t, "web", "v2", "canaryd"), 0);
	svc = published(f, "web", &t);
	assert_int_equal(svc->stable, 1);
	assert_int_equal(svc->canary, -1);
	snap_obj_unref(&t->obj);
	assert_string_equal(traffic_stable_of(f->t, "web"), "v2");
	/* a later weight change keeps the promoted stable */
	assert_int_equal(traffic_set_weight(f->t, "web", "v1", 1000, "canaryd"), 0);
	assert_string_equal(traffic_stable_of(f->t, "web"), "v2");
	assert_int_equal(events(f, "service.promoted"), 1);
	assert_int_equal(traffic_inflight(f->t, "web", "v2"), 0);
	assert_int_equal(traffic_wait_applied(f->t, 0), -ETIMEDOUT); /* no worker runs */
}

static void test_remote_change_applies_like_a_local_one(void **state)
{
	struct fixture *f = *state;
	const char *json = "{\"stable\":null,\"canary\":\"v3\",\"weight_thousandths\":7000}";
	struct proxy_table *t;
	const struct proxy_service *svc;

	/* another node committed it: the document is durable, then published here */
	assert_int_equal(store_doc_put(f->st, "traffic", "api", json, STORE_REV_ANY, NULL), 0);
	assert_int_equal(state_apply(f->state, &(struct state_update){.kind = "traffic",
	                                                              .name = "api",
	                                                              .json = json,
	                                                              .rev = 1,
	                                                              .origin = STATE_REMOTE}),
	                 0);
	svc = published(f, "api", &t);
	assert_int_equal(svc->canary, 1);
	assert_int_equal(svc->weight, 7000);
	snap_obj_unref(&t->obj);
	/* and a later local change to the mirror keeps it */
	assert_int_equal(traffic_set_mirror(f->t, "api", "v3", 1000, "bob"), 0);
	svc = published(f, "api", &t);
	assert_int_equal(svc->canary, 1);
	assert_int_equal(svc->weight, 7000);
	snap_obj_unref(&t->obj);
}

static void test_restart_reads_the_documents_back(void **state)
{
	struct fixture *f = *state;
	struct config_fault fault = {.has_delay = true, .delay_ms = 50, .delay_percent = 100000};
	struct proxy_table *t;
	const struct proxy_service *svc;
	char err[256];

	assert_int_equal(traffic_set_weight(f->t, "api", "v3", 12000, "a"), 0);
	assert_int_equal(traffic_set_mirror(f->t, "web", "v2", 3000, "a"), 0);
	assert_int_equal(traffic_set_fault(f->t, "web", "v2", &fault, "a"), 0);
	traffic_free(f->t);
	f->t = traffic_new(f->state, f->proxy, f->metrics);
	assert_non_null(f->t);
	assert_int_equal(traffic_load(f->t, f->cref, err, sizeof(err)), 0);
	svc = published(f, "api", &t);
	assert_int_equal(svc->canary, 1);
	assert_int_equal(svc->weight, 12000);
	svc = proxy_table_service(t, "web");
	assert_int_equal(svc->mirror.version, 1);
	assert_int_equal(svc->mirror.percent, 3000);
	assert_int_equal(svc->versions[1].fault.delay_ms, 50);
	snap_obj_unref(&t->obj);
}

static void test_reload_keeps_changes_made_after_its_build(void **state)
{
	struct fixture *f = *state;
	struct proxy_table *built, *t;
	const struct proxy_service *svc;
	char err[256];

	/* a reload builds first, then resumes rollouts, which may change weights */
	built = traffic_build(f->t, f->cref, err, sizeof(err));
	assert_non_null(built);
	assert_int_equal(traffic_set_weight(f->t, "web", "v2", 40000, "canaryd"), 0);
	traffic_use(f->t, f->cref, built);
	svc = published(f, "web", &t);
	assert_int_equal(svc->canary, 1);
	assert_int_equal(svc->weight, 40000);
	snap_obj_unref(&t->obj);
	/* without a change in between, the built table is the one published */
	built = traffic_build(f->t, f->cref, err, sizeof(err));
	traffic_use(f->t, f->cref, built);
	published(f, "web", &t);
	assert_ptr_equal(t, built);
	snap_obj_unref(&t->obj);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_weight_change_is_persisted_audited_and_published,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refused_changes_write_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mirror_and_faults_set_and_clear, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_promotion_and_stable_of, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_remote_change_applies_like_a_local_one, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_restart_reads_the_documents_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reload_keeps_changes_made_after_its_build, setup,
	                                    teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
