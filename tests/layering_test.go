package tests_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/mfaflow/mfaflow/"

// deps lists what each package matching pattern depends on (with withTests, its test variants
// too), by go list at the workspace root.
func deps(t *testing.T, pattern string, withTests bool) map[string][]string {
	t.Helper()
	args := []string{"list", "-f", `{{.ImportPath}}|{{join .Deps " "}}`}
	if withTests {
		args = append(args, "-test")
	}
	cmd := exec.Command("go", append(args, pattern)...)
	cmd.Dir = ".." // the workspace root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", pattern, err, out)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, ds, _ := strings.Cut(line, "|")
		m[pkg] = strings.Fields(ds)
	}
	return m
}

// TestLayering enforces the layering rules that would otherwise live only in prose:
//   - the domain package of each service (state machine, rules) imports no transport, no
//     storage driver and no command contract (events/commands: what travels between services
//     is the adapters' business; shared rules such as ids.StatusIDFor live in pkg/);
//   - within a service, one adapter never builds on another (internal/httpapi and
//     internal/natsapi import neither each other nor anything under the other);
//   - pkg/ and events/ (shared parts and contracts) never import a service;
//   - no service imports another: they talk over NATS, through the contracts in events/.
func TestLayering(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatal("the go command is not on PATH; the layering check needs `go list`")
	}
	domains := []string{
		module + "services/status/internal/enrollment",
		module + "services/status/internal/signin",
		module + "services/device-registry/internal/device",
		module + "services/initiation/internal/setup",
		module + "services/notifier/internal/courier",
		module + "services/notifier/internal/templates",
	}
	forbidden := []string{"net/http", "github.com/nats-io/", "go.mongodb.org/", "github.com/gorilla/websocket"}
	contracts := []string{module + "events/commands"}
	for _, pkg := range domains {
		for _, dep := range deps(t, pkg, false)[pkg] {
			for _, f := range forbidden {
				if dep == f || strings.HasPrefix(dep, f) {
					t.Errorf("%s depends on %s: domain packages must not import transports or drivers", pkg, dep)
				}
			}
			for _, c := range contracts {
				if dep == c || strings.HasPrefix(dep, c+"/") {
					t.Errorf("%s depends on %s: domain packages must not import the command contract (adapters translate it)", pkg, dep)
				}
			}
		}
	}
	checkAdapters(t)

	services := []string{"services/initiation/", "services/status/", "services/device-registry/", "services/notifier/", "mobile-bridge/"}
	serviceOf := func(pkg string) string {
		for _, s := range services {
			if strings.HasPrefix(pkg, module+s) || strings.HasPrefix(pkg+"/", module+s) {
				return s
			}
		}
		return ""
	}
	checked := 0
	for _, pattern := range []string{"pkg/...", "events/...", "services/initiation/...", "services/status/...", "services/device-registry/...", "services/notifier/...", "mobile-bridge/..."} {
		for pkg, ds := range deps(t, module+pattern, true) {
			checked++
			own := serviceOf(pkg)
			for _, dep := range ds {
				other := serviceOf(dep)
				switch {
				case other == "" || other == own:
				case own == "":
					t.Errorf("%s imports %s: shared parts and contracts must not import a service", pkg, dep)
				default:
					t.Errorf("%s imports %s: a service must not import another (talk over NATS via events/)", pkg, dep)
				}
			}
		}
	}
	if checked < 20 {
		t.Fatalf("checked only %d packages: the patterns no longer match the layout", checked)
	}
}

// adapters are the transport adapters a service may have under internal/.
var adapters = []string{"httpapi", "natsapi"}

// adapterOf returns the service root and adapter of pkg (…/internal/httpapi and the packages
// under it), or "" when pkg is in no adapter.
func adapterOf(pkg string) (root, adapter string) {
	for _, a := range adapters {
		marker := "/internal/" + a
		if i := strings.Index(pkg, marker); i >= 0 {
			if rest := pkg[i+len(marker):]; rest == "" || strings.HasPrefix(rest, "/") {
				return pkg[:i], a
			}
		}
	}
	return "", ""
}

// checkAdapters refuses an adapter of a service that imports another adapter of the same
// service: each maps the domain to its transport itself, and what they share (id rules, DTO
// sources) lives in the domain or in pkg/.
func checkAdapters(t *testing.T) {
	t.Helper()
	found := 0
	for _, pattern := range []string{"services/initiation/...", "services/status/...", "services/device-registry/...", "services/notifier/...", "mobile-bridge/..."} {
		for pkg, ds := range deps(t, module+pattern, false) {
			root, own := adapterOf(pkg)
			if own == "" {
				continue
			}
			found++
			for _, dep := range ds {
				if depRoot, other := adapterOf(dep); other != "" && other != own && depRoot == root {
					t.Errorf("%s imports %s: an adapter must not build on another adapter of its service", pkg, dep)
				}
			}
		}
	}
	if found < 6 {
		t.Fatalf("found only %d adapter packages: the layout no longer matches internal/{httpapi,natsapi}", found)
	}
}
