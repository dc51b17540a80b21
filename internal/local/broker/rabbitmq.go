package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	amqp "github.com/rabbitmq/amqp091-go"
)

// The RabbitMQ backend, with eventing-rabbitmq's topology:
//
//	<ns>.<broker>        headers exchange (durable): every event, its context
//	                     attributes and extensions as string headers
//	<ns>.<broker>.<trig> durable queue per Trigger (quorum or classic, from the
//	                     RabbitmqBrokerConfig), bound with x-match=all and the
//	                     Trigger's filter attributes (an empty value binds as
//	                     "present"), dead-lettering to <ns>.<broker>._dlx
//	<ns>.<broker>._dlx   fanout exchange -> <ns>.<broker>._dlq, where the
//	                     events rest that were given up on (retries exhausted
//	                     without a dead-letter sink, or the sink failed too)
//
// A headers exchange rather than a topic one: a Trigger filters on any
// attributes, extensions included, by exact match, which is what a headers
// binding with x-match=all expresses; a topic routing key could carry only a
// fixed list of attributes. ("_" cannot occur in a Trigger name, so the
// dead-letter names never collide with a Trigger queue.)
//
// Messages are persistent and carry the event in structured mode (JSON body).
// The ingress waits for the publisher confirm. A dispatcher acknowledges a
// message only after the subscriber's final answer (retries happen in the
// dispatcher while the message stays unacked, as in eventing-rabbitmq), with
// prefetch = parallelism. A lost connection is re-established with backoff
// (NotifyClose) and the topology declared again; what was unacked is
// redelivered by RabbitMQ.
//
// Changing a Trigger's filter leaves its old binding in place (it cannot be
// found without the management API): delete the Trigger's queue then.

type names struct {
	exchange, dlx, dlq string
}

func newNames(prefix, namespace, broker string) names {
	base := prefix + namespace + "." + broker
	return names{exchange: base, dlx: base + "._dlx", dlq: base + "._dlq"}
}

func (n names) queue(trigger string) string { return n.exchange + "." + trigger }

type rabbit struct {
	url         string
	names       names
	queueType   string
	triggers    []*trigger
	publishWait time.Duration
	log         *slog.Logger

	mu      sync.Mutex
	sess    *session      // nil while disconnected
	changed chan struct{} // closed (and replaced) whenever sess changes

	stop context.CancelFunc
	done chan struct{}
}

// session is one connection with its confirm-mode publishing channel.
type session struct {
	conn       *amqp.Connection
	pub        *amqp.Channel
	connClosed chan *amqp.Error
	pubClosed  chan *amqp.Error
}

func (s *session) alive() bool { return !s.conn.IsClosed() && !s.pub.IsClosed() }

const (
	defaultPublishWait = 5 * time.Second
	minReconnectDelay  = 100 * time.Millisecond
	maxReconnectDelay  = 10 * time.Second
)

var errNotConnected = errors.New("not connected to RabbitMQ")

// newRabbit connects and declares the topology before returning, so that the
// ingress never publishes to a missing queue.
func newRabbit(ctx context.Context, url string, n names, queueType string, triggers []*trigger, publishWait time.Duration, log *slog.Logger) (*rabbit, error) {
	if _, err := amqp.ParseURI(url); err != nil {
		return nil, fmt.Errorf("broker: RabbitMQ URL: %w", err)
	}
	if publishWait <= 0 {
		publishWait = defaultPublishWait
	}
	r := &rabbit{url: url, names: n, queueType: queueType, triggers: triggers, publishWait: publishWait,
		log: log.With("backend", "rabbitmq", "exchange", n.exchange), changed: make(chan struct{}), done: make(chan struct{})}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s, err := r.connect()
	if err != nil {
		return nil, fmt.Errorf("broker: RabbitMQ: %w", err)
	}
	r.setSession(s)
	runCtx, stop := context.WithCancel(context.Background())
	r.stop = stop
	go r.run(runCtx, s)
	return r, nil
}

