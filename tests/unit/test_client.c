/* libcanary (lib/, include/canary/canary.h, docs/client.md): the SSE parser,
 * ruleset replacement and changes, evaluation through the public API against
 * the server's core, reconnects with Last-Event-ID, refetch on a change that
 * cannot apply, staleness, the ruleset cache, and evaluation from several
 * threads while the ruleset changes.  The stream is served by a scripted fake
 * server on 127.0.0.1 in the test's own thread. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "bucket_vectors.h"
#include "canary/canary.h"
#include "flags/flag.h"
#include "ruleset.h"
#include "sse.h"

#define WAIT_MS 5000 /* every wait is bounded by this */

/* ------------------------------------------------------------------------ */
/* The SSE parser                                                             */

struct seen {
	int n;
	char event[8][32];
	char id[8][32];
	char data[8][128];
};

static int record(void *user, const struct sse_event *ev)
{
	struct seen *s = user;

	if (s->n < 8) {
		snprintf(s->event[s->n], 32, "%s", ev->event);
		snprintf(s->id[s->n], 32, "%s", ev->id);
		snprintf(s->data[s->n], 128, "%s", ev->data);
		assert_int_equal(strlen(ev->data), ev->len);
	}
	s->n++;
	return 0;
}

static const char sse_text[] = "\xEF\xBB\xBF: hb\r\n"
                               "id: 42\r\n"
                               "event: ruleset\r\n"
                               "data: {\"a\":1}\r\n"
                               "\r\n"
                               "data: line1\n"
                               "data:line2\n"
                               "\n"
                               "event: change\r"
                               "id\r"
                               "data\r"
                               "\r"
                               "event: nodata\n"
                               "retry: 1500\n"
                               "\n"
                               "id: 7\n"
                               "event: change\n"
                               "data: x\n"
                               "\n";

static void check_seen(const struct sse_parser *p, const struct seen *s)
{
	assert_int_equal(s->n, 4);
	assert_string_equal(s->event[0], "ruleset");
	assert_string_equal(s->id[0], "42");
	assert_string_equal(s->data[0], "{\"a\":1}");
	assert_string_equal(s->event[1], "message");
	assert_string_equal(s->id[1], "42"); /* the last event ID persists */
	assert_string_equal(s->data[1], "line1\nline2");
	assert_string_equal(s->event[2], "change");
	assert_string_equal(s->id[2], ""); /* "id" without a value resets it */
	assert_string_equal(s->data[2], "");
	assert_string_equal(s->event[3], "change");
	assert_string_equal(s->id[3], "7");
	assert_string_equal(s->data[3], "x");
	assert_int_equal(p->comments, 1);
	assert_int_equal(p->retry_ms, 1500);
}

static void test_sse_whole(void **state)
{
	struct sse_parser p;
	struct seen s = {0};

	sse_init(&p, 1024, record, &s);
	assert_int_equal(sse_feed(&p, sse_text, sizeof(sse_text) - 1), 0);
	check_seen(&p, &s);
	sse_release(&p);
}

static void test_sse_byte_by_byte(void **state)
{
	struct sse_parser p;
	struct seen s = {0};

	/* every split point, CR / LF pairs included */
	sse_init(&p, 1024, record, &s);
	for (size_t i = 0; i < sizeof(sse_text) - 1; i++)
		assert_int_equal(sse_feed(&p, sse_text + i, 1), 0);
	check_seen(&p, &s);
	sse_release(&p);
}

static void test_sse_bounds(void **state)
{
	struct sse_parser p;
	struct seen s = {0};
	char big[200];

	memset(big, 'x', sizeof(big));
	sse_init(&p, 64, record, &s);
	assert_int_equal(sse_feed(&p, "data: ", 6), 0);
	assert_int_equal(sse_feed(&p, big, sizeof(big)), -ENOBUFS);
	sse_release(&p);

	/* many lines each under the bound, together over it */
	sse_init(&p, 64, record, &s);
	for (int i = 0; i < 3; i++)
		assert_int_equal(sse_feed(&p, "data: 0123456789abcdef\n", 23), 0);
	assert_int_equal(sse_feed(&p, "data: 0123456789abcdef\n", 23), -ENOBUFS);
	sse_release(&p);

	/* a reset forgets the partial event and the last id */
	sse_init(&p, 64, record, &s);
	assert_int_equal(sse_feed(&p, "id: 9\ndata: partial", 19), 0);
	sse_reset(&p);
	assert_int_equal(sse_feed(&p, "data: whole\n\n", 13), 0);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.data[0], "whole");
	assert_string_equal(s.id[0], "");
	sse_release(&p);
}

