/*
 * canaryd - progressive-delivery engine: main.  Argument parsing and
 * wiring only: load the configuration, open the store and the state layer
 * over it, start the proxy workers, the traffic module, the flags, the
 * rollout engine, notifications and the admin API, then run the control
 * loop (signals, reload, the engine tick) until asked to stop.
 *
 * The main thread is the control thread: it owns the configuration, the
 * store, the state layer, the admin API, the rollout engine and judge.
 * Data-plane workers run their own loops and only read immutable snapshots.
 * No document logic lives here: a change goes through the module that owns
 * it (proxy/traffic.h, flags, rollout/engine.h) and the state layer.
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
#include "api/events_stream.h"
#include "api/fleet.h"
#include "api/flags.h"
#include "api/rollouts.h"
#include "api/services.h"
#include "api/ui.h"
#include "config/config.h"
#include "core/err.h"
#include "core/jobs.h"
#include "core/log.h"
#include "core/loop.h"
#include "fleet/counters.h"
#include "fleet/fleet.h"
#include "metrics/stats.h"
#include "net/tls.h"
#include "proxy/health.h"
#include "proxy/mirror.h"
#include "proxy/proxy.h"
#include "proxy/table.h"
#include "proxy/traffic.h"
#include "rollout/engine.h"
#include "rollout/evidence.h"
#include "rollout/notify.h"
#include "rollout/retention.h"
#include "state/state.h"
#include "store/store.h"

#define MAX_SERIES           4096
#define SHUTDOWN_DEADLINE_MS 30000
#define ENGINE_TICK_MS       100
#define JOB_THREADS          2
#define JOB_QUEUE            256
#define HEALTH_THREADS       4 /* probes block a thread up to their timeout */

struct daemon {
	const char *config_path;
	struct config *cfg;      /* the running configuration, owned by cref */
	struct config_ref *cref; /* refcounted: routing tables point into it */
	struct metrics_registry *metrics;
	struct proxy *proxy;
	struct traffic *traffic; /* services' traffic, mirror and fault documents */
	struct health *health;   /* active health checks (their own job pool) */
	struct services_backend services;
	struct rollout_engine *engine;
	struct rollout_backend rollout_be;
	struct api_flags *flags; /* feature flags: API, OFREP, stream */
	/* GET /v1/events/stream */
	struct api_events_stream *events;
	struct loop_timer tick;
	struct loop_timer compact; /* event retention (rollout/retention.h) */
	struct jobs *jobs;         /* hooks and notifications */
	struct notify *notify;     /* the rollouts' webhooks */
	char evidence_dir[1024];
	struct store *store;
	struct state *state; /* the one path of every persisted change */
	struct fleet *fleet; /* fleet mode (postgres store); NULL on one node */
	/* fleet mode: counter flushes and the leader's merge; NULL on one node */
	struct fleet_counters *counters;
	struct loop *loop;
	struct api api;
	struct admin *admin;
	struct auth_token *tokens;
	struct api_listener_info *listeners;
	char **listener_addrs;
	size_t nlisteners;
	int stopping;
};

static void usage(FILE *f)
{
	fputs("usage: canaryd [-c FILE] [--check] [--log-level LEVEL]\n"
	      "\n"
	      "  -c, --config FILE   configuration (default canaryd.yaml)\n"
	      "  -t, --check         validate the configuration, print errors or a\n"
	      "                      one-line summary, exit 0 (valid) or 1 (invalid)\n"
	      "  --allow-missing-env with --check: an unset ${VAR} is a warning and is\n"
	      "                      linted with a placeholder value (CI without secrets)\n"
	      "  --log-level LEVEL   debug, info (default), warn or error\n"
	      "  -V, --version       print the version\n"
	      "  -h, --help          this help\n"
	      "\n"
	      "signals: SIGHUP reloads the configuration; SIGTERM/SIGINT stop gracefully.\n",
	      f);
}

#define ENV_SCAN_CAP (16u << 20) /* bytes of the config scanned for ${VAR} */

/*
 * --check --allow-missing-env: every ${NAME} of the file at path (no
 * ":-default", not "$${") whose NAME is unset is warned about on stderr
 * ("FILE:LINE: warning: ...") and set, for this process only, to a
 * placeholder long enough for a token secret, so the rest of the file is
 * still linted.  Returns how many were unset.
 */
