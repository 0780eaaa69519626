"""Figure 3: where the features were found: anchor locations of the worst features, hits
and misses, U-Net vs. FNAF-robust U-Net vs. i-RIM, over the mean validation image.

    python experiments/figure3_locations.py --preset smoke --out runs/smoke

Runs (or reuses) the whole study (the report stage draws the figures) and prints the PNGs.
"""

import sys

from _study import main


def show(layout, preset, result):
    for png in sorted(layout.figures.rglob("figure3*.png")):
        print(png)


if __name__ == "__main__":
    sys.exit(main(__doc__, ["report"], show))
