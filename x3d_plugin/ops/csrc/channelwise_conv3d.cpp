// Channelwise (depthwise, groups == channels) 3D convolution for CPU:
// forward, grad_input and grad_weight, in channels-last (N, T, H, W, C)
// layout, vectorised over channels.
//
// Built at run time by x3d_plugin/ops/cpu_extension.py (ATen only, no
// pybind11), once per instruction set; each build registers its ops in its
// own namespace (X3D_CW_NS, e.g. x3d_plugin_cpu_avx512), so two builds can
// be loaded side by side in one process. The AVX-512 builds also compile
// channelwise_conv3d_l16.cpp, this file with 16 lanes, registered under
// X3D_CW_NS + "_l16". Ops:
//   forward(Tensor x, Tensor w, int[] stride, int[] padding) -> Tensor
//   backward(Tensor grad_out, Tensor x, Tensor w, int[] stride,
//            int[] padding, bool need_input, bool need_weight)
//            -> (Tensor, Tensor)
// x: (N, C, T, H, W) of any memory format (converted to channels-last-3d),
// w: (C, 1, kt, kh, kw); no bias, dilation 1. Outputs are channels-last-3d;
// grad_weight is contiguous with w's shape. A gradient that is not asked
// for is returned as an empty tensor.
//
// Vectors are GCC/Clang vector extensions of X3D_CW_LANES float lanes: 8
// (one AVX2 register; the default) or 16 (one AVX-512 register; the op
// uses them only where C is a multiple of 16: at other C every second or
// every 64-byte load straddles two cache lines, and the 16-lane kernels
// took 1.1-1.3x the 8-lane ones' time at 54, 108 and 216 channels). Channels
// are covered by blocks of that many lanes; when C is not a multiple of
// the block the last block starts at C - lanes and overlaps the previous
// one (stores of the forward and grad_input are idempotent; grad_weight
// keeps the overlapping block apart and takes only its new lanes). Fewer
// channels than lanes are zero-padded. bfloat16 values are widened to
// float32 with a shift and accumulated in float32; with AVX512-BF16
// (__AVX512BF16__) the rounding back to bfloat16 is one vcvtneps2bf16
// (float32 subnormals become zero there, as in oneDNN's bf16 kernels),
// and the 16-lane grad_weight multiplies on vdpbf16ps (gw_pair_dpbf16).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

