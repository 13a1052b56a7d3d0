//go:build unix && !linux

package consensusbench

import "syscall"

// sysProcAttr puts a member in its own process group, so that signals
// reach everything it starts.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// killGroup sends sig to the process group led by pid.
func killGroup(pid int, sig syscall.Signal) error { return syscall.Kill(-pid, sig) }
