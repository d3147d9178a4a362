/*
 * upstream.c - the upstream connection machine, its pools, endpoint choice
 * and outlier accounting (upstream.h).
 *
 * Sockets are registered once, edge-triggered, for both directions.  A
 * short read means the socket is drained (no EAGAIN round trip) unless the
 * peer's FIN was signalled (LOOP_RDHUP): then reading goes on to the 0-byte
 * read, since a FIN that arrives with the last data gives no later edge.
 * The transport's handshake runs after the TCP connect, on either event;
 * a read or write that waits for the other direction (TLS) is retried when
 * that direction's event comes.
 */
#include "proxy/upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "proxy/transport_pick.h"

/* Header storage above this is freed when a connection goes idle. */
#define UPSTREAM_KEEP_HEAD 4096

struct upconn {
	struct loop_io io;
	struct loop_defer d;
	struct loop_timer timer;
	struct loop_defer kick; /* resumes reading at the end of the turn (no recursion) */
	struct loop_defer send; /* writes a started request at the end of the turn */
	struct upstream *us;
	uint32_t ep;
	const struct upconn_ops *ops;
	void *owner; /* NULL while idle in the pool */
	struct buf in, out;
	struct http_parser parser;
	struct transport t;
	struct upconn *pool_next, *pool_prev;
	uint64_t response_ms, idle_ms;
	int connecting; /* until the TCP connect and the transport handshake are done */
	int tcp_up;
	int closed;
	int in_pool;
	int reused;       /* served a request before this one */
	int got_bytes;    /* any response byte for the current request */
	int resp_started; /* the final response head came */
	int upload;       /* a request body is being sent */
	int paused;       /* the owner paused the response (its output is full) */
	int read_blocked; /* stopped reading with data possibly left in the socket */
	int rdhup;        /* the upstream sent FIN or failed: read until EOF/error */
	int rd_wait_out;  /* the last read wants LOOP_WRITE (TLS) */
	int wr_wait_in;   /* the last write wants LOOP_READ (TLS) */
};

static void upconn_read(struct upconn *u);

void upstream_init(struct upstream *us, struct loop *loop, struct proxy_registry *reg)
{
	us->loop = loop;
	us->reg = reg;
	us->rr = 0;
	us->stopping = 0;
	us->max_idle_per_ep = UPSTREAM_MAX_IDLE_PER_EP;
	us->bufs = NULL;
	for (uint32_t i = 0; i < PROXY_MAX_ENDPOINTS; i++) {
		us->pools[i].head = NULL;
		us->pools[i].n = 0;
	}
}

static void upconn_free(struct loop *loop, struct loop_defer *d)
{
	struct upconn *u = d->data;

	transport_release(&u->t, 1);
	close(u->io.fd);
	buf_release(&u->in);
	buf_release(&u->out);
	http_parser_release(&u->parser);
	free(u);
}

static void pool_remove(struct upconn *u)
{
	struct upconn_pool *pl = &u->us->pools[u->ep];

	if (!u->in_pool)
		return;
	if (u->pool_prev)
		u->pool_prev->pool_next = u->pool_next;
	else
		pl->head = u->pool_next;
	if (u->pool_next)
		u->pool_next->pool_prev = u->pool_prev;
	u->pool_next = u->pool_prev = NULL;
	u->in_pool = 0;
	pl->n--;
}

static void upconn_do_close(struct upconn *u)
{
	if (u->closed)
		return;
	u->closed = 1;
	u->owner = NULL;
	pool_remove(u);
	loop_timer_stop(u->us->loop, &u->timer);
	loop_io_del(u->us->loop, &u->io);
	loop_defer(u->us->loop, &u->d, upconn_free, u);
}

void upconn_close(struct upconn *u)
{
	upconn_do_close(u);
}

/* The connection failed: detach, close, then tell the owner (if any). */
static void upconn_failed(struct upconn *u, enum metrics_err kind)
{
	void *owner = u->owner;
	int stale = u->reused && !u->got_bytes &&
	            (kind == METRICS_ERR_RESET || kind == METRICS_ERR_CONNECT_REFUSED);

	upconn_do_close(u);
	if (owner)
		u->ops->fail(u, kind, stale, owner);
}

