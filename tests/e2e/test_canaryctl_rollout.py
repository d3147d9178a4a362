"""canaryctl's rollout verbs end to end (SPEC sections 6-8): rollout list / get /
start / promote [--full] / pause / resume / abort / retry / approve, rollback --all,
watch and evidence, driven only through the canaryctl binary against a real canaryd
with demo-upstream versions.  Exit codes: 0 ok, 1 failed, 2 usage.

Every rollout owns its own service, so one daemon serves every scenario of a test.
The rollouts have no checks: they move only when canaryctl says so."""
import json
import os
import subprocess
import time

import pytest

from conftest import ADMIN_TOKEN, READ_TOKEN, bin_path, free_port, wait_until

VP_TOKEN = "e2e-vp-eng-secret"
INTERN_TOKEN = "e2e-intern-secret"

HEADER = """admin:
  listen: 127.0.0.1:{admin_port}
  tokens:
    - name: ops
      secret: ${{E2E_ADMIN_TOKEN}}
      scopes: [admin]
    - name: viewer
      secret: ${{E2E_READ_TOKEN}}
      scopes: [read]
    - name: vp-eng
      secret: ${{E2E_VP_TOKEN}}
      scopes: [read, approve]
    - name: intern
      secret: ${{E2E_INTERN_TOKEN}}
      scopes: [approve]
store: sqlite:{workdir}/canaryd.db
workers: 1
"""

# name -> steps (YAML flow sequences); each rollout gets its own service `svc-NAME`
PAUSE_STEPS = "[{weight: 10}, {pause: {}}, {weight: 50}]"
ROLLOUTS = {
    "web-v2": "[{weight: 10}, {pause: {}}, {weight: 50}, {pause: {}}, {weight: 100}]",
    "watch-v2": PAUSE_STEPS,
    "jwatch-v2": PAUSE_STEPS,
    "abort-v2": PAUSE_STEPS,
    "other-v2": PAUSE_STEPS,
    "approve-v2": "[{weight: 10}, {approval: {required: [ops, vp-eng]}}, {weight: 50}]",
}
# more YAML for some rollouts: watch waits for the rollback pipeline (drain etc.)
EXTRA = {"jwatch-v2": "    rollback: {drain: 1s}\n"}


def esc(text):
    """The canaryd fixture runs str.format on the body: protect YAML braces."""
    return text.replace("{", "{{").replace("}", "}}")


@pytest.fixture
def daemon(canaryd, upstream):
    v1, v2 = upstream("v1"), upstream("v2")
    proxy = free_port()
    body = ("listeners:\n  - name: public\n    listen: 127.0.0.1:%d\n    routes:\n"
            "      - match: {path_prefix: /}\n        service: svc-web-v2\n" % proxy)
    body += "services:\n"
    for name in ROLLOUTS:
        body += (f"  svc-{name}:\n    versions:\n"
                 f"      v1: {{endpoints: [127.0.0.1:{v1}]}}\n"
                 f"      v2: {{endpoints: [127.0.0.1:{v2}]}}\n"
                 f"    stable: v1\n")
    body += "rollouts:\n"
    for name, steps in ROLLOUTS.items():
        body += (f"  {name}:\n    target: {{service: svc-{name}, canary: v2}}\n"
                 f"    steps: {steps}\n" + EXTRA.get(name, ""))
    return canaryd(HEADER + esc(body), header=False,
                   extra_env={"E2E_VP_TOKEN": VP_TOKEN, "E2E_INTERN_TOKEN": INTERN_TOKEN})


def ctl_argv(server, args, token=ADMIN_TOKEN):
    argv = [bin_path("canaryctl"), "--server", server]
    if token:
        argv += ["--token", token]
    return argv + list(args)


def clean_env():
    env = dict(os.environ)
    env.pop("CANARYD_TOKEN", None)
    env.pop("CANARYD_SERVER", None)
    return env


def ctl(d, *args, token=ADMIN_TOKEN, timeout=20):
    server = d if isinstance(d, str) else d.url
    return subprocess.run(ctl_argv(server, args, token), capture_output=True, text=True,
                          timeout=timeout, env=clean_env())


def ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r.stdout


def live(d, name):
    """The live view, read through `canaryctl -o json rollout get`."""
    return json.loads(ok(ctl(d, "-o", "json", "rollout", "get", name)))


