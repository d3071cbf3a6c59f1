package dataplane

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/natwall/natwall/rules"
)

// fxState is the fixture's dataplane as the control plane's State sees it.
func fxState(fx *fibFixture) *State {
	return &State{
		ct4: fx.objs.NwCt4, ct4Rev: fx.objs.NwCt4Rev, ct6: fx.objs.NwCt6,
		snatFwd: fx.objs.NwSnat4Fwd, snatRev: fx.objs.NwSnat4Rev,
		config: fx.objs.NwConfig, stats: fx.objs.NwStats, counters: fx.objs.NwCounters,
		ruleHits: fx.objs.NwRuleHits, snatCount: fx.objs.NwSnatCount, snatRelease: fx.objs.NwSnatRelease,
	}
}

// inUse is the dataplane's count for an external address or inside host.
func (fx *fibFixture) inUse(t *testing.T, host bool, addr string, proto uint8) int64 {
	t.Helper()
	owner := uint8(natwallNwSnatCountOwnerNW_SNAT_COUNT_EXTERNAL)
	if host {
		owner = uint8(natwallNwSnatCountOwnerNW_SNAT_COUNT_HOST)
	}
	var v int64
	k := natwallNwSnatCountKey{Addr: beUint32(netip.MustParseAddr(addr).As4()), Proto: proto, Owner: owner}
	if err := fx.objs.NwSnatCount.Lookup(&k, &v); err != nil {
		return 0
	}
	return v
}

func udpOut(src string, sport uint16, dst string, dport uint16) l4spec {
	return l4spec{proto: layers.IPProtocolUDP, src: src, dst: dst, sport: sport, dport: dport}
}

func insideHost(i int) string { return netip.AddrFrom4([4]byte{198, 18, 2, byte(10 + i)}).String() }

// A full address is known from its in-use count: the next new endpoint is
// dropped as exhausted without a single probe, and existing mappings keep
// working. Without this, every such packet cost up to 128 failed claims.
func TestSNATExhaustionWithoutProbing(t *testing.T) {
	fx := newFibFixture(t)
	s := natSettings(20000, 20003)
	s.SNAT.HostQuota = 4
	fx.apply(t, s)
	for i := 0; i < 4; i++ {
		fx.expect(t, frame4(t, udpOut(insideHost(i), 5000, "198.19.1.10", 9000)), "a0", ReasonFwdRedirect)
	}
	if n := fx.inUse(t, false, natAddr, 17); n != 4 {
		t.Fatalf("address in-use count %d after 4 mappings, want 4", n)
	}
	probes, retried := fx.stat(t, natwallNwStatNW_STAT_SNAT_PROBES), fx.stat(t, natwallNwStatNW_STAT_SNAT_RETRIED)
	for i := 4; i < 8; i++ {
		fx.expect(t, frame4(t, udpOut(insideHost(i), uint16(5000+i), "198.19.1.10", 9000)), "a0", ReasonDropSNATExhausted)
	}
	if got := fx.stat(t, natwallNwStatNW_STAT_SNAT_PROBES); got != probes {
		t.Fatalf("%d ports probed at exhaustion, want none", got-probes)
	}
	if fx.stat(t, natwallNwStatNW_STAT_SNAT_RETRIED) != retried {
		t.Fatalf("a claim was retried at exhaustion")
	}
	// The counts are per protocol: TCP still has every port.
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: insideHost(9), dst: "198.19.1.10", sport: 20001, dport: 443, tcpFlags: "S"}), "a0", ReasonFwdRedirect)
	// Existing mappings are untouched.
	fx.expect(t, frame4(t, udpOut(insideHost(0), 5000, "198.19.1.11", 9000)), "a0", ReasonFwdRedirect)

	// What one packet costs in the kernel, exhausted, for a new flow, and
	// for a known flow: the kernel's run-time statistics over many runs.
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		t.Fatal(err)
	}
	defer stats.Close()
	const runs = 40
	var exhausted, fresh, known [][]byte
	for i := 0; i < runs; i++ {
		exhausted = append(exhausted, frame4(t, udpOut(insideHost(20+i%2), uint16(6000+i), "198.19.1.10", 9000)))
		fresh = append(fresh, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: insideHost(9), dst: "198.19.1.10", sport: uint16(7000 + i), dport: 443, tcpFlags: "S"}))
		known = append(known, frame4(t, udpOut(insideHost(0), 5000, "198.19.1.10", 9000)))
	}
	costE, costN, costK := fx.runCost(t, exhausted), fx.runCost(t, fresh), fx.runCost(t, known)
	t.Logf("per packet: exhausted %v, new flow %v, known flow %v", costE, costN, costK)
}

