//go:build reliability

package reliability

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Child processes of the long tests: the mp3converter binary, built once.

var built struct {
	once sync.Once
	path string
	err  error
}

func mp3converterBinary(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "mp3c-reliability-bin-")
		if err != nil {
			built.err = err
			return
		}
		built.path = filepath.Join(dir, "mp3converter")
		out, err := exec.Command("go", "build", "-o", built.path, "mp3converter/cmd/mp3converter").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

// child is a running mp3converter process; its output lines (stdout and stderr) arrive on lines.
type child struct {
	cmd    *exec.Cmd
	lines  chan string
	exited chan struct{} // closed once the process is gone; then err is its exit
	err    error
}

// startChild runs the binary with args and exactly env (no inherited environment).
func startChild(t testing.TB, env map[string]string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(mp3converterBinary(t), args...)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, lines: make(chan string, 100000), exited: make(chan struct{})}
	var reading sync.WaitGroup
	for _, r := range []io.Reader{stdout, stderr} {
		reading.Go(func() {
			s := bufio.NewScanner(r)
			s.Buffer(make([]byte, 1<<20), 1<<20)
			for s.Scan() {
				select {
				case c.lines <- s.Text():
				default: // nobody is reading that many lines
				}
			}
		})
	}
	go func() {
		reading.Wait() // Wait closes the pipes: read them to their end first
		c.err = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() { c.kill() })
	return c
}

// waitReady polls url (a readiness probe or any page) until it answers 200.
func waitReady(t testing.TB, c *child, url string, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-c.exited:
			t.Fatalf("%v exited: %v", c.cmd.Args, c.err)
		default:
		}
	}
	t.Fatalf("%s not ready within %s", url, within)
}

// drain forgets the output lines that arrived so far.
func (c *child) drain() {
	for {
		select {
		case <-c.lines:
		default:
			return
		}
	}
}

// waitLog waits for a log line containing fragment and returns it.
func (c *child) waitLog(t testing.TB, fragment string, within time.Duration) string {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case line := <-c.lines:
			if strings.Contains(line, fragment) {
				return line
			}
		case <-deadline:
			t.Fatalf("no log line with %s within %s", fragment, within)
		}
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *child) kill() {
	c.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
	}
}

// stop asks for a graceful shutdown (SIGTERM) and waits for it.
func (c *child) stop(t testing.TB) {
	t.Helper()
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		if c.err != nil {
			t.Errorf("%v did not exit cleanly: %v", c.cmd.Args, c.err)
		}
	case <-time.After(time.Minute):
		t.Errorf("%v did not stop within a minute", c.cmd.Args)
	}
}

// memory reads a field of /proc/PID/status in KiB: VmHWM is the peak resident set.
func (c *child) memory(t testing.TB, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, c.cmd.Process.Pid)
	return 0
}