namespace x3d_cw {
namespace {

#ifndef X3D_CW_LANES
#define X3D_CW_LANES 8
#endif
static_assert(X3D_CW_LANES == 8 || X3D_CW_LANES == 16,
              "X3D_CW_LANES must be 8 (AVX2) or 16 (AVX-512)");

constexpr int64_t kL = X3D_CW_LANES;  // lanes per vector

typedef float vfloat __attribute__((vector_size(4 * X3D_CW_LANES)));
typedef double vdouble __attribute__((vector_size(8 * X3D_CW_LANES)));
typedef uint16_t vu16 __attribute__((vector_size(2 * X3D_CW_LANES)));
typedef uint32_t vu32 __attribute__((vector_size(4 * X3D_CW_LANES)));
// Unaligned, aliasing views of the same vectors for loads and stores. (Going
// through memcpy instead made GCC keep a stack copy of every accumulator
// array and clear it with `rep stos` on each call: a quarter of the time of
// the small-row convolution blocks.)
typedef float vfloat_u
    __attribute__((vector_size(4 * X3D_CW_LANES), aligned(4), may_alias));
typedef double vdouble_u
    __attribute__((vector_size(8 * X3D_CW_LANES), aligned(8), may_alias));
typedef uint16_t vu16_u
    __attribute__((vector_size(2 * X3D_CW_LANES), aligned(2), may_alias));

// Load/store of kL values of storage type S as an accumulation vector V of
// scalar type A.
template <typename S>
struct Io;

template <>
struct Io<float> {
  using A = float;
  using V = vfloat;
  static inline V load(const float* p) {
    return *reinterpret_cast<const vfloat_u*>(p);
  }
  static inline void store(float* p, V v) {
    *reinterpret_cast<vfloat_u*>(p) = v;
  }
};

template <>
struct Io<double> {
  using A = double;
  using V = vdouble;
  static inline V load(const double* p) {
    return *reinterpret_cast<const vdouble_u*>(p);
  }
  static inline void store(double* p, V v) {
    *reinterpret_cast<vdouble_u*>(p) = v;
  }
};

template <>
struct Io<c10::BFloat16> {
  using A = float;
  using V = vfloat;
  static inline V load(const c10::BFloat16* p) {
    vu16 h = *reinterpret_cast<const vu16_u*>(p);
    vu32 b = __builtin_convertvector(h, vu32) << 16;
    return reinterpret_cast<V>(b);
  }
  static inline void store(c10::BFloat16* p, V v) {
#if defined(__AVX512BF16__) && X3D_CW_LANES == 16
    // Round to nearest even in one instruction (NaN stays a quiet NaN;
    // float32 subnormals become zero).
    __m256bh r = _mm512_cvtneps_pbh(reinterpret_cast<__m512>(v));
    *reinterpret_cast<vu16_u*>(p) = reinterpret_cast<vu16>(r);
#elif defined(__AVX512BF16__) && defined(__AVX512VL__) && X3D_CW_LANES == 8
    __m128bh r = _mm256_cvtneps_pbh(reinterpret_cast<__m256>(v));
    *reinterpret_cast<vu16_u*>(p) = reinterpret_cast<vu16>(r);
#else
    vu32 b = reinterpret_cast<vu32>(v);
    // Round to nearest even; NaN stays a (quiet) NaN.
    vu32 r = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
    vu32 nan = (vu32)(v != v);
    r = (r & ~nan) | (0x7fc0u & nan);
    *reinterpret_cast<vu16_u*>(p) = __builtin_convertvector(r, vu16);
#endif
  }
};

// Accumulator-type (weights, grad_weight buffers) load/store.
template <typename A>
struct IoA : Io<A> {};

inline int64_t ceil_div(int64_t a, int64_t b) {  // b > 0
  return a >= 0 ? (a + b - 1) / b : -((-a) / b);
}
inline int64_t floor_div(int64_t a, int64_t b) {  // b > 0
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

// Channel block offsets: 0, kL, ..., and C - kL if C % kL (C >= kL).
std::vector<int64_t> channel_blocks(int64_t C) {
  std::vector<int64_t> c;
  for (int64_t i = 0; i + kL <= C; i += kL) c.push_back(i);
  if (C % kL) c.push_back(C - kL);
  return c;
}

// One output row of a gather convolution along W:
//   out[j] = sum_p sum_t w_p[wofs_t] * in_p[j * is + off0 + t]   (valid terms)
// Taps along W always read consecutive inputs (forward: off = kw - pw;
// grad_input phases: off = (phase + pw - kw) / sw, listed by increasing
// off). out[j] lives at out + j * ostep (elements), in_p[i] at in[p] + i*C.
struct RowSpec {
  int64_t J;        // number of outputs in the row
  int64_t ostep;    // elements between consecutive outputs
  int64_t is;       // input index step per output
  int64_t win;      // input row length
  int64_t ntaps;    // taps along W
  const int64_t* wofs;  // per tap: weight offset (kw * C)
  int64_t off0;     // input index offset of tap 0
  int64_t C;
  const int64_t* cofs;
  int64_t nb;
};

// JB consecutive outputs j.. of one channel block; IS > 0 is the
// compile-time input step (loads shared between taps), 0 = runtime. The
// outputs are interior (every tap inside the input) except, with LB, the
// first, whose tap 0 falls before the input, and with RB the last, whose
// tap NT - 1 falls past it.
template <typename S, int NT, int IS, int JB, bool LB = false,
          bool RB = false>
inline void conv_block(S* __restrict__ out, const RowSpec& r,
                       const S* const* in,
                       const typename Io<S>::A* const* wp, int64_t P,
                       int64_t j, int64_t c) {
  using V = typename Io<S>::V;
  using A = typename Io<S>::A;
  const int64_t C = r.C;
  const int64_t is = IS > 0 ? IS : r.is;
  const int64_t base = (j * is + r.off0) * C + c;
  int64_t wo[NT > 0 ? NT : 1];
  for (int t = 0; t < NT; ++t) wo[t] = r.wofs[t] + c;
  V acc[JB];
  for (int jj = 0; jj < JB; ++jj) acc[jj] = V{};
  for (int64_t p = 0; p < P; ++p) {
    const S* ip = in[p] + base;
    const A* w = wp[p];
    V wv[NT > 0 ? NT : 1];
    for (int t = 0; t < NT; ++t) wv[t] = IoA<A>::load(w + wo[t]);
    for (int jj = 0; jj < JB; ++jj)
      for (int t = 0; t < NT; ++t) {
        if ((LB && jj == 0 && t == 0) || (RB && jj == JB - 1 && t == NT - 1))
          continue;
        acc[jj] += wv[t] * Io<S>::load(ip + (jj * is + t) * C);
      }
  }
  S* o = out + j * r.ostep + c;
  for (int jj = 0; jj < JB; ++jj) Io<S>::store(o + jj * r.ostep, acc[jj]);
}

template <typename S>
inline void conv_border(S* __restrict__ out, const RowSpec& r,
                        const S* const* in,
                        const typename Io<S>::A* const* wp, int64_t P,
                        int64_t j) {
  using V = typename Io<S>::V;
  using A = typename Io<S>::A;
  const int64_t C = r.C;
  for (int64_t b = 0; b < r.nb; ++b) {
    const int64_t c = r.cofs[b];
    V acc = V{};
    for (int64_t p = 0; p < P; ++p) {
      for (int64_t t = 0; t < r.ntaps; ++t) {
        const int64_t i = j * r.is + r.off0 + t;
        if (i < 0 || i >= r.win) continue;
        acc += IoA<A>::load(wp[p] + r.wofs[t] + c) *
               Io<S>::load(in[p] + i * C + c);
      }
    }
    Io<S>::store(out + j * r.ostep + c, acc);
  }
}

// Range [lo, hi) of outputs j for which every tap is inside the input.
inline void interior(const RowSpec& r, int64_t* lo, int64_t* hi) {
  if (r.ntaps == 0) {
    *lo = 0;
    *hi = r.J;
    return;
  }
  const int64_t omin = r.off0, omax = r.off0 + r.ntaps - 1;
  int64_t l = std::max<int64_t>(0, ceil_div(-omin, r.is));
  int64_t h = std::min<int64_t>(r.J, floor_div(r.win - 1 - omax, r.is) + 1);
  l = std::min(l, r.J);
  h = std::max(h, l);
  *lo = l;
  *hi = h;
}

// Up to G outputs js[0..n) of a row that need not be consecutive (the
// borders, where some taps fall outside the input, and the interior's
// remainder after the blocks of 8 and 4). Every (output, tap) pair keeps
// its own accumulator so that the few outputs still fill the FMA pipes
// (one accumulator per output would be a chain of P * NT dependent FMAs).
template <typename S, int NT, int G>
inline void conv_edge(S* __restrict__ out, const RowSpec& r,
                      const S* const* in,
                      const typename Io<S>::A* const* wp, int64_t P,
                      const int64_t* js, int n) {
  using V = typename Io<S>::V;
  using A = typename Io<S>::A;
  constexpr int T = NT > 0 ? NT : 1;
  const int64_t C = r.C;
  bool valid[G][T];
  int64_t ioff[G];
  for (int g = 0; g < G; ++g) {
    const int64_t j = g < n ? js[g] : 0;
    ioff[g] = (j * r.is + r.off0) * C;
    for (int t = 0; t < T; ++t) {
      const int64_t i = j * r.is + r.off0 + t;
      valid[g][t] = NT > 0 && g < n && i >= 0 && i < r.win;
    }
  }
  for (int64_t b = 0; b < r.nb; ++b) {
    const int64_t c = r.cofs[b];
    V acc[G][T];
    for (int g = 0; g < G; ++g)
      for (int t = 0; t < T; ++t) acc[g][t] = V{};
    for (int64_t p = 0; p < P; ++p) {
      const S* ip = in[p] + c;
      const A* w = wp[p] + c;
      V wv[T];
      for (int t = 0; t < T; ++t)
        wv[t] = NT > 0 ? IoA<A>::load(w + r.wofs[t]) : V{};
      for (int g = 0; g < G; ++g)
        for (int t = 0; t < T; ++t)
          if (valid[g][t])
            acc[g][t] += wv[t] * Io<S>::load(ip + ioff[g] + t * C);
    }
    for (int g = 0; g < G && g < n; ++g) {
      V s = acc[g][0];
      for (int t = 1; t < T; ++t) s += acc[g][t];
      Io<S>::store(out + js[g] * r.ostep + c, s);
    }
  }
}

// Software prefetch (into L2) of up to 4 rows that the next row of the
// loop reads and the current one does not, spread over the current row's
// work: upto(pos) prefetches each row's bytes [done, pos). Rows of a few KB
// interleaved 9 at a time are not streams the hardware prefetcher follows;
// ahead of time they cut the forward, grad_input and grad_weight
// 1.0-1.35x (A/B of docs/benchmarks.md).
struct Prefetch {
  const char* p[4];
  int n = 0;
  int64_t len = 0;  // bytes per row
  int64_t done = 0;
  inline void upto(int64_t pos) {
    pos = std::min(pos, len);
    for (; done < pos; done += 64)
      for (int i = 0; i < n; ++i) __builtin_prefetch(p[i] + done, 0, 2);
  }
};

template <typename S, int NT, int IS>
void conv_row_nt(S* out, const RowSpec& r, const S* const* in,
                 const typename Io<S>::A* const* wp, int64_t P,
                 Prefetch* pf) {
  constexpr int G = NT > 1 ? 4 : 8;
  int64_t lo, hi;
  interior(r, &lo, &hi);
  int64_t j = lo;
  // 3-tap rows padded by one (X3D's): the first output misses only tap 0
  // and the last (at stride 1) only tap 2, so blocks can hold them, where
  // the edge groups below cost about twice a block's time per output.
  const bool lb = NT == 3 && lo == 1 && r.off0 == -1 && hi >= 8;
  const bool rb = NT == 3 && hi == r.J - 1 && hi >= 8 &&
                  (r.J - 1) * r.is + r.off0 + 2 == r.win;
  if (lb) {
    for (int64_t b = 0; b < r.nb; ++b)
      conv_block<S, NT, IS, 8, true, false>(out, r, in, wp, P, 0, r.cofs[b]);
    j = 8;
  }
  for (; j + 8 <= hi; j += 8) {
    if (pf) pf->upto(pf->len * (j + 8) / r.J);
    for (int64_t b = 0; b < r.nb; ++b)
      conv_block<S, NT, IS, 8>(out, r, in, wp, P, j, r.cofs[b]);
  }
  if (pf) pf->upto(pf->len);
  // The outputs left, the right border's included: 7-8 as one block of 8
  // ending at the border, 3-4 as one of 4 (recomputing a few outputs:
  // stores only).
  if (rb && (r.J - j >= 7 || (r.J - j >= 3 && r.J - j <= 4))) {
    const int64_t k = r.J - j >= 7 ? 8 : 4;
    for (int64_t b = 0; b < r.nb; ++b) {
      if (k == 8)
        conv_block<S, NT, IS, 8, false, true>(out, r, in, wp, P, r.J - 8,
                                              r.cofs[b]);
      else
        conv_block<S, NT, IS, 4, false, true>(out, r, in, wp, P, r.J - 4,
                                              r.cofs[b]);
    }
    j = hi = r.J;
  }
  for (; j + 4 <= hi; j += 4)
    for (int64_t b = 0; b < r.nb; ++b)
      conv_block<S, NT, IS, 4>(out, r, in, wp, P, j, r.cofs[b]);
  // The rest: [0, lo), [j, hi) and [hi, J), G at a time.
  int64_t js[G];
  int n = 0;
  auto add = [&](int64_t k) {
    js[n++] = k;
    if (n == G) {
      conv_edge<S, NT, G>(out, r, in, wp, P, js, n);
      n = 0;
    }
  };
  for (int64_t k = lb ? lo : 0; k < lo; ++k) add(k);
  for (int64_t k = j; k < hi; ++k) add(k);
  for (int64_t k = hi; k < r.J; ++k) add(k);
  // The last group at its own size (no pass over empty slots).
  switch (n) {
    case 0: break;
    case 1: conv_edge<S, NT, 1>(out, r, in, wp, P, js, n); break;
    case 2: conv_edge<S, NT, 2>(out, r, in, wp, P, js, n); break;
    case 3: conv_edge<S, NT, 3>(out, r, in, wp, P, js, n); break;
    default: conv_edge<S, NT, G>(out, r, in, wp, P, js, n);
  }
}

template <typename S, int NT>
void conv_row_is(S* out, const RowSpec& r, const S* const* in,
                 const typename Io<S>::A* const* wp, int64_t P,
                 Prefetch* pf) {
  if (r.is == 1)
    conv_row_nt<S, NT, 1>(out, r, in, wp, P, pf);
  else if (r.is == 2)
    conv_row_nt<S, NT, 2>(out, r, in, wp, P, pf);
  else
    conv_row_nt<S, NT, 0>(out, r, in, wp, P, pf);
}

template <typename S>
void conv_row(S* out, const RowSpec& r, const S* const* in,
              const typename Io<S>::A* const* wp, int64_t P,
              Prefetch* pf = nullptr) {
  switch (r.ntaps) {
    case 0:
      conv_row_nt<S, 0, 1>(out, r, in, wp, P, pf);
      break;
    case 1:
      conv_row_is<S, 1>(out, r, in, wp, P, pf);
      break;
    case 2:
      conv_row_is<S, 2>(out, r, in, wp, P, pf);
      break;
    case 3:
      conv_row_is<S, 3>(out, r, in, wp, P, pf);
      break;
    default:
      for (int64_t j = 0; j < r.J; ++j) conv_border(out, r, in, wp, P, j);
  }
}

// grad_weight contribution of one grad_output row and one input row:
//   buf[t][b] += sum_wo go[wo] * x[wo * is + off0 + t]
template <typename S, int NT, int IS, int U>
void gw_pair(const S* __restrict__ go, const S* __restrict__ x,
             typename Io<S>::A* __restrict__ buf, const RowSpec& r,
             int64_t lo, int64_t hi) {
  using V = typename Io<S>::V;
  using A = typename Io<S>::A;
  const int64_t C = r.C;
  const int64_t is = IS > 0 ? IS : r.is;
  const int64_t tstride = r.nb * kL;
  for (int64_t b = 0; b < r.nb; ++b) {
    const int64_t c = r.cofs[b];
    V acc[NT][U];
    for (int t = 0; t < NT; ++t)
      for (int u = 0; u < U; ++u) acc[t][u] = V{};
    auto border = [&](int64_t wo) {
      const V g = Io<S>::load(go + wo * C + c);
      for (int t = 0; t < NT; ++t) {
        const int64_t i = wo * is + r.off0 + t;
        if (i < 0 || i >= r.win) continue;
        acc[t][0] += g * Io<S>::load(x + i * C + c);
      }
    };
    for (int64_t wo = 0; wo < lo; ++wo) border(wo);
    int64_t wo = lo;
    for (; wo + U <= hi; wo += U) {
      const S* xp = x + (wo * is + r.off0) * C + c;
      const S* gp = go + wo * C + c;
      for (int u = 0; u < U; ++u) {
        const V g = Io<S>::load(gp + u * C);
        for (int t = 0; t < NT; ++t)
          acc[t][u] += g * Io<S>::load(xp + (u * is + t) * C);
      }
    }
    for (; wo < hi; ++wo) {
      const V g = Io<S>::load(go + wo * C + c);
      const S* xp = x + (wo * is + r.off0) * C + c;
      for (int t = 0; t < NT; ++t)
        acc[t][0] += g * Io<S>::load(xp + t * C);
    }
    for (wo = hi; wo < r.J; ++wo) border(wo);
    for (int t = 0; t < NT; ++t) {
      V s = acc[t][0];
      for (int u = 1; u < U; ++u) s += acc[t][u];
      A* q = buf + t * tstride + b * kL;
      IoA<A>::store(q, IoA<A>::load(q) + s);
    }
  }
}

#if defined(__AVX512BF16__) && X3D_CW_LANES == 16
// gw_pair for bfloat16 on the bf16 dot-product instruction: vdpbf16ps
// multiplies pairs of bfloat16 values and adds both products to a float32
// lane. A lane holds one channel, its pair two consecutive outputs wo and
// wo + 1: grad_output and input rows are interleaved 16 channels at a time
// (one vpermt2w per pair of rows) and each tap takes one vdpbf16ps per
// two outputs, where the float32 path widens every value (a shift per
// load) and takes an FMA per output. Borders and a last odd output take
// the float32 path. Products are exact in float32 and summed in float32
// (with the instruction's rounding to nearest even; subnormal inputs and
// results are zero, as in oneDNN's bf16 kernels).
template <int NT, int IS>
void gw_pair_dpbf16(const c10::BFloat16* __restrict__ go,
                    const c10::BFloat16* __restrict__ x, float* __restrict__ buf,
                    const RowSpec& r, int64_t lo, int64_t hi) {
  using S = c10::BFloat16;
  using V = vfloat;
  const int64_t C = r.C;
  const int64_t is = IS > 0 ? IS : r.is;
  const int64_t tstride = r.nb * kL;
  // Lane pair i of the result: element i of a, then element i of b.
  alignas(64) static const uint16_t kIdx[32] = {
      0, 32, 1, 33, 2,  34, 3,  35, 4,  36, 5,  37, 6,  38, 7,  39,
      8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  const __m512i idx = _mm512_load_si512(kIdx);
  auto pair = [&](const S* a, const S* b) {
    const __m512i va = _mm512_castsi256_si512(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)));
    const __m512i vb = _mm512_castsi256_si512(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)));
    return (__m512bh)_mm512_permutex2var_epi16(va, idx, vb);
  };
  for (int64_t b = 0; b < r.nb; ++b) {
    const int64_t c = r.cofs[b];
    __m512 acc[NT][2];
    for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
    V rest[NT];
    for (int t = 0; t < NT; ++t) rest[t] = V{};
    auto one = [&](int64_t wo) {  // float32 path, taps inside the input
      const V g = Io<S>::load(go + wo * C + c);
      for (int t = 0; t < NT; ++t) {
        const int64_t i = wo * is + r.off0 + t;
        if (i < 0 || i >= r.win) continue;
        rest[t] += g * Io<S>::load(x + i * C + c);
      }
    };
    // Outputs w0 and w0 + 1 into accumulator set u.
    auto two = [&](int64_t w0, int u) {
      const S* gp = go + w0 * C + c;
      const __m512bh g = pair(gp, gp + C);
      const S* xp = x + (w0 * is + r.off0) * C + c;
      for (int t = 0; t < NT; ++t)
        acc[t][u] = _mm512_dpbf16_ps(acc[t][u], g,
                                     pair(xp + t * C, xp + (is + t) * C));
    };
    for (int64_t wo = 0; wo < lo; ++wo) one(wo);
    int64_t wo = lo;
    // Two pairs (four outputs) per step: two accumulators per tap.
    for (; wo + 4 <= hi; wo += 4) {
      two(wo, 0);
      two(wo + 2, 1);
    }
    if (wo + 2 <= hi) {
      two(wo, 0);
      wo += 2;
    }
    for (; wo < r.J; ++wo) one(wo);
    for (int t = 0; t < NT; ++t) {
      const V s = reinterpret_cast<V>(_mm512_add_ps(acc[t][0], acc[t][1])) +
                  rest[t];
      float* q = buf + t * tstride + b * kL;
      IoA<float>::store(q, IoA<float>::load(q) + s);
    }
  }
}
#endif

