"""Secrets never leak (issue 12 section 3): a recognisable secret in every
place a secret can live - an inline token, a secret_file, the store URL's
password, a rollback webhook's and a notification webhook's credentials, an
http check's URL - and every output surface read back: canaryd's logs,
/metrics, /v1/health/detailed, /v1/events, /v1/rollouts/* (analysis, events,
evidence) with a read token, the evidence bundle on disk and its file modes,
`canaryctl evidence --out`, `canaryd --check` and the errors of bad configs.
None of them may show any secret.

The rollout rolls back (its http check reads a value above its max), so the
hooks, notifications and the evidence bundle all run.  Every wait is bounded
and every process is stopped by the fixtures."""
import json
import os
import stat
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import READ_TOKEN, bin_path, free_port, http, wait_until

INLINE = "zzInlineSecret7741"
FROM_FILE = "zzFileSecret5512"
STORE_PW = "zzStorePw3390"
HOOK_PW = "zzHookPw8820"
NOTIFY_PW = "zzNotifyPw6617"
CHECK_PW = "zzCheckPw4471"
SECRETS = (INLINE, FROM_FILE, STORE_PW, HOOK_PW, NOTIFY_PW, CHECK_PW)


def assert_clean(what, text):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for s in SECRETS:
        assert s not in text, f"secret {s} found in {what}:\n{text[:4000]}"


class Peer:
    """Loopback HTTP peer: GET answers the check's value, POST records hooks."""

    def __init__(self):
        self.posts = []
        self.lock = threading.Lock()
        peer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                body = b'{"value": 1.0}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n)
                with peer.lock:
                    peer.posts.append((self.path, self.headers.get("Authorization"), data))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def config_text(admin_port, workdir, proxy_port, v1, v2, peer_port, dead_port, store=None):
    return f"""admin:
  listen: 127.0.0.1:{admin_port}
  tokens:
    - name: ops
      secret: {INLINE}
      scopes: [admin]
    - name: viewer
      secret: ${{E2E_READ_TOKEN}}
      scopes: [read]
    - name: vp
      secret_file: vp.token
      scopes: [approve]
store: {store or f"sqlite:{workdir}/canaryd.db"}
workers: 1
listeners:
  - name: public
    listen: 127.0.0.1:{proxy_port}
    routes:
      - service: web
services:
  web:
    versions:
      v1: {{endpoints: [127.0.0.1:{v1}]}}
      v2: {{endpoints: [127.0.0.1:{v2}]}}
    stable: v1
    drain: 1s
rollouts:
  web-v2:
    target: {{service: web, canary: v2}}
    steps:
      - weight: 20
        for: 60s
    analysis:
      interval: 1s
      checks:
        - name: probe
          http: {{url: "http://probe:{CHECK_PW}@127.0.0.1:{peer_port}/value", pointer: /value}}
          max: 0.5
          on_fail: rollback
    rollback:
      drain: 1s
      hooks:
        - webhook: http://hook:{HOOK_PW}@127.0.0.1:{peer_port}/rollback
    notify:
      - webhook: http://notify:{NOTIFY_PW}@127.0.0.1:{dead_port}/notify
"""


def run(argv, cwd, env=None, timeout=20):
    e = dict(os.environ)
    e.pop("CANARYD_TOKEN", None)
    e.pop("CANARYD_SERVER", None)
    e.update(env or {})
    return subprocess.run(argv, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)


