/*
 * rollout.c - canaryctl's rollout verbs (SPEC 8): rollout list|get|start|
 * promote|pause|resume|abort|retry|approve, rollback --all, watch and
 * evidence.  They only speak the admin API (SPEC 7).  What they print comes
 * from the live view of GET /v1/rollouts/{name} (run_json() in
 * src/rollout/engine.c); every field is read defensively, because the
 * daemon may be older or newer than the CLI (the rollback pipeline's "post"
 * and the "bake" objects are shown generically for that reason).
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "canaryctl/ctl.h"
#include "config/config.h"
#include "core/buf.h"
#include "rollout/evidence.h"

#define VIEW_CAP        (4u << 20) /* bound on one rendered view */
#define PATH_CAP        512
#define BAR_WIDTH       20
#define GONE_MS         10000 /* watch gives up after this long without an answer */
#define POLL_TIMEOUT_MS 3000  /* one watch request */
#define EVIDENCE_MS     120000

/*
 * watch on a terminal without $NO_COLOR sets this: states and verdicts get
 * colours and marks (render_view).  Everything else prints plain text.
 */
static bool styled;

#define SGR_GREEN  "\x1b[32m"
#define SGR_YELLOW "\x1b[33m"
#define SGR_RED    "\x1b[31m"
#define SGR_BOLD   "\x1b[1m"
#define SGR_RESET  "\x1b[0m"

/* The colour and mark of a rollout state or a verdict outcome ("" when plain). */
static const char *style_of(const char *word, const char **mark)
{
	static const struct {
		const char *word, *sgr, *mark;
	} map[] = {
	    {"completed", SGR_GREEN, "\xe2\x9c\x93 "},   {"pass", SGR_GREEN, "\xe2\x9c\x93 "},
	    {"progressing", SGR_GREEN, "\xe2\x96\xb6 "}, {"paused", SGR_YELLOW, "\xe2\x8f\xb8 "},
	    {"inconclusive", SGR_YELLOW, "? "},          {"error", SGR_YELLOW, "! "},
	    {"rolled_back", SGR_RED, "\xe2\x9c\x97 "},   {"failed", SGR_RED, "\xe2\x9c\x97 "},
	    {"fail", SGR_RED, "\xe2\x9c\x97 "},
	};

	*mark = "";
	if (!styled)
		return "";
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strcmp(word, map[i].word) == 0) {
			*mark = map[i].mark;
			return map[i].sgr;
		}
	return "";
}

/* word, coloured and marked when styled, padded to width visible columns. */
static void put_styled(struct buf *b, const char *word, int width)
{
	const char *mark, *sgr = style_of(word, &mark);
	int pad = width - (int)strlen(word) - (*mark ? 2 : 0);

	buf_printf(b, "%s%s%s%s%*s", sgr, mark, word, *sgr ? SGR_RESET : "", pad > 0 ? pad : 0, "");
}

/* "3s", "250ms", "2m30s", "1h5m": a duration in milliseconds for people. */
static void fmt_duration(long long ms, char *out, size_t len)
{
	long long s = ms / 1000;

	if (ms < 0)
		snprintf(out, len, "-");
	else if (ms < 1000)
		snprintf(out, len, "%lldms", ms);
	else if (s < 60)
		snprintf(out, len, ms % 1000 ? "%.1fs" : "%.0fs", (double)ms / 1000.0);
	else if (s < 3600)
		snprintf(out, len, s % 60 ? "%lldm%llds" : "%lldm", s / 60, s % 60);
	else
		snprintf(out, len, (s / 60) % 60 ? "%lldh%lldm" : "%lldh", s / 3600, (s / 60) % 60);
}

/* ------------------------------------------------------------------ */
/* Arguments */

enum { ARGS_HELP = -1 };

struct arg_opt {
	const char *name;   /* long name without "--" */
	const char **value; /* set to the option's argument; NULL for a flag */
	int *flag;          /* set to 1 when a flag is given */
};

struct args {
	struct ctl ctl; /* a copy: "-o json" after the verb changes it */
	const char *pos[4];
	int npos;
};

static const struct arg_opt *find_opt(const struct arg_opt *opts, size_t nopts, const char *name,
                                      size_t len)
{
	for (size_t i = 0; i < nopts; i++)
		if (strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0)
			return &opts[i];
	return NULL;
}

static int set_output(struct ctl *ctl, const char *fmt, const char *usage)
{
	if (ctl_set_output(ctl, fmt) != 0)
		return ctl_usage_error(usage, "-o must be table, json or yaml, not \"%s\"", fmt);
	return CTL_OK;
}

/*
 * Parses argv[1..argc): the options in opts (--name VALUE, --name=VALUE,
 * --flag), -o/--output FORMAT, -h/--help, and at most maxpos positional
 * arguments (options and positionals may mix; "--" ends the options).
 * Returns CTL_OK, ARGS_HELP, or CTL_USAGE after printing why.
 */
