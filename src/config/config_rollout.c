/*
 * config_rollout.c - rollouts: targets, steps, analysis checks, rollback,
 * bake and notifications.  Admin tokens, services and flags are parsed
 * before this runs, so every reference is checked against c->cfg here.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "config/config_internal.h"

#define BIT(i) ((uint64_t)1 << (i))

/* --- targets ------------------------------------------------------------------- */

struct target_ref {
	const char *service, *canary, *flag;
};

static const struct field target_fields[] = {
    FLD("service", FK_NAME, struct target_ref, service),
    FLD("canary", FK_NAME, struct target_ref, canary),
    FLD("flag", FK_NAME, struct target_ref, flag),
};

/* {service: S, canary: V} or {flag: F}, resolved against the config. */
static bool parse_target(struct cctx *c, const struct cnode *n, const char *path,
                         struct config_target *t)
{
	struct target_ref ref = {0};
	char sub[PATH_MAX_LEN];
	uint64_t seen;

	t->line = n->line;
	if (!walk_map(c, n, path, target_fields, NFIELDS(target_fields), &ref, &seen))
		return false;
	if (seen & BIT(2)) {
		t->kind = CONFIG_TARGET_FLAG;
		t->flag = ref.flag;
		if (seen & (BIT(0) | BIT(1))) {
			cerr(c, n->line, path, "a target is either {service, canary} or {flag}");
			return false;
		}
		if (!ref.flag)
			return false;
		t->flg = config_flag_find(c->cfg, ref.flag);
		if (!t->flg) {
			path_key(sub, path, "flag");
			cerr(c, key_line(n, "flag"), sub, "flag \"%s\" is not defined", ref.flag);
			return false;
		}
		return true;
	}
	t->kind = CONFIG_TARGET_SERVICE;
	t->service = ref.service;
	t->canary = ref.canary;
	if ((seen & (BIT(0) | BIT(1))) != (BIT(0) | BIT(1))) {
		cerr(c, n->line, path,
		     "missing required key \"%s\" (a target is {service, canary} or {flag})",
		     seen & BIT(0) ? "canary" : "service");
		return false;
	}
	if (!ref.service || !ref.canary)
		return false;
	t->svc = config_service_find(c->cfg, ref.service);
	if (!t->svc) {
		path_key(sub, path, "service");
		cerr(c, key_line(n, "service"), sub, "service \"%s\" is not defined", ref.service);
		return false;
	}
	path_key(sub, path, "canary");
	if (t->svc->versions && !config_version_find(t->svc, ref.canary)) {
		char names[256];

		cerr(c, key_line(n, "canary"), sub,
		     "version \"%s\" is not defined in service \"%s\" (defined: %s)", ref.canary,
		     ref.service, config_version_names(t->svc, names, sizeof(names)));
		return false;
	}
	if (t->svc->stable && strcmp(t->svc->stable, ref.canary) == 0) {
		cerr(c, key_line(n, "canary"), sub,
		     "\"%s\" is the stable version of service \"%s\"", ref.canary, ref.service);
		return false;
	}
	return true;
}

static bool ro_targets(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_rollout *r = obj;
	char sub[PATH_MAX_LEN];
	size_t cnt = walk_named(c, n, path);

	if (n->type != CN_MAP)
		return false;
	if (cnt == 0) {
		cerr(c, n->line, path, "at least one target is required");
		return false;
	}
	r->targets = cfg_arena_alloc(c->out, cnt * sizeof(*r->targets));
	if (!r->targets)
		return false;
	r->ntargets = cnt;
	if (cnt > 64) {
		cerr(c, n->line, path, "at most 64 targets per rollout (%zu given)", cnt);
		return false;
	}
	for (size_t i = 0; i < cnt; i++) {
		path_key(sub, path, n->keys[i]->text);
		r->targets[i].name = cfg_arena_strdup(c->out, n->keys[i]->text);
		if (!parse_target(c, n->items[i], sub, &r->targets[i]))
			continue;
		for (size_t j = 0; j < i; j++) {
			const struct config_target *a = &r->targets[i], *b = &r->targets[j];
			const char *an = a->kind == CONFIG_TARGET_FLAG ? a->flag : a->service;
			const char *bn = b->kind == CONFIG_TARGET_FLAG ? b->flag : b->service;

			if (a->kind == b->kind && an && bn && strcmp(an, bn) == 0)
				cerr(c, a->line, sub, "%s \"%s\" is already target \"%s\"",
				     a->kind == CONFIG_TARGET_FLAG ? "flag" : "service", an,
				     b->name);
		}
	}
	return true;
}

/* Shorthand `target: {service: web, canary: v2}`: one target named after its service/flag. */
static bool ro_target(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_rollout *r = obj;

	r->targets = cfg_arena_alloc(c->out, sizeof(*r->targets));
	if (!r->targets)
		return false;
	r->ntargets = 1;
	parse_target(c, n, path, r->targets);
	r->targets[0].name =
	    r->targets[0].kind == CONFIG_TARGET_FLAG ? r->targets[0].flag : r->targets[0].service;
	if (!r->targets[0].name)
		r->targets[0].name = "";
	return true;
}

/* --- steps ------------------------------------------------------------------------ */

/* The rollout being parsed, for steps that name targets. */
struct step_ctx {
	struct config_step s;
	const struct config_rollout *r;
};

static bool step_set(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct step_ctx *sc = obj;
	struct config_step *s = &sc->s;
	char sub[PATH_MAX_LEN];
	size_t cnt = walk_named(c, n, path);

	s->kind = CONFIG_STEP_SET;
	if (n->type != CN_MAP)
		return false;
	if (cnt == 0) {
		cerr(c, n->line, path, "at least one target is required");
		return false;
	}
	s->sets = cfg_arena_alloc(c->out, cnt * sizeof(*s->sets));
	if (!s->sets)
		return false;
	s->nsets = cnt;
	for (size_t i = 0; i < cnt; i++) {
		struct config_set_entry *e = &s->sets[i];
		const struct config_target *t = config_target_find(sc->r, n->keys[i]->text);

		path_key(sub, path, n->keys[i]->text);
		e->target = cfg_arena_strdup(c->out, n->keys[i]->text);
		e->line = n->keys[i]->line;
		if (!t && sc->r->targets)
			cerr(c, e->line, sub, "target \"%s\" is not defined", e->target);
		else if (t)
			e->index = (size_t)(t - sc->r->targets);
		get_percent(c, n->items[i], sub, &e->percent);
	}
	return true;
}

static bool step_weight(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct step_ctx *sc = obj;
	struct config_step *s = &sc->s;

	s->kind = CONFIG_STEP_SET;
	s->sets = cfg_arena_alloc(c->out, sizeof(*s->sets));
	if (!s->sets)
		return false;
	s->nsets = 1;
	s->sets[0].line = n->line;
	if (!get_percent(c, n, path, &s->sets[0].percent))
		return false;
	if (sc->r->ntargets != 1) {
		if (sc->r->targets)
			cerr(c, n->line, path,
			     "weight needs a single target; with %zu targets use set: {TARGET: "
			     "PERCENT}",
			     sc->r->ntargets);
		return false;
	}
	s->sets[0].target = sc->r->targets[0].name;
	return true;
}

