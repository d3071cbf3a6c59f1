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

func loadRules(cmd *cobra.Command, paths []string) (*rules.RuleSet, *rules.Tables, error) {
	inside, err := insideFlag(cmd)
	if err != nil {
		return nil, nil, err
	}
	return compileRules(rules.Load(paths, rules.Options{Inside: inside}))
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
					return invalidError{err: fmt.Errorf("%d errors: no rule from these files would be applied", len(list))}
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
		Use:   "explain (--rules PATH | --live) --src ADDR --dst ADDR [--proto tcp] [--sport N] [--dport N] [--direction outbound]",
		Short: "Say which stage and rule decide a packet or flow, and why",
		Long: `explain says how a rule set decides a packet or a flow's first packet.
With --rules it reads rule files offline, as check does. With --live it asks
natwall run to explain the rule set it last applied: after a broken edit of
the files, that is still the set being enforced.`,
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
				ex = rules.Explain(rs, tbl, p)
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
	f.String("direction", "outbound", "outbound, inbound, east-west, transit or local")
	cmd.RegisterFlagCompletionFunc("direction", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return []cobra.Completion{"outbound", "inbound", "east-west", "transit", "local"}, cobra.ShellCompDirectiveNoFileComp
	})
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
		rule := d.Rule
		if rule == "" {
			rule = "(default)"
		}
		row := []string{d.Stage, d.Action, rule, dash(d.At), d.Why}
		if wide {
			row = append(row, dash(strings.Join(d.Alerts, ",")))
		}
		t.rows = append(t.rows, row)
	}
	return []table{t, {title: e.Verdict}}
}

// explainRequest reads the packet flags.
func explainRequest(cmd *cobra.Command) (api.ExplainRequest, error) {
	f := cmd.Flags()
	var req api.ExplainRequest
	var err error
	src, _ := f.GetString("src")
	dst, _ := f.GetString("dst")
	if req.Src, err = netip.ParseAddr(src); err != nil {
		return req, usageErrorf("--src: %w", err)
	}
	if req.Dst, err = netip.ParseAddr(dst); err != nil {
		return req, usageErrorf("--dst: %w", err)
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
	if _, err := req.Packet(); err != nil {
		return req, usageError{err}
	}
	return req, nil
}
