"""The dashboard (SPEC 7 GET /ui/, docs/dashboard.md): served from the binary with a
strict CSP, ETag/304, no token needed for the page; GET /v1/whoami; the audit log as
SSE (GET /v1/events/stream, Last-Event-ID); and the page itself in headless chromium
(tests/browser/dashboard.mjs), which the ctest `e2e_browser` runs (CANARYD_BROWSER=1)."""
import http.client as httpc
import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import ADMIN_TOKEN, READ_TOKEN, SRC, free_port, http, http_json, wait_until
from test_rollout import Load, esc

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self' data:; frame-ancestors 'none'")

TOKENS = {"ops": ADMIN_TOKEN, "viewer": READ_TOKEN, "flagger": "flagger-secret",
          "vp-eng": "vp-secret", "infra-director": "infra-secret",
          "security-lead": "sec-secret", "intern": "intern-secret"}

CONFIG = """admin:
  listen: 127.0.0.1:{admin_port}
  tokens:
    - {name: ops, secret: "%(ops)s", scopes: [admin]}
    - {name: viewer, secret: "%(viewer)s", scopes: [read]}
    - {name: flagger, secret: "%(flagger)s", scopes: [read, flags:write]}
    - {name: vp-eng, secret: "%(vp-eng)s", scopes: [read, approve]}
    - {name: infra-director, secret: "%(infra-director)s", scopes: [read, approve]}
    - {name: security-lead, secret: "%(security-lead)s", scopes: [read, approve]}
    - {name: intern, secret: "%(intern)s", scopes: [read, approve]}
store: sqlite:{workdir}/canaryd.db
workers: 1
listeners:
  - name: public
    listen: 127.0.0.1:%(proxy)d
    routes:
      - match: {path_prefix: /api}
        service: api
      - match: {path_prefix: /}
        service: web
services:
  web:
    versions:
      v1: {endpoints: [127.0.0.1:%(web1)d]}
      v2: {endpoints: [127.0.0.1:%(web2)d]}
    stable: v1
    sticky: header:x-user-id
    drain: 1s
  api:
    versions:
      v1: {endpoints: [127.0.0.1:%(api1)d]}
      v3: {endpoints: [127.0.0.1:%(api3)d]}
    stable: v1
    sticky: header:x-user-id
    drain: 1s
flags:
  checkout:
    description: the new checkout
    rollout: {"on": 10}
rollouts:
  web-v2:
    target: {service: web, canary: v2}
    steps:
      - weight: 10
        for: 3s
      - approval: {required: [vp-eng, infra-director, security-lead]}
      - weight: 100
    analysis:
      interval: 1s
      checks:
        - name: errors
          metric: error_rate
          max_increase: 0.05
          min_samples: 20
          on_fail: rollback
  api-v3:
    target: {service: api, canary: v3}
    steps:
      - weight: 30
        for: 60s
      - weight: 100
    analysis:
      interval: 1s
      checks:
        - name: errors
          metric: error_rate
          max_increase: 0.05
          min_samples: 20
          on_fail: rollback
    rollback:
      drain: 1s
"""


def start(canaryd, upstream, bad_api=True):
    ports = {"web1": upstream("web-v1"), "web2": upstream("web-v2"),
             "api1": upstream("api-v1"),
             "api3": upstream("api-v3", error_rate=0.5 if bad_api else None, seed=5),
             "proxy": free_port()}
    ports.update(TOKENS)
    d = canaryd(esc(CONFIG % ports), header=False)
    d.proxy = ports["proxy"]
    return d


