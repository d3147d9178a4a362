/*
 * dwcp-sim - the customer's six DWCP components, simulated, for
 * examples/dwcp, `make demo-dwcp` and tests/e2e/test_dwcp.py.
 *
 *   dwcp-sim --instance COMPONENT:VERSION:HOST:PORT [--instance ...]
 *            [--latency VERSION:BASE_MS:TAIL_MS] [--seed N]
 *
 * COMPONENT is one of manager, compression, probft, bullshark, tpbft, maddpg;
 * each --instance is one listening port serving that component at that
 * version (the legacy v1 and the new v3 are separate instances).  One
 * process, one thread, one epoll loop (core/loop.h); nothing blocks.
 *
 * API requests (any path outside /metrics and /_sim/) answer
 *   200 {"component":"manager","version":"v3","path":"/x","status":"ok"}
 * after a latency drawn per request: BASE_MS plus an exponential tail of
 * mean TAIL_MS, per version (--latency; default 10:2 for every version),
 * deterministic under --seed.  A fault may turn a share of them into
 *   503 {"component":..,"version":..,"error":"FAULT"}.
 *
 * GET /metrics (Prometheus text) exports the instance's own component KPIs,
 * every series labelled {version="VERSION"}, healthy by default (the seed's
 * proven figures), plus the API counters of every component:
 *   manager      dwcp_manager_health_check_success_ratio        0.9995
 *                dwcp_manager_recovery_latency_p99_seconds      0.387
 *                dwcp_manager_memory_bytes                      2 GiB
 *                dwcp_manager_circuit_breaker_trips_total       0
 *   compression  dwcp_compression_accuracy                      0.9965
 *                dwcp_compression_overhead_ratio                0.048
 *   probft       dwcp_probft_consensus_time_p95_seconds         1.8
 *                dwcp_probft_byzantine_events_total             0
 *                dwcp_probft_consensus_failures_total           0
 *   bullshark    dwcp_bullshark_transactions_per_second         326000
 *                dwcp_bullshark_confirmation_latency_p99_seconds 0.95
 *   tpbft        dwcp_tpbft_latency_seconds                     0.045
 *                dwcp_tpbft_message_reduction_ratio             0.41
 *   maddpg       dwcp_maddpg_efficiency_gain_ratio              0.284
 *   every one    dwcp_api_requests_total{component,version}, dwcp_api_errors_total,
 *                dwcp_api_error_ratio (errors / requests over the last 10 s, 0
 *                without requests), dwcp_sim_fault{component,version,fault} (1
 *                per active fault)
 * The legacy v1 exports the same figures except the ones that measure the
 * new version's gain: tpbft message reduction 0, latency 0.057; maddpg
 * efficiency gain 0.
 *
 * Faults (any instance's port controls the whole process):
 *   POST /_sim/fault?fault=NAME[&version=V][&component=C][&percent=P][&latency_ms=MS]
 *   or the same keys as a JSON object body ({"fault":"accuracy_low","version":"v3"})
 *     accuracy_low        compression accuracy 0.985 (< 99%)
 *     consensus_failures  probft consensus failures: 4 at once, then +1 a second
 *                         (> 3 in 5 min from the first scrape on)
 *     throughput_low      bullshark 150000 tx/s (< 200K)
 *     memory_leak         manager memory grows 64 MiB a second
 *     integration_errors  manager and compression answer P% (default 2) of API
 *                         calls with 503
 *     cascading           probft, bullshark, tpbft and maddpg answer P% (default
 *                         1.5) with 503 and add MS (default 2) to every answer
 *     clear               ends every fault (of V / C when given) and empties
 *                         the error-ratio windows
 *   A fault applies to the instances of its components at version V (every
 *   version when absent; C narrows the components).  The answer is the status.
 *   GET /_sim/status: {"instances":[{"component","version","listen","requests",
 *   "errors","faults":{NAME:{"since_ms","percent","latency_ms"}}}]}.
 * Bad requests to /_sim/ answer 400/404/405 with {"error": "..."}.
 * This is a test tool: its HTTP parsing is lenient.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/str.h"

#define SIM_MAX_INSTANCES 64
#define SIM_MAX_LATENCIES 16
#define SIM_WINDOW_S      10   /* dwcp_api_error_ratio: the last 10 s */
#define SIM_BODY_CAP      4096 /* control request bodies */
#define SIM_BUF_CAP       (1u << 20)

enum comp { C_MANAGER, C_COMPRESSION, C_PROBFT, C_BULLSHARK, C_TPBFT, C_MADDPG, C_N };

static const char *const comp_names[C_N] = {"manager",   "compression", "probft",
                                            "bullshark", "tpbft",       "maddpg"};

