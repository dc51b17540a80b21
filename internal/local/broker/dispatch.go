package broker

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// outcome tells the backend what to do with a message after a delivery.
type outcome int

const (
	// done: delivered, dropped (non-retryable answer) or dead-lettered: ack.
	done outcome = iota
	// requeue: could not finish (the reply could not be queued): put it back.
	requeue
	// park: given up and not dead-lettered: RabbitMQ moves it to the broker's
	// dead-letter queue; in memory it is dropped (logged).
	park
	// abandon: the broker is closing: leave it unacked for redelivery.
	abandon
)

// Knative's extensions on a dead-lettered event (knative.dev/eventing
// pkg/kncloudevents/attributes).
const (
	extErrorDest    = "knativeerrordest"
	extErrorCode    = "knativeerrorcode"
	extErrorData    = "knativeerrordata"
	maxErrorDataLen = 1024 // base64 characters, as eventing truncates
)

// dispatcher delivers the events of one Trigger.
type dispatcher struct {
	t       *trigger
	client  *http.Client
	tracer  trace.Tracer
	publish func(context.Context, *event.Event) error
	log     *slog.Logger
	closing <-chan struct{} // closed when the broker starts closing: no more retries
}

// attempt is the result of one HTTP request.
type attempt struct {
	status int    // 0: no HTTP answer (transport error or timeout)
	body   []byte // the answer's body when it is not 2xx (bounded)
	reply  *event.Event
	err    error
}

// retryable is eventing's SelectiveRetry (used by eventing-rabbitmq's
// dispatcher): transport errors, timeouts, 5xx, 404, 408, 409 and 429.
// Every other non-2xx answer is final.
func (a attempt) retryable() bool {
	switch s := a.status; {
	case s == 0, s >= 500:
		return true
	default:
		return s == http.StatusNotFound || s == http.StatusRequestTimeout || s == http.StatusConflict || s == http.StatusTooManyRequests
	}
}

func (a attempt) ok() bool { return a.status >= 200 && a.status < 300 }

// deliver runs the whole delivery of e: attempts with backoff, the reply back
// into the broker, the dead-letter sink. ctx is cancelled only when the broker
// closes, and then the event is abandoned (redelivered later), never dead-lettered.
//
// Retry-After is not honoured: the cluster ignores it too (eventing-rabbitmq's
// dispatcher uses sdk-go's retries; Knative's retryAfterMax is an alpha
// feature, off by default), and the local broker should behave the same.
func (d *dispatcher) deliver(ctx context.Context, e event.Event) outcome {
	ctx, span := d.startDelivery(ctx, e)
	defer span.End()
	log := d.log.With("id", e.ID(), "type", e.Type())
	a, ok := d.send(ctx, log, d.t.subscriber, &e)
	if !ok {
		return abandon
	}
	switch {
	case a.ok():
		if a.reply == nil {
			log.Debug("delivered", "status", a.status)
			return done
		}
		return d.forwardReply(ctx, log, a.reply)
	case !a.retryable():
		log.Warn("dropped: subscriber refused the event", "status", a.status, "subscriber", d.t.subscriber.String())
		return done
	}
	if d.t.deadLetter == nil {
		log.Error("delivery failed, retries exhausted, no dead-letter sink: giving up",
			"status", a.status, "err", a.err, "subscriber", d.t.subscriber.String(), "attempts", d.t.retry+1)
		return park
	}
	log.Warn("delivery failed, retries exhausted: dead-lettering",
		"status", a.status, "err", a.err, "subscriber", d.t.subscriber.String(), "attempts", d.t.retry+1)
	dl := deadLetterEvent(e, d.t.subscriber, a)
	dla, ok := d.send(ctx, log, d.t.deadLetter, &dl)
	switch {
	case !ok:
		return abandon
	case dla.ok():
		log.Info("dead-lettered", "sink", d.t.deadLetter.String())
		return done
	}
	log.Error("dead-letter sink failed too: giving up", "status", dla.status, "err", dla.err, "sink", d.t.deadLetter.String())
	return park
}

// send POSTs e to target until it succeeds, gets a final answer or runs out of
// retries, and returns the last attempt. ok is false when ctx ended first, or
// when a retry was due after the broker began closing: a closing broker
// finishes the attempts in flight but starts no new ones, so a shutdown never
// waits on retries to subscribers that are stopping too.
func (d *dispatcher) send(ctx context.Context, log *slog.Logger, target *url.URL, e *event.Event) (a attempt, ok bool) {
	for n := 0; ; n++ {
		a = d.post(ctx, target, e)
		if ctx.Err() != nil {
			return a, false
		}
		if a.ok() || !a.retryable() || n >= d.t.retry {
			return a, true
		}
		wait := d.backoff(n + 1)
		log.Info("retrying", "status", a.status, "err", a.err, "retry", n+1, "in", wait)
		if !d.sleep(ctx, wait) {
			return a, false
		}
	}
}

