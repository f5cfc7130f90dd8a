/* bench/micro/micro.h: what the in-process micro-benchmarks share: a clock,
 * order statistics, the machine and the process's memory, a deterministic
 * random source. Benchmarks only: nothing here is part of trellis. */
#ifndef TR_BENCH_MICRO_H
#define TR_BENCH_MICRO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t micro_now_ns(void);

/* What one clock read costs here (median of many back-to-back pairs), so a
 * report can say how much of a batch's time is the clock's. */
double micro_clock_cost_ns(void);

/* The q-quantile (0..1) of v[0..n), nearest rank; sorts v in place. n > 0. */
double micro_quantile(double *v, size_t n, double q);

/* Bytes the allocator has handed out and not taken back (mallinfo2), and the
 * process's resident set in KiB (/proc/self/statm); 0 when unreadable. */
size_t micro_heap_bytes(void);
size_t micro_rss_kib(void);

/* "MODEL, N CPUs, load A B C" on one line, for the report's header. */
void micro_print_machine(FILE *out);

/* xorshift64*: the same sequence for the same seed, so every run measures
 * the same request set. */
struct micro_rng {
    uint64_t s;
};
uint64_t micro_rng_next(struct micro_rng *r);
/* Uniform in [0, n), n > 0 (modulo bias is irrelevant at these sizes). */
uint32_t micro_rng_below(struct micro_rng *r, uint32_t n);

/* Print "what: message" to stderr and exit(1): a benchmark that cannot set up
 * its input, or whose answers are wrong, must not print numbers. */
_Noreturn void micro_die(const char *what, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
