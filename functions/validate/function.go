// Package function is the validate function: it checks the Bearer JWTs that
// login issues and answers with their claims, and it publishes the public key.
//
//	GET|POST /validate               Authorization: Bearer <jwt> -> 200 claims | 401 | 503
//	GET      /.well-known/jwks.json  -> {"keys": [RSA public key]} (404 with HS256)
//
// With MYSQL_DSN set it also checks that the token's user still exists under the same
// id and address, and that the token's credential version (cv) is the user's current one:
// the tokens of a deleted user, and those issued before a password change, reset or
// demotion, stop working within userCacheTTL (5 s: a user's row is reused that long for
// tokens that match it; upload and download also cache a yes for VALIDATE_CACHE_TTL, 30 s,
// so there the bound is the sum).
// Without MYSQL_DSN validation is cryptographic only. The answer's sub is the user's id:
// what files and jobs belong to.
//
// This file holds the lifecycle and the routes; token.go checks a token and answers,
// keys.go loads the verification key, users.go asks MySQL whether the user still exists.
package function

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

const dbTimeout = 5 * time.Second

// Settings are the environment variables validate reads (README, "Configuration").
var Settings = withTelemetry([]Setting{
	{Name: "JWT_PUBLIC_KEY", Kind: KindText, Meaning: "RS256 verification key, PEM"},
	{Name: "JWT_PUBLIC_KEY_FILE", Kind: KindText, Meaning: "a file holding JWT_PUBLIC_KEY"},
	{Name: "JWT_PRIVATE_KEY", Kind: KindText, Meaning: "login's signing key, to derive the public key from"},
	{Name: "JWT_PRIVATE_KEY_FILE", Kind: KindText, Meaning: "a file holding JWT_PRIVATE_KEY"},
	{Name: "JWT_SECRET", Kind: KindText, Meaning: "HS256 instead of RS256 (at least 32 bytes)"},
	{Name: "JWT_ISSUER", Kind: KindText, Default: "mp3converter", Meaning: "the iss claim required"},
	{Name: "JWT_AUDIENCE", Kind: KindText, Default: "mp3converter", Meaning: "the aud claim required"},
	{Name: "JWT_TTL", Kind: KindDuration, Default: "24h", Min: "1s", Meaning: "the longest lifetime (exp - iat) a token may claim: login's JWT_TTL"},
	{Name: "JWT_LEEWAY", Kind: KindDuration, Default: "5s", Min: "0s", Max: "30s", Meaning: "clock skew allowed on exp, nbf and iat"},
	{Name: "MYSQL_DSN", Kind: KindText, Meaning: "optional: when set, tokens of deleted users and tokens from before a password change or demotion are refused (503 while MySQL is down)"},
})

// Function is the validate function. Its zero value is not usable: call New, then Start.
type Function struct {
	telemetry // traces and metrics: kit_telemetry.go

	log *slog.Logger
	lc  lifecycle[state]
	now func() time.Time // the user cache's clock; tests move it
}

// state is everything Start builds from the configuration.
type state struct {
	log      *slog.Logger
	routes   *http.ServeMux
	keys     verifyKeys
	issuer   string
	audience string
	leeway   time.Duration
	ttl      time.Duration // the longest lifetime a token may claim
	db       *sql.DB       // nil without MYSQL_DSN: no check that the user still exists
	users    *userCache    // the rows db recently returned
}

// New returns a Function that serves 503 until Start has run.
func New() *Function {
	return &Function{log: withTraceIDs(slog.Default()).With("function", "validate"), now: time.Now}
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
	mux.HandleFunc("GET /validate", s.handleValidate)
	mux.HandleFunc("POST /validate", s.handleValidate)
	mux.HandleFunc("/validate", methodNotAllowed("GET, HEAD, POST"))
	mux.HandleFunc("GET /.well-known/jwks.json", s.handleJWKS)
	mux.HandleFunc("/.well-known/jwks.json", methodNotAllowed("GET, HEAD"))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not found")
	})
	return mux
}

// Start reads the configuration. It never dials MySQL, so a MySQL that is
// down does not fail it; only bad configuration does.
func (f *Function) Start(ctx context.Context, cfg map[string]string) error {
	if err := f.startTelemetry(ctx, "validate", cfg); err != nil {
		return err
	}
	set, err := loadSettings(Settings, cfg)
	if err != nil {
		return fmt.Errorf("validate: %w", err)
	}
	keys, err := loadVerifyKeys(cfg)
	if err != nil {
		return fmt.Errorf("validate: %w", err)
	}
	s := &state{
		log:      f.log,
		keys:     keys,
		issuer:   set.text("JWT_ISSUER"),
		audience: set.text("JWT_AUDIENCE"),
		leeway:   set.duration("JWT_LEEWAY"),
		ttl:      set.duration("JWT_TTL"),
		users:    newUserCache(f.now),
	}
	if dsn := set.text("MYSQL_DSN"); dsn != "" {
		if s.db, err = openDB(dsn); err != nil {
			return fmt.Errorf("validate: %w", err)
		}
	}
	s.routes = s.newRoutes()
	if old := f.lc.start(s); old != nil && old.db != nil {
		_ = old.db.Close()
	}
	f.log.Info("started", "alg", s.keys.method.Alg(), "kid", s.keys.kid, "issuer", s.issuer,
		"audience", s.audience, "leeway", s.leeway.String(), "user_check", s.db != nil)
	return nil
}

// Stop closes the connection pool, if any.
func (f *Function) Stop(ctx context.Context) error {
	defer f.stopTelemetry(ctx) // after the work in flight: its spans are exported
	s := f.lc.stop()
	if s == nil || s.db == nil {
		return nil
	}
	return s.db.Close()
}

// Ready is true once Start has finished.
func (f *Function) Ready(ctx context.Context) (bool, error) { return f.lc.started(), nil }

// Alive is always true: nothing in the process can get stuck for good.
func (f *Function) Alive(ctx context.Context) (bool, error) { return true, nil }
