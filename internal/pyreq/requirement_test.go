package pyreq

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseRequirement(t *testing.T) {
	tests := []struct {
		in     string
		name   string
		extras []string
		spec   string
		key    string
		str    string
	}{
		{"pandas>=2", "pandas", nil, ">=2", "pandas", "pandas>=2"},
		{"numpy == 1.26.*", "numpy", nil, "==1.26.*", "numpy", "numpy==1.26.*"},
		{"requests~=2.31", "requests", nil, "~=2.31", "requests", "requests~=2.31"},
		{"a!=1,<3", "a", nil, "!=1,<3", "a", "a!=1,<3"},
		{"Foo_Bar[extra1,extra2] (>=1.0)", "Foo_Bar", []string{"extra1", "extra2"}, ">=1.0", "foo-bar", "Foo_Bar[extra1,extra2]>=1.0"},
		{"Foo_Bar[a,b] (>=1.0, !=1.5)", "Foo_Bar", []string{"a", "b"}, ">=1.0,!=1.5", "foo-bar", "Foo_Bar[a,b]>=1.0,!=1.5"},
		{"  zope.interface  ", "zope.interface", nil, "", "zope-interface", "zope.interface"},
		{"name[ b , a ]  >= 1", "name", []string{"b", "a"}, ">=1", "name", "name[b,a]>=1"},
		{"name [x]>=1", "name", []string{"x"}, ">=1", "name", "name[x]>=1"},
		{"name[]", "name", nil, "", "name", "name"},
		{"name[ ]>=1", "name", nil, ">=1", "name", "name>=1"},
		{"A", "A", nil, "", "a", "A"},
		{"pkg(==1.0)", "pkg", nil, "==1.0", "pkg", "pkg==1.0"},
		{"pkg ( == 1.0 ) ", "pkg", nil, "==1.0", "pkg", "pkg==1.0"},
		{"pkg===1.0-Custom", "pkg", nil, "===1.0-Custom", "pkg", "pkg===1.0-Custom"},
		{"pkg>=1.0a", "pkg", nil, ">=1.0a0", "pkg", "pkg>=1.0a0"},
		{"pkg-2==1", "pkg-2", nil, "==1", "pkg-2", "pkg-2==1"},
		{"Django>=4.2,<5.0", "Django", nil, ">=4.2,<5.0", "django", "Django>=4.2,<5.0"},
	}
	for _, tt := range tests {
		r, err := ParseRequirement(tt.in)
		if err != nil {
			t.Errorf("ParseRequirement(%q): %v", tt.in, err)
			continue
		}
		if r.Name != tt.name || !reflect.DeepEqual(r.Extras, tt.extras) || r.Specifier.String() != tt.spec {
			t.Errorf("ParseRequirement(%q) = {%q %q %q}, want {%q %q %q}", tt.in, r.Name, r.Extras, r.Specifier, tt.name, tt.extras, tt.spec)
		}
		if got := r.Key(); got != tt.key {
			t.Errorf("ParseRequirement(%q).Key() = %q, want %q", tt.in, got, tt.key)
		}
		if got := r.String(); got != tt.str {
			t.Errorf("ParseRequirement(%q).String() = %q, want %q", tt.in, got, tt.str)
		}
	}
}

func TestParseRequirementContains(t *testing.T) {
	r, err := ParseRequirement("Foo_Bar[a] (>=1.0, !=1.5)")
	if err != nil {
		t.Fatal(err)
	}
	for v, want := range map[string]bool{"1.0": true, "1.5": false, "1.5.1": true, "0.9": false} {
		if got := r.Specifier.Contains(mustVersion(t, v)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", v, got, want)
		}
	}
}

