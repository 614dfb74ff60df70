package natstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// StartWith runs a fresh JetStream-enabled server on a random loopback port with a temporary
// store, after each configure function has changed its options (TLS, operator mode, users).
func StartWith(tb testing.TB, configure ...func(*server.Options)) *Server {
	tb.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: tb.TempDir(), NoSigs: true, NoLog: true}
	for _, f := range configure {
		f(opts)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		tb.Fatalf("nats server: %v", err)
	}
	go s.Start()
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats server not ready")
	}
	return &Server{Server: s, URL: s.ClientURL()}
}

// Operator is the trust chain of a server in operator (decentralised JWT) mode: an operator, a
// system account and one application account with JetStream, whose users connect with .creds
// files. Configure a server with it once every user is issued and revoked.
type Operator struct {
	tb       testing.TB
	operator nkeys.KeyPair
	system   nkeys.KeyPair
	account  nkeys.KeyPair
	claims   *jwt.AccountClaims
}

// NewOperator creates an operator with its accounts.
func NewOperator(tb testing.TB) *Operator {
	tb.Helper()
	o := &Operator{tb: tb, operator: mustKey(tb, nkeys.CreateOperator), system: mustKey(tb, nkeys.CreateAccount), account: mustKey(tb, nkeys.CreateAccount)}
	o.claims = jwt.NewAccountClaims(publicKey(tb, o.account))
	o.claims.Name = "MFAFLOW"
	o.claims.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	return o
}

// User signs a user of the application account and writes its .creds file (user JWT and NKey
// seed, as nsc writes it); it returns the file's path and the user's public key.
func (o *Operator) User(name string) (creds, pub string) {
	o.tb.Helper()
	user := mustKey(o.tb, nkeys.CreateUser)
	pub = publicKey(o.tb, user)
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	token, err := uc.Encode(o.account)
	if err != nil {
		o.tb.Fatal(err)
	}
	seed, err := user.Seed()
	if err != nil {
		o.tb.Fatal(err)
	}
	file, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		o.tb.Fatal(err)
	}
	creds = filepath.Join(o.tb.TempDir(), name+".creds")
	if err := os.WriteFile(creds, file, 0o600); err != nil {
		o.tb.Fatal(err)
	}
	return creds, pub
}

// Revoke revokes every JWT of the user issued until now, in the account JWT the server will load.
// A revocation covers the JWTs issued up to its second.
func (o *Operator) Revoke(pub string) { o.claims.Revoke(pub) }

// Configure puts a server in operator mode: it trusts the operator and resolves both accounts
// from memory.
func (o *Operator) Configure(opts *server.Options) {
	o.tb.Helper()
	sysPub := publicKey(o.tb, o.system)
	oc := jwt.NewOperatorClaims(publicKey(o.tb, o.operator))
	oc.Name = "mfaflow-test"
	oc.SystemAccount = sysPub
	opToken, err := oc.Encode(o.operator)
	if err != nil {
		o.tb.Fatal(err)
	}
	trusted, err := jwt.DecodeOperatorClaims(opToken)
	if err != nil {
		o.tb.Fatal(err)
	}
	sys := jwt.NewAccountClaims(sysPub)
	sys.Name = "SYS"
	resolver := &server.MemAccResolver{}
	for _, ac := range []*jwt.AccountClaims{sys, o.claims} {
		token, err := ac.Encode(o.operator)
		if err != nil {
			o.tb.Fatal(err)
		}
		if err := resolver.Store(ac.Subject, token); err != nil {
			o.tb.Fatal(err)
		}
	}
	opts.TrustedOperators = []*jwt.OperatorClaims{trusted}
	opts.AccountResolver = resolver
	opts.SystemAccount = sysPub
}

// PKI is a certificate authority of its own with a server certificate (127.0.0.1, localhost)
// and a client certificate, as PEM files in a temporary directory.
type PKI struct {
	CA                    string // the CA certificate
	ServerCert, ServerKey string
	ClientCert, ClientKey string
	tb                    testing.TB
	caCert                *x509.Certificate
	caKey                 *ecdsa.PrivateKey
	dir                   string
}

// NewPKI creates a CA and issues the server and the client certificate.
func NewPKI(tb testing.TB) *PKI {
	tb.Helper()
	p := &PKI{tb: tb, dir: tb.TempDir()}
	p.caKey = newKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber: serial(tb), Subject: pkix.Name{CommonName: "mfaflow test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		tb.Fatal(err)
	}
	if p.caCert, err = x509.ParseCertificate(der); err != nil {
		tb.Fatal(err)
	}
	p.CA = p.write(tb, "ca.pem", "CERTIFICATE", der)
	p.ServerCert, p.ServerKey = p.issue(tb, "server", &x509.Certificate{
		Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.ClientCert, p.ClientKey = p.issue(tb, "client", &x509.Certificate{
		Subject: pkix.Name{CommonName: "mfaflow-service"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return p
}

// Configure makes a server speak TLS with the server certificate and require a client
// certificate signed by the CA (TLSVerify).
func (p *PKI) Configure(opts *server.Options) {
	p.tb.Helper()
	cfg, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.ServerCert, KeyFile: p.ServerKey, CaFile: p.CA, Verify: true})
	if err != nil {
		p.tb.Fatal(err)
	}
	opts.TLS, opts.TLSVerify, opts.TLSConfig, opts.TLSTimeout = true, true, cfg, 5
}

func (p *PKI) issue(tb testing.TB, name string, tmpl *x509.Certificate) (cert, key string) {
	tb.Helper()
	k := newKey(tb)
	tmpl.SerialNumber = serial(tb)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &k.PublicKey, p.caKey)
	if err != nil {
		tb.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		tb.Fatal(err)
	}
	return p.write(tb, name+".pem", "CERTIFICATE", der), p.write(tb, name+"-key.pem", "PRIVATE KEY", pk)
}

func (p *PKI) write(tb testing.TB, name, kind string, der []byte) string {
	tb.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func serial(tb testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func mustKey(tb testing.TB, create func() (nkeys.KeyPair, error)) nkeys.KeyPair {
	kp, err := create()
	if err != nil {
		tb.Fatal(err)
	}
	return kp
}

func publicKey(tb testing.TB, kp nkeys.KeyPair) string {
	pub, err := kp.PublicKey()
	if err != nil {
		tb.Fatal(err)
	}
	return pub
}
