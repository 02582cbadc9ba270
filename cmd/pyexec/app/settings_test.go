package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/pyexec/pyexec/internal/mutation"
	"github.com/pyexec/pyexec/internal/settings"
)

// repoRoot is the repository's top, from this package (cmd/pyexec/app).
const repoRoot = "../../.."

// knownSettingGaps are checks of TestSettingsAgree that fail today and are left to a change of
// the file they concern (docs/cli.md and docs/kubernetes.md are edited by hand). Each key is a check's name as the test
// reports it; the test fails when a listed gap is closed, so that the list stays true.
var knownSettingGaps = map[string]string{}

// TestSettingsAgree checks every setting of internal/settings against the places that repeat it:
// the serve flag (name, variable, default, bounds), the annotation parser and what the
// injector writes, the injector's flag, the chart's values.yaml, values.schema.json and
// deployment, and the tables of the docs: pyexec serve's flags in docs/cli.md, the annotations,
// pyexec-injector's flags and the chart's values in docs/kubernetes.md.
func TestSettingsAgree(t *testing.T) {
	serve := serveCommandFlags(t)
	pod := parseAnnotations(t, nil)
	values := readYAML(t, filepath.Join(repoRoot, "charts/pyexec/values.yaml"))
	schema := readYAML(t, filepath.Join(repoRoot, "charts/pyexec/values.schema.json"))
	deployment := readFile(t, filepath.Join(repoRoot, "charts/pyexec/templates/injector/deployment.yaml"))
	cliDoc := readFile(t, filepath.Join(repoRoot, "docs/cli.md"))
	kubeDoc := readFile(t, filepath.Join(repoRoot, "docs/kubernetes.md"))

	gaps := map[string]bool{}
	check := func(name string, ok bool, format string, args ...any) {
		t.Helper()
		if _, known := knownSettingGaps[name]; known {
			gaps[name] = !ok
			return
		}
		if !ok {
			t.Errorf("%s: "+format, append([]any{name}, args...)...)
		}
	}

	for _, s := range settings.Shared() {
		// The serve flag: it exists, has the setting's default and variable.
		f := serve.Lookup(s.Flag)
		check(s.Flag+": serve flag", f != nil, "pyexec serve has no --%s", s.Flag)
		if f == nil {
			continue
		}
		check(s.Flag+": env", s.Env() == EnvName(s.Flag), "settings say %s, serve binds %s", s.Env(), EnvName(s.Flag))
		if s.Default != nil {
			check(s.Flag+": serve default", f.DefValue == flagValue(s.Default), "--%s defaults to %q; settings say %q", s.Flag, f.DefValue, flagValue(s.Default))
		}

		// serve takes the bounds and refuses what is past them, all else at its defaults.
		for _, b := range bounds(s.Min, s.Max) {
			err := serveError(t, "--"+s.Flag, b.value)
			check(fmt.Sprintf("%s: serve %s %s", s.Flag, b.what, b.value), (err == nil) == b.ok, "serve --%s %s: %v; want accepted %t", s.Flag, b.value, err, b.ok)
		}

		if s.Annotation != "" {
			// What the injector writes for a pod without the annotation (the parser's default)
			// is the sidecar's default, or nothing, so the sidecar's own default applies.
			env, set := sidecarEnv(pod, s.Env())
			if set {
				check(s.Flag+": annotation default", s.Default != nil && sameValue(s.Default, env),
					"a pod without %s gets %s=%q; the sidecar's default is %v", s.Annotation, s.Env(), env, s.Default)
			}
			// The annotation takes the bounds and refuses what is past them.
			for _, b := range bounds(s.AnnotationBounds()) {
				_, err := mutation.ParseConfig(annotatedPod(map[string]string{s.Annotation: b.value}), mutation.Defaults{Image: "pyexec"})
				check(fmt.Sprintf("%s: annotation %s %s", s.Flag, b.what, b.value), (err == nil) == b.ok,
					"%s=%s: %v; want accepted %t", s.Annotation, b.value, err, b.ok)
			}
			check(s.Flag+": docs annotation row", tableRow(kubeDoc, "| `"+s.Annotation+"`", s.Default),
				"docs/kubernetes.md has no annotation row starting with `%s` that shows the default `%s`", s.Annotation, docValue(s.Default))
		}

		check(s.Flag+": docs serve row", tableRowWith(cliDoc, "`--"+s.Flag+"`", s.Env(), s.Default),
			"docs/cli.md has no serve table row with `--%s`, `%s` and the default `%s`", s.Flag, s.Env(), docValue(s.Default))

		if s.InjectorFlag != "" {
			check(s.Flag+": docs injector row", tableRowWith(kubeDoc, "`--"+s.InjectorFlag+"`", "PYEXEC_INJECTOR_"+strings.TrimPrefix(s.Env(), settings.EnvPrefix), nil),
				"docs/kubernetes.md's pyexec-injector table has no row for --%s", s.InjectorFlag)
		}

		if s.ChartValue != "" {
			want := s.Default
			if s.ChartDefault != nil {
				want = s.ChartDefault
			}
			v, ok := lookup(values, s.ChartValue)
			check(s.Flag+": chart default", ok && sameValue(want, v), "values.yaml %s is %v; want %v", s.ChartValue, v, want)
			prop, ok := lookup(schema, "properties."+strings.ReplaceAll(s.ChartValue, ".", ".properties."))
			check(s.Flag+": chart schema", ok, "values.schema.json has no %s", s.ChartValue)
			if p, isMap := prop.(map[string]any); isMap {
				if min, has := p["minimum"]; has || isInt(s.Min) { // a duration is a string in the chart
					check(s.Flag+": chart schema minimum", has && s.Min != nil && sameValue(s.Min, min), "values.schema.json %s minimum %v; settings say %v", s.ChartValue, min, s.Min)
				}
				if enum, has := p["enum"].([]any); has {
					check(s.Flag+": chart schema enum", slices.Contains(enum, any(want)), "values.schema.json %s enum %v lacks the default %v", s.ChartValue, enum, want)
				}
			}
			check(s.Flag+": chart passes it", passesValue(deployment, s.InjectorFlag, s.ChartValue),
				"the injector's deployment does not pass .Values.%s as --%s", s.ChartValue, s.InjectorFlag)
			check(s.Flag+": docs chart value", strings.Contains(kubeDoc, "`"+s.ChartValue+"`"), "docs/kubernetes.md does not mention `%s`", s.ChartValue)
		}
	}
	for _, s := range settings.Pod {
		name := s.Annotation
		if name == "" {
			name = "--" + s.InjectorFlag
		}
		if s.Annotation != "" {
			// The annotation takes the default, and the annotation table of docs/kubernetes.md has its row.
			if s.Default != "" {
				_, err := mutation.ParseConfig(annotatedPod(map[string]string{s.Annotation: s.Default}), mutation.Defaults{Image: "pyexec"})
				check(name+": annotation takes the default", err == nil, "%s=%s: %v", s.Annotation, s.Default, err)
			}
			check(name+": docs annotation row", annotationRow(kubeDoc, s.Annotation, s.Default),
				"docs/kubernetes.md has no annotation row for `%s` that shows the default %s", s.Annotation, docDefault(s.Default))
		}
		if s.InjectorFlag != "" {
			env := "PYEXEC_INJECTOR_" + strings.ToUpper(strings.ReplaceAll(s.InjectorFlag, "-", "_"))
			check(name+": docs injector row", tableRowWith(kubeDoc, "`--"+s.InjectorFlag+"`", env, nil) &&
				(s.Default == "" || tableRowWith(kubeDoc, "`--"+s.InjectorFlag+"`", env, s.Default)),
				"docs/kubernetes.md's pyexec-injector table has no row with `--%s`, `%s` and the default %s", s.InjectorFlag, env, docDefault(s.Default))
		}
		if s.ChartValue != "" {
			v, ok := lookup(values, s.ChartValue)
			check(name+": chart default", ok == (s.Default != "") && (!ok || sameValue(s.Default, v)),
				"values.yaml %s is %v; want %s", s.ChartValue, v, docDefault(s.Default))
			_, ok = schemaProperty(schema, s.ChartValue)
			check(name+": chart schema", ok, "values.schema.json has no %s", s.ChartValue)
			check(name+": chart passes it", passesValue(deployment, s.InjectorFlag, s.ChartValue),
				"the injector's deployment does not pass .Values.%s as --%s", s.ChartValue, s.InjectorFlag)
			topic := chartTopic(s.ChartValue)
			check(name+": docs chart value", strings.Contains(kubeDoc, "`"+topic+"`"), "docs/kubernetes.md does not mention `%s`", topic)
		}
	}
	for name, reason := range knownSettingGaps {
		if open, seen := gaps[name]; !seen || !open {
			t.Errorf("known gap %q (%s) is closed or gone: remove it from knownSettingGaps", name, reason)
		}
	}
}