// runCost is the program's mean kernel run time over frames, each run once.
func (fx *fibFixture) runCost(t *testing.T, frames [][]byte) time.Duration {
	t.Helper()
	before, err := fx.objs.XdpNatwall.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		fx.run(t, f, "a0")
	}
	after, err := fx.objs.XdpNatwall.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if after.RunCount == before.RunCount {
		t.Fatal("no run-time statistics")
	}
	return (after.Runtime - before.Runtime) / time.Duration(after.RunCount-before.RunCount)
}

type extTuple struct {
	src          string
	sport        uint16
	dst          string
	dport        uint16
	insideSource string
}

// With overloading, an address with no free port maps a new endpoint onto
// a port in use, for a destination that port does not reach yet: every
// 5-tuple on the wire stays unique, and each reply finds its own inside
// endpoint. Switched off, the address is simply full.
func TestSNATOverload(t *testing.T) {
	for _, overload := range []bool{true, false} {
		t.Run(fmt.Sprintf("overload=%v", overload), func(t *testing.T) {
			fx := newFibFixture(t)
			s := natSettings(30000, 30001)
			s.SNAT.Overload = overload
			s.SNAT.HostQuota = 2
			fx.apply(t, s)
			seen := map[extTuple]string{}
			send := func(src string, sport uint16, dst string, dport uint16, want Reason) decoded {
				t.Helper()
				res := fx.expect(t, frame4(t, udpOut(src, sport, dst, dport)), "a0", want)
				if want != ReasonFwdRedirect {
					return decoded{}
				}
				got := decode4(t, res.out)
				k := extTuple{got.src, got.sport, got.dst, got.dport, ""}
				if prev, dup := seen[k]; dup && prev != fmt.Sprintf("%s:%d", src, sport) {
					t.Fatalf("external 5-tuple %+v used by %s and %s:%d", k, prev, src, sport)
				}
				seen[k] = fmt.Sprintf("%s:%d", src, sport)
				return got
			}
			// Two endpoint-independent mappings fill both ports.
			fillers := []string{insideHost(0), insideHost(1)}
			first := send(fillers[0], 5000, "198.19.1.10", 9000, ReasonFwdRedirect)
			send(fillers[1], 5000, "198.19.1.10", 9000, ReasonFwdRedirect)
			if !overload {
				send("198.18.1.20", 5000, "198.19.1.11", 9000, ReasonDropSNATExhausted)
				return
			}
			// Both ports already reach 198.19.1.10:9000: no tuple is left there.
			send("198.18.1.20", 5000, "198.19.1.10", 9000, ReasonDropSNATExhausted)
			before := fx.stat(t, natwallNwStatNW_STAT_SNAT_OVERLOADED)
			a := send("198.18.1.20", 5000, "198.19.1.11", 9000, ReasonFwdRedirect)
			b := send("198.18.1.21", 5000, "198.19.1.11", 9000, ReasonFwdRedirect)
			if a.sport == b.sport {
				t.Fatalf("two endpoints overloaded onto port %d for one destination", a.sport)
			}
			if got := fx.stat(t, natwallNwStatNW_STAT_SNAT_OVERLOADED) - before; got != 2 {
				t.Fatalf("%d overloaded mappings counted, want 2", got)
			}
			// A third endpoint for that destination finds every tuple taken.
			send("198.18.1.20", 5001, "198.19.1.11", 9000, ReasonDropSNATExhausted)
			// The overloaded endpoint keeps its port for that destination.
			if again := send("198.18.1.20", 5000, "198.19.1.11", 9000, ReasonFwdRedirect); again.sport != a.sport {
				t.Fatalf("overloaded endpoint moved from port %d to %d", a.sport, again.sport)
			}
			// Replies reach their own endpoints.
			for _, c := range []struct {
				port uint16
				want string
			}{{a.sport, "198.18.1.20"}, {b.sport, "198.18.1.21"}} {
				got := decode4(t, fx.expect(t, frame4(t, udpOut("198.19.1.11", 9000, natAddr, c.port)), "b0", ReasonFwdRedirect).out)
				if got.dst != c.want || got.dport != 5000 {
					t.Fatalf("reply to port %d went to %s:%d, want %s:5000", c.port, got.dst, got.dport, c.want)
				}
			}
			// The port's endpoint-independent owner reaching the same
			// destination endpoint would repeat an overloaded tuple: it is
			// refused as a collision, never delivered to the wrong host.
			owner := fillers[1]
			if a.sport == first.sport {
				owner = fillers[0]
			}
			fx.expect(t, frame4(t, udpOut(owner, 5000, "198.19.1.11", 9000)), "a0", ReasonDropSNATCollision)
		})
	}
}