// backoff before retry n (1-based): delay*n (linear) or delay*2^n
// (exponential), as eventing-rabbitmq's dispatcher (sdk-go) computes it.
func (d *dispatcher) backoff(n int) time.Duration {
	if d.t.linear {
		return d.t.delay * time.Duration(n)
	}
	if n > 30 {
		n = 30
	}
	return d.t.delay * time.Duration(1<<n)
}

// post is one attempt: the event in binary mode, with the per-attempt timeout.
func (d *dispatcher) post(ctx context.Context, target *url.URL, e *event.Event) attempt {
	if d.t.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.t.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target.String(), nil)
	if err != nil {
		return attempt{err: err}
	}
	if err := cehttp.WriteRequest(binding.WithForceBinary(ctx), binding.ToMessage(e), req); err != nil {
		return attempt{err: err}
	}
	req.Header.Set("Prefer", "reply")
	propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := d.client.Do(req)
	if err != nil {
		return attempt{err: err}
	}
	defer resp.Body.Close()
	a := attempt{status: resp.StatusCode}
	if !a.ok() {
		a.body, _ = io.ReadAll(io.LimitReader(resp.Body, maxErrorDataLen))
		return a
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxEventBytes+1))
	if err != nil {
		// Delivered (2xx), but the reply, if any, is lost.
		d.log.Warn("reading the answer failed", "id", e.ID(), "err", err)
		return a
	}
	a.reply = d.parseReply(resp.Header, body, e)
	return a
}

// parseReply returns the CloudEvent in a 2xx answer, nil when there is none or
// it is malformed (logged and dropped).
func (d *dispatcher) parseReply(h http.Header, body []byte, original *event.Event) *event.Event {
	msg := cehttp.NewMessage(h, io.NopCloser(bytes.NewReader(body)))
	if msg.ReadEncoding() == binding.EncodingUnknown {
		return nil // a plain answer, not an event
	}
	var err error
	var reply *event.Event
	if len(body) > maxEventBytes {
		err = fmt.Errorf("larger than %d bytes", maxEventBytes)
	} else if reply, err = binding.ToEvent(context.Background(), msg); err == nil {
		err = reply.Validate()
	}
	if err != nil {
		d.log.Warn("malformed reply dropped", "id", original.ID(), "type", original.Type(), "err", err)
		return nil
	}
	return reply
}

// forwardReply queues the subscriber's reply in the broker. A reply that
// cannot be queued after a few tries puts the original event back: the
// subscriber will see it again (consumers are idempotent).
func (d *dispatcher) forwardReply(ctx context.Context, log *slog.Logger, reply *event.Event) outcome {
	var err error
	for n := 0; n < 3; n++ {
		if n > 0 && !d.sleep(ctx, d.backoff(n)) {
			return abandon
		}
		if err = d.publish(ctx, reply); err == nil {
			log.Debug("delivered; reply queued", "reply_id", reply.ID(), "reply_type", reply.Type())
			return done
		}
		if ctx.Err() != nil {
			return abandon
		}
	}
	log.Warn("reply not queued: event requeued", "reply_id", reply.ID(), "reply_type", reply.Type(), "err", err)
	return requeue
}

// deadLetterEvent is e with Knative's error extensions: the subscriber URL,
// the last status (500 for a transport error or timeout, as eventing's
// dispatcher reports it) and the answer's body in base64, cut to 1024
// characters (only when there is a body).
func deadLetterEvent(e event.Event, subscriber *url.URL, a attempt) event.Event {
	dl := e.Clone()
	code, body := a.status, a.body
	if code == 0 {
		code = http.StatusInternalServerError
		msg := "no answer"
		if a.err != nil {
			msg = a.err.Error()
			if errors.Is(a.err, context.DeadlineExceeded) {
				msg = "timeout: " + msg
			}
		}
		body = []byte("dispatch error: " + msg)
	}
	dl.SetExtension(extErrorDest, subscriber.String())
	dl.SetExtension(extErrorCode, code)
	if len(body) > 0 {
		data := base64.StdEncoding.EncodeToString(body)
		if len(data) > maxErrorDataLen {
			data = data[:maxErrorDataLen]
		}
		dl.SetExtension(extErrorData, data)
	}
	return dl
}

// sleep waits for wait before a retry; false when ctx ended or the broker
// began closing first.
func (d *dispatcher) sleep(ctx context.Context, wait time.Duration) bool {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-d.closing:
		return false
	case <-timer.C:
		return true
	}
}

// runWorkers passes the items of in to work from n goroutines until ctx is
// done or in is closed, and returns once every work call has returned.
func runWorkers[T any](ctx context.Context, n int, in <-chan T, work func(T)) {
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case item, ok := <-in:
					if !ok || ctx.Err() != nil {
						return
					}
					work(item)
				}
			}
		})
	}
	wg.Wait()
}

// sleep waits for d; false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
