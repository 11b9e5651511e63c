/*
 * echo: the C baseline echo responder of the tunkit forwarding benchmark. It owns one TUN device (created in the
 * network namespace it runs in) and answers every ICMP echo request read from it with the echo reply, written back
 * at once: the round trip a C program gives `ping`, against which the tunkit responder (forward.ts --echo) is
 * measured. One blocking read() and one write() per packet, no polling.
 *
 *   echo <name> <max-seconds>
 *
 * Prints "READY" once the device exists (the caller then gives it its address and brings it up), answers until
 * SIGTERM/SIGINT or <max-seconds>, then prints {"replies":N,"seconds":T,"userUs":U,"sysUs":Y,"maxRssKib":R}.
 */
#include "tun.h"
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

/* The Internet checksum of `len` bytes. */
static uint16_t csum(const unsigned char *p, size_t len) {
  uint32_t s = 0;
  for (size_t i = 0; i + 1 < len; i += 2) s += (uint32_t)(p[i] << 8 | p[i + 1]);
  if (len & 1) s += (uint32_t)(p[len - 1] << 8);
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint16_t)~s;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: echo <name> <max-seconds>\n");
    return 2;
  }
  unsigned max_seconds = (unsigned)atoi(argv[2]);
  if (max_seconds == 0 || max_seconds > 600) return 2;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGALRM, &sa, NULL);
  int fd = tun_open(argv[1]);
  static unsigned char buf[65536];
  unsigned long long replies = 0;
  long u0, s0, u1, s1;
  cpu_us(&u0, &s0);
  double t0 = mono_s();
  alarm(max_seconds);
  printf("READY\n");
  fflush(stdout);
  while (!stop) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) continue; /* EINTR on a signal: the loop condition decides */
    size_t ihl = (size_t)(buf[0] & 0x0f) * 4;
    /* IPv4, ICMP, an echo request with its 8-byte header */
    if (n < 28 || buf[0] >> 4 != 4 || buf[9] != 1 || (size_t)n < ihl + 8 || buf[ihl] != 8) continue;
    unsigned char tmp[4];
    memcpy(tmp, buf + 12, 4);
    memcpy(buf + 12, buf + 16, 4);
    memcpy(buf + 16, tmp, 4);
    buf[ihl] = 0;
    buf[ihl + 2] = buf[ihl + 3] = 0;
    uint16_t c = csum(buf + ihl, (size_t)n - ihl);
    buf[ihl + 2] = (unsigned char)(c >> 8);
    buf[ihl + 3] = (unsigned char)c;
    if (write(fd, buf, (size_t)n) == n) replies++;
  }
  cpu_us(&u1, &s1);
  printf("{\"replies\":%llu,\"seconds\":%.6f,\"userUs\":%ld,\"sysUs\":%ld,\"maxRssKib\":%ld}\n", replies,
         mono_s() - t0, u1 - u0, s1 - s0, max_rss_kib());
  fflush(stdout);
  return 0;
}
