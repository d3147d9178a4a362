/*
 * evidence.c - the evidence bundle of a rollout: a pure function of the
 * stored events (plus the config text and the live view), rendered into a
 * Markdown post-mortem skeleton, JSON files and two hand-written SVG
 * charts.  Design notes: docs/evidence.md.
 *
 * Everything read from the events is treated as untrusted input: a missing
 * or mistyped field is "absent", never a crash, and every string that goes
 * into Markdown or SVG is escaped.
 */
#include "rollout/evidence.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "rollout/retention.h"
#include "rollout/validate.h"
#include "store/store.h"

#define TEXT_CAP      (4u << 20)  /* summary.md */
#define SVG_CAP       (16u << 20) /* one chart */
#define TIMELINE_MAX  1000        /* rows in the summary's timeline */
#define CHART_TARGETS 4           /* target pairs drawn in one chart */
#define NO_TIME       INT64_MIN

/* ------------------------------------------------------------------------ */
/* Output buffer: a capped buf that remembers its first error               */

struct out {
	struct buf b;
	int err;
};

static void out_init(struct out *o, size_t cap)
{
	buf_init(&o->b, cap);
	o->err = 0;
}

static void out_mem(struct out *o, const char *p, size_t n)
{
	int rc;

	if (o->err)
		return;
	rc = buf_append(&o->b, p, n);
	if (rc)
		o->err = rc;
}

static void out_str(struct out *o, const char *s)
{
	out_mem(o, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void out_printf(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int rc;

	if (o->err)
		return;
	va_start(ap, fmt);
	rc = buf_vprintf(&o->b, fmt, ap);
	va_end(ap);
	if (rc)
		o->err = rc;
}

/*
 * The contents as a JSON string, releasing the buffer.  Over the cap the
 * file becomes `fallback` (the bundle stays usable); NULL when out of
 * memory.
 */
static json_t *out_finish(struct out *o, const char *fallback)
{
	json_t *s = NULL;

	if (!o->err)
		s = json_stringn(buf_head(&o->b), buf_used(&o->b));
	else if (o->err == -ENOBUFS)
		s = json_string(fallback);
	buf_release(&o->b);
	return s;
}

/* Length of at most max bytes of s, cut on a UTF-8 character boundary. */
static size_t utf8_cut(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n <= max)
		return n;
	while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
		max--;
	return max;
}

/* The replacement of byte c in Markdown (svg false) or SVG text, or NULL to keep it. */
static const char *escape_of(unsigned char c, bool svg)
{
	switch (c) {
	case '&':
		return "&amp;";
	case '<':
		return "&lt;";
	case '>':
		return "&gt;";
	case '|':
		return svg ? NULL : "\\|";
	case '`':
		return svg ? NULL : "'";
	case '"':
		return svg ? "&quot;" : NULL;
	case '\'':
		return svg ? "&apos;" : NULL;
	default:
		return c < 0x20 || c == 0x7f ? " " : NULL;
	}
}

/*
 * Text for a Markdown table cell or paragraph (no line breaks, pipes or
 * HTML) or for SVG character data and attribute values (XML-invalid
 * controls dropped); cut at max bytes on a UTF-8 boundary with an ellipsis.
 */
static void escaped_text(struct out *o, const char *s, size_t max, bool svg)
{
	size_t n;

	if (!s)
		return;
	n = utf8_cut(s, max);
	for (size_t i = 0; i < n; i++) {
		const char *rep = escape_of((unsigned char)s[i], svg);

		if (rep)
			out_str(o, rep);
		else
			out_mem(o, &s[i], 1);
	}
	if (n < strlen(s))
		out_str(o, "\xE2\x80\xA6"); /* … */
}

static void md_text(struct out *o, const char *s, size_t max)
{
	escaped_text(o, s, max, false);
}

static void svg_text(struct out *o, const char *s, size_t max)
{
	escaped_text(o, s, max, true);
}

/* " (s)" when s is not NULL. */
static void md_paren(struct out *o, const char *s, size_t max)
{
	if (!s)
		return;
	out_str(o, " (");
	md_text(o, s, max);
	out_str(o, ")");
}

/* The strings of array a, each cut at max, joined by ", ". */
static void md_list(struct out *o, const json_t *a, size_t max)
{
	size_t i;
	json_t *x;

	json_array_foreach((json_t *)a, i, x)
	{
		if (i)
			out_str(o, ", ");
		md_text(o, json_string_value(x), max);
	}
}

/* ------------------------------------------------------------------------ */
/* Reading events tolerantly                                                 */

static const char *jstr(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* A number field as double; false when absent, not a number or not finite. */
static bool jnum(const json_t *o, const char *key, double *out)
{
	const json_t *v = json_object_get(o, key);
	double d;

	if (!json_is_number(v))
		return false;
	d = json_number_value(v);
	if (!isfinite(d))
		return false;
	*out = d;
	return true;
}

/* An integral field (integers, or reals within range); NO_TIME when absent. */
static int64_t jint(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);

	if (json_is_integer(v))
		return (int64_t)json_integer_value(v);
	if (json_is_real(v)) {
		double d = json_real_value(v);

		if (isfinite(d) && d > -9.0e18 && d < 9.0e18)
			return (int64_t)llround(d);
	}
	return NO_TIME;
}

static bool jtrue(const json_t *o, const char *key)
{
	return json_is_true(json_object_get(o, key));
}

/* A string field, or dflt when absent or not a string. */
static const char *jstr_or(const json_t *o, const char *key, const char *dflt)
{
	const char *s = jstr(o, key);

	return s ? s : dflt;
}

static const char *ev_kind(const json_t *e)
{
	const char *k = jstr(e, "kind");

	return k ? k : "";
}

/* A per-interval event: raw, or the summary of old ones (rollout/retention.h). */
static bool is_interval_kind(const char *k)
{
	return !strcmp(k, "rollout.interval") || !strcmp(k, RETENTION_INTERVAL_SUMMARY);
}

static bool is_verdict_kind(const char *k)
{
	return !strcmp(k, "verdict") || !strcmp(k, RETENTION_VERDICT_SUMMARY);
}

static const json_t *ev_details(const json_t *e)
{
	const json_t *d = json_object_get(e, "details");

	return json_is_object(d) ? d : NULL;
}

static bool is_start(const json_t *e)
{
	const char *k = ev_kind(e);

	return !strcmp(k, "rollout.started") || !strcmp(k, "rollout.retry");
}

/* "2024-05-01T12:34:56.789Z" (fraction optional) to ms since the epoch. */
static int64_t parse_ts(const char *s)
{
	int y, mo, d, h, mi, sec, n = 0, digits = 0;
	int64_t ms = 0;
	struct tm tm;
	time_t t;

	if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 ||
	    n == 0)
		return NO_TIME;
	s += n;
	if (*s == '.') {
		for (s++; isdigit((unsigned char)*s); s++, digits++)
			if (digits < 3)
				ms = ms * 10 + (*s - '0');
		if (digits == 0)
			return NO_TIME;
		for (; digits < 3; digits++)
			ms *= 10;
	}
	if ((*s != 'Z' && *s != 'z') || s[1] != '\0')
		return NO_TIME;
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 ||
	    h < 0 || mi < 0 || sec < 0)
		return NO_TIME;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return NO_TIME;
	return (int64_t)t * 1000 + ms;
}

/* The time an event's details name on the engine's clock, or NO_TIME. */
static int64_t engine_time(const json_t *e)
{
	const char *k = ev_kind(e);
	const json_t *d = ev_details(e);

	if (!strcmp(k, "rollout.rollback"))
		return jint(d, "decision_ms");
	if (is_interval_kind(k) || is_verdict_kind(k))
		return jint(d, "interval_end_ms");
	if (!strcmp(k, "rollout.step"))
		return jint(d, "at_ms");
	if (!strcmp(k, "rollout.mitigated"))
		return jint(d, "applied_ms");
	return NO_TIME;
}

/*
 * How far the store's stamps ("ts") run ahead of the engine's clock over
 * events [first, end), from the first event that carries both.  A few ms
 * in production (one wall clock, the stamp taken at commit); it matters
 * when the engine runs on another clock (tests with a fake clock), where
 * mixing the two would put steps and intervals years apart.
 */
static int64_t clock_skew(const json_t *events, size_t first, size_t end)
{
	for (size_t i = first; i < end; i++) {
		const json_t *e = json_array_get(events, i);
		int64_t et = engine_time(e), ts;

		if (et == NO_TIME)
			continue;
		ts = parse_ts(jstr(e, "ts"));
		if (ts != NO_TIME)
			return ts - et;
	}
	return 0;
}

/*
 * When an event happened, on the engine's clock: the time its details name
 * (a rollback's decision, an interval's end), else its store stamp less
 * the skew; NO_TIME when neither is usable.
 */
static int64_t ev_time(const json_t *e, int64_t skew)
{
	int64_t t = engine_time(e);

	if (t != NO_TIME)
		return t;
	t = parse_ts(jstr(e, "ts"));
	return t == NO_TIME ? NO_TIME : t - skew;
}

/* The start of the run made of events [first, end): its first known time. */
static int64_t span_start(const json_t *events, size_t first, size_t end)
{
	int64_t skew = clock_skew(events, first, end), t = NO_TIME;

	for (size_t i = first; i < end && t == NO_TIME; i++)
		t = ev_time(json_array_get(events, i), skew);
	return t;
}

/* ------------------------------------------------------------------------ */
/* Formatting                                                                */

