/*
 * canaryd - progressive-delivery engine: main.
 *
 * The main thread is the control thread: it owns the configuration, the
 * store, the admin API and (later) the rollout engine and judge.  Data-plane
 * workers run their own loops and only read immutable snapshots.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "analysis/source.h"
#include "api/admin.h"
#include "api/api.h"
#include "api/flags.h"
#include "api/rollouts.h"
#include "api/services.h"
#include "config/config.h"
#include "core/jobs.h"
#include "core/log.h"
#include "core/loop.h"
#include "metrics/stats.h"
#include "proxy/mirror.h"
#include "proxy/proxy.h"
#include "proxy/table.h"
#include "rollout/engine.h"
#include "rollout/evidence.h"
#include "store/store.h"

#define MAX_SERIES           4096
#define SHUTDOWN_DEADLINE_MS 30000
#define ENGINE_TICK_MS       100
#define JOB_THREADS          2
#define JOB_QUEUE            256
#define MAX_NOTIFY_PENDING   256

struct daemon {
	const char *config_path;
	struct config *cfg;      /* the running configuration, owned by cref */
	struct config_ref *cref; /* refcounted: routing tables point into it */
	struct metrics_registry *metrics;
	struct proxy *proxy;
	struct services_backend services;
	struct rollout_engine *engine;
	struct rollout_backend rollout_be;
	struct api_flags *flags; /* feature flags: API, OFREP, stream */
	struct loop_timer tick;
	uint64_t published_rev; /* of the last routing table published */
	struct jobs *jobs;      /* hooks and notifications */
	struct {
		uint64_t id;
		char rollout[128], kind[64], url[512];
	} notify_pending[MAX_NOTIFY_PENDING];
	size_t nnotify_pending;
	char evidence_dir[1024];
	struct store *store;
	struct loop *loop;
	struct api api;
	struct admin *admin;
	struct auth_token *tokens;
	struct api_listener_info *listeners;
	char **listener_addrs;
	size_t nlisteners;
	int stopping;
};

/* ---- traffic state: persisted per service as a store document ---- */

struct traffic_list {
	struct proxy_traffic *v;
	size_t n;
};

static int traffic_collect(void *arg, const char *name, const char *json, int64_t rev)
{
	struct traffic_list *tl = arg;
	json_t *doc = json_loads(json, 0, NULL);
	struct proxy_traffic *grown;
	json_t *c, *w, *s;

	if (!doc)
		return 0;
	grown = realloc(tl->v, (tl->n + 1) * sizeof(*tl->v));
	if (!grown) {
		json_decref(doc);
		return -1;
	}
	tl->v = grown;
	memset(&tl->v[tl->n], 0, sizeof(tl->v[0]));
	c = json_object_get(doc, "canary");
	w = json_object_get(doc, "weight_thousandths");
	s = json_object_get(doc, "stable");
	tl->v[tl->n].service = strdup(name);
	tl->v[tl->n].stable = json_is_string(s) ? strdup(json_string_value(s)) : NULL;
	tl->v[tl->n].canary = json_is_string(c) ? strdup(json_string_value(c)) : NULL;
	tl->v[tl->n].weight = json_is_integer(w) ? (uint32_t)json_integer_value(w) : 0;
	tl->n++;
	json_decref(doc);
	return 0;
}

/* The entry of service in tl, added (no canary, no mirror) when absent. */
static struct proxy_traffic *traffic_entry(struct traffic_list *tl, const char *service)
{
	struct proxy_traffic *grown;

	for (size_t i = 0; i < tl->n; i++)
		if (strcmp(tl->v[i].service, service) == 0)
			return &tl->v[i];
	grown = realloc(tl->v, (tl->n + 1) * sizeof(*tl->v));
	if (!grown)
		return NULL;
	tl->v = grown;
	memset(&tl->v[tl->n], 0, sizeof(tl->v[0]));
	tl->v[tl->n].service = strdup(service);
	if (!tl->v[tl->n].service)
		return NULL;
	return &tl->v[tl->n++];
}

/* A "mirror" document: {"version": V, "percent_thousandths": P} (runtime mirror). */
static int mirror_collect(void *arg, const char *name, const char *json, int64_t rev)
{
	json_t *doc = json_loads(json, 0, NULL);
	struct proxy_traffic *e;
	json_t *v, *pc;

	if (!doc)
		return 0;
	e = traffic_entry(arg, name);
	if (!e) {
		json_decref(doc);
		return -1;
	}
	v = json_object_get(doc, "version");
	pc = json_object_get(doc, "percent_thousandths");
	e->mirror_set = 1;
	e->mirror_version = json_is_string(v) ? strdup(json_string_value(v)) : NULL;
	e->mirror_percent = json_is_integer(pc) ? (uint32_t)json_integer_value(pc) : 0;
	json_decref(doc);
	return 0;
}

/* The JSON form of a fault, as persisted and as the API shows it. */
static json_t *fault_json(const struct config_fault *f)
{
	json_t *o = json_object();

	if (f->has_delay)
		json_object_set_new(o, "delay",
		                    json_pack("{s:I, s:I}", "ms", (json_int_t)f->delay_ms,
		                              "percent_thousandths", (json_int_t)f->delay_percent));
	if (f->has_abort)
		json_object_set_new(o, "abort",
		                    json_pack("{s:I, s:I}", "status", (json_int_t)f->abort_status,
		                              "percent_thousandths", (json_int_t)f->abort_percent));
	return o;
}

static void fault_from_json(json_t *o, struct config_fault *f)
{
	json_t *d = json_object_get(o, "delay"), *a = json_object_get(o, "abort");

	memset(f, 0, sizeof(*f));
	if (json_is_object(d)) {
		f->has_delay = true;
		f->delay_ms = (uint32_t)json_integer_value(json_object_get(d, "ms"));
		f->delay_percent =
		    (uint32_t)json_integer_value(json_object_get(d, "percent_thousandths"));
	}
	if (json_is_object(a)) {
		f->has_abort = true;
		f->abort_status = (uint32_t)json_integer_value(json_object_get(a, "status"));
		f->abort_percent =
		    (uint32_t)json_integer_value(json_object_get(a, "percent_thousandths"));
	}
}

