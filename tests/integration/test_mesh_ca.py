"""The mesh CA (`trellis ctl ca`), checked with the openssl CLI and a real
mTLS hop between two trellis proxies using the SVIDs it issues.

Keys and CSRs are made by `openssl` as a proxy would make them; the CA only
ever sees the CSR.
"""
import base64
import os
import re
import shutil
import stat
import subprocess
import sys

import pytest
from cryptography import x509

sys.path.insert(0, os.path.dirname(__file__))
import pki  # noqa: E402
from conftest import TRELLIS, free_port  # noqa: E402
from test_mtls import CLIENT_ID, SERVER_ID, config_a, config_b, get, wait_metric  # noqa: E402

TD = "cluster.local"


def ctl_ca(*args, input=None):
    r = subprocess.run([TRELLIS, "ctl", "ca", *args], capture_output=True, input=input,
                       timeout=30)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def openssl(*args, input=None):
    r = subprocess.run(["openssl", *args], capture_output=True, input=input, timeout=30)
    return r.returncode, (r.stdout + r.stderr).decode(errors="replace")


def init_ca(d, name="ca", td=TD, plugin=None):
    ca_dir = os.path.join(d, name)
    args = ["init", ca_dir, "--trust-domain", td]
    if plugin:
        args += ["--plugin-certs", plugin]
    rc, out, err = ctl_ca(*args)
    assert rc == 0, err
    assert f"trust domain {td}" in out
    return ca_dir


def proxy_key_and_csr(d, name, subj="/CN=ignored",
                      san="subjectAltName=URI:spiffe://cluster.local/ns/kube-system/sa/admin,"
                          "DNS:evil.example"):
    """What a proxy does: a local EC P-256 key (0600) and a CSR asking for names."""
    key, csr = os.path.join(d, f"{name}.key"), os.path.join(d, f"{name}.csr")
    old = os.umask(0o077)
    try:
        rc, out = openssl("ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", key)
    finally:
        os.umask(old)
    assert rc == 0, out
    args = ["req", "-new", "-key", key, "-subj", subj, "-out", csr]
    if san:
        args += ["-addext", san]
    rc, out = openssl(*args)
    assert rc == 0, out
    return key, csr


def issue(ca_dir, d, name, spiffe_id, lifetime=None):
    key, csr = proxy_key_and_csr(d, name)
    cert = os.path.join(d, f"{name}.pem")
    args = ["sign", ca_dir, "--csr", csr, "--id", spiffe_id, "-o", cert]
    if lifetime:
        args += ["--lifetime", lifetime]
    rc, out, err = ctl_ca(*args)
    assert rc == 0, err
    return cert, key


def bundle(ca_dir, path):
    rc, out, err = ctl_ca("bundle", ca_dir, "-o", path)
    assert rc == 0, err
    return path


PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", re.S)


def certs_in(path):
    with open(path, "rb") as f:
        return [x509.load_pem_x509_certificate(p) for p in PEM_CERT.findall(f.read())]


def split_chain(chain_path, d):
    """(leaf file, intermediates file or None) for `openssl verify -untrusted`."""
    pems = PEM_CERT.findall(open(chain_path, "rb").read())
    leaf = os.path.join(d, "leaf-only.pem")
    with open(leaf, "wb") as f:
        f.write(pems[0])
    if len(pems) == 1:
        return leaf, None
    inter = os.path.join(d, "intermediates.pem")
    with open(inter, "wb") as f:
        f.write(b"".join(pems[1:]))
    return leaf, inter


def verify(bundle_path, chain_path, d):
    leaf, inter = split_chain(chain_path, d)
    args = ["verify", "-CAfile", bundle_path, "-purpose", "sslclient"]
    if inter:
        args += ["-untrusted", inter]
    return openssl(*args, leaf)


# ---------------------------------------------------------------- tests

