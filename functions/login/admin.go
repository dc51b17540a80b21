package function

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// handleCreateUser: POST /users {email, password, admin} (admin only).
func (s *state) handleCreateUser(ctx context.Context, w http.ResponseWriter, r *http.Request, c caller) {
	var body struct {
		Email    string `json:"email"`
		Password string `json:"password"`
		Admin    bool   `json:"admin"`
	}
	if !readJSON(w, r, &body) {
		return
	}
	u, err := AddUser(ctx, s.db, body.Email, body.Password, body.Admin, s.cost)
	switch {
	case errors.Is(err, ErrInvalidEmail), errors.Is(err, ErrWeakPassword):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrDuplicateUser):
		writeError(w, http.StatusConflict, err.Error())
	case err != nil:
		s.storeUnavailable(w, err)
	default:
		s.log.Info("user created", "by", c.email, "email", u.Email, "admin", u.Admin)
		writeJSON(w, http.StatusCreated, u)
	}
}

// handleListUsers: GET /users (admin only).
func (s *state) handleListUsers(ctx context.Context, w http.ResponseWriter, r *http.Request, c caller) {
	users, err := ListUsers(ctx, s.db)
	if err != nil {
		s.storeUnavailable(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": users})
}

// handleDeleteUser: DELETE /users/{email} (admin only).
func (s *state) handleDeleteUser(ctx context.Context, w http.ResponseWriter, r *http.Request, c caller) {
	// The id, for the event: the user's jobs and files are owned by it (0 if unknown).
	var id int64
	if email, err := NormalizeEmail(r.PathValue("email")); err == nil {
		if u, err := lookupCredentials(ctx, s.db, email); err == nil {
			id = u.id
		}
	}
	if s.changed(w, DeleteUser(ctx, s.db, r.PathValue("email"))) {
		email := strings.ToLower(r.PathValue("email"))
		s.log.Info("user deleted", "by", c.email, "email", email, "user_id", id)
		// The user is gone either way; their files go when sweep gets the event.
		if err := s.publishUserDeleted(context.WithoutCancel(ctx), email, id, time.Now()); err != nil {
			s.log.Error("user.deleted not published: their jobs and files stay until it is", "email", email, "err", err)
		}
	}
}

// changed answers a change to a user: 204, or the error's status. It reports success.
func (s *state) changed(w http.ResponseWriter, err error) bool {
	switch {
	case errors.Is(err, ErrWeakPassword):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrUnknownUser):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrLastAdmin):
		writeError(w, http.StatusConflict, err.Error())
	case err != nil:
		s.storeUnavailable(w, err)
	default:
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	return false
}

// handleSetAdmin: PUT /users/{email}/admin {admin} (admin only). A demotion ends the
// user's tokens; the last admin cannot be demoted (409).
func (s *state) handleSetAdmin(ctx context.Context, w http.ResponseWriter, r *http.Request, c caller) {
	var body struct {
		Admin *bool `json:"admin"`
	}
	if !readJSON(w, r, &body) {
		return
	}
	if body.Admin == nil {
		writeError(w, http.StatusBadRequest, `"admin" (true or false) is required`)
		return
	}
	if s.changed(w, SetAdmin(ctx, s.db, r.PathValue("email"), *body.Admin)) {
		s.log.Info("admin rights changed", "by", c.email, "email", r.PathValue("email"), "admin", *body.Admin)
	}
}

// handleSetPassword: PUT /users/{email}/password {password, current_password} (admin or
// that user). Changing one's own password asks for the current one, so a stolen token
// alone cannot take the account; an admin resetting another user's does not. Either way
// the user's existing tokens end.
func (s *state) handleSetPassword(ctx context.Context, w http.ResponseWriter, r *http.Request, c caller) {
	email := strings.ToLower(r.PathValue("email"))
	own := email == c.email
	if !own && !c.admin {
		writeError(w, http.StatusForbidden, "admin rights required")
		return
	}
	var body struct {
		Password        string `json:"password"`
		CurrentPassword string `json:"current_password"`
	}
	if !readJSON(w, r, &body) {
		return
	}
	if own && !s.currentPasswordMatches(ctx, w, r, c.email, body.CurrentPassword) {
		return
	}
	if s.changed(w, SetPassword(ctx, s.db, email, body.Password, s.cost)) {
		s.log.Info("password changed", "by", c.email, "email", email)
	}
}

// currentPasswordMatches checks the current password of a self-service change like a
// login (the same limits: a stolen token is no way around them), or answers 403, 429 or 503.
func (s *state) currentPasswordMatches(ctx context.Context, w http.ResponseWriter, r *http.Request, email, password string) bool {
	creds, err := lookupCredentials(ctx, s.db, email)
	if errors.Is(err, ErrUnknownUser) {
		writeError(w, http.StatusNotFound, err.Error())
		return false
	}
	if err != nil {
		s.storeUnavailable(w, err)
		return false
	}
	buckets := s.buckets(r, email, creds)
	if !s.beginCheck(ctx, w, buckets) {
		return false
	}
	matches, err := s.passwordMatches(ctx, creds.hash, password)
	if err != nil {
		s.limiter.end(undecided, buckets...)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "busy, try again")
		return false
	}
	if password == "" || !matches {
		s.limiter.end(failed, buckets...)
		writeError(w, http.StatusForbidden, "current_password is required to change your own password, and must be right")
		return false
	}
	s.limiter.end(succeeded, buckets...)
	return true
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
func (s *state) authorize(ctx context.Context, w http.ResponseWriter, r *http.Request) (caller, bool) {
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
	if err := parseToken(token, &claims, s.keys.keyFunc, s.keys.method.Alg(), s.issuer, s.audience, verifyLeeway, s.ttl); err != nil {
		return invalid("invalid token")
	}
	id, err := strconv.ParseInt(claims.Subject, 10, 64)
	if err != nil || claims.Username == "" {
		return invalid("invalid token")
	}
	if err := s.ensureSchema(ctx); err != nil {
		s.storeUnavailable(w, err)
		return caller{}, false
	}
	admin, version, err := currentUser(ctx, s.db, id, claims.Username)
	if errors.Is(err, ErrUnknownUser) {
		return invalid("user no longer exists")
	}
	if err != nil {
		s.storeUnavailable(w, err)
		return caller{}, false
	}
	if version != claims.CredentialVersion {
		return invalid("token revoked: password or rights changed since")
	}
	return caller{id: id, email: claims.Username, admin: claims.Admin && admin}, true
}

const (
	anyUser   = false
	adminOnly = true
)

// withCaller wraps an admin API handler: it bounds the request's store work
// and hands over the verified caller, after a 403 for non-admins if needAdmin.
func (s *state) withCaller(needAdmin bool, h func(ctx context.Context, w http.ResponseWriter, r *http.Request, c caller)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
		defer cancel()
		c, ok := s.authorize(ctx, w, r)
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

func (s *state) storeUnavailable(w http.ResponseWriter, err error) {
	s.log.Warn("user store unavailable", "err", err)
	writeError(w, http.StatusServiceUnavailable, "user store unavailable, try again")
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "malformed JSON body")
		return false
	}
	return true
}
