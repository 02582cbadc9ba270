package server

import (
	"context"
	"errors"
	"sync"
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
// write timeout.
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
func (a *admission) acquire(ctx context.Context, drain <-chan struct{}) (*grant, error) {
	select {
	case a.tickets <- struct{}{}:
	default:
		return nil, errQueueFull
	}
	a.m.queueDepth.Inc()
	err := a.wait(ctx, drain, a.held)
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
	return &grant{a: a}, nil
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
	knownOnce   sync.Once
	releaseOnce sync.Once
}

// resultKnown gives back the slot and the ticket: the execution is over, and its result waits
// to be written (counted in pyexec_results_waiting until Release).
func (g *grant) resultKnown() {
	g.knownOnce.Do(func() {
		g.a.m.inFlight.Dec()
		g.a.m.resultsWaiting.Inc()
		<-g.a.slots
		<-g.a.tickets
	})
}

// Release gives back all the grant holds: the response has been written, or cut off.
func (g *grant) Release() {
	g.resultKnown()
	g.releaseOnce.Do(func() {
		g.a.m.resultsWaiting.Dec()
		<-g.a.held
	})
}