def test_new_root_issues_svid_with_only_the_authenticated_id(workdir):
    ca_dir = init_ca(workdir)
    st = os.stat(os.path.join(ca_dir, "ca-key.pem"))
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ca_dir).st_mode) == 0o700
    root = certs_in(os.path.join(ca_dir, "root-cert.pem"))
    assert len(root) == 1 and root[0].issuer == root[0].subject

    cert, key = issue(ca_dir, workdir, "web", f"spiffe://{TD}/ns/default/sa/web", lifetime="2h")
    b = bundle(ca_dir, os.path.join(workdir, "bundle.pem"))
    rc, out = verify(b, cert, workdir)
    assert rc == 0 and ": OK" in out, out
    rc, out = openssl("verify", "-CAfile", b, "-purpose", "sslserver", cert)
    assert rc == 0, out

    rc, text = openssl("x509", "-in", cert, "-noout", "-text")
    assert rc == 0
    assert "URI:spiffe://cluster.local/ns/default/sa/web" in text
    # nothing the CSR asked for
    assert "kube-system" not in text and "evil.example" not in text and "ignored" not in text
    assert re.search(r"Subject Alternative Name: critical\n\s+URI:spiffe://cluster.local/ns/"
                     r"default/sa/web\n", text), text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert re.search(r"Basic Constraints: critical\n\s+CA:FALSE", text), text
    assert re.search(r"Key Usage: critical\n\s+Digital Signature\n", text), text
    assert "Subject Key Identifier" in text and "Authority Key Identifier" in text

    leaf = certs_in(cert)[0]
    life = leaf.not_valid_after - leaf.not_valid_before
    assert 2 * 3600 + 290 <= life.total_seconds() <= 2 * 3600 + 310  # 2h + 5 min backdating
    # the issued cert matches the proxy's key, which never left its file
    rc, out = openssl("x509", "-in", cert, "-noout", "-pubkey")
    rc2, out2 = openssl("pkey", "-in", key, "-pubout")
    assert rc == 0 and rc2 == 0 and out == out2
    assert not any(f.endswith(".key") for f in os.listdir(ca_dir))


def test_sign_refusals(workdir):
    ca_dir = init_ca(workdir)
    key, csr = proxy_key_and_csr(workdir, "w")
    out_path = os.path.join(workdir, "out.pem")

    rc, out, err = ctl_ca("sign", ca_dir, "--csr", csr, "--id", "spiffe://other.td/ns/a/sa/b")
    assert rc == 1 and "not in the CA's trust domain cluster.local" in err, err
    rc, out, err = ctl_ca("sign", ca_dir, "--csr", csr, "--id", f"spiffe://{TD}/a/b")
    assert rc == 1 and "not a workload ID" in err, err
    rc, out, err = ctl_ca("sign", ca_dir, "--csr", csr, "--id", f"spiffe://{TD}/ns/a/sa/b",
                          "--lifetime", "9s")  # under the 10 s minimum
    assert rc == 1 and "lifetime" in err, err
    rc, out, err = ctl_ca("sign", ca_dir, "--csr", csr, "--id", f"spiffe://{TD}/ns/a/sa/b",
                          "--lifetime", "forever")
    assert rc == 2 and "--lifetime" in err, err

    # a CSR whose signature does not verify: flip a bit of its last byte
    pem = open(csr, "rb").read()
    der = bytearray(base64.b64decode(b"".join(pem.splitlines()[1:-1])))
    der[-1] ^= 1
    bad = os.path.join(workdir, "bad.csr")
    with open(bad, "wb") as f:
        f.write(b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(bytes(der)) +
                b"-----END CERTIFICATE REQUEST-----\n")
    rc, out, err = ctl_ca("sign", ca_dir, "--csr", bad, "--id", f"spiffe://{TD}/ns/a/sa/b",
                          "-o", out_path)
    assert rc == 1 and "signature does not verify" in err, err
    assert not os.path.exists(out_path)

    big = os.path.join(workdir, "big.csr")
    with open(big, "wb") as f:
        f.write(pem + b"#" * 20000)
    rc, out, err = ctl_ca("sign", ca_dir, "--csr", big, "--id", f"spiffe://{TD}/ns/a/sa/b")
    assert rc == 1 and "larger than the limit of 16384" in err, err

    # the key must stay private: a loosened CA key is refused
    os.chmod(os.path.join(ca_dir, "ca-key.pem"), 0o644)
    rc, out, err = ctl_ca("sign", ca_dir, "--csr", csr, "--id", f"spiffe://{TD}/ns/a/sa/b")
    assert rc == 1 and "ca-key.pem: mode 0644" in err, err

    rc, out, err = ctl_ca("init", ca_dir)
    assert rc == 1 and "already holds a CA" in err, err


