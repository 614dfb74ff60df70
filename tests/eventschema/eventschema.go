// Package eventschema validates mfaflow CloudEvents against the JSON Schemas of the event
// catalogue (github.com/mfaflow/mfaflow/events). The end-to-end tests run every event they read
// from the MFA_EVENTS stream through Validate.
package eventschema

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/mfaflow/mfaflow/events"
)

var (
	once    sync.Once
	schemas map[events.Type]*jsonschema.Schema
	loadErr error
)

// load compiles the schema of every catalogued type from events.Schemas. Each embedded file is
// added under its own $id, so the cross-file $refs resolve offline.
func load() {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	files, err := fs.Glob(events.Schemas, "schemas/*.json")
	if err != nil {
		loadErr = err
		return
	}
	for _, name := range files {
		raw, err := events.Schemas.ReadFile(name)
		if err != nil {
			loadErr = err
			return
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			loadErr = fmt.Errorf("eventschema: %s: %w", name, err)
			return
		}
		id, _ := doc.(map[string]any)["$id"].(string)
		if id == "" {
			loadErr = fmt.Errorf("eventschema: %s has no $id", name)
			return
		}
		if err := c.AddResource(id, doc); err != nil {
			loadErr = fmt.Errorf("eventschema: %s: %w", name, err)
			return
		}
	}
	m := make(map[events.Type]*jsonschema.Schema, len(events.Types))
	for _, t := range events.Types {
		sch, err := c.Compile(events.SchemaURI(t))
		if err != nil {
			loadErr = fmt.Errorf("eventschema: compile %s: %w", t, err)
			return
		}
		m[t] = sch
	}
	schemas = m
}

// Validate checks one event: raw is a structured-mode CloudEvent as published on the stream (the
// NATS message body). It picks the schema by the event's `type` and validates the whole event,
// envelope and data; an unknown type is an error. Because JSON Schema cannot compare two values,
// it also checks what the schemas cannot: `subject` equals data.status_id for enrollment,
// verification and push events, data.sub for locks and recovery events and data.ph_id for device events. It is safe for concurrent use.
func Validate(raw []byte) error {
	once.Do(load)
	if loadErr != nil {
		return loadErr
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("eventschema: not a JSON event: %w", err)
	}
	obj, ok := inst.(map[string]any)
	if !ok {
		return errors.New("eventschema: event is not a JSON object")
	}
	typ, _ := obj["type"].(string)
	sch, ok := schemas[events.Type(typ)]
	if !ok {
		return fmt.Errorf("eventschema: unknown event type %q", typ)
	}
	if err := sch.Validate(inst); err != nil {
		return fmt.Errorf("eventschema: invalid %s event: %w", typ, err)
	}
	key := "ph_id"
	switch {
	case typ == string(events.VerificationLocked), typ == string(events.VerificationUnlocked),
		strings.HasPrefix(typ, "mfa.recovery."), strings.HasPrefix(typ, "mfa.factors."):
		key = "sub" // about the user
	case strings.HasPrefix(typ, "mfa.enrollment."), strings.HasPrefix(typ, "mfa.verification."),
		strings.HasPrefix(typ, "mfa.push."):
		key = "status_id"
	}
	data := obj["data"].(map[string]any) // the schema guarantees an object
	if obj["subject"] != data[key] {
		return fmt.Errorf("eventschema: %s event: subject %q is not data.%s %q", typ, obj["subject"], key, data[key])
	}
	return nil
}
