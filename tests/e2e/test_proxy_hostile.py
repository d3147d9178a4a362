"""Hostile peers (issue 12 section 2, SPEC 4): the data plane never hangs a
client.  An upstream that sends the response head and part of the body and
then resets, closes or goes silent; a request with an empty header name; an
absolute-form request target; chunk extensions.

Each test was first a reproducer: before the fix, 12-15 of 20 parallel
clients hung, SIGTERM took 31 s and no upstream error was counted.  Every
wait is bounded (socket timeouts, wait_until, process waits)."""
import re
import signal
import socket
import threading

import pytest

from conftest import (BASE_ADMIN, free_port, http_json, metric, raw_request, scrape,
                      wait_until)
from test_proxy import esc, pyupstream, start_proxy, status_of  # noqa: F401 - fixture

PARALLEL = 20
HANG_S = 5.0  # a client that gets no byte and no close for this long is hung


def cut_exchange(port, mode, nbytes, out, path="/cut"):
    """One GET asking demo-upstream to misbehave (head + nbytes of the body,
    then `mode`); appends (bytes received, how the connection ended) to out:
    "eof", "reset" or "hung"."""
    got, how = b"", "hung"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=HANG_S) as s:
            s.sendall(b"GET %s HTTP/1.1\r\nHost: a\r\nX-Upstream-Misbehave: %s %d\r\n\r\n"
                      % (path.encode(), mode.encode(), nbytes))
            while True:
                try:
                    b = s.recv(65536)
                except socket.timeout:
                    break
                except ConnectionResetError:
                    how = "reset"
                    break
                if not b:
                    how = "eof"
                    break
                got += b
    except OSError as e:  # the connect itself failed: not a hang, but wrong
        how = "error: %r" % e
    out.append((got, how))


