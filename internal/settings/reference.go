package settings

import (
	"fmt"
	"strings"
	"time"
)

// ReferenceServe is docs/reference/serve.md: every setting of `pyexec serve`, by group, with
// its variable, default, bounds and, where the injector sets it, its annotation.
func ReferenceServe() []byte {
	var b strings.Builder
	b.WriteString(generatedHeader("pyexec serve: every flag", "internal/settings (Serve)"))
	b.WriteString("Each flag can also be set by its variable (the flag wins). Lists take commas, or one item per line\n" +
		"in the variable for a repeatable flag. `pyexec init` takes the flags of *Python and packages* too.\n" +
		"Annotations of a pod set the flags of its injected sidecar: see [annotations](annotations.md).\n")
	for _, g := range Groups {
		fmt.Fprintf(&b, "\n## %s\n\n", g)
		b.WriteString("| Flag | Variable | Default | Takes | Annotation | What it does |\n|---|---|---|---|---|---|\n")
		for _, s := range Serve {
			if s.Group != g {
				continue
			}
			fmt.Fprintf(&b, "| `--%s` | `%s` | %s | %s | %s | %s |\n", s.Flag, s.Env(), s.defaultCell(), s.takes(),
				code(s.Annotation), cell(s.Doc))
		}
	}
	return []byte(b.String())
}

// defaultCell is the default as the reference shows it.
func (s Setting) defaultCell() string {
	switch {
	case s.DefaultDoc != "":
		return cell(s.DefaultDoc)
	case s.Default == nil || s.Default == "":
		return "none"
	}
	return "`" + FormatValue(s.Default) + "`"
}

// takes says what values the setting takes, for the reference.
func (s Setting) takes() string {
	var kind string
	switch s.Default.(type) {
	case time.Duration:
		kind = "duration"
	case bool:
		kind = "`true`, `false`"
	case int, int64:
		kind = "integer"
	case string:
		kind = "string"
	default:
		if s.Repeatable {
			kind = "repeatable"
		} else {
			kind = "list"
		}
	}
	if s.Min != nil || s.Max != nil {
		kind += ", " + s.Wanted()
	}
	return kind
}

// FormatValue writes a setting's value as its flag, the chart and the reference write it.
func FormatValue(v any) string {
	if d, ok := v.(time.Duration); ok {
		return formatDuration(d)
	}
	return fmt.Sprint(v)
}

// formatDuration writes whole minutes and hours short (10m, 1h), as a user would.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// generatedHeader starts a generated reference page.
func generatedHeader(title, source string) string {
	return "# " + title + "\n\n<!-- Generated from " + source + " by `make reference`; do not edit. -->\n\n"
}

// code is s in backquotes, or a dash when empty.
func code(s string) string {
	if s == "" {
		return "–"
	}
	return "`" + s + "`"
}

// cell escapes s for a Markdown table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
