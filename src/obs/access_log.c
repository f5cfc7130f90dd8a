#include "obs/access_log.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "obs/metrics.h"

int tr_access_log_open(const char *path)
{
    if (strcmp(path, "/dev/stdout") == 0)
        return dup(STDOUT_FILENO);
    if (strcmp(path, "/dev/stderr") == 0)
        return dup(STDERR_FILENO);
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

/* JSON string escaping for untrusted bytes (paths, hosts). */
static size_t json_str(char *out, size_t room, const char *s)
{
    size_t n = 0;
    if (room < 3)
        return 0;
    if (s == NULL) {
        memcpy(out, "null", room >= 4 ? 4 : 0);
        return room >= 4 ? 4 : 0;
    }
    out[n++] = '"';
    for (; *s && n + 8 < room; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            n += (size_t)snprintf(out + n, room - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n++] = '"';
    return n;
}

void tr_access_log_write(int fd, const struct tr_access_entry *e)
{
    char line[2048];
    size_t n = 0;
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* The line is written when the request ends; start_time is when it began. */
    int64_t start_ns =
        (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - (int64_t)e->duration_us * 1000;
    ts.tv_sec = (time_t)(start_ns / 1000000000);
    ts.tv_nsec = (long)(start_ns % 1000000000);
    gmtime_r(&ts.tv_sec, &tm);
    char flags[64];
    tr_response_flags_str(e->flags, flags, sizeof(flags));
#define ADD(...) n += (size_t)snprintf(line + n, sizeof(line) - n, __VA_ARGS__)
#define ADDS(key, val)                                                                             \
    do {                                                                                           \
        ADD(",\"%s\":", key);                                                                      \
        n += json_str(line + n, sizeof(line) - n - 1, (val));                                      \
    } while (0)
    ADD("{\"start_time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\"", tm.tm_year + 1900,
        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    ADDS("method", e->method);
    ADDS("path", e->path);
    ADDS("authority", e->authority);
    ADDS("protocol", e->protocol != NULL ? e->protocol : "HTTP/1.1");
    ADD(",\"response_code\":%u", e->status);
    if (e->grpc_status != NULL)
        ADDS("grpc_status", e->grpc_status);
    ADDS("response_flags", flags);
    ADD(",\"duration_us\":%" PRIu64 ",\"bytes_received\":%" PRIu64 ",\"bytes_sent\":%" PRIu64,
        e->duration_us, e->req_bytes, e->resp_bytes);
    ADDS("request_id", e->request_id[0] ? e->request_id : NULL);
    ADDS("downstream_peer", e->peer);
    ADDS("downstream_principal", e->principal);
    ADDS("listener", e->listener);
    ADDS("cluster", e->cluster);
    ADDS("upstream_host", e->upstream);
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '}';
    line[n++] = '\n';
#undef ADD
#undef ADDS
    ssize_t w = write(fd, line, n);
    (void)w;
}