// annotationRow tells whether text has a table row whose first cell names the annotation in
// backquotes and, when def is not empty, that shows def in backquotes.
func annotationRow(text, annotation, def string) bool {
	for _, line := range strings.Split(text, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) > 2 && strings.HasPrefix(line, "|") && strings.Contains(cells[1], "`"+annotation+"`") &&
			(def == "" || strings.Contains(line, "`"+def+"`")) {
			return true
		}
	}
	return false
}

// docDefault is a PodSetting's default as a message shows it.
func docDefault(def string) string {
	if def == "" {
		return "none"
	}
	return "`" + def + "`"
}

// schemaProperty finds the dotted key in values.schema.json, following $ref into definitions.
func schemaProperty(schema map[string]any, key string) (map[string]any, bool) {
	definitions, _ := schema["definitions"].(map[string]any)
	s := schema
	for _, k := range strings.Split(key, ".") {
		if ref, ok := s["$ref"].(string); ok {
			s, _ = definitions[strings.TrimPrefix(ref, "#/definitions/")].(map[string]any)
		}
		props, _ := s["properties"].(map[string]any)
		if s, _ = props[k].(map[string]any); s == nil {
			return nil, false
		}
	}
	return s, true
}

// passesValue tells whether a line of the deployment passes the chart value key as --flag:
// {{ .Values.KEY }}, or {{ dig "A" "B" "" .Values.PREFIX }} for KEY = PREFIX.A.B, or a list
// item by item, each quoted: {{- range .Values.KEY }} and, on the next line,
// {{ printf "--flag=%s" . | toJson }}.
func passesValue(deployment, flag, key string) bool {
	if regexp.MustCompile(`\{\{- range \.Values\.` + regexp.QuoteMeta(key) + ` \}\}\n\s*- \{\{ printf "--` + regexp.QuoteMeta(flag) + `=%s" \. \| toJson \}\}\n`).MatchString(deployment) {
		return true
	}
	if !strings.Contains(deployment, "--"+flag+"={{") {
		return false
	}
	parts := strings.Split(key, ".")
	for i := 1; i <= len(parts); i++ {
		want := ".Values." + key
		if i < len(parts) {
			want = `dig "` + strings.Join(parts[i:], `" "`) + `" "" .Values.` + strings.Join(parts[:i], ".")
		}
		if lineWith(deployment, "--"+flag+"={{", want) {
			return true
		}
	}
	return false
}