template <typename S>
void gw_pair_generic(const S* go, const S* x, typename Io<S>::A* buf,
                     const RowSpec& r) {
  using V = typename Io<S>::V;
  using A = typename Io<S>::A;
  const int64_t C = r.C;
  const int64_t tstride = r.nb * kL;
  for (int64_t t = 0; t < r.ntaps; ++t) {
    for (int64_t b = 0; b < r.nb; ++b) {
      const int64_t c = r.cofs[b];
      V acc = V{};
      for (int64_t wo = 0; wo < r.J; ++wo) {
        const int64_t i = wo * r.is + r.off0 + t;
        if (i < 0 || i >= r.win) continue;
        acc += Io<S>::load(go + wo * C + c) * Io<S>::load(x + i * C + c);
      }
      A* q = buf + t * tstride + b * kL;
      IoA<A>::store(q, IoA<A>::load(q) + acc);
    }
  }
}

template <typename S, int NT, int U>
void gw_pair_is(const S* go, const S* x, typename Io<S>::A* buf,
                const RowSpec& r, int64_t lo, int64_t hi) {
#if defined(__AVX512BF16__) && X3D_CW_LANES == 16
  if constexpr (std::is_same<S, c10::BFloat16>::value) {
    if (r.is == 1)
      gw_pair_dpbf16<NT, 1>(go, x, buf, r, lo, hi);
    else if (r.is == 2)
      gw_pair_dpbf16<NT, 2>(go, x, buf, r, lo, hi);
    else
      gw_pair_dpbf16<NT, 0>(go, x, buf, r, lo, hi);
    return;
  }
#endif
  if (r.is == 1)
    gw_pair<S, NT, 1, U>(go, x, buf, r, lo, hi);
  else if (r.is == 2)
    gw_pair<S, NT, 2, U>(go, x, buf, r, lo, hi);
  else
    gw_pair<S, NT, 0, U>(go, x, buf, r, lo, hi);
}

