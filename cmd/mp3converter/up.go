package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"mp3converter/internal/local/stack"
)

// runUp runs the whole system until Ctrl-C.
func runUp(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	addr := fs.String("addr", envOr("MP3C_ADDR", "127.0.0.1:8080"), "public listen address: the web app and the API (MP3C_ADDR)")
	dataDir := fs.String("data-dir", envOr("MP3C_DATA_DIR", ".mp3converter"), "keys, embedded database files and the outbox (MP3C_DATA_DIR)")
	brokerPrefix := fs.String("broker-prefix", os.Getenv("MP3C_BROKER_PREFIX"), "prefix of the RabbitMQ exchange and queues, so several stacks can share one RabbitMQ (MP3C_BROKER_PREFIX)")
	external := externalFlag{}
	fs.Var(external, "external", "NAME=URL: function NAME runs elsewhere (e.g. `mp3converter function NAME`) at URL; repeatable")
	if err := fs.Parse(args); err != nil {
		return err
	}

	s, err := stack.Start(ctx, stack.Config{
		Addr: *addr, DataDir: *dataDir, BrokerPrefix: *brokerPrefix, Env: environ(), Logger: slog.Default(), Out: os.Stdout,
		External: external,
	})
	if err != nil {
		return err
	}
	readyCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = s.WaitReady(readyCtx)
	cancel()
	if err != nil {
		s.Close()
		return err
	}
	fmt.Printf("mp3converter is up at %s (outbox: %s). Ctrl-C stops it.\n", s.URL, s.MailDir)

	select {
	case <-ctx.Done():
		fmt.Println("stopping...")
	case err = <-s.Failed():
	}
	// Close bounds each of its waits; this bounds the whole, so a function
	// that ignores its context cannot keep the process alive.
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case cerr := <-closed:
		return errors.Join(err, cerr)
	case <-time.After(shutdownBound):
		return errors.Join(err, fmt.Errorf("the stack did not stop within %s; exiting anyway", shutdownBound))
	}
}

// shutdownBound is the longest `up` waits for the stack to stop.
const shutdownBound = time.Minute

// externalFlag collects --external NAME=URL flags.
type externalFlag map[string]string

func (e externalFlag) String() string { return fmt.Sprint(map[string]string(e)) }

func (e externalFlag) Set(v string) error {
	name, url, ok := strings.Cut(v, "=")
	if !ok || name == "" || url == "" {
		return fmt.Errorf("want NAME=URL, e.g. convert=http://127.0.0.1:9000")
	}
	e[name] = url
	return nil
}
