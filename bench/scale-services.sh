#!/bin/bash
# Services at scale (issue 13 §3, docs/benchmarks.md): at 10 and 1,000 services
# (one host route each, s<i>.bench -> service s<i>):
#  1. one traffic change, API call -> the table applied on the workers: PUT
#     /v1/services/s<last>/traffic flipping the canary weight 0 <-> 100, then
#     requests through the proxy until the answer comes from the new version
#     (p50/p99 over CHANGES changes; the API call's own time alongside).
#     Target: < 5 ms at 1,000 services.
#  2. req/s of the first vs the last host route at 1,000 routes, wrk -t1 -c20,
#     rounds interleaved (first, last, first, ...), median of RUNS.
#     Target: last >= 0.95 x first.  On a loaded machine wrk's req/s swing more
#     than that from round to round, so the in-process figures of
#     bench_route_match (bench/route_match.c: ns per match, first vs last route;
#     a whole table build vs a derived one) are printed too.
#   bench/scale-services.sh [BUILD_DIR]
#   env: CHANGES (default 200), DURATION (s, default 3), RUNS (default 5)
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
CHANGES=${CHANGES:-200}
DURATION=${DURATION:-3}
RUNS=${RUNS:-5}
UP1=17401 UP2=17402 PROXY=18401 ADMIN=19401
work=$(mktemp -d /tmp/canaryd-bench-scale.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM
command -v curl >/dev/null || { echo "bench: curl missing"; exit 1; }
[ -x "$build/canaryd" ] || { echo "bench: $build/canaryd missing (build first)"; exit 1; }

"$build/demo-upstream" --listen 127.0.0.1:$UP1 --name v1 2>/dev/null & pids+=($!)
"$build/demo-upstream" --listen 127.0.0.1:$UP2 --name v2 2>/dev/null & pids+=($!)

config() { # nservices
	cat <<CONF
admin:
  listen: 127.0.0.1:$ADMIN
  tokens: [{name: bench, secret: bench-token, scopes: [admin]}]
store: sqlite:$work/canaryd-$1.db
workers: 1
listeners:
  - name: public
    listen: 127.0.0.1:$PROXY
    routes:
CONF
	for ((i = 0; i < $1; i++)); do
		echo "      - {match: {host: s$i.bench, path_prefix: /}, service: s$i}"
	done
	echo "services:"
	for ((i = 0; i < $1; i++)); do
		echo "  s$i: {versions: {v1: {endpoints: [127.0.0.1:$UP1]}, v2: {endpoints: [127.0.0.1:$UP2]}}, stable: v1}"
	done
}

start() { # nservices
	config "$1" >"$work/canaryd-$1.yaml"
	"$build/canaryd" -c "$work/canaryd-$1.yaml" 2>"$work/canaryd-$1.log" &
	pids+=($!)
	CANPID=$!
	for _ in $(seq 200); do
		curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/v1/health" && return 0
		sleep 0.05
	done
	echo "bench: canaryd did not start"; cat "$work/canaryd-$1.log"; exit 1
}

stop() {
	kill "$CANPID" 2>/dev/null || true
	wait "$CANPID" 2>/dev/null || true
}

# prints "api_p50 api_p99 applied_p50 applied_p99" (ms) for service $1
change_latency() {
	/usr/bin/python3 - "$1" "$CHANGES" "$ADMIN" "$PROXY" <<'PY'
import http.client, json, sys, time
svc, changes, admin, proxy = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
a = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
p = http.client.HTTPConnection("127.0.0.1", proxy, timeout=10)
hdr = {"Authorization": "Bearer bench-token", "Content-Type": "application/json"}
def routed():
    p.request("GET", "/x", headers={"Host": svc + ".bench"})
    r = p.getresponse(); r.read()
    return r.getheader("X-Upstream-Version")
api, applied = [], []
for i in range(changes + 5):
    want = "v2" if i % 2 == 0 else "v1"
    body = json.dumps({"canary": "v2", "weight": 100 if want == "v2" else 0})
    t0 = time.perf_counter()
    a.request("PUT", "/v1/services/%s/traffic" % svc, body=body, headers=hdr)
    r = a.getresponse(); r.read()
    t1 = time.perf_counter()
    if r.status != 200:
        sys.exit("PUT answered %d" % r.status)
    deadline = t0 + 5
    while routed() != want:
        if time.perf_counter() > deadline:
            sys.exit("the change was not applied within 5 s")
    t2 = time.perf_counter()
    if i >= 5:  # warm-up rounds dropped
        api.append((t1 - t0) * 1000); applied.append((t2 - t0) * 1000)
def q(v, f):
    v = sorted(v); return v[min(len(v) - 1, int(f * len(v)))]
print("%.2f %.2f %.2f %.2f" % (q(api, .5), q(api, .99), q(applied, .5), q(applied, .99)))
PY
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$CANPID/stat"; }
rps() { # host -> "req/s CPU-us-per-request" of canaryd over one wrk run
	local c0 out
	c0=$(cpu_ticks)
	out=$(wrk -t1 -c20 -d"${DURATION}s" -H "Host: $1" "http://127.0.0.1:$PROXY/x" 2>&1)
	awk -v c0="$c0" -v c1="$(cpu_ticks)" -v hz="$(getconf CLK_TCK)" '
		/requests in/ {n = $1} /Requests\/sec/ {r = $2}
		END {printf "%s %.1f\n", r, (c1 - c0) / hz * 1e6 / (n ? n : 1)}' <<<"$out"
}
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

echo "canaryd services at scale ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), build $build)"
printf "%-10s %-28s %-28s\n" services "API call p50/p99 (ms)" "change applied p50/p99 (ms)"
for n in 10 1000; do
	start "$n"
	read -r ap50 ap99 p50 p99 < <(change_latency "s$((n - 1))")
	printf "%-10s %-28s %-28s\n" "$n" "$ap50 / $ap99" "$p50 / $p99"
	if [ "$n" = 1000 ]; then
		if command -v wrk >/dev/null; then
			: >"$work/first" && : >"$work/last"
			for ((r = 0; r < RUNS; r++)); do
				rps s0.bench >>"$work/first"
				rps "s$((n - 1)).bench" >>"$work/last"
			done
			first=$(cut -d' ' -f1 "$work/first" | median)
			last=$(cut -d' ' -f1 "$work/last" | median)
			cfirst=$(cut -d' ' -f2 "$work/first" | median)
			clast=$(cut -d' ' -f2 "$work/last" | median)
			echo
			echo "req/s at $n host routes (wrk -t1 -c20, ${DURATION}s, median of $RUNS interleaved):"
			printf "  first route %s   last route %s   last/first %s\n" "$first" "$last" \
				"$(awk -v a="$last" -v b="$first" 'BEGIN {printf "%.3f", a / b}')"
			printf "  canaryd CPU per request: first %s us   last %s us\n" "$cfirst" "$clast"
		else
			echo "(wrk missing: scripts/install-deps --bench; route req/s skipped)"
		fi
	fi
	stop
done
if [ -x "$build/bench_route_match" ]; then
	echo
	echo "in process (bench_route_match, best of 5):"
	for n in 10 1000; do echo "  $("$build/bench_route_match" "$n")"; done
fi
