package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	convert "mp3converter/functions/convert"
	"mp3converter/internal/stacktest"
)

// concurrency uploads a burst of short videos at once through the local stack
// and times until all are converted, against the single-video time spread
// ideally over the machine's cores.
func (b *bench) concurrency(ctx context.Context) (*section, error) {
	sec := &section{title: "6. Concurrency: a burst of uploads"}
	clip := b.media["10s-360p"]
	timed := &timedConvert{Function: convert.New(), handling: map[string]time.Duration{}}
	s, err := b.startStackWith(ctx, "concurrency", true, map[string]any{"convert": timed})
	if err != nil {
		return nil, err
	}
	defer s.close()
	var singleHandling, burstHandling samples

	// One video at a time: upload start → done.
	var single samples
	for i := range b.opts.runs {
		t0 := time.Now()
		fid, _, err := uploadFile(ctx, s.URL, s.AdminToken, clip.path)
		if err != nil {
			return nil, err
		}
		done, err := waitDone(ctx, s.URL, s.AdminToken, fid, 5*time.Minute)
		if err != nil {
			return nil, err
		}
		if err := waitMail(ctx, s, fid, 2*time.Minute); err != nil {
			return nil, err
		}
		single = append(single, done.Sub(t0))
		if d, ok := timed.took(fid); ok {
			singleHandling = append(singleHandling, d)
		}
		b.progress("concurrency single run %d: %s", i+1, fmtDur(done.Sub(t0)))
	}

	// A burst is n people uploading one video each: one user's uploads and conversions
	// at once are bounded (upload's per-user slots, CONVERT_PER_USER) so that nobody
	// takes every converter.
	n := b.opts.burst
	tokens, err := burstUsers(ctx, s, n)
	if err != nil {
		return nil, err
	}
	var drain samples
	for i := range b.opts.runs {
		// Every burst starts from empty databases (the previous one is all done and mailed).
		for _, db := range []string{"videos", "mp3s"} {
			if err := s.mongo.Database(db).Drop(ctx); err != nil {
				return nil, err
			}
		}
		fids := make([]string, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		t0 := time.Now()
		for k := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fids[k], _, errs[k] = uploadFile(ctx, s.URL, tokens[k], clip.path)
			}()
		}
		wg.Wait()
		uploaded := time.Since(t0)
		var last time.Time
		for k, fid := range fids {
			if errs[k] != nil {
				return nil, fmt.Errorf("burst upload %d: %w", k, errs[k])
			}
			// In upload order: the last one seen done is the drain time (to within the poll interval).
			done, err := waitDone(ctx, s.URL, s.AdminToken, fid, 10*time.Minute)
			if err != nil {
				return nil, err
			}
			last = done
		}
		for _, fid := range fids {
			if err := waitMail(ctx, s, fid, 5*time.Minute); err != nil {
				return nil, err
			}
			if d, ok := timed.took(fid); ok {
				burstHandling = append(burstHandling, d)
			}
		}
		drain = append(drain, last.Sub(t0))
		b.progress("concurrency burst run %d: %d uploads accepted in %s, all done in %s", i+1, n, fmtDur(uploaded), fmtDur(last.Sub(t0)))
	}

	cores := b.machine.cpus
	ideal := time.Duration(n) * single.median() / time.Duration(cores)
	sec.add(fmt.Sprintf("%d × %s clip uploaded at once: first upload's start → all %d done", n, clip.label, n), drain.String(),
		fmt.Sprintf("%d × single-video time ÷ %d cores = %s", n, cores, fmtDur(ideal)), ratio(drain.median(), ideal))
	sec.add("Single video: upload start → done", single.String(), "", "")
	sec.add("convert's handling of one video (event in → reply out) during the bursts", fmt.Sprintf("%s (median of %d)", fmtDur(burstHandling.median()), len(burstHandling)),
		fmt.Sprintf("alone: %s (median of %d)", fmtDur(singleHandling.median()), len(singleHandling)), ratio(burstHandling.median(), singleHandling.median()))
	reads, deletes, err := b.scanCost(ctx, s, clip, n)
	if err != nil {
		return nil, err
	}
	sec.add(fmt.Sprintf("GridFS read of one clip with %d other clips stored", n), reads[1].String(), "the same read with none stored "+reads[0].String(), ratio(reads[1].median(), reads[0].median()))
	sec.add(fmt.Sprintf("GridFS delete of one clip with %d other clips stored", n), deletes[1].String(), "the same delete with none stored "+deletes[0].String(), ratio(deletes[1].median(), deletes[0].median()))
	sec.note("Clip: %s. The local stack in this process (fresh data dir) with the knative/ Triggers: the convert Trigger's parallelism annotation (2) bounds conversions in flight, as on the cluster.", clip.describe)
	sec.note("Single: one video at a time, from the start of its raw `POST /upload` through the front door (web) until `GET /jobs/{fid}` says done (polled every %s); the harness waits for its email before the next. Burst: %d users (made for it) start one upload each at the same moment; the clock stops when the last job is seen done (jobs polled in upload order). %d runs of each, medians; the harness waits for all emails between bursts and drops the videos and mp3s databases before each burst, so every burst starts empty. Ratio = burst median ÷ (%d × single median ÷ runtime.NumCPU()); ×1 would be perfect scaling over the cores. Convert's handling: the stack's convert instance wrapped with a stopwatch around Handle.", pollInterval, n, b.opts.runs, n)
	sec.note("Reads and deletes with others stored: in a scratch database of the same FerretDB, the clip written once, then read (into io.Discard) and deleted %d times with nothing else stored, then again with %d more copies stored (mongo-driver v2, 128 KiB chunks); medians. FerretDB's SQLite backend answers GridFS chunk queries by files_id by scanning the whole chunk collection, so every waiting video slows every conversion's read and delete.", b.opts.runs, n)
	return sec, nil
}

