package dataplane

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// layoutMapName is the map, pinned beside natwall's own, that records the
// layout of each map pinned there: what a later natwall compares its own
// with before it adopts them. bpffs holds no plain files, hence a map:
// keys are map names, values the SHA-256 of their layout.
const layoutMapName = "nw_layout"

const layoutNameSize = 32

func layoutMapSpec() *ebpf.MapSpec {
	return &ebpf.MapSpec{Name: layoutMapName, Type: ebpf.Hash, KeySize: layoutNameSize, ValueSize: sha256.Size, MaxEntries: 128}
}

// ErrIncompatibleState means the pin directory holds maps whose layout
// this natwall does not share: adopting them would misread every entry.
var ErrIncompatibleState = errors.New("pinned state has an incompatible layout")

// mapLayout describes one pinned map as its readers see it: its type, key
// and value sizes, flags and the BTF structure of key and value (member
// names, offsets, sizes). A layout change is any change a reader of the old
// entries would misread. Capacity is not part of it: a new table size is a
// deliberate change of its own (see Open).
func mapLayout(ms *ebpf.MapSpec) string {
	return fmt.Sprintf("%s key=%d:%s value=%d:%s flags=%#x",
		ms.Type, ms.KeySize, describeBTF(ms.Key), ms.ValueSize, describeBTF(ms.Value), ms.Flags)
}

// describeBTF writes t's structure down to its integers.
func describeBTF(t btf.Type) string {
	if t == nil {
		return "?"
	}
	switch t := btf.UnderlyingType(t).(type) {
	case *btf.Struct:
		return "struct{" + describeMembers(t.Members) + "}"
	case *btf.Union:
		return "union{" + describeMembers(t.Members) + "}"
	case *btf.Array:
		return fmt.Sprintf("[%d]%s", t.Nelems, describeBTF(t.Type))
	case *btf.Int:
		return fmt.Sprintf("int%d", t.Size*8)
	case *btf.Enum:
		return fmt.Sprintf("enum%d", t.Size*8)
	case *btf.Pointer:
		return "ptr"
	default:
		return fmt.Sprintf("%T", t)
	}
}

func describeMembers(members []btf.Member) string {
	parts := make([]string, len(members))
	for i, m := range members {
		parts[i] = fmt.Sprintf("%s@%d:%s", m.Name, m.Offset.Bytes(), describeBTF(m.Type))
	}
	return strings.Join(parts, ",")
}

// specLayout is the layout of every map spec pins, by name.
func specLayout(spec *ebpf.CollectionSpec) map[string]string {
	layout := map[string]string{}
	for name, ms := range spec.Maps {
		if ms.Pinning == ebpf.PinByName {
			layout[name] = mapLayout(ms)
		}
	}
	return layout
}

// checkPinnedLayout compares the maps pinned in dir with spec's before
// anything is loaded, and returns the names of pinned maps whose layout
// differs. A pin directory without a recorded layout (from a natwall before
// layouts were recorded) is compared by type, key and value size alone.
func checkPinnedLayout(spec *ebpf.CollectionSpec, dir string) ([]string, error) {
	recorded, err := readLayout(dir)
	if err != nil {
		return nil, err
	}
	var differ []string
	for name, layout := range specLayout(spec) {
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if recorded != nil {
			if recorded[name] != sha256.Sum256([]byte(layout)) {
				differ = append(differ, name)
			}
			continue
		}
		m, err := ebpf.LoadPinnedMap(path, nil)
		if err != nil {
			return nil, fmt.Errorf("pinned map %s: %w", name, err)
		}
		ms := spec.Maps[name]
		fits := m.Type() == ms.Type && m.KeySize() == ms.KeySize && m.ValueSize() == ms.ValueSize && m.Flags() == ms.Flags
		m.Close()
		if !fits {
			differ = append(differ, name)
		}
	}
	slices.Sort(differ)
	return differ, nil
}

// readLayout reads the recorded layout hashes; nil when none is pinned.
func readLayout(dir string) (map[string][sha256.Size]byte, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, layoutMapName), nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pinned layout: %w", err)
	}
	defer m.Close()
	out := map[string][sha256.Size]byte{}
	var key [layoutNameSize]byte
	var sum [sha256.Size]byte
	it := m.Iterate()
	for it.Next(&key, &sum) {
		out[strings.TrimRight(string(key[:]), "\x00")] = sum
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read pinned layout: %w", err)
	}
	return out, nil
}

// writeLayout records spec's layout in dir, replacing what was recorded.
func writeLayout(spec *ebpf.CollectionSpec, dir string) error {
	path := filepath.Join(dir, layoutMapName)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replace pinned layout: %w", err)
	}
	m, err := ebpf.NewMap(layoutMapSpec())
	if err != nil {
		return fmt.Errorf("record pinned layout: %w", err)
	}
	defer m.Close()
	for name, layout := range specLayout(spec) {
		var key [layoutNameSize]byte
		copy(key[:], name)
		if err := m.Put(key, sha256.Sum256([]byte(layout))); err != nil {
			return fmt.Errorf("record layout of %s: %w", name, err)
		}
	}
	if err := m.Pin(path); err != nil {
		return fmt.Errorf("pin layout: %w", err)
	}
	return nil
}

// isConnectionState reports whether the pinned map holds what traffic
// depends on and no start can rebuild: flows, NAT mappings and their
// counts, fragments in flight, per-source flow counts.
func isConnectionState(name string) bool {
	for _, prefix := range []string{"nw_ct", "nw_snat4_", "nw_snat_count", "nw_frag", "nw_src_flows"} {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}

// unpinMaps removes the pins of the named maps in dir.
func unpinMaps(dir string, names []string) error {
	for _, name := range names {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("unpin %s: %w", name, err)
		}
	}
	return nil
}
