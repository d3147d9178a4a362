#!/bin/bash
# Feature-flag benchmarks (issue 5, docs/benchmarks.md "Feature flags"), in one run:
#  1. OFREP single-flag evaluation (POST /ofrep/v1/evaluate/flags/{key}) vs
#     Unleash 8's frontend evaluation (POST /api/frontend), same flag logic, same
#     wrk settings (-t1 -c50), runs alternating between the two, median of RUNS;
#     Unleash runs on Node against a PostgreSQL cluster this script creates
#     (initdb, loopback port, torn down at the end).
#  2. In-process evaluation ns/call, flag with 3 rules: bench_flags_eval
#     (flag_eval), bench_client_eval (libcanary, when built) and unleash-client's
#     isEnabled (bench/unleash/isenabled.cjs).
#  3. Change -> SUBSCRIBERS stream subscribers: bench_sse_fanout.
#   bench/flags.sh [BUILD_DIR]
#   env: DURATION (s, default 5), RUNS (default 3), SUBSCRIBERS (1000), CHANGES (20)
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
RUNS=${RUNS:-3}
SUBSCRIBERS=${SUBSCRIBERS:-1000}
CHANGES=${CHANGES:-20}
CAN=17301 UNL=17342 PGPORT=17343
ADMIN_TOKEN=bench-admin-token EVAL_TOKEN=bench-eval-token
UNL_ADMIN='*:*.bench-unleash-admin'
UNL_FRONT='default:development.bench-unleash-frontend'
work=$(mktemp -d /tmp/canaryd-bench-flags.XXXXXX)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
pids=()
pg_ctl_cmd=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ ${#pg_ctl_cmd[@]} -gt 0 ]; then
		"${pg_ctl_cmd[@]}" -D "$work/pg/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

for t in wrk curl node npm; do
	command -v $t >/dev/null || { echo "bench: $t missing (scripts/install-deps --bench; Node 20 and npm)"; exit 1; }
done
for b in bench_flags_eval bench_sse_fanout canaryd; do
	[ -x "$build/$b" ] || cmake --build "$build" --target "$b" >/dev/null
done
# libcanary's figure comes from bench/client_eval.c when the tree has it
[ -x "$build/bench_client_eval" ] || [ ! -f bench/client_eval.c ] ||
	cmake --build "$build" --target bench_client_eval >/dev/null 2>&1 || true

to_ms() { # wrk latency "1.23ms" / "800.00us" / "1.02s"
	case "$1" in
	*us) echo "$1" | sed 's/us//' | awk '{printf "%.3f", $1/1000}' ;;
	*ms) echo "$1" | sed 's/ms//' | awk '{printf "%.3f", $1}' ;;
	*s) echo "$1" | sed 's/s//' | awk '{printf "%.3f", $1*1000}' ;;
	*) echo "nan" ;;
	esac
}
# prints "rps p50_ms p99_ms", or fails when any answer was not 2xx
measure() { # lua url
	local out rps p50 p99
	out=$(wrk -t1 -c50 -d"${DURATION}s" --latency -s "$1" "$2" 2>&1)
	if echo "$out" | grep -q "Non-2xx\|Socket errors"; then
		echo "bench: errors against $2:" >&2
		echo "$out" | grep -E "Non-2xx|Socket" >&2
		return 1
	fi
	rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
	p50=$(echo "$out" | awk '$1=="50%" {print $2}')
	p99=$(echo "$out" | awk '$1=="99%" {print $2}')
	echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}
median() { # reads lines "rps p50 p99", prints the line with the median rps
	sort -n -k1,1 | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'
}

# The flag, for both: three rules and a 25% fallthrough split; the load's
# contexts match no rule, so every rule is tried and the split decides.
# Unleash has no fallthrough: its equivalent is a fourth, unconstrained
# gradual rollout strategy (bench/unleash/toggle.json has the same toggle).
cat >"$work/canaryd.yaml" <<CONF
admin:
  listen: 127.0.0.1:$CAN
  tokens:
    - {name: bench, secret: $ADMIN_TOKEN, scopes: [admin]}
    - {name: app, secret: $EVAL_TOKEN, scopes: [evaluate]}
store: sqlite:$work/canaryd.db
workers: 1
segments:
  internal: {match: [{attr: email, op: ends_with, values: ["@novacron.io"]}]}
  premium: {match: [{attr: plan, op: in, values: [gold, platinum]}]}
  beta: {match: [{attr: beta, op: eq, values: ["true"]}]}
flags:
  bench_flag:
    rules:
      - {segment: internal, serve: "on"}
      - {segment: premium, rollout: {"on": 50}}
      - {segment: beta, serve: "on"}
    rollout: {"on": 25}