template <typename S>
void gw_pair_any(const S* go, const S* x, typename Io<S>::A* buf,
                 const RowSpec& r, int64_t lo, int64_t hi) {
  switch (r.ntaps) {
    case 1:
      gw_pair_is<S, 1, 8>(go, x, buf, r, lo, hi);
      break;
    case 2:
      gw_pair_is<S, 2, 4>(go, x, buf, r, lo, hi);
      break;
    case 3:
      gw_pair_is<S, 3, 4>(go, x, buf, r, lo, hi);
      break;
    default:
      gw_pair_generic(go, x, buf, r);
  }
}

struct Geo {
  int64_t N, C, T, H, W;     // input
  int64_t KT, KH, KW;        // kernel
  int64_t st, sh, sw;        // stride
  int64_t pt, ph, pw;        // padding
  int64_t To, Ho, Wo;        // output
};

Geo make_geo(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,
             at::IntArrayRef padding, const char* op) {
  TORCH_CHECK(x.dim() == 5, "x3d_plugin_cpu::", op,
              ": input must be 5-D (N, C, T, H, W), got ", x.dim(), "-D");
  TORCH_CHECK(w.dim() == 5, "x3d_plugin_cpu::", op,
              ": weight must be 5-D (C, 1, kt, kh, kw), got ", w.dim(), "-D");
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), "x3d_plugin_cpu::",
              op, ": tensors must be on the CPU");
  TORCH_CHECK(x.scalar_type() == w.scalar_type(), "x3d_plugin_cpu::", op,
              ": input and weight dtypes differ (", x.scalar_type(), " vs ",
              w.scalar_type(), ")");
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16,
              "x3d_plugin_cpu::", op,
              ": dtype must be float32, float64 or bfloat16, got ", dt);
  TORCH_CHECK(w.size(1) == 1 && w.size(0) == x.size(1), "x3d_plugin_cpu::",
              op, ": weight must have shape (C, 1, kt, kh, kw) with C = ",
              x.size(1), " input channels, got ", w.sizes());
  TORCH_CHECK(stride.size() == 3 && padding.size() == 3, "x3d_plugin_cpu::",
              op, ": stride and padding must have 3 values");
  Geo g;
  g.N = x.size(0);
  g.C = x.size(1);
  g.T = x.size(2);
  g.H = x.size(3);
  g.W = x.size(4);
  g.KT = w.size(2);
  g.KH = w.size(3);
  g.KW = w.size(4);
  g.st = stride[0];
  g.sh = stride[1];
  g.sw = stride[2];
  g.pt = padding[0];
  g.ph = padding[1];
  g.pw = padding[2];
  TORCH_CHECK(g.st > 0 && g.sh > 0 && g.sw > 0, "x3d_plugin_cpu::", op,
              ": stride must be positive, got ", stride);
  TORCH_CHECK(g.pt >= 0 && g.ph >= 0 && g.pw >= 0, "x3d_plugin_cpu::", op,
              ": padding must be non-negative, got ", padding);
  TORCH_CHECK(g.KT > 0 && g.KH > 0 && g.KW > 0, "x3d_plugin_cpu::", op,
              ": empty kernel ", w.sizes());
  g.To = (g.T + 2 * g.pt - g.KT) / g.st + 1;
  g.Ho = (g.H + 2 * g.ph - g.KH) / g.sh + 1;
  g.Wo = (g.W + 2 * g.pw - g.KW) / g.sw + 1;
  TORCH_CHECK(g.T + 2 * g.pt >= g.KT && g.H + 2 * g.ph >= g.KH &&
                  g.W + 2 * g.pw >= g.KW,
              "x3d_plugin_cpu::", op, ": padded input ", x.sizes(),
              " is smaller than the kernel ", w.sizes());
  return g;
}

