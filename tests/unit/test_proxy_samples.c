/* The canary request sample (issue 16; proxy/sample.h, proxy_samples() in
 * proxy/proxy.h): per worker rings of the last requests each version
 * served, newest first across workers, bounded, truncated fields, readable
 * while a worker writes; and end to end through a running proxy: the
 * requests a version served come back with their id, method, path (without
 * the query), status and latency. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config/config.h"
#include "core/err.h"
#include "core/loop.h"
#include "proxy/proxy.h"
#include "proxy/sample.h"
#include "proxy/table.h"

static struct proxy_sample mk(int64_t t, int status, const char *path)
{
	struct proxy_sample e;

	memset(&e, 0, sizeof(e));
	e.time_us = t;
	e.status = status;
	e.latency_us = (uint64_t)t * 2;
	snprintf(e.method, sizeof(e.method), "GET");
	snprintf(e.path, sizeof(e.path), "%s", path);
	snprintf(e.request_id, sizeof(e.request_id), "rid-%lld", (long long)t);
	return e;
}

static void test_newest_first_across_workers(void **state)
{
	struct sample_store *s = sample_store_new(2);
	struct proxy_sample out[8];
	int n;

	assert_non_null(s);
	assert_int_equal(sample_read(s, 7, out, 8), 0); /* never served */
	for (int64_t t = 1; t <= 3; t++) {
		struct proxy_sample a = mk(t * 10, 200, "/w0"), b = mk(t * 10 + 5, 500, "/w1");

		sample_record(s, 0, 7, &a);
		sample_record(s, 1, 7, &b);
	}
	{
		struct proxy_sample other = mk(1000, 201, "/other");

		sample_record(s, 0, 8, &other); /* another version: not mixed in */
	}
	n = sample_read(s, 7, out, 8);
	assert_int_equal(n, 6);
	for (int i = 0; i < n - 1; i++)
		assert_true(out[i].time_us > out[i + 1].time_us);
	assert_int_equal(out[0].time_us, 35);
	assert_string_equal(out[0].path, "/w1");
	assert_int_equal(out[0].status, 500);
	assert_string_equal(out[0].request_id, "rid-35");
	assert_int_equal(out[0].latency_us, 70);
	assert_int_equal(out[5].time_us, 10);
	/* max bounds the copy: the newest ones */
	n = sample_read(s, 7, out, 2);
	assert_int_equal(n, 2);
	assert_int_equal(out[0].time_us, 35);
	assert_int_equal(out[1].time_us, 30);
	assert_int_equal(sample_read(s, PROXY_MAX_SERIES, out, 2), -ERANGE);
	assert_int_equal(sample_read(s, 7, out, 0), 0);
	/* out-of-range writers are ignored */
	{
		struct proxy_sample x = mk(99, 200, "/x");

		sample_record(s, 2, 7, &x);
		sample_record(s, 0, -1, &x);
		sample_record(s, 0, PROXY_MAX_SERIES, &x);
	}
	assert_int_equal(sample_read(s, 7, out, 8), 6);
	sample_store_free(s);
}

/* The ring keeps the last PROXY_SAMPLE_RING per worker; older ones are overwritten. */
static void test_ring_is_bounded(void **state)
{
	struct sample_store *s = sample_store_new(1);
	struct proxy_sample *out = calloc(PROXY_SAMPLE_RING * 2, sizeof(*out));
	int n;

	assert_non_null(s);
	assert_non_null(out);
	for (int64_t t = 1; t <= PROXY_SAMPLE_RING * 3 + 5; t++) {
		struct proxy_sample e = mk(t, 200, "/r");

		sample_record(s, 0, 1, &e);
	}
	n = sample_read(s, 1, out, PROXY_SAMPLE_RING * 2);
	assert_int_equal(n, PROXY_SAMPLE_RING);
	assert_int_equal(out[0].time_us, PROXY_SAMPLE_RING * 3 + 5);
	assert_int_equal(out[n - 1].time_us, PROXY_SAMPLE_RING * 2 + 6);
	free(out);
	sample_store_free(s);
}

/* A reader never sees a torn entry while the worker keeps writing. */
struct writer {
	struct sample_store *s;
	atomic_int stop;
	int64_t written;
};

