"""The customer's DWCP plan end to end (issue 16 §1 and §3): tools/dwcp-sim's six
components and their fault switch, `canaryd --check` on every examples/dwcp
config, and rehearsals of examples/dwcp/canaryd.yaml (`start --rehearse`) on a
real canaryd, a real Prometheus scraping the simulator and loadgen traffic:

  - the healthy path through every phase, with the three approvers, and beside it
    the dwcp_v3_hde flag plan (10% -> 50% -> 100% of nodes, node exclusion);
  - accuracy < 99% rolls back Compression only, consensus failures ProBFT only,
    cascading failures take every target back to the previous phase and pause.

The rehearsals run the production plan through scripts/dwcp-rehearsal, which
changes only sampling (interval, min_samples, max_wait, check `for` kept in
intervals) and, here, shortens the steps and validation windows (docs/dwcp.md).
Every wait is bounded; the fixtures stop every process by pid."""
import json
import os
import subprocess
import time

import pytest

from conftest import (ADMIN_TOKEN, SRC, Daemon, bin_path, free_port, http, http_json,
                      parse_metrics, wait_until)
from test_judge import prom_query, prometheus_start
from test_rollout import Receiver

COMPONENTS = ("manager", "compression", "probft", "bullshark", "tpbft", "maddpg")
VERSIONS = ("v1", "v3")
EXAMPLES = os.path.join(SRC, "examples", "dwcp")
PROD = os.path.join(EXAMPLES, "canaryd.yaml")
REHEARSAL = os.path.join(SRC, "scripts", "dwcp-rehearsal")
# the production plan's loopback ports: component i (1..6) v1 at 71i1, v3 at 71i3
PLAN_PORT = {(c, v): 7111 + 10 * i + (2 if v == "v3" else 0)
             for i, c in enumerate(COMPONENTS) for v in VERSIONS}
PATHS = {"manager": "/manager", "compression": "/compression", "probft": "/consensus/probft",
         "bullshark": "/consensus/bullshark", "tpbft": "/consensus/tpbft",
         "maddpg": "/allocator"}
APPROVERS = ("vp-eng", "infra-director", "security-lead")
TERMINAL = ("completed", "rolled_back", "failed")

# The seed's KPIs as dwcp-sim exports them, healthy (v3; v1 differs where noted).
HEALTHY = {
    "manager": {"dwcp_manager_health_check_success_ratio": 0.9995,
                "dwcp_manager_recovery_latency_p99_seconds": 0.387,
                "dwcp_manager_memory_bytes": 2147483648.0,
                "dwcp_manager_circuit_breaker_trips_total": 0},
    "compression": {"dwcp_compression_accuracy": 0.9965,
                    "dwcp_compression_overhead_ratio": 0.048},
    "probft": {"dwcp_probft_consensus_time_p95_seconds": 1.8,
               "dwcp_probft_byzantine_events_total": 0,
               "dwcp_probft_consensus_failures_total": 0},
    "bullshark": {"dwcp_bullshark_transactions_per_second": 326000,
                  "dwcp_bullshark_confirmation_latency_p99_seconds": 0.95},
    "tpbft": {"dwcp_tpbft_latency_seconds": 0.045, "dwcp_tpbft_message_reduction_ratio": 0.41},
    "maddpg": {"dwcp_maddpg_efficiency_gain_ratio": 0.284},
}
LEGACY = {"dwcp_tpbft_latency_seconds": 0.057, "dwcp_tpbft_message_reduction_ratio": 0,
          "dwcp_maddpg_efficiency_gain_ratio": 0}


