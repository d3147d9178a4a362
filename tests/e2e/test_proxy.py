"""Proxy end to end (SPEC sections 2, 4 and 7): the weighted split and its
buckets, stickiness, overrides, the traffic API, drain, upstream failures and
ejection, strict parsing, header hygiene, pipelining, streaming big bodies,
reload and shutdown under load.

Everything runs on 127.0.0.1 with real canaryd / demo-upstream processes (the
conftest fixtures) plus small Python upstreams (threads) where the test must
see exactly what the proxy sent upstream.  Every wait is bounded."""
import http.client as httpclient
import json
import os
import random
import re
import signal
import socket
import threading
import time

import pytest

from conftest import (ADMIN_TOKEN, BASE_ADMIN, READ_TOKEN, SRC, free_port, http,
                      wait_until)

# --------------------------------------------------------------------------
# Bucketing, independently of the C code (docs/bucketing.md)


def murmur3_x86_32(data, seed=0):
    c1, c2, m = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed & m
    n = len(data)
    nblocks = n // 4
    for i in range(nblocks):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * c1) & m
        k = ((k << 15) | (k >> 17)) & m
        k = (k * c2) & m
        h ^= k
        h = ((h << 13) | (h >> 19)) & m
        h = (h * 5 + 0xE6546B64) & m
    tail = data[4 * nblocks:]
    if tail:
        k = int.from_bytes(tail, "little")
        k = (k * c1) & m
        k = ((k << 15) | (k >> 17)) & m
        k = (k * c2) & m
        h ^= k
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & m
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & m
    h ^= h >> 16
    return h


def bucket(salt, key):
    return (murmur3_x86_32((salt + ":" + key).encode()) * 100000) >> 32


def expected_cohort(salt, key, weight_percent):
    """SPEC section 2 cumulative ranges; weight in percent (<= 3 decimals)."""
    w = round(weight_percent * 1000)
    b = bucket(salt, key)
    if b < w:
        return "canary"
    if b < w + min(w, 100000 - w):
        return "baseline"
    return "stable"


def test_python_murmur_matches_published_vectors():
    # MurmurHash3's own vectors, then every vector of docs/bucketing.md
    assert murmur3_x86_32(b"") == 0
    assert murmur3_x86_32(b"", 1) == 0x514E28B7
    assert murmur3_x86_32(b"test") == 0xBA6BD213
    assert murmur3_x86_32(b"Hello, world!") == 0xC0363E43
    assert murmur3_x86_32(b"The quick brown fox jumps over the lazy dog") == 0x2E4FF723
    with open(os.path.join(SRC, "docs", "bucketing.md"), encoding="utf-8") as f:
        doc = f.read()
    block = doc.split("```vectors", 1)[1].split("```", 1)[0]
    rows = re.findall(r'^"(.*)" "(.*)" (\d+) (\d+)$', block, re.M)
    assert len(rows) >= 20
    for salt, key, h, b in rows:
        assert murmur3_x86_32((salt + ":" + key).encode()) == int(h), (salt, key)
        assert bucket(salt, key) == int(b), (salt, key)


# --------------------------------------------------------------------------
# Helpers


def esc(text):
    """The canaryd fixture runs str.format on the body: protect YAML braces."""
    return text.replace("{", "{{").replace("}", "}}")


def start_proxy(canaryd, services, segments="", routes=None, port=None, workers=1):
    """Starts canaryd with one listener on a free port.  services / segments
    are YAML blocks (already indented under their top-level key).  routes:
    list of (path_prefix, service); default: everything to `web`."""
    port = port or free_port()
    routes = routes or [("/", "web")]
    text = ("listeners:\n  - name: public\n    listen: 127.0.0.1:%d\n    routes:\n" % port)
    for prefix, svc in routes:
        text += "      - match: {path_prefix: %s}\n        service: %s\n" % (prefix, svc)
    text += "services:\n" + services
    if segments:
        text += "segments:\n" + segments
    header = BASE_ADMIN.replace("workers: 1\n", "workers: %d\n" % workers)
    assert ("workers: %d\n" % workers) in header
    d = canaryd(header + esc(text), header=False)
    d.proxy_port = port
    d.body = header + esc(text)

    def listening():
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True

    wait_until(listening, 5, what="proxy listener")
    return d


def web_service(v1_port, v2_port, extra="", name="web"):
    return (f"  {name}:\n"
            f"    versions:\n"
            f"      v1: {{endpoints: [127.0.0.1:{v1_port}]}}\n"
            f"      v2: {{endpoints: [127.0.0.1:{v2_port}]}}\n"
            f"    stable: v1\n" + extra)


def set_traffic(d, canary, weight, svc="web"):
    status, doc = d.put(f"/v1/services/{svc}/traffic", {"canary": canary, "weight": weight})
    assert status == 200, doc
    return doc


class Client:
    """A keep-alive HTTP/1.1 client on the proxy (http.client)."""

    def __init__(self, port, timeout=10.0):
        self.port = port
        self.timeout = timeout
        self.conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(self, method="GET", path="/", headers=None, body=None):
        self.conn.request(method, path, body=body, headers=headers or {})
        r = self.conn.getresponse()
        data = r.read()
        if r.will_close:
            self.conn.close()
        return r.status, r, data

    def get(self, path="/", headers=None):
        return self.request("GET", path, headers)

    def close(self):
        self.conn.close()


def upstream_in_flight(port):
    """demo-upstream's gauge of requests received and not answered yet."""
    st, _, body = http("GET", f"http://127.0.0.1:{port}/_upstream/stats")
    assert st == 200, body
    return json.loads(body)["in_flight"]


def get_once(port, path="/", headers=None):
    c = Client(port)
    try:
        return c.get(path, headers)
    finally:
        c.close()


def cohort_of(resp):
    return resp.getheader("X-Canary-Cohort")


def upstream_of(resp):
    return resp.getheader("X-Upstream-Version")


def route_keys(port, keys, header="x-user-id", nconns=2):
    """Sends one GET per key (spread over a few keep-alive connections);
    returns {key: (status, cohort, upstream version)}."""
    out = {}
    clients = [Client(port) for _ in range(nconns)]
    try:
        for i, k in enumerate(keys):
            st, r, _ = clients[i % nconns].get("/k", {header: k})
            out[k] = (st, cohort_of(r), upstream_of(r))
    finally:
        for c in clients:
            c.close()
    return out


