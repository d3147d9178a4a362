/*
 * stream.h - the feature-flag stream (GET /v1/feature-flags/stream, SPEC 7,
 * docs/flags.md): Server-Sent Events of the flag state for client libraries.
 *
 * A new subscriber gets one "ruleset" event with every flag, then one
 * "change" event per change (id: the revision).  A subscriber that sends
 * Last-Event-ID within the recent changes kept (1,024) gets only what it
 * missed.  A configuration reload sends every subscriber a new ruleset.
 *
 * Bounded memory per subscriber, not a bounded ruleset: the ruleset event
 * is written in chunks of about 32 KiB from a reference to the snapshot it
 * describes, the next chunk only once the connection's backlog is below
 * 64 KiB; changes committed meanwhile follow once the ruleset is complete
 * (from the recent changes, or a newer ruleset when they are gone).  A
 * subscriber whose backlog passes the server's SSE cap is dropped (it
 * reconnects) and counted.
 *
 * Threads: control thread only (the admin loop).
 */
#ifndef FLAGS_STREAM_H
#define FLAGS_STREAM_H

#include <stddef.h>
#include <stdint.h>

struct flags;
struct loop;
struct http_conn;
struct flags_stream;
struct flags_sub;

/*
 * A stream over fl (borrowed; must outlive it), which it makes its
 * listener.  loop runs the heartbeat (every $CANARYD_SSE_HEARTBEAT_MS,
 * default 15000) and the chunk feeding.  NULL on ENOMEM.
 */
struct flags_stream *flags_stream_new(struct flags *fl, struct loop *loop);

/*
 * Frees the stream.  Subscribers still attached are detached (their
 * connections keep them until flags_stream_detach).  NULL is a no-op.
 */
void flags_stream_free(struct flags_stream *st);

/*
 * Starts the SSE response on conn and subscribes it.  resume: the client
 * sent Last-Event-ID last_id.  Returns the subscriber (pass it to
 * flags_stream_detach exactly once, when conn has gone away), or NULL on
 * ENOMEM (nothing to detach; the caller closes conn).
 */
struct flags_sub *flags_stream_attach(struct flags_stream *st, struct http_conn *conn, int resume,
                                      uint64_t last_id);

/* conn has gone away: unsubscribes and frees sub.  NULL is a no-op. */
void flags_stream_detach(struct flags_sub *sub);

/* Open subscribers, and subscribers dropped for falling behind (ever). */
size_t flags_stream_subscribers(const struct flags_stream *st);
uint64_t flags_stream_dropped(const struct flags_stream *st);

#endif
