/*
 * worker.c - the data plane's threads (proxy.h): N workers, each with its
 * own loop, its SO_REUSEPORT listeners, its client connections
 * (exchange.c), its upstream pools (upstream.c) and mirrored requests
 * (mirror_worker.c); the table each worker applies at the start of a loop
 * turn; start, graceful stop; and the proxy_* functions the control thread
 * calls (publish, in-flight counts, mirror statistics, request samples).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "core/uring.h"
#include "http/server.h"
#include "proxy/proxy_internal.h"

static void accept_cb(struct loop *loop, struct loop_io *io, uint32_t ev)
{
	struct wlistener *wl = io->data;
	struct worker *w = wl->w;

	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(io->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		int one = 1;

		if (fd == -1)
			return;
		if (w->stopping) {
			close(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		client_accept(w, wl, fd, &ss);
	}
}

static void listener_close(struct worker *w, struct wlistener *wl)
{
	if (wl->fd < 0)
		return;
	loop_io_del(w->loop, &wl->io);
	close(wl->fd);
	wl->fd = -1;
	wl->tindex = -1;
}

/* Binds the table's listeners that this worker lacks, closes removed ones. */
static int listeners_reconcile(struct worker *w, const struct proxy_table *t)
{
	int failed = 0;

	for (unsigned i = 0; i < w->nls; i++)
		w->ls[i].tindex = -1;
	for (uint32_t k = 0; k < t->nlisteners; k++) {
		struct wlistener *wl = NULL;

		for (unsigned i = 0; i < w->nls; i++)
			if (w->ls[i].fd >= 0 && strcmp(w->ls[i].addr, t->listeners[k].addr) == 0)
				wl = &w->ls[i];
		if (!wl) {
			int fd;

			for (unsigned i = 0; i < w->nls && !wl; i++)
				if (w->ls[i].fd < 0)
					wl = &w->ls[i];
			if (!wl && w->nls < MAX_LISTENERS)
				wl = &w->ls[w->nls++];
			if (!wl) {
				failed = 1;
				continue;
			}
			fd = http_listen(t->listeners[k].addr, 1);
			if (fd < 0) {
				snprintf(w->bind_err, sizeof(w->bind_err),
				         "cannot listen on %s: %s", t->listeners[k].addr,
				         strerror(-fd));
				wl->fd = -1;
				failed = 1;
				continue;
			}
			wl->fd = fd;
			wl->w = w;
			snprintf(wl->addr, sizeof(wl->addr), "%s", t->listeners[k].addr);
			loop_io_add(w->loop, &wl->io, fd, accept_cb, wl);
		}
		wl->tindex = (int)k;
	}
	for (unsigned i = 0; i < w->nls; i++)
		if (w->ls[i].fd >= 0 && w->ls[i].tindex < 0)
			listener_close(w, &w->ls[i]);
	return failed ? -1 : 0;
}

static void drain_deadline(struct loop *loop, struct loop_timer *t)
{
	clients_drain_deadline(t->data);
}

/*
 * A new table: close idle upstream connections of draining versions, and
 * bound the requests still in flight on them by the service's drain time.
 */
static void apply_table(struct worker *w, const struct proxy_table *t)
{
	uint64_t drain = UINT64_MAX;

	for (uint32_t s = 0; s < t->nservices; s++) {
		for (uint32_t v = 0; v < t->services[s].nversions; v++) {
			if (!t->services[s].versions[v].draining)
				continue;
			for (uint32_t e = 0; e < t->services[s].versions[v].neps; e++)
				upstream_close_idle(&w->up, t->services[s].versions[v].eps[e]);
			if (t->services[s].drain_ms < drain)
				drain = t->services[s].drain_ms;
		}
	}
	if (drain != UINT64_MAX && !loop_timer_armed(&w->drain_timer))
		loop_timer_start(w->loop, &w->drain_timer, drain);
}

