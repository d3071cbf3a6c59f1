package dataplane

import "testing"

// TestVerifiedInstructions logs the verifier's instruction count of the
// XDP program, which BPF changes report before and after.
func TestVerifiedInstructions(t *testing.T) {
	fx := newFibFixture(t)
	info, err := fx.objs.XdpNatwall.Info()
	must(t, err)
	n, ok := info.VerifiedInstructions()
	if !ok {
		t.Fatal("kernel does not report verified instructions")
	}
	t.Logf("xdp_natwall: %d verified instructions", n)
}
