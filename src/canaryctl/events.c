/*
 * events.c - `canaryctl events`: the audit log (GET /v1/events, paged by
 * `since`), filtered by subject and kind, as a table, JSON or YAML; with
 * --follow it keeps printing new events from GET /v1/events/stream (SSE,
 * resumed with Last-Event-ID after a dropped connection), or, when the
 * server has no stream (404), by polling GET /v1/events?since=LAST every
 * --interval-ms.  Also ctl_events_each(), which `flags history` uses.
 */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "canaryctl/ctl.h"
#include "core/buf.h"

#define EVENTS_USAGE     "events [--follow] [--subject S] [--kind K] [--since ID] [--interval-ms 1000]"
#define EVENTS_PAGE      1000
#define EVENTS_MAX_PAGES 100000 /* 10^8 events: bounds a server that never ends a page */
#define PATH_CAP         128

int ctl_events_each(const struct ctl *ctl, long long since, int (*fn)(json_t *ev, void *arg),
                    void *arg, long long *last)
{
	char path[PATH_CAP];
	json_t *doc = NULL, *ev;
	size_t i, n;

	for (int page = 0; page < EVENTS_MAX_PAGES; page++) {
		snprintf(path, sizeof(path), "/v1/events?since=%lld&limit=%d", since, EVENTS_PAGE);
		if (ctl_call(ctl, "GET", path, NULL, &doc) != CTL_OK)
			return CTL_FAILED;
		n = json_array_size(json_object_get(doc, "events"));
		json_array_foreach(json_object_get(doc, "events"), i, ev)
		{
			long long id = (long long)json_integer_value(json_object_get(ev, "id"));

			if (id > since)
				since = id;
			if (last)
				*last = since;
			if (fn(ev, arg)) {
				json_decref(doc);
				return CTL_OK;
			}
		}
		json_decref(doc);
		if (n < EVENTS_PAGE)
			return CTL_OK;
	}
	fputs("canaryctl: too many pages of events\n", stderr);
	return CTL_FAILED;
}

static volatile sig_atomic_t stop_follow; /* SIGINT/SIGTERM during --follow */

struct evq {
	const struct ctl *ctl;
	const char *subject;
	const char *kind; /* exact, or a prefix ending in '.' ("flag.") */
	size_t shown;
	int follow;
	int skip; /* count only: finding where --follow starts */
};

static int kind_matches(const char *want, const char *kind)
{
	size_t n = strlen(want);

	if (n && want[n - 1] == '.')
		return strncmp(want, kind, n) == 0;
	return strcmp(want, kind) == 0;
}

/* want is the subject, or its name after the kind ("checkout" for "flag/checkout") */
static int subject_matches(const char *want, const char *subject)
{
	const char *slash = strchr(subject, '/');

	return strcmp(want, subject) == 0 || (slash && strcmp(want, slash + 1) == 0);
}

static int print_one(json_t *ev, void *arg)
{
	struct evq *q = arg;
	const char *subject = json_string_value(json_object_get(ev, "subject"));
	const char *kind = json_string_value(json_object_get(ev, "kind"));
	char *d;

	if (q->skip)
		return 0;
	if (q->subject && (!subject || !subject_matches(q->subject, subject)))
		return 0;
	if (q->kind && (!kind || !kind_matches(q->kind, kind)))
		return 0;
	if (q->ctl->yaml) {
		struct buf b;

		buf_init(&b, CTL_YAML_CAP);
		/* one YAML document per event: a stream the reader can follow */
		if (ctl_yaml_append(&b, ev) == 0)
			printf("---\n%.*s", (int)buf_used(&b), buf_head(&b));
		buf_release(&b);
	} else if (q->ctl->json) {
		/* one compact object per line (JSON Lines): greppable, and jq reads it */
		d = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER);
		if (d)
			puts(d);
		free(d);
	} else {
		if (q->shown == 0)
			printf("%-8s %-24s %-16s %-24s %s\n", "ID", "TIME", "ACTOR", "KIND",
			       "SUBJECT");
		printf("%-8lld %-24s %-16s %-24s %s\n",
		       (long long)json_integer_value(json_object_get(ev, "id")),
		       json_string_value(json_object_get(ev, "ts")) ?: "-",
		       json_string_value(json_object_get(ev, "actor")) ?: "-", kind ?: "-",
		       subject ?: "-");
	}
	q->shown++;
	if (q->follow)
		fflush(stdout);
	return 0;
}

static void on_stop(int sig)
{
	(void)sig;
	stop_follow = 1;
}

#define SSE_LINE_CAP (4u << 20) /* one "data:" line: an event's JSON */

/* One GET /v1/events/stream connection's parsing state. */
struct sse {
	struct evq *q;
	struct buf line;
	long long *last; /* the newest id printed: Last-Event-ID on reconnect */
	int overflow;
};

static void sse_line(struct sse *s, const char *l, size_t n)
{
	json_t *ev;

	if (n > 5 && memcmp(l, "data:", 5) == 0) {
		ev = json_loadb(l + 5, n - 5, 0, NULL);
		if (json_is_object(ev)) {
			long long id = (long long)json_integer_value(json_object_get(ev, "id"));

			if (id > *s->last) {
				*s->last = id;
				print_one(ev, s->q);
			}
		}
		json_decref(ev);
	}
}

