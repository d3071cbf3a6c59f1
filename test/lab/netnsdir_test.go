package lab

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// TestNetnsDirIsASharedMount: once the lab has made a namespace,
// /run/netns is a mount point of its own with shared propagation, so an
// `ip netns add` by anyone else cannot pin the lab's namespaces.
func TestNetnsDirIsASharedMount(t *testing.T) {
	RequirePrivileges(t)
	ns, err := NewNetNS("netnsdir")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()

	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// mountinfo: id parent major:minor root mountpoint options optional... - fstype ...
	sc := bufio.NewScanner(f)
	var optional []string
	found := false
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 || fields[4] != netnsDir {
			continue
		}
		found = true
		optional = optional[:0]
		for _, f := range fields[6:] {
			if f == "-" {
				break
			}
			optional = append(optional, f)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatalf("%s is not a mount point", netnsDir)
	}
	shared := false
	for _, o := range optional {
		shared = shared || strings.HasPrefix(o, "shared:")
	}
	if !shared {
		t.Errorf("%s is a mount point without shared propagation (%v)", netnsDir, optional)
	}
}
