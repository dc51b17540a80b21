package broker

import (
	"mp3converter/knative/model"

	"context"
	"net/http"
	"slices"
	"testing"
	"time"
)

// TestRabbitRestart: a broker closed with an event unacked (in flight) and
// one still queued; a new broker on the same queues delivers both.
func TestRabbitRestart(t *testing.T) {
	url := rabbitURL(t)
	first := make(chan struct{}, 1)
	s := newSink(t, func(d delivery, w http.ResponseWriter, r *http.Request) {
		if d.e.ID() == "in-flight" && d.attempt == 1 {
			first <- struct{}{}
			<-r.Context().Done() // never answers: the broker aborts it at Close
		}
	})
	m := writeManifests(t, brokerYAML+trig("t", "{type: x}", s.URL+"/t"))
	opts := Options{Manifests: m, NamePrefix: randomPrefix(), RabbitMQURL: url}
	t.Cleanup(func() { deleteTopology(t, opts) })

	b1 := startBroker(t, "rabbitmq", "", opts)
	b1.mustSend(t, newEvent("in-flight", "x", nil))
	select {
	case <-first:
	case <-time.After(wait):
		t.Fatal("first delivery did not start")
	}
	b1.mustSend(t, newEvent("queued", "x", nil))
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no grace: abort the delivery in flight
	if err := b1.Close(ctx); err != nil {
		t.Fatal(err)
	}

	startBroker(t, "rabbitmq", "", opts)
	got := s.until(t, "/t", "queued")
	if g := ids(got, "/t"); !slices.Contains(g, "queued") || !slices.Contains(g, "in-flight") {
		t.Errorf("after the restart the subscriber got %v, want in-flight again and queued", g)
	}
	// in-flight is redelivered before queued (it went back to the head of the queue)
	if g := ids(got, "/t"); g[len(g)-1] != "queued" || g[0] != "in-flight" {
		t.Errorf("order %v", g)
	}
}

// TestRabbitReconnect: the connection drops; the broker reconnects by itself,
// publishes and delivers again.
func TestRabbitReconnect(t *testing.T) {
	s := newSink(t, nil)
	b := startBroker(t, "rabbitmq", brokerYAML+trig("t", "{type: x}", s.URL+"/t"), Options{})
	b.mustSend(t, newEvent("before", "x", nil))
	if d := s.next(t); d.e.ID() != "before" {
		t.Fatalf("got %s", d.e.ID())
	}
	r := b.backend.(*rabbit)
	for i := range 2 { // twice: reconnecting must keep working
		r.dropConnection()
		id := []string{"after-1", "after-2"}[i]
		b.mustSend(t, newEvent(id, "x", nil)) // waits for the new connection
		// an event whose ack the drop cut off comes again first: at least once
		for _, d := range s.until(t, "/t", id) {
			if d.e.ID() != id && d.e.ID() != "before" && d.e.ID() != "after-1" {
				t.Errorf("unexpected %s", d.e.ID())
			}
		}
	}
}

// TestRabbitQueuedWithoutConsumer: events published while no dispatcher runs
// stay in the durable queue and are delivered by the next broker.
func TestRabbitQueuedWithoutConsumer(t *testing.T) {
	url := rabbitURL(t)
	s := newSink(t, nil)
	m := writeManifests(t, brokerYAML+trig("t", "{type: x}", s.URL+"/t")+trig("other", "{type: other}", s.URL+"/other"))
	opts := Options{Manifests: m, NamePrefix: randomPrefix(), RabbitMQURL: url}
	t.Cleanup(func() { deleteTopology(t, opts) })
	b1 := startBroker(t, "rabbitmq", "", opts)
	if err := b1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// a broker whose only trigger is "other" declares the exchange and publishes;
	// the queue of "t" still receives what matches it
	m2 := &model.Manifests{Objects: slices.DeleteFunc(slices.Clone(m.Objects), func(o *model.Object) bool {
		return o.Kind == "Trigger" && o.Name == "t"
	})}
	opts2 := opts
	opts2.Manifests = m2
	b2 := startBroker(t, "rabbitmq", "", opts2)
	b2.mustSend(t, newEvent("while-down", "x", nil))
	if n := rabbitDepth(t, url, newNames(opts.NamePrefix, "test", "default").queue("t")); n != 1 {
		t.Errorf("queue t holds %d events, want 1", n)
	}
	startBroker(t, "rabbitmq", "", opts)
	s.until(t, "/t", "while-down")
}