def run_parallel(port, mode, nbytes, n=PARALLEL):
    out = []
    threads = [threading.Thread(target=cut_exchange, args=(port, mode, nbytes, out),
                                daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG_S * 3)
    assert len(out) == n, "a client thread did not finish"
    return out


def assert_cut_short(results):
    """Every client saw its connection end (no hang), with at most the one
    response head and fewer body bytes than announced: never a clean
    response, never a second (proxy-made) response after the first head."""
    hung = [r for r in results if r[1] not in ("eof", "reset")]
    assert not hung, "%d of %d clients hung or failed: %r" % (len(hung), len(results), hung[:3])
    for got, how in results:
        assert got.count(b"HTTP/1.") <= 1, got
        if not got:
            continue  # the reset overtook the bytes: still an abort
        assert status_of(got) == 200, got
        head, _, body = got.partition(b"\r\n\r\n")
        cl = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
        assert len(body) < cl, (how, got)


def upstream_stats(port):
    st, doc = http_json("GET", f"http://127.0.0.1:{port}/_upstream/stats")
    assert st == 200, doc
    return doc


def error_count(d, kind, version="v1"):
    v = metric(scrape(d), "canaryd_upstream_errors_total", service="web", version=version,
               kind=kind)
    return v or 0


def requests_count(d, cohort, version="v1"):
    parsed = scrape(d)
    return sum(val for (name, labels), val in parsed.items()
               if name == "canaryd_requests_total" and
               dict(labels).get("service") == "web" and dict(labels).get("version") == version
               and dict(labels).get("cohort") == cohort)


def stable_only(upstream, **kw):
    return ("  web:\n    versions:\n"
            f"      v1: {{endpoints: [127.0.0.1:{upstream}]}}\n"
            "    stable: v1\n" + "".join(f"    {k}: {v}\n" for k, v in kw.items()))


@pytest.mark.parametrize("mode", ["reset", "close"])
def test_upstream_cut_mid_body_aborts_clients_and_counts(canaryd, upstream, mode):
    # the response timeout is long: only seeing the RST / FIN can end these
    v1 = upstream("v1")
    d = start_proxy(canaryd, stable_only(v1, timeouts="{response: 30s}"), workers=2)
    results = run_parallel(d.proxy_port, mode, 5)
    assert_cut_short(results)
    # each is an upstream error of v1's stable cohort, as the judge reads it
    wait_until(lambda: error_count(d, "reset") == PARALLEL, 5,
               what="%d reset errors counted" % PARALLEL)
    assert requests_count(d, "stable") == PARALLEL
    assert upstream_stats(v1)["requests"] == PARALLEL
    # nothing left in flight: a graceful stop is prompt and clean
    d.proc.signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0


def test_upstream_silent_mid_body_times_out_between_reads(canaryd, upstream):
    v1 = upstream("v1")
    d = start_proxy(canaryd, stable_only(v1, timeouts="{response: 1s}"), workers=2)
    results = run_parallel(d.proxy_port, "silent", 7)
    assert_cut_short(results)
    wait_until(lambda: error_count(d, "response_timeout") == PARALLEL, 5,
               what="%d response_timeout errors counted" % PARALLEL)
    assert requests_count(d, "stable") == PARALLEL
    # the proxy let go of the silent upstream connections
    wait_until(lambda: upstream_stats(v1)["in_flight"] == 0, 5,
               what="the upstream's silent requests closed")


def test_sigterm_with_silent_upstream_in_flight_exits_promptly(canaryd, upstream):
    v1 = upstream("v1")
    d = start_proxy(canaryd, stable_only(v1, timeouts="{response: 2s}"))
    out = []
    threads = [threading.Thread(target=cut_exchange, args=(d.proxy_port, "silent", 3, out),
                                daemon=True) for _ in range(5)]
    for t in threads:
        t.start()
    # every request reached the upstream, which holds it silently mid-body
    wait_until(lambda: upstream_stats(v1)["in_flight"] == 5, 5, what="5 requests in flight")
    d.proc.signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0
    for t in threads:
        t.join(HANG_S * 2)
    assert len(out) == 5
    assert_cut_short(out)


def test_empty_header_name_is_400_and_never_forwarded(canaryd, upstream):
    v1 = upstream("v1")
    d = start_proxy(canaryd, stable_only(v1))
    raw = raw_request(d.proxy_port, b"POST / HTTP/1.1\r\nHost: a\r\n"
                                    b": Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
                                    b"abc")
    assert status_of(raw) == 400, raw
    raw = raw_request(d.proxy_port, b"GET / HTTP/1.1\r\n: x\r\nHost: a\r\n\r\n")
    assert status_of(raw) == 400, raw
    # a good request afterwards is the first the upstream ever sees
    raw = raw_request(d.proxy_port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert status_of(raw) == 200, raw
    assert upstream_stats(v1)["requests"] == 1


def test_absolute_form_target_routes_by_its_authority(canaryd, pyupstream):
    web, other = pyupstream(), pyupstream()
    port = free_port()
    text = ("listeners:\n  - name: public\n    listen: 127.0.0.1:%d\n    routes:\n"
            "      - match: {host: other.example, path_prefix: /}\n        service: other\n"
            "      - match: {host: a, path_prefix: /}\n        service: web\n" % port)
    text += "services:\n"
    for name, u in (("web", web), ("other", other)):
        text += (f"  {name}:\n    versions:\n      v1: {{endpoints: [127.0.0.1:{u.port}]}}\n"
                 "    stable: v1\n")
    d = canaryd(BASE_ADMIN + esc(text), header=False)
    wait_until(lambda: socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
               or True, 5, what="proxy listener")
    raw = raw_request(port, b"GET http://other.example/x/y?q=1 HTTP/1.1\r\nHost: a\r\n"
                            b"Connection: close\r\n\r\n")
    assert status_of(raw) == 200, raw
    _, reqs, _ = other.snapshot()
    assert len(reqs) == 1, reqs
    # origin-form upstream, and the authority is the one Host
    assert reqs[0]["line"] == "GET /x/y?q=1 HTTP/1.1"
    assert [v for n, v in reqs[0]["headers"] if n == "host"] == ["other.example"]
    assert web.snapshot()[1] == []
    # the authority wins over Host in both directions; no path part means "/"
    raw = raw_request(port, b"GET HTTP://A HTTP/1.1\r\nHost: other.example\r\n"
                            b"Connection: close\r\n\r\n")
    assert status_of(raw) == 200, raw
    _, reqs, _ = web.snapshot()
    assert [r["line"] for r in reqs] == ["GET / HTTP/1.1"]
    assert [v for n, v in reqs[0]["headers"] if n == "host"] == ["A"]
    # userinfo in the authority is refused, and nothing is forwarded
    raw = raw_request(port, b"GET http://u@other.example/ HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status_of(raw) == 400, raw
    assert len(other.snapshot()[1]) == 1


def test_chunk_extensions_are_accepted_and_dropped(canaryd, pyupstream):
    up = pyupstream()
    d = start_proxy(canaryd, stable_only(up.port))
    body = (b"3;foo=bar;baz\r\nabc\r\n"
            b"2 ; q=\"a \\\"quoted\\\" ;value\"\r\nde\r\n"
            b"0;last\r\n\r\n")
    raw = raw_request(d.proxy_port, b"POST /ext HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n" + body)
    assert status_of(raw) == 200, raw
    raw_up, reqs, _ = up.snapshot()
    assert len(reqs) == 1 and reqs[0]["body"] == b"abcde", reqs
    assert b"foo=bar" not in raw_up and b"quoted" not in raw_up  # re-framed, not copied
    # an invalid chunk size is still a 400, and is not forwarded
    raw = raw_request(d.proxy_port, b"POST /bad HTTP/1.1\r\nHost: a\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\nzz;a=b\r\nab\r\n0\r\n\r\n")
    assert status_of(raw) == 400, raw
    raw = raw_request(d.proxy_port, b"POST /bad HTTP/1.1\r\nHost: a\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n3;a=\"open\r\nabc\r\n"
                                    b"0\r\n\r\n")
    assert status_of(raw) == 400, raw
    assert [r["line"].split()[1] for r in up.snapshot()[1]] == ["/ext"]
