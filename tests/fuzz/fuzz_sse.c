/*
 * libFuzzer target for libcanary's Server-Sent Events parser (lib/sse.c,
 * included).  The first input byte picks a slice size; the rest is fed as
 * one piece and again in slices of that size, as bytes come off a socket.
 * Both runs must see the same events (name, id, data) and end with the same
 * status; every event's data is NUL-terminated at its length and the names
 * fit their bound.  Then the parser is reset and fed once more (a
 * reconnect), and must again agree.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sse.c"

#define SSE_FUZZ_MAX 512 /* small, so the -ENOBUFS paths are reached */

struct sse_seen {
	size_t events;
	uint64_t sum;
};

static uint64_t sse_hash(uint64_t h, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
	return h * 31 + n;
}

static int sse_on_event(void *user, const struct sse_event *ev)
{
	struct sse_seen *s = user;

	if (ev->data[ev->len] != '\0' || strlen(ev->event) > SSE_NAME_MAX ||
	    strlen(ev->id) > SSE_NAME_MAX || ev->len > SSE_FUZZ_MAX)
		abort();
	s->events++;
	s->sum = sse_hash(s->sum, ev->event, strlen(ev->event));
	s->sum = sse_hash(s->sum, ev->id, strlen(ev->id));
	s->sum = sse_hash(s->sum, ev->data, ev->len);
	/* an event named "stop" stops the parse, as a callback may */
	return strcmp(ev->event, "stop") == 0 ? 7 : 0;
}

static int sse_run(const char *buf, size_t len, size_t step, struct sse_parser *p,
                   struct sse_seen *seen)
{
	int rc = 0;

	for (size_t off = 0; off < len && rc == 0; off += step)
		rc = sse_feed(p, buf + off, len - off < step ? len - off : step);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sse_seen a = {0}, b = {0}, c = {0};
	struct sse_parser pa, pb;
	size_t step;
	int ra, rb, rc;

	if (size < 1)
		return 0;
	step = (size_t)data[0] % 13 + 1;
	data++;
	size--;

	sse_init(&pa, SSE_FUZZ_MAX, sse_on_event, &a);
	sse_init(&pb, SSE_FUZZ_MAX, sse_on_event, &b);
	ra = sse_run((const char *)data, size, size ? size : 1, &pa, &a);
	rb = sse_run((const char *)data, size, step, &pb, &b);
	/* a stop or an overflow may come in a different piece; up to then they agree */
	if (ra == 0 && rb == 0 &&
	    (a.events != b.events || a.sum != b.sum || pa.retry_ms != pb.retry_ms ||
	     pa.comments != pb.comments || strcmp(pa.id, pb.id) != 0))
		abort();
	if ((ra == 0) != (rb == 0))
		abort();

	sse_reset(&pa);
	pa.user = &c;
	rc = sse_run((const char *)data, size, step, &pa, &c);
	if (rc != rb || c.events != b.events || c.sum != b.sum)
		abort();
	sse_release(&pa);
	sse_release(&pb);
	return 0;
}
