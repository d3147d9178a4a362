/*
 * config.h - canaryd's configuration: YAML (SPEC section 3) -> a validated,
 * immutable model, with every error reported as "file:line: key.path: what".
 *
 * The schema is the spine: everything in SPEC section 3 is parsed and checked
 * here, even where the behaviour lands in later modules, so a config that
 * passes `canaryd --check` is one every module can trust without re-checking.
 *
 * Ownership.  A struct config owns all of its strings, arrays and JSON values;
 * they live until config_free().  Pointers between model objects (a route's
 * service, a target's flag) point inside the same config.  Nothing here is
 * thread-aware: a loaded config is immutable and may be shared read-only.
 *
 * Units.  Durations are uint64 milliseconds.  Percentages are uint32
 * thousandths of a percent, 0..100000 (SPEC section 2: no floats in routing).
 * Sizes are bytes.  Every user-visible object keeps the 1-based source line
 * of its mapping (0 when it came from JSON or a default).
 *
 * The scalar validators and config_flag_from_json() serve the admin API: they
 * report into the same struct config_errors with a field path, so the API can
 * answer 422 naming the field.
 */
#ifndef CONFIG_CONFIG_H
#define CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */

struct config_error {
	char *file;    /* source name given to the loader ("canaryd.yaml", "request") */
	int line;      /* 1-based; 0 when unknown (JSON bodies, file-level errors) */
	char *path;    /* key path: "rollouts.web.steps[3].weight"; "" for the document */
	char *message; /* what is wrong, without file/line/path */
};

/* A growable list of errors.  Zero-initialised (or config_errors_init) is empty. */
struct config_errors {
	struct config_error *v;
	size_t n, cap;
	size_t dropped; /* errors past CONFIG_ERRORS_MAX are counted, not kept */
};

#define CONFIG_ERRORS_MAX 1000

void config_errors_init(struct config_errors *errs);
/* Frees every message; the list is empty and reusable afterwards. */
void config_errors_release(struct config_errors *errs);
/* Number of errors recorded (kept + dropped). */
size_t config_errors_count(const struct config_errors *errs);
/* The i-th kept error, or NULL past the end. */
const struct config_error *config_errors_get(const struct config_errors *errs, size_t i);
/*
 * Appends an error.  file and path may be NULL (stored as "").  Returns 0, or
 * -ENOMEM (the error is then counted as dropped).
 */
