/* Unit tests for src/http/client.c against a real http server on 127.0.0.1
 * in the same loop.  Every wait is bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/loop.h"
#include "http/client.h"
#include "http/server.h"

#define WAIT_MS 3000

struct env {
	struct loop *loop;
	struct http_server *srv;
	int port;
	char addr[64];
	/* client side observations */
	int connected, responses, completes, closed, close_err;
	int reusable_at_complete; /* http_client_reusable() inside on_complete */
	int status;
	struct buf body;
	int server_requests;
	struct http_conn *held;
};

static struct env E;

static void s_request(struct http_conn *c, const struct http_msg *req, struct str body, void *d)
{
	static const struct http_header h[] = {{STR_LIT("X-Seen"), STR_LIT("1")}};
	char out[256];
	int n;

	E.server_requests++;
	if (str_eq_c(req->path, "/hold")) {
		E.held = c;
		return;
	}
	if (str_eq_c(req->path, "/chunked")) {
		http_conn_start_chunked(c, 201, h, 1);
		http_conn_write(c, "part1-", 6);
		http_conn_write(c, "part2", 5);
		http_conn_end(c);
		return;
	}
	if (str_eq_c(req->path, "/close")) {
		/* the request said close: the server answers with Connection: close */
		http_conn_respond(c, 200, NULL, 0, "bye", 3);
		return;
	}
	n = snprintf(out, sizeof(out), "%.*s %.*s host=%.*s body=%.*s", (int)req->method.len,
	             req->method.p, (int)req->target.len, req->target.p, (int)req->host.len,
	             req->host.p, (int)body.len, body.p);
	http_conn_respond(c, 200, h, 1, out, (size_t)n);
}

static void s_close(struct http_conn *c, void *d)
{
	if (c == E.held)
		E.held = NULL;
}

static void c_connect(struct http_client *c, void *d)
{
	E.connected++;
}

static void c_response(struct http_client *c, const struct http_msg *m, void *d)
{
	E.responses++;
	E.status = m->status;
	buf_reset(&E.body);
}

static int c_body(struct http_client *c, const char *p, size_t len, void *d)
{
	buf_append(&E.body, p, len);
	return 0;
}

static void c_complete(struct http_client *c, const struct http_msg *m, void *d)
{
	E.completes++;
	E.reusable_at_complete = http_client_reusable(c);
}

static void c_close(struct http_client *c, int err, void *d)
{
	E.closed++;
	E.close_err = err;
}

static const struct http_client_ops ops = {
    .on_connect = c_connect,
    .on_response = c_response,
    .on_body = c_body,
    .on_complete = c_complete,
    .on_close = c_close,
};

static void start(void)
{
	struct http_handler h = {.on_request = s_request, .on_close = s_close};
	int fd;

	memset(&E, 0, sizeof(E));
	buf_init(&E.body, 1 << 20);
	E.loop = loop_new();
	E.srv = http_server_new(E.loop, NULL, &h);
	fd = http_listen("127.0.0.1:0", 0);
	assert_true(fd >= 0);
	E.port = http_local_port(fd);
	snprintf(E.addr, sizeof(E.addr), "127.0.0.1:%d", E.port);
	assert_int_equal(http_server_add_listener(E.srv, fd), 0);
}

static void stop(void)
{
	http_server_free(E.srv);
	loop_run_once(E.loop, 0);
	loop_free(E.loop);
	buf_release(&E.body);
}

static void run_until(int *counter, int value)
{
	uint64_t end = clock_mono_ms() + WAIT_MS;

	while (*counter < value) {
		if (clock_mono_ms() > end)
			fail_msg("timed out");
		loop_run_once(E.loop, 5);
	}
}

static int body_is(const char *s)
{
	return buf_used(&E.body) == strlen(s) && memcmp(buf_head(&E.body), s, strlen(s)) == 0;
}

