"""The device benchmark suite behind ``benchmarks/gpu_suite.sh``: one JSON of

- RS candidates/s against the bare forward (U-Net chans 32 and the leaderboard's chans
  256, the released-size i-RIM) and against the PyTorch replica of the released loop;
- the U-Net train step and inference against fastMRI's PyTorch U-Net;
- the i-RIM's memory-free training step at the released size: temp memory for 2 and 8 steps;
- the wall time of ``fnaf reproduce --preset smoke``.

``--dry-run`` shrinks every size (and runs the ``mini`` preset) so the whole suite checks
on a CPU in minutes. Gradient attacks (issue 12) are not built yet: their entry says so.
Never run as a test.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _section(results: dict, name: str, fn) -> None:
    """Run one part; a failure is recorded in the JSON, the rest of the suite goes on."""
    t0 = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as exc:  # noqa: BLE001 (a failed part must not lose the others' numbers)
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    results[name + "_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"{name}: done in {results[name + '_seconds']} s", flush=True)


def attacks(dry: bool) -> list[dict]:
    import attack_profile as ap
    import numpy as np
    from attack_throughput import _alternating, torch_original_structure

    from fnaf_jax.attacks.config import AttackConfig
    from fnaf_jax.attacks.random_search import random_search
    from fnaf_jax.objective import make_scorer

    b, k, repeats = (2, 4, 1) if dry else (8, 11, 3)
    configs = [("unet", 8 if dry else 32, 3 if dry else 4, None), ("unet", 8 if dry else 256, 3 if dry else 4, None),
               ("irim", 0, 0, "smoke" if dry else "released")]
    out = []
    for kind, chans, pools, size in configs:
        model = ap.build_model(kind, chans, pools, size or "smoke")
        row = {"model": kind, "chans": chans, "pools": pools, "irim_size": size,
               **ap.profile(model, b, k, None, repeats)}
        if kind == "unet":
            torch_run = torch_original_structure(chans, pools)
            rng = np.random.default_rng(0)
            y = rng.uniform(size=(b, 320, 320)).astype(np.float32)
            m = (rng.uniform(size=(b, 320)) < 0.25).astype(np.float32)
            import jax

            cfg, keys = AttackConfig(k=k), jax.random.split(jax.random.key(0), b)
            scorer, batch = make_scorer(model), {"target_raw": y, "mask": m}
            def rs(scorer=scorer, batch=batch, keys=keys, cfg=cfg):
                return random_search(scorer, batch, keys, cfg).worst_loss

            def loop(torch_run=torch_run, y=y, m=m, k=k):
                return torch_run(y, m, k)

            t_rs, t_torch = _alternating([rs, loop], repeats)
            row.update(torch_original_loop_per_s=b * k / t_torch, rs_over_torch_loop=t_torch / t_rs)
        out.append(row)
    return out


def training(dry: bool) -> dict:
    import numpy as np
    import train_throughput as tt

    args = argparse.Namespace(chans=8 if dry else 32, pools=3 if dry else 4, size=64 if dry else 320,
                              batch_size=1, steps=1 if dry else 3, repeats=1 if dry else 3, warmup=1)
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, args.size, args.size)).astype(np.float32)
    sides = {"jax": tt.jax_side(args, image, image)}
    try:
        sides["torch"] = tt.torch_side(args, image, image)
    except ImportError as exc:  # the PyTorch side needs torch and fastmri
        print(f"training: no PyTorch side ({exc})")
    rates = tt.measure(sides, args)
    return {f"{a}_{b}": v for (a, b), v in rates.items()} | {"chans": args.chans, "size": args.size}


def irim_memory(dry: bool) -> dict:
    import irim_memory as im

    # the benchmark's i-RIM: 4 coupling layers of WIDTH per step (the release: 64 wide, 4x)
    width, size, mult = (16, 32, 1) if dry else (64, 320, 4)
    batch = im.make_batch(1, size)
    out = {"width": width, "size": size, "multiplicity": mult}
    for steps in (2, 8):
        temp, flops, seconds, _ = im.measure(steps, True, width, mult, batch, 1 if dry else 3)
        out[f"steps_{steps}"] = {"temp_bytes": temp, "flops": flops, "step_seconds": seconds}
    return out


def smoke(dry: bool) -> dict:
    preset = "mini" if dry else "smoke"
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "fnaf_jax.cli", "reproduce", "--preset", preset, "--out",
                              str(Path(tmp) / "study")], capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
    return {"preset": preset, "seconds": round(seconds, 1), "returncode": run.returncode,
            "tail": run.stderr[-500:] if run.returncode else ""}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="the JSON to write")
    p.add_argument("--dry-run", action="store_true", help="every size shrunk: a check on CPU")
    args = p.parse_args(argv)
    import jax

    results = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(), "jax": jax.__version__,
               "host": platform.node(), "dry_run": args.dry_run,
               "gradient_attacks": "not built yet (issue 12): no figure"}
    for name, fn in (("attacks", attacks), ("training", training), ("irim_memory", irim_memory), ("smoke", smoke)):
        _section(results, name, lambda fn=fn: fn(args.dry_run))
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