func (r *rabbit) connect() (*session, error) {
	conn, err := amqp.DialConfig(r.url, amqp.Config{
		Heartbeat:  10 * time.Second,
		Dial:       amqp.DefaultDial(10 * time.Second),
		Properties: amqp.Table{"connection_name": "mp3converter broker " + r.names.exchange},
	})
	if err != nil {
		return nil, err
	}
	if err := r.declare(conn); err != nil {
		_ = conn.Close()
		return nil, err
	}
	pub, err := conn.Channel()
	if err == nil {
		err = pub.Confirm(false)
	}
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return &session{conn: conn, pub: pub,
		connClosed: conn.NotifyClose(make(chan *amqp.Error, 1)),
		pubClosed:  pub.NotifyClose(make(chan *amqp.Error, 1))}, nil
}

// declare creates (or checks) the whole topology on a channel of its own.
func (r *rabbit) declare(conn *amqp.Connection) error {
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(r.names.exchange, amqp.ExchangeHeaders, true, false, false, false, nil); err != nil {
		return fmt.Errorf("exchange %s: %w", r.names.exchange, err)
	}
	if err := ch.ExchangeDeclare(r.names.dlx, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return fmt.Errorf("exchange %s: %w", r.names.dlx, err)
	}
	if _, err := ch.QueueDeclare(r.names.dlq, true, false, false, false, amqp.Table{amqp.QueueTypeArg: r.queueType}); err != nil {
		return fmt.Errorf("queue %s: %w", r.names.dlq, err)
	}
	if err := ch.QueueBind(r.names.dlq, "", r.names.dlx, false, nil); err != nil {
		return fmt.Errorf("binding %s: %w", r.names.dlq, err)
	}
	for _, t := range r.triggers {
		if err := r.declareTrigger(ch, t); err != nil {
			return err
		}
	}
	return nil
}

func (r *rabbit) declareTrigger(ch *amqp.Channel, t *trigger) error {
	q := r.names.queue(t.name)
	args := amqp.Table{amqp.QueueTypeArg: r.queueType, "x-dead-letter-exchange": r.names.dlx}
	if _, err := ch.QueueDeclare(q, true, false, false, false, args); err != nil {
		return fmt.Errorf("queue %s: %w", q, err)
	}
	binding := amqp.Table{"x-match": "all"}
	for k, v := range t.filter {
		if v == "" {
			binding[k] = nil // void: the header must be present
		} else {
			binding[k] = v
		}
	}
	if err := ch.QueueBind(q, "", r.names.exchange, false, binding); err != nil {
		return fmt.Errorf("binding %s: %w", q, err)
	}
	return nil
}

func (r *rabbit) setSession(s *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sess = s
	close(r.changed)
	r.changed = make(chan struct{})
}

// session returns the live session, waiting for one until ctx is done.
func (r *rabbit) session(ctx context.Context) (*session, error) {
	for {
		r.mu.Lock()
		s, changed := r.sess, r.changed
		r.mu.Unlock()
		if s != nil && s.alive() {
			return s, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, errNotConnected
		}
	}
}

// run watches the session and reconnects, with backoff, when it is lost.
func (r *rabbit) run(ctx context.Context, s *session) {
	defer close(r.done)
	for {
		select {
		case <-ctx.Done():
			r.setSession(nil)
			_ = s.conn.Close()
			return
		case err := <-s.connClosed:
			r.log.Warn("connection lost, reconnecting", "err", err)
		case err := <-s.pubClosed:
			if s.conn.IsClosed() {
				r.log.Warn("connection lost, reconnecting", "err", err)
			} else {
				r.log.Warn("publishing channel closed, reconnecting", "err", err)
			}
		}
		r.setSession(nil)
		_ = s.conn.Close()
		s = nil
		for delay := minReconnectDelay; s == nil; delay = min(2*delay, maxReconnectDelay) {
			if !sleep(ctx, delay) {
				return
			}
			var err error
			if s, err = r.connect(); err != nil {
				r.log.Warn("reconnect failed", "err", err, "retry_in", min(2*delay, maxReconnectDelay))
			}
		}
		r.log.Info("reconnected")
		r.setSession(s)
	}
}

