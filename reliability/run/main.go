// Command run is `make reliability`: it runs the reliability suite (the
// quick and the long tests, known bugs included), then each fuzzer for a
// bounded time, then the functions' tests of each class of attack (attacks.go), prints a summary table (case, runs, failures, lost,
// duplicates) and writes it, with every figure, into docs/reliability.md
// between the "results" markers.
//
//	go run ./reliability/run [-fuzztime 20s] [-doc docs/reliability.md] [-run REGEXP]
//
// It exits 1 when a test other than a known bug failed, or anything was lost
// or came twice. Known bugs (tests named *KnownBug*) are listed as open or fixed.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"

	"mp3converter/reliability"
)

// fuzzers run after the tests: package directory and target.
var fuzzers = []struct{ dir, target, what string }{
	{"./functions/validate", "FuzzValidate", "token parsing (validate)"},
	{"./functions/upload", "FuzzUploadBody", "multipart and raw upload bodies (upload)"},
	{"./reliability", "FuzzConvertEvent", "CloudEvent decoding in convert's Handle"},
	{"./reliability", "FuzzBrokerIngress", "CloudEvent decoding at the broker ingress"},
}

const (
	beginMarker = "<!-- results:begin (written by make reliability) -->"
	endMarker   = "<!-- results:end -->"
)

func main() {
	fuzzTime := flag.Duration("fuzztime", 20*time.Second, "how long each fuzzer runs")
	doc := flag.String("doc", "docs/reliability.md", "the document whose results section is rewritten (empty: none)")
	runPattern := flag.String("run", "", "only the tests matching this regexp (go test -run); fuzzers are skipped then")
	flag.Parse()

	started := time.Now()
	dir, err := os.MkdirTemp("", "mp3c-reliability-run-")
	if err != nil {
		fatal(err)
	}
	resultsPath := filepath.Join(dir, "results.jsonl")
	logPath := filepath.Join(dir, "go-test.log")
	fmt.Printf("reliability: logs in %s\n", dir)

	tests, err := runTests(resultsPath, logPath, *runPattern)
	if err != nil {
		fatal(err)
	}
	results, err := reliability.Read(resultsPath)
	if err != nil {
		fatal(err)
	}
	results = addUnrecorded(results, tests)
	if *runPattern == "" {
		for _, f := range fuzzers {
			results = append(results, runFuzzer(f.dir, f.target, f.what, *fuzzTime, dir))
		}
		for i, a := range attacks {
			results = append(results, runAttack(a.what, a.tests, filepath.Join(dir, fmt.Sprintf("attack-%d.log", i+1))))
		}
	}

	elapsed := time.Since(started).Round(time.Second)
	report := render(results, tests, elapsed)
	fmt.Println()
	fmt.Print(report)
	if *doc != "" && *runPattern == "" {
		if err := writeDoc(*doc, report); err != nil {
			fatal(err)
		}
		fmt.Printf("\nwritten into %s\n", *doc)
	}
	if failed(results, tests) {
		os.Exit(1)
	}
}

// testStatus is what `go test -json` said about one test.
type testStatus struct {
	name    string
	action  string // pass, fail, skip
	elapsed float64
}

