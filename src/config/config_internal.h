/*
 * config_internal.h - the machinery shared by the config module's files:
 * an arena that owns a config, a small document tree (cnode) built from
 * YAML events or from jansson values, and one table-driven mapping walker
 * that every section of the schema goes through.
 *
 * Not part of the public surface; only src/config/ and its tests include it.
 */
#ifndef CONFIG_INTERNAL_H
#define CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/arena.h"

/* --- arena --------------------------------------------------------------- */

/*
 * core/arena.h plus the jansson values the model points into.  A zeroed
 * struct is ready to use (the loaders declare them with {0} or calloc).
 */
struct cfg_arena {
	struct arena mem;
	json_t **json; /* values to json_decref on release */
	size_t njson, capjson;
};

/* Zeroed memory that lives until cfg_arena_release(); NULL on ENOMEM. */
void *cfg_arena_alloc(struct cfg_arena *a, size_t n);
char *cfg_arena_strndup(struct cfg_arena *a, const char *s, size_t n);
char *cfg_arena_strdup(struct cfg_arena *a, const char *s);
/* Steals one reference to v; it is released with the arena.  Returns v. */
json_t *cfg_arena_keep_json(struct cfg_arena *a, json_t *v);
void cfg_arena_release(struct cfg_arena *a);

/* --- document tree --------------------------------------------------------- */

enum cnode_type {
	CN_NULL, /* an empty YAML value, or JSON null */
	CN_SCALAR,
	CN_SEQ,
	CN_MAP,
};

struct cnode {
	enum cnode_type type;
	int line;         /* 1-based; 0 for JSON */
	bool quoted;      /* scalar written quoted (YAML) or a JSON string: never a number/bool */
	bool json;        /* built from JSON: types are strict (a number is never a string) */
	const char *text; /* scalar text, NUL-terminated, not yet ${ENV}-expanded */
	size_t len;
	size_t start, end;    /* YAML scalars: byte span in the source (end > start); else 0 */
	unsigned char style;  /* CNODE_PLAIN / CNODE_QUOTED / CNODE_BLOCK: how the span reads */
	size_t n;             /* items of a sequence / pairs of a mapping */
	struct cnode **items; /* sequence items, or mapping values */
	struct cnode **keys;  /* mapping keys (scalars) */
};

/* --- context and errors ---------------------------------------------------- */

struct cctx {
	struct config_errors *errs;
	const char *file;
	struct cfg_arena *tmp; /* the tree and scratch strings; freed after loading */
	struct cfg_arena *out; /* the model */
	bool expand_env;       /* YAML: expand ${VAR} in scalars */
	const char *base_dir;  /* relative secret_file paths start here; NULL: the cwd */
	struct config *cfg;    /* the config being built, or the reference config for JSON */
	size_t json_nodes;     /* built by cnode_to_json: aliases must not blow up a variant */
	size_t nerr_start;     /* error count when this load began */
	struct cfg_redaction *redact; /* spans of the source to hide in config snapshots */
	size_t nredact, capredact;
};

enum { CNODE_PLAIN, CNODE_QUOTED, CNODE_BLOCK };

/* A span of the YAML source replaced by `with` (a YAML double-quoted scalar) in snapshots. */
struct cfg_redaction {
	size_t start, end;
	unsigned char style; /* of the node: a quoted span excludes its quotes, a block is lines */
	const char *with;    /* in c->tmp */
	const char *secret; /* the value itself (in c->tmp), also hidden wherever else it appears */
};

/*
 * Records that scalar n holds a secret: config snapshots (struct config's
 * `source`, served in evidence bundles) show it as "<redacted>".  secret is
 * the value as used (after ${ENV}); it is also hidden in comments and other
 * places of the text.  n may be NULL (a secret read from a file: hidden
 * wherever it appears).  Nodes from JSON are ignored.
 */
void cnode_redact_secret(struct cctx *c, const struct cnode *n, const char *secret);
/*
 * The same for a URL scalar: only its password (config_url_redact) is hidden,
 * and the snapshot shows the rest as written (before ${ENV}).
 */
void cnode_redact_url(struct cctx *c, const struct cnode *n, const char *url);
/*
 * The source text with every recorded span replaced, and every recorded
 * secret of 4 bytes or more hidden elsewhere too.  Returns a malloc'ed,
 * NUL-terminated copy (length in *outlen), or NULL when out of memory.
 */
char *cnode_redacted_source(struct cctx *c, const char *src, size_t len, size_t *outlen);

