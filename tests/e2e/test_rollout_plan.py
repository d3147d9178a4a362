"""The rollout engine's part of the customer's plan (issue 16 section 2), end to
end: named steps, a check's target set, the partial rollback `on_fail:
{rollback_to: previous}`, `start --rehearse SPEED` and the `upcoming` notice.

A real canaryd with its proxy, demo-upstream versions and loadgen on 127.0.0.1;
short holds; every wait bounded; processes stopped by the fixtures."""
import datetime

import pytest

from conftest import free_port, wait_until
from test_canaryctl_rollout import ctl
from test_rollout import (Load, Receiver, config, control, events, rollout, service,
                          set_error_rate, start, wait_state)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def two_services(proxy_port, web, api, rollouts):
    """Services web (v1 stable, v2) and api (a1 stable, a2) behind /web and /api."""
    return config(proxy_port,
                  service("web", {"v1": web[0], "v2": web[1]}) +
                  service("api", {"a1": api[0], "a2": api[1]}, stable="a1"),
                  rollouts, routes=(("/web", "web"), ("/api", "api")))


PLAN = """  plan:
    targets:
      t-web: {service: web, canary: v2}
      t-api: {service: api, canary: a2}
    steps:
      - {name: dark, set: {t-web: 0, t-api: 0}}
      - {name: p20, set: {t-web: 20, t-api: 20}, for: 1s}
      - {name: p50, set: {t-web: 50, t-api: 50}}
      - pause: {}
      - set: {t-web: 100, t-api: 100}
    analysis:
      interval: 1s
      checks:
        - name: integration
          metric: error_rate
          max: 0.05
          min_samples: 20
          target: [t-api]
          on_fail: {rollback_to: previous}
    rollback:
      drain: 0s
      hooks:
        - exec: [sh, -c, "echo $0 $1 $2 >> HOOKLOG", "{{target}}", "{{partial}}", "{{weight}}"]
"""


def weights(view):
    return {t["name"]: t["weight"] for t in view["targets"]}


def service_weight(d, name):
    st, doc = d.get(f"/v1/services/{name}")
    assert st == 200, doc
    return doc["weight"]


def test_partial_rollback_to_previous_keeps_other_targets(canaryd, upstream, procs, tmp_path):
    """A failing check on [t-api] at p50: t-api goes back to p20's 20% (applied in
    the proxy), t-web keeps 50%, the rollout pauses at p20 with the pipeline and
    evidence of a rollback; events and canaryctl name the steps; resume goes on."""
    web = (upstream("v1"), upstream("v2"))
    api = (upstream("a1"), upstream("a2"))
    port = free_port()
    hook_log = tmp_path / "hook.log"
    d = start(canaryd, two_services(port, web, api, PLAN.replace("HOOKLOG", str(hook_log))),
              extra_env={"CANARYD_EVIDENCE_DIR": str(tmp_path / "evidence")})
    load_web = Load(procs, port, rate=150, path="/web")
    load_api = Load(procs, port, rate=150, path="/api")
    try:
        assert control(d, "plan", "start")[0] == 200
        wait_until(lambda: rollout(d, "plan")["step"]["index"] == 3, 30, 0.05,
                   what="the pause after p50")
        assert service_weight(d, "api") == 50 and service_weight(d, "web") == 50
        set_error_rate(api[1], 0.5)  # the canary of api only
        wait_state(d, "plan", ("paused",), 30)
        # fixed: at p20 the check passes (a second failure would step back again)
        set_error_rate(api[1], 0)
        r = wait_state(d, "plan", ("paused",), 30, post_done=True)
    finally:
        load_web.stop()
        load_api.stop()
    # paused at p20, not rolled back; only t-api moved
    assert r["step"]["index"] == 1 and r["step"]["name"] == "p20", r["step"]
    assert weights(r) == {"t-web": 50, "t-api": 20}, r["targets"]
    assert not any(t["rolled_back"] for t in r["targets"])
    assert service_weight(d, "api") == 20 and service_weight(d, "web") == 50
    rb = events(d, "plan", "rollout.rollback")
    assert len(rb) == 1, rb
    det = rb[0]["details"]
    assert det["partial"] is True and det["rollback_to"] == "p20" and det["class"] == "partial"
    assert det["targets"] == ["t-api"] and det["weights"] == {"t-api": 20}
    assert det["verdict"]["check"] == "integration"
    assert det["time_to_detect_ms"] > 0
    mit = events(d, "plan", "rollout.mitigated")
    assert len(mit) == 1 and mit[0]["details"]["all_workers_confirmed"] is True, mit
    fin = events(d, "plan", "rollout.rollback.finished")
    assert len(fin) == 1 and fin[0]["details"]["evidence"], fin
    # the hooks ran for t-api only, told it is partial and the weight left
    assert hook_log.read_text() == "t-api true 20\n"
    # named steps in the events and the CLI
    names = [e["details"].get("step_name") for e in events(d, "plan", "rollout.step")]
    assert names == ["dark", "p20", "p50", None], names
    out = ctl(d, "rollout", "get", "plan").stdout
    assert "(p20, set, running)" in out, out
    assert "rolled back to p20" in out, out


REHEARSED = """  web-v2:
    target: {service: web, canary: v2}
    steps:
      - {name: p10, weight: 10, for: 1h}
      - {name: full, weight: 100, not_before: "+NB"}
    analysis:
      interval: 1m
      checks: [{name: errors, metric: error_rate, max: 0.05, min_samples: 20}]
    notify:
      - webhook: http://127.0.0.1:RP/slack
        events: [step, upcoming, completed]
        notice: 30m
"""


