/*
 * health.c - active health checks (health.h).
 *
 * Invariants: targets[] holds one entry per checked endpoint, grouped by
 * (service, version) in the configuration's order, so a version's endpoints
 * are contiguous; a target has at most one probe in flight (job != 0); held
 * is what the last traffic_set_down() of its service said (applied), and
 * within a version at least one target is never held.
 */
#include "proxy/health.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "core/buf.h"
#include "core/jobs.h"
#include "core/log.h"
#include "core/loop.h"
#include "proxy/table.h"
#include "proxy/traffic.h"

/* How often the tick looks for answers and due probes. */
#define HEALTH_TICK_MS 20
/* At most this many probes waiting for a pool thread. */
#define HEALTH_QUEUE 4096

struct target {
	char *service, *version, *endpoint;
	char *url;
	char *ca, *connect_to; /* upstream `tls:` (tls set): probes go over https */
	bool tls, tls_verify;
	struct config_health hc; /* path is NULL: it lives in url */
	struct health_counts c;
	bool held;    /* out of the pick (as applied) */
	bool kept;    /* down, but the last of its version in the pick */
	uint64_t job; /* the probe in flight; 0: none */
	uint64_t next_ms;
	int64_t last_probe_ms, since_ms, last_latency_ms;
	int last_status;
	char last_error[128]; /* why the last probe failed; "" when it passed */
};

struct health {
	struct loop *loop;
	struct traffic *traffic;
	struct jobs *jobs; /* created with the first checked endpoint */
	unsigned threads;  /* its size; 0: none (probes fed by health_note_probe) */
	struct loop_timer timer;
	struct target *targets;
	size_t ntargets;
};

const char *health_state_name(enum health_state s)
{
	return s == HEALTH_UP ? "up" : s == HEALTH_DOWN ? "down" : "unknown";
}

bool health_counts_note(struct health_counts *c, const struct config_health *hc, bool pass)
{
	enum health_state was = c->state;

	if (pass) {
		c->fails = 0;
		if (c->passes < UINT32_MAX)
			c->passes++;
		/* an unknown endpoint was never out: one pass is enough */
		if (c->state == HEALTH_UNKNOWN ||
		    (c->state == HEALTH_DOWN && c->passes >= hc->healthy))
			c->state = HEALTH_UP;
	} else {
		c->passes = 0;
		if (c->fails < UINT32_MAX)
			c->fails++;
		if (c->state != HEALTH_DOWN && c->fails >= hc->unhealthy)
			c->state = HEALTH_DOWN;
	}
	return c->state != was;
}

bool health_status_ok(const struct config_health *hc, int status)
{
	return status > 0 && (uint32_t)status >= hc->expect_lo && (uint32_t)status <= hc->expect_hi;
}

/* ---- targets ---- */

static void target_release(struct health *h, struct target *t)
{
	if (t->job && h->jobs)
		jobs_detach(h->jobs, t->job);
	free(t->service);
	free(t->version);
	free(t->endpoint);
	free(t->url);
	free(t->ca);
	free(t->connect_to);
	memset(t, 0, sizeof(*t));
}

static struct target *target_find(const struct health *h, const char *service, const char *version,
                                  const char *endpoint)
{
	for (size_t i = 0; i < h->ntargets; i++) {
		struct target *t = &h->targets[i];

		if (strcmp(t->service, service) == 0 && strcmp(t->version, version) == 0 &&
		    strcmp(t->endpoint, endpoint) == 0)
			return t;
	}
	return NULL;
}

static bool same_version(const struct target *a, const struct target *b)
{
	return strcmp(a->service, b->service) == 0 && strcmp(a->version, b->version) == 0;
}

/* [*lo, *hi) is the version group of targets[i]. */
static void group_of(const struct health *h, size_t i, size_t *lo, size_t *hi)
{
	size_t a = i, b = i + 1;

	while (a > 0 && same_version(&h->targets[a - 1], &h->targets[i]))
		a--;
	while (b < h->ntargets && same_version(&h->targets[b], &h->targets[i]))
		b++;
	*lo = a;
	*hi = b;
}

