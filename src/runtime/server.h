/* runtime/server.h: the proxy process: main thread (signals, config and
 * certificate reloads, admin endpoint, drain) plus the worker threads. */
#ifndef TR_RUNTIME_SERVER_H
#define TR_RUNTIME_SERVER_H

#include <stdbool.h>
#include <stdint.h>

struct tr_server_options {
    const char *config_path;
    int workers;           /* -1: from config */
    const char *log_level; /* NULL: from config */
};

/* Run until SIGTERM/SIGINT and drained. Returns the process exit code. */
int tr_server_run(const struct tr_server_options *opt);

/* For the admin endpoint. */
bool tr_server_ready(void);
uint64_t tr_server_generation(void);
/* A worker adopted the published snapshot (runtime/worker.c). */
void tr_server_note_adopted(void);
/* Reload now (as SIGHUP does). Returns 0 or -1 with *err set (malloc'd). */
int tr_server_reload(char **err);

#endif
