// Fused dequantise-and-multiply for e4m3 weights with block scales (DeepSeek-V3 layout).
//
// W[out, in] is float8_e4m3fn, scale_inv[ceil(out/bn), ceil(in/bk)] is float32, and
// W_true[i, j] = W[i, j] * scale_inv[i / bn, j / bk].  Ops registered under torch.ops.strata_fp8:
//   gemv(x[n, in], w, scale_inv, bn, bk, bias?) -> [n, out]   few tokens: read each weight row once
//   dequant_(w, scale_inv, bn, bk, row0, out) -> out          many tokens: dequantise a tile for at::mm
//   isa() -> str                                              the code path picked at run time
//
// Code paths are chosen at run time (__builtin_cpu_supports), never by -march=native:
//   avx512  (AVX512F/BW/VL + VBMI + BF16). bf16 x: 64 fp8 bytes -> 64 bf16 lanes by two vpermi2b
//           lookups on a 128-entry table of the magnitude bits (exact: every e4m3 value,
//           subnormals included, is a bf16), then vdpbf16ps against x packed in the matching lane
//           order. fp32 x: the fp16 trick below, 16 weights at a time, fp32 FMA.
//   avx2    (AVX2 + FMA + F16C): the fp16 trick, 8 weights at a time, fp32 FMA.
//   scalar  (anything else): a 256-entry float table.
// Products are exact and accumulate in fp32 everywhere. The fp16 trick: sign-extended byte << 7,
// & 0xBFFF, is the e4m3 value / 256 as an fp16 (subnormals included), which vcvtph2ps widens; the
// 256 is folded into the block scale, so dequant_ is bit-identical to weight.float() * scale.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

constexpr int kMaxTokens = 8;  // tokens per pass of the small-batch GEMV (accumulators in zmm)
constexpr int64_t kPrefetchBytes = 2048;  // how far ahead of the weight stream to prefetch
constexpr int64_t kL1Bytes = 16 << 10;     // packed x per column tile: half of a 32 KiB L1

float e4m3_to_float(uint8_t b) {
  const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
  float v;
  if (e == 15 && m == 7) v = NAN;
  else if (e == 0) v = std::ldexp(static_cast<float>(m), -9);
  else v = std::ldexp(1.0f + m / 8.0f, e - 7);
  return s ? -v : v;
}

struct Tables {
  float f32[256];
  alignas(64) uint8_t bf16_hi[128];  // high byte of bf16(|value|) for magnitude bits 0..127
  alignas(64) uint8_t bf16_lo[128];
  Tables() {
    for (int b = 0; b < 256; ++b) f32[b] = e4m3_to_float(static_cast<uint8_t>(b));
    for (int b = 0; b < 128; ++b) {
      uint32_t u;
      std::memcpy(&u, &f32[b], 4);
      bf16_hi[b] = static_cast<uint8_t>(u >> 24);
      bf16_lo[b] = static_cast<uint8_t>(u >> 16);
    }
  }
};
const Tables& tables() {
  static const Tables t;
  return t;
}

// The widest code path this CPU runs. STRATA_FP8_ISA=avx2|scalar caps it (read per call, so
// tests can compare every path on one machine).
enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

Isa cpu_isa() {
  static const Isa best = [] {
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi") &&
        __builtin_cpu_supports("avx512bf16"))
      return Isa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
      return Isa::kAvx2;
    return Isa::kScalar;
  }();
  const char* cap = std::getenv("STRATA_FP8_ISA");
  Isa limit = Isa::kAvx512;
  if (cap && std::strcmp(cap, "scalar") == 0) limit = Isa::kScalar;
  if (cap && std::strcmp(cap, "avx2") == 0) limit = Isa::kAvx2;
  return std::min(best, limit);
}

// Shapes of one call, shared by the code paths.
struct Problem {
  const uint8_t* w;      // [N, K]
  const float* scale;    // [ceil(N/bn), ceil(K/bk)]
  const float* bias;     // [N] or nullptr
  float* out;            // [n, N] fp32 scratch
  int64_t N, K, n, bn, bk, kblocks;
};

// ---------------------------------------------------------------------------------------------
// Scalar path.

