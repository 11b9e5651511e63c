/*
 * tunfd: plays the privileged parent that opens a TUN/TAP device and hands the descriptor to a program, as an
 * Android VpnService or a root helper does. Used by the Tun.fromFd tests.
 *
 *   tunfd <name> <tun|tap> <fd> <command> [args...]
 *
 * Opens /dev/net/tun, attaches it to <name> (created if absent) with IFF_NO_PI, moves the descriptor to number
 * <fd> without close-on-exec, then execs <command>, which inherits it (and may drop privileges first, e.g. with
 * setpriv). The device is not persistent: it goes when the last holder of the descriptor closes it.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: tunfd <name> <tun|tap> <fd> <command> [args...]\n");
    return 2;
  }
  const char *name = argv[1];
  int tap = strcmp(argv[2], "tap") == 0;
  int want = atoi(argv[3]);
  if (strlen(name) >= IFNAMSIZ || want < 3) {
    fprintf(stderr, "tunfd: bad name or fd number\n");
    return 2;
  }
  int fd = open("/dev/net/tun", O_RDWR);
  if (fd < 0) {
    perror("tunfd: open /dev/net/tun");
    return 1;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = (short)((tap ? IFF_TAP : IFF_TUN) | IFF_NO_PI);
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    perror("tunfd: ioctl TUNSETIFF");
    return 1;
  }
  if (fd != want) {
    if (dup2(fd, want) < 0) {
      perror("tunfd: dup2");
      return 1;
    }
    close(fd);
  }
  /* dup2 clears FD_CLOEXEC on the new number; open() above did not set it either. */
  execvp(argv[4], argv + 4);
  fprintf(stderr, "tunfd: exec %s: %s\n", argv[4], strerror(errno));
  return 127;
}
