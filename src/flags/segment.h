/*
 * segment.h - segments: named sets of evaluation contexts defined by
 * attribute conditions (SPEC 1, 3).  Used by flag rules and proxy overrides.
 *
 * A segment is compiled once (regexes, numbers, times, versions parsed) on the
 * control thread, then matched from any thread without allocating.  A context
 * is a lookup function from attribute name to value, so the proxy can read
 * attributes straight from request fields and the flag evaluator from JSON.
 */
#ifndef FLAGS_SEGMENT_H
#define FLAGS_SEGMENT_H

#include <regex.h>
#include <stddef.h>

#include "config/config.h"
#include "core/str.h"

struct segment_cond;

struct segment {
	const char *name;
	struct segment_cond *conds;
	size_t nconds;
};

/* Attribute lookup: returns 1 and sets *val when the attribute exists. */
typedef int (*segment_attr_fn)(void *ctx, const char *attr, struct str *val);

/*
 * Compiles cs into seg.  Returns 0, or -1 with a message in err (a regex that
 * no longer compiles; the config validator normally caught it).  seg borrows
 * cs's strings (name, attributes, values): cs must outlive seg, up to
 * segment_release().  A "matches" regex sees the whole value, of any length.
 */
int segment_compile(struct segment *seg, const struct config_segment *cs, char *err, size_t errlen);
void segment_release(struct segment *seg);

/* 1 when every condition holds for the context, else 0.  A missing attribute
 * fails its condition (also for neq / not_in). */
int segment_match(const struct segment *seg, segment_attr_fn attr, void *ctx);

/* Compares dotted versions "1.2.10" > "1.2.9" (a leading "v" is ignored;
 * pre-release suffixes sort before the release).  <0, 0, >0. */
int segment_semver_cmp(struct str a, struct str b);

#endif
