/*
 * server.c - HTTP/1.1 server connections.  See server.h and docs/http.md.
 */
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "http/sock.h"
#include "net/tls.h"
#include "net/transport.h"

#define IN_CAP          (64 * 1024)
#define READ_CHUNK      (16 * 1024 - 1) /* + buf's hidden NUL = one 16 KiB block */
#define LINGER_MS       2000
#define ACCEPT_RETRY_MS 100
#define MAX_LISTENERS   8

enum { CS_HEADERS = 0, CS_BODY, CS_RESPONDING, CS_LINGER };
enum { BODY_BUFFER = 0, BODY_STREAM, BODY_DISCARD };
enum { RESP_NONE = 0, RESP_STARTED, RESP_DONE };
enum { TK_NONE = 0, TK_IDLE, TK_HEADER, TK_BODY, TK_LINGER };

struct listener {
	struct loop_io io;
	struct http_server *srv;
	int fd;
};

struct http_server {
	struct loop *loop;
	struct http_server_config cfg;
	struct http_handler h;
	struct listener ls[MAX_LISTENERS];
	size_t nls;
	struct loop_timer accept_retry;
	struct http_conn *conns; /* doubly linked */
	size_t nconns;
	int shutting_down;
	void (*done)(struct http_server *s, void *data);
	void *done_data;
	struct loop_defer done_defer;
	struct tls_server *tls; /* new connections speak TLS with it; NULL: plain */
};

struct http_conn {
	struct http_server *srv;
	struct http_conn *prev, *next;
	struct loop_io io;
	struct loop_timer timer;
	struct loop_defer defer;
	int fd;
	struct transport t; /* every read and write of fd (plain or TLS) */
	int hs_done;        /* t's handshake is over */
	int rd_wants_write; /* the last read waits for the socket to be writable (TLS) */
	struct http_parser parser;
	struct buf in, out, body;

	int state;
	int timer_kind;
	int body_mode; /* BODY_BUFFER caps at body.cap */
	int resp;
	int resp_chunked, resp_sse, resp_head, resp_nobody;
	int64_t resp_left; /* Content-Length responses: bytes still due; -1 otherwise */
	int keep_alive;
	int req_complete;
	int close_after; /* close once the output is flushed */
	int linger;      /* ... after half-closing and draining the input */
	int read_paused; /* on_body asked to stop */
	int can_read;    /* the socket may hold unread bytes (edge-triggered) */
	int closed;
	int running, rerun;
	unsigned nreq;
	void *udata;
	char peer[INET6_ADDRSTRLEN];
};

static void conn_kick(struct http_conn *c);
static void conn_close(struct http_conn *c);

/* --- listening ------------------------------------------------------- */

int http_listen(const char *addr, int reuseport)
{
	char host[256];
	struct str port;
	struct addrinfo hints, *res = NULL, *ai;
	int fd = -1, one = 1, rc;

	if (!addr || sock_split_hostport(addr, host, sizeof(host), &port) != 0 || port.len == 0 ||
	    port.len >= 16)
		return -EINVAL;
	if (strcmp(host, "*") == 0)
		host[0] = 0;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(host[0] ? host : NULL, port.p, &hints, &res);
	if (rc != 0)
		return -EINVAL;
	rc = -EADDRNOTAVAIL;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd == -1) {
			rc = -errno;
			continue;
		}
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
		    (reuseport &&
		     setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1) ||
		    bind(fd, ai->ai_addr, ai->ai_addrlen) == -1 || listen(fd, 511) == -1) {
			rc = -errno;
			close(fd);
			fd = -1;
			continue;
		}
		break;
	}
	freeaddrinfo(res);
	return fd >= 0 ? fd : rc;
}

int http_local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) == -1)
		return -errno;
	return sock_addr_port((struct sockaddr *)&ss);
}

/* --- output ---------------------------------------------------------- */

/*
 * sock_sendv() over the connection's transport: straight out when nothing
 * is queued (and the handshake is over), the rest into the bounded output
 * buffer.  Returns 0, -EPIPE or -ENOBUFS.
 */
static int t_sendv(struct http_conn *c, struct iovec *iov, int n)
{
	int i = 0;

	if (c->hs_done && buf_used(&c->out) == 0) {
		ssize_t w = transport_writev(&c->t, iov, n);

		if (w == -1) {
			if (errno != EAGAIN)
				return -EPIPE;
			w = 0;
		}
		while (i < n && (size_t)w >= iov[i].iov_len) {
			w -= (ssize_t)iov[i].iov_len;
			i++;
		}
		if (i < n) {
			iov[i].iov_base = (char *)iov[i].iov_base + w;
			iov[i].iov_len -= (size_t)w;
		}
	}
	for (; i < n; i++)
		if (buf_append(&c->out, iov[i].iov_base, iov[i].iov_len) != 0)
			return -ENOBUFS;
	return 0;
}

