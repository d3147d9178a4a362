"""Drain: requests in flight on a draining canary finish if they can within
the service's `drain` time, and are cut (502) when it passes; a rollback's
drain stage ends as soon as the canary has nothing in flight (the proxy's
per-version in-flight count) and its `rollout.drained` event reports the real
counts.  Requests are known to be in flight from demo-upstream's in_flight
gauge, never from a sleep; every wait is bounded."""
import threading

from conftest import free_port, http_json, metric, scrape, wait_until
from test_proxy import Client, bucket, set_traffic, start_proxy, upstream_of, web_service
from test_rollout import begin, control, events, start, wait_state, web_v2


def upstream_stats(port):
    st, doc = http_json("GET", f"http://127.0.0.1:{port}/_upstream/stats")
    assert st == 200, doc
    return doc


def send_in_background(port, keys, results, path="/"):
    """One GET per key on its own connection, each in a thread; appends
    (status, upstream version) or ("error", text) to results."""
    def run(key):
        c = Client(port, timeout=15)
        try:
            st, r, _ = c.get(path, {"x-user-id": key})
            results.append((st, upstream_of(r)))
        except Exception as e:  # noqa: BLE001 - reported by the assertions
            results.append(("error", repr(e)))
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in keys]
    for t in threads:
        t.start()
    return threads


def test_drain_deadline_bounds_requests_in_flight(canaryd, upstream):
    v2 = upstream("v2", latency_ms=5000)
    d = start_proxy(canaryd, web_service(upstream("v1"), v2,
                                         "    sticky: header:x-user-id\n    drain: 500ms\n"))
    set_traffic(d, "v2", 100)
    result = []
    threads = send_in_background(d.proxy_port, ["slow"], result)
    # the request is at the canary (held there by its 5 s latency)
    wait_until(lambda: upstream_stats(v2)["in_flight"] == 1, 5, what="request in flight")
    set_traffic(d, "v2", 0)
    threads[0].join(10)
    # cut at the drain deadline with a 502, not answered by the 5 s upstream
    assert result == [(502, None)], result
    # new requests go to the stable version
    c = Client(d.proxy_port)
    st, r, _ = c.get("/", {"x-user-id": "slow"})
    c.close()
    assert st == 200 and upstream_of(r) == "v1"
    # and the cut request is counted as an error of the canary cohort (parsed
    # values: a substring check on "} 1" would also match 10)
    m = scrape(d)
    assert metric(m, "canaryd_requests_total", service="web", version="v2", cohort="canary",
                  code="5xx") == 1
    assert metric(m, "canaryd_upstream_errors_total", service="web", version="v2",
                  kind="reset") == 1


def canary_keys(n, weight_percent=50, salt="web"):
    """n sticky keys whose bucket puts them in the canary cohort."""
    keys, i = [], 0
    while len(keys) < n:
        k = "drain-%d" % i
        if bucket(salt, k) < weight_percent * 1000:
            keys.append(k)
        i += 1
    return keys


PLAN = """    steps:
      - weight: 50
        for: 600s
    rollback:
      drain: {drain}
"""


def start_rollout_with_canary_in_flight(canaryd, upstream, drain, latency_ms, n):
    v1, v2 = upstream("v1"), upstream("v2", latency_ms=latency_ms)
    port = free_port()
    d = start(canaryd, web_v2(port, v1, v2, PLAN.format(drain=drain)))
    d.proxy_port = port
    begin(d)
    wait_until(lambda: events(d, "web-v2", "rollout.step"), 10, what="step 0 applied")
    results = []
    threads = send_in_background(port, canary_keys(n), results)
    wait_until(lambda: upstream_stats(v2)["in_flight"] == n, 10,
               what="%d canary requests in flight" % n)
    return d, v2, results, threads


def test_rollback_drain_ends_when_the_canary_has_nothing_in_flight(canaryd, upstream):
    # drain limit 60 s, canary requests take 1 s: the drain stage must end
    # when they are done, long before its limit (the requests must also end
    # well inside the service's own 2 s drain, which cuts what is left)
    d, v2, results, threads = start_rollout_with_canary_in_flight(canaryd, upstream, "60s",
                                                                  1000, 4)
    assert control(d, "web-v2", "abort")[0] == 200
    drained = wait_until(lambda: events(d, "web-v2", "rollout.drained"), 20,
                         what="rollout.drained before the 60 s limit")
    det = drained[0]["details"]
    assert det["in_flight_known"] is True
    assert det["in_flight_at_start"] == 4, det
    assert det["in_flight_left"] == 0, det
    assert det["deadline_hit"] is False, det
    assert det["duration_ms"] < det["limit_ms"], det
    for t in threads:
        t.join(10)
    # the drained requests finished on the canary, none was cut
    assert sorted(results) == [(200, "v2")] * 4, results
    assert upstream_stats(v2)["in_flight"] == 0
    wait_state(d, "web-v2", ("rolled_back",), 20, post_done=True)


def test_rollback_drain_deadline_reports_what_was_left(canaryd, upstream):
    # canary requests take 4 s, the rollback's drain is 300 ms: the stage ends
    # at its deadline with the requests still in flight, and says so
    d, v2, results, threads = start_rollout_with_canary_in_flight(canaryd, upstream, "300ms",
                                                                  4000, 3)
    assert control(d, "web-v2", "abort")[0] == 200
    drained = wait_until(lambda: events(d, "web-v2", "rollout.drained"), 10,
                         what="rollout.drained")
    det = drained[0]["details"]
    assert det["in_flight_at_start"] == 3, det
    assert det["in_flight_left"] == 3, det
    assert det["deadline_hit"] is True, det
    for t in threads:
        t.join(10)
    assert len(results) == 3
