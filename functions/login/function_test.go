package function

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

const (
	adminEmail = "admin@example.com"
	bobEmail   = "bob@example.com"
	carolEmail = "carol@example.com"
	password   = "correct horse battery"
)

var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func pkcs1PEM(k *rsa.PrivateKey) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
}

func pkcs8PEM(t *testing.T, k any) string {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// baseConfig is an RS256 configuration against dsn with the cheapest bcrypt.
func baseConfig(dsn string) map[string]string {
	return map[string]string{
		"MYSQL_DSN":       dsn,
		"JWT_PRIVATE_KEY": pkcs1PEM(testKey()),
		"BCRYPT_COST":     strconv.Itoa(bcrypt.MinCost),
	}
}

// startFunction starts a Function (after prepare, if given) and serves it over real HTTP.
func startFunction(t *testing.T, cfg map[string]string, prepare ...func(*Function)) (*Function, *httptest.Server) {
	t.Helper()
	f := New()
	for _, p := range prepare {
		p(f)
	}
	if err := f.Start(context.Background(), cfg); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { f.Stop(context.Background()) })
	// The tests add users straight into MySQL: wait for the migration Start began.
	f.lc.load().background.Wait()
	srv := httptest.NewServer(http.HandlerFunc(f.Handle))
	t.Cleanup(srv.Close)
	return f, srv
}

func addUser(t *testing.T, f *Function, email string, admin bool) User {
	t.Helper()
	u, err := AddUser(context.Background(), f.lc.load().db, email, password, admin, bcrypt.MinCost)
	if err != nil {
		t.Fatalf("AddUser(%s): %v", email, err)
	}
	return u
}

type response struct {
	status int
	header http.Header
	body   string
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json (body %q)", ct, r.body)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(r.body), &m); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return m
}

func do(t *testing.T, req *http.Request) response {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{res.StatusCode, res.Header, string(b)}
}

// login posts Basic credentials; an empty email sends no Authorization header.
func login(t *testing.T, base, email, pw string) response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/login", nil)
	if email != "" {
		req.SetBasicAuth(email, pw)
	}
	return do(t, req)
}

func loginToken(t *testing.T, base, email string) string {
	t.Helper()
	r := login(t, base, email, password)
	if r.status != http.StatusOK {
		t.Fatalf("login %s: %d %s", email, r.status, r.body)
	}
	return r.json(t)["access_token"].(string)
}

func call(t *testing.T, method, url, token, body string) response {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return do(t, req)
}

const invalidCredentials = `{"error":"invalid email or password"}` + "\n"

func TestLoginCredentials(t *testing.T) {
	cfg := baseConfig(testDSN(t))
	cfg["LOGIN_MAX_IP_FAILURES"] = "0" // this test is about answers, not the limiter
	f, srv := startFunction(t, cfg)
	addUser(t, f, bobEmail, false)

	cases := []struct {
		name   string
		header string // raw Authorization header; "" sends none
		status int
	}{
		{"right password", basic(bobEmail, password), 200},
		{"email in other case", basic("Bob@Example.COM", password), 200},
		{"wrong password", basic(bobEmail, "wrong password"), 401},
		{"unknown user", basic("nobody@example.com", password), 401},
		{"empty password", basic(bobEmail, ""), 401},
		{"password beyond 72 bytes with the right prefix", basic(bobEmail, password+strings.Repeat("x", 72-len(password))+"tail"), 401},
		{"not an email", basic("bob", password), 401},
		{"no Authorization header", "", 401},
		{"Basic not base64", "Basic !!!", 401},
		{"Basic without colon", "Basic " + base64.StdEncoding.EncodeToString([]byte(bobEmail)), 401},
		{"empty email", basic("", password), 401},
		{"Bearer scheme", "Bearer abc", 401},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/login", nil)
			if c.header != "" {
				req.Header.Set("Authorization", c.header)
			}
			r := do(t, req)
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			if c.status == 200 {
				m := r.json(t)
				if m["token_type"] != "Bearer" || m["expires_in"] != float64(86400) || m["access_token"] == "" {
					t.Errorf("body %v", m)
				}
				return
			}
			if got := r.header.Get("WWW-Authenticate"); got != `Basic realm="mp3converter"` {
				t.Errorf("WWW-Authenticate = %q", got)
			}
			if r.body != invalidCredentials {
				t.Errorf("body %q, want %q (the same for every failure)", r.body, invalidCredentials)
			}
			r.json(t)
		})
	}
	// Unknown users cost the same bcrypt work as known ones.
	st := f.lc.load()
	if c, err := bcrypt.Cost(st.dummyHash()); err != nil || c != st.cost {
		t.Errorf("dummy hash cost %d (%v), want %d", c, err, st.cost)
	}
}

func basic(user, pw string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))
}

