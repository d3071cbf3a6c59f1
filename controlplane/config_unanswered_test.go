package controlplane

import (
	"testing"

	"github.com/natwall/natwall/dataplane"
)

// conntrack.unanswered_per_source: the per-source limit of unanswered
// flows, 0 for none, checked before it is narrowed to 32 bits.
func TestConfigUnansweredPerSource(t *testing.T) {
	clearNatwallEnv(t)
	valid := []struct {
		name string
		yaml string
		want uint32
	}{
		{"default", minimalConfig, dataplane.DefaultUnansweredPerSource},
		{"no limit", minimalConfig + "conntrack: {unanswered_per_source: 0}\n", 0},
		{"a number", minimalConfig + "conntrack: {unanswered_per_source: 64}\n", 64},
		{"a string", minimalConfig + "conntrack: {unanswered_per_source: '512'}\n", 512},
		{"the largest", minimalConfig + "conntrack: {unanswered_per_source: 16777216}\n", 16777216},
	}
	for _, tt := range valid {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadConfig("natwall.yaml", []byte(tt.yaml), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Conntrack.UnansweredPerSource; got != tt.want {
				t.Errorf("UnansweredPerSource = %d, want %d", got, tt.want)
			}
		})
	}
	invalid := []struct {
		name string
		yaml string
		want string
	}{
		{"over a table", minimalConfig + "conntrack: {unanswered_per_source: 16777217}\n",
			`natwall.yaml:3:36: conntrack.unanswered_per_source: 16777217 is not from 0 to 16777216 flows`},
		{"would wrap to 0", minimalConfig + "conntrack: {unanswered_per_source: 4294967296}\n",
			`natwall.yaml:3:36: conntrack.unanswered_per_source: 4294967296 is not from 0 to 16777216 flows`},
		{"negative", minimalConfig + "conntrack: {unanswered_per_source: -1}\n",
			`natwall.yaml:3:36: conntrack.unanswered_per_source: -1 is not from 0 to 16777216 flows`},
		{"beyond int64", minimalConfig + "conntrack: {unanswered_per_source: '99999999999999999999'}\n",
			`natwall.yaml:3:36: conntrack.unanswered_per_source: 99999999999999999999 is not from 0 to 16777216 flows`},
		{"not a number", minimalConfig + "conntrack: {unanswered_per_source: many}\n",
			`natwall.yaml:3:36: conntrack.unanswered_per_source: "many" is not a whole number of flows from 0 to 16777216`},
		{"a float", minimalConfig + "conntrack: {unanswered_per_source: 1.5}\n",
			`natwall.yaml:3:36: conntrack.unanswered_per_source: must be a whole number of flows from 0 to 16777216, not 1.5`},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig("natwall.yaml", []byte(tt.yaml), nil)
			if err == nil || err.Error() != tt.want {
				t.Errorf("error = %v\nwant    %s", err, tt.want)
			}
		})
	}
	t.Run("environment", func(t *testing.T) {
		t.Setenv("NATWALL_CONNTRACK_UNANSWERED_PER_SOURCE", "100")
		cfg, err := loadConfig("natwall.yaml", []byte(minimalConfig), nil)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Conntrack.UnansweredPerSource != 100 {
			t.Errorf("UnansweredPerSource = %d from the environment, want 100", cfg.Conntrack.UnansweredPerSource)
		}
	})
}