/* A "faults" document: {VERSION: {delay: {...}, abort: {...}}} (runtime faults). */
static int faults_collect(void *arg, const char *name, const char *json, int64_t rev)
{
	json_t *doc = json_loads(json, 0, NULL), *v;
	struct proxy_traffic *e;
	struct proxy_fault_set *fs;
	const char *ver;
	size_t n = 0;

	if (!doc)
		return 0;
	e = traffic_entry(arg, name);
	fs = calloc(json_object_size(doc) + 1, sizeof(*fs));
	if (!e || !fs) {
		free(fs);
		json_decref(doc);
		return -1;
	}
	json_object_foreach(doc, ver, v)
	{
		fs[n].version = strdup(ver);
		if (!fs[n].version)
			break;
		fault_from_json(v, &fs[n].fault);
		n++;
	}
	e->faults = fs;
	e->nfaults = n;
	json_decref(doc);
	return 0;
}

static void traffic_free(struct traffic_list *tl)
{
	for (size_t i = 0; i < tl->n; i++) {
		free((char *)tl->v[i].service);
		free((char *)tl->v[i].stable);
		free((char *)tl->v[i].canary);
		free((char *)tl->v[i].mirror_version);
		for (size_t k = 0; k < tl->v[i].nfaults; k++)
			free((char *)tl->v[i].faults[k].version);
		free((struct proxy_fault_set *)tl->v[i].faults);
	}
	free(tl->v);
	tl->v = NULL;
	tl->n = 0;
}

static int series_for(void *ctx, const char *svc, const char *version)
{
	return metrics_series_id(ctx, svc, version);
}

/*
 * Builds a routing table from cref and the persisted traffic state, with
 * override (may be NULL; borrowed) replacing one service's entry.  NULL +
 * err on failure.
 */
static struct proxy_table *build_table(struct daemon *d, struct config_ref *cref,
                                       const struct proxy_traffic *override, char *err,
                                       size_t errlen)
{
	struct traffic_list tl = {NULL, 0};
	struct proxy_traffic *all = NULL;
	struct proxy_table *t = NULL;
	size_t n = 0;

	if (store_doc_list(d->store, "traffic", traffic_collect, &tl) != 0 ||
	    store_doc_list(d->store, "mirror", mirror_collect, &tl) != 0 ||
	    store_doc_list(d->store, "faults", faults_collect, &tl) != 0) {
		snprintf(err, errlen, "cannot read the traffic state from the store");
		goto out;
	}
	all = calloc(tl.n + 1, sizeof(*all));
	if (!all) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < tl.n; i++) {
		if (!override || strcmp(tl.v[i].service, override->service) != 0) {
			all[n++] = tl.v[i];
			continue;
		}
		/* the override changes the weights; the service keeps its mirror and faults */
		all[n] = *override;
		all[n].mirror_set = tl.v[i].mirror_set;
		all[n].mirror_version = tl.v[i].mirror_version;
		all[n].mirror_percent = tl.v[i].mirror_percent;
		all[n].faults = tl.v[i].faults;
		all[n].nfaults = tl.v[i].nfaults;
		n++;
		override = NULL;
	}
	if (override)
		all[n++] = *override;
	t = proxy_table_build(cref, all, n, proxy_registry(d->proxy), series_for, d->metrics, err,
	                      errlen);
out:
	free(all);
	traffic_free(&tl);
	return t;
}

static void record_event(struct daemon *d, const char *actor, const char *kind, const char *subject,
                         json_t *details);

/*
 * Writes (kind, name) = text (NULL: deletes it, absent is fine) and its
 * audit event in one transaction.  0 or a store error.
 */
static int persist_doc(struct daemon *d, const char *kind, const char *name, const char *text,
                       const char *actor, const char *event, const json_t *details)
{
	char *dt = json_dumps(details, JSON_COMPACT);
	int rc = store_begin(d->store);

	if (!rc) {
		if (text)
			rc = store_doc_put(d->store, kind, name, text, STORE_REV_ANY, NULL);
		else if ((rc = store_doc_delete(d->store, kind, name, STORE_REV_ANY, NULL)) ==
		         STORE_ERR_NOTFOUND)
			rc = 0;
	}
	if (!rc)
		rc = store_event_append(d->store, actor, event, name, dt, NULL);
	if (!rc)
		rc = store_commit(d->store);
	else
		store_rollback(d->store);
	free(dt);
	return rc;
}

/*
 * Sets service's traffic: stable (NULL: keep the current one), canary and
 * weight.  Persisted with its event (kind) before it is published.
 * Returns 0, or an HTTP status with a message in err.
 */
static int apply_traffic(struct daemon *d, const char *service, const char *stable,
                         const char *canary, uint32_t weight, const char *actor, const char *kind,
                         char *err, size_t errlen)
{
	struct proxy_traffic pt = {
	    .service = service, .stable = stable, .canary = canary, .weight = weight};
	const struct config_service *cs = config_service_find(d->cfg, service);
	struct proxy_table *t, *old;
	const struct proxy_service *before;
	const char *before_stable = NULL;
	json_t *doc, *details;
	char *text;
	int rc;

	old = proxy_table_get(d->proxy);
	before = old ? proxy_table_service(old, service) : NULL;
	if (before && before->stable >= 0)
		before_stable = before->versions[before->stable].name;
	if (!stable)
		stable = before_stable;
	/* only a stable other than the config's is recorded (a completed rollout) */
	pt.stable = stable && cs && strcmp(stable, cs->stable) != 0 ? stable : NULL;
	t = build_table(d, d->cref, &pt, err, errlen);
	if (!t) {
		if (old)
			snap_obj_unref(&old->obj);
		return 422;
	}
	doc = json_pack("{s:o, s:o, s:I, s:f}", "stable",
	                pt.stable ? json_string(pt.stable) : json_null(), "canary",
	                canary ? json_string(canary) : json_null(), "weight_thousandths",
	                (json_int_t)weight, "weight", weight / 1000.0);
	text = json_dumps(doc, JSON_COMPACT);
	details = json_pack("{s:o, s:o, s:f, s:f, s:o, s:o}", "canary",
	                    canary ? json_string(canary) : json_null(), "before_canary",
	                    before && before->canary >= 0
	                        ? json_string(before->versions[before->canary].name)
	                        : json_null(),
	                    "weight", weight / 1000.0, "before_weight",
	                    before && before->canary >= 0 ? before->weight / 1000.0 : 0.0, "stable",
	                    stable ? json_string(stable) : json_null(), "before_stable",
	                    before_stable ? json_string(before_stable) : json_null());
	if (old)
		snap_obj_unref(&old->obj);
	/* persisted (with its event) before it is applied and acknowledged */
	rc = text ? persist_doc(d, "traffic", service, text, actor, kind, details) : -ENOMEM;
	free(text);
	json_decref(doc);
	json_decref(details);
	if (rc) {
		snap_obj_unref(&t->obj);
		snprintf(err, errlen, "cannot persist the change: %s", store_strerror(rc));
		return 500;
	}
	d->published_rev = proxy_publish(d->proxy, t);
	log_info("traffic changed", "service", service, "canary", canary ? canary : "", "stable",
	         stable ? stable : "", "actor", actor, NULL);
	return 0;
}

