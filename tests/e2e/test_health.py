"""Active health checks (SPEC 3 `health:`, docs/proxy.md "Active health checks"):
an endpoint failing its health path leaves the pick and comes back after `healthy`
passes, the last endpoint of a version never leaves, the API and the metric show
it, reloads follow the configuration, and a canary whose endpoints are all down
fails the built-in `health` check and is rolled back.

demo-upstream answers GET /healthz with the status set by
POST /_upstream/config?health_status=CODE (not counted as a request)."""
import http.client as httpclient
import json
import signal
import socket

import conftest
from conftest import ADMIN_TOKEN, free_port, http, wait_until

# short intervals; every wait below is bounded with a wide margin (ASan, loaded CI)
HEALTH = "{path: /healthz, interval: 100ms, timeout: 80ms, healthy: 2, unhealthy: 2}"


def esc(text):
    return text.replace("{", "{{").replace("}", "}}")


def listeners(port):
    return ("listeners:\n  - name: public\n    listen: 127.0.0.1:%d\n    routes:\n"
            "      - match: {path_prefix: /}\n        service: web\n" % port)


def start(canaryd, port, body):
    d = canaryd(esc(listeners(port) + body))
    d.proxy_port = port

    def listening():
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True

    wait_until(listening, 5, what="proxy listener")
    return d


def set_health(port, status):
    st, _, body = http("POST", f"http://127.0.0.1:{port}/_upstream/config?health_status={status}")
    assert st == 200, body


def upstream_stats(port):
    st, _, body = http("GET", f"http://127.0.0.1:{port}/_upstream/stats")
    assert st == 200
    return json.loads(body)


def checks(d, version="v1"):
    """{port: check} of the version's endpoints, from GET /v1/services/web."""
    st, doc = d.get("/v1/services/web")
    assert st == 200, doc
    v = next(v for v in doc["versions"] if v["name"] == version)
    return {int(e["address"].rsplit(":", 1)[1]): e["check"] for e in v["endpoints"]}


def wait_check(d, port, version="v1", timeout=10, **want):
    def ok():
        c = checks(d, version)[port]
        return c if all(c.get(k) == w for k, w in want.items()) else None

    return wait_until(ok, timeout, 0.05, what=f"endpoint {port} {want}")


def hits(proxy_port, n):
    """The X-Upstream-Version of n GETs on one keep-alive connection."""
    conn = httpclient.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
    out = []
    try:
        for _ in range(n):
            conn.request("GET", "/x")
            r = conn.getresponse()
            r.read()
            assert r.status == 200, r.status
            out.append(r.getheader("X-Upstream-Version"))
    finally:
        conn.close()
    return out


def endpoint_up(d, version, port):
    st, _, body = http("GET", d.url + "/metrics", token=ADMIN_TOKEN)
    assert st == 200
    parsed = conftest.parse_metrics(body.decode())
    return conftest.metric(parsed, "canaryd_endpoint_up", service="web", version=version,
                           endpoint=f"127.0.0.1:{port}")


def test_failing_endpoint_leaves_the_pick_returns_and_the_last_never_leaves(canaryd, upstream):
    a, b = upstream("a"), upstream("b")
    port = free_port()
    d = start(canaryd, port, "services:\n  web:\n    versions:\n"
              f"      v1:\n        endpoints: [127.0.0.1:{a}, 127.0.0.1:{b}]\n"
              f"        health: {HEALTH}\n    stable: v1\n")
    wait_check(d, a, state="up")
    wait_check(d, b, state="up")
    assert endpoint_up(d, "v1", a) == 1 and endpoint_up(d, "v1", b) == 1
    assert upstream_stats(a)["health_probes"] > 0

    # b fails its health path: after `unhealthy` failures it leaves the pick
    set_health(b, 503)
    c = wait_check(d, b, state="down", in_pick=False)
    assert "status 503 (expected 200-399)" in c["reason"], c
    assert c["last_status"] == 503 and c["last_probe"] and c["since"], c
    assert set(hits(port, 30)) == {"a"}
    assert endpoint_up(d, "v1", b) == 0 and endpoint_up(d, "v1", a) == 1
    st, doc = d.get("/v1/health/detailed")
    assert st == 200, doc
    eps = doc["components"]["endpoints"]
    assert eps["down"] == 1 and eps["up"] == 1, eps
    listed = {(e["version"], e["endpoint"]): e for e in eps["endpoints"]}
    assert listed[("v1", f"127.0.0.1:{b}")]["state"] == "down", eps

    # a fails too: the last endpoint in the pick stays (kept), requests still flow
    set_health(a, 500)
    c = wait_check(d, a, state="down")
    assert c["in_pick"] and c["kept"], c
    assert "the last endpoint of its version" in c["reason"], c
    assert set(hits(port, 10)) == {"a"}

    # b passes again: up after `healthy` passes, back in the pick; a leaves it
    set_health(b, 200)
    wait_check(d, b, state="up", in_pick=True)
    wait_check(d, a, in_pick=False, kept=False)
    assert set(hits(port, 10)) == {"b"}
    set_health(a, 204)
    wait_check(d, a, state="up", in_pick=True)
    assert set(hits(port, 30)) == {"a", "b"}

    # a clean stop: probes end with the process (exit 0)
    d.proc.signal(signal.SIGTERM)
    assert d.proc.wait(20) == 0


