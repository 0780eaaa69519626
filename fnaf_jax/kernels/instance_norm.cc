// Instance norm + leaky ReLU on NHWC float32, forward and backward, as XLA FFI custom
// calls for the CPU backend (see norm.py). XLA's CPU fusions walk the activations five
// times forward and seven times backward for this pair; here the forward pass reads its
// input twice and writes once, the backward pass reads twice and writes once, on every
// core (OpenMP, the runtime oneDNN already runs on).
//
// Forward:  y = leaky((x - mean) * r),  r = 1 / sqrt(var + eps)  per sample and channel
//           (biased variance), returning y and r.
// Backward: from y, r and the output gradient g, with z = y (y > 0) or y / slope (taken as
//           y * (1 / slope)) and gz = g (y > 0) or slope * g:
//           dx = r * (gz - mean(gz) - z * mean(gz * z)).
// Channel sums are taken in double, the forward ones about the first block's mean: the
// backward pass's output sums to zero per channel only as far as its mean gradient is
// exact (float sums left a bias 10x XLA's), and sums about zero would cancel where
// |mean| >> std.

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// The row loops are compiled for AVX-512, AVX2 and plain x86-64, picked at load time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FNAF_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FNAF_CLONES
#endif

namespace {

using F32 = ffi::Buffer<ffi::F32>;

// Pixels per block of work.
constexpr int64_t kBlock = 64;

// a += x - shift, b += (x - shift)^2 over `rows` pixels of c channels.
FNAF_CLONES void sum_rows(const float *__restrict x, int64_t rows, int64_t c,
                          const float *__restrict shift, double *__restrict a,
                          double *__restrict b) {
  for (int64_t p = 0; p < rows; ++p, x += c) {
    for (int64_t k = 0; k < c; ++k) {
      double d = x[k] - shift[k];
      a[k] += d;
      b[k] += d * d;
    }
  }
}

FNAF_CLONES void normalize_rows(const float *__restrict x, int64_t rows, int64_t c,
                                const float *__restrict mean, const float *__restrict inv,
                                float slope, float *__restrict y) {
  for (int64_t p = 0; p < rows; ++p, x += c, y += c) {
    for (int64_t k = 0; k < c; ++k) {
      float z = (x[k] - mean[k]) * inv[k];
      y[k] = z > 0 ? z : slope * z;
    }
  }
}

// a += gz, b += gz * z over `rows` pixels, z and gz read back from the output y.
FNAF_CLONES void gradient_sums_rows(const float *__restrict y, const float *__restrict g,
                                    int64_t rows, int64_t c, float slope, float inv_slope,
                                    double *__restrict a, double *__restrict b) {
  for (int64_t p = 0; p < rows; ++p, y += c, g += c) {
    for (int64_t k = 0; k < c; ++k) {
      bool positive = y[k] > 0;
      float z = positive ? y[k] : y[k] * inv_slope;
      float gz = positive ? g[k] : slope * g[k];
      a[k] += gz;
      b[k] += static_cast<double>(gz) * z;
    }
  }
}

FNAF_CLONES void gradient_rows(const float *__restrict y, const float *__restrict g,
                               int64_t rows, int64_t c, float slope, float inv_slope,
                               const float *__restrict inv, const float *__restrict mean_g,
                               const float *__restrict mean_gz, float *__restrict dx) {
  for (int64_t p = 0; p < rows; ++p, y += c, g += c, dx += c) {
    for (int64_t k = 0; k < c; ++k) {
      bool positive = y[k] > 0;
      float z = positive ? y[k] : y[k] * inv_slope;
      float gz = positive ? g[k] : slope * g[k];
      dx[k] = inv[k] * (gz - mean_g[k] - z * mean_gz[k]);
    }
  }
}

// Per-channel sums over `pixels` pixels, in double, on every thread: block(p, rows, a, b)
// adds the sums of pixels p .. p + rows into a and b.
template <typename Block>
void channel_sums(int64_t pixels, int64_t c, std::vector<double> &a, std::vector<double> &b,
                  Block block) {
  a.assign(c, 0.0);
  b.assign(c, 0.0);
#pragma omp parallel
  {
    std::vector<double> da(c, 0.0), db(c, 0.0);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < pixels; p += kBlock) block(p, std::min(kBlock, pixels - p), da.data(), db.data());
#pragma omp critical
    for (int64_t k = 0; k < c; ++k) {
      a[k] += da[k];
      b[k] += db[k];
    }
  }
}

