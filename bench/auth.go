package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"

	validate "mp3converter/functions/validate"
	"mp3converter/internal/local/funchost"
)

const (
	validateClients  = 8
	validateRequests = 2000
	loginClients     = 4 // below login's 5 failures per email in flight (LOGIN_MAX_FAILURES)
	loginRequests    = 40
)

// auth measures validate against a trivial handler, and login against bare
// bcrypt comparisons of the same cost.
func (b *bench) auth(ctx context.Context) (*section, error) {
	sec := &section{title: "4. Auth: validate and login"}
	s, err := b.startStack(ctx, "auth", false)
	if err != nil {
		return nil, err
	}
	defer s.close()

	validateURL := s.Functions["validate"] + "/validate"
	validateReq := func() *http.Request {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, validateURL, nil)
		req.Header.Set("Authorization", "Bearer "+s.AdminToken)
		return req
	}
	// The trivial handler answers what validate answers, byte for byte.
	answer, err := readBody(validateReq())
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	trivial := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(answer)
	}), ReadHeaderTimeout: 2 * time.Second}
	go trivial.Serve(ln)
	defer trivial.Close()
	trivialReq := func() *http.Request {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+ln.Addr().String()+"/validate", nil)
		req.Header.Set("Authorization", "Bearer "+s.AdminToken)
		return req
	}
	// validate again, without MYSQL_DSN: signature and claims only.
	cryptoURL, stopCrypto, err := serveFunction(ctx, validate.New(), "validate", map[string]string{"JWT_PUBLIC_KEY_FILE": s.keyFile("jwt-public.pem")})
	if err != nil {
		return nil, err
	}
	defer stopCrypto()
	cryptoReq := func() *http.Request {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, cryptoURL+"/validate", nil)
		req.Header.Set("Authorization", "Bearer "+s.AdminToken)
		return req
	}
	loginReq := func() *http.Request {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.Functions["login"]+"/login", nil)
		req.SetBasicAuth(adminEmail, adminPassword)
		return req
	}
	cost, _ := strconv.Atoi(bcryptCost)
	hash, err := bcrypt.GenerateFromPassword([]byte(adminPassword), cost)
	if err != nil {
		return nil, err
	}
	compare := func() error { return bcrypt.CompareHashAndPassword(hash, []byte(adminPassword)) }

	// Warm up connections and caches, unmeasured.
	for _, f := range []func() *http.Request{validateReq, cryptoReq, trivialReq} {
		if _, err := load(validateClients, 200, func() error { return expect200(f()) }); err != nil {
			return nil, err
		}
	}
	var val, cry, triv, lg, bc samples
	cases := []struct {
		clients, count int
		do             func() error
		got            *samples
	}{
		{validateClients, validateRequests, func() error { return expect200(validateReq()) }, &val},
		{validateClients, validateRequests, func() error { return expect200(cryptoReq()) }, &cry},
		{validateClients, validateRequests, func() error { return expect200(trivialReq()) }, &triv},
		{loginClients, loginRequests, func() error { return expect200(loginReq()) }, &lg},
		{loginClients, loginRequests, compare, &bc},
	}
	for i := range b.opts.runs {
		for _, c := range cases {
			d, err := load(c.clients, c.count, c.do)
			if err != nil {
				return nil, err
			}
			*c.got = append(*c.got, d)
		}
		b.progress("auth run %d: validate %.0f/s, without MySQL %.0f/s, trivial %.0f/s, login %.1f/s, bcrypt %.1f/s", i+1,
			rate(validateRequests, val[i]), rate(validateRequests, cry[i]), rate(validateRequests, triv[i]), rate(loginRequests, lg[i]), rate(loginRequests, bc[i]))
	}
	sec.add("validate: `POST /validate` (RS256, user-still-exists check in MySQL)", rateOf(validateRequests, val), "trivial net/http handler "+rateOf(validateRequests, triv), ratioF(rate(validateRequests, val.median()), rate(validateRequests, triv.median())))
	sec.add("validate without MYSQL_DSN (signature and claims only)", rateOf(validateRequests, cry), "trivial net/http handler", ratioF(rate(validateRequests, cry.median()), rate(validateRequests, triv.median())))
	sec.add(fmt.Sprintf("login: `POST /login` (Basic, bcrypt cost %s, MySQL lookup, RS256 signing)", bcryptCost), rateOf(loginRequests, lg), "bare bcrypt.CompareHashAndPassword, cost "+bcryptCost+", "+rateOf(loginRequests, bc), ratioF(rate(loginRequests, lg.median()), rate(loginRequests, bc.median())))
	sec.note("validate: the local stack's validate function (in this process, with the stack's embedded go-mysql-server as MYSQL_DSN and its generated RS256 key) on its own loopback port; %d keep-alive clients share a fixed count of %d requests with the admin's token; every answer must be 200. Baseline: a net/http server in this process answering the same bytes validate answered, driven the same way. Without MYSQL_DSN: a second validate instance, hosted in this process by internal/local/funchost with only the public key, which skips the user-still-exists query. %d runs each after a 200-request warm-up, alternating; rate = requests ÷ median wall time.", validateClients, validateRequests, b.opts.runs)
	sec.note("login: the stack's login function, %d clients sharing %d `POST /login` with the admin's Basic credentials (BCRYPT_COST=%s, login's default and knative/config.yaml's). Baseline: %d goroutines sharing %d bcrypt.CompareHashAndPassword calls against a hash of the same cost. %d runs each; a ratio near ×1 means bcrypt is all of login's cost, by design.", loginClients, loginRequests, bcryptCost, loginClients, loginRequests, b.opts.runs)
	return sec, nil
}

// load runs count calls of do from clients goroutines and returns the wall time.
func load(clients, count int, do func() error) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	t := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(count) {
				if err := do(); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(t), firstErr
}

func expect200(req *http.Request) error {
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %d", req.Method, req.URL, resp.StatusCode)
	}
	return nil
}

func readBody(req *http.Request) ([]byte, error) {
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s %s: %d %s", req.Method, req.URL, resp.StatusCode, body)
	}
	return body, err
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// rateOf is "N/s (median of R runs of C requests)".
func rateOf(n int, s samples) string {
	r := rate(n, s.median())
	format := "%.0f/s"
	if r < 100 {
		format = "%.1f/s"
	}
	return fmt.Sprintf(format+" (%d requests in %s, median of %d runs)", r, n, fmtDur(s.median()), len(s))
}

// serveFunction hosts a function instance in this process, as the local
// stack does, on a loopback port, and returns its URL and a stop function.
func serveFunction(ctx context.Context, instance any, name string, cfg map[string]string) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() {
		done <- funchost.Serve(fctx, funchost.Function{Name: name, Instance: instance, Config: cfg, Listener: ln})
	}()
	url := "http://" + ln.Addr().String()
	stop := func() { cancel(); <-done }
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := httpClient.Get(url + "/health/readiness"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url, stop, nil
			}
		}
		select {
		case err := <-done:
			cancel()
			return "", nil, fmt.Errorf("%s stopped: %v", name, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	stop()
	return "", nil, fmt.Errorf("%s not ready within 30 s", name)
}
