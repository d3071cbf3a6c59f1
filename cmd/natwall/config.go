package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/natwall/natwall/controlplane"
)

func init() {
	cfg := &cobra.Command{Use: "config", Short: "Work with natwall run's config file"}
	cfg.AddCommand(newConfigCheckCmd())
	rootCmd.AddCommand(cfg)
}

// checkConfig loads and validates a config as natwall run does before it
// changes anything, rule files included.
func checkConfig(opts controlplane.LoadOptions) (controlplane.Config, error) {
	cfg, err := controlplane.LoadConfig(opts)
	if err != nil {
		return cfg, err
	}
	return cfg, controlplane.Check(cfg)
}

// configSummary is what a config that passed the check says.
func configSummary(cfg controlplane.Config) string {
	rules := "the built-in policy"
	if len(cfg.RulePaths) > 0 {
		rules = fmt.Sprintf("rules from %v", cfg.RulePaths)
	}
	return fmt.Sprintf("ok: %s: interfaces %v, %s, api socket %s", cfg.File, cfg.Interfaces, rules, cfg.API.Socket)
}

func newConfigCheckCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check FILE",
		Short: "Validate a config file and its rule files offline, as natwall run --dry-run does",
		Long: `check reads a config file as natwall run would, with NATWALL_* variables,
and validates it whole, rule files included, without touching the kernel or
the daemon. Every problem is printed as file:line:col: key: reason. It exits
0 when the config is good and 3 when it is not.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := checkConfig(controlplane.LoadOptions{File: args[0]})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), configSummary(cfg))
			return nil
		},
	}
	cmd.ValidArgsFunction = func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return []cobra.Completion{"yaml", "yml"}, cobra.ShellCompDirectiveFilterFileExt
	}
	return cmd
}
