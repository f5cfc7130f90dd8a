"""Event-loop turn statistics on /stats/prometheus (trellis_event_loop_*): one
set per loop thread, labelled with the thread id, which matches the
process's /proc/PID/task entries."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from conftest import free_port, simple_config  # noqa: E402
from test_admin import parse_prometheus  # noqa: E402


def get(port, path="/"):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def by_tid(samples, name):
    out = {}
    for (n, labels), v in samples.items():
        if n == name:
            tid = int(labels.split('tid="', 1)[1].split('"', 1)[0])
            out.setdefault(tid, []).append((labels, v))
    return out


def test_loop_turns_per_thread(proxies, backend):
    port = free_port()
    cfg = simple_config(port, backend.port)
    cfg["workers"] = 2
    p = proxies(cfg)
    for i in range(20):
        assert get(port, f"/r{i}").startswith(b"HTTP/1.1 200")
    time.sleep(1.3)  # the main thread's once-a-second file check: a timed wake-up
    samples = parse_prometheus(p.metrics())
    pid = p.proc.pid
    tasks = {int(t) for t in os.listdir(f"/proc/{pid}/task")}

    counts = {tid: v for tid, [(_, v)] in by_tid(samples, "trellis_event_loop_turn_seconds_count").items()}
    # The main thread (tid == pid) and the two workers, all threads of this process.
    assert len(counts) == 3
    assert pid in counts
    assert set(counts) <= tasks
    # Every loop has turned; the workers together ran the 20 requests' events.
    assert all(v >= 1 for v in counts.values())
    workers = [t for t in counts if t != pid]
    assert sum(counts[t] for t in workers) >= 20

    # Buckets are cumulative and end at +Inf == _count.
    for tid, rows in by_tid(samples, "trellis_event_loop_turn_seconds_bucket").items():
        values = [v for _, v in rows]
        assert values == sorted(values)
        assert 'le="+Inf"' in rows[-1][0] and rows[-1][1] == counts[tid]
        assert len(rows) == 12

    # The main thread slept on its 1 s timer: timed wake-ups were counted.
    wake = by_tid(samples, "trellis_event_loop_wakeup_delay_seconds_count")
    assert wake[pid][0][1] >= 1

    # The longest turn is at least as long as its phases together, and its
    # start is a CLOCK_MONOTONIC time before now.
    for tid in counts:
        longest = by_tid(samples, "trellis_event_loop_longest_turn_seconds")[tid][0][1]
        phases = sum(v for _, v in by_tid(samples, "trellis_event_loop_longest_turn_phase_seconds")[tid])
        assert phases <= longest + 1e-6
        start = by_tid(samples, "trellis_event_loop_longest_turn_start_seconds")[tid][0][1]
        assert 0 < start <= time.monotonic()
    io_calls = sum(v for tid in workers
                   for lbl, v in by_tid(samples, "trellis_event_loop_longest_turn_calls")[tid]
                   if 'phase="io"' in lbl)
    assert io_calls >= 1