static int parse_args(const struct ctl *ctl, int argc, char **argv, const struct arg_opt *opts,
                      size_t nopts, int maxpos, struct args *a, const char *usage)
{
	bool only_pos = false;

	a->ctl = *ctl;
	a->npos = 0;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];

		if (!only_pos && strcmp(arg, "--") == 0) {
			only_pos = true;
		} else if (!only_pos && (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)) {
			return ARGS_HELP;
		} else if (!only_pos && (strcmp(arg, "-o") == 0 || strcmp(arg, "--output") == 0)) {
			if (i + 1 >= argc)
				return ctl_usage_error(usage, "%s needs an argument", arg);
			if (set_output(&a->ctl, argv[++i], usage))
				return CTL_USAGE;
		} else if (!only_pos && strncmp(arg, "-o", 2) == 0 && arg[2]) {
			if (set_output(&a->ctl, arg + 2, usage))
				return CTL_USAGE;
		} else if (!only_pos && strncmp(arg, "--output=", 9) == 0) {
			if (set_output(&a->ctl, arg + 9, usage))
				return CTL_USAGE;
		} else if (!only_pos && arg[0] == '-' && arg[1] == '-') {
			const char *eq = strchr(arg + 2, '=');
			size_t len = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
			const struct arg_opt *o = find_opt(opts, nopts, arg + 2, len);

			if (!o)
				return ctl_usage_error(usage, "unknown option \"%s\"", arg);
			if (!o->value) {
				if (eq)
					return ctl_usage_error(usage, "%s takes no argument", arg);
				*o->flag = 1;
			} else if (eq) {
				*o->value = eq + 1;
			} else if (i + 1 < argc) {
				*o->value = argv[++i];
			} else {
				return ctl_usage_error(usage, "%s needs an argument", arg);
			}
		} else if (!only_pos && arg[0] == '-' && arg[1]) {
			return ctl_usage_error(usage, "unknown option \"%s\"", arg);
		} else if (a->npos < maxpos &&
		           a->npos < (int)(sizeof(a->pos) / sizeof(a->pos[0]))) {
			a->pos[a->npos++] = arg;
		} else {
			return ctl_usage_error(usage, "unexpected argument \"%s\"", arg);
		}
	}
	return CTL_OK;
}

