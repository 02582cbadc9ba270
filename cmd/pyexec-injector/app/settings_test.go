package app

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/pyexec/pyexec/pkg/settings"
)

// The injector's flags that give the annotations' defaults (serve and inject alike) default to
// the sidecar's own settings, from pkg/settings.
func TestSettingsInjectorFlags(t *testing.T) {
	root := NewRootCommand(IO{Stdin: &bytes.Buffer{}, Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, LookupEnv: func(string) (string, bool) { return "", false }}, Runners{})
	checked := 0
	for _, s := range settings.Sidecar {
		if s.InjectorFlag == "" {
			continue
		}
		want := fmt.Sprint(s.Default)
		if d, ok := s.Default.(time.Duration); ok {
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
				t.Errorf("pyexec-injector %s --%s defaults to %q; the sidecar's default is %q", sub, s.InjectorFlag, f.DefValue, want)
			}
			checked++
		}
	}
	if checked == 0 {
		t.Fatal("no setting has an injector flag")
	}
}
