// Command bench measures mp3converter against the limits of the machine it
// runs on: every figure is a ratio to a baseline measured side by side in the
// same run (bare ffmpeg, a plain GridFS write or read, a trivial HTTP handler,
// bare bcrypt, the ideal parallel speed-up), never an absolute time to meet.
//
//	go run ./bench [-only convert,upload,download,flat,auth,coldstart,concurrency] [-upload-size BYTES] [-stored BYTES] [-runs N]
//
// It prints the results as markdown and writes them to bench/results.md.
// Generated media are cached in bench/out/media; every measurement group
// starts from a fresh, empty database under bench/out/tmp, removed afterwards.
// Servers bind 127.0.0.1 only; every wait is bounded.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// groups are the measurement groups in the order they run.
var groups = []struct {
	name string
	run  func(*bench, context.Context) (*section, error)
}{
	{"convert", (*bench).conversion},
	{"upload", (*bench).upload},
	{"frontdoor", (*bench).frontDoor},
	{"download", (*bench).download},
	{"flat", (*bench).flat},
	{"auth", (*bench).auth},
	{"coldstart", (*bench).coldStart},
	{"concurrency", (*bench).concurrency},
	{"tracing", (*bench).tracing},
	{"tus", (*bench).resumable}, // bench/tus.go
}

type config struct {
	only       map[string]bool
	runs       int   // runs behind every median
	longRuns   int   // runs of the 10-minute video
	uploadSize int64 // the big upload
	burst      int   // videos uploaded at once
	stored     int64 // other MP3s stored in the flat group
	flatSweep  bool  // the flat group's stack runs the sweep every minute
	results    string
}

func main() {
	var o config
	var names []string
	for _, g := range groups {
		names = append(names, g.name)
	}
	only := flag.String("only", strings.Join(names, ","), "measurement groups to run, comma-separated")
	flag.IntVar(&o.runs, "runs", 5, "runs behind every median")
	flag.IntVar(&o.longRuns, "long-runs", 1, "runs of the 10-minute video (each takes about a minute)")
	size := flag.String("upload-size", "1GiB", "size of the big upload (e.g. 1GiB, 256MiB, or bytes)")
	stored := flag.String("stored", "500MiB", "other MP3s stored before the flat group measures again (e.g. 500MiB, 100MiB)")
	flag.BoolVar(&o.flatSweep, "flat-sweep", true, "run the sweep every minute in the flat group's stack, as deployed")
	flag.IntVar(&o.burst, "burst", 20, "videos uploaded at once in the concurrency group")
	flag.StringVar(&o.results, "results", "bench/results.md", "where to write the results (markdown)")
	flag.Parse()
	o.only = map[string]bool{}
	for _, g := range strings.Split(*only, ",") {
		if g = strings.TrimSpace(g); g != "" {
			if !slices.Contains(names, g) {
				fatal(fmt.Errorf("no group %q (there are %s)", g, strings.Join(names, ", ")))
			}
			o.only[g] = true
		}
	}
	var err error
	if o.uploadSize, err = parseSize(*size); err != nil {
		fatal(err)
	}
	if o.stored, err = parseSize(*stored); err != nil {
		fatal(err)
	}
	if o.runs < 1 || o.longRuns < 1 || o.burst < 1 {
		fatal(fmt.Errorf("-runs, -long-runs and -burst must be at least 1"))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fatal(err)
	}
}

func run(ctx context.Context, o config) error {
	started := processStart()
	if _, err := os.Stat("go.mod"); err != nil {
		return fmt.Errorf("run from the repository root (make bench): %w", err)
	}
	b := &bench{opts: o, out: filepath.Join("bench", "out")}
	for _, dir := range []string{b.out, b.tmpRoot(), filepath.Join(b.out, "media"), filepath.Join(b.out, "bin"), filepath.Join(b.out, "logs")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	logFile, err := os.Create(filepath.Join(b.out, "logs", "bench.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	// The functions log through slog.Default: to the log file, as they would in production (INFO).
	slog.SetDefault(slog.New(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo})))
	b.logFile = logFile
	// go-mysql-server (the stack's embedded MySQL) warns through logrus at every start.
	logrus.SetOutput(logFile)

	b.machine = describeMachine()
	b.machine.loadStart = loadAverage()
	b.progress("machine: %d CPUs (%s), load %s; go %s", b.machine.cpus, b.machine.model, b.machine.loadStart, b.machine.goVersion)

	if err := b.prepare(ctx); err != nil {
		return err
	}
	for _, g := range groups {
		if !o.only[g.name] {
			continue
		}
		t, load, cpu := time.Now(), loadAverage(), readCPU()
		b.progress("== %s (load %s)", g.name, load)
		sec, err := g.run(b, ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", g.name, err)
		}
		sec.elapsed, sec.load = time.Since(t), load
		sec.others = othersCores(cpu, readCPU(), sec.elapsed)
		b.sections = append(b.sections, sec)
		b.progress("== %s done in %s", g.name, round(sec.elapsed))
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	b.machine.loadEnd = loadAverage()
	b.total = time.Since(started)
	md := b.markdown()
	fmt.Print("\n" + md)
	if err := os.WriteFile(o.results, []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "\nwritten to %s\n", o.results)
	return nil
}

// bench is one run of the harness.
type bench struct {
	opts     config
	out      string    // bench/out
	logFile  io.Writer // bench/out/logs/bench.log: the in-process functions' logs
	machine  machine
	prep     []string // what preparing took (builds, media)
	sections []*section
	total    time.Duration

	mp3converter string // the built binary
	fnhost       string // the functions-only host (bench/fnhost)
	media        map[string]*video
}

func (b *bench) tmpRoot() string { return filepath.Join(b.out, "tmp") }

// processLog creates bench/out/logs/NAME.log for the output of function processes.
func (b *bench) processLog(name string) (*os.File, error) {
	return os.Create(filepath.Join(b.out, "logs", name+".log"))
}

// progress reports on stderr what the harness is doing.
func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// processStart is when `make bench` started (BENCH_START, Unix seconds, set by
// the Makefile so that the total includes compiling), else this process's start.
func processStart() time.Time {
	if v := os.Getenv("BENCH_START"); v != "" {
		if f, err := strconv.ParseFloat(v, 64); err == nil && f > 0 {
			return time.Unix(0, int64(f*1e9))
		}
	}
	return time.Now()
}

func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil || n <= 0 {
				return 0, fmt.Errorf("bad size %q", s)
			}
			return n * u.mult, nil
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q (e.g. 1GiB, 64MiB or a number of bytes)", s)
	}
	return n, nil
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
