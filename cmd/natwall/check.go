package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"

	"github.com/natwall/natwall/controlplane/api"
	"github.com/natwall/natwall/rules"
)

func init() {
	rootCmd.AddCommand(newCheckCmd(), newExplainCmd())
}

// insideFlag reads --inside, the inside networks the "inside" and
// "internet" tags resolve against.
func insideFlag(cmd *cobra.Command) ([]netip.Prefix, error) {
	var out []netip.Prefix
	list, _ := cmd.Flags().GetStringSlice("inside")
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, usageErrorf("--inside %q: %w", s, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// localFlag reads --local, the appliance's own addresses: ADDR, or
// ADDR/LEN as the interface has it, whose IPv4 subnet broadcast is then the
// appliance's too.
func localFlag(cmd *cobra.Command) ([]netip.Prefix, error) {
	var out []netip.Prefix
	list, _ := cmd.Flags().GetStringSlice("local")
	for _, s := range list {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, usageErrorf("--local %q is not an address or address/length", s)
		}
		out = append(out, p)
	}
	return out, nil
}

func loadRules(cmd *cobra.Command, paths []string) (*rules.RuleSet, *rules.Tables, error) {
	inside, err := insideFlag(cmd)
	if err != nil {
		return nil, nil, err
	}
	return compileRules(rules.Load(paths, rules.Options{Inside: inside, InspectL7: true}))
}

// compileRules compiles a rule set just loaded; explain's rule numbers need
// not be the daemon's, as it names rules by id.
func compileRules(rs *rules.RuleSet, err error) (*rules.RuleSet, *rules.Tables, error) {
	if err != nil {
		return nil, nil, err
	}
	next := uint32(rules.StatefulDefaultID)
	tbl, err := rules.Compile(rs, func(string) uint32 { next++; return next })
	if err != nil {
		return nil, nil, err
	}
	return rs, tbl, nil
}

func newCheckCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check PATH...",
		Short: "Validate rule files offline; exits non-zero on errors (for a GitOps pipeline)",
		Long: `check parses, validates and compiles rule files (files, or directories of
*.yaml, *.yml and Suricata *.rules) exactly as natwall run would, and reports every error as
file:line:col and a reason. Warnings (shadowed rules, duplicates, allow any
to any) do not fail the check unless --strict is given.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, paths []string) error {
			rs, _, err := loadRules(cmd, paths)
			if err != nil {
				var list rules.ErrorList
				if errors.As(err, &list) {
					for _, e := range list {
						fmt.Fprintln(cmd.ErrOrStderr(), e)
					}
					return invalidError{err: fmt.Errorf("%d errors: no rule from these files would be applied", len(list))}
				}
				return err
			}
			warnings := rules.Lint(rs)
			for _, w := range warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), w)
			}
			l7 := 0
			for _, r := range rs.Stateful {
				if r.L7 != nil {
					l7++
				}
			}
			if l7 > 0 && !rules.DaemonInspectsL7 {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %d rules with L7 conditions: this natwall run refuses them until its L7 inspector runs\n", l7)
				warnings = append(warnings, rules.Warning{Msg: "L7 rules not enforceable"})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %d stateless and %d stateful rules (%d with L7 conditions), stateful default %s, %d warnings\n",
				len(rs.Stateless), len(rs.Stateful), l7, rs.StatefulDefault, len(warnings))
			if strict, _ := cmd.Flags().GetBool("strict"); strict && len(warnings) > 0 {
				return invalidError{err: fmt.Errorf("%d warnings with --strict", len(warnings))}
			}
			return nil
		},
	}
	cmd.Flags().StringSlice("inside", nil, "inside networks, for the inside and internet tags")
	cmd.Flags().Bool("strict", false, "fail on warnings too")
	return cmd
}

func newExplainCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "explain (--rules PATH [--inside CIDR] [--local ADDR] | --live) --src ADDR --dst ADDR [--proto tcp] [--sport N] [--dport N] [--direction DIR] [--sni NAME | --host NAME]",
		Short: "Say which stage and rule decide a packet or flow, and why",
		Long: `explain says how a rule set decides a packet or a flow's first packet.
With --rules it reads rule files offline, as check does. With --live it asks
natwall run to explain the rule set it last applied: after a broken edit of
the files, that is still the set being enforced.

The direction (zone) is derived from the endpoints as the dataplane derives
it: local when the destination is the appliance's (one of its addresses, a
broadcast or multicast address, an IPv6 link-scoped one), else outbound,
inbound, east-west or transit from which of source and destination are in
the inside networks. Offline, --inside gives the inside networks and
--local the appliance's own addresses (ADDR or ADDR/LEN, the interface
address, whose subnet broadcast is then the appliance's too); --live uses
the daemon's inside_networks and its host's addresses. --direction names a
zone to ask about instead; when the endpoints say otherwise, the
explanation says so. The stateless stage matches the zone from the inside
networks alone, as the dataplane's does.

