// Batch normalisation of channels-last tensors on CPU, with what follows
// it in X3D fused in (a residual addition, ReLU or SiLU):
//   y = act(x * gamma * invstd + (beta - mean * gamma * invstd) [+ res])
// and its backward; and the squeeze-and-excitation scaling with the SiLU
// after it, y = silu(x * s). Built into the same extension as
// channelwise_conv3d.cpp (see x3d_plugin/ops/cpu_extension.py), ops in its
// X3D_CW_NS namespace:
//   bn_forward(x, residual?, weight, bias, running_mean, running_var,
//              batch_stats, update_running, momentum, eps, act)
//     -> (y, mean, invstd)
//   bn_backward(grad_y, x, y?, weight, bias, mean, invstd, batch_stats, act,
//               residual_grad) -> (grad_x, grad_weight, grad_bias, grad_res)
//   scale_silu_forward(x, s) -> y
//   scale_silu_grad_scale(grad_y, x, s) -> grad_s
//   scale_silu_grad_input(grad_y, x, s, add?) -> grad_x (+ add per (n, c))
//   channel_sum(x) -> float32 (N, C): the sum over T, H and W per sample
//     and channel (SE's pooling), without a float32 copy of bfloat16 x
// act: 0 none, 1 ReLU, 2 SiLU (no residual with SiLU). x (and residual,
// grad_y, y) are channels-last-3d (N, C, T, H, W), i.e. (M, C) rows of C
// contiguous channels, float32 or bfloat16; the affine parameters, running
// statistics, mean and invstd are float32 of C. The backward recomputes
// the normalised value from x for the ReLU mask and SiLU's derivative;
// after a residual addition it masks by y > 0 instead (y is given only
// then). grad_res is the masked gradient, returned only when
// residual_grad and a ReLU is fused (without one it is grad_y).
//
// PyTorch's channels-last BN kernels read and write these tensors several
// times more than needed: its forward + backward of 4x54x4x80x80 float32
// took 24 ms against 0.84 ms for a copy (2 threads, AVX-512 Xeon). Here the
// forward reads x once for the statistics (a chunk of rows at a time, its
// second pass from L1/L2) and once to normalise; the backward reads
// grad_y, x (and y) twice and writes grad_x once. Statistics are summed
// in float32 within a chunk of rows and merged across chunks and threads
// in float64 (Chan et al.'s pairwise update), so they do not lose
// precision with the number of rows.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <tuple>
#include <type_traits>
#include <vector>

namespace x3d_bn {

using at::Tensor;

// Elements: float32, or bfloat16 as its raw bits (widened by a shift,
// rounded to nearest even; the loops vectorise over both: bit casts, not
// memcpy, which GCC does not vectorise).
inline float ld(const float* p, int64_t i) { return p[i]; }
inline float ld(const uint16_t* p, int64_t i) {
  return __builtin_bit_cast(float, uint32_t(p[i]) << 16);
}
inline void st(float* p, int64_t i, float v) { p[i] = v; }
inline void st(uint16_t* p, int64_t i, float v) {
  const uint32_t u = __builtin_bit_cast(uint32_t, v);
  uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  bool nan = (u & 0x7fffffffu) > 0x7f800000u;
  p[i] = uint16_t(nan ? ((u >> 16) | 0x40u) : r);
}

// Where an elementwise loop writes its results. With AVX512-BF16 the
// bfloat16 outputs go through a float buffer (Out<S>::T) that store() then
// rounds with one vcvtneps2bf16 per 16 values (float32 subnormals become
// zero there, as in oneDNN): the rounding written out in st() is a dozen
// vector instructions, up to a quarter of a SiLU loop's. Elsewhere the
// loops round in place.
template <typename S>
struct Out {
  using T = S;
};
#if defined(__AVX512BF16__)
template <>
struct Out<uint16_t> {
  using T = float;
};
#endif

template <typename S>
inline void store(S*, const S*, int64_t) {}  // written in place
inline void store(uint16_t* __restrict dst, const float* __restrict src,
                  int64_t n) {
  int64_t j = 0;
#if defined(__AVX512BF16__)
  for (; j + 16 <= n; j += 16) {
    const __m256bh r = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + j));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j),
                        reinterpret_cast<const __m256i&>(r));
  }
#endif
  for (; j < n; ++j) st(dst, j, src[j]);
}

// The buffer of a loop writing S, where Out<S>::T is not S.
template <typename S>
struct OutBuf {
  using T = typename Out<S>::T;
  static constexpr bool kInPlace = std::is_same<T, S>::value;
  std::vector<T> buf;
  explicit OutBuf(int64_t P) : buf(kInPlace ? 0 : P) {}
  // Where the loop writing dst writes.
  T* at(S* dst) {
    if constexpr (kInPlace)
      return dst;
    else
      return buf.data();
  }
};