static bool step_shadow(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct step_ctx *sc = obj;
	bool svc = false;

	sc->s.kind = CONFIG_STEP_SHADOW;
	if (!get_percent(c, n, path, &sc->s.shadow_percent))
		return false;
	for (size_t i = 0; i < sc->r->ntargets; i++)
		svc |= sc->r->targets[i].kind == CONFIG_TARGET_SERVICE;
	if (!svc && sc->r->targets) {
		cerr(c, n->line, path, "shadow needs a service target");
		return false;
	}
	return true;
}

static const struct field pause_fields[] = {
    FLD("duration", FK_DURATION, struct config_step, pause_ms),
};

/* pause: {} | pause: 5m | pause: {duration: 5m} */
static bool step_pause(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct step_ctx *sc = obj;

	sc->s.kind = CONFIG_STEP_PAUSE;
	if (n->type == CN_NULL)
		return true;
	if (n->type == CN_SCALAR)
		return get_duration(c, n, path, &sc->s.pause_ms);
	return walk_map(c, n, path, pause_fields, NFIELDS(pause_fields), &sc->s, NULL);
}

static const struct field analysis_step_fields[] = {
    FLD("for", FK_DURATION, struct config_step, analysis_for_ms),
};

static bool step_analysis(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct step_ctx *sc = obj;

	sc->s.kind = CONFIG_STEP_ANALYSIS;
	if (n->type == CN_NULL)
		return true;
	return walk_map(c, n, path, analysis_step_fields, NFIELDS(analysis_step_fields), &sc->s,
	                NULL);
}

static bool approval_required(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_step *s = obj;
	char sub[PATH_MAX_LEN];

	if (!get_strlist(c, n, path, true, &s->approvers))
		return false;
	if (s->approvers.n == 0) {
		cerr(c, n->line, path, "at least one approver is required");
		return false;
	}
	for (size_t i = 0; i < s->approvers.n; i++) {
		const struct config_token *t = config_token_find(c->cfg, s->approvers.v[i]);
		int line = n->type == CN_SEQ ? n->items[i]->line : n->line;

		if (n->type == CN_SEQ)
			path_idx(sub, path, i);
		else
			snprintf(sub, sizeof(sub), "%s", path);
		if (!t)
			cerr(c, line, sub, "token \"%s\" is not defined in admin.tokens",
			     s->approvers.v[i]);
		else if (!(t->scopes & (CONFIG_SCOPE_APPROVE | CONFIG_SCOPE_ADMIN)))
			cerr(c, line, sub, "token \"%s\" cannot approve (needs the approve scope)",
			     s->approvers.v[i]);
		for (size_t j = 0; j < i; j++)
			if (strcmp(s->approvers.v[i], s->approvers.v[j]) == 0)
				cerr(c, line, sub, "\"%s\" is listed twice", s->approvers.v[i]);
	}
	return true;
}

static const struct field approval_fields[] = {
    FLD_FN_REQ("required", approval_required),
};

static bool step_approval(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct step_ctx *sc = obj;

	sc->s.kind = CONFIG_STEP_APPROVAL;
	return walk_map(c, n, path, approval_fields, NFIELDS(approval_fields), &sc->s, NULL);
}

static bool step_not_before(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_not_before *nb = &((struct step_ctx *)obj)->s.not_before;
	const char *t = get_text(c, n, path);

	if (!t)
		return false;
	if (config_parse_time_of_day(t, &nb->minute_of_day) == 0) {
		nb->kind = CONFIG_NOT_BEFORE_TIME_OF_DAY;
	} else if (config_parse_rfc3339(t, &nb->epoch_s) == 0) {
		nb->kind = CONFIG_NOT_BEFORE_INSTANT;
	} else {
		cerr(c, n->line, path, "expected \"HH:MMZ\" or an RFC 3339 time, got \"%.60s\"", t);
		return false;
	}
	return true;
}

static bool step_window(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_window *w = &((struct step_ctx *)obj)->s.window;
	const char *t = get_text(c, n, path);

	if (!t)
		return false;
	if (config_parse_window(t, w) != 0) {
		cerr(c, n->line, path,
		     "expected a window like \"Mon-Fri 06:00-18:00Z\", got \"%.60s\"", t);
		return false;
	}
	return true;
}

/* require_evidence: false opts a step out of evidence gating (a --check warning). */
static bool step_require_evidence(struct cctx *c, const struct cnode *n, const char *path,
                                  void *obj)
{
	struct config_step *s = &((struct step_ctx *)obj)->s;
	bool v;

	if (!get_bool(c, n, path, &v))
		return false;
	s->time_only = !v;
	s->time_only_line = n->line;
	return true;
}

/*
 * preview: {} (blue-green): only override traffic reaches the canary, so
 * every service target needs an override that routes to cohort canary.
 */
static bool step_preview(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct step_ctx *sc = obj;
	bool svc = false;

	sc->s.kind = CONFIG_STEP_PREVIEW;
	if (n->type != CN_NULL && !walk_map(c, n, path, NULL, 0, &sc->s, NULL))
		return false;
	for (size_t i = 0; i < sc->r->ntargets; i++) {
		const struct config_target *t = &sc->r->targets[i];
		bool routed = false;

		if (t->kind != CONFIG_TARGET_SERVICE || !t->svc)
			continue;
		svc = true;
		for (size_t o = 0; o < t->svc->noverrides; o++)
			routed = routed || t->svc->overrides[o].action == CONFIG_OVERRIDE_CANARY ||
			         (t->svc->overrides[o].action == CONFIG_OVERRIDE_VERSION &&
			          t->svc->overrides[o].version &&
			          strcmp(t->svc->overrides[o].version, t->canary) == 0);
		if (!routed) {
			cerr(c, n->line, path,
			     "a preview step needs an override routing to the canary, and service "
			     "\"%s\" (target \"%s\") has none (services.%s.overrides: "
			     "[{match: ..., cohort: canary}])",
			     t->service, t->name, t->service);
			return false;
		}
	}
	if (!svc && sc->r->targets) {
		cerr(c, n->line, path, "preview needs a service target");
		return false;
	}
	return true;
}

/* The first seven are the step kinds: exactly one of them per step. */
static const struct field step_fields[] = {
    FLD_FN("set", step_set),
    FLD_FN("weight", step_weight),
    FLD_FN("shadow", step_shadow),
    FLD_FN("pause", step_pause),
    FLD_FN("analysis", step_analysis),
    FLD_FN("approval", step_approval),
    FLD_FN("preview", step_preview),
    FLD("for", FK_DURATION, struct step_ctx, s.for_ms),
    FLD_FN("not_before", step_not_before),
    FLD_FN("window", step_window),
    FLD("max_wait", FK_DURATION, struct step_ctx, s.max_wait_ms),
    FLD_FN("require_evidence", step_require_evidence),
    FLD("name", FK_NAME, struct step_ctx, s.name),
};
#define STEP_KINDS         (BIT(7) - 1)
#define STEP_TRAFFIC       (BIT(0) | BIT(1) | BIT(2) | BIT(6)) /* set, weight, shadow, preview */
#define STEP_FOR           BIT(7)
#define STEP_MAX_WAIT      BIT(10)
#define STEP_EVIDENCE_OPTS (BIT(10) | BIT(11)) /* max_wait, require_evidence */

