package registrysvc_test

import (
	"bytes"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/natsapi"
	"github.com/mfaflow/mfaflow/services/device-registry/registrysvc"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

var base32Secret = regexp.MustCompile(`^[A-Z2-7]{32}$`)

func TestMicroService(t *testing.T) {
	e := start(t)
	msg, err := e.nc.RequestWithContext(ctxT(t), "$SRV.INFO."+commands.RegistryService, nil)
	if err != nil {
		t.Fatalf("$SRV.INFO: %v", err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != commands.RegistryService || info.Version != "0.1.0" {
		t.Fatalf("service %s %s, want %s 0.1.0", info.Name, info.Version, commands.RegistryService)
	}
	var subjects []string
	for _, ep := range info.Endpoints {
		subjects = append(subjects, ep.Subject)
	}
	slices.Sort(subjects)
	want := []string{commands.RegistryContact, commands.RegistryActivateCredential, commands.RegistryCreateCredential, commands.RegistryDiscardCredential, commands.RegistryResendCredential, commands.RegistryVerifyCredential, commands.RegistryDeviceGet, commands.RegistryPushDevices, commands.RegistryDeviceUsed, commands.RegistryFactorsChallenge, commands.RegistryFactorsCheck, commands.RegistryFactorsFailure, commands.RegistryFactorsReady}
	if !slices.Equal(subjects, want) {
		t.Fatalf("endpoint subjects = %v, want %v", subjects, want)
	}
}

func TestCreatePending(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		e := start(t)
		var reply commands.CreateCredentialReply
		err := rpc.Call(ctxT(t), e.nc, commands.RegistryCreateCredential,
			commands.CreateCredentialRequest{StatusID: uuid.NewString(), Sub: "alice", ExpiresAt: e.clock.Now().Add(time.Minute)}, &reply)
		if err != nil {
			t.Fatal(err)
		}
		if !base32Secret.MatchString(reply.Secret) {
			t.Fatalf("secret %q is not 32 base32 characters", reply.Secret)
		}
		if reply.Algorithm != "SHA1" || reply.Digits != 6 || reply.Period != 30 {
			t.Fatalf("params = %s/%d/%d, want SHA1/6/30", reply.Algorithm, reply.Digits, reply.Period)
		}
	})

	// Nothing is stored at initiation: each create makes a new secret and a sealed credential
	// that only its own enrollment and user can use.
	t.Run("StatelessAndBound", func(t *testing.T) {
		e := start(t)
		statusID := uuid.NewString()
		first := e.create(t, statusID, "alice")
		firstSealed := e.pending[statusID]
		second := e.create(t, statusID, "alice")
		if first == second {
			t.Fatal("a second create handed out the same secret")
		}
		for k := range e.rawValues(t) {
			if strings.Contains(k, statusID) || strings.Contains(k, device.PHIDFor(statusID)) || strings.HasPrefix(k, "u.") {
				t.Fatalf("create stored %s", k)
			}
		}
		// The first sealed credential verifies its own secret only.
		var claim commands.CredentialClaim
		req := commands.VerifyCredentialRequest{StatusID: statusID, Sub: "alice", Code: code(t, second, e.clock.Now()), PendingCredential: firstSealed}
		if code(t, first, e.clock.Now()) != req.Code {
			assertCode(t, e.verify(t, req, nil), fault.InvalidCode)
		}
		// Bound to its enrollment and user: elsewhere it names no credential.
		req.Code = code(t, first, e.clock.Now())
		for name, r := range map[string]commands.VerifyCredentialRequest{
			"OtherUser":       {StatusID: statusID, Sub: "mallory", Code: req.Code, PendingCredential: firstSealed},
			"OtherEnrollment": {StatusID: uuid.NewString(), Sub: "alice", Code: req.Code, PendingCredential: firstSealed},
			"Altered":         {StatusID: statusID, Sub: "alice", Code: req.Code, PendingCredential: append(slices.Clone(firstSealed[:len(firstSealed)-1]), firstSealed[len(firstSealed)-1]^1)},
		} {
			if err := e.verify(t, r, nil); fault.CodeOf(err) != fault.NotFound {
				t.Errorf("%s: %v, want not_found", name, err)
			}
		}
		if err := e.verify(t, req, &claim); err != nil {
			t.Fatalf("first sealed credential with its own code: %v", err)
		}
	})

	t.Run("ErrBadRequest", func(t *testing.T) {
		e := start(t)
		for name, req := range map[string]commands.CreateCredentialRequest{
			"NoStatusID":        {Sub: "alice"},
			"MalformedStatusID": {StatusID: "a.b.>", Sub: "alice"},
			"NoSub":             {StatusID: uuid.NewString()},
		} {
			err := rpc.Call(ctxT(t), e.nc, commands.RegistryCreateCredential, req, nil)
			if fault.CodeOf(err) != fault.BadRequest {
				t.Errorf("%s: %v, want bad_request", name, err)
			}
		}
		msg, err := e.nc.RequestWithContext(ctxT(t), commands.RegistryCreateCredential, []byte("{not json"))
		if err != nil {
			t.Fatal(err)
		}
		if got := msg.Header.Get(micro.ErrorCodeHeader); got != string(fault.BadRequest) {
			t.Fatalf("malformed request: code %q, want bad_request", got)
		}
	})
}

func TestActivate(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		e := start(t)
		statusID := uuid.NewString()
		secret := e.create(t, statusID, "alice")
		now := e.clock.Now()
		reply, err := e.activate(t, commands.VerifyCredentialRequest{
			StatusID: statusID, Sub: "alice", Code: code(t, secret, now),
			Device: commands.Device{DeviceID: "pixel-8-1234", Name: "Pixel 8", Platform: "android"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := uuid.Parse(reply.PHID); err != nil {
			t.Fatalf("ph_id %q is not a uuid", reply.PHID)
		}
		if reply.DeviceID != "pixel-8-1234" {
			t.Fatalf("device_id = %q", reply.DeviceID)
		}
		c := e.credential(t, statusID)
		if !c.Verified || c.PHID != reply.PHID || c.FriendlyName != "Pixel 8" || c.Platform != "android" || !c.VerifiedAt.Equal(now) {
			t.Fatalf("stored credential = %+v", c)
		}
		// The accepted step is stored: the enrollment code can never verify anything again.
		if want := totp.Step(now, totp.Default); c.LastStep != want {
			t.Fatalf("LastStep = %d, want %d", c.LastStep, want)
		}
	})

	t.Run("OKCodeFromPreviousStep", func(t *testing.T) {
		e := start(t)
		statusID := uuid.NewString()
		secret := e.create(t, statusID, "alice")
		prev := e.clock.Now().Add(-30 * time.Second)
		if _, err := e.activate(t, commands.VerifyCredentialRequest{StatusID: statusID, Sub: "alice", Code: code(t, secret, prev)}); err != nil {
			t.Fatalf("code of the previous step (skew 1): %v", err)
		}
		if got, want := e.credential(t, statusID).LastStep, totp.Step(prev, totp.Default); got != want {
			t.Fatalf("LastStep = %d, want %d", got, want)
		}
	})

	t.Run("GeneratedDeviceID", func(t *testing.T) {
		e := start(t)
		reply, _ := e.enroll(t, "alice", commands.Device{})
		if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(reply.DeviceID) {
			t.Fatalf("generated device_id = %q, want 16 hex characters", reply.DeviceID)
		}
		c, err := e.store(t).Get(ctxT(t), reply.PHID)
		if err != nil {
			t.Fatal(err)
		}
		if c.FriendlyName != device.DefaultName {
			t.Fatalf("friendly name = %q, want %q", c.FriendlyName, device.DefaultName)
		}
	})

	t.Run("ErrInvalidCode", func(t *testing.T) {
		e := start(t)
		statusID := uuid.NewString()
		secret := e.create(t, statusID, "alice")
		now := e.clock.Now()
		for name, c := range map[string]string{
			"Wrong":       wrongCode(code(t, secret, now)),
			"TwoStepsOld": code(t, secret, now.Add(-60*time.Second)),
			"TwoStepsNew": code(t, secret, now.Add(60*time.Second)),
			"NotDigits":   "abcdef",
			"TooShort":    "123",
			"Empty":       "",
		} {
			if name == "TwoStepsOld" || name == "TwoStepsNew" {
				if c == code(t, secret, now) || c == code(t, secret, now.Add(-30*time.Second)) || c == code(t, secret, now.Add(30*time.Second)) {
					continue // a coincidence of digits, one in a hundred thousand
				}
			}
			_, err := e.activate(t, commands.VerifyCredentialRequest{StatusID: statusID, Sub: "alice", Code: c})
			if fault.CodeOf(err) != fault.InvalidCode {
				t.Errorf("%s code: %v, want invalid_code", name, err)
			}
		}
		if c, err := e.store(t).GetByStatusID(ctxT(t), statusID); err == nil {
			t.Fatalf("a wrong code stored a claim: %v", c)
		}
		// The right code still works afterwards.
		if _, err := e.activate(t, commands.VerifyCredentialRequest{StatusID: statusID, Sub: "alice", Code: code(t, secret, now)}); err != nil {
			t.Fatalf("right code after wrong ones: %v", err)
		}
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		e := start(t)
		statusID := uuid.NewString()
		secret := e.create(t, statusID, "alice")
		right := code(t, secret, e.clock.Now())
		_, err := e.activate(t, commands.VerifyCredentialRequest{StatusID: statusID, Sub: "mallory", Code: right})
		assertCode(t, err, fault.NotFound)
		_, err = e.activate(t, commands.VerifyCredentialRequest{StatusID: uuid.NewString(), Sub: "alice", Code: right})
		assertCode(t, err, fault.NotFound)
		if _, err := e.store(t).GetByStatusID(ctxT(t), statusID); err == nil {
			t.Fatal("another user's code claimed alice's credential")
		}
	})

	t.Run("ErrExpired", func(t *testing.T) {
		e := start(t)
		statusID := uuid.NewString()
		var reply commands.CreateCredentialReply
		err := rpc.Call(ctxT(t), e.nc, commands.RegistryCreateCredential,
			commands.CreateCredentialRequest{StatusID: statusID, Sub: "alice", ExpiresAt: e.clock.Now().Add(time.Minute)}, &reply)
		if err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(2 * time.Minute)
		_, err = e.activate(t, commands.VerifyCredentialRequest{StatusID: statusID, Sub: "alice", Code: code(t, reply.Secret, e.clock.Now()),
			PendingCredential: reply.PendingCredential})
		assertCode(t, err, fault.Expired)
	})

	t.Run("Idempotent", func(t *testing.T) {
		e := start(t)
		statusID := uuid.NewString()
		secret := e.create(t, statusID, "alice")
		req := commands.VerifyCredentialRequest{
			StatusID: statusID, Sub: "alice", Code: code(t, secret, e.clock.Now()),
			Device: commands.Device{DeviceID: "dev-1", Name: "Phone"},
		}
		// A verify retried after a lost reply (same code, same device) claims the same device.
		var claim, again commands.CredentialClaim
		if err := e.verify(t, req, &claim); err != nil {
			t.Fatal(err)
		}
		if err := e.verify(t, req, &again); err != nil || again != claim {
			t.Fatalf("repeated verify = %+v, %v; want %+v", again, err, claim)
		}
		// Another device may not take over the claimed credential.
		other := req
		other.Device = commands.Device{DeviceID: "dev-2"}
		assertCode(t, e.verify(t, other, nil), fault.Conflict)

		activate := commands.ActivateCredentialRequest{StatusID: statusID, Sub: "alice", PHID: claim.PHID, DeviceID: claim.DeviceID}
		var first commands.CredentialClaim
		if err := rpc.Call(ctxT(t), e.nc, commands.RegistryActivateCredential, activate, &first); err != nil || first != claim {
			t.Fatalf("activate = %+v, %v; want %+v", first, err, claim)
		}
		natstest.Eventually(t, wait, e.relayed(t, first.PHID))
		stored := e.credential(t, statusID)

		// Activating again (the status service's call and the enrolled-event consumer both do):
		// the same device, nothing written.
		if err := rpc.Call(ctxT(t), e.nc, commands.RegistryActivateCredential, activate, &again); err != nil || again != first {
			t.Fatalf("repeated activation = %+v, %v; want %+v", again, err, first)
		}
		if got := e.credential(t, statusID); got.Version != stored.Version || got.LastStep != stored.LastStep {
			t.Fatalf("a repeated activation wrote: version %d→%d, last step %d→%d", stored.Version, got.Version, stored.LastStep, got.LastStep)
		}
		// A claim that verify did not give is refused.
		forged := activate
		forged.DeviceID = "dev-2"
		assertCode(t, rpc.Call(ctxT(t), e.nc, commands.RegistryActivateCredential, forged, nil), fault.Conflict)
		// Once activated, the enrollment is over: the code verifies nothing any more.
		assertCode(t, e.verify(t, req, nil), fault.Conflict)
		e.eventsAbout(t, events.DeviceRegistered, first.PHID, 1)
	})

	t.Run("ActivateWithoutVerifyIsRefused", func(t *testing.T) {
		e := start(t)
		statusID := uuid.NewString()
		e.create(t, statusID, "alice")
		activate := commands.ActivateCredentialRequest{StatusID: statusID, Sub: "alice", PHID: device.PHIDFor(statusID), DeviceID: "dev-1"}
		// Nothing claimed: nothing to activate.
		assertCode(t, rpc.Call(ctxT(t), e.nc, commands.RegistryActivateCredential, activate, nil), fault.NotFound)
		// Claimed by another device: not this claim.
		secret := e.create(t, statusID, "alice")
		e.claim(t, statusID, "alice", secret)
		assertCode(t, rpc.Call(ctxT(t), e.nc, commands.RegistryActivateCredential, activate, nil), fault.Conflict)
	})

	t.Run("ConcurrentActivationsOneWins", func(t *testing.T) {
		e := start(t)
		statusID := uuid.NewString()
		secret := e.create(t, statusID, "alice")
		right := code(t, secret, e.clock.Now())
		const n = 4
		var wg sync.WaitGroup
		results := make([]error, n)
		replies := make([]commands.CredentialClaim, n)
		for i := range n {
			wg.Go(func() {
				replies[i], results[i] = e.activate(t, commands.VerifyCredentialRequest{
					StatusID: statusID, Sub: "alice", Code: right, Device: commands.Device{DeviceID: fmt.Sprintf("dev-%d", i)},
				})
			})
		}
		wg.Wait()
		var ok []commands.CredentialClaim
		for i, err := range results {
			switch {
			case err == nil:
				ok = append(ok, replies[i])
			case fault.CodeOf(err) != fault.Conflict:
				t.Errorf("activation %d: %v, want success or conflict", i, err)
			}
		}
		if len(ok) != 1 {
			t.Fatalf("%d activations succeeded, want exactly 1", len(ok))
		}
		e.eventsAbout(t, events.DeviceRegistered, ok[0].PHID, 1)
	})
}

func TestRegisteredEvent(t *testing.T) {
	e := start(t)
	statusID := uuid.NewString()
	secret := e.create(t, statusID, "alice")
	right := code(t, secret, e.clock.Now())
	reply, err := e.activate(t, commands.VerifyCredentialRequest{
		StatusID: statusID, Sub: "alice", Code: right, Device: commands.Device{DeviceID: "dev-1", Name: "Phone", Platform: "ios"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ev := e.eventsAbout(t, events.DeviceRegistered, reply.PHID, 1)[0]
	env := ev.Envelope
	if env.Type != events.DeviceRegistered || env.Source != events.SourceRegistry || env.Subject != reply.PHID || env.SpecVersion != "1.0" {
		t.Fatalf("envelope = %+v", env)
	}
	if ev.MsgID != env.ID {
		t.Fatalf("Nats-Msg-Id %q differs from the CloudEvent id %q", ev.MsgID, env.ID)
	}
	if !env.Time.Equal(e.clock.Now()) {
		t.Fatalf("event time %v, want the clock's %v", env.Time, e.clock.Now())
	}
	var data events.Device
	if err := json.Unmarshal(env.Data, &data); err != nil {
		t.Fatal(err)
	}
	want := events.Device{PHID: reply.PHID, DeviceID: "dev-1", Sub: "alice", Method: "TOTP", FriendlyName: "Phone", StatusID: statusID}
	if data != want {
		t.Fatalf("data = %+v, want %+v", data, want)
	}
	assertNoSecret(t, "the event", ev.Raw, secret, right)
	assertNoSecret(t, "the log", []byte(e.logs.String()), secret, right)
}

func TestSecretSealedAtRest(t *testing.T) {
	e := start(t)
	statusID := uuid.NewString()
	secret := e.create(t, statusID, "alice")
	assertNoSecret(t, "the sealed pending credential", e.pending[statusID], secret, "")
	check := func(when string) {
		t.Helper()
		values := e.rawValues(t)
		if len(values) == 0 {
			t.Fatalf("%s: bucket is empty", when)
		}
		for k, v := range values {
			assertNoSecret(t, when+": key "+k, v, secret, "")
		}
	}
	claim := e.claim(t, statusID, "alice", secret)
	check("claimed")

	c := e.credential(t, statusID)
	raw := e.rawValues(t)["c."+c.PHID]
	var rec struct {
		Doc struct {
			SealedSecret []byte `json:"sealed_secret"`
		} `json:"doc"`
	}
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	// Format version 2 of the key ring, under key 1 (the only key of MFA_SECRET_KEY).
	if len(rec.Doc.SealedSecret) < 2 || rec.Doc.SealedSecret[0] != 0x02 || rec.Doc.SealedSecret[1] != 1 {
		t.Fatalf("stored secret is not a sealed value: %s", raw)
	}

	var reply commands.CredentialClaim
	if err := rpc.Call(ctxT(t), e.nc, commands.RegistryActivateCredential, commands.ActivateCredentialRequest{
		StatusID: statusID, Sub: "alice", PHID: claim.PHID, DeviceID: claim.DeviceID}, &reply); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, wait, e.relayed(t, reply.PHID))
	check("verified")
}

// TestSealedSecretBoundToRecord copies one credential's sealed secret into another's record, as
// someone with write access to the bucket could, and shows that it does not open there.
func TestSealedSecretBoundToRecord(t *testing.T) {
	e := start(t)
	victim, attacker := uuid.NewString(), uuid.NewString()
	e.claim(t, victim, "alice", e.create(t, victim, "alice"))
	attackerSecret := e.create(t, attacker, "mallory")
	e.claim(t, attacker, "mallory", attackerSecret)

	kv := e.kv(t)
	ctx := ctxT(t)
	src, err := kv.Get(ctx, "c."+e.credential(t, attacker).PHID)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := kv.Get(ctx, "c."+e.credential(t, victim).PHID)
	if err != nil {
		t.Fatal(err)
	}
	var srcRec, dstRec map[string]map[string]any
	if err := json.Unmarshal(src.Value(), &srcRec); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(dst.Value(), &dstRec); err != nil {
		t.Fatal(err)
	}
	dstRec["doc"]["sealed_secret"] = srcRec["doc"]["sealed_secret"]
	swapped, err := json.Marshal(dstRec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, dst.Key(), swapped, dst.Revision()); err != nil {
		t.Fatal(err)
	}

	// Checked against the stored record (no sealed pending credential: the path of a claim
	// already stored), the moved secret does not open.
	_, err = e.activate(t, commands.VerifyCredentialRequest{StatusID: victim, Sub: "alice", Code: code(t, attackerSecret, e.clock.Now()),
		PendingCredential: []byte{}})
	if err == nil {
		t.Fatal("a secret moved into another record opened there")
	}
	assertCode(t, err, fault.Internal)
	if e.credential(t, victim).Verified {
		t.Fatal("victim credential activated with a foreign secret")
	}
	assertNoSecret(t, "the log", []byte(e.logs.String()), attackerSecret, "")
}

func TestEnrollmentEndings(t *testing.T) {
	for _, typ := range []events.Type{events.EnrollmentExpired, events.EnrollmentCancelled, events.EnrollmentFailed} {
		t.Run(string(typ), func(t *testing.T) {
			e := start(t)
			statusID := uuid.NewString()
			claim := e.claim(t, statusID, "alice", e.create(t, statusID, "alice"))
			phid := e.credential(t, statusID).PHID

			e.publishEnding(t, typ, statusID, "alice")

			natstest.Eventually(t, wait, func() error {
				_, err := e.store(t).GetByStatusID(t.Context(), statusID)
				if err == nil {
					return fmt.Errorf("pending credential still there")
				}
				return nil
			})
			// The record itself is purged, and with it the sealed secret.
			natstest.Eventually(t, wait, func() error {
				for k := range e.rawValues(t) {
					if strings.Contains(k, phid) || strings.Contains(k, statusID) {
						return fmt.Errorf("key %s still in the bucket", k)
					}
				}
				return nil
			})
			err := rpc.Call(ctxT(t), e.nc, commands.RegistryActivateCredential, commands.ActivateCredentialRequest{
				StatusID: statusID, Sub: "alice", PHID: claim.PHID, DeviceID: claim.DeviceID}, nil)
			assertCode(t, err, fault.NotFound)
		})
	}

	// The status service registers the device right after committing ENROLLED; when that call
	// is lost, the enrolled event (written with the ENROLLED state) registers it instead.
	t.Run("EnrolledEventRegistersClaimedDevice", func(t *testing.T) {
		e := start(t)
		statusID := uuid.NewString()
		secret := e.create(t, statusID, "alice")
		var claim commands.CredentialClaim
		if err := e.verify(t, commands.VerifyCredentialRequest{
			StatusID: statusID, Sub: "alice", Code: code(t, secret, e.clock.Now()),
			Device: commands.Device{DeviceID: "dev-1", Name: "Alice's phone"},
		}, &claim); err != nil {
			t.Fatal(err)
		}
		if got := e.list(t, "alice"); len(got) != 0 {
			t.Fatalf("a verified claim is listed before ENROLLED: %+v", got)
		}
		e.publishEnrollmentEvent(t, events.EnrollmentEnrolled, events.Enrollment{
			StatusID: statusID, Sub: "alice", Method: "TOTP", Status: "ENROLLED", PreviousStatus: "SCANNED",
			PHID: claim.PHID, DeviceID: claim.DeviceID,
		})
		natstest.Eventually(t, wait, func() error {
			got := e.list(t, "alice")
			if len(got) != 1 || got[0].PHID != claim.PHID || got[0].FriendlyName != "Alice's phone" {
				return fmt.Errorf("devices = %+v", got)
			}
			return nil
		})
		e.eventsAbout(t, events.DeviceRegistered, claim.PHID, 1)
	})

	t.Run("VerifiedDeviceStays", func(t *testing.T) {
		e := start(t)
		statusID := uuid.NewString()
		secret := e.create(t, statusID, "alice")
		if _, err := e.activate(t, commands.VerifyCredentialRequest{StatusID: statusID, Sub: "alice", Code: code(t, secret, e.clock.Now())}); err != nil {
			t.Fatal(err)
		}
		ack := e.publishEnding(t, events.EnrollmentExpired, statusID, "alice")
		e.waitConsumed(t, ack.Sequence)
		if !e.credential(t, statusID).Verified {
			t.Fatal("verified credential changed")
		}
	})

	t.Run("UndecodableEventTerminated", func(t *testing.T) {
		e := start(t)
		bad, err := e.js.Publish(ctxT(t), events.EnrollmentExpired.Subject(), []byte("{not a cloudevent"))
		if err != nil {
			t.Fatal(err)
		}
		statusID := uuid.NewString()
		e.claim(t, statusID, "alice", e.create(t, statusID, "alice"))
		good := e.publishEnding(t, events.EnrollmentCancelled, statusID, "alice")
		if good.Sequence <= bad.Sequence {
			t.Fatal("stream order")
		}
		e.waitConsumed(t, good.Sequence)
		if _, err := e.store(t).GetByStatusID(ctxT(t), statusID); err == nil {
			t.Fatal("the event after an undecodable one was not handled")
		}
		info, err := e.consumer(t).Info(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if info.NumRedelivered != 0 {
			t.Fatalf("%d redeliveries: the undecodable event was not terminated", info.NumRedelivered)
		}
		if !strings.Contains(e.logs.String(), "undecodable") {
			t.Fatal("the undecodable event was not logged")
		}
	})
}

func (e *env) consumer(t *testing.T) jetstream.Consumer {
	t.Helper()
	c, err := e.js.Consumer(ctxT(t), events.Stream, natsapi.ConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitConsumed waits until the endings consumer has acknowledged (or terminated) every
// message up to stream sequence seq.
func (e *env) waitConsumed(t *testing.T, seq uint64) {
	t.Helper()
	cons := e.consumer(t)
	natstest.Eventually(t, wait, func() error {
		info, err := cons.Info(t.Context())
		if err != nil {
			return err
		}
		if info.AckFloor.Stream < seq || info.NumAckPending > 0 {
			return fmt.Errorf("ack floor %d, %d pending; want %d", info.AckFloor.Stream, info.NumAckPending, seq)
		}
		return nil
	})
}

func TestDiscardCommand(t *testing.T) {
	e := start(t)
	discard := func(statusID string) {
		t.Helper()
		if err := rpc.Call(ctxT(t), e.nc, commands.RegistryDiscardCredential, commands.DiscardCredentialRequest{StatusID: statusID}, nil); err != nil {
			t.Fatalf("discard %s: %v", statusID, err)
		}
	}

	pending := uuid.NewString()
	e.claim(t, pending, "alice", e.create(t, pending, "alice"))
	discard(pending)
	if _, err := e.store(t).GetByStatusID(ctxT(t), pending); err == nil {
		t.Fatal("claimed credential survived discard")
	}

	verified := uuid.NewString()
	secret := e.create(t, verified, "alice")
	if _, err := e.activate(t, commands.VerifyCredentialRequest{StatusID: verified, Sub: "alice", Code: code(t, secret, e.clock.Now())}); err != nil {
		t.Fatal(err)
	}
	discard(verified)
	if !e.credential(t, verified).Verified {
		t.Fatal("discard touched a verified device")
	}

	discard(uuid.NewString()) // unknown: nothing to do, no error
	discard(pending)          // again: still nothing
}

func TestClose(t *testing.T) {
	e := start(t)
	if err := e.svc.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := e.svc.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	err := rpc.Call(ctxT(t), e.nc, commands.RegistryCreateCredential, commands.CreateCredentialRequest{StatusID: uuid.NewString(), Sub: "alice"}, nil)
	assertCode(t, err, fault.Unavailable)
}

func TestNewRefusesBadConfig(t *testing.T) {
	nc := natstest.Start(t).Connect(t)
	good := bytes.Repeat([]byte{7}, 32)
	verifier := auth.HS256{Key: good}
	for name, cfg := range map[string]registrysvc.Config{
		"ShortKey":   {SecretKey: good[:16], Verifier: verifier},
		"NoKey":      {Verifier: verifier},
		"NoVerifier": {SecretKey: good},
	} {
		if svc, err := registrysvc.New(ctxT(t), nc, cfg, nil); err == nil {
			_ = svc.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}

// assertNoSecret fails if raw holds the secret in any usual encoding, or the code.
func assertNoSecret(t *testing.T, what string, raw []byte, secret, code string) {
	t.Helper()
	key, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(secret)
	if err != nil {
		t.Fatal(err)
	}
	forms := map[string][]byte{
		"base32 secret":        []byte(secret),
		"lower-case secret":    []byte(strings.ToLower(secret)),
		"raw secret bytes":     key,
		"base64 of raw secret": []byte(b64(key)),
		"base64 of the base32": []byte(b64([]byte(secret))),
	}
	if code != "" {
		// Quoted (JSON) or after "=" (log attributes): a bare six-digit run could occur in a
		// timestamp by chance.
		forms["quoted code"] = []byte(`"` + code + `"`)
		forms["code attribute"] = []byte(`=` + code)
	}
	for name, f := range forms {
		if bytes.Contains(raw, f) {
			t.Fatalf("%s contains the %s", what, name)
		}
	}
}

// TestClaimGivesWayToAReissuedCredential: a retried keyed initiation hands the enrollment a new
// sealed credential after a code of the first one had been stored as a claim (whose ENROLLED
// write then lost). The enrollment's current credential verifies and takes the claim's place.
func TestClaimGivesWayToAReissuedCredential(t *testing.T) {
	e := start(t)
	statusID := uuid.NewString()
	first := e.create(t, statusID, "alice")
	e.claim(t, statusID, "alice", first)
	second := e.create(t, statusID, "alice") // the status service now holds this one
	reply, err := e.activate(t, commands.VerifyCredentialRequest{StatusID: statusID, Sub: "alice", Code: code(t, second, e.clock.Now()),
		Device: commands.Device{DeviceID: "phone-2"}})
	if err != nil {
		t.Fatalf("the current credential's code: %v", err)
	}
	if reply.DeviceID != "phone-2" {
		t.Fatalf("registered %+v, want the second claim's device", reply)
	}
	// The registered device holds the second secret: its next code signs in, the first's does not.
	e.clock.Advance(30 * time.Second)
	if r := e.check(t, "alice", method.TOTP, code(t, second, e.clock.Now())); r.Result != resultOK {
		t.Fatalf("sign-in with the second secret: %+v", r)
	}
	if c := code(t, first, e.clock.Now()); c != code(t, second, e.clock.Now()) {
		if r := e.check(t, "alice", method.TOTP, c); r.Result == resultOK {
			t.Fatal("the replaced secret signs in")
		}
	}
}
