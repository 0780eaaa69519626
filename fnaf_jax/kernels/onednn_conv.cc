// oneDNN convolutions as XLA FFI custom calls for the CPU backend (see onednn.py).
//
// Three handlers: the forward convolution, its input gradient and its weight gradient,
// for NHWC float32 activations, odd square-or-not kernels, stride 1 and zero padding
// kernel // 2 on each side ("same" size). The weight layout is an attribute: 0 = HWIO
// (Flax), 1 = OIHW (PyTorch, the i-RIM). Leading dimensions of the activations beyond
// the fourth are not supported; onednn.py only routes rank-4 calls here.
//
// Layouts: the forward pass and the input gradient run on NHWC directly (oneDNN's
// brgemm kernels take it); the weight gradient is much faster on oneDNN's blocked
// layout, so its two activations are reordered first (for 8 or more input channels).
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

struct Problem {
  int64_t n, h, w, ci, co, kh, kw, oihw;
  auto key() const { return std::make_tuple(n, h, w, ci, co, kh, kw, oihw); }
  bool operator<(const Problem &o) const { return key() < o.key(); }
};

memory::desc activations(const Problem &p, int64_t c, Tag tag) {
  return memory::desc({p.n, c, p.h, p.w}, memory::data_type::f32, tag);
}
memory::desc weights(const Problem &p, Tag tag) {
  return memory::desc({p.co, p.ci, p.kh, p.kw}, memory::data_type::f32, tag);
}
Tag weight_tag(const Problem &p) { return p.oihw ? Tag::oihw : Tag::hwio; }
memory::dims padding(const Problem &p) { return {p.kh / 2, p.kw / 2}; }

dnnl::convolution_forward::primitive_desc forward_desc(const Problem &p, Tag act) {
  return dnnl::convolution_forward::primitive_desc(
      engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      activations(p, p.ci, act), weights(p, Tag::any), activations(p, p.co, act), {1, 1},
      padding(p), padding(p));
}

// The weight gradient on blocked activations, except for thin inputs (the first layer),
// where the reorders cost more than they save.
Tag weight_grad_activation_tag(const Problem &p) { return p.ci >= 8 ? Tag::any : Tag::nhwc; }

struct Forward {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
  explicit Forward(const Problem &p) : pd(forward_desc(p, Tag::nhwc)), prim(pd) {}
};
struct BackwardData {
  dnnl::convolution_backward_data::primitive_desc pd;
  dnnl::convolution_backward_data prim;
  explicit BackwardData(const Problem &p)
      : pd(engine(), dnnl::algorithm::convolution_direct, activations(p, p.ci, Tag::nhwc),
           weights(p, Tag::any), activations(p, p.co, Tag::nhwc), {1, 1}, padding(p),
           padding(p), forward_desc(p, Tag::nhwc)),
        prim(pd) {}
};
struct BackwardWeights {
  dnnl::convolution_backward_weights::primitive_desc pd;
  dnnl::convolution_backward_weights prim;
  explicit BackwardWeights(const Problem &p)
      : pd(engine(), dnnl::algorithm::convolution_direct,
           activations(p, p.ci, weight_grad_activation_tag(p)), weights(p, Tag::any),
           activations(p, p.co, weight_grad_activation_tag(p)), {1, 1}, padding(p),
           padding(p), forward_desc(p, weight_grad_activation_tag(p))),
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

ffi::Error forward(F32 x, F32 w, ffi::ResultBuffer<ffi::F32> y, int64_t oihw) {
  return guarded([&] {
    Problem p = problem(x.dimensions(), w.dimensions(), oihw);
    const auto &c = cached<Forward>(p);
    dnnl::stream s(engine());
    memory xm(activations(p, p.ci, Tag::nhwc), engine(), x.typed_data());
    memory wm = as_input(c.pd.weights_desc(), weights(p, weight_tag(p)), w.typed_data(), s);
    memory ym(activations(p, p.co, Tag::nhwc), engine(), y->typed_data());
    c.prim.execute(s, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, ym}});
    s.wait();
  });
}

ffi::Error backward_data(F32 g, F32 w, ffi::ResultBuffer<ffi::F32> dx, int64_t oihw) {
  return guarded([&] {
    Problem p = problem(g.dimensions(), w.dimensions(), oihw);
    const auto &c = cached<BackwardData>(p);
    dnnl::stream s(engine());
    memory gm(activations(p, p.co, Tag::nhwc), engine(), g.typed_data());
    memory wm = as_input(c.pd.weights_desc(), weights(p, weight_tag(p)), w.typed_data(), s);
    memory xm(activations(p, p.ci, Tag::nhwc), engine(), dx->typed_data());
    c.prim.execute(s, {{DNNL_ARG_DIFF_DST, gm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DIFF_SRC, xm}});
    s.wait();
  });
}

ffi::Error backward_weights(F32 x, F32 g, ffi::ResultBuffer<ffi::F32> dw, int64_t oihw) {
  return guarded([&] {
    Problem p = problem(x.dimensions(), dw->dimensions(), oihw);
    const auto &c = cached<BackwardWeights>(p);
    dnnl::stream s(engine());
    memory xm = as_input(c.pd.src_desc(), activations(p, p.ci, Tag::nhwc), x.typed_data(), s);
    memory gm = as_input(c.pd.diff_dst_desc(), activations(p, p.co, Tag::nhwc), g.typed_data(), s);
    memory::desc plain = weights(p, weight_tag(p));
    memory wm = as_output(c.pd.diff_weights_desc(), plain, dw->typed_data());
    c.prim.execute(s, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_DIFF_DST, gm}, {DNNL_ARG_DIFF_WEIGHTS, wm}});
    write_back(wm, plain, dw->typed_data(), s);
    s.wait();
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(FnafOnednnConvForward, forward,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>().Attr<int64_t>("oihw"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(FnafOnednnConvBackwardData, backward_data,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>().Attr<int64_t>("oihw"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(FnafOnednnConvBackwardWeights, backward_weights,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>().Attr<int64_t>("oihw"));
