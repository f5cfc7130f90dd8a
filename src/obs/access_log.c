#include "obs/access_log.h"

#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/fmt.h"
#include "obs/metrics.h"

int tr_access_log_open(const char *path)
{
    if (strcmp(path, "/dev/stdout") == 0)
        return dup(STDOUT_FILENO);
    if (strcmp(path, "/dev/stderr") == 0)
        return dup(STDERR_FILENO);
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

/* The end of a line: room for the longest one is kept free while the fields
 * are written. */
static const char tail_ok[] = "}\n";
static const char tail_cut[] = ",\"truncated\":true}\n";

/* ,"key":"value" (or null): a prefix of the value if that is all that fits,
 * nothing at all if not even the key and two quotes do. */
static void field_str(struct tr_fmt *f, const char *key, const char *val)
{
    size_t mark = f->len;
    if (!tr_fmt_printf(f, ",\"%s\":", key))
        return;
    bool ok =
        val != NULL ? tr_fmt_json_str_prefix(f, val, strlen(val)) : tr_fmt_bytes(f, "null", 4);
    if (!ok)
        tr_fmt_rewind(f, mark);
}

size_t tr_access_log_format(char *line, const struct tr_access_entry *e, int64_t now_ns)
{
    /* The line is written when the request ends; start_time is when it began. */
    int64_t start_ns = now_ns - (int64_t)e->duration_us * 1000;
    time_t sec = (time_t)(start_ns / 1000000000);
    long ms = (long)(start_ns % 1000000000) / 1000000;
    struct tm tm;
    gmtime_r(&sec, &tm);

    struct tr_fmt f;
    /* +1: the NUL tr_fmt keeps, which the tail overwrites. */
    tr_fmt_init_fixed(&f, line, TR_ACCESS_LOG_LINE_MAX - (sizeof(tail_cut) - 1) + 1);
    tr_fmt_printf(&f, "{\"start_time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\"", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
    field_str(&f, "method", e->method);
    field_str(&f, "protocol", e->protocol != NULL ? e->protocol : "HTTP/1.1");
    tr_fmt_printf(&f, ",\"response_code\":%u", e->status);
    if (e->grpc_status != NULL)
        field_str(&f, "grpc_status", e->grpc_status);
    size_t mark = f.len;
    if (!tr_fmt_cstr(&f, ",\"response_flags\":\"") || !tr_response_flags_append(&f, e->flags) ||
        !tr_fmt_cstr(&f, "\""))
        tr_fmt_rewind(&f, mark);
    tr_fmt_printf(
        &f, ",\"duration_us\":%" PRIu64 ",\"bytes_received\":%" PRIu64 ",\"bytes_sent\":%" PRIu64,
        e->duration_us, e->req_bytes, e->resp_bytes);
    field_str(&f, "request_id", e->request_id != NULL && e->request_id[0] ? e->request_id : NULL);
    field_str(&f, "downstream_peer", e->peer);
    field_str(&f, "downstream_principal", e->principal);
    field_str(&f, "listener", e->listener);
    field_str(&f, "cluster", e->cluster);
    field_str(&f, "upstream_host", e->upstream);
    if (e->authz_policy != NULL) {
        field_str(&f, "authz_policy", e->authz_policy);
        tr_fmt_printf(&f, ",\"authz_rule\":%d", e->authz_rule);
    }
    field_str(&f, "authority", e->authority);
    field_str(&f, "path", e->path);

    /* f.len <= TR_ACCESS_LOG_LINE_MAX - strlen(tail_cut): either tail fits. */
    bool cut = f.truncated || e->truncated;
    const char *tail = cut ? tail_cut : tail_ok;
    size_t tail_len = cut ? sizeof(tail_cut) - 1 : sizeof(tail_ok) - 1;
    memcpy(line + f.len, tail, tail_len);
    return f.len + tail_len;
}

void tr_access_log_write(int fd, const struct tr_access_entry *e)
{
    char line[TR_ACCESS_LOG_LINE_MAX];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    size_t n = tr_access_log_format(line, e, (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec);
    ssize_t w = write(fd, line, n);
    (void)w;
}