// runTests runs the suite with `go test -json`, prints one line per finished
// top-level test, and returns the status of every test.
func runTests(resultsPath, logPath, pattern string) (map[string]testStatus, error) {
	args := []string{"test", "-tags", "reliability", "-count=1", "-timeout", "30m", "-json"}
	if pattern != "" {
		args = append(args, "-run", pattern)
	}
	args = append(args, "./reliability/")
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), reliability.EnvResults+"="+resultsPath, "MP3C_KNOWN_BUGS=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	fmt.Printf("reliability: go %s\n", strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	tests := map[string]testStatus{}
	s := bufio.NewScanner(out)
	s.Buffer(make([]byte, 4<<20), 4<<20)
	for s.Scan() {
		var ev struct {
			Action, Test, Output string
			Elapsed              float64
		}
		if json.Unmarshal(s.Bytes(), &ev) != nil {
			fmt.Fprintln(logFile, s.Text()) // a build error, say
			continue
		}
		if ev.Output != "" {
			io.WriteString(logFile, ev.Output)
		}
		if ev.Test == "" || (ev.Action != "pass" && ev.Action != "fail" && ev.Action != "skip") {
			if ev.Test == "" && ev.Action == "fail" {
				tests[packageFailure] = testStatus{name: packageFailure, action: "fail"}
			}
			continue
		}
		tests[ev.Test] = testStatus{name: ev.Test, action: ev.Action, elapsed: ev.Elapsed}
		if !strings.Contains(ev.Test, "/") {
			fmt.Printf("  %-4s %-60s %6.1fs\n", ev.Action, ev.Test, ev.Elapsed)
		}
	}
	// A failing test is not an error of the runner: its status says it.
	if err := cmd.Wait(); err != nil && len(tests) == 0 {
		return nil, fmt.Errorf("go test: %v (see %s)", err, logPath)
	}
	return tests, s.Err()
}

// addUnrecorded adds a row for every failed test that recorded no Result
// (it stopped before, or it has no figures of its own).
func addUnrecorded(results []reliability.Result, tests map[string]testStatus) []reliability.Result {
	recorded := map[string]bool{}
	for _, r := range results {
		recorded[r.Test] = true
	}
	var names []string
	for name, st := range tests {
		if st.action == "fail" && !recorded[name] && !isKnownBug(name) && !hasFailedChild(name, tests) &&
			!(name == packageFailure && anyTestFailed(tests)) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		results = append(results, reliability.Result{Case: "test " + name, Test: name, Runs: 1, Failures: 1, Failed: true})
	}
	return results
}

// packageFailure stands for `go test` failing outside any test (a build
// error, a panic); when tests failed, it is only their consequence.
const packageFailure = "(package)"

func anyTestFailed(tests map[string]testStatus) bool {
	for name, st := range tests {
		if name != packageFailure && st.action == "fail" {
			return true
		}
	}
	return false
}

func hasFailedChild(name string, tests map[string]testStatus) bool {
	for other, st := range tests {
		if strings.HasPrefix(other, name+"/") && st.action == "fail" {
			return true
		}
	}
	return false
}

// runFuzzer runs one fuzzer for d and reports its executions and whether it failed.
func runFuzzer(dir, target, what string, d time.Duration, logDir string) reliability.Result {
	r := reliability.Result{Case: "fuzz: " + what, Test: target}
	fmt.Printf("reliability: fuzzing %s in %s for %s\n", target, dir, d)
	var out bytes.Buffer
	// Minimizing a new input may take a minute by default: most of the budget.
	cmd := exec.Command("go", "test", "-run", "^$", "-fuzz", "^"+target+"$", "-fuzztime", d.String(), "-fuzzminimizetime", "5s", dir)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	os.WriteFile(filepath.Join(logDir, "fuzz-"+target+".log"), out.Bytes(), 0o644)
	text := out.String()
	if strings.Contains(text, "no fuzz tests to fuzz") || strings.Contains(text, "matches no fuzz tests") {
		r.Figures = append(r.Figures, "not present in "+dir)
		return r
	}
	if m := regexp.MustCompile(`execs: (\d+)`).FindAllStringSubmatch(text, -1); m != nil {
		fmt.Sscan(m[len(m)-1][1], &r.Runs)
	}
	r.Figures = append(r.Figures, fmt.Sprintf("%d executions in %s (go test -fuzz=%s -fuzztime=%s %s)", r.Runs, d, target, d, dir))
	if err != nil {
		r.Failures, r.Failed = 1, true
		if m := regexp.MustCompile(`Failing input written to (\S+)`).FindStringSubmatch(text); m != nil {
			r.Figures = append(r.Figures, "crasher kept as a regression case: "+dir+"/"+m[1])
		} else {
			r.Figures = append(r.Figures, "failed: see "+filepath.Join(logDir, "fuzz-"+target+".log"))
		}
	}
	return r
}

func isKnownBug(test string) bool { return strings.Contains(test, "KnownBug") }

