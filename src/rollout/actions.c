/*
 * actions.c - every call of the rollout engine that changes (or asks) the
 * outside world about traffic and flags: canary weights, stable versions,
 * shadow mirrors, flag percentages (save / set / restore), notifications,
 * and the proxy's in-flight counts and table confirmation.  They go
 * straight to the modules that own that state, which commit through the
 * state layer: proxy/traffic.h, flags/registry.h and rollout/notify.h.
 *
 * The test seam: when the backend has no module pointer for an action, the
 * backend's callback of the same action is used instead (the unit tests
 * drive the engine with fakes that record weights and can refuse them).
 * A module pointer, when set, always wins.  Metric readings and job runners
 * stay callbacks (rounds.c, rollback.c): they are reads, not changes.
 *
 * Every action is idempotent: the engine persists first and may apply the
 * same action again after a restart (rollout_engine_load()).
 */
#include "core/err.h"
#include "core/log.h"
#include "flags/registry.h"
#include "proxy/traffic.h"
#include "rollout/engine_internal.h"
#include "rollout/notify.h"

/* Logs a traffic change that failed (the module keeps the human message). */
static int traffic_failed(struct rollout_engine *e, const char *what, const char *service, int rc)
{
	char m[256];

	log_error(what, "service", service, "error",
	          traffic_errmsg(e->be.traffic, m, sizeof(m))[0] ? m : err_str(rc), NULL);
	return rc;
}

bool rollout_flags_wired(const struct rollout_engine *e)
{
	return e->be.flags || (e->be.flag_save && e->be.flag_set && e->be.flag_restore);
}

bool rollout_shadow_wired(const struct rollout_engine *e)
{
	return e->be.traffic || e->be.set_shadow;
}

bool rollout_inflight_wired(const struct rollout_engine *e)
{
	return e->be.traffic || e->be.inflight;
}

/*
 * A flag target's state before the run is taken once, before the flag first
 * changes, and persisted with that change.  False when the flag is gone.
 */
bool rollout_act_save_flag(struct rollout_engine *e, struct run *r, size_t t)
{
	const char *flag = run_target(r, t)->flag;

	if (run_target(r, t)->kind != CONFIG_TARGET_FLAG || r->targets[t].saved)
		return true;
	r->targets[t].saved =
	    e->be.flags ? flags_save(e->be.flags, flag) : e->be.flag_save(e->be.ctx, flag);
	return r->targets[t].saved != NULL;
}

/* Sets (or, rolled back, restores) flag target tg's percentage. */
static int set_flag(struct rollout_engine *e, const struct config_target *tg,
                    const struct target_run *tr, const char *actor)
{
	char msg[256] = "";
	int rc;

	if (!e->be.flags) {
		if (tr->rolled_back)
			return tr->saved ? e->be.flag_restore(e->be.ctx, tg->flag, tr->saved, actor)
			                 : 0;
		return e->be.flag_set(e->be.ctx, tg->flag, tr->weight, actor);
	}
	if (tr->rolled_back)
		rc = tr->saved
		         ? flags_restore(e->be.flags, tg->flag, tr->saved, actor, msg, sizeof(msg))
		         : 0;
	else
		rc = flags_set_percent(e->be.flags, tg->flag, tr->weight, actor, msg, sizeof(msg));
	if (rc)
		log_error(tr->rolled_back ? "rollout could not restore a flag"
		                          : "rollout could not set a flag's percentage",
		          "flag", tg->flag, "error", msg[0] ? msg : err_str(rc), NULL);
	return rc;
}

/* Makes version tg's service's stable version (no canary). */
static int set_stable(struct rollout_engine *e, const struct config_target *tg, const char *version,
                      const char *actor)
{
	int rc;

	if (!e->be.traffic)
		return e->be.set_stable ? e->be.set_stable(e->be.ctx, tg->service, version, actor)
		                        : 0;
	rc = traffic_set_stable(e->be.traffic, tg->service, version, actor);
	return rc ? traffic_failed(e, "rollout could not set the stable version", tg->service, rc)
	          : 0;
}

/*
 * validate (issue 16): the last requests each service target's canary
 * served (bit t of mask), newest first, as a rollout.canary_requests event
 * appended to evs, so the evidence bundle keeps them.  Nothing without the
 * backend's samples callback or when no canary served anything.
 */
