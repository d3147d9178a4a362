"""canaryctl as a new user tries it (issue 15 §3): --version, VERB --help on every
verb, shell completion, `flags set` refusing to create a flag by typo, the audit
log (`events`, `events --follow`) and a flag's change history."""
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import ADMIN_TOKEN, bin_path, wait_until  # noqa: E402

FLAG_CONFIG = """flags:
  checkout:
    enabled: true
    variants: {{"on": true, "off": false}}
    off_variant: "off"
    rollout: {{"on": 10}}
"""


def run(*args, d=None, check=None, timeout=20):
    env = dict(os.environ)
    env.pop("CANARYD_TOKEN", None)
    env.pop("CANARYD_SERVER", None)
    argv = [bin_path("canaryctl")]
    if d is not None:
        argv += ["--server", d.url, "--token", ADMIN_TOKEN]
    r = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=timeout,
                       env=env)
    if check is not None:
        assert r.returncode == check, (args, r.returncode, r.stdout, r.stderr)
    return r


def verbs():
    """The verbs canaryctl --help lists (first word of each usage line)."""
    out = run("--help", check=0).stdout
    section = out.split("verbs:\n", 1)[1].split("\n\n", 1)[0]
    names = []
    for line in section.splitlines():
        w = line.split()[0]
        if w not in names:
            names.append(w)
    return names


def test_version_of_both_binaries():
    ctl = run("--version", check=0).stdout.strip()
    assert re.fullmatch(r"canaryctl \d+\.\d+\.\d+", ctl), ctl
    r = subprocess.run([bin_path("canaryd"), "--version"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ctl.replace("canaryctl", "canaryd")


def test_every_verb_help_exits_0_with_its_usage():
    names = verbs()
    assert {"rollout", "flags", "events", "completion", "watch"} <= set(names)
    deeper = [["flags", "set"], ["flags", "set", "NAME", "--percentage", "5"],
              ["flags", "history"], ["rollout", "start"], ["rollout", "promote", "x"],
              ["faults", "set"], ["export", "prometheus-rules"], ["events", "--follow"]]
    for cmd in [[v] for v in names] + deeper:
        r = run(*cmd, "--help")
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        assert r.stdout.startswith("usage: canaryctl " + cmd[0]), (cmd, r.stdout)
        assert r.stderr == "", (cmd, r.stderr)


def test_completion_scripts_cover_every_verb():
    names = verbs()
    bash = run("completion", "bash", check=0).stdout
    zsh = run("completion", "zsh", check=0).stdout
    for v in names:
        assert re.search(rf"\b{re.escape(v)}\b", bash), v
        assert re.search(rf"\b{re.escape(v)}\b", zsh), v
    assert "complete -F _canaryctl canaryctl" in bash
    assert zsh.startswith("#compdef canaryctl")
    assert run("completion", "fish").returncode == 2
    r = subprocess.run(["bash", "-n"], input=bash, capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    if shutil.which("zsh"):
        r = subprocess.run(["zsh", "-n"], input=zsh, capture_output=True, text=True,
                           timeout=10)
        assert r.returncode == 0, r.stderr


def complete_bash(line):
    """What bash completion offers for `line` (the cursor at its end)."""
    script = run("completion", "bash", check=0).stdout
    words = line.split(" ")
    prog = (script + "\n"
            + "COMP_WORDS=(" + " ".join(f"'{w}'" for w in words) + ")\n"
            + f"COMP_CWORD={len(words) - 1}\n"
            + "_canaryctl\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    env = dict(os.environ, PATH=os.path.dirname(bin_path("canaryctl")) + ":" + os.environ["PATH"])
    r = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, timeout=20, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_bash_completion_offers_verbs_subcommands_and_names(canaryd):
    assert "rollout" in complete_bash("canaryctl ro")
    assert set(complete_bash("canaryctl flags ")) >= {"list", "get", "set", "history"}
    assert complete_bash("canaryctl -o ") == ["table", "json", "yaml"]
    d = canaryd(FLAG_CONFIG)
    assert complete_bash(f"canaryctl --server {d.url} --token {ADMIN_TOKEN} flags get ch") == [
        "checkout"]


def test_flags_set_does_not_create_a_flag_by_typo(canaryd):
    d = canaryd(FLAG_CONFIG)
    r = run("flags", "set", "chekout", "--percentage", "50", d=d, check=1)
    assert "does not exist" in r.stderr and "--create" in r.stderr, r.stderr
    st, _ = d.get("/v1/feature-flags/chekout")
    assert st == 404
    # an existing flag is set as before
    run("flags", "set", "checkout", "--percentage", "20", d=d, check=0)
    st, doc = d.get("/v1/feature-flags/checkout")
    assert st == 200 and doc["percentage"] == 20, doc
    assert "chekout" not in run("flags", "list", d=d, check=0).stdout
    # --create makes the new one
    run("flags", "set", "newflag", "--enabled", "--create", d=d, check=0)
    st, _ = d.get("/v1/feature-flags/newflag")
    assert st == 200


def test_flags_history_shows_before_and_after(canaryd):
    d = canaryd(FLAG_CONFIG)
    run("flags", "set", "checkout", "--percentage", "25", d=d, check=0)
    run("flags", "set", "checkout", "--percentage", "40", d=d, check=0)
    out = run("flags", "history", "checkout", d=d, check=0).stdout
    assert "flag.updated" in out, out
    # each change names the field, before -> after; unchanged fields are not shown
    changes = [ln.strip() for ln in out.splitlines() if "->" in ln]
    assert 'rollout: {"on":10} -> {"on":25}' in changes, out
    assert 'rollout: {"on":25} -> {"on":40}' in changes, out
    assert not any(c.startswith(("enabled:", "variants:")) for c in changes), out
    doc = json.loads(run("-o", "json", "flags", "history", "checkout", d=d, check=0).stdout)
    assert doc["flag"] == "checkout"
    assert len(doc["events"]) >= 2
    assert all(e["subject"] == "flag/checkout" and e["kind"].startswith("flag.")
               for e in doc["events"])
    last = doc["events"][-1]["details"]
    assert last["before"] is not None and last["after"] is not None
    assert json.dumps(last["before"]) != json.dumps(last["after"])


def test_events_lists_filters_and_follows(canaryd, procs):
    d = canaryd(FLAG_CONFIG)
    run("flags", "set", "checkout", "--percentage", "30", d=d, check=0)
    table = run("events", d=d, check=0).stdout
    assert table.splitlines()[0].split()[:3] == ["ID", "TIME", "ACTOR"]
    assert "flag.updated" in table
    lines = run("-o", "json", "events", "--subject", "checkout", d=d, check=0).stdout.splitlines()
    evs = [json.loads(ln) for ln in lines]
    assert evs and all(e["subject"] == "flag/checkout" for e in evs)
    assert run("events", "--subject", "no-such-thing", "-o", "json", d=d, check=0).stdout == ""

    # --follow prints only what happens after it starts, as it happens
    p = procs([bin_path("canaryctl"), "--server", d.url, "--token", ADMIN_TOKEN, "-o", "json",
               "events", "--follow", "--subject", "checkout", "--interval-ms", "100"],
              name="canaryctl-follow")
    time.sleep(0.5)
    run("flags", "set", "checkout", "--percentage", "35", d=d, check=0)

    def followed():
        got = [json.loads(ln) for ln in p.output().splitlines() if ln.startswith("{")]
        return got if got else None

    got = wait_until(followed, 10, what="events --follow output")
    assert len(got) == 1, got
    assert got[0]["details"]["after"]["rollout"] == {"on": 35}, got
    assert p.alive()
    p.stop()
