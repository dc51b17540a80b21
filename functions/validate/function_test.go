package function

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Keys made once per test binary.
var (
	testKey  = sync.OnceValue(func() *rsa.PrivateKey { return genKey(2048) })
	otherKey = sync.OnceValue(func() *rsa.PrivateKey { return genKey(2048) })
)

func genKey(bits int) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	return k
}

const secret = "0123456789abcdef0123456789abcdef-test-secret"

func privatePEM(k *rsa.PrivateKey) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
}

func publicPEM(k *rsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// kidOf computes the RFC 7638 thumbprint independently of the code under test.
func kidOf(pub *rsa.PublicKey) string {
	canonical, _ := json.Marshal(struct {
		E   string `json:"e"`
		Kty string `json:"kty"`
		N   string `json:"n"`
	}{
		base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
		"RSA",
		base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
	})
	sum := sha256.Sum256(canonical)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// loginClaims are the claims login issues (auth contract) for user id/email.
func loginClaims(id int64, email string, admin bool) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"username": email,
		"admin":    admin,
		"sub":      strconv.FormatInt(id, 10),
		"iss":      "mp3converter",
		"aud":      []string{"mp3converter"},
		"iat":      now.Unix(),
		"nbf":      now.Unix(),
		"exp":      now.Add(24 * time.Hour).Unix(),
		"jti":      "0123456789abcdef0123456789abcdef",
	}
}

