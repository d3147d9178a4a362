/*
 * bench/sse_fanout.c - change -> N stream subscribers (issue 5, part 3 of
 * bench/flags.sh; docs/benchmarks.md "Feature flags").
 *
 * Opens N connections to canaryd's GET /v1/feature-flags/stream (at most
 * CONNECT_WINDOW of them waiting for their first event at a time, so the
 * listen backlog never overflows), waits until every one has its `ruleset`
 * event, then makes C changes to one flag, one after the other, with the
 * seed's POST /v1/feature-flags {"feature": F, "percentage": P} on a
 * separate keep-alive connection.  Change k sets percentage P0 + k (P0 = 30),
 * so every change is a real change and its `change` event is recognised by
 * its `"rollout":{"on":P}`.  For every (subscriber, change) pair the latency
 * is from just before the change request is written to the moment this
 * program has read the whole `change` event from that subscriber's socket.
 * The next change starts once every subscriber has its event and the change
 * was acknowledged (or after a per-change timeout).
 *
 * One thread, one epoll set, level-triggered; the stream's chunked framing
 * is decoded and its events parsed (fields `event:` and `data:`; a data line
 * longer than LINE_MAX is kept truncated, which only a ruleset can be).
 *
 *   sse_fanout --port ADMIN_PORT --token TOKEN --flag KEY
 *              [--subscribers N] [--changes C] [--timeout-ms T]
 * Prints one line: subscribers, changes, p50/p99/max in ms, samples, missing.
 * Exit 1 when a subscriber could not connect, got no ruleset, or dropped.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#define MAX_SUBS       20000
#define MAX_CHANGES    60
#define P0             30
#define CONNECT_WINDOW 100
#define LINE_MAX_LEN   4096
#define HEAD_MAX       4096
#define READ_BUF       65536

enum sub_phase { SUB_HEAD, SUB_CHUNK_SIZE, SUB_CHUNK_DATA, SUB_CHUNK_CRLF, SUB_RAW, SUB_DEAD };

struct sub {
	int fd;
	enum sub_phase phase;
	int got_ruleset;
	int changes_seen;
	size_t chunk_left; /* data bytes left, or the size being read */
	int size_digits, size_ext;
	size_t headlen;
	char head[HEAD_MAX];
	size_t linelen;
	char line[LINE_MAX_LEN];
	int ev_change; /* the current event is `event: change` */
	int ev_pct;    /* percentage found in its data, -1 none */
};

static struct {
	struct sub *subs;
	int nsubs, nchanges;
	int ep;
	const char *token, *flag;
	int port;
	int connected, with_ruleset, dead;
	int cur_change; /* index of the change in flight, -1 none */
	double t_send[MAX_CHANGES];
	int got[MAX_CHANGES]; /* subscribers that have change k */
	double *lat;          /* [sub * nchanges + k], ms; <0 missing */
	/* the change connection */
	int cfd;
	char cbuf[8192];
	size_t clen;
	int acked;
	double t_ack[MAX_CHANGES];
} g;

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static int connect_to(int port, int nonblock)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd, one = 1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
	if (fd == -1)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Writes all of p (small requests on loopback; bounded retries on EAGAIN). */
