/* The one clock for durations: seconds on CLOCK_MONOTONIC (never jumps with the wall clock).
 * Timings of steps, prepare and the benchmarks use it. Wall-clock times (the run lock's
 * heartbeat and timestamps) read CLOCK_REALTIME where they are needed, in run_dir.c; the
 * benchmarks also read the process's CPU time (sp__cpu_now). */
#ifndef SP_UTIL_CLOCK_H
#define SP_UTIL_CLOCK_H

/* Seconds since an arbitrary fixed point; differences are durations. */
double sp__now(void);

/* CPU seconds this process has run (all its threads, CLOCK_PROCESS_CPUTIME_ID): the benchmarks
 * report it beside the duration, as a measure that time spent waiting for a shared machine's
 * cores does not inflate (on an idle machine, duration x threads). */
double sp__cpu_now(void);

#endif
