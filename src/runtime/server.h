/* runtime/server.h: the proxy process: main thread (signals, config and
 * certificate reloads, admin endpoint, drain) plus the worker threads. */
#ifndef TR_RUNTIME_SERVER_H
#define TR_RUNTIME_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tr_control_client_options;

struct tr_server_options {
    /* The model comes from a file, or (config_path NULL) from the control
     * plane, which also issues the identity (control/client.h). */
    const char *config_path;
    const struct tr_control_client_options *control;
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
/* Reload now (as SIGHUP does). Returns 0 or -1 with *err set (malloc'd).
 * Partial updates applied since the last load stay when the file's text is
 * unchanged, and are replaced by it when it changed. */
int tr_server_reload(char **err);

/* Apply partial updates (config/load.h) to the running configuration: the
 * file's text with every update so far and these is checked as one file,
 * built sharing what did not change (runtime/snapshot.h, cluster/cluster.h)
 * and published. An invalid update changes nothing. Main thread only (the
 * admin socket and, later, the control-plane stream call it). Returns 0, or
 * -1 with *err (malloc'd). */
struct tr_config_patch;
int tr_server_apply_patches(const struct tr_config_patch *p, size_t n, char **err);

#endif
