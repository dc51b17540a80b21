// Package function is the validate function: it checks the Bearer JWTs that
// login issues and answers with their claims, and it publishes the public key.
//
//	GET|POST /validate               Authorization: Bearer <jwt> -> 200 claims | 401 | 503
//	GET      /.well-known/jwks.json  -> {"keys": [RSA public key]} (404 with HS256)
//
// With MYSQL_DSN set it also checks that the token's user still exists, so the
// tokens of a deleted user stop working; without it validation is cryptographic only.
package function

import (
	"context"
	"crypto/rsa"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/golang-jwt/jwt/v5"
)

const dbTimeout = 5 * time.Second

// Settings are the environment variables validate reads (README, "Configuration").
var Settings = []Setting{
	{Name: "JWT_PUBLIC_KEY", Kind: KindText, Meaning: "RS256 verification key, PEM"},
	{Name: "JWT_PUBLIC_KEY_FILE", Kind: KindText, Meaning: "a file holding JWT_PUBLIC_KEY"},
	{Name: "JWT_PRIVATE_KEY", Kind: KindText, Meaning: "login's signing key, to derive the public key from"},
	{Name: "JWT_PRIVATE_KEY_FILE", Kind: KindText, Meaning: "a file holding JWT_PRIVATE_KEY"},
	{Name: "JWT_SECRET", Kind: KindText, Meaning: "HS256 instead of RS256 (at least 32 bytes)"},
	{Name: "JWT_ISSUER", Kind: KindText, Default: "mp3converter", Meaning: "the iss claim required"},
	{Name: "JWT_AUDIENCE", Kind: KindText, Default: "mp3converter", Meaning: "the aud claim required"},
	{Name: "JWT_LEEWAY", Kind: KindDuration, Default: "5s", Min: "0s", Max: "30s", Meaning: "clock skew allowed on exp, nbf and iat"},
	{Name: "MYSQL_DSN", Kind: KindText, Meaning: "optional: when set, tokens of deleted users are refused (503 while MySQL is down)"},
}

// Function is the validate function. Everything but log and mux is set by Start.
type Function struct {
	log   *slog.Logger
	mux   *http.ServeMux
	ready atomic.Bool // set once Start has finished

	keys     verifyKeys
	issuer   string
	audience string
	leeway   time.Duration
	db       *sql.DB // nil without MYSQL_DSN: no check that the user still exists
}

// New returns a Function whose routes are set; it serves 503 until Start has run.
func New() *Function {
	f := &Function{
		log: slog.Default().With("function", "validate"),
		mux: http.NewServeMux(),
	}
	f.mux.HandleFunc("GET /validate", f.handleValidate)
	f.mux.HandleFunc("POST /validate", f.handleValidate)
	f.mux.HandleFunc("/validate", methodNotAllowed("GET, HEAD, POST"))
	f.mux.HandleFunc("GET /.well-known/jwks.json", f.handleJWKS)
	f.mux.HandleFunc("/.well-known/jwks.json", methodNotAllowed("GET, HEAD"))
	f.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not found")
	})
	return f
}

// Handle serves every request of the function.
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) {
	if !f.ready.Load() {
		writeError(w, http.StatusServiceUnavailable, "starting, try again")
		return
	}
	f.mux.ServeHTTP(w, r)
}

// Start reads the configuration. It never dials MySQL, so a MySQL that is
// down does not fail it; only bad configuration does.
func (f *Function) Start(ctx context.Context, cfg map[string]string) error {
	set, err := loadSettings(Settings, cfg)
	if err != nil {
		return fmt.Errorf("validate: %w", err)
	}
	keys, err := loadVerifyKeys(cfg)
	if err != nil {
		return fmt.Errorf("validate: %w", err)
	}
	f.keys = keys
	f.issuer = set.text("JWT_ISSUER")
	f.audience = set.text("JWT_AUDIENCE")
	f.leeway = set.duration("JWT_LEEWAY")
	if dsn := set.text("MYSQL_DSN"); dsn != "" {
		if f.db, err = openDB(dsn); err != nil {
			return fmt.Errorf("validate: %w", err)
		}
	}
	f.ready.Store(true)
	f.log.Info("started", "alg", f.keys.method.Alg(), "kid", f.keys.kid, "issuer", f.issuer,
		"audience", f.audience, "leeway", f.leeway.String(), "user_check", f.db != nil)
	return nil
}