/* The config's name syntax, and not "." or ".." (they would change the URL path). */
static bool valid_name(const char *s)
{
	return config_valid_name(s) && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* Checks the first positional argument is a rollout NAME; CTL_OK or CTL_USAGE. */
static int want_name(const struct args *a, const char *usage)
{
	if (a->npos < 1)
		return ctl_usage_error(usage, "%s", "missing the rollout NAME");
	if (!valid_name(a->pos[0]))
		return ctl_usage_error(usage, "\"%s\" is not a rollout name ([A-Za-z0-9_.-]{1,64})",
		                       a->pos[0]);
	return CTL_OK;
}

/* want_name, and nothing after the NAME. */
static int want_only_name(const struct args *a, const char *usage)
{
	if (want_name(a, usage))
		return CTL_USAGE;
	if (a->npos > 1)
		return ctl_usage_error(usage, "unexpected argument \"%s\"", a->pos[1]);
	return CTL_OK;
}

/*
 * parse_args for a verb of its own (argv[0] is its name), answering -h with
 * usage (and help, may be NULL) and, with name, checking pos[0] is a rollout
 * NAME.  Returns CTL_OK to go on, ARGS_HELP when help was printed, CTL_USAGE.
 */
static int verb_args(const struct ctl *ctl, int argc, char **argv, const struct arg_opt *opts,
                     size_t nopts, int maxpos, bool name, struct args *a, const char *usage,
                     const char *help)
{
	int rc = parse_args(ctl, argc, argv, opts, nopts, maxpos, a, usage);

	if (rc == ARGS_HELP)
		printf("usage: canaryctl %s\n%s", usage, help ? help : "");
	if (rc == CTL_OK && name && want_name(a, usage))
		return CTL_USAGE;
	return rc;
}

/* Prints doc as JSON or YAML (-o json|yaml) or through render; takes doc. */
static int print_doc(const struct args *a, json_t *doc,
                     void (*render)(struct buf *, const json_t *))
{
	struct buf b;

	if (a->ctl.json) {
		ctl_print(&a->ctl, doc);
	} else {
		buf_init(&b, VIEW_CAP);
		render(&b, doc);
		fwrite(buf_head(&b), 1, buf_used(&b), stdout);
		buf_release(&b);
	}
	json_decref(doc);
	return CTL_OK;
}

/* path = "/v1/rollouts/NAME" + suffix; NAME already passed valid_name(). */
static void rollout_path(char *path, size_t len, const char *name, const char *suffix)
{
	snprintf(path, len, "/v1/rollouts/%s%s", name, suffix);
}

/* ------------------------------------------------------------------ */
/* Reading the live view */

static const char *jstr(const json_t *o, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : dflt;
}

static long long jint(const json_t *o, const char *key)
{
	return (long long)json_integer_value(json_object_get(o, key));
}

/* A number as %g, "-" for null or anything else. */
static const char *fmt_num(const json_t *v, char *out, size_t len)
{
	if (json_is_number(v))
		snprintf(out, len, "%.6g", json_number_value(v));
	else
		snprintf(out, len, "-");
	return out;
}

/* Epoch milliseconds as RFC 3339 UTC, "-" for null. */
static const char *fmt_time(const json_t *v, char *out, size_t len)
{
	struct tm tm;
	time_t t;

	if (!json_is_integer(v) || len < 2) {
		snprintf(out, len, "-");
		return out;
	}
	t = (time_t)(json_integer_value(v) / 1000);
	if (!gmtime_r(&t, &tm) || !strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, len, "-");
	return out;
}

static bool state_is(const json_t *ro, const char *state)
{
	return strcmp(jstr(ro, "state", ""), state) == 0;
}

static bool terminal(const json_t *ro)
{
	return state_is(ro, "completed") || state_is(ro, "rolled_back") || state_is(ro, "failed");
}

struct step_pos {
	long long cur;  /* 1-based step shown as "step cur of of" */
	long long of;   /* number of steps */
	long long done; /* steps passed, for the progress bar */
	const char *kind;
	const char *phase;
	const char *name; /* the step's name, or NULL */
};

static void step_pos(const json_t *ro, struct step_pos *p)
{
	const json_t *st = json_object_get(ro, "step");
	long long idx = jint(st, "index");

	p->of = jint(st, "of");
	if (idx < 0)
		idx = 0;
	p->done = state_is(ro, "completed") ? p->of : (idx < p->of ? idx : p->of);
	p->cur = idx + 1 < p->of ? idx + 1 : p->of;
	p->kind = jstr(st, "kind", "-");
	p->phase = jstr(st, "phase", "-");
	p->name = json_string_value(json_object_get(st, "name"));
	if (strcmp(p->kind, "none") == 0) {
		p->kind = "end";
		p->phase = "done";
	}
}

/* "STATE — step i of N (kind, phase)" */
static void put_state_line(struct buf *b, const json_t *ro)
{
	struct step_pos p;

	step_pos(ro, &p);
	if (json_is_number(json_object_get(ro, "rehearsal")))
		buf_printf(b, "REHEARSAL (%gx) ",
		           json_number_value(json_object_get(ro, "rehearsal")));
	put_styled(b, jstr(ro, "state", "?"), 0);
	buf_printf(b, " \xe2\x80\x94 step %lld of %lld (%s%s%s, %s)", p.cur, p.of,
	           p.name ? p.name : "", p.name ? ", " : "", p.kind, p.phase);
}

/* "web=10%, api=0% (rolled back)" */
static void put_targets_short(struct buf *b, const json_t *ro)
{
	const json_t *t;
	size_t i;
	char w[32];

	json_array_foreach(json_object_get(ro, "targets"), i, t)
	{
		buf_printf(b, "%s%s=%s%%%s", i ? ", " : "", jstr(t, "name", "?"),
		           fmt_num(json_object_get(t, "weight"), w, sizeof(w)),
		           json_is_true(json_object_get(t, "rolled_back")) ? " (rolled back)" : "");
	}
	if (!json_array_size(json_object_get(ro, "targets")))
		buf_append_lit(b, "-");
}

/* "errors:pass latency:fail", "-" when no check has a verdict yet */
static void put_verdicts_short(struct buf *b, const json_t *ro)
{
	const json_t *c;
	size_t i;
	bool any = false;

	json_array_foreach(json_object_get(ro, "checks"), i, c)
	{
		const json_t *v = json_object_get(c, "last_verdict");

		if (!json_is_object(v))
			continue;
		buf_printf(b, "%s%s:%s", any ? " " : "", jstr(c, "name", "?"),
		           jstr(v, "outcome", "?"));
		any = true;
	}
	if (!any)
		buf_append_lit(b, "-");
}

/*
 * An object's members as "key value, key value": strings as they are,
 * integers that look like wall-clock milliseconds (years 2001 to 5138) as
 * RFC 3339 times, other numbers as %g, arrays and objects as compact JSON;
 * nulls and the member named skip (may be NULL) are left out.
 */
static void put_object_inline(struct buf *b, const json_t *o, const char *skip)
{
	const char *key;
	json_t *v;
	char tmp[64];
	bool first = true;
	size_t klen;

	json_object_foreach((json_t *)o, key, v)
	{
		if (json_is_null(v) || (skip && strcmp(key, skip) == 0))
			continue;
		klen = strlen(key);
		if (json_is_integer(v) && klen > 3 && strcmp(key + klen - 3, "_ms") == 0 &&
		    json_integer_value(v) < 1000000000000LL) {
			/* "bake 3s", not "bake_ms 3000" */
			fmt_duration((long long)json_integer_value(v), tmp, sizeof(tmp));
			buf_printf(b, "%s%.*s %s", first ? "" : ", ", (int)(klen - 3), key, tmp);
			first = false;
			continue;
		}
		buf_printf(b, "%s%s ", first ? "" : ", ", key);
		first = false;
		if (json_is_string(v)) {
			buf_append_str(b, json_string_value(v));
		} else if (json_is_integer(v) && json_integer_value(v) > 1000000000000LL &&
		           json_integer_value(v) < 100000000000000LL) {
			buf_append_str(b, fmt_time(v, tmp, sizeof(tmp)));
		} else if (json_is_number(v)) {
			buf_append_str(b, fmt_num(v, tmp, sizeof(tmp)));
		} else {
			char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

			if (s) {
				buf_printf(b, "%.200s", s);
				free(s);
			}
		}
	}
}

static void put_bar(struct buf *b, const struct step_pos *p)
{
	long long fill = p->of > 0 ? p->done * BAR_WIDTH / p->of : 0;

	buf_append_lit(b, "[");
	for (long long i = 0; i < BAR_WIDTH; i++)
		buf_append(b, i < fill ? "#" : ".", 1);
	buf_printf(b, "] %lld/%lld steps done", p->done, p->of);
}

static void put_names(struct buf *b, const json_t *arr)
{
	const json_t *v;
	size_t i;

	json_array_foreach(arr, i, v)
	{
		buf_printf(b, "%s%s", i ? ", " : "",
		           json_string_value(v) ? json_string_value(v) : "?");
	}
	if (!json_array_size(arr))
		buf_append_lit(b, "-");
}

static void put_approvals(struct buf *b, const json_t *ap)
{
	const json_t *req = json_object_get(ap, "required"), *got = json_object_get(ap, "approved");
	const json_t *v;
	size_t i;
	bool first = true;

	buf_append_lit(b, "  approvals   required ");
	put_names(b, req);
	buf_append_lit(b, "; approved ");
	put_names(b, got);
	json_array_foreach(req, i, v)
	{
		const json_t *w;
		size_t j;
		bool have = false;

		json_array_foreach(got, j, w)
		{
			have = have || json_equal((json_t *)v, (json_t *)w);
		}
		if (have)
			continue;
		buf_printf(b, "%s%s", first ? "; waiting for " : ", ",
		           json_string_value(v) ? json_string_value(v) : "?");
		first = false;
	}
	buf_append_lit(b, "\n");
}

static void put_check(struct buf *b, const json_t *c)
{
	const json_t *v = json_object_get(c, "last_verdict");
	char cv[32], bv[32];

	buf_printf(b, "    %-16s %-14s on_fail %-8s", jstr(c, "name", "?"), jstr(c, "metric", "?"),
	           jstr(c, "on_fail", "?"));
	if (!json_is_object(v)) {
		buf_append_lit(b, " no verdict yet\n");
		return;
	}
	buf_append_lit(b, " ");
	put_styled(b, jstr(v, "outcome", "?"), 12);
	buf_printf(
	    b, " canary %s vs baseline %s (%lld / %lld requests)",
	    fmt_num(json_object_get(json_object_get(v, "canary"), "value"), cv, sizeof(cv)),
	    fmt_num(json_object_get(json_object_get(v, "baseline"), "value"), bv, sizeof(bv)),
	    jint(json_object_get(v, "canary"), "requests"),
	    jint(json_object_get(v, "baseline"), "requests"));
	if (jint(c, "consecutive_failures"))
		buf_printf(b, ", failing %lld in a row", jint(c, "consecutive_failures"));
	buf_printf(b, "\n      %s\n", jstr(v, "reason", ""));
}

/*
 * The multi-line view of `rollout get` and `watch`.  Only what the live view
 * says goes in (no "now"), so two renderings of the same view are equal and
 * watch can print a block only when something changed.
 */
static void render_view(struct buf *b, const json_t *ro)
{
	const json_t *st = json_object_get(ro, "step"), *t, *c, *x;
	struct step_pos p;
	char t1[40], t2[40], w[32], desc[160];
	size_t i;

	step_pos(ro, &p);
	buf_printf(b, "rollout %s: ", jstr(ro, "name", "?"));
	put_state_line(b, ro);
	buf_append_lit(b, "\n  progress    ");
	put_bar(b, &p);
	buf_printf(b, "\n  generation  %lld, started %s, ended %s\n", jint(ro, "generation"),
	           fmt_time(json_object_get(ro, "started_at"), t1, sizeof(t1)),
	           fmt_time(json_object_get(ro, "ended_at"), t2, sizeof(t2)));
	if (json_is_integer(json_object_get(st, "started_at")))
		buf_printf(b, "  step since  %s\n",
		           fmt_time(json_object_get(st, "started_at"), t1, sizeof(t1)));
	x = json_object_get(st, "gate_at");
	if (json_object_get(st, "gate_at"))
		buf_printf(b, "  gate        %s\n",
		           json_is_null(x) ? "never (no opening in the window)"
		                           : fmt_time(x, t1, sizeof(t1)));
	if (json_is_object(json_object_get(st, "approvals")))
		put_approvals(b, json_object_get(st, "approvals"));
	if (json_is_string(json_object_get(st, "waiting_for"))) /* time and evidence gates */
		buf_printf(b, "  waiting     %s\n", jstr(st, "waiting_for", ""));
	if (json_is_string(json_object_get(ro, "pause_reason")) ||
	    json_is_integer(json_object_get(ro, "review_deadline"))) {
		buf_printf(b, "  paused      %s", jstr(ro, "pause_reason", "-"));
		if (json_is_integer(json_object_get(ro, "review_deadline")))
			buf_printf(
			    b, "; review deadline %s (then rolls back unless resumed or promoted)",
			    fmt_time(json_object_get(ro, "review_deadline"), t1, sizeof(t1)));
		buf_append_lit(b, "\n");
	}
	buf_append_lit(b, "  targets\n");
	json_array_foreach(json_object_get(ro, "targets"), i, t)
	{
		if (strcmp(jstr(t, "kind", ""), "flag") == 0)
			snprintf(desc, sizeof(desc), "flag %s", jstr(t, "flag", "?"));
		else
			snprintf(desc, sizeof(desc), "service %s -> %s", jstr(t, "service", "?"),
			         jstr(t, "canary", "?"));
		buf_printf(b, "    %-16s %-30s %7s%%%s\n", jstr(t, "name", "?"), desc,
		           fmt_num(json_object_get(t, "weight"), w, sizeof(w)),
		           json_is_true(json_object_get(t, "rolled_back")) ? "  rolled back" : "");
	}
	if (json_array_size(json_object_get(ro, "checks"))) {
		buf_append_lit(b, "  checks\n");
		json_array_foreach(json_object_get(ro, "checks"), i, c)
		{
			put_check(b, c);
		}
	} else {
		buf_append_lit(b, "  checks      none\n");
	}
	if (json_is_object(json_object_get(ro, "bake"))) {
		buf_append_lit(b, "  bake        ");
		put_object_inline(b, json_object_get(ro, "bake"), NULL);
		buf_append_lit(b, "\n");
	}
	if (json_array_size(json_object_get(ro, "validation"))) {
		/* validate: post-rollout windows (details: GET .../validation) */
		buf_append_lit(b, "  validation\n");
		json_array_foreach(json_object_get(ro, "validation"), i, c)
		{
			buf_printf(b, "    %-16s %-13s on_fail %s\n", jstr(c, "name", "?"),
			           jstr(c, "state", "?"), jstr(c, "on_fail", "?"));
		}
	}
	x = json_object_get(ro, "post");
	if (json_is_object(x)) {
		/* the rollback pipeline: drain, hooks, verify, evidence, done */
		buf_append_lit(b, "  rollback    ");
		put_object_inline(b, x, "reason");
		if (json_is_string(json_object_get(x, "reason")))
			buf_printf(b, "\n              reason: %s", jstr(x, "reason", ""));
		buf_append_lit(b, "\n");
	}
	if (json_is_integer(json_object_get(ro, "time_to_detect_ms"))) {
		fmt_duration(jint(ro, "time_to_detect_ms"), t1, sizeof(t1));
		buf_printf(b, "  detected    %s after the first failing interval began\n", t1);
	}
	if (json_is_integer(json_object_get(ro, "time_to_mitigate_us")))
		buf_printf(b, "  mitigated   %.3f ms after the decision\n",
		           (double)jint(ro, "time_to_mitigate_us") / 1000.0);
}

/* ------------------------------------------------------------------ */
/* Tables */

/* Prints rows (arrays of strings) as columns two spaces apart. */
static void print_table(const json_t *rows)
{
	size_t width[16] = {0}, i, j, ncol = 0;
	const json_t *row, *cell;

	json_array_foreach(rows, i, row)
	{
		json_array_foreach(row, j, cell)
		{
			size_t n = strlen(json_string_value(cell));

			if (j >= sizeof(width) / sizeof(width[0]))
				break;
			if (n > width[j])
				width[j] = n;
			if (j + 1 > ncol)
				ncol = j + 1;
		}
	}
	json_array_foreach(rows, i, row)
	{
		json_array_foreach(row, j, cell)
		{
			if (j >= ncol)
				break;
			if (j + 1 == json_array_size(row) || j + 1 == ncol)
				printf("%s\n", json_string_value(cell));
			else
				printf("%-*s  ", (int)width[j], json_string_value(cell));
		}
	}
}

static json_t *cell(struct buf *b)
{
	json_t *s = json_stringn(buf_head(b), buf_used(b));

	buf_reset(b);
	return s ? s : json_string("?");
}

static void print_rollout_table(const json_t *list)
{
	json_t *rows = json_array();
	const json_t *ro;
	struct buf b;
	size_t i;

	buf_init(&b, VIEW_CAP);
	json_array_append_new(
	    rows, json_pack("[s,s,s,s,s]", "NAME", "STATE", "STEP", "TARGETS", "LAST-VERDICT"));
	json_array_foreach(list, i, ro)
	{
		json_t *row = json_array();
		struct step_pos p;

		step_pos(ro, &p);
		json_array_append_new(row, json_string(jstr(ro, "name", "?")));
		json_array_append_new(row, json_string(jstr(ro, "state", "?")));
		buf_printf(&b, "%lld/%lld %s", p.cur, p.of, p.kind);
		json_array_append_new(row, cell(&b));
		put_targets_short(&b, ro);
		json_array_append_new(row, cell(&b));
		put_verdicts_short(&b, ro);
		json_array_append_new(row, cell(&b));
		json_array_append_new(rows, row);
	}
	print_table(rows);
	json_decref(rows);
	buf_release(&b);
}

/* ------------------------------------------------------------------ */
/* rollout ... */

#define ROLLOUT_USAGE                                                \
	"rollout list | get NAME | start NAME [--rehearse SPEED] | " \
	"pause|resume|abort|retry|approve NAME | promote NAME [--full]"

static int rollout_list(const struct args *a)
{
	json_t *doc;
	int rc;

	if (a->npos > 0)
		return ctl_usage_error("rollout list", "unexpected argument \"%s\"", a->pos[0]);
	rc = ctl_call(&a->ctl, "GET", "/v1/rollouts", NULL, &doc);
	if (rc != CTL_OK)
		return rc;
	if (a->ctl.json)
		ctl_print(&a->ctl, doc);
	else
		print_rollout_table(json_object_get(doc, "rollouts"));
	json_decref(doc);
	return CTL_OK;
}

static int rollout_get(const struct args *a)
{
	char path[PATH_CAP];
	json_t *doc;
	int rc;

	if (want_only_name(a, "rollout get NAME"))
		return CTL_USAGE;
	rollout_path(path, sizeof(path), a->pos[0], "");
	rc = ctl_call(&a->ctl, "GET", path, NULL, &doc);
	return rc == CTL_OK ? print_doc(a, doc, render_view) : rc;
}

/* "MESSAGE\nrollout NAME: STATE — step ..." after a control. */
static void render_control(struct buf *b, const json_t *doc)
{
	const json_t *ro = json_object_get(doc, "rollout");

	buf_printf(b, "%s\nrollout %s: ", jstr(doc, "message", "ok"), jstr(ro, "name", "?"));
	put_state_line(b, ro);
	buf_append_lit(b, "\n");
}

/* --rehearse SPEED: a positive number (every duration of the plan divided by it). */
static bool parse_speed(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v > 0) || v > 100000.0)
		return false;
	*out = v;
	return true;
}