func TestTokenContract(t *testing.T) {
	k := testKey()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(keyFile, []byte(pkcs8PEM(t, k)), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := strings.Repeat("s", 32)
	cases := []struct {
		name   string
		keys   map[string]string
		alg    string
		verify any
	}{
		{"RS256 PKCS#1", map[string]string{"JWT_PRIVATE_KEY": pkcs1PEM(k)}, "RS256", &k.PublicKey},
		{"RS256 PKCS#8", map[string]string{"JWT_PRIVATE_KEY": pkcs8PEM(t, k)}, "RS256", &k.PublicKey},
		{"RS256 PEM on one line", map[string]string{"JWT_PRIVATE_KEY": strings.ReplaceAll(pkcs1PEM(k), "\n", `\n`)}, "RS256", &k.PublicKey},
		{"RS256 key file", map[string]string{"JWT_PRIVATE_KEY_FILE": keyFile}, "RS256", &k.PublicKey},
		{"HS256 secret", map[string]string{"JWT_SECRET": secret}, "HS256", []byte(secret)},
		{"HS256 wins over a private key", map[string]string{"JWT_SECRET": secret, "JWT_PRIVATE_KEY": pkcs1PEM(k)}, "HS256", []byte(secret)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := baseConfig(testDSN(t))
			delete(cfg, "JWT_PRIVATE_KEY")
			for k, v := range c.keys {
				cfg[k] = v
			}
			cfg["JWT_TTL"] = "90m"
			cfg["JWT_ISSUER"] = "iss-test"
			cfg["JWT_AUDIENCE"] = "aud-test"
			f, srv := startFunction(t, cfg)
			u := addUser(t, f, adminEmail, true)

			r := login(t, srv.URL, adminEmail, password)
			if r.status != 200 {
				t.Fatalf("login: %d %s", r.status, r.body)
			}
			if r.header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control = %q", r.header.Get("Cache-Control"))
			}
			m := r.json(t)
			if m["expires_in"] != float64(5400) || m["token_type"] != "Bearer" {
				t.Errorf("body %v", m)
			}
			var claims struct {
				Username string `json:"username"`
				Admin    bool   `json:"admin"`
				jwt.RegisteredClaims
			}
			tok, err := jwt.ParseWithClaims(m["access_token"].(string), &claims,
				func(*jwt.Token) (any, error) { return c.verify, nil },
				jwt.WithValidMethods([]string{c.alg}), jwt.WithIssuer("iss-test"), jwt.WithAudience("aud-test"),
				jwt.WithExpirationRequired(), jwt.WithIssuedAt())
			if err != nil {
				t.Fatalf("token does not verify: %v", err)
			}
			wantKid := ""
			if c.alg == "RS256" {
				wantKid = jwkOf(&k.PublicKey).Kid
			}
			if kid, _ := tok.Header["kid"].(string); kid != wantKid {
				t.Errorf("kid %q, want %q", kid, wantKid)
			}
			if claims.Username != adminEmail || !claims.Admin || claims.Subject != strconv.FormatInt(u.ID, 10) {
				t.Errorf("claims %+v", claims)
			}
			if len(claims.ID) != 32 || strings.Trim(claims.ID, "0123456789abcdef") != "" {
				t.Errorf("jti %q, want 128-bit hex", claims.ID)
			}
			if claims.NotBefore == nil || !claims.NotBefore.Equal(claims.IssuedAt.Time) ||
				claims.ExpiresAt.Sub(claims.IssuedAt.Time) != 90*time.Minute {
				t.Errorf("iat %v nbf %v exp %v", claims.IssuedAt, claims.NotBefore, claims.ExpiresAt)
			}
			// The raw payload carries exactly the contract's claims, aud as an array.
			var raw map[string]any
			payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(m["access_token"].(string), ".")[1])
			json.Unmarshal(payload, &raw)
			for _, name := range []string{"username", "admin", "cv", "iat", "exp", "nbf", "sub", "iss", "aud", "jti"} {
				if _, ok := raw[name]; !ok {
					t.Errorf("claim %s missing from %s", name, payload)
				}
			}
			if len(raw) != 10 {
				t.Errorf("payload %s has extra claims", payload)
			}
			if aud, ok := raw["aud"].([]any); !ok || len(aud) != 1 || aud[0] != "aud-test" {
				t.Errorf("aud %v", raw["aud"])
			}
		})
	}
}

// The example of RFC 7638 §3.1.
func TestThumbprintRFC7638(t *testing.T) {
	n, _ := base64.RawURLEncoding.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537}
	if got, want := jwkOf(pub).Kid, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Errorf("JWK thumbprint %q, want %q", got, want)
	}
}

