package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/natwall/natwall/test/demo"
)

func init() { rootCmd.AddCommand(newDemoCmd()) }

func newDemoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Build a lab of network namespaces, run natwall in it, and show what it does",
		Long: `demo builds clients, a server and an appliance out of network namespaces
(addresses from 198.18.0.0/15 and 2001:db8::/32 only), runs natwall on the
appliance, sends traffic through it and explains what happened. Everything is
removed at the end, also on Ctrl-C. Needs root.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			return demo.Run(cmd.Context(), demo.Options{Natwall: self, Out: cmd.OutOrStdout()})
		},
	}
}