static int rollout_control(const struct args *a, const char *verb, bool full, const char *rehearse)
{
	char path[PATH_CAP], usage[64], suffix[32];
	json_t *doc, *body = NULL;
	double speed = 0;
	int rc;

	snprintf(usage, sizeof(usage), "rollout %s NAME%s", verb,
	         strcmp(verb, "promote") == 0 ? " [--full]"
	         : strcmp(verb, "start") == 0 ? " [--rehearse SPEED]"
	                                      : "");
	if (want_only_name(a, usage))
		return CTL_USAGE;
	if (rehearse && !parse_speed(rehearse, &speed))
		return ctl_usage_error(usage,
		                       "--rehearse must be a positive number up to 100000 (the "
		                       "speed: every duration is divided by it), not \"%s\"",
		                       rehearse);
	snprintf(suffix, sizeof(suffix), "/%s", verb);
	rollout_path(path, sizeof(path), a->pos[0], suffix);
	if (full)
		body = json_pack("{s:b}", "full", 1);
	if (rehearse)
		body = json_pack("{s:f}", "rehearse", speed);
	rc = ctl_call(&a->ctl, "POST", path, body, &doc);
	json_decref(body);
	return rc == CTL_OK ? print_doc(a, doc, render_control) : rc;
}

int ctl_rollout(const struct ctl *ctl, int argc, char **argv)
{
	static const char *const controls[] = {"start", "promote", "pause",  "resume",
	                                       "abort", "retry",   "approve"};
	int full = 0, rc;
	const char *rehearse = NULL;
	const struct arg_opt opts[] = {{"full", NULL, &full}};
	const struct arg_opt start_opts[] = {{"rehearse", &rehearse, NULL}};
	struct args a;
	const char *sub;
	size_t i = 0;

	if (argc < 2)
		return ctl_usage_error(ROLLOUT_USAGE, "%s", "rollout needs a subcommand");
	sub = argv[1];
	if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0) {
		printf("usage: canaryctl %s\n", ROLLOUT_USAGE);
		return CTL_OK;
	}
	if (strcmp(sub, "list") != 0 && strcmp(sub, "get") != 0) {
		for (i = 0; i < sizeof(controls) / sizeof(controls[0]); i++)
			if (strcmp(sub, controls[i]) == 0)
				break;
		if (i == sizeof(controls) / sizeof(controls[0]))
			return ctl_usage_error(ROLLOUT_USAGE, "unknown rollout subcommand \"%s\"",
			                       sub);
	}
	/* --full exists for promote only, --rehearse for start; argv[0] is the verb */
	if (strcmp(sub, "start") == 0)
		rc = verb_args(ctl, argc - 1, argv + 1, start_opts, 1, 2, false, &a, ROLLOUT_USAGE,
		               NULL);
	else
		rc = verb_args(ctl, argc - 1, argv + 1, opts, strcmp(sub, "promote") == 0 ? 1 : 0,
		               2, false, &a, ROLLOUT_USAGE, NULL);
	if (rc != CTL_OK)
		return rc == ARGS_HELP ? CTL_OK : rc;
	if (strcmp(sub, "list") == 0)
		return rollout_list(&a);
	if (strcmp(sub, "get") == 0)
		return rollout_get(&a);
	return rollout_control(&a, controls[i], full, rehearse);
}

