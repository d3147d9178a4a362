/* Unit tests for src/http/server.c: a real server on 127.0.0.1 with real
 * sockets, driven by loop_run_once() in this thread.  Every wait is bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/loop.h"
#include "http/server.h"

#define WAIT_MS 3000

struct env {
	struct loop *loop;
	struct http_server *srv;
	int port;
	struct http_conn *later; /* a request answered by the test */
	struct http_conn *sse;
	int closes;
	size_t streamed;
	int done;
};

static struct env E;

static int path_is(const struct http_msg *req, const char *p)
{
	return str_eq_c(req->path, p);
}

static void h_headers(struct http_conn *c, const struct http_msg *req, void *data)
{
	if (path_is(req, "/small"))
		http_conn_buffer_body(c, 10);
	else if (path_is(req, "/stream"))
		http_conn_stream_body(c);
	else if (path_is(req, "/early"))
		http_conn_respond(c, 403, NULL, 0, "no", 2);
}

static int h_body(struct http_conn *c, const char *p, size_t len, void *data)
{
	E.streamed += len;
	return 0;
}

static void h_request(struct http_conn *c, const struct http_msg *req, struct str body, void *data)
{
	static const struct http_header ct[] = {{STR_LIT("Content-Type"), STR_LIT("text/plain")}};
	char out[256];
	int n;

	if (path_is(req, "/later")) {
		E.later = c;
	} else if (path_is(req, "/echo") || path_is(req, "/small")) {
		http_conn_respond(c, 200, ct, 1, body.p, body.len);
	} else if (path_is(req, "/stream")) {
		n = snprintf(out, sizeof(out), "got %zu", E.streamed);
		http_conn_respond(c, 200, ct, 1, out, (size_t)n);
	} else if (path_is(req, "/chunked")) {
		assert_int_equal(http_conn_start_chunked(c, 200, ct, 1), 0);
		assert_int_equal(http_conn_write_chunk(c, "abc", 3), 0);
		assert_int_equal(http_conn_write_chunk(c, "defg", 4), 0);
		assert_int_equal(http_conn_end(c), 0);
	} else if (path_is(req, "/sse")) {
		assert_int_equal(http_conn_start_sse(c, NULL, 0), 0);
		assert_int_equal(
		    http_conn_sse_send(c, STR_LIT("1"), STR_LIT("flag"), STR_LIT("line1\nline2")),
		    0);
		E.sse = c;
	} else if (path_is(req, "/early")) {
		/* already answered in on_headers */
	} else {
		n = snprintf(out, sizeof(out), "hello %.*s?%.*s", (int)req->path.len, req->path.p,
		             (int)req->query.len, req->query.p);
		http_conn_respond(c, 200, ct, 1, out, (size_t)n);
	}
}

static void h_close(struct http_conn *c, void *data)
{
	E.closes++;
	if (c == E.later)
		E.later = NULL;
	if (c == E.sse)
		E.sse = NULL;
}

static void start(const struct http_server_config *cfg)
{
	struct http_handler h = {.on_headers = h_headers,
	                         .on_body = h_body,
	                         .on_request = h_request,
	                         .on_close = h_close};
	int fd;

	memset(&E, 0, sizeof(E));
	E.loop = loop_new();
	assert_non_null(E.loop);
	E.srv = http_server_new(E.loop, cfg, &h);
	assert_non_null(E.srv);
	fd = http_listen("127.0.0.1:0", 0);
	assert_true(fd >= 0);
	E.port = http_local_port(fd);
	assert_true(E.port > 0);
	assert_int_equal(http_server_add_listener(E.srv, fd), 0);
}

static void stop(void)
{
	http_server_free(E.srv);
	loop_run_once(E.loop, 0);
	loop_free(E.loop);
}

static int connect_client(void)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)E.port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	return fd;
}

static void send_all(int fd, const char *s, size_t len)
{
	uint64_t end = clock_mono_ms() + WAIT_MS;

	while (len > 0) {
		ssize_t w = send(fd, s, len, MSG_NOSIGNAL);

		if (w > 0) {
			s += w;
			len -= (size_t)w;
			continue;
		}
		assert_true(w == -1 && errno == EAGAIN);
		assert_true(clock_mono_ms() < end);
		loop_run_once(E.loop, 5);
	}
}

