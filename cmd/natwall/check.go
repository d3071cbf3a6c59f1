package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

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
	rs, err := rules.Load(paths, rules.Options{Inside: inside})
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
*.yaml and *.yml) exactly as natwall run would, and reports every error as
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
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %d stateless and %d stateful rules, stateful default %s, %d warnings\n",
				len(rs.Stateless), len(rs.Stateful), rs.StatefulDefault, len(warnings))
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
		Use:   "explain --rules PATH --src ADDR --dst ADDR [--proto tcp] [--sport N] [--dport N] [--direction outbound]",
		Short: "Say which stage and rule decide a packet or flow, and why",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			paths, _ := cmd.Flags().GetStringSlice("rules")
			if len(paths) == 0 {
				return errors.New("--rules is required")
			}
			rs, tbl, err := loadRules(cmd, paths)
			if err != nil {
				return err
			}
			p, err := packetFlags(cmd)
			if err != nil {
				return err
			}
			ex := rules.Explain(rs, tbl, p)
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
	f.String("src", "", "source address")
	f.String("dst", "", "destination address")
	f.String("proto", "tcp", "tcp, udp, icmp, icmpv6 or a number")
	f.Uint16("sport", 0, "source port")
	f.Uint16("dport", 0, "destination port")
	f.Uint8("icmp-type", 0, "ICMP type")
	f.Uint8("icmp-code", 0, "ICMP code")
	f.String("direction", "outbound", "outbound, inbound, east-west, transit or local")
	f.StringP("output", "o", "text", "text or json")
	return cmd
}

func packetFlags(cmd *cobra.Command) (rules.Packet, error) {
	f := cmd.Flags()
	var p rules.Packet
	var err error
	src, _ := f.GetString("src")
	dst, _ := f.GetString("dst")
	if p.Src, err = netip.ParseAddr(src); err != nil {
		return p, fmt.Errorf("--src: %w", err)
	}
	if p.Dst, err = netip.ParseAddr(dst); err != nil {
		return p, fmt.Errorf("--dst: %w", err)
	}
	proto, _ := f.GetString("proto")
	if n, ok := map[string]uint8{"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}[proto]; ok {
		p.Protocol = n
	} else if n, err := strconv.ParseUint(proto, 10, 8); err == nil {
		p.Protocol = uint8(n)
	} else {
		return p, fmt.Errorf("--proto %q", proto)
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
