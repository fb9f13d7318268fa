/*
 * bench/tlsload.c: the SNI passthrough benchmark's TLS backend and TLS load
 * generator (OpenSSL; one thread each, epoll, non-blocking), in C so that
 * neither is what limits a proxy: the direct row must stay well above them.
 *
 *   tlsload server CERT_CHAIN KEY
 *       Listens on 127.0.0.1 (an ephemeral port, printed as "READY <port>").
 *       Each connection: accept, full TLS 1.3 handshake, close. No session
 *       tickets and no session cache, so every handshake is a full one; no
 *       application data. Runs until SIGTERM/SIGINT, then prints one line
 *       "server handshakes=N errors=E".
 *   tlsload client CA PORT_A PORT_B CONCURRENCY SECONDS
 *       CONCURRENCY connections in flight for SECONDS. Each: connect, a full
 *       TLS 1.3 handshake with SNI a.bench.test (to PORT_A) or b.bench.test
 *       (to PORT_B), alternately, the certificate chain verified against CA
 *       and its host name checked against the SNI (so a misrouted connection
 *       fails: counted in errors and in misrouted), then close. Through a
 *       proxy PORT_A = PORT_B = the proxy's port. A handshake slower than 5 s
 *       is an error (timeouts). Prints one line of key=value pairs:
 *       done errors misrouted connect_errors timeouts seconds rate p50_ms p99_ms.
 *       EXCHANGE 1: after the handshake, write one byte and read it back (an
 *       echo backend behind a terminating proxy), then close: every proxy
 *       must dial its backend and relay (HAProxy does not dial for a client
 *       that closes right after its handshake).
 *
 *   tlsload replay-server NAME
 *       A stand-in TLS backend without crypto, for the proxy-bound workload:
 *       per connection it reads one whole TLS record (the client's hello),
 *       answers a fixed FLIGHT-byte "server flight" (a TLS record carrying
 *       NAME, so a misroute is visible), reads the client's 80-byte "finished"
 *       (or EOF), closes. Prints "READY <port>".
 *   tlsload replay PORT_A PORT_B CONCURRENCY SECONDS
 *       Like client, but each connection sends a ClientHello recorded once
 *       from OpenSSL (SNI a or b alternately: the same bytes a real client
 *       sends, so the proxy parses a real hello), reads the server flight,
 *       checks it names the SNI's host (else misrouted), sends 80 bytes
 *       (where a client's Finished goes) and closes: the packet pattern of a
 *       TLS 1.3 handshake with none of its crypto, so the proxy is the limit.
 *
 * Every loop is bounded in time (SECONDS; the server until it is signalled)
 * and in count (the connection slots, a fixed latency sample array).
 * Build: gcc -O2 -o tlsload tlsload.c -lssl -lcrypto  (libssl-dev)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HANDSHAKE_TIMEOUT 5.0
#define MAX_SAMPLES (1 << 21)
#define MAX_EVENTS 256

static const char *SNI[2] = {"a.bench.test", "b.bench.test"};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void die_ssl(const char *what) {
    fprintf(stderr, "%s: ", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Wait for what OpenSSL wants next: level-triggered, one direction. */
static void want(int epfd, int fd, int err, void *ptr, int *registered) {
    struct epoll_event ev = {.events = err == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN,
                             .data.ptr = ptr};
    if (epoll_ctl(epfd, *registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl");
    *registered = 1;
}

/* ---------------------------------------------------------------- server */

static volatile sig_atomic_t stopping;

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

struct sconn {
    int fd;
    int registered;
    SSL *ssl;
};

static long long s_handshakes, s_errors;

static void sconn_free(int epfd, struct sconn *c) {
    if (c->registered)
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    SSL_free(c->ssl);
    close(c->fd);
    free(c);
}

static void sconn_step(int epfd, struct sconn *c) {
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        s_handshakes++;
        sconn_free(epfd, c);
        return;
    }
    int err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        want(epfd, c->fd, err, c, &c->registered);
        return;
    }
    if (s_errors++ < 3) {
        fprintf(stderr, "server handshake failed (ssl error %d, errno %d): ", err, errno);
        ERR_print_errors_fp(stderr);
        fprintf(stderr, "\n");
    }
    ERR_clear_error();
    sconn_free(epfd, c);
}

