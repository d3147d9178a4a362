"""TLS end to end (issue 17 section 2, docs/tls.md): TLS listeners with SNI
choosing the certificate, old protocol versions refused, bad handshakes kept
away from the upstream, a slow handshake not blocking anyone, certificates
reloaded on SIGHUP while open connections go on; upstream TLS with
verification on and off; the admin API and canaryctl over TLS; config errors
naming file:line:path.

Certificates are made by the tests with the openssl CLI (a CA, a.test, b.test,
a re-issued a.test, and a second CA nobody trusts).  Clients are Python's ssl
module and curl.  Every wait is bounded."""
import http.client as httpclient
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import (ADMIN_TOKEN, BASE_ADMIN, bin_path, free_port, http, wait_until)

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


# --------------------------------------------------------------------------
# certificates


def _run(*argv):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{' '.join(argv)}: {r.stderr}"


def _ca(d, name):
    _run(OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.crt", "-days", "2",
         "-subj", f"/CN=canaryd e2e {name}")


def _leaf(d, name, cn, ca="ca", ip=True):
    _run(OPENSSL, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr", "-subj", f"/CN={cn}")
    san = f"DNS:{cn}" + (",IP:127.0.0.1" if ip else "")
    with open(f"{d}/{name}.ext", "w") as f:
        f.write(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n")
    _run(OPENSSL, "x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/{ca}.crt", "-CAkey",
         f"{d}/{ca}.key", "-CAcreateserial", "-out", f"{d}/{name}.crt", "-days", "2",
         "-extfile", f"{d}/{name}.ext")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("certs"))
    _ca(d, "ca")
    _ca(d, "otherca")
    _leaf(d, "a", "a.test")
    _leaf(d, "b", "b.test")
    _leaf(d, "a2", "a.test")  # a.test again: another key and serial (the reload)
    return d


# --------------------------------------------------------------------------
# clients


def client_ctx(cafile=None, verify=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the tests look at the certificate themselves
    if verify:
        ctx.load_verify_locations(cafile)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def tls_connect(port, sni, ctx, timeout=5.0):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise


def peer_cn(s):
    subject = dict(x[0] for x in s.getpeercert()["subject"])
    return subject["commonName"]


def roundtrip(s, host="x", path="/", timeout=5.0):
    """One keep-alive GET on socket s; (status, body)."""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in buf:
        assert time.monotonic() < deadline, "no response head"
        b = s.recv(65536)
        assert b, f"connection closed before the head: {buf!r}"
        buf += b
    head, _, body = buf.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    assert m, head
    n = int(m.group(1))
    while len(body) < n:
        assert time.monotonic() < deadline, "short body"
        b = s.recv(65536)
        assert b, "connection closed inside the body"
        body += b
    return int(head.split(b" ", 2)[1]), body[:n]


def closed_without_http(port, data, timeout=5.0):
    """Sends data to port; returns what came back once the server closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                return got
            if not b:
                return got
            got += b
        raise AssertionError(f"the server kept the connection open (got {got!r})")


def upstream_requests(port):
    st, _, body = http("GET", f"http://127.0.0.1:{port}/_upstream/stats")
    assert st == 200
    return json.loads(body)["requests"]


def listener_config(port, cert_yaml, upstream_port, extra=""):
    return f"""listeners:
  - name: public
    listen: 127.0.0.1:{port}
    tls:
      certs:
{cert_yaml}{extra}
    routes:
      - service: web
services:
  web:
    versions:
      v1: {{endpoints: [127.0.0.1:{upstream_port}]}}
    stable: v1
"""


def esc(body):
    """body for the canaryd fixture, which .format()s it: braces kept as written."""
    return body.replace("{", "{{").replace("}", "}}")


def certs_yaml(d, names):
    return "".join(f"        - {{cert: {d}/{n}.crt, key: {d}/{n}.key}}\n" for n in names)


# --------------------------------------------------------------------------
# listeners


def test_sni_picks_the_certificate_and_unknown_or_absent_sni_gets_the_default(
        canaryd, upstream, certs):
    up = upstream("v1")
    port = free_port()
    canaryd(esc(listener_config(port, certs_yaml(certs, ["a", "b"]), up)))
    ctx = client_ctx(f"{certs}/ca.crt")
    for sni, want in [("a.test", "a.test"), ("b.test", "b.test"), ("B.Test", "b.test"),
                      ("c.test", "a.test"), (None, "a.test")]:
        with tls_connect(port, sni, ctx) as s:
            assert peer_cn(s) == want, f"SNI {sni!r}"
            assert s.selected_alpn_protocol() is None  # the client offered none
            st, body = roundtrip(s)
            assert st == 200 and b'"version":"v1"' in body
    # ALPN: http/1.1 chosen among what the client offers
    actx = client_ctx(f"{certs}/ca.crt")
    actx.set_alpn_protocols(["h2", "http/1.1"])
    with tls_connect(port, "b.test", actx) as s:
        assert s.selected_alpn_protocol() == "http/1.1"
    # curl, verifying the chain and the name
    for name in ("a.test", "b.test"):
        r = subprocess.run(["curl", "-sS", "--cacert", f"{certs}/ca.crt", "--resolve",
                            f"{name}:{port}:127.0.0.1", "-w", "\n%{http_code}",
                            f"https://{name}:{port}/hello"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout.endswith("\n200") and '"path":"/hello"' in r.stdout
    assert upstream_requests(up) == 5 + 2


def test_session_tickets_resume_across_connections_and_certificates(canaryd, upstream, certs):
    up = upstream("v1")
    port = free_port()
    canaryd(esc(listener_config(port, certs_yaml(certs, ["a", "b"]), up)))
    for top in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_ctx(f"{certs}/ca.crt")
        ctx.maximum_version = top
        with tls_connect(port, "a.test", ctx) as s:
            assert roundtrip(s)[0] == 200  # TLS 1.3 tickets come after the handshake
            sess = s.session
            assert not s.session_reused
        assert sess.has_ticket, top
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="a.test", session=sess) as s:
            assert s.session_reused, f"{top}: the ticket was not accepted"
            assert roundtrip(s)[0] == 200
    # a ticket never carries a session to the other name's certificate
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="b.test", session=sess) as s:
        assert peer_cn(s) == "b.test"


def test_tls13_every_resumption_brings_a_new_ticket(canaryd, upstream, certs):
    """TLS 1.3 clients use a ticket once (RFC 8446 C.4): a resumption that
    issued none would make the client's next connection a full handshake."""
    up = upstream("v1")
    port = free_port()
    canaryd(esc(listener_config(port, certs_yaml(certs, ["a"]), up)))
    ctx = client_ctx(f"{certs}/ca.crt")
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    sess = None
    for i in range(3):
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="a.test", session=sess) as s:
            assert s.session_reused == (i > 0), i
            # the ticket comes with the first response (docs/tls.md)
            assert roundtrip(s)[0] == 200
            nxt = s.session
        assert nxt.has_ticket, i
        assert sess is None or nxt.id != sess.id, f"connection {i}: no new ticket"
        sess = nxt


# A writev shim for canaryd: after writing a TLS handshake flight of more
# than 400 bytes (the server's first flight), sleep 300 ms -- as if the
# worker were preempted -- so the client's Finished and its request are
# both waiting when OpenSSL reads next, inside the accept call.
_SLOW_FLIGHT_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/uio.h>
#include <unistd.h>
ssize_t writev(int fd, const struct iovec *iov, int n)
{
    static ssize_t (*real)(int, const struct iovec *, int);
    size_t total = 0;
    ssize_t r;
    if (!real)
        real = (ssize_t (*)(int, const struct iovec *, int))dlsym(RTLD_NEXT, "writev");
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    r = real(fd, iov, n);
    if (r > 400 && n > 0 && iov[0].iov_len > 0 && ((const unsigned char *)iov[0].iov_base)[0] == 0x16)
        usleep(300000);
    return r;
}
"""


def test_request_that_came_with_the_end_of_the_handshake_in_accept_is_served(
        canaryd, upstream, certs, tmp_path):
    """TLS read-ahead can take the client's request together with its Finished
    while the handshake is still driven from the accept: no EPOLLIN edge will
    announce it, the proxy must read it anyway (docs/tls.md)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler for the writev shim")
    shim = str(tmp_path / "slowflight.so")
    src = tmp_path / "slowflight.c"
    src.write_text(_SLOW_FLIGHT_C)
    _run(cc, "-shared", "-fPIC", "-O1", "-o", shim, str(src), "-ldl")
    up = upstream("v1")
    port = free_port()
    env = {"LD_PRELOAD": shim,
           "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
    canaryd(esc(listener_config(port, certs_yaml(certs, ["a"]), up)), extra_env=env)
    ctx = client_ctx(f"{certs}/ca.crt")
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3  # the flight is one writev
    for _ in range(2):
        with tls_connect(port, "a.test", ctx, timeout=10) as s:
            assert roundtrip(s, timeout=10)[0] == 200


def test_tls_1_0_and_1_1_refused_and_min_version_1_3(canaryd, upstream, certs):
    up = upstream("v1")
    port, port13 = free_port(), free_port()
    body = listener_config(port, certs_yaml(certs, ["a"]), up)
    body = body.replace("services:", f"""  - name: strict
    listen: 127.0.0.1:{port13}
    tls:
      certs:
{certs_yaml(certs, ["a"])}      min_version: 1.3
    routes:
      - service: web
services:""")
    canaryd(esc(body))
    for top in ("TLSv1", "TLSv1_1"):
        old = client_ctx(verify=False)
        with warnings.catch_warnings():  # deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = getattr(ssl.TLSVersion, top)
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # so it is the server that refuses
        with pytest.raises(ssl.SSLError):
            tls_connect(port, "a.test", old).close()
    tls12 = client_ctx(verify=False)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with tls_connect(port, "a.test", tls12) as s:
        assert s.version() == "TLSv1.2"
        assert roundtrip(s)[0] == 200
    with pytest.raises(ssl.SSLError):
        tls_connect(port13, "a.test", tls12).close()
    with tls_connect(port13, "a.test", client_ctx(verify=False)) as s:
        assert s.version() == "TLSv1.3"
        assert roundtrip(s)[0] == 200
    assert upstream_requests(up) == 2


def test_bad_handshakes_never_reach_the_upstream_and_are_closed(canaryd, upstream, certs):
    up = upstream("v1")
    port = free_port()
    canaryd(esc(listener_config(port, certs_yaml(certs, ["a"]), up)))
    for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"\x16\x03\x01\x00\x10" + b"\x00" * 16,  # a record that is no ClientHello
                 bytes(range(256)) * 4):
        got = closed_without_http(port, junk)
        assert b"HTTP/" not in got, got
    # a client that does not trust the certificate gives up mid-handshake
    with pytest.raises(ssl.SSLError):
        tls_connect(port, "a.test", client_ctx(f"{certs}/otherca.crt")).close()
    # the listener still serves, and only that request reached the upstream
    with tls_connect(port, "a.test", client_ctx(f"{certs}/ca.crt")) as s:
        assert roundtrip(s)[0] == 200
    assert upstream_requests(up) == 1


def test_a_slow_handshake_does_not_block_other_clients(canaryd, upstream, certs):
    up = upstream("v1")
    port = free_port()
    body = listener_config(port, certs_yaml(certs, ["a"]), up)
    canaryd(esc(body.replace("    stable: v1\n", "    stable: v1\n    timeouts: {header: 1s}\n")))
    silent = socket.create_connection(("127.0.0.1", port), timeout=5)  # workers: 1
    partial = socket.create_connection(("127.0.0.1", port), timeout=5)
    partial.sendall(b"\x16\x03\x01")  # the start of a record header, then nothing
    try:
        ctx = client_ctx(f"{certs}/ca.crt")
        for _ in range(3):
            with tls_connect(port, "a.test", ctx, timeout=5) as s:
                assert roundtrip(s)[0] == 200
        # the header timeout bounds a handshake that never ends: both are closed
        for sock in (silent, partial):
            sock.settimeout(30)
            try:
                got = sock.recv(100)
            except ConnectionResetError:
                got = b""
            assert got == b""
    finally:
        silent.close()
        partial.close()
    assert upstream_requests(up) == 3


def _serial(port, ctx):
    with tls_connect(port, "a.test", ctx) as s:
        return s.getpeercert()["serialNumber"]


def test_sighup_reload_serves_new_certificate_to_new_connections_old_ones_go_on(
        canaryd, upstream, certs, tmp_path):
    up = upstream("v1")
    port = free_port()
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(f"{certs}/a.crt", live / "srv.crt")
    shutil.copy(f"{certs}/a.key", live / "srv.key")
    d = canaryd(esc(listener_config(
        port, f"        - {{cert: {live}/srv.crt, key: {live}/srv.key}}\n", up)))
    ctx = client_ctx(f"{certs}/ca.crt")
    first = _serial(port, ctx)
    kept = tls_connect(port, "a.test", ctx, timeout=10)
    try:
        assert roundtrip(kept)[0] == 200
        shutil.copy(f"{certs}/a2.crt", live / "srv.crt")
        shutil.copy(f"{certs}/a2.key", live / "srv.key")
        d.proc.signal(signal.SIGHUP)
        second = wait_until(lambda: (lambda s: s != first and s)(_serial(port, ctx)), 10,
                            what="the re-issued certificate on a new connection")
        # the connection opened before the reload is still up and served
        for _ in range(2):
            assert roundtrip(kept)[0] == 200
        assert kept.getpeercert()["serialNumber"] == first

        # a reload whose key does not match keeps the running certificates
        shutil.copy(f"{certs}/b.key", live / "srv.key")
        d.proc.signal(signal.SIGHUP)

        def failed():
            st, doc = d.get("/v1/events?limit=1000")
            evs = doc["events"] if isinstance(doc, dict) else doc
            return [e for e in evs if e["kind"] == "config.reload_failed"]

        ev = wait_until(failed, 10, what="config.reload_failed")
        assert "does not match the certificate" in json.dumps(ev[-1])
        assert _serial(port, ctx) == second
        assert roundtrip(kept)[0] == 200
    finally:
        kept.close()
    assert upstream_requests(up) == 4
    # and it stops cleanly (under ASan: nothing leaked from the two TLS sets)
    d.proc.signal(signal.SIGTERM)
    assert d.proc.wait(60) == 0, d.proc.output()[-4000:]


# --------------------------------------------------------------------------
# upstream TLS


class _TLSUpstream:
    """An HTTPS upstream in a thread, serving a.test's certificate."""

    def __init__(self, certs):
        self.requests = 0
        self.sni = []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer.requests += 1
                body = b"from-tls-upstream"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(f"{certs}/a.crt", f"{certs}/a.key")
        ctx.sni_callback = lambda sock, name, c: self.sni.append(name) and None
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True,
                                          do_handshake_on_connect=False)
        self.port = self.srv.server_address[1]
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def _get(port, host, timeout=10):
    c = httpclient.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", "/", headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_upstream_tls_verification_on_and_off(canaryd, certs):
    up = _TLSUpstream(certs)
    try:
        port = free_port()
        ep = f"127.0.0.1:{up.port}"
        cases = {
            # service: (its tls:, expected status)
            "good": (f"{{ca: {certs}/ca.crt, sni: a.test}}", 200),
            # no ca: the system's store, here $SSL_CERT_FILE (read at load time)
            "system": ("{sni: a.test}", 200),
            "byip": (f"{{ca: {certs}/ca.crt}}", 200),  # no name: the IP SAN is checked
            "wrongca": (f"{{ca: {certs}/otherca.crt, sni: a.test}}", 502),
            "wrongname": (f"{{ca: {certs}/ca.crt, sni: b.test}}", 502),
            "noverify": (f"{{verify: false, ca: {certs}/otherca.crt, sni: b.test}}", 200),
            "plain": (None, 502),  # plain HTTP to a TLS port
        }
        routes = "".join(f"      - match: {{host: {s}.test}}\n        service: {s}\n"
                         for s in cases)
        services = "".join(
            f"  {s}:\n    versions:\n      v1: {{endpoints: [{ep}]"
            + (f", tls: {t}" if t else "") + "}\n    stable: v1\n"
            for s, (t, _) in cases.items())
        d = canaryd(esc(f"""listeners:
  - name: public
    listen: 127.0.0.1:{port}
    routes:
{routes}services:
{services}"""), extra_env={"SSL_CERT_FILE": f"{certs}/ca.crt"})
        for s, (_, want) in cases.items():
            st, body = _get(port, f"{s}.test")
            assert st == want, (s, st, body)
            if want == 200:
                assert body == b"from-tls-upstream"
        assert up.requests == 4
        assert up.sni.count("a.test") >= 1 and up.sni.count("b.test") >= 1
        assert None in up.sni  # byip: an IP address is never sent as SNI
        d.proc.signal(signal.SIGTERM)  # under ASan: the client contexts are all freed
        assert d.proc.wait(60) == 0, d.proc.output()[-4000:]
    finally:
        up.close()


