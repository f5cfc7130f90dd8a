"""Formatted output stays bounded and well formed with hostile or large values:
the access log line, /config_dump JSON and the Prometheus exposition."""
import itertools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from conftest import free_port, simple_config  # noqa: E402
from test_admin import http_raw  # noqa: E402

ACCESS_LOG_LINE_MAX = 4096  # obs/access_log.h: TR_ACCESS_LOG_LINE_MAX


def read_lines(path, want, timeout=5.0):
    """The complete lines of a file once it has `want` of them (raw bytes)."""
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path, "rb") as f:
                data = f.read()
            if data.count(b"\n") >= want:
                break
        time.sleep(0.02)
    return data


def test_access_log_long_escaped_values_stay_bounded_and_json(proxies, backend, workdir):
    # Every value that reaches the log at its longest, made of characters
    # that double when escaped: 256-byte listener and cluster names, a long
    # path, a long Host, and a client request id of bytes that are not UTF-8
    # (six bytes each once escaped). Escaped, the line is over 2 KiB.
    listener = '"\\' * 128
    cluster = '\\"' * 128
    port = free_port()
    log = os.path.join(workdir, "access.log")
    cfg = simple_config(port, backend.port)
    cfg["listeners"][0]["name"] = listener
    cfg["clusters"][0]["name"] = cluster
    cfg["route_tables"][0]["virtual_hosts"][0]["routes"][0]["cluster"] = cluster
    cfg["access_log"] = {"enabled": True, "path": log}
    # The backslashes of the path are for the log's escaping: the default
    # path normalisation (STRICT) would refuse them with 400.
    cfg["listeners"][0]["http"] = {"path_normalization": "NONE"}
    p = proxies(cfg)
    path = "/" + '"\\' * 300
    host = "h" * 200
    for _ in range(2):
        r = http_raw(port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n".encode()
                     + b"X-Request-Id: " + b"\xff" * 36 + b"\r\n"
                     + f"User-Agent: {'u' * 3000}\r\nConnection: close\r\n\r\n".encode())
        assert r.startswith(b"HTTP/1.1 200"), r[:200]
    data = read_lines(log, 2)
    assert p.proc.poll() is None, p.read_log()
    lines = data.split(b"\n")
    assert lines[-1] == b"", data[-200:]  # every line ends with a newline
    assert len(lines) == 3, data
    for raw in lines[:2]:
        assert len(raw) + 1 <= ACCESS_LOG_LINE_MAX
        e = json.loads(raw)
        assert e["listener"] == listener
        assert e["cluster"] == cluster
        assert e["method"] == "GET"
        assert e["response_code"] == 200
        assert e["upstream_host"] == f"127.0.0.1:{backend.port}"
        assert e["request_id"] == "\ufffd" * 36
        # The session keeps the first bytes of a long path and Host for the
        # log; what is logged is a prefix, and the line says it was cut.
        assert len(e["path"]) >= 200 and path.startswith(e["path"])
        assert len(e["authority"]) >= 100 and host.startswith(e["authority"])
        assert e["truncated"] is True