def test_plugin_intermediate(workdir):
    src = os.path.join(workdir, "plugin")
    root = pki.create_ca(src, "root")
    inter = pki.create_intermediate_ca(src, root, "inter")
    shutil.copy(inter.cert_path, os.path.join(src, "ca-cert.pem"))
    shutil.copy(inter.key_path, os.path.join(src, "ca-key.pem"))
    shutil.copy(root.cert_path, os.path.join(src, "root-cert.pem"))
    with open(os.path.join(src, "cert-chain.pem"), "wb") as f:
        f.write(open(inter.cert_path, "rb").read() + open(root.cert_path, "rb").read())
    ca_dir = init_ca(workdir, plugin=src)
    assert stat.S_IMODE(os.stat(os.path.join(ca_dir, "ca-key.pem")).st_mode) == 0o600

    cert, key = issue(ca_dir, workdir, "web", f"spiffe://{TD}/ns/default/sa/web")
    chain = certs_in(cert)
    assert len(chain) == 2  # leaf + intermediate, no root
    assert chain[1] == certs_in(inter.cert_path)[0]
    rc, out = verify(root.cert_path, cert, workdir)
    assert rc == 0, out
    rc, out = verify(bundle(ca_dir, os.path.join(workdir, "b.pem")), cert, workdir)
    assert rc == 0, out

    # A key that is not the intermediate's is refused, and nothing is left behind.
    other = pki.create_ca(os.path.join(workdir, "other"), "other")
    shutil.copy(other.key_path, os.path.join(src, "ca-key.pem"))
    bad_dir = os.path.join(workdir, "bad")
    rc, out, err = ctl_ca("init", bad_dir, "--plugin-certs", src)
    assert rc == 1 and "does not match the certificate" in err, err
    assert os.listdir(bad_dir) == []
    # An intermediate that does not chain to the given root is refused.
    shutil.copy(inter.key_path, os.path.join(src, "ca-key.pem"))
    shutil.copy(other.cert_path, os.path.join(src, "root-cert.pem"))
    rc, out, err = ctl_ca("init", bad_dir, "--plugin-certs", src)
    assert rc == 1 and "does not chain to a root" in err, err


def test_issued_svids_work_in_a_trellis_mtls_hop(proxies, backend, workdir):
    ca_dir = init_ca(workdir)
    b_bundle = bundle(ca_dir, os.path.join(workdir, "bundle.pem"))
    s_cert, s_key = issue(ca_dir, workdir, "server", SERVER_ID)
    c_cert, c_key = issue(ca_dir, workdir, "client", CLIENT_ID)
    a_port, b_port = free_port(), free_port()
    b = proxies(config_b(b_port, backend.port, s_cert, s_key, b_bundle), "B")
    a = proxies(config_a(a_port, b_port, c_cert, c_key, b_bundle), "A")
    status, _, body = get(a_port, "/through-the-mesh")
    assert status == 200, body
    assert [r["path"] for r in backend.requests] == ["/through-the-mesh"]
    assert wait_metric(b, "istio_requests_total", 1, reporter="destination",
                       source_principal=CLIENT_ID, connection_security_policy="mutual_tls",
                       response_code="200") == 1, b.metrics()
    assert b.metric("trellis_tls_handshake_errors_total") == 0


