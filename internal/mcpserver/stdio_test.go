package mcpserver

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// rpcLine is a JSON-RPC answer as it comes back on a line.
type rpcLine struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code int `json:"code"`
	} `json:"error"`
}

// TestStdioTransportAnswersBadLines: lines that are not JSON, JSON that is no JSON-RPC message
// and a line over MaxLineLength each get an error of id null, and the server goes on: the
// genuine requests after them are answered, and the server ends only when its input does.
func TestStdioTransportAnswersBadLines(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	srv := mcp.NewServer(&mcp.Implementation{Name: "t", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "noop"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{}, nil, nil
	})
	done := make(chan error, 1)
	go func() {
		done <- srv.Run(context.Background(), &StdioTransport{In: inR, Out: outW, MaxLineLength: 1024})
	}()
	go func() {
		for _, line := range []string{
			"this is not JSON",
			"",
			`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`,
			`{"no":"method"}`,
			`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
			`{"jsonrpc":"2.0","id":"x","method":"tools/list","params":{"padding":"` + strings.Repeat("a", 2048) + `"}}`,
			`{"jsonrpc":"2.0","id":2,"method":"tools/list"` + "\r",
			`{"jsonrpc":"2.0","id":3,"method":"tools/list"}` + "\r",
		} {
			if _, err := io.WriteString(inW, line+"\n"); err != nil {
				return
			}
		}
	}()
	got := map[string]rpcLine{} // by id; errors of id null in order: null0, null1, ...
	nulls := 0
	sc := bufio.NewScanner(outR)
	timer := time.AfterFunc(20*time.Second, func() { outR.Close() })
	defer timer.Stop()
	for len(got) < 6 && sc.Scan() {
		var l rpcLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("an answer that is not JSON: %q", sc.Text())
		}
		id := string(l.ID)
		if id == "null" || id == "" {
			id = "null" + string(rune('0'+nulls))
			nulls++
		}
		got[id] = l
	}
	want := map[string]int{"null0": jsonrpc.CodeParseError, "null1": jsonrpc.CodeInvalidRequest, "null2": jsonrpc.CodeInvalidRequest, "null3": jsonrpc.CodeParseError}
	for id, code := range want {
		if l, ok := got[id]; !ok || l.Error == nil || l.Error.Code != code {
			t.Errorf("answer %s: %+v; want error %d (all answers: %v)", id, l, code, got)
		}
	}
	if l := got["3"]; l.Error != nil || !strings.Contains(string(l.Result), `"noop"`) {
		t.Errorf("tools/list after the bad lines: %s %+v", l.Result, l.Error)
	}
	if l := got["1"]; l.Error != nil || !strings.Contains(string(l.Result), "protocolVersion") {
		t.Errorf("initialize: %s %+v", l.Result, l.Error)
	}
	inW.Close()
	select {
	case err := <-done:
		t.Logf("the server ended with its input: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the server did not end with its input")
	}
}

// A call still running when the input ends is answered before the server ends; a call the
// client cancelled is not waited for.
func TestStdioTransportAnswersCallsInFlightAtEOF(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	srv := mcp.NewServer(&mcp.Implementation{Name: "t", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "slow"}, func(ctx context.Context, _ *mcp.CallToolRequest, in struct {
		Forever bool `json:"forever,omitempty"`
	}) (*mcp.CallToolResult, any, error) {
		if in.Forever {
			<-ctx.Done()
			return nil, nil, ctx.Err()
		}
		time.Sleep(300 * time.Millisecond)
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "late"}}}, nil, nil
	})
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background(), &StdioTransport{In: inR, Out: outW}) }()
	go func() {
		for _, line := range []string{
			`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`,
			`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
			`{"jsonrpc":"2.0","id":"f","method":"tools/call","params":{"name":"slow","arguments":{"forever":true}}}`,
			`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"f"}}`,
			`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"slow","arguments":{}}}`,
		} {
			if _, err := io.WriteString(inW, line+"\n"); err != nil {
				return
			}
		}
		inW.Close() // the client's last request is written: its end closes
	}()
	answered := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			var l rpcLine
			if json.Unmarshal(sc.Bytes(), &l) == nil && string(l.ID) == "2" {
				answered <- string(l.Result)
			}
		}
	}()
	select {
	case err := <-done:
		outW.Close()
		select {
		case r := <-answered:
			if !strings.Contains(r, "late") {
				t.Errorf("the call in flight at EOF: %s", r)
			}
		case <-time.After(time.Second):
			t.Fatalf("the server ended (%v) without answering the call in flight at EOF", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the server did not end after its input did")
	}
}

// The input ends after calls that the SDK answers otherwise than one response line per call —
// a batch (2025-03-26 allows them), answered as one JSON array; a second call with the id of
// one in flight, answered with an error of id null — and the server still ends: it waits for
// no call that is already answered or never will be.
func TestStdioTransportEndsAfterBatchesAndReusedIDs(t *testing.T) {
	const initialize = `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`
	for name, lines := range map[string][]string{
		"batch":           {initialize, `[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]`},
		"id in flight":    {initialize, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow","arguments":{}}}`, `{"jsonrpc":"2.0","id":1,"method":"ping"}`},
		"id twice, batch": {initialize, `[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":1,"method":"ping"}]`},
	} {
		t.Run(name, func(t *testing.T) {
			inR, inW := io.Pipe()
			outR, outW := io.Pipe()
			srv := mcp.NewServer(&mcp.Implementation{Name: "t", Version: "1"}, nil)
			mcp.AddTool(srv, &mcp.Tool{Name: "slow"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
				time.Sleep(300 * time.Millisecond)
				return &mcp.CallToolResult{}, nil, nil
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- srv.Run(ctx, &StdioTransport{In: inR, Out: outW}) }()
			go io.Copy(io.Discard, outR)
			for _, line := range lines {
				if _, err := io.WriteString(inW, line+"\n"); err != nil {
					t.Fatal(err)
				}
			}
			inW.Close()
			select {
			case err := <-done:
				t.Logf("the server ended: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the server did not end after its input did: it waits for calls that were answered, or never will be")
			}
		})
	}
}
