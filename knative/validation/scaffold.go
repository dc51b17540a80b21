package validation

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/mod/modfile"
)

// The host builder of Knative Functions (`func build --builder=host`) does
// not build a function's package directly. It writes a small main module
// beside it and builds that; this file writes the same project, so a test can
// prove each function builds the way func builds it. What is mirrored, from
// github.com/knative/func:
//
//   - pkg/scaffolding/scaffold.go, Write: the scaffolding directory of the
//     detected signature is copied to the build directory and its "f" entry
//     is replaced by a relative symlink to the function's root.
//   - pkg/scaffolding/detectors.go: the signature is "instanced" when some .go
//     file of the function's root (test files included) declares a
//     package-level New, "static" for a package-level Handle; both is an
//     error. CheckShape enforces this.
//   - templates/go/scaffolding/instanced-http/main.go and
//     instanced-cloudevents/main.go: `package main`, importing
//     knative.dev/func-go/http (or .../cloudevents as ce) and the function's
//     module as f, and calling `http.Start(f.New())` / `ce.Start(f.New())`,
//     printing the error to stderr and exiting 1.
//   - templates/go/scaffolding/*/go.mod(.ftmpl): `module s`, a `replace` of
//     the function's module (by its true name since func PR #2769) to ./f,
//     a require of it at v0.0.0-00010101000000-000000000000 and of
//     knative.dev/func-go; func carries the function's own go.mod requires
//     over and syncs the go version (PR #3237).
//   - pkg/oci/go_builder.go, goBuild: `go mod tidy`, then `go build -o
//     <out>` in the scaffold directory with CGO_ENABLED=0 (and GOOS/GOARCH)
//     pegged over the caller's environment, plus the function's buildEnvs
//     (GOWORK=off here).
//
// knative.dev/func-go itself is not available offline, so the scaffold
// replaces it with a local stand-in module of the same path: its Start
// functions take the func-go handler interfaces, so a function whose Handle
// has the wrong shape does not compile, and they serve the instance as
// func-go does (health endpoints, Start in the background, Stop on SIGTERM).

// ScaffoldVersion is the pseudo-version the scaffolding requires replaced
// modules at.
const ScaffoldVersion = "v0.0.0-00010101000000-000000000000"

