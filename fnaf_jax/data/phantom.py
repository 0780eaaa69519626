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
    "muscle":     (0.34, 0.30),
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
    out = inside * F32(0.5 / EDGE) + F32(0.5)
    if np.ndim(out) == 0:
        return float(np.clip(out, 0.0, 1.0))
    return np.clip(out, 0.0, 1.0, out=out)


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
    patella_ru: float
    patella_rv: float
    depth_range: tuple    # (t first slice, t last slice)


def draw_shape(rng: np.random.Generator) -> KneeShape:
    u = rng.uniform
    return KneeShape(
        scale=u(0.92, 1.1), angle=np.deg2rad(u(-7, 7)),
        shift=(u(-14, 14), u(-14, 14)), side=float(rng.choice([-1.0, 1.0])),
        leg_half_width=u(118, 136), fat_thickness=u(10, 26),
        condyle_sep=u(42, 49), condyle_ru=u(35, 41), condyle_rv=u(30, 36),
        medial_drop=u(0, 4), shaft_half_width=u(36, 44),
        plateau_half_width=u(76, 86), tibia_shaft=u(30, 38),
        cartilage=u(4.5, 6.5), joint_gap=u(10, 13), notch_width=u(11, 15),
        effusion=u(0, 1), patella_ru=u(34, 42), patella_rv=u(40, 50), depth_range=(u(-0.1, 0.15), u(0.85, 0.98)),
    )


JOINT_REACH = 125.0  # |v| beyond which no small joint structure is drawn
# Each bone is at least this far from the joint line on the other side, so its distance
# field there saturates every ramp: store a large constant instead of computing it.
BONE_REACH = 40.0
FAR = 1e3
# Pixels the bones recede per unit of depth in front of t = 0.05: the femur quickly (the
# patella takes its place), the tibia slowly (its tuberosity reaches further forward).
FEMUR_RECEDE, TIBIA_RECEDE = 900.0, 400.0


@dataclass(frozen=True)
class Frame:
    """Anatomical coordinates of every pixel, and the rows near the joint line."""

    u: np.ndarray
    v: np.ndarray
    abs_u: np.ndarray
    joint: slice       # rows with |v| <= JOINT_REACH somewhere
    femur_rows: slice  # rows with v < BONE_REACH somewhere (the femur lies above)
    tibia_rows: slice  # rows with v > -BONE_REACH somewhere


def _frame(shape: KneeShape, height: int, width: int) -> Frame:
    """Anatomical coordinates (u, v) of every pixel of the height x width grid."""
    rows = np.arange(height, dtype=F32)[:, None] - F32(height / 2 + shape.shift[0])
    cols = np.arange(width, dtype=F32)[None, :] - F32(width / 2 + shape.shift[1])
    c, s = F32(np.cos(shape.angle)), F32(np.sin(shape.angle))
    u = (c * cols + s * rows) / F32(shape.scale) * F32(shape.side)
    v = (-s * cols + c * rows) / F32(shape.scale)
    vmin, vmax = v.min(axis=1), v.max(axis=1)
    return Frame(u, v, np.abs(u), _row_range((vmin <= JOINT_REACH) & (vmax >= -JOINT_REACH)),
                 _row_range(vmin < BONE_REACH), _row_range(vmax > -BONE_REACH))


def _row_range(rows) -> slice:
    near = np.flatnonzero(rows)
    return slice(int(near[0]), int(near[-1]) + 1) if near.size else slice(0, 0)


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
    joint_presence: float  # 0..1: the joint's soft parts fade out in anterior slices


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
    if presence < 0.05:
        femur = condyles
    else:
        width = top_width + flare * np.exp(-(((np.minimum(v - cv, 0.0)) / 75.0) ** 2))
        femur = smin(condyles, smax(np.abs(u) - width, v - cv, 8.0), 10.0)
    # Intercondylar notch: shallow trochlear groove anteriorly, condyles split posteriorly.
    depth = 8.0 + 55.0 * smoothstep((t - 0.1) / 0.6)
    notch = ellipse_sdf(u, v, 0.0, bottom, k.notch_width * (0.7 + 0.6 * t), depth)
    femur = smax(femur, -notch, 3.0)
    # Anterior slices (t < 0.05) graze the front of the femur: it shrinks away.
    femur = femur + FEMUR_RECEDE * max(0.05 - t, 0.0)
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
    tibia = tibia + TIBIA_RECEDE * max(0.05 - t, 0.0)
    return tibia, top


