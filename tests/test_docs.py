"""The runnable examples in the docs run and say what their comments say."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _block(page: str, heading: str) -> str:
    text = (DOCS / page).read_text()
    section = text.split(f"## {heading}", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_bring_your_own_model_example_runs():
    scope: dict = {}
    exec(compile(_block("attacks.md", "Bring your own model"), "attacks.md", "exec"), scope)  # noqa: S102 (our own docs)
    result = scope["result"]
    assert not np.asarray(result.hit).any()  # a model that reproduces the target loses nothing
    assert np.abs(np.asarray(result.lost)).max() < 1e-4
    np.testing.assert_allclose(np.asarray(result.eraser) > 0, True)


def _documented_imports() -> list[str]:
    pages = [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md"))]
    lines = []
    for page in pages:
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.DOTALL):
            lines += [f"{page.name}: {line.strip()}" for line in block.splitlines()
                      if re.match(r"\s*(from fnaf_jax\S* import [^(]+$|import fnaf_jax)", line)]
    return lines


def test_every_documented_import_imports():
    lines = _documented_imports()
    assert len(lines) >= 10  # the docs do show their imports
    failed = []
    for entry in lines:
        statement = entry.split(": ", 1)[1].split("#")[0]
        try:
            exec(statement, {})  # noqa: S102 (our own docs)
        except ImportError as exc:
            failed.append(f"{entry} -> {exc}")
    assert failed == []


def test_the_public_attack_api_is_what_the_docstring_promises():
    from fnaf_jax import attacks

    for name in ("AttackConfig", "MaskSpec", "random_search", "finite_diff", "run_attack", "AttackJob",
                 "attack_folder", "read_records", "summarize", "worst_of_k"):
        assert name in attacks.__all__ and callable(getattr(attacks, name)), name
    assert callable(attacks.random_search) and not hasattr(attacks.random_search, "__path__")
