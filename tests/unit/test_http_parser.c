/* Unit tests for src/http/parser.c: every malformed case of SPEC section 4
 * with its exact status, good messages, pipelining, and split feeding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/parser.h"

#define MAXM 8

struct seen {
	size_t n;
	char method[MAXM][16];
	char path[MAXM][64];
	char query[MAXM][64];
	char host[MAXM][64];
	char body[MAXM][256];
	size_t body_len[MAXM];
	int keep_alive[MAXM];
	int version[MAXM];
	int status[MAXM];
	size_t nheaders[MAXM];
	char hdr0[MAXM][64]; /* "name=value" of the last header */
};

static void cp(char *dst, size_t cap, struct str s)
{
	size_t n = s.len < cap - 1 ? s.len : cap - 1;

	if (n)
		memcpy(dst, s.p, n);
	dst[n] = 0;
}

static void visit(void *ud, const struct http_msg *m, const char *body, size_t len)
{
	struct seen *s = ud;
	size_t i = s->n++;

	if (i >= MAXM)
		return;
	cp(s->method[i], sizeof(s->method[i]), m->method);
	cp(s->path[i], sizeof(s->path[i]), m->path);
	cp(s->query[i], sizeof(s->query[i]), m->query);
	cp(s->host[i], sizeof(s->host[i]), m->host);
	cp(s->body[i], sizeof(s->body[i]), str_make(body, len));
	s->body_len[i] = len;
	s->keep_alive[i] = m->keep_alive;
	s->version[i] = m->version;
	s->status[i] = m->status;
	s->nheaders[i] = m->nheaders;
	if (m->nheaders) {
		const struct http_header *h = &m->headers[m->nheaders - 1];
		char n[32], v[32];

		cp(n, sizeof(n), h->name);
		cp(v, sizeof(v), h->value);
		snprintf(s->hdr0[i], sizeof(s->hdr0[i]), "%s=%s", n, v);
	}
}

/* Parses s whole and byte by byte; both must agree. Returns the status. */
static int parse_req(const char *s, struct seen *out)
{
	struct seen a, b;
	size_t na = 0, nb = 0, len = strlen(s);
	int ra, rb;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	ra = http_parse_buffer(HTTP_PARSE_REQUEST, NULL, s, len, 0, 0, visit, &a, &na);
	rb = http_parse_buffer(HTTP_PARSE_REQUEST, NULL, s, len, 1, 0, visit, &b, &nb);
	assert_int_equal(ra, rb);
	assert_int_equal(na, nb);
	assert_int_equal(a.n, b.n);
	assert_memory_equal(&a, &b, sizeof(a));
	if (out)
		*out = a;
	return ra;
}

static void expect_status(const char *s, int status)
{
	int rc = parse_req(s, NULL);

	if (rc != status)
		fail_msg("expected %d got %d for: %s", status, rc, s);
}

/* --- malformed: SPEC section 4 ----------------------------------------- */

static void t_conflicting_cl(void **st)
{
	expect_status(
	    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", 400);
	/* identical duplicates are rejected too */
	expect_status(
	    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400);
	expect_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\nx", 400);
	expect_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400);
	expect_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400);
}

static void t_cl_with_te(void **st)
{
	expect_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
	              "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	              400);
	expect_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
	              "Content-Length: 3\r\n\r\n0\r\n\r\n",
	              400);
}

static void t_te_other(void **st)
{
	expect_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400);
	expect_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
	              "0\r\n\r\n",
	              501);
	expect_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
	              "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	              400);
	expect_status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
}

static void t_obs_fold(void **st)
{
	expect_status("GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n", 400);
	expect_status("GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n\ttwo\r\n\r\n", 400);
	expect_status("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400);
}

static void t_invalid_chunk_size(void **st)
{
	const char *h = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
	const char *bad[] = {"zz\r\nab\r\n0\r\n\r\n",
	                     "-1\r\n",
	                     "3 \r\nabc\r\n0\r\n\r\n",
	                     "fffffffffffffffffffff\r\n",
	                     "3\nabc\r\n0\r\n\r\n",
	                     "3\r\nabcX\r\n0\r\n\r\n",
	                     "\r\n"};
	char req[256];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(req, sizeof(req), "%s%s", h, bad[i]);
		expect_status(req, 400);
	}
}

