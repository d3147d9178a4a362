/*
 * flag.h - feature-flag evaluation: the one core shared by the server (OFREP,
 * /v1/feature-flags) and the client library (SPEC 2, 3; docs/flags.md).
 *
 * A flagset is compiled once from validated config flags and segments (on
 * the control thread, or the client library's stream thread): segments are
 * compiled, variant names resolved to indices, exclude/include lists and flag
 * keys put in hash sets, splits turned into cumulative bucket thresholds, and
 * every variant's JSON text rendered.  The set owns copies of everything it
 * needs, so the config it was built from may be freed right after.
 *
 * A built set is immutable.  Any number of threads may call flagset_find()
 * and flag_eval() on it at once, without locks; evaluation never allocates
 * (except inside glibc's regexec for a `matches` condition, see segment.c).
 * Swap whole sets to publish a change (core/snapshot.h) and free the old one
 * when its last reader is gone.
 *
 * Evaluation order (docs/flags.md has the why):
 *   disabled -> off_variant                                      DISABLED
 *   sticky value in `exclude` -> off_variant                     TARGETING_MATCH
 *   sticky value in `include` -> first non-off variant           TARGETING_MATCH
 *   first rule whose segment matches: serve V                    TARGETING_MATCH
 *                                     rollout {V: P, ...}        SPLIT
 *   fallthrough rollout {V: P, ...}                              SPLIT
 *   nothing applies -> off_variant        DEFAULT (STATIC when the flag has no
 *                                         rules, rollout or lists at all)
 * A split that needs a bucket but has no sticky value (absent or "") gives
 * off_variant with reason ERROR, error TARGETING_KEY_MISSING: never a random.
 */
#ifndef FLAGS_FLAG_H
#define FLAGS_FLAG_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config/config.h"
#include "core/str.h"
#include "flags/segment.h"

struct flag;
struct flagset;

/* OpenFeature resolution reasons; flag_reason_name() spells them. */
enum flag_reason {
	FLAG_REASON_STATIC,
	FLAG_REASON_TARGETING_MATCH,
	FLAG_REASON_SPLIT,
	FLAG_REASON_DISABLED,
	FLAG_REASON_DEFAULT,
	FLAG_REASON_ERROR,
};

/* OpenFeature / OFREP error codes; flag_error_name() spells them. */
enum flag_error {
	FLAG_ERROR_NONE,
	FLAG_ERROR_TARGETING_KEY_MISSING,
	FLAG_ERROR_FLAG_NOT_FOUND,
	FLAG_ERROR_INVALID_CONTEXT,
	FLAG_ERROR_PARSE_ERROR,
	FLAG_ERROR_GENERAL,
};

#define FLAG_NO_BUCKET UINT32_MAX

/*
 * One evaluation.  Every pointer is borrowed from the flagset (or static) and
 * stays valid while the set lives.
 */
struct flag_result {
	const char *variant;     /* variant name; NULL only for FLAG_NOT_FOUND */
	const json_t *value;     /* the variant's value; NULL only for FLAG_NOT_FOUND */
	const char *value_json;  /* value as compact JSON text, NUL-terminated */
	size_t value_json_len;   /* 0 only for FLAG_NOT_FOUND */
	enum flag_reason reason; /* FLAG_REASON_ERROR exactly when error != NONE */
	enum flag_error error;
	const char *message; /* for humans when error != NONE, else NULL */
	int rule;            /* index of the rule that decided, -1 for none */
	uint32_t bucket;     /* SPEC 2 bucket when a split was computed, else FLAG_NO_BUCKET */
};

/*
 * Compiles flags[0..nflags) against segs[0..nsegs).  Rules name their segment
 * and variants by name; they are resolved here (the `seg` and `*_index`
 * fields of the config are not trusted, so a flag from config_flag_from_json
 * without a config works).  Inputs are only read, and nothing in the result
 * points into them.  Returns a new set (free with flagset_free), or NULL with
 * a message in err: duplicate flag key or segment name, undefined segment or
 * variant, percentages over 100, a segment that does not compile, ENOMEM.
 */
struct flagset *flagset_build(const struct config_flag *flags, size_t nflags,
                              const struct config_segment *segs, size_t nsegs, char *err,
                              size_t errlen);

/* Frees a set.  No thread may still be using it.  NULL is a no-op. */
void flagset_free(struct flagset *set);

/* The flag with key[0..keylen) (need not be NUL-terminated), or NULL. */
const struct flag *flagset_find(const struct flagset *set, const char *key, size_t keylen);

/* Number of flags, and the i-th in the order given to flagset_build (bulk OFREP). */
size_t flagset_count(const struct flagset *set);
const struct flag *flagset_at(const struct flagset *set, size_t i);