static int set_traffic(void *ctx, const char *service, const char *canary, uint32_t weight,
                       const char *actor, char *err, size_t errlen)
{
	return apply_traffic(ctx, service, NULL, canary, weight, actor, "service.traffic", err,
	                     errlen);
}

/*
 * Persists (kind, name) = doc (NULL: deletes it) with its event, then
 * rebuilds and publishes the routing table.  The caller validated the
 * change.  Returns 0, or an HTTP status with a message in err.
 */
static int apply_doc(struct daemon *d, const char *kind, const char *name, json_t *doc,
                     const char *actor, const char *event, json_t *details, char *err,
                     size_t errlen)
{
	char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	struct proxy_table *t;
	int rc;

	rc = doc && !text ? -ENOMEM : persist_doc(d, kind, name, text, actor, event, details);
	free(text);
	json_decref(details);
	if (rc) {
		snprintf(err, errlen, "cannot persist the change: %s", store_strerror(rc));
		return 500;
	}
	t = build_table(d, d->cref, NULL, err, errlen);
	if (!t)
		return 500;
	d->published_rev = proxy_publish(d->proxy, t);
	return 0;
}

/*
 * Sets service's runtime mirror to {version, percent} (thousandths);
 * version NULL or percent 0 removes it (the config's mirror applies again).
 */
static int set_mirror(void *ctx, const char *service, const char *version, uint32_t percent,
                      const char *actor, char *err, size_t errlen)
{
	struct daemon *d = ctx;
	json_t *doc = NULL;
	int rc;

	if (version && percent)
		doc = json_pack("{s:s, s:I, s:f}", "version", version, "percent_thousandths",
		                (json_int_t)percent, "percent", percent / 1000.0);
	rc = apply_doc(d, "mirror", service, doc, actor, "service.mirror",
	               json_pack("{s:o, s:f}", "version", doc ? json_string(version) : json_null(),
	                         "percent", doc ? percent / 1000.0 : 0.0),
	               err, errlen);
	json_decref(doc);
	if (!rc)
		log_info("mirror changed", "service", service, "version", doc ? version : "",
		         "actor", actor, NULL);
	return rc;
}

/* Sets (f) or clears (f NULL) the runtime faults of service's version. */
static int set_fault(void *ctx, const char *service, const char *version,
                     const struct config_fault *f, const char *actor, char *err, size_t errlen)
{
	struct daemon *d = ctx;
	char *text = NULL;
	json_t *doc = NULL;
	int rc;

	if (store_doc_get(d->store, "faults", service, &text, NULL) == 0)
		doc = json_loads(text, 0, NULL);
	free(text);
	if (!json_is_object(doc)) {
		json_decref(doc);
		doc = json_object();
	}
	if (f)
		json_object_set_new(doc, version, fault_json(f));
	else
		json_object_del(doc, version);
	rc = apply_doc(
	    d, "faults", service, json_object_size(doc) ? doc : NULL, actor, "service.faults",
	    json_pack("{s:s, s:o}", "version", version, "fault", f ? fault_json(f) : json_null()),
	    err, errlen);
	json_decref(doc);
	if (!rc)
		log_info(f ? "fault set" : "fault cleared", "service", service, "version", version,
		         "actor", actor, NULL);
	return rc;
}

static void usage(FILE *f)
{
	fputs("usage: canaryd [-c FILE] [--check] [--log-level LEVEL]\n"
	      "\n"
	      "  -c, --config FILE   configuration (default canaryd.yaml)\n"
	      "  -t, --check         validate the configuration, print errors or a\n"
	      "                      one-line summary, exit 0 (valid) or 1 (invalid)\n"
	      "  --log-level LEVEL   debug, info (default), warn or error\n"
	      "  -V, --version       print the version\n"
	      "  -h, --help          this help\n"
	      "\n"
	      "signals: SIGHUP reloads the configuration; SIGTERM/SIGINT stop gracefully.\n",
	      f);
}

/* Loads and validates path; prints every error and returns NULL on failure. */
static struct config *load_config(const char *path, char *msg, size_t msglen)
{
	struct config_errors errs;
	struct config *cfg;

	config_errors_init(&errs);
	cfg = config_load_file(path, &errs);
	if (!cfg || config_errors_count(&errs)) {
		config_errors_print(&errs, stderr);
		if (msg) {
			size_t off = 0;

			msg[0] = '\0';
			for (size_t i = 0; i < config_errors_count(&errs) && off < msglen; i++) {
				const struct config_error *e = config_errors_get(&errs, i);
				int n =
				    snprintf(msg + off, msglen - off, "%s%s:%d: %s: %s",
				             i ? "\n" : "", e->file, e->line, e->path, e->message);

				if (n < 0)
					break;
				off += (size_t)n;
			}
		}
		config_free(cfg);
		cfg = NULL;
	}
	config_errors_release(&errs);
	return cfg;
}

