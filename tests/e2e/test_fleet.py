"""Fleet mode (SPEC 9, docs/fleet.md): three canaryd nodes on one throwaway
PostgreSQL (tests/pg/pg-run), on loopback.  Changes made through one node reach
the others; one leader runs the rollouts; killing or pausing it hands them to
another node without a skipped or repeated step; a stale leader cannot commit;
a PostgreSQL restart loses nothing.

Every wait is bounded; every process is stopped by pid (conftest.procs)."""
import os
import random
import shlex
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import conftest
from conftest import (ADMIN_TOKEN, Daemon, READ_TOKEN, FLAGS_TOKEN, bin_path, free_port, http,
                      parse_metrics, wait_until)

PG_RUN = conftest.PG_RUN
PGBIN = "/usr/lib/postgresql/15/bin"


@pytest.fixture(scope="module")
def pg():
    """The server's URL (its "postgres" database) and data dir: the session's
    server in the postgres pass, else one started for this module."""
    if conftest._PG["url"]:
        yield conftest._PG["url"], conftest._PG["dir"]
        return
    r = subprocess.run([PG_RUN, "start"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"tests/pg/pg-run start failed:\n{r.stderr}"
    env = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    try:
        yield env["CANARYD_TEST_PG_URL"], env["CANARYD_TEST_PG_DIR"]
    finally:
        subprocess.run([PG_RUN, "stop", env["CANARYD_TEST_PG_DIR"]], timeout=120)


def psql(url, sql):
    r = subprocess.run([os.path.join(PGBIN, "psql"), url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"psql {sql!r}: {r.stderr}"
    return r.stdout.strip()


class Node(Daemon):
    """One fleet node: its config file, admin and proxy ports, (re)startable."""

    def __init__(self, procs, name, workdir, text):
        self.name = name
        self.procs = procs
        self.admin_port = free_port()
        self.proxy_port = free_port()
        os.makedirs(workdir, exist_ok=True)
        cfg = os.path.join(workdir, "canaryd.yaml")
        with open(cfg, "w") as f:
            f.write(text.format(admin_port=self.admin_port, proxy_port=self.proxy_port,
                                workdir=workdir))
        super().__init__(None, self.admin_port, workdir, cfg)

    def start(self, wait=True):
        env = {"E2E_ADMIN_TOKEN": ADMIN_TOKEN, "E2E_READ_TOKEN": READ_TOKEN,
               "E2E_FLAGS_TOKEN": FLAGS_TOKEN}
        self.proc = self.procs([bin_path("canaryd"), "-c", self.config_path], env=env,
                               cwd=self.workdir, name=f"canaryd-{self.name}")
        if not wait:
            return self

        def healthy():
            if not self.proc.alive():
                raise AssertionError(f"{self.name} exited:\n" + self.proc.output())
            return http("GET", self.url + "/v1/health", timeout=0.5)[0] == 200

        wait_until(healthy, 15, what=f"{self.name} health")
        return self

    def metric(self, name):
        st, _, body = http("GET", self.url + "/metrics", token=ADMIN_TOKEN, timeout=2)
        assert st == 200, body
        return conftest.metric(parse_metrics(body.decode()), name)

    def leading(self):
        try:
            return self.metric("canaryd_fleet_leader") == 1
        except OSError:
            return False


# conftest.BASE_ADMIN (the three e2e tokens) on the shared PostgreSQL database
NODE_CONFIG = conftest.BASE_ADMIN.replace("store: sqlite:{workdir}/canaryd.db", "store: STORE") + """fleet:
  lease: LEASE
listeners:
  - name: public
    listen: 127.0.0.1:{proxy_port}
    routes:
      - match: {{path_prefix: /}}
        service: web
services:
  web:
    versions:
      v1: {{endpoints: [127.0.0.1:V1]}}
      v2: {{endpoints: [127.0.0.1:V2]}}
    stable: v1
    sticky: header:x-user-id
    drain: 0s
"""

# A plan of timed steps; the sequence of rollout.step events is deterministic.
PLAN = """rollouts:
  web-v2:
    target: {{service: web, canary: v2}}
    steps:
      - weight: 1
        for: 1s
      - weight: 5
        for: 1s
      - weight: 25
        for: 1s
      - weight: 50
        for: 1s
      - weight: 75
        for: 1s
      - weight: 100
        for: 500ms
"""
NSTEPS = 6


@pytest.fixture
def fleet(pg, procs, upstream, tmp_path):
    """start(n, plan=False, lease="3s") -> [Node]: n nodes on a database of their own
    (plan: True for PLAN, or the text of a rollouts: section); start.v2_port is the
    canary upstream's port of the last start."""
    url, _ = pg
    made, all_nodes = [], []

    def start(n, plan=False, lease="3s", db=None):
        db = db or f"fleet_{os.getpid()}_{len(made)}_{random.randrange(1 << 30)}"
        psql(url, f"CREATE DATABASE {db}")
        made.append(db)
        v1, v2 = upstream("v1"), upstream("v2")
        text = (NODE_CONFIG.replace("STORE", url.rsplit("/", 1)[0] + "/" + db)
                .replace("LEASE", lease).replace("V1", str(v1)).replace("V2", str(v2)))
        if plan:
            text += PLAN if plan is True else plan
        start.v2_port = v2
        nodes = []
        for i in range(n):
            node = Node(procs, "ABC"[i] if i < 3 else str(i), str(tmp_path / f"{db}-n{i}"), text)
            all_nodes.append(node)
            nodes.append(node.start())
        wait_until(lambda: sum(nd.leading() for nd in nodes) == 1, 10, what="one leader")
        return nodes

    yield start
    for node in all_nodes:  # a node left paused could not be stopped by SIGTERM
        if node.proc is not None:
            node.proc.signal(signal.SIGCONT)
    for db in made:
        subprocess.run([os.path.join(PGBIN, "psql"), url, "-qAtc",
                        f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"],
                       capture_output=True, timeout=60)


def leader_of(nodes):
    lead = [n for n in nodes if n.proc.alive() and n.leading()]
    return lead[0] if len(lead) == 1 else None


def proxied_version(node, key="k1"):
    req = urllib.request.Request(f"http://127.0.0.1:{node.proxy_port}/", headers={"x-user-id": key})
    with urllib.request.urlopen(req, timeout=2) as r:
        return r.headers.get("X-Upstream-Version")


def step_sequence(node):
    return [(e["details"]["step"], e["details"]["weights"], e["details"]["kind"])
            for e in conftest.events(node, "/v1/rollouts/web-v2/events", "rollout.step")]


def rollout_state(node):
    try:
        st, doc = node.get("/v1/rollouts/web-v2")
        return doc["state"] if st == 200 else None
    except OSError:
        return None


def start_rollout(nodes):
    """Controls are decisions: the leader takes them (a follower answers 409)."""
    def go():
        lead = leader_of(nodes)
        return lead is not None and lead.post("/v1/rollouts/web-v2/start")[0] == 200

    wait_until(go, 10, what="rollout started on the leader")


# --------------------------------------------------------------------------

def test_flag_through_a_is_served_by_b_and_c_and_traffic_through_b_reaches_every_proxy(fleet):
    a, b, c = fleet(3)
    st, doc = a.post("/v1/feature-flags", {"feature": "checkout", "percentage": 30,
                                            "enabled": True})
    assert st in (200, 201), doc
    for n in (b, c):
        wait_until(lambda n=n: n.get("/v1/feature-flags/checkout")[1].get("percentage") == 30,
                   5, 0.01, what=f"flag on {n.name}")
    # an update and a delete travel the same way
    st, doc = c.post("/v1/feature-flags", {"feature": "checkout", "percentage": 70,
                                            "enabled": True})
    assert st in (200, 201), doc
    for n in (a, b):
        wait_until(lambda n=n: n.get("/v1/feature-flags/checkout")[1].get("percentage") == 70,
                   5, 0.01, what=f"updated flag on {n.name}")
    assert b.delete("/v1/feature-flags/checkout")[0] in (200, 204)
    for n in (a, c):
        wait_until(lambda n=n: n.get("/v1/feature-flags/checkout")[0] == 404, 5, 0.01,
                   what=f"deleted flag on {n.name}")

    # every proxy routes to v1 first; a traffic change through B moves all three
    for n in (a, b, c):
        assert proxied_version(n) == "v1"
    st, doc = b.put("/v1/services/web/traffic", {"canary": "v2", "weight": 100})
    assert st == 200, doc
    for n in (a, b, c):
        wait_until(lambda n=n: proxied_version(n, "k2") == "v2", 5, 0.01,
                   what=f"v2 through {n.name}'s proxy")
        assert n.get("/v1/services/web")[1]["weight"] == 100
    # every node applied the same revision and lists the other two
    rev = max(n.metric("canaryd_applied_revision") for n in (a, b, c))
    wait_until(lambda: all(n.metric("canaryd_applied_revision") == rev for n in (a, b, c)), 5,
               what="same applied revision")
    wait_until(lambda: len(a.get("/v1/fleet")[1]["nodes"]) == 3, 5, what="3 nodes registered")
    doc = a.get("/v1/fleet")[1]
    assert sorted(nd["role"] for nd in doc["nodes"]) == ["follower", "follower", "leader"], doc
    assert all(nd["alive"] for nd in doc["nodes"]), doc
    st, health = b.get("/v1/health/detailed")
    assert health["components"]["fleet"]["status"] == "ok", health
    # canaryctl fleet lists the same three nodes, the leader among them
    out = subprocess.run([bin_path("canaryctl"), "--server", c.url, "--token", READ_TOKEN,
                          "fleet"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[2:]]
    assert sorted(r[0] for r in rows) == sorted(nd["id"] for nd in doc["nodes"]), out.stdout
    assert sorted(r[2] for r in rows) == ["follower", "follower", "leader"], out.stdout


def test_kill_9_the_leader_at_random_moments_finishes_the_same_steps(fleet):
    """SPEC 9: killing the leader hands the rollouts to another node without
    skipping or repeating a step.  The uninterrupted run and the killed run
    must show the same rollout.step sequence.  CANARYD_KILL_SEED=N replays."""
    seed = int(os.environ.get("CANARYD_KILL_SEED") or random.randrange(1 << 32))
    print(f"CANARYD_KILL_SEED={seed}")
    rng = random.Random(seed)
    clean = fleet(1, plan=True)
    start_rollout(clean)
    wait_until(lambda: rollout_state(clean[0]) == "completed", 30, 0.05, what="clean run")
    expected = step_sequence(clean[0])
    assert [s[0] for s in expected] == list(range(NSTEPS)), expected
    # completion makes the canary the stable version (SPEC 6)
    clean_svc = wait_until(lambda: (lambda v: v if v["stable"] == "v2" else None)(
        clean[0].get("/v1/services/web")[1]), 10, what="v2 stable after the clean run")
    clean[0].proc.stop()

    nodes = fleet(3, plan=True)
    start_rollout(nodes)
    kills, terms = 0, set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        lead = None
        try:
            lead = wait_until(lambda: leader_of(nodes), 10, 0.02, what="a leader")
        except AssertionError:
            pass
        done = any(rollout_state(n) == "completed" for n in nodes if n.proc.alive())
        if done and kills >= 5:
            break
        if done:  # fewer than 5 kills landed: not what this test is for
            pytest.fail(f"the rollout finished after only {kills} kills (seed {seed})")
        time.sleep(rng.uniform(0.05, 0.6))
        if lead is None or rollout_state(lead) == "completed":
            continue
        terms.add(lead.metric("canaryd_fleet_term"))
        lead.proc.signal(signal.SIGKILL)
        lead.proc.wait(5)
        kills += 1
        lead.start(wait=False)  # it comes back as a follower while the others go on
    assert kills >= 5, (kills, seed)
    survivors = [n for n in nodes if n.proc.alive()]
    wait_until(lambda: all(rollout_state(n) == "completed" for n in survivors), 10,
               what="every node sees the completed rollout")
    assert step_sequence(survivors[0]) == expected, seed
    assert len(terms) == kills, (terms, seed)  # each kill handed over to a new term
    want = (clean_svc["stable"], clean_svc["canary"], clean_svc["weight"])
    for n in survivors:  # every node routes as the uninterrupted run ended
        wait_until(lambda n=n: (lambda v: (v["stable"], v["canary"], v["weight"]))(
            n.get("/v1/services/web")[1]) == want, 10, what=f"{n.name} routes as the clean run")


def test_a_paused_leader_is_replaced_and_cannot_commit(fleet):
    nodes = fleet(3, plan=True, lease="1s")
    old = leader_of(nodes)
    old_term = old.metric("canaryd_fleet_term")
    start_rollout(nodes)
    wait_until(lambda: len(step_sequence(old)) >= 1, 10, what="first step")
    old.proc.signal(signal.SIGSTOP)
    try:
        others = [n for n in nodes if n is not old]
        new = wait_until(lambda: leader_of(others), 10, 0.02, what="a new leader")
        new_term = new.metric("canaryd_fleet_term")
        assert new_term > old_term
        time.sleep(0.5)  # the new leader moves the rollout while the old one sleeps
    finally:
        old.proc.signal(signal.SIGCONT)
    # the old leader resumes into follower: its lease lapsed while it slept
    wait_until(lambda: old.metric("canaryd_fleet_leader") == 0, 5, what="old leader steps down")
    wait_until(lambda: old.metric("canaryd_fleet_term") == new_term, 10, what="term seen")
    # a decision sent to it is fenced by the term, not only refused by its own view
    st, doc = old.post("/v1/rollouts/web-v2/pause")
    assert st == 409 and "not the fleet leader" in doc["error"]["message"], doc
    wait_until(lambda: rollout_state(new) == "completed", 30, 0.05, what="completed")
    seq = step_sequence(new)
    assert [s[0] for s in seq] == list(range(NSTEPS)), seq
    # the database holds the new leader's term; nobody committed under the old one
    st, fl = new.get("/v1/fleet")
    assert fl["term"] == new_term and fl["holder"] == new.get("/v1/fleet")[1]["self"], fl


def pg_control(pgdir):
    """(stop, start) of the session's PostgreSQL, restarted with its own command line."""
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = os.path.join(pgdir, "data")
    with open(os.path.join(data, "postmaster.opts")) as f:
        server_args = shlex.split(f.read())[1:]  # the command line it was started with
    server_args = [a for a in server_args if a != data and a != "-D"]

    def pg_ctl(*args):
        # -l: the server must not inherit a pipe of ours (run() would wait for it)
        r = subprocess.run(as_pg + [os.path.join(PGBIN, "pg_ctl"), "-D", data, "-w", "-t", "30",
                                    *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)
        assert r.returncode == 0, f"pg_ctl {args[0]} failed: see {pgdir}/server.log"

    return (lambda: pg_ctl("stop", "-m", "fast"),
            lambda: pg_ctl("start", "-l", os.path.join(pgdir, "server.log"), "-o",
                           shlex.join(server_args)))


def test_postgres_restart_mid_rollout_loses_nothing(fleet, pg):
    _, pgdir = pg
    nodes = fleet(3, plan=True)
    a = nodes[0]
    st, _ = a.post("/v1/feature-flags", {"feature": "before", "percentage": 10, "enabled": True})
    assert st in (200, 201)
    start_rollout(nodes)
    wait_until(lambda: len(step_sequence(a)) >= 2, 10, what="two steps")
    pg_stop, pg_start = pg_control(pgdir)
    pg_stop()
    try:
        # the database is away: writes answer 503, reads and routing go on
        def refused():
            st, doc = a.post("/v1/feature-flags", {"feature": "during", "percentage": 5,
                                                    "enabled": True})
            return st == 503 and doc["error"]["code"] == "store_unavailable"

        wait_until(refused, 10, 0.1, what="503 store_unavailable")
        for n in nodes:
            assert n.get("/v1/feature-flags/before")[1]["percentage"] == 10
            assert proxied_version(n) in ("v1", "v2")
        time.sleep(1)
    finally:
        pg_start()
    # the nodes reconnect by themselves; writes work again and reach every node
    def flag_written():
        try:
            return a.post("/v1/feature-flags", {"feature": "after", "percentage": 20,
                                                 "enabled": True})[0] in (200, 201)
        except OSError:
            return False

    wait_until(flag_written, 20, 0.1, what="a write after the restart")
    for n in nodes:
        wait_until(lambda n=n: n.get("/v1/feature-flags/after")[0] == 200, 10,
                   what=f"new flag on {n.name}")
        assert n.get("/v1/feature-flags/before")[1]["percentage"] == 10
    wait_until(lambda: all(rollout_state(n) == "completed" for n in nodes), 40, 0.1,
               what="rollout completed everywhere")
    seq = step_sequence(a)
    assert [s[0] for s in seq] == list(range(NSTEPS)), seq
    wait_until(lambda: sum(n.leading() for n in nodes) == 1, 10, what="one leader again")


BAD_CANARY_PLAN = """rollouts:
  web-v2:
    target: {{service: web, canary: v2}}
    steps:
      - weight: 50
        for: 1h
      - weight: 100
    analysis:
      interval: 1s
      checks:
        - {{name: errors, metric: error_rate, max: 0.05, min_samples: 10}}
"""


def canary_share(node, keys=30):
    """How many of `keys` sticky users node's proxy sends to v2 (a bad v2 answers 500)."""
    def version(key):
        try:
            return proxied_version(node, key)
        except urllib.error.HTTPError as e:
            return e.headers.get("X-Upstream-Version")

    return sum(version(f"u{i}") == "v2" for i in range(keys))


def test_rollback_while_postgres_is_down_is_local_at_once_and_persisted_after(fleet, pg):
    """docs/fleet.md: with PostgreSQL away the leader still rolls a failing canary
    back on its own proxy, judged on the last merge plus its own traffic since;
    when the database returns the rollback is committed and every node applies it."""
    _, pgdir = pg
    nodes = fleet(2, plan=BAD_CANARY_PLAN, lease="2s")
    v2 = fleet.v2_port
    start_rollout(nodes)
    lead = leader_of(nodes)
    other = [n for n in nodes if n is not lead][0]
    wait_until(lambda: canary_share(lead) > 0 and canary_share(other) > 0, 10,
               what="both proxies send some users to v2")
    pg_stop, pg_start = pg_control(pgdir)
    pg_stop()
    try:
        # the canary turns bad while the database is away
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{v2}/_upstream/config?error_rate=1", method="POST"),
            timeout=2).read()

        def rolled_back_here():
            for i in range(40):  # load through the leader's proxy: its own evidence
                try:
                    proxied_version(lead, f"load{i}")
                except OSError:
                    pass
            return canary_share(lead) == 0

        wait_until(rolled_back_here, 30, 0.1, what="the leader's proxy off the canary")
        # nothing could be written: the follower still routes by the old weights
        assert canary_share(other) > 0
    finally:
        pg_start()
    # the database is back: the rollback is committed and the follower applies it
    wait_until(lambda: rollout_state(other) == "rolled_back", 30, 0.2,
               what="the rollback persisted and seen by the follower")
    wait_until(lambda: canary_share(other) == 0, 10, 0.1, what="the follower off the canary")

    def rollback_event():
        # the follower's own store handle reconnects on its backoff (at most
        # 5 s after the server returns); until then a read is 503, never 500
        st, doc = other.get("/v1/rollouts/web-v2/events?since=0&limit=1000")
        if st == 503:
            assert doc["error"]["code"] == "store_unavailable", doc
            return None
        assert st == 200, doc
        return [e for e in doc["events"] if e["kind"] == "rollout.rollback"]

    wait_until(rollback_event, 15, 0.2, what="the follower reads the rollback event")