void gemv_rows_scalar(const Problem& p, const float* x, int64_t r0, int64_t r1) {
  const float* lut = tables().f32;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* wr = p.w + r * p.K;
    const float* sr = p.scale + (r / p.bn) * p.kblocks;
    for (int64_t t = 0; t < p.n; ++t) {
      const float* xt = x + t * p.K;
      float acc = 0.f;
      for (int64_t kb = 0; kb < p.kblocks; ++kb) {
        const int64_t k0 = kb * p.bk, k1 = std::min(p.K, k0 + p.bk);
        float blk = 0.f;
        for (int64_t k = k0; k < k1; ++k) blk += lut[wr[k]] * xt[k];
        acc += blk * sr[kb];
      }
      p.out[t * p.N + r] = acc + (p.bias ? p.bias[r] : 0.f);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// AVX2 path (AVX2 + FMA + F16C): 8 weights at a time through the fp16 trick of dequant_rows_avx512
// below, fp32 FMA against fp32 x. Exact fp32 products, so no bf16 splitting of x.

#define STRATA_AVX2 __attribute__((target("avx2,fma,f16c")))

STRATA_AVX2 inline __m256 e4m3x8_over_256(const uint8_t* p) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  __m128i h = _mm_slli_epi16(_mm_cvtepi8_epi16(b), 7);
  h = _mm_and_si128(h, _mm_set1_epi16(static_cast<short>(0xBFFF)));
  return _mm256_cvtph_ps(h);
}

template <int T>
STRATA_AVX2 void row_avx2(const Problem& p, const float* x, int64_t r, int64_t t0) {
  const uint8_t* wr = p.w + r * p.K;
  const float* sr = p.scale + (r / p.bn) * p.kblocks;
  float acc[T] = {};
  for (int64_t kb = 0; kb < p.kblocks; ++kb) {
    const int64_t k0 = kb * p.bk, k1 = std::min(p.K, k0 + p.bk), k8 = k0 + (k1 - k0) / 8 * 8;
    __m256 blk[T];
    for (int t = 0; t < T; ++t) blk[t] = _mm256_setzero_ps();
    for (int64_t k = k0; k < k8; k += 8) {
      _mm_prefetch(reinterpret_cast<const char*>(wr + k + kPrefetchBytes), _MM_HINT_T0);
      const __m256 w = e4m3x8_over_256(wr + k);
      for (int t = 0; t < T; ++t) blk[t] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + (t0 + t) * p.K + k), blk[t]);
    }
    const float sc = sr[kb];
    for (int t = 0; t < T; ++t) {
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, blk[t]);
      float sum = 0.f;
      for (float v : lanes) sum += v;
      sum *= 256.f;
      for (int64_t k = k8; k < k1; ++k) sum += tables().f32[wr[k]] * x[(t0 + t) * p.K + k];
      acc[t] += sum * sc;
    }
  }
  for (int t = 0; t < T; ++t) p.out[(t0 + t) * p.N + r] = acc[t] + (p.bias ? p.bias[r] : 0.f);
}

STRATA_AVX2 void gemv_rows_avx2(const Problem& p, const float* x, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    int64_t t0 = 0;
    for (; t0 + 4 <= p.n; t0 += 4) row_avx2<4>(p, x, r, t0);
    switch (p.n - t0) {
      case 1: row_avx2<1>(p, x, r, t0); break;
      case 2: row_avx2<2>(p, x, r, t0); break;
      case 3: row_avx2<3>(p, x, r, t0); break;
      default: break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// AVX512 path.

#define STRATA_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi,avx512bf16,f16c,fma")))

// x packed for vdpbf16ps: per 64-wide chunk, 32 bf16 in the lane order of unpacklo_epi8 then 32 in
// that of unpackhi_epi8 (within each 128-bit lane: elements 0..7, then 8..15).
inline int64_t packed_index(int64_t k) {
  const int64_t c = k / 64, i = k % 64, lane = i / 16, j = i % 16;
  return c * 64 + (j < 8 ? 0 : 32) + lane * 8 + (j % 8);
}

// x[n, K] (bf16 values held in fp32) -> packed[t * Kp + packed_index(k)], zero padded.
void pack_x(const float* x, int64_t n, int64_t K, int64_t Kp, uint16_t* packed) {
  std::memset(packed, 0, sizeof(uint16_t) * n * Kp);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t k = 0; k < K; ++k) packed[t * Kp + packed_index(k)] = c10::BFloat16(x[t * K + k]).x;
}

struct WeightChunk {
  __m512i a, b;  // 64 bf16 weights in packed_index order
};

STRATA_AVX512 inline WeightChunk load_chunk(const uint8_t* p, __mmask64 mask, __m512i hi0, __m512i hi1,
                                            __m512i lo0, __m512i lo1) {
  const __m512i w = _mm512_maskz_loadu_epi8(mask, p);
  __m512i hi = _mm512_permutex2var_epi8(hi0, w, hi1);
  const __m512i lo = _mm512_permutex2var_epi8(lo0, w, lo1);
  hi = _mm512_ternarylogic_epi32(hi, w, _mm512_set1_epi8(static_cast<char>(0x80)), 0xF8);  // hi | sign
  return {_mm512_unpacklo_epi8(lo, hi), _mm512_unpackhi_epi8(lo, hi)};
}

STRATA_AVX512 inline __m512 dot(__m512 acc, __m512i w, const uint16_t* xp) {
  const __m512i xv = _mm512_loadu_si512(xp);
  return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)xv);
}

