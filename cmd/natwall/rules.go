package main

import (
	"strconv"

	"github.com/spf13/cobra"

	"github.com/natwall/natwall/controlplane/api"
)

func init() { rootCmd.AddCommand(newRulesCmd()) }

// ruleList is `natwall rules`.
type ruleList []api.Rule

func (l ruleList) tables(wide bool) []table {
	t := table{header: []string{"HITS", "STAGE", "PRIORITY", "ACTION", "RULE", "AT"}}
	if wide {
		t.header = append(t.header, "BYTES", "NUMBER")
	}
	for _, r := range l {
		action := r.Action
		if r.Report != "" {
			action += " (" + r.Report + ")"
		}
		row := []string{strconv.FormatUint(r.Hits, 10), r.Stage, strconv.Itoa(r.Priority), action, r.ID, r.At}
		if wide {
			row = append(row, strconv.FormatUint(r.Bytes, 10), strconv.FormatUint(uint64(r.Number), 10))
		}
		t.rows = append(t.rows, row)
	}
	return []table{t}
}

func newRulesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rules",
		Short: "List the live rules with their hit counters, most hit first",
		Long: `rules lists the rule set natwall run last applied, with hits read from the
live dataplane: packets for stateless rules, flows for stateful ones. Rules
never hit are listed too, last: candidates for removal.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := outputFormat(cmd)
			if err != nil {
				return err
			}
			list, err := daemon(cmd).Rules(cmd.Context())
			if err != nil {
				return err
			}
			return render(cmd.OutOrStdout(), format, ruleList(list))
		},
	}
	socketFlag(cmd)
	outputFlag(cmd)
	return cmd
}
