"""TLS material for a SuperLink: a private CA and a server certificate signed by it.

Flower's SuperLink serves its Fleet, Control and Runtime APIs over HTTPS with
one certificate (``--ssl-certfile``/``--ssl-keyfile``) and names the CA that
signed it (``--ssl-ca-certfile``); SuperNodes and the ``flwr`` CLI verify the
SuperLink with the CA certificate (``--root-certificates`` /
``root-certificates``). This module writes those files with the
``cryptography`` package (no ``openssl`` needed)::

    DIR/ca.crt       the CA certificate: give it to every SuperNode and operator
    DIR/ca.key       the CA private key (0600): keep it offline
    DIR/server.pem   the SuperLink certificate, SANs = the given hosts
    DIR/server.key   the SuperLink private key (0600)

The files are written all or nothing (:mod:`fedsim.deploy.files`).
Keys are ECDSA P-256 with SHA-256 signatures. The server certificate carries
``subjectAltName`` entries for every host (IP addresses as ``iPAddress``,
names as ``dNSName``): clients check the address they dial against them, so
list every name or address SuperNodes will use to reach the SuperLink.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedsim.deploy.files import write_files
from fedsim.errors import FedsimError
from fedsim.peer.identity import certificate_sans, silo_dns, silo_of_certificate  # noqa: F401 - public here too

DEFAULT_HOSTS = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class CertPaths:
    """Where :func:`generate_certificates` wrote the files."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedsim"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def parse_hosts(hosts: str | list[str] | tuple[str, ...]) -> list[x509.GeneralName]:
    """Subject alternative names for a comma list (or sequence) of hosts.

    Examples
    --------
    >>> [type(n).__name__ for n in parse_hosts("localhost, 127.0.0.1,::1")]
    ['DNSName', 'IPAddress', 'IPAddress']
    """
    items = [h.strip() for h in (hosts.split(",") if isinstance(hosts, str) else hosts)]
    items = [h for h in items if h]
    if not items:
        raise FedsimError("--hosts needs at least one host name or IP address, e.g. localhost,127.0.0.1")
    names: list[x509.GeneralName] = []
    for h in items:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            if any(c.isspace() or c in "/:@" for c in h):
                raise FedsimError(f"--hosts: {h!r} is neither an IP address nor a host name") from None
            names.append(x509.DNSName(h))
    return names


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def generate_certificates(out: str | os.PathLike, hosts=DEFAULT_HOSTS, days: int = 365,
                          overwrite: bool = False) -> CertPaths:
    """Write a CA and a SuperLink certificate/key for ``hosts`` into ``out``.

    Parameters
    ----------
    out : path
        Folder for ``ca.crt``, ``ca.key``, ``server.pem``, ``server.key``.
    hosts : str or sequence of str
        Host names and IP addresses the SuperLink is reached at (its SANs).
        ``localhost`` and ``127.0.0.1`` are always added: the operator's
        ``flwr`` reaches the Control API on the SuperLink's loopback port.
    days : int
        Validity of both certificates.
    overwrite : bool
        Replace existing files (otherwise an existing ``ca.key`` is an error).
    """
    if days < 1:
        raise FedsimError(f"--days must be >= 1, got {days}")
    sans = parse_hosts(hosts)
    for extra in parse_hosts(DEFAULT_HOSTS):  # the operator's flwr dials the SuperLink's loopback port
        if extra not in sans:
            sans.append(extra)
    out = Path(out)
    paths = CertPaths(out / "ca.crt", out / "ca.key", out / "server.pem", out / "server.key")
    if not overwrite and any(p.exists() for p in (paths.ca_cert, paths.ca_key, paths.server_cert,
                                                  paths.server_key)):
        raise FedsimError(f"{out} already holds keys; use another --out or --overwrite")
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)  # tolerate clock skew
    until = now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("fedsim CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = _leaf(key, str(sans[0].value), sans, [ExtendedKeyUsageOID.SERVER_AUTH], ca_key, ca_cert, now, until)
    write_files(out, {"ca.crt": (ca_cert.public_bytes(serialization.Encoding.PEM), 0o644),
                      "ca.key": (_key_bytes(ca_key), 0o600),
                      "server.pem": (cert.public_bytes(serialization.Encoding.PEM), 0o644),
                      "server.key": (_key_bytes(key), 0o600)}, overwrite=overwrite)
    return paths


def _leaf(key, common_name: str, sans: list, usages: list, ca_key, ca_cert, now, until) -> x509.Certificate:
    """An end-entity certificate for ``key`` signed by the CA."""
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=True, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


SILO_URI = "urn:fedsim:silo:{index}:{name}"


def silo_cert_paths(folder: str | os.PathLike, silo: int) -> tuple[Path, Path]:
    """``(certificate, key)`` of silo ``silo``'s peer identity in ``folder``."""
    return Path(folder) / f"silo-{int(silo)}.pem", Path(folder) / f"silo-{int(silo)}.key"


def generate_silo_certificates(certs_dir: str | os.PathLike, names: list[str], days: int = 365,
                               overwrite: bool = False) -> list[tuple[Path, Path]]:
    """One peer certificate per silo, signed by the CA in ``certs_dir`` (``ca.crt``, ``ca.key``).

    Silo ``i``'s certificate names it twice in its subject alternative names:
    ``silo-<i>.fedsim`` (the name peers dial and check) and
    ``urn:fedsim:silo:<i>:<name>``. It is valid for TLS clients and servers:
    a silo presents it to the peers it sends to and to those that send to it.
    Files go to ``certs_dir/silos/``; nothing is written unless every
    certificate could be made.

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = generate_certificates(d)
    >>> cert, key = generate_silo_certificates(d, ["Paris", "Brussels"])[1]
    >>> certificate_sans(cert)
    ['silo-1.fedsim', 'urn:fedsim:silo:1:Brussels']
    >>> silo_of_certificate(cert)
    1
    """
    from urllib.parse import quote

    if days < 1:
        raise FedsimError(f"--days must be >= 1, got {days}")
    folder = Path(certs_dir)
    try:
        ca_cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
        ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise FedsimError(f"silo certificates need the CA of `fedsim deploy certs` in {folder}: {exc}") from None
    out = folder / "silos"
    paths = [silo_cert_paths(out, i) for i in range(len(names))]
    if not overwrite and any(k.exists() for _, k in paths):
        raise FedsimError(f"{out} already holds silo keys; use another --out or --overwrite")
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)
    made = []
    for i, name in enumerate(names):
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.DNSName(silo_dns(i)),
                x509.UniformResourceIdentifier(SILO_URI.format(index=i, name=quote(str(name), safe="")))]
        cert = _leaf(key, silo_dns(i), sans,
                     [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH], ca_key, ca_cert, now, until)
        made.append((cert, key))
    content = {}
    for (cert_path, key_path), (cert, key) in zip(paths, made):
        content[cert_path.name] = (cert.public_bytes(serialization.Encoding.PEM), 0o644)
        content[key_path.name] = (_key_bytes(key), 0o600)
    write_files(out, content, overwrite=overwrite)
    return paths