static void *writer_main(void *arg)
{
	struct writer *wr = arg;
	struct proxy_sample e;

	memset(&e, 0, sizeof(e));
	for (int64_t t = 1; !atomic_load(&wr->stop) && t < 50000000; t++) {
		/* every field derives from t: a torn copy mixes two t's (cheap to
		 * make, so the writer spends its time in sample_record) */
		e.time_us = t;
		e.latency_us = (uint64_t)t * 3;
		e.status = (int)(t % 1000);
		memset(e.method, 'A' + (int)(t % 26), sizeof(e.method) - 1);
		e.method[sizeof(e.method) - 1] = '\0';
		memset(e.path, 'a' + (int)(t % 26), sizeof(e.path) - 1);
		e.path[sizeof(e.path) - 1] = '\0';
		memset(e.request_id, '0' + (int)(t % 10), sizeof(e.request_id) - 1);
		e.request_id[sizeof(e.request_id) - 1] = '\0';
		sample_record(wr->s, 0, 3, &e);
		wr->written = t;
	}
	return NULL;
}

static void test_concurrent_reader_sees_whole_entries(void **state)
{
	struct writer wr = {.s = sample_store_new(1)};
	struct proxy_sample out[PROXY_SAMPLE_RING];
	pthread_t th;
	uint64_t until = clock_mono_ms() + 500;
	long checked = 0;

	assert_non_null(wr.s);
	assert_int_equal(pthread_create(&th, NULL, writer_main, &wr), 0);
	while (clock_mono_ms() < until) {
		int n = sample_read(wr.s, 3, out, PROXY_SAMPLE_RING);

		for (int i = 0; i < n; i++) {
			int64_t t = out[i].time_us;

			assert_int_equal(out[i].latency_us, (uint64_t)t * 3);
			assert_int_equal(out[i].status, (int)(t % 1000));
			for (size_t k = 0; k + 1 < sizeof(out[i].path); k++)
				if (out[i].path[k] != 'a' + (int)(t % 26))
					fail_msg("torn entry %lld: path[%zu] = %c", (long long)t, k,
					         out[i].path[k]);
			for (size_t k = 0; k + 1 < sizeof(out[i].request_id); k++)
				if (out[i].request_id[k] != '0' + (int)(t % 10))
					fail_msg("torn entry %lld: request_id[%zu]", (long long)t,
					         k);
			if (i)
				assert_true(out[i - 1].time_us > out[i].time_us);
			checked++;
		}
	}
	atomic_store(&wr.stop, 1);
	pthread_join(th, NULL);
	assert_true(checked > 0);
	sample_store_free(wr.s);
}

/* ---- through a running proxy ---- */

struct up {
	int lfd;
	uint16_t port;
	pthread_t th;
	atomic_int stop;
};

static int listen_any(uint16_t *port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd == -1 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 || listen(fd, 16) == -1)
		return -1;
	getsockname(fd, (struct sockaddr *)&sa, &sl);
	*port = ntohs(sa.sin_port);
	return fd;
}

/* A keep-alive upstream: 200 for every path, 503 under /fail. */
static void *up_main(void *arg)
{
	struct up *u = arg;

	while (!atomic_load(&u->stop)) {
		struct pollfd pf = {.fd = u->lfd, .events = POLLIN};
		char buf[8192];
		size_t n = 0;
		int fd;

		if (poll(&pf, 1, 50) != 1)
			continue;
		fd = accept(u->lfd, NULL, NULL);
		if (fd == -1)
			continue;
		for (;;) {
			ssize_t r = read(fd, buf + n, sizeof(buf) - 1 - n);
			char *end;

			if (r <= 0)
				break;
			n += (size_t)r;
			buf[n] = '\0';
			while ((end = strstr(buf, "\r\n\r\n"))) {
				const char *resp =
				    strncmp(buf, "GET /fail", 9) == 0
				        ? "HTTP/1.1 503 No\r\nContent-Length: 0\r\n\r\n"
				        : "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
				size_t used = (size_t)(end + 4 - buf);

				if (write(fd, resp, strlen(resp)) < 0)
					break;
				memmove(buf, buf + used, n - used);
				n -= used;
				buf[n] = '\0';
			}
		}
		close(fd);
	}
	return NULL;
}

static int series_fn(void *ctx, const char *svc, const char *version)
{
	return strcmp(version, "v1") == 0 ? 11 : 12;
}