void cerr(struct cctx *c, int line, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Errors recorded since this load began. */
static inline bool cctx_failed(const struct cctx *c)
{
	return config_errors_count(c->errs) > c->nerr_start;
}

#define PATH_MAX_LEN 512
/* sub = path + "." + key (or just key at the root). */
void path_key(char *sub, const char *path, const char *key);
/* sub = path + "[i]". */
void path_idx(char *sub, const char *path, size_t i);

/* A zeroed node of type t in c->tmp (text ""); NULL on ENOMEM. */
struct cnode *cnode_new(struct cctx *c, enum cnode_type t, int line);
/* YAML text -> tree (NULL after reporting syntax errors).  config_yaml.c: the
 * only function here that needs libfyaml; libcanary does not link it. */
struct cnode *cnode_from_yaml(struct cctx *c, const char *yaml, size_t len);
/* JSON value -> tree. */
struct cnode *cnode_from_json(struct cctx *c, const json_t *v);
/* The tree as a JSON value (new reference), for flag variants; NULL after an error. */
json_t *cnode_to_json(struct cctx *c, const struct cnode *n, const char *path);

/* --- scalar accessors (each reports its own error and returns false) ------------ */

/* The scalar's text after ${ENV} expansion; NULL after an error.  Lives in c->tmp. */
const char *get_text(struct cctx *c, const struct cnode *n, const char *path);
/* Copies the expanded text into the model arena. */
bool get_str(struct cctx *c, const struct cnode *n, const char *path, const char **out);
bool get_name(struct cctx *c, const struct cnode *n, const char *path, const char **out);
bool get_bool(struct cctx *c, const struct cnode *n, const char *path, bool *out);
bool get_u32(struct cctx *c, const struct cnode *n, const char *path, uint32_t min, uint32_t max,
             uint32_t *out);
bool get_double(struct cctx *c, const struct cnode *n, const char *path, double *out);
bool get_duration(struct cctx *c, const struct cnode *n, const char *path, uint64_t *out);
bool get_percent(struct cctx *c, const struct cnode *n, const char *path, uint32_t *out);
bool get_addr(struct cctx *c, const struct cnode *n, const char *path, struct config_addr *out);
bool get_url(struct cctx *c, const struct cnode *n, const char *path, const char **out);
/* A sequence of strings (names when `names`); a lone scalar is a list of one. */
bool get_strlist(struct cctx *c, const struct cnode *n, const char *path, bool names,
                 struct config_strlist *out);

bool want_map(struct cctx *c, const struct cnode *n, const char *path);
bool want_seq(struct cctx *c, const struct cnode *n, const char *path);

/* --- the table-driven mapping walker -------------------------------------------- */

enum fkind {
	FK_STR,
	FK_NAME,
	FK_BOOL,
	FK_U32,
	FK_NUM,      /* struct config_bound */
	FK_DOUBLE,   /* plain double */
	FK_DURATION, /* uint64_t ms */
	FK_PERCENT,  /* uint32_t thousandths */
	FK_SIZE,     /* uint64_t bytes, min..max */
	FK_SIZE32,   /* uint32_t bytes, min..max */
	FK_ADDR,
	FK_URL,
	FK_STRLIST,
	FK_NAMELIST,
	FK_CUSTOM,
};

typedef bool (*field_fn)(struct cctx *c, const struct cnode *n, const char *path, void *obj);

struct field {
	const char *key;
	enum fkind kind;
	size_t off;
	uint64_t min, max; /* FK_U32, FK_SIZE */
	field_fn fn;       /* FK_CUSTOM: gets the whole object */
	bool required;
};

#define FLD(k, kind, type, member)                                 \
	{                                                          \
		k, kind, offsetof(type, member), 0, 0, NULL, false \
	}
#define FLD_REQ(k, kind, type, member)                            \
	{                                                         \
		k, kind, offsetof(type, member), 0, 0, NULL, true \
	}
#define FLD_RANGE(k, kind, type, member, lo, hi)                     \
	{                                                            \
		k, kind, offsetof(type, member), lo, hi, NULL, false \
	}
#define FLD_FN(k, fn)                            \
	{                                        \
		k, FK_CUSTOM, 0, 0, 0, fn, false \
	}
#define FLD_FN_REQ(k, fn)                       \
	{                                       \
		k, FK_CUSTOM, 0, 0, 0, fn, true \
	}
#define NFIELDS(t) (sizeof(t) / sizeof((t)[0]))

/*
 * Checks that n is a mapping whose keys are all in the table, each at most
 * once, and stores each value into obj through its field.  Missing required
 * keys are errors.  *seen (may be NULL) gets bit i set for each key fields[i]
 * present (tables have at most 64 entries).  Returns false when n is not a
 * mapping; field errors are reported but do not stop the walk.
 */
bool walk_map(struct cctx *c, const struct cnode *n, const char *path, const struct field *fields,
              size_t nfields, void *obj, uint64_t *seen);

/*
 * For mappings keyed by user names (services, versions, flags, ...): checks n
 * is a mapping, each key a valid unique name.  Returns the number of pairs
 * (0 when not a mapping); callers then iterate n->keys / n->items.
 */
size_t walk_named(struct cctx *c, const struct cnode *n, const char *path);

/* A field the caller parses itself after the walk (to control order); accepts anything. */
bool field_later(struct cctx *c, const struct cnode *n, const char *path, void *obj);

/* The index of `key` in a mapping, or -1. */
long map_find(const struct cnode *n, const char *key);
/* The line of key's value in mapping n, or n's own line when absent. */
int key_line(const struct cnode *n, const char *key);

/* --- sections (each file parses its part; cross-references use c->cfg) ------------- */

/* Segments: needs nothing else. */
bool parse_segment(struct cctx *c, const char *name, const struct cnode *n, const char *path,
                   struct config_segment *seg);
/* A flag.  When c->cfg is not NULL, rule segments must be defined in it. */
bool parse_flag(struct cctx *c, const char *name, const struct cnode *n, const char *path,
                struct config_flag *f);
/* `tls:` of a listener or of admin (config_tls.c); only the shape, not the files. */
bool parse_tls(struct cctx *c, const struct cnode *n, const char *path, struct config_tls *t);
/* `tls:` of a version: {verify, ca, sni} (config_tls.c). */
bool parse_upstream_tls(struct cctx *c, const struct cnode *n, const char *path,
                        struct config_upstream_tls *t);
/* A rollout; c->cfg must already hold admin tokens, services and flags. */
bool parse_rollout(struct cctx *c, const char *name, const struct cnode *n, const char *path,
                   struct config_rollout *r);

#endif