static void t_request_and_reuse(void **st)
{
	struct http_client *c;

	start();
	c = http_client_connect(E.loop, E.addr, NULL, &ops, NULL);
	assert_non_null(c);
	assert_true(http_client_connecting(c));
	/* queued while connecting */
	assert_int_equal(http_client_request(c, STR_LIT("GET"), STR_LIT("/a?b"), NULL, 0, NULL, 0),
	                 0);
	assert_int_equal(http_client_request(c, STR_LIT("GET"), STR_LIT("/x"), NULL, 0, NULL, 0),
	                 -EBUSY);
	run_until(&E.completes, 1);
	assert_int_equal(E.connected, 1);
	assert_int_equal(E.status, 200);
	{
		char want[128];

		snprintf(want, sizeof(want), "GET /a?b host=%s body=", E.addr);
		assert_true(body_is(want));
	}
	assert_true(http_client_reusable(c));
	/* second request on the same connection, with a body */
	assert_int_equal(http_client_request(c, STR_LIT("POST"), STR_LIT("/p"),
	                                     &(struct http_header){STR_LIT("Host"), STR_LIT("up")},
	                                     1, "data", 4),
	                 0);
	run_until(&E.completes, 2);
	assert_true(body_is("POST /p host=up body=data"));
	assert_int_equal(http_server_conn_count(E.srv), 1);
	assert_int_equal(E.connected, 1);
	http_client_close(c);
	run_until(&E.closed, 1);
	assert_int_equal(E.close_err, 0);
	stop();
}

static void t_streamed_chunked_request_and_response(void **st)
{
	struct http_client *c;

	start();
	c = http_client_connect(E.loop, E.addr, NULL, &ops, NULL);
	assert_non_null(c);
	run_until(&E.connected, 1);
	assert_int_equal(http_client_request_start(c, STR_LIT("PUT"), STR_LIT("/up"), NULL, 0, -1),
	                 0);
	assert_int_equal(http_client_write(c, "abc", 3), 0);
	assert_int_equal(http_client_write(c, "def", 3), 0);
	assert_int_equal(http_client_request_end(c), 0);
	run_until(&E.completes, 1);
	{
		char want[128];

		snprintf(want, sizeof(want), "PUT /up host=%s body=abcdef", E.addr);
		assert_true(body_is(want));
	}
	/* a chunked response is decoded */
	assert_int_equal(
	    http_client_request(c, STR_LIT("GET"), STR_LIT("/chunked"), NULL, 0, NULL, 0), 0);
	run_until(&E.completes, 2);
	assert_int_equal(E.status, 201);
	assert_true(body_is("part1-part2"));
	/* Content-Length streamed: too many bytes refused */
	assert_int_equal(http_client_request_start(c, STR_LIT("POST"), STR_LIT("/cl"), NULL, 0, 2),
	                 0);
	assert_int_equal(http_client_write(c, "abc", 3), -EINVAL);
	assert_int_equal(http_client_write(c, "ab", 2), 0);
	assert_int_equal(http_client_request_end(c), 0);
	run_until(&E.completes, 3);
	{
		char want[128];

		snprintf(want, sizeof(want), "POST /cl host=%s body=ab", E.addr);
		assert_true(body_is(want));
	}
	http_client_close(c);
	run_until(&E.closed, 1);
	stop();
}

static void t_head_and_close(void **st)
{
	struct http_client *c;

	start();
	c = http_client_connect(E.loop, E.addr, NULL, &ops, NULL);
	assert_int_equal(http_client_request(c, STR_LIT("HEAD"), STR_LIT("/h"), NULL, 0, NULL, 0),
	                 0);
	run_until(&E.completes, 1);
	assert_int_equal(E.responses, 1);
	assert_int_equal(E.status, 200);
	assert_int_equal(buf_used(&E.body), 0);
	assert_true(E.reusable_at_complete);
	assert_true(http_client_reusable(c));
	/* Connection: close: the client closes after the response, err 0 */
	assert_int_equal(
	    http_client_request(c, STR_LIT("GET"), STR_LIT("/close"),
	                        &(struct http_header){STR_LIT("Connection"), STR_LIT("close")}, 1,
	                        NULL, 0),
	    0);
	run_until(&E.closed, 1);
	assert_int_equal(E.completes, 2);
	assert_false(E.reusable_at_complete); /* closing as soon as it completed */
	assert_true(body_is("bye"));
	assert_int_equal(E.close_err, 0);
	stop();
}

/*
 * A request that says Connection: close (any case, inside a list) is not
 * reused even when the peer answers as if it were keep-alive.  The peer is
 * a raw socket here: our server would honour the close itself.
 */
