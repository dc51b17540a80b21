package function

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"log"
	"math/big"
	"mime"
	"mime/multipart"
	"net"
	"net/http/httptest"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

const (
	testFrom = "mp3converter <no-reply@mp3converter.test>"
	testUser = "ada@example.com"
	testPub  = "https://mp3.example.test"
)

// ---- the test SMTP server (go-smtp on loopback) ----

type received struct {
	from     string
	to       []string
	data     []byte
	tls      bool
	authUser string
}

type smtpServer struct {
	t      *testing.T
	tlsCfg *tls.Config // STARTTLS offered when set
	smtps  bool        // implicit TLS
	user   string      // AUTH PLAIN required when set
	pass   string

	mu        sync.Mutex
	addr      string
	srv       *smtp.Server
	done      chan struct{}
	msgs      []received
	rcpts     int             // RCPT TO commands seen
	tempFail  bool            // answer MAIL FROM with 451
	reject    map[string]bool // answer RCPT TO with 550
	closeOnce bool
}

func startSMTP(t *testing.T, s *smtpServer) *smtpServer {
	t.Helper()
	s.t = t
	if s.reject == nil {
		s.reject = map[string]bool{}
	}
	s.listen("127.0.0.1:0")
	t.Cleanup(s.close)
	return s
}

func (s *smtpServer) listen(addr string) {
	s.t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatalf("smtp listen %s: %v", addr, err)
	}
	if s.smtps {
		ln = tls.NewListener(ln, s.tlsCfg)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		sess := &session{s: s, c: c}
		if s.user != "" {
			return &authSession{sess}, nil
		}
		return sess, nil
	}))
	srv.Domain = "localhost"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	if !s.smtps {
		srv.TLSConfig = s.tlsCfg
	}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	s.mu.Lock()
	s.addr, s.srv, s.done = ln.Addr().String(), srv, done
	s.mu.Unlock()
}

// close stops the server: connections to its address are refused.
func (s *smtpServer) close() {
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
		<-done
	}
}

// restart listens again on the same address.
func (s *smtpServer) restart() { s.listen(s.addr) }

func (s *smtpServer) messages() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.msgs...)
}

func (s *smtpServer) set(fn func(s *smtpServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s)
}

func (s *smtpServer) url() string {
	scheme := "smtp"
	if s.smtps {
		scheme = "smtps"
	}
	u := scheme + "://" + s.addr
	if s.user != "" {
		u = scheme + "://" + s.user + ":" + strings.ReplaceAll(s.pass, "@", "%40") + "@" + s.addr
	}
	if s.tlsCfg != nil {
		u += "?insecure_skip_verify=true"
	}
	return u
}

type session struct {
	s        *smtpServer
	c        *smtp.Conn
	authUser string
	cur      received
}

func (x *session) Reset()        { x.cur = received{} }
func (x *session) Logout() error { return nil }

func (x *session) Mail(from string, _ *smtp.MailOptions) error {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	if x.s.user != "" && x.authUser == "" {
		return smtp.ErrAuthRequired
	}
	if x.s.tempFail {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	_, isTLS := x.c.TLSConnectionState()
	x.cur = received{from: from, tls: isTLS, authUser: x.authUser}
	return nil
}

func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	x.s.rcpts++
	if x.s.reject[to] {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	x.cur.to = append(x.cur.to, to)
	return nil
}

func (x *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	x.cur.data = b
	x.s.msgs = append(x.s.msgs, x.cur)
	return nil
}

type authSession struct{ *session }

func (a *authSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (a *authSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != a.s.user || pass != a.s.pass {
			return smtp.ErrAuthFailed
		}
		a.authUser = user
		return nil
	}), nil
}

func selfSignedTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// ---- the function behind a real HTTP server, MongoDB, fixtures ----

type env struct {
	t      *testing.T
	f      *Function
	db     *mongo.Client
	prefix string
	url    string
	ce     cloudevents.Client
}

// newEnv starts notify with cfg (plus MONGODB_URI and a fresh MONGODB_DB_PREFIX unless
// given) behind an HTTP server that maps results the way func-go does.
func newEnv(t *testing.T, cfg map[string]string) *env {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	e := &env{t: t, prefix: "t" + hex.EncodeToString(b[:]) + "_"}
	full := map[string]string{"MONGODB_URI": mongoURI, "MONGODB_DB_PREFIX": e.prefix, "MAIL_FROM": testFrom,
		"PUBLIC_URL": testPub, "SMTP_TIMEOUT": "10s", "LINK_SECRET": testLinkSecret}
	for k, v := range cfg {
		full[k] = v
	}
	if full["SMTP_URL"] == "" && full["MAIL_DIR"] == "" {
		full["MAIL_DIR"] = t.TempDir()
	}
	db, err := mongo.Connect(options.Client().ApplyURI(mongoURI).SetServerSelectionTimeout(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	e.db = db
	t.Cleanup(func() {
		ctx := context.Background()
		for _, name := range []string{e.prefix + "videos", e.prefix + "mp3s"} {
			if err := db.Database(name).Drop(ctx); err != nil {
				t.Errorf("drop %s: %v", name, err)
			}
		}
		_ = db.Disconnect(ctx)
	})

	e.f = New()
	if err := e.f.Start(context.Background(), full); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = e.f.Stop(context.Background()) })
	e.url = serve(t, e.f)
	if e.ce, err = cloudevents.NewClientHTTP(); err != nil {
		t.Fatal(err)
	}
	return e
}