/* ------------------------------------------------------------------ */
/* rollback --all */

int ctl_rollback(const struct ctl *ctl, int argc, char **argv)
{
	static const char usage[] = "rollback --all";
	int all = 0, rc;
	const struct arg_opt opts[] = {{"all", NULL, &all}};
	struct args a;
	json_t *doc;

	rc = verb_args(ctl, argc, argv, opts, 1, 0, false, &a, usage,
	               "  rolls back every active rollout at once\n");
	if (rc != CTL_OK)
		return rc == ARGS_HELP ? CTL_OK : rc;
	if (!all)
		return ctl_usage_error(
		    usage, "%s", "rollback rolls back every active rollout; say so with --all");
	rc = ctl_call(&a.ctl, "POST", "/v1/rollback", NULL, &doc);
	if (rc != CTL_OK)
		return rc;
	if (a.ctl.json) {
		ctl_print(&a.ctl, doc);
	} else {
		long long n = jint(doc, "rolled_back");

		if (n)
			printf("rolled back %lld rollout%s\n", n, n == 1 ? "" : "s");
		else
			printf("no rollout was active; nothing to roll back\n");
		print_rollout_table(json_object_get(doc, "rollouts"));
	}
	json_decref(doc);
	return CTL_OK;
}

/* ------------------------------------------------------------------ */
/* watch NAME */

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static volatile sig_atomic_t resized; /* SIGWINCH: redraw at the new width now */