static void addr_format(const struct config_addr *a, char *out, size_t n)
{
	if (a->family == AF_INET6)
		snprintf(out, n, "[%s]:%u", a->host, a->port);
	else
		snprintf(out, n, "%s:%u", a->host, a->port);
}

/* Rebuilds the API's view of tokens and listeners from d->cfg. */
static int apply_config_to_api(struct daemon *d)
{
	struct config *cfg = d->cfg;
	struct auth_token *tokens = calloc(cfg->admin.ntokens + 1, sizeof(*tokens));
	struct api_listener_info *ls = calloc(cfg->nlisteners + 1, sizeof(*ls));
	char **addrs = calloc(cfg->nlisteners + 1, sizeof(*addrs));

	if (!tokens || !ls || !addrs) {
		free(tokens);
		free(ls);
		free(addrs);
		return -ENOMEM;
	}
	for (size_t i = 0; i < cfg->admin.ntokens; i++) {
		tokens[i].name = cfg->admin.tokens[i].name;
		tokens[i].secret = cfg->admin.tokens[i].secret;
		tokens[i].scopes = cfg->admin.tokens[i].scopes;
	}
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		addrs[i] = malloc(300);
		if (addrs[i])
			addr_format(&cfg->listeners[i].listen, addrs[i], 300);
		ls[i].name = cfg->listeners[i].name;
		ls[i].addr = addrs[i] ? addrs[i] : "";
		ls[i].up = 0; /* the proxy marks them up once bound */
	}
	free(d->tokens);
	free(d->listeners);
	for (size_t i = 0; i < d->nlisteners; i++)
		free(d->listener_addrs[i]);
	free(d->listener_addrs);
	d->tokens = tokens;
	d->listeners = ls;
	d->listener_addrs = addrs;
	d->nlisteners = cfg->nlisteners;
	d->api.tokens = tokens;
	d->api.ntokens = cfg->admin.ntokens;
	d->api.public_read = cfg->admin.public_read;
	d->api.evaluate_public = cfg->admin.evaluate_public;
	d->api.listeners = ls;
	d->api.nlisteners = cfg->nlisteners;
	return 0;
}

static void record_event(struct daemon *d, const char *actor, const char *kind, const char *subject,
                         json_t *details)
{
	char *s = details ? json_dumps(details, JSON_COMPACT) : NULL;
	int rc = store_event_append(d->store, actor, kind, subject, s, NULL);

	if (rc != 0)
		log_error("cannot record event", "kind", kind, "error", store_strerror(rc), NULL);
	free(s);
	json_decref(details);
}

/* ---- the rollout engine's view of the data plane ---- */

static int engine_set_weight(void *ctx, const char *service, const char *canary, uint32_t weight,
                             const char *actor)
{
	char err[512];
	int rc = set_traffic(ctx, service, canary, weight, actor, err, sizeof(err));

	if (rc)
		log_error("rollout could not set a weight", "service", service, "error", err, NULL);
	return rc ? -1 : 0;
}

/*
 * The rollout engine's shadow step: mirror percent (thousandths) of the
 * service's traffic to version; 0 stops the runtime mirror (the config's
 * applies again).  Wired into struct rollout_backend by the engine.
 */
static int engine_set_shadow(void *ctx, const char *service, const char *version,
                             uint32_t percent_thousandths, const char *actor)
{
	char err[512];
	int rc = set_mirror(ctx, service, percent_thousandths ? version : NULL, percent_thousandths,
	                    actor, err, sizeof(err));

	if (rc)
		log_error("rollout could not set the mirror", "service", service, "error", err,
		          NULL);
	return rc ? -1 : 0;
}

/* The shadow's cumulative comparison counters (proxy/mirror.h). */
static int engine_read_shadow(void *ctx, const char *service, struct mirror_snapshot *out)
{
	struct daemon *d = ctx;

	return proxy_mirror_read(d->proxy, service, out);
}

static int engine_read_cohort(void *ctx, const char *service, const char *version,
                              enum cohort cohort, struct metrics_cohort_snapshot *out)
{
	struct daemon *d = ctx;
	int series = metrics_series_find(d->metrics, service, version);

	if (series < 0) {
		memset(out, 0, sizeof(*out));
		return 0; /* no request recorded yet: an empty cohort */
	}
	return metrics_read(d->metrics, series, cohort, out);
}

/* The sample-ratio guard's counts (metrics_split_*); see struct rollout_backend. */
static void engine_split_reset(void *ctx, const char *service, const char *version)
{
	struct daemon *d = ctx;
	int series = metrics_series_find(d->metrics, service, version);

	if (series >= 0)
		metrics_split_reset(d->metrics, series);
}

static int engine_read_split(void *ctx, const char *service, const char *version,
                             enum cohort cohort, struct metrics_split_snapshot *out)
{
	struct daemon *d = ctx;
	int series = metrics_series_find(d->metrics, service, version);

	if (series < 0) {
		memset(out, 0, sizeof(*out));
		return 0; /* no request recorded yet: an empty count */
	}
	return metrics_split_read(d->metrics, series, cohort, out);
}

/* Requests in flight to (service, version), for the rollback's drain. */
static long engine_inflight(void *ctx, const char *service, const char *version)
{
	struct daemon *d = ctx;
	int series = metrics_series_find(d->metrics, service, version);
	long n;

	if (series < 0)
		return 0; /* never routed to: nothing in flight */
	n = proxy_inflight(d->proxy, series);
	return n < 0 ? -1 : n; /* -1: not counted (series id over the proxy's bound) */
}

static const char *engine_owner(void *ctx, const char *service)
{
	struct daemon *d = ctx;

	return d->engine ? rollout_engine_owner(d->engine, service) : NULL;
}

/* Spins (yielding) until every worker routes with the last published table. */
static int engine_wait_applied(void *ctx, uint64_t timeout_us)
{
	struct daemon *d = ctx;
	uint64_t until = clock_mono_us() + timeout_us;

	while (!proxy_applied(d->proxy, d->published_rev)) {
		if (clock_mono_us() >= until)
			return -ETIMEDOUT;
		sched_yield();
	}
	return 0;
}

