package mcpserver

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// addTool adds a tool whose arguments are decoded into In here rather than by the SDK, so
// that the forms of arguments older clients send (upgrade turns them into today's) are still
// taken while the input schema declares only today's: one that strict modes of model APIs
// accept (objects with fixed properties, no maps). The arguments are then checked against the
// schema, as the SDK would, and a handler's failure is a result with isError and no
// structured content.
func addTool[In any](s *mcp.Server, tool *mcp.Tool, upgrade func(args map[string]any), h func(context.Context, *mcp.CallToolRequest, In) *mcp.CallToolResult) {
	if tool.InputSchema == nil {
		tool.InputSchema = schemaOf[In]()
	}
	resolved, err := tool.InputSchema.(*jsonschema.Schema).Resolve(nil)
	if err != nil {
		panic(fmt.Sprintf("the input schema of %s: %v", tool.Name, err))
	}
	s.AddTool(tool, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		args := map[string]any{}
		if raw := req.Params.Arguments; len(raw) > 0 && string(raw) != "null" {
			if err := json.Unmarshal(raw, &args); err != nil {
				return failed("arguments: not a JSON object: " + err.Error()), nil
			}
		}
		if upgrade != nil {
			upgrade(args)
		}
		if err := resolved.Validate(args); err != nil {
			return failed("arguments: " + err.Error()), nil
		}
		b, err := json.Marshal(args)
		if err != nil {
			return failed("arguments: " + err.Error()), nil
		}
		var in In
		if err := json.Unmarshal(b, &in); err != nil {
			return failed("arguments: " + err.Error()), nil
		}
		return h(ctx, req, in), nil
	})
}

// schemaOf is the JSON schema of T, as mcp.AddTool derives it.
func schemaOf[T any]() *jsonschema.Schema {
	s, err := jsonschema.ForType(reflect.TypeFor[T](), &jsonschema.ForOptions{})
	if err != nil {
		panic(fmt.Sprintf("the schema of %v: %v", reflect.TypeFor[T](), err))
	}
	return s
}

// structured is a result's structured content: out as JSON.
func structured(r *mcp.CallToolResult, out any) *mcp.CallToolResult {
	b, err := json.Marshal(out)
	if err != nil {
		return failed("encoding the result: " + err.Error())
	}
	r.StructuredContent = json.RawMessage(b)
	return r
}

// FileInput is a text file written into the working directory before the code runs.
type FileInput struct {
	Path    string `json:"path" jsonschema:"relative path in the working directory"`
	Content string `json:"content" jsonschema:"the file's text"`
}

// EnvVar is an environment variable.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// upgradeMaps turns each of keys given as an object of strings (the form of earlier versions:
// {"a.csv": "x,y"}) into today's list of objects ([{"path": "a.csv", "content": "x,y"}]),
// sorted by name, with names under nameKey and values under valueKey. Anything else is left
// for the schema to refuse.
func upgradeMaps(nameKey, valueKey string, keys ...string) func(map[string]any) {
	return func(args map[string]any) {
		for _, k := range keys {
			m, ok := args[k].(map[string]any)
			if !ok {
				continue
			}
			names := make([]string, 0, len(m))
			for n := range m {
				names = append(names, n)
			}
			sort.Strings(names)
			list := make([]any, 0, len(m))
			for _, n := range names {
				list = append(list, map[string]any{nameKey: n, valueKey: m[n]})
			}
			args[k] = list
		}
	}
}