// sign signs claims with method and key; header entries are set after
// (a nil value deletes one). RS* tokens carry our kid unless header says otherwise.
func sign(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if strings.HasPrefix(method.Alg(), "RS") || strings.HasPrefix(method.Alg(), "PS") {
		tok.Header["kid"] = kidOf(&testKey().PublicKey)
	}
	for k, v := range header {
		if v == nil {
			delete(tok.Header, k)
		} else {
			tok.Header[k] = v
		}
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

// with returns a copy of c with the given claims changed (nil deletes).
func with(c jwt.MapClaims, changes jwt.MapClaims) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for k, v := range changes {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

func rsConfig() map[string]string {
	return map[string]string{"JWT_PUBLIC_KEY": publicPEM(&testKey().PublicKey)}
}

func startFunction(t *testing.T, cfg map[string]string) (*Function, *httptest.Server) {
	t.Helper()
	return startFunctionAt(t, cfg, time.Now)
}

// startFunctionAt is startFunction with the user cache on the clock now.
func startFunctionAt(t *testing.T, cfg map[string]string, now func() time.Time) (*Function, *httptest.Server) {
	t.Helper()
	f := New()
	f.now = now
	if err := f.Start(context.Background(), cfg); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { f.Stop(context.Background()) })
	srv := httptest.NewServer(http.HandlerFunc(f.Handle))
	t.Cleanup(srv.Close)
	return f, srv
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

// validate calls /validate with a raw Authorization header ("" sends none).
func validate(t *testing.T, base, method, authorization string) response {
	t.Helper()
	req, _ := http.NewRequest(method, base+"/validate", nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	return get(t, req)
}

func get(t *testing.T, req *http.Request) response {
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

func invalid(description string) string {
	return `Bearer error="invalid_token", error_description="` + description + `"`
}

// tokenCase is one Authorization header and the answer it must get.
type tokenCase struct {
	name   string
	header string
	status int
	www    string // exact WWW-Authenticate on 401
}

// attackCases covers every way a token can be wrong, for an RS256 validate
// whose user (id, email) exists and is not an admin.
func attackCases(t testing.TB, id int64, email string) []tokenCase {
	key, pub := testKey(), &testKey().PublicKey
	good := loginClaims(id, email, false)
	now := time.Now()
	pubPEM := publicPEM(pub)
	pubDER, _ := x509.MarshalPKIXPublicKey(pub)
	valid := sign(t, jwt.SigningMethodRS256, key, good, nil)
	parts := strings.Split(valid, ".")
	adminPayload, _ := json.Marshal(with(good, jwt.MapClaims{"admin": true}))
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(adminPayload) + "." + parts[2]
	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good, map[string]any{"kid": nil})
	huge := sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"pad": strings.Repeat("x", maxTokenLen)}), nil)
	// The last character of a 256-byte signature carries 2 bits and 4 unused
	// ones: flipping an unused bit gives another string that a lenient base64
	// decoder reads as the same signature.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, valid[len(valid)-1])
	sameBits := valid[:len(valid)-1] + string(alphabet[last^1])
	return []tokenCase{
		{"valid", "Bearer " + valid, 200, ""},
		{"valid, scheme in lower case", "bearer " + valid, 200, ""},
		{"valid, without kid", "Bearer " + sign(t, jwt.SigningMethodRS256, key, good, map[string]any{"kid": nil}), 200, ""},
		{"valid, aud as a string", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"aud": "mp3converter"}), nil), 200, ""},
		{"valid, expired within leeway", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"exp": now.Add(-2 * time.Second).Unix()}), nil), 200, ""},
		{"missing header", "", 401, `Bearer realm="mp3converter"`},
		{"Basic scheme", "Basic " + base64.StdEncoding.EncodeToString([]byte(email+":pw")), 401, invalid("expected a bearer token")},
		{"scheme only", "Bearer", 401, invalid("empty bearer token")},
		{"empty token", "Bearer   ", 401, invalid("empty bearer token")},
		{"token without scheme", valid, 401, invalid("expected a bearer token")},
		{"malformed", "Bearer not-a-jwt", 401, invalid("malformed token")},
		{"malformed segments", "Bearer a.b.c", 401, invalid("malformed token")},
		{"four segments", "Bearer " + valid + ".x", 401, invalid("malformed token")},
		{"bad signature (other key, our kid)", "Bearer " + sign(t, jwt.SigningMethodRS256, otherKey(), good, nil), 401, invalid("invalid signature or signing method")},
		{"tampered payload", "Bearer " + tampered, 401, invalid("invalid signature or signing method")},
		{"signature altered in its unused bits", "Bearer " + sameBits, 401, invalid("malformed token")},
		{"signature stripped", "Bearer " + parts[0] + "." + parts[1] + ".", 401, invalid("invalid signature or signing method")},
		{"alg none", "Bearer " + none, 401, invalid("invalid signature or signing method")},
		{"HS256 with the public key PEM as secret", "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(pubPEM), good, nil), 401, invalid("invalid signature or signing method")},
		{"HS256 with the public key DER as secret", "Bearer " + sign(t, jwt.SigningMethodHS256, pubDER, good, nil), 401, invalid("invalid signature or signing method")},
		{"RS512 with our key", "Bearer " + sign(t, jwt.SigningMethodRS512, key, good, nil), 401, invalid("invalid signature or signing method")},
		{"PS256 with our key", "Bearer " + sign(t, jwt.SigningMethodPS256, key, good, nil), 401, invalid("invalid signature or signing method")},
		{"expired", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"exp": now.Add(-time.Hour).Unix()}), nil), 401, invalid("token expired")},
		{"no exp", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"exp": nil}), nil), 401, invalid("token is missing a required claim")},
		{"nbf in the future", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"nbf": now.Add(time.Hour).Unix()}), nil), 401, invalid("token not valid yet")},
		{"iat in the future", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"iat": now.Add(time.Hour).Unix()}), nil), 401, invalid("token issued in the future")},
		{"wrong iss", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"iss": "evil"}), nil), 401, invalid("invalid issuer")},
		{"no iss", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"iss": nil}), nil), 401, invalid("token is missing a required claim")},
		{"wrong aud", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"aud": []string{"other"}}), nil), 401, invalid("invalid audience")},
		{"no aud", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"aud": nil}), nil), 401, invalid("token is missing a required claim")},
		{"unknown kid", "Bearer " + sign(t, jwt.SigningMethodRS256, key, good, map[string]any{"kid": "someone-elses-key"}), 401, invalid("unknown key id")},
		{"kid not a string", "Bearer " + sign(t, jwt.SigningMethodRS256, key, good, map[string]any{"kid": 7}), 401, invalid("unknown key id")},
		{"no username", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"username": nil}), nil), 401, invalid("token is missing a required claim")},
		{"no sub", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"sub": nil}), nil), 401, invalid("token is missing a required claim")},
		{"admin not a bool", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"admin": "true"}), nil), 401, invalid("malformed token")},
		{"exp not a number", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"exp": "tomorrow"}), nil), 401, invalid("malformed token")},
		{"token over 8 KiB", "Bearer " + huge, 401, invalid("token too large")},
		{"valid, lifetime exactly JWT_TTL", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"exp": now.Add(24 * time.Hour).Unix(), "iat": now.Unix()}), nil), 200, ""},
		{"lifetime beyond JWT_TTL", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"exp": now.Add(10 * 365 * 24 * time.Hour).Unix()}), nil), 401, invalid("token lifetime exceeds JWT_TTL")},
		{"lifetime one second beyond JWT_TTL", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"exp": now.Add(24*time.Hour + time.Second).Unix(), "iat": now.Unix()}), nil), 401, invalid("token lifetime exceeds JWT_TTL")},
		{"no iat (lifetime unknown)", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"iat": nil}), nil), 401, invalid("token is missing a required claim")},
		{"cv not a number", "Bearer " + sign(t, jwt.SigningMethodRS256, key, with(good, jwt.MapClaims{"cv": "1"}), nil), 401, invalid("malformed token")},
	}
}

