package kvdoc_test

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/mfaflow/mfaflow/pkg/kvdoc"
)

// TestRelayReadsEventsOfBothLayouts: values are written events first, so the relay reads a
// value's events without the document; values written document first, by earlier versions,
// still give the relay their events and purge mark, and a document whose text names the fields
// does not confuse it.
func TestRelayReadsEventsOfBothLayouts(t *testing.T) {
	_, kv, docs := setup(t)
	ctx := context.Background()
	if _, err := docs.Create(ctx, "d.new", doc{Name: `"outbox":[] "purge":true`}, msg("ev-1"), msg("ev-2")); err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "d.new")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(e.Value(), []byte(`{"outbox":`)) {
		t.Fatalf("stored value %s: want the events first", e.Value())
	}
	cases := []struct {
		name      string
		value     []byte
		wantIDs   []string
		wantPurge bool
	}{
		{"written now", e.Value(), []string{"ev-1", "ev-2"}, false},
		{"document first", []byte(`{"doc":{"name":"\"outbox\":[]"},"outbox":[{"id":"old-1","subject":"s","data":{}}],"purge":true}`), []string{"old-1"}, true},
		{"purge only", []byte(`{"purge":true,"doc":{"name":"x"}}`), nil, true},
		{"no events", []byte(`{"doc":{"name":"x"}}`), nil, false},
	}
	for _, c := range cases {
		ids, purge, err := kvdoc.DecodePending(c.value)
		if err != nil || !slices.Equal(ids, c.wantIDs) || purge != c.wantPurge {
			t.Errorf("%s: events %v purge %v err %v; want %v %v", c.name, ids, purge, err, c.wantIDs, c.wantPurge)
		}
	}
	// A document written document first is read back, and a write based on it carries its
	// unpublished events forward (no relay runs here).
	if _, err := kv.Put(ctx, "d.old", []byte(`{"doc":{"name":"before"},"outbox":[{"id":"old-1","subject":"s","data":{}}]}`)); err != nil {
		t.Fatal(err)
	}
	d, rev, err := docs.Get(ctx, "d.old")
	if err != nil || d.Name != "before" {
		t.Fatalf("old layout read: %+v %v", d, err)
	}
	if _, err := docs.Update(ctx, "d.old", rev, doc{Name: "after"}, msg("ev-3")); err != nil {
		t.Fatal(err)
	}
	e, err = kv.Get(ctx, "d.old")
	if err != nil {
		t.Fatal(err)
	}
	if ids, _, err := kvdoc.DecodePending(e.Value()); err != nil || !slices.Equal(ids, []string{"old-1", "ev-3"}) {
		t.Errorf("events after an update of an old value: %v %v, want [old-1 ev-3]", ids, err)
	}
}
