package funchost

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// webFunction is an HTTP function whose Start waits for the test's go-ahead,
// so readiness can be observed before and after it.
type webFunction struct {
	release  chan struct{} // closed by the test: Start may finish
	finished chan struct{} // closed by Start when it has finished
	started  atomic.Bool
	stopped  atomic.Bool
	startErr error
	gotCfg   map[string]string
}

func (f *webFunction) Handle(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, "hello "+f.gotCfg["GREETING"])
}

func (f *webFunction) Start(ctx context.Context, cfg map[string]string) error {
	<-f.release
	f.gotCfg = cfg
	if f.startErr != nil {
		return f.startErr
	}
	f.started.Store(true)
	close(f.finished)
	return nil
}

func (f *webFunction) Stop(context.Context) error { f.stopped.Store(true); return nil }

func (f *webFunction) Ready(context.Context) (bool, error) { return f.started.Load(), nil }

// eventFunction is a CloudEvents function answering by event type.
type eventFunction struct{}

func (eventFunction) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	switch e.Type() {
	case "reply":
		out := event.New()
		out.SetID("r-" + e.ID())
		out.SetType("replied")
		out.SetSource("/test")
		return &out, nil
	case "transient":
		return nil, cehttp.NewResult(http.StatusServiceUnavailable, "try later")
	case "broken":
		return nil, errors.New("boom")
	}
	return nil, nil
}

func serve(t *testing.T, instance any, cfg map[string]string) (url string, done <-chan error, stop context.CancelFunc) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 1)
	go func() { errs <- Serve(ctx, Function{Name: "test", Instance: instance, Config: cfg, Listener: ln}) }()
	t.Cleanup(cancel)
	return "http://" + ln.Addr().String(), errs, cancel
}

func status(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestHTTPFunctionLifecycle(t *testing.T) {
	f := &webFunction{release: make(chan struct{}), finished: make(chan struct{})}
	url, done, stop := serve(t, f, map[string]string{"GREETING": "world"})

	if got := status(t, url+"/health/readiness"); got != http.StatusServiceUnavailable {
		t.Fatalf("readiness before Start finished = %d, want 503", got)
	}
	if got := status(t, url+"/health/liveness"); got != http.StatusOK {
		t.Fatalf("liveness without an Alive hook = %d, want 200", got)
	}
	close(f.release)
	<-f.finished
	if got := status(t, url+"/health/readiness"); got != http.StatusOK {
		t.Fatalf("readiness after Start = %d, want 200", got)
	}
	resp, err := http.Get(url + "/anything")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello world" {
		t.Fatalf("body = %q, want the configured greeting", body)
	}

	stop()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel = %v", err)
	}
	if !f.stopped.Load() {
		t.Fatal("Stop was not called on shutdown")
	}
}

func TestStartFailureEndsServe(t *testing.T) {
	f := &webFunction{release: make(chan struct{}), startErr: errors.New("bad key")}
	close(f.release)
	_, done, _ := serve(t, f, nil)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "bad key") {
			t.Fatalf("Serve = %v, want the start error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not end after Start failed")
	}
	if !f.stopped.Load() {
		t.Fatal("Stop was not called after Start failed")
	}
}

func TestEventFunctionResults(t *testing.T) {
	url, _, _ := serve(t, eventFunction{}, nil)
	client, err := cloudevents.NewClientHTTP()
	if err != nil {
		t.Fatal(err)
	}
	ctx := cloudevents.ContextWithTarget(context.Background(), url)

	send := func(typ string) (*event.Event, int) {
		e := event.New()
		e.SetID("1")
		e.SetType(typ)
		e.SetSource("/test")
		reply, result := client.Request(ctx, e)
		var httpResult *cehttp.Result
		if !cloudevents.ResultAs(result, &httpResult) {
			t.Fatalf("%s: no HTTP result: %v", typ, result)
		}
		return reply, httpResult.StatusCode
	}

	if reply, code := send("reply"); code != 200 || reply == nil || reply.Type() != "replied" || reply.ID() != "r-1" {
		t.Fatalf("reply: code %d event %v", code, reply)
	}
	if reply, code := send("quiet"); code != 200 || reply != nil {
		t.Fatalf("quiet: code %d event %v", code, reply)
	}
	if _, code := send("transient"); code != http.StatusServiceUnavailable {
		t.Fatalf("transient: code %d, want 503", code)
	}
	if _, code := send("broken"); code != http.StatusInternalServerError {
		t.Fatalf("broken: code %d, want 500", code)
	}

	resp, err := http.Post(url, "application/json", strings.NewReader(`{"not":"an event"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("non-event POST = %d, want 400", resp.StatusCode)
	}
}

func TestRejectsInstanceWithoutHandle(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = Serve(context.Background(), Function{Name: "empty", Instance: struct{}{}, Listener: ln})
	if err == nil || !strings.Contains(err.Error(), "no Handle") {
		t.Fatalf("Serve = %v, want a clear error", err)
	}
}
