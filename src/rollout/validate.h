/*
 * validate.h - post-rollout validation windows (SPEC 6, issue 16;
 * docs/rollout.md "Post-rollout validation"): the model of a rollout's
 * `validate:` windows after its completion, their persisted form inside the
 * rollout document, the per-window report (JSON and Markdown) and the
 * schedule.  The engine drives it (rollout/validate_engine.c): it records
 * the pre-rollout baseline at completion, judges the new stable every
 * analysis interval of a running window and ends each window with a report
 * event; this file holds no engine state and calls nothing of the engine.
 *
 *   pending -> running -> passed | failed | inconclusive   (skipped: never ran)
 *
 * Windows run one after another: window i runs from completion + after_i
 * to completion + after_i + for_i (through rollout_dur(): a rehearsal
 * divides them), ends early at its first failure, and with on_fail:
 * rollback reverts the rollout to the old stable.
 *
 * Threading: control thread only.  Memory: every array is sized by the
 * config at validate_init() and bounded (VALIDATE_POINTS per check).
 */
#ifndef ROLLOUT_VALIDATE_H
#define ROLLOUT_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "analysis/check.h"
#include "config/config.h"
#include "metrics/stats.h"

enum validate_state {
	VALIDATE_PENDING,
	VALIDATE_RUNNING,
	VALIDATE_PASSED,
	VALIDATE_FAILED,
	VALIDATE_INCONCLUSIVE,
	VALIDATE_SKIPPED, /* the rollout was rolled back before the window ran */
};

/* Points of a check's trend per window; past it, neighbours are merged in pairs. */
#define VALIDATE_POINTS 60

/* One point of a check's trend: the new stable's value over one or more intervals. */
struct validate_point {
	int64_t end_ms;    /* end of the last interval merged in */
	double value;      /* NAN: no requests */
	uint64_t requests; /* of the new stable, summed */
	uint32_t intervals;
};

/* One check of one window. */
struct validate_check {
	size_t check;   /* index into the rollout's analysis.checks */
	uint32_t iv[4]; /* this window's interval verdicts by enum check_outcome */
	uint32_t fails; /* consecutive failing intervals */
	int64_t first_fail_ms;
	bool failed;     /* a streak reached the check's `for`: the window failed */
	bool have_final; /* final: the verdict on the window's data (at its end) */
	struct check_verdict final;
	bool have_last; /* last: the last interval's verdict */
	struct check_verdict last;
	struct validate_point pts[VALIDATE_POINTS];
	size_t npts;
	uint32_t stride; /* intervals per point now (1, 2, 4, ...) */
};

struct validate_window {
	enum validate_state state;
	int64_t started_ms, ended_ms;
	int64_t next_ms; /* the next interval's end (not persisted: re-primed) */
	uint32_t looks;  /* intervals judged */
	char reason[CHECK_REASON_MAX + 64];
	struct validate_check *checks; /* cfg->validate[i].nchecks */
	/* the new stable's traffic over the window, per target */
	struct metrics_cohort_snapshot *cum;
};

struct validate_run {
	const struct config_rollout *cfg;
	bool begun;           /* the rollout completed: the baseline is recorded */
	int64_t completed_ms; /* the windows' `after` counts from here */
	size_t ntargets;
	/* per target, recorded at completion (persisted): */
	char **old_stable; /* the stable before the rollout: what a revert goes back to */
	char **new_stable; /* the version the rollout made stable (NULL: not a service at 100%) */
	bool *have_baseline;
	struct metrics_cohort_snapshot *baseline; /* the old stable's traffic during the run */
	struct validate_window *w;                /* cfg->nvalidate */
	/* the window whose failure reverted the rollout (-1: none); persisted */
	int reverted_by;
	/* not persisted: the last cumulative reading of each new stable */
	bool *have_prev;
	struct metrics_cohort_snapshot *prev;
};

/* Sizes v for rollout cfg (borrowed, must outlive v) and resets it.  0 or -ENOMEM. */
int validate_init(struct validate_run *v, const struct config_rollout *cfg);

/* Frees what validate_init() allocated.  A zeroed v is a no-op. */
void validate_release(struct validate_run *v);

/* Back to "not begun" (a new run, or a document without validation). */
void validate_reset(struct validate_run *v);

/* "pending", "running", "passed", "failed", "inconclusive", "skipped". */
const char *validate_state_name(enum validate_state s);

/* The window a tick works on: the first one not finished, or cfg->nvalidate. */
size_t validate_current(const struct validate_run *v);

/*
 * Window i's scheduled start and end in wall ms, dur() being the run's
 * duration function (rollout_dur(); NULL: real time) applied to `after`
 * and `for`.  Valid once begun.
 */
typedef uint64_t (*validate_dur_fn)(const void *arg, uint64_t ms);
void validate_span(const struct validate_run *v, size_t i, validate_dur_fn dur, const void *arg,
                   int64_t *start_ms, int64_t *end_ms);

/*
 * A window with on_fail: rollback is pending or running: the rollout keeps
 * its services (and their old stable warm) until the last such window ends.
 */
bool validate_holds(const struct validate_run *v);

/* Adds one interval's value of check c of window w to its trend (merging when full). */
void validate_point_add(struct validate_check *c, int64_t end_ms, double value, uint64_t requests);

/*
 * The persisted form (a member of the rollout document): NULL when not
 * begun.  validate_parse() fills v from it (NULL or malformed parts: not
 * begun / left pending); the check names are matched against the config.
 */
json_t *validate_doc(const struct validate_run *v);
void validate_parse(struct validate_run *v, const json_t *doc);

/* A cumulative snapshot as JSON (sparse histogram) and back; parse: 0 or -EINVAL. */
json_t *validate_snapshot_json(const struct metrics_cohort_snapshot *s);
int validate_snapshot_parse(const json_t *o, struct metrics_cohort_snapshot *out);

/*
 * Window i's report as JSON (new object): window, index, state, on_fail,
 * times, reason, per target the versions and both cohorts' numbers, per
 * check the final (or so far) verdict, interval counts and the trend
 * points with the baseline's value.  The same object the window's end
 * event carries, from which evidence.c draws the charts.
 */
json_t *validate_report_json(const struct validate_run *v, size_t i, int64_t interval_ms);

/*
 * The report as Markdown (malloc'ed, NUL-terminated; NULL when out of
 * memory): rollout, window, result, a table per check (pass/fail with the
 * numbers: new stable vs pre-rollout baseline, requests, interval counts),
 * a per-interval table of the trend, links to the charts
 * (validation-WINDOW-CHECK.svg).  Pure function of the report JSON; text
 * from it is escaped for Markdown tables.
 */
char *validate_report_md(const char *rollout, const json_t *report);

/* The SVG chart file name of a window's check ("validation-day-1-errors.svg"). */
void validate_chart_name(const char *window, const char *check, char *out, size_t len);

#endif
