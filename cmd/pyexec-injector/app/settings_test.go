package app

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/pyexec/pyexec/internal/settings"
)

// The injector's flags that give the annotations' defaults (serve and inject alike) default to
// the chart's values (internal/settings), so that the offline inject writes what an installed
// webhook would.
func TestSettingsInjectorFlags(t *testing.T) {
	root := NewRootCommand(IO{Stdin: &bytes.Buffer{}, Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, LookupEnv: func(string) (string, bool) { return "", false }}, Runners{})
	checked := 0
	for _, s := range settings.Shared() {
		if s.InjectorFlag == "" {
			continue
		}
		want := fmt.Sprint(s.InjectorDefault())
		if d, ok := s.InjectorDefault().(time.Duration); ok {
			want = d.String()
		}
		for _, sub := range []string{"serve", "inject"} {
			cmd, _, err := root.Find([]string{sub})
			if err != nil {
				t.Fatal(err)
			}
			f := cmd.Flags().Lookup(s.InjectorFlag)
			switch {
			case f == nil:
				t.Errorf("pyexec-injector %s has no --%s", sub, s.InjectorFlag)
			case f.DefValue != want:
				t.Errorf("pyexec-injector %s --%s defaults to %q; the chart's is %q", sub, s.InjectorFlag, f.DefValue, want)
			}
			checked++
		}
	}
	if checked == 0 {
		t.Fatal("no setting has an injector flag")
	}
}

// The injector's flags that give the injected pods' uid range, resources and /dev/shm size
// (serve and inject alike) default to settings.Pod's defaults.
func TestSettingsPodFlags(t *testing.T) {
	root := NewRootCommand(IO{Stdin: &bytes.Buffer{}, Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, LookupEnv: func(string) (string, bool) { return "", false }}, Runners{})
	checked := 0
	for _, s := range settings.Pod {
		if s.InjectorFlag == "" {
			continue
		}
		for _, sub := range []string{"serve", "inject"} {
			cmd, _, err := root.Find([]string{sub})
			if err != nil {
				t.Fatal(err)
			}
			f := cmd.Flags().Lookup(s.InjectorFlag)
			switch {
			case f == nil:
				t.Errorf("pyexec-injector %s has no --%s", sub, s.InjectorFlag)
			case f.DefValue != s.Default:
				t.Errorf("pyexec-injector %s --%s defaults to %q; settings.Pod says %q", sub, s.InjectorFlag, f.DefValue, s.Default)
			}
			checked++
		}
	}
	if checked < 20 {
		t.Fatalf("checked %d flags, want the 10 of settings.Pod in serve and inject", checked)
	}
}
