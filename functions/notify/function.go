// Package function is the notify function of mp3converter: it emails the owner of a job
// when its MP3 is ready or its conversion failed, and it is the dead-letter sink of
// video.uploaded events, so that no job stays converting forever.
package function

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	gomail "github.com/wneessen/go-mail"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Event types notify consumes.
const (
	typeUploaded  = "dev.mp3converter.video.uploaded"
	typeConverted = "dev.mp3converter.mp3.converted"
	typeFailed    = "dev.mp3converter.conversion.failed"
)

// deadLetterReason is the job's reason when the broker gave up on its video.uploaded event.
const deadLetterReason = "conversion could not be completed, please upload again"

// Settings are the environment variables notify reads (README, "Configuration").
var Settings = []Setting{
	{Name: "MONGODB_URI", Kind: KindText, Required: true, Meaning: "the MongoDB that holds the videos and mp3s databases"},
	{Name: "MONGODB_DB_PREFIX", Kind: KindText, Meaning: "prefix of the database names, so several stacks can share one MongoDB"},
	{Name: "SMTP_URL", Kind: KindText, Meaning: "smtp://user:pass@host:587 (STARTTLS when offered) or smtps://...:465; unset: .eml files in MAIL_DIR"},
	{Name: "MAIL_FROM", Kind: KindText, Default: "mp3converter <no-reply@localhost>", Meaning: "the sender of the emails"},
	{Name: "MAIL_DIR", Kind: KindText, Default: "outbox", Meaning: "the outbox when SMTP_URL is unset"},
	{Name: "PUBLIC_URL", Kind: KindURL, Default: "http://127.0.0.1:8080", Meaning: "base of the download links in the emails"},
	{Name: "SMTP_TIMEOUT", Kind: KindDuration, Default: "30s", Min: "1s", Meaning: "bound of one whole send"},
}

// Function is the notify CloudEvents function.
type Function struct {
	log *slog.Logger
	lc  lifecycle[runtime]
}

// New returns a notify function that answers 503 until Start has run.
func New() *Function {
	return &Function{log: slog.Default().With("function", "notify")}
}

// Handle emails the user about a finished or failed conversion, and fails the job of a
// dead-lettered video.uploaded event. It never replies with an event. A transient failure
// (MongoDB or SMTP unavailable) returns 503 so that the broker retries; everything else
// (done, duplicate, bad data, permanent SMTP rejection) returns 200.
func (f *Function) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	rt := f.lc.load()
	if rt == nil {
		return nil, cehttp.NewResult(503, "notify is starting, try again")
	}
	log := f.log.With("event_id", e.ID(), "event_type", e.Type(), "event_subject", e.Subject())

	var n notice
	switch e.Type() {
	case typeConverted:
		var d convertedData
		if err := decode(e, &d); err != nil {
			log.Error("event data does not match the mp3.converted schema, dropped", "err", err)
			return nil, nil
		}
		n = notice{kind: kindReady, videoFID: d.VideoFID, to: d.Username, name: d.Filename,
			mp3FID: d.MP3FID, duration: d.DurationSeconds}
	case typeFailed:
		var d failedData
		if err := decode(e, &d); err != nil {
			log.Error("event data does not match the conversion.failed schema, dropped", "err", err)
			return nil, nil
		}
		n = notice{kind: kindFailed, videoFID: d.VideoFID, to: d.Username, name: d.Filename, reason: d.Reason}
	case typeUploaded:
		// Only the broker's dead-letter sink routes video.uploaded here.
		ext := e.Extensions()
		log = log.With("knativeerrorcode", ext["knativeerrorcode"], "knativeerrordest", ext["knativeerrordest"])
		log.Warn("video.uploaded dead-lettered: the broker gave up on its conversion")
		var d uploadedData
		if err := decode(e, &d); err != nil {
			log.Error("event data does not match the video.uploaded schema, dropped", "err", err)
			return nil, nil
		}
		var ok bool
		var err error
		if n, ok, err = rt.deadLetter(ctx, log, d); err != nil {
			log.Error("storage unavailable", "err", err)
			return nil, cehttp.NewResult(503, "storage unavailable, try again")
		} else if !ok {
			return nil, nil
		}
	default:
		log.Warn("unexpected event type, dropped")
		return nil, nil
	}
	return nil, rt.notify(ctx, log.With("video_fid", n.videoFID, "kind", n.kind), n)
}

