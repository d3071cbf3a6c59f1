package dataplane

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/natwall/natwall/rules"
	"github.com/natwall/natwall/rules/rulestest"
)

// rawFrame builds the frame a rules.Packet describes. Only what the
// classifier reads has to be right: L4 checksums are left zero.
func rawFrame(p rules.Packet) []byte {
	var l4 []byte
	switch {
	case p.Protocol == 6:
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4, p.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], p.DstPort)
		l4[12], l4[13] = 5<<4, 0x10 // data offset 5, ACK
	case p.Protocol == 17:
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4, p.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], p.DstPort)
		binary.BigEndian.PutUint16(l4[4:], 8)
	case p.IsICMP:
		l4 = []byte{p.ICMPType, p.ICMPCode, 0, 0, 0, 1, 0, 1}
	default:
		l4 = make([]byte, 8)
	}
	frame := make([]byte, 14, 14+40+len(l4))
	copy(frame, []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2})
	if p.Src.Is4() {
		binary.BigEndian.PutUint16(frame[12:], 0x0800)
		ip := make([]byte, 20)
		ip[0], ip[8], ip[9] = 0x45, 64, p.Protocol
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		s, d := p.Src.As4(), p.Dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
		frame = append(frame, ip...)
	} else {
		binary.BigEndian.PutUint16(frame[12:], 0x86dd)
		ip := make([]byte, 40)
		ip[0], ip[6], ip[7] = 0x60, p.Protocol, 64
		binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
		s, d := p.Src.As16(), p.Dst.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		frame = append(frame, ip...)
	}
	return append(frame, l4...)
}

// setTCPChecksum fills in the TCP checksum of a frame rawFrame built, after
// its TCP header changed: segments that open a flow must carry a valid one.
func setTCPChecksum(frame []byte) {
	var src, dst, seg []byte
	v4 := binary.BigEndian.Uint16(frame[12:]) == 0x0800
	if v4 {
		src, dst, seg = frame[26:30], frame[30:34], frame[34:]
	} else {
		src, dst, seg = frame[22:38], frame[38:54], frame[54:]
	}
	seg[16], seg[17] = 0, 0
	sum := pseudoChecksum6(src, dst, 6, seg)
	if v4 {
		sum = pseudoChecksum(src, dst, 6, seg)
	}
	binary.BigEndian.PutUint16(seg[16:], sum)
}

// The kernel's classifier against the Go reference: random stateless rule
// sets compiled by package rules and loaded into the dataplane, random
// packets through BPF_PROG_RUN, and every verdict compared with the rules
// taken one by one. The stateless stage sees every packet, so no flow state
// stands between a packet and its verdict.
func TestClassifierMatchesReference(t *testing.T) {
	fx := newFibFixture(t)
	inside := fixtureSettings().Inside
	isInside := func(a netip.Addr) bool {
		for _, p := range inside {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	r := rand.New(rand.NewPCG(3, 4))
	next := uint32(10)
	ids := func(string) uint32 { next++; return next }
	cases := 0
	for set := 0; set < 25; set++ {
		rs := &rules.RuleSet{Stateless: rulestest.RandomRules(r, 1+r.IntN(200), []rules.Action{rules.Drop, rules.Pass})}
		tbl, err := rules.Compile(rs, ids)
		if err != nil {
			t.Fatal(err)
		}
		must(t, loadRules(&fx.objs, tbl.Stateless, nil))
		for i := 0; i < 80; i++ {
			p := rulestest.RandomPacket(r)
			switch src, dst := isInside(p.Src), isInside(p.Dst); {
			case src && dst:
				p.Direction = rules.EastWest
			case src:
				p.Direction = rules.Outbound
			case dst:
				p.Direction = rules.Inbound
			default:
				p.Direction = rules.Transit
			}
			want, _ := rules.FirstMatch(rs.Stateless, p)
			wantDrop := want >= 0 && rs.Stateless[want].Action == rules.Drop
			res := fx.run(t, rawFrame(p), "a0")
			if gotDrop := res.reason == ReasonDropACLStateless; gotDrop != wantDrop {
				t.Fatalf("set %d: %+v: dataplane says %s, reference says rule %d (drop %v)", set, p, res.reason.Name(), want, wantDrop)
			}
			cases++
		}
	}
	t.Logf("%d packets agreed", cases)
}

// A 30,000-rule stateful set, compiled from rule files by package rules,
// loads into the dataplane and enforces the rule a packet matches.
func TestClassifier30000Rules(t *testing.T) {
	fx := newFibFixture(t)
	var b strings.Builder
	b.WriteString("stateful:\n  default_action: deny\n  rules:\n")
	for i := 0; i < 30000; i++ {
		action := "allow"
		if i%2 == 1 {
			action = "reject"
		}
		fmt.Fprintf(&b, "    - {id: r%d, priority: %d, action: %s, dst: [198.19.%d.%d/32], protocol: udp, dst_ports: [%d]}\n",
			i, i, action, 100+i/250, 1+i%250, 9000+i%7)
	}
	rs, err := rules.Parse([]rules.Source{{Name: "big.yaml", Data: []byte(b.String())}}, rules.Options{Inside: fixtureSettings().Inside})
	must(t, err)
	next := uint32(10)
	tbl, err := rules.Compile(rs, func(string) uint32 { next++; return next })
	must(t, err)
	must(t, loadRules(&fx.objs, nil, tbl.Stateful))
	// The rules' destinations are routed (their neighbours unresolved).
	if out, err := exec.Command("ip", "-n", fmt.Sprintf("nwtest-xdp-%d", os.Getpid()), "route", "add", "198.19.0.0/16", "dev", "b0").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, tc := range []struct {
		rule int
		port uint16
		want Reason
	}{
		{0, 9000, ReasonPassNoNeigh}, // allowed, then routed to an unresolved neighbour
		{29998, 9000 + 29998%7, ReasonPassNoNeigh},
		{29999, 9000 + 29999%7, ReasonReplyICMPUnreach}, // reject
		{15000, 9999, ReasonDropACLDeny},                // right address, wrong port: the default
	} {
		dst := fmt.Sprintf("198.19.%d.%d", 100+tc.rule/250, 1+tc.rule%250)
		fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: dst, sport: 40000 + uint16(tc.rule%1000), dport: tc.port}), "a0", tc.want)
	}
}