static const char *engine_stable_of(void *ctx, const char *service)
{
	struct daemon *d = ctx;
	struct proxy_table *t = proxy_table_get(d->proxy);
	const struct proxy_service *ps = t ? proxy_table_service(t, service) : NULL;
	const struct config_service *cs = config_service_find(d->cfg, service);
	const char *name = NULL;

	/* the name is returned from the running config, which outlives the table */
	if (ps && ps->stable >= 0 && cs)
		for (size_t v = 0; v < cs->nversions; v++)
			if (strcmp(cs->versions[v].name, ps->versions[ps->stable].name) == 0)
				name = cs->versions[v].name;
	if (t)
		snap_obj_unref(&t->obj);
	return name;
}

static json_t *engine_flag_save(void *ctx, const char *flag)
{
	struct daemon *d = ctx;

	return api_flags_save(d->flags, flag);
}

static int engine_flag_set(void *ctx, const char *flag, uint32_t weight, const char *actor)
{
	struct daemon *d = ctx;
	char err[512];

	if (api_flags_set_percent(d->flags, flag, weight, actor, err, sizeof(err)) == 0)
		return 0;
	log_error("rollout could not set a flag's percentage", "flag", flag, "error", err, NULL);
	return -1;
}

static int engine_flag_restore(void *ctx, const char *flag, const json_t *saved, const char *actor)
{
	struct daemon *d = ctx;
	char err[512];

	if (api_flags_restore(d->flags, flag, saved, actor, err, sizeof(err)) == 0)
		return 0;
	log_error("rollout could not restore a flag", "flag", flag, "error", err, NULL);
	return -1;
}

static int engine_set_stable(void *ctx, const char *service, const char *version, const char *actor)
{
	struct daemon *d = ctx;
	char err[512];
	int rc = apply_traffic(d, service, version, NULL, 0, actor, "service.promoted", err,
	                       sizeof(err));

	if (rc)
		log_error("rollout could not make its canary stable", "service", service, "version",
		          version, "error", err, NULL);
	return rc ? -1 : 0;
}

static uint64_t engine_hook_start(void *ctx, const struct config_hook *h, const char *const *argv,
                                  const char *body)
{
	struct daemon *d = ctx;

	if (h->kind == CONFIG_HOOK_EXEC)
		return jobs_submit_exec(d->jobs, argv, h->timeout_ms);
	return jobs_submit_post(d->jobs, h->url, body, h->timeout_ms);
}

static int engine_hook_poll(void *ctx, uint64_t id, struct job_result *out)
{
	struct daemon *d = ctx;

	return jobs_poll(d->jobs, id, out);
}

/* query/http checks are GETs; an exec check's stdout is its value. */
static uint64_t engine_source_start(void *ctx, const struct source_request *req)
{
	struct daemon *d = ctx;

	if (req->kind == CONFIG_SOURCE_EXEC)
		return jobs_submit_exec_stdout(d->jobs, req->argv, req->timeout_ms);
	return jobs_submit_get(d->jobs, req->url, req->timeout_ms);
}

static void engine_source_forget(void *ctx, uint64_t id)
{
	struct daemon *d = ctx;

	jobs_detach(d->jobs, id);
}

/* Writes the evidence bundle under evidence_dir/NAME-GEN-TIME. */
static int engine_evidence(void *ctx, const char *name, uint32_t gen, char *path, size_t pathlen)
{
	struct daemon *d = ctx;
	int64_t now = (int64_t)clock_wall_ms();
	json_t *bundle = rollout_engine_evidence(d->engine, name, now);
	char err[512];
	int rc;

	if (!bundle)
		return -ENOMEM;
	if (mkdir(d->evidence_dir, 0700) == -1 && errno != EEXIST) {
		log_error("cannot create the evidence directory", "dir", d->evidence_dir, NULL);
		json_decref(bundle);
		return -errno;
	}
	snprintf(path, pathlen, "%s/%s-%u-%lld", d->evidence_dir, name, gen, (long long)now);
	rc = evidence_write_dir(bundle, path, err, sizeof(err));
	json_decref(bundle);
	if (rc) {
		log_error("cannot write the evidence bundle", "dir", path, "error", err, NULL);
		return -EIO;
	}
	log_info("evidence bundle written", "rollout", name, "dir", path, NULL);
	return 0;
}

/* Which notify event an engine event kind is; 0 for none. */
static unsigned notify_event_of(const char *kind, const json_t *details)
{
	static const struct {
		const char *kind;
		unsigned ev;
	} map[] = {
	    {"rollout.started", CONFIG_EVENT_STARTED},
	    {"rollout.retry", CONFIG_EVENT_STARTED},
	    {"rollout.step", CONFIG_EVENT_STEP},
	    {"rollout.paused", CONFIG_EVENT_PAUSED},
	    {"rollout.resumed", CONFIG_EVENT_RESUMED},
	    {"rollout.approval_needed", CONFIG_EVENT_APPROVAL_NEEDED},
	    {"rollout.approved", CONFIG_EVENT_APPROVED},
	    {"verdict", CONFIG_EVENT_VERDICT},
	    {"rollout.rollback", CONFIG_EVENT_ROLLBACK},
	    {"rollout.rollback.finished", CONFIG_EVENT_ROLLBACK},
	    {"rollout.completed", CONFIG_EVENT_COMPLETED},
	    {"rollout.failed", CONFIG_EVENT_FAILED},
	};
	const char *cls = json_string_value(json_object_get(details, "class"));

	if (strcmp(kind, "rollout.rollback") == 0 && cls && strcmp(cls, "abort") == 0)
		return CONFIG_EVENT_ABORTED | CONFIG_EVENT_ROLLBACK;
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strcmp(kind, map[i].kind) == 0)
			return map[i].ev;
	return 0;
}

