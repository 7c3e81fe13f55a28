/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The contract between ncebpf's kernel programs (bpf/ncebpf.c) and the Python
 * collector (ncebpf/kernel/maps.py): map sizes, key and value layouts, and the
 * slots of the totals array. Python never mirrors these structs by hand; it
 * reads them through the ctypes types BCC generates from this header, and a
 * unit test checks the slot names against ncebpf.kernel.maps.TotalsSlot.
 */
#ifndef NCEBPF_KERN_USER_H
#define NCEBPF_KERN_USER_H

/* Overridden with -DNCEBPF_MAX_PEERS=N by the loader (--max-peers). */
#ifndef NCEBPF_MAX_PEERS
#define NCEBPF_MAX_PEERS 1048576
#endif

#define NCEBPF_MAX_LOCAL_ADDRS 256

/* An IPv6 address, or an IPv4 address as ::ffff:a.b.c.d; network byte order. */
struct peer_key {
	__u8 addr[16];
};

/*
 * One CPU's share of a peer's counters. Cumulative for the life of the map
 * entry: the collector takes deltas and never resets them (design §2,
 * lossless drain). Times are CLOCK_MONOTONIC (coarse) nanoseconds.
 */
struct peer_counters {
	__u64 packets;
	__u64 bytes;
	__u64 first_seen_ns; /* 0 on CPUs other than the one that created the entry */
	__u64 last_seen_ns;
};

/* Every frame a program sees lands in exactly one slot. */
enum totals_slot {
	TOTALS_MATCHED,      /* counted in a peer entry */
	TOTALS_FILTERED_OUT, /* rejected by the filter */
	TOTALS_UNPARSED,     /* not IPv4/IPv6, or truncated headers */
	TOTALS_OVERFLOW,     /* peer map full: counted here instead */
	TOTALS_NR,
};

struct total_counters {
	__u64 packets;
	__u64 bytes;
};

#endif /* NCEBPF_KERN_USER_H */