func TestParseRequirementErrors(t *testing.T) {
	tests := []struct{ in, msg string }{
		{"", "empty requirement"},
		{"   ", "empty requirement"},
		{"pandas>>2", `invalid version specifier ">>2": unknown operator ">>"`},
		{"pandas>=2,", `invalid version specifier ">=2,": empty version clause`},
		{"pandas >=2 <3", `invalid version specifier ">=2 <3": unexpected whitespace`},
		{"numpy==1.26.*.*", `invalid version specifier "==1.26.*.*": invalid version`},
		{"pkg~=1", `invalid version specifier "~=1": ~= needs`},
		{"pkg; python_version<'3.8'", "environment markers (;) are not supported"},
		{"pkg>=1 ; sys_platform == 'win32'", "environment markers (;) are not supported"},
		{"pkg[x];os_name=='nt/x'", "environment markers (;) are not supported"},
		{"pkg @ https://example.com/pkg.whl", "direct URL references (@) are not supported"},
		{"pkg[extra]@ file:///tmp/x", "direct URL references (@) are not supported"},
		{"pkg@git+https://github.com/a/b ; python_version>'3'", "direct URL references (@) are not supported"},
		{"https://example.com/pkg.whl", "URLs are not supported"},
		{"git+https://github.com/a/b", "URLs are not supported"},
		{"./local/dir", "file paths are not supported"},
		{".", "file paths are not supported"},
		{"/abs/path", "file paths are not supported"},
		{"~/src/pkg", "file paths are not supported"},
		{`C:\wheels\pkg.whl`, "file paths are not supported"},
		{"dist/pkg-1.0.tar.gz", "file paths are not supported"},
		{"pkg-1.0-py3-none-any.whl", `file paths are not supported ("pkg-1.0-py3-none-any.whl" looks like an archive file)`},
		{"pkg-1.0.TAR.GZ", `file paths are not supported ("pkg-1.0.TAR.GZ" looks like an archive file)`},
		{"-r other.txt", "options such as -r, -c, -e or --index-url are not supported"},
		{"-e .", "options such as -r, -c, -e or --index-url are not supported"},
		{"--index-url https://pypi.org/simple", "options such as -r, -c, -e or --index-url are not supported"},
		{"pkg==1.0 --hash=sha256:abc", "per-requirement options such as --hash are not supported"},
		{`pkg>=1 \`, `line continuations (trailing \) are not supported`},
		{"_pkg", `invalid distribution name "_pkg"`},
		{"pkg-", `invalid distribution name "pkg-"`},
		{"pkg.>=1", `invalid distribution name "pkg."`},
		{">=1.0", "a requirement must start with a distribution name"},
		{"[extra]", "a requirement must start with a distribution name"},
		{"ñame", "a requirement must start with a distribution name"},
		{"pkg[a", "missing ] after extras"},
		{"pkg[a,]", `invalid extra name ""`},
		{"pkg[-a]", `invalid extra name "-a"`},
		{"pkg[a b]", `invalid extra name "a b"`},
		{"pkg (>=1", "missing ) after version specifier"},
		{"pkg (>=1) junk", `unexpected "junk" after )`},
		{"pkg ()", "empty parentheses: expected a version specifier"},
		{"pkg >=1)", "unbalanced parentheses"},
		{"pkg ((>=1))", `unexpected ")" after )`},
		{"pkg (>=1(()", "unbalanced parentheses"},
		{"pkg 1.0", `unexpected "1.0" after the name`},
		{"pkg#comment", `unexpected "#comment" after the name`},
		{"pkg>=1.0 extra", `invalid version specifier ">=1.0 extra": unexpected whitespace`},
	}
	for _, tt := range tests {
		r, err := ParseRequirement(tt.in)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("ParseRequirement(%q) = %v, %v; want *SyntaxError", tt.in, r, err)
			continue
		}
		if !strings.HasPrefix(se.Msg, tt.msg) {
			t.Errorf("ParseRequirement(%q) Msg = %q, want prefix %q", tt.in, se.Msg, tt.msg)
		}
		if se.Input != strings.TrimSpace(tt.in) || se.File != "" || se.Line != 0 {
			t.Errorf("ParseRequirement(%q) error = %#v, want Input %q and no location", tt.in, se, strings.TrimSpace(tt.in))
		}
	}
}

func TestRequirementErrorString(t *testing.T) {
	_, err := ParseRequirement("pandas>>2")
	want := `"pandas>>2": invalid version specifier ">>2": unknown operator ">>" (use one of ~= == != <= >= < > ===)`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}

func TestRequirementString(t *testing.T) {
	spec, err := ParseSpecifierSet(">=1, <3")
	if err != nil {
		t.Fatal(err)
	}
	r := Requirement{Name: "name", Extras: []string{"ex1", "ex2"}, Specifier: spec}
	if got, want := r.String(), "name[ex1,ex2]>=1,<3"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := (Requirement{Name: "x"}).String(); got != "x" {
		t.Errorf("String() = %q, want %q", got, "x")
	}
}

const goodRequirementsFile = "\ufeff# Project requirements\r\n" +
	"pandas>=2\r\n" +
	"\n" +
	"   # indented comment\n" +
	"numpy == 1.26.*   # pinned minor\n" +
	"  requests~=2.31  \n" +
	"Foo_Bar[a,b] (>=1.0, !=1.5)\t# tab before comment\n" +
	"zope.interface\n" +
	"\t\n" +
	"# trailing comment ending in a backslash \\\n" +
	"a!=1,<3"

func TestParseRequirementsFile(t *testing.T) {
	reqs, err := ParseRequirementsFile(strings.NewReader(goodRequirementsFile), "requirements.txt")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range reqs {
		got = append(got, r.String())
	}
	want := []string{
		"pandas>=2",
		"numpy==1.26.*",
		"requests~=2.31",
		"Foo_Bar[a,b]>=1.0,!=1.5",
		"zope.interface",
		"a!=1,<3",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseRequirementsFile = %q, want %q", got, want)
	}
}

func TestParseRequirementsFileEmpty(t *testing.T) {
	for _, content := range []string{"", "\n\n", "# only a comment\n"} {
		reqs, err := ParseRequirementsFile(strings.NewReader(content), "r.txt")
		if err != nil || len(reqs) != 0 {
			t.Errorf("ParseRequirementsFile(%q) = %v, %v; want no requirements", content, reqs, err)
		}
	}
}

func TestParseRequirementsFileErrors(t *testing.T) {
	const head = "# header\npandas>=2\n" // the bad line below is line 3
	tests := []struct {
		name    string
		content string
		line    int
		input   string
		msg     string
	}{
		{"include", head + "-r other.txt\n", 3, "-r other.txt", msgOptions},
		{"constraint", head + "-c constraints.txt\n", 3, "-c constraints.txt", msgOptions},
		{"editable", head + "-e .\n", 3, "-e .", msgOptions},
		{"index url", head + "--index-url https://pypi.org/simple\n", 3, "--index-url https://pypi.org/simple", msgOptions},
		{"hash", head + "numpy==1.26.4 --hash=sha256:abc\n", 3, "numpy==1.26.4 --hash=sha256:abc", msgLineOptions},
		{"continuation", head + "numpy>=1 \\\n  ,<2\n", 3, "numpy>=1 \\", msgContinuation},
		{"continuation before comment", head + "numpy>=1 # note \\\n", 3, "numpy>=1 # note \\", msgContinuation},
		{"marker", head + "numpy; python_version < '3.8'\n", 3, "numpy; python_version < '3.8'", msgMarkers},
		{"direct url", head + "numpy @ https://example.com/numpy.whl\n", 3, "numpy @ https://example.com/numpy.whl", msgDirectURL},
		{"url", head + "https://example.com/numpy.whl\n", 3, "https://example.com/numpy.whl", msgURL},
		{"path", head + "./wheels/numpy.whl\n", 3, "./wheels/numpy.whl", msgFilePath},
		{"bad specifier", head + "numpy>>2 # comment\n", 3, "numpy>>2", `invalid version specifier ">>2": unknown operator ">>" (use one of ~= == != <= >= < > ===)`},
		{"later line", head + "numpy\n\n# c\nscipy>=\n", 6, "scipy>=", `invalid version specifier ">=": missing version after ">="`},
		{"duplicate", head + "\nPandas==2.1\n", 4, "Pandas==2.1", `duplicate requirement for "pandas": already listed on line 2`},
		{"duplicate normalised", "foo_bar\nnumpy\nFoo.Bar>=1  # again\n", 3, "Foo.Bar>=1", `duplicate requirement for "foo-bar": already listed on line 1`},
		{"crlf", "numpy\r\nnumpy\r\n", 2, "numpy", `duplicate requirement for "numpy": already listed on line 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reqs, err := ParseRequirementsFile(strings.NewReader(tt.content), "requirements.txt")
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("got %v, %v; want *SyntaxError", reqs, err)
			}
			if reqs != nil {
				t.Errorf("got requirements %v along with the error", reqs)
			}
			want := SyntaxError{File: "requirements.txt", Line: tt.line, Input: tt.input, Msg: tt.msg}
			if *se != want {
				t.Errorf("error = %#v, want %#v", *se, want)
			}
		})
	}
}