// One inside host cannot take every port: past its quota its new
// endpoints are dropped as such, other hosts still get ports, and freeing
// its mappings (the collector) gives the quota back.
func TestSNATHostQuota(t *testing.T) {
	fx := newFibFixture(t)
	s := natSettings(20000, 20007) // default quota: a quarter, 2 ports
	fx.apply(t, s)
	greedy := "198.18.1.20"
	fx.expect(t, frame4(t, udpOut(greedy, 5000, "198.19.1.10", 9000)), "a0", ReasonFwdRedirect)
	fx.expect(t, frame4(t, udpOut(greedy, 5001, "198.19.1.10", 9000)), "a0", ReasonFwdRedirect)
	for p := uint16(5002); p < 5010; p++ {
		fx.expect(t, frame4(t, udpOut(greedy, p, "198.19.1.10", 9000)), "a0", ReasonDropSNATHostQuota)
	}
	// An endpoint that has its port is not a new one: it keeps working.
	fx.expect(t, frame4(t, udpOut(greedy, 5000, "198.19.1.11", 9000)), "a0", ReasonFwdRedirect)
	// Quotas are per protocol and per host.
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: greedy, dst: "198.19.1.10", sport: 6000, dport: 443, tcpFlags: "S"}), "a0", ReasonFwdRedirect)
	fx.expect(t, frame4(t, udpOut("198.18.1.21", 5000, "198.19.1.10", 9000)), "a0", ReasonFwdRedirect)

	st := fxState(fx)
	if n, err := st.HostsAtQuota(); err != nil || n != 1 {
		t.Fatalf("HostsAtQuota = %d, %v; want 1", n, err)
	}
	if n := fx.inUse(t, true, greedy, 17); n != 2 {
		t.Fatalf("host in-use count %d, want 2", n)
	}

	// Expire every flow and age the mappings past their grace period.
	fx.ageAll(t, time.Hour)
	res, err := st.Collect(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if res.MappingsFreed != 4 || res.HostsAtQuota != 0 {
		t.Fatalf("collection freed %d mappings with %d hosts at quota, want 4 and 0", res.MappingsFreed, res.HostsAtQuota)
	}
	for _, c := range []struct {
		host  bool
		addr  string
		proto uint8
	}{{true, greedy, 17}, {true, greedy, 6}, {true, "198.18.1.21", 17}, {false, natAddr, 17}, {false, natAddr, 6}} {
		if n := fx.inUse(t, c.host, c.addr, c.proto); n != 0 {
			t.Errorf("count for %s proto %d is %d after its mappings were freed, want 0", c.addr, c.proto, n)
		}
	}
	fx.expect(t, frame4(t, udpOut(greedy, 5002, "198.19.1.10", 9000)), "a0", ReasonFwdRedirect)
}

// ageAll moves every flow's last packet and every mapping's creation back by d.
func (fx *fibFixture) ageAll(t *testing.T, d time.Duration) {
	t.Helper()
	var k natwallNwTuple4
	var e natwallNwCt4Entry
	var keys []natwallNwTuple4
	var vals []natwallNwCt4Entry
	it := fx.objs.NwCt4.Iterate()
	for it.Next(&k, &e) {
		e.St.LastSeenNs -= uint64(d)
		keys, vals = append(keys, k), append(vals, e)
	}
	must(t, it.Err())
	for i := range keys {
		must(t, fx.objs.NwCt4.Put(keys[i], vals[i]))
	}
	var rk natwallNwSnat4Key
	var rv natwallNwSnat4Endpoint
	var rks []natwallNwSnat4Key
	var rvs []natwallNwSnat4Endpoint
	rit := fx.objs.NwSnat4Rev.Iterate()
	for rit.Next(&rk, &rv) {
		rv.CreatedNs -= uint64(d)
		rks, rvs = append(rks, rk), append(rvs, rv)
	}
	must(t, rit.Err())
	for i := range rks {
		must(t, fx.objs.NwSnat4Rev.Put(rks[i], rvs[i]))
	}
}

