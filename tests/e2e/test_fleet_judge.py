"""Fleet-wide judging (SPEC 9, docs/fleet.md "Fleet-wide judging"): three
canaryd nodes on one throwaway PostgreSQL, load sent to all three proxies; the
leader judges on every node's counters, merged, and marks an interval in which
a live node did not report as incomplete, naming it.

Reuses test_fleet.py's node helpers (Node, psql, the pg fixture).  Every wait
is bounded; every process is stopped by pid (conftest.procs)."""
import json
import os
import random
import signal
import subprocess
import threading
import time
import urllib.request

import pytest

import conftest
from conftest import http, wait_until
from test_fleet import NODE_CONFIG, PGBIN, Node, leader_of, pg, psql  # noqa: F401 (pg: fixture)

PLAN = """rollouts:
  web-v2:
    target: {{service: web, canary: v2}}
    steps:
      - weight: 50
        for: 300s
    analysis:
      interval: 1s
      checks:
        - name: errors
          metric: error_rate
          max: 0.5
          min_samples: 1
          require_evidence: false
"""


@pytest.fixture
def fleet3(pg, procs, upstream, tmp_path):
    """Three nodes with PLAN on a database of their own; the upstreams' ports."""
    url, _ = pg
    db = f"fjudge_{os.getpid()}_{random.randrange(1 << 30)}"
    psql(url, f"CREATE DATABASE {db}")
    v1, v2 = upstream("v1"), upstream("v2")
    text = (NODE_CONFIG.replace("STORE", url.rsplit("/", 1)[0] + "/" + db)
            .replace("LEASE", "3s").replace("V1", str(v1)).replace("V2", str(v2))) + PLAN
    nodes = []
    try:
        for i in range(3):
            nodes.append(Node(procs, "ABC"[i], str(tmp_path / f"n{i}"), text).start())
        wait_until(lambda: sum(nd.leading() for nd in nodes) == 1, 10, what="one leader")
        yield nodes, {"v1": v1, "v2": v2}
    finally:
        for nd in nodes:  # a node left paused could not be stopped by SIGTERM
            if nd.proc is not None:
                nd.proc.signal(signal.SIGCONT)
        subprocess.run([os.path.join(PGBIN, "psql"), url, "-qAtc",
                        f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"],
                       capture_output=True, timeout=60)


def upstream_requests(port):
    st, _, body = http("GET", f"http://127.0.0.1:{port}/_upstream/stats", timeout=2)
    assert st == 200, body
    import json
    return json.loads(body)["requests"]


def send(node, n, prefix, counts, lock):
    """n requests through node's proxy, distinct stickiness keys; counts by version."""
    for j in range(n):
        req = urllib.request.Request(f"http://127.0.0.1:{node.proxy_port}/",
                                     headers={"x-user-id": f"{prefix}-{j}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200
            v = r.headers.get("X-Upstream-Version")
        with lock:
            counts[v] = counts.get(v, 0) + 1


def start_at_50(nodes):
    def go():
        lead = leader_of(nodes)
        return lead is not None and lead.post("/v1/rollouts/web-v2/start")[0] == 200

    wait_until(go, 10, what="rollout started on the leader")
    for n in nodes:
        wait_until(lambda n=n: n.get("/v1/services/web")[1]["weight"] == 50, 10,
                   what=f"weight 50 on {n.name}")
    time.sleep(0.5)  # the data planes route with the published table


def verdicts(node):
    return [e["details"] for e in conftest.events(node, "/v1/rollouts/web-v2/events", "verdict")
            if e["details"].get("check") == "errors"]


def intervals(node):
    return [e["details"]
            for e in conftest.events(node, "/v1/rollouts/web-v2/events", "rollout.interval")]


def test_a_rollout_under_load_sent_to_all_three_nodes_is_judged_on_fleet_wide_counts(fleet3):
    """At weight 50 the canary cohort is v2 and the baseline v1 (no stable
    slice: docs/bucketing.md) and no request is sent before the step began,
    so once the load stopped and every node flushed, the verdicts' per-interval
    canary and baseline request counts (deltas of the merged cumulative
    counters) sum EXACTLY to the requests v2 and v1 received: nothing is in
    flight then, the upstreams answer every request, and a delta is never lost
    or counted twice across intervals or nodes."""
    nodes, ports = fleet3
    base = {v: upstream_requests(p) for v, p in ports.items()}
    assert base == {"v1": 0, "v2": 0}
    start_at_50(nodes)
    counts, lock = {}, threading.Lock()
    threads = [threading.Thread(target=send, args=(n, 150, f"u{i}", counts, lock))
               for i, n in enumerate(nodes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert sum(counts.values()) == 450 and counts.get("v1") and counts.get("v2"), counts
    seen = {v: upstream_requests(p) for v, p in ports.items()}
    assert seen == counts, (seen, counts)  # the proxies answered from the upstreams only
    lead = leader_of(nodes)
    assert lead is not None

    def judged():
        vs = [v for v in verdicts(lead) if v["step"] == 0]
        return (sum(v["canary"]["requests"] for v in vs),
                sum(v["baseline"]["requests"] for v in vs))

    wait_until(lambda: judged() == (seen["v2"], seen["v1"]), 20,
               what=f"verdicts summing to the upstreams' counts {seen}")
    # ... and so do the interval events, which name no missing node when all report
    ivs = [iv for iv in intervals(lead) if iv["step"] == 0]
    assert sum(iv["targets"]["web"]["canary"]["requests"] for iv in ivs) == seen["v2"]
    assert sum(iv["targets"]["web"]["baseline"]["requests"] for iv in ivs) == seen["v1"]
    assert all("incomplete" in iv and "missing_nodes" in iv for iv in ivs), ivs[-1]
    # the leader alone saw only about a third: the judge did merge the fleet
    local = conftest.metric(conftest.scrape(lead), "canaryd_requests_total", service="web",
                            version="v2", cohort="canary", code="2xx") or 0
    assert local < seen["v2"], (local, seen)


def test_an_interval_without_a_live_nodes_flush_is_incomplete_and_names_it(fleet3):
    """A follower paused with SIGSTOP stays in the registry (live) until its
    lease runs out, but flushes nothing: the intervals meanwhile are marked
    incomplete with that node in missing_nodes, on the interval event and on
    the verdict, and none of them counts as a passed interval."""
    nodes, _ = fleet3
    start_at_50(nodes)
    lead = leader_of(nodes)
    victim = next(n for n in nodes if n is not lead)
    vid = victim.get("/v1/fleet")[1]["self"]
    stop = threading.Event()

    def load():
        j = 0
        while not stop.is_set() and j < 5000:
            for n in nodes:
                if n is victim:
                    continue
                req = urllib.request.Request(f"http://127.0.0.1:{n.proxy_port}/",
                                             headers={"x-user-id": f"k{j}"})
                try:
                    urllib.request.urlopen(req, timeout=2).read()
                except OSError:
                    pass
            j += 1
            time.sleep(0.01)

    t = threading.Thread(target=load)
    t.start()
    try:
        wait_until(lambda: any(not iv["incomplete"] for iv in intervals(lead)), 15,
                   what="a complete interval first")
        victim.proc.signal(signal.SIGSTOP)
        wait_until(lambda: [iv for iv in intervals(lead) if iv["incomplete"]], 15,
                   what="an incomplete interval")
    finally:
        victim.proc.signal(signal.SIGCONT)
        stop.set()
        t.join(30)
    # the paused node is named; a node is missing only while the interval is
    # incomplete (another node may be named too if the machine stalled its flush)
    ivs = intervals(lead)
    assert any(iv["incomplete"] and iv["missing_nodes"] == [vid] for iv in ivs), (vid, ivs)
    assert all(iv["incomplete"] == bool(iv["missing_nodes"]) for iv in ivs), ivs
    # each verdict carries its interval's marking
    marks = {iv["interval_end_ms"]: (iv["incomplete"], iv["missing_nodes"]) for iv in ivs}
    vs = [v for v in verdicts(lead) if v["interval_end_ms"] in marks]
    assert vs and all((v["incomplete"], v["missing_nodes"]) == marks[v["interval_end_ms"]]
                      for v in vs), vs
    assert any(v["incomplete"] and v["missing_nodes"] == [vid] for v in vs), vs
    # a pass on part of the fleet is not counted as a passed interval: the step's
    # evidence counts exactly the complete passing verdicts as passes (read the
    # document on both sides of the events, so no interval lands in between)
    def consistent():
        def passes():
            st, doc = lead.get("/v1/rollouts/web-v2")
            assert st == 200, doc
            return doc["step"]["evidence"]["checks"]["errors"]["intervals"]["pass"]

        before = passes()
        vs = [v for v in verdicts(lead) if v["step"] == 0]
        if passes() != before:
            return None
        complete = sum(1 for v in vs if v["outcome"] == "pass" and not v["incomplete"])
        incomplete = sum(1 for v in vs if v["outcome"] == "pass" and v["incomplete"])
        return before, complete, incomplete

    got = wait_until(consistent, 10, what="a stable evidence count")
    assert got[0] == got[1] and got[2] > 0, got