/* Sends one request on fd and reads its (Content-Length) response; returns the status. */
static int get(int fd, const char *path, const char *extra)
{
	char req[512], resp[2048];
	size_t n = 0;
	int status = 0;

	snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n", path, extra);
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	while (n < sizeof(resp) - 1) {
		ssize_t r = read(fd, resp + n, sizeof(resp) - 1 - n);
		char *end, *cl;

		assert_true(r > 0);
		n += (size_t)r;
		resp[n] = '\0';
		end = strstr(resp, "\r\n\r\n");
		cl = strstr(resp, "Content-Length: ");
		if (end && cl && n >= (size_t)(end + 4 - resp) + strtoul(cl + 16, NULL, 10))
			break;
	}
	sscanf(resp, "HTTP/1.1 %d", &status);
	return status;
}

static void test_proxy_samples_end_to_end(void **state)
{
	struct up u = {.lfd = -1};
	uint16_t lport = 0;
	int tmp = listen_any(&lport);
	char yaml[1024], err[256];
	struct config_errors errs;
	struct config *cfg;
	struct config_ref *cref;
	struct proxy *p = proxy_new(2, NULL, 1);
	struct proxy_table *t;
	struct proxy_sample out[16];
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd, n;

	assert_non_null(p);
	close(tmp); /* a free port for the proxy's listener */
	u.lfd = listen_any(&u.port);
	assert_true(u.lfd >= 0);
	assert_int_equal(pthread_create(&u.th, NULL, up_main, &u), 0);
	snprintf(yaml, sizeof(yaml),
	         "admin: {listen: 127.0.0.1:9901}\n"
	         "listeners:\n"
	         "  - name: pub\n"
	         "    listen: 127.0.0.1:%u\n"
	         "    routes:\n"
	         "      - {match: {path_prefix: /}, service: web}\n"
	         "services:\n"
	         "  web:\n"
	         "    versions: {v1: {endpoints: [127.0.0.1:%u]}, v2: {endpoints: "
	         "[127.0.0.1:%u]}}\n"
	         "    stable: v1\n",
	         lport, u.port, u.port);
	config_errors_init(&errs);
	cfg = config_load_string("t.yaml", yaml, strlen(yaml), &errs);
	config_errors_release(&errs);
	assert_non_null(cfg);
	cref = config_ref_new(cfg);
	t = proxy_table_build(cref, NULL, 0, proxy_registry(p), series_fn, NULL, err, sizeof(err));
	assert_non_null(t);
	snap_obj_unref(&cref->obj);
	proxy_publish(p, t);
	assert_int_equal(proxy_start(p, err, sizeof(err)), 0);

	sa.sin_port = htons(lport);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(get(fd, "/one?token=secret", "X-Request-Id: my-id-1\r\n"), 200);
	assert_int_equal(get(fd, "/fail/two", ""), 503);
	close(fd);

	/* the exchange is accounted right after its response is queued */
	{
		uint64_t until = clock_mono_ms() + 5000;

		while ((n = proxy_samples(p, "web", "v1", out, 16)) < 2 && clock_mono_ms() < until)
			usleep(2000);
	}
	assert_int_equal(n, 2);
	assert_string_equal(out[0].method, "GET");
	assert_string_equal(out[0].path, "/fail/two");
	assert_int_equal(out[0].status, 503);
	assert_int_equal(strlen(out[0].request_id), 32); /* the proxy's own id */
	assert_string_equal(out[1].path, "/one");        /* never the query */
	assert_string_equal(out[1].request_id, "my-id-1");
	assert_int_equal(out[1].status, 200);
	assert_true(out[1].latency_us > 0);
	assert_true(out[0].time_us >= out[1].time_us);
	assert_true(out[1].time_us > (int64_t)1600000000 * 1000000);
	assert_int_equal(proxy_samples(p, "web", "v2", out, 16), 0);
	assert_int_equal(proxy_samples(p, "web", "v9", out, 16), ERR_NOTFOUND);
	assert_int_equal(proxy_samples(p, "nope", "v1", out, 16), ERR_NOTFOUND);

	proxy_stop(p, 1000);
	proxy_free(p);
	atomic_store(&u.stop, 1);
	pthread_join(u.th, NULL);
	close(u.lfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_newest_first_across_workers),
	    cmocka_unit_test(test_ring_is_bounded),
	    cmocka_unit_test(test_concurrent_reader_sees_whole_entries),
	    cmocka_unit_test(test_proxy_samples_end_to_end),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