// Stop closes the connection pool, if any.
func (f *Function) Stop(ctx context.Context) error {
	if f.db != nil {
		return f.db.Close()
	}
	return nil
}

// Ready is true once Start has finished.
func (f *Function) Ready(ctx context.Context) (bool, error) { return f.ready.Load(), nil }

// Alive is always true: nothing in the process can get stuck for good.
func (f *Function) Alive(ctx context.Context) (bool, error) { return true, nil }

// answer is the 200 body: the claims, dates as Unix seconds.
type answer struct {
	Username string   `json:"username"`
	Admin    bool     `json:"admin"`
	Sub      string   `json:"sub"`
	Iss      string   `json:"iss"`
	Aud      []string `json:"aud"`
	Iat      int64    `json:"iat,omitempty"`
	Exp      int64    `json:"exp"`
	Nbf      int64    `json:"nbf,omitempty"`
	Jti      string   `json:"jti,omitempty"`
}

// handleValidate answers 200 with the token's claims, 401 for any token that
// is not good, 503 when the user store cannot tell whether the user exists.
func (f *Function) handleValidate(w http.ResponseWriter, r *http.Request) {
	header := r.Header.Get("Authorization")
	if header == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`"`)
		writeError(w, http.StatusUnauthorized, "missing bearer token")
		return
	}
	c, problem := f.verify(header)
	if problem != "" {
		invalidToken(w, problem)
		return
	}
	admin := c.Admin
	if f.db != nil {
		id, err := strconv.ParseInt(c.Subject, 10, 64)
		if err != nil {
			invalidToken(w, "invalid subject")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
		defer cancel()
		current, err := userAdmin(ctx, f.db, id, c.Username)
		if errors.Is(err, errUserGone) {
			invalidToken(w, "user no longer exists")
			return
		}
		if err != nil {
			f.log.Warn("user store unavailable", "err", err)
			writeError(w, http.StatusServiceUnavailable, "user store unavailable, try again")
			return
		}
		admin = admin && current
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, answer{
		Username: c.Username,
		Admin:    admin,
		Sub:      c.Subject,
		Iss:      c.Issuer,
		Aud:      c.Audience,
		Iat:      unix(c.IssuedAt),
		Exp:      unix(c.ExpiresAt),
		Nbf:      unix(c.NotBefore),
		Jti:      c.ID,
	})
}

// handleJWKS publishes the RSA public key (RFC 7517), or 404 with HS256.
func (f *Function) handleJWKS(w http.ResponseWriter, r *http.Request) {
	if f.keys.jwk == nil {
		writeError(w, http.StatusNotFound, "no public key: tokens are signed with a shared secret (HS256)")
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, map[string]any{"keys": []any{f.keys.jwk}})
}

// verify checks an Authorization header value and returns the token's claims,
// or a short description of what is wrong with it.
func (f *Function) verify(header string) (*tokenClaims, string) {
	scheme, token, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return nil, "expected a bearer token"
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return nil, "empty bearer token"
	}
	if len(token) > maxTokenLen {
		return nil, "token too large"
	}
	var c tokenClaims
	if err := parseToken(token, &c, f.keys.keyFunc, f.keys.method.Alg(), f.issuer, f.audience, f.leeway); err != nil {
		return nil, describe(err)
	}
	if c.Username == "" || c.Subject == "" {
		return nil, "token is missing a required claim"
	}
	return &c, ""
}

var errUnknownKid = errors.New("unknown key id")

// describe turns a jwt error into an error_description (RFC 6750 §3: no quotes or backslashes).
func describe(err error) string {
	switch {
	case errors.Is(err, errUnknownKid):
		return "unknown key id"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "unverifiable token"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "invalid signature or signing method"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token issued in the future"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "invalid issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "invalid audience"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "token is missing a required claim"
	default:
		return "invalid token"
	}
}

var errUserGone = errors.New("user no longer exists")