func TestValidateAttacks(t *testing.T) {
	for _, withMySQL := range []bool{false, true} {
		t.Run(map[bool]string{false: "cryptographic only", true: "with MySQL"}[withMySQL], func(t *testing.T) {
			cfg := rsConfig()
			id, email := int64(42), "bob@example.com"
			if withMySQL {
				cfg["MYSQL_DSN"] = testDSN(t)
				db := sqlOpen(t, cfg["MYSQL_DSN"])
				createUsersTable(t, db)
				insertUser(t, db, "someone@example.com", false)
				id = insertUser(t, db, email, false)
			}
			_, srv := startFunction(t, cfg)
			for _, c := range attackCases(t, id, email) {
				t.Run(c.name, func(t *testing.T) {
					for _, method := range []string{"POST", "GET"} {
						r := validate(t, srv.URL, method, c.header)
						if r.status != c.status {
							t.Fatalf("%s: status %d, want %d: %s (WWW-Authenticate %q)", method, r.status, c.status, r.body, r.header.Get("WWW-Authenticate"))
						}
						m := r.json(t)
						if c.status == 200 {
							if m["username"] != email || m["sub"] != strconv.FormatInt(id, 10) || m["admin"] != false {
								t.Errorf("claims %v", m)
							}
							continue
						}
						if got := r.header.Get("WWW-Authenticate"); got != c.www {
							t.Errorf("WWW-Authenticate = %q, want %q", got, c.www)
						}
						if m["error"] == "" {
							t.Error("no error message")
						}
					}
				})
			}
		})
	}
}

// A token made exactly as login makes it gets back every claim of the contract.
func TestLoginTokenContract(t *testing.T) {
	dsn := testDSN(t)
	db := sqlOpen(t, dsn)
	createUsersTable(t, db)
	id := insertUser(t, db, "admin@example.com", true)
	_, srv := startFunction(t, map[string]string{"JWT_PRIVATE_KEY": privatePEM(testKey()), "MYSQL_DSN": dsn})

	claims := loginClaims(id, "admin@example.com", true)
	token := sign(t, jwt.SigningMethodRS256, testKey(), claims, nil)
	r := validate(t, srv.URL, "POST", "Bearer "+token)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", r.header.Get("Cache-Control"))
	}
	var got map[string]any
	dec := json.NewDecoder(strings.NewReader(r.body))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"username": "admin@example.com",
		"admin":    true,
		"sub":      strconv.FormatInt(id, 10),
		"iss":      "mp3converter",
		"aud":      []any{"mp3converter"},
		"iat":      json.Number(strconv.FormatInt(claims["iat"].(int64), 10)),
		"nbf":      json.Number(strconv.FormatInt(claims["nbf"].(int64), 10)),
		"exp":      json.Number(strconv.FormatInt(claims["exp"].(int64), 10)),
		"jti":      "0123456789abcdef0123456789abcdef",
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("answer\n got %s\nwant %s", gotJSON, wantJSON)
	}
}

