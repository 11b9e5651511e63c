/*
 * flood: a UDP load generator for the tunkit benchmark.
 *
 *   flood -d <dst-ip> -p <dst-port> -s <payload-bytes> -t <seconds> [-r <packets/s>] [-n <max-packets>]
 *
 * Sends datagrams of a fixed payload size to one destination with sendmmsg(2), 64 per call, for at most
 * <seconds> and at most <max-packets>. With -r it paces itself with a token bucket (capacity four batches, so a
 * late wake-up is made up for without bursting beyond that). Prints one JSON line:
 *   {"sent":N,"errors":E,"seconds":S,"userUs":U,"sysUs":Y}
 * `sent` counts datagrams the kernel accepted; a datagram the device later drops still counts as sent, which is
 * what "offered load" means here.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s) {
  if (s <= 0) return;
  struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
}

static long tv_us(struct timeval tv) { return (long)tv.tv_sec * 1000000L + (long)tv.tv_usec; }

static void usage(void) {
  fprintf(stderr, "usage: flood -d <dst-ip> -p <port> -s <payload-bytes> -t <seconds> [-r <pps>] [-n <max-packets>]\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *dst = NULL;
  int port = 0, size = -1;
  double seconds = 0, rate = 0;
  unsigned long long max_packets = 1000000000ULL;
  int opt;
  while ((opt = getopt(argc, argv, "d:p:s:t:r:n:")) != -1) {
    switch (opt) {
      case 'd': dst = optarg; break;
      case 'p': port = atoi(optarg); break;
      case 's': size = atoi(optarg); break;
      case 't': seconds = atof(optarg); break;
      case 'r': rate = atof(optarg); break;
      case 'n': max_packets = strtoull(optarg, NULL, 10); break;
      default: usage();
    }
  }
  if (!dst || port <= 0 || port > 65535 || size < 0 || size > 65000 || seconds <= 0 || seconds > 600) usage();

  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t slen;
  struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, dst, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    slen = sizeof *a4;
  } else if (inet_pton(AF_INET6, dst, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    slen = sizeof *a6;
  } else {
    fprintf(stderr, "flood: bad address %s\n", dst);
    return 2;
  }

  int fd = socket(ss.ss_family, SOCK_DGRAM, 0);
  if (fd < 0) { perror("flood: socket"); return 1; }
  int sndbuf = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  /* Connected: the route is looked up once, and sendmmsg needs no per-message address. */
  if (connect(fd, (struct sockaddr *)&ss, slen) < 0) { perror("flood: connect"); return 1; }
  /* Pacing sleeps are short; the default 50 us timer slack would make them coarse. */
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

  char *payload = calloc(1, size > 0 ? (size_t)size : 1);
  if (!payload) return 1;
  for (int i = 0; i < size; i++) payload[i] = (char)i;
  struct iovec iov[BATCH];
  struct mmsghdr msgs[BATCH];
  memset(msgs, 0, sizeof msgs);
  for (int i = 0; i < BATCH; i++) {
    iov[i].iov_base = payload;
    iov[i].iov_len = (size_t)size;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }

  unsigned long long sent = 0, errors = 0;
  const double cap = 4.0 * BATCH;
  double tokens = rate > 0 ? BATCH : 0;
  double t0 = now_s(), last = t0, end = t0 + seconds, t = t0;
  while (t < end && sent < max_packets) {
    int want = BATCH;
    if (rate > 0) {
      tokens += (t - last) * rate;
      if (tokens > cap) tokens = cap;
      last = t;
      if (tokens < 1) {
        /* Sleep until a whole batch is available (or the run ends). */
        double wait = (BATCH - tokens) / rate;
        if (t + wait > end) wait = end - t;
        sleep_s(wait);
        t = now_s();
        continue;
      }
      want = tokens < BATCH ? (int)tokens : BATCH;
    }
    if ((unsigned long long)want > max_packets - sent) want = (int)(max_packets - sent);
    int n = sendmmsg(fd, msgs, (unsigned)want, 0);
    if (n < 0) {
      /* ENOBUFS and the like: the stack refused the whole call; count and go on (bounded by time). */
      if (errno != EINTR) errors++;
    } else {
      sent += (unsigned long long)n;
      if (rate > 0) tokens -= n;
    }
    t = now_s();
  }
  double elapsed = now_s() - t0;

  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("{\"sent\":%llu,\"errors\":%llu,\"seconds\":%.6f,\"userUs\":%ld,\"sysUs\":%ld}\n", sent, errors, elapsed,
         tv_us(ru.ru_utime), tv_us(ru.ru_stime));
  fflush(stdout);
  close(fd);
  free(payload);
  return 0;
}