static void on_winch(int sig)
{
	(void)sig;
	resized = 1;
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

	while (ms > 0 && nanosleep(&ts, &ts) == -1 && errno == EINTR && !resized)
		;
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The terminal's columns (TIOCGWINSZ on stdout), 80 when it will not say. */
static int term_width(void)
{
	struct winsize ws;

	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		return ws.ws_col;
	return 80;
}

/*
 * Appends text to out with every line cut to fit width columns, so the
 * terminal never wraps one: a long line ends at its last space that fits
 * (a word is not split unless it alone is wider) followed by an ellipsis.
 * Colour escapes take no column; a UTF-8 character takes one.
 */
static void fit_lines(struct buf *out, const char *text, int width)
{
	const char *line = text;
	int max = width > 2 ? width - 1 : 1; /* the last column: some terminals wrap there */

	while (*line) {
		const char *end = strchr(line, '\n'), *p, *cut = NULL, *space = NULL;
		int cols = 0;

		if (!end)
			end = line + strlen(line);
		for (p = line; p < end; p++) {
			if (*p == '\x1b') { /* CSI ... final byte */
				while (p + 1 < end &&
				       !((p[1] >= '@' && p[1] <= '~') && p[1] != '['))
					p++;
				p++;
				continue;
			}
			if (((unsigned char)*p & 0xC0) == 0x80)
				continue;
			if (cols == max - 1 && !cut)
				cut = p; /* room left for the ellipsis */
			if (*p == ' ' && cols < max - 1)
				space = p;
			cols++;
		}
		if (cols <= max) {
			buf_append(out, line, (size_t)(end - line));
		} else {
			if (space && space > line && (space - line) > max / 3)
				cut = space;
			buf_append(out, line, (size_t)(cut - line));
			if (styled)
				buf_append_lit(out, SGR_RESET);
			buf_append_lit(out, "\xe2\x80\xa6");
		}
		buf_append_lit(out, "\n");
		line = *end ? end + 1 : end;
	}
}

/* Countdowns a person at the terminal waits on: the next gate, the bake, a review. */
static void put_countdowns(struct buf *b, const json_t *ro)
{
	const json_t *st = json_object_get(ro, "step"), *bake = json_object_get(ro, "bake");
	int64_t now = wall_ms();
	char d[40];

	if (json_is_integer(json_object_get(st, "gate_at"))) {
		fmt_duration(jint(st, "gate_at") - now > 0 ? jint(st, "gate_at") - now : 0, d,
		             sizeof(d));
		buf_printf(b, "  next gate   in %s\n", d);
	}
	if (json_is_integer(json_object_get(bake, "until"))) {
		fmt_duration(jint(bake, "until") - now > 0 ? jint(bake, "until") - now : 0, d,
		             sizeof(d));
		buf_printf(b, "  bake ends   in %s\n", d);
	}
	if (json_is_integer(json_object_get(ro, "review_deadline"))) {
		int64_t left = jint(ro, "review_deadline") - now;

		fmt_duration(left > 0 ? left : 0, d, sizeof(d));
		buf_printf(b, "  review ends in %s\n", d);
	}
}

/* The rollback pipeline ("post") is over: missing, no stage, or stage done. */
static bool post_done(const json_t *ro)
{
	const json_t *post = json_object_get(ro, "post");
	const char *stage;

	if (!json_is_object(post))
		return true;
	stage = json_string_value(json_object_get(post, "stage"));
	return !stage || strcmp(stage, "done") == 0;
}

/*
 * Baking is over: no "bake" object, or one that says it ended (stage
 * "done", done: true, active: false or an ended_at time).
 */
static bool bake_done(const json_t *ro)
{
	const json_t *bake = json_object_get(ro, "bake");
	const char *stage;

	if (!json_is_object(bake))
		return true;
	stage = json_string_value(json_object_get(bake, "stage"));
	return (stage && strcmp(stage, "done") == 0) ||
	       json_is_true(json_object_get(bake, "done")) ||
	       json_is_false(json_object_get(bake, "active")) ||
	       json_is_integer(json_object_get(bake, "ended_at"));
}

static bool watch_over(const json_t *ro)
{
	return terminal(ro) && post_done(ro) && bake_done(ro);
}

static bool parse_interval(const char *s, long long *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < 50 || v > 3600000)
		return false;
	*out = v;
	return true;
}