/* sock_flush() over the transport: 0 (all written, or it would block), -EPIPE. */
static int t_flush(struct http_conn *c)
{
	while (c->hs_done && buf_used(&c->out) > 0) {
		ssize_t w = transport_write(&c->t, buf_head(&c->out), buf_used(&c->out));

		if (w == -1)
			return errno == EAGAIN ? 0 : -EPIPE;
		buf_consume(&c->out, (size_t)w);
	}
	return 0;
}

/*
 * Sends iov: straight to the socket when nothing is queued, the rest into
 * the bounded output buffer.  Returns 0, -EPIPE or -ENOBUFS (closes).
 */
static int conn_sendv(struct http_conn *c, struct iovec *iov, int n)
{
	int rc;

	if (c->closed)
		return -EPIPE;
	rc = t_sendv(c, iov, n);
	if (rc == -ENOBUFS)
		log_warn("http output cap reached, closing", "peer", c->peer, NULL);
	if (rc != 0)
		conn_close(c);
	return rc;
}

static int conn_send(struct http_conn *c, const void *p, size_t len)
{
	struct iovec iov = {(void *)p, len};

	return conn_sendv(c, &iov, 1);
}

static const char *http_date(struct loop *loop)
{
	static __thread char date[64];
	static __thread time_t last;
	time_t now = (time_t)(loop_wall_ms(loop) / 1000);

	if (now != last || date[0] == 0) {
		struct tm tm;

		gmtime_r(&now, &tm);
		strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
		last = now;
	}
	return date;
}

static int is_framing(struct str name)
{
	return str_caseeq_c(name, "content-length") || str_caseeq_c(name, "transfer-encoding") ||
	       str_caseeq_c(name, "connection") || str_caseeq_c(name, "keep-alive");
}

/*
 * Builds the status line and headers.  clen: a Content-Length >= 0, or
 * HTTP_FRAMING_CHUNKED / HTTP_FRAMING_NONE (close-delimited or no body allowed).
 */
static int build_head(struct http_conn *c, struct buf *b, int status,
                      const struct http_header *hdrs, size_t nhdrs, int64_t clen)
{
	const struct http_msg *req = http_parser_msg(&c->parser);
	size_t i;
	int rc = 0;

	rc |= buf_printf(b, "HTTP/1.1 %d %s\r\n", status, http_status_text(status));
	if (c->srv->cfg.send_date)
		rc |= buf_printf(b, "Date: %s\r\n", http_date(c->srv->loop));
	for (i = 0; i < nhdrs; i++)
		if (!is_framing(hdrs[i].name))
			rc |= http_head_add(b, hdrs[i].name, hdrs[i].value);
	rc |= http_head_framing(b, clen);
	if (!c->keep_alive)
		rc |= buf_append_lit(b, "Connection: close\r\n");
	else if (req->version == 10)
		rc |= buf_append_lit(b, "Connection: keep-alive\r\n");
	rc |= buf_append_lit(b, "\r\n");
	return rc ? -ENOBUFS : 0;
}

/* The response is complete: move on once the request is complete too. */
static void resp_finished(struct http_conn *c)
{
	c->resp = RESP_DONE;
	if (!c->req_complete && c->state == CS_BODY) {
		/* answered early: read and drop the rest of the body */
		c->body_mode = BODY_DISCARD;
		http_parser_set_body_limit(&c->parser, 0);
		if (c->read_paused) {
			c->read_paused = 0;
			http_parser_resume(&c->parser);
		}
	}
	conn_kick(c);
}

static int status_has_body(int status)
{
	return !(status / 100 == 1 || status == 204 || status == 304);
}

static int resp_begin(struct http_conn *c)
{
	if (c->closed)
		return -EPIPE;
	if (c->resp != RESP_NONE)
		return -EALREADY;
	if (c->state != CS_BODY && c->state != CS_RESPONDING)
		return -EINVAL; /* no request */
	if (c->srv->shutting_down)
		c->keep_alive = 0;
	return 0;
}