// withSMTP starts srv and notify sending through it.
func withSMTP(t *testing.T, srv *smtpServer) (*smtpServer, *env) {
	t.Helper()
	s := startSMTP(t, srv)
	return s, newEnv(t, map[string]string{"SMTP_URL": s.url()})
}

func serve(t *testing.T, f *Function) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p, err := cehttp.New()
	if err != nil {
		t.Fatal(err)
	}
	h, err := cloudevents.NewHTTPReceiveHandler(ctx, p, f.Handle)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.Close(); cancel() })
	return srv.URL
}

// send posts ev with the sdk-go client and returns the HTTP status.
func send(url string, ev event.Event) (int, error) {
	c, err := cloudevents.NewClientHTTP()
	if err != nil {
		return 0, err
	}
	res := c.Send(cloudevents.ContextWithTarget(context.Background(), url), ev)
	var hr *cehttp.Result
	if !cloudevents.ResultAs(res, &hr) {
		return 0, fmt.Errorf("no HTTP result: %w", res)
	}
	return hr.StatusCode, nil
}

func post(t *testing.T, url string, ev event.Event) int {
	t.Helper()
	code, err := send(url, ev)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

func (e *env) post(ev event.Event) int { return post(e.t, e.url, ev) }

func (e *env) jobs() *mongo.Collection {
	return e.db.Database(e.prefix + "videos").Collection("jobs")
}

// seedJob inserts a jobs document as upload and convert write it and returns its video_fid.
func (e *env) seedJob(state, reason string, extra bson.M) string {
	e.t.Helper()
	oid := bson.NewObjectID()
	now := time.Now().UTC()
	doc := bson.M{"_id": oid, "username": testUser, "filename": "holiday.mp4", "content_type": "video/mp4",
		"size": int64(10485760), "state": state, "reason": reason, "mp3_fid": "", "attempts": int32(1),
		"created_at": now, "updated_at": now}
	if state == "done" {
		doc["mp3_fid"], doc["duration_seconds"] = oid.Hex(), 60.02
	}
	for k, v := range extra {
		doc[k] = v
	}
	if _, err := e.jobs().InsertOne(context.Background(), doc); err != nil {
		e.t.Fatal(err)
	}
	return oid.Hex()
}

// job reads a jobs document and checks it against the job contract.
func (e *env) job(fid string) bson.M {
	e.t.Helper()
	oid, _ := bson.ObjectIDFromHex(fid)
	var raw bson.Raw
	if err := e.jobs().FindOne(context.Background(), bson.M{"_id": oid}).Decode(&raw); err != nil {
		e.t.Fatal(err)
	}
	validateJob(e.t, raw)
	var m bson.M
	if err := bson.Unmarshal(raw, &m); err != nil {
		e.t.Fatal(err)
	}
	return m
}

// validateJob checks a jobs document against ../../events/job/schema.json, the job contract.
func validateJob(t *testing.T, doc bson.Raw) {
	t.Helper()
	data, err := bson.MarshalExtJSON(doc, false, false)
	if err != nil {
		t.Fatal(err)
	}
	sch, err := jsonschema.NewCompiler().Compile(filepath.Join("..", "..", "events", "job", "schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(inst); err != nil {
		t.Errorf("job %s does not match events/job/schema.json: %v", data, err)
	}
}

// claimReleased fails unless the job carries no notification claim.
func (e *env) claimReleased(fid string) {
	e.t.Helper()
	j := e.job(fid)
	if v, ok := j["notified_at"]; ok && v != nil {
		e.t.Errorf("notified_at = %v, want released", v)
	}
	if _, ok := j["notify_claim"]; ok {
		e.t.Errorf("notify_claim still set")
	}
}

// notified fails unless the job is marked notified with a settled claim.
func (e *env) notified(fid string) bson.M {
	e.t.Helper()
	j := e.job(fid)
	if _, ok := j["notified_at"].(bson.DateTime); !ok {
		e.t.Errorf("notified_at = %v (%T), want a date", j["notified_at"], j["notified_at"])
	}
	if _, ok := j["notify_claim"]; ok {
		e.t.Errorf("notify_claim still set after the send settled")
	}
	return j
}

var (
	schemaOnce sync.Once
	schemas    map[string]*jsonschema.Schema
	schemaErr  error
)

// validate checks data against ../../events/<type>.schema.json: the fixtures are contract data.
func validate(typ string, data any) error {
	schemaOnce.Do(func() {
		schemas = map[string]*jsonschema.Schema{}
		c := jsonschema.NewCompiler()
		for _, name := range []string{"video.uploaded", "mp3.converted", "conversion.failed"} {
			s, err := c.Compile(filepath.Join("..", "..", "events", name+".schema.json"))
			if err != nil {
				schemaErr = err
				return
			}
			schemas["dev.mp3converter."+name] = s
		}
	})
	if schemaErr != nil {
		return schemaErr
	}
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return err
	}
	s, ok := schemas[typ]
	if !ok {
		return errors.New("no schema for " + typ)
	}
	return s.Validate(v)
}

// newEvent builds an event as its producer sends it; its data must validate against the schema.
func newEvent(t *testing.T, typ, fid string, data map[string]any) event.Event {
	t.Helper()
	if err := validate(typ, data); err != nil {
		t.Fatalf("fixture for %s does not match the schema: %v", typ, err)
	}
	return rawEvent(t, typ, fid, data)
}

func rawEvent(t *testing.T, typ, fid string, data any) event.Event {
	t.Helper()
	ev := cloudevents.NewEvent()
	switch typ {
	case typeConverted:
		ev.SetID("mp3-" + fid)
		ev.SetSource("/functions/convert")
	case typeFailed:
		ev.SetID("failed-" + fid)
		ev.SetSource("/functions/convert")
	default:
		ev.SetID(fid)
		ev.SetSource("/functions/upload")
	}
	ev.SetType(typ)
	ev.SetSubject(fid)
	if err := ev.SetData(cloudevents.ApplicationJSON, data); err != nil {
		t.Fatal(err)
	}
	return ev
}

func converted(t *testing.T, fid, name string) event.Event {
	return newEvent(t, typeConverted, fid, map[string]any{"video_fid": fid, "mp3_fid": fid, "username": testUser,
		"filename": name, "size": 960512, "duration_seconds": 60.02})
}

func failed(t *testing.T, fid, reason string) event.Event {
	return newEvent(t, typeFailed, fid, map[string]any{"video_fid": fid, "username": testUser,
		"filename": "holiday.mp4", "reason": reason})
}

// deadLetter is a video.uploaded event as the broker's dead-letter sink delivers it.
func deadLetter(t *testing.T, fid string) event.Event {
	ev := newEvent(t, typeUploaded, fid, map[string]any{"video_fid": fid, "username": testUser,
		"filename": "holiday.mp4", "content_type": "video/mp4", "size": 10485760})
	ev.SetExtension("knativeerrorcode", "500")
	ev.SetExtension("knativeerrordest", "http://convert.mp3converter.svc.cluster.local")
	return ev
}

// parsed is a received email, decoded.
type parsed struct {
	header      mail.Header
	subject     string
	text, html  string
	contentType string
}

func parseMail(t *testing.T, raw []byte) parsed {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse message: %v\n%s", err, raw)
	}
	p := parsed{header: m.Header}
	if p.subject, err = new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject")); err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	p.contentType = mt
	if mt != "multipart/alternative" {
		t.Fatalf("Content-Type %s, want multipart/alternative", mt)
	}
	r := multipart.NewReader(m.Body, params["boundary"])
	for {
		part, err := r.NextPart()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(part) // quoted-printable is decoded by the reader
		if err != nil {
			t.Fatal(err)
		}
		pt, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		switch pt {
		case "text/plain":
			p.text = string(b)
		case "text/html":
			p.html = string(b)
		default:
			t.Errorf("unexpected part %s", pt)
		}
	}
	if p.text == "" || p.html == "" {
		t.Fatalf("want text/plain and text/html parts, got text=%q html=%q", p.text, p.html)
	}
	return p
}