# --------------------------------------------------------------------------
# admin API and canaryctl


def test_health_probes_of_a_tls_upstream_use_its_tls_settings(canaryd, certs):
    """A version with upstream tls: is probed over https with its own ca and
    sni: trusted -> up; a CA that does not trust the upstream -> down (kept,
    as the last endpoint of its version), never a plain-HTTP probe."""
    up = _TLSUpstream(certs)
    try:
        port = free_port()
        ep = f"127.0.0.1:{up.port}"
        hc = "{path: /healthz, interval: 200ms, timeout: 150ms, healthy: 1, unhealthy: 1}"
        cases = {"good": f"{{ca: {certs}/ca.crt, sni: a.test}}",
                 "wrongca": f"{{ca: {certs}/otherca.crt, sni: a.test}}"}
        routes = "".join(f"      - match: {{host: {s}.test}}\n        service: {s}\n"
                         for s in cases)
        services = "".join(
            f"  {s}:\n    versions:\n      v1: {{endpoints: [{ep}], tls: {t}, health: {hc}}}\n"
            "    stable: v1\n" for s, t in cases.items())
        d = canaryd(esc(f"""listeners:
  - name: public
    listen: 127.0.0.1:{port}
    routes:
{routes}services:
{services}"""))

        def check(svc):
            st, doc = d.get(f"/v1/services/{svc}")
            assert st == 200, doc
            return doc["versions"][0]["endpoints"][0]["check"]

        wait_until(lambda: check("good")["state"] == "up", 10, 0.05, what="good probed up")
        bad = wait_until(lambda: (lambda c: c if c["state"] == "down" else None)(
            check("wrongca")), 10, 0.05, what="wrongca probed down")
        assert bad["kept"] is True, bad
        # the probes spoke TLS with the configured name (a plain probe would
        # fail the handshake and never send it)
        assert "a.test" in up.sni
        assert check("good")["state"] == "up"
    finally:
        up.close()


