"""Fixtures for end-to-end tests: real canaryd / demo-upstream processes on
127.0.0.1, free ports, bounded waits, cleanup by pid."""
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

SRC = os.environ.get("CANARYD_SRC_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("CANARYD_BIN_DIR", os.path.join(SRC, "build"))

ADMIN_TOKEN = "e2e-admin-secret"
READ_TOKEN = "e2e-read-secret"
FLAGS_TOKEN = "e2e-flags-secret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - the predicate may race startup
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def http(method, url, body=None, token=None, headers=None, timeout=5.0):
    """Returns (status, headers, body bytes); never raises on HTTP errors."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def http_json(method, url, body=None, token=None, headers=None):
    status, hdrs, raw = http(method, url, body, token, headers)
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        doc = raw
    return status, doc


def raw_request(port, data, timeout=5.0, read_until_close=True):
    """Sends raw bytes, returns every byte the server sent back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
            if not read_until_close:
                break
        return b"".join(chunks)


class Proc:
    def __init__(self, argv, env=None, cwd=None, name="proc"):
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=full_env,
                                  cwd=cwd, start_new_session=True)
        self.pid = self.p.pid

    def output(self):
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout=10.0):
        return self.p.wait(timeout=timeout)

    def stop(self, timeout=5.0):
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait(timeout=timeout)
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


@pytest.fixture
def procs():
    started = []

    def start(argv, **kw):
        p = Proc(argv, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def bin_path(name):
    return os.path.join(BIN, name)


@pytest.fixture
def upstream(procs):
    """start(name, **opts) -> port of a demo-upstream answering with its name."""

    def start(name, error_rate=None, latency_ms=None, seed=None):
        port = free_port()
        argv = [bin_path("demo-upstream"), "--listen", f"127.0.0.1:{port}", "--name", name]
        if error_rate is not None:
            argv += ["--error-rate", str(error_rate)]
        if latency_ms is not None:
            argv += ["--latency-ms", str(latency_ms)]
        if seed is not None:
            argv += ["--seed", str(seed)]
        p = procs(argv, name=f"upstream-{name}")

        def up():
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True

        wait_until(up, 5, what=f"upstream {name}")
        p.port = port
        return port

    return start


class Daemon:
    def __init__(self, proc, admin_port, workdir, config_path):
        self.proc = proc
        self.admin_port = admin_port
        self.workdir = workdir
        self.config_path = config_path
        self.url = f"http://127.0.0.1:{admin_port}"

    def get(self, path, token=ADMIN_TOKEN, **kw):
        return http_json("GET", self.url + path, token=token, **kw)

    def post(self, path, body=None, token=ADMIN_TOKEN, **kw):
        return http_json("POST", self.url + path, body=body, token=token, **kw)

    def put(self, path, body=None, token=ADMIN_TOKEN, **kw):
        return http_json("PUT", self.url + path, body=body, token=token, **kw)

    def delete(self, path, token=ADMIN_TOKEN, **kw):
        return http_json("DELETE", self.url + path, token=token, **kw)


BASE_ADMIN = """admin:
  listen: 127.0.0.1:{admin_port}
  tokens:
    - name: ops
      secret: ${{E2E_ADMIN_TOKEN}}
      scopes: [admin]
    - name: viewer
      secret: ${{E2E_READ_TOKEN}}
      scopes: [read]
    - name: flagger
      secret: ${{E2E_FLAGS_TOKEN}}
      scopes: [read, flags:write]
store: sqlite:{workdir}/canaryd.db
workers: 1
"""


@pytest.fixture
def canaryd(procs, tmp_path):
    """start(body_yaml, extra_env=None, wait=True) -> Daemon.  body_yaml is the
    config after the admin/store/workers header; it may use {admin_port} and
    {workdir} placeholders."""

    def start(body="", extra_env=None, wait=True, header=True, args=None):
        admin_port = free_port()
        workdir = str(tmp_path)
        text = (BASE_ADMIN if header else "") + body
        text = text.format(admin_port=admin_port, workdir=workdir)
        cfg = os.path.join(workdir, "canaryd.yaml")
        with open(cfg, "w") as f:
            f.write(text)
        env = {"E2E_ADMIN_TOKEN": ADMIN_TOKEN, "E2E_READ_TOKEN": READ_TOKEN,
               "E2E_FLAGS_TOKEN": FLAGS_TOKEN}
        env.update(extra_env or {})
        p = procs([bin_path("canaryd"), "-c", cfg] + (args or []), env=env, cwd=workdir,
                  name="canaryd")
        d = Daemon(p, admin_port, workdir, cfg)
        if wait:
            def healthy():
                if not p.alive():
                    raise AssertionError("canaryd exited:\n" + p.output())
                return http("GET", d.url + "/v1/health", timeout=0.5)[0] == 200

            wait_until(healthy, 10, what="canaryd health")
        return d

    return start
