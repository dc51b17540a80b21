package broker

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
)

// brokerYAML is the Broker of the test manifests: quick retries.
const brokerYAML = `apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: test}
spec:
  delivery: {retry: 3, backoffPolicy: exponential, backoffDelay: PT0.01S, timeout: PT10S}
`

// trig is a Trigger of the test manifests; extra lines go under spec.
func trig(name, filter, uri string, extra ...string) string {
	return fmt.Sprintf(`---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: %s, namespace: test}
spec:
  broker: default
  filter: {attributes: %s}
  subscriber: {uri: %q}
%s
`, name, filter, uri, strings.Join(extra, "\n"))
}

func ids(ds []delivery, path string) []string {
	var out []string
	for _, d := range ds {
		if d.path == path {
			out = append(out, d.e.ID())
		}
	}
	return out
}

func TestRouting(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		s := newSink(t, nil)
		yaml := brokerYAML +
			trig("all-x", "{type: x}", s.URL+"/all-x") +
			trig("tenant-a", "{type: x, tenant: a}", s.URL+"/tenant-a") +
			trig("any-tenant", `{tenant: ""}`, s.URL+"/any-tenant") +
			// ref + relative uri: resolved against the ref's URL
			`---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: "y", namespace: test}
spec:
  broker: default
  filter: {attributes: {type: "y"}}
  subscriber:
    ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: sink}
    uri: "y"
`
		b := startBroker(t, backend, yaml, Options{Resolve: ResolveServices(map[string]string{"sink": s.URL + "/"})})

		for _, e := range []event.Event{
			newEvent("e1", "x", nil),
			newEvent("e2", "x", map[string]string{"tenant": "a"}),
			newEvent("e3", "y", nil),
			newEvent("e4", "x", map[string]string{"tenant": "b"}),
			newEvent("e5", "z", nil),
			// markers: after them, each queue has delivered everything before them
			newEvent("m1", "x", map[string]string{"tenant": "a"}),
			newEvent("m2", "y", map[string]string{"tenant": "a"}),
		} {
			b.mustSend(t, e)
		}
		want := map[string][]string{
			"/all-x":      {"e1", "e2", "e4", "m1"},
			"/tenant-a":   {"e2", "m1"},
			"/any-tenant": {"e2", "e4", "m1", "m2"},
			"/y":          {"e3", "m2"},
		}
		var got []delivery
		for path, w := range want {
			if !slices.ContainsFunc(got, func(d delivery) bool { return d.path == path && d.e.ID() == w[len(w)-1] }) {
				got = append(got, s.until(t, path, w[len(w)-1])...)
			}
		}
		for path, w := range want {
			if g := ids(got, path); !slices.Equal(g, w) {
				t.Errorf("%s got %v, want %v", path, g, w)
			}
		}
		// delivered in binary mode, extensions included, data intact
		for _, d := range got {
			if d.header.Get("Ce-Id") != d.e.ID() {
				t.Errorf("%s %s: not binary mode (Ce-Id %q)", d.path, d.e.ID(), d.header.Get("Ce-Id"))
			}
			var data map[string]string
			if err := d.e.DataAs(&data); err != nil || data["id"] != d.e.ID() {
				t.Errorf("%s %s: data %v (%v)", d.path, d.e.ID(), data, err)
			}
			if d.e.ID() == "e2" && d.e.Extensions()["tenant"] != "a" {
				t.Errorf("e2 lost its extension: %v", d.e.Extensions())
			}
		}
	})
}

