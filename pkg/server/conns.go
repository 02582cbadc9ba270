package server

import (
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// Why a connection was refused: the label of pyexec_connections_refused_total.
const (
	refusedMaxConnections       = "max_connections"
	refusedMaxConnectionsPerUID = "max_connections_per_uid"
)

// refusedLogEvery spaces the log lines about refused connections: a client that opens
// thousands of connections gets one line per burst, with the count, not one line each.
const refusedLogEvery = 10 * time.Second

// connLimiter caps the connections open at once on a listener: in all, and per peer uid. A
// connection holds its place from Accept until it is closed, idle or not.
type connLimiter struct {
	max, maxPerUID int // <= 0: no cap
	log            logr.Logger
	m              *metrics

	mu      sync.Mutex
	open    int
	byUID   map[int]int // uid -1: credentials unknown
	refused int         // refusals since the last log line, this one included
	lastLog time.Time
}

// newConnLimiter returns a limiter of max connections in all and maxPerUID per peer uid.
func newConnLimiter(max, maxPerUID int, log logr.Logger, m *metrics) *connLimiter {
	return &connLimiter{max: max, maxPerUID: maxPerUID, log: log, m: m, byUID: map[int]int{}}
}

// admit takes a place for a connection of peer, or refuses it (ok false) when a cap is
// reached. release gives the place back; call it once, when the connection is closed.
func (cl *connLimiter) admit(peer peerCred) (release func(), ok bool) {
	cl.mu.Lock()
	why := ""
	switch {
	case cl.max > 0 && cl.open >= cl.max:
		why = refusedMaxConnections
	case cl.maxPerUID > 0 && cl.byUID[peer.uid] >= cl.maxPerUID:
		why = refusedMaxConnectionsPerUID
	}
	if why != "" {
		logNow := cl.noteRefused()
		open, ofUID, refused := cl.open, cl.byUID[peer.uid], cl.refused
		if logNow {
			cl.refused = 0
		}
		cl.mu.Unlock()
		cl.m.connsRefused.WithLabelValues(why).Inc()
		if logNow {
			cl.log.Info("connections refused", "reason", why, "uid", peer.uid, "pid", peer.pid,
				"open", open, "openOfUid", ofUID, "maxConnections", cl.max, "maxConnectionsPerUid", cl.maxPerUID,
				"refused", refused)
		}
		return nil, false
	}
	cl.open++
	cl.byUID[peer.uid]++
	cl.m.connsOpen.Set(float64(cl.open))
	cl.mu.Unlock()
	return func() { cl.release(peer.uid) }, true
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

// release gives back the place of a connection of uid.
func (cl *connLimiter) release(uid int) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.open--
	if cl.byUID[uid]--; cl.byUID[uid] <= 0 {
		delete(cl.byUID, uid)
	}
	cl.m.connsOpen.Set(float64(cl.open))
}

// counts returns the connections open now: in all, and of uid.
func (cl *connLimiter) counts(uid int) (open, ofUID int) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.open, cl.byUID[uid]
}
