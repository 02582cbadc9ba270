package pyreq

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Requirement is one parsed requirement line, such as "pandas>=2" or
// "Foo_Bar[extra1,extra2] (>=1.0)".
type Requirement struct {
	Name      string       // distribution name as written
	Extras    []string     // extras as written, in order; nil when there are none
	Specifier SpecifierSet // version constraints; empty when there are none
}

// Key returns the normalised distribution name, for comparing requirements
// with each other and with installed distributions.
func (r Requirement) Key() string {
	return NormalizeName(r.Name)
}

// String returns the requirement in canonical form: the name as written,
// the extras in brackets without spaces, then the normalised specifier,
// e.g. "Foo_Bar[ex1,ex2]>=1,<3".
func (r Requirement) String() string {
	var b strings.Builder
	b.WriteString(r.Name)
	if len(r.Extras) > 0 {
		b.WriteByte('[')
		b.WriteString(strings.Join(r.Extras, ","))
		b.WriteByte(']')
	}
	b.WriteString(r.Specifier.String())
	return b.String()
}

// Messages for syntax that is valid elsewhere but not supported here.
const (
	msgMarkers      = "environment markers (;) are not supported"
	msgDirectURL    = "direct URL references (@) are not supported"
	msgURL          = "URLs are not supported"
	msgFilePath     = "file paths are not supported"
	msgOptions      = "options such as -r, -c, -e or --index-url are not supported"
	msgLineOptions  = "per-requirement options such as --hash are not supported"
	msgContinuation = `line continuations (trailing \) are not supported`
)

// archiveSuffixes are file name endings that make a name look like a path
// to a distribution archive rather than a distribution name.
var archiveSuffixes = []string{".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar"}

// ParseRequirement parses one PEP 508 requirement without environment
// markers or URLs: a distribution name, optional extras in brackets, then
// an optional specifier set, which may be in parentheses. Examples:
// "pandas>=2", "numpy == 1.26.*", "Foo_Bar[a,b] (>=1.0, !=1.5)".
//
// Any failure is a *SyntaxError. Its Msg names unsupported syntax plainly,
// e.g. "environment markers (;) are not supported" or
// "direct URL references (@) are not supported".
func ParseRequirement(s string) (Requirement, error) {
	line := strings.TrimSpace(s)
	r, msg := parseRequirement(line)
	if msg == "" {
		return r, nil
	}
	if msg != msgMarkers && msg != msgDirectURL {
		if plain := unsupportedSyntax(line); plain != "" {
			msg = plain
		}
	}
	return Requirement{}, &SyntaxError{Input: line, Msg: msg}
}

// parseRequirement does the work of ParseRequirement on a trimmed line and
// returns an error message instead of an error.
func parseRequirement(line string) (Requirement, string) {
	if line == "" {
		return Requirement{}, "empty requirement"
	}
	n := 0
	for n < len(line) && isNameChar(line[n]) {
		n++
	}
	var r Requirement
	r.Name = line[:n]
	switch {
	case r.Name == "":
		return Requirement{}, "a requirement must start with a distribution name"
	case !ValidName(r.Name):
		return Requirement{}, fmt.Sprintf("invalid distribution name %q", r.Name)
	case hasArchiveSuffix(r.Name):
		return Requirement{}, msgFilePath + fmt.Sprintf(" (%q looks like an archive file)", r.Name)
	}
	rest := strings.TrimSpace(line[n:])

	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return Requirement{}, "missing ] after extras"
		}
		extras, msg := parseExtras(rest[1:end])
		if msg != "" {
			return Requirement{}, msg
		}
		r.Extras = extras
		rest = strings.TrimSpace(rest[end+1:])
	}

	if strings.HasPrefix(rest, "@") {
		return Requirement{}, msgDirectURL
	}
	if strings.Contains(rest, ";") {
		return Requirement{}, msgMarkers
	}

	if strings.HasPrefix(rest, "(") {
		end := strings.IndexByte(rest, ')')
		if end < 0 {
			return Requirement{}, "missing ) after version specifier"
		}
		if after := strings.TrimSpace(rest[end+1:]); after != "" {
			return Requirement{}, fmt.Sprintf("unexpected %q after )", after)
		}
		rest = strings.TrimSpace(rest[1:end])
		if rest == "" {
			return Requirement{}, "empty parentheses: expected a version specifier"
		}
	}
	if strings.ContainsAny(rest, "()") {
		return Requirement{}, "unbalanced parentheses"
	}
	if rest != "" && strings.IndexByte(operatorChars, rest[0]) < 0 {
		return Requirement{}, fmt.Sprintf("unexpected %q after the name (expected [extras] or a version specifier such as >=1.0)", rest)
	}
	spec, err := ParseSpecifierSet(rest)
	if err != nil {
		var se *SyntaxError
		if errors.As(err, &se) {
			return Requirement{}, fmt.Sprintf("invalid version specifier %q: %s", se.Input, se.Msg)
		}
		return Requirement{}, fmt.Sprintf("invalid version specifier: %s", err)
	}
	r.Specifier = spec
	return r, ""
}