func TestStartConfigErrors(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	dsn := "root@tcp(127.0.0.1:1)/auth"
	cases := []struct {
		name string
		edit func(map[string]string)
		want string
	}{
		{"no MYSQL_DSN", func(c map[string]string) { delete(c, "MYSQL_DSN") }, "MYSQL_DSN is not set"},
		{"DSN without database", func(c map[string]string) { c["MYSQL_DSN"] = "root@tcp(127.0.0.1:1)/" }, "must name a database"},
		{"unparsable DSN", func(c map[string]string) { c["MYSQL_DSN"] = "root@tcp(127.0.0.1:1" }, "MYSQL_DSN"},
		{"no key", func(c map[string]string) { delete(c, "JWT_PRIVATE_KEY") }, "no signing key"},
		{"short secret", func(c map[string]string) { c["JWT_SECRET"] = "too short" }, "at least 32 bytes"},
		{"not PEM", func(c map[string]string) { c["JWT_PRIVATE_KEY"] = "hello" }, "no PEM block"},
		{"public key PEM", func(c map[string]string) {
			der, _ := x509.MarshalPKIXPublicKey(&testKey().PublicKey)
			c["JWT_PRIVATE_KEY"] = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
		}, "want RSA PRIVATE KEY"},
		{"1024-bit key", func(c map[string]string) { c["JWT_PRIVATE_KEY"] = pkcs1PEM(small) }, "at least 2048"},
		{"EC key", func(c map[string]string) { c["JWT_PRIVATE_KEY"] = pkcs8PEM(t, ec) }, "want an RSA key"},
		{"missing key file", func(c map[string]string) {
			delete(c, "JWT_PRIVATE_KEY")
			c["JWT_PRIVATE_KEY_FILE"] = filepath.Join(t.TempDir(), "none.pem")
		}, "JWT_PRIVATE_KEY_FILE"},
		{"bad JWT_TTL", func(c map[string]string) { c["JWT_TTL"] = "1 day" }, "JWT_TTL"},
		{"negative JWT_TTL", func(c map[string]string) { c["JWT_TTL"] = "-1h" }, "JWT_TTL"},
		{"bad BCRYPT_COST", func(c map[string]string) { c["BCRYPT_COST"] = "99" }, "BCRYPT_COST"},
		{"bad LOGIN_MAX_FAILURES", func(c map[string]string) { c["LOGIN_MAX_FAILURES"] = "many" }, "LOGIN_MAX_FAILURES"},
		{"bad LOGIN_FAILURE_WINDOW", func(c map[string]string) { c["LOGIN_FAILURE_WINDOW"] = "0s" }, "LOGIN_FAILURE_WINDOW"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := baseConfig(dsn)
			c.edit(cfg)
			f := New()
			err := f.Start(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Start error %v, want one mentioning %q", err, c.want)
			}
			if ready, _ := f.Ready(context.Background()); ready {
				t.Error("Ready after a failed Start")
			}
		})
	}
}

// Start does not wait for MySQL (cold start): ready while the migration is still waiting
// for a server that does not answer.
func TestStartDoesNotWaitForMySQL(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // never answered
			mu.Unlock()
		}
	}()
	f := New()
	if err := f.Start(context.Background(), baseConfig("root@tcp("+ln.Addr().String()+")/auth")); err != nil {
		t.Fatal(err)
	}
	if ready, _ := f.Ready(context.Background()); !ready {
		t.Error("not Ready after Start")
	}
	if f.lc.load().migrated.Load() {
		t.Error("migrated against a server that never answered")
	}
	ln.Close()
	mu.Lock()
	for _, c := range held {
		c.Close()
	}
	mu.Unlock()
	if err := f.Stop(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestServes503UntilStarted(t *testing.T) {
	f := New()
	srv := httptest.NewServer(http.HandlerFunc(f.Handle))
	defer srv.Close()
	if ready, _ := f.Ready(context.Background()); ready {
		t.Error("Ready before Start")
	}
	r := login(t, srv.URL, bobEmail, password)
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d", r.status)
	}
	r.json(t)
	if err := f.Start(context.Background(), baseConfig(testDSN(t))); err != nil {
		t.Fatal(err)
	}
	defer f.Stop(context.Background())
	if ready, _ := f.Ready(context.Background()); !ready {
		t.Error("not Ready after Start")
	}
	if r := login(t, srv.URL, bobEmail, password); r.status != http.StatusUnauthorized {
		t.Errorf("after Start: %d %s", r.status, r.body)
	}
}