static void worker_prepare(struct loop *loop, void *data)
{
	struct worker *w = data;
	struct snap_obj *held = w->table ? &w->table->obj : NULL;

	if (snapshot_acquire(&w->p->snap, &held)) {
		w->table = (struct proxy_table *)held;
		if (w->table) {
			if (!w->stopping)
				listeners_reconcile(w, w->table);
			apply_table(w, w->table);
			atomic_store_explicit(&w->applied_rev, w->table->obj.revision,
			                      memory_order_release);
		}
	}
}

static void noop_post(struct loop *loop, void *arg)
{
}

/* The stop deadline passed (or nothing is left): close what remains, stop. */
static void stop_deadline_post(struct loop *loop, void *arg)
{
	clients_close_all(arg);
	loop_stop(loop);
}

static void worker_begin_stop(struct loop *loop, void *arg)
{
	struct worker *w = arg;

	w->stopping = 1;
	w->up.stopping = 1;
	for (unsigned i = 0; i < w->nls; i++)
		listener_close(w, &w->ls[i]);
	clients_begin_stop(w);
	upstream_close_all_idle(&w->up);
	if (atomic_load(&w->nconns) == 0)
		loop_stop(loop);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	char name[16];

	snprintf(name, sizeof(name), "canaryd-w%u", w->id);
	pthread_setname_np(pthread_self(), name);
	if (w->p->use_uring) {
		/* the ring is the thread's own (single issuer): made here */
		char why[160];

		if (loop_uring_enable(w->loop, why, sizeof(why)) != 0)
			log_warn("io_uring unavailable in worker, using epoll", "worker", name,
			         "why", why, NULL);
	}
	loop_run(w->loop);
	loop_timer_stop(w->loop, &w->drain_timer);
	/* whatever is left (deadline passed) is closed here */
	w->up.stopping = 1;
	clients_close_all(w);
	mirror_shutdown(w);
	upstream_close_all_idle(&w->up);
	for (unsigned i = 0; i < w->nls; i++)
		listener_close(w, &w->ls[i]);
	loop_run_once(w->loop, 0); /* run the deferred frees */
	buf_pool_release(&w->bufs);
	return NULL;
}

struct proxy *proxy_new(unsigned nworkers, struct metrics_registry *metrics, uint64_t seed)
{
	struct proxy *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	if (nworkers == 0)
		nworkers = 1;
	if (nworkers > PROXY_MAX_WORKERS)
		nworkers = PROXY_MAX_WORKERS;
	p->reg = proxy_registry_new();
	p->workers = calloc(nworkers, sizeof(*p->workers));
	p->mstats = mirror_stats_new(nworkers);
	p->inflight = calloc((size_t)nworkers * PROXY_MAX_SERIES, sizeof(*p->inflight));
	p->samples = sample_store_new(nworkers);
	if (!p->reg || !p->workers || !p->mstats || !p->inflight || !p->samples) {
		sample_store_free(p->samples);
		mirror_stats_free(p->mstats);
		proxy_registry_free(p->reg);
		free(p->workers);
		free(p->inflight);
		free(p);
		return NULL;
	}
	for (unsigned i = 0; i < nworkers; i++)
		p->workers[i].inflight = p->inflight + (size_t)i * PROXY_MAX_SERIES;
	p->reg->mirror = p->mstats;
	snapshot_init(&p->snap);
	p->nworkers = nworkers;
	p->metrics = metrics;
	p->seed = seed ? seed : clock_wall_ms() ^ ((uint64_t)getpid() << 32);
	return p;
}

struct proxy_registry *proxy_registry(struct proxy *p)
{
	return p->reg;
}

uint64_t proxy_publish(struct proxy *p, struct proxy_table *t)
{
	uint64_t rev = snapshot_publish(&p->snap, &t->obj);

	if (p->started)
		for (unsigned i = 0; i < p->nworkers; i++)
			loop_post(p->workers[i].loop, noop_post, NULL);
	return rev;
}

