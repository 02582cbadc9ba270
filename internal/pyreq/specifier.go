package pyreq

import (
	"fmt"
	"strings"
	"unicode"
)

// SpecifierSet is a comma-separated list of PEP 440 version clauses such as
// ">=1.0, !=1.5.*, <2". The zero value is the empty set, which matches
// every version.
type SpecifierSet struct {
	clauses []clause
}

// clause is one operator and version, such as "~=2.31" or "==1.26.*".
type clause struct {
	op       string  // one of ~= == != <= >= < > ===
	text     string  // the version as written (the only value kept for ===)
	version  Version // the parsed version (the prefix for wildcards); unset for ===
	wildcard bool    // the version ended in ".*"
}

// operatorChars are the characters an operator is made of.
const operatorChars = "<>=!~"

var knownOperators = map[string]bool{
	"~=": true, "==": true, "!=": true, "<=": true, ">=": true, "<": true, ">": true, "===": true,
}

// ParseSpecifierSet parses comma-separated clauses made of an operator
// (~= == != <= >= < > ===) and a version, with optional whitespace around
// every part. A blank string gives the empty set. A trailing ".*" is only
// allowed with == and !=, and only after an epoch and release; ~= needs at
// least two release segments; local versions ("+abc") are only allowed with
// == and !=. An invalid clause gives a *SyntaxError whose Input is the clause.
func ParseSpecifierSet(s string) (SpecifierSet, error) {
	if strings.TrimSpace(s) == "" {
		return SpecifierSet{}, nil
	}
	var set SpecifierSet
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return SpecifierSet{}, &SyntaxError{Input: strings.TrimSpace(s), Msg: "empty version clause (stray comma?)"}
		}
		c, err := parseClause(part)
		if err != nil {
			return SpecifierSet{}, err
		}
		set.clauses = append(set.clauses, c)
	}
	return set, nil
}

// parseClause parses one trimmed, non-empty clause.
func parseClause(text string) (clause, error) {
	fail := func(format string, args ...any) (clause, error) {
		return clause{}, &SyntaxError{Input: text, Msg: fmt.Sprintf(format, args...)}
	}
	n := 0
	for n < len(text) && strings.IndexByte(operatorChars, text[n]) >= 0 {
		n++
	}
	op := text[:n]
	if op == "" {
		return fail("missing comparison operator (one of ~= == != <= >= < > ===)")
	}
	if !knownOperators[op] {
		return fail("unknown operator %q (use one of ~= == != <= >= < > ===)", op)
	}
	ver := strings.TrimSpace(text[n:])
	if ver == "" {
		return fail("missing version after %q", op)
	}
	if strings.ContainsFunc(ver, unicode.IsSpace) {
		return fail("unexpected whitespace inside version %q (missing comma?)", ver)
	}
	c := clause{op: op, text: ver}
	if op == "===" {
		for i := 0; i < len(ver); i++ {
			if !isAlnum(ver[i]) && strings.IndexByte("-_.*+!", ver[i]) < 0 {
				return fail("invalid character %q in version %q", ver[i], ver)
			}
		}
		return c, nil
	}

	if strings.HasSuffix(ver, ".*") {
		if op != "==" && op != "!=" {
			return fail("wildcard (.*) is only allowed with == and !=")
		}
		c.wildcard = true
		ver = strings.TrimSuffix(ver, ".*")
	}
	v, err := ParseVersion(ver)
	if err != nil {
		return fail("invalid version %q: %s", ver, errorMessage(err))
	}
	c.version = v
	if c.wildcard && (v.preL != "" || v.hasPost || v.hasDev || len(v.local) > 0) {
		return fail("wildcard (.*) must follow a plain release number such as 1.2")
	}
	if len(v.local) > 0 && op != "==" && op != "!=" {
		return fail("local version label (+%s) is not allowed with %s", strings.Join(v.local, "."), op)
	}
	if op == "~=" && len(v.release) < 2 {
		return fail("~= needs a version with at least two release segments, such as ~=2.2")
	}
	return c, nil
}

// Contains reports whether v satisfies every clause of the set. Unlike an
// installer choosing what to install, pre-releases are always allowed.
func (s SpecifierSet) Contains(v Version) bool {
	for _, c := range s.clauses {
		if !c.matches(v) {
			return false
		}
	}
	return true
}

// String returns the normalised clauses joined with "," (no spaces), or ""
// for the empty set.
func (s SpecifierSet) String() string {
	parts := make([]string, len(s.clauses))
	for i, c := range s.clauses {
		parts[i] = c.String()
	}
	return strings.Join(parts, ",")
}

// Empty reports whether the set has no clauses (and so matches everything).
func (s SpecifierSet) Empty() bool {
	return len(s.clauses) == 0
}

// String returns the clause with its version normalised; === keeps the
// version exactly as written.
func (c clause) String() string {
	switch {
	case c.op == "===":
		return c.op + c.text
	case c.wildcard:
		return c.op + c.version.String() + ".*"
	default:
		return c.op + c.version.String()
	}
}

// matches applies the PEP 440 rules of the clause's operator to cand.
func (c clause) matches(cand Version) bool {
	v := c.version
	public := cand.Public()
	switch c.op {
	case "===":
		return strings.EqualFold(cand.original, c.text)
	case "==":
		return c.equal(cand)
	case "!=":
		return !c.equal(cand)
	case "~=":
		prefix := v.release[:len(v.release)-1]
		return public.Compare(v) >= 0 && hasPrefix(cand, v.epoch, prefix)
	case "<=":
		return public.Compare(v) <= 0
	case ">=":
		return public.Compare(v) >= 0
	case "<":
		if public.Compare(v) >= 0 {
			return false
		}
		// <V excludes pre-releases of V's release, unless V is one itself.
		return v.IsPrerelease() || !public.IsPrerelease() || !sameRelease(public, v)
	case ">":
		// Comparing the public version means a local version of V is not
		// greater than V.
		if public.Compare(v) <= 0 {
			return false
		}
		// >V excludes post-releases of V, unless V is one itself.
		return v.hasPost || !public.hasPost || withoutPostAndDev(public).Compare(v) != 0
	}
	return false
}

// equal is the == test: prefix matching for wildcards, otherwise equality
// with padding, ignoring cand's local label when the clause has none.
func (c clause) equal(cand Version) bool {
	if c.wildcard {
		return hasPrefix(cand, c.version.epoch, c.version.release)
	}
	if len(c.version.local) == 0 {
		cand = cand.Public()
	}
	return cand.Compare(c.version) == 0
}

// hasPrefix reports whether cand has the given epoch and its release
// (padded with zeros) starts with prefix. Anything after the release is
// ignored.
func hasPrefix(cand Version, epoch int, prefix []int) bool {
	if cand.epoch != epoch {
		return false
	}
	for i, n := range prefix {
		if segment(cand.release, i) != n {
			return false
		}
	}
	return true
}

// sameRelease reports whether a and b have the same epoch and release.
func sameRelease(a, b Version) bool {
	return a.epoch == b.epoch && compareRelease(a.release, b.release) == 0
}

// withoutPostAndDev returns the version that v is a post-release of.
func withoutPostAndDev(v Version) Version {
	return Version{epoch: v.epoch, release: v.release, preL: v.preL, preN: v.preN}
}
