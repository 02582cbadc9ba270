package pyreq

import (
	"regexp"
	"strconv"
	"strings"
)

// Version is a parsed PEP 440 version such as "1!2.0rc1.post3.dev4+ubuntu.1".
// The zero value behaves like version "0". Use ParseVersion to build one.
type Version struct {
	original string   // the text that was parsed (whitespace trimmed), used by ===
	epoch    int      // N in "N!"; 0 when absent
	release  []int    // release segment as written, e.g. [1 0 0] for "1.0.0"
	preL     string   // "a", "b" or "rc"; "" when not a pre-release
	preN     int      // pre-release number
	hasPost  bool     // whether there is a post-release segment
	postN    int      // post-release number
	hasDev   bool     // whether there is a dev-release segment
	devN     int      // dev-release number
	local    []string // local label segments, lowercased, numbers without leading zeros
}

// versionPattern is the PEP 440 grammar (Appendix B of the PEP) for an
// already lowercased and trimmed version string, including the permitted
// alternative spellings.
var versionPattern = regexp.MustCompile(`^v?` +
	`(?:(?P<epoch>[0-9]+)!)?` +
	`(?P<release>[0-9]+(?:\.[0-9]+)*)` +
	`(?:[-_.]?(?P<pre_l>alpha|beta|preview|pre|rc|a|b|c)[-_.]?(?P<pre_n>[0-9]+)?)?` +
	`(?:-(?P<post_n1>[0-9]+)|[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>[0-9]+)?)?` +
	`(?:[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>[0-9]+)?)?` +
	`(?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?$`)

// ParseVersion parses a PEP 440 version and normalises it. Parsing is
// case-insensitive and accepts surrounding whitespace, a leading "v", the
// separators ".", "_" and "-", the alternative spellings alpha, beta, c, pre,
// preview, rev and r, implicit numbers ("1.0a" is 1.0a0) and the "1.0-1"
// form of a post-release. Numbers that do not fit in an int are rejected.
func ParseVersion(s string) (Version, error) {
	text := strings.TrimSpace(s)
	m := versionPattern.FindStringSubmatch(asciiLower(text))
	if m == nil {
		return Version{}, &SyntaxError{Input: s, Msg: "not a valid PEP 440 version"}
	}
	group := func(name string) string { return m[versionPattern.SubexpIndex(name)] }

	p := numberParser{}
	v := Version{original: text}
	v.epoch = p.number(group("epoch"))
	for _, part := range strings.Split(group("release"), ".") {
		v.release = append(v.release, p.number(part))
	}
	if l := group("pre_l"); l != "" {
		v.preL = normalPreLetter(l)
		v.preN = p.number(group("pre_n"))
	}
	if n := group("post_n1"); n != "" {
		v.hasPost = true
		v.postN = p.number(n)
	} else if group("post_l") != "" {
		v.hasPost = true
		v.postN = p.number(group("post_n2"))
	}
	if group("dev_l") != "" {
		v.hasDev = true
		v.devN = p.number(group("dev_n"))
	}
	if l := group("local"); l != "" {
		for _, seg := range strings.FieldsFunc(l, isSeparator) {
			if isDigits(seg) {
				seg = strings.TrimLeft(seg, "0")
				if seg == "" {
					seg = "0"
				}
			}
			v.local = append(v.local, seg)
		}
	}
	if p.tooLarge {
		return Version{}, &SyntaxError{Input: s, Msg: "version number too large"}
	}
	return v, nil
}

// numberParser converts digit strings to ints and remembers overflow, so
// that ParseVersion can report it once.
type numberParser struct{ tooLarge bool }

// number returns the value of digits, or 0 when digits is empty (an
// implicit number such as in "1.0a").
func (p *numberParser) number(digits string) int {
	if digits == "" {
		return 0
	}
	n, err := strconv.Atoi(digits)
	if err != nil {
		p.tooLarge = true
		return 0
	}
	return n
}

// normalPreLetter maps the pre-release spellings to a, b or rc.
func normalPreLetter(l string) string {
	switch l {
	case "a", "alpha":
		return "a"
	case "b", "beta":
		return "b"
	default: // rc, c, pre, preview
		return "rc"
	}
}

