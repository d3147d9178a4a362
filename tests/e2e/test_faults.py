"""Fault injection end to end (SPEC 4 faults, issue 7): abort and delay faults per
version from the config and the API, applied by the proxy's worker timers, and
the rollback rehearsal (an abort fault on the canary makes the rollout's error
check roll it back).  Real processes on 127.0.0.1; every wait is bounded."""
import http.client as httpclient
import statistics
import subprocess
import threading
import time

from conftest import ADMIN_TOKEN, READ_TOKEN, bin_path, free_port, metric, scrape
from test_mirror import config, keepalive_get, web
from test_rollout import ERRORS_CHECK, Load, events, start, upstream_stats, wait_state, web_v2


def svc_faults(d, version):
    st, doc = d.get("/v1/services/web")
    assert st == 200, doc
    return next(v for v in doc["versions"] if v["name"] == version)["faults"]


def test_abort_from_the_api_never_reaches_the_upstream(canaryd, upstream):
    v1, v2 = upstream("v1"), upstream("v2")
    port = free_port()
    text = config(port, web(v1, v2))
    d = start(canaryd, text)
    st, doc = d.put("/v1/services/web/faults/v1", {"abort": {"status": 503, "percent": 100}})
    assert st == 200, doc
    assert doc["faults"]["abort"] == {"status": 503, "percent": 100}
    assert doc["faults"]["source"] == "runtime"
    res = keepalive_get(port, [f"/x/{i}" for i in range(20)])
    assert [s for s, _ in res] == [503] * 20
    assert upstream_stats(v1)["requests"] == 0
    st, doc = d.get("/v1/events?since=0")
    evs = doc["events"] if isinstance(doc, dict) else doc
    assert any(e["kind"] == "service.faults" and e["actor"] == "ops" for e in evs)
    # persisted across a restart
    d.proc.stop()
    d = start(canaryd, text)
    assert svc_faults(d, "v1")["abort"]["status"] == 503
    assert keepalive_get(port, ["/y"])[0][0] == 503
    st, doc = d.delete("/v1/services/web/faults/v1")
    assert st == 200 and doc["faults"] is None, doc
    assert keepalive_get(port, ["/z"])[0][0] == 200
    assert upstream_stats(v1)["requests"] == 1


def test_abort_percentage_is_deterministic_under_the_seed(canaryd, upstream):
    v1, v2 = upstream("v1"), upstream("v2")
    counts = []
    for _ in range(2):
        port = free_port()
        d = start(canaryd, config(port, web(
            v1, v2, extra="    faults:\n      v1: {abort: {status: 500, percent: 10}}\n")),
            extra_env={"CANARYD_SEED": "42"})
        res = keepalive_get(port, [f"/d/{i}" for i in range(1000)])
        codes = [s for s, _ in res]
        assert set(codes) <= {200, 500}
        counts.append(codes)
        d.proc.stop()
    assert counts[0] == counts[1]  # the same seed, the same requests: the same faults
    n = counts[0].count(500)
    assert 60 <= n <= 140, n  # 10% of 1000


def test_delay_is_within_ten_percent(canaryd, upstream):
    v1, v2 = upstream("v1"), upstream("v2")
    port = free_port()
    d = start(canaryd, config(port, web(v1, v2)))
    st, doc = d.put("/v1/services/web/faults/v1", {"delay": {"ms": 200, "percent": 100}})
    assert st == 200, doc
    res = keepalive_get(port, [f"/slow/{i}" for i in range(15)])
    assert all(s == 200 for s, _ in res)
    med = statistics.median(t for _, t in res)
    assert 0.180 <= med <= 0.220, [t for _, t in res]
    # a request with a body is held, then forwarded whole
    res = keepalive_get(port, ["/post"], method="POST", body=b"z" * 100000)
    assert res[0][0] == 200 and res[0][1] >= 0.180
    assert metric(scrape(d), "canaryd_faults_total", service="web", kind="delay") == 16


def test_delayed_requests_never_block_the_worker(canaryd, upstream):
    """A delay fault is a timer, not a sleep: 20 concurrent delayed requests on one
    worker all finish in about one delay.  Blocking the worker would serialise them
    (20 delays); the bound (5 delays) is far from both, so load cannot flip it."""
    v1, v2 = upstream("v1"), upstream("v2")
    port = free_port()
    d = start(canaryd, config(port, web(v1, v2)))  # workers: 1 (conftest's header)
    delay_ms, n = 400, 20
    st, doc = d.put("/v1/services/web/faults/v1", {"delay": {"ms": delay_ms, "percent": 100}})
    assert st == 200, doc
    conns = [httpclient.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(n)]
    for c in conns:
        c.connect()  # connected before the clock starts: only the requests are timed
    results = [None] * n
    go = threading.Barrier(n + 1)

    def one(i):
        go.wait(10)
        t0 = time.monotonic()
        conns[i].request("GET", f"/held/{i}")
        r = conns[i].getresponse()
        r.read()
        results[i] = (r.status, time.monotonic() - t0)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    go.wait(10)
    t0 = time.monotonic()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - t0
    for c in conns:
        c.close()
    assert all(r is not None and r[0] == 200 for r in results), results
    # each request was delayed ...
    assert min(t for _, t in results) >= delay_ms / 1000 * 0.9, results
    # ... and they waited together, not one after another
    assert elapsed < 5 * delay_ms / 1000, (elapsed, results)
    assert metric(scrape(d), "canaryd_faults_total", service="web", kind="delay") == n


