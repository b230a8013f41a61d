/* nvrag's widened product for few rows: out = x @ w.T with x float32 and w bfloat16 (or int8 rows times a float32
 * scale per output), computed in float32 on AVX2 + FMA without ever holding a float32 copy of w.
 *
 * Why: on a CPU without bfloat16 arithmetic nvrag keeps a 7-8 B model's weights in bfloat16 (or int8) and widens
 * them to float32 for the product (model/widened.py). Through PyTorch that is two passes, a widening copy and then
 * MKL's sgemm, which at a query's ~30 rows packs the weight again and reaches about a third of the float32 peak.
 * Here each weight panel (4 rows x KC columns) is widened once into an L1-resident buffer and multiplied by every
 * input row from there, with the next panel's bytes prefetched while this one computes: one pass over the weight.
 *
 * Layout: x (rows, K) with leading dimension ldx; w (N, K) contiguous; out (rows, ldo) written at columns n0..n1
 * only (so that threads split N); xbuf a float32 scratch of rows * (K + 16). K must be a multiple of 8.
 * The sums run in a different order than BLAS: results agree with torch's to float32 rounding.
 *
 * Python: widemm(x, rows, K, ldx, w, kind, scale, n0, n1, out, ldo, xbuf) with addresses as integers (the caller,
 * model/widened.py, checks every shape, dtype and stride first); kind 0 bfloat16, 1 int8 (scale: float32 per
 * output row). It releases the GIL, so threads each computing a slice of the columns run in parallel.
 * available() says whether this build has the kernel (x86-64 only); the caller also checks the CPU's flags.
 *
 * team(x, rows, K, ldx, w, kind, scale, N, out, ldo, xbuf, xstride, threads) computes all N columns split over
 * `threads` threads of the OpenMP runtime already in the process (PyTorch's, found by name: GOMP_parallel, which
 * GNU's and LLVM's/Intel's runtimes all export), each thread with its own xbuf at xbuf + tid * xstride floats. Why
 * not Python threads: after each of PyTorch's parallel ops its OpenMP threads spin-wait for the next (GNU's
 * default: ~300,000 spins), so other threads started for the kernel share the cores with spinning ones (a real-shape
 * NV-Embed-v2 query on 2 cores: 4.4 s against 3.2 s); run by those same threads the kernel finds them hot. It
 * returns False, computing nothing, where no OpenMP runtime is loaded: the caller then uses its own threads.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h> /* RTLD_DEFAULT: Python.h defines _GNU_SOURCE */
#include <stdint.h>
#include <string.h>
#include <unistd.h> /* sysconf: the L2's size */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define NVRAG_HAVE_KERNEL 1
#include <immintrin.h>

#define KC 1024      /* columns of a panel: 4 rows of 4 KiB widened, in L1 */
#define PS (KC + 16) /* a panel row's stride: off a 4 KiB multiple, so the rows do not share L1 sets */
#define NR 4         /* weight rows per panel */
#define NB 128       /* weight rows per block of the output's columns, where x is large (widemm) */
#define AVX2 __attribute__((target("avx2,fma")))

static int64_t l2_bytes = 512 << 10; /* this CPU's L2 per core, read at import (sysconf), else 512 KiB */

AVX2 static inline __m256 widen_bf16(const uint16_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AVX2 static inline __m256 widen_int8(const int8_t *p) {
    __m128i h = _mm_loadl_epi64((const __m128i *)p);
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(h));
}

AVX2 static inline float hsum(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* out[i, j] += sum_k x[i, k] * panel[j, k] for R input rows and the panel's nr (<= NR) rows, k < kc */
#define KERNEL(R)                                                                                                    \
    AVX2 static void kernel##R(const float *x, int64_t ldx, const float *panel, int64_t kc, float *out, int64_t ldo, \
                               int nr) {                                                                             \
        __m256 acc[R][NR];                                                                                           \
        for (int i = 0; i < R; i++)                                                                                  \
            for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps();                                            \
        for (int64_t k = 0; k < kc; k += 8) {                                                                        \
            __m256 w0 = _mm256_load_ps(panel + k), w1 = _mm256_load_ps(panel + PS + k);                              \
            __m256 w2 = _mm256_load_ps(panel + 2 * PS + k), w3 = _mm256_load_ps(panel + 3 * PS + k);                 \
            for (int i = 0; i < R; i++) {                                                                            \
                __m256 xv = _mm256_loadu_ps(x + i * ldx + k);                                                        \
                acc[i][0] = _mm256_fmadd_ps(xv, w0, acc[i][0]);                                                      \
                acc[i][1] = _mm256_fmadd_ps(xv, w1, acc[i][1]);                                                      \
                acc[i][2] = _mm256_fmadd_ps(xv, w2, acc[i][2]);                                                      \
                acc[i][3] = _mm256_fmadd_ps(xv, w3, acc[i][3]);                                                      \
            }                                                                                                        \
        }                                                                                                            \
        for (int i = 0; i < R; i++)                                                                                  \
            for (int j = 0; j < nr; j++) out[i * ldo + j] += hsum(acc[i][j]);                                        \
    }
