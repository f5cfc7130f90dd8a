#!/usr/bin/python3
"""Test PKI for trellis integration tests, the benchmark and the demo.

Creates CAs and SPIFFE X.509-SVID leaves (plus deliberately broken variants)
as PEM files in a caller-chosen directory. Uses python3-cryptography (Debian
38.x), so run it with /usr/bin/python3.

Library use:
    import pki
    ca = pki.create_ca(d)                                   # EC P-256 root
    srv = pki.create_leaf(d, ca, "server", sa="server")     # Issued(cert, key, ca, spiffe_id)
    bad = pki.create_expired_leaf(d, ca)

CLI (standard set used by bench/ and the demo):
    /usr/bin/python3 tests/integration/pki.py --out DIR
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_TRUST_DOMAIN = "cluster.local"
KEY_TYPES = ("ec", "rsa")

__all__ = [
    "CA", "Issued", "spiffe_id", "create_ca", "load_ca", "create_intermediate_ca",
    "create_leaf", "create_foreign_leaf", "create_expired_leaf",
    "create_not_yet_valid_leaf", "create_leaf_without_uri",
    "create_wrong_trust_domain_leaf", "write_standard_set",
]


@dataclass(frozen=True)
class CA:
    """A signing CA. `root` is the trust-anchor PEM path to hand to verifiers;
    `chain` holds intermediate certs (leaf-side order) that issued leaves must
    carry, empty for a root."""
    name: str
    cert_path: str
    key_path: str
    root: str
    cert: x509.Certificate = field(repr=False)
    key: object = field(repr=False)
    chain: tuple = field(default=(), repr=False)


@dataclass(frozen=True)
class Issued:
    """Paths of an issued leaf. `cert` is the leaf PEM followed by any
    intermediates; `ca` is the root PEM that verifies it."""
    cert: str
    key: str
    ca: str
    spiffe_id: Optional[str] = None


def spiffe_id(trust_domain: str, ns: str, sa: str) -> str:
    """The SPIFFE ID form trellis uses for workloads."""
    return f"spiffe://{trust_domain}/ns/{ns}/sa/{sa}"


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)


def _new_key(key_type: str):
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"key_type must be one of {KEY_TYPES}, got {key_type!r}")


def _write_key(path: Path, key) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Create with 0600 from the start: private keys are never world readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_certs(path: Path, certs: Iterable[x509.Certificate]) -> None:
    with open(path, "wb") as f:
        for c in certs:
            f.write(c.public_bytes(serialization.Encoding.PEM))


def _validity(not_before: Optional[_dt.datetime], not_after: Optional[_dt.datetime],
              days: int):
    # Backdate a little so fresh certs are valid despite clock skew between
    # this process and the verifier.
    nb = not_before if not_before is not None else _now() - _dt.timedelta(minutes=5)
    na = not_after if not_after is not None else nb + _dt.timedelta(days=days)
    return nb, na


def _ca_cert(subject_cn: str, key, issuer_name: Optional[x509.Name], issuer_key,
             issuer_cert: Optional[x509.Certificate], days: int,
             path_len: Optional[int]) -> x509.Certificate:
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trellis test PKI"),
        x509.NameAttribute(NameOID.COMMON_NAME, subject_cn),
    ])
    nb, na = _validity(None, None, days)
    pub = key.public_key()
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(issuer_name if issuer_name is not None else subject)
         .public_key(pub)
         .serial_number(x509.random_serial_number())
         .not_valid_before(nb)
         .not_valid_after(na)
         .add_extension(x509.BasicConstraints(ca=True, path_length=path_len), critical=True)
         .add_extension(x509.KeyUsage(
             digital_signature=True, content_commitment=False, key_encipherment=False,
             data_encipherment=False, key_agreement=False, key_cert_sign=True,
             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False))
    if issuer_cert is not None:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()),
            critical=False)
    return b.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())


def create_ca(out_dir: PathLike, name: str = "ca", key_type: str = "ec",
              common_name: Optional[str] = None, days: int = 3650) -> CA:
    """Self-signed root CA; writes <name>.pem and <name>.key into out_dir."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    key = _new_key(key_type)
    cert = _ca_cert(common_name or f"trellis test {name}", key, None, None, None, days, None)
    cert_path, key_path = d / f"{name}.pem", d / f"{name}.key"
    _write_certs(cert_path, [cert])
    _write_key(key_path, key)
    return CA(name=name, cert_path=str(cert_path), key_path=str(key_path),
              root=str(cert_path), cert=cert, key=key, chain=())


def load_ca(cert_path: PathLike, key_path: PathLike, name: str = "ca") -> CA:
    """A root CA written earlier (e.g. by the CLI: ca.pem + ca.key), to issue
    more leaves from it."""
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    return CA(name=name, cert_path=str(cert_path), key_path=str(key_path),
              root=str(cert_path), cert=cert, key=key, chain=())


