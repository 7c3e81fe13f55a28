"""tcpdump expressions for the differential tests, across pcap-filter(7).

Addresses are filter constants only; no traffic is sent to them.
"""

from __future__ import annotations

HOSTS = [
    "host 10.77.0.1", "src host 10.77.0.2", "dst host 10.77.0.1", "host 192.0.2.1",
    "ip host 10.77.1.5", "src or dst host 10.77.0.2", "src and dst host 10.77.0.1",
    "host fd77::1", "ip6 host fd77::2", "src host fd77::2", "dst host fe80::1",
    "host 10.77.0.1 or host fd77::1", "not host 10.77.0.1", "host localhost",
    "arp host 10.77.0.1", "host 10.77.0.1 and host 10.77.0.2",
]
NETS = [
    "net 10.77.0.0/16", "src net 10.0.0.0/8", "dst net 192.0.2.0/24", "net 10.77.1.0 mask 255.255.255.0",
    "net fd77::/16", "src net fe80::/10", "dst net ff02::/16", "not src net 10.0.0.0/8",
    "net 10.77.0.0/24 or net fd77::/64", "ip6 net fd77:0:0:1::/64", "net 10.77", "net 0.0.0.0/0",
]
PORTS = [
    "port 53", "udp port 53", "tcp port 80", "src port 40000", "dst port 5353", "tcp dst port 443",
    "udp src port 53", "port 22 or port 80", "not port 22", "ip6 and tcp port 80",
    "ip and udp port 5353", "portrange 1000-2000", "tcp portrange 79-81", "udp dst portrange 5000-6000",
    "src portrange 39999-40001", "port 53 and not udp", "sctp port 9", "tcp src port 80 or udp dst port 53",
    "port 0", "port 65535", "udp port 53 and dst host 10.77.0.1", "dst port 80 and src net 10.77.0.0/16",
]
PROTOCOLS = [
    "ip", "ip6", "arp", "rarp", "tcp", "udp", "icmp", "icmp6", "sctp", "igmp", "ip proto 47",
    "ip6 proto 58", "proto 17", "ip proto \\tcp", "ip6 proto \\udp", "ether proto 0x88b5",
    "ether proto \\ip", "ether proto \\arp", "ip and not tcp", "not ip and not ip6", "pim", "vrrp",
    "ah", "esp", "ip6 and icmp6", "ip proto 132", "ip6 proto 6",
]
ETHERNET = [
    "ether host 02:00:00:00:00:99", "ether src 02:00:00:00:00:01", "ether dst 02:00:00:00:00:99",
    "ether broadcast", "ether multicast", "ip multicast", "ip6 multicast", "ether[0] & 1 != 0",
    "ether[12:2] = 0x0800", "ether[6:4] = 0x02000000", "not ether broadcast",
    "ether host ff:ff:ff:ff:ff:ff or arp",
]
VLAN = [
    "vlan", "vlan 10", "vlan 100", "vlan and ip", "vlan 10 and udp", "vlan and host 10.77.0.2",
    "vlan and vlan", "vlan 100 and vlan 20", "vlan and ip6", "not vlan", "vlan and tcp port 80",
    "vlan 7 and ip6 and udp", "ip or vlan", "vlan and arp",
]
ICMP = [
    "icmp[icmptype] = icmp-echo", "icmp[icmptype] != icmp-echo", "icmp[0] = 8", "icmp[icmpcode] = 0",
    "icmp6[icmp6type] = icmp6-echo", "icmp6[0] = 128", "icmp and icmp[0] = 0",
    "icmp[icmptype] = icmp-unreach or icmp[icmptype] = icmp-timxceed",
]
TCP_FLAGS = [
    "tcp[13] = 2", "tcp[tcpflags] & tcp-syn != 0", "tcp[tcpflags] & (tcp-syn|tcp-fin) != 0",
    "tcp[tcpflags] & tcp-ack = 0", "tcp[tcpflags] = tcp-syn", "tcp[13] & 0x12 = 0x12",
    "tcp[tcpflags] & tcp-rst != 0", "tcp[tcpflags] & tcp-push != 0 and tcp port 80",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) = tcp-syn", "tcp[tcpflags] & tcp-urg != 0",
    "tcp[13] & 3 != 0 and not src net 10.77.0.0/30",
]
LENGTHS = [
    "len > 100", "len < 60", "len = 60", "len >= 64", "len <= 1500", "less 64", "greater 100",
    "len > 60 and udp", "len - 14 > 40", "len % 2 = 0", "len & 0xff = 0x3c", "len / 2 > 30",
]
OFFSETS = [
    "ip[0] & 0xf > 5", "ip[0] & 0xf != 5", "ip[6:2] & 0x1fff = 0", "ip[6:2] & 0x1fff != 0",
    "ip[8] < 64", "ip[9] = 17", "ip[2:2] > 100", "ip[12:4] = 0x0a4d0002", "ip[16:4] & 0xffff0000 = 0x0a4d0000",
    "ip[1] & 0xfc != 0", "udp[8:2] = 0x1234", "udp[4:2] > 20", "tcp[0:2] = 40000", "tcp[2:2] < 1024",
    "tcp[12] & 0xf0 > 0x50", "tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420",
    "(ip[2:2] - ((ip[0]&0xf)<<2)) > 60", "ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2) != 0",
    "ip6[6] = 17", "ip6[7] < 64", "ip6[40] = 128", "ip6[4:2] > 20", "udp and ip[6] & 0x20 != 0",
    "ether[ether[0:4] & 0xffff] = 1", "ip[ip[0] & 0xf] = 0x77", "ether[ether[13] & 0x3f] > 0",
    "ip[0] * 2 > 140", "ip[8] / 2 = 32", "ip[8] % 3 = 1", "ip[0] ^ 0x45 = 0", "ip[0] | 0x40 = 0x45",
    "ip[9] << 2 = 68", "ip[9] >> 1 = 8", "ip[0] << ip[9] > 0", "ip[8] >> ip[1] = 64",
    "ip[8] / ip[1] > 1", "ip[8] % ip[1] = 0", "-ip[9] = 4294967279", "ip[8] - ip[9] = 47",
    "ip[8] + ip[9] = 81", "ip[2:2] * 2 > 2000", "udp[0:4] = 0x9c4014e9", "icmp[4:2] = 1",
    "ip6[8:4] = 0xfd770000 and ip6[24:4] = 0xfd770000",
]
COMBINATIONS = [
    "tcp or udp", "not tcp", "(tcp or udp) and port 53", "tcp and (port 80 or port 443)",
    "not (ip or ip6)", "(host 10.77.0.1 and port 53) or (host fd77::1 and port 80)",
    "ip and not (udp or tcp or icmp)", "udp and not port 53 and not port 5353",
    "((tcp))", "!tcp && udp || icmp", "ip6 or arp or vlan", "tcp and not tcp port 80 and len > 54",
    "src net 10.77.0.0/16 and dst net 10.77.0.0/16 and udp", "ip and ip[8] > 1 and ip[8] < 255",
    "udp or (tcp and tcp[13] & 2 != 0)", "ip6 and not ip6 proto 58", "mpls", "pppoes", "pppoed",
    "ether proto 0x8100", "ip broadcast or ether broadcast", "not vlan and not ip6",
]
# Compile fine but cannot run in the kernel (ancillary loads, backward jumps).
KERNEL_UNSUPPORTED = ["inbound", "outbound", "ifindex 3", "protochain 6", "ip6 protochain 17"]

EXPRESSIONS = (HOSTS + NETS + PORTS + PROTOCOLS + ETHERNET + VLAN + ICMP + TCP_FLAGS + LENGTHS
               + OFFSETS + COMBINATIONS)
