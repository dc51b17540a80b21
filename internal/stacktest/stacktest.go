// Package stacktest starts the whole system (internal/local/stack) for tests,
// in the style of net/http/httptest: Start gives a running stack on free
// loopback ports, with its own data, databases and queues, an admin token,
// and helpers that call its API through internal/client. It also makes test
// videos with ffmpeg, rewrites knative/'s retry settings, builds and runs the
// mp3converter binary, and cleans up what a test left in RabbitMQ and MySQL.
//
// The helpers take a TB (testing.TB has all it needs), so that `go run
// ./bench` can use New and the media helpers without the testing package.
package stacktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"mp3converter/internal/client"
	"mp3converter/internal/local/stack"
	"mp3converter/internal/mailtest"
)

// The first admin of every stack, and the password AddUser gives users.
const (
	AdminEmail    = "admin@example.com"
	AdminPassword = "admin-password-1"
	UserPassword  = "user-password-1"
)

// TB is the part of testing.TB the helpers use.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

// Options shape a stack. The zero value is the stack `mp3converter up` runs,
// on the services the process environment names (each isolated) or the
// embedded ones.
type Options struct {
	// Env is added to the harness's environment (PATH, TMPDIR, the admin,
	// BCRYPT_COST=4). MYSQL_DSN, MONGODB_URI and RABBITMQ_URL come from the
	// process environment, each isolated (a database, a database prefix, a
	// queue prefix of the stack's own, removed at Close), unless Env has the
	// key: then its value is used as it is ("" for the embedded stand-in).
	Env map[string]string
	// Mail starts an SMTP server on loopback (Stack.Mail) for notify;
	// otherwise the emails are files in the outbox (Stack.MailDir).
	Mail bool
	// Instances, External and Manifests are those of stack.Config: faulty
	// functions, functions run elsewhere, knative/ rewritten (see Manifests).
	Instances map[string]any
	External  map[string]string
	Manifests fs.FS
	Logger    *slog.Logger // nil: slog.Default()
}

// Stack is a running stack and what a test needs to use it.
type Stack struct {
	*stack.Stack
	AdminToken   string
	Env          map[string]string // what the stack was started with
	DataDir      string
	BrokerPrefix string           // of the RabbitMQ exchange and queues ("" in memory)
	Mail         *mailtest.Server // with Options.Mail
	closers      []func()         // run last first
}

// Start starts a stack in t's temporary directory and closes it when t ends.
func Start(t TB, o Options) *Stack {
	t.Helper()
	s, err := New(context.Background(), t.TempDir(), o)
	if err != nil {
		t.Fatalf("starting the stack: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("closing the stack: %v", err)
		}
	})
	return s
}

// New starts a stack with its data and temporary files in dir, waits until
// it is ready and logs the admin in. The caller closes it (and removes dir).
func New(ctx context.Context, dir string, o Options) (s *Stack, err error) {
	s = &Stack{DataDir: filepath.Join(dir, "data")}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return s, err
	}
	s.Env = map[string]string{
		"PATH":                os.Getenv("PATH"),
		"TMPDIR":              tmp,
		"MP3C_ADMIN_EMAIL":    AdminEmail,
		"MP3C_ADMIN_PASSWORD": AdminPassword,
		"BCRYPT_COST":         "4",
	}
	if o.Mail {
		if s.Mail, err = mailtest.Start(); err != nil {
			return s, err
		}
		s.closers = append(s.closers, func() { s.Mail.Close() })
		s.Env["SMTP_URL"] = s.Mail.URL
	}
	if err := s.isolateServices(o.Env); err != nil {
		return s, err
	}
	for k, v := range o.Env {
		s.Env[k] = v
	}

	st, err := stack.Start(ctx, stack.Config{
		Addr:         "127.0.0.1:0",
		DataDir:      s.DataDir,
		Env:          s.Env,
		Logger:       o.Logger,
		Instances:    o.Instances,
		External:     o.External,
		Manifests:    o.Manifests,
		BrokerPrefix: s.BrokerPrefix,
	})
	if err != nil {
		return s, err
	}
	s.Stack = st
	readyCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := st.WaitReady(readyCtx); err != nil {
		return s, err
	}
	tok, err := (&client.Client{Server: st.URL}).Login(readyCtx, AdminEmail, AdminPassword)
	if err != nil {
		return s, fmt.Errorf("admin login: %w", err)
	}
	s.AdminToken = tok.AccessToken
	return s, nil
}

// Close stops the stack, then removes its databases and queues from the
// services it shared.
func (s *Stack) Close() error {
	var err error
	if s.Stack != nil {
		err = s.Stack.Close() // a second Close does nothing
	}
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
	return err
}

// isolateServices gives the stack a database, a database prefix and a queue
// prefix of its own on the services the process environment names, unless
// env (Options.Env) decides.
func (s *Stack) isolateServices(env map[string]string) error {
	suffix := RandomHex(4)
	if _, set := env["MYSQL_DSN"]; !set && os.Getenv("MYSQL_DSN") != "" {
		dsn, drop, err := IsolatedDSN(os.Getenv("MYSQL_DSN"), "st_"+suffix)
		if err != nil {
			return err
		}
		s.Env["MYSQL_DSN"] = dsn
		s.closers = append(s.closers, drop)
	}
	if _, set := env["MONGODB_URI"]; !set && os.Getenv("MONGODB_URI") != "" {
		s.Env["MONGODB_URI"] = os.Getenv("MONGODB_URI")
		s.Env["MONGODB_DB_PREFIX"] = "st" + suffix + "_"
	}
	url, set := env["RABBITMQ_URL"]
	if !set {
		url = os.Getenv("RABBITMQ_URL")
	}
	if url != "" {
		s.Env["RABBITMQ_URL"] = url
		s.BrokerPrefix = "st" + suffix
		s.closers = append(s.closers, func() { DeleteBrokerTopology(url, s.BrokerPrefix) })
	}
	return nil
}

// RandomHex is n random bytes in hex: names that do not collide.
func RandomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// FreeAddr is a loopback address with a port that was free a moment ago.
func FreeAddr(t TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
