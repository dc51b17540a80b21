package function

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

// slots bounds the uploads stored at once (UPLOAD_CONCURRENCY) and one user's share of
// them (half, at least one), so that one user's uploads, idle or not, cannot hold every
// slot. An upload beyond them waits its turn for up to UPLOAD_SLOT_WAIT: a burst of one
// user's small uploads goes through one after the other instead of being refused.
type slots struct {
	free    chan struct{}
	perUser int
	wait    time.Duration

	mu      sync.Mutex
	byUser  map[string]int
	changed chan struct{} // closed, and replaced, whenever a slot is released
}

func newSlots(n int, wait time.Duration) *slots {
	return &slots{free: make(chan struct{}, n), perUser: max(1, n/2), wait: wait,
		byUser: map[string]int{}, changed: make(chan struct{})}
}

// take returns the slot's release, or false when no slot for the user came free within
// the wait (or ctx ended first).
func (s *slots) take(ctx context.Context, user string) (release func(), ok bool) {
	timeout := time.NewTimer(s.wait)
	defer timeout.Stop()
	for {
		release, changed := s.tryTake(user)
		if release != nil {
			return release, true
		}
		select {
		case <-changed:
		case <-timeout.C:
			return nil, false
		case <-ctx.Done():
			return nil, false
		}
	}
}

// tryTake takes a slot for the user if one is free, or returns what to wait on.
func (s *slots) tryTake(user string) (release func(), changed <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byUser[user] >= s.perUser {
		return nil, s.changed
	}
	select {
	case s.free <- struct{}{}:
	default:
		return nil, s.changed
	}
	s.byUser[user]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.byUser[user]--; s.byUser[user] == 0 {
			delete(s.byUser, user)
		}
		<-s.free
		close(s.changed)
		s.changed = make(chan struct{})
	}, nil
}

// errNoSlot answers an upload that found no slot within UPLOAD_SLOT_WAIT.
var errNoSlot = &httpError{status: http.StatusServiceUnavailable,
	msg: "too many uploads at once, try again in a few seconds", retryAfter: 5 * time.Second}

// timedBody is r's body for an identified caller, at most limit bytes. func-go's server
// cuts requests after 30 s; a big upload legitimately takes longer, so the caller gets
// UPLOAD_TIMEOUT to send the body and a minute more to hear the answer (also when the body
// was cut off), and a body that sends nothing for UPLOAD_IDLE_TIMEOUT is ended.
func (s *state) timedBody(w http.ResponseWriter, r *http.Request, limit int64) io.ReadCloser {
	rc := http.NewResponseController(w)
	deadline := time.Now().Add(s.timeout)
	if err := rc.SetReadDeadline(deadline); err != nil && !errors.Is(err, http.ErrNotSupported) {
		s.log.Warn("cannot extend read deadline", "err", err)
	}
	if err := rc.SetWriteDeadline(deadline.Add(time.Minute)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		s.log.Warn("cannot extend write deadline", "err", err)
	}
	return http.MaxBytesReader(w, &idleBody{ReadCloser: r.Body, rc: rc, idle: s.idle, end: deadline}, limit)
}

// errIdle: the client sent nothing for UPLOAD_IDLE_TIMEOUT.
var errIdle = errors.New("no data received for UPLOAD_IDLE_TIMEOUT")

// idleBody ends a body that makes no progress: each read must bring a byte within idle
// (and all of them before end, UPLOAD_TIMEOUT), so that a client that sends nothing
// gives its slot back in seconds, not at UPLOAD_TIMEOUT.
type idleBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
	end  time.Time
}

func (b *idleBody) Read(p []byte) (int, error) {
	deadline := time.Now().Add(b.idle)
	if deadline.After(b.end) {
		deadline = b.end
	}
	// Not supported (an httptest.ResponseRecorder): the body is read without the bound.
	_ = b.rc.SetReadDeadline(deadline)
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, os.ErrDeadlineExceeded) && deadline.Before(b.end) {
		err = errIdle
	}
	return n, err
}