static size_t sse_data(char *p, size_t size, size_t n, void *arg)
{
	struct sse *s = arg;
	size_t len = size * n;

	for (size_t i = 0; i < len; i++) {
		if (p[i] == '\n') {
			if (!s->overflow)
				sse_line(s, buf_head(&s->line), buf_used(&s->line));
			buf_reset(&s->line);
			s->overflow = 0;
		} else if (p[i] != '\r' && buf_append(&s->line, p + i, 1) != 0) {
			s->overflow = 1; /* a line past the cap is skipped, not fatal */
		}
	}
	return len;
}

static int sse_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	(void)arg, (void)a, (void)b, (void)c, (void)d;
	return stop_follow ? 1 : 0;
}

/*
 * Follows GET /v1/events/stream until stopped, printing events after
 * *last (resuming with Last-Event-ID when *last > 0).  Returns the HTTP
 * status of the answer (0: no answer), so the caller can fall back to
 * polling when the server has no stream (404).
 */
static long follow_stream(const struct ctl *ctl, struct evq *q, long long *last)
{
	CURL *c = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	struct buf url, hdr;
	struct sse s = {q, {0}, last, 0};
	long status = 0;

	if (!c)
		return 0;
	buf_init(&url, 8192);
	buf_init(&hdr, 8192);
	buf_init(&s.line, SSE_LINE_CAP);
	buf_printf(&url, "%s/v1/events/stream", ctl->server);
	if (ctl->token) {
		buf_printf(&hdr, "Authorization: Bearer %s", ctl->token);
		hdrs = curl_slist_append(hdrs, buf_cstr(&hdr));
	}
	if (*last > 0) {
		buf_reset(&hdr);
		buf_printf(&hdr, "Last-Event-ID: %lld", *last);
		hdrs = curl_slist_append(hdrs, buf_cstr(&hdr));
	}
	curl_easy_setopt(c, CURLOPT_URL, buf_cstr(&url));
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sse_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (ctl->cacert)
		curl_easy_setopt(c, CURLOPT_CAINFO, ctl->cacert);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, sse_progress);
	/* the server sends heartbeats: a minute of silence is a dead connection */
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
	curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(c);
	buf_release(&s.line);
	buf_release(&url);
	buf_release(&hdr);
	return status;
}

int ctl_events(const struct ctl *ctl_in, int argc, char **argv)
{
	struct ctl ctl = *ctl_in;
	struct evq q = {&ctl, NULL, NULL, 0, 0, 0};
	long long since = -1, last = 0, interval_ms = 1000;
	char *end;
	int rc, force_poll;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--follow") == 0 || strcmp(a, "-f") == 0) {
			q.follow = 1;
		} else if (strcmp(a, "--subject") == 0 && i + 1 < argc) {
			q.subject = argv[++i];
		} else if (strcmp(a, "--kind") == 0 && i + 1 < argc) {
			q.kind = argv[++i];
		} else if (strcmp(a, "--since") == 0 && i + 1 < argc) {
			since = strtoll(argv[++i], &end, 10);
			if (end == argv[i] || *end || since < 0)
				return ctl_usage_arg(EVENTS_USAGE, "--since takes an event id, not",
				                     argv[i]);
		} else if (strcmp(a, "--interval-ms") == 0 && i + 1 < argc) {
			interval_ms = strtoll(argv[++i], &end, 10);
			if (end == argv[i] || *end || interval_ms < 50 || interval_ms > 600000)
				return ctl_usage_arg(
				    EVENTS_USAGE, "--interval-ms takes 50..600000, not", argv[i]);
		} else if (strcmp(a, "-o") == 0 && i + 1 < argc) {
			if (ctl_set_output(&ctl, argv[++i]) != 0)
				return ctl_usage_arg(EVENTS_USAGE,
				                     "-o takes table, json or yaml, not", argv[i]);
		} else {
			return ctl_usage_arg(EVENTS_USAGE, "unknown option or missing argument", a);
		}
	}
	force_poll = getenv("CANARYCTL_EVENTS_POLL") != NULL; /* tests: the fallback path */
	if (!q.follow) {
		rc = ctl_events_each(&ctl, since < 0 ? 0 : since, print_one, &q, &last);
		if (rc == CTL_OK && q.shown == 0 && !ctl.json)
			fputs("no events\n", stderr);
		return rc;
	}
	/* --follow without --since starts at the newest event, like tail -f on a log */
	if (since < 0) {
		q.skip = 1;
		if (ctl_events_each(&ctl, 0, print_one, &q, &last) != CTL_OK)
			return CTL_FAILED;
		q.skip = 0;
	} else {
		last = since;
	}
	signal(SIGINT, on_stop);
	signal(SIGTERM, on_stop);
	/* the stream while the server has one; a dropped connection is resumed */
	while (!stop_follow && !force_poll) {
		struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
		long st = follow_stream(&ctl, &q, &last);

		if (st == 404 || st == 405)
			break; /* an older server: poll instead */
		if (st == 401 || st == 403) {
			fprintf(stderr, "canaryctl: GET /v1/events/stream: %ld\n", st);
			return CTL_FAILED;
		}
		if (!stop_follow)
			nanosleep(&ts, NULL);
	}
	while (!stop_follow) {
		struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};

		/* a server that went away is retried: following outlives a restart */
		(void)ctl_events_each(&ctl, last, print_one, &q, &last);
		fflush(stdout);
		if (!stop_follow)
			nanosleep(&ts, NULL);
	}
	return CTL_OK;
}
