#!/bin/bash
# Flags at scale (issue 13 §3, docs/benchmarks.md): at 10, 1,000 and 10,000 flags
# (2 variants and 2 segment rules each, created through the API), with the
# growth class of each figure from 1,000 to 10,000:
#  1. N API creates (PUT /v1/feature-flags/f<i> on one keep-alive connection):
#     total time.  Target: < 60 s for 10,000.
#  2. one flag change -> an SSE subscriber receives it: from writing the PUT of
#     the last flag to reading its "change" event on an open stream (p50/p99
#     over CHANGES changes).  Target: < 5 ms at 10,000 flags.
#  3. startup with the N API-created flags (the store from step 1; canaryd's
#     exec to the first 200 from /v1/health; also the CPU time canaryd used by
#     then, steadier than wall time on a loaded machine).  Target: < 0.5 s at 10,000.
# Then runs bench/scale-services.sh (the services part) when it is there.
#   bench/scale.sh [BUILD_DIR]
#   env: SIZES (default "10 1000 10000"), CHANGES (default 200), SERVICES=0 skips
#        the services part
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"10 1000 10000"}
CHANGES=${CHANGES:-200}
[ -x "$build/canaryd" ] || { echo "bench: $build/canaryd missing (build first)"; exit 1; }
command -v python3 >/dev/null || { echo "bench: python3 missing"; exit 1; }
work=$(mktemp -d /tmp/canaryd-bench-flags.XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM

BIN="$build/canaryd" WORK="$work" SIZES="$SIZES" CHANGES="$CHANGES" python3 - <<'PY'
import json, os, socket, statistics, subprocess, sys, time

BIN, WORK = os.environ["BIN"], os.environ["WORK"]
SIZES = [int(s) for s in os.environ["SIZES"].split()]
CHANGES = int(os.environ["CHANGES"])
ADMIN = 19471
TOKEN = "bench-token"


def config(n):
    return f"""admin:
  listen: 127.0.0.1:{ADMIN}
  tokens: [{{name: bench, secret: {TOKEN}, scopes: [admin]}}]
store: sqlite:{WORK}/flags-{n}.db
workers: 1
segments:
  beta: {{match: [{{attr: plan, op: in, values: [beta, alpha]}}]}}
  staff: {{match: [{{attr: email, op: ends_with, values: ["@example.com"]}}]}}
"""


def flag_body(pct):
    return json.dumps({"variants": {"on": True, "off": False}, "off_variant": "off",
                       "sticky": "targetingKey",
                       "rules": [{"segment": "beta", "serve": "on"},
                                 {"segment": "staff", "rollout": {"on": 50}}],
                       "rollout": {"on": pct}}).encode()


class Conn:
    """One keep-alive HTTP/1.1 connection to the admin API."""

    def __init__(self):
        self.s = socket.create_connection(("127.0.0.1", ADMIN))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, method, path, body=b""):
        self.s.sendall(f"{method} {path} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {TOKEN}\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                       .encode() + body)

    def response(self):
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.s.recv(65536)
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        n = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v)
        while len(rest) < n:
            rest += self.s.recv(65536)
        self.buf = rest[n:]
        return int(head.split()[1]), rest[:n]


