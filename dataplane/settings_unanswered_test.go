package dataplane

import (
	"strings"
	"testing"
	"time"
)

// The per-source limit reaches the dataplane with its window: the longest
// timeout an unanswered TCP, UDP or ICMP flow has.
func TestUnansweredPerSourceRuntimeConfig(t *testing.T) {
	s := DefaultSettings()
	if s.UnansweredPerSource != DefaultUnansweredPerSource {
		t.Fatalf("default limit %d, want %d", s.UnansweredPerSource, DefaultUnansweredPerSource)
	}
	for _, tc := range []struct {
		name       string
		set        func(*Timeouts)
		wantWindow uint32
	}{
		{"defaults: udp", func(*Timeouts) {}, 300},
		{"tcp handshakes longest", func(t *Timeouts) { t.TCPSyn = 20 * time.Minute }, 1200},
		{"icmp longest", func(t *Timeouts) { t.ICMP = time.Hour }, 3600},
		{"other protocols do not count", func(t *Timeouts) { t.Other = 5 * time.Hour }, 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := DefaultSettings()
			tc.set(&s.Timeouts)
			cfg, err := s.runtimeConfig()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.UnansweredPerSource != DefaultUnansweredPerSource || cfg.SrcWindow != tc.wantWindow {
				t.Errorf("limit %d window %ds, want %d and %ds", cfg.UnansweredPerSource, cfg.SrcWindow, DefaultUnansweredPerSource, tc.wantWindow)
			}
		})
	}
	s.UnansweredPerSource = MaxUnansweredPerSource + 1
	if _, err := s.runtimeConfig(); err == nil || !strings.Contains(err.Error(), "unanswered flows per source") {
		t.Errorf("a limit over a table's size: error %v", err)
	}
}
