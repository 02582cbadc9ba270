package pyreq

import "testing"

func TestNormalizeName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"pandas", "pandas"},
		{"Foo_Bar", "foo-bar"},
		{"FOO", "foo"},
		{"zope.interface", "zope-interface"},
		{"a--b", "a-b"},
		{"a._-b", "a-b"},
		{"A.B_C-D", "a-b-c-d"},
		{"-a_", "-a-"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := NormalizeName(tt.in); got != tt.want {
			t.Errorf("NormalizeName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"a", true},
		{"Z", true},
		{"9", true},
		{"pandas", true},
		{"Foo_Bar", true},
		{"zope.interface", true},
		{"a-._b", true},
		{"", false},
		{"-a", false},
		{"a-", false},
		{"_a", false},
		{"a.", false},
		{".", false},
		{"a b", false},
		{"a+b", false},
		{"ñame", false},
		{"a/b", false},
	}
	for _, tt := range tests {
		if got := ValidName(tt.in); got != tt.want {
			t.Errorf("ValidName(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