func TestUserStillExists(t *testing.T) {
	dsn := testDSN(t)
	db := sqlOpen(t, dsn)
	createUsersTable(t, db)
	admin := insertUser(t, db, "admin@example.com", true)
	bob := insertUser(t, db, "bob@example.com", false)
	carol := insertUser(t, db, "carol@example.com", false)
	cfg := rsConfig()
	cfg["MYSQL_DSN"] = dsn
	_, srv := startFunction(t, cfg)
	token := func(id int64, email string, admin bool) string {
		return "Bearer " + sign(t, jwt.SigningMethodRS256, testKey(), loginClaims(id, email, admin), nil)
	}
	carolToken := token(carol, "carol@example.com", false)
	exec(t, db, "DELETE FROM users WHERE id = ?", carol)

	cases := []struct {
		name      string
		header    string
		status    int
		wantAdmin bool
	}{
		{"admin", token(admin, "admin@example.com", true), 200, true},
		{"admin claiming no admin rights", token(admin, "admin@example.com", false), 200, false},
		{"non-admin claiming admin rights", token(bob, "bob@example.com", true), 200, false},
		{"deleted user", carolToken, 401, false},
		{"id of another user", token(bob, "admin@example.com", true), 401, false},
		{"unknown id", token(999999, "bob@example.com", false), 401, false},
		{"sub not a number", "Bearer " + sign(t, jwt.SigningMethodRS256, testKey(), with(loginClaims(bob, "bob@example.com", false), jwt.MapClaims{"sub": "bob"}), nil), 401, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := validate(t, srv.URL, "POST", c.header)
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			m := r.json(t)
			if c.status == 200 && m["admin"] != c.wantAdmin {
				t.Errorf("admin %v, want %v", m["admin"], c.wantAdmin)
			}
			if c.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), `Bearer error="invalid_token"`) {
				t.Errorf("WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
			}
		})
	}
	if r := validate(t, srv.URL, "POST", carolToken); r.header.Get("WWW-Authenticate") != invalid("user no longer exists") {
		t.Errorf("deleted user: WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
	}
}

// testClock is a clock that moves only when the test moves it.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Now()} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// A user's row is reused for userCacheTTL: a deleted user's token, accepted just before,
// still passes until the bound and is refused from then on.
func TestDeletedUserRefusedWithinCacheBound(t *testing.T) {
	dsn := testDSN(t)
	db := sqlOpen(t, dsn)
	createUsersTable(t, db)
	bob := insertUser(t, db, "bob@example.com", false)
	cfg := rsConfig()
	cfg["MYSQL_DSN"] = dsn
	clock := newTestClock()
	_, srv := startFunctionAt(t, cfg, clock.Now)
	header := "Bearer " + sign(t, jwt.SigningMethodRS256, testKey(), loginClaims(bob, "bob@example.com", false), nil)
	if r := validate(t, srv.URL, "POST", header); r.status != 200 {
		t.Fatalf("before the delete: %d %s", r.status, r.body)
	}
	exec(t, db, "DELETE FROM users WHERE id = ?", bob)
	clock.Add(userCacheTTL - time.Millisecond)
	if r := validate(t, srv.URL, "POST", header); r.status != 200 {
		t.Errorf("within the bound (the cached row): %d %s", r.status, r.body)
	}
	clock.Add(time.Millisecond)
	if r := validate(t, srv.URL, "POST", header); r.status != 401 || r.header.Get("WWW-Authenticate") != invalid("user no longer exists") {
		t.Errorf("at the bound: %d %q", r.status, r.header.Get("WWW-Authenticate"))
	}
	// Refusals are not cached: the user back under the same id passes at once.
	exec(t, db, "INSERT INTO users (id, email, password_hash, is_admin) VALUES (?, 'bob@example.com', 'x', false)", bob)
	if r := validate(t, srv.URL, "POST", header); r.status != 200 {
		t.Errorf("user back: %d %s", r.status, r.body)
	}
}

