"""A silo's identity on the peer data plane: the names in its certificate.

Silo ``i``'s peer certificate (issued by :func:`fedsim.deploy.certs.generate_silo_certificates`)
carries ``silo-<i>.fedsim`` in its subject alternative names: peers dial that
name and check it on every stream.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509


def silo_dns(silo: int) -> str:
    """The DNS name in silo ``silo``'s certificate (and the name peers dial it by).

    Examples
    --------
    >>> silo_dns(3)
    'silo-3.fedsim'
    """
    return f"silo-{int(silo)}.fedsim"


def certificate_sans(path: str | os.PathLike) -> list[str]:
    """The host names and IP addresses a certificate file is valid for."""
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in ext]


def silo_of_certificate(path: str | os.PathLike) -> int | None:
    """The silo index a peer certificate was issued for (``None``: not a silo certificate)."""
    for san in certificate_sans(path):
        if san.startswith("silo-") and san.endswith(".fedsim") and san[5:-7].isdigit():  # silo_dns's form
            return int(san[5:-7])
    return None