int http_conn_respond(struct http_conn *c, int status, const struct http_header *hdrs, size_t nhdrs,
                      const void *body, size_t len)
{
	struct buf *b;
	struct iovec iov[2];
	int rc, nobody;

	if ((rc = resp_begin(c)) != 0)
		return rc;
	nobody = !status_has_body(status);
	c->resp_head = http_parser_msg(&c->parser)->method_id == HTTP_M_HEAD;
	b = http_scratch();
	if (build_head(c, b, status, hdrs, nhdrs, nobody ? HTTP_FRAMING_NONE : (int64_t)len) != 0)
		return -ENOBUFS;
	iov[0] = (struct iovec){buf_head(b), buf_used(b)};
	iov[1] = (struct iovec){(void *)body, len};
	c->resp = RESP_STARTED;
	rc = conn_sendv(c, iov, nobody || c->resp_head || len == 0 ? 1 : 2);
	if (rc != 0)
		return rc;
	resp_finished(c);
	return 0;
}

static void json_escape(struct buf *b, const char *s)
{
	for (; s && *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			buf_printf(b, "\\%c", ch);
		else if (ch < 0x20)
			buf_printf(b, "\\u%04x", ch);
		else
			buf_append(b, s, 1);
	}
}

int http_conn_respond_error(struct http_conn *c, int status, const char *code, const char *message)
{
	static const struct http_header ct[] = {
	    {STR_LIT("Content-Type"), STR_LIT("application/json")}};
	struct buf body;
	int rc;

	buf_init(&body, 4096);
	buf_append_str(&body, "{\"error\":{\"code\":\"");
	json_escape(&body, code ? code : http_status_code_name(status));
	buf_append_str(&body, "\",\"message\":\"");
	json_escape(&body, message ? message : http_status_text(status));
	buf_append_str(&body, "\"}}\n");
	rc = http_conn_respond(c, status, ct, 1, body.data ? buf_head(&body) : "", buf_used(&body));
	buf_release(&body);
	return rc;
}

int http_conn_start(struct http_conn *c, int status, const struct http_header *hdrs, size_t nhdrs,
                    int64_t content_length)
{
	const struct http_msg *req = http_parser_msg(&c->parser);
	struct buf *b;
	int64_t framing = content_length;
	int rc;

	if ((rc = resp_begin(c)) != 0)
		return rc;
	c->resp_head = req->method_id == HTTP_M_HEAD;
	c->resp_nobody = !status_has_body(status);
	c->resp_chunked = 0;
	c->resp_left = -1;
	if (c->resp_nobody) {
		framing = HTTP_FRAMING_NONE;
	} else if (content_length >= 0) {
		c->resp_left = content_length;
	} else if (req->version >= 11) {
		c->resp_chunked = 1;
	} else {
		framing = HTTP_FRAMING_NONE; /* HTTP/1.0: delimited by closing */
		c->keep_alive = 0;
	}
	b = http_scratch();
	if (build_head(c, b, status, hdrs, nhdrs, framing) != 0)
		return -ENOBUFS;
	c->resp = RESP_STARTED;
	return conn_send(c, buf_head(b), buf_used(b));
}

int http_conn_start_chunked(struct http_conn *c, int status, const struct http_header *hdrs,
                            size_t nhdrs)
{
	return http_conn_start(c, status, hdrs, nhdrs, -1);
}

int http_conn_write(struct http_conn *c, const void *p, size_t len)
{
	if (c->closed)
		return -EPIPE;
	if (c->resp != RESP_STARTED)
		return -EINVAL;
	if (len == 0 || c->resp_head || c->resp_nobody)
		return 0;
	if (c->resp_chunked) {
		char hex[20];
		struct iovec iov[3];

		return conn_sendv(c, iov, http_chunk_iov(iov, hex, p, len));
	}
	if (c->resp_left >= 0) {
		if ((uint64_t)len > (uint64_t)c->resp_left)
			return -EINVAL;
		c->resp_left -= (int64_t)len;
	}
	return conn_send(c, p, len);
}

int http_conn_write_chunk(struct http_conn *c, const void *p, size_t len)
{
	return http_conn_write(c, p, len);
}

int http_conn_end(struct http_conn *c)
{
	int rc = 0;

	if (c->closed)
		return -EPIPE;
	if (c->resp != RESP_STARTED)
		return -EINVAL;
	if (c->resp_chunked && !c->resp_head)
		rc = conn_send(c, "0\r\n\r\n", 5);
	else if (c->resp_left > 0 && !c->resp_head) {
		/* short body: the framing is broken, the connection must go */
		c->keep_alive = 0;
		c->close_after = 1;
		c->linger = 1;
	}
	if (rc != 0)
		return rc;
	c->resp_sse = 0;
	resp_finished(c);
	return 0;
}