int ctl_watch(const struct ctl *ctl, int argc, char **argv)
{
	static const char usage[] = "watch NAME [--interval-ms 500]";
	const char *interval_s = NULL;
	const struct arg_opt opts[] = {{"interval-ms", &interval_s, NULL}};
	long long interval = 500;
	int64_t last_ok, gone_since = 0;
	char path[PATH_CAP];
	char *prev = NULL;
	struct args a;
	struct buf b;
	bool tty = isatty(STDOUT_FILENO) == 1;
	int rc;

	rc = verb_args(ctl, argc, argv, opts, 1, 1, true, &a, usage, NULL);
	if (rc != CTL_OK)
		return rc == ARGS_HELP ? CTL_OK : rc;
	if (interval_s && !parse_interval(interval_s, &interval))
		return ctl_usage_error(
		    usage, "--interval-ms must be an integer from 50 to 3600000, not \"%s\"",
		    interval_s);
	rollout_path(path, sizeof(path), a.pos[0], "");
	buf_init(&b, VIEW_CAP);
	if (tty && !a.ctl.json) {
		const char *nc = getenv("NO_COLOR"); /* no-color.org: set and not empty */
		struct sigaction sa;

		styled = !(nc && *nc);
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_winch; /* no SA_RESTART: the wait ends, the view is redrawn */
		sigemptyset(&sa.sa_mask);
		sigaction(SIGWINCH, &sa, NULL);
	}
	last_ok = mono_ms();
	for (;;) {
		int64_t t0 = mono_ms();
		long status = 0;
		json_t *ro = NULL;
		char *now_s = NULL;

		rc = ctl_call_ex(&a.ctl, "GET", path, NULL, POLL_TIMEOUT_MS, CTL_QUIET_TRANSIENT,
		                 &status, &ro);
		if (rc != CTL_OK && status != 0 && status / 100 != 5)
			break; /* the server said no (404, 401, ...): it said why */
		if (rc != CTL_OK) {
			int64_t now = mono_ms();

			if (now - last_ok > GONE_MS) {
				fprintf(
				    stderr,
				    "canaryctl: watch %s: no answer from %s for more than %d s; "
				    "giving up\n",
				    a.pos[0], a.ctl.server, GONE_MS / 1000);
				rc = CTL_FAILED;
				break;
			}
			if (!gone_since) {
				gone_since = now;
				fprintf(stderr,
				        "canaryctl: watch %s: no answer from %s (%s); retrying\n",
				        a.pos[0], a.ctl.server,
				        status ? "server error" : "unreachable");
			}
		} else {
			last_ok = mono_ms();
			if (gone_since)
				fprintf(stderr, "canaryctl: watch %s: the server answers again\n",
				        a.pos[0]);
			gone_since = 0;
			buf_reset(&b);
			if (a.ctl.yaml) {
				/* one YAML document per change, like one JSON line */
				buf_append_lit(&b, "---\n");
				ctl_yaml_append(&b, ro);
			} else if (a.ctl.json) {
				char *s = json_dumps(ro, JSON_COMPACT);

				if (s)
					buf_append_str(&b, s);
				free(s);
				buf_append_lit(&b, "\n");
			} else {
				render_view(&b, ro);
			}
			now_s = strndup(buf_head(&b), buf_used(&b));
			if (tty && !a.ctl.json) {
				struct buf screen;

				/* redraw in place: home, clear screen, the view, a footer */
				if (!watch_over(ro))
					put_countdowns(&b, ro);
				buf_printf(&b, "\n(every %lld ms; Ctrl-C to stop)\n", interval);
				buf_init(&screen, VIEW_CAP);
				buf_append_lit(&screen, "\x1b[H\x1b[2J");
				resized = 0;
				fit_lines(&screen, buf_cstr(&b), term_width());
				fwrite(buf_head(&screen), 1, buf_used(&screen), stdout);
				buf_release(&screen);
			} else if (!prev || !now_s || strcmp(prev, now_s) != 0) {
				if (prev && !a.ctl.json)
					fputs("\n", stdout);
				fwrite(buf_head(&b), 1, buf_used(&b), stdout);
			}
			fflush(stdout);
			free(prev);
			prev = now_s;
			if (watch_over(ro)) {
				rc = state_is(ro, "completed") ? CTL_OK : CTL_FAILED;
				json_decref(ro);
				break;
			}
			json_decref(ro);
		}
		sleep_ms(t0 + interval - mono_ms());
	}
	free(prev);
	buf_release(&b);
	return rc;
}

