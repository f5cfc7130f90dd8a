"""HTTP/1.1 request-smuggling and conformance vectors against a trellis HTTP listener.

Every vector is written with a raw socket to a trellis listener in front of a
RecordingBackend. For each one the test checks:
  * the EXACT status of the single local response (400 / 405 / 414 / 431 / 505),
  * that nothing follows that response and the proxy closes the connection
    cleanly (recv() returns b"" -- a FIN, not a reset -- within a short timeout),
  * that the backend received nothing: no connection at all, so no request.

Chunked-body vectors have a valid head. Trellis validates the part of a
chunked body that arrives together with the head before it opens any upstream
connection, so when the whole vector is written at once the strictest property
(backend.connections == 0) holds for them too. test_bad_chunk_after_head_was_forwarded
covers the other case: the head has already gone upstream when the bad chunk
arrives; then the client must get 400 and the backend must never see a
complete request.
"""
import os
import socket
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import simple_config, free_port  # noqa: E402

HOST = b"Host: a"


def req(*lines, body=b"", start=b"POST / HTTP/1.1"):
    """A request head from its field lines (CRLF added), plus a raw body."""
    return start + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


def chunked(body):
    return req(HOST, b"Transfer-Encoding: chunked", body=body)



def wait_metric(p, want, name, timeout=3.0, **labels):
    """The proxy counts a request just after writing its response, so a client can
    see the response first: poll until the value is `want` (or time runs out) and
    return the last value, for an exact assertion."""
    deadline = time.monotonic() + timeout
    while True:
        v = p.metric(name, **labels)
        if v == want or time.monotonic() > deadline:
            return v
        time.sleep(0.02)