def create_intermediate_ca(out_dir: PathLike, parent: CA, name: str = "intermediate",
                           key_type: str = "ec", days: int = 1825) -> CA:
    """Intermediate CA signed by `parent`. Leaves it issues get it appended to
    their cert PEM; their `ca` stays the parent's root."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    key = _new_key(key_type)
    cert = _ca_cert(f"trellis test {name}", key, parent.cert.subject, parent.key,
                    parent.cert, days, 0)
    cert_path, key_path = d / f"{name}.pem", d / f"{name}.key"
    _write_certs(cert_path, [cert])
    _write_key(key_path, key)
    return CA(name=name, cert_path=str(cert_path), key_path=str(key_path),
              root=parent.root, cert=cert, key=key, chain=(cert,) + tuple(parent.chain))


def create_leaf(out_dir: PathLike, ca: CA, name: str, *,
                trust_domain: str = DEFAULT_TRUST_DOMAIN, ns: str = "default",
                sa: Optional[str] = None, uri: Optional[str] = None,
                with_uri: bool = True, key_type: str = "ec",
                common_name: Optional[str] = None,
                dns_names: Sequence[str] = (),
                not_before: Optional[_dt.datetime] = None,
                not_after: Optional[_dt.datetime] = None,
                days: int = 365) -> Issued:
    """Leaf X.509-SVID signed by `ca`, written as <name>.pem / <name>.key.

    The URI SAN is `uri` if given, else spiffe://<trust_domain>/ns/<ns>/sa/<sa>
    (sa defaults to `name`). with_uri=False omits it (a non-SVID). The subject
    CN defaults to the SA name so that hostname-verifying peers (nginx,
    HAProxy verifyhost) can match it; SPIFFE-aware verifiers ignore it.
    """
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    sa = sa if sa is not None else name
    sid = None
    if with_uri:
        sid = uri if uri is not None else spiffe_id(trust_domain, ns, sa)
    key = _new_key(key_type)
    pub = key.public_key()
    nb, na = _validity(not_before, not_after, days)
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trellis test PKI"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name or sa),
    ])
    sans: List[x509.GeneralName] = []
    if sid is not None:
        sans.append(x509.UniformResourceIdentifier(sid))
    sans.extend(x509.DNSName(n) for n in dns_names)
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(ca.cert.subject)
         .public_key(pub)
         .serial_number(x509.random_serial_number())
         .not_valid_before(nb)
         .not_valid_after(na)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(
             digital_signature=True, content_commitment=False, key_encipherment=True,
             data_encipherment=False, key_agreement=False, key_cert_sign=False,
             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage(
             [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
             critical=False)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
         .add_extension(
             x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()),
             critical=False))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(ca.key, hashes.SHA256())
    cert_path, key_path = d / f"{name}.pem", d / f"{name}.key"
    _write_certs(cert_path, [cert, *ca.chain])
    _write_key(key_path, key)
    return Issued(cert=str(cert_path), key=str(key_path), ca=ca.root, spiffe_id=sid)


def create_foreign_leaf(out_dir: PathLike, name: str = "foreign", *,
                        ca_name: str = "foreign-ca", **kw) -> Issued:
    """Valid-looking SVID from an unrelated CA (<ca_name>.pem). The returned
    `ca` is that foreign root, so tests can also trust it on purpose."""
    foreign = create_ca(out_dir, ca_name, key_type=kw.get("key_type", "ec"))
    return create_leaf(out_dir, foreign, name, **kw)


def create_expired_leaf(out_dir: PathLike, ca: CA, name: str = "expired", **kw) -> Issued:
    """Leaf whose validity ended a day ago."""
    now = _now()
    return create_leaf(out_dir, ca, name, not_before=now - _dt.timedelta(days=2),
                       not_after=now - _dt.timedelta(days=1), **kw)


def create_not_yet_valid_leaf(out_dir: PathLike, ca: CA, name: str = "notyet", **kw) -> Issued:
    """Leaf whose validity starts tomorrow."""
    now = _now()
    return create_leaf(out_dir, ca, name, not_before=now + _dt.timedelta(days=1),
                       not_after=now + _dt.timedelta(days=30), **kw)


def create_leaf_without_uri(out_dir: PathLike, ca: CA, name: str = "nouri",
                            dns_names: Sequence[str] = ("nouri.example",), **kw) -> Issued:
    """CA-valid leaf with no URI SAN (a DNS SAN only, unless dns_names=())."""
    return create_leaf(out_dir, ca, name, with_uri=False, dns_names=dns_names, **kw)


def create_wrong_trust_domain_leaf(out_dir: PathLike, ca: CA, name: str = "wrongtd",
                                   trust_domain: str = "evil.example", **kw) -> Issued:
    """Leaf signed by the right CA but naming another trust domain."""
    return create_leaf(out_dir, ca, name, trust_domain=trust_domain, **kw)


def write_standard_set(out_dir: PathLike, key_type: str = "ec") -> dict:
    """The fixed set shared by bench/ and the demo. Returns name -> path:
    ca, ca_key, foreign_ca, client_cert, client_key, server_cert, server_key,
    foreign_client_cert, foreign_client_key."""
    d = Path(out_dir)
    ca = create_ca(d, "ca", key_type=key_type)
    client = create_leaf(d, ca, "client", sa="client", key_type=key_type)
    server = create_leaf(d, ca, "server", sa="server", key_type=key_type)
    foreign = create_foreign_leaf(d, "foreign-client", sa="client", key_type=key_type)
    return {
        "ca": ca.cert_path, "ca_key": ca.key_path,
        "foreign_ca": foreign.ca,
        "client_cert": client.cert, "client_key": client.key,
        "server_cert": server.cert, "server_key": server.key,
        "foreign_client_cert": foreign.cert, "foreign_client_key": foreign.key,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Write the trellis standard test PKI set.")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--key-type", choices=KEY_TYPES, default="ec")
    a = p.parse_args(argv)
    paths = write_standard_set(a.out, key_type=a.key_type)
    for k in sorted(paths):
        print(f"{k}\t{paths[k]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