// One output row for T tokens (starting at token t0), S bf16 parts per token.
// Blocks [kb0, kb1) of one output row for T tokens from t0, added into p.out.
template <int T>
STRATA_AVX512 void row_avx512(const Problem& p, const uint16_t* xp, int64_t Kp, int64_t r, int64_t t0,
                              int64_t kb0, int64_t kb1, int64_t prefetch_offset) {
  const Tables& tb = tables();
  const __m512i hi0 = _mm512_load_si512(tb.bf16_hi), hi1 = _mm512_load_si512(tb.bf16_hi + 64);
  const __m512i lo0 = _mm512_load_si512(tb.bf16_lo), lo1 = _mm512_load_si512(tb.bf16_lo + 64);
  const uint8_t* wr = p.w + r * p.K;
  const float* sr = p.scale + (r / p.bn) * p.kblocks;
  const int64_t chunks = (p.K + 63) / 64, per_block = p.bk / 64;
  __m512 total[T];
  for (int t = 0; t < T; ++t) total[t] = _mm512_setzero_ps();
  for (int64_t kb = kb0; kb < kb1; ++kb) {
    __m512 blk[T];
    for (int t = 0; t < T; ++t) blk[t] = _mm512_setzero_ps();
    const int64_t c1 = std::min(chunks, (kb + 1) * per_block);
    for (int64_t c = kb * per_block; c < c1; ++c) {
      const int64_t left = p.K - c * 64;
      const __mmask64 mask = left >= 64 ? ~0ULL : (1ULL << left) - 1;
      // The same columns a few rows on: the hardware prefetchers stop at page ends and row-tile
      // ends; without this a cold weight streams from DRAM at a quarter of the speed.
      _mm_prefetch(reinterpret_cast<const char*>(wr + prefetch_offset + c * 64), _MM_HINT_T0);
      const WeightChunk w = load_chunk(wr + c * 64, mask, hi0, hi1, lo0, lo1);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const uint16_t* xt = xp + (t0 + t) * Kp + c * 64;
        blk[t] = dot(blk[t], w.a, xt);
        blk[t] = dot(blk[t], w.b, xt + 32);
      }
    }
    const __m512 sc = _mm512_set1_ps(sr[kb]);
    for (int t = 0; t < T; ++t) total[t] = _mm512_fmadd_ps(blk[t], sc, total[t]);
  }
  for (int t = 0; t < T; ++t) p.out[(t0 + t) * p.N + r] += _mm512_reduce_add_ps(total[t]);
}