def test_fault_validation_names_the_field(canaryd, upstream):
    v1, v2 = upstream("v1"), upstream("v2")
    d = start(canaryd, config(free_port(), web(v1, v2)))
    for body, field in (({}, "delay"),
                        ({"abort": {"status": 99, "percent": 5}}, "abort.status"),
                        ({"abort": {"status": 503, "percent": 101}}, "abort.percent"),
                        ({"abort": {"status": 503}}, "abort.percent"),
                        ({"delay": {"ms": -1, "percent": 5}}, "delay.ms"),
                        ({"delay": {"ms": "2s", "percent": 5}}, "delay.ms"),
                        ({"delay": {"ms": 10, "percent": 5, "x": 1}}, "delay.x"),
                        ({"delay": 5}, "delay"),
                        ({"boom": 1}, "boom")):
        st, doc = d.put("/v1/services/web/faults/v1", body)
        assert st == 422, (body, doc)
        assert doc["error"]["field"] == field, (body, doc)
    st, _ = d.put("/v1/services/web/faults/v9", {"abort": {"status": 503, "percent": 5}})
    assert st == 404
    st, _ = d.put("/v1/services/web/faults/v1", {"abort": {"status": 503, "percent": 5}},
                  token=READ_TOKEN)
    assert st == 403


def test_canaryctl_faults_set_and_clear(canaryd, upstream):
    v1, v2 = upstream("v1"), upstream("v2")
    port = free_port()
    d = start(canaryd, config(port, web(v1, v2)))
    base = [bin_path("canaryctl"), "--server", d.url, "--token", ADMIN_TOKEN]

    def ctl(*args):
        return subprocess.run(base + list(args), capture_output=True, text=True, timeout=10)

    r = ctl("faults", "set", "web", "v2", "--abort", "503:5", "--delay", "200ms:10")
    assert r.returncode == 0, r.stderr
    assert "503" in r.stdout and "200ms" in r.stdout
    f = svc_faults(d, "v2")
    assert f["abort"] == {"status": 503, "percent": 5}
    assert f["delay"] == {"ms": 200, "percent": 10}
    r = ctl("-o", "json", "faults", "clear", "web", "v2")
    assert r.returncode == 0, r.stderr
    assert '"faults": null' in r.stdout
    assert svc_faults(d, "v2") is None
    assert ctl("faults", "set", "web", "v2").returncode == 2
    assert ctl("faults", "set", "web", "v2", "--abort", "503").returncode == 2
    assert ctl("faults", "set", "web", "v2", "--delay", "fast:10").returncode == 2
    r = ctl("faults", "set", "web", "v9", "--abort", "503:5")
    assert r.returncode == 1 and "v9" in r.stderr


def test_abort_fault_on_the_canary_rehearses_the_rollback(canaryd, upstream, procs):
    """The customer's rehearsal: 10% aborts injected on a healthy canary make the
    rollout's error check roll it back, with the evidence saying why."""
    v1, v2 = upstream("v1"), upstream("v2")
    port = free_port()
    text = web_v2(port, v1, v2, """    steps:
      - weight: 50
        for: 60s
      - weight: 100
    analysis:
      interval: 1s
""" + ERRORS_CHECK.replace("max_increase: 0.05", "max_increase: 0.03"))
    d = start(canaryd, text)
    load = Load(procs, port, rate=300)
    try:
        st, doc = d.post("/v1/rollouts/web-v2/start")
        assert st == 200, doc
        wait_state(d, "web-v2", ("progressing",), timeout=10)
        # the canary is healthy: no rollback without the fault
        time.sleep(2.5)
        assert d.get("/v1/rollouts/web-v2")[1]["state"] == "progressing"
        st, doc = d.put("/v1/services/web/faults/v2", {"abort": {"status": 503, "percent": 10}})
        assert st == 200, doc
        r = wait_state(d, "web-v2", ("rolled_back",), timeout=30)
    finally:
        load.stop()
    assert r["state"] == "rolled_back"
    rb = events(d, "web-v2", "rollout.rollback")[-1]["details"]
    assert "error_rate" in rb["reason"] and rb["class"] == "check", rb
    assert rb["verdict"]["outcome"] == "fail"
    # the canary's own upstream never produced those errors: the proxy did
    assert upstream_stats(v2)["errors"] == 0
