"""Behaviour that existed without a test (issue 19): one rollout owns a service
(SPEC 6, docs/api.md 409s), sticky `ip` and `none` routing (SPEC 2,
docs/bucketing.md), and the limits of outlier ejection (`max_ejected_percent`,
never the last endpoint; docs/config.md).  Real canaryd and demo-upstream
processes on 127.0.0.1; every wait is bounded."""
import http.client as httpclient

from conftest import free_port, wait_until
from test_proxy import (Client, cohort_of, expected_cohort, set_traffic, start_proxy,
                        upstream_of)
from test_rollout import config, control, rollout, start, wait_state

# --------------------------------------------------------------------------
# One owner per service


def two_rollouts_on_web(port, v1, v2, v3):
    services = ("  web:\n    versions:\n"
                f"      v1: {{endpoints: [127.0.0.1:{v1}]}}\n"
                f"      v2: {{endpoints: [127.0.0.1:{v2}]}}\n"
                f"      v3: {{endpoints: [127.0.0.1:{v3}]}}\n"
                "    stable: v1\n")
    plans = ""
    for name, canary in (("web-v2", "v2"), ("web-v3", "v3")):
        plans += (f"  {name}:\n    target: {{service: web, canary: {canary}}}\n"
                  "    steps:\n      - weight: 10\n      - pause: {}\n"
                  "    rollback:\n      drain: 0s\n")
    return config(port, services, plans)


def test_one_rollout_owns_a_service(canaryd, upstream):
    v1, v2, v3 = upstream("v1"), upstream("v2"), upstream("v3")
    d = start(canaryd, two_rollouts_on_web(free_port(), v1, v2, v3))
    st, doc = control(d, "web-v2", "start")
    assert st == 200, doc
    wait_until(lambda: rollout(d, "web-v2")["step"]["index"] == 1, 10, what="web-v2 at its pause")
    st, svc = d.get("/v1/services/web")
    assert svc["owner"] == "web-v2" and svc["canary"] == "v2" and svc["weight"] == 10, svc

    # a second rollout on the same service is refused, naming the owner
    st, doc = control(d, "web-v3", "start")
    assert st == 409, doc
    assert "web-v2" in doc["error"]["message"], doc
    assert rollout(d, "web-v3")["state"] == "idle"
    # manual traffic and mirror changes would fight the rollout: 409 with the owner
    st, doc = d.put("/v1/services/web/traffic", {"canary": "v3", "weight": 50})
    assert st == 409 and "web-v2" in doc["error"]["message"], doc
    st, doc = d.put("/v1/services/web/traffic", {"weight": 0})
    assert st == 409, doc
    st, doc = d.put("/v1/services/web/mirror", {"version": "v3", "percent": 100})
    assert st == 409, doc
    st, doc = d.delete("/v1/services/web/mirror")
    assert st == 409, doc
    # nothing moved
    st, svc = d.get("/v1/services/web")
    assert (svc["canary"], svc["weight"], svc["owner"]) == ("v2", 10, "web-v2"), svc

    # once the owner has finished, the service is free again
    assert control(d, "web-v2", "abort")[0] == 200
    wait_state(d, "web-v2", ("rolled_back",), 15, post_done=True)
    wait_until(lambda: d.get("/v1/services/web")[1]["owner"] is None, 10, what="no owner")
    st, doc = control(d, "web-v3", "start")
    assert st == 200, doc
    wait_until(lambda: d.get("/v1/services/web")[1]["owner"] == "web-v3", 10,
               what="web-v3 owns web")
    st, doc = d.put("/v1/services/web/traffic", {"weight": 50})
    assert st == 409 and "web-v3" in doc["error"]["message"], doc


# --------------------------------------------------------------------------
# Sticky ip and none


def get_from(port, source_ip, n=1, headers=None):
    """n GETs on one connection from source_ip (any 127.x address is local);
    returns [(status, cohort, upstream version)]."""
    c = httpclient.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source_ip, 0))
    out = []
    try:
        for _ in range(n):
            c.request("GET", "/ip", headers=headers or {})
            r = c.getresponse()
            r.read()
            out.append((r.status, cohort_of(r), upstream_of(r)))
    finally:
        c.close()
    return out


