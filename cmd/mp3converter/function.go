package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"mp3converter/internal/local/funchost"
)

// runFunction hosts one function alone, as `func run` or its container
// would: LISTEN_ADDRESS (default 127.0.0.1:8080), config from the environment.
func runFunction(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: mp3converter function NAME")
	}
	instance, err := funchost.New(args[0])
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", envOr("LISTEN_ADDRESS", "127.0.0.1:8080"))
	if err != nil {
		return err
	}
	return funchost.Serve(ctx, funchost.Function{Name: args[0], Instance: instance, Config: environ(), Listener: ln, Logger: slog.Default()})
}
