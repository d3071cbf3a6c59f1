package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/natwall/natwall/controlplane/api"
)

// socketEnv names the API socket for the CLI as it does for natwall run.
const socketEnv = "NATWALL_API_SOCKET"

// socketFlag adds --socket to a command that asks the daemon.
func socketFlag(cmd *cobra.Command) {
	cmd.Flags().String("socket", "", "natwall run's API socket (default $"+socketEnv+", else "+api.DefaultSocket+")")
}

// daemon is a client of the daemon's API at --socket.
func daemon(cmd *cobra.Command) *api.Client {
	socket, _ := cmd.Flags().GetString("socket")
	if socket == "" {
		socket = os.Getenv(socketEnv)
	}
	if socket == "" {
		socket = api.DefaultSocket
	}
	return api.NewClient(socket)
}
