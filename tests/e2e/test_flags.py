"""Feature flags end to end (issue 5; SPEC sections 2, 3, 7, 8): the customer's DWCP
seed calls exactly as written (curl), the flag API (list/get/upsert/PUT/DELETE,
exclusions), validation and scopes, OFREP single and bulk (ETag / 304, every error
code reachable from outside), persistence and audit events, the SSE stream (ruleset,
changes with id = revision, Last-Event-ID resume, heartbeats, 100 subscribers,
config reloads) and canaryctl's flags verbs.  GENERAL is covered by
tests/unit/test_api_flags.c (it needs an internal failure)."""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import (ADMIN_TOKEN, BASE_ADMIN, FLAGS_TOKEN, READ_TOKEN, bin_path, events, http,
                      metric, scrape, wait_until)

EVAL_TOKEN = "e2e-eval-secret"

# conftest's BASE_ADMIN with an evaluate-only token, and room for more admin lines
HEADER = BASE_ADMIN.replace("store:", """    - name: app
      secret: ${{E2E_EVAL_TOKEN}}
      scopes: [evaluate]
{extra_admin}store:""", 1)
assert "{extra_admin}" in HEADER

BODY = """segments:
  internal: {{match: [{{attr: email, op: ends_with, values: ["@novacron.io"]}}]}}
flags:
  from_config:
    description: defined in the YAML
    rules: [{{segment: internal, serve: "on"}}]
    rollout: {{"on": 12.345}}
"""

ENV = {"E2E_EVAL_TOKEN": EVAL_TOKEN, "CANARYD_SSE_HEARTBEAT_MS": "200"}


@pytest.fixture
def start(canaryd):
    def go(body=BODY, extra_admin="", env=None):
        e = dict(ENV)
        e.update(env or {})
        text = HEADER.replace("{extra_admin}", extra_admin) + body
        return canaryd(text, header=False, extra_env=e)

    return go


def ofrep(d, key, context, token=EVAL_TOKEN, raw=None):
    body = raw if raw is not None else ({"context": context} if context is not None else {})
    return d.post(f"/ofrep/v1/evaluate/flags/{key}", body, token=token)


def seed_post(d, feature, percentage, enabled=True, token=ADMIN_TOKEN):
    return d.post("/v1/feature-flags",
                  {"feature": feature, "percentage": percentage, "enabled": enabled},
                  token=token)


def events_of(d, kind_prefix="flag"):
    return [e for e in events(d, "/v1/events") if e["kind"].startswith(kind_prefix)]


def exposed(d, key, nodes):
    out = set()
    for n in nodes:
        st, doc = ofrep(d, key, {"nodeId": n})
        assert st == 200, doc
        if doc["value"] is True:
            out.add(n)
    return out


# ---------------------------------------------------------------------------- seed


def curl(*args):
    r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True,
                       text=True, timeout=10)
    body, _, code = r.stdout.rpartition("\n")
    return int(code), json.loads(body) if body.strip() else None


def test_the_four_seed_calls_exactly_as_written(start):
    d = start()
    base = d.url
    auth = f"Authorization: Bearer {ADMIN_TOKEN}"
    # curl -X POST .../v1/feature-flags -H "Authorization: Bearer $ADMIN_TOKEN" -d '{...}'
    code, doc = curl("-X", "POST", f"{base}/v1/feature-flags", "-H", auth, "-d",
                     '{\n    "feature": "dwcp_v3_hde",\n    "percentage": 10,\n'
                     '    "enabled": true\n  }')
    assert code == 201, doc
    assert doc["feature"] == "dwcp_v3_hde" and doc["percentage"] == 10
    assert doc["enabled"] is True and doc["sticky"] == "nodeId"
    assert doc["rollout"] == {"on": 10} and doc["source"] == "api"
    code, doc = curl(f"{base}/v1/feature-flags/dwcp_v3_hde", "-H", auth)
    assert code == 200 and doc["percentage"] == 10 and doc["exclude"] == []
    code, doc = curl("-X", "POST", f"{base}/v1/feature-flags/exclude", "-H", auth, "-d",
                     '{\n    "feature": "dwcp_v3_hde",\n    "nodes": ["node-123", "node-456"]\n  }')
    assert code == 200, doc
    assert doc["exclude"] == ["node-123", "node-456"]
    code, doc = curl(f"{base}/v1/health/detailed", "-H", auth)
    assert code == 200 and doc["status"] == "ok"
    # the seed's instant rollback: percentage 0 / enabled false
    code, doc = curl("-X", "POST", f"{base}/v1/feature-flags", "-H", auth, "-d",
                     '{"feature": "dwcp_v3_hde", "percentage": 0, "enabled": false}')
    assert code == 200 and doc["percentage"] == 0 and doc["enabled"] is False
    st, r = ofrep(d, "dwcp_v3_hde", {"nodeId": "node-1"})
    assert st == 200 and r["value"] is False and r["reason"] == "DISABLED"


