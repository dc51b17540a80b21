package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"mp3converter/internal/client"
)

// parallelFiles: convert works on at most this many files at once.
const parallelFiles = 3

// runConvert is `mp3converter convert` on stdout; tests call (*app).convert
// with their own writer and client.
func runConvert(ctx context.Context, args []string) error {
	return (&app{out: os.Stdout}).convert(ctx, args)
}

// fileResult is what became of one file given to convert.
type fileResult struct {
	input    string
	videoFID string
	job      client.Job // the last state seen
	target   string     // where the MP3 goes
	saved    string     // the MP3 written (target, or "name (1).mp3" when target was taken)
	stage    string     // where it stopped: queued, upload, convert, download; "" when complete
	err      error
}

// convert uploads each file, follows its conversion and downloads the MP3.
func (a *app) convert(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	server := serverFlag(fs)
	outDir := fs.String("out", "", "write the MP3s into this directory (default: beside each input)")
	noWait := fs.Bool("no-wait", false, "upload, print the job ids and return without waiting for the MP3s")
	if err := fs.Parse(reorder(args)); err != nil {
		return helpIsNoError(err)
	}
	files := fs.Args()
	if len(files) == 0 {
		return errors.New("usage: mp3converter convert FILE... [--out DIR] [--no-wait]")
	}
	c, err := a.client(*server)
	if err != nil {
		return err
	}
	if *outDir != "" {
		if err := os.MkdirAll(*outDir, 0o755); err != nil {
			return err
		}
	}

	disp := newDisplay(a.out)
	results := make([]fileResult, len(files))
	trackers := make([]tracker, len(files))
	for i, f := range files {
		trackers[i] = disp.track(f)
	}
	sem := make(chan struct{}, parallelFiles)
	var wg sync.WaitGroup
	for i, f := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
				results[i] = a.convertOne(ctx, c, f, *outDir, *noWait, trackers[i])
			case <-ctx.Done():
				results[i] = fileResult{input: f, stage: "queued", err: ctx.Err()}
				trackers[i].fail("not started")
			}
		}()
	}
	wg.Wait()
	disp.wait()
	return summarize(ctx, a.out, results, *noWait)
}

// convertOne is the whole journey of one file; it always ends its tracker.
func (a *app) convertOne(ctx context.Context, c *client.Client, path, outDir string, noWait bool, tr tracker) (res fileResult) {
	res = fileResult{input: path, stage: "upload"}
	defer func() {
		switch {
		case res.err == nil && res.stage == "":
			if noWait {
				tr.done("uploaded as " + res.videoFID)
			} else {
				tr.done("saved " + res.saved)
			}
		case errors.Is(res.err, context.Canceled):
			tr.fail("interrupted")
		default:
			tr.fail(res.err.Error())
		}
	}()

	up, err := a.upload(ctx, c, path, tr)
	if err != nil {
		res.err = err
		return res
	}
	res.videoFID = up.VideoFID
	if noWait {
		res.stage = ""
		return res
	}
	tr.state("uploaded as " + up.VideoFID)

	res.stage = "convert"
	res.job, res.err = a.follow(ctx, c, up.VideoFID, tr)
	if res.err != nil {
		return res
	}
	if res.job.State == "failed" {
		res.err = fmt.Errorf("conversion failed: %s", res.job.Reason)
		return res
	}

	res.stage = "download"
	dir := outDir
	if dir == "" {
		dir = filepath.Dir(path)
	}
	res.target = filepath.Join(dir, mp3Name(filepath.Base(path)))
	res.saved, res.err = a.fetch(ctx, c, res.job.MP3FID, func(string) (string, bool) { return res.target, false }, tr)
	if res.err == nil {
		res.stage = ""
	}
	return res
}