/* "2024-05-01 12:34:56.789", or "?" for NO_TIME. */
static void fmt_time(int64_t ms, char *b, size_t n)
{
	time_t secs;
	struct tm tm;
	int64_t frac;

	if (ms == NO_TIME) {
		snprintf(b, n, "?");
		return;
	}
	frac = ms % 1000;
	secs = (time_t)(ms / 1000);
	if (frac < 0) {
		frac += 1000;
		secs -= 1;
	}
	if (!gmtime_r(&secs, &tm)) {
		snprintf(b, n, "?");
		return;
	}
	snprintf(b, n, "%04d-%02d-%02d %02d:%02d:%02d.%03d", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
}

/* "850 ms", "12.3 s", "4m 05s", "2h 03m 00s". */
static void fmt_dur(int64_t ms, char *b, size_t n)
{
	long long s;

	if (ms < 1000) {
		snprintf(b, n, "%lld ms", (long long)ms);
	} else if (ms < 60000) {
		snprintf(b, n, "%.1f s", (double)ms / 1000.0);
	} else if (ms < 3600000) {
		s = (long long)(ms / 1000);
		snprintf(b, n, "%lldm %02llds", s / 60, s % 60);
	} else {
		s = (long long)(ms / 1000);
		snprintf(b, n, "%lldh %02lldm %02llds", s / 3600, s / 60 % 60, s % 60);
	}
}

/* Integers plainly, small values with 4 decimals, large with 2. */
static void fmt_num(double v, char *b, size_t n)
{
	if (isnan(v))
		snprintf(b, n, "%s", "n/a");
	else if (isinf(v))
		snprintf(b, n, "%s", v > 0 ? "inf" : "-inf");
	else if (v == floor(v) && fabs(v) < 1e15)
		snprintf(b, n, "%.0f", v);
	else if (fabs(v) >= 100)
		snprintf(b, n, "%.2f", v);
	else
		snprintf(b, n, "%.4f", v);
}

/* A field for display: a number, a string, true/false, else "n/a". */
static void fmt_field(const json_t *o, const char *key, char *b, size_t n)
{
	const json_t *v = json_object_get(o, key);

	if (json_is_number(v))
		fmt_num(json_number_value(v), b, n);
	else if (json_is_string(v))
		snprintf(b, n, "%.*s", (int)utf8_cut(json_string_value(v), n - 1),
		         json_string_value(v));
	else if (json_is_boolean(v))
		snprintf(b, n, "%s", json_is_true(v) ? "true" : "false");
	else
		snprintf(b, n, "%s", "n/a");
}

/* A weight in percent: "5%", "0.5%", "12.125%". */
static void fmt_pct(double w, char *b, size_t n)
{
	size_t len;

	snprintf(b, n, "%.3f", w);
	len = strlen(b);
	while (len > 0 && b[len - 1] == '0')
		b[--len] = '\0';
	if (len > 0 && b[len - 1] == '.')
		b[--len] = '\0';
	if (len + 1 < n) {
		b[len] = '%';
		b[len + 1] = '\0';
	}
}

/*
 * The weights of a rollout.step as one label: "5%" when they are all
 * equal, else "web 5%, api 10%".  Empty when the step set no weight.
 */
static void fmt_weights(const json_t *weights, char *b, size_t n)
{
	const char *k;
	json_t *v;
	double first = 0;
	bool same = true, any = false;
	size_t len = 0;

	b[0] = '\0';
	json_object_foreach((json_t *)weights, k, v)
	{
		if (!json_is_number(v))
			continue;
		if (any && json_number_value(v) != first)
			same = false;
		if (!any)
			first = json_number_value(v);
		any = true;
	}
	if (!any)
		return;
	if (same) {
		fmt_pct(first, b, n);
		return;
	}
	json_object_foreach((json_t *)weights, k, v)
	{
		char pct[32];
		int w;

		if (!json_is_number(v))
			continue;
		fmt_pct(json_number_value(v), pct, sizeof(pct));
		w = snprintf(b + len, n - len, "%s%s %s", len ? ", " : "", k, pct);
		if (w < 0 || (size_t)w >= n - len) {
			b[len] = '\0';
			return;
		}
		len += (size_t)w;
	}
}

/* ------------------------------------------------------------------------ */
/* Runs                                                                      */

enum outcome {
	OUT_NONE,
	OUT_PROGRESSING,
	OUT_PAUSED,
	OUT_BAKING,
	OUT_COMPLETED,
	OUT_ROLLED_BACK,
	OUT_FAILED,
};

/* Verdict outcomes per check of the latest run, counted over every verdict. */
#define TALLY_CHECKS 64 /* checks named; more are counted under the last */

struct check_count {
	char name[96];
	long n[5]; /* pass, fail, inconclusive, error, other */
};

struct tallies {
	struct check_count c[TALLY_CHECKS];
	size_t n;
	bool other;
};

/* The latest run: events [first, end) of the list. */
struct run {
	const json_t *events;
	size_t first, end;
	int number;       /* started/retry events up to it; 0 when there is none */
	int64_t skew;     /* clock_skew() of the run */
	int64_t start_ms; /* NO_TIME when unknown */
	int64_t end_ms;   /* NO_TIME while it has not ended */
	enum outcome outcome;
	const json_t *start_ev;      /* may be NULL */
	const struct tallies *tally; /* verdict counts of the run (all, not only those kept) */
	size_t total;                /* events read, before downsampling */
};

/* Per outcome: the summary's words and the state name. */
static const struct {
	const char *text, *state;
} outcome_names[] = {
    [OUT_NONE] = {"not started", "idle"},
    [OUT_PROGRESSING] = {"in progress", "progressing"},
    [OUT_PAUSED] = {"paused", "paused"},
    [OUT_BAKING] = {"baking", "baking"},
    [OUT_COMPLETED] = {"completed", "completed"},
    [OUT_ROLLED_BACK] = {"rolled back", "rolled_back"},
    [OUT_FAILED] = {"failed", "failed"},
};

static const char *outcome_text(enum outcome o)
{
	return (size_t)o < sizeof(outcome_names) / sizeof(outcome_names[0]) ? outcome_names[o].text
	                                                                    : "unknown";
}

static const char *outcome_state(enum outcome o)
{
	return (size_t)o < sizeof(outcome_names) / sizeof(outcome_names[0]) ? outcome_names[o].state
	                                                                    : "unknown";
}

static void run_find(struct run *r, const json_t *events)
{
	size_t n = json_array_size(events);

	memset(r, 0, sizeof(*r));
	r->events = events;
	r->end = n;
	r->start_ms = r->end_ms = NO_TIME;
	for (size_t i = 0; i < n; i++) {
		if (is_start(json_array_get(events, i))) {
			r->first = i;
			r->number++;
		}
	}
	if (r->number)
		r->start_ev = json_array_get(events, r->first);
	r->skew = clock_skew(events, r->first, n);
	r->start_ms = span_start(events, r->first, n);
	r->outcome = r->first < n ? OUT_PROGRESSING : OUT_NONE;
	for (size_t i = r->first; i < n; i++) {
		const json_t *e = json_array_get(events, i);
		const char *k = ev_kind(e);
		/* after an end only another end counts (failed after a rollback) */
		bool ended = r->outcome == OUT_COMPLETED || r->outcome == OUT_ROLLED_BACK ||
		             r->outcome == OUT_FAILED;

		if (!strcmp(k, "rollout.paused")) {
			if (!ended)
				r->outcome = OUT_PAUSED;
		} else if (!strcmp(k, "rollout.resumed") || !strcmp(k, "rollout.promoted")) {
			if (r->outcome == OUT_PAUSED)
				r->outcome = OUT_PROGRESSING;
		} else if (!strcmp(k, "rollout.baking")) {
			if (!ended)
				r->outcome = OUT_BAKING;
		} else if (!strcmp(k, "rollout.completed")) {
			r->outcome = OUT_COMPLETED;
			r->end_ms = ev_time(e, r->skew);
		} else if (!strcmp(k, "rollout.rollback")) {
			const json_t *all = json_object_get(ev_details(e), "all");

			/* a per-target rollback leaves the others running */
			if (!json_is_false(all)) {
				r->outcome = OUT_ROLLED_BACK;
				r->end_ms = ev_time(e, r->skew);
			}
		} else if (!strcmp(k, "rollout.failed")) {
			r->outcome = OUT_FAILED;
			if (r->end_ms == NO_TIME)
				r->end_ms = ev_time(e, r->skew);
		}
	}
}

/* ------------------------------------------------------------------------ */
/* verdicts and series                                                       */

static json_t *num_or_null(const json_t *v)
{
	if (json_is_integer(v))
		return json_integer(json_integer_value(v));
	if (json_is_real(v))
		return json_real(json_real_value(v));
	return json_null();
}

static json_t *bool_or_null(const json_t *v)
{
	return json_is_boolean(v) ? json_boolean(json_is_true(v)) : json_null();
}

static json_t *ms_or_null(int64_t ms)
{
	return ms == NO_TIME ? json_null() : json_integer((json_int_t)ms);
}

static json_t *str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

/* Adds v (stolen) under key; records a failure in *bad. */
static void put(json_t *o, const char *key, json_t *v, bool *bad)
{
	if (!v || json_object_set_new(o, key, v))
		*bad = true;
}

/* Each run's start time, indexed by run number (0: events before any start). */
static int64_t *run_starts(const json_t *events, int nruns)
{
	int64_t *starts = calloc((size_t)nruns + 1, sizeof(*starts));
	size_t n = json_array_size(events), first = 0;
	int run = 0;

	if (!starts)
		return NULL;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && !is_start(json_array_get(events, i)))
			continue;
		if (run <= nruns)
			starts[run] = span_start(events, first, i);
		run++;
		first = i;
	}
	return starts;
}

static json_t *verdict_entry(const json_t *e, int run)
{
	const json_t *d = ev_details(e);
	json_t *v = d ? json_deep_copy(d) : json_object();
	bool bad = false;

	if (!v)
		return NULL;
	put(v, "id", num_or_null(json_object_get(e, "id")), &bad);
	put(v, "ts", str_or_null(jstr(e, "ts")), &bad);
	put(v, "run", json_integer(run), &bad);
	if (bad) {
		json_decref(v);
		return NULL;
	}
	return v;
}

static const char *const COHORTS[] = {"canary", "baseline"};
static const char *const FIELDS[] = {"requests", "errors", "error_rate",
                                     "p50_ms",   "p99_ms", "mean_ms"};

/* Appends one flat row per target of interval event e. */
static int series_rows(json_t *series, const json_t *e, int run, int64_t run_start)
{
	const json_t *d = ev_details(e);
	int64_t end = jint(d, "interval_end_ms"), len = jint(d, "interval_ms");
	const char *tname;
	json_t *tv;

	json_object_foreach((json_t *)json_object_get(d, "targets"), tname, tv)
	{
		json_t *row = json_object();
		bool bad = !row;

		if (bad)
			return -1;
		put(row, "run", json_integer(run), &bad);
		put(row, "id", num_or_null(json_object_get(e, "id")), &bad);
		put(row, "ts", str_or_null(jstr(e, "ts")), &bad);
		put(row, "interval_start_ms",
		    ms_or_null(end != NO_TIME && len != NO_TIME ? end - len : NO_TIME), &bad);
		put(row, "interval_end_ms", ms_or_null(end), &bad);
		put(row, "interval_ms", ms_or_null(len), &bad);
		put(row, "offset_ms",
		    ms_or_null(end != NO_TIME && run_start != NO_TIME ? end - run_start : NO_TIME),
		    &bad);
		put(row, "step", num_or_null(json_object_get(d, "step")), &bad);
		/* how many intervals the row stands for: more than 1 for a summary */
		put(row, "intervals",
		    json_integer(strcmp(ev_kind(e), RETENTION_INTERVAL_SUMMARY)
		                     ? 1
		                     : (json_int_t)jint(json_object_get(d, "replaces"), "count")),
		    &bad);
		put(row, "target", json_string(tname), &bad);
		put(row, "weight", num_or_null(json_object_get(tv, "weight")), &bad);
		put(row, "bake", bool_or_null(json_object_get(d, "bake")), &bad);
		put(row, "historical_baseline",
		    bool_or_null(json_object_get(tv, "historical_baseline")), &bad);
		for (size_t c = 0; c < 2; c++) {
			const json_t *co = json_object_get(tv, COHORTS[c]);

			for (size_t f = 0; f < sizeof(FIELDS) / sizeof(FIELDS[0]); f++) {
				char key[40];

				snprintf(key, sizeof(key), "%s_%s", COHORTS[c], FIELDS[f]);
				put(row, key, num_or_null(json_object_get(co, FIELDS[f])), &bad);
			}
		}
		if (bad || json_array_append_new(series, row))
			return -1;
	}
	return 0;
}

