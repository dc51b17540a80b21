package main

import (
	"context"
	"time"
)

// frontDoor measures what the web function's proxy costs an upload: the same
// body posted to the front door (web, which streams it on to upload) and
// straight to the upload function, alternating, in one stack.
func (b *bench) frontDoor(ctx context.Context) (*section, error) {
	sec := &section{title: "2b. Upload through the front door (web) vs straight to the upload function"}
	s, err := b.startStack(ctx, "frontdoor", false)
	if err != nil {
		return nil, err
	}
	defer s.close()
	post := func(base string) (time.Duration, error) {
		// Every upload starts from an empty videos database.
		if err := s.mongo.Database("videos").Drop(ctx); err != nil {
			return 0, err
		}
		t := time.Now()
		_, _, err := uploadBody(ctx, base, s.AdminToken, "generated.mp4", newGenerated(smallUpload, ftyp), smallUpload)
		return time.Since(t), err
	}
	// Unmeasured warm-up of both paths: validate's answer cached, connections open.
	for _, base := range []string{s.URL, s.Functions["upload"]} {
		if _, err := post(base); err != nil {
			return nil, err
		}
	}
	var viaWeb, direct samples
	for i := range b.opts.runs {
		w, err := post(s.URL)
		if err != nil {
			return nil, err
		}
		d, err := post(s.Functions["upload"])
		if err != nil {
			return nil, err
		}
		viaWeb, direct = append(viaWeb, w), append(direct, d)
		b.progress("front door run %d: through web %s (%.1f MB/s), straight %s (%.1f MB/s)", i+1, fmtDur(w), mbps(smallUpload, w), fmtDur(d), mbps(smallUpload, d))
	}
	sec.add("Upload "+mib(smallUpload)+" through the front door (web → upload)", throughput(smallUpload, viaWeb),
		"straight to upload "+throughput(smallUpload, direct), ratioF(mbps(smallUpload, viaWeb.median()), mbps(smallUpload, direct.median())))
	sec.note("The local stack in this process (FerretDB on a fresh data dir, in-memory Broker, the convert Trigger disabled so nothing converts). A raw `POST /upload?filename=generated.mp4` (video/mp4, Content-Length set) of the generated body of section 2, once to the front door's address (web proxies it to upload, streaming) and once to the upload function's own address; %d runs each, alternating, after one unmeasured upload each way; medians. Ratio = through web MB/s ÷ straight MB/s (goal: at least 0.9).", b.opts.runs)
	return sec, nil
}