// upload sends the file as a resumable (tus) upload, with its type guessed from the
// extension. The upload's URL is kept in the config dir until the job exists, so that a
// convert of the same file cut short (Ctrl-C, a lost connection) resumes where the server
// stopped; within one run, a dropped connection or a busy server is resumed too.
func (a *app) upload(ctx context.Context, c *client.Client, path string, tr tracker) (client.Uploaded, error) {
	f, err := os.Open(path)
	if err != nil {
		return client.Uploaded{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return client.Uploaded{}, err
	}
	if !st.Mode().IsRegular() {
		return client.Uploaded{}, fmt.Errorf("%s is not a regular file", path)
	}
	contentType := mime.TypeByExtension(filepath.Ext(path))
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return client.Uploaded{}, err
	}

	uploadURL, offset, done, err := a.resumeUpload(ctx, c, abs, st)
	if err != nil || done != nil {
		return derefUploaded(done), err
	}
	if uploadURL == "" {
		if uploadURL, err = c.CreateUpload(ctx, st.Size(), filepath.Base(path), contentType); err != nil {
			return client.Uploaded{}, explainUpload(err)
		}
		saved := client.SavedUpload{Server: c.Server, Path: abs, Size: st.Size(), ModTime: st.ModTime(), URL: uploadURL}
		if err := client.SaveUpload(saved); err != nil {
			tr.state("cannot remember the upload to resume it later: " + err.Error())
		}
	}
	for retries := 0; ; retries++ {
		tr.phase("uploading", st.Size())
		tr.add(offset)
		rest := st.Size() - offset
		state, err := c.PatchUpload(ctx, uploadURL, offset, &progressReader{r: io.NewSectionReader(f, offset, rest), tr: tr}, rest)
		if err == nil && state.Done != nil {
			_ = client.ForgetUpload(c.Server, abs)
			return *state.Done, nil
		}
		if err == nil {
			err = fmt.Errorf("the server stored %d of %d bytes and asked for no more", state.Offset, st.Size())
		}
		wait, again := client.RetryUpload(err)
		if !again || retries >= maxBusyRetries || ctx.Err() != nil {
			if ctx.Err() != nil {
				return client.Uploaded{}, ctx.Err()
			}
			if !again {
				_ = client.ForgetUpload(c.Server, abs) // refused for good: nothing to resume
			}
			return client.Uploaded{}, explainUpload(err)
		}
		if busyWait, busy := busyFor(err); busy {
			tr.state(fmt.Sprintf("server busy, trying again in %s", busyWait))
		} else {
			tr.state(fmt.Sprintf("upload interrupted (%v), resuming in %s", explain(err), wait))
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return client.Uploaded{}, err
		}
		state, err = c.UploadOffset(ctx, uploadURL)
		switch {
		case err == nil && state.Done != nil:
			_ = client.ForgetUpload(c.Server, abs)
			return *state.Done, nil
		case err == nil:
			offset = state.Offset
		case ctx.Err() != nil:
			return client.Uploaded{}, ctx.Err()
		}
		// A failed HEAD: the next PATCH, from the offset known, finds out more.
	}
}

// resumeUpload looks for an upload of this very file that an earlier convert began: its URL
// and how much the server has, or the job when it finished. It says how much it skips.
func (a *app) resumeUpload(ctx context.Context, c *client.Client, abs string, st os.FileInfo) (uploadURL string, offset int64, done *client.Uploaded, err error) {
	saved, ok := client.FindUpload(c.Server, abs, st.Size(), st.ModTime())
	if !ok {
		return "", 0, nil, nil
	}
	state, err := c.UploadOffset(ctx, saved.URL)
	var apiErr *client.APIError
	switch {
	case err == nil && state.Done != nil:
		_ = client.ForgetUpload(c.Server, abs)
		fmt.Fprintf(a.out, "%s: already uploaded as %s\n", abs, state.Done.VideoFID)
		return "", 0, state.Done, nil
	case err == nil:
		fmt.Fprintf(a.out, "%s: resuming the upload: %s of %s already on the server, skipped\n", abs, size(state.Offset), size(st.Size()))
		return saved.URL, state.Offset, nil, nil
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound:
		_ = client.ForgetUpload(c.Server, abs) // expired: start again
		fmt.Fprintf(a.out, "%s: the earlier upload expired on the server; starting again\n", abs)
		return "", 0, nil, nil
	}
	return "", 0, nil, explainUpload(err)
}

func derefUploaded(u *client.Uploaded) client.Uploaded {
	if u == nil {
		return client.Uploaded{}
	}
	return *u
}

// maxBusyRetries bounds how often an upload is resumed within one run: the server
// was too busy to take it (503), or the connection dropped.
const maxBusyRetries = 20

// busyFor tells whether err is the server's "busy, try again" (503) and how
// long it asked to wait (Retry-After in seconds; 5 s when it did not say,
// at most a minute).
func busyFor(err error) (time.Duration, bool) {
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusServiceUnavailable {
		return 0, false
	}
	secs, perr := strconv.Atoi(apiErr.Header.Get("Retry-After"))
	if perr != nil || secs < 0 {
		secs = 5
	}
	return min(time.Duration(secs)*time.Second, time.Minute), true
}

var bytesInMessage = regexp.MustCompile(`(\d+) bytes`)

