/*
 * Helpers shared by the C baseline programs of the tunkit benchmark: open a TUN device and measure CPU time.
 * The programs configure nothing but the descriptor; the benchmark script gives the device its address, MTU,
 * txqueuelen and link state with iproute2, the same as tunkit's defaults, so both sides see one kernel setup.
 */
#ifndef TUNKIT_BENCH_TUN_H
#define TUNKIT_BENCH_TUN_H

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* Creates (or attaches to) the TUN device `name` as IFF_TUN | IFF_NO_PI, blocking mode. Exits on failure. */
static int tun_open(const char *name) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    perror("open /dev/net/tun");
    _exit(1);
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  if (strlen(name) >= IFNAMSIZ) {
    fprintf(stderr, "interface name too long: %s\n", name);
    _exit(2);
  }
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    perror("ioctl TUNSETIFF");
    _exit(1);
  }
  return fd;
}

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* User and system CPU time of the whole process so far, in microseconds. */
static void cpu_us(long *user, long *sys) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  *user = (long)ru.ru_utime.tv_sec * 1000000L + (long)ru.ru_utime.tv_usec;
  *sys = (long)ru.ru_stime.tv_sec * 1000000L + (long)ru.ru_stime.tv_usec;
}

/* Peak resident set size in KiB. */
static long max_rss_kib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

#endif