// Rows [r0, r1) for all p.n tokens, added into p.out. The columns go in tiles small enough that
// the packed x of every token stays in L1 (16 KiB), where the dot products need it once a chunk;
// from L2, x loads, not arithmetic, set the pace for 8 tokens.
STRATA_AVX512 void gemv_rows_avx512(const Problem& p, const uint16_t* xp, int64_t Kp, int64_t r0, int64_t r1) {
  constexpr int kTokens = kMaxTokens;
  const int64_t tile_blocks = std::max<int64_t>(1, kL1Bytes / (2 * p.n) / p.bk);
  const int64_t tile_bytes = tile_blocks * p.bk;
  const int64_t prefetch_offset = (kPrefetchBytes + tile_bytes - 1) / tile_bytes * p.K;
  for (int64_t kb0 = 0; kb0 < p.kblocks; kb0 += tile_blocks) {
    const int64_t kb1 = std::min(p.kblocks, kb0 + tile_blocks);
    for (int64_t r = r0; r < r1; ++r) {
      int64_t t0 = 0;
      for (; t0 + kTokens <= p.n; t0 += kTokens) row_avx512<kTokens>(p, xp, Kp, r, t0, kb0, kb1, prefetch_offset);
      switch (p.n - t0) {  // the weight row is in L1 now; the leftover tokens reuse it
        case 1: row_avx512<1>(p, xp, Kp, r, t0, kb0, kb1, prefetch_offset); break;
        case 2: row_avx512<2>(p, xp, Kp, r, t0, kb0, kb1, prefetch_offset); break;
        case 3: row_avx512<3>(p, xp, Kp, r, t0, kb0, kb1, prefetch_offset); break;
        case 4: row_avx512<4>(p, xp, Kp, r, t0, kb0, kb1, prefetch_offset); break;
        case 5: row_avx512<5>(p, xp, Kp, r, t0, kb0, kb1, prefetch_offset); break;
        case 6: row_avx512<6>(p, xp, Kp, r, t0, kb0, kb1, prefetch_offset); break;
        case 7: row_avx512<7>(p, xp, Kp, r, t0, kb0, kb1, prefetch_offset); break;
        default: break;
      }
    }
  }
}

// fp32 activations: e4m3 -> fp32 by the fp16 trick of dequant_rows_avx512, 16 weights at a time,
// and fp32 FMA. Exact products with no splitting of x; measured faster than three vdpbf16ps per
// weight (x = h + m + l in bf16) once there is more than one token, and as fast for one.
template <int T>
STRATA_AVX512 void row_f32_avx512(const Problem& p, const float* x, int64_t r, int64_t t0) {
  const uint8_t* wr = p.w + r * p.K;
  const float* sr = p.scale + (r / p.bn) * p.kblocks;
  __m512 total[T];
  for (int t = 0; t < T; ++t) total[t] = _mm512_setzero_ps();
  for (int64_t kb = 0; kb < p.kblocks; ++kb) {
    const int64_t k1 = std::min(p.K, (kb + 1) * p.bk);
    __m512 blk[T];
    for (int t = 0; t < T; ++t) blk[t] = _mm512_setzero_ps();
    for (int64_t k = kb * p.bk; k < k1; k += 16) {
      const int64_t left = k1 - k;
      const __mmask16 mask = left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
      _mm_prefetch(reinterpret_cast<const char*>(wr + k + kPrefetchBytes), _MM_HINT_T0);
      __m256i h = _mm256_slli_epi16(_mm256_cvtepi8_epi16(_mm_maskz_loadu_epi8(mask, wr + k)), 7);
      h = _mm256_and_si256(h, _mm256_set1_epi16(static_cast<short>(0xBFFF)));
      const __m512 w = _mm512_cvtph_ps(h);  // e4m3 value / 256
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t)
        blk[t] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(mask, x + (t0 + t) * p.K + k), blk[t]);
    }
    const __m512 sc = _mm512_set1_ps(sr[kb] * 256.f);
    for (int t = 0; t < T; ++t) total[t] = _mm512_fmadd_ps(blk[t], sc, total[t]);
  }
  const float b = p.bias ? p.bias[r] : 0.f;
  for (int t = 0; t < T; ++t) p.out[(t0 + t) * p.N + r] = _mm512_reduce_add_ps(total[t]) + b;
}

STRATA_AVX512 void gemv_rows_f32_avx512(const Problem& p, const float* x, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    int64_t t0 = 0;
    for (; t0 + kMaxTokens <= p.n; t0 += kMaxTokens) row_f32_avx512<kMaxTokens>(p, x, r, t0);
    switch (p.n - t0) {
      case 1: row_f32_avx512<1>(p, x, r, t0); break;
      case 2: row_f32_avx512<2>(p, x, r, t0); break;
      case 3: row_f32_avx512<3>(p, x, r, t0); break;
      case 4: row_f32_avx512<4>(p, x, r, t0); break;
      case 5: row_f32_avx512<5>(p, x, r, t0); break;
      case 6: row_f32_avx512<6>(p, x, r, t0); break;
      case 7: row_f32_avx512<7>(p, x, r, t0); break;
      default: break;
    }
  }
}

