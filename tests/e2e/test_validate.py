"""Post-rollout validation windows and the canary request sample (issue 16):
a real canaryd with its proxy and demo-upstream versions on 127.0.0.1.

Windows are seconds long (analysis interval 1s); every wait is bounded and
every process is stopped by the fixtures."""
import http.client as httpc
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

import conftest
from conftest import ADMIN_TOKEN, Daemon, bin_path, free_port, http, wait_until
from test_rollout import (Receiver, begin, esc, events, rollout, set_error_rate, start,
                          upstream_stats, wait_state, web_v2)

CHECKS = """    analysis:
      interval: 1s
      checks:
        - name: errors
          metric: error_rate
          max_increase: 0.05
          min_samples: 30
          on_fail: rollback
"""


class Traffic:
    """Requests through the proxy from a thread, each with its own
    x-request-id (e2e-N), about `rate` a second until stop()."""

    def __init__(self, port, rate=120):
        self.port, self.rate, self.n = port, rate, 0
        self.ids = []
        self.stopping = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        conn = None
        while not self.stopping.is_set():
            t0 = time.monotonic()
            rid = f"e2e-{self.n}"
            self.n += 1
            try:
                if conn is None:
                    conn = httpc.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", f"/item/{self.n}", headers={"x-request-id": rid,
                                                                "x-user-id": str(self.n)})
                conn.getresponse().read()
                self.ids.append(rid)
            except (OSError, httpc.HTTPException):
                conn = None
            left = 1.0 / self.rate - (time.monotonic() - t0)
            if left > 0:
                time.sleep(left)

    def stop(self):
        self.stopping.set()
        self.t.join(10)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def validation(d, name="web-v2", **q):
    path = f"/v1/rollouts/{name}/validation"
    if q:
        path += "?" + "&".join(f"{k}={v}" for k, v in q.items())
    st, doc = d.get(path)
    assert st == 200, doc
    return doc


def window(d, wname, name="web-v2"):
    return next(w for w in validation(d, name)["windows"] if w["name"] == wname)


def plan(validate, notify_port=None):
    text = """    steps:
      - weight: 50
        for: 2s
      - weight: 100
""" + CHECKS + "    validate:\n" + validate
    if notify_port:
        text += f"""    notify:
      - webhook: http://127.0.0.1:{notify_port}/slack
        events: [completed, rollback, validation_passed, validation_failed]
"""
    return text


def notified(receiver, kind):
    return [b for b in receiver.on("/slack") if b["canaryd"]["event"] == kind]


