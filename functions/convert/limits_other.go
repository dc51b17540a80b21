//go:build !linux

package function

import "os/exec"

// startLimited starts cmd. Limits are set on Linux only (limits_linux.go), where convert runs.
func startLimited(cmd *exec.Cmd, lim toolLimits) error { return cmd.Start() }
