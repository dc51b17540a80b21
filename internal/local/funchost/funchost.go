// Package host runs a function instance the way the func-go runtime does in
// its container: health endpoints, Start in the background with the
// configuration map, the same server timeouts, and on shutdown the HTTP
// server first, then the instance's Stop. The local stack hosts all
// functions in one process with it, so what runs here is what `func build`
// deploys.
package funchost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/prometheus/client_golang/prometheus"
)

// The hooks func-go looks for on an instance; each is optional.
type (
	httpHandler interface {
		Handle(http.ResponseWriter, *http.Request)
	}
	eventHandler interface {
		Handle(context.Context, event.Event) (*event.Event, error)
	}
	starter interface {
		Start(context.Context, map[string]string) error
	}
	stopper interface {
		Stop(context.Context) error
	}
	readinessReporter interface {
		Ready(context.Context) (bool, error)
	}
	livenessReporter interface {
		Alive(context.Context) (bool, error)
	}
)

// Timeouts as func-go sets them, so a handler that needs longer must extend
// its own deadlines here exactly as it must in a cluster.
const (
	readTimeout       = 30 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 30 * time.Second
	readHeaderTimeout = 2 * time.Second
	shutdownTimeout   = 30 * time.Second
)

// Function is one function instance to host.
type Function struct {
	Name     string
	Instance any               // what the function's New() returned
	Config   map[string]string // the map Start receives: the environment
	Listener net.Listener      // where to serve; LISTEN_ADDRESS in a container
	Logger   *slog.Logger

	// Concurrency is the Service's containerConcurrency: requests beyond it
	// wait in a queue of ten times as many, then get 503 (queue.go). 0: no
	// limit, as Knative's default.
	Concurrency int
	// QueueWait bounds a request's wait for a slot (default 10 minutes).
	QueueWait time.Duration
	// Metrics, when set, is served at GET /metrics beside the health paths (the local
	// stack serves every function's metrics on web's address).
	Metrics http.Handler
}

// metricsReporter is what a function's embedded kit telemetry adds to it.
type metricsReporter interface {
	MetricsGatherer() prometheus.Gatherer
}

// Gatherer returns the instance's Prometheus metrics, or nil when it has none.
func Gatherer(instance any) prometheus.Gatherer {
	if m, ok := instance.(metricsReporter); ok {
		return m.MetricsGatherer()
	}
	return nil
}

// Serve serves f until ctx is done or Start fails, then shuts down: the HTTP
// server first (in-flight requests finish), then the instance's Stop.
func Serve(ctx context.Context, f Function) error {
	log := f.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("function", f.Name)

	handler, err := newHandler(f.Instance)
	if err != nil {
		return fmt.Errorf("%s: %w", f.Name, err)
	}
	mux := http.NewServeMux()
	var ready, alive func(context.Context) (bool, error)
	if i, ok := f.Instance.(readinessReporter); ok {
		ready = i.Ready
	}
	if i, ok := f.Instance.(livenessReporter); ok {
		alive = i.Alive
	}
	mux.HandleFunc("/health/readiness", probe(ready, "READY"))
	mux.HandleFunc("/health/liveness", probe(alive, "ALIVE"))
	if f.Metrics != nil {
		mux.Handle("GET /metrics", f.Metrics)
	}
	if f.Concurrency > 0 {
		handler = newQueue(f.Concurrency, f.QueueWait).wrap(handler)
	}
	mux.Handle("/", handler)
	srv := &http.Server{
		Handler:           mux,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ReadHeaderTimeout: readHeaderTimeout,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	failed := make(chan error, 2)
	if s, ok := f.Instance.(starter); ok {
		go func() {
			if err := s.Start(ctx, f.Config); err != nil {
				failed <- fmt.Errorf("%s: start: %w", f.Name, err)
			}
		}()
	}
	go func() {
		if err := srv.Serve(f.Listener); !errors.Is(err, http.ErrServerClosed) {
			failed <- fmt.Errorf("%s: serve: %w", f.Name, err)
		}
	}()
	log.Debug("function serving", "address", f.Listener.Addr().String())

	var cause error
	select {
	case <-ctx.Done():
	case cause = <-failed:
		log.Error("function failed", "err", cause)
	}

	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	shutdownErr := srv.Shutdown(shutdownCtx)
	var stopErr error
	if s, ok := f.Instance.(stopper); ok {
		stopErr = s.Stop(shutdownCtx)
	}
	return errors.Join(cause, shutdownErr, stopErr)
}

// newHandler returns the instance's request handler: an HTTP function as it
// is, a CloudEvents function behind the decoding func-go does.
func newHandler(instance any) (http.Handler, error) {
	switch h := instance.(type) {
	case httpHandler:
		return http.HandlerFunc(h.Handle), nil
	case eventHandler:
		return eventReceiver{h}, nil
	default:
		return nil, errors.New("instance has no Handle method of a supported signature")
	}
}

// eventReceiver decodes a CloudEvent per request, calls Handle, and maps the
// result to a status the way func-go's CloudEvents runtime does: nil or an ACK
// is 200, a cehttp.Result carries its own status, anything else is 500.
type eventReceiver struct{ h eventHandler }

func (r eventReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "CloudEvents are POSTed", http.StatusMethodNotAllowed)
		return
	}
	in, err := cehttp.NewEventFromHTTPRequest(req)
	if err == nil {
		err = in.Validate()
	}
	if err != nil {
		http.Error(w, "not a valid CloudEvent: "+err.Error(), http.StatusBadRequest)
		return
	}

	out, result := r.h.Handle(req.Context(), *in)
	status := http.StatusOK
	var httpResult *cehttp.Result
	switch {
	case result == nil || protocol.IsACK(result):
	case cloudevents.ResultAs(result, &httpResult):
		status = httpResult.StatusCode
	default:
		status = http.StatusInternalServerError
	}
	if out != nil && status < 300 {
		if err := cehttp.WriteResponseWriter(req.Context(), (*binding.EventMessage)(out), status, w); err != nil {
			slog.Warn("writing reply event", "err", err)
		}
		return
	}
	w.WriteHeader(status)
	if httpResult != nil {
		fmt.Fprintf(w, httpResult.Format, httpResult.Args...)
	}
}

// probe answers a health path as func-go does: the word when healthy (or when
// the instance has no such hook), 503 when it says no, 500 when it cannot tell.
func probe(check func(context.Context) (bool, error), word string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		good, err := true, error(nil)
		if check != nil {
			good, err = check(r.Context())
		}
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		case !good:
			http.Error(w, "not "+word, http.StatusServiceUnavailable)
		default:
			fmt.Fprint(w, word)
		}
	}
}
