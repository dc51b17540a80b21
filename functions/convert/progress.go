package function

import (
	"bytes"
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// progressEvery is how often, at most, a conversion writes its progress on
// the job: often enough for a person watching, rare enough to cost nothing.
const progressEvery = time.Second

// progress follows ffmpeg's `-progress` output (key=value lines on its
// stdout) against the audio's probed duration, and writes the percentage on
// the job at most once per interval, from a goroutine of its own: ffmpeg
// never waits on MongoDB.
type progress struct {
	total   time.Duration
	percent atomic.Int64 // latest seen; -1 before the first report
	line    []byte       // an unfinished line of ffmpeg's output
	stopped chan struct{}
	done    chan struct{}
}

// trackProgress starts writing d's job's progress for a conversion of total
// audio; Write is ffmpeg's stdout; stop ends it with a last write.
func (d *delivery) trackProgress(ctx context.Context, total time.Duration, every time.Duration) *progress {
	p := &progress{total: total, stopped: make(chan struct{}), done: make(chan struct{})}
	p.percent.Store(-1)
	go func() {
		defer close(p.done)
		ticker := time.NewTicker(every)
		defer ticker.Stop()
		written := int64(-1)
		write := func() {
			if pct := p.percent.Load(); pct != written && pct >= 0 {
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := d.jobs().UpdateOne(wctx,
					bson.D{{Key: "_id", Value: d.job.ID}, {Key: "state", Value: JobConverting}},
					bson.D{{Key: "$set", Value: bson.D{{Key: "progress", Value: pct}}}})
				cancel()
				if err != nil {
					d.log.Warn("could not record the progress", "err", err) // the conversion goes on
				}
				written = pct
			}
		}
		for {
			select {
			case <-ticker.C:
				write()
			case <-p.stopped:
				write()
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return p
}

// Write takes ffmpeg's progress lines; out_time_us is how much audio it has written.
func (p *progress) Write(b []byte) (int, error) {
	p.line = append(p.line, b...)
	for {
		i := bytes.IndexByte(p.line, '\n')
		if i < 0 {
			return len(b), nil
		}
		key, value, _ := bytes.Cut(bytes.TrimSpace(p.line[:i]), []byte("="))
		p.line = p.line[i+1:]
		if string(key) == "out_time_us" && p.total > 0 {
			if us, err := strconv.ParseInt(string(value), 10, 64); err == nil && us >= 0 {
				p.percent.Store(percentOf(time.Duration(us)*time.Microsecond, p.total))
			}
		}
	}
}

// stop writes the last progress seen and waits for the writer to end.
func (p *progress) stop() {
	close(p.stopped)
	<-p.done
}

// percentOf is done/total in whole percent, 0 to 100.
func percentOf(done, total time.Duration) int64 {
	return min(100, max(0, int64(done*100/total)))
}
