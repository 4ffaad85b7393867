"""Contract tests of :mod:`fedsim.flower_compat`: Flower still has what each patch assumes.

Fast: no Ray, no processes. Every Flower attribute a test patches is put back
afterwards (the ``pristine`` fixture), so later tests in the same process see
Flower as installed (or as fedsim's own run patched it).
"""

from __future__ import annotations

import inspect
import subprocess
import threading
import time
import types

import pytest

from fedsim import flower_compat
from fedsim.errors import FedsimError

P = inspect.Parameter


def params(func) -> list[tuple[str, object, object]]:
    """(name, kind, default) of each parameter of ``func``."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(func).parameters.values()]


def _unpatched(obj):
    while getattr(obj, "_fedsim", False):
        obj = obj.__wrapped__
    return obj


@pytest.fixture
def flower():
    """The Flower modules and classes the patches touch."""
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.supercore.inflatable import inflatable_utils
    from flwr.supercore.superexec.executor import subprocess_executor
    from flwr.superlink.grid import http_grid
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid
    from flwr.supernode import start_client_internal
    from flwr.supernode.runtime import run_clientapp

    return types.SimpleNamespace(vce_api=vce_api, InMemoryLinkState=InMemoryLinkState, InMemoryGrid=InMemoryGrid,
                                 inflatable_utils=inflatable_utils, se=subprocess_executor, http_grid=http_grid,
                                 sci=start_client_internal, run_clientapp=run_clientapp)


@pytest.fixture
def pristine(flower, monkeypatch):
    """Flower's own (unpatched) targets for the test; whatever was there is restored afterwards."""
    for owner, name in [(flower.vce_api, "add_messages_to_queue"),
                        (flower.InMemoryLinkState, "store_message_ins"),
                        (flower.InMemoryLinkState, "store_message_res"),
                        (flower.InMemoryGrid, "send_and_receive"),
                        (flower.se.SubprocessExecutor, "launch"), (flower.se.SubprocessExecutor, "close")]:
        monkeypatch.setattr(owner, name, _unpatched(getattr(owner, name)))
    monkeypatch.setattr(flower.sci, "time", time)
    monkeypatch.setattr(flower.sci, "subprocess", subprocess)
    for module, name in [(flower.sci, "pull_objects"), (flower.http_grid, "pull_objects"),
                         (flower.run_clientapp, "pull_and_inflate_object_from_tree")]:
        monkeypatch.setattr(module, name, getattr(flower.inflatable_utils, name))
    monkeypatch.setattr(flower_compat, "_WARM", {})
    return flower


# --------------------------------------------------------------------------- version gate
def test_installed_flower_is_a_tested_version():
    import flwr

    assert flower_compat.check_flower_version() == flwr.__version__
    assert ".".join(flwr.__version__.split(".")[:2]) in flower_compat.TESTED


def test_untested_flower_is_refused_in_one_line(monkeypatch):
    import flwr

    monkeypatch.setattr(flwr, "__version__", "1.99.0")
    with pytest.raises(FedsimError) as err:
        flower_compat.check_flower_version()
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("fedsim supports Flower 1.42.x; found 1.99.0: ")


@pytest.mark.parametrize("apply", [
    flower_compat.fast_engine_poll,
    lambda: flower_compat.cap_supernode_sleeps(0.1),
    lambda: flower_compat.warm_supernode_subprocess(["x"]),
    lambda: flower_compat.warm_executor(object()),
    lambda: flower_compat.quick_pulls(types.ModuleType("m"), 0.02),
    flower_compat.http_grid_module,
    lambda: flower_compat.control_client("127.0.0.1:1", None, True),
    lambda: flower_compat.entry_point("flower-supernode"),
], ids=["fast_engine_poll", "cap_supernode_sleeps", "warm_supernode_subprocess", "warm_executor",
        "quick_pulls", "http_grid_module", "control_client", "entry_point"])
def test_every_function_checks_the_version_before_patching(apply, pristine, monkeypatch):
    import flwr

    f = pristine
    before = (f.vce_api.add_messages_to_queue, f.InMemoryGrid.send_and_receive, f.sci.time, f.sci.subprocess,
              f.se.SubprocessExecutor.launch)
    monkeypatch.setattr(flwr, "__version__", "1.99.0")
    with pytest.raises(FedsimError, match="found 1.99.0"):
        apply()
    assert (f.vce_api.add_messages_to_queue, f.InMemoryGrid.send_and_receive, f.sci.time, f.sci.subprocess,
            f.se.SubprocessExecutor.launch) == before


