//go:build reliability

package reliability

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"mp3converter/internal/stacktest"
)

// MongoDB, MySQL and SMTP are each cut for 10 s (a fault proxy in front of
// each resets every connection and refuses new ones) while uploads are being
// converted and mailed. During a cut, requests that need the service fail
// fast with 503 and a plain JSON message (never a hang, never a 500, no
// internals), requests that do not need it go on; events are retried; after
// recovery everything completes: one MP3 and one email per accepted upload.
func TestBackingServiceOutages(t *testing.T) {
	r := record(t, "outages: MongoDB, MySQL and SMTP each cut for 10 s during uploads")
	const outage = 10 * time.Second
	s := newSystem(t, sysOptions{proxied: true, rabbit: os.Getenv("RABBITMQ_URL") != ""})
	video := clip(t, 20)
	var accepted []string
	probes := map[string]*probeStats{}

	for _, svc := range []string{"mongodb", "mysql", "smtp"} {
		// Work in flight when the cut comes.
		b := s.uploadBatch(s.AdminToken, video, "before-"+svc, 6, 3)
		accepted = append(accepted, b.wait(t, 2*time.Minute)...)
		// Fresh tokens, never seen by upload's or download's cache: validate must ask MySQL.
		var fresh []string
		for range 12 {
			tok, a := s.login(stacktest.AdminEmail, stacktest.AdminPassword)
			if tok == "" {
				t.Fatalf("login before the %s cut: %s", svc, a)
			}
			fresh = append(fresh, tok)
		}

		s.proxies[svc].Cut()
		cut := time.Now()
		stats := &probeStats{service: svc}
		probes[svc] = stats
		// A round of probes every second, each round on its own (a round that
		// waits for a timeout does not delay the next).
		var wg sync.WaitGroup
		var mu sync.Mutex
		ticker := time.NewTicker(time.Second)
		for round := 0; time.Since(cut) < outage; round++ {
			wg.Go(func() {
				answers := s.probeRound(fresh[round%len(fresh)], video, fmt.Sprintf("during-%s-%02d.mp4", svc, round))
				mu.Lock()
				defer mu.Unlock()
				if fid := stats.check(t, answers); fid != "" {
					accepted = append(accepted, fid)
				}
			})
			<-ticker.C
		}
		ticker.Stop()
		wg.Wait()
		s.proxies[svc].Restore()
		restored := time.Now()

		// Recovery: the requests that needed the service succeed again, by themselves.
		for deadline := restored.Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
			tok, _ := s.login(stacktest.AdminEmail, stacktest.AdminPassword)
			a := s.upload(s.AdminToken, video, "after-"+svc+".mp4")
			if tok != "" && a.status == http.StatusAccepted {
				accepted = append(accepted, a.json()["video_fid"].(string))
				break
			}
			if time.Now().After(deadline) {
				r.Failures++
				t.Fatalf("not recovered a minute after the %s cut: login %v, upload %s", svc, tok != "", a)
			}
		}
		stats.recovery = time.Since(restored)
		r.Runs += stats.total
		r.Failures += stats.bad
		r.figure("%s", stats)
	}

	s.settle(accepted, 5*time.Minute)
	r.Runs += len(accepted)
	if s.Env["RABBITMQ_URL"] != "" {
		s.Stack.Stack.Close()
		s.auditQueues(t, r)
	}
	s.audit(t, r, accepted)
	for svc, p := range s.proxies {
		r.figure("proxy %s: %+v", svc, p.Stats())
	}
}

// probeStats counts the answers to the probes during one service's cut.
type probeStats struct {
	service    string
	total, bad int
	byRequest  map[string]map[int]int // request -> status -> count
	slowest503 time.Duration
	recovery   time.Duration
}

func (p *probeStats) String() string {
	var parts []string
	for _, req := range []string{"login", "validate", "jobs", "upload"} {
		parts = append(parts, fmt.Sprintf("%s: %s", req, tally(p.byRequest[req])))
	}
	return fmt.Sprintf("%s cut 10 s: %d probes, %d wrong (answers: %s); slowest 503: %s; recovered %s after the restore",
		p.service, p.total, p.bad, strings.Join(parts, "; "), p.slowest503.Round(10*time.Millisecond), p.recovery.Round(100*time.Millisecond))
}

// probeRound sends one of each request, at once.
func (s *system) probeRound(freshToken, video, name string) map[string]answer {
	var mu sync.Mutex
	answers := map[string]answer{}
	var wg sync.WaitGroup
	for req, send := range map[string]func() answer{
		"login":    func() answer { _, a := s.login(stacktest.AdminEmail, stacktest.AdminPassword); return a },
		"validate": func() answer { return s.do("POST", "/validate", freshToken, nil) },
		"jobs":     func() answer { return s.do("GET", "/jobs", s.AdminToken, nil) },
		"upload":   func() answer { return s.upload(s.AdminToken, video, name) },
	} {
		wg.Go(func() {
			a := send()
			mu.Lock()
			answers[req] = a
			mu.Unlock()
		})
	}
	wg.Wait()
	return answers
}

// check counts a round's answers during the cut of p.service and reports the
// wrong ones; it returns the video_fid of an upload that was accepted.
func (p *probeStats) check(t *testing.T, answers map[string]answer) (fid string) {
	// What each request needs: "503" it cannot work without the service;
	// "either" it may, thanks to validate's cached answers (VALIDATE_CACHE_TTL);
	// "ok" it does not need it.
	need := map[string]map[string]string{
		"mongodb": {"login": "ok", "validate": "ok", "jobs": "503", "upload": "503"},
		"mysql":   {"login": "503", "validate": "503", "jobs": "either", "upload": "either"},
		"smtp":    {"login": "ok", "validate": "ok", "jobs": "ok", "upload": "ok"},
	}[p.service]
	if p.byRequest == nil {
		p.byRequest = map[string]map[int]int{}
	}
	for req, a := range answers {
		p.total++
		if p.byRequest[req] == nil {
			p.byRequest[req] = map[int]int{}
		}
		p.byRequest[req][a.status]++
		ok := a.status >= 200 && a.status < 300
		unavailable := a.status == http.StatusServiceUnavailable && a.errorMessage() != "" && !leaks(a.body)
		switch {
		case a.err != nil:
			t.Errorf("%s cut: %s hung or broke: %s", p.service, req, a)
		case need[req] == "503" && !unavailable, need[req] == "ok" && !ok, need[req] == "either" && !ok && !unavailable:
			t.Errorf("%s cut: %s = %s (want %s)", p.service, req, a, need[req])
		default:
			if a.status == http.StatusServiceUnavailable && a.took > p.slowest503 {
				p.slowest503 = a.took
			}
			if req == "upload" && a.status == http.StatusAccepted {
				fid, _ = a.json()["video_fid"].(string)
			}
			continue
		}
		p.bad++
	}
	return fid
}

// leaks reports an error body that shows internals: addresses, driver errors, stacks.
func leaks(body []byte) bool {
	for _, s := range []string{"127.0.0.1", "dial tcp", "connection reset", "connection refused", "server selection",
		"goroutine", "panic", ".go:", "mongo", "mysql", "sql:"} {
		if strings.Contains(strings.ToLower(string(body)), s) {
			return true
		}
	}
	return false
}
