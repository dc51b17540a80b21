package kit

import "sync/atomic"

// lifecycle holds what Start built from the configuration (S: the function's state): nil
// before Start has finished and after Stop, so Handle answers 503 and Ready false then.
// Start builds a whole new state and publishes it at once: a request sees the old one or
// the new one, never half of each.
type lifecycle[S any] struct {
	state atomic.Pointer[S]
}

// load returns the current state, or nil when the function is not started.
func (l *lifecycle[S]) load() *S { return l.state.Load() }

// start publishes s and returns the state it replaces (nil on the first Start), for Start to close.
func (l *lifecycle[S]) start(s *S) (old *S) { return l.state.Swap(s) }

// stop unpublishes the state and returns it (nil when not started), for Stop to close.
func (l *lifecycle[S]) stop() *S { return l.state.Swap(nil) }

// started reports whether Start has finished (and Stop has not run since).
func (l *lifecycle[S]) started() bool { return l.state.Load() != nil }
