package server

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// Reasons acquire fails, besides the context's error.
var (
	errQueueFull = errors.New("queue full")
	errDraining  = errors.New("server is draining")
)

// admission lets at most maxConcurrent executions run and at most queue more wait, and bounds
// the results held in memory: running executions plus results known but not yet written to
// their clients are at most maxConcurrent + resultsWaiting(maxConcurrent).
//
// A request first takes a ticket (tickets has room for maxConcurrent+queue): when none is
// left it is refused at once. With a ticket it waits for room for its result (held, room for
// maxConcurrent plus resultsWaiting), then for a slot (slots has room for maxConcurrent). Go
// queues blocked senders of a channel in order, so waiters get both first come, first
// served. When its result is known the execution gives back its slot and ticket (see
// grant.resultKnown) and keeps its room in held until the response is written or cut off:
// a client that does not read its result holds no slot, only memory, and only until the
// write timeout. A result that a response served later carries (an /mcp answer: see carrier)
// keeps its room until that response is written or cut off.
type admission struct {
	tickets chan struct{}
	held    chan struct{}
	slots   chan struct{}
	m       *metrics
}

// resultsWaiting is how many results, known but not yet written, admission lets the server
// hold beyond the running executions' own: as many as may run. Clients that do not read take
// those first; the slots stay for the others until the write timeout frees them.
func resultsWaiting(maxConcurrent int) int { return max(maxConcurrent, 1) }

// newAdmission returns an admission for maxConcurrent (at least 1) running and queue (at
// least 0) waiting executions.
func newAdmission(maxConcurrent, queue int, m *metrics) *admission {
	maxConcurrent = max(maxConcurrent, 1)
	queue = max(queue, 0)
	return &admission{
		tickets: make(chan struct{}, maxConcurrent+queue),
		held:    make(chan struct{}, maxConcurrent+resultsWaiting(maxConcurrent)),
		slots:   make(chan struct{}, maxConcurrent),
		m:       m,
	}
}

// acquire waits for an execution slot. It fails at once with errQueueFull when the queue is
// full, and stops waiting with ctx's error when ctx ends or with errDraining when drain is
// closed. On success the caller must call the grant's Release (once the response is written;
// later calls do nothing), and calls its resultKnown as soon as the execution is over.
//
// A request whose result a carrier in ctx carries never waits for room that only the
// carrier's own response would free: once the carrier holds a result, acquire fails with
// errQueueFull rather than wait for room in held.
func (a *admission) acquire(ctx context.Context, drain <-chan struct{}) (*grant, error) {
	select {
	case a.tickets <- struct{}{}:
	default:
		return nil, errQueueFull
	}
	a.m.queueDepth.Inc()
	c := carrierOf(ctx)
	err := a.waitHeld(ctx, drain, c)
	if err == nil {
		if err = a.wait(ctx, drain, a.slots); err != nil {
			<-a.held
		}
	}
	a.m.queueDepth.Dec()
	if err != nil {
		<-a.tickets
		return nil, err
	}
	a.m.inFlight.Inc()
	return &grant{a: a, c: c}, nil
}

// waitHeld takes a room in held as wait does; for a request that c carries, it gives up with
// errQueueFull once c holds a result and there is no room.
func (a *admission) waitHeld(ctx context.Context, drain <-chan struct{}, c *carrier) error {
	if c == nil {
		return a.wait(ctx, drain, a.held)
	}
	select {
	case a.held <- struct{}{}:
		return nil
	default:
	}
	select {
	case a.held <- struct{}{}:
		return nil
	case <-c.holding:
		return errQueueFull
	case <-ctx.Done():
		return ctx.Err()
	case <-drain:
		return errDraining
	}
}

// wait takes a place in ch, or gives up when ctx ends or drain is closed.
func (a *admission) wait(ctx context.Context, drain <-chan struct{}, ch chan struct{}) error {
	select {
	case ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-drain:
		return errDraining
	}
}

// grant is one admitted execution's place.
type grant struct {
	a           *admission
	c           *carrier // carries the result on, or nil
	result      atomic.Bool
	knownOnce   sync.Once
	releaseOnce sync.Once
}

// resultKnown gives back the slot and the ticket: the execution is over, and its result waits
// to be written (counted in pyexec_results_waiting until Release, or until its carrier's
// response is written).
func (g *grant) resultKnown() {
	g.result.Store(true)
	g.free()
}

// free gives back the slot and the ticket.
func (g *grant) free() {
	g.knownOnce.Do(func() {
		g.a.m.inFlight.Dec()
		g.a.m.resultsWaiting.Inc()
		<-g.a.slots
		<-g.a.tickets
	})
}

// Release gives back all the grant holds: the response has been written, or cut off. A
// result that a carrier carries on keeps its room in held until the carrier's response is
// written.
func (g *grant) Release() {
	g.free()
	if g.c != nil && g.result.Load() && g.c.carry(g.release) {
		return
	}
	g.release()
}

// release gives back the room in held.
func (g *grant) release() {
	g.releaseOnce.Do(func() {
		g.a.m.resultsWaiting.Dec()
		<-g.a.held
	})
}

// A carrier is a response that carries on the results of API calls served in process for it:
// an /mcp answer, whose tools call the API in process (see mcpHandler). The API call's own
// response is "written" as soon as it is made, into memory; the result then waits in the
// carrier's response, and its room among the results waiting to be written is given back
// when that response is written or cut off (written).
type carrier struct {
	mu       sync.Mutex
	done     bool
	holding  chan struct{} // closed once it carries a result
	releases []func()
	passed   []passed // contents passed on past the MCP SDK (see pass)
}

func newCarrier() *carrier { return &carrier{holding: make(chan struct{})} }

// carrierKey is the context key of the carrier of the requests made for its response.
type carrierKey struct{}

// withCarrier returns ctx with c: requests served in process with it are carried by c.
func withCarrier(ctx context.Context, c *carrier) context.Context {
	return context.WithValue(ctx, carrierKey{}, c)
}

// carrierOf is the carrier in ctx, or nil.
func carrierOf(ctx context.Context) *carrier {
	c, _ := ctx.Value(carrierKey{}).(*carrier)
	return c
}

// carry keeps release until the carrier's response is written. It is false when it has been
// already: the caller releases now.
func (c *carrier) carry(release func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return false
	}
	if len(c.releases) == 0 {
		close(c.holding)
	}
	c.releases = append(c.releases, release)
	return true
}

// written says the carrier's response has been written or cut off: it gives back what it
// carried, and what it is given later is released at once.
func (c *carrier) written() {
	c.mu.Lock()
	c.done = true
	releases := c.releases
	c.releases, c.passed = nil, nil
	c.mu.Unlock()
	for _, release := range releases {
		release()
	}
}
