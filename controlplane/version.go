package controlplane

import (
	"runtime"
	"runtime/debug"
)

// Version is set at build time:
// go build -ldflags '-X github.com/natwall/natwall/controlplane.Version=v1.2.3'.
// When empty, the module version recorded by the Go toolchain is used.
var Version string

// BuildInfo identifies the running binary.
type BuildInfo struct {
	Version   string
	Revision  string // VCS commit, "unknown" when not recorded
	GoVersion string
}

// ReadBuildInfo reports the binary's version, falling back to what the Go
// toolchain embedded when the build set no Version.
func ReadBuildInfo() BuildInfo {
	info := BuildInfo{Version: Version, Revision: "unknown", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		if info.Version == "" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				info.Revision = s.Value
			}
		}
	}
	if info.Version == "" {
		info.Version = "unknown"
	}
	return info
}
