/*
 * canary.h - libcanary, the C client library of canaryd's feature flags
 * (docs/client.md).
 *
 * A client keeps one HTTP/1.1 connection to canaryd's flag stream
 * (GET /v1/feature-flags/stream, Server-Sent Events) on a background thread,
 * holds the whole ruleset (flags and segments) in memory and evaluates flags
 * locally with the same evaluation core as the server (SPEC 2, 3): the same
 * context gives the same variant and reason as canaryd's OFREP endpoint.
 *
 *   struct canary_options o = {.base_url = "http://127.0.0.1:8081", .token = tok};
 *   struct canary_client *c = canary_client_new(&o);
 *   canary_client_start(c);
 *   struct canary_attr a[] = {{"nodeId", "node-123"}};
 *   struct canary_context ctx = {.targeting_key = "node-123", .attrs = a, .nattrs = 1};
 *   if (canary_eval_bool(c, "dwcp_v3_hde", &ctx, 0, NULL)) ...
 *   canary_client_free(c);
 *
 * Threads.  Evaluation functions may be called from any number of threads at
 * once, also from the change callback, and never block on the network: they
 * read an immutable ruleset that the stream thread swaps atomically (the fast
 * path is one atomic load, no lock, no allocation).  Each evaluating thread
 * keeps a reference to the last ruleset it used until its next evaluation on
 * that client or its exit.  canary_client_start/stop/free must not race with
 * each other, and no evaluation may run during or after canary_client_free.
 *
 * Server away.  When the stream is lost the client keeps evaluating the last
 * ruleset it had and says so: canary_client_status() reports connected = 0
 * and stale_since_ms.  It reconnects with exponential backoff and jitter,
 * sending Last-Event-ID so the server resends only the changes it missed.
 *
 * Errors.  Functions returning int give 0 on success and a negative errno
 * value otherwise.  Evaluations never fail as calls: they report an
 * OpenFeature reason and error code in struct canary_result.
 */
#ifndef CANARY_CANARY_H
#define CANARY_CANARY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CANARY_API __attribute__((visibility("default")))
#else
#define CANARY_API
#endif

#define CANARY_VERSION "0.1.0"

/* Longest variant name (canaryd names are [A-Za-z0-9_.-]{1,64}) plus the NUL. */
#define CANARY_VARIANT_MAX 65

/* OpenFeature resolution reasons (the same values as canaryd's OFREP answers). */
enum canary_reason {
	CANARY_REASON_STATIC,          /* the flag cannot depend on the context */
	CANARY_REASON_TARGETING_MATCH, /* an include/exclude list or a rule decided */
	CANARY_REASON_SPLIT,           /* a percentage split decided */
	CANARY_REASON_DISABLED,        /* the flag's kill switch is off */
	CANARY_REASON_DEFAULT,         /* targeting exists but none of it applied */
	CANARY_REASON_ERROR,           /* see the error code */
};

/* OpenFeature error codes. */
enum canary_error {
	CANARY_ERROR_NONE,
	CANARY_ERROR_TARGETING_KEY_MISSING, /* a split needs the sticky attribute */
	CANARY_ERROR_FLAG_NOT_FOUND,
	CANARY_ERROR_INVALID_CONTEXT, /* a NULL key, or an attribute without a name */
	CANARY_ERROR_PARSE_ERROR,     /* not produced by the client; kept for OFREP parity */
	CANARY_ERROR_GENERAL,
	CANARY_ERROR_TYPE_MISMATCH,      /* typed call on a value of another JSON type */
	CANARY_ERROR_PROVIDER_NOT_READY, /* no ruleset yet (not received, no cache) */
};

/* "STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "DEFAULT", "ERROR"; "UNKNOWN". */
CANARY_API const char *canary_reason_name(enum canary_reason r);

/* "TARGETING_KEY_MISSING", ... "PROVIDER_NOT_READY"; NULL for NONE; "GENERAL" out of range. */
CANARY_API const char *canary_error_name(enum canary_error e);

/*
 * An evaluation context.  Values are strings: give numbers in decimal
 * ("42", "2.5") and booleans as "true" / "false", which is how canaryd reads
 * the same attributes from a JSON context, so both evaluate alike.  A NULL
 * value counts as absent.  "targetingKey" is targeting_key when that is not
 * NULL, else looked up in attrs like any other attribute.  Nothing is copied:
 * the strings need to live for the duration of the call only.
 */
struct canary_attr {
	const char *name;
	const char *value;
};

struct canary_context {
	const char *targeting_key; /* NULL: none (or an "targetingKey" entry in attrs) */
	const struct canary_attr *attrs;
	size_t nattrs;
};

enum canary_change_kind {
	CANARY_CHANGE_RULESET, /* the whole ruleset was replaced (first one, reload, refetch) */
	CANARY_CHANGE_FLAG,    /* one flag was created, changed or deleted */
};

struct canary_change {
	enum canary_change_kind kind;
	uint64_t revision; /* the server's revision the client now evaluates */
	const char *key;   /* CANARY_CHANGE_FLAG: the flag's key; else NULL */
	int deleted;       /* CANARY_CHANGE_FLAG: the flag no longer exists */
	int from_cache;    /* the ruleset came from options.cache_path, not the server */
};

