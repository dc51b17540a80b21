// Package function is the login function: it checks email and password (HTTP
// Basic) against the MySQL users table and issues JWTs, and it serves a small
// admin API over the same table.
//
//	POST   /login                    Basic email:password -> {access_token, token_type, expires_in}
//	POST   /users                    {email, password, admin} -> 201 user          (admin)
//	GET    /users                    -> {"users": [...]}                           (admin)
//	DELETE /users/{email}            -> 204                                        (admin)
//	PUT    /users/{email}/password   {password} -> 204                             (admin or that user)
package function

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

const (
	realm          = "mp3converter"
	maxTokenLen    = 8 << 10
	maxBodyBytes   = 64 << 10
	dbTimeout      = 5 * time.Second
	verifyLeeway   = 5 * time.Second
	minRSABits     = 2048
	minSecretBytes = 32
)

// Function is the login function. Everything but log, mux and limiter is set by Start.
type Function struct {
	log   *slog.Logger
	mux   *http.ServeMux
	ready atomic.Bool // set once Start has finished

	dsn       string
	db        *sql.DB
	migrateMu sync.Mutex
	migrated  atomic.Bool

	keys      signingKeys
	issuer    string
	audience  string
	ttl       time.Duration
	cost      int
	dummyHash []byte // compared against when the email is unknown, so both cases cost the same

	limiter   *limiter
	proxyHops int // trusted proxies in front that append to X-Forwarded-For (TRUSTED_PROXY_HOPS)
}

// New returns a Function whose routes are set; it serves 503 until Start has run.
func New() *Function {
	f := &Function{
		log:     slog.Default().With("function", "login"),
		mux:     http.NewServeMux(),
		limiter: newLimiter(5, 20, 15*time.Minute),
	}
	f.mux.HandleFunc("POST /login", f.handleLogin)
	f.mux.HandleFunc("/login", methodNotAllowed("POST"))
	f.mux.HandleFunc("GET /users", f.withCaller(adminOnly, f.handleListUsers))
	f.mux.HandleFunc("POST /users", f.withCaller(adminOnly, f.handleCreateUser))
	f.mux.HandleFunc("/users", methodNotAllowed("GET, HEAD, POST"))
	f.mux.HandleFunc("DELETE /users/{email}", f.withCaller(adminOnly, f.handleDeleteUser))
	f.mux.HandleFunc("/users/{email}", methodNotAllowed("DELETE"))
	f.mux.HandleFunc("PUT /users/{email}/password", f.withCaller(anyUser, f.handleSetPassword))
	f.mux.HandleFunc("/users/{email}/password", methodNotAllowed("PUT"))
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

// Start reads the configuration and tries the migration once. A MySQL that is
// down does not fail Start: the migration is retried by the next request.
func (f *Function) Start(ctx context.Context, cfg map[string]string) error {
	if err := f.configure(cfg); err != nil {
		return err
	}
	mctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	if err := f.ensureSchema(mctx); err != nil {
		f.log.Warn("migration failed, will retry on the next request", "err", err)
	}
	f.ready.Store(true)
	f.log.Info("started", "alg", f.keys.method.Alg(), "kid", f.keys.kid, "issuer", f.issuer, "ttl", f.ttl.String())
	return nil
}

// Stop closes the connection pool.
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

// handleLogin checks Basic credentials and answers with a token.
func (f *Function) handleLogin(w http.ResponseWriter, r *http.Request) {
	email, password, ok := r.BasicAuth()
	if !ok || email == "" {
		f.unauthorizedBasic(w)
		return
	}
	email = strings.ToLower(email)
	ip := clientIP(r, f.proxyHops)
	if wait, ok := f.limiter.attempt(email, ip); !ok {
		f.log.Warn("login rate limited", "email", email, "ip", ip)
		w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
		writeError(w, http.StatusTooManyRequests, "too many failed logins, try again later")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	if err := f.ensureSchema(ctx); err != nil {
		f.limiter.release(email, ip)
		f.storeUnavailable(w, err)
		return
	}
	creds, err := lookupCredentials(ctx, f.db, email)
	if err != nil && !errors.Is(err, ErrUnknownUser) {
		f.limiter.release(email, ip)
		f.storeUnavailable(w, err)
		return
	}
	if !f.passwordMatches(creds.hash, password) {
		f.log.Info("login failed", "email", email, "ip", ip)
		f.unauthorizedBasic(w)
		return
	}
	f.limiter.succeeded(email, ip)
	token, err := f.issue(creds.id, email, creds.admin)
	if err != nil {
		f.log.Error("signing token", "err", err)
		writeError(w, http.StatusInternalServerError, "could not issue a token")
		return
	}
	f.log.Info("login", "email", email, "admin", creds.admin)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": token,
		"token_type":   "Bearer",
		"expires_in":   int64(f.ttl / time.Second),
	})
}

