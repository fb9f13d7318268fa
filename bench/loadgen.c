/*
 * bench/loadgen.c: the benchmark's load generator (one thread; epoll where
 * there is more than one connection), written in C so that the client is not
 * what limits the numbers: a direct connection must reach well above any proxy.
 *
 *   loadgen bulk    PORT BYTES MAX_SECONDS
 *       One connection streams BYTES zeros (the backend sinks them), or as many
 *       as MAX_SECONDS allow, then half-closes and waits for the backend's close,
 *       so the time covers every byte crossing the proxy.
 *   loadgen conn    PORT CONCURRENCY SECONDS
 *       CONCURRENCY clients, each in a loop for SECONDS: connect, send 100 B,
 *       read the 100 B echo, close. Counts completed connections.
 *   loadgen latency PORT ROUNDS MAX_SECONDS
 *       One TCP_NODELAY connection, 64 B ping-pong ROUNDS times after 200
 *       warm-up rounds; percentiles of the round-trip time.
 *   loadgen idle    PORT COUNT MAX_SECONDS
 *       Opens COUNT connections (40 at a time: under any listen
 *       backlog, Twisted's default of 50 included), each sends 1 B and reads its
 *       echo (so the proxied path is fully set up), then leaves them idle and
 *       prints "OPEN ...". Waits for a line (or EOF) on stdin, at most 300 s,
 *       then closes them all and prints "CLOSED".
 *
 * Results go to stdout as one line of key=value pairs. Every loop is bounded
 * in time (MAX_SECONDS plus a few seconds of grace) and in count.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (256 * 1024)
#define GRACE 5.0

static struct sockaddr_in target;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int connect_blocking(double timeout) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    struct timeval tv = {.tv_sec = (long)timeout, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0)
        die("connect");
    return fd;
}

/* ---------------------------------------------------------------- bulk */

static int run_bulk(long long bytes, double max_seconds) {
    static char chunk[CHUNK]; /* zeros: the backend sinks the connection */
    double start = now();
    double deadline = start + max_seconds;
    int fd = connect_blocking(max_seconds + GRACE);
    long long sent = 0;
    while (sent < bytes) {
        size_t want = (size_t)((bytes - sent) < CHUNK ? (bytes - sent) : CHUNK);
        ssize_t n = send(fd, chunk, want, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("bulk send");
        }
        sent += n;
        /* check the clock every 16 MiB or so */
        if ((sent & ((1LL << 24) - 1)) < n && now() > deadline)
            break;
    }
    shutdown(fd, SHUT_WR);
    char tail[4096];
    for (int i = 0; i < 1000000; i++) {
        ssize_t n = recv(fd, tail, sizeof tail, 0);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("bulk wait for close");
        }
    }
    double elapsed = now() - start;
    close(fd);
    printf("bulk bytes=%lld seconds=%.4f gbps=%.3f\n", sent, elapsed,
           (double)sent * 8 / elapsed / 1e9);
    return 0;
}

/* ------------------------------------------------ conn/s and idle (epoll) */

enum state { FREE = 0, CONNECTING, READING, IDLE };

struct slot {
    int fd;
    int state;
    int got;
};

static int start_connect(int epfd, struct slot *s) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    s->fd = fd;
    s->state = CONNECTING;
    s->got = 0;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl add");
    return 0;
}

static void end_slot(int epfd, struct slot *s) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd);
    s->fd = -1;
    s->state = FREE;
}

/*
 * Advance one slot on an event. Returns 1 when its exchange of `size` bytes
 * completed, -1 on failure (slot freed), 0 when still in progress.
 */
static int step(int epfd, struct slot *s, uint32_t events, const char *payload, int size) {
    if (s->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            end_slot(epfd, s);
            return -1;
        }
        ssize_t n = send(s->fd, payload, (size_t)size, MSG_NOSIGNAL);
        if (n != size) { /* a fresh socket takes 100 bytes whole */
            end_slot(epfd, s);
            return -1;
        }
        s->state = READING;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
        epoll_ctl(epfd, EPOLL_CTL_MOD, s->fd, &ev);
        return 0;
    }
    if (s->state == READING) {
        char buf[512];
        for (int i = 0; i < 16; i++) {
            ssize_t n = recv(s->fd, buf, sizeof buf, 0);
            if (n == 0) {
                end_slot(epfd, s);
                return -1;
            }
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return 0;
                if (errno == EINTR)
                    continue;
                end_slot(epfd, s);
                return -1;
            }
            s->got += (int)n;
            if (s->got >= size)
                return 1;
        }
    }
    return 0;
}

