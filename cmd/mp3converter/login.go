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
