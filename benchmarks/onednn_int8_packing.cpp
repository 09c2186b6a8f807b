// Does packing the int8 weight once make the int8 GEMM faster? (issue 21, evidence, not part of the lab)
//
// torch._int_mm takes a plain int8 weight at every call; fbgemm (torch.ao) packs its weight once.
// This times oneDNN's s8 x s8 -> s32 matmul, exact as Exercise 1.7 needs it, at BERT-base's shapes
// (1024 tokens), three ways: on a weight packed once into oneDNN's own layout, on the plain
// column-major weight QuantizedLinear stores, and packing at every call. The output buffer is
// reused, so no time goes to page faults (see docs/benchmarks.md). Build and run, from this folder:
//
//   pip download --no-deps onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0 -d /tmp/dnnl
//   (cd /tmp/dnnl && for w in *.whl; do python -m zipfile -e "$w" .; done)
//   D=/tmp/dnnl/onednn_cpu_gomp-2023.2.0.data/data; I=/tmp/dnnl/onednn_devel_cpu_gomp-2023.2.0.data/data
//   g++ -O2 -std=c++17 onednn_int8_packing.cpp -I$I/include -L$D/lib -ldnnl -Wl,-rpath,$D/lib -o /tmp/packing
//   OMP_NUM_THREADS=1 /tmp/packing
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

static double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <typename F>
static double median_ms(F run) {
  run();
  run();
  std::vector<double> times;
  for (int i = 0; i < 9; i++) {
    double start = seconds();
    run();
    times.push_back(seconds() - start);
  }
  std::sort(times.begin(), times.end());
  return 1000 * times[4];
}

int main() {
  engine cpu(engine::kind::cpu, 0);
  stream s(cpu);
  struct Shape { long m, k, n, count; };  // count: such Linear layers in BERT-base MLM (768x768: 48 in the encoder, 1 in the head)
  const std::vector<Shape> shapes = {{1024, 768, 768, 49}, {1024, 768, 3072, 12}, {1024, 3072, 768, 12},
                                     {1024, 768, 30522, 1}};
  std::mt19937 rng(0);
  std::uniform_int_distribution<int> int8_value(-127, 127);
  double packed_total = 0, plain_total = 0, repacked_total = 0;
  for (const Shape& shape : shapes) {
    const long M = shape.m, K = shape.k, N = shape.n;
    std::vector<int8_t> a(M * K), b(K * N);  // b column-major: b[j * K + k] is W[k, j]
    std::vector<int32_t> c(M * N);
    for (auto& v : a) v = int8_value(rng);
    for (auto& v : b) v = int8_value(rng);
    memory::desc a_md({M, K}, dt::s8, tag::ab), b_plain_md({K, N}, dt::s8, tag::ba),
        b_any_md({K, N}, dt::s8, tag::any), c_md({M, N}, dt::s32, tag::ab);
    auto packed_pd = matmul::primitive_desc(cpu, a_md, b_any_md, c_md);
    auto plain_pd = matmul::primitive_desc(cpu, a_md, b_plain_md, c_md);
    matmul packed_mm(packed_pd), plain_mm(plain_pd);
    memory a_m(a_md, cpu, a.data()), b_m(b_plain_md, cpu, b.data()), c_m(c_md, cpu, c.data());
    memory b_packed(packed_pd.weights_desc(), cpu);
    reorder(b_m, b_packed).execute(s, b_m, b_packed);
    s.wait();

    auto on_packed = [&] {
      packed_mm.execute(s, {{DNNL_ARG_SRC, a_m}, {DNNL_ARG_WEIGHTS, b_packed}, {DNNL_ARG_DST, c_m}});
      s.wait();
    };
    auto on_plain = [&] {
      plain_mm.execute(s, {{DNNL_ARG_SRC, a_m}, {DNNL_ARG_WEIGHTS, b_m}, {DNNL_ARG_DST, c_m}});
      s.wait();
    };
    auto packing_each_call = [&] {
      memory fresh(packed_pd.weights_desc(), cpu);
      reorder(b_m, fresh).execute(s, b_m, fresh);
      packed_mm.execute(s, {{DNNL_ARG_SRC, a_m}, {DNNL_ARG_WEIGHTS, fresh}, {DNNL_ARG_DST, c_m}});
      s.wait();
    };
    const double packed = median_ms(on_packed), plain = median_ms(on_plain), repacked = median_ms(packing_each_call);

    on_packed();  // exactness: every 97th row and 89th column against a plain int32 sum
    long mismatches = 0;
    for (long i = 0; i < M; i += 97)
      for (long j = 0; j < N; j += 89) {
        int32_t sum = 0;
        for (long k = 0; k < K; k++) sum += int32_t(a[i * K + k]) * int32_t(b[j * K + k]);
        mismatches += sum != c[i * N + j];
      }
    std::printf("%ldx%ld @ %ldx%ld: packed once %.2f ms, plain column-major weight %.2f ms, packed at every call "
                "%.2f ms (%s; %ld mismatches)\n",
                M, K, K, N, packed, plain, repacked, packed_pd.impl_info_str(), mismatches);
    packed_total += shape.count * packed;
    plain_total += shape.count * plain;
    repacked_total += shape.count * repacked;
  }
  std::printf("summed over BERT-base MLM's 74 Linear layers: packed once %.0f ms, plain weight %.0f ms, packed at "
              "every call %.0f ms\n", packed_total, plain_total, repacked_total);
}