// The elementwise passes see the (M, C) rows as one flat array in blocks
// of P = K * C elements (K rows), P a multiple of 32, with the per-channel
// coefficients tiled K times: every block but the last is a whole number
// of the vectorised loops' steps (two 16-float vectors; 32 bfloat16 values
// are one 64-byte load) whatever C is (54, 108, ...), with no per-row tail
// (a multiple of 16 alone leaves a 256-bit remainder loop in every block).
struct Period {
  int64_t K, P;
};
inline Period period(int64_t C) {
  const int64_t K = 32 / std::gcd(C, int64_t(32));
  return {K, K * C};
}

template <typename T>
void tile(const T* v, int64_t C, int64_t P, float* out) {
  for (int64_t o = 0; o < P; o += C)
    for (int64_t c = 0; c < C; ++c) out[o + c] = float(v[c]);
}

template <typename T>
std::vector<float> tiled(const T* v, int64_t C, int64_t P) {
  std::vector<float> out(P);
  tile(v, C, P, out.data());
  return out;
}

// Adds the K per-row copies of a tiled array into its first C entries.
inline void fold(float* v, int64_t C, int64_t K) {
  for (int64_t k = 1; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) v[c] += v[k * C + c];
}

// Blocks per chunk of the statistics passes: about 32 KB of float32 (a
// chunk's second pass reads it from L1/L2).
inline int64_t chunk_blocks(int64_t P) {
  return std::max<int64_t>(1, 8192 / P);
}

// Running (count, mean, M2) per channel, float64.
struct Moments {
  double n = 0;
  std::vector<double> mean, m2;
  explicit Moments(int64_t C) : mean(C, 0.0), m2(C, 0.0) {}
  // Merge a group of cnt rows with means mu and centred squares q.
  template <typename F>
  void merge(double cnt, const F* mu, const F* q, int64_t C) {
    if (cnt == 0) return;
    double tot = n + cnt, f = cnt / tot, g = n * cnt / tot;
    for (int64_t c = 0; c < C; ++c) {
      double d = double(mu[c]) - mean[c];
      mean[c] += d * f;
      m2[c] += double(q[c]) + d * d * g;
    }
    n = tot;
  }
};

// Mean and biased variance per channel of the (M, C) rows of x.
template <typename S>
void moments(const S* __restrict__ x, int64_t M, int64_t C,
             std::vector<double>* mean, std::vector<double>* var) {
  const Period pd = period(C);
  const int64_t P = pd.P, total = M * C, nblk = (total + P - 1) / P;
  const int64_t CB = chunk_blocks(P);
  const int nt = at::get_num_threads();
  std::vector<Moments> part(nt, Moments(C));
  at::parallel_for(0, nblk, CB, [&](int64_t b, int64_t e) {
    Moments& mo = part[at::get_thread_num()];
    std::vector<float> s(P), mu(P), q(P);
    float* __restrict__ sp = s.data();
    float* __restrict__ mp = mu.data();
    float* __restrict__ qp = q.data();
    for (int64_t c0 = b; c0 < e; c0 += CB) {
      const int64_t c1 = std::min(c0 + CB, e);
      const int64_t lo = c0 * P, hi = std::min(c1 * P, total);
      std::fill(sp, sp + P, 0.f);
      std::fill(qp, qp + P, 0.f);
      for (int64_t o = lo; o < hi; o += P) {
        const S* __restrict__ xr = x + o;
        const int64_t len = std::min(P, hi - o);
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) sp[j] += ld(xr, j);
      }
      fold(sp, C, pd.K);
      const int64_t rows = (hi - lo) / C;
      const float inv = 1.f / float(rows);
      for (int64_t c = 0; c < C; ++c) sp[c] *= inv;
      tile(sp, C, P, mp);
      for (int64_t o = lo; o < hi; o += P) {
        const S* __restrict__ xr = x + o;
        const int64_t len = std::min(P, hi - o);
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) {
          float d = ld(xr, j) - mp[j];
          qp[j] += d * d;
        }
      }
      fold(qp, C, pd.K);
      mo.merge(double(rows), mp, qp, C);
    }
  });
  Moments all(C);
  for (auto& p : part) all.merge(p.n, p.mean.data(), p.m2.data(), C);
  mean->assign(all.mean.begin(), all.mean.end());
  var->resize(C);
  for (int64_t c = 0; c < C; ++c) (*var)[c] = all.m2[c] / double(M);
}