def test_healthy_completion_windows_pass_in_order_with_reports(canaryd, upstream, receiver):
    v1, v2 = upstream("v1"), upstream("v2")
    port = free_port()
    d = start(canaryd, web_v2(port, v1, v2, plan(
        "      - {name: w1, for: 2s}\n      - {name: w2, after: 3s, for: 2s}\n",
        receiver.port)))
    load = Traffic(port)
    try:
        begin(d)
        wait_state(d, "web-v2", ("completed",), 30)
        wait_until(lambda: window(d, "w2")["state"] == "passed", 30, 0.1, what="w2 passed")
    finally:
        load.stop()
    v = validation(d)
    w1, w2 = v["windows"]
    assert v["state"] == "completed" and v["reverted_by"] is None
    assert w1["state"] == "passed" and w2["state"] == "passed", v
    # in order, w2 from its own start (completion + 3s), after w1 ended
    assert w1["ended_ms"] <= w2["started_ms"]
    assert w2["started_ms"] >= v["completed_ms"] + 3000
    rep = w1["report"]
    assert rep["checks"][0]["name"] == "errors" and rep["checks"][0]["outcome"] == "pass"
    assert rep["checks"][0]["canary_requests"] > 0 and rep["checks"][0]["points"]
    assert rep["targets"]["web"] == {**rep["targets"]["web"], "new_stable": "v2",
                                     "old_stable": "v1"}
    assert "# Validation window `w1` of rollout `web-v2`: passed" in w1["report_md"]
    assert "| errors | error_rate | **pass** |" in w1["report_md"]
    st, _, body = http("GET", d.url + "/v1/rollouts/web-v2/validation?format=md&window=w2",
                       token=ADMIN_TOKEN)
    assert st == 200 and body.decode().startswith("# Validation window `w2`"), body
    # in the bundle (download and directory), with one chart per check
    st, b = d.get("/v1/rollouts/web-v2/evidence")
    assert st == 200
    for f in ("validation-w1.md", "validation-w2.md", "validation-w1-errors.svg"):
        assert f in b["files"], sorted(b["files"])
    assert b["files"]["validation-w1-errors.svg"].startswith("<svg")
    assert "## Post-rollout validation" in b["files"]["summary.md"]
    assert [r["window"] for r in b["validation"]] == ["w1", "w2"]
    edir = os.path.join(d.workdir, "evidence")
    assert any(os.path.exists(os.path.join(edir, x, "validation-w2.md"))
               for x in os.listdir(edir))
    # each window's end notified; the rollout stays completed on v2
    wait_until(lambda: len(notified(receiver, "rollout.validation.passed")) == 2, 10,
               what="two validation_passed notifications")
    assert rollout(d, "web-v2")["state"] == "completed"
    st, s = d.get("/v1/services/web")
    assert s["stable"] == "v2", s
    # canaryctl rollout get lists the windows
    r = subprocess.run([bin_path("canaryctl"), "--server", d.url, "--token", ADMIN_TOKEN,
                        "rollout", "get", "web-v2"], capture_output=True, text=True, timeout=20,
                       env={k: v for k, v in os.environ.items()
                            if k not in ("CANARYD_TOKEN", "CANARYD_SERVER")})
    assert r.returncode == 0, r.stderr
    assert re.search(r"validation\n +w1 +passed +on_fail notify\n +w2 +passed", r.stdout), r.stdout


def test_bad_after_completion_reverts_with_the_canary_sample(canaryd, upstream, receiver):
    v1, v2 = upstream("v1"), upstream("v2")
    port = free_port()
    d = start(canaryd, web_v2(port, v1, v2, plan(
        "      - {name: day-1, for: 60s, on_fail: rollback}\n", receiver.port)))
    load = Traffic(port)
    try:
        begin(d)
        wait_state(d, "web-v2", ("completed",), 30)
        wait_until(lambda: window(d, "day-1")["state"] == "running", 15, 0.1,
                   what="day-1 running")
        # the service is held while a rollback window runs: no hand-set weights
        st, doc = d.put("/v1/services/web/traffic", {"canary": "v1", "weight": 10})
        assert st == 409, doc
        set_error_rate(v2, 0.5)
        wait_state(d, "web-v2", ("rolled_back",), 20, post_done=True)
    finally:
        load.stop()
    rb = events(d, "web-v2", "rollout.rollback")[-1]["details"]
    assert rb["class"] == "validation"
    assert rb["reason"].startswith("validation window day-1 failed: check errors failed"), rb
    w = window(d, "day-1")
    assert w["state"] == "failed" and validation(d)["reverted_by"] == "day-1"
    # back on the old stable, which stayed warm
    st, s = d.get("/v1/services/web")
    assert s["stable"] == "v1", s
    count = upstream_stats(v2)["requests"]
    r1 = upstream_stats(v1)["requests"]
    for i in range(20):
        st, _, body = http("GET", f"http://127.0.0.1:{port}/after/{i}")
        assert st == 200 and b"v1" in body, body
    assert upstream_stats(v2)["requests"] == count
    assert upstream_stats(v1)["requests"] >= r1 + 20
    wait_until(lambda: notified(receiver, "rollout.validation.failed"), 10,
               what="validation_failed notification")
    # the evidence has the canary's last requests: ids this test sent
    st, b = d.get("/v1/rollouts/web-v2/evidence")
    assert st == 200
    sample = json.loads(b["files"]["canary-requests.json"])
    reqs = sample[-1]["targets"]["web"]["requests"]
    assert sample[-1]["targets"]["web"]["version"] == "v2" and len(reqs) >= 10
    sent = set(load.ids)
    assert all(q["request_id"] in sent for q in reqs), reqs[:3]
    assert reqs[0]["method"] == "GET" and reqs[0]["path"].startswith("/item/")
    assert any(q["status"] == 500 for q in reqs)
    assert "## Canary requests around the decision" in b["files"]["summary.md"]
    assert reqs[0]["request_id"] in b["files"]["summary.md"]
    assert "validation-day-1.md" in b["files"]