def raw_exchange(port, data, timeout=5.0):
    """Sends raw bytes, returns what came back until close / timeout; a reset
    after the response is tolerated."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                break
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks)


def status_of(raw):
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", raw)
    return int(m.group(1)) if m else None


def parse_responses(raw):
    """Splits a byte stream into (status, headers dict lower-case, body) for
    Content-Length framed responses."""
    out = []
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\r\n\r\n", pos)
        assert end >= 0, raw[pos:]
        head = raw[pos:end].decode("latin-1").split("\r\n")
        status = int(head[0].split(" ")[1])
        hdrs = {}
        for line in head[1:]:
            n, v = line.split(":", 1)
            hdrs[n.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        body = raw[end + 4:end + 4 + n]
        assert len(body) == n, "truncated response"
        out.append((status, hdrs, body))
        pos = end + 4 + n
    return out


def read_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    return fields


def kib(field):
    return int(field.split()[0])


def metrics_text(d):
    status, _, body = http("GET", d.url + "/metrics", token=ADMIN_TOKEN)
    assert status == 200
    return body.decode()


def metric_value(text, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    total = None
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        lab, _, val = line[len(name) + 1:].rpartition("} ")
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', lab))
        if all(have.get(k) == v for k, v in labels.items()):
            total = (total or 0) + float(val)
    return total


# --------------------------------------------------------------------------
# A small Python upstream: records what it receives, or sinks / sources big
# bodies.  Threads, 127.0.0.1 only, closed by the fixture.


class Reader:
    def __init__(self, sock):
        self.s = sock
        self.buf = bytearray()
        self.raw_cb = None

    def fill(self):
        b = self.s.recv(1 << 20)
        if not b:
            raise EOFError
        if self.raw_cb:
            self.raw_cb(b)
        self.buf += b

    def until(self, delim, limit=1 << 20):
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                out = bytes(self.buf[:i + len(delim)])
                del self.buf[:i + len(delim)]
                return out
            if len(self.buf) > limit:
                raise ValueError("line too long")
            self.fill()

    def take(self, n, keep=True):
        """Reads n bytes; returns them (keep) or just consumes them."""
        parts = []
        while n > 0:
            if not self.buf:
                self.fill()
            k = min(n, len(self.buf))
            if keep:
                parts.append(bytes(self.buf[:k]))
            del self.buf[:k]
            n -= k
        return b"".join(parts)


class PyUpstream:
    """mode "record": keeps every request (head lines, headers, body) and
    every raw byte; mode "sink": counts body bytes, answers with the count;
    mode "source": answers every request with `source_bytes` bytes; mode
    "close": reads a request head, then closes without answering."""

    def __init__(self, mode="record", source_bytes=0, response_headers=b"", stall_at=(),
                 stall_s=0.0):
        self.mode = mode
        # sink: stop reading for stall_s at each of these body offsets (a slow
        # upstream, so that the proxy has to apply backpressure to the client)
        self.stall_at = sorted(stall_at)
        self.stall_s = stall_s
        # record: a request whose path starts with /hold is answered only
        # once `release` is set (a request held in flight)
        self.release = threading.Event()
        self.source_bytes = source_bytes
        self.response_headers = response_headers
        self.lock = threading.Lock()
        self.raw = bytearray()
        self.requests = []
        self.connections = 0
        self.stopping = False
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.ls.settimeout(0.2)
        self.port = self.ls.getsockname()[1]
        self.socks = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.socks.append(s)
            t = threading.Thread(target=self._serve, args=(s,), daemon=True)
            self.threads.append(t)
            t.start()

    def _record_raw(self, b):
        if self.mode == "record":
            with self.lock:
                self.raw += b

    def _serve(self, s):
        s.settimeout(30)
        r = Reader(s)
        r.raw_cb = self._record_raw
        try:
            while not self.stopping:
                head = r.until(b"\r\n\r\n", limit=256 << 10).decode("latin-1")
                if self.mode == "close":
                    with self.lock:
                        self.requests.append({"line": head.split("\r\n", 1)[0]})
                    break
                lines = head[:-4].split("\r\n")
                headers = []
                for line in lines[1:]:
                    n, _, v = line.partition(":")
                    headers.append((n.strip().lower(), v.strip()))
                hd = {}
                for n, v in headers:
                    hd.setdefault(n, v)
                keep = self.mode == "record"
                body_len = 0
                body = []
                stalls = list(self.stall_at)
                if "chunked" in hd.get("transfer-encoding", "").lower():
                    while True:
                        if stalls and body_len >= stalls[0]:
                            stalls.pop(0)
                            time.sleep(self.stall_s)
                        size_line = r.until(b"\r\n")
                        size = int(size_line.split(b";")[0].strip(), 16)
                        if size == 0:
                            while r.until(b"\r\n") != b"\r\n":
                                pass  # trailers
                            break
                        chunk = r.take(size, keep)
                        if keep:
                            body.append(chunk)
                        body_len += size
                        if r.take(2) != b"\r\n":
                            raise ValueError("bad chunk end")
                elif "content-length" in hd:
                    body_len = int(hd["content-length"])
                    chunk = r.take(body_len, keep)
                    if keep:
                        body.append(chunk)
                with self.lock:
                    self.requests.append({"line": lines[0], "headers": headers,
                                          "body": b"".join(body), "body_len": body_len})
                if self.mode == "source":
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                              b"Content-Length: %d\r\n\r\n" % self.source_bytes)
                    block = memoryview(b"\xa5" * (1 << 20))
                    left = self.source_bytes
                    while left > 0:
                        n = min(left, len(block))
                        s.sendall(block[:n])
                        left -= n
                else:
                    if lines[0].split(" ")[1].startswith("/hold"):
                        self.release.wait(10)
                    payload = str(body_len).encode() if self.mode == "sink" else b"ok"
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" +
                              self.response_headers +
                              b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
        except (EOFError, OSError, ValueError):
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass

    def snapshot(self):
        with self.lock:
            return bytes(self.raw), list(self.requests), self.connections

    def close(self):
        self.stopping = True
        try:
            self.ls.close()
        except OSError:
            pass
        with self.lock:
            for s in self.socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for t in self.threads:
            t.join(timeout=2)


@pytest.fixture
def pyupstream():
    made = []

    def start(**kw):
        u = PyUpstream(**kw)
        made.append(u)
        return u

    yield start
    for u in made:
        u.close()


# --------------------------------------------------------------------------
# Split (SPEC sections 2 and 4)


def test_split_weight_10_binomial_and_exact_buckets(canaryd, upstream):
    d = start_proxy(canaryd, web_service(upstream("v1"), upstream("v2"),
                                         "    sticky: header:x-user-id\n"
                                         "    expose_cohort: true\n"))
    set_traffic(d, "v2", 10)
    rnd = random.Random(20240501)
    keys = ["u-%016x" % rnd.getrandbits(64) for _ in range(20000)]
    assert len(set(keys)) == len(keys)
    got = route_keys(d.proxy_port, keys)
    n = len(keys)
    counts = {"canary": 0, "baseline": 0, "stable": 0}
    mismatches = []
    for k, (st, cohort, ver) in got.items():
        assert st == 200, (k, st)
        counts[cohort] += 1
        # the canary cohort is served by the canary version, the others by stable
        assert ver == ("v2" if cohort == "canary" else "v1"), (k, cohort, ver)
        if cohort != expected_cohort("web", k, 10):
            mismatches.append((k, cohort, bucket("web", k)))
    # the proxy agrees with docs/bucketing.md on every single key
    assert not mismatches, mismatches[:10]
    # 99.9% two-sided binomial bound (z = 3.2905) around 10%, for both slices
    p = 0.10
    bound = 3.2905 * (n * p * (1 - p)) ** 0.5
    assert abs(counts["canary"] - n * p) <= bound, counts
    assert abs(counts["baseline"] - n * p) <= bound, counts
    assert counts["stable"] == n - counts["canary"] - counts["baseline"]

    # weight 0: nobody reaches the canary (same keys)
    set_traffic(d, "v2", 0)
    got0 = route_keys(d.proxy_port, keys[:10000])
    assert all(st == 200 and ver == "v1" and cohort != "canary"
               for st, cohort, ver in got0.values())


def test_split_exact_buckets_at_fractional_weight(canaryd, upstream):
    # 12.345% = 12345 thousandths: the boundary is exact, no float rounding
    d = start_proxy(canaryd, web_service(upstream("v1"), upstream("v2"),
                                         "    sticky: header:x-user-id\n"
                                         "    expose_cohort: true\n"))
    set_traffic(d, "v2", 12.345)
    # keys whose buckets sit within 20 buckets (0.02%) of the range edges:
    # canary [0, 12345), baseline [12345, 24690), stable the rest
    windows = {(12325, 12345): [], (12345, 12365): [], (24670, 24690): [],
               (24690, 24710): []}
    rnd = random.Random(7)
    deadline = time.monotonic() + 10
    while any(len(v) < 3 for v in windows.values()):
        assert time.monotonic() < deadline, "key search took too long"
        k = "e-%x" % rnd.getrandbits(48)
        b = bucket("web", k)
        for (lo, hi), found in windows.items():
            if lo <= b < hi and len(found) < 3:
                found.append(k)
    edge = [k for found in windows.values() for k in found]
    # plus the docs' worked-example style keys
    got = route_keys(d.proxy_port, edge + ["user-1", "user-2", "alice", "bob"], nconns=1)
    for k, (st, cohort, ver) in got.items():
        assert st == 200
        assert cohort == expected_cohort("web", k, 12.345), (k, bucket("web", k), cohort)


# --------------------------------------------------------------------------
# Stickiness


def test_sticky_header_monotonic_weight_changes(canaryd, upstream):
    d = start_proxy(canaryd, web_service(upstream("v1"), upstream("v2"),
                                         "    sticky: header:x-user-id\n"
                                         "    expose_cohort: true\n"))
    keys = ["user-%d" % i for i in range(2000)]
    set_traffic(d, "v2", 5)
    at5 = route_keys(d.proxy_port, keys)
    # the same key always lands in the same cohort (other connections, repeated)
    again = route_keys(d.proxy_port, keys[:500], nconns=3)
    for k in keys[:500]:
        assert again[k] == at5[k], k
    canary5 = {k for k, v in at5.items() if v[1] == "canary"}
    assert canary5 and all(at5[k][2] == "v2" for k in canary5)

    set_traffic(d, "v2", 25)
    at25 = route_keys(d.proxy_port, keys)
    canary25 = {k for k, v in at25.items() if v[1] == "canary"}
    # raising keeps every canary unit on the canary
    assert canary5 <= canary25, sorted(canary5 - canary25)[:10]
    assert len(canary25) > len(canary5)

    set_traffic(d, "v2", 5)
    back = route_keys(d.proxy_port, keys)
    canary_back = {k for k, v in back.items() if v[1] == "canary"}
    # lowering takes off only the units added last: the 5% set is exactly back
    assert canary_back == canary5
    for k in keys:
        assert back[k] == at5[k], k


def test_sticky_cookie_set_and_honoured(canaryd, upstream):
    d = start_proxy(canaryd, web_service(upstream("v1"), upstream("v2"),
                                         "    sticky: cookie:cid\n"
                                         "    expose_cohort: true\n"))
    set_traffic(d, "v2", 50)
    seen = {"canary": 0, "baseline": 0, "stable": 0}
    c = Client(d.proxy_port)
    try:
        for _ in range(60):
            # a new visitor: no cookie -> Set-Cookie cid=...
            st, r, _ = c.get("/")
            assert st == 200
            sc = r.getheader("Set-Cookie")
            assert sc, "no Set-Cookie for a cookie-sticky service without the cookie"
            m = re.match(r"cid=([^;]+)", sc)
            assert m, sc
            cid = m.group(1)
            first = cohort_of(r)
            seen[first] += 1
            # the cohort is the bucket of the cookie's value
            assert first == expected_cohort("web", cid, 50), (cid, first)
            # later requests with the cookie: same cohort, no new cookie
            for _ in range(3):
                st, r2, _ = c.get("/", {"Cookie": f"other=1; cid={cid}"})
                assert st == 200
                assert cohort_of(r2) == first
                assert r2.getheader("Set-Cookie") is None
                assert upstream_of(r2) == ("v2" if first == "canary" else "v1")
    finally:
        c.close()
    assert seen["canary"] > 0 and seen["canary"] < 60


# --------------------------------------------------------------------------
# Overrides


def stable_range_keys(n, weight):
    """Keys whose bucket is in the stable range at `weight` percent."""
    out, i = [], 0
    while len(out) < n:
        k = "ov-%d" % i
        if expected_cohort("web", k, weight) == "stable":
            out.append(k)
        i += 1
    return out


def canary_range_keys(n, weight):
    out, i = [], 0
    while len(out) < n:
        k = "cv-%d" % i
        if expected_cohort("web", k, weight) == "canary":
            out.append(k)
        i += 1
    return out


def test_overrides_header_cookie_segment(canaryd, upstream):
    extra = ("    sticky: header:x-user-id\n"
             "    expose_cohort: true\n"
             "    context:\n"
             "      email: header:x-user-email\n"
             "    overrides:\n"
             "      - match: {header: {x-canary: always}}\n"
             "        cohort: canary\n"
             "      - match: {header: {x-canary: never}}\n"
             "        cohort: stable\n"
             "      - match: {cookie: {beta: \"yes\"}}\n"
             "        cohort: canary\n"
             "      - match: {segment: internal}\n"
             "        cohort: canary\n")
    segments = ('  internal: {match: [{attr: email, op: ends_with, values: ["@example.com"]}]}\n')
    d = start_proxy(canaryd, web_service(upstream("v1"), upstream("v2"), extra), segments)
    set_traffic(d, "v2", 1)
    stable_keys = stable_range_keys(5, 1)
    c = Client(d.proxy_port)
    try:
        for k in stable_keys:
            base = {"x-user-id": k}
            st, r, _ = c.get("/", base)
            assert (st, cohort_of(r), upstream_of(r)) == (200, "stable", "v1")
            # header override
            st, r, _ = c.get("/", dict(base, **{"X-Canary": "always"}))
            assert (st, cohort_of(r), upstream_of(r)) == (200, "canary", "v2")
            st, r, _ = c.get("/", dict(base, **{"X-Canary": "sometimes"}))
            assert (cohort_of(r), upstream_of(r)) == ("stable", "v1")
            # cookie override
            st, r, _ = c.get("/", dict(base, Cookie="a=b; beta=yes"))
            assert (st, cohort_of(r), upstream_of(r)) == (200, "canary", "v2")
            st, r, _ = c.get("/", dict(base, Cookie="beta=no"))
            assert (cohort_of(r), upstream_of(r)) == ("stable", "v1")
            # segment override through a context attribute
            st, r, _ = c.get("/", dict(base, **{"X-User-Email": "ann@example.com"}))
            assert (st, cohort_of(r), upstream_of(r)) == (200, "canary", "v2")
            st, r, _ = c.get("/", dict(base, **{"X-User-Email": "ann@example.org"}))
            assert (cohort_of(r), upstream_of(r)) == ("stable", "v1")
        # cohort: stable override wins for keys bucketed on the canary
        for k in canary_range_keys(3, 1):
            st, r, _ = c.get("/", {"x-user-id": k})
            assert (cohort_of(r), upstream_of(r)) == ("canary", "v2")
            st, r, _ = c.get("/", {"x-user-id": k, "X-Canary": "never"})
            assert (cohort_of(r), upstream_of(r)) == ("stable", "v1")
    finally:
        c.close()


# --------------------------------------------------------------------------
# Traffic API (SPEC section 7)


def test_traffic_api_validation_events_and_restart(canaryd, upstream):
    v1, v2 = upstream("v1"), upstream("v2")
    extra = "    sticky: header:x-user-id\n    expose_cohort: true\n"
    d = start_proxy(canaryd, web_service(v1, v2, extra))
    status, doc = d.get("/v1/services/web")
    assert status == 200 and doc["name"] == "web" and doc["stable"] == "v1"
    assert doc["canary"] is None and doc["weight"] == 0
    status, doc = d.get("/v1/services")
    assert status == 200 and [s["name"] for s in doc["services"]] == ["web"]

    doc = set_traffic(d, "v2", 10)
    assert doc["canary"] == "v2" and doc["weight"] == 10
    status, doc = d.get("/v1/services/web")
    assert status == 200 and doc["canary"] == "v2" and doc["weight"] == 10
    roles = {v["name"]: v["role"] for v in doc["versions"]}
    assert roles == {"v1": "stable", "v2": "canary"}
    doc = set_traffic(d, "v2", 12.5)
    assert d.get("/v1/services/web")[1]["weight"] == 12.5

    # invalid bodies: 422 naming the field, nothing changes
    for body, field in [({"canary": "v2", "weight": 101}, "weight"),
                        ({"canary": "v2", "weight": -1}, "weight"),
                        ({"canary": "v2", "weight": 1.2345}, "weight"),
                        ({"canary": "v2", "weight": "10"}, "weight"),
                        ({"canary": "v9", "weight": 10}, "canary"),
                        ({"canary": "v1", "weight": 10}, "canary")]:
        status, doc = d.put("/v1/services/web/traffic", body)
        assert status == 422, (body, status, doc)
        assert doc["error"]["field"] == field, (body, doc)
        assert doc["error"]["message"]
    status, doc = d.get("/v1/services/web")
    assert doc["canary"] == "v2" and doc["weight"] == 12.5
    # unknown service, read-only token, no token
    status, doc = d.put("/v1/services/nope/traffic", {"canary": "v2", "weight": 1})
    assert status == 404 and doc["error"]["code"] == "not_found"
    status, doc = d.put("/v1/services/web/traffic", {"canary": "v2", "weight": 50},
                        token=READ_TOKEN)
    assert status == 403 and doc["error"]["code"] == "forbidden"
    status, doc = d.put("/v1/services/web/traffic", {"canary": "v2", "weight": 50}, token=None)
    assert status == 401
    assert d.get("/v1/services/web")[1]["weight"] == 12.5

    # the change is an event, with the actor
    set_traffic(d, "v2", 10)
    status, doc = d.get("/v1/events?limit=1000")
    assert status == 200
    evs = [e for e in doc["events"] if e["kind"] == "service.traffic"]
    assert len(evs) == 3, evs  # 10, 12.5, 10: refused changes are not events
    last = evs[-1]
    assert last["actor"] == "ops" and last["subject"] == "web"
    assert last["details"]["canary"] == "v2" and last["details"]["weight"] == 10
    assert last["details"]["before_weight"] == 12.5

    # which keys are on the canary now
    keys = ["r-%d" % i for i in range(300)]
    before = route_keys(d.proxy_port, keys, nconns=1)
    assert any(v[1] == "canary" for v in before.values())

    # restart with the same store: the weight survives, and routes the same
    d.proc.stop()
    d2 = canaryd(d.body, header=False)
    wait_until(lambda: socket.create_connection(("127.0.0.1", d.proxy_port), 0.2).close() or True,
               5, what="proxy listener after restart")
    status, doc = d2.get("/v1/services/web")
    assert status == 200 and doc["canary"] == "v2" and doc["weight"] == 10
    after = route_keys(d.proxy_port, keys, nconns=1)
    assert after == before


# --------------------------------------------------------------------------
# Drain


def test_drain_in_flight_complete_no_new_canary(canaryd, upstream):
    # two workers: the change must hold on every one of them
    v2 = upstream("v2", latency_ms=5000)
    d = start_proxy(canaryd, web_service(upstream("v1"), v2,
                                         "    sticky: header:x-user-id\n"
                                         "    expose_cohort: true\n"), workers=2)
    set_traffic(d, "v2", 100)
    results = []
    started = threading.Barrier(7)

    def slow(i):
        def run():
            c = Client(d.proxy_port, timeout=10)
            try:
                started.wait(5)
                st, r, body = c.get("/slow%d" % i, {"x-user-id": "slow-%d" % i})
                results.append((st, upstream_of(r), cohort_of(r)))
            except Exception as e:  # noqa: BLE001
                results.append(("error", repr(e), None))
            finally:
                c.close()
        return run

    threads = [threading.Thread(target=slow(i), daemon=True) for i in range(6)]
    for t in threads:
        t.start()
    started.wait(5)
    # all six are at the canary, which holds each for 5 s
    wait_until(lambda: upstream_in_flight(v2) == 6, 5, what="6 requests in flight")
    set_traffic(d, "v2", 0)
    # every request that starts after the change goes to stable (over
    # several connections, so that both workers serve some)
    late = []
    for n in range(8):
        c = Client(d.proxy_port)
        try:
            for i in range(25):
                st, r, _ = c.get("/", {"x-user-id": "late-%d-%d" % (n, i)})
                late.append((st, upstream_of(r), cohort_of(r)))
        finally:
            c.close()
    # the late requests ran while the six were still in flight (the test's premise)
    assert upstream_in_flight(v2) == 6, "the slow requests ended early: test not meaningful"
    for t in threads:
        t.join(10)
    assert all(s == (200, "v1", "stable") for s in late), [s for s in late if s[1] != "v1"][:5]
    # the slow ones started on the canary and finished there
    assert len(results) == 6
    assert all(r == (200, "v2", "canary") for r in results), results
    status, doc = d.get("/v1/services/web")
    v2 = [v for v in doc["versions"] if v["name"] == "v2"][0]
    assert v2["draining"] is True


def established_to(port):
    """Established TCP connections whose local (server) port is `port`."""
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "01":
                        n += 1
        except OSError:
            pass
    return n


def test_drained_canary_keeps_no_upstream_connections(canaryd, upstream, pyupstream):
    # SPEC 4: weight 0 drains the version: no new requests, idle upstream
    # connections closed, in-flight ones finish.  Once the in-flight ones are
    # done, nothing holds a connection to the drained canary (it can be
    # undeployed).
    canary = pyupstream()
    v2 = canary.port
    d = start_proxy(canaryd, web_service(upstream("v1"), v2,
                                         "    sticky: header:x-user-id\n"))
    set_traffic(d, "v2", 100)
    result = []

    def inflight():
        c = Client(d.proxy_port)
        st, r, body = c.get("/hold", {"x-user-id": "inflight"})
        result.append((st, body))
        c.close()

    # a request held in flight on the canary ...
    t = threading.Thread(target=inflight, daemon=True)
    t.start()
    wait_until(lambda: len(canary.snapshot()[1]) == 1, 3, what="the in-flight request")
    # ... and an idle pooled connection to it
    c = Client(d.proxy_port)
    assert c.get("/quick", {"x-user-id": "quick"})[:3:2] == (200, b"ok")
    c.close()
    assert established_to(v2) == 2
    set_traffic(d, "v2", 0)
    canary.release.set()
    t.join(5)
    assert result == [(200, b"ok")]
    left = []

    def none_left():
        left.append(established_to(v2))
        return left[-1] == 0

    try:
        wait_until(none_left, 3, interval=0.05, what="no connection left to the drained canary")
    except AssertionError:
        raise AssertionError(f"{left[-1]} connection(s) to the drained canary still open 3 s "
                             f"after its in-flight request finished") from None


# --------------------------------------------------------------------------
# Upstream failures


def test_upstream_down_502_timeout_504_and_metrics(canaryd, upstream, pyupstream, dead_port):
    dead = dead_port()  # bound for the whole test, never listening: refused
    slow = upstream("slow", latency_ms=2000)
    closer = pyupstream(mode="close")  # takes the request, closes without answering
    services = ("  down:\n"
                "    versions:\n"
                f"      v1: {{endpoints: [127.0.0.1:{dead}]}}\n"
                "    stable: v1\n"
                "  slow:\n"
                "    versions:\n"
                f"      v1: {{endpoints: [127.0.0.1:{slow}]}}\n"
                "    stable: v1\n"
                "    timeouts: {response: 300ms}\n"
                "  reset:\n"
                "    versions:\n"
                f"      v1: {{endpoints: [127.0.0.1:{closer.port}]}}\n"
                "    stable: v1\n")
    d = start_proxy(canaryd, services,
                    routes=[("/down", "down"), ("/slow", "slow"), ("/reset", "reset")])
    c = Client(d.proxy_port)
    try:
        for _ in range(3):
            st, r, body = c.get("/down/x")
            assert st == 502, (st, body)
            assert json.loads(body)["error"]["message"], body  # SPEC 7 error shape
        t0 = time.monotonic()
        st, r, body = c.get("/slow/x")
        took = time.monotonic() - t0
        assert st == 504, (st, body)
        assert took >= 0.25, took  # the 504 is the timeout's (status), not an early error
        st, r, body = c.get("/reset/x")
        assert st == 502, (st, body)
        assert closer.snapshot()[1], "the closing upstream never got the request"
        # the client connection is still usable after proxy errors
        st, r, body = c.get("/down/y")
        assert st == 502
    finally:
        c.close()
    text = metrics_text(d)
    n5xx = metric_value(text, "canaryd_requests_total", service="down", version="v1",
                        code="5xx")
    assert n5xx is not None and n5xx >= 3, text
    refused = metric_value(text, "canaryd_upstream_errors_total", service="down", version="v1",
                           kind="connect_refused")
    assert refused is not None and refused >= 3, text
    t504 = metric_value(text, "canaryd_upstream_errors_total", service="slow", version="v1",
                        kind="response_timeout")
    assert t504 is not None and t504 >= 1, text
    assert metric_value(text, "canaryd_requests_total", service="slow", code="5xx") >= 1
    reset = metric_value(text, "canaryd_upstream_errors_total", service="reset", kind="reset")
    assert reset is not None and reset >= 1, text


def test_outlier_ejection_and_return(canaryd, upstream):
    good = upstream("good")
    bad = upstream("bad", error_rate=1)
    services = ("  web:\n"
                "    versions:\n"
                f"      v1: {{endpoints: [127.0.0.1:{good}, 127.0.0.1:{bad}]}}\n"
                "    stable: v1\n"
                "    outlier: {consecutive_5xx: 3, base_ejection: 2s, max_ejected_percent: 50}\n")
    d = start_proxy(canaryd, services)
    c = Client(d.proxy_port)
    try:
        failures = 0
        for _ in range(20):
            st, r, _ = c.get("/")
            if upstream_of(r) == "bad":
                assert st == 500
                failures += 1
            if failures >= 3:
                break
        assert failures == 3
        t_ejected = time.monotonic()
        # ejected: everything goes to the healthy endpoint
        seen = [upstream_of(c.get("/")[1]) for _ in range(40)]
        assert seen == ["good"] * 40, seen
        assert time.monotonic() - t_ejected < 1.5
        status, doc = d.get("/v1/services/web")
        health = {e["address"].rsplit(":", 1)[1]: e["health"]
                  for e in doc["versions"][0]["endpoints"]}
        assert health == {str(good): "ok", str(bad): "ejected"}, doc
        # after the ejection time the endpoint gets traffic again
        time.sleep(max(0.0, 2.1 - (time.monotonic() - t_ejected)))

        def bad_again():
            return any(upstream_of(c.get("/")[1]) == "bad" for _ in range(4))

        wait_until(bad_again, 3, interval=0.05, what="the ejected endpoint to return")
    finally:
        c.close()


# --------------------------------------------------------------------------
# Strict parsing: 4xx and the upstream sees nothing


MALFORMED = [
    ("cl_and_te", 400,
     b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("two_content_length", 400,
     b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\n"
     b"helloGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("two_content_length_same", 400,
     b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
    ("obs_fold", 400,
     b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n"),
    ("bare_lf", 400,
     b"GET / HTTP/1.1\r\nHost: a\nX-Other: 1\r\n\r\n"),
    ("bare_lf_everywhere", 400,
     b"GET / HTTP/1.1\nHost: a\n\n"),
    ("two_host", 400,
     b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("te_not_chunked_last", 400,
     b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
     b"0\r\n\r\n"),
    ("header_over_32k", 431,
     b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 1000)
                                               for i in range(34)) + b"\r\n"),
]


def test_upstream_answers_before_request_body_ends(canaryd, upstream):
    # An upstream may answer before it has read the request body (an early
    # 401/413, or demo-upstream, which answers on the head).  The client gets
    # that response; the rest of the body is never taken for a new request;
    # and the connection does not hang: the next request on it is answered,
    # or the connection is closed.
    d = start_proxy(canaryd, "  web:\n    versions:\n"
                    f"      v1: {{endpoints: [127.0.0.1:{upstream('v1')}]}}\n    stable: v1\n")
    body = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    with socket.create_connection(("127.0.0.1", d.proxy_port), timeout=3) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
                  % len(body))
        raw = b""
        while raw.count(b"}") < 1:
            b = s.recv(65536)
            assert b, raw
            raw += b
        early = parse_responses(raw)
        assert [st for st, _, _ in early] == [200]
        assert json.loads(early[0][2])["path"] == "/upload"
        closing = early[0][1].get("connection", "").lower() == "close"
        try:
            s.sendall(body)
            s.sendall(b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        except OSError:
            assert closing
        rest = b""
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                b = b""
            if not b:
                break
            rest += b
        assert b"/smuggled" not in rest, rest
        if not closing:
            # keep-alive was promised: the next request must be answered
            resps = parse_responses(rest)
            assert [json.loads(bd)["path"] for _, _, bd in resps] == ["/next"], (
                "no answer to the next request on the connection (hung): %r" % rest)


def test_header_section_just_under_limit_passes(canaryd, pyupstream):
    up = pyupstream()
    d = start_proxy(canaryd, "  web:\n    versions:\n"
                    f"      v1: {{endpoints: [127.0.0.1:{up.port}]}}\n    stable: v1\n")
    head = b"GET /big-head HTTP/1.1\r\nHost: a\r\n"
    i = 0
    while len(head) < 31 * 1024:
        head += b"X-Fill-%d: %s\r\n" % (i, b"f" * 900)
        i += 1
    raw = raw_exchange(d.proxy_port, head + b"Connection: close\r\n\r\n")
    assert status_of(raw) == 200, raw[:200]
    _, reqs, _ = up.snapshot()
    assert len(reqs) == 1 and sum(n.startswith("x-fill-") for n, _ in reqs[0]["headers"]) == i


@pytest.mark.parametrize("name,want,data", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_rejected_upstream_sees_nothing(canaryd, pyupstream, name, want, data):
    up = pyupstream()
    d = start_proxy(canaryd, "  web:\n    versions:\n"
                    f"      v1: {{endpoints: [127.0.0.1:{up.port}]}}\n    stable: v1\n")
    raw = raw_exchange(d.proxy_port, data)
    assert status_of(raw) == want, raw[:200]
    time.sleep(0.1)
    got, reqs, conns = up.snapshot()
    assert got == b"" and reqs == [] and conns == 0, (got[:300], conns)
    # the proxy is fine afterwards
    st, _, body = get_once(d.proxy_port, "/after")
    assert st == 200 and body == b"ok"


def test_invalid_chunk_size_400_nothing_smuggled(canaryd, pyupstream):
    # A streaming proxy (SPEC 4: bodies are not buffered) forwards a request
    # head before its body arrives, so here the upstream may see the head of
    # the request whose body turns out invalid.  What it must never get: a
    # complete request, the bytes after the bad chunk size, or the request
    # smuggled behind it.
    up = pyupstream()
    d = start_proxy(canaryd, "  web:\n    versions:\n"
                    f"      v1: {{endpoints: [127.0.0.1:{up.port}]}}\n    stable: v1\n")
    for bad in (b"zz", b"-1", b"0x5", b"5 5", b"ffffffffffffffffff"):
        data = (b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + bad +
                b"\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
        raw = raw_exchange(d.proxy_port, data)
        assert status_of(raw) == 400, (bad, raw[:200])
        assert raw.count(b"HTTP/1.1 ") == 1, raw
    time.sleep(0.1)
    got, reqs, conns = up.snapshot()
    assert reqs == [], reqs
    assert b"smuggled" not in got and b"hello" not in got, got


def test_slow_header_408(canaryd, pyupstream):
    up = pyupstream()
    d = start_proxy(canaryd, "  web:\n    versions:\n"
                    f"      v1: {{endpoints: [127.0.0.1:{up.port}]}}\n    stable: v1\n"
                    "    timeouts: {header: 500ms}\n")
    with socket.create_connection(("127.0.0.1", d.proxy_port), timeout=5) as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Half: ")
        t0 = time.monotonic()
        data = b""
        while time.monotonic() - t0 < 4:
            b = s.recv(4096)
            if not b:
                break
            data += b
        took = time.monotonic() - t0
    assert status_of(data) == 408, data
    assert took >= 0.4, took  # the 408 came from the header timeout, not at once
    assert up.snapshot()[2] == 0


# --------------------------------------------------------------------------
# Header hygiene


def test_hop_by_hop_stripped_forwarding_headers_added(canaryd, pyupstream):
    up = pyupstream(response_headers=b"Keep-Alive: timeout=5\r\nX-Resp-Hop: 1\r\n"
                                     b"Connection: X-Resp-Hop\r\nX-Resp-End: 1\r\n")
    d = start_proxy(canaryd, "  web:\n    versions:\n"
                    f"      v1: {{endpoints: [127.0.0.1:{up.port}]}}\n    stable: v1\n")
    c = Client(d.proxy_port)
    try:
        st, r, body = c.get("/h", {"Connection": "keep-alive, X-Secret-Hop",
                                    "Keep-Alive": "timeout=9",
                                    "TE": "trailers",
                                    "Upgrade": "h2c",
                                    "Proxy-Connection": "keep-alive",
                                    "Proxy-Authorization": "Basic eDp5",
                                    "X-Secret-Hop": "1",
                                    "X-End-To-End": "kept"})
        assert st == 200 and body == b"ok"
        # response side: hop-by-hop from the upstream is not passed on either
        assert r.getheader("X-Resp-End") == "1"
        assert r.getheader("X-Resp-Hop") is None and r.getheader("Keep-Alive") is None
        st, r, _ = c.get("/h2", {"X-Request-Id": "abc-123", "X-Forwarded-For": "10.1.2.3",
                                 "X-Forwarded-Proto": "https"})
        assert st == 200
    finally:
        c.close()
    _, reqs, _ = up.snapshot()
    assert len(reqs) == 2
    h1 = reqs[0]["headers"]
    names = [n for n, _ in h1]
    for hop in ("connection", "keep-alive", "te", "upgrade", "proxy-connection",
                "proxy-authorization", "x-secret-hop"):
        assert hop not in names, (hop, h1)
    assert ("x-end-to-end", "kept") in h1
    assert ("x-forwarded-for", "127.0.0.1") in h1
    assert ("x-forwarded-proto", "http") in h1
    rid = [v for n, v in h1 if n == "x-request-id"]
    assert len(rid) == 1 and len(rid[0]) >= 8, h1
    h2 = reqs[1]["headers"]
    assert [v for n, v in h2 if n == "x-request-id"] == ["abc-123"]
    assert [v for n, v in h2 if n == "x-forwarded-for"] == ["10.1.2.3, 127.0.0.1"]
    assert [v for n, v in h2 if n == "x-forwarded-proto"] == ["http"]
    # the request ids differ per request when generated
    st, r, _ = get_once(d.proxy_port, "/h3")
    _, reqs, _ = up.snapshot()
    assert [v for n, v in reqs[2]["headers"] if n == "x-request-id"] != rid


# --------------------------------------------------------------------------
# Pipelining


def test_pipelined_requests_answered_in_order(canaryd, upstream):
    d = start_proxy(canaryd, "  web:\n    versions:\n"
                    f"      v1: {{endpoints: [127.0.0.1:{upstream('v1')}]}}\n    stable: v1\n")
    data = (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = raw_exchange(d.proxy_port, data)
    resps = parse_responses(raw)
    assert [s for s, _, _ in resps] == [200, 200, 200], raw
    assert [json.loads(b)["path"] for _, _, b in resps] == ["/a", "/b", "/c"]


def test_routed_request_after_local_404_on_same_connection(canaryd, upstream):
    """A request the proxy answers itself without a service (404: no route)
    leaves the connection ready for a proxied one: the next request's head
    is forwarded whole, not refused as too large."""
    d = start_proxy(canaryd, "  web:\n    versions:\n"
                    f"      v1: {{endpoints: [127.0.0.1:{upstream('v1')}]}}\n    stable: v1\n",
                    routes=[("/api", "web")])
    data = (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /api/b HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /nope2 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /api/d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = raw_exchange(d.proxy_port, data)
    resps = parse_responses(raw)
    assert [s for s, _, _ in resps] == [404, 200, 404, 200], raw
    assert [json.loads(b)["path"] for s, _, b in resps if s == 200] == ["/api/b", "/api/d"]


# --------------------------------------------------------------------------
# Big bodies: streamed, bounded memory

# Size: 1 GiB each way, as the issue asks.  Measured on the 2-core dev
# machine: the Python ends alone move 256 MiB in ~0.3 s (upload) / ~0.05 s
# (download), and 1 GiB through the proxy takes ~1 s each way, plus the
# deliberate stalls below; so 1 GiB keeps each test well under 20 s.
# BIG_BODY_MIB lets a slower machine shrink it.
BIG = int(os.environ.get("BIG_BODY_MIB", "1024")) << 20
RSS_LIMIT_KIB = 64 << 10
STALL_S = 0.3  # the slow side stops reading this long, twice per transfer


class RssWatch:
    def __init__(self, pid):
        self.pid = pid
        self.max_rss = 0
        self.stop = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop:
            try:
                self.max_rss = max(self.max_rss, kib(read_status(self.pid)["VmRSS"]))
            except (OSError, KeyError):
                return
            time.sleep(0.02)

    def finish(self):
        self.stop = True
        self.t.join(2)
        return max(self.max_rss, kib(read_status(self.pid)["VmHWM"]))


def test_big_request_body_streams_in_bounded_memory(canaryd, pyupstream):
    # the upstream is slower than the client at the start and half way: the
    # proxy must stop reading the client (TCP backpressure) and resume after
    up = pyupstream(mode="sink", stall_at=(0, BIG // 2), stall_s=STALL_S)
    d = start_proxy(canaryd, "  web:\n    versions:\n"
                    f"      v1: {{endpoints: [127.0.0.1:{up.port}]}}\n    stable: v1\n"
                    "    timeouts: {response: 10s}\n")
    watch = RssWatch(d.proc.pid)
    block = memoryview(b"\x5a" * (1 << 20))

    def gen():
        for _ in range(BIG >> 20):
            yield block

    conn = httpclient.HTTPConnection("127.0.0.1", d.proxy_port, timeout=10)
    t0 = time.monotonic()
    conn.request("POST", "/upload", body=gen(), headers={"Transfer-Encoding": "chunked"},
                 encode_chunked=True)
    r = conn.getresponse()
    body = r.read()
    took = time.monotonic() - t0
    conn.close()
    peak = watch.finish()
    assert r.status == 200 and int(body) == BIG, body[:100]
    assert peak < RSS_LIMIT_KIB, f"canaryd peak RSS {peak} KiB for a {BIG >> 20} MiB upload"


def test_big_response_body_streams_in_bounded_memory(canaryd, pyupstream):
    up = pyupstream(mode="source", source_bytes=BIG)
    d = start_proxy(canaryd, "  web:\n    versions:\n"
                    f"      v1: {{endpoints: [127.0.0.1:{up.port}]}}\n    stable: v1\n"
                    "    timeouts: {response: 10s}\n")
    watch = RssWatch(d.proc.pid)
    conn = httpclient.HTTPConnection("127.0.0.1", d.proxy_port, timeout=10)
    t0 = time.monotonic()
    conn.request("GET", "/download")
    r = conn.getresponse()
    assert r.status == 200 and int(r.getheader("Content-Length")) == BIG
    buf = bytearray(1 << 20)
    total = 0
    stalls = [0, BIG // 2]
    while True:
        if stalls and total >= stalls[0]:
            # a slow client: the proxy must stop reading the upstream meanwhile
            stalls.pop(0)
            time.sleep(STALL_S)
        n = r.readinto(buf)
        if not n:
            break
        total += n
    took = time.monotonic() - t0
    conn.close()
    peak = watch.finish()
    assert total == BIG
    assert peak < RSS_LIMIT_KIB, f"canaryd peak RSS {peak} KiB for a {BIG >> 20} MiB download"


# --------------------------------------------------------------------------
# Signals under load


def test_sighup_under_load_no_failed_request(canaryd, upstream):
    d = start_proxy(canaryd, web_service(upstream("v1"), upstream("v2"),
                                         "    sticky: header:x-user-id\n"), workers=2)
    set_traffic(d, "v2", 20)
    stop = threading.Event()
    stats = {"ok": 0, "failed": []}
    lock = threading.Lock()

    def load(tid):
        def run():
            c = Client(d.proxy_port, timeout=5)
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    st, r, _ = c.get("/l", {"x-user-id": "t%d-%d" % (tid, i)})
                    ok = st == 200
                except Exception as e:  # noqa: BLE001 - a failed request
                    ok = False
                    st = repr(e)
                    c.close()
                    c = Client(d.proxy_port, timeout=5)
                with lock:
                    if ok:
                        stats["ok"] += 1
                    else:
                        stats["failed"].append(st)
            c.close()
        return run

    threads = [threading.Thread(target=load(i), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    d.proc.signal(signal.SIGHUP)  # same configuration
    time.sleep(1.0)
    # a changed configuration: the responses now carry the cohort
    with open(d.config_path) as f:
        cfg = f.read()
    with open(d.config_path, "w") as f:
        f.write(cfg.replace("    sticky: header:x-user-id\n",
                            "    sticky: header:x-user-id\n    expose_cohort: true\n"))
    d.proc.signal(signal.SIGHUP)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(10)
    assert not stats["failed"], stats["failed"][:10]
    assert stats["ok"] > 200
    st, r, _ = get_once(d.proxy_port, "/", {"x-user-id": "after-reload"})
    assert st == 200 and cohort_of(r) in ("canary", "baseline", "stable")
    status, doc = d.get("/v1/events?limit=1000")
    assert sum(e["kind"] == "config.reloaded" for e in doc["events"]) == 2
    # the traffic state survived the reloads
    assert d.get("/v1/services/web")[1]["weight"] == 20


def test_sigterm_completes_in_flight_request_and_exits_0(canaryd, upstream):
    v1 = upstream("v1", latency_ms=1000)
    d = start_proxy(canaryd, "  web:\n    versions:\n"
                    f"      v1: {{endpoints: [127.0.0.1:{v1}]}}\n"
                    "    stable: v1\n")
    result = []

    def run():
        c = Client(d.proxy_port, timeout=10)
        try:
            st, r, body = c.get("/inflight")
            result.append((st, body))
        except Exception as e:  # noqa: BLE001
            result.append(("error", repr(e)))
        finally:
            c.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    # the request is at the upstream (held 1 s) when the signal comes
    wait_until(lambda: upstream_in_flight(v1) == 1, 5, what="the request in flight")
    d.proc.signal(signal.SIGTERM)
    t.join(10)
    assert result and result[0][0] == 200, result
    assert json.loads(result[0][1])["path"] == "/inflight"
    assert d.proc.wait(timeout=10) == 0