// userAdmin returns the current is_admin of the user with this id and email.
// A missing table is an error (MySQL not ready), not a missing user.
func userAdmin(ctx context.Context, db *sql.DB, id int64, email string) (bool, error) {
	var admin bool
	err := db.QueryRowContext(ctx, "SELECT is_admin FROM users WHERE id = ? AND email = ?", id, email).Scan(&admin)
	if errors.Is(err, sql.ErrNoRows) {
		return false, errUserGone
	}
	return admin, err
}

// verifyKeys is the configured algorithm with its verification key.
type verifyKeys struct {
	method jwt.SigningMethod
	key    any    // *rsa.PublicKey or []byte
	kid    string // RFC 7638 thumbprint; "" with HS256
	jwk    *jwk   // nil with HS256
}

// keyFunc returns the one key; a token naming another key id is refused.
// A token without kid is accepted: there is only one key to try.
func (k verifyKeys) keyFunc(t *jwt.Token) (any, error) {
	if kid, ok := t.Header["kid"]; ok && k.kid != "" && kid != k.kid {
		return nil, errUnknownKid
	}
	return k.key, nil
}

// loadVerifyKeys: HS256 when JWT_SECRET is set; else RS256 with JWT_PUBLIC_KEY(_FILE),
// or the public half of JWT_PRIVATE_KEY(_FILE). Both given must match.
func loadVerifyKeys(cfg map[string]string) (verifyKeys, error) {
	if secret := cfg["JWT_SECRET"]; secret != "" {
		if len(secret) < minSecretBytes {
			return verifyKeys{}, fmt.Errorf("JWT_SECRET must be at least %d bytes", minSecretBytes)
		}
		return verifyKeys{method: jwt.SigningMethodHS256, key: []byte(secret)}, nil
	}
	pubPEM, err := pemSetting(cfg, "JWT_PUBLIC_KEY")
	if err != nil {
		return verifyKeys{}, err
	}
	privPEM, err := pemSetting(cfg, "JWT_PRIVATE_KEY")
	if err != nil {
		return verifyKeys{}, err
	}
	var pub *rsa.PublicKey
	if pubPEM != "" {
		if pub, err = parseRSAPublicKey(pubPEM); err != nil {
			return verifyKeys{}, fmt.Errorf("JWT_PUBLIC_KEY: %w", err)
		}
	}
	if privPEM != "" {
		priv, err := parseRSAPrivateKey(privPEM)
		if err != nil {
			return verifyKeys{}, fmt.Errorf("JWT_PRIVATE_KEY: %w", err)
		}
		if pub != nil && !pub.Equal(&priv.PublicKey) {
			return verifyKeys{}, errors.New("JWT_PUBLIC_KEY is not the public half of JWT_PRIVATE_KEY")
		}
		pub = &priv.PublicKey
	}
	if pub == nil {
		return verifyKeys{}, errors.New("no verification key: set JWT_PUBLIC_KEY, JWT_PRIVATE_KEY (or their _FILE forms) for RS256, or JWT_SECRET for HS256")
	}
	if err := checkRSABits(pub); err != nil {
		return verifyKeys{}, err
	}
	k := jwkOf(pub)
	return verifyKeys{method: jwt.SigningMethodRS256, key: pub, kid: k.Kid, jwk: k}, nil
}

// openDB returns a pool for dsn (parseTime forced, 5 s dial timeout). It does not dial.
func openDB(dsn string) (*sql.DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("MYSQL_DSN: %w", err)
	}
	if cfg.DBName == "" {
		return nil, errors.New("MYSQL_DSN must name the database that holds the users table")
	}
	cfg.ParseTime = true
	if cfg.Timeout == 0 {
		cfg.Timeout = dbTimeout
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("MYSQL_DSN: %w", err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(10)
	db.SetMaxIdleConns(5)
	db.SetConnMaxLifetime(5 * time.Minute)
	return db, nil
}

func invalidToken(w http.ResponseWriter, description string) {
	w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="`+description+`"`)
	writeError(w, http.StatusUnauthorized, description)
}

func unix(d *jwt.NumericDate) int64 {
	if d == nil {
		return 0
	}
	return d.Unix()
}