static int env_placeholders(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[8192], name[128], val[192];
	int lineno = 0, n = 0, at_start = 1;
	size_t total = 0;

	if (!f)
		return 0; /* load_config reports it */
	while (fgets(line, sizeof(line), f) && total < ENV_SCAN_CAP) {
		const char *p = line;

		total += strlen(line);
		if (at_start)
			lineno++;
		at_start = strchr(line, '\n') != NULL; /* else the line goes on in the next read */
		while ((p = strstr(p, "${"))) {
			size_t nl = 0;

			if (p > line && p[-1] == '$') {
				p += 2;
				continue;
			}
			p += 2;
			while ((p[nl] == '_' || (p[nl] >= 'A' && p[nl] <= 'Z') ||
			        (p[nl] >= 'a' && p[nl] <= 'z') ||
			        (nl && p[nl] >= '0' && p[nl] <= '9')) &&
			       nl < sizeof(name) - 1)
				nl++;
			if (nl == 0 || p[nl] != '}')
				continue; /* a default, or not a reference: the loader judges it */
			memcpy(name, p, nl);
			name[nl] = '\0';
			if (!getenv(name)) {
				fprintf(stderr,
				        "%s:%d: warning: environment variable %s is not set "
				        "(--allow-missing-env)\n",
				        path, lineno, name);
				snprintf(val, sizeof(val),
				         "placeholder-for-unset-%s-0123456789abcdef", name);
				if (setenv(name, val, 0) == 0)
					n++;
			}
		}
	}
	fclose(f);
	return n;
}

/*
 * Loads and validates path; reports every error and returns NULL on
 * failure: as "FILE:LINE: ..." lines for --check (a person or CI reads
 * them), else as one JSON log line each (a running daemon's stderr is JSON).
 * The TLS contexts are built too (certificates read and checked, net/tls.h),
 * their errors reported the same way; *tls gets them (NULL on failure).
 */
static struct config *load_config(const char *path, int human, char *msg, size_t msglen,
                                  struct tls_set **tls)
{
	struct config_errors errs;
	struct config *cfg;

	*tls = NULL;
	config_errors_init(&errs);
	cfg = config_load_file(path, &errs);
	if (cfg && !config_errors_count(&errs))
		*tls = tls_set_new(cfg, &errs);
	if (!cfg || config_errors_count(&errs)) {
		tls_set_free(*tls);
		*tls = NULL;
		if (human) {
			config_errors_print(&errs, stderr);
		} else {
			char line[2048];

			for (size_t i = 0; i < config_errors_count(&errs); i++) {
				config_error_format(config_errors_get(&errs, i), line,
				                    sizeof(line));
				log_error("configuration error", "config", path, "error", line,
				          NULL);
			}
		}
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

/* Audits a daemon event (details stolen); a failure is logged. */
static void record_event(struct daemon *d, const char *actor, const char *kind, const char *subject,
                         json_t *details)
{
	char *s = details ? json_dumps(details, JSON_COMPACT) : NULL;
	int rc = state_event(
	    d->state,
	    &(struct state_event){.actor = actor, .kind = kind, .subject = subject, .details = s});

	if (rc != 0) {
		char m[256];

		log_error("cannot record event", "kind", kind, "error",
		          state_errmsg(d->state, m, sizeof(m)), NULL);
	}
	free(s);
	json_decref(details);
}

/* ---- the rollout engine's view of the data plane ---- */

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
	int series;

	series = metrics_series_find(d->metrics, service, version);
	if (d->counters && d->fleet && fleet_rollback_only(d->fleet)) {
		/* the store is away: the last merge plus this node's own traffic since */
		struct metrics_cohort_snapshot local;

		memset(&local, 0, sizeof(local));
		if (series >= 0 && metrics_read(d->metrics, series, cohort, &local))
			return -EIO;
		return fleet_counters_read_degraded(d->counters, service, version, cohort, &local,
		                                    out);
	}
	if (d->counters) /* fleet mode: every node's counters, merged by the leader */
		return fleet_counters_read(d->counters, service, version, cohort, out);
	if (series < 0) {
		memset(out, 0, sizeof(*out));
		return 0; /* no request recorded yet: an empty cohort */
	}
	return metrics_read(d->metrics, series, cohort, out);
}

/* Fleet mode: the live nodes whose counters the last merge lacks since since_ms. */
static json_t *engine_missing_nodes(void *ctx, int64_t since_ms)
{
	struct daemon *d = ctx;

	return d->counters ? fleet_counters_missing(d->counters, since_ms) : NULL;
}

/* The sample-ratio guard's counts (metrics_split_*); see struct rollout_backend. */
static void engine_split_reset(void *ctx, const char *service, const char *version)
{
	struct daemon *d = ctx;
	int series = metrics_series_find(d->metrics, service, version);

	if (series >= 0)
		metrics_split_reset(d->metrics, series);
}

static bool engine_endpoints_down(void *ctx, const char *service, const char *version, char *reason,
                                  size_t len, int64_t *since_ms)
{
	struct daemon *d = ctx;

	return health_version_down(d->health, service, version, reason, len, since_ms);
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

/* validate (issue 16): the canary request sample of a decision, from the proxy's rings. */
static json_t *engine_samples(void *ctx, const char *service, const char *version, int max)
{
	struct daemon *d = ctx;
	struct proxy_sample *s;
	json_t *a;
	int n;

	if (max <= 0 || !(s = calloc((size_t)max, sizeof(*s))))
		return NULL;
	n = proxy_samples(d->proxy, service, version, s, max);
	a = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:i, s:f, s:I}", "request_id",
		                                   s[i].request_id, "method", s[i].method, "path",
		                                   s[i].path, "status", s[i].status, "latency_ms",
		                                   (double)s[i].latency_us / 1000.0, "time_ms",
		                                   (json_int_t)(s[i].time_us / 1000)));
	free(s);
	return a;
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