// Adds to pf the input rows (n, (to + 1) * st + KT - 1 - pt, hi) for the
// heights hi of output line ho: the rows that output row (n, to + 1, ho)
// reads and (n, to, ho) does not.
template <typename S>
void add_next_frame_rows(Prefetch* pf, const Geo& g, const S* x, int64_t n,
                         int64_t to, int64_t ho) {
  const int64_t ti = (to + 1) * g.st + g.KT - 1 - g.pt;
  if (ti < 0 || ti >= g.T) return;
  for (int64_t kh = 0; kh < g.KH && pf->n < 4; ++kh) {
    const int64_t hi = ho * g.sh + kh - g.ph;
    if (hi < 0 || hi >= g.H) continue;
    pf->p[pf->n++] = reinterpret_cast<const char*>(
        x + ((n * g.T + ti) * g.H + hi) * g.W * g.C);
  }
}

constexpr auto kCL = at::MemoryFormat::ChannelsLast3d;

at::ScalarType acc_type(at::ScalarType s) {
  return s == at::kDouble ? at::kDouble : at::kFloat;
}

// Weight (C, 1, kt, kh, kw) -> (taps, C) in the accumulation type.
at::Tensor weight_taps_c(const at::Tensor& w) {
  const int64_t C = w.size(0);
  return w.to(acc_type(w.scalar_type())).reshape({C, -1}).t().contiguous();
}

