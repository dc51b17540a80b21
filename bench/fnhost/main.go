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

	"mp3converter/internal/host"

	convert "mp3converter/functions/convert"
	download "mp3converter/functions/download"
	login "mp3converter/functions/login"
	notify "mp3converter/functions/notify"
	upload "mp3converter/functions/upload"
	validate "mp3converter/functions/validate"
)

func main() {
	slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, nil)))
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: fnhost NAME (LISTEN_ADDRESS, config from the environment)")
		os.Exit(2)
	}
	// Not stack.NewFunction: importing internal/stack would link the embedded servers.
	instances := map[string]func() any{
		"convert":  func() any { return convert.New() },
		"download": func() any { return download.New() },
		"login":    func() any { return login.New() },
		"notify":   func() any { return notify.New() },
		"upload":   func() any { return upload.New() },
		"validate": func() any { return validate.New() },
	}
	newInstance, ok := instances[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "fnhost: no function %q\n", os.Args[1])
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
	err = host.Serve(ctx, host.Function{Name: os.Args[1], Instance: newInstance(), Config: env, Listener: ln, Logger: slog.Default()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "fnhost:", err)
		os.Exit(1)
	}
}
