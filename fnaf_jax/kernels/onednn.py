"""oneDNN convolutions for XLA's CPU backend, differentiable, as custom calls: ``conv_same``
(stride 1, "same" size) and ``conv_transpose`` (stride = kernel size: the U-Net's 2x2
up-sampling); and the native CPU kernel library they live in (``call`` runs any of its
handlers, ``fnaf_jax.kernels.norm`` uses it too).

Why: on a CPU, XLA's convolution weight gradient runs 3-5x slower than oneDNN's (the
library PyTorch calls), which held the U-Net train step at 0.46-0.50x PyTorch, and its
transposed-convolution gradient goes through a slow layout copy. Routing them through
oneDNN (``onednn_conv.cc``, XLA FFI handlers) brings the train step level with PyTorch;
see docs/performance.md.

The library (``SOURCES``) is compiled on first use with the system C++ compiler against
the installed jaxlib's FFI headers and the ``onednn-cpu-gomp`` wheels, into
``$FNAF_KERNEL_CACHE`` (default ``~/.cache/fnaf-jax/kernels``), keyed by the sources, the
library versions and the compiler.

``FNAF_CPU_CONV`` chooses for every native kernel: ``auto`` (default: the kernels when the
backend is a single CPU device and the library builds, else XLA), ``onednn`` (the same,
but a library that cannot be built is an error rather than a silent fallback) or ``xla``
(never). Multi-device runs keep XLA's operations, which the SPMD partitioner can split; a
custom call would be replicated onto every device.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

from fnaf_jax.errors import ConfigError

MODE_ENV = "FNAF_CPU_CONV"
CACHE_ENV = "FNAF_KERNEL_CACHE"
MODES = ("auto", "onednn", "xla")
SOURCES = tuple(Path(__file__).with_name(name) for name in ("onednn_conv.cc", "instance_norm.cc"))
#: every handler of the library, by the name ``call`` takes
TARGETS = {
    "forward": "FnafOnednnConvForward",
    "backward_data": "FnafOnednnConvBackwardData",
    "backward_weights": "FnafOnednnConvBackwardWeights",
    "transpose_forward": "FnafOnednnConvTransposeForward",
    "transpose_backward_data": "FnafOnednnConvTransposeBackwardData",
    "transpose_backward_weights": "FnafOnednnConvTransposeBackwardWeights",
    "norm_forward": "FnafInstanceNormLeakyForward",
    "norm_backward": "FnafInstanceNormLeakyBackward",
}
WEIGHT_LAYOUTS = ("HWIO", "OIHW")


class KernelUnavailable(RuntimeError):
    """The oneDNN kernel cannot be built or loaded here (the reason is the message)."""


def mode() -> str:
    value = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ConfigError(f"{MODE_ENV}={value!r}: expected one of {', '.join(MODES)}")
    return value


def _distribution_file(dist: str, name: str) -> Path:
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        raise KernelUnavailable(f"the {dist} package is not installed") from None
    for f in files:
        if f.name == name:
            return Path(f.locate()).resolve()
    raise KernelUnavailable(f"{name} is missing from the {dist} package")


def _build_inputs() -> dict:
    lib = _distribution_file("onednn-cpu-gomp", "libdnnl.so.3")
    header = _distribution_file("onednn-devel-cpu-gomp", "dnnl.hpp")
    include = header.parent.parent if header.parent.name == "dnnl" else header.parent
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise KernelUnavailable("no C++ compiler (g++ or $CXX) on PATH")
    return {"lib": lib, "include": include, "compiler": compiler}


def _cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fnaf-jax" / "kernels")


def _build(inputs: dict) -> Path:
    """The compiled handler library, built once per sources and library versions."""
    key = hashlib.sha256()
    for part in (*(src.read_bytes() for src in SOURCES), importlib.metadata.version("jaxlib").encode(),
                 str(inputs["lib"]).encode(), inputs["compiler"].encode()):
        key.update(part)
    out = _cache_dir() / f"onednn_conv-{key.hexdigest()[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    # -O3 -fopenmp: the norm kernel's loops are vectorised and run on oneDNN's OpenMP threads
    cmd = [inputs["compiler"], "-O3", "-fopenmp", "-shared", "-fPIC", "-std=c++17", "-w",
           f"-I{jax.ffi.include_dir()}", f"-I{inputs['include']}", *map(str, SOURCES), "-o", tmp,
           f"-L{inputs['lib'].parent}", f"-l:{inputs['lib'].name}",
           f"-Wl,-rpath,{inputs['lib'].parent}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
            # the compiler's first error names the cause; its last line is often a caret
            first_error = next((line.strip() for line in lines if "error" in line), lines[-1].strip())
            raise KernelUnavailable(f"compiling {', '.join(src.name for src in SOURCES)} failed: {first_error}")
        os.replace(tmp, out)  # atomic: concurrent builders each install a whole file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


@functools.cache
def _load() -> ctypes.CDLL:
    lib = ctypes.cdll.LoadLibrary(str(_build(_build_inputs())))
    for symbol in TARGETS.values():
        jax.ffi.register_ffi_target(symbol, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    return lib


def unavailable_reason() -> str | None:
    """Why the kernel cannot be used here, or None when it can be built and loaded."""
    try:
        _load()
    except (KernelUnavailable, OSError) as e:
        return str(e)
    return None


def enabled() -> bool:
    """Whether convolutions traced now should take the oneDNN path (see the module doc)."""
    chosen = mode()
    if chosen == "xla" or jax.default_backend() != "cpu" or jax.device_count() != 1:
        return False
    reason = unavailable_reason()
    if reason is not None and chosen == "onednn":
        raise ConfigError(f"{MODE_ENV}=onednn: {reason}")
    return reason is None


def path() -> str:
    """The convolution path traced now, for reports: ``"oneDNN"`` or ``"XLA"``."""
    return "oneDNN" if enabled() else "XLA"


#: fewer input channels than this stay on XLA: oneDNN's NHWC kernels are slow on thin
#: inputs (the U-Net's first layer, 1 -> 32 at 320x320: 19 ms forward against XLA's 2.7)
MIN_IN_CHANNELS = 8


def use_for(x, in_channels: int) -> bool:
    """Whether a stride-1 'same' convolution of ``x`` should take the oneDNN path."""
    return (x.ndim == 4 and x.dtype == jnp.float32 and in_channels >= MIN_IN_CHANNELS
            and enabled())


def call(target: str, out_shapes, *args, **attrs):
    """Run the library's handler ``target`` (a key of ``TARGETS``) on float32 ``args``;
    ``out_shapes`` is one shape, or a list of shapes for several results."""
    _load()  # registers the handlers in this process (a cached executable needs them too)
    results = (jax.ShapeDtypeStruct(out_shapes, jnp.float32) if isinstance(out_shapes, tuple)
               else [jax.ShapeDtypeStruct(s, jnp.float32) for s in out_shapes])
    # sequential: vmap runs one call per batch element; the models never vmap these ops
    return jax.ffi.ffi_call(TARGETS[target], results, vmap_method="sequential")(*args, **attrs)


def _call(target: str, out_shape, layout: str, *args):
    return call(target, out_shape, *args, oihw=int(layout == "OIHW"))


def _weight_dims(w, layout: str) -> tuple[int, int, int, int]:
    """(kernel height, kernel width, in channels, out channels) of HWIO or OIHW weights."""
    if layout == "HWIO":
        return w.shape[0], w.shape[1], w.shape[2], w.shape[3]
    return w.shape[2], w.shape[3], w.shape[1], w.shape[0]


def _forward(x, w, layout):
    return _call("forward", x.shape[:3] + (_weight_dims(w, layout)[3],), layout, x, w)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, layout):
    return _forward(x, w, layout)


def _conv_fwd(x, w, layout):
    return _forward(x, w, layout), (x, w)


def _conv_bwd(layout, residuals, g):
    x, w = residuals
    dx = _call("backward_data", x.shape, layout, g, w)
    dw = _call("backward_weights", w.shape, layout, x, g)
    return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_same(x, w, weight_layout: str = "HWIO"):
    """Stride-1 convolution of NHWC float32 ``x`` with zero padding ``kernel // 2`` per side.

    ``w`` is HWIO (Flax) or OIHW (PyTorch) by ``weight_layout``; kernels must be odd-sized
    so that the output keeps the input's height and width. Differentiable in both
    arguments (oneDNN's backward-data and backward-weights).
    """
    if weight_layout not in WEIGHT_LAYOUTS:
        raise ValueError(f"weight_layout must be one of {WEIGHT_LAYOUTS}, got {weight_layout!r}")
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv_same: NHWC input and odd 2-D kernel expected, got {x.shape}, {w.shape}")
    kh, kw, ci, _ = _weight_dims(w, weight_layout)
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"conv_same: NHWC input and odd 2-D kernel expected, got {x.shape}, {w.shape}")
    if ci != x.shape[3]:
        raise ValueError(f"conv_same: {x.shape[3]} input channels against weights {w.shape}")
    if x.dtype != jnp.float32 or w.dtype != jnp.float32:
        raise ValueError(f"conv_same: float32 only, got {x.dtype} and {w.dtype}")
    return _conv(x, w, weight_layout)


def _transpose_forward(x, w):
    n, h, wd, _ = x.shape
    kh, kw, _, co = w.shape
    return _call("transpose_forward", (n, h * kh, wd * kw, co), "HWIO", x, w)


@jax.custom_vjp
def _transposed(x, w):
    return _transpose_forward(x, w)


def _transposed_fwd(x, w):
    return _transpose_forward(x, w), (x, w)


def _transposed_bwd(residuals, g):
    x, w = residuals
    return (_call("transpose_backward_data", x.shape, "HWIO", g, w),
            _call("transpose_backward_weights", w.shape, "HWIO", x, g))


_transposed.defvjp(_transposed_fwd, _transposed_bwd)


def conv_transpose(x, w):
    """Transposed convolution of NHWC float32 ``x`` whose stride equals the kernel size,
    without padding (PyTorch's ``ConvTranspose2d(kernel_size=k, stride=k)``):
    ``out[k*i+a, k*j+b, o] = sum_c x[i, j, c] * w[a, b, c, o]``; ``w`` is HWIO with I the
    input channels. Differentiable in both arguments."""
    if x.ndim != 4 or w.ndim != 4 or w.shape[2] != x.shape[3]:
        raise ValueError(f"conv_transpose: NHWC input and (kh, kw, in, out) kernel expected, "
                         f"got {x.shape}, {w.shape}")
    if x.dtype != jnp.float32 or w.dtype != jnp.float32:
        raise ValueError(f"conv_transpose: float32 only, got {x.dtype} and {w.dtype}")
    return _transposed(x, w)
