package confine

import "golang.org/x/sys/unix"

// forkCalls are the calls that make a process or a thread: arm64 has no fork or vfork.
var forkCalls = []uintptr{unix.SYS_CLONE, unix.SYS_CLONE3}
