package app

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/pyexec/pyexec/internal/mcpserver"
	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
)

// Each MCP caller's sessions are its own, on both transports: a caller of another owner —
// another --owner or header, another `pyexec mcp` with none, or an anonymous caller of /mcp —
// given no session id lists none of them, and given the id cannot call, read, list the files
// of, or close the session; claiming the owner in _meta on a connection of another is refused.
// The victim's session is intact afterwards. The application, on the API without the header,
// still sees every session.
func TestMCPSessionsAreTheirOwners(t *testing.T) {
	s := startSidecar(t, nil)
	ctx := context.Background()
	for _, transport := range []string{"http", "stdio"} {
		t.Run(transport, func(t *testing.T) {
			alice := connectMCP(t, mcpTransportsAs(t, s, "alice-"+transport)[transport]())
			_, _, created := callTool(t, alice, mcpserver.ToolCreateSession, map[string]any{})
			id, _ := created["session_id"].(string)
			if id == "" {
				t.Fatalf("create_session: %v", created)
			}
			if res, text, _ := callTool(t, alice, mcpserver.ToolRunPython, map[string]any{"session_id": id,
				"code": "secret = 'alice-only'\nopen('secret.txt', 'w').write(secret)"}); res.IsError {
				t.Fatalf("alice's call: %q", text)
			}
			if res, text, _ := callTool(t, alice, mcpserver.ToolCheckpointSession, map[string]any{"session_id": id}); res.IsError {
				t.Fatalf("alice's checkpoint: %q", text)
			}
			uri := "pyexec://sessions/" + id + "/files/secret.txt"
			attackers := map[string]*mcp.ClientSession{
				"another owner":      connectMCP(t, mcpTransportsAs(t, s, "mallory")[transport]()),
				"no owner given":     connectMCP(t, mcpTransports(t, s)[transport]()),
				"the owner in _meta": connectMCP(t, mcpTransportsAs(t, s, "mallory")[transport]()),
			}
			for who, cs := range attackers {
				var meta mcp.Meta
				if who == "the owner in _meta" {
					meta = mcp.Meta{mcpserver.MetaOwner: "alice-" + transport}
				}
				call := func(name string, args map[string]any) (*mcp.CallToolResult, string) {
					t.Helper()
					res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args, Meta: meta})
					if err != nil {
						t.Fatalf("%s: %s: %v", who, name, err)
					}
					var b strings.Builder
					for _, c := range res.Content {
						if tc, ok := c.(*mcp.TextContent); ok {
							b.WriteString(tc.Text)
						}
					}
					return res, b.String()
				}
				if _, text := call(mcpserver.ToolListSessions, map[string]any{}); strings.Contains(text, id) {
					t.Errorf("%s: list_sessions shows alice's session: %q", who, text)
				}
				for r, err := range cs.Resources(ctx, &mcp.ListResourcesParams{Meta: meta}) {
					if err == nil && strings.Contains(r.URI, id) {
						t.Errorf("%s: resources/list names alice's file %s", who, r.URI)
					}
				}
				if res, text := call(mcpserver.ToolRunPython, map[string]any{"session_id": id, "code": "print(secret)\nsecret = 'mallory was here'"}); !res.IsError || strings.Contains(text, "alice-only") {
					t.Errorf("%s: ran code in alice's session: %v %q", who, res.IsError, text)
				}
				if res, text := call(mcpserver.ToolInspectSession, map[string]any{"session_id": id}); !res.IsError || strings.Contains(text, "secret") {
					t.Errorf("%s: inspected alice's session: %q", who, text)
				}
				for _, tool := range []string{mcpserver.ToolCheckpointSession, mcpserver.ToolRestoreSession} {
					if res, text := call(tool, map[string]any{"session_id": id, "checkpoint": "c1"}); !res.IsError || strings.Contains(text, "c1 (taken") {
						t.Errorf("%s: %s on alice's session: %q", who, tool, text)
					}
				}
				if res, text := call(mcpserver.ToolForkSession, map[string]any{"session_id": id}); !res.IsError || strings.Contains(text, "forked into") {
					t.Errorf("%s: forked alice's session: %q", who, text)
				}
				if read, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri, Meta: meta}); err == nil {
					t.Errorf("%s: read alice's file: %+v", who, read.Contents)
				}
				if res, text := call(mcpserver.ToolCloseSession, map[string]any{"session_id": id}); !res.IsError {
					t.Errorf("%s: closed alice's session: %q", who, text)
				}
			}
			// Alice's session is whole, and hers to list and read.
			if res, text, _ := callTool(t, alice, mcpserver.ToolRunPython, map[string]any{"session_id": id, "code": "print(secret)"}); res.IsError || text != "stdout:\nalice-only\n" {
				t.Errorf("alice's session after the attacks: %v %q", res.IsError, text)
			}
			if _, text, _ := callTool(t, alice, mcpserver.ToolListSessions, map[string]any{}); !strings.Contains(text, id) {
				t.Errorf("alice's list_sessions: %q", text)
			}
			if read, err := alice.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri}); err != nil || read.Contents[0].Text != "alice-only" {
				t.Errorf("alice reads her file: %v %v", read, err)
			}
			// The application sees it; over the API as the owner, so does alice.
			all, err := s.client.Sessions(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var owner string
			for _, sess := range all.Sessions {
				if sess.ID == id {
					owner = sess.Owner
				}
			}
			if owner != "alice-"+transport {
				t.Errorf("the application lists alice's session with owner %q", owner)
			}
			if _, err := s.client.Session(client.WithOwner(ctx, "mallory"), id); err == nil {
				t.Error("the API as mallory gets alice's session")
			}
		})
	}
	// Two `pyexec mcp` without --owner are two owners.
	tr := mcpTransports(t, s)["stdio"]
	first, second := connectMCP(t, tr()), connectMCP(t, tr())
	_, _, created := callTool(t, first, mcpserver.ToolCreateSession, map[string]any{})
	id, _ := created["session_id"].(string)
	if _, text, _ := callTool(t, first, mcpserver.ToolListSessions, map[string]any{}); id == "" || !strings.Contains(text, id) {
		t.Fatalf("the first pyexec mcp lists %q; want its session %q", text, id)
	}
	if _, text, _ := callTool(t, second, mcpserver.ToolListSessions, map[string]any{}); strings.Contains(text, id) {
		t.Errorf("a second pyexec mcp lists the first one's session: %q", text)
	}
	if res, _, _ := callTool(t, second, mcpserver.ToolRunPython, map[string]any{"session_id": id, "code": "1"}); !res.IsError {
		t.Error("a second pyexec mcp ran code in the first one's session")
	}
	// An anonymous /mcp caller reaches a session of no owner by its id (ids are unguessable),
	// but lists none.
	anon := connectMCP(t, mcpTransports(t, s)["http"]())
	_, _, created = callTool(t, anon, mcpserver.ToolCreateSession, map[string]any{})
	anonID, _ := created["session_id"].(string)
	if res, text, _ := callTool(t, anon, mcpserver.ToolRunPython, map[string]any{"session_id": anonID, "code": "print(7)"}); res.IsError || text != "stdout:\n7\n" {
		t.Errorf("an anonymous caller's own session: %v %q", res.IsError, text)
	}
	if _, text, listed := callTool(t, anon, mcpserver.ToolListSessions, map[string]any{}); strings.Contains(text, anonID) || len(listed["sessions"].([]any)) != 0 {
		t.Errorf("an anonymous caller is listed sessions: %q", text)
	}
}

