package events_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/method"
)

// compileAll compiles the schema of every event type from events.Schemas. Every embedded file is
// added under its own $id, so cross-file $refs resolve without any loader (nothing is fetched).
func compileAll(t *testing.T) map[events.Type]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	files, err := fs.Glob(events.Schemas, "schemas/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no embedded schema files")
	}
	for _, name := range files {
		doc := readSchema(t, name)
		id, _ := doc["$id"].(string)
		if id == "" {
			t.Fatalf("%s: no $id", name)
		}
		if err := c.AddResource(id, doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	out := make(map[events.Type]*jsonschema.Schema, len(events.Types))
	for _, typ := range events.Types {
		sch, err := c.Compile(events.SchemaURI(typ))
		if err != nil {
			t.Fatalf("compile %s: %v", typ, err)
		}
		out[typ] = sch
	}
	return out
}

func readSchema(t *testing.T, name string) map[string]any {
	t.Helper()
	raw, err := events.Schemas.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	m, ok := doc.(map[string]any)
	if !ok {
		t.Fatalf("%s: not a JSON object", name)
	}
	return m
}

var (
	at      = time.Date(2026, 3, 14, 9, 26, 53, 589_000_000, time.FixedZone("CET", 3600))
	expires = at.Add(10 * time.Minute)
)

const (
	statusID   = "5f0c9a4e-3d1b-4c57-9e2a-8b6f1d7c2a90"
	phID       = "d7e3b1c2-8a4f-4b6e-9c0d-2f5a7e9b1c34"
	deviceID   = "3a9f6c1e-7b2d-4e8a-a5c4-0d1e2f3a4b5c"
	authID     = "9b2d4f6a-1c3e-4a5b-8d7f-6e5c4b3a2d10"
	clientID   = "shop-web"
	deliveryID = "6b1f2c3d-4e5a-4b6c-8d7e-9f0a1b2c3d4e"
)

var (
	lockedUntil = at.Add(2 * time.Minute)
	setCreated  = at.Add(-72 * time.Hour)
	signIn      = map[string]string{"app": "Shop", "ip": "203.0.113.7", "user_agent": "Mozilla/5.0", "location": "Berlin, DE"}
)

// sample is realistic data for an event of type typ, as the publishing service would build it.
func sample(typ events.Type) (source, subject string, data any) {
	enr := events.Enrollment{StatusID: statusID, Sub: "alice", Method: "TOTP", ExpiresAt: expires}
	dev := events.Device{PHID: phID, DeviceID: deviceID, Sub: "alice", Method: "TOTP", FriendlyName: "Alice's iPhone"}
	ver := events.Verification{StatusID: authID, Sub: "alice", Method: "TOTP", Status: "INITIATED", ExpiresAt: expires,
		ClientID: clientID, Context: signIn}
	switch typ {
	case events.EnrollmentInitiated:
		enr.Status = "INITIATED"
	case events.EnrollmentScanned:
		enr.Status, enr.PreviousStatus = "SCANNED", "INITIATED"
		enr.DeviceID, enr.Platform, enr.Channel = deviceID, "ios", "companion"
	case events.EnrollmentEnrolled:
		enr.Status, enr.PreviousStatus = "ENROLLED", "SCANNED"
		enr.DeviceID, enr.Platform, enr.Channel, enr.PHID = deviceID, "ios", "companion", phID
	case events.EnrollmentExpired:
		enr.Status, enr.PreviousStatus = "EXPIRED", "INITIATED"
	case events.EnrollmentCancelled:
		enr.Status, enr.PreviousStatus, enr.Channel = "CANCELLED", "SCANNED", "frontend"
	case events.EnrollmentFailed:
		enr.Status, enr.PreviousStatus, enr.Channel = "FAILED", "INITIATED", "frontend"
		enr.Reason, enr.FailedAttempts = "too_many_attempts", 5
	case events.DeviceRegistered:
		dev.StatusID = statusID
	case events.DeviceRenamed:
		dev.FriendlyName = "Work phone"
	case events.DeviceRemoved:
	case events.VerificationInitiated:
	case events.VerificationSucceeded:
		ver.Status, ver.PreviousStatus, ver.PHID = "AUTHENTICATED", "INITIATED", phID
	case events.VerificationFailed:
		ver.Reason, ver.FailedAttempts = "invalid_code", 2
	case events.VerificationLocked:
		return events.SourceRegistry, "alice", events.Lock{Sub: "alice", LockedUntil: lockedUntil, Lock: 1, FailedAttempts: 5}
	case events.VerificationExpired:
		ver.Status, ver.PreviousStatus = "EXPIRED", "INITIATED"
	case events.VerificationCancelled:
		ver.Status, ver.PreviousStatus = "CANCELLED", "INITIATED"
	case events.VerificationDenied:
		ver.Method, ver.Status, ver.PreviousStatus, ver.PHID, ver.Reason = "PUSH", "DENIED", "PUSH_ACKNOWLEDGED", phID, "denied"
	case events.PushSent:
		return events.SourceStatus, authID, events.Push{StatusID: authID, Sub: "alice", ExpiresAt: expires, Devices: 2}
	case events.PushAcknowledged:
		return events.SourceStatus, authID, events.Push{StatusID: authID, Sub: "alice", ExpiresAt: expires, PHID: phID}
	case events.RecoveryGenerated:
		return events.SourceRegistry, "alice", events.Recovery{Sub: "alice", Remaining: 10, CreatedAt: at}
	case events.RecoveryUsed:
		return events.SourceRegistry, "alice", events.Recovery{Sub: "alice", Remaining: 9, CreatedAt: setCreated, StatusID: authID}
	case events.VerificationUnlocked:
		return events.SourceRegistry, "alice", events.Unlock{Sub: "alice", Actor: "ops-admin"}
	case events.FactorsReset:
		return events.SourceRegistry, "alice", events.Reset{Sub: "alice", DevicesRemoved: 2, RecoveryCodesRemoved: true, Actor: "ops-admin"}
	case events.DeliveryFailed:
		return events.SourceNotifier, deliveryID, events.Delivery{DeliveryID: deliveryID, Sub: "alice", StatusID: statusID,
			Channel: "email", Kind: "enrollment_code", Destination: "a***@example.org", Attempts: 7, Reason: "expired"}
	default:
		panic("no sample for " + string(typ))
	}
	switch {
	case strings.HasPrefix(string(typ), "mfa.enrollment."):
		return events.SourceStatus, statusID, enr
	case strings.HasPrefix(string(typ), "mfa.verification."):
		return events.SourceStatus, authID, ver
	}
	return events.SourceRegistry, phID, dev
}

// envelope builds a valid event of type typ with events.New and decodes it into a generic map so a
// test can break it.
func envelope(t *testing.T, typ events.Type) map[string]any {
	t.Helper()
	source, subject, data := sample(typ)
	env, err := events.New("8c1e2b7a-4f3d-4a5e-9b6c-1d2e3f4a5b60", source, typ, subject, at, data)
	if err != nil {
		t.Fatal(err)
	}
	return roundTrip(t, env)
}

// roundTrip marshals v and decodes it the way the validator reads an instance.
func roundTrip(t *testing.T, v any) map[string]any {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return inst.(map[string]any)
}

func dataOf(m map[string]any) map[string]any { return m["data"].(map[string]any) }

func TestSubjects(t *testing.T) {
	want := map[events.Type]string{
		events.EnrollmentInitiated: "mfa.events.enrollment.initiated",
		events.EnrollmentScanned:   "mfa.events.enrollment.scanned",
		events.EnrollmentEnrolled:  "mfa.events.enrollment.enrolled",
		events.EnrollmentExpired:   "mfa.events.enrollment.expired",
		events.EnrollmentCancelled: "mfa.events.enrollment.cancelled",
		events.EnrollmentFailed:    "mfa.events.enrollment.failed",
		events.DeviceRegistered:    "mfa.events.device.registered",
		events.DeviceRenamed:       "mfa.events.device.renamed",
		events.DeviceRemoved:       "mfa.events.device.removed",

		events.VerificationInitiated: "mfa.events.verification.initiated",
		events.VerificationSucceeded: "mfa.events.verification.succeeded",
		events.VerificationFailed:    "mfa.events.verification.failed",
		events.VerificationLocked:    "mfa.events.verification.locked",
		events.VerificationExpired:   "mfa.events.verification.expired",
		events.VerificationCancelled: "mfa.events.verification.cancelled",
		events.VerificationDenied:    "mfa.events.verification.denied",
		events.RecoveryGenerated:     "mfa.events.recovery.generated",
		events.RecoveryUsed:          "mfa.events.recovery.used",

		events.PushSent:         "mfa.events.push.sent",
		events.PushAcknowledged: "mfa.events.push.acknowledged",

		events.VerificationUnlocked: "mfa.events.verification.unlocked",
		events.FactorsReset:         "mfa.events.factors.reset",

		events.DeliveryFailed: "mfa.events.delivery.failed",
	}
	if len(events.Types) != len(want) {
		t.Errorf("events.Types has %d types, want %d", len(events.Types), len(want))
	}
	for _, typ := range events.Types {
		if got := typ.Subject(); got != want[typ] {
			t.Errorf("%s.Subject() = %q, want %q", typ, got, want[typ])
		}
		if !strings.HasPrefix(typ.Subject(), events.SubjectPrefix) {
			t.Errorf("%s.Subject() is outside the stream's subjects %s", typ, events.StreamSubjects)
		}
	}
}

func TestEveryTypeHasASchemaFile(t *testing.T) {
	for _, typ := range events.Types {
		name := events.SchemaFile(typ)
		if want := "schemas/" + string(typ) + ".json"; name != want {
			t.Errorf("SchemaFile(%s) = %q, want %q", typ, name, want)
		}
		doc := readSchema(t, name)
		if doc["$id"] != events.SchemaURI(typ) {
			t.Errorf("%s: $id = %v, want %s", name, doc["$id"], events.SchemaURI(typ))
		}
		if doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema = %v, want draft 2020-12", name, doc["$schema"])
		}
		if doc["title"] != string(typ) {
			t.Errorf("%s: title = %v, want %s", name, doc["title"], typ)
		}
	}
	if doc := readSchema(t, events.DefsSchemaFile); doc["$id"] != events.DefsSchemaURI {
		t.Errorf("%s: $id = %v, want %s", events.DefsSchemaFile, doc["$id"], events.DefsSchemaURI)
	}
	// No stray files: every embedded schema is defs.json or the schema of a catalogued type.
	files, _ := fs.Glob(events.Schemas, "schemas/*.json")
	for _, name := range files {
		if name == events.DefsSchemaFile {
			continue
		}
		if !slices.ContainsFunc(events.Types, func(typ events.Type) bool { return events.SchemaFile(typ) == name }) {
			t.Errorf("%s is not the schema of any type in events.Types", name)
		}
	}
}

