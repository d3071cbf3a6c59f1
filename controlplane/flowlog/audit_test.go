package flowlog

import (
	"encoding/json"
	"testing"

	"github.com/natwall/natwall/dataplane"
)

// auditRT names the rules of the audit and logged-decision records.
var auditRT = ruleTable{
	100: {ID: "shadow-telnet", Action: "deny"},
	102: {ID: "no-smb", Action: "reject"},
	2:   {ID: "stateful-default", Action: "deny"},
}

var auditCases = []struct {
	name string
	ev   dataplane.FlowEvent
	// action and audit are what the record must say.
	action   string
	audit    bool
	category string
}{
	{"alert_audit_would_deny", dataplane.FlowEvent{Type: dataplane.FlowAlert, Time: t0, Audit: true, Flow: dataplane.Flow{
		Proto: 6, Src: ap("198.18.0.2:40000"), Dst: ap("198.19.0.9:23"), Zone: 0, RuleID: 100,
	}}, "allowed", true, "natwall deny rule"},
	{"alert_logged_reject", dataplane.FlowEvent{Type: dataplane.FlowAlert, Time: t0, Logged: true, Reason: dataplane.ReasonDropACLReject, Flow: dataplane.Flow{
		Proto: 6, Src: ap("198.18.0.2:40001"), Dst: ap("198.19.0.9:445"), Zone: 0, RuleID: 102,
	}}, "blocked", false, "natwall reject rule"},
	{"alert_logged_default_deny", dataplane.FlowEvent{Type: dataplane.FlowAlert, Time: t0, Logged: true, Reason: dataplane.ReasonDropACLDeny, Flow: dataplane.Flow{
		Proto: 17, Src: ap("198.19.0.9:5353"), Dst: ap("198.18.0.2:7777"), Zone: 1, RuleID: 2,
	}}, "blocked", false, "natwall deny rule"},
}

// TestEVEAuditAndLoggedAlerts: an audit alert says the packet was allowed
// and carries the natwall_mode metadata; a logged deny or reject says
// blocked. Golden files hold the records; the fields are checked too.
func TestEVEAuditAndLoggedAlerts(t *testing.T) {
	enc := Encoder{Rules: auditRT}
	for _, tc := range auditCases {
		t.Run(tc.name, func(t *testing.T) {
			got := goldenEVE(t, enc, &tc.ev, tc.name)
			var rec struct {
				EventType string `json:"event_type"`
				Alert     struct {
					Action      string              `json:"action"`
					SignatureID uint32              `json:"signature_id"`
					Signature   string              `json:"signature"`
					Category    string              `json:"category"`
					Metadata    map[string][]string `json:"metadata"`
				} `json:"alert"`
			}
			if err := json.Unmarshal(got, &rec); err != nil {
				t.Fatalf("record is not JSON: %v", err)
			}
			r, _ := auditRT.Rule(tc.ev.Flow.RuleID)
			a := rec.Alert
			if rec.EventType != "alert" || a.Action != tc.action || a.SignatureID != tc.ev.Flow.RuleID || a.Signature != r.ID || a.Category != tc.category {
				t.Fatalf("record %+v", rec)
			}
			if mode := a.Metadata["natwall_mode"]; tc.audit != (len(mode) == 1 && mode[0] == "audit") || (!tc.audit && a.Metadata != nil) {
				t.Fatalf("metadata %v, audit %v", a.Metadata, tc.audit)
			}
		})
	}
}