// headerTransport sends every request with api.OwnerHeader set to values exactly, as an
// application that sets it to an empty or a repeated key would.
type headerTransport struct {
	values []string
	next   http.RoundTripper
}

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header[api.OwnerHeader] = h.values
	return h.next.RoundTrip(r)
}

// Attacks on the owner of a /mcp request from outside: an application that sends
// Pyexec-Owner empty (a user without a key) or twice must not make its caller anonymous, free
// to claim any owner in _meta (the API answers such a header 400); and an anonymous caller
// given the id of another owner's ended session is told no more than of one that never
// existed (the API tells why a session ended only to its owner).
func TestMCPOwnerAttacks(t *testing.T) {
	s := startSidecar(t, nil)
	ctx := context.Background()
	alice := connectMCP(t, mcpTransportsAs(t, s, "alice")["http"]())
	_, _, created := callTool(t, alice, mcpserver.ToolCreateSession, map[string]any{})
	id, _ := created["session_id"].(string)
	if res, text, _ := callTool(t, alice, mcpserver.ToolRunPython, map[string]any{"session_id": id, "code": "secret = 'alice-only'"}); id == "" || res.IsError {
		t.Fatalf("alice's session %q: %q", id, text)
	}
	dial := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", s.socket)
	}}
	for name, values := range map[string][]string{"empty": {""}, "blank": {"  "}, "twice": {"alice", "alice"}} {
		t.Run("header "+name, func(t *testing.T) {
			cs := connectMCP(t, &mcp.StreamableClientTransport{Endpoint: "http://pyexec/mcp",
				HTTPClient: &http.Client{Transport: headerTransport{values: values, next: dial}}})
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: mcpserver.ToolRunPython,
				Arguments: map[string]any{"session_id": id, "code": "print(secret)"}, Meta: mcp.Meta{mcpserver.MetaOwner: "alice"}})
			if err == nil && !res.IsError {
				t.Errorf("Pyexec-Owner %q and _meta owner alice: ran code in alice's session: %+v", values, res.Content[0])
			}
		})
	}
	t.Run("ended session, anonymous", func(t *testing.T) {
		if res, text, _ := callTool(t, alice, mcpserver.ToolCloseSession, map[string]any{"session_id": id}); res.IsError {
			t.Fatalf("alice closes her session: %q", text)
		}
		anon := connectMCP(t, mcpTransports(t, s)["http"]())
		for tool, args := range map[string]map[string]any{mcpserver.ToolRunPython: {"session_id": id, "code": "1"}, mcpserver.ToolCloseSession: {"session_id": id}} {
			if _, text, _ := callTool(t, anon, tool, args); !strings.Contains(text, "no such session") {
				t.Errorf("%s as an anonymous caller: %q; want no such session, as to another owner", tool, text)
			}
		}
	})
}