def test_rehearsal_runs_the_plan_fast_and_says_so(canaryd, upstream, procs, receiver):
    """--rehearse 1200: the 1h step holds 3 s and the 1m interval is 50 ms; every
    event and notification says REHEARSAL; the `upcoming` notice 30m (1.5 s) before
    the gated step arrives once; bad speeds are refused naming rehearse."""
    v1, v2 = upstream("v1"), upstream("v2")
    port = free_port()
    # an RFC 3339 gate 2h after now on the plan's clock = 6 s after the start
    gate = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2))
    plan = REHEARSED.replace("+NB", gate.strftime("%Y-%m-%dT%H:%M:%SZ")).replace(
        "RP", str(receiver.port))
    text = config(port, service("web", {"v1": v1, "v2": v2}), plan)
    d = start(canaryd, text)
    # bad speeds: 422 from the API naming the field, exit 2 from canaryctl
    for bad in ("fast", 0, -3, None):
        st, doc = control(d, "web-v2", "start", body={"rehearse": bad})
        assert st == 422 and doc["error"]["field"] == "rehearse", (bad, st, doc)
    r = ctl(d, "rollout", "start", "web-v2", "--rehearse", "zero")
    assert r.returncode == 2 and "--rehearse" in r.stderr, (r.returncode, r.stderr)
    assert rollout(d, "web-v2")["state"] == "idle"
    load = Load(procs, port, rate=200)
    try:
        r = ctl(d, "rollout", "start", "web-v2", "--rehearse", "1200")
        assert r.returncode == 0 and "REHEARSAL" in r.stdout, (r.stdout, r.stderr)
        done = wait_state(d, "web-v2", ("completed", "rolled_back", "failed"), 40)
    finally:
        load.stop()
    assert done["state"] == "completed", done
    assert done["rehearsal"] == 1200
    evs = events(d, "web-v2")
    assert evs and all(e["details"].get("rehearsal") == 1200 for e in evs), \
        [e for e in evs if e["details"].get("rehearsal") != 1200][:3]
    steps = events(d, "web-v2", "rollout.step")
    held = steps[1]["details"]["at_ms"] - steps[0]["details"]["at_ms"]
    # not before 6 s (the gate: 2h / 1200) -- and far less than the real hour
    assert held >= 5000, held
    assert held < 60000, held
    slack = receiver.on("/slack")
    assert slack and all(s["text"].startswith("canaryd: REHEARSAL (1200x)") for s in slack), slack
    up = [s for s in slack if s["canaryd"]["event"] == "rollout.upcoming"]
    assert len(up) == 1, [s["canaryd"]["event"] for s in slack]
    assert up[0]["canaryd"]["details"]["step_name"] == "full"
    assert "scheduled step" in up[0]["text"], up[0]["text"]
    # the evidence bundle says it too
    st, bundle = d.get("/v1/rollouts/web-v2/evidence")
    assert st == 200 and "**REHEARSAL** at 1200x" in bundle["files"]["summary.md"], st


PREVIEW = """  web-green:
    target: {service: web, canary: v2}
    steps:
      - {name: blue, preview: {}, for: 2s}
      - {name: cutover, weight: 100}
    bake: 1s
    analysis:
      interval: 1s
      checks: [{name: errors, metric: error_rate, max: 0.05, min_samples: 20}]
    rollback:
      drain: 0s
"""


def test_preview_then_cutover(canaryd, upstream, procs):
    """Blue-green: during `preview` only requests matching the override reach v2
    (weight 0 for everyone else), the checks judge them, then the cutover moves
    everyone to v2 at once and the old version is kept warm for the bake."""
    from test_proxy import Client, upstream_of
    v1, v2 = upstream("v1"), upstream("v2")
    port = free_port()
    svc = service("web", {"v1": v1, "v2": v2}) + (
        "    overrides:\n      - match: {header: {x-canary: always}}\n        cohort: canary\n")
    d = start(canaryd, config(port, svc, PREVIEW))
    load = Load(procs, port, rate=100)
    c = Client(port)
    seen = {"plain": set(), "override": set()}
    try:
        assert control(d, "web-green", "start")[0] == 200

        def preview_traffic():
            if rollout(d, "web-green")["step"]["index"] != 0:
                return True
            got = {"plain": set(), "override": set()}
            for _ in range(10):
                got["override"].add(upstream_of(c.get("/", {"x-canary": "always"})[1]))
                got["plain"].add(upstream_of(c.get("/", {"x-user-id": "u1"})[1]))
            # only a batch sent wholly inside the preview counts (the cutover may race it)
            if rollout(d, "web-green")["step"]["index"] == 0:
                for k in got:
                    seen[k] |= got[k]
            return None

        wait_until(preview_traffic, 30, 0.01, what="the preview to pass")
        done = wait_state(d, "web-green", ("completed", "rolled_back", "failed"), 30)
    finally:
        load.stop()
        c.close()
    assert seen == {"plain": {"v1"}, "override": {"v2"}}, seen
    assert done["state"] == "completed", done
    steps = events(d, "web-green", "rollout.step")
    assert [s["details"]["kind"] for s in steps] == ["preview", "set"], steps
    assert steps[0]["details"]["weights"] == {"web": "preview"}
    passed = events(d, "web-green", "rollout.step.passed")[0]["details"]
    ev = passed["evidence"]["checks"]["errors"]
    assert ev["passed"] is True and ev["canary_requests"] >= 20, passed
    assert events(d, "web-green", "rollout.baking")
    c2 = Client(port)
    try:
        assert upstream_of(c2.get("/", {"x-user-id": "u1"})[1]) == "v2"
    finally:
        c2.close()
