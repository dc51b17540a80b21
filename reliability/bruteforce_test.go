package reliability

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"mp3converter/internal/stacktest"
)

// Password guessing through the front door (web), from distinct client addresses
// (127.0.0.2, .3, ... on loopback). web appends each client's address
// to X-Forwarded-For and the stack runs login with TRUSTED_PROXY_HOPS=1, so
// login's per-client limit counts those clients, not the front door (web).
//
// Limits of this system: 3 failures per account, 6 per client, in a 3 s window
// (the defaults are 5, 20 and 15 minutes).
const (
	bfPerAccount = 3
	bfPerClient  = 6
	bfWindow     = 3 * time.Second
)

func bruteForceSystem(t *testing.T) *system {
	return newSystem(t, sysOptions{env: map[string]string{
		"LOGIN_MAX_FAILURES":    strconv.Itoa(bfPerAccount),
		"LOGIN_MAX_IP_FAILURES": strconv.Itoa(bfPerClient),
		"LOGIN_FAILURE_WINDOW":  bfWindow.String(),
	}})
}

// clientFrom is an HTTP client whose connections come from the loopback address ip.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	return &http.Client{Timeout: requestTimeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
	}}
}

func loginFrom(c *http.Client, baseURL, email, password string, header ...string) answer {
	req, _ := http.NewRequest(http.MethodPost, baseURL+"/login", nil)
	req.SetBasicAuth(email, password)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return send(c, req)
}

// refused: 429 with a Retry-After within the window and a JSON message.
func refused(a answer) bool {
	after, err := strconv.Atoi(a.header.Get("Retry-After"))
	return a.status == http.StatusTooManyRequests && err == nil && after >= 1 &&
		time.Duration(after)*time.Second <= bfWindow+time.Second && a.errorMessage() != ""
}

// Repeated failures for one account lock that account for everyone until
// the window has passed, then its owner logs in: slowed, not locked out for good.
func TestBruteForceOneAccount(t *testing.T) {
	r := record(t, "brute force: failed logins for one account (per-account limit, then free again)")
	s := bruteForceSystem(t)
	email := "alice@example.com"
	s.AddUser(t, email)
	attacker, owner := clientFrom("127.0.0.2"), clientFrom("127.0.0.3")

	for i := 0; i < bfPerAccount; i++ {
		r.Runs++
		if a := loginFrom(attacker, s.URL, email, "guess-"+strconv.Itoa(i)); a.status != http.StatusUnauthorized {
			r.Failures++
			t.Errorf("guess %d: %s", i, a)
		}
	}
	r.Runs += 2
	if a := loginFrom(attacker, s.URL, email, stacktest.UserPassword); !refused(a) {
		r.Failures++
		t.Errorf("the attacker's next try, even with the right password: %s %v", a, a.header)
	}
	locked := time.Now()
	if a := loginFrom(owner, s.URL, email, stacktest.UserPassword); !refused(a) {
		r.Failures++
		t.Errorf("the owner while the account is locked: %s", a)
	}
	// Not for good: once the window has passed, the owner is in.
	r.Runs++
	var a answer
	for deadline := locked.Add(bfWindow + 10*time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if a = loginFrom(owner, s.URL, email, stacktest.UserPassword); a.status != http.StatusTooManyRequests {
			break
		}
	}
	if a.status != http.StatusOK {
		r.Failures++
		t.Fatalf("the owner after the window: %s", a)
	}
	r.figure("owner in again %s after the lock (window %s)", time.Since(locked).Round(100*time.Millisecond), bfWindow)
}

// Repeated failures from one client (across accounts) stop that client, not
// the others; a forged X-Forwarded-For does not change who the client is.
func TestBruteForceOneClient(t *testing.T) {
	r := record(t, "brute force: failed logins from one client across accounts (per-client limit)")
	s := bruteForceSystem(t)
	s.AddUser(t, "bob@example.com")
	attacker, other := clientFrom("127.0.0.4"), clientFrom("127.0.0.5")

	for i := 0; i < bfPerClient; i++ {
		r.Runs++
		email := "nobody" + strconv.Itoa(i) + "@example.com"
		if a := loginFrom(attacker, s.URL, email, "guess"); a.status != http.StatusUnauthorized {
			r.Failures++
			t.Errorf("guess %d: %s", i, a)
		}
	}
	r.Runs += 3
	if a := loginFrom(attacker, s.URL, "someone@example.com", "guess"); !refused(a) {
		r.Failures++
		t.Errorf("the attacker's next guess: %s", a)
	}
	if a := loginFrom(attacker, s.URL, "someone@example.com", "guess", "X-Forwarded-For", "203.0.113.7"); !refused(a) {
		r.Failures++
		t.Errorf("the attacker's next guess with a forged X-Forwarded-For: %s", a)
	}
	if a := loginFrom(other, s.URL, "bob@example.com", stacktest.UserPassword); a.status != http.StatusOK {
		r.Failures++
		t.Errorf("another client, meanwhile: %s", a)
	}
}

// Straight to the login function, without the front door (web): the per-account limit
// holds whatever X-Forwarded-For says. (The per-client one trusts the last
// X-Forwarded-For entry, TRUSTED_PROXY_HOPS=1: it is meant for clients that
// come through the front door (web), the stack's only published port.)
func TestBruteForcePerAccountHoldsWithForgedForwarding(t *testing.T) {
	r := record(t, "brute force: per-account limit holds with forged X-Forwarded-For, straight to login")
	s := bruteForceSystem(t)
	email := "carol@example.com"
	s.AddUser(t, email)
	direct := clientFrom("127.0.0.6")
	for i := 0; i < bfPerAccount; i++ {
		r.Runs++
		xff := "198.51.100." + strconv.Itoa(i+1)
		if a := loginFrom(direct, s.Functions["login"], email, "guess", "X-Forwarded-For", xff); a.status != http.StatusUnauthorized {
			r.Failures++
			t.Errorf("guess %d: %s", i, a)
		}
	}
	r.Runs++
	if a := loginFrom(direct, s.Functions["login"], email, stacktest.UserPassword, "X-Forwarded-For", "198.51.100.99"); !refused(a) {
		r.Failures++
		t.Errorf("after %d failures with forged forwarding: %s", bfPerAccount, a)
	}
}