def wait_state(d, name, state, step=None, timeout=10):
    def reached():
        v = live(d, name)
        return v["state"] == state and (step is None or v["step"]["index"] == step) and v

    return wait_until(reached, timeout, 0.05, f"{name} {state} step {step}")


def weights(view):
    return {t["name"]: t["weight"] for t in view["targets"]}


# --------------------------------------------------------------------------


def test_list_and_get_show_the_rollouts(daemon):
    out = ok(ctl(daemon, "rollout", "list"))
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "STEP", "TARGETS", "LAST-VERDICT"]
    for name in ROLLOUTS:
        row = next(line for line in lines if line.startswith(name + " "))
        assert " idle " in row and f"svc-{name}=0%" in row, row
    assert "1/5 set" in out  # web-v2: step 1 of its 5 is next

    out = ok(ctl(daemon, "rollout", "get", "web-v2"))
    assert out.startswith("rollout web-v2: idle \u2014 step 1 of 5 (set, waiting)"), out
    assert "[....................] 0/5 steps done" in out
    assert "service svc-web-v2 -> v2" in out and "0%" in out
    assert "checks      none" in out

    # -o json before or after the verb: the server's JSON
    doc = json.loads(ok(ctl(daemon, "-o", "json", "rollout", "list")))
    assert sorted(r["name"] for r in doc["rollouts"]) == sorted(ROLLOUTS)
    doc = json.loads(ok(ctl(daemon, "rollout", "get", "approve-v2", "-o", "json")))
    assert doc["name"] == "approve-v2" and doc["state"] == "idle"
    assert doc["step"]["of"] == 3

    # unknown rollout: the server's 404, exit 1
    r = ctl(daemon, "rollout", "get", "nope")
    assert r.returncode == 1 and "404" in r.stderr and "nope" in r.stderr
    # a read token may read
    assert "web-v2" in ok(ctl(daemon, "rollout", "list", token=READ_TOKEN))


def test_start_pause_resume_promote_and_promote_full(daemon):
    out = ok(ctl(daemon, "rollout", "start", "web-v2"))
    assert "rollout web-v2: progressing" in out
    v = wait_state(daemon, "web-v2", "progressing", step=1)
    assert v["step"]["kind"] == "pause" and weights(v) == {"svc-web-v2": 10}
    out = ok(ctl(daemon, "rollout", "get", "web-v2"))
    assert "rollout web-v2: progressing \u2014 step 2 of 5 (pause, running)" in out, out
    assert "[####................] 1/5 steps done" in out
    assert "svc-web-v2=10%" in ok(ctl(daemon, "rollout", "list"))

    # start twice: the server's 409, exit 1
    r = ctl(daemon, "rollout", "start", "web-v2")
    assert r.returncode == 1 and "409" in r.stderr

    out = ok(ctl(daemon, "rollout", "pause", "web-v2"))
    assert "rollout web-v2: paused" in out
    out = ok(ctl(daemon, "rollout", "get", "web-v2"))
    assert out.startswith("rollout web-v2: paused"), out
    assert "paused      " in out  # the pause reason line
    r = ctl(daemon, "rollout", "pause", "web-v2")
    assert r.returncode == 1 and "409" in r.stderr
    ok(ctl(daemon, "rollout", "resume", "web-v2"))
    assert live(daemon, "web-v2")["state"] == "progressing"

    # promote finishes the pause {}: step 3 (50%) runs, then the second pause holds
    out = ok(ctl(daemon, "rollout", "promote", "web-v2"))
    v = wait_state(daemon, "web-v2", "progressing", step=3)
    assert v["step"]["kind"] == "pause" and weights(v) == {"svc-web-v2": 50}
    assert "step 4 of 5 (pause, running)" in ok(ctl(daemon, "rollout", "get", "web-v2"))

    # promote --full sends {"full": true}: straight to 100% and completed
    out = ok(ctl(daemon, "rollout", "promote", "web-v2", "--full"))
    assert "rollout web-v2: completed" in out, out
    v = live(daemon, "web-v2")
    assert v["state"] == "completed" and weights(v) == {"svc-web-v2": 100}
    out = ok(ctl(daemon, "rollout", "get", "web-v2"))
    assert "[####################] 5/5 steps done" in out and "100%" in out
    r = ctl(daemon, "rollout", "promote", "web-v2", "--full")
    assert r.returncode == 1 and "409" in r.stderr


