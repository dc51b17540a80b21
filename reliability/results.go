// Package reliability holds the reliability and security suite of
// mp3converter: tests that crash, cut, overload and feed bad input to the
// whole system and count what was lost.
//
// The quick tests run with every `go test mp3converter/...`. The long ones
// (crash, broker restart, outages, load, an hour of audio) carry the build
// tag `reliability` and run, with the fuzzers, through `make reliability`,
// which prints a summary table and writes it into docs/reliability.md
// (see reliability/run).
//
// Each test records what it tried, how many times, and what failed, was lost
// or came twice as a Result, appended as one JSON line to the file named by
// MP3C_RELIABILITY_RESULTS (nothing is written when it is unset).
package reliability

import (
	"bufio"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"sync"
)

// Result is what one test case tried and what came of it.
type Result struct {
	Case       string   `json:"case"`       // what was tried, in a few words
	Test       string   `json:"test"`       // the Go test that tried it
	Runs       int      `json:"runs"`       // how many times (uploads, requests, kills, ...)
	Failures   int      `json:"failures"`   // runs that did not end as promised
	Lost       int      `json:"lost"`       // items lost (an upload without MP3 or email, a stray chunk, ...)
	Duplicates int      `json:"duplicates"` // items that came twice (emails, MP3s)
	Figures    []string `json:"figures,omitempty"`
	Failed     bool     `json:"failed"` // the test failed
}

// EnvResults names the file Results are appended to.
const EnvResults = "MP3C_RELIABILITY_RESULTS"

var appendMu sync.Mutex

// Append adds r to the file at path as one JSON line.
func Append(path string, r Result) error {
	appendMu.Lock()
	defer appendMu.Unlock()
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Read returns the Results in the file at path, in order; none if it does not exist.
func Read(path string) ([]Result, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Result
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		var r Result
		if err := json.Unmarshal(s.Bytes(), &r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, s.Err()
}