// chartTopic is the value docs/kubernetes.md names for a chart key: a container's resources as a
// whole (sidecar.resources for sidecar.resources.requests.cpu), else the key.
func chartTopic(key string) string {
	if before, _, ok := strings.Cut(key, ".resources."); ok {
		return before + ".resources"
	}
	return key
}

// A config that pyexec serve accepts passes server.Config.Validate, which runServe calls; a
// limit that serve refuses, the server refuses too.
func TestServeConfigAgreesWithServerValidate(t *testing.T) {
	base := parseServe(t, nil)
	accepted := map[string]func(c *ServeConfig){
		"defaults":               func(c *ServeConfig) {},
		"no memory limit at all": func(c *ServeConfig) { c.MemoryLimitMB, c.MaxMemoryLimitMB = 0, 0 },
		"no maximum memory":      func(c *ServeConfig) { c.MaxMemoryLimitMB = 0 },
		"no maximum, a limit above the default maximum": func(c *ServeConfig) { c.MaxMemoryLimitMB, c.MemoryLimitMB = 0, 8192 },
		"the least memory limit":                        func(c *ServeConfig) { c.MemoryLimitMB = settings.MinMemoryLimitMB },
		"memory limit at the maximum":                   func(c *ServeConfig) { c.MemoryLimitMB = c.MaxMemoryLimitMB },
		"no process limit":                              func(c *ServeConfig) { c.MaxProcesses = 0 },
		"no files out":                                  func(c *ServeConfig) { c.MaxFilesOut = 0 },
		"no queue":                                      func(c *ServeConfig) { c.Queue = 0 },
		"sessions off":                                  func(c *ServeConfig) { c.MaxSessions = 0 },
		"timeout at the maximum":                        func(c *ServeConfig) { c.Timeout = c.MaxTimeout },
		"idle timeout at the maximum":                   func(c *ServeConfig) { c.SessionIdleTimeout = c.MaxSessionIdleTimeout },
		"one uid may take every connection":             func(c *ServeConfig) { c.MaxConnectionsPerUID = c.MaxConnections },
	}
	for name, edit := range accepted {
		c := *base
		edit(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("%s: serve refuses it: %v", name, err)
		}
		if err := c.serverConfig().Validate(); err != nil {
			t.Errorf("%s: serve accepts it, but server.Config.Validate says: %v", name, err)
		}
	}
	// Limits serve refuses, the server refuses too. (The other way round the server is more
	// lenient in one place: with sessions off it does not check the idle timeouts.)
	refused := map[string]func(c *ServeConfig){
		"memory limit below the least":     func(c *ServeConfig) { c.MemoryLimitMB = settings.MinMemoryLimitMB - 1 },
		"no memory limit under a maximum":  func(c *ServeConfig) { c.MemoryLimitMB = 0 },
		"memory limit over the maximum":    func(c *ServeConfig) { c.MemoryLimitMB = c.MaxMemoryLimitMB + 1 },
		"maximum memory below the least":   func(c *ServeConfig) { c.MemoryLimitMB, c.MaxMemoryLimitMB = 0, settings.MinMemoryLimitMB-1 },
		"no timeout":                       func(c *ServeConfig) { c.Timeout = 0 },
		"timeout over the maximum":         func(c *ServeConfig) { c.Timeout = c.MaxTimeout + time.Second },
		"negative process limit":           func(c *ServeConfig) { c.MaxProcesses = -1 },
		"negative files out":               func(c *ServeConfig) { c.MaxFilesOut = -1 },
		"no files out bytes":               func(c *ServeConfig) { c.MaxFilesOutBytes = 0 },
		"no file bytes":                    func(c *ServeConfig) { c.MaxFileBytes = 0 },
		"no output":                        func(c *ServeConfig) { c.MaxOutputBytes = 0 },
		"no request bytes":                 func(c *ServeConfig) { c.MaxRequestBytes = 0 },
		"negative queue":                   func(c *ServeConfig) { c.Queue = -1 },
		"nothing concurrent":               func(c *ServeConfig) { c.MaxConcurrent = 0 },
		"no connections":                   func(c *ServeConfig) { c.MaxConnections, c.MaxConnectionsPerUID = 0, 0 },
		"more per uid than in all":         func(c *ServeConfig) { c.MaxConnectionsPerUID = c.MaxConnections + 1 },
		"negative sessions":                func(c *ServeConfig) { c.MaxSessions = -1 },
		"idle timeout over the maximum":    func(c *ServeConfig) { c.SessionIdleTimeout = c.MaxSessionIdleTimeout + time.Second },
		"no idle timeout with sessions on": func(c *ServeConfig) { c.SessionIdleTimeout = 0 },
		"negative uid allowed":             func(c *ServeConfig) { c.AllowUIDs = []int{-1} },
	}
	for name, edit := range refused {
		c := *base
		edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: serve accepts it; want refused", name)
		}
		if err := c.serverConfig().Validate(); err == nil {
			t.Errorf("%s: serve refuses it, but server.Config.Validate accepts limits %+v", name, c.limits())
		}
	}
}

