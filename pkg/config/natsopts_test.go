package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// TestNATSNKeyLogin: with MFA_NATS_NKEY a service logs in to a server that only knows the NKey's
// public key and uses the connection; without it the same server refuses the connection.
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
	ns := natstest.StartWith(t, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} })

	nc, err := natsx.Connect(ns.URL, "nkey-test", natsOptions(t, map[string]string{"MFA_NATS_NKEY": seedFile})...)
	if err != nil {
		t.Fatalf("connect with the NKey: %v", err)
	}
	roundTrip(t, nc)
	nc.Close()
	refused(t, ns.URL, "without the NKey", nil, "authorization violation")
	if _, err := config.FromEnv(env(map[string]string{"MFA_NATS_NKEY": seedFile, "MFA_NATS_CREDS": "x.creds"})); err == nil {
		t.Fatal("NKey and creds together are accepted")
	}
	if _, err := config.FromEnv(env(map[string]string{"MFA_NATS_TLS_CERT": "c.pem"})); err == nil {
		t.Fatal("a TLS certificate without its key is accepted")
	}
}

// natsOptions builds the connection options of a service from the given environment.
func natsOptions(t *testing.T, vars map[string]string) []nats.Option {
	t.Helper()
	c, err := config.FromEnv(env(vars))
	if err != nil {
		t.Fatal(err)
	}
	opts, err := c.NATSOptions()
	if err != nil {
		t.Fatal(err)
	}
	return opts
}

// roundTrip proves a connection works: a request answered over the server, and the account's
// JetStream answering.
func roundTrip(t *testing.T, nc *nats.Conn) {
	t.Helper()
	sub, err := nc.Subscribe("mfa.test.echo", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if reply, err := nc.Request("mfa.test.echo", []byte("ping"), 5*time.Second); err != nil || string(reply.Data) != "ping" {
		t.Fatalf("request over the connection: %v %v", reply, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(t.Context()); err != nil {
		t.Fatalf("jetstream over the connection: %v", err)
	}
}

// refused asserts that a connection with opts is refused with an error that says one of wantErr.
func refused(t *testing.T, url, why string, opts []nats.Option, wantErr ...string) {
	t.Helper()
	nc, err := natsx.Connect(url, "refused", opts...)
	if err == nil {
		nc.Close()
		t.Fatalf("%s: connected", why)
	}
	for _, w := range wantErr {
		if strings.Contains(strings.ToLower(err.Error()), strings.ToLower(w)) {
			return
		}
	}
	t.Fatalf("%s: error %q says none of %q", why, err, wantErr)
}

// TestNATSCredsLogin: with MFA_NATS_CREDS a service logs in to a server in operator mode (an
// operator JWT trusted by the server, account JWTs from its resolver, the user's JWT and seed in
// a .creds file) and uses the connection; without creds, with a user of an account the server
// does not trust, or with a revoked user it is refused with an authorization error.
func TestNATSCredsLogin(t *testing.T) {
	op := natstest.NewOperator(t)
	creds, _ := op.User("status")
	revoked, revokedPub := op.User("revoked")
	op.Revoke(revokedPub)
	foreign, _ := natstest.NewOperator(t).User("foreign")
	ns := natstest.StartWith(t, op.Configure)

	nc, err := natsx.Connect(ns.URL, "creds-test", natsOptions(t, map[string]string{"MFA_NATS_CREDS": creds})...)
	if err != nil {
		t.Fatalf("connect with the .creds file: %v", err)
	}
	defer nc.Close()
	roundTrip(t, nc)

	refused(t, ns.URL, "without creds", nil, "authorization violation")
	refused(t, ns.URL, "a user of an untrusted account", natsOptions(t, map[string]string{"MFA_NATS_CREDS": foreign}), "authorization violation")
	// The revoked user differs from the one that connected by its revocation only.
	refused(t, ns.URL, "a revoked user", natsOptions(t, map[string]string{"MFA_NATS_CREDS": revoked}), "authorization violation")
	missing := filepath.Join(t.TempDir(), "missing.creds")
	refused(t, ns.URL, "a creds file that is not there", natsOptions(t, map[string]string{"MFA_NATS_CREDS": missing}), missing)
}

// TestNATSTLSClientCertificates: against a server that requires client certificates
// (TLSVerify), MFA_NATS_TLS_CERT, MFA_NATS_TLS_KEY and MFA_NATS_TLS_CA connect and work; no
// client certificate, one from another CA, or no CA for the server's certificate are refused.
func TestNATSTLSClientCertificates(t *testing.T) {
	pki, other := natstest.NewPKI(t), natstest.NewPKI(t)
	ns := natstest.StartWith(t, pki.Configure)
	url := strings.Replace(ns.URL, "nats://", "tls://", 1)
	withCert := func(p *natstest.PKI, ca string) map[string]string {
		return map[string]string{"MFA_NATS_TLS_CERT": p.ClientCert, "MFA_NATS_TLS_KEY": p.ClientKey, "MFA_NATS_TLS_CA": ca}
	}

	for _, u := range []string{url, ns.URL} { // tls:// requires TLS; nats:// follows the server
		nc, err := natsx.Connect(u, "tls-test", natsOptions(t, withCert(pki, pki.CA))...)
		if err != nil {
			t.Fatalf("connect to %s with the client certificate: %v", u, err)
		}
		roundTrip(t, nc)
		nc.Close()
	}

	// With TLS 1.3 the server checks the client's certificate after the client's side of the
	// handshake is done: the client reads the server's alert, or finds the connection closed.
	refused(t, url, "no client certificate", natsOptions(t, map[string]string{"MFA_NATS_TLS_CA": pki.CA}),
		"tls: certificate required", "closed by remote after TLS handshake")
	refused(t, url, "a client certificate of another CA", natsOptions(t, withCert(other, pki.CA)),
		"tls: unknown certificate authority", "closed by remote after TLS handshake")
	refused(t, url, "no CA for the server's certificate", natsOptions(t, map[string]string{"MFA_NATS_TLS_CERT": pki.ClientCert, "MFA_NATS_TLS_KEY": pki.ClientKey}), "certificate signed by unknown authority")
	refused(t, url, "the other CA for the server's certificate", natsOptions(t, withCert(pki, other.CA)), "certificate signed by unknown authority")
}