// Activations: none, ReLU, SiLU (x * sigmoid(x)).
enum Act : int64_t { kNone = 0, kRelu = 1, kSilu = 2 };

// exp(x) for the vectorised loops: x = n ln2 + r with |r| <= ln2 / 2,
// exp(r) by its degree-6 Taylor-like minimax polynomial (Cephes'
// coefficients), 2^n put in the exponent bits; relative error about 2e-7
// over the clamped range (exp(-87.3) is still a normal float).
inline float vexp(float x) {
  x = std::min(std::max(x, -87.3f), 88.7f);
  // n = round(x / ln2) by adding and taking away 1.5 * 2^23 (std::floor
  // keeps GCC from vectorising the loop). The clamp's comparisons need
  // -fno-trapping-math (cpu_extension.compile_flags) to vectorise on AVX2.
  const float n = (x * 1.44269504089f + 12582912.f) - 12582912.f;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  return p * __builtin_bit_cast(float, uint32_t(int32_t(n) + 127) << 23);
}

inline float sigmoid(float z) { return 1.f / (1.f + vexp(-z)); }
inline float silu(float z) { return z * sigmoid(z); }
// d silu / dz.
inline float dsilu(float z) {
  const float s = sigmoid(z);
  return s * (1.f + z * (1.f - s));
}

template <int64_t ACT>
inline float act(float v) {
  if (ACT == kRelu) return v > 0.f ? v : 0.f;
  if (ACT == kSilu) return silu(v);
  return v;
}

template <typename S, bool RES, int64_t ACT>
void normalise(const S* __restrict__ x, const S* __restrict__ res,
               S* __restrict__ y, const float* a0, const float* b0,
               int64_t M, int64_t C) {
  const int64_t P = period(C).P, total = M * C, nblk = (total + P - 1) / P;
  const std::vector<float> av = tiled(a0, C, P), bv = tiled(b0, C, P);
  const float* __restrict__ a = av.data();
  const float* __restrict__ b = bv.data();
  at::parallel_for(0, nblk, std::max<int64_t>(1, 16384 / P),
                   [&](int64_t k0, int64_t k1) {
    OutBuf<S> ob(P);
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t o = k * P, len = std::min(P, total - o);
      const S* __restrict__ xr = x + o;
      const S* __restrict__ rr = RES ? res + o : nullptr;
      typename Out<S>::T* __restrict__ yr = ob.at(y + o);
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) {
        float v = ld(xr, j) * a[j] + b[j];
        if (RES) v += ld(rr, j);
        st(yr, j, act<ACT>(v));
      }
      store(y + o, yr, len);
    }
  });
}

template <typename S>
void normalise_any(const S* x, const S* res, S* y, const float* a,
                   const float* b, int64_t M, int64_t C, int64_t ac) {
  if (res && ac == kRelu)
    normalise<S, true, kRelu>(x, res, y, a, b, M, C);
  else if (res)
    normalise<S, true, kNone>(x, res, y, a, b, M, C);
  else if (ac == kRelu)
    normalise<S, false, kRelu>(x, res, y, a, b, M, C);
  else if (ac == kSilu)
    normalise<S, false, kSilu>(x, res, y, a, b, M, C);
  else
    normalise<S, false, kNone>(x, res, y, a, b, M, C);
}

void check_rows(const Tensor& t, const Tensor& x, const char* name) {
  TORCH_CHECK(t.sizes() == x.sizes() && t.scalar_type() == x.scalar_type(),
              "x3d_plugin bn: ", name, " must have x's shape and dtype");
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast3d),
              "x3d_plugin bn: ", name, " must be channels-last-3d");
}

void check_vec(const Tensor& t, int64_t C, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.numel() == C &&
                  t.is_contiguous(),
              "x3d_plugin bn: ", name, " must be contiguous float32 of ", C,
              " channels");
}

void check_act(int64_t ac, bool res) {
  TORCH_CHECK(ac == kNone || ac == kRelu || ac == kSilu,
              "x3d_plugin bn: act must be 0 (none), 1 (relu) or 2 (silu)");
  TORCH_CHECK(!(res && ac == kSilu),
              "x3d_plugin bn: a residual is fused only with relu or none");
}

