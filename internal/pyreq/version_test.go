package pyreq

import (
	"errors"
	"testing"
)

func mustVersion(t *testing.T, s string) Version {
	t.Helper()
	v, err := ParseVersion(s)
	if err != nil {
		t.Fatalf("ParseVersion(%q): %v", s, err)
	}
	return v
}

func TestParseVersion(t *testing.T) {
	tests := []struct{ in, want string }{
		{"1.0", "1.0"},
		{"1", "1"},
		{"1.0.0", "1.0.0"},
		{" 1.0 \n", "1.0"},
		{"\t2.31.0", "2.31.0"},
		{"v1.0", "1.0"},
		{"V1.0", "1.0"},
		{"01.002.0003", "1.2.3"},
		{"2012.04.01", "2012.4.1"},
		{"0!1.0", "1.0"},
		{"1!2.0", "1!2.0"},
		{"v1!2.0", "1!2.0"},
		// pre-releases
		{"1.0a1", "1.0a1"},
		{"1.0A1", "1.0a1"},
		{"1.0a", "1.0a0"},
		{"1.0alpha1", "1.0a1"},
		{"1.0.alpha.1", "1.0a1"},
		{"1.0-alpha-1", "1.0a1"},
		{"1.0_a_1", "1.0a1"},
		{"1.0-a1", "1.0a1"},
		{"1.0beta2", "1.0b2"},
		{"1.0B", "1.0b0"},
		{"1.0c1", "1.0rc1"},
		{"1.0pre1", "1.0rc1"},
		{"1.0preview1", "1.0rc1"},
		{"1.0RC1", "1.0rc1"},
		{"1.0.rc.01", "1.0rc1"},
		// post-releases
		{"1.0-1", "1.0.post1"},
		{"1.0post", "1.0.post0"},
		{"1.0.post1", "1.0.post1"},
		{"1.0-post-2", "1.0.post2"},
		{"1.0_post_2", "1.0.post2"},
		{"1.0post2", "1.0.post2"},
		{"1.0rev3", "1.0.post3"},
		{"1.0r4", "1.0.post4"},
		{"1.0-r", "1.0.post0"},
		{"1.0b2-1", "1.0b2.post1"},
		// dev-releases
		{"1.0dev", "1.0.dev0"},
		{"1.0.dev1", "1.0.dev1"},
		{"1.0-dev2", "1.0.dev2"},
		{"1.0_dev_3", "1.0.dev3"},
		{"1.0DEV4", "1.0.dev4"},
		// combinations and local versions
		{"1.0a1.post2.dev3", "1.0a1.post2.dev3"},
		{"1!2.0.post1.dev3+abc.5", "1!2.0.post1.dev3+abc.5"},
		{"1.0+ubuntu.1", "1.0+ubuntu.1"},
		{"1.0+ubuntu-1", "1.0+ubuntu.1"},
		{"1.0+Ubuntu_1.01", "1.0+ubuntu.1.1"},
		{"1.0+000", "1.0+0"},
		{"1.0+abc007", "1.0+abc007"},
		{"1.0+99999999999999999999999", "1.0+99999999999999999999999"},
	}
	for _, tt := range tests {
		v, err := ParseVersion(tt.in)
		if err != nil {
			t.Errorf("ParseVersion(%q): unexpected error %v", tt.in, err)
			continue
		}
		if got := v.String(); got != tt.want {
			t.Errorf("ParseVersion(%q).String() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseVersionErrors(t *testing.T) {
	tests := []struct{ in, msg string }{
		{"", "not a valid PEP 440 version"},
		{"   ", "not a valid PEP 440 version"},
		{"abc", "not a valid PEP 440 version"},
		{"1.0.", "not a valid PEP 440 version"},
		{".1", "not a valid PEP 440 version"},
		{"1..0", "not a valid PEP 440 version"},
		{"1.0+", "not a valid PEP 440 version"},
		{"1.0+abc.", "not a valid PEP 440 version"},
		{"1.0+a+b", "not a valid PEP 440 version"},
		{"1.0+ä", "not a valid PEP 440 version"},
		{"1.0-", "not a valid PEP 440 version"},
		{"1.0 a1", "not a valid PEP 440 version"},
		{"1.0.*", "not a valid PEP 440 version"},
		{"1.0ab", "not a valid PEP 440 version"},
		{"1.0a1a2", "not a valid PEP 440 version"},
		{"1.0-1-1", "not a valid PEP 440 version"},
		{"1.0post1post2", "not a valid PEP 440 version"},
		{"1.0dev1dev2", "not a valid PEP 440 version"},
		{"1.0.dev1.post1", "not a valid PEP 440 version"},
		{"1!", "not a valid PEP 440 version"},
		{"!1.0", "not a valid PEP 440 version"},
		{"vv1.0", "not a valid PEP 440 version"},
		{"1.0\u212a", "not a valid PEP 440 version"}, // Kelvin sign, not "k"
		{"99999999999999999999", "version number too large"},
		{"1.0a99999999999999999999", "version number too large"},
		{"99999999999999999999!1", "version number too large"},
	}
	for _, tt := range tests {
		v, err := ParseVersion(tt.in)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("ParseVersion(%q) = %v, %v; want *SyntaxError", tt.in, v, err)
			continue
		}
		if se.Input != tt.in || se.Msg != tt.msg || se.File != "" || se.Line != 0 {
			t.Errorf("ParseVersion(%q) error = %#v, want Input %q Msg %q", tt.in, se, tt.in, tt.msg)
		}
	}
}

func TestVersionErrorString(t *testing.T) {
	_, err := ParseVersion("1.x")
	if got, want := err.Error(), `"1.x": not a valid PEP 440 version`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// sortedVersions is in strictly increasing PEP 440 order.
var sortedVersions = []string{
	"0.1",
	"0.9.9",
	"1.0.dev456",
	"1.0a1",
	"1.0a2.dev456",
	"1.0a12.dev456",
	"1.0a12",
	"1.0b1.dev456",
	"1.0b2",
	"1.0b2.post345.dev456",
	"1.0b2.post345",
	"1.0rc1.dev456",
	"1.0rc1",
	"1.0",
	"1.0+abc.5",
	"1.0+abc.7",
	"1.0+5",
	"1.0+5.a",
	"1.0.post456.dev34",
	"1.0.post456",
	"1.0.15",
	"1.1.dev1",
	"1.1",
	"2.0.0a1",
	"2.0",
	"1!0.1",
	"1!1.0",
}

func TestVersionOrdering(t *testing.T) {
	versions := make([]Version, len(sortedVersions))
	for i, s := range sortedVersions {
		versions[i] = mustVersion(t, s)
	}
	for i := range versions {
		for j := range versions {
			want := cmpInt(i, j)
			if got := versions[i].Compare(versions[j]); got != want {
				t.Errorf("Compare(%s, %s) = %d, want %d", sortedVersions[i], sortedVersions[j], got, want)
			}
		}
	}
}

func TestVersionEquality(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.0", "1.0.0", 0},
		{"1.0", "1.0.0.0.0", 0},
		{"1", "1.0", 0},
		{"1.0.0.1", "1.0", 1},
		{"1.0a", "1.0a0", 0},
		{"1.0-1", "1.0.post1", 0},
		{"v1.0", "1.0", 0},
		{"0!1.0", "1.0", 0},
		{"1.0+ABC", "1.0+abc", 0},
		{"1.0+abc-1", "1.0+abc.1", 0},
		{"1.0+01", "1.0+1", 0},
		{"1.0+abc", "1.0+abd", -1},
		{"1.0+10", "1.0+9", 1},
		{"1.0+a", "1.0+1", -1},
		{"1.0.0+1", "1.0+1", 0},
		{"1.0.dev1", "1.0a1", -1},
		{"1.0.post1.dev1", "1.0", 1},
		{"1.0a1.post1", "1.0a2.dev1", -1},
		{"1.0rc1", "1.0c1", 0},
		{"1.0", "1.0.dev0", 1},
		{"1.10", "1.9", 1},
		{"2!0.1", "1!99", 1},
	}
	for _, tt := range tests {
		a, b := mustVersion(t, tt.a), mustVersion(t, tt.b)
		if got := a.Compare(b); got != tt.want {
			t.Errorf("Compare(%s, %s) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := b.Compare(a); got != -tt.want {
			t.Errorf("Compare(%s, %s) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}

func TestVersionIsPrerelease(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"1.0", false},
		{"1.0a1", true},
		{"1.0b1", true},
		{"1.0rc1", true},
		{"1.0.dev1", true},
		{"1.0.post1.dev1", true},
		{"1.0.post1", false},
		{"1.0+dev", false},
	}
	for _, tt := range tests {
		if got := mustVersion(t, tt.in).IsPrerelease(); got != tt.want {
			t.Errorf("ParseVersion(%q).IsPrerelease() = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestVersionPublic(t *testing.T) {
	tests := []struct{ in, want string }{
		{"1.0", "1.0"},
		{"1.0+abc.5", "1.0"},
		{"1!2.0rc1.post2.dev3+Ubuntu-1", "1!2.0rc1.post2.dev3"},
	}
	for _, tt := range tests {
		v := mustVersion(t, tt.in)
		if got := v.Public().String(); got != tt.want {
			t.Errorf("ParseVersion(%q).Public() = %q, want %q", tt.in, got, tt.want)
		}
		if v.String() != mustVersion(t, tt.in).String() {
			t.Errorf("Public() modified %q", tt.in)
		}
	}
}

func TestZeroVersion(t *testing.T) {
	var v Version
	if got := v.String(); got != "0" {
		t.Errorf("zero Version String() = %q, want %q", got, "0")
	}
	if got := v.Compare(mustVersion(t, "0.0")); got != 0 {
		t.Errorf("zero Version Compare(0.0) = %d, want 0", got)
	}
}
