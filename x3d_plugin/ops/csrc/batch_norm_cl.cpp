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
//   scale_silu_backward(grad_y, x, s) -> (grad_x, grad_s)
// act: 0 none, 1 ReLU, 2 SiLU (no residual with SiLU). x (and residual,
// grad_y, y) are channels-last-3d (N, C, T, H, W), i.e. (M, C) rows of C
// contiguous channels, float32 or bfloat16; the affine parameters, running
// statistics, mean and invstd are float32 of C. The ReLU backward masks
// by y > 0 (y is needed); the SiLU backward recomputes the normalised value
// from x. grad_res is the masked gradient, returned only when
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

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <tuple>
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

// The elementwise passes see the (M, C) rows as one flat array in blocks
// of P = K * C elements (K rows), P a multiple of 16, with the per-channel
// coefficients tiled K times: every block but the last is a whole number
// of 16-float vectors whatever C is (54, 108, ...), with no per-row tail.
struct Period {
  int64_t K, P;
};
inline Period period(int64_t C) {
  const int64_t K = 16 / std::gcd(C, int64_t(16));
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
  // keeps GCC from vectorising the loop without -fno-trapping-math).
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
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t o = k * P, len = std::min(P, total - o);
      const S* __restrict__ xr = x + o;
      const S* __restrict__ rr = RES ? res + o : nullptr;
      S* __restrict__ yr = y + o;
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) {
        float v = ld(xr, j) * a[j] + b[j];
        if (RES) v += ld(rr, j);
        st(yr, j, act<ACT>(v));
      }
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

// The gradient at the normalised value: grad_y masked by y > 0 (ReLU) or
// times silu'(x * a + b) (SiLU).
template <typename S, int64_t ACT>
inline float grad_at(const S* gr, const S* xr, const S* yr, const float* a,
                     const float* b, int64_t j) {
  float g = ld(gr, j);
  if (ACT == kRelu) g = ld(yr, j) > 0.f ? g : 0.f;
  if (ACT == kSilu) g *= dsilu(ld(xr, j) * a[j] + b[j]);
  return g;
}

// Pass 1 of the backward: per channel sum(g) and sum(g * (x - mean)); g
// written to gres (GRES).
template <typename S, int64_t ACT, bool GRES>
void grad_sums(const S* __restrict__ gy, const S* __restrict__ x,
               const S* __restrict__ y, S* __restrict__ gres,
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
        const S* __restrict__ yr = ACT == kRelu ? y + o : nullptr;
        S* __restrict__ wr = GRES ? gres + o : nullptr;
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) {
          const float g = grad_at<S, ACT>(gr, xr, yr, a, b, j);
          if (GRES) st(wr, j, g);
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
template <typename S, int64_t ACT>
void grad_input(const S* __restrict__ gy, const S* __restrict__ x,
                const S* __restrict__ y, S* __restrict__ gx,
                const float* a0, const float* b0, const float* k10,
                const float* k20, const float* k30, int64_t M, int64_t C) {
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
    for (int64_t k = b0_; k < b1_; ++k) {
      const int64_t o = k * P, len = std::min(P, total - o);
      const S* __restrict__ gr = gy + o;
      const S* __restrict__ xr = x + o;
      const S* __restrict__ yr = ACT == kRelu ? y + o : nullptr;
      S* __restrict__ out = gx + o;
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) {
        const float g = grad_at<S, ACT>(gr, xr, yr, a, b, j);
        st(out, j, g * k1[j] + ld(xr, j) * k2[j] + k3[j]);
      }
    }
  });
}

template <typename S>
void backward_any(const S* gy, const S* x, const S* y, S* gres, S* gx,
                  const float* mean, const float* a, const float* b,
                  int64_t M, int64_t C, int64_t ac, bool batch_stats,
                  const float* w, const float* invstd, float* gw, float* gb) {
  std::vector<double> sg, sgx;
  if (ac == kRelu && gres)
    grad_sums<S, kRelu, true>(gy, x, y, gres, mean, a, b, M, C, &sg, &sgx);
  else if (ac == kRelu)
    grad_sums<S, kRelu, false>(gy, x, y, gres, mean, a, b, M, C, &sg, &sgx);
  else if (ac == kSilu)
    grad_sums<S, kSilu, false>(gy, x, y, gres, mean, a, b, M, C, &sg, &sgx);
  else
    grad_sums<S, kNone, false>(gy, x, y, gres, mean, a, b, M, C, &sg, &sgx);
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
  if (ac == kRelu)
    grad_input<S, kRelu>(gy, x, y, gx, a, b, k1.data(), k2.data(), k3.data(),
                         M, C);
  else if (ac == kSilu)
    grad_input<S, kSilu>(gy, x, y, gx, a, b, k1.data(), k2.data(), k3.data(),
                         M, C);
  else
    grad_input<S, kNone>(gy, x, y, gx, a, b, k1.data(), k2.data(), k3.data(),
                         M, C);
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
  TORCH_CHECK(has_y || ac != kRelu, "x3d_plugin bn: relu needs y");
  if (has_y) check_rows(*y, x, "y");
  check_vec(weight, C, "weight");
  check_vec(bias, C, "bias");
  check_vec(mean_t, C, "mean");
  check_vec(invstd_t, C, "invstd");
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  const auto fmt = x.options().memory_format(at::MemoryFormat::ChannelsLast3d);
  Tensor gres;
  if (residual_grad && ac == kRelu) gres = at::empty(x.sizes(), fmt);
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
                    gres.defined() ? mptr<U>(gres) : nullptr, mptr<U>(gx),
                    mean, a.data(), b.data(), M, C, ac, batch_stats, w,
                    invstd, mptr<float>(gw), mptr<float>(gb));
  } else {
    backward_any<float>(
        cptr<float>(grad_y), cptr<float>(x),
        has_y ? cptr<float>(*y) : nullptr,
        gres.defined() ? mptr<float>(gres) : nullptr, mptr<float>(gx), mean,
        a.data(), b.data(), M, C, ac, batch_stats, w, invstd,
        mptr<float>(gw), mptr<float>(gb));
  }
  return {gx, gw, gb, gres.defined() ? gres : at::empty({0}, x.options())};
}

