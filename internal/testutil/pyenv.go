package testutil

import (
	"cmp"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// SourcePython is a CPython built from source into a prefix of its own (pyenv's), as the
// python:3.x images have theirs in /usr/local.
type SourcePython struct {
	Prefix  string // its sys.prefix: bin/python3 is below it
	Version [3]int
}

// String is the version, e.g. 3.12.1.
func (p SourcePython) String() string {
	return strconv.Itoa(p.Version[0]) + "." + strconv.Itoa(p.Version[1]) + "." + strconv.Itoa(p.Version[2])
}

// SourcePythons lists the CPython 3 builds of pyenv on this machine ($PYENV_ROOT, else
// ~/.pyenv), the oldest first. The test machine's python3 is one of them.
func SourcePythons() []SourcePython {
	home, _ := os.UserHomeDir()
	root := cmp.Or(os.Getenv("PYENV_ROOT"), filepath.Join(home, ".pyenv"))
	dirs, _ := filepath.Glob(filepath.Join(root, "versions", "3.*.*"))
	var out []SourcePython
	for _, d := range dirs {
		var v [3]int
		parts := strings.Split(filepath.Base(d), ".")
		ok := len(parts) == 3
		for i := 0; ok && i < 3; i++ {
			n, err := strconv.Atoi(parts[i])
			v[i], ok = n, err == nil
		}
		if _, err := os.Stat(filepath.Join(d, "bin", "python3")); ok && err == nil {
			out = append(out, SourcePython{Prefix: d, Version: v})
		}
	}
	slices.SortFunc(out, func(a, b SourcePython) int {
		return slices.Compare(a.Version[:], b.Version[:])
	})
	return out
}
