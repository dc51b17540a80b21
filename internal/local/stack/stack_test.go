package stack

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/http"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/go-sql-driver/mysql"

	convert "mp3converter/functions/convert"
	"mp3converter/internal/client"
	"mp3converter/internal/mailtest"
	"mp3converter/knative"
)

// The whole pipeline, as a user meets it: log in, upload, get the email,
// follow its link, download the MP3. Real parts throughout: the functions,
// the local Broker (RabbitMQ when RABBITMQ_URL is set), MySQL (MariaDB when
// MYSQL_DSN is set, else embedded), FerretDB (or MONGODB_URI), an SMTP
// server on loopback and ffmpeg.
func TestPipelineEndToEnd(t *testing.T) {
	e := startStack(t, nil)
	video := makeVideo(t, "holiday clip.mp4", true)

	fid := e.upload(t, video)
	msg := e.nextMail(t)
	if msg.To[0] != adminEmail || !strings.Contains(msg.subject, "Your MP3 is ready: holiday clip.mp3") {
		t.Fatalf("mail to %v, subject %q", msg.To, msg.subject)
	}
	link := regexp.MustCompile(`https?://\S+/download\?fid=[0-9a-f]{24}`).FindString(msg.text)
	if link == "" || !strings.HasPrefix(link, e.URL) || !strings.HasSuffix(link, fid) {
		t.Fatalf("no download link for %s at %s in:\n%s", fid, e.URL, msg.text)
	}
	if !strings.Contains(msg.html, "<html") && !strings.Contains(msg.html, "<p") {
		t.Fatalf("no HTML part:\n%s", msg.html)
	}

	mp3 := filepath.Join(t.TempDir(), "out.mp3")
	e.download(t, link, mp3)
	codec, duration := probe(t, mp3)
	if codec != "mp3" || duration < 1.8 || duration > 2.3 {
		t.Fatalf("downloaded %s of %.2f s, want an MP3 of about 2 s", codec, duration)
	}

	job := e.job(t, fid, e.token)
	if job["state"] != "done" || job["mp3_fid"] != fid {
		t.Fatalf("job = %v", job)
	}
	// Another user cannot see it: the same 404 as a missing job.
	stranger := e.addUser(t, "stranger@example.com")
	if code := e.status(t, "/jobs/"+fid, stranger); code != http.StatusNotFound {
		t.Fatalf("stranger's /jobs = %d, want 404", code)
	}
	if code := e.status(t, "/download?fid="+fid, stranger); code != http.StatusNotFound {
		t.Fatalf("stranger's /download = %d, want 404", code)
	}
}

func TestVideoWithoutAudioEndsInFailureEmail(t *testing.T) {
	e := startStack(t, nil)
	fid := e.upload(t, makeVideo(t, "silent.mp4", false))
	msg := e.nextMail(t)
	if !strings.Contains(msg.subject, "silent.mp4") || !strings.Contains(msg.text, "no audio") {
		t.Fatalf("failure mail: subject %q\n%s", msg.subject, msg.text)
	}
	if job := e.job(t, fid, e.token); job["state"] != "failed" || !strings.Contains(fmt.Sprint(job["reason"]), "no audio") {
		t.Fatalf("job = %v", job)
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
	e := startStack(t, map[string]any{"convert": flaky})
	fid := e.upload(t, makeVideo(t, "retry.mp4", true))
	msg := e.nextMail(t)
	if !strings.Contains(msg.subject, "ready") {
		t.Fatalf("subject %q, want the ready mail", msg.subject)
	}
	if got := flaky.delivered.Load(); got != 3 {
		t.Fatalf("convert saw %d deliveries, want 2 failures + 1 success", got)
	}
	if job := e.job(t, fid, e.token); job["state"] != "done" {
		t.Fatalf("job = %v", job)
	}
}

func TestConvertAlwaysFailingIsDeadLettered(t *testing.T) {
	flaky := &flakyConvert{Function: convert.New(), failures: 1 << 30}
	e := startStack(t, map[string]any{"convert": flaky})
	fid := e.upload(t, makeVideo(t, "doomed.mp4", true))
	msg := e.nextMail(t)
	if !strings.Contains(msg.text, "conversion could not be completed") {
		t.Fatalf("dead-letter mail:\n%s", msg.text)
	}
	if got := flaky.delivered.Load(); got != 1+fastRetries {
		t.Fatalf("convert saw %d deliveries, want 1 + %d retries", got, fastRetries)
	}
	job := e.job(t, fid, e.token)
	if job["state"] != "failed" || !strings.Contains(fmt.Sprint(job["reason"]), "please upload again") {
		t.Fatalf("job = %v", job)
	}
}

// --- the harness ---

const (
	adminEmail    = "admin@example.com"
	adminPassword = "admin-password-1"
	fastRetries   = 3
)

type testStack struct {
	*Stack
	mail  *mailtest.Server
	token string
	api   *client.Client
	env   map[string]string // what the stack was started with
}

// startStack runs a stack on free ports with its own data, databases and
// queues, and fast retries: the Triggers of knative/ with short backoffs.
func startStack(t *testing.T, instances map[string]any) *testStack {
	t.Helper()
	return startStackWith(t, Config{Instances: instances})
}

// startStackWith is startStack with cfg's Instances and External; the
// harness sets everything else.
func startStackWith(t *testing.T, cfg Config) *testStack {
	t.Helper()
	mail, err := mailtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mail.Close() })

	suffix := randomHex(4)
	env := map[string]string{
		"PATH":                os.Getenv("PATH"),
		"TMPDIR":              t.TempDir(),
		"SMTP_URL":            mail.URL,
		"MP3C_ADMIN_EMAIL":    adminEmail,
		"MP3C_ADMIN_PASSWORD": adminPassword,
		"BCRYPT_COST":         "4",
		"RABBITMQ_URL":        os.Getenv("RABBITMQ_URL"),
	}
	if uri := os.Getenv("MONGODB_URI"); uri != "" {
		env["MONGODB_URI"] = uri
		env["MONGODB_DB_PREFIX"] = "e2e" + suffix + "_"
	}
	if dsn := os.Getenv("MYSQL_DSN"); dsn != "" {
		env["MYSQL_DSN"] = isolatedDSN(t, dsn, "e2e_"+suffix)
	}

	if url := env["RABBITMQ_URL"]; url != "" {
		// Registered first, so it runs after the stack has closed.
		t.Cleanup(func() { deleteBrokerTopology(t, url, "e2e"+suffix) })
	}
	ctx := context.Background()
	s, err := Start(ctx, Config{
		Addr:         "127.0.0.1:0",
		DataDir:      t.TempDir(),
		Env:          env,
		Instances:    cfg.Instances,
		External:     cfg.External,
		Manifests:    fastManifests(t),
		BrokerPrefix: "e2e" + suffix,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("closing the stack: %v", err)
		}
	})
	readyCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := s.WaitReady(readyCtx); err != nil {
		t.Fatal(err)
	}

	e := &testStack{Stack: s, mail: mail, env: env}
	e.api = &client.Client{Server: s.URL}
	tok, err := e.api.Login(ctx, adminEmail, adminPassword)
	if err != nil {
		t.Fatal(err)
	}
	e.token = tok.AccessToken
	return e
}