def test_reload_follows_endpoints_added_and_removed(canaryd, upstream):
    a, b, c = upstream("a"), upstream("b"), upstream("c")
    port = free_port()
    body = ("services:\n  web:\n    versions:\n"
            "      v1:\n        endpoints: [%s]\n"
            f"        health: {HEALTH}\n    stable: v1\n")
    d = start(canaryd, port, body % f"127.0.0.1:{a}, 127.0.0.1:{b}")
    set_health(b, 503)
    wait_check(d, b, state="down", in_pick=False)
    # reload: c added, b kept (still down, still out of the pick), a removed
    with open(d.config_path) as f:
        text = f.read()
    with open(d.config_path, "w") as f:
        f.write(text.replace(f"127.0.0.1:{a}, 127.0.0.1:{b}", f"127.0.0.1:{b}, 127.0.0.1:{c}"))
    d.proc.signal(signal.SIGHUP)
    wait_check(d, c, state="up")
    got = checks(d)
    assert set(got) == {b, c}, got
    assert got[b]["state"] == "down" and not got[b]["in_pick"], got
    assert set(hits(port, 10)) == {"c"}
    probes = upstream_stats(a)["health_probes"]
    wait_until(lambda: upstream_stats(c)["health_probes"] >= 5, 10, what="probes of c")
    assert upstream_stats(a)["health_probes"] <= probes + 1  # one may have been in flight


def test_canary_with_every_endpoint_down_fails_the_health_check_and_rolls_back(canaryd,
                                                                                upstream):
    v1, v2 = upstream("v1"), upstream("v2")
    port = free_port()
    d = start(canaryd, port, "services:\n  web:\n    versions:\n"
              f"      v1: {{endpoints: [127.0.0.1:{v1}]}}\n"
              f"      v2:\n        endpoints: [127.0.0.1:{v2}]\n        health: {HEALTH}\n"
              "    stable: v1\n    drain: 1s\n"
              "rollouts:\n  web-v2:\n    target: {service: web, canary: v2}\n"
              "    steps:\n      - weight: 50\n        for: 60s\n"
              "    analysis:\n      interval: 1s\n      checks:\n"
              "        - {name: errors, metric: error_rate, max: 0.5, min_samples: 100000, "
              "on_fail: rollback}\n")
    wait_check(d, v2, version="v2", state="up")
    st, doc = d.post("/v1/rollouts/web-v2/start")
    assert st == 200, doc

    def progressing():
        st, r = d.get("/v1/rollouts/web-v2")
        st, svc = d.get("/v1/services/web")
        return r["state"] == "progressing" and svc["weight"] == 50 or None

    wait_until(progressing, 10, what="the rollout at its first step")
    set_health(v2, 503)

    def rolled_back():
        st, r = d.get("/v1/rollouts/web-v2")
        return r if r["state"] == "rolled_back" else None

    r = wait_until(rolled_back, 15, 0.05, what="the rollback")
    verdicts = [e["details"] for e in conftest.events(d, "/v1/rollouts/web-v2/events", "verdict")
                if e["details"].get("check") == "health"]
    assert len(verdicts) == 1, verdicts
    v = verdicts[0]
    assert v["outcome"] == "fail" and v["builtin"] and v["target"] == "web", v
    assert "every endpoint of web v2 fails its health checks" in v["reason"], v
    assert f"127.0.0.1:{v2} down since" in v["reason"], v
    rb = conftest.events(d, "/v1/rollouts/web-v2/events", "rollout.rollback")
    assert rb and rb[-1]["details"]["class"] == "check", rb
    assert rb[-1]["details"]["verdict"]["check"] == "health", rb
    st, svc = d.get("/v1/services/web")
    assert svc["weight"] == 0, svc
    assert set(hits(port, 10)) == {"v1"}