CONF
lua_body() { # path header-line key-name extra-context-json
	cat <<LUA
local n = 0
request = function()
  n = n + 1
  local u = "user-" .. (n % 100000)
  local body = '{"context":{"$3":"' .. u .. '","email":"' .. u .. '@example.com",' ..
    '"plan":"free","beta":"false","country":"DE"$4}}'
  return wrk.format("POST", "$1", {["Authorization"] = "$2",
    ["Content-Type"] = "application/json"}, body)
end
LUA
}
lua_body /ofrep/v1/evaluate/flags/bench_flag "Bearer $EVAL_TOKEN" targetingKey "" >"$work/ofrep.lua"
# the frontend SDKs send a sessionId; without one Unleash draws a random one per request
lua_body /api/frontend "$UNL_FRONT" userId ',"sessionId":"s-'"'"' .. u .. '"'"'"' >"$work/unleash.lua"

# ---------------------------------------------------------------- npm
unleash_error=""
(
	cd bench/unleash
	if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
		echo "bench: npm ci in bench/unleash (unleash-server, unleash-client)" >&2
		# no install scripts: nothing here needs a native build, and one of them is telemetry
		timeout 600 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2
		# the never-built C sources of optional native addons (ssh2, cpu-features, nan)
		# are not ours: scripts/check-source checks every *.[ch] under bench/
		find node_modules -name '*.[ch]' -type f -delete
	fi
) || unleash_error="npm ci failed"
UNL_VER=$(node -p "require('./bench/unleash/node_modules/unleash-server/package.json').version" 2>/dev/null || echo "?")
UCL_VER=$(node -p "require('./bench/unleash/node_modules/unleash-client/package.json').version" 2>/dev/null || echo "?")
NODE_VER=$(node --version)

# ---------------------------------------------------------------- canaryd
# 1000 stream subscribers need 1000 descriptors in canaryd too
ulimit -n $((SUBSCRIBERS + 1024)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
"$build/canaryd" -c "$work/canaryd.yaml" 2>"$work/canaryd.log" &
pids+=($!)
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$CAN/v1/health" && break; sleep 0.05; done
probe=$(curl -s -X POST -H "Authorization: Bearer $EVAL_TOKEN" \
	-d '{"context":{"targetingKey":"user-1","email":"user-1@example.com","plan":"free","beta":"false"}}' \
	"http://127.0.0.1:$CAN/ofrep/v1/evaluate/flags/bench_flag")
case $probe in *'"reason":"SPLIT"'*) ;; *) echo "bench: canaryd OFREP probe answered: $probe" >&2; exit 1 ;; esac

