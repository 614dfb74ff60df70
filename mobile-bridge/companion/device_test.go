package companion_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/bridgesvc"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/mobile-bridge/internal/bridgetest"
)

func TestSignIsJWSRaw(t *testing.T) {
	key, err := companion.NewDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	msg := protocol.LoginMessage("bm9uY2U", "ph-1")
	sig, err := companion.Sign(key, msg)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || len(raw) != 64 {
		t.Fatalf("sig %q: %d bytes, %v; want 64 bytes of base64url", sig, len(raw), err)
	}
	h := sha256.Sum256([]byte(msg))
	if !ecdsa.Verify(&key.PublicKey, h[:], new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])) {
		t.Fatal("signature does not verify as r‖s over SHA-256 of the message")
	}
	jwk, err := companion.PublicJWK(&key.PublicKey)
	if err != nil || jwk.Kty != "EC" || jwk.Crv != "P-256" || len(jwk.X) != 43 || len(jwk.Y) != 43 {
		t.Fatalf("jwk %+v, %v", jwk, err)
	}
}

func TestDeviceFile(t *testing.T) {
	key, _ := companion.NewDeviceKey()
	d, err := companion.NewDeviceFile("ph-1", "dev-1", "laptop", "http://localhost:8080", key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "device.json")
	if err := companion.SaveDeviceFile(path, d); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", info.Mode(), err)
	}
	got, err := companion.LoadDeviceFile(path)
	if err != nil || got != d {
		t.Fatalf("read back %+v, %v; want %+v", got, err, d)
	}
	back, err := got.Key()
	if err != nil || !back.Equal(key) {
		t.Fatalf("key read back differs: %v", err)
	}
}

func TestLoginAndRespond(t *testing.T) {
	env := bridgetest.Start(t, bridgesvc.Config{})
	key, _ := companion.NewDeviceKey()
	jwk, _ := companion.PublicJWK(&key.PublicKey)
	env.Registry.Add(commands.DeviceInfo{PHID: "ph-1", Sub: "alice",
		Key: &commands.DeviceKey{Kty: jwk.Kty, Crv: jwk.Crv, X: jwk.X, Y: jwk.Y}})
	env.Status.AddChallenge(bridgetest.Challenge{
		PushChallenge: commands.PushChallenge{ChallengeID: "ch-1", StatusID: "st-1", Sub: "alice",
			Numbers: []string{"12", "42", "77"}, ExpiresAt: time.Now().Add(time.Minute)},
		Right: "42",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := companion.Dial(ctx, env.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if _, err := c.Respond(ctx, "ch-1", protocol.DecisionApprove, "42", ""); err != companion.ErrNotLoggedIn {
		t.Fatalf("respond before login: %v, want ErrNotLoggedIn", err)
	}
	wrong, _ := companion.NewDeviceKey()
	if _, err := c.Login(ctx, "ph-1", wrong); err == nil {
		t.Fatal("login with the wrong key succeeded")
	}
	// The refused login spent the nonce; the bridge's fresh hello lets Login try again.
	if ack, err := c.Login(ctx, "ph-1", key); err != nil || ack.PHID != "ph-1" {
		t.Fatalf("login: %+v, %v", ack, err)
	}
	var ch protocol.PushChallenge
	select {
	case ch = <-c.Challenges():
	case <-ctx.Done():
		t.Fatal("no pending challenge after login")
	}
	if ch.ChallengeID != "ch-1" || len(ch.Numbers) != 3 {
		t.Fatalf("challenge %+v", ch)
	}
	ack, err := c.Respond(ctx, ch.ChallengeID, protocol.DecisionApprove, "42", "")
	if err != nil || ack.Status != "AUTHENTICATED" {
		t.Fatalf("respond: %+v, %v", ack, err)
	}
}
