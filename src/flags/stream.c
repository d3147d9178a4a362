/*
 * stream.c - Server-Sent Events of the flag state (see stream.h).
 *
 * A subscriber is either live (it has every change up to sent_rev and gets
 * each new one as it is applied) or feeding (a ruleset event is being
 * written from a held snapshot; cursor says how far).  Feeding writes raw
 * body chunks of one SSE event ("id:", "event: ruleset", then one "data: "
 * line of compact JSON, which never holds a newline) and is driven by a 1 ms
 * timer while some subscriber's backlog is above the low-water mark; no
 * heartbeat or change is written into the middle of that event.
 */
#include "flags/stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/str.h"
#include "flags/registry.h"
#include "http/server.h"

#define RING_CAP     1024  /* recent changes kept for Last-Event-ID resumes and catch-up */
#define HEARTBEAT_MS 15000 /* default; $CANARYD_SSE_HEARTBEAT_MS */
#define CHUNK_BYTES  32768 /* one write of a ruleset */
#define LOW_WATER    65536 /* write the next chunk once the backlog is below this */
#define FEED_MS      1     /* how often a backlogged ruleset is looked at */
#define CURSOR_HEAD  ((size_t)-1)

struct ring_entry {
	uint64_t rev;
	char *data;
};

struct flags_sub {
	struct flags_stream *st; /* NULL once the stream is gone */
	struct http_conn *conn;
	struct flags_sub *prev, *next;
	const struct flags_snap *feed; /* the ruleset being written, or NULL: live */
	size_t cursor;                 /* CURSOR_HEAD, then the next flag, then count: the tail */
	uint64_t sent_rev;             /* the client has the state at this revision */
};

struct flags_stream {
	struct flags *fl;
	struct loop *loop;
	struct ring_entry ring[RING_CAP];
	size_t ring_head, ring_n;
	uint64_t ring_base; /* the ring holds every change in (ring_base, revision] */
	struct flags_sub *subs;
	size_t nsubs, nfeeding;
	uint64_t dropped;
	uint64_t heartbeat_ms;
	struct loop_timer hb, feeder;
	struct buf chunk;
};

static void catch_up(struct flags_sub *s);

static void feed_done(struct flags_sub *s)
{
	flags_snap_unref(s->feed);
	s->feed = NULL;
	if (s->st)
		s->st->nfeeding--;
}

/* Starts writing the current ruleset to s. */
static void feed_start(struct flags_sub *s)
{
	struct flags_stream *st = s->st;

	if (s->feed)
		return;
	s->feed = flags_snap_ref(flags_current(st->fl));
	s->cursor = CURSOR_HEAD;
	st->nfeeding++;
}

/* Writes the chunk buffer out; 0, or -1 when the connection is gone. */
static int flush(struct flags_sub *s, struct buf *b)
{
	int rc = buf_used(b) ? http_conn_write(s->conn, buf_head(b), buf_used(b)) : 0;

	buf_reset(b);
	return rc ? -1 : 0;
}

/*
 * Writes ruleset chunks while the backlog is below LOW_WATER.  Returns 1
 * when the event is complete, 0 when more remains, -1 when the connection
 * is gone.
 */
static int feed_some(struct flags_sub *s)
{
	struct buf *b = &s->st->chunk;
	const struct flags_snap *snap = s->feed;
	size_t n = flags_snap_count(snap);

	buf_reset(b);
	while (http_conn_backlog(s->conn) < LOW_WATER) {
		if (s->cursor == CURSOR_HEAD) {
			unsigned long long rev = (unsigned long long)flags_snap_revision(snap);

			buf_printf(b,
			           "id: %llu\nevent: ruleset\ndata: {\"revision\":%llu,\"flags\":[",
			           rev, rev);
			s->cursor = 0;
			continue;
		}
		if (s->cursor < n) {
			const char *t = flags_item_text(flags_snap_at(snap, s->cursor));
			size_t len = strlen(t);

			if (buf_used(b) + len + 1 > CHUNK_BYTES && flush(s, b) != 0)
				return -1;
			if (s->cursor)
				buf_append(b, ",", 1);
			if (len + 1 > CHUNK_BYTES) {
				/* a flag larger than a chunk goes out on its own */
				if (flush(s, b) != 0 || http_conn_write(s->conn, t, len) != 0)
					return -1;
			} else {
				buf_append(b, t, len);
			}
			s->cursor++;
			continue;
		}
		if (flush(s, b) != 0)
			return -1;
		if (http_conn_write(s->conn, "],\"segments\":", 13) != 0 ||
		    http_conn_write(s->conn, flags_snap_segments_text(snap),
		                    strlen(flags_snap_segments_text(snap))) != 0 ||
		    http_conn_write(s->conn, "}\n\n", 3) != 0)
			return -1;
		return 1;
	}
	return flush(s, b) != 0 ? -1 : 0;
}

