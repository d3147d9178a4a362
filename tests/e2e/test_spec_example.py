"""The configuration example of SPEC section 3, as written, against `canaryd --check`.

The example is the product's contract: whatever it shows must validate.  It is
kept byte for byte in tests/e2e/data/spec-section3.yaml (CI runs on a clone
that may not have ../shared) and compared with ../shared/SPEC.md whenever that
file is there.  Only two things are changed before the check: the secrets come
from the environment and from temporary files (the example's secret_file paths
under /etc/canaryd/ are rewritten, nothing else).

NOT_BUILT lists the keys the code does not accept yet.  The example minus those
keys must pass; each of them put back alone must fail naming it; and the example
as written must fail on exactly those keys.  So the list can only shrink: when a
key gets built, its test says to delete it from the list.  When the open issues
are done the list is empty."""
import os
import re
import subprocess

import pytest
import yaml
from yaml.nodes import MappingNode, SequenceNode

from conftest import SRC, bin_path

COPY = os.path.join(os.path.dirname(__file__), "data", "spec-section3.yaml")
SPEC = os.path.join(SRC, "..", "shared", "SPEC.md")

# Key paths (as canaryd's errors spell them) that the example uses and the code
# does not accept yet.  Delete an entry when its key is built.
NOT_BUILT = [
]

SECRET_FILE = re.compile(r"(secret_file: )/etc/canaryd/([a-z-]+\.token)$", re.M)
# --check loads the listener's certificate and key: a self-signed pair stands in
TLS_FILE = re.compile(r"/etc/canaryd/(api\.(?:crt|key))\b")
ADMIN_SECRET = "spec-example-admin-secret-0123456789"


def spec_section3(text):
    """The first ```yaml block of SPEC.md's section 3, with its final newline."""
    start = text.index("\n## 3. ")
    end = text.index("\n## 4. ", start)
    m = re.search(r"\n```yaml\n(.*?\n)```\n", text[start:end], re.S)
    assert m, "SPEC.md section 3 has no ```yaml block"
    return m.group(1)


def example():
    with open(COPY, encoding="utf-8") as f:
        return f.read()


def parse_path(path):
    segs = []
    for m in re.finditer(r"([^.\[\]]+)|\[(\d+)\]", path):
        segs.append(int(m.group(2)) if m.group(2) is not None else m.group(1))
    return segs


def locate(text, path):
    """(parent node, key node or None for a list item, value node) of path."""
    node, parent, key = yaml.compose(text), None, None
    for seg in parse_path(path):
        if isinstance(seg, int):
            assert isinstance(node, SequenceNode) and seg < len(node.value), path
            parent, key, node = node, None, node.value[seg]
        else:
            assert isinstance(node, MappingNode), path
            pairs = [(k, v) for k, v in node.value if k.value == seg]
            assert pairs, f"{path}: no key {seg!r} in the example"
            parent, (key, node) = node, pairs[0]
    return parent, key, node


def indent_of(line):
    return len(line) - len(line.lstrip(" "))


def is_content(line):
    s = line.strip()
    return bool(s) and not s.startswith("#")


def remove(text, path):
    """text without the key (or list item) at path; the rest byte for byte."""
    parent, key, node = locate(text, path)
    first = key if key is not None else node
    if parent.flow_style:
        # inside {...} or [...]: cut the item and one separating comma
        a, b = first.start_mark.index, node.end_mark.index
        after = re.match(r"\s*,\s*", text[b:])
        if after:
            b += after.end()
        else:
            before = re.search(r",\s*$", text[:a])
            if before:
                a = before.start()
        return text[:a] + text[b:]
    lines = text.splitlines(keepends=True)
    ln, col = first.start_mark.line, first.start_mark.column
    if key is None:
        col -= 2  # a block list item: its "- " owns what follows
    end = ln + 1
    last = ln
    while end < len(lines) and (not is_content(lines[end]) or indent_of(lines[end]) > col):
        if is_content(lines[end]):
            last = end
        end += 1
    end = last + 1  # comments after the item stay with what follows
    prefix = lines[ln][:col]
    out = lines[:ln]
    rest = lines[end:]
    if prefix.strip() == "-":
        # the first key of a list item: the next key of that item takes the "- "
        nxt = next((i for i, x in enumerate(rest) if is_content(x)), None)
        if nxt is not None and indent_of(rest[nxt]) == col:
            rest[nxt] = prefix + rest[nxt][col:]
        else:
            out.append(prefix + "{}\n")
    return "".join(out + rest)


