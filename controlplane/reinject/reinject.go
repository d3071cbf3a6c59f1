// Package reinject sends IP packets that the XDP program held back out
// through the kernel, once the inspector has allowed their flow.
//
// XDP hands the inspector copies of a PENDING flow's first client data
// packets and drops the originals. By then XDP has already done what it
// does to a forwarded packet (NAT, TTL, checksums), so what is left is
// routing and the link layer. A raw socket with a complete IP header
// gives exactly that: the kernel routes the packet as one the host sends,
// resolves the neighbour and transmits it, without touching the header.
// The kernel's forwarding path, and so its lack of policy, is never used.
package reinject

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Sender owns one raw socket per family.
type Sender struct {
	fd4, fd6 int
}

// Open opens the raw sockets in the calling thread's network namespace:
// the daemon's, where the appliance's routes are.
func Open() (*Sender, error) {
	fd4, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("open IPv4 raw socket: %w", err)
	}
	fd6, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		unix.Close(fd4)
		return nil, fmt.Errorf("open IPv6 raw socket: %w", err)
	}
	// IPPROTO_RAW implies a caller-built header for IPv4 only; IPv6 asks.
	if err := unix.SetsockoptInt(fd6, unix.IPPROTO_IPV6, unix.IPV6_HDRINCL, 1); err != nil {
		unix.Close(fd4)
		unix.Close(fd6)
		return nil, fmt.Errorf("IPv6 raw socket: set IPV6_HDRINCL: %w", err)
	}
	return &Sender{fd4: fd4, fd6: fd6}, nil
}

// ErrMalformed is returned for a buffer that is not one whole IP packet.
// The dataplane's records are checked before anything is sent: a raw
// socket would send whatever it is given.
var ErrMalformed = errors.New("not a complete IP packet")

// Send transmits one IP packet, header included, to its destination.
func (s *Sender) Send(pkt []byte) error {
	dst, v6, err := destination(pkt)
	if err != nil {
		return err
	}
	if v6 {
		return unix.Sendto(s.fd6, pkt, 0, &unix.SockaddrInet6{Addr: dst.As16()})
	}
	return unix.Sendto(s.fd4, pkt, 0, &unix.SockaddrInet4{Addr: dst.As4()})
}

// destination checks that pkt is one IPv4 or IPv6 packet whose length
// field covers the buffer exactly, and returns its destination.
func destination(pkt []byte) (dst netip.Addr, v6 bool, err error) {
	if len(pkt) < 1 {
		return netip.Addr{}, false, ErrMalformed
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return netip.Addr{}, false, fmt.Errorf("%w: %d bytes is shorter than an IPv4 header", ErrMalformed, len(pkt))
		}
		ihl := int(pkt[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:4]))
		if ihl < 20 || total != len(pkt) || ihl > total {
			return netip.Addr{}, false, fmt.Errorf("%w: IPv4 header length %d, total length %d, buffer %d", ErrMalformed, ihl, total, len(pkt))
		}
		return netip.AddrFrom4([4]byte(pkt[16:20])), false, nil
	case 6:
		if len(pkt) < 40 {
			return netip.Addr{}, false, fmt.Errorf("%w: %d bytes is shorter than an IPv6 header", ErrMalformed, len(pkt))
		}
		if payload := int(binary.BigEndian.Uint16(pkt[4:6])); 40+payload != len(pkt) {
			return netip.Addr{}, false, fmt.Errorf("%w: IPv6 payload length %d, buffer %d", ErrMalformed, payload, len(pkt))
		}
		return netip.AddrFrom16([16]byte(pkt[24:40])), true, nil
	}
	return netip.Addr{}, false, fmt.Errorf("%w: IP version %d", ErrMalformed, pkt[0]>>4)
}

// Close closes both sockets.
func (s *Sender) Close() error {
	return errors.Join(unix.Close(s.fd4), unix.Close(s.fd6))
}
