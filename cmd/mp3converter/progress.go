package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
)

// display shows how several files progress: one mpb bar per file on a
// terminal, plain lines otherwise (a log, a pipe, a test's buffer).
type display interface {
	track(name string) tracker
	printf(format string, args ...any) // a line of its own (above the bars)
	wait()                             // after every tracker is done or failed
}

// tracker is one file's line. Its methods may be called from any goroutine.
type tracker interface {
	phase(label string, total int64) // a phase that moves bytes, total of them (-1: unknown)
	add(n int64)                     // n more bytes of the phase
	restart()                        // the phase starts over from 0 (a download the server resent whole)
	state(label string)              // a phase that moves no bytes: "converting"
	done(msg string)
	fail(msg string)
}

// newDisplay draws bars when out is a terminal.
func newDisplay(out io.Writer) display {
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return &barDisplay{p: mpb.New(mpb.WithOutput(out), mpb.WithWidth(30))}
	}
	return &lineDisplay{out: out}
}

// progressReader counts what is read through it.
type progressReader struct {
	r  io.Reader
	tr tracker
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.tr.add(int64(n))
	}
	return n, err
}

// progressWriter counts what is written through it.
type progressWriter struct {
	w  io.Writer
	tr tracker
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	if n > 0 {
		p.tr.add(int64(n))
	}
	return n, err
}

// phaseStats is what both displays know of a phase: enough for bytes, rate and ETA.
type phaseStats struct {
	label       string
	counting    bool
	done, total int64
	start       time.Time
}

func (s phaseStats) rate() float64 {
	secs := time.Since(s.start).Seconds()
	if secs <= 0 {
		return 0
	}
	return float64(s.done) / secs
}

// progress is "1.2 MiB / 5.0 MiB, 3.1 MiB/s, ETA 2s".
func (s phaseStats) progress() string {
	text := size(s.done)
	if s.total >= 0 {
		text += " / " + size(s.total)
	}
	r := s.rate()
	if r <= 0 || s.done == 0 {
		return text
	}
	text += ", " + size(int64(r)) + "/s"
	if s.total > s.done {
		eta := time.Duration(float64(s.total-s.done) / r * float64(time.Second))
		if eta >= time.Second {
			text += ", ETA " + eta.Round(time.Second).String()
		}
	}
	return text
}

// size is "512 B", "1.5 KiB", "2.0 GiB".
func size(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("% .1f", decor.SizeB1024(n))
}

// --- bars on a terminal ---

type barDisplay struct{ p *mpb.Progress }

func (d *barDisplay) track(name string) tracker {
	t := &barTracker{stats: phaseStats{label: "queued"}}
	// Total 0: the bar completes only when done says so, not when a phase's bytes are all in.
	t.bar = d.p.New(0, mpb.BarStyle(),
		mpb.PrependDecorators(
			decor.Name(name, decor.WCSyncSpaceR),
			decor.Any(func(decor.Statistics) string { return t.get().label }, decor.WCSyncSpaceR),
		),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string {
			if s := t.get(); s.counting {
				return s.progress()
			}
			return ""
		})),
	)
	return t
}

func (d *barDisplay) printf(format string, args ...any) { fmt.Fprintf(d.p, format+"\n", args...) }
func (d *barDisplay) wait()                             { d.p.Wait() }

type barTracker struct {
	bar   *mpb.Bar
	mu    sync.Mutex
	stats phaseStats
}

func (t *barTracker) get() phaseStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

func (t *barTracker) set(f func(*phaseStats)) {
	t.mu.Lock()
	f(&t.stats)
	t.mu.Unlock()
}

func (t *barTracker) phase(label string, total int64) {
	t.set(func(s *phaseStats) { *s = phaseStats{label: label, counting: true, total: total, start: time.Now()} })
	t.bar.SetTotal(max(total, 0), false)
	t.bar.SetCurrent(0)
}

func (t *barTracker) add(n int64) {
	t.set(func(s *phaseStats) { s.done += n })
	t.bar.IncrInt64(n)
}

func (t *barTracker) restart() {
	t.set(func(s *phaseStats) { s.done, s.start = 0, time.Now() })
	t.bar.SetCurrent(0)
}

func (t *barTracker) state(label string) {
	t.set(func(s *phaseStats) { *s = phaseStats{label: label} })
	t.bar.SetTotal(0, false)
	t.bar.SetCurrent(0)
}

func (t *barTracker) done(msg string) {
	t.set(func(s *phaseStats) { *s = phaseStats{label: msg} })
	t.bar.SetTotal(-1, true)
}

func (t *barTracker) fail(msg string) {
	t.set(func(s *phaseStats) { *s = phaseStats{label: "failed: " + msg} })
	t.bar.Abort(false)
}

// --- plain lines ---

// lineDisplay writes whole lines, one at a time, each naming its file.
type lineDisplay struct {
	mu  sync.Mutex
	out io.Writer
}

func (d *lineDisplay) track(name string) tracker { return &lineTracker{d: d, name: name} }

func (d *lineDisplay) printf(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, format+"\n", args...)
}

func (d *lineDisplay) wait() {}

// lineTracker prints each phase, and a long byte phase's progress in steps
// of 10%, at most one line every lineEvery.
type lineTracker struct {
	d     *lineDisplay
	name  string
	mu    sync.Mutex
	stats phaseStats
	next  int64     // the percentage of the next progress line
	last  time.Time // of the last progress line
}

const lineEvery = 2 * time.Second

func (t *lineTracker) phase(label string, total int64) {
	t.mu.Lock()
	t.stats = phaseStats{label: label, counting: true, total: total, start: time.Now()}
	t.next, t.last = 10, t.stats.start
	t.mu.Unlock()
	if total >= 0 {
		t.d.printf("%s: %s %s", t.name, label, size(total))
	} else {
		t.d.printf("%s: %s", t.name, label)
	}
}

func (t *lineTracker) add(n int64) {
	t.mu.Lock()
	t.stats.done += n
	s := t.stats
	var line bool
	if s.total > 0 && s.done < s.total && s.done*100/s.total >= t.next && time.Since(t.last) >= lineEvery {
		t.next = s.done*100/s.total/10*10 + 10
		t.last = time.Now()
		line = true
	}
	t.mu.Unlock()
	if line {
		t.d.printf("%s: %s %d%% (%s)", t.name, s.label, s.done*100/s.total, s.progress())
	}
}

func (t *lineTracker) restart() {
	t.mu.Lock()
	t.stats.done, t.stats.start, t.next = 0, time.Now(), 10
	t.last = t.stats.start
	label := t.stats.label
	t.mu.Unlock()
	t.d.printf("%s: %s again from the start", t.name, label)
}

func (t *lineTracker) state(label string) {
	t.mu.Lock()
	t.stats = phaseStats{label: label}
	t.mu.Unlock()
	t.d.printf("%s: %s", t.name, label)
}

func (t *lineTracker) done(msg string) { t.d.printf("%s: %s", t.name, msg) }
func (t *lineTracker) fail(msg string) { t.d.printf("%s: failed: %s", t.name, msg) }
