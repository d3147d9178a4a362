/*
 * flags.c - the feature-flag endpoints, OFREP and the flag stream's route
 * (see flags.h, docs/api.md, docs/flags.md).  HTTP only: the state lives in
 * flags/registry.c, the stream in flags/stream.c.
 */
#include "api/flags.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bucket.h"
#include "core/err.h"
#include "core/str.h"
#include "flags/registry.h"
#include "flags/stream.h"
#include "http/server.h"
#include "rollout/engine.h"
#include "state/state.h"
#include "store/store.h"

#define NODE_MAX    256 /* bytes of one node id in an exclusion */
#define SEED_STICKY "nodeId"
#define KEY_BUF     (STORE_NAME_MAX + 1)

struct api_flags {
	struct api *api;
	struct flags *fl;
	struct flags_stream *st;
	struct state *own_state; /* made by api_flags_new, else NULL */
	int own;                 /* fl and st were made by api_flags_new */
};

/* One stream connection: the glue's hooks around the stream's subscriber. */
struct stream_conn {
	struct api_stream hooks; /* first: admin.c gives it back */
	struct flags_stream *st;
	struct flags_sub *sub;
	int resume;
	uint64_t last_id;
};

static void reply_nomem(struct api_call *call)
{
	api_reply_error(call, 500, "internal", NULL, "out of memory");
}

/* api_reply_json with flag_json_text()'s reals (obj stolen). */
static void reply_json(struct api_call *call, int status, json_t *obj)
{
	char *s = obj ? flag_json_text(obj) : NULL;

	json_decref(obj);
	if (!s) {
		reply_nomem(call);
		return;
	}
	call->resp->status = status;
	call->resp->content_type = "application/json";
	buf_reset(&call->resp->body);
	if (buf_append_str(&call->resp->body, s) || buf_append(&call->resp->body, "\n", 1))
		api_reply_error(call, 500, "internal", NULL, "response too large");
	free(s);
}

/* The definition without "key": a body flags_put accepts.  New reference. */
static json_t *body_of(const json_t *def)
{
	json_t *d = def ? json_copy((json_t *)def) : NULL;

	if (d)
		json_object_del(d, "key");
	return d;
}

/* ------------------------------------------------------------------------ */
/* The stream route                                                           */

static void stream_start(struct api_stream *hs, struct http_conn *conn)
{
	struct stream_conn *sc = (struct stream_conn *)hs;

	sc->sub = flags_stream_attach(sc->st, conn, sc->resume, sc->last_id);
	if (!sc->sub)
		http_conn_close(conn);
}

static void stream_closed(struct api_stream *hs)
{
	struct stream_conn *sc = (struct stream_conn *)hs;

	flags_stream_detach(sc->sub);
	free(sc);
}

static void h_stream(struct api_call *call)
{
	struct stream_conn *sc = calloc(1, sizeof(*sc));
	struct str id = str_trim(call->req->last_event_id);
	unsigned long long last;

	if (!sc) {
		reply_nomem(call);
		return;
	}
	sc->hooks.start = stream_start;
	sc->hooks.closed = stream_closed;
	sc->st = call->api->flags->st;
	if (id.len && str_to_u64(id, &last) == 0) {
		sc->resume = 1;
		sc->last_id = last;
	}
	call->resp->status = 200;
	call->resp->stream = &sc->hooks;
}

/* ------------------------------------------------------------------------ */
/* Changes                                                                    */

/* Copies the path parameter into buf; 0, or -1 when it does not fit. */
static int param(const struct api_call *call, int i, char *buf, size_t len)
{
	struct str p = call->params[i];

	if (p.len >= len)
		return -1;
	memcpy(buf, p.p, p.len);
	buf[p.len] = '\0';
	return 0;
}

