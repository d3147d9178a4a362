"""Flags as rollout targets (issue 5, SPEC sections 3 and 6): a rollout target
{flag: NAME} steps the flag's percentage, and a rollback puts the flag back
exactly as it was before the rollout.  Real canaryd on 127.0.0.1; every wait
is bounded; the fixtures stop every process."""
import signal

from conftest import ADMIN_TOKEN, FLAGS_TOKEN, http_json, wait_until
from test_judge import prom_query, prometheus_start, verdicts
from test_rollout import RAW_ADMIN, events, start, wait_state

FLAGS = """flags:
  dwcp_v3_hde:
    description: DWCP v3 hierarchical delta encoding
    sticky: nodeId
    rollout: {"on": 1}
    exclude: [node-123]
"""


def cfg(plan):
    return (RAW_ADMIN + FLAGS + "rollouts:\n  hde-v3:\n    target: {flag: dwcp_v3_hde}\n"
            + plan)


PLAN = """    steps:
      - weight: 5
      - pause: {}
      - weight: 25
      - pause: {}
      - weight: 100
"""


def at_pause(d, index):
    """Waits until the rollout holds at its `pause: {}` step number index."""
    def ok():
        r = d.get("/v1/rollouts/hde-v3")[1]
        return (r["state"] == "progressing" and r["step"]["index"] == index
                and r["step"]["kind"] == "pause" and r)

    return wait_until(ok, 10, 0.05, what=f"hde-v3 at pause step {index}")


def flag(d):
    st, doc = d.get("/v1/feature-flags/dwcp_v3_hde")
    assert st == 200, doc
    return doc


def served(d, node):
    st, doc = d.post("/ofrep/v1/evaluate/flags/dwcp_v3_hde", {"context": {"nodeId": node}})
    assert st == 200, doc
    return doc["value"]


def test_flag_target_steps_the_percentage_and_rollback_restores_it(canaryd):
    d = start(canaryd, cfg(PLAN))
    before = flag(d)
    assert before["percentage"] == 1 and before["source"] == "config"

    # an exclusion made before the rollout is part of what gets restored
    st, _ = d.post("/v1/feature-flags/exclude", {"feature": "dwcp_v3_hde", "nodes": ["node-9"]})
    assert st == 200
    before = flag(d)

    st, doc = d.post("/v1/rollouts/hde-v3/start")
    assert st == 200, doc
    wait_until(lambda: flag(d)["percentage"] == 5, 10, what="flag at 5%")
    at_pause(d, 1)
    assert flag(d)["enabled"] is True and flag(d)["exclude"] == before["exclude"]

    # the rollout owns the percentage: a manual change is refused with the owner...
    st, doc = d.post("/v1/feature-flags", {"feature": "dwcp_v3_hde", "percentage": 50},
                     token=FLAGS_TOKEN)
    assert st == 409 and "hde-v3" in doc["error"]["message"]
    # ...but excluding a misbehaving node stays possible during the rollout
    st, doc = d.post("/v1/feature-flags/exclude",
                     {"feature": "dwcp_v3_hde", "nodes": ["node-456"]})
    assert st == 200 and "node-456" in doc["exclude"]
    assert served(d, "node-456") is False

    st, doc = d.post("/v1/rollouts/hde-v3/promote")
    assert st == 200, doc
    at_pause(d, 3)
    assert flag(d)["percentage"] == 25
    # raising the percentage keeps every node already exposed
    on_at_25 = {n for n in (f"node-{i}" for i in range(400)) if served(d, n)}
    assert 40 < len(on_at_25) < 160

    # abort: the flag is back exactly as before the rollout (the exclusion added
    # during the rollout goes too: "exactly as it was")
    st, doc = d.post("/v1/rollouts/hde-v3/abort")
    assert st == 200, doc
    wait_state(d, "hde-v3", ("rolled_back",))
    after = flag(d)
    for k in ("percentage", "rollout", "exclude", "include", "enabled", "rules", "source"):
        assert after.get(k) == before.get(k), k
    # and the change is in the audit log with before and after
    st, evs = d.get("/v1/events?limit=1000")
    restored = [e for e in evs["events"] if e["kind"] == "flag.restored"]
    assert restored and restored[-1]["actor"] == "ops"
    # once the rollout is over, the flag is the users' again
    st, doc = d.post("/v1/feature-flags", {"feature": "dwcp_v3_hde", "percentage": 2},
                     token=FLAGS_TOKEN)
    assert st == 200 and doc["percentage"] == 2