def test_raising_keeps_exposed_nodes_and_exclusion_is_per_node(start):
    d = start()
    nodes = [f"hv-{i}" for i in range(300)]
    assert seed_post(d, "dwcp_v3_hde", 10)[0] == 201
    at10 = exposed(d, "dwcp_v3_hde", nodes)
    assert 10 <= len(at10) <= 60
    assert seed_post(d, "dwcp_v3_hde", 50)[0] == 200
    at50 = exposed(d, "dwcp_v3_hde", nodes)
    assert at10 < at50 and 100 <= len(at50) <= 200
    victim = sorted(at10)[0]
    st, doc = d.post("/v1/feature-flags/exclude", {"feature": "dwcp_v3_hde", "nodes": [victim]})
    assert st == 200 and victim in doc["exclude"]
    st, r = ofrep(d, "dwcp_v3_hde", {"nodeId": victim})
    assert r == {"key": "dwcp_v3_hde", "value": False, "reason": "TARGETING_MATCH",
                 "variant": "off"}
    assert exposed(d, "dwcp_v3_hde", nodes) == at50 - {victim}
    # lowering again takes off the most recently added nodes only
    assert seed_post(d, "dwcp_v3_hde", 10)[0] == 200
    assert exposed(d, "dwcp_v3_hde", nodes) == at10 - {victim}
    st, doc = d.delete(f"/v1/feature-flags/dwcp_v3_hde/exclude/{victim}")
    assert st == 200 and doc["exclude"] == []
    assert exposed(d, "dwcp_v3_hde", nodes) == at10
    assert d.delete(f"/v1/feature-flags/dwcp_v3_hde/exclude/{victim}")[0] == 404
    # an exclusion takes the node off `include`
    st, _ = d.put("/v1/feature-flags/dwcp_v3_hde",
                  {"sticky": "nodeId", "rollout": {"on": 10}, "include": ["vip"]})
    assert st == 200
    st, doc = d.post("/v1/feature-flags/exclude", {"feature": "dwcp_v3_hde", "nodes": ["vip"]})
    assert st == 200 and doc["include"] == [] and doc["exclude"] == ["vip"]


def test_kill_switch_and_percentage_zero(start):
    d = start()
    seed_post(d, "k", 100)
    assert ofrep(d, "k", {"nodeId": "a"})[1]["value"] is True
    st, doc = d.post("/v1/feature-flags", {"feature": "k", "enabled": False})
    assert st == 200 and doc["enabled"] is False and doc["percentage"] == 100
    r = ofrep(d, "k", {"nodeId": "a"})[1]
    assert r["value"] is False and r["reason"] == "DISABLED"
    d.post("/v1/feature-flags", {"feature": "k", "enabled": True, "percentage": 0})
    r = ofrep(d, "k", {})[1]  # 0% needs no key
    assert r["value"] is False and r["reason"] == "SPLIT"