Before and instead of the rules come the dataplane's own decisions, shown
as a "dataplane" stage with the reason counter they count under: IPv6
neighbour discovery and MLD pass to the kernel unfiltered; a link-scoped
IPv6 source to a routed address is dropped (drop_link_scoped_src); an ICMP
error needs the flow it quotes; a message that opens no flow is dropped;
and to the appliance only a TCP SYN or an echo request meets the stateful
rules, the rest goes to its kernel (pass_local); offline, with
--arrived-outside, an inside source is spoofed (drop_spoofed_inside). A TCP
packet is taken to be a flow's SYN. explain cannot see the reverse-path
check, nor SNAT mappings (a hairpin is classified by the mapping's inside
host); --live takes the packet to arrive on an inside NIC.

A flow whose first packet reaches a rule with an L7 condition (tls_sni,
http_host, a Suricata tls.sni or http.host rule, a domain list) is pending:
its first data decides. --sni or --host give that data's name, and
evaluation resumes at the pending rule as natwall's inspector does; an
empty value (--sni '') is a ClientHello without SNI or a request without
Host.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := outputFormat(cmd)
			if err != nil {
				return err
			}
			f := cmd.Flags()
			live, _ := f.GetBool("live")
			paths, _ := f.GetStringSlice("rules")
			if !live && len(paths) == 0 {
				return usageErrorf("--rules or --live is required")
			}
			req, err := explainRequest(cmd)
			if err != nil {
				return err
			}
			var ex rules.Explanation
			if live {
				if err := daemon(cmd).Explain(cmd.Context(), req, &ex); err != nil {
					return err
				}
			} else {
				rs, tbl, err := loadRules(cmd, paths)
				if err != nil {
					return err
				}
				p, err := req.Packet()
				if err != nil {
					return usageError{err}
				}
				info, err := req.L7()
				if err != nil {
					return usageError{err}
				}
				local, err := localFlag(cmd)
				if err != nil {
					return err
				}
				inside, err := insideFlag(cmd)
				if err != nil {
					return err
				}
				outside, _ := f.GetBool("arrived-outside")
				ex = rules.ExplainPacket(rs, tbl, p, info, rules.Endpoints{Inside: inside, Local: local, ArrivedOutside: outside})
			}
			return render(cmd.OutOrStdout(), format, explanationView(ex))
		},
	}
	f := cmd.Flags()
	f.StringSlice("rules", nil, "rule files or directories")
	f.StringSlice("inside", nil, "inside networks, for the inside and internet tags")
	f.Bool("live", false, "explain the rule set natwall run applied, with its inside networks")
	socketFlag(cmd)
	cmd.MarkFlagsMutuallyExclusive("live", "rules")
	cmd.MarkFlagsMutuallyExclusive("live", "inside")
	f.String("src", "", "source address")
	f.String("dst", "", "destination address")
	f.String("proto", "tcp", "tcp, udp, icmp, icmpv6 or a number")
	f.Uint16("sport", 0, "source port")
	f.Uint16("dport", 0, "destination port")
	f.Uint8("icmp-type", 0, "ICMP type")
	f.Uint8("icmp-code", 0, "ICMP code")
	f.StringSlice("local", nil, "the appliance's own addresses (ADDR or ADDR/LEN), for the local zone")
	cmd.MarkFlagsMutuallyExclusive("live", "local")
	f.Bool("arrived-outside", false, "the packet arrives on one of outside_interfaces (offline)")
	cmd.MarkFlagsMutuallyExclusive("live", "arrived-outside")
	f.String("direction", api.DeriveDirection, "derive (from the endpoints), or outbound, inbound, east-west, transit or local")
	cmd.RegisterFlagCompletionFunc("direction", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return []cobra.Completion{api.DeriveDirection, "outbound", "inbound", "east-west", "transit", "local"}, cobra.ShellCompDirectiveNoFileComp
	})
	f.String("sni", "", "the TLS server name a pending flow's ClientHello carries ('' for none)")
	f.String("host", "", "the HTTP Host a pending flow's request carries ('' for none)")
	cmd.MarkFlagsMutuallyExclusive("sni", "host")
	outputFlag(cmd)
	return cmd
}

