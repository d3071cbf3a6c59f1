package dataplane

import "fmt"

// RuleGeneration is how many rule sets the dataplane has flipped to since
// its tables were created; its low bit picks the tables in force.
func (d *Dataplane) RuleGeneration() (uint32, error) {
	var gen uint32
	if err := d.objs.NwAclGen.Lookup(uint32(0), &gen); err != nil {
		return 0, fmt.Errorf("read rule generation: %w", err)
	}
	return gen, nil
}
