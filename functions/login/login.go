package function

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

// handleLogin checks Basic credentials and answers with a token, and a device cookie
// that keeps this client's standing while others guess at the account (device.go).
func (s *state) handleLogin(w http.ResponseWriter, r *http.Request) {
	email, password, ok := r.BasicAuth()
	if !ok || email == "" {
		s.unauthorizedBasic(w)
		return
	}
	email = strings.ToLower(email)
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	if err := s.ensureSchema(ctx); err != nil {
		s.storeUnavailable(w, err)
		return
	}
	creds, err := lookupCredentials(ctx, s.db, email)
	if err != nil && !errors.Is(err, ErrUnknownUser) {
		s.storeUnavailable(w, err)
		return
	}
	buckets := s.buckets(r, email, creds)
	if !s.beginCheck(ctx, w, buckets) {
		return
	}
	// Not ctx: its 5 s are the database's budget, and a login may wait up to bcryptWait
	// for a comparison slot (under 200 logins at once, 148 got 503 after 5 s).
	matches, err := s.passwordMatches(r.Context(), creds.hash, password)
	if err != nil {
		s.limiter.end(undecided, buckets...)
		s.log.Warn("login refused: too many at once", "email", email, "err", err)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "too many logins at once, try again")
		return
	}
	if !matches {
		s.limiter.end(failed, buckets...)
		s.log.Info("login failed", "email", email, "ip", clientIP(r, s.proxyHops, s.trustedProxies))
		s.unauthorizedBasic(w)
		return
	}
	s.limiter.end(succeeded, buckets...)
	token, err := s.issue(creds)
	if err != nil {
		s.log.Error("signing token", "err", err)
		writeError(w, http.StatusInternalServerError, "could not issue a token")
		return
	}
	s.log.Info("login", "email", creds.email, "id", creds.id, "admin", creds.admin)
	http.SetCookie(w, s.deviceCookieFor(creds))
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": token,
		"token_type":   "Bearer",
		"expires_in":   int64(s.ttl / time.Second),
	})
}

// buckets are the limits a password check for this user (creds.id 0: no such user,
// email as given) counts against: a trusted device's own bucket, or else the account's
// bucket, which all other clients share, and the client address's.
func (s *state) buckets(r *http.Request, email string, creds credentials) []bucket {
	if creds.id == 0 {
		return []bucket{
			{key: "email:" + email, max: s.maxPerAccount},
			{key: "ip:" + clientIP(r, s.proxyHops, s.trustedProxies), max: s.maxPerIP},
		}
	}
	if d, ok := s.trustedDevice(r, creds); ok {
		return []bucket{{key: "device:" + d.nonce, max: s.maxPerAccount, clearedBySuccess: true}}
	}
	return []bucket{
		{key: "user:" + strconv.FormatInt(creds.id, 10), max: s.maxPerAccount, clearedBySuccess: true},
		{key: "ip:" + clientIP(r, s.proxyHops, s.trustedProxies), max: s.maxPerIP},
	}
}

// beginCheck asks the limiter for a password check, or answers 429 (or 503 when the
// request's time ran out waiting for checks in flight).
func (s *state) beginCheck(ctx context.Context, w http.ResponseWriter, buckets []bucket) bool {
	wait, err := s.limiter.begin(ctx, buckets...)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "busy, try again")
		return false
	}
	if wait > 0 {
		s.log.Warn("login rate limited", "bucket", buckets[0].key)
		w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
		writeError(w, http.StatusTooManyRequests, "too many failed logins, try again later")
		return false
	}
	return true
}

// passwordMatches does one bcrypt comparison whether or not the user exists
// (hash nil): against the dummy hash of the same cost in that case.
// It waits for one of bcryptSlots first, at most bcryptWait (an error then).
func (s *state) passwordMatches(ctx context.Context, hash []byte, password string) (bool, error) {
	exists := hash != nil
	if !exists {
		hash = s.dummyHash()
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

// bcryptWait bounds how long a login waits for a comparison slot: the answer must be out
// before func-go's 30 s write timeout cuts it (the front door would answer 502).
const bcryptWait = 25 * time.Second

// issue signs a token for the user: sub its id, username the address as stored.
func (s *state) issue(c credentials) (string, error) {
	jti := make([]byte, 16)
	rand.Read(jti)
	now := time.Now()
	claims := tokenClaims{
		Username:          c.email,
		Admin:             c.admin,
		CredentialVersion: c.version,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   strconv.FormatInt(c.id, 10),
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

// clientIP is the address the per-client limit counts. Behind proxies that each append
// their peer's address to X-Forwarded-For, the client is the entry `hops` from the right
// (the TCP peer counting as the first hop, so hops 1 is the last entry); from there,
// entries inside the trusted proxy networks (the cluster's pods: ingress, activator) are
// skipped leftwards, since how many of them append depends on the path a request took.
// Entries left of the first untrusted one are the client's own claims, never trusted.
func clientIP(r *http.Request, hops int, trusted []netip.Prefix) string {
	peer, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		peer = r.RemoteAddr
	}
	if hops <= 0 {
		return peer
	}
	var forwarded []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		for _, a := range strings.Split(h, ",") {
			forwarded = append(forwarded, strings.TrimSpace(a))
		}
	}
	i := len(forwarded) - hops
	if i < 0 || forwarded[i] == "" {
		return peer
	}
	for i > 0 && inPrefixes(forwarded[i], trusted) {
		i--
	}
	return forwarded[i]
}

func inPrefixes(addr string, prefixes []netip.Prefix) bool {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parsePrefixes reads a comma-separated list of CIDRs (TRUSTED_PROXIES).
func parsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("TRUSTED_PROXIES: %w", err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