/* ------------------------------------------------------------------------ */
/* A scripted stream server                                                   */

struct fake {
	int lfd, cfd, port;
	char req[4096];
};

static void fake_listen(struct fake *f)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t len = sizeof(a);
	int one = 1;

	f->cfd = -1;
	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->lfd >= 0);
	setsockopt(f->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(f->lfd, 8), 0);
	assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&a, &len), 0);
	f->port = ntohs(a.sin_port);
}

/* Accepts the client's next connection and reads its request head. */
static void fake_accept(struct fake *f)
{
	struct pollfd pfd = {f->lfd, POLLIN, 0};
	size_t n = 0;

	if (f->cfd >= 0)
		close(f->cfd); /* the client dropped it */
	memset(f->req, 0, sizeof(f->req));
	assert_int_equal(poll(&pfd, 1, WAIT_MS), 1);
	f->cfd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(f->cfd >= 0);
	while (!strstr(f->req, "\r\n\r\n")) {
		ssize_t r;

		pfd = (struct pollfd){f->cfd, POLLIN, 0};
		assert_int_equal(poll(&pfd, 1, WAIT_MS), 1);
		r = read(f->cfd, f->req + n, sizeof(f->req) - 1 - n);
		assert_true(r > 0);
		n += (size_t)r;
		f->req[n] = '\0';
	}
}

static void fake_send(struct fake *f, const char *s)
{
	size_t len = strlen(s), off = 0;

	while (off < len) {
		ssize_t w = write(f->cfd, s + off, len - off);

		assert_true(w > 0);
		off += (size_t)w;
	}
}

static void fake_start(struct fake *f)
{
	fake_send(f, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
	             "Cache-Control: no-cache\r\nConnection: close\r\n\r\n");
}

static void fake_event(struct fake *f, const char *id, const char *event, const char *data)
{
	char buf[8192];

	assert_true((size_t)snprintf(buf, sizeof(buf), "id: %s\nevent: %s\ndata: %s\n\n", id, event,
	                             data) < sizeof(buf));
	fake_send(f, buf);
}

/* Closes the stream; waits until the client closed its end too. */
static void fake_hangup(struct fake *f)
{
	shutdown(f->cfd, SHUT_WR);
	close(f->cfd);
	f->cfd = -1;
	memset(f->req, 0, sizeof(f->req));
}

static void fake_close(struct fake *f)
{
	if (f->cfd >= 0)
		close(f->cfd);
	close(f->lfd);
}

/* ------------------------------------------------------------------------ */
/* Client fixtures                                                            */

struct watch {
	atomic_int changes, rulesets, from_cache;
	atomic_ullong revision;
	char key[64];
	struct canary_client *c;
	atomic_int seen_in_cb; /* the callback's own evaluation saw the new state */
};