/*
 * Decides which targets of group [lo, hi) are held out: the down ones, in
 * the configuration's order, while another stays in; the last one in is
 * kept.  Returns true when a held flag changed.
 */
static bool group_decide(struct health *h, size_t lo, size_t hi)
{
	size_t in = 0;
	bool changed = false;

	for (size_t i = lo; i < hi; i++) {
		struct target *t = &h->targets[i];

		if (t->held && t->c.state != HEALTH_DOWN) {
			t->held = false;
			changed = true;
		}
		in += !t->held;
	}
	for (size_t i = lo; i < hi; i++) {
		struct target *t = &h->targets[i];

		t->kept = false;
		if (t->c.state != HEALTH_DOWN || t->held)
			continue;
		if (in > 1) {
			t->held = true;
			in--;
			changed = true;
		} else {
			t->kept = true;
		}
	}
	return changed;
}

/* Gives the traffic module service's held endpoints. */
static void apply_service(struct health *h, const char *service)
{
	struct proxy_down *down = calloc(h->ntargets + 1, sizeof(*down));
	size_t n = 0;

	if (!down) {
		log_error("out of memory applying health checks", "service", service, NULL);
		return;
	}
	for (size_t i = 0; i < h->ntargets; i++)
		if (h->targets[i].held && strcmp(h->targets[i].service, service) == 0)
			down[n++] =
			    (struct proxy_down){h->targets[i].version, h->targets[i].endpoint};
	if (h->traffic)
		traffic_set_down(h->traffic, service, down, n);
	free(down);
}

/* Decides target i's group again and applies its service when that changed anything. */
static void settle(struct health *h, size_t i)
{
	size_t lo, hi;

	group_of(h, i, &lo, &hi);
	if (group_decide(h, lo, hi))
		apply_service(h, h->targets[i].service);
}

static void fmt_time(int64_t ms, char *buf, size_t len)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;

	if (!gmtime_r(&s, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, len, "%" PRId64, ms);
}

/* Notes one answer on target i and settles its version. */
static void note(struct health *h, size_t i, int status, int64_t latency_ms, const char *err,
                 int64_t wall_ms)
{
	struct target *t = &h->targets[i];
	bool pass = health_status_ok(&t->hc, status);

	t->last_probe_ms = wall_ms;
	t->last_status = status;
	t->last_latency_ms = latency_ms;
	if (pass)
		t->last_error[0] = '\0';
	else if (status > 0)
		snprintf(t->last_error, sizeof(t->last_error), "status %d (expected %u-%u)", status,
		         t->hc.expect_lo, t->hc.expect_hi);
	else
		snprintf(t->last_error, sizeof(t->last_error), "%s",
		         err && *err ? err : "no answer");
	if (health_counts_note(&t->c, &t->hc, pass)) {
		t->since_ms = wall_ms;
		if (t->c.state == HEALTH_DOWN)
			log_warn("endpoint failed its health checks", "service", t->service,
			         "version", t->version, "endpoint", t->endpoint, "error",
			         t->last_error, NULL);
		else
			log_info("endpoint passes its health checks", "service", t->service,
			         "version", t->version, "endpoint", t->endpoint, NULL);
	}
	settle(h, i);
}

int health_note_probe(struct health *h, const char *service, const char *version,
                      const char *endpoint, int status, int64_t latency_ms, const char *err,
                      int64_t wall_ms)
{
	struct target *t = target_find(h, service, version, endpoint);

	if (!t)
		return -ENOENT;
	note(h, (size_t)(t - h->targets), status, latency_ms, err, wall_ms);
	return 0;
}

/* ---- probing ---- */

