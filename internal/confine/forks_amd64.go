package confine

import "golang.org/x/sys/unix"

// forkCalls are the calls that make a process or a thread.
var forkCalls = []uintptr{unix.SYS_CLONE, unix.SYS_CLONE3, unix.SYS_FORK, unix.SYS_VFORK}