// Start reads the configuration. It fails only on bad configuration: MongoDB and SMTP are
// reached lazily, so the function comes up while they are down and recovers by itself.
func (f *Function) Start(ctx context.Context, cfg map[string]string) error {
	rt, err := newRuntime(cfg)
	if err != nil {
		return err
	}
	if old := f.lc.start(rt); old != nil {
		_ = old.client.Disconnect(ctx)
	}
	mode := "outbox " + rt.mailDir
	if rt.smtp != nil {
		mode = "smtp " + rt.smtpAddr
	}
	f.log.Info("started", "mail", mode, "mail_from", rt.from, "public_url", rt.publicURL, "db_prefix", rt.prefix)
	return nil
}

// Stop disconnects from MongoDB.
func (f *Function) Stop(ctx context.Context) error {
	rt := f.lc.stop()
	if rt == nil {
		return nil
	}
	return rt.client.Disconnect(ctx)
}

// Ready reports whether Start has finished.
func (f *Function) Ready(ctx context.Context) (bool, error) {
	return f.lc.started(), nil
}

// Alive reports that the process is alive.
func (f *Function) Alive(ctx context.Context) (bool, error) {
	return true, nil
}

// runtime is the configuration and clients that Start builds.
type runtime struct {
	client    *mongo.Client
	prefix    string
	smtp      *gomail.Client // nil: write .eml files into mailDir
	smtpAddr  string         // scheme://host:port, for logs (never the credentials)
	from      string
	mailDir   string
	publicURL string
	timeout   time.Duration
	staleAt   time.Duration // a claim older than this whose send never finished may be taken over

	// locks serialise this process's writes to one job. MongoDB applies findAndModify
	// atomically, which is what makes the claim safe across replicas; FerretDB (the local
	// stack's MongoDB) reads and writes in two steps (FerretDB issues #2168, #3040), so
	// within a process the claim must not race itself.
	locks [64]sync.Mutex
}

func newRuntime(cfg map[string]string) (*runtime, error) {
	set, err := loadSettings(Settings, cfg)
	if err != nil {
		return nil, err
	}
	rt := &runtime{
		prefix:    set.text("MONGODB_DB_PREFIX"),
		from:      set.text("MAIL_FROM"),
		mailDir:   set.text("MAIL_DIR"),
		publicURL: set.text("PUBLIC_URL"),
		timeout:   set.duration("SMTP_TIMEOUT"),
	}
	// A send takes at most about SMTP_TIMEOUT (see newSMTPClient): a claim this old whose
	// send never settled belongs to a process that died mid-send.
	rt.staleAt = 2*rt.timeout + time.Minute
	if _, err := mail.ParseAddress(rt.from); err != nil {
		return nil, fmt.Errorf("MAIL_FROM %q is not an email address: %w", rt.from, err)
	}
	if s := set.text("SMTP_URL"); s != "" {
		c, addr, err := newSMTPClient(s, rt.timeout)
		if err != nil {
			return nil, err
		}
		rt.smtp, rt.smtpAddr = c, addr
	}
	cli, err := mongo.Connect(options.Client().ApplyURI(set.text("MONGODB_URI")).
		SetServerSelectionTimeout(5 * time.Second).SetConnectTimeout(5 * time.Second).SetTimeout(15 * time.Second))
	if err != nil {
		return nil, fmt.Errorf("MONGODB_URI: %w", err)
	}
	rt.client = cli
	return rt, nil
}

// newSMTPClient builds a go-mail client from smtp://user:pass@host:587 (STARTTLS when
// offered) or smtps://user:pass@host:465 (implicit TLS). Errors never contain the password.
func newSMTPClient(raw string, timeout time.Duration) (*gomail.Client, string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the URL, credentials included
		}
		return nil, "", fmt.Errorf("SMTP_URL is not a valid URL: %v", err)
	}
	port := 587
	if u.Scheme == "smtps" {
		port = 465
	} else if u.Scheme != "smtp" {
		return nil, "", fmt.Errorf("SMTP_URL: scheme %q is not smtp or smtps", u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, "", errors.New("SMTP_URL has no host")
	}
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil || port < 1 || port > 65535 {
			return nil, "", fmt.Errorf("SMTP_URL: bad port %q", p)
		}
	}
	skipVerify := false
	for k, v := range u.Query() {
		switch k {
		case "insecure_skip_verify":
			if skipVerify, err = strconv.ParseBool(v[0]); err != nil {
				return nil, "", fmt.Errorf("SMTP_URL: insecure_skip_verify=%q is not a boolean", v[0])
			}
		default:
			return nil, "", fmt.Errorf("SMTP_URL: unknown parameter %q", k)
		}
	}
	opts := []gomail.Option{
		gomail.WithPort(port),
		// go-mail applies its timeout to each of four stages (dial; greeting, TLS and AUTH;
		// MAIL to the end of DATA; RSET and QUIT): a quarter each bounds the whole send by
		// SMTP_TIMEOUT, within the Triggers' delivery timeout.
		gomail.WithTimeout(max(timeout/4, time.Second)),
		gomail.WithTLSConfig(&tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12,
			InsecureSkipVerify: skipVerify}), //nolint:gosec // opt-in knob for self-signed test servers
	}
	if u.Scheme == "smtps" {
		opts = append(opts, gomail.WithSSL())
	} else {
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
	}
	if user := u.User.Username(); user != "" {
		pass, _ := u.User.Password()
		// Auto-discovery never sends PLAIN/LOGIN credentials over an unencrypted connection.
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(user), gomail.WithPassword(pass))
	}
	c, err := gomail.NewClient(u.Hostname(), opts...)
	if err != nil {
		return nil, "", fmt.Errorf("SMTP_URL: %w", err)
	}
	return c, fmt.Sprintf("%s://%s:%d", u.Scheme, u.Hostname(), port), nil
}

