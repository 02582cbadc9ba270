package pyreq

import (
	"errors"
	"strings"
	"testing"
)

func TestSpecifierContains(t *testing.T) {
	tests := []struct {
		spec, version string
		want          bool
	}{
		// == : padding, local label ignored unless the specifier has one
		{"==1.0", "1.0", true},
		{"==1.0", "1.0.0", true},
		{"==1.0.0", "1", true},
		{"==v1.0", "1.0", true},
		{"==1.0", "1.0.1", false},
		{"==1.0", "1.0+local", true},
		{"==1.0", "1.0a1", false},
		{"==1.0", "1.0.dev0", false},
		{"==1.0", "1.0.post1", false},
		{"==1.0a1", "1.0a1", true},
		{"==1.0a1", "1.0alpha1", true},
		{"==1!1.0", "1.0", false},
		{"==1.0+local", "1.0+local", true},
		{"==1.0+local", "1.0.0+LOCAL", true},
		{"==1.0+local", "1.0", false},
		{"==1.0+local", "1.0+other", false},
		// ==X.* : prefix matching
		{"==1.*", "1.0", true},
		{"==1.*", "1.9.9", true},
		{"==1.*", "2.0", false},
		{"==1.*", "0.9", false},
		{"==1.0.*", "1", true},
		{"==1.0.0.*", "1.0", true},
		{"==1.1.*", "1.10", false},
		{"==1.1.*", "1.1a1", true},
		{"==1.1.*", "1.1.dev1", true},
		{"==1.1.*", "1.1.post1", true},
		{"==1.1.*", "1.1.3+local", true},
		{"==1.1.*", "1!1.1", false},
		{"==1!1.*", "1!1.5", true},
		{"==1!1.*", "1.5", false},
		{"==1.26.*", "1.26.4", true},
		{"==1.26.*", "1.27.0", false},
		// != : inverse of ==
		{"!=1.0", "1.0.0", false},
		{"!=1.0", "1.0+local", false},
		{"!=1.0", "1.1", true},
		{"!=1.0", "1.0a1", true},
		{"!=1.0+local", "1.0", true},
		{"!=1.0+local", "1.0+local", false},
		{"!=1.1.*", "1.1.5", false},
		{"!=1.1.*", "1.1rc1", false},
		{"!=1.1.*", "1.2", true},
		{"!=1.1.*", "1.10", true},
		// ~= : >=V plus ==prefix.*
		{"~=2.2", "2.2", true},
		{"~=2.2", "2.9", true},
		{"~=2.2", "2.2.post1", true},
		{"~=2.2", "2.3a1", true},
		{"~=2.2", "2.2rc1", false},
		{"~=2.2", "2.1", false},
		{"~=2.2", "3.0", false},
		{"~=2.2", "3.0.dev0", false},
		{"~=2.2.0", "2.2.9", true},
		{"~=2.2.0", "2.3", false},
		{"~=2.0", "2", true},
		{"~=1.4.5a4", "1.4.5a4", true},
		{"~=1.4.5a4", "1.4.5", true},
		{"~=1.4.5a4", "1.4.9", true},
		{"~=1.4.5a4", "1.4.5a3", false},
		{"~=1.4.5a4", "1.5.0", false},
		{"~=2.2.post3", "2.2.post3", true},
		{"~=2.2.post3", "2.9", true},
		{"~=2.2.post3", "2.2.post2", false},
		{"~=2.2.post3", "3.0", false},
		{"~=1!2.2", "1!2.5", true},
		{"~=1!2.2", "2.5", false},
		{"~=2.31", "2.31.0+local", true},
		{"~=2.31", "2.32.3", true},
		// <= and >= : plain comparison, candidate's local dropped
		{">=2", "2.0", true},
		{">=2", "1.9", false},
		{">=2", "2.0a1", false},
		{">=2", "2.0.post1", true},
		{">=2", "3.0rc1", true},
		{">=2", "2.0+local", true},
		{">=2.0a1", "2.0a1", true},
		{"<=2.0", "2.0", true},
		{"<=2.0", "2.0+local", true},
		{"<=2.0", "2.0.post1", false},
		{"<=2.0", "2.0.dev1", true},
		{"<=2.0", "2.1", false},
		// < : no pre-releases of V's release unless V is a pre-release
		{"<3", "2.9", true},
		{"<3", "2.9.dev0", true},
		{"<3", "3.0", false},
		{"<3", "3.0a1", false},
		{"<3", "3.0.dev0", false},
		{"<3", "3.0+local", false},
		{"<3", "2.9+local", true},
		{"<3.0rc1", "3.0a1", true},
		{"<3.0rc1", "3.0.dev1", true},
		{"<3.0rc1", "3.0rc1", false},
		{"<3.0.post1", "3.0", true},
		{"<3.0.post1", "3.0a1", false},
		{"<1!3", "3.0a1", true},
		// > : no post-releases or local versions of V unless V is a post-release
		{">1.7", "1.7.1", true},
		{">1.7", "1.8.dev1", true},
		{">1.7", "1.7", false},
		{">1.7", "1.6", false},
		{">1.7", "1.7.post2", false},
		{">1.7", "1.7.0.post2", false},
		{">1.7", "1.7.post1.dev1", false},
		{">1.7", "1.7+local", false},
		{">1.7", "1.7.1+local", true},
		{">1.7.post2", "1.7.post3", true},
		{">1.7.post2", "1.7.0.post3", true},
		{">1.7.post2", "1.7.1", true},
		{">1.7.post2", "1.7.post2", false},
		{">1.7.post2", "1.7.post2+local", false},
		{">1.7a1", "1.7a1.post1", false},
		{">1.7a1", "1.7a2", true},
		{">1.7a1", "1.7", true},
		{">1.7a1", "1.7.post1", true},
		{">1.7.dev1", "1.7", true},
		// === : case-insensitive equality of the strings as written
		{"===1.0", "1.0", true},
		{"===1.0", " 1.0 ", true},
		{"===1.0", "1.0.0", false},
		{"===1.0", "v1.0", false},
		{"===1.0+local", "1.0+LOCAL", true},
		{"===1.0a1", "1.0A1", true},
		{"===1.0a1", "1.0alpha1", false},
		{"===foobar", "1.0", false},
		// sets
		{"", "1.0", true},
		{"", "0.0.dev0", true},
		{">=1,<2", "1.5", true},
		{">=1,<2", "2.0", false},
		{">=1,<2", "0.9", false},
		{"!=1,<3", "1.0", false},
		{"!=1,<3", "2.5", true},
		{" >= 1.0 , != 1.5 ", "1.5", false},
		{" >= 1.0 , != 1.5 ", "1.6", true},
		{">=1.0,!=1.5.*,<2", "1.5.3", false},
	}
	for _, tt := range tests {
		set, err := ParseSpecifierSet(tt.spec)
		if err != nil {
			t.Errorf("ParseSpecifierSet(%q): %v", tt.spec, err)
			continue
		}
		v := mustVersion(t, tt.version)
		if got := set.Contains(v); got != tt.want {
			t.Errorf("ParseSpecifierSet(%q).Contains(%q) = %v, want %v", tt.spec, tt.version, got, tt.want)
		}
	}
}

