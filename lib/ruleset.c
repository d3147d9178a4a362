/*
 * ruleset.c - the client's ruleset state (see ruleset.h).
 */
#include "ruleset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SOURCE "stream"

void ruleset_init(struct ruleset *rs)
{
	memset(rs, 0, sizeof(*rs));
}

static void rs_flag_release(struct rs_flag *f)
{
	free(f->key);
	json_decref(f->def);
	config_flag_free(f->cf);
	memset(f, 0, sizeof(*f));
}

void ruleset_release(struct ruleset *rs)
{
	for (size_t i = 0; i < rs->nflags; i++)
		rs_flag_release(&rs->flags[i]);
	free(rs->flags);
	for (size_t i = 0; i < rs->nsegs; i++)
		config_segment_free(rs->segs[i]);
	free(rs->segs);
	free(rs->segv);
	json_decref(rs->segs_json);
	memset(rs, 0, sizeof(*rs));
}

/* "what: path: message" of the first error in errs. */
static void first_error(const struct config_errors *errs, const char *what, char *err,
                        size_t errlen)
{
	const struct config_error *e = config_errors_get(errs, 0);

	if (!e)
		snprintf(err, errlen, "%s: out of memory", what);
	else
		snprintf(err, errlen, "%s: %s%s%s", what, e->path, e->path[0] ? ": " : "",
		         e->message);
}

/* def (with or without "key") without "key" / "name": what the config parsers take. */
static json_t *body_of(const json_t *def, const char *drop)
{
	json_t *b = json_copy((json_t *)def);

	if (b)
		json_object_del(b, drop);
	return b;
}

/* Parses one flag definition under the segments of rs into f.  0, or -1 + err. */
static int flag_parse(const struct ruleset *rs, const char *key, json_t *def, struct rs_flag *f,
                      char *err, size_t errlen)
{
	struct config fake;
	struct config_errors errs;
	char what[96];
	json_t *body;

	memset(f, 0, sizeof(*f));
	snprintf(what, sizeof(what), "flag %s", key);
	if (!json_is_object(def)) {
		snprintf(err, errlen, "%s: definition is not an object", what);
		return -1;
	}
	memset(&fake, 0, sizeof(fake));
	fake.segments = rs->segv;
	fake.nsegments = rs->nsegs;
	config_errors_init(&errs);
	body = body_of(def, "key");
	f->cf = body ? config_flag_from_json(SOURCE, key, body, &fake, &errs) : NULL;
	json_decref(body);
	if (!f->cf) {
		first_error(&errs, what, err, errlen);
		config_errors_release(&errs);
		return -1;
	}
	config_errors_release(&errs);
	f->key = strdup(key);
	f->def = json_incref(def);
	if (!f->key) {
		rs_flag_release(f);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

/*
 * Compiles rs's flags under its segments, with flags[at] replaced by nf, or
 * left out when nf is NULL; with at < 0, nf (when not NULL) is added.
 */
static struct flagset *compile(const struct ruleset *rs, long at, const struct rs_flag *nf,
                               char *err, size_t errlen)
{
	struct config_flag *cfs = calloc(rs->nflags + 1, sizeof(*cfs));
	struct flagset *set;
	size_t k = 0;

	if (!cfs) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < rs->nflags; i++) {
		if ((long)i != at)
			cfs[k++] = *rs->flags[i].cf;
		else if (nf)
			cfs[k++] = *nf->cf;
	}
	if (at < 0 && nf)
		cfs[k++] = *nf->cf;
	set = flagset_build(cfs, k, rs->segv, rs->nsegs, err, errlen);
	free(cfs);
	return set;
}

static int parse_revision(const json_t *root, uint64_t *rev, char *err, size_t errlen)
{
	json_t *r = json_object_get(root, "revision");

	if (!json_is_integer(r) || json_integer_value(r) < 0) {
		snprintf(err, errlen, "revision: not a non-negative integer");
		return -1;
	}
	*rev = (uint64_t)json_integer_value(r);
	return 0;
}

static json_t *load(const char *text, size_t len, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root = json_loadb(text, len, 0, &jerr);

	if (!root) {
		snprintf(err, errlen, "invalid JSON at line %d column %d: %s", jerr.line,
		         jerr.column, jerr.text);
		return NULL;
	}
	if (!json_is_object(root)) {
		snprintf(err, errlen, "not a JSON object");
		json_decref(root);
		return NULL;
	}
	return root;
}

static int parse_segments(struct ruleset *rs, json_t *segs, char *err, size_t errlen)
{
	size_t n = json_array_size(segs);

	rs->segs = calloc(n + 1, sizeof(*rs->segs));
	rs->segv = calloc(n + 1, sizeof(*rs->segv));
	if (!rs->segs || !rs->segv) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *s = json_array_get(segs, i), *body;
		const char *name = json_string_value(json_object_get(s, "name"));
		struct config_errors errs;
		char what[96];

		if (!json_is_object(s) || !name) {
			snprintf(err, errlen, "segments[%zu]: not an object with a \"name\"", i);
			return -1;
		}
		snprintf(what, sizeof(what), "segment %s", name);
		config_errors_init(&errs);
		body = body_of(s, "name");
		rs->segs[i] = body ? config_segment_from_json(SOURCE, name, body, &errs) : NULL;
		json_decref(body);
		if (!rs->segs[i]) {
			first_error(&errs, what, err, errlen);
			config_errors_release(&errs);
			return -1;
		}
		config_errors_release(&errs);
		rs->segv[i] = *rs->segs[i];
		rs->nsegs++;
	}
	rs->segs_json = json_incref(segs);
	return 0;
}

