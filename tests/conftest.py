"""Shared test setup.

The MATCHA decomposition is cached on disk (``fedsim.topologies.cache``). Tests
must neither read a developer's cache (a test would then not exercise the
solver) nor write into it, so the whole session uses a fresh, temporary cache
folder, removed at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_CACHE_DIR = tempfile.mkdtemp(prefix="fedsim-test-cache-")
_SAVED = {k: os.environ.get(k) for k in ("FEDSIM_CACHE_DIR", "FEDSIM_CACHE")}
os.environ["FEDSIM_CACHE_DIR"] = _CACHE_DIR
os.environ.pop("FEDSIM_CACHE", None)


class ClientAppGrid:
    """A grid whose nodes run fedsim's ClientApp in this process (no Flower process).

    ``tamper(silo, round, arrays, metrics)`` may rewrite a training reply on
    its way back (return ``(arrays, metrics)``, or ``None`` to keep it), as a
    broken or malicious SuperNode would send it. Nodes in ``dead`` never reply.
    """

    def __init__(self, n: int, tamper=None) -> None:
        from flwr.app import Context, RecordDict

        self.nodes = [201 + i for i in range(n)]
        self.contexts = {nid: Context(run_id=1, node_id=nid, node_config={"partition-id": i, "num-partitions": n},
                                      state=RecordDict(), run_config={}) for i, nid in enumerate(self.nodes)}
        self.tamper = tamper
        self.dead: set[int] = set()

    def get_node_ids(self):
        return list(self.nodes)

    def send_and_receive(self, messages, *, timeout=None):
        from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

        from fedsim.apps.client_app import app

        out = []
        for msg in messages:
            nid = msg.metadata.dst_node_id
            if nid in self.dead:
                continue
            msg.metadata.__dict__["_message_id"] = f"m{id(msg)}"
            reply = app(msg, self.contexts[nid])
            if self.tamper and msg.metadata.message_type == "train" and not reply.has_error():
                silo = self.nodes.index(nid)
                arrays = reply.content["arrays"].to_numpy_ndarrays()
                metrics = dict(reply.content["metrics"])
                changed = self.tamper(silo, int(msg.content["config"]["round"]), arrays, metrics)
                if changed is not None:
                    arrays, metrics = changed
                    reply = Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)}),
                                    reply_to=msg)
            out.append(reply)
        return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread while a module's tests run: the machine's cores are shared, and
    torch's default threading oversubscribes them (5-20x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def task_identity():
    """Messages built in this process need a run and node id (Flower's ServerApp process sets them)."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def pytest_unconfigure(config) -> None:
    for key, value in _SAVED.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)


# Three silos, two close together and one across the Atlantic: the delays differ
# enough that a multigraph on it has weak arcs and isolated silos. Integration
# tests of every task run on it to stay short.
TRI_GML = """graph [
  node [ id 0 label "Paris" Latitude 48.86 Longitude 2.35 ]
  node [ id 1 label "Brussels" Latitude 50.85 Longitude 4.35 ]
  node [ id 2 label "Montreal" Latitude 45.50 Longitude -73.57 ]
  edge [ source 0 target 1 ]
  edge [ source 1 target 2 ]
  edge [ source 0 target 2 ]
]
"""


@pytest.fixture(scope="session")
def tri_network(tmp_path_factory) -> str:
    """Path of the 3-silo GML network."""
    path = tmp_path_factory.mktemp("net") / "tri.gml"
    path.write_text(TRI_GML)
    return str(path)