def without(text, paths):
    # deepest and last first, so earlier paths still point where they did
    for p in sorted(paths, key=lambda p: (locate(text, p)[2].start_mark.index), reverse=True):
        text = remove(text, p)
    return text


def check(tmp_path, text):
    """Runs canaryd --check on text with the secrets provided; (rc, stderr)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)

    def to_temp(m):
        f = secrets / m.group(2)
        f.write_text("spec-example-" + m.group(2).replace(".", "-") + "-0123456789\n")
        return m.group(1) + str(f)

    text, n = SECRET_FILE.subn(to_temp, text)
    assert n == 3, "the example's three secret_file tokens were not found"
    if TLS_FILE.search(text):
        if not (secrets / "api.crt").exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                            "-subj", "/CN=api.example.com", "-keyout", str(secrets / "api.key"),
                            "-out", str(secrets / "api.crt")],
                           check=True, capture_output=True, timeout=60)
        text = TLS_FILE.sub(lambda m: str(secrets / m.group(1)), text)
    cfg = tmp_path / "canaryd.yaml"
    cfg.write_text(text, encoding="utf-8")
    env = dict(os.environ, CANARYD_ADMIN_TOKEN=ADMIN_SECRET)
    r = subprocess.run([bin_path("canaryd"), "--check", "-c", str(cfg)], cwd=str(tmp_path),
                       env=env, capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


def error_paths(out):
    """The key path of each `file:line: path: message` line."""
    return [m.group(1) for m in re.finditer(r"^[^\s:]+:\d+: (\S+): ", out, re.M)]


def test_in_tree_copy_is_spec_section3_as_written():
    if not os.path.exists(SPEC):
        # CI's clean clone may have no ../shared beside it: the --check tests below
        # still run on the in-tree copy; the comparison runs wherever SPEC.md is
        pytest.skip(f"{SPEC} is not beside this clone; the in-tree copy is checked alone")
    with open(SPEC, encoding="utf-8") as f:
        spec = spec_section3(f.read())
    assert example() == spec, (
        "tests/e2e/data/spec-section3.yaml differs from SPEC.md section 3: copy it again "
        "byte for byte and update NOT_BUILT")


def test_removing_a_key_keeps_everything_else():
    # the helper the other tests rely on: a list item's first key, a flow item
    text = example()
    cut = remove(text, "rollouts.dwcp-manager-v3.steps[1].name")
    assert "      - set: {manager: 5, hde: 5}\n        for: 24h\n" in cut
    assert len(cut.splitlines()) == len(text.splitlines()) - 1
    cut = remove(text, "rollouts.dwcp-manager-v3.notify[0].events[5]")
    assert "events: [step, paused, approval_needed, rollback, completed]" in cut
    cut = remove(text, "services.dwcp-manager.versions.v3.health")
    assert "        endpoints: [10.0.0.9:7000]\n    stable: v1\n" in cut


def test_example_as_written_fails_only_on_the_keys_not_built(tmp_path):
    rc, out = check(tmp_path, example())
    if not NOT_BUILT:
        assert rc == 0, out
        return
    assert rc == 1, out
    assert sorted(set(error_paths(out))) == sorted(NOT_BUILT), out


def test_example_without_the_keys_not_built_passes_check(tmp_path):
    rc, out = check(tmp_path, without(example(), NOT_BUILT))
    assert rc == 0, out


@pytest.mark.parametrize("key", NOT_BUILT)
def test_each_key_not_built_alone_fails_check_naming_it(tmp_path, key):
    rc, out = check(tmp_path, without(example(), [k for k in NOT_BUILT if k != key]))
    assert rc == 1, f"{key} passes --check now: delete it from NOT_BUILT\n{out}"
    assert error_paths(out) and all(p == key for p in error_paths(out)), out
