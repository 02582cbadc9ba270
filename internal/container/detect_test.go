package container

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/pyexec/pyexec/pkg/api"
)

func TestDetectFixtures(t *testing.T) {
	tests := []struct {
		fixture string
		want    api.Container
	}{
		{"docker-cgroupv1", api.Container{
			InContainer: true, Runtime: api.RuntimeDocker,
			Evidence: []string{
				"file:/.dockerenv",
				"cgroup:/docker/05ac9c192806",
				"mountinfo:/var/lib/docker/containers/05ac9c192806/resolv.conf",
				"pidns:pid:[4026532451]",
			},
		}},
		{"docker-cgroupv2", api.Container{
			InContainer: true, Runtime: api.RuntimeDocker,
			Evidence: []string{
				"file:/.dockerenv",
				"mountinfo:/var/lib/docker/containers/7aa90c50d6d1/resolv.conf",
				"pidns:pid:[4026532588]",
			},
		}},
		{"override-false", api.Container{
			InContainer: false, Runtime: api.RuntimeNone,
			Evidence: []string{
				"override:PYEXEC_CONTAINER=false",
				"file:/.dockerenv",
				"mountinfo:/var/lib/docker/containers/c4ea210f6de1/resolv.conf",
				"pidns:pid:[4026532588]",
			},
		}},
		{"podman", api.Container{
			InContainer: true, Runtime: api.RuntimePodman,
			Evidence: []string{
				"env:container=podman",
				"proc1-environ:container=podman",
				"file:/run/.containerenv",
				"cgroup:/machine.slice/libpod-8e52afc75c09.scope",
				"mountinfo:/containers/storage/overlay-containers/8e52afc75c09/userdata/resolv.conf",
				"pidns:pid:[4026532719]",
			},
		}},
		{"podman-ubi-cgroupv2", api.Container{
			InContainer: true, Runtime: api.RuntimePodman,
			Evidence: []string{
				"env:container=oci",
				"proc1-environ:container=oci",
				"file:/run/.containerenv",
				"mountinfo:/containers/storage/overlay-containers/4489baa99106/userdata/hostname",
				"pidns:pid:[4026533012]",
			},
		}},
		{"proc1-unreadable", api.Container{
			InContainer: true, Runtime: api.RuntimePodman,
			Evidence: []string{
				"env:container=podman",
				"mountinfo:/containers/overlay-containers/932291b2dda6/userdata/resolv.conf",
				"pidns:pid:[4026532901]",
			},
		}},
		{"k8s-containerd-cgroupv1", api.Container{
			InContainer: true, Runtime: api.RuntimeContainerd, Orchestrator: api.OrchestratorKubernetes,
			Evidence: []string{
				"env:KUBERNETES_SERVICE_HOST",
				"dir:/var/run/secrets/kubernetes.io/serviceaccount",
				"cgroup:/kubepods/burstable/pode58c66f7-2c96-4c5b-b889-6e67d0f4909b/eea1c42fa586",
				"mountinfo:/var/lib/kubelet/pods/e58c66f7-2c96-4c5b-b889-6e67d0f4909b/etc-hosts",
				"mountinfo:/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/a147408f71ec/hostname",
				"pidns:pid:[4026532810]",
			},
		}},
		{"k8s-containerd-cgroupv2", api.Container{
			InContainer: true, Runtime: api.RuntimeContainerd, Orchestrator: api.OrchestratorKubernetes,
			Evidence: []string{
				"env:KUBERNETES_SERVICE_HOST",
				"mountinfo:/var/lib/kubelet/pods/fcc85a53-57e2-4c8c-af66-a9c00d8df7ea/etc-hosts",
				"mountinfo:/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/f2c899eceff0/hostname",
				"pidns:pid:[4026532667]",
			},
		}},
		{"k8s-crio", api.Container{
			InContainer: true, Runtime: api.RuntimeCRIO, Orchestrator: api.OrchestratorKubernetes,
			Evidence: []string{
				"env:container=oci",
				"proc1-environ:container=oci",
				"file:/run/.containerenv",
				"env:KUBERNETES_SERVICE_HOST",
				"dir:/var/run/secrets/kubernetes.io/serviceaccount",
				"cgroup:/kubepods.slice/kubepods-burstable.sli...6411cbc2e.slice/crio-6cd62cc60d7b.scope",
				"mountinfo:/containers/storage/overlay-containers/0b6128949d13/userdata/resolv.conf",
				"mountinfo:/ostree/deploy/rhcos/var/lib/kubelet/p...d-43a0-4452-907d-1936411cbc2e/etc-hosts",
				"pidns:pid:[4026533274]",
			},
		}},
		{"k8s-crio-cgroupv2", api.Container{
			InContainer: true, Runtime: api.RuntimeCRIO, Orchestrator: api.OrchestratorKubernetes,
			Evidence: []string{
				"env:container=oci",
				"proc1-environ:container=oci",
				"file:/run/.containerenv",
				"env:KUBERNETES_SERVICE_HOST",
				"mountinfo:/containers/storage/overlay-containers/1d4a6f0e9c2b/userdata/resolv.conf",
				"mountinfo:/ostree/deploy/rhcos/var/lib/kubelet/p...9-3cd6-4d5e-9071-aa2a201a6cb2/etc-hosts",
				"pidns:pid:[4026533391]",
			},
		}},
		{"lxc", api.Container{
			InContainer: true, Runtime: api.RuntimeLXC,
			Evidence: []string{
				"proc1-environ:container=lxc",
				"cgroup:/lxc.payload.web01",
				"pidns:pid:[4026532349]",
			},
		}},
		{"systemd-nspawn", api.Container{
			InContainer: true, Runtime: api.RuntimeNspawn,
			Evidence: []string{
				"file:/run/systemd/container=systemd-nspawn",
				"file:/run/host/container-manager=systemd-nspawn",
				"cgroup:/machine.slice/systemd-nspawn@debian.service/payload/init.scope",
				"cgroup:/machine.slice/systemd-nspawn@debian.service/payload/system.slice/pyapp.service",
				"pidns:pid:[4026532523]",
			},
		}},
		{"openvz", api.Container{
			InContainer: true, Runtime: api.RuntimeOpenVZ,
			Evidence: []string{
				"file:/proc/vz",
				"pidns:pid:[4026532788]",
			},
		}},
		{"wsl-host", api.Container{
			InContainer: false, Runtime: api.RuntimeNone,
			Evidence: []string{"wsl:osrelease"},
		}},
		{"wsl-host-own-pidns", api.Container{
			InContainer: false, Runtime: api.RuntimeNone,
			Evidence: []string{"wsl:osrelease"},
		}},
		{"plain-host", api.Container{
			InContainer: false, Runtime: api.RuntimeNone,
			Evidence: []string{},
		}},
		{"stale-dockerenv-host", api.Container{
			InContainer: true, Runtime: api.RuntimeDocker,
			Evidence: []string{"file:/.dockerenv"},
			Warnings: []string{"only /.dockerenv says container and the PID namespace is the host's: " +
				"if this is a host with a stale marker, set PYEXEC_CONTAINER=false"},
		}},
		{"pidns-only", api.Container{
			InContainer: true, Runtime: api.RuntimeUnknown,
			Evidence: []string{"pidns:pid:[4026532612]"},
		}},
	}

	listed := map[string]bool{}
	for _, tc := range tests {
		listed[tc.fixture] = true
		t.Run(tc.fixture, func(t *testing.T) {
			got := Detector{Root: filepath.Join("testdata", tc.fixture)}.Detect()
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Detect() =\n%s\nwant\n%s", dump(got), dump(tc.want))
			}
		})
	}

	// Every fixture directory is in the table, and every one documents its shape.
	dirs, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		if !listed[d.Name()] {
			t.Errorf("fixture testdata/%s is not in the table", d.Name())
		}
		src, err := os.ReadFile(filepath.Join("testdata", d.Name(), "SOURCE"))
		if err != nil {
			t.Errorf("fixture %s: %v", d.Name(), err)
			continue
		}
		if n := strings.Count(strings.TrimSpace(string(src)), "\n") + 1; n < 2 || n > 5 {
			t.Errorf("fixture %s: SOURCE has %d lines, want 2-5", d.Name(), n)
		}
	}
}