// failed: a test other than a known bug failed, or something was lost or duplicated.
func failed(results []reliability.Result, tests map[string]testStatus) bool {
	for _, r := range results {
		if r.Lost > 0 || r.Duplicates > 0 || r.Failed {
			return true
		}
	}
	for name, st := range tests {
		if st.action == "fail" && !isKnownBug(name) && !onlyKnownBugsFailed(name, tests) &&
			!(name == packageFailure && anyTestFailed(tests)) {
			return true
		}
	}
	return false
}

// onlyKnownBugsFailed: the test failed only because known-bug subtests of it did.
func onlyKnownBugsFailed(name string, tests map[string]testStatus) bool {
	found := false
	for other, st := range tests {
		if strings.HasPrefix(other, name+"/") && st.action == "fail" {
			if !isKnownBug(other) {
				return false
			}
			found = true
		}
	}
	return found
}

// render is the report: the summary table, the known bugs, the figures.
func render(results []reliability.Result, tests map[string]testStatus, elapsed time.Duration) string {
	var b strings.Builder
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	fmt.Fprintf(&b, "Last run: %s, commit %s, %s, %d CPUs, %s; took %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"),
		strings.TrimSpace(string(commit)), runtime.Version(), runtime.NumCPU(), rabbitNote(), elapsed)
	fmt.Fprintln(&b, "| case | runs | failures | lost | duplicates | result |")
	fmt.Fprintln(&b, "|---|---:|---:|---:|---:|---|")
	var lost, dups int
	for _, r := range results {
		if isKnownBug(r.Test) {
			continue
		}
		result := "ok"
		if r.Failed || r.Failures > 0 {
			result = "FAILED"
		}
		if st, ok := tests[r.Test]; ok && st.action == "skip" {
			result = "skipped"
		}
		lost += r.Lost
		dups += r.Duplicates
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %s |\n", r.Case, r.Runs, r.Failures, r.Lost, r.Duplicates, result)
	}
	fmt.Fprintf(&b, "| **total** | | | **%d** | **%d** | |\n\n", lost, dups)

	var known []string
	for name, st := range tests {
		if isKnownBug(name) {
			state := map[string]string{"fail": "open", "pass": "FIXED: drop its knownBug guard", "skip": "not run"}[st.action]
			known = append(known, fmt.Sprintf("| %s | %s |", name, state))
		}
	}
	sort.Strings(known)
	if len(known) > 0 {
		fmt.Fprintln(&b, "Known bugs (TestKnownBug*: each states the bug and its fix; see Bugs found):")
		fmt.Fprintln(&b)
		fmt.Fprintln(&b, "| test | state |")
		fmt.Fprintln(&b, "|---|---|")
		for _, k := range known {
			fmt.Fprintln(&b, k)
		}
		fmt.Fprintln(&b)
	}

	fmt.Fprintln(&b, "Figures:")
	fmt.Fprintln(&b)
	for _, r := range results {
		if len(r.Figures) == 0 {
			continue
		}
		fmt.Fprintf(&b, "- %s (%s):\n", r.Case, r.Test)
		for _, f := range r.Figures {
			fmt.Fprintf(&b, "  - %s\n", f)
		}
	}
	return b.String()
}

func rabbitNote() string {
	if u := os.Getenv("RABBITMQ_URL"); u != "" {
		return "RabbitMQ at " + redact(u)
	}
	return "no RABBITMQ_URL (crash and broker cases skipped)"
}

// redact drops the password of a URL.
func redact(u string) string {
	return regexp.MustCompile(`//([^:/@]+):[^@]*@`).ReplaceAllString(u, "//$1:***@")
}

// writeDoc replaces the results section of the document.
func writeDoc(path, report string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	text := string(b)
	i, j := strings.Index(text, beginMarker), strings.Index(text, endMarker)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %q ... %q section", path, beginMarker, endMarker)
	}
	text = text[:i+len(beginMarker)] + "\n" + report + text[j:]
	return os.WriteFile(path, []byte(text), 0o644)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "reliability:", err)
	os.Exit(2)
}