// TestSchemasMatchGoTypes keeps defs.json and the Go payload types in step: every JSON field of
// every payload type (Enrollment, Device, Verification, Lock, Recovery, Push) is declared in its schema
// and nothing else is, and the schema requires exactly the fields Go always writes.
func TestSchemasMatchGoTypes(t *testing.T) {
	defs := readSchema(t, events.DefsSchemaFile)["$defs"].(map[string]any)
	for name, v := range map[string]any{
		"enrollment": events.Enrollment{}, "device": events.Device{},
		"verification": events.Verification{}, "lock": events.Lock{}, "recovery": events.Recovery{},
		"push": events.Push{}, "unlock": events.Unlock{}, "reset": events.Reset{},
		"delivery": events.Delivery{},
	} {
		def := defs[name].(map[string]any)
		if def["additionalProperties"] != false {
			t.Errorf("$defs/%s must be closed (additionalProperties: false)", name)
		}
		var declared []string
		for p := range def["properties"].(map[string]any) {
			declared = append(declared, p)
		}
		var fields, required []string
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			tag := strings.Split(rt.Field(i).Tag.Get("json"), ",")
			fields = append(fields, tag[0])
			if !slices.Contains(tag[1:], "omitempty") {
				required = append(required, tag[0])
			}
		}
		var schemaRequired []string
		for _, r := range def["required"].([]any) {
			schemaRequired = append(schemaRequired, r.(string))
		}
		slices.Sort(declared)
		slices.Sort(fields)
		slices.Sort(required)
		slices.Sort(schemaRequired)
		if !slices.Equal(declared, fields) {
			t.Errorf("$defs/%s declares %v; the Go type has %v", name, declared, fields)
		}
		if !slices.Equal(schemaRequired, required) {
			t.Errorf("$defs/%s requires %v; the Go type always writes %v", name, schemaRequired, required)
		}
	}
}

