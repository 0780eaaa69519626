"""Coronal knee anatomy for the synthetic data set (magnitude images, no MRI physics).

The knee is drawn from approximate signed distance functions (negative inside) in an
anatomical frame ``(u, v)``: ``u`` across the knee (positive = medial), ``v`` down the leg
(0 = joint line), in pixels of the 320x320 reconstruction at scale 1. Each volume draws
its own size, angle, position and side (left/right knee); each slice has a depth ``t``
(0 = anterior, 1 = posterior) that moves the intercondylar notch, menisci, cruciate
ligaments and fibula, so the condyles change through the volume. Tissues are painted in
layers with a one-pixel soft edge (partial volume). Intensities follow proton density
contrast; with fat suppression fat and fatty marrow go dark and fluid is the brightest.

Everything is vectorized numpy in float32 over the full 640 x W field of view, one slice
at a time; textures (trabecular bone, muscle, fat septa) are band-pass filtered noise
made once per volume and mixed differently for each slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

F32 = np.float32
EDGE = 0.8  # half-width of the partial-volume ramp, in pixels

# Relative signal of each tissue: proton density (PD) and PD with fat suppression (FS).
TISSUE = {
    #               PD     FS
    "muscle":     (0.34, 0.40),
    "fat":        (1.00, 0.09),
    "marrow":     (0.80, 0.13),
    "cortex":     (0.05, 0.04),
    "cartilage":  (0.60, 0.62),
    "fluid":      (0.70, 1.00),
    "meniscus":   (0.06, 0.07),
    "ligament":   (0.08, 0.09),
    "joint":      (0.20, 0.25),
}


def _tissue(name: str, fat_suppressed: bool) -> float:
    return TISSUE[name][1 if fat_suppressed else 0]


def ramp(inside):
    """Soft indicator of ``inside > 0`` with a linear partial-volume edge."""
    return np.clip(inside * (0.5 / EDGE) + 0.5, 0.0, 1.0)


def band(d, lo, hi):
    """Soft indicator of ``lo < d < hi``."""
    return ramp(d - lo) * ramp(hi - d)


def smin(a, b, k):
    """Smooth union of two distance fields (polynomial smooth minimum, blend width k)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def smax(a, b, k):
    """Smooth intersection of two distance fields."""
    return -smin(-a, -b, k)


def ellipse_sdf(u, v, cu, cv, ru, rv):
    """Approximate signed distance to an ellipse (first-order, good near the boundary)."""
    x, y = (u - cu) / ru, (v - cv) / rv
    r = np.sqrt(x * x + y * y) + F32(1e-6)
    grad = np.sqrt((x / ru) ** 2 + (y / rv) ** 2) / r + F32(1e-6)
    return (r - 1.0) / grad


def segment_sdf(u, v, a, b, half_width):
    """Distance to a thick line segment from point ``a`` to ``b`` (capsule)."""
    au, av = a
    du, dv = b[0] - au, b[1] - av
    h = np.clip(((u - au) * du + (v - av) * dv) / (du * du + dv * dv), 0.0, 1.0)
    return np.sqrt((u - au - h * du) ** 2 + (v - av - h * dv) ** 2) - half_width


def smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def bandpass_noise(rng, shape, wavelength, count):
    """``count`` zero-mean, unit-std random fields with features of about ``wavelength``
    pixels (Gaussian ring filter on white noise)."""
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f0 = 1.0 / wavelength
    filt = np.exp(-0.5 * ((f - f0) / (0.45 * f0)) ** 2)
    white = rng.standard_normal((count, h, w))
    out = np.fft.irfft2(np.fft.rfft2(white) * filt, s=(h, w))
    out /= out.std(axis=(-2, -1), keepdims=True) + 1e-12
    return out.astype(F32)


def stretched_noise(rng, shape, wavelength, stretch, count):
    """Like ``bandpass_noise`` with features ``stretch`` times longer along the rows, so
    its zero lines run mostly up and down the leg (fascial planes between muscles)."""
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None] * stretch
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    filt = np.exp(-0.5 * (f * wavelength) ** 2)
    white = rng.standard_normal((count, h, w))
    out = np.fft.irfft2(np.fft.rfft2(white) * filt, s=(h, w))
    out /= out.std(axis=(-2, -1), keepdims=True) + 1e-12
    return out.astype(F32)


