"""The test tools themselves: loadgen (open-loop load, counts, signals, option
errors) against demo-upstream, and demo-upstream's control endpoints (stats,
reset, runtime config).  Each test is bounded to a few seconds."""
import json
import os
import signal
import socket
import subprocess
import time

from conftest import bin_path, free_port, http, http_json, wait_until


def loadgen_argv(port, *extra, path="/lg"):
    return [bin_path("loadgen"), "--url", f"http://127.0.0.1:{port}{path}", *extra]


def run_loadgen(port, *extra, timeout=15):
    """Runs loadgen to completion; returns (summary doc, stderr text)."""
    r = subprocess.run(loadgen_argv(port, *extra), capture_output=True, timeout=timeout)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    lines = r.stdout.decode().splitlines()
    assert len(lines) == 1, r.stdout
    return json.loads(lines[0]), r.stderr.decode(errors="replace")


def stats(port):
    status, doc = http_json("GET", f"http://127.0.0.1:{port}/_upstream/stats")
    assert status == 200, doc
    return doc


def post(port, path):
    return http_json("POST", f"http://127.0.0.1:{port}{path}", body=b"")


def within(value, want, frac):
    return abs(value - want) <= want * frac


def check_summary_shape(doc):
    for k in ("sent", "completed", "errors", "late", "status", "by_header", "latency_ms",
              "duration_s", "rate_achieved"):
        assert k in doc, k
    for k in ("p50", "p90", "p99", "max"):
        assert doc["latency_ms"][k] >= 0
    lat = doc["latency_ms"]
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert sum(doc["status"].values()) == doc["completed"]
    assert sum(doc["by_header"].values()) == doc["completed"]
    assert doc["sent"] == doc["completed"] + doc["errors"] + doc.get("in_flight", 0)


def test_loadgen_rate_500_for_2s(upstream):
    port = upstream("v1")
    t0 = time.monotonic()
    doc, _ = run_loadgen(port, "--rate", "500", "--duration", "2")
    took = time.monotonic() - t0
    check_summary_shape(doc)
    assert within(doc["completed"], 1000, 0.15), doc
    assert doc["errors"] == 0 and doc["late"] == 0, doc
    assert doc["status"] == {"200": doc["completed"]}
    assert doc["by_header"] == {"v1": doc["completed"]}
    assert within(doc["duration_s"], 2.0, 0.15), doc
    assert within(doc["rate_achieved"], 500, 0.15), doc
    assert took < 6, took
    # the upstream saw exactly the requests loadgen sent
    assert stats(port)["requests"] == doc["sent"]


def test_loadgen_counts_status_and_by_header(upstream):
    port = upstream("v2", error_rate=0.1, seed=7)
    doc, _ = run_loadgen(port, "--rate", "1000", "--duration", "1.5")
    check_summary_shape(doc)
    n = doc["completed"]
    assert within(n, 1500, 0.15), doc
    assert set(doc["status"]) <= {"200", "500"}
    errs = doc["status"].get("500", 0)
    assert 0.05 * n <= errs <= 0.15 * n, doc
    assert doc["status"]["200"] == n - errs
    assert doc["by_header"] == {"v2": n}
    # upstream error answers are HTTP responses, not loadgen errors
    assert doc["errors"] == 0
    st = stats(port)
    assert st["requests"] == doc["sent"] and st["errors"] == errs


def test_loadgen_by_header_missing_and_custom_header(upstream):
    port = upstream("v1")
    # a response header that is never set counts under ""
    doc, _ = run_loadgen(port, "--rate", "200", "--duration", "0.5", "--by-header", "x-nope",
                         "--header", "x-tenant", "--keys", "3", "--seed", "42")
    assert doc["by_header"] == {"": doc["completed"]} and doc["completed"] > 50