void rollout_act_samples(struct rollout_engine *e, const struct run *r, uint64_t mask, int64_t now,
                         json_t *evs)
{
	json_t *targets;

	if (!e->be.samples || !evs)
		return;
	targets = json_object();
	for (size_t t = 0; t < r->cfg->ntargets && t < MAX_TARGETS; t++) {
		const struct config_target *tg = run_target(r, t);
		json_t *a;

		if (!(mask >> t & 1) || tg->kind != CONFIG_TARGET_SERVICE || !tg->canary)
			continue;
		a = e->be.samples(e->be.ctx, tg->service, tg->canary, ROLLOUT_SAMPLE_MAX);
		if (!json_is_array(a) || !json_array_size(a)) {
			json_decref(a);
			continue;
		}
		json_object_set_new(targets, tg->name,
		                    json_pack("{s:s, s:s, s:o}", "service", tg->service, "version",
		                              tg->canary, "requests", a));
	}
	if (!json_object_size(targets)) {
		json_decref(targets);
		return;
	}
	/* an event list entry as rollout_event() makes it (doc.c is to the left: no call) */
	json_array_append_new(evs, json_pack("{s:s, s:{s:I, s:o}}", "kind",
	                                     "rollout.canary_requests", "details", "decision_ms",
	                                     (json_int_t)now, "targets", targets));
}

int rollout_act_weight(struct rollout_engine *e, struct run *r, size_t t, const char *actor)
{
	const struct config_target *tg = run_target(r, t);
	const struct target_run *tr = &r->targets[t];
	int rc;

	if (tg->kind == CONFIG_TARGET_FLAG) {
		if (!rollout_flags_wired(e))
			return 0;
		/* rolled back: put the flag back exactly as it was */
		return set_flag(e, tg, tr, actor);
	}
	if (tg->kind != CONFIG_TARGET_SERVICE)
		return 0;
	/* validate_engine.c: a failed validation window reverts to the old stable (kept warm) */
	if (tr->rolled_back && r->val.begun && r->val.reverted_by >= 0 && r->val.old_stable[t])
		return set_stable(e, tg, r->val.old_stable[t], actor);
	if (tr->preview && !tr->rolled_back && tr->weight == 0) { /* a preview step */
		if (!e->be.traffic)
			return e->be.set_preview
			           ? e->be.set_preview(e->be.ctx, tg->service, tg->canary, actor)
			           : 0;
		rc = traffic_set_preview(e->be.traffic, tg->service, tg->canary, actor);
		return rc ? traffic_failed(e, "rollout could not start a preview", tg->service, rc)
		          : 0;
	}
	if (!e->be.traffic)
		return e->be.set_weight(e->be.ctx, tg->service, tg->canary, tr->weight, actor);
	rc = traffic_set_weight(e->be.traffic, tg->service, tg->canary, tr->weight, actor);
	return rc ? traffic_failed(e, "rollout could not set a weight", tg->service, rc) : 0;
}

bool rollout_preview_wired(const struct rollout_engine *e)
{
	return e->be.traffic || e->be.set_preview;
}

int rollout_act_weight_local(struct rollout_engine *e, struct run *r, size_t t)
{
	const struct config_target *tg = run_target(r, t);
	const struct target_run *tr = &r->targets[t];
	int rc;

	if (tg->kind != CONFIG_TARGET_SERVICE)
		return 0;
	if (!e->be.traffic) /* the test seam has no commit to skip */
		return e->be.set_weight(e->be.ctx, tg->service, tg->canary, tr->weight,
		                        ENGINE_ACTOR);
	rc = traffic_set_weight_local(e->be.traffic, tg->service, tg->canary, tr->weight);
	return rc ? traffic_failed(e, "rollout could not set a weight locally", tg->service, rc)
	          : 0;
}

const char *rollout_stable_version(const struct rollout_engine *e, const struct config_target *tg)
{
	const char *v = e->be.traffic     ? traffic_stable_of(e->be.traffic, tg->service)
	                : e->be.stable_of ? e->be.stable_of(e->be.ctx, tg->service)
	                                  : NULL;

	return v ? v : tg->svc->stable;
}

/* Mirrors percent (thousandths; 0 stops it) of tg's service to its canary. */
static int set_mirror(struct rollout_engine *e, const struct config_target *tg, uint32_t percent,
                      const char *actor)
{
	int rc;

	if (!e->be.traffic)
		return e->be.set_shadow(e->be.ctx, tg->service, tg->canary, percent, actor);
	rc = traffic_set_mirror(e->be.traffic, tg->service, percent ? tg->canary : NULL, percent,
	                        actor);
	return rc ? traffic_failed(e, "rollout could not set the mirror", tg->service, rc) : 0;
}