int proxy_applied(struct proxy *p, uint64_t rev)
{
	for (unsigned i = 0; i < p->nworkers; i++)
		if (atomic_load_explicit(&p->workers[i].applied_rev, memory_order_acquire) < rev)
			return 0;
	return 1;
}

struct proxy_table *proxy_table_get(struct proxy *p)
{
	struct snap_obj *held = NULL;

	snapshot_acquire(&p->snap, &held);
	return (struct proxy_table *)held;
}

void proxy_set_io(struct proxy *p, enum proxy_io io)
{
	p->io = io;
}

const char *proxy_io_name(const struct proxy *p)
{
	return p->use_uring ? "uring" : "epoll";
}

/* Decides p->use_uring from proxy_set_io() and CANARYD_IO. */
static int io_decide(struct proxy *p, char *err, size_t errlen)
{
	const char *env = getenv("CANARYD_IO");
	enum proxy_io io = p->io;
	char why[160];

	if (env && *env) {
		if (strcmp(env, "epoll") == 0) {
			io = PROXY_IO_EPOLL;
		} else if (strcmp(env, "uring") == 0) {
			io = PROXY_IO_URING;
		} else if (strcmp(env, "auto") == 0) {
			io = PROXY_IO_AUTO;
		} else {
			snprintf(err, errlen,
			         "CANARYD_IO: expected auto, epoll or uring, got \"%s\"", env);
			return -1;
		}
	}
	p->use_uring = 0;
	if (io == PROXY_IO_EPOLL)
		return 0;
	if (uring_probe(why, sizeof(why)) != 0) {
		if (io == PROXY_IO_URING) {
			snprintf(err, errlen, "io: uring: %s", why);
			return -1;
		}
		log_info("io: auto: using epoll", "why", why, NULL);
		return 0;
	}
	p->use_uring = 1;
	return 0;
}

int proxy_start(struct proxy *p, char *err, size_t errlen)
{
	if (io_decide(p, err, errlen) != 0)
		return -1;
	log_info("proxy I/O path", "io", proxy_io_name(p), NULL);
	for (unsigned i = 0; i < p->nworkers; i++) {
		struct worker *w = &p->workers[i];

		w->p = p;
		w->id = i;
		w->rng = p->seed + i * 0x632be59bd9b4e019ULL;
		w->loop = loop_new();
		if (!w->loop) {
			snprintf(err, errlen, "cannot create worker loop");
			return -1;
		}
		upstream_init(&w->up, w->loop, p->reg);
		w->up.bufs = &w->bufs;
		loop_timer_init(&w->drain_timer, drain_deadline, w);
		loop_set_prepare(w->loop, worker_prepare, w);
		/* bind before the threads start so errors are reported now */
		worker_prepare(w->loop, w);
		if (w->bind_err[0]) {
			snprintf(err, errlen, "%s", w->bind_err);
			return -1;
		}
	}
	for (unsigned i = 0; i < p->nworkers; i++) {
		if (pthread_create(&p->workers[i].th, NULL, worker_main, &p->workers[i]) != 0) {
			snprintf(err, errlen, "cannot start worker thread");
			for (unsigned k = 0; k < i; k++) {
				loop_stop(p->workers[k].loop);
				pthread_join(p->workers[k].th, NULL);
			}
			return -1;
		}
	}
	p->started = 1;
	return 0;
}

int proxy_listener_up(struct proxy *p, const char *name)
{
	struct proxy_table *t = proxy_table_get(p);
	int up = 0;

	if (!t)
		return 0;
	for (uint32_t k = 0; k < t->nlisteners; k++) {
		if (strcmp(t->listeners[k].name, name) != 0)
			continue;
		up = p->started;
		for (unsigned i = 0; i < p->nworkers && up; i++) {
			int found = 0;

			for (unsigned j = 0; j < p->workers[i].nls; j++)
				if (p->workers[i].ls[j].fd >= 0 &&
				    strcmp(p->workers[i].ls[j].addr, t->listeners[k].addr) == 0)
					found = 1;
			up = found;
		}
	}
	snap_obj_unref(&t->obj);
	return up;
}