static void on_change(void *user, const struct canary_change *ch)
{
	struct watch *w = user;

	if (ch->kind == CANARY_CHANGE_RULESET)
		atomic_fetch_add(&w->rulesets, 1);
	if (ch->from_cache)
		atomic_fetch_add(&w->from_cache, 1);
	snprintf(w->key, sizeof(w->key), "%s", ch->key ? ch->key : "");
	atomic_store(&w->revision, ch->revision);
	if (w->c) {
		struct canary_result r;

		canary_eval_bool(w->c, "dwcp_v3_hde", NULL, 0, &r);
		atomic_store(&w->seen_in_cb, (int)r.revision == (int)ch->revision);
	}
	atomic_fetch_add(&w->changes, 1);
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* Waits (bounded) until *v reaches want. */
#define wait_for(v, want) wait_for_at((v), (want), __LINE__)
static void wait_for_at(atomic_int *v, int want, int line)
{
	for (int i = 0; i < WAIT_MS && atomic_load(v) < want; i++)
		sleep_ms(1);
	if (atomic_load(v) < want)
		fail_msg("line %d: waited for %d, have %d", line, want, atomic_load(v));
}

static void wait_status(struct canary_client *c, int connected)
{
	struct canary_status st;

	for (int i = 0; i < WAIT_MS; i++) {
		canary_client_status(c, &st);
		if (st.connected == connected)
			return;
		sleep_ms(1);
	}
	fail_msg("status never became connected=%d", connected);
}

#define SEGMENTS                                                                       \
	"[{\"name\":\"internal\",\"match\":[{\"attr\":\"email\",\"op\":\"ends_with\"," \
	"\"values\":[\"@novacron.io\"]}]},"                                            \
	"{\"name\":\"premium\",\"match\":[{\"attr\":\"plan\",\"op\":\"in\","           \
	"\"values\":[\"gold\",\"platinum\"]}]},"                                       \
	"{\"name\":\"adults\",\"match\":[{\"attr\":\"age\",\"op\":\"gte\",\"values\":[\"18\"]}]}]"

#define DWCP(enabled, pct)                                                                        \
	"{\"key\":\"dwcp_v3_hde\",\"description\":\"\",\"enabled\":" enabled ","                  \
	"\"variants\":{\"on\":true,\"off\":false},\"off_variant\":\"off\",\"sticky\":\"nodeId\"," \
	"\"rules\":[{\"segment\":\"internal\",\"serve\":\"on\"},"                                 \
	"{\"segment\":\"premium\",\"rollout\":{\"on\":50}},"                                      \
	"{\"segment\":\"adults\",\"serve\":\"off\"}],"                                            \
	"\"rollout\":{\"on\":" pct "},\"exclude\":[\"node-123\"],\"include\":[]}"

#define COLOR                                                                   \
	"{\"key\":\"color\",\"variants\":{\"blue\":\"#00f\",\"red\":\"#f00\"}," \
	"\"off_variant\":\"blue\",\"rules\":[{\"segment\":\"premium\",\"serve\":\"red\"}]}"

#define RULESET(rev, flags) "{\"revision\":" rev ",\"flags\":[" flags "],\"segments\":" SEGMENTS "}"

static struct canary_client *client_for(struct fake *f, struct watch *w, const char *cache)
{
	char url[64];
	struct canary_options o = {0};
	struct canary_client *c;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", f ? f->port : 9);
	o.base_url = url;
	o.token = "tok-read";
	o.on_change = on_change;
	o.user = w;
	o.backoff_min_ms = 10;
	o.backoff_max_ms = 50;
	o.cache_path = cache;
	c = canary_client_new(&o);
	assert_non_null(c);
	if (w)
		w->c = c;
	return c;
}

static struct canary_context node_ctx(const char *node, struct canary_attr *a, size_t n)
{
	return (struct canary_context){.targeting_key = node, .attrs = a, .nattrs = n};
}

/* ------------------------------------------------------------------------ */
/* Through the public API                                                     */

static void test_options(void **state)
{
	struct canary_options o = {0};

	errno = 0;
	assert_null(canary_client_new(&o));
	assert_int_equal(errno, EINVAL);
	o.base_url = "ftp://x";
	assert_null(canary_client_new(&o));
	o.base_url = "http://127.0.0.1:1";
	o.backoff_min_ms = 500;
	o.backoff_max_ms = 100;
	assert_null(canary_client_new(&o));
	assert_null(canary_client_new(NULL));
	assert_string_equal(canary_reason_name(CANARY_REASON_SPLIT), "SPLIT");
	assert_string_equal(canary_error_name(CANARY_ERROR_PROVIDER_NOT_READY),
	                    "PROVIDER_NOT_READY");
	assert_string_equal(canary_error_name(CANARY_ERROR_TYPE_MISMATCH), "TYPE_MISMATCH");
	assert_null(canary_error_name(CANARY_ERROR_NONE));
}

static void test_not_ready(void **state)
{
	struct canary_client *c = client_for(NULL, NULL, NULL);
	struct canary_result r;
	struct canary_status st;
	char buf[16];

	assert_int_equal(canary_eval_bool(c, "dwcp_v3_hde", NULL, 1, &r), 1);
	assert_int_equal(r.reason, CANARY_REASON_ERROR);
	assert_int_equal(r.error, CANARY_ERROR_PROVIDER_NOT_READY);
	assert_int_equal(canary_eval_string(c, "color", NULL, "dflt", buf, sizeof(buf), &r), 4);
	assert_string_equal(buf, "dflt");
	canary_client_status(c, &st);
	assert_int_equal(st.ready, 0);
	assert_int_equal(st.connected, 0);
	assert_true(st.stale_since_ms > 0);
	canary_client_free(c);
}

static void test_stream(void **state)
{
	struct fake f;
	struct watch w = {0};
	struct canary_client *c;
	struct canary_result r;
	struct canary_status st;
	struct canary_attr gold[] = {{"plan", "gold"}, {"nodeId", "node-7"}};
	struct canary_attr adult[] = {{"age", "42"}, {"nodeId", "node-7"}};
	struct canary_attr excl[] = {{"nodeId", "node-123"}};
	struct canary_context ctx;
	char buf[64];

	fake_listen(&f);
	c = client_for(&f, &w, NULL);
	assert_int_equal(canary_client_start(c), 0);
	assert_int_equal(canary_client_start(c), -EALREADY);

	/* the first request: the stream path, the token, no Last-Event-ID */
	fake_accept(&f);
	assert_non_null(strstr(f.req, "GET /v1/feature-flags/stream HTTP/1.1\r\n"));
	assert_non_null(strstr(f.req, "\r\nAuthorization: Bearer tok-read\r\n"));
	assert_non_null(strstr(f.req, "\r\nAccept: text/event-stream\r\n"));
	assert_null(strstr(f.req, "Last-Event-ID"));
	fake_start(&f);
	fake_send(&f, ": hb\n\n");
	fake_event(&f, "5", "ruleset", RULESET("5", DWCP("true", "100") "," COLOR));
	wait_for(&w.changes, 1);
	assert_int_equal(atomic_load(&w.rulesets), 1);
	assert_int_equal(atomic_load(&w.revision), 5);
	assert_int_equal(atomic_load(&w.seen_in_cb), 1);
	wait_status(c, 1);

	/* fallthrough 100%: on for everyone, by split */
	ctx = node_ctx("node-7", gold + 1, 1);
	assert_int_equal(canary_eval_bool(c, "dwcp_v3_hde", &ctx, 0, &r), 1);
	assert_int_equal(r.reason, CANARY_REASON_SPLIT);
	assert_string_equal(r.variant, "on");
	assert_int_equal(r.revision, 5);
	/* rule 3 serves off to adults ("42" compared as a number) */
	ctx = node_ctx(NULL, adult, 2);
	assert_int_equal(canary_eval_bool(c, "dwcp_v3_hde", &ctx, 1, &r), 0);
	assert_int_equal(r.reason, CANARY_REASON_TARGETING_MATCH);
	/* the exclusion list is on the sticky attribute */
	ctx = node_ctx(NULL, excl, 1);
	assert_int_equal(canary_eval_bool(c, "dwcp_v3_hde", &ctx, 1, &r), 0);
	assert_int_equal(r.reason, CANARY_REASON_TARGETING_MATCH);
	assert_string_equal(r.variant, "off");
	/* strings, the generic call, a type mismatch, an unknown flag */
	ctx = node_ctx(NULL, gold, 2);
	assert_int_equal(canary_eval_string(c, "color", &ctx, "x", buf, sizeof(buf), &r), 4);
	assert_string_equal(buf, "#f00");
	assert_string_equal(r.variant, "red");
	assert_int_equal(canary_eval(c, "color", &ctx, &r, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "\"#f00\"");
	assert_int_equal(r.value_len, 6);
	assert_int_equal(canary_eval(c, "color", &ctx, &r, buf, 4), 0);
	assert_string_equal(buf, "\"#f");
	assert_int_equal(r.value_len, 6);
	assert_int_equal(canary_eval_bool(c, "color", &ctx, 1, &r), 1);
	assert_int_equal(r.error, CANARY_ERROR_TYPE_MISMATCH);
	assert_int_equal(canary_eval(c, "nope", &ctx, &r, buf, sizeof(buf)), -1);
	assert_int_equal(r.error, CANARY_ERROR_FLAG_NOT_FOUND);
	assert_string_equal(buf, "");

	/* a change: the kill switch */
	fake_event(&f, "6", "change",
	           "{\"revision\":6,\"key\":\"dwcp_v3_hde\",\"flag\":" DWCP("false", "100") "}");
	wait_for(&w.changes, 2);
	assert_string_equal(w.key, "dwcp_v3_hde");
	ctx = node_ctx("node-7", gold + 1, 1);
	assert_int_equal(canary_eval_bool(c, "dwcp_v3_hde", &ctx, 1, &r), 0);
	assert_int_equal(r.reason, CANARY_REASON_DISABLED);
	assert_int_equal(r.revision, 6);
	/* a change creating a flag, then one deleting it */
	fake_event(&f, "7", "change",
	           "{\"revision\":7,\"key\":\"extra\",\"flag\":{\"key\":\"extra\","
	           "\"variants\":{\"n\":3},\"off_variant\":\"n\"}}");
	wait_for(&w.changes, 3);
	assert_true(canary_eval_double(c, "extra", NULL, 0, &r) == 3.0);
	assert_int_equal(r.reason, CANARY_REASON_STATIC);
	fake_event(&f, "8", "change", "{\"revision\":8,\"key\":\"extra\",\"flag\":null}");
	wait_for(&w.changes, 4);
	assert_true(canary_eval_double(c, "extra", NULL, -1, &r) == -1);
	assert_int_equal(r.error, CANARY_ERROR_FLAG_NOT_FOUND);

	/* a later ruleset replaces everything: color is gone */
	fake_event(&f, "9", "ruleset", RULESET("9", DWCP("true", "0")));
	wait_for(&w.changes, 5);
	assert_int_equal(canary_eval(c, "color", NULL, &r, buf, sizeof(buf)), -1);
	assert_int_equal(r.error, CANARY_ERROR_FLAG_NOT_FOUND);
	assert_int_equal(canary_eval_bool(c, "dwcp_v3_hde", &ctx, 1, &r), 0);
	assert_int_equal(r.reason, CANARY_REASON_SPLIT);

	/* the server goes away: stale, still evaluating the last ruleset */
	fake_hangup(&f);
	wait_status(c, 0);
	canary_client_status(c, &st);
	assert_true(st.stale_since_ms > 0);
	assert_int_equal(st.ready, 1);
	assert_int_equal(st.revision, 9);
	assert_non_null(strstr(st.last_error, "closed"));
	assert_int_equal(canary_eval_bool(c, "dwcp_v3_hde", &ctx, 1, &r), 0);
	assert_int_equal(r.reason, CANARY_REASON_SPLIT);

	/* it reconnects and resumes from revision 9 */
	fake_accept(&f);
	assert_non_null(strstr(f.req, "\r\nLast-Event-ID: 9\r\n"));
	fake_start(&f);
	wait_status(c, 1);
	canary_client_status(c, &st);
	assert_int_equal(st.stale_since_ms, 0);
	assert_int_equal(st.connects, 2);

	/* a change it cannot apply (undefined segment): refetch without Last-Event-ID */
	fake_event(&f, "10", "change",
	           "{\"revision\":10,\"key\":\"bad\",\"flag\":{\"rules\":[{\"segment\":\"nope\","
	           "\"serve\":\"on\"}]}}");
	fake_accept(&f); /* the old connection is dropped by the client */
	if (strstr(f.req, "Last-Event-ID"))
		fail_msg("a refetch resumed:\n%s", f.req);
	canary_client_status(c, &st);
	assert_int_equal(st.refetches, 1);
	assert_non_null(strstr(st.last_error, "fetching the full ruleset"));
	fake_start(&f);
	fake_event(&f, "10", "ruleset", RULESET("10", DWCP("true", "100")));
	wait_for(&w.changes, 6);
	assert_int_equal(canary_eval_bool(c, "dwcp_v3_hde", &ctx, 0, &r), 1);
	assert_int_equal(r.revision, 10);

	/* a ruleset that does not compile is refused; the last good one stays */
	fake_event(&f, "11", "ruleset",
	           "{\"revision\":11,\"flags\":[{\"key\":\"a\"},{\"key\":\"a\"}]}");
	fake_event(&f, "12", "change", "{\"revision\":12,\"key\":\"z\",\"flag\":{}}");
	wait_for(&w.changes, 7);
	canary_client_status(c, &st);
	assert_int_equal(st.revision, 12);
	assert_int_equal(canary_eval_bool(c, "dwcp_v3_hde", &ctx, 0, &r), 1);
	assert_int_equal(canary_eval_bool(c, "z", &ctx, 1, &r), 0); /* default on/off: off */

	canary_client_stop(c);
	canary_client_status(c, &st);
	assert_int_equal(st.connected, 0);
	assert_int_equal(canary_eval_bool(c, "dwcp_v3_hde", &ctx, 0, &r), 1);
	canary_client_free(c);
	fake_close(&f);
}

static void test_http_error(void **state)
{
	struct fake f;
	struct canary_client *c;
	struct canary_status st;

	fake_listen(&f);
	c = client_for(&f, NULL, NULL);
	assert_int_equal(canary_client_start(c), 0);
	fake_accept(&f);
	fake_send(
	    &f, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
	        "Content-Length: 26\r\nConnection: close\r\n\r\n{\"error\":\"unauthorized\"}\n\n");
	fake_hangup(&f);
	fake_accept(&f); /* it retries */
	canary_client_status(c, &st);
	assert_non_null(strstr(st.last_error, "HTTP 401"));
	assert_non_null(strstr(st.last_error, "unauthorized"));
	assert_int_equal(st.connected, 0);
	assert_int_equal(st.connects, 0);
	canary_client_free(c);
	fake_close(&f);
}

static void test_cache(void **state)
{
	char path[] = "/tmp/canary-test-cache-XXXXXX";
	struct fake f;
	struct watch w = {0}, w2 = {0};
	struct canary_client *c;
	struct canary_result r;
	struct canary_status st;
	struct canary_attr a[] = {{"nodeId", "node-7"}};
	struct canary_context ctx = node_ctx("node-7", a, 1);
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	close(fd);
	unlink(path);
	fake_listen(&f);
	c = client_for(&f, &w, path);
	assert_int_equal(canary_client_start(c), 0);
	fake_accept(&f);
	fake_start(&f);
	fake_event(&f, "21", "ruleset", RULESET("21", DWCP("true", "100")));
	fake_event(&f, "22", "change", "{\"revision\":22,\"key\":\"color\",\"flag\":" COLOR "}");
	wait_for(&w.changes, 2);
	canary_client_free(c);
	fake_close(&f);

	/* a new client, no server: the cached ruleset answers at once, stale */
	c = client_for(NULL, &w2, path);
	canary_client_status(c, &st);
	assert_int_equal(st.ready, 1);
	assert_int_equal(st.connected, 0);
	assert_int_equal(st.revision, 22);
	assert_true(st.stale_since_ms > 0);
	assert_int_equal(canary_eval_bool(c, "dwcp_v3_hde", &ctx, 0, &r), 1);
	assert_int_equal(r.revision, 22);
	assert_int_equal(canary_eval_string(c, "color", &ctx, "", NULL, 0, &r), 4);
	assert_int_equal(canary_client_start(c), 0);
	wait_for(&w2.from_cache, 1); /* announced once, from the stream thread */
	canary_client_free(c);

	/* a corrupt cache is reported, not fatal */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "{nope", 5), 5);
	close(fd);
	c = client_for(NULL, NULL, path);
	canary_client_status(c, &st);
	assert_int_equal(st.ready, 0);
	assert_non_null(strstr(st.last_error, "invalid JSON"));
	canary_client_free(c);
	unlink(path);
}

