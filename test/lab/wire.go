package lab

import (
	"context"
	"fmt"
)

// LikeRealNICs tunes the lab's clients and servers so that their traffic
// reaches the appliance the way traffic from real NICs does:
//
//   - They compute TCP and UDP checksums in software. A veth otherwise sends
//     locally generated segments with only the pseudo-header summed
//     (CHECKSUM_PARTIAL), for a NIC that does not exist to finish; a frame
//     that XDP redirects loses that marker and arrives corrupt.
//   - No GRO between a host and its bridge port. The port would coalesce a
//     host's segments into one large buffer before they reach the
//     appliance, which no wire does (XDP on a real NIC sees frames as they
//     arrived); with it on, a bulk transfer through an XDP appliance shows
//     TCP checksum errors at both ends.
//
// The appliance's own NICs and the fabric ends facing them are left alone.
func (l *Lab) LikeRealNICs(ctx context.Context) error {
	for _, h := range append(append([]*Host(nil), l.Clients...), l.Servers...) {
		for _, c := range []struct {
			ns   *NetNS
			args []string
		}{
			{h.NS, []string{"-K", h.Interface, "tx", "off", "gro", "off"}},
			{h.Port.NS, []string{"-K", h.Port.Name, "gro", "off"}},
		} {
			if out, err := c.ns.Run(ctx, "ethtool", c.args...); err != nil {
				return fmt.Errorf("tune %s: %w: %s", c.ns, err, out)
			}
		}
	}
	return nil
}