static void parse_steps(struct cctx *c, const struct cnode *n, const char *path,
                        struct config_rollout *r)
{
	char sub[PATH_MAX_LEN], fp[PATH_MAX_LEN];

	if (!want_seq(c, n, path))
		return;
	if (n->n == 0) {
		cerr(c, n->line, path, "at least one step is required");
		return;
	}
	r->steps = cfg_arena_alloc(c->out, n->n * sizeof(*r->steps));
	if (!r->steps)
		return;
	r->nsteps = n->n;
	for (size_t i = 0; i < n->n; i++) {
		struct step_ctx sc = {.r = r};
		const struct cnode *sn = n->items[i];
		uint64_t seen, kinds;

		sc.s.line = sn->line;
		path_idx(sub, path, i);
		if (walk_map(c, sn, sub, step_fields, NFIELDS(step_fields), &sc, &seen)) {
			kinds = seen & STEP_KINDS;
			if (kinds == 0)
				cerr(c, sn->line, sub,
				     "expected one of set, weight, shadow, pause, analysis, "
				     "approval or preview");
			else if (kinds & (kinds - 1))
				cerr(
				    c, sn->line, sub,
				    "only one of set, weight, shadow, pause, analysis, approval or "
				    "preview per step");
			else if ((seen & STEP_FOR) && !(kinds & STEP_TRAFFIC)) {
				path_key(fp, sub, "for");
				cerr(c, key_line(sn, "for"), fp,
				     "only set, weight, shadow and preview steps take \"for\"%s",
				     kinds & BIT(3)   ? " (use pause: DURATION)"
				     : kinds & BIT(4) ? " (use analysis: {for: DURATION})"
				                      : "");
			}
			if ((seen & STEP_EVIDENCE_OPTS) && !(kinds & STEP_TRAFFIC)) {
				const char *k =
				    seen & STEP_MAX_WAIT ? "max_wait" : "require_evidence";

				path_key(fp, sub, k);
				cerr(c, key_line(sn, k), fp,
				     "only set, weight, shadow and preview steps take \"%s\"%s", k,
				     kinds & BIT(4) ? " (an analysis step pauses when its for ends)"
				                    : "");
			} else if ((seen & STEP_MAX_WAIT) && sc.s.max_wait_ms < sc.s.for_ms) {
				path_key(fp, sub, "max_wait");
				cerr(c, key_line(sn, "max_wait"), fp,
				     "must be at least the step's for (%" PRIu64 " ms)",
				     sc.s.for_ms);
			}
			if ((kinds & BIT(4)) && r->analysis.line == 0) {
				path_key(fp, sub, "analysis");
				cerr(c, key_line(sn, "analysis"), fp,
				     "an analysis step needs analysis.checks");
			}
		}
		r->steps[i] = sc.s;
		for (size_t j = 0; sc.s.name && j < i; j++) {
			if (!r->steps[j].name || strcmp(r->steps[j].name, sc.s.name) != 0)
				continue;
			path_key(fp, sub, "name");
			cerr(c, key_line(sn, "name"), fp,
			     "duplicate step name \"%s\" (also steps[%zu])", sc.s.name, j);
			break;
		}
		if (sc.s.name && strcmp(sc.s.name, "previous") == 0) {
			path_key(fp, sub, "name");
			cerr(c, key_line(sn, "name"), fp,
			     "\"previous\" is reserved (on_fail: {rollback_to: previous})");
		}
	}
}

/* --- analysis ------------------------------------------------------------------------ */

static bool check_metric(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_check *k = obj;
	const char *t = get_text(c, n, path);

	if (!t)
		return false;
	for (int m = 0; config_metric_name((enum config_metric)m); m++) {
		if (strcmp(t, config_metric_name((enum config_metric)m)) == 0) {
			k->metric = (enum config_metric)m;
			k->source = CONFIG_SOURCE_METRIC;
			return true;
		}
	}
	cerr(c, n->line, path,
	     "unknown metric \"%.60s\" (request_rate, error_rate, success_rate, latency_p50, "
	     "latency_p90, latency_p95, latency_p99, latency_mean, shadow_mismatch_rate, "
	     "shadow_error_rate, shadow_latency_p99)",
	     t);
	return false;
}

static bool check_query(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_check *k = obj;

	k->source = CONFIG_SOURCE_QUERY;
	if (!get_str(c, n, path, &k->query))
		return false;
	if (!*k->query) {
		cerr(c, n->line, path, "the query is empty");
		return false;
	}
	if (!c->cfg->metrics.prometheus) {
		cerr(c, n->line, path, "query checks need metrics.prometheus");
		return false;
	}
	return true;
}

/* requests: (issue 18): a count check's second query, the cohort's requests */
static bool check_requests(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_check *k = obj;

	if (!get_str(c, n, path, &k->requests_query))
		return false;
	if (!*k->requests_query) {
		cerr(c, n->line, path, "the query is empty");
		return false;
	}
	return true;
}

static bool http_pointer(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_check *k = obj;

	if (!get_str(c, n, path, &k->http_pointer))
		return false;
	if (*k->http_pointer && *k->http_pointer != '/') {
		cerr(c, n->line, path, "a JSON pointer is empty or starts with \"/\"");
		return false;
	}
	return true;
}

static const struct field http_fields[] = {
    FLD_REQ("url", FK_URL, struct config_check, http_url),
    FLD_FN("pointer", http_pointer),
};

static bool check_http(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_check *k = obj;

	k->source = CONFIG_SOURCE_HTTP;
	k->http_pointer = "";
	return walk_map(c, n, path, http_fields, NFIELDS(http_fields), k, NULL);
}

static bool parse_argv(struct cctx *c, const struct cnode *n, const char *path,
                       struct config_strlist *argv)
{
	if (!want_seq(c, n, path) || !get_strlist(c, n, path, false, argv))
		return false;
	if (argv->n == 0 || !*argv->v[0]) {
		cerr(c, n->line, path, "expected a command: [program, args...]");
		return false;
	}
	return true;
}

static bool check_exec(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_check *k = obj;

	k->source = CONFIG_SOURCE_EXEC;
	return parse_argv(c, n, path, &k->exec);
}

static bool test_method(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_check *k = obj;
	const char *t = get_text(c, n, path);

	if (!t)
		return false;
	if (strcmp(t, "sequential") == 0) {
		k->test.method = CONFIG_TEST_SEQUENTIAL;
	} else if (strcmp(t, "mann-whitney") == 0) {
		k->test.method = CONFIG_TEST_MANN_WHITNEY;
	} else {
		cerr(c, n->line, path, "expected sequential or mann-whitney, got \"%.60s\"", t);
		return false;
	}
	return true;
}