def _patella(k: KneeShape, u, v, t):
    """Patella, in front of the femur: seen in the most anterior slices only."""
    if t > 0.02:
        return None
    size = 0.35 + 0.65 * smoothstep((0.02 - t) / 0.06)
    cv = -k.joint_gap / 2 - k.condyle_rv - 30.0
    return ellipse_sdf(u, v, 0.0, cv, k.patella_ru * size + 0.5, k.patella_rv * size + 0.5)


def _fibula_ellipse(k: KneeShape, t):
    """Centre and radii ``(cu, cv, ru, rv)`` of the fibular head at depth ``t``."""
    size = 0.4 + 0.6 * smoothstep((t - 0.55) / 0.25)
    ru, rv = 17.0 * size + 0.5, 24.0 * size + 0.5
    cv = k.joint_gap / 2 + 45.0
    # Next to the tibia's lateral cortex at that level (the proximal tibiofibular joint).
    half = k.plateau_half_width * (1.0 - 0.12 * t)
    below = cv - k.joint_gap / 2 - 12.0
    tibia_width = k.tibia_shaft + (half - k.tibia_shaft) * np.exp(-((below / 70.0) ** 2))
    return -(tibia_width + 0.6 * ru), cv, ru, rv


def _fibula(k: KneeShape, u, v, t):
    """Fibular head on the lateral side, seen in posterior slices only."""
    if t < 0.55:
        return None
    cu, cv, ru, rv = _fibula_ellipse(k, t)
    return ellipse_sdf(u, v, cu, cv, ru, rv)


def meniscus_wedge(k: KneeShape, u, v, inner, outer, sign):
    """Soft mask of one meniscus: a wedge with its base at ``|u| = outer`` and its apex
    at ``inner`` on the joint line, on the side ``sign`` (+1 medial)."""
    su = sign * u
    frac = np.clip((su - inner) / (outer - inner), 0.0, 1.0)
    half_h = (k.joint_gap / 2 + k.cartilage * 0.3) * frac
    return ramp(half_h - np.abs(v)) * ramp(su - inner) * ramp(outer + 2.0 - su) * ramp(su)


def paint(img, value, alpha):
    """Layer a tissue over ``img`` in place with soft coverage ``alpha``."""
    img += (value - img) * alpha