// String returns the normalised form of the version, such as "1.0a0" or
// "1!2.0.post1.dev3+abc.5".
func (v Version) String() string {
	var b strings.Builder
	if v.epoch != 0 {
		b.WriteString(strconv.Itoa(v.epoch))
		b.WriteByte('!')
	}
	if len(v.release) == 0 {
		b.WriteByte('0')
	}
	for i, n := range v.release {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(strconv.Itoa(n))
	}
	if v.preL != "" {
		b.WriteString(v.preL)
		b.WriteString(strconv.Itoa(v.preN))
	}
	if v.hasPost {
		b.WriteString(".post")
		b.WriteString(strconv.Itoa(v.postN))
	}
	if v.hasDev {
		b.WriteString(".dev")
		b.WriteString(strconv.Itoa(v.devN))
	}
	if len(v.local) > 0 {
		b.WriteByte('+')
		b.WriteString(strings.Join(v.local, "."))
	}
	return b.String()
}

// IsPrerelease reports whether v is a pre-release or a development release.
func (v Version) IsPrerelease() bool {
	return v.preL != "" || v.hasDev
}

// Public returns v without its local version label.
func (v Version) Public() Version {
	if len(v.local) == 0 {
		return v
	}
	p := v
	p.release = append([]int(nil), v.release...)
	p.local = nil
	p.original = p.String()
	return p
}

// Compare returns -1, 0 or 1 when v sorts before, equal to or after o in
// PEP 440 order. Trailing zeros of the release do not matter (1.0 equals
// 1.0.0); development releases sort before pre-releases, pre-releases
// before the final release and post-releases after it; a version with a
// local label sorts after the same version without one.
func (v Version) Compare(o Version) int {
	if c := cmpInt(v.epoch, o.epoch); c != 0 {
		return c
	}
	if c := compareRelease(v.release, o.release); c != 0 {
		return c
	}
	if c := cmpInt(v.phase(), o.phase()); c != 0 {
		return c
	}
	if v.preL != "" {
		if c := cmpInt(v.preN, o.preN); c != 0 {
			return c
		}
	}
	if c := cmpBool(v.hasPost, o.hasPost); c != 0 {
		return c
	}
	if c := cmpInt(v.postN, o.postN); c != 0 {
		return c
	}
	// A development release sorts before the same version without one.
	if c := cmpBool(!v.hasDev, !o.hasDev); c != 0 {
		return c
	}
	if c := cmpInt(v.devN, o.devN); c != 0 {
		return c
	}
	return compareLocal(v.local, o.local)
}

// phase orders the part after the release: a bare development release
// (1.0.dev1) comes first, then alpha, beta and release candidates, then
// everything without a pre-release segment.
func (v Version) phase() int {
	switch v.preL {
	case "a":
		return 1
	case "b":
		return 2
	case "rc":
		return 3
	}
	if v.hasDev && !v.hasPost {
		return 0
	}
	return 4
}

// compareRelease compares release segments, padding the shorter with zeros.
func compareRelease(a, b []int) int {
	for i := 0; i < len(a) || i < len(b); i++ {
		if c := cmpInt(segment(a, i), segment(b, i)); c != 0 {
			return c
		}
	}
	return 0
}

// segment returns release[i], or 0 past the end.
func segment(release []int, i int) int {
	if i < len(release) {
		return release[i]
	}
	return 0
}

// compareLocal compares local labels segment by segment. Numeric segments
// compare as integers and sort after alphanumeric ones; when one label is a
// prefix of the other, the shorter sorts first (so no label sorts first).
func compareLocal(a, b []string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if c := compareLocalSegment(a[i], b[i]); c != 0 {
			return c
		}
	}
	return cmpInt(len(a), len(b))
}

// compareLocalSegment compares two local segments; numeric segments have
// no leading zeros, so a longer one is the larger number.
func compareLocalSegment(a, b string) int {
	aNum, bNum := isDigits(a), isDigits(b)
	switch {
	case aNum && bNum:
		if c := cmpInt(len(a), len(b)); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	case aNum:
		return 1
	case bNum:
		return -1
	default:
		return strings.Compare(a, b)
	}
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// cmpBool orders false before true.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case b:
		return -1
	}
	return 1
}

// isDigits reports whether s is a non-empty string of ASCII digits.
func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isSeparator(r rune) bool { return r == '.' || r == '_' || r == '-' }

// asciiLower lowercases ASCII letters only, so that no non-ASCII character
// can turn into one the grammar accepts.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}
