/*
 * libFuzzer target for the admin API's request bodies and parameters
 * (src/api/): one request through api_handle(), as the admin server hands it
 * over, against a fresh in-memory store each time (so every input runs
 * alone and the result does not depend on the inputs before it).  This
 * reaches the JSON bodies' validators as the API runs them: flag
 * definitions (PUT /v1/feature-flags/{key}), the seed form and exclusions
 * (POST /v1/feature-flags[/exclude]), traffic, mirror and faults
 * (/v1/services/...), OFREP evaluations and their contexts; and the
 * parameters: percent-decoded path segments, query strings (?since=,
 * ?limit=), If-None-Match and Last-Event-ID.
 *
 * Input: line 1 "METHOD /path?query", line 2 the Last-Event-ID header,
 * line 3 If-None-Match, line 4 the token ("admin", "read" or anything else
 * for none); the rest is the body.  Each store has its own traffic module
 * and proxy (never started), so a committed service change stays with it.
 *
 * Opening a store costs milliseconds, so requests share one store and API,
 * set up once, whose store transaction the harness holds open: a change is
 * validated, then its own store_begin() fails and nothing is written, so
 * every input sees the same state.  A token line ending in "!" ("admin!")
 * runs the request against a fresh store instead, through commit, publish
 * and stream (slower; the seed corpus has such inputs).
 *
 * Checks: every response has a status from 200 to 599 and a body that is
 * JSON when its type says so; a handler never ends a transaction it did
 * not begin, and a committed change leaves none open.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/flags.h"
#include "api/services.h"
#include "config/config.h"
#include "core/loop.h"
#include "proxy/proxy.h"
#include "proxy/table.h"
#include "proxy/traffic.h"
#include "state/state.h"
#include "store/store.h"

#define API_FUZZ_MAX (32 * 1024)

static const char api_yaml[] =
    "admin:\n"
    "  tokens:\n"
    "    - {name: ops, secret: s3cret, scopes: [admin]}\n"
    "    - {name: viewer, secret: r34d, scopes: [read]}\n"
    "store: \"sqlite::memory:\"\n"
    "listeners:\n"
    "  - name: public\n"
    "    listen: 127.0.0.1:18080\n"
    "    routes: [{match: {path_prefix: /}, service: web}]\n"
    "services:\n"
    "  web:\n"
    "    versions:\n"
    "      v1: {endpoints: [127.0.0.1:17001]}\n"
    "      v2: {endpoints: [127.0.0.1:17002]}\n"
    "    stable: v1\n"
    "    sticky: header:x-user\n"
    "segments:\n"
    "  internal: {match: [{attr: email, op: ends_with, values: [\"@x.io\"]}]}\n"
    "  v2: {match: [{attr: app, op: semver_gt, values: [\"2.0.0\"]}, "
    "{attr: n, op: gte, values: [\"3\"]}]}\n"
    "flags:\n"
    "  f1:\n"
    "    sticky: nodeId\n"
    "    variants: {blue: {\"hex\": \"#00f\"}, red: 0.1, off: null}\n"
    "    rules:\n"
    "      - {segment: internal, serve: red}\n"
    "      - {segment: v2, rollout: {blue: 12.345, red: 5}}\n"
    "    rollout: {blue: 10, off: 90}\n"
    "    exclude: [n-1]\n"
    "  f2: {}\n";

struct api_env {
	struct store *st;
	struct api api;
	struct api_flags *fl;
	struct state *state;
	struct proxy *proxy;
	struct traffic *traffic;
	struct services_backend be;
};

static struct {
	struct config_ref *cfg;
	struct loop *loop;
	struct proxy *proxy;
	struct auth_token tokens[2];
	int verbose; /* FUZZ_API_VERBOSE=1: print each response (to check a seed) */
	struct api_env shared;
} G;

static void api_env_shared(void);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct config_errors errs;
	struct config *cfg;
	struct proxy_table *t;
	char err[512];

	setenv("CANARYD_SSE_HEARTBEAT_MS", "3600000", 1);
	G.verbose = getenv("FUZZ_API_VERBOSE") != NULL;
	config_errors_init(&errs);
	cfg = config_load_string("fuzz.yaml", api_yaml, sizeof(api_yaml) - 1, &errs);
	if (!cfg) {
		config_errors_print(&errs, stderr);
		abort();
	}
	config_errors_release(&errs);
	G.cfg = config_ref_new(cfg);
	G.loop = loop_new();
	G.proxy = proxy_new(1, NULL, 1);
	if (!G.cfg || !G.loop || !G.proxy)
		abort();
	t = proxy_table_build(G.cfg, NULL, 0, proxy_registry(G.proxy), NULL, NULL, err,
	                      sizeof(err));
	if (!t) {
		fprintf(stderr, "fuzz_api: %s\n", err);
		abort();
	}
	proxy_publish(G.proxy, t);
	G.tokens[0] = (struct auth_token){"ops", "s3cret", SCOPE_ADMIN};
	G.tokens[1] = (struct auth_token){"viewer", "r34d", SCOPE_READ};
	api_env_shared();
	return 0;
}