# --------------------------------------------------------------------------- targets have the assumed shape
def test_engine_targets(flower):
    assert params(flower.vce_api.add_messages_to_queue) == [
        (n, P.POSITIONAL_OR_KEYWORD, P.empty) for n in ("state", "queue", "nodes_mapping", "f_stop")]
    # the engine starts the loop by its module-global name, so replacing that attribute takes effect
    assert "target=add_messages_to_queue" in inspect.getsource(flower.vce_api)
    assert params(flower.InMemoryGrid.send_and_receive) == [
        ("self", P.POSITIONAL_OR_KEYWORD, P.empty), ("messages", P.POSITIONAL_OR_KEYWORD, P.empty),
        ("timeout", P.KEYWORD_ONLY, None)]
    assert [p[0] for p in params(flower.InMemoryGrid.push_messages)] == ["self", "messages"]
    assert [p[0] for p in params(flower.InMemoryGrid.pull_messages)] == ["self", "message_ids"]
    assert "pull_interval" in inspect.signature(flower.InMemoryGrid.__init__).parameters
    for name in ("store_message_ins", "store_message_res"):
        assert [p[0] for p in params(getattr(flower.InMemoryLinkState, name))] == ["self", "message"]
    assert [p[0] for p in params(flower.InMemoryLinkState.get_message_ins)][:3] == ["self", "node_id", "limit"]
    from flwr.app import Metadata

    assert isinstance(inspect.getattr_static(Metadata, "reply_to_message_id"), property)
    # take_instructions: the store, its lock, Flower's validity check and the delivered mark it relies on
    assert [p[0] for p in params(flower.InMemoryLinkState._check_stored_messages)] == ["self", "message_ids", "run_id"]
    get_source = inspect.getsource(flower.InMemoryLinkState.get_message_ins)
    for word in ("self.message_ins_store", "self.lock", "_check_stored_messages", "delivered_at == \"\"",
                 "delivered_at = delivered_at", "now().isoformat()"):
        assert word in get_source, word
    assert isinstance(inspect.getattr_static(Metadata, "delivered_at"), property)


def test_supernode_targets(flower):
    source = inspect.getsource(flower.sci)
    for name in ("time", "subprocess"):  # module globals its loop uses (the stdlib's, or a fedsim stand-in)
        module = getattr(flower.sci, name)
        assert isinstance(module, types.ModuleType) and module.__name__ == name
    assert "import time" in source and "import subprocess" in source
    assert "time.sleep(3)" in source and "time.sleep(0.5)" in source  # the waits the cap shortens
    assert 'command = ["flower-superexec"]' in source and "subprocess.Popen(command)" in source


@pytest.mark.parametrize("module, name", [("sci", "pull_objects"), ("http_grid", "pull_objects"),
                                          ("run_clientapp", "pull_and_inflate_object_from_tree")])
def test_pull_targets(pristine, module, name):
    func = getattr(pristine.inflatable_utils, name)
    kinds = {n: k for n, k, _ in params(func)}
    assert kinds["initial_backoff"] == kinds["backoff_cap"] == P.KEYWORD_ONLY
    mod = getattr(pristine, module)
    assert getattr(mod, name) is func  # imported by name: the module attribute is what its code calls
    assert f"{name}(" in inspect.getsource(mod)


def test_superexec_targets(flower):
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor.types import ExecutionSpec, LaunchResult

    se = flower.se
    assert [p[0] for p in params(_unpatched(se.SubprocessExecutor.launch))] == ["self", "spec"]
    assert [p[0] for p in params(_unpatched(se.SubprocessExecutor.close))] == ["self"]
    assert se.TASK_TYPE_TO_COMMAND[TaskType.CLIENT_APP] == "flwr-clientapp"
    assert se.TASK_TYPE_TO_APPIO_API_ADDRESS_ARG[TaskType.CLIENT_APP] == "--runtime-api-address"
    fields = set(inspect.signature(ExecutionSpec).parameters)
    assert {"task_type", "runtime_api_address", "token", "insecure", "root_certificates_path",
            "runtime_dependency_install", "parent_pid", "suppress_output"} <= fields
    assert LaunchResult.accepted().status == "accepted"


def test_control_api_targets():
    from flwr.cli.typing import SuperLinkConnection
    from flwr.cli.utils import init_http_client_from_connection

    assert [p[0] for p in params(SuperLinkConnection.__init__)][:5] == [
        "self", "name", "address", "root_certificates", "insecure"]
    assert [p[0] for p in params(init_http_client_from_connection)] == ["connection", "auth_plugin"]
    conn = SuperLinkConnection("x", "127.0.0.1:1", None, True)
    assert (conn.address, conn.insecure, conn.root_certificates) == ("127.0.0.1:1", True, None)


