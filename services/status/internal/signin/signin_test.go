package signin_test

import (
	"slices"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
)

func authenticated(method string) signin.Authentication {
	return signin.Authentication{
		ID: "st-1", Sub: "alice", Initiator: "alice", ClientID: "shop", Method: method,
		State:    signin.Authenticated,
		AuthTime: time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC),
	}
}

func TestTokenClaims(t *testing.T) {
	alice := signin.Caller{Sub: "alice", ClientID: "shop"}
	t.Run("AMRPerMethod", func(t *testing.T) {
		for method, want := range map[string][]string{
			method.TOTP:       {"otp"},
			method.BackupCode: {"kba"},
			method.Push:       {"swk", "user"},
		} {
			c, ok := signin.TokenClaims(authenticated(method), alice)
			if !ok || !slices.Equal(c.AMR, want) {
				t.Errorf("%s: %v %v, want amr %v", method, ok, c.AMR, want)
			}
		}
	})
	t.Run("Claims", func(t *testing.T) {
		e := authenticated(method.TOTP)
		c, ok := signin.TokenClaims(e, alice)
		again, _ := signin.TokenClaims(e, alice)
		if !ok || c.Sub != "alice" || c.Audience != "shop" || c.StatusID != "st-1" || !c.AuthTime.Equal(e.AuthTime) || c.JTI == "" {
			t.Fatalf("claims %+v", c)
		}
		if again.JTI != c.JTI {
			t.Fatal("a re-minted token of one sign-in has another jti")
		}
		other := e
		other.ID = "st-2"
		if c2, _ := signin.TokenClaims(other, alice); c2.JTI == c.JTI {
			t.Fatal("two sign-ins share a jti")
		}
	})
	t.Run("Nothing", func(t *testing.T) {
		pending := authenticated(method.TOTP)
		pending.State = signin.Initiated
		denied := authenticated(method.Push)
		denied.State = signin.Denied
		for name, tc := range map[string]struct {
			e      signin.Authentication
			caller signin.Caller
		}{
			"NotAuthenticated": {pending, alice},
			"Denied":           {denied, alice},
			"AnotherCaller":    {authenticated(method.TOTP), signin.Caller{Sub: "bob"}},
		} {
			if c, ok := signin.TokenClaims(tc.e, tc.caller); ok {
				t.Errorf("%s: claims %+v", name, c)
			}
		}
	})
}
