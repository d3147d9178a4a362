#!/bin/bash
# Fleet mode (issue 14): change propagation, failover, proxy cost.
#
# One throwaway PostgreSQL 15 (tests/pg/pg-run, fsync on), canaryd nodes and
# demo-upstreams on loopback:
#   change -> applied   a flag change POSTed to node A until every node's
#                       /v1/feature-flags/stream has sent that revision
#                       (3 nodes), and until 50 simulated subscribers
#                       (bench_fleet_subs: LISTEN + a read of the changes
#                       feed) have read it; p50/p99 over ROUNDS changes
#   failover            kill -9 of the leader -> another node reports
#                       canaryd_fleet_leader 1 (polled every 10 ms), and the
#                       same after SIGSTOP (lease 3 s: bounded below by it)
#   proxy req/s         wrk -t1 -c50 on one node's proxy, fleet mode vs a
#                       single node on SQLite, interleaved rounds
#   bench/fleet.sh [BUILD_DIR]   env: ROUNDS (200), FAILOVERS (5), WRK_ROUNDS (3)
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
export BUILD=$build ROUNDS=${ROUNDS:-200} FAILOVERS=${FAILOVERS:-5} WRK_ROUNDS=${WRK_ROUNDS:-3}
work=$(mktemp -d /tmp/canaryd-bench-fleet.XXXXXX)
pgdir=
cleanup() {
	[ -n "$pgdir" ] && tests/pg/pg-run stop "$pgdir"
	rm -rf "$work"
}
trap cleanup EXIT INT TERM
pgout=$(PG_RUN_FSYNC=on tests/pg/pg-run start)
export PGURL=$(sed -n 's/^CANARYD_TEST_PG_URL=//p' <<<"$pgout")
pgdir=$(sed -n 's/^CANARYD_TEST_PG_DIR=//p' <<<"$pgout")
export WORK=$work
/usr/bin/python3 - <<'EOF'
import json, os, signal, socket, statistics, subprocess, threading, time, urllib.request

B, W, PGURL = os.environ["BUILD"], os.environ["WORK"], os.environ["PGURL"]
ROUNDS, FAILOVERS, WRK_ROUNDS = (int(os.environ[k]) for k in ("ROUNDS", "FAILOVERS", "WRK_ROUNDS"))
TOKEN = "bench"
procs = []

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def spawn(argv, log):
    p = subprocess.Popen(argv, stdout=open(os.path.join(W, log), "ab"), stderr=subprocess.STDOUT,
                         start_new_session=True)
    procs.append(p)
    return p

def call(method, url, body=None, timeout=5):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": "Bearer " + TOKEN,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()

def wait(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(0.01)
    raise SystemExit(f"timed out: {what}")

def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]

up = free_port()
spawn([f"{B}/demo-upstream", "--listen", f"127.0.0.1:{up}", "--name", "v1"], "up.log")

class Node:
    def __init__(self, name, store):
        self.name, self.admin, self.proxy = name, free_port(), free_port()
        self.cfg = os.path.join(W, f"{name}.yaml")
        with open(self.cfg, "w") as f:
            f.write(f"""admin:
  listen: 127.0.0.1:{self.admin}
  tokens: [{{name: ops, secret: {TOKEN}, scopes: [admin]}}]
store: {store}
workers: 1
listeners:
  - name: public
    listen: 127.0.0.1:{self.proxy}
    routes: [{{match: {{path_prefix: /}}, service: web}}]
services:
  web:
    versions: {{v1: {{endpoints: [127.0.0.1:{up}]}}}}
    stable: v1
""")
        self.url = f"http://127.0.0.1:{self.admin}"
        self.start()

    def start(self):
        self.p = spawn([f"{B}/canaryd", "-c", self.cfg], f"{self.name}.log")
        wait(lambda: call("GET", self.url + "/v1/health", timeout=0.5)[0] == 200, 15, self.name)

    def leader(self):
        try:
            _, body = call("GET", self.url + "/metrics", timeout=1)
        except Exception:
            return False
        return b"\ncanaryd_fleet_leader 1\n" in b"\n" + body

def db_url(db):
    subprocess.run(["/usr/lib/postgresql/15/bin/psql", PGURL, "-qAtc", f"CREATE DATABASE {db}"], check=True)
    return PGURL.rsplit("/", 1)[0] + "/" + db

# --- change -> applied -------------------------------------------------------------
url = db_url("bench_fleet")
nodes = [Node(n, url) for n in "ABC"]
seen = {n.name: {} for n in nodes}  # node -> {revision: wall time seen}
def sse(node):
    req = urllib.request.Request(node.url + "/v1/feature-flags/stream",
                                 headers={"Authorization": "Bearer " + TOKEN})
    with urllib.request.urlopen(req, timeout=600) as r:
        for line in r:
            if line.startswith(b"id:"):
                seen[node.name][int(line[3:].strip())] = time.time()
