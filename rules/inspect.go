package rules

import "github.com/natwall/natwall/rules/l7"

// DaemonInspectsL7 says whether natwall run holds PENDING flows for an
// inspector, and so loads rules with L7 conditions (Options.InspectL7).
// Whoever wires the inspector into the daemon sets Options.InspectL7
// there and flips this, so natwall check stops warning.
const DaemonInspectsL7 = false

// Outcome is what the inspector does with a PENDING flow's first data.
type Outcome int

const (
	// OutcomeResume: evaluation resumes at the pending rule with the
	// L7Info, whose name may be empty (the "no name" semantics).
	OutcomeResume Outcome = iota
	// OutcomeWait: the data so far is a prefix; hold it and wait for more,
	// within the hold time.
	OutcomeWait
	// OutcomeDeny: the data is one that servers and natwall could read
	// differently, or does not fit the hold budget: the flow is denied
	// without consulting any rule.
	OutcomeDeny
)

var outcomeNames = map[Outcome]string{OutcomeResume: "resume", OutcomeWait: "wait", OutcomeDeny: "deny"}

func (o Outcome) String() string { return outcomeNames[o] }

// Classify reads a PENDING flow's first client-to-server bytes as a TLS
// ClientHello or else an HTTP/1.x request head, and says what follows:
//
//   - a name (SNI, Host): resume with it;
//   - TLS without SNI, HTTP without Host, or a name that is an IP
//     address: resume with the protocol and no name, so name conditions
//     fail and protocol-only ones (a Suricata tls or http rule without
//     contents, an allowlist's catch-all) hold;
//   - neither TLS nor HTTP: resume with AppUnknown, so no L7 condition
//     holds;
//   - a prefix of either: wait;
//   - duplicate names, an absolute URI disagreeing with Host, a name that
//     is not an LDH DNS name, a malformed hello or head, or more than
//     l7.MaxHold bytes without a complete one: deny.
//
// reason is the parser's result, for the counter and the log.
func Classify(data []byte, ch *l7.ClientHello, req *l7.HTTPRequest) (info L7Info, out Outcome, reason string) {
	tr := l7.ParseClientHello(data, ch)
	switch tr {
	case l7.TLSOK:
		return L7Info{Proto: AppTLS, Name: string(ch.Name())}, OutcomeResume, tr.String()
	case l7.TLSNoSNI, l7.TLSIPLiteral:
		return L7Info{Proto: AppTLS}, OutcomeResume, tr.String()
	case l7.TLSNeedMore:
		return L7Info{Proto: AppTLS}, OutcomeWait, tr.String()
	case l7.TLSNotTLS:
	default: // too large, malformed, duplicate, bad name
		return L7Info{Proto: AppTLS}, OutcomeDeny, tr.String()
	}
	hr := l7.ParseHTTPRequest(data, req)
	switch hr {
	case l7.HTTPOK:
		return L7Info{Proto: AppHTTP, Name: string(req.Name())}, OutcomeResume, hr.String()
	case l7.HTTPNoHost, l7.HTTPIPLiteral:
		return L7Info{Proto: AppHTTP}, OutcomeResume, hr.String()
	case l7.HTTPNeedMore:
		return L7Info{Proto: AppHTTP}, OutcomeWait, hr.String()
	case l7.HTTPNotHTTP:
		return L7Info{Proto: AppUnknown}, OutcomeResume, "not_tls_or_http"
	}
	return L7Info{Proto: AppHTTP}, OutcomeDeny, hr.String()
}
