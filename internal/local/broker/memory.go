package broker

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/cloudevents/sdk-go/v2/event"
)

// backend stores events for the Triggers and hands them to the dispatchers.
type backend interface {
	// publish stores e for every Trigger whose filter matches and returns once
	// it is stored; an event no Trigger wants is accepted and forgotten.
	publish(ctx context.Context, e *event.Event) error
	// consume hands t's events to handle from t.parallelism goroutines until ctx
	// is done, then returns once no handle call is running.
	consume(ctx context.Context, t *trigger, handle func(event.Event) outcome)
	// close releases the backend once every consume has returned.
	close() error
}

// memory keeps one bounded channel per Trigger. Nothing survives the process.
type memory struct {
	mu       sync.Mutex // makes a publish all-or-nothing across the queues
	triggers []*trigger
	queues   map[string]chan event.Event
	log      *slog.Logger
}

const defaultQueueSize = 1000

var errQueueFull = errors.New("queue full")

func newMemory(triggers []*trigger, size int, log *slog.Logger) *memory {
	if size <= 0 {
		size = defaultQueueSize
	}
	m := &memory{triggers: triggers, queues: map[string]chan event.Event{}, log: log}
	for _, t := range triggers {
		m.queues[t.name] = make(chan event.Event, size)
	}
	return m
}

func (m *memory) publish(_ context.Context, e *event.Event) error {
	attrs := attributes(e)
	var targets []chan event.Event
	for _, t := range m.triggers {
		if matches(t.filter, attrs) {
			targets = append(targets, m.queues[t.name])
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, q := range targets {
		if len(q) == cap(q) {
			return errQueueFull
		}
	}
	// Only publishers add, and they hold mu: these sends cannot block.
	for _, q := range targets {
		q <- e.Clone()
	}
	return nil
}

// consume runs t's workers. An event taken while the broker closes is lost,
// as is everything still queued: nothing in memory outlives the broker.
func (m *memory) consume(ctx context.Context, t *trigger, handle func(event.Event) outcome) {
	q := m.queues[t.name]
	runWorkers(ctx, t.parallelism, q, func(e event.Event) {
		switch handle(e) {
		case requeue:
			m.putBack(t, q, e)
		case abandon:
			m.log.Warn("broker closing: in-memory event lost", "trigger", t.name, "id", e.ID(), "type", e.Type())
		}
	})
}

// putBack requeues e at the tail of q, or drops it when publishers filled q meanwhile.
func (m *memory) putBack(t *trigger, q chan event.Event, e event.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case q <- e:
	default:
		m.log.Error("queue full: requeued event dropped", "trigger", t.name, "id", e.ID(), "type", e.Type())
	}
}

func (m *memory) close() error { return nil }
