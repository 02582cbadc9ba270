package app

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
)

// Caps of the probe port in these tests: small, so that a flood is mostly refused.
const (
	listenersProbeMax      = 16
	listenersProbeMaxPerIP = 4
)

// TestHostileListeners attacks what the pod's server listens on, as a client on the pod's
// network (or code with --network allow) and a misbehaving client of the socket would, and
// judges from outside: the server's memory (/proc/PID/status), the connections it keeps, and
// genuine requests and /readyz afterwards.
func TestHostileListeners(t *testing.T) {
	// On every address: a genuine client comes from this machine's own, non-loopback address
	// while the flood comes from loopback.
	s := podSidecar(t, podOptions{}, "--probe-addr", "0.0.0.0:0", "--max-concurrent", "1", "--log-code",
		"--probe-max-connections", strconv.Itoa(listenersProbeMax), "--probe-max-connections-per-ip", strconv.Itoa(listenersProbeMaxPerIP))
	t.Run("probe connection flood", func(t *testing.T) { probeFlood(t, s) })
	t.Run("trickled body", func(t *testing.T) { trickledBodies(t, s) })
	t.Run("mcp hang-up", func(t *testing.T) { mcpHangUp(t, s) })
}

// mcpHangUp calls run_python over /mcp with code that sleeps for 300 s, and hangs up once it
// runs: as an execution, then as a call in a session. Each ends soon after (its log line,
// pyexec_executions_in_flight), the session lives on (the call is interrupted, as at its time
// limit), and a genuine call gets the one execution slot (--max-concurrent 1).
func mcpHangUp(t *testing.T, s *sidecar) {
	cs := connectMCP(t, mcpTransports(t, s)["http"]())
	hangUpOnMCP(t, s, `"code":"import time\ntime.sleep(300)","timeout_seconds":300`)
	_, _, created := callTool(t, cs, "create_session", map[string]any{})
	id, _ := created["session_id"].(string)
	if id == "" {
		t.Fatalf("create_session: %v", created)
	}
	callTool(t, cs, "run_python", map[string]any{"session_id": id, "code": "x = 41"})
	hangUpOnMCP(t, s, `"session_id":"`+id+`","code":"import time\ntime.sleep(300)","timeout_seconds":300`)
	res, text, _ := callTool(t, cs, "run_python", map[string]any{"session_id": id, "code": "x + 1"})
	if res.IsError || !strings.Contains(text, "42") {
		t.Fatalf("the session after its call's client hung up: %q", text)
	}
	res, text, _ = callTool(t, cs, "run_python", map[string]any{"code": "print(6 * 7)"})
	if res.IsError || !strings.Contains(text, "42") {
		t.Fatalf("a genuine run_python after the hang-ups: %q", text)
	}
}