// one fails unless exactly one message was received, and returns it parsed.
func one(t *testing.T, s *smtpServer) (received, parsed) {
	t.Helper()
	msgs := s.messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages received, want 1", len(msgs))
	}
	return msgs[0], parseMail(t, msgs[0].data)
}

func wantStatus(t *testing.T, got, want int, what string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: status %d, want %d", what, got, want)
	}
}

func contains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not contain %q:\n%s", what, sub, s)
		}
	}
}

// ---- tests ----

func TestConvertedSendsReadyMail(t *testing.T) {
	s, e := withSMTP(t, &smtpServer{})
	// The name comes from the job (the video's base name + .mp3), not from the event.
	fid := e.seedJob("done", "", bson.M{"filename": `holiday <b>&"live".mp4`})
	name := `holiday <b>&"live".mp3`

	wantStatus(t, e.post(converted(t, fid, name)), 200, "converted")
	rcv, m := one(t, s)
	if rcv.from != "no-reply@mp3converter.test" || len(rcv.to) != 1 || rcv.to[0] != testUser {
		t.Errorf("envelope from %q to %v", rcv.from, rcv.to)
	}
	from, err := mail.ParseAddress(m.header.Get("From"))
	if err != nil || from.Address != "no-reply@mp3converter.test" || from.Name != "mp3converter" {
		t.Errorf("From %q (%v)", m.header.Get("From"), err)
	}
	if to, err := mail.ParseAddress(m.header.Get("To")); err != nil || to.Address != testUser {
		t.Errorf("To %q (%v)", m.header.Get("To"), err)
	}
	if want := "Your MP3 is ready: " + name; m.subject != want {
		t.Errorf("Subject %q, want %q", m.subject, want)
	}
	// The link is signed for the recipient, so it opens in a plain browser tab.
	link := signedLink.FindString(m.text)
	u, err := url.Parse(link)
	if err != nil || !strings.HasPrefix(link, testPub+"/download?") {
		t.Fatalf("no download link in:\n%s", m.text)
	}
	q := u.Query()
	if q.Get("fid") != fid || !newLinkSigner(testLinkSecret, "").valid(fid, testUser, q.Get("exp"), q.Get("sig"), time.Now()) {
		t.Errorf("%s is not a link to %s signed for %s", link, fid, testUser)
	}
	if exp, _ := strconv.ParseInt(q.Get("exp"), 10, 64); time.Until(time.Unix(exp, 0)) < 167*time.Hour {
		t.Errorf("the link expires at %s, want LINK_TTL's 7 days from now", time.Unix(exp, 0))
	}
	contains(t, "text part", m.text, name, "1:00", "7 days", "mp3converter download "+fid)
	contains(t, "html part", m.html, `holiday &lt;b&gt;&amp;&#34;live&#34;.mp3`, `href="`+htmltemplate.HTMLEscapeString(link)+`"`, "1:00",
		"mp3converter download "+fid)
	if strings.Contains(m.html, "<b>&") {
		t.Errorf("html part carries the file name unescaped")
	}
	if m.header.Get("Message-Id") != "<"+fid+".ready@mp3converter.test>" {
		t.Errorf("Message-Id %q", m.header.Get("Message-Id"))
	}
	e.notified(fid)
}

