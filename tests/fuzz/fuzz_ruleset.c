/*
 * libFuzzer target for libcanary's ruleset JSON (lib/ruleset.c, included):
 * the stream's `ruleset` event (also the client's cache file) and its
 * `change` events.  The input is a ruleset event's data, then any number of
 * change events, separated by lines holding just "--".
 *
 * Checks: a parsed ruleset renders (ruleset_render) to text that parses back
 * to a ruleset with the same revision and flag count; a failed change leaves
 * the ruleset as it was (its rendering unchanged).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ruleset.c"

#define RULESET_FUZZ_MAX (32 * 1024)
#define RULESET_SEP      "\n--\n"

/* The next piece of [*p, end) up to the separator; advances *p past it. */
static size_t next_piece(const char **p, const char *end, const char **piece)
{
	const char *s = *p, *sep = memmem(s, (size_t)(end - s), RULESET_SEP, 4);
	size_t n = sep ? (size_t)(sep - s) : (size_t)(end - s);

	*piece = s;
	*p = sep ? sep + 4 : end;
	return n;
}

static void check_round_trip(const struct ruleset *rs)
{
	struct ruleset again;
	struct flagset *set;
	char err[256];
	char *text = ruleset_render(rs);

	if (!text)
		abort();
	if (ruleset_parse(&again, text, strlen(text), &set, err, sizeof(err)) != 0 ||
	    again.revision != rs->revision || again.nflags != rs->nflags)
		abort();
	flagset_free(set);
	ruleset_release(&again);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size, *piece;
	struct ruleset rs;
	struct flagset *set;
	char err[256];
	size_t n;

	if (size > RULESET_FUZZ_MAX)
		return 0;
	n = next_piece(&p, end, &piece);
	if (ruleset_parse(&rs, piece, n, &set, err, sizeof(err)) != 0) {
		if (rs.nflags != 0 || rs.nsegs != 0)
			abort();
		return 0;
	}
	flagset_free(set);
	check_round_trip(&rs);
	while (p < end) {
		char *before = ruleset_render(&rs), *after, *key = NULL;
		int deleted = 0;

		n = next_piece(&p, end, &piece);
		if (ruleset_apply_change(&rs, piece, n, &set, &key, &deleted, err, sizeof(err)) ==
		    0) {
			flagset_free(set);
			free(key);
			check_round_trip(&rs);
		} else {
			after = ruleset_render(&rs);
			if (!before || !after || strcmp(before, after) != 0 || key)
				abort();
			free(after);
		}
		free(before);
	}
	ruleset_release(&rs);
	return 0;
}