/* The client's string context and the server's JSON context evaluate alike. */
static void test_same_as_server_core(void **state)
{
	static const char text[] = RULESET("3", DWCP("true", "12.345"));
	char path[] = "/tmp/canary-test-core-XXXXXX";
	struct ruleset rs;
	struct flagset *set;
	char err[256];
	int fd = mkstemp(path);
	struct canary_client *c;
	const char *plans[] = {"gold", "free", NULL};
	const char *emails[] = {"a@novacron.io", "b@example.com"};
	const char *ages[] = {"17", "18", "30.5"};
	unsigned reasons = 0, on = 0;
	struct canary_attr internal[] = {{"email", "ops@novacron.io"}};
	struct canary_context ictx = {NULL, internal, 1};
	struct canary_result r;
	char buf[16];

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
	close(fd);
	assert_int_equal(ruleset_parse(&rs, text, sizeof(text) - 1, &set, err, sizeof(err)), 0);
	c = client_for(NULL, NULL, path);
	for (int i = 0; i < 600; i++) {
		char node[32];
		struct canary_attr a[4];
		struct canary_context ctx;
		struct flag_result fr;
		struct flag_json_ctx jc;
		json_t *obj;
		size_t n = 0;
		int rc;

		snprintf(node, sizeof(node), "node-%d", i);
		obj = json_pack("{s:s}", "nodeId", node);
		a[n++] = (struct canary_attr){"nodeId", node};
		if (plans[i % 3]) {
			a[n++] = (struct canary_attr){"plan", plans[i % 3]};
			json_object_set_new(obj, "plan", json_string(plans[i % 3]));
		}
		if (i % 5 == 0) {
			a[n++] = (struct canary_attr){"email", emails[i % 2]};
			json_object_set_new(obj, "email", json_string(emails[i % 2]));
		}
		if (i % 7 == 0) {
			a[n++] = (struct canary_attr){"age", ages[i % 3]};
			json_object_set_new(obj, "age", json_real(strtod(ages[i % 3], NULL)));
		}
		ctx = (struct canary_context){NULL, a, n};
		assert_int_equal(flag_json_ctx_init(&jc, obj), 0);
		rc = flag_eval(flagset_find(set, "dwcp_v3_hde", 11), flag_ctx_json_attr, &jc, &fr);
		assert_int_equal(canary_eval(c, "dwcp_v3_hde", &ctx, &r, NULL, 0), rc);
		assert_int_equal((int)r.reason, (int)fr.reason);
		assert_int_equal((int)r.error, (int)fr.error);
		assert_string_equal(r.variant, fr.variant);
		assert_int_equal(r.value_len, fr.value_json_len);
		reasons |= 1u << r.reason;
		on += strcmp(r.variant, "on") == 0;
		json_decref(obj);
	}
	/* the contexts went through rules and the split, both ways */
	assert_int_equal(reasons, 1u << CANARY_REASON_SPLIT | 1u << CANARY_REASON_TARGETING_MATCH);
	assert_in_range(on, 30, 570);

	/* typed calls: def on any error, off variant given by canary_eval */
	assert_int_equal(canary_eval_bool(c, "dwcp_v3_hde", NULL, 1, &r), 1);
	assert_int_equal(r.error, CANARY_ERROR_TARGETING_KEY_MISSING);
	assert_string_equal(r.variant, "off");
	assert_int_equal(canary_eval(c, "dwcp_v3_hde", NULL, &r, buf, sizeof(buf)), -1);
	assert_string_equal(buf, "false");
	assert_int_equal(r.value_len, 5);
	assert_int_equal(canary_eval_bool(c, "dwcp_v3_hde", &ictx, 0, NULL), 1);
	assert_true(canary_eval_double(c, "dwcp_v3_hde", &ictx, 2.5, &r) == 2.5);
	assert_int_equal(r.error, CANARY_ERROR_TYPE_MISMATCH);
	assert_int_equal(r.reason, CANARY_REASON_ERROR);
	assert_int_equal(canary_eval_string(c, "dwcp_v3_hde", &ictx, "default", buf, 4, &r), 7);
	assert_string_equal(buf, "def");
	assert_int_equal(r.error, CANARY_ERROR_TYPE_MISMATCH);
	assert_int_equal(canary_eval_string(c, "dwcp_v3_hde", &ictx, NULL, buf, sizeof(buf), NULL),
	                 0);
	assert_string_equal(buf, "");
	canary_client_free(c);
	flagset_free(set);
	ruleset_release(&rs);
	unlink(path);
}