def test_abort_retry_and_rollback_all(daemon):
    ok(ctl(daemon, "rollout", "start", "abort-v2"))
    wait_state(daemon, "abort-v2", "progressing", step=1)
    out = ok(ctl(daemon, "rollout", "abort", "abort-v2"))
    assert "rollout abort-v2: rolled_back" in out, out
    v = live(daemon, "abort-v2")
    assert v["state"] == "rolled_back" and weights(v) == {"svc-abort-v2": 0}
    out = ok(ctl(daemon, "rollout", "get", "abort-v2"))
    assert out.startswith("rollout abort-v2: rolled_back"), out
    assert "svc-abort-v2=0% (rolled back)" in ok(ctl(daemon, "rollout", "list"))

    # retry starts again from step 0
    out = ok(ctl(daemon, "rollout", "retry", "abort-v2"))
    wait_state(daemon, "abort-v2", "progressing", step=1)
    assert live(daemon, "abort-v2")["generation"] == 2

    # rollback without --all is a usage error that says --all is needed
    r = ctl(daemon, "rollback")
    assert r.returncode == 2 and "--all" in r.stderr
    assert live(daemon, "abort-v2")["state"] == "progressing"

    ok(ctl(daemon, "rollout", "start", "other-v2"))
    wait_state(daemon, "other-v2", "progressing", step=1)
    out = ok(ctl(daemon, "rollback", "--all"))
    assert out.startswith("rolled back 2 rollouts"), out
    for name in ("abort-v2", "other-v2"):
        v = live(daemon, name)
        assert v["state"] == "rolled_back" and weights(v) == {f"svc-{name}": 0}
    assert live(daemon, "web-v2")["state"] == "idle"  # idle ones are left alone

    doc = json.loads(ok(ctl(daemon, "-o", "json", "rollback", "--all")))
    assert doc["rolled_back"] == 0 and len(doc["rollouts"]) == len(ROLLOUTS)
    assert "nothing to roll back" in ok(ctl(daemon, "rollback", "--all"))
    # a read token may not roll back
    r = ctl(daemon, "rollback", "--all", token=READ_TOKEN)
    assert r.returncode == 1 and "403" in r.stderr


def test_approve_with_the_right_and_wrong_tokens(daemon):
    ok(ctl(daemon, "rollout", "start", "approve-v2"))
    wait_state(daemon, "approve-v2", "progressing", step=1)
    out = ok(ctl(daemon, "rollout", "get", "approve-v2"))
    assert "(approval, running)" in out
    assert "required ops, vp-eng; approved -; waiting for ops, vp-eng" in out, out

    # no approve scope; a wrong secret; approve scope but not a listed approver
    r = ctl(daemon, "rollout", "approve", "approve-v2", token=READ_TOKEN)
    assert r.returncode == 1 and "403" in r.stderr
    r = ctl(daemon, "rollout", "approve", "approve-v2", token="not-a-token")
    assert r.returncode == 1 and "401" in r.stderr
    r = ctl(daemon, "rollout", "approve", "approve-v2", token=INTERN_TOKEN)
    assert r.returncode == 1 and "403" in r.stderr and "intern" in r.stderr
    assert live(daemon, "approve-v2")["step"]["approvals"]["approved"] == []

    out = ok(ctl(daemon, "rollout", "approve", "approve-v2", token=VP_TOKEN))
    assert "approved by vp-eng" in out
    out = ok(ctl(daemon, "rollout", "get", "approve-v2"))
    assert "approved vp-eng; waiting for ops" in out, out
    assert live(daemon, "approve-v2")["state"] == "progressing"

    doc = json.loads(ok(ctl(daemon, "-o", "json", "rollout", "approve", "approve-v2")))
    assert "approved by ops" in doc["message"]
    v = wait_state(daemon, "approve-v2", "completed")
    assert weights(v) == {"svc-approve-v2": 50}


