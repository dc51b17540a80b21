package stack_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/http"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	convert "mp3converter/functions/convert"
	"mp3converter/internal/client"
	"mp3converter/internal/mailtest"
	"mp3converter/internal/stacktest"
)

// The whole pipeline, as a user meets it: log in, upload, get the email,
// follow its link, download the MP3. Real parts throughout: the functions,
// the local Broker (RabbitMQ when RABBITMQ_URL is set), MySQL (MariaDB when
// MYSQL_DSN is set, else embedded), FerretDB (or MONGODB_URI), an SMTP
// server on loopback and ffmpeg.
func TestPipelineEndToEnd(t *testing.T) {
	e := startStack(t, stacktest.Options{})
	video := stacktest.Video(t, t.TempDir(), "holiday clip.mp4", 2)

	fid := e.Upload(t, e.AdminToken, video, "holiday clip.mp4")
	msg := nextMail(t, e.Mail)
	if msg.To[0] != stacktest.AdminEmail || !strings.Contains(msg.subject, "Your MP3 is ready: holiday clip.mp3") {
		t.Fatalf("mail to %v, subject %q", msg.To, msg.subject)
	}
	link := regexp.MustCompile(`https?://\S+/download\?\S+`).FindString(msg.text)
	u, err := url.Parse(link)
	if err != nil || !strings.HasPrefix(link, e.URL+"/download?") || u.Query().Get("fid") != fid || u.Query().Get("sig") == "" {
		t.Fatalf("no signed download link for %s at %s in:\n%s", fid, e.URL, msg.text)
	}
	if !strings.Contains(msg.html, "<html") && !strings.Contains(msg.html, "<p") {
		t.Fatalf("no HTML part:\n%s", msg.html)
	}

	// The link downloads the MP3 in a plain browser tab: no token, the name of the upload.
	resp, err := http.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	mp3 := filepath.Join(t.TempDir(), "from-the-email.mp3")
	saveBody(t, resp, mp3)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "audio/mpeg" ||
		!strings.Contains(resp.Header.Get("Content-Disposition"), "holiday clip.mp3") {
		t.Fatalf("the email's link: %d %v", resp.StatusCode, resp.Header)
	}
	codec, duration := stacktest.Probe(t, mp3)
	if codec != "mp3" || duration < 1.8 || duration > 2.3 {
		t.Fatalf("downloaded %s of %.2f s, want an MP3 of about 2 s", codec, duration)
	}
	// The same link tampered, or moved to another file, is refused.
	q := u.Query()
	q.Set("sig", strings.Map(func(r rune) rune {
		if r == 'A' {
			return 'B'
		}
		return 'A'
	}, q.Get("sig")))
	other := u.Query()
	other.Set("fid", strings.Repeat("0", 24))
	for _, bad := range []url.Values{q, other} {
		u.RawQuery = bad.Encode()
		resp, err := http.Get(u.String())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", u, resp.StatusCode)
		}
	}

	job := jobOf(t, e, fid)
	if job.State != "done" || job.MP3FID != fid {
		t.Fatalf("job = %+v", job)
	}
	// Another user cannot see it: the same 404 as a missing job.
	ctx := context.Background()
	stranger := e.Client(e.AddUser(t, "stranger@example.com"))
	if _, err := stranger.Job(ctx, fid); status(err) != http.StatusNotFound {
		t.Fatalf("stranger's /jobs: %v, want 404", err)
	}
	d, err := stranger.OpenDownload(ctx, fid, 0, "")
	if err == nil {
		d.Body.Close()
	}
	if status(err) != http.StatusNotFound {
		t.Fatalf("stranger's /download: %v, want 404", err)
	}
}

