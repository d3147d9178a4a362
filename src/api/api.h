/*
 * api.h - the admin REST API (SPEC 7), independent of sockets.
 *
 * api_handle() maps one complete request (method, path, query, a few headers,
 * the buffered body) to one response.  The daemon's glue moves bytes between
 * the HTTP server and this function; unit tests call it directly.  Runs on
 * the control thread only: it may use the store.
 *
 * Routes are a table of {method, pattern, scope, handler}; a pattern segment
 * "{name}" captures one path segment.  Later modules (flags, services,
 * rollouts) add their routes with api_add_routes().
 */
#ifndef API_API_H
#define API_API_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "api/auth.h"
#include "core/buf.h"
#include "core/str.h"

struct store;
struct services_backend;
struct rollout_engine;
struct api_flags;

struct api_request {
	struct str method;
	struct str path; /* without the query */
	struct str query;
	struct str authorization;
	struct str if_none_match;
	struct str last_event_id;
	struct str body;
};

struct http_conn;

/*
 * A response that keeps its connection (Server-Sent Events).  A handler sets
 * resp->stream instead of a body; the glue (admin.c) then calls
 * start(stream, conn) in place of sending a response, and closed(stream)
 * exactly once when that connection has gone away (also when start failed).
 * The handler owns the object; closed() is where it may free it.
 */
struct api_stream {
	void (*start)(struct api_stream *s, struct http_conn *conn);
	void (*closed)(struct api_stream *s);
};

struct api_response {
	int status;
	const char *content_type; /* static string */
	char etag[80];            /* sent as ETag when non-empty */
	/* static; NULL: "no-store" (the dashboard's files: no-cache) */
	const char *cache_control;
	struct buf body;
	struct api_stream *stream; /* see struct api_stream; NULL for a plain response */
};

#define API_MAX_PARAMS 4

struct api;

/* One call in flight: the request, its response, captured params, the actor. */
struct api_call {
	struct api *api;
	const struct api_request *req;
	struct api_response *resp;
	struct str params[API_MAX_PARAMS];
	int nparams;
	const char *actor; /* token name, or "anonymous" on public reads */
};

typedef void (*api_handler_fn)(struct api_call *call);

struct api_route {
	const char *method;
	const char *pattern;
	unsigned scope; /* enum auth_scope; 0 = no auth at all (liveness) */
	api_handler_fn fn;
};

/* A listener as shown by /v1/health/detailed. */
struct api_listener_info {
	const char *name;
	const char *addr;
	int up;
};

/* Writes extra Prometheus text (the proxy's, the engine's ...). */
typedef void (*api_metrics_fn)(void *ctx, struct buf *out);

/*
 * A component's section of GET /v1/health/detailed: a new reference to a
 * JSON object with at least "status" ("ok" or another word).  Modules
 * register one with api_add_health(), so api.c calls into none of them.
 */
typedef json_t *(*api_health_fn)(void *ctx);

#define API_MAX_HEALTH 8

struct api_health_hook {
	const char *name; /* the key under "components" (static) */
	api_health_fn fn;
	void *ctx;
};

struct api {
	struct store *store;
	const struct auth_token *tokens;
	size_t ntokens;
	int public_read;
	int evaluate_public;
	uint64_t config_revision;
	const char *config_path;
	uint64_t start_wall_ms;
	const struct api_listener_info *listeners;
	size_t nlisteners;
	int (*listener_up_fn)(void *ctx, const char *name); /* NULL: use listeners[].up */
	void *listener_up_ctx;
	api_metrics_fn metrics_fn;
	void *metrics_ctx;
	/*
	 * Reloads the configuration (POST /v1/config/reload, like SIGHUP).
	 * Returns 0, or -1 with a message in msg.  NULL: the route answers 501.
	 */
	int (*reload_fn)(void *ctx, const char *actor, char *msg, size_t msglen);
	void *reload_ctx;

	struct services_backend *services; /* set by api_services_init() */
	struct api_flags *flags;           /* set by api_flags_init() */
	struct rollout_engine *rollouts;   /* set by api_rollouts_init() */
	struct fleet *fleet;               /* set by api_fleet_init(); NULL: one node */

	const struct api_route *routes[16];
	size_t nroutes[16];
	size_t ntables;
	struct api_health_hook health[API_MAX_HEALTH];
	size_t nhealth;
	uint64_t requests_by_class[6]; /* 1xx..5xx responses served */
};

/* Initialises api with the built-in routes (health, metrics, events). */
void api_init(struct api *api);

/* Adds a table of n routes; the table must outlive api.  Returns 0 or -ENOSPC. */
int api_add_routes(struct api *api, const struct api_route *routes, size_t n);

/*
 * Adds a "components" section to /v1/health/detailed (name static, fn and
 * ctx borrowed; they must outlive api).  Returns 0 or -ENOSPC.
 */
int api_add_health(struct api *api, const char *name, api_health_fn fn, void *ctx);

/* Response lifecycle: resp_init before api_handle, resp_release after sending. */
void api_response_init(struct api_response *resp);
void api_response_release(struct api_response *resp);

/* Handles one request; always fills resp (status, type, body). */
void api_handle(struct api *api, const struct api_request *req, struct api_response *resp);

/* ---- helpers for handlers ---- */

/* Sets a JSON body from obj (stolen) with status. */
void api_reply_json(struct api_call *call, int status, json_t *obj);
/*
 * Sets the SPEC 7 error body {"error":{"code","message","field"}}; field may
 * be NULL.  The message is printf-formatted.
 */
void api_reply_error(struct api_call *call, int status, const char *code, const char *field,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/*
 * The HTTP status and SPEC 7 error code of a module's return code (err.h
 * code or negative errno): ERR_NOTFOUND 404 not_found, ERR_STATE and
 * ERR_CONFLICT 409 conflict, ERR_INVALID 422 invalid, ERR_FORBIDDEN 403
 * forbidden, ERR_UNAVAILABLE 503 store_unavailable, ERR_STORE 500
 * store_error, -ENOMEM and anything else 500 internal.  *code may be NULL.
 */
int api_err_status(int err, const char **code);

/*
 * Replies to a failed module call: api_err_status(err) with msg (NULL: the
 * code's text) and field (may be NULL).
 */
void api_reply_err(struct api_call *call, int err, const char *field, const char *msg);

/*
 * Parses the request body as a JSON object.  On failure replies 400 (naming
 * the line/column), or 422 naming the field of a number that a double cannot
 * hold (api_json_numbers_check), and returns NULL.  The caller owns the result.
 */
json_t *api_body_json(struct api_call *call);

/*
 * Checks the numbers of a JSON text that jansson accepted: a number whose
 * value underflows a double (1e-400 would silently become 0, 1e-310 a
 * subnormal) is refused, as nothing here can tell it from what was meant;
 * so is any number written with 512 characters or more.
 * 0 when all are fine; -1 with the number's field path written to field
 * ("rollout.on", "exclude[2]", "" for a top-level value; cut to flen) and
 * its text to num (cut to numlen).
 */
int api_json_numbers_check(const char *p, size_t len, char *field, size_t flen, char *num,
                           size_t numlen);

/*
 * Checks that every member of obj is named in allowed[0..n).  0, or -1 after
 * replying 422 "unknown field" naming prefix + the member ("" at the top of
 * a body, "delay." inside a nested object).
 */
int api_only_keys(struct api_call *call, const json_t *obj, const char *prefix,
                  const char *const *allowed, size_t n);

/* Formats a wall-clock ms value as RFC 3339 UTC with milliseconds. */
void api_format_time(uint64_t wall_ms, char *out, size_t outlen);

#endif
