"""A burst of new TLS connections is spread over loop turns (at most a few
handshake steps per turn, runtime/worker.h): every handshake still completes,
and the proxy counts the steps it moved to a later turn."""
import os
import socket
import ssl
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from conftest import free_port  # noqa: E402
from test_mtls import config_b  # noqa: E402


def test_handshake_burst_completes_and_is_spread(proxies, certs, backend):
    port = free_port()
    cfg = config_b(port, backend.port, certs["server_cert"], certs["server_key"], certs["ca"])
    cfg["workers"] = 1
    b = proxies(cfg, "B")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(certs["ca"])
    ctx.load_cert_chain(certs["client_cert"], certs["client_key"])
    n = 40
    # Open every TCP connection first, then start all handshakes together,
    # so that their ClientHellos reach the worker in the same turns.
    raws = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
    start = threading.Barrier(n)
    statuses, errors = [], []

    def one(raw):
        try:
            start.wait()
            with ctx.wrap_socket(raw) as s:
                s.sendall(b"GET /burst HTTP/1.1\r\nHost: server\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                statuses.append(int(data.split(b" ", 2)[1]))
        except Exception as e:  # noqa: BLE001 - every failure counts
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(r,)) for r in raws]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [], errors[:5]
    assert statuses == [200] * n
    assert b.metric("trellis_tls_handshake_errors_total") == 0
    # 40 server handshakes arriving together cannot all fit in turns of 4.
    assert b.metric("trellis_tls_handshakes_deferred_total") > 0