static int run_conn(int concurrency, double seconds) {
    char payload[100];
    memset(payload, 'c', sizeof payload);
    int epfd = epoll_create1(0);
    struct slot *slots = calloc((size_t)concurrency, sizeof *slots);
    long long done = 0, errors = 0, started = 0;
    double start = now();
    double deadline = start + seconds;
    int active = 0;
    for (int i = 0; i < concurrency; i++) {
        if (start_connect(epfd, &slots[i]) == 0) {
            active++;
            started++;
        } else {
            errors++;
        }
    }
    struct epoll_event events[256];
    while (active > 0) {
        double t = now();
        if (t > deadline + GRACE)
            break;
        int n = epoll_wait(epfd, events, 256, 100);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        t = now();
        for (int i = 0; i < n; i++) {
            struct slot *s = events[i].data.ptr;
            int r = step(epfd, s, events[i].events, payload, (int)sizeof payload);
            if (r == 0)
                continue;
            if (r == 1) {
                end_slot(epfd, s);
                if (t <= deadline)
                    done++;
            } else {
                errors++;
            }
            active--;
            /* refill while the run lasts; stop refilling after many errors */
            if (t < deadline && errors < 100000) {
                if (start_connect(epfd, s) == 0) {
                    active++;
                    started++;
                } else {
                    errors++;
                }
            }
        }
    }
    for (int i = 0; i < concurrency; i++)
        if (slots[i].state != FREE)
            end_slot(epfd, &slots[i]);
    double elapsed = seconds; /* only completions before the deadline count */
    printf("conn done=%lld errors=%lld started=%lld seconds=%.4f rate=%.1f\n", done, errors,
           started, elapsed, (double)done / elapsed);
    return 0;
}

static int run_idle(int count, double max_seconds) {
    const int window = 40;
    char payload[1] = {'i'};
    int epfd = epoll_create1(0);
    struct slot *slots = calloc((size_t)count, sizeof *slots);
    long long open = 0, errors = 0;
    int next = 0, active = 0;
    double start = now();
    double deadline = start + max_seconds;
    struct epoll_event events[256];
    while ((open < count) && now() < deadline && errors < 1000) {
        while (active < window && next < count) {
            if (start_connect(epfd, &slots[next]) == 0)
                active++;
            else
                errors++;
            next++;
        }
        if (active == 0)
            break;
        int n = epoll_wait(epfd, events, 256, 100);
        for (int i = 0; i < n; i++) {
            struct slot *s = events[i].data.ptr;
            int r = step(epfd, s, events[i].events, payload, 1);
            if (r == 0)
                continue;
            active--;
            if (r == 1) {
                /* keep it open and idle, out of the epoll set */
                epoll_ctl(epfd, EPOLL_CTL_DEL, s->fd, NULL);
                s->state = IDLE;
                open++;
            } else {
                errors++;
            }
        }
    }
    printf("OPEN open=%lld errors=%lld seconds=%.4f\n", open, errors, now() - start);
    fflush(stdout);
    struct pollfd pfd = {.fd = 0, .events = POLLIN};
    poll(&pfd, 1, 300 * 1000);
    for (int i = 0; i < count; i++)
        if (slots[i].state != FREE && slots[i].fd >= 0)
            close(slots[i].fd);
    printf("CLOSED\n");
    return 0;
}

/* ------------------------------------------------------------- latency */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int run_latency(int rounds, double max_seconds) {
    int fd = connect_blocking(max_seconds + GRACE);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char ping[64], pong[64];
    memset(ping, 'p', sizeof ping);
    double *samples = calloc((size_t)rounds, sizeof *samples);
    double deadline = now() + max_seconds;
    int measured = 0;
    for (int i = -200; i < rounds; i++) {
        double t0 = now();
        if (send(fd, ping, sizeof ping, MSG_NOSIGNAL) != (ssize_t)sizeof ping)
            die("latency send");
        size_t got = 0;
        while (got < sizeof pong) {
            ssize_t n = recv(fd, pong + got, sizeof pong - got, 0);
            if (n <= 0) {
                if (n < 0 && errno == EINTR)
                    continue;
                die("latency recv");
            }
            got += (size_t)n;
        }
        double t1 = now();
        if (i >= 0)
            samples[measured++] = (t1 - t0) * 1e6;
        if (t1 > deadline)
            break;
    }
    close(fd);
    if (measured == 0) {
        printf("latency n=0\n");
        return 1;
    }
    qsort(samples, (size_t)measured, sizeof *samples, cmp_double);
    double sum = 0;
    for (int i = 0; i < measured; i++)
        sum += samples[i];
    printf("latency n=%d p50_us=%.2f p99_us=%.2f mean_us=%.2f\n", measured,
           samples[measured / 2], samples[(int)((measured - 1) * 0.99)], sum / measured);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: loadgen bulk|conn|latency|idle PORT A B\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    setvbuf(stdout, NULL, _IOLBF, 0);
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)atoi(argv[2]));
    target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const char *mode = argv[1];
    if (strcmp(mode, "bulk") == 0)
        return run_bulk(atoll(argv[3]), atof(argv[4]));
    if (strcmp(mode, "conn") == 0)
        return run_conn(atoi(argv[3]), atof(argv[4]));
    if (strcmp(mode, "latency") == 0)
        return run_latency(atoi(argv[3]), atof(argv[4]));
    if (strcmp(mode, "idle") == 0)
        return run_idle(atoi(argv[3]), atof(argv[4]));
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
