"""Fixtures for end-to-end tests: real canaryd / demo-upstream processes on
127.0.0.1, free ports, bounded waits, cleanup by pid.

Every process a test starts runs in its own session (process group); stop()
signals that group, so a hook or child it spawned goes with it.  When a test
fails, the output of every process it started is attached to the report
(section "process logs") and the log files are kept (their paths are listed)."""
import json
import os
import re
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


@pytest.fixture
def dead_port():
    """dead_port() -> a port where nothing listens, for the whole test: a socket is
    bound there (so no other process can take the port) but never listens, so a
    connection to it is refused.  The sockets are closed when the test ends."""
    held = []

    def make():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        held.append(s)
        return s.getsockname()[1]

    yield make
    for s in held:
        s.close()


_SAMPLE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def parse_metrics(text):
    """Prometheus text format -> {(name, frozenset({(label, value), ...})): float}.
    Comments and blank lines are skipped; a malformed sample line is an error (a
    test must not silently read past a line it cannot parse)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        pairs, pos = [], 0
        while pos < len(labels):
            lm = _LABEL.match(labels, pos)
            assert lm and lm.end() > pos, f"bad labels in {line!r}"
            value_text = re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1),
                                lm.group(2))
            pairs.append((lm.group(1), value_text))
            pos = lm.end()
        key = (name, frozenset(pairs))
        assert key not in out, f"duplicate series {line!r}"
        out[key] = float(value)
    return out


def metric(parsed, name, **labels):
    """The value of the one series `name` with exactly these labels, or None."""
    return parsed.get((name, frozenset(labels.items())))


def scrape(d, token=READ_TOKEN):
    """GET /metrics of a Daemon, parsed (parse_metrics)."""
    st, _, body = http("GET", d.url + "/metrics", token=token)
    assert st == 200, body
    return parse_metrics(body.decode())


def events(d, path="/v1/events", kind=None, page=1000, max_pages=200):
    """Every event of an events endpoint (/v1/events, /v1/rollouts/NAME/events),
    following `since` paging; at most max_pages pages, so a server that keeps
    answering full pages cannot hang a test."""
    out, since = [], 0
    for _ in range(max_pages):
        sep = "&" if "?" in path else "?"
        st, doc = d.get(f"{path}{sep}since={since}&limit={page}")
        assert st == 200, doc
        got = doc["events"] if isinstance(doc, dict) else doc
        out += got
        if len(got) < page:
            return [e for e in out if kind is None or e["kind"] == kind]
        assert got[-1]["id"] > since, "events paging does not advance"
        since = got[-1]["id"]
    raise AssertionError(f"{path}: more than {max_pages} pages of {page} events")


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
        self.argv = argv
        self.keep_log = False
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        full_env = dict(os.environ)
        full_env.update(env or {})
        # its own session: its pid is its process group id (see stop())
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=full_env,
                                  cwd=cwd, start_new_session=True)
        self.pid = self.p.pid

    def output(self):
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        """Signals the process itself (not its group)."""
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout=10.0):
        return self.p.wait(timeout=timeout)

    def _signal_group(self, sig):
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass  # the group is gone (leader and every child exited)

    def stop(self, timeout=5.0):
        """SIGTERM to the process group, SIGKILL to it after timeout; then SIGKILL
        to whatever is left of the group (a child the process left behind)."""
        if self.alive():
            self._signal_group(signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.p.wait(timeout=timeout)
        self._signal_group(signal.SIGKILL)

    def remove_log(self):
        self.log.close()
        if not self.keep_log:
            try:
                os.unlink(self.log.name)
            except OSError:
                pass


LOG_TAIL = 16384  # bytes of each process's output attached to a failed test's report


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test (setup or call) gets the output of every process it started
    in its report, and keeps their log files."""
    outcome = yield
    rep = outcome.get_result()
    started = getattr(item, "_e2e_procs", None)
    if not started or not rep.failed or rep.when == "teardown":
        return
    for p in started:
        p.keep_log = True
        try:
            text = p.output()
        except OSError as e:
            text = f"(log unreadable: {e})"
        if len(text) > LOG_TAIL:
            text = "[...]\n" + text[-LOG_TAIL:]
        state = "running" if p.alive() else f"exited {p.p.returncode}"
        rep.sections.append((f"process log: {p.name} pid {p.pid} ({state}) {p.log.name}",
                             " ".join(map(str, p.argv)) + "\n" + text))


