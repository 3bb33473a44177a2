/* Roofline reference: sgemm GFLOP/s of the system OpenBLAS (the library bottleneck links).
   Build/run: cc -O2 Benchmarks/peers/sgemm_peak.c -I/usr/include/x86_64-linux-gnu/openblas-pthread -lopenblas -o /tmp/sgemm_peak
              /tmp/sgemm_peak THREADS [N]
   Prints wall and CPU-time based GFLOP/s for an N x N x N sgemm (best of 5). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
void openblas_set_num_threads(int);
char *openblas_get_corename(void);
static double now(clockid_t c) { struct timespec t; clock_gettime(c, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, n = argc > 2 ? atoi(argv[2]) : 2048;
    openblas_set_num_threads(threads);
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    for (long i = 0; i < (long)n * n; i++) { a[i] = (float)(i % 7) * 0.1f; b[i] = (float)(i % 5) * 0.1f; c[i] = 0; }
    double best = 1e9, bestCpu = 1e9;
    for (int r = 0; r < 6; r++) {
        double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double w = now(CLOCK_MONOTONIC) - w0, cpu = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
        if (r > 0 && w < best) best = w;
        if (r > 0 && cpu < bestCpu) bestCpu = cpu;
    }
    double flops = 2.0 * n * n * n;
    printf("core %s threads %d n %d: %.1f GFLOP/s wall, %.1f GFLOP/s per CPU-second\n", openblas_get_corename(), threads, n,
           flops / best / 1e9, flops / bestCpu / 1e9);
    return 0;
}