// bound is a value of a setting at or past one of its bounds.
type bound struct {
	what, value string
	ok          bool
}

// bounds are the values at each bound (accepted) and just past it (refused).
func bounds(min, max any) []bound {
	var out []bound
	switch min := min.(type) {
	case int:
		out = append(out, bound{"minimum", strconv.Itoa(min), true}, bound{"below the minimum", strconv.Itoa(min - 1), false})
	}
	switch max := max.(type) {
	case int:
		out = append(out, bound{"maximum", strconv.Itoa(max), true}, bound{"above the maximum", strconv.Itoa(max + 1), false})
	case time.Duration:
		out = append(out, bound{"maximum", max.String(), true}, bound{"above the maximum", (max + time.Second).String(), false})
	}
	return out
}

func isInt(v any) bool { _, ok := v.(int); return ok }

// serveCommandFlags are the flags of pyexec serve.
func serveCommandFlags(t *testing.T) *pflag.FlagSet {
	t.Helper()
	root := NewRootCommand(IO{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, LookupEnv: env(nil)}, Runners{})
	cmd, _, err := root.Find([]string{"serve"})
	if err != nil {
		t.Fatal(err)
	}
	return cmd.Flags()
}

// serveError is the error of pyexec serve ARGS, which is not run.
func serveError(t *testing.T, args ...string) error {
	t.Helper()
	var out bytes.Buffer
	root := NewRootCommand(IO{Stdout: &out, Stderr: &out, LookupEnv: env(nil)}, Runners{
		Serve: func(context.Context, *ServeConfig) error { return nil },
	})
	root.SetArgs(append([]string{"serve"}, args...))
	return root.Execute()
}

