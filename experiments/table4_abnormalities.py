"""Table 4: real abnormalities: region NMSE and SSIM (SSIM map averaged inside each
annotated box) per label, for the U-Net, the FNAF-robust U-Net and the i-RIM.

    python experiments/table4_abnormalities.py --preset smoke --out runs/smoke
    python experiments/table4_abnormalities.py --preset paper --data /data/knee \
        --irim-checkpoint irim.pt --annotations fastmri_plus/knee.csv --out runs/paper

Boxes come from ``--annotations`` (fastMRI+ ``knee.csv`` or the FNAF authors' box CSVs), or
from the ``annotations.csv`` the synthetic data set writes next to its lesions; only
annotated slices present in the validation folder are scored
(``fnaf_jax.abnormalities``).
"""

import sys

from _study import main


def show(layout, preset, result):
    table = layout.tables / "table4" / "table4.md"
    print(table.read_text() if table.is_file() else f"{table} was not written")


if __name__ == "__main__":
    sys.exit(main(__doc__, ["table4"], show))
