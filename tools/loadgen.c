/*
 * loadgen - a small open-loop HTTP/1.1 load generator for `make demo` and the
 * e2e tests.
 *
 *   loadgen --url http://127.0.0.1:8080/path [--rate N] [--duration S]
 *           [--connections C] [--header NAME] [--keys K] [--seed N]
 *           [--timeout-ms MS] [--report-ms MS] [--by-header NAME]
 *
 * Open loop: request i is due at start + i/rate whatever the responses do.
 * A due request goes to an idle keep-alive connection; when none is idle a
 * new one is opened (at most --connections); when that cap is reached the
 * request is counted as late and queued until a connection frees up (the
 * queue holds at most 2^20 requests; beyond it they are counted as unsent).
 * One request in flight per connection, no pipelining.  Each request is a
 * GET carrying `NAME: user-<k>`, k drawn from [0, --keys) by a PRNG seeded
 * with --seed, so a sticky split sees many units.
 *
 * Latency is measured from the moment a request was due (dispatched by the
 * scheduler) to its last response byte, so a late request's wait in the
 * queue is included (no coordinated omission).  A request fails (counted in
 * errors) on a connect error, a reset, a malformed response, or when it is
 * not complete after --timeout-ms.
 *
 * The run ends after --duration seconds (0: at SIGINT/SIGTERM).  Requests in
 * flight then get up to --timeout-ms to finish (1 s after a signal; a second
 * signal ends at once).  Output, on stdout, one JSON line:
 *   {"sent","completed","errors","late","unsent","in_flight",
 *    "error_kinds":{"connect","timeout","reset","parse","other"},
 *    "status":{"200":n,...}, "by_header":{"v1":n,"":n,...},
 *    "latency_ms":{"p50","p90","p99","max"}, "connections",
 *    "duration_s","rate_achieved"}
 * where sent = completed + errors + in_flight, duration_s is the sending
 * phase and rate_achieved = sent / duration_s.  by_header counts completed
 * responses by the value of --by-header ("" when absent; at most 32 distinct
 * values of at most 64 bytes are kept, the rest go to "(other)").  With
 * --report-ms, each interval's counts go to stderr as one JSON line.
 * Bad options: usage on stderr, exit 2.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <jansson.h>

#include "core/loop.h"
#include "core/str.h"
#include "http/client.h"
#include "metrics/hist.h"

#define LG_STATUS_MAX 1000    /* status codes counted: 0..999 */
#define LG_VALUES     32      /* distinct --by-header values kept */
#define LG_VALUE_LEN  64      /* bytes kept of each value */
#define LG_PENDING    1048576 /* late requests waiting for a connection */
#define LG_MAX_CONNS  10000
#define LG_URL_LEN    4096

struct opts {
	const char *url;
	double rate;
	double duration_s;
	unsigned long long connections;
	const char *header;
	unsigned long long keys;
	unsigned long long seed;
	unsigned long long timeout_ms;
	unsigned long long report_ms;
	const char *by_header;
};

struct counts {
	uint64_t sent, completed, errors, late, unsent;
	uint64_t err_connect, err_timeout, err_reset, err_parse, err_other;
	uint64_t status[LG_STATUS_MAX];
	uint64_t by_value[LG_VALUES + 1]; /* [LG_VALUES]: "(other)" */
	struct hist lat;
};

struct conn {
	struct http_client *cl;
	struct loop_timer timeout;
	uint64_t due_us; /* when the request in flight was due */
	int busy;        /* a request is in flight */
	int slot;        /* index in lg.conns */
	int idle_slot;   /* index in lg.idle, -1 when not idle */
};

enum { PH_RUN = 0, PH_DRAIN, PH_DONE };

static struct {
	struct opts o;
	struct loop *loop;
	struct sockaddr_storage sa;
	socklen_t salen;
	char target[LG_URL_LEN];
	struct http_client_config ccfg;

	struct conn **conns, **idle;
	unsigned nconns, nidle, peak, inflight;

	uint64_t *pend; /* ring of due times of late requests */
	size_t pend_head, pend_len, pend_size;

	struct loop_timer tick, end, drain, report;
	int phase;
	uint64_t start_us, end_us, last_report_us;
	uint64_t scheduled, total; /* total 0: unbounded */
	double interval_us;
	unsigned long long rng;

