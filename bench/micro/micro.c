/* bench/micro/micro.c: see micro.h. */
#include "micro.h"

#include <malloc.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t micro_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double micro_clock_cost_ns(void)
{
    enum { PAIRS = 1001 };
    static double d[PAIRS];
    for (size_t i = 0; i < PAIRS; i++) {
        uint64_t a = micro_now_ns();
        uint64_t b = micro_now_ns();
        d[i] = (double)(b - a);
    }
    return micro_quantile(d, PAIRS, 0.5);
}

static int micro_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double micro_quantile(double *v, size_t n, double q)
{
    qsort(v, n, sizeof(*v), micro_cmp_double);
    size_t rank = (size_t)(q * (double)n + 0.999999); /* ceil(q n), 1-based */
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

size_t micro_heap_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd; /* small blocks in use + mmap'd large ones */
}

size_t micro_rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    unsigned long size = 0, resident = 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    if (n != 2)
        return 0;
    return resident * (size_t)sysconf(_SC_PAGESIZE) / 1024u;
}

void micro_print_machine(FILE *out)
{
    char model[256] = "unknown CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f != NULL) {
        char line[512];
        while (fgets(line, sizeof(line), f) != NULL) {
            if (strncmp(line, "model name", 10) != 0)
                continue;
            const char *colon = strchr(line, ':');
            if (colon == NULL)
                break;
            colon += 1 + (colon[1] == ' ');
            size_t len = strcspn(colon, "\n");
            if (len >= sizeof(model))
                len = sizeof(model) - 1;
            memcpy(model, colon, len);
            model[len] = '\0';
            break;
        }
        fclose(f);
    }
    char load[64] = "?";
    f = fopen("/proc/loadavg", "r");
    if (f != NULL) {
        double a, b, c;
        if (fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3)
            snprintf(load, sizeof(load), "%.2f %.2f %.2f", a, b, c);
        fclose(f);
    }
    fprintf(out, "machine: %s, %ld CPUs online, load average %s\n", model,
            sysconf(_SC_NPROCESSORS_ONLN), load);
}

uint64_t micro_rng_next(struct micro_rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 2685821657736338717ull;
}

uint32_t micro_rng_below(struct micro_rng *r, uint32_t n)
{
    return (uint32_t)((micro_rng_next(r) >> 32) % n);
}

void micro_die(const char *what, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", what);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}
