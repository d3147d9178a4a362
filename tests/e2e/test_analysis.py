"""GET /v1/rollouts/{name}/analysis (issue 13 section 3): the latest verdicts
first, paged back with ?before= and forward with ?since=, against a real
canaryd whose rollout has written many intervals.  Every wait is bounded;
the fixtures stop every process by pid."""
import time

from conftest import wait_until
from test_rollout import Load, begin, control, events, free_port, start, wait_state, web_v2

CHECKS = """      checks:
        - name: errors
          metric: error_rate
          max_increase: 0.05
          min_samples: 10
          on_fail: rollback
        - name: p99
          metric: latency_p99
          max: 5000
          min_samples: 10
          on_fail: rollback
"""


def analysis(d, query=""):
    st, doc = d.get(f"/v1/rollouts/web-v2/analysis{query}")
    assert st == 200, doc
    return doc


def test_latest_verdicts_first_with_paging(canaryd, upstream, procs):
    v1, v2 = upstream("v1"), upstream("v2")
    port = free_port()
    d = start(canaryd, web_v2(port, v1, v2, """    steps:
      - weight: 50
        for: 120s
      - weight: 100
    analysis:
      interval: 1s
""" + CHECKS))
    load = Load(procs, port, rate=200)
    time.sleep(0.3)
    begin(d)
    # many intervals: 2 verdicts each, more than a page of 5 many times over
    wait_until(lambda: len(events(d, "web-v2", "verdict")) >= 24, 60, 0.2, what="24 verdicts")
    # while it runs, the first verdict is the newest one written so far
    newest = analysis(d, "?limit=5")["verdicts"][0]
    assert newest["id"] >= max(v["id"] for v in events(d, "web-v2", "verdict")[:24])
    st, doc = control(d, "web-v2", "abort")
    assert st == 200, doc
    wait_state(d, "web-v2", ("rolled_back", "failed", "completed"), 30)
    load.stop()
    time.sleep(1.5)  # a verdict of the last interval may still be on its way

    stored = events(d, "web-v2", "verdict")  # oldest first
    assert len(stored) >= 24
    ids = [v["id"] for v in stored]

    # the default page: the newest verdicts first, not the oldest
    doc = analysis(d)
    got = [v["id"] for v in doc["verdicts"]]
    assert got == sorted(ids, reverse=True)[:100], (got, ids)
    assert doc["verdicts"][0]["details"]["interval_end_ms"] == \
        max(v["details"]["interval_end_ms"] for v in stored)
    assert doc["next"] == ids[-1]
    assert {c["name"] for c in doc["checks"]} >= {"errors", "p99"}, doc["checks"]

    # paging back with ?before= walks every verdict once, newest to oldest
    seen, before, pages = [], None, 0
    while pages < 100:
        page = analysis(d, "?limit=5" + (f"&before={before}" if before else ""))
        batch = [v["id"] for v in page["verdicts"]]
        assert batch == sorted(batch, reverse=True) and len(batch) <= 5
        assert all(v["kind"] == "verdict" for v in page["verdicts"])
        seen += batch
        pages += 1
        if page["before"] is None:
            break
        assert page["before"] == batch[-1]
        before = page["before"]
    assert seen == sorted(ids, reverse=True), (seen, ids)
    assert pages == (len(ids) + 4) // 5 or (len(ids) % 5 == 0 and pages == len(ids) // 5 + 1)

    # ?since= gives only what is newer, still newest first
    cut = ids[-3]
    doc = analysis(d, f"?since={cut}")
    assert [v["id"] for v in doc["verdicts"]] == [ids[-1], ids[-2]]
    assert doc["next"] == ids[-1]
    assert analysis(d, f"?since={ids[-1]}") ["verdicts"] == []

    for bad in ("?limit=0", "?limit=1001", "?limit=x", "?before=-1", "?since=abc"):
        st, doc = d.get(f"/v1/rollouts/web-v2/analysis{bad}")
        assert st == 400, (bad, doc)
        assert doc["error"]["field"] in ("limit", "before", "since"), doc
    st, _ = d.get("/v1/rollouts/nope/analysis")
    assert st == 404