static bool test_confidence(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_check *k = obj;

	if (!get_double(c, n, path, &k->test.confidence))
		return false;
	if (!(k->test.confidence > 0 && k->test.confidence < 1)) {
		cerr(c, n->line, path, "must be between 0 and 1 (exclusive), like 0.99");
		return false;
	}
	return true;
}

/* test.spending (issue 18, judge): the group-sequential test's spending shape */
static bool test_spending(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_check *k = obj;
	const char *t = get_text(c, n, path);

	if (!t)
		return false;
	if (strcmp(t, "obrien-fleming") == 0) {
		k->test.spending = CONFIG_SPEND_OBRIEN_FLEMING;
	} else if (strcmp(t, "pocock") == 0) {
		k->test.spending = CONFIG_SPEND_POCOCK;
	} else {
		cerr(c, n->line, path, "expected obrien-fleming or pocock, got \"%.60s\"", t);
		return false;
	}
	return true;
}

static const struct field test_fields[] = {
    FLD_FN_REQ("method", test_method),
    FLD_FN("confidence", test_confidence),
    FLD_FN("spending", test_spending),
    FLD("max_increase", FK_NUM, struct config_check, test.max_increase),
    FLD("max_ratio", FK_NUM, struct config_check, test.max_ratio),
};

static bool check_test(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_check *k = obj;

	k->test.confidence = 0.95;
	return walk_map(c, n, path, test_fields, NFIELDS(test_fields), k, NULL);
}

static const struct field on_fail_fields[] = {
    FLD_REQ("rollback_to", FK_NAME, struct config_check, rollback_to),
};

/*
 * rollback | pause | {rollback_to: previous | STEP_NAME}; the step is
 * resolved once the steps are parsed (resolve_rollback_to()).
 */
static bool check_on_fail(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_check *k = obj;
	const char *t;

	if (n->type == CN_MAP) {
		k->on_fail = CONFIG_ON_FAIL_ROLLBACK_TO;
		k->rollback_line = key_line(n, "rollback_to");
		return walk_map(c, n, path, on_fail_fields, NFIELDS(on_fail_fields), k, NULL);
	}
	t = get_text(c, n, path);
	if (!t)
		return false;
	if (strcmp(t, "rollback") == 0) {
		k->on_fail = CONFIG_ON_FAIL_ROLLBACK;
	} else if (strcmp(t, "pause") == 0) {
		k->on_fail = CONFIG_ON_FAIL_PAUSE;
	} else {
		cerr(c, n->line, path,
		     "expected rollback, pause or {rollback_to: previous | STEP_NAME}, got "
		     "\"%.60s\"",
		     t);
		return false;
	}
	return true;
}

/* target: NAME | [NAME, ...]: the names are resolved by check_semantics(). */
static bool check_target(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_check *k = obj;
	struct config_strlist l = {0};

	if (!get_strlist(c, n, path, true, &l))
		return false;
	if (l.n == 0) {
		cerr(c, n->line, path, "at least one target is required (omit target: for all)");
		return false;
	}
	k->target = l.v[0];
	return true;
}

/* require_evidence: false: steps do not wait for this check (a --check warning). */
static bool check_require_evidence(struct cctx *c, const struct cnode *n, const char *path,
                                   void *obj)
{
	struct config_check *k = obj;
	bool v;

	if (!get_bool(c, n, path, &v))
		return false;
	k->time_only = !v;
	k->time_only_line = n->line;
	return true;
}

/* Bits 1..4 are the sources and 6..11 the bounds; the code below relies on this order. */
static const struct field check_fields[] = {
    FLD_REQ("name", FK_NAME, struct config_check, name),
    FLD_FN("metric", check_metric),
    FLD_FN("query", check_query),
    FLD_FN("http", check_http),
    FLD_FN("exec", check_exec),
    FLD("timeout", FK_DURATION, struct config_check, timeout_ms),
    FLD("min", FK_NUM, struct config_check, min),
    FLD("max", FK_NUM, struct config_check, max),
    FLD("min_ratio", FK_NUM, struct config_check, min_ratio),
    FLD("max_ratio", FK_NUM, struct config_check, max_ratio),
    FLD("max_increase", FK_NUM, struct config_check, max_increase),
    FLD("max_decrease", FK_NUM, struct config_check, max_decrease),
    FLD_FN("test", check_test),
    FLD_RANGE("min_samples", FK_U32, struct config_check, min_samples, 0, 1000000000),
    FLD("for", FK_DURATION, struct config_check, for_ms),
    FLD_FN("on_fail", check_on_fail),
    FLD("review", FK_DURATION, struct config_check, review_ms),
    FLD_FN("target", check_target),
    FLD_FN("require_evidence", check_require_evidence),
    FLD_FN("requests", check_requests),
};
#define CHECK_SOURCES  (BIT(1) | BIT(2) | BIT(3) | BIT(4))
#define CHECK_TEST     BIT(12)
#define CHECK_REQUESTS BIT(19)
#define CHECK_BOUNDS   (BIT(6) | BIT(7) | BIT(8) | BIT(9) | BIT(10) | BIT(11))

static bool is_latency(enum config_metric m)
{
	return (m >= CONFIG_METRIC_LATENCY_P50 && m <= CONFIG_METRIC_LATENCY_MEAN) ||
	       m == CONFIG_METRIC_SHADOW_LATENCY_P99;
}

static bool mentions_cohort(const char *s)
{
	return s &&
	       (strstr(s, "{{cohort}}") || strstr(s, "{{version}}") || strstr(s, "{{variant}}"));
}

/*
 * A test on a query/http/exec source: a count check (docs/judge.md
 * "Sources"), judged like error_rate on the errors and requests it gives.
 */
static void count_semantics(struct cctx *c, const struct cnode *n, const char *path,
                            const struct config_check *k, uint64_t src, uint64_t seen)
{
	static const struct {
		const char *key;
		uint64_t bit;
	} others[] = {{"min", BIT(6)},
	              {"min_ratio", BIT(8)},
	              {"max_ratio", BIT(9)},
	              {"max_decrease", BIT(11)}};
	const struct cnode *tn = n->items[map_find(n, "test")];
	char sub[PATH_MAX_LEN];
	bool per_cohort = src == BIT(2);

	if (k->test.method == CONFIG_TEST_MANN_WHITNEY) {
		path_key(sub, path, "test.method");
		cerr(c, key_line(tn, "method"), sub,
		     "mann-whitney compares latency histograms, which a query, http or exec "
		     "source does not give: a test on a source is sequential, on its error and "
		     "request counts");
	}
	if (src == BIT(2) && !(seen & CHECK_REQUESTS)) {
		path_key(sub, path, "requests");
		cerr(c, key_line(n, "test"), sub,
		     "a test on a query check needs requests: a second query giving the cohort's "
		     "requests over the interval (query then gives its errors)");
	}
	if (src == BIT(3))
		per_cohort = mentions_cohort(k->http_url);
	for (size_t i = 0; src == BIT(4) && i < k->exec.n; i++)
		per_cohort = per_cohort || mentions_cohort(k->exec.v[i]);
	if (!per_cohort) {
		path_key(sub, path, "test");
		cerr(c, key_line(n, "test"), sub,
		     "a test compares the cohorts' counts: mention {{cohort}}, {{version}} or "
		     "{{variant}} in the %s so that it runs once per cohort",
		     src == BIT(3) ? "URL" : "command");
	}
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		if (!(seen & others[i].bit))
			continue;
		path_key(sub, path, others[i].key);
		cerr(c, key_line(n, others[i].key), sub,
		     "a test on a query, http or exec check judges the error rate "
		     "errors/requests: only max (an absolute bound on it) and max_increase "
		     "(the test's margin) apply");
	}
}