# ---------------------------------------------------------------- unleash
start_unleash() {
	local pgbin
	pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
	[ -n "$pgbin" ] || { unleash_error="PostgreSQL missing (scripts/install-deps --bench)"; return 1; }
	PG_VER=$("$pgbin/postgres" --version | awk '{print $3}')
	mkdir -p "$work/pg"
	local as=()
	if [ "$(id -u)" = 0 ]; then # initdb refuses root: the cluster belongs to postgres
		chmod 711 "$work"
		chown postgres: "$work/pg"
		as=(runuser -u postgres --)
	fi
	"${as[@]}" "$pgbin/initdb" -D "$work/pg/data" -A trust -U unleash -E UTF8 --no-sync \
		>"$work/initdb.log" 2>&1 || { unleash_error="initdb failed: $(tail -1 "$work/initdb.log")"; return 1; }
	pg_ctl_cmd=("${as[@]}" "$pgbin/pg_ctl")
	# fsync off only makes Unleash's migrations start faster; evaluation reads memory
	"${pg_ctl_cmd[@]}" -D "$work/pg/data" -l "$work/pg/pg.log" -w -t 30 \
		-o "-p $PGPORT -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null ||
		{ unleash_error="pg_ctl start failed: $(tail -1 "$work/pg/pg.log" 2>/dev/null)"; return 1; }
	"$pgbin/createdb" -h 127.0.0.1 -p $PGPORT -U unleash unleash ||
		{ unleash_error="createdb failed"; return 1; }
	(cd bench/unleash && exec env NODE_ENV=production UNLEASH_PORT=$UNL PGPORT=$PGPORT \
		PGUSER=unleash PGDATABASE=unleash CHECK_VERSION=false SEND_TELEMETRY=false \
		INIT_ADMIN_API_TOKENS="$UNL_ADMIN" INIT_FRONTEND_API_TOKENS="$UNL_FRONT" \
		node server.mjs >"$work/unleash.log" 2>&1) &
	pids+=($!)
	local i
	for i in $(seq 1200); do
		curl -sf -o /dev/null "http://127.0.0.1:$UNL/health" && break
		kill -0 "${pids[-1]}" 2>/dev/null || { unleash_error="unleash exited: $(tail -3 "$work/unleash.log")"; return 1; }
		sleep 0.1
	done
	[ "$i" -lt 1200 ] || { unleash_error="unleash not healthy in 120 s"; return 1; }
	# the same flag as canaryd's (bench/unleash/toggle.json): context fields, the
	# toggle, its four strategies in order, then on in the development environment
	local u="http://127.0.0.1:$UNL/api/admin" c s code
	ua() { curl -s -o "$work/ua.out" -w '%{http_code}' -H "Authorization: $UNL_ADMIN" \
		-H 'Content-Type: application/json' "$@"; }
	for c in email plan beta; do
		code=$(ua -X POST "$u/context" -d "{\"name\":\"$c\"}")
		[ "$code" = 201 ] || { unleash_error="context $c: $code $(cat "$work/ua.out")"; return 1; }
	done
	code=$(ua -X POST "$u/projects/default/features" -d '{"name":"bench_flag","type":"release"}')
	[ "$code" = 201 ] || { unleash_error="create toggle: $code $(cat "$work/ua.out")"; return 1; }
	for i in 0 1 2 3; do
		s=$(node -e 'const t=require("./bench/unleash/toggle.json").strategies[+process.argv[1]];
			console.log(JSON.stringify({name:t.name,constraints:t.constraints,parameters:t.parameters}))' "$i")
		code=$(ua -X POST "$u/projects/default/features/bench_flag/environments/development/strategies" -d "$s")
		[ "$code" = 200 ] || { unleash_error="strategy $i: $code $(cat "$work/ua.out")"; return 1; }
	done
	code=$(ua -X POST "$u/projects/default/features/bench_flag/environments/development/on")
	[ "$code" = 200 ] || { unleash_error="enable: $code $(cat "$work/ua.out")"; return 1; }
	# the frontend API serves from a cache that catches up with changes: wait for it
	for i in $(seq 600); do
		curl -s -X POST -H "Authorization: $UNL_FRONT" -H 'Content-Type: application/json' \
			-d '{"context":{"userId":"u1","email":"u1@novacron.io"}}' \
			"http://127.0.0.1:$UNL/api/frontend" | grep -q '"name":"bench_flag","enabled":true' && break
		sleep 0.1
	done
	[ "$i" -lt 600 ] || { unleash_error="the toggle never reached /api/frontend in 60 s"; return 1; }
}
PG_VER="?"
[ -n "$unleash_error" ] || start_unleash || true

# ---------------------------------------------------------------- 1. remote evaluation
# Both servers are up (the idle one waits in epoll / Node's loop); their runs
# alternate, so background load on a shared machine hits both alike.
CAN_URL="http://127.0.0.1:$CAN/ofrep/v1/evaluate/flags/bench_flag"
UNL_URL="http://127.0.0.1:$UNL/api/frontend"
measure "$work/ofrep.lua" "$CAN_URL" >/dev/null # warm-ups (Node's JIT too)
[ -n "$unleash_error" ] || measure "$work/unleash.lua" "$UNL_URL" >/dev/null ||
	unleash_error="errors under load (see above)"
can_runs="" unl_runs=""
for _ in $(seq "$RUNS"); do
	can_runs+="$(measure "$work/ofrep.lua" "$CAN_URL")"$'\n'
	if [ -z "$unleash_error" ]; then
		unl_runs+="$(measure "$work/unleash.lua" "$UNL_URL")"$'\n' ||
			unleash_error="errors under load (see above)"
	fi
done
CAN_RES=$(printf '%s' "$can_runs" | median)
UNL_RES=""
[ -n "$unleash_error" ] || UNL_RES=$(printf '%s' "$unl_runs" | median)
CAN_ALL=$(printf '%s' "$can_runs" | awk '{printf "%s%.0f", (NR > 1 ? " " : ""), $1}')
UNL_ALL=$(printf '%s' "$unl_runs" | awk '{printf "%s%.0f", (NR > 1 ? " " : ""), $1}')

# ---------------------------------------------------------------- 3. stream fan-out
SSE_OUT=$("$build/bench_sse_fanout" --port $CAN --token $ADMIN_TOKEN --flag bench_flag \
	--subscribers "$SUBSCRIBERS" --changes "$CHANGES" 2>"$work/sse.err") || {
	echo "bench: sse_fanout failed:" >&2
	cat "$work/sse.err" >&2
	SSE_OUT=""
}

# the servers go before the in-process runs
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()

# ---------------------------------------------------------------- 2. in-process
EVAL_OUT=$("$build/bench_flags_eval")
CLIENT_OUT="not built"
if [ -x "$build/bench_client_eval" ]; then
	CLIENT_OUT=$("$build/bench_client_eval" 2>&1 | grep -E 'ns' | tail -1) || CLIENT_OUT="failed"
fi
ISEN_OUT=$(cd bench/unleash && timeout 120 node isenabled.cjs) || ISEN_OUT=""

# ---------------------------------------------------------------- table
echo
echo "Feature-flag benchmarks (issue 5); $(nproc) cores, load tool and servers on loopback;"
echo "load average (1/5/15 min) at the start $load_start, at the end $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "1. Single-flag remote evaluation: wrk -t1 -c50 -d${DURATION}s, POST with a 5-attribute context,"
echo "   median of $RUNS alternating runs after a warm-up each; canaryd 1 worker (OFREP on its admin loop),"
echo "   Unleash $UNL_VER on Node $NODE_VER, PostgreSQL $PG_VER"
printf '%-34s %10s %9s %9s   %s\n' target req/s p50_ms p99_ms 'req/s of each run'
read -r c_rps c_p50 c_p99 <<<"$CAN_RES"
printf '%-34s %10.0f %9s %9s   %s\n' "canaryd OFREP /ofrep/v1/.../{key}" "$c_rps" "$c_p50" "$c_p99" "$CAN_ALL"
if [ -n "$UNL_RES" ]; then
	read -r u_rps u_p50 u_p99 <<<"$UNL_RES"
	printf '%-34s %10.0f %9s %9s   %s\n' "Unleash /api/frontend" "$u_rps" "$u_p50" "$u_p99" "$UNL_ALL"
	awk -v c="$c_rps" -v u="$u_rps" -v cp="$c_p99" -v up="$u_p99" 'BEGIN {
		printf "   canaryd/Unleash: %.1fx req/s (target >= 20x: %s), p99 %.3f vs %.3f ms\n",
			c/u, (c/u >= 20 ? "met" : "NOT met"), cp, up }'