static void send_str(int fd, const char *s)
{
	send_all(fd, s, strlen(s));
}

/* Client side: raw bytes read so far and whether the server closed. */
struct rx {
	struct buf raw;
	int eof;
};

static void rx_pump(int fd, struct rx *rx, int ms)
{
	char tmp[65536];
	ssize_t n;

	loop_run_once(E.loop, ms);
	while ((n = read(fd, tmp, sizeof(tmp))) > 0)
		assert_int_equal(buf_append(&rx->raw, tmp, (size_t)n), 0);
	if (n == 0 || (n == -1 && errno == ECONNRESET))
		rx->eof = 1;
}

struct resp {
	size_t n;
	int status[8];
	char body[8][512];
	int keep_alive[8];
};

static void visit(void *ud, const struct http_msg *m, const char *body, size_t len)
{
	struct resp *r = ud;

	if (r->n < 8) {
		r->status[r->n] = m->status;
		snprintf(r->body[r->n], sizeof(r->body[0]), "%.*s", (int)len, body);
		r->keep_alive[r->n] = m->keep_alive;
	}
	r->n++;
}

/* Pumps until n complete responses arrived; returns them. */
static struct resp wait_responses(int fd, struct rx *rx, size_t n)
{
	uint64_t end = clock_mono_ms() + WAIT_MS;
	struct resp r;

	for (;;) {
		memset(&r, 0, sizeof(r));
		http_parse_buffer(HTTP_PARSE_RESPONSE, NULL, rx->raw.data ? buf_head(&rx->raw) : "",
		                  buf_used(&rx->raw), 0, 0, visit, &r, NULL);
		if (r.n >= n)
			return r;
		if (clock_mono_ms() > end)
			fail_msg("timed out waiting for %zu responses (got %zu)", n, r.n);
		rx_pump(fd, rx, 5);
	}
}

static void wait_eof(int fd, struct rx *rx)
{
	uint64_t end = clock_mono_ms() + WAIT_MS;

	while (!rx->eof) {
		if (clock_mono_ms() > end)
			fail_msg("timed out waiting for EOF");
		rx_pump(fd, rx, 5);
	}
}

static int raw_has(struct rx *rx, const char *s)
{
	return memmem(rx->raw.data ? buf_head(&rx->raw) : "", buf_used(&rx->raw), s, strlen(s)) !=
	       NULL;
}

/* Connects a test client; its received bytes go to rx. */
static int open_rx(struct rx *rx)
{
	buf_init(&rx->raw, 16 << 20);
	rx->eof = 0;
	return connect_client();
}

static void close_rx(int fd, struct rx *rx)
{
	close(fd);
	buf_release(&rx->raw);
}

/*
 * Sends len bytes of req on a new connection and expects exactly one JSON
 * error answer with status and code, Connection: close, then the close.
 */
static void expect_rejected(const char *req, size_t len, int status, const char *code)
{
	char want[128];
	struct rx rx;
	struct resp r;
	int fd = open_rx(&rx);

	send_all(fd, req, len);
	r = wait_responses(fd, &rx, 1);
	assert_int_equal(r.status[0], status);
	assert_true(raw_has(&rx, "Content-Type: application/json\r\n"));
	assert_true(raw_has(&rx, "Connection: close\r\n"));
	snprintf(want, sizeof(want), "{\"error\":{\"code\":\"%s\",\"message\":\"", code);
	assert_true(raw_has(&rx, want));
	wait_eof(fd, &rx);
	assert_int_equal(wait_responses(fd, &rx, 1).n, 1);
	close_rx(fd, &rx);
}

/* --- tests ------------------------------------------------------------ */

static void t_simple(void **st)
{
	struct rx rx;
	struct resp r;
	int fd;

	start(NULL);
	fd = open_rx(&rx);
	send_str(fd, "GET /hi?x=1 HTTP/1.1\r\nHost: t\r\n\r\n");
	r = wait_responses(fd, &rx, 1);
	assert_int_equal(r.status[0], 200);
	assert_string_equal(r.body[0], "hello /hi?x=1");
	assert_int_equal(r.keep_alive[0], 1);
	assert_true(raw_has(&rx, "Content-Length: 13\r\n"));
	assert_int_equal(http_server_conn_count(E.srv), 1);
	close_rx(fd, &rx);
	stop();
}