// explainUpload says why the server refused a file, in its words plus a readable size.
func explainUpload(err error) error {
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) {
		return explain(err)
	}
	switch apiErr.Status {
	case http.StatusRequestEntityTooLarge:
		msg := bytesInMessage.ReplaceAllStringFunc(apiErr.Message, func(m string) string {
			n, err := strconv.ParseInt(strings.Fields(m)[0], 10, 64)
			if err != nil {
				return m
			}
			return fmt.Sprintf("%s (%s)", m, size(n))
		})
		return fmt.Errorf("too large for this server: %s", msg)
	case http.StatusUnsupportedMediaType:
		return fmt.Errorf("refused, not media: %s", apiErr.Message)
	}
	return explain(err)
}

// follow looks at the job until it is done or failed, waiting a little
// longer each time, and shows its state.
func (a *app) follow(ctx context.Context, c *client.Client, fid string, tr tracker) (client.Job, error) {
	wait := a.interval()
	shown := ""
	var job client.Job
	for failures := 0; ; {
		j, err := c.Job(ctx, fid)
		switch {
		case err == nil:
			failures, job = 0, j
			if label := stateLabel(j); label != shown && j.State != "failed" { // a failure is told by the caller
				tr.state(label)
				shown = label
			}
			if j.Finished() {
				return j, nil
			}
		case ctx.Err() != nil:
			return job, ctx.Err()
		case client.IsTransient(err) && failures < maxPollErrors:
			failures++
		default:
			return job, explain(err)
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return job, err
		}
		wait = min(wait*3/2, maxPoll)
	}
}

// stateLabel is a job's state as a person reads it.
func stateLabel(j client.Job) string {
	switch j.State {
	case "uploaded":
		return "waiting for a converter"
	case "converting":
		label := "converting"
		if j.Progress != nil {
			label = fmt.Sprintf("converting %d%%", *j.Progress)
		}
		if j.Attempts > 1 {
			label += fmt.Sprintf(" (attempt %d)", j.Attempts)
		}
		return label
	case "done":
		return "converted"
	}
	return j.State
}

// mp3Name is clip.mp4 -> clip.mp3.
func mp3Name(base string) string {
	if ext := filepath.Ext(base); ext != "" && ext != base {
		base = strings.TrimSuffix(base, ext)
	}
	return base + ".mp3"
}

// summarize prints one line per file and returns an error when any failed
// (wrapping context.Canceled when interrupted, for exit status 130).
func summarize(ctx context.Context, out io.Writer, results []fileResult, noWait bool) error {
	failed := 0
	fmt.Fprintln(out)
	for _, r := range results {
		if r.err != nil {
			failed++
		}
		switch {
		case r.err == nil && noWait:
			fmt.Fprintf(out, "%s: uploaded as %s; `mp3converter status %s` to follow it\n", r.input, r.videoFID, r.videoFID)
		case r.err == nil:
			fmt.Fprintf(out, "%s: done -> %s\n", r.input, r.saved)
		case !errors.Is(r.err, context.Canceled) && r.stage == "download":
			fmt.Fprintf(out, "%s: FAILED (job %s): %v; `mp3converter download %s -o %s` tries again\n",
				r.input, r.videoFID, r.err, r.job.MP3FID, shellQuote(r.target))
		case !errors.Is(r.err, context.Canceled) && r.videoFID != "":
			fmt.Fprintf(out, "%s: FAILED (job %s): %v\n", r.input, r.videoFID, r.err)
		case !errors.Is(r.err, context.Canceled):
			fmt.Fprintf(out, "%s: FAILED: %v\n", r.input, r.err)
		case r.stage == "queued":
			fmt.Fprintf(out, "%s: not started\n", r.input)
		case r.stage == "upload":
			fmt.Fprintf(out, "%s: interrupted while uploading; the same convert resumes it where it stopped\n", r.input)
		case r.stage == "convert":
			state := "converting"
			if r.job.State == "uploaded" {
				state = "waiting for a converter"
			}
			fmt.Fprintf(out, "%s: uploaded as %s, still %s; `mp3converter status %s` to follow it\n",
				r.input, r.videoFID, state, r.videoFID)
		case r.stage == "download":
			fmt.Fprintf(out, "%s: converted, download interrupted; `mp3converter download %s -o %s` to get it\n",
				r.input, r.job.MP3FID, shellQuote(r.target))
		}
	}
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("interrupted: %w", ctx.Err())
	case failed > 0:
		return fmt.Errorf("%d of %d files failed", failed, len(results))
	}
	return nil
}

// shellQuote quotes a path for a command line when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