for n in nodes:
    threading.Thread(target=sse, args=(n,), daemon=True).start()
subs = subprocess.Popen([f"{B}/bench_fleet_subs", url, "50"], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, text=True)
assert subs.stdout.readline().startswith("ready")
sub_seen = {}  # revision -> [times]
def sub_reader():
    for line in subs.stdout:
        rev, _, t = line.split()
        for r in range(int(rev), int(rev) + 1):
            sub_seen.setdefault(r, []).append(int(t) / 1e6)
threading.Thread(target=sub_reader, daemon=True).start()
time.sleep(1)
lat3, lat50 = [], []
for i in range(ROUNDS):
    t0 = time.time()
    st, body = call("POST", nodes[0].url + "/v1/feature-flags",
                    {"feature": "bench", "percentage": i % 100, "enabled": True})
    rev = json.loads(body)["revision"]
    wait(lambda: all(any(r >= rev for r in seen[n.name]) for n in nodes) and
         len(sub_seen.get(rev, [])) >= 50, 5, f"revision {rev} everywhere")
    lat3.append(max(min(t for r, t in seen[n.name].items() if r >= rev) for n in nodes) - t0)
    lat50.append(max(sub_seen[rev]) - t0)
    time.sleep(0.01)
subs.stdin.close()
print(f"change -> applied on all 3 nodes (SSE seen), {ROUNDS} changes: "
      f"p50 {pct(lat3, 50)*1000:.1f} ms  p99 {pct(lat3, 99)*1000:.1f} ms")
print(f"change -> read by all 50 subscribers,       {ROUNDS} changes: "
      f"p50 {pct(lat50, 50)*1000:.1f} ms  p99 {pct(lat50, 99)*1000:.1f} ms")

# --- failover ----------------------------------------------------------------------
def failover(sig):
    out = []
    for _ in range(FAILOVERS):
        wait(lambda: sum(n.leader() for n in nodes) == 1, 15, "one leader")
        lead = [n for n in nodes if n.leader()][0]
        others = [n for n in nodes if n is not lead]
        t0 = time.monotonic()
        os.kill(lead.p.pid, sig)
        wait(lambda: any(n.leader() for n in others), 30, "a new leader")
        out.append(time.monotonic() - t0)
        if sig == signal.SIGSTOP:
            os.kill(lead.p.pid, signal.SIGCONT)
            wait(lambda: not lead.leader(), 10, "old leader steps down")
        else:
            lead.p.wait(5)
            lead.start()
    return out
k = failover(signal.SIGKILL)
print(f"failover after kill -9 ({FAILOVERS}x): median {statistics.median(k)*1000:.0f} ms  "
      f"max {max(k)*1000:.0f} ms")
s = failover(signal.SIGSTOP)
print(f"failover after SIGSTOP, lease 3s ({FAILOVERS}x): median {statistics.median(s)*1000:.0f} ms  "
      f"max {max(s)*1000:.0f} ms")
for n in nodes:
    n.p.terminate()
    n.p.wait(10)

# --- proxy req/s -------------------------------------------------------------------
fleet_node = Node("F", db_url("bench_fleet_proxy"))
single = Node("S", "sqlite:" + os.path.join(W, "single.db"))
def cpu_s(pid):
    """utime + stime of a process so far, seconds (/proc/PID/stat)."""
    st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
def wrk(node):
    """(req/s, canaryd CPU microseconds per request) of one 5 s wrk run."""
    c0 = cpu_s(node.p.pid)
    out = subprocess.run(["wrk", "-t1", "-c50", "-d5s", f"http://127.0.0.1:{node.proxy}/"],
                         capture_output=True, text=True).stdout
    cpu = cpu_s(node.p.pid) - c0
    lines = out.splitlines()
    rps = float([l for l in lines if l.startswith("Requests/sec")][0].split()[1])
    total = int([l for l in lines if "requests in" in l][0].split()[0])
    return rps, cpu / max(total, 1) * 1e6
rf, rs = [], []
for i in range(WRK_ROUNDS):
    for node, acc in ((fleet_node, rf), (single, rs)) if i % 2 == 0 else ((single, rs), (fleet_node, rf)):
        acc.append(wrk(node))
mf, ms = statistics.median(r for r, _ in rf), statistics.median(r for r, _ in rs)
cf, cs = statistics.median(c for _, c in rf), statistics.median(c for _, c in rs)
print(f"proxy, median of {WRK_ROUNDS} interleaved rounds:")
print(f"  {'mode':<14} {'req/s':>9} {'CPU us/req':>11}")
print(f"  {'fleet':<14} {mf:>9.0f} {cf:>11.1f}")
print(f"  {'single sqlite':<14} {ms:>9.0f} {cs:>11.1f}")
print(f"  ratio fleet/single: req/s {mf/ms:.3f}, CPU per request {cf/cs:.3f}")
for p in procs:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
EOF
