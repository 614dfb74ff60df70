package tests_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering enforces the layering rule that would otherwise live only in prose: the domain
// package of each service (state machine, rules) imports no transport and no storage driver.
func TestLayering(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH; the layering check needs `go list`")
	}
	domains := []string{
		"github.com/mfaflow/mfaflow/services/status/internal/enrollment",
		"github.com/mfaflow/mfaflow/services/device-registry/internal/device",
		"github.com/mfaflow/mfaflow/services/initiation/internal/setup",
	}
	forbidden := []string{"net/http", "github.com/nats-io/", "go.mongodb.org/", "github.com/gorilla/websocket"}
	for _, pkg := range domains {
		cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg)
		cmd.Dir = ".." // the workspace root
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range forbidden {
				if dep == f || strings.HasPrefix(dep, f) {
					t.Errorf("%s depends on %s: domain packages must not import transports or drivers", pkg, dep)
				}
			}
		}
	}
}