def test_accessors_name_the_modules(flower):
    from flwr.supernode.cli.flower_supernode import flower_supernode
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    assert flower_compat.http_grid_module() is flower.http_grid
    assert flower_compat.supernode_module() is flower.sci
    assert flower_compat.clientapp_runtime_module() is flower.run_clientapp
    assert flower_compat.entry_point("flower-supernode") is flower_supernode
    assert flower_compat.entry_point("flwr-clientapp") is flwr_clientapp
    assert callable(flower_compat.entry_point("flower-superexec"))
    with pytest.raises(FedsimError, match="no console script"):
        flower_compat.entry_point("flower-nonexistent")


# --------------------------------------------------------------------------- patches: behaviour, idempotence
def test_fast_engine_poll_is_applied_once(pristine):
    f = pristine
    originals = (f.vce_api.add_messages_to_queue, f.InMemoryLinkState.store_message_ins,
                 f.InMemoryLinkState.store_message_res, f.InMemoryGrid.send_and_receive)
    flower_compat.fast_engine_poll()
    first = (f.vce_api.add_messages_to_queue, f.InMemoryLinkState.store_message_ins,
             f.InMemoryLinkState.store_message_res, f.InMemoryGrid.send_and_receive)
    flower_compat.fast_engine_poll()
    second = (f.vce_api.add_messages_to_queue, f.InMemoryLinkState.store_message_ins,
              f.InMemoryLinkState.store_message_res, f.InMemoryGrid.send_and_receive)
    assert second == first
    assert all(p is not o for p, o in zip(first, originals))
    assert tuple(p.__wrapped__ for p in second) == originals  # one layer


def test_take_instructions_one_pass(task_identity):
    """All nodes' undelivered instructions in store order, each once, after Flower's validity check.

    The state is a stand-in with the three members ``take_instructions`` uses
    (their presence on Flower's InMemoryLinkState is checked above); every
    Simulation Engine test runs it against the real one.
    """
    import threading

    from flwr.app import ConfigRecord, Message, RecordDict

    class State:
        def __init__(self):
            self.lock = threading.RLock()
            self.message_ins_store = {}
            self.checked = []

        def _check_stored_messages(self, ids, run_id=None):  # Flower drops expired ones here
            self.checked.append(set(ids))
            self.message_ins_store.pop("expired", None)

    state = State()
    for k in range(2):
        for nd in (11, 12, 13, 14):
            state.message_ins_store[f"m{k}{nd}"] = Message(RecordDict({"config": ConfigRecord({"k": k})}), nd, "train")
    state.message_ins_store["expired"] = Message(RecordDict({"config": ConfigRecord({})}), 11, "train")
    taken = flower_compat.take_instructions(state, {11, 12, 13})
    assert [m.metadata.dst_node_id for m in taken] == [11, 12, 13, 11, 12, 13]
    assert [m.content["config"]["k"] for m in taken] == [0, 0, 0, 1, 1, 1]
    assert "expired" in state.checked[0] and all(m.metadata.delivered_at for m in taken)
    assert flower_compat.take_instructions(state, {11, 12, 13}) == []  # delivered once
    assert [m.metadata.delivered_at for k, m in state.message_ins_store.items() if k.endswith("14")] == ["", ""]


def test_reply_wakes_send_and_receive_before_its_poll(pristine, monkeypatch):
    stored = []
    monkeypatch.setattr(pristine.InMemoryLinkState, "store_message_res", lambda self, m: stored.append(m) or "id")
    flower_compat.fast_engine_poll()
    replies: list = []

    class Grid:
        pull_interval = 5.0  # far longer than the test allows: only the event can end the wait in time

        def push_messages(self, messages):
            return ["m1"]

        def pull_messages(self, ids):
            out, replies[:] = list(replies), []
            return out

    def reply():
        time.sleep(0.05)
        replies.append(types.SimpleNamespace(metadata=types.SimpleNamespace(reply_to_message_id="m1")))
        pristine.InMemoryLinkState.store_message_res(None, "reply")  # the engine stores the reply

    t0 = time.monotonic()
    threading.Thread(target=reply).start()
    got = pristine.InMemoryGrid.send_and_receive(Grid(), ["msg"], timeout=None)
    assert time.monotonic() - t0 < 2
    assert [m.metadata.reply_to_message_id for m in got] == ["m1"] and stored == ["reply"]


def test_supernode_sleeps_capped_once(pristine, monkeypatch):
    flower_compat.cap_supernode_sleeps(0.5)
    flower_compat.cap_supernode_sleeps(0.01)
    stand_in = pristine.sci.time
    assert stand_in is not time and stand_in.monotonic is time.monotonic
    slept: list[float] = []
    monkeypatch.setattr(flower_compat, "_time", types.SimpleNamespace(sleep=slept.append))
    stand_in.sleep(3)
    stand_in.sleep(0.001)
    assert slept == [0.01, 0.001]  # the latest cap, one layer