// TestSessionsEnd: a password change or reset and a demotion move the user's
// credential_version on (login does it); tokens carrying an older one are refused once the
// cached row has expired (userCacheTTL), tokens carrying the new one at once. A new account at a deleted user's address is a new id: the old tokens stay dead
// and the answer's sub, which files and jobs belong to, differs.
func TestSessionsEnd(t *testing.T) {
	dsn := testDSN(t)
	db := sqlOpen(t, dsn)
	createUsersTable(t, db)
	bob := insertUser(t, db, "bob@example.com", true)
	carol := insertUser(t, db, "carol@example.com", false)
	cfg := rsConfig()
	cfg["MYSQL_DSN"] = dsn
	clock := newTestClock()
	_, srv := startFunctionAt(t, cfg, clock.Now)
	token := func(id int64, email string, cv int64) string {
		return "Bearer " + sign(t, jwt.SigningMethodRS256, testKey(), with(loginClaims(id, email, true), jwt.MapClaims{"cv": cv}), nil)
	}
	before := token(bob, "bob@example.com", 0)
	if r := validate(t, srv.URL, "POST", before); r.status != 200 {
		t.Fatalf("before the change: %d %s", r.status, r.body)
	}
	exec(t, db, "UPDATE users SET credential_version = credential_version + 1 WHERE id = ?", bob) // what login's SetPassword and SetAdmin do
	clock.Add(userCacheTTL)
	if r := validate(t, srv.URL, "POST", before); r.status != 401 || r.header.Get("WWW-Authenticate") != invalid("token revoked") {
		t.Errorf("token from before the change: %d %q", r.status, r.header.Get("WWW-Authenticate"))
	}
	if r := validate(t, srv.URL, "POST", token(bob, "bob@example.com", 1)); r.status != 200 {
		t.Errorf("token issued after the change: %d %s", r.status, r.body)
	}
	if r := validate(t, srv.URL, "POST", token(bob, "bob@example.com", 2)); r.status != 401 {
		t.Errorf("token claiming a future version: %d", r.status)
	}

	carolToken := token(carol, "carol@example.com", 0)
	exec(t, db, "DELETE FROM users WHERE id = ?", carol)
	again := insertUser(t, db, "carol@example.com", false)
	if again == carol {
		t.Fatalf("the new carol got the old id %d", carol)
	}
	if r := validate(t, srv.URL, "POST", carolToken); r.status != 401 {
		t.Errorf("old carol's token after a new carol signed up: %d %s", r.status, r.body)
	}
	r := validate(t, srv.URL, "POST", token(again, "carol@example.com", 0))
	if r.status != 200 || r.json(t)["sub"] != strconv.FormatInt(again, 10) {
		t.Errorf("new carol: %d %s", r.status, r.body)
	}

	// Addresses are compared byte for byte: a look-alike spelling is not the user.
	if r := validate(t, srv.URL, "POST", token(bob, "BOB@example.com", 1)); r.status != 401 {
		t.Errorf("token naming bob's id with another spelling: %d %s", r.status, r.body)
	}
}

func TestMySQLUnavailable(t *testing.T) {
	t.Run("table missing", func(t *testing.T) {
		cfg := rsConfig()
		cfg["MYSQL_DSN"] = testDSN(t) // database exists, login has not migrated yet
		_, srv := startFunction(t, cfg)
		r := validate(t, srv.URL, "POST", "Bearer "+sign(t, jwt.SigningMethodRS256, testKey(), loginClaims(1, "bob@example.com", false), nil))
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		r.json(t)
	})

	t.Run("server down, then back", func(t *testing.T) {
		gms := startGMS(t, "127.0.0.1:0")
		dsn := gms.dsn("auth")
		admin := sqlOpen(t, gms.dsn(""))
		exec(t, admin, "CREATE DATABASE auth")
		db := sqlOpen(t, dsn)
		createUsersTable(t, db)
		id := insertUser(t, db, "bob@example.com", false)
		cfg := rsConfig()
		cfg["MYSQL_DSN"] = dsn
		clock := newTestClock()
		_, srv := startFunctionAt(t, cfg, clock.Now)
		header := "Bearer " + sign(t, jwt.SigningMethodRS256, testKey(), loginClaims(id, "bob@example.com", false), nil)

		if r := validate(t, srv.URL, "POST", header); r.status != 200 {
			t.Fatalf("up: %d %s", r.status, r.body)
		}
		gms.stop()
		if r := validate(t, srv.URL, "POST", header); r.status != 200 {
			t.Errorf("down, row cached: %d %s", r.status, r.body)
		}
		clock.Add(userCacheTTL)
		r := validate(t, srv.URL, "POST", header)
		if r.status != http.StatusServiceUnavailable || r.json(t)["error"] != "user store unavailable, try again" {
			t.Fatalf("down: %d %s", r.status, r.body)
		}
		if r := validate(t, srv.URL, "POST", "Bearer x.y.z"); r.status != 401 {
			t.Errorf("bad token while down: %d (needs no store)", r.status)
		}
		gms.restart(t)
		if r := validate(t, srv.URL, "POST", header); r.status != 200 {
			t.Fatalf("back: %d %s", r.status, r.body)
		}
	})

	t.Run("down at Start", func(t *testing.T) {
		cfg := rsConfig()
		cfg["MYSQL_DSN"] = "root@tcp(127.0.0.1:1)/auth"
		f, srv := startFunction(t, cfg)
		if ready, _ := f.Ready(context.Background()); !ready {
			t.Error("not Ready")
		}
		r := validate(t, srv.URL, "POST", "Bearer "+sign(t, jwt.SigningMethodRS256, testKey(), loginClaims(1, "bob@example.com", false), nil))
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	})
}