def test_sticky_ip_buckets_the_client_address(canaryd, upstream):
    d = start_proxy(canaryd, "  web:\n    versions:\n"
                    f"      v1: {{endpoints: [127.0.0.1:{upstream('v1')}]}}\n"
                    f"      v2: {{endpoints: [127.0.0.1:{upstream('v2')}]}}\n"
                    "    stable: v1\n    sticky: ip\n    expose_cohort: true\n")
    set_traffic(d, "v2", 30)
    seen = set()
    for i in range(1, 81):
        ip = f"127.0.0.{i}"
        want = expected_cohort("web", ip, 30)
        # the cohort is the published bucket of the address in text form, on every
        # connection and whatever other key the request carries
        res = get_from(d.proxy_port, ip, 2) + get_from(d.proxy_port, ip, 1,
                                                       {"X-User-Id": f"u{i}"})
        for st, cohort, version in res:
            assert st == 200
            assert cohort == want, (ip, res, want)
            assert version == ("v2" if want == "canary" else "v1"), (ip, res)
        seen.add(want)
    assert "canary" in seen and "stable" in seen, seen


def test_sticky_none_spreads_each_request(canaryd, upstream):
    d = start_proxy(canaryd, "  web:\n    versions:\n"
                    f"      v1: {{endpoints: [127.0.0.1:{upstream('v1')}]}}\n"
                    f"      v2: {{endpoints: [127.0.0.1:{upstream('v2')}]}}\n"
                    "    stable: v1\n    sticky: none\n    expose_cohort: true\n")
    set_traffic(d, "v2", 50)
    # one client, one connection, the same headers: only the per-request random
    # key differs, so the requests split about evenly
    res = get_from(d.proxy_port, "127.0.0.1", 200, {"X-User-Id": "same-user"})
    assert all(st == 200 for st, _, _ in res)
    canary = sum(1 for _, cohort, _ in res if cohort == "canary")
    assert 60 <= canary <= 140, canary  # 100 expected; 40 is more than 5 sd
    assert all(v == ("v2" if c == "canary" else "v1") for _, c, v in res)


# --------------------------------------------------------------------------
# Outlier ejection limits


def endpoint_health(d, version="v1"):
    st, doc = d.get("/v1/services/web")
    assert st == 200, doc
    v = next(v for v in doc["versions"] if v["name"] == version)
    return {e["address"].rsplit(":", 1)[1]: e["health"] for e in v["endpoints"]}


def failing_service(ports, max_pct):
    eps = ", ".join(f"127.0.0.1:{p}" for p in ports)
    return ("  web:\n    versions:\n"
            f"      v1: {{endpoints: [{eps}]}}\n"
            "    stable: v1\n"
            "    outlier: {consecutive_5xx: 2, base_ejection: 60s, "
            f"max_ejected_percent: {max_pct}}}\n")


def hammer(port, n):
    c = Client(port)
    try:
        return [(st, upstream_of(r)) for st, r, _ in (c.get("/") for _ in range(n))]
    finally:
        c.close()


def test_max_ejected_percent_caps_ejections(canaryd, upstream):
    bad = [upstream(f"bad{i}", error_rate=1) for i in range(4)]
    d = start_proxy(canaryd, failing_service(bad, 50))
    res = hammer(d.proxy_port, 60)  # every endpoint fails far more than twice in a row
    assert all(st == 500 for st, _ in res), res
    health = endpoint_health(d)
    ejected = sorted(p for p, h in health.items() if h == "ejected")
    assert len(ejected) == 2, health  # 50% of 4, and no more
    # the two left keep serving (even though they fail too)
    later = {who for _, who in hammer(d.proxy_port, 20)}
    assert len(later) == 2, later
    assert endpoint_health(d) == health


def test_the_last_endpoint_is_never_ejected(canaryd, upstream):
    two = [upstream(f"bad{i}", error_rate=1) for i in range(2)]
    d = start_proxy(canaryd, failing_service(two, 100))
    assert all(st == 500 for st, _ in hammer(d.proxy_port, 40))
    health = endpoint_health(d)
    assert sorted(health.values()) == ["ejected", "ok"], health  # 100% allowed, one left
    d.proc.stop()

    one = upstream("alone", error_rate=1)
    d = start_proxy(canaryd, failing_service([one], 100))
    res = hammer(d.proxy_port, 20)
    # still proxied to the failing endpoint (its 500s), never "no endpoint"
    assert res == [(500, "alone")] * 20, res
    assert endpoint_health(d) == {str(one): "ok"}
