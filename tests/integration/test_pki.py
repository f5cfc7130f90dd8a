"""Checks the test PKI against the openssl CLI, the verifier the proxies share."""

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pki  # noqa: E402

OPENSSL = "openssl"


def _run(*args, check=False):
    return subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=30,
                          check=check)


def verify(ca, cert, purpose=None, untrusted=None):
    args = ["verify", "-CAfile", ca]
    if purpose:
        args += ["-purpose", purpose]
    if untrusted:
        args += ["-untrusted", untrusted]
    r = _run(*args, cert)
    return r.returncode, r.stdout + r.stderr


def x509_text(cert):
    return _run("x509", "-in", cert, "-noout", "-text", check=True).stdout


def uri_sans(cert):
    return re.findall(r"URI:(\S+?)(?:,|$)", x509_text(cert), flags=re.M)


def pem_count(path):
    return Path(path).read_text().count("-----BEGIN CERTIFICATE-----")


@pytest.fixture()
def ca(tmp_path):
    return pki.create_ca(tmp_path)


def test_leaf_verifies_and_carries_one_spiffe_uri(tmp_path, ca):
    leaf = pki.create_leaf(tmp_path, ca, "web", ns="shop", sa="web")
    assert leaf.spiffe_id == "spiffe://cluster.local/ns/shop/sa/web"
    for purpose in ("sslclient", "sslserver"):
        rc, out = verify(leaf.ca, leaf.cert, purpose=purpose)
        assert rc == 0, out
        assert ": OK" in out
    assert uri_sans(leaf.cert) == ["spiffe://cluster.local/ns/shop/sa/web"]
    text = x509_text(leaf.cert)
    assert "Digital Signature, Key Encipherment" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert "CA:FALSE" in text
    assert "ASN1 OID: prime256v1" in text
    assert pem_count(leaf.cert) == 1


def test_key_matches_cert_and_is_private(tmp_path, ca):
    leaf = pki.create_leaf(tmp_path, ca, "k")
    assert stat.S_IMODE(os.stat(leaf.key).st_mode) == 0o600
    pub_cert = _run("x509", "-in", leaf.cert, "-noout", "-pubkey", check=True).stdout
    pub_key = _run("pkey", "-in", leaf.key, "-pubout", check=True).stdout
    assert pub_cert == pub_key


def test_rsa_option(tmp_path):
    ca = pki.create_ca(tmp_path, "rsa-ca", key_type="rsa")
    leaf = pki.create_leaf(tmp_path, ca, "r", key_type="rsa")
    rc, out = verify(leaf.ca, leaf.cert)
    assert rc == 0, out
    assert "Public-Key: (2048 bit)" in x509_text(leaf.cert)
    assert "rsaEncryption" in x509_text(ca.cert_path)


def test_intermediate_chain_in_cert_pem(tmp_path, ca):
    inter = pki.create_intermediate_ca(tmp_path, ca)
    leaf = pki.create_leaf(tmp_path, inter, "deep")
    assert leaf.ca == ca.cert_path
    assert pem_count(leaf.cert) == 2
    # The leaf alone is not anchored; with the bundled intermediate it is.
    rc, _ = verify(leaf.ca, leaf.cert)
    assert rc != 0
    rc, out = verify(leaf.ca, leaf.cert, untrusted=leaf.cert)
    assert rc == 0, out


def test_expired_leaf_fails_verify(tmp_path, ca):
    leaf = pki.create_expired_leaf(tmp_path, ca)
    rc, out = verify(leaf.ca, leaf.cert)
    assert rc != 0
    assert "certificate has expired" in out
    assert uri_sans(leaf.cert) == [leaf.spiffe_id]


def test_not_yet_valid_leaf_fails_verify(tmp_path, ca):
    leaf = pki.create_not_yet_valid_leaf(tmp_path, ca)
    rc, out = verify(leaf.ca, leaf.cert)
    assert rc != 0
    assert "certificate is not yet valid" in out


def test_foreign_leaf_fails_against_our_ca(tmp_path, ca):
    leaf = pki.create_foreign_leaf(tmp_path)
    assert leaf.ca != ca.cert_path
    rc, out = verify(ca.cert_path, leaf.cert)
    assert rc != 0
    assert "unable to get local issuer certificate" in out
    rc, out = verify(leaf.ca, leaf.cert)
    assert rc == 0, out


def test_leaf_without_uri_san(tmp_path, ca):
    leaf = pki.create_leaf_without_uri(tmp_path, ca)
    assert leaf.spiffe_id is None
    rc, out = verify(leaf.ca, leaf.cert)
    assert rc == 0, out
    assert uri_sans(leaf.cert) == []
    assert "DNS:nouri.example" in x509_text(leaf.cert)
    bare = pki.create_leaf_without_uri(tmp_path, ca, "bare", dns_names=())
    assert "Subject Alternative Name" not in x509_text(bare.cert)


def test_wrong_trust_domain_leaf(tmp_path, ca):
    leaf = pki.create_wrong_trust_domain_leaf(tmp_path, ca, sa="client")
    rc, out = verify(leaf.ca, leaf.cert)
    assert rc == 0, out
    assert uri_sans(leaf.cert) == ["spiffe://evil.example/ns/default/sa/client"]


def test_cli_standard_set(tmp_path):
    out = tmp_path / "set"
    script = Path(__file__).resolve().parent / "pki.py"
    r = subprocess.run([sys.executable, str(script), "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for f in ("ca.pem", "foreign-ca.pem", "client.pem", "client.key",
              "server.pem", "server.key"):
        assert (out / f).is_file(), f
    for who in ("client", "server"):
        rc, msg = verify(str(out / "ca.pem"), str(out / f"{who}.pem"))
        assert rc == 0, msg
        assert uri_sans(str(out / f"{who}.pem")) == [
            f"spiffe://cluster.local/ns/default/sa/{who}"]
        rc, _ = verify(str(out / "foreign-ca.pem"), str(out / f"{who}.pem"))
        assert rc != 0


def test_load_ca_issues_from_cli_set(tmp_path):
    paths = pki.write_standard_set(tmp_path / "set")
    ca = pki.load_ca(paths["ca"], paths["ca_key"])
    leaf = pki.create_leaf(tmp_path, ca, "late", sa="late")
    rc, out = verify(paths["ca"], leaf.cert)
    assert rc == 0, out
    assert uri_sans(leaf.cert) == ["spiffe://cluster.local/ns/default/sa/late"]