func TestRoutes(t *testing.T) {
	_, srv := startFunction(t, baseConfig(testDSN(t)))
	cases := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/login", 405, "POST"},
		{"PUT", "/login", 405, "POST"},
		{"PATCH", "/users", 405, "GET, HEAD, POST"},
		{"GET", "/users/bob@example.com", 405, "DELETE"},
		{"POST", "/users/bob@example.com/password", 405, "PUT"},
		{"GET", "/nowhere", 404, ""},
		{"POST", "/login/extra", 404, ""},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			r := call(t, c.method, srv.URL+c.path, "", "")
			if r.status != c.status || r.header.Get("Allow") != c.allow {
				t.Fatalf("%d Allow=%q, want %d Allow=%q", r.status, r.header.Get("Allow"), c.status, c.allow)
			}
			r.json(t)
		})
	}
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestLoginRateLimit(t *testing.T) {
	type step struct {
		email, pw string
		status    int
		advance   time.Duration // before the request
		repeat    int
	}
	wrong := "wrong password"
	cases := []struct {
		name  string
		steps []step
	}{
		{"per email: locked after 5 failures, password not even checked, free again after the window", []step{
			{email: bobEmail, pw: wrong, status: 401, repeat: 5},
			{email: bobEmail, pw: password, status: 429},
			{email: bobEmail, pw: wrong, status: 429},
			{email: carolEmail, pw: password, status: 200}, // other users are not affected
			{email: bobEmail, pw: password, status: 429, advance: 14 * time.Minute},
			{email: bobEmail, pw: password, status: 200, advance: time.Minute + time.Second},
		}},
		{"per email: a success clears the count", []step{
			{email: bobEmail, pw: wrong, status: 401, repeat: 4},
			{email: bobEmail, pw: password, status: 200},
			{email: bobEmail, pw: wrong, status: 401, repeat: 5},
			{email: bobEmail, pw: password, status: 429},
		}},
		{"per email: failures expire one by one", []step{
			{email: bobEmail, pw: wrong, status: 401, repeat: 1},
			{email: bobEmail, pw: wrong, status: 401, repeat: 4, advance: 10 * time.Minute},
			{email: bobEmail, pw: password, status: 429},
			{email: bobEmail, pw: password, status: 200, advance: 5*time.Minute + time.Second},
		}},
		{"unknown emails count too", []step{
			{email: "ghost@example.com", pw: wrong, status: 401, repeat: 5},
			{email: "ghost@example.com", pw: wrong, status: 429},
			{email: "GHOST@example.com", pw: wrong, status: 429},
		}},
		{"per IP: locked after 20 failures across emails", []step{
			{email: "", pw: wrong, status: 401, repeat: 20}, // "" = a new unknown email each time
			{email: carolEmail, pw: password, status: 429},
			{email: carolEmail, pw: password, status: 200, advance: 15*time.Minute + time.Second},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clock := &fakeClock{now: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)}
			f, srv := startFunction(t, baseConfig(testDSN(t)), func(f *Function) { f.clock = clock.Now })
			addUser(t, f, bobEmail, false)
			addUser(t, f, carolEmail, false)
			n := 0
			for i, s := range c.steps {
				clock.Advance(s.advance)
				for range max(s.repeat, 1) {
					email := s.email
					if email == "" {
						n++
						email = "ghost" + strconv.Itoa(n) + "@example.com"
					}
					r := login(t, srv.URL, email, s.pw)
					if r.status != s.status {
						t.Fatalf("step %d (%s): status %d, want %d: %s", i, email, r.status, s.status, r.body)
					}
					if r.status == 429 {
						if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 || ra > 900 {
							t.Errorf("step %d: Retry-After %q", i, r.header.Get("Retry-After"))
						}
						if r.json(t)["error"] == "" {
							t.Errorf("step %d: no error message", i)
						}
					}
				}
			}
		})
	}
}

func TestLimiter(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	l := newLimiter(15 * time.Minute)
	l.now = clock.Now
	ctx := context.Background()
	account := bucket{key: "user:1", max: 5, clearedBySuccess: true}
	ip := bucket{key: "ip:10.0.0.1", max: 20}

	// Parallel guesses cannot get past the limit: a check in flight holds its room.
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if wait, err := l.begin(ctx, account, ip); err == nil && wait == 0 {
				mu.Lock()
				allowed++
				mu.Unlock()
				l.end(failed, account, ip)
			}
		}()
	}
	wg.Wait()
	if allowed != 5 {
		t.Fatalf("%d parallel guesses checked, want 5", allowed)
	}
	if wait, _ := l.begin(ctx, account, ip); wait != 15*time.Minute {
		t.Errorf("begin: wait=%v, want blocked for 15m", wait)
	}
	clock.Advance(10 * time.Minute)
	if wait, _ := l.begin(ctx, account, ip); wait != 5*time.Minute {
		t.Errorf("wait %v, want 5m", wait)
	}

	// Parallel right passwords: none is refused for the others in flight.
	other := bucket{key: "user:2", max: 5, clearedBySuccess: true}
	const parallel = 8
	began := make(chan struct{}, parallel)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if wait, err := l.begin(ctx, other); err != nil || wait != 0 {
				t.Errorf("right password refused: wait %v, err %v", wait, err)
				return
			}
			began <- struct{}{}
			l.end(succeeded, other)
		}()
	}
	wg.Wait()
	if len(began) != parallel {
		t.Errorf("%d of %d checked", len(began), parallel)
	}

	// A check waiting for room gives up when its request ends.
	for range 5 {
		l.begin(ctx, bucket{key: "user:3", max: 5})
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l.begin(cancelled, bucket{key: "user:3", max: 5}); err == nil {
		t.Error("begin on a full bucket of checks in flight returned without waiting")
	}
	// An undecided end (the store was down) gives the room back without counting.
	l.end(undecided, bucket{key: "user:3", max: 5})
	if wait, err := l.begin(ctx, bucket{key: "user:3", max: 5}); wait != 0 || err != nil {
		t.Errorf("begin after an undecided end: %v %v", wait, err)
	}

	// Expired keys are swept.
	clock.Advance(16 * time.Minute)
	l.begin(ctx, bucket{key: "user:4", max: 5})
	l.end(failed, bucket{key: "user:4", max: 5})
	l.mu.Lock()
	keys := len(l.failures)
	l.mu.Unlock()
	if keys != 1 {
		t.Errorf("%d keys after sweep, want 1 (only user:4's)", keys)
	}
	// Limits of 0 are off.
	for range 100 {
		if wait, err := l.begin(ctx, bucket{key: "user:5"}); wait != 0 || err != nil {
			t.Fatal("disabled limit blocked")
		}
		l.end(failed, bucket{key: "user:5"})
	}
}

func TestMySQLDownAtStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now

	gmsDSN := (&gmsServer{addr: addr}).dsn("auth")
	f, srv := startFunction(t, baseConfig(gmsDSN))
	if ready, _ := f.Ready(context.Background()); !ready {
		t.Fatal("not Ready")
	}
	for i := range 8 { // more than the per-email limit: outages do not count as failures
		r := login(t, srv.URL, bobEmail, password)
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("request %d while MySQL is down: %d %s", i, r.status, r.body)
		}
		r.json(t)
	}
	if r := call(t, "GET", srv.URL+"/users", "x.y.z", ""); r.status != http.StatusUnauthorized {
		t.Errorf("bad token while MySQL is down: %d", r.status) // a bad token never needs the store
	}

	startGMS(t, addr) // MySQL comes up: the next request migrates
	if r := login(t, srv.URL, bobEmail, password); r.status != http.StatusUnauthorized {
		t.Fatalf("after MySQL came up: %d %s", r.status, r.body)
	}
	addUser(t, f, bobEmail, false)
	if r := login(t, srv.URL, bobEmail, password); r.status != http.StatusOK {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
}

func TestMySQLGoesDownAndComesBack(t *testing.T) {
	gms := startGMS(t, "127.0.0.1:0")
	f, srv := startFunction(t, baseConfig(gms.dsn("auth")))
	addUser(t, f, adminEmail, true)
	token := loginToken(t, srv.URL, adminEmail)

	gms.stop()
	for _, r := range []response{login(t, srv.URL, adminEmail, password), call(t, "GET", srv.URL+"/users", token, "")} {
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("MySQL down: %d %s", r.status, r.body)
		}
		if r.json(t)["error"] != "user store unavailable, try again" {
			t.Errorf("body %s", r.body)
		}
	}

	gms.restart(t)
	if r := login(t, srv.URL, adminEmail, password); r.status != http.StatusOK {
		t.Fatalf("MySQL back: %d %s", r.status, r.body)
	}
	if r := call(t, "GET", srv.URL+"/users", token, ""); r.status != http.StatusOK {
		t.Fatalf("MySQL back: %d %s", r.status, r.body)
	}
}

