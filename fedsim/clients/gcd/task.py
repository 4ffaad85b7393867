"""GCD: group-dance diffusion with contrastive consistency/diversity guidance.

A small version of *Controllable Group Choreography using Contrastive
Diffusion* (Le et al., ACM TOG 42(6), 2023) that trains on a CPU in
federated rounds.

Data
    A seeded procedural group-dance generator (:func:`make_groups`). Each
    group shares a choreography: every pose channel is a beat-synchronised
    cosine ``base_j + A_j g_j cos(h_j φ(t) + ψ_j)`` with ``φ(t) = π (t - t0) / P``
    (``P`` = frames per beat, ``h_j ∈ {1, 2}``, ``ψ_j ∈ {0, π}``), so every
    joint is at an extremum (speed minimum) on the beats. Dancers vary the
    group's moves (gain, phase jitter, left/right mirroring, a one-beat canon
    in the ``wave`` style) and stand in a formation (line, two rows, circle,
    V) that rotates, drifts and sways with the beat. The "music" is a
    ``(T, 10)`` feature sequence: beat onsets, beat and bar phase, downbeats,
    energy and a style timbre. Silos differ in style mix (Dirichlet(α) over
    :data:`STYLES`) and tempo range. Nothing is downloaded.

Model (:class:`GCDModel`)
    Denoiser ``G(x_m, m, c)`` predicting ``x_0`` of a group ``(N, T, F)``:
    motion tokens (one per dancer-frame) pass ``layers`` blocks of
    *Music-Motion Transformer* (self-attention under the local mask — a
    dancer attends only to its own frames — then cross-attention to the
    music tokens and the diffusion-time token) and *Group Global Attention*
    (attention under the global mask, every token to every token) followed
    by *Group Modulation* ``h̃ = S(w) ⊙ (h - μ(h)) / σ(h) + b(w)`` from the
    group embedding ``w = MLP(z + mean_t c_t) + e_N``, ``z ~ N(0, I)``.
    A contrastive encoder ``f(x, m, w) = exp(s(x, m, w))`` (local + global
    attention, pooled over frames and dancers to one logit) scores how well a
    group fits ``w``.

Diffusion
    Cosine schedule (:func:`cosine_alpha_bar`), ``x_0`` prediction, DDIM
    sampling with any number of steps (:func:`ddim_sample`), guidance that
    shifts each step's mean by ``γ Σ ∇ log f`` (:func:`ddim_parts`), long
    sequences from half-overlapping windows whose dancers are matched with the
    Hungarian algorithm before blending (:func:`blend_windows`,
    :func:`sample_long`).

Loss (:func:`diffusion_losses`)
    ``L = ||x_0 - x̂_0||² + λ_vel ||Δx_0 - Δx̂_0||² + λ_nce L_nce``, with the
    InfoNCE term over one positive and ``K`` negatives made by swapping in
    dancers (or whole groups) from other groups of the batch.

Compared with the published model: 2 blocks of width 48 instead of 5 of
512, a 3-layer group-embedding MLP instead of 8, 100 diffusion steps, 12
pose features instead of SMPL 6D rotations (hence no forward-kinematics or
foot-contact losses; the velocity term stays), and procedural data and
music features instead of AIOZ-GDance and Jukebox.

Metrics are in :mod:`fedsim.clients.gcd.metrics`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fedsim.clients.base import SiloData, Task, minibatch_steps
from fedsim.clients.gcd.data import N_FEAT, STYLES, folder_windows, load_sequences, make_groups
from fedsim.clients.gcd.metrics import score_groups
from fedsim.clients.gcd.model import GCDModel, cosine_alpha_bar, ddim_sample, diffusion_losses
from fedsim.clients.gcd.options import GCDOptions
from fedsim.errors import FedsimError


class GCDTask(Task):
    """Group-dance diffusion with contrastive guidance.

    Options (:class:`~fedsim.clients.gcd.options.GCDOptions`, defaults in brackets):
    ``data_dir`` [""]: a folder of real sequences (below) instead of the
    procedural groups; ``n_dancers`` [3] dancers per group, an
    int or a list cycled over silos (group-size skew); ``frames`` [32] per
    window at 15 fps; ``n_train`` [96] / ``n_test`` [24] groups per silo;
    ``alpha`` [0.5] Dirichlet concentration of each silo's style mix;
    ``lr`` [2e-3] Adam (a fresh optimiser each round); ``batch_size`` [8];
    ``diffusion_steps`` [100]; ``d_model`` [48], ``layers`` [2], ``heads`` [4], ``enc_d`` [32];
    ``negatives`` [4] per group, of which a fraction ``inter_negatives`` [0]
    are whole other groups and the rest swap dancers in, a fraction
    ``motion_negatives`` [0.5] of those keeping the original dancers' root
    trajectories (:func:`make_negatives`); ``nce_weight`` [0.01]; ``vel_weight`` [1.0];
    ``sample_eval`` [false]: also generate ``eval_samples`` [16] test groups
    with ``ddim_steps`` [10] DDIM steps and guidance ``gamma`` [0] ×
    ``guidance_scale`` [3] in ``guidance`` mode [``clean``] or ``noisy``
    (:func:`ddim_parts`) and report the sampling metrics; ``metric``: the
    headline, one of ``nce_acc`` ``x0_mse`` (always available) or ``gmc``
    ``gen_div`` ``tif`` ``bas`` ``fd_k`` (need ``sample_eval``); default
    ``fd_k`` with ``sample_eval`` and ``nce_acc`` without.

    ``evaluate`` always returns ``loss`` (= ``x0_mse``, the denoising MSE on
    the silo's test groups at fixed noise levels, normalised units),
    ``nce_acc`` (how often the encoder ranks the real group above its
    negatives on the test split), ``nce`` and ``n``: a few forward passes,
    cheap enough for every round. The sampling metrics are compared with the
    silo's held-out real test groups.

    With ``data_dir`` (AIOZ-GDance-style; :func:`~fedsim.clients.gcd.data.load_sequences`)
    the folder holds one sub-folder per sequence with ``music.npy`` ``(T, 10)``
    and ``motion.npy`` ``(dancers, T, 12)``; sequence ``j`` (sorted by name)
    goes to silo ``j mod n_silos`` and is cut into windows of ``frames``
    frames (a silo keeps its most common dancer count); each silo holds out
    ``n_test/(n_train+n_test)`` of its windows (at most ``n_test``; at most
    ``n_train`` for training); ``n_dancers``, ``alpha`` are not used then, and
    normalisation uses the folder's own statistics.
    """

    name = "gcd"
    Options = GCDOptions
    reference_step_ms = 97.4  # CPU ms of one local step, default options (see Task.profile)
    metric = "nce_acc"
    higher_is_better = True

    def __init__(self, config: dict | GCDOptions | None = None) -> None:
        super().__init__(config)
        self.opts = self.options.as_dict()
        self.metric, self.higher_is_better = self.options.headline
        self.ab = cosine_alpha_bar(int(self.opts["diffusion_steps"]))
        if self.options.data_dir:  # the folder's own statistics (every silo reads the same folder)
            flat = np.concatenate([m.reshape(-1, N_FEAT) for _, _, m in self.sequences()])
        else:
            ref, _, _ = make_groups(64, 3, int(self.opts["frames"]), np.random.default_rng(12345))
            flat = ref.reshape(-1, N_FEAT)
        self.mean = torch.from_numpy(flat.mean(0))
        self.std = torch.from_numpy(flat.std(0) + 1e-3)

    def _o(self, key: str, kind: type = float):
        return kind(self.opts[key])

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    def model(self) -> GCDModel:
        return GCDModel(d=self._o("d_model", int), layers=self._o("layers", int), heads=self._o("heads", int),
                        enc_d=self._o("enc_d", int))

    def silo_dancers(self, silo: int) -> int:
        n = self.options.n_dancers
        return int(n[silo % len(n)]) if isinstance(n, tuple) else int(n)

    def silo_skew(self, silo: int, n_silos: int, seed: int) -> tuple[np.ndarray, tuple[float, float]]:
        """Silo ``silo``'s style mix ``~ Dir(α)`` and tempo range (BPM; centres spread over 85–135)."""
        rng = np.random.default_rng([seed, silo, 7])
        probs = rng.dirichlet(np.full(len(STYLES), self._o("alpha")))
        centre = 85 + 50 * (silo + 0.5) / max(n_silos, 1)
        return probs, (centre - 15.0, centre + 15.0)

    def sequences(self) -> tuple:
        """The sequences of ``data_dir`` (:func:`~fedsim.clients.gcd.data.load_sequences`), read once."""
        return _cached_sequences(str(Path(self.options.data_dir).resolve()))

    def partition(self, silo: int, n_silos: int, seed: int) -> SiloData:
        if self.options.data_dir:
            return self._folder_partition(silo, n_silos, seed)
        probs, bpm = self.silo_skew(silo, n_silos, seed)
        rng = np.random.default_rng([seed, silo])
        n_tr, n_te = self._o("n_train", int), self._o("n_test", int)
        motion, music, _ = make_groups(n_tr + n_te, self.silo_dancers(silo), self._o("frames", int), rng,
                                       probs, bpm)
        t = torch.from_numpy
        return SiloData(t(motion[:n_tr]), t(music[:n_tr]), t(motion[n_tr:]), t(music[n_tr:]))

    def _folder_partition(self, silo: int, n_silos: int, seed: int) -> SiloData:
        frames = self._o("frames", int)
        motion, music = folder_windows(self.sequences(), silo, n_silos, frames)
        if len(motion) < 2:
            raise FedsimError(f"silo {silo} gets {len(motion)} window of {frames} frames from gcd data_dir; it "
                              f"needs 2 (one to train, one to test): use fewer silos or smaller frames")
        n_tr, n_te = self._o("n_train", int), self._o("n_test", int)
        n_test = min(n_te, max(1, int(round(len(motion) * n_te / (n_tr + n_te)))))
        n_train = min(n_tr, len(motion) - n_test)
        idx = np.random.default_rng([seed, silo]).permutation(len(motion))
        te, tr = idx[:n_test], idx[n_test:n_test + n_train]
        t = torch.from_numpy
        return SiloData(t(motion[tr]), t(music[tr]), t(motion[te]), t(music[te]))

    def train(self, model, data, steps, generator, prox_mu=0.0, anchor=None):
        opt = torch.optim.Adam(model.parameters(), lr=self._o("lr"))

        def batch_loss(idx):
            parts = diffusion_losses(model, self.normalise(data.x_train[idx]), data.y_train[idx], self.ab,
                                     generator, self._o("negatives", int),
                                     inter_fraction=self._o("inter_negatives"),
                                     motion_fraction=self._o("motion_negatives"))
            objective = (parts["simple"] + self._o("vel_weight") * parts["vel"]
                         + self._o("nce_weight") * parts["nce"])
            return objective, {"loss": float(parts["simple"].detach()), "nce": float(parts["nce"].detach()),
                               "vel": float(parts["vel"].detach())}

        return minibatch_steps(model, data, steps, generator, opt, self._o("batch_size", int), prox_mu=prox_mu,
                               anchor=anchor, batch_loss=batch_loss, clip_grad_norm=1.0)

    @torch.no_grad()
    def evaluate(self, model, data):
        model.eval()
        gen = torch.Generator().manual_seed(0)
        x0 = self.normalise(data.x_test)
        b = len(x0)
        m = 1 + (torch.arange(b) * (len(self.ab) - 1)) // max(b, 1)  # fixed spread of noise levels
        parts = diffusion_losses(model, x0, data.y_test, self.ab, gen, self._o("negatives", int), m=m,
                                 inter_fraction=self._o("inter_negatives"),
                                 motion_fraction=self._o("motion_negatives"))
        out = {"loss": float(parts["simple"]), "x0_mse": float(parts["simple"]),
               "nce": float(parts["nce"]), "nce_acc": float(parts["acc"]), "n": float(b)}
        if self.opts["sample_eval"]:
            out |= self.sample_metrics(model, data, gen)
        return out

    def sample_metrics(self, model: GCDModel, data: SiloData, generator: torch.Generator,
                       gamma: float | None = None) -> dict[str, float]:
        """Generate for the first ``eval_samples`` test songs and score the result.

        ``gmc`` (:func:`~fedsim.clients.gcd.metrics.group_motion_correlation`),
        ``gen_div`` (:func:`~fedsim.clients.gcd.metrics.generation_diversity`),
        ``tif`` (:func:`~fedsim.clients.gcd.metrics.trajectory_intersection_frequency`),
        ``bas`` (:func:`~fedsim.clients.gcd.metrics.group_beat_alignment` against the
        music's beats, σ = :data:`BEAT_SIGMA` frames) and ``fd_k`` (Fréchet distance
        of kinetic features against all the silo's held-out real test dancers).
        """
        k = min(self._o("eval_samples", int), len(data.y_test))
        music = data.y_test[:k]
        gamma = self._o("gamma") if gamma is None else gamma
        x = ddim_sample(model, music, int(data.x_test.shape[1]), self.ab, self._o("ddim_steps", int),
                        gamma, self._o("guidance_scale"), generator, mode=str(self.opts["guidance"]))
        return score_groups(self.denormalise(x).numpy(), music.numpy(), data.x_test.numpy())


@lru_cache(maxsize=2)
def _cached_sequences(root: str) -> tuple:
    return load_sequences(root)
