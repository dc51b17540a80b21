// Package stack runs the whole system in one process: the seven functions,
// each behind the func-go-compatible host on a loopback port of its own (web,
// the public entry point, on the stack's address), the local Broker that
// routes their events by the Triggers in knative/, and embedded stand-ins for
// every backing service that the environment does not name.
package stack

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"mp3converter/internal/local/broker"
	"mp3converter/internal/local/funchost"
	"mp3converter/internal/local/standins"

	login "mp3converter/functions/login"
	web "mp3converter/functions/web"
)

// Config says where the stack listens, keeps its data, and which real
// services to use instead of the embedded ones.
type Config struct {
	Addr    string            // the public address (the web function), e.g. 127.0.0.1:8080
	DataDir string            // keys, FerretDB's files, the outbox
	Env     map[string]string // the process environment: MYSQL_DSN, MONGODB_URI, RABBITMQ_URL, SMTP_URL, JWT_*, ...
	Logger  *slog.Logger
	Out     io.Writer // where the welcome (and a generated admin password) is printed

	// For tests: Instances replaces a function's instance (to inject faults),
	// Manifests replaces the embedded knative/ files (e.g. shorter backoffs),
	// BrokerPrefix isolates the RabbitMQ exchange and queues.
	Instances    map[string]any
	Manifests    fs.FS
	BrokerPrefix string

	// ShutdownGrace bounds each step of Close that waits for work in flight:
	// web's requests, then the Broker's deliveries. Default 10 s.
	ShutdownGrace time.Duration

	// External names functions that run outside the stack, each at a base
	// URL (e.g. {"convert": "http://127.0.0.1:9000"}, a process started with
	// `mp3converter function convert`): the stack does not host them, the
	// Broker and web send their traffic there, and WaitReady does not
	// wait for them. Such a process reads its own environment (MONGODB_URI,
	// VALIDATE_URL, K_SINK, ...: see the Stack's fields).
	External map[string]string
}

// Stack is a running local system.
type Stack struct {
	URL       string            // the public address: the web function
	Functions map[string]string // function name -> its own base URL
	BrokerURL string            // the broker's ingress (K_SINK)
	MailDir   string            // the outbox when SMTP_URL is unset
	MySQLDSN  string
	MongoURI  string

	log      *slog.Logger
	pings    *broker.Pings   // the PingSources of knative/
	closers  []func() error  // in the order they must run at shutdown
	errs     chan error      // a function that failed
	external map[string]bool // functions running outside the stack
}

// containerConcurrency is each function's `deploy.options.limits.concurrency`
// in its func.yaml, which func deploy makes the Service's containerConcurrency
// (TestContainerConcurrencyIsFuncYAMLs holds the two equal). The host
// enforces it as Knative's queue-proxy does: the requests beyond it queue.
var containerConcurrency = map[string]int{"convert": 1, "upload": 5}

// defaultShutdownGrace is how long Close lets requests and deliveries in
// flight finish, at each of its two waits.
const defaultShutdownGrace = 10 * time.Second

// functionNames in start order; each gets the instance its New() returns.
var functionNames = funchost.Names