int config_errors_add(struct config_errors *errs, const char *file, int line, const char *path,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/*
 * Formats one error as "file:line: path: message" (":line" omitted when 0,
 * "path: " omitted when empty) into buf (always NUL-terminated when n > 0).
 * Returns the length snprintf would have written.
 */
int config_error_format(const struct config_error *e, char *buf, size_t n);
/* Prints every error, one formatted line each, then a "... more" line if any were dropped. */
void config_errors_print(const struct config_errors *errs, FILE *fp);

/* ------------------------------------------------------------------------ */
/* Model                                                                     */

struct config_strlist {
	const char **v;
	size_t n;
};

/* host:port.  host is without brackets for IPv6. */
struct config_addr {
	char host[256];
	uint16_t port;
	int family; /* AF_INET, AF_INET6, or AF_UNSPEC for a hostname (incl. localhost) */
};

enum config_scope {
	CONFIG_SCOPE_READ = 1u << 0,
	CONFIG_SCOPE_FLAGS_WRITE = 1u << 1,
	CONFIG_SCOPE_ROLLOUTS_WRITE = 1u << 2,
	CONFIG_SCOPE_APPROVE = 1u << 3,
	CONFIG_SCOPE_EVALUATE = 1u << 4,
	CONFIG_SCOPE_ADMIN = 1u << 5, /* implies every other scope */
};

struct config_token {
	const char *name;
	const char *secret; /* from `secret`, or `secret_file` with trailing newlines trimmed */
	const char *secret_file; /* NULL unless given */
	unsigned scopes;         /* enum config_scope bits */
	int line;
};

/*
 * `tls:` of a listener or of admin (docs/tls.md).  The files are checked
 * (read, key matches cert) by src/net/tls.c when the contexts are built,
 * which reports into the same errors with these lines.
 */
struct config_tls_cert {
	const char *cert; /* PEM certificate chain; a relative path starts at the config's dir */
	const char *key;  /* PEM private key */
	int cert_line, key_line;
	int line;
};

struct config_tls {
	bool enabled;                  /* the key was given */
	struct config_tls_cert *certs; /* >= 1 when enabled; certs[0] is the default */
	size_t ncerts;
	unsigned min_version;       /* 12 (default) or 13: TLS 1.2 / 1.3 */
	struct config_strlist alpn; /* protocols offered, in order; default http/1.1 */
	int line;
};

/* `tls:` of a version: its endpoints speak TLS (docs/tls.md). */
struct config_upstream_tls {
	bool enabled;    /* the key was given */
	bool verify;     /* default true: chain and name checked */
	const char *ca;  /* PEM CA file; NULL: the system's trust store */
	const char *sni; /* server name sent and verified; NULL: the endpoint host if a name */
	int ca_line;
	int line;
};

struct config_admin {
	struct config_addr listen; /* default 127.0.0.1:9901 */
	struct config_tls tls;     /* `tls:`; .enabled false: plain HTTP */
	struct config_token *tokens;
	size_t ntokens;
	bool public_read;     /* default false */
	bool evaluate_public; /* default false */
	int line;
};

enum config_store_kind {
	CONFIG_STORE_SQLITE,
	CONFIG_STORE_POSTGRES,
};

struct config_store {
	enum config_store_kind kind;
	const char *url;  /* as written: "sqlite:canaryd.db" (default) or "postgres://..." */
	const char *path; /* sqlite: the file path; postgres: the whole URL (a libpq conninfo) */
	int line;
};

/* Where a request value comes from: stickiness, context attributes. */
enum config_keysrc_kind {
	CONFIG_KEY_NONE,
	CONFIG_KEY_HEADER,
	CONFIG_KEY_COOKIE,
	CONFIG_KEY_IP,
	CONFIG_KEY_QUERY, /* context attributes only */
};

struct config_keysrc {
	enum config_keysrc_kind kind;
	const char *name; /* header (lower-cased), cookie or query name; NULL for ip/none */
};

struct config_route {
	const char *host;        /* NULL: any host; may start with "*." */
	const char *path_prefix; /* default "/" */
	const char *service;
	struct config_service *svc; /* resolved */
	int line;
};

struct config_listener {
	const char *name;
	struct config_addr listen;
	struct config_route *routes;
	size_t nroutes;
	struct config_tls tls; /* `tls:`; .enabled false: plain HTTP */
	int line;
};

struct config_fault {
	bool has_delay;
	uint32_t delay_ms;
	uint32_t delay_percent; /* thousandths */
	bool has_abort;
	uint32_t abort_status; /* 100..599 */
	uint32_t abort_percent;
	int line;
};

/*
 * `health:` of a version (docs/proxy.md "Active health checks"): a GET of
 * path on each endpoint every interval; a status in expect_lo..expect_hi
 * within timeout passes.  unhealthy failures in a row take the endpoint out
 * of the pick, healthy passes in a row bring it back (proxy/health.h).
 */
struct config_health {
	bool enabled;                  /* the key was given */
	const char *path;              /* default /healthz; starts with '/' */
	uint64_t interval_ms;          /* default 5s */
	uint64_t timeout_ms;           /* default 1s; < interval */
	uint32_t healthy;              /* default 2; >= 1 */
	uint32_t unhealthy;            /* default 3; >= 1 */
	uint32_t expect_lo, expect_hi; /* default 200-399 */
	int line;
};

struct config_version {
	const char *name;
	struct config_addr *endpoints; /* >= 1 */
	size_t nendpoints;
	struct config_fault fault; /* from services.S.faults.VERSION; zero when none */
	/* `tls:`; .enabled false: plain HTTP to the endpoints */
	struct config_upstream_tls tls;
	struct config_health health; /* `health:`; .enabled false: not probed */
	int line;
};

struct config_context_attr {
	const char *attr;
	struct config_keysrc src;
	int line;
};

enum config_override_match {
	CONFIG_MATCH_HEADER,
	CONFIG_MATCH_COOKIE,
	CONFIG_MATCH_SEGMENT,
};

enum config_override_action {
	CONFIG_OVERRIDE_CANARY,  /* cohort: canary */
	CONFIG_OVERRIDE_STABLE,  /* cohort: stable */
	CONFIG_OVERRIDE_VERSION, /* version: V */
};

struct config_override {
	enum config_override_match match;
	const char *name;  /* header (lower-cased) / cookie name, or the segment name */
	const char *value; /* header / cookie value; NULL for a segment */
	struct config_segment *segment; /* resolved for CONFIG_MATCH_SEGMENT */
	enum config_override_action action;
	const char *version; /* CONFIG_OVERRIDE_VERSION */
	int line;
};

struct config_timeouts {
	uint64_t connect_ms;  /* default 2s */
	uint64_t header_ms;   /* default 10s */
	uint64_t response_ms; /* default 30s */
	uint64_t idle_ms;     /* default 60s */
};

struct config_outlier {
	uint32_t consecutive_5xx;     /* default 5; 0 disables ejection */
	uint64_t base_ejection_ms;    /* default 30s */
	uint32_t max_ejected_percent; /* thousandths, default 50% */
};

#define CONFIG_METHOD_MAX 16
struct config_mirror {
	bool enabled;                  /* the key was given */
	const char *version;           /* NULL: the rollout's canary */
	uint32_t percent;              /* thousandths, default 100% */
	struct config_strlist methods; /* upper-case; default GET HEAD OPTIONS */
	uint64_t body_cap;             /* bytes, default 64 KiB */
	bool compare_body;             /* default false */
	int line;
};

struct config_service {
	const char *name;
	struct config_version *versions;
	size_t nversions;
	const char *stable;
	struct config_keysrc sticky; /* default none */
	bool expose_cohort;          /* default false */
	struct config_context_attr *context;
	size_t ncontext;
	struct config_override *overrides;
	size_t noverrides;
	struct config_timeouts timeouts;
	struct config_outlier outlier;
	struct config_mirror mirror;
	uint64_t drain_ms;         /* default 30s */
	uint32_t max_header_bytes; /* default 32768 */
	int line;
};

enum config_op {
	CONFIG_OP_EQ,
	CONFIG_OP_NEQ,
	CONFIG_OP_IN,
	CONFIG_OP_NOT_IN,
	CONFIG_OP_STARTS_WITH,
	CONFIG_OP_ENDS_WITH,
	CONFIG_OP_CONTAINS,
	CONFIG_OP_MATCHES, /* POSIX extended regex */
	CONFIG_OP_LT,
	CONFIG_OP_LTE,
	CONFIG_OP_GT,
	CONFIG_OP_GTE,
	CONFIG_OP_SEMVER_LT,
	CONFIG_OP_SEMVER_EQ,
	CONFIG_OP_SEMVER_GT,
	CONFIG_OP_BEFORE, /* RFC 3339 */
	CONFIG_OP_AFTER,
};

struct config_condition {
	const char *attr;
	enum config_op op;
	struct config_strlist values; /* >= 1; validated for the op */
	int line;
};

struct config_segment {
	const char *name;
	struct config_condition *conds; /* all must hold */
	size_t nconds;
	int line;
};

struct config_variant {
	const char *name;
	json_t *value; /* owned by the config (one reference) */
	int line;
};

/* A percentage split over variants; the remainder goes to the off variant. */
struct config_split_entry {
	const char *variant;
	size_t index;     /* into the flag's variants */
	uint32_t percent; /* thousandths */
	int line;
};

struct config_split {
	struct config_split_entry *v;
	size_t n;
	uint32_t total; /* <= 100000 */
	int line;
};

struct config_flag_rule {
	const char *segment;
	struct config_segment *seg; /* resolved when the segments are known */
	const char *serve;          /* variant name, or NULL when rollout is used */
	size_t serve_index;
	struct config_split rollout;
	int line;
};

struct config_flag {
	const char *name;
	const char *description;         /* "" when not given */
	bool enabled;                    /* default true */
	struct config_variant *variants; /* default {on: true, off: false} */
	size_t nvariants;
	const char *off_variant; /* default "off" when such a variant exists */
	size_t off_index;
	const char *sticky; /* default "targetingKey" */
	struct config_flag_rule *rules;
	size_t nrules;
	struct config_split rollout; /* default: nothing (everyone gets off_variant) */
	struct config_strlist exclude;
	struct config_strlist include;
	int line;
	void *own; /* private: storage of a flag made by config_flag_from_json */
};

enum config_target_kind {
	CONFIG_TARGET_SERVICE,
	CONFIG_TARGET_FLAG,
};

struct config_target {
	const char *name;
	enum config_target_kind kind;
	const char *service;        /* CONFIG_TARGET_SERVICE */
	const char *canary;         /* version name */
	const char *flag;           /* CONFIG_TARGET_FLAG */
	struct config_service *svc; /* resolved */
	struct config_flag *flg;    /* resolved */
	int line;
};

enum config_step_kind {
	CONFIG_STEP_SET, /* `set` or `weight` */
	CONFIG_STEP_SHADOW,
	CONFIG_STEP_PAUSE,
	CONFIG_STEP_ANALYSIS,
	CONFIG_STEP_APPROVAL,
	CONFIG_STEP_PREVIEW, /* blue-green: only override traffic reaches the canary */
};

struct config_set_entry {
	const char *target;
	size_t index; /* into the rollout's targets */
	uint32_t percent;
	int line;
};

enum config_not_before_kind {
	CONFIG_NOT_BEFORE_NONE,
	CONFIG_NOT_BEFORE_TIME_OF_DAY, /* "HH:MMZ": the next such UTC time */
	CONFIG_NOT_BEFORE_INSTANT,     /* RFC 3339 */
};

struct config_not_before {
	enum config_not_before_kind kind;
	uint32_t minute_of_day; /* 0..1439, UTC */
	int64_t epoch_s;
};

/* "Mon-Fri 06:00-18:00Z": days bit 0 = Monday .. bit 6 = Sunday. */
struct config_window {
	bool set;
	uint8_t days;
	uint16_t start_min, end_min; /* UTC minutes of day; end < start spans midnight */
};

struct config_step {
	enum config_step_kind kind;
	const char *name;              /* option `name:` (unique in the rollout); NULL: none */
	struct config_set_entry *sets; /* CONFIG_STEP_SET */
	size_t nsets;
	uint32_t shadow_percent;         /* CONFIG_STEP_SHADOW */
	uint64_t pause_ms;               /* CONFIG_STEP_PAUSE; 0 = until promoted */
	uint64_t analysis_for_ms;        /* CONFIG_STEP_ANALYSIS; 0 = until decided */
	struct config_strlist approvers; /* CONFIG_STEP_APPROVAL: token names */
	uint64_t for_ms;                 /* option: hold the step this long */
	uint64_t max_wait_ms;            /* option: pause without evidence by then; 0 = default */
	bool time_only;                  /* require_evidence: false (set/weight/shadow) */
	int time_only_line;              /* its line, for the --check warning */
	struct config_not_before not_before;
	struct config_window window;
	int line;
};

enum config_metric {
	CONFIG_METRIC_REQUEST_RATE,
	CONFIG_METRIC_ERROR_RATE,
	CONFIG_METRIC_SUCCESS_RATE,
	CONFIG_METRIC_LATENCY_P50,
	CONFIG_METRIC_LATENCY_P90,
	CONFIG_METRIC_LATENCY_P95,
	CONFIG_METRIC_LATENCY_P99,
	CONFIG_METRIC_LATENCY_MEAN,
	CONFIG_METRIC_SHADOW_MISMATCH_RATE,
	CONFIG_METRIC_SHADOW_ERROR_RATE,
	CONFIG_METRIC_SHADOW_LATENCY_P99,
};

/* The metric's name as written in the config; NULL for an unknown value. */
const char *config_metric_name(enum config_metric m);

enum config_source_kind {
	CONFIG_SOURCE_METRIC,
	CONFIG_SOURCE_QUERY,
	CONFIG_SOURCE_HTTP,
	CONFIG_SOURCE_EXEC,
};

enum config_test_method {
	CONFIG_TEST_NONE,
	CONFIG_TEST_SEQUENTIAL,
	CONFIG_TEST_MANN_WHITNEY,
};

/* test.spending (docs/judge.md); the values match enum judge_spending */
enum config_test_spending {
	CONFIG_SPEND_OBRIEN_FLEMING = 0,
	CONFIG_SPEND_POCOCK = 1,
};

enum config_on_fail {
	CONFIG_ON_FAIL_ROLLBACK,
	CONFIG_ON_FAIL_PAUSE,
	CONFIG_ON_FAIL_ROLLBACK_TO, /* {rollback_to: previous | STEP}: weights back, pause */
};

struct config_bound {
	bool set;
	double value;
};

struct config_check {
	const char *name;
	enum config_source_kind source;
	enum config_metric metric;
	const char *query; /* CONFIG_SOURCE_QUERY (PromQL, {{...}} unexpanded) */
	/* a query check with a test (issue 18): the cohort's requests over the
	 * interval, templated like query (which then gives its errors) */
	const char *requests_query;
	const char *http_url;       /* CONFIG_SOURCE_HTTP */
	const char *http_pointer;   /* JSON pointer, "" = the whole body */
	struct config_strlist exec; /* CONFIG_SOURCE_EXEC argv */
	uint64_t timeout_ms;        /* http/exec/query, default 10s */
	struct config_bound min, max, min_ratio, max_ratio, max_increase, max_decrease;
	uint32_t min_samples; /* default 200 */
	struct {
		enum config_test_method method;
		double confidence; /* in (0, 1) */
		struct config_bound max_increase, max_ratio;
		/* issue 18 (judge): the alpha-spending shape of the group-sequential test
		 * used where the step's number of looks is known (docs/judge.md) */
		enum config_test_spending spending;
	} test;
	uint64_t for_ms;
	enum config_on_fail on_fail; /* default rollback */
	uint64_t review_ms;          /* on_fail: pause only; 0 = wait forever */
	const char *target;          /* the first target named; NULL: all targets */
	size_t target_index;         /* its index */
	uint64_t target_mask;        /* bit t: targets[t] is in the check's set; 0: all */
	/* CONFIG_ON_FAIL_ROLLBACK_TO: the step (index) or, previous, the traffic step before */
	const char *rollback_to; /* as written: "previous" or a step name */
	bool rollback_previous;
	size_t rollback_step;
	int rollback_line;
	bool time_only;     /* require_evidence: false: no step waits for this check */
	int time_only_line; /* its line, for the --check warning */
	int line;
};

enum config_hook_kind {
	CONFIG_HOOK_EXEC,
	CONFIG_HOOK_WEBHOOK,
};

struct config_hook {
	enum config_hook_kind kind;
	struct config_strlist argv; /* CONFIG_HOOK_EXEC */
	const char *url;            /* CONFIG_HOOK_WEBHOOK */
	uint64_t timeout_ms;        /* default 60s */
	int line;
};

enum config_event {
	CONFIG_EVENT_STARTED = 1u << 0,
	CONFIG_EVENT_STEP = 1u << 1,
	CONFIG_EVENT_PAUSED = 1u << 2,
	CONFIG_EVENT_RESUMED = 1u << 3,
	CONFIG_EVENT_APPROVAL_NEEDED = 1u << 4,
	CONFIG_EVENT_APPROVED = 1u << 5,
	CONFIG_EVENT_VERDICT = 1u << 6,
	CONFIG_EVENT_ROLLBACK = 1u << 7,
	CONFIG_EVENT_COMPLETED = 1u << 8,
	CONFIG_EVENT_FAILED = 1u << 9,
	CONFIG_EVENT_ABORTED = 1u << 10,
	/* validate.c: a validation window's end (failed covers inconclusive) */
	CONFIG_EVENT_VALIDATION_PASSED = 1u << 12,
	CONFIG_EVENT_VALIDATION_FAILED = 1u << 13,
	CONFIG_EVENT_ALL =
	    ((1u << 11) - 1) | CONFIG_EVENT_VALIDATION_PASSED | CONFIG_EVENT_VALIDATION_FAILED,
	/* not in ALL: only with `notice` (a scheduled step or approval gate ahead) */
	CONFIG_EVENT_UPCOMING = 1u << 11,
};

struct config_notify {
	const char *webhook;
	unsigned events;    /* enum config_event bits; default all */
	uint64_t notice_ms; /* `notice:` how long before an `upcoming` step; with UPCOMING */
	int line;
};

/*
 * `validate:` post-rollout validation windows (rollout/validate.h,
 * docs/rollout.md "Post-rollout validation"), one after another: window i
 * starts `after` past the completion (after bake) and lasts `for`.
 */
enum config_validate_on_fail {
	CONFIG_VALIDATE_NOTIFY, /* default */
	CONFIG_VALIDATE_ROLLBACK,
};

struct config_validate_window {
	const char *name;
	uint64_t after_ms; /* from completion; default 0; >= the previous window's end */
	uint64_t for_ms;   /* > 0, >= analysis.interval */
	size_t *checks;    /* indexes into analysis.checks: the proxy-metric checks by default */
	size_t nchecks;
	enum config_validate_on_fail on_fail;
	int line;
};

struct config_rollout {
	const char *name;
	struct config_target *targets;
	size_t ntargets;
	struct config_step *steps;
	size_t nsteps;
	struct {
		uint64_t interval_ms; /* default 1m */
		uint64_t max_wait_ms; /* steps' and bake's max_wait; 0 = 4 x for (1h without) */
		struct config_check *checks;
		size_t nchecks;
		int line;
	} analysis;
	struct {
		uint64_t drain_ms; /* default 30s */
		struct config_hook *hooks;
		size_t nhooks;
		uint64_t verify_ms; /* 0 = no verification */
		int line;
	} rollback;
	uint64_t bake_ms; /* default 0 */
	/* `validate:` post-rollout windows (rollout/validate.c) */
	struct config_validate_window *validate;
	size_t nvalidate;
	int validate_line;
	struct config_notify *notify;
	size_t nnotify;
	int line;
};

struct config {
	const char *file; /* the name errors are reported under */
	char *source;     /* the YAML text as loaded, every secret "<redacted>" (evidence) */
	size_t source_len;
	struct config_admin admin;
	struct config_store store;
	uint32_t workers; /* 0 = auto (one per core) */
	/* `io:` the proxy's I/O path for plain TCP (docs/proxy.md); restart to change */
	enum config_io { CONFIG_IO_EPOLL, CONFIG_IO_AUTO, CONFIG_IO_URING } io;
	struct {
		const char *prometheus; /* NULL when not configured */
	} metrics;
	/* `fleet:` fleet mode on a postgres store (fleet/fleet.h, docs/fleet.md) */
	struct {
		uint64_t lease_ms; /* default 3s */
		const char *node;  /* this node's id; NULL: the admin listen address */
	} fleet;
	/* `events:` retention of interval events and verdicts (rollout/retention.h) */
	struct {
		uint64_t full_resolution_ms;  /* default 7d */
		uint64_t summary_interval_ms; /* default 1h */
	} events;
	struct config_listener *listeners;
	size_t nlisteners;
	struct config_service *services;
	size_t nservices;
	struct config_segment *segments;
	size_t nsegments;
	struct config_flag *flags;
	size_t nflags;
	struct config_rollout *rollouts;
	size_t nrollouts;
	void *own; /* private: the allocation arena */
};

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */

/*
 * Reads, parses, expands ${ENV} and validates a YAML config file.  Every
 * problem found is appended to errs (which the caller owns and releases).
 * Returns a new config (free with config_free) when no error was found, NULL
 * otherwise.  Errors are named after `path` as given.  A relative
 * `secret_file` is read relative to the directory of `path`.
 */
struct config *config_load_file(const char *path, struct config_errors *errs);

/*
 * Same as config_load_file for YAML held in memory; `name` is the file name
 * used in messages.  yaml need not be NUL-terminated.  A relative
 * `secret_file` is read relative to the working directory.
 */
struct config *config_load_string(const char *name, const char *yaml, size_t len,
                                  struct config_errors *errs);

/* Frees a config and everything it owns.  NULL is a no-op. */
void config_free(struct config *cfg);

/*
 * One line for `canaryd --check`:
 * "canaryd.yaml: ok: 1 listener, 2 services, 1 segment, 3 flags, 1 rollout".
 * Returns the length snprintf would have written.
 */
int config_summary(const struct config *cfg, char *buf, size_t n);

/*
 * Appends to warns (caller owns) one entry per setting that lets a rollout
 * advance without evidence (docs/rollout.md, Evidence): `require_evidence:
 * false` on a step or check, a rollout without checks, a traffic step no
 * check can judge, an `analysis.max_wait` shorter than a step's `for` (that
 * step would pause as soon as its for ends).  Warnings, not errors: `canaryd --check` prints them and
 * still exits 0.  Returns how many were added.
 */
size_t config_evidence_warnings(const struct config *cfg, struct config_errors *warns);

/* Lookups by name; NULL when absent. */
struct config_service *config_service_find(const struct config *cfg, const char *name);
struct config_version *config_version_find(const struct config_service *svc, const char *name);
/* "v1, v2, v3": svc's version names, for error messages; truncated to len; returns buf. */
const char *config_version_names(const struct config_service *svc, char *buf, size_t len);
struct config_segment *config_segment_find(const struct config *cfg, const char *name);
struct config_flag *config_flag_find(const struct config *cfg, const char *name);
struct config_variant *config_variant_find(const struct config_flag *flag, const char *name);
struct config_token *config_token_find(const struct config *cfg, const char *name);
struct config_listener *config_listener_find(const struct config *cfg, const char *name);
struct config_rollout *config_rollout_find(const struct config *cfg, const char *name);

/* Check k covers target t (its `target:` set, or every target). */
static inline bool config_check_covers(const struct config_check *k, size_t t)
{
	return !k->target_mask || (t < 64 && (k->target_mask >> t & 1));
}

/*
 * Check k is a count check (docs/judge.md "Sources"): a query/http/exec
 * source with a test.  Its source gives an error and a request count per
 * cohort per interval (query: `query` and `requests`; http: an object
 * {"errors", "requests"} at the pointer; exec: "ERRORS REQUESTS" on stdout),
 * and the test judges the error rate on the counts accumulated over the
 * step, as for the built-in error_rate.
 */
static inline bool config_check_counts(const struct config_check *k)
{
	return k->source != CONFIG_SOURCE_METRIC && k->test.method != CONFIG_TEST_NONE;
}

struct config_target *config_target_find(const struct config_rollout *ro, const char *name);

/* ------------------------------------------------------------------------ */
/* Validators shared with the API.  Each returns 0 when valid, -1 otherwise. */

/*
 * "250ms", "30s", "5m", "24h", "14d" (also compounds like "1h30m", and "0")
 * -> milliseconds.
 */
int config_parse_duration(const char *s, uint64_t *ms);

/*
 * A decimal percentage 0..100 with at most 3 decimals ("0.5", "12.345",
 * "100", optional trailing "%") -> thousandths of a percent.
 */
int config_parse_percent(const char *s, uint32_t *thousandths);

/* The same for a JSON number: 0 <= v <= 100 and at most 3 decimals. */
int config_percent_from_double(double v, uint32_t *thousandths);

/*
 * "host:port" with host an IPv4 literal, "[IPv6]", "localhost" or a DNS
 * hostname, port 1..65535.  On failure, when why is not NULL, *why is a
 * static reason ("port must be between 1 and 65535").
 */
int config_parse_addr(const char *s, struct config_addr *out, const char **why);

/* Formats an address as "host:port" or "[v6]:port". */
int config_addr_format(const struct config_addr *a, char *buf, size_t n);

/*
 * Names of services, versions, flags, segments, rollouts, targets, checks:
 * [A-Za-z0-9_-][A-Za-z0-9_.-]*, 1 to 64 bytes.  A name never starts with
 * '.', so "." and ".." (which would be path segments) are never names.
 */
bool config_valid_name(const char *s);
/* What config_valid_name accepts, for error messages. */
#define CONFIG_NAME_RULE "use 1 to 64 of A-Z a-z 0-9 _ . -, not starting with \".\""

/* "64KiB", "1MiB", "512", "2k" (k/K/KiB = 1024) -> bytes. */
int config_parse_size(const char *s, uint64_t *bytes);

/* RFC 3339 date-time ("2024-05-01T06:00:00Z", "...+02:00", fractions) -> epoch seconds. */
int config_parse_rfc3339(const char *s, int64_t *epoch_s);

/* The same, to epoch milliseconds (fractions past the third digit are dropped). */
int config_parse_rfc3339_ms(const char *s, int64_t *epoch_ms);

/* "06:00Z" -> minute of the UTC day. */
int config_parse_time_of_day(const char *s, uint32_t *minute_of_day);

/* "Mon-Fri 06:00-18:00Z", "Sat,Sun 00:00-06:00Z", "06:00-18:00Z" (every day). */
int config_parse_window(const char *s, struct config_window *w);

/* Semantic version "1.2.3", optional "v", pre-release and build suffixes. */
bool config_valid_semver(const char *s);

/* An http:// or https:// URL with a non-empty host. */
bool config_valid_url(const char *s);

/*
 * Copies url into out (n bytes, always NUL-terminated when n > 0, cut when
 * too long) with its secrets hidden, for logs, events and messages: the
 * userinfo's password ("user:<redacted>@"; userinfo without a colon, which
 * may be a token, becomes "<redacted>@"), and the value of any query
 * parameter whose name contains "password", "secret" or "token"
 * (case-insensitive).  Works on any "scheme://..." text; other text is
 * copied as is.  Returns true when something was hidden.
 */
bool config_url_redact(const char *url, char *out, size_t n);

/*
 * Validates a flag definition given as JSON (an object with the keys of a
 * YAML flag: description, enabled, variants, off_variant, sticky, rules,
 * rollout, exclude, include) under the same rules as the YAML loader.
 * `name` is the flag's key (validated too).  When cfg is not NULL, rule
 * segments must exist in it.  Errors go to errs with file = `source` (e.g.
 * "request"), line 0, and a field path relative to the object ("variants.on",
 * "rules[1].serve").  Returns a new flag (free with config_flag_free) when
 * valid, NULL otherwise.  def is only read.
 */
struct config_flag *config_flag_from_json(const char *source, const char *name, const json_t *def,
                                          const struct config *cfg, struct config_errors *errs);

/* Frees a flag made by config_flag_from_json.  NULL is a no-op. */
void config_flag_free(struct config_flag *flag);

/*
 * Validates a segment definition given as JSON (an object with the keys of a
 * YAML segment: {"match": [{"attr", "op", "values"}, ...]}) under the same
 * rules as the YAML loader; `name` is the segment's name (validated too).
 * Errors go to errs like config_flag_from_json's ("match[0].op").  Returns a
 * new segment (free with config_segment_free) when valid, NULL otherwise.
 * The feature-flag stream sends segments in this shape (docs/api.md).
 */
struct config_segment *config_segment_from_json(const char *source, const char *name,
                                                const json_t *def, struct config_errors *errs);

/* Frees a segment made by config_segment_from_json.  NULL is a no-op. */
void config_segment_free(struct config_segment *seg);

/* The op's name as written in the config ("ends_with"); NULL for an unknown value. */
const char *config_op_name(enum config_op op);

#endif