int http_conn_start_sse(struct http_conn *c, const struct http_header *hdrs, size_t nhdrs)
{
	struct http_header all[32];
	size_t n = 0, i;
	int rc;

	all[n++] = (struct http_header){STR_LIT("Content-Type"), STR_LIT("text/event-stream")};
	all[n++] = (struct http_header){STR_LIT("Cache-Control"), STR_LIT("no-cache")};
	all[n++] = (struct http_header){STR_LIT("X-Accel-Buffering"), STR_LIT("no")};
	for (i = 0; i < nhdrs && n < sizeof(all) / sizeof(all[0]); i++)
		all[n++] = hdrs[i];
	rc = http_conn_start(c, 200, all, n, -1);
	if (rc == 0)
		c->resp_sse = 1;
	return rc;
}

static int sse_push(struct http_conn *c, struct buf *ev)
{
	size_t cap = c->srv->cfg.sse_backlog_bytes;

	if (buf_used(&c->out) + buf_used(ev) > cap) {
		log_warn("sse subscriber too slow, dropped", "peer", c->peer, NULL);
		conn_close(c);
		return -ENOBUFS;
	}
	return http_conn_write(c, buf_head(ev), buf_used(ev));
}

static int has_newline(struct str s)
{
	return memchr(s.p ? s.p : "", '\n', s.len) || memchr(s.p ? s.p : "", '\r', s.len);
}

int http_conn_sse_send(struct http_conn *c, struct str id, struct str event, struct str data)
{
	struct buf *b;
	const char *p = data.p, *end = data.p + data.len;
	int rc = 0;

	if (c->closed)
		return -EPIPE;
	if (!c->resp_sse)
		return -EINVAL;
	if (has_newline(id) || has_newline(event))
		return -EINVAL;
	b = http_scratch();
	if (id.len) {
		rc |= buf_append_str(b, "id: ");
		rc |= buf_append(b, id.p, id.len);
		rc |= buf_append(b, "\n", 1);
	}
	if (event.len) {
		rc |= buf_append_str(b, "event: ");
		rc |= buf_append(b, event.p, event.len);
		rc |= buf_append(b, "\n", 1);
	}
	do {
		const char *nl = p ? memchr(p, '\n', (size_t)(end - p)) : NULL;
		const char *le = nl ? nl : end;
		size_t l = (size_t)(le - p);

		if (l > 0 && p[l - 1] == '\r')
			l--;
		rc |= buf_append_str(b, "data: ");
		rc |= buf_append(b, p, l);
		rc |= buf_append(b, "\n", 1);
		p = nl ? nl + 1 : end;
	} while (p < end);
	rc |= buf_append(b, "\n", 1);
	if (rc)
		return -ENOBUFS;
	return sse_push(c, b);
}

int http_conn_sse_comment(struct http_conn *c, struct str text)
{
	struct buf *b;
	int rc = 0;

	if (c->closed)
		return -EPIPE;
	if (!c->resp_sse)
		return -EINVAL;
	if (has_newline(text))
		return -EINVAL;
	b = http_scratch();
	rc |= buf_append(b, ": ", 2);
	rc |= buf_append(b, text.p, text.len);
	rc |= buf_append(b, "\n\n", 2);
	if (rc)
		return -ENOBUFS;
	return sse_push(c, b);
}

size_t http_conn_backlog(const struct http_conn *c)
{
	return buf_used(&c->out);
}

/* --- connection state machine ----------------------------------------- */

static void timer_arm(struct http_conn *c, int kind, uint32_t ms)
{
	c->timer_kind = kind;
	loop_timer_start(c->srv->loop, &c->timer, ms);
}

static void timer_disarm(struct http_conn *c)
{
	c->timer_kind = TK_NONE;
	loop_timer_stop(c->srv->loop, &c->timer);
}

/*
 * Answers a protocol error and closes once it is written (lingering: the
 * write side is shut and unread input drained, so the peer reads the answer
 * instead of a reset).  The caller kicks the connection afterwards.
 */
static void conn_fail(struct http_conn *c, int status, const char *reason, int linger)
{
	char st[8];
	int respond = c->resp == RESP_NONE;

	snprintf(st, sizeof(st), "%d", status);
	log_info("http request rejected", "status", st, "reason", reason, "peer", c->peer, NULL);
	timer_disarm(c);
	c->keep_alive = 0;
	c->read_paused = 0;
	c->close_after = 1;
	c->linger = linger;
	c->req_complete = 1;
	c->state = CS_RESPONDING;
	if (respond)
		http_conn_respond_error(c, status, NULL, reason);
	else
		c->resp = RESP_DONE; /* a response was under way: just close */
}

