package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnitVerifies runs systemd-analyze verify on the shipped unit,
// with ExecStart pointing at this run's binary (verify requires it to
// exist), and checks that systemctl reload maps to natwall's SIGHUP reload.
func TestSystemdUnitVerifies(t *testing.T) {
	unit, err := os.ReadFile("../deploy/natwall.service")
	if err != nil {
		t.Fatal(err)
	}
	text := string(unit)
	if !strings.Contains(text, "\nExecReload=/bin/kill -HUP $MAINPID\n") {
		t.Error("natwall.service has no ExecReload sending SIGHUP")
	}
	for _, hardening := range []string{"NoNewPrivileges=yes", "ProtectSystem=full", "ProtectHome=yes", "CapabilityBoundingSet="} {
		if !strings.Contains(text, "\n"+hardening) {
			t.Errorf("natwall.service lost its hardening: no %s", hardening)
		}
	}
	local := filepath.Join(t.TempDir(), "natwall.service")
	text = strings.ReplaceAll(text, "/usr/local/bin/natwall", natwallBin)
	if err := os.WriteFile(local, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", local).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
