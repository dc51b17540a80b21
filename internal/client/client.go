// Package client talks to a running mp3converter over its HTTP API, the way
// curl in the README does: the CLI's client commands are built on it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client calls the API at Server with Token (may be empty for Login).
type Client struct {
	Server string
	Token  string
	HTTP   *http.Client
}

// APIError is an answer with an error status, carrying the server's message.
type APIError struct {
	Status  int
	Message string
	Header  http.Header
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
}

// ErrUnreachable wraps a transport failure: the server is not there.
var ErrUnreachable = errors.New("server unreachable")

// Token is what login answers.
type Token struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}

// User is one account as the admin API shows it.
type User struct {
	ID        int64     `json:"id"`
	Email     string    `json:"email"`
	Admin     bool      `json:"admin"`
	CreatedAt time.Time `json:"created_at"`
}

// Login exchanges email and password for a token.
func (c *Client) Login(ctx context.Context, email, password string) (Token, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Server+"/login", nil)
	if err != nil {
		return Token{}, err
	}
	req.SetBasicAuth(email, password)
	var t Token
	return t, c.do(req, &t)
}

// AddUser creates a user (admin only).
func (c *Client) AddUser(ctx context.Context, email, password string, admin bool) (User, error) {
	var u User
	body := map[string]any{"email": email, "password": password, "admin": admin}
	return u, c.call(ctx, http.MethodPost, "/users", body, &u)
}

// Users lists every user (admin only).
func (c *Client) Users(ctx context.Context) ([]User, error) {
	var out struct{ Users []User }
	return out.Users, c.call(ctx, http.MethodGet, "/users", nil, &out)
}

// DeleteUser removes a user (admin only).
func (c *Client) DeleteUser(ctx context.Context, email string) error {
	return c.call(ctx, http.MethodDelete, "/users/"+url.PathEscape(email), nil, nil)
}

// SetPassword changes a password: an admin's reset of another user's, or the
// user's own, which needs the current password too ("" when not known).
func (c *Client) SetPassword(ctx context.Context, email, password, current string) error {
	body := map[string]string{"password": password}
	if current != "" {
		body["current_password"] = current
	}
	return c.call(ctx, http.MethodPut, "/users/"+url.PathEscape(email)+"/password", body, nil)
}

// call sends a JSON body (if any) and decodes a JSON answer into out (if any).
func (c *Client) call(ctx context.Context, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Server+path, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.do(req, out)
}

// do sends and decodes a JSON answer into out (if any).
func (c *Client) do(req *http.Request, out any) error {
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

func readError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct{ Error string }
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &APIError{Status: resp.StatusCode, Message: msg, Header: resp.Header}
}
