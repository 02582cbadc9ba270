package pyreq

import "strings"

// NormalizeName returns the PEP 503 normalized form of a distribution name:
// every run of "-", "_" and "." becomes a single "-", and letters are
// lowercased. "Foo__Bar.baz" becomes "foo-bar-baz".
func NormalizeName(name string) string {
	var b strings.Builder
	inRun := false
	for _, r := range name {
		if r == '-' || r == '_' || r == '.' {
			if !inRun {
				b.WriteByte('-')
			}
			inRun = true
			continue
		}
		inRun = false
		b.WriteRune(r)
	}
	return strings.ToLower(b.String())
}

// ValidName reports whether name is a valid PEP 508 distribution name:
// ASCII letters and digits, with ".", "_" and "-" allowed in the middle.
func ValidName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if isAlnum(c) {
			continue
		}
		inner := i > 0 && i < len(name)-1
		if !inner || (c != '.' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}

// isAlnum reports whether c is an ASCII letter or digit.
func isAlnum(c byte) bool {
	return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')
}

// isNameChar reports whether c may appear in a distribution name.
func isNameChar(c byte) bool {
	return isAlnum(c) || c == '.' || c == '_' || c == '-'
}
