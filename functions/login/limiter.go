package function

import (
	"sync"
	"time"
)

// limiter slows down password guessing: at most maxPerEmail failed logins for
// one email and maxPerIP for one client IP within window (0 disables a limit).
// Failures expire after window, so nobody is locked out for good.
//
// An attempt counts as a failure from the moment it is let through (attempt),
// so parallel guesses cannot slip past the limit; succeeded and release take
// it back once the outcome is known.
type limiter struct {
	mu          sync.Mutex
	now         func() time.Time
	maxPerEmail int
	maxPerIP    int
	window      time.Duration
	failures    map[string][]time.Time // key -> the most recent failures, oldest first
	lastSweep   time.Time
}

func newLimiter(maxPerEmail, maxPerIP int, window time.Duration) *limiter {
	return &limiter{
		now:         time.Now,
		maxPerEmail: maxPerEmail,
		maxPerIP:    maxPerIP,
		window:      window,
		failures:    map[string][]time.Time{},
	}
}

// attempt lets a login attempt through and counts it as a failure, or reports
// how long to wait when either limit is reached.
func (l *limiter) attempt(email, ip string) (wait time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.sweep(now)
	for _, k := range []struct {
		key string
		max int
	}{{"email:" + email, l.maxPerEmail}, {"ip:" + ip, l.maxPerIP}} {
		if k.max <= 0 {
			continue
		}
		times := l.recent(k.key, now)
		if len(times) >= k.max {
			// The oldest failure that still counts expires first.
			wait = max(wait, times[len(times)-k.max].Add(l.window).Sub(now))
		}
	}
	if wait > 0 {
		return wait, false
	}
	l.record("email:"+email, l.maxPerEmail, now)
	l.record("ip:"+ip, l.maxPerIP, now)
	return 0, true
}

// succeeded forgets the email's failures and takes back the IP's pending one.
func (l *limiter) succeeded(email, ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.failures, "email:"+email)
	l.dropLatest("ip:" + ip)
}

// release takes back a pending attempt whose outcome was not the caller's fault.
func (l *limiter) release(email, ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropLatest("email:" + email)
	l.dropLatest("ip:" + ip)
}

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
	if max <= 0 {
		return
	}
	times := append(l.failures[key], now)
	if len(times) > max {
		times = append([]time.Time(nil), times[len(times)-max:]...)
	}
	l.failures[key] = times
}

func (l *limiter) dropLatest(key string) {
	times := l.failures[key]
	switch len(times) {
	case 0:
	case 1:
		delete(l.failures, key)
	default:
		l.failures[key] = times[:len(times)-1]
	}
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