// fastManifests is knative/ with every backoff shortened and fewer retries,
// so retry and dead-letter paths finish in a moment.
func fastManifests(t *testing.T) fs.FS {
	t.Helper()
	out := fstest.MapFS{}
	err := fs.WalkDir(knative.Manifests, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(knative.Manifests, path)
		if err != nil {
			return err
		}
		text := regexp.MustCompile(`backoffDelay: \S+`).ReplaceAllString(string(data), "backoffDelay: PT0.01S")
		text = regexp.MustCompile(`retry: \d+`).ReplaceAllString(text, "retry: "+strconv.Itoa(fastRetries))
		out[path] = &fstest.MapFile{Data: []byte(text)}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// isolatedDSN points dsn at a database of its own, dropped after the test.
func isolatedDSN(t *testing.T, dsn, dbName string) string {
	t.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DBName = dbName
	cfg.ParseTime = true
	t.Cleanup(func() {
		admin := *cfg
		admin.DBName = ""
		db, err := sql.Open("mysql", admin.FormatDSN())
		if err == nil {
			db.Exec("DROP DATABASE IF EXISTS `" + dbName + "`")
			db.Close()
		}
	})
	return cfg.FormatDSN()
}

// upload posts a file as multipart, as curl -F does, and returns its video_fid.
func (e *testStack) upload(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	part, _ := mw.CreateFormFile("file", filepath.Base(path))
	io.Copy(part, f)
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, e.URL+"/upload", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		VideoFID  string `json:"video_fid"`
		StatusURL string `json:"status_url"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != http.StatusAccepted || len(out.VideoFID) != 24 {
		t.Fatalf("upload = %d %+v", resp.StatusCode, out)
	}
	return out.VideoFID
}

type receivedMail struct {
	mailtest.Message
	subject, text, html string
}

// nextMail waits (bounded) for the next email and splits its parts.
func (e *testStack) nextMail(t *testing.T) receivedMail {
	t.Helper()
	select {
	case m := <-e.mail.Received:
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

func (e *testStack) download(t *testing.T, link, path string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, link, nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "audio/mpeg" {
		t.Fatalf("download = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		t.Fatal(err)
	}
}

func (e *testStack) job(t *testing.T, fid, token string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.URL+"/jobs/"+fid, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var job map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&job); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("job %s = %d %v", fid, resp.StatusCode, err)
	}
	return job
}

func (e *testStack) status(t *testing.T, path, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// addUser creates a non-admin user through the admin API and returns its token.
func (e *testStack) addUser(t *testing.T, email string) string {
	t.Helper()
	ctx := context.Background()
	admin := &client.Client{Server: e.URL, Token: e.token}
	if _, err := admin.AddUser(ctx, email, "user-password-1", false); err != nil {
		t.Fatal(err)
	}
	tok, err := admin.Login(ctx, email, "user-password-1")
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

// makeVideo generates a 2-second H.264 clip (with a 440 Hz tone when
// withAudio) with ffmpeg's lavfi sources.
func makeVideo(t *testing.T, name string, withAudio bool) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	args := []string{"-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=duration=2:size=160x120:rate=10"}
	if withAudio {
		args = append(args, "-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac")
	}
	args = append(args, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-shortest", path)
	if out, err := exec.Command("ffmpeg", args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	return path
}

func probe(t *testing.T, path string) (codec string, seconds float64) {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "a:0",
		"-show_entries", "stream=codec_name:format=duration", "-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var p struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
		}
		Format struct{ Duration string }
	}
	json.Unmarshal(out, &p)
	if len(p.Streams) > 0 {
		codec = p.Streams[0].CodecName
	}
	seconds, _ = strconv.ParseFloat(p.Format.Duration, 64)
	return codec, seconds
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