/* "verdicts" and "series" of every run, each entry tagged with its run number. */
static int collect(const json_t *events, int nruns, json_t *verdicts, json_t *series)
{
	int64_t *starts = run_starts(events, nruns);
	size_t n = json_array_size(events);
	int run = 0, rc = 0;

	if (!starts)
		return -1;
	for (size_t i = 0; i < n && rc == 0; i++) {
		const json_t *e = json_array_get(events, i);
		const char *k = ev_kind(e);

		if (is_start(e))
			run++;
		if (is_verdict_kind(k)) {
			json_t *v = verdict_entry(e, run);

			/* a summary's entry is its details: per check counts of what it replaced */
			if (v && strcmp(k, "verdict"))
				json_object_set_new(v, "summary", json_true());
			if (!v || json_array_append_new(verdicts, v))
				rc = -1;
		} else if (is_interval_kind(k)) {
			rc = series_rows(series, e, run, starts[run <= nruns ? run : nruns]);
		}
	}
	free(starts);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* summary.md                                                                */

/* "exec on web" */
static void hook_what(struct out *o, const json_t *d)
{
	md_text(o, jstr_or(d, "kind", "?"), 20);
	if (jstr(d, "target")) {
		out_str(o, " on ");
		md_text(o, jstr(d, "target"), 60);
	}
}

/* "hook #0 exec on web" */
static void hook_name(struct out *o, const json_t *d)
{
	char a[64];

	fmt_field(d, "index", a, sizeof(a));
	out_str(o, "hook #");
	md_text(o, a, 20);
	out_str(o, " ");
	hook_what(o, d);
}

/* "passed", "failed", "inconclusive" (the "result" field, else "passed"), or "?". */
static const char *verify_result(const json_t *d)
{
	const json_t *p = json_object_get(d, "passed");

	if (jstr(d, "result"))
		return jstr(d, "result");
	if (json_is_boolean(p))
		return json_is_true(p) ? "passed" : "failed";
	return "?";
}

static void timeline_detail(struct out *o, const json_t *e)
{
	const json_t *d = ev_details(e);
	const char *k = ev_kind(e), *s;
	char a[96], b[96], c[160];
	int64_t v;

	if (!strcmp(k, "rollout.started") || !strcmp(k, "rollout.retry")) {
		fmt_field(d, "generation", a, sizeof(a));
		fmt_field(d, "steps", b, sizeof(b));
		out_printf(o, "generation %s, %s steps", a, b);
	} else if (!strcmp(k, "rollout.step")) {
		int64_t st = jint(d, "step"), of = jint(d, "of");
		const json_t *sk = json_object_get(d, "skipped");
		size_t i;
		json_t *x;

		if (st != NO_TIME && of != NO_TIME)
			out_printf(o, "step %lld of %lld", (long long)st + 1, (long long)of);
		else if (st != NO_TIME)
			out_printf(o, "step %lld", (long long)st + 1);
		else
			out_str(o, "step");
		md_paren(o, jstr(d, "kind"), 40);
		fmt_weights(json_object_get(d, "weights"), c, sizeof(c));
		if (c[0]) {
			out_str(o, ": ");
			md_text(o, c, sizeof(c));
		}
		json_array_foreach((json_t *)sk, i, x)
		{
			out_str(o, i ? "; " : "; skipped ");
			md_text(o, jstr(x, "target"), 60);
			out_str(o, ": ");
			md_text(o, jstr(x, "why"), 120);
		}
	} else if (!strcmp(k, "rollout.approval_needed")) {
		out_str(o, "approval needed from ");
		md_list(o, json_object_get(d, "required"), 60);
	} else if (!strcmp(k, "rollout.approved")) {
		out_str(o, "approved by ");
		md_text(o, jstr(d, "by") ? jstr(d, "by") : jstr(e, "actor"), 60);
		if (jtrue(d, "complete"))
			out_str(o, " (every approver has approved)");
	} else if (!strcmp(k, "rollout.promoted")) {
		out_str(o, "promoted");
		if ((s = jstr(d, "what"))) {
			out_str(o, ": ");
			md_text(o, s, 120);
		}
	} else if (!strcmp(k, "rollout.paused")) {
		md_text(o, jstr(d, "reason"), 200);
		if ((v = jint(d, "review_deadline")) != NO_TIME && v > 0) {
			fmt_time(v, a, sizeof(a));
			out_printf(o, " (rolls back at %s unless resumed)", a);
		}
	} else if (!strcmp(k, "rollout.resumed")) {
		out_str(o, "resumed by ");
		md_text(o, jstr(e, "actor"), 60);
	} else if (!strcmp(k, "rollout.rollback")) {
		const json_t *t = json_object_get(d, "targets");

		md_text(o, jstr_or(d, "reason", "no reason recorded"), 200);
		md_paren(o, jstr(d, "class"), 20);
		if (json_array_size(t)) {
			out_str(o, "; targets ");
			md_list(o, t, 60);
		}
	} else if (!strcmp(k, "rollout.mitigated")) {
		int64_t us = jint(d, "time_to_mitigate_us");
		int64_t dec = jint(d, "decision_ms"), app = jint(d, "applied_ms");

		out_str(o, "traffic off the canary");
		if (us != NO_TIME)
			out_printf(o, " (%.1f ms after the decision)", (double)us / 1000.0);
		else if (dec != NO_TIME && app != NO_TIME)
			out_printf(o, " (%lld ms after the decision)", (long long)(app - dec));
		if (jtrue(d, "after_restart"))
			out_str(o, ", after a restart");
		if (json_is_false(json_object_get(d, "all_workers_confirmed")))
			out_str(o, ", not every worker confirmed");
	} else if (!strcmp(k, "rollout.drained")) {
		if ((v = jint(d, "duration_ms")) != NO_TIME)
			out_printf(o, "drained in %lld ms", (long long)v);
		else
			out_str(o, "drained");
		if ((v = jint(d, "limit_ms")) != NO_TIME)
			out_printf(o, " (limit %lld ms)", (long long)v);
		if (json_is_false(json_object_get(d, "in_flight_known")))
			out_str(o, ", requests in flight unknown");
		else if ((v = jint(d, "in_flight_left")) != NO_TIME && v > 0)
			out_printf(o, ", %lld requests still in flight", (long long)v);
	} else if (!strcmp(k, "rollout.hook.started")) {
		hook_name(o, d);
		out_str(o, " started");
	} else if (!strcmp(k, "rollout.hook")) {
		hook_name(o, d);
		out_str(o, ": ");
		md_text(o, jstr_or(d, "status", "?"), 20);
		if ((v = jint(d, "duration_ms")) != NO_TIME)
			out_printf(o, " in %lld ms", (long long)v);
		if ((v = jint(d, "exit_code")) != NO_TIME)
			out_printf(o, ", exit %lld", (long long)v);
		if ((v = jint(d, "http_status")) != NO_TIME)
			out_printf(o, ", HTTP %lld", (long long)v);
		if ((s = jstr(d, "error"))) {
			out_str(o, ": ");
			md_text(o, s, 120);
		}
	} else if (!strcmp(k, "rollout.verified")) {
		md_text(o, verify_result(d), 40);
		if ((v = jint(d, "duration_ms")) != NO_TIME)
			out_printf(o, " in %lld ms", (long long)v);
		if ((v = jint(d, "intervals")) != NO_TIME)
			out_printf(o, " (%lld intervals)", (long long)v);
		if ((s = jstr(d, "reason"))) {
			out_str(o, ": ");
			md_text(o, s, 200);
		}
	} else if (!strcmp(k, "rollout.baking")) {
		if ((v = jint(d, "bake_ms")) != NO_TIME) {
			fmt_dur(v, a, sizeof(a));
			out_printf(o, "baking for %s", a);
		} else {
			out_str(o, "baking");
		}
		if ((v = jint(d, "until")) != NO_TIME) {
			fmt_time(v, b, sizeof(b));
			out_printf(o, " (until %s)", b);
		}
	} else if (!strcmp(k, "rollout.completed")) {
		const char *sep = "";
		const char *svc;
		json_t *x;

		if ((v = jint(d, "duration_ms")) != NO_TIME) {
			fmt_dur(v, a, sizeof(a));
			out_printf(o, "after %s", a);
			sep = "; ";
		}
		json_object_foreach(json_object_get(d, "stable"), svc, x)
		{
			out_str(o, sep);
			out_str(o, "stable ");
			md_text(o, svc, 60);
			out_str(o, " \xE2\x86\x92 "); /* → */
			md_text(o, json_string_value(x) ? json_string_value(x) : "?", 60);
			sep = ", ";
		}
		if ((s = jstr(d, "note"))) {
			out_str(o, sep[0] ? "; " : "");
			md_text(o, s, 200);
		}
	} else if (!strcmp(k, "rollout.evidence")) {
		if ((s = jstr(d, "path"))) {
			out_str(o, "bundle written to ");
			md_text(o, s, 200);
		} else {
			out_str(o, "bundle not written: ");
			md_text(o, jstr_or(d, "error", "?"), 200);
		}
	} else if (!strcmp(k, "rollout.rollback.finished")) {
		out_str(o, "rollback finished");
		if ((v = jint(d, "duration_ms")) != NO_TIME) {
			fmt_dur(v, a, sizeof(a));
			out_printf(o, " %s after the decision", a);
		}
		if (jint(d, "hooks_ok") != NO_TIME || jint(d, "hooks_failed") != NO_TIME) {
			fmt_field(d, "hooks_ok", a, sizeof(a));
			fmt_field(d, "hooks_failed", b, sizeof(b));
			out_printf(o, "; hooks %s ok, %s failed", a, b);
		}
		if ((s = jstr(d, "verify"))) {
			out_str(o, "; verify ");
			md_text(o, s, 40);
		}
	} else if (!strcmp(k, "rollout.failed")) {
		md_text(o, jstr(d, "reason"), 200);
	} else if (!strcmp(k, "rollout.validation.scheduled")) {
		out_printf(o, "%zu validation window(s) scheduled",
		           json_array_size(json_object_get(d, "windows")));
	} else if (!strcmp(k, "rollout.validation.started")) {
		fmt_time(jint(d, "until_ms"), a, sizeof(a));
		out_str(o, "validation window ");
		md_text(o, jstr_or(d, "window", "?"), 60);
		out_printf(o, " runs until %s UTC", a);
	} else if (!strncmp(k, "rollout.validation.", 19)) {
		out_str(o, "validation window ");
		md_text(o, jstr_or(d, "window", "?"), 60);
		out_str(o, ": ");
		md_text(o, jstr_or(d, "result", "?"), 20);
		out_str(o, ": ");
		md_text(o, jstr_or(d, "reason", ""), 200);
	} else if (!strcmp(k, "rollout.canary_requests")) {
		const json_t *tv;
		const char *t;
		size_t n = 0;

		json_object_foreach((json_t *)json_object_get(d, "targets"), t, tv)
		{
			n += json_array_size(json_object_get(tv, "requests"));
		}
		out_printf(o, "the canary's last %zu request(s) kept (canary-requests.json)", n);
	} else if (d) {
		/* an unknown kind: its details, compact and shortened */
		char *text = json_dumps(d, JSON_COMPACT);

		if (text)
			md_text(o, text, 160);
		free(text);
	}
}

static bool in_timeline(const char *kind)
{
	return !is_verdict_kind(kind) && !is_interval_kind(kind) &&
	       strcmp(kind, "rollout.step.passed");
}

static void sum_timeline(struct out *o, const struct run *r)
{
	size_t rows = 0, more = 0;

	out_str(o, "## Timeline\n\n| time (UTC) | event | detail |\n|---|---|---|\n");
	for (size_t i = r->first; i < r->end; i++) {
		const json_t *e = json_array_get(r->events, i);
		char t[40];

		if (!json_is_object(e) || !in_timeline(ev_kind(e)))
			continue;
		if (rows == TIMELINE_MAX) {
			more++;
			continue;
		}
		rows++;
		fmt_time(ev_time(e, r->skew), t, sizeof(t));
		out_printf(o, "| %s | ", t);
		md_text(o, ev_kind(e)[0] ? ev_kind(e) : "(no kind)", 60);
		out_str(o, " | ");
		timeline_detail(o, e);
		out_str(o, " |\n");
	}
	if (rows == 0)
		out_str(o, "| — | — | no events |\n");
	if (more)
		out_printf(o, "\n_%zu more events are in events.json._\n", more);
	out_str(o, "\n");
}

/* The verdict event that decided rollback `rb` (same check, at or before it). */
static const json_t *deciding_verdict_event(const struct run *r, size_t rb, const char *check)
{
	for (size_t i = rb; check && i-- > r->first;) {
		const json_t *e = json_array_get(r->events, i);
		const char *c;

		if (strcmp(ev_kind(e), "verdict"))
			continue;
		c = jstr(ev_details(e), "check");
		if (c && !strcmp(c, check))
			return e;
	}
	return NULL;
}

/* "| canary | 0.05 | 1200 |" of a verdict's cohort object. */
static void cohort_row(struct out *o, const char *label, const json_t *co)
{
	char a[64], b[64];

	fmt_field(co, "value", a, sizeof(a));
	fmt_field(co, "requests", b, sizeof(b));
	out_printf(o, "| %s | ", label);
	md_text(o, a, 60);
	out_str(o, " | ");
	md_text(o, b, 60);
	out_str(o, " |\n");
}

static void sum_verdict(struct out *o, const struct run *r, size_t rb, const json_t *v,
                        const char *rb_reason)
{
	const json_t *ve = deciding_verdict_event(r, rb, jstr(v, "check")), *vd = ev_details(ve);
	char a[64], b[64], c[64];

	out_str(o, "**Deciding verdict:** check `");
	md_text(o, jstr_or(v, "check", "?"), 80);
	out_str(o, "` on `");
	md_text(o, jstr_or(v, "metric", "?"), 60);
	out_str(o, "`");
	if (jstr(vd, "target")) {
		out_str(o, " (target `");
		md_text(o, jstr(vd, "target"), 80);
		out_str(o, "`)");
	}
	out_str(o, ": ");
	md_text(o, jstr_or(v, "outcome", "?"), 20);
	if (jint(vd, "consecutive_failures") != NO_TIME)
		out_printf(o, ", %lld consecutive failing intervals",
		           (long long)jint(vd, "consecutive_failures"));
	out_str(o, ".\n\n| cohort | value | requests |\n|---|---|---|\n");
	cohort_row(o, "canary", json_object_get(v, "canary"));
	cohort_row(o, "baseline", json_object_get(v, "baseline"));
	out_str(o, "\n");
	fmt_field(v, "bound_value", a, sizeof(a));
	fmt_field(v, "observed", b, sizeof(b));
	out_str(o, "Bound `");
	md_text(o, jstr_or(v, "bound", "?"), 40);
	out_str(o, "` = ");
	md_text(o, a, 60);
	out_str(o, ", observed ");
	md_text(o, b, 60);
	fmt_field(v, "min_samples", a, sizeof(a));
	fmt_field(v, "interval_ms", c, sizeof(c));
	out_str(o, " (min_samples ");
	md_text(o, a, 60);
	out_str(o, ", interval ");
	md_text(o, c, 60);
	out_str(o, " ms).");
	if (jstr(v, "reason") && (!rb_reason || strcmp(jstr(v, "reason"), rb_reason))) {
		out_str(o, " Verdict: ");
		md_text(o, jstr(v, "reason"), 320);
	}
	out_str(o, "\n\n");
}

#define HOOKS_HEAD "| # | kind | status | duration | result |\n|---|---|---|---|---|\n"

/* One row of the hooks table; status_override for a hook with no result. */
static void hook_row(struct out *o, const json_t *h, const char *status_override)
{
	const char *sep = "";
	char a[64];
	int64_t v;
	const char *s;

	fmt_field(h, "index", a, sizeof(a));
	out_str(o, "| ");
	md_text(o, a, 20);
	out_str(o, " | ");
	hook_what(o, h);
	out_str(o, " | ");
	if (status_override)
		out_str(o, status_override);
	else
		md_text(o, jstr_or(h, "status", "?"), 20);
	out_str(o, " | ");
	if ((v = jint(h, "duration_ms")) != NO_TIME)
		out_printf(o, "%lld ms", (long long)v);
	else
		out_str(o, "—");
	out_str(o, " | ");
	if ((v = jint(h, "exit_code")) != NO_TIME) {
		out_printf(o, "exit %lld", (long long)v);
		sep = "; ";
	}
	if ((v = jint(h, "http_status")) != NO_TIME) {
		out_printf(o, "%sHTTP %lld", sep, (long long)v);
		sep = "; ";
	}
	if ((s = jstr(h, "error"))) {
		out_printf(o, "%serror: ", sep);
		md_text(o, s, 160);
		sep = "; ";
	}
	if ((s = jstr(h, "why"))) {
		out_str(o, sep);
		md_text(o, s, 160);
		sep = "; ";
	}
	if ((s = jstr(h, "output")) && s[0]) {
		out_printf(o, "%soutput: ", sep);
		md_text(o, s, 160);
		sep = "; ";
	}
	out_str(o, sep[0] ? " |\n" : "— |\n");
}

/* Whether hook.started event at i has its rollout.hook result before `end`. */
static bool hook_finished(const struct run *r, size_t i, size_t end)
{
	const json_t *d = ev_details(json_array_get(r->events, i));
	const json_t *idx = json_object_get(d, "index");
	const char *tg = jstr(d, "target");

	for (size_t j = i + 1; j < end; j++) {
		const json_t *f = json_array_get(r->events, j), *fd = ev_details(f);
		const char *ft = jstr(fd, "target");

		if (strcmp(ev_kind(f), "rollout.hook"))
			continue;
		if (json_equal(json_object_get(fd, "index"), (json_t *)idx) &&
		    ((!tg && !ft) || (tg && ft && !strcmp(tg, ft))))
			return true;
	}
	return false;
}

static void sum_mitigated(struct out *o, const json_t *mit)
{
	const json_t *md = ev_details(mit);
	int64_t us = jint(md, "time_to_mitigate_us");
	int64_t dec = jint(md, "decision_ms"), app = jint(md, "applied_ms");
	int64_t p = jint(md, "persist_us"), pub = jint(md, "publish_us"),
	        w = jint(md, "workers_us");

	if (!mit) {
		out_str(o, "- **Time to mitigate:** not recorded (no rollout.mitigated event).\n");
		return;
	}
	if (us != NO_TIME)
		out_printf(o,
		           "- **Time to mitigate:** %.1f ms, from the decision until no worker "
		           "routes new requests to the canary",
		           (double)us / 1000.0);
	else if (dec != NO_TIME && app != NO_TIME)
		out_printf(o,
		           "- **Time to mitigate:** %lld ms, from the decision until the routing "
		           "change was published (workers not measured)",
		           (long long)(app - dec));
	else
		out_str(o, "- **Time to mitigate:** not measured");
	if (p != NO_TIME && pub != NO_TIME && w != NO_TIME)
		out_printf(o, " (persist %.1f ms, publish %.1f ms, workers %.1f ms)",
		           (double)p / 1000.0, (double)pub / 1000.0, (double)w / 1000.0);
	if (json_is_false(json_object_get(md, "all_workers_confirmed")))
		out_str(o, "; not every worker confirmed the change in time");
	out_str(o, jtrue(md, "after_restart") ? "; applied after a restart.\n" : ".\n");
}

/*
 * One rollback: its events are those up to the next rollback (mitigated,
 * drained, hooks, verified, evidence, rollback.finished).
 */
static void sum_rollback(struct out *o, const struct run *r, size_t rb, int nth, int total)
{
	const json_t *e = json_array_get(r->events, rb), *d = ev_details(e);
	const json_t *mit = NULL, *ver = NULL, *drained = NULL, *fin = NULL, *v;
	const json_t *t = json_object_get(d, "targets"), *hooks = json_object_get(d, "hooks");
	size_t next = r->end, rows = 0, i;
	json_t *x;
	char a[64], b[64];
	int64_t ttd, start, n;

	for (i = rb + 1; i < r->end; i++)
		if (!strcmp(ev_kind(json_array_get(r->events, i)), "rollout.rollback")) {
			next = i;
			break;
		}
	for (i = rb + 1; i < next; i++) {
		const json_t *f = json_array_get(r->events, i);
		const char *k = ev_kind(f);

		if (!mit && !strcmp(k, "rollout.mitigated"))
			mit = f;
		if (!ver && !strcmp(k, "rollout.verified"))
			ver = f;
		if (!drained && !strcmp(k, "rollout.drained"))
			drained = f;
		if (!fin && !strcmp(k, "rollout.rollback.finished"))
			fin = f;
	}

	if (total > 1)
		out_printf(o, "## Rollback %d of %d\n\n", nth, total);
	else
		out_str(o, "## Rollback\n\n");
	out_str(o, "**Reason:** ");
	md_text(o, jstr_or(d, "reason", "no reason recorded"), 400);
	out_str(o, "\n\n");
	fmt_time(ev_time(e, r->skew), a, sizeof(a));
	out_printf(o, "Decided at %s UTC by ", a);
	md_text(o, jstr_or(e, "actor", "?"), 60);
	md_paren(o, jstr(d, "class"), 20);
	if (jint(d, "step") != NO_TIME)
		out_printf(o, " during step %lld", (long long)jint(d, "step") + 1);
	if (json_array_size(t)) {
		out_str(o, "; targets ");
		md_list(o, t, 80);
	}
	out_str(o, json_is_false(json_object_get(d, "all")) ? " (the others keep running).\n\n"
	                                                    : ".\n\n");

	v = json_object_get(d, "verdict");
	if (json_is_object(v))
		sum_verdict(o, r, rb, v, jstr(d, "reason"));
	else
		out_str(o, "No deciding verdict: the rollback was not decided by a check.\n\n");

	ttd = jint(d, "time_to_detect_ms");
	start = jint(d, "first_failing_interval_start_ms");
	if (ttd != NO_TIME) {
		fmt_dur(ttd, b, sizeof(b));
		out_printf(o, "- **Time to detect:** %lld ms (%s)", (long long)ttd, b);
		if (start != NO_TIME) {
			fmt_time(start, a, sizeof(a));
			out_printf(o, ", from the start of the first failing interval (%s UTC)", a);
		}
		out_str(o, " to the decision.\n");
	} else {
		out_str(o, "- **Time to detect:** n/a (no failing check streak recorded).\n");
	}
	sum_mitigated(o, mit);
	if (drained) {
		const json_t *dd = ev_details(drained);

		out_str(o, "- **Drain:** ");
		if ((n = jint(dd, "duration_ms")) != NO_TIME)
			out_printf(o, "%lld ms", (long long)n);
		else
			out_str(o, "done");
		if ((n = jint(dd, "limit_ms")) != NO_TIME)
			out_printf(o, " (limit %lld ms)", (long long)n);
		if (json_is_false(json_object_get(dd, "in_flight_known")))
			out_str(o, "; requests in flight unknown");
		else if ((n = jint(dd, "in_flight_left")) != NO_TIME)
			out_printf(o, "; %lld requests still in flight", (long long)n);
		out_str(o, ".\n");
	} else if ((n = jint(d, "drain_ms")) != NO_TIME) {
		out_printf(o, "- **Drain:** limit %lld ms (no rollout.drained event).\n",
		           (long long)n);
	}
	if (ver) {
		const json_t *vd = ev_details(ver);

		out_str(o, "- **Verify:** ");
		md_text(o, verify_result(vd), 40);
		if (jint(vd, "duration_ms") != NO_TIME)
			out_printf(o, " in %lld ms", (long long)jint(vd, "duration_ms"));
		if (jstr(vd, "reason")) {
			out_str(o, ": ");
			md_text(o, jstr(vd, "reason"), 200);
		}
		out_str(o, ".\n");
	}
	if (fin && (n = jint(ev_details(fin), "duration_ms")) != NO_TIME) {
		fmt_dur(n, b, sizeof(b));
		out_printf(o, "- **Finished:** %s after the decision.\n", b);
	}

	out_str(o, "\n**Hooks:**\n\n");
	for (i = rb + 1; i < next; i++) {
		const json_t *f = json_array_get(r->events, i);
		const char *k = ev_kind(f);
		bool result = !strcmp(k, "rollout.hook");

		if (!result && (strcmp(k, "rollout.hook.started") || hook_finished(r, i, next)))
			continue;
		if (rows++ == 0)
			out_str(o, HOOKS_HEAD);
		hook_row(o, ev_details(f), result ? NULL : "started, no result");
	}
	if (rows == 0) {
		/* older events list the hooks in the rollback itself */
		json_array_foreach((json_t *)hooks, i, x)
		{
			if (rows++ == 0)
				out_str(o, HOOKS_HEAD);
			hook_row(o, x, NULL);
		}
	}
	if (rows == 0 && (n = jint(d, "hooks")) != NO_TIME && n > 0)
		out_printf(o, "%lld configured; no results recorded.\n", (long long)n);
	else if (rows == 0)
		out_str(o, "No rollback hooks.\n");
	out_str(o, "\n");
}

static int outcome_index(const char *s)
{
	static const char *const names[] = {"pass", "fail", "inconclusive", "error"};

	for (int i = 0; s && i < 4; i++)
		if (!strcmp(s, names[i]))
			return i;
	return 4;
}

static int sum_verdict_counts(struct out *o, const struct run *r)
{
	const struct tallies *t = r->tally;

	out_str(o, "## Verdicts\n\n");
	if (!t || t->n == 0) {
		out_str(o, "_No verdicts in this run._\n\n");
		return 0;
	}
	out_str(o, t->other
	               ? "| check | pass | fail | inconclusive | error | other |\n"
	                 "|---|---|---|---|---|---|\n"
	               : "| check | pass | fail | inconclusive | error |\n|---|---|---|---|---|\n");
	for (size_t k = 0; k < t->n; k++) {
		const struct check_count *cc = &t->c[k];

		out_str(o, "| ");
		md_text(o, cc->name, 80);
		out_printf(o, " | %ld | %ld | %ld | %ld", cc->n[0], cc->n[1], cc->n[2], cc->n[3]);
		if (t->other)
			out_printf(o, " | %ld", cc->n[4]);
		out_str(o, " |\n");
	}
	out_str(o, "\n");
	return 0;
}

/* The highest step a run reached, as "step 2 of 4 (5%)". */
static void reached(const struct run *r, char *b, size_t n)
{
	int64_t best = NO_TIME, of = NO_TIME;
	char w[96] = "", ofs[32] = "";

	b[0] = '\0';
	for (size_t i = r->first; i < r->end; i++) {
		const json_t *e = json_array_get(r->events, i), *d = ev_details(e);
		int64_t st = jint(d, "step");
		char cur[96];

		if (strcmp(ev_kind(e), "rollout.step") || st == NO_TIME)
			continue;
		if (best == NO_TIME || st >= best) {
			best = st;
			of = jint(d, "of");
		}
		fmt_weights(json_object_get(d, "weights"), cur, sizeof(cur));
		if (cur[0])
			snprintf(w, sizeof(w), "%s", cur);
	}
	if (best == NO_TIME)
		return;
	if (of != NO_TIME)
		snprintf(ofs, sizeof(ofs), " of %lld", (long long)of);
	snprintf(b, n, "step %lld%s%s%s%s", (long long)best + 1, ofs, w[0] ? " (last weight " : "",
	         w, w[0] ? ")" : "");
}

static void sum_validation(struct out *o, const struct run *r);
static void sum_canary_requests(struct out *o, const struct run *r);

static json_t *summary_md(const char *name, const struct run *r, const json_t *live, int64_t now_ms)
{
	struct out o;
	char a[64], b[64], c[64], step[200];
	int nrb = 0, k = 0;
	const char *live_state = jstr(live, "state");

	out_init(&o, TEXT_CAP);
	out_str(&o, "# Rollout ");
	md_text(&o, name, 200);
	out_printf(&o, ": %s\n\n", outcome_text(r->outcome));
	/* engine (issue 16): a rehearsal says so first (its events carry details.rehearsal) */
	if (json_number_value(json_object_get(live, "rehearsal")) > 0)
		out_printf(&o,
		           "**REHEARSAL** at %gx: every duration of the plan was divided by %g "
		           "(`start --rehearse`).\n\n",
		           json_number_value(json_object_get(live, "rehearsal")),
		           json_number_value(json_object_get(live, "rehearsal")));

	out_str(&o, "## What happened\n\n");
	if (r->outcome == OUT_NONE) {
		out_str(&o, "The rollout has no recorded run.\n\n");
	} else {
		fmt_time(r->start_ms, a, sizeof(a));
		out_str(&o, "Rollout `");
		md_text(&o, name, 200);
		out_str(&o, "`");
		if (r->number > 0)
			out_printf(&o, " (run %d)", r->number);
		out_printf(&o, " started at %s UTC", a);
		if (r->start_ev && jstr(r->start_ev, "actor")) {
			out_str(&o, " by ");
			md_text(&o, jstr(r->start_ev, "actor"), 60);
		}
		if (r->outcome == OUT_COMPLETED || r->outcome == OUT_ROLLED_BACK ||
		    r->outcome == OUT_FAILED) {
			fmt_time(r->end_ms, b, sizeof(b));
			out_printf(&o, " and ended at %s UTC: **%s**", b, outcome_text(r->outcome));
			if (r->start_ms != NO_TIME && r->end_ms != NO_TIME) {
				fmt_dur(r->end_ms - r->start_ms, c, sizeof(c));
				out_printf(&o, " after %s (%lld ms)", c,
				           (long long)(r->end_ms - r->start_ms));
			}
			out_str(&o, ".");
		} else {
			fmt_time(now_ms, b, sizeof(b));
			out_printf(&o, " and has not ended: **%s**", outcome_text(r->outcome));
			if (live_state) {
				out_str(&o, " (live state ");
				md_text(&o, live_state, 40);
				out_str(&o, ")");
			}
			out_printf(&o, " as of %s UTC", b);
			if (r->start_ms != NO_TIME && now_ms >= r->start_ms) {
				fmt_dur(now_ms - r->start_ms, c, sizeof(c));
				out_printf(&o, ", %s after the start", c);
			}
			out_str(&o, ".");
		}
		reached(r, step, sizeof(step));
		if (step[0]) {
			out_str(&o, " It reached ");
			md_text(&o, step, sizeof(step));
			out_str(&o, ".");
		}
		for (size_t i = r->first; i < r->end; i++) {
			const json_t *e = json_array_get(r->events, i);

			if (!strcmp(ev_kind(e), "rollout.rollback")) {
				nrb++;
				if (nrb == 1) {
					const char *why = jstr(ev_details(e), "reason");
					size_t len;

					if (!why || !why[0])
						why = "no reason recorded";
					len = strlen(why);
					out_str(&o, " Rolled back because: ");
					md_text(&o, why, 400);
					if (len <= 400 && why[len - 1] != '.')
						out_str(&o, ".");
				}
			}
		}
		if (r->number > 1)
			out_printf(&o, " Earlier runs (%d) are only in events.json.",
			           r->number - 1);
		out_str(&o, "\n\n");
	}

	sum_timeline(&o, r);
	for (size_t i = r->first; i < r->end; i++)
		if (!strcmp(ev_kind(json_array_get(r->events, i)), "rollout.rollback"))
			sum_rollback(&o, r, i, ++k, nrb);
	if (sum_verdict_counts(&o, r)) {
		buf_release(&o.b);
		return NULL;
	}
	sum_canary_requests(&o, r);
	sum_validation(&o, r);
	out_str(&o, "## Charts\n\n![canary vs baseline error rate](error_rate.svg)\n\n"
	            "![canary vs baseline p99 latency](latency_p99.svg)\n\n");
	out_str(&o, "## Impact\n\n_to be filled_\n\n"
	            "## Root cause\n\n_to be filled_\n\n"
	            "## Action items\n\n_to be filled_\n\n");
	fmt_time(now_ms, a, sizeof(a));
	out_printf(&o,
	           "---\n\n_Generated by canaryd at %s UTC from %zu events (%zu in this run). "
	           "Inputs: config.yaml, events.json, verdicts.json, series.json._\n",
	           a, r->total > json_array_size(r->events) ? r->total : json_array_size(r->events),
	           r->end - r->first);
	if (r->total > json_array_size(r->events))
		out_printf(
		    &o,
		    "\n_Interval and verdict events are downsampled in this bundle: %zu of "
		    "%zu events are in events.json (first, last, minimum and maximum of each "
		    "stretch, and every interval around a rollback decision)._\n",
		    json_array_size(r->events), r->total);
	return out_finish(&o, "# Summary not available\n\nThe summary is over its size cap; "
	                      "see events.json.\n");
}

/* ------------------------------------------------------------------------ */
/* Charts                                                                    */

/* Layout (px). */
#define SVG_W   880
#define SVG_H   420
#define PLOT_L  70.0
#define PLOT_R  680.0
#define PLOT_T  50.0
#define PLOT_B  350.0
#define LEGEND  695.0
#define C_ROLLB "#d62728"

static const char *const CANARY_COLOR[CHART_TARGETS] = {"#ff7f0e", "#9467bd", "#8c564b", "#e377c2"};
static const char *const BASE_COLOR[CHART_TARGETS] = {"#1f77b4", "#2ca02c", "#17becf", "#7f7f7f"};

struct line {
	const char *target;  /* borrowed from the events */
	double *x, *yc, *yb; /* ms since the run's start; NAN: no value */
	size_t n, cap;
};

struct marker {
	double x;
	bool rollback;
	char label[96];
};

struct chart {
	struct line lines[CHART_TARGETS];
	size_t nlines, ntargets;
	struct marker *m;
	size_t nm, mcap;
};

static void chart_release(struct chart *c)
{
	for (size_t i = 0; i < c->nlines; i++) {
		free(c->lines[i].x);
		free(c->lines[i].yc);
		free(c->lines[i].yb);
	}
	free(c->m);
}

static int line_add(struct line *l, double x, double yc, double yb)
{
	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 64;
		double *px = realloc(l->x, ncap * sizeof(double));

		if (!px)
			return -1;
		l->x = px;
		px = realloc(l->yc, ncap * sizeof(double));
		if (!px)
			return -1;
		l->yc = px;
		px = realloc(l->yb, ncap * sizeof(double));
		if (!px)
			return -1;
		l->yb = px;
		l->cap = ncap;
	}
	l->x[l->n] = x;
	l->yc[l->n] = yc;
	l->yb[l->n] = yb;
	l->n++;
	return 0;
}

