// oneDNN convolutions as XLA FFI custom calls for the CPU backend (see onednn.py).
//
// Two kinds, each with three handlers (the forward pass, its input gradient and its weight
// gradient), for NHWC float32 activations:
//   * "same" convolutions: odd kernels, stride 1, zero padding kernel // 2 on each side;
//   * transposed convolutions whose stride equals the kernel size and no padding (the
//     U-Net's 2x2 stride-2 up-sampling, PyTorch's ConvTranspose2d): the output is the
//     input's size times the kernel's.
// The weight layout is an attribute: 0 = HWIO (Flax; for a transposed convolution I is
// its input and O its output), 1 = OIHW (PyTorch's Conv2d, the i-RIM). Leading dimensions
// of the activations beyond the fourth are not supported; onednn.py only routes rank-4
// calls here.
//
// Layouts: the forward pass and the input gradient run on NHWC directly (oneDNN's
// brgemm kernels take it); below AVX-512 the weight gradient is much faster on oneDNN's
// blocked layout, so its two activations are reordered first (for 8 or more input
// channels).
// Primitives are cached per problem, so dispatch runs once per shape.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = memory::format_tag;

namespace {

dnnl::engine &engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// (n, h, w) are the input's (the convolution's source) sizes.
struct Problem {
  int64_t n, h, w, ci, co, kh, kw, oihw;
  auto key() const { return std::make_tuple(n, h, w, ci, co, kh, kw, oihw); }
  bool operator<(const Problem &o) const { return key() < o.key(); }
};

// The primitives and geometry of each kind.
struct Same {
  using Fwd = dnnl::convolution_forward;
  using BwdData = dnnl::convolution_backward_data;
  using BwdWeights = dnnl::convolution_backward_weights;
  static constexpr auto algorithm = dnnl::algorithm::convolution_direct;
  static memory::dims strides(const Problem &) { return {1, 1}; }
  static memory::dims padding(const Problem &p) { return {p.kh / 2, p.kw / 2}; }
  static memory::dims scale(const Problem &) { return {1, 1}; }
};
struct Transposed {
  using Fwd = dnnl::deconvolution_forward;
  using BwdData = dnnl::deconvolution_backward_data;
  using BwdWeights = dnnl::deconvolution_backward_weights;
  static constexpr auto algorithm = dnnl::algorithm::deconvolution_direct;
  static memory::dims strides(const Problem &p) { return {p.kh, p.kw}; }
  static memory::dims padding(const Problem &) { return {0, 0}; }
  static memory::dims scale(const Problem &p) { return {p.kh, p.kw}; }
};

memory::desc source(const Problem &p, Tag tag) {
  return memory::desc({p.n, p.ci, p.h, p.w}, memory::data_type::f32, tag);
}
template <typename K>
memory::desc destination(const Problem &p, Tag tag) {
  auto s = K::scale(p);
  return memory::desc({p.n, p.co, p.h * s[0], p.w * s[1]}, memory::data_type::f32, tag);
}
memory::desc weights(const Problem &p, Tag tag) {
  return memory::desc({p.co, p.ci, p.kh, p.kw}, memory::data_type::f32, tag);
}
Tag weight_tag(const Problem &p) { return p.oihw ? Tag::oihw : Tag::hwio; }

template <typename K>
typename K::Fwd::primitive_desc forward_desc(const Problem &p, Tag act) {
  return typename K::Fwd::primitive_desc(
      engine(), dnnl::prop_kind::forward_training, K::algorithm, source(p, act),
      weights(p, Tag::any), destination<K>(p, act), K::strides(p), K::padding(p),
      K::padding(p));
}

// Below AVX-512, the weight gradient runs 2x faster on blocked activations, even with the
// reorders, except for thin inputs (the first layer); with AVX-512 the NHWC kernel is as
// fast or faster (320x320, 64 -> 32 channels: 14-17 ms against 19-25 ms blocked).
bool has_avx512() {
  const int isa = static_cast<int>(dnnl::get_effective_cpu_isa());
  const int avx512 = static_cast<int>(dnnl::cpu_isa::avx512_core);
  return (isa & avx512) == avx512;
}
Tag weight_grad_activation_tag(const Problem &p) {
  static const bool nhwc_is_fast = has_avx512();
  return p.ci >= 8 && !nhwc_is_fast ? Tag::any : Tag::nhwc;
}

template <typename K>
struct Forward {
  typename K::Fwd::primitive_desc pd;
  typename K::Fwd prim;
  explicit Forward(const Problem &p) : pd(forward_desc<K>(p, Tag::nhwc)), prim(pd) {}
};
template <typename K>
struct BackwardData {
  typename K::BwdData::primitive_desc pd;
  typename K::BwdData prim;
  explicit BackwardData(const Problem &p)
      : pd(engine(), K::algorithm, source(p, Tag::nhwc), weights(p, Tag::any),
           destination<K>(p, Tag::nhwc), K::strides(p), K::padding(p), K::padding(p),
           forward_desc<K>(p, Tag::nhwc)),
        prim(pd) {}
};
template <typename K>
struct BackwardWeights {
  typename K::BwdWeights::primitive_desc pd;
  typename K::BwdWeights prim;
  explicit BackwardWeights(const Problem &p)
      : pd(engine(), K::algorithm, source(p, weight_grad_activation_tag(p)),
           weights(p, Tag::any), destination<K>(p, weight_grad_activation_tag(p)),
           K::strides(p), K::padding(p), K::padding(p),
           forward_desc<K>(p, weight_grad_activation_tag(p))),
        prim(pd) {}
};

template <typename T>
const T &cached(const Problem &p) {
  static std::mutex mutex;
  static std::map<Problem, std::unique_ptr<T>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto &slot = cache[p];
  if (!slot) slot = std::make_unique<T>(p);
  return *slot;
}

// A caller's buffer as the memory a primitive wants: the buffer itself when the layouts
// agree, else a reordered copy.
memory as_input(const memory::desc &want, const memory::desc &have, void *data,
                dnnl::stream &s) {
  memory user(have, engine(), data);
  if (want == have) return user;
  memory copy(want, engine());
  dnnl::reorder(user, copy).execute(s, user, copy);
  return copy;
}
memory as_output(const memory::desc &want, const memory::desc &have, void *data) {
  return want == have ? memory(have, engine(), data) : memory(want, engine());
}
void write_back(memory &result, const memory::desc &have, void *data, dnnl::stream &s) {
  if (result.get_desc() == have) return;
  memory user(have, engine(), data);
  dnnl::reorder(result, user).execute(s, result, user);
}

Problem problem(ffi::Span<const int64_t> act, ffi::Span<const int64_t> wts, int64_t oihw) {
  Problem p{act[0], act[1], act[2], 0, 0, 0, 0, oihw};
  if (oihw) {
    p.co = wts[0], p.ci = wts[1], p.kh = wts[2], p.kw = wts[3];
  } else {
    p.kh = wts[0], p.kw = wts[1], p.ci = wts[2], p.co = wts[3];
  }
  return p;
}

// Runs one handler's body; a oneDNN exception becomes the call's error, not a crash.
template <typename Body>
ffi::Error guarded(Body body) {
  try {
    body();
  } catch (const std::exception &e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN convolution: ") + e.what());
  }
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;

template <typename K>
ffi::Error forward(F32 x, F32 w, ffi::ResultBuffer<ffi::F32> y, int64_t oihw) {
  return guarded([&] {
    Problem p = problem(x.dimensions(), w.dimensions(), oihw);
    const auto &c = cached<Forward<K>>(p);
    dnnl::stream s(engine());
    memory xm(source(p, Tag::nhwc), engine(), x.typed_data());
    memory wm = as_input(c.pd.weights_desc(), weights(p, weight_tag(p)), w.typed_data(), s);
    memory ym(destination<K>(p, Tag::nhwc), engine(), y->typed_data());
    c.prim.execute(s, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, ym}});
    s.wait();
  });
}

