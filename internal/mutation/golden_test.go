package mutation

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/pyexec/pyexec/internal/testutil"
)

// update rewrites the golden files: go test ./internal/mutation -update
var update = flag.Bool("update", false, "rewrite testdata/inject/*.injected.yaml from the current output")

// testDefaults are the injector defaults of every golden case. Their Rand gives the same
// bytes at every read, so every pod gets the same uids whatever was injected before it: the
// outputs do not depend on the order of documents, nor on whether the webhook or
// InjectManifests injected them.
var testDefaults = Defaults{
	Image:         "registry.example/pyexec:1.0.0",
	PullPolicy:    corev1.PullIfNotPresent,
	NativeSidecar: true,
	Rand:          testutil.SameBytes{},
}

const goldenDir = "testdata/inject"

// goldenCases lists the inputs of testdata/inject: every .yaml and .json file that is not an
// .injected.yaml output.
func goldenCases(t *testing.T) []string {
	t.Helper()
	var cases []string
	for _, pattern := range []string{"*.yaml", "*.json"} {
		files, err := filepath.Glob(filepath.Join(goldenDir, pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if !strings.HasSuffix(f, ".injected.yaml") {
				cases = append(cases, f)
			}
		}
	}
	if len(cases) == 0 {
		t.Fatalf("no cases in %s", goldenDir)
	}
	return cases
}

// goldenFile is the expected output of an input case.
func goldenFile(input string) string {
	return strings.TrimSuffix(input, filepath.Ext(input)) + ".injected.yaml"
}

func injectString(t *testing.T, in []byte, d Defaults, output string) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := InjectManifests(bytes.NewReader(in), &out, d, output, nil); err != nil {
		t.Fatalf("InjectManifests: %v", err)
	}
	return out.Bytes()
}

// TestGolden injects every case of testdata/inject and compares the result with
// <case>.injected.yaml. It also checks that injecting the result again changes nothing, and
// that the JSON output is the same objects.
func TestGolden(t *testing.T) {
	for _, input := range goldenCases(t) {
		name := strings.TrimSuffix(filepath.Base(input), filepath.Ext(input))
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(input)
			if err != nil {
				t.Fatal(err)
			}
			got := injectString(t, in, testDefaults, "yaml")
			golden := goldenFile(input)
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/mutation -update to create it)", err)
			}
			if d := lineDiff(string(want), string(got)); d != "" {
				t.Errorf("%s differs from the output (- want, + got; go test ./internal/mutation -update rewrites it):\n%s", golden, d)
			}

			if again := injectString(t, got, testDefaults, "yaml"); !bytes.Equal(again, got) {
				t.Errorf("injecting twice differs from once (- once, + twice):\n%s", lineDiff(string(got), string(again)))
			}

			asJSON := injectString(t, in, testDefaults, "json")
			if back := injectString(t, asJSON, testDefaults, "yaml"); !bytes.Equal(back, got) {
				t.Errorf("-o json read back as YAML differs (- yaml, + json):\n%s", lineDiff(string(got), string(back)))
			}
		})
	}
}

