"""A plain (non-editable) ``pip install`` of fnaf-jax: presets and the native CPU kernels'
sources ship inside the package.

``installed_fnaf`` (conftest.py) installs the sources alone (copied, then removed) into a fresh virtual
environment whose dependencies come from this interpreter. ``tests/test_reproduce.py``
runs the whole ``mini`` study through that installed ``fnaf``.
"""

from __future__ import annotations

import subprocess

import pytest


@pytest.mark.slow
@pytest.mark.xdist_group("mini_study")  # shares the one install with the mini study
def test_the_installed_package_is_the_copy_in_the_venv_with_its_presets(installed_fnaf, tmp_path):
    bin_dir, env = installed_fnaf
    code = ("import fnaf_jax, fnaf_jax.study.presets as p; print(fnaf_jax.__file__); "
            "print(' '.join(p.preset_names())); from fnaf_jax.kernels import onednn; "
            "print(all(s.exists() for s in onednn.SOURCES), onednn.unavailable_reason())")
    where, names, kernel = subprocess.run([bin_dir / "python", "-c", code], check=True, env=env, cwd=tmp_path,
                                          capture_output=True, text=True).stdout.split("\n")[:3]
    assert where.startswith(str(bin_dir.parent)), where  # the installed copy, not this checkout
    assert names.split() == ["defenses", "mini", "paper", "smoke", "synthetic"]
    assert kernel == "True None"  # the native kernels' sources ship and build
