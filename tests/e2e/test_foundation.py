"""Foundation: the daemon starts, answers health, enforces scopes, rejects bad
configs with file:line messages, records events, reloads and stops cleanly."""
import os
import signal
import subprocess

from conftest import (ADMIN_TOKEN, FLAGS_TOKEN, READ_TOKEN, bin_path, http, http_json,
                      raw_request, wait_until)


def test_starts_and_answers_health(canaryd):
    d = canaryd()
    status, doc = d.get("/v1/health", token=None)
    assert status == 200 and doc == {"status": "ok"}
    status, doc = d.get("/v1/health/detailed")
    assert status == 200
    assert doc["components"]["store"]["status"] == "ok"
    assert doc["config_revision"] == 1


def test_scopes_401_403_200(canaryd):
    d = canaryd()
    # no token, bad token -> 401 with the SPEC error shape
    status, doc = d.get("/v1/health/detailed", token=None)
    assert status == 401 and doc["error"]["code"] == "unauthorized"
    status, doc = d.get("/v1/events", token="wrong-token")
    assert status == 401
    # read scope may read
    assert d.get("/v1/events", token=READ_TOKEN)[0] == 200
    assert d.get("/v1/events", token=FLAGS_TOKEN)[0] == 200
    status, hdrs, body = http("GET", d.url + "/metrics", token=READ_TOKEN)
    assert status == 200 and b"canaryd_config_revision" in body
    # read and flags:write tokens lack admin: 403 naming the scope; admin may reload
    status, doc = d.post("/v1/config/reload", None, token=READ_TOKEN)
    assert status == 403 and doc["error"]["code"] == "forbidden" and "admin" in doc["error"]["message"]
    assert d.post("/v1/config/reload", None, token=FLAGS_TOKEN)[0] == 403
    status, doc = d.post("/v1/config/reload", None, token=ADMIN_TOKEN)
    assert status == 200 and doc == {"status": "reloaded", "config_revision": 2}
    # unknown path and wrong method
    assert d.get("/v1/nope")[0] == 404
    status, doc = d.post("/v1/health/detailed", {})
    assert status == 405 and doc["error"]["code"] == "method_not_allowed"


def test_public_read_opens_reads_only(canaryd):
    # default: reads need a token
    d = canaryd()
    assert d.get("/v1/events", token=None)[0] == 401
    d.proc.stop()
    header = """admin:
  listen: 127.0.0.1:{admin_port}
  public_read: true
  tokens:
    - name: ops
      secret: ${{E2E_ADMIN_TOKEN}}
      scopes: [admin]
store: sqlite:{workdir}/canaryd.db
workers: 1
"""
    d = canaryd(body=header, header=False)
    assert d.get("/v1/events", token=None)[0] == 200
    assert d.get("/v1/health/detailed", token=None)[0] == 200
    # a write is never public, even with public_read
    status, doc = d.post("/v1/config/reload", None, token=None)
    assert status == 401 and doc["error"]["code"] == "unauthorized"


