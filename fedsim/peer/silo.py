"""One silo's model and one round of its local work, shared by every engine.

:class:`Silo` holds a silo's task, data partition and model (the exchanged
parameters plus those that never leave the silo, e.g. CDL's sub-network).
:meth:`Silo.local_round` evaluates the model the round starts from and trains
it: the Simulation Engine's ClientApp and the peer data plane's silo loop
(:mod:`fedsim.peer.loop`) both call it, so a round does the same arithmetic
with the same random draws whichever engine runs it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch


def flatten(model: torch.nn.Module, keys: list[str]) -> np.ndarray:
    """The exchanged parameters as one float32 vector, in ``keys`` order."""
    sd = model.state_dict()
    return np.concatenate([sd[k].detach().reshape(-1).to(torch.float32).numpy() for k in keys])


def checksums(flat: np.ndarray) -> tuple[float, float]:
    """Two linear fingerprints of a flat model: its sum and a fixed ±1-weighted sum.

    Mixing is linear, so the fingerprints of a mixture are the same mixture of
    the fingerprints: tests use them to check what each silo received.

    Examples
    --------
    >>> checksums(np.ones(4, np.float32))[0]
    4.0
    """
    f = np.asarray(flat, dtype=np.float64)
    return float(f.sum()), float(f @ _signs(f.size))


@lru_cache(maxsize=8)
def _signs(size: int) -> np.ndarray:
    """The fixed ±1 weights of :func:`checksums` (drawn once per model size and process)."""
    signs = np.where(np.random.default_rng(12345).random(size) < 0.5, -1.0, 1.0)
    signs.flags.writeable = False
    return signs


def initial_model(task, seed: int) -> torch.nn.Module:
    """The run's initial model: every silo and the server build the same one from the seed."""
    torch.manual_seed(seed)
    return task.model()


def round_generator(seed: int, silo: int, rnd: int) -> torch.Generator:
    """The random stream of silo ``silo``'s local steps in round ``rnd``."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), silo, int(rnd)]).generate_state(1)[0]))


class Silo:
    """A silo's task, data and model.

    Parameters
    ----------
    silo, n_silos, seed : int
        Which partition, of how many, for which run seed.
    task : Task
        The local task.
    data : SiloData, optional
        The partition (built from ``task`` when not given).
    """

    def __init__(self, silo: int, n_silos: int, seed: int, task, data=None) -> None:
        self.silo, self.n_silos, self.seed = int(silo), int(n_silos), int(seed)
        self.task = task
        self.data = data if data is not None else task.partition(self.silo, self.n_silos, self.seed)
        self.model = initial_model(task, self.seed)
        self.keys = task.exchanged_keys(self.model)

    # -- the exchanged vector ------------------------------------------------
    def get_flat(self) -> np.ndarray:
        return flatten(self.model, self.keys)

    def set_flat(self, flat: np.ndarray) -> None:
        """Load the exchanged parameters from a flat vector (the silo's own stay)."""
        flat = np.asarray(flat, dtype=np.float32)
        state = self.model.state_dict()
        size = sum(state[k].numel() for k in self.keys)
        if flat.shape != (size,):
            raise ValueError(f"silo {self.silo}: model of {flat.size} values, the task exchanges {size}")
        offset = 0
        for k in self.keys:
            n = state[k].numel()
            state[k] = torch.from_numpy(flat[offset:offset + n].copy()).view_as(state[k]).to(state[k].dtype)
            offset += n
        self.model.load_state_dict(state)

    def local_state(self) -> dict[str, torch.Tensor]:
        """Parameters that never leave the silo."""
        keys = set(self.keys)
        return {k: v.detach().clone() for k, v in self.model.state_dict().items() if k not in keys}

    def set_local_state(self, saved: dict[str, torch.Tensor]) -> None:
        state = self.model.state_dict()
        state.update({k: v for k, v in saved.items() if k in state and k not in set(self.keys)})
        self.model.load_state_dict(state)

    # -- one round -----------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """``eval_*`` metrics of the current model on the silo's test split."""
        return {f"eval_{k}": float(v) for k, v in self.task.evaluate(self.model, self.data).items()}

    def local_round(self, rnd: int, local_steps: int, evaluate: bool = True, prox_mu: float = 0.0
                    ) -> dict[str, float]:
        """Evaluate the model the round starts from, then train it ``local_steps`` steps.

        Returns the metrics: ``eval_*`` of the starting model (when
        ``evaluate``), ``train_*`` of the steps, ``num-examples`` and the
        fingerprints of the starting (``received_*``) and trained
        (``trained_*``) models.
        """
        torch.set_num_threads(1)  # one thread per silo: silos share the machine's cores
        received = checksums(self.get_flat())
        metrics: dict[str, float] = {"silo": self.silo, "num-examples": self.data.n_train,
                                     "received_sum": received[0], "received_signed": received[1]}
        if evaluate:
            metrics |= self.evaluate()
        anchor = [p.detach().clone() for p in self.model.parameters()] if prox_mu > 0 else None
        out = self.task.train(self.model, self.data, int(local_steps), round_generator(self.seed, self.silo, rnd),
                              prox_mu=prox_mu, anchor=anchor)
        metrics |= {f"train_{k}": float(v) for k, v in out.items()}
        metrics["trained_sum"], metrics["trained_signed"] = checksums(self.get_flat())
        return metrics