func TestFailedSendsReason(t *testing.T) {
	s, e := withSMTP(t, &smtpServer{})
	fid := e.seedJob("failed", "the file has no audio track", nil)

	wantStatus(t, e.post(failed(t, fid, "the file has no audio track")), 200, "failed")
	_, m := one(t, s)
	if m.subject != "We could not convert holiday.mp4" {
		t.Errorf("Subject %q", m.subject)
	}
	contains(t, "text part", m.text, "holiday.mp4", "Reason: the file has no audio track", "audio track", "upload")
	contains(t, "html part", m.html, "the file has no audio track", "upload another file")
	if strings.Contains(m.text, "/download?") {
		t.Errorf("failure mail carries a download link")
	}
	e.notified(fid)
}

func TestRedeliverySendsOnce(t *testing.T) {
	s, e := withSMTP(t, &smtpServer{})
	fid := e.seedJob("done", "", nil)
	ev := converted(t, fid, "holiday.mp3")
	for i := range 3 {
		wantStatus(t, e.post(ev), 200, "delivery "+string(rune('1'+i)))
	}
	one(t, s)
}

func TestConcurrentDeliveriesSendOnce(t *testing.T) {
	s, e := withSMTP(t, &smtpServer{})
	fid := e.seedJob("done", "", nil)
	ev := converted(t, fid, "holiday.mp3")

	const n = 8
	codes := make([]int, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			var err error
			if codes[i], err = send(e.url, ev); err != nil {
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	// One delivery sends; the others find the email sent (200) or still being sent (503:
	// that send may yet fail, so the broker must come back).
	ok := 0
	for i, c := range codes {
		switch c {
		case 200:
			ok++
		case 503:
		default:
			t.Errorf("delivery %d: status %d, want 200 or 503", i, c)
		}
	}
	if ok == 0 {
		t.Errorf("no delivery answered 200: %v", codes)
	}
	one(t, s)
	e.notified(fid)
	wantStatus(t, e.post(ev), 200, "redelivery after the send")
	one(t, s)
}

func TestSMTPDownReleasesClaimThenRetrySends(t *testing.T) {
	s, e := withSMTP(t, &smtpServer{})
	fid := e.seedJob("done", "", nil)
	ev := converted(t, fid, "holiday.mp3")

	s.close()
	wantStatus(t, e.post(ev), 503, "SMTP down")
	e.claimReleased(fid)

	s.restart()
	wantStatus(t, e.post(ev), 200, "retry")
	wantStatus(t, e.post(ev), 200, "redelivery")
	one(t, s)
	e.notified(fid)
}

func TestSMTPTemporaryFailureRetries(t *testing.T) {
	s, e := withSMTP(t, &smtpServer{tempFail: true})
	fid := e.seedJob("failed", "the file has no audio track", nil)
	ev := failed(t, fid, "the file has no audio track")

	wantStatus(t, e.post(ev), 503, "SMTP 451")
	e.claimReleased(fid)
	if n := len(s.messages()); n != 0 {
		t.Fatalf("%d messages after a 451", n)
	}

	s.set(func(s *smtpServer) { s.tempFail = false })
	wantStatus(t, e.post(ev), 200, "retry")
	one(t, s)
	e.notified(fid)
}

func TestSMTPSilentServerTimesOut(t *testing.T) {
	// A server that accepts connections and never says a word.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	stop := make(chan struct{})
	conns.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Go(func() { <-stop; c.Close() })
		}
	})
	t.Cleanup(func() { ln.Close(); close(stop); conns.Wait() })

	e := newEnv(t, map[string]string{"SMTP_URL": "smtp://" + ln.Addr().String(), "SMTP_TIMEOUT": "2s"})
	fid := e.seedJob("done", "", nil)
	wantStatus(t, e.post(converted(t, fid, "holiday.mp3")), 503, "silent SMTP server")
	e.claimReleased(fid)
}

