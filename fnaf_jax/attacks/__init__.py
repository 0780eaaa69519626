"""FNAF attacks: random search, finite-difference location ascent, gradient ascent, dataset runs.

The entry points and their configs::

    from fnaf_jax.attacks import AttackConfig, MaskSpec, random_search, finite_diff, pgd, run_attack
    from fnaf_jax.attacks import AttackJob, attack_folder   # what ``fnaf attack`` runs
"""

from fnaf_jax.attacks.config import (
    DEFAULT_ATTACK,
    AttackConfig,
    AttackResult,
    summarize,
    worst_of_k,
)
from fnaf_jax.attacks.finite_diff import finite_diff
from fnaf_jax.attacks.pgd import pgd
from fnaf_jax.attacks.random_search import random_search
from fnaf_jax.attacks.records import read_records
from fnaf_jax.attacks.runner import AttackJob, attack_folder, run_attack
from fnaf_jax.masks import MaskSpec

__all__ = ["DEFAULT_ATTACK", "AttackConfig", "AttackJob", "AttackResult", "MaskSpec", "attack_folder",
           "finite_diff", "pgd", "random_search", "read_records", "run_attack", "summarize", "worst_of_k"]