def test_admin_api_and_canaryctl_over_tls(canaryd, certs, tmp_path):
    live = tmp_path / "admin-certs"
    live.mkdir()
    shutil.copy(f"{certs}/a.crt", live / "adm.crt")
    shutil.copy(f"{certs}/a.key", live / "adm.key")
    header = BASE_ADMIN.replace("  tokens:", f"""  tls:
    certs: [{{{{cert: {live}/adm.crt, key: {live}/adm.key}}}}]
  tokens:""")
    d = canaryd(header, header=False, wait=False)
    url = f"https://127.0.0.1:{d.admin_port}"
    ctx = client_ctx(f"{certs}/ca.crt")

    def healthy():
        assert d.proc.alive(), d.proc.output()
        c = httpclient.HTTPSConnection("127.0.0.1", d.admin_port, context=ctx, timeout=2)
        try:
            c.request("GET", "/v1/health")
            return c.getresponse().status == 200
        finally:
            c.close()

    wait_until(healthy, 10, what="admin over TLS")
    # the bearer token travels inside TLS only: plain HTTP gets no HTTP answer
    assert b"HTTP/" not in closed_without_http(d.admin_port, b"GET /v1/health HTTP/1.1\r\n"
                                                             b"Host: x\r\n\r\n")
    ctl = [bin_path("canaryctl"), "--server", url, "--token", ADMIN_TOKEN]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARYD_")}
    r = subprocess.run(ctl + ["--cacert", f"{certs}/ca.crt", "-o", "json", "status"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "ok"
    r = subprocess.run(ctl + ["status"], env=dict(env, CANARYD_CACERT=f"{certs}/ca.crt"),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(ctl + ["status"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "certificate" in r.stderr.lower(), r.stderr
    r = subprocess.run(ctl + ["--cacert", f"{certs}/otherca.crt", "status"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r.stdout
    # SIGHUP: new admin connections get the re-issued certificate, an open one goes on
    first = _serial(d.admin_port, ctx)
    kept = httpclient.HTTPSConnection("127.0.0.1", d.admin_port, context=ctx, timeout=10)
    kept.request("GET", "/v1/health")
    assert kept.getresponse().read() and kept.sock is not None
    shutil.copy(f"{certs}/a2.crt", live / "adm.crt")
    shutil.copy(f"{certs}/a2.key", live / "adm.key")
    d.proc.signal(signal.SIGHUP)
    wait_until(lambda: _serial(d.admin_port, ctx) != first, 10,
               what="the re-issued admin certificate")
    sock = kept.sock
    kept.request("GET", "/v1/health")
    assert kept.getresponse().status == 200 and kept.sock is sock  # the same connection
    kept.close()
    d.proc.signal(signal.SIGTERM)  # under ASan: the admin's TLS server is released
    assert d.proc.wait(60) == 0, d.proc.output()[-4000:]


# --------------------------------------------------------------------------
# configuration errors


def test_check_reports_tls_errors_with_file_line_and_path(certs, tmp_path):
    cfg = tmp_path / "canaryd.yaml"
    cfg.write_text(f"""listeners:
  - name: public
    listen: 127.0.0.1:{free_port()}
    tls:
      certs:
        - {{cert: {certs}/a.crt, key: {certs}/b.key}}
        - {{cert: {tmp_path}/missing.crt, key: {certs}/a.key}}
        - {{cert: {certs}/a.key, key: {certs}/a.key}}
    routes:
      - service: web
  - name: old
    listen: 127.0.0.1:{free_port()}
    tls:
      certs: [{{cert: {certs}/a.crt, key: {certs}/a.key}}]
      min_version: 1.1
      alpn: [h2]
    routes:
      - service: web
services:
  web:
    versions:
      v1:
        endpoints: [127.0.0.1:1]
        tls: {{ca: {tmp_path}/missing-ca.pem}}
    stable: v1
""")
    r = subprocess.run([bin_path("canaryd"), "--check", "-c", str(cfg)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1
    out = r.stdout + r.stderr
    want = [
        (15, "listeners[1].tls.min_version", "TLS 1.1 is not supported"),
        (16, "listeners[1].tls.alpn[0]", 'unknown ALPN protocol "h2"'),
    ]
    for line, path, msg in want:
        assert re.search(rf"canaryd\.yaml:{line}: {re.escape(path)}: .*{re.escape(msg)}",
                         out), (path, out)
    # the files are checked once the shape is right
    cfg.write_text(cfg.read_text().replace("min_version: 1.1", "min_version: 1.2")
                   .replace("alpn: [h2]", "alpn: [http/1.1]"))
    r = subprocess.run([bin_path("canaryd"), "--check", "-c", str(cfg)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1
    out = r.stdout + r.stderr
    want = [
        (6, "listeners[0].tls.certs[0].key", "does not match the certificate"),
        (7, "listeners[0].tls.certs[1].cert", "cannot read"),
        (8, "listeners[0].tls.certs[2].cert", "is not a PEM certificate"),
        (24, "services.web.versions.v1.tls.ca", "cannot read"),
    ]
    for line, path, msg in want:
        assert re.search(rf"canaryd\.yaml:{line}: {re.escape(path)}: .*{re.escape(msg)}",
                         out), (path, out)
    # canaryctl check-config checks the files too
    r = subprocess.run([bin_path("canaryctl"), "check-config", str(cfg)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1
    assert re.search(r"canaryd\.yaml:6: listeners\[0\]\.tls\.certs\[0\]\.key: .*does not match",
                     r.stderr), r.stderr
    # fixed, it passes
    cfg.write_text(cfg.read_text()
                   .replace(f"{certs}/b.key", f"{certs}/a.key")
                   .replace(f"        - {{cert: {tmp_path}/missing.crt, key: {certs}/a.key}}\n", "")
                   .replace(f"        - {{cert: {certs}/a.key, key: {certs}/a.key}}\n", "")
                   .replace(f"{tmp_path}/missing-ca.pem", f"{certs}/ca.crt"))
    r = subprocess.run([bin_path("canaryd"), "--check", "-c", str(cfg)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