// handleCreateUser: POST /users {email, password, admin} (admin only).
func (f *Function) handleCreateUser(ctx context.Context, w http.ResponseWriter, r *http.Request, c caller) {
	var body struct {
		Email    string `json:"email"`
		Password string `json:"password"`
		Admin    bool   `json:"admin"`
	}
	if !readJSON(w, r, &body) {
		return
	}
	u, err := AddUser(ctx, f.db, body.Email, body.Password, body.Admin, f.cost)
	switch {
	case errors.Is(err, ErrInvalidEmail), errors.Is(err, ErrWeakPassword):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrDuplicateUser):
		writeError(w, http.StatusConflict, err.Error())
	case err != nil:
		f.storeUnavailable(w, err)
	default:
		f.log.Info("user created", "by", c.email, "email", u.Email, "admin", u.Admin)
		writeJSON(w, http.StatusCreated, u)
	}
}

// handleListUsers: GET /users (admin only).
func (f *Function) handleListUsers(ctx context.Context, w http.ResponseWriter, r *http.Request, c caller) {
	users, err := ListUsers(ctx, f.db)
	if err != nil {
		f.storeUnavailable(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": users})
}

// handleDeleteUser: DELETE /users/{email} (admin only).
func (f *Function) handleDeleteUser(ctx context.Context, w http.ResponseWriter, r *http.Request, c caller) {
	err := DeleteUser(ctx, f.db, r.PathValue("email"))
	switch {
	case errors.Is(err, ErrUnknownUser):
		writeError(w, http.StatusNotFound, err.Error())
	case err != nil:
		f.storeUnavailable(w, err)
	default:
		f.log.Info("user deleted", "by", c.email, "email", r.PathValue("email"))
		w.WriteHeader(http.StatusNoContent)
	}
}

// handleSetPassword: PUT /users/{email}/password {password} (admin or that user).
func (f *Function) handleSetPassword(ctx context.Context, w http.ResponseWriter, r *http.Request, c caller) {
	email := strings.ToLower(r.PathValue("email"))
	if email != c.email && !c.admin {
		writeError(w, http.StatusForbidden, "admin rights required")
		return
	}
	var body struct {
		Password string `json:"password"`
	}
	if !readJSON(w, r, &body) {
		return
	}
	err := SetPassword(ctx, f.db, email, body.Password, f.cost)
	switch {
	case errors.Is(err, ErrWeakPassword):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrUnknownUser):
		writeError(w, http.StatusNotFound, err.Error())
	case err != nil:
		f.storeUnavailable(w, err)
	default:
		f.log.Info("password changed", "by", c.email, "email", email)
		w.WriteHeader(http.StatusNoContent)
	}
}

// configure reads the Start map into f. Every error is a configuration error.
func (f *Function) configure(cfg map[string]string) error {
	dsn := cfg["MYSQL_DSN"]
	if dsn == "" {
		return errors.New("login: MYSQL_DSN is required")
	}
	keys, err := loadSigningKeys(cfg)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	f.keys = keys
	f.issuer = valueOr(cfg["JWT_ISSUER"], "mp3converter")
	f.audience = valueOr(cfg["JWT_AUDIENCE"], "mp3converter")
	if f.ttl, err = durationSetting(cfg, "JWT_TTL", 24*time.Hour); err != nil {
		return err
	}
	if f.cost, err = intSetting(cfg, "BCRYPT_COST", bcrypt.DefaultCost, bcrypt.MinCost, bcrypt.MaxCost); err != nil {
		return err
	}
	if f.limiter.maxPerEmail, err = intSetting(cfg, "LOGIN_MAX_FAILURES", 5, 0, 1<<20); err != nil {
		return err
	}
	if f.limiter.maxPerIP, err = intSetting(cfg, "LOGIN_MAX_IP_FAILURES", 20, 0, 1<<20); err != nil {
		return err
	}
	if f.limiter.window, err = durationSetting(cfg, "LOGIN_FAILURE_WINDOW", 15*time.Minute); err != nil {
		return err
	}
	if f.proxyHops, err = intSetting(cfg, "TRUSTED_PROXY_HOPS", 0, 0, 10); err != nil {
		return err
	}
	random := make([]byte, 32)
	rand.Read(random)
	if f.dummyHash, err = bcrypt.GenerateFromPassword([]byte(hex.EncodeToString(random)), f.cost); err != nil {
		return err
	}
	if f.db, err = OpenDB(dsn); err != nil {
		return fmt.Errorf("login: %w", err)
	}
	f.dsn = dsn
	return nil
}

// ensureSchema runs the migration until it has succeeded once.
func (f *Function) ensureSchema(ctx context.Context) error {
	if f.migrated.Load() {
		return nil
	}
	f.migrateMu.Lock()
	defer f.migrateMu.Unlock()
	if f.migrated.Load() {
		return nil
	}
	if err := MigrateDSN(ctx, f.dsn); err != nil {
		return err
	}
	f.migrated.Store(true)
	f.log.Info("migration done")
	return nil
}

// passwordMatches does one bcrypt comparison whether or not the user exists
// (hash nil): against the dummy hash of the same cost in that case.
func (f *Function) passwordMatches(hash []byte, password string) bool {
	exists := hash != nil
	if !exists {
		hash = f.dummyHash
	}
	tooLong := len(password) > maxPasswordLen // bcrypt would ignore the rest
	if tooLong {
		password = password[:maxPasswordLen]
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	return err == nil && exists && !tooLong
}

// tokenClaims are the claims of the auth contract.
type tokenClaims struct {
	Username string `json:"username"`
	Admin    bool   `json:"admin"`
	jwt.RegisteredClaims
}

// issue signs a token for the user.
func (f *Function) issue(id int64, email string, admin bool) (string, error) {
	jti := make([]byte, 16)
	rand.Read(jti)
	now := time.Now()
	claims := tokenClaims{
		Username: email,
		Admin:    admin,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   strconv.FormatInt(id, 10),
			Issuer:    f.issuer,
			Audience:  jwt.ClaimStrings{f.audience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(f.ttl)),
			ID:        hex.EncodeToString(jti),
		},
	}
	t := jwt.NewWithClaims(f.keys.method, claims)
	if f.keys.kid != "" {
		t.Header["kid"] = f.keys.kid
	}
	return t.SignedString(f.keys.sign)
}

// caller is the verified user behind an admin API request.
type caller struct {
	id    int64
	email string
	admin bool
}

// authorize verifies the Bearer token (issued by this function: same key,
// alg pinned, iss/aud checked) and that its user still exists; admin is the
// token's AND the current is_admin. On failure it answers 401 or 503.
func (f *Function) authorize(ctx context.Context, w http.ResponseWriter, r *http.Request) (caller, bool) {
	header := r.Header.Get("Authorization")
	scheme, token, _ := strings.Cut(header, " ")
	token = strings.TrimSpace(token)
	if header == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`"`)
		writeError(w, http.StatusUnauthorized, "missing bearer token")
		return caller{}, false
	}
	invalid := func(msg string) (caller, bool) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`", error="invalid_token", error_description="`+msg+`"`)
		writeError(w, http.StatusUnauthorized, msg)
		return caller{}, false
	}
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return invalid("expected a bearer token")
	}
	if len(token) > maxTokenLen {
		return invalid("token too large")
	}
	var claims tokenClaims
	_, err := jwt.ParseWithClaims(token, &claims, f.keys.keyFunc,
		jwt.WithValidMethods([]string{f.keys.method.Alg()}),
		jwt.WithStrictDecoding(), // one token, one spelling: no unused base64 bits
		jwt.WithIssuer(f.issuer), jwt.WithAudience(f.audience),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(verifyLeeway))
	if err != nil {
		return invalid("invalid token")
	}
	id, err := strconv.ParseInt(claims.Subject, 10, 64)
	if err != nil || claims.Username == "" {
		return invalid("invalid token")
	}
	if err := f.ensureSchema(ctx); err != nil {
		f.storeUnavailable(w, err)
		return caller{}, false
	}
	admin, err := currentAdmin(ctx, f.db, id, claims.Username)
	if errors.Is(err, ErrUnknownUser) {
		return invalid("user no longer exists")
	}
	if err != nil {
		f.storeUnavailable(w, err)
		return caller{}, false
	}
	return caller{id: id, email: claims.Username, admin: claims.Admin && admin}, true
}

