// Command fnhost runs one function alone, like `mp3converter function NAME`,
// but links only the six functions and the func-go-compatible host: none of
// the local stack's embedded servers (go-mysql-server, FerretDB), whose
// package initialisation every `mp3converter` process pays. A `func build`
// image links one function and the func-go runtime, so its cold start is
// closer to this binary's than to mp3converter's. The bench measures both.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"mp3converter/internal/local/funchost"
)

func main() {
	slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, nil)))
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: fnhost NAME (LISTEN_ADDRESS, config from the environment)")
		os.Exit(2)
	}
	// internal/local/funchost, not internal/local/stack: the stack would link the embedded servers.
	instance, err := funchost.New(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "fnhost:", err)
		os.Exit(2)
	}
	addr := os.Getenv("LISTEN_ADDRESS")
	if addr == "" {
		addr = "127.0.0.1:8080"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fnhost:", err)
		os.Exit(1)
	}
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = funchost.Serve(ctx, funchost.Function{Name: os.Args[1], Instance: instance, Config: env, Listener: ln, Logger: slog.Default()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "fnhost:", err)
		os.Exit(1)
	}
}
