"""A grpcio test server with generic (bytes in, bytes out) handlers, for the
gRPC integration tests. No generated stubs: every method takes and returns raw
bytes, so payloads can be compared byte for byte.

Service "test.Echo":
  Unary          echo the request; echoes metadata (see _echo_md)
  ClientStream   reply = b"".join(requests); trailing metadata x-count = number received
  ServerStream   request b"N:SIZE" -> N messages, message i = payload(i, SIZE)
  Bidi           echo each message as it arrives
  Sleep          request b"MS" -> sleep MS ms (bounded), then reply b"slept"
  Abort          abort(NOT_FOUND, "nope")
  Big            request b"SIZE" -> one reply of payload(0, SIZE); records len(request)
  Tick           server stream: up to 400 messages 25 ms apart; records cancellation
"""
import hashlib
import threading
import time
from concurrent import futures

import grpc

SERVICE = "test.Echo"
MAX_MSG = 32 * 1024 * 1024
OPTIONS = [("grpc.max_send_message_length", MAX_MSG),
           ("grpc.max_receive_message_length", MAX_MSG)]
CHANNEL_OPTIONS = OPTIONS + [("grpc.enable_http_proxy", 0),
                             ("grpc.enable_retries", 0)]


def payload(i, size):
    """Deterministic, position-dependent bytes (detects reordering and truncation)."""
    seed = f"<{i}:{size}>".encode()
    reps = size // len(seed) + 1
    return (seed * reps)[:size]


def _echo_md(context):
    """Invocation metadata keys starting with x-echo- come back as initial
    metadata (prefix x-init-) and as trailing metadata (prefix x-trail-)."""
    md = [(k, v) for k, v in context.invocation_metadata() if k.startswith("x-echo-")]
    if md:
        context.send_initial_metadata([("x-init-" + k[len("x-echo-"):], v) for k, v in md])
        context.set_trailing_metadata([("x-trail-" + k[len("x-echo-"):], v) for k, v in md])


class EchoServer:
    def __init__(self, port):
        self.port = port
        self.calls = {}
        self.lock = threading.Lock()
        self.tick_cancelled = threading.Event()
        self.tick_sent = 0
        self.sleep_done = []        # for each Sleep: was the context still active when it woke
        self.big_request_len = None
        self.big_request_digest = None
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=OPTIONS)
        h = grpc.method_handlers_generic_handler(SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
            "Sleep": grpc.unary_unary_rpc_method_handler(self.sleep),
            "Abort": grpc.unary_unary_rpc_method_handler(self.abort),
            "Big": grpc.unary_unary_rpc_method_handler(self.big),
            "Tick": grpc.unary_stream_rpc_method_handler(self.tick),
        })
        self.server.add_generic_rpc_handlers((h,))
        bound = self.server.add_insecure_port(f"127.0.0.1:{port}")
        assert bound == port, f"grpc server could not bind {port}"
        self.server.start()

    def _count(self, name):
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    def unary(self, req, context):
        self._count("Unary")
        _echo_md(context)
        return req

    def client_stream(self, it, context):
        self._count("ClientStream")
        parts = list(it)
        context.set_trailing_metadata([("x-count", str(len(parts)))])
        return b"".join(parts)

    def server_stream(self, req, context):
        self._count("ServerStream")
        n, size = (int(x) for x in req.split(b":"))
        for i in range(n):
            yield payload(i, size)

    def bidi(self, it, context):
        self._count("Bidi")
        for m in it:
            yield m

    def sleep(self, req, context):
        self._count("Sleep")
        ms = min(int(req), 5000)
        end = time.monotonic() + ms / 1000
        while time.monotonic() < end and context.is_active():
            time.sleep(0.01)
        with self.lock:
            self.sleep_done.append(context.is_active())
        return b"slept"

    def abort(self, req, context):
        self._count("Abort")
        context.abort(grpc.StatusCode.NOT_FOUND, "nope")

    def big(self, req, context):
        self._count("Big")
        self.big_request_len = len(req)
        self.big_request_digest = hashlib.sha256(req).hexdigest()
        size = int(req[:16].split(b":")[0])
        return payload(0, size)

    def tick(self, req, context):
        self._count("Tick")
        context.add_callback(self.tick_cancelled.set)
        for i in range(400):
            if not context.is_active():
                self.tick_cancelled.set()
                return
            self.tick_sent = i + 1
            yield payload(i, 64)
            time.sleep(0.025)

    def close(self):
        self.server.stop(grace=None).wait(5)


class Client:
    """Bytes-only stubs on one insecure (h2c) channel."""

    def __init__(self, port):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
        m = f"/{SERVICE}/"
        self.unary = self.channel.unary_unary(m + "Unary")
        self.client_stream = self.channel.stream_unary(m + "ClientStream")
        self.server_stream = self.channel.unary_stream(m + "ServerStream")
        self.bidi = self.channel.stream_stream(m + "Bidi")
        self.sleep = self.channel.unary_unary(m + "Sleep")
        self.abort = self.channel.unary_unary(m + "Abort")
        self.big = self.channel.unary_unary(m + "Big")
        self.tick = self.channel.unary_stream(m + "Tick")

    def method(self, path):
        return self.channel.unary_unary(path)

    def close(self):
        self.channel.close()


def grpc_frame(msg):
    """A gRPC length-prefixed message (uncompressed)."""
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


def raw_call(port, path, msg=b"", extra=(), timeout=5.0):
    """One gRPC call over a raw h2c connection (python3-h2), to see the framing
    that grpcio hides. Returns dict: headers, data, trailers, trailers_only
    (the response was a single HEADERS frame with END_STREAM), reset (error
    code or None), elapsed."""
    import socket

    import h2.config
    import h2.connection
    import h2.events

    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                            (":authority", f"127.0.0.1:{port}"),
                            ("content-type", "application/grpc"), ("te", "trailers"), *extra])
    conn.send_data(sid, grpc_frame(msg), end_stream=True)
    t0 = time.monotonic()
    s.sendall(conn.data_to_send())
    out = {"headers": None, "data": b"", "trailers": None, "trailers_only": False,
           "reset": None, "elapsed": None}
    deadline = t0 + timeout
    try:
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            done = False
            for ev in conn.receive_data(chunk):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    out["headers"] = list(ev.headers)
                    out["trailers_only"] = ev.stream_ended is not None
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    out["data"] += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.TrailersReceived) and ev.stream_id == sid:
                    out["trailers"] = list(ev.headers)
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    out["reset"] = ev.error_code
                    done = True
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    done = True
            pending = conn.data_to_send()
            if pending:
                s.sendall(pending)
            if done:
                out["elapsed"] = time.monotonic() - t0
                break
    finally:
        s.close()
    return out