	char values[LG_VALUES][LG_VALUE_LEN];
	size_t value_len[LG_VALUES];
	unsigned nvalues;

	struct counts cur, prev;
	uint64_t max_us, ival_max_us;
} lg;

/* xorshift64*: the key sequence is fixed by --seed */
static uint64_t rng_next(void)
{
	lg.rng ^= lg.rng >> 12;
	lg.rng ^= lg.rng << 25;
	lg.rng ^= lg.rng >> 27;
	return lg.rng * 2685821657736338717ULL;
}

/* --- bookkeeping --------------------------------------------------------- */

static void idle_push(struct conn *c)
{
	c->idle_slot = (int)lg.nidle;
	lg.idle[lg.nidle++] = c;
}

static struct conn *idle_pop(void)
{
	struct conn *c = lg.idle[--lg.nidle];

	c->idle_slot = -1;
	return c;
}

static void idle_remove(struct conn *c)
{
	struct conn *last = lg.idle[--lg.nidle];

	lg.idle[c->idle_slot] = last;
	last->idle_slot = c->idle_slot;
	c->idle_slot = -1;
}

static int pend_push(uint64_t due_us)
{
	if (lg.pend_len == lg.pend_size) {
		size_t nsize = lg.pend_size ? lg.pend_size * 2 : 1024, i;
		uint64_t *n;

		if (nsize > LG_PENDING)
			return -ENOBUFS;
		n = malloc(nsize * sizeof(*n));
		if (!n)
			return -ENOMEM;
		for (i = 0; i < lg.pend_len; i++)
			n[i] = lg.pend[(lg.pend_head + i) % lg.pend_size];
		free(lg.pend);
		lg.pend = n;
		lg.pend_size = nsize;
		lg.pend_head = 0;
	}
	lg.pend[(lg.pend_head + lg.pend_len) % lg.pend_size] = due_us;
	lg.pend_len++;
	return 0;
}

static uint64_t pend_pop(void)
{
	uint64_t v = lg.pend[lg.pend_head];

	lg.pend_head = (lg.pend_head + 1) % lg.pend_size;
	lg.pend_len--;
	return v;
}

static void count_error(int err)
{
	lg.cur.errors++;
	switch (err) {
	case -ECONNREFUSED:
	case -EHOSTUNREACH:
	case -ENETUNREACH:
	case -EADDRNOTAVAIL:
		lg.cur.err_connect++;
		break;
	case -ETIMEDOUT:
		lg.cur.err_timeout++;
		break;
	case -ECONNRESET:
	case -EPIPE:
		lg.cur.err_reset++;
		break;
	case -EPROTO:
		lg.cur.err_parse++;
		break;
	default:
		lg.cur.err_other++;
		break;
	}
}

static void check_drained(void)
{
	if (lg.phase == PH_DRAIN && lg.inflight == 0) {
		lg.phase = PH_DONE;
		loop_stop(lg.loop);
	}
}

/* Index of the by-header value v, or LG_VALUES for "(other)". */
static unsigned value_index(const struct str *v)
{
	size_t len = v ? v->len : 0;
	char tmp[LG_VALUE_LEN];
	unsigned i;

	if (len > LG_VALUE_LEN)
		len = LG_VALUE_LEN;
	/* JSON keys must be valid UTF-8: keep printable ASCII only */
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)v->p[i];

		tmp[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
	}
	for (i = 0; i < lg.nvalues; i++)
		if (lg.value_len[i] == len && memcmp(lg.values[i], tmp, len) == 0)
			return i;
	if (lg.nvalues == LG_VALUES)
		return LG_VALUES;
	memcpy(lg.values[lg.nvalues], tmp, len);
	lg.value_len[lg.nvalues] = len;
	return lg.nvalues++;
}

/* --- requests ------------------------------------------------------------ */

static void on_complete(struct http_client *cl, const struct http_msg *resp, void *data);
static void on_close(struct http_client *cl, int err, void *data);

static const struct http_client_ops lg_ops = {
    .on_complete = on_complete,
    .on_close = on_close,
};

static void timeout_cb(struct loop *loop, struct loop_timer *t)
{
	struct conn *c = t->data;

	if (!c->busy)
		return;
	c->busy = 0;
	lg.inflight--;
	count_error(-ETIMEDOUT);
	http_client_close(c->cl); /* on_close frees c at the end of the turn */
	check_drained();
}