static int write_all(int fd, const char *p, size_t n)
{
	int spins = 0;

	while (n) {
		ssize_t w = write(fd, p, n);

		if (w == -1) {
			if ((errno == EAGAIN || errno == EINTR) && spins++ < 100000)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void sub_kill(struct sub *s, const char *why)
{
	if (s->phase == SUB_DEAD)
		return;
	fprintf(stderr, "sse_fanout: subscriber fd %d: %s\n", s->fd, why);
	epoll_ctl(g.ep, EPOLL_CTL_DEL, s->fd, NULL);
	close(s->fd);
	s->phase = SUB_DEAD;
	g.dead++;
}

static int sub_open(int i)
{
	struct sub *s = &g.subs[i];
	/* the request waits for the handshake: EPOLLOUT first (sub_send_request) */
	struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};

	s->fd = connect_to(g.port, 1);
	if (s->fd == -1)
		return -1;
	if (epoll_ctl(g.ep, EPOLL_CTL_ADD, s->fd, &ev) == -1)
		return -1;
	s->phase = SUB_HEAD;
	s->ev_pct = -1;
	g.connected++;
	return 0;
}

static void sub_send_request(int i)
{
	struct sub *s = &g.subs[i];
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
	char req[512];
	int n, err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 || err) {
		sub_kill(s, err ? strerror(err) : "connect failed");
		return;
	}
	n = snprintf(req, sizeof(req),
	             "GET /v1/feature-flags/stream HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
	             "Authorization: Bearer %s\r\nAccept: text/event-stream\r\n\r\n",
	             g.port, g.token);
	if (write_all(s->fd, req, (size_t)n) == -1) {
		sub_kill(s, "write failed");
		return;
	}
	epoll_ctl(g.ep, EPOLL_CTL_MOD, s->fd, &ev);
}

/* `"rollout":{"on":P}` in a change event's data -> P, else -1. */
static int data_percentage(const char *p, size_t n)
{
	static const char pat[] = "],\"rollout\":{\"on\":"; /* the fallthrough, after the rules */
	const char *q = memmem(p, n, pat, sizeof(pat) - 1);
	int v = 0, digits = 0;

	if (!q)
		return -1;
	q += sizeof(pat) - 1;
	while (q < p + n && *q >= '0' && *q <= '9' && digits < 4) {
		v = v * 10 + (*q++ - '0');
		digits++;
	}
	return digits && q < p + n && *q == '}' ? v : -1;
}

static void sub_event(int i, double t)
{
	struct sub *s = &g.subs[i];
	int k;

	if (!s->ev_change) {
		return; /* ruleset handled at its `event:` line; comments are heartbeats */
	}
	k = s->ev_pct - P0;
	s->changes_seen++;
	if (k < 0 || k >= g.nchanges || g.t_send[k] == 0) {
		fprintf(stderr, "sse_fanout: subscriber %d: unexpected change (percentage %d)\n", i,
		        s->ev_pct);
		return;
	}
	if (g.lat[(size_t)i * (size_t)g.nchanges + (size_t)k] < 0) {
		g.lat[(size_t)i * (size_t)g.nchanges + (size_t)k] = t - g.t_send[k];
		g.got[k]++;
	}
}

static void sub_line(int i, double t)
{
	struct sub *s = &g.subs[i];
	const char *l = s->line;
	size_t n = s->linelen;

	if (n && l[n - 1] == '\r')
		n--;
	if (n == 0) {
		sub_event(i, t);
		s->ev_change = 0;
		s->ev_pct = -1;
		return;
	}
	if (n >= 6 && memcmp(l, "event:", 6) == 0) {
		const char *v = l + 6;
		size_t vn = n - 6;

		if (vn && *v == ' ')
			v++, vn--;
		if (vn == 7 && memcmp(v, "ruleset", 7) == 0 && !s->got_ruleset) {
			s->got_ruleset = 1;
			g.with_ruleset++;
		}
		s->ev_change = vn == 6 && memcmp(v, "change", 6) == 0;
	} else if (n >= 5 && memcmp(l, "data:", 5) == 0) {
		s->ev_pct = data_percentage(l, n);
	}
}

/* Decoded stream bytes -> lines -> events. */
static void sub_feed(int i, const char *p, size_t n, double t)
{
	struct sub *s = &g.subs[i];

	while (n) {
		const char *nl = memchr(p, '\n', n);
		size_t take = nl ? (size_t)(nl - p) : n;
		size_t room = LINE_MAX_LEN - s->linelen;
		size_t keep = take < room ? take : room;

		memcpy(s->line + s->linelen, p, keep);
		s->linelen += keep;
		if (!nl)
			return;
		sub_line(i, t);
		s->linelen = 0;
		p += take + 1;
		n -= take + 1;
	}
}

/* Raw socket bytes: response head, then chunked framing. */
static void sub_input(int i, const char *p, size_t n, double t)
{
	struct sub *s = &g.subs[i];

	while (n && s->phase != SUB_DEAD) {
		switch (s->phase) {
		case SUB_HEAD: {
			size_t take = n < HEAD_MAX - s->headlen ? n : HEAD_MAX - s->headlen;
			char *end;

			memcpy(s->head + s->headlen, p, take);
			end = memmem(s->head, s->headlen + take, "\r\n\r\n", 4);
			if (!end) {
				s->headlen += take;
				p += take, n -= take;
				if (s->headlen == HEAD_MAX)
					sub_kill(s, "response head too long");
				break;
			}
			/* consumed: up to the blank line */
			take = (size_t)(end + 4 - s->head) - s->headlen;
			s->headlen = (size_t)(end + 4 - s->head);
			p += take, n -= take;
			if (s->headlen < 12 || memcmp(s->head + 9, "200", 3) != 0) {
				sub_kill(s, "stream answered without 200");
				break;
			}
			s->phase =
			    memmem(s->head, s->headlen, "chunked", 7) ? SUB_CHUNK_SIZE : SUB_RAW;
			break;
		}
		case SUB_CHUNK_SIZE: {
			/* hex digits, then an optional ";ext" and CRLF: sum the digits as they come */
			char c = *p++;
			int d = c >= '0' && c <= '9'   ? c - '0'
			        : c >= 'a' && c <= 'f' ? c - 'a' + 10
			        : c >= 'A' && c <= 'F' ? c - 'A' + 10
			                               : -1;

			n--;
			if (c == '\n') {
				if (!s->size_digits || s->chunk_left == 0) {
					sub_kill(s, s->size_digits ? "stream ended"
					                           : "bad chunk size line");
					break;
				}
				s->size_digits = 0;
				s->size_ext = 0;
				s->phase = SUB_CHUNK_DATA;
			} else if (d >= 0 && !s->size_ext) {
				if (++s->size_digits > 8) {
					sub_kill(s, "chunk too large");
					break;
				}
				s->chunk_left = s->chunk_left * 16 + (size_t)d;
			} else {
				s->size_ext = 1;
			}
			break;
		}
		case SUB_CHUNK_DATA: {
			size_t take = n < s->chunk_left ? n : s->chunk_left;

			sub_feed(i, p, take, t);
			p += take, n -= take;
			s->chunk_left -= take;
			if (s->chunk_left == 0) {
				s->phase = SUB_CHUNK_CRLF;
				s->chunk_left = 2;
			}
			break;
		}
		case SUB_CHUNK_CRLF: {
			size_t take = n < s->chunk_left ? n : s->chunk_left;

			p += take, n -= take;
			s->chunk_left -= take;
			if (s->chunk_left == 0)
				s->phase = SUB_CHUNK_SIZE; /* chunk_left is 0 for the next size */
			break;
		}
		case SUB_RAW:
			sub_feed(i, p, n, t);
			n = 0;
			break;
		case SUB_DEAD:
			break;
		}
	}
}

static void sub_readable(int i)
{
	static char buf[READ_BUF];
	struct sub *s = &g.subs[i];

	for (int rounds = 0; rounds < 64 && s->phase != SUB_DEAD; rounds++) {
		ssize_t r = read(s->fd, buf, sizeof(buf));

		if (r == -1) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			sub_kill(s, strerror(errno));
			return;
		}
		if (r == 0) {
			sub_kill(s, "closed by the server");
			return;
		}
		sub_input(i, buf, (size_t)r, now_ms());
	}
}