static void check_semantics(struct cctx *c, const struct cnode *n, const char *path,
                            const struct config_rollout *r, struct config_check *k, uint64_t seen)
{
	char sub[PATH_MAX_LEN];
	uint64_t src = seen & CHECK_SOURCES;

	if (src == 0)
		cerr(c, n->line, path, "expected one of metric, query, http or exec");
	else if (src & (src - 1))
		cerr(c, n->line, path, "only one of metric, query, http or exec per check");
	if (!(seen & (CHECK_BOUNDS | BIT(12))))
		cerr(c, n->line, path,
		     "a check needs a bound (min, max, min_ratio, max_ratio, max_increase, "
		     "max_decrease) or a test");
	if (k->min.set && k->max.set && k->min.value > k->max.value)
		cerr(c, key_line(n, "min"), path, "min is greater than max");
	if (k->min_ratio.set && k->max_ratio.set && k->min_ratio.value > k->max_ratio.value)
		cerr(c, key_line(n, "min_ratio"), path, "min_ratio is greater than max_ratio");
	if ((seen & BIT(12)) && src == BIT(1)) {
		path_key(sub, path, "test.method");
		if (k->test.method == CONFIG_TEST_MANN_WHITNEY && !is_latency(k->metric))
			cerr(c, key_line(n->items[map_find(n, "test")], "method"), sub,
			     "mann-whitney compares latency histograms: use a latency metric");
		if (k->test.method == CONFIG_TEST_SEQUENTIAL &&
		    (is_latency(k->metric) || k->metric == CONFIG_METRIC_REQUEST_RATE))
			cerr(c, key_line(n->items[map_find(n, "test")], "method"), sub,
			     "sequential tests compare rates: use error_rate, success_rate or a "
			     "shadow rate");
	} else if ((seen & CHECK_TEST) && src && !(src & (src - 1))) {
		count_semantics(c, n, path, k, src, seen);
	}
	if ((seen & CHECK_REQUESTS) && (!(seen & CHECK_TEST) || src != BIT(2))) {
		path_key(sub, path, "requests");
		cerr(c, key_line(n, "requests"), sub,
		     src == BIT(2) ? "requests is a count check's second query: it needs a test "
		                     "(test: {method: sequential})"
		                   : "requests goes with query (http and exec checks give both "
		                     "counts in one answer)");
	}
	if ((seen & BIT(5)) && !(src & (BIT(2) | BIT(3) | BIT(4)))) {
		path_key(sub, path, "timeout");
		cerr(c, key_line(n, "timeout"), sub,
		     "only query, http and exec checks take a timeout");
	}
	if ((seen & BIT(16)) && k->on_fail != CONFIG_ON_FAIL_PAUSE) {
		path_key(sub, path, "review");
		cerr(c, key_line(n, "review"), sub, "review needs on_fail: pause");
	}
	if (k->target) {
		const struct cnode *tn = n->items[map_find(n, "target")];
		struct config_strlist l = {0};

		path_key(sub, path, "target");
		if (!get_strlist(c, tn, sub, true, &l))
			return;
		for (size_t j = 0; j < l.n; j++) {
			const struct config_target *t = config_target_find(r, l.v[j]);
			char jp[PATH_MAX_LEN];
			int line = tn->type == CN_SEQ ? tn->items[j]->line : tn->line;

			if (tn->type == CN_SEQ)
				path_idx(jp, sub, j);
			else
				snprintf(jp, sizeof(jp), "%s", sub);
			if (!t) {
				if (r->targets)
					cerr(c, line, jp, "target \"%s\" is not defined", l.v[j]);
				continue;
			}
			if (j == 0)
				k->target_index = (size_t)(t - r->targets);
			if (k->target_mask >> (t - r->targets) & 1)
				cerr(c, line, jp, "target \"%s\" is listed twice", l.v[j]);
			k->target_mask |= BIT(t - r->targets);
		}
	}
	if (k->on_fail == CONFIG_ON_FAIL_ROLLBACK_TO && k->rollback_to &&
	    strcmp(k->rollback_to, "previous") == 0)
		k->rollback_previous = true;
}

static void parse_checks(struct cctx *c, const struct cnode *n, const char *path,
                         struct config_rollout *r)
{
	char sub[PATH_MAX_LEN], np[PATH_MAX_LEN];

	if (!want_seq(c, n, path))
		return;
	r->analysis.checks =
	    cfg_arena_alloc(c->out, (n->n ? n->n : 1) * sizeof(*r->analysis.checks));
	if (!r->analysis.checks)
		return;
	r->analysis.nchecks = n->n;
	for (size_t i = 0; i < n->n; i++) {
		struct config_check *k = &r->analysis.checks[i];
		const struct cnode *kn = n->items[i];
		uint64_t seen;

		k->line = kn->line;
		k->min_samples = 200;
		k->timeout_ms = 10000;
		path_idx(sub, path, i);
		if (!walk_map(c, kn, sub, check_fields, NFIELDS(check_fields), k, &seen))
			continue;
		check_semantics(c, kn, sub, r, k, seen);
		for (size_t j = 0; j < i; j++) {
			if (k->name && r->analysis.checks[j].name &&
			    strcmp(k->name, r->analysis.checks[j].name) == 0) {
				path_key(np, sub, "name");
				cerr(c, key_line(kn, "name"), np,
				     "duplicate check name \"%s\" (also checks[%zu])", k->name, j);
			}
		}
	}
}

static bool analysis_interval(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_rollout *r = obj;

	if (!get_duration(c, n, path, &r->analysis.interval_ms))
		return false;
	if (r->analysis.interval_ms < 1000) {
		cerr(c, n->line, path, "must be at least 1s");
		return false;
	}
	return true;
}

static const struct field analysis_fields[] = {
    FLD_FN("interval", analysis_interval),
    FLD("max_wait", FK_DURATION, struct config_rollout, analysis.max_wait_ms),
    FLD_FN_REQ("checks", field_later),
};

/* --- rollback, notify ------------------------------------------------------------------ */

static bool hook_exec(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_hook *h = obj;

	h->kind = CONFIG_HOOK_EXEC;
	return parse_argv(c, n, path, &h->argv);
}

static bool hook_webhook(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_hook *h = obj;

	h->kind = CONFIG_HOOK_WEBHOOK;
	return get_url(c, n, path, &h->url);
}

static const struct field hook_fields[] = {
    FLD_FN("exec", hook_exec),
    FLD_FN("webhook", hook_webhook),
    FLD("timeout", FK_DURATION, struct config_hook, timeout_ms),
};