// Event data, as events/*.schema.json describe it.
type uploadedData struct {
	VideoFID    string `json:"video_fid"`
	Username    string `json:"username"`
	Filename    string `json:"filename"`
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
}

type convertedData struct {
	VideoFID        string  `json:"video_fid"`
	MP3FID          string  `json:"mp3_fid"`
	Username        string  `json:"username"`
	Filename        string  `json:"filename"`
	Size            int64   `json:"size"`
	DurationSeconds float64 `json:"duration_seconds"`
}

type failedData struct {
	VideoFID string `json:"video_fid"`
	Username string `json:"username"`
	Filename string `json:"filename"`
	Reason   string `json:"reason"`
}

// decode reads the event's JSON data and checks what notify relies on against the schema.
// Unknown fields are ignored.
func decode(e event.Event, v any) error {
	if len(e.Data()) == 0 {
		return errors.New("no data")
	}
	if err := e.DataAs(v); err != nil {
		return err
	}
	var fid, user, name string
	switch d := v.(type) {
	case *uploadedData:
		fid, user, name = d.VideoFID, d.Username, d.Filename
		if d.ContentType == "" || d.Size < 1 {
			return errors.New("content_type or size missing")
		}
	case *convertedData:
		fid, user, name = d.VideoFID, d.Username, d.Filename
		if !isHexID(d.MP3FID) || d.Size < 1 || !(d.DurationSeconds > 0) {
			return errors.New("mp3_fid, size or duration_seconds missing or invalid")
		}
	case *failedData:
		fid, user, name = d.VideoFID, d.Username, d.Filename
		if d.Reason == "" || len(d.Reason) > 1000 {
			return errors.New("reason missing or too long")
		}
	}
	switch {
	case !isHexID(fid):
		return errors.New("video_fid is not a 24-digit hex id")
	case len(user) < 3 || len(user) > 255:
		return errors.New("username missing or invalid")
	case name == "" || len(name) > 260:
		return errors.New("filename missing or too long")
	}
	return nil
}

// job is the part of a jobs document notify reads.
type job struct {
	Username        string   `bson:"username"`
	Filename        string   `bson:"filename"`
	State           JobState `bson:"state"`
	Reason          string   `bson:"reason"`
	MP3FID          string   `bson:"mp3_fid"`
	DurationSeconds float64  `bson:"duration_seconds"`
}

// lock takes this process's lock on one job's document and returns its unlock.
func (rt *runtime) lock(fid string) func() {
	h := fnv.New32a()
	_, _ = h.Write([]byte(fid))
	m := &rt.locks[h.Sum32()%uint32(len(rt.locks))]
	m.Lock()
	return m.Unlock
}

func (rt *runtime) jobs() *mongo.Collection {
	return rt.client.Database(rt.prefix + "videos").Collection("jobs")
}