/* ------------------------------------------------------------------------ */
/* Bucketing: the vectors of docs/bucketing.md                                */

/* A client whose ruleset (from a cache file) holds one flag: key salt (the
 * salt is the flag key), serving "on" to the buckets [0, thousandths). */
static struct canary_client *client_with_rollout(const char *salt, uint32_t thousandths)
{
	char path[] = "/tmp/canary-test-vectors-XXXXXX";
	char text[1024];
	struct canary_client *c;
	struct canary_status st;
	int fd = mkstemp(path), n;

	assert_true(fd >= 0);
	n = snprintf(text, sizeof(text),
	             "{\"revision\":1,\"segments\":[],\"flags\":[{\"key\":\"%s\",\"enabled\":true,"
	             "\"variants\":{\"on\":true,\"off\":false},\"off_variant\":\"off\","
	             "\"rollout\":{\"on\":%u.%03u}}]}",
	             salt, thousandths / 1000, thousandths % 1000);
	assert_true(n > 0 && (size_t)n < sizeof(text));
	assert_int_equal(write(fd, text, (size_t)n), n);
	close(fd);
	c = client_for(NULL, NULL, path);
	unlink(path);
	canary_client_status(c, &st);
	if (!st.ready)
		fail_msg("ruleset for salt \"%s\" refused: %s", salt, st.last_error);
	return c;
}

