package server

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
)

// Why a connection was refused: the label of pyexec_connections_refused_total (the socket)
// and pyexec_probe_connections_refused_total (the probe port).
const (
	refusedMaxConnections       = "max_connections"
	refusedMaxConnectionsPerUID = "max_connections_per_uid"
	refusedMaxConnectionsPerIP  = "max_connections_per_ip"
)

// Names of the listeners, in the log line about refused connections.
const (
	listenerSocket = "socket"
	listenerProbe  = "probe"
)

// refusedLogEvery spaces the log lines about refused connections: a client that opens
// thousands of connections gets one line per burst, with the count, not one line each.
const refusedLogEvery = 10 * time.Second

// connLimiter caps the connections open at once on a listener: in all, and per peer — a uid
// on the Unix socket (SO_PEERCRED), a remote address on TCP. A connection holds its place
// from Accept until it is closed, idle or not.
type connLimiter struct {
	listener        string // listenerSocket or listenerProbe, for the log
	max, maxPerPeer int    // <= 0: no cap
	perPeerReason   string // refusedMaxConnectionsPerUID or refusedMaxConnectionsPerIP
	peerKind        string // "Uid" or "Ip": the suffix of the log's per-peer keys
	log             logr.Logger
	openGauge       prometheus.Gauge
	refusedCounter  *prometheus.CounterVec

	mu      sync.Mutex
	open    int
	byPeer  map[string]int
	refused int // refusals since the last log line, this one included
	lastLog time.Time
}

// newConnLimiter returns the socket's limiter: max connections in all and maxPerUID per peer
// uid.
func newConnLimiter(max, maxPerUID int, log logr.Logger, m *metrics) *connLimiter {
	return &connLimiter{listener: listenerSocket, max: max, maxPerPeer: maxPerUID, perPeerReason: refusedMaxConnectionsPerUID,
		peerKind: "Uid", log: log, openGauge: m.connsOpen, refusedCounter: m.connsRefused, byPeer: map[string]int{}}
}

// newProbeConnLimiter returns the probe port's limiter: max connections in all and maxPerIP
// per remote address.
func newProbeConnLimiter(max, maxPerIP int, log logr.Logger, m *metrics) *connLimiter {
	return &connLimiter{listener: listenerProbe, max: max, maxPerPeer: maxPerIP, perPeerReason: refusedMaxConnectionsPerIP,
		peerKind: "Ip", log: log, openGauge: m.probeConnsOpen, refusedCounter: m.probeConnsRefused, byPeer: map[string]int{}}
}

// uidPeer is the limiter's key of a peer of the Unix socket; uid -1: credentials unknown.
func uidPeer(uid int) string { return strconv.Itoa(uid) }

// loopbackPeer is the key of every loopback address: a process on the pod's own network may
// connect from any address of 127.0.0.0/8, so that they count as one peer.
const loopbackPeer = "loopback"

// ipPeer is the limiter's key of a TCP peer: its address (IPv4-mapped addresses as IPv4), or
// loopbackPeer for any loopback address.
func ipPeer(addr net.Addr) string {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return addr.String()
	}
	ip := ap.Addr().Unmap().WithZone("")
	if ip.IsLoopback() {
		return loopbackPeer
	}
	return ip.String()
}

// admit takes a place for a connection of peer, or refuses it (ok false) when a cap is
// reached; kv name the peer in the log line. release gives the place back; call it once,
// when the connection is closed.
func (cl *connLimiter) admit(peer string, kv ...any) (release func(), ok bool) {
	cl.mu.Lock()
	why := ""
	switch {
	case cl.max > 0 && cl.open >= cl.max:
		why = refusedMaxConnections
	case cl.maxPerPeer > 0 && cl.byPeer[peer] >= cl.maxPerPeer:
		why = cl.perPeerReason
	}
	if why != "" {
		logNow := cl.noteRefused()
		open, ofPeer, refused := cl.open, cl.byPeer[peer], cl.refused
		if logNow {
			cl.refused = 0
		}
		cl.mu.Unlock()
		cl.refusedCounter.WithLabelValues(why).Inc()
		if logNow {
			kv = append([]any{"listener", cl.listener, "reason", why}, kv...)
			cl.log.Info("connections refused", append(kv, "open", open, "openOf"+cl.peerKind, ofPeer,
				"maxConnections", cl.max, "maxConnectionsPer"+cl.peerKind, cl.maxPerPeer, "refused", refused)...)
		}
		return nil, false
	}
	cl.open++
	cl.byPeer[peer]++
	cl.openGauge.Set(float64(cl.open))
	cl.mu.Unlock()
	return func() { cl.release(peer) }, true
}

// noteRefused counts a refusal and says whether to log now: at the first refusal of a burst,
// then at most once per refusedLogEvery. The caller holds mu.
func (cl *connLimiter) noteRefused() bool {
	cl.refused++
	now := time.Now()
	if now.Sub(cl.lastLog) < refusedLogEvery {
		return false
	}
	cl.lastLog = now
	return true
}

// release gives back the place of a connection of peer.
func (cl *connLimiter) release(peer string) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.open--
	if cl.byPeer[peer]--; cl.byPeer[peer] <= 0 {
		delete(cl.byPeer, peer)
	}
	cl.openGauge.Set(float64(cl.open))
}

// counts returns the connections open now: in all, and of peer.
func (cl *connLimiter) counts(peer string) (open, ofPeer int) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.open, cl.byPeer[peer]
}

// limitedListener admits each TCP connection through its limiter, by remote address.
type limitedListener struct {
	net.Listener
	conns *connLimiter
}

// Accept waits for the next connection that the limiter admits. One over a cap is closed at
// once and Accept goes on waiting: an error would make http.Server.Serve back off (or stop).
func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		peer := ipPeer(c.RemoteAddr())
		release, ok := l.conns.admit(peer, "ip", peer)
		if !ok {
			c.Close()
			continue
		}
		return &limitedConn{Conn: c, release: release}, nil
	}
}

// limitedConn gives its place back to the limiter when it is closed, once.
type limitedConn struct {
	net.Conn
	release func()
	closed  sync.Once
}

// Close closes the connection and gives its place back.
func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.closed.Do(c.release)
	return err
}

// CloseWrite shuts down the writing side, as net/http does before it closes a connection after
// an error answer (so that the client reads the answer rather than a reset).
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