// scanCost times a GridFS read and a delete of the clip in a scratch
// database, first with nothing else stored, then with n other copies stored.
// It returns [alone, crowded] samples of reads and of deletes.
func (b *bench) scanCost(ctx context.Context, s *localStack, clip *video, n int) (reads, deletes [2]samples, err error) {
	const db = "benchscan"
	defer s.mongo.Database(db).Drop(context.WithoutCancel(ctx))
	write := func() (bson.ObjectID, error) {
		id := bson.NewObjectID()
		f, err := os.Open(clip.path)
		if err != nil {
			return id, err
		}
		defer f.Close()
		_, err = gridfsWrite(ctx, s.mongo, db, id, "clip.mp4", f, nil)
		return id, err
	}
	for phase := range 2 {
		if phase == 1 {
			for range n {
				if _, err := write(); err != nil {
					return reads, deletes, err
				}
			}
		}
		for range b.opts.runs {
			id, err := write()
			if err != nil {
				return reads, deletes, err
			}
			t := time.Now()
			if _, err := gridfsRead(ctx, s.mongo, db, id, io.Discard); err != nil {
				return reads, deletes, err
			}
			reads[phase] = append(reads[phase], time.Since(t))
			t = time.Now()
			if err := bucket(s.mongo, db).Delete(ctx, id); err != nil {
				return reads, deletes, err
			}
			deletes[phase] = append(deletes[phase], time.Since(t))
		}
	}
	return reads, deletes, nil
}

// burstUsers makes n users (through the admin API, as an admin would) and logs each in.
func burstUsers(ctx context.Context, s *localStack, n int) ([]string, error) {
	tokens := make([]string, n)
	for k := range tokens {
		email := fmt.Sprintf("burst-%d-%s@example.com", k, stacktest.RandomHex(3))
		if _, err := api(s.URL, s.AdminToken).AddUser(ctx, email, stacktest.UserPassword, false); err != nil {
			return nil, fmt.Errorf("burst user %d: %w", k, err)
		}
		tok, err := api(s.URL, "").Login(ctx, email, stacktest.UserPassword)
		if err != nil {
			return nil, fmt.Errorf("burst user %d: %w", k, err)
		}
		tokens[k] = tok.AccessToken
	}
	return tokens, nil
}