template <typename K>
ffi::Error backward_data(F32 g, F32 w, ffi::ResultBuffer<ffi::F32> dx, int64_t oihw) {
  return guarded([&] {
    Problem p = problem(dx->dimensions(), w.dimensions(), oihw);
    const auto &c = cached<BackwardData<K>>(p);
    dnnl::stream s(engine());
    memory gm(destination<K>(p, Tag::nhwc), engine(), g.typed_data());
    memory wm = as_input(c.pd.weights_desc(), weights(p, weight_tag(p)), w.typed_data(), s);
    memory xm(source(p, Tag::nhwc), engine(), dx->typed_data());
    c.prim.execute(s, {{DNNL_ARG_DIFF_DST, gm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DIFF_SRC, xm}});
    s.wait();
  });
}

template <typename K>
ffi::Error backward_weights(F32 x, F32 g, ffi::ResultBuffer<ffi::F32> dw, int64_t oihw) {
  return guarded([&] {
    Problem p = problem(x.dimensions(), dw->dimensions(), oihw);
    const auto &c = cached<BackwardWeights<K>>(p);
    dnnl::stream s(engine());
    memory xm = as_input(c.pd.src_desc(), source(p, Tag::nhwc), x.typed_data(), s);
    memory gm = as_input(c.pd.diff_dst_desc(), destination<K>(p, Tag::nhwc), g.typed_data(), s);
    memory::desc plain = weights(p, weight_tag(p));
    memory wm = as_output(c.pd.diff_weights_desc(), plain, dw->typed_data());
    c.prim.execute(s, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_DIFF_DST, gm}, {DNNL_ARG_DIFF_WEIGHTS, wm}});
    write_back(wm, plain, dw->typed_data(), s);
    s.wait();
  });
}

}  // namespace

#define FNAF_CONV_HANDLER(symbol, body, kind)                                      \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(symbol, body<kind>,                                \
                                ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>().Attr<int64_t>("oihw"));
FNAF_CONV_HANDLER(FnafOnednnConvForward, forward, Same)
FNAF_CONV_HANDLER(FnafOnednnConvBackwardData, backward_data, Same)
FNAF_CONV_HANDLER(FnafOnednnConvBackwardWeights, backward_weights, Same)
FNAF_CONV_HANDLER(FnafOnednnConvTransposeForward, forward, Transposed)
FNAF_CONV_HANDLER(FnafOnednnConvTransposeBackwardData, backward_data, Transposed)
FNAF_CONV_HANDLER(FnafOnednnConvTransposeBackwardWeights, backward_weights, Transposed)