func TestValidEnvelopes(t *testing.T) {
	schemas := compileAll(t)
	for _, typ := range events.Types {
		env := envelope(t, typ)
		if err := schemas[typ].Validate(env); err != nil {
			t.Errorf("%s: valid event rejected: %v", typ, err)
		}
		// dataschema is optional.
		delete(env, "dataschema")
		if err := schemas[typ].Validate(env); err != nil {
			t.Errorf("%s without dataschema rejected: %v", typ, err)
		}
	}

	// Other legitimate shapes.
	variants := []struct {
		name string
		typ  events.Type
		data any
	}{
		{"enrolled by a typed code, never scanned", events.EnrollmentEnrolled, events.Enrollment{
			StatusID: statusID, Sub: "alice", Method: "TOTP", Status: "ENROLLED", PreviousStatus: "INITIATED",
			ExpiresAt: expires, DeviceID: deviceID, PHID: phID, Channel: "frontend"}},
		{"expired after a scan", events.EnrollmentExpired, events.Enrollment{
			StatusID: statusID, Sub: "alice", Method: "TOTP", Status: "EXPIRED", PreviousStatus: "SCANNED",
			ExpiresAt: expires, DeviceID: deviceID, Platform: "android"}},
		{"minimal failed", events.EnrollmentFailed, events.Enrollment{
			StatusID: statusID, Sub: "alice", Method: "TOTP", Status: "FAILED", ExpiresAt: expires,
			Reason: "too_many_attempts"}},
		{"device without a name", events.DeviceRemoved, events.Device{
			PHID: phID, DeviceID: deviceID, Sub: "alice", Method: "TOTP"}},
		{"minimal verification initiated (no client_id, no context)", events.VerificationInitiated, events.Verification{
			StatusID: authID, Sub: "alice", Method: "TOTP", Status: "INITIATED", ExpiresAt: expires}},
		{"verification initiated for a recovery code", events.VerificationInitiated, events.Verification{
			StatusID: authID, Sub: "alice", Method: "BACKUPCODE", Status: "INITIATED", ExpiresAt: expires,
			Context: map[string]string{"ip": "198.51.100.2"}}},
		{"succeeded with a recovery code (no ph_id)", events.VerificationSucceeded, events.Verification{
			StatusID: authID, Sub: "alice", Method: "BACKUPCODE", Status: "AUTHENTICATED", PreviousStatus: "INITIATED",
			ExpiresAt: expires, ClientID: clientID}},
		{"failed on a replayed code", events.VerificationFailed, events.Verification{
			StatusID: authID, Sub: "alice", Method: "TOTP", Status: "INITIATED", ExpiresAt: expires,
			Reason: "code_replayed", FailedAttempts: 1}},
		{"failed with a wrong recovery code", events.VerificationFailed, events.Verification{
			StatusID: authID, Sub: "alice", Method: "BACKUPCODE", Status: "INITIATED", ExpiresAt: expires,
			Reason: "invalid_code", FailedAttempts: 4, ClientID: clientID}},
		{"expired recovery-code authentication", events.VerificationExpired, events.Verification{
			StatusID: authID, Sub: "alice", Method: "BACKUPCODE", Status: "EXPIRED", PreviousStatus: "INITIATED",
			ExpiresAt: expires}},
		{"third lock in a row", events.VerificationLocked, events.Lock{
			Sub: "alice", LockedUntil: at.Add(20 * time.Minute), Lock: 3, FailedAttempts: 5}},
		{"push verification initiated", events.VerificationInitiated, events.Verification{
			StatusID: authID, Sub: "alice", Method: "PUSH", Status: "INITIATED", ExpiresAt: expires, ClientID: clientID,
			Context: signIn}},
		{"succeeded with a push (ph_id of the approving device)", events.VerificationSucceeded, events.Verification{
			StatusID: authID, Sub: "alice", Method: "PUSH", Status: "AUTHENTICATED", PreviousStatus: "ALLOWED",
			ExpiresAt: expires, ClientID: clientID, PHID: phID, Context: signIn}},
		{"push denied as not me", events.VerificationDenied, events.Verification{
			StatusID: authID, Sub: "alice", Method: "PUSH", Status: "DENIED", PreviousStatus: "PUSH_ACKNOWLEDGED",
			ExpiresAt: expires, ClientID: clientID, PHID: phID, Reason: "not_me", Context: signIn}},
		{"push answered with the wrong number", events.VerificationDenied, events.Verification{
			StatusID: authID, Sub: "alice", Method: "PUSH", Status: "DENIED", PreviousStatus: "PUSH_ACKNOWLEDGED",
			ExpiresAt: expires, PHID: phID, Reason: "wrong_number"}},
		{"push denied before the acknowledgement was recorded", events.VerificationDenied, events.Verification{
			StatusID: authID, Sub: "alice", Method: "PUSH", Status: "DENIED", PreviousStatus: "INITIATED",
			ExpiresAt: expires, PHID: phID, Reason: "denied"}},
		{"acknowledged push expired", events.VerificationExpired, events.Verification{
			StatusID: authID, Sub: "alice", Method: "PUSH", Status: "EXPIRED", PreviousStatus: "PUSH_ACKNOWLEDGED",
			ExpiresAt: expires}},
		{"acknowledged push replaced by a newer push", events.VerificationCancelled, events.Verification{
			StatusID: authID, Sub: "alice", Method: "PUSH", Status: "CANCELLED", PreviousStatus: "PUSH_ACKNOWLEDGED",
			ExpiresAt: expires, ClientID: clientID}},
		{"push sent to one device", events.PushSent, events.Push{
			StatusID: authID, Sub: "alice", ExpiresAt: expires, Devices: 1}},
		{"push sent while no device is push-capable (devices 0, absent)", events.PushSent, events.Push{
			StatusID: authID, Sub: "alice", ExpiresAt: expires}},
		{"push acknowledged", events.PushAcknowledged, events.Push{
			StatusID: authID, Sub: "alice", ExpiresAt: expires, PHID: deviceID}},
		{"last recovery code used", events.RecoveryUsed, events.Recovery{
			Sub: "alice", Remaining: 0, CreatedAt: setCreated, StatusID: authID}},
		{"device removed by an administrator", events.DeviceRemoved, events.Device{
			PHID: phID, DeviceID: deviceID, Sub: "alice", Method: "TOTP", FriendlyName: "Alice's iPhone", Actor: "ops-admin"}},
		{"reset of a user without factors", events.FactorsReset, events.Reset{Sub: "alice", Actor: "ops-admin"}},
		{"reset that removed only recovery codes", events.FactorsReset, events.Reset{Sub: "alice", RecoveryCodesRemoved: true, Actor: "ops-admin"}},
		{"sms rejected by the provider", events.DeliveryFailed, events.Delivery{DeliveryID: deliveryID, Sub: "alice", StatusID: authID,
			Channel: "sms", Kind: "signin_code", Destination: "+49 ••• •••• 78", Attempts: 1, Reason: "rejected"}},
		{"unreadable request: only the id and the channel are known", events.DeliveryFailed, events.Delivery{DeliveryID: deliveryID,
			Channel: "email", Reason: "unreadable"}},
	}
	for _, v := range variants {
		source, subject, _ := sample(v.typ)
		env, err := events.New("id-1", source, v.typ, subject, at, v.data)
		if err != nil {
			t.Fatal(err)
		}
		if err := schemas[v.typ].Validate(roundTrip(t, env)); err != nil {
			t.Errorf("%s: rejected: %v", v.name, err)
		}
	}
}