func TestRequirementsFileErrorString(t *testing.T) {
	_, err := ParseRequirementsFile(strings.NewReader("pandas\nnumpy\n-r other.txt\n"), "requirements.txt")
	want := `requirements.txt:3: "-r other.txt": options such as -r, -c, -e or --index-url are not supported`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}

func TestParseRequirementsFileReadError(t *testing.T) {
	readErr := errors.New("disk on fire")
	_, err := ParseRequirementsFile(iotest.ErrReader(readErr), "requirements.txt")
	if !errors.Is(err, readErr) {
		t.Fatalf("error = %v, want it to wrap %v", err, readErr)
	}
	if got, want := err.Error(), "requirements.txt: disk on fire"; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
}

func TestSyntaxErrorString(t *testing.T) {
	tests := []struct {
		err  *SyntaxError
		want string
	}{
		{&SyntaxError{File: "r.txt", Line: 3, Input: "x", Msg: "bad"}, `r.txt:3: "x": bad`},
		{&SyntaxError{File: "r.txt", Input: "x", Msg: "bad"}, `r.txt: "x": bad`},
		{&SyntaxError{Line: 3, Input: "x", Msg: "bad"}, `line 3: "x": bad`},
		{&SyntaxError{Input: "pandas>>2", Msg: "bad"}, `"pandas>>2": bad`},
		{nil, "<nil>"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}