/* Percent-decodes p into buf; 0, or -1 (too long, bad escape, NUL). */
static int pct_decode(struct str p, char *buf, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; i < p.len; i++) {
		char c = p.p[i];

		if (c == '%') {
			int hi, lo;

			if (i + 2 >= p.len)
				return -1;
			hi = str_hexval((unsigned char)p.p[i + 1]);
			lo = str_hexval((unsigned char)p.p[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			c = (char)(hi * 16 + lo);
			i += 2;
		}
		if (c == '\0' || o + 1 >= len)
			return -1;
		buf[o++] = c;
	}
	buf[o] = '\0';
	return 0;
}

static void reply_errors(struct api_call *call, const struct config_errors *errs)
{
	const struct config_error *e = config_errors_get(errs, 0);

	if (!e) {
		reply_nomem(call);
		return;
	}
	api_reply_error(call, 422, "invalid", e->path[0] ? e->path : NULL, "%s%s%s", e->path,
	                e->path[0] ? ": " : "", e->message);
}

/* Sum of the fallthrough rollout's shares that are not the off variant (thousandths). */
static uint32_t def_percentage(const json_t *def)
{
	const char *off = json_string_value(json_object_get(def, "off_variant"));
	const char *k;
	json_t *v;
	uint32_t total = 0, t;

	json_object_foreach((json_t *)json_object_get(def, "rollout"), k, v)
	{
		if ((!off || strcmp(k, off) != 0) && json_is_number(v) &&
		    config_percent_from_double(json_number_value(v), &t) == 0)
			total += t;
	}
	return total;
}

/* The API's view of a flag: its definition, plus "feature", "percentage", "source". */
static json_t *flag_view(const json_t *def, const char *source)
{
	json_t *o = json_deep_copy(def);

	if (!o)
		return NULL;
	json_object_set_new(o, "feature", json_incref(json_object_get(def, "key")));
	json_object_set_new(o, "percentage", flag_percent_json(def_percentage(def)));
	json_object_set_new(o, "source", json_string(source));
	return o;
}

static void reply_flag(struct api_call *call, int status, const char *key)
{
	const char *source = "api";
	const json_t *def = flags_def(call->api->flags->fl, key, &source);
	json_t *o = def ? flag_view(def, source) : NULL;

	if (!o) {
		reply_nomem(call);
		return;
	}
	json_object_set_new(o, "revision",
	                    json_integer((json_int_t)flags_revision(call->api->flags->fl)));
	reply_json(call, status, o);
}

/*
 * Applies a change of key (flags_put) for an API call and replies:
 * status_ok with the flag's view (or a deletion body), 200 without writing
 * when nothing changes, 409 when a rollout drives the flag, else the
 * module's error.
 */
static void apply_change(struct api_call *call, const char *key, const json_t *body,
                         const char *kind, json_t *extra, int status_ok)
{
	struct api_flags *af = call->api->flags;
	const char *owner =
	    call->api->rollouts ? rollout_engine_flag_owner(call->api->rollouts, key) : NULL;
	struct config_errors errs;
	char msg[512];
	int rc;

	/* node exclusions stay possible while a rollout drives the flag */
	if (owner && strcmp(kind, "flag.excluded") != 0 && strcmp(kind, "flag.unexcluded") != 0) {
		api_reply_error(call, 409, "conflict", NULL,
		                "flag %s is driven by rollout %s; control the rollout instead "
		                "(POST /v1/rollouts/%s/abort, or /v1/rollback)",
		                key, owner, owner);
		return;
	}
	config_errors_init(&errs);
	rc = flags_put(af->fl, key, body, call->actor, kind, extra, &errs, msg, sizeof(msg));
	if (rc == 0 && !flags_def(af->fl, key, NULL))
		reply_json(call, status_ok,
		           json_pack("{s:s, s:b, s:I}", "key", key, "deleted", 1, "revision",
		                     (json_int_t)flags_revision(af->fl)));
	else if (rc == 0)
		reply_flag(call, status_ok, key);
	else if (rc == ERR_NOCHANGE)
		reply_flag(call, 200, key);
	else if (rc == ERR_INVALID && errs.n)
		reply_errors(call, &errs);
	else
		api_reply_err(call, rc, NULL, msg);
	config_errors_release(&errs);
}

/* ------------------------------------------------------------------------ */
/* Handlers                                                                   */

static void h_list(struct api_call *call)
{
	struct flags *fl = call->api->flags->fl;
	const struct flags_snap *s = flags_current(fl);
	json_t *arr = json_array();

	for (size_t i = 0; arr && i < flags_snap_count(s); i++) {
		const struct flags_item *it = flags_snap_at(s, i);

		json_array_append_new(arr, flag_view(flags_item_def(it), flags_item_source(it)));
	}
	reply_json(
	    call, 200,
	    json_pack("{s:I, s:o}", "revision", (json_int_t)flags_revision(fl), "flags", arr));
}

static void reply_no_flag(struct api_call *call, struct str key)
{
	api_reply_error(call, 404, "not_found", NULL, "no flag named \"%.*s\"",
	                (int)(key.len > 100 ? 100 : key.len), key.p);
}

/* A flag key that can be written: a config name, not the "stream" route. */
static int writable_key(const char *key)
{
	return config_valid_name(key) && strcmp(key, "stream") != 0;
}

/* A "percentage" member into *t (thousandths); 0, or -1 after replying 422. */
static int percentage_of(struct api_call *call, const json_t *v, uint32_t *t)
{
	if (json_is_number(v) && config_percent_from_double(json_number_value(v), t) == 0)
		return 0;
	api_reply_error(call, 422, "invalid", "percentage",
	                "percentage must be a number between 0 and 100 with at most 3 decimals");
	return -1;
}

static int key_param(struct api_call *call, char *key, size_t len)
{
	if (param(call, 0, key, len) != 0 || !flags_def(call->api->flags->fl, key, NULL)) {
		reply_no_flag(call, call->params[0]);
		return -1;
	}
	return 0;
}

static void h_get(struct api_call *call)
{
	char key[KEY_BUF];

	if (key_param(call, key, sizeof(key)) == 0)
		reply_flag(call, 200, key);
}

/*
 * A full definition from a request body: drops the read-only fields of the
 * API's view ("key"/"feature" must name key, "source" and "revision" are
 * ignored, "percentage" must agree with "rollout" once parsed).  Returns
 * the body to parse (new reference) or NULL after replying.
 */
static json_t *full_body(struct api_call *call, const json_t *in, const char *key,
                         json_t **percentage)
{
	static const char *const names[] = {"key", "feature"};
	json_t *b;

	for (size_t i = 0; i < 2; i++) {
		json_t *v = json_object_get(in, names[i]);

		if (v && (!json_is_string(v) || strcmp(json_string_value(v), key) != 0)) {
			api_reply_error(call, 422, "invalid", names[i], "%s must be \"%s\"",
			                names[i], key);
			return NULL;
		}
	}
	b = json_copy((json_t *)in);
	if (!b) {
		reply_nomem(call);
		return NULL;
	}
	*percentage = json_incref(json_object_get(b, "percentage"));
	json_object_del(b, "key");
	json_object_del(b, "feature");
	json_object_del(b, "source");
	json_object_del(b, "revision");
	json_object_del(b, "percentage");
	return b;
}

/* Checks a read-only "percentage" against the definition; 0, or -1 after replying. */
static int check_percentage(struct api_call *call, struct flags *fl, const char *key,
                            const json_t *body, const json_t *pct)
{
	struct config_errors errs;
	json_t *def = NULL;
	uint32_t want;
	int rc = 0;

	if (!pct)
		return 0;
	if (percentage_of(call, pct, &want) != 0)
		return -1;
	config_errors_init(&errs);
	if (flags_validate(fl, key, body, &errs, &def) == 0 && def_percentage(def) != want) {
		api_reply_error(
		    call, 422, "invalid", "percentage",
		    "percentage is derived from rollout (it would be %g); change rollout "
		    "or use POST /v1/feature-flags {\"feature\",\"percentage\"}",
		    def_percentage(def) / 1000.0);
		rc = -1;
	}
	json_decref(def);
	config_errors_release(&errs);
	return rc; /* an invalid body is reported by apply_change */
}

static void put_full(struct api_call *call, const char *key, const json_t *in)
{
	struct flags *fl = call->api->flags->fl;
	json_t *pct = NULL, *body;
	int exists = flags_def(fl, key, NULL) != NULL;

	if (!writable_key(key)) {
		api_reply_error(call, 422, "invalid", "key",
		                "invalid flag key \"%.70s\": " CONFIG_NAME_RULE " (not \"stream\")",
		                key);
		return;
	}
	body = full_body(call, in, key, &pct);
	if (!body)
		return;
	if (check_percentage(call, fl, key, body, pct) == 0)
		apply_change(call, key, body, exists ? "flag.updated" : "flag.created", NULL,
		             exists ? 200 : 201);
	json_decref(pct);
	json_decref(body);
}

static void h_put(struct api_call *call)
{
	char key[KEY_BUF];
	json_t *in;

	if (param(call, 0, key, sizeof(key)) != 0) {
		api_reply_error(call, 422, "invalid", "key", "the flag key is too long");
		return;
	}
	in = api_body_json(call);
	if (!in)
		return;
	put_full(call, key, in);
	json_decref(in);
}

/* The first variant that is not off_variant (what a seed percentage exposes). */
static const char *first_on_variant(const json_t *def)
{
	const char *off = json_string_value(json_object_get(def, "off_variant"));
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)json_object_get(def, "variants"), k, v)
	{
		if (!off || strcmp(k, off) != 0)
			return k;
	}
	return NULL;
}

