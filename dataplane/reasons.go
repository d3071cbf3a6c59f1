package dataplane

import "fmt"

// Reason says why a packet took the path it took: the C enum nw_reason,
// counted once per packet at the XDP program's exit.
type Reason = natwallNwReason

// Verdict classes a Reason belongs to, used as a metric label.
const (
	VerdictForward   = "forward"
	VerdictPass      = "pass"
	VerdictDrop      = "drop"
	VerdictMalformed = "malformed"
	VerdictNone      = "none"
	// VerdictReply: natwall answered the sender itself (a TCP RST).
	VerdictReply = "reply"
)

type reasonInfo struct {
	name    string
	verdict string
}

// reasonInfos names every nw_reason. TestEveryReasonNamed fails when the C
// enum grows a value this table does not name.
var reasonInfos = map[Reason]reasonInfo{
	natwallNwReasonNW_REASON_NONE:                {"none", VerdictNone},
	natwallNwReasonNW_FWD_TX:                     {"fwd_tx", VerdictForward},
	natwallNwReasonNW_FWD_REDIRECT:               {"fwd_redirect", VerdictForward},
	natwallNwReasonNW_PASS_NOT_IP:                {"pass_not_ip", VerdictPass},
	natwallNwReasonNW_PASS_VLAN:                  {"pass_vlan", VerdictPass},
	natwallNwReasonNW_PASS_LOCAL:                 {"pass_local", VerdictPass},
	natwallNwReasonNW_PASS_LINK_LOCAL:            {"pass_link_local", VerdictPass},
	natwallNwReasonNW_PASS_NO_NEIGH:              {"pass_no_neigh", VerdictPass},
	natwallNwReasonNW_PASS_TTL_EXPIRED:           {"pass_ttl_expired", VerdictPass},
	natwallNwReasonNW_PASS_FRAG_NEEDED:           {"pass_frag_needed", VerdictPass},
	natwallNwReasonNW_PASS_NO_ROUTE:              {"pass_no_route", VerdictPass},
	natwallNwReasonNW_PASS_FWD_DISABLED:          {"pass_fwd_disabled", VerdictPass},
	natwallNwReasonNW_PASS_ROUTE_UNSUPPORTED:     {"pass_route_unsupported", VerdictPass},
	natwallNwReasonNW_PASS_EGRESS_UNMANAGED:      {"pass_egress_unmanaged", VerdictPass},
	natwallNwReasonNW_MALFORMED_ETH:              {"malformed_eth", VerdictMalformed},
	natwallNwReasonNW_MALFORMED_VLAN:             {"malformed_vlan", VerdictMalformed},
	natwallNwReasonNW_MALFORMED_IPV4:             {"malformed_ipv4", VerdictMalformed},
	natwallNwReasonNW_MALFORMED_IPV6:             {"malformed_ipv6", VerdictMalformed},
	natwallNwReasonNW_MALFORMED_IPV6EXTHDR:       {"malformed_ipv6_exthdr", VerdictMalformed},
	natwallNwReasonNW_MALFORMED_L4:               {"malformed_l4", VerdictMalformed},
	natwallNwReasonNW_DROP_REDIRECT_FAILED:       {"drop_redirect_failed", VerdictDrop},
	natwallNwReasonNW_DROP_CT_INVALID:            {"drop_ct_invalid", VerdictDrop},
	natwallNwReasonNW_DROP_POLICY:                {"drop_policy", VerdictDrop},
	natwallNwReasonNW_DROP_CT_FULL:               {"drop_ct_full", VerdictDrop},
	natwallNwReasonNW_DROP_SNAT_EXHAUSTED:        {"drop_snat_exhausted", VerdictDrop},
	natwallNwReasonNW_DROP_SNAT_COLLISION:        {"drop_snat_collision", VerdictDrop},
	natwallNwReasonNW_DROP_FRAG_NO_FIRST:         {"drop_frag_no_first", VerdictDrop},
	natwallNwReasonNW_DROP_FRAG_OVERLAP:          {"drop_frag_overlap", VerdictDrop},
	natwallNwReasonNW_DROP_NAT_SLOW_PATH:         {"drop_nat_slow_path", VerdictDrop},
	natwallNwReasonNW_DROP_ICMP_ERROR_NO_FLOW:    {"drop_icmp_error_no_flow", VerdictDrop},
	natwallNwReasonNW_REPLY_TCP_RST:              {"reply_tcp_rst", VerdictReply},
	natwallNwReasonNW_DROP_ACL_STATELESS:         {"drop_acl_stateless", VerdictDrop},
	natwallNwReasonNW_DROP_ACL_DENY:              {"drop_acl_deny", VerdictDrop},
	natwallNwReasonNW_DROP_ACL_REJECT:            {"drop_acl_reject", VerdictDrop},
	natwallNwReasonNW_DROP_L7PENDING:             {"drop_l7_pending", VerdictDrop},
	natwallNwReasonNW_DROP_INTERNAL:              {"drop_internal", VerdictDrop},
	natwallNwReasonNW_REPLY_ICMP_UNREACH:         {"reply_icmp_unreach", VerdictReply},
	natwallNwReasonNW_DROP_VLAN:                  {"drop_vlan", VerdictDrop},
	natwallNwReasonNW_DROP_IPV4SRC_ROUTE:         {"drop_ipv4_src_route", VerdictDrop},
	natwallNwReasonNW_DROP_ICMP_ERROR_MISMATCH:   {"drop_icmp_error_mismatch", VerdictDrop},
	natwallNwReasonNW_DROP_TCP_BAD_CHECKSUM:      {"drop_tcp_bad_checksum", VerdictDrop},
	natwallNwReasonNW_DROP_TCP_RST_OUT_OF_WINDOW: {"drop_tcp_rst_out_of_window", VerdictDrop},
	natwallNwReasonNW_DROP_TCP_OUT_OF_WINDOW:     {"drop_tcp_out_of_window", VerdictDrop},
	natwallNwReasonNW_DROP_SPOOFED_INSIDE:        {"drop_spoofed_inside", VerdictDrop},
	natwallNwReasonNW_DROP_REVERSE_PATH:          {"drop_reverse_path", VerdictDrop},
	natwallNwReasonNW_DROP_LINK_SCOPED_SRC:       {"drop_link_scoped_src", VerdictDrop},
	natwallNwReasonNW_DROP_ICMP_REDIRECT:         {"drop_icmp_redirect", VerdictDrop},
	natwallNwReasonNW_DROP_CT_SRC_LIMIT:          {"drop_ct_src_limit", VerdictDrop},
	natwallNwReasonNW_DROP_SNAT_HOST_QUOTA:       {"drop_snat_host_quota", VerdictDrop},
	natwallNwReasonNW_DROP_SNAT_TRANSIENT:        {"drop_snat_transient", VerdictDrop},
}

