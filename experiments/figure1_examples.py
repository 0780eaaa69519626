"""Figure 1: examples of FNAFs: the worst features random search found on the U-Net, shown
on the target, the zero-filled input and each model's reconstruction (zoomed).

    python experiments/figure1_examples.py --preset smoke --out runs/smoke

Runs (or reuses) the whole study (the report stage draws the figures) and prints the PNGs.
"""

import sys

from _study import main


def show(layout, preset, result):
    for png in sorted(layout.figures.rglob("figure1*.png")):
        print(png)


if __name__ == "__main__":
    sys.exit(main(__doc__, ["report"], show))
