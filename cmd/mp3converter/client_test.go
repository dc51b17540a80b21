package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mp3converter/internal/client"
	"mp3converter/internal/stacktest"
)

var fidPattern = regexp.MustCompile(`[0-9a-f]{24}`)

func TestLoginReadsPasswordFromStdinAndKeepsToken(t *testing.T) {
	url, _ := server(t)
	dir := t.TempDir()
	t.Setenv("MP3C_CONFIG_DIR", dir)
	t.Setenv("MP3C_TOKEN", "")

	// Not a terminal: the password is one line of stdin; the greeting goes to stdout.
	stdin := filepath.Join(t.TempDir(), "stdin")
	if err := os.WriteFile(stdin, []byte(stacktest.AdminPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(stdin)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(filepath.Join(t.TempDir(), "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	oldIn, oldOut := os.Stdin, os.Stdout
	os.Stdin, os.Stdout = in, out
	err = runLogin(context.Background(), []string{stacktest.AdminEmail, "--server", url})
	os.Stdin, os.Stdout = oldIn, oldOut
	if err != nil {
		t.Fatal(err)
	}
	if printed := string(readFile(t, out.Name())); !strings.Contains(printed, "Logged in to "+url+" as "+stacktest.AdminEmail) ||
		!strings.Contains(printed, "the token expires") {
		t.Fatalf("login printed %q", printed)
	}

	st, err := os.Stat(filepath.Join(dir, "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("tokens.json has mode %v, want 0600", st.Mode().Perm())
	}
	if strings.Contains(string(readFile(t, filepath.Join(dir, "tokens.json"))), stacktest.AdminPassword) {
		t.Fatal("the password was stored")
	}
	// The saved token is what the other commands use.
	listing, err := run(t, nil, statusCmd, "--server", url)
	if err != nil {
		t.Fatalf("status with the saved token: %v", err)
	}
	if !strings.Contains(listing, "VIDEO_FID") && !strings.Contains(listing, "No jobs yet") {
		t.Fatalf("status printed %q", listing)
	}
}

func TestConvertWritesMP3BesideInput(t *testing.T) {
	url := loggedIn(t)
	dir := t.TempDir()
	video := stacktest.Video(t, dir, "holiday clip.mp4", 2)

	out, err := run(t, nil, convertCmd, video, "--server", url)
	if err != nil {
		t.Fatal(err)
	}
	mp3 := filepath.Join(dir, "holiday clip.mp3")
	assertMP3(t, mp3)
	noPartFiles(t, dir)
	if !strings.Contains(out, "done -> "+mp3) {
		t.Fatalf("summary does not name %s:\n%s", mp3, out)
	}
	// Plain lines (not a terminal): the phases, by file name.
	for _, want := range []string{video + ": uploading", video + ": downloading", video + ": saved " + mp3} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestConvertTwoFilesIntoOutDirWithoutOverwriting(t *testing.T) {
	url := loggedIn(t)
	src := t.TempDir()
	a := stacktest.Video(t, src, "a.mp4", 2)
	b := stacktest.Video(t, src, "b.mov", 2)
	outDir := filepath.Join(t.TempDir(), "mp3s")
	// A different a.mp3 is already there: it must survive.
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	mine := []byte("my own a.mp3, not the converted one")
	if err := os.WriteFile(filepath.Join(outDir, "a.mp3"), mine, 0o644); err != nil {
		t.Fatal(err)
	}

	gate := &overlapTransport{both: make(chan struct{})}
	if _, err := run(t, &app{http: &http.Client{Transport: gate}}, convertCmd, "--out", outDir, a, b, "--server", url); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gate.both:
	default:
		t.Fatal("the two uploads did not run at the same time")
	}
	if got := readFile(t, filepath.Join(outDir, "a.mp3")); !bytes.Equal(got, mine) {
		t.Fatal("the existing a.mp3 was overwritten")
	}
	assertMP3(t, filepath.Join(outDir, "a (1).mp3"))
	assertMP3(t, filepath.Join(outDir, "b.mp3"))
	noPartFiles(t, outDir)
	if _, err := os.Stat(filepath.Join(src, "a.mp3")); err == nil {
		t.Fatal("--out given, but an MP3 was written beside the input")
	}

	// The same file again: the identical b.mp3 is recognised, no "b (1).mp3".
	if _, err := run(t, nil, convertCmd, "--out", outDir, b, "--server", url); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(outDir, "b (1).mp3")); err == nil {
		t.Log("the second conversion differs byte-wise from the first; kept beside it")
	}
}

// overlapTransport holds each upload until a second one has started (or
// 30 s have passed), to show that files are uploaded concurrently.
type overlapTransport struct {
	mu      sync.Mutex
	uploads int
	both    chan struct{}
}

func (o *overlapTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// An upload begins with a POST: the one-shot /upload or a resumable upload's creation.
	if req.Method == http.MethodPost && strings.HasPrefix(req.URL.Path, "/upload") {
		o.mu.Lock()
		if o.uploads++; o.uploads == 2 {
			close(o.both)
		}
		o.mu.Unlock()
		select {
		case <-o.both:
		case <-time.After(30 * time.Second):
		case <-req.Context().Done():
		}
	}
	return http.DefaultTransport.RoundTrip(req)
}

func TestNoWaitThenStatusAndDownload(t *testing.T) {
	url := loggedIn(t)
	dir := t.TempDir()
	video := stacktest.Video(t, dir, "talk.mp4", 2)

	out, err := run(t, nil, convertCmd, "--no-wait", video, "--server", url)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`talk\.mp4: uploaded as ([0-9a-f]{24}); ` + "`mp3converter status ([0-9a-f]{24})`").FindStringSubmatch(out)
	if m == nil || m[1] != m[2] {
		t.Fatalf("--no-wait printed no job id:\n%s", out)
	}
	fid := m[1]
	if _, err := os.Stat(filepath.Join(dir, "talk.mp3")); err == nil {
		t.Fatal("--no-wait downloaded the MP3")
	}
	job := shared.stack.WaitJob(t, shared.stack.AdminToken, fid, 2*time.Minute)
	if job.State != "done" {
		t.Fatalf("job = %+v", job)
	}

	// One job.
	one, err := run(t, nil, statusCmd, fid, "--server", url)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"file:", "talk.mp4", "state:", "done", "mp3converter download " + job.MP3FID} {
		if !strings.Contains(one, want) {
			t.Fatalf("status %s lacks %q:\n%s", fid, want, one)
		}
	}
	// The listing: a header and a row for this job.
	list, err := run(t, nil, statusCmd, "--server", url)
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile(`(?m)^` + fid + `\s+talk\.mp4\s+done\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d`)
	if !strings.HasPrefix(list, "VIDEO_FID") || !row.MatchString(list) {
		t.Fatalf("listing:\n%s", list)
	}

	// Download by fid: named by the server's Content-Disposition, in the current directory.
	work := t.TempDir()
	t.Chdir(work)
	if _, err := run(t, nil, downloadCmd, job.MP3FID, "--server", url); err != nil {
		t.Fatal(err)
	}
	assertMP3(t, filepath.Join(work, "talk.mp3"))
	// -o names the file; an existing different file there is refused.
	if _, err := run(t, nil, downloadCmd, job.MP3FID, "-o", "renamed.mp3", "--server", url); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, filepath.Join(work, "talk.mp3")), readFile(t, filepath.Join(work, "renamed.mp3"))) {
		t.Fatal("the two downloads differ")
	}
	// -o DIR: the server's name, in DIR.
	os.Mkdir(filepath.Join(work, "sub"), 0o755)
	if _, err := run(t, nil, downloadCmd, job.MP3FID, "-o", "sub", "--server", url); err != nil {
		t.Fatal(err)
	}
	assertMP3(t, filepath.Join(work, "sub", "talk.mp3"))
	os.WriteFile(filepath.Join(work, "taken.mp3"), []byte("something else"), 0o644)
	_, err = run(t, nil, downloadCmd, job.MP3FID, "-o", "taken.mp3", "--server", url)
	if !errors.Is(err, errConflict) || !strings.Contains(err.Error(), "taken.mp3") {
		t.Fatalf("download -o onto another file: %v", err)
	}
	if string(readFile(t, filepath.Join(work, "taken.mp3"))) != "something else" {
		t.Fatal("taken.mp3 was overwritten")
	}
	noPartFiles(t, work)

	// Unknown ids are explained.
	_, err = run(t, nil, statusCmd, "0123456789abcdef01234567", "--server", url)
	if err == nil || !strings.Contains(err.Error(), "no job 0123456789abcdef01234567") {
		t.Fatalf("status of an unknown job: %v", err)
	}
	_, err = run(t, nil, downloadCmd, "0123456789abcdef01234567", "--server", url)
	if err == nil || !strings.Contains(err.Error(), "no MP3 0123456789abcdef01234567") {
		t.Fatalf("download of an unknown MP3: %v", err)
	}
}

