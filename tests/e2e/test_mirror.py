"""Shadow traffic end to end (SPEC 4 mirror, issue 7): a real canaryd mirroring a
service's requests to a shadow version, demo-upstream and small Python
upstreams on 127.0.0.1.  Every wait is bounded; every process is stopped by the
fixtures."""
import http.client as httpclient
import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import (READ_TOKEN, bin_path, free_port, http, http_json, metric, scrape,
                      wait_until)
from test_rollout import config as rollout_config, start, upstream_stats


def config(port, services, rollouts=""):
    text = rollout_config(port, services, rollouts)
    return text if rollouts else text[: -len("rollouts:\n")]


class PyUpstream:
    """A loopback upstream answering 500 on paths under /bad and 200 elsewhere,
    recording every request's method, path and X-Canary-Shadow header."""

    def __init__(self, name):
        self.seen = []
        self.heads = []  # every request's headers, [(lower-case name, value)]
        self.lock = threading.Lock()
        up = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with up.lock:
                    up.seen.append((self.command, self.path,
                                    self.headers.get("X-Canary-Shadow"), body))
                    up.heads.append([(k.lower(), v) for k, v in self.headers.items()])
                code = 500 if self.path.startswith("/bad") else 200
                out = json.dumps({"version": name, "path": self.path}).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            do_GET = do_POST = do_HEAD = do_PUT = handle_any  # noqa: N815

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.th = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.th.start()

    def requests(self):
        with self.lock:
            return list(self.seen)

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def pyup():
    made = []

    def make(name):
        u = PyUpstream(name)
        made.append(u)
        return u

    yield make
    for u in made:
        u.close()


def web(v1, v2, mirror=None, extra=""):
    out = ("  web:\n    versions:\n"
           f"      v1: {{endpoints: [127.0.0.1:{v1}]}}\n"
           f"      v2: {{endpoints: [127.0.0.1:{v2}]}}\n"
           "    stable: v1\n")
    if mirror:
        out += f"    mirror: {mirror}\n"
    return out + extra


def shadow(d, token=None):
    st, doc = d.get("/v1/services/web/shadow", **({"token": token} if token else {}))
    assert st == 200, doc
    return doc


def wait_compared(d, n, timeout=15):
    return wait_until(lambda: (lambda s: s if s["counts"]["compared"] >= n else None)(shadow(d)),
                      timeout, 0.05, what=f"{n} compared mirror requests")


def keepalive_get(port, paths, method="GET", body=None, headers=None):
    """Sends the requests on ONE keep-alive connection; returns [(status, seconds)]."""
    c = httpclient.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    try:
        for p in paths:
            t0 = time.monotonic()
            c.request(method, p, body=body, headers=headers or {})
            r = c.getresponse()
            r.read()
            out.append((r.status, time.monotonic() - t0))
    finally:
        c.close()
    return out


def test_slow_shadow_never_stalls_the_primary(canaryd, upstream):
    v1 = upstream("v1")
    v2 = upstream("v2", latency_ms=300)
    port = free_port()
    d = start(canaryd, config(port, web(v1, v2, "{version: v2, percent: 100}"), ""))
    n = 60
    res = keepalive_get(port, [f"/item/{i}" for i in range(n)])
    assert all(st == 200 for st, _ in res)
    lat = sorted(t for _, t in res)
    # a request that waited for its shadow would take >= 300 ms; with 60 of them on
    # one keep-alive connection the whole run would take >= 18 s
    assert statistics.median(lat) < 0.150, lat
    assert sum(1 for t in lat if t >= 0.300) <= n // 20, lat
    assert sum(lat) < n * 0.300 / 2, sum(lat)
    s = wait_compared(d, n)
    assert s["counts"]["mirrored"] == n
    assert s["counts"]["matched"] == n
    assert upstream_stats(v2)["requests"] == n
    # the shadow's latency is measured on its own: ~300 ms slower than the primary
    assert s["latency"]["shadow"]["p50_ms"] >= 290
    assert s["latency"]["primary"]["p50_ms"] < s["latency"]["shadow"]["p50_ms"] - 200
    assert s["latency"]["primary"]["count"] == n