static void timer_cb(struct loop *loop, struct loop_timer *t)
{
	struct http_conn *c = t->data;
	int kind = c->timer_kind;

	c->timer_kind = TK_NONE;
	switch (kind) {
	case TK_IDLE:
		conn_close(c);
		return;
	case TK_HEADER:
		if (http_parser_in_message(&c->parser))
			conn_fail(c, 408, "request header timeout", 1);
		else
			conn_close(c);
		break;
	case TK_BODY:
		if (c->resp == RESP_NONE)
			conn_fail(c, 408, "request body timeout", 1);
		else
			conn_close(c);
		break;
	case TK_LINGER:
	default:
		conn_close(c);
		return;
	}
	conn_kick(c);
}

static int p_on_headers(struct http_parser *p, struct http_msg *msg, void *data)
{
	struct http_conn *c = data;
	struct http_server *s = c->srv;

	c->state = CS_BODY;
	c->keep_alive = msg->keep_alive && !s->shutting_down;
	c->body_mode = BODY_BUFFER;
	c->body.cap = s->cfg.max_body_bytes;
	timer_arm(c, TK_BODY, s->cfg.idle_timeout_ms);
	if (s->h.on_headers)
		s->h.on_headers(c, msg, s->h.data);
	if (c->closed)
		return 400;
	if (c->body_mode == BODY_BUFFER && c->resp == RESP_NONE)
		http_parser_set_body_limit(p, c->body.cap);
	if (c->resp == RESP_NONE && !msg->no_body && msg->version == 11 &&
	    http_msg_header_has_token(msg, "expect", "100-continue") &&
	    !(msg->has_content_length && c->body_mode == BODY_BUFFER &&
	      msg->content_length > c->body.cap))
		conn_send(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	return c->closed ? 400 : 0;
}

static int p_on_body(struct http_parser *p, const char *at, size_t len, void *data)
{
	struct http_conn *c = data;
	struct http_server *s = c->srv;
	int rc;

	switch (c->body_mode) {
	case BODY_BUFFER:
		if (buf_append(&c->body, at, len) != 0)
			return 413;
		return 0;
	case BODY_STREAM:
		if (!s->h.on_body)
			return 0;
		rc = s->h.on_body(c, at, len, s->h.data);
		if (c->closed)
			return 400;
		if (rc == 1) {
			c->read_paused = 1;
			return HTTP_PARSER_PAUSE;
		}
		return 0;
	default:
		return 0;
	}
}

static const struct http_parser_cbs conn_parser_cbs = {
    .on_headers = p_on_headers,
    .on_body = p_on_body,
};

/* Request and response are both complete: next request or close. */
static void finish_request(struct http_conn *c)
{
	struct http_server *s = c->srv;

	if (!c->keep_alive || s->shutting_down) {
		c->close_after = 1;
		return;
	}
	http_parser_next(&c->parser);
	if (c->body.size > 64 * 1024)
		buf_release(&c->body);
	else
		buf_reset(&c->body);
	c->state = CS_HEADERS;
	c->resp = RESP_NONE;
	c->resp_chunked = c->resp_sse = c->resp_head = c->resp_nobody = 0;
	c->resp_left = -1;
	c->req_complete = 0;
	c->body_mode = BODY_BUFFER;
	c->nreq++;
	/* keep idle keep-alive connections small (10k idle < 128 MiB, SPEC 10) */
	if (buf_used(&c->in) == 0)
		buf_release(&c->in);
	if (buf_used(&c->out) == 0)
		buf_release(&c->out);
	if (c->parser.hbuf.size > 4096)
		http_parser_shrink(&c->parser);
	if (buf_used(&c->in) > 0)
		timer_arm(c, TK_HEADER, s->cfg.header_timeout_ms);
	else
		timer_arm(c, TK_IDLE, s->cfg.idle_timeout_ms);
}

static void request_complete(struct http_conn *c)
{
	struct http_server *s = c->srv;
	const struct http_msg *req = http_parser_msg(&c->parser);

	c->req_complete = 1;
	c->state = CS_RESPONDING;
	timer_disarm(c);
	if (c->resp == RESP_NONE)
		s->h.on_request(
		    c, req, str_make(c->body.data ? buf_head(&c->body) : "", buf_used(&c->body)),
		    s->h.data);
}

/* Reads and drops input while lingering; closes at EOF. */
static void linger_read(struct http_conn *c)
{
	char junk[4096];

	for (;;) {
		ssize_t n = transport_read(&c->t, junk, sizeof(junk));

		if (n > 0)
			continue;
		if (n == -1 && errno == EAGAIN) {
			c->rd_wants_write = c->t.want == EPOLLOUT;
			return;
		}
		conn_close(c);
		return;
	}
}

/*
 * Reads once into the input buffer (sock_read()'s returns: the count, 0 at
 * EOF, -EAGAIN, -ENOBUFS when full, -ENOMEM, -errno).  Notes EAGAIN, and
 * which event the transport waits on for the next read.
 */
static ssize_t conn_read(struct http_conn *c)
{
	size_t space = c->in.cap - buf_used(&c->in);
	char *dst;
	ssize_t n;

	if (space == 0)
		return -ENOBUFS;
	if (space > READ_CHUNK)
		space = READ_CHUNK;
	dst = buf_reserve(&c->in, space);
	if (!dst)
		return -ENOMEM;
	n = transport_read(&c->t, dst, space);
	if (n > 0)
		buf_commit(&c->in, (size_t)n);
	if (n >= 0)
		return n;
	if (errno == EAGAIN) {
		c->can_read = 0;
		c->rd_wants_write = c->t.want == EPOLLOUT;
		return -EAGAIN;
	}
	return errno ? -errno : -EIO;
}

/* One pass of parsing.  Returns 1 if progress was made. */
static int conn_parse(struct http_conn *c)
{
	size_t used = 0;
	int was_started = http_parser_in_message(&c->parser);
	int rc = http_parser_feed(&c->parser, c->in.data ? buf_head(&c->in) : "", buf_used(&c->in),
	                          &used);

	buf_consume(&c->in, used);
	if (c->closed)
		return 0;
	if (!was_started && c->state == CS_HEADERS && http_parser_in_message(&c->parser) &&
	    c->timer_kind == TK_IDLE)
		timer_arm(c, TK_HEADER, c->srv->cfg.header_timeout_ms);
	switch (rc) {
	case HTTP_PARSE_ERROR:
		conn_fail(c, http_parser_status(&c->parser), http_parser_reason(&c->parser), 1);
		return 1;
	case HTTP_PARSE_DONE:
		request_complete(c);
		return 1;
	case HTTP_PARSE_PAUSED:
		return used > 0;
	default:
		return 0;
	}
}

static void conn_drive(struct http_conn *c)
{
	struct http_server *s = c->srv;

	for (;;) {
		ssize_t n;

		c->rerun = 0;
		if (c->closed)
			return;
		if (t_flush(c) != 0) {
			conn_close(c);
			return;
		}
		if (c->state == CS_LINGER) {
			linger_read(c);
			return;
		}
		if (c->close_after) {
			if (buf_used(&c->out) > 0)
				return;
			if (c->linger) {
				c->t.ops->shutdown(&c->t); /* TLS: close_notify first */
				shutdown(c->fd, SHUT_WR);
				c->state = CS_LINGER;
				timer_arm(c, TK_LINGER, LINGER_MS);
				continue;
			}
			conn_close(c);
			return;
		}
		if (c->state == CS_RESPONDING) {
			if (c->resp == RESP_DONE) {
				finish_request(c);
				continue;
			}
			/* watch for the peer going away (SSE subscribers) */
			if (c->can_read) {
				n = conn_read(c);
				if (n > 0)
					continue;
				if (n == 0 || (n != -EAGAIN && n != -ENOBUFS)) {
					if (c->resp_sse || n != 0) {
						conn_close(c);
						return;
					}
					c->keep_alive = 0;
					c->can_read = 0;
				}
			}
			if (c->rerun)
				continue;
			return;
		}
		/* CS_HEADERS / CS_BODY */
		if (c->read_paused || buf_used(&c->out) > s->cfg.output_high_water)
			return;
		if (conn_parse(c) || c->rerun)
			continue;
		if (!c->can_read)
			return;
		n = conn_read(c);
		if (n > 0 && c->state == CS_BODY && c->timer_kind == TK_BODY)
			timer_arm(c, TK_BODY, s->cfg.idle_timeout_ms);
		if (n > 0)
			continue;
		if (n == -EAGAIN ||
		    n == -ENOBUFS) /* drained, or full until the parser makes room */
			return;
		/* EOF or error */
		if (n == 0 && c->state == CS_HEADERS && !http_parser_in_message(&c->parser)) {
			conn_close(c);
			return;
		}
		if (n == 0 && c->state == CS_HEADERS) {
			conn_fail(c, 400, "connection closed inside the header section", 0);
			continue;
		}
		conn_close(c);
		return;
	}
}

static void conn_kick(struct http_conn *c)
{
	if (c->running) {
		c->rerun = 1;
		return;
	}
	c->running = 1;
	do {
		conn_drive(c);
	} while (c->rerun && !c->closed);
	c->running = 0;
}

/*
 * Drives the transport's handshake (TLS; plain is done at once).  Returns 1
 * once it is over, 0 while it waits for the socket, -1 after closing c.  A
 * handshake that never completes ends with the header timeout.
 */
static int conn_handshake(struct http_conn *c)
{
	if (c->hs_done)
		return 1;
	if (c->t.ops->handshake(&c->t) == -1) {
		if (errno == EAGAIN)
			return 0;
		log_debug("tls handshake failed", "peer", c->peer, NULL);
		conn_close(c);
		return -1;
	}
	c->hs_done = 1;
	c->can_read = 1; /* the first request may have come with the handshake */
	return 1;
}

static void conn_io(struct loop *loop, struct loop_io *io, uint32_t events)
{
	struct http_conn *c = io->data;

	if (conn_handshake(c) <= 0)
		return;
	if ((events & (LOOP_READ | LOOP_ERROR)) || (c->rd_wants_write && (events & LOOP_WRITE)))
		c->can_read = 1;
	conn_kick(c);
}

static void maybe_done(struct http_server *s)
{
	if (s->shutting_down && s->nconns == 0 && s->done) {
		void (*done)(struct http_server *, void *) = s->done;

		s->done = NULL;
		done(s, s->done_data);
	}
}

static void conn_free(struct http_conn *c)
{
	struct http_server *s = c->srv;

	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nconns--;
	if (s->h.on_close)
		s->h.on_close(c, s->h.data);
	http_parser_release(&c->parser);
	buf_release(&c->in);
	buf_release(&c->out);
	buf_release(&c->body);
	free(c);
	maybe_done(s);
}

static void conn_free_cb(struct loop *loop, struct loop_defer *d)
{
	conn_free(d->data);
}

/* Unregisters and closes the socket; the memory stays until conn_free(). */
static void conn_detach(struct http_conn *c)
{
	c->closed = 1;
	loop_io_del(c->srv->loop, &c->io);
	loop_timer_stop(c->srv->loop, &c->timer);
	transport_release(&c->t, c->hs_done); /* TLS: close_notify when it got that far */
	close(c->fd);
	c->fd = -1;
}

static void conn_close(struct http_conn *c)
{
	if (c->closed)
		return;
	conn_detach(c);
	loop_defer(c->srv->loop, &c->defer, conn_free_cb, c);
}

void http_conn_close(struct http_conn *c)
{
	conn_close(c);
}

static void conn_new(struct http_server *s, int fd, const struct sockaddr_storage *ss)
{
	struct http_conn *c = calloc(1, sizeof(*c));
	struct http_limits lim = {s->cfg.max_header_bytes, s->cfg.max_headers};

	if (!c) {
		close(fd);
		return;
	}
	c->srv = s;
	c->fd = fd;
	c->resp_left = -1;
	sock_nodelay(fd);
	sock_addr_ip((const struct sockaddr *)ss, c->peer, sizeof(c->peer));
	http_parser_init(&c->parser, HTTP_PARSE_REQUEST, &lim, &conn_parser_cbs, c);
	buf_init(&c->in, IN_CAP);
	buf_init(&c->out, s->cfg.max_output_bytes);
	buf_init(&c->body, s->cfg.max_body_bytes);
	loop_timer_init(&c->timer, timer_cb, c);
	if (s->tls ? tls_server_accept(s->tls, fd, &c->t) != 0
	           : (transport_plain_init(&c->t, fd), 0)) {
		http_parser_release(&c->parser);
		close(fd);
		free(c);
		return;
	}
	if (loop_io_add(s->loop, &c->io, fd, conn_io, c) != 0) {
		transport_release(&c->t, 0);
		http_parser_release(&c->parser);
		close(fd);
		free(c);
		return;
	}
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	timer_arm(c, TK_HEADER, s->cfg.header_timeout_ms);
	c->can_read = 1;
	if (conn_handshake(c) > 0)
		conn_kick(c);
}

static void accept_cb(struct loop *loop, struct loop_io *io, uint32_t events)
{
	struct listener *l = io->data;
	struct http_server *s = l->srv;

	for (;;) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd == -1) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				log_warn("accept failed, retrying", "error", strerror(errno), NULL);
				loop_timer_start(loop, &s->accept_retry, ACCEPT_RETRY_MS);
			}
			return;
		}
		if (s->shutting_down || (s->cfg.max_conns && s->nconns >= s->cfg.max_conns)) {
			close(fd);
			continue;
		}
		conn_new(s, fd, &ss);
	}
}