/* POST {"feature","percentage","enabled"[,"sticky"]}: the seed's upsert. */
static void post_seed(struct api_call *call, const json_t *in)
{
	struct flags *fl = call->api->flags->fl;
	json_t *jf = json_object_get(in, "feature"), *jp = json_object_get(in, "percentage");
	json_t *je = json_object_get(in, "enabled"), *js = json_object_get(in, "sticky");
	json_t *cur, *body = NULL;
	const char *key, *on;
	uint32_t pct = 0;

	if (!json_is_string(jf) || !writable_key(json_string_value(jf))) {
		api_reply_error(call, 422, "invalid", "feature",
		                "feature must be a flag key: " CONFIG_NAME_RULE
		                " (not \"stream\")");
		return;
	}
	key = json_string_value(jf);
	if (jp && percentage_of(call, jp, &pct) != 0)
		return;
	if (je && !json_is_boolean(je)) {
		api_reply_error(call, 422, "invalid", "enabled", "enabled must be true or false");
		return;
	}
	if (js && !json_is_string(js)) {
		api_reply_error(call, 422, "invalid", "sticky",
		                "sticky must be a context attribute name");
		return;
	}
	cur = (json_t *)flags_def(fl, key, NULL); /* read only */
	body = cur ? body_of(cur) : json_pack("{s:s}", "sticky", SEED_STICKY);
	if (!body) {
		reply_nomem(call);
		return;
	}
	if (je)
		json_object_set(body, "enabled", je);
	if (js)
		json_object_set(body, "sticky", js);
	if (jp) {
		const char *off =
		    cur ? json_string_value(json_object_get(cur, "off_variant")) : "off";
		const char *k;
		json_t *v;

		on = cur ? first_on_variant(cur) : "on";
		if (!on) {
			api_reply_error(call, 422, "invalid", "percentage",
			                "flag %s has no variant besides its off_variant", key);
			goto out;
		}
		json_object_foreach(json_object_get(body, "rollout"), k, v)
		{
			if (strcmp(k, on) != 0 && (!off || strcmp(k, off) != 0) &&
			    json_number_value(v) > 0) {
				api_reply_error(
				    call, 422, "invalid", "percentage",
				    "flag %s splits its rollout between several variants; "
				    "change it with PUT /v1/feature-flags/%s",
				    key, key);
				goto out;
			}
		}
		json_object_set_new(body, "rollout",
		                    json_pack("{s:o}", on, flag_percent_json(pct)));
	}
	apply_change(call, key, body, cur ? "flag.updated" : "flag.created", NULL, cur ? 200 : 201);
out:
	json_decref(body);
}