// deadLetter fails the job of a video.uploaded event the broker gave up on (unless it is
// already done or failed) and returns the email its owner should get. ok is false when
// there is nothing to send (no such job).
func (rt *runtime) deadLetter(ctx context.Context, log *slog.Logger, d uploadedData) (n notice, ok bool, err error) {
	oid, err := bson.ObjectIDFromHex(d.VideoFID)
	if err != nil {
		return n, false, nil // decode checked the pattern
	}
	unlock := rt.lock(d.VideoFID)
	res, err := rt.jobs().UpdateOne(ctx,
		bson.D{{Key: "_id", Value: oid}, {Key: "state", Value: bson.D{{Key: "$nin", Value: bson.A{JobDone, JobFailed}}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: JobFailed}, {Key: "reason", Value: deadLetterReason},
			{Key: "updated_at", Value: time.Now().UTC()}}}})
	unlock()
	if err != nil {
		return n, false, err
	}
	var j job
	if err := rt.jobs().FindOne(ctx, bson.D{{Key: "_id", Value: oid}}).Decode(&j); errors.Is(err, mongo.ErrNoDocuments) {
		log.Warn("dead letter for an unknown job, nothing to do", "video_fid", d.VideoFID)
		return n, false, nil
	} else if err != nil {
		return n, false, err
	}
	if res.ModifiedCount > 0 {
		log.Info("job failed: its conversion was dead-lettered", "video_fid", d.VideoFID)
	}
	n = notice{videoFID: d.VideoFID, to: d.Username}
	switch j.State {
	case JobDone: // the conversion did finish: the user gets the ready email
		n.kind, n.mp3FID, n.duration = kindReady, orDefault(j.MP3FID, d.VideoFID), j.DurationSeconds
		n.name, err = rt.mp3Name(ctx, oid, orDefault(j.Filename, d.Filename))
		if err != nil {
			return n, false, err
		}
	case JobFailed:
		n.kind, n.name, n.reason = kindFailed, orDefault(j.Filename, d.Filename), orDefault(j.Reason, deadLetterReason)
	default:
		log.Error("job neither done nor failed after a dead letter", "video_fid", d.VideoFID, "state", j.State)
		return n, false, nil
	}
	return n, true, nil
}

// mp3Name is the stored MP3's filename, or the video's base name + ".mp3" when it has none.
func (rt *runtime) mp3Name(ctx context.Context, oid bson.ObjectID, video string) (string, error) {
	var f struct {
		Filename string `bson:"filename"`
	}
	err := rt.client.Database(rt.prefix+"mp3s").Collection("fs.files").
		FindOne(ctx, bson.D{{Key: "_id", Value: oid}}).Decode(&f)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return "", err
	}
	if f.Filename != "" {
		return f.Filename, nil
	}
	return strings.TrimSuffix(video, filepath.Ext(video)) + ".mp3", nil
}

// notify claims the job's notification, sends the email and settles the claim.
func (rt *runtime) notify(ctx context.Context, log *slog.Logger, n notice) error {
	oid, err := bson.ObjectIDFromHex(n.videoFID)
	if err != nil {
		return nil // decode checked the pattern
	}
	claim, outcome, err := rt.claim(ctx, oid)
	switch {
	case err != nil:
		log.Error("storage unavailable", "err", err)
		return cehttp.NewResult(503, "storage unavailable, try again")
	case outcome == noJob:
		log.Warn("no such job, not emailing")
		return nil
	case outcome == notified:
		log.Info("already notified, nothing to send")
		return nil
	case outcome == inFlight:
		// The other send may still fail and release its claim: the broker must come back.
		log.Info("another delivery is sending this email, asking for a retry")
		return cehttp.NewResult(503, "notification in progress, try again")
	}
	// The claim is settled even when the request's context is gone.
	settle, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	filter := bson.D{{Key: "_id", Value: oid}, {Key: "notify_claim", Value: claim}}
	update := func(u bson.D) error {
		defer rt.lock(n.videoFID)()
		_, err := rt.jobs().UpdateOne(settle, filter, u)
		return err
	}

	msg, subject, err := rt.message(n)
	if err == nil {
		err = rt.send(ctx, log, n, msg, subject)
	}
	switch {
	case err == nil:
		// The email is out: a claim left unsettled would look like a send that
		// died, and a later delivery would take it over and send again. So
		// settle it through a short MongoDB outage too (bounded by settle).
		for wait := 250 * time.Millisecond; ; wait *= 2 {
			uerr := update(bson.D{{Key: "$unset", Value: bson.D{{Key: "notify_claim", Value: ""}}}})
			if uerr == nil {
				break
			}
			if settle.Err() != nil {
				log.Error("email sent but the claim could not be settled", "err", uerr)
				break
			}
			log.Warn("email sent, settling the claim again", "err", uerr)
			select {
			case <-settle.Done():
			case <-time.After(wait):
			}
		}
		return nil
	case permanent(err):
		log.Error("email cannot be delivered (permanent), not retrying", "to", n.to, "err", err)
		msg := err.Error()
		if len(msg) > 1000 {
			msg = msg[:1000]
		}
		if uerr := update(bson.D{
			{Key: "$set", Value: bson.D{{Key: "notify_error", Value: msg}}},
			{Key: "$unset", Value: bson.D{{Key: "notify_claim", Value: ""}}}}); uerr != nil {
			log.Warn("could not record notify_error", "err", uerr)
		}
		return nil
	default:
		log.Warn("email not sent, releasing the claim for a retry", "to", n.to, "err", err)
		if uerr := update(bson.D{{Key: "$unset", Value: bson.D{
			{Key: "notified_at", Value: ""}, {Key: "notify_claim", Value: ""}}}}); uerr != nil {
			log.Error("could not release the claim; a redelivery takes it over once it is stale", "err", uerr)
		}
		return cehttp.NewResult(503, "mail server unavailable, try again")
	}
}