static int marker_add(struct chart *c, double x, bool rollback, const char *label)
{
	if (c->nm == c->mcap) {
		size_t ncap = c->mcap ? c->mcap * 2 : 16;
		struct marker *p = realloc(c->m, ncap * sizeof(*p));

		if (!p)
			return -1;
		c->m = p;
		c->mcap = ncap;
	}
	c->m[c->nm].x = x;
	c->m[c->nm].rollback = rollback;
	snprintf(c->m[c->nm].label, sizeof(c->m[0].label), "%s", label);
	c->nm++;
	return 0;
}

static double cohort_value(const json_t *tv, const char *cohort, const char *metric, double scale)
{
	double v;

	if (!jnum(json_object_get(tv, cohort), metric, &v))
		return NAN;
	return v * scale;
}

/* The latest run's points of `metric` (times scale) and its markers. */
static int chart_collect(struct chart *c, const struct run *r, int64_t origin, const char *metric,
                         double scale)
{
	json_t *seen;
	int rc = -1;

	memset(c, 0, sizeof(*c));
	seen = json_object();
	if (!seen)
		return -1;
	/* which targets: in order of first appearance, the first CHART_TARGETS drawn */
	for (size_t i = r->first; i < r->end; i++) {
		const json_t *e = json_array_get(r->events, i);
		const char *tn;
		json_t *tv;

		if (!is_interval_kind(ev_kind(e)))
			continue;
		json_object_foreach(json_object_get(ev_details(e), "targets"), tn, tv)
		{
			if (json_object_get(seen, tn))
				continue;
			if (json_object_set_new(seen, tn, json_true()))
				goto out;
			if (c->nlines < CHART_TARGETS)
				c->lines[c->nlines++].target = tn;
			c->ntargets++;
		}
	}
	for (size_t i = r->first; i < r->end; i++) {
		const json_t *e = json_array_get(r->events, i), *d = ev_details(e);
		const char *k = ev_kind(e);
		int64_t t;

		if (is_interval_kind(k)) {
			const json_t *targets = json_object_get(d, "targets");

			t = jint(d, "interval_end_ms");
			if (t == NO_TIME || t < origin)
				continue;
			for (size_t l = 0; l < c->nlines; l++) {
				const json_t *tv = json_object_get(targets, c->lines[l].target);

				if (line_add(&c->lines[l], (double)(t - origin),
				             cohort_value(tv, "canary", metric, scale),
				             cohort_value(tv, "baseline", metric, scale)))
					goto out;
			}
		} else if (!strcmp(k, "rollout.step")) {
			char w[96];

			fmt_weights(json_object_get(d, "weights"), w, sizeof(w));
			t = ev_time(e, r->skew);
			if (w[0] && t != NO_TIME && t >= origin &&
			    marker_add(c, (double)(t - origin), false, w))
				goto out;
		} else if (!strcmp(k, "rollout.rollback")) {
			t = ev_time(e, r->skew);
			if (t != NO_TIME && t >= origin &&
			    marker_add(c, (double)(t - origin), true, "rollback"))
				goto out;
		}
	}
	rc = 0;
out:
	json_decref(seen);
	return rc;
}

