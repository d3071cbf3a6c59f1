package controlplane

import (
	"fmt"
	"log/slog"

	"github.com/natwall/natwall/dataplane"
)

// DefaultPinDir is where natwall pins its maps and links unless pin_dir
// says otherwise.
const DefaultPinDir = dataplane.DefaultPinDir

// Teardown is `natwall teardown`: with no daemon running, it turns the
// kernel's forwarding off (unless keepForwarding: without natwall the
// kernel would forward with no policy and no NAT), then detaches natwall's
// program from every NIC and removes everything natwall pinned under
// pinDir, whatever natwall build pinned it.
func Teardown(pinDir string, keepForwarding bool, sysctlRoot string, log *slog.Logger) error {
	pinned, err := dataplane.PinnedInterfaces(pinDir)
	if err != nil {
		return err
	}
	if len(pinned) > 0 && !keepForwarding {
		if _, err := ApplySysctls(sysctlRoot, ForwardingSwitches("0"), log); err != nil {
			return fmt.Errorf("turn forwarding off before detaching: %w", err)
		}
	}
	detached, err := dataplane.Teardown(pinDir)
	for _, name := range detached {
		log.Info("xdp program detached", "interface", name)
	}
	if err != nil {
		return err
	}
	log.Info("natwall torn down", "pin_dir", pinDir, "interfaces", detached, "forwarding_kept", keepForwarding)
	return nil
}
