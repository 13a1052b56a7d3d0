package consensusbench

import "syscall"

// sysProcAttr puts a member in its own process group, so that signals
// reach everything it starts, and has the kernel kill it if this process
// dies (Pdeathsig: strictly, when the thread that started it exits; Go
// ends a thread only when a goroutine locked to it exits, which this
// package never does).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killGroup sends sig to the process group led by pid.
func killGroup(pid int, sig syscall.Signal) error { return syscall.Kill(-pid, sig) }