func TestParseSpecifierSet(t *testing.T) {
	tests := []struct {
		in, want string
		empty    bool
	}{
		{"", "", true},
		{"   ", "", true},
		{">=1.0", ">=1.0", false},
		{" >= 1.0 , != 1.5 ", ">=1.0,!=1.5", false},
		{"<3,>=1", "<3,>=1", false},
		{"==1.26.*", "==1.26.*", false},
		{"== v01.02.*", "==1.2.*", false},
		{"!=1!2.*", "!=1!2.*", false},
		{"~=2.31", "~=2.31", false},
		{"~=1.4.5a4", "~=1.4.5a4", false},
		{"==1.0+ABC-1", "==1.0+abc.1", false},
		{"!=1.0+local", "!=1.0+local", false},
		{"===Foo-1.0", "===Foo-1.0", false},
		{">1.0ALPHA", ">1.0a0", false},
		{"<1!2", "<1!2", false},
		{"<=2.0-1", "<=2.0.post1", false},
		{"\t>=1\t,\t<2\t", ">=1,<2", false},
	}
	for _, tt := range tests {
		set, err := ParseSpecifierSet(tt.in)
		if err != nil {
			t.Errorf("ParseSpecifierSet(%q): %v", tt.in, err)
			continue
		}
		if got := set.String(); got != tt.want {
			t.Errorf("ParseSpecifierSet(%q).String() = %q, want %q", tt.in, got, tt.want)
		}
		if got := set.Empty(); got != tt.empty {
			t.Errorf("ParseSpecifierSet(%q).Empty() = %v, want %v", tt.in, got, tt.empty)
		}
	}
	var zero SpecifierSet
	if !zero.Empty() || zero.String() != "" || !zero.Contains(mustVersion(t, "1.0")) {
		t.Errorf("zero SpecifierSet should be empty and match everything")
	}
}

