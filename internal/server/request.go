package server

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/internal/settings"
	"github.com/pyexec/pyexec/pkg/api"
)

// minTimeoutSeconds is the shortest time limit a request may ask for.
const minTimeoutSeconds = 0.001

// requestError is what was wrong with a request: its HTTP status, error code and message.
// Messages start with the field they are about.
type requestError struct {
	status int
	code   string
	msg    string
}

// badRequest returns a 400 requestError.
func badRequest(format string, args ...any) *requestError {
	return &requestError{status: http.StatusBadRequest, code: api.ErrCodeBadRequest, msg: fmt.Sprintf(format, args...)}
}

// tooLarge returns the 413 of a body over maxBytes.
func tooLarge(maxBytes int64) *requestError {
	return &requestError{status: http.StatusRequestEntityTooLarge, code: api.ErrCodeTooLarge,
		msg: fmt.Sprintf("request body: larger than max_request_bytes (%d bytes)", maxBytes)}
}

// parseStream reads the stream query parameter.
func parseStream(r *http.Request) (bool, *requestError) {
	switch v := r.URL.Query().Get("stream"); v {
	case "", "false", "0":
		return false, nil
	case "true", "1":
		return true, nil
	default:
		return false, badRequest("stream: %q is not a boolean; want true, 1, false or 0", v)
	}
}

// parseOwner reads the request's owner (api.OwnerHeader): scoped says the request is scoped to
// owner's sessions; without the header it sees every session.
func parseOwner(r *http.Request) (owner string, scoped bool, rerr *requestError) {
	values := r.Header.Values(api.OwnerHeader)
	switch {
	case len(values) == 0:
		return "", false, nil
	case len(values) > 1:
		return "", false, badRequest("%s: given %d times; give it once", api.OwnerHeader, len(values))
	}
	if err := api.CheckOwner(values[0]); err != nil {
		return "", false, badRequest("%s: %v", api.OwnerHeader, err)
	}
	return values[0], true, nil
}

// readExecuteRequest checks the content type and decodes the body of POST /v1/execute,
// reading at most maxBytes.
func readExecuteRequest(w http.ResponseWriter, r *http.Request, maxBytes int64) (api.ExecuteRequest, *requestError) {
	return readJSON[api.ExecuteRequest](w, r, maxBytes)
}

// readJSON checks the content type and strictly decodes one JSON object of type T from the
// body, reading at most maxBytes.
func readJSON[T any](w http.ResponseWriter, r *http.Request, maxBytes int64) (T, *requestError) {
	var req T
	if rerr := checkContentType(r.Header.Get("Content-Type")); rerr != nil {
		return req, rerr
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, decodeError(err, maxBytes)
	}
	// Reading on to EOF also lets net/http notice a client that hangs up while we work.
	var extra json.RawMessage
	switch err := dec.Decode(&extra); {
	case err == io.EOF:
		return req, nil
	case isMaxBytes(err):
		return req, tooLarge(maxBytes)
	default:
		return req, badRequest("request body: unexpected data after the JSON object at byte offset %d", dec.InputOffset())
	}
}

// checkContentType accepts application/json with any parameters (such as charset).
func checkContentType(ct string) *requestError {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return badRequest("Content-Type: %q is not supported; want application/json", ct)
	}
	return nil
}

// isMaxBytes says whether err comes from http.MaxBytesReader's limit.
func isMaxBytes(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// decodeError explains a failure to decode the request body.
func decodeError(err error, maxBytes int64) *requestError {
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case isMaxBytes(err):
		return tooLarge(maxBytes)
	case err == io.EOF:
		return badRequest(`request body: empty; want a JSON object with at least "code"`)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("request body: malformed JSON: the body ends in the middle of a value")
	case errors.As(err, &syntaxErr):
		return badRequest("request body: malformed JSON at byte offset %d: %v", syntaxErr.Offset, syntaxErr)
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "request body"
		}
		return badRequest("%s: got JSON %s, want %s", field, typeErr.Value, jsonTypeName(typeErr.Type))
	default:
		// encoding/json has no error type for an unknown field; its message names the field.
		return badRequest("request body: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
}

// jsonTypeName names the JSON type that decodes into t.
func jsonTypeName(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return jsonTypeName(t.Elem())
	}
	return t.String()
}

// newExecutorRequest checks req against the server's limits and maps it to an execution.
func newExecutorRequest(id string, req api.ExecuteRequest, lim api.Limits) (executor.Request, *requestError) {
	if req.Code == "" {
		return executor.Request{}, badRequest("code: required and must not be empty")
	}
	limits, rerr := executionLimits(req, lim)
	if rerr != nil {
		return executor.Request{}, rerr
	}
	if rerr := checkEnv(req.Env); rerr != nil {
		return executor.Request{}, rerr
	}
	files, rerr := decodeFiles(req.Files, lim.MaxRequestBytes)
	if rerr != nil {
		return executor.Request{}, rerr
	}
	out := executor.Request{ID: id, Code: req.Code, Files: files, Limits: limits, Network: lim.AllowNetwork,
		MaxTimeout: time.Duration(lim.MaxTimeoutSeconds * float64(time.Second))}
	if req.Network != nil {
		if *req.Network && !lim.AllowNetwork {
			return executor.Request{}, &requestError{status: http.StatusForbidden, code: api.ErrCodeForbidden,
				msg: "network: this server does not let code use the network (pyexec serve --network deny)"}
		}
		out.Network = *req.Network
	}
	out.Checkpoint = req.Checkpoint
	if b := req.OutputBudgetChars; b != nil {
		if *b < api.MinOutputBudgetChars {
			return executor.Request{}, badRequest("output_budget_chars: %d; want at least %d", *b, api.MinOutputBudgetChars)
		}
		out.OutputBudgetChars = *b
	}
	if req.Stdin != "" {
		out.Stdin = []byte(req.Stdin)
	}
	if len(req.Env) > 0 {
		out.Env = req.Env
	}
	return out, nil
}