def test_examples_agree_on_the_simulator_ports():
    """canaryd.yaml, staging.yaml, prometheus.yml and `make demo-dwcp` (which starts
    dwcp-sim on PLAN_PORT) name the same twelve instances."""
    import yaml
    for name in ("canaryd.yaml", "staging.yaml"):
        with open(os.path.join(EXAMPLES, name)) as f:
            doc = yaml.load(f, Loader=plan_loader())
        got = {(svc[len("dwcp-"):], ver): v["endpoints"]
               for svc, s in doc["services"].items() for ver, v in s["versions"].items()}
        assert got == {k: [f"127.0.0.1:{p}"] for k, p in PLAN_PORT.items()}, (name, got)
        routes = {r["service"]: r["match"]["path_prefix"] for r in doc["listeners"][0]["routes"]}
        assert routes == {f"dwcp-{c}": p for c, p in PATHS.items()}, (name, routes)
    with open(os.path.join(EXAMPLES, "prometheus.yml")) as f:
        prom = yaml.safe_load(f)
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert sorted(targets) == sorted(f"127.0.0.1:{p}" for p in PLAN_PORT.values()), targets
    with open(os.path.join(SRC, "scripts", "demo-dwcp")) as f:
        demo = f.read()
    assert '--instance "$c:v1:127.0.0.1:71${n}1" --instance "$c:v3:127.0.0.1:71${n}3"' in demo
    assert "for c in manager compression probft bullshark tpbft maddpg; do" in demo


# --- the simulator ------------------------------------------------------------------------

class Sim:
    def __init__(self, proc, ports):
        self.proc, self.ports = proc, ports

    def url(self, comp, ver, path=""):
        return f"http://127.0.0.1:{self.ports[(comp, ver)]}{path}"

    def metrics(self, comp, ver):
        st, _, body = http("GET", self.url(comp, ver, "/metrics"))
        assert st == 200, body
        return {name: value for (name, labels), value in parse_metrics(body.decode()).items()
                if ("version", ver) in labels}

    def fault(self, fault, body=None, **params):
        """POST /_sim/fault (query params, or a JSON body); (status, doc)."""
        q = "&".join(f"{k}={v}" for k, v in dict(params, fault=fault).items() if v is not None)
        url = self.url("manager", "v1", "/_sim/fault" + ("" if body is not None else "?" + q))
        return http_json("POST", url, body=body if body is not None else b"")

    def status(self):
        st, doc = http_json("GET", self.url("maddpg", "v1", "/_sim/status"))
        assert st == 200, doc
        return {(i["component"], i["version"]): i for i in doc["instances"]}


@pytest.fixture
def sim(procs):
    """start(ports=None, extra=()) -> Sim serving every component at v1 and v3."""

    def start(ports=None, extra=()):
        ports = ports or {k: free_port() for k in PLAN_PORT}
        argv = [bin_path("dwcp-sim"), "--seed", "7"] + list(extra)
        for (comp, ver), port in ports.items():
            argv += ["--instance", f"{comp}:{ver}:127.0.0.1:{port}"]
        p = procs(argv, name="dwcp-sim")

        def up():
            if not p.alive():
                raise AssertionError("dwcp-sim exited:\n" + p.output())
            return http("GET", f"http://127.0.0.1:{ports[('maddpg', 'v3')]}/_sim/status",
                        timeout=0.5)[0] == 200

        wait_until(up, 10, what="dwcp-sim")
        return Sim(p, ports)

    return start


def test_sim_serves_six_components_with_the_seed_kpis(sim):
    s = sim(extra=["--latency", "v3:1:0"])
    for comp in COMPONENTS:
        for ver in VERSIONS:
            st, hdrs, body = http("GET", s.url(comp, ver, "/api/status?x=1"))
            assert st == 200, body
            doc = json.loads(body)
            assert doc == {"component": comp, "version": ver, "path": "/api/status?x=1",
                           "status": "ok"}, doc
            m = s.metrics(comp, ver)
            want = dict(HEALTHY[comp])
            if ver == "v1":
                want.update({k: v for k, v in LEGACY.items() if k in want})
            for name, value in want.items():
                assert m.get(name) == pytest.approx(value), (comp, ver, name, m)
            # only its own component's KPIs, and its own API counters
            own = {n for n in m if not n.startswith(("dwcp_api_", "dwcp_sim_"))}
            assert own == set(want), (comp, ver, own)
            assert m["dwcp_api_requests_total"] == 1 and m["dwcp_api_errors_total"] == 0
            assert m["dwcp_api_error_ratio"] == 0


