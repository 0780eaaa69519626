"""Table 3: information preservation: acceptance rate (IP >= 1e-4) and mean IP of the
features of every attack run.

    python experiments/table3_information.py --preset smoke --out runs/smoke

Runs (or reuses) the attack stages of ``fnaf reproduce`` and prints the table.
"""

import sys

from _study import main


def show(layout, preset, result):
    from fnaf_jax.study import results, stages, summary

    accs = [a for a, _ in stages.eval_accs(preset)]
    res = results.gather(layout, accs, stages.MODELS, stages.METHODS)
    print(summary.table3_md(res["table2"]))


if __name__ == "__main__":
    sys.exit(main(__doc__, ["attack_unet", "attack_robust", "attack_irim"], show))
