package dataplane

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"
)

// TestVerifiedInstructions loads the program and logs how many instructions
// the verifier processed, the number the 1M limit applies to.
func TestVerifiedInstructions(t *testing.T) {
	requireRoot(t)
	spec, err := loadNatwall()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	var objs natwallObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			for _, l := range ve.Log[max(0, len(ve.Log)-400):] {
				t.Log(l)
			}
		}
		t.Fatalf("load: %v", err)
	}
	defer objs.Close()
	info, err := objs.XdpNatwall.Info()
	if err != nil {
		t.Fatal(err)
	}
	n, ok := info.VerifiedInstructions()
	if !ok {
		t.Fatal("kernel does not report verified instructions")
	}
	t.Logf("xdp_natwall: %d verified instructions", n)
}