static void h_post(struct api_call *call)
{
	static const char *const seed_keys[] = {"feature", "percentage", "enabled", "sticky"};
	json_t *in = api_body_json(call), *v;
	const char *k;
	int seed = 1;

	if (!in)
		return;
	json_object_foreach(in, k, v)
	{
		int known = 0;

		for (size_t i = 0; i < sizeof(seed_keys) / sizeof(seed_keys[0]); i++)
			known |= strcmp(k, seed_keys[i]) == 0;
		seed &= known;
	}
	if (seed && !json_object_get(in, "key")) {
		post_seed(call, in);
	} else {
		json_t *jk = json_object_get(in, "key");

		if (!jk)
			jk = json_object_get(in, "feature");
		if (!json_is_string(jk))
			api_reply_error(call, 422, "invalid", "key",
			                "a full definition needs \"key\": the flag key");
		else
			put_full(call, json_string_value(jk), in);
	}
	json_decref(in);
}

static void h_delete(struct api_call *call)
{
	struct flags *fl = call->api->flags->fl;
	char key[KEY_BUF];

	if (key_param(call, key, sizeof(key)) != 0)
		return;
	if (!flags_has_api(fl, key)) {
		api_reply_error(call, 409, "conflict", NULL,
		                "flag %s is defined in the configuration file and has no API "
		                "changes; remove it there (or disable it: enabled false)",
		                key);
		return;
	}
	apply_change(call, key, NULL, "flag.deleted", NULL, 200);
}

static int array_has(const json_t *a, const char *s)
{
	for (size_t i = 0; i < json_array_size(a); i++)
		if (strcmp(json_string_value(json_array_get(a, i)) ?: "", s) == 0)
			return 1;
	return 0;
}

/* Removes the string s from the JSON array a; 1 if it was there. */
static int array_remove(json_t *a, const char *s)
{
	int found = 0;

	for (size_t i = json_array_size(a); i-- > 0;) {
		if (strcmp(json_string_value(json_array_get(a, i)) ?: "", s) == 0) {
			json_array_remove(a, i);
			found = 1;
		}
	}
	return found;
}