/* A 1-2-5 step giving about n intervals over [0, span]. */
static double nice_step(double span, int n)
{
	double raw = span / n, mag, f;

	if (!(raw > 0) || !isfinite(raw))
		return 1;
	mag = pow(10, floor(log10(raw)));
	f = raw / mag;
	if (f <= 1)
		return mag;
	if (f <= 2)
		return 2 * mag;
	if (f <= 5)
		return 5 * mag;
	return 10 * mag;
}

static int step_decimals(double step)
{
	int d;

	if (step >= 1)
		return 0;
	d = (int)ceil(-log10(step) - 1e-9);
	return d > 6 ? 6 : d;
}

/* Data coordinates (ms since the start, metric) to pixels. */
static double px_of(double x, double xspan)
{
	return PLOT_L + x / xspan * (PLOT_R - PLOT_L);
}

static double py_of(double y, double ytop)
{
	return PLOT_B - y / ytop * (PLOT_B - PLOT_T);
}

/* One polyline per run of values; a NAN breaks the line, a lone value is a dot. */
static void svg_polyline(struct out *o, const struct line *l, const double *y, double xspan,
                         double ytop, const char *cls, const char *color)
{
	size_t i = 0, j;

	for (;;) {
		while (i < l->n && isnan(y[i]))
			i++;
		for (j = i; j < l->n && !isnan(y[j]);)
			j++;
		if (j == i)
			return;
		out_printf(o, "<%s class=\"%s\" data-target=\"", j - i == 1 ? "circle" : "polyline",
		           cls);
		svg_text(o, l->target, 200);
		if (j - i == 1) {
			out_printf(o, "\" cx=\"%.2f\" cy=\"%.2f\" r=\"2.5\" fill=\"%s\"/>\n",
			           px_of(l->x[i], xspan), py_of(y[i], ytop), color);
		} else {
			out_printf(o,
			           "\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\" "
			           "stroke-linejoin=\"round\" points=\"",
			           color);
			for (size_t k = i; k < j; k++)
				out_printf(o, "%s%.2f,%.2f", k > i ? " " : "",
				           px_of(l->x[k], xspan), py_of(y[k], ytop));
			out_str(o, "\"/>\n");
		}
		i = j;
	}
}

static void svg_legend_entry(struct out *o, double y, const char *color, const char *dash,
                             const char *label, const char *target)
{
	out_printf(o,
	           "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" "
	           "stroke-width=\"2\"%s/>\n",
	           LEGEND, y, LEGEND + 24, y, color, dash);
	out_printf(o, "<text x=\"%.2f\" y=\"%.2f\">", LEGEND + 30, y + 4);
	if (target) {
		svg_text(o, target, 12);
		out_str(o, " ");
	}
	out_str(o, label);
	out_str(o, "</text>\n");
}

/*
 * One chart: canary vs baseline of `metric` over the latest run.  x is time
 * since the run's start, y starts at 0.
 */
/* The words of a chart: its comparison, the two lines' names, the x origin. */
struct chart_text {
	const char *versus, *a, *b, *since, *marker;
};

static const struct chart_text RUN_TEXT = {"canary vs baseline", "canary", "baseline", "the start",
                                           "rollback decision"};

/*
 * Draws chart c (released here): the run's charts and the validation
 * reports' (validation_chart()) share this layout.
 */
