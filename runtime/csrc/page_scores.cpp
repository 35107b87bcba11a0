// Quest page scores for sparse attention: one pass over a layer's bfloat16 page boxes.
//
//   page_scores(q[H, G, K] float32, box[H, n, K] bfloat16) -> [H, G, n] float32
//   out[h, g, p] = sum_k q[h, g, k] * box[h, p, k]
//
// With K = 2D (a page's box centre and radius side by side) and q = [query | w * |query|], this is
// the Quest upper bound of every page for every query of a KV head's group (runtime/sparse.py).
// At 1M tokens one decode step scores 16,384 pages x 8 layers x 2 KV heads: torch's bfloat16
// matmul takes a slow path on CPUs without bfloat16 units, and float32 boxes double the bytes
// read. Here each bfloat16 is widened by a shift (exact) and every product accumulates in fp32.
//
// Code paths, chosen at run time: avx2 (AVX2 + FMA; K a multiple of 8), else scalar. Both sum
// the products of one page in the same fixed order whatever the thread count, so a score is the
// same bits in every run (warm and cold runs must select the same pages).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <string>

namespace {

constexpr int64_t kGroup = 4;       // queries scored together (accumulators per page)
constexpr int64_t kPagesPerTask = 256;

float bf16_to_float(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Products of page p fused-added in lanes of 8 (k mod 8), then the 8 lanes pairwise: the avx2
// order and rounding, so both paths give the same bits.
void score_page_scalar(const float* q, int64_t g_count, const uint16_t* box, int64_t k_len,
                       float* out, int64_t out_stride) {
  for (int64_t g = 0; g < g_count; ++g) {
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t k = 0; k < k_len; ++k) lanes[k % 8] = std::fma(q[g * k_len + k], bf16_to_float(box[k]), lanes[k % 8]);
    const float a = (lanes[0] + lanes[4]) + (lanes[2] + lanes[6]);
    const float b = (lanes[1] + lanes[5]) + (lanes[3] + lanes[7]);
    out[g * out_stride] = a + b;
  }
}

#define STRATA_AVX2 __attribute__((target("avx2,fma")))

STRATA_AVX2 inline float hsum8(__m256 v) {
  // lanes (0+4, 1+5, 2+6, 3+7), then (0+2, 1+3), then 0+1: the scalar path's order.
  const __m128 quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
  return _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)));
}

STRATA_AVX2 inline __m256 load_bf16x8(const uint16_t* p) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

// Scores of pages [p0, p1) of one head for queries q[G, K].
STRATA_AVX2 void score_pages_avx2(const float* q, int64_t g_count, const uint16_t* box, int64_t box_stride,
                                  int64_t k_len, int64_t p0, int64_t p1, float* out, int64_t n) {
  for (int64_t p = p0; p < p1; ++p) {
    const uint16_t* b = box + p * box_stride;
    if (p + 4 < p1) _mm_prefetch(reinterpret_cast<const char*>(b + 4 * box_stride), _MM_HINT_T0);
    for (int64_t g0 = 0; g0 < g_count; g0 += kGroup) {
      const int64_t gs = std::min(kGroup, g_count - g0);
      __m256 acc[kGroup] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      for (int64_t k = 0; k < k_len; k += 8) {
        const __m256 x = load_bf16x8(b + k);
        for (int64_t j = 0; j < gs; ++j)
          acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (g0 + j) * k_len + k), x, acc[j]);
      }
      for (int64_t j = 0; j < gs; ++j) out[(g0 + j) * n + p] = hsum8(acc[j]);
    }
  }
}

bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}

at::Tensor page_scores(const at::Tensor& q, const at::Tensor& box) {
  TORCH_CHECK(q.dim() == 3 && box.dim() == 3, "page_scores: q [H, G, K] and box [H, n, K]");
  TORCH_CHECK(q.scalar_type() == at::kFloat && box.scalar_type() == at::kBFloat16,
              "page_scores: q float32, box bfloat16");
  TORCH_CHECK(q.size(0) == box.size(0) && q.size(2) == box.size(2), "page_scores: q and box shapes differ");
  TORCH_CHECK(box.stride(2) == 1, "page_scores: box rows must be contiguous");
  const at::Tensor qc = q.contiguous();
  const int64_t heads = q.size(0), groups = q.size(1), k_len = q.size(2), n = box.size(1);
  at::Tensor out = at::empty({heads, groups, n}, q.options());
  if (n == 0) return out;
  const float* qp = qc.data_ptr<float>();
  const uint16_t* bp = reinterpret_cast<const uint16_t*>(box.data_ptr<at::BFloat16>());
  float* op = out.data_ptr<float>();
  const int64_t hs = box.stride(0), ps = box.stride(1);
  const bool simd = has_avx2() && k_len % 8 == 0;
  const int64_t tasks_per_head = (n + kPagesPerTask - 1) / kPagesPerTask;
  at::parallel_for(0, heads * tasks_per_head, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t h = t / tasks_per_head;
      const int64_t p0 = (t % tasks_per_head) * kPagesPerTask, p1 = std::min(n, p0 + kPagesPerTask);
      const float* qh = qp + h * groups * k_len;
      float* oh = op + h * groups * n;
      if (simd) {
        score_pages_avx2(qh, groups, bp + h * hs, ps, k_len, p0, p1, oh, n);
      } else {
        for (int64_t p = p0; p < p1; ++p) score_page_scalar(qh, groups, bp + h * hs + p * ps, k_len, oh + p, n);
      }
    }
  });
  return out;
}

std::string isa() { return has_avx2() ? "avx2" : "scalar"; }

}  // namespace

TORCH_LIBRARY(strata_sparse, m) {
  m.def("page_scores(Tensor q, Tensor box) -> Tensor");
  m.def("isa() -> str", &isa);
}

TORCH_LIBRARY_IMPL(strata_sparse, CPU, m) { m.impl("page_scores", &page_scores); }
