"""A plain (non-editable) ``pip install`` runs the study: presets ship inside the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_non_editable_install_runs_fnaf_reproduce_mini(tmp_path):
    # the sources alone, copied: nothing of the checkout (tests, docs, build folders) comes along
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.cfg", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "fnaf_jax", src / "fnaf_jax", ignore=shutil.ignore_patterns("__pycache__"))
    env_dir = tmp_path / "venv"
    # the dependencies come from this interpreter's site-packages; fnaf-jax itself from the wheel
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(src)],
                   check=True, env=env, cwd=tmp_path)
    where = subprocess.run([python, "-c", "import fnaf_jax; print(fnaf_jax.__file__)"], check=True,
                           env=env, cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert where.startswith(str(env_dir)), where  # the installed copy, not this checkout
    shutil.rmtree(src)  # the installed package must not need its sources
    run = subprocess.run([env_dir / "bin" / "fnaf", "reproduce", "--preset", "mini", "--out", "study"],
                         env={**env, "JAX_PLATFORMS": "cpu"}, cwd=tmp_path, capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "study" / "report.md").is_file() and (tmp_path / "study" / "report.html").is_file()