func TestParseSpecifierSetErrors(t *testing.T) {
	tests := []struct {
		in     string
		clause string // expected SyntaxError.Input
		msg    string // expected start of SyntaxError.Msg
	}{
		{">>2", ">>2", `unknown operator ">>"`},
		{">=1, >>2", ">>2", `unknown operator ">>"`},
		{"=>2", "=>2", `unknown operator "=>"`},
		{"====1", "====1", `unknown operator "===="`},
		{"~2", "~2", `unknown operator "~"`},
		{"1.0", "1.0", "missing comparison operator"},
		{">=1,2", "2", "missing comparison operator"},
		{">=", ">=", `missing version after ">="`},
		{"===", "===", `missing version after "==="`},
		{">=1,", ">=1,", "empty version clause"},
		{",>=1", ",>=1", "empty version clause"},
		{">=1,,<2", ">=1,,<2", "empty version clause"},
		{">=1 <2", ">=1 <2", "unexpected whitespace inside version"},
		{"=== a b", "=== a b", "unexpected whitespace inside version"},
		{"===a;b", "===a;b", "invalid character"},
		{">=foo", ">=foo", `invalid version "foo": not a valid PEP 440 version`},
		{"==99999999999999999999", "==99999999999999999999", `invalid version "99999999999999999999": version number too large`},
		{"==*", "==*", "invalid version"},
		{"==1.*.*", "==1.*.*", "invalid version"},
		{"==1.0 .*", "==1.0 .*", "unexpected whitespace"},
		{">=1.*", ">=1.*", "wildcard (.*) is only allowed with == and !="},
		{"<=1.0.*", "<=1.0.*", "wildcard (.*) is only allowed with == and !="},
		{">1.*", ">1.*", "wildcard (.*) is only allowed"},
		{"<1.*", "<1.*", "wildcard (.*) is only allowed"},
		{"~=1.0.*", "~=1.0.*", "wildcard (.*) is only allowed"},
		{"==1.0a1.*", "==1.0a1.*", "wildcard (.*) must follow a plain release number"},
		{"==1.0.post1.*", "==1.0.post1.*", "wildcard (.*) must follow a plain release number"},
		{"!=1.0.dev1.*", "!=1.0.dev1.*", "wildcard (.*) must follow a plain release number"},
		{"==1.0+local.*", "==1.0+local.*", "wildcard (.*) must follow a plain release number"},
		{"~=1", "~=1", "~= needs a version with at least two release segments"},
		{"~=1!1", "~=1!1", "~= needs a version with at least two release segments"},
		{"~=1a1", "~=1a1", "~= needs"},
		{"<1.0+local", "<1.0+local", "local version label (+local) is not allowed with <"},
		{">1.0+local", ">1.0+local", "local version label (+local) is not allowed with >"},
		{"<=1.0+local", "<=1.0+local", "local version label"},
		{">=1.0+local", ">=1.0+local", "local version label"},
		{"~=1.0+local", "~=1.0+local", "local version label (+local) is not allowed with ~="},
	}
	for _, tt := range tests {
		set, err := ParseSpecifierSet(tt.in)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("ParseSpecifierSet(%q) = %q, %v; want *SyntaxError", tt.in, set, err)
			continue
		}
		if se.Input != tt.clause || !strings.HasPrefix(se.Msg, tt.msg) {
			t.Errorf("ParseSpecifierSet(%q) error: Input %q Msg %q; want Input %q Msg starting %q", tt.in, se.Input, se.Msg, tt.clause, tt.msg)
		}
	}
}

func TestSpecifierErrorString(t *testing.T) {
	_, err := ParseSpecifierSet(">=1, >>2")
	want := `">>2": unknown operator ">>" (use one of ~= == != <= >= < > ===)`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}