// explanationView prints an explanation as its packet, a table of the
// stages' decisions, and the verdict.
type explanationView rules.Explanation

func (e explanationView) tables(wide bool) []table {
	t := table{title: e.Packet, header: []string{"STAGE", "ACTION", "RULE", "AT", "WHY"}}
	if wide {
		t.header = append(t.header, "ALERTS")
	}
	for _, d := range e.Decisions {
		rule, why := d.Rule, d.Why
		switch {
		case d.Reason != "":
			rule, why = "-", why+"; counted as "+d.Reason
		case rule == "":
			rule = "(default)"
		}
		if d.L7 != "" {
			why += "; L7: " + d.L7
		}
		if len(d.Audit) > 0 {
			why += "; " + strings.Join(d.Audit, "; ")
		}
		if m := d.Meta; m != nil {
			why += fmt.Sprintf("; sid %d rev %d: %s", m.SID, m.Rev, m.Msg)
			if m.Classtype != "" {
				why += "; classtype: " + m.Classtype
			}
			if len(m.References) > 0 {
				why += "; reference: " + strings.Join(m.References, ", ")
			}
			if len(m.Metadata) > 0 {
				why += "; metadata: " + strings.Join(m.Metadata, ", ")
			}
		}
		row := []string{d.Stage, d.Action, rule, dash(d.At), why}
		if wide {
			row = append(row, dash(strings.Join(d.Alerts, ",")))
		}
		t.rows = append(t.rows, row)
	}
	out := []table{t, {title: e.Verdict}}
	if e.DirectionWhy != "" {
		out = append([]table{{title: "direction: " + e.DirectionWhy}}, out...)
	}
	return out
}

// explainRequest reads the packet flags.
func explainRequest(cmd *cobra.Command) (api.ExplainRequest, error) {
	f := cmd.Flags()
	var req api.ExplainRequest
	var err error
	for _, a := range []struct {
		flag, what string
		to         *netip.Addr
	}{{"src", "source", &req.Src}, {"dst", "destination", &req.Dst}} {
		value, _ := f.GetString(a.flag)
		if value == "" {
			return req, usageErrorf("--%s is required: the packet's %s address", a.flag, a.what)
		}
		if *a.to, err = netip.ParseAddr(value); err != nil {
			return req, usageErrorf("--%s %q is not an IPv4 or IPv6 address", a.flag, value)
		}
	}
	if req.Src.Is4() != req.Dst.Is4() {
		return req, usageErrorf("--src %s and --dst %s are of different address families", req.Src, req.Dst)
	}
	proto, _ := f.GetString("proto")
	if req.Protocol, err = api.ParseProtocol(proto); err != nil {
		return req, usageErrorf("--proto %w", err)
	}
	req.SrcPort, _ = f.GetUint16("sport")
	req.DstPort, _ = f.GetUint16("dport")
	req.ICMPType, _ = f.GetUint8("icmp-type")
	req.ICMPCode, _ = f.GetUint8("icmp-code")
	req.Direction, _ = f.GetString("direction")
	for _, name := range []struct {
		flag string
		to   **string
	}{{"sni", &req.SNI}, {"host", &req.Host}} {
		if f.Changed(name.flag) {
			v, _ := f.GetString(name.flag)
			*name.to = &v
		}
	}
	if _, err := req.L7(); err != nil {
		return req, usageError{err}
	}
	if _, err := req.Packet(); err != nil {
		return req, usageError{err}
	}
	return req, nil
}
