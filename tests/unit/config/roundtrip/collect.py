"""Regenerates this directory: configurations the integration tests run trellis with.

    TRELLIS_BIN=$PWD/build/trellis /usr/bin/python3 tests/unit/config/roundtrip/collect.py

runs tests/integration with this file as a pytest plugin that records the --config file of
every `trellis proxy` the tests start and fails the start instead (so no proxy runs and the
run takes a couple of minutes; most tests then fail, as expected). The files that `trellis
proxy --check` accepts once their TLS files, admin socket and access log point into a test
directory (certs/web.pem, certs/web.key, certs/ca.pem, run/admin.sock, logs/access.log;
strings longer than 6000 characters cut there) are reduced to a small set that covers every
key path, list length (0, 1, more) and enum or bool value seen (greedy set cover), written
here as NN-MODULE-TEST.json. test_write.c round-trips each of them through the writer.

The directory is also grown without replacing it: when new tests bring new keys, the files of a
run that add features() the kept set lacks are copied in under the next numbers.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
ENUMS = ("direction", "protocol", "mode", "lb", "xff", "request_id", "action", "log_level",
         "min_version")


def _install_recorder(out_dir, trellis):
    """Plugin side: Popen of `trellis proxy --config F` copies F and fails."""
    counter = iter(range(1 << 30))
    orig = subprocess.Popen.__init__

    def init(self, args, *a, **kw):
        if isinstance(args, (list, tuple)) and args and str(args[0]) == trellis \
                and "proxy" in args:
            args = [str(x) for x in args]
            if "--config" in args:
                test = os.environ.get("PYTEST_CURRENT_TEST", "x").split(" ")[0]
                name = f"{next(counter):05d}-{re.sub(r'[^A-Za-z0-9]+', '-', test)[:100]}"
                try:
                    shutil.copyfile(args[args.index("--config") + 1],
                                    os.path.join(out_dir, name))
                except OSError:
                    pass
            raise RuntimeError("collect.py: trellis is not started while collecting")
        orig(self, args, *a, **kw)

    subprocess.Popen.__init__ = init


if os.environ.get("TRELLIS_COLLECT_OUT"):
    _install_recorder(os.environ["TRELLIS_COLLECT_OUT"], os.environ["TRELLIS_BIN"])


def normalize(cfg):
    for t in cfg.get("tls") or []:
        for k, v in (("cert", "certs/web.pem"), ("key", "certs/web.key"), ("ca", "certs/ca.pem")):
            if isinstance(t, dict) and k in t:
                t[k] = v
    if isinstance(cfg.get("admin"), dict) and "socket" in cfg["admin"]:
        cfg["admin"]["socket"] = "run/admin.sock"
    log = cfg.get("access_log")
    if isinstance(log, dict) and log.get("path", "/dev/stdout") not in ("/dev/stdout",
                                                                         "/dev/stderr"):
        log["path"] = "logs/access.log"

    def cut(x):
        if isinstance(x, dict):
            return {k: cut(v) for k, v in x.items()}
        if isinstance(x, list):
            return [cut(v) for v in x]
        return x[:6000] if isinstance(x, str) else x
    return cut(cfg)


def features(x, path=""):
    out = set()
    if isinstance(x, dict):
        out.add(("map", path, tuple(sorted(x)) if path.endswith((".match", ".path")) else ()))
        for k, v in x.items():
            out |= features(v, f"{path}.{k}")
    elif isinstance(x, list):
        out.add(("len", path, min(len(x), 2)))
        for v in x:
            out |= features(v, path + "[]")
    else:
        enum = path.rsplit(".", 1)[-1] in ENUMS and isinstance(x, str)
        out.add(("val", path, x if isinstance(x, bool) or enum else
                 "long" if isinstance(x, str) and len(x) > 4096 else type(x).__name__))
    return out


def main():
    trellis = os.environ.get("TRELLIS_BIN", os.path.join(ROOT, "build", "trellis"))
    with tempfile.TemporaryDirectory(prefix="trellis-collect-") as tmp:
        raw = os.path.join(tmp, "raw")
        os.makedirs(raw)
        for d in ("certs", "run", "logs"):
            os.makedirs(os.path.join(tmp, d))
        for f in ("web.pem", "web.key", "ca.pem"):
            with open(os.path.join(tmp, "certs", f), "w") as fh:
                fh.write("x\n")
        env = dict(os.environ, TRELLIS_COLLECT_OUT=raw, TRELLIS_BIN=trellis,
                   PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "collect",
                        "-p", "no:cacheprovider", os.path.join(ROOT, "tests", "integration")],
                       env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        texts = {}
        for name in sorted(os.listdir(raw)):
            try:
                with open(os.path.join(raw, name)) as fh:
                    cfg = json.load(fh)  # the tests write JSON (conftest.to_yaml)
            except (ValueError, UnicodeDecodeError):
                continue
            if not isinstance(cfg, dict):
                continue
            text = json.dumps(normalize(cfg), indent=2) + "\n"
            path = os.path.join(tmp, "check.json")
            with open(path, "w") as fh:
                fh.write(text)
            ok = subprocess.run([trellis, "proxy", "--check", "--config", path],
                                capture_output=True).returncode == 0
            if ok and text not in texts.values():
                texts[name] = text
    feats = {n: features(json.loads(t)) for n, t in texts.items()}
    covered, chosen = set(), []
    while True:
        best = max(feats, key=lambda n: (len(feats[n] - covered), -len(texts[n])), default=None)
        if best is None or not feats[best] - covered:
            break
        chosen.append(best)
        covered |= feats[best]
    for old in os.listdir(HERE):
        if old.endswith(".json"):
            os.remove(os.path.join(HERE, old))
    for i, n in enumerate(chosen):
        m = re.match(r"\d+-tests-integration-test-([a-z0-9-]+?)-py-test-(.*)$", n)
        short = f"{m.group(1)}-{m.group(2)}" if m else n
        short = re.sub(r"-+", "-", short).strip("-")[:56].rstrip("-")
        with open(os.path.join(HERE, f"{i:02d}-{short}.json"), "w") as fh:
            fh.write(texts[n])
    print(f"{len(texts)} distinct valid configurations, {len(chosen)} kept", file=sys.stderr)


if __name__ == "__main__":
    main()
