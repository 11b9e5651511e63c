/*
 * Connections-per-second client of the proxy benchmark (benchmark/proxy.ts): <count> cycles of connect, write
 * "ping", read the answer to its end ("pong" and the server's FIN), close, on <parallel> threads, each thread with
 * blocking sockets (so that proxychains4, which makes connect() blocking while it talks to the proxy, costs it no
 * more than a plain connect). Bounded: no cycle starts after <limit-seconds>, each socket operation times out after
 * 3 s, and alarm() ends the process 20 s after the limit.
 *
 *   cps <ipv4> <port> <count> <parallel> <limit-seconds>
 *
 * Prints one JSON line: {"done":N,"failed":N,"seconds":S,"p50_ms":X,"p99_ms":Y} (seconds from the first connect to
 * the last close; p50/p99 of the whole cycle of the successful ones).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in target;
static long count;
static double deadline;
static long next_cycle; /* taken with __atomic_fetch_add */
static double *cycle_ms; /* per cycle; < 0 for a failed one */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One cycle; 0 when the answer was "pong". */
static int cycle(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct timeval tv = {.tv_sec = 3};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* also bounds a plain connect() */
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int ok = -1;
  if (connect(fd, (struct sockaddr *)&target, sizeof target) == 0 && write(fd, "ping", 4) == 4) {
    char buf[16];
    size_t got = 0;
    for (;;) {
      ssize_t n = read(fd, buf + got, sizeof buf - got);
      if (n <= 0) {
        if (n == 0 && got == 4 && memcmp(buf, "pong", 4) == 0) ok = 0;
        break;
      }
      got += (size_t)n;
      if (got == sizeof buf) break;
    }
  }
  close(fd);
  return ok;
}

static void *worker(void *arg) {
  (void)arg;
  for (;;) {
    long i = __atomic_fetch_add(&next_cycle, 1, __ATOMIC_RELAXED);
    if (i >= count || now() > deadline) return NULL;
    double t0 = now();
    int r = cycle();
    cycle_ms[i] = r == 0 ? (now() - t0) * 1000 : -1;
  }
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: cps <ipv4> <port> <count> <parallel> <limit-seconds>\n");
    return 2;
  }
  memset(&target, 0, sizeof target);
  target.sin_family = AF_INET;
  target.sin_port = htons((unsigned short)atoi(argv[2]));
  if (inet_pton(AF_INET, argv[1], &target.sin_addr) != 1) {
    fprintf(stderr, "cps: %s is not an IPv4 address\n", argv[1]);
    return 2;
  }
  count = atol(argv[3]);
  long parallel = atol(argv[4]);
  double limit = atof(argv[5]);
  if (count < 1 || count > 10000000 || parallel < 1 || parallel > 1024 || limit <= 0 || limit > 3600) {
    fprintf(stderr, "cps: count 1..10000000, parallel 1..1024, limit-seconds 0..3600\n");
    return 2;
  }
  alarm((unsigned)limit + 20);
  cycle_ms = malloc(sizeof *cycle_ms * (size_t)count);
  if (!cycle_ms) return 1;
  for (long i = 0; i < count; i++) cycle_ms[i] = -2; /* not started */
  pthread_t *threads = calloc((size_t)parallel, sizeof *threads);
  if (!threads) return 1;
  double t0 = now();
  deadline = t0 + limit;
  for (long i = 0; i < parallel; i++) {
    if (pthread_create(&threads[i], NULL, worker, NULL) != 0) {
      fprintf(stderr, "cps: pthread_create failed\n");
      return 1;
    }
  }
  for (long i = 0; i < parallel; i++) pthread_join(threads[i], NULL);
  double seconds = now() - t0;
  long done = 0, failed = 0;
  for (long i = 0; i < count; i++) {
    if (cycle_ms[i] >= 0) cycle_ms[done++] = cycle_ms[i];
    else if (cycle_ms[i] == -1) failed++;
  }
  qsort(cycle_ms, (size_t)done, sizeof *cycle_ms, by_value);
  double p50 = done ? cycle_ms[(long)(0.50 * (double)done)] : -1;
  long i99 = (long)(0.99 * (double)done);
  double p99 = done ? cycle_ms[i99 < done ? i99 : done - 1] : -1;
  printf("{\"done\":%ld,\"failed\":%ld,\"seconds\":%.6f,\"p50_ms\":%.4f,\"p99_ms\":%.4f}\n", done, failed, seconds, p50,
         p99);
  return 0;
}