def test_validation_errors_name_the_field(start):
    d = start()
    cases = [
        ("POST", "/v1/feature-flags", {"feature": "f", "percentage": 150}, "percentage"),
        ("POST", "/v1/feature-flags", {"feature": "f", "percentage": 1.2345}, "percentage"),
        ("POST", "/v1/feature-flags", {"feature": "f", "enabled": "yes"}, "enabled"),
        ("POST", "/v1/feature-flags", {"feature": "bad key!", "percentage": 1}, "feature"),
        ("POST", "/v1/feature-flags", {"percentage": 1, "enabled": True}, "feature"),
        ("POST", "/v1/feature-flags", {"variants": {"a": 1}}, "key"),
        ("PUT", "/v1/feature-flags/f", {"rules": [{"segment": "internal", "serve": "maybe"}]},
         "rules[0].serve"),
        ("PUT", "/v1/feature-flags/f", {"rules": [{"segment": "nosuch", "serve": "on"}]},
         "rules[0].segment"),
        ("PUT", "/v1/feature-flags/f", {"colour": "red"}, "colour"),
        ("PUT", "/v1/feature-flags/f", {"rollout": {"on": 60, "off": 50}}, "rollout"),
        ("PUT", "/v1/feature-flags/f", {"key": "g"}, "key"),
        ("PUT", "/v1/feature-flags/f", {"rollout": {"on": 5}, "percentage": 7}, "percentage"),
        ("PUT", "/v1/feature-flags/f", {"include": ["a"], "exclude": ["a"]}, "include[0]"),
        ("POST", "/v1/feature-flags/exclude", {"feature": "from_config", "nodes": []}, "nodes"),
        ("POST", "/v1/feature-flags/exclude", {"feature": "from_config", "nodes": [""]},
         "nodes[0]"),
        ("POST", "/v1/feature-flags/exclude", {"feature": "from_config", "nodes": ["a"], "x": 1},
         "x"),
    ]
    for method, path, body, field in cases:
        st, doc = (d.post if method == "POST" else d.put)(path, body)
        assert st == 422, (body, doc)
        assert doc["error"]["field"] == field, (body, doc)
        assert doc["error"]["message"]
        if field == "x":
            assert doc["error"]["message"] == 'unknown field "x"', doc
    assert d.get("/v1/feature-flags/f")[0] == 404  # nothing was written
    st, doc = d.post("/v1/feature-flags", b"{not json", headers={"Content-Type": "x"})
    assert st == 400


def test_unknown_flags_are_404_and_config_flags_409_on_delete(start):
    d = start()
    assert d.get("/v1/feature-flags/nope")[0] == 404
    assert d.delete("/v1/feature-flags/nope")[0] == 404
    assert d.post("/v1/feature-flags/exclude", {"feature": "nope", "nodes": ["a"]})[0] == 404
    assert d.delete("/v1/feature-flags/nope/exclude/a")[0] == 404
    st, doc = d.delete("/v1/feature-flags/from_config")
    assert st == 409, doc
    # an API change over a config flag: DELETE drops it, the config's definition is back
    st, doc = d.post("/v1/feature-flags", {"feature": "from_config", "percentage": 50})
    assert st == 200 and doc["source"] == "api" and doc["rules"] and doc["percentage"] == 50
    st, doc = d.delete("/v1/feature-flags/from_config")
    assert st == 200 and doc["source"] == "config" and doc["percentage"] == 12.345
    # an API flag is deleted
    seed_post(d, "tmp", 5)
    st, doc = d.delete("/v1/feature-flags/tmp")
    assert st == 200 and doc == {"key": "tmp", "deleted": True, "revision": doc["revision"]}
    assert d.get("/v1/feature-flags/tmp")[0] == 404


def test_scopes(start):
    d = start()
    assert d.get("/v1/feature-flags", token=None)[0] == 401
    assert d.get("/v1/feature-flags", token="wrong")[0] == 401
    assert d.get("/v1/feature-flags", token=READ_TOKEN)[0] == 200
    assert seed_post(d, "s", 10, token=READ_TOKEN)[0] == 403
    assert seed_post(d, "s", 10, token=EVAL_TOKEN)[0] == 403
    assert seed_post(d, "s", 10, token=FLAGS_TOKEN)[0] == 201
    assert d.put("/v1/feature-flags/s", {}, token=READ_TOKEN)[0] == 403
    assert d.delete("/v1/feature-flags/s", token=READ_TOKEN)[0] == 403
    assert d.post("/v1/feature-flags/exclude", {"feature": "s", "nodes": ["a"]},
                  token=READ_TOKEN)[0] == 403
    assert ofrep(d, "s", {"nodeId": "a"}, token=None)[0] == 401
    assert ofrep(d, "s", {"nodeId": "a"}, token=READ_TOKEN)[0] == 403
    assert ofrep(d, "s", {"nodeId": "a"}, token=FLAGS_TOKEN)[0] == 403
    assert ofrep(d, "s", {"nodeId": "a"}, token=EVAL_TOKEN)[0] == 200
    assert ofrep(d, "s", {"nodeId": "a"}, token=ADMIN_TOKEN)[0] == 200
    assert d.post("/ofrep/v1/evaluate/flags", {}, token=None)[0] == 401
    assert d.post("/ofrep/v1/evaluate/flags", {}, token=READ_TOKEN)[0] == 403


