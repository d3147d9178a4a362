/*
 * api/events_stream.c - GET /v1/events/stream: the audit log as SSE.  See
 * events_stream.h.
 */
#include "api/events_stream.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/auth.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/str.h"
#include "http/server.h"
#include "store/store.h"

#define POLL_MS        250
#define HEARTBEAT_MS   15000
#define PAGE           500
#define PAGES_PER_POLL 8

struct sub {
	struct api_stream hooks; /* first: admin.c gives it back */
	struct api_events_stream *es;
	struct http_conn *conn; /* NULL once dropped (the close follows) */
	int64_t last_id;        /* the newest event this subscriber has */
	int resume;
	size_t slot; /* index in es->subs while attached, else SIZE_MAX */
};

struct api_events_stream {
	struct api *api;
	struct loop *loop;
	struct loop_timer poll, hb;
	uint64_t poll_ms, hb_ms;
	struct sub *subs[EVENTS_STREAM_MAX_SUBS];
	size_t nsubs;
	int64_t cursor; /* the newest event id sent (valid when have_cursor) */
	int have_cursor;
	uint64_t dropped;
};

/*
 * The route handler has no context but the api; there is one admin API per
 * process, so one stream: set by api_events_stream_new, cleared by _free.
 */
static struct api_events_stream *the_stream;

static uint64_t env_ms(const char *name, uint64_t def)
{
	const char *v = getenv(name);
	unsigned long long x;

	if (v && str_to_u64(str_c(v), &x) == 0 && x > 0 && x < 3600000)
		return x;
	return def;
}

static void drop(struct sub *s)
{
	if (!s->conn)
		return;
	s->es->dropped++;
	http_conn_close(s->conn);
	s->conn = NULL;
}

/* Sends one event row to s; 0, or -1 when s was dropped. */
static int send_row(struct sub *s, const json_t *row, int64_t id)
{
	char idbuf[24];
	const char *kind = json_string_value(json_object_get(row, "kind"));
	char *text;
	int rc;

	if (!s->conn)
		return -1;
	text = json_dumps(row, JSON_COMPACT);
	if (!text) {
		drop(s);
		return -1;
	}
	snprintf(idbuf, sizeof(idbuf), "%" PRId64, id);
	rc = http_conn_sse_send(s->conn, str_c(idbuf), str_c(kind ? kind : "event"), str_c(text));
	free(text);
	if (rc < 0) {
		/* the server closed it (backlog over its cap): counted, not retried */
		s->es->dropped++;
		s->conn = NULL;
		return -1;
	}
	s->last_id = id;
	return 0;
}

static int64_t newest_id(struct api_events_stream *es, int *ok)
{
	struct store_events_query q = {.limit = 1, .descending = 1};
	json_t *arr = NULL;
	int64_t id = 0;

	*ok = store_events_query(es->api->store, &q, &arr) == 0;
	if (*ok && json_array_size(arr))
		id = json_integer_value(json_object_get(json_array_get(arr, 0), "id"));
	json_decref(arr);
	return id;
}

/* Sends s what it missed up to es->cursor (bounded), or a "reset" event. */
static void catch_up(struct sub *s)
{
	struct api_events_stream *es = s->es;
	size_t sent = 0;

	if (s->last_id > es->cursor)
		goto reset; /* a newer id than the store has: another database */
	while (s->conn && s->last_id < es->cursor) {
		json_t *arr = NULL, *row;
		int64_t before = s->last_id;
		size_t i;

		if (store_events_list(es->api->store, s->last_id, PAGE, NULL, &arr) != 0) {
			drop(s);
			return;
		}
		if (!json_array_size(arr)) {
			json_decref(arr);
			break;
		}
		json_array_foreach(arr, i, row)
		{
			int64_t id = json_integer_value(json_object_get(row, "id"));

			if (id > es->cursor)
				break;
			if (++sent > EVENTS_STREAM_CATCHUP) {
				json_decref(arr);
				goto reset;
			}
			if (send_row(s, row, id) != 0)
				break;
		}
		json_decref(arr);
		if (s->last_id == before)
			break; /* nothing at or below the cursor any more (retention) */
	}
	return;
reset:
	if (s->conn) {
		char idbuf[24], data[64];

		snprintf(idbuf, sizeof(idbuf), "%" PRId64, es->cursor);
		snprintf(data, sizeof(data), "{\"next\":%" PRId64 "}", es->cursor);
		if (http_conn_sse_send(s->conn, str_c(idbuf), STR_LIT("reset"), str_c(data)) < 0) {
			es->dropped++;
			s->conn = NULL;
			return;
		}
		s->last_id = es->cursor;
	}
}