def test_bad_config_exits_1_with_file_line_messages(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "admin:\n"
        "  listen: 127.0.0.1:99999\n"
        "workers: lots\n"
        "services:\n"
        "  web:\n"
        "    versions:\n"
        "      v1: {endpoints: [127.0.0.1:7000]}\n"
        "    stable: v9\n"
        "    colour: blue\n")
    r = subprocess.run([bin_path("canaryd"), "--check", "-c", str(cfg)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1
    err = r.stderr + r.stdout
    assert f"{cfg}:2: admin.listen:" in err
    assert f"{cfg}:3: workers:" in err
    assert f"{cfg}:8: services.web.stable:" in err
    assert f"{cfg}:9: services.web.colour: unknown key" in err
    # starting with the same file fails the same way, before binding anything
    r2 = subprocess.run([bin_path("canaryd"), "-c", str(cfg)], capture_output=True, text=True,
                        timeout=10)
    assert r2.returncode == 1
    assert f"{cfg}:8: services.web.stable:" in r2.stderr


def test_check_ok_prints_summary(tmp_path):
    cfg = os.path.join(os.environ.get("CANARYD_SRC_DIR", "."), "examples/quickstart/canaryd.yaml")
    env = dict(os.environ, CANARYD_ADMIN_TOKEN="x", CANARYD_READ_TOKEN="y")
    r = subprocess.run([bin_path("canaryd"), "--check", "-c", cfg], capture_output=True,
                       text=True, timeout=10, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{cfg}: ok: "), r.stdout
    assert "listener" in r.stdout and "service" in r.stdout


def test_sigterm_exits_cleanly(canaryd):
    d = canaryd()
    d.proc.signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0


def test_events_recorded_and_listed(canaryd):
    d = canaryd()
    status, doc = d.get("/v1/events")
    assert status == 200
    kinds = [e["kind"] for e in doc["events"]]
    assert "config.loaded" in kinds
    first = doc["events"][0]
    assert first["actor"] == "canaryd" and first["id"] >= 1 and first["ts"].endswith("Z")
    # a reload is an event too; since= pages
    last_id = doc["events"][-1]["id"]
    d.proc.signal(signal.SIGHUP)

    def reloaded():
        s, dd = d.get(f"/v1/events?since={last_id}")
        return [e for e in dd["events"] if e["kind"] == "config.reloaded"]

    ev = wait_until(reloaded, 10, what="config.reloaded event")
    assert ev[0]["id"] > last_id
    s, dd = d.get("/v1/health/detailed")
    assert dd["config_revision"] >= 2
    assert d.get("/v1/events?since=abc")[1]["error"]["field"] == "since"


def test_reload_with_bad_config_keeps_running(canaryd):
    d = canaryd()
    with open(d.config_path, "a") as f:
        f.write("bogus_key: 1\n")
    d.proc.signal(signal.SIGHUP)

    def failed():
        s, dd = d.get("/v1/events")
        return [e for e in dd["events"] if e["kind"] == "config.reload_failed"]

    ev = wait_until(failed, 10, what="config.reload_failed event")
    assert "bogus_key" in str(ev[0]["details"])
    assert ev[0]["actor"] == "canaryd" and ev[0]["subject"] == d.config_path
    assert d.get("/v1/health")[0] == 200
    # the running configuration is kept: no new revision
    assert d.get("/v1/health/detailed")[1]["config_revision"] == 1


def test_events_survive_restart(canaryd, procs):
    d = canaryd()
    s, doc = d.get("/v1/events")
    n = len(doc["events"])
    d.proc.stop()
    d2 = canaryd()  # same workdir, same database file
    s, doc2 = d2.get("/v1/events")
    assert len(doc2["events"]) > n


def test_malformed_http_on_admin_gets_4xx(canaryd):
    d = canaryd()
    resp = raw_request(d.admin_port, b"GET /v1/health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 400")
    resp = raw_request(d.admin_port,
                       b"POST /v1/events HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 400")
    # the daemon is still fine
    assert d.get("/v1/health")[0] == 200


def test_canaryctl_status_and_check_config(canaryd, tmp_path):
    d = canaryd()
    env = dict(os.environ, CANARYD_TOKEN=ADMIN_TOKEN)
    r = subprocess.run([bin_path("canaryctl"), "--server", d.url, "status"], capture_output=True,
                       text=True, timeout=10, env=env)
    assert r.returncode == 0, r.stderr
    assert "store" in r.stdout
    r = subprocess.run([bin_path("canaryctl"), "--server", d.url, "-o", "json", "status"],
                       capture_output=True, text=True, timeout=10, env=env)
    assert r.returncode == 0 and r.stdout.lstrip().startswith("{")
    # bad token -> exit 1, usage error -> exit 2
    r = subprocess.run([bin_path("canaryctl"), "--server", d.url, "--token", "nope", "status"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "401" in (r.stderr + r.stdout)
    r = subprocess.run([bin_path("canaryctl"), "frobnicate"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2
    bad = tmp_path / "x.yaml"
    bad.write_text("workers: -3\n")
    r = subprocess.run([bin_path("canaryctl"), "check-config", str(bad)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1 and f"{bad}:1: workers:" in (r.stderr + r.stdout)
