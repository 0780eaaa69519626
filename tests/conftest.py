"""Shared test fixtures. Golden reference files live in tests/golden (copied from the
reference implementations, see tests/golden/README.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _share_compilations() -> None:
    """One persistent XLA cache for the whole run: pytest-xdist workers and the ``fnaf``
    processes the tests start inherit it, so a function compiled in one test is loaded,
    not recompiled, in the next (most of the suite's time is compilation). Fresh per run:
    the controller, which imports this file before it starts the workers, makes it."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    import atexit
    import tempfile

    cache = tempfile.mkdtemp(prefix="fnaf-tests-xla-cache-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


_share_compilations()
# The suite's models are tiny, so XLA's optimisation passes cost far more than they save
# (about 40 % of a cold run); every comparison is against golden files, independent
# computations or the same code, with stated tolerances, so none depends on them.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import pytest

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def golden() -> Path:
    return GOLDEN


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """A small synthetic fastMRI single-coil set: 2 volumes x 3 slices, width 368.

    file1000001.h5 is CORPD_FBK and file1000002.h5 CORPDFS_FBK (seed 0). Shared by
    every test module; treat it as read-only.
    """
    from fnaf_jax.data.synthetic import write_dataset

    out = tmp_path_factory.mktemp("synthetic")
    write_dataset(out, n_volumes=2, n_slices=3, width=368, seed=0)
    return out


@pytest.fixture(scope="session")
def synthetic_lesion_dir(tmp_path_factory) -> Path:
    """Like ``synthetic_dir`` (2 volumes x 3 slices, width 368) with seed 1 and planted
    lesions: ``annotations.csv`` (fastMRI+ knee.csv format) lists 4 boxes, 3 in
    file1000001.h5 and 1 in file1000002.h5. Read-only."""
    from fnaf_jax.data.synthetic import write_dataset

    out = tmp_path_factory.mktemp("synthetic_lesions")
    write_dataset(out, n_volumes=2, n_slices=3, width=368, seed=1, lesions=True)
    return out


@pytest.fixture(scope="session")
def tiny_unet_checkpoint(tmp_path_factory) -> Path:
    """A model checkpoint of an untrained U-Net with 2 channels and 1 pool (fast to run)."""
    from fnaf_jax.models.registry import build_model
    from fnaf_jax.models.store import save_model

    config = {"arch": "unet", "chans": 2, "num_pool_layers": 1}
    return save_model(tmp_path_factory.mktemp("ckpt") / "tiny-unet", build_model(config), config)


@pytest.fixture(scope="session")
def installed_fnaf(tmp_path_factory):
    """fnaf-jax installed non-editable in a fresh venv: (its bin folder, environment)."""
    return install_fnaf(tmp_path_factory.mktemp("install"))


def install_fnaf(tmp: Path) -> tuple[Path, dict]:
    """(the venv's bin folder, the environment to run it in)."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.cfg", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "fnaf_jax", src / "fnaf_jax", ignore=shutil.ignore_patterns("__pycache__"))
    env_dir = tmp / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["JAX_PLATFORMS"] = "cpu"
    subprocess.run([env_dir / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", str(src)],
                   check=True, env=env, cwd=tmp)
    shutil.rmtree(src)  # the installed package must not need its sources
    return env_dir / "bin", env




@pytest.fixture
def optimized_xla():
    """XLA's optimisations back on for one test: one that asserts two programs agree to
    float32 rounding (unoptimised, reductions over different batch shapes are ordered
    differently, about 2e-6 relative)."""
    import jax

    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", before)