/* The key of f (not NULL), NUL-terminated, owned by the set. */
const char *flag_key(const struct flag *f);

/* Position of f, which must come from set, in the order given to flagset_build. */
size_t flagset_index(const struct flagset *set, const struct flag *f);

/*
 * f's variants in definition order: their number, and the name of the i-th
 * (owned by the set; NULL past the end).  flag_result.variant is one of
 * these pointers, so a caller may find the index by comparing pointers.
 */
size_t flag_variant_count(const struct flag *f);
const char *flag_variant_name(const struct flag *f, size_t i);

/* ------------------------------------------------------------------------ */
/* Definitions as JSON (the admin API, the audit log, the stream)            */

/*
 * The definition of cf as a new JSON object with every key present, in this
 * order: "key", "description", "enabled", "variants" (in definition order),
 * "off_variant", "sticky", "rules" ([{"segment", "serve"} or {"segment",
 * "rollout"}]), "rollout", "exclude", "include".  Percentages are numbers
 * (integers when whole: 10, 12.345).  Without "key" the object is exactly
 * what config_flag_from_json() accepts, and gives back an equal flag.
 * NULL on ENOMEM.
 */
json_t *flag_config_to_json(const struct config_flag *cf);

/*
 * The segment as {"name", "match": [{"attr", "op", "values"}]}; without
 * "name" it is what config_segment_from_json() accepts.  NULL on ENOMEM.
 */
json_t *flag_segment_to_json(const struct config_segment *cs);

/*
 * v (any JSON value) as compact text, reals in 15 significant digits when
 * that reads back as the same value (0.1, 12.345), else in 17: the text of
 * a variant's value_json and of what the admin API sends.  malloc'd (the
 * caller frees); NULL on ENOMEM.
 */
char *flag_json_text(const json_t *v);

/* A percentage in thousandths as a JSON number: 10000 -> 10, 12345 -> 12.345. */
json_t *flag_percent_json(uint32_t thousandths);

/*
 * Evaluates f for the context seen through attr(ctx, ...) and fills *out.
 * f may be NULL (the flagset_find() miss): out then says ERROR /
 * FLAG_NOT_FOUND with no variant or value.  attr may be NULL for an empty
 * context.  A value attr returns is used before the next call of attr, never
 * after it.  Reentrant, allocation-free.  Returns 0, or -1 when out->reason
 * is FLAG_REASON_ERROR (out->error says why; for TARGETING_KEY_MISSING out
 * still carries the off variant, which is what to serve).
 */
int flag_eval(const struct flag *f, segment_attr_fn attr, void *ctx, struct flag_result *out);

/* "STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "DEFAULT", "ERROR"; "UNKNOWN" otherwise. */
const char *flag_reason_name(enum flag_reason r);

/*
 * "TARGETING_KEY_MISSING", "FLAG_NOT_FOUND", "INVALID_CONTEXT", "PARSE_ERROR",
 * "GENERAL"; NULL for FLAG_ERROR_NONE (OFREP then has no errorCode), and
 * "GENERAL" for values out of range.
 */
const char *flag_error_name(enum flag_error e);

/* ------------------------------------------------------------------------ */
/* JSON evaluation contexts (OFREP's "context" object, the client library)   */

#define FLAG_JSON_SCRATCH 4

/*
 * Attribute lookup over a JSON object: strings are given as they are (borrowed
 * from the object); true / false as "true" / "false"; integers in decimal;
 * reals in the shortest of %.15g / %.16g / %.17g that reads back exactly
 * ("2.5", "0.1", "1e+100"; 3.0 gives "3").  null, arrays and objects count as
 * absent.  Numbers are rendered into the context's scratch ring, so such a
 * value stays valid for the next FLAG_JSON_SCRATCH - 1 lookups on the same
 * context (flag_eval and segment_match need only until the next one).  One
 * context per evaluating thread: it is small, put it on the stack.
 */
struct flag_json_ctx {
	const json_t *obj;
	unsigned next;
	char scratch[FLAG_JSON_SCRATCH][32];
};

/*
 * Prepares c over obj, which must outlive c.  obj NULL is the empty context.
 * Returns 0, or -1 when obj is not a JSON object (OFREP: INVALID_CONTEXT); c
 * is then the empty context.
 */
int flag_json_ctx_init(struct flag_json_ctx *c, const json_t *obj);

/* A segment_attr_fn: ctx is a struct flag_json_ctx * from flag_json_ctx_init. */
int flag_ctx_json_attr(void *ctx, const char *attr, struct str *val);

#endif