static void probe_collect(struct health *h, size_t i, int64_t wall_ms)
{
	struct target *t = &h->targets[i];
	struct job_result res;
	int rc = jobs_poll(h->jobs, t->job, &res);

	if (rc == 1)
		return;
	t->job = 0;
	if (rc != 0)
		return;
	if (res.status == JOB_TIMEOUT)
		snprintf(res.error, sizeof(res.error), "no answer within %" PRIu64 "ms",
		         t->hc.timeout_ms);
	note(h, i, res.status == JOB_TIMEOUT ? 0 : res.http_status, res.duration_ms, res.error,
	     wall_ms);
	job_result_release(&res);
}

static void tick(struct loop *loop, struct loop_timer *timer)
{
	struct health *h = timer->data;
	uint64_t now = loop_now_ms(loop);
	int64_t wall = (int64_t)loop_wall_ms(loop);

	for (size_t i = 0; i < h->ntargets; i++) {
		struct target *t = &h->targets[i];

		if (t->job)
			probe_collect(h, i, wall);
		if (t->job || now < t->next_ms)
			continue;
		if (t->tls) {
			struct job_tls tls = {
			    .verify = t->tls_verify, .ca = t->ca, .connect_to = t->connect_to};

			t->job = jobs_submit_get_tls(h->jobs, t->url, t->hc.timeout_ms, &tls);
		} else {
			t->job = jobs_submit_get(h->jobs, t->url, t->hc.timeout_ms);
		}
		/* queue full: tried again next interval, the counts wait */
		t->next_ms = now + t->hc.interval_ms;
	}
	if (h->ntargets)
		loop_timer_start(loop, timer, HEALTH_TICK_MS);
}

/* ---- lifecycle ---- */

struct health *health_new(struct loop *loop, struct traffic *traffic, unsigned threads)
{
	struct health *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->loop = loop;
	h->traffic = traffic;
	h->threads = threads;
	loop_timer_init(&h->timer, tick, h);
	return h;
}

void health_free(struct health *h)
{
	if (!h)
		return;
	if (h->loop && loop_timer_armed(&h->timer))
		loop_timer_stop(h->loop, &h->timer);
	for (size_t i = 0; i < h->ntargets; i++)
		target_release(h, &h->targets[i]);
	free(h->targets);
	jobs_free(h->jobs); /* kills what still runs, joins the threads */
	free(h);
}

static char *url_of(const char *scheme, const char *endpoint, const char *path)
{
	size_t n = strlen(scheme) + strlen("://") + strlen(endpoint) + strlen(path) + 1;
	char *u = malloc(n);

	if (u)
		snprintf(u, n, "%s://%s%s", scheme, endpoint, path);
	return u;
}

/*
 * A version with upstream `tls:` is probed over https with its settings:
 * verify, ca, and sni (the URL names the SNI host; curl's CONNECT_TO sends
 * the connection to the endpoint itself).
 */
static int target_tls(struct target *t, const struct config_upstream_tls *tls,
                      const struct config_addr *a, const char *name, const char *path)
{
	char host[300], to[700];

	t->tls = true;
	t->tls_verify = tls->verify;
	if (tls->ca && !(t->ca = strdup(tls->ca)))
		return -ENOMEM;
	if (!tls->sni) {
		t->url = url_of("https", name, path);
		return t->url ? 0 : -ENOMEM;
	}
	snprintf(host, sizeof(host), "%s:%u", tls->sni, a->port);
	snprintf(to, sizeof(to), "%s:%u:%s", tls->sni, a->port, name);
	t->url = url_of("https", host, path);
	t->connect_to = strdup(to);
	return t->url && t->connect_to ? 0 : -ENOMEM;
}

