/*
 * tunread: the C baseline reader of the tunkit benchmark, a plain blocking read() loop.
 *
 *   tunread <ifname> <max-seconds> [max-packets]
 *
 * Creates the TUN device <ifname> (IFF_TUN | IFF_NO_PI) and prints "READY" once the descriptor is attached; the
 * caller then configures the device and starts the traffic. Reads one packet per read() call until SIGTERM or
 * SIGINT, <max-seconds> (SIGALRM) or <max-packets>, whichever comes first, then prints one JSON line:
 *   {"packets":N,"bytes":B,"seconds":S,"userUs":U,"sysUs":Y,"maxRssKiB":R}
 * CPU time and seconds are counted from READY on.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>

#include "tun.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
  stop = 1;
  /* A signal that lands between the check of `stop` and the next read() does not interrupt it; if no packet
   * comes, this second alarm does. alarm() is async-signal-safe. */
  if (sig != SIGALRM) alarm(1);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: tunread <ifname> <max-seconds> [max-packets]\n");
    return 2;
  }
  unsigned max_seconds = (unsigned)atoi(argv[2]);
  unsigned long long max_packets = argc > 3 ? strtoull(argv[3], NULL, 10) : 1000000000ULL;
  if (max_seconds == 0 || max_seconds > 600) return 2;

  /* No SA_RESTART: a blocked read() returns EINTR when the run is over. */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGALRM, &sa, NULL);

  int fd = tun_open(argv[1]);
  static unsigned char buf[65536];
  unsigned long long packets = 0, bytes = 0;
  long u0, s0, u1, s1;
  cpu_us(&u0, &s0);
  double t0 = mono_s();
  alarm(max_seconds);
  printf("READY\n");
  fflush(stdout);

  while (!stop && packets < max_packets) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      packets++;
      bytes += (unsigned long long)n;
    } else if (n < 0 && errno != EINTR && errno != EAGAIN) {
      perror("tunread: read");
      break;
    }
  }

  cpu_us(&u1, &s1);
  printf("{\"packets\":%llu,\"bytes\":%llu,\"seconds\":%.6f,\"userUs\":%ld,\"sysUs\":%ld,\"maxRssKiB\":%ld}\n", packets,
         bytes, mono_s() - t0, u1 - u0, s1 - s0, max_rss_kib());
  fflush(stdout);
  close(fd);
  return 0;
}
