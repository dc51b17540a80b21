package broker

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	duckv1 "knative.dev/pkg/apis/duck/v1"

	"mp3converter/knative/model"
)

// Pings is the local stand-in for Knative's PingSource adapter: it reads the
// PingSources of knative/ and sends each one's event to its sink on its
// schedule, as the cluster does (type dev.knative.sources.ping, source
// /apis/v1/namespaces/<ns>/pingsources/<name>, the spec's data).
type Pings struct {
	log     *slog.Logger
	sources map[string]*pingSource // by name
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

type pingSource struct {
	spec   *model.PingSource
	sink   *url.URL
	client cloudevents.Client
}

// StartPings resolves every PingSource's sink and fires each on its schedule
// until Stop. A tick that fails is logged; the next one comes all the same.
func StartPings(m *model.Manifests, resolve func(duckv1.Destination) (*url.URL, error), log *slog.Logger) (*Pings, error) {
	p := &Pings{log: log, sources: map[string]*pingSource{}}
	type scheduled struct {
		src  *pingSource
		next func(time.Time) time.Time
	}
	var all []scheduled
	for _, s := range m.PingSources() {
		sched, err := s.Spec.ParseSchedule()
		if err != nil {
			return nil, fmt.Errorf("pingsource %s: schedule %q: %w", s.Name, s.Spec.Schedule, err)
		}
		sink, err := resolve(s.Spec.Sink)
		if err != nil {
			return nil, fmt.Errorf("pingsource %s: sink: %w", s.Name, err)
		}
		proto, err := cehttp.New(cehttp.WithTarget(sink.String()), cehttp.WithClient(http.Client{Timeout: 30 * time.Second}))
		if err != nil {
			return nil, err
		}
		client, err := cloudevents.NewClient(proto)
		if err != nil {
			return nil, err
		}
		src := &pingSource{spec: s, sink: sink, client: client}
		p.sources[s.Name] = src
		all = append(all, scheduled{src, sched.Next})
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.stop = cancel
	for _, s := range all {
		p.wg.Go(func() {
			for {
				at := s.next(time.Now())
				t := time.NewTimer(time.Until(at))
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				if err := p.send(ctx, s.src, at); err != nil && ctx.Err() == nil {
					p.log.Warn("pingsource: tick not delivered", "pingsource", s.src.spec.Name, "sink", s.src.sink.String(), "err", err)
				}
			}
		})
		log.Info("pingsource ready", "pingsource", s.src.spec.Name, "schedule", s.src.spec.Spec.Schedule, "sink", s.src.sink.String())
	}
	return p, nil
}

// Fire sends one tick of the named PingSource now (tests, and whoever does
// not want to wait for the schedule).
func (p *Pings) Fire(ctx context.Context, name string) error {
	s, ok := p.sources[name]
	if !ok {
		return fmt.Errorf("no PingSource %q", name)
	}
	return p.send(ctx, s, time.Now())
}

// Stop ends the schedules and waits for ticks in flight.
func (p *Pings) Stop() {
	p.stop()
	p.wg.Wait()
}

func (p *Pings) send(ctx context.Context, s *pingSource, at time.Time) error {
	var id [16]byte
	_, _ = rand.Read(id[:])
	e := event.New()
	e.SetID(hex.EncodeToString(id[:]))
	e.SetType(model.PingSourceEventType)
	e.SetSource(s.spec.EventSource())
	e.SetTime(at.UTC())
	spec := s.spec.Spec
	switch {
	case spec.DataBase64 != "":
		b, err := base64.StdEncoding.DecodeString(spec.DataBase64)
		if err != nil {
			return err
		}
		e.SetDataContentType(spec.ContentType)
		e.DataEncoded = b
	case spec.Data != "":
		e.SetDataContentType(spec.ContentType)
		e.DataEncoded = []byte(spec.Data)
	}
	if o := spec.CloudEventOverrides; o != nil {
		for k, v := range o.Extensions {
			e.SetExtension(k, v)
		}
	}
	if res := s.client.Send(ctx, e); !cloudevents.IsACK(res) {
		return res
	}
	return nil
}