void proxy_stop(struct proxy *p, uint64_t deadline_ms)
{
	if (!p->started)
		return;
	for (unsigned i = 0; i < p->nworkers; i++)
		loop_post(p->workers[i].loop, worker_begin_stop, &p->workers[i]);
	/* wait for in-flight requests, up to the deadline, then force */
	{
		uint64_t until = clock_mono_ms() + deadline_ms;

		while (clock_mono_ms() < until && proxy_client_conns(p) > 0)
			usleep(5000);
	}
	for (unsigned i = 0; i < p->nworkers; i++) {
		loop_post(p->workers[i].loop, stop_deadline_post, &p->workers[i]);
		pthread_join(p->workers[i].th, NULL);
	}
	p->started = 0;
}

void proxy_free(struct proxy *p)
{
	if (!p)
		return;
	for (unsigned i = 0; i < p->nworkers; i++) {
		struct worker *w = &p->workers[i];

		if (w->table)
			snap_obj_unref(&w->table->obj);
		if (w->loop)
			loop_free(w->loop);
	}
	snapshot_release(&p->snap);
	proxy_registry_free(p->reg);
	mirror_stats_free(p->mstats);
	sample_store_free(p->samples);
	free(p->workers);
	free(p->inflight);
	free(p);
}

long proxy_inflight(struct proxy *p, int series)
{
	long n = 0;

	if (series < 0 || series >= PROXY_MAX_SERIES)
		return -ERANGE;
	for (unsigned i = 0; i < p->nworkers; i++)
		n += atomic_load_explicit(&p->workers[i].inflight[series], memory_order_relaxed);
	return n < 0 ? 0 : n;
}

uint64_t proxy_client_conns(struct proxy *p)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < p->nworkers; i++)
		n += atomic_load(&p->workers[i].nconns);
	return n;
}

int proxy_samples(struct proxy *p, const char *service, const char *version,
                  struct proxy_sample *out, int max)
{
	struct proxy_table *t = proxy_table_get(p);
	const struct proxy_service *svc = t ? proxy_table_service(t, service) : NULL;
	int v = svc ? proxy_service_version(svc, version) : -1;
	int series = v >= 0 ? svc->versions[v].series : -1;
	int n;

	if (t)
		snap_obj_unref(&t->obj);
	if (v < 0)
		return ERR_NOTFOUND;
	if (series < 0)
		return 0; /* no metrics series: nothing is sampled */
	n = sample_read(p->samples, series, out, max);
	return n == -ERANGE ? 0 : n;
}

int proxy_mirror_read_full(struct proxy *p, const char *service, struct mirror_snapshot *out,
                           struct mirror_mismatch *mm, size_t max, size_t *nmm)
{
	int slot = mirror_stats_find(p->mstats, service);

	if (nmm)
		*nmm = 0;
	if (slot < 0 || mirror_stats_read(p->mstats, slot, out) != 0) {
		memset(out, 0, sizeof(*out));
		return -ENOENT;
	}
	if (mm && nmm)
		*nmm = mirror_stats_mismatches(p->mstats, slot, mm, max);
	return 0;
}

int proxy_mirror_read(struct proxy *p, const char *service, struct mirror_snapshot *out)
{
	int rc = proxy_mirror_read_full(p, service, out, NULL, 0, NULL);

	if (rc == 0 && out->mirrored == 0 && out->dropped == 0 && out->too_large == 0 &&
	    out->method == 0) {
		memset(out, 0, sizeof(*out));
		return -ENOENT; /* the service never mirrored anything */
	}
	return rc;
}

int proxy_mirror_write_prometheus(struct proxy *p, struct buf *out)
{
	return mirror_stats_write_prometheus(p->mstats, out);
}