func TestPermanentRejectionIsNotRetried(t *testing.T) {
	s, e := withSMTP(t, &smtpServer{reject: map[string]bool{testUser: true}})
	fid := e.seedJob("done", "", nil)
	ev := converted(t, fid, "holiday.mp3")

	wantStatus(t, e.post(ev), 200, "550 recipient")
	wantStatus(t, e.post(ev), 200, "redelivery")
	if n := len(s.messages()); n != 0 {
		t.Errorf("%d messages delivered to a rejected recipient", n)
	}
	s.set(func(s *smtpServer) {
		if s.rcpts != 1 {
			t.Errorf("%d RCPT attempts, want 1 (no retry loop)", s.rcpts)
		}
	})
	j := e.notified(fid)
	if msg, _ := j["notify_error"].(string); !strings.Contains(msg, "550") {
		t.Errorf("notify_error = %q, want the 550 rejection", msg)
	}
}

func TestUnmailableUsernameIsRecorded(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, map[string]string{"MAIL_DIR": dir})
	// The recipient is the job's username (the event's is not read).
	fid := e.seedJob("failed", "the file has no audio track", bson.M{"username": "not an address"})
	ev := newEvent(t, typeFailed, fid, map[string]any{"video_fid": fid, "username": "not an address",
		"filename": "holiday.mp4", "reason": "the file has no audio track"})
	wantStatus(t, e.post(ev), 200, "username that is no address")
	wantStatus(t, e.post(ev), 200, "redelivery")
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("outbox holds %d files, want none", len(ents))
	}
	if msg, _ := e.notified(fid)["notify_error"].(string); msg == "" {
		t.Error("notify_error not recorded")
	}
}

func TestDeadLetterFailsConvertingJob(t *testing.T) {
	s, e := withSMTP(t, &smtpServer{})
	fid := e.seedJob("converting", "", bson.M{"lease_until": time.Now().Add(time.Hour).UTC()})

	wantStatus(t, e.post(deadLetter(t, fid)), 200, "dead letter")
	j := e.notified(fid)
	if j["state"] != "failed" || j["reason"] != deadLetterReason {
		t.Errorf("job state %v reason %v, want failed %q", j["state"], j["reason"], deadLetterReason)
	}
	_, m := one(t, s)
	if m.subject != "We could not convert holiday.mp4" {
		t.Errorf("Subject %q", m.subject)
	}
	contains(t, "text part", m.text, deadLetterReason)

	wantStatus(t, e.post(deadLetter(t, fid)), 200, "dead letter redelivered")
	one(t, s)
}