else
	echo "Unleash /api/frontend              unavailable: $unleash_error"
fi

echo
echo "2. In-process evaluation, flag with 3 rules + fallthrough split, contexts matching no rule"
printf '%-34s %10s\n' what ns/call
e_ns=$(echo "$EVAL_OUT" | awk '/^flag_eval / {print $2}')
f_ns=$(echo "$EVAL_OUT" | awk '/^flagset_find\+flag_eval / {print $2}')
printf '%-34s %10s\n' "canaryd flag_eval" "$e_ns"
printf '%-34s %10s\n' "canaryd flagset_find + flag_eval" "$f_ns"
c_ns=$(echo "$CLIENT_OUT" | grep -oE '[0-9]+(\.[0-9]+)? ?ns' | head -1 | grep -oE '[0-9]+(\.[0-9]+)?' || true)
if [ -n "$c_ns" ]; then
	printf '%-34s %10s\n' "libcanary canary_eval_bool" "$c_ns"
else
	printf '%-34s %10s   (bench_client_eval: %s)\n' "libcanary canary_eval_bool" - "$CLIENT_OUT"
fi
i_ns=$(echo "$ISEN_OUT" | awk '{print $3}')
printf '%-34s %10s\n' "unleash-client $UCL_VER isEnabled" "${i_ns:-failed}"
awk -v e="$e_ns" -v i="${i_ns:-0}" 'BEGIN {
	printf "   target flag_eval <= 100 ns: %s", (e <= 100 ? "met" : "NOT met")
	if (i > 0) printf "; unleash-client/canaryd: %.1fx", i/e
	printf "\n" }'

echo
echo "3. Change -> $SUBSCRIBERS SSE subscribers (GET /v1/feature-flags/stream), $CHANGES changes"
echo "   (seed POST /v1/feature-flags), from writing the change to reading its event, every pair"
if [ -n "$SSE_OUT" ]; then
	set -- $SSE_OUT
	# subscribers N changes C p50 X ms p99 Y ms max Z ms samples S missing M dropped D ack_p50 A ms connect_all T ms
	printf '%-12s %9s %9s %9s %9s %8s %10s\n' subscribers p50_ms p99_ms max_ms samples missing ack_p50_ms
	printf '%-12s %9s %9s %9s %9s %8s %10s\n' "$2" "$6" "$9" "${12}" "${15}" "${17}" "${21}"
	awk -v p="$9" 'BEGIN { printf "   target p99 < 50 ms: %s\n", (p < 50 ? "met" : "NOT met") }'
else
	echo "   failed: $(cat "$work/sse.err" 2>/dev/null | tail -3)"
fi