/*
 * Called on the stream thread after a change is in effect (an evaluation made
 * from the callback already sees it).  ch and its strings are valid during
 * the call only.  Keep it short: the stream waits for it.
 */
typedef void (*canary_change_fn)(void *user, const struct canary_change *ch);

struct canary_options {
	/* canaryd's admin listener, "http://127.0.0.1:8081" or https://...; required.
	 * The client connects to BASE/v1/feature-flags/stream. */
	const char *base_url;
	const char *token;           /* bearer token with scope read; NULL: none sent */
	canary_change_fn on_change;  /* may be NULL */
	void *user;                  /* passed to on_change */
	unsigned backoff_min_ms;     /* first reconnect delay; 0: 100 */
	unsigned backoff_max_ms;     /* delays double up to this; 0: 30000 */
	unsigned connect_timeout_ms; /* 0: 5000 */
	/* A stream silent for this long is considered dead and reconnected;
	 * canaryd sends a heartbeat every 15 s.  0: 45000. */
	unsigned idle_timeout_ms;
	/* Where to keep the last-known ruleset (written atomically on every
	 * change, read by canary_client_new), so a process that starts while
	 * canaryd is away can evaluate.  NULL: no cache. */
	const char *cache_path;
	size_t max_event_bytes; /* largest SSE event accepted; 0: 8 MiB */
};

struct canary_client;

/*
 * Creates a client (not yet connected; see canary_client_start).  The
 * options are copied.  When cache_path names a readable ruleset cache, the
 * client evaluates with it right away (stale since it was loaded, and the
 * stream resumes from its revision); an unreadable or invalid cache is not
 * an error, the status's last_error says what was wrong.  Returns NULL with
 * errno EINVAL (no base_url, or not http:// or https://; backoff_min_ms >
 * backoff_max_ms) or ENOMEM.
 */
CANARY_API struct canary_client *canary_client_new(const struct canary_options *opts);

/*
 * Starts the background thread that connects and keeps the ruleset current.
 * Returns 0, -EALREADY when started, or -errno when the thread cannot be
 * created.  Does not wait for the connection: see canary_client_status.
 */
CANARY_API int canary_client_start(struct canary_client *c);

/*
 * Stops the background thread and closes the connection (waits for both,
 * at most a few milliseconds plus a running change callback).  The client
 * keeps evaluating its last ruleset, reported stale; it may be started
 * again.  No-op when not started.
 */
CANARY_API void canary_client_stop(struct canary_client *c);

/* Stops the client if needed and frees it.  NULL is a no-op. */
CANARY_API void canary_client_free(struct canary_client *c);

struct canary_status {
	int connected;          /* the stream is up (answered 200) */
	int ready;              /* a ruleset is loaded: evaluations can resolve */
	uint64_t revision;      /* revision of the ruleset evaluated; 0 when not ready */
	int64_t stale_since_ms; /* Unix time (ms) since which the ruleset may be out
	                           of date (stream lost, or only a cache); 0 when connected */
	uint64_t connects;      /* successful stream connections so far */
	uint64_t refetches;     /* full rulesets requested because a change could not apply */
	char last_error[256];   /* the most recent problem, for humans; "" when none yet */
};

/* Fills *st with a consistent copy of the client's status. */
CANARY_API void canary_client_status(struct canary_client *c, struct canary_status *st);

struct canary_result {
	enum canary_reason reason;
	enum canary_error error;          /* NONE exactly when reason != ERROR */
	char variant[CANARY_VARIANT_MAX]; /* "" when no variant was resolved */
	uint64_t revision;                /* revision of the ruleset that answered */
	size_t value_len;                 /* length of the value's JSON text (canary_eval) */
};

/*
 * Evaluates flag key for ctx (NULL: empty context).  The variant's value is
 * written as compact JSON text ("true", "\"blue\"", "{\"a\":1}") into
 * value[0..value_size) NUL-terminated, truncated when it does not fit
 * (res->value_len is the full length, as with snprintf); value may be NULL
 * when value_size is 0.  Returns 0, or -1 when res->error is set; for
 * TARGETING_KEY_MISSING the off variant and its value are still given (what
 * the server would serve), for every other error no variant and an empty
 * value.  Thread-safe, no allocation (except inside glibc's regexec for a
 * "matches" condition).
 */
CANARY_API int canary_eval(struct canary_client *c, const char *key,
                           const struct canary_context *ctx, struct canary_result *res, char *value,
                           size_t value_size);

/*
 * Typed evaluations, OpenFeature style: the variant's value when the flag
 * resolved to a value of that type, else def (on any error, and with
 * TYPE_MISMATCH when the value has another type).  res may be NULL.
 */
CANARY_API int canary_eval_bool(struct canary_client *c, const char *key,
                                const struct canary_context *ctx, int def,
                                struct canary_result *res);
CANARY_API double canary_eval_double(struct canary_client *c, const char *key,
                                     const struct canary_context *ctx, double def,
                                     struct canary_result *res);

/*
 * The string value (or def) copied into buf[0..size), NUL-terminated and
 * truncated to fit; returns the full length, as snprintf does.  def NULL is "".
 */
CANARY_API size_t canary_eval_string(struct canary_client *c, const char *key,
                                     const struct canary_context *ctx, const char *def, char *buf,
                                     size_t size, struct canary_result *res);

#ifdef __cplusplus
}
#endif

#endif
