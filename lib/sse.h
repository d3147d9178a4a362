/*
 * sse.h - an incremental Server-Sent Events parser (WHATWG HTML, "event
 * stream interpretation"), used by the client's stream thread.
 *
 * Bytes arrive in arbitrary pieces; lines end in CRLF, LF or CR (a CR at the
 * end of one piece and an LF at the start of the next are one line end).
 * Fields: "data" (joined with "\n"), "event", "id" (kept across events, as
 * the spec's last event ID buffer; an id with a NUL is ignored), "retry"
 * (digits, reported); lines starting with ':' are comments (heartbeats);
 * an empty line dispatches.  A leading UTF-8 BOM is skipped.  Memory is
 * bounded: a line or an event's data over max bytes is an error.
 */
#ifndef LIB_SSE_H
#define LIB_SSE_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define SSE_NAME_MAX 64 /* longest event name / id kept (longer: -ENOBUFS) */

struct sse_event {
	const char *event; /* "message" when the event had no event field */
	const char *id;    /* the last event ID ("" when none yet) */
	const char *data;  /* NUL-terminated, without the final "\n" */
	size_t len;
};

/* Return non-zero to stop parsing: sse_feed returns that value. */
typedef int (*sse_event_fn)(void *user, const struct sse_event *ev);

struct sse_parser {
	sse_event_fn on_event;
	void *user;
	struct buf line; /* the line being read */
	struct buf data; /* the event's data so far */
	char event[SSE_NAME_MAX + 1];
	char id[SSE_NAME_MAX + 1];
	uint64_t comments; /* comment lines seen (heartbeats) */
	long retry_ms;     /* last valid retry field, -1 when none */
	int cr;            /* the last byte was a CR */
	int bom_checked;
	int has_data; /* a data field was seen in this event */
};

/* Prepares p; lines and event data may each use up to max bytes. */
void sse_init(struct sse_parser *p, size_t max, sse_event_fn fn, void *user);
/* Frees the buffers (p is reusable after sse_reset or sse_init). */
void sse_release(struct sse_parser *p);
/* Forgets a partial line and event, and the last event ID: a new connection. */
void sse_reset(struct sse_parser *p);

/*
 * Parses buf[0..len).  Returns 0, -ENOBUFS when a line or an event is over
 * the bound (the stream is unusable: reconnect), -ENOMEM, or the non-zero
 * value of on_event that stopped it.
 */
int sse_feed(struct sse_parser *p, const char *buf, size_t len);

#endif
