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

/*
 * A peer's address and its family. family is NCEBPF_FAMILY_IPV4 (addr holds
 * ::ffff:a.b.c.d) or NCEBPF_FAMILY_IPV6 (addr holds the address as on the
 * wire); pad is always 0. The family must be in the key: an IPv6 address can
 * be any 128 bits, ::ffff:a.b.c.d included, and a frame from that address is
 * not one from a.b.c.d (issue 10, item 5). First, so that keys sorted as
 * bytes put IPv4 before IPv6. Network byte order; 20 bytes, which the hash
 * map rounds up to 24 (8 more than a bare address, per peer).
 */
#define NCEBPF_FAMILY_IPV4 4
#define NCEBPF_FAMILY_IPV6 6

struct peer_key {
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

/*
 * One CPU's share of a peer's counters, by direction: in = frames the peer
 * sent to a local address (the peer is the source), out = frames sent to
 * the peer (the peer is the destination). Cumulative for the life of the map
 * entry: the collector takes deltas and never resets them (design §2,
 * lossless drain). Both ways together are the sums, so they are not stored;
 * nor are time stamps: user space knows at drain granularity when a peer
 * appeared and when its counters last moved (issue 13, item 3). 32 bytes a
 * CPU: with the 24-byte key, a peer costs 160 B of kernel memory at 2 CPUs.
 */
struct peer_counters {
	__u64 in_packets;
	__u64 in_bytes;
	__u64 out_packets;
	__u64 out_bytes;
};

/*
 * Local addresses, hashed into NCEBPF_LOCAL_SLOTS slots by local_slot_of()
 * (user space computes the same fold). A slot holding exactly one address
 * answers "is this address local?" with an inlined array lookup and a
 * 20-byte compare; only when two local addresses share a slot does the
 * program consult the local_addrs hash.
 */
#define NCEBPF_LOCAL_SLOTS 256

struct local_slot {
	struct peer_key addr; /* valid when count == 1 */
	__u32 count;          /* local addresses that hash to this slot */
	__u32 pad;
};

/* Every frame a program sees lands in exactly one slot. */
enum totals_slot {
	TOTALS_MATCHED_IN,   /* counted in a peer entry, sent by the peer */
	TOTALS_FILTERED_OUT, /* rejected by the filter */
	TOTALS_UNPARSED,     /* carries no IP: ARP, LLDP, PPPoE discovery, ... */
	TOTALS_OVERFLOW,     /* peer map full: counted here instead */
	TOTALS_UNATTRIBUTED, /* IP the parser cannot attribute (see parse_l3) */
	TOTALS_MATCHED_OUT,  /* counted in a peer entry, sent to the peer */
	TOTALS_NR,
};

struct total_counters {
	__u64 packets;
	__u64 bytes;
};

/*
 * Payload match/nomatch needles, ASCII-lower-cased by user space. Slot 0 of
 * payload_needles is match, slot 1 nomatch; len 0 = not set. The needle's
 * bytes are packed into 64-bit words as a little-endian load would read
 * them, with a mask word that keeps only the needle's own bytes, so the
 * kernel compares eight bytes at a time without branches.
 */
#define NCEBPF_NEEDLE_MAX 32
#define NCEBPF_NEEDLE_WORDS (NCEBPF_NEEDLE_MAX / 8)
#define NCEBPF_WINDOW_MAX 256
#define NCEBPF_NEEDLE_MATCH 0
#define NCEBPF_NEEDLE_NOMATCH 1

struct payload_needle {
	__u32 len;
	__u32 first; /* the first byte, for the cheap check at each position */
	__u64 words[NCEBPF_NEEDLE_WORDS];
	__u64 masks[NCEBPF_NEEDLE_WORDS];
};

/*
 * What the pinned maps hold (issue 13, items 1 and 2): one entry, written by
 * user space only, right after the maps were made. layout is
 * NCEBPF_DATASET_LAYOUT; id is a random number naming this data set (0: the
 * maps are new, no program has counted into them yet); digest is a SHA-256 of
 * what defines the data set (ncebpf.kernel.pins.dataset_digest). This struct
 * never changes: every ncebpf reads it to learn whether it can use the maps.
 */
#define NCEBPF_DATASET_LAYOUT 1

struct dataset_meta {
	__u32 layout;
	__u32 pad;
	__u64 id;
	__u8 digest[32];
};

#endif /* NCEBPF_KERN_USER_H */