// TestLeakedSecretsRejected is the security control: no secret, code or exchange id may ride in an
// event, so the payload schemas are closed and any unknown field fails validation.
func TestLeakedSecretsRejected(t *testing.T) {
	schemas := compileAll(t)
	leaks := []string{"secret", "code", "totp_secret", "exchange_id", "verification_code", "otpauth_uri", "qr_code",
		"pass_code", "mfa_token", "codes", "recovery_code", "backup_code", "token", "number", "numbers", "candidates",
		"challenge_id", "sig", "signature", "device_key"}
	for _, typ := range events.Types {
		for _, field := range leaks {
			env := envelope(t, typ)
			dataOf(env)[field] = "JBSWY3DPEHPK3PXP"
			if err := schemas[typ].Validate(env); err == nil {
				t.Errorf("%s: data.%s accepted", typ, field)
			}
			env = envelope(t, typ)
			env[field] = "123456"
			if err := schemas[typ].Validate(env); err == nil {
				t.Errorf("%s: envelope attribute %s accepted", typ, field)
			}
		}
		// A nested object does not slip through either.
		env := envelope(t, typ)
		dataOf(env)["device"] = map[string]any{"secret": "JBSWY3DPEHPK3PXP"}
		if err := schemas[typ].Validate(env); err == nil {
			t.Errorf("%s: nested data.device accepted", typ)
		}
	}
	// The sign-in context of verification events is closed too: a code cannot ride in it.
	for _, typ := range []events.Type{events.VerificationInitiated, events.VerificationSucceeded, events.VerificationFailed,
		events.VerificationExpired, events.VerificationCancelled, events.VerificationDenied} {
		for _, field := range []string{"code", "pass_code", "mfa_token", "exchange_id", "number", "numbers", "sig"} {
			env := envelope(t, typ)
			dataOf(env)["context"].(map[string]any)[field] = "123456"
			if err := schemas[typ].Validate(env); err == nil {
				t.Errorf("%s: data.context.%s accepted", typ, field)
			}
		}
	}
}