/* One line for humans (Slack's "text"). */
static void notify_text(const char *kind, const char *rollout, const json_t *det, char *out,
                        size_t len)
{
	const char *reason = json_string_value(json_object_get(det, "reason"));

	if (strcmp(kind, "rollout.step") == 0) {
		const char *w = NULL;
		json_t *v;
		char weights[256] = "";
		size_t off = 0;

		json_object_foreach((json_t *)json_object_get(det, "weights"), w, v)
		{
			int n = snprintf(weights + off, sizeof(weights) - off, "%s%s=%.3g%%",
			                 off ? ", " : "", w, json_number_value(v));

			if (n < 0 || (size_t)n >= sizeof(weights) - off)
				break;
			off += (size_t)n;
		}
		snprintf(out, len, "canaryd: rollout %s started step %lld of %lld (%s)%s%s",
		         rollout, (long long)json_integer_value(json_object_get(det, "step")) + 1,
		         (long long)json_integer_value(json_object_get(det, "of")),
		         json_string_value(json_object_get(det, "kind")) ?: "?", off ? ": " : "",
		         weights);
	} else if (strcmp(kind, "rollout.rollback") == 0) {
		snprintf(out, len, "canaryd: rollout %s ROLLED BACK: %s", rollout,
		         reason ? reason : "(no reason)");
	} else if (strcmp(kind, "rollout.rollback.finished") == 0) {
		const char *ev = json_string_value(json_object_get(det, "evidence"));

		snprintf(out, len,
		         "canaryd: rollback of %s finished: %lld hook(s) ok, %lld failed; verify "
		         "%s; evidence %s",
		         rollout, (long long)json_integer_value(json_object_get(det, "hooks_ok")),
		         (long long)json_integer_value(json_object_get(det, "hooks_failed")),
		         json_string_value(json_object_get(det, "verify")) ?: "?",
		         ev ? ev : "not written");
	} else if (strcmp(kind, "verdict") == 0) {
		snprintf(out, len, "canaryd: rollout %s check %s: %s", rollout,
		         json_string_value(json_object_get(det, "check")) ?: "?",
		         reason ? reason : "");
	} else {
		const char *what = strchr(kind, '.') ? strchr(kind, '.') + 1 : kind;

		snprintf(out, len, "canaryd: rollout %s %s%s%s", rollout, what, reason ? ": " : "",
		         reason ? reason : "");
	}
}

/* Engine events -> the rollout's Slack-compatible webhooks (fire, then checked). */
static void engine_notify(void *ctx, const char *kind, const char *rollout, const json_t *details)
{
	struct daemon *d = ctx;
	const struct config_rollout *ro = config_rollout_find(d->cfg, rollout);
	unsigned ev = notify_event_of(kind, details);
	char text[1024];

	if (!ro || !ev || !d->jobs)
		return;
	notify_text(kind, rollout, details, text, sizeof(text));
	for (size_t i = 0; i < ro->nnotify; i++) {
		json_t *body;
		char *s;
		uint64_t id;

		if (!(ro->notify[i].events & ev))
			continue;
		body = json_pack("{s:s, s:{s:s, s:s, s:O}}", "text", text, "canaryd", "event", kind,
		                 "rollout", rollout, "details", (json_t *)details);
		s = body ? json_dumps(body, JSON_COMPACT) : NULL;
		json_decref(body);
		id = s ? jobs_submit_post(d->jobs, ro->notify[i].webhook, s, 10000) : 0;
		free(s);
		if (!id) {
			log_warn("notification dropped: the job queue is full", "rollout", rollout,
			         "event", kind, NULL);
			continue;
		}
		if (d->nnotify_pending == MAX_NOTIFY_PENDING) {
			jobs_detach(d->jobs, id);
			continue;
		}
		d->notify_pending[d->nnotify_pending].id = id;
		snprintf(d->notify_pending[d->nnotify_pending].rollout,
		         sizeof(d->notify_pending[0].rollout), "%s", rollout);
		snprintf(d->notify_pending[d->nnotify_pending].kind,
		         sizeof(d->notify_pending[0].kind), "%s", kind);
		/* kept for the failure log and event: without its password */
		config_url_redact(ro->notify[i].webhook, d->notify_pending[d->nnotify_pending].url,
		                  sizeof(d->notify_pending[0].url));
		d->nnotify_pending++;
	}
}

/* A notification that could not be delivered is logged and audited. */
static void notify_check(struct daemon *d)
{
	for (size_t i = 0; i < d->nnotify_pending;) {
		struct job_result res;
		int rc = jobs_poll(d->jobs, d->notify_pending[i].id, &res);

		if (rc == 1) {
			i++;
			continue;
		}
		if (rc == 0 && res.status != JOB_OK) {
			char subject[160];

			log_warn("notification failed", "rollout", d->notify_pending[i].rollout,
			         "event", d->notify_pending[i].kind, "url",
			         d->notify_pending[i].url, "error", res.error, NULL);
			snprintf(subject, sizeof(subject), "rollout/%s",
			         d->notify_pending[i].rollout);
			record_event(d, "canaryd", "notify.failed", subject,
			             json_pack("{s:s, s:s, s:s, s:i}", "event",
			                       d->notify_pending[i].kind, "url",
			                       d->notify_pending[i].url, "error", res.error,
			                       "http_status", res.http_status));
		}
		d->notify_pending[i] = d->notify_pending[--d->nnotify_pending];
	}
}

static void engine_tick(struct loop *loop, struct loop_timer *t)
{
	struct daemon *d = t->data;

	rollout_engine_tick(d->engine, (int64_t)clock_wall_ms());
	notify_check(d);
	if (!d->stopping)
		loop_timer_start(loop, t, ENGINE_TICK_MS);
}

/*
 * Evidence bundles go next to the SQLite file (DIR/evidence), or under
 * $CANARYD_EVIDENCE_DIR when set.
 */
static void evidence_dir_of(const struct config *cfg, char *out, size_t len)
{
	const char *env = getenv("CANARYD_EVIDENCE_DIR");
	const char *path = cfg->store.kind == CONFIG_STORE_SQLITE ? cfg->store.path : NULL;
	const char *slash = path ? strrchr(path, '/') : NULL;

	if (env && *env)
		snprintf(out, len, "%s", env);
	else if (slash)
		snprintf(out, len, "%.*s/evidence", (int)(slash - path), path);
	else
		snprintf(out, len, "evidence");
}

