/*
 * events.c - `canaryctl events`: the audit log (GET /v1/events, paged by
 * `since`), filtered by subject and kind, as a table, JSON or YAML; with
 * --follow it keeps printing new events.  Following polls GET
 * /v1/events?since=LAST every --interval-ms: the same answer the events
 * stream gives, and it survives a server restart without a reconnect path.
 * Also ctl_events_each(), which `flags history` uses.
 */
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

static volatile sig_atomic_t stop_follow;

static void on_stop(int sig)
{
	(void)sig;
	stop_follow = 1;
}

int ctl_events(const struct ctl *ctl_in, int argc, char **argv)
{
	struct ctl ctl = *ctl_in;
	struct evq q = {&ctl, NULL, NULL, 0, 0, 0};
	long long since = -1, last = 0, interval_ms = 1000;
	char *end;
	int rc;

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
