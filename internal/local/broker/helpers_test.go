package broker

import (
	"mp3converter/knative/model"

	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	amqp "github.com/rabbitmq/amqp091-go"
)

// wait bounds every wait of these tests for something that must happen.
const wait = 15 * time.Second

// backends are the backends to run the suite against: memory, and RabbitMQ
// when RABBITMQ_URL is set.
func backends() []string {
	if os.Getenv("RABBITMQ_URL") != "" {
		return []string{"memory", "rabbitmq"}
	}
	return []string{"memory"}
}

func forEachBackend(t *testing.T, f func(t *testing.T, backend string)) {
	for _, b := range backends() {
		t.Run(b, func(t *testing.T) { f(t, b) })
	}
}

func rabbitURL(t *testing.T) string {
	u := os.Getenv("RABBITMQ_URL")
	if u == "" {
		t.Skip("RABBITMQ_URL not set")
	}
	return u
}

// testLogger logs to the test's output until the test ends.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() }) // registered first: runs last
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func randomPrefix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "t" + hex.EncodeToString(b) + "."
}

// writeManifests writes yaml to a temp dir and loads it.
func writeManifests(t *testing.T, yaml string) *model.Manifests {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "m.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := LoadManifests(dir)
	if err != nil {
		t.Fatalf("LoadManifests: %v", err)
	}
	return m
}

// testBroker is a running broker with its ingress on an httptest server.
type testBroker struct {
	*Broker
	ingress string
	opts    Options
}

// startBroker starts a broker on backend for yaml. A RabbitMQ broker gets a
// fresh name prefix (unless opts has one), and its queues and exchanges are
// deleted at the end of the test.
func startBroker(t *testing.T, backend, yaml string, opts Options) *testBroker {
	t.Helper()
	if opts.Manifests == nil {
		opts.Manifests = writeManifests(t, yaml)
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	if backend == "rabbitmq" {
		opts.RabbitMQURL = rabbitURL(t)
		if opts.NamePrefix == "" {
			opts.NamePrefix = randomPrefix()
			t.Cleanup(func() { deleteTopology(t, opts) })
		}
	}
	b, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := httptest.NewServer(b)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &testBroker{Broker: b, ingress: srv.URL, opts: opts}
}

// deleteTopology removes the exchanges and queues of the broker of opts.
func deleteTopology(t *testing.T, opts Options) {
	conn, err := amqp.Dial(opts.RabbitMQURL)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	br, err := selectBroker(opts.Manifests, cmpOr(opts.BrokerName, "default"))
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	n := newNames(opts.NamePrefix, model.NamespaceOf(&br.ObjectMeta), br.Name)
	for _, tr := range opts.Manifests.Triggers() {
		if _, err := ch.QueueDelete(n.queue(tr.Name), false, false, false); err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
	}
	for _, err := range []error{
		func() error { _, err := ch.QueueDelete(n.dlq, false, false, false); return err }(),
		ch.ExchangeDelete(n.exchange, false, false),
		ch.ExchangeDelete(n.dlx, false, false),
	} {
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// newEvent is a valid event of type typ with JSON data.
func newEvent(id, typ string, ext map[string]string) event.Event {
	e := event.New()
	e.SetID(id)
	e.SetType(typ)
	e.SetSource("/test")
	e.SetSubject("subject-" + id)
	_ = e.SetData("application/json", map[string]string{"id": id})
	for k, v := range ext {
		e.SetExtension(k, v)
	}
	return e
}

// send POSTs e in binary mode to the ingress and returns the status.
func (b *testBroker) send(t *testing.T, e event.Event) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.ingress, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cehttp.WriteRequest(binding.WithForceBinary(context.Background()), binding.ToMessage(&e), req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func (b *testBroker) mustSend(t *testing.T, e event.Event) {
	t.Helper()
	if code := b.send(t, e); code != http.StatusAccepted {
		t.Fatalf("ingress answered %d for %s, want 202", code, e.ID())
	}
}

// delivery is one request a sink received.
type delivery struct {
	path    string
	e       event.Event
	attempt int // 1 for the first request with this path and event id
	header  http.Header
}

// sink is a subscriber on an httptest server: it records every request (as
// soon as it arrives) and answers with respond (default 200 without body).
type sink struct {
	URL      string
	got      chan delivery
	mu       sync.Mutex
	attempts map[string]int
}

type respondFunc func(d delivery, w http.ResponseWriter, r *http.Request)

func newSink(t *testing.T, respond respondFunc) *sink {
	s := &sink{got: make(chan delivery, 1000), attempts: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			t.Errorf("sink %s: not a CloudEvent: %v", r.URL.Path, err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.attempts[r.URL.Path+" "+e.ID()]++
		d := delivery{path: r.URL.Path, e: *e, attempt: s.attempts[r.URL.Path+" "+e.ID()], header: r.Header.Clone()}
		s.mu.Unlock()
		s.got <- d
		if respond != nil {
			respond(d, w, r)
		}
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// next returns the next request the sink received.
func (s *sink) next(t *testing.T) delivery {
	t.Helper()
	select {
	case d := <-s.got:
		return d
	case <-time.After(wait):
		t.Fatalf("no delivery within %s", wait)
		return delivery{}
	}
}

// until collects requests until one for event id at path arrives, which it returns last.
func (s *sink) until(t *testing.T, path, id string) []delivery {
	t.Helper()
	var all []delivery
	for {
		d := s.next(t)
		all = append(all, d)
		if d.path == path && d.e.ID() == id {
			return all
		}
	}
}

// replyWith writes e as the answer in binary or structured mode.
func replyWith(t *testing.T, w http.ResponseWriter, e event.Event, structured bool) {
	ctx := binding.WithForceBinary(context.Background())
	if structured {
		ctx = binding.WithForceStructured(context.Background())
	}
	if err := cehttp.WriteResponseWriter(ctx, binding.ToMessage(&e), http.StatusOK, w); err != nil {
		t.Errorf("reply: %v", err)
	}
}

// queueDepth is the number of events waiting (not in flight) in a trigger's queue.
func (b *testBroker) queueDepth(t *testing.T, trigger string) int {
	t.Helper()
	switch be := b.backend.(type) {
	case *memory:
		return len(be.queues[trigger])
	case *rabbit:
		return rabbitDepth(t, be.url, be.names.queue(trigger))
	}
	t.Fatalf("unknown backend %T", b.backend)
	return 0
}

func rabbitDepth(t *testing.T, url, queue string) int {
	t.Helper()
	q, err := rabbitChannel(t, url).QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q.Messages
}

// rabbitChannel opens a channel on a connection of its own, closed at the end of the test.
func rabbitChannel(t *testing.T, url string) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// rabbitTake consumes n messages from queue (acking them), waiting at most wait.
func rabbitTake(t *testing.T, url, queue string, n int) []amqp.Delivery {
	t.Helper()
	msgs, err := rabbitChannel(t, url).Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []amqp.Delivery
	deadline := time.After(wait)
	for len(out) < n {
		select {
		case m := <-msgs:
			out = append(out, m)
		case <-deadline:
			t.Fatalf("%s: %d messages within %s, want %d", queue, len(out), wait, n)
		}
	}
	return out
}

// dropConnection closes the current RabbitMQ connection, as a network failure would.
func (r *rabbit) dropConnection() {
	r.mu.Lock()
	s := r.sess
	r.mu.Unlock()
	if s != nil {
		_ = s.conn.Close()
	}
}

func jsonBody(s string) io.Reader { return bytes.NewBufferString(s) }

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
