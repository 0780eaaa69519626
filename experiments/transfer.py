"""Transfer (Section 4.7): the worst features found by random search on the U-Net, with
their masks, scored on the i-RIM.

    python experiments/transfer.py --preset smoke --out runs/smoke

Runs (or reuses) the U-Net attack and the transfer stage of ``fnaf reproduce`` and prints
the transfer attack rate beside the paper's 89.48 %.
"""

import sys

from _study import gather_results, main


def show(layout, preset, result):
    from fnaf_jax.study import summary

    res = gather_results(layout, preset)
    print(summary.transfer_md(res["transfer"]))


if __name__ == "__main__":
    sys.exit(main(__doc__, ["transfer", "attack_irim"], show))