def test_restart_mid_window_resumes_from_persisted_times(canaryd, upstream, procs, tmp_path):
    v1, v2 = upstream("v1"), upstream("v2")
    port = free_port()
    workdir = tmp_path / "restart"
    workdir.mkdir()
    admin_port = free_port()
    text = esc(web_v2(port, v1, v2, plan("      - {name: w1, for: 8s, on_fail: rollback}\n")))
    cfg = workdir / "canaryd.yaml"
    cfg.write_text(conftest.with_store_backend(text.format(admin_port=admin_port,
                                                             workdir=str(workdir))))
    env = {"E2E_ADMIN_TOKEN": ADMIN_TOKEN, "E2E_READ_TOKEN": "r", "E2E_FLAGS_TOKEN": "f"}
    d = Daemon(None, admin_port, str(workdir), str(cfg))

    def run():
        d.proc = procs([bin_path("canaryd"), "-c", str(cfg)], env=env, cwd=str(workdir),
                       name="canaryd")
        wait_until(lambda: http("GET", d.url + "/v1/health", timeout=0.5)[0] == 200, 10,
                   what="canaryd health")

    run()
    load = Traffic(port)
    try:
        begin(d)
        wait_state(d, "web-v2", ("completed",), 30)
        wait_until(lambda: window(d, "w1")["state"] == "running" and
                   window(d, "w1")["report"]["looks"] >= 1, 15, 0.1, what="w1 judged once")
        before = window(d, "w1")
        d.proc.signal(signal.SIGKILL)
        d.proc.wait(5)
        run()
        # the restarted canaryd judges the window again (the first interval re-primes)
        after = wait_until(lambda: (lambda w: w["report"]["looks"] > before["report"]["looks"]
                                    and w)(window(d, "w1")), 15, 0.1, what="w1 judged again")
        # resumed, not restarted: the same start, the same scheduled end
        assert after["state"] == "running", after
        assert after["started_ms"] == before["started_ms"]
        assert after["ends_ms"] == before["ends_ms"]
        wait_until(lambda: window(d, "w1")["state"] == "passed", 20, 0.1, what="w1 passed")
    finally:
        load.stop()
    w = window(d, "w1")
    assert w["ended_ms"] >= before["ends_ms"]
    # one start, one end: the restart did not begin the window again
    assert len(events(d, "web-v2", "rollout.validation.started")) == 1
    assert len(events(d, "web-v2", "rollout.validation.passed")) == 1


def test_bad_windows_are_config_errors(procs, tmp_path):
    text = """admin:
  listen: 127.0.0.1:9
  tokens: [{name: ops, secret: s, scopes: [admin]}]
store: sqlite:/tmp/x.db
services:
  web:
    versions: {v1: {endpoints: [127.0.0.1:1]}, v2: {endpoints: [127.0.0.1:2]}}
    stable: v1
rollouts:
  web-v2:
    target: {service: web, canary: v2}
    steps: [{weight: 100}]
    analysis:
      checks: [{name: errors, metric: error_rate, max: 0.1}]
    validate:
      - {name: day-1, for: 24h}
      - {name: week-1, after: 24h, for: 7d}
      - {name: month-1, after: 7d, for: 30d, on_fail: revert}
      - {name: day-1, after: 40d, for: 0s, checks: [nope]}
"""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    p = procs([bin_path("canaryd"), "--check", "-c", str(cfg)], name="check")
    assert p.wait(10) == 1
    out = p.output()
    assert ("rollouts.web-v2.validate[2].after: window \"month-1\" would start at 7d, before "
            "validate[1] (\"week-1\") ends at 8d") in out, out
    assert "rollouts.web-v2.validate[2].on_fail: expected rollback or notify" in out, out
    assert "rollouts.web-v2.validate[3].for: must be more than 0" in out, out
    assert "rollouts.web-v2.validate[3].checks[0]: check \"nope\" is not defined" in out, out
    assert "rollouts.web-v2.validate[3].name: duplicate window name \"day-1\"" in out, out
