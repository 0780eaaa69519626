"""Figure 2: information preservation (IP) vs. FNAF loss of the worst feature of each
validation slice, per model (RS), with the acceptance and hit thresholds.

    python experiments/figure2_ip_vs_loss.py --preset smoke --out runs/smoke

Runs (or reuses) the whole study (the report stage draws the figures) and prints the PNGs.
"""

import sys

from _study import main


def show(layout, preset, result):
    for png in sorted(layout.figures.rglob("figure2*.png")):
        print(png)


if __name__ == "__main__":
    sys.exit(main(__doc__, ["report"], show))