def render_slice(k: KneeShape, t: float, frame, textures: dict, slice_index: int,
                 fat_suppressed: bool):
    """One magnitude slice over the full grid (peak about 1) and its geometry.

    Leg, fat and bones are drawn on every row; the joint's small structures only on the
    rows ``frame.joint`` near the joint line, which saves about half the work.
    """
    u, v = frame.u, frame.v
    fs = fat_suppressed
    a = frame.abs_u
    mix = slice_index * 0.9
    c, s = F32(np.cos(mix)), F32(np.sin(mix))
    soft = c * textures["soft"][0] + s * textures["soft"][1]
    septa = c * textures["septa"][0] + s * textures["septa"][1]

    # Leg outline and subcutaneous fat (thicker medially).
    leg = k.leg_half_width * (1.0 + 0.0006 * np.clip(-v, -150, 200)) + 1.2 * soft - a
    inside = ramp(leg)
    img = inside * F32(_tissue("muscle", fs)) * (1.0 + 0.06 * soft + 0.04 * septa)
    fat_t = k.fat_thickness * (1.0 + 0.3 * np.tanh(u / 60.0)) + 4.0 * soft
    trab = c * textures["trab"][0] + s * textures["trab"][1]
    fat = F32(_tissue("fat", fs)) * (1.0 + 0.03 * trab)
    paint(img, fat, inside * ramp(fat_t - leg))
    # Intermuscular fat septa (fascial planes) away from the joint.
    paint(img, fat, 0.7 * ramp((0.09 - np.abs(septa)) * 8.0) * ramp(np.abs(v) - 50.0)
          * ramp(leg - fat_t))

    femur, notch_sdf = np.full_like(u, FAR), np.full_like(u, FAR)
    tibia = np.full_like(u, FAR)
    fr, tr = frame.femur_rows, frame.tibia_rows
    femur[fr], notch_sdf[fr], f_bottom, f_cv = _femur(k, u[fr], v[fr], t)
    tibia[tr], t_top = _tibia(k, u[tr], v[tr], t)

    # Joint window views: painting into them paints into img.
    w = frame.joint
    uj, vj, aj, fj, tj, imj = u[w], v[w], a[w], femur[w], tibia[w], img[w]
    # Joint capsule: the space between the bones, inside the condyles' width.
    # Outer margin of the menisci and joint capsule: flush with the narrower of the
    # condyles and the tibial plateau at this depth.
    outer = min(k.condyle_sep + 4.0 * t + k.condyle_ru * (1.0 - 0.18 * t),
                k.plateau_half_width * (1.0 - 0.12 * t)) - 1.0
    # The joint's soft parts fade out in front of the bones (most anterior slices).
    joint_presence = 1.0 - smoothstep((0.05 - t) / 0.08)
    paint(imj, F32(_tissue("joint", fs)), joint_presence * ramp(outer - aj) * ramp(fj) * ramp(tj)
          * ramp(k.joint_gap / 2 + 2.0 - np.abs(vj)))
    # Notch contents above the tibial spines: fat around the cruciate ligaments.
    paint(imj, fat[w] * 0.8, joint_presence * ramp(-notch_sdf[w]) * ramp(fj) * ramp(tj)
          * ramp(-vj - 1.0))

    # Bones: cortex rim, then fatty marrow with trabecular texture.
    marrow = F32(_tissue("marrow", fs))
    cortex = F32(_tissue("cortex", fs))
    textured = marrow * (1.0 + 0.08 * trab)
    cortex_w = 2.0 + 4.5 * smoothstep((np.abs(v) - 50.0) / 90.0)  # thicker on the shafts
    for d in (femur, tibia):
        paint(img, cortex, ramp(-d))
        paint(img, textured, ramp(-d - cortex_w))
    fibula = _fibula(k, uj, vj, t)
    if fibula is not None:
        paint(imj, cortex, ramp(-fibula))
        paint(imj, textured[w], ramp(-fibula - 2.0))
    patella = _patella(k, uj, vj, t)
    if patella is not None:  # where the slice still cuts the femur, the femur wins
        clear = ramp(fj - 3.0)
        paint(imj, cortex, ramp(-patella) * clear)
        paint(imj, textured[w], ramp(-patella - 2.0) * clear)
    # Physeal scars: thin dark lines across the femur and the tibia.
    scar_f = f_cv - 45.0 + 6.0 * np.cos(uj / 40.0)
    scar_t = t_top + 30.0 - 4.0 * np.cos(uj / 35.0)
    paint(imj, marrow * 0.45, band(vj - scar_f, -1.0, 1.0) * ramp(-fj - cortex_w[w]))
    paint(imj, marrow * 0.45, band(vj - scar_t, -1.0, 1.0) * ramp(-tj - cortex_w[w]))

    # Hyaline cartilage on the weight-bearing surfaces (none on the notch walls).
    cart = F32(_tissue("cartilage", fs))
    femoral_art = ramp(vj - f_cv - 10.0) * ramp(aj - k.notch_width * (0.7 + 0.6 * t) - 2.0)
    tibial_art = ramp(t_top + 10.0 - vj) * ramp(aj - 13.0) * ramp(k.plateau_half_width - 4.0 - aj)
    for d, art in ((fj, femoral_art), (tj, tibial_art)):
        # Slightly brighter towards the joint surface (superficial zone).
        paint(imj, cart * (0.8 + 0.35 * np.clip(d / k.cartilage, 0, 1)),
              band(d, 0.0, k.cartilage) * art)

    # The joint line: a thin dark seam where the two cartilage surfaces meet.
    paint(imj, F32(_tissue("joint", fs)), 0.7 * joint_presence * ramp(0.6 - np.abs(fj - tj))
          * ramp(k.cartilage + 1.5 - fj) * ramp(outer - aj))

    # Joint fluid: thin bright rim in the gutters beside the condyles (effusion varies).
    paint(imj, F32(_tissue("fluid", fs)),
          band(fj, 0.0, 1.0 + 2.0 * k.effusion) * ramp(aj - k.condyle_sep - 20.0)
          * ramp(vj - f_cv + 5.0 + 20.0 * k.effusion) * ramp(f_bottom - 8.0 - vj))

    # Menisci: dark wedges, base at the joint margin, apex pointing inwards. Posterior
    # horns (large t) reach further in, medially more than laterally.
    menisci = []
    for sign, reach in ((1.0, 0.55), (-1.0, 0.4)):
        depth_gain = smoothstep((t - 0.45) / 0.4) * reach + 0.15 * (1.0 - t)
        inner = outer - (18.0 + 45.0 * depth_gain)
        paint(imj, F32(_tissue("meniscus", fs)) * (1.0 + 0.3 * trab[w]),
              joint_presence * meniscus_wedge(k, uj, vj, inner, outer, sign))
        menisci.append((inner, outer, sign))

    # Collateral ligaments: MCL along the medial side, LCL towards the fibular head.
    lig = F32(_tissue("ligament", fs))
    # The MCL hugs the medial side of both bones, a few pixels out, thickest at the joint.
    bone = np.minimum(fj, tj)
    mcl = band(bone, 1.5, 4.5 + 1.5 * ramp(12.0 - np.abs(vj))) * ramp(uj - outer + 10.0) \
        * band(vj, -50.0, 60.0)
    paint(imj, lig, mcl * (1.0 - smoothstep((t - 0.7) / 0.2)))
    fib_u, fib_v, _, fib_rv = _fibula_ellipse(k, t)
    lcl = segment_sdf(uj, vj, (-(outer + 3.0), -45.0), (fib_u, fib_v - 0.8 * fib_rv), 2.0)
    paint(imj, lig, ramp(-lcl) * smoothstep((t - 0.35) / 0.2))
    # Cruciates inside the notch: ACL in anterior-mid slices, PCL further back.
    if 0.2 < t < 0.62:
        acl = segment_sdf(uj, vj, (-k.notch_width * 0.6, f_bottom - 30.0), (3.0, t_top - 4.0), 3.0)
        paint(imj, lig, ramp(-acl) * band(t, 0.22, 0.6) * ramp(fj))
    if 0.48 < t < 0.87:
        pcl = segment_sdf(uj, vj, (k.notch_width * 0.7, f_bottom - 28.0), (-2.0, t_top + 6.0), 3.5)
        paint(imj, lig, ramp(-pcl) * band(t, 0.5, 0.85) * ramp(fj) * ramp(tj + 2.0))

    # Popliteal artery (flow void) and vein behind the joint, in posterior slices.
    if t > 0.72:
        vessel_size = smoothstep((t - 0.72) / 0.1)
        artery = ellipse_sdf(uj, vj, 4.0, f_bottom - 62.0, 4.5 * vessel_size + 0.1, 4.5 * vessel_size + 0.1)
        vein = ellipse_sdf(uj, vj, -9.0, f_bottom - 58.0, 6.0 * vessel_size + 0.1, 5.0 * vessel_size + 0.1)
        paint(imj, F32(_tissue("fluid", fs)) * 0.8, ramp(-vein) * ramp(fj))
        paint(imj, F32(0.03), ramp(-artery) * ramp(fj))

    np.maximum(img, 0.0, out=img)
    geom = SliceGeometry(u, v, femur, tibia, f_bottom, t_top, menisci, t, joint_presence)
    return img, geom


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
        if return_geometry:  # two full-size distance fields per slice: keep only on request
            geoms.append(g)
    if return_geometry:
        return out, geoms, k
    return out


