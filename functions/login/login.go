package function

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

// handleLogin checks Basic credentials and answers with a token.
func (s *state) handleLogin(w http.ResponseWriter, r *http.Request) {
	email, password, ok := r.BasicAuth()
	if !ok || email == "" {
		s.unauthorizedBasic(w)
		return
	}
	email = strings.ToLower(email)
	ip := clientIP(r, s.proxyHops)
	if wait, ok := s.limiter.attempt(email, ip); !ok {
		s.log.Warn("login rate limited", "email", email, "ip", ip)
		w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
		writeError(w, http.StatusTooManyRequests, "too many failed logins, try again later")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	if err := s.ensureSchema(ctx); err != nil {
		s.limiter.release(email, ip)
		s.storeUnavailable(w, err)
		return
	}
	creds, err := lookupCredentials(ctx, s.db, email)
	if err != nil && !errors.Is(err, ErrUnknownUser) {
		s.limiter.release(email, ip)
		s.storeUnavailable(w, err)
		return
	}
	matches, err := s.passwordMatches(r.Context(), creds.hash, password)
	if err != nil {
		s.limiter.release(email, ip)
		s.log.Warn("login refused: too many at once", "email", email, "err", err)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "too many logins at once, try again")
		return
	}
	if !matches {
		s.log.Info("login failed", "email", email, "ip", ip)
		s.unauthorizedBasic(w)
		return
	}
	s.limiter.succeeded(email, ip)
	token, err := s.issue(creds.id, email, creds.admin)
	if err != nil {
		s.log.Error("signing token", "err", err)
		writeError(w, http.StatusInternalServerError, "could not issue a token")
		return
	}
	s.log.Info("login", "email", email, "admin", creds.admin)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": token,
		"token_type":   "Bearer",
		"expires_in":   int64(s.ttl / time.Second),
	})
}

// bcryptWait bounds how long a login waits for a comparison slot: the answer must be out
// before func-go's 30 s write timeout cuts it (the gateway would answer 502).
const bcryptWait = 25 * time.Second

// passwordMatches does one bcrypt comparison whether or not the user exists
// (hash nil): against the dummy hash of the same cost in that case.
// It waits at most bcryptWait for one of the CPUs' comparison slots (an error then).
func (s *state) passwordMatches(ctx context.Context, hash []byte, password string) (bool, error) {
	exists := hash != nil
	if !exists {
		hash = s.dummyHash
	}
	tooLong := len(password) > maxPasswordLen // bcrypt would ignore the rest
	if tooLong {
		password = password[:maxPasswordLen]
	}
	wait := time.NewTimer(bcryptWait)
	defer wait.Stop()
	select {
	case s.bcryptSlots <- struct{}{}:
	case <-wait.C:
		return false, errors.New("no bcrypt slot within " + bcryptWait.String())
	case <-ctx.Done():
		return false, ctx.Err()
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	<-s.bcryptSlots
	return err == nil && exists && !tooLong, nil
}

// issue signs a token for the user.
func (s *state) issue(id int64, email string, admin bool) (string, error) {
	jti := make([]byte, 16)
	rand.Read(jti)
	now := time.Now()
	claims := tokenClaims{
		Username: email,
		Admin:    admin,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   strconv.FormatInt(id, 10),
			Issuer:    s.issuer,
			Audience:  jwt.ClaimStrings{s.audience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(s.ttl)),
			ID:        hex.EncodeToString(jti),
		},
	}
	t := jwt.NewWithClaims(s.keys.method, claims)
	if s.keys.kid != "" {
		t.Header["kid"] = s.keys.kid
	}
	return t.SignedString(s.keys.sign)
}

func (s *state) unauthorizedBasic(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Basic realm="`+realm+`"`)
	writeError(w, http.StatusUnauthorized, "invalid email or password")
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
