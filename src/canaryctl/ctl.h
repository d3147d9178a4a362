/*
 * ctl.h - shared plumbing of canaryctl's verbs: options, the HTTP call,
 * output in table or JSON form.  Exit codes: 0 ok, 1 failed, 2 usage.
 */
#ifndef CANARYCTL_CTL_H
#define CANARYCTL_CTL_H

#include <jansson.h>

enum { CTL_OK = 0, CTL_FAILED = 1, CTL_USAGE = 2 };

struct ctl {
	const char *server; /* base URL, default http://127.0.0.1:9901 */
	const char *token;  /* --token or $CANARYD_TOKEN; may be NULL */
	int json;           /* -o json */
};

/*
 * Performs METHOD server+path with an optional JSON body (borrowed).  On a
 * 2xx answer stores the parsed JSON (or NULL for an empty body) in *out
 * (caller owns) and returns CTL_OK; otherwise prints the server's error
 * message to stderr and returns CTL_FAILED.
 */
int ctl_call(const struct ctl *ctl, const char *method, const char *path, json_t *body,
             json_t **out);

/* Prints doc as indented JSON on stdout. */
void ctl_print_json(json_t *doc);

struct ctl_verb {
	const char *name;
	const char *usage;
	int (*run)(const struct ctl *ctl, int argc, char **argv);
};

int ctl_status(const struct ctl *ctl, int argc, char **argv);
int ctl_check_config(const struct ctl *ctl, int argc, char **argv);

#endif