def test_evaluate_public(start):
    d = start(extra_admin="  evaluate_public: true\n")
    assert ofrep(d, "from_config", {"targetingKey": "u1"}, token=None)[0] == 200
    assert d.post("/ofrep/v1/evaluate/flags", {}, token=None)[0] == 200
    assert d.get("/v1/feature-flags", token=None)[0] == 401


# ---------------------------------------------------------------------------- OFREP


def test_ofrep_single(start):
    d = start()
    seed_post(d, "dwcp_v3_hde", 100)
    st, r = ofrep(d, "dwcp_v3_hde", {"nodeId": "node-9"})
    assert st == 200 and r == {"key": "dwcp_v3_hde", "value": True, "reason": "SPLIT",
                               "variant": "on"}
    st, r = ofrep(d, "from_config", {"targetingKey": "x", "email": "a@novacron.io"})
    assert st == 200 and r["reason"] == "TARGETING_MATCH" and r["value"] is True
    d.put("/v1/feature-flags/obj", {"variants": {"blue": {"hex": "#00f", "w": 0.5},
                                                 "none": None},
                                    "off_variant": "none", "rollout": {"blue": 100}})
    st, r = ofrep(d, "obj", None)
    assert st == 200 and r["value"] == {"hex": "#00f", "w": 0.5} and r["variant"] == "blue"
    # errors: FLAG_NOT_FOUND 404, the others 400, shape {key, errorCode, errorDetails}
    st, r = ofrep(d, "nope", {})
    assert st == 404 and r["errorCode"] == "FLAG_NOT_FOUND" and r["key"] == "nope"
    assert r["errorDetails"]
    seed_post(d, "dwcp_v3_hde", 10)
    st, r = ofrep(d, "dwcp_v3_hde", {"targetingKey": "node-9"})
    assert st == 400 and r["errorCode"] == "TARGETING_KEY_MISSING" and "nodeId" in r["errorDetails"]
    assert set(r) == {"key", "errorCode", "errorDetails"}
    st, r = ofrep(d, "dwcp_v3_hde", None, raw={"context": ["a"]})
    assert st == 400 and r["errorCode"] == "INVALID_CONTEXT"
    st, r = ofrep(d, "dwcp_v3_hde", {"targetingKey": {"a": 1}})
    assert st == 400 and r["errorCode"] == "INVALID_CONTEXT"
    st, r = ofrep(d, "dwcp_v3_hde", None, raw=b'{"context": {')
    assert st == 400 and r["errorCode"] == "PARSE_ERROR" and r["key"] == "dwcp_v3_hde"
    # no body at all is the empty context
    st, _, raw = http("POST", d.url + "/ofrep/v1/evaluate/flags/dwcp_v3_hde",
                      token=EVAL_TOKEN)
    assert st == 400 and json.loads(raw)["errorCode"] == "TARGETING_KEY_MISSING"


def test_ofrep_bulk_etag_and_304(start):
    d = start()
    seed_post(d, "a", 100)
    seed_post(d, "b", 10)
    url = d.url + "/ofrep/v1/evaluate/flags"
    st, h, raw = http("POST", url, {"context": {"nodeId": "n1", "targetingKey": "n1"}},
                      token=EVAL_TOKEN)
    assert st == 200
    doc = json.loads(raw)
    byk = {f["key"]: f for f in doc["flags"]}
    assert set(byk) == {"from_config", "a", "b"}
    assert byk["a"]["value"] is True and byk["a"]["reason"] == "SPLIT"
    etag = h["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    st, h2, raw = http("POST", url, {"context": {"nodeId": "n1", "targetingKey": "n1"}},
                       token=EVAL_TOKEN, headers={"If-None-Match": etag})
    assert st == 304 and raw == b"" and h2["ETag"] == etag
    st, _, _ = http("POST", url, {"context": {"nodeId": "n1", "targetingKey": "n1"}},
                    token=EVAL_TOKEN, headers={"If-None-Match": f'"x", W/{etag}'})
    assert st == 304
    # another context is another answer
    st, h3, _ = http("POST", url, {"context": {"nodeId": "n2"}}, token=EVAL_TOKEN,
                     headers={"If-None-Match": etag})
    assert st == 200 and h3["ETag"] != etag
    # a change is a new answer
    seed_post(d, "a", 0)
    st, h4, raw = http("POST", url, {"context": {"nodeId": "n1", "targetingKey": "n1"}},
                       token=EVAL_TOKEN, headers={"If-None-Match": etag})
    assert st == 200 and h4["ETag"] != etag
    assert {f["key"]: f for f in json.loads(raw)["flags"]}["a"]["value"] is False
    # per-flag errors inside a 200, request errors as 400 {errorCode, errorDetails}
    st, _, raw = http("POST", url, {"context": {}}, token=EVAL_TOKEN)
    f = {x["key"]: x for x in json.loads(raw)["flags"]}
    assert st == 200 and f["b"]["errorCode"] == "TARGETING_KEY_MISSING"
    st, _, raw = http("POST", url, b"[1,", token=EVAL_TOKEN)
    assert st == 400 and json.loads(raw)["errorCode"] == "PARSE_ERROR"
    st, _, raw = http("POST", url, {"context": 7}, token=EVAL_TOKEN)
    assert st == 400 and json.loads(raw)["errorCode"] == "INVALID_CONTEXT"


