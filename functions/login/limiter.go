package function

import (
	"context"
	"sync"
	"time"
)

// limiter slows down password guessing: at most max failed logins per bucket within
// window (a max of 0 turns a bucket off). Failures expire after window, so nobody is
// locked out for good. A login is checked against its buckets (see state.buckets): the
// account, or the device cookie of a client that logged in before, and the client address.
//
// Only failures count. A check still in flight is pending: while failures plus pending
// would reach a bucket's max, a new attempt waits for one in flight to end instead of
// going ahead, so parallel guesses cannot slip past the limit, and parallel right
// passwords are never refused for the guesses they themselves are.
type limiter struct {
	mu        sync.Mutex
	now       func() time.Time
	window    time.Duration
	failures  map[string][]time.Time // key -> the most recent failures, oldest first
	pending   map[string]int         // key -> checks in flight
	ended     chan struct{}          // closed (and replaced) whenever a check ends
	lastSweep time.Time
}

// bucket is one limit an attempt is counted against.
type bucket struct {
	key              string
	max              int
	clearedBySuccess bool // the account's or device's failures, not the client address's
}

func newLimiter(window time.Duration) *limiter {
	return &limiter{
		now:      time.Now,
		window:   window,
		failures: map[string][]time.Time{},
		pending:  map[string]int{},
		ended:    make(chan struct{}),
	}
}

// begin lets a check through, or reports how long to wait when a bucket is full of
// failures (ok false). It blocks while the bucket's room is taken by checks in flight;
// ctx ending first is reported as ctx's error. A check let through must end (end).
func (l *limiter) begin(ctx context.Context, buckets ...bucket) (wait time.Duration, err error) {
	for {
		l.mu.Lock()
		now := l.now()
		l.sweep(now)
		busy := false
		for _, b := range buckets {
			if b.max <= 0 {
				continue
			}
			times := l.recent(b.key, now)
			if len(times) >= b.max {
				// The oldest failure that still counts expires first.
				wait = max(wait, times[len(times)-b.max].Add(l.window).Sub(now))
			} else if len(times)+l.pending[b.key] >= b.max {
				busy = true
			}
		}
		if wait > 0 {
			l.mu.Unlock()
			return wait, nil
		}
		if !busy {
			for _, b := range buckets {
				if b.max > 0 {
					l.pending[b.key]++
				}
			}
			l.mu.Unlock()
			return 0, nil
		}
		ended := l.ended
		l.mu.Unlock()
		select {
		case <-ended:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// end closes a check begun with the same buckets: a failure counts in each of them,
// a success clears them (the right password was given), an outcome that was not the
// client's fault (the store was down) leaves them as they were.
func (l *limiter) end(outcome outcome, buckets ...bucket) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, b := range buckets {
		if b.max <= 0 {
			continue
		}
		if l.pending[b.key]--; l.pending[b.key] <= 0 {
			delete(l.pending, b.key)
		}
		switch outcome {
		case failed:
			l.record(b.key, b.max, now)
		case succeeded:
			if b.clearedBySuccess {
				delete(l.failures, b.key)
			}
		}
	}
	close(l.ended)
	l.ended = make(chan struct{})
}

type outcome int

const (
	failed outcome = iota
	succeeded
	undecided
)

// recent prunes key's failures older than window and returns the rest.
func (l *limiter) recent(key string, now time.Time) []time.Time {
	times := l.failures[key]
	i := 0
	for i < len(times) && !times[i].After(now.Add(-l.window)) {
		i++
	}
	times = times[i:]
	if len(times) == 0 {
		delete(l.failures, key)
		return nil
	}
	l.failures[key] = times
	return times
}

// record adds a failure, keeping no more than max of them (all that matters).
func (l *limiter) record(key string, max int, now time.Time) {
	times := append(l.failures[key], now)
	if len(times) > max {
		times = append([]time.Time(nil), times[len(times)-max:]...)
	}
	l.failures[key] = times
}

// sweep drops expired keys once per window so memory stays bounded.
func (l *limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < l.window {
		return
	}
	l.lastSweep = now
	for key := range l.failures {
		l.recent(key, now)
	}
}
