/**
 * UDP segmentation offload (USO, UDP GSO) for the tests: a small C sender that cuts each send into datagrams with
 * `UDP_SEGMENT` (which Node cannot set), the datagrams it sends, and a probe saying whether this machine can run
 * such a test at all (kernel, C compiler, a TUN device that accepts USO).
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Tun } from '../../index.ts'
import { canCreateDevices } from './device.ts'

const USO_SENDER_C = String.raw`
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
/* usosend <ip> <port> <sends> <bytes per send> <segment size>: payload byte i of send k is (k * 131 + i * 7) & 255.
   <ip> is IPv4 or IPv6. */
int main(int argc, char **argv) {
  if (argc != 6) return 2;
  struct sockaddr_storage to;
  socklen_t tolen;
  memset(&to, 0, sizeof to);
  struct sockaddr_in *v4 = (struct sockaddr_in *)&to;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&to;
  if (inet_pton(AF_INET, argv[1], &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET; v4->sin_port = htons(atoi(argv[2])); tolen = sizeof *v4;
  } else if (inet_pton(AF_INET6, argv[1], &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6; v6->sin6_port = htons(atoi(argv[2])); tolen = sizeof *v6;
  } else return 2;
  int fd = socket(to.ss_family, SOCK_DGRAM, 0);
  int seg = atoi(argv[5]), sends = atoi(argv[3]), len = atoi(argv[4]);
  if (fd < 0 || setsockopt(fd, SOL_UDP, UDP_SEGMENT, &seg, sizeof seg) < 0) { perror("UDP_SEGMENT"); return 1; }
  static unsigned char buf[65000];
  for (int k = 0; k < sends; k++) {
    for (int i = 0; i < len; i++) buf[i] = (unsigned char)((k * 131 + i * 7) & 255);
    if (sendto(fd, buf, len, 0, (struct sockaddr *)&to, tolen) != len) { perror("sendto"); return 1; }
    usleep(2000);
  }
  return 0;
}
`

/** Builds the sender; its path, or null without a C compiler. */
export function buildUsoSender(): string | null {
  try {
    const dir = mkdtempSync(join(tmpdir(), 'tunkit-uso-'))
    writeFileSync(join(dir, 'usosend.c'), USO_SENDER_C)
    execFileSync('cc', ['-O1', '-Wall', '-o', join(dir, 'usosend'), join(dir, 'usosend.c')], { stdio: 'pipe' })
    return join(dir, 'usosend')
  } catch {
    return null
  }
}

/** The bytes of send `k` of the sender: `len` of them. */
export function usoSend(k: number, len: number): Buffer {
  const whole = Buffer.alloc(len)
  for (let i = 0; i < len; i++) whole[i] = (k * 131 + i * 7) & 255
  return whole
}

/** The datagrams the sender's `sends` sends of `len` bytes cut at `seg` bytes are, in order. */
export function usoDatagrams(sends: number, len: number, seg: number): Buffer[] {
  const out: Buffer[] = []
  for (let k = 0; k < sends; k++) {
    const whole = usoSend(k, len)
    for (let off = 0; off < len; off += seg) out.push(whole.subarray(off, Math.min(len, off + seg)))
  }
  return out
}

/**
 * Why a USO test cannot run here (null: it can): Linux before 6.2, no C compiler, or a kernel whose TUN refuses
 * USO. Devices must be creatable (see `canCreateDevices`) for the last check; where they are not, null is returned
 * and the device gate decides.
 */
async function probe(): Promise<{ reason: string | null; sender: string | null }> {
  const release = execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim()
  const [major, minor] = release.split('.').map(Number)
  if (major! < 6 || (major === 6 && minor! < 2))
    return { reason: `USO needs Linux 6.2+, this is ${release}`, sender: null }
  const sender = buildUsoSender()
  if (sender === null) return { reason: 'building the UDP_SEGMENT sender needs a C compiler', sender }
  if (!canCreateDevices) return { reason: null, sender }
  const t = await Tun.create({ name: 'tkusoprobe%d', offload: { udp: true } })
  try {
    const on = t.stats().backend.offloadUdp
    return { reason: on === 1 ? null : `the kernel (${release}) refused USO on a TUN (offloadUdp ${on})`, sender }
  } finally {
    await t.close()
  }
}

export const uso = await probe()
