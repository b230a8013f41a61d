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

/* One timed loop: 8 accumulators (2 inputs x 4 weights) of type T, each step STEP(i, x, w) on every pair; the
   multiply-accumulates a second, PER of them an accumulator's step. SINK folds the results into *sink. */
#define RATE(name, T, S, ZERO, SET1, a, b, c, d, e, f, STEP, PER, SINK)                                          \
    AVX2 static double name(S *sink) {                                                                         \
        T acc[8], w0 = SET1(a), w1 = SET1(b), w2 = SET1(c), w3 = SET1(d), x0 = SET1(e), x1 = SET1(f);             \
        for (int i = 0; i < 8; i++) acc[i] = ZERO();                                                           \
        double start = now();                                                                                  \
        for (long s = 0; s < STEPS; s++) {                                                                     \
            OPAQUE(w0, w1, w2, w3, x0, x1);                                                                    \
            STEP(0, x0, w0), STEP(1, x0, w1), STEP(2, x0, w2), STEP(3, x0, w3);                                \
            STEP(4, x1, w0), STEP(5, x1, w1), STEP(6, x1, w2), STEP(7, x1, w3);                                \
        }                                                                                                      \
        double seconds = now() - start;                                                                        \
        for (int i = 0; i < 8; i++) *sink += SINK(acc[i]);                                                     \
        return PER * 8.0 * STEPS / seconds;                                                                    \
    }

#define FMA(i, x, w) acc[i] = _mm256_fmadd_ps(x, w, acc[i])
#define MADD(i, x, w) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(x, w))
#define MADDUBS(i, x, w) \
    acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), _mm256_set1_epi16(1)))

/* float32: 8 lanes a step; int16 pairs: 16 products; unsigned x signed bytes: 32 products */
RATE(fma_rate, __m256, float, _mm256_setzero_ps, _mm256_set1_ps, 1e-3f, 2e-3f, 3e-3f, 4e-3f, 1e-3f, 2e-3f, FMA, 8,
     _mm256_cvtss_f32)
RATE(int16_rate, __m256i, int, _mm256_setzero_si256, _mm256_set1_epi16, 1, 2, 3, 4, 5, 6, MADD, 16,
     _mm256_cvtsi256_si32)
RATE(int8_rate, __m256i, int, _mm256_setzero_si256, _mm256_set1_epi8, 1, 2, 3, 4, 5, 6, MADDUBS, 32,
     _mm256_cvtsi256_si32)

int main(void) {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        puts("this CPU has no AVX2 and FMA: nothing to measure");
        return 1;
    }
    float fsink = 0;
    int isink = 0;
    double fma = fma_rate(&fsink), i16 = int16_rate(&isink), i8 = int8_rate(&isink);
    printf("one core, multiply-accumulates a second (one timed loop each, 8 accumulators):\n");
    printf("  float32 FMA                         %6.1f G  1.00x\n", fma / 1e9);
    printf("  int16 pairs (vpmaddwd + vpaddd)     %6.1f G  %.2fx\n", i16 / 1e9, i16 / fma);
    printf("  u8 x s8 (vpmaddubsw+vpmaddwd+vpaddd) %5.1f G  %.2fx\n", i8 / 1e9, i8 / fma);
    printf("(sinks %g %d)\n", (double)fsink, isink);
    return 0;
}