int ruleset_parse(struct ruleset *rs, const char *text, size_t len, struct flagset **set, char *err,
                  size_t errlen)
{
	json_t *root = load(text, len, err, errlen), *flags, *segs;
	size_t n;

	*set = NULL;
	ruleset_init(rs);
	if (!root)
		return -1;
	if (parse_revision(root, &rs->revision, err, errlen) != 0)
		goto out_fail;
	flags = json_object_get(root, "flags");
	segs = json_object_get(root, "segments");
	if (!json_is_array(flags) || (segs && !json_is_array(segs))) {
		snprintf(err, errlen, "%s: not an array",
		         json_is_array(flags) ? "segments" : "flags");
		goto out_fail;
	}
	if (!segs)
		segs = json_array();
	else
		json_incref(segs);
	if (parse_segments(rs, segs, err, errlen) != 0) {
		json_decref(segs);
		goto out_fail;
	}
	json_decref(segs);
	n = json_array_size(flags);
	rs->flags = calloc(n + 1, sizeof(*rs->flags));
	if (!rs->flags) {
		snprintf(err, errlen, "out of memory");
		goto out_fail;
	}
	rs->cap = n + 1;
	for (size_t i = 0; i < n; i++) {
		json_t *def = json_array_get(flags, i);
		const char *key = json_string_value(json_object_get(def, "key"));

		if (!key) {
			snprintf(err, errlen, "flags[%zu]: no \"key\"", i);
			goto out_fail;
		}
		if (flag_parse(rs, key, def, &rs->flags[i], err, errlen) != 0)
			goto out_fail;
		rs->nflags++;
	}
	*set = compile(rs, -1, NULL, err, errlen);
	if (!*set)
		goto out_fail;
	json_decref(root);
	return 0;
out_fail:
	json_decref(root);
	ruleset_release(rs);
	return -1;
}

int ruleset_apply_change(struct ruleset *rs, const char *text, size_t len, struct flagset **set,
                         char **key_out, int *deleted, char *err, size_t errlen)
{
	json_t *root = load(text, len, err, errlen), *def, *kdef = NULL;
	struct rs_flag nf;
	const char *key;
	uint64_t rev;
	long at = -1;

	*set = NULL;
	*key_out = NULL;
	memset(&nf, 0, sizeof(nf));
	if (!root)
		return -1;
	key = json_string_value(json_object_get(root, "key"));
	def = json_object_get(root, "flag");
	if (parse_revision(root, &rev, err, errlen) != 0)
		goto out_fail;
	if (!key || !def) {
		snprintf(err, errlen, "change: needs \"key\" and \"flag\"");
		goto out_fail;
	}
	for (size_t i = 0; i < rs->nflags; i++) {
		if (strcmp(rs->flags[i].key, key) == 0) {
			at = (long)i;
			break;
		}
	}
	*deleted = json_is_null(def);
	if (!*deleted) {
		/* kept under the change's key whatever the body's "key" says, so
		 * ruleset_render() gives what ruleset_parse() reads back */
		kdef = json_copy(def);
		if (!kdef || (json_is_object(kdef) &&
		              json_object_set_new(kdef, "key", json_string(key)) != 0)) {
			snprintf(err, errlen, "out of memory");
			goto out_fail;
		}
		if (flag_parse(rs, key, kdef, &nf, err, errlen) != 0)
			goto out_fail;
	}
	*key_out = strdup(key);
	if (!*key_out) {
		snprintf(err, errlen, "out of memory");
		goto out_fail;
	}
	*set = compile(rs, at, *deleted ? NULL : &nf, err, errlen);
	if (!*set)
		goto out_fail;
	/* compiled: commit */
	if (at >= 0 && *deleted) {
		rs_flag_release(&rs->flags[at]);
		memmove(&rs->flags[at], &rs->flags[at + 1],
		        (rs->nflags - (size_t)at - 1) * sizeof(*rs->flags));
		rs->nflags--;
	} else if (at >= 0) {
		rs_flag_release(&rs->flags[at]);
		rs->flags[at] = nf;
	} else if (!*deleted) {
		if (rs->nflags == rs->cap) {
			size_t ncap = rs->cap ? rs->cap * 2 : 8;
			struct rs_flag *v = realloc(rs->flags, ncap * sizeof(*v));

			if (!v) {
				snprintf(err, errlen, "out of memory");
				flagset_free(*set);
				*set = NULL;
				goto out_fail;
			}
			rs->flags = v;
			rs->cap = ncap;
		}
		rs->flags[rs->nflags++] = nf;
	}
	rs->revision = rev;
	json_decref(kdef);
	json_decref(root);
	return 0;
out_fail:
	rs_flag_release(&nf);
	free(*key_out);
	*key_out = NULL;
	json_decref(kdef);
	json_decref(root);
	return -1;
}

char *ruleset_render(const struct ruleset *rs)
{
	json_t *flags = json_array(), *o;
	char *text = NULL;

	if (!flags)
		return NULL;
	for (size_t i = 0; i < rs->nflags; i++) {
		if (json_array_append(flags, rs->flags[i].def) != 0)
			goto out;
	}
	o = json_pack("{s:I, s:O, s:o}", "revision", (json_int_t)rs->revision, "flags", flags,
	              "segments", rs->segs_json ? json_incref(rs->segs_json) : json_array());
	if (o)
		text = flag_json_text(o);
	json_decref(o);
out:
	json_decref(flags);
	return text;
}