static int listener_tag;

/* A non-blocking listener on 127.0.0.1 (ephemeral port) in a new epoll set;
 * prints "READY <port>". Returns the epoll fd; *lfd_out is the listener. */
static int open_listener(int *lfd_out) {
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (lfd < 0)
        die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("bind");
    if (listen(lfd, 4096) < 0)
        die("listen");
    socklen_t len = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &len);
    int epfd = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listener_tag};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) < 0)
        die("epoll_ctl listener");
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    printf("READY %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    *lfd_out = lfd;
    return epfd;
}

static int run_server(const char *chain, const char *key) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        die_ssl("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    if (SSL_CTX_use_certificate_chain_file(ctx, chain) != 1)
        die_ssl("certificate chain");
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        die_ssl("private key");

    int lfd;
    int epfd = open_listener(&lfd);
    struct epoll_event events[MAX_EVENTS];
    while (!stopping) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, 200);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == &listener_tag) {
                for (int k = 0; k < 64; k++) { /* bounded batch per wake-up */
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (fd < 0)
                        break;
                    nodelay(fd);
                    struct sconn *c = calloc(1, sizeof *c);
                    if (!c)
                        die("calloc");
                    c->fd = fd;
                    c->ssl = SSL_new(ctx);
                    if (!c->ssl)
                        die_ssl("SSL_new");
                    SSL_set_fd(c->ssl, fd);
                    SSL_set_accept_state(c->ssl);
                    sconn_step(epfd, c);
                }
            } else {
                sconn_step(epfd, events[i].data.ptr);
            }
        }
    }
    printf("server handshakes=%lld errors=%lld\n", s_handshakes, s_errors);
    return 0;
}

/* ---------------------------------------------------------------- client */

enum { FREE = 0, CONNECTING, HANDSHAKING, EXCHANGING };

/* client EXCHANGE=1: after the handshake, one byte each way (a proxy must
 * dial its backend and relay: the backend echoes it), then close. */
static int exchange;

struct slot {
    int fd;
    int state;
    int registered;
    int sni;
    double started;
    SSL *ssl;
    int got;                 /* replay: bytes of the server flight so far */
    unsigned char head[32];  /* replay: its first bytes */
};

static struct sockaddr_in targets[2];
static SSL_CTX *cctx;
static long long c_done, c_errors, c_misrouted, c_connect_errors, c_timeouts;
static int next_sni;
static float *samples;
static long long nsamples;

static void slot_end(int epfd, struct slot *s) {
    if (s->registered)
        epoll_ctl(epfd, EPOLL_CTL_DEL, s->fd, NULL);
    if (s->ssl)
        SSL_free(s->ssl);
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->ssl = NULL;
    s->registered = 0;
    s->state = FREE;
}

static void slot_failed(int epfd, struct slot *s, const char *why, int err) {
    c_errors++;
    if (c_errors <= 3) {
        fprintf(stderr, "client %s (%s, ssl error %d, errno %d): ", why, SNI[s->sni], err, errno);
        ERR_print_errors_fp(stderr);
        fprintf(stderr, "\n");
    }
    ERR_clear_error();
    slot_end(epfd, s);
}

static void slot_done(int epfd, struct slot *s) {
    c_done++;
    if (nsamples < MAX_SAMPLES)
        samples[nsamples++] = (float)((now() - s->started) * 1e3);
    slot_end(epfd, s);
}

static void slot_exchange(int epfd, struct slot *s) {
    int r, err;
    unsigned char byte = 'x';
    if (!s->got) {
        r = SSL_write(s->ssl, &byte, 1);
        if (r != 1) {
            err = SSL_get_error(s->ssl, r);
            if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
                want(epfd, s->fd, err, s, &s->registered);
                return;
            }
            slot_failed(epfd, s, "exchange write", err);
            return;
        }
        s->got = 1;
    }
    r = SSL_read(s->ssl, &byte, 1);
    if (r == 1 && byte == 'x') {
        slot_done(epfd, s);
        return;
    }
    err = SSL_get_error(s->ssl, r);
    if (r <= 0 && (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)) {
        want(epfd, s->fd, err, s, &s->registered);
        return;
    }
    slot_failed(epfd, s, "exchange read", err);
}