func TestAdminAPI(t *testing.T) {
	f, srv := startFunction(t, baseConfig(testDSN(t)))
	addUser(t, f, adminEmail, true)
	addUser(t, f, bobEmail, false)
	addUser(t, f, carolEmail, false)
	admin := loginToken(t, srv.URL, adminEmail)
	bob := loginToken(t, srv.URL, bobEmail)
	carol := loginToken(t, srv.URL, carolEmail)

	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	forged, _ := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"username": adminEmail, "admin": true, "sub": "1", "iss": "mp3converter", "aud": "mp3converter",
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(other)

	steps := []struct {
		name         string
		method, path string
		token, body  string
		status       int
		check        func(t *testing.T, r response)
	}{
		{"list without token", "GET", "/users", "", "", 401, wantBearer(`Bearer realm="mp3converter"`)},
		{"list with garbage token", "GET", "/users", "garbage", "", 401, wantBearer(`Bearer realm="mp3converter", error="invalid_token", error_description="invalid token"`)},
		{"list with token of another key", "GET", "/users", forged, "", 401, nil},
		{"list as non-admin", "GET", "/users", bob, "", 403, nil},
		{"list as admin", "GET", "/users", admin, "", 200, func(t *testing.T, r response) {
			users := r.json(t)["users"].([]any)
			if len(users) != 3 || users[0].(map[string]any)["email"] != adminEmail || users[0].(map[string]any)["admin"] != true {
				t.Errorf("users %v", users)
			}
			if _, ok := users[1].(map[string]any)["password_hash"]; ok {
				t.Error("password hash listed")
			}
		}},
		{"create without token", "POST", "/users", "", `{"email":"dave@example.com","password":"long enough"}`, 401, nil},
		{"create as non-admin", "POST", "/users", bob, `{"email":"dave@example.com","password":"long enough"}`, 403, nil},
		{"create as admin", "POST", "/users", admin, `{"email":"Dave@Example.com","password":"long enough","admin":true}`, 201, func(t *testing.T, r response) {
			m := r.json(t)
			created, err := time.Parse(time.RFC3339, m["created_at"].(string))
			if m["email"] != "dave@example.com" || m["admin"] != true || m["id"].(float64) < 1 || err != nil || time.Since(created) > time.Hour {
				t.Errorf("created %v (%v)", m, err)
			}
		}},
		{"create duplicate", "POST", "/users", admin, `{"email":"dave@example.com","password":"long enough"}`, 409, nil},
		{"create malformed email", "POST", "/users", admin, `{"email":"dave","password":"long enough"}`, 400, wantError(ErrInvalidEmail.Error())},
		{"create email with display name", "POST", "/users", admin, `{"email":"Dave <eve@example.com>","password":"long enough"}`, 400, nil},
		{"create email too long", "POST", "/users", admin, `{"email":"` + strings.Repeat("e", 250) + `@example.com","password":"long enough"}`, 400, nil},
		{"create short password", "POST", "/users", admin, `{"email":"eve@example.com","password":"short"}`, 400, wantError(ErrWeakPassword.Error())},
		{"create 73-byte password", "POST", "/users", admin, `{"email":"eve@example.com","password":"` + strings.Repeat("p", 73) + `"}`, 400, nil},
		{"create malformed JSON", "POST", "/users", admin, `{"email":`, 400, nil},
		{"new user logs in", "", "", "", "", 0, func(t *testing.T, _ response) {
			if r := login(t, srv.URL, "dave@example.com", "long enough"); r.status != 200 {
				t.Errorf("dave login: %d %s", r.status, r.body)
			}
		}},
		{"admin rights follow the table, not just the token", "", "", "", "", 0, func(t *testing.T, _ response) {
			dave := login(t, srv.URL, "dave@example.com", "long enough").json(t)["access_token"].(string)
			if r := call(t, "GET", srv.URL+"/users", dave, ""); r.status != 200 {
				t.Fatalf("dave as admin: %d %s", r.status, r.body)
			}
			if _, err := f.lc.load().db.Exec("UPDATE users SET is_admin = FALSE WHERE email = ?", "dave@example.com"); err != nil {
				t.Fatal(err)
			}
			if r := call(t, "GET", srv.URL+"/users", dave, ""); r.status != 403 {
				t.Errorf("demoted dave: %d", r.status)
			}
		}},
		{"own password, weak", "PUT", "/users/bob@example.com/password", bob, `{"password":"short","current_password":"` + password + `"}`, 400, nil},
		{"own password with the token alone", "PUT", "/users/bob@example.com/password", bob, `{"password":"new password 1"}`, 403,
			wantError("current_password is required to change your own password, and must be right")},
		{"own password with a wrong current password", "PUT", "/users/bob@example.com/password", bob, `{"password":"new password 1","current_password":"wrong password"}`, 403, nil},
		{"someone else's password as non-admin", "PUT", "/users/carol@example.com/password", bob, `{"password":"new password 2"}`, 403, nil},
		{"someone else's password as admin, no current password asked", "PUT", "/users/carol@example.com/password", admin, `{"password":"new password 2"}`, 204, func(t *testing.T, r response) {
			r = call(t, "GET", srv.URL+"/users", carol, "")
			if r.status != 401 || r.json(t)["error"] != "token revoked: password or rights changed since" {
				t.Errorf("carol's token after a reset: %d %s", r.status, r.body)
			}
		}},
		{"password of unknown user as admin", "PUT", "/users/nobody@example.com/password", admin, `{"password":"new password 3"}`, 404, nil},
		{"password without token", "PUT", "/users/bob@example.com/password", "", `{"password":"new password 4"}`, 401, nil},
		{"delete as non-admin", "DELETE", "/users/carol@example.com", bob, "", 403, nil},
		{"delete without token", "DELETE", "/users/carol@example.com", "", "", 401, nil},
		{"delete as admin", "DELETE", "/users/carol@example.com", admin, "", 204, nil},
		{"delete again", "DELETE", "/users/carol@example.com", admin, "", 404, nil},
		{"delete malformed email", "DELETE", "/users/nobody", admin, "", 404, nil},
		{"deleted user's token is refused", "PUT", "/users/carol@example.com/password", carol, `{"password":"new password 5"}`, 401,
			wantBearer(`Bearer realm="mp3converter", error="invalid_token", error_description="user no longer exists"`)},
		{"list as admin after changes", "GET", "/users", admin, "", 200, func(t *testing.T, r response) {
			var emails []string
			for _, u := range r.json(t)["users"].([]any) {
				emails = append(emails, u.(map[string]any)["email"].(string))
			}
			if strings.Join(emails, " ") != "admin@example.com bob@example.com dave@example.com" {
				t.Errorf("users %v", emails)
			}
		}},
		{"own password", "PUT", "/users/bob@example.com/password", bob, `{"password":"new password 1","current_password":"` + password + `"}`, 204, func(t *testing.T, r response) {
			if login(t, srv.URL, bobEmail, "new password 1").status != 200 || login(t, srv.URL, bobEmail, password).status != 401 {
				t.Error("password not changed")
			}
			if r := call(t, "GET", srv.URL+"/users", bob, ""); r.status != 401 {
				t.Errorf("bob's token from before his change: %d %s", r.status, r.body)
			}
		}},
		{"delete the last admin", "DELETE", "/users/admin@example.com", admin, "", 409, wantError(ErrLastAdmin.Error())},
		{"demote the last admin", "PUT", "/users/admin@example.com/admin", admin, `{"admin":false}`, 409, wantError(ErrLastAdmin.Error())},
		{"demote without a value", "PUT", "/users/admin@example.com/admin", admin, `{}`, 400, nil},
		{"promote as non-admin", "", "", "", "", 0, func(t *testing.T, _ response) {
			bob := login(t, srv.URL, bobEmail, "new password 1").json(t)["access_token"].(string)
			if r := call(t, "PUT", srv.URL+"/users/bob@example.com/admin", bob, `{"admin":true}`); r.status != 403 {
				t.Errorf("bob promoting himself: %d %s", r.status, r.body)
			}
		}},
		{"promote dave", "PUT", "/users/dave@example.com/admin", admin, `{"admin":true}`, 204, nil},
		{"promote unknown", "PUT", "/users/nobody@example.com/admin", admin, `{"admin":true}`, 404, nil},
		{"demote the first admin now that there is another", "PUT", "/users/admin@example.com/admin", admin, `{"admin":false}`, 204, func(t *testing.T, r response) {
			if r := call(t, "GET", srv.URL+"/users", admin, ""); r.status != 401 {
				t.Errorf("demoted admin's token: %d %s", r.status, r.body)
			}
			dave := login(t, srv.URL, "dave@example.com", "long enough").json(t)["access_token"].(string)
			if r := call(t, "DELETE", srv.URL+"/users/dave@example.com", dave, ""); r.status != 409 {
				t.Errorf("dave deleting himself, the last admin: %d %s", r.status, r.body)
			}
		}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			var r response
			if s.method != "" {
				r = call(t, s.method, srv.URL+s.path, s.token, s.body)
				if r.status != s.status {
					t.Fatalf("status %d, want %d: %s", r.status, s.status, r.body)
				}
				if r.status != 204 {
					r.json(t)
				}
			}
			if s.check != nil {
				s.check(t, r)
			}
		})
	}
}

