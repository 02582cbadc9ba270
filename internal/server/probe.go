package server

import (
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Limits of the probe port's HTTP server beyond the socket's timeouts, which it shares.
const (
	// ProbeMaxHeaderBytes bounds a request's headers on the probe port (net/http adds 4 KiB
	// of slack): the kubelet and Prometheus send a few hundred bytes; more gets 431.
	ProbeMaxHeaderBytes = 8 << 10
	// ProbeWriteTimeout bounds the time from the end of a request's headers to the end of its
	// answer: /metrics is some tens of KiB, and a client that does not read it is cut off.
	ProbeWriteTimeout = 30 * time.Second
)

// ProbeConfig is where the probe port listens and how many connections it keeps.
type ProbeConfig struct {
	Addr string // TCP address, such as ":9901"
	// MaxConnections caps the connections open at once; MaxConnectionsPerIP those of one
	// remote address, every loopback address counting as one. One over a cap is closed at
	// once, logged once per burst (connections refused, listener probe) and counted in
	// pyexec_probe_connections_refused_total. <= 0: no cap.
	MaxConnections, MaxConnectionsPerIP int
}

// Probe serves ProbeHandler on a TCP port, for the kubelet and Prometheus, with the socket's
// header and idle timeouts, its body deadline, a cap on header size and on the time to answer,
// and caps on open connections, in all and per remote address: the port is open to the pod's
// network, and to code run with --network allow.
//
// Create it with Server.ListenProbe, run Serve, and stop it by passing HTTPServer to
// Server.Shutdown.
type Probe struct {
	ln net.Listener
	hs *http.Server
}

// ListenProbe listens on cfg.Addr and returns the Probe that serves ProbeHandler(gatherer)
// there; nothing is served until Serve.
func (s *Server) ListenProbe(cfg ProbeConfig, gatherer prometheus.Gatherer) (*Probe, error) {
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	conns := newProbeConnLimiter(cfg.MaxConnections, cfg.MaxConnectionsPerIP, s.log, s.m)
	return &Probe{
		ln: &limitedListener{Listener: ln, conns: conns},
		hs: &http.Server{
			Handler:           withBodyDeadline(s.ProbeHandler(gatherer), BodyTimeout, BodyMinRate),
			ReadHeaderTimeout: SocketReadHeaderTimeout,
			IdleTimeout:       SocketIdleTimeout,
			WriteTimeout:      ProbeWriteTimeout,
			MaxHeaderBytes:    ProbeMaxHeaderBytes,
		},
	}, nil
}

// Addr is the address the probe port listens on (with its port when ":0" chose one).
func (p *Probe) Addr() net.Addr { return p.ln.Addr() }

// HTTPServer is the probe port's HTTP server, for Server.Shutdown.
func (p *Probe) HTTPServer() *http.Server { return p.hs }

// Serve serves the probes until the HTTP server is shut down (http.ErrServerClosed) or its
// listener fails.
func (p *Probe) Serve() error { return p.hs.Serve(p.ln) }

// ProbeHandler returns the handler of the TCP probe port: /healthz (200 "ok" while the
// process serves), /readyz (200 only when Ready, else 503 with the reason)
// and /metrics (from gatherer).
func (s *Server) ProbeHandler(gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, reason := s.Ready(); !ok {
			writeText(w, http.StatusServiceUnavailable, reason)
			return
		}
		writeText(w, http.StatusOK, "ok (mode "+s.mode()+")")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	return mux
}

// writeText answers with one line of plain text.
func writeText(w http.ResponseWriter, status int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(text + "\n"))
}
