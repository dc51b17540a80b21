package reliability

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/emersion/go-smtp"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	convert "mp3converter/functions/convert"
	notify "mp3converter/functions/notify"
	upload "mp3converter/functions/upload"
	"mp3converter/internal/faultproxy"
	"mp3converter/internal/local/funchost"
	"mp3converter/internal/stacktest"
)

// Regressions: bugs the suite found in code it does not own, fixed since.
// Each test states the bug, the commit that fixed it, and the promise it keeps.

// Through the front door (the web function), a client still sending its body
// gets upload's answer once UPLOAD_TIMEOUT has passed. (Found by the suite:
// the local gateway dropped upload's "Connection: close" as hop-by-hop, and
// Go's server reads up to 256 KiB of an unread body before it writes an
// answer, with no read deadline: a trickling client and the gateway waited
// for each other as long as the client trickled. Fixed by functions/web,
// which keeps "Connection: close" on an answer given before the body was read.)
func TestTricklingClientIsAnsweredThroughTheFrontDoor(t *testing.T) {
	r := record(t, "regression: a trickling upload through the front door gets upload's answer")
	s := sharedSystem(t)
	start := time.Now()
	limit, _ := time.ParseDuration(sharedUploadLimit)
	a := trickle(t, s.URL, s.AdminToken, clip(t, 2), limit+30*time.Second)
	r.Runs++
	if a.err != nil || a.status != http.StatusRequestTimeout {
		r.Failures++
		t.Fatalf("trickling through the front door: %s after %s, want 408 once UPLOAD_TIMEOUT=%s has passed",
			a, time.Since(start).Round(time.Second), sharedUploadLimit)
	}
	r.figure("answered %d after %s (UPLOAD_TIMEOUT=%s)", a.status, time.Since(start).Round(100*time.Millisecond), sharedUploadLimit)
}

// A client without a token that trickles a body gets its 401 at once and the
// connection is closed. (Found by the suite: upload used to extend its read
// deadline to UPLOAD_TIMEOUT, 1 h by default, before it checked the token, and
// Go's server reads up to 256 KiB of an unread body before it writes an
// answer: the client held the connection for an hour. Fixed in 287d96b.)
// An upload function of its own, with UPLOAD_TIMEOUT=1h: the 40 s bound below
// is func-go's 30 s read timeout and a margin.
func TestUnauthenticatedTrickleIsRefusedAtOnce(t *testing.T) {
	r := record(t, "regression: an unauthenticated trickling upload is refused at once")
	s := sharedSystem(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- funchost.Serve(ctx, funchost.Function{Name: "upload", Instance: upload.New(), Listener: ln, Config: map[string]string{
			"MONGODB_URI": s.mongoURI, "MONGODB_DB_PREFIX": s.prefix, "VALIDATE_URL": s.Functions["validate"] + "/validate",
			"K_SINK": s.BrokerURL, "UPLOAD_TIMEOUT": "1h"}})
	}()
	defer func() { stop(); <-served }()
	base := "http://" + ln.Addr().String()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if a := s.do("GET", base+"/health/readiness", "", nil); a.status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("upload not ready")
		}
	}

	start := time.Now()
	a := trickle(t, base, "", clip(t, 2), 40*time.Second)
	r.Runs++
	r.figure("answered %d after %s", a.status, time.Since(start).Round(10*time.Millisecond))
	if a.status != http.StatusUnauthorized {
		t.Fatalf("an unauthenticated trickling client: %s after %s, want its 401 within func-go's 30 s read timeout",
			a, time.Since(start).Round(time.Second))
	}
}