func TestHS256(t *testing.T) {
	_, srv := startFunction(t, map[string]string{"JWT_SECRET": secret, "JWT_PUBLIC_KEY": publicPEM(&testKey().PublicKey)})
	good := loginClaims(7, "bob@example.com", false)
	cases := []tokenCase{
		{"valid", "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(secret), good, nil), 200, ""},
		{"other secret", "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(secret+"x"), good, nil), 401, invalid("invalid signature or signing method")},
		{"HS384 with the secret", "Bearer " + sign(t, jwt.SigningMethodHS384, []byte(secret), good, nil), 401, invalid("invalid signature or signing method")},
		{"RS256 token", "Bearer " + sign(t, jwt.SigningMethodRS256, testKey(), good, nil), 401, invalid("invalid signature or signing method")},
		{"alg none", "Bearer " + sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good, nil), 401, invalid("invalid signature or signing method")},
		{"expired", "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(secret), with(good, jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix()}), nil), 401, invalid("token expired")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := validate(t, srv.URL, "POST", c.header)
			if r.status != c.status || r.header.Get("WWW-Authenticate") != c.www {
				t.Fatalf("status %d WWW-Authenticate %q, want %d %q: %s", r.status, r.header.Get("WWW-Authenticate"), c.status, c.www, r.body)
			}
			r.json(t)
		})
	}
	r := get(t, mustRequest("GET", srv.URL+"/.well-known/jwks.json"))
	if r.status != 404 {
		t.Errorf("jwks with HS256: %d", r.status)
	}
	r.json(t)
}

func TestLeeway(t *testing.T) {
	for _, c := range []struct {
		leeway string
		exp    time.Duration // relative to now
		status int
	}{
		{"0s", -2 * time.Second, 401},
		{"0s", time.Minute, 200},
		{"30s", -20 * time.Second, 200},
		{"30s", -time.Minute, 401},
	} {
		t.Run(c.leeway+" "+c.exp.String(), func(t *testing.T) {
			cfg := rsConfig()
			cfg["JWT_LEEWAY"] = c.leeway
			_, srv := startFunction(t, cfg)
			tok := sign(t, jwt.SigningMethodRS256, testKey(), with(loginClaims(1, "bob@example.com", false), jwt.MapClaims{"exp": time.Now().Add(c.exp).Unix()}), nil)
			if r := validate(t, srv.URL, "POST", "Bearer "+tok); r.status != c.status {
				t.Errorf("status %d, want %d", r.status, c.status)
			}
		})
	}
}

