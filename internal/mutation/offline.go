package mutation

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// Output formats of InjectManifests.
const (
	// OutputYAML writes YAML documents separated by "---" lines.
	OutputYAML = "yaml"
	// OutputJSON writes one indented JSON object per document, one after the other (a JSON
	// stream, as kubectl apply -f and jq read it, and as InjectManifests reads it back).
	OutputJSON = "json"
)

// InjectManifests is `pyexec-injector inject -f FILE -o yaml|json`: it reads manifests from r,
// injects every pod and pod template that is to be injected (ShouldInject, or d.Force for
// those without LabelInject) and writes all documents to w in output ("yaml", the default
// when empty, or "json").
//
// The input is YAML documents separated by "---" lines (empty and comment-only documents are
// dropped), or, when it starts with "{", a stream of JSON objects. Pods (v1) are injected;
// so are the pod templates of Deployments, StatefulSets, DaemonSets and ReplicaSets (apps/v1),
// Jobs and CronJobs (batch/v1), and the items of a List (v1). These are decoded strictly into
// their k8s.io/api types, so a field that those types do not know is an error rather than
// silently lost; the injected pod template (or a pod's metadata and spec) then replaces its
// part of the document, and the rest of the document is written back as it was read. Every
// other document passes through unchanged (re-encoded, keys sorted).
//
// Nothing is written when an error occurs. An invalid annotation is an error that names the
// document and wraps the *AnnotationError. warn, when not nil, is given a warning naming the
// document for each pyexec.dev/ annotation of an injected pod that pyexec does not know.
func InjectManifests(r io.Reader, w io.Writer, d Defaults, output string, warn func(string)) error {
	if output == "" {
		output = OutputYAML
	}
	if output != OutputYAML && output != OutputJSON {
		return fmt.Errorf("output %q: want %s or %s", output, OutputYAML, OutputJSON)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read manifests: %w", err)
	}
	docs, err := splitDocuments(data)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	n := 0
	for _, doc := range docs {
		j, err := yaml.YAMLToJSONStrict(doc.data)
		if err != nil {
			return fmt.Errorf("%s: %w", doc.where(n+1, nil), err)
		}
		if bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
			continue // empty or only comments
		}
		n++
		obj, err := decodeValue(j)
		if err != nil {
			return fmt.Errorf("%s: %w", doc.where(n, nil), err)
		}
		where := doc.where(n, obj)
		if err := injectObject(obj, d, func(msg string) {
			if warn != nil {
				warn(where + ": " + msg)
			}
		}); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if err := encode(&out, obj, output, n > 1); err != nil {
			return fmt.Errorf("%s: %w", doc.where(n, obj), err)
		}
	}
	_, err = w.Write(out.Bytes())
	return err
}

// document is one document of the input and where it starts.
type document struct {
	line int // 1-based line of its first line in YAML input; 0 for JSON input
	data []byte
}

// where names the document in errors: its number, its line and, once known, its kind and
// name.
func (doc document) where(n int, obj map[string]any) string {
	s := fmt.Sprintf("document %d", n)
	var details []string
	if id := objectID(obj); id != "" {
		details = append(details, id)
	}
	if doc.line > 0 {
		details = append(details, fmt.Sprintf("line %d", doc.line))
	}
	if len(details) > 0 {
		s += " (" + strings.Join(details, ", ") + ")"
	}
	return s
}

// splitDocuments splits YAML input on "---" lines (which may carry a comment), or a JSON
// stream into its values.
func splitDocuments(data []byte) ([]document, error) {
	if trimmed := bytes.TrimLeft(data, " \t\r\n"); len(trimmed) > 0 && trimmed[0] == '{' {
		var docs []document
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		for {
			var raw json.RawMessage
			err := dec.Decode(&raw)
			if errors.Is(err, io.EOF) {
				return docs, nil
			}
			if err != nil {
				return nil, fmt.Errorf("document %d: %w", len(docs)+1, err)
			}
			docs = append(docs, document{data: raw})
		}
	}
	var docs []document
	var cur bytes.Buffer
	start, line := 1, 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, len(data)+1)
	for sc.Scan() {
		line++
		text := sc.Text()
		if isSeparator(text) {
			docs = append(docs, document{line: start, data: bytes.Clone(cur.Bytes())})
			cur.Reset()
			start = line + 1
			continue
		}
		cur.WriteString(text)
		cur.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read manifests: %w", err)
	}
	return append(docs, document{line: start, data: cur.Bytes()}), nil
}

func isSeparator(line string) bool {
	line = strings.TrimRight(line, " \t\r")
	return line == "---" || strings.HasPrefix(line, "--- #") || strings.HasPrefix(line, "---\t#")
}

// decodeValue decodes a JSON object, keeping numbers exactly as written.
func decodeValue(j []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("not a Kubernetes object (want a mapping with apiVersion and kind)")
	}
	return m, nil
}