template <typename T>
const T* cptr(const Tensor& t) {
  return reinterpret_cast<const T*>(t.data_ptr());
}
template <typename T>
T* mptr(const Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

std::tuple<Tensor, Tensor, Tensor> bn_forward(
    const Tensor& x, const c10::optional<Tensor>& residual,
    const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
    const Tensor& running_var, bool batch_stats, bool update_running,
    double momentum, double eps, int64_t ac) {
  TORCH_CHECK(x.dim() == 5, "x3d_plugin bn: x must be 5-D");
  TORCH_CHECK(x.scalar_type() == at::kFloat ||
                  x.scalar_type() == at::kBFloat16,
              "x3d_plugin bn: x must be float32 or bfloat16");
  check_rows(x, x, "x");
  const int64_t C = x.size(1), M = x.numel() / std::max<int64_t>(C, 1);
  check_vec(weight, C, "weight");
  check_vec(bias, C, "bias");
  const bool res = residual.has_value() && residual->defined();
  if (res) check_rows(*residual, x, "residual");
  check_act(ac, res);
  Tensor mean_t = at::empty({C}, weight.options());
  Tensor invstd_t = at::empty({C}, weight.options());
  float* mean = mean_t.data_ptr<float>();
  float* invstd = invstd_t.data_ptr<float>();
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  if (batch_stats) {
    TORCH_CHECK(M > 1, "x3d_plugin bn: more than one value per channel is "
                "needed to compute batch statistics");
    std::vector<double> mu, var;
    if (bf16)
      moments(cptr<uint16_t>(x), M, C, &mu, &var);
    else
      moments(cptr<float>(x), M, C, &mu, &var);
    for (int64_t c = 0; c < C; ++c) {
      mean[c] = float(mu[c]);
      invstd[c] = float(1.0 / std::sqrt(var[c] + eps));
    }
    if (update_running) {
      check_vec(running_mean, C, "running_mean");
      check_vec(running_var, C, "running_var");
      float* rm = running_mean.data_ptr<float>();
      float* rv = running_var.data_ptr<float>();
      const double unbias = double(M) / double(M - 1);
      for (int64_t c = 0; c < C; ++c) {
        rm[c] = float(momentum * mu[c] + (1.0 - momentum) * rm[c]);
        rv[c] = float(momentum * var[c] * unbias + (1.0 - momentum) * rv[c]);
      }
    }
  } else {
    check_vec(running_mean, C, "running_mean");
    check_vec(running_var, C, "running_var");
    const float* rm = running_mean.data_ptr<float>();
    const float* rv = running_var.data_ptr<float>();
    for (int64_t c = 0; c < C; ++c) {
      mean[c] = rm[c];
      invstd[c] = float(1.0 / std::sqrt(double(rv[c]) + eps));
    }
  }
  std::vector<float> a(C), b(C);
  const float* w = weight.data_ptr<float>();
  const float* bi = bias.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    a[c] = w[c] * invstd[c];
    b[c] = bi[c] - mean[c] * a[c];
  }
  Tensor y = at::empty(x.sizes(), x.options().memory_format(
                                      at::MemoryFormat::ChannelsLast3d));
  if (bf16)
    normalise_any(cptr<uint16_t>(x), res ? cptr<uint16_t>(*residual) : nullptr,
                  mptr<uint16_t>(y), a.data(), b.data(), M, C, ac);
  else
    normalise_any(cptr<float>(x), res ? cptr<float>(*residual) : nullptr,
                  mptr<float>(y), a.data(), b.data(), M, C, ac);
  return {y, mean_t, invstd_t};
}

// Where the backward's g (the gradient at the normalised value, before
// the activation) comes from:
//   kDy    grad_y (no activation)
//   kReluX grad_y where x * a + b > 0 (ReLU; the forward's own sum, so
//          the same mask as y > 0, and y need not be read)
//   kReluY grad_y where y > 0 (ReLU after a residual addition)
//   kSilu  grad_y * silu'(x * a + b)
//   kBuf   a buffer holding g (pass 2 after kReluY wrote it)
enum GradFrom { kDy, kReluX, kReluY, kSiluX, kBuf };

template <typename S, int G>
inline float grad_at(const S* gr, const S* xr, const S* yr, const float* a,
                     const float* b, int64_t j) {
  float g = ld(gr, j);
  if (G == kReluX) g = ld(xr, j) * a[j] + b[j] > 0.f ? g : 0.f;
  if (G == kReluY) g = ld(yr, j) > 0.f ? g : 0.f;
  if (G == kSiluX) g *= dsilu(ld(xr, j) * a[j] + b[j]);
  return g;
}

