// Package broker is the local stand-in for the cluster's RabbitMQ Knative
// Broker: it reads the Broker and Triggers of knative/ and implements their
// semantics for `mp3converter up`.
//
// The ingress (Broker.ServeHTTP) takes CloudEvents (binary or structured) and
// answers 202 once the event is queued for every matching Trigger. Each
// Trigger has a dispatcher that delivers its events in binary mode to the
// subscriber with the Trigger's delivery spec (or the Broker's): per-attempt
// timeout, retry with linear or exponential backoff, then the dead-letter
// sink. A reply event in a 2xx answer re-enters the broker.
//
// Two backends: in memory (default; bounded queues, nothing durable) and
// RabbitMQ (durable, with the topology eventing-rabbitmq uses; see rabbitmq.go).
// Delivery is at least once in both.
package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/cloudevents/sdk-go/v2/types"
	duckv1 "knative.dev/pkg/apis/duck/v1"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"mp3converter/knative/model"
)

// Options configures New.
type Options struct {
	// Manifests holds the Broker and its Triggers (LoadManifests).
	Manifests *model.Manifests
	// BrokerName selects the Broker: "name" or "namespace/name"; default "default".
	BrokerName string
	// Resolve maps a destination's ref to a URL (e.g. Service convert to the
	// local URL of the convert function). A uri alone is used as is; a uri
	// beside a ref is resolved against the ref's URL, as Knative does.
	Resolve func(duckv1.Destination) (*url.URL, error)
	// RabbitMQURL selects the RabbitMQ backend (amqp://...); empty: in memory.
	RabbitMQURL string
	// NamePrefix is prepended to every RabbitMQ exchange and queue name (tests).
	NamePrefix string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// HTTPClient delivers events; default: a client without overall timeout
	// (the delivery timeout bounds each attempt).
	HTTPClient *http.Client
	// TracerProvider traces each delivery (default: none). The trace goes on from the event's
	// traceparent extension to the subscriber's traceparent header (tracing.go).
	TracerProvider trace.TracerProvider

	queueSize   int           // memory: events per trigger queue (default 1000)
	publishWait time.Duration // RabbitMQ: how long a publish waits for a connection (default 5 s)
}

// Broker is a running local broker: an ingress handler and one dispatcher per Trigger.
type Broker struct {
	log      *slog.Logger
	backend  backend
	triggers []*trigger
	client   *http.Client

	stopConsuming context.CancelFunc // no new deliveries
	abort         context.CancelFunc // cancels deliveries in flight
	deliveryCtx   context.Context
	wg            sync.WaitGroup
	closeOnce     sync.Once
	closeErr      error
	closed        atomic.Bool
}

// ErrUnavailable is returned by Publish when the backend cannot take the event now.
var ErrUnavailable = errors.New("broker unavailable")

// maxEventBytes bounds an event accepted at the ingress or as a reply.
const maxEventBytes = 4 << 20