// One user sends 16 small uploads at once, with plain HTTP and no retries: all 16 are
// accepted (the host queues what upload's containerConcurrency does not admit, and upload
// lets the user's uploads beyond their share wait their turn) and all 16 are converted,
// one email each. Before, 4 were accepted and 12 refused with 503.
func TestOneUsersBurstOfUploadsAllConvert(t *testing.T) {
	e := startStack(t, stacktest.Options{})
	video := stacktest.Video(t, t.TempDir(), "clip.mp4", 6) // about 90 KB, as in issue 16
	body, err := os.ReadFile(video)
	if err != nil {
		t.Fatal(err)
	}
	user := e.Client(e.AddUser(t, "burst@example.com"))
	const n = 16
	fids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for k := range n {
		wg.Go(func() {
			up, err := user.Upload(context.Background(), bytes.NewReader(body), int64(len(body)), fmt.Sprintf("clip-%d.mp4", k), "video/mp4")
			fids[k], errs[k] = up.VideoFID, err
		})
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			t.Errorf("upload %d of %d bytes: %v", k, len(body), err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	mailed := map[string]bool{}
	for range n {
		m := nextMail(t, e.Mail)
		if !strings.Contains(m.subject, "Your MP3 is ready") {
			t.Errorf("mail %q, want an MP3 ready", m.subject)
		}
		mailed[m.subject] = true
	}
	if len(mailed) != n {
		t.Errorf("%d distinct emails, want %d", len(mailed), n)
	}
	for _, fid := range fids {
		if j := jobOf(t, e, fid); j.State != "done" {
			t.Errorf("job %s: %s %s", fid, j.State, j.Reason)
		}
	}
}

// saveBody writes resp's body to path.
func saveBody(t *testing.T, resp *http.Response, path string) {
	t.Helper()
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		t.Fatal(err)
	}
}

func TestVideoWithoutAudioEndsInFailureEmail(t *testing.T) {
	e := startStack(t, stacktest.Options{})
	fid := e.Upload(t, e.AdminToken, stacktest.SilentVideo(t, t.TempDir(), "silent.mp4", 2), "silent.mp4")
	msg := nextMail(t, e.Mail)
	if !strings.Contains(msg.subject, "silent.mp4") || !strings.Contains(msg.text, "no audio") {
		t.Fatalf("failure mail: subject %q\n%s", msg.subject, msg.text)
	}
	if job := jobOf(t, e, fid); job.State != "failed" || !strings.Contains(job.Reason, "no audio") {
		t.Fatalf("job = %+v", job)
	}
}

// flakyConvert answers 503 to its first `failures` deliveries, then converts.
type flakyConvert struct {
	*convert.Function
	failures  int32
	delivered atomic.Int32
}

func (f *flakyConvert) Handle(w http.ResponseWriter, r *http.Request) {
	if f.delivered.Add(1) <= f.failures {
		http.Error(w, `{"error":"injected"}`, http.StatusServiceUnavailable)
		return
	}
	f.Function.Handle(w, r)
}

func TestConvertUnavailableIsRetried(t *testing.T) {
	flaky := &flakyConvert{Function: convert.New(), failures: 2}
	e := startStack(t, stacktest.Options{Instances: map[string]any{"convert": flaky}})
	fid := e.Upload(t, e.AdminToken, stacktest.Video(t, t.TempDir(), "retry.mp4", 2), "retry.mp4")
	msg := nextMail(t, e.Mail)
	if !strings.Contains(msg.subject, "ready") {
		t.Fatalf("subject %q, want the ready mail", msg.subject)
	}
	if got := flaky.delivered.Load(); got != 3 {
		t.Fatalf("convert saw %d deliveries, want 2 failures + 1 success", got)
	}
	if job := jobOf(t, e, fid); job.State != "done" {
		t.Fatalf("job = %+v", job)
	}
}

func TestConvertAlwaysFailingIsDeadLettered(t *testing.T) {
	flaky := &flakyConvert{Function: convert.New(), failures: 1 << 30}
	e := startStack(t, stacktest.Options{Instances: map[string]any{"convert": flaky}})
	fid := e.Upload(t, e.AdminToken, stacktest.Video(t, t.TempDir(), "doomed.mp4", 2), "doomed.mp4")
	msg := nextMail(t, e.Mail)
	if !strings.Contains(msg.text, "conversion could not be completed") {
		t.Fatalf("dead-letter mail:\n%s", msg.text)
	}
	if got := flaky.delivered.Load(); got != 1+fastRetries {
		t.Fatalf("convert saw %d deliveries, want 1 + %d retries", got, fastRetries)
	}
	job := jobOf(t, e, fid)
	if job.State != "failed" || !strings.Contains(job.Reason, "please upload again") {
		t.Fatalf("job = %+v", job)
	}
}

// --- the harness ---

// fastRetries: the harness's Broker retries a delivery this often, 10 ms
// apart, so that retry and dead-letter paths finish in a moment.
const fastRetries = 3

// startStack runs a stack (stacktest) with an SMTP server of its own and
// knative/'s Triggers with fast retries.
func startStack(t *testing.T, o stacktest.Options) *stacktest.Stack {
	t.Helper()
	manifests, err := stacktest.Manifests(stacktest.Retries("PT0.01S", "", fastRetries))
	if err != nil {
		t.Fatal(err)
	}
	o.Mail, o.Manifests = true, manifests
	return stacktest.Start(t, o)
}

// jobOf is the admin's view of the job.
func jobOf(t *testing.T, e *stacktest.Stack, fid string) client.Job {
	t.Helper()
	j, err := e.Client(e.AdminToken).Job(context.Background(), fid)
	if err != nil {
		t.Fatalf("job %s: %v", fid, err)
	}
	return j
}

// status is the HTTP status of an API error, 0 for another error or none.
func status(err error) int {
	var apiErr *client.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Status
	}
	return 0
}

type receivedMail struct {
	mailtest.Message
	subject, text, html string
}

// nextMail waits (bounded) for the next email and splits its parts.
func nextMail(t *testing.T, inbox *mailtest.Server) receivedMail {
	t.Helper()
	select {
	case m := <-inbox.Received:
		return parseMail(t, m)
	case <-time.After(2 * time.Minute):
		t.Fatal("no email within 2 minutes")
	}
	panic("unreachable")
}

func parseMail(t *testing.T, m mailtest.Message) receivedMail {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatal(err)
	}
	out := receivedMail{Message: m}
	out.subject, _ = new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var r io.Reader = p
		if p.Header.Get("Content-Transfer-Encoding") == "quoted-printable" {
			r = quotedprintable.NewReader(p)
		}
		b, _ := io.ReadAll(r)
		switch ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); ct {
		case "text/plain":
			out.text = string(b)
		case "text/html":
			out.html = string(b)
		}
	}
	return out
}
