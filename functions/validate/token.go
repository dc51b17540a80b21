package function

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

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
func (s *state) handleValidate(w http.ResponseWriter, r *http.Request) {
	header := r.Header.Get("Authorization")
	if header == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`"`)
		writeError(w, http.StatusUnauthorized, "missing bearer token")
		return
	}
	c, problem := s.verify(header)
	if problem != "" {
		invalidToken(w, problem)
		return
	}
	admin := c.Admin
	if s.db != nil {
		id, err := strconv.ParseInt(c.Subject, 10, 64)
		if err != nil {
			invalidToken(w, "invalid subject")
			return
		}
		key := userKey{id: id, email: c.Username}
		user, cached := s.users.get(key)
		if !cached || user.version != c.CredentialVersion {
			ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
			defer cancel()
			var err error
			user.admin, user.version, err = currentUser(ctx, s.db, id, c.Username)
			if errors.Is(err, errUserGone) {
				invalidToken(w, "user no longer exists")
				return
			}
			if err != nil {
				s.log.Warn("user store unavailable", "err", err)
				writeError(w, http.StatusServiceUnavailable, "user store unavailable, try again")
				return
			}
			s.users.put(key, user)
		}
		if user.version != c.CredentialVersion {
			invalidToken(w, "token revoked")
			return
		}
		admin = admin && user.admin
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
func (s *state) handleJWKS(w http.ResponseWriter, r *http.Request) {
	if s.keys.jwk == nil {
		writeError(w, http.StatusNotFound, "no public key: tokens are signed with a shared secret (HS256)")
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, map[string]any{"keys": []any{s.keys.jwk}})
}

// verify checks an Authorization header value and returns the token's claims,
// or a short description of what is wrong with it.
func (s *state) verify(header string) (*tokenClaims, string) {
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
	if err := parseToken(token, &c, s.keys.keyFunc, s.keys.method.Alg(), s.issuer, s.audience, s.leeway, s.ttl); err != nil {
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
	case errors.Is(err, errLifetimeTooLong):
		return "token lifetime exceeds JWT_TTL"
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
