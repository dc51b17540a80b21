package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

const smallUpload = 64 << 20

// upload measures the upload function, in its own process, streaming a
// generated body into GridFS, against a plain GridFS write of the same bytes
// from this process, and the function's peak memory.
func (b *bench) upload(ctx context.Context) (*section, error) {
	sec := &section{title: "2. Upload vs a plain GridFS write"}
	s, err := b.startStack(ctx, "upload", false)
	if err != nil {
		return nil, err
	}
	defer s.close()
	logw, err := b.processLog("upload-function")
	if err != nil {
		return nil, err
	}
	defer logw.Close()
	env := map[string]string{
		"MONGODB_URI":  s.MongoURI,
		"VALIDATE_URL": s.Functions["validate"] + "/validate",
		"K_SINK":       s.BrokerURL,
	}
	// Every upload and every direct write starts from an empty videos database.
	fresh := func() error { return s.mongo.Database("videos").Drop(ctx) }
	viaFunction := func(p *fnProcess, n int64) (time.Duration, error) {
		if err := fresh(); err != nil {
			return 0, err
		}
		t := time.Now()
		_, _, err := uploadBody(ctx, p.URL, s.AdminToken, "generated.mp4", newGenerated(n, ftyp), n)
		return time.Since(t), err
	}
	direct := func(n int64) (time.Duration, error) {
		if err := fresh(); err != nil {
			return 0, err
		}
		t := time.Now()
		w, err := gridfsWrite(ctx, s.mongo, "videos", bson.NewObjectID(), "generated.mp4", newGenerated(n, ftyp),
			bson.D{{Key: "username", Value: adminEmail}, {Key: "filename", Value: "generated.mp4"}, {Key: "content_type", Value: "video/mp4"}})
		if err == nil && w != n {
			err = fmt.Errorf("wrote %d of %d bytes", w, n)
		}
		return time.Since(t), err
	}

	// start starts an upload process and warms it up with a 1 MiB upload
	// (validate's answer cached, MongoDB connected), unmeasured.
	start := func(binary string) (*fnProcess, int64, error) {
		p, err := startFunction(binary, "upload", env, logw)
		if err != nil {
			return nil, 0, err
		}
		if _, err := p.waitReady(ctx, time.Minute); err != nil {
			p.stop()
			return nil, 0, err
		}
		idle, _ := p.status("VmRSS")
		if _, err := viaFunction(p, 1<<20); err != nil {
			p.stop()
			return nil, 0, err
		}
		return p, idle, nil
	}

	// 64 MiB: one process, runs alternating with the direct write.
	p, idle, err := start(b.mp3converter)
	if err != nil {
		return nil, err
	}
	var fnSmall, directSmall samples
	for i := range b.opts.runs {
		f, err := viaFunction(p, smallUpload)
		if err != nil {
			p.stop()
			return nil, err
		}
		d, err := direct(smallUpload)
		if err != nil {
			p.stop()
			return nil, err
		}
		fnSmall, directSmall = append(fnSmall, f), append(directSmall, d)
		b.progress("upload 64 MiB run %d: function %s (%.1f MB/s), direct %s (%.1f MB/s)", i+1, fmtDur(f), mbps(smallUpload, f), fmtDur(d), mbps(smallUpload, d))
	}
	hwmSmall, err := p.status("VmHWM")
	p.stop()
	if err != nil {
		return nil, err
	}

	// The big one: a new process, so that its peak is the big upload's alone.
	big := b.opts.uploadSize
	if p, _, err = start(b.mp3converter); err != nil {
		return nil, err
	}
	fnBig, err := viaFunction(p, big)
	if err != nil {
		p.stop()
		return nil, err
	}
	hwmBig, err := p.status("VmHWM")
	p.stop()
	if err != nil {
		return nil, err
	}
	b.progress("upload %s: function %s (%.1f MB/s), peak RSS %s", mib(big), fmtDur(fnBig), mbps(big, fnBig), mibOfKiB(hwmBig))
	directBig, err := direct(big)
	if err != nil {
		return nil, err
	}
	b.progress("upload %s: direct %s (%.1f MB/s)", mib(big), fmtDur(directBig), mbps(big, directBig))
	// The same 64 MiB through the functions-only binary, for its peak alone.
	p, idleFn, err := start(b.fnhost)
	if err != nil {
		return nil, err
	}
	_, err = viaFunction(p, smallUpload)
	hwmFn, serr := p.status("VmHWM")
	p.stop()
	if err = errors.Join(err, serr); err != nil {
		return nil, err
	}
	if err := fresh(); err != nil {
		return nil, err
	}

	sec.add("Upload "+mib(big)+" through the upload function", throughput(big, samples{fnBig}), "plain GridFS write "+throughput(big, samples{directBig}), ratioF(mbps(big, fnBig), mbps(big, directBig)))
	sec.add("Upload "+mib(smallUpload)+" through the upload function", throughput(smallUpload, fnSmall), "plain GridFS write "+throughput(smallUpload, directSmall), ratioF(mbps(smallUpload, fnSmall.median()), mbps(smallUpload, directSmall.median())))
	sec.add("Peak RSS (VmHWM) of the upload process, "+mib(big)+" upload", mibOfKiB(hwmBig), "after "+fmt.Sprint(b.opts.runs)+" × "+mib(smallUpload)+": "+mibOfKiB(hwmSmall)+"; at readiness: "+mibOfKiB(idle), ratioF(float64(hwmBig), float64(hwmSmall)))
	sec.add("Peak RSS of the functions-only binary (bench/fnhost upload), one "+mib(smallUpload)+" upload", mibOfKiB(hwmFn), "at readiness: "+mibOfKiB(idleFn), "")
	sec.note("The upload function runs alone in its own process: `bench/out/bin/mp3converter function upload` with LISTEN_ADDRESS, MONGODB_URI of the FerretDB (SQLite, fresh data dir) that the harness's local stack embeds in the harness process, VALIDATE_URL of the stack's validate and K_SINK of its Broker (which routes the event nowhere: the convert Trigger is disabled).")
	sec.note("Body: a raw `POST /upload?filename=generated.mp4` (Content-Type video/mp4, Content-Length set) streamed from a deterministic generator (an MP4 ftyp box, then a fixed 1 MiB block of pseudo-random bytes repeated); the clock runs from the request's start to the 202 (after the job insert and the event's ACK).")
	sec.note("Baseline: the same generated bytes written by this process into the same database with mongo-driver v2 (GridFS bucket `videos.fs`, OpenUploadStreamWithID, 128 KiB chunks). The videos database is dropped before every upload and every write, so each starts empty.")
	sec.note("%s: 1 run each way (about %s of the time budget together); %s: %d runs each, alternating, medians. Ratio = function MB/s ÷ plain write MB/s. Every upload process first serves an unmeasured 1 MiB upload (validate's answer cached, MongoDB connected). Peak RSS: VmHWM from /proc/PID/status just before SIGTERM, no GOMEMLIMIT (functions/upload/func.yaml sets 400MiB); the %s figure comes from a second process that served only that upload; the functions-only figure from a third (bench/fnhost: no embedded servers linked, closer to a `func build` image).", mib(big), round(fnBig+directBig), mib(smallUpload), b.opts.runs, mib(big))
	return sec, nil
}

