"""canaryctl as a new user tries it (issue 15 §3): --version, VERB --help on every
verb, shell completion, `flags set` refusing to create a flag by typo, the audit
log (`events`, `events --follow`) and a flag's change history."""
import json
import os
import re
import shutil
import signal
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
    # the first word offered: every verb of --help
    assert set(names) <= set(complete_bash("canaryctl ")), complete_bash("canaryctl ")
    zsh_verbs = [ln for ln in zsh.splitlines() if "compadd" in ln and "--version" in ln]
    assert len(zsh_verbs) == 1 and set(names) <= set(zsh_verbs[0].split()), zsh_verbs
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


@pytest.mark.parametrize("mode", ["stream", "poll"])
def test_events_lists_filters_and_follows(canaryd, procs, mode):
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
               "events", "--follow", "--subject", "checkout",
               # streamed: a poll a minute could not deliver them in time
               "--interval-ms", "100" if mode == "poll" else "60000"],
              env={"CANARYCTL_EVENTS_POLL": "1"} if mode == "poll" else {},
              name="canaryctl-follow")
    time.sleep(0.5)
    run("flags", "set", "checkout", "--percentage", "35", d=d, check=0)

    def followed():
        got = [json.loads(ln) for ln in p.output().splitlines() if ln.startswith("{")]
        return got if got else None

    got = wait_until(followed, 10, what="events --follow output")
    assert len(got) == 1, got
    assert got[0]["details"]["after"]["rollout"] == {"on": 35}, got
    # and the next one too: following goes on
    run("flags", "set", "checkout", "--percentage", "36", d=d, check=0)
    got = wait_until(lambda: (lambda g: g if len(g) >= 2 else None)(followed()), 10,
                     what="a second followed event")
    assert len(got) == 2 and got[1]["details"]["after"]["rollout"] == {"on": 36}, got
    assert p.alive()
    p.signal(signal.SIGINT)  # Ctrl-C ends it cleanly
    assert p.wait(timeout=10) == 0


ROLLOUT_CONFIG = """services:
  web:
    versions:
      v1: {{endpoints: [127.0.0.1:{v1}]}}
      v2: {{endpoints: [127.0.0.1:{v2}]}}
    stable: v1
rollouts:
  web-v2:
    target: {{service: web, canary: v2}}
    steps: [{{weight: 10}}, {{pause: {{}}}}, {{weight: 100}}]
"""


def json_lines(proc):
    """Every line canaryd wrote (stdout and stderr), each parsed as JSON: a line that is
    not JSON fails the test."""
    out = []
    for ln in proc.output().splitlines()[1:]:  # line 0: the argv procs() writes
        try:
            out.append(json.loads(ln))
        except ValueError:
            raise AssertionError(f"canaryd wrote a line that is not JSON: {ln!r}")
    return out


def test_stderr_is_json_and_the_rollout_lifecycle_is_logged(canaryd, upstream):
    v1, v2 = upstream("v1"), upstream("v2")
    # the fixture runs str.format: ROLLOUT_CONFIG keeps its braces doubled
    d = canaryd(ROLLOUT_CONFIG.replace("{v1}", str(v1)).replace("{v2}", str(v2)))
    run("rollout", "start", "web-v2", d=d, check=0)

    def logged(event):
        return [x for x in json_lines(d.proc) if x.get("event") == event
                and x.get("rollout") == "web-v2"]

    started = wait_until(lambda: logged("rollout.started"), 10, what="rollout.started logged")
    assert started[0]["level"] == "info"
    wait_until(lambda: logged("rollout.step"), 10, what="rollout.step logged")
    run("rollout", "abort", "web-v2", d=d, check=0)
    rb = wait_until(lambda: logged("rollout.rollback"), 10, what="rollout.rollback logged")
    assert rb[0]["level"] == "warn" and "ROLLED BACK" in rb[0]["text"], rb

    # a reload of a broken file: the errors are JSON log lines too, not plain text
    with open(d.config_path) as f:
        good = f.read()
    with open(d.config_path, "w") as f:
        f.write(good.replace("stable: v1", "stabel: v1"))
    st, _ = d.post("/v1/config/reload")
    assert st == 422
    errs = wait_until(lambda: [x for x in json_lines(d.proc) if x.get("msg") == "configuration error"],
                      10, what="reload errors logged")
    assert any("did you mean `stable`?" in x["error"] for x in errs), errs
    assert all(x["level"] == "error" for x in errs)


def check(cfg_text, tmp_path, *extra, env=None):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(cfg_text)
    full = dict(os.environ)
    full.pop("CLI_HABITS_SECRET", None)
    full.update(env or {})
    return subprocess.run([bin_path("canaryd"), "--check", *extra, "-c", str(cfg)],
                          capture_output=True, text=True, timeout=10, env=full), str(cfg)


SECRET_CONFIG = """admin:
  listen: 127.0.0.1:1
  tokens:
    - name: ops
      secret: ${CLI_HABITS_SECRET}
      scopes: [admin]
services:
  demo:
    versions:
      v1: {endpoints: [127.0.0.1:2]}
      v2: {endpoints: [127.0.0.1:3]}
      v3: {endpoints: [127.0.0.1:4]}
    stable: v1
"""


