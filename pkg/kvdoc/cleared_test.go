package kvdoc_test

import (
	"encoding/json"
	"testing"

	"github.com/mfaflow/mfaflow/pkg/kvdoc"
	"github.com/mfaflow/mfaflow/pkg/outbox"
)

// TestCleared: the relay's cleared value keeps the document byte for byte, drops the outbox,
// names the revision it was cleared from, and still decodes as the same document — for the
// record layout Store writes and, through the generic path, for any other.
func TestCleared(t *testing.T) {
	type doc struct {
		ID   string `json:"id"`
		Note string `json:"note"`
	}
	// A document whose text mimics the record's own members must not confuse the fast path.
	d := doc{ID: "e1", Note: `,"outbox":[ and ]} and {"doc":`}
	rec, err := json.Marshal(struct {
		Doc    doc              `json:"doc"`
		Outbox []outbox.Message `json:"outbox,omitempty"`
	}{d, []outbox.Message{{ID: "m1", Subject: "mfa.events.x", Data: []byte(`{"a":1}`)}}})
	if err != nil {
		t.Fatal(err)
	}
	for name, value := range map[string][]byte{
		"record":  rec,
		"generic": []byte(`{"outbox":[{"id":"m1"}],"doc":{"id":"e1","note":"x"}}`),
		"empty":   []byte(`{"outbox":[]}`),
	} {
		t.Run(name, func(t *testing.T) {
			out, ok := kvdoc.Cleared(value, 42)
			if !ok {
				t.Fatalf("Cleared(%s) refused", value)
			}
			var back map[string]json.RawMessage
			if err := json.Unmarshal(out, &back); err != nil {
				t.Fatalf("cleared value %s is not JSON: %v", out, err)
			}
			if _, has := back["outbox"]; has {
				t.Fatalf("outbox kept: %s", out)
			}
			if rev, ok := kvdoc.ClearedOf(out); !ok || rev != 42 {
				t.Fatalf("ClearedOf(%s) = %d, %v", out, rev, ok)
			}
			var orig map[string]json.RawMessage
			_ = json.Unmarshal(value, &orig)
			if string(back["doc"]) != string(orig["doc"]) {
				t.Fatalf("doc changed: %s, was %s", back["doc"], orig["doc"])
			}
		})
	}
	if _, ok := kvdoc.ClearedOf(rec); ok {
		t.Fatal("a record with events is not a cleared value")
	}
	if _, ok := kvdoc.Cleared([]byte("not json"), 1); ok {
		t.Fatal("a value that is not a record was cleared")
	}
}