static void slot_handshake(int epfd, struct slot *s) {
    int r = SSL_do_handshake(s->ssl);
    if (r == 1) {
        /* SSL_VERIFY_PEER already failed the handshake on a bad chain or
         * host name; checked again so that a success is provably verified. */
        if (SSL_get_verify_result(s->ssl) != X509_V_OK) {
            c_misrouted++;
            slot_failed(epfd, s, "unverified", 0);
            return;
        }
        if (exchange) {
            s->state = EXCHANGING;
            s->got = 0;
            slot_exchange(epfd, s);
            return;
        }
        slot_done(epfd, s);
        return;
    }
    int err = SSL_get_error(s->ssl, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        want(epfd, s->fd, err, s, &s->registered);
        return;
    }
    long verify = SSL_get_verify_result(s->ssl);
    if (verify == X509_V_ERR_HOSTNAME_MISMATCH) {
        c_misrouted++;
        slot_failed(epfd, s, "misrouted: certificate is not for the SNI", err);
        return;
    }
    slot_failed(epfd, s, "handshake failed", err);
}

static void slot_start(int epfd, struct slot *s) {
    s->sni = next_sni;
    next_sni ^= 1;
    s->started = now();
    s->ssl = NULL;
    s->registered = 0;
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s->fd < 0) {
        c_connect_errors++;
        slot_failed(epfd, s, "socket", 0);
        return;
    }
    nodelay(s->fd);
    s->state = CONNECTING;
    if (connect(s->fd, (struct sockaddr *)&targets[s->sni], sizeof targets[0]) < 0 &&
        errno != EINPROGRESS) {
        c_connect_errors++;
        slot_failed(epfd, s, "connect", 0);
        return;
    }
    want(epfd, s->fd, SSL_ERROR_WANT_WRITE, s, &s->registered);
}

static void slot_event(int epfd, struct slot *s, uint32_t events) {
    if (s->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (events & EPOLLERR)) {
            errno = err;
            c_connect_errors++;
            slot_failed(epfd, s, "connect", 0);
            return;
        }
        s->ssl = SSL_new(cctx);
        if (!s->ssl)
            die_ssl("SSL_new");
        SSL_set_fd(s->ssl, s->fd);
        SSL_set_tlsext_host_name(s->ssl, SNI[s->sni]);
        if (SSL_set1_host(s->ssl, SNI[s->sni]) != 1)
            die_ssl("SSL_set1_host");
        SSL_set_connect_state(s->ssl);
        s->state = HANDSHAKING;
    }
    if (s->state == EXCHANGING) {
        slot_exchange(epfd, s);
        return;
    }
    slot_handshake(epfd, s);
}

/* ---------------------------------------------------------------- replay */

/* The replayed server flight: ServerHello .. server Finished of a TLS 1.3
 * handshake with a P-256 certificate is about 1.2 KB; the client's
 * ChangeCipherSpec + Finished about 80 B. */
#define FLIGHT 1400
#define CLIENT_FINISHED 80

struct rconn {
    int fd;
    int registered;
    int phase; /* 0: reading the hello record, 1: reading the "finished" */
    int got;
    int need;
    unsigned char head[5];
};

static long long r_served, r_errors;

