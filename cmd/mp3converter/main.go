// Command mp3converter runs the whole system on one machine (`up`), manages
// users, and is the user's client of a running server.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `mp3converter: video in, MP3 out.

Run the system on this machine:
  mp3converter up [--addr 127.0.0.1:8080] [--data-dir ./.mp3converter] [--external NAME=URL]...
  mp3converter function NAME        run one function alone, as its container would (LISTEN_ADDRESS)

Use a server (--server, MP3C_SERVER, default http://127.0.0.1:8080):
  mp3converter login [EMAIL]                  log in and keep the token (0600, in your config dir)
  mp3converter convert FILE... [--out DIR] [--no-wait]
                                              upload, wait, save clip.mp4's MP3 as clip.mp3 beside it
  mp3converter status [VIDEO_FID]             one job, or your recent jobs
  mp3converter download MP3_FID [-o FILE]     save an MP3 under its name on the server

Manage users (admin token, or straight against MySQL when MYSQL_DSN is set):
  mp3converter user add EMAIL [--admin]       password from stdin or a hidden prompt
  mp3converter user list
  mp3converter user delete EMAIL
  mp3converter user passwd EMAIL
`

func main() {
	slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel(), ReplaceAttr: readableDurations})))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "up":
		err = runUp(ctx, args)
	case "function":
		err = runFunction(ctx, args)
	case "user":
		err = runUser(ctx, args)
	case "login":
		err = runLogin(ctx, args)
	case "convert":
		err = runConvert(ctx, args)
	case "status":
		err = runStatus(ctx, args)
	case "download":
		err = runDownload(ctx, args)
	case "help", "-h", "--help":
		fmt.Print(usage)
		return
	default:
		err = fmt.Errorf("unknown command %q\n\n%s", os.Args[1], usage)
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "mp3converter:", err)
		os.Exit(1)
	}
}

// logLevel reads MP3C_LOG_LEVEL (debug, info, warn, error); info by default.
func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(os.Getenv("MP3C_LOG_LEVEL")))); err != nil {
		return slog.LevelInfo
	}
	return l
}

// readableDurations writes durations as people read them ("10m0s"), not as
// the nanosecond count slog's JSON handler would print.
func readableDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// environ is the process environment as the map func-go gives Start.
func environ() map[string]string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

// envOr returns the environment variable or def.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