func TestJWKS(t *testing.T) {
	pub := &testKey().PublicKey
	dir := t.TempDir()
	pubFile, privFile := filepath.Join(dir, "pub.pem"), filepath.Join(dir, "priv.pem")
	os.WriteFile(pubFile, []byte(publicPEM(pub)), 0o600)
	os.WriteFile(privFile, []byte(privatePEM(testKey())), 0o600)
	pkcs1Pub := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(pub)}))
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(testKey())
	pkcs8PEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}))
	for _, c := range []struct {
		name string
		cfg  map[string]string
	}{
		{"public key PKIX", map[string]string{"JWT_PUBLIC_KEY": publicPEM(pub)}},
		{"public key PKCS#1", map[string]string{"JWT_PUBLIC_KEY": pkcs1Pub}},
		{"public key on one line", map[string]string{"JWT_PUBLIC_KEY": strings.ReplaceAll(publicPEM(pub), "\n", `\n`)}},
		{"public key file", map[string]string{"JWT_PUBLIC_KEY_FILE": pubFile}},
		{"derived from private key PKCS#1", map[string]string{"JWT_PRIVATE_KEY": privatePEM(testKey())}},
		{"derived from private key PKCS#8", map[string]string{"JWT_PRIVATE_KEY": pkcs8PEM}},
		{"derived from private key file", map[string]string{"JWT_PRIVATE_KEY_FILE": privFile}},
		{"matching public and private", map[string]string{"JWT_PUBLIC_KEY": publicPEM(pub), "JWT_PRIVATE_KEY": privatePEM(testKey())}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, srv := startFunction(t, c.cfg)
			r := get(t, mustRequest("GET", srv.URL+"/.well-known/jwks.json"))
			if r.status != 200 || r.header.Get("Cache-Control") != "public, max-age=300" {
				t.Fatalf("%d Cache-Control %q: %s", r.status, r.header.Get("Cache-Control"), r.body)
			}
			var set struct {
				Keys []map[string]string `json:"keys"`
			}
			if err := json.Unmarshal([]byte(r.body), &set); err != nil || len(set.Keys) != 1 {
				t.Fatalf("body %s: %v", r.body, err)
			}
			k := set.Keys[0]
			n, _ := base64.RawURLEncoding.DecodeString(k["n"])
			e, _ := base64.RawURLEncoding.DecodeString(k["e"])
			if k["kty"] != "RSA" || k["use"] != "sig" || k["alg"] != "RS256" || k["kid"] != kidOf(pub) ||
				new(big.Int).SetBytes(n).Cmp(pub.N) != 0 || new(big.Int).SetBytes(e).Int64() != int64(pub.E) || len(k) != 6 {
				t.Errorf("jwk %v", k)
			}
			// The published key verifies what the private key signs.
			tok := sign(t, jwt.SigningMethodRS256, testKey(), loginClaims(1, "bob@example.com", false), nil)
			if r := validate(t, srv.URL, "GET", "Bearer "+tok); r.status != 200 {
				t.Errorf("validate: %d %s", r.status, r.body)
			}
		})
	}
}

// The example of RFC 7638 §3.1.
func TestThumbprintRFC7638(t *testing.T) {
	const n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
	nb, err := base64.RawURLEncoding.DecodeString(n)
	if err != nil {
		t.Fatal(err)
	}
	k := jwkOf(&rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: 65537})
	if k.N != n || k.E != "AQAB" {
		t.Errorf("JWK n, e = %q, %q", k.N, k.E)
	}
	if got, want := k.Kid, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Errorf("thumbprint %q, want %q", got, want)
	}
}

func TestStartConfigErrors(t *testing.T) {
	small := genKey(1024)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	cases := []struct {
		name string
		cfg  map[string]string
		want string
	}{
		{"no key", map[string]string{}, "no verification key"},
		{"short secret", map[string]string{"JWT_SECRET": "short"}, "at least 32 bytes"},
		{"not PEM", map[string]string{"JWT_PUBLIC_KEY": "hello"}, "no PEM block"},
		{"private key as public", map[string]string{"JWT_PUBLIC_KEY": privatePEM(testKey())}, "want PUBLIC KEY"},
		{"EC public key", map[string]string{"JWT_PUBLIC_KEY": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecDER}))}, "want an RSA key"},
		{"1024-bit key", map[string]string{"JWT_PUBLIC_KEY": publicPEM(&small.PublicKey)}, "at least 2048"},
		{"bad private key", map[string]string{"JWT_PRIVATE_KEY": "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"}, "JWT_PRIVATE_KEY"},
		{"mismatched public and private", map[string]string{"JWT_PUBLIC_KEY": publicPEM(&otherKey().PublicKey), "JWT_PRIVATE_KEY": privatePEM(testKey())}, "not the public half"},
		{"missing key file", map[string]string{"JWT_PUBLIC_KEY_FILE": filepath.Join(t.TempDir(), "none.pem")}, "JWT_PUBLIC_KEY_FILE"},
		{"leeway too big", map[string]string{"JWT_SECRET": secret, "JWT_LEEWAY": "31s"}, "JWT_LEEWAY"},
		{"negative leeway", map[string]string{"JWT_SECRET": secret, "JWT_LEEWAY": "-1s"}, "JWT_LEEWAY"},
		{"DSN without database", map[string]string{"JWT_SECRET": secret, "MYSQL_DSN": "root@tcp(127.0.0.1:1)/"}, "must name the database"},
		{"unparsable DSN", map[string]string{"JWT_SECRET": secret, "MYSQL_DSN": "root@tcp(127.0.0.1:1"}, "MYSQL_DSN"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := New()
			err := f.Start(context.Background(), c.cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Start error %v, want one mentioning %q", err, c.want)
			}
			if ready, _ := f.Ready(context.Background()); ready {
				t.Error("Ready after a failed Start")
			}
		})
	}
}