// A claim that fails for another reason than "port taken" is not taken
// for exhaustion: here the mapping table is full while the address has
// every port free. The claim is retried once, then the packet is counted
// as a full table, no port is probed, and nothing is left counted.
func TestSNATClaimFailureClassifiedByErrno(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(20000, 20999))
	// Fill the mapping table with another address's mappings.
	other := beUint32([4]byte{198, 19, 1, 2})
	for i := 0; i < fixtureTableSize; i++ {
		k := natwallNwSnat4Key{Addr: other, Port: htons(uint16(40000 + i)), Proto: 17}
		must(t, fx.objs.NwSnat4Rev.Put(k, natwallNwSnat4Endpoint{Addr: other, Port: k.Port}))
	}
	probes, retried := fx.stat(t, natwallNwStatNW_STAT_SNAT_PROBES), fx.stat(t, natwallNwStatNW_STAT_SNAT_RETRIED)
	for _, sport := range []uint16{20500, 7} { // a port to keep, and one to probe for
		fx.expect(t, frame4(t, udpOut("198.18.1.20", sport, "198.19.1.10", 9000)), "a0", ReasonDropCTFull)
	}
	if got := fx.stat(t, natwallNwStatNW_STAT_SNAT_RETRIED) - retried; got != 2 {
		t.Fatalf("%d retries, want one per packet", got)
	}
	if got := fx.stat(t, natwallNwStatNW_STAT_SNAT_PROBES) - probes; got > 1 {
		t.Fatalf("%d ports probed after a failure that is not about the port, want at most the first", got)
	}
	if n := fx.inUse(t, false, natAddr, 17); n != 0 {
		t.Fatalf("address in-use count %d after failed claims, want 0", n)
	}
	if n := fx.inUse(t, true, "198.18.1.20", 17); n != 0 {
		t.Fatalf("host in-use count %d after failed claims, want 0", n)
	}
}

// Inbound filtering per mode (RFC 4787 REQ-8, RFC 5382 REQ-3): after
// 198.18.1.20:5000 sent to 198.19.1.10:9000, which outside endpoints reach
// it. Filtered packets go to the kernel (pass_local), which has no socket
// for them; admitted ones are new inbound flows to the inside endpoint.
func TestSNATFilteringModes(t *testing.T) {
	type probe struct {
		src   string
		sport uint16
	}
	same, otherPort, otherHost, otherBoth := probe{"198.19.1.10", 9000}, probe{"198.19.1.10", 9001}, probe{"198.19.1.11", 9000}, probe{"198.19.1.11", 9001}
	for _, tc := range []struct {
		mode  FilteringMode
		admit map[probe]bool
	}{
		{FilterAddressPortDependent, map[probe]bool{same: true}},
		{FilterAddressDependent, map[probe]bool{same: true, otherPort: true}},
		{FilterEndpointIndependent, map[probe]bool{same: true, otherPort: true, otherHost: true, otherBoth: true}},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			fx := newFibFixture(t)
			s := natSettings(1024, 65535)
			s.SNAT.Filtering = tc.mode
			fx.apply(t, s)
			fx.expect(t, frame4(t, udpOut("198.18.1.20", 5000, "198.19.1.10", 9000)), "a0", ReasonFwdRedirect)
			for _, p := range []probe{otherBoth, otherHost, otherPort, same} {
				want := ReasonPassLocal
				if tc.admit[p] {
					want = ReasonFwdRedirect
				}
				res := fx.expect(t, frame4(t, udpOut(p.src, p.sport, natAddr, 5000)), "b0", want)
				if want != ReasonFwdRedirect {
					continue
				}
				got := decode4(t, res.out)
				if got.dst != "198.18.1.20" || got.dport != 5000 || got.src != p.src || got.sport != p.sport {
					t.Fatalf("%s:%d delivered as %s:%d -> %s:%d", p.src, p.sport, got.src, got.sport, got.dst, got.dport)
				}
				// The inside endpoint's answer leaves from its mapping.
				back := decode4(t, fx.expect(t, frame4(t, udpOut("198.18.1.20", 5000, p.src, p.sport)), "a0", ReasonFwdRedirect).out)
				if back.src != natAddr || back.sport != 5000 {
					t.Fatalf("answer to %s:%d left as %s:%d", p.src, p.sport, back.src, back.sport)
				}
			}
			// A TCP SYN to a port no mapping holds is never admitted.
			fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.19.1.11", dst: natAddr, sport: 9000, dport: 5001, tcpFlags: "S"}), "b0", ReasonPassLocal)
		})
	}
}