@dataclass(frozen=True)
class KneeShape:
    """Per-volume anatomy: sizes in pixels of the 320 crop at scale 1."""

    scale: float          # overall size
    angle: float          # in-plane rotation (radians)
    shift: tuple          # (rows, cols) offset of the joint centre from the FOV centre
    side: float           # +1 or -1: which image side is medial (left or right knee)
    leg_half_width: float
    fat_thickness: float
    condyle_sep: float    # half distance between condyle centres
    condyle_ru: float
    condyle_rv: float
    medial_drop: float    # medial condyle sits a little lower
    shaft_half_width: float
    plateau_half_width: float
    tibia_shaft: float
    cartilage: float      # thickness
    joint_gap: float      # bone-to-bone distance at the joint line
    notch_width: float
    effusion: float       # amount of joint fluid, 0..1
    depth_range: tuple    # (t first slice, t last slice)


def draw_shape(rng: np.random.Generator) -> KneeShape:
    u = rng.uniform
    return KneeShape(
        scale=u(0.88, 1.08), angle=np.deg2rad(u(-7, 7)),
        shift=(u(-14, 14), u(-14, 14)), side=float(rng.choice([-1.0, 1.0])),
        leg_half_width=u(118, 138), fat_thickness=u(10, 20),
        condyle_sep=u(40, 47), condyle_ru=u(34, 40), condyle_rv=u(30, 36),
        medial_drop=u(0, 4), shaft_half_width=u(36, 44),
        plateau_half_width=u(76, 86), tibia_shaft=u(30, 38),
        cartilage=u(4.5, 6.5), joint_gap=u(10, 13), notch_width=u(11, 15),
        effusion=u(0, 1), depth_range=(u(0.05, 0.2), u(0.85, 0.98)),
    )


def _frame(shape: KneeShape, height: int, width: int):
    """Anatomical coordinates (u, v) of every pixel of the height x width grid."""
    rows = np.arange(height, dtype=F32)[:, None] - F32(height / 2 + shape.shift[0])
    cols = np.arange(width, dtype=F32)[None, :] - F32(width / 2 + shape.shift[1])
    c, s = F32(np.cos(shape.angle)), F32(np.sin(shape.angle))
    u = (c * cols + s * rows) / F32(shape.scale) * F32(shape.side)
    v = (-s * cols + c * rows) / F32(shape.scale)
    return u, v


@dataclass
class SliceGeometry:
    """Distance fields of one slice, kept for lesion placement."""

    u: np.ndarray
    v: np.ndarray
    femur: np.ndarray
    tibia: np.ndarray
    femur_bottom: float   # v of the condyles' lowest bone
    tibia_top: float      # v of the plateau bone
    menisci: list         # (inner |u|, outer |u|, side sign) per meniscus
    t: float


def _femur(k: KneeShape, u, v, t):
    """Distal femur: shaft flaring into two condyles, notch deepening posteriorly."""
    bottom = -k.joint_gap / 2
    sep = k.condyle_sep + 4.0 * t
    ru = k.condyle_ru * (1.0 - 0.18 * t)
    rv = k.condyle_rv * (1.0 - 0.12 * t)
    cv = bottom - rv
    med = ellipse_sdf(u, v, sep, cv + k.medial_drop, ru * 1.04, rv)
    lat = ellipse_sdf(u, v, -sep, cv, ru, rv)
    condyles = smin(med, lat, 6.0)
    # Metaphysis: bone above the condyle centres, widest just above them; it thins out
    # in posterior slices, where only the two posterior condyles are cut.
    presence = 1.0 - smoothstep((t - 0.55) / 0.25)
    top_width = k.shaft_half_width * presence + 1e-3
    flare = (sep + ru * 0.9 - top_width) * presence
    width = top_width + flare * np.exp(-(((np.minimum(v - cv, 0.0)) / 75.0) ** 2))
    meta = smax(np.abs(u) - width, v - cv, 8.0)
    if presence < 0.05:
        meta = np.full_like(u, 1e3)
    femur = smin(condyles, meta, 10.0)
    # Intercondylar notch: shallow trochlear groove anteriorly, condyles split posteriorly.
    depth = 8.0 + 55.0 * smoothstep((t - 0.1) / 0.6)
    notch = ellipse_sdf(u, v, 0.0, bottom, k.notch_width * (0.7 + 0.6 * t), depth)
    femur = smax(femur, -notch, 3.0)
    return femur, notch, bottom, cv