/* A new engine for cfg that resumes the persisted rollouts; NULL on failure. */
static struct rollout_engine *engine_start(struct daemon *d, const struct config *cfg)
{
	struct rollout_engine *e = rollout_engine_new(cfg, &d->rollout_be);

	if (!e)
		return NULL;
	if (rollout_engine_load(e, (int64_t)clock_wall_ms()) != 0) {
		rollout_engine_free(e);
		return NULL;
	}
	return e;
}

static void write_metrics(void *ctx, struct buf *out)
{
	struct daemon *d = ctx;

	metrics_write_prometheus(d->metrics, out);
	proxy_mirror_write_prometheus(d->proxy, out);
	if (d->engine)
		rollout_engine_write_prometheus(d->engine, out);
	api_flags_write_prometheus(d->flags, out);
}

static int listener_up(void *ctx, const char *name)
{
	struct daemon *d = ctx;

	return proxy_listener_up(d->proxy, name);
}

/* Logs and audits a reload that changed nothing; returns -1 for reload(). */
static int reload_failed(struct daemon *d, const char *actor, const char *msg)
{
	log_error("reload failed, keeping the running configuration", "config", d->config_path,
	          "error", msg, NULL);
	record_event(d, actor, "config.reload_failed", d->config_path,
	             json_pack("{s:s}", "errors", msg));
	return -1;
}

static int reload(void *ctx, const char *actor_in, char *msg, size_t msglen)
{
	struct daemon *d = ctx;
	char actor[128], rev[32];
	struct config *cfg;
	struct config_ref *cref;
	struct proxy_table *t;
	struct rollout_engine *e;

	/* the actor may be a token name of the configuration being replaced */
	snprintf(actor, sizeof(actor), "%s", actor_in);
	msg[0] = '\0';
	cfg = load_config(d->config_path, msg, msglen);
	if (!cfg)
		return reload_failed(d, actor, msg);
	if (api_flags_check(d->flags, cfg, msg, msglen) != 0) {
		config_free(cfg);
		return reload_failed(d, actor, msg);
	}
	cref = config_ref_new(cfg); /* owns cfg from here on, even on failure */
	if (!cref) {
		snprintf(msg, msglen, "out of memory");
		return reload_failed(d, actor, msg);
	}
	t = build_table(d, cref, NULL, msg, msglen);
	if (!t) {
		snap_obj_unref(&cref->obj);
		return reload_failed(d, actor, msg);
	}
	e = engine_start(d, cfg);
	if (!e) {
		snap_obj_unref(&t->obj);
		snap_obj_unref(&cref->obj);
		snprintf(msg, msglen, "cannot resume the rollouts with the new configuration");
		return reload_failed(d, actor, msg);
	}
	rollout_engine_adopt(e, d->engine);
	rollout_engine_free(d->engine);
	d->engine = e;
	api_rollouts_set_engine(&d->api, e);
	snap_obj_unref(&d->cref->obj);
	d->cref = cref;
	d->cfg = cfg;
	apply_config_to_api(d);
	proxy_publish(d->proxy, t);
	if (api_flags_reload(d->flags, cfg, actor, msg, msglen) != 0)
		log_error("flags kept from the previous configuration", "error", msg, NULL);
	d->api.config_revision++;
	snprintf(rev, sizeof(rev), "%llu", (unsigned long long)d->api.config_revision);
	log_info("configuration reloaded", "config", d->config_path, "revision", rev, NULL);
	record_event(d, actor, "config.reloaded", d->config_path,
	             json_pack("{s:I}", "revision", (json_int_t)d->api.config_revision));
	return 0;
}

static void admin_done(void *arg)
{
	struct daemon *d = arg;

	loop_stop(d->loop);
}