static struct conn *conn_open(void)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->idle_slot = -1;
	loop_timer_init(&c->timeout, timeout_cb, c);
	c->cl = http_client_connect_sa(lg.loop, (struct sockaddr *)&lg.sa, lg.salen, &lg.ccfg,
	                               &lg_ops, c);
	if (!c->cl) {
		free(c);
		return NULL;
	}
	c->slot = (int)lg.nconns;
	lg.conns[lg.nconns++] = c;
	if (lg.nconns > lg.peak)
		lg.peak = lg.nconns;
	return c;
}

/* Sends the next request on c (idle, or still connecting). */
static void conn_send(struct conn *c, uint64_t due_us)
{
	char val[32];
	struct http_header h;
	int n, rc;

	n = snprintf(val, sizeof(val), "user-%llu", (unsigned long long)(rng_next() % lg.o.keys));
	h.name = str_c(lg.o.header);
	h.value = str_make(val, (size_t)n);
	lg.cur.sent++;
	rc = http_client_request(c->cl, STR_LIT("GET"), str_c(lg.target), &h, 1, NULL, 0);
	if (rc != 0) {
		count_error(rc);
		http_client_close(c->cl);
		return;
	}
	c->busy = 1;
	c->due_us = due_us;
	lg.inflight++;
	loop_timer_start(lg.loop, &c->timeout, lg.o.timeout_ms);
}

/* A request is due now: send it, or queue it as late. */
static void dispatch(uint64_t due_us)
{
	struct conn *c;

	if (lg.nidle > 0) {
		conn_send(idle_pop(), due_us);
		return;
	}
	if (lg.nconns < lg.o.connections) {
		c = conn_open();
		if (!c) {
			lg.cur.sent++;
			count_error(-errno);
			return;
		}
		conn_send(c, due_us);
		return;
	}
	lg.cur.late++;
	if (pend_push(due_us) != 0)
		lg.cur.unsent++;
}

static void on_complete(struct http_client *cl, const struct http_msg *resp, void *data)
{
	struct conn *c = data;
	uint64_t lat;

	if (!c->busy)
		return;
	lat = clock_mono_us() - c->due_us;
	c->busy = 0;
	lg.inflight--;
	loop_timer_stop(lg.loop, &c->timeout);
	lg.cur.completed++;
	lg.cur.status[resp->status >= 0 && resp->status < LG_STATUS_MAX ? resp->status : 0]++;
	lg.cur.by_value[value_index(http_msg_header(resp, lg.o.by_header))]++;
	hist_add(&lg.cur.lat, lat);
	if (lat > lg.max_us)
		lg.max_us = lat;
	if (lat > lg.ival_max_us)
		lg.ival_max_us = lat;
	if (http_client_reusable(cl)) {
		if (lg.phase == PH_RUN && lg.pend_len > 0)
			conn_send(c, pend_pop());
		else
			idle_push(c);
	}
	check_drained();
}

static void on_close(struct http_client *cl, int err, void *data)
{
	struct conn *c = data, *last;

	loop_timer_stop(lg.loop, &c->timeout);
	if (c->busy) {
		c->busy = 0;
		lg.inflight--;
		count_error(err ? err : -ECONNRESET);
	}
	if (c->idle_slot >= 0)
		idle_remove(c);
	last = lg.conns[--lg.nconns];
	lg.conns[c->slot] = last;
	last->slot = c->slot;
	free(c);
	/* a late request may take the freed connection slot */
	if (lg.phase == PH_RUN && lg.pend_len > 0) {
		uint64_t due = pend_pop();
		struct conn *n = conn_open();

		if (n) {
			conn_send(n, due);
		} else {
			lg.cur.sent++;
			count_error(-errno);
		}
	}
	check_drained();
}

/* --- scheduling ---------------------------------------------------------- */

/* Dispatches the requests due by now (at least up to request number upto). */
static void dispatch_due(uint64_t now, uint64_t upto)
{
	uint64_t due = (uint64_t)((double)(now - lg.start_us) / lg.interval_us) + 1;

	if (due < upto)
		due = upto;
	if (lg.total && due > lg.total)
		due = lg.total;
	while (lg.scheduled < due && lg.phase == PH_RUN) {
		lg.scheduled++;
		dispatch(now);
	}
}

