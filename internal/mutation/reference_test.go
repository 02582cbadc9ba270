package mutation

import (
	"flag"
	"fmt"
	"go/ast"
	goparser "go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pyexec/pyexec/internal/settings"
)

// updateReference rewrites docs/reference/annotations.md: go test ./internal/mutation -update-reference
// (make reference).
var updateReference = flag.Bool("update-reference", false, "rewrite docs/reference/annotations.md")

// TestReferenceAnnotations generates docs/reference/annotations.md from the doc comment of
// each annotation's constant here, the sidecar settings (internal/settings) each one sets,
// and the chart values; it fails when the file drifts from them.
func TestReferenceAnnotations(t *testing.T) {
	docs := constDocs(t, "annotations.go", "labels.go")
	var b strings.Builder
	b.WriteString("# Pod annotations and chart values\n\n<!-- Generated from internal/mutation (the annotations' doc comments) and internal/settings by `make reference`; do not edit. -->\n\n")
	b.WriteString("A pod opts in with the label `" + LabelInject + ": \"true\"`; its annotations then set up what is injected. " +
		"Every annotation is optional, and an empty value counts as absent. A bad value denies the pod (every bad annotation is " +
		"named); an unknown `pyexec.dev/` annotation is a warning. The sidecar's flags are in [serve](serve.md).\n\n")
	b.WriteString("| Annotation | Sets | What it does |\n|---|---|---|\n")
	for _, key := range Annotations {
		doc, ok := docs[key]
		if !ok {
			t.Errorf("annotation %s has no documented constant", key)
			continue
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", key, sets(key), strings.ReplaceAll(doc, "|", `\|`))
	}
	b.WriteString("\n## Chart values that give the annotations' defaults\n\n")
	b.WriteString("| Value | Default | Injector flag | Annotation |\n|---|---|---|---|\n")
	for _, s := range settings.Serve {
		if s.ChartValue != "" {
			fmt.Fprintf(&b, "| `%s` | `%s` | `--%s` | `%s` |\n", s.ChartValue, settings.FormatValue(s.InjectorDefault()), s.InjectorFlag, s.Annotation)
		}
	}
	for _, s := range settings.Pod {
		if s.ChartValue != "" {
			def, ann := "none", "–"
			if s.Default != "" {
				def = "`" + s.Default + "`"
			}
			if s.Annotation != "" {
				ann = "`" + s.Annotation + "`"
			}
			fmt.Fprintf(&b, "| `%s` | %s | `--%s` | %s |\n", s.ChartValue, def, s.InjectorFlag, ann)
		}
	}
	path := filepath.Join("..", "..", "docs", "reference", "annotations.md")
	if *updateReference {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if want, err := os.ReadFile(path); err != nil || string(want) != b.String() {
		t.Errorf("%s is not what the annotations generate (%v): run make reference", path, err)
	}
}

// sets says what an annotation sets: the sidecar's flag and variable, or the injector's flag
// whose default it overrides.
func sets(key string) string {
	for _, s := range settings.Serve {
		if s.Annotation == key {
			return "`--" + s.Flag + "` (`" + s.Env() + "`)"
		}
	}
	for _, s := range settings.Pod {
		if s.Annotation == key && s.InjectorFlag != "" {
			return "the injector's `--" + s.InjectorFlag + "`"
		}
	}
	return "–"
}

// constDocs are the doc comments of the string constants of the given files of this package,
// by value, each on one line.
func constDocs(t *testing.T, files ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, name := range files {
		if _, err := os.Stat(name); os.IsNotExist(err) {
			continue
		}
		f, err := goparser.ParseFile(token.NewFileSet(), name, nil, goparser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				if vs.Doc == nil || len(vs.Values) != 1 {
					continue
				}
				lit, ok := vs.Values[0].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				v, _ := strconv.Unquote(lit.Value)
				out[v] = sentence(strings.Fields(vs.Doc.Text()))
			}
		}
	}
	return out
}

// sentence is a doc comment's words without the constant's name it starts with: "AnnotationX
// is the image" reads "The image", "AnnotationX lists" reads "Lists".
func sentence(words []string) string {
	if len(words) > 1 && (strings.HasPrefix(words[0], "Annotation") || strings.HasPrefix(words[0], "Label")) {
		words = words[1:]
		if len(words) > 1 && words[0] == "is" {
			words = words[1:]
		}
		words[0] = strings.ToUpper(words[0][:1]) + words[0][1:]
	}
	return strings.Join(words, " ")
}