def _tibia(k: KneeShape, u, v, t):
    """Proximal tibia: plateau with shallow concavities and the two tibial spines."""
    top = k.joint_gap / 2
    a = np.abs(u)
    half = k.plateau_half_width * (1.0 - 0.12 * t)
    surface = top + 2.5 * np.exp(-(((a - 0.5 * half) / (0.3 * half)) ** 2))
    spines = 9.0 * np.exp(-(((a - 6.0) / 5.0) ** 2)) * (1.0 - 0.7 * t)
    surface = surface - spines
    below = np.maximum(v - top - 12.0, 0.0)
    width = k.tibia_shaft + (half - k.tibia_shaft) * np.exp(-((below / 70.0) ** 2))
    tibia = smax(surface - v, a - width, 7.0)
    return tibia, top


def _fibula(k: KneeShape, u, v, t):
    """Fibular head on the lateral side, seen in posterior slices only."""
    size = smoothstep((t - 0.5) / 0.25)
    if size <= 0.0:
        return None
    cu = -(k.plateau_half_width * 0.78)
    cv = k.joint_gap / 2 + 45.0
    return ellipse_sdf(u, v, cu, cv, 17.0 * size + 0.5, 24.0 * size + 0.5)


def render_slice(k: KneeShape, t: float, frame, textures: dict, slice_index: int,
                 fat_suppressed: bool):
    """One magnitude slice over the full grid (peak about 1) and its geometry."""
    u, v = frame
    fs = fat_suppressed
    a = np.abs(u)
    mix = slice_index * 0.9
    c, s = F32(np.cos(mix)), F32(np.sin(mix))
    trab = c * textures["trab"][0] + s * textures["trab"][1]
    soft = c * textures["soft"][0] + s * textures["soft"][1]
    septa = c * textures["septa"][0] + s * textures["septa"][1]

    # Leg outline and subcutaneous fat (thicker medially and above the joint).
    half = k.leg_half_width * (1.0 + 0.0006 * np.clip(-v, -150, 200)) + 1.2 * soft
    leg = half - a
    img = ramp(leg) * F32(_tissue("muscle", fs)) * (1.0 + 0.06 * soft)
    fat_t = k.fat_thickness * (1.0 + 0.25 * np.tanh(u / 60.0)) + 1.5 * soft
    img = img + (F32(_tissue("fat", fs)) - img) * (ramp(leg) * ramp(fat_t - leg))
    # Intermuscular fat septa away from the joint.
    septa_alpha = 0.7 * ramp((0.09 - np.abs(septa)) * 8.0) * ramp(np.abs(v) - 50.0) * ramp(leg - fat_t)
    img = img + (F32(_tissue("fat", fs)) - img) * septa_alpha

    femur, notch_sdf, f_bottom, f_cv = _femur(k, u, v, t)
    tibia, t_top = _tibia(k, u, v, t)
    fibula = _fibula(k, u, v, t)

    # Joint capsule: the space between the bones, inside the condyles' width.
    capsule_w = k.condyle_sep + k.condyle_ru * 0.95
    capsule = ramp(capsule_w - a) * ramp(femur) * ramp(tibia) \
        * ramp(k.joint_gap / 2 + 6.0 - np.abs(v))
    img = img + (F32(_tissue("joint", fs)) - img) * capsule
    # Notch contents above the tibial spines: fat with the cruciate ligaments.
    notch = ramp(-notch_sdf) * ramp(femur) * ramp(tibia) * ramp(-v - 1.0)
    img = img + (F32(_tissue("fat", fs)) * 0.8 - img) * notch

    # Bones: cortex rim, fatty marrow with trabecular texture and a physeal scar line.
    marrow = F32(_tissue("marrow", fs)) * (1.0 + 0.08 * trab)
    bones = [(femur, f_cv - 45.0 + 6.0 * np.cos(u / 40.0)), (tibia, t_top + 30.0 - 4.0 * np.cos(u / 35.0))]
    if fibula is not None:
        bones.append((fibula, None))
    for d, scar in bones:
        cortex_w = 2.2 + 1.6 * ramp(np.abs(v) - 60.0)
        img = img + (F32(_tissue("cortex", fs)) - img) * ramp(-d)
        inner = marrow
        if scar is not None:
            inner = marrow * (1.0 - 0.55 * band(v - scar, -1.0, 1.0))
        img = img + (inner - img) * ramp(-d - cortex_w)

    # Hyaline cartilage on the weight-bearing surfaces (none on the notch walls).
    cart = F32(_tissue("cartilage", fs))
    femoral_art = ramp(v - f_cv - 10.0) * ramp(a - k.notch_width * (0.7 + 0.6 * t) - 2.0)
    tibial_art = ramp(t_top + 10.0 - v) * ramp(a - 13.0) * ramp(k.plateau_half_width - 4.0 - a)
    for d, art in ((femur, femoral_art), (tibia, tibial_art)):
        layer = band(d, 0.0, k.cartilage) * art
        img = img + (cart * (0.8 + 0.35 * np.clip(d / k.cartilage, 0, 1)) - img) * layer

    # Joint fluid: thin bright rim in the gutters beside the condyles (effusion varies).
    gutter = band(femur, 0.0, 1.0 + 2.0 * k.effusion) * ramp(a - k.condyle_sep - 20.0) \
        * ramp(v - f_cv + 5.0 + 20.0 * k.effusion) * ramp(f_bottom - 8.0 - v)
    img = img + (F32(_tissue("fluid", fs)) - img) * gutter

    # Menisci: dark wedges, base at the joint margin, apex pointing inwards. Posterior
    # horns (large t) reach further in, medially more than laterally.
    menisci = []
    outer = k.condyle_sep + k.condyle_ru * 0.95
    for sign, reach in ((1.0, 0.55), (-1.0, 0.4)):
        depth_gain = smoothstep((t - 0.45) / 0.4) * reach + 0.15 * (1.0 - t)
        inner = outer - (18.0 + 45.0 * depth_gain)
        side = ramp(sign * u)
        su = sign * u
        frac = np.clip((su - inner) / (outer - inner), 0.0, 1.0)
        half_h = (k.joint_gap / 2 + k.cartilage * 0.6) * frac
        wedge = ramp(half_h - np.abs(v)) * ramp(su - inner) * ramp(outer + 2.0 - su) * side
        img = img + (F32(_tissue("meniscus", fs)) * (1.0 + 0.3 * trab) - img) * wedge
        menisci.append((inner, outer, sign))

    # Collateral ligaments: MCL along the medial side, LCL towards the fibular head.
    lig = F32(_tissue("ligament", fs))
    mcl_u = outer + 4.0
    mcl = segment_sdf(u, v, (mcl_u + 1.0, -50.0), (mcl_u - 7.0, 55.0), 2.2)
    img = img + (lig - img) * ramp(-mcl) * (1.0 - smoothstep((t - 0.7) / 0.2))
    lcl = segment_sdf(u, v, (-(outer + 2.0), -45.0), (-(k.plateau_half_width * 0.82), 30.0), 2.0)
    img = img + (lig - img) * ramp(-lcl) * smoothstep((t - 0.35) / 0.2)
    # Cruciates inside the notch: ACL in anterior-mid slices, PCL further back.
    acl = segment_sdf(u, v, (-k.notch_width * 0.6, f_bottom - 30.0), (3.0, t_top - 4.0), 3.0)
    pcl = segment_sdf(u, v, (k.notch_width * 0.7, f_bottom - 28.0), (-2.0, t_top + 6.0), 3.5)
    img = img + (lig - img) * ramp(-acl) * band(t, 0.22, 0.6) * ramp(femur)
    img = img + (lig - img) * ramp(-pcl) * band(t, 0.5, 0.85) * ramp(femur) * ramp(tibia + 2.0)

    geom = SliceGeometry(u, v, femur, tibia, f_bottom, t_top, menisci, t)
    return np.clip(img, 0.0, None).astype(F32), geom