static void accept_retry_cb(struct loop *loop, struct loop_timer *t)
{
	struct http_server *s = t->data;
	size_t i;

	for (i = 0; i < s->nls; i++)
		accept_cb(loop, &s->ls[i].io, LOOP_READ);
}

struct http_server *http_server_new(struct loop *loop, const struct http_server_config *cfg,
                                    const struct http_handler *h)
{
	struct http_server *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->loop = loop;
	if (cfg)
		s->cfg = *cfg;
	if (!s->cfg.max_header_bytes)
		s->cfg.max_header_bytes = HTTP_DEFAULT_MAX_HEADER_BYTES;
	if (!s->cfg.max_headers)
		s->cfg.max_headers = HTTP_DEFAULT_MAX_HEADERS;
	if (!s->cfg.header_timeout_ms)
		s->cfg.header_timeout_ms = 10000;
	if (!s->cfg.idle_timeout_ms)
		s->cfg.idle_timeout_ms = 60000;
	if (!s->cfg.max_body_bytes)
		s->cfg.max_body_bytes = 1u << 20;
	if (!s->cfg.max_output_bytes)
		s->cfg.max_output_bytes = 8u << 20;
	if (!s->cfg.output_high_water)
		s->cfg.output_high_water = 256u << 10;
	if (!s->cfg.sse_backlog_bytes)
		s->cfg.sse_backlog_bytes = 1u << 20;
	s->h = *h;
	loop_timer_init(&s->accept_retry, accept_retry_cb, s);
	return s;
}

