"""The judge end to end (SPEC 5, issue 6): the sequential test on a real
canaryd's proxy counts, power awareness at low traffic, a `query:` check
against a real Prometheus scraping demo-upstream's /metrics, and sources that
fail.  Intervals are 1s; every wait is bounded; the fixtures stop every
process by pid."""
import shutil
import time
import urllib.parse

import pytest

from conftest import free_port, http, http_json, metric, scrape, wait_until
from test_rollout import RAW_ADMIN, Load, begin, config, events, rollout, service, start, \
    wait_state, web_v2

TERMINAL = ("completed", "rolled_back", "failed")


def verdicts(d, name, check=None):
    st, doc = d.get(f"/v1/rollouts/{name}/analysis?limit=1000")
    assert st == 200, doc
    # /analysis answers newest first: oldest first here, as the tests read them
    out = [e["details"] for e in reversed(doc["verdicts"])]
    return [v for v in out if check is None or v["check"] == check]


def test_sequential_test_rolls_back_a_canary_2pp_worse(canaryd, upstream, procs):
    v1 = upstream("v1", error_rate=0.01, seed=11)
    v2 = upstream("v2", error_rate=0.03, seed=12)
    port = free_port()
    text = web_v2(port, v1, v2, """    steps:
      - weight: 50
        for: 120s
      - weight: 100
    analysis:
      interval: 1s
      checks:
        - name: errors-vs-baseline
          metric: error_rate
          test: {method: sequential, confidence: 0.95, max_increase: 0.005}
          on_fail: rollback
    rollback:
      drain: 1s
""")
    d = start(canaryd, text)
    load = Load(procs, port, rate=800)
    time.sleep(0.3)
    begin(d)
    r = wait_state(d, "web-v2", TERMINAL, 90)
    load.stop()
    assert r["state"] == "rolled_back", r
    rb = events(d, "web-v2", "rollout.rollback")[-1]["details"]
    assert rb["class"] == "check" and "error_rate" in rb["reason"]
    # the verdict that decided the rollback is the one the rollback event names; with
    # for: 0 it is the check's first fail and its last verdict: no fail came earlier
    vs = verdicts(d, "web-v2", "errors-vs-baseline")
    fail = [x for x in vs if x["outcome"] == "fail"]
    assert len(fail) == 1 and vs[-1]["outcome"] == "fail", vs
    v = rb["verdict"]
    assert v["outcome"] == "fail" and v["reason"] == vs[-1]["reason"], (v, vs[-1])
    assert v["test"] == vs[-1]["test"]
    t = v["test"]
    assert t["method"] == "sequential" and t["applied"] is True
    assert t["confidence"] == 0.95 and t["margin"] == 0.005
    for cohort in ("canary", "baseline"):
        assert t[cohort]["requests"] >= 200, t
        assert 0 <= t[cohort]["errors"] <= t[cohort]["requests"]
        assert t[cohort]["value"] == pytest.approx(t[cohort]["errors"] / t[cohort]["requests"])
    assert t["canary"]["value"] > t["baseline"]["value"]
    # significant: the lower confidence bound of the increase is above the margin
    assert t["lower"] > 0.005 and t["lower"] <= t["estimate"] <= t["upper"]
    assert t["p_value"] is not None and t["p_value"] < 0.05
    assert "with 95% confidence" in v["reason"] and "error_rate" in v["reason"]
    # before it was significant the check neither failed on noise nor passed
    assert all(x["outcome"] == "inconclusive" for x in vs[:-1]), vs[:-1]
    assert not events(d, "web-v2", "rollout.step.passed")