static bool rollback_hooks(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_rollout *r = obj;
	char sub[PATH_MAX_LEN];

	if (!want_seq(c, n, path))
		return false;
	r->rollback.hooks = cfg_arena_alloc(c->out, (n->n ? n->n : 1) * sizeof(*r->rollback.hooks));
	if (!r->rollback.hooks)
		return false;
	r->rollback.nhooks = n->n;
	for (size_t i = 0; i < n->n; i++) {
		struct config_hook *h = &r->rollback.hooks[i];
		uint64_t seen;

		h->line = n->items[i]->line;
		h->timeout_ms = 60000;
		path_idx(sub, path, i);
		if (!walk_map(c, n->items[i], sub, hook_fields, NFIELDS(hook_fields), h, &seen))
			continue;
		if ((seen & 3) == 3)
			cerr(c, h->line, sub, "exec and webhook are mutually exclusive");
		else if (!(seen & 3))
			cerr(c, h->line, sub, "missing required key \"exec\" (or \"webhook\")");
	}
	return true;
}

static const struct field rollback_fields[] = {
    FLD("drain", FK_DURATION, struct config_rollout, rollback.drain_ms),
    FLD_FN("hooks", rollback_hooks),
    FLD("verify", FK_DURATION, struct config_rollout, rollback.verify_ms),
};

static bool ro_rollback(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_rollout *r = obj;

	r->rollback.line = n->line;
	return walk_map(c, n, path, rollback_fields, NFIELDS(rollback_fields), r, NULL);
}

static const struct {
	const char *name;
	unsigned bit;
} event_names[] = {
    {"started", CONFIG_EVENT_STARTED},
    {"step", CONFIG_EVENT_STEP},
    {"paused", CONFIG_EVENT_PAUSED},
    {"resumed", CONFIG_EVENT_RESUMED},
    {"approval_needed", CONFIG_EVENT_APPROVAL_NEEDED},
    {"approved", CONFIG_EVENT_APPROVED},
    {"verdict", CONFIG_EVENT_VERDICT},
    {"rollback", CONFIG_EVENT_ROLLBACK},
    {"completed", CONFIG_EVENT_COMPLETED},
    {"failed", CONFIG_EVENT_FAILED},
    {"aborted", CONFIG_EVENT_ABORTED},
    {"upcoming", CONFIG_EVENT_UPCOMING},
    {"validation_passed", CONFIG_EVENT_VALIDATION_PASSED}, /* validate.c */
    {"validation_failed", CONFIG_EVENT_VALIDATION_FAILED},
};

static bool notify_events(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_notify *nt = obj;
	struct config_strlist l = {0};
	char sub[PATH_MAX_LEN];

	if (!get_strlist(c, n, path, false, &l))
		return false;
	nt->events = 0;
	for (size_t i = 0; i < l.n; i++) {
		size_t k;

		for (k = 0; k < sizeof(event_names) / sizeof(event_names[0]); k++)
			if (strcmp(l.v[i], event_names[k].name) == 0)
				break;
		if (k < sizeof(event_names) / sizeof(event_names[0])) {
			nt->events |= event_names[k].bit;
			continue;
		}
		path_idx(sub, path, i);
		cerr(c, n->type == CN_SEQ ? n->items[i]->line : n->line,
		     n->type == CN_SEQ ? sub : path,
		     "unknown event \"%.40s\" (started, step, paused, resumed, approval_needed, "
		     "approved, verdict, rollback, completed, failed, aborted, upcoming, "
		     "validation_passed, validation_failed)",
		     l.v[i]);
	}
	return true;
}

static const struct field notify_fields[] = {
    FLD_REQ("webhook", FK_URL, struct config_notify, webhook),
    FLD_FN("events", notify_events),
    FLD("notice", FK_DURATION, struct config_notify, notice_ms),
};

static bool ro_notify(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_rollout *r = obj;
	char sub[PATH_MAX_LEN], ep[PATH_MAX_LEN];
	uint64_t seen;

	if (!want_seq(c, n, path))
		return false;
	r->notify = cfg_arena_alloc(c->out, (n->n ? n->n : 1) * sizeof(*r->notify));
	if (!r->notify)
		return false;
	r->nnotify = n->n;
	for (size_t i = 0; i < n->n; i++) {
		r->notify[i].line = n->items[i]->line;
		r->notify[i].events = CONFIG_EVENT_ALL;
		path_idx(sub, path, i);
		if (!walk_map(c, n->items[i], sub, notify_fields, NFIELDS(notify_fields),
		              &r->notify[i], &seen))
			continue;
		if ((r->notify[i].events & CONFIG_EVENT_UPCOMING) && !(seen & BIT(2))) {
			path_key(ep, sub, "events");
			cerr(c, key_line(n->items[i], "events"), ep,
			     "upcoming needs notice: (how long before, e.g. notice: 48h)");
		} else if ((seen & BIT(2)) && !(r->notify[i].events & CONFIG_EVENT_UPCOMING)) {
			path_key(ep, sub, "notice");
			cerr(c, key_line(n->items[i], "notice"), ep,
			     "notice is for the upcoming event: add upcoming to events");
		} else if ((seen & BIT(2)) && r->notify[i].notice_ms == 0) {
			path_key(ep, sub, "notice");
			cerr(c, key_line(n->items[i], "notice"), ep, "must be more than 0");
		}
	}
	return true;
}

/* --- validate: post-rollout validation windows (owned by rollout/validate.c) ------------ */

/* A check validation can run: a proxy metric judged on the stable's own traffic. */
static bool validate_can_judge(const struct config_check *k)
{
	return k->source == CONFIG_SOURCE_METRIC && k->metric <= CONFIG_METRIC_LATENCY_MEAN;
}

/* ms as the largest whole unit ("8d", "90m", "1500ms"), for messages. */
static void validate_dur(uint64_t ms, char *b, size_t n)
{
	static const struct {
		uint64_t ms;
		const char *u;
	} units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};

	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (ms && ms % units[i].ms == 0) {
			snprintf(b, n, "%" PRIu64 "%s", ms / units[i].ms, units[i].u);
			return;
		}
	snprintf(b, n, "%" PRIu64 "ms", ms);
}

struct validate_ctx {
	struct config_validate_window w;
	struct config_strlist checks; /* names, resolved against analysis.checks */
};

static bool validate_on_fail(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct validate_ctx *vc = obj;
	const char *t = get_text(c, n, path);

	if (!t)
		return false;
	if (strcmp(t, "rollback") == 0) {
		vc->w.on_fail = CONFIG_VALIDATE_ROLLBACK;
	} else if (strcmp(t, "notify") == 0) {
		vc->w.on_fail = CONFIG_VALIDATE_NOTIFY;
	} else {
		cerr(c, n->line, path, "expected rollback or notify, got \"%.60s\"", t);
		return false;
	}
	return true;
}

static const struct field validate_fields[] = {
    FLD_REQ("name", FK_NAME, struct validate_ctx, w.name),
    FLD("after", FK_DURATION, struct validate_ctx, w.after_ms),
    FLD_REQ("for", FK_DURATION, struct validate_ctx, w.for_ms),
    FLD("checks", FK_NAMELIST, struct validate_ctx, checks),
    FLD_FN("on_fail", validate_on_fail),
};

