"""Table 3: information preservation: acceptance rate (IP >= 1e-4) and mean IP of the
features of every attack run.

    python experiments/table3_information.py --preset smoke --out runs/smoke

Runs (or reuses) the attack stages of ``fnaf reproduce`` and prints the table.
"""

import sys

from _study import gather_results, main


def show(layout, preset, result):
    from fnaf_jax.study import summary

    res = gather_results(layout, preset)
    print(summary.table3_md(res["table2"]))


if __name__ == "__main__":
    sys.exit(main(__doc__, ["attack_unet", "attack_robust", "attack_irim"], show))
