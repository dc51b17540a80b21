package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	convert "mp3converter/functions/convert"
)

const (
	typeUploaded  = "dev.mp3converter.video.uploaded"
	typeConverted = "dev.mp3converter.mp3.converted"
)

// convRuns are the samples of one video.
type convRuns struct {
	bare, upload, e2e, mail, handling                     samples // part A
	alone, read, probeIn, ffmpeg, probeOut, write, delete samples // part B
	mp3Size                                               int64
}

// conversion measures a video's way from the upload's 202 to a downloadable
// MP3 against the bare ffmpeg command convert runs, then convert alone (the
// event POSTed to it, its reply awaited) against the same command, and the
// stages of convert's work one by one.
func (b *bench) conversion(ctx context.Context) (*section, error) {
	sec := &section{title: "1. Conversion vs bare ffmpeg"}
	vids := []*video{b.media["60s-720p"], b.media["600s-480p"]}
	res := map[*video]*convRuns{}
	runsOf := func(v *video) int {
		if v.seconds > 60 {
			return b.opts.longRuns
		}
		return b.opts.runs
	}

	for _, v := range vids {
		res[v] = &convRuns{}
	}
	if err := b.endToEnd(ctx, vids, runsOf, res); err != nil {
		return nil, err
	}
	if err := b.convertAlone(ctx, vids, runsOf, res); err != nil {
		return nil, err
	}

	for _, v := range vids {
		r := res[v]
		label := v.label
		sec.add(label+": upload's 202 → MP3 downloadable (end to end)", r.e2e.String(), "bare ffmpeg "+r.bare.String(), ratio(r.e2e.median(), r.bare.median()))
		sec.add(label+": upload's 202 → email written (everything done)", r.mail.String(), "bare ffmpeg", ratio(r.mail.median(), r.bare.median()))
		mail, handling := r.mail.median(), r.handling.median()
		sec.add("&nbsp;&nbsp;of which convert's handling (event in → reply out, same runs)", r.handling.String(), "share of 202 → email", share(handling, mail))
		sec.add("&nbsp;&nbsp;of which Broker hops, notify and the email (202 → email − handling)", fmtDur(mail-handling), "share of 202 → email", share(mail-handling, mail))
		sec.add(label+": for reference, its upload (request start → 202)", r.upload.String()+", "+throughputOf(v.size, r.upload), "", "")
		sec.add(label+": convert alone (event POSTed by the harness, reply received)", r.alone.String(), "ffmpeg on the same file "+r.ffmpeg.String(), ratio(r.alone.median(), r.ffmpeg.median()))
		alone := r.alone.median()
		var sum time.Duration
		for _, st := range []struct {
			name string
			s    samples
		}{
			{"ffprobe of the video", r.probeIn},
			{"ffmpeg", r.ffmpeg},
			{"GridFS write of the MP3 (" + mib(r.mp3Size) + ")", r.write},
		} {
			m := st.s.median()
			sum += m
			sec.add("&nbsp;&nbsp;stage: "+st.name, st.s.String(), "share of convert alone", share(m, alone))
		}
		rest := fmtDur(alone - sum)
		if alone < sum {
			rest = "−" + fmtDur(sum-alone) + " (the stages, timed on another copy, summed to more: run-to-run noise)"
		}
		sec.add("&nbsp;&nbsp;remainder: the read's part that ffmpeg waited for, job/claim bookkeeping in MongoDB, HTTP (convert alone − stages)", rest, "share of convert alone", share(alone-sum, alone))
		sec.add("&nbsp;&nbsp;overlapped: GridFS read of the video ("+mib(v.size)+") alone (convert's ffprobe and ffmpeg read it over loopback HTTP as they go)", r.read.String(), "share of convert alone", share(r.read.median(), alone))
		sec.add("&nbsp;&nbsp;not in convert alone: ffprobe of the MP3 (convert reads its Xing header instead)", r.probeOut.String(), "", "")
		sec.add("&nbsp;&nbsp;not in convert alone: GridFS delete of the video (after the reply)", r.delete.String(), "", "")
	}
	sec.note("Videos: %s; %s. Generated once with ffmpeg lavfi testsrc + anoisesrc (pink noise, so the MP3 encoder works as on music) into bench/out/media and reused.", b.media["60s-720p"].describe, b.media["600s-480p"].describe)
	sec.note("Bare ffmpeg: `ffmpeg %s` on the file on local disk, the exact command functions/convert runs for an AAC track (MP3_QUALITY unset: -q:a 2).", strings.Join(ffmpegArgs("IN.mp4", "OUT.mp3"), " "))
	sec.note("End to end: the local stack in this process (internal/local/stack: web as the front door, the other functions, in-memory Broker with the knative/ Triggers, FerretDB on a fresh data dir); raw `POST /upload?filename=` (video/mp4) through the front door (web); the clock starts at the 202 and stops when `GET /jobs/{fid}` (polled every %s through the front door, so up to %s late) says done. The job is marked done before convert deletes the video and replies; the email (notify's .eml in the outbox, polled every %s) is the last step of a run. The harness then downloads the MP3 before the next run, so runs never overlap. Bare ffmpeg runs before each upload. Convert's handling: the stack's convert instance wrapped with a stopwatch around its Handle (Config.Instances), keyed by event id.", pollInterval, pollInterval, pollInterval)
	sec.note("Convert alone: a second stack on a fresh data dir whose convert Trigger's filter matches no event type; the video is uploaded through the front door, then the harness POSTs the video.uploaded CloudEvent (binary mode, as the Broker delivers it) straight to convert's port and times until the mp3.converted reply has arrived. Before that, on a separate upload of the same video, each stage convert performs is timed alone in the harness with mongo-driver v2 (128 KiB chunks) and the same ffprobe/ffmpeg commands on a local copy (convert itself gives them the video over loopback HTTP, served from GridFS with Range as they read, so the read overlaps them); the remainder is what convert does beyond the stages: waiting for the video's bytes, reading and claiming the job, marking it converting and done, dropping claims, the reply.")
	sec.note("Runs: %d for the 60 s video, %d for the 10-minute one (each costs about a minute of the time budget); medians, with min–max.", b.opts.runs, b.opts.longRuns)
	return sec, nil
}

