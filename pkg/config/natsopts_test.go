package config_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// TestNATSNKeyLogin: with MFA_NATS_NKEY a service logs in to a server that only knows the NKey's
// public key; without it the same server refuses the connection.
func TestNATSNKeyLogin(t *testing.T) {
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	seedFile := filepath.Join(t.TempDir(), "service.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true, Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(ns.Shutdown)

	c, err := config.FromEnv(env(map[string]string{"MFA_NATS_NKEY": seedFile}))
	if err != nil {
		t.Fatal(err)
	}
	opts, err := c.NATSOptions()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := natsx.Connect(ns.ClientURL(), "nkey-test", opts...)
	if err != nil {
		t.Fatalf("connect with the NKey: %v", err)
	}
	nc.Close()
	if nc, err := natsx.Connect(ns.ClientURL(), "no-key"); err == nil {
		nc.Close()
		t.Fatal("the server accepted a connection without the NKey")
	}
	if _, err := config.FromEnv(env(map[string]string{"MFA_NATS_NKEY": seedFile, "MFA_NATS_CREDS": "x.creds"})); err == nil {
		t.Fatal("NKey and creds together are accepted")
	}
	if _, err := config.FromEnv(env(map[string]string{"MFA_NATS_TLS_CERT": "c.pem"})); err == nil {
		t.Fatal("a TLS certificate without its key is accepted")
	}
}
