"""Promotion needs evidence (SPEC 5/6, issue 12 section 1): a traffic step passes only
when its time is up AND every check has a conclusive pass on the requests the step
accumulated; without that it waits, and pauses at max_wait with the reason.  Real
canaryd, demo-upstream and loadgen on 127.0.0.1; intervals are 1s; every wait is
bounded; the fixtures stop every process by pid."""
import subprocess
import time

from conftest import ADMIN_TOKEN, bin_path, free_port, wait_until
from test_rollout import Load, begin, events, rollout, start, wait_state, web_v2

TERMINAL = ("completed", "rolled_back", "failed")

ERRORS = """    analysis:
      interval: 1s
      checks:
        - name: errors
          metric: error_rate
          max: 0.05
          min_samples: 200
          on_fail: pause
"""


# max_wait leaves room: at Load(rate=400) the 10% step sees ~40 canary requests a
# second, so min_samples 200 takes ~5s (a max_wait of 5s made the healthy run a coin toss)
def plan(first="      - weight: 10\n        for: 2s\n        max_wait: 8s\n"):
    return "    steps:\n" + first + "      - weight: 100\n        for: 1s\n" + ERRORS


def watch_once(d):
    """`canaryctl rollout get` (the block `watch` prints)."""
    r = subprocess.run([bin_path("canaryctl"), "--server", d.url, "--token", ADMIN_TOKEN,
                        "rollout", "get", "web-v2"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_no_load_never_leaves_step_0_and_pauses_at_max_wait(canaryd, upstream):
    v1, v2 = upstream("v1"), upstream("v2")
    d = start(canaryd, web_v2(free_port(), v1, v2, plan()))
    begin(d)
    # for is up after 2s; without a request there is no evidence: it waits, and says why
    def waiting():
        r = rollout(d, "web-v2")
        w = r["step"].get("waiting_for") or ""
        return r if w.startswith("waiting for evidence: errors 0/200 canary requests") else None

    r = wait_until(waiting, 10, 0.05, what="waiting for evidence")
    assert r["state"] == "progressing" and r["step"]["index"] == 0, r
    assert "waiting     waiting for evidence: errors 0/200 canary requests" in watch_once(d)
    r = wait_state(d, "web-v2", ("paused",) + TERMINAL, 15)
    assert r["state"] == "paused", r
    assert r["pause_reason"] == \
        "not enough evidence: check errors has 0 of 200 requests on the canary", r
    assert r["step"]["index"] == 0 and r["targets"][0]["weight"] == 10, r
    paused = events(d, "web-v2", "rollout.paused")[-1]["details"]
    assert paused["cause"] == "evidence" and paused["evidence"]["ready"] is False
    assert not events(d, "web-v2", "rollout.step.passed")
    time.sleep(1.5)  # paused means paused: nothing moves
    assert rollout(d, "web-v2")["step"]["index"] == 0


def test_healthy_load_completes_with_evidence_in_every_step(canaryd, upstream, procs):
    v1, v2 = upstream("v1"), upstream("v2")
    port = free_port()
    d = start(canaryd, web_v2(port, v1, v2, plan()))
    load = Load(procs, port, rate=400)
    time.sleep(0.3)
    begin(d)
    r = wait_state(d, "web-v2", ("paused",) + TERMINAL, 40)
    load.stop()
    assert r["state"] == "completed", r
    passed = [e["details"] for e in events(d, "web-v2", "rollout.step.passed")]
    assert [p["step"] for p in passed] == [0, 1], passed
    for p in passed:
        ev = p["evidence"]
        assert p["how"] == "done" and ev["required"] and ev["ready"], p
        # each interval alone is too small (inconclusive); their sum earned the pass
        assert ev["intervals"]["failed"] == 0, p
        if p["step"] == 0:  # ~40 canary requests a second against min_samples 200
            assert ev["intervals"]["inconclusive"] >= 1, p
        c = ev["checks"]["errors"]
        assert c["passed"] and c["outcome"] == "pass" and c["canary_requests"] >= 200, p
        assert ev["targets"]["web"]["canary_requests"] >= c["canary_requests"], p


def test_load_that_stops_mid_step_waits_then_pauses(canaryd, upstream, procs):
    v1, v2 = upstream("v1"), upstream("v2")
    port = free_port()
    d = start(canaryd, web_v2(port, v1, v2, plan(
        "      - weight: 10\n        for: 3s\n        max_wait: 6s\n")))
    load = Load(procs, port, rate=100)  # ~10 canary requests a second
    begin(d)
    time.sleep(1.5)
    load.stop()
    r = wait_state(d, "web-v2", ("paused",) + TERMINAL, 20)
    assert r["state"] == "paused" and r["step"]["index"] == 0, r
    reason = r["pause_reason"]
    assert reason.startswith("not enough evidence: check errors has "), reason
    got = int(reason.split(" has ")[1].split(" of ")[0])
    assert 0 < got < 200, reason  # what the step accumulated, not the last (empty) interval
    assert not events(d, "web-v2", "rollout.step.passed")


def test_bad_canary_at_1_percent_with_low_traffic_is_never_promoted(canaryd, upstream, procs):
    v1 = upstream("v1")
    v2 = upstream("v2", error_rate=0.2, seed=5)
    port = free_port()
    d = start(canaryd, web_v2(port, v1, v2, plan(
        "      - weight: 1\n        for: 2s\n        max_wait: 6s\n")))
    load = Load(procs, port, rate=200)  # ~2 canary requests a second
    begin(d)
    r = wait_state(d, "web-v2", ("paused",) + TERMINAL, 20)
    load.stop()
    assert r["state"] == "paused", r
    assert r["step"]["index"] == 0 and r["targets"][0]["weight"] == 1, r
    assert r["pause_reason"].startswith("not enough evidence: check errors has "), r
    assert not events(d, "web-v2", "rollout.step.passed")
    steps = [e["details"]["step"] for e in events(d, "web-v2", "rollout.step")]
    assert steps == [0], steps


def test_require_evidence_false_keeps_time_only_gating(canaryd, upstream):
    v1, v2 = upstream("v1"), upstream("v2")
    d = start(canaryd, web_v2(free_port(), v1, v2, """    steps:
      - weight: 10
        for: 1s
        require_evidence: false
      - weight: 100
        for: 1s
        require_evidence: false
""" + ERRORS))
    begin(d)
    r = wait_state(d, "web-v2", ("paused",) + TERMINAL, 15)
    assert r["state"] == "completed", r  # no request at all, as before this issue
    passed = [e["details"] for e in events(d, "web-v2", "rollout.step.passed")]
    assert len(passed) == 2 and all(p["evidence"]["required"] is False for p in passed), passed


def test_check_warns_for_each_opt_out(tmp_path):
    cfg = tmp_path / "canaryd.yaml"
    cfg.write_text("""services:
  web:
    versions: {v1: {endpoints: [127.0.0.1:9]}, v2: {endpoints: [127.0.0.1:9]}}
    stable: v1
rollouts:
  x:
    target: {service: web, canary: v2}
    steps:
      - weight: 5
        for: 1m
      - weight: 50
        for: 1m
        require_evidence: false
      - weight: 100
    analysis:
      checks:
        - name: errors
          metric: error_rate
          max: 0.05
        - name: latency
          metric: latency_p99
          max: 500
          require_evidence: false
  y:
    target: {service: web, canary: v2}
    steps: [{weight: 100}]
""")
    r = subprocess.run([bin_path("canaryd"), "--check", "-c", str(cfg)], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout
    lines = r.stderr.splitlines()
    assert f"{cfg}:13: rollouts.x.steps[1].require_evidence: false: this step advances on " \
           "time alone" in lines, lines
    assert f"{cfg}:23: rollouts.x.analysis.checks[1].require_evidence: false: no step waits " \
           "for check latency to pass" in lines, lines
    assert f"{cfg}:24: rollouts.y: no analysis checks: every step advances on time alone" \
        in lines, lines
    assert len(lines) == 3, lines
