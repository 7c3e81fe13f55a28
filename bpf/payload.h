/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Case-insensitive (ASCII) substring search in the payload window
 * [NCEBPF_PAYLOAD_OFF, min(NCEBPF_SNAPLEN, frame length)), for match and
 * nomatch; ncebpf/payload.py is the reference it must agree with.
 *
 * Shaped for the verifier. The window is copied into a per-CPU scratch
 * buffer (searching the packet in place needs a bounds check per byte, and
 * the verifier gives up on the jumps); it is lower-cased once, eight bytes
 * at a time with branch-free arithmetic; and a candidate position is
 * compared eight bytes at a time against the needle's words and masks. Each branch in
 * the loop would double the states the verifier walks. The maps live in
 * ncebpf.c: BCC rewrites map calls in the main source file only.
 */
#ifndef NCEBPF_PAYLOAD_H
#define NCEBPF_PAYLOAD_H

#include "ncebpf_kern_user.h"

/* Room for a needle-sized read at the last window position. */
#define NCEBPF_SCRATCH_WORDS ((NCEBPF_WINDOW_MAX + NCEBPF_NEEDLE_MAX) / 8)

struct payload_scratch {
	__u64 words[NCEBPF_SCRATCH_WORDS];
};

/* Bytes of window for a frame of frame_len bytes; 0 when the frame ends before it. */
static __always_inline __u32 window_len(__u64 frame_len)
{
	__u64 end = frame_len < NCEBPF_SNAPLEN ? frame_len : NCEBPF_SNAPLEN;

	return end <= NCEBPF_PAYLOAD_OFF ? 0 : end - NCEBPF_PAYLOAD_OFF;
}

/* The load helpers take a length the verifier can prove is 1..WINDOW_MAX. */
static __always_inline __u32 load_len(__u32 wlen)
{
	return ((wlen - 1) & (NCEBPF_WINDOW_MAX - 1)) + 1;
}

/* ASCII A-Z to a-z in eight bytes at once; other bytes unchanged. */
static __always_inline __u64 fold_word(__u64 x)
{
	__u64 seven = x & 0x7f7f7f7f7f7f7f7fULL;
	__u64 from_a = seven + 0x3f3f3f3f3f3f3f3fULL; /* high bit set where byte >= 'A' */
	__u64 past_z = seven + 0x2525252525252525ULL; /* high bit set where byte > 'Z' */
	__u64 upper = (from_a ^ past_z) & ~x & 0x8080808080808080ULL;

	return x | (upper >> 2);
}

static __always_inline void fold_window(struct payload_scratch *s)
{
#pragma unroll
	for (int i = 0; i < NCEBPF_WINDOW_MAX / 8; i++)
		s->words[i] = fold_word(s->words[i]);
}

static __always_inline int window_contains(struct payload_scratch *s, __u32 wlen,
					   struct payload_needle *n)
{
	__u8 *buf = (__u8 *)s->words;
	__u32 nlen, last;

	if (!n)
		return 0;
	nlen = n->len;
	if (nlen == 0 || nlen > NCEBPF_NEEDLE_MAX || wlen < nlen)
		return 0;
	last = wlen - nlen;
	for (__u32 i = 0; i < NCEBPF_WINDOW_MAX; i++) {
		/* Masked: the verifier needs the bound that i <= last already implies. */
		__u8 *at = buf + (i & (NCEBPF_WINDOW_MAX - 1));
		__u64 diff = 0;

		if (i > last)
			break;
		if (*at != n->first)
			continue;
#pragma unroll
		for (int w = 0; w < NCEBPF_NEEDLE_WORDS; w++)
			diff |= (*(__u64 *)(at + 8 * w) ^ n->words[w]) & n->masks[w];
		if (!diff)
			return 1;
	}
	return 0;
}

#endif /* NCEBPF_PAYLOAD_H */