def test_shadow_errors_on_some_paths_are_mismatches(canaryd, upstream, pyup):
    v1 = upstream("v1")
    sh = pyup("v2")
    port = free_port()
    d = start(canaryd, config(port, web(v1, sh.port, "{version: v2, percent: 100}"), ""))
    paths = [f"/ok/{i}" for i in range(10)] + [f"/bad/{i}" for i in range(5)]
    res = keepalive_get(port, paths)
    assert [st for st, _ in res] == [200] * 15  # users only ever see the primary
    s = wait_compared(d, 15)
    assert s["counts"]["matched"] == 10
    assert s["counts"]["status_mismatch"] == 5
    assert s["rates"]["status_mismatch_rate"] == pytest.approx(5 / 15)
    mm = s["mismatches"]
    assert sorted(m["path"] for m in mm) == sorted(f"/bad/{i}" for i in range(5))
    for m in mm:
        assert m["method"] == "GET" and m["result"] == "status_mismatch"
        assert m["primary_status"] == 200 and m["shadow_status"] == 500
        assert m["primary_ms"] >= 0 and m["shadow_ms"] >= 0
    # newest comparison first
    times = [m["time_ms"] for m in mm]
    assert times == sorted(times, reverse=True), mm
    # every copy is marked as a shadow request
    seen = sh.requests()
    assert len(seen) == 15 and all(x[2] == "1" for x in seen)
    m = scrape(d)
    assert metric(m, "canaryd_mirror_total", service="web", result="status_mismatch") == 5
    assert metric(m, "canaryd_mirror_total", service="web", result="matched") == 10
    assert metric(m, "canaryd_mirror_duration_seconds_count", service="web", side="shadow") == 15
    assert metric(m, "canaryd_mirror_duration_seconds_count", service="web", side="primary") == 15


def test_body_hash_compared_when_asked(canaryd, pyup):
    v1, v2 = pyup("v1"), pyup("v2")  # bodies differ: they carry the version name
    port = free_port()
    d = start(canaryd, config(port, web(v1.port, v2.port,
                                        "{version: v2, percent: 100, compare_body: true}"), ""))
    keepalive_get(port, ["/a", "/b", "/bad/c"])
    s = wait_compared(d, 3)
    # same status class (v1 and v2 both answer 500 on /bad), different bodies
    assert s["counts"]["body_mismatch"] == 3
    assert s["counts"]["status_mismatch"] == 0
    assert s["mirror"]["compare_body"] is True


def test_full_queue_drops_and_counts(canaryd, upstream):
    v1 = upstream("v1")
    v2 = upstream("v2")
    port = free_port()
    d = start(canaryd, config(port, web(v1, v2, "{version: v2, percent: 100}"), ""))
    # the shadow holds every request until released: none finishes while we send,
    # however slow the machine, so the queue's bound is met exactly
    assert http("POST", f"http://127.0.0.1:{v2}/_upstream/hold", body=b"")[0] == 200
    n, cap, on_wire = 400, 256, 64  # one worker keeps at most 256 alive, 64 on the wire
    res = keepalive_get(port, [f"/q/{i}" for i in range(n)])
    assert all(st == 200 for st, _ in res)  # the primary is never held up
    wait_until(lambda: upstream_stats(v2)["held"] == on_wire, 10, 0.05,
               what="the shadow's connections to arrive")
    s = shadow(d)["counts"]
    assert (s["mirrored"], s["dropped"]) == (cap, n - cap), s
    m = scrape(d)
    assert metric(m, "canaryd_mirror_total", service="web", result="dropped") == n - cap
    # released: every accepted copy reaches the shadow and is compared
    assert http("POST", f"http://127.0.0.1:{v2}/_upstream/release", body=b"")[0] == 200
    s = wait_compared(d, cap)["counts"]
    assert s["compared"] == cap and s["dropped"] == n - cap, s
    assert upstream_stats(v2)["requests"] == cap


