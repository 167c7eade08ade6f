/* What a service may do with namespaces, threads and processes: built
 * static (glibc) by tests/tests/hardening.rs and run inside a container on
 * the booted box. glibc >= 2.34 makes threads with clone3 and falls back to
 * clone when clone3 answers ENOSYS, which is what nuvol's seccomp filter
 * says. One line per attempt: "what: result". */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *result(long r)
{
    if (r >= 0)
        return "succeeded";
    switch (errno) {
    case EPERM: return "EPERM";
    case ENOSYS: return "ENOSYS";
    case EINVAL: return "EINVAL";
    default: return strerror(errno);
    }
}

/* A fork-like clone; a child, if one is made, leaves at once. */
static long raw_clone(unsigned long flags)
{
    long r = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (r == 0)
        _exit(0);
    if (r > 0)
        waitpid((pid_t)r, NULL, 0);
    return r;
}

struct clone_args_v0 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

static long raw_clone3(uint64_t flags)
{
    struct clone_args_v0 a;
    memset(&a, 0, sizeof a);
    a.flags = flags;
    a.exit_signal = SIGCHLD;
    long r = syscall(SYS_clone3, &a, sizeof a);
    if (r == 0)
        _exit(0);
    if (r > 0)
        waitpid((pid_t)r, NULL, 0);
    return r;
}

static void *thread_main(void *arg)
{
    return arg;
}

int main(void)
{
    printf("unshare(CLONE_NEWUSER): %s\n", result(unshare(CLONE_NEWUSER)));
    printf("clone(CLONE_NEWUSER): %s\n", result(raw_clone(CLONE_NEWUSER)));
    printf("clone(CLONE_NEWUSER|CLONE_NEWNET): %s\n", result(raw_clone(CLONE_NEWUSER | CLONE_NEWNET)));
    printf("clone3(CLONE_NEWUSER): %s\n", result(raw_clone3(CLONE_NEWUSER)));
    printf("clone3(): %s\n", result(raw_clone3(0)));
    pthread_t t;
    void *got = NULL;
    int e = pthread_create(&t, NULL, thread_main, (void *)42);
    if (e == 0)
        pthread_join(t, &got);
    printf("pthread_create: %s\n", e == 0 && got == (void *)42 ? "ok" : strerror(e));
    pid_t p = fork();
    if (p == 0)
        _exit(7);
    int st = 0;
    if (p > 0)
        waitpid(p, &st, 0);
    printf("fork: %s\n", p > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 7 ? "ok" : "failed");
    return 0;
}
