package stacktest

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

var built struct {
	mu   sync.Mutex
	path string // in the temporary directory of the test that built it
}

// Binary builds the mp3converter binary and returns its path. The binary
// lasts as long as the test that built it: later calls in that test reuse it,
// a later test builds it again (from Go's build cache: a link).
func Binary(t TB) string {
	t.Helper()
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.path != "" {
		if _, err := os.Stat(built.path); err == nil {
			return built.path
		}
	}
	path := filepath.Join(t.TempDir(), "mp3converter")
	if out, err := exec.Command("go", "build", "-o", path, "mp3converter/cmd/mp3converter").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	built.path = path
	return path
}

// Process is a running mp3converter binary. Its output lines, stdout and
// stderr, arrive on Lines (those nobody reads in time are dropped).
type Process struct {
	Cmd    *exec.Cmd
	Lines  chan string
	exited chan struct{} // closed once the process is gone; then err is its exit
	err    error
}

// StartProcess runs the binary (Binary) with args and exactly env
// ("KEY=value"), and kills it when t ends.
func StartProcess(t TB, env []string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(Binary(t), args...)
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatalf("%v", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("%v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%v", err)
	}
	p := &Process{Cmd: cmd, Lines: make(chan string, 100000), exited: make(chan struct{})}
	var reading sync.WaitGroup
	for _, r := range []io.Reader{stdout, stderr} {
		reading.Go(func() {
			s := bufio.NewScanner(r)
			s.Buffer(make([]byte, 1<<20), 1<<20)
			for s.Scan() {
				select {
				case p.Lines <- s.Text():
				default: // nobody is reading that many lines
				}
			}
		})
	}
	go func() {
		reading.Wait() // Wait closes the pipes: read them to their end first
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.Kill)
	return p
}

// WaitReady polls url (a readiness probe or any page) until it answers 200.
func (p *Process) WaitReady(t TB, url string, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("%v exited: %v", p.Cmd.Args, p.err)
		default:
		}
	}
	t.Fatalf("%s not ready within %s", url, within)
}

// Drain forgets the output lines that arrived so far.
func (p *Process) Drain() {
	for {
		select {
		case <-p.Lines:
		default:
			return
		}
	}
}

// WaitLog waits for an output line containing fragment and returns it.
func (p *Process) WaitLog(t TB, fragment string, within time.Duration) string {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case line := <-p.Lines:
			if strings.Contains(line, fragment) {
				return line
			}
		case <-deadline:
			t.Fatalf("no line with %s within %s", fragment, within)
		}
	}
}

// Kill sends SIGKILL and waits (bounded) for the process to be gone.
func (p *Process) Kill() {
	p.Cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
	}
}

// Stop asks for a graceful shutdown (SIGTERM), as Ctrl-C does, and waits
// for it: an error if the process did not exit cleanly within a minute.
func (p *Process) Stop() error {
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.err != nil {
			return fmt.Errorf("%v did not exit cleanly: %v", p.Cmd.Args, p.err)
		}
		return nil
	case <-time.After(time.Minute):
		return fmt.Errorf("%v did not stop within a minute", p.Cmd.Args)
	}
}