int http_server_add_listener(struct http_server *s, int fd)
{
	struct listener *l;
	int rc;

	if (s->nls == MAX_LISTENERS || s->shutting_down)
		return -ENOSPC;
	l = &s->ls[s->nls];
	l->srv = s;
	l->fd = fd;
	rc = loop_io_add(s->loop, &l->io, fd, accept_cb, l);
	if (rc != 0)
		return rc;
	s->nls++;
	accept_cb(s->loop, &l->io, LOOP_READ);
	return 0;
}

size_t http_server_conn_count(const struct http_server *s)
{
	return s->nconns;
}

void http_conn_buffer_body(struct http_conn *c, size_t cap)
{
	c->body_mode = BODY_BUFFER;
	c->body.cap = cap;
}

void http_conn_stream_body(struct http_conn *c)
{
	c->body_mode = BODY_STREAM;
}

void http_conn_resume_read(struct http_conn *c)
{
	if (c->closed || !c->read_paused)
		return;
	c->read_paused = 0;
	http_parser_resume(&c->parser);
	conn_kick(c);
}

const struct http_msg *http_conn_request(struct http_conn *c)
{
	if (c->state == CS_BODY || c->state == CS_RESPONDING)
		return http_parser_msg(&c->parser);
	return NULL;
}

void http_conn_set_udata(struct http_conn *c, void *udata)
{
	c->udata = udata;
}

