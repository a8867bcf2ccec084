"""deploy.certs: the generated CA and server certificate verify, carry the right
SANs, keep keys private, and are usable by a real gRPC TLS server."""

from __future__ import annotations

import ipaddress
import stat
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from deploy.certs import CertPaths, generate_certs, tls_yaml_snippet
from orchestrator.errors import DeployError

ECHO_METHOD = "/ktc.test.Echo/Echo"


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return generate_certs(
        tmp_path_factory.mktemp("certs"), ["chief.example.com", "10.0.0.5", "::1"], days=30
    )


def test_server_cert_verifies_against_ca(certs: CertPaths) -> None:
    ca = _load(certs.ca)
    server = _load(certs.cert)
    verifier = (
        PolicyBuilder().store(Store([ca])).build_server_verifier(x509.DNSName("chief.example.com"))
    )
    chain = verifier.verify(server, [])
    assert chain[-1] == ca
    ip_verifier = (
        PolicyBuilder()
        .store(Store([ca]))
        .build_server_verifier(x509.IPAddress(ipaddress.ip_address("10.0.0.5")))
    )
    ip_verifier.verify(server, [])


def test_cert_from_another_ca_does_not_verify(certs: CertPaths, tmp_path: Path) -> None:
    other = generate_certs(tmp_path, ["chief.example.com"])
    verifier = (
        PolicyBuilder()
        .store(Store([_load(other.ca)]))
        .build_server_verifier(x509.DNSName("chief.example.com"))
    )
    with pytest.raises(x509.verification.VerificationError):
        verifier.verify(_load(certs.cert), [])


def test_sans_hold_dns_and_ip_hosts_plus_loopback(certs: CertPaths) -> None:
    san = _load(certs.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"chief.example.com", "localhost"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("127.0.0.1"),
    }


def test_key_files_are_private(certs: CertPaths) -> None:
    for key in (certs.key, certs.ca_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(certs.cert.stat().st_mode) & 0o077 != 0o077  # cert is public


def test_yaml_snippet_names_the_files(certs: CertPaths) -> None:
    snippet = tls_yaml_snippet(certs)
    assert f"cert: {certs.cert.resolve()}" in snippet
    assert f"ca: {certs.ca.resolve()}" in snippet


@pytest.mark.parametrize(
    ("hosts", "days", "match"),
    [
        (["chief:50051"], 30, r"--host 'chief:50051'.*not a URL or HOST:PORT"),
        ([""], 30, r"--host: expected a DNS name or an IP address, got an empty string"),
        (["chief"], 0, r"--days: expected 1\.\.3650, got 0"),
    ],
)
def test_bad_input_is_refused(tmp_path: Path, hosts: list[str], days: int, match: str) -> None:
    with pytest.raises(DeployError, match=match):
        generate_certs(tmp_path, hosts, days=days)


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


@pytest.fixture
def tls_server(certs: CertPaths) -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    handler = grpc.method_handlers_generic_handler(
        "ktc.test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    creds = grpc.ssl_server_credentials([(certs.key.read_bytes(), certs.cert.read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=None)


def _call(port: int, ca_pem: bytes | None) -> bytes:
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        stub = channel.unary_unary(ECHO_METHOD)
        return stub(b"ping", timeout=10)  # type: ignore[no-any-return]


def test_grpc_tls_handshake_with_right_ca(tls_server: int, certs: CertPaths) -> None:
    assert _call(tls_server, certs.ca.read_bytes()) == b"ping"


def test_grpc_tls_handshake_with_wrong_ca_is_refused(tls_server: int, tmp_path: Path) -> None:
    wrong = generate_certs(tmp_path, ["127.0.0.1"])
    with pytest.raises(grpc.RpcError) as info:
        _call(tls_server, wrong.ca.read_bytes())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