// WriteScaffold writes func's host-builder project for the function at
// functionDir into dir (which must exist and be empty): go.mod, go.sum,
// main.go, the f symlink and the func-go stand-in.
func WriteScaffold(dir, functionDir, invoke string) error {
	gomod, err := os.ReadFile(filepath.Join(functionDir, "go.mod"))
	if err != nil {
		return err
	}
	mf, err := modfile.Parse("go.mod", gomod, nil)
	if err != nil {
		return err
	}
	if mf.Module == nil {
		return fmt.Errorf("%s/go.mod has no module line", functionDir)
	}
	if len(mf.Replace) > 0 {
		return fmt.Errorf("%s/go.mod has a replace: func carries over only the require lines", functionDir)
	}
	modPath := mf.Module.Mod.Path
	goVersion := "1.26"
	if mf.Go != nil {
		goVersion = mf.Go.Version
	}

	abs, err := filepath.Abs(functionDir)
	if err != nil {
		return err
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(absDir, abs)
	if err != nil {
		return err
	}
	if err := os.Symlink(rel, filepath.Join(dir, "f")); err != nil {
		return err
	}

	var sdkVersion string
	var b strings.Builder
	fmt.Fprintf(&b, "module s\n\ngo %s\n\nreplace %s => ./f\n\nreplace knative.dev/func-go => ./func-go\n\n", goVersion, modPath)
	fmt.Fprintf(&b, "require (\n\t%s %s\n\tknative.dev/func-go %s\n)\n", modPath, ScaffoldVersion, ScaffoldVersion)
	if len(mf.Require) > 0 {
		b.WriteString("\nrequire (\n")
		for _, r := range mf.Require {
			if r.Mod.Path == "github.com/cloudevents/sdk-go/v2" {
				sdkVersion = r.Mod.Version
			}
			fmt.Fprintf(&b, "\t%s %s // indirect\n", r.Mod.Path, r.Mod.Version)
		}
		b.WriteString(")\n")
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	// The function's verified checksums: nothing needs the checksum database.
	if sum, err := os.ReadFile(filepath.Join(functionDir, "go.sum")); err == nil {
		if err := os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644); err != nil {
			return err
		}
	}

	var mainGo string
	switch invoke {
	case "", "http":
		mainGo = fmt.Sprintf(scaffoldMainHTTP, modPath)
	case "cloudevent":
		if sdkVersion == "" {
			return fmt.Errorf("invoke cloudevent but %s/go.mod does not require github.com/cloudevents/sdk-go/v2", functionDir)
		}
		mainGo = fmt.Sprintf(scaffoldMainCE, modPath)
	default:
		return fmt.Errorf("invoke %q: func scaffolds http or cloudevent", invoke)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(mainGo), 0o644); err != nil {
		return err
	}
	return writeFuncGoStandIn(filepath.Join(dir, "func-go"), goVersion, sdkVersion)
}

// scaffoldMainHTTP is templates/go/scaffolding/instanced-http/main.go with
// the function's module path.
const scaffoldMainHTTP = `package main

import (
	"fmt"
	"os"

	"knative.dev/func-go/http"

	f %q
)

func main() {
	if err := http.Start(f.New()); err != nil {
		fmt.Fprintln(os.Stderr, err.Error())
		os.Exit(1)
	}
}
`

// scaffoldMainCE is templates/go/scaffolding/instanced-cloudevents/main.go.
const scaffoldMainCE = `package main

import (
	"fmt"
	"os"

	ce "knative.dev/func-go/cloudevents"

	f %q
)

func main() {
	if err := ce.Start(f.New()); err != nil {
		fmt.Fprintln(os.Stderr, err.Error())
		os.Exit(1)
	}
}
`

func writeFuncGoStandIn(dir, goVersion, sdkVersion string) error {
	gomod := fmt.Sprintf("module knative.dev/func-go\n\ngo %s\n", goVersion)
	files := map[string]string{"http/http.go": standInHTTP, "internal/serve/serve.go": standInServe}
	if sdkVersion != "" {
		gomod += fmt.Sprintf("\nrequire github.com/cloudevents/sdk-go/v2 %s\n", sdkVersion)
		files["cloudevents/cloudevents.go"] = standInCE
	}
	files["go.mod"] = gomod
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// standInServe runs an instance the way func-go does.
const standInServe = `// Package serve is the func-go stand-in's server: ADDRESS (default
// 127.0.0.1) and PORT (default 8080), /health/readiness and
// /health/liveness, Start in the background with the environment, Stop after
// the server on SIGINT/SIGTERM, 30 s read and write timeouts.
package serve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type starter interface {
	Start(context.Context, map[string]string) error
}
type stopper interface{ Stop(context.Context) error }
type ready interface {
	Ready(context.Context) (bool, error)
}
type alive interface {
	Alive(context.Context) (bool, error)
}

// Run serves handler for instance until a signal or a Start error.
func Run(instance any, handler http.Handler) error {
	addr := os.Getenv("ADDRESS")
	if addr == "" {
		addr = "127.0.0.1"
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/health/readiness", report(instance, true))
	mux.HandleFunc("/health/liveness", report(instance, false))
	mux.Handle("/", handler)
	srv := &http.Server{Handler: mux, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		IdleTimeout: 30 * time.Second, ReadHeaderTimeout: 2 * time.Second, MaxHeaderBytes: 1 << 20}
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, port))
	if err != nil {
		return err
	}
	stop := make(chan error, 3)
	if s, ok := instance.(starter); ok {
		go func() {
			if err := s.Start(context.Background(), environ()); err != nil {
				stop <- err
			}
		}()
	}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			stop <- err
		}
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() { <-sigs; stop <- nil }()
	err = <-stop
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = errors.Join(err, srv.Shutdown(ctx))
	if s, ok := instance.(stopper); ok {
		err = errors.Join(err, s.Stop(ctx))
	}
	return err
}

func report(instance any, readiness bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ok, err := true, error(nil)
		if i, has := instance.(ready); readiness && has {
			ok, err = i.Ready(r.Context())
		} else if i, has := instance.(alive); !readiness && has {
			ok, err = i.Alive(r.Context())
		}
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		case !ok:
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		default:
			w.Write([]byte("OK"))
		}
	}
}

func environ() map[string]string {
	m := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}
`

// standInHTTP mirrors knative.dev/func-go/http's Start and Handler.
const standInHTTP = `// Package http stands in for knative.dev/func-go/http.
package http

import (
	"net/http"

	"knative.dev/func-go/internal/serve"
)

// Handler is an instance of an HTTP function.
type Handler interface {
	Handle(http.ResponseWriter, *http.Request)
}

// Start serves f. Taking Handler (func-go takes any and checks at run time)
// makes a wrong Handle signature a compile error here.
func Start(f Handler) error {
	return serve.Run(f, http.HandlerFunc(f.Handle))
}
`

// standInCE mirrors knative.dev/func-go/cloudevents's Start for the
// signature mp3converter's CloudEvent functions use.
const standInCE = `// Package cloudevents stands in for knative.dev/func-go/cloudevents.
package cloudevents

import (
	"context"
	"errors"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"knative.dev/func-go/internal/serve"
)

// Handler is an instance of a CloudEvent function with the signature
// mp3converter uses (func-go accepts several; docs/architecture.md fixes this one).
type Handler interface {
	Handle(context.Context, event.Event) (*event.Event, error)
}

// Start serves f: each request is decoded as a CloudEvent, handed to Handle,
// and the reply (if any) written back in binary mode.
func Start(f Handler) error {
	return serve.Run(f, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		reply, err := f.Handle(r.Context(), *e)
		if err != nil {
			status := http.StatusInternalServerError
			var res *cehttp.Result
			if errors.As(err, &res) {
				status = res.StatusCode
			}
			http.Error(w, err.Error(), status)
			return
		}
		if reply == nil {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		if err := cehttp.WriteResponseWriter(r.Context(), binding.ToMessage(reply), http.StatusOK, w); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	}))
}
`

// BuildEnv is the environment of the scaffold's go commands: the caller's,
// with CGO_ENABLED=0 pegged as func's goBuildEnvs does, the function's
// buildEnvs, and -mod=mod so `go mod tidy` may complete go.sum. Modules come
// through the configured GOPROXY, as they do for func's host builder: the
// build must not depend on what an earlier run left in the module cache.
// A non-empty modCache replaces GOMODCACHE (a cold cache, to prove that).
func BuildEnv(buildEnvs []FuncEnv, modCache string) []string {
	pegged := map[string]string{
		"CGO_ENABLED": "0",
		"GOWORK":      "off",
		"GOFLAGS":     "-mod=mod -modcacherw",
		"GOTOOLCHAIN": "local",
	}
	if modCache != "" {
		pegged["GOMODCACHE"] = modCache
	}
	for _, e := range buildEnvs {
		if e.Name != nil && e.Value != nil {
			pegged[*e.Name] = *e.Value
		}
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := pegged[k]; !ok {
			env = append(env, kv)
		}
	}
	for k, v := range pegged {
		env = append(env, k+"="+v)
	}
	return env
}

// BuildScaffold runs what func's goBuild runs in the scaffold directory:
// `go mod tidy`, then `go build -o out`. The output of a failing command is
// part of the error.
func BuildScaffold(ctx context.Context, dir, out string, env []string) error {
	for _, args := range [][]string{{"mod", "tidy"}, {"build", "-o", out}} {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = dir
		cmd.Env = env
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, buf.String())
		}
	}
	return nil
}
