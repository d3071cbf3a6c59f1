package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/natwall/natwall/controlplane/api"
)

func init() { rootCmd.AddCommand(newReloadCmd()) }

// reloadView is `natwall reload`'s answer.
type reloadView api.ReloadResult

func (r reloadView) tables(bool) []table {
	return []table{{title: fmt.Sprintf("rule set applied: %d stateless and %d stateful rules, generation %d", r.Stateless, r.Stateful, r.Generation)}}
}

func newReloadCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Apply the rule files again, as SIGHUP does",
		Long: `reload asks natwall run to read, validate, compile and apply its rule files.
A set that does not validate changes nothing: the last good set stays live,
each problem is printed as file:line:col, and reload exits 3.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := outputFormat(cmd)
			if err != nil {
				return err
			}
			res, err := daemon(cmd).Reload(cmd.Context())
			if err != nil {
				return err
			}
			return render(cmd.OutOrStdout(), format, reloadView(res))
		},
	}
	socketFlag(cmd)
	outputFlag(cmd)
	return cmd
}