// A duplicate delivery of video.uploaded that convert kept answering "being converted" until
// the broker gave up is dead-lettered while the first delivery still converts the job: the
// job is not failed, and nobody is mailed (the conversion's outcome is).
func TestDeadLetterLeavesAJobAnotherDeliveryConverts(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, map[string]string{"MAIL_DIR": dir})
	fid := e.seedJob("converting", "", bson.M{"lease_until": time.Now().Add(time.Minute).UTC()})
	oid, _ := bson.ObjectIDFromHex(fid)
	if _, err := e.db.Database(e.prefix+"videos").Collection("convert_claims").InsertOne(context.Background(), bson.M{
		"_id": fid + "/1", "video_fid": oid, "owner": "id:1", "attempt": int32(1),
		"lease_until": time.Now().Add(time.Minute).UTC(), "created_at": time.Now().UTC(),
	}); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, e.post(deadLetter(t, fid)), 200, "dead letter beside a live claim")
	if j := e.job(fid); j["state"] != "converting" || j["reason"] != "" || j["notified_at"] != nil {
		t.Errorf("job state %v reason %v, want still converting", j["state"], j["reason"])
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("outbox holds %d files, want none", len(ents))
	}
}

func TestDeadLetterForDoneJobSendsReadyMail(t *testing.T) {
	s, e := withSMTP(t, &smtpServer{})
	fid := e.seedJob("done", "", nil)
	oid, _ := bson.ObjectIDFromHex(fid)
	if _, err := e.db.Database(e.prefix+"mp3s").Collection("fs.files").InsertOne(context.Background(), bson.M{
		"_id": oid, "length": int64(960512), "chunkSize": int32(128 * 1024), "uploadDate": time.Now().UTC(),
		"filename": "holiday.mp3", "metadata": bson.M{"username": testUser, "video_fid": fid, "duration_seconds": 60.02},
	}); err != nil {
		t.Fatal(err)
	}

	wantStatus(t, e.post(deadLetter(t, fid)), 200, "dead letter")
	j := e.notified(fid)
	if j["state"] != "done" || j["reason"] != "" {
		t.Errorf("done job changed: state %v reason %v", j["state"], j["reason"])
	}
	_, m := one(t, s)
	if m.subject != "Your MP3 is ready: holiday.mp3" {
		t.Errorf("Subject %q", m.subject)
	}
	contains(t, "text part", m.text, testPub+"/download?", "fid="+fid, "1:00")
}

func TestDeadLetterKeepsReasonOfFailedJob(t *testing.T) {
	s, e := withSMTP(t, &smtpServer{})
	fid := e.seedJob("failed", "the file has no audio track", nil)

	wantStatus(t, e.post(deadLetter(t, fid)), 200, "dead letter")
	if j := e.notified(fid); j["state"] != "failed" || j["reason"] != "the file has no audio track" {
		t.Errorf("job state %v reason %v", j["state"], j["reason"])
	}
	_, m := one(t, s)
	contains(t, "text part", m.text, "the file has no audio track")
}

func TestOutboxWritesOneEML(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	e := newEnv(t, map[string]string{"MAIL_DIR": dir})
	fid := e.seedJob("done", "", nil)
	ev := converted(t, fid, "holiday.mp3")

	wantStatus(t, e.post(ev), 200, "converted")
	wantStatus(t, e.post(ev), 200, "redelivery")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != fid+"-ready.eml" {
		var names []string
		for _, x := range ents {
			names = append(names, x.Name())
		}
		t.Fatalf("outbox holds %v, want [%s-ready.eml]", names, fid)
	}
	raw, err := os.ReadFile(filepath.Join(dir, ents[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	m := parseMail(t, raw)
	if m.subject != "Your MP3 is ready: holiday.mp3" {
		t.Errorf("Subject %q", m.subject)
	}
	contains(t, "text part", m.text, testPub+"/download?", "fid="+fid)
	e.notified(fid)
}

func TestJobNotFoundSendsNothing(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, map[string]string{"MAIL_DIR": dir})
	fid := bson.NewObjectID().Hex()
	wantStatus(t, e.post(converted(t, fid, "holiday.mp3")), 200, "converted, no job")
	wantStatus(t, e.post(deadLetter(t, fid)), 200, "dead letter, no job")
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("outbox holds %d files, want none", len(ents))
	}
}

func TestBadDataAndUnknownTypeAreDropped(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, map[string]string{"MAIL_DIR": dir})
	fid := e.seedJob("done", "", nil)
	bad := map[string]any{"video_fid": fid, "username": testUser, "filename": "holiday.mp3", "size": 1}
	if validate(typeConverted, bad) == nil {
		t.Fatal("the bad fixture validates against the schema")
	}
	wantStatus(t, e.post(rawEvent(t, typeConverted, fid, bad)), 200, "data without mp3_fid/duration")
	wantStatus(t, e.post(rawEvent(t, typeFailed, fid, map[string]any{"video_fid": "nope"})), 200, "bad failed data")
	wantStatus(t, e.post(rawEvent(t, "dev.mp3converter.something.else", fid, map[string]any{"x": 1})), 200, "unknown type")
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("outbox holds %d files, want none", len(ents))
	}
	e.claimReleased(fid)
}

