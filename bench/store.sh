#!/bin/bash
# Store commit latency, SQLite vs PostgreSQL (issue 13 section 4).
#
# Two canaryd processes with the same configuration, one on `store: sqlite:`
# (WAL, synchronous=FULL) and one on `store: postgres://` (a throwaway
# PostgreSQL 15 on loopback from tests/pg/pg-run, fsync on, synchronous_commit
# on).  Measured over HTTP with one keep-alive client, request sent -> 200
# read, in interleaved rounds (each round runs both backends, alternating which
# goes first), so drift on the machine hits both alike:
#   flag change   POST /v1/feature-flags {"feature", "percentage"}: a flag
#                 document + its flag.updated event in one transaction
#   rollout step  POST /v1/rollouts/steps/promote on a plan of pause steps:
#                 the rollout document + its rollout.step event, committed
#                 before the answer
# Beside the latencies: CPU time per operation of each canaryd process
# (utime + stime from /proc/PID/stat over its batches, divided by the
# operations), and of the PostgreSQL server (the postmaster's processes), which
# is steadier than wall time on a shared machine.
#   bench/store.sh [BUILD_DIR]     env: ROUNDS (default 10), PER_ROUND (default 20)
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-10}
PER_ROUND=${PER_ROUND:-20}
STEPS=$((ROUNDS * PER_ROUND + 2))
work=$(mktemp -d /tmp/canaryd-bench-store.XXXXXX)
pids=()
pgdir=
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[ -n "$pgdir" ] && tests/pg/pg-run stop "$pgdir"
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() {
	/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pgout=$(PG_RUN_FSYNC=on tests/pg/pg-run start)
pgurl=$(sed -n 's/^CANARYD_TEST_PG_URL=//p' <<<"$pgout")
pgdir=$(sed -n 's/^CANARYD_TEST_PG_DIR=//p' <<<"$pgout")

UP1=$(free_port)
UP2=$(free_port)
"$build/demo-upstream" --listen 127.0.0.1:$UP1 --name v1 2>/dev/null &
pids+=($!)
"$build/demo-upstream" --listen 127.0.0.1:$UP2 --name v2 2>/dev/null &
pids+=($!)

# config NAME STORE_URL ADMIN_PORT PROXY_PORT
config() {
	{
		cat <<CONF
admin:
  listen: 127.0.0.1:$3
  tokens: [{name: bench, secret: bench-token, scopes: [admin]}]
store: $2
workers: 1
listeners:
  - name: public
    listen: 127.0.0.1:$4
    routes: [{match: {path_prefix: /}, service: web}]
services:
  web:
    versions:
      v1: {endpoints: [127.0.0.1:$UP1]}
      v2: {endpoints: [127.0.0.1:$UP2]}
    stable: v1
rollouts:
  steps:
    target: {service: web, canary: v2}
    steps:
CONF
		for _ in $(seq "$STEPS"); do echo "      - pause: {}"; done
	} >"$work/$1.yaml"
}

ADMIN_SQ=$(free_port)
ADMIN_PG=$(free_port)
config sqlite "sqlite:$work/canaryd.db" "$ADMIN_SQ" "$(free_port)"
config postgres "$pgurl" "$ADMIN_PG" "$(free_port)"
declare -A cpid
for b in sqlite postgres; do
	"$build/canaryd" -c "$work/$b.yaml" 2>"$work/$b.log" &
	pids+=($!)
	cpid[$b]=$!
done
for port in "$ADMIN_SQ" "$ADMIN_PG"; do
	for _ in $(seq 200); do curl -sf -o /dev/null "http://127.0.0.1:$port/v1/health" && break; sleep 0.05; done
done

/usr/bin/python3 - "$ROUNDS" "$PER_ROUND" "$ADMIN_SQ" "$ADMIN_PG" "${cpid[sqlite]}" \
	"${cpid[postgres]}" "$(head -1 "$pgdir/data/postmaster.pid")" <<'PY'
import http.client, json, os, sys, time

rounds, per_round = int(sys.argv[1]), int(sys.argv[2])
ports = {"sqlite": int(sys.argv[3]), "postgres": int(sys.argv[4])}
pids = {"sqlite": int(sys.argv[5]), "postgres": int(sys.argv[6])}
postmaster = int(sys.argv[7])
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    """utime + stime of pid (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def pg_cpu_s():
    """The PostgreSQL server: the postmaster and its children."""
    total = cpu_s(postmaster)
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
                if int(rest[1]) == postmaster:
                    total += (int(rest[11]) + int(rest[12])) / TICK
            except (OSError, IndexError, ValueError):
                pass
    return total
HDR = {"Authorization": "Bearer bench-token", "Content-Type": "application/json"}
conns = {b: http.client.HTTPConnection("127.0.0.1", p, timeout=10) for b, p in ports.items()}


def call(b, method, path, body=None):
    c = conns[b]
    data = json.dumps(body).encode() if body is not None else None
    t0 = time.perf_counter()
    c.request(method, path, body=data, headers=HDR)
    r = c.getresponse()
    text = r.read()
    dt = (time.perf_counter() - t0) * 1e3
    if r.status not in (200, 201):
        sys.exit(f"{b}: {method} {path}: {r.status} {text[:300]!r}")
    return dt, r.status


for b in ports:
    call(b, "POST", "/v1/feature-flags", {"feature": "bench", "percentage": 0})
    call(b, "POST", "/v1/rollouts/steps/start")
    conns[b].request("GET", "/v1/health/detailed", headers=HDR)
    st = json.loads(conns[b].getresponse().read())["components"]["store"]
    assert st["backend"] == b, st

lat = {(b, op): [] for b in ports for op in ("flag change", "rollout step")}
cpu = {(b, op): 0.0 for b in ports for op in ("flag change", "rollout step")}
pgcpu = {op: 0.0 for op in ("flag change", "rollout step")}
for r in range(rounds):
    order = list(ports) if r % 2 == 0 else list(reversed(list(ports)))
    for b in order:
        c0, p0 = cpu_s(pids[b]), pg_cpu_s()
        for i in range(per_round):
            lat[(b, "flag change")].append(
                call(b, "POST", "/v1/feature-flags",
                     {"feature": "bench", "percentage": (r * per_round + i) % 100 + 1})[0])
        c1, p1 = cpu_s(pids[b]), pg_cpu_s()
        for i in range(per_round):
            lat[(b, "rollout step")].append(call(b, "POST", "/v1/rollouts/steps/promote")[0])
        c2, p2 = cpu_s(pids[b]), pg_cpu_s()
        cpu[(b, "flag change")] += c1 - c0
        cpu[(b, "rollout step")] += c2 - c1
        if b == "postgres":
            pgcpu["flag change"] += p1 - p0
            pgcpu["rollout step"] += p2 - p1


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


print(f"commit latency over HTTP (request -> 200), {rounds} interleaved rounds x {per_round}")
print(f"{'operation':<14} {'backend':<9} {'n':>5} {'p50_ms':>8} {'p99_ms':>8} {'mean_ms':>8} "
      f"{'canaryd_cpu_us/op':>18} {'server_cpu_us/op':>17}")
for op in ("flag change", "rollout step"):
    for b in ports:
        xs = lat[(b, op)]
        server = f"{pgcpu[op] / len(xs) * 1e6:>17.0f}" if b == "postgres" else f"{'(in-process)':>17}"
        print(f"{op:<14} {b:<9} {len(xs):>5} {pct(xs, 50):>8.3f} {pct(xs, 99):>8.3f} "
              f"{sum(xs) / len(xs):>8.3f} {cpu[(b, op)] / len(xs) * 1e6:>18.0f} {server}")
print(f"CPU: utime+stime from /proc/PID/stat over each backend's batches / its operations "
      f"(clock tick {1e3 / TICK:.0f} ms, so per-op figures are averages over {rounds} rounds)")
for op in ("flag change", "rollout step"):
    sq, pg = lat[("sqlite", op)], lat[("postgres", op)]
    print(f"{op}: postgres/sqlite p50 ratio {pct(pg, 50) / pct(sq, 50):.2f}, "
          f"p99 ratio {pct(pg, 99) / pct(sq, 99):.2f}")
PY