class Stream:
    """An SSE subscriber; events() yields (event, data) as they complete."""

    def __init__(self):
        self.s = socket.create_connection(("127.0.0.1", ADMIN))
        self.s.sendall(f"GET /v1/feature-flags/stream HTTP/1.1\r\nHost: b\r\n"
                       f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.s.recv(65536)
        self.buf = self.buf.split(b"\r\n\r\n", 1)[1]
        self.raw = bytearray()

    def next_event(self, timeout=30):
        self.s.settimeout(timeout)
        while True:
            while True:  # de-chunk what is there
                i = self.buf.find(b"\r\n")
                if i < 0:
                    break
                size = int(self.buf[:i], 16)
                if len(self.buf) < i + 2 + size + 2:
                    break
                self.raw += self.buf[i + 2:i + 2 + size]
                self.buf = self.buf[i + 2 + size + 2:]
            j = self.raw.find(b"\n\n")
            if j >= 0:
                block = bytes(self.raw[:j])
                del self.raw[:j + 2]
                ev, data = "", b""
                for line in block.split(b"\n"):
                    if line.startswith(b"event: "):
                        ev = line[7:].decode()
                    elif line.startswith(b"data: "):
                        data += line[6:]
                if ev:
                    return ev, data
                continue
            b = self.s.recv(1 << 20)
            if not b:
                raise EOFError("stream closed")
            self.buf += b


def start(n):
    with open(f"{WORK}/flags-{n}.yaml", "w") as f:
        f.write(config(n))
    t0 = time.monotonic()
    p = subprocess.Popen([BIN, "-c", f"{WORK}/flags-{n}.yaml"], stdout=subprocess.DEVNULL,
                         stderr=open(f"{WORK}/flags-{n}.log", "a"))
    deadline = t0 + 120
    while time.monotonic() < deadline:
        try:
            c = Conn()
            c.send("GET", "/v1/health")
            if c.response()[0] == 200:
                c.s.close()
                wall = time.monotonic() - t0
                st = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
                cpu = (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
                return p, wall, cpu
        except OSError:
            time.sleep(0.002)
    p.kill()
    sys.exit(f"bench: canaryd did not start with {n} flags (see {WORK}/flags-{n}.log)")


def stop(p):
    p.terminate()
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


rows = {}
for n in SIZES:
    p, _, _ = start(n)
    c = Conn()
    t0 = time.monotonic()
    for i in range(n):
        c.send("PUT", f"/v1/feature-flags/f{i}", flag_body(10))
        st, body = c.response()
        if st not in (200, 201):
            sys.exit(f"bench: create f{i}: {st} {body[:200]}")
    creates = time.monotonic() - t0
    sub = Stream()
    ev, data = sub.next_event()
    assert ev == "ruleset" and len(json.loads(data)["flags"]) == n, "ruleset"
    lat = []
    for k in range(CHANGES):
        t0 = time.monotonic()
        c.send("PUT", f"/v1/feature-flags/f{n - 1}", flag_body(20 + k % 2))
        while True:
            ev, data = sub.next_event()
            if ev == "change":
                break
        lat.append(time.monotonic() - t0)
        st, _ = c.response()
        assert st == 200, st
    sub.s.close()
    c.s.close()
    stop(p)
    p, boot, boot_cpu = start(n)
    stop(p)
    lat.sort()
    rows[n] = dict(creates=creates, p50=lat[len(lat) // 2] * 1e3,
                   p99=lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3, boot=boot,
                   boot_cpu=boot_cpu)


def growth(a, b, na, nb):
    """The growth class of a figure from a (at na) to b (at nb)."""
    if a <= 0:
        return "-"
    k = (b / a)
    span = nb / na
    if k < span ** 0.3:
        return "O(1)"
    if k < span ** 1.5:
        return "O(n)"
    return "O(n^2)"


print(f"\nflags at scale ({CHANGES} changes per size; 2 variants, 2 rules per flag; SQLite; "
      f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)\n")
print(f"{'flags':>7} | {'change->SSE p50':>15} | {'p99':>9} | {'API creates':>12} | "
      f"{'per create':>10} | {'startup':>8} | {'its CPU':>7}")
print("-" * 88)
for n in SIZES:
    r = rows[n]
    print(f"{n:>7} | {r['p50']:>12.2f} ms | {r['p99']:>6.2f} ms | {r['creates']:>10.2f} s | "
          f"{r['creates'] / n * 1e3:>7.2f} ms | {r['boot']:>6.3f} s | {r['boot_cpu']:>5.2f} s")
if len(SIZES) >= 2:
    a, b = SIZES[-2], SIZES[-1]
    ra, rb = rows[a], rows[b]
    print(f"{'class':>7} | {growth(ra['p50'], rb['p50'], a, b):>15} | "
          f"{growth(ra['p99'], rb['p99'], a, b):>9} | "
          f"{growth(ra['creates'], rb['creates'], a, b):>12} | "
          f"{growth(ra['creates'] / a, rb['creates'] / b, a, b):>10} | "
          f"{growth(ra['boot'], rb['boot'], a, b):>8} | "
          f"{growth(max(ra['boot_cpu'], 0.01), rb['boot_cpu'], a, b):>7}")
    print(f"\n(class: how the figure grows from {a} to {b} flags)")
big = rows[SIZES[-1]]
print(f"targets at {SIZES[-1]}: change->SSE p50 < 5 ms: {'yes' if big['p50'] < 5 else 'NO'}; "
      f"creates < 60 s: {'yes' if big['creates'] < 60 else 'NO'}; "
      f"startup < 0.5 s: {'yes' if big['boot'] < 0.5 else 'NO'}")
PY

if [ "${SERVICES:-1}" != 0 ] && [ -x bench/scale-services.sh ]; then
	bench/scale-services.sh "$build"
fi