// endToEnd times uploads through the front door (web) until the job is done and the
// email written, beside bare ffmpeg on the same file, on a stack with the
// knative/ Triggers whose convert is wrapped with a stopwatch.
func (b *bench) endToEnd(ctx context.Context, vids []*video, runsOf func(*video) int, res map[*video]*convRuns) error {
	timed := &timedConvert{Function: convert.New(), handling: map[string]time.Duration{}}
	s, err := b.startStackWith(ctx, "convert-e2e", true, map[string]any{"convert": timed})
	if err != nil {
		return err
	}
	defer s.close()
	for _, v := range vids {
		r := res[v]
		for i := range runsOf(v) {
			bare, err := timeCommand(ctx, "ffmpeg", ffmpegArgs(v.path, filepath.Join(s.dir, "tmp", "bare.mp3"))...)
			if err != nil {
				return err
			}
			st, _ := os.Stat(filepath.Join(s.dir, "tmp", "bare.mp3"))
			r.mp3Size = st.Size()
			t0 := time.Now()
			fid, at202, err := uploadFile(ctx, s.URL, s.AdminToken, v.path)
			if err != nil {
				return err
			}
			done, err := waitDone(ctx, s.URL, s.AdminToken, fid, 10*time.Minute)
			if err != nil {
				return err
			}
			// The email is the last step: after it nothing of this run is still working.
			if err := waitMail(ctx, s, fid, 5*time.Minute); err != nil {
				return err
			}
			mailed := time.Now()
			handling, ok := timed.took(fid)
			if !ok {
				return fmt.Errorf("convert never handled %s", fid)
			}
			if n, err := downloadTo(ctx, s.URL, s.AdminToken, fid, io.Discard); err != nil || n == 0 {
				return fmt.Errorf("the MP3 of %s is not downloadable: %d bytes, %v", fid, n, err)
			}
			r.bare = append(r.bare, bare)
			r.upload = append(r.upload, at202.Sub(t0))
			r.e2e = append(r.e2e, done.Sub(at202))
			r.mail = append(r.mail, mailed.Sub(at202))
			r.handling = append(r.handling, handling)
			b.progress("convert %s run %d: bare ffmpeg %s, 202→done %s, 202→email %s, convert's Handle %s", v.name, i+1, fmtDur(bare), fmtDur(done.Sub(at202)), fmtDur(mailed.Sub(at202)), fmtDur(handling))
		}
	}
	return nil
}

// convertAlone POSTs the video.uploaded event to convert itself and times
// the reply, after timing each stage of convert's work on another copy, on a
// stack whose convert Trigger routes nothing: uploads wait for the harness.
func (b *bench) convertAlone(ctx context.Context, vids []*video, runsOf func(*video) int, res map[*video]*convRuns) error {
	s, err := b.startStack(ctx, "convert-alone", false)
	if err != nil {
		return err
	}
	defer s.close()
	for _, v := range vids {
		r := res[v]
		for i := range runsOf(v) {
			if err := b.convertStages(ctx, s, v, r); err != nil {
				return err
			}
			d, _, err := convertOnce(ctx, s, v.path)
			if err != nil {
				return err
			}
			r.alone = append(r.alone, d)
			b.progress("convert %s run %d: convert alone %s (stages: read %s, ffprobe %s, ffmpeg %s, ffprobe %s, write %s, delete %s)",
				v.name, i+1, fmtDur(d), fmtDur(r.read[i]), fmtDur(r.probeIn[i]), fmtDur(r.ffmpeg[i]), fmtDur(r.probeOut[i]),
				fmtDur(r.write[i]), fmtDur(r.delete[i]))
		}
	}
	return nil
}