const (
	anyUser   = false
	adminOnly = true
)

// withCaller wraps an admin API handler: it bounds the request's store work
// and hands over the verified caller, after a 403 for non-admins if needAdmin.
func (f *Function) withCaller(needAdmin bool, h func(ctx context.Context, w http.ResponseWriter, r *http.Request, c caller)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
		defer cancel()
		c, ok := f.authorize(ctx, w, r)
		if !ok {
			return
		}
		if needAdmin && !c.admin {
			writeError(w, http.StatusForbidden, "admin rights required")
			return
		}
		h(ctx, w, r, c)
	}
}

func (f *Function) unauthorizedBasic(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Basic realm="`+realm+`"`)
	writeError(w, http.StatusUnauthorized, "invalid email or password")
}

func (f *Function) storeUnavailable(w http.ResponseWriter, err error) {
	f.log.Warn("user store unavailable", "err", err)
	writeError(w, http.StatusServiceUnavailable, "user store unavailable, try again")
}

// signingKeys is the configured algorithm with its keys.
type signingKeys struct {
	method jwt.SigningMethod
	sign   any // *rsa.PrivateKey or []byte
	verify any // *rsa.PublicKey or []byte
	kid    string
}

func (k signingKeys) keyFunc(t *jwt.Token) (any, error) {
	if kid, ok := t.Header["kid"]; ok && k.kid != "" && kid != k.kid {
		return nil, errors.New("unknown kid")
	}
	return k.verify, nil
}

// loadSigningKeys: HS256 when JWT_SECRET is set, else RS256 from JWT_PRIVATE_KEY
// or JWT_PRIVATE_KEY_FILE.
func loadSigningKeys(cfg map[string]string) (signingKeys, error) {
	if secret := cfg["JWT_SECRET"]; secret != "" {
		if len(secret) < minSecretBytes {
			return signingKeys{}, fmt.Errorf("JWT_SECRET must be at least %d bytes", minSecretBytes)
		}
		return signingKeys{method: jwt.SigningMethodHS256, sign: []byte(secret), verify: []byte(secret)}, nil
	}
	pemText := cfg["JWT_PRIVATE_KEY"]
	if pemText == "" && cfg["JWT_PRIVATE_KEY_FILE"] != "" {
		b, err := os.ReadFile(cfg["JWT_PRIVATE_KEY_FILE"])
		if err != nil {
			return signingKeys{}, fmt.Errorf("JWT_PRIVATE_KEY_FILE: %w", err)
		}
		pemText = string(b)
	}
	if pemText == "" {
		return signingKeys{}, errors.New("no signing key: set JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE (RS256) or JWT_SECRET (HS256)")
	}
	key, err := parseRSAPrivateKey(pemText)
	if err != nil {
		return signingKeys{}, fmt.Errorf("JWT_PRIVATE_KEY: %w", err)
	}
	return signingKeys{method: jwt.SigningMethodRS256, sign: key, verify: &key.PublicKey, kid: thumbprint(&key.PublicKey)}, nil
}

// parseRSAPrivateKey reads a PKCS#1 or PKCS#8 PEM RSA key of at least 2048 bits.
// Literal "\n" sequences (a PEM squeezed into one env line) are accepted.
func parseRSAPrivateKey(text string) (*rsa.PrivateKey, error) {
	if !strings.Contains(text, "\n") {
		text = strings.ReplaceAll(text, `\n`, "\n")
	}
	block, _ := pem.Decode([]byte(text))
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	var key *rsa.PrivateKey
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		key = k
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("PKCS#8 key is %T, want an RSA key", k)
		}
		key = rk
	default:
		return nil, fmt.Errorf("PEM block %q, want RSA PRIVATE KEY or PRIVATE KEY", block.Type)
	}
	if key.N.BitLen() < minRSABits {
		return nil, fmt.Errorf("RSA key has %d bits, want at least %d", key.N.BitLen(), minRSABits)
	}
	return key, nil
}

// thumbprint is the RFC 7638 JWK thumbprint (base64url SHA-256) of an RSA public key.
func thumbprint(pub *rsa.PublicKey) string {
	n := base64.RawURLEncoding.EncodeToString(pub.N.Bytes())
	e := base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes())
	sum := sha256.Sum256([]byte(`{"e":"` + e + `","kty":"RSA","n":"` + n + `"}`))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// clientIP is the address the per-client limit counts. Behind proxies that
// each append their peer's address to X-Forwarded-For, the client is the
// entry `hops` from the right; entries further left are the client's own
// claims and are never trusted.
func clientIP(r *http.Request, hops int) string {
	if hops > 0 {
		var forwarded []string
		for _, h := range r.Header.Values("X-Forwarded-For") {
			for _, a := range strings.Split(h, ",") {
				forwarded = append(forwarded, strings.TrimSpace(a))
			}
		}
		if len(forwarded) >= hops && forwarded[len(forwarded)-hops] != "" {
			return forwarded[len(forwarded)-hops]
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "malformed JSON body")
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func valueOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func durationSetting(cfg map[string]string, name string, def time.Duration) (time.Duration, error) {
	v := cfg[name]
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("login: %s=%q: want a positive Go duration such as 24h", name, v)
	}
	return d, nil
}

func intSetting(cfg map[string]string, name string, def, lo, hi int) (int, error) {
	v := cfg[name]
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("login: %s=%q: want an integer from %d to %d", name, v, lo, hi)
	}
	return n, nil
}