def test_config_dump_is_json_with_long_and_odd_values(proxies, backend):
    odd = 'q"b\\s\tt/é€😀'  # quote, backslash, tab, 2-, 3- and 4-byte UTF-8
    odd_name = odd.replace("\t", "_")  # names refuse whitespace
    long_name = ""  # as many characters as fit in 256 bytes, the longest name
    for ch in itertools.cycle("n" + odd_name):
        if len((long_name + ch).encode()) > 256:
            break
        long_name += ch
    port = free_port()
    cfg = simple_config(port, backend.port)
    cfg["node"] = {"id": odd, "workload": odd, "namespace": "ns", "service": odd}
    # Every limit at its largest: the "limits" object alone is longer than
    # the 256-byte line the dump used to format it into.
    cfg["limits"] = {"max_request_line": 1048576, "max_header_bytes": 1048576,
                     "max_headers": 256, "max_connections": 16777216, "buffer_size": 1048576,
                     "http2": {"max_concurrent_streams": 10000, "initial_window_size": 16777215,
                               "connection_window_size": 1 << 30,
                               "max_resets_per_second": 1000000}}
    cfg["listeners"][0]["name"] = long_name
    vh = cfg["route_tables"][0]["virtual_hosts"][0]
    vh["routes"].insert(0, {"name": odd_name, "match": {
        "path": {"exact": "/d" + odd},
        "headers": [{"name": "x-odd", "exact": odd}]},
        "direct_response": {"status": 200, "body": odd * 3000}})
    p = proxies(cfg)
    status, body = p.admin("/config_dump")
    assert status == 200, body[:300]
    dump = json.loads(body)["config"]
    assert dump["node"]["workload"] == odd
    assert dump["node"]["id"] == odd
    assert dump["limits"] == cfg["limits"]
    assert dump["listeners"][0]["name"] == long_name
    route = dump["route_tables"][0]["virtual_hosts"][0]["routes"][0]
    assert route["name"] == odd_name
    assert route["match"]["path"]["exact"] == "/d" + odd
    assert route["match"]["headers"][0]["exact"] == odd
    assert route["direct_response"]["body"] == odd * 3000


def parse_exposition(text):
    """A strict parser of the Prometheus text format (0.0.4): returns a list of
    (name, {label: value}, value). Label values may only use the escapes
    \\\\, \\" and \\n; anything else is an error."""
    samples = []
    assert text.endswith("\n")
    for line in text.split("\n")[:-1]:
        assert line, "empty line"
        if line.startswith("#"):
            parts = line.split(" ")
            assert parts[1] in ("TYPE", "HELP"), line
            if parts[1] == "TYPE":
                assert len(parts) == 4 and parts[3] in ("counter", "gauge", "histogram"), line
            continue
        i = 0
        while i < len(line) and (line[i].isalnum() or line[i] in "_:"):
            i += 1
        name = line[:i]
        assert name and not name[0].isdigit(), line
        labels = {}
        if line[i] == "{":
            i += 1
            while line[i] != "}":
                j = line.index("=", i)
                key = line[i:j]
                assert key.replace("_", "a").isalnum() and not key[0].isdigit(), line
                assert line[j + 1] == '"', line
                i, value = j + 2, []
                while line[i] != '"':
                    if line[i] == "\\":
                        esc = line[i + 1]
                        assert esc in '\\"n', f"bad escape \\{esc} in {line!r}"
                        value.append("\n" if esc == "n" else esc)
                        i += 2
                    else:
                        value.append(line[i])
                        i += 1
                assert key not in labels, line
                labels[key] = "".join(value)
                i += 1
                if line[i] == ",":
                    i += 1
                else:
                    assert line[i] == "}", line
            i += 1
        assert line[i] == " ", line
        samples.append((name, labels, float(line[i + 1:])))
    return samples


def test_prometheus_label_values_are_escaped(proxies, backend):
    # Names come from the configuration, which refuses control characters;
    # a quote and a backslash are allowed and must be escaped (the newline
    # escape is covered by the unit tests of obs/metrics).
    workload = 'wl"quoted\\back\\"slash'
    service = 'svc\\"x'
    port = free_port()
    cfg = simple_config(port, backend.port)
    cfg["node"] = {"workload": workload, "namespace": 'ns"1', "service": service}
    p = proxies(cfg)
    r = http_raw(port, b"GET /m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 200")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        status, text = p.admin("/stats/prometheus")
        assert status == 200
        if "istio_requests_total{" in text:
            break
        time.sleep(0.02)
    samples = parse_exposition(text)
    requests = [(lbl, v) for name, lbl, v in samples if name == "istio_requests_total"]
    assert len(requests) == 1, requests
    lbl, v = requests[0]
    assert v == 1
    assert lbl["destination_workload"] == workload
    assert lbl["destination_workload_namespace"] == 'ns"1'
    assert lbl["destination_service"] == service
    assert lbl["response_code"] == "200"
    buckets = [lbl for name, lbl, _ in samples
               if name == "istio_request_duration_milliseconds_bucket"]
    assert len(buckets) == 20 and all(b["destination_workload"] == workload for b in buckets)