// annotatedPod is a pod that opts in, with annotations ann.
func annotatedPod(ann map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{mutation.LabelInject: mutation.LabelInjectEnabled}, Annotations: ann},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
}

// parseAnnotations injects a pod with annotations ann and the injector's zero Defaults.
func parseAnnotations(t *testing.T, ann map[string]string) *corev1.Pod {
	t.Helper()
	pod := annotatedPod(ann)
	cfg, err := mutation.ParseConfig(pod, mutation.Defaults{Image: "pyexec"})
	if err != nil {
		t.Fatal(err)
	}
	mutation.Inject(pod, cfg)
	return pod
}

// sidecarEnv is the value of the variable name in the injected sidecar.
func sidecarEnv(pod *corev1.Pod, name string) (string, bool) {
	for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
		if c.Name != mutation.SidecarName {
			continue
		}
		for _, e := range c.Env {
			if e.Name == name {
				return e.Value, true
			}
		}
	}
	return "", false
}

// flagValue is v as pflag shows a default.
func flagValue(v any) string {
	switch v := v.(type) {
	case time.Duration:
		return v.String()
	default:
		return fmt.Sprint(v)
	}
}

// docValue is v as the docs write it: durations without zero units (10m, 1h).
func docValue(v any) string {
	d, ok := v.(time.Duration)
	if !ok {
		return fmt.Sprint(v)
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// sameValue tells whether got (a flag's or variable's string, or a YAML/JSON value) is want.
func sameValue(want, got any) bool {
	switch want := want.(type) {
	case time.Duration:
		s, ok := got.(string)
		d, err := time.ParseDuration(s)
		return ok && err == nil && d == want
	case int:
		switch got := got.(type) {
		case float64:
			return got == float64(want)
		case string:
			return got == strconv.Itoa(want)
		}
		return false
	case bool:
		switch got := got.(type) {
		case bool:
			return got == want
		case string:
			return got == strconv.FormatBool(want)
		}
		return false
	}
	return fmt.Sprint(got) == fmt.Sprint(want)
}

// tableRow tells whether text has a line that starts with prefix and, when def is not nil,
// shows def in backquotes.
func tableRow(text, prefix string, def any) bool {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix) && (def == nil || strings.Contains(line, "`"+docValue(def)+"`")) {
			return true
		}
	}
	return false
}

