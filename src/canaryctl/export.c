/*
 * export.c - `canaryctl export prometheus-rules|grafana-dashboard` (SPEC 8,
 * docs/metrics.md "Exports"): alert rules and a dashboard over the metrics
 * canaryd exports, printed on stdout.  Needs no server: the output depends
 * only on the options, so it can be generated in CI and committed.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "canaryctl/ctl.h"
#include "config/config.h"

#define EXPORT_USAGE                                           \
	"export prometheus-rules [--mitigate-bound SECONDS]\n" \
	"  export grafana-dashboard [--service S]"

/* ------------------------------------------------------------------------ */
/* Prometheus alerting rules                                                  */

struct rule {
	const char *alert;
	const char *expr; /* may hold one %s: the mitigation bound */
	const char *for_;
	const char *severity;
	const char *summary;
	const char *description;
};

/*
 * critical: traffic was or is at risk (a rollback, a failed rollback, the
 * store away, mitigation too slow); warning: a human is needed to move on.
 */
static const struct rule rules[] = {
    {"CanarydRollback", "increase(canaryd_rollbacks_total[10m]) > 0", "0s", "critical",
     "Rollout {{ $labels.rollout }} was rolled back ({{ $labels.reason }})",
     "canaryd rolled back {{ $labels.rollout }} (reason class {{ $labels.reason }}); see "
     "`canaryctl rollout get {{ $labels.rollout }}` and its evidence bundle."},
    {"CanarydRolloutFailed", "canaryd_rollout_state{state=\"failed\"} == 1", "0s", "critical",
     "Rollout {{ $labels.rollout }} failed",
     "The rollback of {{ $labels.rollout }} did not complete (a hook or verification "
     "failed): traffic may still reach the canary."},
    {"CanarydAwaitingApproval", "canaryd_rollout_waiting{reason=\"approval\"} == 1", "30m",
     "warning", "Rollout {{ $labels.rollout }} awaits approval",
     "The current step of {{ $labels.rollout }} has waited 30 minutes for its approvers."},
    {"CanarydPausedForReview",
     "canaryd_rollout_waiting{reason=\"review\"} == 1 or canaryd_rollout_state{state=\"paused\"} "
     "== 1",
     "15m", "warning", "Rollout {{ $labels.rollout }} is paused",
     "{{ $labels.rollout }} has been paused (awaiting review or resume) for 15 minutes."},
    {"CanarydCheckFailing", "increase(canaryd_check_verdict_total{verdict=\"fail\"}[5m]) > 0", "1m",
     "warning", "Check {{ $labels.check }} of {{ $labels.rollout }} is failing",
     "The check {{ $labels.check }} of rollout {{ $labels.rollout }} returned fail verdicts "
     "in the last 5 minutes."},
    {"CanarydNoEvidence", "canaryd_rollout_waiting{reason=\"evidence\"} == 1", "15m", "warning",
     "Rollout {{ $labels.rollout }} waits for evidence",
     "The current step of {{ $labels.rollout }} has not gathered enough requests for its "
     "checks in 15 minutes (no traffic to the canary or the baseline?)."},
    {"CanarydFleetNodeLagging", "canaryd_fleet_lag_revisions > 0", "2m", "warning",
     "canaryd node {{ $labels.instance }} lags the fleet",
     "{{ $labels.instance }} has not applied {{ $value }} known revisions for 2 minutes."},
    {"CanarydStoreUnavailable", "canaryd_store_up == 0", "1m", "critical",
     "canaryd on {{ $labels.instance }} cannot reach its store",
     "Routing and flags keep their last state; every write is refused (503) until the "
     "store is back."},
    {"CanarydSlowMitigation", "canaryd_time_to_mitigate_seconds > %s", "0s", "critical",
     "Rollback of {{ $labels.rollout }} took {{ $value }}s to mitigate",
     "Time from the rollback decision to every worker routing no new request to the canary "
     "was above the bound."},
};

/* Prints s as a YAML double-quoted scalar. */
static void yq(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			putchar('\\');
		putchar(*s);
	}
	putchar('"');
}