func TestWrongTypeRejected(t *testing.T) {
	schemas := compileAll(t)
	for _, typ := range events.Types {
		for _, other := range events.Types {
			if other == typ {
				continue
			}
			env := envelope(t, typ)
			env["type"] = string(other)
			if err := schemas[typ].Validate(env); err == nil {
				t.Errorf("schema %s accepted type %s", typ, other)
			}
			// An event of another type, validated whole, fails too (status, source or payload differ).
			if err := schemas[typ].Validate(envelope(t, other)); err == nil {
				t.Errorf("schema %s accepted a whole %s event", typ, other)
			}
		}
	}
}

func TestMissingOrBadEnvelopeAttributesRejected(t *testing.T) {
	schemas := compileAll(t)
	for _, typ := range events.Types {
		for _, attr := range []string{"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"} {
			env := envelope(t, typ)
			delete(env, attr)
			if err := schemas[typ].Validate(env); err == nil {
				t.Errorf("%s: missing %s accepted", typ, attr)
			}
		}
		bad := map[string]any{
			"specversion":     "0.3",
			"id":              "",
			"source":          "/mfaflow/initiation",
			"subject":         "",
			"time":            "yesterday",
			"datacontenttype": "text/plain",
			"dataschema":      "https://example.com/other.json",
			"data":            "{}",
		}
		for attr, v := range bad {
			env := envelope(t, typ)
			env[attr] = v
			if err := schemas[typ].Validate(env); err == nil {
				t.Errorf("%s: %s = %q accepted", typ, attr, v)
			}
		}
	}
}

