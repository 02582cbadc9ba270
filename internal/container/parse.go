package container

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/moby/sys/mountinfo"

	"github.com/pyexec/pyexec/pkg/api"
)

// maxValue is the longest value kept in one evidence string.
const maxValue = 80

// runtimePodmanOrCRIO is a signal that podman and CRI-O both leave; never reported.
const runtimePodmanOrCRIO = "podman-or-cri-o"

// hint is what one signal says.
type hint struct {
	container bool   // the signal says "container"
	runtime   string // a Runtime* constant, runtimePodmanOrCRIO or ""
	kube      bool   // the signal says Kubernetes
}

// parseEnviron splits a NUL-separated environment block; the first of repeated keys wins,
// as getenv does.
func parseEnviron(b []byte) map[string]string {
	env := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			continue
		}
		if _, seen := env[k]; !seen {
			env[k] = v
		}
	}
	return env
}

// parseOverride reads a PYEXEC_CONTAINER value.
func parseOverride(v string) (value, ok bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "1", "yes":
		return true, true
	case "false", "0", "no":
		return false, true
	}
	return false, false
}

// managerRuntime maps a container= value (systemd's container interface) to a runtime;
// wsl reports WSL, which is a host.
func managerRuntime(v string) (runtime string, wsl bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "docker":
		return api.RuntimeDocker, false
	case "podman":
		return api.RuntimePodman, false
	case "lxc", "lxc-libvirt":
		return api.RuntimeLXC, false
	case "systemd-nspawn":
		return api.RuntimeNspawn, false
	case "crio", "cri-o":
		return api.RuntimeCRIO, false
	case "containerd":
		return api.RuntimeContainerd, false
	case "wsl":
		return "", true
	}
	return api.RuntimeUnknown, false
}

// cgroupPath returns the path part of one /proc/<pid>/cgroup line
// ("hierarchy-ID:controllers:path").
func cgroupPath(line string) (string, bool) {
	parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
	if len(parts) != 3 || parts[2] == "" {
		return "", false
	}
	return parts[2], true
}

// cgroupHint reads the runtime and Kubernetes hints of a cgroup path. Each path
// segment is matched, so /system.slice/docker.service (the daemon on a host) is no
// hint; machine.slice, where podman also puts libpod-<id>.scope, names systemd-nspawn
// only when nothing more specific does.
func cgroupHint(p string) (hint, bool) {
	var h hint
	nspawn := false
	for _, seg := range strings.Split(p, "/") {
		switch {
		case strings.HasPrefix(seg, "kubepods"):
			h.kube = true
		case h.runtime != "":
		case strings.Contains(seg, "libpod"):
			h.runtime = api.RuntimePodman
		case strings.HasPrefix(seg, "cri-containerd"):
			h.runtime = api.RuntimeContainerd
		case seg == "crio" || strings.HasPrefix(seg, "crio-"):
			h.runtime = api.RuntimeCRIO
		case seg == "docker" || strings.HasPrefix(seg, "docker-"):
			h.runtime = api.RuntimeDocker
		case seg == "lxc" || strings.HasPrefix(seg, "lxc.payload") || strings.HasPrefix(seg, "machine-lxc"):
			h.runtime = api.RuntimeLXC
		case seg == "machine.slice":
			nspawn = true
		}
	}
	if h.runtime == "" && nspawn {
		h.runtime = api.RuntimeNspawn
	}
	if h.runtime == "" && !h.kube {
		return hint{}, false
	}
	h.container = true
	return h, true
}

// mount is the part of a mountinfo line that detection reads.
type mount struct {
	root   string // field 4: the path inside the mounted filesystem
	point  string // field 5: the mount point
	source string // the first field after the fstype, past the "-" separator
}

// parseMountinfoLine parses one /proc/<pid>/mountinfo line:
// "id parent major:minor root mountpoint options [optional...] - fstype source superoptions".
// A line at a time, so that one malformed line (or the last one, cut at maxRead) costs only
// itself.
func parseMountinfoLine(line string) (mount, bool) {
	ms, err := mountinfo.GetMountsFromReader(strings.NewReader(line), nil)
	if err != nil || len(ms) != 1 {
		return mount{}, false
	}
	return mount{root: ms[0].Root, point: ms[0].Mountpoint, source: ms[0].Source}, true
}

// mountHint reads the runtime and Kubernetes hints of the files a runtime bind-mounts
// on /etc/hostname, /etc/hosts and /etc/resolv.conf.
func mountHint(m mount) (hint, bool) {
	switch m.point {
	case "/etc/hostname", "/etc/hosts", "/etc/resolv.conf":
	default:
		return hint{}, false
	}
	h := hint{kube: strings.Contains(m.root, "/kubelet/pods/")}
	switch {
	case strings.Contains(m.root, "/docker/containers/"):
		h.runtime = api.RuntimeDocker
	case strings.Contains(m.root, "io.containerd.grpc.v1.cri/sandboxes"):
		h.runtime = api.RuntimeContainerd
	case strings.Contains(m.root, "overlay-containers"):
		h.runtime = runtimePodmanOrCRIO
	case strings.Contains(m.root, "kataShared") || m.source == "kataShared":
		h.runtime = api.RuntimeUnknown // a Kata VM: the runtime outside is not visible
	case strings.Contains(m.root, "/lxc/"):
		h.runtime = api.RuntimeLXC
	}
	if h.runtime == "" && !h.kube {
		return hint{}, false
	}
	h.container = true
	return h, true
}

// short makes a value fit for an evidence string: control characters become '?', a run
// of 32 or more hex digits (a container or sandbox ID) keeps its first 12, as docker
// prints IDs, and a value still longer than maxValue runes loses its middle, so both the
// start (/var/lib/docker/containers/) and the end (crio-<id>.scope) stay visible.
func short(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
	s = shortenIDs(s)
	r := []rune(s)
	if len(r) <= maxValue {
		return s
	}
	head := (maxValue - 3) / 2
	tail := maxValue - 3 - head
	return string(r[:head]) + "..." + string(r[len(r)-tail:])
}

// shortIDLen is what is kept of a long hex ID.
const shortIDLen = 12

// shortenIDs cuts every run of 32 or more hex digits to its first shortIDLen.
func shortenIDs(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && isHex(s[j]) {
			j++
		}
		switch {
		case j-i >= 32:
			b.WriteString(s[i : i+shortIDLen])
			i = j
		case j > i:
			b.WriteString(s[i:j])
			i = j
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