// Pass 1 of the backward: per channel sum(g) and sum(g * (x - mean)); g
// written to gbuf if given.
template <typename S, int G, bool WRITE>
void grad_sums(const S* __restrict__ gy, const S* __restrict__ x,
               const S* __restrict__ y, S* __restrict__ gbuf,
               const float* mean0, const float* a0, const float* b0,
               int64_t M, int64_t C, std::vector<double>* sg,
               std::vector<double>* sgx) {
  const Period pd = period(C);
  const int64_t P = pd.P, total = M * C, nblk = (total + P - 1) / P;
  const int64_t CB = chunk_blocks(P);
  const std::vector<float> mv = tiled(mean0, C, P), av = tiled(a0, C, P),
                           bv = tiled(b0, C, P);
  const float* __restrict__ mean = mv.data();
  const float* __restrict__ a = av.data();
  const float* __restrict__ b = bv.data();
  const int nt = at::get_num_threads();
  std::vector<std::vector<double>> psg(nt, std::vector<double>(C, 0.0));
  std::vector<std::vector<double>> psgx(nt, std::vector<double>(C, 0.0));
  at::parallel_for(0, nblk, CB, [&](int64_t lo_b, int64_t hi_b) {
    const int t = at::get_thread_num();
    double* __restrict__ dg = psg[t].data();
    double* __restrict__ dgx = psgx[t].data();
    std::vector<float> s(P), q(P);
    float* __restrict__ sp = s.data();
    float* __restrict__ qp = q.data();
    for (int64_t c0 = lo_b; c0 < hi_b; c0 += CB) {
      const int64_t c1 = std::min(c0 + CB, hi_b);
      const int64_t lo = c0 * P, hi = std::min(c1 * P, total);
      std::fill(sp, sp + P, 0.f);
      std::fill(qp, qp + P, 0.f);
      for (int64_t o = lo; o < hi; o += P) {
        const int64_t len = std::min(P, hi - o);
        const S* __restrict__ gr = gy + o;
        const S* __restrict__ xr = x + o;
        const S* __restrict__ yr = G == kReluY ? y + o : nullptr;
        S* __restrict__ wr = WRITE ? gbuf + o : nullptr;
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) {
          const float g = grad_at<S, G>(gr, xr, yr, a, b, j);
          if (WRITE) st(wr, j, g);
          sp[j] += g;
          qp[j] += g * (ld(xr, j) - mean[j]);
        }
      }
      fold(sp, C, pd.K);
      fold(qp, C, pd.K);
      for (int64_t c = 0; c < C; ++c) {
        dg[c] += sp[c];
        dgx[c] += qp[c];
      }
    }
  });
  sg->assign(C, 0.0);
  sgx->assign(C, 0.0);
  for (int i = 0; i < nt; ++i)
    for (int64_t c = 0; c < C; ++c) {
      (*sg)[c] += psg[i][c];
      (*sgx)[c] += psgx[i][c];
    }
}

// Pass 2: grad_x = g * k1 + x * k2 + k3 per channel.
template <typename S, int G>
void grad_input(const S* __restrict__ gy, const S* __restrict__ x,
                S* __restrict__ gx, const float* a0, const float* b0,
                const float* k10, const float* k20, const float* k30,
                int64_t M, int64_t C) {
  const int64_t P = period(C).P, total = M * C, nblk = (total + P - 1) / P;
  const std::vector<float> av = tiled(a0, C, P), bv = tiled(b0, C, P),
                           v1 = tiled(k10, C, P), v2 = tiled(k20, C, P),
                           v3 = tiled(k30, C, P);
  const float* __restrict__ a = av.data();
  const float* __restrict__ b = bv.data();
  const float* __restrict__ k1 = v1.data();
  const float* __restrict__ k2 = v2.data();
  const float* __restrict__ k3 = v3.data();
  at::parallel_for(0, nblk, std::max<int64_t>(1, 16384 / P),
                   [&](int64_t b0_, int64_t b1_) {
    OutBuf<S> ob(P);
    for (int64_t k = b0_; k < b1_; ++k) {
      const int64_t o = k * P, len = std::min(P, total - o);
      const S* __restrict__ gr = gy + o;
      const S* __restrict__ xr = x + o;
      typename Out<S>::T* __restrict__ out = ob.at(gx + o);
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) {
        const float g = grad_at<S, G>(gr, xr, nullptr, a, b, j);
        st(out, j, g * k1[j] + ld(xr, j) * k2[j] + k3[j]);
      }
      store(gx + o, out, len);
    }
  });
}