// y = silu(x * s), s one value per (sample, channel): the squeeze-and-
// excitation scaling and the swish after it. x (N, C, T, H, W)
// channels-last-3d, s (N, C, 1, 1, 1) of x's dtype.
template <typename S, bool BWD>
void scale_silu_impl(const S* __restrict__ x, const S* __restrict__ s,
                     const S* __restrict__ gy, S* __restrict__ out,
                     float* ds, int64_t N, int64_t C, int64_t L) {
  // L: rows per sample. Blocks of P elements within each sample's slab.
  const Period pd = period(C);
  const int64_t P = pd.P, slab = L * C, per = (slab + P - 1) / P;
  const int nt = at::get_num_threads();
  std::vector<std::vector<double>> part;
  if (BWD) part.assign(nt, std::vector<double>(N * C, 0.0));
  at::parallel_for(0, N * per, std::max<int64_t>(1, 16384 / P),
                   [&](int64_t k0, int64_t k1) {
    std::vector<float> sv(P), acc(P);
    float* __restrict__ sp = sv.data();
    float* __restrict__ ap = acc.data();
    double* dsum = BWD ? part[at::get_thread_num()].data() : nullptr;
    int64_t cur = -1;
    auto flush = [&]() {
      if (!BWD || cur < 0) return;
      fold(ap, C, pd.K);
      for (int64_t c = 0; c < C; ++c) dsum[cur * C + c] += ap[c];
    };
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t n = k / per, o = n * slab + (k % per) * P;
      const int64_t len = std::min(P, n * slab + slab - o);
      if (n != cur) {
        flush();
        cur = n;
        for (int64_t q = 0; q < P; q += C)
          for (int64_t c = 0; c < C; ++c) sp[q + c] = ld(s, n * C + c);
        if (BWD) std::fill(ap, ap + P, 0.f);
      }
      const S* __restrict__ xr = x + o;
      S* __restrict__ orow = out + o;
      if (BWD) {
        const S* __restrict__ gr = gy + o;
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) {
          const float xv = ld(xr, j);
          const float g = ld(gr, j) * dsilu(xv * sp[j]);
          st(orow, j, g * sp[j]);
          ap[j] += g * xv;
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) st(orow, j, silu(ld(xr, j) * sp[j]));
      }
    }
    flush();
  });
  if (BWD) {
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

Tensor scale_silu_forward(const Tensor& x, const Tensor& s) {
  check_scale(x, s);
  const int64_t N = x.size(0), C = x.size(1), L = x.numel() / (N * C);
  Tensor y = at::empty(x.sizes(), x.options().memory_format(
                                      at::MemoryFormat::ChannelsLast3d));
  if (N * C * L == 0) return y;
  if (x.scalar_type() == at::kBFloat16)
    scale_silu_impl<uint16_t, false>(cptr<uint16_t>(x), cptr<uint16_t>(s),
                                     nullptr, mptr<uint16_t>(y), nullptr, N,
                                     C, L);
  else
    scale_silu_impl<float, false>(cptr<float>(x), cptr<float>(s), nullptr,
                                  mptr<float>(y), nullptr, N, C, L);
  return y;
}

std::tuple<Tensor, Tensor> scale_silu_backward(const Tensor& grad_y,
                                               const Tensor& x,
                                               const Tensor& s) {
  check_scale(x, s);
  check_rows(grad_y, x, "grad_y");
  const int64_t N = x.size(0), C = x.size(1), L = x.numel() / (N * C);
  Tensor gx = at::empty(x.sizes(), x.options().memory_format(
                                       at::MemoryFormat::ChannelsLast3d));
  Tensor ds = at::zeros({N * C}, x.options().dtype(at::kFloat));
  if (N * C * L > 0) {
    if (x.scalar_type() == at::kBFloat16)
      scale_silu_impl<uint16_t, true>(cptr<uint16_t>(x), cptr<uint16_t>(s),
                                      cptr<uint16_t>(grad_y),
                                      mptr<uint16_t>(gx), mptr<float>(ds), N,
                                      C, L);
    else
      scale_silu_impl<float, true>(cptr<float>(x), cptr<float>(s),
                                   cptr<float>(grad_y), mptr<float>(gx),
                                   mptr<float>(ds), N, C, L);
  }
  return {gx, ds.to(s.scalar_type()).view(s.sizes())};
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
  m.def(
      "scale_silu_backward(Tensor grad_y, Tensor x, Tensor s) "
      "-> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(X3D_CW_NS, CPU, m) {
  m.impl("bn_forward", &x3d_bn::bn_forward);
  m.impl("bn_backward", &x3d_bn::bn_backward);
  m.impl("scale_silu_forward", &x3d_bn::scale_silu_forward);
  m.impl("scale_silu_backward", &x3d_bn::scale_silu_backward);
}