static json_t *chart_draw(const char *name, struct chart *cp, const char *what, const char *yaxis,
                          const struct chart_text *tx)
{
	struct chart c = *cp;
	struct out o;
	double xmax = 0, ymax = 0, xspan, ytop, ystep, xstep, xdiv;
	const char *unit;
	bool any = false;
	int dec;

	out_init(&o, SVG_CAP);
	out_printf(&o,
	           "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
	           "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n",
	           SVG_W, SVG_H, SVG_W, SVG_H);
	out_printf(&o, "<rect width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n", SVG_W, SVG_H);

	/* title: which targets are drawn */
	out_printf(&o,
	           "<text class=\"title\" x=\"%.2f\" y=\"24\" text-anchor=\"middle\" "
	           "font-size=\"15\">",
	           SVG_W / 2.0);
	svg_text(&o, name, 80);
	out_printf(&o, ": %s, %s", what, tx->versus);
	if (c.nlines > 0) {
		if (c.ntargets > c.nlines)
			out_printf(&o, " (first %zu of %zu targets: ", c.nlines, c.ntargets);
		else
			out_str(&o, c.nlines == 1 ? " (target " : " (targets ");
		for (size_t l = 0; l < c.nlines; l++) {
			if (l)
				out_str(&o, ", ");
			svg_text(&o, c.lines[l].target, 40);
		}
		out_str(&o, ")");
	}
	out_str(&o, "</text>\n");
	out_printf(&o,
	           "<rect class=\"plot\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
	           "fill=\"none\" stroke=\"#cccccc\"/>\n",
	           PLOT_L, PLOT_T, PLOT_R - PLOT_L, PLOT_B - PLOT_T);

	for (size_t l = 0; l < c.nlines; l++)
		for (size_t i = 0; i < c.lines[l].n; i++) {
			const struct line *ln = &c.lines[l];

			if (!isnan(ln->yc[i]) || !isnan(ln->yb[i])) {
				any = true;
				xmax = fmax(xmax, ln->x[i]);
			}
			if (!isnan(ln->yc[i]))
				ymax = fmax(ymax, ln->yc[i]);
			if (!isnan(ln->yb[i]))
				ymax = fmax(ymax, ln->yb[i]);
		}
	if (!any) {
		out_printf(&o,
		           "<text class=\"no-data\" x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" "
		           "fill=\"#888888\" font-size=\"16\">no data</text>\n",
		           (PLOT_L + PLOT_R) / 2, (PLOT_T + PLOT_B) / 2);
		goto done;
	}
	for (size_t i = 0; i < c.nm; i++)
		xmax = fmax(xmax, c.m[i].x);
	xspan = xmax > 0 ? xmax : 1;

	/* y axis from 0 to a rounded top, with horizontal grid lines */
	if (!(ymax > 0))
		ymax = 1;
	ystep = nice_step(ymax, 5);
	ytop = ceil(ymax / ystep - 1e-9) * ystep;
	dec = step_decimals(ystep);
	for (int i = 0; i <= (int)floor(ytop / ystep + 1e-9); i++) {
		double v = i * ystep, py = py_of(v, ytop);

		out_printf(&o,
		           "<line class=\"grid\" x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" "
		           "stroke=\"#eeeeee\"/>\n",
		           PLOT_L, py, PLOT_R, py);
		out_printf(
		    &o,
		    "<text class=\"ytick\" x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\">%.*f</text>\n",
		    PLOT_L - 6, py + 4, dec, v);
	}
	out_printf(&o,
	           "<text class=\"ylabel\" x=\"18\" y=\"%.2f\" text-anchor=\"middle\" "
	           "transform=\"rotate(-90 18 %.2f)\">%s</text>\n",
	           (PLOT_T + PLOT_B) / 2, (PLOT_T + PLOT_B) / 2, yaxis);

	/* x axis: seconds, minutes or hours since the start */
	if (xspan <= 300000) {
		xdiv = 1000, unit = "s";
	} else if (xspan <= 300 * 60000.0) {
		xdiv = 60000, unit = "min";
	} else {
		xdiv = 3600000, unit = "h";
	}
	xstep = nice_step(xspan / xdiv, 6);
	dec = step_decimals(xstep);
	for (int i = 0; i <= (int)floor(xspan / xdiv / xstep + 1e-9); i++) {
		double v = i * xstep, px = PLOT_L + v * xdiv / xspan * (PLOT_R - PLOT_L);

		out_printf(&o,
		           "<line class=\"xtick\" x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" "
		           "stroke=\"#999999\"/>\n",
		           px, PLOT_B, px, PLOT_B + 5);
		out_printf(&o,
		           "<text class=\"xtick\" x=\"%.2f\" y=\"%.2f\" "
		           "text-anchor=\"middle\">%.*f</text>\n",
		           px, PLOT_B + 18, dec, v);
	}
	out_printf(&o,
	           "<text class=\"xlabel\" x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">time since "
	           "%s (%s)</text>\n",
	           (PLOT_L + PLOT_R) / 2, PLOT_B + 40, tx->since, unit);

	/* step boundaries and the rollback, under the lines */
	for (size_t i = 0; i < c.nm; i++) {
		const struct marker *m = &c.m[i];
		double px = px_of(m->x, xspan);
		bool right = px > PLOT_L + 0.85 * (PLOT_R - PLOT_L);

		if (m->rollback)
			out_printf(&o,
			           "<line class=\"rollback\" x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" "
			           "y2=\"%.2f\" stroke=\"" C_ROLLB "\" stroke-width=\"2\"/>\n",
			           px, PLOT_T, px, PLOT_B);
		else
			out_printf(&o,
			           "<line class=\"step\" x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" "
			           "y2=\"%.2f\" stroke=\"#888888\" stroke-dasharray=\"4 3\"/>\n",
			           px, PLOT_T, px, PLOT_B);
		out_printf(&o,
		           "<text class=\"%s\" x=\"%.2f\" y=\"%.2f\" text-anchor=\"%s\" "
		           "font-size=\"10\" fill=\"%s\">",
		           m->rollback ? "rollback-label" : "step-label", right ? px - 3 : px + 3,
		           PLOT_T + (m->rollback ? 26 : 12), right ? "end" : "start",
		           m->rollback ? C_ROLLB : "#555555");
		svg_text(&o, m->label, sizeof(m->label));
		out_str(&o, "</text>\n");
	}

	for (size_t l = 0; l < c.nlines; l++) {
		svg_polyline(&o, &c.lines[l], c.lines[l].yb, xspan, ytop, "baseline",
		             BASE_COLOR[l]);
		svg_polyline(&o, &c.lines[l], c.lines[l].yc, xspan, ytop, "canary",
		             CANARY_COLOR[l]);
	}

	/* legend */
	{
		double y = PLOT_T + 8;
		bool multi = c.nlines > 1; /* name the targets only when there are several */

		for (size_t l = 0; l < c.nlines; l++) {
			svg_legend_entry(&o, y, CANARY_COLOR[l], "", tx->a,
			                 multi ? c.lines[l].target : NULL);
			y += 18;
			svg_legend_entry(&o, y, BASE_COLOR[l], "", tx->b,
			                 multi ? c.lines[l].target : NULL);
			y += 18;
		}
		bool steps = false, rollbacks = false;

		for (size_t i = 0; i < c.nm; i++) {
			steps = steps || !c.m[i].rollback;
			rollbacks = rollbacks || c.m[i].rollback;
		}
		if (steps) {
			svg_legend_entry(&o, y, "#888888", " stroke-dasharray=\"4 3\"",
			                 "step (weight)", NULL);
			y += 18;
		}
		if (rollbacks)
			svg_legend_entry(&o, y, C_ROLLB, "", tx->marker, NULL);
	}
done:
	out_str(&o, "</svg>\n");
	chart_release(&c);
	return out_finish(&o, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"880\" "
	                      "height=\"420\"><text x=\"440\" y=\"210\" text-anchor=\"middle\">"
	                      "chart over its size cap: see series.json</text></svg>\n");
}

static json_t *chart_svg(const char *name, const struct run *r, int64_t origin, const char *what,
                         const char *metric, double scale, const char *yaxis)
{
	struct chart c;

	if (chart_collect(&c, r, origin, metric, scale)) {
		chart_release(&c);
		return NULL;
	}
	return chart_draw(name, &c, what, yaxis, &RUN_TEXT);
}

/* ------------------------------------------------------------------------ */
/* Post-rollout validation reports and the canary request sample (issue 16)  */

static const struct chart_text VALIDATION_TEXT = {"new stable vs pre-rollout baseline",
                                                  "new stable", "pre-rollout baseline",
                                                  "the window's start", "window failed"};

/* The report of a window's end event (rollout.validation.RESULT), or NULL. */
static const json_t *validation_report(const json_t *e)
{
	const json_t *rep = json_object_get(ev_details(e), "report");

	if (strncmp(ev_kind(e), "rollout.validation.", 19) != 0 || !json_is_object(rep) ||
	    !jstr(rep, "window"))
		return NULL;
	return rep;
}

/* Percent for rates, ms for latencies. */
static double metric_scale(const char *metric, char *yaxis, size_t n)
{
	bool rate = metric && (!strcmp(metric, "error_rate") || !strcmp(metric, "success_rate"));
	bool latency = metric && !strncmp(metric, "latency_", 8);

	snprintf(yaxis, n, "%.40s%s", metric ? metric : "value",
	         rate      ? " (%)"
	         : latency ? " (ms)"
	                   : "");
	return rate ? 100.0 : 1.0;
}

/* One check's trend over a validation window: the new stable's points and the baseline. */
static json_t *validation_chart(const char *name, const json_t *report, const json_t *check)
{
	const char *metric = jstr(check, "metric");
	int64_t origin = jint(report, "started_ms"), end = jint(report, "ended_ms");
	const json_t *p;
	struct chart c;
	char yaxis[64], what[256];
	double scale = metric_scale(metric, yaxis, sizeof(yaxis)), base = NAN;
	size_t i;

	memset(&c, 0, sizeof(c));
	if (origin == NO_TIME)
		origin = 0;
	if (!jnum(check, "baseline", &base))
		base = NAN;
	c.nlines = c.ntargets = 1;
	c.lines[0].target = jstr_or(check, "target", "every target");
	json_array_foreach(json_object_get(check, "points"), i, p)
	{
		double v, x = (double)(jint(p, "end_ms") - origin);

		if (line_add(&c.lines[0], x, jnum(p, "value", &v) ? v * scale : NAN, base * scale))
			goto fail;
	}
	if (!strcmp(jstr_or(report, "state", ""), "failed") && end != NO_TIME &&
	    marker_add(&c, (double)(end - origin), true, "window failed"))
		goto fail;
	snprintf(what, sizeof(what), "check %.60s (%.30s), window %.60s",
	         jstr_or(check, "name", "?"), metric ? metric : "?",
	         jstr_or(report, "window", "?"));
	return chart_draw(name, &c, what, yaxis, &VALIDATION_TEXT);
fail:
	chart_release(&c);
	return NULL;
}

/*
 * Every validation report of the run into files (validation-WINDOW.md and
 * one chart per check) and into reports.  Sets *bad when out of memory.
 */
static void validation_files(const char *name, const struct run *r, json_t *files, json_t *reports,
                             bool *bad)
{
	for (size_t i = r->first; i < r->end; i++) {
		const json_t *rep = validation_report(json_array_get(r->events, i)), *ck;
		char fname[300], *md;
		size_t k;

		if (!rep)
			continue;
		md = validate_report_md(name, rep);
		snprintf(fname, sizeof(fname), "validation-%.120s.md", jstr(rep, "window"));
		put(files, fname, md ? json_string(md) : NULL, bad);
		free(md);
		json_array_foreach(json_object_get(rep, "checks"), k, ck)
		{
			validate_chart_name(jstr(rep, "window"), jstr_or(ck, "name", "check"),
			                    fname, sizeof(fname));
			put(files, fname, validation_chart(name, rep, ck), bad);
		}
		if (json_array_append(reports, (json_t *)rep))
			*bad = true;
	}
}

/* The summary's section on the validation windows that ended in this run. */
static void sum_validation(struct out *o, const struct run *r)
{
	char a[64], b[64];
	bool any = false;

	for (size_t i = r->first; i < r->end; i++) {
		const json_t *rep = validation_report(json_array_get(r->events, i));

		if (!rep)
			continue;
		if (!any)
			out_str(o,
			        "## Post-rollout validation\n\n| window | result | started (UTC) | "
			        "ended (UTC) | reason | report |\n|---|---|---|---|---|---|\n");
		any = true;
		fmt_time(jint(rep, "started_ms"), a, sizeof(a));
		fmt_time(jint(rep, "ended_ms"), b, sizeof(b));
		out_str(o, "| ");
		md_text(o, jstr_or(rep, "window", "?"), 120);
		out_str(o, " | **");
		md_text(o, jstr_or(rep, "state", "?"), 40);
		out_printf(o, "** | %s | %s | ", a, b);
		md_text(o, jstr_or(rep, "reason", ""), 300);
		out_str(o, " | [validation-");
		md_text(o, jstr_or(rep, "window", "?"), 120);
		out_str(o, ".md](validation-");
		md_text(o, jstr_or(rep, "window", "?"), 120);
		out_str(o, ".md) |\n");
	}
	if (any)
		out_str(o, "\n");
}

/* The rollout.canary_requests events of the run (details with the event's id), or NULL. */
static json_t *canary_samples(const struct run *r)
{
	json_t *a = NULL;

	for (size_t i = r->first; i < r->end; i++) {
		const json_t *e = json_array_get(r->events, i);

		if (strcmp(ev_kind(e), "rollout.canary_requests") != 0 || !ev_details(e))
			continue;
		if (!a && !(a = json_array()))
			return NULL;
		json_array_append_new(a, json_deep_copy(ev_details(e)));
	}
	return a;
}

/* The summary's table of the last decision's canary requests. */
static void sum_canary_requests(struct out *o, const struct run *r)
{
	const json_t *last = NULL, *tv, *q;
	const char *target;
	char a[64];
	size_t i;

	for (size_t k = r->first; k < r->end; k++)
		if (!strcmp(ev_kind(json_array_get(r->events, k)), "rollout.canary_requests"))
			last = ev_details(json_array_get(r->events, k));
	if (!last)
		return;
	fmt_time(jint(last, "decision_ms"), a, sizeof(a));
	out_printf(o,
	           "## Canary requests around the decision\n\nThe last requests the canary served "
	           "before the decision at %s UTC (all decisions: canary-requests.json).\n\n"
	           "| target | version | time (UTC) | request id | method | path | status | "
	           "latency (ms) |\n|---|---|---|---|---|---|---|---|\n",
	           a);
	json_object_foreach((json_t *)json_object_get(last, "targets"), target, tv)
	{
		json_array_foreach(json_object_get(tv, "requests"), i, q)
		{
			double lat = NAN;

			fmt_time(jint(q, "time_ms"), a, sizeof(a));
			out_str(o, "| ");
			md_text(o, target, 60);
			out_str(o, " | ");
			md_text(o, jstr_or(tv, "version", "?"), 60);
			out_printf(o, " | %s | ", a);
			md_text(o, jstr_or(q, "request_id", ""), 64);
			out_str(o, " | ");
			md_text(o, jstr_or(q, "method", ""), 16);
			out_str(o, " | ");
			md_text(o, jstr_or(q, "path", ""), 128);
			jnum(q, "latency_ms", &lat);
			out_printf(o, " | %lld | %.1f |\n", (long long)jint(q, "status"), lat);
		}
	}
	out_str(o, "\n");
}

/* ------------------------------------------------------------------------ */
/* Reading the events: two streaming passes, bounded memory                 */

/*
 * Pass 1 walks every event once and keeps only the audit events (every
 * kind but intervals, verdicts and their summaries), counting the others.
 * Pass 2 walks the intervals, then the verdicts (summaries first: they are
 * always older than what is left at full resolution), and keeps a bounded
 * selection: all of them up to SERIES_MAX, else per stretch of the stream
 * (SERIES_BUCKETS stretches) the first, the last and the extremes, plus
 * every event around the last RB_WINDOWS rollback decisions.  The bundle
 * is built from the audit events and that selection, merged in order.
 */
#define AUDIT_MAX      50000 /* audit events of one rollout kept (more: counted, dropped) */
#define SERIES_MAX     500   /* interval (or verdict) events kept whole below this */
#define SERIES_BUCKETS 60    /* stretches when downsampling; <= 5 events kept per stretch */
#define RB_WINDOWS     4     /* rollbacks whose failing streak is kept at full resolution */
#define RB_RING        40    /* events kept per rollback (the latest of its streak) */
#define LAST_CHECKS    16    /* checks whose last verdict before a rollback is kept */

/* Where events come from: a store (streamed) or a list (the old interface). */
struct source {
	struct store *st;
	const char *subject;
	const json_t *events;
};