template <typename S>
void backward_any(const S* gy, const S* x, const S* y, S* gbuf, S* gx,
                  const float* mean, const float* a, const float* b,
                  int64_t M, int64_t C, int64_t ac, bool batch_stats,
                  const float* w, const float* invstd, float* gw, float* gb) {
  std::vector<double> sg, sgx;
  const float* mp = mean;
  if (ac == kRelu && y)
    grad_sums<S, kReluY, true>(gy, x, y, gbuf, mp, a, b, M, C, &sg, &sgx);
  else if (ac == kRelu)
    grad_sums<S, kReluX, false>(gy, x, y, gbuf, mp, a, b, M, C, &sg, &sgx);
  else if (ac == kSilu)
    grad_sums<S, kSiluX, false>(gy, x, y, gbuf, mp, a, b, M, C, &sg, &sgx);
  else
    grad_sums<S, kDy, false>(gy, x, y, gbuf, mp, a, b, M, C, &sg, &sgx);
  std::vector<float> k1(C), k2(C), k3(C);
  for (int64_t c = 0; c < C; ++c) {
    gw[c] = float(sgx[c] * invstd[c]);
    gb[c] = float(sg[c]);
    const double ai = double(w[c]) * invstd[c];
    k1[c] = float(ai);
    if (batch_stats) {
      const double kk = -ai * double(invstd[c]) * invstd[c] * sgx[c] / M;
      k2[c] = float(kk);
      k3[c] = float(-ai * sg[c] / M - double(mean[c]) * kk);
    } else {
      k2[c] = 0.f;
      k3[c] = 0.f;
    }
  }
  const float *p1 = k1.data(), *p2 = k2.data(), *p3 = k3.data();
  if (ac == kRelu && y)
    grad_input<S, kBuf>(gbuf, x, gx, a, b, p1, p2, p3, M, C);
  else if (ac == kRelu)
    grad_input<S, kReluX>(gy, x, gx, a, b, p1, p2, p3, M, C);
  else if (ac == kSilu)
    grad_input<S, kSiluX>(gy, x, gx, a, b, p1, p2, p3, M, C);
  else
    grad_input<S, kDy>(gy, x, gx, a, b, p1, p2, p3, M, C);
}

std::tuple<Tensor, Tensor, Tensor, Tensor> bn_backward(
    const Tensor& grad_y, const Tensor& x, const c10::optional<Tensor>& y,
    const Tensor& weight, const Tensor& bias, const Tensor& mean_t,
    const Tensor& invstd_t, bool batch_stats, int64_t ac,
    bool residual_grad) {
  check_rows(x, x, "x");
  check_rows(grad_y, x, "grad_y");
  check_act(ac, false);
  const int64_t C = x.size(1), M = x.numel() / std::max<int64_t>(C, 1);
  const bool has_y = y.has_value() && y->defined();
  TORCH_CHECK(!has_y || ac == kRelu,
              "x3d_plugin bn: y is given only with relu (after a residual)");
  TORCH_CHECK(!residual_grad || has_y,
              "x3d_plugin bn: residual_grad needs y (relu after a residual)");
  if (has_y) check_rows(*y, x, "y");
  check_vec(weight, C, "weight");
  check_vec(bias, C, "bias");
  check_vec(mean_t, C, "mean");
  check_vec(invstd_t, C, "invstd");
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  const auto fmt = x.options().memory_format(at::MemoryFormat::ChannelsLast3d);
  // With y, pass 1 writes the masked gradient (the residual's gradient)
  // and pass 2 reads it instead of grad_y and y.
  Tensor gbuf;
  if (has_y) gbuf = at::empty(x.sizes(), fmt);
  Tensor gx = at::empty(x.sizes(), fmt);
  const float* mean = mean_t.data_ptr<float>();
  const float* invstd = invstd_t.data_ptr<float>();
  const float* w = weight.data_ptr<float>();
  const float* bi = bias.data_ptr<float>();
  std::vector<float> a(C), b(C);
  for (int64_t c = 0; c < C; ++c) {
    a[c] = w[c] * invstd[c];
    b[c] = bi[c] - mean[c] * a[c];
  }
  Tensor gw = at::empty({C}, weight.options());
  Tensor gb = at::empty({C}, weight.options());
  if (bf16) {
    using U = uint16_t;
    backward_any<U>(cptr<U>(grad_y), cptr<U>(x), has_y ? cptr<U>(*y) : nullptr,
                    has_y ? mptr<U>(gbuf) : nullptr, mptr<U>(gx), mean,
                    a.data(), b.data(), M, C, ac, batch_stats, w, invstd,
                    mptr<float>(gw), mptr<float>(gb));
  } else {
    backward_any<float>(
        cptr<float>(grad_y), cptr<float>(x),
        has_y ? cptr<float>(*y) : nullptr,
        has_y ? mptr<float>(gbuf) : nullptr, mptr<float>(gx), mean,
        a.data(), b.data(), M, C, ac, batch_stats, w, invstd,
        mptr<float>(gw), mptr<float>(gb));
  }
  return {gx, gw, gb,
          residual_grad ? gbuf : at::empty({0}, x.options())};
}