/* The targets of cfg in *out (zeroed strings on failure are released by the caller). */
static int targets_of(const struct config *cfg, struct target **out, size_t *nout)
{
	size_t n = 0, k = 0;
	struct target *ts;

	for (size_t s = 0; s < cfg->nservices; s++)
		for (size_t v = 0; v < cfg->services[s].nversions; v++)
			if (cfg->services[s].versions[v].health.enabled)
				n += cfg->services[s].versions[v].nendpoints;
	ts = calloc(n + 1, sizeof(*ts));
	if (!ts)
		return -ENOMEM;
	*out = ts;
	for (size_t s = 0; s < cfg->nservices; s++) {
		const struct config_service *cs = &cfg->services[s];

		for (size_t v = 0; v < cs->nversions; v++) {
			const struct config_version *cv = &cs->versions[v];

			for (size_t e = 0; cv->health.enabled && e < cv->nendpoints; e++) {
				struct target *t = &ts[k++];
				const struct config_addr *a = &cv->endpoints[e];
				char name[300];

				/* the registry's name of the endpoint (proxy/registry.c) */
				if (a->family == AF_INET6)
					snprintf(name, sizeof(name), "[%s]:%u", a->host, a->port);
				else
					snprintf(name, sizeof(name), "%s:%u", a->host, a->port);
				*nout = k;
				t->hc = cv->health;
				t->service = strdup(cs->name);
				t->version = strdup(cv->name);
				t->endpoint = strdup(name);
				if (cv->tls.enabled) {
					if (target_tls(t, &cv->tls, a, name, cv->health.path))
						return -ENOMEM;
				} else {
					t->url = url_of("http", name, cv->health.path);
				}
				t->hc.path = NULL;
				if (!t->service || !t->version || !t->endpoint || !t->url)
					return -ENOMEM;
			}
		}
	}
	return 0;
}

int health_configure(struct health *h, const struct config *cfg)
{
	struct target *ts = NULL, *old = h->targets;
	size_t n = 0, nold = h->ntargets;
	int rc;

	if (!h)
		return 0;
	rc = targets_of(cfg, &ts, &n);
	if (!rc && n && h->threads && !h->jobs && !(h->jobs = jobs_new(h->threads, HEALTH_QUEUE)))
		rc = -ENOMEM;
	if (rc) {
		for (size_t i = 0; i < n; i++)
			target_release(h, &ts[i]);
		free(ts);
		return rc;
	}
	for (size_t i = 0; i < n; i++) {
		struct target *o = target_find(h, ts[i].service, ts[i].version, ts[i].endpoint);

		if (!o)
			continue;
		ts[i].c = o->c;
		ts[i].held = o->held;
		ts[i].job = o->job;
		ts[i].next_ms = o->next_ms;
		ts[i].last_probe_ms = o->last_probe_ms;
		ts[i].since_ms = o->since_ms;
		ts[i].last_latency_ms = o->last_latency_ms;
		ts[i].last_status = o->last_status;
		memcpy(ts[i].last_error, o->last_error, sizeof(o->last_error));
		o->job = 0; /* moved */
	}
	h->targets = ts;
	h->ntargets = n;
	/* every service that held or holds an endpoint gets its list again */
	for (size_t i = 0; i < nold; i++) {
		if (old[i].held && !target_find(h, old[i].service, old[i].version, old[i].endpoint))
			apply_service(h, old[i].service);
		target_release(h, &old[i]);
	}
	free(old);
	for (size_t i = 0; i < n;) {
		size_t lo, hi;
		bool any = false;

		group_of(h, i, &lo, &hi);
		group_decide(h, lo, hi);
		for (size_t j = lo; j < hi; j++)
			any |= h->targets[j].held;
		if (any)
			apply_service(h, h->targets[i].service);
		i = hi;
	}
	if (h->loop && h->jobs && n && !loop_timer_armed(&h->timer))
		loop_timer_start(h->loop, &h->timer, 0);
	return 0;
}

/* ---- views ---- */