static void rconn_free(int epfd, struct rconn *c) {
    if (c->registered)
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

static void rconn_read(int epfd, struct rconn *c, const unsigned char *flight) {
    unsigned char buf[4096];
    for (int i = 0; i < 8; i++) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) { /* EOF or error: done after the flight, else a failure */
            if (c->phase == 1)
                r_served++;
            else
                r_errors++;
            rconn_free(epfd, c);
            return;
        }
        for (ssize_t k = 0; k < n && c->phase == 0 && c->got + k < 5; k++)
            c->head[c->got + k] = buf[k];
        c->got += (int)n;
        if (c->phase == 0 && c->got >= 5 && !c->need)
            c->need = 5 + ((c->head[3] << 8) | c->head[4]);
        if (c->phase == 0 && c->need && c->got >= c->need) {
            if (send(c->fd, flight, FLIGHT, MSG_NOSIGNAL) != FLIGHT) {
                r_errors++;
                rconn_free(epfd, c);
                return;
            }
            c->phase = 1;
            c->got -= c->need;
        }
        if (c->phase == 1 && c->got >= CLIENT_FINISHED) {
            r_served++;
            rconn_free(epfd, c);
            return;
        }
    }
}

static int run_replay_server(const char *name) {
    static unsigned char flight[FLIGHT];
    flight[0] = 22; /* a handshake record, as a ServerHello is */
    flight[1] = 3;
    flight[2] = 3;
    flight[3] = (FLIGHT - 5) >> 8;
    flight[4] = (FLIGHT - 5) & 0xff;
    memcpy(flight + 5, name, strlen(name) < FLIGHT - 5 ? strlen(name) : FLIGHT - 5);
    int lfd;
    int epfd = open_listener(&lfd);
    struct epoll_event events[MAX_EVENTS];
    while (!stopping) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, 200);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == &listener_tag) {
                for (int k = 0; k < 64; k++) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (fd < 0)
                        break;
                    nodelay(fd);
                    struct rconn *c = calloc(1, sizeof *c);
                    if (!c)
                        die("calloc");
                    c->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
                        die("epoll_ctl");
                    c->registered = 1;
                }
            } else {
                rconn_read(epfd, events[i].data.ptr, flight);
            }
        }
    }
    printf("replay-server served=%lld errors=%lld\n", r_served, r_errors);
    return 0;
}

static unsigned char hello[2][4096];
static int hello_len[2];

/* One real ClientHello per SNI, from OpenSSL through memory BIOs. */
static void record_hellos(void) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        die_ssl("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    for (int i = 0; i < 2; i++) {
        SSL *ssl = SSL_new(ctx);
        BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
        SSL_set_bio(ssl, rbio, wbio);
        SSL_set_tlsext_host_name(ssl, SNI[i]);
        SSL_set_connect_state(ssl);
        SSL_do_handshake(ssl); /* writes the hello, then wants the server's reply */
        int pending = (int)BIO_pending(wbio);
        if (pending <= 0 || pending > (int)sizeof hello[i])
            die_ssl("recording a ClientHello");
        hello_len[i] = BIO_read(wbio, hello[i], pending);
        SSL_free(ssl);
    }
    SSL_CTX_free(ctx);
}