def test_sim_faults_switch_at_runtime_and_clear(sim):
    s = sim()
    # accuracy below 99% on the new version only
    st, doc = s.fault("accuracy_low", version="v3")
    assert st == 200, doc
    assert s.metrics("compression", "v3")["dwcp_compression_accuracy"] < 0.99
    assert s.metrics("compression", "v1")["dwcp_compression_accuracy"] == pytest.approx(0.9965)
    # consensus failures (a JSON body): more than 3 within seconds, v1 untouched
    st, doc = s.fault(None, body={"fault": "consensus_failures", "version": "v3"})
    assert st == 200, doc
    wait_until(lambda: s.metrics("probft", "v3")["dwcp_probft_consensus_failures_total"] > 3,
               10, 0.2, what="consensus failures > 3")
    assert s.metrics("probft", "v1")["dwcp_probft_consensus_failures_total"] == 0
    # throughput below 200K tx/s; a memory leak grows
    assert s.fault("throughput_low", version="v3")[0] == 200
    assert s.metrics("bullshark", "v3")["dwcp_bullshark_transactions_per_second"] < 200000
    assert s.fault("memory_leak", version="v3")[0] == 200
    m0 = s.metrics("manager", "v3")["dwcp_manager_memory_bytes"]
    wait_until(lambda: s.metrics("manager", "v3")["dwcp_manager_memory_bytes"] > m0 * 1.05, 10,
               0.2, what="memory growing")
    # integration errors: a share of manager and compression API calls answer 503
    assert s.fault("integration_errors", version="v3", percent=50)[0] == 200
    codes = {c: [http("GET", s.url(c, "v3", "/x"))[0] for _ in range(60)]
             for c in ("manager", "compression", "probft")}
    for c in ("manager", "compression"):
        assert set(codes[c]) == {200, 503} and 10 <= codes[c].count(503) <= 50, codes[c]
        assert s.metrics(c, "v3")["dwcp_api_error_ratio"] > 0.1
    assert set(codes["probft"]) == {200}
    # cascading: errors on the consensus layer and the allocator, not on the manager
    assert s.fault("clear")[0] == 200
    assert s.fault("cascading", version="v3", percent=100, latency_ms=5)[0] == 200
    for c in ("probft", "bullshark", "tpbft", "maddpg"):
        t0 = time.monotonic()
        st, _, body = http("GET", s.url(c, "v3", "/x"))
        assert st == 503 and json.loads(body)["error"] == "cascading", body
        assert time.monotonic() - t0 >= 0.004
        assert s.metrics(c, "v3")["dwcp_api_error_ratio"] == 1
    assert http("GET", s.url("manager", "v3", "/x"))[0] == 200
    assert http("GET", s.url("tpbft", "v1", "/x"))[0] == 200
    stat = s.status()
    assert set(stat[("tpbft", "v3")]["faults"]) == {"cascading"}
    assert stat[("tpbft", "v3")]["faults"]["cascading"]["percent"] == 100
    assert stat[("manager", "v3")]["faults"] == {} and stat[("tpbft", "v1")]["faults"] == {}
    # clear: every fault off, KPIs healthy again, the error windows empty
    st, doc = s.fault("clear", version="v3")
    assert st == 200, doc
    assert all(not i["faults"] for i in doc["instances"]), doc
    assert s.metrics("compression", "v3")["dwcp_compression_accuracy"] == pytest.approx(0.9965)
    assert s.metrics("tpbft", "v3")["dwcp_api_error_ratio"] == 0
    assert http("GET", s.url("tpbft", "v3", "/x"))[0] == 200


