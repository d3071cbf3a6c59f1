package l7

// NameResult says what NormalizeName made of a name.
type NameResult int

const (
	NameOK        NameResult = iota // an LDH DNS name, now in its one spelling
	NameBad                         // empty, too long, or not letters, digits, hyphens and dots
	NameIPLiteral                   // an IPv4 or IPv6 address, not a name
)

var nameResultNames = [...]string{"ok", "bad_name", "ip_literal"}

func (r NameResult) String() string {
	if r < 0 || int(r) >= len(nameResultNames) {
		return "unknown"
	}
	return nameResultNames[r]
}

// NormalizeName lowercases name into out, strips one trailing dot, and
// checks it is an LDH DNS name and not an IP literal. The TLS and HTTP
// parsers and the rule model all spell names through it, so
// "Example.COM." in a ClientHello cannot slip past a rule for example.com.
func NormalizeName(name []byte, out *[MaxName]byte) (int, NameResult) {
	if len(name) > 0 && name[len(name)-1] == '.' {
		name = name[:len(name)-1]
	}
	if len(name) == 0 || len(name) > MaxName {
		return 0, NameBad
	}
	labelStart, allDigits, lastAllDigits := 0, true, true
	for i := 0; i <= len(name); i++ {
		if i == len(name) || name[i] == '.' {
			l := i - labelStart
			if l == 0 || l > 63 || name[labelStart] == '-' || name[i-1] == '-' {
				return 0, NameBad
			}
			lastAllDigits = allDigits
			labelStart, allDigits = i+1, true
			if i < len(name) {
				out[i] = '.'
			}
			continue
		}
		c := name[i]
		switch {
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
			allDigits = false
		case c >= 'a' && c <= 'z', c == '-':
			allDigits = false
		case c >= '0' && c <= '9':
		case c == ':' || c == '[' || c == ']':
			return 0, NameIPLiteral // an IPv6 literal
		default:
			return 0, NameBad
		}
		out[i] = c
	}
	// No top-level domain is numeric, so an all-digit last label is an
	// IPv4 address, in dotted or in a shorter inet_aton form.
	if lastAllDigits {
		return 0, NameIPLiteral
	}
	return len(name), NameOK
}

// NormalizeString is NormalizeName for a name given as text, such as one
// written in a rule; it allocates the result.
func NormalizeString(name string) (string, NameResult) {
	var buf [MaxName]byte
	if len(name) > MaxName+1 {
		return "", NameBad
	}
	n, r := NormalizeName([]byte(name), &buf)
	if r != NameOK {
		return "", r
	}
	return string(buf[:n]), NameOK
}
