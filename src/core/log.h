/* core/log.h: structured error log. One line per event, "ts level [worker] msg",
 * written with a single write(2) so lines from different threads never mix.
 * The level is a global read on every call without a lock (relaxed atomic). */
#ifndef TR_CORE_LOG_H
#define TR_CORE_LOG_H

enum tr_log_level { TR_LOG_ERROR = 0, TR_LOG_WARN, TR_LOG_INFO, TR_LOG_DEBUG };

void tr_log_set_level(enum tr_log_level level);
enum tr_log_level tr_log_get_level(void);
/* Parses "error", "warn", "info", "debug"; returns -1 if unknown. */
int tr_log_level_parse(const char *name);
const char *tr_log_level_name(enum tr_log_level level);
/* Tag of the calling thread for log lines ("main", "w0", ...). */
void tr_log_set_thread_name(const char *name);

void tr_log(enum tr_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define tr_log_enabled(lvl) ((lvl) <= tr_log_get_level())
#define TR_LOG(lvl, ...)                                                                           \
    do {                                                                                           \
        if (tr_log_enabled(lvl))                                                                   \
            tr_log((lvl), __VA_ARGS__);                                                            \
    } while (0)
#define tr_err(...)   TR_LOG(TR_LOG_ERROR, __VA_ARGS__)
#define tr_warn(...)  TR_LOG(TR_LOG_WARN, __VA_ARGS__)
#define tr_info(...)  TR_LOG(TR_LOG_INFO, __VA_ARGS__)
#define tr_debug(...) TR_LOG(TR_LOG_DEBUG, __VA_ARGS__)

#endif