static void h_exclude(struct api_call *call)
{
	static const char *const keys[] = {"feature", "nodes"};
	struct flags *fl = call->api->flags->fl;
	json_t *in = api_body_json(call), *jf, *jn, *v, *cur, *body = NULL, *ex, *inc, *extra;
	size_t i;

	if (!in)
		return;
	if (api_only_keys(call, in, "", keys, 2) != 0)
		goto out;
	jf = json_object_get(in, "feature");
	jn = json_object_get(in, "nodes");
	if (!json_is_string(jf)) {
		api_reply_error(call, 422, "invalid", "feature", "feature must be a flag key");
		goto out;
	}
	if (!json_is_array(jn) || json_array_size(jn) == 0) {
		api_reply_error(call, 422, "invalid", "nodes",
		                "nodes must be a non-empty array of node ids");
		goto out;
	}
	json_array_foreach(jn, i, v)
	{
		char field[32];

		if (!json_is_string(v) || json_string_length(v) == 0 ||
		    json_string_length(v) > NODE_MAX ||
		    strlen(json_string_value(v)) != json_string_length(v)) {
			snprintf(field, sizeof(field), "nodes[%zu]", i);
			api_reply_error(call, 422, "invalid", field,
			                "a node id must be a non-empty string of at most %d bytes",
			                NODE_MAX);
			goto out;
		}
	}
	cur = (json_t *)flags_def(fl, json_string_value(jf), NULL); /* read only */
	if (!cur) {
		reply_no_flag(call, str_c(json_string_value(jf)));
		goto out;
	}
	body = body_of(cur);
	ex = body ? json_deep_copy(json_object_get(body, "exclude")) : NULL;
	inc = body ? json_deep_copy(json_object_get(body, "include")) : NULL;
	if (!ex || !inc) {
		json_decref(ex);
		json_decref(inc);
		reply_nomem(call);
		goto out;
	}
	json_array_foreach(jn, i, v)
	{
		/* an exclusion is a safety tool: it also takes the node off `include` */
		array_remove(inc, json_string_value(v));
		if (!array_has(ex, json_string_value(v)))
			json_array_append(ex, v);
	}
	json_object_set_new(body, "exclude", ex);
	json_object_set_new(body, "include", inc);
	extra = json_pack("{s:O}", "nodes", jn);
	apply_change(call, json_string_value(jf), body, "flag.excluded", extra, 200);
	json_decref(extra);
out:
	json_decref(body);
	json_decref(in);
}

static void h_unexclude(struct api_call *call)
{
	struct flags *fl = call->api->flags->fl;
	char key[KEY_BUF], node[NODE_MAX + 1];
	json_t *body, *ex, *extra;

	if (key_param(call, key, sizeof(key)) != 0)
		return;
	if (pct_decode(call->params[1], node, sizeof(node)) != 0) {
		api_reply_error(call, 404, "not_found", NULL, "node %.*s is not excluded from %s",
		                (int)(call->params[1].len > 100 ? 100 : call->params[1].len),
		                call->params[1].p, key);
		return;
	}
	body = body_of(flags_def(fl, key, NULL));
	ex = body ? json_deep_copy(json_object_get(body, "exclude")) : NULL;
	if (!ex) {
		json_decref(body);
		reply_nomem(call);
		return;
	}
	if (!array_remove(ex, node)) {
		api_reply_error(call, 404, "not_found", NULL, "node %s is not excluded from %s",
		                node, key);
		json_decref(ex);
		json_decref(body);
		return;
	}
	json_object_set_new(body, "exclude", ex);
	extra = json_pack("{s:[s]}", "nodes", node);
	apply_change(call, key, body, "flag.unexcluded", extra, 200);
	json_decref(extra);
	json_decref(body);
}

/* ------------------------------------------------------------------------ */
/* OFREP                                                                      */

/*
 * Appends s as a JSON string.  s may be request bytes (a path's key) that
 * are not UTF-8: each byte outside a well-formed sequence becomes U+FFFD, so
 * the body is always valid JSON.
 */
static void json_str(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";

	buf_append(b, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x80) {
			size_t u = str_utf8_len((const unsigned char *)s + i, n - i);

			if (u) {
				buf_append(b, &s[i], u);
				i += u - 1;
			} else {
				buf_append(b, "\\ufffd", 6);
			}
		} else if (c == '"' || c == '\\') {
			char e[2] = {'\\', (char)c};

			buf_append(b, e, 2);
		} else if (c < 0x20) {
			char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

			buf_append(b, e, 6);
		} else {
			buf_append(b, &s[i], 1);
		}
	}
	buf_append(b, "\"", 1);
}