static void tick_cb(struct loop *loop, struct loop_timer *t)
{
	uint64_t now = clock_mono_us(), next, after;

	dispatch_due(now, 0);
	if (lg.phase != PH_RUN || (lg.total && lg.scheduled >= lg.total))
		return;
	next = lg.start_us + (uint64_t)ceil((double)lg.scheduled * lg.interval_us);
	after = next > now ? (next - now + 999) / 1000 : 1;
	/* never 0: a timer re-armed for "now" would run again in the same turn */
	loop_timer_start(loop, t, after ? after : 1);
}

static void finish_sending(uint64_t drain_ms)
{
	if (lg.phase != PH_RUN)
		return;
	lg.phase = PH_DRAIN;
	lg.end_us = clock_mono_us();
	loop_timer_stop(lg.loop, &lg.tick);
	loop_timer_stop(lg.loop, &lg.end);
	lg.cur.unsent += lg.pend_len;
	lg.pend_len = 0;
	loop_timer_start(lg.loop, &lg.drain, drain_ms);
	check_drained();
}

static void end_cb(struct loop *loop, struct loop_timer *t)
{
	/* the timers have millisecond steps: the last requests may still be due */
	dispatch_due(clock_mono_us(), lg.total);
	finish_sending(lg.o.timeout_ms);
}

static void drain_cb(struct loop *loop, struct loop_timer *t)
{
	lg.phase = PH_DONE;
	loop_stop(loop);
}

static void on_signal(struct loop *loop, int signo, void *data)
{
	if (lg.phase == PH_RUN) {
		finish_sending(lg.o.timeout_ms < 1000 ? lg.o.timeout_ms : 1000);
		return;
	}
	lg.phase = PH_DONE;
	loop_stop(loop);
}

/* --- output -------------------------------------------------------------- */

static double ms(uint64_t us)
{
	return (double)us / 1000.0;
}

/* A bucket's midpoint may lie above the largest value seen: clamp it. */
static uint64_t quantile(const struct hist *h, double q, uint64_t max_us)
{
	uint64_t v = hist_quantile(h, q);

	return v < max_us ? v : max_us;
}

static void json_set_u64(json_t *o, const char *k, uint64_t v)
{
	json_object_set_new(o, k, json_integer((json_int_t)v));
}

/* Adds the counts of c (cumulative or an interval) to o. */
static void put_counts(json_t *o, const struct counts *c, uint64_t max_us)
{
	json_t *st = json_object(), *bh = json_object(), *lat = json_object(), *ek = json_object();
	char key[16];
	unsigned i;

	json_set_u64(o, "sent", c->sent);
	json_set_u64(o, "completed", c->completed);
	json_set_u64(o, "errors", c->errors);
	json_set_u64(o, "late", c->late);
	json_set_u64(o, "unsent", c->unsent);
	json_set_u64(ek, "connect", c->err_connect);
	json_set_u64(ek, "timeout", c->err_timeout);
	json_set_u64(ek, "reset", c->err_reset);
	json_set_u64(ek, "parse", c->err_parse);
	json_set_u64(ek, "other", c->err_other);
	json_object_set_new(o, "error_kinds", ek);
	for (i = 0; i < LG_STATUS_MAX; i++) {
		if (!c->status[i])
			continue;
		snprintf(key, sizeof(key), "%u", i);
		json_set_u64(st, key, c->status[i]);
	}
	json_object_set_new(o, "status", st);
	for (i = 0; i < lg.nvalues; i++) {
		if (c->by_value[i])
			json_object_setn_new(bh, lg.values[i], lg.value_len[i],
			                     json_integer((json_int_t)c->by_value[i]));
	}
	if (c->by_value[LG_VALUES])
		json_set_u64(bh, "(other)", c->by_value[LG_VALUES]);
	json_object_set_new(o, "by_header", bh);
	json_object_set_new(lat, "p50", json_real(ms(quantile(&c->lat, 0.50, max_us))));
	json_object_set_new(lat, "p90", json_real(ms(quantile(&c->lat, 0.90, max_us))));
	json_object_set_new(lat, "p99", json_real(ms(quantile(&c->lat, 0.99, max_us))));
	json_object_set_new(lat, "max", json_real(ms(max_us)));
	json_object_set_new(o, "latency_ms", lat);
}

static void print_json(FILE *f, json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12));

	if (s) {
		fputs(s, f);
		fputc('\n', f);
		fflush(f);
		free(s);
	}
	json_decref(o);
}