func TestStaleClaimIsTakenOver(t *testing.T) {
	s, e := withSMTP(t, &smtpServer{})
	// A sender died mid-send an hour ago: its claim never settled. Another is sending now.
	fid := e.seedJob("done", "", bson.M{"notified_at": time.Now().Add(-time.Hour).UTC(), "notify_claim": "dead"})
	fresh := e.seedJob("done", "", bson.M{"notified_at": time.Now().UTC(), "notify_claim": "busy"})

	wantStatus(t, e.post(converted(t, fid, "holiday.mp3")), 200, "stale claim")
	wantStatus(t, e.post(converted(t, fresh, "holiday.mp3")), 503, "claim in flight")
	rcv, _ := one(t, s)
	if !strings.Contains(string(rcv.data), fid) {
		t.Errorf("the mail is not about the stale job")
	}
	e.notified(fid)
}

func TestMongoDownIs503(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there any more
	f := New()
	if err := f.Start(context.Background(), map[string]string{"MONGODB_URI": "mongodb://" + addr + "/?connectTimeoutMS=1000",
		"MAIL_DIR": t.TempDir(), "LINK_SECRET": testLinkSecret}); err != nil {
		t.Fatalf("Start must not fail while MongoDB is down: %v", err)
	}
	t.Cleanup(func() { _ = f.Stop(context.Background()) })
	url := serve(t, f)
	fid := bson.NewObjectID().Hex()
	wantStatus(t, post(t, url, converted(t, fid, "holiday.mp3")), 503, "converted, MongoDB down")
	wantStatus(t, post(t, url, deadLetter(t, fid)), 503, "dead letter, MongoDB down")
}

func TestNotStartedIs503(t *testing.T) {
	f := New()
	if ok, _ := f.Ready(context.Background()); ok {
		t.Error("Ready before Start")
	}
	url := serve(t, f)
	wantStatus(t, post(t, url, converted(t, bson.NewObjectID().Hex(), "holiday.mp3")), 503, "before Start")
}

func TestSMTPSTARTTLSWithAuth(t *testing.T) {
	s, e := withSMTP(t, &smtpServer{tlsCfg: selfSignedTLS(t), user: "notify", pass: "s3cr@t"})
	fid := e.seedJob("done", "", nil)
	wantStatus(t, e.post(converted(t, fid, "holiday.mp3")), 200, "converted")
	rcv, _ := one(t, s)
	if !rcv.tls || rcv.authUser != "notify" {
		t.Errorf("tls %v auth %q, want STARTTLS and AUTH as notify", rcv.tls, rcv.authUser)
	}
}

func TestSMTPSImplicitTLS(t *testing.T) {
	s, e := withSMTP(t, &smtpServer{tlsCfg: selfSignedTLS(t), smtps: true, user: "notify", pass: "pw"})
	fid := e.seedJob("done", "", nil)
	wantStatus(t, e.post(converted(t, fid, "holiday.mp3")), 200, "converted")
	if rcv, _ := one(t, s); !rcv.tls || rcv.authUser != "notify" {
		t.Errorf("tls %v auth %q, want implicit TLS and AUTH as notify", rcv.tls, rcv.authUser)
	}
}

const testLinkSecret = "a link secret of at least 32 bytes, for tests"

var signedLink = regexp.MustCompile(`https?://\S+/download\?\S+`)

func TestBadConfigFailsStartWithoutLeakingPassword(t *testing.T) {
	for _, tc := range []map[string]string{
		{"SMTP_URL": "smtp://user:hunter2@host:99999"},
		{"SMTP_URL": "smtp://user:hunter2@ho st:587"},
		{"SMTP_URL": "http://user:hunter2@host"},
		{"SMTP_URL": "smtp://user:hunter2@host?tls=maybe"},
		{"SMTP_TIMEOUT": "soon"},
		{"MAIL_FROM": "not an address"},
		{"PUBLIC_URL": "ftp://x"},
		{"LINK_SECRET": "short"},
	} {
		err := New().Start(context.Background(), tc)
		if err == nil {
			t.Errorf("Start(%v) succeeded", tc)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Start error leaks the password: %v", err)
		}
	}
}

// TestExternalSMTP sends through the SMTP server named by the environment's SMTP_URL, when set.
func TestExternalSMTP(t *testing.T) {
	u := os.Getenv("SMTP_URL")
	if u == "" {
		t.Skip("SMTP_URL not set; the other tests use go-smtp on loopback")
	}
	e := newEnv(t, map[string]string{"SMTP_URL": u})
	fid := e.seedJob("done", "", nil)
	wantStatus(t, e.post(converted(t, fid, "holiday.mp3")), 200, "converted via SMTP_URL")
	if j := e.notified(fid); j["notify_error"] != nil {
		t.Errorf("notify_error = %v", j["notify_error"])
	}
}