/* {"key", "value", "reason", "variant"} or {"key", "errorCode", "errorDetails"}. */
static void ofrep_result(struct buf *b, const char *key, size_t keylen, const struct flag_result *r)
{
	buf_append_str(b, "{\"key\":");
	json_str(b, key, keylen);
	if (r->error != FLAG_ERROR_NONE) {
		buf_append_str(b, ",\"errorCode\":\"");
		buf_append_str(b, flag_error_name(r->error));
		buf_append_str(b, "\",\"errorDetails\":");
		json_str(b, r->message ? r->message : "", r->message ? strlen(r->message) : 0);
		buf_append_str(b, "}");
		return;
	}
	buf_append_str(b, ",\"value\":");
	buf_append(b, r->value_json, r->value_json_len);
	buf_append_str(b, ",\"reason\":\"");
	buf_append_str(b, flag_reason_name(r->reason));
	buf_append_str(b, "\",\"variant\":");
	json_str(b, r->variant, strlen(r->variant));
	buf_append_str(b, "}");
}

/*
 * Parses an OFREP request body into *body (the context is its "context",
 * may be absent).  0, or the error (PARSE_ERROR / INVALID_CONTEXT) with a
 * message in why.
 */
static enum flag_error ofrep_parse(const struct api_call *call, json_t **body,
                                   struct flag_json_ctx *jc, char *why, size_t len)
{
	char field[256], num[64];
	json_error_t jerr;
	json_t *ctx = NULL, *tk;

	*body = NULL;
	flag_json_ctx_init(jc, NULL);
	if (str_trim(call->req->body).len == 0)
		return FLAG_ERROR_NONE; /* no body: the empty context */
	*body = json_loadb(call->req->body.p, call->req->body.len, JSON_REJECT_DUPLICATES, &jerr);
	if (!*body) {
		snprintf(why, len, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
		         jerr.text);
		return FLAG_ERROR_PARSE_ERROR;
	}
	if (!json_is_object(*body)) {
		snprintf(why, len, "the request body must be a JSON object {\"context\": {...}}");
		return FLAG_ERROR_PARSE_ERROR;
	}
	if (api_json_numbers_check(call->req->body.p, call->req->body.len, field, sizeof(field),
	                           num, sizeof(num)) != 0) {
		snprintf(why, len, "%.120s: the number %.60s is out of range", field, num);
		return FLAG_ERROR_INVALID_CONTEXT;
	}
	ctx = json_object_get(*body, "context");
	if (ctx && json_is_null(ctx))
		ctx = NULL;
	if (flag_json_ctx_init(jc, ctx) != 0) {
		snprintf(why, len, "context must be a JSON object");
		return FLAG_ERROR_INVALID_CONTEXT;
	}
	tk = ctx ? json_object_get(ctx, "targetingKey") : NULL;
	if (tk && !json_is_string(tk) && !json_is_null(tk)) {
		snprintf(why, len, "context.targetingKey must be a string");
		return FLAG_ERROR_INVALID_CONTEXT;
	}
	return FLAG_ERROR_NONE;
}

static void ofrep_reply(struct api_call *call, int status)
{
	call->resp->status = status;
	call->resp->content_type = "application/json";
	buf_append(&call->resp->body, "\n", 1);
}

/*
 * The start of both OFREP handlers: parses the body into *body and jc and
 * takes the published set (the control thread's reference) into *snap.  0,
 * or -1 after replying with the counted error ({"key", ...} when key is not
 * NULL: the single evaluation).
 */
static int ofrep_begin(struct api_call *call, const struct str *key, json_t **body,
                       struct flag_json_ctx *jc, const struct flags_snap **snap)
{
	struct flags *fl = call->api->flags->fl;
	struct buf *b = &call->resp->body;
	enum flag_error pe;
	char why[256];

