/**
 * @file clock.h
 * Time sources: a monotonic clock for deadlines and rates, the wall clock for tokens and logs.
 */
#ifndef RELAY_CLOCK_H
#define RELAY_CLOCK_H

#include <stdint.h>

/* Milliseconds and microseconds on CLOCK_MONOTONIC; never goes backwards. */
int64_t clock_mono_ms(void);
int64_t clock_mono_us(void);

/* Milliseconds and seconds since the Unix epoch (CLOCK_REALTIME). */
int64_t clock_wall_ms(void);
int64_t clock_wall_s(void);

#endif
