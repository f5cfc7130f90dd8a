"""Failed handshakes must not hurt healthy connections on the same worker.

OpenSSL's error queue is per thread; a worker runs many connections on one
thread. Steady keep-alive load goes through a mesh hop (client -> A -> mTLS ->
B -> nginx, B with one worker) while other clients make failing handshakes to
B's STRICT listener in parallel: wrong CA, expired certificate, no
certificate, plaintext, and garbage that looks like TLS. Not one good request
may fail, and every bad connection is counted once in B's metrics.
"""
import http.client
import http.server
import os
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from conftest import free_port  # noqa: E402
from test_mtls import config_a, config_b, special, wait_metric  # noqa: E402,F401 (fixture)

BIG = 1 << 20      # response body of the download clients
UPLOAD = 256 << 10  # request body of the upload clients
SECONDS = 6


def _close_wait(s):
    """Read until the peer closes, so the server has judged this connection
    before the next one starts (bounded by the socket timeout)."""
    try:
        while s.recv(4096):
            pass
    except (OSError, ssl.SSLError):
        pass


def bad_tls(port, cert=None, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw) as s:
                # TLS 1.3: the client finishes first and hears the alert on
                # its first read.
                s.sendall(b"GET / HTTP/1.1\r\nHost: server\r\n\r\n")
                _close_wait(s)
                return
        except (OSError, ssl.SSLError):
            return


def bad_raw(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
        except OSError:
            return
        _close_wait(s)


class UploadSink(http.server.ThreadingHTTPServer):
    """Reads each request body to the end and answers "ok"."""
    daemon_threads = True

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Length", "3")
                self.end_headers()
                self.wfile.write(b"ok\n")

        super().__init__(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


# A TLS record header, then a handshake message that is nonsense.
GARBAGE_TLS = b"\x16\x03\x01\x00\x08" + b"\x63\x00\x00\x04junk"
PLAINTEXT = b"GET / HTTP/1.1\r\nHost: server\r\n\r\n"


def test_failed_handshakes_do_not_break_good_connections(proxies, certs, nginx, special,
                                                         workdir):
    www = os.path.join(workdir, "www")
    os.makedirs(www)
    with open(os.path.join(www, "big"), "wb") as f:
        f.write(os.urandom(BIG))
    # nginx's workers run as nobody when started by root.
    os.chmod(workdir, 0o711)
    os.chmod(www, 0o755)
    os.chmod(os.path.join(www, "big"), 0o644)
    backend = nginx(f"location / {{ root {www}; }}")
    sink = UploadSink()
    a_port, b_port = free_port(), free_port()
    cfg_b = config_b(b_port, backend.port, certs["server_cert"], certs["server_key"], certs["ca"])
    cfg_b["route_tables"][0]["virtual_hosts"][0]["routes"].insert(0, {
        "name": "upload", "match": {"path": {"prefix": "/upload"}}, "cluster": "sink"})
    cfg_b["clusters"].append({"name": "sink", "endpoints": [
        {"address": f"127.0.0.1:{sink.server_address[1]}"}]})
    b = proxies(cfg_b, "B")
    a = proxies(config_a(a_port, b_port, certs["client_cert"], certs["client_key"], certs["ca"]),
                "A")

    stop = threading.Event()
    ok = [0] * 4
    failures = []

    def good(i):
        conn = http.client.HTTPConnection("127.0.0.1", a_port, timeout=10)
        body = os.urandom(UPLOAD)
        try:
            while not stop.is_set():
                try:
                    if i % 2 == 0:
                        conn.request("GET", "/big")
                        r = conn.getresponse()
                        data = r.read()
                        good_reply = r.status == 200 and len(data) == BIG
                    else:
                        conn.request("POST", "/upload", body=body)
                        r = conn.getresponse()
                        data = r.read()
                        good_reply = r.status == 200 and data == b"ok\n"
                    if not good_reply:
                        failures.append((i, r.status, data[:200]))
                    else:
                        ok[i] += 1
                    if r.getheader("connection", "").lower() == "close":
                        failures.append((i, "connection: close"))
                        conn.close()
                except Exception as e:  # noqa: BLE001 - every failure counts
                    failures.append((i, repr(e)))
                    conn.close()
        finally:
            conn.close()

    kinds = {
        "unknown_ca": lambda: bad_tls(b_port, special["foreign"].cert, special["foreign"].key),
        "expired": lambda: bad_tls(b_port, special["expired"].cert, special["expired"].key),
        "no_peer_cert": lambda: bad_tls(b_port),
        "protocol": lambda: bad_raw(b_port, GARBAGE_TLS),
        "plaintext": lambda: bad_raw(b_port, PLAINTEXT),
    }
    attempts = {k: 0 for k in kinds}

    def bad(kind):
        while not stop.is_set():
            kinds[kind]()
            attempts[kind] += 1

    threads = [threading.Thread(target=good, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=bad, args=(k,)) for k in kinds]
    for t in threads:
        t.start()
    try:
        time.sleep(SECONDS)
    finally:
        stop.set()
        for t in threads:
            t.join(20)
        sink.shutdown()
        sink.server_close()
    assert not any(t.is_alive() for t in threads)

    assert failures == [], failures[:10]
    assert all(n >= 3 for n in ok), ok
    for kind, n in attempts.items():
        assert n >= 10, attempts
        if kind == "plaintext":
            # Refused by detection; a STRICT listener also counts a failed
            # handshake of a non-TLS speaker ("protocol") as plaintext.
            n += attempts["protocol"]
            assert wait_metric(b, "trellis_tls_plaintext_refused_total", n) == n, b.metrics()
        else:
            assert wait_metric(b, "trellis_tls_handshake_errors_total", n, direction="inbound",
                               reason=kind) == n, (kind, attempts, b.metrics())
    assert b.metric("trellis_tls_handshake_errors_total") == sum(
        n for k, n in attempts.items() if k != "plaintext"), b.metrics()
    # The hop itself never failed a handshake, and every good request was
    # served by B.
    assert a.metric("trellis_tls_handshake_errors_total") == 0, a.metrics()
    assert wait_metric(b, "istio_requests_total", sum(ok), response_code="200") == sum(ok)
