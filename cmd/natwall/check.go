package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/natwall/natwall/controlplane"
	"github.com/natwall/natwall/rules"
	"github.com/natwall/natwall/rules/l7"
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
			return nil, fmt.Errorf("--inside %q: %w", s, err)
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

// loadLiveRules is the rule set natwall run last applied, from the copy of
// its sources it keeps in the state directory: the files on disk may have
// changed, or be broken, since.
func loadLiveRules(cmd *cobra.Command) (*rules.RuleSet, *rules.Tables, error) {
	stateDir, _ := cmd.Flags().GetString("state-dir")
	if file, _ := cmd.Flags().GetString("config"); file != "" {
		cfg, err := controlplane.LoadConfig(controlplane.LoadOptions{File: file})
		if err != nil {
			return nil, nil, err
		}
		stateDir = cfg.StateDir
	}
	live, err := controlplane.ReadLiveRules(stateDir)
	if err != nil {
		return nil, nil, err
	}
	return compileRules(live.RuleSet())
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
					return fmt.Errorf("%d errors: no rule from these files would be applied", len(list))
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
				return fmt.Errorf("%d warnings with --strict", len(warnings))
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
		Use:   "explain (--rules PATH | --live) --src ADDR --dst ADDR [--proto tcp] [--sport N] [--dport N] [--direction outbound] [--sni NAME | --host NAME]",
		Short: "Say which stage and rule decide a packet or flow, and why",
		Long: `explain says how a rule set decides a packet or a flow's first packet.
With --rules it reads rule files offline, as check does. With --live it
explains the rule set natwall run last applied, from the copy natwall run
keeps in its state directory (--state-dir, or state_dir of --config): after
a broken edit of the files, that is still the set being enforced.

A flow whose first packet reaches a rule with an L7 condition (tls_sni,
http_host, a Suricata tls.sni or http.host rule, a domain list) is pending:
its first data decides. --sni or --host give that data's name, and
evaluation resumes at the pending rule as natwall's inspector does; an
empty value (--sni '') is a ClientHello without SNI or a request without
Host.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			live, _ := f.GetBool("live")
			paths, _ := f.GetStringSlice("rules")
			var rs *rules.RuleSet
			var tbl *rules.Tables
			var err error
			switch {
			case live:
				rs, tbl, err = loadLiveRules(cmd)
			case f.Changed("state-dir") || f.Changed("config"):
				return errors.New("--state-dir and --config go with --live")
			case len(paths) == 0:
				return errors.New("--rules or --live is required")
			default:
				rs, tbl, err = loadRules(cmd, paths)
			}
			if err != nil {
				return err
			}
			p, err := packetFlags(cmd)
			if err != nil {
				return err
			}
			info, err := l7Flags(cmd)
			if err != nil {
				return err
			}
			ex := rules.ExplainFlow(rs, tbl, p, info)
			if out, _ := cmd.Flags().GetString("output"); out == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(ex)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintln(w, ex.Packet)
			for _, d := range ex.Decisions {
				rule := d.Rule
				if rule == "" {
					rule = "(default)"
				}
				fmt.Fprintf(w, "  %-9s %-6s %s %s\n            %s\n", d.Stage, d.Action, rule, d.At, d.Why)
				if d.L7 != "" {
					fmt.Fprintf(w, "            L7: %s\n", d.L7)
				}
				if m := d.Meta; m != nil {
					fmt.Fprintf(w, "            sid %d rev %d: %s\n", m.SID, m.Rev, m.Msg)
					if m.Classtype != "" {
						fmt.Fprintf(w, "            classtype: %s\n", m.Classtype)
					}
					for _, ref := range m.References {
						fmt.Fprintf(w, "            reference: %s\n", ref)
					}
					if len(m.Metadata) > 0 {
						fmt.Fprintf(w, "            metadata: %s\n", strings.Join(m.Metadata, ", "))
					}
				}
				if len(d.Alerts) > 0 {
					fmt.Fprintf(w, "            alerts: %s\n", strings.Join(d.Alerts, ", "))
				}
			}
			fmt.Fprintln(w, ex.Verdict)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSlice("rules", nil, "rule files or directories")
	f.StringSlice("inside", nil, "inside networks, for the inside and internet tags")
	f.Bool("live", false, "explain the rule set natwall run applied, with its inside networks")
	f.String("state-dir", controlplane.DefaultStateDir, "with --live: natwall's state directory")
	f.String("config", "", "with --live: natwall's config file, for its state_dir")
	cmd.MarkFlagsMutuallyExclusive("live", "rules")
	cmd.MarkFlagsMutuallyExclusive("live", "inside")
	cmd.MarkFlagsMutuallyExclusive("state-dir", "config")
	f.String("src", "", "source address")
	f.String("dst", "", "destination address")
	f.String("proto", "tcp", "tcp, udp, icmp, icmpv6 or a number")
	f.Uint16("sport", 0, "source port")
	f.Uint16("dport", 0, "destination port")
	f.Uint8("icmp-type", 0, "ICMP type")
	f.Uint8("icmp-code", 0, "ICMP code")
	f.String("direction", "outbound", "outbound, inbound, east-west, transit or local")
	f.String("sni", "", "the TLS server name a pending flow's ClientHello carries ('' for none)")
	f.String("host", "", "the HTTP Host a pending flow's request carries ('' for none)")
	cmd.MarkFlagsMutuallyExclusive("sni", "host")
	f.StringP("output", "o", "text", "text or json")
	return cmd
}

// l7Flags reads --sni and --host: what a pending flow's first data says.
func l7Flags(cmd *cobra.Command) (*rules.L7Info, error) {
	f := cmd.Flags()
	for _, flag := range []struct {
		name  string
		proto rules.AppProto
	}{{"sni", rules.AppTLS}, {"host", rules.AppHTTP}} {
		if !f.Changed(flag.name) {
			continue
		}
		v, _ := f.GetString(flag.name)
		if v == "" {
			return &rules.L7Info{Proto: flag.proto}, nil
		}
		name, res := l7.NormalizeString(v)
		switch res {
		case l7.NameIPLiteral:
			return nil, fmt.Errorf("--%s %q is an IP address: the inspector denies such a flow before any rule", flag.name, v)
		case l7.NameBad:
			return nil, fmt.Errorf("--%s %q is not a DNS name: the inspector denies such a flow before any rule", flag.name, v)
		}
		return &rules.L7Info{Proto: flag.proto, Name: name}, nil
	}
	return nil, nil
}

func packetFlags(cmd *cobra.Command) (rules.Packet, error) {
	f := cmd.Flags()
	var p rules.Packet
	var err error
	src, _ := f.GetString("src")
	dst, _ := f.GetString("dst")
	for _, a := range []struct {
		flag, value string
		to          *netip.Addr
	}{{"src", src, &p.Src}, {"dst", dst, &p.Dst}} {
		if a.value == "" {
			return p, fmt.Errorf("--%s is required: the packet's %s address", a.flag, map[string]string{"src": "source", "dst": "destination"}[a.flag])
		}
		if *a.to, err = netip.ParseAddr(a.value); err != nil {
			return p, fmt.Errorf("--%s %q is not an IPv4 or IPv6 address", a.flag, a.value)
		}
	}
	if p.Src.Is4() != p.Dst.Is4() {
		return p, fmt.Errorf("--src %s and --dst %s are of different address families", p.Src, p.Dst)
	}
	proto, _ := f.GetString("proto")
	if n, ok := map[string]uint8{"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}[proto]; ok {
		p.Protocol = n
	} else if n, err := strconv.ParseUint(proto, 10, 8); err == nil {
		p.Protocol = uint8(n)
	} else {
		return p, fmt.Errorf("--proto %q is not tcp, udp, icmp, icmpv6 or a number 0-255", proto)
	}
	switch p.Protocol {
	case 6, 17:
		p.HasPorts = true
		p.SrcPort, _ = f.GetUint16("sport")
		p.DstPort, _ = f.GetUint16("dport")
	case 1, 58:
		p.IsICMP = true
		p.ICMPType, _ = f.GetUint8("icmp-type")
		p.ICMPCode, _ = f.GetUint8("icmp-code")
	}
	dir, _ := f.GetString("direction")
	for _, d := range []rules.Direction{rules.Outbound, rules.Inbound, rules.EastWest, rules.Transit, rules.Local} {
		if d.String() == dir {
			p.Direction = d
			return p, nil
		}
	}
	return p, fmt.Errorf("--direction %q is not outbound, inbound, east-west, transit or local", dir)
}
