/*
 * log.h - JSON lines on stderr: {"ts":"...","level":"info","msg":"...",k:v...}
 *
 * Fields are passed as alternating key/value strings terminated by NULL:
 *   log_info("listener up", "addr", "127.0.0.1:8080", NULL);
 * Values are JSON-escaped strings.  Use log_kv_int() style helpers by
 * formatting numbers into a small stack buffer first.  Thread-safe: each
 * line is built in a stack buffer and written with one write(2).
 */
#ifndef CORE_LOG_H
#define CORE_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

/* Lines below level are dropped.  Default LOG_INFO; CANARYD_LOG_LEVEL env. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parses "debug|info|warn|error"; returns -1 on anything else. */
int log_level_parse(const char *s);

void log_write(enum log_level level, const char *msg, ...) __attribute__((sentinel));

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
