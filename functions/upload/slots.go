package function

import (
	"errors"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

// slots bounds the uploads stored at once (UPLOAD_CONCURRENCY: the driver buffers 16 MiB
// and more per upload) and one user's share of them (half, at least one), so that one
// user's uploads, idle or not, cannot hold every slot.
type slots struct {
	free    chan struct{}
	perUser int

	mu     sync.Mutex
	byUser map[string]int
}

func newSlots(n int) *slots {
	return &slots{free: make(chan struct{}, n), perUser: max(1, n/2), byUser: map[string]int{}}
}

// take returns the slot's release, or false when every slot or the user's share is taken.
func (s *slots) take(user string) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byUser[user] >= s.perUser {
		return nil, false
	}
	select {
	case s.free <- struct{}{}:
	default:
		return nil, false
	}
	s.byUser[user]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.byUser[user]--; s.byUser[user] == 0 {
			delete(s.byUser, user)
		}
		<-s.free
	}, true
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