static void poll_tick(struct loop *loop, struct loop_timer *t)
{
	struct api_events_stream *es = t->data;

	if (es->nsubs && es->have_cursor) {
		for (int page = 0; page < PAGES_PER_POLL; page++) {
			json_t *arr = NULL, *row;
			size_t i, n;

			/* a store that is away (fleet mode) is tried again next tick */
			if (store_events_list(es->api->store, es->cursor, PAGE, NULL, &arr) != 0)
				break;
			n = json_array_size(arr);
			json_array_foreach(arr, i, row)
			{
				int64_t id = json_integer_value(json_object_get(row, "id"));

				for (size_t k = 0; k < es->nsubs; k++)
					if (es->subs[k]->last_id < id)
						send_row(es->subs[k], row, id);
				if (id > es->cursor)
					es->cursor = id;
			}
			json_decref(arr);
			if (n < PAGE)
				break;
		}
	}
	loop_timer_start(loop, t, es->poll_ms);
}

static void heartbeat(struct loop *loop, struct loop_timer *t)
{
	struct api_events_stream *es = t->data;

	for (size_t k = 0; k < es->nsubs; k++)
		if (es->subs[k]->conn &&
		    http_conn_sse_comment(es->subs[k]->conn, STR_LIT("heartbeat")) < 0) {
			es->dropped++;
			es->subs[k]->conn = NULL;
		}
	loop_timer_start(loop, t, es->hb_ms);
}

static void stream_start(struct api_stream *hs, struct http_conn *conn)
{
	struct sub *s = (struct sub *)hs;
	struct api_events_stream *es = s->es;
	int ok = 1;

	if (!es || es->nsubs == EVENTS_STREAM_MAX_SUBS) {
		http_conn_respond_error(conn, 503, "unavailable",
		                        "too many event stream subscribers");
		return;
	}
	if (!es->have_cursor) {
		es->cursor = newest_id(es, &ok);
		if (!ok) {
			http_conn_respond_error(conn, 503, "store_unavailable",
			                        "the event log cannot be read");
			return;
		}
		es->have_cursor = 1;
	}
	if (http_conn_start_sse(conn, NULL, 0) != 0) {
		http_conn_close(conn);
		return;
	}
	s->conn = conn;
	s->slot = es->nsubs;
	es->subs[es->nsubs++] = s;
	if (!s->resume)
		s->last_id = es->cursor;
	else
		catch_up(s);
	/* tells the client the stream is up even when nothing happens */
	if (s->conn && http_conn_sse_comment(s->conn, STR_LIT("ready")) < 0) {
		es->dropped++;
		s->conn = NULL;
	}
}

static void stream_closed(struct api_stream *hs)
{
	struct sub *s = (struct sub *)hs;
	struct api_events_stream *es = s->es;

	if (es && s->slot != SIZE_MAX) {
		es->subs[s->slot] = es->subs[--es->nsubs];
		es->subs[s->slot]->slot = s->slot;
		if (!es->nsubs)
			es->have_cursor = 0; /* the next subscriber starts at the newest */
	}
	free(s);
}

static void h_stream(struct api_call *call)
{
	struct sub *s;
	struct str id = str_trim(call->req->last_event_id);
	unsigned long long last;

	if (!the_stream || the_stream->api != call->api) {
		api_reply_error(call, 501, "not_implemented", NULL,
		                "the event stream is not running");
		return;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		api_reply_err(call, -ENOMEM, NULL, NULL);
		return;
	}
	s->hooks.start = stream_start;
	s->hooks.closed = stream_closed;
	s->es = the_stream;
	s->slot = SIZE_MAX;
	if (id.len && str_to_u64(id, &last) == 0 && last <= INT64_MAX) {
		s->resume = 1;
		s->last_id = (int64_t)last;
	}
	call->resp->status = 200;
	call->resp->stream = &s->hooks;
}

struct api_events_stream *api_events_stream_new(struct api *api, struct loop *loop)
{
	static const struct api_route routes[] = {
	    {"GET", "/v1/events/stream", SCOPE_READ, h_stream},
	};
	struct api_events_stream *es = calloc(1, sizeof(*es));

	if (!es)
		return NULL;
	es->api = api;
	es->loop = loop;
	es->poll_ms = env_ms("CANARYD_EVENTS_POLL_MS", POLL_MS);
	es->hb_ms = env_ms("CANARYD_SSE_HEARTBEAT_MS", HEARTBEAT_MS);
	if (api_add_routes(api, routes, sizeof(routes) / sizeof(routes[0])) != 0) {
		free(es);
		return NULL;
	}
	loop_timer_init(&es->poll, poll_tick, es);
	loop_timer_init(&es->hb, heartbeat, es);
	loop_timer_start(loop, &es->poll, es->poll_ms);
	loop_timer_start(loop, &es->hb, es->hb_ms);
	the_stream = es;
	return es;
}

void api_events_stream_free(struct api_events_stream *es)
{
	if (!es)
		return;
	loop_timer_stop(es->loop, &es->poll);
	loop_timer_stop(es->loop, &es->hb);
	for (size_t k = 0; k < es->nsubs; k++) {
		es->subs[k]->es = NULL; /* their connections free them */
		es->subs[k]->slot = SIZE_MAX;
	}
	if (the_stream == es)
		the_stream = NULL;
	free(es);
}

size_t api_events_stream_subscribers(const struct api_events_stream *es)
{
	return es ? es->nsubs : 0;
}

uint64_t api_events_stream_dropped(const struct api_events_stream *es)
{
	return es ? es->dropped : 0;
}
