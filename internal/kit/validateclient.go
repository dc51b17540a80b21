package kit

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
)

// authClient asks validate about bearer tokens and caches its yes for a while.
type authClient struct {
	url  string
	ttl  time.Duration
	http *http.Client

	mu    sync.Mutex
	cache map[[sha256.Size]byte]cachedIdentity
}

// identity is validate's answer about a token. UserID (the token's sub, the user's id in
// MySQL) is what files and jobs are owned by: an id is never given to another account,
// where an address is, when a user is deleted and an account is made again with it.
// Username (the address) is where mail goes.
type identity struct {
	UserID   string `json:"sub"`
	Username string `json:"username"`
	Admin    bool   `json:"admin"`
	Exp      int64  `json:"exp"`
}

type cachedIdentity struct {
	identity
	until time.Time
}

const maxCachedTokens = 10000

func newAuthClient(url string, ttl time.Duration) *authClient {
	return &authClient{
		url:   url,
		ttl:   ttl,
		http:  &http.Client{Timeout: 5 * time.Second},
		cache: map[[sha256.Size]byte]cachedIdentity{},
	}
}

// identify returns who holds the bearer token in header, or the answer to give instead:
// 401 for a missing or refused token, 503 when validate cannot be asked.
func (a *authClient) identify(ctx context.Context, header string) (identity, *httpError) {
	ctx, span := startSpan(ctx, "token.check")
	defer span.End()
	scheme, token, _ := strings.Cut(header, " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return identity{}, &httpError{status: http.StatusUnauthorized, msg: "missing bearer token", wwwAuth: "Bearer"}
	}
	key := sha256.Sum256([]byte(token))
	now := time.Now()
	a.mu.Lock()
	c, ok := a.cache[key]
	a.mu.Unlock()
	if ok && now.Before(c.until) {
		span.SetAttributes(attribute.Bool("token.cached", true))
		return c.identity, nil
	}

	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url, nil)
	if err != nil {
		return identity{}, &httpError{status: http.StatusServiceUnavailable, msg: "authentication unavailable, try again", cause: err}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	propagator.Inject(ctx, propagation.HeaderCarrier(req.Header)) // validate's span joins the trace
	resp, err := a.http.Do(req)
	if err != nil {
		return identity{}, &httpError{status: http.StatusServiceUnavailable, msg: "authentication unavailable, try again", cause: err}
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		wa := resp.Header.Get("WWW-Authenticate")
		if wa == "" {
			wa = `Bearer error="invalid_token"`
		}
		return identity{}, &httpError{status: http.StatusUnauthorized, msg: "invalid token", wwwAuth: wa}
	case resp.StatusCode != http.StatusOK:
		return identity{}, &httpError{status: http.StatusServiceUnavailable, msg: "authentication unavailable, try again", cause: fmt.Errorf("validate answered %d", resp.StatusCode)}
	}
	var id identity
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&id); err != nil || id.Username == "" || id.UserID == "" {
		return identity{}, &httpError{status: http.StatusServiceUnavailable, msg: "authentication unavailable, try again", cause: fmt.Errorf("unusable validate answer: %v", err)}
	}

	until := now.Add(a.ttl)
	if exp := time.Unix(id.Exp, 0); id.Exp > 0 && exp.Before(until) {
		until = exp
	}
	if until.After(now) {
		a.mu.Lock()
		if len(a.cache) >= maxCachedTokens {
			for k, v := range a.cache {
				if !now.Before(v.until) {
					delete(a.cache, k)
				}
			}
			if len(a.cache) >= maxCachedTokens {
				clear(a.cache)
			}
		}
		a.cache[key] = cachedIdentity{identity: id, until: until}
		a.mu.Unlock()
	}
	return id, nil
}