func dump(c api.Container) string {
	b, _ := json.MarshalIndent(c, "", "  ")
	return string(b)
}

// mapEnv is a LookupEnv over a fixed environment.
func mapEnv(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

func TestLookupEnvWinsOverEnviron(t *testing.T) {
	// The fixture's proc/self/environ says PYEXEC_CONTAINER=false; the given environment
	// does not, so the override must not be seen.
	got := Detector{Root: "testdata/override-false", LookupEnv: mapEnv(nil)}.Detect()
	want := api.Container{
		InContainer: true, Runtime: api.RuntimeDocker,
		Evidence: []string{
			"file:/.dockerenv",
			"mountinfo:/var/lib/docker/containers/c4ea210f6de1/resolv.conf",
			"pidns:pid:[4026532588]",
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Detect() =\n%s\nwant\n%s", dump(got), dump(want))
	}

	// And the given environment is what step 2 and step 4 read: the k8s fixture's own
	// environ has KUBERNETES_SERVICE_HOST, this one has container=podman instead.
	got = Detector{Root: "testdata/k8s-containerd-cgroupv2",
		LookupEnv: mapEnv(map[string]string{"container": "podman"})}.Detect()
	want = api.Container{
		InContainer: true, Runtime: api.RuntimePodman, Orchestrator: api.OrchestratorKubernetes,
		Evidence: []string{
			"env:container=podman",
			"mountinfo:/var/lib/kubelet/pods/fcc85a53-57e2-4c8c-af66-a9c00d8df7ea/etc-hosts",
			"mountinfo:/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/f2c899eceff0/hostname",
			"pidns:pid:[4026532667]",
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Detect() =\n%s\nwant\n%s", dump(got), dump(want))
	}
}

func TestOverrideAndManagerValues(t *testing.T) {
	stale := "only /.dockerenv says container and the PID namespace is the host's: " +
		"if this is a host with a stale marker, set PYEXEC_CONTAINER=false"
	tests := []struct {
		name    string
		fixture string
		env     map[string]string
		want    api.Container
	}{
		{"true on a host", "plain-host", map[string]string{"PYEXEC_CONTAINER": " YES "}, api.Container{
			InContainer: true, Runtime: api.RuntimeUnknown,
			Evidence: []string{"override:PYEXEC_CONTAINER=true"},
		}},
		{"1 keeps the runtime named by others, no stale warning", "stale-dockerenv-host",
			map[string]string{"PYEXEC_CONTAINER": "1"}, api.Container{
				InContainer: true, Runtime: api.RuntimeDocker,
				Evidence: []string{"override:PYEXEC_CONTAINER=true", "file:/.dockerenv"},
			}},
		{"no fixes a stale marker", "stale-dockerenv-host", map[string]string{"PYEXEC_CONTAINER": "No"}, api.Container{
			InContainer: false, Runtime: api.RuntimeNone,
			Evidence: []string{"override:PYEXEC_CONTAINER=false", "file:/.dockerenv"},
		}},
		{"false drops the orchestrator", "k8s-containerd-cgroupv2",
			map[string]string{"PYEXEC_CONTAINER": "0", "KUBERNETES_SERVICE_HOST": "10.96.0.1"}, api.Container{
				InContainer: false, Runtime: api.RuntimeNone,
				Evidence: []string{
					"override:PYEXEC_CONTAINER=false",
					"env:KUBERNETES_SERVICE_HOST",
					"mountinfo:/var/lib/kubelet/pods/fcc85a53-57e2-4c8c-af66-a9c00d8df7ea/etc-hosts",
					"mountinfo:/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/f2c899eceff0/hostname",
					"pidns:pid:[4026532667]",
				},
			}},
		{"invalid is ignored with a warning", "stale-dockerenv-host",
			map[string]string{"PYEXEC_CONTAINER": "maybe"}, api.Container{
				InContainer: true, Runtime: api.RuntimeDocker,
				Evidence: []string{"file:/.dockerenv"},
				Warnings: []string{
					`PYEXEC_CONTAINER="maybe" is not one of true, false, 1, 0, yes, no: it was ignored`,
					stale,
				},
			}},
		{"container=wsl is a host and skips the PID namespace", "pidns-only",
			map[string]string{"container": "wsl"}, api.Container{
				InContainer: false, Runtime: api.RuntimeNone,
				Evidence: []string{"env:container=wsl"},
			}},
		{"container=oci is a container of unknown runtime", "plain-host",
			map[string]string{"container": "oci"}, api.Container{
				InContainer: true, Runtime: api.RuntimeUnknown,
				Evidence: []string{"env:container=oci"},
			}},
		{"container=lxc-libvirt is lxc", "plain-host",
			map[string]string{"container": "lxc-libvirt"}, api.Container{
				InContainer: true, Runtime: api.RuntimeLXC,
				Evidence: []string{"env:container=lxc-libvirt"},
			}},
		{"a stronger name wins over a later one", "docker-cgroupv2",
			map[string]string{"container": "CRI-O"}, api.Container{
				InContainer: true, Runtime: api.RuntimeCRIO,
				Evidence: []string{
					"env:container=CRI-O",
					"file:/.dockerenv",
					"mountinfo:/var/lib/docker/containers/7aa90c50d6d1/resolv.conf",
					"pidns:pid:[4026532588]",
				},
			}},
		{"KUBERNETES_SERVICE_HOST alone", "plain-host",
			map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, api.Container{
				InContainer: true, Runtime: api.RuntimeUnknown, Orchestrator: api.OrchestratorKubernetes,
				Evidence: []string{"env:KUBERNETES_SERVICE_HOST"},
			}},
		{"an empty KUBERNETES_SERVICE_HOST says nothing", "plain-host",
			map[string]string{"KUBERNETES_SERVICE_HOST": ""}, api.Container{
				InContainer: false, Runtime: api.RuntimeNone, Evidence: []string{},
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Detector{Root: filepath.Join("testdata", tc.fixture), LookupEnv: mapEnv(tc.env)}.Detect()
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Detect() =\n%s\nwant\n%s", dump(got), dump(tc.want))
			}
		})
	}
}

func TestEvidenceIsNeverNull(t *testing.T) {
	b, err := json.Marshal(Detector{Root: "testdata/plain-host"}.Detect())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"in_container":false,"runtime":"none","orchestrator":"","evidence":[]}`
	if string(b) != want {
		t.Errorf("JSON = %s, want %s", b, want)
	}
	b, _ = json.Marshal(Detector{Root: t.TempDir()}.Detect()) // nothing readable at all
	if string(b) != want {
		t.Errorf("JSON of an empty root = %s, want %s", b, want)
	}
}

// A root's absolute symbolic links resolve inside the root, never on the real system.
func TestRootConfinesSymlinks(t *testing.T) {
	root := t.TempDir()
	mustMkdir(t, filepath.Join(root, "var"))
	mustMkdir(t, filepath.Join(root, "run/secrets/kubernetes.io/serviceaccount"))
	mustSymlink(t, "/run", filepath.Join(root, "var/run"))
	// proc -> /proc would read the real /proc if followed outside the root; inside the
	// root it points at itself, a loop that must end as "unreadable".
	mustSymlink(t, "/proc", filepath.Join(root, "proc"))
	mustSymlink(t, "../../../../etc/hostname", filepath.Join(root, ".dockerenv"))

	got := Detector{Root: root, LookupEnv: mapEnv(nil)}.Detect()
	want := api.Container{
		InContainer: true, Runtime: api.RuntimeUnknown, Orchestrator: api.OrchestratorKubernetes,
		Evidence: []string{"dir:/var/run/secrets/kubernetes.io/serviceaccount"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Detect() =\n%s\nwant\n%s", dump(got), dump(want))
	}

	r := fsRoot(root)
	if p, err := r.resolve("/var/run/secrets", true); err != nil || p != filepath.Join(root, "run/secrets") {
		t.Errorf("resolve(/var/run/secrets) = %q, %v; want %q", p, err, filepath.Join(root, "run/secrets"))
	}
	if p, err := r.resolve("/../../..//etc/../run", true); err != nil || p != filepath.Join(root, "run") {
		t.Errorf("resolve(/../../..//etc/../run) = %q, %v; want %q", p, err, filepath.Join(root, "run"))
	}
	if _, err := r.read("/proc/self/cgroup"); err == nil {
		t.Error("read(/proc/self/cgroup) through proc -> /proc succeeded, want an error")
	}
}

func mustMkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func TestText(t *testing.T) {
	tests := []struct {
		in   api.Container
		want string
	}{
		{api.Container{
			InContainer: true, Runtime: api.RuntimeContainerd, Orchestrator: api.OrchestratorKubernetes,
			Evidence: []string{"env:KUBERNETES_SERVICE_HOST", "mountinfo:/var/lib/kubelet/pods/u/etc-hosts"},
		}, "container: yes, runtime containerd, orchestrator kubernetes " +
			"(evidence: env:KUBERNETES_SERVICE_HOST, mountinfo:/var/lib/kubelet/pods/u/etc-hosts)"},
		{api.Container{Runtime: api.RuntimeNone, Evidence: []string{}},
			"container: no, runtime none (evidence: none)"},
		{api.Container{Runtime: api.RuntimeNone, Evidence: []string{"wsl:osrelease"}},
			"container: no, runtime none (evidence: wsl:osrelease)"},
		{api.Container{
			InContainer: true, Runtime: api.RuntimeDocker,
			Evidence: []string{"file:/.dockerenv"},
			Warnings: []string{"first", "second"},
		}, "container: yes, runtime docker (evidence: file:/.dockerenv); warning: first; warning: second"},
		{api.Container{InContainer: true}, "container: yes, runtime unknown (evidence: none)"},
		{api.Container{}, "container: no, runtime none (evidence: none)"},
	}
	for _, tc := range tests {
		if got := Text(tc.in); got != tc.want {
			t.Errorf("Text(%+v) =\n%q\nwant\n%q", tc.in, got, tc.want)
		}
	}
	// A fixture end to end, warning included.
	got := Text(Detector{Root: "testdata/stale-dockerenv-host"}.Detect())
	want := "container: yes, runtime docker (evidence: file:/.dockerenv); warning: only /.dockerenv says " +
		"container and the PID namespace is the host's: if this is a host with a stale marker, set PYEXEC_CONTAINER=false"
	if got != want {
		t.Errorf("Text(stale-dockerenv-host) =\n%q\nwant\n%q", got, want)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/var/lib/docker/containers/abc/hostname", "/var/lib/docker/containers/abc/hostname"},
		{`/mnt/backup\040disk`, "/mnt/backup disk"},
		{`/a\011b\012c`, "/a\tb\nc"},
		{`C:\134`, `C:\`},
		{`\134\134server\134share`, `\\server\share`},
		{`/odd\04`, `/odd\04`},   // too short to be an escape
		{`/odd\400`, `/odd\400`}, // above \377
		{`/odd\x41`, `/odd\x41`}, // not octal
		{`/end\`, `/end\`},
	}
	for _, tc := range tests {
		got, ok := parseMountinfoLine("1 2 0:1 " + tc.in + " " + tc.in + " rw - 9p " + tc.in + " rw")
		if !ok || got != (mount{root: tc.want, point: tc.want, source: tc.want}) {
			t.Errorf("mountinfo fields %q parsed as %+v, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
}

func TestParseMountinfoLine(t *testing.T) {
	tests := []struct {
		line string
		want mount
		ok   bool
	}{
		{"1024 1012 8:1 /var/lib/docker/containers/abc/hostname /etc/hostname rw,relatime - ext4 /dev/sda1 rw",
			mount{root: "/var/lib/docker/containers/abc/hostname", point: "/etc/hostname", source: "/dev/sda1"}, true},
		{"47 26 254:17 / /mnt/backup\\040disk rw,relatime shared:31 master:2 - ext4 /dev/vdb1 rw",
			mount{root: "/", point: "/mnt/backup disk", source: "/dev/vdb1"}, true},
		{"75 59 0:65 / /mnt/c rw,noatime - 9p C:\\134 rw,dirsync",
			mount{root: "/", point: "/mnt/c", source: `C:\`}, true},
		{"90 80 0:50 /a-b\\040c /etc/hosts rw - virtiofs kataShared rw",
			mount{root: "/a-b c", point: "/etc/hosts", source: "kataShared"}, true},
		{"", mount{}, false},
		{"1 2 3:4 / / rw shared:1 ext4 /dev/sda1 rw", mount{}, false}, // no separator
		{"1 2 3:4 / / rw - ext4", mount{}, false},                     // no source
	}
	for _, tc := range tests {
		got, ok := parseMountinfoLine(tc.line)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseMountinfoLine(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

func TestMountHint(t *testing.T) {
	tests := []struct {
		m    mount
		want hint
		ok   bool
	}{
		{mount{root: "/docker/containers/abc/hosts", point: "/etc/hosts"},
			hint{container: true, runtime: api.RuntimeDocker}, true},
		{mount{root: "/var/lib/kubelet/pods/u/etc-hosts", point: "/etc/hosts"},
			hint{container: true, kube: true}, true},
		{mount{root: "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/s/resolv.conf", point: "/etc/resolv.conf"},
			hint{container: true, runtime: api.RuntimeContainerd}, true},
		{mount{root: "/containers/storage/overlay-containers/c/userdata/hostname", point: "/etc/hostname"},
			hint{container: true, runtime: runtimePodmanOrCRIO}, true},
		{mount{root: "/c-1a2b-hostname", point: "/etc/hostname", source: "kataShared"},
			hint{container: true, runtime: api.RuntimeUnknown}, true},
		{mount{root: "/var/lib/lxc/web/hostname", point: "/etc/hostname"},
			hint{container: true, runtime: api.RuntimeLXC}, true},
		{mount{root: "/var/lib/docker/containers/abc/hostname", point: "/etc/motd"}, hint{}, false},
		{mount{root: "/systemd/resolve/stub-resolv.conf", point: "/etc/resolv.conf"}, hint{}, false},
		{mount{root: "/", point: "/etc/hosts"}, hint{}, false},
	}
	for _, tc := range tests {
		got, ok := mountHint(tc.m)
		if ok != tc.ok || got != tc.want {
			t.Errorf("mountHint(%+v) = %+v, %v; want %+v, %v", tc.m, got, ok, tc.want, tc.ok)
		}
	}
}

func TestCgroupHint(t *testing.T) {
	tests := []struct {
		line string
		path string
		want hint
		ok   bool
	}{
		{"12:memory:/docker/5dace3de0735", "/docker/5dace3de0735",
			hint{container: true, runtime: api.RuntimeDocker}, true},
		{"4:memory:/system.slice/docker-898b44c4a066.scope", "/system.slice/docker-898b44c4a066.scope",
			hint{container: true, runtime: api.RuntimeDocker}, true},
		{"0::/system.slice/docker.service", "/system.slice/docker.service", hint{}, false},
		{"0::/system.slice/containerd.service", "/system.slice/containerd.service", hint{}, false},
		{"1:name=systemd:/kubepods/burstable/podu/abc", "/kubepods/burstable/podu/abc",
			hint{container: true, kube: true}, true},
		{"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podu.slice/cri-containerd-abc.scope",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podu.slice/cri-containerd-abc.scope",
			hint{container: true, runtime: api.RuntimeContainerd, kube: true}, true},
		{"3:cpu,cpuacct:/kubepods/besteffort/podu/crio-abc", "/kubepods/besteffort/podu/crio-abc",
			hint{container: true, runtime: api.RuntimeCRIO, kube: true}, true},
		{"6:memory:/machine.slice/libpod-abc.scope", "/machine.slice/libpod-abc.scope",
			hint{container: true, runtime: api.RuntimePodman}, true},
		{"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-abc.scope/container",
			"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-abc.scope/container",
			hint{container: true, runtime: api.RuntimePodman}, true},
		{"0::/lxc.payload.web01", "/lxc.payload.web01", hint{container: true, runtime: api.RuntimeLXC}, true},
		{"5:memory:/lxc/web01", "/lxc/web01", hint{container: true, runtime: api.RuntimeLXC}, true},
		{`1:name=systemd:/machine.slice/machine-lxc\x2d1234\x2dweb.scope`, `/machine.slice/machine-lxc\x2d1234\x2dweb.scope`,
			hint{container: true, runtime: api.RuntimeLXC}, true},
		{"0::/lxc.monitor.web01", "/lxc.monitor.web01", hint{}, false},
		{"0::/machine.slice/systemd-nspawn@debian.service/payload", "/machine.slice/systemd-nspawn@debian.service/payload",
			hint{container: true, runtime: api.RuntimeNspawn}, true},
		{"0::/", "/", hint{}, false},
		{"0::/init.scope", "/init.scope", hint{}, false},
		{"4:memory:/process_api/8def8afa", "/process_api/8def8afa", hint{}, false},
	}
	for _, tc := range tests {
		p, ok := cgroupPath(tc.line)
		if !ok || p != tc.path {
			t.Errorf("cgroupPath(%q) = %q, %v; want %q", tc.line, p, ok, tc.path)
			continue
		}
		got, ok := cgroupHint(p)
		if ok != tc.ok || got != tc.want {
			t.Errorf("cgroupHint(%q) = %+v, %v; want %+v, %v", p, got, ok, tc.want, tc.ok)
		}
	}
	for _, bad := range []string{"", "garbage", "0::", "1:cpu"} {
		if p, ok := cgroupPath(bad); ok {
			t.Errorf("cgroupPath(%q) = %q, true; want false", bad, p)
		}
	}
}

func TestShort(t *testing.T) {
	long := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod3c6fd8bd_43a0_4452_907d_1936411cbc2e.slice/" +
		"crio-6cd62cc60d7b01b86d6be6470df4ffa40595b870086f8ad1012dd061135f9200.scope"
	tests := []struct{ in, want string }{
		{"podman", "podman"},
		{"/docker/05ac9c192806f410791a599de9e023878308adf186df22db1c20b4970b6f95d0", "/docker/05ac9c192806"},
		{"deadbeefdeadbeefdeadbeefdeadbee", "deadbeefdeadbeefdeadbeefdeadbee"}, // 31 hex digits stay
		{long, "/kubepods.slice/kubepods-burstable.sli...6411cbc2e.slice/crio-6cd62cc60d7b.scope"},
		{"a\tb\x00c", "a?b?c"},
		{strings.Repeat("x", 80), strings.Repeat("x", 80)},
		{strings.Repeat("x", 81), strings.Repeat("x", 38) + "..." + strings.Repeat("x", 39)},
	}
	for _, tc := range tests {
		got := short(tc.in)
		if got != tc.want {
			t.Errorf("short(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if n := len([]rune(got)); n > maxValue {
			t.Errorf("short(%q) has %d runes, want at most %d", tc.in, n, maxValue)
		}
	}
}

func TestParseEnviron(t *testing.T) {
	got := parseEnviron([]byte("PATH=/bin\x00container=podman\x00EMPTY=\x00A=1=2\x00container=docker\x00junk\x00\x00"))
	want := map[string]string{"PATH": "/bin", "container": "podman", "EMPTY": "", "A": "1=2"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseEnviron = %v, want %v", got, want)
	}
}
