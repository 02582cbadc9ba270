// Package docs checks the documentation as a reader meets it: the front page stays a front
// page, every relative link and anchor leads somewhere, and every page of docs/ is in its index.
package docs

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// repoRoot is the repository's top, from this package (test/docs).
const repoRoot = "../.."

// frontPageMax is the most README.md may hold, in bytes.
const frontPageMax = 12 << 10

// TestFrontPageIsShort keeps README.md a front page: what pyexec is, how to try it, install it
// and call it, and links. The full account lives in docs/.
func TestFrontPageIsShort(t *testing.T) {
	fi, err := os.Stat(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > frontPageMax {
		t.Errorf("README.md is %d bytes, %d over the front page's %d: keep it to what pyexec is, "+
			"trying it, installing it, calling it and links, and move the rest into a page of docs/ "+
			"(listed in docs/README.md)", fi.Size(), fi.Size()-frontPageMax, frontPageMax)
	}
}

// checkedFiles are the markdown files whose links TestLinksResolve follows, relative to the
// repository's top: the front page, the project's other pages, the chart's README and docs/.
func checkedFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"README.md", "SECURITY.md", "CHANGELOG.md", "charts/pyexec/README.md", "clients/python/README.md"}
	err := filepath.WalkDir(filepath.Join(repoRoot, "docs"), func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".md") {
			rel, err := filepath.Rel(repoRoot, path)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestLinksResolve follows every relative link of the checked files: [text](path),
// [text](path#anchor), [text](#anchor) and reference definitions ([name]: path). The path must
// exist, relative to the file that links it, and an anchor must be a heading of the target as
// GitHub names it. Links with a scheme (https:, mailto:) are not followed.
func TestLinksResolve(t *testing.T) {
	files := checkedFiles(t)
	anchors := map[string][]string{} // a markdown file's anchors, read once
	anchorsOf := func(path string) ([]string, error) {
		if a, ok := anchors[path]; ok {
			return a, nil
		}
		b, err := os.ReadFile(filepath.Join(repoRoot, path))
		if err != nil {
			return nil, err
		}
		anchors[path] = headingAnchors(string(b))
		return anchors[path], nil
	}
	checked := 0
	for _, file := range files {
		b, err := os.ReadFile(filepath.Join(repoRoot, file))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links(string(b)) {
			if isExternal(l.target) {
				continue
			}
			checked++
			where := fmt.Sprintf("%s:%d: link %q", file, l.line, l.target)
			p, frag, _ := strings.Cut(l.target, "#")
			target := file
			if p != "" {
				unescaped, err := url.PathUnescape(p)
				if err != nil {
					t.Errorf("%s: %v", where, err)
					continue
				}
				if strings.HasPrefix(unescaped, "/") {
					t.Errorf("%s: an absolute path; links are relative to the file", where)
					continue
				}
				target = filepath.ToSlash(filepath.Join(filepath.Dir(file), unescaped))
				if strings.HasPrefix(target, "../") {
					t.Errorf("%s: leads out of the repository (%s)", where, target)
					continue
				}
				if _, err := os.Stat(filepath.Join(repoRoot, target)); err != nil {
					t.Errorf("%s: %s does not exist", where, target)
					continue
				}
			}
			if frag == "" {
				continue
			}
			if !strings.HasSuffix(target, ".md") {
				t.Errorf("%s: an anchor into %s, which is not a markdown page", where, target)
				continue
			}
			a, err := anchorsOf(target)
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			if !slices.Contains(a, frag) {
				t.Errorf("%s: %s has no heading whose anchor is #%s%s", where, target, frag, nearest(frag, a))
			}
		}
	}
	if checked == 0 {
		t.Fatal("no relative link found: the extraction is broken")
	}
}

// TestEveryDocsPageIsIndexed: every page of docs/ and docs/reference/ is linked from the index,
// docs/README.md, so that a reader who starts there finds it.
func TestEveryDocsPageIsIndexed(t *testing.T) {
	index := "docs/README.md"
	b, err := os.ReadFile(filepath.Join(repoRoot, index))
	if err != nil {
		t.Fatal(err)
	}
	linked := map[string]bool{}
	for _, l := range links(string(b)) {
		if isExternal(l.target) {
			continue
		}
		p, _, _ := strings.Cut(l.target, "#")
		if u, err := url.PathUnescape(p); err == nil && u != "" {
			linked[filepath.ToSlash(filepath.Join("docs", u))] = true
		}
	}
	var pages []string
	for _, pattern := range []string{"docs/*.md", "docs/reference/*.md"} {
		m, err := filepath.Glob(filepath.Join(repoRoot, pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range m {
			rel, _ := filepath.Rel(repoRoot, p)
			pages = append(pages, filepath.ToSlash(rel))
		}
	}
	if len(pages) < 2 {
		t.Fatalf("found %d pages in docs/: the test looks in the wrong place", len(pages))
	}
	for _, p := range pages {
		if p != index && !linked[p] {
			t.Errorf("%s is not linked from %s: add a line for it to the index", p, index)
		}
	}
}

type link struct {
	target string
	line   int
}

var (
	// [text](target) or [text](target "title"); the text may hold brackets one deep, the
	// target parentheses one deep.
	inlineLink = regexp.MustCompile(`!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(([^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+"[^"]*")?\)`)
	definition = regexp.MustCompile(`(?m)^ {0,3}\[[^\]]+\]:\s+(\S+)(?:\s+"[^"]*")?\s*$`)
	scheme     = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
)

// links finds the links of a markdown text outside code (fenced blocks and code spans), with
// the line each starts on.
func links(text string) []link {
	text = blankCode(text)
	var out []link
	add := func(target string, at int) {
		out = append(out, link{target: target, line: 1 + strings.Count(text[:at], "\n")})
	}
	for _, m := range inlineLink.FindAllStringSubmatchIndex(text, -1) {
		add(text[m[4]:m[5]], m[0])
	}
	for _, m := range definition.FindAllStringSubmatchIndex(text, -1) {
		add(text[m[2]:m[3]], m[0])
	}
	return out
}

// blankCode replaces fenced code blocks and code spans with spaces, keeping every newline, so
// that offsets still give line numbers and code that looks like a link is not taken for one.
func blankCode(text string) string {
	lines := strings.SplitAfter(text, "\n")
	fence := ""
	for i, l := range lines {
		trimmed := strings.TrimLeft(l, " ")
		if fence == "" {
			if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
				fence = trimmed[:3]
				lines[i] = blank(l)
			}
			continue
		}
		if strings.HasPrefix(trimmed, fence) {
			fence = ""
		}
		lines[i] = blank(l)
	}
	return blankCodeSpans(strings.Join(lines, ""))
}

// blankCodeSpans blanks each code span: a run of n backquotes up to the next run of exactly n.
// A span may run over a line's end, but never over a blank line; a run without its closing
// run is text.
func blankCodeSpans(text string) string {
	b := []byte(text)
	run := func(i int) int { // the length of the run of backquotes at i
		n := 0
		for i+n < len(b) && b[i+n] == '`' {
			n++
		}
		return n
	}
	for i := 0; i < len(b); {
		n := run(i)
		if n == 0 {
			i++
			continue
		}
		end := -1
		for j := i + n; j < len(b); {
			if b[j] == '\n' && j+1 < len(b) && b[j+1] == '\n' {
				break
			}
			if m := run(j); m > 0 {
				if m == n {
					end = j + m
					break
				}
				j += m
				continue
			}
			j++
		}
		if end < 0 {
			i += n
			continue
		}
		copy(b[i:end], blank(string(b[i:end])))
		i = end
	}
	return string(b)
}

// blank is s with every byte but newlines a space: as long as s, with its lines.
func blank(s string) string {
	b := []byte(s)
	for i := range b {
		if b[i] != '\n' {
			b[i] = ' '
		}
	}
	return string(b)
}

func isExternal(target string) bool {
	return scheme.MatchString(target) || strings.HasPrefix(target, "//")
}

var (
	atxHeading  = regexp.MustCompile(`^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$`)
	headingLink = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
	htmlTag     = regexp.MustCompile(`<[^>]+>`)
)

// headingAnchors are the anchors GitHub gives a page's headings, in order: the heading's text
// in lower case, without punctuation but '-' and '_' (backquotes go too), spaces made '-'; a
// second heading of the same anchor gets -1, a third -2.
func headingAnchors(text string) []string {
	var out []string
	seen := map[string]int{}
	fence := ""
	for _, l := range strings.Split(text, "\n") {
		trimmed := strings.TrimLeft(l, " ")
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			continue
		}
		m := atxHeading.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		a := slug(m[2])
		if n, dup := seen[a]; dup {
			seen[a] = n + 1
			out = append(out, fmt.Sprintf("%s-%d", a, n+1))
			continue
		}
		seen[a] = 0
		out = append(out, a)
	}
	return out
}

// slug is GitHub's anchor of a heading's text.
func slug(heading string) string {
	heading = headingLink.ReplaceAllString(heading, "$1")
	heading = htmlTag.ReplaceAllString(heading, "")
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-', r == '_', unicode.IsLetter(r), unicode.IsDigit(r), unicode.IsNumber(r), unicode.IsMark(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// nearest names the anchor of a that shares the longest prefix with want, as a hint.
func nearest(want string, a []string) string {
	best, n := "", 0
	for _, s := range a {
		i := 0
		for i < len(s) && i < len(want) && s[i] == want[i] {
			i++
		}
		if i > n {
			best, n = s, i
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (nearest: #%s)", best)
}