// y = silu(x * s), s one value per (sample, channel): the squeeze-and-
// excitation scaling and the swish after it. x (N, C, T, H, W)
// channels-last-3d, s (N, C, 1, 1, 1) of x's dtype. The backward in two
// ops: grad_s (a reduction over each sample's rows) and grad_x, which adds
// a given value per (sample, channel): the gradient that reaches x through
// the SE's own mean pooling, so that autograd need not add a broadcast
// tensor to a full-size one (slow in bfloat16). kSum is the same pass
// over x alone: the per (sample, channel) sum of SE's pooling.
enum SiluMode { kFwd, kGradS, kGradX, kSum };

template <typename S, int MODE>
void scale_silu_impl(const S* __restrict__ x, const S* __restrict__ s,
                     const S* __restrict__ gy, const float* __restrict__ add,
                     S* __restrict__ out, float* ds, int64_t N, int64_t C,
                     int64_t L) {
  // L: rows per sample. Blocks of P elements within each sample's slab.
  constexpr bool kReduce = MODE == kGradS || MODE == kSum;
  const Period pd = period(C);
  const int64_t P = pd.P, slab = L * C, per = (slab + P - 1) / P;
  const int nt = at::get_num_threads();
  std::vector<std::vector<double>> part;
  if (kReduce) part.assign(nt, std::vector<double>(N * C, 0.0));
  at::parallel_for(0, N * per, std::max<int64_t>(1, 16384 / P),
                   [&](int64_t k0, int64_t k1) {
    std::vector<float> sv(P), av(P), acc(P);
    OutBuf<S> ob(kReduce ? 0 : P);
    float* __restrict__ sp = sv.data();
    float* __restrict__ ap = av.data();
    float* __restrict__ cp = acc.data();
    double* dsum = kReduce ? part[at::get_thread_num()].data() : nullptr;
    int64_t cur = -1;
    auto flush = [&]() {
      if (!kReduce || cur < 0) return;
      fold(cp, C, pd.K);
      for (int64_t c = 0; c < C; ++c) dsum[cur * C + c] += cp[c];
    };
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t n = k / per, o = n * slab + (k % per) * P;
      const int64_t len = std::min(P, n * slab + slab - o);
      if (n != cur) {
        flush();
        cur = n;
        if (MODE != kSum)
          for (int64_t q = 0; q < P; q += C)
            for (int64_t c = 0; c < C; ++c) {
              sp[q + c] = ld(s, n * C + c);
              ap[q + c] = MODE == kGradX ? add[n * C + c] : 0.f;
            }
        if (kReduce) std::fill(cp, cp + P, 0.f);
      }
      const S* __restrict__ xr = x + o;
      if (MODE == kSum) {
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) cp[j] += ld(xr, j);
      } else if (MODE == kGradS) {
        const S* __restrict__ gr = gy + o;
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) {
          const float xv = ld(xr, j);
          cp[j] += ld(gr, j) * dsilu(xv * sp[j]) * xv;
        }
      } else if (MODE == kGradX) {
        const S* __restrict__ gr = gy + o;
        typename Out<S>::T* __restrict__ orow = ob.at(out + o);
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) {
          const float g = ld(gr, j) * dsilu(ld(xr, j) * sp[j]);
          st(orow, j, g * sp[j] + ap[j]);
        }
        store(out + o, orow, len);
      } else {
        typename Out<S>::T* __restrict__ orow = ob.at(out + o);
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) st(orow, j, silu(ld(xr, j) * sp[j]));
        store(out + o, orow, len);
      }
    }
    flush();
  });
  if (kReduce) {
    for (int64_t i = 0; i < N * C; ++i) {
      double v = 0;
      for (int t = 0; t < nt; ++t) v += part[t][i];
      ds[i] = float(v);
    }
  }
}

void check_scale(const Tensor& x, const Tensor& s) {
  TORCH_CHECK(x.dim() == 5 && (x.scalar_type() == at::kFloat ||
                               x.scalar_type() == at::kBFloat16),
              "x3d_plugin scale_silu: x must be 5-D float32 or bfloat16");
  check_rows(x, x, "x");
  TORCH_CHECK(s.scalar_type() == x.scalar_type() && s.dim() == 5 &&
                  s.size(0) == x.size(0) && s.size(1) == x.size(1) &&
                  s.numel() == x.size(0) * x.size(1) && s.is_contiguous(),
              "x3d_plugin scale_silu: s must be contiguous (N, C, 1, 1, 1) "
              "of x's dtype");
}

