/*
 * events_stream.h - GET /v1/events/stream (SPEC 7): the audit log live, as
 * Server-Sent Events, for the dashboard and `canaryctl events --follow`.
 *
 * Every event appended to the store (by this node or, in fleet mode, by any
 * node) is sent as one SSE event: "id:" the event id, "event:" its kind,
 * "data:" the event as GET /v1/events shows it ({id, ts, actor, kind,
 * subject, details}).  A client that reconnects with Last-Event-ID gets
 * what it missed first (up to EVENTS_STREAM_CATCHUP events; beyond that one
 * "reset" event tells it to reload); without one it starts at the newest
 * event.  The store is polled every 250 ms while someone listens
 * ($CANARYD_EVENTS_POLL_MS), so no commit path needs a hook.
 *
 * Bounded: at most EVENTS_STREAM_MAX_SUBS subscribers (503 beyond), each
 * with the server's SSE backlog cap (a slow one is dropped and counted).
 *
 * Threads: control thread only (the admin loop).
 */
#ifndef API_EVENTS_STREAM_H
#define API_EVENTS_STREAM_H

#include <stddef.h>
#include <stdint.h>

struct api;
struct loop;
struct api_events_stream;

#define EVENTS_STREAM_MAX_SUBS 256
#define EVENTS_STREAM_CATCHUP  5000

/*
 * Registers the route on api (borrowed: api->store is read at each poll)
 * and returns the stream, which runs its poll and heartbeat timers on loop.
 * NULL on ENOMEM or a full route table.
 */
struct api_events_stream *api_events_stream_new(struct api *api, struct loop *loop);

/*
 * Stops the timers and frees the stream.  Call after the admin listener is
 * freed (its connections, and so every subscriber, are gone).  NULL: no-op.
 */
void api_events_stream_free(struct api_events_stream *es);

/* Open subscribers, and subscribers dropped for falling behind (ever). */
size_t api_events_stream_subscribers(const struct api_events_stream *es);
uint64_t api_events_stream_dropped(const struct api_events_stream *es);

#endif
