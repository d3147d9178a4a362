"""The sample-ratio mismatch guard end to end (issue 12 section 1, docs/judge.md):
a real canaryd (two workers) splitting by a sticky header between two
demo-upstreams, requests driven from Python so the test chooses every key.

- Heavy-tailed users under a sticky split do not trip the guard: the request
  counts of the two cohorts are far apart, the distinct keys are not.
  Requests sent to the canary by an override are not counted at all.
- A forced skew (extra users that all land in the canary's buckets, computed
  with the published bucketing) pauses the rollout with the reason and both
  counts, and the step is not promoted.

Every wait is bounded; processes are stopped by the fixtures."""
import http.client as httpclient
import math
import threading
import time

import conftest
from conftest import BASE_ADMIN, free_port, wait_until
from test_proxy import bucket

RAW_ADMIN = BASE_ADMIN.replace("{{", "{").replace("}}", "}").replace("workers: 1", "workers: 2")


def config(proxy_port, v1, v2, weight):
    text = RAW_ADMIN + f"""listeners:
  - name: public
    listen: 127.0.0.1:{proxy_port}
    routes:
      - match: {{path_prefix: /}}
        service: web
services:
  web:
    versions:
      v1: {{endpoints: [127.0.0.1:{v1}]}}
      v2: {{endpoints: [127.0.0.1:{v2}]}}
    stable: v1
    sticky: header:x-user-id
    overrides:
      - match: {{header: {{x-canary: "1"}}}}
        cohort: canary
rollouts:
  web-v2:
    target: {{service: web, canary: v2}}
    steps:
      - weight: {weight}
        for: 1h
      - weight: 100
    analysis:
      interval: 1s
      checks:
        - name: errors
          metric: error_rate
          max_increase: 0.05
          min_samples: 30
          on_fail: rollback
"""
    # the fixture runs str.format(admin_port, workdir) on the text
    text = text.replace("{", "{{").replace("}", "}}")
    return text.replace("{{admin_port}}", "{admin_port}").replace("{{workdir}}", "{workdir}")


def send(port, requests, threads=4):
    """GET / once per (key, extra headers) in requests over keep-alive
    connections; returns how many were answered 200."""
    ok = [0] * threads

    def run(i):
        conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            for key, extra in requests[i::threads]:
                headers = {"x-user-id": key}
                headers.update(extra)
                conn.request("GET", "/", headers=headers)
                resp = conn.getresponse()
                resp.read()
                ok[i] += resp.status == 200
        finally:
            conn.close()

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not any(t.is_alive() for t in ts), "load threads did not finish"
    return sum(ok)


def rollout(d):
    st, doc = d.get("/v1/rollouts/web-v2")
    assert st == 200, doc
    return doc


def start_running(canaryd, upstream, weight):
    v1, v2 = upstream("v1"), upstream("v2")
    port = free_port()
    d = canaryd(config(port, v1, v2, weight), header=False)
    st, doc = d.post("/v1/rollouts/web-v2/start")
    assert st == 200, doc
    wait_until(lambda: rollout(d)["step"]["phase"] == "running", 10, what="step 0 running")
    return d, port


def srm_after(d, t_ms):
    """The SRM numbers of the first interval event that ended a full interval
    after t_ms (wall clock), so it counts every request answered before t_ms."""
    def find():
        for e in conftest.events(d, "/v1/rollouts/web-v2/events", "rollout.interval"):
            s = e["details"]["targets"].get("web", {}).get("srm")
            if s and e["details"]["interval_end_ms"] >= t_ms + 1100:
                return s
        return None

    return wait_until(find, 15, 0.2, what="an interval after the load")


def test_heavy_tailed_sticky_users_do_not_trip_it(canaryd, upstream):
    d, port = start_running(canaryd, upstream, 50)
    users = [f"user-{i}" for i in range(800)]
    heavy = [u for u in users if bucket("web", u) < 50000][:3]  # three canary users
    reqs = [(u, {}) for u in users] + [(u, {}) for u in heavy for _ in range(1500)]
    # 300 more users forced onto the canary by an override: not randomised, not counted
    forced = [(f"vip-{i}", {"x-canary": "1"}) for i in range(300)]
    assert send(port, reqs + forced) == len(reqs) + len(forced)

    s = srm_after(d, time.time() * 1000)
    # every request the split placed is counted, the override's are not
    assert s["canary_requests"] + s["baseline_requests"] == len(reqs), s
    assert s["unit"] == "keys" and s["judged"] and not s["mismatch"], s
    assert abs(s["canary"] + s["baseline"] - 800) <= 800 * 0.05, s
    # the requests are as lopsided as heavy users make them: a test on request
    # counts would have called this a mismatch (z far beyond 3.29)
    a, b = s["canary_requests"], s["baseline_requests"]
    assert (a - (a + b) / 2) / math.sqrt((a + b) / 4) > 10, s
    r = rollout(d)
    assert r["state"] == "progressing" and r["step"]["index"] == 0, r
    assert conftest.events(d, "/v1/rollouts/web-v2/events", "rollout.srm") == []


def test_forced_skew_pauses_with_both_counts(canaryd, upstream):
    d, port = start_running(canaryd, upstream, 10)
    users = [f"user-{i}" for i in range(2000)]  # ~200 canary, ~200 baseline, rest stable
    extra = []
    i = 0
    while len(extra) < 150:  # users that only the canary sees
        if bucket("web", f"extra-{i}") < 10000:
            extra.append(f"extra-{i}")
        i += 1
    n_canary = sum(bucket("web", u) < 10000 for u in users) + len(extra)
    n_base = sum(10000 <= bucket("web", u) < 20000 for u in users)
    assert send(port, [(u, {}) for u in users + extra]) == len(users) + len(extra)

    r = wait_until(lambda: (lambda x: x if x["state"] == "paused" else None)(rollout(d)), 15,
                   0.1, what="the rollout paused")
    why = r["pause_reason"]
    assert why.startswith("sample ratio mismatch on web: "), why
    ev = conftest.events(d, "/v1/rollouts/web-v2/events", "rollout.srm")
    assert len(ev) == 1, ev
    s = ev[0]["details"]
    assert s["mismatch"] and s["judged"] and s["unit"] == "keys" and s["target"] == "web", s
    assert s["expected_share"] == 0.5 and s["weight"] == 10.0, s
    assert abs(s["canary"] - n_canary) <= n_canary * 0.05, (s, n_canary)
    assert abs(s["baseline"] - n_base) <= n_base * 0.05, (s, n_base)
    assert f"{s['canary']:.0f} canary vs {s['baseline']:.0f} baseline keys" in why, why
    paused = conftest.events(d, "/v1/rollouts/web-v2/events", "rollout.paused")
    assert paused and paused[-1]["details"]["srm"]["mismatch"], paused
    # the step's comparison is invalid: no promotion
    assert r["step"]["index"] == 0 and r["targets"][0]["weight"] == 10.0, r