def test_post_is_not_mirrored_by_default(canaryd, upstream, pyup):
    v1 = upstream("v1")
    sh = pyup("v2")
    port = free_port()
    d = start(canaryd, config(port, web(v1, sh.port, "{version: v2, percent: 100}"), ""))
    res = keepalive_get(port, ["/orders"], method="POST", body=b'{"qty": 1}',
                        headers={"Content-Type": "application/json"})
    assert res[0][0] == 200
    keepalive_get(port, ["/orders"])  # a GET behind it is mirrored
    s = wait_compared(d, 1)
    assert s["counts"]["method"] == 1
    assert s["counts"]["mirrored"] == 1
    assert [(m, p) for m, p, _, _ in sh.requests()] == [("GET", "/orders")]
    assert upstream_stats(v1)["requests"] == 2


def test_post_mirrored_when_listed_body_copied_up_to_cap(canaryd, upstream, pyup):
    v1 = upstream("v1")
    sh = pyup("v2")
    port = free_port()
    d = start(canaryd, config(port, web(
        v1, sh.port, "{version: v2, percent: 100, methods: [POST], body_cap: 1KiB}"), ""))
    small, big = b"x" * 500, b"y" * 2000
    keepalive_get(port, ["/s"], method="POST", body=small)
    keepalive_get(port, ["/b"], method="POST", body=big)
    s = wait_compared(d, 1)
    assert s["counts"]["too_large"] == 1
    assert s["counts"]["mirrored"] == 1
    seen = sh.requests()
    assert [(m, p, b) for m, p, _, b in seen] == [("POST", "/s", small)]
    assert upstream_stats(v1)["requests"] == 2


def test_copy_completed_when_the_primary_answers_before_the_body(canaryd, upstream, pyup):
    """demo-upstream answers as soon as it has a request's head.  When the
    client's body comes only after that answer, the shadow still gets the whole
    request (issue 17: the copy used to be dropped, never counted, which made
    the test above fail when Python's body send came a little late)."""
    import socket
    v1 = upstream("v1")
    sh = pyup("v2")
    port = free_port()
    d = start(canaryd, config(port, web(
        v1, sh.port, "{version: v2, percent: 100, methods: [POST], body_cap: 1KiB}"), ""))
    body = b"z" * 500
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n")
        got = b""
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in got and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        head = got.split(b"\r\n\r\n", 1)[0].decode().lower()
        assert head.startswith("http/1.1 200"), got
        assert "connection: close" in head, head  # the rest of the body ends the connection
        s.sendall(body)
    s = wait_compared(d, 1)
    assert s["counts"]["mirrored"] == 1, s["counts"]
    assert s["counts"]["matched"] == 1, s["counts"]
    assert [(m, p, b) for m, p, _, b in sh.requests()] == [("POST", "/early", body)]


def test_shadow_head_strips_hop_by_hop_and_adds_forwarding(canaryd, upstream, pyup):
    """The shadow gets the request's end-to-end headers only: no hop-by-hop
    ones, none the Connection header names, the client's X-Canary-Shadow
    replaced, the forwarding headers extended as for the primary."""
    v1 = upstream("v1")
    sh = pyup("v2")
    port = free_port()
    d = start(canaryd, config(port, web(v1, sh.port, "{version: v2, percent: 100}"), ""))
    keepalive_get(port, ["/h"], headers={
        "Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1", "Keep-Alive": "300",
        "Proxy-Authorization": "x", "X-End-To-End": "kept", "X-Forwarded-For": "10.1.2.3",
        "X-Forwarded-Proto": "https", "X-Request-Id": "rid-7", "X-Canary-Shadow": "0"})
    wait_compared(d, 1)
    assert len(sh.heads) == 1
    h = sh.heads[0]
    names = [n for n, _ in h]
    for hop in ("connection", "keep-alive", "proxy-authorization", "x-secret-hop"):
        assert hop not in names, (hop, h)
    assert ("x-end-to-end", "kept") in h
    assert [v for n, v in h if n == "x-forwarded-for"] == ["10.1.2.3, 127.0.0.1"]
    assert [v for n, v in h if n == "x-forwarded-proto"] == ["http"]
    assert [v for n, v in h if n == "x-request-id"] == ["rid-7"]
    assert [v for n, v in h if n == "x-canary-shadow"] == ["1"]