enum fault {
	F_ACCURACY_LOW,
	F_CONSENSUS_FAILURES,
	F_THROUGHPUT_LOW,
	F_MEMORY_LEAK,
	F_INTEGRATION_ERRORS,
	F_CASCADING,
	F_N
};

static const char *const fault_names[F_N] = {"accuracy_low", "consensus_failures", "throughput_low",
                                             "memory_leak",  "integration_errors", "cascading"};

/* Which components each fault touches (a bit per enum comp). */
static const unsigned fault_comps[F_N] = {
    1u << C_COMPRESSION,
    1u << C_PROBFT,
    1u << C_BULLSHARK,
    1u << C_MANAGER,
    (1u << C_MANAGER) | (1u << C_COMPRESSION),
    (1u << C_PROBFT) | (1u << C_BULLSHARK) | (1u << C_TPBFT) | (1u << C_MADDPG),
};

struct fault_state {
	uint64_t since_ms; /* wall clock; 0 = off */
	double percent;    /* share of API calls answered 503 (errors faults) */
	unsigned latency_ms;
};

struct latency {
	char version[32];
	double base_ms, tail_ms;
};

struct instance {
	enum comp comp;
	char version[32];
	char listen[64];
	struct loop_io io;
	int fd;
	unsigned long long requests, errors;
	/* per-second ring for dwcp_api_error_ratio */
	uint64_t win_sec[SIM_WINDOW_S];
	unsigned long long win_req[SIM_WINDOW_S], win_err[SIM_WINDOW_S];
	struct fault_state faults[F_N];
};

struct conn {
	struct loop_io io;
	struct loop_defer d;
	struct loop_timer delay;
	struct instance *inst;
	struct buf in, out;
	int closed;
	int waiting; /* a delayed answer is pending; parse nothing more */
	int close_after;
	size_t body_left; /* API request body bytes still to discard */
	char path[256];
	int status;
	const char *error; /* the fault behind a 503 */
	struct conn *prev, *next;
};

static struct instance instances[SIM_MAX_INSTANCES];
static int n_instances;
static struct latency latencies[SIM_MAX_LATENCIES];
static int n_latencies;
static unsigned long long rng_state = 1;
static struct conn *conns;