	buf_reset(b);
	*snap = flags_current(fl);
	pe = ofrep_parse(call, body, jc, why, sizeof(why));
	if (pe == FLAG_ERROR_NONE && *snap)
		return 0;
	if (pe == FLAG_ERROR_NONE) {
		pe = FLAG_ERROR_GENERAL;
		snprintf(why, sizeof(why), "no flag state is loaded");
	}
	json_decref(*body);
	*body = NULL;
	flags_count_error(fl, pe);
	buf_append_str(b, "{");
	if (key) {
		buf_append_str(b, "\"key\":");
		json_str(b, key->p, key->len);
		buf_append_str(b, ",");
	}
	buf_printf(b, "\"errorCode\":\"%s\",\"errorDetails\":", flag_error_name(pe));
	json_str(b, why, strlen(why));
	buf_append_str(b, "}");
	ofrep_reply(call, pe == FLAG_ERROR_GENERAL ? 500 : 400);
	return -1;
}

static void h_ofrep_one(struct api_call *call)
{
	struct flags *fl = call->api->flags->fl;
	const struct flags_snap *s;
	struct buf *b = &call->resp->body;
	struct str key = call->params[0];
	struct flag_json_ctx jc;
	struct flag_result r;
	const struct flags_item *it;
	json_t *body = NULL;

	if (ofrep_begin(call, &key, &body, &jc, &s) != 0)
		return;
	it = flags_snap_get(s, key.p, key.len);
	flag_eval(flags_item_flag(it), flag_ctx_json_attr, &jc, &r);
	if (r.error != FLAG_ERROR_NONE) {
		flags_count_error(fl, r.error);
		if (r.error == FLAG_ERROR_FLAG_NOT_FOUND)
			r.message = "flag not found";
	} else {
		flags_item_count(it, &r);
	}
	ofrep_result(b, key.p, key.len, &r);
	ofrep_reply(call, r.error == FLAG_ERROR_NONE             ? 200
	                  : r.error == FLAG_ERROR_FLAG_NOT_FOUND ? 404
	                                                         : 400);
	json_decref(body);
}

/* Whether an If-None-Match value lists etag (weak comparison, "*" matches). */
static int etag_matches(struct str inm, const char *etag)
{
	struct str want = str_c(etag);
	size_t i = 0;

	while (i < inm.len) {
		size_t j = i;
		struct str t;

		while (j < inm.len && inm.p[j] != ',')
			j++;
		t = str_trim(str_make(inm.p + i, j - i));
		if (t.len >= 2 && t.p[0] == 'W' && t.p[1] == '/')
			t = str_make(t.p + 2, t.len - 2);
		if (str_eq_c(t, "*") || str_eq(t, want))
			return 1;
		i = j + 1;
	}
	return 0;
}

static void h_ofrep_bulk(struct api_call *call)
{
	struct flags *fl = call->api->flags->fl;
	const struct flags_snap *s;
	struct buf *b = &call->resp->body;
	struct flag_json_ctx jc;
	json_t *body = NULL;
	size_t n;

	if (ofrep_begin(call, NULL, &body, &jc, &s) != 0)
		return;
	n = flags_snap_count(s);
	buf_append_str(b, "{\"flags\":[");
	for (size_t i = 0; i < n; i++) {
		const struct flag *f = flags_item_flag(flags_snap_at(s, i));
		struct flag_result r;

		flag_eval(f, flag_ctx_json_attr, &jc, &r);
		if (i)
			buf_append(b, ",", 1);
		ofrep_result(b, flag_key(f), strlen(flag_key(f)), &r);
	}
	buf_append_str(b, "]}");
	snprintf(call->resp->etag, sizeof(call->resp->etag), "\"%llu-%08x%08x\"",
	         (unsigned long long)flags_snap_revision(s),
	         murmur3_x86_32(buf_head(b), buf_used(b), 1),
	         murmur3_x86_32(buf_head(b), buf_used(b), 0x85ebca6bu));
	if (call->req->if_none_match.len &&
	    etag_matches(call->req->if_none_match, call->resp->etag)) {
		buf_reset(b);
		call->resp->status = 304;
		call->resp->content_type = "application/json";
		goto out;
	}
	/* counted when the values are delivered (not on 304) */
	for (size_t i = 0; i < n; i++) {
		const struct flags_item *it = flags_snap_at(s, i);
		struct flag_result r;

		if (flag_eval(flags_item_flag(it), flag_ctx_json_attr, &jc, &r) == 0)
			flags_item_count(it, &r);
		else
			flags_count_error(fl, r.error);
	}
	ofrep_reply(call, 200);
out:
	json_decref(body);
}

