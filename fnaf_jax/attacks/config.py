"""Attack settings and the per-sample result every attack returns (SPEC sections 3, 4)."""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnaf_jax.errors import ConfigError
from fnaf_jax.features import DEFAULT_FEATURES, Candidates, FeatureConfig
from fnaf_jax.objective import ATTACK, ObjectiveConfig, Scores

KSPACE_TARGETS = ("image", "feature")


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """Defaults are the paper's: K = 11, IP threshold 1e-4, gamma 1e-3, FD h 10, lr 1e5."""

    k: int = 11  # random search: candidates per sample
    ip_threshold: float = 1e-4  # reject a candidate whose IP is below this
    gamma: float = 1e-3  # hit: accepted worst loss above this
    fd_iterations: int = 2  # finite differences: 1 + iterations * 5 forward passes
    fd_step: float = 10.0  # h: probes at p +- h/2
    fd_lr: float = 1e5  # paper; the released code used 1e7
    pgd_starts: int = 1  # gradient attack: starting features per sample
    pgd_steps: int = 3  # gradient steps per start (one forward and one backward pass each)
    pgd_sigma: float = 8.0  # px: smoothing of the first step's feature, annealed to 0
    pgd_step: float = 8.0  # px: first location step, annealed like sigma
    pgd_value_step: float = 0.5  # first intensity step, a fraction of the slice's range
    eps: tuple[float, ...] = (0.002, 0.005, 0.01, 0.02, 0.05)  # k-space attacks: ||e|| / ||y_k||
    kspace_steps: int = 10  # k-space attacks: projected gradient steps per eps
    kspace_step: float = 0.5  # k-space attacks: step length, a fraction of the ball's radius
    kspace_target: str = "feature"  # kspace-pgd maximises the "image" error or a "feature"'s region loss
    shown_threshold: float = 0.5  # hallucination hit: at least this share of the feature appears
    features: FeatureConfig = DEFAULT_FEATURES
    objective: ObjectiveConfig = ATTACK

    def __post_init__(self):
        if self.k < 1:
            raise ConfigError(f"attack k must be >= 1, got {self.k}")
        if self.fd_iterations < 0 or self.fd_step <= 0:
            raise ConfigError(f"finite differences need iterations >= 0 and step > 0, got "
                              f"{self.fd_iterations}, {self.fd_step}")
        if self.kspace_target not in KSPACE_TARGETS:
            raise ConfigError(f"kspace target {self.kspace_target!r} unknown; expected one of {KSPACE_TARGETS}")
        if not self.eps or min(self.eps) <= 0 or self.kspace_steps < 1 or self.kspace_step <= 0:
            raise ConfigError(f"k-space attacks need eps > 0 (at least one), steps >= 1 and a step > 0, got "
                              f"{self.eps}, {self.kspace_steps}, {self.kspace_step}")
        if self.pgd_starts < 1 or self.pgd_steps < 0 or min(self.pgd_sigma, self.pgd_step,
                                                            self.pgd_value_step) < 0:
            raise ConfigError(f"the gradient attack needs starts >= 1, steps >= 0 and sigma, step, "
                              f"value step >= 0, got {self.pgd_starts}, {self.pgd_steps}, "
                              f"{self.pgd_sigma}, {self.pgd_step}, {self.pgd_value_step}")


def passes(method: str, cfg: AttackConfig) -> dict:
    """Model passes an attack spends per sample, beside the one no-feature pass every
    method shares: RS ``k`` forwards, FD ``1 + 5 * iterations``, the gradient attack one
    forward and one backward per step and start plus a final forward per start. A
    backward pass costs about two forwards (benchmarks/gradient_attack.py measures it),
    so budgets compare as ``forward + ratio * backward``."""
    if method == "rs":
        return {"forward": cfg.k, "backward": 0}
    if method == "fd":
        return {"forward": 1 + 5 * cfg.fd_iterations, "backward": 0}
    if method == "pgd":
        return {"forward": cfg.pgd_starts * (cfg.pgd_steps + 1), "backward": cfg.pgd_starts * cfg.pgd_steps}
    if method in ("kspace-pgd", "hallucinate"):  # per eps: the steps and one final forward
        n = len(cfg.eps)
        return {"forward": n * (cfg.kspace_steps + 1), "backward": n * cfg.kspace_steps}
    raise ConfigError(f"attack method {method!r} unknown")


