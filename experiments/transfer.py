"""Transfer (Section 4.7): the worst features found by random search on the U-Net, with
their masks, scored on the i-RIM.

    python experiments/transfer.py --preset smoke --out runs/smoke

Runs (or reuses) the U-Net attack and the transfer stage of ``fnaf reproduce`` and prints
the transfer attack rate beside the paper's 89.48 %.
"""

import sys

from _study import main


def show(layout, preset, result):
    from fnaf_jax.study import results, stages, summary

    accs = [a for a, _ in stages.eval_accs(preset)]
    res = results.gather(layout, accs, stages.MODELS, stages.METHODS)
    print(summary.transfer_md(res["transfer"]))


if __name__ == "__main__":
    sys.exit(main(__doc__, ["transfer", "attack_irim"], show))