/* Feeds s; once its ruleset is complete, sends what changed since.  1: still feeding. */
static int feed(struct flags_sub *s)
{
	int rc = feed_some(s);

	if (rc == 0)
		return 1;
	s->sent_rev = flags_snap_revision(s->feed);
	feed_done(s);
	if (rc < 0)
		return 0; /* the connection is gone: its detach follows */
	catch_up(s);
	return s->feed != NULL;
}

static void feeder(struct loop *loop, struct loop_timer *t)
{
	struct flags_stream *st = t->data;
	int more = 0;

	for (struct flags_sub *s = st->subs; s; s = s->next)
		if (s->feed)
			more |= feed(s);
	if (more)
		loop_timer_start(loop, t, FEED_MS);
}

static void feeder_arm(struct flags_stream *st)
{
	if (st->nfeeding && !loop_timer_armed(&st->feeder))
		loop_timer_start(st->loop, &st->feeder, FEED_MS);
}

static void sub_send(struct flags_sub *s, uint64_t rev, const char *event, const char *data)
{
	char id[24];

	snprintf(id, sizeof(id), "%llu", (unsigned long long)rev);
	if (http_conn_sse_send(s->conn, str_c(id), str_c(event), str_c(data)) == -ENOBUFS)
		s->st->dropped++; /* the server closed it: a slow subscriber reconnects */
	s->sent_rev = rev;
}

/*
 * Brings a live subscriber at sent_rev up to the current revision: the
 * changes it lacks from the ring, or a new ruleset when they are gone.
 */
static void catch_up(struct flags_sub *s)
{
	struct flags_stream *st = s->st;
	uint64_t rev = flags_revision(st->fl);

	if (s->sent_rev == rev)
		return;
	if (s->sent_rev < st->ring_base || s->sent_rev > rev) {
		feed_start(s);
		feed(s);
		feeder_arm(st);
		return;
	}
	for (size_t i = 0; i < st->ring_n; i++) {
		const struct ring_entry *e = &st->ring[(st->ring_head + i) % RING_CAP];

		if (e->rev > s->sent_rev)
			sub_send(s, e->rev, "change", e->data);
	}
	s->sent_rev = rev;
}

struct flags_sub *flags_stream_attach(struct flags_stream *st, struct http_conn *conn, int resume,
                                      uint64_t last_id)
{
	struct flags_sub *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->st = st;
	s->conn = conn;
	s->next = st->subs;
	if (st->subs)
		st->subs->prev = s;
	st->subs = s;
	st->nsubs++;
	if (http_conn_start_sse(conn, NULL, 0) != 0)
		return s; /* closed: the detach follows */
	if (resume && last_id >= st->ring_base && last_id <= flags_revision(st->fl)) {
		s->sent_rev = last_id;
		catch_up(s);
		return s;
	}
	feed_start(s);
	feed(s);
	feeder_arm(st);
	return s;
}

void flags_stream_detach(struct flags_sub *s)
{
	struct flags_stream *st;

	if (!s)
		return;
	st = s->st;
	if (s->feed)
		feed_done(s);
	if (st) {
		if (s->prev)
			s->prev->next = s->next;
		else
			st->subs = s->next;
		if (s->next)
			s->next->prev = s->prev;
		st->nsubs--;
	}
	free(s);
}