static int prometheus_rules(const char *bound)
{
	printf("# canaryd alerting rules: canaryctl export prometheus-rules (docs/metrics.md)\n"
	       "groups:\n"
	       "  - name: canaryd\n"
	       "    rules:\n");
	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		const struct rule *r = &rules[i];
		char expr[512];

		if (strstr(r->expr, "%s"))
			snprintf(expr, sizeof(expr), "canaryd_time_to_mitigate_seconds > %s",
			         bound);
		else
			snprintf(expr, sizeof(expr), "%s", r->expr);
		printf("      - alert: %s\n        expr: ", r->alert);
		yq(expr);
		printf("\n        for: %s\n        labels:\n          severity: %s\n"
		       "        annotations:\n          summary: ",
		       r->for_, r->severity);
		yq(r->summary);
		printf("\n          description: ");
		yq(r->description);
		putchar('\n');
	}
	return CTL_OK;
}

/* ------------------------------------------------------------------------ */
/* Grafana dashboard                                                          */

struct panel {
	const char *title;
	const char *type; /* timeseries, stat, state-timeline */
	const char *unit;
	const char *legend;
	const char *expr; /* $service: the template variable */
};

#define SVC  "service=~\"$service\""
#define RATE "[$__rate_interval]"

static const struct panel panels[] = {
    {"Request rate by version and cohort", "timeseries", "reqps",
     "{{service}} {{version}} {{cohort}}",
     "sum by (service, version, cohort) (rate(canaryd_requests_total{" SVC "}" RATE "))"},
    {"Error rate: canary vs baseline", "timeseries", "percentunit",
     "{{service}} {{version}} {{cohort}}",
     "(sum by (service, version, cohort) (rate(canaryd_requests_total{" SVC ",code=\"5xx\"}" RATE
     ")) or 0 * sum by (service, version, cohort) "
     "(rate(canaryd_requests_total{" SVC "}" RATE "))) / sum by (service, version, cohort) "
     "(rate(canaryd_requests_total{" SVC "}" RATE "))"},
    {"Latency p50", "timeseries", "s", "{{service}} {{version}} {{cohort}}",
     "histogram_quantile(0.5, sum by (service, version, cohort, le) "
     "(rate(canaryd_request_duration_seconds_bucket{" SVC "}" RATE ")))"},
    {"Latency p99", "timeseries", "s", "{{service}} {{version}} {{cohort}}",
     "histogram_quantile(0.99, sum by (service, version, cohort, le) "
     "(rate(canaryd_request_duration_seconds_bucket{" SVC "}" RATE ")))"},
    {"Canary weight", "timeseries", "percent", "{{rollout}} {{target}}",
     "canaryd_target_weight{target=~\"$service\"}"},
    {"Rollout state", "state-timeline", "none", "{{rollout}}",
     "max by (rollout, state) (canaryd_rollout_state) == 1"},
    {"Rollout step", "timeseries", "none", "{{rollout}}", "canaryd_rollout_step"},
    {"Check verdicts", "timeseries", "none", "{{rollout}} {{check}} {{verdict}}",
     "sum by (rollout, check, verdict) (increase(canaryd_check_verdict_total" RATE "))"},
    {"Rollbacks", "stat", "none", "{{rollout}} {{reason}}",
     "sum by (rollout, reason) (canaryd_rollbacks_total) > 0"},
    {"Flag evaluations by variant", "timeseries", "reqps", "{{flag}} {{variant}}",
     "sum by (flag, variant) (rate(canaryd_flag_evaluations_total" RATE "))"},
    {"Time to detect (last rollback)", "stat", "s", "{{rollout}}",
     "canaryd_time_to_detect_seconds"},
    {"Time to mitigate (last rollback)", "stat", "s", "{{rollout}}",
     "canaryd_time_to_mitigate_seconds"},
};

static json_t *datasource(void)
{
	return json_pack("{s:s, s:s}", "type", "prometheus", "uid", "${datasource}");
}

