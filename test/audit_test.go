package test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/natwall/natwall/test/lab"
)

// auditAlert is an EVE alert record with the fields audit mode adds.
type auditAlert struct {
	EventType string `json:"event_type"`
	FlowID    uint64 `json:"flow_id"`
	SrcIP     string `json:"src_ip"`
	SrcPort   int    `json:"src_port"`
	DestIP    string `json:"dest_ip"`
	DestPort  int    `json:"dest_port"`
	Proto     string `json:"proto"`
	Direction string `json:"direction"`
	Alert     struct {
		Action      string              `json:"action"`
		SignatureID uint32              `json:"signature_id"`
		Signature   string              `json:"signature"`
		Category    string              `json:"category"`
		Severity    int                 `json:"severity"`
		Metadata    map[string][]string `json:"metadata"`
	} `json:"alert"`
}

// eveAlerts reads the alert records of the EVE log at path.
func eveAlerts(t *testing.T, path string) []auditAlert {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []auditAlert
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var rec auditAlert
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("EVE line is not JSON: %v\n%s", err, line)
		}
		if rec.EventType == "alert" {
			out = append(out, rec)
		}
	}
}

func alertsTo(t *testing.T, path string, srcPort, dstPort int) []auditAlert {
	var out []auditAlert
	for _, a := range eveAlerts(t, path) {
		if (srcPort == 0 || a.SrcPort == srcPort) && a.DestPort == dstPort {
			out = append(out, a)
		}
	}
	return out
}

