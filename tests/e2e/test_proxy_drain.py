"""Drain deadline: requests in flight on a draining canary finish if they can
within the service's `drain` time, and are cut (502) when it passes."""
import threading
import time

from test_proxy import Client, set_traffic, start_proxy, upstream_of, web_service


def test_drain_deadline_bounds_requests_in_flight(canaryd, upstream):
    v2 = upstream("v2", latency_ms=3000)
    d = start_proxy(canaryd, web_service(upstream("v1"), v2,
                                         "    sticky: header:x-user-id\n    drain: 500ms\n"))
    set_traffic(d, "v2", 100)
    result = []

    def inflight():
        c = Client(d.proxy_port)
        t0 = time.monotonic()
        st, r, _ = c.get("/", {"x-user-id": "slow"})
        result.append((st, time.monotonic() - t0))
        c.close()

    t = threading.Thread(target=inflight, daemon=True)
    t.start()
    time.sleep(0.2)
    set_traffic(d, "v2", 0)
    t.join(5)
    assert result, "the in-flight request never finished"
    status, took = result[0]
    # cut at the drain deadline (0.5 s after the change), not at the upstream's 3 s
    assert status == 502, result
    assert took < 2.0, result
    # new requests go to the stable version
    st, r, _ = Client(d.proxy_port).get("/", {"x-user-id": "slow"})
    assert st == 200 and upstream_of(r) == "v1"
    # and the cut request is counted as an error of the canary cohort
    s, h, body = __import__("conftest").http("GET", d.url + "/metrics",
                                              token=__import__("conftest").ADMIN_TOKEN)
    assert b'canaryd_requests_total{service="web",version="v2",cohort="canary",code="5xx"} 1' in body