/* ------------------------------------------------------------------ */
/* evidence NAME --out DIR */

int ctl_evidence(const struct ctl *ctl, int argc, char **argv)
{
	static const char usage[] = "evidence NAME --out DIR";
	const char *out = NULL;
	const struct arg_opt opts[] = {{"out", &out, NULL}};
	char path[PATH_CAP], err[512];
	const json_t *files, *v;
	const char *file;
	json_t *doc;
	struct args a;
	int rc;

	rc = verb_args(ctl, argc, argv, opts, 1, 1, true, &a, usage, NULL);
	if (rc != CTL_OK)
		return rc == ARGS_HELP ? CTL_OK : rc;
	if (!out || !*out)
		return ctl_usage_error(usage, "%s", "--out DIR is required");
	rollout_path(path, sizeof(path), a.pos[0], "/evidence");
	rc = ctl_call_ex(&a.ctl, "GET", path, NULL, EVIDENCE_MS, 0, NULL, &doc);
	if (rc != CTL_OK)
		return rc;
	files = json_object_get(doc, "files");
	if (!json_is_object(files)) {
		fprintf(stderr, "canaryctl: evidence %s: the server's bundle has no \"files\"\n",
		        a.pos[0]);
		json_decref(doc);
		return CTL_FAILED;
	}
	if (evidence_write_dir(doc, out, err, sizeof(err)) != 0) {
		fprintf(stderr, "canaryctl: evidence %s: %s\n", a.pos[0], err);
		json_decref(doc);
		return CTL_FAILED;
	}
	if (a.ctl.json) {
		json_t *list = json_array(), *o;

		json_object_foreach((json_t *)files, file, v)
		{
			json_array_append_new(list, json_pack("{s:s, s:I}", "name", file, "bytes",
			                                      (json_int_t)json_string_length(v)));
		}
		o = json_pack("{s:s, s:s, s:o}", "rollout", a.pos[0], "dir", out, "files", list);
		ctl_print(&a.ctl, o);
		json_decref(o);
	} else {
		printf("evidence of %s written to %s\n", a.pos[0], out);
		json_object_foreach((json_t *)files, file, v)
		{
			printf("  %-24s %10zu bytes\n", file, json_string_length(v));
		}
	}
	json_decref(doc);
	return CTL_OK;
}