// TestAuditModeLive runs natwall with a deny rule shadowed in audit mode
// inside an enforcing policy: the traffic it would deny flows, and its
// EVE alerts and hit counters appear; a logged reject rule blocks and
// logs; a deny rule without log blocks silently.
func TestAuditModeLive(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	dir := t.TempDir()
	ruleFile, stateDir, evePath := filepath.Join(dir, "rules.yaml"), filepath.Join(dir, "state"), filepath.Join(dir, "log", "eve.json")
	if err := os.WriteFile(ruleFile, []byte(`stateful:
  default_action: deny
  rules:
    - {id: shadow-web, priority: 5, action: deny, mode: audit, protocol: tcp, dst_ports: [7000]}
    - {id: web, priority: 10, action: allow, protocol: tcp, dst_ports: [7000]}
    - {id: no-admin, priority: 20, action: reject, log: true, protocol: tcp, dst_ports: [7001]}
    - {id: quiet, priority: 25, action: deny, protocol: tcp, dst_ports: [7002]}
    - {id: ping, priority: 30, action: allow, protocol: icmp}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startNatwall(t, l, natConfig(fmt.Sprintf("state_dir: %s\nrules:\n  paths: [%s]\neve:\n  output: file\n  path: %s\n",
		stateDir, ruleFile, evePath)))
	server, client := l.Servers[0], l.Clients[0]
	warmUp(t, client.NS, server.IPv4)
	numbers := ruleNumbers(t, stateDir)
	for _, port := range []uint16{7000, 7001, 7002} {
		ln, err := server.NS.Listen("tcp", netip.AddrPortFrom(server.IPv4, port).String())
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go echoServer(ln)
	}
	ctx := testContext(t)
	at := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(server.IPv4, port) }

	// The audit rule would deny 7000; the next rule allows it, and data
	// flows both ways.
	conn, err := client.NS.Dial(ctx, "tcp", at(7000).String())
	if err != nil {
		t.Fatalf("the audited port: %v", err)
	}
	clientPort := conn.LocalAddr().(*net.TCPAddr).Port
	msg := []byte("through the audit rule")
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, make([]byte, len(msg))); err != nil {
		t.Fatalf("no echo through the audited port: %v", err)
	}
	conn.Close()

	// A logged reject: refused at once, and reported.
	took, err := dialWithin(ctx, client.NS, at(7001), 5*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) || took > time.Second {
		t.Fatalf("logged reject: %v after %v, want connection refused at once", err, took)
	}
	// A deny without log: a silent drop, not reported.
	if _, err := dialWithin(ctx, client.NS, at(7002), time.Second); err == nil || errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("denied port: %v, want a timeout", err)
	}

	waitFor(t, "the audit and reject alerts in the EVE log", func() bool {
		return len(alertsTo(t, evePath, clientPort, 7000)) > 0 && len(alertsTo(t, evePath, 0, 7001)) > 0
	})
	audit := alertsTo(t, evePath, clientPort, 7000)
	if len(audit) != 1 {
		t.Fatalf("%d alerts for the audited connection, want one (its first packet): %+v", len(audit), audit)
	}
	al := audit[0]
	if al.SrcIP != client.IPv4.String() || al.DestIP != server.IPv4.String() || al.Proto != "TCP" || al.Direction != "outbound" ||
		al.Alert.Action != "allowed" || al.Alert.Signature != "shadow-web" || al.Alert.SignatureID != numbers["shadow-web"] ||
		al.Alert.Category != "natwall deny rule" || al.Alert.Severity != 3 ||
		len(al.Alert.Metadata["natwall_mode"]) != 1 || al.Alert.Metadata["natwall_mode"][0] != "audit" {
		t.Errorf("audit alert: %+v", al)
	}
	rejects := alertsTo(t, evePath, 0, 7001)
	if len(rejects) != 1 {
		t.Fatalf("%d alerts for the rejected connection, want 1: %+v", len(rejects), rejects)
	}
	rj := rejects[0]
	if rj.SrcIP != client.IPv4.String() || rj.DestIP != server.IPv4.String() || rj.Alert.Action != "blocked" ||
		rj.Alert.Signature != "no-admin" || rj.Alert.SignatureID != numbers["no-admin"] || rj.Alert.Category != "natwall reject rule" ||
		rj.Alert.Metadata != nil {
		t.Errorf("logged reject alert: %+v", rj)
	}
	if quiet := alertsTo(t, evePath, 0, 7002); len(quiet) != 0 {
		t.Errorf("the deny rule without log was reported: %+v", quiet)
	}

	// Counters: the audit rule and the rule after it each counted the
	// flow; audit matches and logged decisions have their own.
	for _, tc := range []struct {
		name, label string
		min         float64
	}{
		{"natwall_rule_hits_total", "shadow-web", 1},
		{"natwall_rule_hits_total", "web", 1},
		{"natwall_rule_hits_total", "no-admin", 1},
		{"natwall_audit_matches_total", "", 1},
		{"natwall_decisions_logged_total", "", 1},
	} {
		var got float64
		if tc.label != "" {
			got = a.metricValue(t, tc.name, tc.label)
		} else {
			got = a.metricValue(t, tc.name)
		}
		if got < tc.min {
			t.Errorf("%s{%s} = %v, want at least %v", tc.name, tc.label, got, tc.min)
		}
	}
	if got := a.metricValue(t, "natwall_audit_matches_total"); got != 1 {
		t.Errorf("natwall_audit_matches_total = %v, want 1 (one audited flow)", got)
	}

	// natwall rules says which rules only audit and which log.
	out, err := l.Appliance.Run(ctx, natwallBin, "rules", "-o", "json", "--socket", a.socket)
	if err != nil {
		t.Fatal(err)
	}
	var live []struct {
		ID     string `json:"id"`
		Action string `json:"action"`
		Report string `json:"report"`
		Hits   uint64 `json:"hits"`
	}
	if err := json.Unmarshal(out, &live); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	got := map[string]string{}
	for _, r := range live {
		got[r.ID] = fmt.Sprintf("%s/%s/%d", r.Action, r.Report, r.Hits)
	}
	for id, want := range map[string]string{"shadow-web": "deny/audit/1", "web": "allow//1", "no-admin": "reject/log/1"} {
		if got[id] != want {
			t.Errorf("natwall rules: %s is %q, want %q (action/report/hits)", id, got[id], want)
		}
	}
}

// TestAuditThenEnforce: a shadowed rule switched from mode: audit to
// enforce by a reload takes effect for the flows it let through too: with
// rules.revalidate: close, the open connection it audited is reset, and a
// new one is denied.
func TestAuditThenEnforce(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	dir := t.TempDir()
	ruleFile := filepath.Join(dir, "rules.yaml")
	write := func(mode string) {
		body := fmt.Sprintf(`stateful:
  default_action: deny
  rules:
    - {id: shadow-web, priority: 5, action: deny, mode: %s, protocol: tcp, dst_ports: [7000]}
    - {id: web, priority: 10, action: allow, protocol: tcp, dst_ports: [7000]}
    - {id: ping, priority: 30, action: allow, protocol: icmp}
`, mode)
		if err := os.WriteFile(ruleFile, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("audit")
	a := startNatwall(t, l, fmt.Sprintf("state_dir: %s\nrules:\n  paths: [%s]\n  revalidate: close\nconntrack:\n  invalid_tcp_reset: true\n",
		filepath.Join(dir, "state"), ruleFile))
	server, client := l.Servers[0], l.Clients[0]
	warmUp(t, client.NS, server.IPv4)
	ctx := testContext(t)
	dst := netip.AddrPortFrom(server.IPv4, 7000)
	ln, err := server.NS.Listen("tcp", dst.String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go echoServer(ln)
	conn, err := client.NS.Dial(ctx, "tcp", dst.String())
	if err != nil {
		t.Fatalf("the audited port: %v", err)
	}
	defer conn.Close()
	if err := roundTrip(conn, "audited"); err != nil {
		t.Fatal(err)
	}

	write("enforce")
	if err := a.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload", func() bool {
		for _, m := range a.metrics(t)["natwall_config_reloads_total"].GetMetric() {
			if m.GetLabel()[0].GetValue() == "ok" && m.GetCounter().GetValue() == 2 {
				return true
			}
		}
		return false
	})
	if err := roundTrip(conn, "enforced"); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the audited connection after enforce: %v, want a reset", err)
	}
	if _, err := dialWithin(ctx, client.NS, dst, time.Second); err == nil {
		t.Fatal("a new connection passed the enforced rule")
	}
}