void upconn_release(struct upconn *u, int reuse)
{
	struct upstream *us = u->us;
	struct upconn_pool *pl = &us->pools[u->ep];

	u->owner = NULL;
	if (u->closed)
		return;
	if (!reuse || pl->n >= us->max_idle_per_ep || us->stopping || buf_used(&u->in)) {
		upconn_do_close(u);
		return;
	}
	http_parser_next(&u->parser);
	/* the parser keeps a small header store for the next response (the
	 * pool is bounded); the byte buffers go back to the worker's pool */
	http_parser_trim(&u->parser, UPSTREAM_KEEP_HEAD);
	buf_release(&u->in);
	buf_release(&u->out);
	u->reused = 1;
	u->in_pool = 1;
	u->pool_prev = NULL;
	u->pool_next = pl->head;
	if (pl->head)
		pl->head->pool_prev = u;
	pl->head = u;
	pl->n++;
	loop_timer_start(us->loop, &u->timer, u->idle_ms);
}

void upstream_close_idle(struct upstream *us, uint32_t ep)
{
	while (us->pools[ep].head)
		upconn_do_close(us->pools[ep].head);
}

void upstream_close_all_idle(struct upstream *us)
{
	for (uint32_t e = 0; e < PROXY_MAX_ENDPOINTS; e++)
		if (us->pools[e].head)
			upstream_close_idle(us, e);
}

/* ---- response parsing: the owner's ops ---- */

static int on_headers(struct http_parser *p, struct http_msg *m, void *data)
{
	struct upconn *u = data;

	if (!u->owner)
		return 502;
	if (m->status < 200 && m->status != 101)
		return 0; /* interim response: dropped, the final one follows */
	/* from here the response timeout bounds the wait between body reads */
	loop_timer_start(u->us->loop, &u->timer, u->response_ms);
	u->resp_started = 1;
	return u->ops->head(u, m, u->owner) ? 502 : 0;
}

static int on_body(struct http_parser *p, const char *at, size_t len, void *data)
{
	struct upconn *u = data;
	int rc;

	if (!u->owner)
		return 0;
	rc = u->ops->body(u, at, len, u->owner);
	if (rc == HTTP_PARSER_PAUSE || rc == 0)
		return rc;
	return 502;
}

static const struct http_parser_cbs upconn_cbs = {on_headers, on_body, NULL};

/* The response is complete: the owner takes it and gives the connection back. */
static void upconn_complete(struct upconn *u, int keep_alive)
{
	void *owner = u->owner;

	u->upload = 0;
	/* the owner releases it in the call (it may even get it back from the
	 * pool for its next request before returning) */
	u->ops->done(u, keep_alive, owner);
}

static void upconn_process(struct upconn *u)
{
	/* the first feed may be empty: a response whose last body bytes came
	 * before a pause completes only on the parser's next run */
	for (int first = 1; !u->closed && u->owner && !u->paused && (first || buf_used(&u->in));
	     first = 0) {
		size_t used = 0;
		int rc = http_parser_feed(&u->parser, buf_used(&u->in) ? buf_head(&u->in) : "",
		                          buf_used(&u->in), &used);
		const struct http_msg *m;

		buf_consume(&u->in, used);
		if (rc == HTTP_PARSE_AGAIN)
			break;
		if (rc == HTTP_PARSE_PAUSED) {
			u->paused = 1;
			break;
		}
		if (rc == HTTP_PARSE_ERROR) {
			upconn_failed(u, METRICS_ERR_BAD_RESPONSE);
			return;
		}
		/* DONE */
		m = http_parser_msg(&u->parser);
		if (m->status < 200 && m->status != 101) {
			http_parser_next(&u->parser);
			continue;
		}
		upconn_complete(u, m->keep_alive);
		return;
	}
	if (u->owner && !u->closed && u->ops->parsed)
		u->ops->parsed(u, u->owner);
}

/* Response body activity restarts the response timeout (once per read turn). */
static void body_activity(struct upconn *u)
{
	if (u->owner && u->resp_started)
		loop_timer_start(u->us->loop, &u->timer, u->response_ms);
}

