package controlplane

import (
	"strings"
	"testing"
	"time"
)

func defaultEVE() EVEConfig {
	return EVEConfig{Output: EVEOff, Path: DefaultEVEPath, MaxSize: 100 << 20, MaxFiles: 5, Flows: true, Alerts: true,
		ActiveInterval: 5 * time.Minute}
}

func TestLoadConfigEVE(t *testing.T) {
	clearNatwallEnv(t)
	for _, tc := range []struct {
		name string
		yaml string
		want func(*EVEConfig)
	}{
		{"defaults", "", func(*EVEConfig) {}},
		{"file", "eve:\n  output: file\n  path: /var/log/nw/../nw/eve.json\n  max_size: 10MB\n  max_files: 3\n  flows: false\n  flow_interval: 1m\n",
			func(e *EVEConfig) {
				e.Output, e.Path, e.MaxSize, e.MaxFiles, e.Flows, e.ActiveInterval = EVEFile, "/var/log/nw/eve.json", 10e6, 3, false, time.Minute
			}},
		{"stdout, sizes as numbers", "eve: {output: stdout, max_size: 65536, max_files: 1000, alerts: false}\n",
			func(e *EVEConfig) { e.Output, e.MaxSize, e.MaxFiles, e.Alerts = EVEStdout, 65536, 1000, false }},
		{"binary units", "eve: {max_size: 2GiB}\n", func(e *EVEConfig) { e.MaxSize = 2 << 30 }},
		{"unit with a space", "eve: {max_size: 512 KiB}\n", func(e *EVEConfig) { e.MaxSize = 512 << 10 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadConfig("natwall.yaml", []byte(minimalConfig+tc.yaml), nil)
			if err != nil {
				t.Fatal(err)
			}
			want := defaultEVE()
			tc.want(&want)
			if cfg.EVE != want {
				t.Errorf("got %+v\nwant %+v", cfg.EVE, want)
			}
		})
	}
	t.Run("environment", func(t *testing.T) {
		t.Setenv("NATWALL_EVE_OUTPUT", "file")
		t.Setenv("NATWALL_EVE_MAX_SIZE", "1MiB")
		cfg, err := loadConfig("natwall.yaml", []byte(minimalConfig), nil)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.EVE.Output != EVEFile || cfg.EVE.MaxSize != 1<<20 {
			t.Errorf("got %+v", cfg.EVE)
		}
	})
}

func TestLoadConfigEVEErrors(t *testing.T) {
	clearNatwallEnv(t)
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"output", "eve: {output: syslog}\n", `eve.output: "syslog" is not one of off, stdout, file`},
		{"relative path", "eve: {path: eve.json}\n", `eve.path: "eve.json" must be an absolute path`},
		{"directory path", "eve: {path: /var/log/}\n", `eve.path: "/var/log/" names a directory`},
		{"size garbage", "eve: {max_size: big}\n", `eve.max_size: "big" is not a size such as 100MiB, 1GB or 65536`},
		{"size unit only", "eve: {max_size: MiB}\n", `eve.max_size: "MiB" is not a size`},
		{"negative size", "eve: {max_size: -5MB}\n", `eve.max_size: "-5MB" is not a size`},
		{"size too small", "eve: {max_size: 1000}\n", `eve.max_size: "1000" is not from 64KiB to 1TiB`},
		{"size overflowing", "eve: {max_size: 99999999999999999999TiB}\n", `is not from 64KiB to 1TiB`},
		{"files zero", "eve: {max_files: 0}\n", `eve.max_files: "0" is not a whole number from 1 to 1000`},
		{"files too many", "eve: {max_files: 1001}\n", `eve.max_files: "1001" is not a whole number`},
		{"files fraction", "eve: {max_files: 1.5}\n", `eve.max_files`},
		{"interval too short", "eve: {flow_interval: 1s}\n", `eve.flow_interval: "1s" is not from 10s to 24h`},
		{"flows not a bool", "eve: {flows: sometimes}\n", `eve.flows: "sometimes" is not true or false`},
		{"unknown key", "eve: {max_file: 3}\n", `eve.max_file: unknown key (did you mean eve.max_files?)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig("natwall.yaml", []byte(minimalConfig+tc.yaml), nil)
			if err == nil {
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"100MiB", "1GB", "65536", "", "MiB", "-1", "9999999999999999999999TiB", "1.5GB", " 7 kb "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := parseSize(s)
		if ok && n < 0 {
			t.Fatalf("%q parsed as %d", s, n)
		}
	})
}