// NumReasons is the number of reasons the dataplane counts.
const NumReasons = int(natwallNwReasonNW_REASON_MAX)

// Exported reasons that callers (tests, the demo) refer to by name.
const (
	ReasonFwdTX                 = natwallNwReasonNW_FWD_TX
	ReasonFwdRedirect           = natwallNwReasonNW_FWD_REDIRECT
	ReasonPassNotIP             = natwallNwReasonNW_PASS_NOT_IP
	ReasonPassVLAN              = natwallNwReasonNW_PASS_VLAN
	ReasonPassLocal             = natwallNwReasonNW_PASS_LOCAL
	ReasonPassLinkLocal         = natwallNwReasonNW_PASS_LINK_LOCAL
	ReasonPassNoNeigh           = natwallNwReasonNW_PASS_NO_NEIGH
	ReasonPassTTLExpired        = natwallNwReasonNW_PASS_TTL_EXPIRED
	ReasonPassFragNeeded        = natwallNwReasonNW_PASS_FRAG_NEEDED
	ReasonPassNoRoute           = natwallNwReasonNW_PASS_NO_ROUTE
	ReasonPassFwdDisabled       = natwallNwReasonNW_PASS_FWD_DISABLED
	ReasonPassEgressUnmanaged   = natwallNwReasonNW_PASS_EGRESS_UNMANAGED
	ReasonMalformedEth          = natwallNwReasonNW_MALFORMED_ETH
	ReasonMalformedVLAN         = natwallNwReasonNW_MALFORMED_VLAN
	ReasonMalformedIPv4         = natwallNwReasonNW_MALFORMED_IPV4
	ReasonMalformedIPv6         = natwallNwReasonNW_MALFORMED_IPV6
	ReasonMalformedIPv6ExtHdr   = natwallNwReasonNW_MALFORMED_IPV6EXTHDR
	ReasonMalformedL4           = natwallNwReasonNW_MALFORMED_L4
	ReasonDropRedirectFailed    = natwallNwReasonNW_DROP_REDIRECT_FAILED
	ReasonDropCTInvalid         = natwallNwReasonNW_DROP_CT_INVALID
	ReasonDropPolicy            = natwallNwReasonNW_DROP_POLICY
	ReasonDropCTFull            = natwallNwReasonNW_DROP_CT_FULL
	ReasonDropSNATExhausted     = natwallNwReasonNW_DROP_SNAT_EXHAUSTED
	ReasonDropSNATCollision     = natwallNwReasonNW_DROP_SNAT_COLLISION
	ReasonDropFragNoFirst       = natwallNwReasonNW_DROP_FRAG_NO_FIRST
	ReasonDropFragOverlap       = natwallNwReasonNW_DROP_FRAG_OVERLAP
	ReasonDropNATSlowPath       = natwallNwReasonNW_DROP_NAT_SLOW_PATH
	ReasonDropICMPErrorNoFlow   = natwallNwReasonNW_DROP_ICMP_ERROR_NO_FLOW
	ReasonReplyTCPRST           = natwallNwReasonNW_REPLY_TCP_RST
	ReasonDropACLStateless      = natwallNwReasonNW_DROP_ACL_STATELESS
	ReasonDropACLDeny           = natwallNwReasonNW_DROP_ACL_DENY
	ReasonDropACLReject         = natwallNwReasonNW_DROP_ACL_REJECT
	ReasonDropInternal          = natwallNwReasonNW_DROP_INTERNAL
	ReasonReplyICMPUnreach      = natwallNwReasonNW_REPLY_ICMP_UNREACH
	ReasonDropVLAN              = natwallNwReasonNW_DROP_VLAN
	ReasonDropIPv4SrcRoute      = natwallNwReasonNW_DROP_IPV4SRC_ROUTE
	ReasonDropICMPErrorMismatch = natwallNwReasonNW_DROP_ICMP_ERROR_MISMATCH
	ReasonDropTCPBadChecksum    = natwallNwReasonNW_DROP_TCP_BAD_CHECKSUM
	ReasonDropTCPRSTOutOfWindow = natwallNwReasonNW_DROP_TCP_RST_OUT_OF_WINDOW
	ReasonDropTCPOutOfWindow    = natwallNwReasonNW_DROP_TCP_OUT_OF_WINDOW
	ReasonDropICMPRedirect      = natwallNwReasonNW_DROP_ICMP_REDIRECT
	ReasonDropCTSrcLimit        = natwallNwReasonNW_DROP_CT_SRC_LIMIT
	ReasonDropSNATHostQuota     = natwallNwReasonNW_DROP_SNAT_HOST_QUOTA
	ReasonDropSNATTransient     = natwallNwReasonNW_DROP_SNAT_TRANSIENT
	// ReasonDropL7Pending: a rule with an L7 condition matched a flow's
	// first packet; PENDING flows are not held yet, so it fails closed.
	ReasonDropL7Pending = natwallNwReasonNW_DROP_L7PENDING
)

// Reasons of the zone checks (docs/security.md, "Zones and spoofed sources").
const (
	ReasonDropSpoofedInside = natwallNwReasonNW_DROP_SPOOFED_INSIDE
	ReasonDropReversePath   = natwallNwReasonNW_DROP_REVERSE_PATH
	ReasonDropLinkScopedSrc = natwallNwReasonNW_DROP_LINK_SCOPED_SRC
)

// Name is the reason's snake_case metric label.
func (r Reason) Name() string {
	if info, ok := reasonInfos[r]; ok {
		return info.name
	}
	return fmt.Sprintf("unknown_%d", uint32(r))
}

// Verdict is the class of action the reason leads to. Malformed packets are
// dropped or passed according to the configured MalformedAction.
func (r Reason) Verdict() string {
	if info, ok := reasonInfos[r]; ok {
		return info.verdict
	}
	return VerdictNone
}