const (
	downloadSize        = 100 << 20
	concurrentDownloads = 4
)

// download measures GET /download of a big MP3 through the download function,
// in its own process, against a plain GridFS read of the same file.
func (b *bench) download(ctx context.Context) (*section, error) {
	sec := &section{title: "3. Download vs a plain GridFS read"}
	s, err := b.startStack(ctx, "download", false)
	if err != nil {
		return nil, err
	}
	defer s.close()
	logw, err := b.processLog("download-function")
	if err != nil {
		return nil, err
	}
	defer logw.Close()

	id := bson.NewObjectID()
	t := time.Now()
	_, err = gridfsWrite(ctx, s.mongo, "mp3s", id, "generated.mp3", newGenerated(downloadSize, id3), bson.D{
		{Key: "username", Value: adminEmail}, {Key: "video_fid", Value: id.Hex()}, {Key: "duration_seconds", Value: 6000.0}})
	if err != nil {
		return nil, err
	}
	seeded := time.Since(t)

	env := map[string]string{"MONGODB_URI": s.MongoURI, "VALIDATE_URL": s.Functions["validate"] + "/validate", "LINK_SECRET": benchLinkSecret}
	p, err := startFunction(b.mp3converter, "download", env, logw)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	if _, err := p.waitReady(ctx, time.Minute); err != nil {
		return nil, err
	}
	var fn, direct samples
	for i := range b.opts.runs {
		t := time.Now()
		n, err := downloadTo(ctx, p.URL, s.AdminToken, id.Hex(), io.Discard)
		if err != nil {
			return nil, err
		}
		f := time.Since(t)
		if n != downloadSize {
			return nil, fmt.Errorf("downloaded %d of %d bytes", n, downloadSize)
		}
		t = time.Now()
		if n, err = gridfsRead(ctx, s.mongo, "mp3s", id, io.Discard); err != nil || n != downloadSize {
			return nil, fmt.Errorf("direct read: %d of %d bytes, %v", n, downloadSize, err)
		}
		d := time.Since(t)
		fn, direct = append(fn, f), append(direct, d)
		b.progress("download run %d: function %s (%.1f MB/s), direct %s (%.1f MB/s)", i+1, fmtDur(f), mbps(downloadSize, f), fmtDur(d), mbps(downloadSize, d))
	}
	hwm, err := p.status("VmHWM")
	if err != nil {
		return nil, err
	}
	// The functions-only binary's peak: one download, then (a new process) several at once.
	var hwmFn [2]int64
	for k, n := range []int{1, concurrentDownloads} {
		pf, err := startFunction(b.fnhost, "download", env, logw)
		if err != nil {
			return nil, err
		}
		if _, err := pf.waitReady(ctx, time.Minute); err == nil {
			errs := make([]error, n)
			var wg sync.WaitGroup
			for c := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[c] = downloadTo(ctx, pf.URL, s.AdminToken, id.Hex(), io.Discard)
				}()
			}
			wg.Wait()
			err = errors.Join(errs...)
		}
		if err == nil {
			hwmFn[k], err = pf.status("VmHWM")
		}
		pf.stop()
		if err != nil {
			return nil, err
		}
	}
	sec.add("Download "+mib(downloadSize)+" MP3 through the download function", throughput(downloadSize, fn), "plain GridFS read "+throughput(downloadSize, direct), ratioF(mbps(downloadSize, fn.median()), mbps(downloadSize, direct.median())))
	sec.add("Peak RSS (VmHWM) of the download process ("+fmt.Sprint(b.opts.runs)+" downloads, one at a time)", mibOfKiB(hwm), "", "")
	sec.add("Peak RSS of the functions-only binary (bench/fnhost download)", fmt.Sprintf("%d downloads at once: %s", concurrentDownloads, mibOfKiB(hwmFn[1])), "one download: "+mibOfKiB(hwmFn[0]), ratioF(float64(hwmFn[1]), float64(hwmFn[0])))
	sec.note("A %s file of generated bytes (an ID3 header, then pseudo-random bytes) stored directly in `mp3s.fs` with 128 KiB chunks and the metadata convert writes (username, video_fid, duration_seconds), in %s (%.1f MB/s), into a fresh database.", mib(downloadSize), fmtDur(seeded), mbps(downloadSize, seeded))
	sec.note("Function: `bench/out/bin/mp3converter function download` in its own process (MONGODB_URI of the stack's FerretDB, VALIDATE_URL of its validate); `GET /download?fid=` with the admin's token, read to the end by a keep-alive client. Baseline: the same file read by this process with mongo-driver v2 (OpenDownloadStream). %d runs each, alternating; medians. Ratio = function MB/s ÷ plain read MB/s. Peak RSS: VmHWM from /proc/PID/status, no GOMEMLIMIT (functions/download/func.yaml sets it below its memory limit); the functions-only figures (bench/fnhost, closer to a `func build` image) come from two more processes: one download, then %d of the same file at once.", b.opts.runs, concurrentDownloads)
	return sec, nil
}