// cuttingTransport ends the body of the first /download answer after cut
// bytes, as a dropped connection would, and records the download requests.
type cuttingTransport struct {
	cut      int64
	mu       sync.Mutex
	requests []http.Header
}

func (c *cuttingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || !strings.HasSuffix(req.URL.Path, "/download") {
		return resp, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests = append(c.requests, req.Header.Clone())
	if len(c.requests) == 1 {
		resp.Body = &cutBody{ReadCloser: resp.Body, left: c.cut}
	}
	return resp, nil
}

type cutBody struct {
	io.ReadCloser
	left int64
}

func (b *cutBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errors.New("connection reset (injected)")
	}
	n, err := b.ReadCloser.Read(p[:min(int64(len(p)), b.left)])
	b.left -= int64(n)
	return n, err
}

func TestInterruptedDownloadResumes(t *testing.T) {
	url := loggedIn(t)
	dir := t.TempDir()
	video := stacktest.Video(t, dir, "resume.mp4", 2)
	const cut = 10000

	transport := &cuttingTransport{cut: cut}
	a := &app{http: &http.Client{Transport: transport}}
	if _, err := run(t, a, convertCmd, video, "--server", url); err != nil {
		t.Fatal(err)
	}
	got := readFile(t, filepath.Join(dir, "resume.mp3"))
	noPartFiles(t, dir)

	transport.mu.Lock()
	reqs := transport.requests
	transport.mu.Unlock()
	if len(reqs) != 2 {
		t.Fatalf("%d download requests, want the cut one and one resuming", len(reqs))
	}
	if r := reqs[1].Get("Range"); r != fmt.Sprintf("bytes=%d-", cut) {
		t.Fatalf("resumed with Range %q", r)
	}
	if reqs[1].Get("If-Range") == "" {
		t.Fatal("resumed without If-Range")
	}

	// The same bytes as an uninterrupted download.
	c := &client.Client{Server: url, Token: shared.stack.AdminToken}
	fid := fidPattern.FindString(jobOf(t, c, "resume.mp4"))
	d, err := c.OpenDownload(context.Background(), fid, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	want, err := io.ReadAll(d.Body)
	d.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(want) <= cut {
		t.Fatalf("the MP3 has %d bytes: the cut at %d tests nothing", len(want), cut)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("resumed file: %d bytes, differs from the %d-byte original", len(got), len(want))
	}
	assertMP3(t, filepath.Join(dir, "resume.mp3"))
}

// jobOf returns the video_fid of the caller's newest job for filename.
func jobOf(t *testing.T, c *client.Client, filename string) string {
	t.Helper()
	jobs, _, err := c.Jobs(context.Background(), 100, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if j.Filename == filename {
			return j.VideoFID
		}
	}
	t.Fatalf("no job for %s", filename)
	return ""
}

// cancelOnPoll cancels the command's context at its first look at a job:
// Ctrl-C while the server converts.
type cancelOnPoll struct {
	cancel context.CancelFunc
	polled atomic.Bool
}

func (c *cancelOnPoll) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.Contains(req.URL.Path, "/jobs/") && !c.polled.Swap(true) {
		c.cancel()
	}
	return http.DefaultTransport.RoundTrip(req)
}