/* xorshift64*: deterministic for a given --seed; in [0, 1) */
static double rng_next(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (double)((rng_state * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static int comp_parse(struct str s)
{
	for (int i = 0; i < C_N; i++)
		if (str_eq_c(s, comp_names[i]))
			return i;
	return -1;
}

static int fault_parse(struct str s)
{
	for (int i = 0; i < F_N; i++)
		if (str_eq_c(s, fault_names[i]))
			return i;
	return -1;
}

/* --- the KPIs ----------------------------------------------------------------------- */

static int fault_on(const struct instance *in, enum fault f)
{
	return in->faults[f].since_ms != 0;
}

/* Seconds since fault f started on in (0 when it is off). */
static double fault_age_s(const struct instance *in, enum fault f, uint64_t now_ms)
{
	if (!fault_on(in, f) || now_ms < in->faults[f].since_ms)
		return 0;
	return (double)(now_ms - in->faults[f].since_ms) / 1000.0;
}

static int is_legacy(const struct instance *in)
{
	return strcmp(in->version, "v1") == 0;
}

static void window_add(struct instance *in, uint64_t now_ms, int error)
{
	uint64_t sec = now_ms / 1000;
	unsigned slot = (unsigned)(sec % SIM_WINDOW_S);

	if (in->win_sec[slot] != sec) {
		in->win_sec[slot] = sec;
		in->win_req[slot] = in->win_err[slot] = 0;
	}
	in->win_req[slot]++;
	if (error)
		in->win_err[slot]++;
}

static double window_error_ratio(const struct instance *in, uint64_t now_ms)
{
	uint64_t sec = now_ms / 1000;
	unsigned long long req = 0, err = 0;

	for (int i = 0; i < SIM_WINDOW_S; i++) {
		if (in->win_sec[i] + SIM_WINDOW_S <= sec)
			continue; /* older than the window */
		req += in->win_req[i];
		err += in->win_err[i];
	}
	return req ? (double)err / (double)req : 0.0;
}

static void gauge(struct buf *b, const char *name, const char *type, const struct instance *in,
                  double v)
{
	buf_printf(b, "# TYPE %s %s\n%s{version=\"%s\"} %.12g\n", name, type, name, in->version, v);
}

/* The component's own series, then the API counters and the active faults. */
static void metrics_render(struct buf *b, const struct instance *in, uint64_t now_ms)
{
	switch (in->comp) {
	case C_MANAGER:
		gauge(b, "dwcp_manager_health_check_success_ratio", "gauge", in, 0.9995);
		gauge(b, "dwcp_manager_recovery_latency_p99_seconds", "gauge", in, 0.387);
		gauge(b, "dwcp_manager_memory_bytes", "gauge", in,
		      2147483648.0 + 67108864.0 * fault_age_s(in, F_MEMORY_LEAK, now_ms));
		gauge(b, "dwcp_manager_circuit_breaker_trips_total", "counter", in, 0);
		break;
	case C_COMPRESSION:
		gauge(b, "dwcp_compression_accuracy", "gauge", in,
		      fault_on(in, F_ACCURACY_LOW) ? 0.985 : 0.9965);
		gauge(b, "dwcp_compression_overhead_ratio", "gauge", in, 0.048);
		break;
	case C_PROBFT:
		gauge(b, "dwcp_probft_consensus_time_p95_seconds", "gauge", in, 1.8);
		gauge(b, "dwcp_probft_byzantine_events_total", "counter", in, 0);
		/* 4 at once (more than 3 by the first scrape), then +1 a second */
		gauge(b, "dwcp_probft_consensus_failures_total", "counter", in,
		      fault_on(in, F_CONSENSUS_FAILURES)
		          ? 4.0 + floor(fault_age_s(in, F_CONSENSUS_FAILURES, now_ms))
		          : 0.0);
		break;
	case C_BULLSHARK:
		gauge(b, "dwcp_bullshark_transactions_per_second", "gauge", in,
		      fault_on(in, F_THROUGHPUT_LOW) ? 150000 : 326000);
		gauge(b, "dwcp_bullshark_confirmation_latency_p99_seconds", "gauge", in, 0.95);
		break;
	case C_TPBFT:
		gauge(b, "dwcp_tpbft_latency_seconds", "gauge", in, is_legacy(in) ? 0.057 : 0.045);
		gauge(b, "dwcp_tpbft_message_reduction_ratio", "gauge", in,
		      is_legacy(in) ? 0 : 0.41);
		break;
	case C_MADDPG:
		gauge(b, "dwcp_maddpg_efficiency_gain_ratio", "gauge", in,
		      is_legacy(in) ? 0 : 0.284);
		break;
	default:
		break;
	}
	buf_printf(b,
	           "# TYPE dwcp_api_requests_total counter\n"
	           "dwcp_api_requests_total{component=\"%s\",version=\"%s\"} %llu\n"
	           "# TYPE dwcp_api_errors_total counter\n"
	           "dwcp_api_errors_total{component=\"%s\",version=\"%s\"} %llu\n"
	           "# TYPE dwcp_api_error_ratio gauge\n"
	           "dwcp_api_error_ratio{component=\"%s\",version=\"%s\"} %.12g\n"
	           "# TYPE dwcp_sim_fault gauge\n",
	           comp_names[in->comp], in->version, in->requests, comp_names[in->comp],
	           in->version, in->errors, comp_names[in->comp], in->version,
	           window_error_ratio(in, now_ms));
	for (int f = 0; f < F_N; f++)
		if (fault_on(in, (enum fault)f))
			buf_printf(
			    b, "dwcp_sim_fault{component=\"%s\",version=\"%s\",fault=\"%s\"} 1\n",
			    comp_names[in->comp], in->version, fault_names[f]);
}

/* --- connections ---------------------------------------------------------------------- */

static void conn_free(struct loop *loop, struct loop_defer *d)
{
	struct conn *c = d->data;

	if (c->prev)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	close(c->io.fd);
	buf_release(&c->in);
	buf_release(&c->out);
	free(c);
}

static void conn_close(struct loop *loop, struct conn *c)
{
	if (c->closed)
		return;
	c->closed = 1;
	loop_timer_stop(loop, &c->delay);
	loop_io_del(loop, &c->io);
	loop_defer(loop, &c->d, conn_free, c);
}

static void conn_flush(struct loop *loop, struct conn *c)
{
	while (buf_used(&c->out)) {
		ssize_t n = write(c->io.fd, buf_head(&c->out), buf_used(&c->out));

		if (n == -1) {
			if (errno == EAGAIN)
				return;
			conn_close(loop, c);
			return;
		}
		buf_consume(&c->out, (size_t)n);
	}
	if (c->close_after && !c->waiting) /* not before a delayed answer is written */
		conn_close(loop, c);
}

static void respond(struct conn *c, int status, const char *ctype, const char *body, size_t n)
{
	const char *reason = status == 200   ? "OK"
	                     : status == 400 ? "Bad Request"
	                     : status == 404 ? "Not Found"
	                     : status == 405 ? "Method Not Allowed"
	                                     : "Service Unavailable";

	buf_printf(
	    &c->out,
	    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nCache-Control: no-store\r\n"
	    "X-Dwcp-Component: %s\r\nX-Upstream-Version: %s\r\nContent-Length: %zu\r\n%s\r\n",
	    status, reason, ctype, comp_names[c->inst->comp], c->inst->version, n,
	    c->close_after ? "Connection: close\r\n" : "");
	buf_append(&c->out, body, n);
}

static void respond_json(struct conn *c, int status, json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12));

	json_decref(o);
	if (!s) {
		respond(c, 503, "application/json", "{\"error\":\"out of memory\"}", 25);
		return;
	}
	respond(c, status, "application/json", s, strlen(s));
	free(s);
}

static void respond_error(struct conn *c, int status, const char *msg)
{
	json_t *o = json_object();

	json_object_set_new(o, "error", json_string(msg));
	respond_json(c, status, o);
}

/* The API answer of an API request whose latency has elapsed. */
static void api_respond(struct conn *c)
{
	json_t *o = json_object();

	json_object_set_new(o, "component", json_string(comp_names[c->inst->comp]));
	json_object_set_new(o, "version", json_string(c->inst->version));
	if (c->status == 200) {
		json_object_set_new(o, "path", json_string(c->path));
		json_object_set_new(o, "status", json_string("ok"));
	} else {
		json_object_set_new(o, "error", json_string(c->error));
	}
	respond_json(c, c->status, o);
}

/* --- control: /_sim/fault and /_sim/status -------------------------------------------- */

static json_t *status_json(uint64_t now_ms)
{
	json_t *arr = json_array(), *o = json_object();

	for (int i = 0; i < n_instances; i++) {
		const struct instance *in = &instances[i];
		json_t *e = json_object(), *fs = json_object();

		json_object_set_new(e, "component", json_string(comp_names[in->comp]));
		json_object_set_new(e, "version", json_string(in->version));
		json_object_set_new(e, "listen", json_string(in->listen));
		json_object_set_new(e, "requests", json_integer((json_int_t)in->requests));
		json_object_set_new(e, "errors", json_integer((json_int_t)in->errors));
		json_object_set_new(e, "error_ratio", json_real(window_error_ratio(in, now_ms)));
		for (int f = 0; f < F_N; f++) {
			const struct fault_state *fs1 = &in->faults[f];
			json_t *fo;

			if (!fs1->since_ms)
				continue;
			fo = json_object();
			json_object_set_new(fo, "since_ms",
			                    json_integer((json_int_t)fs1->since_ms));
			json_object_set_new(fo, "percent", json_real(fs1->percent));
			json_object_set_new(fo, "latency_ms", json_integer(fs1->latency_ms));
			json_object_set_new(fs, fault_names[f], fo);
		}
		json_object_set_new(e, "faults", fs);
		json_array_append_new(arr, e);
	}
	json_object_set_new(o, "instances", arr);
	return o;
}

/* What a POST /_sim/fault asks for, from the query or a JSON body. */
struct fault_req {
	int fault; /* enum fault, or F_N for clear */
	char version[32];
	int comp; /* -1: every component of the fault */
	double percent;
	unsigned long long latency_ms;
};

/* Reads one key's text (query) into the request; an error message or NULL. */
static const char *fault_req_set(struct fault_req *r, struct str key, struct str val)
{
	if (str_eq_c(key, "fault")) {
		r->fault = str_eq_c(val, "clear") ? F_N : fault_parse(val);
		if (r->fault < 0)
			return "fault: want accuracy_low, consensus_failures, throughput_low, "
			       "memory_leak, integration_errors, cascading or clear";
	} else if (str_eq_c(key, "version")) {
		if (val.len == 0 || val.len >= sizeof(r->version))
			return "version: want a version name";
		memcpy(r->version, val.p, val.len);
		r->version[val.len] = '\0';
	} else if (str_eq_c(key, "component")) {
		r->comp = comp_parse(val);
		if (r->comp < 0)
			return "component: want manager, compression, probft, bullshark, tpbft or "
			       "maddpg";
	} else if (str_eq_c(key, "percent")) {
		if (str_to_double(val, &r->percent) != 0 || r->percent < 0 || r->percent > 100)
			return "percent: want a number in 0..100";
	} else if (str_eq_c(key, "latency_ms")) {
		if (str_to_u64(val, &r->latency_ms) != 0 || r->latency_ms > 60000)
			return "latency_ms: want an integer in 0..60000";
	} else {
		return "unknown key: want fault, version, component, percent, latency_ms";
	}
	return NULL;
}

static const char *fault_req_query(struct fault_req *r, struct str q)
{
	size_t i = 0;

	while (i < q.len) {
		size_t j = i, eq;
		const char *err;

		while (j < q.len && q.p[j] != '&')
			j++;
		for (eq = i; eq < j && q.p[eq] != '='; eq++)
			;
		if (eq > i) {
			err = fault_req_set(r, str_make(q.p + i, eq - i),
			                    eq < j ? str_make(q.p + eq + 1, j - eq - 1) : STR_NULL);
			if (err)
				return err;
		}
		i = j + 1;
	}
	return NULL;
}

/* A JSON object body: strings for fault/version/component, numbers for the rest
 * (types are not coerced). */
static const char *fault_req_json(struct fault_req *r, struct str body)
{
	json_error_t jerr;
	json_t *o = json_loadb(body.p, body.len, 0, &jerr), *v;
	const char *key, *err = NULL;
	char num[64];

	if (!o || !json_is_object(o)) {
		json_decref(o);
		return "the body is not a JSON object";
	}
	json_object_foreach(o, key, v)
	{
		struct str k = str_c(key);

		if (str_eq_c(k, "percent") || str_eq_c(k, "latency_ms")) {
			int n;

			if (!json_is_number(v)) {
				err = str_eq_c(k, "percent") ? "percent: want a number"
				                             : "latency_ms: want an integer";
				break;
			}
			n = json_is_integer(v)
			        ? snprintf(num, sizeof(num), "%lld",
			                   (long long)json_integer_value(v))
			        : snprintf(num, sizeof(num), "%.17g", json_real_value(v));
			if (n < 0 || (size_t)n >= sizeof(num)) {
				err = "a number is out of range";
				break;
			}
			err = fault_req_set(r, k, str_make(num, (size_t)n));
		} else if (json_is_string(v)) {
			err = fault_req_set(r, k,
			                    str_make(json_string_value(v), json_string_length(v)));
		} else if (str_eq_c(k, "fault") || str_eq_c(k, "version") ||
		           str_eq_c(k, "component")) {
			err = "fault, version and component are strings";
		} else {
			err = fault_req_set(r, k, STR_NULL); /* names the unknown key */
		}
		if (err)
			break;
	}
	json_decref(o);
	return err;
}

static void fault_apply(const struct fault_req *r, uint64_t now_ms)
{
	for (int i = 0; i < n_instances; i++) {
		struct instance *in = &instances[i];

		if (r->version[0] && strcmp(r->version, in->version) != 0)
			continue;
		if (r->comp >= 0 && (int)in->comp != r->comp)
			continue;
		if (r->fault == F_N) {
			/* healthy again at once: no fault, an empty error window */
			memset(in->faults, 0, sizeof(in->faults));
			memset(in->win_sec, 0, sizeof(in->win_sec));
			memset(in->win_req, 0, sizeof(in->win_req));
			memset(in->win_err, 0, sizeof(in->win_err));
			continue;
		}
		if (!(fault_comps[r->fault] & (1u << in->comp)))
			continue;
		if (!in->faults[r->fault].since_ms)
			in->faults[r->fault].since_ms = now_ms;
		in->faults[r->fault].percent = r->percent;
		in->faults[r->fault].latency_ms = (unsigned)r->latency_ms;
	}
}

static void control(struct conn *c, struct str method, struct str target, struct str body)
{
	const char *q = memchr(target.p, '?', target.len);
	struct str path = q ? str_make(target.p, (size_t)(q - target.p)) : target;
	struct str query = q ? str_make(q + 1, target.len - path.len - 1) : STR_NULL;
	uint64_t now = clock_wall_ms();

	if (str_eq_c(path, "/_sim/status")) {
		if (!str_eq_c(method, "GET"))
			goto out_method;
		respond_json(c, 200, status_json(now));
	} else if (str_eq_c(path, "/_sim/fault")) {
		struct fault_req r = {.fault = -1, .comp = -1, .percent = -1, .latency_ms = 2};
		const char *err;

		if (!str_eq_c(method, "POST"))
			goto out_method;
		err = fault_req_query(&r, query);
		if (!err && body.len)
			err = fault_req_json(&r, body);
		if (!err && r.fault < 0)
			err = "fault: required (accuracy_low, consensus_failures, throughput_low, "
			      "memory_leak, integration_errors, cascading or clear)";
		if (err) {
			respond_error(c, 400, err);
			return;
		}
		if (r.percent < 0) /* above the 1% and 0.5% error bounds, below 3% */
			r.percent = r.fault == F_CASCADING ? 1.5 : 2;
		fault_apply(&r, now);
		log_info("dwcp-sim fault", "fault", r.fault == F_N ? "clear" : fault_names[r.fault],
		         "version", r.version[0] ? r.version : "(every)", NULL);
		respond_json(c, 200, status_json(now));
	} else {
		respond_error(c, 404, "not found: /_sim/fault, /_sim/status");
	}
	return;

out_method:
	respond_error(c, 405, "method not allowed");
}

/* --- API requests ----------------------------------------------------------------------- */

static double latency_of(const struct instance *in)
{
	double base = 10, tail = 2, u;

	for (int i = 0; i < n_latencies; i++)
		if (strcmp(latencies[i].version, in->version) == 0) {
			base = latencies[i].base_ms;
			tail = latencies[i].tail_ms;
		}
	u = rng_next();
	return base + (tail > 0 ? -log(1.0 - u) * tail : 0);
}

/* Decides the answer of an API request: status, fault, latency in ms. */
static unsigned api_decide(struct conn *c, uint64_t now_ms)
{
	struct instance *in = c->inst;
	double ms = latency_of(in);

	c->status = 200;
	c->error = NULL;
	for (int f = F_INTEGRATION_ERRORS; f <= F_CASCADING; f++) {
		const struct fault_state *fs = &in->faults[f];

		if (!fs->since_ms)
			continue;
		if (f == F_CASCADING)
			ms += fs->latency_ms;
		if (c->status == 200 && rng_next() * 100.0 < fs->percent) {
			c->status = 503;
			c->error = fault_names[f];
		}
	}
	in->requests++;
	if (c->status != 200)
		in->errors++;
	window_add(in, now_ms, c->status != 200);
	if (ms > 60000)
		ms = 60000;
	return (unsigned)(ms + 0.5);
}

static void conn_parse(struct loop *loop, struct conn *c);

static void delay_cb(struct loop *loop, struct loop_timer *t)
{
	struct conn *c = t->data;

	c->waiting = 0;
	api_respond(c);
	conn_flush(loop, c);
	if (!c->closed)
		conn_parse(loop, c);
}

/* A header's value in the header block [p, p+n); its length, or -1. */
static int find_header(const char *p, size_t n, const char *name, const char **val)
{
	size_t nl = strlen(name);
	const char *end = p + n, *line = p;

	while (line < end) {
		const char *eol = memchr(line, '\n', (size_t)(end - line));

		if (!eol)
			break;
		if ((size_t)(eol - line) > nl + 1 && strncasecmp(line, name, nl) == 0 &&
		    line[nl] == ':') {
			const char *v = line + nl + 1;

			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			*val = v;
			return (int)(eol - v - (eol[-1] == '\r'));
		}
		line = eol + 1;
	}
	return -1;
}

static void conn_parse(struct loop *loop, struct conn *c)
{
	while (!c->waiting && !c->closed) {
		const char *head = buf_head(&c->in), *eoh, *v, *sp, *sp2;
		size_t used = buf_used(&c->in), hlen, pl;
		unsigned long long clen = 0;
		struct str method, target;
		int vl, close_req;

		if (c->body_left) {
			size_t take = used < c->body_left ? used : c->body_left;

			buf_consume(&c->in, take);
			c->body_left -= take;
			if (c->body_left)
				return;
			continue;
		}
		eoh = memmem(head, used, "\r\n\r\n", 4);
		if (!eoh)
			return;
		hlen = (size_t)(eoh - head) + 4;
		sp = memchr(head, ' ', hlen);
		sp2 = sp ? memchr(sp + 1, ' ', hlen - (size_t)(sp + 1 - head)) : NULL;
		if (!sp || !sp2) {
			c->close_after = 1;
			respond_error(c, 400, "bad request line");
			return;
		}
		method = str_make(head, (size_t)(sp - head));
		target = str_make(sp + 1, (size_t)(sp2 - sp - 1));
		vl = find_header(head, hlen, "content-length", &v);
		if (vl > 0 && str_to_u64(str_make(v, (size_t)vl), &clen) != 0) {
			c->close_after = 1;
			respond_error(c, 400, "bad Content-Length");
			return;
		}
		vl = find_header(head, hlen, "connection", &v);
		close_req = vl == 5 && strncasecmp(v, "close", 5) == 0;
		if (str_has_prefix(target, STR_LIT("/_sim/")) ||
		    (str_eq_c(method, "GET") && str_eq_c(target, "/metrics"))) {
			if (clen > SIM_BODY_CAP) {
				c->close_after = 1;
				respond_error(c, 400, "control bodies are at most 4096 bytes");
				return;
			}
			if (used < hlen + clen)
				return; /* the whole body first */
			c->close_after = close_req;
			if (str_eq_c(target, "/metrics")) {
				struct buf m;

				buf_init(&m, SIM_BUF_CAP);
				metrics_render(&m, c->inst, clock_wall_ms());
				respond(c, 200, "text/plain; version=0.0.4", buf_head(&m),
				        buf_used(&m));
				buf_release(&m);
			} else {
				/* before the request's bytes are consumed */
				control(c, method, target, str_make(head + hlen, (size_t)clen));
			}
			buf_consume(&c->in, hlen + (size_t)clen);
			continue;
		}
		pl = target.len < sizeof(c->path) - 1 ? target.len : sizeof(c->path) - 1;
		memcpy(c->path, target.p, pl);
		c->path[pl] = '\0';
		buf_consume(&c->in, hlen);
		c->body_left = (size_t)clen;
		c->close_after = close_req;
		c->waiting = 1;
		loop_timer_start(loop, &c->delay, api_decide(c, clock_wall_ms()));
	}
}

static void conn_cb(struct loop *loop, struct loop_io *io, uint32_t ev)
{
	struct conn *c = io->data;

	if (ev & LOOP_READ) {
		for (;;) {
			char *p = buf_reserve(&c->in, 16384);
			ssize_t n;

			if (!p) {
				conn_close(loop, c);
				return;
			}
			n = read(io->fd, p, 16384);
			if (n > 0) {
				buf_commit(&c->in, (size_t)n);
				continue;
			}
			if (n == 0 || errno != EAGAIN) {
				conn_close(loop, c);
				return;
			}
			break;
		}
		conn_parse(loop, c);
	}
	conn_flush(loop, c);
}

static void accept_cb(struct loop *loop, struct loop_io *io, uint32_t ev)
{
	struct instance *in = io->data;

	for (;;) {
		int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1;
		struct conn *c;

		if (fd == -1)
			return;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->inst = in;
		buf_init(&c->in, SIM_BUF_CAP);
		buf_init(&c->out, SIM_BUF_CAP);
		loop_timer_init(&c->delay, delay_cb, c);
		if (loop_io_add(loop, &c->io, fd, conn_cb, c) != 0) {
			buf_release(&c->in);
			buf_release(&c->out);
			close(fd);
			free(c);
			continue;
		}
		c->next = conns;
		if (conns)
			conns->prev = c;
		conns = c;
	}
}

static void on_signal(struct loop *loop, int signo, void *data)
{
	loop_stop(loop);
}

/* --- command line ------------------------------------------------------------------------ */

static int listen_on(const char *host, const char *portstr)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	unsigned long long port;
	int fd, one = 1;

	if (str_to_u64(str_c(portstr), &port) != 0 || port == 0 || port > 65535 ||
	    inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		errno = EINVAL;
		return -1;
	}
	sa.sin_port = htons((uint16_t)port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 || listen(fd, 1024) == -1) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* Splits "a:b:c:d" at its first three colons into parts[4]; 0 or -1. */
static int split4(const char *arg, char *copy, size_t cap, char *parts[4])
{
	size_t n = strlen(arg);
	char *p;

	if (n >= cap)
		return -1;
	memcpy(copy, arg, n + 1);
	p = copy;
	for (int i = 0; i < 3; i++) {
		char *colon = strchr(p, ':');

		if (!colon)
			return -1;
		*colon = '\0';
		parts[i] = p;
		p = colon + 1;
	}
	parts[3] = p;
	return 0;
}

static int add_instance(const char *arg)
{
	char copy[160], *parts[4];
	struct instance *in;
	int comp;

	if (n_instances >= SIM_MAX_INSTANCES) {
		fprintf(stderr, "dwcp-sim: at most %d instances\n", SIM_MAX_INSTANCES);
		return -1;
	}
	if (split4(arg, copy, sizeof(copy), parts) != 0) {
		fprintf(stderr, "dwcp-sim: --instance %s: want COMPONENT:VERSION:HOST:PORT\n", arg);
		return -1;
	}
	comp = comp_parse(str_c(parts[0]));
	if (comp < 0) {
		fprintf(stderr,
		        "dwcp-sim: --instance %s: component \"%s\": want manager, compression, "
		        "probft, bullshark, tpbft or maddpg\n",
		        arg, parts[0]);
		return -1;
	}
	if (!parts[1][0] || strlen(parts[1]) >= sizeof(in->version) || strchr(parts[1], '"')) {
		fprintf(stderr, "dwcp-sim: --instance %s: bad version\n", arg);
		return -1;
	}
	in = &instances[n_instances];
	memset(in, 0, sizeof(*in));
	in->comp = (enum comp)comp;
	snprintf(in->version, sizeof(in->version), "%s", parts[1]);
	snprintf(in->listen, sizeof(in->listen), "%s:%s", parts[2], parts[3]);
	in->fd = listen_on(parts[2], parts[3]);
	if (in->fd < 0) {
		fprintf(stderr, "dwcp-sim: --instance %s: cannot listen: %s\n", arg,
		        strerror(errno));
		return -1;
	}
	n_instances++;
	return 0;
}

static int add_latency(const char *arg)
{
	char copy[96], *p[4];
	struct latency *l;

	/* VERSION:BASE_MS:TAIL_MS, parsed as four parts with a dummy first one */
	if (n_latencies >= SIM_MAX_LATENCIES || strlen(arg) + 2 >= sizeof(copy))
		goto out_bad;
	l = &latencies[n_latencies];
	{
		char tmp[96];
		int n = snprintf(tmp, sizeof(tmp), "x:%s", arg);

		if (n < 0 || (size_t)n >= sizeof(tmp) || split4(tmp, copy, sizeof(copy), p) != 0)
			goto out_bad;
	}
	if (!p[1][0] || strlen(p[1]) >= sizeof(l->version) ||
	    str_to_double(str_c(p[2]), &l->base_ms) != 0 ||
	    str_to_double(str_c(p[3]), &l->tail_ms) != 0 || l->base_ms < 0 || l->tail_ms < 0 ||
	    l->base_ms > 10000 || l->tail_ms > 10000)
		goto out_bad;
	snprintf(l->version, sizeof(l->version), "%s", p[1]);
	n_latencies++;
	return 0;

out_bad:
	fprintf(stderr, "dwcp-sim: --latency %s: want VERSION:BASE_MS:TAIL_MS (0..10000 each)\n",
	        arg);
	return -1;
}

static void usage(FILE *f)
{
	fputs("usage: dwcp-sim --instance COMPONENT:VERSION:HOST:PORT [--instance ...]\n"
	      "                [--latency VERSION:BASE_MS:TAIL_MS] [--seed N]\n"
	      "components: manager compression probft bullshark tpbft maddpg\n"
	      "control:    POST /_sim/fault?fault=NAME[&version=V][&component=C][&percent=P]"
	      "[&latency_ms=MS]\n"
	      "            (or a JSON body), GET /_sim/status, GET /metrics\n"
	      "faults:     accuracy_low consensus_failures throughput_low memory_leak\n"
	      "            integration_errors cascading clear\n",
	      f);
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
	    {"instance", required_argument, NULL, 'i'},
	    {"latency", required_argument, NULL, 'L'},
	    {"seed", required_argument, NULL, 'S'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct loop *loop = NULL;
	int c, rc = 1, added = 0;

	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		switch (c) {
		case 'i':
			if (add_instance(optarg) != 0) {
				rc = 2;
				goto out_close;
			}
			break;
		case 'L':
			if (add_latency(optarg) != 0) {
				rc = 2;
				goto out_close;
			}
			break;
		case 'S':
			if (str_to_u64(str_c(optarg), &rng_state) != 0) {
				fputs("dwcp-sim: --seed must be a number\n", stderr);
				rc = 2;
				goto out_close;
			}
			if (!rng_state)
				rng_state = 1;
			break;
		case 'h':
			usage(stdout);
			rc = 0;
			goto out_close;
		default:
			usage(stderr);
			rc = 2;
			goto out_close;
		}
	}
	if (optind < argc || n_instances == 0) {
		usage(stderr);
		rc = 2;
		goto out_close;
	}
	loop = loop_new();
	if (!loop || loop_signals(loop, on_signal, NULL) != 0)
		goto out_close;
	for (int i = 0; i < n_instances; i++) {
		if (loop_io_add(loop, &instances[i].io, instances[i].fd, accept_cb,
		                &instances[i]) != 0)
			goto out_del;
		added++;
		log_info("dwcp-sim listening", "component", comp_names[instances[i].comp],
		         "version", instances[i].version, "addr", instances[i].listen, NULL);
	}
	loop_run(loop);
	rc = 0;

out_del:
	for (int i = 0; i < added; i++)
		loop_io_del(loop, &instances[i].io);
	/* free everything so that sanitizer builds exit cleanly */
	for (struct conn *k = conns; k; k = k->next)
		conn_close(loop, k);
	loop_run_once(loop, 0); /* runs the deferred frees */
out_close:
	for (int i = 0; i < n_instances; i++)
		close(instances[i].fd);
	if (loop)
		loop_free(loop);
	return rc;
}
