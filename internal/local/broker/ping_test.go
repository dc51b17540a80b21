package broker

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	duckv1 "knative.dev/pkg/apis/duck/v1"

	"mp3converter/knative"
	"mp3converter/knative/model"
)

// pingSink records the ticks it receives.
func pingSink(t *testing.T) (string, chan event.Event) {
	got := make(chan event.Event, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- *e
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, got
}

func to(u string) func(duckv1.Destination) (*url.URL, error) {
	return func(duckv1.Destination) (*url.URL, error) { return url.Parse(u) }
}

// The sweep's PingSource of knative/ fired by hand: the event the cluster's adapter sends.
func TestFireSendsThePingSourcesEvent(t *testing.T) {
	m, err := LoadManifestsFS(knative.Manifests)
	if err != nil {
		t.Fatal(err)
	}
	sink, got := pingSink(t)
	p, err := StartPings(m, to(sink), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	if err := p.Fire(context.Background(), "sweep"); err != nil {
		t.Fatal(err)
	}
	e := <-got
	if e.Type() != "dev.knative.sources.ping" || e.Source() != "/apis/v1/namespaces/mp3converter/pingsources/sweep" ||
		e.DataContentType() != "application/json" || string(e.Data()) != "{}" || e.ID() == "" {
		t.Fatalf("tick %v", e)
	}
	if err := p.Fire(context.Background(), "nightly"); err == nil {
		t.Fatal("fired a PingSource that does not exist")
	}
}

func TestPingSourceTicksOnItsSchedule(t *testing.T) {
	objs, err := (model.Decoder{}).DecodeFile("ping.yaml", []byte(`
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: fast, namespace: t}
spec:
  schedule: "@every 1s"
  dataBase64: aGk=
  contentType: text/plain
  ceOverrides: {extensions: {origin: test}}
  sink: {uri: "http://127.0.0.1:1/"}
`))
	if err != nil {
		t.Fatal(err)
	}
	sink, got := pingSink(t)
	p, err := StartPings(&model.Manifests{Objects: objs}, to(sink), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	for range 2 {
		select {
		case e := <-got:
			if e.Source() != "/apis/v1/namespaces/t/pingsources/fast" || string(e.Data()) != "hi" || e.Extensions()["origin"] != "test" {
				t.Fatalf("tick %v", e)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no tick")
		}
	}
}

func TestBadScheduleIsRefused(t *testing.T) {
	objs, _ := (model.Decoder{}).DecodeFile("ping.yaml", []byte(`
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: bad}
spec: {schedule: "now and then", sink: {uri: "http://127.0.0.1:1/"}}
`))
	if _, err := StartPings(&model.Manifests{Objects: objs}, to("http://127.0.0.1:1/"), slog.Default()); err == nil {
		t.Fatal("a bad schedule was accepted")
	}
}