def test_loadgen_sends_keyed_header(procs):
    """A raw socket upstream records the request heads loadgen sends."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(5)
    port = srv.getsockname()[1]
    p = subprocess.Popen(loadgen_argv(port, "--rate", "50", "--duration", "0.3", "--keys", "5",
                                      "--header", "x-tenant", path="/k?q=1"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    heads = []
    try:
        conn, _ = srv.accept()
        conn.settimeout(3)
        buf = b""
        while True:  # until loadgen closes the connection at its exit
            data = conn.recv(65536)
            if not data:
                break
            buf += data
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                heads.append(head.decode())
                body = b'{"ok":true}'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                             b"X-Upstream-Version: raw\r\n\r\n%s" % (len(body), body))
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        srv.close()
    assert p.returncode == 0, err
    assert len(heads) >= 10, heads
    keys = set()
    for h in heads:
        lines = h.split("\r\n")
        assert lines[0] == "GET /k?q=1 HTTP/1.1", lines[0]
        hdrs = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
        assert hdrs["host"] == f"127.0.0.1:{port}"
        assert hdrs["x-tenant"].startswith("user-")
        keys.add(int(hdrs["x-tenant"][5:]))
    assert keys <= set(range(5)) and len(keys) >= 2, keys
    doc = json.loads(out)
    assert doc["by_header"].get("raw", 0) >= 10


def test_loadgen_chunked_responses_and_late(procs):
    """Chunked bodies are parsed; a slow peer with one connection makes
    requests late instead of slowing the schedule down."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(5)
    port = srv.getsockname()[1]
    p = subprocess.Popen(loadgen_argv(port, "--rate", "100", "--duration", "1",
                                      "--connections", "1"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    answered = 0
    try:
        conn, _ = srv.accept()
        conn.settimeout(3)
        buf = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                data = conn.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            buf += data
            while b"\r\n\r\n" in buf:
                _, buf = buf.split(b"\r\n\r\n", 1)
                time.sleep(0.03)  # ~33 answers/s: below the 100/s schedule
                conn.sendall(b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n"
                             b"X-Upstream-Version: c\r\n\r\n"
                             b"3\r\nabc\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n")
                answered += 1
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        srv.close()
    assert p.returncode == 0, err
    doc = json.loads(out)
    check_summary_shape(doc)
    assert doc["connections"] == 1
    assert doc["errors"] == 0, doc
    assert doc["status"] == {"503": doc["completed"]} and doc["completed"] >= 20
    assert doc["by_header"] == {"c": doc["completed"]}
    assert doc["late"] >= 50, doc
    # late requests still waiting when the run ended were never sent
    assert doc["sent"] + doc["unsent"] == 100, doc
    assert doc["latency_ms"]["max"] >= 30


def test_loadgen_sigterm_with_duration_0(upstream, procs):
    port = upstream("v1")
    lg = subprocess.Popen(loadgen_argv(port, "--rate", "200", "--duration", "0",
                                       "--report-ms", "200"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: stats(port)["requests"] >= 100, 5, what="loadgen traffic")
        lg.send_signal(signal.SIGTERM)
        out, err = lg.communicate(timeout=5)
    finally:
        if lg.poll() is None:
            lg.kill()
            lg.wait()
    assert lg.returncode == 0, err
    lines = out.decode().splitlines()
    assert len(lines) == 1, out
    doc = json.loads(lines[0])
    check_summary_shape(doc)
    assert doc["completed"] >= 100 and doc["errors"] == 0
    assert doc["by_header"] == {"v1": doc["completed"]}
    assert stats(port)["requests"] == doc["sent"]
    # interval reports on stderr, one JSON object a line, adding up to the totals
    reports = [json.loads(l) for l in err.decode().splitlines() if l.startswith("{")]
    assert len(reports) >= 2
    assert sum(r["sent"] for r in reports) == doc["sent"]
    assert sum(r["completed"] for r in reports) == doc["completed"]


def test_loadgen_errors_connect_and_timeout(upstream):
    # nothing listens: every request is a connect error, and loadgen still exits 0
    doc, _ = run_loadgen(free_port(), "--rate", "100", "--duration", "0.5")
    assert doc["completed"] == 0 and doc["errors"] == doc["sent"] >= 40, doc
    assert doc["error_kinds"]["connect"] == doc["errors"]
    # an upstream slower than --timeout-ms: timeouts
    port = upstream("slow", latency_ms=500)
    doc, _ = run_loadgen(port, "--rate", "20", "--duration", "0.5", "--timeout-ms", "100")
    assert doc["completed"] == 0 and doc["errors"] == doc["sent"] == 10, doc
    assert doc["error_kinds"]["timeout"] == 10


def test_loadgen_bad_options_exit_2():
    cases = [
        [],                                          # --url missing
        ["--url", "https://127.0.0.1:1/"],           # not http
        ["--url", "http://localhost:8080/"],         # not a numeric IP
        ["--url", "http://127.0.0.1/"],              # no port
        ["--url", "http://127.0.0.1:1/", "--rate", "0"],
        ["--url", "http://127.0.0.1:1/", "--rate", "fast"],
        ["--url", "http://127.0.0.1:1/", "--duration", "-1"],
        ["--url", "http://127.0.0.1:1/", "--connections", "0"],
        ["--url", "http://127.0.0.1:1/", "--keys", "0"],
        ["--url", "http://127.0.0.1:1/", "--header", "bad header"],
        ["--url", "http://127.0.0.1:1/", "--timeout-ms", "x"],
        ["--url", "http://127.0.0.1:1/", "--bogus"],
        ["--url", "http://127.0.0.1:1/", "extra"],
    ]
    for argv in cases:
        r = subprocess.run([bin_path("loadgen")] + argv, capture_output=True, timeout=5)
        assert r.returncode == 2, (argv, r.returncode, r.stderr)
        assert b"usage: loadgen" in r.stderr, argv
        assert r.stdout == b"", argv


def test_upstream_stats_count_and_last_request(upstream):
    port = upstream("v1")
    st = stats(port)
    assert st["name"] == "v1"
    assert st["requests"] == 0 and st["errors"] == 0 and st["in_flight"] == 0
    assert st["first_request_ms"] == 0 and st["last_request_ms"] == 0
    before = int(time.time() * 1000)
    for i in range(5):
        status, hdrs, body = http("GET", f"http://127.0.0.1:{port}/r{i}")
        assert status == 200 and json.loads(body)["version"] == "v1"
    after = int(time.time() * 1000)
    st = stats(port)
    assert st["requests"] == 5  # the stats requests are not counted
    assert before - 5 <= st["first_request_ms"] <= st["last_request_ms"] <= after + 5
    # no new request: last_request_ms does not move
    time.sleep(0.05)
    assert stats(port)["last_request_ms"] == st["last_request_ms"]
    time.sleep(0.02)
    http("GET", f"http://127.0.0.1:{port}/again")
    st2 = stats(port)
    assert st2["requests"] == 6 and st2["last_request_ms"] > st["last_request_ms"]
    assert st2["first_request_ms"] == st["first_request_ms"]
    # control paths: methods and unknown names
    assert http("POST", f"http://127.0.0.1:{port}/_upstream/stats", body=b"")[0] == 405
    assert http("GET", f"http://127.0.0.1:{port}/_upstream/reset")[0] == 405
    assert http("GET", f"http://127.0.0.1:{port}/_upstream/nope")[0] == 404
    assert stats(port)["requests"] == 6


def test_upstream_in_flight_and_reset(upstream):
    port = upstream("v1", latency_ms=400, error_rate=1.0)
    lg = subprocess.Popen(loadgen_argv(port, "--rate", "20", "--duration", "0.3"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # the control endpoints answer at once even while requests are delayed
        st = wait_until(lambda: (s := stats(port))["in_flight"] >= 3 and s, 3,
                        what="requests in flight")
        assert st["errors"] == 0  # not answered yet
        out, _ = lg.communicate(timeout=5)
    finally:
        if lg.poll() is None:
            lg.kill()
            lg.wait()
    doc = json.loads(out)
    assert doc["status"] == {"500": 6}, doc
    st = stats(port)
    assert st["requests"] == 6 and st["errors"] == 6 and st["in_flight"] == 0
    status, st = post(port, "/_upstream/reset")
    assert status == 200
    assert (st["requests"], st["errors"], st["first_request_ms"], st["last_request_ms"]) == \
        (0, 0, 0, 0)
    assert stats(port)["requests"] == 0
    # configuration is not reset
    assert stats(port)["error_rate"] == 1.0


def test_upstream_runtime_error_rate(upstream):
    port = upstream("canary", seed=3)
    doc, _ = run_loadgen(port, "--rate", "1000", "--duration", "0.5")
    assert doc["status"] == {"200": doc["completed"]}
    status, st = post(port, "/_upstream/config?error_rate=0.5")
    assert status == 200 and st["error_rate"] == 0.5
    doc, _ = run_loadgen(port, "--rate", "1000", "--duration", "0.5")
    n, errs = doc["completed"], doc["status"].get("500", 0)
    assert 0.35 * n <= errs <= 0.65 * n, doc
    # error_status and latency change too, all or nothing on a bad value
    status, st = post(port, "/_upstream/config?error_rate=1&error_status=503&latency_ms=0")
    assert status == 200 and st["error_status"] == 503
    status, hdrs, body = http("GET", f"http://127.0.0.1:{port}/x")
    assert status == 503 and json.loads(body) == {"version": "canary", "error": True}
    for bad in ("error_rate=1.5", "error_rate=", "error_rate=abc", "error_status=99",
                "latency_ms=-1", "colour=red", "", "error_rate=0&error_status=700"):
        status, _ = post(port, "/_upstream/config?" + bad)
        assert status == 400, bad
    st = stats(port)
    assert st["error_rate"] == 1.0 and st["error_status"] == 503
    status, st = post(port, "/_upstream/config?error_rate=0")
    assert status == 200
    assert http("GET", f"http://127.0.0.1:{port}/y")[0] == 200


def metrics(port):
    status, hdrs, body = http("GET", f"http://127.0.0.1:{port}/metrics")
    assert status == 200, body
    assert hdrs["Content-Type"].startswith("text/plain; version=0.0.4")
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_upstream_prometheus_metrics_and_quality(upstream):
    port = upstream("v7", seed=5)
    assert metrics(port) == {'demo_requests_total{version="v7"}': 0,
                             'demo_errors_total{version="v7"}': 0,
                             'demo_quality{version="v7"}': 1}
    status, st = post(port, "/_upstream/config?error_rate=1")
    assert status == 200
    for path in ("/a", "/b", "/c"):
        assert http("GET", f"http://127.0.0.1:{port}{path}")[0] == 500
    status, st = post(port, "/_upstream/config?error_rate=0&quality=0.25")
    assert status == 200 and st["quality"] == 0.25
    assert http("GET", f"http://127.0.0.1:{port}/d")[0] == 200
    # scrapes are not requests: the counters only see the four above
    assert metrics(port) == {'demo_requests_total{version="v7"}': 4,
                             'demo_errors_total{version="v7"}': 3,
                             'demo_quality{version="v7"}': 0.25}
    assert stats(port)["requests"] == 4
    for bad in ("quality=", "quality=abc", "quality=nan", "quality=inf"):
        status, _ = post(port, "/_upstream/config?" + bad)
        assert status == 400, bad
    assert stats(port)["quality"] == 0.25
    # POST /metrics is an ordinary request
    status, _, body = http("POST", f"http://127.0.0.1:{port}/metrics", body=b"")
    assert status == 200 and json.loads(body)["path"] == "/metrics"