def test_healthy_canary_at_low_traffic_is_inconclusive_never_pass(canaryd, upstream, procs):
    v1, v2 = upstream("v1"), upstream("v2")
    port = free_port()
    text = web_v2(port, v1, v2, """    steps:
      - weight: 50
        max_wait: 4s
      - weight: 100
    analysis:
      interval: 1s
      checks:
        - name: errors-vs-baseline
          metric: error_rate
          test: {method: sequential, confidence: 0.99, max_increase: 0.005}
          on_fail: rollback
""")
    d = start(canaryd, text)
    load = Load(procs, port, rate=30)  # ~15 requests per cohort per second
    time.sleep(0.3)
    begin(d)
    # without evidence the weight step does not pass: at max_wait the rollout pauses
    r = wait_state(d, "web-v2", ("paused",) + TERMINAL, 30)
    load.stop()
    assert r["state"] == "paused", r
    assert r["pause_reason"].startswith("not enough evidence: check errors-vs-baseline has "), r
    assert r["step"]["index"] == 0 and r["targets"][0]["weight"] == 50, r
    assert not events(d, "web-v2", "rollout.step.passed")
    vs = verdicts(d, "web-v2", "errors-vs-baseline")
    assert len(vs) >= 3, vs
    assert all(v["outcome"] == "inconclusive" for v in vs), vs
    last = vs[-1]
    assert last["test"]["canary"]["requests"] < 200 or last["test"]["baseline"]["requests"] < 200
    assert last["test"]["more_per_cohort"] > 0
    assert "more per cohort needed" in last["reason"]


# --- sources -------------------------------------------------------------------------------