// Address-dependent permissions belong to one mapping: once the collector
// frees it and the port goes to another host, the addresses the first host
// talked to cannot reach the second.
func TestSNATAddressDependentFilteringAfterReallocation(t *testing.T) {
	fx := newFibFixture(t)
	s := natSettings(1024, 65535)
	s.SNAT.Filtering = FilterAddressDependent
	fx.apply(t, s)
	fx.expect(t, frame4(t, udpOut("198.18.1.20", 5000, "198.19.1.10", 9000)), "a0", ReasonFwdRedirect)
	fx.expect(t, frame4(t, udpOut("198.19.1.10", 9001, natAddr, 5000)), "b0", ReasonFwdRedirect)

	fx.ageAll(t, time.Hour)
	res, err := fxState(fx).Collect(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if res.MappingsFreed != 1 {
		t.Fatalf("%d mappings freed, want 1", res.MappingsFreed)
	}
	// Another host now holds port 5000, and talks to another server.
	got := decode4(t, fx.expect(t, frame4(t, udpOut("198.18.1.21", 5000, "198.19.1.11", 9000)), "a0", ReasonFwdRedirect).out)
	if got.sport != 5000 {
		t.Fatalf("second host got port %d, want 5000 (the test needs the port reused)", got.sport)
	}
	fx.expect(t, frame4(t, udpOut("198.19.1.10", 9002, natAddr, 5000)), "b0", ReasonPassLocal)
	back := decode4(t, fx.expect(t, frame4(t, udpOut("198.19.1.11", 9001, natAddr, 5000)), "b0", ReasonFwdRedirect).out)
	if back.dst != "198.18.1.21" {
		t.Fatalf("admitted packet delivered to %s, want 198.18.1.21", back.dst)
	}
}

// An inbound flow that a looser filtering mode admitted keeps its mapping
// in use after the inside endpoint's own flows expire: the port is not
// handed to another host while outside peers still reach the first.
func TestSNATFilteredInboundFlowKeepsMapping(t *testing.T) {
	fx := newFibFixture(t)
	s := natSettings(1024, 65535)
	s.SNAT.Filtering = FilterEndpointIndependent
	fx.apply(t, s)
	fx.expect(t, frame4(t, udpOut("198.18.1.20", 5000, "198.19.1.10", 9000)), "a0", ReasonFwdRedirect)
	peer := frame4(t, udpOut("198.19.1.11", 7000, natAddr, 5000))
	fx.expect(t, peer, "b0", ReasonFwdRedirect)
	fx.ageAll(t, time.Hour)
	fx.expect(t, peer, "b0", ReasonFwdRedirect) // the inbound flow is live again
	res, err := fxState(fx).Collect(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if res.MappingsFreed != 0 || len(res.Expired) != 1 {
		t.Fatalf("collection expired %d flows and freed %d mappings, want 1 and 0", len(res.Expired), res.MappingsFreed)
	}
	if n := fx.inUse(t, false, natAddr, 17); n != 1 {
		t.Fatalf("address in-use count %d, want 1", n)
	}
	fx.expect(t, frame4(t, udpOut("198.18.1.21", 5000, "198.19.1.10", 9000)), "a0", ReasonFwdRedirect)
	got := decode4(t, fx.expect(t, peer, "b0", ReasonFwdRedirect).out)
	if got.dst != "198.18.1.20" {
		t.Fatalf("peer reached %s, want the mapping's owner 198.18.1.20", got.dst)
	}
}

// With a rule set, what endpoint-independent filtering admits is a new
// inbound flow the stateful rules judge, with the mapping's inside
// endpoint as its destination: a rule for that endpoint lets it in, and
// the default deny keeps every other mapping closed.
func TestSNATFilteringJudgedByRules(t *testing.T) {
	fx := newFibFixture(t)
	s := natSettings(1024, 65535)
	s.SNAT.Filtering = FilterEndpointIndependent
	fx.apply(t, s)
	out := anyRule(30, rules.Allow)
	out.zone = int(natwallNwZoneNW_ZONE_OUTBOUND)
	open := anyRule(31, rules.Allow)
	open.dst, open.proto, open.dportLo, open.dportHi = netip.MustParsePrefix("198.18.1.20/32"), 17, 5000, 5000
	open.zone = int(natwallNwZoneNW_ZONE_INBOUND)
	must(t, loadRules(&fx.objs, naiveStage(nil, rules.Pass, 1), naiveStage([]testRule{out, open}, rules.Deny, 2)))

	fx.expect(t, frame4(t, udpOut("198.18.1.20", 5000, "198.19.1.10", 9000)), "a0", ReasonFwdRedirect)
	closed := decode4(t, fx.expect(t, frame4(t, udpOut("198.18.1.21", 5000, "198.19.1.10", 9000)), "a0", ReasonFwdRedirect).out)
	got := decode4(t, fx.expect(t, frame4(t, udpOut("198.19.1.11", 7000, natAddr, 5000)), "b0", ReasonFwdRedirect).out)
	if got.dst != "198.18.1.20" || got.dport != 5000 {
		t.Fatalf("admitted packet delivered to %s:%d", got.dst, got.dport)
	}
	fx.expect(t, frame4(t, udpOut("198.19.1.11", 7000, natAddr, closed.sport)), "b0", ReasonDropACLDeny)
	// Replies of the inside endpoint's own flows are replies, not judged.
	fx.expect(t, frame4(t, udpOut("198.19.1.10", 9000, natAddr, closed.sport)), "b0", ReasonFwdRedirect)
}

// An echo's identifier is both "ports" of its tuple: overloading checks
// the reply tuple with the external identifier on both sides.
func TestSNATOverloadICMPEcho(t *testing.T) {
	fx := newFibFixture(t)
	s := natSettings(30000, 30001)
	s.SNAT.Overload, s.SNAT.HostQuota = true, 2
	fx.apply(t, s)
	echo := func(src, dst string, id uint16) []byte {
		return frame4(t, l4spec{proto: layers.IPProtocolICMPv4, src: src, dst: dst, icmpType: 8, icmpID: id})
	}
	fx.expect(t, echo(insideHost(0), "198.19.1.10", 7), "a0", ReasonFwdRedirect)
	fx.expect(t, echo(insideHost(1), "198.19.1.10", 7), "a0", ReasonFwdRedirect)
	fx.expect(t, echo("198.18.1.20", "198.19.1.10", 7), "a0", ReasonDropSNATExhausted)
	out := decode4(t, fx.expect(t, echo("198.18.1.20", "198.19.1.11", 7), "a0", ReasonFwdRedirect).out)
	if out.icmpID != 30000 && out.icmpID != 30001 {
		t.Fatalf("overloaded echo left with identifier %d", out.icmpID)
	}
	back := decode4(t, fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolICMPv4, src: "198.19.1.11", dst: natAddr, icmpType: 0, icmpID: out.icmpID}), "b0", ReasonFwdRedirect).out)
	if back.dst != "198.18.1.20" || back.icmpID != 7 {
		t.Fatalf("echo reply went to %s id %d, want 198.18.1.20 id 7", back.dst, back.icmpID)
	}
}