static void replay_event(int epfd, struct slot *s, uint32_t events) {
    static const char finished[CLIENT_FINISHED];
    if (s->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (events & EPOLLERR)) {
            errno = err;
            c_connect_errors++;
            slot_failed(epfd, s, "connect", 0);
            return;
        }
        if (send(s->fd, hello[s->sni], (size_t)hello_len[s->sni], MSG_NOSIGNAL) !=
            hello_len[s->sni]) {
            slot_failed(epfd, s, "send hello", 0);
            return;
        }
        s->state = HANDSHAKING;
        s->got = 0;
        want(epfd, s->fd, SSL_ERROR_WANT_READ, s, &s->registered);
        return;
    }
    unsigned char buf[4096];
    for (int i = 0; i < 8; i++) {
        ssize_t n = recv(s->fd, buf, sizeof buf, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            slot_failed(epfd, s, "server flight cut short", 0);
            return;
        }
        for (ssize_t k = 0; k < n && s->got + k < (ssize_t)sizeof s->head; k++)
            s->head[s->got + k] = buf[k];
        s->got += (int)n;
        if (s->got >= FLIGHT) {
            size_t name_len = strlen(SNI[s->sni]);
            if (memcmp(s->head + 5, SNI[s->sni], name_len) != 0) {
                c_misrouted++;
                slot_failed(epfd, s, "misrouted: the flight is another backend's", 0);
                return;
            }
            send(s->fd, finished, sizeof finished, MSG_NOSIGNAL);
            c_done++;
            if (nsamples < MAX_SAMPLES)
                samples[nsamples++] = (float)((now() - s->started) * 1e3);
            slot_end(epfd, s);
            return;
        }
    }
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static int run_client(const char *ca, int port_a, int port_b, int concurrency,
                      double seconds) {
    int replay = ca == NULL;
    if (replay) {
        record_hellos();
    } else {
        cctx = SSL_CTX_new(TLS_client_method());
        if (!cctx)
            die_ssl("SSL_CTX_new");
        SSL_CTX_set_min_proto_version(cctx, TLS1_3_VERSION);
        SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(cctx, SSL_OP_NO_TICKET);
        if (SSL_CTX_load_verify_locations(cctx, ca, NULL) != 1)
            die_ssl("CA file");
        SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
    }
    int ports[2] = {port_a, port_b};
    for (int i = 0; i < 2; i++) {
        targets[i].sin_family = AF_INET;
        targets[i].sin_port = htons((uint16_t)ports[i]);
        targets[i].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }
    samples = malloc(sizeof *samples * MAX_SAMPLES);
    struct slot *slots = calloc((size_t)concurrency, sizeof *slots);
    if (!samples || !slots)
        die("malloc");
    signal(SIGPIPE, SIG_IGN);
    int epfd = epoll_create1(0);
    double start = now();
    double deadline = start + seconds;
    for (int i = 0; i < concurrency; i++) {
        slots[i].fd = -1;
        slot_start(epfd, &slots[i]);
    }
    struct epoll_event events[MAX_EVENTS];
    double last_scan = start;
    double t = start;
    while (t < deadline) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, 50);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            if (replay)
                replay_event(epfd, events[i].data.ptr, events[i].events);
            else
                slot_event(epfd, events[i].data.ptr, events[i].events);
        }
        t = now();
        int scan = t - last_scan > 0.1;
        if (scan)
            last_scan = t;
        for (int i = 0; i < concurrency; i++) {
            struct slot *s = &slots[i];
            if (scan && s->state != FREE && t - s->started > HANDSHAKE_TIMEOUT) {
                c_timeouts++;
                slot_failed(epfd, s, "handshake timed out", 0);
            }
            if (s->state == FREE && t < deadline)
                slot_start(epfd, s);
        }
    }
    double elapsed = now() - start;
    for (int i = 0; i < concurrency; i++) /* in flight at the deadline: not counted */
        if (slots[i].state != FREE)
            slot_end(epfd, &slots[i]);
    double p50 = 0, p99 = 0;
    if (nsamples) {
        qsort(samples, (size_t)nsamples, sizeof *samples, cmp_float);
        p50 = samples[nsamples / 2];
        p99 = samples[(long long)(nsamples * 0.99)];
    }
    printf("%s done=%lld errors=%lld misrouted=%lld connect_errors=%lld timeouts=%lld "
           "seconds=%.3f rate=%.1f p50_ms=%.3f p99_ms=%.3f\n",
           replay ? "replay" : "tls", c_done, c_errors, c_misrouted, c_connect_errors, c_timeouts, elapsed,
           (double)c_done / elapsed, p50, p99);
    return 0;
}

int main(int argc, char **argv) {
    raise_nofile();
    if (argc == 4 && strcmp(argv[1], "server") == 0)
        return run_server(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "replay-server") == 0)
        return run_replay_server(argv[2]);
    if (argc == 6 && strcmp(argv[1], "replay") == 0)
        return run_client(NULL, atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atof(argv[5]));
    if ((argc == 7 || argc == 8) && strcmp(argv[1], "client") == 0) {
        exchange = argc == 8 && atoi(argv[7]) == 1;
        return run_client(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), atof(argv[6]));
    }
    fprintf(stderr, "usage: tlsload server CHAIN KEY | "
                    "tlsload client CA PORT_A PORT_B CONCURRENCY SECONDS [EXCHANGE] | "
                    "tlsload replay-server NAME | "
                    "tlsload replay PORT_A PORT_B CONCURRENCY SECONDS\n");
    return 2;
}
