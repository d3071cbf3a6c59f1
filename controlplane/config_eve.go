package controlplane

import (
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// EVEOutput is where EVE JSON flow logs and alerts go.
type EVEOutput string

const (
	EVEOff    EVEOutput = "off"
	EVEStdout EVEOutput = "stdout"
	EVEFile   EVEOutput = "file"
)

// EVEConfig is the eve section: EVE JSON flow logs and alerts.
type EVEConfig struct {
	Output EVEOutput
	// Path, MaxSize (bytes) and MaxFiles (rotated files kept) apply to
	// EVEFile.
	Path     string
	MaxSize  int64
	MaxFiles int
	// Flows writes a flow record per ended flow, Alerts an alert record
	// per alert-rule match.
	Flows, Alerts bool
	// ActiveInterval is how often a flow that goes on is reported.
	ActiveInterval time.Duration
}

// Defaults and limits of the eve section.
const (
	DefaultEVEPath = "/var/log/natwall/eve.json"
	minEVESize     = 64 << 10
	maxEVESize     = 1 << 40
	maxEVEFiles    = 1000
)

// The eve keys are kept here, beside their parsing, and joined to the
// table before any config is read.
func init() {
	configKeys = append(configKeys,
		configKey{key: "eve.output", kind: kindString, def: string(EVEOff), usage: "where EVE JSON flow logs and alerts go: off, stdout or file", form: "one of off, stdout, file"},
		configKey{key: "eve.path", kind: kindString, def: DefaultEVEPath, usage: "the EVE log file, with eve.output file", form: "an absolute path such as " + DefaultEVEPath},
		configKey{key: "eve.max_size", kind: kindString, def: "100MiB", usage: "size at which the EVE log file is rotated", form: "a size such as 100MiB, 1GB or 65536 (bytes)"},
		configKey{key: "eve.max_files", kind: kindString, def: "5", usage: "rotated EVE log files kept", form: "a whole number from 1 to 1000"},
		configKey{key: "eve.flows", kind: kindBool, def: true, usage: "log a flow record when a flow ends, and periodically while it lasts"},
		configKey{key: "eve.alerts", kind: kindBool, def: true, usage: "log an alert record when an alert rule matches"},
		configKey{key: "eve.flow_interval", kind: kindString, def: "5m", usage: "how often a long flow is logged while it lasts", form: "a duration with a unit, such as 5m"},
	)
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"b", 1},
}

// parseSize reads "100MiB", "1GB" or a number of bytes.
func parseSize(s string) (int64, bool) {
	lower := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(lower, u.suffix) {
			lower, mult = strings.TrimSpace(strings.TrimSuffix(lower, u.suffix)), u.mult
			break
		}
	}
	if !isUnsignedNumber(lower) {
		return 0, false
	}
	n, err := strconv.ParseInt(lower, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return math.MaxInt64, true // too large; the range check names it
	}
	return n * mult, true
}

// wholeOrString reads a key YAML may give as a number or a string.
func (l *configLoader) wholeOrString(key string) (string, bool) {
	switch v := l.raw(key).(type) {
	case int:
		return strconv.Itoa(v), true
	case int64:
		return strconv.FormatInt(v, 10), true
	case uint64:
		return strconv.FormatUint(v, 10), true
	}
	return l.str(key)
}

func (l *configLoader) buildEVE(cfg *Config) {
	e := &cfg.EVE
	if o, ok := l.oneOf("eve.output", string(EVEOff), string(EVEStdout), string(EVEFile)); ok {
		e.Output = EVEOutput(o)
	}
	if p, ok := l.str("eve.path"); ok {
		switch {
		case !filepath.IsAbs(p):
			l.fail("eve.path", "%q must be an absolute path", p)
		case strings.HasSuffix(p, "/") || filepath.Base(p) == "." || filepath.Base(p) == "..":
			l.fail("eve.path", "%q names a directory; name the log file, such as %s", p, DefaultEVEPath)
		}
		e.Path = filepath.Clean(p)
	}
	if s, ok := l.wholeOrString("eve.max_size"); ok {
		n, parsed := parseSize(s)
		switch {
		case !parsed:
			l.fail("eve.max_size", "%q is not a size such as 100MiB, 1GB or 65536", s)
		case n < minEVESize || n > maxEVESize:
			l.fail("eve.max_size", "%q is not from 64KiB to 1TiB", s)
		default:
			e.MaxSize = n
		}
	}
	if s, ok := l.wholeOrString("eve.max_files"); ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxEVEFiles {
			l.fail("eve.max_files", "%q is not a whole number from 1 to %d", s, maxEVEFiles)
		} else {
			e.MaxFiles = n
		}
	}
	e.Flows = l.boolean("eve.flows")
	e.Alerts = l.boolean("eve.alerts")
	e.ActiveInterval = l.duration("eve.flow_interval", 10*time.Second, 24*time.Hour)
}
