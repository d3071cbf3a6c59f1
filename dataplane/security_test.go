package dataplane

import (
	"bytes"
	"testing"

	"github.com/google/gopacket/layers"
)

// TestVLANPriorityTagsGetThePolicy: a frame whose tags all carry VLAN ID 0
// is untagged traffic with a priority. It must meet the policy like an
// untagged frame (the kernel would strip the tags and forward it
// unfiltered), and when forwarded leave untagged and otherwise exactly as
// the untagged frame would. A frame of a real VLAN is dropped, counted, or
// with VLANPass handed to the kernel.
func TestVLANPriorityTagsGetThePolicy(t *testing.T) {
	fx := newFibFixture(t)
	tests := []struct {
		name   string
		pkt    packet
		want   Reason
		action uint32
	}{
		{"priority tag, outbound udp forwarded",
			packet{src: "198.18.1.10", dst: "198.19.1.10", vlans: 1, prioTags: true}, ReasonFwdRedirect, xdpRedirect},
		{"two priority tags, outbound tcp forwarded",
			packet{src: "198.18.1.10", dst: "198.19.1.11", proto: layers.IPProtocolTCP, vlans: 2, prioTags: true}, ReasonFwdRedirect, xdpRedirect},
		{"priority tag, v6 outbound forwarded",
			packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10", vlans: 1, prioTags: true}, ReasonFwdRedirect, xdpRedirect},
		{"priority tag, inbound tcp SYN meets the policy",
			packet{src: "198.19.1.10", dst: "198.18.1.10", proto: layers.IPProtocolTCP, vlans: 1, prioTags: true}, ReasonDropPolicy, xdpDrop},
		{"priority tag, v6 inbound udp meets the policy",
			packet{v6: true, src: "2001:db8:2::10", dst: "2001:db8:1::10", vlans: 1, prioTags: true}, ReasonDropPolicy, xdpDrop},
		{"vlan 100 dropped", packet{src: "198.19.1.10", dst: "198.18.1.10", vlans: 1}, ReasonDropVLAN, xdpDrop},
		{"qinq dropped", packet{src: "198.18.1.10", dst: "198.19.1.10", vlans: 2}, ReasonDropVLAN, xdpDrop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := tt.pkt.build(t)
			res := fx.run(t, frame, "a0")
			if res.reason != tt.want || res.action != tt.action {
				t.Fatalf("got %s/%d, want %s/%d", res.reason.Name(), res.action, tt.want.Name(), tt.action)
			}
			if res.action != xdpRedirect {
				return
			}
			untagged := tt.pkt
			untagged.vlans = 0
			plain := untagged.build(t)
			out := res.out[:len(plain)]
			if !bytes.Equal(out[12:14], plain[12:14]) {
				t.Fatalf("forwarded frame has EtherType %x, want the untagged %x", out[12:14], plain[12:14])
			}
			checkForwarded(t, fx, plain, out, "a0")
		})
	}

	s := fx.settings
	s.VLANAction = VLANPass
	fx.apply(t, s)
	frame := packet{src: "198.19.1.10", dst: "198.18.1.10", vlans: 1}.build(t)
	if res := fx.run(t, frame, "a0"); res.reason != ReasonPassVLAN || res.action != xdpPass {
		t.Fatalf("vlan_action pass: got %s/%d, want pass_vlan/XDP_PASS", res.reason.Name(), res.action)
	}
	// Priority tags still meet the policy.
	frame = packet{src: "198.19.1.10", dst: "198.18.1.10", proto: layers.IPProtocolTCP, vlans: 1, prioTags: true}.build(t)
	if res := fx.run(t, frame, "a0"); res.reason != ReasonDropPolicy {
		t.Fatalf("vlan_action pass, priority tag: got %s, want drop_policy", res.reason.Name())
	}
}