func wantBearer(want string) func(*testing.T, response) {
	return func(t *testing.T, r response) {
		if got := r.header.Get("WWW-Authenticate"); got != want {
			t.Errorf("WWW-Authenticate = %q, want %q", got, want)
		}
	}
}

func wantError(want string) func(*testing.T, response) {
	return func(t *testing.T, r response) {
		if got := r.json(t)["error"]; got != want {
			t.Errorf("error %q, want %q", got, want)
		}
	}
}

func TestClientIPBehindTrustedProxies(t *testing.T) {
	req := func(remote string, forwarded ...string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/login", nil)
		r.RemoteAddr = remote
		for _, f := range forwarded {
			r.Header.Add("X-Forwarded-For", f)
		}
		return r
	}
	pods, err := parsePrefixes("10.244.0.0/16, fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		r       *http.Request
		hops    int
		trusted []netip.Prefix
		want    string
	}{
		{"no proxy trusted: the peer", req("10.0.0.9:5555", "6.6.6.6"), 0, nil, "10.0.0.9"},
		{"one proxy: its entry", req("127.0.0.1:5555", "203.0.113.7"), 1, nil, "203.0.113.7"},
		{"one proxy: a spoofed entry on the left is ignored", req("127.0.0.1:5555", "6.6.6.6, 203.0.113.7"), 1, nil, "203.0.113.7"},
		{"two proxies across two headers", req("127.0.0.1:5555", "6.6.6.6, 203.0.113.7", "10.1.1.1"), 2, nil, "203.0.113.7"},
		{"fewer entries than proxies: the peer", req("127.0.0.1:5555"), 1, nil, "127.0.0.1"},
		{"queue-proxy, ingress", req("127.0.0.1:5555", "203.0.113.7, 10.244.1.5"), 1, pods, "203.0.113.7"},
		{"queue-proxy, activator, ingress", req("127.0.0.1:5555", "203.0.113.7, 10.244.1.5, 10.244.2.9"), 1, pods, "203.0.113.7"},
		{"queue-proxy, activator, ingress, spoofed entry", req("127.0.0.1:5555", "6.6.6.6, 203.0.113.7, 10.244.1.5, 10.244.2.9"), 1, pods, "203.0.113.7"},
		{"IPv6 pods", req("[::1]:5555", "2001:db8::7, fd00::1:5"), 1, pods, "2001:db8::7"},
		{"only pods: the leftmost", req("127.0.0.1:5555", "10.244.3.3, 10.244.1.5"), 1, pods, "10.244.3.3"},
	}
	for _, c := range cases {
		if got := clientIP(c.r, c.hops, c.trusted); got != c.want {
			t.Errorf("%s: clientIP = %q, want %q", c.name, got, c.want)
		}
	}
	if _, err := parsePrefixes("10.0.0.0/8,not-a-cidr"); err == nil {
		t.Error("a bad CIDR is accepted")
	}
}

