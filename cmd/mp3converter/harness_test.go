package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"mp3converter/internal/stacktest"
)

// The client commands run against one real local stack (stacktest), shared
// by the tests of this package: every function, the local Broker (RabbitMQ
// when RABBITMQ_URL is set), MySQL (MYSQL_DSN or embedded), FerretDB (or
// MONGODB_URI), real ffmpeg. Uploads are capped at maxUpload bytes.

const maxUpload = 1 << 20

var shared struct {
	once  sync.Once
	dir   string
	stack *stacktest.Stack
	err   error
}

func TestMain(m *testing.M) {
	// The functions log through slog.Default: only what goes wrong, in test output.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	code := m.Run()
	if shared.stack != nil {
		if err := shared.stack.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "closing the stack:", err)
		}
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// server returns the shared stack's URL and an admin token, starting it on first use.
func server(t *testing.T) (url, token string) {
	t.Helper()
	shared.once.Do(func() {
		if shared.dir, shared.err = os.MkdirTemp("", "mp3c-cli-test-"); shared.err != nil {
			return
		}
		shared.stack, shared.err = stacktest.New(context.Background(), shared.dir, stacktest.Options{
			Env: map[string]string{"MAX_UPLOAD_BYTES": strconv.Itoa(maxUpload)},
		})
	})
	if shared.err != nil {
		t.Fatalf("starting the local stack: %v", shared.err)
	}
	return shared.stack.URL, shared.stack.AdminToken
}

// loggedIn isolates the config dir and sets MP3C_TOKEN to the admin's token.
func loggedIn(t *testing.T) (url string) {
	t.Helper()
	url, token := server(t)
	t.Setenv("MP3C_CONFIG_DIR", t.TempDir())
	t.Setenv("MP3C_TOKEN", token)
	return url
}

// run runs a command of a with a bounded context and returns what it printed.
func run(t *testing.T, a *app, cmd func(*app, context.Context, []string) error, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if a == nil {
		a = &app{}
	}
	a.out = &out
	if a.poll == 0 {
		a.poll = 50 * time.Millisecond
	}
	err := cmd(a, ctx, args)
	t.Logf("mp3converter %v:\n%s(err: %v)", args, out.String(), err)
	return out.String(), err
}

var (
	convertCmd  = (*app).convert
	statusCmd   = (*app).status
	downloadCmd = (*app).download
)

// assertMP3 fails unless path is an MP3 of about 2 s.
func assertMP3(t *testing.T, path string) {
	t.Helper()
	if codec, secs := stacktest.Probe(t, path); codec != "mp3" || secs < 1.8 || secs > 2.3 {
		t.Fatalf("%s: %s of %.2f s, want an MP3 of about 2 s", path, codec, secs)
	}
}

// noPartFiles fails if a .part file is left in dir.
func noPartFiles(t *testing.T, dir string) {
	t.Helper()
	parts, _ := filepath.Glob(filepath.Join(dir, "*.part"))
	if len(parts) > 0 {
		t.Fatalf("left behind: %v", parts)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