// Rows [r0, r1) of the dequantised weight into out (fp32 or bf16, row stride K).
STRATA_AVX512 void dequant_rows_avx512(const Problem& p, int64_t r0, int64_t r1, void* out, bool bf16) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* wr = p.w + r * p.K;
    const float* sr = p.scale + (r / p.bn) * p.kblocks;
    for (int64_t k = 0; k < p.K; k += 16) {
      _mm_prefetch(reinterpret_cast<const char*>(wr + k + kPrefetchBytes), _MM_HINT_T0);  // see row_avx512
      const int64_t left = p.K - k;
      const __mmask16 mask = left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
      const __m128i b = _mm_maskz_loadu_epi8(mask, wr + k);
      __m256i h = _mm256_slli_epi16(_mm256_cvtepi8_epi16(b), 7);  // sign lands in bits 15 and 14
      h = _mm256_and_si256(h, _mm256_set1_epi16(static_cast<short>(0xBFFF)));
      const __m512 v = _mm512_mul_ps(_mm512_cvtph_ps(h), _mm512_set1_ps(sr[k / p.bk] * 256.f));
      const int64_t o = (r - r0) * p.K + k;
      if (bf16) {
        _mm256_mask_storeu_epi16(static_cast<uint16_t*>(out) + o, mask, (__m256i)_mm512_cvtneps_pbh(v));
      } else {
        _mm512_mask_storeu_ps(static_cast<float*>(out) + o, mask, v);
      }
    }
  }
}

void dequant_rows_scalar(const Problem& p, int64_t r0, int64_t r1, void* out, bool bf16) {
  const float* lut = tables().f32;
  for (int64_t r = r0; r < r1; ++r) {
    const float* sr = p.scale + (r / p.bn) * p.kblocks;
    for (int64_t k = 0; k < p.K; ++k) {
      const float v = lut[p.w[r * p.K + k]] * sr[k / p.bk];
      const int64_t o = (r - r0) * p.K + k;
      if (bf16) static_cast<c10::BFloat16*>(out)[o] = c10::BFloat16(v);
      else static_cast<float*>(out)[o] = v;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Ops.

Problem make_problem(const at::Tensor& w, const at::Tensor& scale, int64_t bn, int64_t bk) {
  TORCH_CHECK(w.device().is_cpu() && scale.device().is_cpu(), "fp8 kernel: CPU tensors only");
  TORCH_CHECK(w.dim() == 2 && w.is_contiguous(), "fp8 kernel: weight must be a contiguous 2-D tensor");
  TORCH_CHECK(w.element_size() == 1, "fp8 kernel: weight must be float8_e4m3fn (or its uint8 view)");
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.is_contiguous(), "fp8 kernel: scale must be contiguous fp32");
  TORCH_CHECK(bn > 0 && bk > 0, "fp8 kernel: block sizes must be positive");
  const int64_t N = w.size(0), K = w.size(1);
  const int64_t kblocks = (K + bk - 1) / bk;
  TORCH_CHECK(scale.dim() == 2 && scale.size(0) == (N + bn - 1) / bn && scale.size(1) == kblocks,
              "fp8 kernel: scale shape does not match weight and block");
  return {static_cast<const uint8_t*>(w.data_ptr()), scale.data_ptr<float>(), nullptr, nullptr, N, K, 0, bn, bk,
          kblocks};
}

int64_t row_grain(int64_t K, int64_t n) {
  return std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, K * std::max<int64_t>(1, n / 4)));
}