/*
 * Stops the mirrors of the targets in mask that a shadow step started.  A
 * target's `shadow` is cleared only once its mirror is off, so after a
 * crash in between rollout_engine_load() stops it again.
 */
void rollout_act_stop_shadow(struct rollout_engine *e, struct run *r, uint64_t mask,
                             const char *actor)
{
	for (size_t t = 0; t < r->cfg->ntargets && t < MAX_TARGETS; t++) {
		const struct config_target *tg = run_target(r, t);

		if (!(mask >> t & 1) || !r->targets[t].shadow || !rollout_shadow_wired(e))
			continue;
		if (set_mirror(e, tg, 0, actor) == 0)
			r->targets[t].shadow = 0;
		else
			log_warn("could not stop a shadow step's mirror", "rollout", r->cfg->name,
			         "service", tg->service, NULL);
	}
}

int rollout_act_shadow(struct rollout_engine *e, struct run *r, size_t t, const char *actor)
{
	if (!rollout_shadow_wired(e))
		return 0;
	return set_mirror(e, run_target(r, t), r->targets[t].shadow, actor);
}

int rollout_act_stable(struct rollout_engine *e, struct run *r, size_t t, const char *actor)
{
	const struct config_target *tg = run_target(r, t);
	int rc;

	if (!e->be.traffic)
		return e->be.set_stable
		           ? e->be.set_stable(e->be.ctx, tg->service, tg->canary, actor)
		           : 0;
	rc = traffic_set_stable(e->be.traffic, tg->service, tg->canary, actor);
	return rc ? traffic_failed(e, "rollout could not make its canary stable", tg->service, rc)
	          : 0;
}

/*
 * Logs the lifecycle events a person on call looks for in the daemon's log
 * (starts, steps, approvals, failing verdicts, rollbacks, the end), with
 * the same one-line text a notification carries; passing verdicts and
 * intervals stay in the store only.
 */
static void log_lifecycle(const char *kind, const char *name, const json_t *details)
{
	static const char *const info[] = {
	    "rollout.started",  "rollout.retry",  "rollout.step",    "rollout.approval_needed",
	    "rollout.approved", "rollout.paused", "rollout.resumed", "rollout.completed",
	};
	static const char *const warn[] = {"rollout.rollback", "rollout.rollback.finished",
	                                   "rollout.failed"};
	const char *outcome = json_string_value(json_object_get(details, "outcome"));
	char text[1024];

	if (!kind)
		return;
	if (strcmp(kind, "verdict") == 0) {
		if (!outcome || strcmp(outcome, "pass") == 0)
			return;
		notify_text(kind, name, details, text, sizeof(text));
		log_warn("rollout check failed", "rollout", name, "event", kind, "outcome", outcome,
		         "text", text, NULL);
		return;
	}
	for (size_t i = 0; i < sizeof(warn) / sizeof(warn[0]); i++)
		if (strcmp(kind, warn[i]) == 0) {
			notify_text(kind, name, details, text, sizeof(text));
			log_warn("rollout event", "rollout", name, "event", kind, "text", text,
			         NULL);
			return;
		}
	for (size_t i = 0; i < sizeof(info) / sizeof(info[0]); i++)
		if (strcmp(kind, info[i]) == 0) {
			notify_text(kind, name, details, text, sizeof(text));
			log_info("rollout event", "rollout", name, "event", kind, "text", text,
			         NULL);
			return;
		}
}

void rollout_act_notify(struct rollout_engine *e, const char *kind, const char *name,
                        const json_t *details)
{
	log_lifecycle(kind, name, details);
	if (e->be.notifier)
		notify_event(e->be.notifier, kind, name, details);
	else if (e->be.notify)
		e->be.notify(e->be.ctx, kind, name, details);
}

int rollout_act_wait_applied(struct rollout_engine *e, uint64_t timeout_us)
{
	if (e->be.traffic)
		return traffic_wait_applied(e->be.traffic, timeout_us);
	return e->be.wait_applied ? e->be.wait_applied(e->be.ctx, timeout_us) : 0;
}

long rollout_inflight(struct rollout_engine *e, const char *service, const char *version)
{
	if (e->be.traffic)
		return traffic_inflight(e->be.traffic, service, version);
	return e->be.inflight ? e->be.inflight(e->be.ctx, service, version) : -1;
}
