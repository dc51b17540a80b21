package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"mp3converter/internal/client"
)

// serverFlag is --server, from MP3C_SERVER, default the local stack.
func serverFlag(fs *flag.FlagSet) *string {
	return fs.String("server", envOr("MP3C_SERVER", "http://127.0.0.1:8080"), "server URL (MP3C_SERVER)")
}

// runLogin asks for the password, logs in and keeps the token.
func runLogin(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("login", flag.ContinueOnError)
	server := serverFlag(fs)
	if err := fs.Parse(reorder(args)); err != nil {
		return err
	}
	email := fs.Arg(0)
	if email == "" {
		fmt.Fprint(os.Stderr, "Email: ")
		if _, err := fmt.Fscanln(os.Stdin, &email); err != nil {
			return errors.New("no email given")
		}
	}
	password, err := readPassword("Password for "+email+": ", false)
	if err != nil {
		return err
	}
	srv := strings.TrimRight(*server, "/")
	c := &client.Client{Server: srv}
	tok, err := c.Login(ctx, email, password)
	var apiErr *client.APIError
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusUnauthorized {
		return errors.New("wrong email or password")
	}
	if err != nil {
		return explain(err)
	}
	expires := time.Now().Add(time.Duration(tok.ExpiresIn) * time.Second)
	if err := client.SaveToken(client.SavedToken{Server: srv, Email: email, Token: tok.AccessToken, ExpiresAt: expires}); err != nil {
		return fmt.Errorf("saving the token: %w", err)
	}
	fmt.Printf("Logged in to %s as %s; the token expires %s.\n", srv, email, expires.Local().Format("Mon 2 Jan 15:04"))
	return nil
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