// TestGoldenAlreadyInjected feeds a golden output back in: it must pass through unchanged.
func TestGoldenAlreadyInjected(t *testing.T) {
	in, err := os.ReadFile(filepath.Join(goldenDir, "pod-already-injected.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got := injectString(t, in, testDefaults, "yaml")
	var want, have map[string]any
	if err := yaml.Unmarshal(in, &want); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(got, &have); err != nil {
		t.Fatal(err)
	}
	wantJSON, _ := json.MarshalIndent(want, "", "  ")
	haveJSON, _ := json.MarshalIndent(have, "", "  ")
	if d := lineDiff(string(wantJSON), string(haveJSON)); d != "" {
		t.Errorf("an injected pod changed (- input, + output):\n%s", d)
	}
	if !strings.Contains(string(got), "pyexec.dev/status: injected") || strings.Count(string(got), "name: pyexec-init") != 1 {
		t.Errorf("fixture is not an injected pod:\n%s", got)
	}
}

// injectedPods returns every pod and pod template of a YAML stream that carries
// AnnotationStatus, named "Kind/name".
func injectedPods(t *testing.T, data []byte) map[string]*corev1.Pod {
	t.Helper()
	docs, err := splitDocuments(data)
	if err != nil {
		t.Fatal(err)
	}
	pods := map[string]*corev1.Pod{}
	add := func(id string, meta *corev1.PodTemplateSpec) {
		if meta.Annotations[AnnotationStatus] == StatusInjected {
			pods[id] = &corev1.Pod{ObjectMeta: meta.ObjectMeta, Spec: meta.Spec}
		}
	}
	for _, doc := range docs {
		var head struct {
			Kind     string
			Metadata struct{ Name string }
			Items    []json.RawMessage
		}
		if err := yaml.Unmarshal(doc.data, &head); err != nil {
			t.Fatal(err)
		}
		id := head.Kind + "/" + head.Metadata.Name
		unmarshal := func(v any) {
			t.Helper()
			if err := yaml.UnmarshalStrict(doc.data, v); err != nil {
				t.Fatalf("%s: %v", id, err)
			}
		}
		switch head.Kind {
		case "Pod":
			var p corev1.Pod
			unmarshal(&p)
			add(id, &corev1.PodTemplateSpec{ObjectMeta: p.ObjectMeta, Spec: p.Spec})
		case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job":
			var w struct {
				Spec struct{ Template corev1.PodTemplateSpec }
			}
			if err := yaml.Unmarshal(doc.data, &w); err != nil {
				t.Fatal(err)
			}
			add(id, &w.Spec.Template)
		case "CronJob":
			var c batchv1.CronJob
			unmarshal(&c)
			add(id, &c.Spec.JobTemplate.Spec.Template)
		case "List":
			for i, item := range head.Items {
				for k, p := range injectedPods(t, item) {
					pods[fmt.Sprintf("%s[%d] %s", id, i, k)] = p
				}
			}
		}
	}
	return pods
}

// TestGoldenWorkloadsDecode checks that every golden workload decodes strictly into its type,
// so the outputs are valid objects and not only YAML.
func TestGoldenWorkloadsDecode(t *testing.T) {
	for _, input := range goldenCases(t) {
		data, err := os.ReadFile(goldenFile(input))
		if err != nil {
			t.Fatal(err)
		}
		docs, _ := splitDocuments(data)
		for _, doc := range docs {
			var head struct{ Kind string }
			_ = yaml.Unmarshal(doc.data, &head)
			var v any
			switch head.Kind {
			case "Pod":
				v = &corev1.Pod{}
			case "Deployment":
				v = &appsv1.Deployment{}
			case "StatefulSet":
				v = &appsv1.StatefulSet{}
			case "CronJob":
				v = &batchv1.CronJob{}
			case "Job":
				v = &batchv1.Job{}
			default:
				continue
			}
			if err := yaml.UnmarshalStrict(doc.data, v); err != nil {
				t.Errorf("%s: %s: %v", goldenFile(input), head.Kind, err)
			}
		}
	}
}

// lineDiff is a small line diff (longest common subsequence), "" when a == b. Lines only in a
// start with "-", lines only in b with "+", and up to two common lines of context are kept
// around each change.
func lineDiff(a, b string) string {
	if a == b {
		return ""
	}
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type line struct {
		op   byte
		text string
	}
	var lines []line
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			lines = append(lines, line{' ', x[i]})
			i++
			j++
		case i < len(x) && (j == len(y) || lcs[i+1][j] >= lcs[i][j+1]):
			lines = append(lines, line{'-', x[i]})
			i++
		default:
			lines = append(lines, line{'+', y[j]})
			j++
		}
	}
	const context = 2
	var out strings.Builder
	skipped := false
	for k, l := range lines {
		near := false
		for d := max(0, k-context); d <= min(len(lines)-1, k+context); d++ {
			if lines[d].op != ' ' {
				near = true
				break
			}
		}
		if !near {
			skipped = true
			continue
		}
		if skipped {
			out.WriteString("  ...\n")
			skipped = false
		}
		fmt.Fprintf(&out, "%c %s\n", l.op, l.text)
	}
	return out.String()
}