// manifestConfig reads the values knative/config.yaml gives the cluster's functions
// (flat "  KEY: value" lines of its data).
func manifestConfig(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "knative", "config.yaml"))
	if err != nil {
		t.Fatalf("the manifests' values: %v", err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "  ") || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok {
			out[k] = strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	return out
}

// TestLoginLimitsWithTheManifestsValues: on Knative every request reaches login from
// queue-proxy on 127.0.0.1 (as from this test's client), with the ingress's, and at
// times the activator's, additions to X-Forwarded-For. With knative/config.yaml's own
// values one client's failures must not lock out another client on the same pod.
func TestLoginLimitsWithTheManifestsValues(t *testing.T) {
	manifest := manifestConfig(t)
	cfg := baseConfig(testDSN(t))
	for _, k := range []string{"LOGIN_MAX_FAILURES", "LOGIN_MAX_IP_FAILURES", "LOGIN_FAILURE_WINDOW", "TRUSTED_PROXY_HOPS", "TRUSTED_PROXIES"} {
		cfg[k] = manifest[k]
	}
	f, srv := startFunction(t, cfg)
	addUser(t, f, bobEmail, false)
	maxIP, _ := strconv.Atoi(cfg["LOGIN_MAX_IP_FAILURES"])
	if maxIP == 0 {
		t.Fatal("LOGIN_MAX_IP_FAILURES is off in the manifests")
	}
	viaIngress := func(email, pw string, forwarded string) response {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/login", nil)
		req.SetBasicAuth(email, pw)
		req.Header.Set("X-Forwarded-For", forwarded)
		return do(t, req)
	}
	const attacker, ingressPod, activatorPod = "203.0.113.66", "10.244.1.5", "10.244.2.9"
	for i := range maxIP {
		if r := viaIngress("ghost"+strconv.Itoa(i)+"@example.com", "wrong password", attacker+", "+ingressPod); r.status != 401 {
			t.Fatalf("guess %d: %d", i, r.status)
		}
	}
	if r := viaIngress("ghost@example.com", "wrong password", "198.51.100.1, "+attacker+", "+ingressPod+", "+activatorPod); r.status != 429 {
		t.Errorf("the attacker through the activator, with a forged entry: %d, want 429", r.status)
	}
	if r := viaIngress(bobEmail, password, "198.51.100.7, "+ingressPod); r.status != 200 {
		t.Errorf("another client on the same pod: %d %s", r.status, r.body)
	}
	if r := viaIngress(bobEmail, password, "198.51.100.7, "+ingressPod+", "+activatorPod); r.status != 200 {
		t.Errorf("another client through the activator: %d %s", r.status, r.body)
	}
}

// TestParallelRightPasswordsAreNeverRefused: checks still in flight used to count as
// failures, so right passwords in parallel got 429s. Four real failures leave room for one
// check at a time; eight right passwords at once must all get in (each waits its turn).
func TestParallelRightPasswordsAreNeverRefused(t *testing.T) {
	f, srv := startFunction(t, baseConfig(testDSN(t)))
	// A costlier hash keeps each check in flight long enough for the others to arrive,
	// and eight of them one after the other well within the request's 5 s (under -race too).
	if _, err := AddUser(context.Background(), f.lc.load().db, bobEmail, password, false, 7); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if r := login(t, srv.URL, bobEmail, "wrong password"); r.status != 401 {
			t.Fatalf("guess: %d", r.status)
		}
	}
	const parallel = 8
	statuses := make(chan int, parallel)
	var wg sync.WaitGroup
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses <- login(t, srv.URL, bobEmail, password).status
		}()
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != 200 {
			t.Errorf("a right password got %d", s)
		}
	}
}

// TestOwnerKeepsStandingUnderAttack: guessers used to lock an account for everyone,
// its owner included. A client that logged in before shows its device cookie and is
// counted apart; clients without one share the account's bucket, so guesses per account
// stay bounded; a cookie is the owner's only, genuine and for the current password.
func TestOwnerKeepsStandingUnderAttack(t *testing.T) {
	cfg := baseConfig(testDSN(t))
	cfg["LOGIN_MAX_IP_FAILURES"] = "0" // the attacker is everywhere; this is about the account
	f, srv := startFunction(t, cfg)
	addUser(t, f, bobEmail, false)
	addUser(t, f, carolEmail, false)
	cookieOf := func(r response) string {
		for _, c := range (&http.Response{Header: r.header}).Cookies() {
			if c.Name == deviceCookie {
				if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.MaxAge <= 0 {
					t.Errorf("device cookie attributes %+v", c)
				}
				return c.Value
			}
		}
		t.Fatalf("no device cookie in %v", r.header)
		return ""
	}
	withCookie := func(email, pw, cookie string) response {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/login", nil)
		req.SetBasicAuth(email, pw)
		req.AddCookie(&http.Cookie{Name: deviceCookie, Value: cookie})
		return do(t, req)
	}
	bobDevice := cookieOf(login(t, srv.URL, bobEmail, password))
	carolDevice := cookieOf(login(t, srv.URL, carolEmail, password))

	for range 5 {
		if r := login(t, srv.URL, bobEmail, "wrong password"); r.status != 401 {
			t.Fatalf("guess: %d", r.status)
		}
	}
	steps := []struct {
		name   string
		cookie string
		pw     string
		status int
	}{
		{"guesser without a cookie: locked", "", "wrong password", 429},
		{"right password without a cookie: locked too (bounded for all new clients)", "", password, 429},
		{"owner's device: in", bobDevice, password, 200},
		{"another user's device cookie: no standing", carolDevice, password, 429},
		{"forged device cookie: no standing", strings.Replace(bobDevice, ".", ".9", 1), password, 429},
		{"garbage cookie: no standing", "garbage", password, 429},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			r := withCookie(bobEmail, s.pw, s.cookie)
			if s.cookie == "" {
				r = login(t, srv.URL, bobEmail, s.pw)
			}
			if r.status != s.status {
				t.Errorf("status %d, want %d: %s", r.status, s.status, r.body)
			}
		})
	}
	// A device's own guesses are bounded too.
	for range 5 {
		withCookie(bobEmail, "wrong password", bobDevice)
	}
	if r := withCookie(bobEmail, password, bobDevice); r.status != 429 {
		t.Errorf("device after its own 5 failures: %d", r.status)
	}
	// A password change (here: an admin's reset) retires every device's standing.
	if err := SetPassword(context.Background(), f.lc.load().db, carolEmail, "carols new password", bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		login(t, srv.URL, carolEmail, "wrong password")
	}
	if r := withCookie(carolEmail, "carols new password", carolDevice); r.status != 429 {
		t.Errorf("device cookie from before a reset: %d", r.status)
	}
}
