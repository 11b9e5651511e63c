/*
 * tunwrite: the C baseline writer of the tunkit benchmark, one write() per packet.
 *
 *   tunwrite <ifname> <seconds> <packet-hex> [max-packets]
 *
 * Creates the TUN device <ifname> (IFF_TUN | IFF_NO_PI), prints "READY" and waits for a line on stdin (the
 * caller configures the device meanwhile). Then writes the given IP packet (hex) over and over for <seconds> or
 * <max-packets>, prints one JSON line, and waits for stdin to close before it closes the device (so that the caller
 * can read the device's kernel counters first):
 *   {"packets":N,"errors":E,"seconds":S,"userUs":U,"sysUs":Y,"maxRssKiB":R}
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>

#include "tun.h"

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: tunwrite <ifname> <seconds> <packet-hex> [max-packets]\n");
    return 2;
  }
  double seconds = atof(argv[2]);
  const char *hex = argv[3];
  unsigned long long max_packets = argc > 4 ? strtoull(argv[4], NULL, 10) : 1000000000ULL;
  size_t hlen = strlen(hex);
  if (seconds <= 0 || seconds > 600 || hlen == 0 || hlen % 2 != 0 || hlen / 2 > 65535) return 2;
  unsigned char pkt[65536];
  size_t len = hlen / 2;
  for (size_t i = 0; i < len; i++) {
    int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return 2;
    pkt[i] = (unsigned char)(hi << 4 | lo);
  }
  /* Default SIGALRM action terminates the process: a safety bound should the caller never answer. */
  alarm((unsigned)seconds + 60);

  int fd = tun_open(argv[1]);
  printf("READY\n");
  fflush(stdout);
  char line[64];
  if (!fgets(line, sizeof line, stdin)) return 1;

  unsigned long long packets = 0, errors = 0;
  long u0, s0, u1, s1;
  cpu_us(&u0, &s0);
  double t0 = mono_s(), end = t0 + seconds, t = t0;
  while (t < end && packets < max_packets) {
    /* Check the clock once per 64 writes: a vDSO call is cheap, but not free next to a write. */
    for (int i = 0; i < 64; i++) {
      if (write(fd, pkt, len) == (ssize_t)len) {
        packets++;
      } else if (errno != EINTR) {
        errors++;
      }
    }
    t = mono_s();
  }
  double elapsed = mono_s() - t0;
  cpu_us(&u1, &s1);
  printf("{\"packets\":%llu,\"errors\":%llu,\"seconds\":%.6f,\"userUs\":%ld,\"sysUs\":%ld,\"maxRssKiB\":%ld}\n", packets,
         errors, elapsed, u1 - u0, s1 - s0, max_rss_kib());
  fflush(stdout);
  /* Keep the device until the caller has read its counters. */
  while (fgets(line, sizeof line, stdin)) {
  }
  close(fd);
  return 0;
}