static void upconn_read(struct upconn *u)
{
	int got = 0; /* bytes arrived this turn: one timer restart, not one per read */

	for (;;) {
		char *p;
		ssize_t n;

		if (u->paused || buf_used(&u->in) > UPSTREAM_HIGH_WATER) {
			/* the owner is slower: leave the rest in the kernel (TCP backpressure) */
			u->read_blocked = 1;
			break;
		}
		p = buf_reserve(&u->in, UPSTREAM_READ_CHUNK);
		if (!p) {
			upconn_failed(u, METRICS_ERR_BAD_RESPONSE);
			return;
		}
		n = transport_read(&u->t, p, UPSTREAM_READ_CHUNK);
		if (n > 0) {
			u->rd_wait_out = 0;
			buf_commit(&u->in, (size_t)n);
			u->got_bytes = 1;
			got = 1;
			if ((size_t)n < UPSTREAM_READ_CHUNK && !u->rdhup)
				break; /* drained: no EAGAIN round trip */
			continue;
		}
		if (n == -1 && errno == EAGAIN) {
			u->rd_wait_out = u->t.want == EPOLLOUT;
			break;
		}
		if (n == -1 && errno == EINTR)
			continue;
		/* EOF or error */
		if (got)
			body_activity(u);
		if (u->owner) {
			int saved = errno;

			upconn_process(u);
			if (u->closed || !u->owner)
				return;
			/* the owner is behind (paused, or resumed with a kick
			 * queued): the rest is parsed once it catches up, and this
			 * EOF (or error) is read again then */
			if (u->paused || buf_used(&u->in))
				return;
			if (n == 0 && http_parser_finish(&u->parser) == HTTP_PARSE_DONE) {
				/* a close-delimited body ended */
				upconn_complete(u, 0);
				return;
			}
			upconn_failed(u, n == 0 || saved == ECONNRESET || u->got_bytes
			                     ? METRICS_ERR_RESET
			                     : METRICS_ERR_CONNECT_REFUSED);
		} else {
			upconn_do_close(u); /* idle in the pool: the upstream closed it */
		}
		return;
	}
	if (got)
		body_activity(u);
	upconn_process(u);
	if (!u->closed && u->read_blocked && !u->paused && buf_used(&u->in) <= UPSTREAM_HIGH_WATER)
		upconn_resume(u);
}

int upconn_flush(struct upconn *u)
{
	if (u->connecting || u->closed)
		return u->closed ? -1 : 0;
	while (buf_used(&u->out)) {
		ssize_t n = transport_write(&u->t, buf_head(&u->out), buf_used(&u->out));

		if (n == -1) {
			if (errno == EAGAIN) {
				u->wr_wait_in = u->t.want == EPOLLIN;
				return 0;
			}
			if (errno == EINTR)
				continue;
			upconn_failed(u, METRICS_ERR_RESET);
			return -1;
		}
		u->wr_wait_in = 0;
		buf_consume(&u->out, (size_t)n);
		/* an upload in progress is activity: the response timeout counts
		 * from the last body bytes sent, not from the request head */
		if (u->owner && u->upload && !u->resp_started)
			loop_timer_start(u->us->loop, &u->timer, u->response_ms);
	}
	/* the upstream took everything: the owner may send more body */
	if (u->owner && u->ops->drained)
		u->ops->drained(u, u->owner);
	return 0;
}

