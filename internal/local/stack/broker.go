package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	duckv1 "knative.dev/pkg/apis/duck/v1"

	"mp3converter/internal/kit"
	"mp3converter/internal/local/broker"
	"mp3converter/knative"
)

// startBroker serves the local Broker on a loopback port. Its routing comes
// from the Broker and Triggers in knative/ (embedded in the binary, or
// cfg.Manifests); subscribers named by `ref: Service <name>` resolve to the
// local functions. RABBITMQ_URL makes it durable.
func startBroker(ctx context.Context, cfg Config, s *Stack, env map[string]string, grace time.Duration) (string, func() error, error) {
	manifests, err := broker.LoadManifestsFS(knative.Manifests)
	if cfg.Manifests != nil {
		manifests, err = broker.LoadManifestsFS(cfg.Manifests)
	}
	if err != nil {
		return "", nil, fmt.Errorf("knative manifests: %w", err)
	}
	// The Broker's deliveries are spans of the pipeline's traces, exported where the functions'
	// are (OTEL_EXPORTER_OTLP_ENDPOINT), under the service name broker.
	tracerProvider, shutdownTraces, err := kit.TracerProvider(ctx, "broker", env)
	if err != nil {
		return "", nil, fmt.Errorf("broker: %w", err)
	}
	urls := map[string]string{}
	for name, u := range s.Functions {
		urls[name] = u + "/"
	}
	b, err := broker.New(ctx, broker.Options{
		Manifests:      manifests,
		Resolve:        broker.ResolveServices(urls),
		RabbitMQURL:    env["RABBITMQ_URL"],
		NamePrefix:     cfg.BrokerPrefix,
		Logger:         s.log,
		TracerProvider: tracerProvider,
	})
	if err != nil {
		return "", nil, fmt.Errorf("broker: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Close(ctx)
		return "", nil, err
	}
	srv := &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	backend := "memory"
	if env["RABBITMQ_URL"] != "" {
		backend = "rabbitmq"
	}
	s.log.Info("broker started", "backend", backend, "ingress", "http://"+ln.Addr().String())
	ingress := "http://" + ln.Addr().String() + "/"

	// The PingSources of knative/ tick into the Broker (or a Service) as on the cluster.
	services := broker.ResolveServices(urls)
	s.pings, err = broker.StartPings(manifests, func(d duckv1.Destination) (*url.URL, error) {
		if r := d.Ref; r != nil && r.Kind == "Broker" && r.Name == "default" {
			return url.Parse(ingress)
		}
		return services(d)
	}, s.log)
	if err != nil {
		srv.Close()
		b.Close(ctx)
		return "", nil, err
	}
	return ingress, func() error {
		s.pings.Stop()
		sctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		srv.Shutdown(sctx)
		return errors.Join(b.Close(sctx), shutdownTraces(sctx))
	}, nil
}

// FirePing sends one tick of the named PingSource of knative/ now, as its
// schedule would (e.g. "sweep": one sweep run).
func (s *Stack) FirePing(ctx context.Context, name string) error {
	return s.pings.Fire(ctx, name)
}
