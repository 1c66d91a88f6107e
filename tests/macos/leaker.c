/* The macOS workflow's target (.github/workflows/macos.yml): leaks PTY masters the way terminal
   apps do — a child on each PTY that exits, its master kept — and keeps one live PTY whose child
   holds the slave. Built there with cc: ad hoc linker-signed, no hardened runtime, so root gets
   its task port with SIP on.

   leaker N [options]       N orphaned masters (default 5); prints what it made, then "ready"
     --heartbeat FILE       a thread rewrites FILE with a counter every 10 ms (frozen = stuck)
     --task-exc-port FILE   a task-level EXC_BAD_ACCESS port of its own; anything it receives is
                            written to FILE (our faults must never reach it)
     --dispatch-source      one more orphaned master, watched by a read source on a serial
                            dispatch queue (a workloop kqueue): must be judged watched
     --spawn-threads        a thread that keeps creating short-lived threads */
#include <dispatch/dispatch.h>
#include <fcntl.h>
#include <mach/mach.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <util.h>

static const char *heartbeat_file, *exc_file;

static void *heartbeat(void *arg) {
    (void)arg;
    for (unsigned long n = 0;; n++) {
        int fd = open(heartbeat_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) { dprintf(fd, "%lu\n", n); close(fd); }
        usleep(10000);
    }
    return NULL;
}

static void *exc_listener(void *arg) {
    mach_port_t port = (mach_port_t)(uintptr_t)arg;
    char buf[8192];
    mach_msg_header_t *h = (mach_msg_header_t *)buf;
    if (mach_msg(h, MACH_RCV_MSG, 0, sizeof buf, port, 0, MACH_PORT_NULL) == KERN_SUCCESS) {
        int fd = open(exc_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) { dprintf(fd, "EXCEPTION RECEIVED id %d\n", h->msgh_id); close(fd); }
        _exit(3);
    }
    return NULL;
}

static void *short_lived(void *arg) { (void)arg; usleep(500); return NULL; }

static void *spawner(void *arg) {
    (void)arg;
    for (;;) {
        pthread_t t;
        if (pthread_create(&t, NULL, short_lived, NULL) == 0) pthread_join(t, NULL);
        usleep(200);
    }
    return NULL;
}

static void on_readable(void *ctx) { (void)ctx; }

static int orphan(void) {
    int master;
    pid_t child = forkpty(&master, NULL, NULL, NULL);
    if (child < 0) { perror("forkpty"); exit(1); }
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0);
    return master;
}

int main(int argc, char **argv) {
    int n = 5, with_dispatch = 0, with_spawner = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--heartbeat") && i + 1 < argc) heartbeat_file = argv[++i];
        else if (!strcmp(argv[i], "--task-exc-port") && i + 1 < argc) exc_file = argv[++i];
        else if (!strcmp(argv[i], "--dispatch-source")) with_dispatch = 1;
        else if (!strcmp(argv[i], "--spawn-threads")) with_spawner = 1;
        else n = atoi(argv[i]);
    }
    int live;
    /* the live one first, so its child inherits none of the orphaned masters */
    pid_t keeper = forkpty(&live, NULL, NULL, NULL);
    if (keeper < 0) { perror("forkpty"); return 1; }
    if (keeper == 0) { for (;;) pause(); }
    printf("live fd %d child %d\n", live, (int)keeper);
    for (int i = 0; i < n; i++) printf("orphan fd %d\n", orphan());
    pthread_t t;
    if (heartbeat_file) pthread_create(&t, NULL, heartbeat, NULL);
    if (exc_file) {
        mach_port_t port;
        mach_port_allocate(mach_task_self(), MACH_PORT_RIGHT_RECEIVE, &port);
        mach_port_insert_right(mach_task_self(), port, port, MACH_MSG_TYPE_MAKE_SEND);
        if (task_set_exception_ports(mach_task_self(), EXC_MASK_BAD_ACCESS, port,
                                     EXCEPTION_DEFAULT | MACH_EXCEPTION_CODES,
                                     THREAD_STATE_NONE) != KERN_SUCCESS) {
            fprintf(stderr, "task_set_exception_ports failed\n");
            return 1;
        }
        pthread_create(&t, NULL, exc_listener, (void *)(uintptr_t)port);
    }
    if (with_dispatch) {
        int fd = orphan();
        dispatch_queue_t q = dispatch_queue_create("leaker.reader", DISPATCH_QUEUE_SERIAL);
        dispatch_source_t s = dispatch_source_create(DISPATCH_SOURCE_TYPE_READ, fd, 0, q);
        dispatch_source_set_event_handler_f(s, on_readable);
        dispatch_resume(s);
        printf("dispatch fd %d\n", fd);
    }
    if (with_spawner) pthread_create(&t, NULL, spawner, NULL);
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