// parseExtras parses the comma-separated names between the brackets.
func parseExtras(list string) ([]string, string) {
	if strings.TrimSpace(list) == "" {
		return nil, ""
	}
	var extras []string
	for _, e := range strings.Split(list, ",") {
		e = strings.TrimSpace(e)
		if !ValidName(e) {
			return nil, fmt.Sprintf("invalid extra name %q", e)
		}
		extras = append(extras, e)
	}
	return extras, ""
}

// hasArchiveSuffix reports whether name ends like a distribution archive.
func hasArchiveSuffix(name string) bool {
	lower := strings.ToLower(name)
	for _, suffix := range archiveSuffixes {
		if strings.HasSuffix(lower, suffix) {
			return true
		}
	}
	return false
}

// unsupportedSyntax returns a plain message when a line that failed to
// parse looks like pip syntax this package does not support, or "".
func unsupportedSyntax(line string) string {
	switch {
	case strings.HasSuffix(line, `\`):
		return msgContinuation
	case strings.HasPrefix(line, "-"):
		return msgOptions
	case strings.Contains(line, "://"):
		return msgURL
	case strings.HasPrefix(line, ".") || strings.HasPrefix(line, "~") || strings.ContainsAny(line, `/\`):
		return msgFilePath
	case strings.Contains(line, " -") || strings.Contains(line, "\t-"):
		return msgLineOptions
	}
	return ""
}

// ParseRequirementsFile reads a requirements.txt-style file: one
// requirement per line, with blank lines, full-line comments ("# ...") and
// trailing comments (" # ...") ignored. Everything else pip accepts —
// options such as "-r other.txt" or "--index-url", line continuations,
// environment markers, URLs and file paths — is an error, as is listing
// the same distribution (after name normalisation) twice.
//
// Syntax errors are *SyntaxError with File set to name and Line to the
// 1-based line number. A failure to read r is returned as is, wrapped with
// name.
func ParseRequirementsFile(r io.Reader, name string) ([]Requirement, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	data = bytes.TrimPrefix(data, []byte("\ufeff"))

	var reqs []Requirement
	firstLine := map[string]int{} // normalised name -> line number
	for i, raw := range strings.Split(string(data), "\n") {
		lineNo := i + 1
		line := strings.TrimSpace(raw)
		if line == "" || line[0] == '#' {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			return nil, &SyntaxError{File: name, Line: lineNo, Input: line, Msg: msgContinuation}
		}
		content := stripComment(line)
		req, err := ParseRequirement(content)
		if err != nil {
			return nil, &SyntaxError{File: name, Line: lineNo, Input: content, Msg: errorMessage(err)}
		}
		key := req.Key()
		if first, dup := firstLine[key]; dup {
			msg := fmt.Sprintf("duplicate requirement for %q: already listed on line %d", key, first)
			return nil, &SyntaxError{File: name, Line: lineNo, Input: content, Msg: msg}
		}
		firstLine[key] = lineNo
		reqs = append(reqs, req)
	}
	return reqs, nil
}

// stripComment removes a trailing comment: a "#" preceded by whitespace
// and everything after it. A "#" directly after other text is kept, as
// pip does.
func stripComment(line string) string {
	for i := 1; i < len(line); i++ {
		if line[i] == '#' && (line[i-1] == ' ' || line[i-1] == '\t') {
			return strings.TrimSpace(line[:i])
		}
	}
	return line
}
