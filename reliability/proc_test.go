//go:build reliability

package reliability

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"mp3converter/internal/stacktest"
)

// Child processes of the long tests: the mp3converter binary (stacktest).

// startChild runs the binary with args and exactly env (no inherited environment).
func startChild(t testing.TB, env map[string]string, args ...string) *stacktest.Process {
	t.Helper()
	var list []string
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	return stacktest.StartProcess(t, list, args...)
}

// procStatus reads a field of /proc/PID/status in KiB: VmHWM is the peak resident set.
func procStatus(t testing.TB, p *stacktest.Process, field string) int {
	t.Helper()
	pid := p.Cmd.Process.Pid
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
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
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
