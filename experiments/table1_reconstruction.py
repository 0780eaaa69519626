"""Table 1: reconstruction quality (SSIM, NMSE, PSNR) of the U-Net, the FNAF-robust U-Net and
the i-RIM at 4x and 8x on the validation volumes.

    python experiments/table1_reconstruction.py --preset smoke --out runs/smoke

Runs (or reuses) the data, training, reconstruction and evaluation stages of
``fnaf reproduce`` and prints the table.
"""

import sys

from _study import gather_results, main


def show(layout, preset, result):
    from fnaf_jax.study import summary

    res = gather_results(layout, preset)
    print(summary.table1_md(res["table1"]))


if __name__ == "__main__":
    sys.exit(main(__doc__, ["evaluate"], show))