// Start brings the stack up and returns once every part listens. Use
// WaitReady to wait until every function reports ready, and Close to stop.
func Start(ctx context.Context, cfg Config) (s *Stack, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s = &Stack{Functions: map[string]string{}, log: log, errs: make(chan error, len(functionNames))}
	defer func(started *Stack) { // not s: the error returns below set s to nil
		if err != nil {
			started.Close()
		}
	}(s)
	hosted, err := s.useExternal(cfg.External)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}

	env := copyEnv(cfg.Env)
	if err := s.startBackingServices(cfg, env); err != nil {
		return nil, err
	}
	if err := ensureSigningKey(cfg.DataDir, env); err != nil {
		return nil, err
	}
	if err := ensureLinkSecret(cfg.DataDir, env); err != nil {
		return nil, err
	}
	if err := s.bootstrapAdmin(ctx, cfg, env); err != nil {
		return nil, err
	}

	// web, the entry point, listens on the public address; the others on loopback ports.
	listeners := map[string]net.Listener{}
	closeListeners := func() {
		for _, ln := range listeners {
			ln.Close()
		}
	}
	for _, name := range hosted {
		addr := "127.0.0.1:0"
		if name == "web" {
			addr = cfg.Addr
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			closeListeners()
			if name == "web" {
				return nil, fmt.Errorf("web: %w (is another stack running? choose another with --addr)", err)
			}
			return nil, err
		}
		listeners[name] = ln
		s.Functions[name] = "http://" + ln.Addr().String()
	}
	s.URL = s.Functions["web"]

	grace := cfg.ShutdownGrace
	if grace <= 0 {
		grace = defaultShutdownGrace
	}
	brokerURL, closeBroker, err := startBroker(ctx, cfg, s, env, grace)
	if err != nil {
		closeListeners()
		return nil, err
	}
	s.BrokerURL = brokerURL

	// Everything a function needs to find the others, on top of the environment.
	s.MailDir = filepath.Join(cfg.DataDir, "outbox")
	env["K_SINK"] = s.BrokerURL
	env["VALIDATE_URL"] = s.Functions["validate"] + "/validate"
	env["PUBLIC_URL"] = valueOr(env["PUBLIC_URL"], s.URL)
	env["MAIL_DIR"] = valueOr(env["MAIL_DIR"], s.MailDir)

	// web's routes: each function's base URL (VALIDATE_URL too, where the others take the endpoint).
	webEnv := map[string]string{}
	for name, setting := range web.Upstreams {
		webEnv[setting] = s.Functions[name]
	}

	// Every function's metrics on one /metrics, on web's address (a service_name label each).
	instances := map[string]any{}
	var gatherers prometheus.Gatherers
	for _, name := range hosted {
		instances[name] = cfg.Instances[name]
		if instances[name] == nil {
			instances[name], _ = funchost.New(name)
		}
		if g := funchost.Gatherer(instances[name]); g != nil {
			gatherers = append(gatherers, g)
		}
	}
	metrics := promhttp.HandlerFor(gatherers, promhttp.HandlerOpts{})

	fnCtx, stopFunctions := context.WithCancel(context.WithoutCancel(ctx))
	webCtx, stopWeb := context.WithCancel(fnCtx)
	stopped := make(chan struct{}, len(hosted))
	webStopped := make(chan struct{})
	for _, name := range hosted {
		instance := instances[name]
		fnEnv := copyEnv(env)
		fnEnv["LISTEN_ADDRESS"] = listeners[name].Addr().String()
		if name != "login" { // only login signs
			delete(fnEnv, "JWT_PRIVATE_KEY")
			delete(fnEnv, "JWT_PRIVATE_KEY_FILE")
		} else if fnEnv["TRUSTED_PROXY_HOPS"] == "" {
			fnEnv["TRUSTED_PROXY_HOPS"] = "1" // web appends the client to X-Forwarded-For
		}
		serveCtx, fnMetrics := fnCtx, http.Handler(nil)
		if name == "web" {
			serveCtx, fnMetrics = webCtx, metrics
			for k, v := range webEnv {
				fnEnv[k] = v
			}
		}
		go func() {
			defer func() {
				if name == "web" {
					close(webStopped)
				}
				stopped <- struct{}{}
			}()
			err := funchost.Serve(serveCtx, funchost.Function{Name: name, Instance: instance, Config: fnEnv, Listener: listeners[name], Logger: log,
				Concurrency: containerConcurrency[name], Metrics: fnMetrics})
			if err != nil {
				s.errs <- err
			}
		}()
	}

	// Shutdown order: stop taking requests; stop the Broker dispatching, so
	// nothing is delivered to (or retried against) a function that is
	// stopping; then the functions; then the backing services (already
	// registered). Each wait for work in flight is bounded by grace.
	s.closers = append([]func() error{
		func() error {
			stopWeb() // its server lets the requests in flight finish
			select {
			case <-webStopped:
			case <-time.After(grace): // the functions' own stop cuts what still runs
			}
			return nil
		},
		closeBroker,
		func() error {
			stopFunctions()
			for range hosted {
				<-stopped
			}
			return nil
		},
	}, s.closers...)
	return s, nil
}

// Failed delivers the error of a function that stopped on its own.
func (s *Stack) Failed() <-chan error { return s.errs }