at::Tensor gemv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale, int64_t bn, int64_t bk,
                const std::optional<at::Tensor>& bias) {
  Problem p = make_problem(w, scale, bn, bk);
  TORCH_CHECK(x.dim() == 2 && x.size(1) == p.K, "fp8 gemv: x must be [n, in_features]");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, "fp8 gemv: x must be fp32 or bf16");
  at::Tensor bias_f;
  if (bias.has_value() && bias->defined()) {
    bias_f = bias->to(at::kFloat).contiguous();
    TORCH_CHECK(bias_f.numel() == p.N, "fp8 gemv: bias must have out_features elements");
    p.bias = bias_f.data_ptr<float>();
  }
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  p.n = x.size(0);
  at::Tensor out = at::empty({p.n, p.N}, x.options().dtype(at::kFloat));
  p.out = out.data_ptr<float>();
  if (p.n == 0) return out.to(x.scalar_type());
  const float* xs = xf.data_ptr<float>();
  const int64_t grain = row_grain(p.K, p.n);
  const Isa isa = cpu_isa();
  if (isa == Isa::kAvx512 && x.scalar_type() == at::kFloat) {
    at::parallel_for(0, p.N, grain, [&](int64_t r0, int64_t r1) { gemv_rows_f32_avx512(p, xs, r0, r1); });
  } else if (isa == Isa::kAvx512 && p.bk % 64 == 0) {  // bf16 x: exact in bf16, so vdpbf16ps
    const int64_t Kp = (p.K + 63) / 64 * 64;
    std::vector<uint16_t> packed(static_cast<size_t>(p.n * Kp));
    pack_x(xs, p.n, p.K, Kp, packed.data());
    const uint16_t* xp = packed.data();
    if (p.bias) out.copy_(bias_f.unsqueeze(0).expand({p.n, p.N}));
    else out.zero_();
    at::parallel_for(0, p.N, grain, [&](int64_t r0, int64_t r1) { gemv_rows_avx512(p, xp, Kp, r0, r1); });
  } else if (isa >= Isa::kAvx2) {
    at::parallel_for(0, p.N, grain, [&](int64_t r0, int64_t r1) { gemv_rows_avx2(p, xs, r0, r1); });
  } else {
    at::parallel_for(0, p.N, grain, [&](int64_t r0, int64_t r1) { gemv_rows_scalar(p, xs, r0, r1); });
  }
  return out.to(x.scalar_type());
}

// Rows [row0, row0 + out.size(0)) of the dequantised weight into out (fp32 or bf16): the caller
// owns and reuses out, because a fresh multi-MB buffer costs more in page faults than the work.
at::Tensor dequant_(const at::Tensor& w, const at::Tensor& scale, int64_t bn, int64_t bk, int64_t row0,
                    at::Tensor out) {
  const Problem p = make_problem(w, scale, bn, bk);
  const int64_t rows = out.dim() == 2 ? out.size(0) : -1;
  TORCH_CHECK(rows >= 0 && out.size(1) == p.K && out.is_contiguous() && out.device().is_cpu(),
              "fp8 dequant: out must be a contiguous CPU [rows, in_features] tensor");
  TORCH_CHECK(out.scalar_type() == at::kFloat || out.scalar_type() == at::kBFloat16,
              "fp8 dequant: out must be fp32 or bf16");
  TORCH_CHECK(0 <= row0 && row0 + rows <= p.N, "fp8 dequant: rows out of range");
  const bool bf16 = out.scalar_type() == at::kBFloat16;
  char* o = static_cast<char*>(out.data_ptr());
  const bool fast = cpu_isa() == Isa::kAvx512 && p.bk % 16 == 0;  // 16 lanes share one block's scale
  at::parallel_for(row0, row0 + rows, row_grain(p.K, 1), [&](int64_t r0, int64_t r1) {
    void* dst = o + (r0 - row0) * p.K * out.element_size();
    if (fast) dequant_rows_avx512(p, r0, r1, dst, bf16);
    else dequant_rows_scalar(p, r0, r1, dst, bf16);
  });
  return out;
}

std::string isa() {
  static const char* names[] = {"scalar", "avx2", "avx512"};
  return names[static_cast<int>(cpu_isa())];
}

}  // namespace

TORCH_LIBRARY(strata_fp8, m) {
  m.def("gemv(Tensor x, Tensor w, Tensor scale_inv, int bn, int bk, Tensor? bias) -> Tensor");
  m.def("dequant_(Tensor w, Tensor scale_inv, int bn, int bk, int row0, Tensor(a!) out) -> Tensor(a!)");
  m.def("isa() -> str", &isa);
}

// CPU kernels only (not catch-all), so fake kernels can be registered for torch.compile.
TORCH_LIBRARY_IMPL(strata_fp8, CPU, m) {
  m.impl("gemv", &gemv);
  m.impl("dequant_", &dequant_);
}
