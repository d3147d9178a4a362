"""The rollout's `shadow:` step (SPEC 3/6, issue 7): the engine mirrors the
stable traffic to the canary for the step, judges the shadow_* metrics on the
mirror's comparisons, stops the mirror when the step ends, and rolls back when
a shadow check fails (nothing to undo for users; the events and the evidence
say why).  Real canaryd, demo-upstream, loadgen and a Python shadow upstream
on 127.0.0.1; bounded waits; the fixtures stop every process."""
import os
import time

from conftest import free_port, wait_until
from test_mirror import config, pyup, shadow, web  # noqa: F401 - pyup is a fixture
from test_rollout import Load, begin, events, rollout, start, wait_state

TERMINAL = ("completed", "rolled_back", "failed")


def plan(shadow_for="60s"):
    return f"""  web-v2:
    target: {{service: web, canary: v2}}
    steps:
      - shadow: 100
        for: {shadow_for}
      - weight: 10
        for: 60s
    analysis:
      interval: 1s
      checks:
        - name: shadow-mismatches
          metric: shadow_mismatch_rate
          max: 0.05
          min_samples: 50
          on_fail: rollback
    rollback:
      drain: 1s
"""


def test_shadow_step_whose_mismatch_check_fails_rolls_back(canaryd, upstream, pyup, procs,
                                                          tmp_path):
    v1 = upstream("v1")
    v2 = pyup("v2")  # answers 500 under /bad: every mirrored request mismatches
    port = free_port()
    d = start(canaryd, config(port, web(v1, v2.port), plan()),
              extra_env={"CANARYD_EVIDENCE_DIR": str(tmp_path / "evidence")})
    load = Load(procs, port, rate=200, path="/bad/x")
    begin(d)
    r = wait_state(d, "web-v2", TERMINAL, 30, post_done=True)
    load.stop()
    assert r["state"] == "rolled_back", r
    step = events(d, "web-v2", "rollout.step")[0]["details"]
    assert step["kind"] == "shadow" and step["weights"]["web"]["shadow"] == 100
    assert step["skipped"] == []
    rb = events(d, "web-v2", "rollout.rollback")[-1]["details"]
    assert rb["class"] == "check" and "shadow_mismatch_rate" in rb["reason"]
    v = rb["verdict"]
    assert v["check"] == "shadow-mismatches" and v["outcome"] == "fail"
    assert v["canary"]["value"] > 0.05
    # the users never saw the shadow: every answer came from v1, and the canary
    # never got a non-shadow request
    assert all(h == "1" for (_, _, h, _) in v2.requests())
    # the interval events carry the mirror's numbers, and the mirror is stopped
    iv = [e["details"] for e in events(d, "web-v2", "rollout.interval")]
    assert any(x.get("shadow", {}).get("web", {}).get("status_mismatch", 0) > 0 for x in iv)
    n = len(v2.requests())
    s = shadow(d)
    assert s["mirror"]["source"] == "none" and s["mirror"]["percent"] == 0, s
    load2 = Load(procs, port, rate=100, path="/bad/y")
    time.sleep(1.0)
    load2.stop()
    assert len(v2.requests()) == n  # no mirroring after the rollback
    # the evidence bundle says why
    path = events(d, "web-v2", "rollout.evidence")[-1]["details"]["path"]
    with open(os.path.join(path, "summary.md")) as f:
        assert "shadow_mismatch_rate" in f.read()


def test_healthy_shadow_step_passes_and_stops_mirroring(canaryd, upstream, pyup, procs):
    v1 = upstream("v1")
    v2 = pyup("v2")  # 200 everywhere but /bad: every comparison matches
    port = free_port()
    d = start(canaryd, config(port, web(v1, v2.port), plan("3s")))
    load = Load(procs, port, rate=200, path="/ok")
    begin(d)

    def at_weight():
        r = rollout(d, "web-v2")
        return r["step"]["index"] == 1 and r["step"]["kind"] == "set" and r

    wait_until(at_weight, 20, 0.05, what="past the shadow step")

    def copies():
        return sum(1 for x in v2.requests() if x[2] == "1")

    time.sleep(0.3)  # copies sent just before the step passed finish arriving
    mirrored = copies()
    assert mirrored > 50
    ok = [e["details"] for e in events(d, "web-v2", "verdict")
          if e["details"]["check"] == "shadow-mismatches"]
    assert ok and all(x["outcome"] in ("pass", "inconclusive") for x in ok)
    assert any(x["outcome"] == "pass" for x in ok)
    # the weight step sends real traffic to v2 under the same load, but no more
    # shadow copies: the mirror stopped with the step
    real = len(v2.requests()) - mirrored
    time.sleep(1.0)
    load.stop()
    assert copies() == mirrored
    assert len(v2.requests()) - mirrored > real  # the load kept reaching v2 for real
    assert shadow(d)["mirror"]["source"] == "none"
    st = rollout(d, "web-v2")["state"]
    assert st in ("progressing", "completed"), st
