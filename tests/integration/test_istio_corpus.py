"""Every Istio networking and AuthorizationPolicy file of the shared corpus (../shared/corpus: the
Istio project's samples and test data, and the seed skill's examples) is
compiled with `trellis ctl compile` against bookinfo's services, for a client
workload. Each file must give exactly the findings recorded in
tests/data/istio_corpus_expected.txt (file, line, column, severity,
resource, field path, message): nothing silently ignored, nothing new
unnoticed. When a file compiles without errors, the printed model must pass
`trellis proxy --check`.

After a deliberate change, regenerate with TRELLIS_UPDATE_GOLDEN=1 and review
the diff of the expected file like code."""
import os
import re
import subprocess

import pytest

from conftest import TRELLIS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.normpath(os.path.join(ROOT, "..", "shared", "corpus"))
EXPECTED = os.path.join(ROOT, "tests", "data", "istio_corpus_expected.txt")
# Paths relative to the corpus (the command runs there), so messages name
# files the same way on every machine.
CONTEXT = ["istio/bookinfo/platform/kube/bookinfo.yaml",
           "istio/bookinfo/platform/kube/bookinfo-versions.yaml"]
CLIENT = """apiVersion: v1
kind: Pod
metadata: {name: corpus-client, namespace: default, labels: {app: corpus-client}}
spec: {serviceAccountName: corpus-client}
"""
LINE = re.compile(r"^(?P<file>[^:]+):(?P<pos>\d+:\d+): (?P<sev>warning|error): (?P<rest>.*)$")


def corpus_files():
    out = []
    for sub in ("istio", "seed-skill"):
        for d, _, files in os.walk(os.path.join(CORPUS, sub)):
            for f in files:
                p = os.path.join(d, f)
                with open(p, "rb") as fh:
                    text = fh.read()
                if b"networking.istio.io" in text or (b"security.istio.io" in text and
                                                      b"AuthorizationPolicy" in text):
                    out.append(os.path.relpath(p, CORPUS))
    return sorted(out)


def mesh_certs(workdir, certs):
    """The workload's cert.pem, key.pem and ca.pem as `--cert-dir` expects."""
    d = os.path.join(workdir, "certs")
    os.makedirs(d, exist_ok=True)
    for name, key in (("cert.pem", "client_cert"), ("key.pem", "client_key"), ("ca.pem", "ca")):
        if not os.path.exists(os.path.join(d, name)):
            os.symlink(certs[key], os.path.join(d, name))
    return d


def findings(rel, workdir, cert_dir):
    client = os.path.join(workdir, "client.yaml")
    with open(client, "w") as f:
        f.write(CLIENT)
    path = rel
    r = subprocess.run([TRELLIS, "ctl", "compile", path, *CONTEXT, client,
                        "--workload", "default/corpus-client", "--cert-dir", cert_dir],
                       capture_output=True, text=True, timeout=60, cwd=CORPUS)
    lines = []
    for line in r.stderr.splitlines():
        m = LINE.match(line)
        if m and os.path.normpath(m["file"]) == os.path.normpath(path):
            lines.append(f"{rel}\t{m['pos']}\t{m['sev']}\t{m['rest']}")
        elif not m and not line.startswith("trellis ctl compile:") and \
                ": warning: " not in line and ": error: " not in line:
            lines.append(f"{rel}\t-\tother\t{line}")
    return r, lines


def load_expected():
    exp = {}
    if os.path.exists(EXPECTED):
        with open(EXPECTED) as f:
            for line in f:
                line = line.rstrip("\n")
                if line and not line.startswith("#"):
                    exp.setdefault(line.split("\t", 1)[0], []).append(line)
    return exp


def test_corpus_findings_are_the_expected_ones(workdir, certs):
    cert_dir = mesh_certs(workdir, certs)
    files = corpus_files()
    assert len(files) > 150  # the corpus is there
    expected = load_expected()
    got_all, mismatches, checked = [], [], 0
    for rel in files:
        r, got = findings(rel, workdir, cert_dir)
        got_all.extend(got)
        if got != expected.get(rel, []):
            mismatches.append((rel, expected.get(rel, []), got))
        if r.returncode == 0:
            model = os.path.join(workdir, "model.yaml")
            with open(model, "w") as f:
                f.write(r.stdout)
            c = subprocess.run([TRELLIS, "proxy", "--config", model, "--check"],
                               capture_output=True, text=True, timeout=30)
            assert c.returncode == 0, f"{rel}: the compiled model fails --check: {c.stderr}"
            checked += 1
    if os.environ.get("TRELLIS_UPDATE_GOLDEN"):
        with open(EXPECTED, "w") as f:
            f.write("# tests/integration/test_istio_corpus.py: the findings of `trellis ctl compile`\n"
                    "# for each Istio file of ../shared/corpus (FILE, LINE:COL, SEVERITY, MESSAGE).\n")
            for line in got_all:
                f.write(line + "\n")
        return
    assert checked > 100  # most files compile and their models pass --check
    assert not mismatches, "\n".join(
        f"{rel}:\n  expected: {e}\n  got:      {g}" for rel, e, g in mismatches[:10])