func (r *rabbit) publish(ctx context.Context, e *event.Event) error {
	body, err := json.Marshal(e)
	if err != nil {
		return err
	}
	headers := amqp.Table{}
	for k, v := range attributes(e) {
		headers[k] = v
	}
	msg := amqp.Publishing{
		Headers:      headers,
		ContentType:  "application/cloudevents+json",
		DeliveryMode: amqp.Persistent,
		MessageId:    e.ID(),
		Timestamp:    time.Now(),
		Body:         body,
	}
	ctx, cancel := context.WithTimeout(ctx, r.publishWait)
	defer cancel()
	for {
		s, err := r.session(ctx)
		if err != nil {
			return err
		}
		dc, err := s.pub.PublishWithDeferredConfirmWithContext(ctx, r.names.exchange, "", false, false, msg)
		if err == nil {
			acked, werr := dc.WaitContext(ctx)
			switch {
			case werr != nil:
				return werr
			case acked:
				return nil
			}
			err = errors.New("publish nacked by RabbitMQ")
		}
		if s.alive() {
			return err
		}
		// The connection went away before the confirm: publish again on the
		// next one (a duplicate is possible; delivery is at least once).
	}
}

func (r *rabbit) consume(ctx context.Context, t *trigger, handle func(event.Event) outcome) {
	log := r.log.With("trigger", t.name)
	delay := minReconnectDelay
	for {
		s, err := r.session(ctx)
		if err != nil {
			return // ctx done
		}
		err = r.consumeOn(ctx, s, t, handle)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			delay = minReconnectDelay
			continue // connection lost: wait for the next session
		}
		log.Warn("consumer stopped, restarting", "err", err, "retry_in", delay)
		if !sleep(ctx, delay) {
			return
		}
		delay = min(2*delay, maxReconnectDelay)
	}
}

// consumeOn consumes t's queue on a channel of s until ctx is done or the
// channel closes, and returns once no delivery is running. Closing the channel
// hands what is still unacked back to RabbitMQ for redelivery.
func (r *rabbit) consumeOn(ctx context.Context, s *session, t *trigger, handle func(event.Event) outcome) error {
	ch, err := s.conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := r.declareTrigger(ch, t); err != nil {
		return err
	}
	if err := ch.Qos(t.parallelism, 0, false); err != nil {
		return err
	}
	deliveries, err := ch.Consume(r.names.queue(t.name), "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	runWorkers(ctx, t.parallelism, deliveries, func(d amqp.Delivery) { r.handle(t, d, handle) })
	if ctx.Err() == nil && !s.conn.IsClosed() {
		return errors.New("consumer cancelled by RabbitMQ")
	}
	return nil
}

func (r *rabbit) handle(t *trigger, d amqp.Delivery, handle func(event.Event) outcome) {
	log := r.log.With("trigger", t.name, "message_id", d.MessageId)
	var e event.Event
	if err := json.Unmarshal(d.Body, &e); err != nil {
		log.Error("unreadable message moved to the dead-letter queue", "queue", r.names.dlq, "err", err)
		_ = d.Nack(false, false)
		return
	}
	if d.Redelivered {
		log.Info("redelivered event", "id", e.ID(), "type", e.Type())
	}
	var err error
	switch handle(e) {
	case done:
		err = d.Ack(false)
	case requeue:
		err = d.Nack(false, true)
	case park:
		log.Warn("event moved to the dead-letter queue", "id", e.ID(), "type", e.Type(), "queue", r.names.dlq)
		err = d.Nack(false, false)
	case abandon:
		// left unacked: RabbitMQ redelivers it once the channel is closed
	}
	if err != nil {
		log.Warn("acknowledgement failed: RabbitMQ will redeliver the event", "id", e.ID(), "err", err)
	}
}

func (r *rabbit) close() error {
	r.stop()
	<-r.done
	return nil
}
