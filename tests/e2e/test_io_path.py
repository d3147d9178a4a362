"""The proxy's two I/O paths for plain TCP (docs/proxy.md "I/O path"): `io:
auto` (the default: io_uring when the kernel allows it, else epoll), `epoll`
and `uring`.  The proxy suites run on the default path; here a few
representative cases of test_proxy.py (pipelining, a response body bigger
than every buffer to a client that stalls, upstream refused / timed out /
reset) run again on each path named explicitly, so both stay covered by `make
test`, as does test_proxy_hostile.py's edge-triggered burst case on epoll; plus
the key's validation and the log line that names the path.

CANARYD_IO (the environment override of the key) is cleared for these
daemons, so the key is what chooses."""
import json
import re

import pytest

import test_proxy as tp
import test_proxy_hostile as th
from conftest import BASE_ADMIN, wait_until
from test_proxy import pyupstream  # noqa: F401  (a fixture the cases use)



def uring_available():
    """io_uring_setup(2) works in this process (a kernel or sandbox may forbid
    it: canaryd's `io: auto` then falls back to epoll, and `io: uring` refuses
    to start, so the uring cases are skipped, saying why)."""
    import ctypes
    import os
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
    fd = libc.syscall(425, 4, params)  # __NR_io_uring_setup on x86_64 and arm64
    if fd < 0:
        return False, os.strerror(ctypes.get_errno())
    os.close(fd)
    return True, ""


URING_OK, URING_WHY = uring_available()
PATHS = ["epoll", pytest.param("uring", marks=pytest.mark.skipif(
    not URING_OK, reason="io_uring unavailable here: %s" % URING_WHY))]


def on_path(canaryd, path):
    """canaryd's start(), with `io: <path>` in the configuration."""

    def start(body="", extra_env=None, **kw):
        env = dict(extra_env or {})
        env["CANARYD_IO"] = ""
        d = canaryd("io: %s\n" % path + body, extra_env=env, **kw)
        out = d.proc.output()
        want = '"msg":"proxy I/O path","io":"%s"' % path
        wait_until(lambda: want in d.proc.output(), 5, what="the I/O path log line")
        assert want in d.proc.output(), out
        return d

    return start


@pytest.fixture(params=PATHS)
def path_canaryd(request, canaryd):
    return on_path(canaryd, request.param)


def test_pipelined(path_canaryd, upstream):
    tp.test_pipelined_requests_answered_in_order(path_canaryd, upstream)


def test_big_response_body_backpressure(path_canaryd, pyupstream):  # noqa: F811
    tp.test_big_response_body_streams_in_bounded_memory(path_canaryd, pyupstream)


def test_upstream_failures(path_canaryd, upstream, pyupstream, dead_port):  # noqa: F811
    tp.test_upstream_down_502_timeout_504_and_metrics(path_canaryd, upstream, pyupstream,
                                                      dead_port)


@pytest.mark.parametrize("ending", ["fin", "keepalive"])
def test_burst_past_high_water_on_epoll(canaryd, ending):
    """The edge-triggered hazard test_proxy_hostile.py guards (a FIN that came
    with a burst gives no later edge) belongs to the epoll path: it keeps
    running there now that the default is io_uring."""
    th.test_a_burst_past_the_clients_high_water_mark_completes(on_path(canaryd, "epoll"), ending)


def test_default_is_auto(canaryd, upstream):
    """Without the key (and without CANARYD_IO) the proxy says which path
    auto chose: uring here when the kernel allows it, else epoll."""
    d = canaryd("", extra_env={"CANARYD_IO": ""})
    wait_until(lambda: '"msg":"proxy I/O path"' in d.proc.output(), 5, what="log line")
    out = d.proc.output()
    line = [x for x in out.splitlines() if '"msg":"proxy I/O path"' in x][0]
    # auto picks io_uring exactly when this process can set up a ring
    assert json.loads(line)["io"] == ("uring" if URING_OK else "epoll"), line


@pytest.mark.parametrize("value, message", [
    ("fast", 'expected auto, epoll or uring, got "fast"'),
    ("[uring]", "expected auto, epoll or uring"),
])
def test_bad_value_names_the_key(canaryd, value, message):
    d = canaryd(BASE_ADMIN + "io: %s\n" % value, header=False, wait=False)
    assert d.proc.wait(10) != 0
    out = d.proc.output()
    errs = [json.loads(x)["error"] for x in out.splitlines() if '"configuration error"' in x]
    assert errs and re.search(r"canaryd\.yaml:\d+: io: ", errs[0]) and message in errs[0], out