def test_metrics(start):
    d = start()
    seed_post(d, "m", 100)
    for _ in range(3):
        ofrep(d, "m", {"nodeId": "x"})
    ofrep(d, "nope", {})
    m = scrape(d)
    assert metric(m, "canaryd_flag_evaluations_total", flag="m", variant="on") == 3
    assert metric(m, "canaryd_flag_evaluation_errors_total", code="FLAG_NOT_FOUND") == 1
    assert metric(m, "canaryd_stream_subscribers") == 0
    assert metric(m, "canaryd_flags_revision") == d.get("/v1/feature-flags")[1]["revision"]


# ---------------------------------------------------------------------------- state


def test_persisted_across_restart_and_audited(start):
    d = start()
    seed_post(d, "dwcp_v3_hde", 10, token=FLAGS_TOKEN)
    d.post("/v1/feature-flags/exclude", {"feature": "dwcp_v3_hde", "nodes": ["node-123"]},
           token=FLAGS_TOKEN)
    d.post("/v1/feature-flags", {"feature": "from_config", "percentage": 40})
    st, before = d.get("/v1/feature-flags")
    d.proc.stop()
    d2 = start()
    st, after = d2.get("/v1/feature-flags")
    assert st == 200
    strip = lambda doc: [{k: v for k, v in f.items()} for f in doc["flags"]]  # noqa: E731
    assert strip(after) == strip(before)
    assert after["revision"] >= before["revision"]
    f = {x["key"]: x for x in after["flags"]}
    assert f["from_config"]["percentage"] == 40 and f["from_config"]["source"] == "api"
    assert f["dwcp_v3_hde"]["exclude"] == ["node-123"]
    ev = events_of(d2)
    kinds = [(e["kind"], e["actor"], e["subject"]) for e in ev]
    assert ("flag.created", "flagger", "flag/dwcp_v3_hde") in kinds
    assert ("flag.excluded", "flagger", "flag/dwcp_v3_hde") in kinds
    assert ("flag.updated", "ops", "flag/from_config") in kinds
    ex = [e for e in ev if e["kind"] == "flag.excluded"][0]["details"]
    assert ex["before"]["exclude"] == [] and ex["after"]["exclude"] == ["node-123"]
    assert ex["nodes"] == ["node-123"]
    cr = [e for e in ev if e["kind"] == "flag.created"][0]["details"]
    assert cr["before"] is None and cr["after"]["rollout"] == {"on": 10}
    # a repeated identical call changes nothing and records nothing
    n = len(events_of(d2))
    st, doc = seed_post(d2, "dwcp_v3_hde", 10)
    assert st == 200 and len(events_of(d2)) == n and doc["revision"] == after["revision"]


# ---------------------------------------------------------------------------- stream


