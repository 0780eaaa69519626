"""Table 1: reconstruction quality (SSIM, NMSE, PSNR) of the U-Net, the FNAF-robust U-Net and
the i-RIM at 4x and 8x on the validation volumes.

    python experiments/table1_reconstruction.py --preset smoke --out runs/smoke

Runs (or reuses) the data, training, reconstruction and evaluation stages of
``fnaf reproduce`` and prints the table.
"""

import sys

from _study import main


def show(layout, preset, result):
    from fnaf_jax.study import results, stages, summary

    accs = [a for a, _ in stages.eval_accs(preset)]
    res = results.gather(layout, accs, stages.MODELS, stages.METHODS)
    print(summary.table1_md(res["table1"]))


if __name__ == "__main__":
    sys.exit(main(__doc__, ["evaluate"], show))
