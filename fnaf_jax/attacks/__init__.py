"""FNAF attacks: random search, finite-difference location ascent, dataset evaluation.

The entry points and their configs::

    from fnaf_jax.attacks import AttackConfig, MaskSpec, random_search, finite_diff, run_attack
"""

from fnaf_jax.attacks.config import (
           DEFAULT_ATTACK,
           AttackConfig,
           AttackResult,
           summarize,
           worst_of_k,
)
from fnaf_jax.attacks.evaluate import MaskSpec, read_records, run_attack
from fnaf_jax.attacks.finite_diff import finite_diff
from fnaf_jax.attacks.random_search import random_search

__all__ = ["DEFAULT_ATTACK", "AttackConfig", "AttackResult", "MaskSpec", "finite_diff", "random_search",
           "read_records", "run_attack", "summarize", "worst_of_k"]