class SSE:
    def __init__(self, d, token=ADMIN_TOKEN, last_event_id=None):
        self.s = socket.create_connection(("127.0.0.1", d.admin_port), timeout=5)
        hdrs = f"GET /v1/feature-flags/stream HTTP/1.1\r\nHost: x\r\n" \
               f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n"
        if last_event_id is not None:
            hdrs += f"Last-Event-ID: {last_event_id}\r\n"
        self.s.sendall((hdrs + "\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._read(5)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split()[1])
        self.headers = head.decode()
        self.chunked = b"chunked" in head.lower()
        self.raw = b""

    def _read(self, timeout):
        self.s.settimeout(timeout)
        b = self.s.recv(65536)
        if not b:
            raise EOFError("stream closed")
        self.buf += b

    def _dechunk(self):
        while True:
            if not self.chunked:
                self.raw += self.buf
                self.buf = b""
                return
            if b"\r\n" not in self.buf:
                return
            size_line, rest = self.buf.split(b"\r\n", 1)
            size = int(size_line, 16)
            if len(rest) < size + 2:
                return
            self.raw += rest[:size]
            self.buf = rest[size + 2:]

    def next(self, timeout=5.0, comments=False):
        """The next event as dict(id, event, data) or, with comments, {"comment": text}."""
        deadline = time.monotonic() + timeout
        while True:
            self._dechunk()
            while b"\n\n" in self.raw:
                block, self.raw = self.raw.split(b"\n\n", 1)
                ev = {}
                for line in block.decode().split("\n"):
                    if line.startswith(":"):
                        if comments:
                            return {"comment": line[1:].strip()}
                        continue
                    k, _, v = line.partition(": ")
                    if k == "data":
                        ev["data"] = ev.get("data", "") + v
                    else:
                        ev[k] = v
                if ev:
                    if "data" in ev:
                        ev["json"] = json.loads(ev["data"])
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no event")
            self._read(left)

    def close(self):
        self.s.close()


def test_stream_ruleset_changes_resume_and_heartbeat(start):
    d = start()
    seed_post(d, "dwcp_v3_hde", 10)
    sub = SSE(d)
    assert sub.status == 200 and "text/event-stream" in sub.headers
    first = sub.next()
    assert first["event"] == "ruleset"
    rs = first["json"]
    assert int(first["id"]) == rs["revision"]
    assert [f["key"] for f in rs["flags"]] == ["from_config", "dwcp_v3_hde"]
    assert rs["segments"] == [{"name": "internal", "match": [
        {"attr": "email", "op": "ends_with", "values": ["@novacron.io"]}]}]
    assert rs["flags"][1] == {"key": "dwcp_v3_hde", "description": "", "enabled": True,
                              "variants": {"on": True, "off": False}, "off_variant": "off",
                              "sticky": "nodeId", "rules": [], "rollout": {"on": 10},
                              "exclude": [], "include": []}
    # a change arrives with id = the revision the API reports
    st, doc = seed_post(d, "dwcp_v3_hde", 25)
    ch = sub.next()
    assert ch["event"] == "change" and int(ch["id"]) == doc["revision"]
    assert ch["json"]["revision"] == doc["revision"] and ch["json"]["key"] == "dwcp_v3_hde"
    assert ch["json"]["flag"]["rollout"] == {"on": 25}
    st, doc2 = d.post("/v1/feature-flags/exclude", {"feature": "dwcp_v3_hde", "nodes": ["n1"]})
    ch2 = sub.next()
    assert int(ch2["id"]) == doc2["revision"] and ch2["json"]["flag"]["exclude"] == ["n1"]
    seed_post(d, "gone", 5)
    ch3 = sub.next()
    st, _ = d.delete("/v1/feature-flags/gone")
    ch4 = sub.next()
    assert ch4["json"]["key"] == "gone" and ch4["json"]["flag"] is None
    # heartbeats (CANARYD_SSE_HEARTBEAT_MS=200)
    assert sub.next(timeout=2, comments=True) == {"comment": "hb"}
    sub.close()
    # resume from the ruleset: exactly the changes after it, in order
    r = SSE(d, last_event_id=first["id"])
    got = [r.next()["id"] for _ in range(4)]
    assert got == [ch["id"], ch2["id"], ch3["id"], ch4["id"]]
    with pytest.raises(TimeoutError):
        r.next(timeout=0.5)
    r.close()
    # resume from the latest: nothing to send; a change arrives
    r = SSE(d, last_event_id=ch4["id"])
    with pytest.raises(TimeoutError):
        r.next(timeout=0.5)
    seed_post(d, "dwcp_v3_hde", 30)
    assert r.next()["event"] == "change"
    r.close()
    # an unknown or unusable id gets the full ruleset
    for bad in ("99999999", "abc", "0"):
        r = SSE(d, last_event_id=bad)
        e = r.next()
        assert e["event"] == "ruleset", bad
        r.close()


def test_stream_resume_after_restart_and_config_reload(start):
    d = start()
    seed_post(d, "x", 10)
    sub = SSE(d)
    rev = sub.next()["id"]
    sub.close()
    d.proc.stop()
    d = start()
    # nothing changed while it was down: resuming sends nothing
    r = SSE(d, last_event_id=rev)
    with pytest.raises(TimeoutError):
        r.next(timeout=0.5)
    # a reload that changes the config's flags: every subscriber gets a new ruleset
    with open(d.config_path) as f:
        text = f.read()
    with open(d.config_path, "w") as f:
        f.write(text.replace("12.345", "20"))
    d.proc.signal(signal.SIGHUP)
    e = r.next()
    assert e["event"] == "ruleset" and int(e["id"]) > int(rev)
    assert e["json"]["flags"][0]["rollout"] == {"on": 20}
    r.close()
    # a resume from before the reload gets the full ruleset
    r = SSE(d, last_event_id=rev)
    assert r.next()["event"] == "ruleset"
    r.close()
    # a reload that would break an API flag (its segment removed) is refused
    d.put("/v1/feature-flags/seg", {"rules": [{"segment": "internal", "serve": "on"}]})
    with open(d.config_path) as f:
        text = f.read()
    broken = text.split("segments:")[0] + "flags: {}\n"
    with open(d.config_path, "w") as f:
        f.write(broken)
    st, doc = d.post("/v1/config/reload")
    assert st == 422 and "seg" in doc["error"]["message"]
    assert ofrep(d, "seg", {"email": "a@novacron.io"})[1]["value"] is True


def test_stream_delivers_a_change_to_100_subscribers(start):
    d = start()
    subs = [SSE(d, token=READ_TOKEN) for _ in range(100)]
    for s in subs:
        assert s.next()["event"] == "ruleset"
    assert metric(scrape(d), "canaryd_stream_subscribers") == 100
    st, doc = seed_post(d, "fanout", 5)
    for s in subs:
        e = s.next()
        assert e["event"] == "change" and int(e["id"]) == doc["revision"]
        s.close()
    wait_until(lambda: metric(scrape(d), "canaryd_stream_subscribers") == 0, 5,
               what="subscribers gone")


def test_stream_needs_read_scope(start):
    d = start()
    st, _, _ = http("GET", d.url + "/v1/feature-flags/stream", timeout=2)
    assert st == 401


# ---------------------------------------------------------------------------- canaryctl


def ctl(d, *args, token=ADMIN_TOKEN):
    env = dict(os.environ, CANARYD_TOKEN=token)
    r = subprocess.run([bin_path("canaryctl"), "--server", d.url, *args], capture_output=True,
                       text=True, env=env, timeout=20)
    return r.returncode, r.stdout, r.stderr


def test_canaryctl_flags_verbs(start):
    d = start()
    # a flag that does not exist is created only when asked (a typo must not create one)
    rc, out, err = ctl(d, "flags", "set", "dwcp_v3_hde", "--percentage", "10")
    assert rc == 1 and "--create" in err
    assert d.get("/v1/feature-flags/dwcp_v3_hde")[0] == 404
    rc, out, err = ctl(d, "flags", "set", "dwcp_v3_hde", "--percentage", "10", "--create")
    assert rc == 0, err
    assert "dwcp_v3_hde" in out and "10%" in out
    rc, out, _ = ctl(d, "flags", "list")
    assert rc == 0 and "from_config" in out and "12.345%" in out and "dwcp_v3_hde" in out
    rc, out, _ = ctl(d, "-o", "json", "flags", "get", "dwcp_v3_hde")
    assert rc == 0 and json.loads(out)["percentage"] == 10
    rc, out, _ = ctl(d, "flags", "exclude", "dwcp_v3_hde", "--nodes", "node-123,node-456")
    assert rc == 0 and "node-123,node-456" in out
    assert d.get("/v1/feature-flags/dwcp_v3_hde")[1]["exclude"] == ["node-123", "node-456"]
    rc, out, _ = ctl(d, "flags", "set", "dwcp_v3_hde", "--percentage", "12.5",
                     "--enabled=false")
    assert rc == 0
    doc = d.get("/v1/feature-flags/dwcp_v3_hde")[1]
    assert doc["percentage"] == 12.5 and doc["enabled"] is False
    rc, _, _ = ctl(d, "flags", "set", "dwcp_v3_hde", "--enabled")
    assert rc == 0 and d.get("/v1/feature-flags/dwcp_v3_hde")[1]["enabled"] is True
    rc, out, _ = ctl(d, "flags", "kill", "dwcp_v3_hde")
    assert rc == 0 and d.get("/v1/feature-flags/dwcp_v3_hde")[1]["enabled"] is False
    assert ofrep(d, "dwcp_v3_hde", {"nodeId": "a"})[1]["reason"] == "DISABLED"
    # failures and usage errors
    rc, _, err = ctl(d, "flags", "kill", "nope")
    assert rc == 1 and "404" in err
    assert d.get("/v1/feature-flags/nope")[0] == 404
    rc, _, err = ctl(d, "flags", "set", "dwcp_v3_hde", "--percentage", "1", token=READ_TOKEN)
    assert rc == 1 and "403" in err
    rc, _, err = ctl(d, "flags", "set", "x")
    assert rc == 2
    assert err.startswith("canaryctl: flags set needs --percentage and/or --enabled\n"), err
    assert "usage: canaryctl flags list\n  flags get NAME" in err
    rc, _, err = ctl(d, "flags", "set", "x", "--percentage", "101")
    assert rc == 2
    assert err.startswith('canaryctl: --percentage takes 0..100 with at most 3 decimals, '
                          'not "101"\n'), err
    assert ctl(d, "flags", "exclude", "x")[0] == 2
    assert ctl(d, "flags", "get", "bad name")[0] == 2
    assert ctl(d, "flags", "frobnicate", "x")[0] == 2


def test_stream_drops_a_subscriber_that_does_not_read(start):
    d = start()
    slow = SSE(d)
    slow.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    nodes = [f"hypervisor-node-{i:06d}" for i in range(3000)]  # ~80 KB per change event
    d.put("/v1/feature-flags/big", {"exclude": nodes})

    def dropped():
        for p in range(1, 100):
            st, _ = d.put("/v1/feature-flags/big", {"exclude": nodes, "rollout": {"on": p}})
            assert st == 200
            m = scrape(d)
            if metric(m, "canaryd_stream_dropped_total"):
                return m
        return None

    m = dropped()
    assert m, "the subscriber that does not read was never dropped"
    assert metric(m, "canaryd_stream_dropped_total") == 1
    # the dropped connection is freed at the end of the loop turn that dropped it
    # (deferred close), which a scrape in the same turn can precede
    wait_until(lambda: metric(scrape(d), "canaryd_stream_subscribers") == 0, 5,
               what="the dropped subscriber is no longer counted")
    assert metric(scrape(d), "canaryd_stream_dropped_total") == 1
    # a subscriber that reads is unaffected
    fresh = SSE(d)
    assert fresh.next()["event"] == "ruleset"
    fresh.close()
    slow.close()


def test_stream_ruleset_past_the_backlog_cap_arrives_whole(start):
    """A ruleset larger than the 1 MiB subscriber backlog is streamed in chunks as the
    subscriber reads (it used to be cut off: headers, then a closed stream), and a change
    made while it is still being written follows it."""
    n = 700
    desc = "d" * 1800  # ~1.9 KB per flag: the ruleset is ~1.3 MiB
    # the text goes through str.format: braces doubled
    body = BODY + "".join(f"  big{i:04d}: {{{{description: {desc}, rollout: {{{{\"on\": 5}}}}}}}}\n"
                          for i in range(n))
    d = start(body=body)
    sub = SSE(d)
    # a small receive window and no reading for a while: the server must wait, not drop
    # (much smaller, and TCP's zero-window probing makes the test slow, not the server)
    sub.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    st, _ = seed_post(d, "late", 30)
    assert st == 201
    time.sleep(0.5)
    ev = sub.next(timeout=20)
    assert ev["event"] == "ruleset"
    assert len(ev["data"]) > (1 << 20)
    keys = [f["key"] for f in ev["json"]["flags"]]
    assert len(keys) == n + 1 + ("late" in keys)
    assert keys[1:4] == ["big0000", "big0001", "big0002"]
    assert all(f["description"] == desc for f in ev["json"]["flags"][1:n + 1])
    assert ev["json"]["segments"][0]["name"] == "internal"
    if "late" not in keys:  # committed after the ruleset's snapshot: it follows as a change
        ch = sub.next(timeout=5)
        assert ch["event"] == "change" and ch["json"]["key"] == "late"
        assert int(ch["id"]) > int(ev["id"])
    # and later changes keep coming
    st, _ = seed_post(d, "later", 40)
    assert st == 201
    ch = sub.next(timeout=5)
    while ch.get("event") != "change" or ch["json"]["key"] != "later":
        ch = sub.next(timeout=5)
    assert ch["json"]["flag"]["rollout"]["on"] == 40
    assert metric(scrape(d), "canaryd_stream_dropped_total") == 0
    sub.close()