int64_t row_grain(int64_t row_elems) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, row_elems));
}

template <typename S>
void forward_impl(const Geo& g, const S* x, const typename Io<S>::A* wt,
                  S* out) {
  using A = typename Io<S>::A;
  const int64_t C = g.C;
  const auto cofs = channel_blocks(C);
  std::vector<int64_t> wofs(g.KW);
  for (int64_t k = 0; k < g.KW; ++k) wofs[k] = k * C;
  RowSpec r{g.Wo, C, g.sw, g.W, g.KW, wofs.data(), -g.pw, C,
            cofs.data(), (int64_t)cofs.size()};
  const int64_t rows = g.N * g.To * g.Ho;
  at::parallel_for(0, rows, row_grain(g.Wo * C), [&](int64_t b, int64_t e) {
    std::vector<const S*> in(g.KT * g.KH);
    std::vector<const A*> wp(g.KT * g.KH);
    for (int64_t row = b; row < e; ++row) {
      // Rows run over (n, ho, to): the 9 input rows stay in L2.
      const int64_t to = row % g.To;
      const int64_t ho = (row / g.To) % g.Ho;
      const int64_t n = row / (g.Ho * g.To);
      const int64_t orow = (n * g.To + to) * g.Ho + ho;
      int64_t P = 0;
      for (int64_t kt = 0; kt < g.KT; ++kt) {
        const int64_t ti = to * g.st + kt - g.pt;
        if (ti < 0 || ti >= g.T) continue;
        for (int64_t kh = 0; kh < g.KH; ++kh) {
          const int64_t hi = ho * g.sh + kh - g.ph;
          if (hi < 0 || hi >= g.H) continue;
          in[P] = x + ((n * g.T + ti) * g.H + hi) * g.W * C;
          wp[P] = wt + (kt * g.KH + kh) * g.KW * C;
          ++P;
        }
      }
      // The next row (to + 1) first reads the input rows of kt = KT - 1.
      Prefetch pf;
      if (row + 1 < e && to + 1 < g.To) {
        add_next_frame_rows(&pf, g, x, n, to, ho);
        pf.len = g.W * C * sizeof(S);
      }
      conv_row(out + orow * g.Wo * C, r, in.data(), wp.data(), P,
               pf.n ? &pf : nullptr);
    }
  });
}

// The two gradients of the backward, row by row: grad_input rows
// (n, ti, hi) gather grad_output rows through the kernel; grad_weight rows
// (n, to, ho) pair one grad_output row with its input rows and accumulate
// into a per-chunk buffer (taps, channel blocks, 8).
template <typename S>
struct Backward {
  using A = typename Io<S>::A;
  const Geo& g;
  const S* go;
  const S* x;
  const A* wt;
  S* gin;
  std::vector<int64_t> cofs;
  // grad_input: one RowSpec per W phase. Input wi = m * sw + ph receives
  // the taps kw with (ph + pw - kw) % sw == 0 from go[m + (ph + pw - kw) /
  // sw], listed by increasing offset (decreasing kw): offsets are
  // consecutive.
  std::vector<std::vector<int64_t>> gi_wofs;
  std::vector<RowSpec> gi_specs;
  // grad_weight
  std::vector<int64_t> gw_wofs;
  RowSpec gw_spec;
  int64_t gw_lo = 0, gw_hi = 0;
  int64_t taps, bufsize;

  Backward(const Geo& g_, const S* go_, const S* x_, const A* wt_, S* gin_)
      : g(g_), go(go_), x(x_), wt(wt_), gin(gin_),
        cofs(channel_blocks(g_.C)) {
    const int64_t C = g.C, nb = cofs.size();
    gi_wofs.resize(g.sw);
    for (int64_t ph = 0; ph < g.sw; ++ph) {
      int64_t off0 = 0;
      for (int64_t k = g.KW - 1; k >= 0; --k) {
        const int64_t d = ph + g.pw - k;
        if (((d % g.sw) + g.sw) % g.sw) continue;
        if (gi_wofs[ph].empty()) off0 = floor_div(d, g.sw);
        gi_wofs[ph].push_back(k * C);
      }
      const int64_t J = ph < g.W ? (g.W - ph + g.sw - 1) / g.sw : 0;
      gi_specs.push_back(RowSpec{J, g.sw * C, 1, g.Wo,
                                 (int64_t)gi_wofs[ph].size(),
                                 gi_wofs[ph].data(), off0, C, cofs.data(),
                                 nb});
    }
    for (int64_t k = 0; k < g.KW; ++k) gw_wofs.push_back(k * C);
    gw_spec = RowSpec{g.Wo, C, g.sw, g.W, g.KW, gw_wofs.data(), -g.pw, C,
                      cofs.data(), nb};
    interior(gw_spec, &gw_lo, &gw_hi);
    taps = g.KT * g.KH * g.KW;
    bufsize = taps * nb * kL;
  }

  // in/wp: scratch of KT * KH entries. pf_next: the caller's next row is
  // (n, ti + 1, hi).
  void gi_row(int64_t n, int64_t ti, int64_t hi, const S** in,
              const A** wp, bool pf_next = false) const {
    const int64_t C = g.C;
    int64_t P = 0;
    for (int64_t kt = 0; kt < g.KT; ++kt) {
      const int64_t dt = ti + g.pt - kt;
      if (dt < 0 || dt % g.st) continue;
      const int64_t to = dt / g.st;
      if (to >= g.To) continue;
      for (int64_t kh = 0; kh < g.KH; ++kh) {
        const int64_t dh = hi + g.ph - kh;
        if (dh < 0 || dh % g.sh) continue;
        const int64_t ho = dh / g.sh;
        if (ho >= g.Ho) continue;
        in[P] = go + ((n * g.To + to) * g.Ho + ho) * g.Wo * C;
        wp[P] = wt + (kt * g.KH + kh) * g.KW * C;
        ++P;
      }
    }
    S* o = gin + ((n * g.T + ti) * g.H + hi) * g.W * C;
    // The next row (ti + 1) first reads the grad_output rows of kt = 0.
    Prefetch pf;
    if (pf_next && ti + 1 < g.T) {
      const int64_t dt = ti + 1 + g.pt;
      if (dt % g.st == 0 && dt / g.st < g.To)
        for (int64_t kh = 0; kh < g.KH && pf.n < 4; ++kh) {
          const int64_t dh = hi + g.ph - kh;
          if (dh < 0 || dh % g.sh || dh / g.sh >= g.Ho) continue;
          pf.p[pf.n++] = reinterpret_cast<const char*>(
              go + ((n * g.To + dt / g.st) * g.Ho + dh / g.sh) * g.Wo * C);
        }
      pf.len = g.Wo * C * sizeof(S);
    }
    for (int64_t ph = 0; ph < g.sw; ++ph)
      conv_row(o + ph * C, gi_specs[ph], in, wp, P,
               ph == 0 && pf.n ? &pf : nullptr);
  }