func TestPerTypeDataConstraints(t *testing.T) {
	schemas := compileAll(t)
	cases := []struct {
		name   string
		typ    events.Type
		change func(d map[string]any)
	}{
		{"initiated with status SCANNED", events.EnrollmentInitiated, func(d map[string]any) { d["status"] = "SCANNED" }},
		{"initiated with a previous_status", events.EnrollmentInitiated, func(d map[string]any) { d["previous_status"] = "INITIATED" }},
		{"initiated with a ph_id", events.EnrollmentInitiated, func(d map[string]any) { d["ph_id"] = phID }},
		{"scanned from SCANNED", events.EnrollmentScanned, func(d map[string]any) { d["previous_status"] = "SCANNED" }},
		{"scanned with status ENROLLED", events.EnrollmentScanned, func(d map[string]any) { d["status"] = "ENROLLED" }},
		{"enrolled without ph_id", events.EnrollmentEnrolled, func(d map[string]any) { delete(d, "ph_id") }},
		{"enrolled without device_id", events.EnrollmentEnrolled, func(d map[string]any) { delete(d, "device_id") }},
		{"enrolled with an empty ph_id", events.EnrollmentEnrolled, func(d map[string]any) { d["ph_id"] = "" }},
		{"enrolled from EXPIRED", events.EnrollmentEnrolled, func(d map[string]any) { d["previous_status"] = "EXPIRED" }},
		{"expired with status FAILED", events.EnrollmentExpired, func(d map[string]any) { d["status"] = "FAILED" }},
		{"cancelled with status EXPIRED", events.EnrollmentCancelled, func(d map[string]any) { d["status"] = "EXPIRED" }},
		{"failed without reason", events.EnrollmentFailed, func(d map[string]any) { delete(d, "reason") }},
		{"failed with status CANCELLED", events.EnrollmentFailed, func(d map[string]any) { d["status"] = "CANCELLED" }},
		{"failed with a free-text reason", events.EnrollmentFailed, func(d map[string]any) { d["reason"] = "wrong code 123456" }},
		{"unknown status", events.EnrollmentExpired, func(d map[string]any) { d["status"] = "PENDING" }},
		{"lower-case status", events.EnrollmentExpired, func(d map[string]any) { d["status"] = "expired" }},
		{"enrollment of type FAX", events.EnrollmentInitiated, func(d map[string]any) { d["type"] = "FAX" }},
		{"enrollment without sub", events.EnrollmentInitiated, func(d map[string]any) { delete(d, "sub") }},
		{"enrollment without expires_at", events.EnrollmentScanned, func(d map[string]any) { delete(d, "expires_at") }},
		{"enrollment with a bad expires_at", events.EnrollmentScanned, func(d map[string]any) { d["expires_at"] = "soon" }},
		{"enrollment with an unknown channel", events.EnrollmentScanned, func(d map[string]any) { d["channel"] = "sms" }},
		{"device without ph_id", events.DeviceRegistered, func(d map[string]any) { delete(d, "ph_id") }},
		{"device without device_id", events.DeviceRenamed, func(d map[string]any) { delete(d, "device_id") }},
		{"device without sub", events.DeviceRemoved, func(d map[string]any) { delete(d, "sub") }},
		{"device with status", events.DeviceRegistered, func(d map[string]any) { d["status"] = "ENROLLED" }},
		{"device of type FAX", events.DeviceRemoved, func(d map[string]any) { d["type"] = "FAX" }},

		{"verification initiated with status AUTHENTICATED", events.VerificationInitiated, func(d map[string]any) { d["status"] = "AUTHENTICATED" }},
		{"verification initiated with a previous_status", events.VerificationInitiated, func(d map[string]any) { d["previous_status"] = "INITIATED" }},
		{"verification initiated with a ph_id", events.VerificationInitiated, func(d map[string]any) { d["ph_id"] = phID }},
		{"verification initiated with a reason", events.VerificationInitiated, func(d map[string]any) { d["reason"] = "invalid_code" }},
		{"verification initiated of type FAX", events.VerificationInitiated, func(d map[string]any) { d["type"] = "FAX" }},
		{"verification with an enrollment status", events.VerificationInitiated, func(d map[string]any) { d["status"] = "SCANNED" }},
		{"verification without status_id", events.VerificationInitiated, func(d map[string]any) { delete(d, "status_id") }},
		{"verification without sub", events.VerificationInitiated, func(d map[string]any) { delete(d, "sub") }},
		{"verification without expires_at", events.VerificationInitiated, func(d map[string]any) { delete(d, "expires_at") }},
		{"verification with a bad expires_at", events.VerificationInitiated, func(d map[string]any) { d["expires_at"] = "soon" }},
		{"verification with an empty client_id", events.VerificationInitiated, func(d map[string]any) { d["client_id"] = "" }},
		{"verification with a non-string context value", events.VerificationInitiated, func(d map[string]any) {
			d["context"].(map[string]any)["ip"] = 42
		}},
		{"succeeded with status INITIATED", events.VerificationSucceeded, func(d map[string]any) { d["status"] = "INITIATED" }},
		{"succeeded with TOTP but no ph_id", events.VerificationSucceeded, func(d map[string]any) { delete(d, "ph_id") }},
		{"succeeded with a recovery code and a ph_id", events.VerificationSucceeded, func(d map[string]any) { d["type"] = "BACKUPCODE" }},
		{"succeeded from EXPIRED", events.VerificationSucceeded, func(d map[string]any) { d["previous_status"] = "EXPIRED" }},
		{"succeeded with failed_attempts", events.VerificationSucceeded, func(d map[string]any) { d["failed_attempts"] = 2 }},
		{"verification failed without reason", events.VerificationFailed, func(d map[string]any) { delete(d, "reason") }},
		{"verification failed without failed_attempts", events.VerificationFailed, func(d map[string]any) { delete(d, "failed_attempts") }},
		{"verification failed with failed_attempts 0", events.VerificationFailed, func(d map[string]any) { d["failed_attempts"] = 0 }},
		{"verification failed with reason not_me", events.VerificationFailed, func(d map[string]any) { d["reason"] = "not_me" }},
		{"verification failed with the enrollment reason", events.VerificationFailed, func(d map[string]any) { d["reason"] = "too_many_attempts" }},
		{"verification failed with a free-text reason", events.VerificationFailed, func(d map[string]any) { d["reason"] = "wrong code 123456" }},
		{"verification failed with status AUTHENTICATED", events.VerificationFailed, func(d map[string]any) { d["status"] = "AUTHENTICATED" }},
		{"verification failed with a previous_status", events.VerificationFailed, func(d map[string]any) { d["previous_status"] = "INITIATED" }},
		{"verification failed with a ph_id", events.VerificationFailed, func(d map[string]any) { d["ph_id"] = phID }},
		{"verification expired with status CANCELLED", events.VerificationExpired, func(d map[string]any) { d["status"] = "CANCELLED" }},
		{"verification expired with a ph_id", events.VerificationExpired, func(d map[string]any) { d["ph_id"] = phID }},
		{"verification cancelled with status EXPIRED", events.VerificationCancelled, func(d map[string]any) { d["status"] = "EXPIRED" }},
		{"verification cancelled from AUTHENTICATED", events.VerificationCancelled, func(d map[string]any) { d["previous_status"] = "AUTHENTICATED" }},
		{"verification cancelled with a reason", events.VerificationCancelled, func(d map[string]any) { d["reason"] = "code_replayed" }},
		{"verification failed of type PUSH", events.VerificationFailed, func(d map[string]any) { d["type"] = "PUSH" }},
		{"verification failed with a push reason", events.VerificationFailed, func(d map[string]any) { d["reason"] = "wrong_number" }},
		{"succeeded with a push but no ph_id", events.VerificationSucceeded, func(d map[string]any) { d["type"] = "PUSH"; delete(d, "ph_id") }},
		{"succeeded with TOTP from PUSH_ACKNOWLEDGED", events.VerificationSucceeded, func(d map[string]any) { d["previous_status"] = "PUSH_ACKNOWLEDGED" }},
		{"succeeded with a push from DENIED", events.VerificationSucceeded, func(d map[string]any) {
			d["type"], d["previous_status"] = "PUSH", "DENIED"
		}},
		{"succeeded with a push and the number", events.VerificationSucceeded, func(d map[string]any) { d["type"], d["number"] = "PUSH", "07" }},
		{"verification expired with TOTP from PUSH_ACKNOWLEDGED", events.VerificationExpired, func(d map[string]any) { d["previous_status"] = "PUSH_ACKNOWLEDGED" }},
		{"verification expired from ALLOWED", events.VerificationExpired, func(d map[string]any) {
			d["type"], d["previous_status"] = "PUSH", "ALLOWED"
		}},
		{"verification cancelled with BACKUPCODE from PUSH_ACKNOWLEDGED", events.VerificationCancelled, func(d map[string]any) {
			d["type"], d["previous_status"] = "BACKUPCODE", "PUSH_ACKNOWLEDGED"
		}},
		{"verification cancelled from DENIED", events.VerificationCancelled, func(d map[string]any) {
			d["type"], d["previous_status"] = "PUSH", "DENIED"
		}},
		{"denied with reason invalid_code", events.VerificationDenied, func(d map[string]any) { d["reason"] = "invalid_code" }},
		{"denied with a free-text reason", events.VerificationDenied, func(d map[string]any) { d["reason"] = "picked 42" }},
		{"denied without reason", events.VerificationDenied, func(d map[string]any) { delete(d, "reason") }},
		{"denied without ph_id", events.VerificationDenied, func(d map[string]any) { delete(d, "ph_id") }},
		{"denied of type TOTP", events.VerificationDenied, func(d map[string]any) { d["type"] = "TOTP" }},
		{"denied with status CANCELLED", events.VerificationDenied, func(d map[string]any) { d["status"] = "CANCELLED" }},
		{"denied from ALLOWED", events.VerificationDenied, func(d map[string]any) { d["previous_status"] = "ALLOWED" }},
		{"denied from AUTHENTICATED", events.VerificationDenied, func(d map[string]any) { d["previous_status"] = "AUTHENTICATED" }},
		{"denied with failed_attempts", events.VerificationDenied, func(d map[string]any) { d["failed_attempts"] = 1 }},
		{"denied with the number answered", events.VerificationDenied, func(d map[string]any) { d["number"] = "42" }},
		{"denied with the device signature", events.VerificationDenied, func(d map[string]any) { d["sig"] = "MEUCIQ" }},
		{"push sent with the number", events.PushSent, func(d map[string]any) { d["number"] = "07" }},
		{"push sent with the candidates", events.PushSent, func(d map[string]any) { d["numbers"] = []any{"07", "42", "93"} }},
		{"push sent with the challenge id", events.PushSent, func(d map[string]any) { d["challenge_id"] = "c-1" }},
		{"push sent with a ph_id", events.PushSent, func(d map[string]any) { d["ph_id"] = phID }},
		{"push sent with negative devices", events.PushSent, func(d map[string]any) { d["devices"] = -1 }},
		{"push sent with fractional devices", events.PushSent, func(d map[string]any) { d["devices"] = 1.5 }},
		{"push sent without status_id", events.PushSent, func(d map[string]any) { delete(d, "status_id") }},
		{"push sent without sub", events.PushSent, func(d map[string]any) { delete(d, "sub") }},
		{"push sent without expires_at", events.PushSent, func(d map[string]any) { delete(d, "expires_at") }},
		{"push sent with a bad expires_at", events.PushSent, func(d map[string]any) { d["expires_at"] = "soon" }},
		{"push sent with a status", events.PushSent, func(d map[string]any) { d["status"] = "INITIATED" }},
		{"push sent with a context", events.PushSent, func(d map[string]any) { d["context"] = map[string]any{"ip": "203.0.113.7"} }},
		{"push acknowledged without ph_id", events.PushAcknowledged, func(d map[string]any) { delete(d, "ph_id") }},
		{"push acknowledged with an empty ph_id", events.PushAcknowledged, func(d map[string]any) { d["ph_id"] = "" }},
		{"push acknowledged with devices", events.PushAcknowledged, func(d map[string]any) { d["devices"] = 2 }},
		{"push acknowledged with the candidates", events.PushAcknowledged, func(d map[string]any) { d["numbers"] = []any{"07", "42", "93"} }},
		{"push acknowledged with the device signature", events.PushAcknowledged, func(d map[string]any) { d["signature"] = "MEUCIQ" }},
		{"lock without locked_until", events.VerificationLocked, func(d map[string]any) { delete(d, "locked_until") }},
		{"lock with a bad locked_until", events.VerificationLocked, func(d map[string]any) { d["locked_until"] = "later" }},
		{"lock without lock", events.VerificationLocked, func(d map[string]any) { delete(d, "lock") }},
		{"lock number 0", events.VerificationLocked, func(d map[string]any) { d["lock"] = 0 }},
		{"lock without failed_attempts", events.VerificationLocked, func(d map[string]any) { delete(d, "failed_attempts") }},
		{"lock without sub", events.VerificationLocked, func(d map[string]any) { delete(d, "sub") }},
		{"lock with a status_id", events.VerificationLocked, func(d map[string]any) { d["status_id"] = authID }},
		{"lock with a status", events.VerificationLocked, func(d map[string]any) { d["status"] = "FAILED" }},
		{"recovery generated with a code", events.RecoveryGenerated, func(d map[string]any) { d["code"] = "7kq2-mx9p" }},
		{"recovery generated with the codes", events.RecoveryGenerated, func(d map[string]any) { d["codes"] = []any{"7kq2-mx9p", "c4vd-82nw"} }},
		{"recovery used with the spent code", events.RecoveryUsed, func(d map[string]any) { d["code"] = "7kq2-mx9p" }},
		{"recovery used without status_id", events.RecoveryUsed, func(d map[string]any) { delete(d, "status_id") }},
		{"recovery generated with a status_id", events.RecoveryGenerated, func(d map[string]any) { d["status_id"] = authID }},
		{"recovery without remaining", events.RecoveryGenerated, func(d map[string]any) { delete(d, "remaining") }},
		{"recovery with negative remaining", events.RecoveryUsed, func(d map[string]any) { d["remaining"] = -1 }},
		{"recovery without created_at", events.RecoveryUsed, func(d map[string]any) { delete(d, "created_at") }},
		{"recovery without sub", events.RecoveryGenerated, func(d map[string]any) { delete(d, "sub") }},
		{"registered device with an actor", events.DeviceRegistered, func(d map[string]any) { d["actor"] = "ops-admin" }},
		{"renamed device with an actor", events.DeviceRenamed, func(d map[string]any) { d["actor"] = "ops-admin" }},
		{"removed device with an empty actor", events.DeviceRemoved, func(d map[string]any) { d["actor"] = "" }},
		{"unlock without actor", events.VerificationUnlocked, func(d map[string]any) { delete(d, "actor") }},
		{"unlock with an empty actor", events.VerificationUnlocked, func(d map[string]any) { d["actor"] = "" }},
		{"unlock without sub", events.VerificationUnlocked, func(d map[string]any) { delete(d, "sub") }},
		{"unlock with locked_until", events.VerificationUnlocked, func(d map[string]any) { d["locked_until"] = "2026-03-14T09:28:53Z" }},
		{"unlock with failed_attempts", events.VerificationUnlocked, func(d map[string]any) { d["failed_attempts"] = 3 }},
		{"reset without actor", events.FactorsReset, func(d map[string]any) { delete(d, "actor") }},
		{"reset without sub", events.FactorsReset, func(d map[string]any) { delete(d, "sub") }},
		{"reset without devices_removed", events.FactorsReset, func(d map[string]any) { delete(d, "devices_removed") }},
		{"reset with negative devices_removed", events.FactorsReset, func(d map[string]any) { d["devices_removed"] = -1 }},
		{"reset with fractional devices_removed", events.FactorsReset, func(d map[string]any) { d["devices_removed"] = 1.5 }},
		{"reset without recovery_codes_removed", events.FactorsReset, func(d map[string]any) { delete(d, "recovery_codes_removed") }},
		{"reset with a count of recovery codes", events.FactorsReset, func(d map[string]any) { d["recovery_codes_removed"] = 10 }},
		{"reset naming the removed devices", events.FactorsReset, func(d map[string]any) { d["ph_ids"] = []any{phID} }},
		{"delivery failed with the address", events.DeliveryFailed, func(d map[string]any) { d["to"] = "alice@example.org" }},
		{"delivery failed with the message text", events.DeliveryFailed, func(d map[string]any) { d["body"] = "Your code is 123456" }},
		{"delivery failed without delivery_id", events.DeliveryFailed, func(d map[string]any) { delete(d, "delivery_id") }},
		{"delivery failed without destination", events.DeliveryFailed, func(d map[string]any) { delete(d, "destination") }},
		{"delivery failed with an unknown channel", events.DeliveryFailed, func(d map[string]any) { d["channel"] = "fax" }},
		{"delivery failed with a free-text reason", events.DeliveryFailed, func(d map[string]any) { d["reason"] = "550 no such user" }},
		{"delivery failed with negative attempts", events.DeliveryFailed, func(d map[string]any) { d["attempts"] = -1 }},
		{"delivery failed without sub", events.DeliveryFailed, func(d map[string]any) { delete(d, "sub") }},
		{"expired delivery with an empty sub", events.DeliveryFailed, func(d map[string]any) { d["sub"] = "" }},
		{"rejected delivery with an empty destination", events.DeliveryFailed, func(d map[string]any) { d["reason"], d["destination"] = "rejected", "" }},
	}
	for _, c := range cases {
		env := envelope(t, c.typ)
		c.change(dataOf(env))
		if err := schemas[c.typ].Validate(env); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
}

// TestAsyncAPI checks asyncapi.yaml by string search (no YAML library): every type has a channel
// address, a message name and a payload reference, and every example validates against its schema.
func TestAsyncAPI(t *testing.T) {
	raw, err := os.ReadFile("asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	for _, want := range []string{"asyncapi: 3.0.0", "protocol: nats", events.Stream, events.StreamSubjects, "Nats-Msg-Id", "action: send"} {
		if !strings.Contains(doc, want) {
			t.Errorf("asyncapi.yaml does not mention %q", want)
		}
	}
	for _, typ := range events.Types {
		for _, want := range []string{
			"address: " + typ.Subject() + "\n",
			"name: " + string(typ) + "\n",
			"$ref: './" + events.SchemaFile(typ) + "'",
		} {
			if !strings.Contains(doc, want) {
				t.Errorf("asyncapi.yaml does not mention %q", strings.TrimSpace(want))
			}
		}
	}
	if n, want := strings.Count(doc, "    address: "), len(events.Types); n != want {
		t.Errorf("asyncapi.yaml has %d channel addresses, want %d (one per type)", n, want)
	}

	// Examples are written as one-line JSON (valid YAML flow mappings) so they can be checked here.
	schemas := compileAll(t)
	examples := regexp.MustCompile(`(?m)^ +payload: (\{.*\})$`).FindAllStringSubmatch(doc, -1)
	seen := map[events.Type]bool{}
	for _, m := range examples {
		inst, err := jsonschema.UnmarshalJSON(strings.NewReader(m[1]))
		if err != nil {
			t.Errorf("example %s: %v", m[1], err)
			continue
		}
		typ := events.Type(inst.(map[string]any)["type"].(string))
		sch, ok := schemas[typ]
		if !ok {
			t.Errorf("example of unknown type %s", typ)
			continue
		}
		seen[typ] = true
		if err := sch.Validate(inst); err != nil {
			t.Errorf("example %s is invalid: %v", typ, err)
		}
	}
	for _, typ := range events.Types {
		if !seen[typ] {
			t.Errorf("asyncapi.yaml has no example of %s", typ)
		}
	}
}

// TestSchemasNameEveryRegisteredMethod: the JSON Schemas' method enums come from the one
// registration (events/method), so an event of a new method validates.
func TestSchemasNameEveryRegisteredMethod(t *testing.T) {
	raw, err := os.ReadFile("schemas/defs.json")
	if err != nil {
		t.Fatal(err)
	}
	var defs struct {
		Defs map[string]struct {
			Enum []string `json:"enum"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(raw, &defs); err != nil {
		t.Fatal(err)
	}
	var enrolls, all []string
	for _, m := range method.All() {
		all = append(all, m.Name)
		if m.Enrolls {
			enrolls = append(enrolls, m.Name)
		}
	}
	for name, want := range map[string][]string{"method": enrolls, "verificationMethod": all} {
		got := append([]string(nil), defs.Defs[name].Enum...)
		slices.Sort(got)
		w := append([]string(nil), want...)
		slices.Sort(w)
		if !slices.Equal(got, w) {
			t.Errorf("defs.json $defs/%s enum %v, want the registered %v", name, defs.Defs[name].Enum, want)
		}
	}
}
