package dataplane

import (
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// TestEveryPinnedMapClassified: each pinned map is either connection state,
// refused when its layout changes, or rebuilt by a start, replaced then. A
// new pinned map fails this test until someone decides which.
func TestEveryPinnedMapClassified(t *testing.T) {
	state := []string{"nw_ct4", "nw_ct4_order", "nw_ct4_rev", "nw_ct6", "nw_ct6_order", "nw_ct_order",
		"nw_frag4", "nw_frag6", "nw_snat4_fwd", "nw_snat4_perm", "nw_snat4_rev", "nw_snat_count", "nw_src_flows"}
	rebuilt := []string{"nw_acl_bits", "nw_acl_gen", "nw_acl_lpm4", "nw_acl_lpm6", "nw_acl_ports", "nw_acl_rules",
		"nw_acl_stages", "nw_config", "nw_counters", "nw_dnat4", "nw_events", "nw_inside4", "nw_inside6", "nw_outside_ifs",
		"nw_rule_hits", "nw_snat_excl4", "nw_stats", "nw_tx_ports"}
	spec, err := loadNatwall()
	if err != nil {
		t.Fatal(err)
	}
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		switch {
		case slices.Contains(state, name):
			if !isConnectionState(name) {
				t.Errorf("%s holds connection state, but a layout change would replace it", name)
			}
		case slices.Contains(rebuilt, name):
			if isConnectionState(name) {
				t.Errorf("%s is rebuilt at start, but a layout change would refuse the start", name)
			}
		default:
			t.Errorf("pinned map %s is neither connection state nor rebuilt at start: add it to one list", name)
		}
	}
}

// TestMapLayoutSeesStructureChanges: reordering two fields of a value
// keeps its size but changes its layout.
func TestMapLayoutSeesStructureChanges(t *testing.T) {
	u32 := &btf.Int{Name: "u32", Size: 4}
	value := func(first, second string) *btf.Struct {
		return &btf.Struct{Name: "v", Size: 8, Members: []btf.Member{
			{Name: first, Type: u32, Offset: 0}, {Name: second, Type: u32, Offset: 32},
		}}
	}
	spec := func(v *btf.Struct) *ebpf.MapSpec {
		return &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, Key: u32, Value: v, MaxEntries: 16}
	}
	a, b := mapLayout(spec(value("packets", "bytes"))), mapLayout(spec(value("bytes", "packets")))
	if a == b {
		t.Errorf("reordered members give the same layout %q", a)
	}
	bigger := spec(value("packets", "bytes"))
	bigger.MaxEntries = 1 << 20
	if mapLayout(bigger) != a {
		t.Error("capacity changed the layout: a new table size is not a layout change")
	}
}
