"""The last word on a deployed run's ``serverapp.json``.

The ServerApp writes ``RUN/deploy/serverapp.json`` with ``status: running``
when it starts and its outcome (``completed``, ``failed``, ``stopped``) when
it ends. A process that dies cannot write its outcome: whoever learns of the
death writes it with :func:`settle`, which changes the file only while it
still says ``running`` (an outcome the ServerApp recorded is never
overwritten):

* ``crashed``: the SuperLink or the ServerApp process died (the local
  cluster's supervision notices the SuperLink's exit; the run's status on the
  SuperLink says a run ended whose ServerApp recorded nothing; the watchdog of
  a killed ``fedsim deploy local`` settles it after ending its processes);
* ``stopped``: the operator stopped it (``flwr stop``, Ctrl-C of ``fedsim
  deploy local``, its ``--timeout``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from fedsim.io import atomic_write_text

FINAL = ("completed", "failed", "stopped", "crashed")


def read(path: str | os.PathLike) -> dict:
    """The record in ``path`` (``{}`` when there is none or it cannot be read)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def settle(path: str | os.PathLike, status: str, message: str) -> dict:
    """Set ``status`` and ``message`` in ``path`` if it still says ``running``; returns the record.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "serverapp.json"
    >>> _ = p.write_text('{"status": "running", "min_silos": null}')
    >>> settle(p, "crashed", "the SuperLink exited")["status"]
    'crashed'
    >>> settle(p, "stopped", "later")["message"]  # an outcome already there stays
    'the SuperLink exited'
    """
    if status not in FINAL:
        raise ValueError(f"status must be one of {', '.join(FINAL)}, got {status!r}")
    rec = read(path)
    if rec.get("status") != "running":
        return rec
    rec.update(status=status, message=message, settled_by="supervisor", settled_at=time.time())
    atomic_write_text(path, json.dumps(rec, indent=2, default=str))
    return rec


def main(argv=None) -> None:  # python -m fedsim.deploy.status PATH STATUS MESSAGE
    import sys

    path, status, message = (argv or sys.argv[1:])[:3]
    settle(path, status, message)


if __name__ == "__main__":
    main()