// A convert killed after it marked a job done but before it deleted the job's
// claims (functions/convert/function.go, finish) leaves a claim document: the
// broker's retry of the killed delivery finds the job done, replays the reply
// and drops the claim. (Found by TestCrashConvertMidConversion, when a kill
// landed on the other conversion in flight: replay used to leave the claim
// for good. Fixed in 287d96b.)
func TestRedeliveryDropsClaimsOfAFinishedJob(t *testing.T) {
	r := record(t, "regression: the redelivery after a crash in finish drops the job's claims")
	r.Runs++
	s := sharedSystem(t)
	ctx := context.Background()
	prefix := "claim" + stacktest.RandomHex(4) + "_"
	videos := s.mongo.Database(prefix + "videos")
	defer videos.Drop(ctx)
	defer s.mongo.Database(prefix + "mp3s").Drop(ctx)

	// What the crashed attempt left: the job done, its MP3 stored, its claim.
	oid := bson.NewObjectID()
	now := time.Now().UTC()
	if _, err := videos.Collection("jobs").InsertOne(ctx, bson.D{{Key: "_id", Value: oid}, {Key: "username", Value: stacktest.AdminEmail},
		{Key: "filename", Value: "a.mp4"}, {Key: "content_type", Value: "video/mp4"}, {Key: "size", Value: int64(10)},
		{Key: "state", Value: "done"}, {Key: "mp3_fid", Value: oid.Hex()},
		{Key: "attempts", Value: int32(1)}, {Key: "created_at", Value: now}, {Key: "updated_at", Value: now}}); err != nil {
		t.Fatal(err)
	}
	mp3, err := s.mongo.Database(prefix+"mp3s").GridFSBucket().OpenUploadStreamWithID(ctx, oid, "a.mp3",
		options.GridFSUpload().SetMetadata(bson.D{{Key: "username", Value: stacktest.AdminEmail}, {Key: "duration_seconds", Value: 1.0}}))
	if err == nil {
		_, err = mp3.Write([]byte("ID3 an mp3"))
	}
	if err == nil {
		err = mp3.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := videos.Collection("convert_claims").InsertOne(ctx, bson.D{{Key: "_id", Value: oid.Hex() + "/1"},
		{Key: "video_fid", Value: oid}, {Key: "attempt", Value: int32(1)}, {Key: "lease_until", Value: now}, {Key: "created_at", Value: now}}); err != nil {
		t.Fatal(err)
	}

	// The broker's retry of the killed delivery.
	fn := convert.New()
	if err := fn.Start(ctx, map[string]string{"MONGODB_URI": s.mongoDirect, "MONGODB_DB_PREFIX": prefix, "PATH": s.Env["PATH"]}); err != nil {
		t.Fatal(err)
	}
	defer fn.Stop(ctx)
	data := fmt.Sprintf(`{"video_fid":%q,"username":%q,"filename":"a.mp4","content_type":"video/mp4","size":10}`, oid.Hex(), stacktest.AdminEmail)
	rec := httptest.NewRecorder()
	fn.Handle(rec, eventRequest("/", true, "dev.mp3converter.video.uploaded", oid.Hex(), "application/json", []byte(data)))
	if rec.Code != http.StatusOK || rec.Header().Get("Ce-Type") != "dev.mp3converter.mp3.converted" {
		t.Fatalf("the redelivery: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	if n, _ := videos.Collection("convert_claims").CountDocuments(ctx, bson.D{}); n != 0 {
		r.Failures++
		t.Fatalf("%d claim(s) left after the redelivery of a done job", n)
	}
}

// MongoDB fails for 2 s right after notify's email went out, before notify
// has settled its claim: notify settles it once MongoDB is back, and a later
// delivery of the event (here after the claim would be stale) sends nothing.
// (Found by TestBackingServiceOutages: notify used to try settling once, left
// the claim when that failed, and a later delivery took the "stale" claim over
// and sent the email again. Fixed in 287d96b: it retries for up to 20 s; an
// outage longer than that still leaves the claim.)
func TestNotifySettlesItsClaimThroughAShortOutage(t *testing.T) {
	r := record(t, "regression: notify settles its claim through a 2 s MongoDB outage after the send")
	r.Runs++
	ctx := context.Background()
	s := sharedSystem(t)
	u, _ := url.Parse(s.mongoDirect)
	mongoProxy, err := faultproxy.Start(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer mongoProxy.Close()
	u.Host = mongoProxy.Addr()

	// An SMTP server that cuts MongoDB for 2 s the moment it has accepted a message.
	var mu sync.Mutex
	var sent int
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &cuttingSession{accepted: func() {
			mu.Lock()
			sent++
			mu.Unlock()
			mongoProxy.Cut()
			time.AfterFunc(2*time.Second, mongoProxy.Restore) // the outage, not a wait for anything
		}}, nil
	}))
	srv.Domain, srv.AllowInsecureAuth = "localhost", true
	go srv.Serve(ln)
	defer srv.Close()

	prefix := "notify" + stacktest.RandomHex(4) + "_"
	jobs := s.mongo.Database(prefix + "videos").Collection("jobs")
	defer jobs.Database().Drop(ctx)
	oid := bson.NewObjectID()
	now := time.Now().UTC()
	if _, err := jobs.InsertOne(ctx, bson.D{{Key: "_id", Value: oid}, {Key: "username", Value: stacktest.AdminEmail}, {Key: "filename", Value: "a.mp4"},
		{Key: "state", Value: "done"}, {Key: "mp3_fid", Value: oid.Hex()}, {Key: "created_at", Value: now}, {Key: "updated_at", Value: now}}); err != nil {
		t.Fatal(err)
	}
	fn := notify.New()
	if err := fn.Start(ctx, map[string]string{"MONGODB_URI": u.String(), "MONGODB_DB_PREFIX": prefix,
		"SMTP_URL": "smtp://" + ln.Addr().String(), "SMTP_TIMEOUT": "5s", "LINK_SECRET": "a link secret of at least 32 bytes, for tests"}); err != nil {
		t.Fatal(err)
	}
	defer fn.Stop(ctx)
	e := event.New()
	e.SetID("mp3-" + oid.Hex())
	e.SetType("dev.mp3converter.mp3.converted")
	e.SetSource("/functions/convert")
	e.SetData(event.ApplicationJSON, map[string]any{"video_fid": oid.Hex(), "mp3_fid": oid.Hex(), "username": stacktest.AdminEmail,
		"filename": "a.mp3", "size": 1000, "duration_seconds": 2.0})

	if _, err := fn.Handle(ctx, e); err != nil {
		t.Fatalf("the first delivery: %v", err)
	}
	var j bson.M
	if err := jobs.FindOne(ctx, bson.D{{Key: "_id", Value: oid}}).Decode(&j); err != nil {
		t.Fatal(err)
	}
	if claim, ok := j["notify_claim"]; ok {
		r.Failures++
		t.Errorf("the email is sent but the job still carries notify's claim %v", claim)
	}
	// Later (the claim is stale by then), the event comes again.
	if _, err := jobs.UpdateOne(ctx, bson.D{{Key: "_id", Value: oid}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "notified_at", Value: now.Add(-time.Hour)}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := fn.Handle(ctx, e); err != nil {
		t.Fatalf("the later delivery: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if sent != 1 {
		r.Duplicates += sent - 1
		t.Fatalf("%d emails sent for one job, want 1", sent)
	}
}

// cuttingSession accepts every message and calls accepted once it has it.
type cuttingSession struct{ accepted func() }

func (s *cuttingSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *cuttingSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *cuttingSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.accepted()
	return nil
}
func (s *cuttingSession) Reset()        {}
func (s *cuttingSession) Logout() error { return nil }