// WaitReady polls the readiness probe of every function the stack hosts, as
// a kubelet would, until all answer 200 or ctx ends.
func (s *Stack) WaitReady(ctx context.Context) error {
	for _, name := range functionNames {
		if s.external[name] {
			continue
		}
		for {
			resp, err := http.Get(s.Functions[name] + "/health/readiness")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s is not ready: %w", name, ctx.Err())
			case err := <-s.errs:
				return err
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// Close stops everything in order and returns the first errors met.
func (s *Stack) Close() error {
	var errs []error
	for _, c := range s.closers {
		errs = append(errs, c())
	}
	s.closers = nil
	return errors.Join(errs...)
}

// useExternal records the functions of external in s.Functions and returns
// the names of the others, which the stack hosts.
func (s *Stack) useExternal(external map[string]string) (hosted []string, err error) {
	s.external = map[string]bool{}
	for name, raw := range external {
		if name == "web" {
			return nil, errors.New("external: web serves the stack's own address and cannot run outside it")
		}
		if _, err := funchost.New(name); err != nil {
			return nil, fmt.Errorf("external: %w", err)
		}
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("external %s: %q is not an http(s) URL", name, raw)
		}
		s.Functions[name] = strings.TrimRight(raw, "/")
		s.external[name] = true
	}
	for _, name := range functionNames {
		if !s.external[name] {
			hosted = append(hosted, name)
		}
	}
	return hosted, nil
}

// startBackingServices uses MYSQL_DSN and MONGODB_URI when set and starts
// the embedded stand-ins otherwise, recording the choice in env.
func (s *Stack) startBackingServices(cfg Config, env map[string]string) error {
	if env["MYSQL_DSN"] == "" {
		dsn, closeMySQL, err := s.startMySQL(cfg)
		if err != nil {
			return err
		}
		s.closers = append(s.closers, closeMySQL)
		env["MYSQL_DSN"] = dsn
	}
	if env["MONGODB_URI"] == "" {
		m, err := standins.StartMongoDB("127.0.0.1:0", filepath.Join(cfg.DataDir, "mongodb"))
		if err != nil {
			return err
		}
		s.closers = append(s.closers, m.Close)
		env["MONGODB_URI"] = m.URI
		s.log.Info("embedded MongoDB (FerretDB on SQLite) started", "uri", m.URI, "dir", filepath.Join(cfg.DataDir, "mongodb"))
	}
	s.MySQLDSN, s.MongoURI = env["MYSQL_DSN"], env["MONGODB_URI"]
	return nil
}

// startMySQL starts a private MariaDB with its data under the data dir, so
// users survive a restart of the stack; where MariaDB is not installed, the
// in-memory go-mysql-server, with a warning of what that loses.
func (s *Stack) startMySQL(cfg Config) (dsn string, closeIt func() error, err error) {
	dir := filepath.Join(cfg.DataDir, "mysql")
	m, err := standins.StartMariaDB(context.Background(), dir)
	if err == nil {
		s.log.Info("MariaDB started", "dir", dir)
		return m.DSN, m.Close, nil
	}
	if !errors.Is(err, standins.ErrNoMariaDB) {
		return "", nil, err
	}
	mem, err := standins.StartMySQL("127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	s.log.Warn("MariaDB is not installed: users are kept in memory and lost when the stack stops, and concurrent sign-ups can be lost; install mariadb-server (make run does it where it can) or set MYSQL_DSN", "dsn", mem.DSN)
	return mem.DSN, mem.Close, nil
}

// bootstrapAdmin creates the first admin when there are no users, from
// MP3C_ADMIN_EMAIL / MP3C_ADMIN_PASSWORD or with a generated password that is
// printed once.
func (s *Stack) bootstrapAdmin(ctx context.Context, cfg Config, env map[string]string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := login.MigrateDSN(ctx, env["MYSQL_DSN"]); err != nil {
		return fmt.Errorf("mysql: %w", err)
	}
	db, err := login.OpenDB(env["MYSQL_DSN"])
	if err != nil {
		return err
	}
	defer db.Close()
	n, err := login.CountUsers(ctx, db)
	if err != nil || n > 0 {
		return err
	}
	email := valueOr(env["MP3C_ADMIN_EMAIL"], "admin@example.com")
	password, generated := env["MP3C_ADMIN_PASSWORD"], false
	if password == "" {
		password, generated = randomPassword(), true
	}
	if _, err := login.AddUser(ctx, db, email, password, true, 0); err != nil {
		return fmt.Errorf("creating the first admin %s: %w", email, err)
	}
	if cfg.Out != nil {
		if generated {
			fmt.Fprintf(cfg.Out, "Created admin %s with password %s (shown once; set MP3C_ADMIN_PASSWORD to choose it)\n", email, password)
		} else {
			fmt.Fprintf(cfg.Out, "Created admin %s with the password from MP3C_ADMIN_PASSWORD\n", email)
		}
	}
	return nil
}

func randomPassword() string {
	b := make([]byte, 15)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func copyEnv(m map[string]string) map[string]string {
	c := make(map[string]string, len(m)+8)
	for k, v := range m {
		c[k] = v
	}
	return c
}

func valueOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
