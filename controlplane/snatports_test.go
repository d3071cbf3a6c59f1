package controlplane

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/natwall/natwall/dataplane"
)

func TestExcludeLocalPorts(t *testing.T) {
	tests := []struct {
		name       string
		snat       [2]uint16
		local      string
		want       [2]uint16
		wantErr    string
		wantLogged bool
	}{
		// Linux's default ephemeral range splits the default SNAT range:
		// 1024-32767 (31,744 ports) beats 61000-65535 (4,536).
		{name: "kernel default", snat: [2]uint16{1024, 65535}, local: "32768\t60999", want: [2]uint16{1024, 32767}, wantLogged: true},
		{name: "ephemeral moved high", snat: [2]uint16{1024, 65535}, local: "61000 65535", want: [2]uint16{1024, 60999}, wantLogged: true},
		{name: "ephemeral moved low", snat: [2]uint16{1024, 65535}, local: "1024 2047", want: [2]uint16{2048, 65535}, wantLogged: true},
		{name: "no overlap", snat: [2]uint16{1024, 30000}, local: "32768 60999", want: [2]uint16{1024, 30000}},
		{name: "touching at one port", snat: [2]uint16{20000, 32768}, local: "32768 60999", want: [2]uint16{20000, 32767}, wantLogged: true},
		{name: "inside the ephemeral range", snat: [2]uint16{40000, 50000}, local: "32768 60999", wantErr: "lies inside the kernel's ephemeral ports 32768-60999"},
		{name: "unreadable value", snat: [2]uint16{1024, 65535}, local: "32768", wantErr: "want two ports"},
		{name: "reversed value", snat: [2]uint16{1024, 65535}, local: "60999 32768", wantErr: "low port 60999 above high port 32768"},
		{name: "port zero", snat: [2]uint16{1024, 65535}, local: "0 100", wantErr: `"0" is not a port`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := writeSysctlTree(t, map[string]string{localPortRange: tt.local})
			in := &dataplane.SNAT{Addresses: []netip.Addr{netip.MustParseAddr("198.19.0.1")}, PortMin: tt.snat[0], PortMax: tt.snat[1]}
			var logs bytes.Buffer
			got, err := excludeLocalPorts(in, root, slog.New(slog.NewTextHandler(&logs, nil)))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g := [2]uint16{got.PortMin, got.PortMax}; g != tt.want {
				t.Errorf("SNAT ports %d-%d, want %d-%d", g[0], g[1], tt.want[0], tt.want[1])
			}
			if in.PortMin != tt.snat[0] || in.PortMax != tt.snat[1] {
				t.Error("the configured SNAT was changed in place")
			}
			if logged := strings.Contains(logs.String(), "SNAT leaves out the kernel's ephemeral ports"); logged != tt.wantLogged {
				t.Errorf("logged = %v, want %v:\n%s", logged, tt.wantLogged, logs.String())
			}
		})
	}
	if got, err := excludeLocalPorts(nil, t.TempDir(), slog.New(slog.DiscardHandler)); got != nil || err != nil {
		t.Errorf("no SNAT: got %v, %v", got, err)
	}
}