/* Window vc's checks: the names given, else every check validation can run. */
static void validate_resolve_checks(struct cctx *c, const struct cnode *wn, const char *path,
                                    struct config_rollout *r, struct validate_ctx *vc, bool given)
{
	char sub[PATH_MAX_LEN], ip[PATH_MAX_LEN];
	size_t n = given ? vc->checks.n : r->analysis.nchecks, k = 0;

	vc->w.checks = cfg_arena_alloc(c->out, (n ? n : 1) * sizeof(*vc->w.checks));
	if (!vc->w.checks)
		return;
	path_key(sub, path, "checks");
	for (size_t i = 0; i < n; i++) {
		const struct config_check *ck = NULL;

		if (!given) {
			if (validate_can_judge(&r->analysis.checks[i]))
				vc->w.checks[k++] = i;
			continue;
		}
		path_idx(ip, sub, i);
		for (size_t j = 0; j < r->analysis.nchecks; j++)
			if (r->analysis.checks[j].name &&
			    strcmp(r->analysis.checks[j].name, vc->checks.v[i]) == 0)
				ck = &r->analysis.checks[j];
		if (!ck)
			cerr(c, key_line(wn, "checks"), ip,
			     "check \"%.60s\" is not defined in analysis.checks", vc->checks.v[i]);
		else if (!validate_can_judge(ck))
			cerr(
			    c, key_line(wn, "checks"), ip,
			    "check \"%.60s\" cannot judge a stable version on its own traffic: "
			    "validation runs the built-in proxy metrics (request_rate, error_rate, "
			    "success_rate, latency_*)",
			    vc->checks.v[i]);
		else
			vc->w.checks[k++] = (size_t)(ck - r->analysis.checks);
	}
	vc->w.nchecks = k;
	if (k == 0 && !given)
		cerr(c, wn->line, path,
		     "nothing to validate: the rollout has no proxy-metric check (analysis.checks "
		     "with metric: error_rate, latency_p99, ...)");
}

/*
 * validate: [{name, after?, for, checks?, on_fail?}]: windows after the
 * completion, one after another (a window may not start before the
 * previous one ends), judging the new stable with the rollout's proxy
 * metric checks against the pre-rollout baseline.
 */
static void parse_validate(struct cctx *c, const struct cnode *n, const char *path,
                           struct config_rollout *r)
{
	char sub[PATH_MAX_LEN], kp[PATH_MAX_LEN], a[32], b[32];
	bool service = false;

	r->validate_line = n->line;
	if (!want_seq(c, n, path))
		return;
	for (size_t t = 0; t < r->ntargets; t++)
		service = service || r->targets[t].kind == CONFIG_TARGET_SERVICE;
	if (!service && r->targets)
		cerr(c, n->line, path,
		     "validation judges services' traffic, and this rollout has no service target");
	r->validate = cfg_arena_alloc(c->out, (n->n ? n->n : 1) * sizeof(*r->validate));
	if (!r->validate)
		return;
	r->nvalidate = n->n;
	for (size_t i = 0; i < n->n; i++) {
		const struct cnode *wn = n->items[i];
		struct validate_ctx vc = {0};
		uint64_t seen;

		path_idx(sub, path, i);
		vc.w.line = wn->line;
		if (!walk_map(c, wn, sub, validate_fields, NFIELDS(validate_fields), &vc, &seen))
			continue;
		if ((seen & BIT(2)) && vc.w.for_ms == 0) {
			path_key(kp, sub, "for");
			cerr(c, key_line(wn, "for"), kp, "must be more than 0");
		} else if ((seen & BIT(2)) && vc.w.for_ms < r->analysis.interval_ms) {
			path_key(kp, sub, "for");
			validate_dur(r->analysis.interval_ms, a, sizeof(a));
			cerr(c, key_line(wn, "for"), kp,
			     "must be at least analysis.interval (%s): the window is judged every "
			     "interval",
			     a);
		}
		validate_resolve_checks(c, wn, sub, r, &vc, seen & BIT(3));
		for (size_t j = 0; j < i; j++)
			if (vc.w.name && r->validate[j].name &&
			    strcmp(vc.w.name, r->validate[j].name) == 0) {
				path_key(kp, sub, "name");
				cerr(c, key_line(wn, "name"), kp,
				     "duplicate window name \"%s\" (also validate[%zu])", vc.w.name,
				     j);
			}
		if (i > 0 && r->validate[i - 1].for_ms &&
		    vc.w.after_ms < r->validate[i - 1].after_ms + r->validate[i - 1].for_ms) {
			uint64_t end = r->validate[i - 1].after_ms + r->validate[i - 1].for_ms;

			path_key(kp, sub, "after");
			validate_dur(vc.w.after_ms, a, sizeof(a));
			validate_dur(end, b, sizeof(b));
			cerr(c, key_line(wn, "after"), kp,
			     "window \"%s\" would start at %s, before validate[%zu] (\"%s\") ends "
			     "at %s: windows run one after another (after counts from the "
			     "completion; use after: %s or more)",
			     vc.w.name ? vc.w.name : "?", a, i - 1,
			     r->validate[i - 1].name ? r->validate[i - 1].name : "?", b, b);
		}
		r->validate[i] = vc.w;
	}
}

static bool shadow_check(const struct config_check *k);

/* A step that moves traffic: set/weight, shadow, preview (a partial rollback's `previous`). */
static bool traffic_kind(enum config_step_kind k)
{
	return k == CONFIG_STEP_SET || k == CONFIG_STEP_SHADOW || k == CONFIG_STEP_PREVIEW;
}

/*
 * The first step at which check k can act: a set step giving one of its
 * targets a weight, a preview step (its override traffic), or a shadow step
 * for a shadow_* check.  nsteps when there is none.
 */
static size_t first_acting_step(const struct config_rollout *r, const struct config_check *k)
{
	for (size_t s = 0; s < r->nsteps; s++) {
		const struct config_step *st = &r->steps[s];

		if (st->kind == CONFIG_STEP_SHADOW && shadow_check(k))
			return s;
		if (shadow_check(k))
			continue;
		if (st->kind == CONFIG_STEP_PREVIEW)
			return s;
		for (size_t i = 0; st->kind == CONFIG_STEP_SET && i < st->nsets; i++)
			if (st->sets[i].percent > 0 && config_check_covers(k, st->sets[i].index))
				return s;
	}
	return r->nsteps;
}

/*
 * on_fail: {rollback_to: X} of check k, once the steps are known: X names a
 * step with a step after it where the check can act (it must point
 * backwards; a failure at or before X goes back one traffic step, as
 * `previous`), or is `previous` with a traffic step before the first step
 * where the check can act.
 */