static void upconn_cb(struct loop *loop, struct loop_io *io, uint32_t ev)
{
	struct upconn *u = io->data;

	if (ev & (LOOP_RDHUP | LOOP_ERROR))
		u->rdhup = 1; /* no later edge will come: read on to the EOF */
	if (u->connecting && !u->tcp_up && (ev & (LOOP_WRITE | LOOP_ERROR))) {
		int err = 0;
		socklen_t l = sizeof(err);

		getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err) {
			upconn_failed(u, err == ETIMEDOUT ? METRICS_ERR_CONNECT_TIMEOUT
			                                  : METRICS_ERR_CONNECT_REFUSED);
			return;
		}
		u->tcp_up = 1;
	}
	if (u->connecting && u->tcp_up) {
		/* the transport's handshake (none for plain TCP), on either event */
		if (u->t.ops->handshake(&u->t) == -1) {
			if (errno != EAGAIN)
				upconn_failed(u, METRICS_ERR_CONNECT_REFUSED);
			return;
		}
		u->connecting = 0;
		ev |= LOOP_WRITE; /* what was queued while connecting goes now */
		if (u->owner)
			loop_timer_start(loop, &u->timer, u->response_ms);
	}
	if (u->connecting)
		return;
	if (((ev & LOOP_WRITE) || (u->wr_wait_in && (ev & LOOP_READ))) && !u->closed)
		upconn_flush(u);
	if (((ev & LOOP_READ) || (u->rd_wait_out && (ev & LOOP_WRITE))) && !u->closed)
		upconn_read(u);
}

static void upconn_timeout(struct loop *loop, struct loop_timer *t)
{
	struct upconn *u = t->data;

	if (!u->owner) {
		upconn_do_close(u); /* idle in the pool */
		return;
	}
	if (u->paused) {
		/* not reading because the owner is slow: not the upstream's fault */
		loop_timer_start(loop, t, u->response_ms);
		return;
	}
	upconn_failed(u,
	              u->connecting ? METRICS_ERR_CONNECT_TIMEOUT : METRICS_ERR_RESPONSE_TIMEOUT);
}

static void kick_cb(struct loop *loop, struct loop_defer *d)
{
	struct upconn *u = d->data;

	if (u->closed)
		return;
	u->read_blocked = 0;
	upconn_read(u);
}

void upconn_resume(struct upconn *u)
{
	if (u->closed)
		return;
	if (u->paused) {
		u->paused = 0;
		http_parser_resume(&u->parser);
	}
	/* edge-triggered: data already in the socket gives no new event */
	loop_defer(u->us->loop, &u->kick, kick_cb, u);
}

int upconn_paused(const struct upconn *u)
{
	return u->paused;
}

/* A non-blocking TCP connect to e (TCP_NODELAY): the fd, or -1 with *err. */
static int connect_nb(const struct proxy_endpoint *e, int *err)
{
	int fd = socket(e->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	if (fd == -1) {
		*err = errno;
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&e->sa, e->salen) == -1 && errno != EINPROGRESS) {
		*err = errno;
		close(fd);
		return -1;
	}
	return fd;
}

static struct upconn *upconn_connect(struct upstream *us, const struct proxy_version *v,
                                     uint32_t ep, int *err)
{
	struct proxy_endpoint *e = proxy_registry_get(us->reg, ep);
	struct upconn *u;
	int fd, rc;

	fd = connect_nb(e, err);
	if (fd == -1)
		return NULL;
	u = calloc(1, sizeof(*u));
	if (!u) {
		*err = ENOMEM;
		goto out_close_fd;
	}
	rc = proxy_transport_upstream(v, e, fd, &u->t);
	if (rc) {
		*err = -rc;
		goto out_free;
	}
	u->us = us;
	u->ep = ep;
	u->connecting = 1;
	buf_init_pooled(&u->in, UPSTREAM_BUF_CAP, us->bufs);
	buf_init_pooled(&u->out, UPSTREAM_BUF_CAP, us->bufs);
	http_parser_init(&u->parser, HTTP_PARSE_RESPONSE, NULL, &upconn_cbs, u);
	loop_timer_init(&u->timer, upconn_timeout, u);
	if (loop_io_add(us->loop, &u->io, fd, upconn_cb, u) != 0) {
		*err = errno;
		http_parser_release(&u->parser);
		transport_release(&u->t, 0);
		goto out_free;
	}
	return u;

out_free:
	free(u);
out_close_fd:
	close(fd);
	return NULL;
}

