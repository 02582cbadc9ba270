package mutation

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const offlinePod = `apiVersion: v1
kind: Pod
metadata:
  labels:
    app: p
  name: p
spec:
  containers:
  - image: example.com/p
    name: p
`

func TestInjectManifestsForce(t *testing.T) {
	got := injectString(t, []byte(offlinePod), testDefaults, "yaml")
	if string(got) != offlinePod {
		t.Errorf("a pod without the label changed:\n%s", lineDiff(offlinePod, string(got)))
	}
	d := testDefaults
	d.Force = true
	got = injectString(t, []byte(offlinePod), d, "")
	if !strings.Contains(string(got), "pyexec.dev/status: injected") {
		t.Errorf("Force did not inject:\n%s", got)
	}
	if again := injectString(t, got, d, ""); !bytes.Equal(again, got) {
		t.Errorf("Force twice differs from once:\n%s", lineDiff(string(got), string(again)))
	}
}

func TestInjectManifestsJSON(t *testing.T) {
	in := offlinePod + "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  count: \"1\"\n"
	got := injectString(t, []byte(in), testDefaults, "json")
	want := `{
  "apiVersion": "v1",
  "kind": "Pod",
  "metadata": {
    "labels": {
      "app": "p"
    },
    "name": "p"
  },
  "spec": {
    "containers": [
      {
        "image": "example.com/p",
        "name": "p"
      }
    ]
  }
}
{
  "apiVersion": "v1",
  "data": {
    "count": "1"
  },
  "kind": "ConfigMap",
  "metadata": {
    "name": "c"
  }
}
`
	if string(got) != want {
		t.Errorf("-o json:\n%s", lineDiff(want, string(got)))
	}
}

func TestInjectManifestsKeepsNumbersAndUnknownKinds(t *testing.T) {
	in := "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n  big: 12345678901234567890\n  ratio: 0.25\n  list: [1, two, {three: 3}]\n"
	want := "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n  big: 12345678901234567890\n  list:\n  - 1\n  - two\n  - three: 3\n  ratio: 0.25\n"
	if got := injectString(t, []byte(in), testDefaults, "yaml"); string(got) != want {
		t.Errorf("pass-through:\n%s", lineDiff(want, string(got)))
	}
}

func TestInjectManifestsEmpty(t *testing.T) {
	for _, in := range []string{"", "\n", "---\n# nothing\n---\n"} {
		if got := injectString(t, []byte(in), testDefaults, "yaml"); len(got) != 0 {
			t.Errorf("input %q gave %q, want nothing", in, got)
		}
	}
}

func TestInjectManifestsErrors(t *testing.T) {
	deployment := func(annotation string) string {
		return `# first a config map
apiVersion: v1
kind: ConfigMap
metadata:
  name: c
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web, pyexec.dev/inject: "true"}
      annotations: {` + annotation + `}
    spec:
      containers:
      - name: web
        image: example.com/web
`
	}
	tests := []struct {
		name, in, output string
		want             string
		annotation       bool // want an *AnnotationError inside
	}{
		{name: "bad annotation", in: deployment(`pyexec.dev/timeout: ten`), annotation: true,
			want: `document 2 (Deployment/web, line 7): annotation pyexec.dev/timeout="ten": want a Go duration such as 30s`},
		{name: "bad network annotation", in: deployment(`pyexec.dev/network: open`), annotation: true,
			want: `document 2 (Deployment/web, line 7): annotation pyexec.dev/network="open": want deny or allow`},
		{name: "bad annotation in a CronJob", annotation: true,
			in: "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly}\nspec:\n  schedule: '@daily'\n  jobTemplate:\n    spec:\n      template:\n" +
				"        metadata:\n          labels: {pyexec.dev/inject: \"true\"}\n          annotations: {pyexec.dev/native-sidecar: \"false\"}\n" +
				"        spec:\n          restartPolicy: Never\n          containers: [{name: c, image: i}]\n",
			want: `document 1 (CronJob/nightly, line 1): annotation pyexec.dev/native-sidecar="false": want true (Kubernetes 1.29 or later) in a pod with restartPolicy Never: a regular sidecar container would keep it from completing`},
		{name: "bad annotation in a List item", annotation: true,
			in:   `{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"pyexec.dev/inject":"true"},"annotations":{"pyexec.dev/preload":"1x"}},"spec":{"containers":[{"name":"c"}]}}]}`,
			want: `document 1 (List): item 1 (Pod/p): annotation pyexec.dev/preload="1x": want comma-separated module names such as numpy,os.path; "1x" is not one`},
		{name: "unknown field in a template", in: strings.Replace(deployment(""), "image: example.com/web", "imagePullPolice: Always", 1),
			want: `document 2 (Deployment/web, line 7): json: unknown field "imagePullPolice"`},
		{name: "wrong type", in: "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: oops\n",
			want: `document 1 (Pod/p, line 1): json: cannot unmarshal string into Go struct field PodSpec.spec.containers of type []v1.Container`},
		{name: "not YAML", in: "a: b\n---\nkind: [\n", want: `document 2 (line 3): yaml: line 1: did not find expected node content`},
		{name: "duplicate key", in: "kind: Pod\nkind: Pod\n", want: "document 1 (line 1): yaml: unmarshal errors:\n  line 2: key \"kind\" already set in map"},
		{name: "not an object", in: "- a\n- b\n", want: `document 1 (line 1): not a Kubernetes object (want a mapping with apiVersion and kind)`},
		{name: "bad output", in: offlinePod, output: "xml", want: `output "xml": want yaml or json`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			output := tt.output
			if output == "" {
				output = "yaml"
			}
			err := InjectManifests(strings.NewReader(tt.in), &out, testDefaults, output, nil)
			if err == nil {
				t.Fatalf("no error; output:\n%s", out.String())
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error:\n got %s\nwant %s", err, tt.want)
			}
			var ae *AnnotationError
			if errors.As(err, &ae) != tt.annotation {
				t.Errorf("errors.As(*AnnotationError) = %v, want %v", !tt.annotation, tt.annotation)
			}
			if out.Len() != 0 {
				t.Errorf("wrote %d bytes despite the error", out.Len())
			}
		})
	}
}

func TestSplitDocuments(t *testing.T) {
	in := "a: 1\n--- # first\nb: 2\n---\n\n---   \nc: 3\n---x: 4\n"
	docs, err := splitDocuments([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	type doc struct {
		line int
		data string
	}
	want := []doc{{1, "a: 1\n"}, {3, "b: 2\n"}, {5, "\n"}, {7, "c: 3\n---x: 4\n"}}
	var got []doc
	for _, d := range docs {
		got = append(got, doc{d.line, string(d.data)})
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("document %d = %+v, want %+v", i+1, got[i], want[i])
		}
	}
}