KERNEL(1)
KERNEL(2)
KERNEL(3)

AVX2 static void widemm(const float *x, int64_t rows, int64_t K, int64_t ldx, const void *w, int kind,
                        const float *scale, int64_t n0, int64_t n1, float *out, int64_t ldo, float *xbuf) {
    const int64_t lx = K + 16, esz = kind == 1 ? 1 : 2;
    float panel[NR * PS] __attribute__((aligned(64)));
    for (int64_t r = 0; r < rows; r++) memcpy(xbuf + r * lx, x + r * ldx, (size_t)K * sizeof(float));
    for (int64_t r = 0; r < rows; r++) memset(out + r * ldo + n0, 0, (size_t)(n1 - n0) * sizeof(float));
    /* Blocks of the output's columns: each panel of columns k0.. is multiplied for a block's weight rows before
       the next, so x's columns k0.. stay in L2 for the whole block. An x larger than most of L2 (a query's 29 rows
       of 4,096: 464 KiB) was otherwise read from L3 again for every 4 weight rows (a decoder layer 5-9% slower on
       an AVX2 EPYC: docs/performance.md, session 28); a smaller one keeps blocks of NR, each row of the weight
       read in one pass (faster at few rows, where the product waits on the weight's bytes). */
    const int64_t block = rows * K * (int64_t)sizeof(float) > l2_bytes / 4 * 3 ? NB : NR;
    for (int64_t nb = n0; nb < n1; nb += block) {
        const int64_t nb1 = n1 - nb < block ? n1 : nb + block;
        for (int64_t k0 = 0; k0 < K; k0 += KC) {
            const int64_t kc = K - k0 < KC ? K - k0 : KC;
            for (int64_t n = nb; n < nb1; n += NR) {
                const int nr = (int)(nb1 - n < NR ? nb1 - n : NR);
                for (int j = 0; j < NR; j++) {
                    float *dst = panel + j * PS;
                    if (j >= nr) {
                        memset(dst, 0, (size_t)kc * sizeof(float));
                    } else if (kind == 0) {
                        const uint16_t *src = (const uint16_t *)w + (n + j) * K + k0;
                        for (int64_t k = 0; k < kc; k += 8) _mm256_store_ps(dst + k, widen_bf16(src + k));
                    } else {
                        const int8_t *src = (const int8_t *)w + (n + j) * K + k0;
                        for (int64_t k = 0; k < kc; k += 8) _mm256_store_ps(dst + k, widen_int8(src + k));
                    }
                }
                /* the next panel's bytes (the block's next rows at these columns, else its first rows at the next
                   columns, else the next block's first rows at the first), fetched into L2 a share per block of
                   input rows while this panel computes: rows lie K apart, no stream a prefetcher sees */
                int64_t nn = n + NR, nk = k0, until = nb1;
                if (nn >= nb1) {
                    nn = nb;
                    nk = k0 + KC;
                    if (nk >= K) {
                        nn = nb1;
                        nk = 0;
                        until = n1 - nb1 < block ? n1 : nb1 + block;
                    }
                }
                const int64_t nkc = K - nk < KC ? K - nk : KC, lines = (nkc * esz + 63) / 64;
                const int64_t total = nn < until ? (until - nn < NR ? until - nn : NR) * lines : 0;
                const int64_t blocks = rows / 3 > 0 ? rows / 3 : 1, per = (total + blocks - 1) / blocks;
                int64_t r = 0, fetched = 0;
                for (; r + 3 <= rows; r += 3) {
                    for (int64_t t = 0; t < per && fetched < total; t++, fetched++) {
                        const int64_t j = fetched / lines, line = fetched % lines;
                        _mm_prefetch((const char *)w + ((nn + j) * K + nk) * esz + line * 64, _MM_HINT_T1);
                    }
                    kernel3(xbuf + r * lx + k0, lx, panel, kc, out + r * ldo + n, ldo, nr);
                }
                if (rows - r == 2) kernel2(xbuf + r * lx + k0, lx, panel, kc, out + r * ldo + n, ldo, nr);
                if (rows - r == 1) kernel1(xbuf + r * lx + k0, lx, panel, kc, out + r * ldo + n, ldo, nr);
            }
        }
        if (kind == 1)
            for (int64_t r = 0; r < rows; r++)
                for (int64_t n = nb; n < nb1; n++) out[r * ldo + n] *= scale[n];
    }
}

typedef void (*gomp_parallel_t)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*omp_int_t)(void);

