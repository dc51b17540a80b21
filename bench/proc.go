package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// fnProcess is one function running alone in its own process, as its
// container runs it: `BINARY function NAME` (or `fnhost NAME`) with
// LISTEN_ADDRESS and its configuration in the environment.
type fnProcess struct {
	cmd     *exec.Cmd
	URL     string
	started time.Time // just before the process was started
	exited  chan error
}

// startFunction starts a function process; the output goes to logw.
func startFunction(binary, name string, env map[string]string, logw io.Writer) (*fnProcess, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	var args []string
	if strings.HasSuffix(binary, "fnhost") {
		args = []string{name}
	} else {
		args = []string{"function", name}
	}
	cmd := exec.Command(binary, args...)
	cmd.Env = []string{"LISTEN_ADDRESS=" + addr, "PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = logw, logw
	// Should the harness die, its function processes die with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &fnProcess{cmd: cmd, URL: "http://" + addr, exited: make(chan error, 1)}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.exited <- cmd.Wait() }()
	return p, nil
}

// freeAddr picks a free loopback port (closed again for the process to take).
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// probeClient opens a new connection per probe, as a kubelet does.
var probeClient = &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// waitReady polls /health/readiness every millisecond (bounded by limit)
// and returns when it first answered 200.
func (p *fnProcess) waitReady(ctx context.Context, limit time.Duration) (time.Time, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		resp, err := probeClient.Get(p.URL + "/health/readiness")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Now(), nil
			}
		}
		select {
		case err := <-p.exited:
			p.exited <- err
			return time.Time{}, fmt.Errorf("%s exited before it was ready: %v", p.cmd.Path, err)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return time.Time{}, fmt.Errorf("%s not ready within %s", p.URL, limit)
}

// status reads a field of /proc/PID/status in KiB (VmHWM: peak resident set).
func (p *fnProcess) status(field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, p.cmd.Process.Pid)
}

// stop sends SIGTERM (a graceful shutdown, as Kubernetes does), waits up to
// 10 s, then kills.
func (p *fnProcess) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		return err
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		return fmt.Errorf("%s did not stop within 10 s after SIGTERM: killed", p.cmd.Path)
	}
}

func mibOfKiB(kib int64) string { return fmt.Sprintf("%.0f MiB", float64(kib)/1024) }