func TestInterruptSaysWhatIsLeftOnTheServer(t *testing.T) {
	url := loggedIn(t)
	dir := t.TempDir()
	video := stacktest.Video(t, dir, "long.mp4", 2)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out bytes.Buffer
	a := &app{out: &out, http: &http.Client{Transport: &cancelOnPoll{cancel: cancel}}, poll: 50 * time.Millisecond}
	err := a.convert(ctx, []string{video, "--server", url})
	t.Logf("output:\n%s", out.String())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled (exit status 130)", err)
	}
	m := regexp.MustCompile(`long\.mp4: uploaded as ([0-9a-f]{24}), still [a-z ]+; ` + "`mp3converter status ([0-9a-f]{24})` to follow it").FindStringSubmatch(out.String())
	if m == nil || m[1] != m[2] {
		t.Fatalf("no word about the job left on the server:\n%s", out.String())
	}
	// It is indeed there, and finishes without the client.
	if job := shared.stack.WaitJob(t, shared.stack.AdminToken, m[1], 2*time.Minute); job.State != "done" {
		t.Fatalf("job = %+v", job)
	}
	noPartFiles(t, dir)
}

func TestConvertErrorsAPersonUnderstands(t *testing.T) {
	url := loggedIn(t)
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.txt")
	os.WriteFile(text, []byte("these are my notes, not a video\n"), 0o644)
	good := stacktest.Video(t, dir, "fine.mp4", 2)
	big := filepath.Join(dir, "huge.mp4")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(2 * maxUpload); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// Text of an unknown extension goes as application/octet-stream: the
	// server sniffs it, after the client has started sending.
	sniffed := filepath.Join(dir, "log.dat")
	os.WriteFile(sniffed, bytes.Repeat([]byte("a line of a log file, not a video\n"), maxUpload/2/34), 0o644)

	t.Run("not media, too large, and a good one", func(t *testing.T) {
		out, err := run(t, nil, convertCmd, text, big, sniffed, good, "--server", url)
		if err == nil || err.Error() != "3 of 4 files failed" {
			t.Fatalf("err = %v, want 3 of 4 files failed", err)
		}
		for _, want := range []string{
			text + ": FAILED: refused, not media: ", // its type says text/plain, or its bytes do
			sniffed + ": FAILED: refused, not media: not a video or audio file (looks like text/plain)",
			fmt.Sprintf("%s: FAILED: too large for this server: upload larger than %d bytes (1.0 MiB)", big, maxUpload),
			good + ": done -> " + filepath.Join(dir, "fine.mp3"),
		} {
			if !strings.Contains(out, want) {
				t.Fatalf("summary lacks %q:\n%s", want, out)
			}
		}
		assertMP3(t, filepath.Join(dir, "fine.mp3"))
	})

	t.Run("conversion fails", func(t *testing.T) {
		silent := stacktest.SilentVideo(t, dir, "silent.mp4", 2)
		out, err := run(t, nil, convertCmd, silent, "--server", url)
		m := regexp.MustCompile(`silent\.mp4: FAILED \(job ([0-9a-f]{24})\): conversion failed: .*no audio`).FindStringSubmatch(out)
		if err == nil || m == nil {
			t.Fatalf("err = %v, output:\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Join(dir, "silent.mp3")); err == nil {
			t.Fatal("an MP3 was written for a failed job")
		}
		list, err := run(t, nil, statusCmd, "--server", url)
		if err != nil || !regexp.MustCompile(`(?m)^`+m[1]+`\s+silent\.mp4\s+failed\s+.*no audio`).MatchString(list) {
			t.Fatalf("status: %v\n%s", err, list)
		}
	})

	t.Run("garbage token", func(t *testing.T) {
		t.Setenv("MP3C_TOKEN", "not.a.token")
		out, err := run(t, nil, convertCmd, good, "--server", url)
		if err == nil || !strings.Contains(out, "run mp3converter login") {
			t.Fatalf("err = %v, output:\n%s", err, out)
		}
		_, err = run(t, nil, statusCmd, "--server", url)
		if err == nil || !strings.Contains(err.Error(), "run mp3converter login") {
			t.Fatalf("status: %v", err)
		}
	})

	t.Run("not logged in", func(t *testing.T) {
		t.Setenv("MP3C_TOKEN", "")
		_, err := run(t, nil, convertCmd, good, "--server", url)
		if err == nil || !strings.Contains(err.Error(), "run mp3converter login") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("expired saved token", func(t *testing.T) {
		t.Setenv("MP3C_TOKEN", "")
		t.Setenv("MP3C_CONFIG_DIR", t.TempDir())
		if err := client.SaveToken(client.SavedToken{Server: url, Email: stacktest.AdminEmail, Token: shared.stack.AdminToken, ExpiresAt: time.Now().Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
		_, err := run(t, nil, downloadCmd, "0123456789abcdef01234567", "--server", url)
		if err == nil || !strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), "run mp3converter login") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("server unreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := "http://" + ln.Addr().String()
		ln.Close()
		out, err := run(t, nil, convertCmd, good, "--server", closed)
		if err == nil || !strings.Contains(out, "server unreachable at "+closed) {
			t.Fatalf("err = %v, output:\n%s", err, out)
		}
		_, err = run(t, nil, statusCmd, "--server", closed)
		if err == nil || !strings.Contains(err.Error(), "server unreachable at "+closed) {
			t.Fatalf("status: %v", err)
		}
	})

	t.Run("no such file", func(t *testing.T) {
		out, err := run(t, nil, convertCmd, filepath.Join(dir, "missing.mp4"), "--server", url)
		if err == nil || !strings.Contains(out, "missing.mp4: FAILED: open") {
			t.Fatalf("err = %v, output:\n%s", err, out)
		}
	})
}

// busyTransport answers the first n uploads as a server with every slot
// taken does (503, Retry-After), and passes everything else to the server.
type busyTransport struct {
	n       atomic.Int32
	uploads atomic.Int32
}

func (b *busyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPatch && strings.HasPrefix(req.URL.Path, "/upload/") && b.uploads.Add(1) <= b.n.Load() {
		if req.Body != nil {
			req.Body.Close()
		}
		body := `{"error":"too many uploads at once, try again in a few seconds"}`
		return &http.Response{StatusCode: http.StatusServiceUnavailable, Request: req, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Retry-After": {"0"}, "Content-Type": {"application/json"}},
			Body:   io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body))}, nil
	}
	return http.DefaultTransport.RoundTrip(req)
}

// TestConvertWaitsOutABusyServer: an upload answered 503 with Retry-After is
// sent again after the wait instead of failing the file.
func TestConvertWaitsOutABusyServer(t *testing.T) {
	url := loggedIn(t)
	dir := t.TempDir()
	video := stacktest.Video(t, dir, "busy.mp4", 2)
	transport := &busyTransport{}
	transport.n.Store(2)
	out, err := run(t, &app{http: &http.Client{Transport: transport}}, convertCmd, video, "--server", url)
	if err != nil {
		t.Fatal(err)
	}
	if n := transport.uploads.Load(); n != 3 {
		t.Fatalf("%d uploads, want 2 refused and 1 accepted", n)
	}
	if !strings.Contains(out, "server busy") {
		t.Errorf("the output does not say the server was busy:\n%s", out)
	}
	assertMP3(t, filepath.Join(dir, "busy.mp3"))
}

// TestStatesShowConversionProgress: while converting, convert and status say
// how far ffmpeg is.
func TestStatesShowConversionProgress(t *testing.T) {
	p := 42
	j := client.Job{State: "converting", Progress: &p, Attempts: 2}
	if got := stateLabel(j); got != "converting 42% (attempt 2)" {
		t.Errorf("convert shows %q", got)
	}
	if got := stateWithProgress(j); got != "converting 42%" {
		t.Errorf("status shows %q", got)
	}
	if got := stateWithProgress(client.Job{State: "done", Progress: &p}); got != "done" {
		t.Errorf("a done job shows %q", got)
	}
}

// cutUpload ends the first PATCH of an upload after cut bytes and cancels the command (a
// dropped connection, then Ctrl-C); it records the PATCHes that reached the server whole.
type cutUpload struct {
	cut     int64
	cancel  context.CancelFunc
	mu      sync.Mutex
	patches []http.Header // of the PATCHes sent after the cut
	cutDone bool
}

type cutReader struct {
	r      io.Reader
	left   int64
	cancel context.CancelFunc
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		c.cancel()
		return 0, errors.New("connection dropped")
	}
	n, err := c.r.Read(p[:min(int64(len(p)), c.left)])
	c.left -= int64(n)
	return n, err
}

func (c *cutUpload) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPatch {
		c.mu.Lock()
		first := !c.cutDone
		c.cutDone = true
		if !first {
			h := req.Header.Clone()
			h.Set("Content-Length", strconv.FormatInt(req.ContentLength, 10))
			c.patches = append(c.patches, h)
		}
		c.mu.Unlock()
		if first {
			req.Body = io.NopCloser(&cutReader{r: req.Body, left: c.cut, cancel: c.cancel})
		}
	}
	return http.DefaultTransport.RoundTrip(req)
}