struct job {
    const float *x;
    int64_t rows, K, ldx;
    const void *w;
    int kind;
    const float *scale;
    int64_t N;
    float *out;
    int64_t ldo;
    float *xbuf;
    int64_t xstride, slots;
    omp_int_t thread_num, num_threads;
};

/* one OpenMP thread's share: a slice of the columns, cut at multiples of NR */
static void team_slice(void *arg) {
    const struct job *j = (const struct job *)arg;
    const int64_t tid = j->thread_num(), count = j->num_threads(); /* the team may be smaller than asked */
    if (tid >= j->slots) return;
    const int64_t n0 = j->N * tid / count / NR * NR;
    const int64_t n1 = tid + 1 == count ? j->N : j->N * (tid + 1) / count / NR * NR;
    if (n1 > n0)
        widemm(j->x, j->rows, j->K, j->ldx, j->w, j->kind, j->scale, n0, n1, j->out, j->ldo,
               j->xbuf + tid * j->xstride);
}
#else
#define NVRAG_HAVE_KERNEL 0
#endif

static PyObject *py_widemm(PyObject *self, PyObject *args) {
    (void)self;
    Py_ssize_t x, rows, K, ldx, w, scale, n0, n1, out, ldo, xbuf;
    int kind;
    if (!PyArg_ParseTuple(args, "nnnnninnnnnn", &x, &rows, &K, &ldx, &w, &kind, &scale, &n0, &n1, &out, &ldo,
                          &xbuf))
        return NULL;
    if (!NVRAG_HAVE_KERNEL || K % 8 || rows < 0 || n0 < 0 || n1 < n0 || (kind != 0 && kind != 1) ||
        (kind == 1 && !scale)) {
        PyErr_SetString(PyExc_ValueError, "widemm: unsupported arguments");
        return NULL;
    }
#if NVRAG_HAVE_KERNEL
    Py_BEGIN_ALLOW_THREADS
    widemm((const float *)x, rows, K, ldx, (const void *)w, kind, (const float *)scale, n0, n1, (float *)out, ldo,
           (float *)xbuf);
    Py_END_ALLOW_THREADS
#endif
    Py_RETURN_NONE;
}

static PyObject *py_team(PyObject *self, PyObject *args) {
    (void)self;
    Py_ssize_t x, rows, K, ldx, w, scale, N, out, ldo, xbuf, xstride, threads;
    int kind;
    if (!PyArg_ParseTuple(args, "nnnnninnnnnnn", &x, &rows, &K, &ldx, &w, &kind, &scale, &N, &out, &ldo, &xbuf,
                          &xstride, &threads))
        return NULL;
    if (!NVRAG_HAVE_KERNEL || K % 8 || rows < 0 || N < 0 || threads < 1 || xstride < rows * (K + 16) ||
        (kind != 0 && kind != 1) || (kind == 1 && !scale)) {
        PyErr_SetString(PyExc_ValueError, "widemm: unsupported arguments");
        return NULL;
    }
#if NVRAG_HAVE_KERNEL
    /* looked up until found, then kept (the GIL is held here, so one thread at a time writes them) */
    static gomp_parallel_t parallel;
    static omp_int_t thread_num, num_threads;
    if (!parallel || !thread_num || !num_threads) {
        parallel = (gomp_parallel_t)dlsym(RTLD_DEFAULT, "GOMP_parallel");
        thread_num = (omp_int_t)dlsym(RTLD_DEFAULT, "omp_get_thread_num");
        num_threads = (omp_int_t)dlsym(RTLD_DEFAULT, "omp_get_num_threads");
        if (!parallel || !thread_num || !num_threads) Py_RETURN_FALSE;
    }
    struct job j = {(const float *)x, rows, K, ldx, (const void *)w, kind, (const float *)scale, N, (float *)out, ldo,
                    (float *)xbuf, xstride, threads, thread_num, num_threads};
    Py_BEGIN_ALLOW_THREADS
    parallel(team_slice, &j, (unsigned)threads, 0);
    Py_END_ALLOW_THREADS
#endif
    Py_RETURN_TRUE;
}

static PyObject *py_available(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyBool_FromLong(NVRAG_HAVE_KERNEL);
}

static PyMethodDef methods[] = {
    {"widemm", py_widemm, METH_VARARGS, "out[:, n0:n1] = x @ w[n0:n1].T in float32 (addresses as integers)"},
    {"team", py_team, METH_VARARGS, "out = x @ w.T, the columns split over the process's OpenMP threads"},
    {"available", py_available, METH_NOARGS, "whether this build has the AVX2 kernel"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_widemm", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__widemm(void) {
#if NVRAG_HAVE_KERNEL && defined(_SC_LEVEL2_CACHE_SIZE)
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (l2 >= 64 << 10) l2_bytes = l2;
#endif
    return PyModule_Create(&module);
}