// Outcomes of a claim.
const (
	claimed  = iota // ours: send the email
	notified        // sent (or rejected for good) before: nothing to do
	inFlight        // another delivery is sending right now: ask for a retry
	noJob           // no such job: nothing to claim
)

// claim marks the job notified with a random token unless it already is. A claim whose
// send never settled (the process died mid-send) is taken over once it is stale.
func (rt *runtime) claim(ctx context.Context, oid bson.ObjectID) (token string, outcome int, err error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token = hex.EncodeToString(b[:])
	now := time.Now().UTC()
	filter := bson.D{{Key: "_id", Value: oid}, {Key: "$or", Value: bson.A{
		bson.D{{Key: "notified_at", Value: nil}},
		bson.D{{Key: "notify_claim", Value: bson.D{{Key: "$exists", Value: true}}},
			{Key: "notified_at", Value: bson.D{{Key: "$lt", Value: now.Add(-rt.staleAt)}}}},
	}}}
	update := bson.D{{Key: "$set", Value: bson.D{{Key: "notified_at", Value: now}, {Key: "notify_claim", Value: token}}}}
	unlock := rt.lock(oid.Hex())
	err = rt.jobs().FindOneAndUpdate(ctx, filter, update).Err()
	unlock()
	if err == nil {
		return token, claimed, nil
	} else if !errors.Is(err, mongo.ErrNoDocuments) {
		return "", 0, err
	}
	var j struct {
		Claim string `bson:"notify_claim"`
	}
	if err = rt.jobs().FindOne(ctx, bson.D{{Key: "_id", Value: oid}}).Decode(&j); errors.Is(err, mongo.ErrNoDocuments) {
		return "", noJob, nil
	} else if err != nil {
		return "", 0, err
	}
	if j.Claim != "" {
		return "", inFlight, nil
	}
	return "", notified, nil
}

// send delivers msg over SMTP, or writes it into the outbox without SMTP_URL.
func (rt *runtime) send(ctx context.Context, log *slog.Logger, n notice, msg *gomail.Msg, subject string) error {
	if rt.smtp == nil {
		path, err := writeEML(rt.mailDir, n.videoFID+"-"+n.kind+".eml", msg)
		if err != nil {
			return fmt.Errorf("writing the outbox: %w", err)
		}
		log.Info("email written to the outbox", "to", n.to, "subject", subject, "path", path)
		return nil
	}
	dial, cancel := context.WithTimeout(ctx, rt.timeout)
	defer cancel()
	if err := rt.smtp.DialAndSendWithContext(dial, msg); err != nil {
		return err
	}
	log.Info("email sent", "to", n.to, "subject", subject, "smtp", rt.smtpAddr)
	return nil
}

// permanent reports whether the mail server rejected the message for good (5xx), or the
// message cannot be built; anything else (refused, timeout, 4xx) is worth a retry.
func permanent(err error) bool {
	var bad *badMessage
	if errors.As(err, &bad) {
		return true
	}
	var se *gomail.SendError
	if !errors.As(err, &se) {
		return false
	}
	switch se.Reason {
	case gomail.ErrGetSender, gomail.ErrGetRcpts, gomail.ErrNoUnencoded:
		return true
	}
	return !se.IsTemp() && se.ErrorCode() >= 500 && se.ErrorCode() < 600
}

// writeEML writes msg to dir/name atomically (temp file + rename) and returns the path.
func writeEML(dir, name string, msg *gomail.Msg) (string, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*.eml")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := msg.WriteTo(tmp); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	path := filepath.Join(dir, name)
	return path, os.Rename(tmp.Name(), path)
}

func isHexID(s string) bool {
	if len(s) != 24 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