static void engine_tick(struct loop *loop, struct loop_timer *t)
{
	struct daemon *d = t->data;

	/* in a fleet only the leader decides (or, store lost, rollback-only: docs/fleet.md) */
	if (!d->fleet || fleet_is_leader(d->fleet) || fleet_rollback_only(d->fleet))
		rollout_engine_tick(d->engine, (int64_t)clock_wall_ms());
	notify_poll(d->notify);
	if (!d->stopping)
		loop_timer_start(loop, t, ENGINE_TICK_MS);
}

/*
 * Compacts old per-interval events and verdicts (rollout/retention.h): a
 * bounded batch per turn, again after 1 s while there is more, else every
 * minute.  In a fleet only the leader compacts, so two nodes never
 * summarise the same run.
 */
static void events_compact(struct loop *loop, struct loop_timer *t)
{
	struct daemon *d = t->data;
	int more = 0;

	if (!d->fleet || fleet_is_leader(d->fleet)) {
		struct retention_conf rc = {(int64_t)d->cfg->events.full_resolution_ms,
		                            (int64_t)d->cfg->events.summary_interval_ms};

		more = retention_compact(state_store(d->state), (int64_t)clock_wall_ms(), &rc,
		                         RETENTION_BATCH_DEFAULT, NULL);
		if (more < 0)
			log_warn("event compaction failed", "error", store_strerror(more), NULL);
	}
	if (!d->stopping)
		loop_timer_start(loop, t, more == 1 ? 1000 : 60000);
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

/* This node now leads the fleet: resume every rollout from its document. */
static void fleet_leading(void *arg, int64_t term)
{
	struct daemon *d = arg;

	(void)term;
	if (d->counters) { /* the engine re-primes from fleet-wide readings */
		fleet_counters_flush(d->counters);
		fleet_counters_merge(d->counters);
	}
	if (d->engine && rollout_engine_load(d->engine, (int64_t)clock_wall_ms()) != 0)
		log_error("fleet: cannot reload the rollouts on taking over", NULL);
}

/*
 * Fleet mode for a postgres store: the node id is fleet.node, else
 * HOST:PORT of the admin listener (the host name for a wildcard address).
 */
static int counters_leading(void *arg)
{
	struct daemon *d = arg;

	return d->fleet && fleet_is_leader(d->fleet);
}

static int fleet_start(struct daemon *d, int64_t start_rev, const char *admin_addr)
{
	char id[300], host[256], err[512];
	const struct config *cfg = d->cfg;
	uint64_t flush_ms = FLEET_COUNTERS_FLUSH_MS;
	const char *h = cfg->admin.listen.host;

	if (cfg->store.kind != CONFIG_STORE_POSTGRES)
		return 0;
	if (!strcmp(h, "0.0.0.0") || !strcmp(h, "::") || !*h) {
		if (gethostname(host, sizeof(host)) == -1)
			snprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = '\0';
		snprintf(id, sizeof(id), "%s:%u", host, cfg->admin.listen.port);
	} else {
		snprintf(id, sizeof(id), "%s", admin_addr);
	}
	d->fleet =
	    fleet_new(d->loop, d->state,
	              &(struct fleet_config){.url = cfg->store.url,
	                                     .node_id = cfg->fleet.node ? cfg->fleet.node : id,
	                                     .address = id,
	                                     .lease_ms = (int64_t)cfg->fleet.lease_ms,
	                                     .start_rev = start_rev},
	              &(struct fleet_hooks){.leader = fleet_leading, .arg = d}, err, sizeof(err));
	if (!d->fleet) {
		log_error("cannot start fleet mode", "error", err, NULL);
		return -1;
	}
	/* flush at least three times per analysis interval: a live node is never missed */
	for (size_t i = 0; i < cfg->nrollouts; i++) {
		uint64_t iv = cfg->rollouts[i].analysis.interval_ms / 3;

		if (iv && iv < flush_ms)
			flush_ms = iv < 100 ? 100 : iv;
	}
	d->counters = fleet_counters_new(
	    d->loop, d->metrics,
	    &(struct fleet_counters_config){.url = cfg->store.url,
	                                    .node_id = cfg->fleet.node ? cfg->fleet.node : id,
	                                    .flush_ms = (int64_t)flush_ms,
	                                    .lease_ms = (int64_t)cfg->fleet.lease_ms,
	                                    .is_leader = counters_leading,
	                                    .arg = d},
	    err, sizeof(err));
	if (!d->counters) {
		log_error("cannot start fleet mode", "error", err, NULL);
		return -1;
	}
	fleet_counters_flush(d->counters);
	if (fleet_is_leader(d->fleet))
		fleet_counters_merge(d->counters);
	return 0;
}

static void write_metrics(void *ctx, struct buf *out)
{
	struct daemon *d = ctx;

	metrics_write_prometheus(d->metrics, out);
	if (d->fleet)
		fleet_write_prometheus(d->fleet, out);
	proxy_mirror_write_prometheus(d->proxy, out);
	health_write_prometheus(d->health, out);
	if (d->engine)
		rollout_engine_write_prometheus(d->engine, out);
	api_flags_write_prometheus(d->flags, out);
	api_ui_write_metrics(&d->api, out); /* what the exported alert rules need */
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
	struct tls_set *tls;

	/* the actor may be a token name of the configuration being replaced */
	snprintf(actor, sizeof(actor), "%s", actor_in);
	msg[0] = '\0';
	cfg = load_config(d->config_path, 0, msg, msglen, &tls);
	if (!cfg)
		return reload_failed(d, actor, msg);
	if (api_flags_check(d->flags, cfg, msg, msglen) != 0) {
		tls_set_free(tls);
		config_free(cfg);
		return reload_failed(d, actor, msg);
	}
	cref = config_ref_new(cfg); /* owns cfg from here on, even on failure */
	if (!cref) {
		tls_set_free(tls);
		snprintf(msg, msglen, "out of memory");
		return reload_failed(d, actor, msg);
	}
	cref->tls = tls; /* new connections take the new certificates with the new table */
	t = traffic_build(d->traffic, cref, msg, msglen);
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
	notify_set_config(d->notify, cfg);
	apply_config_to_api(d);
	if (d->admin)
		admin_set_tls(d->admin, tls_set_admin(cref->tls));
	traffic_use(d->traffic, cref, t);
	if (health_configure(d->health, cfg) != 0)
		log_error("health checks kept from the previous configuration (out of memory)",
		          NULL);
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
	    {"allow-missing-env", no_argument, NULL, 'E'},
	    {"log-level", required_argument, NULL, 'l'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct daemon d = {.config_path = "canaryd.yaml"};
	char err[512], admin_addr[300], summary[512];
	int c, check = 0, allow_missing_env = 0, missing = 0, rc = 1;
	int64_t start_rev = 0;
	struct tls_set *tls = NULL; /* d.cref owns it once made */

	while ((c = getopt_long(argc, argv, "c:tVh", lopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			d.config_path = optarg;
			break;
		case 't':
			check = 1;
			break;
		case 'E':
			allow_missing_env = 1;
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
	if (allow_missing_env && !check) {
		fputs("canaryd: --allow-missing-env only goes with --check\n", stderr);
		return 2;
	}
	if (check && allow_missing_env)
		missing = env_placeholders(d.config_path);
	d.cfg = load_config(d.config_path, check, NULL, 0, &tls);
	if (!d.cfg)
		return 1;
	if (check) {
		struct config_errors warns;

		config_errors_init(&warns); /* settings that advance without evidence */
		config_evidence_warnings(d.cfg, &warns);
		config_errors_print(&warns, stderr);
		if (missing)
			fprintf(
			    stderr,
			    "%s: %d environment variable(s) not set: linted with placeholders\n",
			    d.config_path, missing);
		config_errors_release(&warns);
		config_summary(d.cfg, summary, sizeof(summary));
		puts(summary);
		tls_set_free(tls);
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
	d.state = state_new(d.store);
	if (!d.state) {
		log_error("out of memory", NULL);
		goto out_store;
	}
	start_rev = state_revision(d.state); /* what the modules load: the fleet feed's start */
	d.cref = config_ref_new(d.cfg);      /* owns d.cfg from here on, even on failure */
	if (!d.cref) {
		d.cfg = NULL;
		goto out_store;
	}
	d.cref->tls = tls; /* the contexts live as long as the configuration */
	tls = NULL;
	{
		unsigned nworkers =
		    d.cfg->workers ? d.cfg->workers : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
		const char *seed = getenv("CANARYD_SEED");

		d.metrics = metrics_registry_new(nworkers, MAX_SERIES);
		d.proxy = proxy_new(nworkers, d.metrics, seed ? strtoull(seed, NULL, 10) : 0);
		if (d.proxy)
			proxy_set_io(d.proxy, d.cfg->io == CONFIG_IO_URING  ? PROXY_IO_URING
			                      : d.cfg->io == CONFIG_IO_AUTO ? PROXY_IO_AUTO
			                                                    : PROXY_IO_EPOLL);
		d.traffic = d.proxy && d.metrics ? traffic_new(d.state, d.proxy, d.metrics) : NULL;
		if (!d.metrics || !d.proxy || !d.traffic) {
			log_error("out of memory", NULL);
			goto out_proxy;
		}
		if (traffic_load(d.traffic, d.cref, err, sizeof(err)) != 0) {
			log_error("cannot build the routing table", "error", err, NULL);
			goto out_proxy;
		}
		if (proxy_start(d.proxy, err, sizeof(err)) != 0) {
			log_error("cannot start the proxy", "error", err, NULL);
			goto out_proxy;
		}
		d.health = health_new(d.loop, d.traffic, HEALTH_THREADS);
		if (!d.health || health_configure(d.health, d.cfg) != 0) {
			log_error("cannot start the health checks", NULL);
			proxy_stop(d.proxy, 0);
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
	d.services = (struct services_backend){
	    .traffic = d.traffic, .proxy = d.proxy, .metrics = d.metrics, .health = d.health};
	api_services_init(&d.api, &d.services);
	d.jobs = jobs_new(JOB_THREADS, JOB_QUEUE);
	d.notify = d.jobs ? notify_new(d.jobs, d.state) : NULL;
	if (!d.notify) {
		log_error("cannot start the hook runner", NULL);
		proxy_stop(d.proxy, 0);
		goto out_proxy;
	}
	/* before the engine: resuming a rollout may set a flag's percentage */
	d.flags = api_flags_new(&d.api, d.state, d.loop, d.cfg, err, sizeof(err));
	if (!d.flags) {
		log_error("cannot load the feature flags", "error", err, NULL);
		proxy_stop(d.proxy, 0);
		goto out_proxy;
	}
	notify_set_config(d.notify, d.cfg);
	evidence_dir_of(d.cfg, d.evidence_dir, sizeof(d.evidence_dir));
	d.rollout_be = (struct rollout_backend){.traffic = d.traffic,
	                                        .flags = api_flags_module(d.flags),
	                                        .notifier = d.notify,
	                                        .read_cohort = engine_read_cohort,
	                                        .missing_nodes = engine_missing_nodes,
	                                        .hook_start = engine_hook_start,
	                                        .hook_poll = engine_hook_poll,
	                                        .source_start = engine_source_start,
	                                        .source_poll = engine_hook_poll,
	                                        .source_forget = engine_source_forget,
	                                        .evidence = engine_evidence,
	                                        .samples = engine_samples, /* validate */
	                                        .read_shadow = engine_read_shadow,
	                                        .split_reset = engine_split_reset,
	                                        .read_split = engine_read_split,
	                                        .endpoints_down = engine_endpoints_down,
	                                        .state = d.state,
	                                        .ctx = &d};
	/* before the engine loads: a follower's fence refuses rollout writes from then on */
	addr_format(&d.cfg->admin.listen, admin_addr, sizeof(admin_addr));
	if (fleet_start(&d, start_rev, admin_addr) != 0 || api_fleet_init(&d.api, d.fleet) != 0) {
		proxy_stop(d.proxy, 0);
		goto out_proxy;
	}
	d.engine = engine_start(&d, d.cfg);
	if (!d.engine) {
		log_error("cannot resume the rollouts from the store", NULL);
		proxy_stop(d.proxy, 0);
		goto out_proxy;
	}
	api_rollouts_init(&d.api, d.engine);
	d.events = api_events_stream_new(&d.api, d.loop);
	if (!d.events || api_ui_init(&d.api) != 0) {
		log_error("cannot add the dashboard routes", NULL);
		proxy_stop(d.proxy, 0);
		goto out_proxy;
	}
	loop_timer_init(&d.tick, engine_tick, &d);
	loop_timer_start(d.loop, &d.tick, ENGINE_TICK_MS);
	loop_timer_init(&d.compact, events_compact, &d);
	loop_timer_start(d.loop, &d.compact, 60000);
	if (apply_config_to_api(&d) != 0) {
		log_error("out of memory", NULL);
		proxy_stop(d.proxy, 0);
		goto out_proxy;
	}
	addr_format(&d.cfg->admin.listen, admin_addr, sizeof(admin_addr));
	d.admin =
	    admin_start(d.loop, admin_addr, &d.api, tls_set_admin(d.cref->tls), err, sizeof(err));
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
	fleet_free(d.fleet); /* first: its hooks reach the engine; closing releases the lock */
	d.fleet = NULL;
	fleet_counters_free(d.counters);
	d.counters = NULL;
	api_flags_free(d.flags); /* after admin_free: its stream connections are gone */
	api_events_stream_free(d.events);
	d.events = NULL;
	d.flags = NULL;
	if (d.loop && d.tick.cb) /* armed only once the engine started */
		loop_timer_stop(d.loop, &d.tick);
	if (d.loop && d.compact.cb)
		loop_timer_stop(d.loop, &d.compact);
	rollout_engine_free(d.engine);
	d.engine = NULL;
	notify_free(d.notify);
	health_free(d.health); /* its probes are done or killed, its pool joined */
	d.health = NULL;
	jobs_free(d.jobs);
	traffic_free(d.traffic);
	proxy_free(d.proxy);
	metrics_registry_free(d.metrics);
	if (d.cref) {
		snap_obj_unref(&d.cref->obj);
		d.cfg = NULL;
	}
out_store:
	state_free(d.state);
	store_close(d.store);
out_loop:
	loop_free(d.loop);
out_cfg:
	free(d.tokens);
	free(d.listeners);
	for (size_t i = 0; i < d.nlisteners; i++)
		free(d.listener_addrs[i]);
	free(d.listener_addrs);
	tls_set_free(tls);
	config_free(d.cfg);
	return rc;
}
