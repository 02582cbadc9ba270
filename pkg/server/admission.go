package server

import (
	"context"
	"errors"
)

// Reasons acquire fails, besides the context's error.
var (
	errQueueFull = errors.New("queue full")
	errDraining  = errors.New("server is draining")
)

// admission lets at most maxConcurrent executions run and at most queue more wait.
//
// A request first takes a ticket (tickets has room for maxConcurrent+queue): when none is
// left it is refused at once. With a ticket it waits for a slot (slots has room for
// maxConcurrent). Go queues blocked senders of a channel in order, so waiters get slots
// first come, first served.
type admission struct {
	tickets chan struct{}
	slots   chan struct{}
	m       *metrics
}

// newAdmission returns an admission for maxConcurrent (at least 1) running and queue (at
// least 0) waiting executions.
func newAdmission(maxConcurrent, queue int, m *metrics) *admission {
	maxConcurrent = max(maxConcurrent, 1)
	queue = max(queue, 0)
	return &admission{
		tickets: make(chan struct{}, maxConcurrent+queue),
		slots:   make(chan struct{}, maxConcurrent),
		m:       m,
	}
}

// acquire waits for an execution slot. It fails at once with errQueueFull when the queue is
// full, and stops waiting with ctx's error when ctx ends or with errDraining when drain is
// closed. On success the caller must call release exactly once.
func (a *admission) acquire(ctx context.Context, drain <-chan struct{}) (release func(), err error) {
	select {
	case a.tickets <- struct{}{}:
	default:
		return nil, errQueueFull
	}
	a.m.queueDepth.Inc()
	select {
	case a.slots <- struct{}{}:
		a.m.queueDepth.Dec()
		a.m.inFlight.Inc()
		return a.release, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-drain:
		err = errDraining
	}
	a.m.queueDepth.Dec()
	<-a.tickets
	return nil, err
}

// release gives back a slot and its ticket.
func (a *admission) release() {
	a.m.inFlight.Dec()
	<-a.slots
	<-a.tickets
}
