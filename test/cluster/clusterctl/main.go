// Command clusterctl brings the test cluster of package cluster up and down for people:
//
//	go run ./test/cluster/clusterctl up      # build, start, wait for the node, install pyexec and
//	                                          # the sample bot (make cluster-up); --bare: no pyexec
//	go run ./test/cluster/clusterctl kubectl logs -n bots deploy/bot
//	go run ./test/cluster/clusterctl down    # stop everything, remove every trace (make cluster-down)
//	go run ./test/cluster/clusterctl soak -n 20  # boot and tear down 20 times, report the boot
//	                                          # times and failures (make cluster-soak)
//
// Run it as root from the repository's root. The cluster lives in --dir (default
// /tmp/pyexec-cluster) and in the network namespace pyexec-cluster; kubectl must run in that
// namespace, which the kubectl subcommand does (with the cluster's kubectl and kubeconfig).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/pyexec/pyexec/test/cluster"
)

// stageEnv tells the copy of clusterctl that runs inside the network namespace what to do.
const stageEnv = "PYEXEC_CLUSTERCTL_STAGE"

func main() {
	fs := flag.NewFlagSet("clusterctl", flag.ExitOnError)
	dir := fs.String("dir", "/tmp/pyexec-cluster", "directory of the cluster's files")
	netns := fs.String("netns", "pyexec-cluster", "name of the cluster's network namespace")
	bare := fs.Bool("bare", false, "up: do not install the chart and the sample bot")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: clusterctl [--dir DIR] [--netns NAME] up [--bare]|down|soak [-n N] [--install] [--failed DIR] [--wait D]|kubectl ARGS...")
		fs.PrintDefaults()
	}
	fs.Parse(os.Args[1:])
	if fs.NArg() == 0 {
		fs.Usage()
		os.Exit(2)
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "clusterctl:", err)
		os.Exit(2)
	}
	c := &cluster.Cluster{Dir: abs, NetNS: *netns, Log: os.Stderr}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch fs.Arg(0) {
	case "up":
		// --bare after up too, as the usage says (the flags before up stop at it).
		ufs := flag.NewFlagSet("up", flag.ExitOnError)
		ufs.BoolVar(bare, "bare", *bare, "do not install the chart and the sample bot")
		ufs.Parse(fs.Args()[1:])
		err = up(ctx, c, !*bare)
	case "down":
		err = c.Destroy(false)
	case "soak":
		err = soakCmd(ctx, c, fs.Args()[1:])
	case "kubectl":
		err = kubectl(c, fs.Args()[1:])
	default:
		fs.Usage()
		os.Exit(2)
	}
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "clusterctl:", err)
		os.Exit(1)
	}
}

func up(ctx context.Context, c *cluster.Cluster, install bool) error {
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	if os.Getenv(stageEnv) == "boot" {
		c.Bin = os.Getenv("PYEXEC_CLUSTER_BIN")
		if err := c.Boot(ctx); err != nil {
			return err
		}
		if install {
			return c.InstallPyexec(ctx, repo)
		}
		return nil
	}
	if err := c.Prepare(ctx, repo); err != nil {
		if !errors.Is(err, cluster.ErrInUse) {
			c.Destroy(true)
		}
		return err
	}
	code, err := c.ReexecInNetNS(stageEnv+"=boot", "PYEXEC_CLUSTER_BIN="+c.Bin)
	if err == nil && code != 0 {
		err = fmt.Errorf("boot failed (exit %d); logs in %s/logs", code, c.Dir)
	}
	if err != nil {
		c.Destroy(true)
		return err
	}
	fmt.Printf("\nThe cluster is up. Try:\n  go run ./test/cluster/clusterctl kubectl get pods -A\n"+
		"  go run ./test/cluster/clusterctl kubectl logs -n bots deploy/bot            # the sample bot's results\n"+
		"  go run ./test/cluster/clusterctl kubectl logs -n bots deploy/bot -c pyexec  # one line per execution\n"+
		"or run any command in its network namespace:\n  nsenter --net=/run/netns/%s %s/kubectl --kubeconfig %s get pods -A\n"+
		"Stop it with: go run ./test/cluster/clusterctl down\n", c.NetNS, c.Bin, c.Kubeconfig())
	return nil
}

// kubectl runs the cluster's kubectl in its network namespace.
func kubectl(c *cluster.Cluster, args []string) error {
	bin, err := exec.Command("bash", "test/tools/build.sh").Output()
	if err != nil {
		return fmt.Errorf("test/tools/build.sh: %w", err)
	}
	kubectl := filepath.Join(string(bin[:len(bin)-1]), "kubectl")
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + c.NetNS, "--", kubectl, "--kubeconfig", c.Kubeconfig()}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd.Run()
}