template <int MODE>
void scale_silu_run(const Tensor& x, const Tensor& s, const Tensor* gy,
                    const float* add, const Tensor* out, float* ds) {
  const int64_t N = x.size(0), C = x.size(1);
  if (x.numel() == 0) return;
  const int64_t L = x.numel() / (N * C);
  if (x.scalar_type() == at::kBFloat16) {
    using U = uint16_t;
    scale_silu_impl<U, MODE>(cptr<U>(x), cptr<U>(s),
                             gy ? cptr<U>(*gy) : nullptr, add,
                             out ? mptr<U>(*out) : nullptr, ds, N, C, L);
  } else {
    scale_silu_impl<float, MODE>(cptr<float>(x), cptr<float>(s),
                                 gy ? cptr<float>(*gy) : nullptr, add,
                                 out ? mptr<float>(*out) : nullptr, ds, N, C,
                                 L);
  }
}

Tensor scale_silu_forward(const Tensor& x, const Tensor& s) {
  check_scale(x, s);
  Tensor y = at::empty(x.sizes(), x.options().memory_format(
                                      at::MemoryFormat::ChannelsLast3d));
  scale_silu_run<kFwd>(x, s, nullptr, nullptr, &y, nullptr);
  return y;
}

Tensor scale_silu_grad_scale(const Tensor& grad_y, const Tensor& x,
                             const Tensor& s) {
  check_scale(x, s);
  check_rows(grad_y, x, "grad_y");
  Tensor ds = at::zeros({x.size(0) * x.size(1)}, x.options().dtype(at::kFloat));
  scale_silu_run<kGradS>(x, s, &grad_y, nullptr, nullptr, mptr<float>(ds));
  return ds.to(s.scalar_type()).view(s.sizes());
}

Tensor scale_silu_grad_input(const Tensor& grad_y, const Tensor& x,
                             const Tensor& s, const c10::optional<Tensor>& add) {
  check_scale(x, s);
  check_rows(grad_y, x, "grad_y");
  const int64_t NC = x.size(0) * x.size(1);
  Tensor a = add.has_value() && add->defined()
                 ? add->to(at::kFloat).contiguous()
                 : at::zeros({NC}, x.options().dtype(at::kFloat));
  TORCH_CHECK(a.numel() == NC,
              "x3d_plugin scale_silu: add must hold one value per (sample, "
              "channel)");
  Tensor gx = at::empty(x.sizes(), x.options().memory_format(
                                       at::MemoryFormat::ChannelsLast3d));
  scale_silu_run<kGradX>(x, s, &grad_y, a.data_ptr<float>(), &gx, nullptr);
  return gx;
}

Tensor channel_sum(const Tensor& x) {
  TORCH_CHECK(x.dim() == 5 && (x.scalar_type() == at::kFloat ||
                               x.scalar_type() == at::kBFloat16),
              "x3d_plugin channel_sum: x must be 5-D float32 or bfloat16");
  check_rows(x, x, "x");
  // Zeros for an empty x (the run returns at once); kSum reads no s.
  Tensor sums = at::zeros({x.size(0), x.size(1)},
                          x.options().dtype(at::kFloat));
  scale_silu_run<kSum>(x, x, nullptr, nullptr, nullptr, mptr<float>(sums));
  return sums;
}

}  // namespace x3d_bn

TORCH_LIBRARY_FRAGMENT(X3D_CW_NS, m) {
  m.def(
      "bn_forward(Tensor x, Tensor? residual, Tensor weight, Tensor bias, "
      "Tensor(a!) running_mean, Tensor(b!) running_var, bool batch_stats, "
      "bool update_running, float momentum, float eps, int act) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "bn_backward(Tensor grad_y, Tensor x, Tensor? y, Tensor weight, "
      "Tensor bias, Tensor mean, Tensor invstd, bool batch_stats, int act, "
      "bool residual_grad) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("scale_silu_forward(Tensor x, Tensor s) -> Tensor");
  m.def("scale_silu_grad_scale(Tensor grad_y, Tensor x, Tensor s) -> Tensor");
  m.def(
      "scale_silu_grad_input(Tensor grad_y, Tensor x, Tensor s, Tensor? add)"
      " -> Tensor");
  m.def("channel_sum(Tensor x) -> Tensor");
}

TORCH_LIBRARY_IMPL(X3D_CW_NS, CPU, m) {
  m.impl("bn_forward", &x3d_bn::bn_forward);
  m.impl("bn_backward", &x3d_bn::bn_backward);
  m.impl("scale_silu_forward", &x3d_bn::scale_silu_forward);
  m.impl("scale_silu_grad_scale", &x3d_bn::scale_silu_grad_scale);
  m.impl("scale_silu_grad_input", &x3d_bn::scale_silu_grad_input);
  m.impl("channel_sum", &x3d_bn::channel_sum);
}