// tableRowWith tells whether text has a table row holding flag and env and, when def is not
// nil, showing def in backquotes.
func tableRowWith(text, flag, env string, def any) bool {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "|") && strings.Contains(line, flag) && strings.Contains(line, "`"+env+"`") &&
			(def == nil || strings.Contains(line, "`"+docValue(def)+"`")) {
			return true
		}
	}
	return false
}

// lineWith tells whether text has a line holding both a and b.
func lineWith(text, a, b string) bool {
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, a) && strings.Contains(line, b) {
			return true
		}
	}
	return false
}

// lookup finds the dotted key in a decoded YAML or JSON document.
func lookup(doc map[string]any, key string) (any, bool) {
	var v any = doc
	for _, k := range strings.Split(key, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// readYAML decodes a YAML or JSON file as JSON would (numbers are float64).
func readYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(readFile(t, path)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var doc map[string]any
	if err := json.Unmarshal(js, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return doc
}

// Every flag of pyexec serve is a setting of internal/settings (so --help groups it, the
// reference documents it and its bounds are checked), and every setting is a flag of serve.
func TestServeFlagsAreTheSettings(t *testing.T) {
	serve := serveCommandFlags(t)
	known := map[string]bool{}
	for _, s := range settings.Serve {
		known[s.Flag] = true
		if serve.Lookup(s.Flag) == nil {
			t.Errorf("setting --%s is not a flag of pyexec serve", s.Flag)
		}
	}
	serve.VisitAll(func(f *pflag.Flag) {
		if !known[f.Name] && f.Name != "help" {
			t.Errorf("pyexec serve --%s is not a setting of internal/settings", f.Name)
		}
	})
	if len(known) < 55 {
		t.Errorf("%d settings; serve had 58 flags when the registry was made", len(known))
	}
}

// pyexec serve reports every bad setting at once, not the first.
func TestServeReportsEveryError(t *testing.T) {
	r := run(t, map[string]string{"PYEXEC_QUEUE": "-1"}, "serve", "--warm", "-1", "--max-connections", "0", "--memory-limit-mb", "16",
		"--timeout", "10m")
	for _, want := range []string{"--warm must not be negative", "--queue must not be negative", "--max-connections must be positive",
		"--memory-limit-mb 16: want 0 (no limit) or at least 32", "--timeout 10m0s is over --max-timeout 5m0s"} {
		if r.code != ExitUsage || !strings.Contains(r.stderr, want) {
			t.Errorf("exit %d, stderr %q; want exit 2 mentioning %q", r.code, r.stderr, want)
		}
	}
}

// pyexec serve --help lists the flags by group.
func TestServeHelpByGroup(t *testing.T) {
	r := run(t, nil, "serve", "--help")
	last := -1
	for _, g := range settings.Groups {
		i := strings.Index(r.stdout, "\n"+string(g)+":\n")
		if i < 0 || i < last {
			t.Fatalf("serve --help: group %q missing or out of order:\n%s", g, r.stdout)
		}
		last = i
	}
	if i := strings.Index(r.stdout, "      --warm int"); i < strings.Index(r.stdout, "\nFork mode:\n") || i > strings.Index(r.stdout, "\nSessions:\n") {
		t.Errorf("--warm is not under Fork mode:\n%s", r.stdout)
	}
}