def test_no_secret_on_any_surface(procs, upstream, tmp_path, dead_port):
    workdir = str(tmp_path)
    with open(os.path.join(workdir, "vp.token"), "w") as f:
        f.write(FROM_FILE + "\n")
    v1, v2 = upstream("v1"), upstream("v2")
    peer = Peer()
    try:
        admin_port, proxy_port = free_port(), free_port()
        text = config_text(admin_port, workdir, proxy_port, v1, v2, peer.port, dead_port())
        cfg = os.path.join(workdir, "canaryd.yaml")
        with open(cfg, "w") as f:
            f.write(text)
        env = {"E2E_READ_TOKEN": READ_TOKEN, "CANARYD_EVIDENCE_DIR": os.path.join(workdir, "ev")}

        # --check on the good config
        r = run([bin_path("canaryd"), "--check", "-c", cfg], workdir, env)
        assert r.returncode == 0, r.stderr
        assert_clean("canaryd --check", r.stdout + r.stderr)

        p = procs([bin_path("canaryd"), "-c", cfg], env=dict(os.environ, **env), cwd=workdir,
                  name="canaryd")
        url = f"http://127.0.0.1:{admin_port}"

        def healthy():
            assert p.alive(), p.output()
            return http("GET", url + "/v1/health", timeout=0.5)[0] == 200

        wait_until(healthy, 10, what="canaryd health")
        st, _, body = http("POST", url + "/v1/rollouts/web-v2/start", body=b"", token=INLINE)
        assert st == 200, body

        def rolled_back():
            st, _, b = http("GET", url + "/v1/rollouts/web-v2", token=READ_TOKEN)
            doc = json.loads(b)
            post = doc.get("post") or {}
            return doc["state"] == "rolled_back" and post.get("stage") == "done" and doc
        doc = wait_until(rolled_back, 30, 0.1, what="web-v2 rolled back")

        # the hook ran, and the notification failed (its peer is down): both paths ran
        with peer.lock:
            assert any(path == "/rollback" for path, _, _ in peer.posts), peer.posts

        def notify_failed():
            st, _, b = http("GET", url + "/v1/events?kind=notify.failed", token=READ_TOKEN)
            return st == 200 and b"notify.failed" in b
        wait_until(notify_failed, 20, 0.1, what="a notify.failed event")

        # every API surface, read with the read token
        for path in ("/metrics", "/v1/health", "/v1/health/detailed", "/v1/events?limit=1000",
                     "/v1/rollouts", "/v1/rollouts/web-v2", "/v1/rollouts/web-v2/analysis",
                     "/v1/rollouts/web-v2/events", "/v1/rollouts/web-v2/evidence",
                     "/v1/services", "/v1/services/web", "/v1/feature-flags"):
            st, _, b = http("GET", url + path, token=READ_TOKEN)
            assert st == 200, (path, st, b)
            assert_clean(path, b)
        st, _, b = http("GET", url + "/v1/rollouts/web-v2/evidence", token=READ_TOKEN)
        bundle = json.loads(b)
        assert "<redacted>" in bundle["files"]["config.yaml"]
        assert "secret_file: vp.token" in bundle["files"]["config.yaml"]

        # the bundle the engine wrote after the rollback: private, and clean
        ev_root = os.path.join(workdir, "ev")
        assert stat.S_IMODE(os.stat(ev_root).st_mode) == 0o700
        dirs = os.listdir(ev_root)
        assert dirs, "no evidence bundle written"
        for d in dirs:
            full = os.path.join(ev_root, d)
            assert stat.S_IMODE(os.stat(full).st_mode) == 0o700, full
            for name in os.listdir(full):
                fp = os.path.join(full, name)
                assert stat.S_IMODE(os.stat(fp).st_mode) == 0o600, fp
                with open(fp, "rb") as f:
                    assert_clean(fp, f.read())

        # canaryctl evidence --out, with a read token
        out = os.path.join(workdir, "ctl-out")
        r = run([bin_path("canaryctl"), "--server", url, "--token", READ_TOKEN, "evidence",
                 "web-v2", "--out", out], workdir)
        assert r.returncode == 0, r.stderr
        assert_clean("canaryctl evidence output", r.stdout + r.stderr)
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o700
        for name in os.listdir(out):
            fp = os.path.join(out, name)
            assert stat.S_IMODE(os.stat(fp).st_mode) == 0o600, fp
            with open(fp, "rb") as f:
                assert_clean(fp, f.read())

        p.stop()
        assert_clean("canaryd logs", p.output())
    finally:
        peer.close()

    # a refused store URL: canaryd exits, its log names the store without the password
    pg = f"postgres://canary:{STORE_PW}@127.0.0.1:1/canary?sslmode=disable"
    bad = config_text(free_port(), workdir, free_port(), v1, v2, 1, 1, store=pg)
    cfg2 = os.path.join(workdir, "pg.yaml")
    with open(cfg2, "w") as f:
        f.write(bad)
    r = run([bin_path("canaryd"), "-c", cfg2], workdir, {"E2E_READ_TOKEN": READ_TOKEN})
    assert r.returncode != 0
    assert "store" in r.stderr and "<redacted>" in r.stderr, r.stderr
    assert_clean("canaryd with a refused store", r.stdout + r.stderr)

    # configs whose errors point at the secrets
    for old, new in ((pg, f"mysql://canary:{STORE_PW}@db/x"),
                     (f"http://hook:{HOOK_PW}@127.0.0.1:1/rollback",
                      f"ftp://hook:{HOOK_PW}@127.0.0.1:1/rollback"),
                     (f"secret: {INLINE}", f"secret: \"{INLINE}${{oops\""),
                     ("vp.token", "missing.token")):
        text = bad.replace(old, new)
        assert text != bad, old
        with open(cfg2, "w") as f:
            f.write(text)
        r = run([bin_path("canaryd"), "--check", "-c", cfg2], workdir,
                {"E2E_READ_TOKEN": READ_TOKEN})
        assert r.returncode != 0, (new, r.stdout)
        assert "pg.yaml:" in r.stdout + r.stderr
        assert_clean(f"canaryd --check with {new[:12]}...", r.stdout + r.stderr)


def test_canaryctl_never_prints_the_server_url_password(dead_port):
    # a refused connection names the server it tried, with its password hidden
    url = "http://ops:zz-ctl-password@127.0.0.1:%d" % dead_port()
    r = subprocess.run([bin_path("canaryctl"), "--server", url, "status"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r
    assert "ops:<redacted>@127.0.0.1" in r.stderr, r.stderr
    assert "zz-ctl-password" not in r.stdout + r.stderr