  // pf_next: the caller's next row is (n, to + 1, ho).
  void gw_row(int64_t n, int64_t to, int64_t ho, A* buf,
              bool pf_next = false) const {
    const int64_t C = g.C, nb = cofs.size();
    const S* gor = go + ((n * g.To + to) * g.Ho + ho) * g.Wo * C;
    // The next row (to + 1) first reads its grad_output row and the input
    // rows of kt = KT - 1.
    Prefetch pf;
    if (pf_next && to + 1 < g.To) {
      pf.p[pf.n++] = reinterpret_cast<const char*>(gor + g.Ho * g.Wo * C);
      add_next_frame_rows(&pf, g, x, n, to, ho);
      pf.len = std::min(g.W, g.Wo) * C * sizeof(S);
    }
    int64_t k = 0;
    const int64_t npairs = g.KT * g.KH;
    for (int64_t kt = 0; kt < g.KT; ++kt) {
      const int64_t ti = to * g.st + kt - g.pt;
      if (ti < 0 || ti >= g.T) continue;
      for (int64_t kh = 0; kh < g.KH; ++kh) {
        const int64_t hi = ho * g.sh + kh - g.ph;
        if (hi < 0 || hi >= g.H) continue;
        const S* xr = x + ((n * g.T + ti) * g.H + hi) * g.W * C;
        A* bp = buf + (kt * g.KH + kh) * g.KW * nb * kL;
        if (pf.n) pf.upto(pf.len * (++k) / npairs);
        gw_pair_any(gor, xr, bp, gw_spec, gw_lo, gw_hi);
      }
    }
    if (pf.n) pf.upto(pf.len);  // rows with pairs outside the input
  }

  // Sums the chunk buffers into gw (C, 1, kt, kh, kw).
  void reduce(const std::vector<A>& bufs, int64_t nchunks, S* gw) const {
    const int64_t C = g.C, nb = cofs.size();
    std::vector<A> total(bufsize, A(0));
    for (int64_t k = 0; k < nchunks; ++k) {
      const A* buf = bufs.data() + k * bufsize;
      for (int64_t i = 0; i < bufsize; ++i) total[i] += buf[i];
    }
    const int64_t full = C / kL;
    for (int64_t t = 0; t < taps; ++t) {
      for (int64_t b = 0; b < nb; ++b) {
        for (int64_t l = 0; l < kL; ++l) {
          const int64_t c = cofs[b] + l;
          if (b >= full && c < full * kL) continue;  // overlap lanes
          gw[c * taps + t] = static_cast<S>(total[(t * nb + b) * kL + l]);
        }
      }
    }
  }
};

template <typename S>
void grad_input_impl(const Backward<S>& bw) {
  using A = typename Io<S>::A;
  const Geo& g = bw.g;
  const int64_t rows = g.N * g.T * g.H;
  at::parallel_for(0, rows, row_grain(g.W * g.C), [&](int64_t b, int64_t e) {
    std::vector<const S*> in(g.KT * g.KH);
    std::vector<const A*> wp(g.KT * g.KH);
    for (int64_t row = b; row < e; ++row)
      bw.gi_row(row / (g.H * g.T), row % g.T, (row / g.T) % g.H, in.data(),
                wp.data(), row + 1 < e);
  });
}

template <typename S>
void grad_weight_impl(const Backward<S>& bw, S* gw) {
  using A = typename Io<S>::A;
  const Geo& g = bw.g;
  const int64_t rows = g.N * g.To * g.Ho;
  const int64_t nchunks =
      std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows));
  std::vector<A> bufs(nchunks * bw.bufsize, A(0));
  at::parallel_for(0, nchunks, 1, [&](int64_t kb, int64_t ke) {
    for (int64_t k = kb; k < ke; ++k) {
      A* buf = bufs.data() + k * bw.bufsize;
      const int64_t rb = rows * k / nchunks, re = rows * (k + 1) / nchunks;
      for (int64_t row = rb; row < re; ++row)
        bw.gw_row(row / (g.Ho * g.To), row % g.To, (row / g.To) % g.Ho, buf,
                  row + 1 < re);
    }
  });
  bw.reduce(bufs, nchunks, gw);
}

// Both gradients in one pass over the H lines of grad_output: a chunk of
// lines (n, ho) runs grad_weight of the grad_output rows of line ho, then
// grad_input of the input lines hi that line owns (hi / sh, the last line
// taking the rest), which read the grad_output lines just used. Each
// grad_output and input row is then read from memory about once, where
// two passes read grad_output twice and find little of it still cached.
template <typename S>
void grad_both_impl(const Backward<S>& bw, S* gw) {
  using A = typename Io<S>::A;
  const Geo& g = bw.g;
  const int64_t lines = g.N * g.Ho;
  const int64_t nchunks =
      std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), lines));
  std::vector<A> bufs(nchunks * bw.bufsize, A(0));
  at::parallel_for(0, nchunks, 1, [&](int64_t kb, int64_t ke) {
    std::vector<const S*> in(g.KT * g.KH);
    std::vector<const A*> wp(g.KT * g.KH);
    for (int64_t k = kb; k < ke; ++k) {
      A* buf = bufs.data() + k * bw.bufsize;
      const int64_t lb = lines * k / nchunks, le = lines * (k + 1) / nchunks;
      for (int64_t line = lb; line < le; ++line) {
        const int64_t n = line / g.Ho, ho = line % g.Ho;
        for (int64_t to = 0; to < g.To; ++to) bw.gw_row(n, to, ho, buf, true);
        const int64_t h0 = std::min(ho * g.sh, g.H);
        const int64_t h1 = ho == g.Ho - 1 ? g.H : std::min(h0 + g.sh, g.H);
        for (int64_t hi = h0; hi < h1; ++hi)
          for (int64_t ti = 0; ti < g.T; ++ti)
            bw.gi_row(n, ti, hi, in.data(), wp.data(), true);
      }
    }
  });
  bw.reduce(bufs, nchunks, gw);
}

