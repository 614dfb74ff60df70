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
	statusID = "5f0c9a4e-3d1b-4c57-9e2a-8b6f1d7c2a90"
	phID     = "d7e3b1c2-8a4f-4b6e-9c0d-2f5a7e9b1c34"
	deviceID = "3a9f6c1e-7b2d-4e8a-a5c4-0d1e2f3a4b5c"
)

// sample is realistic data for an event of type typ, as the publishing service would build it.
func sample(typ events.Type) (source, subject string, data any) {
	enr := events.Enrollment{StatusID: statusID, Sub: "alice", Method: "TOTP", ExpiresAt: expires}
	dev := events.Device{PHID: phID, DeviceID: deviceID, Sub: "alice", Method: "TOTP", FriendlyName: "Alice's iPhone"}
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
	default:
		panic("no sample for " + string(typ))
	}
	if strings.HasPrefix(string(typ), "mfa.enrollment.") {
		return events.SourceStatus, statusID, enr
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
// Enrollment and Device is declared in its schema and nothing else is.
func TestSchemasMatchGoTypes(t *testing.T) {
	defs := readSchema(t, events.DefsSchemaFile)["$defs"].(map[string]any)
	for name, v := range map[string]any{"enrollment": events.Enrollment{}, "device": events.Device{}} {
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
	leaks := []string{"secret", "code", "totp_secret", "exchange_id", "verification_code", "otpauth_uri", "qr_code"}
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
		{"enrollment of type SMS", events.EnrollmentInitiated, func(d map[string]any) { d["type"] = "SMS" }},
		{"enrollment without sub", events.EnrollmentInitiated, func(d map[string]any) { delete(d, "sub") }},
		{"enrollment without expires_at", events.EnrollmentScanned, func(d map[string]any) { delete(d, "expires_at") }},
		{"enrollment with a bad expires_at", events.EnrollmentScanned, func(d map[string]any) { d["expires_at"] = "soon" }},
		{"enrollment with an unknown channel", events.EnrollmentScanned, func(d map[string]any) { d["channel"] = "sms" }},
		{"device without ph_id", events.DeviceRegistered, func(d map[string]any) { delete(d, "ph_id") }},
		{"device without device_id", events.DeviceRenamed, func(d map[string]any) { delete(d, "device_id") }},
		{"device without sub", events.DeviceRemoved, func(d map[string]any) { delete(d, "sub") }},
		{"device with status", events.DeviceRegistered, func(d map[string]any) { d["status"] = "ENROLLED" }},
		{"device of type SMS", events.DeviceRemoved, func(d map[string]any) { d["type"] = "SMS" }},
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
