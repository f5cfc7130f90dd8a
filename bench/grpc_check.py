#!/usr/bin/python3
"""One real gRPC unary call with python3-grpcio (bench/h2.py's sanity check).

    grpc_check.py PORT METHOD REQUEST_HEX EXPECTED_RESPONSE_HEX

Calls METHOD (e.g. /bench.Bench/Unary) on h2c 127.0.0.1:PORT with the raw
request message bytes (no protobuf: identity (de)serializers) and prints one
JSON line {"ok", "code", "details", "response_hex"}. Exit status 0 only if
the call ends with status OK and the response message equals the expected
bytes. Runs in its own process so grpcio's threads never meet the fork()s of
the benchmark driver.
"""

import json
import sys

import grpc


def main() -> int:
    port, method, req_hex, want_hex = sys.argv[1:5]
    # No HTTP proxy from the environment: everything stays on 127.0.0.1.
    ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)])
    out = {"ok": False, "code": None, "details": "", "response_hex": ""}
    try:
        call = ch.unary_unary(method)
        resp, info = call.with_call(bytes.fromhex(req_hex), timeout=5)
        out["code"] = info.code().name
        out["response_hex"] = resp.hex()
        out["ok"] = info.code() == grpc.StatusCode.OK and resp.hex() == want_hex
        if not out["ok"]:
            out["details"] = "unexpected response bytes"
    except grpc.RpcError as e:
        out["code"] = e.code().name
        out["details"] = e.details() or ""
    finally:
        ch.close()
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