// TestTwoReplicasSendOnce runs two notify instances (as two pods would) against one database.
// Only MongoDB applies findAndModify atomically; FerretDB reads and writes in two steps, so this
// test needs a real MongoDB (MONGODB_URI); within one process notify serialises its own claims.
func TestTwoReplicasSendOnce(t *testing.T) {
	if os.Getenv("MONGODB_URI") == "" {
		t.Skip("needs MONGODB_URI: FerretDB's findAndModify is not atomic across processes")
	}
	s, e := withSMTP(t, &smtpServer{})
	other := New()
	cfg := map[string]string{"MONGODB_URI": mongoURI, "MONGODB_DB_PREFIX": e.prefix, "SMTP_URL": s.url(), "MAIL_FROM": testFrom}
	if err := other.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Stop(context.Background()) })
	urls := []string{e.url, serve(t, other)}
	for range 5 {
		fid := e.seedJob("done", "", nil)
		ev := converted(t, fid, "holiday.mp3")
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				if code, err := send(urls[i%2], ev); err != nil || (code != 200 && code != 503) {
					t.Errorf("delivery %d: %d %v", i, code, err)
				}
			})
		}
		wg.Wait()
	}
	if n := len(s.messages()); n != 5 {
		t.Errorf("%d messages for 5 jobs, want 5", n)
	}
}

// An attacker who reaches the broker posts a mp3.converted naming itself as recipient for
// someone else's finished job: notify mails the job's owner, not the attacker, with the job's
// file name, and the owner's mail is not suppressed.
func TestForgedConvertedMailsOnlyTheOwner(t *testing.T) {
	s, e := withSMTP(t, &smtpServer{})
	fid := e.seedJob("done", "", nil)
	forged := newEvent(t, typeConverted, fid, map[string]any{"video_fid": fid, "mp3_fid": fid,
		"username": "mallory@example.net", "filename": "click http://evil.example.mp3", "size": 1, "duration_seconds": 1})

	wantStatus(t, e.post(forged), 200, "forged converted")
	rcv, m := one(t, s)
	if len(rcv.to) != 1 || rcv.to[0] != testUser {
		t.Errorf("mail went to %v, want only the job's owner %s", rcv.to, testUser)
	}
	if m.subject != "Your MP3 is ready: holiday.mp3" || strings.Contains(m.text, "evil") {
		t.Errorf("the mail carries the forged file name: %q", m.subject)
	}
	e.notified(fid)
}

// An event whose outcome the job does not bear out is dropped: a forged mp3.converted for a
// job still converting, or a forged conversion.failed for a finished one, sends nothing and
// leaves the owner's real notification to come.
func TestEventDisagreeingWithJobIsDropped(t *testing.T) {
	s, e := withSMTP(t, &smtpServer{})
	converting := e.seedJob("converting", "", bson.M{"lease_until": time.Now().Add(time.Hour).UTC()})
	done := e.seedJob("done", "", nil)

	wantStatus(t, e.post(converted(t, converting, "holiday.mp3")), 200, "converted for a converting job")
	wantStatus(t, e.post(failed(t, done, "forged reason")), 200, "failed for a done job")
	if got := s.messages(); len(got) != 0 {
		t.Fatalf("%d mails sent for events the jobs disagree with", len(got))
	}
	e.claimReleased(converting)
	e.claimReleased(done)
	if j := e.job(done); j["state"] != "done" {
		t.Errorf("done job changed to %v", j["state"])
	}
	// The real event still gets its mail through.
	wantStatus(t, e.post(converted(t, done, "holiday.mp3")), 200, "real converted")
	one(t, s)
}

// A forged video.uploaded posted to notify as a dead letter, for someone's waiting job, by
// an attacker who knows the id but not the job (owner, file name, size): the job keeps
// waiting and nobody is mailed.
func TestForgedDeadLetterCannotFailAWaitingJob(t *testing.T) {
	s, e := withSMTP(t, &smtpServer{})
	for _, state := range []string{"uploaded", "converting"} {
		fid := e.seedJob(state, "", nil)
		forged := newEvent(t, typeUploaded, fid, map[string]any{"video_fid": fid, "username": "mallory@example.net",
			"filename": "x.mp4", "content_type": "video/mp4", "size": 1})
		forged.SetExtension("knativeerrorcode", "500")
		wantStatus(t, e.post(forged), 200, "forged dead letter")
		if j := e.job(fid); j["state"] != state || j["reason"] != "" {
			t.Errorf("%s job forged into state %v reason %v", state, j["state"], j["reason"])
		}
		e.claimReleased(fid)
	}
	if got := s.messages(); len(got) != 0 {
		t.Fatalf("%d mails sent for forged dead letters", len(got))
	}
}
