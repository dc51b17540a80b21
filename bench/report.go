package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// section is one measurement group's table.
type section struct {
	title   string
	header  []string   // nil: measure, result, baseline, ratio
	rows    [][]string // cells under header
	notes   []string   // how it was measured
	elapsed time.Duration
	load    string  // load average when the group started
	others  float64 // cores other processes kept busy during the group, on average
}

// add appends a measured figure beside its baseline and their ratio.
func (s *section) add(what, value, baseline, ratio string) {
	s.rows = append(s.rows, []string{what, value, baseline, ratio})
}

func (s *section) note(format string, args ...any) {
	s.notes = append(s.notes, fmt.Sprintf(format, args...))
}

// samples are the durations of repeated runs.
type samples []time.Duration

func (s samples) median() time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

// kibs are sizes in KiB of repeated runs.
type kibs []int64

func (k kibs) median() int64 {
	if len(k) == 0 {
		return 0
	}
	c := slices.Clone(k)
	slices.Sort(c)
	return c[len(c)/2]
}

// String is "median (min–max, n runs)", or the one value of a single run.
func (s samples) String() string {
	if len(s) == 0 {
		return "n/a"
	}
	if len(s) == 1 {
		return fmtDur(s[0]) + " (1 run)"
	}
	return fmt.Sprintf("%s (%s–%s, %d runs)", fmtDur(s.median()), fmtDur(slices.Min(s)), fmtDur(slices.Max(s)), len(s))
}

// ratio of two medians, as "×1.23" (or "×123" when large).
func ratio(a, b time.Duration) string { return ratioF(float64(a), float64(b)) }

func ratioF(a, b float64) string {
	if b <= 0 {
		return "n/a"
	}
	if a/b >= 10 {
		return fmt.Sprintf("×%.0f", a/b)
	}
	return fmt.Sprintf("×%.2f", a/b)
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
}

func round(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }

func mib(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// mbps is bytes per duration in MB/s (10^6 bytes).
func mbps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds() / 1e6
}

// throughputOf is the MB/s of the median run of n bytes.
func throughputOf(n int64, s samples) string {
	return fmt.Sprintf("%.1f MB/s", mbps(n, s.median()))
}

// throughput is the MB/s of the median run of n bytes, with that run's time.
func throughput(n int64, s samples) string {
	if len(s) == 0 {
		return "n/a"
	}
	m := mbps(n, s.median())
	if len(s) == 1 {
		return fmt.Sprintf("%.1f MB/s (%s, 1 run)", m, fmtDur(s[0]))
	}
	return fmt.Sprintf("%.1f MB/s (%s, median of %d runs)", m, fmtDur(s.median()), len(s))
}

// markdown renders the whole run.
func (b *bench) markdown() string {
	var sb strings.Builder
	m := b.machine
	sb.WriteString("# mp3converter: benchmark results\n\n")
	fmt.Fprintf(&sb, "Written by `make bench` (bench/) on %s. Every figure is a ratio to a baseline measured side by side in the same run on the same machine; lower ratios are better except for rates (requests/s, MB/s), where higher is better.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&sb, "- Machine: %d CPUs (runtime.NumCPU), %s; load average (1, 5, 15 min) %s at the start, %s at the end\n", m.cpus, m.model, m.loadStart, m.loadEnd)
	fmt.Fprintf(&sb, "- Versions: %s; %s; %s\n", m.goVersion, m.ffmpeg, strings.Join(m.modules, ", "))
	fmt.Fprintf(&sb, "- Total: %s for the whole run (including %s)\n", round(b.total), strings.Join(b.prep, ", "))
	if len(b.sections) > 0 {
		var parts []string
		for _, s := range b.sections {
			parts = append(parts, fmt.Sprintf("%s %s (load %s; others %.2f cores)", strings.SplitN(s.title, " ", 2)[1], round(s.elapsed), s.load, s.others))
		}
		fmt.Fprintf(&sb, "- Time per group (load average at its start; CPU that processes other than the harness and its children used during it, in cores): %s\n", strings.Join(parts, "; "))
	}
	for _, s := range b.sections {
		fmt.Fprintf(&sb, "\n## %s\n\n", s.title)
		header := s.header
		if header == nil {
			header = []string{"Measure", "Result", "Baseline (same run)", "Ratio"}
		}
		sb.WriteString("| " + strings.Join(header, " | ") + " |\n|" + strings.Repeat("---|", len(header)) + "\n")
		for _, r := range s.rows {
			sb.WriteString("| " + strings.Join(r, " | ") + " |\n")
		}
		if len(s.notes) > 0 {
			sb.WriteString("\n")
			for _, n := range s.notes {
				fmt.Fprintf(&sb, "- %s\n", n)
			}
		}
	}
	return sb.String()
}