/* One event of a walk; seq orders them (the id, or the index in a list). */
struct row {
	int64_t seq;
	const char *kind;
	int64_t id, ts_ms; /* store rows */
	const char *actor, *subject, *details;
	const json_t *ev; /* list rows */
};

typedef int (*row_fn)(void *arg, const struct row *r);

struct row_walk {
	row_fn fn;
	void *arg;
};

static int store_row(void *arg, int64_t id, int64_t ts_ms, const char *actor, const char *kind,
                     const char *subject, const char *details)
{
	const struct row_walk *w = arg;
	struct row r = {.seq = id,
	                .kind = kind,
	                .id = id,
	                .ts_ms = ts_ms,
	                .actor = actor,
	                .subject = subject,
	                .details = details};

	return w->fn(w->arg, &r);
}

/* fn for every event of kind (NULL: all) in order: 0, fn's stop value, or a store error. */
static int walk(const struct source *s, const char *kind, row_fn fn, void *arg)
{
	size_t i;
	json_t *e;

	if (s->st) {
		struct store_events_query q = {.subject = s->subject, .kind = kind};
		struct row_walk w = {fn, arg};

		return store_events_each(s->st, &q, store_row, &w);
	}
	json_array_foreach((json_t *)s->events, i, e)
	{
		struct row r = {.seq = (int64_t)i, .kind = ev_kind(e), .ev = e};
		int rc;

		if (kind && strcmp(r.kind, kind))
			continue;
		rc = fn(arg, &r);
		if (rc)
			return rc;
	}
	return 0;
}

