// Package mongotest gives tests a MongoDB-compatible server: the one MFA_MONGODB_URI names
// (`make test` starts an embedded FerretDB and sets it), else one started for this test binary
// from tools/ferretdb (FerretDB with SQLite in a temp dir, stopped when the binary exits). Each
// test gets a database of its own, dropped at its end.
package mongotest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/pkg/mongodoc"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/connstring"
)

// never is never closed: a goroutine waiting on it holds the helper's stdin for the process.
var never chan struct{}

var (
	startOnce sync.Once
	started   string
	startErr  error
)

// ServerURI returns the URI of the server, starting one if MFA_MONGODB_URI is unset. It fails
// the test (never skips) when no server can be had.
func ServerURI(tb testing.TB) string {
	tb.Helper()
	if uri := strings.TrimSpace(os.Getenv("MFA_MONGODB_URI")); uri != "" {
		return uri
	}
	startOnce.Do(func() { started, startErr = startFerretDB() })
	if startErr != nil {
		tb.Fatalf("mongotest: no MFA_MONGODB_URI and no embedded FerretDB: %v", startErr)
	}
	return started
}

// DatabaseURI returns a URI that names a fresh database (dropped when tb ends) on the server.
func DatabaseURI(tb testing.TB) string {
	tb.Helper()
	uri := ServerURI(tb)
	if _, err := connstring.Parse(uri); err != nil {
		tb.Fatalf("mongotest: MFA_MONGODB_URI: %v", err)
	}
	out := WithDatabase(uri, "t_"+strings.ReplaceAll(uuid.NewString(), "-", "")[:16])
	tb.Cleanup(func() {
		client, db, err := mongodoc.Connect(context.Background(), out)
		if err != nil {
			return
		}
		_ = db.Drop(context.Background())
		_ = client.Disconnect(context.Background())
	})
	return out
}

// Database connects to a fresh database (see DatabaseURI).
func Database(tb testing.TB) *mongo.Database {
	tb.Helper()
	client, db, err := mongodoc.Connect(tb.Context(), DatabaseURI(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	return db
}

// WithDatabase returns uri with its database (path) set to name.
func WithDatabase(uri, name string) string {
	scheme, rest, _ := strings.Cut(uri, "://")
	hosts, tail, hasPath := strings.Cut(rest, "/")
	query := ""
	if hasPath {
		if i := strings.IndexByte(tail, '?'); i >= 0 {
			query = tail[i:]
		}
	} else if i := strings.IndexByte(hosts, '?'); i >= 0 {
		hosts, query = hosts[:i], hosts[i:]
	}
	return scheme + "://" + hosts + "/" + name + query
}

// startFerretDB builds tools/ferretdb (a module of its own, outside the workspace) and runs it
// with its standard input tied to this process, so it stops when the test binary exits.
func startFerretDB() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "mongotest-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "ferretdb")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = filepath.Join(root, "tools", "ferretdb")
	build.Env = append(os.Environ(), "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build tools/ferretdb: %v: %s", err, out)
	}
	cmd := exec.Command(bin, "-stdin")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	// Open for the life of the process (a collected pipe would be closed by its finalizer);
	// its close, when this process exits, stops the server.
	go func() {
		<-never
		_ = stdin.Close()
	}()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
		close(lines)
	}()
	select {
	case uri, ok := <-lines:
		if !ok || uri == "" {
			return "", errors.New("tools/ferretdb printed no URI")
		}
		return uri, nil
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		return "", errors.New("tools/ferretdb did not start within 2 minutes")
	}
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "tools", "ferretdb", "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("tools/ferretdb not found above the working directory")
		}
		dir = parent
	}
}