/* The library buckets exactly as the page says: each vector's key is in a
 * rollout that ends just above its bucket, and not in one that ends at it. */
static void test_docs_vectors(void **state)
{
	struct bucket_vector v[64];
	int n = bucket_vectors_load("docs/bucketing.md", v, 64), checked = 0;

	assert_true(n >= 20);
	for (int i = 0; i < n; i++) {
		struct canary_client *at, *above;
		struct canary_context ctx = {.targeting_key = v[i].key};
		struct canary_result r;

		/* a flag's salt is its key: salts that are no flag name ("", "a:b") are
		 * the proxy's (service names), tested in test_proxy_table.c */
		if (!v[i].salt[0] || strspn(v[i].salt, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
		                                       "abcdefghijklmnopqrstuvwxyz0123456789_.-") !=
		                         strlen(v[i].salt))
			continue;
		at = client_with_rollout(v[i].salt, v[i].bucket);
		above = client_with_rollout(v[i].salt, v[i].bucket + 1);
		if (v[i].key[0] == '\0') {
			/* an empty key is no key: never bucketed (as in the server) */
			assert_int_equal(canary_eval_bool(above, v[i].salt, &ctx, 0, &r), 0);
			assert_int_equal(r.error, CANARY_ERROR_TARGETING_KEY_MISSING);
		} else {
			assert_int_equal(canary_eval_bool(above, v[i].salt, &ctx, 0, &r), 1);
			assert_int_equal(r.reason, CANARY_REASON_SPLIT);
			assert_string_equal(r.variant, "on");
			assert_int_equal(canary_eval_bool(at, v[i].salt, &ctx, 1, &r), 0);
			assert_int_equal(r.reason, CANARY_REASON_SPLIT);
			assert_string_equal(r.variant, "off");
			checked++;
		}
		canary_client_free(at);
		canary_client_free(above);
	}
	assert_true(checked >= n - 4);
}

