"""TLS material for the chief's gRPC endpoint: a private CA and a server
certificate signed by it.

Workers verify the chief against ``ca.pem``; the chief serves ``server.pem`` /
``server.key``. The server certificate's SubjectAltNames cover every host the
chief is reached by (the cluster YAML's ``chief.advertise``), plus ``localhost``
and ``127.0.0.1`` so the same files work on loopback.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orchestrator.errors import DeployError

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CERT_FILE = "server.pem"
KEY_FILE = "server.key"

ALWAYS_INCLUDED_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1")
KEY_FILE_MODE = 0o600
MAX_DAYS = 3650


@dataclass(frozen=True)
class CertPaths:
    """Where :func:`generate_certs` wrote the CA and the server certificate."""

    ca: Path
    ca_key: Path
    cert: Path
    key: Path


def san_entries(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """SubjectAltName entries for ``hosts`` plus localhost/127.0.0.1, deduplicated.

    A host that parses as an IPv4/IPv6 address becomes an ``IPAddress`` entry,
    anything else a ``DNSName`` (gRPC matches IP targets only against IP SANs).
    """
    entries: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in (*hosts, *ALWAYS_INCLUDED_HOSTS):
        host = raw.strip()
        if not host:
            raise DeployError(
                "ktc cluster certs: --host: expected a DNS name or an IP address, got an "
                "empty string; pass e.g. --host chief.example.com --host 10.0.0.5."
            )
        if host.lower() in seen:
            continue
        seen.add(host.lower())
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if any(ch in host for ch in " /:@"):
                raise DeployError(
                    f"ktc cluster certs: --host {host!r}: expected a DNS name or an IP "
                    "address, not a URL or HOST:PORT; pass the bare host name."
                ) from None
            entries.append(x509.DNSName(host))
    return entries


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    # Create keys with 0600 from the start: a chmod after writing would leave a
    # window where the key is world-readable under a permissive umask.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, KEY_FILE_MODE if secret else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    if secret:
        os.chmod(path, KEY_FILE_MODE)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate_certs(out_dir: Path, hosts: Sequence[str], days: int = 365) -> CertPaths:
    """Write ``ca.pem``, ``ca.key``, ``server.pem`` and ``server.key`` to ``out_dir``.

    The server certificate is signed by the new CA and valid for ``days`` days
    for every entry of ``hosts`` (DNS names and IPs) plus ``localhost`` and
    ``127.0.0.1``. Key files get mode 0600. Existing files are overwritten.
    Raises :class:`DeployError` for bad hosts, a bad ``days`` or an unwritable
    directory.
    """
    if not 1 <= days <= MAX_DAYS:
        raise DeployError(
            f"ktc cluster certs: --days: expected 1..{MAX_DAYS}, got {days}; pass e.g. --days 365."
        )
    sans = san_entries(hosts)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeployError(
            f"ktc cluster certs: cannot create directory {out_dir}: {exc}; "
            "choose a writable directory."
        ) from exc

    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - datetime.timedelta(minutes=5)  # tolerate small clock skew
    not_after = now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ktcluster CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    first = hosts[0] if hosts else ALWAYS_INCLUDED_HOSTS[0]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first[:64])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    paths = CertPaths(
        ca=out_dir / CA_FILE,
        ca_key=out_dir / CA_KEY_FILE,
        cert=out_dir / CERT_FILE,
        key=out_dir / KEY_FILE,
    )
    try:
        _write(paths.ca_key, _key_pem(ca_key), secret=True)
        _write(paths.ca, ca_cert.public_bytes(serialization.Encoding.PEM), secret=False)
        _write(paths.key, _key_pem(server_key), secret=True)
        _write(paths.cert, server_cert.public_bytes(serialization.Encoding.PEM), secret=False)
    except OSError as exc:
        raise DeployError(
            f"ktc cluster certs: cannot write certificates to {out_dir}: {exc}; "
            "choose a writable directory."
        ) from exc
    return paths


def tls_yaml_snippet(paths: CertPaths) -> str:
    """The ``chief.tls`` block to paste into a cluster YAML for ``paths``."""
    return (
        "chief:\n"
        "  tls:\n"
        f"    cert: {paths.cert.resolve()}\n"
        f"    key: {paths.key.resolve()}\n"
        f"    ca: {paths.ca.resolve()}\n"
    )
