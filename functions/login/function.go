// Package function is the login function: it checks email and password (HTTP
// Basic) against the MySQL users table and issues JWTs, and it serves a small
// admin API over the same table.
//
//	POST   /login                    Basic email:password -> {access_token, token_type, expires_in}
//	POST   /users                    {email, password, admin} -> 201 user          (admin)
//	GET    /users                    -> {"users": [...]}                           (admin)
//	DELETE /users/{email}            -> 204 | 409 for the last admin                (admin)
//	PUT    /users/{email}/admin      {admin} -> 204 | 409 for the last admin        (admin)
//	PUT    /users/{email}/password   {password, current_password} -> 204           (admin or that user)
//
// Tokens: sub is the user's id, username the address as stored, cv the credential
// version; a password change or reset and a demotion move the version on, which ends
// every earlier token (here and in validate), as deleting the user does.
//
// This file holds the lifecycle and the routes; login.go answers /login, admin.go the admin
// API, keys.go loads the signing key, users.go is the users table, limiter.go slows guessing.
package function

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
)

const (
	maxBodyBytes = 64 << 10
	dbTimeout    = 5 * time.Second
	verifyLeeway = 5 * time.Second
)

// Settings are the environment variables login reads (README, "Configuration").
var Settings = withTelemetry([]Setting{
	{Name: "MYSQL_DSN", Kind: KindText, Required: true, Meaning: "the MySQL database of the users table, e.g. user:pass@tcp(host:3306)/auth?parseTime=true; login creates the database and table"},
	{Name: "JWT_PRIVATE_KEY", Kind: KindText, Meaning: "RS256 signing key, PEM (PKCS#1 or PKCS#8, at least 2048 bits)"},
	{Name: "JWT_PRIVATE_KEY_FILE", Kind: KindText, Meaning: "a file holding JWT_PRIVATE_KEY"},
	{Name: "JWT_SECRET", Kind: KindText, Meaning: "HS256 instead of RS256 (at least 32 bytes)"},
	{Name: "JWT_TTL", Kind: KindDuration, Default: "24h", Min: "1s", Meaning: "lifetime of a token"},
	{Name: "JWT_ISSUER", Kind: KindText, Default: "mp3converter", Meaning: "the iss claim"},
	{Name: "JWT_AUDIENCE", Kind: KindText, Default: "mp3converter", Meaning: "the aud claim"},
	{Name: "BCRYPT_COST", Kind: KindInt, Default: "10", Min: "4", Max: "31", Meaning: "bcrypt cost of new password hashes"},
	{Name: "LOGIN_MAX_FAILURES", Kind: KindInt, Default: "5", Min: "0", Max: "1048576", Meaning: "failed logins per account per window before 429, counted apart for each device that logged in before (device cookie) and for all other clients together (0 turns it off)"},
	{Name: "LOGIN_MAX_IP_FAILURES", Kind: KindInt, Default: "20", Min: "0", Max: "1048576", Meaning: "failed logins per client per window before 429 (0 turns it off)"},
	{Name: "LOGIN_FAILURE_WINDOW", Kind: KindDuration, Default: "15m", Min: "1s", Meaning: "how long failed logins count"},
	{Name: "K_SINK", Kind: KindURL, Meaning: "the broker ingress user.deleted goes to; a SinkBinding sets it on the cluster; unset: none is published"},
	{Name: "TRUSTED_PROXY_HOPS", Kind: KindInt, Default: "0", Min: "0", Max: "10", Meaning: "proxies in front that append to X-Forwarded-For, the TCP peer's being the first: the per-client limit counts the entry that many from the right (0: the TCP peer)"},
	{Name: "TRUSTED_PROXIES", Kind: KindText, Meaning: "comma-separated CIDRs of further proxies (a cluster's pod network: ingress, activator): X-Forwarded-For entries inside them are skipped leftwards to find the client"},
})

// Function is the login function. Its zero value is not usable: call New, then Start.
type Function struct {
	telemetry // traces and metrics: kit_telemetry.go

	log *slog.Logger
	lc  lifecycle[state]

	clock func() time.Time // the limiter's clock: a test hook, set before Start; nil: time.Now
}

// state is everything Start builds from the configuration.
type state struct {
	log    *slog.Logger
	routes *http.ServeMux

	dsn       string
	db        *sql.DB
	migrateMu sync.Mutex
	migrated  atomic.Bool

	keys      signingKeys
	issuer    string
	audience  string
	ttl       time.Duration
	cost      int
	dummyHash func() []byte // compared against when the email is unknown, so both cases cost the same

	// Start makes the dummy hash and runs the migration in the background, so that it is
	// ready without waiting for bcrypt or MySQL; a request that needs either waits for it.
	background     sync.WaitGroup
	stopBackground context.CancelFunc

	limiter        *limiter
	maxPerAccount  int            // LOGIN_MAX_FAILURES: per account (all untrusted clients together) and per device
	maxPerIP       int            // LOGIN_MAX_IP_FAILURES
	proxyHops      int            // trusted proxies in front that append to X-Forwarded-For (TRUSTED_PROXY_HOPS)
	trustedProxies []netip.Prefix // networks of further proxies, skipped in X-Forwarded-For (TRUSTED_PROXIES)
	bcryptSlots    chan struct{}  // bounds the password comparisons running at once
	sink           string         // the broker ingress (K_SINK), "" for none
}

// New returns a Function that serves 503 until Start has run.
func New() *Function {
	return &Function{log: withTraceIDs(slog.Default()).With("function", "login")}
}

