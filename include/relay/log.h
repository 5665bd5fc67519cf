/**
 * @file log.h
 * Structured, levelled logging shared by every program (logfmt lines on stderr).
 *
 * One line per call: `ts=2026-12-04T21:48:48.123Z level=info msg="..."`. Safe from any thread:
 * each line is written with a single fprintf, which stdio serialises.
 */
#ifndef RELAY_LOG_H
#define RELAY_LOG_H

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF } log_level;

/* Sets the lowest level that is written. Call before starting threads. */
void log_set_level(log_level level);
log_level log_get_level(void);

/* Parses "debug", "info", "warn", "error" or "off". Returns 0, or -1 if the name is unknown. */
int log_level_parse(const char *name, log_level *out);
const char *log_level_name(log_level level);

/* Writes one line if level is enabled. fmt is a printf format for the msg text; the text is
 * quoted and escaped so a line always parses as logfmt. */
void log_write(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