// TestInterruptedUploadResumes: a convert cut off while uploading is resumed by the next
// convert of the same file, which sends only what the server does not have and says so.
func TestInterruptedUploadResumes(t *testing.T) {
	url := loggedIn(t)
	dir := t.TempDir()
	video := stacktest.Video(t, dir, "upload-resume.mp4", 8) // big enough to cut in the middle of a chunk
	st, err := os.Stat(video)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	transport := &cutUpload{cut: st.Size() / 2, cancel: cancel}
	var out bytes.Buffer
	a := &app{out: &out, http: &http.Client{Transport: transport}, poll: 50 * time.Millisecond}
	err = a.convert(ctx, []string{video, "--server", url})
	t.Logf("first run:\n%s", out.String())
	if !errors.Is(err, context.Canceled) || !strings.Contains(out.String(), "interrupted while uploading; the same convert resumes it") {
		t.Fatalf("first run: err %v", err)
	}

	// The server keeps what reached it once the cut request has ended there.
	saved, ok := client.FindUpload(url, video, st.Size(), st.ModTime())
	if !ok {
		t.Fatal("the interrupted upload is not remembered")
	}
	c := &client.Client{Server: url, Token: shared.stack.AdminToken}
	for deadline := time.Now().Add(time.Minute); ; {
		state, err := c.UploadOffset(context.Background(), saved.URL)
		if err == nil && state.Offset > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server kept nothing of the cut upload: %+v %v", state, err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	out2, err := run(t, &app{http: &http.Client{Transport: transport}}, convertCmd, video, "--server", url)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`resuming the upload: (.+) of (.+) already on the server, skipped`).FindStringSubmatch(out2)
	if m == nil {
		t.Fatalf("the second run does not say what it skipped:\n%s", out2)
	}
	transport.mu.Lock()
	patches := transport.patches
	transport.mu.Unlock()
	last := patches[len(patches)-1]
	offset, _ := strconv.ParseInt(last.Get("Upload-Offset"), 10, 64)
	sent, _ := strconv.ParseInt(last.Get("Content-Length"), 10, 64)
	if offset <= 0 || offset > transport.cut || sent != st.Size()-offset {
		t.Fatalf("resumed at %d sending %d bytes; want 1..%d and the rest of %d", offset, sent, transport.cut, st.Size())
	}
	if codec, secs := stacktest.Probe(t, filepath.Join(dir, "upload-resume.mp3")); codec != "mp3" || secs < 7.5 || secs > 8.5 {
		t.Fatalf("%s of %.2f s, want an MP3 of about 8 s", codec, secs)
	}
	// Done: the next convert of the file uploads it afresh.
	if saved, ok := client.FindUpload(url, video, st.Size(), st.ModTime()); ok {
		t.Errorf("the finished upload is still remembered: %+v", saved)
	}
}