# (id, bytes written in one send(), exact status expected)
VECTORS = [
    # --- Content-Length / Transfer-Encoding ambiguity ---
    ("cl_and_te", req(HOST, b"Content-Length: 5", b"Transfer-Encoding: chunked",
                      body=b"0\r\n\r\n"), 400),
    ("te_and_cl", req(HOST, b"Transfer-Encoding: chunked", b"Content-Length: 5",
                      body=b"0\r\n\r\n"), 400),
    ("te_chunked_identity", req(HOST, b"Transfer-Encoding: chunked, identity",
                                body=b"0\r\n\r\n"), 400),
    ("te_identity", req(HOST, b"Transfer-Encoding: identity", body=b"hello"), 400),
    ("te_gzip_chunked", req(HOST, b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"), 400),
    ("te_space_before_colon", req(HOST, b"Transfer-Encoding : chunked", body=b"0\r\n\r\n"), 400),
    ("te_vtab_value", req(HOST, b"Transfer-Encoding:\x0bchunked", body=b"0\r\n\r\n"), 400),
    ("te_xchunked", req(HOST, b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n"), 400),
    ("te_two_fields", req(HOST, b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked",
                          body=b"0\r\n\r\n"), 400),
    ("te_in_http10", req(HOST, b"Transfer-Encoding: chunked", body=b"0\r\n\r\n",
                         start=b"POST / HTTP/1.0"), 400),
    ("te_obs_fold", req(HOST, b"Transfer-Encoding:", b" chunked", body=b"0\r\n\r\n"), 400),
    ("cl_two_equal", req(HOST, b"Content-Length: 5", b"Content-Length: 5", body=b"hello"), 400),
    ("cl_two_different", req(HOST, b"Content-Length: 5", b"Content-Length: 6",
                             body=b"hello!"), 400),
    ("cl_list", req(HOST, b"Content-Length: 5, 5", body=b"hello"), 400),
    ("cl_plus", req(HOST, b"Content-Length: +5", body=b"hello"), 400),
    ("cl_minus", req(HOST, b"Content-Length: -5", body=b"hello"), 400),
    ("cl_space_inside", req(HOST, b"Content-Length: 5 5", body=b"hello"), 400),
    ("cl_hex", req(HOST, b"Content-Length: 0x5", body=b"hello"), 400),
    ("cl_overflow", req(HOST, b"Content-Length: 99999999999999999999", body=b"hello"), 400),
    ("cl_empty", req(HOST, b"Content-Length:"), 400),
    # --- field syntax ---
    ("obs_fold", req(HOST, b"X-A: 1", b" continued", start=b"GET / HTTP/1.1"), 400),
    ("bare_lf_everywhere", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("bare_lf_one_header", b"GET / HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n", 400),
    ("bare_cr_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r2\r\n\r\n", 400),
    ("nul_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", 400),
    ("space_in_name", req(HOST, b"X A: 1", start=b"GET / HTTP/1.1"), 400),
    ("no_colon", req(HOST, b"X-A 1", start=b"GET / HTTP/1.1"), 400),
    ("empty_name", req(HOST, b": 1", start=b"GET / HTTP/1.1"), 400),
    ("ws_before_first_header", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    # --- request line ---
    ("http09", b"GET /\r\n", 400),
    ("http09_then_crlf", b"GET /\r\n\r\n", 400),
    ("http20", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ("http30", b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
    ("lowercase_version", b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
    ("version_trailing_junk", b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400),
    ("double_space", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("tab_in_request_line", b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("leading_crlf", b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("method_invalid_chars", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("method_non_ascii", b"G\xc3\x89T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("target_del", b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("target_nul", b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("target_fragment", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    # --- Host ---
    ("missing_host_http11", b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400),
    ("duplicate_host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("host_with_space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("absolute_form_host_mismatch", b"GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    # --- chunked framing (valid head, bad body) ---
    ("chunk_size_zz", chunked(b"zz\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_size_0x", chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_size_negative", chunked(b"-5\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_size_overflow", chunked(b"10000000000000000\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_wrong_terminator", chunked(b"5\r\nhelloXX0\r\n\r\n"), 400),
    ("chunk_data_longer_than_size", chunked(b"3\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_ext_bare_lf", chunked(b"5;a=b\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_size_bare_lf", chunked(b"5\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_trailer_content_length", chunked(b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n"),
     400),
    # --- limits ---
    ("request_line_over_8k", b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    ("101_headers", req(HOST, *[b"X-H%d: v" % i for i in range(100)], start=b"GET / HTTP/1.1"),
     431),
    ("head_70k", req(HOST, *[b"X-H%d: %s" % (i, b"v" * 7000) for i in range(10)],
                     start=b"GET / HTTP/1.1"), 431),
    # --- methods ---
    ("connect", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405),
]


def exchange(port, data, timeout=2.0, cap=1 << 20):
    """Write data in one send, read until EOF / reset / timeout / cap.
    Returns (bytes received, how the read ended: "eof" | "reset" | "timeout" | "cap")."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        buf = b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return buf, "timeout"
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return buf, "timeout"
            except ConnectionResetError:
                return buf, "reset"
            if not chunk:
                return buf, "eof"
            buf += chunk
            if len(buf) >= cap:
                return buf, "cap"
    finally:
        s.close()


def split_response(buf):
    """(status, headers dict (lower-case names), body, rest after the response)."""
    head, sep, rest = buf.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {buf[:300]!r}"
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode()] = v.strip().decode()
    n = int(headers.get("content-length", "0"))
    return status, headers, rest[:n], rest[n:]


def assert_rejected(buf, how, status):
    assert buf, f"no response at all (read ended by {how})"
    got, headers, _body, rest = split_response(buf)
    assert got == status, f"expected {status}, got {buf[:300]!r}"
    assert buf.startswith(b"HTTP/1.1 %d " % status)
    assert headers.get("connection") == "close", f"response does not announce close: {buf[:300]!r}"
    assert rest == b"", f"bytes after the response: {rest[:300]!r}"
    assert how == "eof", f"connection not closed cleanly after the response: {how}"


@pytest.fixture
def edge(proxies, backend):
    """A trellis HTTP listener routing everything to the RecordingBackend."""
    port = free_port()
    p = proxies(simple_config(port, backend.port))
    return p, port


@pytest.mark.parametrize("name,data,status", VECTORS, ids=[
    v.values[0] if hasattr(v, "values") else v[0] for v in VECTORS])
def test_vector_rejected(edge, backend, name, data, status):
    p, port = edge
    buf, how = exchange(port, data)
    assert_rejected(buf, how, status)
    time.sleep(0.05)  # let a stray upstream connection, if any, show up
    assert len(backend.requests) == 0
    assert backend.connections == 0
    assert wait_metric(p, 1, "istio_requests_total", response_code=str(status)) == 1


def test_vector_table_size():
    assert len(VECTORS) >= 35


def test_control_valid_requests_pass(edge, backend):
    """The same harness with well-formed requests reaches the backend (the vectors above
    fail for their defect, not for the harness)."""
    p, port = edge
    good = [
        req(HOST, b"Content-Length: 5", b"Connection: close", body=b"hello"),
        req(HOST, b"Transfer-Encoding: chunked", b"Connection: close",
            body=b"5;ext=\"q\"\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"),
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET http://a/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ]
    for i, data in enumerate(good):
        buf, how = exchange(port, data)
        status, _h, body, rest = split_response(buf)
        assert status == 200, buf[:300]
        assert rest == b"" and how == "eof"
        assert len(backend.requests) == i + 1
    assert backend.requests[0]["body"] == b"hello"
    assert backend.requests[1]["body"] == b"hello"
    assert backend.requests[3]["path"] == "/x"
    assert wait_metric(p, 0, "trellis_http_parse_errors_total") == 0


def test_parse_errors_counted(edge, backend):
    p, port = edge
    for data in (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                 b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
                 b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\n\r\n"):
        exchange(port, data)
    assert wait_metric(p, 3, "trellis_http_parse_errors_total") == 3
    assert wait_metric(p, 3, "istio_requests_total", response_flags="DPE") == 3
    assert backend.connections == 0


def test_rejected_after_valid_request_on_same_connection(edge, backend):
    """A smuggled second request behind a valid one: the first is answered normally,
    the second rejected, and only the first ever reaches the backend."""
    p, port = edge
    first = req(HOST, b"Content-Length: 5", body=b"hello")
    second = req(HOST, b"Content-Length: 5", b"Transfer-Encoding: chunked",
                 body=b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
    buf, how = exchange(port, first + second)
    status, headers, body, rest = split_response(buf)
    assert status == 200
    assert "connection" not in headers
    assert_rejected(rest, how, 400)
    time.sleep(0.05)
    assert [r["path"] for r in backend.requests] == ["/"]
    assert backend.requests[0]["body"] == b"hello"


@pytest.mark.parametrize("bad_body", [
    b"zz\r\n",
    b"5\r\nhelloXX",
    b"5;a=b\nhello\r\n",
    b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
], ids=["size_zz", "wrong_terminator", "ext_bare_lf", "trailer_te"])
def test_bad_chunk_after_head_was_forwarded(edge, backend, bad_body):
    """The head (and a valid first chunk) went upstream before the bad framing arrives:
    the client gets exactly 400 and a clean close, the upstream connection is closed
    and the backend never records a complete request."""
    p, port = edge
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    try:
        s.sendall(chunked(b"3\r\nabc\r\n"))
        deadline = time.monotonic() + 3
        while backend.connections == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert backend.connections == 1, "head was not forwarded"
        time.sleep(0.05)
        s.sendall(bad_body)
        buf = b""
        how = "timeout"
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                how = "reset"
                break
            if not chunk:
                how = "eof"
                break
            buf += chunk
    finally:
        s.close()
    assert_rejected(buf, how, 400)
    time.sleep(0.1)
    assert backend.requests == []
    assert backend.connections == 1
    # The upstream connection that carried half a body must not go back to the pool:
    # the next request gets a fresh one and arrives exactly as sent.
    buf, how = exchange(port, req(HOST, b"Content-Length: 4", b"Connection: close",
                                  body=b"next", start=b"POST /next HTTP/1.1"))
    assert split_response(buf)[0] == 200 and how == "eof"
    assert [(r["path"], r["body"]) for r in backend.requests] == [("/next", b"next")]
    assert backend.connections == 2


def limits_config(port, backend_port, **limits):
    cfg = simple_config(port, backend_port)
    cfg["limits"] = limits
    return cfg


def test_configured_max_headers(proxies, backend):
    port = free_port()
    p = proxies(limits_config(port, backend.port, max_headers=10))
    ten = req(HOST, *[b"X-H%d: v" % i for i in range(8)], b"Connection: close",
              start=b"GET / HTTP/1.1")
    buf, how = exchange(port, ten)
    assert split_response(buf)[0] == 200 and how == "eof"
    assert len(backend.requests) == 1
    eleven = req(HOST, *[b"X-H%d: v" % i for i in range(9)], b"Connection: close",
                 start=b"GET / HTTP/1.1")
    buf, how = exchange(port, eleven)
    assert_rejected(buf, how, 431)
    assert len(backend.requests) == 1
    assert wait_metric(p, 1, "trellis_http_parse_errors_total") == 1


def test_configured_request_line_and_head_limits(proxies, backend):
    port = free_port()
    p = proxies(limits_config(port, backend.port, max_request_line=128, max_header_bytes=1024))
    # 128 bytes including CRLF is accepted, 129 is not.
    start = b"GET /" + b"a" * (128 - len(b"GET / HTTP/1.1\r\n")) + b" HTTP/1.1"
    assert len(start) + 2 == 128
    buf, how = exchange(port, req(HOST, b"Connection: close", start=start))
    assert split_response(buf)[0] == 200
    start = b"GET /" + b"a" * (129 - len(b"GET / HTTP/1.1\r\n")) + b" HTTP/1.1"
    buf, how = exchange(port, req(HOST, b"Connection: close", start=start))
    assert_rejected(buf, how, 414)
    # A head of exactly 1024 bytes is accepted, 1025 is not.
    base = req(HOST, b"Connection: close", b"X-Pad: ", start=b"GET / HTTP/1.1")
    pad = 1024 - len(base)
    buf, how = exchange(port, req(HOST, b"Connection: close", b"X-Pad: " + b"p" * pad,
                                  start=b"GET / HTTP/1.1"))
    assert split_response(buf)[0] == 200
    buf, how = exchange(port, req(HOST, b"Connection: close", b"X-Pad: " + b"p" * (pad + 1),
                                  start=b"GET / HTTP/1.1"))
    assert_rejected(buf, how, 431)
    assert len(backend.requests) == 2
    assert wait_metric(p, 2, "trellis_http_parse_errors_total") == 2
