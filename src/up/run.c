/* up/run.c: running other programs (iproute2) with argv arrays, never a
 * shell; every exit status checked. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "up/up.h"

int tr_up_cmd(char *const argv[])
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null >= 0)
            dup2(null, STDOUT_FILENO);
        execvp(argv[0], argv);
        fprintf(stderr, "trellis up: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

int tr_up_ip(int quiet, ...)
{
    char *argv[32];
    size_t n = 0;
    argv[n++] = "ip";
    va_list ap;
    va_start(ap, quiet);
    for (char *a; n < 31 && (a = va_arg(ap, char *)) != NULL;)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    int rc = tr_up_cmd(argv);
    if (rc != 0 && !quiet) {
        char line[512] = "";
        size_t off = 0;
        for (size_t i = 0; i < n && off < sizeof(line) - 1; i++) {
            int k = snprintf(line + off, sizeof(line) - off, "%s%s", i ? " " : "", argv[i]);
            if (k < 0)
                break;
            off += (size_t)k;
        }
        fprintf(stderr, "trellis up: `%s` failed (exit %d)\n", line, rc);
    }
    return rc == 0 ? 0 : -1;
}

unsigned long long tr_up_pid_start(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: fields count from
     * the last ')'. Field 22 is starttime; after ')' come fields 3.. */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return 0;
    p++;
    for (int field = 3; field < 22 && p; field++)
        p = strchr(p + 1, ' ');
    if (p == NULL)
        return 0;
    /* A zombie still has a start time, but is gone for our purposes. */
    char state = buf[0];
    char *st = strrchr(buf, ')');
    if (st != NULL && st[1] == ' ')
        state = st[2];
    if (state == 'Z' || state == 'X')
        return 0;
    return strtoull(p + 1, NULL, 10);
}
