//go:build !linux

package standins

import "syscall"

// childProcess puts a server started by the stack in its own process group,
// so a Ctrl-C in the terminal reaches the stack alone, which stops it in order.
func childProcess() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