struct upconn *upconn_get(struct upstream *us, const struct proxy_version *v, uint32_t ep,
                          const struct upconn_ops *ops, void *owner, int *err)
{
	struct upconn *u;

	/* the first idle connection made with this version's transport (two
	 * versions may name one address with different tls:); the others stay
	 * for their own versions until their idle timeout */
	for (u = us->pools[ep].head; u && !proxy_transport_reusable(v, &u->t); u = u->pool_next)
		;
	if (u) {
		/* its idle timer stays armed: upconn_start() re-arms it (moving
		 * an armed timer later costs no heap work; loop.h) */
		pool_remove(u);
	} else {
		u = upconn_connect(us, v, ep, err);
		if (!u)
			return NULL;
	}
	u->got_bytes = 0;
	u->paused = 0;
	u->resp_started = 0;
	u->upload = 0;
	u->ops = ops;
	u->owner = owner;
	return u;
}

struct buf *upconn_out(struct upconn *u)
{
	return &u->out;
}

size_t upconn_pending(const struct upconn *u)
{
	return buf_used(&u->out);
}

static void send_cb(struct loop *loop, struct loop_defer *d)
{
	struct upconn *u = d->data;

	if (!u->closed)
		upconn_flush(u); /* a failure goes to the owner's ops->fail */
}

int upconn_start(struct upconn *u, const struct upconn_req *rq)
{
	u->response_ms = rq->response_ms;
	u->idle_ms = rq->idle_ms;
	u->upload = rq->upload;
	if (rq->head_req)
		http_parser_expect_no_body(&u->parser);
	if (u->connecting) {
		loop_timer_start(u->us->loop, &u->timer, rq->connect_ms);
		return 0;
	}
	loop_timer_start(u->us->loop, &u->timer, rq->response_ms);
	/* written at the end of the turn with the turn's other requests: the
	 * upstream is woken once for many of them (a body the owner queues
	 * meanwhile goes in the same write) */
	loop_defer(u->us->loop, &u->send, send_cb, u);
	return 0;
}

uint32_t upstream_pick(struct upstream *us, const struct proxy_version *v)
{
	uint64_t now = loop_now_ms(us->loop);
	uint32_t start = us->rr++;

	for (uint32_t i = 0; i < v->neps; i++) {
		uint32_t ep = v->eps[(start + i) % v->neps];

		if (atomic_load_explicit(&proxy_registry_get(us->reg, ep)->ejected_until_ms,
		                         memory_order_relaxed) <= now)
			return ep;
	}
	return v->eps[start % v->neps]; /* all ejected: never leave the version empty */
}

void upstream_outlier_note(struct upstream *us, const struct proxy_service *svc,
                           const struct proxy_version *v, uint32_t ep, int failed)
{
	struct proxy_endpoint *e = proxy_registry_get(us->reg, ep);
	const struct config_outlier *oc = &svc->outlier;
	uint64_t now;
	uint32_t ejected = 0, max;
	unsigned n;

	atomic_fetch_add_explicit(&e->requests, 1, memory_order_relaxed);
	if (!failed) {
		if (atomic_load_explicit(&e->consecutive_fail, memory_order_relaxed))
			atomic_store_explicit(&e->consecutive_fail, 0, memory_order_relaxed);
		return;
	}
	atomic_fetch_add_explicit(&e->failures, 1, memory_order_relaxed);
	n = atomic_fetch_add_explicit(&e->consecutive_fail, 1, memory_order_relaxed) + 1;
	if (oc->consecutive_5xx == 0 || n < oc->consecutive_5xx || v->neps < 2)
		return;
	/* never eject past the cap, never the last endpoint standing */
	now = loop_now_ms(us->loop);
	for (uint32_t i = 0; i < v->neps; i++)
		if (atomic_load(&proxy_registry_get(us->reg, v->eps[i])->ejected_until_ms) > now)
			ejected++;
	max = (uint32_t)(((uint64_t)v->neps * oc->max_ejected_percent) / 100000);
	if (ejected + 1 > max || ejected + 1 >= v->neps)
		return;
	n = atomic_fetch_add(&e->ejections, 1) + 1;
	atomic_store(&e->ejected_until_ms, now + oc->base_ejection_ms * n);
	atomic_store(&e->consecutive_fail, 0);
	log_warn("endpoint ejected", "endpoint", e->name, "service", svc->name, NULL);
}
