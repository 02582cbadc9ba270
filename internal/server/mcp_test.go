package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// A content passed on is written in place of the JSON string that stands for it, wherever
// that is in a write; what does not hold it, or holds another carrier's, is written as it is.
func TestCarrierWritesWhatItPassedOn(t *testing.T) {
	c := newCarrier()
	ctx := withCarrier(context.Background(), c)
	body := json.RawMessage(`{"id":"r1","files":[{"path":"a","size":1,"content_base64":"AA=="}]}`)
	stand := passOn(ctx, body)
	if bytes.Contains(stand, []byte("r1")) || !json.Valid(stand) {
		t.Fatalf("what stands for the content: %s", stand)
	}
	// It may stand for an image's data: the SDK writes the data's base64, the same string.
	data, err := base64.StdEncoding.DecodeString(string(bytes.Trim(stand, `"`)))
	if again, _ := json.Marshal(data); err != nil || !bytes.Equal(again, stand) {
		t.Errorf("%s as an image's data is written as %s (%v)", stand, again, err)
	}
	image := json.RawMessage(`"iVBORw0K"`)
	imageStand := passOn(ctx, image) // passed on after the result, written before it
	other := newCarrier().pass(json.RawMessage(`{"other":true}`))
	msg := []byte(`{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"image","data":` + string(imageStand) + `}],"structuredContent":` + string(stand) + `,"other":` + string(other) + `}}`)
	got := bytes.Join(c.expand(msg), nil)
	want := `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"image","data":"iVBORw0K"}],"structuredContent":` + string(body) + `,"other":` + string(other) + `}}`
	if string(got) != want {
		t.Errorf("written:\n%s\nwant:\n%s", got, want)
	}
	if plain := []byte(`{"jsonrpc":"2.0","id":2,"result":{}}`); !bytes.Equal(bytes.Join(c.expand(plain), nil), plain) {
		t.Error("a write without a token changed")
	}
	if again := passOn(context.Background(), body); !bytes.Equal(again, body) {
		t.Errorf("without a carrier: %s; want the content itself", again)
	}
	c.written()
	if got := bytes.Join(c.expand(msg), nil); !bytes.Equal(got, msg) {
		t.Error("a content was written after its carrier's response")
	}
}

// /mcp takes a body of at most --max-request-bytes, as the API does, and answers 413 past it.
func TestMCPBodyLimit(t *testing.T) {
	cfg := testConfig()
	cfg.MCP = true
	h := newHarness(t, cfg, okExec, true)
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"run_python","arguments":{"code":"` +
		strings.Repeat("x", int(cfg.Limits.MaxRequestBytes)) + `"}}}`
	req, err := http.NewRequest(http.MethodPost, "http://pyexec/mcp", strings.NewReader(call))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "--max-request-bytes") {
		t.Errorf("a body over the limit: %d %s", resp.StatusCode, b)
	}
}

// Only a tools/call with a progress token is answered as events.
func TestAsksProgress(t *testing.T) {
	for body, want := range map[string]bool{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":"t"},"name":"run_python"}}`: true,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":7},"name":"run_python"}}`:   true,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":null}}}`:                    false,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"run_python"}}`:                               false,
		`{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"progressToken":"t"}}}`:                     false,
		`[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":"t"}}}]`:                   false,
		`not json`: false,
	} {
		if got := asksProgress([]byte(body)); got != want {
			t.Errorf("%s: %v, want %v", body, got, want)
		}
	}
}
