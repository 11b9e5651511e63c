/*
 * Layout check of the IP Helper rows that crates/tunkit-core/src/platform/windows/sys/iphlp.rs declares by hand.
 * The Rust file asserts these same sizes and offsets at compile time; this file asserts them against the MinGW-w64
 * headers (which follow the Windows SDK). scripts/check-targets.sh compiles it with x86_64-w64-mingw32-gcc, so a
 * layout mistake on either side fails the check. Nothing here is linked or run.
 */
#include <winsock2.h>
#include <ws2ipdef.h>
#include <iphlpapi.h>
#include <netioapi.h>
#include <stddef.h>

#define SIZE(t, n) _Static_assert(sizeof(t) == (n), "sizeof " #t)
#define AT(t, f, n) _Static_assert(offsetof(t, f) == (n), "offsetof " #t "." #f)

SIZE(SOCKADDR_INET, 28);
SIZE(MIB_UNICASTIPADDRESS_ROW, 80);
AT(MIB_UNICASTIPADDRESS_ROW, InterfaceLuid, 32);
AT(MIB_UNICASTIPADDRESS_ROW, InterfaceIndex, 40);
AT(MIB_UNICASTIPADDRESS_ROW, OnLinkPrefixLength, 60);
AT(MIB_UNICASTIPADDRESS_ROW, DadState, 64);
AT(MIB_UNICASTIPADDRESS_ROW, CreationTimeStamp, 72);
AT(MIB_UNICASTIPADDRESS_TABLE, Table, 8);
SIZE(IP_ADDRESS_PREFIX, 32);
SIZE(MIB_IPFORWARD_ROW2, 104);
AT(MIB_IPFORWARD_ROW2, DestinationPrefix, 12);
AT(MIB_IPFORWARD_ROW2, NextHop, 44);
AT(MIB_IPFORWARD_ROW2, SitePrefixLength, 72);
AT(MIB_IPFORWARD_ROW2, Metric, 84);
AT(MIB_IPFORWARD_ROW2, Protocol, 88);
AT(MIB_IPFORWARD_ROW2, Origin, 100);
AT(MIB_IPFORWARD_TABLE2, Table, 8);
SIZE(MIB_IPINTERFACE_ROW, 168);
AT(MIB_IPINTERFACE_ROW, InterfaceLuid, 8);
AT(MIB_IPINTERFACE_ROW, RouterDiscoveryBehavior, 52);
AT(MIB_IPINTERFACE_ROW, ZoneIndices, 80);
AT(MIB_IPINTERFACE_ROW, SitePrefixLength, 144);
AT(MIB_IPINTERFACE_ROW, NlMtu, 152);
AT(MIB_IPINTERFACE_ROW, ReachableTime, 160);
AT(MIB_IPINTERFACE_ROW, DisableDefaultRoutes, 166);
SIZE(MIB_IF_ROW2, 1352);
AT(MIB_IF_ROW2, Alias, 28);
AT(MIB_IF_ROW2, PhysicalAddressLength, 1056);
AT(MIB_IF_ROW2, Mtu, 1124);
AT(MIB_IF_ROW2, InterfaceAndOperStatusFlags, 1152);
AT(MIB_IF_ROW2, OperStatus, 1156);
AT(MIB_IF_ROW2, TransmitLinkSpeed, 1192);
AT(MIB_IF_ROW2, InOctets, 1208);
AT(MIB_IF_ROW2, OutOctets, 1280);
AT(MIB_IF_ROW2, OutQLen, 1344);
/* The enum values iphlp.rs uses. */
_Static_assert(AF_INET6 == 23, "AF_INET6");
_Static_assert(IpDadStatePreferred == 4, "IpDadStatePreferred");
_Static_assert(MIB_IPPROTO_NETMGMT == 3, "MIB_IPPROTO_NETMGMT");
_Static_assert(IfOperStatusUp == 1, "IfOperStatusUp");
_Static_assert(IpPrefixOriginManual == 1 && IpSuffixOriginManual == 1, "IpPrefixOriginManual, IpSuffixOriginManual");