#: cost of one backward pass in forward passes (benchmarks/gradient_attack.py: U-Net chans 8,
#: B 4, K 11 on the 2-core CPU, 21.9 candidates/s forward vs 7.9 forward + backward)
BACKWARD_COST = 1.77


def forward_equivalents(method: str, cfg: AttackConfig) -> float:
    """An attack's budget per sample in forward passes (``passes``, a backward counted as
    ``BACKWARD_COST``), the unit in which tables compare methods at equal compute."""
    spent = passes(method, cfg)
    return spent["forward"] + BACKWARD_COST * spent["backward"]


DEFAULT_ATTACK = AttackConfig()


class AttackResult(NamedTuple):
    """Outcome per sample (leading axis B); ``losses``/``ips``/``locations`` list every point scored."""

    worst_loss: jax.Array  # (B,) loss of the chosen candidate
    index: jax.Array  # (B,) int: which scored candidate was chosen
    ip: jax.Array  # (B,) its information preservation
    accepted: jax.Array  # (B,) bool: some scored candidate had IP >= threshold
    hit: jax.Array  # (B,) bool: accepted and worst_loss > gamma
    num_accepted: jax.Array  # (B,) int: accepted candidates among those scored
    candidate: Candidates  # (B, 1, ...) the chosen (worst accepted) feature
    losses: jax.Array  # (B, S)
    ips: jax.Array  # (B, S)
    locations: jax.Array  # (B, S, 2)
    nofeature: jax.Array  # (B, S) no-feature control at each scored point
    eraser: jax.Array  # (B, S) oracle eraser loss of each scored feature
    lost: jax.Array  # (B, S) feature-lost fraction of each scored feature


def worst_of_k(loss, ip, ip_threshold: float = 1e-4):
    """Index of the largest loss among accepted candidates (last axis), and whether any was.

    When no candidate is accepted the index of the largest loss is returned anyway (for
    the record), and ``accepted`` says not to count it.
    """
    ok = ip >= ip_threshold
    accepted = ok.any(axis=-1)
    best_ok = jnp.argmax(jnp.where(ok, loss, -jnp.inf), axis=-1)
    return jnp.where(accepted, best_ok, jnp.argmax(loss, axis=-1)), accepted


def take_candidate(candidates: Candidates, index) -> Candidates:
    """Candidate ``index[b]`` of each sample, kept as a (B, 1, ...) batch."""
    return jax.tree.map(lambda a: jnp.take_along_axis(a, index.reshape(-1, 1, *([1] * (a.ndim - 2))), axis=1),
                        candidates)


@functools.partial(jax.jit, static_argnames="cfg")
def summarize(scores: Scores, candidates: Candidates, cfg: AttackConfig) -> AttackResult:
    """Pick the worst accepted of all scored ``candidates`` (B, S) and decide hits."""
    losses, ips = scores.loss, scores.ip
    index, accepted = worst_of_k(losses, ips, cfg.ip_threshold)
    worst = jnp.take_along_axis(losses, index[:, None], axis=1)[:, 0]
    ip = jnp.take_along_axis(ips, index[:, None], axis=1)[:, 0]
    return AttackResult(
        worst_loss=worst,
        index=index,
        ip=ip,
        accepted=accepted,
        hit=accepted & (worst > cfg.gamma),
        num_accepted=(ips >= cfg.ip_threshold).sum(axis=-1),
        candidate=take_candidate(candidates, index),
        losses=losses,
        ips=ips,
        locations=candidates.location,
        nofeature=scores.nofeature,
        eraser=scores.eraser,
        lost=scores.lost,
    )