def test_supernode_starts_the_warm_superexec_once(pristine, monkeypatch):
    flower_compat.warm_supernode_subprocess(["py", "-m", "other"])
    flower_compat.warm_supernode_subprocess(["py", "-m", "warm"])
    started: list = []
    monkeypatch.setattr(flower_compat, "_subprocess",
                        types.SimpleNamespace(Popen=lambda args, *a, **kw: started.append(args)))
    popen = pristine.sci.subprocess.Popen
    popen(["/usr/bin/flower-superexec", "--insecure", "--runtime-api-address", "a:1"])
    popen(["flwr-clientapp", "--token", "t"])
    assert started == [["py", "-m", "warm", "--insecure", "--runtime-api-address", "a:1"],
                       ["flwr-clientapp", "--token", "t"]]
    assert pristine.sci.subprocess.PIPE == subprocess.PIPE


@pytest.mark.parametrize("module, name", [("sci", "pull_objects"), ("http_grid", "pull_objects"),
                                          ("run_clientapp", "pull_and_inflate_object_from_tree")])
def test_quick_pulls_once(pristine, module, name):
    mod = getattr(pristine, module)
    flower_compat.quick_pulls(mod, 0.5, name=name)
    flower_compat.quick_pulls(mod, 0.02, 0.04, name=name)
    patched = getattr(mod, name)
    assert patched.func is getattr(pristine.inflatable_utils, name)  # one layer
    assert patched.keywords == {"initial_backoff": 0.02, "backoff_cap": 0.04}


def _spec(task_type, **kw):
    from flwr.supercore.superexec.executor.types import ExecutionSpec

    base = dict(task_type=task_type, runtime_api_address="127.0.0.1:9094", token="tok", insecure=False,
                root_certificates_path="/ca.pem", runtime_dependency_install=False, parent_pid=42,
                suppress_output=False, task_id=1)
    return ExecutionSpec(**(base | kw))


class FakeTemplate:
    def __init__(self):
        self.launched: list = []
        self.closed = 0

    def launch(self, argv, suppress_output):
        self.launched.append((argv, suppress_output))

    def close(self):
        self.closed += 1


@pytest.mark.parametrize("kw", [{}, {"insecure": True}, {"root_certificates_path": None, "parent_pid": None},
                                {"runtime_dependency_install": True}, {"suppress_output": True}])
def test_warm_launch_is_what_flower_would_start(pristine, monkeypatch, kw):
    from flwr.supercore.constant import TaskType

    se = pristine.se
    popened: list = []
    monkeypatch.setattr(se, "subprocess", types.SimpleNamespace(
        Popen=lambda args, **k: popened.append((args, k)), DEVNULL=subprocess.DEVNULL))
    spec = _spec(TaskType.CLIENT_APP, **kw)
    se.SubprocessExecutor().launch(spec)  # Flower's own launch, recorded
    (flower_args, flower_kw), = popened
    template = FakeTemplate()
    flower_compat.warm_executor(template)
    result = se.SubprocessExecutor().launch(spec)
    assert result.status == "accepted" and len(popened) == 1  # no program started
    assert template.launched == [(flower_args, flower_kw.get("stdout") == subprocess.DEVNULL)]
    assert flower_kw.get("stdout") == flower_kw.get("stderr")  # both or neither go to DEVNULL


def test_warm_executor_once_and_other_tasks_unchanged(pristine, monkeypatch):
    from flwr.supercore.constant import TaskType

    se = pristine.se
    original_launch, original_close = se.SubprocessExecutor.launch, se.SubprocessExecutor.close
    popened: list = []
    monkeypatch.setattr(se, "subprocess", types.SimpleNamespace(
        Popen=lambda args, **k: popened.append(args), DEVNULL=subprocess.DEVNULL))
    old, new = FakeTemplate(), FakeTemplate()
    flower_compat.warm_executor(old)
    flower_compat.warm_executor(new)
    assert se.SubprocessExecutor.launch.__wrapped__ is original_launch  # one layer
    assert se.SubprocessExecutor.close.__wrapped__ is original_close
    executor = se.SubprocessExecutor()
    executor.launch(_spec(TaskType.SERVER_APP))
    executor.launch(_spec(TaskType.CLIENT_APP))
    executor.close()
    assert popened and popened[0][0] == "flwr-serverapp"  # Flower's launch
    assert len(popened) == 1 and len(new.launched) == 1 and not old.launched
    assert (new.closed, old.closed) == (1, 0)
