package packages

import (
	"fmt"
	"path"
	"strings"

	"github.com/pyexec/pyexec/internal/pyreq"
)

// Policy decides which packages code may install at run time (--allow-packages). Patterns
// are shell patterns (path.Match) over PEP 503 normalized names: "numpy", "scikit-*", "*".
// The zero Policy allows none; installs at pod start (pyexec init --install) do not ask it.
type Policy struct {
	patterns []string
}

// NewPolicy checks and normalizes the patterns.
func NewPolicy(patterns []string) (Policy, error) {
	var p Policy
	for _, pat := range patterns {
		pat = strings.TrimSpace(pat)
		if pat == "" {
			continue
		}
		norm := strings.ToLower(pat)
		if _, err := path.Match(norm, ""); err != nil {
			return Policy{}, fmt.Errorf("--allow-packages %q: %w", pat, err)
		}
		p.patterns = append(p.patterns, pyreq.NormalizeName(norm))
	}
	return p, nil
}

// Patterns returns the normalized patterns.
func (p Policy) Patterns() []string { return append([]string{}, p.patterns...) }

// Allows reports whether the distribution name may be installed at run time.
func (p Policy) Allows(name string) bool {
	name = pyreq.NormalizeName(name)
	for _, pat := range p.patterns {
		if ok, _ := path.Match(pat, name); ok {
			return true
		}
	}
	return false
}

// DeniedError names a package the policy refuses.
type DeniedError struct {
	Name     string
	Patterns []string
}

func (e *DeniedError) Error() string {
	if len(e.Patterns) == 0 {
		return fmt.Sprintf("package %s may not be installed at run time: no package is allowed (--allow-packages is empty)", e.Name)
	}
	return fmt.Sprintf("package %s may not be installed at run time: it matches none of --allow-packages %s", e.Name, strings.Join(e.Patterns, ","))
}

// Check returns a *DeniedError for the first requirement the policy refuses.
func (p Policy) Check(reqs []pyreq.Requirement) error {
	for _, r := range reqs {
		if !p.Allows(r.Key()) {
			return &DeniedError{Name: r.Key(), Patterns: p.Patterns()}
		}
	}
	return nil
}
