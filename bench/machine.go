package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// machine is what the results depend on besides the code.
type machine struct {
	cpus               int
	model              string
	goVersion, ffmpeg  string
	modules            []string // module@version of the libraries that matter
	loadStart, loadEnd string
}

func describeMachine() machine {
	m := machine{cpus: runtime.NumCPU(), model: cpuModel(), goVersion: runtime.Version(), ffmpeg: "ffmpeg not found"}
	if out, err := exec.Command("go", "version").Output(); err == nil {
		m.goVersion = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("ffmpeg", "-version").Output(); err == nil {
		m.ffmpeg, _, _ = strings.Cut(string(out), "\n")
		if i := strings.Index(m.ffmpeg, " Copyright"); i > 0 {
			m.ffmpeg = m.ffmpeg[:i]
		}
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		want := []string{"github.com/FerretDB/FerretDB", "go.mongodb.org/mongo-driver/v2", "github.com/cloudevents/sdk-go/v2",
			"github.com/dolthub/go-mysql-server", "golang.org/x/crypto"}
		for _, path := range want {
			for _, d := range info.Deps {
				if d.Path == path {
					v := d.Version
					if d.Replace != nil {
						v = d.Replace.Version
					}
					m.modules = append(m.modules, d.Path+" "+v)
				}
			}
		}
	}
	return m
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// loadAverage is the first three fields of /proc/loadavg.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// prepare builds the binaries the process-level groups start and generates
// (or reuses) the test videos.
func (b *bench) prepare(ctx context.Context) error {
	binDir, err := filepath.Abs(filepath.Join(b.out, "bin"))
	if err != nil {
		return err
	}
	needBinaries := b.opts.only["upload"] || b.opts.only["download"] || b.opts.only["coldstart"] || b.opts.only["tus"]
	if needBinaries {
		for _, build := range []struct {
			dst *string
			pkg string
		}{{&b.mp3converter, "./cmd/mp3converter"}, {&b.fnhost, "./bench/fnhost"}} {
			t := time.Now()
			path := filepath.Join(binDir, filepath.Base(build.pkg))
			out, err := exec.CommandContext(ctx, "go", "build", "-o", path, build.pkg).CombinedOutput()
			if err != nil {
				return fmt.Errorf("go build %s: %v\n%s", build.pkg, err, out)
			}
			*build.dst = path
			b.prep = append(b.prep, fmt.Sprintf("`go build %s` %s", build.pkg, round(time.Since(t))))
		}
	}
	needMedia := b.opts.only["convert"] || b.opts.only["flat"] || b.opts.only["coldstart"] || b.opts.only["concurrency"]
	if needMedia {
		t := time.Now()
		generated, err := b.ensureMedia(ctx)
		if err != nil {
			return err
		}
		if generated > 0 {
			b.prep = append(b.prep, fmt.Sprintf("generating %d test video(s) %s", generated, round(time.Since(t))))
		} else {
			b.prep = append(b.prep, "test videos reused from bench/out/media")
		}
	}
	return nil
}

// cpuTicks are the machine's busy CPU time and this process's (with its
// waited-for children: ffmpeg, the function processes), in clock ticks.
type cpuTicks struct{ machine, self int64 }

func readCPU() cpuTicks {
	var t cpuTicks
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(data), "\n")
		f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
		for i := 1; i < len(f) && i <= 8; i++ {
			if i == 4 || i == 5 { // idle, iowait
				continue
			}
			n, _ := strconv.ParseInt(f[i], 10, 64)
			t.machine += n
		}
	}
	if data, err := os.ReadFile("/proc/self/stat"); err == nil {
		// Fields after the command (which may hold spaces): state is field 3, utime 14 .. cstime 17.
		if i := strings.LastIndexByte(string(data), ')'); i > 0 {
			f := strings.Fields(string(data)[i+1:])
			for _, k := range []int{11, 12, 13, 14} {
				if k < len(f) {
					n, _ := strconv.ParseInt(f[k], 10, 64)
					t.self += n
				}
			}
		}
	}
	return t
}

// othersCores is how many cores, on average, processes other than the
// harness kept busy between two readings taken d apart (100 ticks a second).
func othersCores(from, to cpuTicks, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	others := float64((to.machine - from.machine) - (to.self - from.self))
	return max(0, others/100/d.Seconds())
}
