/**
 * @file procstat.h
 * CPU time and resident memory of this process and of the measured node processes, read from
 * getrusage() and /proc. Stateless; any thread may call these.
 */
#ifndef RELAY_BENCH_PROCSTAT_H
#define RELAY_BENCH_PROCSTAT_H

/* User + system CPU seconds of process pid (from /proc/PID/stat), or -1 if unreadable. */
double procstat_cpu_s(int pid);

/* User + system CPU seconds of this process so far. */
double procstat_self_cpu_s(void);

/* VmRSS of process pid in kB (from /proc/PID/status), or -1 if unreadable. */
long procstat_rss_kb(int pid);

#endif
