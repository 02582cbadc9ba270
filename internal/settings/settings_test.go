package settings

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestWholeCPUs(t *testing.T) {
	for limit, want := range map[float64]int{0: 0, -1: 0, 0.5: 1, 1: 1, 1.0000000001: 1, 1.5: 2, 2: 2} {
		if got := WholeCPUs(limit); got != want {
			t.Errorf("WholeCPUs(%v) = %d, want %d", limit, got, want)
		}
	}
}

func TestCheck(t *testing.T) {
	for _, tt := range []struct {
		flag string
		v    any
		want string // "" accepted
	}{
		{"warm", 0, ""},
		{"warm", -1, "--warm must not be negative"},
		{"max-concurrent", 0, "--max-concurrent must be positive"},
		{"max-processes", -1, "--max-processes must not be negative (0: no limit)"},
		{"max-request-bytes", int64(0), "--max-request-bytes must be positive"},
		{"memory-limit-mb", 0, ""},
		{"memory-limit-mb", MinMemoryLimitMB, ""},
		{"memory-limit-mb", 16, "--memory-limit-mb 16: want 0 (no limit) or at least 32"},
		{"runner-memory-high-water", 0, ""},
		{"runner-memory-high-water", 99, ""},
		{"runner-memory-high-water", 100, "--runner-memory-high-water 100: want from 0 (no watchdog) to 99"},
		{"timeout", time.Duration(0), "--timeout must be positive"},
		{"drain-timeout", time.Duration(0), ""},
		{"drain-timeout", -time.Second, "--drain-timeout must not be negative"},
		{"max-landlock-abi", -2, "--max-landlock-abi -2: want at least -1"},
		{"socket", "", ""},
	} {
		err := Lookup(tt.flag).Check(tt.v)
		if got := fmt.Sprint(err); (err == nil) != (tt.want == "") || (err != nil && got != tt.want) {
			t.Errorf("--%s %v: %v; want %q", tt.flag, tt.v, err, tt.want)
		}
	}
}

// Every setting is well formed: a known group, a help line, a default (or a word on how it is
// worked out) of the type of its bounds, and annotation bounds only with an annotation.
func TestSettingsWellFormed(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range Serve {
		if seen[s.Flag] {
			t.Errorf("--%s is defined twice", s.Flag)
		}
		seen[s.Flag] = true
		if !slices.Contains(Groups, s.Group) {
			t.Errorf("--%s: group %q is not one of Groups", s.Flag, s.Group)
		}
		if s.Doc == "" {
			t.Errorf("--%s has no help", s.Flag)
		}
		if s.Default != nil && s.DefaultDoc != "" {
			t.Errorf("--%s has a default and a DefaultDoc", s.Flag)
		}
		for _, b := range []any{s.Min, s.Max, s.AnnotationMin, s.AnnotationMax} {
			if b != nil && s.Default != nil && reflect.TypeOf(b) != reflect.TypeOf(s.Default) {
				t.Errorf("--%s: a bound of type %T, a default of type %T", s.Flag, b, s.Default)
			}
		}
		if s.Default != nil {
			if err := s.Check(s.Default); err != nil {
				t.Errorf("--%s: its default is out of its bounds: %v", s.Flag, err)
			}
		}
		if (s.AnnotationMin != nil || s.AnnotationMax != nil) && s.Annotation == "" {
			t.Errorf("--%s has annotation bounds and no annotation", s.Flag)
		}
		if s.ChartValue != "" && s.InjectorFlag == "" {
			t.Errorf("--%s has a chart value and no injector flag to pass it to", s.Flag)
		}
	}
}

// AddFlags registers each setting with its default and group, keeps a variable's value as the
// default where the setting has none, and Usage lists the flags by group in the order of Groups.
func TestAddFlagsAndUsage(t *testing.T) {
	var (
		warm, concurrent int
		socket           string
		uids             []int
		require, preload []string
	)
	concurrent = 7
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.Bool("other", false, "a flag of no group")
	list := []Setting{Lookup("warm"), Lookup("max-concurrent"), Lookup("socket"), Lookup("allow-uids"), Lookup("require"), Lookup("preload")}
	AddFlags(fs, list, map[string]any{"warm": &warm, "max-concurrent": &concurrent, "socket": &socket, "allow-uids": &uids, "require": &require, "preload": &preload})
	if err := fs.Parse([]string{"--require", "a,b", "--require", "c", "--preload", "x,y"}); err != nil {
		t.Fatal(err)
	}
	if warm != 1 || concurrent != 7 || socket != DefaultSocket || len(require) != 2 || len(preload) != 2 {
		t.Errorf("warm %d, max-concurrent %d, socket %q, require %q, preload %q", warm, concurrent, socket, require, preload)
	}
	var b strings.Builder
	Usage(&b, fs)
	out := b.String()
	iSocket, iCapacity, iFork, iPackages, iOther := strings.Index(out, "Socket and callers:\n"), strings.Index(out, "Capacity:\n"),
		strings.Index(out, "Fork mode:\n"), strings.Index(out, "Python and packages:\n"), strings.Index(out, "Other flags:\n")
	if iSocket < 0 || iCapacity < iSocket || iFork < iCapacity || iPackages < iFork || iOther < iPackages ||
		!inside(out, "--socket", iSocket, iCapacity) || !inside(out, "--max-concurrent", iCapacity, iFork) ||
		!inside(out, "--warm", iFork, iPackages) || !inside(out, "--require", iPackages, iOther) || !inside(out, "--other", iOther, len(out)) {
		t.Errorf("usage by group:\n%s", out)
	}
	for _, missing := range []map[string]any{
		{"warm": &warm}, // no variable for max-concurrent
		{"warm": &warm, "max-concurrent": &concurrent, "stray": &warm},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("AddFlags with variables %v did not panic", missing)
				}
			}()
			AddFlags(pflag.NewFlagSet("x", pflag.ContinueOnError), []Setting{Lookup("warm"), Lookup("max-concurrent")}, missing)
		}()
	}
}

func inside(s, sub string, from, to int) bool {
	i := strings.Index(s[from:], sub)
	return i >= 0 && from+i < to
}
