package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/pyexec/pyexec/pkg/api"
)

// RawResult is an execution's result as the server answered it. Body is the answer's JSON,
// the whole api.ExecuteResult; Result is decoded from it without the contents of the files
// (each has its path and size, no content_base64), its outputs whole. A proxy passes Body on
// as it is and reads what it needs of Result, and so holds the files once, as JSON, not also
// decoded: pyexec's MCP server does, with Body as run_python's structured content.
type RawResult struct {
	Result *api.ExecuteResult
	Body   []byte
}

// ExecuteRaw runs code as Execute does, and returns the result as the server answered it.
func (c *Client) ExecuteRaw(ctx context.Context, req api.ExecuteRequest) (*RawResult, error) {
	return c.executeRaw(ctx, "/v1/execute", req)
}

// SessionExecuteRaw runs code in a session as SessionExecute does, and returns the result as
// the server answered it.
func (c *Client) SessionExecuteRaw(ctx context.Context, id string, req api.ExecuteRequest) (*RawResult, error) {
	path, err := sessionPath(id, "/execute")
	if err != nil {
		return nil, err
	}
	return c.executeRaw(ctx, path, req)
}

func (c *Client) executeRaw(ctx context.Context, path string, req api.ExecuteRequest) (*RawResult, error) {
	resp, err := c.post(ctx, path, req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := readBody(resp)
	if err != nil {
		return nil, fmt.Errorf("pyexec: reading the answer of %s: %w", path, err)
	}
	var head struct {
		api.ExecuteResult
		Files []struct {
			Path string `json:"path"`
			Size int64  `json:"size"`
		} `json:"files"` // paths and sizes, not contents
	}
	if err := json.Unmarshal(body, &head); err != nil {
		return nil, fmt.Errorf("pyexec: reading the answer of %s: %w", path, err)
	}
	res := &head.ExecuteResult
	res.Files = make([]api.OutputFile, len(head.Files))
	for i, f := range head.Files {
		res.Files[i] = api.OutputFile{Path: f.Path, Size: f.Size}
	}
	return &RawResult{Result: res, Body: body}, nil
}

// maxPreallocBytes is the largest Content-Length a body is allocated for before it is read;
// a larger one grows as it is read.
const maxPreallocBytes = 1 << 30

// readBody reads a response's whole body into one buffer of its Content-Length, or takes it
// as it is when it was served in process.
func readBody(resp *http.Response) ([]byte, error) {
	if b, ok := resp.Body.(*recordedBody); ok && b.Len() == len(b.body) {
		return b.body, nil
	}
	if n := resp.ContentLength; n >= 0 && n <= maxPreallocBytes {
		body := make([]byte, n)
		if _, err := io.ReadFull(resp.Body, body); err != nil {
			return nil, err
		}
		return body, nil
	}
	return io.ReadAll(resp.Body)
}