def test_root_rotation_overlap(proxies, backend, workdir):
    old_ca = init_ca(workdir, "old")
    new_ca = init_ca(workdir, "new")
    old_root = bundle(old_ca, os.path.join(workdir, "old-root.pem"))
    new_root = bundle(new_ca, os.path.join(workdir, "new-root.pem"))
    both = os.path.join(workdir, "both.pem")
    with open(both, "wb") as f:
        f.write(open(old_root, "rb").read() + open(new_root, "rb").read())

    old_leaf, old_key = issue(old_ca, workdir, "client", CLIENT_ID)
    new_leaf, new_key = issue(new_ca, workdir, "server", SERVER_ID)
    # The overlap bundle verifies leaves of either root; each root alone only its own.
    assert verify(both, old_leaf, workdir)[0] == 0
    assert verify(both, new_leaf, workdir)[0] == 0
    assert verify(old_root, new_leaf, workdir)[0] != 0
    assert verify(new_root, old_leaf, workdir)[0] != 0

    # A CA directory whose root-cert.pem holds both roots still loads and signs,
    # and its bundle carries both.
    with open(os.path.join(old_ca, "root-cert.pem"), "wb") as f:
        f.write(open(both, "rb").read())
    rc, out, err = ctl_ca("bundle", old_ca)
    assert rc == 0 and out.count("BEGIN CERTIFICATE") == 2, err
    rc, out, err = ctl_ca("check", old_ca)
    roots = re.findall(r"^root\s+ok\s.*O=cluster.local/CN=trellis mesh root ([0-9a-f]{8})$", out, re.M)
    assert rc == 0 and len(roots) == 2 and roots[0] != roots[1], out + err

    # mid-rotation: client still on the old root, server already on the new one
    a_port, b_port = free_port(), free_port()
    proxies(config_b(b_port, backend.port, new_leaf, new_key, both), "B")
    proxies(config_a(a_port, b_port, old_leaf, old_key, both), "A")
    status, _, body = get(a_port, "/rotating")
    assert status == 200, body
    # without the overlap the client does not trust the server's new root
    a2_port = free_port()
    proxies(config_a(a2_port, b_port, old_leaf, old_key, old_root), "A2")
    status, _, body = get(a2_port, "/no-overlap")
    assert status == 503, body
    assert [r["path"] for r in backend.requests] == ["/rotating"]


def test_check_and_token(workdir):
    ca_dir = init_ca(workdir)
    fresh, _ = issue(ca_dir, workdir, "fresh", f"spiffe://{TD}/ns/default/sa/fresh")
    rc, out, err = ctl_ca("check", ca_dir, fresh)
    assert rc == 0, out + err
    assert re.search(r"^root\s+ok\s+expires 20\d\d-", out, re.M), out
    assert re.search(r"^leaf\s+ok\s+.*spiffe://cluster.local/ns/default/sa/fresh$", out, re.M)

    # A 1-minute SVID (plus 5 minutes of backdating) is already past 80% of its life.
    short, _ = issue(ca_dir, workdir, "short", f"spiffe://{TD}/ns/default/sa/short",
                     lifetime="1m")
    rc, out, err = ctl_ca("check", ca_dir, fresh, short)
    assert rc == 1, out + err
    assert re.search(r"^leaf\s+warning\s+.*sa/short$", out, re.M), out

    # An expired leaf from the test PKI: exit 2.
    other = pki.create_ca(os.path.join(workdir, "pki"), "x")
    expired = pki.create_expired_leaf(os.path.join(workdir, "pki"), other)
    rc, out, err = ctl_ca("check", ca_dir, expired.cert)
    assert rc == 2 and re.search(r"^leaf\s+expired", out, re.M), out
    rc, out, err = ctl_ca("check", os.path.join(workdir, "nope"))
    assert rc == 2 and "trust-domain" in err, err

    rc, out, err = ctl_ca("token", ca_dir, "default/web")
    assert rc == 0, err
    token = out.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    tokens = os.path.join(ca_dir, "tokens")
    assert stat.S_IMODE(os.stat(tokens).st_mode) == 0o600
    stored = open(tokens).read()
    assert token not in stored and stored.endswith(" default web\n")
    rc, out2, err = ctl_ca("token", ca_dir, "default/web")
    assert rc == 0 and out2.strip() != token
    rc, out, err = ctl_ca("token", ca_dir, "no-slash")
    assert rc == 2, err
