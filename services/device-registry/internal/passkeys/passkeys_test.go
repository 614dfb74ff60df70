package passkeys_test

import (
	"bytes"
	"errors"
	"testing"

	vw "github.com/descope/virtualwebauthn"
	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/testkit"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/passkeys"
)

// The browser here is descope/virtualwebauthn, a software authenticator.
var rpSettings = vw.RelyingParty{ID: "localhost", Name: "mfaflow", Origin: "http://localhost:5173"}

func mustRP(tb testing.TB) *passkeys.RelyingParty {
	tb.Helper()
	rp, err := passkeys.New(config.WebAuthn{RPID: rpSettings.ID, RPName: rpSettings.Name, Origins: []string{rpSettings.Origin},
		UserVerification: config.UserVerificationPreferred})
	if err != nil {
		tb.Fatal(err)
	}
	return rp
}

// mustRegister registers cred of auth for u and returns the passkey.
func mustRegister(tb testing.TB, rp *passkeys.RelyingParty, u device.PasskeyUser, auth vw.Authenticator, cred vw.Credential) device.Passkey {
	tb.Helper()
	options, session, err := rp.BeginRegistration(u)
	if err != nil {
		tb.Fatal(err)
	}
	opts, err := vw.ParseAttestationOptions(string(options))
	if err != nil {
		tb.Fatalf("creation options %s: %v", options, err)
	}
	pk, err := rp.FinishRegistration(session, []byte(vw.CreateAttestationResponse(rpSettings, auth, cred, *opts)), u)
	if err != nil {
		tb.Fatal(err)
	}
	return pk
}

// login asserts with cred of auth for u.
func login(tb testing.TB, rp *passkeys.RelyingParty, u device.PasskeyUser, auth vw.Authenticator, cred vw.Credential) (device.PasskeyAssertion, error) {
	tb.Helper()
	options, session, err := rp.BeginLogin(u)
	if err != nil {
		tb.Fatal(err)
	}
	opts, err := vw.ParseAssertionOptions(string(options))
	if err != nil {
		tb.Fatalf("request options %s: %v", options, err)
	}
	return rp.FinishLogin(session, []byte(vw.CreateAssertionResponse(rpSettings, auth, cred, *opts)), u)
}

func TestNew(t *testing.T) {
	if _, err := passkeys.New(config.WebAuthn{RPName: "mfaflow"}); err == nil {
		t.Error("New without RP ID or origins: no error")
	}
}

func TestRegistrationAndLogin(t *testing.T) {
	rp := mustRP(t)
	u := device.PasskeyUser{Handle: []byte("handle-of-ada"), Name: "ada"}
	auth := vw.NewAuthenticator() // verifies the user
	cred := vw.NewCredentialWithImportedKey(vw.KeyTypeEC2, testkit.PasskeyKey())
	pk := mustRegister(t, rp, u, auth, cred)
	if !bytes.Equal(pk.ID, cred.ID) || !bytes.Equal(pk.UserHandle, u.Handle) || len(pk.PublicKey) == 0 || !pk.UserPresent {
		t.Fatalf("registered passkey %+v", pk)
	}
	auth.AddCredential(cred)
	u.Passkeys = []device.Passkey{pk}

	t.Run("OK", func(t *testing.T) {
		cred.Counter = 3
		a, err := login(t, rp, u, auth, cred)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Passkey.ID, pk.ID) || a.Passkey.SignCount != 3 || !bytes.Equal(a.Passkey.UserHandle, u.Handle) || !a.UserVerified {
			t.Errorf("assertion %+v", a)
		}
		u.Passkeys = []device.Passkey{a.Passkey}
	})
	t.Run("ErrClonedAuthenticator", func(t *testing.T) {
		cred.Counter = 1
		_, err := login(t, rp, u, auth, cred)
		var cloned *device.ClonedError
		if !errors.Is(err, device.ErrClonedAuthenticator) || !errors.As(err, &cloned) || !bytes.Equal(cloned.PasskeyID, pk.ID) {
			t.Errorf("counter back to 1: %v, want a ClonedError for the passkey", err)
		}
	})
	t.Run("ErrInvalidCredential", func(t *testing.T) {
		other := vw.NewCredentialWithImportedKey(vw.KeyTypeEC2, testkit.PasskeyKey())
		stranger := vw.NewAuthenticator()
		stranger.AddCredential(other)
		options, session, err := rp.BeginLogin(u)
		if err != nil {
			t.Fatal(err)
		}
		opts, err := vw.ParseAssertionOptions(string(options))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rp.FinishLogin(session, []byte(vw.CreateAssertionResponse(rpSettings, stranger, other, *opts)), u); !errors.Is(err, device.ErrInvalidCredential) {
			t.Errorf("another user's passkey: %v, want ErrInvalidCredential", err)
		}
		if _, err := rp.FinishLogin(session, []byte(`{"id":"x"}`), u); !errors.Is(err, device.ErrInvalidCredential) {
			t.Errorf("malformed assertion: %v, want ErrInvalidCredential", err)
		}
	})
	t.Run("ErrCeremonySession", func(t *testing.T) {
		if _, err := rp.FinishLogin([]byte("not json"), []byte(`{}`), u); !errors.Is(err, device.ErrCeremonySession) {
			t.Errorf("login: %v, want ErrCeremonySession", err)
		}
		if _, err := rp.FinishRegistration([]byte("not json"), []byte(`{}`), u); !errors.Is(err, device.ErrCeremonySession) {
			t.Errorf("registration: %v, want ErrCeremonySession", err)
		}
	})
}

// TestRegistrationExcludesThePasskeys: the creation options list the user's passkeys, so an
// authenticator that has one says so instead of making a second.
func TestRegistrationExcludesThePasskeys(t *testing.T) {
	rp := mustRP(t)
	u := device.PasskeyUser{Handle: []byte("handle-of-bob"), Name: "bob"}
	auth := vw.NewAuthenticator()
	cred := vw.NewCredentialWithImportedKey(vw.KeyTypeEC2, testkit.PasskeyKey())
	u.Passkeys = []device.Passkey{mustRegister(t, rp, u, auth, cred)}
	options, _, err := rp.BeginRegistration(u)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := vw.ParseAttestationOptions(string(options))
	if err != nil {
		t.Fatal(err)
	}
	if !cred.IsExcludedForAttestation(*opts) {
		t.Errorf("creation options %s do not exclude the user's passkey", options)
	}
}
