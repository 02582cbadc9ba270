// Package container tells whether pyexec runs inside a container, which runtime made
// it and whether Kubernetes orchestrates it. pyexec's policy depends on the answer: in a
// container it uses the system Python and never builds a virtual environment.
//
// Detection reads only files under Detector.Root (default "/"), resolving symbolic links
// as if Root were "/", so a fixture directory never leads to the real /proc. It collects
// evidence from every step below, in this order, so the report shows everything seen.
// InContainer is decided by the first step that says yes; the runtime is the one named
// by the strongest signal that names one, and later signals only refine an unknown or
// ambiguous runtime (KUBERNETES_SERVICE_HOST says "container, kubernetes"; a mountinfo
// source under io.containerd.grpc.v1.cri then names containerd).
//
//  1. Override: PYEXEC_CONTAINER=true|false (also 1/0/yes/no, any case) decides
//     InContainer alone. When true, other signals may still name the runtime and the
//     orchestrator; when false the runtime is "none". An invalid value is ignored with
//     a warning.
//  2. Managers that declare themselves: container= in the process environment and in
//     /proc/1/environ (unreadable means unknown, never "no"), /run/systemd/container and
//     /run/host/container-manager. docker, podman, lxc (and lxc-libvirt),
//     systemd-nspawn, crio/cri-o and containerd name their runtime; oci and anything
//     else mean a container of unknown runtime; wsl is not a container but WSL (step 6).
//  3. Marker files: /run/.containerenv (podman when it holds engine="podman-...",
//     otherwise podman or CRI-O, which both create it: a later crio or libpod hint
//     decides, else Kubernetes means CRI-O and no Kubernetes means podman) and
//     /.dockerenv (docker).
//  4. Kubernetes: KUBERNETES_SERVICE_HOST in the environment or the directory
//     /var/run/secrets/kubernetes.io/serviceaccount: a container orchestrated by
//     Kubernetes, runtime unknown unless another signal names it. containerd and CRI-O
//     create no /.dockerenv, so this step and the next are what find them.
//  5. Hints: cgroup paths in /proc/1/cgroup and /proc/self/cgroup (docker, kubepods,
//     libpod, crio, cri-containerd, lxc, machine.slice); the root field of the mounts
//     on /etc/hostname, /etc/hosts and /etc/resolv.conf in /proc/self/mountinfo
//     (/docker/containers/, /kubelet/pods/, io.containerd.grpc.v1.cri/sandboxes,
//     overlay-containers, kataShared, /lxc/); OpenVZ when /proc/vz exists and /proc/bc
//     does not. A cgroup of "0::/" or a path without a hint is never evidence of a host.
//  6. WSL: /proc/sys/kernel/osrelease containing "microsoft" or "wsl" (any case) is a
//     host unless steps 1-5 found a container; step 7 is then skipped, because WSL
//     runs each distribution in a PID namespace of its own.
//  7. PID namespace: a /proc/self/ns/pid link other than pid:[4026531836], the
//     kernel's initial PID namespace, is a container of unknown runtime.
//  8. Otherwise: a host, runtime "none", no orchestrator.
//
// A stale /.dockerenv on a host (some VM images carry one) answers InContainer=true,
// runtime docker: a marker file is trusted because "container" is the safe direction,
// where pyexec only uses the system Python and never builds a venv, and
// PYEXEC_CONTAINER=false exists for a host that carries a stale marker. When /.dockerenv
// is the only container evidence and the PID namespace is the initial one, the result
// carries the warning "only /.dockerenv says container and the PID namespace is the
// host's: if this is a host with a stale marker, set PYEXEC_CONTAINER=false".
//
// Evidence is never nil and holds no duplicates. To keep it short, a run of 32 or more hex
// digits (a container or sandbox ID) keeps its first 12, the mounts of one runtime
// directory are reported once, and a value still longer than 80 characters loses its
// middle, so that both /var/lib/docker/containers/ and crio-<id>.scope stay visible.
//
// The run root /run/containers/storage/overlay-containers/ is shared by rootful podman
// and CRI-O, so that path alone never tells them apart: a crio or libpod cgroup does, and
// failing those, Kubernetes means CRI-O.
package container