// Zero-pads channels to kL (the vector width) for C < kL.
at::Tensor pad_channels(const at::Tensor& t, int64_t dim) {
  auto sizes = t.sizes().vec();
  sizes[dim] = kL;
  at::Tensor p = t.dim() == 5 && dim == 1
                     ? at::zeros(sizes, t.options().memory_format(kCL))
                     : at::zeros(sizes, t.options());
  p.narrow(dim, 0, t.size(dim)).copy_(t);
  return p;
}

at::Tensor cw_forward(const at::Tensor& x_, const at::Tensor& w_,
                      at::IntArrayRef stride, at::IntArrayRef padding) {
  Geo g = make_geo(x_, w_, stride, padding, "forward");
  if (g.C < kL && g.C > 0) {
    at::Tensor out = cw_forward(pad_channels(x_, 1), pad_channels(w_, 0),
                                stride, padding);
    return out.narrow(1, 0, g.C).contiguous(kCL);
  }
  at::Tensor out = at::empty({g.N, g.C, g.To, g.Ho, g.Wo},
                             x_.options().memory_format(kCL));
  if (out.numel() == 0) return out;
  at::Tensor x = x_.contiguous(kCL);
  at::Tensor wt = weight_taps_c(w_);
  AT_DISPATCH_FLOATING_TYPES_AND(
      at::kBFloat16, x.scalar_type(), "x3d_cw_forward", [&] {
        using A = typename Io<scalar_t>::A;
        forward_impl<scalar_t>(g, x.const_data_ptr<scalar_t>(),
                               wt.const_data_ptr<A>(),
                               out.mutable_data_ptr<scalar_t>());
      });
  return out;
}

std::tuple<at::Tensor, at::Tensor> cw_backward(
    const at::Tensor& go_, const at::Tensor& x_, const at::Tensor& w_,
    at::IntArrayRef stride, at::IntArrayRef padding, bool need_input,
    bool need_weight) {
  Geo g = make_geo(x_, w_, stride, padding, "backward");
  TORCH_CHECK(go_.dim() == 5 && go_.size(0) == g.N && go_.size(1) == g.C &&
                  go_.size(2) == g.To && go_.size(3) == g.Ho &&
                  go_.size(4) == g.Wo,
              "x3d_plugin_cpu::backward: grad_out has shape ", go_.sizes(),
              ", expected [", g.N, ", ", g.C, ", ", g.To, ", ", g.Ho, ", ",
              g.Wo, "]");
  TORCH_CHECK(go_.scalar_type() == x_.scalar_type(),
              "x3d_plugin_cpu::backward: grad_out dtype ", go_.scalar_type(),
              " differs from the input's ", x_.scalar_type());
  TORCH_CHECK(go_.device().is_cpu(),
              "x3d_plugin_cpu::backward: grad_out must be on the CPU");
  if (g.C < kL && g.C > 0) {
    auto res = cw_backward(pad_channels(go_, 1), pad_channels(x_, 1),
                           pad_channels(w_, 0), stride, padding, need_input,
                           need_weight);
    at::Tensor gi = std::get<0>(res), gw = std::get<1>(res);
    if (need_input) gi = gi.narrow(1, 0, g.C).contiguous(kCL);
    if (need_weight) gw = gw.narrow(0, 0, g.C).contiguous();
    return {gi, gw};
  }
  at::Tensor gin = need_input
                       ? at::empty(x_.sizes(), x_.options().memory_format(kCL))
                       : at::empty({0}, x_.options());
  at::Tensor gw = need_weight ? at::empty(w_.sizes(), w_.options())
                              : at::empty({0}, w_.options());
  if (need_weight && (go_.numel() == 0 || x_.numel() == 0)) gw.zero_();
  if (need_input && go_.numel() == 0) gin.zero_();
  if (go_.numel() == 0 || x_.numel() == 0) return {gin, gw};
  at::Tensor go = go_.contiguous(kCL);
  AT_DISPATCH_FLOATING_TYPES_AND(
      at::kBFloat16, x_.scalar_type(), "x3d_cw_backward", [&] {
        using A = typename Io<scalar_t>::A;
        // The weight taps are read by grad_input only, the input by
        // grad_weight only.
        at::Tensor wt = need_input ? weight_taps_c(w_) : at::Tensor();
        at::Tensor x = need_weight ? x_.contiguous(kCL) : x_;
        Backward<scalar_t> bw(
            g, go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
            need_input ? wt.const_data_ptr<A>() : nullptr,
            need_input ? gin.mutable_data_ptr<scalar_t>() : nullptr);
        // One pass when there are enough lines to share between threads.
        if (need_input && need_weight &&
            g.N * g.Ho >= 4 * at::get_num_threads()) {
          grad_both_impl(bw, gw.mutable_data_ptr<scalar_t>());
        } else {
          if (need_input) grad_input_impl(bw);
          if (need_weight)
            grad_weight_impl(bw, gw.mutable_data_ptr<scalar_t>());
        }
      });
  return {gin, gw};
}

}  // namespace
}  // namespace x3d_cw

#ifndef X3D_CW_NS
#define X3D_CW_NS x3d_plugin_cpu
#endif
// The namespace this translation unit registers (channelwise_conv3d_l16.cpp
// appends _l16 to X3D_CW_NS).
#ifndef X3D_CW_REG_NS
#define X3D_CW_REG_NS X3D_CW_NS
#endif

TORCH_LIBRARY(X3D_CW_REG_NS, m) {
  m.def("forward(Tensor x, Tensor w, int[] stride, int[] padding) -> Tensor");
  m.def(
      "backward(Tensor grad_out, Tensor x, Tensor w, int[] stride, "
      "int[] padding, bool need_input, bool need_weight) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(X3D_CW_REG_NS, CPU, m) {
  m.impl("forward", &x3d_cw::cw_forward);
  m.impl("backward", &x3d_cw::cw_backward);
}