static void t_pipelined_in_order(void **st)
{
	struct rx rx;
	struct resp r;
	int fd, i;

	start(NULL);
	fd = open_rx(&rx);
	send_str(fd, "GET /later HTTP/1.1\r\nHost: t\r\n\r\n"
	             "GET /b HTTP/1.1\r\nHost: t\r\n\r\n"
	             "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyz");
	for (i = 0; i < 20; i++)
		rx_pump(fd, &rx, 5);
	assert_non_null(E.later);
	assert_int_equal(buf_used(&rx.raw), 0); /* nothing answered before /later */
	assert_int_equal(http_conn_respond(E.later, 200, NULL, 0, "first", 5), 0);
	r = wait_responses(fd, &rx, 3);
	assert_string_equal(r.body[0], "first");
	assert_string_equal(r.body[1], "hello /b?");
	assert_string_equal(r.body[2], "xyz");
	close_rx(fd, &rx);
	stop();
}

static void t_keep_alive(void **st)
{
	struct rx rx;
	struct resp r;
	int fd;

	start(NULL);
	fd = open_rx(&rx);
	send_str(fd, "GET /1 HTTP/1.1\r\nHost: t\r\n\r\n");
	r = wait_responses(fd, &rx, 1);
	send_str(fd, "GET /2 HTTP/1.1\r\nHost: t\r\n\r\n");
	r = wait_responses(fd, &rx, 2);
	assert_string_equal(r.body[1], "hello /2?");
	assert_int_equal(http_server_conn_count(E.srv), 1);
	/* Connection: close ends it after the response */
	send_str(fd, "GET /3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	r = wait_responses(fd, &rx, 3);
	assert_int_equal(r.keep_alive[2], 0);
	assert_true(raw_has(&rx, "Connection: close\r\n"));
	wait_eof(fd, &rx);
	close_rx(fd, &rx);

	/* HTTP/1.0 without keep-alive closes; with it stays */
	fd = open_rx(&rx);
	send_str(fd, "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	r = wait_responses(fd, &rx, 1);
	assert_true(raw_has(&rx, "Connection: keep-alive\r\n"));
	send_str(fd, "GET /b HTTP/1.0\r\n\r\n");
	r = wait_responses(fd, &rx, 2);
	assert_string_equal(r.body[1], "hello /b?");
	wait_eof(fd, &rx);
	close_rx(fd, &rx);
	stop();
}

static void t_header_timeout_408(void **st)
{
	struct http_server_config cfg = {.header_timeout_ms = 200};
	struct rx rx;
	struct resp r;
	uint64_t t0;
	int fd;

	start(&cfg);
	fd = open_rx(&rx);
	t0 = clock_mono_ms();
	send_str(fd, "GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ");
	r = wait_responses(fd, &rx, 1);
	assert_int_equal(r.status[0], 408);
	assert_true(clock_mono_ms() - t0 >= 150);
	assert_true(raw_has(&rx, "\"code\":\"request_timeout\""));
	assert_true(raw_has(&rx, "Connection: close\r\n"));
	wait_eof(fd, &rx);
	close_rx(fd, &rx);
	stop();
}

static void t_idle_timeout(void **st)
{
	struct http_server_config cfg = {.idle_timeout_ms = 200};
	struct rx rx;
	int fd;

	start(&cfg);
	fd = open_rx(&rx);
	send_str(fd, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
	wait_responses(fd, &rx, 1);
	wait_eof(fd, &rx); /* closed quietly, no 408 */
	assert_false(raw_has(&rx, "408"));
	assert_int_equal(wait_responses(fd, &rx, 1).n, 1);
	assert_int_equal(E.closes, 1);
	assert_int_equal(http_server_conn_count(E.srv), 0);
	close_rx(fd, &rx);
	stop();
}

static void t_oversized_header_431(void **st)
{
	size_t big = 40 * 1024;
	char *req = malloc(big + 64);
	int n;

	start(NULL);
	n = snprintf(req, 64, "GET / HTTP/1.1\r\nHost: t\r\nX: ");
	memset(req + n, 'a', big);
	memcpy(req + n + big, "\r\n\r\n", 4);
	expect_rejected(req, (size_t)n + big + 4, 431, "header_too_large");
	free(req);
	stop();
}

static void t_malformed_400(void **st)
{
	const char *bad[] = {
	    "GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n",
	    "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
	    "GET / HTTP/1.1\nHost: a\r\n\r\n",
	};
	size_t i;

	start(NULL);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_rejected(bad[i], strlen(bad[i]), 400, "bad_request");
	stop();
}

static void t_version_505(void **st)
{
	const char *req = "GET / HTTP/2.0\r\nHost: t\r\n\r\n";

	start(NULL);
	expect_rejected(req, strlen(req), 505, "version_not_supported");
	stop();
}

static int body_collect(struct http_parser *p, const char *at, size_t len, void *data)
{
	return buf_append(data, at, len) == 0 ? 0 : 500;
}

/* Decodes a (possibly unfinished) response stream's body with our parser. */
static void decode_body(struct rx *rx, struct buf *body)
{
	static const struct http_parser_cbs cbs = {.on_body = body_collect};
	struct http_parser p;
	size_t used;
	int rc;

	http_parser_init(&p, HTTP_PARSE_RESPONSE, NULL, &cbs, body);
	rc = http_parser_feed(&p, buf_head(&rx->raw), buf_used(&rx->raw), &used);
	assert_true(rc == HTTP_PARSE_AGAIN || rc == HTTP_PARSE_DONE);
	http_parser_release(&p);
}

static void t_chunked_response(void **st)
{
	struct rx rx;
	struct resp r;
	int fd;

	start(NULL);
	fd = open_rx(&rx);
	send_str(fd,
	         "GET /chunked HTTP/1.1\r\nHost: t\r\n\r\nGET /after HTTP/1.1\r\nHost: t\r\n\r\n");
	r = wait_responses(fd, &rx, 2);
	assert_int_equal(r.status[0], 200);
	assert_string_equal(r.body[0], "abcdefg");
	assert_string_equal(r.body[1], "hello /after?");
	assert_true(raw_has(&rx,
	                    "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
	                    "HTTP/1.1 200 OK\r\n"));
	close_rx(fd, &rx);

	/* an HTTP/1.0 peer gets a close-delimited body */
	fd = open_rx(&rx);
	send_str(fd, "GET /chunked HTTP/1.0\r\n\r\n");
	wait_eof(fd, &rx);
	assert_false(raw_has(&rx, "chunked"));
	assert_true(raw_has(&rx, "\r\n\r\nabcdefg"));
	close_rx(fd, &rx);
	stop();
}

static void t_sse(void **st)
{
	const char *expect = "id: 1\nevent: flag\ndata: line1\ndata: line2\n\n"
	                     ": hb\n\n"
	                     "id: 2\ndata: {\"k\":1}\n\n";
	uint64_t end = clock_mono_ms() + WAIT_MS;
	struct buf body;
	struct rx rx;
	int fd;

	start(NULL);
	fd = open_rx(&rx);
	send_str(fd, "GET /sse HTTP/1.1\r\nHost: t\r\n\r\n");
	while (!E.sse && clock_mono_ms() < end)
		rx_pump(fd, &rx, 5);
	assert_non_null(E.sse);
	assert_int_equal(http_conn_sse_comment(E.sse, STR_LIT("hb")), 0);
	assert_int_equal(http_conn_sse_send(E.sse, STR_LIT("2"), STR_NULL, STR_LIT("{\"k\":1}")),
	                 0);
	assert_int_equal(http_conn_sse_send(E.sse, STR_LIT("bad\nid"), STR_NULL, STR_LIT("x")),
	                 -EINVAL);
	buf_init(&body, 1 << 20);
	for (;;) {
		rx_pump(fd, &rx, 5);
		buf_reset(&body);
		decode_body(&rx, &body);
		if (buf_used(&body) >= strlen(expect) || clock_mono_ms() > end)
			break;
	}
	assert_true(raw_has(&rx, "HTTP/1.1 200 OK\r\n"));
	assert_true(raw_has(&rx, "Content-Type: text/event-stream\r\n"));
	assert_true(raw_has(&rx, "Cache-Control: no-cache\r\n"));
	assert_int_equal(buf_used(&body), strlen(expect));
	assert_memory_equal(buf_head(&body), expect, strlen(expect));
	/* the subscriber leaves: the server notices and tells the handler */
	close(fd);
	end = clock_mono_ms() + WAIT_MS;
	while (E.sse && clock_mono_ms() < end)
		loop_run_once(E.loop, 5);
	assert_null(E.sse);
	assert_int_equal(E.closes, 1);
	buf_release(&body);
	buf_release(&rx.raw);
	stop();
}

static void t_sse_slow_subscriber(void **st)
{
	struct http_server_config cfg = {.sse_backlog_bytes = 64 * 1024};
	uint64_t end = clock_mono_ms() + WAIT_MS;
	char data[1024];
	int fd, i, rc = 0, rcvbuf = 4096;

	start(&cfg);
	fd = connect_client();
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	send_str(fd, "GET /sse HTTP/1.1\r\nHost: t\r\n\r\n");
	while (!E.sse && clock_mono_ms() < end)
		loop_run_once(E.loop, 5);
	assert_non_null(E.sse);
	memset(data, 'x', sizeof(data));
	/* never read: the backlog grows until the server drops the subscriber */
	for (i = 0; i < 100000 && rc == 0; i++) {
		rc = http_conn_sse_send(E.sse, STR_NULL, STR_NULL, str_make(data, sizeof(data)));
		if (i % 64 == 0)
			loop_run_once(E.loop, 0);
	}
	assert_int_equal(rc, -ENOBUFS);
	loop_run_once(E.loop, 0);
	assert_null(E.sse);
	assert_int_equal(E.closes, 1);
	close(fd);
	stop();
}

static void t_body_cap_413(void **st)
{
	const char *cl = "POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\n"
	                 "01234567890123456789";
	const char *ch = "POST /small HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
	                 "8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n";
	struct rx rx;
	struct resp r;
	int fd;

	start(NULL);
	expect_rejected(cl, strlen(cl), 413, "payload_too_large");
	expect_rejected(ch, strlen(ch), 413, "payload_too_large");

	/* within the cap it is echoed */
	fd = open_rx(&rx);
	send_str(fd, "POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789");
	r = wait_responses(fd, &rx, 1);
	assert_int_equal(r.status[0], 200);
	assert_string_equal(r.body[0], "0123456789");
	/* the small cap was for that request only */
	send_str(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\n"
	             "01234567890123456789");
	r = wait_responses(fd, &rx, 2);
	assert_int_equal(r.status[1], 200);
	assert_string_equal(r.body[1], "01234567890123456789");
	close_rx(fd, &rx);
	stop();
}

static void t_echo_continue_head(void **st)
{
	struct rx rx;
	struct resp r;
	int fd;

	start(NULL);
	fd = open_rx(&rx);
	send_str(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
	             "Expect: 100-continue\r\n\r\n");
	r = wait_responses(fd, &rx, 1);
	assert_int_equal(r.status[0], 100);
	send_str(fd, "hello");
	r = wait_responses(fd, &rx, 2);
	assert_int_equal(r.status[1], 200);
	assert_string_equal(r.body[1], "hello");
	close_rx(fd, &rx);

	/* HEAD: Content-Length of the would-be body, no body bytes */
	fd = open_rx(&rx);
	send_str(fd, "HEAD /h HTTP/1.1\r\nHost: t\r\n\r\nGET /g HTTP/1.1\r\nHost: t\r\n\r\n");
	{
		uint64_t end = clock_mono_ms() + WAIT_MS;

		while (!raw_has(&rx, "hello /g?") && clock_mono_ms() < end)
			rx_pump(fd, &rx, 5);
	}
	assert_true(raw_has(&rx, "Content-Length: 9\r\n\r\nHTTP/1.1 200 OK\r\n"));
	assert_false(raw_has(&rx, "hello /h"));
	close_rx(fd, &rx);
	stop();
}

static void t_stream_body_and_early_response(void **st)
{
	struct rx rx;
	struct resp r;
	int fd;

	start(NULL);
	fd = open_rx(&rx);
	send_str(fd, "POST /stream HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
	             "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
	r = wait_responses(fd, &rx, 1);
	assert_string_equal(r.body[0], "got 11");
	/* answered in on_headers: the body is drained, the connection reused */
	send_str(fd, "POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd"
	             "GET /next HTTP/1.1\r\nHost: t\r\n\r\n");
	r = wait_responses(fd, &rx, 3);
	assert_int_equal(r.status[1], 403);
	assert_string_equal(r.body[1], "no");
	assert_int_equal(r.keep_alive[1], 1);
	assert_int_equal(r.status[2], 200);
	assert_string_equal(r.body[2], "hello /next?");
	assert_int_equal(http_server_conn_count(E.srv), 1);
	close_rx(fd, &rx);
	stop();
}

static void on_done(struct http_server *s, void *data)
{
	E.done = 1;
}

static void t_graceful_shutdown(void **st)
{
	uint64_t end = clock_mono_ms() + WAIT_MS;
	struct rx rx1, rx2;
	struct resp r;
	int idle, busy;

	start(NULL);
	idle = open_rx(&rx1);
	busy = open_rx(&rx2);
	send_str(busy, "GET /later HTTP/1.1\r\nHost: t\r\n\r\n");
	while ((!E.later || http_server_conn_count(E.srv) < 2) && clock_mono_ms() < end)
		loop_run_once(E.loop, 5);
	assert_non_null(E.later);
	http_server_shutdown(E.srv, on_done, NULL);
	wait_eof(idle, &rx1);
	assert_false(E.done);
	assert_int_equal(http_conn_respond(E.later, 200, NULL, 0, "bye", 3), 0);
	r = wait_responses(busy, &rx2, 1);
	assert_string_equal(r.body[0], "bye");
	assert_int_equal(r.keep_alive[0], 0);
	wait_eof(busy, &rx2);
	end = clock_mono_ms() + WAIT_MS;
	while (!E.done && clock_mono_ms() < end)
		loop_run_once(E.loop, 5);
	assert_true(E.done);
	assert_int_equal(http_server_conn_count(E.srv), 0);
	close_rx(idle, &rx1);
	close_rx(busy, &rx2);
	stop();
}

static void t_listen_addresses(void **st)
{
	int fd;

	assert_int_equal(http_listen("nonsense", 0), -EINVAL);
	assert_int_equal(http_listen("127.0.0.1:", 0), -EINVAL);
	assert_int_equal(http_listen(":", 0), -EINVAL);
	assert_int_equal(http_listen("[::1:80", 0), -EINVAL);
	assert_int_equal(http_listen(NULL, 0), -EINVAL);
	fd = http_listen("127.0.0.1:0", 1);
	assert_true(fd >= 0);
	assert_true(http_local_port(fd) > 0);
	close(fd);
	/* ":port" and "*:port" bind any address */
	fd = http_listen(":0", 0);
	assert_true(fd >= 0);
	assert_true(http_local_port(fd) > 0);
	close(fd);
	fd = http_listen("*:0", 0);
	assert_true(fd >= 0);
	assert_true(http_local_port(fd) > 0);
	close(fd);
	fd = http_listen("[::1]:0", 0);
	if (fd >= 0) { /* IPv6 may be disabled */
		assert_true(http_local_port(fd) > 0);
		close(fd);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_simple),
	    cmocka_unit_test(t_pipelined_in_order),
	    cmocka_unit_test(t_keep_alive),
	    cmocka_unit_test(t_header_timeout_408),
	    cmocka_unit_test(t_idle_timeout),
	    cmocka_unit_test(t_oversized_header_431),
	    cmocka_unit_test(t_malformed_400),
	    cmocka_unit_test(t_version_505),
	    cmocka_unit_test(t_chunked_response),
	    cmocka_unit_test(t_sse),
	    cmocka_unit_test(t_sse_slow_subscriber),
	    cmocka_unit_test(t_body_cap_413),
	    cmocka_unit_test(t_echo_continue_head),
	    cmocka_unit_test(t_stream_body_and_early_response),
	    cmocka_unit_test(t_graceful_shutdown),
	    cmocka_unit_test(t_listen_addresses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
