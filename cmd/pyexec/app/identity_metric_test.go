package app

import (
	"fmt"
	"os"
	"testing"
)

// Once its runner is ready, pyexec serve exports pyexec_identity_info with the uids the server
// and the runner run as: for root, the runner is --run-as (65534 by default); for anyone
// else, the same uid.
func TestServeIdentityMetric(t *testing.T) {
	s := startSidecar(t, nil)
	server, runner := os.Geteuid(), os.Geteuid()
	if server == 0 {
		runner = 65534
	}
	name := fmt.Sprintf(`pyexec_identity_info{runner_uid="%d",server_uid="%d"}`, runner, server)
	if v := metric(t, s, name); v != 1 {
		t.Errorf("%s = %v, want 1", name, v)
	}
}