def test_check_errors_help_the_fix(tmp_path):
    r, cfg = check(SECRET_CONFIG.replace("stable: v1", "stabel: v1")
                   + "rollouts:\n  r:\n    target: {service: demo, canary: v4}\n"
                   "    steps: [{weight: 10}]\n", tmp_path,
                   env={"CLI_HABITS_SECRET": "s3cret-s3cret"})
    assert r.returncode == 1
    assert f"{cfg}:13: services.demo.stabel: unknown key (did you mean `stable`?)" in r.stderr
    assert ('version "v4" is not defined in service "demo" (defined: v1, v2, v3)'
            in r.stderr), r.stderr
    r, cfg = check("admin:\n  listen: 127.0.0.1:1\n workers: 1\n", tmp_path)
    assert r.returncode == 1
    assert re.search(r"c\.yaml:\d+: syntax error at column \d+: .*check the indentation",
                     r.stderr), r.stderr


def test_check_allow_missing_env_lints_without_secrets(tmp_path):
    r, cfg = check(SECRET_CONFIG, tmp_path)
    assert r.returncode == 1
    assert "CLI_HABITS_SECRET is not set" in r.stderr
    r, cfg = check(SECRET_CONFIG, tmp_path, "--allow-missing-env")
    assert r.returncode == 0, r.stderr
    assert f"{cfg}:5: warning: environment variable CLI_HABITS_SECRET is not set" in r.stderr
    assert "1 services" in r.stdout or "1 service" in r.stdout, r.stdout
    # anything else wrong still fails
    r, _ = check(SECRET_CONFIG.replace("stable: v1", "stable: v9"), tmp_path,
                 "--allow-missing-env")
    assert r.returncode == 1 and 'version "v9" is not defined' in r.stderr, r.stderr
    # only a lint: a daemon never starts with placeholders
    r = subprocess.run([bin_path("canaryd"), "--allow-missing-env", "-c", cfg],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2


WATCH_CONFIG = """services:
  web:
    versions:
      v1: {{endpoints: [127.0.0.1:{v1}]}}
      v2: {{endpoints: [127.0.0.1:{v2}]}}
    stable: v1
rollouts:
  rollout-named-for-a-narrow-tty:
    target: {{service: web, canary: v2}}
    steps: [{{weight: 10}}, {{weight: 100, not_before: "{gate}"}}]
"""
LONG = "rollout-named-for-a-narrow-tty"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def watch_on_pty(d, cols, env_extra=None, seconds=1.5):
    """Runs `canaryctl watch` with stdout on a pseudo-terminal `cols` wide; returns what it
    drew in `seconds` (then it is stopped)."""
    import fcntl
    import pty
    import select
    import signal
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
    env = dict(os.environ)
    env.pop("NO_COLOR", None)
    env.update(env_extra or {})
    p = subprocess.Popen([bin_path("canaryctl"), "--server", d.url, "--token", ADMIN_TOKEN,
                          "watch", LONG, "--interval-ms", "200"], stdout=slave,
                         stderr=subprocess.PIPE, env=env, start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    out += os.read(master, 65536)
                except OSError:
                    break
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        os.close(master)
    return out.decode(errors="replace")


def last_screen(out):
    return out.rsplit("\x1b[H\x1b[2J", 1)[-1]


def test_watch_on_a_terminal(canaryd, upstream):
    v1, v2 = upstream("v1"), upstream("v2")
    gate = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    d = canaryd(WATCH_CONFIG.replace("{v1}", str(v1)).replace("{v2}", str(v2))
                .replace("{gate}", gate))
    run("rollout", "start", LONG, d=d, check=0)  # 10%, then a step gated an hour from now
    wait_until(lambda: d.get(f"/v1/rollouts/{LONG}")[1]["step"]["index"] == 1, 10,
               what="the rollout at its pause")

    out = watch_on_pty(d, 60)
    screen = last_screen(out)
    assert "progressing" in screen, out
    # colour and a status mark on a terminal
    assert "\x1b[32m\u25b6 progressing\x1b[0m" in screen, screen
    # fits 60 columns (no line wraps), cut between words with an ellipsis
    for ln in screen.replace("\r", "").split("\n"):
        assert len(ANSI.sub("", ln)) < 60, ln
    assert any(ln.endswith("\u2026") for ln in screen.replace("\r", "").split("\n")), screen
    # a countdown to the gate, as a duration
    m = re.search(r"next gate +in (\d+)m(\d+)s|next gate +in (\d+)m\b", screen)
    assert m, screen
    assert 55 <= int(m.group(1) or m.group(3)) <= 60, screen

    # NO_COLOR: no colours, no marks; still fits the terminal
    plain = last_screen(watch_on_pty(d, 60, {"NO_COLOR": "1"}))
    assert "progressing" in plain
    assert not re.search(r"\x1b\[3\dm", plain) and "\u25b6" not in plain, plain

    # piped: the plain block, durations for people, no countdown (it would change every poll)
    r = subprocess.run([bin_path("canaryctl"), "--server", d.url, "--token", ADMIN_TOKEN,
                        "rollout", "get", LONG], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and "\x1b" not in r.stdout and "next gate" not in r.stdout
