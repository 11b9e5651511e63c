/*
 * fwd: the C baseline forwarder of the tunkit forwarding benchmark. It owns two TUN devices, one in each of two
 * network namespaces, and moves every packet read from one into the other, in one thread polling both descriptors.
 *
 *   fwd <netns A> <name A> <netns B> <name B> <offload 0|1> <max-seconds>
 *
 * <netns A>/<netns B> are paths such as /proc/<pid>/ns/net; the device <name A> is created in A and <name B> in B
 * (the thread enters each namespace only to open its device). With offload 1 both devices are opened with
 * IFF_VNET_HDR, a 10-byte virtio-net header (TUNSETVNETHDRSZ) and TUNSETOFFLOAD checksum + TSO4/6 (+ USO4/6 where
 * the kernel has them, Linux 6.2+): the kernel then hands over TCP super-packets of up to 64 KiB, and this program
 * passes each frame, header included, to the other device unchanged (the "pass-through" row: the most a
 * forwarder can get from offload without looking at packets). Offload 0 is the plain read()/write() loop.
 *
 * Prints "READY" once both devices exist (the caller then configures addresses and routes), forwards until
 * SIGTERM/SIGINT or <max-seconds>, then prints one JSON line:
 *   {"packets":N,"bytes":B,"superPackets":S,"writeErrors":E,"seconds":T,"userUs":U,"sysUs":Y}
 * where superPackets counts frames whose header asks for segmentation.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif

static volatile sig_atomic_t stop;

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* User and system CPU time of the process so far, in microseconds. */
static void cpu_us(long *user, long *sys) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  *user = (long)ru.ru_utime.tv_sec * 1000000L + (long)ru.ru_utime.tv_usec;
  *sys = (long)ru.ru_stime.tv_sec * 1000000L + (long)ru.ru_stime.tv_usec;
}

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

/* Enters the network namespace at `path` (this thread only), or exits. */
static void enter(const char *path) {
  int ns = open(path, O_RDONLY | O_CLOEXEC);
  if (ns < 0 || setns(ns, CLONE_NEWNET) < 0) {
    perror(path);
    _exit(1);
  }
  close(ns);
}

/* Opens the TUN device `name` in the namespace at `ns`, non-blocking, with or without offload. */
static int open_in(const char *ns, const char *name, int offload) {
  enter(ns);
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    perror("open /dev/net/tun");
    _exit(1);
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (offload ? IFF_VNET_HDR : 0);
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    perror("ioctl TUNSETIFF");
    _exit(1);
  }
  if (offload) {
    int size = 10;
    if (ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) {
      perror("ioctl TUNSETVNETHDRSZ");
      _exit(1);
    }
    unsigned tso = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    /* USO is unknown before Linux 6.2, which refuses the whole request: retry without it. */
    if (ioctl(fd, TUNSETOFFLOAD, tso | TUN_F_USO4 | TUN_F_USO6) < 0 && ioctl(fd, TUNSETOFFLOAD, tso) < 0) {
      perror("ioctl TUNSETOFFLOAD");
      _exit(1);
    }
  }
  return fd;
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: fwd <netns A> <name A> <netns B> <name B> <offload 0|1> <max-seconds>\n");
    return 2;
  }
  int offload = atoi(argv[5]);
  unsigned max_seconds = (unsigned)atoi(argv[6]);
  if (max_seconds == 0 || max_seconds > 600) return 2;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGALRM, &sa, NULL);

  int fds[2] = {open_in(argv[1], argv[2], offload), open_in(argv[3], argv[4], offload)};
  /* A frame: the virtio-net header (with offload) and up to 64 KiB of packet. */
  static unsigned char buf[10 + 65536 + 64];
  unsigned long long packets = 0, bytes = 0, supers = 0, write_errors = 0;
  long u0, s0, u1, s1;
  cpu_us(&u0, &s0);
  double t0 = mono_s();
  alarm(max_seconds);
  printf("READY\n");
  fflush(stdout);

  while (!stop) {
    struct pollfd p[2] = {{.fd = fds[0], .events = POLLIN}, {.fd = fds[1], .events = POLLIN}};
    if (poll(p, 2, 1000) < 0) {
      if (errno == EINTR) continue;
      perror("poll");
      break;
    }
    for (int i = 0; i < 2; i++) {
      if (!(p[i].revents & POLLIN)) continue;
      /* Drain what is pending on this side, bounded so that the other side is not starved. */
      for (int k = 0; k < 64 && !stop; k++) {
        ssize_t n = read(fds[i], buf, sizeof buf);
        if (n < 0) {
          if (errno != EAGAIN && errno != EINTR) perror("fwd: read");
          break;
        }
        if (write(fds[1 - i], buf, (size_t)n) != n) write_errors++;
        packets++;
        bytes += (unsigned long long)n;
        if (offload && n > 1 && (buf[1] & 0x7f) != 0) supers++;
      }
    }
  }

  cpu_us(&u1, &s1);
  printf("{\"packets\":%llu,\"bytes\":%llu,\"superPackets\":%llu,\"writeErrors\":%llu,\"seconds\":%.6f,\"userUs\":%ld,"
         "\"sysUs\":%ld}\n",
         packets, bytes, supers, write_errors, mono_s() - t0, u1 - u0, s1 - s0);
  fflush(stdout);
  return 0;
}