func TestServes503UntilStarted(t *testing.T) {
	f := New()
	srv := httptest.NewServer(http.HandlerFunc(f.Handle))
	defer srv.Close()
	tok := "Bearer " + sign(t, jwt.SigningMethodRS256, testKey(), loginClaims(1, "bob@example.com", false), nil)
	if r := validate(t, srv.URL, "POST", tok); r.status != http.StatusServiceUnavailable {
		t.Fatalf("before Start: %d", r.status)
	}
	if ready, _ := f.Ready(context.Background()); ready {
		t.Error("Ready before Start")
	}
	if err := f.Start(context.Background(), rsConfig()); err != nil {
		t.Fatal(err)
	}
	if r := validate(t, srv.URL, "POST", tok); r.status != 200 {
		t.Fatalf("after Start: %d %s", r.status, r.body)
	}
	if ready, _ := f.Ready(context.Background()); !ready {
		t.Error("not Ready after Start")
	}
}

func TestRoutes(t *testing.T) {
	_, srv := startFunction(t, rsConfig())
	for _, c := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{"PUT", "/validate", 405, "GET, HEAD, POST"},
		{"DELETE", "/validate", 405, "GET, HEAD, POST"},
		{"POST", "/.well-known/jwks.json", 405, "GET, HEAD"},
		{"GET", "/nowhere", 404, ""},
		{"GET", "/validate/extra", 404, ""},
	} {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			r := get(t, mustRequest(c.method, srv.URL+c.path))
			if r.status != c.status || r.header.Get("Allow") != c.allow {
				t.Fatalf("%d Allow=%q, want %d Allow=%q", r.status, r.header.Get("Allow"), c.status, c.allow)
			}
			r.json(t)
		})
	}
}

func mustRequest(method, url string) *http.Request {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		panic(err)
	}
	return req
}

// FuzzValidate feeds Authorization header values through Handle: the answer is
// always 200 or 401 (never 500, never a panic), JSON, with a Bearer challenge on 401.
func FuzzValidate(f *testing.F) {
	for _, c := range attackCases(f, 42, "bob@example.com") {
		f.Add(c.header)
	}
	for _, s := range []string{"Bearer ..", "Bearer .", "Bearer e30.e30.", "Bearer eyJhbGciOiJub25lIn0.e30.",
		"Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6W119.e30.AA", "Bearer \x00", "Bearer " + strings.Repeat("a.", 5000), "BEARER x"} {
		f.Add(s)
	}
	fn := New()
	if err := fn.Start(context.Background(), rsConfig()); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, header string) {
		req := httptest.NewRequest("POST", "/validate", nil)
		req.Header["Authorization"] = []string{header}
		rec := httptest.NewRecorder()
		fn.Handle(rec, req)
		if rec.Code != 200 && rec.Code != 401 {
			t.Fatalf("status %d for %q: %s", rec.Code, header, rec.Body)
		}
		if rec.Header().Get("Content-Type") != "application/json" || !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("not JSON for %q: %s", header, rec.Body)
		}
		if rec.Code == 401 && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer ") {
			t.Fatalf("401 without Bearer challenge for %q", header)
		}
	})
}