// objectID is "Kind/name" (or "Kind" when nameless) of a decoded object, or "".
func objectID(obj map[string]any) string {
	kind, _ := obj["kind"].(string)
	if kind == "" {
		return ""
	}
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	if name == "" {
		name, _ = meta["generateName"].(string)
	}
	if name == "" {
		return kind
	}
	return kind + "/" + name
}

// injectObject injects the object in place when it is a pod, holds a pod template or is a
// List, and leaves it alone otherwise.
func injectObject(obj map[string]any, d Defaults, warn func(string)) error {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	switch apiVersion + " " + kind {
	case "v1 Pod":
		return injectPart(obj, d, warn, func(p *corev1.Pod) *corev1.Pod { return p })
	case "v1 List":
		return injectList(obj, d, warn)
	case "apps/v1 Deployment":
		return injectPart(obj, d, warn, func(o *appsv1.Deployment) *corev1.PodTemplateSpec { return &o.Spec.Template }, "spec", "template")
	case "apps/v1 StatefulSet":
		return injectPart(obj, d, warn, func(o *appsv1.StatefulSet) *corev1.PodTemplateSpec { return &o.Spec.Template }, "spec", "template")
	case "apps/v1 DaemonSet":
		return injectPart(obj, d, warn, func(o *appsv1.DaemonSet) *corev1.PodTemplateSpec { return &o.Spec.Template }, "spec", "template")
	case "apps/v1 ReplicaSet":
		return injectPart(obj, d, warn, func(o *appsv1.ReplicaSet) *corev1.PodTemplateSpec { return &o.Spec.Template }, "spec", "template")
	case "batch/v1 Job":
		return injectPart(obj, d, warn, func(o *batchv1.Job) *corev1.PodTemplateSpec { return &o.Spec.Template }, "spec", "template")
	case "batch/v1 CronJob":
		return injectPart(obj, d, warn, func(o *batchv1.CronJob) *corev1.PodTemplateSpec { return &o.Spec.JobTemplate.Spec.Template },
			"spec", "jobTemplate", "spec", "template")
	}
	return nil
}

// podPart is what injectPart injects: a whole pod, or a workload's pod template.
type podPart interface {
	*corev1.Pod | *corev1.PodTemplateSpec
}

// injectPart decodes obj strictly as a T, injects the pod or pod template that part picks
// out of it, and, when it was injected, writes that back into obj at path (for a pod, with no
// path, its metadata and spec).
func injectPart[T any, P podPart](obj map[string]any, d Defaults, warn func(string), part func(*T) P, path ...string) error {
	j, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	var typed T
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&typed); err != nil {
		return err
	}
	var pod *corev1.Pod
	switch p := any(part(&typed)).(type) {
	case *corev1.Pod:
		pod = p
	case *corev1.PodTemplateSpec:
		pod = &corev1.Pod{ObjectMeta: p.ObjectMeta, Spec: p.Spec}
	}
	out, injected, _, err := InjectPod(pod, d)
	if err != nil || !injected {
		return err
	}
	for _, w := range UnknownAnnotations(pod.Annotations) {
		warn(w)
	}
	if len(path) == 0 {
		if err := setPath(obj, out.ObjectMeta, "metadata"); err != nil {
			return err
		}
		return setPath(obj, out.Spec, "spec")
	}
	return setPath(obj, corev1.PodTemplateSpec{ObjectMeta: out.ObjectMeta, Spec: out.Spec}, path...)
}

// setPath sets obj[path...] to v as decoded JSON, creating the maps on the way.
func setPath(obj map[string]any, v any, path ...string) error {
	j, err := json.Marshal(v)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var val any
	if err := dec.Decode(&val); err != nil {
		return err
	}
	m := obj
	for _, key := range path[:len(path)-1] {
		next, ok := m[key].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[key] = next
		}
		m = next
	}
	m[path[len(path)-1]] = val
	return nil
}

// injectList injects each item of a v1 List.
func injectList(obj map[string]any, d Defaults, warn func(string)) error {
	items, _ := obj["items"].([]any)
	for i, item := range items {
		m, ok := item.(map[string]any)
		if !ok {
			return fmt.Errorf("item %d: not a Kubernetes object", i+1)
		}
		if err := injectObject(m, d, warn); err != nil {
			if id := objectID(m); id != "" {
				return fmt.Errorf("item %d (%s): %w", i+1, id, err)
			}
			return fmt.Errorf("item %d: %w", i+1, err)
		}
	}
	return nil
}

// encode writes one document in output format; YAML documents after the first get a "---"
// line before them.
func encode(w *bytes.Buffer, obj map[string]any, output string, notFirst bool) error {
	if output == OutputJSON {
		j, err := json.MarshalIndent(obj, "", "  ")
		if err != nil {
			return err
		}
		w.Write(j)
		w.WriteByte('\n')
		return nil
	}
	j, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		return err
	}
	if notFirst {
		w.WriteString("---\n")
	}
	w.Write(y)
	return nil
}
