/*
 * libFuzzer target for flag rules and segment operators (src/flags/,
 * src/config/config_flag.c): definitions through the validators the API and
 * the stream use (config_segment_from_json, config_flag_from_json), compiled
 * (segment_compile, flagset_build) and evaluated (segment_match, flag_eval)
 * against fuzzed JSON contexts.  The input is one JSON object:
 *
 *   {"segments": {NAME: {"match": [...]}, ...},
 *    "flags":    {KEY: DEFINITION, ...},
 *    "contexts": [{"targetingKey": "u1", "email": "a@x.io", ...}, ...]}
 *
 * Checks: a valid flag's definition as JSON (flag_config_to_json) validates
 * again; an evaluation's reason and error agree, and a found flag always
 * serves one of its own variants.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config/config.h"
#include "flags/flag.h"
#include "flags/segment.h"

#define EVAL_MAX_INPUT (32 * 1024)
#define EVAL_MAX_ITEMS 16

static void eval_all(const struct flagset *set, const json_t *contexts)
{
	size_t i;
	json_t *ctx;

	json_array_foreach(contexts, i, ctx)
	{
		struct flag_json_ctx jc;
		struct flag_result res;

		if (i >= EVAL_MAX_ITEMS)
			break;
		(void)flag_json_ctx_init(&jc, ctx);
		for (size_t f = 0; f < flagset_count(set); f++) {
			const struct flag *fl = flagset_at(set, f);
			int rc = flag_eval(fl, flag_ctx_json_attr, &jc, &res);
			int found = 0;

			if ((rc != 0) != (res.reason == FLAG_REASON_ERROR) ||
			    (res.error != FLAG_ERROR_NONE) != (res.reason == FLAG_REASON_ERROR))
				abort();
			for (size_t v = 0; v < flag_variant_count(fl); v++)
				found |= res.variant == flag_variant_name(fl, v);
			if (!found || !res.value_json)
				abort();
		}
		(void)flag_eval(NULL, flag_ctx_json_attr, &jc, &res);
	}
}

static void match_all(const struct config_segment *cs, const json_t *contexts)
{
	struct segment seg;
	char err[256];
	size_t i;
	json_t *ctx;

	if (segment_compile(&seg, cs, err, sizeof(err)) != 0)
		return;
	json_array_foreach(contexts, i, ctx)
	{
		struct flag_json_ctx jc;

		if (i >= EVAL_MAX_ITEMS)
			break;
		(void)flag_json_ctx_init(&jc, ctx);
		(void)segment_match(&seg, flag_ctx_json_attr, &jc);
	}
	segment_release(&seg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config_segment *segp[EVAL_MAX_ITEMS], segv[EVAL_MAX_ITEMS];
	struct config_flag *flagp[EVAL_MAX_ITEMS], flagv[EVAL_MAX_ITEMS];
	size_t nsegs = 0, nflags = 0;
	struct config_errors errs;
	struct config fake;
	struct flagset *set;
	const char *name;
	json_t *root, *contexts, *def;
	char err[256];

	if (size > EVAL_MAX_INPUT)
		return 0;
	root = json_loadb((const char *)data, size, 0, NULL);
	if (!json_is_object(root))
		goto out;
	contexts = json_object_get(root, "contexts");

	json_object_foreach(json_object_get(root, "segments"), name, def)
	{
		if (nsegs == EVAL_MAX_ITEMS)
			break;
		config_errors_init(&errs);
		segp[nsegs] = config_segment_from_json("fuzz", name, def, &errs);
		if ((segp[nsegs] != NULL) != (config_errors_count(&errs) == 0))
			abort();
		config_errors_release(&errs);
		if (!segp[nsegs])
			continue;
		match_all(segp[nsegs], contexts);
		segv[nsegs] = *segp[nsegs];
		nsegs++;
	}

	memset(&fake, 0, sizeof(fake));
	fake.segments = segv;
	fake.nsegments = nsegs;
	json_object_foreach(json_object_get(root, "flags"), name, def)
	{
		struct config_flag *again;
		json_t *back;

		if (nflags == EVAL_MAX_ITEMS)
			break;
		config_errors_init(&errs);
		flagp[nflags] = config_flag_from_json("fuzz", name, def, &fake, &errs);
		config_errors_release(&errs);
		if (!flagp[nflags])
			continue;
		/* the definition as JSON reads back (without "key") */
		back = flag_config_to_json(flagp[nflags]);
		if (!back)
			abort();
		json_object_del(back, "key");
		config_errors_init(&errs);
		again = config_flag_from_json("fuzz", name, back, &fake, &errs);
		if (!again)
			abort();
		config_flag_free(again);
		config_errors_release(&errs);
		json_decref(back);
		flagv[nflags] = *flagp[nflags];
		nflags++;
	}

	set = flagset_build(flagv, nflags, segv, nsegs, err, sizeof(err));
	if (set) {
		eval_all(set, contexts);
		flagset_free(set);
	}

	for (size_t i = 0; i < nflags; i++)
		config_flag_free(flagp[i]);
	for (size_t i = 0; i < nsegs; i++)
		config_segment_free(segp[i]);
out:
	json_decref(root);
	return 0;
}