def prometheus_start(procs, tmp_path, targets):
    """A real Prometheus scraping targets every second; returns its base URL."""
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    listed = ", ".join(f"'127.0.0.1:{p}'" for p in targets)
    cfg.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                   "scrape_configs:\n  - job_name: demo\n"
                   f"    static_configs:\n      - targets: [{listed}]\n")
    p = procs([binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
               f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
              name="prometheus")
    url = f"http://127.0.0.1:{port}"

    def ready():
        if not p.alive():
            raise AssertionError("prometheus exited:\n" + p.output())
        return http("GET", url + "/-/ready", timeout=0.5)[0] == 200

    wait_until(ready, 30, 0.1, what="prometheus ready")
    return url


def prom_query(url, q):
    st, doc = http_json("GET", url + "/api/v1/query?query=" + urllib.parse.quote(q))
    assert st == 200, doc
    return doc["data"]["result"]


def test_query_check_against_prometheus_rolls_back(canaryd, upstream, procs, tmp_path):
    v1, v2 = upstream("v1"), upstream("v2")
    prom = prometheus_start(procs, tmp_path, [v1, v2])
    # both versions scraped before the rollout starts
    wait_until(lambda: len(prom_query(prom, "demo_quality")) == 2, 30, 0.2,
               what="both upstreams scraped")
    port = free_port()
    admin = RAW_ADMIN + f"metrics:\n  prometheus: {prom}\n"
    text = config(port, service("web", {"v1": v1, "v2": v2}), """  web-v2:
    target: {service: web, canary: v2}
    steps:
      - weight: 20
        for: 120s
      - weight: 100
    analysis:
      interval: 1s
      checks:
        - name: quality
          query: 'max(demo_quality{version="{{version}}"})'
          min: 0.9
          max_decrease: 0.2
          timeout: 2s
          on_fail: rollback
    rollback:
      drain: 1s
""", admin=admin)
    d = start(canaryd, text)
    load = Load(procs, port, rate=50)
    time.sleep(0.3)
    begin(d)
    # healthy first: passes, with both cohorts' queries and values in the verdict
    ok = wait_until(lambda: [v for v in verdicts(d, "web-v2", "quality") if v["outcome"] == "pass"],
                    20, 0.1, what="a passing query verdict")[-1]
    src = ok["source"]
    assert ok["metric"] == "query" and src["kind"] == "query" and src["per_cohort"] is True
    assert src["canary"]["request"] == 'max(demo_quality{version="v2"})'
    assert src["baseline"]["request"] == 'max(demo_quality{version="v1"})'
    assert src["canary"]["value"] == 1 and src["baseline"]["value"] == 1
    assert ok["canary"]["value"] == 1 and ok["baseline"]["value"] == 1
    assert rollout(d, "web-v2")["state"] == "progressing"
    # the canary's metric goes bad: Prometheus scrapes it, the check fails, rollback
    st, _ = http_json("POST", f"http://127.0.0.1:{v2}/_upstream/config?quality=0.5", body=b"")
    assert st == 200
    r = wait_state(d, "web-v2", TERMINAL, 30)
    load.stop()
    assert r["state"] == "rolled_back", r
    rb = events(d, "web-v2", "rollout.rollback")[-1]["details"]
    assert rb["class"] == "check" and rb["verdict"]["check"] == "quality"
    assert rb["verdict"]["outcome"] == "fail" and rb["verdict"]["metric"] == "query"
    assert rb["verdict"]["bound"] == "min" and rb["verdict"]["canary"]["value"] == 0.5
    assert "query value 0.5 on the canary is below min 0.9" in rb["reason"]
    fails = [v for v in verdicts(d, "web-v2", "quality") if v["outcome"] == "fail"]
    assert fails[-1]["source"]["canary"]["value"] == 0.5
    assert fails[-1]["source"]["baseline"]["value"] == 1


def test_failing_sources_give_errors_and_pause(canaryd, upstream, procs):
    v1, v2 = upstream("v1"), upstream("v2")
    port = free_port()
    dead = free_port()  # nothing listens there
    admin = RAW_ADMIN + f"metrics:\n  prometheus: http://127.0.0.1:{dead}\n"
    text = config(port, service("web", {"v1": v1, "v2": v2}), """  web-v2:
    target: {service: web, canary: v2}
    steps:
      - weight: 20
        for: 120s
      - weight: 100
    analysis:
      interval: 1s
      checks:
        - name: unreachable
          query: 'sum(up{version="{{version}}"})'
          min: 1
          timeout: 1s
        - name: broken-probe
          exec: [sh, -c, "echo 1; exit 1"]
          max: 5
          timeout: 2s
""", admin=admin)
    d = start(canaryd, text)
    begin(d)
    r = wait_state(d, "web-v2", ("paused",) + TERMINAL, 30)
    assert r["state"] == "paused", r
    assert "3 consecutive source errors" in r["pause_reason"], r
    for name, why in (("unreachable", "Couldn't connect to server"),
                      ("broken-probe", "exited with status 1")):
        vs = wait_until(lambda: verdicts(d, "web-v2", name), 5, what=f"{name} verdicts")
        assert vs and all(v["outcome"] == "error" for v in vs), vs
        assert why in vs[-1]["reason"], vs[-1]
        assert vs[-1]["source"]["canary"]["error"], vs[-1]
    # errors are counted apart: never a pass, never a fail, never a rollback
    parsed = scrape(d)
    for name in ("unreachable", "broken-probe"):
        def count(verdict, name=name):
            return metric(parsed, "canaryd_check_verdict_total", rollout="web-v2", check=name,
                          verdict=verdict)
        assert count("error") >= 3, name
        assert count("pass") == 0 and count("fail") == 0, name
    assert not events(d, "web-v2", "rollout.step.passed")  # errors are no evidence
    assert not events(d, "web-v2", "rollout.rollback")
    assert rollout(d, "web-v2")["state"] == "paused"


# --- count checks: test: on a source that gives counts (issue 18) -------------------------

def counts_files(path, **by_name):
    """A directory with one file per cohort (or variant) holding "ERRORS REQUESTS", what
    the exec check's command prints for it."""
    path.mkdir(exist_ok=True)
    for name, text in by_name.items():
        (path / name).write_text(text + "\n")
    return path


def count_plan(d):
    """Two traffic steps judged by an exec count check that cats d/canary, d/baseline."""
    return f"""    steps:
      - weight: 50
        for: 2s
      - weight: 100
    analysis:
      interval: 1s
      checks:
        - name: app-errors
          exec: [cat, "{d}/{{{{cohort}}}}"]
          test: {{method: sequential, confidence: 0.95, max_increase: 0.01}}
          timeout: 2s
          on_fail: rollback
    rollback:
      drain: 1s
"""


def test_exec_count_check_rolls_back_a_worse_canary(canaryd, upstream, tmp_path):
    v1, v2 = upstream("v1"), upstream("v2")
    bad = counts_files(tmp_path / "counts", canary="40 1000", baseline="10 1000")
    # a canary with 4% errors against the baseline's 1% (counts the command prints) is
    # rolled back by the test, with the test's numbers in the verdict
    d = start(canaryd, web_v2(free_port(), v1, v2, count_plan(bad)))
    begin(d)
    r = wait_state(d, "web-v2", TERMINAL, 30)
    assert r["state"] == "rolled_back", r
    rb = events(d, "web-v2", "rollout.rollback")[-1]["details"]
    v = rb["verdict"]
    assert rb["class"] == "check" and v["check"] == "app-errors" and v["metric"] == "exec"
    assert v["outcome"] == "fail" and "exec error rate" in v["reason"], v
    t = v["test"]
    assert t["method"] == "sequential" and t["applied"] is True and t["margin"] == 0.01
    n = t["canary"]["requests"]
    assert n >= 1000 and n % 1000 == 0 and t["baseline"]["requests"] == n, t
    assert t["canary"]["errors"] == 40 * n // 1000 and t["baseline"]["errors"] == 10 * n // 1000
    assert t["looks"] == n // 1000 and t["design"] == "group-sequential", t
    assert t["lower"] > 0.01 or t["z"] >= t["z_bound"], t
    src = [x for x in verdicts(d, "web-v2", "app-errors") if x["outcome"] == "fail"][-1]["source"]
    assert src["canary"]["errors"] == 40 and src["canary"]["requests"] == 1000, src
    assert src["baseline"]["request"] == f"cat {bad}/baseline"


def test_exec_count_check_advances_a_healthy_canary(canaryd, upstream, tmp_path):
    v1, v2 = upstream("v1"), upstream("v2")
    good = counts_files(tmp_path / "counts", canary="10 1000", baseline="10 1000")
    # equal counts: the test passes each traffic step and the rollout completes
    d = start(canaryd, web_v2(free_port(), v1, v2, count_plan(good)))
    begin(d)
    r = wait_state(d, "web-v2", TERMINAL, 40)
    assert r["state"] == "completed", r
    passed = events(d, "web-v2", "rollout.step.passed")
    assert len(passed) == 2, passed
    vs = verdicts(d, "web-v2", "app-errors")
    assert not [x for x in vs if x["outcome"] == "fail"], vs
    ok = [x for x in vs if x["outcome"] == "pass"][-1]
    assert ok["test"]["canary"]["requests"] >= 1000 and ok["test"]["upper"] < 0.01, ok


def test_flag_variant_count_check_rolls_back_the_flag(canaryd, tmp_path):
    # {{variant}} names the cohort's variant: "on" (canary) and "off" (baseline)
    counts_files(tmp_path, on="30 500", off="5 500")
    d = start(canaryd, RAW_ADMIN + f"""flags:
  beta:
    rollout: {{"on": 1}}
rollouts:
  beta-on:
    target: {{flag: beta}}
    steps:
      - weight: 20
        for: 60s
      - weight: 100
    analysis:
      interval: 1s
      checks:
        - name: variant-errors
          exec: [cat, "{tmp_path}/{{{{variant}}}}"]
          test: {{method: sequential, confidence: 0.95}}
          timeout: 2s
""")
    st, before = d.get("/v1/feature-flags/beta")
    assert st == 200 and before["percentage"] == 1, before
    begin(d, "beta-on")
    r = wait_state(d, "beta-on", TERMINAL, 30)
    assert r["state"] == "rolled_back", r
    v = events(d, "beta-on", "rollout.rollback")[-1]["details"]["verdict"]
    assert v["check"] == "variant-errors" and v["outcome"] == "fail", v
    t = v["test"]
    assert t["anytime"] == "counting-process" and t["canary"]["errors"] > t["baseline"]["errors"]
    assert t["canary"]["requests"] == t["baseline"]["requests"] >= 500, t
    fails = [x for x in verdicts(d, "beta-on", "variant-errors") if x["outcome"] == "fail"]
    assert fails[-1]["source"]["canary"]["request"] == f"cat {tmp_path}/on"
    assert fails[-1]["source"]["baseline"]["request"] == f"cat {tmp_path}/off"
    # the flag is back as it was before the rollout
    st, after = d.get("/v1/feature-flags/beta")
    assert st == 200 and after["percentage"] == 1, after


def test_query_count_check_against_prometheus_rolls_back(canaryd, upstream, procs, tmp_path):
    # demo-upstream counts its requests and errors per version; Prometheus scrapes them and
    # the check's two queries give each cohort's errors and requests over the interval
    v1 = upstream("v1", error_rate=0.01, seed=21)
    v2 = upstream("v2", error_rate=0.08, seed=22)
    prom = prometheus_start(procs, tmp_path, [v1, v2])
    wait_until(lambda: len(prom_query(prom, "demo_requests_total")) == 2, 30, 0.2,
               what="both upstreams scraped")
    port = free_port()
    admin = RAW_ADMIN + f"metrics:\n  prometheus: {prom}\n"
    text = config(port, service("web", {"v1": v1, "v2": v2}), """  web-v2:
    target: {service: web, canary: v2}
    steps:
      - weight: 50
        for: 120s
      - weight: 100
    analysis:
      interval: 4s
      checks:
        - name: errors-by-count
          query: 'sum(increase(demo_errors_total{version="{{version}}"}[{{interval}}]))'
          requests: 'sum(increase(demo_requests_total{version="{{version}}"}[{{interval}}]))'
          test: {method: sequential, confidence: 0.95}
          min_samples: 50
          timeout: 2s
          on_fail: rollback
    rollback:
      drain: 1s
""", admin=admin)
    d = start(canaryd, text)
    load = Load(procs, port, rate=100)

    def moving():
        res = prom_query(prom, 'sum(increase(demo_requests_total{version="v1"}[4s]))')
        return res and float(res[0]["value"][1]) > 0

    # the counters move before the rollout starts, so every round's increase() has data
    wait_until(moving, 30, 0.2, what="requests in Prometheus")
    begin(d)
    r = wait_state(d, "web-v2", TERMINAL, 60)
    load.stop()
    assert r["state"] == "rolled_back", r
    v = events(d, "web-v2", "rollout.rollback")[-1]["details"]["verdict"]
    assert v["check"] == "errors-by-count" and v["metric"] == "query", v
    assert "query error rate" in v["reason"], v
    t = v["test"]
    assert t["applied"] is True and t["anytime"] == "counting-process", t
    assert t["canary"]["errors"] > t["baseline"]["errors"] * t["canary"]["requests"] / max(
        1, t["baseline"]["requests"]), t
    assert t["canary"]["requests"] >= 50 and t["baseline"]["requests"] >= 50, t
    fail = [x for x in verdicts(d, "web-v2", "errors-by-count") if x["outcome"] == "fail"][-1]
    src = fail["source"]
    assert src["canary"]["request"] == 'sum(increase(demo_errors_total{version="v2"}[4s]))'
    assert src["canary"]["requests_request"] == \
        'sum(increase(demo_requests_total{version="v2"}[4s]))'
    assert src["baseline"]["requests"] > 0 and src["canary"]["requests"] > 0, src