static void ring_clear(struct flags_stream *st, uint64_t base)
{
	for (size_t i = 0; i < st->ring_n; i++)
		free(st->ring[(st->ring_head + i) % RING_CAP].data);
	st->ring_head = st->ring_n = 0;
	st->ring_base = base;
}

/* The registry's listener: one flag changed at rev. */
static void on_changed(void *arg, uint64_t rev, const char *key, const json_t *def)
{
	struct flags_stream *st = arg;
	json_t *o = json_pack("{s:I, s:s, s:O}", "revision", (json_int_t)rev, "key", key, "flag",
	                      def ? (json_t *)def : json_null());
	char *text = o ? flag_json_text(o) : NULL;
	struct ring_entry *e;

	json_decref(o);
	if (!text) {
		/* cannot describe it: everyone behind starts over from a full ruleset */
		ring_clear(st, rev);
		for (struct flags_sub *s = st->subs; s; s = s->next)
			if (!s->feed)
				catch_up(s);
		return;
	}
	if (st->ring_n == RING_CAP) {
		e = &st->ring[st->ring_head];
		st->ring_base = e->rev;
		free(e->data);
		st->ring_head = (st->ring_head + 1) % RING_CAP;
		st->ring_n--;
	}
	e = &st->ring[(st->ring_head + st->ring_n) % RING_CAP];
	e->rev = rev;
	e->data = text;
	st->ring_n++;
	for (struct flags_sub *s = st->subs; s; s = s->next)
		if (!s->feed && s->sent_rev < rev)
			sub_send(s, rev, "change", text);
}

/* The registry's listener: everything may have changed (a reload). */
static void on_reset(void *arg, uint64_t rev)
{
	struct flags_stream *st = arg;

	ring_clear(st, rev);
	for (struct flags_sub *s = st->subs; s; s = s->next)
		if (!s->feed) {
			feed_start(s);
			feed(s);
		}
	feeder_arm(st);
}

static const struct flags_listener listener = {on_changed, on_reset};

static void heartbeat(struct loop *loop, struct loop_timer *t)
{
	struct flags_stream *st = t->data;

	for (struct flags_sub *s = st->subs; s; s = s->next)
		if (!s->feed && http_conn_sse_comment(s->conn, STR_LIT("hb")) == -ENOBUFS)
			st->dropped++;
	loop_timer_start(loop, t, st->heartbeat_ms);
}

struct flags_stream *flags_stream_new(struct flags *fl, struct loop *loop)
{
	struct flags_stream *st = calloc(1, sizeof(*st));
	const char *hb = getenv("CANARYD_SSE_HEARTBEAT_MS");
	unsigned long long hbv;

	if (!st)
		return NULL;
	st->fl = fl;
	st->loop = loop;
	st->ring_base = flags_revision(fl);
	st->heartbeat_ms = HEARTBEAT_MS;
	if (hb && str_to_u64(str_c(hb), &hbv) == 0 && hbv > 0)
		st->heartbeat_ms = hbv;
	buf_init(&st->chunk, CHUNK_BYTES + 4096);
	loop_timer_init(&st->feeder, feeder, st);
	loop_timer_init(&st->hb, heartbeat, st);
	if (loop)
		loop_timer_start(loop, &st->hb, st->heartbeat_ms);
	flags_set_listener(fl, &listener, st);
	return st;
}

void flags_stream_free(struct flags_stream *st)
{
	if (!st)
		return;
	flags_set_listener(st->fl, NULL, NULL);
	if (st->loop) {
		loop_timer_stop(st->loop, &st->hb);
		loop_timer_stop(st->loop, &st->feeder);
	}
	for (struct flags_sub *s = st->subs; s; s = s->next) {
		if (s->feed)
			feed_done(s);
		s->st = NULL; /* still owned by its connection */
	}
	ring_clear(st, 0);
	buf_release(&st->chunk);
	free(st);
}

size_t flags_stream_subscribers(const struct flags_stream *st)
{
	return st ? st->nsubs : 0;
}

uint64_t flags_stream_dropped(const struct flags_stream *st)
{
	return st ? st->dropped : 0;
}