def test_flag_target_completes_at_100_and_survives_a_restart(canaryd):
    d = start(canaryd, cfg(PLAN))
    st, doc = d.post("/v1/rollouts/hde-v3/start")
    assert st == 200, doc
    at_pause(d, 1)
    assert flag(d)["percentage"] == 5

    # kill -9 and restart: the rollout and the flag's percentage are as persisted
    d.proc.signal(signal.SIGKILL)
    d.proc.wait(5)
    d2 = start(canaryd, cfg(PLAN))
    at_pause(d2, 1)
    assert flag(d2)["percentage"] == 5

    st, doc = d2.post("/v1/rollouts/hde-v3/promote")
    assert st == 200, doc
    at_pause(d2, 3)
    st, doc = d2.post("/v1/rollouts/hde-v3/promote")
    assert st == 200, doc
    wait_state(d2, "hde-v3", ("completed",))
    f = flag(d2)
    assert f["percentage"] == 100 and f["exclude"] == ["node-123"]
    assert served(d2, "node-77") is True and served(d2, "node-123") is False
    # the health endpoint reports the flags and rollouts components
    st, h = http_json("GET", d2.url + "/v1/health/detailed", token=ADMIN_TOKEN)
    assert st == 200
    assert h["components"]["flags"]["status"] == "ok"
    assert h["components"]["flags"]["flags"] == 1
    assert h["components"]["rollouts"]["rollouts"][0]["state"] == "completed"


def test_two_rollouts_cannot_drive_one_flag(canaryd):
    plan2 = PLAN + "  hde-v3-again:\n    target: {flag: dwcp_v3_hde}\n" + PLAN
    d = start(canaryd, cfg(plan2))
    st, doc = d.post("/v1/rollouts/hde-v3/start")
    assert st == 200, doc
    st, doc = d.post("/v1/rollouts/hde-v3-again/start")
    assert st == 409 and "hde-v3" in doc["error"]["message"]



def test_query_check_compares_variants_and_rolls_the_flag_back(canaryd, upstream, procs,
                                                               tmp_path):
    # two demo upstreams stand for the application's two variants: each exports
    # demo_quality{version="on"|"off"} the way an app would label a metric by variant
    on, off = upstream("on"), upstream("off")
    prom = prometheus_start(procs, tmp_path, [on, off])
    wait_until(lambda: len(prom_query(prom, "demo_quality")) == 2, 30, 0.2,
               what="both variants scraped")
    plan = """    steps:
      - weight: 10
        for: 120s
      - weight: 100
    analysis:
      interval: 1s
      checks:
        - name: quality
          query: 'max(demo_quality{version="{{variant}}"})'
          min: 0.9
          max_decrease: 0.2
          timeout: 2s
          on_fail: rollback
    rollback:
      drain: 1s
"""
    text = (RAW_ADMIN + f"metrics:\n  prometheus: {prom}\n" + FLAGS
            + "rollouts:\n  hde-v3:\n    target: {flag: dwcp_v3_hde}\n" + plan)
    d = start(canaryd, text)
    before = flag(d)
    st, doc = d.post("/v1/rollouts/hde-v3/start")
    assert st == 200, doc
    ok = wait_until(lambda: [v for v in verdicts(d, "hde-v3", "quality")
                             if v["outcome"] == "pass"], 20, 0.1, what="a passing verdict")[-1]
    assert ok["source"]["canary"]["request"] == 'max(demo_quality{version="on"})'
    assert ok["source"]["baseline"]["request"] == 'max(demo_quality{version="off"})'
    assert flag(d)["percentage"] == 10
    # the "on" variant's metric goes bad: rollback, and the flag is as before
    st, _ = http_json("POST", f"http://127.0.0.1:{on}/_upstream/config?quality=0.5", body=b"")
    assert st == 200
    r = wait_state(d, "hde-v3", ("rolled_back", "completed", "failed"), 30)
    assert r["state"] == "rolled_back", r
    rb = events(d, "hde-v3", "rollout.rollback")[-1]["details"]
    assert rb["verdict"]["check"] == "quality" and rb["verdict"]["canary"]["value"] == 0.5
    after = flag(d)
    for k in ("percentage", "rollout", "exclude", "source"):
        assert after.get(k) == before.get(k), k