@pytest.fixture
def procs(request):
    started = []
    request.node._e2e_procs = started

    def start(argv, **kw):
        p = Proc(argv, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
    for p in started:
        p.remove_log()  # kept when the test failed (pytest_runtest_makereport)


def bin_path(name):
    return os.path.join(BIN, name)


# --- the store backend under test ----------------------------------------------
# CANARYD_TEST_STORE=postgres: one throwaway PostgreSQL 15 for the session
# (tests/pg/pg-run start/stop), and every `store: sqlite:PATH` line a test's
# config has becomes the URL of a database of its own, created on first use
# (one per PATH, so a restart on the same work dir finds its state again) and
# dropped when the test ends.  Unset or "sqlite": configs are left alone.
STORE_BACKEND = os.environ.get("CANARYD_TEST_STORE") or "sqlite"
PG_RUN = os.path.join(SRC, "tests", "pg", "pg-run")
PSQL = "/usr/lib/postgresql/15/bin/psql"
_PG = {"url": None, "dir": None, "dbs": {}, "serial": 0}
_SQLITE_STORE_LINE = re.compile(r"^(store:[ \t]*)sqlite:(\S+)[ \t]*$", re.M)


def _pg_sql(sql):
    r = subprocess.run([PSQL, _PG["url"], "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"psql {sql!r}: {r.stderr}"
    return r.stdout


def store_url(sqlite_path):
    """The store URL for what a test calls sqlite:sqlite_path, on the backend under test."""
    if STORE_BACKEND != "postgres":
        return "sqlite:" + sqlite_path
    assert _PG["url"], "the store_backend session fixture did not start PostgreSQL"
    db = _PG["dbs"].get(sqlite_path)
    if db is None:
        _PG["serial"] += 1
        db = f"e2e_{os.getpid()}_{_PG['serial']}"
        _pg_sql(f"CREATE DATABASE {db}")
        _PG["dbs"][sqlite_path] = db
    return _PG["url"].rsplit("/", 1)[0] + "/" + db


def with_store_backend(config_text):
    """config_text with its `store: sqlite:PATH` line on the backend under test."""
    if STORE_BACKEND != "postgres":
        return config_text
    return _SQLITE_STORE_LINE.sub(lambda m: m.group(1) + store_url(m.group(2)), config_text)


@pytest.fixture(scope="session", autouse=True)
def store_backend():
    """"sqlite" or "postgres"; for postgres, starts the session's server (a failure
    to start fails every test: the pass is required, never skipped)."""
    if STORE_BACKEND == "sqlite":
        yield "sqlite"
        return
    assert STORE_BACKEND == "postgres", f"CANARYD_TEST_STORE={STORE_BACKEND!r}: sqlite or postgres"
    r = subprocess.run([PG_RUN, "start"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"tests/pg/pg-run start failed:\n{r.stderr}"
    for line in r.stdout.splitlines():
        key, _, value = line.partition("=")
        if key == "CANARYD_TEST_PG_URL":
            _PG["url"] = value
        elif key == "CANARYD_TEST_PG_DIR":
            _PG["dir"] = value
    assert _PG["url"] and _PG["dir"], r.stdout
    try:
        yield "postgres"
    finally:
        subprocess.run([PG_RUN, "stop", _PG["dir"]], timeout=120)


@pytest.fixture(autouse=True)
def _drop_test_databases(store_backend):
    """Drops the databases a test created; torn down after its processes stopped."""
    yield
    if store_backend != "postgres":
        return
    for path, db in list(_PG["dbs"].items()):
        _pg_sql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        del _PG["dbs"][path]


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
        text = with_store_backend(text.format(admin_port=admin_port, workdir=workdir))
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
