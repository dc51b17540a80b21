package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"mp3converter/internal/client"
)

// Shared by the client commands: the server flag, the client with the
// user's token, API errors in words a person can act on, and the app that
// runs the commands (main hands it stdout; tests their own writer and client).

// serverFlag is --server, from MP3C_SERVER, default the local stack.
func serverFlag(fs *flag.FlagSet) *string {
	return fs.String("server", envOr("MP3C_SERVER", "http://127.0.0.1:8080"), "server URL (MP3C_SERVER)")
}

// authedClient returns a client with MP3C_TOKEN or the token saved by login.
func authedClient(server string) (*client.Client, error) {
	srv := strings.TrimRight(server, "/")
	c := &client.Client{Server: srv, Token: os.Getenv("MP3C_TOKEN")}
	if c.Token != "" {
		return c, nil
	}
	saved, err := client.LoadToken(srv)
	if err != nil {
		return nil, err
	}
	if time.Now().After(saved.ExpiresAt) {
		return nil, fmt.Errorf("your token for %s expired at %s: run mp3converter login", srv, saved.ExpiresAt.Local().Format(time.DateTime))
	}
	c.Token = saved.Token
	return c, nil
}

// explain turns API errors into sentences a person can act on.
func explain(err error) error {
	var apiErr *client.APIError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, client.ErrUnreachable):
		return fmt.Errorf("%v (is the server running? `make run` starts one locally)", err)
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusUnauthorized:
		return fmt.Errorf("%s: your token is missing, expired or revoked: run mp3converter login", apiErr.Message)
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusForbidden:
		return fmt.Errorf("%s: this needs an admin's token", apiErr.Message)
	case errors.As(err, &apiErr):
		return errors.New(apiErr.Message)
	}
	return err
}

// app runs the client commands.
type app struct {
	out  io.Writer
	http *http.Client  // nil: http.DefaultClient
	poll time.Duration // the first wait between two looks at a job; 0: 1 s
}

const (
	maxPoll       = 5 * time.Second // the longest wait between two looks at a job
	maxPollErrors = 10              // job lookups that may fail in a row (server briefly away)
)

func (a *app) interval() time.Duration {
	if a.poll > 0 {
		return a.poll
	}
	return time.Second
}

// client is authedClient with the app's HTTP client.
func (a *app) client(server string) (*client.Client, error) {
	c, err := authedClient(server)
	if err != nil {
		return nil, err
	}
	c.HTTP = a.http
	return c, nil
}

// helpIsNoError makes -h print the flags and succeed.
func helpIsNoError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