def test_page_and_assets_served_with_security_headers(canaryd, upstream):
    d = start(canaryd, upstream, bad_api=False)
    st, h, body = http("GET", d.url + "/ui/")  # no token: the page signs in itself
    assert st == 200
    assert h["Content-Type"].startswith("text/html")
    assert h["Content-Security-Policy"].startswith(CSP)
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Referrer-Policy"] == "no-referrer"
    assert h["Cache-Control"] == "no-cache"
    page = body.decode()
    assert '<script defer src="/ui/assets/app.js"></script>' in page
    assert "<script>" not in page and "style=" not in page  # nothing inline
    assert "http://" not in page and "https://" not in page  # no CDN
    st, h, js = http("GET", d.url + "/ui/assets/app.js")
    assert st == 200 and h["Content-Type"].startswith("text/javascript") and len(js) > 1000
    etag = h["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    st, h2, again = http("GET", d.url + "/ui/assets/app.js", headers={"If-None-Match": etag})
    assert st == 304 and again == b"" and h2["ETag"] == etag
    st, h2, _ = http("GET", d.url + "/ui/assets/app.js", headers={"If-None-Match": '"other"'})
    assert st == 200
    assert http("GET", d.url + "/ui/assets/app.css")[0] == 200
    assert http("GET", d.url + "/ui/assets/nope.js")[0] == 404
    assert http("GET", d.url + "/ui/assets/..%2Findex.html")[0] == 404
    assert http("POST", d.url + "/ui/", body=b"")[0] == 405
    # the API answers carry the same policy headers
    st, h, _ = http("GET", d.url + "/v1/services", token=READ_TOKEN)
    assert st == 200 and h["X-Content-Type-Options"] == "nosniff"


def test_whoami(canaryd, upstream):
    d = start(canaryd, upstream, bad_api=False)
    st, doc = d.get("/v1/whoami", token=READ_TOKEN)
    assert st == 200 and doc == {"name": "viewer", "scopes": ["read"]}
    st, doc = d.get("/v1/whoami", token=TOKENS["vp-eng"])
    assert doc == {"name": "vp-eng", "scopes": ["read", "approve"]}
    assert d.get("/v1/whoami", token=None)[0] == 401
    assert d.get("/v1/whoami", token="wrong")[0] == 401


class Stream:
    """GET /v1/events/stream read line by line, with a bounded socket timeout."""

    def __init__(self, d, last_id=None, token=READ_TOKEN):
        self.c = httpc.HTTPConnection("127.0.0.1", d.admin_port, timeout=10)
        hdrs = {"Authorization": f"Bearer {token}"}
        if last_id is not None:
            hdrs["Last-Event-ID"] = str(last_id)
        self.c.request("GET", "/v1/events/stream", headers=hdrs)
        self.r = self.c.getresponse()

    def events(self, n, deadline=15.0):
        out, cur = [], {}
        end = time.monotonic() + deadline
        while len(out) < n and time.monotonic() < end:
            line = self.r.readline().decode().rstrip("\n")
            if line == "":
                if "data" in cur:
                    out.append(cur)
                cur = {}
            elif not line.startswith(":"):
                k, _, v = line.partition(": ")
                cur[k] = v
        return out

    def close(self):
        self.c.close()


def test_events_stream_live_and_resume(canaryd, upstream):
    d = start(canaryd, upstream, bad_api=False)
    assert d.get("/v1/events/stream", token=None)[0] == 401
    s = Stream(d)
    assert s.r.status == 200
    assert s.r.getheader("Content-Type").startswith("text/event-stream")
    time.sleep(0.3)  # the subscriber starts at the newest event
    for p in (11, 12, 13):
        assert d.post("/v1/feature-flags", {"feature": "checkout", "percentage": p})[0] == 200
    got = s.events(3)
    assert [e["event"] for e in got] == ["flag.updated"] * 3, got
    rows = [json.loads(e["data"]) for e in got]
    assert [int(e["id"]) for e in got] == [r["id"] for r in rows]
    assert all(r["actor"] == "ops" and r["subject"] == "flag/checkout" for r in rows)
    ids = [r["id"] for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == 3
    s.close()
    # resume after the first: the two missed come first, nothing twice
    s2 = Stream(d, last_id=ids[0])
    again = s2.events(2)
    assert [int(e["id"]) for e in again] == ids[1:], again
    assert d.post("/v1/feature-flags", {"feature": "checkout", "percentage": 14})[0] == 200
    nxt = s2.events(1)
    assert int(nxt[0]["id"]) > ids[2] and nxt[0]["event"] == "flag.updated"
    s2.close()


BROWSER = os.environ.get("CANARYD_BROWSER") == "1"
NODE = shutil.which("node") or "/usr/bin/node"
BROWSER_DIR = os.path.join(SRC, "tests", "browser")


@pytest.mark.skipif(not BROWSER, reason="the browser run is ctest e2e_browser (CANARYD_BROWSER=1)")
def test_dashboard_in_chromium(canaryd, upstream, procs, tmp_path):
    assert os.path.exists(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")), \
        "run scripts/install-deps (npm ci in tests/browser)"
    assert os.path.exists("/usr/bin/chromium"), "run scripts/install-deps (chromium)"
    d = start(canaryd, upstream)
    web = Load(procs, d.proxy, rate=150, path="/web")
    api = Load(procs, d.proxy, rate=150, path="/api/x")
    shots = os.environ.get("CANARYD_SCREENSHOTS") or str(tmp_path / "shots")
    env = dict(os.environ, CANARYD_URL=d.url, CANARYD_PID=str(d.proc.p.pid), SHOTS=shots,
               TOKENS=json.dumps(TOKENS))
    p = subprocess.run([NODE, os.path.join(BROWSER_DIR, "dashboard.mjs")], cwd=BROWSER_DIR,
                       env=env, capture_output=True, text=True, timeout=420)
    web.stop()
    api.stop()
    print(p.stdout)
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}\nscreenshots in {shots}"
    assert os.path.exists(os.path.join(shots, "rollout-approval.png"))
    assert os.path.exists(os.path.join(shots, "rollout-rollback.png"))
