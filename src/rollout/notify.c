/*
 * notify.c - rollout notifications: engine events to webhook posts
 * (notify.h).  Holds the posts it watches in a fixed array.
 */
#include "rollout/notify.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/jobs.h"
#include "core/log.h"
#include "state/state.h"

#define NOTIFY_TIMEOUT_MS 10000

struct pending {
	uint64_t id;
	char rollout[128], kind[64], url[512];
};

struct notify {
	struct jobs *jobs;
	struct state *state;
	const struct config *cfg;
	struct pending pending[NOTIFY_MAX_PENDING];
	size_t npending;
};

struct notify *notify_new(struct jobs *jobs, struct state *st)
{
	struct notify *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->jobs = jobs;
	n->state = st;
	return n;
}

void notify_free(struct notify *n)
{
	if (!n)
		return;
	for (size_t i = 0; n->jobs && i < n->npending; i++)
		jobs_detach(n->jobs, n->pending[i].id);
	free(n);
}

void notify_set_config(struct notify *n, const struct config *cfg)
{
	n->cfg = cfg;
}

unsigned notify_event_of(const char *kind, const json_t *details)
{
	static const struct {
		const char *kind;
		unsigned ev;
	} map[] = {
	    {"rollout.started", CONFIG_EVENT_STARTED},
	    {"rollout.retry", CONFIG_EVENT_STARTED},
	    {"rollout.step", CONFIG_EVENT_STEP},
	    {"rollout.paused", CONFIG_EVENT_PAUSED},
	    {"rollout.resumed", CONFIG_EVENT_RESUMED},
	    {"rollout.approval_needed", CONFIG_EVENT_APPROVAL_NEEDED},
	    {"rollout.approved", CONFIG_EVENT_APPROVED},
	    {"verdict", CONFIG_EVENT_VERDICT},
	    {"rollout.rollback", CONFIG_EVENT_ROLLBACK},
	    {"rollout.rollback.finished", CONFIG_EVENT_ROLLBACK},
	    {"rollout.completed", CONFIG_EVENT_COMPLETED},
	    {"rollout.failed", CONFIG_EVENT_FAILED},
	    /* validate_engine.c: a window's end (inconclusive is not a pass) */
	    {"rollout.validation.passed", CONFIG_EVENT_VALIDATION_PASSED},
	    {"rollout.validation.failed", CONFIG_EVENT_VALIDATION_FAILED},
	    {"rollout.validation.inconclusive", CONFIG_EVENT_VALIDATION_FAILED},
	    {"rollout.upcoming", CONFIG_EVENT_UPCOMING},
	};
	const char *cls = json_string_value(json_object_get(details, "class"));

	if (strcmp(kind, "rollout.rollback") == 0 && cls && strcmp(cls, "abort") == 0)
		return CONFIG_EVENT_ABORTED | CONFIG_EVENT_ROLLBACK;
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strcmp(kind, map[i].kind) == 0)
			return map[i].ev;
	return 0;
}

static void notify_line(const char *kind, const char *rollout, const json_t *det, const char *head,
                        char *out, size_t len);

/* Appends "w1=5%, w2=10%" of an object of weights to out (at *off). */
static void weights_text(const json_t *weights, char *out, size_t len, size_t *off)
{
	const char *w = NULL;
	json_t *v;

	json_object_foreach((json_t *)weights, w, v)
	{
		int k = json_is_string(v) /* "preview" */
		            ? snprintf(out + *off, len - *off, "%s%s=%s", *off ? ", " : "", w,
		                       json_string_value(v))
		            : snprintf(out + *off, len - *off, "%s%s=%.3g%%", *off ? ", " : "", w,
		                       json_number_value(v));

		if (k < 0 || (size_t)k >= len - *off)
			break;
		*off += (size_t)k;
	}
}

void notify_text(const char *kind, const char *rollout, const json_t *det, char *out, size_t len)
{
	char tag[48] = "", head[160];
	double speed = json_number_value(json_object_get(det, "rehearsal"));

	/* a rehearsal says so in every line: nobody mistakes it for production */
	if (speed > 0)
		snprintf(tag, sizeof(tag), "REHEARSAL (%gx) ", speed);
	snprintf(head, sizeof(head), "canaryd: %s", tag);
	notify_line(kind, rollout, det, head, out, len);
}