static void on_signal(struct loop *loop, int signo, void *data)
{
	struct daemon *d = data;
	char msg[4096];

	if (signo == SIGHUP) {
		reload(d, "canaryd", msg, sizeof(msg));
		return;
	}
	if (d->stopping)
		return;
	d->stopping = 1;
	log_info("shutting down", "signal", signo == SIGTERM ? "SIGTERM" : "SIGINT", NULL);
	/* the data plane first: stop accepting, finish requests in flight */
	proxy_stop(d->proxy, SHUTDOWN_DEADLINE_MS);
	admin_shutdown(d->admin, admin_done, d);
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"check", no_argument, NULL, 't'},
	    {"log-level", required_argument, NULL, 'l'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct daemon d = {.config_path = "canaryd.yaml"};
	char err[512], admin_addr[300], summary[512];
	int c, check = 0, rc = 1;

	while ((c = getopt_long(argc, argv, "c:tVh", lopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			d.config_path = optarg;
			break;
		case 't':
			check = 1;
			break;
		case 'l':
			if (log_level_parse(optarg) < 0) {
				fprintf(stderr, "canaryd: unknown log level \"%s\"\n", optarg);
				return 2;
			}
			log_set_level((enum log_level)log_level_parse(optarg));
			break;
		case 'V':
			puts("canaryd " CANARYD_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	d.cfg = load_config(d.config_path, NULL, 0);
	if (!d.cfg)
		return 1;
	if (check) {
		struct config_errors warns;

		config_errors_init(&warns); /* settings that advance without evidence */
		config_evidence_warnings(d.cfg, &warns);
		config_errors_print(&warns, stderr);
		config_errors_release(&warns);
		config_summary(d.cfg, summary, sizeof(summary));
		puts(summary);
		config_free(d.cfg);
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);
	d.loop = loop_new();
	if (!d.loop || loop_signals(d.loop, on_signal, &d) != 0) {
		log_error("cannot create the control loop", NULL);
		goto out_cfg;
	}
	d.store = store_open(d.cfg->store.url, err, sizeof(err));
	if (!d.store) {
		char shown[512];

		/* the URL may carry a password: never log one (store.h) */
		config_url_redact(d.cfg->store.url, shown, sizeof(shown));
		log_error("cannot open the store", "store", shown, "error", err, NULL);
		goto out_loop;
	}
	d.cref = config_ref_new(d.cfg); /* owns d.cfg from here on, even on failure */
	if (!d.cref) {
		d.cfg = NULL;
		goto out_store;
	}
	{
		unsigned nworkers =
		    d.cfg->workers ? d.cfg->workers : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
		const char *seed = getenv("CANARYD_SEED");
		struct proxy_table *t;

		d.metrics = metrics_registry_new(nworkers, MAX_SERIES);
		d.proxy = proxy_new(nworkers, d.metrics, seed ? strtoull(seed, NULL, 10) : 0);
		if (!d.metrics || !d.proxy) {
			log_error("out of memory", NULL);
			goto out_proxy;
		}
		t = build_table(&d, d.cref, NULL, err, sizeof(err));
		if (!t) {
			log_error("cannot build the routing table", "error", err, NULL);
			goto out_proxy;
		}
		proxy_publish(d.proxy, t);
		if (proxy_start(d.proxy, err, sizeof(err)) != 0) {
			log_error("cannot start the proxy", "error", err, NULL);
			goto out_proxy;
		}
	}
	api_init(&d.api);
	d.api.store = d.store;
	d.api.config_path = d.config_path;
	d.api.config_revision = 1;
	d.api.reload_fn = reload;
	d.api.reload_ctx = &d;
	d.api.metrics_fn = write_metrics;
	d.api.metrics_ctx = &d;
	d.api.listener_up_fn = listener_up;
	d.api.listener_up_ctx = &d;
	d.services = (struct services_backend){.proxy = d.proxy,
	                                       .metrics = d.metrics,
	                                       .set_traffic = set_traffic,
	                                       .set_mirror = set_mirror,
	                                       .set_fault = set_fault,
	                                       .owner = engine_owner,
	                                       .ctx = &d};
	api_services_init(&d.api, &d.services);
	d.jobs = jobs_new(JOB_THREADS, JOB_QUEUE);
	if (!d.jobs) {
		log_error("cannot start the hook runner", NULL);
		proxy_stop(d.proxy, 0);
		goto out_proxy;
	}
	/* before the engine: resuming a rollout may set a flag's percentage */
	d.flags = api_flags_init(&d.api, d.loop, d.cfg, err, sizeof(err));
	if (!d.flags) {
		log_error("cannot load the feature flags", "error", err, NULL);
		proxy_stop(d.proxy, 0);
		goto out_proxy;
	}
	evidence_dir_of(d.cfg, d.evidence_dir, sizeof(d.evidence_dir));
	d.rollout_be = (struct rollout_backend){.set_weight = engine_set_weight,
	                                        .read_cohort = engine_read_cohort,
	                                        .inflight = engine_inflight,
	                                        .notify = engine_notify,
	                                        .wait_applied = engine_wait_applied,
	                                        .stable_of = engine_stable_of,
	                                        .set_stable = engine_set_stable,
	                                        .hook_start = engine_hook_start,
	                                        .hook_poll = engine_hook_poll,
	                                        .source_start = engine_source_start,
	                                        .source_poll = engine_hook_poll,
	                                        .source_forget = engine_source_forget,
	                                        .evidence = engine_evidence,
	                                        .flag_save = engine_flag_save,
	                                        .flag_set = engine_flag_set,
	                                        .flag_restore = engine_flag_restore,
	                                        .set_shadow = engine_set_shadow,
	                                        .read_shadow = engine_read_shadow,
	                                        .split_reset = engine_split_reset,
	                                        .read_split = engine_read_split,
	                                        .store = d.store,
	                                        .ctx = &d};
	d.engine = engine_start(&d, d.cfg);
	if (!d.engine) {
		log_error("cannot resume the rollouts from the store", NULL);
		proxy_stop(d.proxy, 0);
		goto out_proxy;
	}
	api_rollouts_init(&d.api, d.engine);
	loop_timer_init(&d.tick, engine_tick, &d);
	loop_timer_start(d.loop, &d.tick, ENGINE_TICK_MS);
	if (apply_config_to_api(&d) != 0) {
		log_error("out of memory", NULL);
		proxy_stop(d.proxy, 0);
		goto out_proxy;
	}
	addr_format(&d.cfg->admin.listen, admin_addr, sizeof(admin_addr));
	d.admin = admin_start(d.loop, admin_addr, &d.api, err, sizeof(err));
	if (!d.admin) {
		log_error("cannot start the admin listener", "listen", admin_addr, "error", err,
		          NULL);
		proxy_stop(d.proxy, 0);
		goto out_proxy;
	}
	config_summary(d.cfg, summary, sizeof(summary));
	record_event(&d, "canaryd", "config.loaded", d.config_path,
	             json_pack("{s:I, s:s}", "revision", (json_int_t)1, "summary", summary));
	log_info("canaryd started", "version", CANARYD_VERSION, "admin", admin_addr, "config",
	         d.config_path, NULL);
	if (loop_run(d.loop) != 0)
		log_error("control loop failed", NULL);
	else
		rc = 0;
	log_info("canaryd stopped", NULL);
	admin_free(d.admin);
out_proxy:
	api_flags_free(d.flags); /* after admin_free: its stream connections are gone */
	d.flags = NULL;
	if (d.loop && d.tick.cb) /* armed only once the engine started */
		loop_timer_stop(d.loop, &d.tick);
	rollout_engine_free(d.engine);
	d.engine = NULL;
	jobs_free(d.jobs);
	proxy_free(d.proxy);
	metrics_registry_free(d.metrics);
	if (d.cref) {
		snap_obj_unref(&d.cref->obj);
		d.cfg = NULL;
	}
out_store:
	store_close(d.store);
out_loop:
	loop_free(d.loop);
out_cfg:
	free(d.tokens);
	free(d.listeners);
	for (size_t i = 0; i < d.nlisteners; i++)
		free(d.listener_addrs[i]);
	free(d.listener_addrs);
	config_free(d.cfg);
	return rc;
}