static void view_of(const struct target *t, struct health_view *out)
{
	char since[32];

	memset(out, 0, sizeof(*out));
	out->state = t->c.state;
	out->in_pick = !t->held;
	out->kept = t->kept;
	out->last_probe_ms = t->last_probe_ms;
	out->last_status = t->last_status;
	out->last_latency_ms = t->last_latency_ms;
	out->since_ms = t->since_ms;
	out->passes = t->c.passes;
	out->fails = t->c.fails;
	fmt_time(t->since_ms, since, sizeof(since));
	switch (t->c.state) {
	case HEALTH_UNKNOWN:
		snprintf(out->reason, sizeof(out->reason), "%s",
		         t->last_probe_ms ? "failing, not yet down" : "not probed yet");
		break;
	case HEALTH_UP:
		snprintf(out->reason, sizeof(out->reason), "up: passing");
		if (t->last_error[0])
			snprintf(out->reason, sizeof(out->reason), "up, last probe failed: %s",
			         t->last_error);
		break;
	case HEALTH_DOWN:
		snprintf(out->reason, sizeof(out->reason), "down since %s: %s%s", since,
		         t->last_error[0] ? t->last_error : "passing, not yet up",
		         t->kept ? "; kept in the pick: the last endpoint of its version" : "");
		break;
	}
}

int health_view(const struct health *h, const char *service, const char *version,
                const char *endpoint, struct health_view *out)
{
	const struct target *t = h ? target_find(h, service, version, endpoint) : NULL;

	if (!t) {
		memset(out, 0, sizeof(*out));
		out->in_pick = true;
		snprintf(out->reason, sizeof(out->reason), "no health check configured");
		return -ENOENT;
	}
	view_of(t, out);
	return 0;
}

bool health_version_down(const struct health *h, const char *service, const char *version,
                         char *reason, size_t len, int64_t *since_ms)
{
	size_t n = 0, off;
	int64_t since = 0;

	if (!h)
		return false;
	for (size_t i = 0; i < h->ntargets; i++) {
		const struct target *t = &h->targets[i];

		if (strcmp(t->service, service) || strcmp(t->version, version))
			continue;
		if (t->c.state != HEALTH_DOWN)
			return false;
		n++;
		if (t->since_ms > since)
			since = t->since_ms;
	}
	if (!n)
		return false;
	if (since_ms)
		*since_ms = since;
	if (!reason || !len)
		return true;
	off = (size_t)snprintf(
	    reason, len, "every endpoint of %s %s fails its health checks:", service, version);
	for (size_t i = 0; i < h->ntargets && off < len; i++) {
		const struct target *t = &h->targets[i];
		char at[32];

		if (strcmp(t->service, service) || strcmp(t->version, version))
			continue;
		fmt_time(t->since_ms, at, sizeof(at));
		off += (size_t)snprintf(reason + off, len - off, " %s down since %s (%s);",
		                        t->endpoint, at, t->last_error);
	}
	if (off < len && off > 0 && reason[off - 1] == ';')
		reason[off - 1] = '\0';
	return true;
}

void health_counts_by_state(const struct health *h, size_t *up, size_t *down, size_t *unknown)
{
	*up = *down = *unknown = 0;
	for (size_t i = 0; h && i < h->ntargets; i++) {
		enum health_state s = h->targets[i].c.state;

		*up += s == HEALTH_UP;
		*down += s == HEALTH_DOWN;
		*unknown += s == HEALTH_UNKNOWN;
	}
}

void health_write_prometheus(const struct health *h, struct buf *out)
{
	if (!h || !h->ntargets)
		return;
	buf_append_str(out, "# HELP canaryd_endpoint_up Active health checks: 1 when the endpoint "
	                    "passes (up), 0 when it is down; absent until the first verdict.\n"
	                    "# TYPE canaryd_endpoint_up gauge\n");
	for (size_t i = 0; i < h->ntargets; i++) {
		const struct target *t = &h->targets[i];

		if (t->c.state == HEALTH_UNKNOWN)
			continue;
		buf_printf(
		    out, "canaryd_endpoint_up{service=\"%s\",version=\"%s\",endpoint=\"%s\"} %d\n",
		    t->service, t->version, t->endpoint, t->c.state == HEALTH_UP);
	}
}