/* Prints the counts since the last report to stderr. */
static void report_interval(void)
{
	uint64_t now = clock_mono_us();
	struct counts *d = malloc(sizeof(*d));
	json_t *o = json_object();
	unsigned i;

	if (d) {
		d->sent = lg.cur.sent - lg.prev.sent;
		d->completed = lg.cur.completed - lg.prev.completed;
		d->errors = lg.cur.errors - lg.prev.errors;
		d->late = lg.cur.late - lg.prev.late;
		d->unsent = lg.cur.unsent - lg.prev.unsent;
		d->err_connect = lg.cur.err_connect - lg.prev.err_connect;
		d->err_timeout = lg.cur.err_timeout - lg.prev.err_timeout;
		d->err_reset = lg.cur.err_reset - lg.prev.err_reset;
		d->err_parse = lg.cur.err_parse - lg.prev.err_parse;
		d->err_other = lg.cur.err_other - lg.prev.err_other;
		for (i = 0; i < LG_STATUS_MAX; i++)
			d->status[i] = lg.cur.status[i] - lg.prev.status[i];
		for (i = 0; i <= LG_VALUES; i++)
			d->by_value[i] = lg.cur.by_value[i] - lg.prev.by_value[i];
		hist_delta(&d->lat, &lg.prev.lat, &lg.cur.lat);
		json_object_set_new(o, "t_s", json_real((double)(now - lg.start_us) / 1e6));
		json_object_set_new(o, "interval_s",
		                    json_real((double)(now - lg.last_report_us) / 1e6));
		put_counts(o, d, lg.ival_max_us);
		json_set_u64(o, "in_flight", lg.inflight);
		print_json(stderr, o);
		free(d);
	} else {
		json_decref(o);
	}
	lg.prev = lg.cur;
	lg.ival_max_us = 0;
	lg.last_report_us = now;
}

static void report_cb(struct loop *loop, struct loop_timer *t)
{
	report_interval();
	loop_timer_start(loop, t, lg.o.report_ms);
}

static void print_summary(void)
{
	json_t *o = json_object();
	uint64_t end = lg.end_us ? lg.end_us : clock_mono_us();
	double dur = (double)(end - lg.start_us) / 1e6;

	put_counts(o, &lg.cur, lg.max_us);
	json_set_u64(o, "in_flight", lg.inflight);
	json_set_u64(o, "connections", lg.peak);
	json_object_set_new(o, "duration_s", json_real(dur));
	json_object_set_new(o, "rate_achieved",
	                    json_real(dur > 0 ? (double)lg.cur.sent / dur : 0.0));
	print_json(stdout, o);
}

/* --- options ------------------------------------------------------------- */

static void usage(FILE *f)
{
	fputs("usage: loadgen --url http://IP:PORT/PATH [--rate N] [--duration S]\n"
	      "               [--connections C] [--header NAME] [--keys K] [--seed N]\n"
	      "               [--timeout-ms MS] [--report-ms MS] [--by-header NAME]\n"
	      "  --url          target; http only, the host a numeric IP with a port\n"
	      "  --rate         requests per second, open loop (default 100)\n"
	      "  --duration     seconds to send, 0 = until SIGINT/SIGTERM (default 10)\n"
	      "  --connections  keep-alive connections at most (default 64)\n"
	      "  --header       request header carrying user-<k> (default x-user-id)\n"
	      "  --keys         distinct k values (default 10000)\n"
	      "  --seed         PRNG seed for k (default 1)\n"
	      "  --timeout-ms   per request (default 5000)\n"
	      "  --report-ms    print interval counts to stderr every MS (default 0: never)\n"
	      "  --by-header    response header to count values of (default X-Upstream-Version)\n",
	      f);
}

static int parse_u64(const char *s, unsigned long long lo, unsigned long long hi,
                     unsigned long long *out)
{
	if (str_to_u64(str_c(s), out) != 0 || *out < lo || *out > hi)
		return -1;
	return 0;
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
	if (str_to_double(str_c(s), out) != 0 || *out < lo || *out > hi)
		return -1;
	return 0;
}

/* RFC 9110 token characters, for header names. */
static int is_token(const char *s)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";

	if (!*s)
		return 0;
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= 'A' && ch <= 'Z') || (ch && strchr(extra, ch))))
			return 0;
	}
	return 1;
}

