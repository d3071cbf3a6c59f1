package reinject

import (
	"fmt"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Resets builds the two TCP resets that reject a held flow: one to the
// server, on the translated side, and one to the client, on the side it
// knows. held is a client data packet as the dataplane held it
// (translated); client and server are the flow's endpoints as the client
// sees them, before any translation.
//
// Each reset carries the sequence number its receiver expects next, so
// that a stack that checks resets against its window (RFC 5961) accepts
// it: the server expects the client's data at the held segment's sequence
// number, the client expects the server's at the held segment's
// acknowledgement number.
func Resets(held []byte, client, server netip.AddrPort) (toClient, toServer []byte, err error) {
	if _, _, err := destination(held); err != nil {
		return nil, nil, err
	}
	var ip4 layers.IPv4
	var ip6 layers.IPv6
	var tcp layers.TCP
	parser := gopacket.NewDecodingLayerParser(layers.LayerTypeIPv4, &ip4, &ip6, &tcp)
	if held[0]>>4 == 6 {
		parser = gopacket.NewDecodingLayerParser(layers.LayerTypeIPv6, &ip4, &ip6, &tcp)
	}
	parser.IgnoreUnsupported = true
	var decoded []gopacket.LayerType
	if err := parser.DecodeLayers(held, &decoded); err != nil || len(decoded) < 2 || decoded[len(decoded)-1] != layers.LayerTypeTCP {
		return nil, nil, fmt.Errorf("%w: not a TCP segment (decoded %v, %v)", ErrMalformed, decoded, err)
	}
	if client.Addr().Is4() != (held[0]>>4 == 4) || server.Addr().Is4() != client.Addr().Is4() {
		return nil, nil, fmt.Errorf("endpoints %v and %v are not of the held packet's family", client, server)
	}
	dataLen := uint32(len(tcp.Payload))
	if tcp.SYN {
		dataLen++
	}
	var srcS, dstS netip.Addr
	if held[0]>>4 == 4 {
		srcS, _ = netip.AddrFromSlice(ip4.SrcIP.To4())
		dstS, _ = netip.AddrFromSlice(ip4.DstIP.To4())
	} else {
		srcS, _ = netip.AddrFromSlice(ip6.SrcIP)
		dstS, _ = netip.AddrFromSlice(ip6.DstIP)
	}
	if toServer, err = reset(netip.AddrPortFrom(srcS, uint16(tcp.SrcPort)), netip.AddrPortFrom(dstS, uint16(tcp.DstPort)), tcp.Seq, 0, false); err != nil {
		return nil, nil, err
	}
	// The client's reset acknowledges the held data, so that it also
	// passes a stack that wants the ACK bit on an in-window reset.
	if toClient, err = reset(server, client, tcp.Ack, tcp.Seq+dataLen, true); err != nil {
		return nil, nil, err
	}
	return toClient, toServer, nil
}

func reset(src, dst netip.AddrPort, seq, ack uint32, withAck bool) ([]byte, error) {
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), Seq: seq, RST: true, ACK: withAck}
	if withAck {
		tcp.Ack = ack
	}
	var ip gopacket.SerializableLayer
	if src.Addr().Is4() {
		ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolTCP,
			SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
		if err := tcp.SetNetworkLayerForChecksum(ip4); err != nil {
			return nil, err
		}
		ip = ip4
	} else {
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
			SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
		if err := tcp.SetNetworkLayerForChecksum(ip6); err != nil {
			return nil, err
		}
		ip = ip6
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
