"""The paper's published numbers (SPEC section 7) and the display names of its models.

Cheng, Caliva et al., MIDL 2020, fastMRI knee single-coil validation. A model's *role*
("unet", "robust", "irim") says which of the paper's rows it is compared with.
"""

from __future__ import annotations

MODEL_NAMES = {"unet": "U-Net", "cleanft": "U-Net + clean fine-tune", "robust": "FNAF-robust U-Net",
               "robust_wk": "FNAF-robust U-Net (worst of k)", "irim": "i-RIM",
               "zero-filled": "zero-filled input",
               # the defenses preset's fine-tunes (fnaf train --robust MODE)
               "robust_pgd": "PGD-adversarial U-Net", "jitter": "jittered U-Net",
               "kspace_adv": "k-space adversarial U-Net"}

PUBLISHED = {
    "table1_ssim": {("unet", 4): 0.7213, ("irim", 4): 0.7501, ("robust", 4): 0.7197},
    "table2": {  # attack rate % RS / FD, mean worst loss (RS)
        ("unet", 4): {"rs": 84.44, "fd": 72.17, "loss_rs": 0.001530},
        ("irim", 4): {"rs": 44.49, "fd": 34.60},
        ("robust", 4): {"rs": 12.71, "fd": 10.48, "loss_rs": 0.000483},
        ("unet", 8): {"rs": 86.00, "fd": 74.84},
        ("irim", 8): {"rs": 77.39, "fd": 63.88},
    },
    "table3": {"acceptance_range": (99.3, 99.8), "mean_ip": 5e-4},
    "transfer_unet_to_irim": 89.48,
}

