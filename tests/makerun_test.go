package tests_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/testkit"
)

// TestMakeRunOnMongo runs `MFA_STORE=mongo make run` as a developer does, without
// MFA_MONGODB_URI: the target starts tools/ferretdb with its data in the dev stack's data dir,
// the stack answers an initiation, and a Ctrl-C (SIGINT to the process group, as a terminal
// sends it) stops the stack and FerretDB. A second run finds the first run's enrollment.
func TestMakeRunOnMongo(t *testing.T) {
	if testing.Short() {
		t.Skip("make run: skipped with -short (it builds the dev stack and FerretDB); make test runs it")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("needs make on PATH to run make run; make test, which has it, runs this test")
	}
	dataDir := t.TempDir()
	httpAddr := freeAddr(t)
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "MFA_MONGODB_URI", "MFA_STORE", "MFA_DATA_DIR", "MFA_HTTP_ADDR", "MFA_EMBEDDED_NATS_ADDR", "MFA_PUBLIC_URL",
			"MAKEFLAGS", "MFLAGS", "MAKELEVEL": // the outer make's, when make test runs this
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "MFA_STORE=mongo", "MFA_DATA_DIR="+dataDir, "MFA_HTTP_ADDR="+httpAddr, "MFA_EMBEDDED_NATS_ADDR="+freeAddr(t))
	base := "http://" + httpAddr

	token := func(t *testing.T) string {
		t.Helper()
		resp, err := http.Post(base+"/dev/token", "application/json", strings.NewReader(`{"sub":"alice"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Token string }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Token == "" {
			t.Fatalf("dev token: %d %v", resp.StatusCode, err)
		}
		return out.Token
	}
	do := func(t *testing.T, method, path, tok string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.Bytes()
	}

	var statusID string
	for run := 1; run <= 2; run++ {
		out := makeRun(t, env, base)
		tok := token(t)
		if run == 1 {
			code, b := do(t, http.MethodPost, "/verification-srv/v2/setup/initiate/totp?qr=none", tok)
			var in struct {
				StatusID string `json:"status_id"`
			}
			if code != http.StatusOK || json.Unmarshal(b, &in) != nil || in.StatusID == "" {
				t.Fatalf("initiate: %d %s", code, b)
			}
			statusID = in.StatusID
		} else if code, b := do(t, http.MethodGet, "/verification-srv/verificationstatus/"+statusID, tok); code != http.StatusOK || !bytes.Contains(b, []byte(`"INITIATED"`)) {
			t.Fatalf("second run: the first run's enrollment = %d %s, want INITIATED", code, b)
		}
		out.interrupt(t)
		t.Logf("run %d of make run:\n%s", run, out.String())
		if !strings.Contains(out.String(), "FerretDB (tools/ferretdb") {
			t.Errorf("run %d: make run did not say it started FerretDB:\n%s", run, out.String())
		}
		if pids := processesWith(filepath.Join(dataDir, "ferretdb")); len(pids) > 0 {
			t.Fatalf("run %d: ferretdb still running after Ctrl-C: pids %v", run, pids)
		}
	}
	if _, err := os.Stat(filepath.Join(dataDir, "ferretdb", "mfaflow.sqlite")); err != nil {
		t.Errorf("FerretDB's data is not in the data dir: %v", err)
	}
}

// makeRunProc is a running `make run` with its output.
type makeRunProc struct {
	testkit.LogBuffer
	cmd  *exec.Cmd
	done chan struct{}
}

// makeRun starts `make run` in its own process group and waits until the stack answers.
func makeRun(t *testing.T, env []string, base string) *makeRunProc {
	t.Helper()
	p := &makeRunProc{done: make(chan struct{})}
	p.cmd = exec.Command("make", "--no-print-directory", "run")
	p.cmd.Dir = ".."
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = &p.LogBuffer, &p.LogBuffer
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	})
	end := time.Now().Add(5 * time.Minute) // the first run builds the dev stack and FerretDB
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("make run exited before the stack was up:\n%s", p.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(end) {
			t.Fatalf("make run: no healthy stack within 5 min:\n%s", p.String())
		}
	}
}

// interrupt sends SIGINT to the whole process group, as Ctrl-C in a terminal does, and waits
// for make to exit.
func (p *makeRunProc) interrupt(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("make run still running 30 s after Ctrl-C:\n%s", p.String())
	}
}

// processesWith returns the pids of processes whose command line contains s.
func processesWith(s string) []string {
	var pids []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) {
			pids = append(pids, fmt.Sprintf("%s (%s)", filepath.Base(d), bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
	}
	return pids
}