/* http://IP:PORT[/path][?query] -> lg.sa and lg.target. */
static int parse_url(const char *url)
{
	const char *hp, *rest, *colon, *h, *hend;
	char host[64];
	size_t hl, i;
	unsigned long long port;

	if (strncmp(url, "http://", 7) != 0)
		return -1;
	hp = url + 7;
	rest = hp + strcspn(hp, "/?#");
	if (hp[0] == '[') {
		hend = memchr(hp, ']', (size_t)(rest - hp));
		if (!hend || hend + 1 >= rest || hend[1] != ':')
			return -1;
		h = hp + 1;
		colon = hend + 1;
	} else {
		colon = memchr(hp, ':', (size_t)(rest - hp));
		if (!colon)
			return -1;
		h = hp;
		hend = colon;
	}
	hl = (size_t)(hend - h);
	if (hl == 0 || hl >= sizeof(host))
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	if (str_to_u64(str_make(colon + 1, (size_t)(rest - colon - 1)), &port) != 0 || port == 0 ||
	    port > 65535)
		return -1;
	memset(&lg.sa, 0, sizeof(lg.sa));
	if (hp[0] != '[' && inet_pton(AF_INET, host, &((struct sockaddr_in *)&lg.sa)->sin_addr)) {
		((struct sockaddr_in *)&lg.sa)->sin_family = AF_INET;
		((struct sockaddr_in *)&lg.sa)->sin_port = htons((uint16_t)port);
		lg.salen = sizeof(struct sockaddr_in);
	} else if (hp[0] == '[' &&
	           inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)&lg.sa)->sin6_addr)) {
		((struct sockaddr_in6 *)&lg.sa)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)&lg.sa)->sin6_port = htons((uint16_t)port);
		lg.salen = sizeof(struct sockaddr_in6);
	} else {
		return -1;
	}
	hl = strcspn(rest, "#"); /* the fragment is not sent */
	if (hl + 2 > sizeof(lg.target))
		return -1;
	i = 0;
	if (rest[0] != '/')
		lg.target[i++] = '/';
	memcpy(lg.target + i, rest, hl);
	lg.target[i + hl] = '\0';
	for (i = 0; lg.target[i]; i++) {
		unsigned char ch = (unsigned char)lg.target[i];

		if (ch <= 0x20 || ch >= 0x7f)
			return -1;
	}
	return 0;
}