static struct str next_line(const char **p, const char *end)
{
	const char *s = *p, *nl = memchr(s, '\n', (size_t)(end - s));
	size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s);

	*p = nl ? nl + 1 : end;
	return str_make(s, n);
}

/* A store and the API over it, as the daemon wires them (flags and services). */
static void api_env_open(struct api_env *e)
{
	char err[512];

	e->st = store_open("sqlite::memory:", err, sizeof(err));
	if (!e->st)
		abort();
	api_init(&e->api);
	e->api.store = e->st;
	e->api.tokens = G.tokens;
	e->api.ntokens = 2;
	e->fl = api_flags_init(&e->api, G.loop, G.cfg->cfg, err, sizeof(err));
	e->state = state_new(e->st);
	e->proxy = proxy_new(1, NULL, 1);
	e->traffic = e->state && e->proxy ? traffic_new(e->state, e->proxy, NULL) : NULL;
	if (!e->traffic || traffic_load(e->traffic, G.cfg, err, sizeof(err)) != 0)
		abort();
	e->be = (struct services_backend){.traffic = e->traffic, .proxy = e->proxy};
	if (!e->fl || api_services_init(&e->api, &e->be) != 0)
		abort();
}

static void api_env_close(struct api_env *e)
{
	api_flags_free(e->fl);
	traffic_free(e->traffic);
	proxy_free(e->proxy);
	state_free(e->state);
	store_close(e->st);
	memset(e, 0, sizeof(*e));
}

/* The shared environment with its transaction held (see the top comment). */
static void api_env_shared(void)
{
	api_env_open(&G.shared);
	if (store_begin(G.shared.st) != 0)
		abort();
}

static void api_call(struct api_env *e, const struct api_request *req)
{
	struct api_response resp;

	api_response_init(&resp);
	api_handle(&e->api, req, &resp);
	if (resp.status < 200 || resp.status > 599)
		abort();
	if (G.verbose)
		fprintf(stderr, "fuzz_api: %.*s %.*s -> %d %.*s\n", (int)req->method.len,
		        req->method.p, (int)req->path.len, req->path.p, resp.status,
		        (int)buf_used(&resp.body), buf_head(&resp.body));
	if (resp.stream) {
		resp.stream->closed(resp.stream);
	} else if (resp.content_type && strstr(resp.content_type, "json") && buf_used(&resp.body)) {
		json_t *j =
		    json_loadb(buf_head(&resp.body), buf_used(&resp.body), JSON_ALLOW_NUL, NULL);

		if (!j)
			abort();
		json_decref(j);
	}
	api_response_release(&resp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size, *sp, *q;
	struct api_request req;
	struct api_env fresh;
	struct str line, tok;
	int commit;

	if (size > API_FUZZ_MAX)
		return 0;
	memset(&req, 0, sizeof(req));
	line = next_line(&p, end);
	sp = memchr(line.p, ' ', line.len);
	if (!sp)
		return 0;
	req.method = str_make(line.p, (size_t)(sp - line.p));
	req.path = str_make(sp + 1, line.len - req.method.len - 1);
	q = memchr(req.path.p, '?', req.path.len);
	if (q) {
		req.query = str_make(q + 1, req.path.len - (size_t)(q - req.path.p) - 1);
		req.path.len = (size_t)(q - req.path.p);
	}
	req.last_event_id = next_line(&p, end);
	req.if_none_match = next_line(&p, end);
	tok = next_line(&p, end);
	commit = tok.len && tok.p[tok.len - 1] == '!';
	if (commit)
		tok.len--;
	if (str_eq_c(tok, "admin"))
		req.authorization = STR_LIT("Bearer s3cret");
	else if (str_eq_c(tok, "read"))
		req.authorization = STR_LIT("Bearer r34d");
	req.body = str_make(p, (size_t)(end - p));

	if (commit) {
		api_env_open(&fresh);
		api_call(&fresh, &req);
		if (store_in_transaction(fresh.st))
			abort();
		api_env_close(&fresh);
		return 0;
	}
	api_call(&G.shared, &req);
	/* the handler must not have ended the transaction it did not start */
	if (!store_in_transaction(G.shared.st))
		abort();
	return 0;
}