def test_mirror_api_validation_persistence_and_audit(canaryd, upstream, pyup):
    v1 = upstream("v1")
    sh = pyup("v2")
    port = free_port()
    text = config(port, web(v1, sh.port), "")
    d = start(canaryd, text)
    assert shadow(d, READ_TOKEN)["mirror"]["source"] == "none"
    keepalive_get(port, ["/before"])
    assert sh.requests() == []
    for body, field in (({"version": "v9", "percent": 10}, "version"),
                        ({"version": "v1", "percent": 10}, "version"),
                        ({"version": "v2", "percent": 150}, "percent"),
                        ({"version": "v2", "percent": 1.0005}, "percent"),
                        ({"version": "v2"}, "percent"),
                        ({"version": "v2", "percent": 5, "extra": 1}, "extra")):
        st, doc = d.put("/v1/services/web/mirror", body)
        assert st == 422, (body, doc)
        assert doc["error"]["field"] == field, doc
    st, _ = d.put("/v1/services/web/mirror", {"version": "v2", "percent": 100}, token=READ_TOKEN)
    assert st == 403
    st, doc = d.put("/v1/services/nope/mirror", {"version": "v2", "percent": 100})
    assert st == 404
    st, doc = d.put("/v1/services/web/mirror", {"version": "v2", "percent": 100})
    assert st == 200, doc
    assert doc["version"] == "v2" and doc["percent"] == 100 and doc["source"] == "runtime"
    keepalive_get(port, ["/after"])
    wait_until(lambda: len(sh.requests()) == 1, 5, what="the runtime mirror")
    st, doc = d.get("/v1/events?since=0")
    evs = doc["events"] if isinstance(doc, dict) else doc
    assert any(e["kind"] == "service.mirror" and e["actor"] == "ops" for e in evs)
    # persisted: a restart keeps the runtime mirror
    d.proc.stop()
    d2 = start(canaryd, text.replace(str(d.admin_port), "{admin_port}"))
    assert shadow(d2)["mirror"]["source"] == "runtime"
    st, doc = d2.delete("/v1/services/web/mirror")
    assert st == 200 and doc["source"] == "none", doc
    keepalive_get(port, ["/gone"])
    time.sleep(0.3)
    assert [p for _, p, _, _ in sh.requests()] == ["/after"]


def test_canaryctl_shadow(canaryd, upstream, pyup):
    import subprocess
    v1 = upstream("v1")
    sh = pyup("v2")
    port = free_port()
    d = start(canaryd, config(port, web(v1, sh.port, "{version: v2, percent: 100}"), ""))
    keepalive_get(port, ["/ok", "/bad/x"])
    wait_compared(d, 2)
    base = [bin_path("canaryctl"), "--server", d.url, "--token", READ_TOKEN]
    r = subprocess.run(base + ["shadow", "web"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert "status_mismatch" in r.stdout and "/bad/x" in r.stdout and "v2" in r.stdout
    r = subprocess.run(base + ["-o", "json", "shadow", "web"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["counts"]["status_mismatch"] == 1
    r = subprocess.run(base + ["shadow"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    r = subprocess.run(base + ["shadow", "nope"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "nope" in r.stderr
