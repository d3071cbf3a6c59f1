package lab

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Snmp returns the namespace's kernel IP counters, from /proc/net/snmp,
// /proc/net/netstat and /proc/net/snmp6 as seen inside it. Keys of the first
// two are "<section>.<counter>" ("Ip.ForwDatagrams", "Icmp.OutTimeExcds",
// "TcpExt.ListenDrops"); snmp6 names are already unique and kept as they are
// ("Ip6OutForwDatagrams", "Icmp6OutTimeExcds").
//
// Comparing Ip.ForwDatagrams and Ip6OutForwDatagrams before and after a test
// shows whether the kernel forwarded anything, which is how a test proves that
// natwall's XDP program did the forwarding.
func (ns *NetNS) Snmp() (map[string]int64, error) {
	files := []struct {
		path  string
		parse func([]byte, map[string]int64) error
	}{
		// thread-self, not self: /proc/self/net shows the namespace of the
		// process's main thread, not of the thread Do switched.
		{"/proc/thread-self/net/snmp", parseSnmp},
		{"/proc/thread-self/net/netstat", parseSnmp},
		{"/proc/thread-self/net/snmp6", parseSnmp6},
	}
	contents := make([][]byte, len(files))
	err := ns.Do(func() error {
		for i, f := range files {
			b, err := os.ReadFile(f.path)
			if err != nil {
				return err
			}
			contents[i] = b
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read counters in %s: %w", ns.name, err)
	}
	counters := make(map[string]int64)
	for i, f := range files {
		if err := f.parse(contents[i], counters); err != nil {
			return nil, fmt.Errorf("counters of %s in %s: %w", f.path, ns.name, err)
		}
	}
	return counters, nil
}

// parseSnmp reads the format of /proc/net/snmp and /proc/net/netstat: per
// section, a line of names and a line of values, both led by the section's
// name:
//
//	Ip: Forwarding DefaultTTL InReceives
//	Ip: 2 64 17
func parseSnmp(data []byte, into map[string]int64) error {
	lines := bufio.NewScanner(bytes.NewReader(data))
	lineNo := 0
	for lines.Scan() {
		lineNo++
		header := lines.Text()
		if strings.TrimSpace(header) == "" {
			continue
		}
		section, names, ok := strings.Cut(header, ":")
		if !ok || section == "" || strings.ContainsAny(section, " \t") {
			return fmt.Errorf("line %d: want \"<section>: <names>\", got %q", lineNo, header)
		}
		if !lines.Scan() {
			if err := lines.Err(); err != nil {
				return err
			}
			return fmt.Errorf("line %d: section %s has names but no values", lineNo, section)
		}
		lineNo++
		valueSection, values, ok := strings.Cut(lines.Text(), ":")
		if !ok || valueSection != section {
			return fmt.Errorf("line %d: want the values of section %s, got %q", lineNo, section, lines.Text())
		}
		nameFields, valueFields := strings.Fields(names), strings.Fields(values)
		if len(nameFields) != len(valueFields) {
			return fmt.Errorf("line %d: section %s has %d names but %d values", lineNo, section, len(nameFields), len(valueFields))
		}
		for i, name := range nameFields {
			v, err := strconv.ParseInt(valueFields[i], 10, 64)
			if err != nil {
				return fmt.Errorf("line %d: %s.%s: %w", lineNo, section, name, err)
			}
			into[section+"."+name] = v
		}
	}
	return lines.Err()
}

// parseSnmp6 reads the format of /proc/net/snmp6: one "<name> <value>" per
// line.
func parseSnmp6(data []byte, into map[string]int64) error {
	lines := bufio.NewScanner(bytes.NewReader(data))
	lineNo := 0
	for lines.Scan() {
		lineNo++
		fields := strings.Fields(lines.Text())
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 {
			return fmt.Errorf("line %d: want \"<name> <value>\", got %q", lineNo, lines.Text())
		}
		v, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			return fmt.Errorf("line %d: %s: %w", lineNo, fields[0], err)
		}
		into[fields[0]] = v
	}
	return lines.Err()
}
