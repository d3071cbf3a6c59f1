/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Incremental Internet checksum updates (RFC 1624, eqn. 3):
 * HC' = ~(~HC + ~m + m'). Values stay in network byte order throughout; the
 * one's-complement sum is the same whichever way the 16-bit words are read. */
#pragma once

#include <linux/types.h>

static __always_inline __u16 csum_fold(__u32 c)
{
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)~c;
}

static __always_inline void csum_replace2(__sum16 *sum, __be16 from, __be16 to)
{
	__u32 c = (__u16)~*sum;

	c += (__u16)~from;
	c += to;
	*sum = csum_fold(c);
}

static __always_inline void csum_replace4(__sum16 *sum, __be32 from, __be32 to)
{
	csum_replace2(sum, (__be16)(from >> 16), (__be16)(to >> 16));
	csum_replace2(sum, (__be16)(from & 0xffff), (__be16)(to & 0xffff));
}
