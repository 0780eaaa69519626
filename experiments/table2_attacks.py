"""Table 2: FNAF attack rate and mean worst loss of random search (RS) and finite
differences (FD) on each model at 4x and 8x.

    python experiments/table2_attacks.py --preset smoke --out runs/smoke

Runs (or reuses) the training and attack stages of ``fnaf reproduce`` and prints the table
beside the paper's numbers.
"""

import sys

from _study import gather_results, main


def show(layout, preset, result):
    from fnaf_jax.study import summary

    res = gather_results(layout, preset)
    print(summary.table2_md(res["table2"]))


if __name__ == "__main__":
    sys.exit(main(__doc__, ["attack_unet", "attack_robust", "attack_irim"], show))
