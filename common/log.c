#include "relay/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static _Atomic int log_threshold = LOG_INFO;

static const char *const log_names[] = {"debug", "info", "warn", "error", "off"};

void log_set_level(log_level level)
{
    atomic_store(&log_threshold, (int)level);
}

log_level log_get_level(void)
{
    return (log_level)atomic_load(&log_threshold);
}

int log_level_parse(const char *name, log_level *out)
{
    for (int i = 0; i <= LOG_OFF; i++) {
        if (strcmp(name, log_names[i]) == 0) {
            *out = (log_level)i;
            return 0;
        }
    }
    return -1;
}

const char *log_level_name(log_level level)
{
    return (level >= LOG_DEBUG && level <= LOG_OFF) ? log_names[level] : "?";
}

/* Quotes msg in place of the raw text so a message with spaces, quotes or newlines stays one
 * logfmt field. */
static void log_escape(char *dst, size_t cap, const char *src)
{
    size_t o = 0;
    for (; *src && o + 3 < cap; src++) {
        char c = *src;
        if (c == '"' || c == '\\') {
            dst[o++] = '\\';
            dst[o++] = c;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            dst[o++] = ' ';
        } else {
            dst[o++] = c;
        }
    }
    dst[o] = '\0';
}

void log_write(log_level level, const char *fmt, ...)
{
    if ((int)level < atomic_load(&log_threshold) || level >= LOG_OFF)
        return;
    char text[1024], quoted[2100], stamp[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    log_escape(quoted, sizeof quoted, text);

    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000);
    fprintf(stderr, "ts=%s level=%s msg=\"%s\"\n", stamp, log_names[level], quoted);
}