// Runs rows(p, count) over all pixels in blocks, on every thread.
template <typename Rows>
void each_block(int64_t pixels, Rows rows) {
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < pixels; p += kBlock) rows(p, std::min(kBlock, pixels - p));
}

struct Shape {
  int64_t n, pixels, c;
};

Shape shape_of(ffi::Span<const int64_t> d) { return {d[0], d[1] * d[2], d[3]}; }

ffi::Error forward(F32 x, ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::F32> r,
                   float slope, float eps) {
  const Shape s = shape_of(x.dimensions());
  std::vector<double> sum, sum_sq;
  std::vector<float> mean(s.c), shift(s.c);
  for (int64_t i = 0; i < s.n; ++i) {
    const float *xi = x.typed_data() + i * s.pixels * s.c;
    float *yi = y->typed_data() + i * s.pixels * s.c;
    float *inv = r->typed_data() + i * s.c;
    // The sums are taken about the first block's mean: sums about zero would cancel
    // (var = E[x^2] - mean^2) and lose digits wherever |mean| >> std.
    const int64_t first = std::min(kBlock, s.pixels);
    for (int64_t k = 0; k < s.c; ++k) {
      double acc = 0;
      for (int64_t p = 0; p < first; ++p) acc += xi[p * s.c + k];
      shift[k] = static_cast<float>(acc / first);
    }
    channel_sums(s.pixels, s.c, sum, sum_sq, [&](int64_t p, int64_t rows, double *a, double *b) {
      sum_rows(xi + p * s.c, rows, s.c, shift.data(), a, b);
    });
    for (int64_t k = 0; k < s.c; ++k) {
      double d = sum[k] / s.pixels;  // mean - shift
      mean[k] = static_cast<float>(shift[k] + d);
      inv[k] = static_cast<float>(1.0 / std::sqrt(std::max(sum_sq[k] / s.pixels - d * d, 0.0) + eps));
    }
    each_block(s.pixels, [&](int64_t p, int64_t rows) {
      normalize_rows(xi + p * s.c, rows, s.c, mean.data(), inv, slope, yi + p * s.c);
    });
  }
  return ffi::Error::Success();
}

ffi::Error backward(F32 y, F32 r, F32 g, ffi::ResultBuffer<ffi::F32> dx, float slope) {
  const Shape s = shape_of(y.dimensions());
  const float inv_slope = 1.0f / slope;
  std::vector<double> sum_g, sum_gz;
  std::vector<float> mean_g(s.c), mean_gz(s.c);
  for (int64_t i = 0; i < s.n; ++i) {
    const int64_t offset = i * s.pixels * s.c;
    const float *yi = y.typed_data() + offset, *gi = g.typed_data() + offset;
    const float *inv = r.typed_data() + i * s.c;
    float *di = dx->typed_data() + offset;
    channel_sums(s.pixels, s.c, sum_g, sum_gz, [&](int64_t p, int64_t rows, double *a, double *b) {
      gradient_sums_rows(yi + p * s.c, gi + p * s.c, rows, s.c, slope, inv_slope, a, b);
    });
    for (int64_t k = 0; k < s.c; ++k) {
      mean_g[k] = static_cast<float>(sum_g[k] / s.pixels);
      mean_gz[k] = static_cast<float>(sum_gz[k] / s.pixels);
    }
    each_block(s.pixels, [&](int64_t p, int64_t rows) {
      gradient_rows(yi + p * s.c, gi + p * s.c, rows, s.c, slope, inv_slope, inv, mean_g.data(),
                    mean_gz.data(), di + p * s.c);
    });
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(FnafInstanceNormLeakyForward, forward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Attr<float>("slope")
                                  .Attr<float>("eps"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(FnafInstanceNormLeakyBackward, backward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<float>("slope"));
