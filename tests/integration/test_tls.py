"""TLS listeners: a throwaway CA and server certificate made with `cryptography` at test time."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import signal
import socket
import ssl
import warnings
from pathlib import Path

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fastproxy.config import ConfigError, load_config

from .helpers import DevServer, ProxyLauncher, wait_for

CA = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]

CONFIG = """
[server]
tls_cert = "server.crt"
tls_key = "server.key"

[upstreams.api]
url = "{upstream}"

[[routes]]
name = "all"
path = "/*"
upstream = "api"
public = true
"""


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def make_ca() -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder("fastproxy test CA", _name("fastproxy test CA"), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(directory: Path, ca: CA, stem: str) -> int:
    """A certificate for localhost and 127.0.0.1 signed by ``ca``, in directory/stem.{crt,key}."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        _builder("localhost", ca_cert.subject, key)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (directory / f"{stem}.key").write_bytes(pem)
    return cert.serial_number


def client_context(ca: CA) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca[1].public_bytes(serialization.Encoding.PEM).decode())


def served_serial(port: int, context: ssl.SSLContext) -> int:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number


@pytest.mark.timeout(60)
def test_https_proxying_tls12_minimum_and_a_renewed_certificate_on_hup(
    launcher: ProxyLauncher, devserver: DevServer
) -> None:
    ca = make_ca()
    first = issue(launcher.directory, ca, "server")
    proxy = launcher.start(config=CONFIG.format(upstream=devserver.url), workers=1)
    context = client_context(ca)

    connection = http.client.HTTPSConnection("localhost", proxy.port, context=context, timeout=5)
    connection.request("GET", "/echo")
    response = connection.getresponse()
    assert response.status == 200
    seen = {name.lower(): value for name, value in orjson.loads(response.read())["headers"]}
    assert seen["x-forwarded-proto"] == "https"
    connection.close()
    assert served_serial(proxy.port, context) == first

    legacy = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    legacy.check_hostname = False
    legacy.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the point: an old client
        legacy.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        legacy.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        pytest.raises((ssl.SSLError, ConnectionError)),
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw,
    ):
        legacy.wrap_socket(raw).close()

    # Plain HTTP on the TLS port gets no HTTP answer.
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = raw.recv(4096)
        except ConnectionError:
            answer = b""
        assert not answer.startswith(b"HTTP/")

    renewed = issue(launcher.directory, ca, "server")
    proxy.signal(signal.SIGHUP)
    wait_for(lambda: served_serial(proxy.port, context) == renewed, 15, "the renewed certificate")


def test_a_bad_certificate_is_refused_at_load(tmp_path: Path) -> None:
    (tmp_path / "server.crt").write_text("not a certificate")
    (tmp_path / "server.key").write_text("not a key")
    path = tmp_path / "fastproxy.toml"
    path.write_text(CONFIG.format(upstream="http://127.0.0.1:9"))
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith(f"{path}: server.tls_cert: unusable certificate or key")
    path.write_text(CONFIG.format(upstream="http://127.0.0.1:9").replace("server.key", "absent.key"))
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert len(info.value.errors) == 1
    assert "cannot read" in info.value.errors[0] and "absent.key" in info.value.errors[0]
