package stack

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// stuckConverter stands in for convert with a conversion that never ends by
// itself, and records what happens to it, in order.
type stuckConverter struct {
	started chan struct{}
	once    sync.Once
	mu      sync.Mutex
	events  []string
}

func (c *stuckConverter) Handle(w http.ResponseWriter, r *http.Request) {
	c.once.Do(func() { close(c.started) })
	<-r.Context().Done()
	c.record("delivery cancelled")
}

func (c *stuckConverter) Stop(context.Context) error {
	c.record("stopped")
	return nil
}

func (c *stuckConverter) record(what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, what)
}

// TestCloseStopsDispatchingBeforeTheFunctions: with a delivery in flight that
// would never end, Close returns, and the Broker let go of the delivery
// before the function was stopped (a stopped function gets no deliveries,
// and no retries keep the shutdown waiting).
func TestCloseStopsDispatchingBeforeTheFunctions(t *testing.T) {
	conv := &stuckConverter{started: make(chan struct{})}
	s, err := Start(context.Background(), Config{
		Addr:          "127.0.0.1:0",
		DataDir:       t.TempDir(),
		Env:           map[string]string{"PATH": "/usr/bin:/bin", "MP3C_ADMIN_PASSWORD": "a long enough password", "BCRYPT_COST": "4"},
		Instances:     map[string]any{"convert": conv},
		ShutdownGrace: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.WaitReady(ctx); err != nil {
		s.Close()
		t.Fatal(err)
	}

	events, err := cloudevents.NewClientHTTP(cloudevents.WithTarget(strings.TrimRight(s.BrokerURL, "/")))
	if err != nil {
		t.Fatal(err)
	}
	e := cloudevents.NewEvent()
	e.SetID("0123456789abcdef01234567")
	e.SetType("dev.mp3converter.video.uploaded")
	e.SetSource("/functions/upload")
	if res := events.Send(ctx, e); !cloudevents.IsACK(res) {
		t.Fatalf("broker refused the event: %v", res)
	}
	select {
	case <-conv.started:
	case <-ctx.Done():
		t.Fatal("convert got no delivery")
	}

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	conv.mu.Lock()
	defer conv.mu.Unlock()
	if strings.Join(conv.events, ", ") != "delivery cancelled, stopped" {
		t.Fatalf("convert saw: %v; want the delivery cancelled by the Broker before the function stopped", conv.events)
	}
}
