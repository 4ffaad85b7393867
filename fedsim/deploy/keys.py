"""SuperNode authentication keys.

With ``flower-superlink --enable-supernode-auth`` the SuperLink only admits
SuperNodes whose public key an operator has registered
(``flwr supernode register KEY.pub CONNECTION``); every Fleet request of a
SuperNode is signed with its private key (``flower-supernode
--auth-supernode-private-key KEY``). Flower 1.42 expects NIST elliptic-curve
keys in OpenSSH format; this module writes ECDSA P-384 pairs, one per silo::

    DIR/NAME.key       private key, OpenSSH format, 0600: stays on the silo
    DIR/NAME.key.pub   public key, ``ecdsa-sha2-nistp384 AAAA... NAME``: give it
                       to the SuperLink operator, who registers it
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedsim.deploy.files import write_files
from fedsim.errors import FedsimError


@dataclass(frozen=True)
class NodeKey:
    """One silo's key pair on disk."""

    name: str
    private: Path
    public: Path


def safe_name(name: str) -> str:
    """A file-name-safe form of a silo name.

    Examples
    --------
    >>> safe_name("Los Angeles, CA")
    'Los_Angeles_CA'
    """
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.")
    return s or "silo"


def _key_pair(name: str) -> tuple[bytes, bytes]:
    """A fresh P-384 pair: (private key in OpenSSH format, ``ecdsa-sha2-nistp384 AAAA... NAME``)."""
    key = ec.generate_private_key(ec.SECP384R1())
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                        serialization.PublicFormat.OpenSSH)
    return priv, pub + b" " + name.encode() + b"\n"


def write_node_key(out: Path, name: str, overwrite: bool = False) -> NodeKey:
    """Generate one P-384 key pair named ``name`` in ``out`` (both files or neither)."""
    return generate_node_keys(out, names=[name], overwrite=overwrite)[0]


def generate_node_keys(out: str | os.PathLike, n: int | None = None, names: list[str] | None = None,
                       overwrite: bool = False) -> list[NodeKey]:
    """Write one key pair per silo: ``names`` if given, else ``silo-0 .. silo-{n-1}``.

    All or nothing: the pairs are written into a temporary folder next to
    ``out`` and renamed into place (:func:`fedsim.deploy.files.write_files`);
    after an error no new key is left and files that were there are unchanged.
    """
    if names is None:
        if n is None or n < 1:
            raise FedsimError(f"--nodes must be an integer >= 1, got {n!r}")
        names = [f"silo-{i}" for i in range(n)]
    files = [safe_name(x) for x in names]
    if len(set(files)) != len(files):
        raise FedsimError("silo names must give distinct key file names")
    out = Path(out)
    content: dict[str, tuple[bytes, int]] = {}
    for f in files:
        priv, pub = _key_pair(f)
        content[f"{f}.key"] = (priv, 0o600)
        content[f"{f}.key.pub"] = (pub, 0o644)
    write_files(out, content, overwrite=overwrite)
    return [NodeKey(f, out / f"{f}.key", out / f"{f}.key.pub") for f in files]


def public_key_matches(private: str | os.PathLike, public: str | os.PathLike) -> bool:
    """Whether a ``.key``/``.key.pub`` pair belongs together."""
    key = serialization.load_ssh_private_key(Path(private).read_bytes(), password=None)
    pub = serialization.load_ssh_public_key(Path(public).read_bytes())
    fmt = (serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return key.public_key().public_bytes(*fmt) == pub.public_bytes(*fmt)
