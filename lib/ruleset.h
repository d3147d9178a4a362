/*
 * ruleset.h - the client's copy of canaryd's flag ruleset, as the stream
 * sends it (docs/api.md, "The stream"), compiled with the server's core.
 *
 * A ruleset event {"revision", "flags": [DEFINITION...], "segments": [...]}
 * replaces everything; a change event {"revision", "key", "flag": DEFINITION
 * or null} replaces, adds or removes one flag.  Definitions go through
 * config_flag_from_json / config_segment_from_json and flagset_build, exactly
 * as src/api/flags.c does, so the client evaluates what the server does.
 *
 * Used by the stream thread only (and by canary_client_new for the cache);
 * not thread-safe.  The flagsets it builds are independent of it.
 */
#ifndef LIB_RULESET_H
#define LIB_RULESET_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config/config.h"
#include "flags/flag.h"

struct rs_flag {
	char *key;
	json_t *def; /* the definition as received, with "key" */
	struct config_flag *cf;
};

struct ruleset {
	uint64_t revision;
	struct rs_flag *flags;
	size_t nflags, cap;
	struct config_segment **segs; /* owned */
	struct config_segment *segv;  /* shallow copies, contiguous, for flagset_build */
	size_t nsegs;
	json_t *segs_json; /* the segments as received */
};

/* An empty ruleset (zeroed memory is one too). */
void ruleset_init(struct ruleset *rs);
void ruleset_release(struct ruleset *rs);

/*
 * Parses a ruleset event's data (or a cache file) into rs, which must be
 * empty, and compiles it: *set gets the new flagset.  Returns 0, or -1 with
 * a message in err (rs is then empty again).
 */
int ruleset_parse(struct ruleset *rs, const char *text, size_t len, struct flagset **set, char *err,
                  size_t errlen);

/*
 * Applies a change event's data to rs: on success rs holds the new state,
 * *set its compiled flagset, *key the flag's key (malloc'd) and *deleted
 * whether it is gone.  On failure (-1, message in err) rs is unchanged and
 * the caller should fetch a full ruleset.
 */
int ruleset_apply_change(struct ruleset *rs, const char *text, size_t len, struct flagset **set,
                         char **key, int *deleted, char *err, size_t errlen);

/* The ruleset as the stream's JSON text (what ruleset_parse reads); malloc'd, NULL on ENOMEM. */
char *ruleset_render(const struct ruleset *rs);

#endif