static void t_request_close_token(void **st)
{
	static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
	const char *values[] = {"keep-alive", "te, Close"};
	size_t i;

	start();
	for (i = 0; i < 2; i++) {
		struct http_client *c;
		char addr[64], req[1024];
		size_t got = 0;
		uint64_t end = clock_mono_ms() + WAIT_MS;
		int lfd = http_listen("127.0.0.1:0", 0), fd = -1;

		assert_true(lfd >= 0);
		snprintf(addr, sizeof(addr), "127.0.0.1:%d", http_local_port(lfd));
		c = http_client_connect(E.loop, addr, NULL, &ops, NULL);
		assert_non_null(c);
		assert_int_equal(http_client_request(
		                     c, STR_LIT("GET"), STR_LIT("/"),
		                     &(struct http_header){STR_LIT("Connection"), str_c(values[i])},
		                     1, NULL, 0),
		                 0);
		while (!memmem(req, got, "\r\n\r\n", 4)) {
			ssize_t n;

			if (clock_mono_ms() > end)
				fail_msg("timed out waiting for the request");
			loop_run_once(E.loop, 5);
			if (fd < 0)
				fd = accept(lfd, NULL, NULL);
			if (fd >= 0 &&
			    (n = recv(fd, req + got, sizeof(req) - got, MSG_DONTWAIT)) > 0)
				got += (size_t)n;
		}
		assert_int_equal(send(fd, resp, sizeof(resp) - 1, 0), (ssize_t)(sizeof(resp) - 1));
		run_until(&E.completes, (int)i + 1);
		assert_true(body_is("ok"));
		assert_int_equal(E.reusable_at_complete, i == 0);
		if (i == 0) {
			assert_true(http_client_reusable(c));
			http_client_close(c);
		} /* else it closed itself at once: c is gone */
		run_until(&E.closed, (int)i + 1);
		assert_int_equal(E.close_err, 0);
		close(fd);
		close(lfd);
	}
	stop();
}

static void t_refused(void **st)
{
	struct http_client *c;
	int fd, port;
	char addr[64];

	start();
	/* a port that was just free */
	fd = http_listen("127.0.0.1:0", 0);
	port = http_local_port(fd);
	close(fd);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	c = http_client_connect(E.loop, addr, NULL, &ops, NULL);
	assert_non_null(c);
	run_until(&E.closed, 1);
	assert_int_equal(E.close_err, -ECONNREFUSED);
	assert_int_equal(E.connected, 0);
	assert_null(http_client_connect(E.loop, "localhost:80", NULL, &ops, NULL));
	assert_int_equal(errno, EINVAL);
	stop();
}

static void t_response_timeout(void **st)
{
	struct http_client_config cfg = {.response_timeout_ms = 200};
	struct http_client *c;
	uint64_t t0;

	start();
	c = http_client_connect(E.loop, E.addr, &cfg, &ops, NULL);
	t0 = clock_mono_ms();
	assert_int_equal(http_client_request(c, STR_LIT("GET"), STR_LIT("/hold"), NULL, 0, NULL, 0),
	                 0);
	run_until(&E.closed, 1);
	assert_int_equal(E.close_err, -ETIMEDOUT);
	assert_true(clock_mono_ms() - t0 >= 150);
	stop();
}

static void t_upstream_goes_away(void **st)
{
	struct http_client *c;

	start();
	c = http_client_connect(E.loop, E.addr, NULL, &ops, NULL);
	assert_int_equal(http_client_request(c, STR_LIT("GET"), STR_LIT("/hold"), NULL, 0, NULL, 0),
	                 0);
	run_until(&E.server_requests, 1);
	assert_non_null(E.held);
	http_conn_close(E.held);
	run_until(&E.closed, 1);
	assert_int_equal(E.close_err, -ECONNRESET);
	assert_int_equal(E.completes, 0);
	stop();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_request_and_reuse),
	    cmocka_unit_test(t_streamed_chunked_request_and_response),
	    cmocka_unit_test(t_head_and_close),
	    cmocka_unit_test(t_request_close_token),
	    cmocka_unit_test(t_refused),
	    cmocka_unit_test(t_response_timeout),
	    cmocka_unit_test(t_upstream_goes_away),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