# --------------------------------------------------------------------------- lesions
# Labels as written in fastMRI+ knee.csv.
CARTILAGE_PARTIAL = "Cartilage - Partial Thickness loss/defect"
CARTILAGE_FULL = "Cartilage - Full Thickness loss/defect"
MENISCUS_TEAR = "Meniscus Tear"
MARROW_EDEMA = "Bone- Subchondral edema"


@dataclass(frozen=True)
class Lesion:
    """A planted lesion: slice index, fastMRI+ label and its bounding box as half-open
    array ranges of the full height x width grid (every pixel it changed lies inside)."""

    slice: int
    label: str
    rows: tuple
    cols: tuple


def _cartilage_defect(rng, k, g, fs):
    on_femur = rng.random() < 0.5
    sign = float(rng.choice([-1.0, 1.0]))
    u0 = sign * (k.condyle_sep + rng.uniform(-12.0, 12.0))
    half_w = rng.uniform(2.5, 6.0)
    full = rng.random() < 0.35
    depth = 1.0 if full else rng.uniform(0.4, 0.7)
    u, v = g.u, g.v
    if on_femur:
        d, window = g.femur, band(v, g.femur_bottom - 25.0, g.femur_bottom + 4.0)
    else:
        d, window = g.tibia, band(v, g.tibia_top - 14.0, g.tibia_top + 12.0)
    # The outer part of the cartilage layer (the part facing the joint) is replaced by
    # fluid; a full-thickness defect reaches the bone.
    layer = band(d, k.cartilage * (1.0 - depth), k.cartilage + 0.6)
    alpha = layer * window * ramp(half_w - np.abs(u - u0))
    return alpha, F32(_tissue("fluid", fs)), CARTILAGE_FULL if full else CARTILAGE_PARTIAL