static int parse_args(int argc, char **argv)
{
	static const struct option lopts[] = {
	    {"url", required_argument, NULL, 'u'},
	    {"rate", required_argument, NULL, 'r'},
	    {"duration", required_argument, NULL, 'd'},
	    {"connections", required_argument, NULL, 'c'},
	    {"header", required_argument, NULL, 'H'},
	    {"keys", required_argument, NULL, 'k'},
	    {"seed", required_argument, NULL, 's'},
	    {"timeout-ms", required_argument, NULL, 't'},
	    {"report-ms", required_argument, NULL, 'R'},
	    {"by-header", required_argument, NULL, 'b'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *bad = NULL;
	int ch;

	lg.o = (struct opts){NULL,  100.0, 10.0, 64, "x-user-id",
	                     10000, 1,     5000, 0,  "X-Upstream-Version"};
	while ((ch = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		switch (ch) {
		case 'u':
			lg.o.url = optarg;
			if (parse_url(optarg) != 0)
				bad = "--url must be http://IP:PORT[/path] with a numeric IP";
			break;
		case 'r':
			if (parse_double(optarg, 1e-3, 1e6, &lg.o.rate) != 0)
				bad = "--rate must be a number in (0, 1000000]";
			break;
		case 'd':
			if (parse_double(optarg, 0, 1e7, &lg.o.duration_s) != 0)
				bad = "--duration must be a number of seconds >= 0";
			break;
		case 'c':
			if (parse_u64(optarg, 1, LG_MAX_CONNS, &lg.o.connections) != 0)
				bad = "--connections must be 1..10000";
			break;
		case 'H':
			lg.o.header = optarg;
			if (!is_token(optarg))
				bad = "--header must be a header name";
			break;
		case 'k':
			if (parse_u64(optarg, 1, UINT64_MAX, &lg.o.keys) != 0)
				bad = "--keys must be a number >= 1";
			break;
		case 's':
			if (parse_u64(optarg, 0, UINT64_MAX, &lg.o.seed) != 0)
				bad = "--seed must be a number";
			break;
		case 't':
			if (parse_u64(optarg, 1, 3600000, &lg.o.timeout_ms) != 0)
				bad = "--timeout-ms must be 1..3600000";
			break;
		case 'R':
			if (parse_u64(optarg, 0, 3600000, &lg.o.report_ms) != 0)
				bad = "--report-ms must be 0..3600000";
			break;
		case 'b':
			lg.o.by_header = optarg;
			if (!is_token(optarg))
				bad = "--by-header must be a header name";
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
		if (bad)
			break;
	}
	if (!bad && optind < argc)
		bad = "unexpected argument";
	if (!bad && !lg.o.url)
		bad = "--url is required";
	if (bad) {
		fprintf(stderr, "loadgen: %s\n", bad);
		usage(stderr);
		return -1;
	}
	return 0;
}

/* --- main ---------------------------------------------------------------- */

int main(int argc, char **argv)
{
	unsigned i;
	int rc = 1;

	if (parse_args(argc, argv) != 0)
		return 2;
	lg.rng = lg.o.seed ? lg.o.seed : 1;
	lg.interval_us = 1e6 / lg.o.rate;
	if (lg.o.duration_s > 0) {
		double total = floor(lg.o.duration_s * lg.o.rate + 0.5);

		lg.total = total < 1 ? 1 : (uint64_t)total;
	}
	/* the request timeout is enforced here; the client's own timers are a backstop */
	lg.ccfg.connect_timeout_ms = (uint32_t)lg.o.timeout_ms + 1000;
	lg.ccfg.response_timeout_ms = (uint32_t)lg.o.timeout_ms + 1000;
	hist_init(&lg.cur.lat);
	hist_init(&lg.prev.lat);
	lg.conns = calloc(lg.o.connections, sizeof(*lg.conns));
	lg.idle = calloc(lg.o.connections, sizeof(*lg.idle));
	if (!lg.conns || !lg.idle) {
		fputs("loadgen: out of memory\n", stderr);
		goto out_free;
	}
	lg.loop = loop_new();
	if (!lg.loop) {
		fputs("loadgen: cannot create the event loop\n", stderr);
		goto out_free;
	}
	if (loop_signals(lg.loop, on_signal, NULL) != 0) {
		fputs("loadgen: cannot take signals\n", stderr);
		goto out_free_loop;
	}
	loop_timer_init(&lg.tick, tick_cb, NULL);
	loop_timer_init(&lg.end, end_cb, NULL);
	loop_timer_init(&lg.drain, drain_cb, NULL);
	loop_timer_init(&lg.report, report_cb, NULL);
	lg.start_us = lg.last_report_us = clock_mono_us();
	loop_update_time(lg.loop);
	loop_timer_start(lg.loop, &lg.tick, 0); /* the first request is due at once */
	if (lg.o.duration_s > 0)
		loop_timer_start(lg.loop, &lg.end, (uint64_t)ceil(lg.o.duration_s * 1000.0));
	if (lg.o.report_ms)
		loop_timer_start(lg.loop, &lg.report, lg.o.report_ms);
	if (loop_run(lg.loop) != 0) {
		fputs("loadgen: event loop failed\n", stderr);
		goto out_close;
	}
	if (!lg.end_us)
		lg.end_us = clock_mono_us();
	if (lg.o.report_ms)
		report_interval(); /* the last, partial interval */
	print_summary();
	rc = 0;

out_close:
	lg.phase = PH_DONE;
	loop_timer_stop(lg.loop, &lg.tick);
	loop_timer_stop(lg.loop, &lg.end);
	loop_timer_stop(lg.loop, &lg.drain);
	loop_timer_stop(lg.loop, &lg.report);
	for (i = 0; i < lg.nconns; i++) {
		loop_timer_stop(lg.loop, &lg.conns[i]->timeout);
		lg.conns[i]->busy = 0;
		http_client_close(lg.conns[i]->cl);
	}
	/* on_close runs (and frees each connection) at the end of this turn */
	while (lg.nconns > 0)
		if (loop_run_once(lg.loop, 0) != 0)
			break;
out_free_loop:
	loop_free(lg.loop);
out_free:
	free(lg.conns);
	free(lg.idle);
	free(lg.pend);
	return rc;
}
