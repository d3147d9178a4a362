/*
 * libFuzzer target for documents read back from the store, which a crash,
 * an old binary or another fleet node may have written: the rollout engine's
 * run documents (rollout_run_parse in src/rollout/doc.c, included to reach
 * run_doc)
 * and the flag documents the flag API loads at start (api_flags_init in
 * src/api/flags.c, through an in-memory store).
 *
 * The first input byte picks the kind: even, a rollout document for a
 * rollout with a service target, a flag target, checks and an approval
 * step; odd, a flag document stored under key "f1" (overriding the
 * config's flag) when bit 1 is clear, else under "fz" (a new flag).
 * The rest is the document text.
 *
 * Checks: a rollout document that parses renders (run_doc) to one that
 * parses to the same rendering; a run is always left with its step in
 * range; a stored flag document that api_flags_init accepts serves its
 * flags over OFREP.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/rollout/doc.c"
#include "api/api.h"
#include "api/flags.h"
#include "core/loop.h"

#define DOCS_FUZZ_MAX (32 * 1024)

static const char docs_yaml[] =
    "admin:\n"
    "  tokens:\n"
    "    - {name: ops, secret: s3cret, scopes: [admin]}\n"
    "    - {name: lead, secret: l34d, scopes: [approve]}\n"
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
    "segments:\n"
    "  internal: {match: [{attr: email, op: ends_with, values: [\"@x.io\"]}]}\n"
    "flags:\n"
    "  f1:\n"
    "    variants: {blue: 1, off: 0}\n"
    "    rules: [{segment: internal, serve: blue}]\n"
    "    rollout: {blue: 10, off: 90}\n"
    "rollouts:\n"
    "  r:\n"
    "    targets:\n"
    "      web: {service: web, canary: v2}\n"
    "      f1: {flag: f1}\n"
    "    steps:\n"
    "      - set: {web: 10, f1: 10}\n"
    "      - approval: {required: [ops, lead]}\n"
    "      - analysis: {for: 10m}\n"
    "      - set: {web: 100, f1: 100}\n"
    "    analysis:\n"
    "      interval: 1m\n"
    "      checks:\n"
    "        - {name: errors, metric: error_rate, max: 0.05}\n"
    "        - {name: latency, metric: latency_p99, max: 500}\n";

static struct {
	struct config *cfg;
	struct loop *loop;
	struct auth_token tokens[1];
	struct store *st; /* holds the config's flag digest; each input's doc is rolled back */
} D;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct config_errors errs;
	struct api_flags *fl;
	struct api api;
	char err[512];

	setenv("CANARYD_SSE_HEARTBEAT_MS", "3600000", 1);
	config_errors_init(&errs);
	D.cfg = config_load_string("fuzz.yaml", docs_yaml, sizeof(docs_yaml) - 1, &errs);
	if (!D.cfg) {
		config_errors_print(&errs, stderr);
		abort();
	}
	config_errors_release(&errs);
	D.loop = loop_new();
	if (!D.loop)
		abort();
	D.tokens[0] = (struct auth_token){"ops", "s3cret", SCOPE_ADMIN};
	D.st = store_open("sqlite::memory:", err, sizeof(err));
	if (!D.st)
		abort();
	/* the first start records the config's flag digest; later ones write nothing */
	api_init(&api);
	api.store = D.st;
	fl = api_flags_init(&api, D.loop, D.cfg, err, sizeof(err));
	if (!fl)
		abort();
	api_flags_free(fl);
	return 0;
}

static void run_free_parts(struct run *r)
{
	for (size_t i = 0; i < r->cfg->ntargets; i++)
		json_decref(r->targets[i].saved);
	free(r->targets);
	free(r->checks);
}

static void fuzz_rollout_doc(const char *text)
{
	struct run r;
	json_t *doc;
	char *t1, *t2;

	memset(&r, 0, sizeof(r));
	r.cfg = &D.cfg->rollouts[0];
	r.targets = calloc(r.cfg->ntargets, sizeof(*r.targets));
	r.checks = calloc(r.cfg->analysis.nchecks, sizeof(*r.checks));
	if (!r.targets || !r.checks)
		abort();
	if (rollout_run_parse(&r, text) == 0) {
		if (r.step > r.cfg->nsteps)
			abort();
		doc = run_doc(&r);
		t1 = doc ? json_dumps(doc, JSON_SORT_KEYS) : NULL;
		json_decref(doc);
		if (!t1 || rollout_run_parse(&r, t1) != 0)
			abort();
		doc = run_doc(&r);
		t2 = doc ? json_dumps(doc, JSON_SORT_KEYS) : NULL;
		json_decref(doc);
		if (!t2 || strcmp(t1, t2) != 0)
			abort();
		free(t1);
		free(t2);
	} else if (r.state != ROLLOUT_IDLE || r.step != 0) {
		abort();
	}
	run_free_parts(&r);
}

static void fuzz_flag_doc(const char *key, const char *text)
{
	struct api_request req = {
	    .method = STR_LIT("POST"),
	    .path = STR_LIT("/ofrep/v1/evaluate/flags"),
	    .authorization = STR_LIT("Bearer s3cret"),
	    .body = STR_LIT("{\"context\": {\"targetingKey\": \"u1\", \"email\": \"a@x.io\"}}"),
	};
	struct api_response resp;
	struct api_flags *fl;
	struct store *st;
	struct api api;
	char err[512];

	/* opening a store costs milliseconds: the document lives in a transaction
	 * that is rolled back, so every input starts from the same store */
	st = D.st;
	if (store_begin(st) != 0)
		abort();
	/* the store only keeps JSON documents: anything else cannot be read back */
	if (store_doc_put(st, "flag", key, text, STORE_REV_ANY, NULL) != 0)
		goto out;
	api_init(&api);
	api.store = st;
	api.tokens = D.tokens;
	api.ntokens = 1;
	fl = api_flags_init(&api, D.loop, D.cfg, err, sizeof(err));
	if (!fl)
		goto out;
	api_response_init(&resp);
	api_handle(&api, &req, &resp);
	if (resp.status != 200)
		abort();
	api_response_release(&resp);
	api_flags_free(fl);
out:
	if (store_rollback(st) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text;

	if (size < 1 || size > DOCS_FUZZ_MAX)
		return 0;
	text = malloc(size);
	if (!text)
		return 0;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	if (data[0] % 2 == 0)
		fuzz_rollout_doc(text);
	else
		fuzz_flag_doc(data[0] & 2 ? "fz" : "f1", text);
	free(text);
	return 0;
}