func TestReplyRepublished(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		s := newSink(t, func(d delivery, w http.ResponseWriter, r *http.Request) {
			if d.path != "/first" {
				return
			}
			switch d.e.ID() {
			case "bad": // claims to be an event but has no id or source
				w.Header().Set("Ce-Specversion", "1.0")
				w.Header().Set("Ce-Type", "b")
				w.WriteHeader(http.StatusOK)
			case "plain": // an answer that is not an event
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"ok":true}`))
			default:
				reply := newEvent("reply-"+d.e.ID(), "b", map[string]string{"via": "first"})
				replyWith(t, w, reply, d.e.ID() == "structured")
			}
		})
		b := startBroker(t, backend, brokerYAML+
			trig("first", "{type: a}", s.URL+"/first")+
			trig("second", "{type: b}", s.URL+"/second"), Options{})

		for _, id := range []string{"bad", "plain", "binary", "structured"} {
			b.mustSend(t, newEvent(id, "a", nil))
		}
		got := s.until(t, "/second", "reply-structured")
		if g := ids(got, "/second"); !slices.Equal(g, []string{"reply-binary", "reply-structured"}) {
			t.Errorf("second got %v, want the two valid replies", g)
		}
		if g := ids(got, "/first"); !slices.Equal(g, []string{"bad", "plain", "binary", "structured"}) {
			t.Errorf("first got %v: a bad reply or a plain answer must not be retried", g)
		}
		for _, d := range got {
			if d.path == "/second" && d.e.Extensions()["via"] != "first" {
				t.Errorf("reply lost its extension: %v", d.e)
			}
		}
	})
}

func TestRetries(t *testing.T) {
	cases := []struct {
		name     string
		status   int // answer to the first two attempts; 0: close the connection
		attempts int // requests the subscriber sees for the event
	}{
		{"503 then success", http.StatusServiceUnavailable, 3},
		{"500 then success", http.StatusInternalServerError, 3},
		{"404 then success", http.StatusNotFound, 3},
		{"408 then success", http.StatusRequestTimeout, 3},
		{"409 then success", http.StatusConflict, 3},
		{"429 then success", http.StatusTooManyRequests, 3},
		{"transport error then success", 0, 3},
		{"400 dropped", http.StatusBadRequest, 1},
		{"403 dropped", http.StatusForbidden, 1},
		{"422 dropped", http.StatusUnprocessableEntity, 1},
		{"302 dropped", http.StatusFound, 1},
	}
	forEachBackend(t, func(t *testing.T, backend string) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				dls := newSink(t, nil)
				s := newSink(t, func(d delivery, w http.ResponseWriter, r *http.Request) {
					if d.e.ID() != "ev" || d.attempt > 2 {
						return
					}
					if tc.status == 0 {
						conn, _, err := http.NewResponseController(w).Hijack()
						if err == nil {
							conn.Close()
						}
						return
					}
					w.WriteHeader(tc.status)
				})
				b := startBroker(t, backend, brokerYAML+trig("t", "{type: x}", s.URL+"/t",
					fmt.Sprintf("  delivery: {retry: 5, backoffPolicy: linear, backoffDelay: PT0.01S, deadLetterSink: {uri: %q}}", dls.URL)), Options{})
				b.mustSend(t, newEvent("ev", "x", nil))
				b.mustSend(t, newEvent("marker", "x", nil))
				got := s.until(t, "/t", "marker")
				if n := len(ids(got, "/t")) - 1; n != tc.attempts {
					t.Errorf("subscriber saw %d requests for the event, want %d", n, tc.attempts)
				}
				select {
				case d := <-dls.got:
					t.Errorf("dead-letter sink got %s", d.e.ID())
				default:
				}
			})
		}
	})
}

func TestDeadLetter(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		dls := newSink(t, nil)
		s := newSink(t, func(d delivery, w http.ResponseWriter, r *http.Request) {
			switch d.e.ID() {
			case "busy":
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte("busy, try later"))
			case "big":
				w.WriteHeader(http.StatusInternalServerError)
				_, _ = w.Write([]byte(strings.Repeat("x", 5000)))
			case "hangup":
				if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
					conn.Close()
				}
			}
		})
		b := startBroker(t, backend, brokerYAML+trig("t", "{type: x}", s.URL+"/t",
			fmt.Sprintf("  delivery: {retry: 2, backoffDelay: PT0.01S, deadLetterSink: {uri: %q}}", dls.URL+"/dls")), Options{})
		for _, id := range []string{"busy", "big", "hangup"} {
			b.mustSend(t, newEvent(id, "x", map[string]string{"tenant": "a"}))
		}
		for _, want := range []struct {
			id   string
			code string
			data string // decoded knativeerrordata prefix
		}{
			{"busy", "503", "busy, try later"},
			{"big", "500", strings.Repeat("x", 768)}, // 1024 base64 characters
			{"hangup", "500", "dispatch error: "},
		} {
			d := dls.next(t)
			e := d.e
			if e.ID() != want.id || e.Type() != "x" || e.Extensions()["tenant"] != "a" {
				t.Fatalf("dead letter %v, want the original %s", e, want.id)
			}
			ext := e.Extensions()
			if ext[extErrorCode] != want.code || ext[extErrorDest] != s.URL+"/t" {
				t.Errorf("%s: knativeerrorcode %v knativeerrordest %v", want.id, ext[extErrorCode], ext[extErrorDest])
			}
			raw, _ := ext[extErrorData].(string)
			data, err := base64.StdEncoding.DecodeString(raw)
			if err != nil || !strings.HasPrefix(string(data), want.data) || len(raw) > maxErrorDataLen {
				t.Errorf("%s: knativeerrordata %q (%v)", want.id, data, err)
			}
			var body map[string]string
			if err := e.DataAs(&body); err != nil || body["id"] != want.id {
				t.Errorf("%s: dead letter data %v (%v)", want.id, body, err)
			}
		}
		got := s.until(t, "/t", "hangup")
		for _, id := range []string{"busy", "big"} {
			if n := slices.Index(ids(got, "/t"), id); n < 0 {
				t.Errorf("%s never reached the subscriber", id)
			}
		}
	})
}

// TestGivingUp: retries exhausted without a dead-letter sink, or with a
// failing one: the event is given up (RabbitMQ: parked in the broker's
// dead-letter queue) and the dispatcher goes on with the next event.
func TestGivingUp(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		s := newSink(t, func(d delivery, w http.ResponseWriter, r *http.Request) {
			if d.e.ID() != "marker" {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		})
		b := startBroker(t, backend, brokerYAML+
			trig("no-dls", "{type: x}", s.URL+"/no-dls", "  delivery: {retry: 1, backoffDelay: PT0.01S}")+
			trig("bad-dls", "{type: x}", s.URL+"/bad-dls",
				fmt.Sprintf("  delivery: {retry: 1, backoffDelay: PT0.01S, deadLetterSink: {uri: %q}}", s.URL+"/dls")), Options{})
		b.mustSend(t, newEvent("ev", "x", nil))
		b.mustSend(t, newEvent("marker", "x", nil))
		got := s.until(t, "/no-dls", "marker")
		if !slices.ContainsFunc(got, func(d delivery) bool { return d.path == "/bad-dls" && d.e.ID() == "marker" }) {
			got = append(got, s.until(t, "/bad-dls", "marker")...)
		}
		if g := ids(got, "/no-dls"); !slices.Equal(g, []string{"ev", "ev", "marker"}) {
			t.Errorf("no-dls got %v", g)
		}
		if g := ids(got, "/dls"); !slices.Equal(g, []string{"ev", "ev"}) {
			t.Errorf("failing dead-letter sink got %v, want 2 attempts", g)
		}
		if r, ok := b.backend.(*rabbit); ok {
			parked := rabbitTake(t, r.url, r.names.dlq, 2)
			for _, m := range parked {
				if m.MessageId != "ev" {
					t.Errorf("dead-letter queue holds %s", m.MessageId)
				}
			}
		}
	})
}

func TestPerAttemptTimeout(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		s := newSink(t, func(d delivery, w http.ResponseWriter, r *http.Request) {
			if d.e.ID() == "slow" && d.attempt == 1 {
				<-r.Context().Done() // until the dispatcher gives up on this attempt
			}
		})
		dls := newSink(t, nil)
		b := startBroker(t, backend, brokerYAML+trig("t", "{type: x}", s.URL+"/t",
			fmt.Sprintf("  delivery: {retry: 1, backoffDelay: PT0.01S, timeout: PT0.2S, deadLetterSink: {uri: %q}}", dls.URL)), Options{})
		b.mustSend(t, newEvent("slow", "x", nil))
		b.mustSend(t, newEvent("marker", "x", nil))
		got := s.until(t, "/t", "marker")
		if g := ids(got, "/t"); !slices.Equal(g, []string{"slow", "slow", "marker"}) {
			t.Errorf("subscriber got %v, want a retry after the timeout", g)
		}
		select {
		case d := <-dls.got:
			t.Errorf("dead-letter sink got %s", d.e.ID())
		default:
		}
	})
}

func TestIngress(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		s := newSink(t, nil)
		b := startBroker(t, backend, brokerYAML+trig("t", "{type: x}", s.URL+"/t"), Options{})
		valid := newEvent("ok", "x", nil)
		structured, _ := json.Marshal(valid)
		cases := []struct {
			name   string
			method string
			header map[string]string
			body   string
			want   int
		}{
			{"binary", "POST", map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "b1", "Ce-Type": "x", "Ce-Source": "/t", "Content-Type": "application/json"}, `{}`, 202},
			{"structured", "POST", map[string]string{"Content-Type": "application/cloudevents+json"}, string(structured), 202},
			{"no id", "POST", map[string]string{"Ce-Specversion": "1.0", "Ce-Type": "x", "Ce-Source": "/t"}, `{}`, 400},
			{"bad specversion", "POST", map[string]string{"Ce-Specversion": "9.9", "Ce-Id": "1", "Ce-Type": "x", "Ce-Source": "/t"}, `{}`, 400},
			{"not an event", "POST", map[string]string{"Content-Type": "application/json"}, `{"hello":1}`, 400},
			{"broken structured", "POST", map[string]string{"Content-Type": "application/cloudevents+json"}, `{"specversion":`, 400},
			{"GET", "GET", nil, "", 405},
			{"PUT", "PUT", nil, "", 405},
		}
		for _, tc := range cases {
			req, _ := http.NewRequest(tc.method, b.ingress, jsonBody(tc.body))
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body struct{ Error string }
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.want)
			}
			if tc.want >= 400 && (body.Error == "" || resp.Header.Get("Content-Type") != "application/json") {
				t.Errorf("%s: want a JSON error, got %q (%s)", tc.name, body.Error, resp.Header.Get("Content-Type"))
			}
		}
		got := s.until(t, "/t", "ok")
		if g := ids(got, "/t"); !slices.Equal(g, []string{"b1", "ok"}) {
			t.Errorf("subscriber got %v", g)
		}
	})
}

// Test202AfterQueueing: a 202 means the event is in the trigger's queue; a
// backend that cannot take it gets a 503.
func Test202AfterQueueing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		release := make(chan struct{})
		s := newSink(t, func(d delivery, w http.ResponseWriter, r *http.Request) {
			if d.e.ID() == "first" {
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}
		})
		b := startBroker(t, backend, brokerYAML+trig("t", "{type: x}", s.URL+"/t"), Options{queueSize: 1, publishWait: 200 * time.Millisecond})
		defer close(release)
		b.mustSend(t, newEvent("first", "x", nil))
		if d := s.next(t); d.e.ID() != "first" {
			t.Fatalf("got %s", d.e.ID())
		}
		// the only worker is busy with "first": "second" must wait in the queue
		b.mustSend(t, newEvent("second", "x", nil))
		if n := b.queueDepth(t, "t"); n != 1 {
			t.Errorf("after the 202, the queue holds %d events, want 1", n)
		}
		switch be := b.backend.(type) {
		case *memory: // queue of 1 is full
		case *rabbit: // RabbitMQ gone
			if err := be.close(); err != nil {
				t.Fatal(err)
			}
		}
		if code := b.send(t, newEvent("third", "x", nil)); code != http.StatusServiceUnavailable {
			t.Errorf("backend full or gone: status %d, want 503", code)
		}
	})
}

func TestParallelism(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		release := make(chan struct{})
		s := newSink(t, func(d delivery, w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		b := startBroker(t, backend, brokerYAML+strings.Replace(trig("t", "{type: x}", s.URL+"/t"),
			"namespace: test}", "namespace: test, annotations: {rabbitmq.eventing.knative.dev/parallelism: \"3\"}}", 1), Options{})
		for i := range 4 {
			b.mustSend(t, newEvent(fmt.Sprint("e", i), "x", nil))
		}
		// three deliveries at once; the fourth waits for a free worker
		for range 3 {
			s.next(t)
		}
		if n := b.queueDepth(t, "t"); n != 1 {
			t.Errorf("%d events queued with 3 in flight, want 1", n)
		}
		close(release)
		if d := s.next(t); d.e.ID() != "e3" {
			t.Errorf("got %s, want e3", d.e.ID())
		}
	})
}

// TestCloseGraceful: Close lets a delivery in flight finish when it can.
func TestCloseGraceful(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		release := make(chan struct{})
		finished := make(chan struct{})
		s := newSink(t, func(d delivery, w http.ResponseWriter, r *http.Request) {
			<-release
			close(finished)
		})
		b := startBroker(t, backend, brokerYAML+trig("t", "{type: x}", s.URL+"/t"), Options{})
		b.mustSend(t, newEvent("e", "x", nil))
		s.next(t)
		closed := make(chan error)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			closed <- b.Close(ctx)
		}()
		close(release)
		select {
		case err := <-closed:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(wait):
			t.Fatal("Close did not return")
		}
		select {
		case <-finished:
		default:
			t.Error("Close returned before the delivery in flight finished")
		}
		if code := b.send(t, newEvent("late", "x", nil)); code != http.StatusServiceUnavailable {
			t.Errorf("after Close: %d, want 503", code)
		}
	})
}

// TestCloseMakesNoMoreRetries: a closing broker finishes the attempt in
// flight but retries nothing, so a shutdown does not wait out the backoff of
// a subscriber that is failing (or stopping too); the event stays queued
// (RabbitMQ) for the next start.
func TestCloseMakesNoMoreRetries(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		s := newSink(t, func(d delivery, w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
		})
		b := startBroker(t, backend, brokerYAML+trig("t", "{type: x}", s.URL+"/t",
			"  delivery: {retry: 5, backoffPolicy: linear, backoffDelay: PT1H}"), Options{})
		b.mustSend(t, newEvent("e", "x", nil))
		s.next(t) // the first attempt was refused; the retry waits an hour
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if ctx.Err() != nil {
			t.Fatal("Close waited for the retry until its deadline")
		}
		select {
		case d := <-s.got:
			t.Errorf("attempt %d after Close", d.attempt)
		default:
		}
	})
}

func TestResolve(t *testing.T) {
	resolve := ResolveServices(map[string]string{"convert": "http://127.0.0.1:8081/base/"})
	ref := &duckv1.KReference{APIVersion: "serving.knative.dev/v1", Kind: "Service", Name: "convert"}
	cases := []struct {
		dest duckv1.Destination
		want string
	}{
		{duckv1.Destination{Ref: ref}, "http://127.0.0.1:8081/base/"},
		{duckv1.Destination{Ref: ref, URI: mustAPIURL(t, "sub/path")}, "http://127.0.0.1:8081/base/sub/path"},
		{duckv1.Destination{URI: mustAPIURL(t, "http://example.com/x")}, "http://example.com/x"},
	}
	for _, tc := range cases {
		u, err := resolveDestination(tc.dest, resolve)
		if err != nil || u.String() != tc.want {
			t.Errorf("%+v: %v (%v), want %s", tc.dest, u, err, tc.want)
		}
	}
	for _, bad := range []*duckv1.KReference{
		{APIVersion: "serving.knative.dev/v1", Kind: "Service", Name: "unknown"},
		{APIVersion: "v1", Kind: "Service", Name: "convert"},
	} {
		if u, err := resolveDestination(duckv1.Destination{Ref: bad}, resolve); err == nil {
			t.Errorf("%v resolved to %v", bad, u)
		}
	}
}

func TestBackoff(t *testing.T) {
	d := &dispatcher{t: &trigger{delay: 2 * time.Second}}
	for n, want := range map[int]time.Duration{1: 4 * time.Second, 2: 8 * time.Second, 5: 64 * time.Second} {
		if got := d.backoff(n); got != want {
			t.Errorf("exponential backoff(%d) = %s, want %s", n, got, want)
		}
	}
	d.t.linear = true
	for n, want := range map[int]time.Duration{1: 2 * time.Second, 3: 6 * time.Second} {
		if got := d.backoff(n); got != want {
			t.Errorf("linear backoff(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestMatches(t *testing.T) {
	attrs := map[string]string{"type": "x", "tenant": "a"}
	for _, tc := range []struct {
		filter map[string]string
		want   bool
	}{
		{nil, true},
		{map[string]string{"type": "x"}, true},
		{map[string]string{"type": "x", "tenant": "a"}, true},
		{map[string]string{"type": "x", "tenant": "b"}, false},
		{map[string]string{"tenant": ""}, true},
		{map[string]string{"other": ""}, false},
		{map[string]string{"type": "X"}, false},
	} {
		if got := matches(tc.filter, attrs); got != tc.want {
			t.Errorf("matches(%v) = %v", tc.filter, got)
		}
	}
}

func mustAPIURL(t *testing.T, s string) *apis.URL {
	u, err := apis.ParseURL(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