static json_t *grafana_dashboard(const char *service)
{
	json_t *list = json_array(), *vars = json_array(), *d;
	char uid[80], title[160];

	for (size_t i = 0; i < sizeof(panels) / sizeof(panels[0]); i++) {
		const struct panel *p = &panels[i];
		int w = strcmp(p->type, "stat") == 0 ? 8 : 12;

		json_array_append_new(
		    list,
		    json_pack(
		        "{s:I, s:s, s:s, s:o, s:{s:I, s:I, s:I, s:I}, s:{s:{s:s}, s:[]}, s:[{s:o, "
		        "s:s, s:s, s:s, s:b}]}",
		        "id", (json_int_t)(i + 1), "title", p->title, "type", p->type, "datasource",
		        datasource(), "gridPos", "h", (json_int_t)8, "w", (json_int_t)w, "x",
		        (json_int_t)((i % 2) * 12), "y", (json_int_t)((i / 2) * 8), "fieldConfig",
		        "defaults", "unit", p->unit, "overrides", "targets", "datasource",
		        datasource(), "refId", "A", "expr", p->expr, "legendFormat", p->legend,
		        "range", 1));
	}
	json_array_append_new(vars, json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s}}", "name",
	                                      "datasource", "label", "Prometheus", "type",
	                                      "datasource", "query", "prometheus", "current",
	                                      "text", "default", "value", "default"));
	if (service)
		json_array_append_new(
		    vars, json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s}, s:b}", "name", "service",
		                    "label", "Service", "type", "constant", "query", service,
		                    "current", "text", service, "value", service, "hide", 2));
	else
		json_array_append_new(
		    vars,
		    json_pack("{s:s, s:s, s:s, s:o, s:{s:s, s:s}, s:I, s:b, s:b, s:s, s:{s:s, "
		              "s:s}}",
		              "name", "service", "label", "Service", "type", "query", "datasource",
		              datasource(), "current", "text", "All", "value", "$__all", "refresh",
		              (json_int_t)2, "includeAll", 1, "multi", 1, "allValue", ".*", "query",
		              "query", "label_values(canaryd_requests_total, service)", "refId",
		              "service"));
	snprintf(uid, sizeof(uid), "canaryd%s%s", service ? "-" : "", service ? service : "");
	snprintf(title, sizeof(title), "canaryd%s%s", service ? ": " : "", service ? service : "");
	d = json_pack("{s:s, s:s, s:I, s:I, s:[s], s:s, s:{s:s, s:s}, s:s, s:b, s:o, s:{s:o}, "
	              "s:{s:[]}}",
	              "uid", uid, "title", title, "schemaVersion", (json_int_t)39, "version",
	              (json_int_t)1, "tags", "canaryd", "timezone", "browser", "time", "from",
	              "now-1h", "to", "now", "refresh", "10s", "editable", 1, "panels", list,
	              "templating", "list", vars, "annotations", "list");
	return d;
}

int ctl_export(const struct ctl *ctl, int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : NULL;

	if (!what)
		return ctl_usage_error(EXPORT_USAGE, "export needs what to export");
	if (strcmp(what, "-h") == 0 || strcmp(what, "--help") == 0) {
		printf("usage: canaryctl " EXPORT_USAGE "\n");
		return CTL_OK;
	}
	if (strcmp(what, "prometheus-rules") == 0) {
		const char *bound = "5";

		for (int i = 2; i < argc; i++) {
			char *end;

			if (strcmp(argv[i], "--mitigate-bound") == 0 && i + 1 < argc) {
				bound = argv[++i];
				if (strtod(bound, &end) <= 0 || *end || end == bound)
					return ctl_usage_arg(
					    EXPORT_USAGE,
					    "--mitigate-bound needs a positive number of seconds:",
					    bound);
			} else {
				return ctl_usage_arg(EXPORT_USAGE, "unknown argument", argv[i]);
			}
		}
		return prometheus_rules(bound);
	}
	if (strcmp(what, "grafana-dashboard") == 0) {
		const char *service = NULL;
		json_t *d;
		char *text;

		for (int i = 2; i < argc; i++) {
			if (strcmp(argv[i], "--service") == 0 && i + 1 < argc) {
				service = argv[++i];
				if (!config_valid_name(service))
					return ctl_usage_arg(EXPORT_USAGE, "invalid service name",
					                     service);
			} else {
				return ctl_usage_arg(EXPORT_USAGE, "unknown argument", argv[i]);
			}
		}
		d = grafana_dashboard(service);
		text = d ? json_dumps(d, JSON_INDENT(2)) : NULL;
		json_decref(d);
		if (!text) {
			fprintf(stderr, "canaryctl: out of memory\n");
			return CTL_FAILED;
		}
		puts(text);
		free(text);
		return CTL_OK;
	}
	return ctl_usage_arg(EXPORT_USAGE, "unknown export", what);
}
