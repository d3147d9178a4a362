"""The store as an operator sees it: /v1/health/detailed, a PostgreSQL outage
(writes answer 503 store_unavailable, reads and flag evaluation keep the last
state, the daemon reconnects by itself), and `canaryd --check` on store URLs.
Each outage test starts its own throwaway PostgreSQL (tests/pg/pg-run), so it
runs in the sqlite pass as well."""
import os
import subprocess

import pytest

from conftest import (ADMIN_TOKEN, BASE_ADMIN, PG_RUN, STORE_BACKEND, bin_path, wait_until)


def store_health(d):
    st, doc = d.get("/v1/health/detailed")
    assert st == 200, doc
    return doc["components"]["store"]


def test_health_names_the_backend_and_says_available(canaryd):
    d = canaryd()
    s = store_health(d)
    assert s["backend"] == STORE_BACKEND
    assert s["status"] == "ok" and s["available"] is True and s["error"] is None
    assert s["schema_version"] == 3


@pytest.fixture
def private_pg():
    """A PostgreSQL of this test's own: (url, dir); stopped and removed after."""
    r = subprocess.run([PG_RUN, "start"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    env = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    try:
        yield env["CANARYD_TEST_PG_URL"], env["CANARYD_TEST_PG_DIR"]
    finally:
        subprocess.run([PG_RUN, "stop", env["CANARYD_TEST_PG_DIR"]], timeout=120)


def pg_ctl(verb, pgdir):
    r = subprocess.run([PG_RUN, verb, pgdir], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_postgres_outage_refuses_writes_keeps_serving_and_recovers(canaryd, private_pg):
    url, pgdir = private_pg
    header = BASE_ADMIN.replace("store: sqlite:{workdir}/canaryd.db", "store: " + url)
    d = canaryd(header + "flags:\n  cfg: {{rollout: {{\"on\": 50}}}}\n", header=False)
    st, doc = d.post("/v1/feature-flags", {"feature": "f1", "percentage": 5})
    assert st == 201, doc

    pg_ctl("pause", pgdir)  # the database goes away
    st, doc = d.post("/v1/feature-flags", {"feature": "f1", "percentage": 6})
    assert st == 503, doc
    assert doc["error"]["code"] == "store_unavailable", doc
    assert "canaryd-test-pw" not in doc["error"]["message"]
    s = store_health(d)
    assert s["status"] == "unavailable" and s["available"] is False, s
    assert s["backend"] == "postgres" and s["error"], s
    assert "canaryd-test-pw" not in s["error"]
    # the last state is still served: the flag as it was, evaluation too
    st, doc = d.get("/v1/feature-flags/f1")
    assert st == 200 and doc["percentage"] == 5, doc
    st, doc = d.get("/v1/feature-flags/cfg")
    assert st == 200, doc

    pg_ctl("resume", pgdir)  # back on the same port: canaryd reconnects on its own

    def write_ok():
        return d.post("/v1/feature-flags", {"feature": "f1", "percentage": 7})[0] == 200

    wait_until(write_ok, 20, 0.1, what="a write after the database came back")
    s = store_health(d)
    assert s["status"] == "ok" and s["available"] is True, s
    st, doc = d.get("/v1/feature-flags/f1")
    assert st == 200 and doc["percentage"] == 7, doc
    # the refused change was never written: only the create and the last update
    st, evs = d.get("/v1/events?limit=1000")
    assert st == 200, evs
    evs = evs["events"] if isinstance(evs, dict) else evs
    changes = [e for e in evs if e["subject"] == "flag/f1"]
    assert [e["details"].get("after", {}).get("rollout") for e in changes][-1] == {"on": 7}, changes
    assert len(changes) == 2, changes


def check(tmp_path, store_line):
    cfg = tmp_path / "canaryd.yaml"
    cfg.write_text(f"""admin:
  listen: 127.0.0.1:9
  tokens: [{{name: ops, secret: x, scopes: [admin]}}]
{store_line}
""")
    r = subprocess.run([bin_path("canaryd"), "-c", str(cfg), "--check"], capture_output=True,
                       text=True, timeout=30, env={"PGPW": "s3cret-from-env"})
    return r.returncode, r.stdout + r.stderr, str(cfg)


def test_check_reports_store_urls_it_cannot_use(tmp_path):
    rc, out, cfg = check(tmp_path, "store: postgres://canary:s3cret@db.example:5432/canary")
    assert rc == 0, out
    rc, out, cfg = check(tmp_path, "store: postgres://canary:${PGPW}@db.example/canary")
    assert rc == 0, out
    for bad, why in (("postgres://canary:s3cret@db.example:54x32/canary", "invalid port"),
                     ("postgresql://canary:s3cret@db.example/canary?nosuch=1", "nosuch"),
                     ("postgres://canary@db.example/canary?password_file=/nonexistent/pw",
                      "/nonexistent/pw")):
        rc, out, cfg = check(tmp_path, "store: " + bad)
        assert rc == 1, (bad, out)
        assert f"{cfg}:4: store: postgres URL cannot be parsed" in out or \
            f"{cfg}:4: store: postgres: password_file" in out, (bad, out)
        assert why in out, (bad, out)
        assert "s3cret" not in out, out
    rc, out, cfg = check(tmp_path, "store: mysql://db/canary")
    assert rc == 1 and f"{cfg}:4: store:" in out, out