def test_watch_ends_with_0_when_the_rollout_completes(daemon):
    ok(ctl(daemon, "rollout", "start", "watch-v2"))
    wait_state(daemon, "watch-v2", "progressing", step=1)
    # stdout is a pipe, not a TTY: a new block only when something changed
    w = subprocess.Popen(ctl_argv(daemon.url, ["watch", "watch-v2", "--interval-ms", "50"]),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=clean_env())
    try:
        time.sleep(1.0)  # ~20 polls of an unchanged rollout
        assert w.poll() is None, w.communicate()
        ok(ctl(daemon, "rollout", "promote", "watch-v2"))
        out, err = w.communicate(timeout=15)
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
    assert w.returncode == 0, (out, err)
    assert "\x1b[" not in out  # no ANSI when not on a terminal
    assert "rollout watch-v2: progressing \u2014 step 2 of 3 (pause, running)" in out, out
    assert "rollout watch-v2: completed \u2014 step 3 of 3" in out, out
    assert "[######..............] 1/3 steps done" in out
    assert "[####################] 3/3 steps done" in out
    assert "svc-watch-v2 -> v2" in out and "10%" in out and "50%" in out
    assert out.count("rollout watch-v2:") <= 3, out  # not one block per poll

    # a finished rollout: one block and done at once
    r = ctl(daemon, "watch", "watch-v2")
    assert r.returncode == 0 and r.stdout.count("rollout watch-v2:") == 1


