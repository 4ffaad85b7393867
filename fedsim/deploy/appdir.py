"""What ``flwr run`` submits, and the ``flwr`` CLI's connection to a SuperLink.

``flwr run APP CONNECTION`` packs ``APP`` into a Flower App Bundle (FAB) and
sends it to the SuperLink. fedsim's app folder holds a single
``pyproject.toml``: its components are fedsim's deployment ServerApp
(:mod:`fedsim.deploy.serverapp`) and fedsim's ClientApp
(:mod:`fedsim.apps.client_app`, the very module simulation runs), both
imported from the fedsim installed on each machine; its
``[tool.flwr.app.config]`` carries the run configuration. The ``flwr`` CLI
finds SuperLinks in ``$FLWR_HOME/config.toml``; :func:`write_connection`
adds one there (address, CA certificate or ``insecure``). Both files are
read with :mod:`tomllib` and written with ``tomli_w``, atomically.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import tomli_w

from fedsim.apps.config import RunConfig
from fedsim.io import atomic_write_text

SERVERAPP = "fedsim.deploy.serverapp:app"
CLIENTAPP = "fedsim.apps.client_app:app"


def _read_toml(path: Path) -> dict:
    if not path.exists():
        return {}
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def app_document(cfg: RunConfig, out: str | os.PathLike, poll_s: float, min_silos: int = 0,
                 pull_backoff_s: float = 0.0, resume: bool = False, peer_links: dict | None = None) -> dict:
    """The app folder's ``pyproject.toml`` as a dict (see :func:`write_app`)."""
    config = {"fedsim-config": json.dumps(json.loads(cfg.to_json()), sort_keys=True),
              "out": str(Path(out).resolve()), "poll-s": float(poll_s), "min-silos": int(min_silos),
              "pull-backoff-s": float(pull_backoff_s), "resume": bool(resume),
              "peer-links": json.dumps(peer_links or {}, sort_keys=True)}
    return {
        "build-system": {"requires": ["setuptools>=68"], "build-backend": "setuptools.build_meta"},
        "project": {"name": "fedsim-deploy", "version": "0.1.0",
                    "description": "A fedsim training run on a Flower deployment",
                    "license": "Apache-2.0", "dependencies": []},
        "tool": {"flwr": {"app": {"publisher": "fedsim",
                                  "components": {"serverapp": SERVERAPP, "clientapp": CLIENTAPP},
                                  "config": config}}},
    }


def write_app(app_dir: str | os.PathLike, cfg: RunConfig, out: str | os.PathLike,
              poll_s: float, min_silos: int = 0, pull_backoff_s: float = 0.0, resume: bool = False,
              peer_links: dict | None = None) -> Path:
    """Write the app folder for one run (``resume``: continue ``out`` from its checkpoint); returns its path."""
    app_dir = Path(app_dir)
    app_dir.mkdir(parents=True, exist_ok=True)
    doc = app_document(cfg, out, poll_s, min_silos, pull_backoff_s, resume, peer_links)
    atomic_write_text(app_dir / "pyproject.toml", tomli_w.dumps(doc))
    return app_dir


def read_app_config(app_dir: str | os.PathLike) -> dict:
    """The ``[tool.flwr.app.config]`` table of an app folder."""
    return _read_toml(Path(app_dir) / "pyproject.toml")["tool"]["flwr"]["app"]["config"]


def write_connection(flwr_home: str | os.PathLike, name: str, address: str,
                     root_cert: str | os.PathLike | None = None, insecure: bool = False) -> Path:
    """Add (or replace) SuperLink connection ``name`` in ``FLWR_HOME/config.toml``.

    Other connections and settings in the file are kept; ``[superlink] default``
    is set to ``name`` only when the file names no default yet.
    """
    home = Path(flwr_home)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    doc = _read_toml(path)
    links = doc.setdefault("superlink", {})
    body: dict = {"address": address}
    if insecure:
        body["insecure"] = True
    else:
        body["root-certificates"] = str(Path(root_cert).resolve())
    links.setdefault("default", name)
    links[name] = body
    atomic_write_text(path, tomli_w.dumps(doc))
    return path