// hangUpOnMCP calls run_python with args (JSON members) on a connection of its own, hangs up
// once the execution runs, and waits until it has ended.
func hangUpOnMCP(t *testing.T, s *sidecar, args string) {
	t.Helper()
	before := len(sleepers(s))
	c, err := net.Dial("unix", s.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"run_python","arguments":{` + args + `}}}`
	fmt.Fprintf(c, "POST /mcp HTTP/1.1\r\nHost: pyexec\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: %d\r\n\r\n%s", len(call), call)
	for deadline := time.Now().Add(30 * time.Second); metric(t, s, "pyexec_executions_in_flight") != 1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the call over /mcp is not running after 30 s: %s", s.allLogs())
		}
	}
	hungUp := time.Now()
	c.Close()
	for deadline := hungUp.Add(60 * time.Second); len(sleepers(s)) == before; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the execution of a client that hung up on /mcp still runs 60 s later")
		}
	}
	line := sleepers(s)[before]
	t.Logf("%s: the execution ended %v after the client hung up: reason %v, exit code %v, %v ms", args, time.Since(hungUp).Round(10*time.Millisecond), line["reason"], line["exitCode"], line["durationMs"])
	if n := metric(t, s, "pyexec_executions_in_flight"); n != 0 {
		t.Errorf("pyexec_executions_in_flight %v after the hang-up, want 0", n)
	}
}

// trickleBound is how long a trickled body may hold its connection in these tests: the body
// deadline (10 s with nothing earned) and a generous margin for a loaded machine.
const trickleBound = 60 * time.Second

// trickledBodies sends, at once, a request to the socket and one to the probe port whose
// headers announce a body that then trickles in, a byte a second. Each connection is closed
// within the bound, and genuine requests on fresh connections are served.
func trickledBodies(t *testing.T, s *sidecar) {
	_, port, err := net.SplitHostPort(s.probe)
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]struct{ network, addr, head string }{
		"socket": {"unix", s.socket, "POST /v1/execute HTTP/1.1\r\nHost: pyexec\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"code\": \""},
		"probe":  {"tcp", net.JoinHostPort("127.0.0.1", port), "GET /healthz HTTP/1.1\r\nHost: pyexec\r\nContent-Length: 100000\r\n\r\n"},
	}
	var wg sync.WaitGroup
	for name, tg := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			took, err := trickle(tg.network, tg.addr, tg.head)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				return
			}
			t.Logf("%s: a trickled body's connection was closed after %v", name, took.Round(100*time.Millisecond))
		}()
	}
	wg.Wait()
	if res := s.execute(t, api.ExecuteRequest{Code: "print(6 * 7)"}); res.Stdout != "42\n" {
		t.Errorf("a genuine execution after the trickles: %+v", res)
	}
	if code, body := probeGet(t, clientFrom("127.0.0.1"), "127.0.0.1", port, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after the trickles: %d %q", code, body)
	}
}

// trickle connects, sends head, then a byte a second, and returns when the server closes the
// connection (a write or a read fails), or fails after trickleBound.
func trickle(network, addr, head string) (time.Duration, error) {
	c, err := net.Dial(network, addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, head); err != nil {
		return 0, err
	}
	gone := make(chan struct{})
	go func() {
		// Whatever the server answers, the connection ends when it closes it.
		_, _ = io.Copy(io.Discard, c)
		close(gone)
	}()
	for time.Since(start) < trickleBound {
		select {
		case <-gone:
			return time.Since(start), nil
		case <-time.After(time.Second):
			if _, err := c.Write([]byte("a")); err != nil {
				return time.Since(start), nil
			}
		}
	}
	return 0, fmt.Errorf("a trickled body still holds its connection after %v", trickleBound)
}

// probeFlood opens 1,500 keep-alive connections to the probe port from loopback, each asking
// /healthz once and then idle. The server answers as many as its per-address cap and closes
// the others at once; meanwhile a genuine client from another address is answered, and after
// the flood one from loopback too. The server's resident memory before and during the flood
// is logged.
func probeFlood(t *testing.T, s *sidecar) {
	const flood = 1500
	_, port, err := net.SplitHostPort(s.probe)
	if err != nil {
		t.Fatal(err)
	}
	pid := s.cmd.Process.Pid
	rssBefore, hwmBefore := procStatusKB(t, pid, "VmRSS"), procStatusKB(t, pid, "VmHWM")

	conns := make([]net.Conn, 0, flood)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range flood {
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", port))
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns), err)
		}
		conns = append(conns, c)
		// A refused connection may be closed before this is written: the answer says.
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: pyexec\r\n\r\n")
	}
	// Each connection is answered and kept (a 200, then idle) or closed unanswered.
	var answered, closed int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				closed++
				return
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				answered++
			}
		}()
	}
	wg.Wait()
	rssDuring, hwmDuring := procStatusKB(t, pid, "VmRSS"), procStatusKB(t, pid, "VmHWM")
	t.Logf("%d connections to the probe port: %d answered and kept, %d closed; the server's VmRSS %d KiB before, %d KiB with them open (VmHWM %d, then %d KiB)",
		flood, answered, closed, rssBefore, rssDuring, hwmBefore, hwmDuring)
	if answered > listenersProbeMaxPerIP {
		t.Errorf("%d connections from one address answered, want at most --probe-max-connections-per-ip %d", answered, listenersProbeMaxPerIP)
	}
	if answered+closed != flood {
		t.Errorf("%d connections neither answered nor closed within 30 s", flood-answered-closed)
	}
	if lines := s.logs("connections refused"); len(lines) != 1 || lines[0]["listener"] != "probe" || lines[0]["reason"] != "max_connections_per_ip" {
		t.Errorf("log lines about refused connections %v; want one for the burst, naming the probe port and the cap", lines)
	}

	if ip := testutil.NonLoopbackIPv4(); ip != "" {
		other := clientFrom(ip)
		if code, body := probeGet(t, other, ip, port, "/healthz"); code != http.StatusOK {
			t.Errorf("a genuine /healthz from %s during the flood: %d %q", ip, code, body)
		}
		if code, body := probeGet(t, other, ip, port, "/readyz"); code != http.StatusOK {
			t.Errorf("/readyz from %s during the flood: %d %q", ip, code, body)
		}
		_, metrics := probeGet(t, other, ip, port, "/metrics")
		t.Logf("during the flood: %s", grepLines(metrics, "pyexec_probe_connections"))
		other.CloseIdleConnections()
	} else {
		t.Log("no non-loopback address on this machine: a genuine client is checked after the flood only")
	}

	for _, c := range conns {
		c.Close()
	}
	conns = nil
	loop := clientFrom("127.0.0.1")
	defer loop.CloseIdleConnections()
	var code int
	var body string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if code, body = probeGet(t, loop, "127.0.0.1", port, "/healthz"); code == http.StatusOK {
			break
		}
	}
	if code != http.StatusOK {
		t.Errorf("a genuine /healthz from loopback after the flood: %d %q", code, body)
	}
}

// sleepers are the log lines of the executions that ran the code of hangUpOnMCP (--log-code).
func sleepers(s *sidecar) []map[string]any {
	var out []map[string]any
	for _, l := range s.logs("execution finished") {
		if code, _ := l["code"].(string); strings.Contains(code, "time.sleep(300)") {
			out = append(out, l)
		}
	}
	return out
}

// clientFrom is an HTTP client whose connections come from the address ip.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// probeGet asks the probe port at ip:port for path; code 0 when no answer came.
func probeGet(t *testing.T, c *http.Client, ip, port, path string) (int, string) {
	t.Helper()
	return testutil.HTTPGet(c, "http://"+net.JoinHostPort(ip, port)+path)
}

// grepLines returns the lines of text that start with prefix, joined.
func grepLines(text, prefix string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "; ")
}