// Handle serves every request of the function.
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) { f.serveHTTP(w, r, f.handle) }

// handle is Handle inside the request's trace.
func (f *Function) handle(w http.ResponseWriter, r *http.Request) {
	s := f.lc.load()
	if s == nil {
		writeError(w, http.StatusServiceUnavailable, "starting, try again")
		return
	}
	s.routes.ServeHTTP(w, r)
}

// newRoutes returns the answers of the function (see the package comment).
func (s *state) newRoutes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", s.handleLogin)
	mux.HandleFunc("/login", methodNotAllowed("POST"))
	mux.HandleFunc("GET /users", s.withCaller(adminOnly, s.handleListUsers))
	mux.HandleFunc("POST /users", s.withCaller(adminOnly, s.handleCreateUser))
	mux.HandleFunc("/users", methodNotAllowed("GET, HEAD, POST"))
	mux.HandleFunc("DELETE /users/{email}", s.withCaller(adminOnly, s.handleDeleteUser))
	mux.HandleFunc("/users/{email}", methodNotAllowed("DELETE"))
	mux.HandleFunc("PUT /users/{email}/admin", s.withCaller(adminOnly, s.handleSetAdmin))
	mux.HandleFunc("/users/{email}/admin", methodNotAllowed("PUT"))
	mux.HandleFunc("PUT /users/{email}/password", s.withCaller(anyUser, s.handleSetPassword))
	mux.HandleFunc("/users/{email}/password", methodNotAllowed("PUT"))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not found")
	})
	return mux
}

// Start reads the configuration and starts the migration in the background. A MySQL that
// is down does not fail Start: the migration is retried by the next request.
func (f *Function) Start(ctx context.Context, cfg map[string]string) error {
	if err := f.startTelemetry(ctx, "login", cfg); err != nil {
		return err
	}
	s, err := f.configure(cfg)
	if err != nil {
		return err
	}
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stopBackground = cancel
	s.background.Go(func() { s.dummyHash() })
	s.background.Go(func() {
		mctx, cancel := context.WithTimeout(bctx, dbTimeout)
		defer cancel()
		if err := s.ensureSchema(mctx); err != nil && bctx.Err() == nil {
			f.log.Warn("migration failed, will retry on the next request", "err", err)
		}
	})
	if old := f.lc.start(s); old != nil {
		_ = old.close()
	}
	f.log.Info("started", "alg", s.keys.method.Alg(), "kid", s.keys.kid, "issuer", s.issuer, "ttl", s.ttl.String())
	return nil
}

// Stop closes the connection pool.
func (f *Function) Stop(ctx context.Context) error {
	defer f.stopTelemetry(ctx) // after the work in flight: its spans are exported
	s := f.lc.stop()
	if s == nil {
		return nil
	}
	return s.close()
}

// close ends the background work of Start and closes the connection pool.
func (s *state) close() error {
	s.stopBackground()
	s.background.Wait()
	return s.db.Close()
}

// Ready is true once Start has finished.
func (f *Function) Ready(ctx context.Context) (bool, error) { return f.lc.started(), nil }

// Alive is always true: nothing in the process can get stuck for good.
func (f *Function) Alive(ctx context.Context) (bool, error) { return true, nil }

// configure builds the state from the Start map. Every error is a configuration error.
func (f *Function) configure(cfg map[string]string) (*state, error) {
	set, err := loadSettings(Settings, cfg)
	if err != nil {
		return nil, err
	}
	keys, err := loadSigningKeys(cfg)
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	s := &state{
		log:           f.log,
		dsn:           set.text("MYSQL_DSN"),
		keys:          keys,
		issuer:        set.text("JWT_ISSUER"),
		audience:      set.text("JWT_AUDIENCE"),
		ttl:           set.duration("JWT_TTL"),
		cost:          int(set.int("BCRYPT_COST")),
		limiter:       newLimiter(set.duration("LOGIN_FAILURE_WINDOW")),
		maxPerAccount: int(set.int("LOGIN_MAX_FAILURES")),
		maxPerIP:      int(set.int("LOGIN_MAX_IP_FAILURES")),
		proxyHops:     int(set.int("TRUSTED_PROXY_HOPS")),
		// As many bcrypt comparisons at once as there are CPUs: more only queue for
		// the CPU, and 200 runnable comparisons starve the user lookups of other
		// logins past dbTimeout (503). Waiting here costs no CPU.
		bcryptSlots: make(chan struct{}, runtime.GOMAXPROCS(0)),
		sink:        set.text("K_SINK"),
	}
	if s.trustedProxies, err = parsePrefixes(set.text("TRUSTED_PROXIES")); err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	if f.clock != nil {
		s.limiter.now = f.clock
	}
	s.dummyHash = sync.OnceValue(func() []byte {
		random := make([]byte, 32)
		rand.Read(random)
		// No error: the cost is within bcrypt's range (Settings), the password 64 bytes.
		hash, _ := bcrypt.GenerateFromPassword([]byte(hex.EncodeToString(random)), s.cost)
		return hash
	})
	if s.db, err = OpenDB(s.dsn); err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	s.routes = s.newRoutes()
	return s, nil
}

// ensureSchema runs the migration until it has succeeded once.
func (s *state) ensureSchema(ctx context.Context) error {
	if s.migrated.Load() {
		return nil
	}
	s.migrateMu.Lock()
	defer s.migrateMu.Unlock()
	if s.migrated.Load() {
		return nil
	}
	if err := MigrateDSN(ctx, s.dsn); err != nil {
		return err
	}
	s.migrated.Store(true)
	s.log.Info("migration done")
	return nil
}