void *http_conn_udata(const struct http_conn *c)
{
	return c->udata;
}

struct str http_conn_peer(const struct http_conn *c)
{
	return str_c(c->peer);
}

int http_conn_closed(const struct http_conn *c)
{
	return c->closed;
}

static void close_listeners(struct http_server *s)
{
	size_t i;

	for (i = 0; i < s->nls; i++) {
		loop_io_del(s->loop, &s->ls[i].io);
		close(s->ls[i].fd);
	}
	s->nls = 0;
	loop_timer_stop(s->loop, &s->accept_retry);
}

static void done_defer_cb(struct loop *loop, struct loop_defer *d)
{
	maybe_done(d->data);
}

void http_server_shutdown(struct http_server *s, void (*done)(struct http_server *s, void *data),
                          void *data)
{
	struct http_conn *c, *next;

	s->shutting_down = 1;
	s->done = done;
	s->done_data = data;
	close_listeners(s);
	for (c = s->conns; c; c = next) {
		next = c->next;
		if (c->closed)
			continue;
		c->keep_alive = 0;
		if (c->state == CS_HEADERS && !http_parser_in_message(&c->parser)) {
			conn_close(c);
		} else if (c->resp_sse && c->resp == RESP_STARTED) {
			http_conn_end(c);
		}
	}
	if (s->nconns == 0)
		loop_defer(s->loop, &s->done_defer, done_defer_cb, s);
}

void http_server_free(struct http_server *s)
{
	struct http_conn *c;

	if (!s)
		return;
	close_listeners(s);
	while ((c = s->conns) != NULL) {
		if (!c->closed)
			conn_detach(c);
		s->shutting_down = 0; /* no done callback from here */
		conn_free(c);
	}
	tls_server_unref(s->tls);
	free(s);
}

void http_server_set_tls(struct http_server *s, struct tls_server *tls)
{
	struct tls_server *old = s->tls;

	s->tls = tls_server_ref(tls);
	tls_server_unref(old);
}