def test_sim_fault_switch_rejects_bad_requests(sim):
    s = sim()
    for kw, body, what in (({}, None, "fault: required"),
                           ({"fault": "bogus"}, None, "fault: want"),
                           ({"fault": "cascading", "percent": "200"}, None, "percent"),
                           ({"fault": "cascading", "component": "db"}, None, "component"),
                           ({}, {"fault": "cascading", "percent": "5"}, "percent: want a number"),
                           ({}, {"fault": 3}, "strings"),
                           ({}, [1], "not a JSON object")):
        url = s.url("probft", "v3", "/_sim/fault")
        q = "&".join(f"{k}={v}" for k, v in kw.items())
        st, doc = http_json("POST", url + ("?" + q if q else ""),
                            body=body if body is not None else b"")
        assert st == 400 and what in doc["error"], (kw, body, doc)
    assert http_json("GET", s.url("probft", "v3", "/_sim/fault"))[0] == 405
    assert http_json("GET", s.url("probft", "v3", "/_sim/nothing"))[0] == 404
    # nothing was switched on by a bad request
    assert all(not i["faults"] for i in s.status().values())
    r = subprocess.run([bin_path("dwcp-sim"), "--instance", "db:v1:127.0.0.1:1"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and 'component "db"' in r.stderr, r.stderr


# --- the examples --------------------------------------------------------------------------

def secrets_env(tmp_path):
    d = tmp_path / "secrets"
    d.mkdir(exist_ok=True)
    env = {"CANARYD_ADMIN_TOKEN": ADMIN_TOKEN, "DWCP_SECRETS_DIR": str(d),
           "DWCP_STATE_DIR": str(tmp_path)}
    for who in APPROVERS:
        (d / f"{who}.token").write_text(f"{who}-approver-secret-0123456789\n")
        env["TOKEN_" + who] = f"{who}-approver-secret-0123456789"
    return env


def check(path, env):
    r = subprocess.run([bin_path("canaryd"), "--check", "-c", path], capture_output=True,
                       text=True, timeout=30, env=dict(os.environ, **env))
    return r.returncode, r.stdout + r.stderr


@pytest.mark.parametrize("name", ["canaryd.yaml", "staging.yaml"])
def test_every_example_passes_check(tmp_path, name):
    rc, out = check(os.path.join(EXAMPLES, name), secrets_env(tmp_path))
    assert rc == 0, out
    assert "ok: 1 listener, 6 services" in out, out


def derive(tmp_path, speed, addrs=(), extra=()):
    argv = [REHEARSAL, "--speed", str(speed)] + list(extra)
    for old, new in addrs:
        argv += ["--addr", f"{old}={new}"]
    r = subprocess.run(argv + [PROD], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    path = tmp_path / "rehearsal.yaml"
    path.write_text(r.stdout)
    return str(path)


def plan_loader():
    """scripts/dwcp-rehearsal's YAML loader (YAML 1.2 booleans, as canaryd reads them)."""
    import importlib.util
    from importlib.machinery import SourceFileLoader
    spec = importlib.util.spec_from_loader("dwcp_rehearsal",
                                           SourceFileLoader("dwcp_rehearsal", REHEARSAL))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Loader


def test_rehearsal_config_changes_only_sampling(tmp_path):
    import yaml
    loader = plan_loader()
    path = derive(tmp_path, 86400)
    rc, out = check(path, secrets_env(tmp_path))
    assert rc == 0, out
    with open(PROD) as f:
        prod = yaml.load(f, Loader=loader)
    with open(path) as f:
        got = yaml.load(f, Loader=loader)
    a, b = prod["rollouts"]["dwcp-v3"], got["rollouts"]["dwcp-v3"]
    assert b["steps"] == a["steps"] and b["targets"] == a["targets"]
    assert b["analysis"]["interval"] == "86400s" and b["analysis"]["max_wait"] == "2592000s"
    for ca, cb in zip(a["analysis"]["checks"], b["analysis"]["checks"]):
        # check `for` stays the same number of intervals: 5m of 1m -> 5 x 86400s
        if "for" in ca:
            assert cb.pop("for") == "%ds" % (int(ca.pop("for")[:-1]) * 86400), ca
        if "metric" in ca:
            assert cb.pop("min_samples") == 50
        assert ca == cb
    assert {k: v for k, v in got.items() if k != "rollouts"} == \
        {k: v for k, v in prod.items() if k != "rollouts"}


# --- rehearsals of the production plan ----------------------------------------------------

SPEED = 86400  # one day of the plan is one second


class Plan:
    """A rehearsal of the production plan on loopback: dwcp-sim, Prometheus, canaryd,
    one loadgen per component."""

    def __init__(self, procs, tmp_path, sim, receiver, hold=None):
        self.sim = sim(extra=["--latency", "v1:50:10", "--latency", "v3:50:10"])
        self.prom = prometheus_start(procs, tmp_path, list(self.sim.ports.values()))
        wait_until(lambda: len(prom_query(self.prom, "dwcp_api_requests_total")) == 12, 30,
                   0.2, what="every sim instance scraped")
        self.proxy, admin = free_port(), free_port()
        addrs = [(f"127.0.0.1:{PLAN_PORT[k]}", f"127.0.0.1:{p}")
                 for k, p in self.sim.ports.items()]
        addrs += [("127.0.0.1:8080", f"127.0.0.1:{self.proxy}"),
                  ("127.0.0.1:9901", f"127.0.0.1:{admin}")]
        # shorter steps and windows than the plan's: seconds once divided by SPEED
        path = derive(tmp_path, SPEED, addrs,
                      ["--min-samples", "10", "--step-for", "1d", "--validate", "1d"])
        if hold:  # some steps held longer (the test says why)
            import yaml
            with open(path) as f:
                doc = yaml.load(f, Loader=plan_loader())
            for st in doc["rollouts"]["dwcp-v3"]["steps"]:
                if st.get("name") in hold:
                    st["for"] = hold[st["name"]]
            with open(path, "w") as f:
                yaml.safe_dump(doc, f, sort_keys=False)
        env = secrets_env(tmp_path)
        self.tokens = {w: env.pop("TOKEN_" + w) for w in APPROVERS}
        env["DWCP_PROMETHEUS"] = self.prom
        env["DWCP_NOTIFY_WEBHOOK"] = f"http://127.0.0.1:{receiver.port}/notify"
        p = procs([bin_path("canaryd"), "-c", path], env=env, cwd=str(tmp_path), name="canaryd")
        self.d = Daemon(p, admin, str(tmp_path), path)

        def healthy():
            if not p.alive():
                raise AssertionError("canaryd exited:\n" + p.output())
            return http("GET", self.d.url + "/v1/health", timeout=0.5)[0] == 200

        wait_until(healthy, 15, what="canaryd health")
        self.loads = [procs([bin_path("loadgen"), "--url",
                             f"http://127.0.0.1:{self.proxy}{PATHS[c]}/op", "--rate", "60",
                             "--duration", "0", "--keys", "5000", "--header", "x-session-id",
                             "--seed", str(11 + i)], name=f"loadgen-{c}")
                      for i, c in enumerate(COMPONENTS)]
        self.seen = []  # (step name, weights) in the order they were first seen
        self.flag_plan = False  # also approve the dwcp-v3-hde gates

    def get(self):
        st, doc = self.d.get("/v1/rollouts/dwcp-v3")
        assert st == 200, doc
        return doc

    def weights(self, r=None):
        r = r or self.get()
        return {t["name"]: t["weight"] for t in r["targets"]}

    def observe(self):
        r = self.get()
        # a step's weights apply once it runs (a time gate may hold it waiting first)
        name = r["step"].get("name") if r["step"].get("phase") == "running" else None
        key = (name, self.weights(r))
        if not self.seen or self.seen[-1] != key:
            self.seen.append(key)
        return r

    def start(self):
        st, doc = self.d.post("/v1/rollouts/dwcp-v3/start", {"rehearse": SPEED})
        assert st == 200, doc

    def run_until(self, pred, timeout, what, approve=True):
        """Polls the rollout (recording steps and weights) and gives every approval
        gate its three approvals (unless approve is False), until pred(rollout) holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.observe()
            if pred(r):
                return r
            gates = [("dwcp-v3", r)]
            if self.flag_plan:
                st, doc = self.d.get("/v1/rollouts/dwcp-v3-hde")
                assert st == 200, doc
                gates.append(("dwcp-v3-hde", doc))
            for name, x in gates:
                if approve and x["state"] == "progressing" and x["step"]["kind"] == "approval":
                    for who in APPROVERS:
                        st, doc = self.d.post(f"/v1/rollouts/{name}/approve",
                                              token=self.tokens[who])
                        assert st == 200, doc
            time.sleep(0.05)
        r = self.get()
        raise AssertionError(f"timed out after {timeout}s waiting for {what}: state "
                             f"{r['state']} ({r.get('pause_reason')}) at {r['step']}")

    def events(self, kind):
        out, since = [], 0
        for _ in range(100):
            st, doc = self.d.get(f"/v1/rollouts/dwcp-v3/events?since={since}&limit=1000")
            assert st == 200, doc
            out += doc["events"]
            if len(doc["events"]) < 1000:
                break
            since = doc["events"][-1]["id"]
        return [e for e in out if e["kind"] == kind]


def step_weights(name):
    """The weights the production plan sets at step NAME (targets not named: 0)."""
    import yaml
    with open(PROD) as f:
        plan = yaml.load(f, Loader=plan_loader())["rollouts"]["dwcp-v3"]
    out = {c: 0 for c in COMPONENTS}
    for st in plan["steps"]:
        out.update(st.get("set", {}))
        if st.get("name") == name:
            return out
    raise KeyError(name)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def hde(d, node):
    st, doc = d.post("/ofrep/v1/evaluate/flags/dwcp_v3_hde",
                     {"context": {"targetingKey": node, "nodeId": node}})
    assert st == 200, doc
    return doc["value"]


def test_rehearsal_healthy_path_through_every_phase(procs, tmp_path, sim, receiver):
    plan = Plan(procs, tmp_path, sim, receiver)
    plan.start()
    # the dwcp_v3_hde flag plan runs beside it: 10% -> 50% -> 100% of the nodes
    plan.flag_plan = True
    st, doc = plan.d.post("/v1/rollouts/dwcp-v3-hde/start", {"rehearse": SPEED})
    assert st == 200, doc
    nodes = [f"node-{i}" for i in range(200) if i not in (123, 456)]
    r = plan.run_until(lambda r: r["state"] in TERMINAL, 120, "completion")
    assert r["state"] == "completed", (r["state"], r["step"], plan.seen,
                                       [e["details"].get("reason")
                                        for e in plan.events("rollout.rollback")])
    # every traffic phase was seen with the plan's weights, in the plan's order
    phases = [n for n, _ in plan.seen if n and n.startswith("phase-")]
    order = ["phase-1-shadow", "phase-2", "phase-3", "phase-4", "phase-5", "phase-6-canary",
             "phase-6", "phase-7-95", "phase-7-100"]
    assert [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p] == order, plan.seen
    for name, w in plan.seen:
        if name in order[1:]:
            assert w == {c: float(v) for c, v in step_weights(name).items()}, (name, w)
    assert plan.weights(r) == {c: 100.0 for c in COMPONENTS}
    for c in COMPONENTS:
        wait_until(lambda c=c: plan.d.get(f"/v1/services/dwcp-{c}")[1]["stable"] == "v3", 10,
                   what=f"{c} stable v3")
    # the flag plan: both gates approved by the three approvers, at 100% every node
    # but the excluded node-123 and node-456 gets HDE
    f = wait_until(lambda: (lambda x: x["state"] in TERMINAL and x)(
        plan.d.get("/v1/rollouts/dwcp-v3-hde")[1]), 60, 0.1, what="dwcp-v3-hde done")
    assert f["state"] == "completed", f
    flag_steps = [e["details"].get("step_name") for e in plan.d.get(
        "/v1/rollouts/dwcp-v3-hde/events?limit=1000")[1]["events"] if e["kind"] == "rollout.step"]
    assert [n for n in flag_steps if n in ("hde-10", "hde-50", "hde-100")] == \
        ["hde-10", "hde-50", "hde-100"], flag_steps
    assert hde(plan.d, "node-123") is False and hde(plan.d, "node-456") is False
    off = [n for n in nodes if hde(plan.d, n) is not True]
    assert not off, f"nodes without HDE at 100%: {off}"
    # "Day 1 ... Week 1 ... Month 1": the plan's validation windows follow completion
    st, doc = plan.d.get("/v1/rollouts/dwcp-v3/validation")
    assert st == 200, doc
    assert [w["name"] for w in doc["windows"]] == ["day-1", "week-1", "month-1"], doc
    # two approval gates, each approved by the three approvers
    who = [e["actor"] for e in plan.events("rollout.approved")]
    assert who == list(APPROVERS) * 2, who
    # every event of the run says it is a rehearsal at this speed
    started = plan.events("rollout.started")
    assert started and started[-1]["details"].get("rehearsal") == SPEED, started
    assert not plan.events("rollout.rollback")
    # "48 hours before phase transition": an `upcoming` notification before each
    # scheduled step (06:00Z, 12:00Z) and approval gate, each sent once
    got = receiver.on("/notify")
    ups = [b["canaryd"] for b in got if b["canaryd"]["event"].endswith("upcoming")]
    assert ups, sorted({b["canaryd"]["event"] for b in got})
    assert all("REHEARSAL" in b["text"] for b in got), [b["text"] for b in got]


def test_rehearsal_faults_roll_back_what_the_seed_says(procs, tmp_path, sim, receiver):
    # phase-6 is held 8 s (the other steps 1 s) so the cascade is injected and
    # detected while phase-6's weights are in force
    plan = Plan(procs, tmp_path, sim, receiver, hold={"phase-6": "8d"})
    plan.start()
    s = plan.sim

    def at(step):
        return lambda r: r["step"].get("name") == step or r["state"] in TERMINAL

    def rollbacks():
        return [e["details"] for e in plan.events("rollout.rollback")]

    def rolled_back(r):
        return {t["name"] for t in r["targets"] if t["rolled_back"]}

    # 1. Phase 3: "Compression accuracy <99% -> Rollback Compression Selector".  The
    # accuracy drops during phase-2, before the Compression Selector takes traffic:
    # its check applies from phase-3 on, whose evidence it then holds back.
    plan.run_until(at("phase-2"), 60, "phase-2")
    assert s.fault("accuracy_low", version="v3")[0] == 200
    plan.run_until(lambda r: rollbacks() or r["state"] in TERMINAL, 60, "compression rollback")
    s.fault("clear")
    rb = rollbacks()
    assert len(rb) == 1 and rb[0]["targets"] == ["compression"], rb
    assert rb[0]["verdict"]["check"] == "compression-accuracy", rb
    assert rb[0]["step"] == 3 and not rb[0].get("partial"), rb  # phase-3
    r = plan.get()
    assert rolled_back(r) == {"compression"}, r
    # only the Compression Selector moved: the manager kept phase-3's 25%
    assert plan.weights(r) == dict(step_weights("phase-3"), compression=0), r
    # 2. Phase 4: "Consensus failure detected -> Automated rollback" of ProBFT,
    # injected before ProBFT joins at 5%
    assert s.fault("consensus_failures", version="v3")[0] == 200
    plan.run_until(lambda r: len(rollbacks()) == 2 or r["state"] in TERMINAL, 60,
                   "probft rollback")
    s.fault("clear")
    rb = rollbacks()[1]
    assert rb["targets"] == ["probft"] and rb["step"] == 4, rb  # phase-4
    assert rb["verdict"]["check"] == "probft-consensus-failures", rb
    r = plan.get()
    assert rolled_back(r) == {"compression", "probft"}, r
    assert plan.weights(r) == dict(step_weights("phase-4"), compression=0, probft=0), r
    # 3. Phase 6: "Cascading failures across systems -> Rollback to 75%": every
    # target back to the previous phase's weights (phase-6-canary: manager at 75%)
    r = plan.run_until(lambda r: at("phase-6")(r) and r["step"]["phase"] == "running", 60,
                       "phase-6")
    assert plan.weights(r) == dict(step_weights("phase-6"), compression=0, probft=0), r
    assert s.fault("cascading", version="v3")[0] == 200
    # cutover-approval is not given: should phase-6 pass before the cascade is
    # detected, the rollout waits at the gate with phase-6's weights in force
    plan.run_until(lambda r: len(rollbacks()) == 3 or r["state"] in TERMINAL, 30,
                   "the partial rollback", approve=False)
    s.fault("clear")
    rb = rollbacks()[2]
    assert rb.get("partial") is True and rb.get("rollback_to") == "phase-6-canary", rb
    assert rb["verdict"]["check"] == "cascading", rb
    r = plan.get()
    assert r["state"] == "paused" and r["step"]["name"] == "phase-6-canary", r
    # rolled-back targets stay at 0, the others at phase-6-canary's weights
    want = dict(step_weights("phase-6-canary"), compression=0, probft=0)
    assert plan.weights(r) == want and want["manager"] == 75, r
    assert rolled_back(r) == {"compression", "probft"}, r
    # in that order, each with its evidence bundle, and nothing moves while paused
    assert [x["targets"] for x in rollbacks()[:2]] == [["compression"], ["probft"]]
    time.sleep(3)
    r = plan.get()
    assert r["state"] == "paused" and plan.weights(r) == want, r
    assert len(rollbacks()) == 3, rollbacks()
    finished = plan.events("rollout.rollback.finished")
    assert len(finished) == 3 and all(e["details"].get("evidence") for e in finished), finished