static const struct api_route routes[] = {
    {"GET", "/v1/feature-flags", SCOPE_READ, h_list},
    {"POST", "/v1/feature-flags", SCOPE_FLAGS_WRITE, h_post},
    {"GET", "/v1/feature-flags/stream", SCOPE_READ, h_stream},
    {"POST", "/v1/feature-flags/exclude", SCOPE_FLAGS_WRITE, h_exclude},
    {"GET", "/v1/feature-flags/{key}", SCOPE_READ, h_get},
    {"PUT", "/v1/feature-flags/{key}", SCOPE_FLAGS_WRITE, h_put},
    {"DELETE", "/v1/feature-flags/{key}", SCOPE_FLAGS_WRITE, h_delete},
    {"DELETE", "/v1/feature-flags/{key}/exclude/{node}", SCOPE_FLAGS_WRITE, h_unexclude},
    {"POST", "/ofrep/v1/evaluate/flags", SCOPE_EVALUATE, h_ofrep_bulk},
    {"POST", "/ofrep/v1/evaluate/flags/{key}", SCOPE_EVALUATE, h_ofrep_one},
};

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                  */

static json_t *health(void *ctx)
{
	struct api_flags *af = ctx;

	return json_pack("{s:s, s:I, s:I, s:I, s:I}", "status", "ok", "flags",
	                 (json_int_t)flags_count(af->fl), "revision",
	                 (json_int_t)flags_revision(af->fl), "subscribers",
	                 (json_int_t)flags_stream_subscribers(af->st), "dropped_subscribers",
	                 (json_int_t)flags_stream_dropped(af->st));
}

struct api_flags *api_flags_register(struct api *api, struct flags *fl, struct flags_stream *st)
{
	struct api_flags *af = calloc(1, sizeof(*af));

	if (!af)
		return NULL;
	af->api = api;
	af->fl = fl;
	af->st = st;
	if (api_add_routes(api, routes, sizeof(routes) / sizeof(routes[0])) != 0 ||
	    api_add_health(api, "flags", health, af) != 0) {
		free(af);
		return NULL;
	}
	api->flags = af;
	return af;
}

struct api_flags *api_flags_new(struct api *api, struct state *state, struct loop *loop,
                                const struct config *cfg, char *err, size_t errlen)
{
	struct state *own = NULL;
	struct flags *fl = NULL;
	struct flags_stream *st = NULL;
	struct api_flags *af;

	if (!state) {
		state = own = state_new(api->store);
		if (!state)
			goto out_nomem;
	}
	fl = flags_new(state, cfg, err, errlen);
	if (!fl)
		goto out_free;
	st = flags_stream_new(fl, loop);
	if (!st)
		goto out_nomem;
	af = api_flags_register(api, fl, st);
	if (!af) {
		snprintf(err, errlen, "too many route tables");
		goto out_free;
	}
	af->own_state = own;
	af->own = 1;
	return af;
out_nomem:
	snprintf(err, errlen, "out of memory");
out_free:
	flags_stream_free(st);
	flags_free(fl);
	state_free(own);
	return NULL;
}

struct api_flags *api_flags_init(struct api *api, struct loop *loop, const struct config *cfg,
                                 char *err, size_t errlen)
{
	return api_flags_new(api, NULL, loop, cfg, err, errlen);
}

struct flags *api_flags_module(struct api_flags *af)
{
	return af ? af->fl : NULL;
}

void api_flags_write_prometheus(struct api_flags *af, struct buf *out)
{
	if (!af)
		return;
	flags_write_prometheus(af->fl, out);
	buf_printf(out,
	           "# HELP canaryd_stream_subscribers Open feature-flag stream connections.\n"
	           "# TYPE canaryd_stream_subscribers gauge\n"
	           "canaryd_stream_subscribers %zu\n"
	           "# HELP canaryd_stream_dropped_total Stream subscribers dropped for falling "
	           "behind.\n"
	           "# TYPE canaryd_stream_dropped_total counter\n"
	           "canaryd_stream_dropped_total %llu\n",
	           flags_stream_subscribers(af->st),
	           (unsigned long long)flags_stream_dropped(af->st));
}

int api_flags_check(struct api_flags *af, const struct config *cfg, char *err, size_t errlen)
{
	return flags_check(af->fl, cfg, err, errlen) ? -1 : 0;
}

int api_flags_reload(struct api_flags *af, const struct config *cfg, const char *actor, char *err,
                     size_t errlen)
{
	return flags_reload(af->fl, cfg, actor, err, errlen) ? -1 : 0;
}

void api_flags_free(struct api_flags *af)
{
	if (!af)
		return;
	if (af->api && af->api->flags == af)
		af->api->flags = NULL;
	if (af->own) {
		flags_stream_free(af->st);
		flags_free(af->fl);
		state_free(af->own_state);
	}
	free(af);
}
