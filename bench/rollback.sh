#!/bin/bash
# Rollback benchmark (SPEC 10: "failing verdict -> no new canary request on any
# worker < 10 ms").  canaryd with 2 workers under 2000 req/s of open-loop load
# (loadgen), a canary answering 50% errors at 20%; each run starts the
# rollout, waits for the automatic rollback and reads:
#   - time_to_mitigate_us of the rollout.mitigated event (decision -> every
#     worker routes with the zero weight), with its persist/publish/workers split;
#   - the canary upstream's last_request_ms minus the decision time (its own
#     clock: the last request it saw; a request routed before the switch may
#     still arrive after it, on the wire).
#   bench/rollback.sh [BUILD_DIR]      env: RUNS (default 5)
# No peer runs here: Argo Rollouts and Flagger need Kubernetes and act through
# a controller loop and the mesh's config push (seconds); the row is the target.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
work=$(mktemp -d /tmp/canaryd-bench-rb.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

UP1=17201 UP2=17202 PROXY=18201 ADMIN=19201
"$build/demo-upstream" --listen 127.0.0.1:$UP1 --name v1 2>/dev/null & pids+=($!)
"$build/demo-upstream" --listen 127.0.0.1:$UP2 --name v2 --error-rate 0.5 2>/dev/null & pids+=($!)
cat >"$work/canaryd.yaml" <<CONF
admin:
  listen: 127.0.0.1:$ADMIN
  tokens: [{name: bench, secret: bench-token, scopes: [admin]}]
store: sqlite:$work/canaryd.db
workers: 2
listeners:
  - name: public
    listen: 127.0.0.1:$PROXY
    routes: [{match: {path_prefix: /}, service: web}]
services:
  web:
    versions:
      v1: {endpoints: [127.0.0.1:$UP1]}
      v2: {endpoints: [127.0.0.1:$UP2]}
    stable: v1
    sticky: header:x-user-id
rollouts:
  bad:
    target: {service: web, canary: v2}
    steps: [{weight: 20, for: 1h}]
    analysis:
      interval: 1s
      checks: [{name: errors, metric: error_rate, max_increase: 0.05, min_samples: 50}]
    rollback: {drain: 0s}
CONF
CANARYD_EVIDENCE_DIR=$work/evidence "$build/canaryd" -c "$work/canaryd.yaml" 2>"$work/canaryd.log" &
pids+=($!)
auth="Authorization: Bearer bench-token"
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/v1/health" && break; sleep 0.05; done
"$build/loadgen" --url "http://127.0.0.1:$PROXY/" --rate 2000 --duration 0 >/dev/null 2>&1 &
pids+=($!)
sleep 1

printf '%-4s %12s %10s %10s %10s %9s %22s\n' run ttm_ms persist_ms publish_ms workers_ms confirmed canary_last-decision_ms
results=()
for i in $(seq "$RUNS"); do
	if [ "$i" = 1 ]; then verb=start; else verb=retry; fi
	curl -sf -X POST -H "$auth" "http://127.0.0.1:$ADMIN/v1/rollouts/bad/$verb" >/dev/null
	for _ in $(seq 200); do
		st=$(curl -s -H "$auth" "http://127.0.0.1:$ADMIN/v1/rollouts/bad" |
			/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
		[ "$st" = rolled_back ] && break
		sleep 0.05
	done
	sleep 0.5
	line=$(curl -s -H "$auth" "http://127.0.0.1:$ADMIN/v1/rollouts/bad/events?limit=1000" |
		/usr/bin/python3 -c '
import json, sys, urllib.request
doc = json.load(sys.stdin)
evs = doc["events"] if isinstance(doc, dict) else doc
m = [e["details"] for e in evs if e["kind"] == "rollout.mitigated"][-1]
s = json.load(urllib.request.urlopen("http://127.0.0.1:'$UP2'/_upstream/stats"))
print("%.3f %.3f %.3f %.3f %s %d" % (m["time_to_mitigate_us"] / 1e3, m["persist_us"] / 1e3,
      m["publish_us"] / 1e3, m["workers_us"] / 1e3, m["all_workers_confirmed"],
      s["last_request_ms"] - m["decision_ms"]))')
	read -r ttm per pub wrk conf last <<<"$line"
	printf '%-4s %12s %10s %10s %10s %9s %22s\n' "$i" "$ttm" "$per" "$pub" "$wrk" "$conf" "$last"
	results+=("$ttm")
done
median=$(printf '%s\n' "${results[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
max=$(printf '%s\n' "${results[@]}" | sort -n | tail -1)
echo
printf 'time to mitigate: median %s ms, max %s ms over %s runs; target < 10 ms -> %s\n' \
	"$median" "$max" "$RUNS" "$(awk -v m="$max" 'BEGIN {print (m < 10) ? "met" : "NOT met"}')"
