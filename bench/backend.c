/*
 * bench/backend.c: the benchmark's backend, one thread, one epoll loop.
 *
 * Usage: backend [PORT]   (0 or absent: any free port on 127.0.0.1)
 * Prints "READY <port>" on stdout once listening, then serves until killed.
 *
 * Every connection decides its mode from its first byte, so one backend (and
 * one tsgate route) serves all workloads:
 *   - first byte 0x00: sink. Everything is read (256 KiB reads) and dropped;
 *     at EOF the connection is closed, which tells the bulk client that every
 *     byte has crossed the proxy.
 *   - any other first byte: echo. What is read is written back; if the peer
 *     does not take it all, reading stops until the rest is written, so the
 *     backend's memory stays bounded whatever the client does.
 *
 * The bulk client streams zeros; the conn/s, latency and idle clients send
 * printable bytes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <unistd.h>

#define READ_SIZE (256 * 1024)
#define MAX_EVENTS 256

enum mode { UNDECIDED = 0, SINK = 1, ECHO = 2 };

struct conn {
    int fd;
    int mode;
    char *pending;      /* echo bytes not yet written back */
    size_t pending_len;
    size_t pending_off;
};

static int epfd;
static char buf[READ_SIZE];

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

static void conn_close(struct conn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pending);
    free(c);
}

static void set_events(struct conn *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl mod");
}

/* Write what is pending; 1 when all written, 0 when the socket is full, -1 on error. */
static int flush_pending(struct conn *c) {
    while (c->pending_off < c->pending_len) {
        ssize_t n = send(c->fd, c->pending + c->pending_off, c->pending_len - c->pending_off,
                         MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EINTR)
                continue;
            return -1;
        }
        c->pending_off += (size_t)n;
    }
    free(c->pending);
    c->pending = NULL;
    c->pending_len = c->pending_off = 0;
    return 1;
}

static void on_readable(struct conn *c) {
    /* Bounded: at most 64 reads per wakeup so one stream cannot starve others. */
    for (int round = 0; round < 64; round++) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n == 0) {
            conn_close(c);
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR)
                continue;
            conn_close(c);
            return;
        }
        if (c->mode == UNDECIDED)
            c->mode = buf[0] == 0 ? SINK : ECHO;
        if (c->mode == SINK)
            continue;
        ssize_t off = 0;
        while (off < n) {
            ssize_t w = send(c->fd, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                conn_close(c);
                return;
            }
            off += w;
        }
        if (off < n) {
            c->pending_len = (size_t)(n - off);
            c->pending_off = 0;
            c->pending = malloc(c->pending_len);
            if (!c->pending)
                die("malloc");
            memcpy(c->pending, buf + off, c->pending_len);
            set_events(c, EPOLLOUT);
            return;
        }
    }
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (lfd < 0)
        die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("bind");
    if (listen(lfd, 4096) < 0)
        die("listen");
    socklen_t alen = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &alen);
    printf("READY %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    epfd = epoll_create1(0);
    if (epfd < 0)
        die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);

    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) {
                for (int k = 0; k < 256; k++) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (fd < 0)
                        break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    if (!nc)
                        die("calloc");
                    nc->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
                        die("epoll_ctl add");
                }
                continue;
            }
            if (c->pending) {
                int r = flush_pending(c);
                if (r < 0) {
                    conn_close(c);
                } else if (r == 1) {
                    set_events(c, EPOLLIN);
                    on_readable(c);
                }
                continue;
            }
            on_readable(c);
        }
    }
}