static void notify_line(const char *kind, const char *rollout, const json_t *det, const char *head,
                        char *out, size_t len)
{
	const char *reason = json_string_value(json_object_get(det, "reason"));
	const char *sname = json_string_value(json_object_get(det, "step_name"));

	if (strcmp(kind, "rollout.step") == 0) {
		char weights[256] = "";
		size_t off = 0;

		weights_text(json_object_get(det, "weights"), weights, sizeof(weights), &off);
		snprintf(out, len, "%srollout %s started step %lld of %lld (%s%s%s)%s%s", head,
		         rollout, (long long)json_integer_value(json_object_get(det, "step")) + 1,
		         (long long)json_integer_value(json_object_get(det, "of")),
		         sname ? sname : "", sname ? ", " : "",
		         json_string_value(json_object_get(det, "kind")) ?: "?", off ? ": " : "",
		         weights);
	} else if (strcmp(kind, "rollout.rollback") == 0 &&
	           json_is_true(json_object_get(det, "partial"))) {
		char weights[256] = "";
		size_t off = 0;

		weights_text(json_object_get(det, "weights"), weights, sizeof(weights), &off);
		snprintf(out, len, "%srollout %s ROLLED BACK to step %s (%s) and PAUSED: %s", head,
		         rollout, json_string_value(json_object_get(det, "rollback_to")) ?: "?",
		         weights, reason ? reason : "(no reason)");
	} else if (strcmp(kind, "rollout.rollback") == 0) {
		snprintf(out, len, "%srollout %s ROLLED BACK: %s", head, rollout,
		         reason ? reason : "(no reason)");
	} else if (strcmp(kind, "rollout.upcoming") == 0) {
		snprintf(out, len, "%srollout %s: step %lld%s%s%s (%s) opens at %s, in %s", head,
		         rollout, (long long)json_integer_value(json_object_get(det, "step")) + 1,
		         sname ? " (" : "", sname ? sname : "", sname ? ")" : "",
		         json_string_value(json_object_get(det, "what")) ?: "?",
		         json_string_value(json_object_get(det, "opens_at")) ?: "?",
		         json_string_value(json_object_get(det, "in")) ?: "?");
	} else if (strcmp(kind, "rollout.rollback.finished") == 0) {
		const char *ev = json_string_value(json_object_get(det, "evidence"));

		snprintf(out, len,
		         "%srollback of %s finished: %lld hook(s) ok, %lld failed; verify "
		         "%s; evidence %s",
		         head, rollout,
		         (long long)json_integer_value(json_object_get(det, "hooks_ok")),
		         (long long)json_integer_value(json_object_get(det, "hooks_failed")),
		         json_string_value(json_object_get(det, "verify")) ?: "?",
		         ev ? ev : "not written");
	} else if (strcmp(kind, "verdict") == 0) {
		snprintf(out, len, "%srollout %s check %s: %s", head, rollout,
		         json_string_value(json_object_get(det, "check")) ?: "?",
		         reason ? reason : "");
	} else {
		const char *what = strchr(kind, '.') ? strchr(kind, '.') + 1 : kind;

		snprintf(out, len, "%srollout %s %s%s%s%s%s", head, rollout, what,
		         sname ? " at " : "", sname ? sname : "", reason ? ": " : "",
		         reason ? reason : "");
	}
}

void notify_event(struct notify *n, const char *kind, const char *rollout, const json_t *details)
{
	const struct config_rollout *ro = n->cfg ? config_rollout_find(n->cfg, rollout) : NULL;
	unsigned ev = notify_event_of(kind, details);
	char text[1024];

	if (!ro || !ev || !n->jobs)
		return;
	notify_text(kind, rollout, details, text, sizeof(text));
	for (size_t i = 0; i < ro->nnotify; i++) {
		struct pending *p;
		json_t *body;
		char *s;
		uint64_t id;

		if (!(ro->notify[i].events & ev))
			continue;
		body = json_pack("{s:s, s:{s:s, s:s, s:O}}", "text", text, "canaryd", "event", kind,
		                 "rollout", rollout, "details", (json_t *)details);
		s = body ? json_dumps(body, JSON_COMPACT) : NULL;
		json_decref(body);
		id = s ? jobs_submit_post(n->jobs, ro->notify[i].webhook, s, NOTIFY_TIMEOUT_MS) : 0;
		free(s);
		if (!id) {
			log_warn("notification dropped: the job queue is full", "rollout", rollout,
			         "event", kind, NULL);
			continue;
		}
		if (n->npending == NOTIFY_MAX_PENDING) {
			jobs_detach(n->jobs, id);
			continue;
		}
		p = &n->pending[n->npending++];
		p->id = id;
		snprintf(p->rollout, sizeof(p->rollout), "%s", rollout);
		snprintf(p->kind, sizeof(p->kind), "%s", kind);
		/* kept for the failure log and event: without its password */
		config_url_redact(ro->notify[i].webhook, p->url, sizeof(p->url));
	}
}

/* Logs and audits one failed post. */
static void failed(struct notify *n, const struct pending *p, const struct job_result *res)
{
	char subject[160], *dt;
	json_t *details;
	int rc;

	log_warn("notification failed", "rollout", p->rollout, "event", p->kind, "url", p->url,
	         "error", res->error, NULL);
	if (!n->state)
		return;
	snprintf(subject, sizeof(subject), "rollout/%s", p->rollout);
	details = json_pack("{s:s, s:s, s:s, s:i}", "event", p->kind, "url", p->url, "error",
	                    res->error, "http_status", res->http_status);
	dt = details ? json_dumps(details, JSON_COMPACT) : NULL;
	json_decref(details);
	rc = state_event(n->state, &(struct state_event){.actor = "canaryd",
	                                                 .kind = "notify.failed",
	                                                 .subject = subject,
	                                                 .details = dt});
	if (rc) {
		char m[256];

		log_error("cannot record event", "kind", "notify.failed", "error",
		          state_errmsg(n->state, m, sizeof(m)), NULL);
	}
	free(dt);
}

void notify_poll(struct notify *n)
{
	for (size_t i = 0; n->jobs && i < n->npending;) {
		struct job_result res;
		int rc = jobs_poll(n->jobs, n->pending[i].id, &res);

		if (rc == 1) {
			i++;
			continue;
		}
		if (rc == 0) {
			if (res.status != JOB_OK)
				failed(n, &n->pending[i], &res);
			job_result_release(&res);
		}
		n->pending[i] = n->pending[--n->npending];
	}
}
