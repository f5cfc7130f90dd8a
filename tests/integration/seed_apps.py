#!/usr/bin/python3
"""Applications for test_seed_walkthrough.py, run by `trellis up` as Pod
commands (in the Pod's network namespace):

  seed_apps.py echo NAME PORT        HTTP on 127.0.0.1:PORT; any method gets 200
                                     and JSON {name, method, path, headers}
  seed_apps.py keys PORT DIR         HTTPS on 0.0.0.0:PORT (no sidecar) with
                                     DIR/keys.pem and DIR/keys.key; GET of
                                     /.well-known/jwks.json serves DIR/jwks.json,
                                     every request is appended to DIR/keys.log
  seed_apps.py idle                  sleeps (a client workload: `up --exec`)
"""
import http.server
import json
import os
import ssl
import sys
import time


def echo(name, port):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            body = json.dumps({"name": name, "method": self.command, "path": self.path,
                               "headers": {k.lower(): v for k, v in self.headers.items()}})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = answer

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def keys(port, d):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            with open(os.path.join(d, "keys.log"), "a") as f:
                f.write(f"{self.command} {self.path} {self.headers.get('Host')}\n")
            if self.path != "/.well-known/jwks.json":
                self.send_error(404)
                return
            with open(os.path.join(d, "jwks.json"), "rb") as f:
                body = f.read()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(d, "keys.pem"), os.path.join(d, "keys.key"))
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True,
                                   do_handshake_on_connect=False)
    httpd.daemon_threads = True
    httpd.serve_forever()


def main(argv):
    if argv[1] == "echo":
        echo(argv[2], int(argv[3]))
    elif argv[1] == "keys":
        keys(int(argv[2]), argv[3])
    else:
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv)
