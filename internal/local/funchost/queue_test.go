package funchost

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestQueueHoldsWhatContainerConcurrencyDoesNotAdmit: with room for one
// request at a time, ten more wait their turn and all succeed; the one after
// them gets 503 with Retry-After at once, as from Knative's queue-proxy.
func TestQueueHoldsWhatContainerConcurrencyDoesNotAdmit(t *testing.T) {
	release := make(chan struct{})
	var running, most atomic.Int32
	q := newQueue(1, time.Minute)
	srv := httptest.NewServer(q.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
	})))
	defer srv.Close()

	var wg sync.WaitGroup
	statuses := make(chan int, 11)
	for range 11 { // one runs, ten wait
		wg.Go(func() {
			resp, err := http.Get(srv.URL)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	for q.pending.Load() < 11 {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests pending, want 11", q.pending.Load())
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not timing the test
	}

	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("the twelfth request: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	close(release)
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != http.StatusOK {
			t.Errorf("a queued request got %d, want 200", s)
		}
	}
	if most.Load() != 1 {
		t.Errorf("%d requests ran at once, want 1", most.Load())
	}
}