def test_watch_json_lines_and_exit_1_on_rollback(daemon):
    ok(ctl(daemon, "rollout", "start", "jwatch-v2"))
    wait_state(daemon, "jwatch-v2", "progressing", step=1)
    w = subprocess.Popen(
        ctl_argv(daemon.url, ["-o", "json", "watch", "jwatch-v2", "--interval-ms=50"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    try:
        time.sleep(0.5)
        ok(ctl(daemon, "rollout", "abort", "jwatch-v2"))
        out, err = w.communicate(timeout=15)
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
    assert w.returncode == 1, (out, err)
    docs = [json.loads(line) for line in out.splitlines()]
    assert docs[0]["state"] == "progressing" and docs[-1]["state"] == "rolled_back"
    assert all(a != b for a, b in zip(docs, docs[1:]))  # one line per change
    assert len(docs) <= 10, out  # not one line per 50 ms poll
    # with a rollback pipeline in the live view, watch waits for it to end
    if any("post" in doc for doc in docs):
        assert docs[-1]["post"]["stage"] == "done", docs[-1]
        assert any(doc["state"] == "rolled_back" and doc["post"]["stage"] != "done"
                   for doc in docs if "post" in doc), out


def test_watch_gives_up_when_the_server_is_gone(daemon):
    ok(ctl(daemon, "rollout", "start", "watch-v2"))
    wait_state(daemon, "watch-v2", "progressing", step=1)
    w = subprocess.Popen(ctl_argv(daemon.url, ["watch", "watch-v2", "--interval-ms", "100"]),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=clean_env())
    try:
        time.sleep(0.5)
        assert w.poll() is None, w.communicate()
        daemon.proc.stop()
        t0 = time.monotonic()
        out, err = w.communicate(timeout=25)
        waited = time.monotonic() - t0
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
    assert w.returncode == 1, (out, err)
    assert "more than 10 s" in err, err
    assert waited >= 9.5, waited
    assert "rollout watch-v2: progressing" in out


def test_usage_errors_exit_2_without_a_server():
    # nothing listens here: a usage error must be found before any request
    server = "http://127.0.0.1:%d" % free_port()
    cases = [
        ["rollout"],
        ["rollout", "frobnicate", "web-v2"],
        ["rollout", "get"],
        ["rollout", "start"],
        ["rollout", "approve"],
        ["rollout", "get", "a", "b"],
        ["rollout", "get", "bad/name"],
        ["rollout", "get", ".."],
        ["rollout", "list", "extra"],
        ["rollout", "start", "web-v2", "--full"],
        ["rollout", "promote", "web-v2", "--bogus"],
        ["rollout", "promote", "web-v2", "--full=yes"],
        ["rollout", "list", "-o", "xml"],
        ["rollout", "list", "-o", "YAML"],
        ["rollout", "list", "-o"],
        ["rollback"],
        ["rollback", "--all", "extra"],
        ["watch"],
        ["watch", "web-v2", "--interval-ms", "soon"],
        ["watch", "web-v2", "--interval-ms", "0"],
        ["watch", "web-v2", "--interval-ms"],
        ["evidence", "web-v2"],
        ["evidence", "--out", "/tmp"],
        ["-o", "xml", "rollout", "list"],
        ["-o", "", "rollout", "list"],
    ]
    for args in cases:
        r = ctl(server, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "usage: canaryctl" in r.stderr, (args, r.stderr)
    r = ctl(server, "rollback")
    assert "--all" in r.stderr
    # help is not an error, and lists the new verbs
    r = ctl(server, "--help")
    assert r.returncode == 0
    for verb in ("rollout list", "promote NAME [--full]", "rollback --all", "watch NAME",
                 "evidence NAME --out DIR"):
        assert verb in r.stdout, (verb, r.stdout)
    assert ctl(server, "rollout", "--help").returncode == 0
    # -o yaml is an output format (SPEC 8), not a usage error: with nothing
    # listening it gets as far as the request and fails with 1
    for args in (["-o", "yaml", "rollout", "list"], ["rollout", "list", "-o", "yaml"]):
        r = ctl(server, *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert "usage: canaryctl" not in r.stderr, (args, r.stderr)
    # a request to a server that is not there: failed, not usage
    r = ctl(server, "rollout", "list")
    assert r.returncode == 1


def test_evidence_of_a_rolled_back_rollout(daemon, tmp_path):
    """Needs GET /v1/rollouts/{name}/evidence in canaryd and evidence_write_dir()."""
    ok(ctl(daemon, "rollout", "start", "abort-v2"))
    wait_state(daemon, "abort-v2", "progressing", step=1)
    ok(ctl(daemon, "rollout", "abort", "abort-v2"))
    wait_state(daemon, "abort-v2", "rolled_back")
    out_dir = tmp_path / "evidence"
    out = ok(ctl(daemon, "evidence", "abort-v2", "--out", str(out_dir), timeout=60))
    assert str(out_dir) in out and "summary.md" in out
    assert (out_dir / "summary.md").is_file()
    assert "abort-v2" in (out_dir / "summary.md").read_text()
    for line in out.splitlines()[1:]:
        assert (out_dir / line.split()[0]).is_file(), line
    # -o json: the directory and the files written
    doc = json.loads(ok(ctl(daemon, "-o", "json", "evidence", "abort-v2", "--out",
                            str(tmp_path / "ev2"), timeout=60)))
    assert doc["dir"] == str(tmp_path / "ev2")
    assert "summary.md" in [f["name"] for f in doc["files"]]
    # an unknown rollout: exit 1
    r = ctl(daemon, "evidence", "nope", "--out", str(tmp_path / "ev3"))
    assert r.returncode == 1


def test_evidence_writes_the_bundle_it_is_given(tmp_path):
    """The CLI half of `evidence` against a stand-in server, independent of the
    daemon's route: the bundle's "files" land in --out via evidence_write_dir()."""
    import http.server
    import threading

    bundles = {
        "/v1/rollouts/fake/evidence": {
            "rollout": "fake", "state": "rolled_back", "events": [], "verdicts": [],
            "series": [], "files": {"summary.md": "# fake rolled back\n",
                                    "events.json": "[]\n"}},
        "/v1/rollouts/evil/evidence": {"rollout": "evil", "files": {"../escape.md": "x"}},
    }
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            seen.append((self.path, self.headers.get("Authorization")))
            doc = bundles.get(self.path)
            body = json.dumps(doc if doc else {"error": {"code": "not_found",
                                                        "message": "no such rollout"}})
            self.send_response(200 if doc else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = "http://127.0.0.1:%d" % srv.server_address[1]
        out_dir = tmp_path / "ev"
        out = ok(ctl(url, "evidence", "fake", "--out", str(out_dir)))
        assert seen[-1] == ("/v1/rollouts/fake/evidence", "Bearer " + ADMIN_TOKEN)
        assert out.splitlines()[0] == f"evidence of fake written to {out_dir}"
        assert (out_dir / "summary.md").read_text() == "# fake rolled back\n"
        assert (out_dir / "events.json").read_text() == "[]\n"
        assert "summary.md" in out and "events.json" in out
        # a file name that would leave the directory is refused: failed
        r = ctl(url, "evidence", "evil", "--out", str(tmp_path / "evil"))
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert not (tmp_path / "escape.md").exists()
        r = ctl(url, "evidence", "missing", "--out", str(tmp_path / "m"))
        assert r.returncode == 1 and "404" in r.stderr
    finally:
        srv.shutdown()
        srv.server_close()
