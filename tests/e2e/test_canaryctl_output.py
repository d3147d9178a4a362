"""canaryctl's output formats (SPEC 8: `-o table|json|yaml`): on every verb that
prints the server's document, `-o yaml` must parse (PyYAML, a YAML 1.1 reader:
the strictest about what a plain scalar means) to the same value as `-o json`,
with the keys in the same order.  The documents carry strings that a naive
emitter would turn into booleans, nulls, numbers, comments or broken lines."""
import json
import os
import subprocess

import pytest

import yaml  # python3-yaml: scripts/install-deps installs it

from conftest import ADMIN_TOKEN, bin_path, http, wait_until  # noqa: E402

# A flag whose description and variant values are the hard cases for YAML.
TRICKY_FLAG = r'''flags:
  tricky:
    description: "yes: no # not a comment \"quoted\" back\\slash tab\there\nsecond line é ✓ \u2028 \u0085 - [x] {y} & *a !b %c @d `e"
    enabled: true
    variants:
      "on": "null"
      "off": "1e5"
      yes-str: "yes"
      num: 0.5
      small: 1.0e-5
      big: 12345678901234
      huge: 1.0e+20
      neg: -3
      empty: ""
      colon: "a: b"
      lead: " leading space"
      date: "2024-01-02"
      octal: "0o17"
      tilde: "~"
      nested: {list: [1, "2", null, true, [], {}], "key with space": {"": "empty key"}}
    off_variant: "off"
    rollout: {"on": 10}
'''


@pytest.fixture
def daemon(canaryd, upstream):
    v1, v2 = upstream("v1"), upstream("v2")
    body = (
        "services:\n"
        "  web:\n    versions:\n"
        f"      v1: {{endpoints: [127.0.0.1:{v1}]}}\n"
        f"      v2: {{endpoints: [127.0.0.1:{v2}]}}\n"
        "    stable: v1\n"
        "rollouts:\n"
        "  web-v2:\n    target: {service: web, canary: v2}\n"
        "    steps: [{weight: 10}, {pause: {}}, {weight: 100}]\n"
    )
    # the fixture runs str.format on the text: protect the YAML's braces
    return canaryd((body + TRICKY_FLAG).replace("{", "{{").replace("}", "}}"))


def ctl(d, *args):
    env = dict(os.environ)
    env.pop("CANARYD_TOKEN", None)
    env.pop("CANARYD_SERVER", None)
    argv = [bin_path("canaryctl"), "--server", d.url, "--token", ADMIN_TOKEN] + list(args)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=20, env=env)
    assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
    return r.stdout


def key_order(v):
    """Every mapping's keys in order, depth first: YAML must keep JSON's order."""
    if isinstance(v, dict):
        return [list(v)] + [k for x in v.values() for k in key_order(x)]
    if isinstance(v, list):
        return [k for x in v for k in key_order(x)]
    return []


def same(d, *verb):
    """-o yaml and -o json of the same read, before and after the verb."""
    as_json = json.loads(ctl(d, "-o", "json", *verb))
    out = ctl(d, "-o", "yaml", *verb)
    as_yaml = yaml.safe_load(out)
    assert as_yaml == as_json, (verb, out)
    assert key_order(as_yaml) == key_order(as_json), verb
    # the option after the verb means the same
    assert yaml.safe_load(ctl(d, *verb, "-o", "yaml")) == as_json, verb
    return as_json, out


def test_yaml_equals_json_on_every_read_verb(daemon):
    d = daemon
    ctl(d, "rollout", "start", "web-v2")
    flag, out = same(d, "flags", "get", "tricky")
    v = flag["variants"]
    # the hard cases really reached the document (else the test proves nothing)
    assert v["on"] == "null" and v["off"] == "1e5" and v["yes-str"] == "yes"
    assert v["small"] == pytest.approx(1e-5) and v["huge"] == 1e20 and v["empty"] == "" and v["date"] == "2024-01-02"
    assert "\n" in flag["description"] and "\u2028" in flag["description"]
    # line breaks inside strings are escaped: one line per key
    assert "\u2028" not in out and "\u0085" not in out
    same(d, "flags", "list")
    same(d, "rollout", "list")
    view, _ = same(d, "rollout", "get", "web-v2")
    assert view["state"] and view["targets"]
    same(d, "shadow", "web")
    # status carries the uptime-free health document
    same(d, "status")


def test_yaml_on_writing_verbs(daemon, tmp_path):
    d = daemon
    # a write's answer is compared with the JSON of the same write repeated
    # (idempotent), or with the state read back
    y = yaml.safe_load(ctl(d, "-o", "yaml", "faults", "set", "web", "v2", "--abort", "503:10"))
    j = json.loads(ctl(d, "-o", "json", "faults", "set", "web", "v2", "--abort", "503:10"))
    assert y == j and y["faults"]["abort"]["status"] == 503
    y = yaml.safe_load(ctl(d, "-o", "yaml", "flags", "set", "tricky", "--percentage", "20"))
    assert y == json.loads(ctl(d, "-o", "json", "flags", "get", "tricky"))
    y = yaml.safe_load(ctl(d, "-o", "yaml", "rollout", "start", "web-v2"))
    assert isinstance(y["message"], str) and y["rollout"]["name"] == "web-v2"
    assert set(y["rollout"]) == set(json.loads(ctl(d, "-o", "json", "rollout", "get", "web-v2")))
    y = yaml.safe_load(ctl(d, "-o", "yaml", "rollback", "--all"))
    assert y["rolled_back"] == 1 and [r["name"] for r in y["rollouts"]] == ["web-v2"]
    y = yaml.safe_load(ctl(d, "-o", "yaml", "evidence", "web-v2", "--out",
                           str(tmp_path / "ev")))
    assert y["rollout"] == "web-v2" and y["dir"] == str(tmp_path / "ev")
    assert {f["name"] for f in y["files"]} == set(os.listdir(tmp_path / "ev"))


def test_watch_yaml_prints_one_document_per_change(daemon):
    d = daemon
    ctl(d, "rollout", "start", "web-v2")
    ctl(d, "rollout", "promote", "web-v2", "--full")
    # watch exits 0 once the rollout completed, 1 when it did not
    out = ctl(d, "-o", "yaml", "watch", "web-v2", "--interval-ms", "50")
    docs = list(yaml.safe_load_all(out))
    assert docs and out.startswith("---\n") and docs[-1]["state"] == "completed"

    # once nothing moves any more, watch prints exactly the document get prints
    def settled():
        v = json.loads(ctl(d, "-o", "json", "rollout", "get", "web-v2"))
        return v["finalized"] and v
    view = wait_until(settled, 10, 0.05, "web-v2 finalized")
    out = ctl(d, "-o", "yaml", "watch", "web-v2", "--interval-ms", "50")
    assert list(yaml.safe_load_all(out)) == [view], out


def test_yaml_long_keys(daemon):
    """YAML caps an implicit key at 1024 characters: a variant value's longer
    key (escapes count: 200 control bytes are 1200 characters) still reads back."""
    d = daemon
    value = {"k" * 1100: [1, {"x": 2}], "\x01" * 200: {"a": 1}, "short": 3}
    st, _, body = http("PUT", d.url + "/v1/feature-flags/longkeys",
                       {"variants": {"on": value, "off": None}, "off_variant": "off"},
                       token=ADMIN_TOKEN)
    assert st in (200, 201), body
    flag, _ = same(d, "flags", "get", "longkeys")
    assert flag["variants"]["on"] == value
