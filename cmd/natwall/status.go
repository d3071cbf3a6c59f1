package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/natwall/natwall/controlplane/api"
)

func init() { rootCmd.AddCommand(newStatusCmd()) }

func newStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's interfaces, rule set, last reload, flow table and NAT use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := outputFormat(cmd)
			if err != nil {
				return err
			}
			st, err := daemon(cmd).Status(cmd.Context())
			if err != nil {
				return err
			}
			return render(cmd.OutOrStdout(), format, statusView(st))
		},
	}
	socketFlag(cmd)
	outputFlag(cmd)
	return cmd
}

type statusView api.Status

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func percent(n, of int) string {
	if of <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of))
}

func (s statusView) tables(wide bool) []table {
	ifaces := table{header: []string{"INTERFACE", "MODE", "ATTACHED"}}
	if wide {
		ifaces.header = append(ifaces.header, "FELL-BACK")
	}
	for _, i := range s.Interfaces {
		row := []string{i.Name, i.Mode, yesNo(i.Attached)}
		if wide {
			row = append(row, yesNo(i.FellBack))
		}
		ifaces.rows = append(ifaces.rows, row)
	}
	rulesFrom := "the built-in policy"
	if len(s.RulePaths) > 0 {
		rulesFrom = strings.Join(s.RulePaths, ", ")
	}
	ruleLines := table{title: fmt.Sprintf("rules: generation %d, from %s", s.RuleGeneration, rulesFrom)}
	last := s.LastReload
	switch {
	case last == nil:
		ruleLines.rows = append(ruleLines.rows, []string{"last reload: none"})
	case last.OK:
		ruleLines.rows = append(ruleLines.rows, []string{fmt.Sprintf("last reload: ok at %s: %d stateless and %d stateful rules, generation %d",
			last.Time.Format(time.RFC3339), last.Stateless, last.Stateful, last.Generation)})
	default:
		ruleLines.rows = append(ruleLines.rows, []string{fmt.Sprintf("last reload: FAILED at %s: %s", last.Time.Format(time.RFC3339), last.Error)})
		for _, e := range last.Errors {
			ruleLines.rows = append(ruleLines.rows, []string{"  " + e})
		}
	}
	ft := s.FlowTable
	flows := table{
		header: []string{"FLOW TABLE", "FLOWS", "CAPACITY", "USED"},
		rows: [][]string{
			{"ipv4", fmt.Sprint(ft.FlowsV4), fmt.Sprint(ft.Capacity), percent(ft.FlowsV4, ft.Capacity)},
			{"ipv6", fmt.Sprint(ft.FlowsV6), fmt.Sprint(ft.Capacity), percent(ft.FlowsV6, ft.Capacity)},
		},
	}
	out := []table{{title: "natwall " + s.Version}, ifaces, ruleLines, flows}
	if len(s.NAT) > 0 {
		out = append(out, natView(s.NAT).tables(wide)...)
	}
	return out
}
