package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/natwall/natwall/controlplane"
	"github.com/natwall/natwall/dataplane"
)

func init() { rootCmd.AddCommand(newRulesCmd()) }

func newRulesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rules",
		Short: "List the live rules with their hit counters, most hit first",
		Long: `rules lists the rule set natwall run last applied, with hits read from the
live dataplane: packets for stateless rules, flows for stateful ones. Rules
never hit are listed too, last: candidates for removal.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pinDir, _ := cmd.Flags().GetString("pin-dir")
			stateDir, _ := cmd.Flags().GetString("state-dir")
			live, err := controlplane.ReadLiveRules(stateDir)
			if err != nil {
				return err
			}
			st, err := dataplane.OpenState(pinDir)
			if err != nil {
				return err
			}
			defer st.Close()
			ids := make([]uint32, len(live.Rules))
			for i, r := range live.Rules {
				ids[i] = r.Number
			}
			hits, err := st.RuleHits(ids)
			if err != nil {
				return err
			}
			out := make([]controlplane.RuleHits, len(live.Rules))
			for i, r := range live.Rules {
				out[i] = controlplane.RuleHits{LiveRule: r, Hits: hits[r.Number].Packets, Bytes: hits[r.Number].Bytes}
			}
			controlplane.SortRuleHits(out)
			if o, _ := cmd.Flags().GetString("output"); o == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HITS\tSTAGE\tPRIORITY\tACTION\tRULE\tAT")
			for _, r := range out {
				fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\n", r.Hits, r.Stage, r.Priority, r.Action, r.ID, r.At)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().String("pin-dir", dataplane.DefaultPinDir, "natwall's bpffs pin directory")
	cmd.Flags().String("state-dir", controlplane.DefaultStateDir, "natwall's state directory")
	cmd.Flags().StringP("output", "o", "table", "table or json")
	return cmd
}
