package server

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyexec/pyexec/internal/logs"
	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
)

// probeHarness is a ready Server's probe port (ListenProbe, on every address).
type probeHarness struct {
	t    *testing.T
	srv  *Server
	p    *Probe
	reg  *prometheus.Registry
	logs *syncBuffer
	port string
}

func newProbeHarness(t *testing.T, cfg ProbeConfig) *probeHarness {
	t.Helper()
	h := &probeHarness{t: t, reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	h.srv = New(testConfig(), okExec, logs.New(h.logs, logs.Options{Format: logs.FormatJSON}), h.reg)
	h.srv.SetReady(api.Info{Preflight: api.Preflight{OK: true}})
	p, err := h.srv.ListenProbe(cfg, h.reg)
	if err != nil {
		t.Fatal(err)
	}
	h.p = p
	_, h.port, _ = net.SplitHostPort(p.Addr().String())
	done := make(chan error, 1)
	go func() { done <- p.Serve() }()
	t.Cleanup(func() {
		_ = p.HTTPServer().Close()
		<-done
	})
	return h
}

// flood opens n connections to the probe port from the address from, each asking /healthz
// once, and returns those the server answered (and keeps open) and how many it closed.
func (h *probeHarness) flood(from string, n int) (kept []net.Conn, closed int) {
	h.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	to := from
	var conns []net.Conn
	for range n {
		c, err := d.Dial("tcp", net.JoinHostPort(to, h.port))
		if err != nil {
			h.t.Fatal(err)
		}
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: probe\r\n\r\n")
		conns = append(conns, c)
	}
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(waitLimit))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				h.t.Fatalf("a connection from %s was neither answered nor closed", from)
			}
			closed++
			c.Close()
			continue
		}
		resp.Body.Close()
		kept = append(kept, c)
	}
	h.t.Cleanup(func() {
		for _, c := range kept {
			c.Close()
		}
	})
	return kept, closed
}

// get asks the probe port for path from the address from.
func (h *probeHarness) get(from, path string) (int, string) {
	h.t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c := &http.Client{Timeout: waitLimit, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	return testutil.HTTPGet(c, "http://"+net.JoinHostPort(from, h.port)+path)
}

// TestProbeCapsConnections: floods of idle connections to the probe port from two addresses.
// Each address keeps at most its cap and all of them the total cap; the others are closed at
// once, counted by cap and logged; every loopback address counts as one peer; a genuine probe
// from another address is answered while one address holds its cap, and the places come back
// when the connections close.
func TestProbeCapsConnections(t *testing.T) {
	own := testutil.NonLoopbackIPv4()
	if own == "" {
		t.Skip("SKIPPED: no non-loopback IPv4 address on this machine to connect from as a second peer")
	}
	const perIP, total, flood = 4, 6, 100
	h := newProbeHarness(t, ProbeConfig{Addr: "0.0.0.0:0", MaxConnections: total, MaxConnectionsPerIP: perIP})

	loop, closed := h.flood("127.0.0.1", flood/2)
	loop2, closed2 := h.flood("127.0.0.2", flood/2) // another loopback address: the same peer
	if len(loop)+len(loop2) != perIP || closed+closed2 != flood-perIP {
		t.Fatalf("from loopback: %d kept, %d closed; want %d kept (--probe-max-connections-per-ip)", len(loop)+len(loop2), closed+closed2, perIP)
	}
	if code, body := h.get(own, "/healthz"); code != http.StatusOK {
		t.Fatalf("a genuine probe from %s while loopback holds its cap: %d %q", own, code, body)
	}
	if v := metricValue(t, h.reg, "pyexec_probe_connections_refused_total", "reason", refusedMaxConnectionsPerIP); v != flood-perIP {
		t.Errorf("refused per address: %v, want %d", v, flood-perIP)
	}

	ownKept, ownClosed := h.flood(own, flood)
	if len(ownKept) != total-perIP || ownClosed != flood-(total-perIP) {
		t.Fatalf("from %s: %d kept, %d closed; want %d kept (--probe-max-connections)", own, len(ownKept), ownClosed, total-perIP)
	}
	if v := metricValue(t, h.reg, "pyexec_probe_connections_refused_total", "reason", refusedMaxConnections); v != float64(ownClosed) {
		t.Errorf("refused by the total cap: %v, want %d", v, ownClosed)
	}
	if v := metricValue(t, h.reg, "pyexec_probe_connections_open", "", ""); v != total {
		t.Errorf("pyexec_probe_connections_open %v, want %d", v, total)
	}
	lines := h.logs.lines(t, "connections refused")
	if len(lines) == 0 || lines[0]["listener"] != listenerProbe || lines[0]["ip"] != loopbackPeer {
		t.Errorf("log lines %v; want the first naming the probe listener and the loopback peer", lines)
	}

	for _, c := range ownKept {
		c.Close()
	}
	waitFor(t, "the closed connections' places to come back", func() bool {
		return metricValue(t, h.reg, "pyexec_probe_connections_open", "", "") == perIP
	})
	if code, body := h.get(own, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz from %s after its flood: %d %q", own, code, body)
	}
	hs := h.p.HTTPServer()
	if hs.ReadHeaderTimeout != SocketReadHeaderTimeout || hs.IdleTimeout != SocketIdleTimeout || hs.MaxHeaderBytes != ProbeMaxHeaderBytes || hs.WriteTimeout != ProbeWriteTimeout {
		t.Errorf("probe server: read header %v, idle %v, max header bytes %d, write %v", hs.ReadHeaderTimeout, hs.IdleTimeout, hs.MaxHeaderBytes, hs.WriteTimeout)
	}
}

// TestProbeRefusesHugeHeaders: headers over ProbeMaxHeaderBytes (and its slack) get 431, and
// the next probe is answered.
func TestProbeRefusesHugeHeaders(t *testing.T) {
	h := newProbeHarness(t, ProbeConfig{Addr: "127.0.0.1:0", MaxConnections: 8, MaxConnectionsPerIP: 4})
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", h.port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: probe\r\nX-Big: "+strings.Repeat("a", 4*ProbeMaxHeaderBytes)+"\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(waitLimit))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("a request with %d bytes of headers: %v %v; want 431", 4*ProbeMaxHeaderBytes, resp, err)
	}
	if code, _ := h.get("127.0.0.1", "/healthz"); code != http.StatusOK {
		t.Fatalf("a genuine probe after: %d", code)
	}
}
