package dataplane

import (
	"testing"
)

// The verifier's 1M-instruction budget is shared by every path through
// the program: the allocator must stay a small, separately verified part.
func TestSNATVerifiedInstructions(t *testing.T) {
	fx := newFibFixture(t)
	info, err := fx.objs.XdpNatwall.Info()
	if err != nil {
		t.Fatal(err)
	}
	n, ok := info.VerifiedInstructions()
	if !ok {
		t.Fatal("kernel does not report verified instructions")
	}
	t.Logf("xdp_natwall: %d verified instructions", n)
	if n > 900_000 {
		t.Fatalf("%d verified instructions: too close to the verifier's 1M limit", n)
	}
}
