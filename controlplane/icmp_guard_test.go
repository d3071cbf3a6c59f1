package controlplane

import (
	"net/netip"
	"reflect"
	"testing"
)

// The guard's rules for a mixed list of inside networks: IPv6 is left
// out (never translated), prefixes are masked, and each IPv4 network
// gets a RETURN for errors to it and a DROP for each quoted address.
func TestICMPGuardRules(t *testing.T) {
	got := icmpGuardRules([]netip.Prefix{
		netip.MustParsePrefix("198.18.7.9/16"),
		netip.MustParsePrefix("2001:db8:1::/48"),
		netip.MustParsePrefix("10.1.2.3/32"),
	})
	drop := func(expr, field string) []string {
		return []string{"!", "-f", "-m", "u32", "--u32", expr, "-m", "comment", "--comment",
			"natwall: own ICMP error quoting an inside " + field, "-j", "DROP"}
	}
	const isError = "0>>22&0x3C@0>>24=3:5,11:12&&"
	want := [][]string{
		{"-d", "198.18.0.0/16", "-j", "RETURN"},
		{"-d", "10.1.2.3/32", "-j", "RETURN"},
		drop(isError+"0>>22&0x3C@20&0xffff0000=0xc6120000", "source"),
		drop(isError+"0>>22&0x3C@24&0xffff0000=0xc6120000", "destination"),
		drop(isError+"0>>22&0x3C@20&0xffffffff=0x0a010203", "source"),
		drop(isError+"0>>22&0x3C@24&0xffffffff=0x0a010203", "destination"),
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("rules:\n%q\nwant:\n%q", got, want)
	}
	if r := icmpGuardRules([]netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}); len(r) != 0 {
		t.Fatalf("IPv6-only inside networks got rules %q", r)
	}
}
