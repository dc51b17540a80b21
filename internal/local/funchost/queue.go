package funchost

import (
	"encoding/json"
	"net/http"
	"sync/atomic"
	"time"
)

// queueDepthPerSlot is how many requests may wait per request in progress:
// Knative's queue-proxy lets containerConcurrency x 10 wait
// (pkg/queue/sharedmain, buildBreaker), to give the autoscaler time to react.
const queueDepthPerSlot = 10

// defaultQueueWait bounds a request's wait for a slot: Knative's revision
// timeout, which the cluster's config-defaults set to 600 s.
const defaultQueueWait = 10 * time.Minute

// queue is the local stand-in for the part of Knative's queue-proxy that
// enforces a Service's containerConcurrency: at most slots requests reach
// the function at once, the next ones wait their turn in a bounded queue, and
// beyond it (or after waiting too long) the answer is 503, as queue-proxy
// answers when its pending request queue is full.
type queue struct {
	slots   chan struct{}
	pending atomic.Int64 // waiting or in progress
	maxWait time.Duration
}

func newQueue(concurrency int, maxWait time.Duration) *queue {
	if maxWait <= 0 {
		maxWait = defaultQueueWait
	}
	return &queue{slots: make(chan struct{}, concurrency), maxWait: maxWait}
}

// wrap admits requests to next in their turn. While a request waits, the
// server's 30 s read and write timeouts are lifted, and they start again
// when it is admitted: in a pod, queue-proxy holds the waiting request, and
// the function's own server sees it only when its turn comes.
func (q *queue) wrap(next http.Handler) http.Handler {
	total := int64(cap(q.slots) * (1 + queueDepthPerSlot))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if q.pending.Add(1) > total {
			q.pending.Add(-1)
			overloaded(w, "pending request queue full, try again in a few seconds")
			return
		}
		defer q.pending.Add(-1)

		select {
		case q.slots <- struct{}{}: // a free slot: no wait
		default:
			rc := http.NewResponseController(w)
			rc.SetReadDeadline(time.Time{})
			rc.SetWriteDeadline(time.Time{})
			timer := time.NewTimer(q.maxWait)
			defer timer.Stop()
			select {
			case q.slots <- struct{}{}:
			case <-r.Context().Done():
				return
			case <-timer.C:
				overloaded(w, "no free slot in time, try again in a few seconds")
				return
			}
			now := time.Now()
			rc.SetReadDeadline(now.Add(readTimeout))
			rc.SetWriteDeadline(now.Add(writeTimeout))
		}
		defer func() { <-q.slots }()
		next.ServeHTTP(w, r)
	})
}

// overloaded answers 503 with Retry-After, and closes the connection rather
// than read a body nobody will take.
func overloaded(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", "1")
	w.Header().Set("Connection", "close")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