def make_textures(rng: np.random.Generator, height: int, width: int) -> dict:
    return {
        "trab": bandpass_noise(rng, (height, width), 4.0, 2),
        "soft": bandpass_noise(rng, (height, width), 40.0, 2),
        "septa": stretched_noise(rng, (height, width), 60.0, 3.0, 2),
    }


def slice_depths(k: KneeShape, n_slices: int) -> np.ndarray:
    t0, t1 = k.depth_range
    return np.linspace(t0, t1, n_slices) if n_slices > 1 else np.array([(t0 + t1) / 2])


def knee_volume(rng: np.random.Generator, n_slices: int, height: int, width: int,
                fat_suppressed: bool, return_geometry: bool = False):
    """Magnitude images (n_slices, height, width) float32, peak about 1.

    With ``return_geometry`` also returns the per-slice ``SliceGeometry`` list (used to
    place lesions) and the ``KneeShape``.
    """
    k = draw_shape(rng)
    textures = make_textures(rng, height, width)
    frame = _frame(k, height, width)
    out = np.empty((n_slices, height, width), F32)
    geoms = []
    for i, t in enumerate(slice_depths(k, n_slices)):
        out[i], g = render_slice(k, float(t), frame, textures, i, fat_suppressed)
        geoms.append(g)
    if return_geometry:
        return out, geoms, k
    return out