static void t_bare_cr(void **st)
{
	expect_status("GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400);
	expect_status("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400);
	expect_status("GET / HTTP/1.1\rHost: a\r\n\r\n", 400);
	expect_status("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", 400);
}

static void t_bare_lf(void **st)
{
	expect_status("GET / HTTP/1.1\nHost: a\r\n\r\n", 400);
	expect_status("GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400);
	expect_status("GET / HTTP/1.1\r\nHost: a\r\n\n", 400);
	expect_status("GET / HTTP/1.1\r\nHost: a\n\n", 400);
	expect_status("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

static void t_header_bytes_431(void **st)
{
	size_t big = 33 * 1024;
	char *req = malloc(big + 128);
	size_t n;

	n = (size_t)snprintf(req, 128, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
	memset(req + n, 'a', big);
	memcpy(req + n + big, "\r\n\r\n", 5);
	expect_status(req, 431);
	/* a long request line counts as well */
	n = (size_t)snprintf(req, 128, "GET /");
	memset(req + n, 'a', big);
	memcpy(req + n + big, " HTTP/1.1\r\nHost: a\r\n\r\n", 23);
	expect_status(req, 431);
	free(req);
}

static void t_header_bytes_exact_limit(void **st)
{
	struct http_limits lim = {.max_header_bytes = 64, .max_headers = 0};
	char req[128];
	size_t n, pad;
	int rc;

	/* exactly 64 bytes of header section passes, 65 fails */
	n = (size_t)snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\nX: ");
	pad = 64 - n - 4;
	memset(req + n, 'b', pad);
	memcpy(req + n + pad, "\r\n\r\n", 5);
	assert_int_equal(strlen(req), 64);
	rc = http_parse_buffer(HTTP_PARSE_REQUEST, &lim, req, 64, 0, 0, NULL, NULL, NULL);
	assert_int_equal(rc, 0);
	rc = http_parse_buffer(HTTP_PARSE_REQUEST, &lim, req, 64, 1, 0, NULL, NULL, NULL);
	assert_int_equal(rc, 0);
	memset(req + n, 'b', pad + 1);
	memcpy(req + n + pad + 1, "\r\n\r\n", 5);
	rc = http_parse_buffer(HTTP_PARSE_REQUEST, &lim, req, 65, 0, 0, NULL, NULL, NULL);
	assert_int_equal(rc, 431);
	rc = http_parse_buffer(HTTP_PARSE_REQUEST, &lim, req, 65, 7, 0, NULL, NULL, NULL);
	assert_int_equal(rc, 431);
}

static void t_header_count_431(void **st)
{
	char *req = malloc(8192);
	size_t n = 0;
	int i;

	n += (size_t)snprintf(req + n, 8192 - n, "GET / HTTP/1.1\r\nHost: a\r\n");
	for (i = 0; i < 100; i++) /* 101 lines with Host */
		n += (size_t)snprintf(req + n, 8192 - n, "X-%d: v\r\n", i);
	snprintf(req + n, 8192 - n, "\r\n");
	expect_status(req, 431);
	/* exactly 100 is fine */
	n = (size_t)snprintf(req, 8192, "GET / HTTP/1.1\r\nHost: a\r\n");
	for (i = 0; i < 99; i++)
		n += (size_t)snprintf(req + n, 8192 - n, "X-%d: v\r\n", i);
	snprintf(req + n, 8192 - n, "\r\n");
	expect_status(req, 0);
	free(req);
}

static void t_two_hosts(void **st)
{
	expect_status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
	expect_status("GET / HTTP/1.1\r\nHost: a\r\nhOST: a\r\n\r\n", 400);
}

static void t_missing_host(void **st)
{
	expect_status("GET / HTTP/1.1\r\nX: y\r\n\r\n", 400);
	expect_status("GET / HTTP/1.0\r\n\r\n", 0); /* allowed in 1.0 */
}

static void t_bad_version(void **st)
{
	expect_status("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
	expect_status("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505);
	expect_status("GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505);
	expect_status("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505);
	expect_status("GET / HTTP/1.a\r\nHost: a\r\n\r\n", 400);
	expect_status("GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400);
}

static void t_bad_method(void **st)
{
	expect_status("FOO / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	expect_status("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	expect_status("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 501);
}

static void t_bad_header_tokens(void **st)
{
	expect_status("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400);
	expect_status("GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", 400);
	expect_status("GET / HTTP/1.1\r\nX\x7f: a\r\nHost: a\r\n\r\n", 400);
	expect_status("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

static void t_body_cap_413(void **st)
{
	const char *cl = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world";
	const char *ch = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	                 "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
	int rc;

	rc = http_parse_buffer(HTTP_PARSE_REQUEST, NULL, cl, strlen(cl), 0, 10, NULL, NULL, NULL);
	assert_int_equal(rc, 413);
	rc = http_parse_buffer(HTTP_PARSE_REQUEST, NULL, ch, strlen(ch), 0, 10, NULL, NULL, NULL);
	assert_int_equal(rc, 413);
	rc = http_parse_buffer(HTTP_PARSE_REQUEST, NULL, ch, strlen(ch), 3, 10, NULL, NULL, NULL);
	assert_int_equal(rc, 413);
	rc = http_parse_buffer(HTTP_PARSE_REQUEST, NULL, ch, strlen(ch), 0, 11, NULL, NULL, NULL);
	assert_int_equal(rc, 0);
}

static void t_data_after_close(void **st)
{
	expect_status("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
	              "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	              400);
}

/* --- good cases --------------------------------------------------------- */

static void t_get(void **st)
{
	struct seen s;

	assert_int_equal(parse_req("GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\n"
	                           "User-Agent: t  \r\nX-Empty:\r\n\r\n",
	                           &s),
	                 0);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.method[0], "GET");
	assert_string_equal(s.path[0], "/a/b");
	assert_string_equal(s.query[0], "x=1&y=2");
	assert_string_equal(s.host[0], "example.com");
	assert_int_equal(s.version[0], 11);
	assert_int_equal(s.keep_alive[0], 1);
	assert_int_equal(s.nheaders[0], 3);
	assert_string_equal(s.hdr0[0], "X-Empty=");
	assert_int_equal(s.body_len[0], 0);
}

static void t_absolute_form(void **st)
{
	struct seen s;

	assert_int_equal(parse_req("GET http://h.example:8080/p/q?z HTTP/1.1\r\nHost: h\r\n\r\n"
	                           "GET http://h.example HTTP/1.1\r\nHost: h\r\n\r\n",
	                           &s),
	                 0);
	assert_int_equal(s.n, 2);
	assert_string_equal(s.path[0], "/p/q");
	assert_string_equal(s.query[0], "z");
	assert_string_equal(s.path[1], "/");
	/* RFC 9112 3.2.2: the target's authority replaces Host */
	assert_string_equal(s.host[0], "h.example:8080");
	assert_string_equal(s.host[1], "h.example");
	assert_int_equal(parse_req("GET HTTPS://o.example?x=1 HTTP/1.0\r\n\r\n", &s), 0);
	assert_string_equal(s.host[0], "o.example");
	assert_string_equal(s.path[0], "/");
	assert_string_equal(s.query[0], "x=1");
	/* origin-form keeps Host */
	assert_int_equal(parse_req("GET /x HTTP/1.1\r\nHost: h\r\n\r\n", &s), 0);
	assert_string_equal(s.host[0], "h");
	/* no authority, userinfo, another scheme: 400 */
	expect_status("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	expect_status("GET http://u:p@h.example/x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	expect_status("GET ftp://h.example/x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	/* Host stays required in HTTP/1.1 */
	expect_status("GET http://h.example/x HTTP/1.1\r\n\r\n", 400);
}

static void t_header_trim(void **st)
{
	struct seen s;

	assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost:   a.b \t \r\nX-Z:\t v w \r\n\r\n", &s),
	                 0);
	assert_string_equal(s.host[0], "a.b");
	assert_string_equal(s.hdr0[0], "X-Z=v w");
}

static void t_post_cl(void **st)
{
	struct seen s;

	assert_int_equal(parse_req("POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n"
	                           "hello world",
	                           &s),
	                 0);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.method[0], "POST");
	assert_string_equal(s.body[0], "hello world");
	assert_int_equal(s.body_len[0], 11);
}

static void t_chunked_decoded(void **st)
{
	struct seen s;

	assert_int_equal(
	    parse_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	              "5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\n"
	              "X-Trailer: t\r\n\r\n",
	              &s),
	    0);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.body[0], "hello 0123456789");
	assert_int_equal(s.body_len[0], 16);
	/* TE is case-insensitive */
	assert_int_equal(
	    parse_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
	              "2\r\nok\r\n0\r\n\r\n",
	              &s),
	    0);
	assert_string_equal(s.body[0], "ok");
}

static int pause_body(struct http_parser *p, const char *at, size_t len, void *data);

/* RFC 9112 7.1.1: extensions (with BWS, tokens, quoted strings with escapes)
 * are accepted and ignored; llhttp 8.1 alone rejects most of these. */
static void t_chunk_extensions(void **st)
{
	const char *h = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
	const char *good[] = {"3;foo=bar;baz\r\nabc\r\n0\r\n\r\n", "3;foo\r\nabc\r\n0\r\n\r\n",
	                      "3;q=\"a b;c\\\"d\\\\\"\r\nabc\r\n0\r\n\r\n",
	                      "3 ;a = b ; c\t;d=\"\"\r\nabc\r\n0;last\r\n\r\n",
	                      "1;x=1;v\r\na\r\n2;y=\"\\\"\";w\r\nbc\r\n0;z=q;u\r\nT: 1\r\n\r\n"};
	const char *bad[] = {"3;\r\nabc\r\n0\r\n\r\n",           /* no name */
	                     "3;=v\r\nabc\r\n0\r\n\r\n",         /* no name */
	                     "3;a=\r\nabc\r\n0\r\n\r\n",         /* no value */
	                     "3;a=\"open\r\nabc\r\n0\r\n\r\n",   /* unterminated */
	                     "3;a=\"x\"y\r\nabc\r\n0\r\n\r\n",   /* junk after quotes */
	                     "3;a b\r\nabc\r\n0\r\n\r\n",        /* two names */
	                     "3;a@b\r\nabc\r\n0\r\n\r\n",        /* not a token */
	                     "3;a\nabc\r\n0\r\n\r\n",            /* bare LF */
	                     "3;a\rabc\r\n0\r\n\r\n",            /* bare CR */
	                     "3;a=\"\x01\"\r\nabc\r\n0\r\n\r\n", /* control char */
	                     ";a\r\nabc\r\n0\r\n\r\n"};          /* no size */
	char req[512], big[8192];
	struct seen s;
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(req, sizeof(req), "%s%s", h, good[i]);
		if (parse_req(req, &s) != 0)
			fail_msg("rejected: %s", good[i]);
		assert_int_equal(s.n, 1);
		assert_string_equal(s.body[0], "abc");
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(req, sizeof(req), "%s%s", h, bad[i]);
		expect_status(req, 400);
	}
	/* bounded: an extension over 4 KiB is refused */
	memset(big, 'x', sizeof(big));
	memcpy(big, h, strlen(h));
	memcpy(big + strlen(h), "3;", 2);
	snprintf(big + sizeof(big) - 20, 20, "\r\nabc\r\n0\r\n\r\n");
	expect_status(big, 400);
	/* a response body too (the upstream side) */
	{
		const char *r = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
		                "2;a=b;c\r\nok\r\n0\r\n\r\n";
		size_t n;

		memset(&s, 0, sizeof(s));
		assert_int_equal(
		    http_parse_buffer(HTTP_PARSE_RESPONSE, NULL, r, strlen(r), 1, 0, visit, &s, &n),
		    0);
		assert_int_equal(n, 1);
		assert_string_equal(s.body[0], "ok");
	}
}

/* Extensions across body pauses: the tracker follows what llhttp consumed. */
static void t_chunk_extensions_paused(void **st)
{
	static const struct http_parser_cbs cbs = {.on_body = pause_body};
	const char *in = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	                 "3;a=b;c\r\nabc\r\n2;d=e;f\r\nde\r\n0;g=h;i\r\n\r\n";
	size_t got = 0, used, off = 0, len = strlen(in);
	struct http_parser p;
	int rc, rounds = 0;

	http_parser_init(&p, HTTP_PARSE_REQUEST, NULL, &cbs, &got);
	do {
		rc = http_parser_feed(&p, in + off, len - off, &used);
		off += used;
		if (rc == HTTP_PARSE_PAUSED)
			http_parser_resume(&p);
		assert_true(++rounds < 20);
	} while (rc == HTTP_PARSE_PAUSED || (rc == HTTP_PARSE_AGAIN && off < len));
	assert_int_equal(rc, HTTP_PARSE_DONE);
	assert_int_equal(off, len);
	assert_int_equal(got, 5);
	http_parser_release(&p);
}

/* ": v" is not a header with an empty name: 400, never forwarded. */
static void t_empty_header_name(void **st)
{
	expect_status("GET / HTTP/1.1\r\nHost: a\r\n: Transfer-Encoding: chunked\r\n\r\n", 400);
	expect_status("GET / HTTP/1.1\r\n: x\r\nHost: a\r\n\r\n", 400);
	expect_status("GET / HTTP/1.1\r\nHost: a\r\n:\r\n\r\n", 400);
	/* in trailers too */
	expect_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	              "0\r\n: x\r\n\r\n",
	              400);
}

static void t_pipelined(void **st)
{
	struct seen s;

	assert_int_equal(
	    parse_req("GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
	              "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
	              "PUT /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	              "2\r\nxy\r\n0\r\n\r\n",
	              &s),
	    0);
	assert_int_equal(s.n, 3);
	assert_string_equal(s.path[0], "/1");
	assert_string_equal(s.path[1], "/2");
	assert_string_equal(s.body[1], "abc");
	assert_string_equal(s.path[2], "/3");
	assert_string_equal(s.method[2], "PUT");
	assert_string_equal(s.body[2], "xy");
}

/* The parser stops after each message, leaving the rest unconsumed. */
static void t_stops_after_message(void **st)
{
	const char *in = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
	struct http_parser p;
	size_t used;

	http_parser_init(&p, HTTP_PARSE_REQUEST, NULL, NULL, NULL);
	assert_int_equal(http_parser_feed(&p, in, strlen(in), &used), HTTP_PARSE_DONE);
	assert_int_equal(used, 28);
	assert_true(str_eq_c(http_parser_msg(&p)->path, "/1"));
	/* feeding again without next() consumes nothing */
	assert_int_equal(http_parser_feed(&p, in + used, strlen(in) - used, &used),
	                 HTTP_PARSE_DONE);
	assert_int_equal(used, 0);
	http_parser_next(&p);
	assert_int_equal(http_parser_feed(&p, in + 28, strlen(in) - 28, &used), HTTP_PARSE_DONE);
	assert_int_equal(used, strlen(in) - 28);
	assert_true(str_eq_c(http_parser_msg(&p)->path, "/2"));
	http_parser_next(&p);
	assert_false(http_parser_in_message(&p));
	http_parser_release(&p);
}

static int pause_body(struct http_parser *p, const char *at, size_t len, void *data)
{
	*(size_t *)data += len;
	return HTTP_PARSER_PAUSE;
}

static void t_body_pause(void **st)
{
	static const struct http_parser_cbs cbs = {.on_body = pause_body};
	const char *in = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nabcdef";
	size_t got = 0, used, off;
	struct http_parser p;

	http_parser_init(&p, HTTP_PARSE_REQUEST, NULL, &cbs, &got);
	off = strlen(in) - 3;
	assert_int_equal(http_parser_feed(&p, in, off, &used), HTTP_PARSE_PAUSED);
	assert_int_equal(used, off);
	assert_int_equal(got, 3);
	assert_int_equal(http_parser_feed(&p, in + off, 3, &used), HTTP_PARSE_PAUSED);
	assert_int_equal(used, 0);
	http_parser_resume(&p);
	assert_int_equal(http_parser_feed(&p, in + off, 3, &used), HTTP_PARSE_PAUSED);
	assert_int_equal(used, 3);
	assert_int_equal(got, 6);
	http_parser_resume(&p);
	/* the message completes on the next feed, which needs no bytes */
	assert_int_equal(http_parser_feed(&p, in, 0, &used), HTTP_PARSE_DONE);
	assert_int_equal(used, 0);
	http_parser_release(&p);
}

static void t_keep_alive(void **st)
{
	struct seen s;

	assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &s), 0);
	assert_int_equal(s.keep_alive[0], 1);
	assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &s),
	                 0);
	assert_int_equal(s.keep_alive[0], 0);
	assert_int_equal(parse_req("GET / HTTP/1.0\r\n\r\n", &s), 0);
	assert_int_equal(s.keep_alive[0], 0);
	assert_int_equal(s.version[0], 10);
	assert_int_equal(parse_req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
	                           "GET /b HTTP/1.0\r\n\r\n",
	                           &s),
	                 0);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.keep_alive[0], 1);
	assert_int_equal(s.keep_alive[1], 0);
}

static void t_incomplete(void **st)
{
	assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost: a\r\n", NULL), 1);
	assert_int_equal(
	    parse_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab", NULL), 1);
	assert_int_equal(parse_req("", NULL), 0);
	assert_int_equal(parse_req("\r\n", NULL), 1);
}

static void t_leading_crlf(void **st)
{
	struct seen s;

	assert_int_equal(parse_req("GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /2 HTTP/1.1\r\n"
	                           "Host: a\r\n\r\n",
	                           &s),
	                 0);
	assert_int_equal(s.n, 2);
	assert_string_equal(s.path[1], "/2");
}

/* Every split point of a pipelined stream gives the same result. */
static void t_all_splits(void **st)
{
	const char *in = "POST /1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	                 "3\r\nabc\r\n0\r\n\r\nGET /2?q HTTP/1.1\r\nHost: b\r\n\r\n";
	size_t len = strlen(in), step;
	struct seen ref;

	assert_int_equal(parse_req(in, &ref), 0);
	for (step = 2; step < len; step++) {
		struct seen s;
		size_t n;

		memset(&s, 0, sizeof(s));
		assert_int_equal(
		    http_parse_buffer(HTTP_PARSE_REQUEST, NULL, in, len, step, 0, visit, &s, &n),
		    0);
		assert_int_equal(n, 2);
		assert_memory_equal(&s, &ref, sizeof(s));
	}
}

/* --- responses ----------------------------------------------------------- */

static void t_responses(void **st)
{
	const char *r =
	    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	    "HTTP/1.1 204 No Content\r\n\r\n"
	    "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nnot\r\n0\r\n\r\n";
	struct seen s;
	size_t n;

	memset(&s, 0, sizeof(s));
	assert_int_equal(
	    http_parse_buffer(HTTP_PARSE_RESPONSE, NULL, r, strlen(r), 1, 0, visit, &s, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(s.status[0], 200);
	assert_string_equal(s.body[0], "ok");
	assert_int_equal(s.status[1], 204);
	assert_int_equal(s.status[2], 404);
	assert_string_equal(s.body[2], "not");
}

static int collect_body(struct http_parser *p, const char *at, size_t len, void *data)
{
	return buf_append(data, at, len) == 0 ? 0 : 500;
}

static void t_response_eof(void **st)
{
	static const struct http_parser_cbs cbs = {.on_body = collect_body};
	const char *r = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil eof";
	struct http_parser p;
	struct buf body;
	size_t used;

	buf_init(&body, 1024);
	http_parser_init(&p, HTTP_PARSE_RESPONSE, NULL, &cbs, &body);
	assert_int_equal(http_parser_feed(&p, r, strlen(r), &used), HTTP_PARSE_AGAIN);
	assert_int_equal(http_parser_finish(&p), HTTP_PARSE_DONE);
	assert_int_equal(buf_used(&body), 9);
	assert_memory_equal(buf_head(&body), "until eof", 9);
	http_parser_release(&p);

	/* truncated Content-Length body at EOF is an error */
	r = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab";
	http_parser_init(&p, HTTP_PARSE_RESPONSE, NULL, &cbs, &body);
	assert_int_equal(http_parser_feed(&p, r, strlen(r), &used), HTTP_PARSE_AGAIN);
	assert_int_equal(http_parser_finish(&p), HTTP_PARSE_ERROR);
	http_parser_release(&p);

	/* a response to HEAD has no body whatever it says */
	r = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: "
	    "0\r\n\r\n";
	http_parser_init(&p, HTTP_PARSE_RESPONSE, NULL, &cbs, &body);
	http_parser_expect_no_body(&p);
	assert_int_equal(http_parser_feed(&p, r, strlen(r), &used), HTTP_PARSE_DONE);
	assert_int_equal(used, 38);
	assert_int_equal(http_parser_msg(&p)->no_body, 1);
	http_parser_release(&p);
	buf_release(&body);
}

static void t_response_strict(void **st)
{
	const char *r1 = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok";
	const char *r2 = "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n";
	const char *r3 = "HTTP/1.1 2x0 OK\r\n\r\n";

	assert_int_equal(
	    http_parse_buffer(HTTP_PARSE_RESPONSE, NULL, r1, strlen(r1), 0, 0, NULL, NULL, NULL),
	    400);
	assert_int_equal(
	    http_parse_buffer(HTTP_PARSE_RESPONSE, NULL, r2, strlen(r2), 0, 0, NULL, NULL, NULL),
	    400);
	assert_int_equal(
	    http_parse_buffer(HTTP_PARSE_RESPONSE, NULL, r3, strlen(r3), 0, 0, NULL, NULL, NULL),
	    400);
}

static void t_header_helpers(void **st)
{
	const char *in = "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
	                 "Upgrade: websocket\r\n\r\n";
	struct http_parser p;
	struct http_msg *m;
	size_t used;

	http_parser_init(&p, HTTP_PARSE_REQUEST, NULL, NULL, NULL);
	assert_int_equal(http_parser_feed(&p, in, strlen(in), &used), HTTP_PARSE_DONE);
	m = http_parser_msg(&p);
	assert_non_null(http_msg_header(m, "UPGRADE"));
	assert_null(http_msg_header(m, "x-none"));
	assert_true(http_msg_header_has_token(m, "connection", "upgrade"));
	assert_true(http_msg_header_has_token(m, "CONNECTION", "keep-alive"));
	assert_false(http_msg_header_has_token(m, "connection", "close"));
	assert_false(http_msg_header_has_token(m, "connection", "keep"));
	assert_true(http_token_list_has(STR_LIT(" a ,\tClose "), STR_LIT("close")));
	assert_false(http_token_list_has(STR_LIT("closed, unclose"), STR_LIT("close")));
	assert_false(http_token_list_has(STR_LIT(""), STR_LIT("close")));
	assert_int_equal(m->method_id, HTTP_M_GET);
	http_parser_next(&p);
	/* upgrade is ignored: the next request is still HTTP */
	assert_int_equal(http_parser_feed(&p, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 28, &used),
	                 HTTP_PARSE_DONE);
	http_parser_release(&p);
	assert_string_equal(http_status_text(431), "Request Header Fields Too Large");
	assert_string_equal(http_status_code_name(400), "bad_request");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_conflicting_cl),
	    cmocka_unit_test(t_cl_with_te),
	    cmocka_unit_test(t_te_other),
	    cmocka_unit_test(t_obs_fold),
	    cmocka_unit_test(t_invalid_chunk_size),
	    cmocka_unit_test(t_bare_cr),
	    cmocka_unit_test(t_bare_lf),
	    cmocka_unit_test(t_header_bytes_431),
	    cmocka_unit_test(t_header_bytes_exact_limit),
	    cmocka_unit_test(t_header_count_431),
	    cmocka_unit_test(t_two_hosts),
	    cmocka_unit_test(t_missing_host),
	    cmocka_unit_test(t_bad_version),
	    cmocka_unit_test(t_bad_method),
	    cmocka_unit_test(t_bad_header_tokens),
	    cmocka_unit_test(t_body_cap_413),
	    cmocka_unit_test(t_data_after_close),
	    cmocka_unit_test(t_get),
	    cmocka_unit_test(t_absolute_form),
	    cmocka_unit_test(t_header_trim),
	    cmocka_unit_test(t_post_cl),
	    cmocka_unit_test(t_chunked_decoded),
	    cmocka_unit_test(t_chunk_extensions),
	    cmocka_unit_test(t_chunk_extensions_paused),
	    cmocka_unit_test(t_empty_header_name),
	    cmocka_unit_test(t_pipelined),
	    cmocka_unit_test(t_stops_after_message),
	    cmocka_unit_test(t_body_pause),
	    cmocka_unit_test(t_keep_alive),
	    cmocka_unit_test(t_incomplete),
	    cmocka_unit_test(t_leading_crlf),
	    cmocka_unit_test(t_all_splits),
	    cmocka_unit_test(t_responses),
	    cmocka_unit_test(t_response_eof),
	    cmocka_unit_test(t_response_strict),
	    cmocka_unit_test(t_header_helpers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
