/* The one clock for durations: seconds on CLOCK_MONOTONIC (never jumps with the wall clock).
 * Timings of steps, prepare and the benchmarks use it. Wall-clock times (the run lock's
 * heartbeat and timestamps) read CLOCK_REALTIME where they are needed, in run_dir.c. */
#ifndef SP_UTIL_CLOCK_H
#define SP_UTIL_CLOCK_H

/* Seconds since an arbitrary fixed point; differences are durations. */
double sp__now(void);

#endif
