package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/natwall/natwall/controlplane"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print natwall's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bi := controlplane.ReadBuildInfo()
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "natwall %s\nrevision: %s\ngo: %s\n", bi.Version, bi.Revision, bi.GoVersion)
			return err
		},
	}
}
