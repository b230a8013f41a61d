/* One core's multiply-accumulate rate on AVX2 + FMA: float32 FMA against the integer dot products an AVX2 CPU
 * without VNNI has (int16 pairs: vpmaddwd then vpaddd; unsigned x signed bytes: vpmaddubsw, vpmaddwd by ones,
 * vpaddd, the sequence oneDNN's AVX2 int8 kernels use). Why: `--dtype int8` on such a CPU widens its int8 weights
 * to float32 (model/widened.py); this says whether an integer kernel could beat that (docs/performance.md, "int8
 * weights, float32 arithmetic").
 *
 *     cc -O3 -o /tmp/dot_throughput bench/dot_throughput.c && /tmp/dot_throughput
 *
 * Each loop keeps 2 input vectors x 4 weight vectors = 8 independent accumulators (registers only, as in a
 * matmul's inner block), so the rate is the execution ports', not memory's or a dependency chain's.
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define STEPS 100000000L
#define AVX2 __attribute__((target("avx2,fma")))

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* the compiler must keep the operands in registers and may not fold the loop away */
#define OPAQUE(a, b, c, d, e, f) __asm__ volatile("" : "+x"(a), "+x"(b), "+x"(c), "+x"(d), "+x"(e), "+x"(f))

AVX2 static double fma_rate(float *sink) {
    __m256 acc[8];
    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    __m256 w0 = _mm256_set1_ps(1e-3f), w1 = _mm256_set1_ps(2e-3f), w2 = _mm256_set1_ps(3e-3f);
    __m256 w3 = _mm256_set1_ps(4e-3f), x0 = _mm256_set1_ps(1e-3f), x1 = _mm256_set1_ps(2e-3f);
    double start = now();
    for (long s = 0; s < STEPS; s++) {
        OPAQUE(w0, w1, w2, w3, x0, x1);
        acc[0] = _mm256_fmadd_ps(x0, w0, acc[0]), acc[1] = _mm256_fmadd_ps(x0, w1, acc[1]);
        acc[2] = _mm256_fmadd_ps(x0, w2, acc[2]), acc[3] = _mm256_fmadd_ps(x0, w3, acc[3]);
        acc[4] = _mm256_fmadd_ps(x1, w0, acc[4]), acc[5] = _mm256_fmadd_ps(x1, w1, acc[5]);
        acc[6] = _mm256_fmadd_ps(x1, w2, acc[6]), acc[7] = _mm256_fmadd_ps(x1, w3, acc[7]);
    }
    double seconds = now() - start;
    for (int i = 0; i < 8; i++) *sink += _mm256_cvtss_f32(acc[i]);
    return 8.0 * 8 * STEPS / seconds; /* 8 lanes x 8 instructions a step */
}

AVX2 static double int16_rate(int *sink) {
    __m256i acc[8];
    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_si256();
    __m256i w0 = _mm256_set1_epi16(1), w1 = _mm256_set1_epi16(2), w2 = _mm256_set1_epi16(3);
    __m256i w3 = _mm256_set1_epi16(4), x0 = _mm256_set1_epi16(5), x1 = _mm256_set1_epi16(6);
#define MADD(i, x, w) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(x, w))
    double start = now();
    for (long s = 0; s < STEPS; s++) {
        OPAQUE(w0, w1, w2, w3, x0, x1);
        MADD(0, x0, w0), MADD(1, x0, w1), MADD(2, x0, w2), MADD(3, x0, w3);
        MADD(4, x1, w0), MADD(5, x1, w1), MADD(6, x1, w2), MADD(7, x1, w3);
    }
    double seconds = now() - start;
    for (int i = 0; i < 8; i++) *sink += _mm256_cvtsi256_si32(acc[i]);
    return 16.0 * 8 * STEPS / seconds; /* 16 products x 8 a step */
}

AVX2 static double int8_rate(int *sink) {
    __m256i acc[8], ones = _mm256_set1_epi16(1);
    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_si256();
    __m256i w0 = _mm256_set1_epi8(1), w1 = _mm256_set1_epi8(2), w2 = _mm256_set1_epi8(3);
    __m256i w3 = _mm256_set1_epi8(4), x0 = _mm256_set1_epi8(5), x1 = _mm256_set1_epi8(6);
#define MADDUBS(i, x, w) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), ones))
    double start = now();
    for (long s = 0; s < STEPS; s++) {
        OPAQUE(w0, w1, w2, w3, x0, x1);
        MADDUBS(0, x0, w0), MADDUBS(1, x0, w1), MADDUBS(2, x0, w2), MADDUBS(3, x0, w3);
        MADDUBS(4, x1, w0), MADDUBS(5, x1, w1), MADDUBS(6, x1, w2), MADDUBS(7, x1, w3);
    }
    double seconds = now() - start;
    for (int i = 0; i < 8; i++) *sink += _mm256_cvtsi256_si32(acc[i]);
    return 32.0 * 8 * STEPS / seconds; /* 32 products x 8 a step */
}

int main(void) {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        puts("this CPU has no AVX2 and FMA: nothing to measure");
        return 1;
    }
    float fsink = 0;
    int isink = 0;
    double fma = fma_rate(&fsink), i16 = int16_rate(&isink), i8 = int8_rate(&isink);
    printf("one core, multiply-accumulates a second (best of the loop, 8 accumulators):\n");
    printf("  float32 FMA                         %6.1f G  1.00x\n", fma / 1e9);
    printf("  int16 pairs (vpmaddwd + vpaddd)     %6.1f G  %.2fx\n", i16 / 1e9, i16 / fma);
    printf("  u8 x s8 (vpmaddubsw+vpmaddwd+vpaddd) %5.1f G  %.2fx\n", i8 / 1e9, i8 / fma);
    printf("(sinks %g %d)\n", (double)fsink, isink);
    return 0;
}
