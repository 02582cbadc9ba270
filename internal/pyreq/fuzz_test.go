package pyreq

import "testing"

func FuzzParseVersion(f *testing.F) {
	for _, s := range sortedVersions {
		f.Add(s)
	}
	for _, s := range []string{"v1.0", " 1.0-1 ", "1.0_A_1", "1.0+Ubuntu-01", "1!2.0.post1.dev3+abc.5", "1.0-r-dev", "x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVersion(s)
		if err != nil {
			return
		}
		norm := v.String()
		again, err := ParseVersion(norm)
		if err != nil {
			t.Fatalf("ParseVersion(%q) = %q, which does not re-parse: %v", s, norm, err)
		}
		if again.Compare(v) != 0 || v.Compare(again) != 0 {
			t.Fatalf("ParseVersion(%q) = %q, which re-parses to an unequal version", s, norm)
		}
		if again.String() != norm {
			t.Fatalf("ParseVersion(%q) = %q, which re-parses to %q", s, norm, again.String())
		}
		if v.Public().Compare(v) > 0 {
			t.Fatalf("Public() of %q sorts after it", s)
		}
		_ = v.IsPrerelease()
	})
}

func FuzzParseRequirement(f *testing.F) {
	for _, s := range []string{
		"pandas>=2", "numpy == 1.26.*", "requests~=2.31", "a!=1,<3",
		"Foo_Bar[extra1,extra2] (>=1.0)", "pkg===1.0", "pkg; os_name=='nt'",
		"pkg @ https://x", "-r x", "pkg (>=1", "pkg[a,]", "p>1.0+l",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRequirement(s)
		if err != nil {
			if _, ok := err.(*SyntaxError); !ok {
				t.Fatalf("ParseRequirement(%q) error %v is not a *SyntaxError", s, err)
			}
			_ = err.Error()
			return
		}
		canon := r.String()
		again, err := ParseRequirement(canon)
		if err != nil {
			t.Fatalf("ParseRequirement(%q) = %q, which does not re-parse: %v", s, canon, err)
		}
		if again.String() != canon || again.Key() != r.Key() {
			t.Fatalf("ParseRequirement(%q) = %q, which re-parses to %q", s, canon, again.String())
		}
		_ = r.Specifier.Contains(Version{})
	})
}
