/* The textbook Leibniz loop, as the Mesos tutorials write it: one division per term, a sign
 * flip, one accumulator. The reference the Rust kernel is measured against (cc -O3).
 * Usage: leibniz TERMS  ->  prints {"terms":N,"wall_s":S,"terms_per_s":R,"pi":P}            */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    unsigned long long n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000000ULL;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double sum = 0.0, sign = 1.0;
    for (unsigned long long k = 0; k < n; k++) {
        sum += sign / (2.0 * (double)k + 1.0);
        sign = -sign;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double wall = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("{\"terms\":%llu,\"wall_s\":%.6f,\"terms_per_s\":%.6e,\"pi\":%.17g}\n", n, wall, n / wall, 4.0 * sum);
    return 0;
}