/* "2024-05-01T12:34:56.789Z", as the store writes "ts". */
static void iso_time(int64_t ms, char *b, size_t n)
{
	time_t secs = (time_t)(ms / 1000);
	int64_t frac = ms % 1000;
	struct tm tm;

	if (frac < 0) {
		frac += 1000;
		secs -= 1;
	}
	if (!gmtime_r(&secs, &tm)) {
		snprintf(b, n, "1970-01-01T00:00:00.000Z");
		return;
	}
	snprintf(b, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
}

/*
 * The row as an event object in store_events_list()'s shape (a new
 * reference), or NULL when out of memory.  A summary's "ts" is the stamp
 * of the last event it replaced (its own is the time of the compaction),
 * so it lines up with the engine times like the events it stands for.
 */
static json_t *row_event(const struct row *r)
{
	json_t *d;
	int64_t ts;
	char tsb[96]; /* room for any year: -Wformat-truncation */

	if (r->ev)
		return json_deep_copy(r->ev);
	d = json_loads(r->details ? r->details : "{}", 0, NULL);
	if (!json_is_object(d)) {
		json_decref(d);
		d = json_object();
		if (!d)
			return NULL;
	}
	ts = r->ts_ms;
	if (!strcmp(r->kind, RETENTION_INTERVAL_SUMMARY) ||
	    !strcmp(r->kind, RETENTION_VERDICT_SUMMARY)) {
		int64_t last = jint(json_object_get(d, "replaces"), "last_ts_ms");

		if (last != NO_TIME)
			ts = last;
	}
	iso_time(ts, tsb, sizeof(tsb));
	return json_pack("{s:I, s:s, s:s, s:s, s:s, s:o}", "id", (json_int_t)r->id, "ts", tsb,
	                 "actor", r->actor ? r->actor : "", "kind", r->kind, "subject",
	                 r->subject ? r->subject : "", "details", d);
}

/* An event with its order key. */
struct keyed {
	int64_t seq;
	json_t *ev;
};

struct keyed_list {
	struct keyed *v;
	size_t n, cap;
};

/* Appends (seq, ev), taking a new reference to ev. */
static int keyed_add(struct keyed_list *l, int64_t seq, json_t *ev)
{
	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 64;
		struct keyed *p = realloc(l->v, ncap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		l->v = p;
		l->cap = ncap;
	}
	l->v[l->n].seq = seq;
	l->v[l->n].ev = json_incref(ev);
	l->n++;
	return 0;
}

static void keyed_release(struct keyed_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		json_decref(l->v[i].ev);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

static int keyed_cmp(const void *a, const void *b)
{
	const struct keyed *x = a, *y = b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* A rollback decision whose failing streak stays at full resolution. */
struct rb_window {
	int64_t seq;
	int64_t from_ms, to_ms; /* interval ends inside [from, to]; NO_TIME: unknown */
};

/* Pass 1's result. */
struct plan {
	struct keyed_list audit;
	size_t total, nint, nver, dropped;
	int64_t last_start_seq; /* -1: no start */
	struct rb_window rb[RB_WINDOWS];
	size_t nrb;
};

static int plan_row(void *arg, const struct row *r)
{
	struct plan *p = arg;
	json_t *e;
	int rc;

	p->total++;
	if (is_interval_kind(r->kind)) {
		p->nint++;
		return 0;
	}
	if (is_verdict_kind(r->kind)) {
		p->nver++;
		return 0;
	}
	if (p->audit.n >= AUDIT_MAX) {
		p->dropped++;
		return 0;
	}
	e = row_event(r);
	if (!e)
		return -ENOMEM;
	rc = keyed_add(&p->audit, r->seq, e);
	json_decref(e);
	if (rc)
		return rc;
	if (!strcmp(r->kind, "rollout.started") || !strcmp(r->kind, "rollout.retry"))
		p->last_start_seq = r->seq;
	if (!strcmp(r->kind, "rollout.rollback")) {
		const json_t *d = ev_details(p->audit.v[p->audit.n - 1].ev);
		struct rb_window w = {r->seq, jint(d, "first_failing_interval_start_ms"),
		                      jint(d, "decision_ms")};

		/* the last RB_WINDOWS rollbacks */
		if (p->nrb == RB_WINDOWS) {
			memmove(&p->rb[0], &p->rb[1], (RB_WINDOWS - 1) * sizeof(p->rb[0]));
			p->nrb--;
		}
		p->rb[p->nrb++] = w;
	}
	return 0;
}

/* The latest events of one rollback's streak. */
struct ring {
	struct keyed v[RB_RING];
	size_t n, head;
};

static void ring_push(struct ring *g, int64_t seq, json_t *ev)
{
	struct keyed *slot = &g->v[(g->head + g->n) % RB_RING];

	if (g->n == RB_RING) {
		slot = &g->v[g->head];
		json_decref(slot->ev);
		g->head = (g->head + 1) % RB_RING;
	} else {
		g->n++;
	}
	slot->seq = seq;
	slot->ev = json_incref(ev);
}

/* Candidate slots of one stretch. */
enum { C_FIRST, C_LAST, C_HI, C_LO, C_HI2, C_SLOTS };

/* Pass 2's state for one family (intervals, or verdicts). */
struct pick {
	const struct plan *plan;
	bool verdicts;
	size_t n, i;   /* events of the family, index of the next */
	size_t bucket; /* current stretch */
	struct keyed cand[C_SLOTS];
	double cval[C_SLOTS];
	struct ring rings[RB_WINDOWS];
	size_t next_rb;                 /* first rollback not yet passed */
	struct keyed last[LAST_CHECKS]; /* intervals: [0]; verdicts: one per check */
	size_t nlast;
	struct keyed_list *kept;
	struct tallies *tally;
	int err;
};

static void slot_set(struct keyed *k, int64_t seq, json_t *ev)
{
	json_decref(k->ev);
	k->seq = seq;
	k->ev = json_incref(ev);
}

static void slot_clear(struct keyed *k)
{
	json_decref(k->ev);
	k->ev = NULL;
}

/* Moves the stretch's candidates to the kept list (the merge drops repeats). */
static int pick_flush(struct pick *p)
{
	int rc = 0;

	for (size_t c = 0; c < C_SLOTS; c++) {
		if (p->cand[c].ev && !rc)
			rc = keyed_add(p->kept, p->cand[c].seq, p->cand[c].ev);
		slot_clear(&p->cand[c]);
	}
	return rc;
}

/* The largest and smallest canary value of metric over the targets of interval d. */
static void canary_range(const json_t *d, const char *metric, double *hi, double *lo)
{
	const char *tn;
	json_t *tv;

	*hi = -INFINITY;
	*lo = INFINITY;
	json_object_foreach((json_t *)json_object_get(d, "targets"), tn, tv)
	{
		double v;

		if (jnum(json_object_get(tv, "canary"), metric, &v)) {
			*hi = fmax(*hi, v);
			*lo = fmin(*lo, v);
		}
	}
}

static bool bad_outcome(const char *o)
{
	return o && (!strcmp(o, "fail") || !strcmp(o, "error"));
}

static void tally_add(struct tallies *t, const char *check, const char *outcome, long count)
{
	size_t k;
	int oi = outcome_index(outcome);

	if (!check)
		check = "?";
	for (k = 0; k < t->n && strncmp(t->c[k].name, check, sizeof(t->c[k].name) - 1); k++)
		;
	if (k == t->n) {
		if (t->n == TALLY_CHECKS)
			k = TALLY_CHECKS - 1;
		else
			snprintf(t->c[t->n++].name, sizeof(t->c[0].name), "%s", check);
	}
	t->c[k].n[oi] += count;
	t->other = t->other || oi == 4;
}

/* The latest run's verdict counts, from a verdict or a verdict summary. */
static void tally_event(struct tallies *t, const char *kind, const json_t *d)
{
	const char *name, *outcome;
	json_t *c, *n;

	if (!strcmp(kind, "verdict")) {
		tally_add(t, jstr(d, "check"), jstr(d, "outcome"), 1);
		return;
	}
	json_object_foreach((json_t *)json_object_get(d, "checks"), name, c)
	{
		json_object_foreach(json_object_get(c, "outcomes"), outcome, n)
		{
			if (json_is_integer(n) && json_integer_value(n) > 0)
				tally_add(t, name, outcome, (long)json_integer_value(n));
		}
	}
}

/* Remembers e as the last event (of its check) before the next rollback. */
static void note_last(struct pick *p, int64_t seq, json_t *e)
{
	const char *check = p->verdicts ? jstr(ev_details(e), "check") : NULL;
	size_t k = 0;

	if (p->verdicts) {
		if (!check)
			return;
		for (k = 0; k < p->nlast && strcmp(jstr(ev_details(p->last[k].ev), "check"), check);
		     k++)
			;
		if (k == p->nlast) {
			if (p->nlast == LAST_CHECKS)
				return;
			p->nlast++;
		}
	} else {
		p->nlast = 1;
	}
	slot_set(&p->last[k], seq, e);
}

static int pick_row(void *arg, const struct row *r)
{
	struct pick *p = arg;
	const struct plan *pl = p->plan;
	bool summary = !strcmp(r->kind, RETENTION_INTERVAL_SUMMARY) ||
	               !strcmp(r->kind, RETENTION_VERDICT_SUMMARY);
	json_t *e = row_event(r);
	const json_t *d;
	int64_t seq = r->seq, t;
	size_t b;

	if (!e)
		return p->err = -ENOMEM;
	d = ev_details(e);
	/* in a store, a summary stands where the first event it replaced stood */
	if (summary && !r->ev && jint(json_object_get(d, "replaces"), "first_id") != NO_TIME)
		seq = jint(json_object_get(d, "replaces"), "first_id");
	if (p->verdicts && seq > pl->last_start_seq)
		tally_event(p->tally, r->kind, d);
	if (p->n <= SERIES_MAX) {
		p->err = keyed_add(p->kept, seq, e);
		goto out;
	}
	/* passing a rollback: keep what came last before it */
	while (p->next_rb < pl->nrb && seq > pl->rb[p->next_rb].seq) {
		for (size_t k = 0; k < p->nlast; k++)
			ring_push(&p->rings[p->next_rb], p->last[k].seq, p->last[k].ev);
		p->next_rb++;
	}
	/* inside a rollback's failing streak: full resolution */
	t = jint(d, "interval_end_ms");
	for (size_t k = 0; !summary && t != NO_TIME && k < pl->nrb; k++)
		if (pl->rb[k].from_ms != NO_TIME && pl->rb[k].to_ms != NO_TIME &&
		    t >= pl->rb[k].from_ms && t <= pl->rb[k].to_ms)
			ring_push(&p->rings[k], seq, e);
	b = (size_t)((double)p->i * SERIES_BUCKETS / (double)p->n);
	if (b != p->bucket && (p->err = pick_flush(p)))
		goto out;
	p->bucket = b;
	if (!p->cand[C_FIRST].ev)
		slot_set(&p->cand[C_FIRST], seq, e);
	slot_set(&p->cand[C_LAST], seq, e);
	if (p->verdicts) {
		if (bad_outcome(jstr(d, "outcome"))) {
			if (!p->cand[C_HI].ev)
				slot_set(&p->cand[C_HI], seq, e);
			slot_set(&p->cand[C_LO], seq, e);
		}
	} else {
		double hi, lo, p99, unused;

		canary_range(d, "error_rate", &hi, &lo);
		canary_range(d, "p99_ms", &p99, &unused);
		if (hi > -INFINITY && (!p->cand[C_HI].ev || hi > p->cval[C_HI])) {
			slot_set(&p->cand[C_HI], seq, e);
			p->cval[C_HI] = hi;
		}
		if (lo < INFINITY && (!p->cand[C_LO].ev || lo < p->cval[C_LO])) {
			slot_set(&p->cand[C_LO], seq, e);
			p->cval[C_LO] = lo;
		}
		if (p99 > -INFINITY && (!p->cand[C_HI2].ev || p99 > p->cval[C_HI2])) {
			slot_set(&p->cand[C_HI2], seq, e);
			p->cval[C_HI2] = p99;
		}
	}
	if (!summary)
		note_last(p, seq, e);
out:
	p->i++;
	json_decref(e);
	return p->err;
}

/* Pass 2 for one family: its summaries, then its events at full resolution. */
static int pick_family(const struct source *s, const struct plan *pl, bool verdicts,
                       struct keyed_list *kept, struct tallies *tally)
{
	struct pick p = {.plan = pl,
	                 .verdicts = verdicts,
	                 .n = verdicts ? pl->nver : pl->nint,
	                 .kept = kept,
	                 .tally = tally};
	int rc;

	rc = walk(s, verdicts ? RETENTION_VERDICT_SUMMARY : RETENTION_INTERVAL_SUMMARY, pick_row,
	          &p);
	if (rc == 0)
		rc = walk(s, verdicts ? "verdict" : "rollout.interval", pick_row, &p);
	/* a rollback after the last event: what came last before it */
	while (rc == 0 && p.n > SERIES_MAX && p.next_rb < pl->nrb) {
		for (size_t k = 0; k < p.nlast; k++)
			ring_push(&p.rings[p.next_rb], p.last[k].seq, p.last[k].ev);
		p.next_rb++;
	}
	if (rc == 0)
		rc = pick_flush(&p);
	for (size_t k = 0; k < RB_WINDOWS; k++)
		for (size_t j = 0; j < p.rings[k].n; j++) {
			struct keyed *x = &p.rings[k].v[(p.rings[k].head + j) % RB_RING];

			if (rc == 0)
				rc = keyed_add(kept, x->seq, x->ev);
			json_decref(x->ev);
		}
	for (size_t c = 0; c < C_SLOTS; c++)
		slot_clear(&p.cand[c]);
	for (size_t k = 0; k < p.nlast; k++)
		slot_clear(&p.last[k]);
	if (rc > 0) /* a callback's stop is an error code here */
		rc = p.err ? p.err : -EIO;
	return rc;
}

/* What the passes found: the events for the bundle, in order, and the counts. */
struct reading {
	json_t *events;
	struct tallies tally;
	size_t total, nint, nver, kept_int, kept_ver, dropped;
};

static size_t count_kind(const json_t *events, bool (*is)(const char *))
{
	size_t n = 0, i;
	json_t *e;

	json_array_foreach((json_t *)events, i, e)
	{
		n += is(ev_kind(e));
	}
	return n;
}

/* Both passes over s.  0, or a negative store error / -ENOMEM. */
static int read_events(const struct source *s, struct reading *out)
{
	struct plan pl = {.last_start_seq = -1};
	struct keyed_list kept = {0};
	size_t a = 0, k = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = walk(s, NULL, plan_row, &pl);
	if (rc == 0)
		rc = pick_family(s, &pl, false, &kept, &out->tally);
	if (rc == 0)
		rc = pick_family(s, &pl, true, &kept, &out->tally);
	if (rc)
		goto out;
	rc = -ENOMEM;
	out->events = json_array();
	if (!out->events)
		goto out;
	if (kept.n)
		qsort(kept.v, kept.n, sizeof(kept.v[0]), keyed_cmp);
	/* merge the audit events (in order already) with the selection, dropping repeats */
	while (a < pl.audit.n || k < kept.n) {
		const struct keyed *x;

		if (k < kept.n && k > 0 && kept.v[k].seq == kept.v[k - 1].seq) {
			k++;
			continue;
		}
		if (k == kept.n || (a < pl.audit.n && pl.audit.v[a].seq <= kept.v[k].seq))
			x = &pl.audit.v[a++];
		else
			x = &kept.v[k++];
		if (json_array_append(out->events, x->ev))
			goto out;
	}
	out->total = pl.total;
	out->nint = pl.nint;
	out->nver = pl.nver;
	out->dropped = pl.dropped;
	out->kept_int = count_kind(out->events, is_interval_kind);
	out->kept_ver = count_kind(out->events, is_verdict_kind);
	rc = 0;
out:
	if (rc) {
		json_decref(out->events);
		out->events = NULL;
	}
	keyed_release(&pl.audit);
	keyed_release(&kept);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* The bundle                                                                */

static json_t *pretty(const json_t *v)
{
	char *text = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY);
	json_t *s;
	size_t n;
	char *p;

	if (!text)
		return NULL;
	n = strlen(text);
	p = realloc(text, n + 2);
	if (!p) {
		free(text);
		return NULL;
	}
	p[n] = '\n';
	p[n + 1] = '\0';
	s = json_stringn(p, n + 1);
	free(p);
	return s;
}

/* Where the charts' x axis starts: the run's start, else its first interval. */
static int64_t chart_origin(const struct run *r)
{
	int64_t o = r->start_ms;

	for (size_t i = r->first; i < r->end && o == NO_TIME; i++) {
		const json_t *d = ev_details(json_array_get(r->events, i));
		int64_t end = jint(d, "interval_end_ms"), len = jint(d, "interval_ms");

		if (end != NO_TIME)
			o = len != NO_TIME ? end - len : end;
	}
	return o == NO_TIME ? 0 : o;
}

/* The bundle from what read_events() found; steals rd->events.  NULL when out of memory. */
static json_t *bundle_of(const char *name, struct reading *rd, const json_t *live,
                         const char *config_text, int64_t now_ms)
{
	json_t *b = json_object(), *files = json_object(), *verdicts = json_array();
	json_t *series = json_array(), *all = rd->events, *reports = json_array(), *samples = NULL;
	struct run r;
	bool bad = false;
	int64_t origin;

	rd->events = NULL;
	if (!name)
		name = "";
	if (!b || !files || !verdicts || !series || !all || !reports)
		goto fail;
	run_find(&r, all);
	samples = canary_samples(&r);
	r.tally = &rd->tally;
	r.total = rd->total;
	if (collect(all, r.number, verdicts, series))
		goto fail;
	origin = chart_origin(&r);

	put(files, "summary.md", summary_md(name, &r, live, now_ms), &bad);
	put(files, "config.yaml",
	    json_string(config_text ? config_text : "# config not available\n"), &bad);
	put(files, "events.json", pretty(all), &bad);
	put(files, "verdicts.json", pretty(verdicts), &bad);
	put(files, "series.json", pretty(series), &bad);
	put(files, "error_rate.svg",
	    chart_svg(name, &r, origin, "error rate", "error_rate", 100.0, "error rate (%)"), &bad);
	put(files, "latency_p99.svg",
	    chart_svg(name, &r, origin, "p99 latency", "p99_ms", 1.0, "p99 latency (ms)"), &bad);
	validation_files(name, &r, files, reports, &bad);
	if (samples)
		put(files, "canary-requests.json", pretty(samples), &bad);
	if (bad)
		goto fail;

	put(b, "rollout", json_string(name), &bad);
	put(b, "generated_ms", json_integer((json_int_t)now_ms), &bad);
	put(b, "state",
	    json_string(jstr(live, "state") ? jstr(live, "state") : outcome_state(r.outcome)),
	    &bad);
	put(b, "live", live ? json_deep_copy(live) : json_null(), &bad);
	put(b, "counts",
	    json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "events", (json_int_t)rd->total,
	              "intervals", (json_int_t)rd->nint, "verdicts", (json_int_t)rd->nver,
	              "kept_intervals", (json_int_t)rd->kept_int, "kept_verdicts",
	              (json_int_t)rd->kept_ver, "dropped", (json_int_t)rd->dropped),
	    &bad);
	put(b, "events", all, &bad);
	put(b, "verdicts", verdicts, &bad);
	put(b, "series", series, &bad);
	put(b, "validation", reports, &bad);
	put(b, "canary_requests", samples ? samples : json_array(), &bad);
	put(b, "files", files, &bad);
	if (bad) {
		json_decref(b);
		return NULL;
	}
	return b;
fail:
	json_decref(b);
	json_decref(files);
	json_decref(verdicts);
	json_decref(series);
	json_decref(all);
	json_decref(reports);
	json_decref(samples);
	return NULL;
}

json_t *evidence_build(const char *name, const json_t *events, const json_t *live,
                       const char *config_text, int64_t now_ms)
{
	struct source src = {.events = json_is_array(events) ? events : NULL};
	struct reading *rd = malloc(sizeof(*rd)); /* the tallies are a few KiB */
	json_t *b = NULL;
	int rc = 0;

	if (!rd)
		return NULL;
	memset(rd, 0, sizeof(*rd));
	if (src.events)
		rc = read_events(&src, rd);
	else if (!(rd->events = json_array()))
		rc = -ENOMEM;
	if (rc == 0)
		b = bundle_of(name, rd, live, config_text, now_ms);
	free(rd);
	return b;
}

int evidence_build_store(const char *name, struct store *st, const json_t *live,
                         const char *config_text, int64_t now_ms, json_t **out)
{
	char subject[STORE_NAME_MAX + 1];
	struct source src = {.st = st, .subject = subject};
	struct reading *rd;
	int rc;

	*out = NULL;
	if (!name || !st)
		return -EINVAL;
	if ((size_t)snprintf(subject, sizeof(subject), "rollout/%s", name) >= sizeof(subject))
		return -EINVAL;
	rd = malloc(sizeof(*rd));
	if (!rd)
		return -ENOMEM;
	rc = read_events(&src, rd);
	if (rc == 0) {
		*out = bundle_of(name, rd, live, config_text, now_ms);
		if (!*out)
			rc = -ENOMEM;
	}
	free(rd);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* Writing the directory                                                     */

static void say(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static bool good_name(const char *n)
{
	return n[0] != '\0' && n[0] != '.' && !strchr(n, '/') && strlen(n) <= 200;
}

/* Writes one file through DIR/.NAME.tmp, fsync and rename. */
static int write_one(int dfd, const char *dir, const char *fname, const char *data, size_t len,
                     char *err, size_t errlen)
{
	char tmp[256];
	size_t off = 0;
	int fd;

	snprintf(tmp, sizeof(tmp), ".%s.tmp", fname);
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd == -1) {
		say(err, errlen, "%s/%s: %s", dir, tmp, strerror(errno));
		return -1;
	}
	/* a stale temporary keeps its old mode through O_CREAT: the bundle is private */
	if (fchmod(fd, 0600) == -1) {
		say(err, errlen, "%s/%s: chmod: %s", dir, tmp, strerror(errno));
		goto out_unlink;
	}
	while (off < len) {
		ssize_t w = write(fd, data + off, len - off);

		if (w == -1) {
			if (errno == EINTR)
				continue;
			say(err, errlen, "%s/%s: write: %s", dir, tmp, strerror(errno));
			goto out_unlink;
		}
		off += (size_t)w;
	}
	if (fsync(fd) == -1) {
		say(err, errlen, "%s/%s: fsync: %s", dir, tmp, strerror(errno));
		goto out_unlink;
	}
	if (close(fd) == -1) {
		fd = -1;
		say(err, errlen, "%s/%s: close: %s", dir, tmp, strerror(errno));
		goto out_unlink;
	}
	fd = -1;
	if (renameat(dfd, tmp, dfd, fname) == -1) {
		say(err, errlen, "%s/%s: rename: %s", dir, fname, strerror(errno));
		goto out_unlink;
	}
	return 0;
out_unlink:
	if (fd != -1)
		close(fd);
	unlinkat(dfd, tmp, 0);
	return -1;
}

int evidence_write_dir(const json_t *bundle, const char *dir, char *err, size_t errlen)
{
	const json_t *files = json_object_get(bundle, "files");
	const char *fname;
	json_t *v;
	struct stat st;
	int dfd, rc = -1;

	if (err && errlen)
		err[0] = '\0';
	if (!dir || !dir[0]) {
		say(err, errlen, "no directory given");
		return -1;
	}
	if (!json_is_object(files)) {
		say(err, errlen, "the bundle has no \"files\" object");
		return -1;
	}
	/* check every name before touching the disk */
	json_object_foreach((json_t *)files, fname, v)
	{
		if (!good_name(fname)) {
			say(err, errlen,
			    "refusing file name \"%s\": it must not be empty, start "
			    "with '.' or contain '/'",
			    fname);
			return -1;
		}
		if (!json_is_string(v)) {
			say(err, errlen, "file \"%s\" is not a string", fname);
			return -1;
		}
	}
	if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
		say(err, errlen, "%s: mkdir: %s", dir, strerror(errno));
		return -1;
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (dfd == -1) {
		say(err, errlen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	/* an existing directory loses its group and other bits: only its owner reads a bundle */
	if (fstat(dfd, &st) == -1 || ((st.st_mode & 077) && fchmod(dfd, st.st_mode & 0700) == -1)) {
		say(err, errlen, "%s: chmod: %s", dir, strerror(errno));
		goto out_close;
	}
	json_object_foreach((json_t *)files, fname, v)
	{
		if (write_one(dfd, dir, fname, json_string_value(v), json_string_length(v), err,
		              errlen))
			goto out_close;
	}
	if (fsync(dfd) == -1) {
		say(err, errlen, "%s: fsync: %s", dir, strerror(errno));
		goto out_close;
	}
	rc = 0;
out_close:
	close(dfd);
	return rc;
}
