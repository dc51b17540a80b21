package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestExternalFlag(t *testing.T) {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	external := externalFlag{}
	fs.Var(external, "external", "")
	if err := fs.Parse([]string{"--external", "convert=http://127.0.0.1:9000", "--external=notify=http://127.0.0.1:9001/"}); err != nil {
		t.Fatal(err)
	}
	if len(external) != 2 || external["convert"] != "http://127.0.0.1:9000" || external["notify"] != "http://127.0.0.1:9001/" {
		t.Fatalf("external = %v", external)
	}
	for _, bad := range []string{"convert", "=http://x", "convert="} {
		if err := fs.Parse([]string{"--external", bad}); err == nil {
			t.Errorf("--external %q accepted", bad)
		}
	}
}

// TestUpStopsCleanlyOnCtrlC runs `mp3converter up` as a newcomer does and
// presses Ctrl-C: it exits 0, and everything it logged is one JSON stream
// (no logrus lines from the embedded MySQL), with durations as people write
// them.
func TestUpStopsCleanlyOnCtrlC(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := filepath.Join(t.TempDir(), "mp3converter")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "up", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir())
	cmd.Env = append(os.Environ(), "MYSQL_DSN=", "MONGODB_URI=", "RABBITMQ_URL=", "SMTP_URL=", "MP3C_LOG_LEVEL=info")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	lines := bufio.NewScanner(stdout)
	for lines.Scan() && !strings.Contains(lines.Text(), "is up at") {
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("up after Ctrl-C: %v, want exit status 0\n%s", err, stderr.String())
	}

	sawTimeout := false
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		var record map[string]any
		if err := json.Unmarshal([]byte(line), &record); err != nil {
			t.Errorf("not a JSON log record: %s", line)
			continue
		}
		if v, ok := record["convert_timeout"]; ok {
			sawTimeout = true
			if v != "10m0s" {
				t.Errorf("convert_timeout logged as %v, want 10m0s", v)
			}
		}
	}
	if !sawTimeout {
		t.Errorf("convert's start-up record is missing:\n%s", stderr.String())
	}
}