/* ------------------------------------------------------------------------ */
/* Threads                                                                    */

struct reader {
	struct canary_client *c;
	atomic_int *stop;
	long evals, bad;
};

static void *reader_main(void *arg)
{
	struct reader *rd = arg;
	struct canary_attr a[] = {{"nodeId", "node-7"}};
	struct canary_context ctx = {"node-7", a, 1};

	while (!atomic_load(rd->stop)) {
		struct canary_result r;
		int v = canary_eval_bool(rd->c, "dwcp_v3_hde", &ctx, -1, &r);

		/* odd revisions are enabled, even ones killed: value and revision agree */
		if (v != (int)(r.revision & 1) || r.error != CANARY_ERROR_NONE)
			rd->bad++;
		rd->evals++;
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct fake f;
	struct watch w = {0};
	struct canary_client *c;
	struct reader rd[4];
	pthread_t th[4];
	atomic_int stop = 0;
	char id[16], data[2048];

	fake_listen(&f);
	c = client_for(&f, &w, NULL);
	assert_int_equal(canary_client_start(c), 0);
	fake_accept(&f);
	fake_start(&f);
	fake_event(&f, "1", "ruleset", RULESET("1", DWCP("true", "100")));
	wait_for(&w.changes, 1);
	for (int i = 0; i < 4; i++) {
		rd[i] = (struct reader){c, &stop, 0, 0};
		assert_int_equal(pthread_create(&th[i], NULL, reader_main, &rd[i]), 0);
	}
	/* one change at a time, each while the readers run */
	for (int rev = 2; rev <= 200; rev++) {
		snprintf(id, sizeof(id), "%d", rev);
		snprintf(data, sizeof(data),
		         "{\"revision\":%d,\"key\":\"dwcp_v3_hde\",\"flag\":%s}", rev,
		         rev & 1 ? DWCP("true", "100") : DWCP("false", "100"));
		fake_event(&f, id, "change", data);
		wait_for(&w.changes, rev);
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_true(rd[i].evals > 0);
		assert_int_equal(rd[i].bad, 0);
	}
	canary_client_free(c);
	fake_close(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sse_whole),
	    cmocka_unit_test(test_sse_byte_by_byte),
	    cmocka_unit_test(test_sse_bounds),
	    cmocka_unit_test(test_options),
	    cmocka_unit_test(test_not_ready),
	    cmocka_unit_test(test_stream),
	    cmocka_unit_test(test_http_error),
	    cmocka_unit_test(test_cache),
	    cmocka_unit_test(test_same_as_server_core),
	    cmocka_unit_test(test_docs_vectors),
	    cmocka_unit_test(test_threads),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
