/* Callgrind's client requests as plain functions, for ctypes (perf/callgrind.py builds and loads this).
 *
 * Each request is a magic instruction sequence that does nothing outside valgrind. The dump's name
 * must never be NULL: valgrind 3.19 dies with SIGSEGV on CALLGRIND_DUMP_STATS_AT(NULL).
 */
#include <valgrind/valgrind.h>
#include <valgrind/callgrind.h>

int perf_running_on_valgrind(void) { return (int)RUNNING_ON_VALGRIND; }
void perf_start_instrumentation(void) { CALLGRIND_START_INSTRUMENTATION; }
void perf_stop_instrumentation(void) { CALLGRIND_STOP_INSTRUMENTATION; }
void perf_toggle_collect(void) { CALLGRIND_TOGGLE_COLLECT; }
void perf_zero_stats(void) { CALLGRIND_ZERO_STATS; }
void perf_dump_stats_at(const char *name) { CALLGRIND_DUMP_STATS_AT(name ? name : ""); }