static void resolve_rollback_to(struct cctx *c, const char *path, struct config_rollout *r,
                                size_t k)
{
	struct config_check *ck = &r->analysis.checks[k];
	char sub[PATH_MAX_LEN];
	size_t first, s;

	if (ck->on_fail != CONFIG_ON_FAIL_ROLLBACK_TO || !ck->rollback_to)
		return;
	snprintf(sub, sizeof(sub), "%s.analysis.checks[%zu].on_fail.rollback_to", path, k);
	first = first_acting_step(r, ck);
	if (ck->rollback_previous) {
		for (s = first; s > 0; s--)
			if (traffic_kind(r->steps[s - 1].kind))
				break;
		if (s == 0)
			cerr(c, ck->rollback_line, sub,
			     "previous: there is no traffic step before steps[%zu], the first "
			     "step where check %s can act",
			     first < r->nsteps ? first : r->nsteps - 1, ck->name);
		return;
	}
	for (s = 0; s < r->nsteps; s++)
		if (r->steps[s].name && strcmp(r->steps[s].name, ck->rollback_to) == 0)
			break;
	if (s == r->nsteps) {
		cerr(c, ck->rollback_line, sub,
		     "no step is named \"%s\" (name a step with name: or use previous)",
		     ck->rollback_to);
		return;
	}
	ck->rollback_step = s;
	if (first >= r->nsteps || s + 1 >= r->nsteps)
		cerr(c, ck->rollback_line, sub,
		     "step \"%s\" (steps[%zu]) is not before any step where check %s can act: "
		     "rollback_to must point backwards",
		     ck->rollback_to, s, ck->name);
}

static const struct field rollout_fields[] = {
    FLD_FN("target", ro_target),      FLD_FN("targets", ro_targets),
    FLD_FN_REQ("steps", field_later), FLD_FN("analysis", field_later),
    FLD_FN("rollback", ro_rollback),  FLD("bake", FK_DURATION, struct config_rollout, bake_ms),
    FLD_FN("notify", ro_notify),      FLD_FN("validate", field_later),
};

bool parse_rollout(struct cctx *c, const char *name, const struct cnode *n, const char *path,
                   struct config_rollout *r)
{
	char sub[PATH_MAX_LEN];
	uint64_t seen;
	long i;

	r->name = cfg_arena_strdup(c->out, name);
	r->line = n->line;
	r->analysis.interval_ms = 60000;
	r->rollback.drain_ms = 30000;
	if (!walk_map(c, n, path, rollout_fields, NFIELDS(rollout_fields), r, &seen))
		return false;
	if ((seen & 3) == 3)
		cerr(c, n->line, path, "target and targets are mutually exclusive");
	else if (!(seen & 3))
		cerr(c, n->line, path, "missing required key \"targets\" (or \"target\")");
	/* Targets first: steps and checks name them. */
	if ((i = map_find(n, "analysis")) >= 0) {
		const struct cnode *an = n->items[i];

		path_key(sub, path, "analysis");
		r->analysis.line = an->line;
		if (walk_map(c, an, sub, analysis_fields, NFIELDS(analysis_fields), r, NULL) &&
		    map_find(an, "checks") >= 0) {
			char cp[PATH_MAX_LEN];

			path_key(cp, sub, "checks");
			parse_checks(c, an->items[map_find(an, "checks")], cp, r);
		}
	}
	if ((i = map_find(n, "steps")) >= 0) {
		path_key(sub, path, "steps");
		parse_steps(c, n->items[i], sub, r);
	}
	for (size_t k = 0; r->steps && k < r->analysis.nchecks; k++)
		resolve_rollback_to(c, path, r, k);
	if ((i = map_find(n, "validate")) >= 0) { /* validate: after analysis (names checks) */
		path_key(sub, path, "validate");
		parse_validate(c, n->items[i], sub, r);
	}
	return true;
}

/* --- evidence warnings (canaryd --check) ------------------------------------------------ */

static bool shadow_check(const struct config_check *k)
{
	return k->source == CONFIG_SOURCE_METRIC && k->metric >= CONFIG_METRIC_SHADOW_MISMATCH_RATE;
}

/*
 * Can some check that requires evidence judge a step of this kind?  Shadow
 * steps are judged by the shadow_* metrics; set steps by the proxy metrics
 * (service targets) and by query/http/exec sources (any target).  The
 * engine decides on the live weights; this is the config's view of it.
 */
static bool step_judged(const struct config_rollout *r, const struct config_step *st)
{
	for (size_t i = 0; i < r->analysis.nchecks; i++) {
		const struct config_check *k = &r->analysis.checks[i];

		if (k->time_only)
			continue;
		if (st->kind == CONFIG_STEP_SHADOW) {
			if (shadow_check(k))
				return true;
			continue;
		}
		if (shadow_check(k))
			continue;
		for (size_t t = 0; t < r->ntargets; t++) {
			if (!config_check_covers(k, t))
				continue;
			if (k->source != CONFIG_SOURCE_METRIC ||
			    r->targets[t].kind == CONFIG_TARGET_SERVICE)
				return true;
		}
	}
	return false;
}

size_t config_evidence_warnings(const struct config *cfg, struct config_errors *warns)
{
	size_t before = config_errors_count(warns);
	char path[PATH_MAX_LEN];

	for (size_t i = 0; cfg && i < cfg->nrollouts; i++) {
		const struct config_rollout *r = &cfg->rollouts[i];

		if (r->analysis.nchecks == 0) {
			snprintf(path, sizeof(path), "rollouts.%s", r->name);
			config_errors_add(warns, cfg->file, r->line, path,
			                  "no analysis checks: every step advances on time alone");
			continue;
		}
		for (size_t k = 0; k < r->analysis.nchecks; k++) {
			const struct config_check *ck = &r->analysis.checks[k];

			if (!ck->time_only)
				continue;
			snprintf(path, sizeof(path),
			         "rollouts.%s.analysis.checks[%zu].require_evidence", r->name, k);
			config_errors_add(warns, cfg->file, ck->time_only_line, path,
			                  "false: no step waits for check %s to pass", ck->name);
		}
		for (size_t s = 0; s < r->nsteps; s++) {
			const struct config_step *st = &r->steps[s];

			if (!traffic_kind(st->kind))
				continue;
			if (!st->time_only && !st->max_wait_ms && r->analysis.max_wait_ms &&
			    r->analysis.max_wait_ms < st->for_ms) {
				snprintf(path, sizeof(path), "rollouts.%s.analysis.max_wait",
				         r->name);
				config_errors_add(
				    warns, cfg->file, r->analysis.line, path,
				    "shorter than steps[%zu].for: that step pauses for "
				    "evidence as soon as its for ends",
				    s);
			}
			if (st->time_only) {
				snprintf(path, sizeof(path),
				         "rollouts.%s.steps[%zu].require_evidence", r->name, s);
				config_errors_add(warns, cfg->file, st->time_only_line, path,
				                  "false: this step advances on time alone");
			} else if (!step_judged(r, st)) {
				snprintf(path, sizeof(path), "rollouts.%s.steps[%zu]", r->name, s);
				config_errors_add(
				    warns, cfg->file, st->line, path,
				    "no check can judge this step (%s): it advances on time alone",
				    st->kind == CONFIG_STEP_SHADOW
				        ? "a shadow step needs a shadow_* metric check"
				        : "proxy metrics do not see flag targets; add a query, "
				          "http "
				          "or exec check");
			}
		}
	}
	return config_errors_count(warns) - before;
}
