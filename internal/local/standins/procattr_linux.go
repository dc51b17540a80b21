package standins

import "syscall"

// childProcess keeps a server started by the stack tied to it: in its own
// process group, so a Ctrl-C in the terminal reaches the stack alone (which
// stops the server in order), and sent SIGTERM by the kernel if the stack
// dies without stopping it.
func childProcess() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