/* The change connection: collect a response, note when it is complete. */
static void change_readable(void)
{
	for (int rounds = 0; rounds < 64; rounds++) {
		ssize_t r = read(g.cfd, g.cbuf + g.clen, sizeof(g.cbuf) - 1 - g.clen);
		char *end, *cl;
		size_t body = 0, headlen;

		if (r == -1) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			fprintf(stderr, "sse_fanout: change connection: %s\n", strerror(errno));
			exit(1);
		}
		if (r == 0) {
			fprintf(stderr, "sse_fanout: change connection closed\n");
			exit(1);
		}
		g.clen += (size_t)r;
		g.cbuf[g.clen] = '\0';
		end = strstr(g.cbuf, "\r\n\r\n");
		if (!end) {
			if (g.clen == sizeof(g.cbuf) - 1) {
				fprintf(stderr, "sse_fanout: change response head too long\n");
				exit(1);
			}
			continue;
		}
		headlen = (size_t)(end + 4 - g.cbuf);
		cl = strcasestr(g.cbuf, "\r\ncontent-length:");
		if (cl && cl < end)
			body = (size_t)strtoul(cl + 17, NULL, 10);
		if (g.clen < headlen + body) {
			if (g.clen == sizeof(g.cbuf) - 1) {
				fprintf(stderr, "sse_fanout: change response too long\n");
				exit(1);
			}
			continue;
		}
		if (strncmp(g.cbuf + 9, "200", 3) != 0) {
			fprintf(stderr, "sse_fanout: change %d answered: %.*s\n", g.cur_change,
			        (int)g.clen, g.cbuf);
			exit(1);
		}
		g.t_ack[g.cur_change] = now_ms() - g.t_send[g.cur_change];
		g.acked = 1;
		g.clen = 0;
		return;
	}
}

