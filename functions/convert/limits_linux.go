package function

import (
	"os/exec"

	"golang.org/x/sys/unix"
)

// startLimited starts cmd and puts limits on the process it started: address space, open
// files and CPU seconds, so that a hostile input cannot make ffmpeg or ffprobe eat the
// pod's memory, its file descriptors or a core for ever. Go cannot set a child's rlimits
// before exec, so they are set right after Start (prlimit(2)): the child has run for a
// moment without them, too short to matter. When the limits cannot be set, the process is
// killed: no tool runs unbounded.
func startLimited(cmd *exec.Cmd, lim toolLimits) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	for _, l := range []struct {
		resource int
		value    uint64
	}{
		{unix.RLIMIT_AS, lim.memory},
		{unix.RLIMIT_NOFILE, lim.files},
		{unix.RLIMIT_CPU, lim.cpuSeconds},
	} {
		rl := unix.Rlimit{Cur: l.value, Max: l.value}
		if err := unix.Prlimit(pid, l.resource, &rl, nil); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return err
		}
	}
	return nil
}
