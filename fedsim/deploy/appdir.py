"""What ``flwr run`` submits, and the ``flwr`` CLI's connection to a SuperLink.

``flwr run APP CONNECTION`` packs ``APP`` into a Flower App Bundle (FAB) and
sends it to the SuperLink. fedsim's app folder holds a single
``pyproject.toml``: its components are fedsim's deployment ServerApp
(:mod:`fedsim.deploy.serverapp`) and fedsim's ClientApp
(:mod:`fedsim.apps.client_app`, the very module simulation runs), both
imported from the fedsim installed on each machine; its
``[tool.flwr.app.config]`` carries the run configuration. The ``flwr`` CLI
finds SuperLinks in ``$FLWR_HOME/config.toml``; :func:`write_connection`
adds one there (address, CA certificate or ``insecure``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fedsim.apps.config import RunConfig

SERVERAPP = "fedsim.deploy.serverapp:app"
CLIENTAPP = "fedsim.apps.client_app:app"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def write_app(app_dir: str | os.PathLike, cfg: RunConfig, out: str | os.PathLike,
              poll_s: float, min_silos: int = 0, pull_backoff_s: float = 0.0, resume: bool = False,
              peer_links: dict | None = None) -> Path:
    """Write the app folder for one run (``resume``: continue ``out`` from its checkpoint); returns its path."""
    app_dir = Path(app_dir)
    app_dir.mkdir(parents=True, exist_ok=True)
    config = {"fedsim-config": json.dumps(json.loads(cfg.to_json()), sort_keys=True),
              "out": str(Path(out).resolve()), "poll-s": float(poll_s), "min-silos": int(min_silos),
              "pull-backoff-s": float(pull_backoff_s), "resume": bool(resume),
              "peer-links": json.dumps(peer_links or {}, sort_keys=True)}
    lines = [
        "[build-system]",
        'requires = ["setuptools>=68"]',
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        'name = "fedsim-deploy"',
        'version = "0.1.0"',
        'description = "A fedsim training run on a Flower deployment"',
        'license = "Apache-2.0"',
        "dependencies = []",
        "",
        "[tool.flwr.app]",
        'publisher = "fedsim"',
        "",
        "[tool.flwr.app.components]",
        f'serverapp = "{SERVERAPP}"',
        f'clientapp = "{CLIENTAPP}"',
        "",
        "[tool.flwr.app.config]",
        *[f"{k} = {_toml_value(v)}" for k, v in config.items()],
        "",
    ]
    (app_dir / "pyproject.toml").write_text("\n".join(lines), encoding="utf-8")
    return app_dir


def write_connection(flwr_home: str | os.PathLike, name: str, address: str,
                     root_cert: str | os.PathLike | None = None, insecure: bool = False) -> Path:
    """Add (or replace) SuperLink connection ``name`` in ``FLWR_HOME/config.toml``."""
    home = Path(flwr_home)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    sections: dict[str, list[str]] = {}
    order: list[str] = []
    current = ""
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("["):
                current = line.strip()
                order.append(current)
                sections[current] = []
            elif current:
                sections[current].append(line)
    body = [f"address = {json.dumps(address)}"]
    if insecure:
        body.append("insecure = true")
    else:
        body.append(f"root-certificates = {json.dumps(str(Path(root_cert).resolve()))}")
    head = f"[superlink.{name}]"
    if head not in sections:
        order.append(head)
    sections[head] = body + [""]
    if "[superlink]" not in sections:
        order.insert(0, "[superlink]")
        sections["[superlink]"] = [f"default = {json.dumps(name)}", ""]
    text = "\n".join(line for h in order for line in [h, *sections[h]])
    path.write_text(text.rstrip() + "\n", encoding="utf-8")
    return path