// convertOnce uploads the video at path through the front door of a stack whose convert
// Trigger routes nothing, then POSTs its video.uploaded event to convert and times the
// reply, which must be mp3.converted. It returns the time and the video's id.
func convertOnce(ctx context.Context, s *localStack, path string) (time.Duration, string, error) {
	fid, _, err := uploadFile(ctx, s.URL, s.AdminToken, path)
	if err != nil {
		return 0, "", err
	}
	job, err := jobDoc(ctx, s.mongo, fid)
	if err != nil {
		return 0, "", err
	}
	data := map[string]any{"video_fid": fid, "username": job["username"], "filename": job["filename"],
		"content_type": job["content_type"], "size": job["size"]}
	t := time.Now()
	reply, err := postEvent(ctx, s.Functions["convert"]+"/", typeUploaded, fid, "/functions/upload", data)
	d := time.Since(t)
	if err != nil {
		return 0, "", err
	}
	if reply != typeConverted {
		return 0, "", fmt.Errorf("convert replied %q to %s, want %s", reply, fid, typeConverted)
	}
	// convert deletes the video after its reply: wait for that, so that runs never overlap.
	oid, _ := bson.ObjectIDFromHex(fid)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		n, err := s.mongo.Database("videos").Collection("fs.files").CountDocuments(ctx, bson.D{{Key: "_id", Value: oid}})
		if err != nil {
			return 0, "", err
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			return 0, "", fmt.Errorf("convert did not delete the video %s within a minute of its reply", fid)
		}
	}
	return d, fid, nil
}

// convertStages does convert's work step by step on an uploaded copy of v
// and records how long each step took.
func (b *bench) convertStages(ctx context.Context, s *localStack, v *video, r *convRuns) error {
	fid, _, err := uploadFile(ctx, s.URL, s.AdminToken, v.path)
	if err != nil {
		return err
	}
	oid, _ := bson.ObjectIDFromHex(fid)
	dir, err := os.MkdirTemp(filepath.Join(s.dir, "tmp"), "stages-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	in, out := filepath.Join(dir, "input"), filepath.Join(dir, "audio.mp3")

	t := time.Now()
	if err := gridfsReadFile(ctx, s.mongo, "videos", oid, in); err != nil {
		return fmt.Errorf("stage read: %w", err)
	}
	r.read = append(r.read, time.Since(t))
	d, err := timeCommand(ctx, "ffprobe", ffprobeArgs(in)...)
	if err != nil {
		return err
	}
	r.probeIn = append(r.probeIn, d)
	if d, err = timeCommand(ctx, "ffmpeg", ffmpegArgs(in, out)...); err != nil {
		return err
	}
	r.ffmpeg = append(r.ffmpeg, d)
	if d, err = timeCommand(ctx, "ffprobe", ffprobeArgs(out)...); err != nil {
		return err
	}
	r.probeOut = append(r.probeOut, d)

	mp3ID := bson.NewObjectID()
	t = time.Now()
	n, err := gridfsWriteFile(ctx, s.mongo, "mp3s", mp3ID, out, bson.D{{Key: "username", Value: adminEmail}, {Key: "video_fid", Value: mp3ID.Hex()}})
	if err != nil {
		return fmt.Errorf("stage write: %w", err)
	}
	r.write = append(r.write, time.Since(t))
	r.mp3Size = n

	t = time.Now()
	if err := bucket(s.mongo, "videos").Delete(ctx, oid); err != nil {
		return fmt.Errorf("stage delete: %w", err)
	}
	r.delete = append(r.delete, time.Since(t))
	// The stage's job stays "uploaded": convert never sees its event.
	_, err = s.mongo.Database("videos").Collection("jobs").DeleteOne(ctx, bson.D{{Key: "_id", Value: oid}})
	return err
}

func share(part, whole time.Duration) string {
	if whole <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(part)/float64(whole))
}

// timedConvert is the convert function with a stopwatch around Handle: when
// each event (by id) came in and when its reply was out (flushed before the
// work convert does after it, or Handle's return).
type timedConvert struct {
	*convert.Function
	mu       sync.Mutex
	handling map[string]time.Duration
}

func (t *timedConvert) Handle(w http.ResponseWriter, r *http.Request) {
	sw := &stopwatch{ResponseWriter: w, start: time.Now(), done: func(d time.Duration) {
		t.mu.Lock()
		t.handling[r.Header.Get("Ce-Id")] += d // a redelivery adds up
		t.mu.Unlock()
	}}
	t.Function.Handle(sw, r)
	sw.stop()
}

func (t *timedConvert) took(id string) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d, ok := t.handling[id]
	return d, ok
}

// stopwatch is a ResponseWriter that tells done, once, how long until the answer was
// first flushed or stop was called.
type stopwatch struct {
	http.ResponseWriter
	start   time.Time
	done    func(time.Duration)
	stopped bool
}

func (s *stopwatch) stop() {
	if !s.stopped {
		s.stopped = true
		s.done(time.Since(s.start))
	}
}

func (s *stopwatch) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	s.stop()
}

func (s *stopwatch) Unwrap() http.ResponseWriter { return s.ResponseWriter }