// New starts the broker named in o: it resolves every Trigger's subscriber
// and dead-letter sink, connects the backend (for RabbitMQ: first connection
// and topology, synchronously) and starts the dispatchers.
func New(ctx context.Context, o Options) (*Broker, error) {
	if o.Manifests == nil {
		return nil, errors.New("broker: no manifests")
	}
	if errs := validate(o.Manifests); errs != nil {
		return nil, errs
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{}
	}
	if o.TracerProvider == nil {
		o.TracerProvider = noop.NewTracerProvider()
	}
	if o.BrokerName == "" {
		o.BrokerName = "default"
	}
	br, err := selectBroker(o.Manifests, o.BrokerName)
	if err != nil {
		return nil, err
	}
	b := &Broker{log: o.Logger.With("broker", model.NamespaceOf(&br.ObjectMeta)+"/"+br.Name), client: o.HTTPClient}
	for _, t := range o.Manifests.Triggers() {
		if t.Spec.Broker != br.Name || model.NamespaceOf(&t.ObjectMeta) != model.NamespaceOf(&br.ObjectMeta) {
			continue
		}
		ct, err := compileTrigger(o.Manifests, t, o.Resolve)
		if err != nil {
			return nil, err
		}
		b.triggers = append(b.triggers, ct)
	}
	if o.RabbitMQURL == "" {
		b.backend = newMemory(b.triggers, o.queueSize, b.log)
	} else {
		queueType := "quorum"
		if ref := br.Spec.Config; ref != nil && ref.Kind == model.BrokerConfigKind {
			if c := o.Manifests.BrokerConfig(configNamespace(br, ref.Namespace), ref.Name); c != nil && c.Spec.QueueType != "" {
				queueType = c.Spec.QueueType
			}
		}
		names := newNames(o.NamePrefix, model.NamespaceOf(&br.ObjectMeta), br.Name)
		b.backend, err = newRabbit(ctx, o.RabbitMQURL, names, queueType, b.triggers, o.publishWait, b.log)
		if err != nil {
			return nil, err
		}
	}
	consumeCtx, stop := context.WithCancel(context.Background())
	b.deliveryCtx, b.abort = context.WithCancel(context.Background())
	b.stopConsuming = stop
	for _, t := range b.triggers {
		d := &dispatcher{t: t, client: b.client, tracer: o.TracerProvider.Tracer("mp3converter/broker"), publish: b.backend.publish, log: b.log.With("trigger", t.name), closing: consumeCtx.Done()}
		b.wg.Go(func() {
			b.backend.consume(consumeCtx, t, func(e event.Event) outcome { return d.deliver(b.deliveryCtx, e) })
		})
		b.log.Info("trigger ready", "trigger", t.name, "subscriber", t.subscriber.String(), "filter", t.filter, "parallelism", t.parallelism)
	}
	return b, nil
}

// ServeHTTP is the broker ingress: POST a CloudEvent (binary or structured).
// 202 once queued, 400 for a malformed event, 503 when the backend cannot
// take it now, 405 for other methods.
func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method not allowed: POST a CloudEvent")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxEventBytes)
	e, err := cehttp.NewEventFromHTTPRequest(r)
	if err == nil {
		err = e.Validate()
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "event larger than "+strconv.Itoa(maxEventBytes)+" bytes")
			return
		}
		writeError(w, http.StatusBadRequest, "malformed CloudEvent: "+err.Error())
		return
	}
	if err := b.Publish(r.Context(), *e); err != nil {
		b.log.Warn("ingress: event not queued", "id", e.ID(), "type", e.Type(), "err", err)
		writeError(w, http.StatusServiceUnavailable, "broker unavailable, try again")
		return
	}
	b.log.Debug("ingress: event queued", "id", e.ID(), "type", e.Type(), "source", e.Source())
	w.WriteHeader(http.StatusAccepted)
}

// Publish validates e and queues it for every matching Trigger, returning once
// it is stored (RabbitMQ: publisher confirm). Errors wrap ErrUnavailable when
// the backend cannot take it.
func (b *Broker) Publish(ctx context.Context, e event.Event) error {
	if err := e.Validate(); err != nil {
		return fmt.Errorf("invalid event: %w", err)
	}
	if b.closed.Load() {
		return fmt.Errorf("%w: closed", ErrUnavailable)
	}
	if err := b.backend.publish(ctx, &e); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// Close stops the dispatchers: no new deliveries start and no retry is made;
// attempts in flight may finish until ctx is done, then they are cancelled.
// Events not delivered are left unacknowledged (RabbitMQ redelivers them; in
// memory they are lost).
func (b *Broker) Close(ctx context.Context) error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		b.stopConsuming()
		done := make(chan struct{})
		go func() { b.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			b.log.Warn("close: cancelling deliveries in flight")
			b.abort()
			<-done
		}
		b.abort()
		b.closeErr = b.backend.close()
	})
	return b.closeErr
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// trigger is a Trigger ready for dispatch: resolved URLs, parsed delivery.
type trigger struct {
	name        string
	filter      map[string]string
	subscriber  *url.URL
	deadLetter  *url.URL // nil: none
	retry       int
	linear      bool
	delay       time.Duration
	timeout     time.Duration // per attempt; 0: none
	parallelism int
}

// defaultBackoffDelay applies when a delivery has retries but no backoffDelay.
const defaultBackoffDelay = 200 * time.Millisecond

