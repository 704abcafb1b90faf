/* ctest.h — a minimal assertion harness for the C unit tests (prints file:line, counts). */
#ifndef MTCP_CTEST_H
#define MTCP_CTEST_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

static int ctest_failures, ctest_checks;

#define CHECK(cond) do { ctest_checks++; if (!(cond)) { ctest_failures++; \
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECK_EQ(a, b) do { long long _a = (long long)(a), _b = (long long)(b); ctest_checks++; \
    if (_a != _b) { ctest_failures++; fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %s (%lld != %lld)\n", \
    __FILE__, __LINE__, #a, #b, _a, _b); } } while (0)
#define CHECK_MEM(a, b, n) do { ctest_checks++; if (memcmp((a), (b), (n)) != 0) { ctest_failures++; \
    fprintf(stderr, "%s:%d: CHECK_MEM failed: %s vs %s\n", __FILE__, __LINE__, #a, #b); } } while (0)
#define RUN(fn) do { int _before = ctest_failures; fn(); \
    fprintf(stderr, "  %-48s %s\n", #fn, ctest_failures == _before ? "ok" : "FAIL"); } while (0)
#define CTEST_END() do { fprintf(stderr, "%d checks, %d failed\n", ctest_checks, ctest_failures); \
    return ctest_failures ? 1 : 0; } while (0)

#endif
