/*
 * ctl.h - shared plumbing of canaryctl's verbs: options, the HTTP call,
 * output in table, JSON or YAML form.  Exit codes: 0 ok, 1 failed, 2 usage.
 */
#ifndef CANARYCTL_CTL_H
#define CANARYCTL_CTL_H

#include <jansson.h>

struct buf;

enum { CTL_OK = 0, CTL_FAILED = 1, CTL_USAGE = 2 };

struct ctl {
	const char *server; /* base URL, default http://127.0.0.1:9901 */
	const char *token;  /* --token or $CANARYD_TOKEN; may be NULL */
	int json;           /* -o json or -o yaml: the server's document, not a table */
	int yaml;           /* -o yaml: that document as YAML (ctl_print) */
	const char *cacert; /* --cacert or $CANARYD_CACERT: CA file for an https:// server */
};

/* Output cap of one YAML document, like the cap on an answer's body. */
#define CTL_YAML_CAP (64u << 20)

/*
 * Performs METHOD server+path with an optional JSON body (borrowed).  On a
 * 2xx answer stores the parsed JSON (or NULL for an empty body) in *out
 * (caller owns) and returns CTL_OK; otherwise prints the server's error
 * message to stderr and returns CTL_FAILED.
 */
int ctl_call(const struct ctl *ctl, const char *method, const char *path, json_t *body,
             json_t **out);

/* ctl_call_ex flags: print nothing when no answer came or the answer was a 5xx. */
#define CTL_QUIET_TRANSIENT 1u
/* ctl_call_ex flags: print nothing on a 404 (the caller explains it). */
#define CTL_QUIET_NOTFOUND 2u

/*
 * ctl_call with a timeout for the whole exchange (timeout_ms <= 0: 30 s),
 * CTL_QUIET_* flags, and the HTTP status stored in *status when status is
 * not NULL: 0 when no answer came (connection refused, timeout), which is
 * how `watch` tells a server that went away from one that said no.
 */
int ctl_call_ex(const struct ctl *ctl, const char *method, const char *path, json_t *body,
                long timeout_ms, unsigned flags, long *status, json_t **out);

/* Prints doc as indented JSON on stdout. */
void ctl_print_json(json_t *doc);

/*
 * Sets ctl->json and ctl->yaml from an -o FORMAT (table, json or yaml);
 * returns 0, or -1 when FORMAT is none of them (ctl unchanged).
 */
int ctl_set_output(struct ctl *ctl, const char *fmt);

/* Prints doc (borrowed) on stdout: as YAML with -o yaml, else as indented JSON. */
void ctl_print(const struct ctl *ctl, json_t *doc);

/*
 * yaml.c: appends doc (borrowed; NULL prints null) to b as one block-style
 * YAML document that parses back to a value equal to doc: keys in doc's
 * order, strings double-quoted unless plainly strings, reals with a '.'.
 * Returns 0, or -1 when b's cap is reached or doc nests deeper than 128.
 */
int ctl_yaml_append(struct buf *b, const json_t *doc);

/*
 * Prints "canaryctl: WHY" (printf-formatted) and "usage: canaryctl USAGE" on
 * stderr; returns CTL_USAGE.
 */
int ctl_usage_error(const char *usage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ctl_usage_error() with WHY = why, followed by arg in quotes when not NULL. */
int ctl_usage_arg(const char *usage, const char *why, const char *arg);

struct ctl_verb {
	const char *name;
	const char *usage;
	int (*run)(const struct ctl *ctl, int argc, char **argv);
	int own_help; /* 1: the verb prints its own --help; else main.c prints usage */
};

int ctl_status(const struct ctl *ctl, int argc, char **argv);
int ctl_check_config(const struct ctl *ctl, int argc, char **argv);

/*
 * Rollout verbs (rollout.c).  Each takes argv[0] = its own name and parses
 * the rest: NAMEs are checked against the config's name syntax
 * ([A-Za-z0-9_.-]{1,64}) before any request, so a bad one is a usage error;
 * "-o json" is also accepted after the verb.
 *
 * ctl_rollout: list | get NAME | start|promote [--full]|pause|resume|abort|
 *              retry|approve NAME.
 * ctl_rollback: --all (required) - POST /v1/rollback.
 * ctl_watch: NAME [--interval-ms N] - polls the live view until the rollout,
 *            its bake and its rollback pipeline ("post") are over; 0 when it
 *            completed, 1 when it rolled back or failed or the server was gone
 *            for more than 10 s.
 * ctl_evidence: NAME --out DIR - fetches the bundle and writes it with
 *               evidence_write_dir().
 */
int ctl_rollout(const struct ctl *ctl, int argc, char **argv);
int ctl_rollback(const struct ctl *ctl, int argc, char **argv);
int ctl_watch(const struct ctl *ctl, int argc, char **argv);
int ctl_evidence(const struct ctl *ctl, int argc, char **argv);

/*
 * Flag verbs (flags.c): flags list | get NAME | set NAME [--percentage P]
 * [--enabled[=true|false]] | exclude NAME --nodes a,b | kill NAME.  set and
 * kill use the seed-compatible POST /v1/feature-flags (set creates a missing
 * flag; enabled is only sent when given); kill checks the flag exists first.
 */
int ctl_flags(const struct ctl *ctl, int argc, char **argv);

/* shadow.c: shadow SERVICE - GET /v1/services/{name}/shadow, as a table or JSON. */
int ctl_shadow(const struct ctl *ctl, int argc, char **argv);

/*
 * faults.c: faults set SERVICE VERSION [--abort STATUS:PCT] [--delay DURATION:PCT]
 * | faults clear SERVICE VERSION - PUT / DELETE /v1/services/{name}/faults/{version}.
 */
int ctl_faults(const struct ctl *ctl, int argc, char **argv);

/*
 * events.c: events [--follow] [--subject S] [--kind K] [--since ID] - the
 * audit log (GET /v1/events), as a table, JSON Lines (-o json: one event
 * a line) or YAML (one document an event); --follow keeps printing new
 * events (GET /v1/events/stream, resumed with Last-Event-ID; polling
 * GET /v1/events?since= when the server has no stream) until SIGINT/SIGTERM.  --subject S
 * matches "S" and "KIND/S" (so `checkout` finds "flag/checkout"); --kind K
 * matches K, or every kind starting with K when K ends in '.'.
 */
int ctl_events(const struct ctl *ctl, int argc, char **argv);

/*
 * Calls fn(event, arg) for every event with id > since, oldest first,
 * following the API's paging (events borrowed for the call).  fn returns
 * 0 to go on, nonzero to stop.  Stores the last id seen in *last when not
 * NULL.  Returns CTL_OK or CTL_FAILED (message printed).
 */
int ctl_events_each(const struct ctl *ctl, long long since, int (*fn)(json_t *ev, void *arg),
                    void *arg, long long *last);

/* completion.c: completion bash|zsh - prints a shell completion script. */
int ctl_completion(const struct ctl *ctl, int argc, char **argv);

/* fleet.c: fleet - GET /v1/fleet: the fleet's nodes, as a table or JSON/YAML. */
int ctl_fleet(const struct ctl *ctl, int argc, char **argv);
/* export.c: prometheus-rules | grafana-dashboard (no server needed). */
int ctl_export(const struct ctl *ctl, int argc, char **argv);

#endif
