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
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

const (
	maxBodyBytes = 64 << 10
	dbTimeout    = 5 * time.Second
	verifyLeeway = 5 * time.Second
)

// Settings are the environment variables login reads (README, "Configuration").
var Settings = []Setting{
	{Name: "MYSQL_DSN", Kind: KindText, Required: true, Meaning: "the MySQL database of the users table, e.g. user:pass@tcp(host:3306)/auth?parseTime=true; login creates the database and table"},
	{Name: "JWT_PRIVATE_KEY", Kind: KindText, Meaning: "RS256 signing key, PEM (PKCS#1 or PKCS#8, at least 2048 bits)"},
	{Name: "JWT_PRIVATE_KEY_FILE", Kind: KindText, Meaning: "a file holding JWT_PRIVATE_KEY"},
	{Name: "JWT_SECRET", Kind: KindText, Meaning: "HS256 instead of RS256 (at least 32 bytes)"},
	{Name: "JWT_TTL", Kind: KindDuration, Default: "24h", Min: "1s", Meaning: "lifetime of a token"},
	{Name: "JWT_ISSUER", Kind: KindText, Default: "mp3converter", Meaning: "the iss claim"},
	{Name: "JWT_AUDIENCE", Kind: KindText, Default: "mp3converter", Meaning: "the aud claim"},
	{Name: "BCRYPT_COST", Kind: KindInt, Default: "10", Min: "4", Max: "31", Meaning: "bcrypt cost of new password hashes"},
	{Name: "LOGIN_MAX_FAILURES", Kind: KindInt, Default: "5", Min: "0", Max: "1048576", Meaning: "failed logins per email per window before 429 (0 turns it off)"},
	{Name: "LOGIN_MAX_IP_FAILURES", Kind: KindInt, Default: "20", Min: "0", Max: "1048576", Meaning: "failed logins per client per window before 429 (0 turns it off)"},
	{Name: "LOGIN_FAILURE_WINDOW", Kind: KindDuration, Default: "15m", Min: "1s", Meaning: "how long failed logins count"},
	{Name: "K_SINK", Kind: KindURL, Meaning: "the broker ingress user.deleted goes to; a SinkBinding sets it on the cluster; unset: none is published"},
	{Name: "TRUSTED_PROXY_HOPS", Kind: KindInt, Default: "0", Min: "0", Max: "10", Meaning: "proxies in front that append to X-Forwarded-For: the per-client limit counts the entry that many from the right"},
}

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

	limiter     *limiter
	proxyHops   int           // trusted proxies in front that append to X-Forwarded-For (TRUSTED_PROXY_HOPS)
	bcryptSlots chan struct{} // bounds the password comparisons running at once
	sink        string        // the broker ingress (K_SINK), "" for none
}

// New returns a Function whose routes are set; it serves 503 until Start has run.
func New() *Function {
	f := &Function{
		log:     slog.Default().With("function", "login"),
		mux:     http.NewServeMux(),
		limiter: newLimiter(5, 20, 15*time.Minute),
		// As many bcrypt comparisons at once as there are CPUs: more only queue for
		// the CPU, and 200 runnable comparisons starve the user lookups of other
		// logins past dbTimeout (503). Waiting here costs no CPU.
		bcryptSlots: make(chan struct{}, runtime.GOMAXPROCS(0)),
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
		email := strings.ToLower(r.PathValue("email"))
		f.log.Info("user deleted", "by", c.email, "email", email)
		// The user is gone either way; their files go when sweep gets the event.
		if err := f.publishUserDeleted(context.WithoutCancel(ctx), email, time.Now()); err != nil {
			f.log.Error("user.deleted not published: their jobs and files stay until it is", "email", email, "err", err)
		}
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
	set, err := loadSettings(Settings, cfg)
	if err != nil {
		return err
	}
	dsn := set.text("MYSQL_DSN")
	keys, err := loadSigningKeys(cfg)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	f.keys = keys
	f.issuer = set.text("JWT_ISSUER")
	f.audience = set.text("JWT_AUDIENCE")
	f.ttl = set.duration("JWT_TTL")
	f.cost = int(set.int("BCRYPT_COST"))
	f.limiter.maxPerEmail = int(set.int("LOGIN_MAX_FAILURES"))
	f.limiter.maxPerIP = int(set.int("LOGIN_MAX_IP_FAILURES"))
	f.limiter.window = set.duration("LOGIN_FAILURE_WINDOW")
	f.proxyHops = int(set.int("TRUSTED_PROXY_HOPS"))
	f.sink = set.text("K_SINK")
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
	f.bcryptSlots <- struct{}{}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	<-f.bcryptSlots
	return err == nil && exists && !tooLong
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
	if err := parseToken(token, &claims, f.keys.keyFunc, f.keys.method.Alg(), f.issuer, f.audience, verifyLeeway); err != nil {
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
	pemText, err := pemSetting(cfg, "JWT_PRIVATE_KEY")
	if err != nil {
		return signingKeys{}, err
	}
	if pemText == "" {
		return signingKeys{}, errors.New("no signing key: set JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE (RS256) or JWT_SECRET (HS256)")
	}
	key, err := parseRSAPrivateKey(pemText)
	if err == nil {
		err = checkRSABits(&key.PublicKey)
	}
	if err != nil {
		return signingKeys{}, fmt.Errorf("JWT_PRIVATE_KEY: %w", err)
	}
	return signingKeys{method: jwt.SigningMethodRS256, sign: key, verify: &key.PublicKey, kid: jwkOf(&key.PublicKey).Kid}, nil
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

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "malformed JSON body")
		return false
	}
	return true
}