static void poll_once(int timeout_ms)
{
	struct epoll_event evs[256];
	int n = epoll_wait(g.ep, evs, 256, timeout_ms);

	for (int j = 0; j < n; j++) {
		uint32_t id = evs[j].data.u32;

		if (id == UINT32_MAX) {
			change_readable();
		} else if (evs[j].events & EPOLLOUT) {
			sub_send_request((int)id);
		} else {
			sub_readable((int)id);
		}
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double pct(const double *v, size_t n, double q)
{
	size_t i = (size_t)(q * (double)(n - 1) + 0.5);

	return n ? v[i < n ? i : n - 1] : 0;
}

int main(int argc, char **argv)
{
	long port = 0, nsubs = 1000, nchanges = 20, timeout_ms = 5000, v;
	struct rlimit rl;
	double t0, t_ready, deadline;
	int opened = 0, rc = 1;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!val)
			goto usage;
		i++;
		if (strcmp(a, "--port") == 0 && parse_long(val, 1, 65535, &v) == 0)
			port = v;
		else if (strcmp(a, "--subscribers") == 0 && parse_long(val, 1, MAX_SUBS, &v) == 0)
			nsubs = v;
		else if (strcmp(a, "--changes") == 0 && parse_long(val, 1, MAX_CHANGES, &v) == 0)
			nchanges = v;
		else if (strcmp(a, "--timeout-ms") == 0 && parse_long(val, 100, 600000, &v) == 0)
			timeout_ms = v;
		else if (strcmp(a, "--token") == 0)
			g.token = val;
		else if (strcmp(a, "--flag") == 0)
			g.flag = val;
		else
			goto usage;
	}
	if (!port || !g.token || !g.flag || strlen(g.token) > 256 || strlen(g.flag) > 64)
		goto usage;
	g.port = (int)port;
	g.nsubs = (int)nsubs;
	g.nchanges = (int)nchanges;
	g.cur_change = -1;

	/* one fd per subscriber, the change connection, epoll, stdio, slack */
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return 1;
	if (rl.rlim_cur < (rlim_t)nsubs + 64) {
		rl.rlim_cur = (rlim_t)nsubs + 64;
		if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max) {
			fprintf(stderr, "sse_fanout: RLIMIT_NOFILE hard limit %lu < %ld needed\n",
			        (unsigned long)rl.rlim_max, nsubs + 64);
			return 1;
		}
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1) {
			perror("sse_fanout: setrlimit");
			return 1;
		}
	}

	g.subs = calloc((size_t)nsubs, sizeof(*g.subs));
	g.lat = malloc((size_t)nsubs * (size_t)nchanges * sizeof(*g.lat));
	g.ep = epoll_create1(EPOLL_CLOEXEC);
	if (!g.subs || !g.lat || g.ep == -1) {
		fprintf(stderr, "sse_fanout: out of memory or epoll: %s\n", strerror(errno));
		return 1;
	}
	for (size_t j = 0; j < (size_t)nsubs * (size_t)nchanges; j++)
		g.lat[j] = -1;

	/* connect, CONNECT_WINDOW waiting for their ruleset at a time */
	t0 = now_ms();
	deadline = t0 + 60000;
	while ((g.with_ruleset + g.dead < g.nsubs) && now_ms() < deadline) {
		while (opened < g.nsubs && opened - g.with_ruleset - g.dead < CONNECT_WINDOW) {
			if (sub_open(opened) == -1) {
				fprintf(stderr, "sse_fanout: connect %d: %s\n", opened,
				        strerror(errno));
				return 1;
			}
			opened++;
		}
		poll_once(50);
	}
	t_ready = now_ms();
	if (g.with_ruleset < g.nsubs) {
		fprintf(stderr, "sse_fanout: %d of %d subscribers got their ruleset (%d dropped)\n",
		        g.with_ruleset, g.nsubs, g.dead);
		return 1;
	}

	g.cfd = connect_to(g.port, 0);
	if (g.cfd == -1) {
		perror("sse_fanout: change connection");
		return 1;
	}
	{
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};

		fcntl(g.cfd, F_SETFL, fcntl(g.cfd, F_GETFL) | O_NONBLOCK);
		epoll_ctl(g.ep, EPOLL_CTL_ADD, g.cfd, &ev);
	}

	for (int k = 0; k < g.nchanges; k++) {
		char body[160], req[768];
		int bn, rn;
		double end;

		bn = snprintf(body, sizeof(body), "{\"feature\":\"%s\",\"percentage\":%d}", g.flag,
		              P0 + k);
		rn = snprintf(req, sizeof(req),
		              "POST /v1/feature-flags HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
		              "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
		              "Content-Length: %d\r\n\r\n%s",
		              g.port, g.token, bn, body);
		if (bn <= 0 || rn <= 0 || (size_t)rn >= sizeof(req))
			return 1;
		g.cur_change = k;
		g.acked = 0;
		g.t_send[k] = now_ms();
		if (write_all(g.cfd, req, (size_t)rn) == -1) {
			perror("sse_fanout: change request");
			return 1;
		}
		end = g.t_send[k] + (double)timeout_ms;
		while ((!g.acked || g.got[k] + g.dead < g.nsubs) && now_ms() < end)
			poll_once(10);
		if (!g.acked) {
			fprintf(stderr, "sse_fanout: change %d not acknowledged in %ld ms\n", k,
			        timeout_ms);
			return 1;
		}
		/* a short pause so the changes are separate bursts, not a queue */
		end = now_ms() + 20;
		while (now_ms() < end)
			poll_once(5);
	}

	{
		size_t n = 0, missing = 0, total = (size_t)g.nsubs * (size_t)g.nchanges;
		double *all = malloc(total * sizeof(*all)), acks[MAX_CHANGES];

		if (!all)
			return 1;
		for (size_t j = 0; j < total; j++) {
			if (g.lat[j] >= 0)
				all[n++] = g.lat[j];
			else
				missing++;
		}
		qsort(all, n, sizeof(*all), cmp_double);
		memcpy(acks, g.t_ack, sizeof(double) * (size_t)g.nchanges);
		qsort(acks, (size_t)g.nchanges, sizeof(double), cmp_double);
		printf("subscribers %d changes %d p50 %.2f ms p99 %.2f ms max %.2f ms "
		       "samples %zu missing %zu dropped %d ack_p50 %.2f ms connect_all %.0f ms\n",
		       g.nsubs, g.nchanges, pct(all, n, 0.50), pct(all, n, 0.99),
		       n ? all[n - 1] : 0.0, n, missing, g.dead, pct(acks, (size_t)g.nchanges, 0.5),
		       t_ready - t0);
		rc = missing || g.dead ? 1 : 0;
		free(all);
	}
	for (int i = 0; i < g.nsubs; i++)
		if (g.subs[i].phase != SUB_DEAD)
			close(g.subs[i].fd);
	close(g.cfd);
	close(g.ep);
	free(g.subs);
	free(g.lat);
	return rc;

usage:
	fprintf(stderr,
	        "usage: sse_fanout --port ADMIN_PORT --token TOKEN --flag KEY "
	        "[--subscribers N (1..%d)] [--changes C (1..%d)] [--timeout-ms T]\n",
	        MAX_SUBS, MAX_CHANGES);
	return 2;
}