def _meniscal_tear(rng, k, g, fs):
    inner, outer, sign = g.menisci[int(rng.integers(len(g.menisci)))]
    if g.joint_presence < 0.5:
        return None  # hardly any meniscus in this slice
    u, v = g.u, g.v
    wedge = g.joint_presence * meniscus_wedge(k, u, v, inner, outer, sign)
    half_h = k.joint_gap / 2 + k.cartilage * 0.3
    start = (inner + (outer - inner) * rng.uniform(0.15, 0.4), rng.uniform(-1.0, 1.0))
    end = (outer - rng.uniform(1.0, 6.0), rng.choice([-1.0, 1.0]) * half_h * rng.uniform(0.2, 0.9))
    line = segment_sdf(sign * u, v, start, end, rng.uniform(0.7, 1.2))
    alpha = ramp(-line) * wedge
    return alpha, F32(_tissue("fluid", fs) * 0.9), MENISCUS_TEAR


def _marrow_edema(rng, k, g, fs):
    on_femur = rng.random() < 0.5
    sign = float(rng.choice([-1.0, 1.0]))
    u0 = sign * (k.condyle_sep + rng.uniform(-15.0, 10.0))
    u, v = g.u, g.v
    d = g.femur if on_femur else g.tibia
    column = (np.abs(u - u0) < 1.5) & (d < 0)
    if on_femur:
        column &= v > g.femur_bottom - 45.0
        rows = v[column]
        if rows.size == 0:
            return None
        v0 = float(rows.max()) - rng.uniform(6.0, 14.0)
    else:
        column &= v < g.tibia_top + 40.0
        rows = v[column]
        if rows.size == 0:
            return None
        v0 = float(rows.min()) + rng.uniform(6.0, 14.0)
    blob = ellipse_sdf(u, v, u0, v0, rng.uniform(7.0, 15.0), rng.uniform(5.0, 11.0))
    # Stays inside the marrow (edema does not cross the cortex); fades towards its edge.
    # Ill-defined: the signal change fades from the centre to the edge.
    alpha = ramp(-blob) * ramp(-d - 3.0) * np.clip(-blob / 7.0, 0.15, 1.0)
    value = F32(0.65 if fs else 0.4)
    return alpha, value, MARROW_EDEMA


_LESION_MAKERS = (_cartilage_defect, _meniscal_tear, _marrow_edema)


def plant_lesions(rng: np.random.Generator, images: np.ndarray, geoms: list, k: KneeShape,
                  fat_suppressed: bool, region: tuple, probability: float = 0.4) -> list:
    """Paint lesions into ``images`` (in place) on some slices; returns ``Lesion`` boxes.

    ``region = (top, left, height, width)``: lesions whose box does not lie inside it
    (the reconstruction crop) are dropped. Each slice gets a lesion with
    ``probability``, and a second one with half that.
    """
    top, left, rh, rw = region
    out = []
    for index, g in enumerate(geoms):
        count = int(rng.random() < probability)
        count += int(count and rng.random() < probability / 2)
        for _ in range(count):
            made = _LESION_MAKERS[int(rng.integers(len(_LESION_MAKERS)))](rng, k, g,
                                                                          fat_suppressed)
            if made is None:
                continue
            alpha, value, label = made
            rows = np.flatnonzero(alpha.max(axis=1) > 0)
            cols = np.flatnonzero(alpha.max(axis=0) > 0)
            if rows.size == 0 or alpha.max() < 0.5:
                continue
            box_r = (int(rows[0]), int(rows[-1]) + 1)
            box_c = (int(cols[0]), int(cols[-1]) + 1)
            if box_r[0] < top or box_r[1] > top + rh or box_c[0] < left or box_c[1] > left + rw:
                continue
            img = images[index]
            img += (value - img) * alpha
            out.append(Lesion(index, label, box_r, box_c))
    return out