// The in-use counts only describe the mapping tables they were kept with:
// pins of one without the others are removed, so all start empty together.
func TestSNATTablesUnpinnedTogether(t *testing.T) {
	for _, tc := range []struct {
		name              string
		pinned, dropped   []string
		wantRemoved       []string
		wantLeftUntouched []string
	}{
		{"all pinned", snatTables, nil, nil, snatTables},
		{"counts missing (an older natwall)", []string{"nw_snat4_fwd", "nw_snat4_rev"}, nil, []string{"nw_snat4_fwd", "nw_snat4_rev"}, nil},
		{"mappings dropped as incompatible", []string{"nw_snat4_fwd", "nw_snat_count"}, []string{"nw_snat4_rev"}, []string{"nw_snat4_fwd", "nw_snat_count"}, nil},
		{"nothing pinned", nil, nil, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, n := range append(tc.pinned, "nw_ct4") {
				must(t, os.WriteFile(filepath.Join(dir, n), nil, 0o600))
			}
			removed, err := unpinSNATTogether(dir, tc.dropped)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(removed) != fmt.Sprint(tc.wantRemoved) {
				t.Fatalf("removed %v, want %v", removed, tc.wantRemoved)
			}
			for _, n := range append(tc.wantLeftUntouched, "nw_ct4") {
				if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
					t.Errorf("%s: %v", n, err)
				}
			}
		})
	}
}