// executionLimits starts from the server's defaults and applies the request's time and
// memory limits, which may lower them or raise them up to the server's maxima.
func executionLimits(req api.ExecuteRequest, lim api.Limits) (executor.Limits, *requestError) {
	out := executor.Limits{
		Timeout:          seconds(lim.TimeoutSeconds),
		MemoryLimitMB:    lim.MemoryLimitMB,
		MaxOutputBytes:   lim.MaxOutputBytes,
		MaxProcesses:     lim.MaxProcesses,
		MaxFileBytes:     lim.MaxFileBytes,
		MaxFilesOut:      lim.MaxFilesOut,
		MaxFilesOutBytes: lim.MaxFilesOutBytes,
	}
	if t := req.TimeoutSeconds; t != nil {
		switch {
		case !(*t > 0):
			return out, badRequest("timeout_seconds: must be > 0, got %v", *t)
		case *t < minTimeoutSeconds:
			return out, badRequest("timeout_seconds: must be at least %v, got %v", minTimeoutSeconds, *t)
		case *t > lim.MaxTimeoutSeconds:
			return out, badRequest("timeout_seconds: %v is over the server's maximum of %v", *t, lim.MaxTimeoutSeconds)
		}
		out.Timeout = seconds(*t)
	}
	if m := req.MemoryLimitMB; m != nil {
		switch {
		case *m <= 0:
			return out, badRequest("memory_limit_mb: must be > 0, got %d", *m)
		case *m < settings.MinMemoryLimitMB:
			return out, badRequest("memory_limit_mb: must be at least %d, got %d", settings.MinMemoryLimitMB, *m)
		case lim.MaxMemoryLimitMB > 0 && *m > lim.MaxMemoryLimitMB:
			return out, badRequest("memory_limit_mb: %d is over the server's maximum of %d", *m, lim.MaxMemoryLimitMB)
		}
		out.MemoryLimitMB = *m
	}
	return out, nil
}

// seconds converts a number of seconds to a Duration.
func seconds(s float64) time.Duration {
	return time.Duration(s * float64(time.Second))
}

// checkEnv checks names and values of env, in sorted order so the first problem reported
// is always the same.
func checkEnv(env map[string]string) *requestError {
	names := make([]string, 0, len(env))
	for name := range env {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		switch {
		case name == "":
			return badRequest("env: a variable name is empty")
		case strings.ContainsAny(name, "=\x00"):
			return badRequest(`env[%q]: name contains "=" or a NUL byte`, name)
		case strings.ContainsRune(env[name], 0):
			return badRequest("env[%q]: value contains a NUL byte", name)
		}
	}
	return nil
}

// decodeFiles checks the paths of files and decodes their contents, at most maxTotal bytes
// in all.
func decodeFiles(files []api.InputFile, maxTotal int64) ([]executor.File, *requestError) {
	if len(files) == 0 {
		return nil, nil
	}
	out := make([]executor.File, 0, len(files))
	seen := make(map[string]int, len(files)) // clean path → index
	var total int64
	for i, f := range files {
		p, problem := cleanFilePath(f.Path)
		if problem != "" {
			return nil, badRequest("files[%d].path: %s", i, problem)
		}
		if j, dup := seen[p]; dup {
			return nil, badRequest("files[%d].path: %q is the same file as files[%d].path %q", i, f.Path, j, files[j].Path)
		}
		seen[p] = i
		data, err := base64.StdEncoding.DecodeString(f.ContentBase64)
		if err != nil {
			return nil, badRequest("files[%d].content_base64: not valid base64 (standard encoding, padded): %v", i, err)
		}
		total += int64(len(data))
		if total > maxTotal {
			return nil, badRequest("files: decoded contents exceed max_request_bytes (%d bytes) at files[%d]", maxTotal, i)
		}
		out = append(out, executor.File{Path: p, Data: data})
	}
	if rerr := checkFileParents(files, out, seen); rerr != nil {
		return nil, rerr
	}
	return out, nil
}

// cleanFilePath returns p cleaned, or the problem with it: a file path must be relative, stay
// inside the working directory and name a file.
func cleanFilePath(p string) (clean, problem string) {
	switch {
	case p == "":
		return "", "required and must not be empty"
	case strings.ContainsRune(p, 0):
		return "", fmt.Sprintf("%q contains a NUL byte", p)
	case strings.HasPrefix(p, "/"):
		return "", fmt.Sprintf("%q is absolute; want a path relative to the working directory", p)
	case slices.Contains(strings.Split(p, "/"), ".."):
		return "", fmt.Sprintf(`%q has a ".." segment`, p)
	}
	clean = path.Clean(p)
	if clean == "." {
		return "", fmt.Sprintf("%q names the working directory itself; want a file", p)
	}
	return clean, ""
}

// checkFileParents refuses a file whose parent directory is another input file.
func checkFileParents(in []api.InputFile, files []executor.File, seen map[string]int) *requestError {
	for i, f := range files {
		for dir := path.Dir(f.Path); dir != "."; dir = path.Dir(dir) {
			if j, ok := seen[dir]; ok {
				return badRequest("files[%d].path: %q is inside files[%d].path %q, which is a file", i, in[i].Path, j, in[j].Path)
			}
		}
	}
	return nil
}
