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