func compileTrigger(m *model.Manifests, t *model.Trigger, resolve func(duckv1.Destination) (*url.URL, error)) (*trigger, error) {
	ct := &trigger{name: t.Name, parallelism: 1, delay: defaultBackoffDelay}
	if t.Spec.Filter != nil {
		ct.filter = t.Spec.Filter.Attributes
	}
	if v, ok := t.Annotations[model.ParallelismAnnotation]; ok {
		ct.parallelism, _ = strconv.Atoi(v) // validated
	}
	var err error
	if ct.subscriber, err = resolveDestination(t.Spec.Subscriber, resolve); err != nil {
		return nil, fmt.Errorf("trigger %s: subscriber: %w", t.Name, err)
	}
	d := m.EffectiveDelivery(t)
	if d == nil {
		return ct, nil
	}
	if d.Retry != nil {
		ct.retry = int(*d.Retry)
	}
	ct.linear = d.BackoffPolicy != nil && *d.BackoffPolicy == model.BackoffLinear
	if d.BackoffDelay != nil {
		ct.delay, _ = model.ParseISODuration(*d.BackoffDelay) // validated
	}
	if d.Timeout != nil {
		ct.timeout, _ = model.ParseISODuration(*d.Timeout)
	}
	if d.DeadLetterSink != nil {
		if ct.deadLetter, err = resolveDestination(*d.DeadLetterSink, resolve); err != nil {
			return nil, fmt.Errorf("trigger %s: deadLetterSink: %w", t.Name, err)
		}
	}
	return ct, nil
}

// resolveDestination turns a validated Destination into a URL: the ref through
// resolve, then the uri resolved against it (or the uri alone).
func resolveDestination(d duckv1.Destination, resolve func(duckv1.Destination) (*url.URL, error)) (*url.URL, error) {
	if d.Ref == nil {
		return d.URI.URL(), nil
	}
	if resolve == nil {
		return nil, fmt.Errorf("cannot resolve %s %s: no resolver", d.Ref.Kind, d.Ref.Name)
	}
	base, err := resolve(duckv1.Destination{Ref: d.Ref})
	if err != nil {
		return nil, err
	}
	if d.URI != nil {
		return base.ResolveReference(d.URI.URL()), nil
	}
	return base, nil
}

// ResolveServices returns a resolver for refs to Knative Services (any
// apiVersion serving.knative.dev/*) from their names to base URLs, e.g.
// {"convert": "http://127.0.0.1:8081/"}.
func ResolveServices(urls map[string]string) func(duckv1.Destination) (*url.URL, error) {
	return func(d duckv1.Destination) (*url.URL, error) {
		ref := d.Ref
		if ref == nil || ref.Kind != "Service" || !strings.HasPrefix(ref.APIVersion, "serving.knative.dev/") {
			return nil, fmt.Errorf("cannot resolve %v: only serving.knative.dev Services are known", ref)
		}
		raw, ok := urls[ref.Name]
		if !ok {
			return nil, fmt.Errorf("no local URL for Service %q", ref.Name)
		}
		return url.Parse(raw)
	}
}

// attributes are the event's context attributes and extensions as strings,
// without empty ones: what filters match and RabbitMQ routes on.
func attributes(e *event.Event) map[string]string {
	a := map[string]string{
		"specversion":     e.SpecVersion(),
		"id":              e.ID(),
		"type":            e.Type(),
		"source":          e.Source(),
		"subject":         e.Subject(),
		"dataschema":      e.DataSchema(),
		"datacontenttype": e.DataContentType(),
	}
	if !e.Time().IsZero() {
		a["time"] = types.Timestamp{Time: e.Time()}.String()
	}
	for k, v := range e.Extensions() {
		if s, err := types.Format(v); err == nil {
			a[k] = s
		}
	}
	for k, v := range a {
		if v == "" {
			delete(a, k)
		}
	}
	return a
}

// matches is Knative's exact-match attribute filter: every filter attribute
// must be present; an empty filter value accepts any non-empty value.
func matches(filter, attrs map[string]string) bool {
	for k, want := range filter {
		got, ok := attrs[k]
		if !ok || (want != "" && got != want) {
			return false
		}
	}
	return true
}
